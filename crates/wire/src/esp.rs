//! ESP header and trailer (RFC 4303 §2) as used with AES-GCM (RFC 4106 §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Sequence Number                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Initialization Vector (8 octets)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                  Payload Data (variable)                      ~
//! +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               |     Padding (0-255 bytes)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |  Pad Length   | Next Header   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Integrity Check Value (16 octets for AES-GCM)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use crate::{Error, Result, be32, put32};

/// SPI + sequence number.
pub const HEADER_LEN: usize = 8;
/// RFC 4106 §3.1: the explicit IV of AES-GCM is 8 octets.
pub const IV_LEN: usize = 8;
/// RFC 4106 §6: a 16-octet ICV (the only length zsfc accepts).
pub const ICV_LEN: usize = 16;
/// Pad length + next header.
pub const TRAILER_LEN: usize = 2;
/// IP protocol number of ESP.
pub const PROTOCOL: u8 = 50;
/// UDP-encapsulated ESP (RFC 3948 §2.1 with the port of RFC 3947): the port of link-protected
/// datagrams between nodes. A payload that starts with four zero bytes is not ESP (§2.2), which
/// SPIs never are (0-255 are reserved).
pub const UDP_ENCAP_PORT: u16 = 4500;

/// A checked view of an ESP packet with an 8-byte IV and a 16-byte ICV.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks room for header, IV, a minimal encrypted trailer and the ICV. The ciphertext
    /// length must be a multiple of 4 (RFC 4303 §2.4: trailer 4-byte aligned).
    pub fn new_checked(buf: T) -> Result<Self> {
        let len = buf.as_ref().len();
        if len < HEADER_LEN + IV_LEN + TRAILER_LEN + ICV_LEN {
            return Err(Error::Truncated);
        }
        if !(len - HEADER_LEN - IV_LEN - ICV_LEN).is_multiple_of(4) {
            return Err(Error::Malformed);
        }
        Ok(Self { buf })
    }
    pub fn spi(&self) -> u32 {
        be32(self.buf.as_ref(), 0)
    }
    /// The low 32 bits of the sequence number (the high 32 bits of an ESN are not sent).
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    pub fn iv(&self) -> [u8; IV_LEN] {
        self.buf.as_ref()[HEADER_LEN..HEADER_LEN + IV_LEN].try_into().unwrap_or_default()
    }
    /// Encrypted payload and trailer.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buf.as_ref();
        &b[HEADER_LEN + IV_LEN..b.len() - ICV_LEN]
    }
    pub fn icv(&self) -> &[u8] {
        let b = self.buf.as_ref();
        &b[b.len() - ICV_LEN..]
    }
}

/// Writes SPI and sequence number into the first 8 bytes of `out`.
pub fn emit_header(out: &mut [u8], spi: u32, seq: u32) -> Result<()> {
    let out = out.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
    put32(out, 0, spi);
    put32(out, 4, seq);
    Ok(())
}

/// Number of padding bytes that make `payload_len + pad + 2` a multiple of 4 (RFC 4303 §2.4;
/// GCM needs no block alignment, RFC 4106 §3.2).
pub fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + TRAILER_LEN) % 4) % 4
}

/// Writes the default padding (1, 2, 3, ...; RFC 4303 §2.4), pad length and next header into
/// `out`, which is exactly `pad + 2` bytes.
pub fn emit_trailer(out: &mut [u8], next_header: u8) -> Result<()> {
    let (pad, tail) = out.split_at_mut(out.len().checked_sub(TRAILER_LEN).ok_or(Error::NoRoom)?);
    for (i, p) in pad.iter_mut().enumerate() {
        *p = (i + 1) as u8;
    }
    tail[0] = pad.len() as u8;
    tail[1] = next_header;
    Ok(())
}

/// Parses the trailer at the end of the decrypted `plaintext`: returns the payload length and
/// the next header. Padding that is not the default sequence is rejected (RFC 4303 §2.4 lets
/// the receiver check it; zsfc always sends the default).
pub fn parse_trailer(plaintext: &[u8]) -> Result<(usize, u8)> {
    let n = plaintext.len();
    let (pad_len, next) = match plaintext {
        [.., p, nh] => (usize::from(*p), *nh),
        _ => return Err(Error::Truncated),
    };
    let payload_len = n.checked_sub(TRAILER_LEN + pad_len).ok_or(Error::Malformed)?;
    let pad = &plaintext[payload_len..n - TRAILER_LEN];
    if pad.iter().enumerate().any(|(i, &p)| usize::from(p) != i + 1) {
        return Err(Error::Malformed);
    }
    Ok((payload_len, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_for_every_alignment() {
        for payload in 0..9 {
            let pad = pad_len(payload);
            assert_eq!((payload + pad + 2) % 4, 0);
            let mut b = vec![0xAAu8; payload + pad + 2];
            emit_trailer(&mut b[payload..], 6).unwrap();
            assert_eq!(parse_trailer(&b), Ok((payload, 6)));
        }
    }

    #[test]
    fn rejects_bad_padding_and_overlong_pad_length() {
        let mut b = vec![0u8; 8];
        emit_trailer(&mut b[3..], 17).unwrap();
        b[4] = 9;
        assert_eq!(parse_trailer(&b), Err(Error::Malformed));
        assert_eq!(parse_trailer(&[200, 4]), Err(Error::Malformed));
        assert_eq!(parse_trailer(&[4]), Err(Error::Truncated));
    }

    #[test]
    fn header_view_reads_spi_seq_iv() {
        let mut b = vec![0u8; 8 + 8 + 4 + 16];
        emit_header(&mut b, 0x1234_5678, 42).unwrap();
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.spi(), p.seq(), u64::from_be_bytes(p.iv())), (0x1234_5678, 42, 7));
        assert_eq!(p.ciphertext().len(), 4);
        assert_eq!(Packet::new_checked(&b[..b.len() - 1]).unwrap_err(), Error::Malformed);
        assert_eq!(Packet::new_checked(&b[..20]).unwrap_err(), Error::Truncated);
    }
}
