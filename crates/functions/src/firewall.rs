//! A 5-tuple firewall: ordered ACL, first match wins, a default for the rest.
use zsfc_dataplane::{DropReason, PacketBuf, ServiceFunction, SfContext, SfVerdict, classifier::Prefix};
use zsfc_wire::ip;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// One ACL line. `protocol: None` and full port ranges match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub protocol: Option<u8>,
    pub dst_ports: (u16, u16),
    pub verdict: Verdict,
}

impl AclRule {
    fn matches(&self, t: &ip::FiveTuple) -> bool {
        self.src.is_none_or(|p| p.contains(&t.src))
            && self.dst.is_none_or(|p| p.contains(&t.dst))
            && self.protocol.is_none_or(|p| p == t.protocol)
            && (self.dst_ports.0..=self.dst_ports.1).contains(&t.dst_port)
    }
}

/// The firewall SF. Unparseable packets are denied.
#[derive(Debug)]
pub struct Firewall {
    rules: Vec<AclRule>,
    default: Verdict,
    allowed: u64,
    denied: u64,
}

impl Firewall {
    pub fn new(rules: Vec<AclRule>, default: Verdict) -> Self {
        Self { rules, default, allowed: 0, denied: 0 }
    }
}

impl ServiceFunction for Firewall {
    fn kind(&self) -> &'static str {
        "firewall"
    }
    fn process(&mut self, _: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        let v = match ip::parse(pkt.as_slice()) {
            Ok(s) => self.rules.iter().find(|r| r.matches(&s.tuple)).map_or(self.default, |r| r.verdict),
            Err(_) => Verdict::Deny,
        };
        match v {
            Verdict::Allow => {
                self.allowed += 1;
                SfVerdict::Pass(pkt)
            }
            Verdict::Deny => {
                self.denied += 1;
                SfVerdict::Drop(pkt, DropReason::SfFirewallDeny)
            }
        }
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("allowed", self.allowed);
        out("denied", self.denied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::testutil::*;
    use zsfc_dataplane::Instant;

    #[test]
    fn first_matching_rule_decides_and_default_covers_the_rest() {
        let mut fw = Firewall::new(
            vec![
                AclRule { src: None, dst: None, protocol: Some(6), dst_ports: (22, 22), verdict: Verdict::Deny },
                AclRule {
                    src: Some("10.0.0.0/8".parse().unwrap()),
                    dst: None,
                    protocol: None,
                    dst_ports: (0, u16::MAX),
                    verdict: Verdict::Allow,
                },
            ],
            Verdict::Deny,
        );
        let mut pass =
            |p: Vec<u8>| matches!(fw.process(&ctx(Instant::ZERO), PacketBuf::from_slice(&p)), SfVerdict::Pass(_));
        assert!(!pass(v4(6, [10, 0, 0, 1], 1000, [10, 0, 0, 2], 22, b"")));
        assert!(pass(v4(6, [10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, b"")));
        assert!(!pass(v4(17, [11, 0, 0, 1], 1000, [10, 0, 0, 2], 80, b"")));
        assert!(!pass(vec![0x45, 0]));
    }
}
