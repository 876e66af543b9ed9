//! A whole domain in one file, compiled into one [`NodeConfig`] per node — the controller's job
//! in miniature, used by tests and `zsfc config compile` until the controller exists.
//!
//! The compiler allocates labels, numbers chains, makes every node a peer of every other, and
//! places the SAs: **one SA per encrypting hop** (the classifier, each intrusive SF, the
//! endpoint), each with fresh key material from the OS CSPRNG and a unique SPI.
//!
//! ```toml
//! version = 1
//! nodes = [{ name = "ingress" }, { name = "sf" }, { name = "egress" }]
//! endpoints = [{ name = "web", node = "egress" }, { name = "clients", node = "ingress" }]
//! sfs = [{ name = "dpi", node = "sf", intrusive = true, function = { kind = "dpi", patterns = ["test"] } }]
//! [[chains]]
//! name = "to-web"
//! classifier = "ingress"
//! sfs = ["dpi"]
//! to = "web"
//! rules = [{ src = "10.1.0.0/24", dst = "10.9.0.1" }]
//! [[chains]]
//! name = "from-web"
//! classifier = "egress"
//! to = "clients"
//! rules = [{ src = "10.9.0.1", dst = "10.1.0.0/24" }]
//! ```
use crate::build::{bad, check_function};
use crate::model::*;
use crate::{FieldError, VERSION};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub version: u32,
    pub nodes: Vec<TopoNode>,
    #[serde(default)]
    pub endpoints: Vec<TopoEndpoint>,
    #[serde(default)]
    pub sfs: Vec<TopoSf>,
    #[serde(default)]
    pub chains: Vec<TopoChain>,
    #[serde(default)]
    pub sa: SaDefaults,
    /// Hop-by-hop authentication: every ordered pair of nodes gets a link SA (AES-GMAC of the
    /// SA key size, RFC 4543) and every node drops domain packets that are not link ESP. On
    /// unless the file says `link_protection = false`.
    #[serde(default = "crate::on", skip_serializing_if = "crate::is_on")]
    pub link_protection: bool,
    /// SFC integrity: every chain's NSH carries an RFC 9145 MAC over labels and NSH, the
    /// encrypted subscriber id and (with SFs) a proof of transit; one chain key per chain, held
    /// by its classifier, its SF nodes and its end; every node drops unprotected packets. On
    /// unless the file says `sfc_integrity = false`.
    #[serde(default = "crate::on", skip_serializing_if = "crate::is_on")]
    pub sfc_integrity: bool,
    /// Liveness probes between the domain's nodes (every node probes every peer).
    #[serde(default, skip_serializing_if = "LivenessConfig::is_default")]
    pub liveness: LivenessConfig,
    /// How long the certificates of the domain's nodes and clients live.
    #[serde(default, skip_serializing_if = "crate::CertificateLifetimes::is_default")]
    pub certificates: crate::CertificateLifetimes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoNode {
    pub name: String,
    /// Where peers reach this node, and where it listens: `ADDRESS:PORT`, or an address alone
    /// for the domain's port (4500, UDP-encapsulated ESP, with link protection; 6635,
    /// MPLS-in-UDP, without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The interface of the node's Ethernet + MPLS link, and the node's MAC address on it:
    /// nodes that both have them talk over Ethernet, every other pair over MPLS-in-UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethernet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The IP MTU of the node's links (`transport.mtu` of its node file; default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// The node's TUN local side (nodes with endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_mss_clamp: Option<u16>,
}

impl TopoNode {
    /// [`address`](Self::address) with the domain's port when it names none.
    fn link_address(&self, link_protection: bool) -> Option<String> {
        let a = self.address.as_deref()?;
        Some(match a.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, crate::io::link_port(link_protection)).to_string(),
            Err(_) => a.to_owned(),
        })
    }
}

/// Where chains end: packets are decrypted and delivered to the local side of `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoEndpoint {
    pub name: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoSf {
    pub name: String,
    /// The node of the SF's one instance; or give `instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A pool: the SF's instances, each on a node of its own (RFC 7665 §2.2). Chains name the
    /// SF; each flow crosses one instance, the same both ways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<TopoInstance>,
    pub intrusive: bool,
    #[serde(default)]
    pub external: bool,
    /// See [`SfConfig::translates_addresses`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translates_addresses: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
    /// How the node process reaches an external SF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentConfig>,
    /// See [`SfConfig::lane_attachments`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lane_attachments: Vec<AttachmentConfig>,
    /// See [`SfConfig::cache_capacity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_capacity: Option<usize>,
}

/// One instance of a pooled SF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoInstance {
    pub node: String,
    /// Relative share of the flows (default 1).
    #[serde(default = "crate::model::one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
    /// How the node reaches this instance of an external SF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lane_attachments: Vec<AttachmentConfig>,
}

impl TopoSf {
    /// The nodes of the SF's instances: its `node`, or each instance's.
    pub fn nodes(&self) -> Vec<&str> {
        match &self.node {
            Some(n) => vec![n.as_str()],
            None => self.instances.iter().map(|i| i.node.as_str()).collect(),
        }
    }

    /// The SF's instances: `instances`, or the one the SF's own fields describe.
    fn placed(&self, at: &str) -> Result<Vec<TopoInstance>, FieldError> {
        match (&self.node, self.instances.is_empty()) {
            (Some(node), true) => Ok(vec![TopoInstance {
                node: node.clone(),
                weight: 1,
                label: self.label,
                attachment: self.attachment.clone(),
                lane_attachments: self.lane_attachments.clone(),
            }]),
            (None, false) => {
                if self.label.is_some() || self.attachment.is_some() || !self.lane_attachments.is_empty() {
                    return Err(bad(
                        format!("{at}.instances"),
                        "give `label`, `attachment` and `lane_attachments` per instance",
                    ));
                }
                if self.translates_addresses && self.instances.len() > 1 {
                    return Err(bad(
                        format!("{at}.instances"),
                        "an SF that translates addresses cannot be pooled: the answers to a translated flow \
                         carry other addresses and would reach another instance, which lacks its state",
                    ));
                }
                for (j, i) in self.instances.iter().enumerate() {
                    if i.weight == 0 {
                        return Err(bad(format!("{at}.instances[{j}].weight"), "must be at least 1"));
                    }
                    if self.instances[..j].iter().any(|o| o.node == i.node) {
                        return Err(bad(
                            format!("{at}.instances[{j}].node"),
                            format!("{:?} has another instance of this SF; instances need nodes of their own", i.node),
                        ));
                    }
                }
                Ok(self.instances.clone())
            }
            _ => Err(bad(format!("{at}.node"), "give exactly one of `node` and `instances`")),
        }
    }
}

/// Where one SF instance runs.
#[derive(Debug, Clone, Copy)]
struct Placed {
    node: usize,
    label: u32,
    weight: u32,
}

/// The pool's hash seed: the same wherever and whenever the domain is compiled (a rekey
/// must not move flows). Not a secret (FNV-1a of the SF's name).
fn pool_seed(sf: &str) -> u64 {
    sf.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A unidirectional chain; the way back is another chain (it may take other SFs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoChain {
    pub name: String,
    /// The node whose classifier puts packets on this chain.
    pub classifier: String,
    /// Further nodes that classify onto the same chain (RFC 7665 §4.4: an SFP may have several
    /// classifiers), such as a second ingress gateway: each gets the chain with the same id and
    /// rules, SAs of its own to the first encrypting hop's instances, and the chain key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_classified_at: Vec<String>,
    #[serde(default)]
    pub sfs: Vec<String>,
    /// The endpoint the chain ends at.
    pub to: String,
    /// Classification rules at the classifier; `chain` and `deny` are implied and left out.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The ingress gateway steers its connections onto this chain with flow entries, so the
    /// chain may have no rules.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsh: Option<NshConfig>,
}

/// Parameters of every generated SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaDefaults {
    pub algorithm: Algorithm,
    pub esn: bool,
    pub replay_window: u64,
    pub lifetime: LifetimeConfig,
}

impl Default for SaDefaults {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Aes256Gcm,
            esn: true,
            replay_window: zsfc_esp::DEFAULT_WINDOW,
            lifetime: LifetimeConfig::default(),
        }
    }
}

const FIRST_ENDPOINT_LABEL: u32 = 100;
const FIRST_SF_LABEL: u32 = 1000;
const FIRST_SPI: u32 = 0x1000;

impl Topology {
    pub fn from_toml(text: &str) -> Result<Self, FieldError> {
        toml::from_str(text).map_err(|e| FieldError::Syntax(e.to_string()))
    }

    /// One configuration per node, in the order of `nodes`. Node `i` is peer id `i` everywhere.
    pub fn compile(&self) -> Result<Vec<NodeConfig>, FieldError> {
        self.compile_from(FIRST_SPI).map(|(cfgs, _)| cfgs)
    }

    /// [`compile`](Self::compile) with fresh SAs numbered from `first_spi`; also returns the
    /// next unused SPI (a controller never reuses one).
    pub fn compile_from(&self, first_spi: u32) -> Result<(Vec<NodeConfig>, u32), FieldError> {
        if self.version != VERSION {
            return Err(bad(
                "version",
                format!("{} is not supported; this zsfc reads version {VERSION}", self.version),
            ));
        }
        if self.nodes.is_empty() {
            return Err(bad("nodes", "at least one node is needed"));
        }
        self.certificates.check()?;
        let node_ix = index(self.nodes.iter().map(|n| n.name.as_str()), "nodes")?;
        let ep_ix = index(self.endpoints.iter().map(|e| e.name.as_str()), "endpoints")?;
        let sf_ix = index(self.sfs.iter().map(|s| s.name.as_str()), "sfs")?;
        let node_of = |field: String, name: &str| {
            node_ix.get(name).copied().ok_or_else(|| bad(field, format!("no node named {name:?}")))
        };

        // Labels: given or allocated; unique across the domain.
        let mut owner: HashMap<u32, String> = HashMap::new();

        let mut ep_label = Vec::new();
        let mut ep_node = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            ep_node.push(node_of(format!("endpoints[{i}].node"), &e.node)?);
            ep_label.push(claim(
                &mut owner,
                e.label.unwrap_or(FIRST_ENDPOINT_LABEL + i as u32),
                format!("endpoints[{i}]"),
            )?);
        }
        let mut sf_inst: Vec<Vec<Placed>> = Vec::new();
        let mut sf_placed: Vec<Vec<TopoInstance>> = Vec::new();
        let mut unlabelled = Vec::new();
        for (i, s) in self.sfs.iter().enumerate() {
            let at = format!("sfs[{i}]");
            check_sf_function(s, &at)?;
            let placed = s.placed(&at)?;
            let mut instances = Vec::new();
            for (j, inst) in placed.iter().enumerate() {
                let field =
                    if s.instances.is_empty() { format!("{at}.node") } else { format!("{at}.instances[{j}].node") };
                let node = node_of(field, &inst.node)?;
                let label = match inst.label {
                    Some(l) if s.instances.is_empty() => claim(&mut owner, l, at.clone())?,
                    Some(l) => claim(&mut owner, l, format!("{at}.instances[{j}]"))?,
                    None if j == 0 => claim(&mut owner, FIRST_SF_LABEL + i as u32, at.clone())?,
                    None => {
                        unlabelled.push((i, j));
                        0
                    }
                };
                instances.push(Placed { node, label, weight: inst.weight });
            }
            sf_inst.push(instances);
            sf_placed.push(placed);
        }
        // Further instances take the first free labels after the SFs' own.
        let mut next_label = FIRST_SF_LABEL + self.sfs.len() as u32;
        for (i, j) in unlabelled {
            while owner.contains_key(&next_label) {
                next_label += 1;
            }
            if let Some(p) = sf_inst.get_mut(i).and_then(|v| v.get_mut(j)) {
                p.label = claim(&mut owner, next_label, format!("sfs[{i}].instances[{j}]"))?;
            }
        }

        // A node with an Ethernet link reaches peers with a MAC over it; every other pair uses
        // MPLS-in-UDP.
        let peers_of = |me: &TopoNode, i: usize| -> Vec<Peer> {
            self.nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, n)| {
                    let eth = me.ethernet.is_some() && n.mac.is_some();
                    Peer {
                        id: j as u32,
                        name: n.name.clone(),
                        address: if eth { None } else { n.link_address(self.link_protection) },
                        mac: if eth { n.mac.clone() } else { None },
                    }
                })
                .collect()
        };
        let mut cfgs: Vec<NodeConfig> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeConfig {
                pools: Vec::new(),
                version: VERSION,
                name: n.name.clone(),
                settings: Settings {
                    tcp_mss_clamp: n.tcp_mss_clamp,
                    link_auth: self.link_protection,
                    sfc_integrity: self.sfc_integrity,
                    liveness: self.liveness,
                    ..Settings::default()
                },
                peers: peers_of(n, i),
                labels: Vec::new(),
                sfs: Vec::new(),
                outbound_sas: Vec::new(),
                inbound_sas: Vec::new(),
                chains: Vec::new(),
                links: Vec::new(),
                chain_keys: Vec::new(),
                rules: Vec::new(),
                transport: (n.address.is_some() || n.ethernet.is_some()).then(|| TransportConfig {
                    listen: n.link_address(self.link_protection),
                    ethernet: n.ethernet.clone(),
                    ring: None,
                    mtu: n.mtu,
                }),
                local: n.local.clone(),
                gateway: None,
                metrics: None,
                controller: None,
            })
            .collect();
        // Every label: an SF or endpoint on its own node, a route to its owner elsewhere.
        let owned: Vec<(u32, usize)> = ep_label
            .iter()
            .copied()
            .zip(ep_node.iter().copied())
            .chain(sf_inst.iter().flatten().map(|p| (p.label, p.node)))
            .collect();
        for (n, cfg) in cfgs.iter_mut().enumerate() {
            for (j, &(label, o)) in owned.iter().enumerate() {
                if o != n {
                    cfg.labels.push(LabelEntry { label, peer: Some(o as u32), deliver: false });
                } else if j < ep_label.len() {
                    cfg.labels.push(LabelEntry { label, peer: None, deliver: true });
                }
            }
        }
        let mut pools = Vec::new();
        for ((s, instances), placed) in self.sfs.iter().zip(&sf_inst).zip(&sf_placed) {
            for (p, inst) in instances.iter().zip(placed) {
                cfgs[p.node].sfs.push(SfConfig {
                    label: p.label,
                    name: s.name.clone(),
                    intrusive: s.intrusive,
                    external: s.external,
                    function: s.function.clone(),
                    translates_addresses: s.translates_addresses,
                    cache_capacity: s.cache_capacity,
                    cache_max_age_ms: None,
                    attachment: inst.attachment.clone(),
                    lane_attachments: inst.lane_attachments.clone(),
                });
            }
            if instances.len() > 1 {
                let members = instances.iter().map(|p| PoolMemberConfig { label: p.label, weight: p.weight }).collect();
                pools.push(PoolConfig { sf: s.name.clone(), seed: pool_seed(&s.name), members });
            }
        }
        // Every node steers over every pool (classifiers pick the instances; the others check).
        for cfg in &mut cfgs {
            cfg.pools = pools.clone();
        }

        let mut spi = first_spi;
        let mut next_out = vec![0u32; cfgs.len()];
        let _ = index(self.chains.iter().map(|c| c.name.as_str()), "chains")?;
        for (ci, c) in self.chains.iter().enumerate() {
            let at = format!("chains[{ci}]");
            let mut classifiers = vec![node_of(format!("{at}.classifier"), &c.classifier)?];
            for (k, n) in c.also_classified_at.iter().enumerate() {
                let n = node_of(format!("{at}.also_classified_at[{k}]"), n)?;
                if classifiers.contains(&n) {
                    return Err(bad(format!("{at}.also_classified_at[{k}]"), "a node classifies onto a chain once"));
                }
                classifiers.push(n);
            }
            let to = *ep_ix
                .get(c.to.as_str())
                .ok_or_else(|| bad(format!("{at}.to"), format!("no endpoint named {:?}", c.to)))?;
            if c.rules.is_empty() && !c.gateway {
                return Err(bad(
                    format!("{at}.rules"),
                    "at least one rule is needed (or `gateway = true`), or no packet takes the chain",
                ));
            }
            let mut labels = Vec::new();
            // Encrypting points: the classifier, each intrusive SF's instances, the end.
            let mut points = vec![classifiers.iter().map(|&n| (n, 0)).collect::<Vec<_>>()];
            let mut sfs = Vec::new();
            for (k, name) in c.sfs.iter().enumerate() {
                let s = *sf_ix
                    .get(name.as_str())
                    .ok_or_else(|| bad(format!("{at}.sfs[{k}]"), format!("no SF named {name:?}")))?;
                let instances: Vec<(usize, u32)> = sf_inst[s].iter().map(|p| (p.node, p.label)).collect();
                // A pooled SF is named by its first instance; classifiers steer each flow.
                labels.push(instances[0].1);
                if self.sfs[s].intrusive {
                    points.push(instances.clone());
                }
                sfs.push((instances, self.sfs[s].intrusive));
            }
            labels.push(ep_label[to]);
            points.push(vec![(ep_node[to], ep_label[to])]);
            let firsts = self.place_sas(&mut cfgs, &points, &mut next_out, &mut spi, &at)?;
            let id = ci as u32 + 1;
            let integrity = if self.sfc_integrity {
                let key_id = spi;
                spi += 1;
                chain_keys(&mut cfgs, key_id, id, &classifiers, &sfs, ep_node[to]).map_err(|e| bad(&at, e))?;
                Some(ChainIntegrityConfig { key_id, pot: !sfs.is_empty() })
            } else {
                None
            };
            if let Some(j) = c.rules.iter().position(|r| r.chain.is_some() || r.deny) {
                return Err(bad(
                    format!("{at}.rules[{j}]"),
                    "`chain` and `deny` are implied by the chain; leave them out",
                ));
            }
            for (&classifier, (sa, sa_via)) in classifiers.iter().zip(firsts) {
                let cl = &mut cfgs[classifier];
                let nsh = c.nsh.clone();
                cl.chains.push(ChainConfig { id, labels: labels.clone(), sa, sa_via, ttl: 64, nsh, integrity });
                cl.rules.extend(c.rules.iter().map(|r| RuleConfig { chain: Some(id), ..r.clone() }));
            }
        }
        if self.link_protection {
            // One SA per direction of every pair: a key unique to the link, a window per sender.
            let algorithm = self.sa.algorithm.gmac();
            for from in 0..cfgs.len() {
                for to in (0..cfgs.len()).filter(|&to| to != from) {
                    let sa = self.sa_params_with(spi, algorithm).map_err(|e| bad("link_protection", e))?;
                    spi += 1;
                    let index = next_out[from];
                    next_out[from] += 1;
                    cfgs[from].outbound_sas.push(OutboundSaConfig { index, sa: sa.clone() });
                    cfgs[from].links.push(LinkConfig { peer: to as u32, sa: index });
                    cfgs[to].inbound_sas.push(InboundSaConfig { sa, reseal: None, reseal_via: Vec::new(), link: true });
                }
            }
        }
        // What the compiler cannot see (prefix syntax, depth limits) the node check finds.
        for cfg in &cfgs {
            cfg.check().map_err(|e| bad(format!("node {:?}", cfg.name), e))?;
        }
        Ok((cfgs, spi))
    }

    /// Places the SAs of one chain (DESIGN.md "Keys", one SA per encrypting hop): `points` are
    /// the encrypting positions in path order — the classifier, each intrusive SF's instances,
    /// the end — as (node, label). Every instance of a position gets an SA to every instance
    /// of the next: the pairs a flow can cross. An instance that re-seals before a pool picks
    /// its SA by the next instance's label (`reseal_via`). Returns, for each classifier (the
    /// first position's instances), its SA and, before a pool, its SA per instance.
    fn place_sas(
        &self,
        cfgs: &mut [NodeConfig],
        points: &[Vec<(usize, u32)>],
        next_out: &mut [u32],
        spi: &mut u32,
        at: &str,
    ) -> Result<Vec<(u32, Vec<ViaConfig>)>, FieldError> {
        // out[k][p][q]: the outbound index, at the node of points[k][p], of its SA to points[k+1][q].
        let mut out: Vec<Vec<Vec<u32>>> = Vec::new();
        for w in points.windows(2) {
            let mut per_p = Vec::new();
            for &(from, _) in &w[0] {
                let first = next_out[from];
                next_out[from] += w[1].len() as u32;
                per_p.push((first..next_out[from]).collect());
            }
            out.push(per_p);
        }
        let via = |k: usize, p: usize| -> Vec<ViaConfig> {
            match (points.get(k + 1), out.get(k).and_then(|o| o.get(p))) {
                (Some(next), Some(sas)) if next.len() > 1 => {
                    next.iter().zip(sas).map(|(&(_, label), &sa)| ViaConfig { label, sa }).collect()
                }
                _ => Vec::new(),
            }
        };
        for (k, w) in points.windows(2).enumerate() {
            for (p, &(from, _)) in w[0].iter().enumerate() {
                for (q, &(to, _)) in w[1].iter().enumerate() {
                    let sa = self.sa_params(*spi).map_err(|e| bad(format!("{at}: SA {k}"), e))?;
                    *spi += 1;
                    cfgs[from].outbound_sas.push(OutboundSaConfig { index: out[k][p][q], sa: sa.clone() });
                    let (reseal, reseal_via) =
                        if k + 2 < points.len() { (Some(out[k + 1][q][0]), via(k + 1, q)) } else { (None, Vec::new()) };
                    cfgs[to].inbound_sas.push(InboundSaConfig { sa, reseal, reseal_via, link: false });
                }
            }
        }
        Ok((0..points[0].len()).map(|p| (out[0][p][0], via(0, p))).collect())
    }

    fn sa_params(&self, spi: u32) -> Result<SaParams, zsfc_esp::KeyError> {
        self.sa_params_with(spi, self.sa.algorithm)
    }

    fn sa_params_with(&self, spi: u32, algorithm: Algorithm) -> Result<SaParams, zsfc_esp::KeyError> {
        let alg = algorithm.esp();
        Ok(SaParams {
            spi,
            algorithm,
            keymat: KeyMaterial(zsfc_esp::SaKey::generate_keymat(alg)?),
            esn: self.sa.esn,
            replay_window: self.sa.replay_window,
            lifetime: self.sa.lifetime,
        })
    }
}

/// Takes `label` for `field`, unless another field has it.
fn claim(owner: &mut HashMap<u32, String>, label: u32, field: String) -> Result<u32, FieldError> {
    if let Some(prev) = owner.insert(label, field.clone()) {
        return Err(bad(field, format!("label {label} is already used by {prev}")));
    }
    Ok(label)
}

/// An in-process SF needs a valid built-in function, an external one none.
fn check_sf_function(s: &TopoSf, at: &str) -> Result<(), FieldError> {
    match (&s.function, s.external) {
        (Some(f), false) => check_function(f).map_err(|(sub, why)| bad(format!("{at}.function{sub}"), why)),
        (None, true) => Ok(()),
        (Some(_), true) => Err(bad(format!("{at}.function"), "an external SF has no built-in function")),
        (None, false) => {
            Err(bad(format!("{at}.function"), "missing: an in-process SF needs a function (or external = true)"))
        }
    }
}

/// Places one chain key: the classifiers hold MAC, encryption and origin keys; each node of the
/// chain's SFs the MAC key, its SFs' proof-of-transit shares and, for intrusive SFs, the
/// encryption key; the end node the MAC key, the origin key and the proof-of-transit secret.
fn chain_keys(
    cfgs: &mut [NodeConfig],
    key_id: u32,
    chain: u32,
    classifiers: &[usize],
    sfs: &[(Vec<(usize, u32)>, bool)],
    end: usize,
) -> Result<(), zsfc_esp::KeyError> {
    let random = |n: usize| -> Result<KeyMaterial, zsfc_esp::KeyError> {
        let mut v = zeroize::Zeroizing::new(vec![0u8; n]);
        aws_lc_rs::rand::fill(&mut v).map_err(|_| zsfc_esp::KeyError::Rejected)?;
        Ok(KeyMaterial(v))
    };
    let (mac, enc, origin) = (random(32)?, random(16)?, random(32)?);
    let failed = std::cell::Cell::new(0u64);
    let (secret, poly2, shares) = zsfc_dataplane::integrity::pot_profile(sfs.len(), |b| {
        if aws_lc_rs::rand::fill(b).is_err() {
            // Distinct values so the profile's loop ends; the profile is then thrown away.
            failed.set(failed.get() + 1);
            b.iter_mut().for_each(|x| *x = failed.get() as u8);
        }
    });
    if failed.get() > 0 {
        return Err(zsfc_esp::KeyError::Rejected);
    }
    let base = ChainKeyConfig { key_id, chain, mac_key: Some(mac), enc_key: None, origin_key: None, pot: None };
    let mut entries: std::collections::BTreeMap<usize, ChainKeyConfig> = Default::default();
    for &classifier in classifiers {
        let first = entries.entry(classifier).or_insert_with(|| base.clone());
        first.enc_key = Some(enc.clone());
        first.origin_key = Some(origin.clone());
    }
    // Every instance of an SF holds that SF's share: a packet that crossed any one of them
    // verifies, one that skipped the SF does not.
    for (k, (instances, intrusive)) in sfs.iter().enumerate() {
        for &(node, label) in instances {
            let e = entries.entry(node).or_insert_with(|| base.clone());
            if *intrusive {
                e.enc_key = Some(enc.clone());
            }
            let pot = e.pot.get_or_insert_with(PotConfig::default);
            pot.poly2 = poly2.clone();
            let (x, y, lpc) = shares[k];
            pot.shares.push(PotShareConfig { label, x, y, lpc });
        }
    }
    let end = entries.entry(end).or_insert_with(|| base.clone());
    end.origin_key = Some(origin);
    if !sfs.is_empty() {
        end.pot.get_or_insert_with(PotConfig::default).secret = Some(secret);
    }
    for (node, e) in entries {
        cfgs[node].chain_keys.push(e);
    }
    Ok(())
}

/// One SA of a chain, from one encrypting point to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaHop {
    /// Node that seals, and the outbound SA index it uses there.
    pub from: usize,
    pub out: u32,
    /// Node that opens.
    pub to: usize,
    /// The outbound index the opening node re-seals with (an intrusive SF), or `None` (the end).
    pub reseal: Option<u32>,
}

/// Places the SAs of one chain (DESIGN.md "Keys"): `points` are the nodes that encrypt, in path
/// order — the classifier, the node of each intrusive SF, the endpoint's node. Each adjacent pair
/// gets its own SA; `next_out[n]` numbers node `n`'s outbound SAs and is advanced.
pub fn plan_sas(points: &[usize], next_out: &mut [u32]) -> Vec<SaHop> {
    let mut out = Vec::with_capacity(points.len().saturating_sub(1));
    for &n in points.iter().take(points.len().saturating_sub(1)) {
        if let Some(c) = next_out.get_mut(n) {
            out.push(*c);
            *c += 1;
        }
    }
    points
        .windows(2)
        .zip(out.iter().enumerate())
        .map(|(w, (k, &o))| SaHop { from: w[0], out: o, to: w[1], reseal: out.get(k + 1).copied() })
        .collect()
}

/// Maps names to positions; a duplicate or empty name is an error at `list[i].name`.
fn index<'a>(names: impl Iterator<Item = &'a str>, list: &str) -> Result<HashMap<&'a str, usize>, FieldError> {
    let mut m = HashMap::new();
    for (i, n) in names.enumerate() {
        if n.trim().is_empty() {
            return Err(bad(format!("{list}[{i}].name"), "must not be empty"));
        }
        if m.insert(n, i).is_some() {
            return Err(bad(format!("{list}[{i}].name"), format!("{n:?} is used twice")));
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_one_sa_per_pair_of_encrypting_points() {
        // classifier 0, intrusive SFs on 1 and 1 again, endpoint 2.
        let mut next = vec![0, 5, 0];
        let hops = plan_sas(&[0, 1, 1, 2], &mut next);
        assert_eq!(
            hops,
            vec![
                SaHop { from: 0, out: 0, to: 1, reseal: Some(5) },
                SaHop { from: 1, out: 5, to: 1, reseal: Some(6) },
                SaHop { from: 1, out: 6, to: 2, reseal: None },
            ]
        );
        assert_eq!(next, vec![1, 7, 0]);
        assert!(plan_sas(&[3], &mut next).is_empty());
    }
}
