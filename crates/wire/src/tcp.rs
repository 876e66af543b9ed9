//! TCP headers (RFC 9293 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use crate::{Error, Result, be16, be32, checksum, put16, put32};

pub const MIN_HEADER_LEN: usize = 20;
pub const CHECKSUM_OFFSET: usize = 16;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A checked view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), 14)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// Verifies the checksum given the sum of the pseudo header.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::finish(pseudo + checksum::sum(self.buf.as_ref())) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), CHECKSUM_OFFSET, v)
    }
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + checksum::sum(self.buf.as_ref()));
        self.set_checksum(c);
    }
}

/// TCP option kinds (RFC 9293 §3.2).
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Lowers the MSS option of a SYN to at most `max` and fixes the checksum incrementally
    /// (RFC 1624). Returns the MSS before clamping when there was one. Malformed options stop
    /// the walk without a change.
    pub fn clamp_mss(&mut self, max: u16) -> Option<u16> {
        if self.flags() & flags::SYN == 0 {
            return None;
        }
        let hl = self.header_len();
        let b = self.buf.as_mut();
        let mut at = MIN_HEADER_LEN;
        while at < hl {
            match b[at] {
                option::END => return None,
                option::NOP => at += 1,
                kind => {
                    let len = usize::from(*b.get(at + 1)?);
                    if len < 2 || at + len > hl {
                        return None;
                    }
                    if kind == option::MSS && len == 4 {
                        let old = be16(b, at + 2);
                        if old > max {
                            put16(b, at + 2, max);
                            let c = checksum::update16(be16(b, CHECKSUM_OFFSET), old, max);
                            put16(b, CHECKSUM_OFFSET, c);
                        }
                        return Some(old);
                    }
                    at += len;
                }
            }
        }
        None
    }
}

/// The fields of a TCP header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(s: &Segment<T>) -> Self {
        Self {
            src_port: s.src_port(),
            dst_port: s.dst_port(),
            seq: s.seq(),
            ack: s.ack(),
            flags: s.flags(),
            window: s.window(),
        }
    }
    /// Writes a 20-byte header at the start of `segment` (whose payload follows it already) and,
    /// with `pseudo` given, the checksum over the whole segment.
    pub fn emit(&self, segment: &mut [u8], pseudo: Option<u32>) -> Result<()> {
        if segment.len() < MIN_HEADER_LEN {
            return Err(Error::NoRoom);
        }
        put16(segment, 0, self.src_port);
        put16(segment, 2, self.dst_port);
        put32(segment, 4, self.seq);
        put32(segment, 8, self.ack);
        segment[12] = 5 << 4;
        segment[13] = self.flags;
        put16(segment, 14, self.window);
        put16(segment, 16, 0);
        put16(segment, 18, 0);
        if let Some(p) = pseudo {
            let c = checksum::finish(p + checksum::sum(segment));
            put16(segment, 16, c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_valid_checksum() {
        let r = Repr { src_port: 40000, dst_port: 80, seq: 1, ack: 2, flags: flags::ACK | flags::PSH, window: 512 };
        let mut b = [0u8; 25];
        b[20..].copy_from_slice(b"hello");
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 25);
        r.emit(&mut b, Some(pseudo)).unwrap();
        let s = Segment::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&s), r);
        assert!(s.verify_checksum(pseudo));
        assert_eq!(s.payload(), b"hello");
        b[24] ^= 1;
        assert!(!Segment::new_checked(&b[..]).unwrap().verify_checksum(pseudo));
    }

    #[test]
    fn clamps_the_mss_of_a_syn_and_keeps_the_checksum_valid() {
        // SYN with options NOP, NOP, MSS 1460, then 4 bytes of padding (NOP NOP NOP END).
        let mut b = [0u8; 32];
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 32);
        Repr { src_port: 1, dst_port: 2, seq: 3, ack: 0, flags: flags::SYN, window: 9 }.emit(&mut b, None).unwrap();
        b[12] = 8 << 4;
        b[20..32].copy_from_slice(&[1, 1, 2, 4, 0x05, 0xb4, 1, 1, 1, 1, 1, 0]);
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        s.fill_checksum(pseudo);
        assert_eq!(s.clamp_mss(1200), Some(1460));
        assert!(s.verify_checksum(pseudo));
        assert_eq!(&s.options()[2..6], &[2, 4, 0x04, 0xb0]);
        assert_eq!(s.clamp_mss(1300), Some(1200), "an MSS below the clamp stays");
        let mut not_syn = b;
        not_syn[13] = flags::ACK;
        assert_eq!(Segment::new_checked(&mut not_syn[..]).unwrap().clamp_mss(100), None);
        let mut broken = b;
        broken[23] = 40; // MSS option length runs past the header
        assert_eq!(Segment::new_checked(&mut broken[..]).unwrap().clamp_mss(100), None);
    }

    #[test]
    fn rejects_bad_data_offset() {
        let mut b = [0u8; 20];
        b[12] = 4 << 4;
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[12] = 6 << 4;
        assert_eq!(Segment::new_checked(&b[..]).unwrap_err(), Error::Truncated);
    }
}
