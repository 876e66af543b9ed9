//! Reading, writing, checking and building a [`NodeConfig`] into a running [`Node`].
use crate::VERSION;
use crate::model::*;
use std::collections::HashSet;
use zsfc_dataplane::integrity::{ChainKeyConfig as ChainKeyConfigEngine, PotRole, PotShare};
use zsfc_dataplane::{
    Action, ChainId, ChainIntegrity, ChainSpec, Instant, LabelAction, Node, NodeId, NodeSettings, NshSpec, Prefix,
    Rule, SaIdx, SaUse, ServiceFunction, SfSpec,
};
use zsfc_esp::{Lifetimes, Limits, SaKey};
use zsfc_functions as f;

/// A configuration that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The text is not a configuration (syntax, unknown field, wrong type); the message gives
    /// line, column and field.
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {why}")]
    Field { field: String, why: String },
}

impl FieldError {
    /// The field at `field` cannot be used, because `why`.
    pub fn field(field: impl Into<String>, why: impl ToString) -> Self {
        Self::Field { field: field.into(), why: why.to_string() }
    }
}

pub(crate) fn bad(field: impl Into<String>, why: impl ToString) -> FieldError {
    FieldError::field(field, why)
}

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self, FieldError> {
        toml::from_str(text).map_err(|e| FieldError::Syntax(e.to_string()))
    }

    /// This node's file when a controller pushes its tables: no key, label, chain, rule or
    /// gateway grant, and where the controller is.
    pub fn for_controller(&self, controller: ControllerConfig) -> Self {
        let mut file = self.clone();
        file.labels.clear();
        file.outbound_sas.clear();
        file.inbound_sas.clear();
        file.chains.clear();
        file.pools.clear();
        file.links.clear();
        file.chain_keys.clear();
        file.rules.clear();
        if let Some(g) = &mut file.gateway {
            g.grants.clear();
        }
        file.controller = Some(controller);
        file
    }

    /// Wipes every key the file held (zeroized): payload and link SAs, chain keys and POT
    /// shares. A node
    /// process keeps its configuration for names and settings while its engines hold their own
    /// copies of the keys, which they erase at each SA's hard lifetime; the configuration must
    /// not keep them any longer.
    pub fn forget_keys(&mut self) {
        for sa in self.outbound_sas.iter_mut().map(|o| &mut o.sa).chain(self.inbound_sas.iter_mut().map(|i| &mut i.sa))
        {
            sa.keymat = KeyMaterial(zeroize::Zeroizing::new(Vec::new()));
        }
        for k in &mut self.chain_keys {
            (k.mac_key, k.enc_key, k.origin_key, k.pot) = (None, None, None, None);
        }
    }

    pub fn to_toml(&self) -> Result<String, FieldError> {
        toml::to_string(self).map_err(|e| FieldError::Syntax(e.to_string()))
    }

    /// Checks the whole configuration and builds the node's data plane. Nothing is half-built:
    /// the first error stops it and names its field.
    pub fn build(&self, now: Instant) -> Result<Node, FieldError> {
        self.build_lane(now, 0)
    }

    /// Builds the engine of worker lane `lane` (see [`Settings::lanes`]): the same data plane
    /// with the lane's own SAs.
    pub fn build_lane(&self, now: Instant, lane: u32) -> Result<Node, FieldError> {
        // A dry run first, so that a mistake late in the file leaves no pcap file behind.
        self.check()?;
        if lane >= self.settings.lanes {
            return Err(bad("settings.lanes", format!("there is no lane {lane} of {}", self.settings.lanes)));
        }
        self.build_inner(now, false, lane)
    }

    /// Checks everything [`build`](Self::build) checks without side effects (a logger's pcap
    /// file is not created; its directory must exist).
    pub fn check(&self) -> Result<(), FieldError> {
        self.check_link_ports()?;
        self.build_inner(Instant::ZERO, true, 0).map(drop)
    }

    fn build_inner(&self, now: Instant, dry_run: bool, lane: u32) -> Result<Node, FieldError> {
        if self.version != VERSION {
            return Err(bad(
                "version",
                format!("{} is not supported; this zsfc reads version {VERSION}", self.version),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty"));
        }
        let s = self.settings;
        if !(1..=64).contains(&s.max_label_depth) {
            return Err(bad("settings.max_label_depth", format!("{} is outside 1..=64", s.max_label_depth)));
        }
        if !(1..=MAX_LANES).contains(&s.lanes) {
            return Err(bad("settings.lanes", format!("{} is outside 1..={MAX_LANES}", s.lanes)));
        }
        if s.lanes > 1 {
            self.check_lanes()?;
        }
        if s.tcp_mss_clamp.is_some_and(|m| m < 536) {
            return Err(bad("settings.tcp_mss_clamp", "below 536, the smallest MSS every IPv4 host must accept"));
        }
        s.liveness.check("settings.liveness")?;
        let mut node = Node::new(NodeSettings {
            max_label_depth: s.max_label_depth,
            max_flows: s.max_flows,
            tcp_mss_clamp: s.tcp_mss_clamp,
            link_auth: s.link_auth,
            sfc_integrity: s.sfc_integrity,
            max_datagram: self.transport.as_ref().map(|t| t.max_datagram()),
            ..NodeSettings::default()
        });

        let mut peers = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if !peers.insert(p.id) {
                return Err(bad(format!("peers[{i}].id"), format!("peer id {} is used twice", p.id)));
            }
        }
        let probed: Vec<NodeId> = self.peers.iter().map(|p| NodeId(p.id)).collect();
        node.set_liveness(s.liveness.settings(), &probed, now);

        let mut sf_labels = HashSet::new();
        for (i, sf) in self.sfs.iter().enumerate() {
            let at = format!("sfs[{i}]");
            let mut spec = match (sf.external, &sf.function) {
                (true, None) => SfSpec::external(sf.label, &sf.name, sf.intrusive),
                (false, Some(func)) => {
                    let built =
                        function(func, dry_run).map_err(|(sub, why)| bad(format!("{at}.function{sub}"), why))?;
                    SfSpec::in_process(sf.label, &sf.name, sf.intrusive, built)
                }
                (true, Some(_)) => {
                    return Err(bad(format!("{at}.function"), "an external SF has no built-in function"));
                }
                (false, None) => {
                    return Err(bad(
                        format!("{at}.function"),
                        "missing: an in-process SF needs a function (or external = true)",
                    ));
                }
            };
            if sf.translates_addresses {
                if !sf.external {
                    return Err(bad(
                        format!("{at}.translates_addresses"),
                        "only for external SFs (in-process SFs keep their packets' metadata)",
                    ));
                }
                spec.key_mode = zsfc_dataplane::KeyMode::Translated;
            }
            if let Some(c) = sf.cache_capacity {
                if c == 0 {
                    return Err(bad(format!("{at}.cache_capacity"), "must be at least 1"));
                }
                spec.cache_capacity = c;
            }
            if let Some(ms) = sf.cache_max_age_ms {
                spec.cache_max_age = core::time::Duration::from_millis(ms);
            }
            node.add_sf(spec).map_err(|e| bad(&at, e))?;
            sf_labels.insert(sf.label);
        }

        for (i, l) in self.labels.iter().enumerate() {
            let at = format!("labels[{i}]");
            if sf_labels.contains(&l.label) {
                return Err(bad(format!("{at}.label"), format!("{} is the label of an SF on this node", l.label)));
            }
            let action = match (l.peer, l.deliver) {
                (Some(p), false) if peers.contains(&p) => LabelAction::Remote(NodeId(p)),
                (Some(p), false) => return Err(bad(format!("{at}.peer"), format!("no peer with id {p} in peers"))),
                (None, true) => LabelAction::Deliver,
                _ => return Err(bad(&at, "give exactly one of `peer` and `deliver = true`")),
            };
            node.set_label(l.label, action).map_err(|e| bad(format!("{at}.label"), e))?;
        }

        let mut outbound = HashSet::new();
        let mut gmac = HashSet::new();
        for (i, o) in self.outbound_sas.iter().enumerate() {
            let at = format!("outbound_sas[{i}]");
            if !outbound.insert(o.index) {
                return Err(bad(format!("{at}.index"), format!("outbound SA index {} is used twice", o.index)));
            }
            if o.sa.algorithm.esp().authenticates_only() {
                gmac.insert(o.index);
            }
            let cfg = sa_config(&o.sa, lane).map_err(|(sub, why)| bad(format!("{at}.sa.{sub}"), why))?;
            node.install_outbound(SaIdx(o.index), &cfg, now).map_err(|e| bad(format!("{at}.sa"), e))?;
        }
        for (i, inb) in self.inbound_sas.iter().enumerate() {
            let at = format!("inbound_sas[{i}]");
            let link_alg = inb.sa.algorithm.esp().authenticates_only();
            let usage = match (inb.reseal, inb.link) {
                (None, true) => SaUse::Link,
                (Some(_), true) => return Err(bad(format!("{at}.link"), "a link SA re-seals nothing; drop `reseal`")),
                (_, false) if link_alg => {
                    return Err(bad(format!("{at}.sa.algorithm"), "GMAC protects links only (set `link = true`)"));
                }
                (None, false) => SaUse::Terminate,
                (Some(x), false) if gmac.contains(&x) => {
                    return Err(bad(format!("{at}.reseal"), format!("outbound SA {x} is GMAC: it cannot encrypt")));
                }
                (Some(x), false) if outbound.contains(&x) => SaUse::Reseal(SaIdx(x)),
                (Some(x), false) => return Err(bad(format!("{at}.reseal"), format!("no outbound SA with index {x}"))),
            };
            let cfg = sa_config(&inb.sa, lane).map_err(|(sub, why)| bad(format!("{at}.sa.{sub}"), why))?;
            node.install_inbound(&cfg, usage, now).map_err(|e| bad(format!("{at}.sa.spi"), e))?;
            if !inb.reseal_via.is_empty() {
                if inb.reseal.is_none() {
                    return Err(bad(format!("{at}.reseal_via"), "only for an SA that re-seals (`reseal`)"));
                }
                let via = via(&inb.reseal_via, &outbound, &gmac, &format!("{at}.reseal_via"))?;
                node.set_reseal_via(cfg.spi, via).map_err(|e| bad(format!("{at}.reseal_via"), e))?;
            }
        }
        node.set_pools(pools(&self.pools)).map_err(|e| bad("pools", e))?;

        let mut key_ids = HashSet::new();
        for (i, k) in self.chain_keys.iter().enumerate() {
            let at = format!("chain_keys[{i}]");
            if !key_ids.insert(k.key_id) {
                return Err(bad(format!("{at}.key_id"), format!("key id {} is used twice", k.key_id)));
            }
            install_chain_key(&mut node, k, &at)?;
        }

        let mut chains = HashSet::new();
        for (i, c) in self.chains.iter().enumerate() {
            let at = format!("chains[{i}]");
            if !chains.insert(c.id) {
                return Err(bad(format!("{at}.id"), format!("chain id {} is used twice", c.id)));
            }
            if gmac.contains(&c.sa) {
                return Err(bad(
                    format!("{at}.sa"),
                    format!("outbound SA {} is GMAC: it cannot encrypt payloads", c.sa),
                ));
            }
            let sa_via = via(&c.sa_via, &outbound, &gmac, &format!("{at}.sa_via"))?;
            let mut spec = chain_spec(c.id, &c.labels, c.ttl, c.nsh.as_ref(), c.integrity, SaIdx(c.sa), &at)?;
            spec.sa_via = sa_via;
            node.add_chain(spec).map_err(|e| bad(&at, e))?;
        }

        let mut linked = HashSet::new();
        for (i, l) in self.links.iter().enumerate() {
            let at = format!("links[{i}]");
            if !peers.contains(&l.peer) {
                return Err(bad(format!("{at}.peer"), format!("no peer with id {} in peers", l.peer)));
            }
            if !linked.insert(l.peer) {
                return Err(bad(format!("{at}.peer"), format!("peer {} has two links", l.peer)));
            }
            if !outbound.contains(&l.sa) {
                return Err(bad(format!("{at}.sa"), format!("no outbound SA with index {}", l.sa)));
            }
            node.set_link_sa(NodeId(l.peer), Some(SaIdx(l.sa))).map_err(|e| bad(&at, e))?;
        }
        // A controlled node gets its links from the controller's document, not from the file.
        if s.link_auth
            && self.controller.is_none()
            && let Some(p) = self.peers.iter().find(|p| !linked.contains(&p.id))
        {
            return Err(bad("settings.link_auth", format!("peer {:?} has no entry in links", p.name)));
        }

        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(c) = r.chain
                && !chains.contains(&c)
            {
                return Err(bad(format!("{at}.chain"), format!("no chain with id {c} in chains")));
            }
            node.classifier_mut().push_rule(rule(r, &at)?);
        }
        Ok(node)
    }
}

/// The engine's chain from its configured fields (`at` names the field in errors).
pub fn chain_spec(
    id: u32,
    labels: &[u32],
    ttl: u8,
    nsh: Option<&NshConfig>,
    integrity: Option<ChainIntegrityConfig>,
    sa: SaIdx,
    at: &str,
) -> Result<ChainSpec, FieldError> {
    let nsh = match nsh {
        None => None,
        Some(n) => Some(NshSpec {
            si: n.si,
            context: nsh_context(&n.context).map_err(|(j, why)| bad(format!("{at}.nsh.context[{j}]"), why))?,
        }),
    };
    let integrity = integrity.map(|i| ChainIntegrity { key_id: i.key_id, pot: i.pot });
    Ok(ChainSpec { id: ChainId(id), labels: labels.to_vec(), sa, sa_via: Vec::new(), nsh, ttl, integrity })
}

/// The engine's SF pools from their configured fields.
pub fn pools(pools: &[PoolConfig]) -> Vec<zsfc_dataplane::Pool> {
    pools
        .iter()
        .map(|p| zsfc_dataplane::Pool {
            seed: p.seed,
            members: p.members.iter().map(|m| zsfc_dataplane::Member { label: m.label, weight: m.weight }).collect(),
        })
        .collect()
}

/// Outbound SAs by instance label, each an installed SA that encrypts.
fn via(
    list: &[ViaConfig],
    outbound: &HashSet<u32>,
    gmac: &HashSet<u32>,
    at: &str,
) -> Result<Vec<(u32, SaIdx)>, FieldError> {
    let mut out = Vec::with_capacity(list.len());
    for (j, v) in list.iter().enumerate() {
        if !outbound.contains(&v.sa) || gmac.contains(&v.sa) {
            return Err(bad(format!("{at}[{j}].sa"), format!("no outbound SA with index {} that encrypts", v.sa)));
        }
        if out.iter().any(|&(l, _)| l == v.label) {
            return Err(bad(format!("{at}[{j}].label"), format!("label {} is listed twice", v.label)));
        }
        out.push((v.label, SaIdx(v.sa)));
    }
    Ok(out)
}

/// Installs a configured chain key in `node` (`at` names the field in errors).
pub fn install_chain_key(node: &mut Node, k: &ChainKeyConfig, at: &str) -> Result<(), FieldError> {
    let mac = k.mac_key.as_ref().ok_or_else(|| bad(format!("{at}.mac_key"), "missing"))?;
    let pot = k.pot.as_ref().map(|p| PotRole {
        poly2: p.poly2.clone(),
        shares: p.shares.iter().map(|s| PotShare { label: s.label, x: s.x, y: s.y, lpc: s.lpc }).collect(),
        secret: p.secret,
    });
    let c = ChainKeyConfigEngine {
        key_id: k.key_id,
        chain: k.chain,
        mac_key: &mac.0,
        enc_key: k.enc_key.as_ref().map(|e| &e.0[..]),
        origin_key: k.origin_key.as_ref().map(|e| &e.0[..]),
        pot,
    };
    node.install_chain_key(&c).map_err(|e| bad(at, e))
}

/// The classifier's rule from a configured one (whether its chain exists is the caller's check).
pub fn rule(r: &RuleConfig, at: &str) -> Result<Rule, FieldError> {
    let src: Prefix = r.src.parse().map_err(|e| bad(format!("{at}.src"), e))?;
    let dst: Prefix = r.dst.parse().map_err(|e| bad(format!("{at}.dst"), e))?;
    let action = match (r.chain, r.deny) {
        (Some(c), false) => Action::Chain(ChainId(c)),
        (None, true) => Action::Deny,
        _ => return Err(bad(at, "give exactly one of `chain` and `deny = true`")),
    };
    for (name, (lo, hi)) in [("src_ports", r.src_ports), ("dst_ports", r.dst_ports)] {
        if lo > hi {
            return Err(bad(format!("{at}.{name}"), format!("range {lo}..={hi} is empty")));
        }
    }
    Ok(Rule {
        src,
        dst,
        protocol: r.protocol.map(Protocol::number),
        src_ports: r.src_ports,
        dst_ports: r.dst_ports,
        action,
    })
}

fn limits(l: &LimitsConfig) -> Limits {
    Limits {
        packets: l.packets.unwrap_or(u64::MAX),
        bytes: l.bytes.unwrap_or(u64::MAX),
        time_ns: l.seconds.map_or(u64::MAX, |s| s.saturating_mul(1_000_000_000)),
    }
}

/// The ESP configuration of `p`, or the failing sub-field and why.
/// Most worker lanes a node may run.
pub const MAX_LANES: u32 = 16;
/// Most worker lanes on an Ethernet link: the top label's traffic class (3 bits) names the lane
/// (`zsfc_io::MAX_TC_LANES`).
pub const MAX_ETHERNET_LANES: u32 = 8;
/// SPIs of lane `k` are the configured SPI with `k` in the top byte.
const LANE_SPI_SHIFT: u32 = 24;

/// The SPI worker lane `lane` uses for the configured `spi`.
pub fn lane_spi(spi: u32, lane: u32) -> u32 {
    spi | (lane << LANE_SPI_SHIFT)
}

/// The configured SPI behind a lane's SPI.
pub fn configured_spi(lane_spi: u32) -> u32 {
    lane_spi & ((1 << LANE_SPI_SHIFT) - 1)
}

/// The SA of worker lane `lane`: lane 0 is the configured SA; lane k has its own key material
/// (HKDF from the configured) and the SPI `spi | k << 24`.
pub fn sa_config(p: &SaParams, lane: u32) -> Result<zsfc_esp::SaConfig, (&'static str, String)> {
    let alg = p.algorithm.esp();
    let keymat = SaKey::lane_keymat(&p.keymat.0, lane).map_err(|e| ("keymat", e.to_string()))?;
    let key = SaKey::new(alg, &keymat).map_err(|e| ("keymat", e.to_string()))?;
    if p.spi < 256 {
        // RFC 4303 §2.1: SPIs 1-255 are reserved by IANA, 0 is never sent.
        return Err(("spi", format!("{} is reserved (0-255)", p.spi)));
    }
    Ok(zsfc_esp::SaConfig {
        spi: lane_spi(p.spi, lane),
        key,
        esn: p.esn,
        replay_window: p.replay_window,
        lifetimes: Lifetimes { soft: limits(&p.lifetime.soft), hard: limits(&p.lifetime.hard) },
        first_seq: 0,
    })
}

impl NodeConfig {
    /// What worker lanes need: at most 8 on an Ethernet link (the top label's traffic class
    /// names the lane), SFs whose state may be split by flow (no NAT, rate limiter or pcap
    /// logger; an external SF gets an attachment circuit per lane), SPIs that leave the top
    /// byte for the lane.
    fn check_lanes(&self) -> Result<(), FieldError> {
        let most = MAX_ETHERNET_LANES;
        if self.settings.lanes > most && self.transport.as_ref().is_some_and(|t| t.ethernet.is_some()) {
            return Err(bad(
                "settings.lanes",
                format!("an Ethernet link carries at most {most} lanes (3 traffic-class bits name them)"),
            ));
        }
        for (i, sf) in self.sfs.iter().enumerate() {
            let why = match &sf.function {
                Some(Function::Nat { .. }) => Some("a NAT keeps one translation table"),
                Some(Function::RateLimiter { .. }) => Some("a rate limiter keeps one budget"),
                Some(Function::Logger { .. }) => Some("a packet logger writes one file"),
                _ => None,
            };
            if let Some(why) = why {
                return Err(bad(format!("sfs[{i}]"), format!("{why}: it needs settings.lanes = 1")));
            }
        }
        let spis = self.outbound_sas.iter().map(|o| ("outbound_sas".to_owned(), o.sa.spi));
        for (list, spi) in spis.chain(self.inbound_sas.iter().map(|i| ("inbound_sas".to_owned(), i.sa.spi))) {
            if spi >= 1 << LANE_SPI_SHIFT {
                return Err(bad(
                    list,
                    format!("SPI {spi:#x} leaves no room for the lane (lanes need SPIs below 2^24)"),
                ));
            }
        }
        Ok(())
    }
}

/// Encodes context headers, or the index of the failing one and why.
fn nsh_context(tlvs: &[TlvConfig]) -> Result<Vec<u8>, (usize, String)> {
    let mut out = Vec::new();
    for (j, t) in tlvs.iter().enumerate() {
        let value = if t.hex {
            hex::decode(&t.value).map_err(|_| (j, "value: hex = true, but it is not hex".to_owned()))?
        } else {
            t.value.as_bytes().to_vec()
        };
        let tlv = zsfc_wire::nsh::Tlv { class: t.class, tlv_type: t.tlv_type, value: &value };
        let at = out.len();
        out.resize(at + tlv.wire_len(), 0);
        tlv.emit(&mut out[at..]).map_err(|_| (j, format!("value is {} bytes; at most 127", value.len())))?;
    }
    if out.len() + zsfc_wire::nsh::BASE_LEN > zsfc_wire::nsh::MAX_LEN {
        return Err((tlvs.len().saturating_sub(1), format!("the NSH would be {} bytes; at most 252", out.len() + 8)));
    }
    Ok(out)
}

/// Checks a built-in SF's parameters without side effects.
/// Checks a built-in SF's settings without building it; names the failing sub-field (with its
/// leading dot) and why.
pub fn check_function(func: &Function) -> Result<(), (String, String)> {
    function(func, true).map(drop)
}

/// Builds a built-in SF, or names the failing sub-field (with its leading dot) and why.
fn function(func: &Function, dry_run: bool) -> Result<Box<dyn ServiceFunction>, (String, String)> {
    let sub = |s: &str, why: String| (format!(".{s}"), why);
    Ok(match func {
        Function::Forward => Box::new(f::Forward::default()),
        Function::Counter => Box::new(f::Counter::default()),
        Function::Firewall { default, rules } => {
            let mut acl = Vec::new();
            for (j, r) in rules.iter().enumerate() {
                let prefix = |field: &str, v: &Option<String>| -> Result<Option<Prefix>, (String, String)> {
                    v.as_deref().map(str::parse).transpose().map_err(|e: zsfc_dataplane::classifier::PrefixError| {
                        sub(&format!("rules[{j}].{field}"), e.to_string())
                    })
                };
                acl.push(f::AclRule {
                    src: prefix("src", &r.src)?,
                    dst: prefix("dst", &r.dst)?,
                    protocol: r.protocol.map(Protocol::number),
                    dst_ports: r.dst_ports,
                    verdict: acl_verdict(r.action),
                });
            }
            Box::new(f::Firewall::new(acl, acl_verdict(*default)))
        }
        Function::Dpi { patterns } => Box::new(f::Dpi::new(patterns).map_err(|e| sub("patterns", e.to_string()))?),
        Function::Nat { v4, v6, ports, idle_timeout_s } => {
            if v4.is_none() && v6.is_none() {
                return Err(sub("v4", "give an outside address: v4, v6 or both".into()));
            }
            if ports.0 > ports.1 || ports.0 == 0 {
                return Err(sub("ports", format!("range {}..={} is empty or starts at 0", ports.0, ports.1)));
            }
            Box::new(f::SourceNat::new(f::NatConfig {
                v4: *v4,
                v6: *v6,
                ports: *ports,
                idle_timeout: core::time::Duration::from_secs(*idle_timeout_s),
            }))
        }
        Function::RateLimiter { rate_bytes_per_s, burst_bytes } => {
            if *rate_bytes_per_s == 0 {
                return Err(sub("rate_bytes_per_s", "must be greater than 0".into()));
            }
            if *burst_bytes < 1500 {
                return Err(sub("burst_bytes", format!("{burst_bytes} is below one 1500-byte packet")));
            }
            Box::new(f::RateLimiter::new(*rate_bytes_per_s, *burst_bytes))
        }
        Function::Delay { delay_us, capacity } => {
            if *capacity == 0 {
                return Err(sub("capacity", "must be at least 1".into()));
            }
            Box::new(f::Delay::new(core::time::Duration::from_micros(*delay_us), *capacity))
        }
        Function::Logger { pcap, snaplen } => {
            let sink: Box<dyn std::io::Write + Send> = if dry_run {
                let dir = pcap.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    return Err(sub(
                        "pcap",
                        format!("cannot create {}: no directory {}", pcap.display(), dir.display()),
                    ));
                }
                Box::new(std::io::sink())
            } else {
                let file = std::fs::File::create(pcap)
                    .map_err(|e| sub("pcap", format!("cannot create {}: {e}", pcap.display())))?;
                Box::new(std::io::BufWriter::new(file))
            };
            Box::new(f::PacketLogger::new(sink, *snaplen).map_err(|e| sub("pcap", e.to_string()))?)
        }
    })
}

fn acl_verdict(a: AclAction) -> f::AclVerdict {
    match a {
        AclAction::Allow => f::AclVerdict::Allow,
        AclAction::Deny => f::AclVerdict::Deny,
    }
}
