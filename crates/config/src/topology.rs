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
    pub node: String,
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

/// A unidirectional chain; the way back is another chain (it may take other SFs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopoChain {
    pub name: String,
    /// The node whose classifier puts packets on this chain.
    pub classifier: String,
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
        let mut claim = |label: u32, field: String| -> Result<u32, FieldError> {
            if let Some(prev) = owner.insert(label, field.clone()) {
                return Err(bad(field, format!("label {label} is already used by {prev}")));
            }
            Ok(label)
        };
        let mut ep_label = Vec::new();
        let mut ep_node = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            ep_node.push(node_of(format!("endpoints[{i}].node"), &e.node)?);
            ep_label.push(claim(e.label.unwrap_or(FIRST_ENDPOINT_LABEL + i as u32), format!("endpoints[{i}]"))?);
        }
        let mut sf_label = Vec::new();
        let mut sf_node = Vec::new();
        for (i, s) in self.sfs.iter().enumerate() {
            sf_node.push(node_of(format!("sfs[{i}].node"), &s.node)?);
            sf_label.push(claim(s.label.unwrap_or(FIRST_SF_LABEL + i as u32), format!("sfs[{i}]"))?);
            match (&s.function, s.external) {
                (Some(f), false) => {
                    check_function(f).map_err(|(sub, why)| bad(format!("sfs[{i}].function{sub}"), why))?
                }
                (None, true) => {}
                (Some(_), true) => {
                    return Err(bad(format!("sfs[{i}].function"), "an external SF has no built-in function"));
                }
                (None, false) => {
                    return Err(bad(
                        format!("sfs[{i}].function"),
                        "missing: an in-process SF needs a function (or external = true)",
                    ));
                }
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
                version: VERSION,
                name: n.name.clone(),
                settings: Settings {
                    tcp_mss_clamp: n.tcp_mss_clamp,
                    link_auth: self.link_protection,
                    sfc_integrity: self.sfc_integrity,
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
            .chain(sf_label.iter().copied().zip(sf_node.iter().copied()))
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
        for (i, s) in self.sfs.iter().enumerate() {
            cfgs[sf_node[i]].sfs.push(SfConfig {
                label: sf_label[i],
                name: s.name.clone(),
                intrusive: s.intrusive,
                external: s.external,
                function: s.function.clone(),
                translates_addresses: s.translates_addresses,
                cache_capacity: s.cache_capacity,
                cache_max_age_ms: None,
                attachment: s.attachment.clone(),
                lane_attachments: s.lane_attachments.clone(),
            });
        }

        let mut spi = first_spi;
        let mut next_out = vec![0u32; cfgs.len()];
        let _ = index(self.chains.iter().map(|c| c.name.as_str()), "chains")?;
        for (ci, c) in self.chains.iter().enumerate() {
            let at = format!("chains[{ci}]");
            let classifier = node_of(format!("{at}.classifier"), &c.classifier)?;
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
            // Encrypting points: the classifier, each intrusive SF, the endpoint's node.
            let mut points = vec![classifier];
            for (k, name) in c.sfs.iter().enumerate() {
                let s = *sf_ix
                    .get(name.as_str())
                    .ok_or_else(|| bad(format!("{at}.sfs[{k}]"), format!("no SF named {name:?}")))?;
                labels.push(sf_label[s]);
                if self.sfs[s].intrusive {
                    points.push(sf_node[s]);
                }
            }
            labels.push(ep_label[to]);
            points.push(ep_node[to]);
            let hops = plan_sas(&points, &mut next_out);
            for (k, h) in hops.iter().enumerate() {
                let sa = self.sa_params(spi).map_err(|e| bad(format!("{at}: SA {k}"), e))?;
                spi += 1;
                cfgs[h.from].outbound_sas.push(OutboundSaConfig { index: h.out, sa: sa.clone() });
                cfgs[h.to].inbound_sas.push(InboundSaConfig { sa, reseal: h.reseal, link: false });
            }
            let id = ci as u32 + 1;
            let integrity = if self.sfc_integrity {
                let key_id = spi;
                spi += 1;
                let sfs: Vec<(usize, u32, bool)> = c
                    .sfs
                    .iter()
                    .filter_map(|n| sf_ix.get(n.as_str()))
                    .map(|&s| (sf_node[s], sf_label[s], self.sfs[s].intrusive))
                    .collect();
                chain_keys(&mut cfgs, key_id, id, classifier, &sfs, ep_node[to]).map_err(|e| bad(&at, e))?;
                Some(ChainIntegrityConfig { key_id, pot: !sfs.is_empty() })
            } else {
                None
            };
            let cl = &mut cfgs[classifier];
            cl.chains.push(ChainConfig { id, labels, sa: hops[0].out, ttl: 64, nsh: c.nsh.clone(), integrity });
            for (j, r) in c.rules.iter().enumerate() {
                if r.chain.is_some() || r.deny {
                    return Err(bad(
                        format!("{at}.rules[{j}]"),
                        "`chain` and `deny` are implied by the chain; leave them out",
                    ));
                }
                cl.rules.push(RuleConfig { chain: Some(id), ..r.clone() });
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
                    cfgs[to].inbound_sas.push(InboundSaConfig { sa, reseal: None, link: true });
                }
            }
        }
        // What the compiler cannot see (prefix syntax, depth limits) the node check finds.
        for cfg in &cfgs {
            cfg.check().map_err(|e| bad(format!("node {:?}", cfg.name), e))?;
        }
        Ok((cfgs, spi))
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

/// Places one chain key: the classifier holds MAC, encryption and origin keys; each node of the
/// chain's SFs the MAC key, its SFs' proof-of-transit shares and, for intrusive SFs, the
/// encryption key; the end node the MAC key, the origin key and the proof-of-transit secret.
fn chain_keys(
    cfgs: &mut [NodeConfig],
    key_id: u32,
    chain: u32,
    classifier: usize,
    sfs: &[(usize, u32, bool)],
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
    let first = entries.entry(classifier).or_insert_with(|| base.clone());
    first.enc_key = Some(enc.clone());
    first.origin_key = Some(origin.clone());
    for (k, &(node, label, intrusive)) in sfs.iter().enumerate() {
        let e = entries.entry(node).or_insert_with(|| base.clone());
        if intrusive {
            e.enc_key = Some(enc.clone());
        }
        let pot = e.pot.get_or_insert_with(PotConfig::default);
        pot.poly2 = poly2.clone();
        let (x, y, lpc) = shares[k];
        pot.shares.push(PotShareConfig { label, x, y, lpc });
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
