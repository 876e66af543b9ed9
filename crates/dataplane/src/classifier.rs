//! The classifier: which chain does a plain IP packet take? Exact flow entries first (the
//! gateway inserts one per authenticated connection), then 5-tuple rules in order; nothing
//! matched means deny.
use crate::ChainId;
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use zsfc_wire::ip::FiveTuple;

/// An IPv4 or IPv6 prefix such as `10.1.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("`{0}` is not ADDRESS/LENGTH")]
    Syntax(String),
    #[error("prefix length {len} is longer than {max} for {addr}")]
    Length { addr: IpAddr, len: u8, max: u8 },
}

impl Prefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::Length { addr, len, max });
        }
        Ok(Self { addr, len })
    }
    /// Every IPv4 (`any_v4`) or IPv6 address.
    pub fn any_v4() -> Self {
        Self { addr: IpAddr::from([0u8; 4]), len: 0 }
    }
    pub fn any_v6() -> Self {
        Self { addr: IpAddr::from([0u8; 16]), len: 0 }
    }
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, len: if addr.is_ipv4() { 32 } else { 128 } }
    }
    pub fn contains(&self, a: &IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(p) & mask == u128::from(*a) & mask
            }
            _ => false,
        }
    }
}

impl core::str::FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let err = || PrefixError::Syntax(s.to_owned());
        match s.split_once('/') {
            Some((a, l)) => Self::new(a.parse().map_err(|_| err())?, l.parse().map_err(|_| err())?),
            None => Ok(Self::host(s.parse().map_err(|_| err())?)),
        }
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Chain(ChainId),
    Deny,
}

/// A 5-tuple rule. Port ranges are inclusive; `protocol: None` matches any protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub src: Prefix,
    pub dst: Prefix,
    pub protocol: Option<u8>,
    pub src_ports: (u16, u16),
    pub dst_ports: (u16, u16),
    pub action: Action,
}

impl Rule {
    /// A rule matching every packet between `src` and `dst`.
    pub fn between(src: Prefix, dst: Prefix, action: Action) -> Self {
        Self { src, dst, protocol: None, src_ports: (0, u16::MAX), dst_ports: (0, u16::MAX), action }
    }
    pub fn matches(&self, t: &FiveTuple) -> bool {
        self.src.contains(&t.src)
            && self.dst.contains(&t.dst)
            && self.protocol.is_none_or(|p| p == t.protocol)
            && (self.src_ports.0..=self.src_ports.1).contains(&t.src_port)
            && (self.dst_ports.0..=self.dst_ports.1).contains(&t.dst_port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flow table full ({0} entries)")]
pub struct FlowTableFull(pub usize);

/// Flow entries and rules of one classifier.
#[derive(Debug)]
pub struct Classifier {
    flows: HashMap<FiveTuple, (ChainId, u64)>,
    max_flows: usize,
    rules: Vec<Rule>,
}

impl Classifier {
    /// A classifier holding at most `max_flows` exact entries (allocated up front).
    pub fn new(max_flows: usize) -> Self {
        Self { flows: HashMap::with_capacity_and_hasher(max_flows, Default::default()), max_flows, rules: Vec::new() }
    }

    /// Appends a rule; rules are tried in the order they were added.
    pub fn push_rule(&mut self, r: Rule) {
        self.rules.push(r);
    }

    /// Replaces every rule at once (a configuration push); flow entries stay.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.rules = rules;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Adds or replaces an exact flow entry.
    pub fn insert_flow(&mut self, t: FiveTuple, chain: ChainId) -> Result<(), FlowTableFull> {
        self.insert_flow_for(t, chain, 0)
    }

    /// A flow entry of a known subscriber (the obfuscated client identity the gateway put
    /// behind the flow; 0: none), carried in the NSH of protected chains.
    pub fn insert_flow_for(&mut self, t: FiveTuple, chain: ChainId, subscriber: u64) -> Result<(), FlowTableFull> {
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&t) {
            return Err(FlowTableFull(self.max_flows));
        }
        self.flows.insert(t, (chain, subscriber));
        Ok(())
    }

    pub fn remove_flow(&mut self, t: &FiveTuple) -> Option<ChainId> {
        self.flows.remove(t).map(|(c, _)| c)
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The chain for `t`, or `None` (deny).
    pub fn classify(&self, t: &FiveTuple) -> Option<ChainId> {
        self.classify_subscriber(t).map(|(c, _)| c)
    }

    /// The chain and the subscriber of the flow (0 for packets matched by a rule).
    pub fn classify_subscriber(&self, t: &FiveTuple) -> Option<(ChainId, u64)> {
        if let Some(&c) = self.flows.get(t) {
            return Some(c);
        }
        match self.rules.iter().find(|r| r.matches(t))?.action {
            Action::Chain(c) => Some((c, 0)),
            Action::Deny => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> FiveTuple {
        FiveTuple { src: src.parse().unwrap(), dst: dst.parse().unwrap(), protocol: proto, src_port: sp, dst_port: dp }
    }

    #[test]
    fn prefixes_match_v4_and_v6_and_reject_bad_lengths() {
        let p: Prefix = "10.1.0.0/16".parse().unwrap();
        assert!(p.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!p.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!p.contains(&"::1".parse().unwrap()));
        let p6: Prefix = "fd00:1::/32".parse().unwrap();
        assert!(p6.contains(&"fd00:1:ffff::9".parse().unwrap()));
        assert!(Prefix::any_v4().contains(&"1.2.3.4".parse().unwrap()));
        assert!(matches!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::Length { .. })));
        assert!(matches!("nonsense".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
        assert_eq!("10.0.0.1".parse::<Prefix>().unwrap().to_string(), "10.0.0.1/32");
    }

    #[test]
    fn default_deny_then_first_rule_wins_and_flows_override_rules() {
        let mut c = Classifier::new(2);
        let web = t("10.1.0.5", "10.9.0.1", 6, 40000, 443);
        assert_eq!(c.classify(&web), None);
        c.push_rule(Rule {
            protocol: Some(6),
            dst_ports: (443, 443),
            ..Rule::between("10.1.0.0/24".parse().unwrap(), Prefix::any_v4(), Action::Chain(ChainId(1)))
        });
        c.push_rule(Rule::between(Prefix::any_v4(), Prefix::any_v4(), Action::Deny));
        assert_eq!(c.classify(&web), Some(ChainId(1)));
        assert_eq!(c.classify(&t("10.1.0.5", "10.9.0.1", 17, 40000, 443)), None);
        assert_eq!(c.classify(&t("10.1.0.5", "10.9.0.1", 6, 40000, 444)), None);
        c.insert_flow(t("10.1.0.5", "10.9.0.1", 17, 1, 2), ChainId(7)).unwrap();
        assert_eq!(c.classify(&t("10.1.0.5", "10.9.0.1", 17, 1, 2)), Some(ChainId(7)));
        c.insert_flow(t("1.1.1.1", "2.2.2.2", 17, 1, 2), ChainId(7)).unwrap();
        assert_eq!(c.insert_flow(t("1.1.1.1", "2.2.2.3", 17, 1, 2), ChainId(7)), Err(FlowTableFull(2)));
        assert_eq!(c.remove_flow(&t("1.1.1.1", "2.2.2.2", 17, 1, 2)), Some(ChainId(7)));
        assert_eq!(c.flow_count(), 1);
    }
}
