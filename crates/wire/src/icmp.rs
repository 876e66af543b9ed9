//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: both start with type, code and checksum.
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Identifier (echo)         |     Sequence Number (echo)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use crate::{Error, Result, be16, checksum, put16};

pub const HEADER_LEN: usize = 8;
pub const ECHO_REQUEST_V4: u8 = 8;
pub const ECHO_REPLY_V4: u8 = 0;
pub const ECHO_REQUEST_V6: u8 = 128;
pub const ECHO_REPLY_V6: u8 = 129;

/// A checked view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// The identifier of an echo message (the "rest of header" for other types).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    /// `pseudo` is 0 for ICMPv4 and the IPv6 pseudo-header sum for ICMPv6 (RFC 4443 §2.3).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::finish(pseudo + checksum::sum(self.buf.as_ref())) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v)
    }
}

/// The fields of an ICMP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub msg_type: u8,
    pub code: u8,
    pub ident: u16,
    pub seq: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(m: &Message<T>) -> Self {
        Self { msg_type: m.msg_type(), code: m.code(), ident: m.echo_ident(), seq: m.echo_seq() }
    }
    /// Writes the header at the start of `message` (payload in place) with its checksum.
    pub fn emit(&self, message: &mut [u8], pseudo: u32) -> Result<()> {
        if message.len() < HEADER_LEN {
            return Err(Error::NoRoom);
        }
        message[0] = self.msg_type;
        message[1] = self.code;
        put16(message, 2, 0);
        put16(message, 4, self.ident);
        put16(message, 6, self.seq);
        let c = checksum::finish(pseudo + checksum::sum(message));
        put16(message, 2, c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_echo_v4_and_v6() {
        let mut b = [0u8; 12];
        let r = Repr { msg_type: ECHO_REQUEST_V4, code: 0, ident: 7, seq: 9 };
        r.emit(&mut b, 0).unwrap();
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&m), r);
        assert!(m.verify_checksum(0));
        let pseudo = checksum::pseudo_v6([1; 16], [2; 16], 58, 12);
        let r6 = Repr { msg_type: ECHO_REQUEST_V6, ..r };
        r6.emit(&mut b, pseudo).unwrap();
        assert!(Message::new_checked(&b[..]).unwrap().verify_checksum(pseudo));
        assert!(!Message::new_checked(&b[..]).unwrap().verify_checksum(0));
    }

    #[test]
    fn rejects_short_message() {
        assert_eq!(Message::new_checked(&[0u8; 7][..]).unwrap_err(), Error::Truncated);
    }
}
