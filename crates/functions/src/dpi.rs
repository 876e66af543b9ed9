//! Deep packet inspection: drop packets whose transport payload contains a blocked pattern.
//!
//! Matching is per packet, like the seed's iptables `string` match: a pattern split across two
//! TCP segments is not seen. Patterns are found with one Aho-Corasick pass whatever their number.
use aho_corasick::AhoCorasick;
use zsfc_dataplane::{DropReason, PacketBuf, ServiceFunction, SfContext, SfVerdict};
use zsfc_wire::{ip, tcp};

#[derive(Debug, thiserror::Error)]
pub enum DpiError {
    #[error("dpi: patterns: at least one non-empty pattern is needed")]
    NoPatterns,
    #[error("dpi: patterns: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

/// The DPI SF.
#[derive(Debug)]
pub struct Dpi {
    ac: AhoCorasick,
    inspected: u64,
    matched: Vec<u64>,
    not_ip: u64,
}

impl Dpi {
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Result<Self, DpiError> {
        if patterns.is_empty() || patterns.iter().any(|p| p.as_ref().is_empty()) {
            return Err(DpiError::NoPatterns);
        }
        let ac = AhoCorasick::new(patterns)?;
        Ok(Self { ac, inspected: 0, matched: vec![0; patterns.len()], not_ip: 0 })
    }

    /// The transport payload of an IP packet (the whole IP payload for other protocols).
    fn payload(pkt: &[u8]) -> Option<&[u8]> {
        let s = ip::parse(pkt).ok()?;
        let l4 = pkt.get(s.l4_offset..s.total_len)?;
        Some(match s.tuple.protocol {
            ip::protocol::TCP => l4.get(tcp::Segment::new_checked(l4).ok()?.header_len()..)?,
            ip::protocol::UDP => l4.get(8..)?,
            _ => l4,
        })
    }
}

impl ServiceFunction for Dpi {
    fn kind(&self) -> &'static str {
        "dpi"
    }
    fn process(&mut self, _: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        self.inspected += 1;
        let Some(payload) = Self::payload(pkt.as_slice()) else {
            self.not_ip += 1;
            return SfVerdict::Drop(pkt, DropReason::SfBadPacket);
        };
        match self.ac.find(payload) {
            Some(m) => {
                if let Some(c) = self.matched.get_mut(m.pattern().as_usize()) {
                    *c += 1;
                }
                SfVerdict::Drop(pkt, DropReason::SfDpiMatch)
            }
            None => SfVerdict::Pass(pkt),
        }
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("inspected", self.inspected);
        out("matched", self.matched.iter().sum());
        out("not_ip", self.not_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::testutil::*;
    use zsfc_dataplane::Instant;

    #[test]
    fn drops_payloads_with_any_pattern_and_only_those() {
        let mut d = Dpi::new(&["test", "attack"]).unwrap();
        let mut pass =
            |p: Vec<u8>| matches!(d.process(&ctx(Instant::ZERO), PacketBuf::from_slice(&p)), SfVerdict::Pass(_));
        assert!(!pass(v4(6, [1; 4], 1, [2; 4], 80, b"GET /test HTTP/1.1")));
        assert!(!pass(v4(17, [1; 4], 1, [2; 4], 53, b"an attack")));
        assert!(pass(v4(6, [1; 4], 1, [2; 4], 80, b"GET /tes t")));
        // The pattern in a header field (ports 0x7465, 0x7374 = "test") is not payload.
        assert!(pass(v4(17, [1; 4], 0x7465, [2; 4], 0x7374, b"ok")));
        assert!(!pass(v6_udp([1; 16], 1, [2; 16], 2, b"xxtestxx")));
        let mut c = std::collections::HashMap::new();
        d.counters(&mut |n, v| {
            c.insert(n, v);
        });
        assert_eq!((c["inspected"], c["matched"]), (5, 3));
        assert!(matches!(Dpi::new::<&str>(&[]), Err(DpiError::NoPatterns)));
        assert!(matches!(Dpi::new(&[""]), Err(DpiError::NoPatterns)));
    }
}
