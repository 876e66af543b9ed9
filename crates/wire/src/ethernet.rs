//! Ethernet II frames (IEEE 802.3), the L2 carrier of labelled packets on a veth link.
//!
//! ```text
//! +-----------------+-----------------+-----------+---------
//! | destination (6) |   source (6)    | type (2)  | payload
//! +-----------------+-----------------+-----------+---------
//! ```
use crate::{Error, Result, be16, put16};

pub const HEADER_LEN: usize = 14;

/// The EtherTypes zsfc dispatches on.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    /// MPLS unicast (RFC 5332 §3).
    pub const MPLS: u16 = 0x8847;
}

/// A checked view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn dst(&self) -> [u8; 6] {
        let b = self.buf.as_ref();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }
    pub fn src(&self) -> [u8; 6] {
        let b = self.buf.as_ref();
        [b[6], b[7], b[8], b[9], b[10], b[11]]
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// The parsed fields of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Self {
        Self { dst: f.dst(), src: f.src(), ethertype: f.ethertype() }
    }
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        let out = out.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        out[0..6].copy_from_slice(&self.dst);
        out[6..12].copy_from_slice(&self.src);
        put16(out, 12, self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_mpls_frame() {
        let r = Repr { dst: [2, 0, 0, 0, 0, 1], src: [2, 0, 0, 0, 0, 2], ethertype: ethertype::MPLS };
        let mut b = [0u8; 18];
        r.emit(&mut b).unwrap();
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&f), r);
        assert_eq!(f.payload().len(), 4);
    }

    #[test]
    fn rejects_short_frame() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]).unwrap_err(), Error::Truncated);
    }
}
