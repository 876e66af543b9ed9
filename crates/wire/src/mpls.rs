//! MPLS label stack entries (RFC 3032 §2.1) and MPLS-in-UDP (RFC 7510).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Label                  | TC  |S|       TTL     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The stack ends with the entry whose S (bottom-of-stack) bit is set.
use crate::{Error, Result, be32};

/// Size of one label stack entry.
pub const LSE_LEN: usize = 4;
/// Default limit on the depth of a label stack; deeper stacks are dropped and counted.
pub const DEFAULT_MAX_DEPTH: usize = 16;
/// Largest label value (20 bits).
pub const LABEL_MAX: u32 = 0xF_FFFF;
/// Labels 0-15 are reserved (RFC 3032 §2.1); zsfc never allocates them.
pub const FIRST_UNRESERVED_LABEL: u32 = 16;

/// One label stack entry, held as its 32-bit wire value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lse(u32);

impl core::fmt::Debug for Lse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Lse(label={} tc={} s={} ttl={})", self.label(), self.tc(), self.bos() as u8, self.ttl())
    }
}

impl Lse {
    /// Builds an entry; `label` is masked to 20 bits and `tc` to 3.
    pub fn new(label: u32, tc: u8, bos: bool, ttl: u8) -> Self {
        Self(((label & LABEL_MAX) << 12) | (u32::from(tc & 7) << 9) | (u32::from(bos) << 8) | u32::from(ttl))
    }
    pub fn from_bytes(b: [u8; 4]) -> Self {
        Self(u32::from_be_bytes(b))
    }
    pub fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
    /// Reads the entry at the start of `b`.
    pub fn read(b: &[u8]) -> Result<Self> {
        if b.len() < LSE_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self(be32(b, 0)))
    }
    pub fn label(self) -> u32 {
        self.0 >> 12
    }
    pub fn tc(self) -> u8 {
        ((self.0 >> 9) & 7) as u8
    }
    pub fn bos(self) -> bool {
        self.0 & 0x100 != 0
    }
    pub fn ttl(self) -> u8 {
        self.0 as u8
    }
    pub fn with_ttl(self, ttl: u8) -> Self {
        Self((self.0 & !0xff) | u32::from(ttl))
    }
    pub fn with_bos(self, bos: bool) -> Self {
        Self((self.0 & !0x100) | (u32::from(bos) << 8))
    }
}

/// Returns the number of entries in the label stack at the start of `b`: it ends at the first
/// entry with S=1. A stack deeper than `max_depth` is [`Error::TooDeep`]; one that runs off the
/// end of `b` is [`Error::Truncated`].
pub fn stack_depth(b: &[u8], max_depth: usize) -> Result<usize> {
    for i in 0..max_depth {
        // The S bit is the lowest bit of the third byte of an entry.
        match b.get(i * LSE_LEN..i * LSE_LEN + LSE_LEN) {
            Some(e) if e[2] & 1 != 0 => return Ok(i + 1),
            Some(_) => {}
            None => return Err(Error::Truncated),
        }
    }
    Err(Error::TooDeep)
}

/// Iterates over the entries of a stack previously measured with [`stack_depth`].
pub fn entries(b: &[u8]) -> impl Iterator<Item = Lse> + '_ {
    b.chunks_exact(LSE_LEN).map(|c| Lse(be32(c, 0)))
}

/// Writes `labels` as a stack (S set on the last, all with `ttl`) into the first
/// `labels.len() * 4` bytes of `out`.
pub fn emit_stack(labels: &[u32], ttl: u8, out: &mut [u8]) -> Result<()> {
    let out = out.get_mut(..labels.len() * LSE_LEN).ok_or(Error::NoRoom)?;
    for (i, (l, o)) in labels.iter().zip(out.chunks_exact_mut(LSE_LEN)).enumerate() {
        o.copy_from_slice(&Lse::new(*l, 0, i + 1 == labels.len(), ttl).to_bytes());
    }
    Ok(())
}

/// MPLS-in-UDP (RFC 7510): an MPLS stack as the UDP payload.
pub mod in_udp {
    use crate::udp;
    use crate::{Error, Result};

    /// RFC 7510 §3: the destination port assigned by IANA for MPLS-in-UDP.
    pub const PORT: u16 = 6635;

    /// RFC 7510 §3: the source port SHOULD carry flow entropy from the ephemeral range
    /// 49152-65535, so that ECMP keeps the packets of one flow together.
    pub fn entropy_port(flow_hash: u32) -> u16 {
        49152 + (flow_hash % 16384) as u16
    }

    /// Checks that `datagram` (a UDP header and payload) is MPLS-in-UDP with a valid label stack
    /// and returns the offset of the stack and its depth.
    pub fn check(datagram: &[u8], max_depth: usize) -> Result<(usize, usize)> {
        let d = udp::Datagram::new_checked(datagram)?;
        if d.dst_port() != PORT {
            return Err(Error::Unsupported);
        }
        let depth = super::stack_depth(d.payload(), max_depth)?;
        Ok((udp::HEADER_LEN, depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_fields_match_rfc3032_layout() {
        let e = Lse::new(0xABCDE, 5, true, 64);
        assert_eq!(e.to_bytes(), [0xAB, 0xCD, 0xEB, 64]);
        assert_eq!((e.label(), e.tc(), e.bos(), e.ttl()), (0xABCDE, 5, true, 64));
        assert_eq!(Lse::from_bytes(e.to_bytes()), e);
        assert_eq!(e.with_ttl(3).ttl(), 3);
        assert!(!e.with_bos(false).bos());
    }

    #[test]
    fn measures_stack_and_rejects_too_deep_or_truncated() {
        let mut b = [0u8; 12];
        emit_stack(&[100, 200, 300], 64, &mut b).unwrap();
        assert_eq!(stack_depth(&b, 16), Ok(3));
        assert_eq!(entries(&b).map(Lse::label).collect::<Vec<_>>(), vec![100, 200, 300]);
        assert_eq!(stack_depth(&b, 2), Err(Error::TooDeep));
        assert_eq!(stack_depth(&b[..8], 16), Err(Error::Truncated));
        assert_eq!(stack_depth(&b[..7], 16), Err(Error::Truncated));
    }

    #[test]
    fn entropy_port_stays_in_ephemeral_range() {
        for h in [0, 1, 16383, 16384, u32::MAX] {
            assert!(in_udp::entropy_port(h) >= 49152);
        }
    }

    #[test]
    fn recognises_mpls_in_udp() {
        let mut d = vec![0u8; 8 + 8];
        crate::udp::Repr { src_port: 50000, dst_port: in_udp::PORT }.emit(&mut d, 8, None).unwrap();
        emit_stack(&[20, 21], 9, &mut d[8..]).unwrap();
        assert_eq!(in_udp::check(&d, 16), Ok((8, 2)));
        d[3] = 1;
        assert_eq!(in_udp::check(&d, 16), Err(Error::Unsupported));
    }
}
