//! Network Service Header (RFC 8300 §2) with MD type 2 context headers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver|O|U|    TTL    |   Length  |U|U|U|U|MD Type| Next Protocol |  base header
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Service Path Identifier (SPI)        | Service Index |  service path header
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Metadata Class       |      Type     |U|    Length   |  MD type 2 context
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  header (§2.5.1),
//! |                      Variable-Length Metadata                 |  repeated
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Below an MPLS stack, zsfc tells an NSH from an IP packet by its first nibble: IP starts with
//! 4 or 6, an NSH of version 0 with 0-3 (see docs/ARCHITECTURE.md, "Wire formats").
use crate::{Error, Result, be16, be32, put16, put32};

pub const BASE_LEN: usize = 8;
/// RFC 8300 §2.2: Length is 6 bits of 4-byte words.
pub const MAX_LEN: usize = 63 * 4;
pub const MD_TYPE_1: u8 = 1;
pub const MD_TYPE_2: u8 = 2;
/// RFC 8300 §2.2: MD type 1 headers are always 6 words long.
const MD1_WORDS: usize = 6;

/// Next Protocol values (RFC 8300 §11.2.5).
pub mod next_proto {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
    pub const ETHERNET: u8 = 3;
    pub const NSH: u8 = 4;
    pub const MPLS: u8 = 5;
}

/// Returns true when `first_byte` can start an NSH (version 0) rather than IPv4/IPv6.
pub fn looks_like_nsh(first_byte: u8) -> bool {
    first_byte >> 6 == 0
}

/// A checked view of an NSH; MD type 2 context headers have been walked and fit.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < BASE_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 6 != 0 {
            // RFC 8300 §2.2: only version 0 is defined.
            return Err(Error::Malformed);
        }
        let len = usize::from(b[1] & 0x3f) * 4;
        if len < BASE_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        match b[2] & 0xf {
            MD_TYPE_1 if len != MD1_WORDS * 4 => return Err(Error::Malformed),
            MD_TYPE_1 => {}
            MD_TYPE_2 => {
                let mut off = BASE_LEN;
                while off < len {
                    let vlen = usize::from(b.get(off + 3).ok_or(Error::Malformed)? & 0x7f);
                    off += 4 + vlen.div_ceil(4) * 4;
                }
                if off != len {
                    return Err(Error::Malformed);
                }
            }
            _ => return Err(Error::Unsupported),
        }
        Ok(Self { buf })
    }
    pub fn oam(&self) -> bool {
        self.buf.as_ref()[0] & 0x20 != 0
    }
    pub fn ttl(&self) -> u8 {
        let b = self.buf.as_ref();
        ((b[0] & 0x0f) << 2) | (b[1] >> 6)
    }
    /// Total length in bytes (base + service path + context headers).
    pub fn len(&self) -> usize {
        usize::from(self.buf.as_ref()[1] & 0x3f) * 4
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn md_type(&self) -> u8 {
        self.buf.as_ref()[2] & 0xf
    }
    pub fn next_proto(&self) -> u8 {
        self.buf.as_ref()[3]
    }
    pub fn spi(&self) -> u32 {
        be32(self.buf.as_ref(), 4) >> 8
    }
    pub fn si(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    /// The raw context headers.
    pub fn context(&self) -> &[u8] {
        &self.buf.as_ref()[BASE_LEN..self.len()]
    }
    /// Iterates over MD type 2 context headers (empty for MD type 1).
    pub fn tlvs(&self) -> Tlvs<'_> {
        Tlvs { rest: if self.md_type() == MD_TYPE_2 { self.context() } else { &[] } }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buf.as_mut();
        b[0] = (b[0] & 0xf0) | ((ttl >> 2) & 0x0f);
        b[1] = (b[1] & 0x3f) | ((ttl & 3) << 6);
    }
    pub fn set_si(&mut self, si: u8) {
        self.buf.as_mut()[7] = si;
    }
}

/// One MD type 2 context header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub class: u16,
    pub tlv_type: u8,
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// Bytes on the wire, with padding to 4 bytes.
    pub fn wire_len(&self) -> usize {
        4 + self.value.len().div_ceil(4) * 4
    }
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        if self.value.len() > 0x7f {
            return Err(Error::Malformed);
        }
        let out = out.get_mut(..self.wire_len()).ok_or(Error::NoRoom)?;
        put16(out, 0, self.class);
        out[2] = self.tlv_type;
        out[3] = self.value.len() as u8;
        out[4..4 + self.value.len()].copy_from_slice(self.value);
        out[4 + self.value.len()..].fill(0);
        Ok(())
    }
}

/// Iterator over context headers of a checked NSH.
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    fn next(&mut self) -> Option<Tlv<'a>> {
        let h = self.rest.get(..4)?;
        let vlen = usize::from(h[3] & 0x7f);
        let value = self.rest.get(4..4 + vlen)?;
        let tlv = Tlv { class: be16(h, 0), tlv_type: h[2], value };
        self.rest = self.rest.get(tlv.wire_len()..).unwrap_or(&[]);
        Some(tlv)
    }
}

/// The fields of an NSH with its context headers as raw (already encoded) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub ttl: u8,
    pub md_type: u8,
    pub next_proto: u8,
    pub spi: u32,
    pub si: u8,
    pub context: &'a [u8],
}

impl<'a> Repr<'a> {
    pub fn parse<T: AsRef<[u8]>>(h: &'a Header<T>) -> Self {
        Self {
            ttl: h.ttl(),
            md_type: h.md_type(),
            next_proto: h.next_proto(),
            spi: h.spi(),
            si: h.si(),
            context: h.context(),
        }
    }
    pub fn wire_len(&self) -> usize {
        BASE_LEN + self.context.len()
    }
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        let len = self.wire_len();
        if len > MAX_LEN || !self.context.len().is_multiple_of(4) || self.spi > 0xff_ffff || self.ttl > 63 {
            return Err(Error::Malformed);
        }
        let b = out.get_mut(..len).ok_or(Error::NoRoom)?;
        b[0] = (self.ttl >> 2) & 0x0f;
        b[1] = ((self.ttl & 3) << 6) | (len / 4) as u8;
        b[2] = self.md_type & 0xf;
        b[3] = self.next_proto;
        put32(b, 4, (self.spi << 8) | u32::from(self.si));
        b[BASE_LEN..].copy_from_slice(self.context);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_md2_with_context_headers() {
        let t1 = Tlv { class: 0x0000, tlv_type: 0x04, value: b"subscriber-1" };
        let t2 = Tlv { class: 0x0000, tlv_type: 0x05, value: &[9, 9, 9] };
        let mut ctx = vec![0u8; t1.wire_len() + t2.wire_len()];
        t1.emit(&mut ctx).unwrap();
        t2.emit(&mut ctx[t1.wire_len()..]).unwrap();
        let r =
            Repr { ttl: 63, md_type: MD_TYPE_2, next_proto: next_proto::IPV4, spi: 0xABCDEF, si: 255, context: &ctx };
        let mut b = vec![0u8; r.wire_len()];
        r.emit(&mut b).unwrap();
        assert!(looks_like_nsh(b[0]));
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&h), r);
        assert_eq!(h.tlvs().collect::<Vec<_>>(), vec![t1, t2]);
    }

    #[test]
    fn setters_change_only_their_field() {
        let r = Repr { ttl: 10, md_type: MD_TYPE_2, next_proto: 1, spi: 7, si: 5, context: &[] };
        let mut b = [0u8; 8];
        r.emit(&mut b).unwrap();
        let mut h = Header::new_checked(&mut b[..]).unwrap();
        h.set_ttl(33);
        h.set_si(4);
        assert_eq!((h.ttl(), h.si(), h.len(), h.spi()), (33, 4, 8, 7));
    }

    #[test]
    fn rejects_bad_version_lengths_and_overrunning_tlvs() {
        let r = Repr { ttl: 1, md_type: MD_TYPE_2, next_proto: 1, spi: 1, si: 1, context: &[0, 0, 1, 4, 1, 2, 3, 4] };
        let mut b = vec![0u8; 16];
        r.emit(&mut b).unwrap();
        let mut bad = b.clone();
        bad[0] |= 0x40;
        assert_eq!(Header::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        assert_eq!(Header::new_checked(&b[..15]).unwrap_err(), Error::Truncated);
        let mut over = b.clone();
        over[11] = 8; // TLV claims 8 bytes, only 4 follow
        assert_eq!(Header::new_checked(&over[..]).unwrap_err(), Error::Malformed);
        let mut md1 = b.clone();
        md1[2] = MD_TYPE_1;
        assert_eq!(Header::new_checked(&md1[..]).unwrap_err(), Error::Malformed);
    }
}
