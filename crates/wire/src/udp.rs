//! UDP headers (RFC 768).
//!
//! ```text
//! +--------+--------+--------+--------+
//! |   Source Port   |   Dest. Port    |
//! +--------+--------+--------+--------+
//! |     Length      |    Checksum     |
//! +--------+--------+--------+--------+
//! ```
use crate::{Error, Result, be16, checksum, put16};

pub const HEADER_LEN: usize = 8;
pub const CHECKSUM_OFFSET: usize = 6;

/// A checked view of a UDP datagram; the length field must fit in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, 4));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
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
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
    /// A zero checksum means "none" over IPv4 (RFC 768).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() == 0
            || checksum::finish(pseudo + checksum::sum(&self.buf.as_ref()[..usize::from(self.len())])) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), CHECKSUM_OFFSET, v)
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(d: &Datagram<T>) -> Self {
        Self { src_port: d.src_port(), dst_port: d.dst_port() }
    }
    /// Writes the header at the start of `datagram` (payload of `payload_len` bytes follows it
    /// already) and the checksum when `pseudo` is given (else 0, "no checksum").
    pub fn emit(&self, datagram: &mut [u8], payload_len: usize, pseudo: Option<u32>) -> Result<()> {
        let len = HEADER_LEN + payload_len;
        let len16 = u16::try_from(len).map_err(|_| Error::Malformed)?;
        let d = datagram.get_mut(..len).ok_or(Error::NoRoom)?;
        put16(d, 0, self.src_port);
        put16(d, 2, self.dst_port);
        put16(d, 4, len16);
        put16(d, 6, 0);
        if let Some(p) = pseudo {
            // RFC 768: a computed zero is sent as all ones.
            let c = match checksum::finish(p + checksum::sum(d)) {
                0 => 0xffff,
                c => c,
            };
            put16(d, 6, c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_checksum() {
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(b"ping");
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 12);
        let r = Repr { src_port: 5353, dst_port: 53 };
        r.emit(&mut b, 4, Some(pseudo)).unwrap();
        let d = Datagram::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&d), r);
        assert_eq!(d.payload(), b"ping");
        assert!(d.verify_checksum(pseudo));
    }

    #[test]
    fn rejects_length_field_out_of_bounds() {
        let mut b = [0u8; 8];
        put16(&mut b, 4, 7);
        assert_eq!(Datagram::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        put16(&mut b, 4, 9);
        assert_eq!(Datagram::new_checked(&b[..]).unwrap_err(), Error::Truncated);
    }
}
