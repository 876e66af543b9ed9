//! IPv4 headers (RFC 791 §3.1), with options.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use crate::{Error, Result, be16, checksum, put16};

pub const MIN_HEADER_LEN: usize = 20;

/// Byte offsets of the header fields.
pub mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: core::ops::Range<usize> = 12..16;
    pub const DST: core::ops::Range<usize> = 16..20;
}

/// A checked view of an IPv4 packet. The view may be longer than `total_len` (link padding);
/// [`Packet::payload`] stops at `total_len`.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 4, IHL >= 5, and that header and total length fit in the buffer.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(b[field::VER_IHL] & 0xf) * 4;
        let tl = usize::from(be16(b, field::TOTAL_LEN));
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(Error::Malformed);
        }
        if tl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0xf) * 4
    }
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field::TOS]
    }
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::TOTAL_LEN)
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        self.buf.as_ref()[field::FLAGS_FRAG] & 0x40 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.buf.as_ref()[field::FLAGS_FRAG] & 0x20 != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x1fff
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }
    pub fn src(&self) -> [u8; 4] {
        self.buf.as_ref()[field::SRC].try_into().unwrap_or_default()
    }
    pub fn dst(&self) -> [u8; 4] {
        self.buf.as_ref()[field::DST].try_into().unwrap_or_default()
    }
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::finish(checksum::sum(&self.buf.as_ref()[..self.header_len()])) == 0
    }
    /// The bytes after the header, up to `total_len`.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::TOTAL_LEN, v)
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[field::TTL] = v
    }
    pub fn set_protocol(&mut self, v: u8) {
        self.buf.as_mut()[field::PROTOCOL] = v
    }
    pub fn set_src(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a)
    }
    pub fn set_dst(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a)
    }
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::finish(checksum::sum(&b[..hl]));
        put16(b, field::CHECKSUM, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buf.as_mut()[hl..tl]
    }
}

/// The fields of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub tos: u8,
    pub dont_frag: bool,
    pub payload_len: u16,
}

impl Repr {
    /// A header as hosts send it: TTL 64, identification 0, TOS 0, don't fragment.
    pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8, payload_len: u16) -> Self {
        Self { src, dst, protocol, ttl: 64, ident: 0, tos: 0, dont_frag: true, payload_len }
    }

    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Self {
        Self {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            ident: p.ident(),
            tos: p.tos(),
            dont_frag: p.dont_frag(),
            payload_len: p.total_len() - p.header_len() as u16,
        }
    }
    /// Writes a 20-byte header with a valid checksum into `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        let b = out.get_mut(..MIN_HEADER_LEN).ok_or(Error::NoRoom)?;
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        put16(b, field::TOTAL_LEN, self.payload_len.checked_add(20).ok_or(Error::Malformed)?);
        put16(b, field::IDENT, self.ident);
        put16(b, field::FLAGS_FRAG, if self.dont_frag { 0x4000 } else { 0 });
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::SRC].copy_from_slice(&self.src);
        b[field::DST].copy_from_slice(&self.dst);
        put16(b, field::CHECKSUM, 0);
        let c = checksum::finish(checksum::sum(b));
        put16(b, field::CHECKSUM, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Repr {
        Repr {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            protocol: 6,
            ttl: 64,
            ident: 0x1c46,
            tos: 0,
            dont_frag: true,
            payload_len: 4,
        }
    }

    #[test]
    fn round_trips_and_checksums() {
        let mut b = [0u8; 24];
        sample().emit(&mut b).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p), sample());
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn walks_options_and_ignores_link_padding() {
        let mut b = vec![0u8; 24 + 4 + 10];
        sample().emit(&mut b).unwrap();
        // Turn it into IHL=6 with one 4-byte option (NOP NOP NOP EOL).
        b.copy_within(20..24, 24);
        b[0] = 0x46;
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        put16(&mut b, 2, 28);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn rejects_bad_version_short_header_and_overlong_total() {
        let mut b = [0u8; 24];
        sample().emit(&mut b).unwrap();
        let mut v6 = b;
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), Error::Malformed);
        let mut ihl4 = b;
        ihl4[0] = 0x44;
        assert_eq!(Packet::new_checked(&ihl4[..]).unwrap_err(), Error::Malformed);
        assert_eq!(Packet::new_checked(&b[..23]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
    }
}
