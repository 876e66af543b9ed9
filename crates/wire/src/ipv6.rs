//! IPv6 headers (RFC 8200 §3) and the walk over extension headers (RFC 8200 §4).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Source Address (128 bits)                     |
//! |               Destination Address (128 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use crate::{Error, Result, be16, put16};

pub const HEADER_LEN: usize = 40;
/// Limit on the number of extension headers walked; more is a malformed packet.
/// (RFC 8200 §4.1 orders at most 7 kinds, each once except destination options.)
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers zsfc walks.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

/// Byte offsets of the header fields.
pub mod field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

/// A checked view of an IPv6 packet; `payload_len` must fit in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        (u32::from(b[1] & 0xf) << 16) | u32::from(be16(b, 2))
    }
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    pub fn src(&self) -> [u8; 16] {
        self.buf.as_ref()[field::SRC].try_into().unwrap_or_default()
    }
    pub fn dst(&self) -> [u8; 16] {
        self.buf.as_ref()[field::DST].try_into().unwrap_or_default()
    }
    /// Everything after the fixed header (extension headers and upper layer), up to payload_len.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
    /// Walks the extension headers; see [`Walk`].
    pub fn walk(&self) -> Result<Walk> {
        walk(self.buf.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::PAYLOAD_LEN, v)
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = v
    }
    pub fn set_src(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a)
    }
    pub fn set_dst(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a)
    }
}

/// The result of walking the extension-header chain of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// The upper-layer protocol (or ESP, or NO_NEXT) that ends the walk.
    pub upper: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub upper_offset: usize,
    /// Where ESP goes in transport mode (RFC 4303 §3.1.1): after hop-by-hop, routing and
    /// fragment headers, before destination options.
    pub esp_offset: usize,
    /// Offset of the Next Header byte that must name what sits at `esp_offset`.
    pub esp_nh_field: usize,
    /// Offset of the Next Header byte that names the upper-layer header.
    pub upper_nh_field: usize,
    /// A fragment header with a non-zero offset: the upper-layer header is not in this packet.
    pub later_fragment: bool,
}

/// Walks the extension headers of the IPv6 packet `b` (fixed header included).
pub fn walk(b: &[u8]) -> Result<Walk> {
    let end = HEADER_LEN + usize::from(be16(b.get(..HEADER_LEN).ok_or(Error::Truncated)?, field::PAYLOAD_LEN));
    let b = b.get(..end).ok_or(Error::Truncated)?;
    let mut nh = b[field::NEXT_HEADER];
    let mut off = HEADER_LEN;
    let mut nh_field = field::NEXT_HEADER;
    let mut esp = None;
    let mut later_fragment = false;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match nh {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                let h = b.get(off..off + 2).ok_or(Error::Truncated)?;
                (usize::from(h[1]) + 1) * 8
            }
            ext::FRAGMENT => {
                let h = b.get(off..off + 8).ok_or(Error::Truncated)?;
                later_fragment = be16(h, 2) & 0xfff8 != 0;
                8
            }
            ext::AH => {
                let h = b.get(off..off + 2).ok_or(Error::Truncated)?;
                (usize::from(h[1]) + 2) * 4
            }
            upper => {
                let (esp_offset, esp_nh_field) = esp.unwrap_or((off, nh_field));
                return Ok(Walk {
                    upper,
                    upper_offset: off,
                    esp_offset,
                    esp_nh_field,
                    upper_nh_field: nh_field,
                    later_fragment,
                });
            }
        };
        if matches!(nh, ext::HOP_BY_HOP | ext::ROUTING | ext::FRAGMENT) {
            // Destination options before a routing header stay before ESP.
            esp = None;
        } else if nh == ext::DEST_OPTS && esp.is_none() {
            esp = Some((off, nh_field));
        }
        if off + len > b.len() {
            return Err(Error::Truncated);
        }
        nh_field = off;
        nh = b[off];
        off += len;
        if later_fragment {
            // Nothing after a non-first fragment's header can be parsed.
            let (esp_offset, esp_nh_field) = esp.unwrap_or((off, nh_field));
            return Ok(Walk {
                upper: nh,
                upper_offset: off,
                esp_offset,
                esp_nh_field,
                upper_nh_field: nh_field,
                later_fragment,
            });
        }
    }
    Err(Error::Malformed)
}

/// The fields of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub payload_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Self {
        Self {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: p.payload_len(),
        }
    }
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        let b = out.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        let w = (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        b[0..4].copy_from_slice(&w.to_be_bytes());
        put16(b, field::PAYLOAD_LEN, self.payload_len);
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src);
        b[field::DST].copy_from_slice(&self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(nh: u8, len: u16) -> Repr {
        let mut src = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 1;
        let mut dst = src;
        dst[15] = 2;
        Repr { src, dst, next_header: nh, hop_limit: 64, traffic_class: 0xb8, flow_label: 0x12345, payload_len: len }
    }

    #[test]
    fn round_trips_fixed_header() {
        let mut b = [0u8; 48];
        repr(17, 8).emit(&mut b).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr(17, 8));
        assert_eq!(
            p.walk().unwrap(),
            Walk {
                upper: 17,
                upper_offset: 40,
                esp_offset: 40,
                esp_nh_field: 6,
                upper_nh_field: 6,
                later_fragment: false
            }
        );
    }

    #[test]
    fn walks_hop_by_hop_routing_and_dest_opts() {
        // HbH (8) -> Routing (16) -> DestOpts (8) -> TCP
        let mut b = vec![0u8; 40 + 8 + 16 + 8 + 20];
        repr(ext::HOP_BY_HOP, 52).emit(&mut b).unwrap();
        b[40] = ext::ROUTING;
        b[48] = ext::DEST_OPTS;
        b[49] = 1;
        b[64] = 6;
        let w = walk(&b).unwrap();
        assert_eq!(w.upper, 6);
        assert_eq!(w.upper_offset, 72);
        // ESP goes before the destination options, and the routing header names it.
        assert_eq!((w.esp_offset, w.esp_nh_field, w.upper_nh_field), (64, 48, 64));
    }

    #[test]
    fn stops_at_later_fragment() {
        let mut b = vec![0u8; 40 + 8 + 8];
        repr(ext::FRAGMENT, 16).emit(&mut b).unwrap();
        b[40] = 6;
        b[42..44].copy_from_slice(&(185u16 << 3).to_be_bytes());
        let w = walk(&b).unwrap();
        assert!(w.later_fragment);
    }

    #[test]
    fn rejects_truncated_and_endless_chains() {
        let mut b = vec![0u8; 40 + 8 * 10];
        repr(ext::DEST_OPTS, 80).emit(&mut b).unwrap();
        for i in 0..10 {
            b[40 + 8 * i] = ext::DEST_OPTS;
        }
        assert_eq!(walk(&b), Err(Error::Malformed));
        let mut t = vec![0u8; 40 + 4];
        repr(ext::HOP_BY_HOP, 4).emit(&mut t).unwrap();
        t[41] = 3;
        assert_eq!(walk(&t), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&t[..43]).unwrap_err(), Error::Truncated);
    }
}
