//! What the controller pushes to a node: RFC 9061 `ietf-i2nsf-ikeless` SAD and SPD entries in
//! RFC 7951 JSON names (`ipsec-sa-config`, `sa-lifetime-hard` ...), plus the zsfc SFC tables
//! (labels, chains, gateway grants) under `zsfc:sfc`.
//!
//! The document is the node's whole desired state at `zsfc:version`; the node makes its engine
//! match it (adds what is new, removes what is gone). An SA the node already runs is listed
//! without its `key`: key material travels once, to the one node that needs it.
use crate::FieldError;
use crate::build::bad;
use crate::model::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// IANA "Transform Type 1 - Encryption Algorithm" 20: ENCR_AES_GCM_16 (RFC 4106). The key
/// length (16 or 32 bytes, plus the 4-byte salt) says AES-128 or AES-256.
pub const ENCR_AES_GCM_16: u16 = 20;
/// IANA encryption transform 21: ENCR_NULL_AUTH_AES_GMAC (RFC 4543), authentication only; zsfc
/// protects the links between nodes with it.
pub const ENCR_NULL_AUTH_AES_GMAC: u16 = 21;

/// One node's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeState {
    /// Configuration version: grows with every change in the domain.
    #[serde(rename = "zsfc:version")]
    pub version: u64,
    #[serde(rename = "ietf-i2nsf-ikeless:ipsec-ikeless")]
    pub ikeless: IpsecIkeless,
    #[serde(rename = "zsfc:sfc")]
    pub sfc: Sfc,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecIkeless {
    pub spd: Spd,
    pub sad: Sad,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spd {
    #[serde(rename = "spd-entry", default)]
    pub entries: Vec<SpdEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sad {
    #[serde(rename = "sad-entry", default)]
    pub entries: Vec<SadEntry>,
}

/// A classification rule as an SPD entry: outbound traffic matching the selector is protected
/// by the chain `reqid` (or discarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdEntry {
    pub name: String,
    pub direction: String,
    pub reqid: u64,
    #[serde(rename = "ipsec-policy-config")]
    pub config: PolicyConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(rename = "traffic-selector")]
    pub selector: TrafficSelector,
    #[serde(rename = "processing-info")]
    pub processing: ProcessingInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSelector {
    #[serde(rename = "local-prefix")]
    pub local_prefix: String,
    #[serde(rename = "remote-prefix")]
    pub remote_prefix: String,
    /// An IP protocol number; absent: any.
    #[serde(rename = "inner-protocol", default, skip_serializing_if = "Option::is_none")]
    pub inner_protocol: Option<u8>,
    #[serde(rename = "local-ports", default = "any_ports")]
    pub local_ports: Vec<PortRange>,
    #[serde(rename = "remote-ports", default = "any_ports")]
    pub remote_ports: Vec<PortRange>,
}

fn any_ports() -> Vec<PortRange> {
    vec![PortRange { start: 0, end: u16::MAX }]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingInfo {
    /// `protect` (onto the chain `reqid`) or `discard`.
    pub action: String,
}

/// One SA at this node, named as in every other document and notification about it. The name
/// and the direction identify the entry (a node can hold both ends of one SA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SadEntry {
    pub name: String,
    /// The chain the SA serves.
    pub reqid: u64,
    #[serde(rename = "ipsec-sa-config")]
    pub config: SaEntryConfig,
    /// `outbound` (this node seals) or `inbound` (this node opens).
    #[serde(rename = "zsfc:direction")]
    pub direction: Direction,
    /// Inbound SAs of an intrusive SF: the outbound SA (by name) to re-seal with after the SF.
    #[serde(rename = "zsfc:reseal", default, skip_serializing_if = "Option::is_none")]
    pub reseal: Option<String>,
    /// Before an SF pool: the outbound SA (by name) to re-seal with by the label of the next
    /// encrypting instance the packet names (`zsfc:reseal` when it names none of them).
    #[serde(rename = "zsfc:reseal-via", default, skip_serializing_if = "Vec::is_empty")]
    pub reseal_via: Vec<StateVia>,
    /// A link SA (hop-by-hop authentication between adjacent nodes, `mode` = `tunnel`): the
    /// outbound one seals everything sent to one peer, the inbound one authenticates what that
    /// peer sends.
    #[serde(rename = "zsfc:link", default, skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaEntryConfig {
    pub spi: u32,
    #[serde(rename = "ext-seq-num")]
    pub ext_seq_num: bool,
    #[serde(rename = "anti-replay-window-size")]
    pub anti_replay_window_size: u64,
    #[serde(rename = "protocol-parameters")]
    pub protocol_parameters: String,
    pub mode: String,
    #[serde(rename = "esp-sa")]
    pub esp_sa: EspSa,
    #[serde(rename = "sa-lifetime-hard")]
    pub lifetime_hard: Lifetime,
    #[serde(rename = "sa-lifetime-soft")]
    pub lifetime_soft: Lifetime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspSa {
    pub encryption: Encryption,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(rename = "encryption-algorithm")]
    pub algorithm: u16,
    /// Key ‖ 4-byte salt (RFC 4106 KEYMAT), hex. Absent: the node already has this SA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyMaterial>,
}

/// RFC 9061 `lifetime` grouping; 0 means no limit. `time` is in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    #[serde(default)]
    pub time: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub idle: u64,
    /// Soft lifetime only: what the node does when it is reached (`warning`: tell the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// The SFC tables the controller pushes along with the SAs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sfc {
    #[serde(default)]
    pub labels: Vec<LabelEntry>,
    #[serde(default)]
    pub chains: Vec<StateChain>,
    /// The ingress gateway's policy (gateway nodes only).
    #[serde(default)]
    pub grants: Vec<GatewayGrant>,
    /// Link protection: the outbound SA (by name) of the link to each peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<StateLink>,
    /// SFC integrity: chain keys (without key material when the node holds them already).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_keys: Vec<ChainKeyConfig>,
    /// Client identities the gateway refuses (gateway nodes only): `zsfc revoke client NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<RevokedClient>,
    /// SF pools: the instances of every SF that has several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolConfig>,
}

/// An outbound SA (by name) for packets whose labels name the instance `label`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateVia {
    pub label: u32,
    pub sa: String,
}

/// A revoked client: its certificates issued at or before `before` (Unix seconds, the
/// certificate's notBefore) are refused, on new connections and on open ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedClient {
    pub name: String,
    pub before: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateLink {
    pub peer: u32,
    pub sa: String,
}

/// A chain this node classifies onto; `sa` names an outbound SAD entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateChain {
    pub id: u32,
    pub labels: Vec<u32>,
    pub sa: String,
    /// Before an SF pool: the outbound SA by the label of the first encrypting instance.
    #[serde(rename = "sa-via", default, skip_serializing_if = "Vec::is_empty")]
    pub sa_via: Vec<StateVia>,
    pub ttl: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsh: Option<NshConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<ChainIntegrityConfig>,
}

/// A chain key as listed for a node that holds it already: no key material, no share.
pub fn strip_chain_key(k: &ChainKeyConfig) -> ChainKeyConfig {
    ChainKeyConfig { key_id: k.key_id, chain: k.chain, mac_key: None, enc_key: None, origin_key: None, pot: None }
}

/// The name of the SA with `spi` (unique in a domain: SPIs are never reused).
pub fn sa_name(spi: u32) -> String {
    format!("sa-{spi:08x}")
}

fn lifetime(l: &LimitsConfig, soft: bool) -> Lifetime {
    Lifetime {
        time: l.seconds.unwrap_or(0),
        bytes: l.bytes.unwrap_or(0),
        packets: l.packets.unwrap_or(0),
        idle: 0,
        action: soft.then(|| "warning".to_owned()),
    }
}

fn limits(l: &Lifetime) -> LimitsConfig {
    let some = |v: u64| (v != 0).then_some(v);
    LimitsConfig { seconds: some(l.time), bytes: some(l.bytes), packets: some(l.packets) }
}

fn sad_entry(
    p: &SaParams,
    reqid: u64,
    direction: Direction,
    reseal: Option<String>,
    reseal_via: Vec<StateVia>,
    link: bool,
    with_key: bool,
) -> SadEntry {
    let algorithm = if p.algorithm.esp().authenticates_only() { ENCR_NULL_AUTH_AES_GMAC } else { ENCR_AES_GCM_16 };
    SadEntry {
        name: sa_name(p.spi),
        reqid,
        config: SaEntryConfig {
            spi: p.spi,
            ext_seq_num: p.esn,
            anti_replay_window_size: p.replay_window,
            protocol_parameters: "esp".into(),
            // Payload SAs carry whole IP packets (RFC 4301 §5.2 check of the inner header),
            // link SAs whole labelled packets: both are tunnel mode.
            mode: "tunnel".into(),
            esp_sa: EspSa { encryption: Encryption { algorithm, key: with_key.then(|| p.keymat.clone()) } },
            lifetime_hard: lifetime(&p.lifetime.hard, false),
            lifetime_soft: lifetime(&p.lifetime.soft, true),
        },
        direction,
        reseal,
        reseal_via,
        link,
    }
}

impl NodeState {
    /// The document for a compiled node configuration: its labels, SAs, chains and rules, and
    /// `grants` for a gateway. `with_key(spi)` says whether the SA's key must travel (the node
    /// does not have it yet).
    pub fn from_config(
        version: u64,
        cfg: &NodeConfig,
        grants: Vec<GatewayGrant>,
        with_key: impl Fn(u32) -> bool,
    ) -> Self {
        let out_spi: HashMap<u32, u32> = cfg.outbound_sas.iter().map(|o| (o.index, o.sa.spi)).collect();
        let chain_of_out: HashMap<u32, u64> = cfg
            .chains
            .iter()
            .flat_map(|c| std::iter::once(c.sa).chain(c.sa_via.iter().map(|v| v.sa)).map(|sa| (sa, u64::from(c.id))))
            .collect();
        let name_of = |index: u32| out_spi.get(&index).map(|&s| sa_name(s)).unwrap_or_default();
        let via = |v: &[ViaConfig]| -> Vec<StateVia> {
            v.iter().map(|v| StateVia { label: v.label, sa: name_of(v.sa) }).collect()
        };
        let mut sad = Vec::new();
        let link_out: HashSet<u32> = cfg.links.iter().map(|l| l.sa).collect();
        for o in &cfg.outbound_sas {
            let reqid = chain_of_out.get(&o.index).copied().unwrap_or(0);
            let link = link_out.contains(&o.index);
            sad.push(sad_entry(&o.sa, reqid, Direction::Outbound, None, Vec::new(), link, with_key(o.sa.spi)));
        }
        for i in &cfg.inbound_sas {
            let reseal = i.reseal.and_then(|x| out_spi.get(&x)).map(|&s| sa_name(s));
            let reseal_via = via(&i.reseal_via);
            sad.push(sad_entry(&i.sa, 0, Direction::Inbound, reseal, reseal_via, i.link, with_key(i.sa.spi)));
        }
        let links = cfg
            .links
            .iter()
            .map(|l| StateLink { peer: l.peer, sa: out_spi.get(&l.sa).map(|&s| sa_name(s)).unwrap_or_default() })
            .collect();
        let spd = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(k, r)| SpdEntry {
                name: format!("rule-{k}"),
                direction: "outbound".into(),
                reqid: u64::from(r.chain.unwrap_or(0)),
                config: PolicyConfig {
                    selector: TrafficSelector {
                        local_prefix: r.src.clone(),
                        remote_prefix: r.dst.clone(),
                        inner_protocol: r.protocol.map(Protocol::number),
                        local_ports: vec![PortRange { start: r.src_ports.0, end: r.src_ports.1 }],
                        remote_ports: vec![PortRange { start: r.dst_ports.0, end: r.dst_ports.1 }],
                    },
                    processing: ProcessingInfo { action: if r.deny { "discard" } else { "protect" }.into() },
                },
            })
            .collect();
        let chains = cfg
            .chains
            .iter()
            .map(|c| StateChain {
                id: c.id,
                labels: c.labels.clone(),
                sa: name_of(c.sa),
                sa_via: via(&c.sa_via),
                ttl: c.ttl,
                nsh: c.nsh.clone(),
                integrity: c.integrity,
            })
            .collect();
        let chain_keys =
            cfg.chain_keys.iter().map(|k| if with_key(k.key_id) { k.clone() } else { strip_chain_key(k) }).collect();
        Self {
            version,
            ikeless: IpsecIkeless { spd: Spd { entries: spd }, sad: Sad { entries: sad } },
            sfc: Sfc {
                labels: cfg.labels.clone(),
                chains,
                grants,
                links,
                chain_keys,
                revoked: Vec::new(),
                pools: cfg.pools.clone(),
            },
        }
    }

    /// Checks the references inside the document (names of SAs, chains of rules) and returns
    /// the classification rules in [`RuleConfig`] form.
    pub fn check(&self) -> Result<Vec<RuleConfig>, FieldError> {
        let mut names = HashSet::new();
        let mut spis = HashSet::new();
        let mut outbound = HashSet::new();
        for (i, e) in self.ikeless.sad.entries.iter().enumerate() {
            let at = format!("sad-entry[{i}]");
            if !names.insert((e.name.as_str(), e.direction)) {
                return Err(bad(format!("{at}.name"), format!("{:?} is listed twice", e.name)));
            }
            if !spis.insert((e.config.spi, e.direction)) {
                return Err(bad(format!("{at}.spi"), format!("SPI {:#x} is listed twice", e.config.spi)));
            }
            if e.direction == Direction::Outbound {
                outbound.insert(e.name.as_str());
            }
            e.params().map_err(|(f, why)| bad(format!("{at}.{f}"), why))?;
        }
        for (i, e) in self.ikeless.sad.entries.iter().enumerate() {
            if let Some(r) = &e.reseal
                && (e.direction != Direction::Inbound || !outbound.contains(r.as_str()))
            {
                return Err(bad(format!("sad-entry[{i}].zsfc:reseal"), format!("no outbound SA named {r:?}")));
            }
            if !e.reseal_via.is_empty() && e.reseal.is_none() {
                return Err(bad(format!("sad-entry[{i}].zsfc:reseal-via"), "only with zsfc:reseal"));
            }
            for (j, v) in e.reseal_via.iter().enumerate() {
                if !outbound.contains(v.sa.as_str()) {
                    let at = format!("sad-entry[{i}].zsfc:reseal-via[{j}].sa");
                    return Err(bad(at, format!("no outbound SA named {:?}", v.sa)));
                }
            }
        }
        let mut peers = HashSet::new();
        for (i, l) in self.sfc.links.iter().enumerate() {
            if !peers.insert(l.peer) {
                return Err(bad(format!("zsfc:sfc.links[{i}].peer"), format!("peer {} has two links", l.peer)));
            }
            let is_link = |e: &&SadEntry| e.name == l.sa && e.direction == Direction::Outbound && e.link;
            if !self.ikeless.sad.entries.iter().any(|e| is_link(&e)) {
                return Err(bad(format!("zsfc:sfc.links[{i}].sa"), format!("no outbound link SA named {:?}", l.sa)));
            }
        }
        let mut keys = HashMap::new();
        for (i, k) in self.sfc.chain_keys.iter().enumerate() {
            if keys.insert(k.key_id, k.chain).is_some() {
                return Err(bad(format!("zsfc:sfc.chain_keys[{i}].key_id"), format!("{} is listed twice", k.key_id)));
            }
        }
        let mut chains = HashSet::new();
        for (i, c) in self.sfc.chains.iter().enumerate() {
            if let Some(x) = c.integrity
                && keys.get(&x.key_id) != Some(&c.id)
            {
                return Err(bad(
                    format!("zsfc:sfc.chains[{i}].integrity.key_id"),
                    format!("no chain key {} of chain {}", x.key_id, c.id),
                ));
            }
            if !chains.insert(c.id) {
                return Err(bad(format!("zsfc:sfc.chains[{i}].id"), format!("chain {} is listed twice", c.id)));
            }
            if !outbound.contains(c.sa.as_str()) {
                return Err(bad(format!("zsfc:sfc.chains[{i}].sa"), format!("no outbound SA named {:?}", c.sa)));
            }
            for (j, v) in c.sa_via.iter().enumerate() {
                if !outbound.contains(v.sa.as_str()) {
                    let at = format!("zsfc:sfc.chains[{i}].sa-via[{j}].sa");
                    return Err(bad(at, format!("no outbound SA named {:?}", v.sa)));
                }
            }
        }
        let mut rules = Vec::new();
        for (i, e) in self.ikeless.spd.entries.iter().enumerate() {
            let at = format!("spd-entry[{i}]");
            let s = &e.config.selector;
            let one = |v: &[PortRange], f: &str| match v {
                [r] if r.start <= r.end => Ok((r.start, r.end)),
                _ => Err(bad(format!("{at}.traffic-selector.{f}"), "exactly one non-empty range")),
            };
            let deny = match e.config.processing.action.as_str() {
                "protect" => false,
                "discard" => true,
                other => {
                    return Err(bad(format!("{at}.processing-info.action"), format!("{other:?}: protect or discard")));
                }
            };
            let chain = u32::try_from(e.reqid).ok().filter(|c| deny || chains.contains(c));
            if !deny && chain.is_none() {
                return Err(bad(format!("{at}.reqid"), format!("no chain {}", e.reqid)));
            }
            rules.push(RuleConfig {
                src: s.local_prefix.clone(),
                dst: s.remote_prefix.clone(),
                protocol: s.inner_protocol.map(Protocol::Number),
                src_ports: one(&s.local_ports, "local-ports")?,
                dst_ports: one(&s.remote_ports, "remote-ports")?,
                chain: if deny { None } else { chain },
                deny,
            });
        }
        Ok(rules)
    }
}

impl SadEntry {
    /// The SA parameters; key material empty when the entry carries none. The error names the
    /// field.
    pub fn params(&self) -> Result<SaParams, (&'static str, String)> {
        let c = &self.config;
        if c.protocol_parameters != "esp" || c.mode != "tunnel" {
            return Err(("ipsec-sa-config.mode", "zsfc runs every SA (payload and zsfc:link) in tunnel mode".into()));
        }
        let (aes128, aes256) = match (c.esp_sa.encryption.algorithm, self.link) {
            (ENCR_AES_GCM_16, false) => (Algorithm::Aes128Gcm, Algorithm::Aes256Gcm),
            (ENCR_NULL_AUTH_AES_GMAC, true) => (Algorithm::Aes128Gmac, Algorithm::Aes256Gmac),
            (a, _) => {
                return Err((
                    "ipsec-sa-config.esp-sa.encryption.encryption-algorithm",
                    format!(
                        "{a}: {ENCR_AES_GCM_16} (AES-GCM, 16-byte ICV) for payload SAs, \
                         {ENCR_NULL_AUTH_AES_GMAC} (AES-GMAC) for link SAs"
                    ),
                ));
            }
        };
        let keymat = c.esp_sa.encryption.key.clone().unwrap_or(KeyMaterial(Default::default()));
        let algorithm = match keymat.0.len() {
            0 | 36 => aes256,
            20 => aes128,
            n => return Err(("ipsec-sa-config.esp-sa.encryption.key", format!("{n} bytes: 20 or 36 (key ‖ salt)"))),
        };
        Ok(SaParams {
            spi: c.spi,
            algorithm,
            keymat,
            esn: c.ext_seq_num,
            replay_window: c.anti_replay_window_size,
            lifetime: LifetimeConfig { soft: limits(&c.lifetime_soft), hard: limits(&c.lifetime_hard) },
        })
    }

    pub fn has_key(&self) -> bool {
        self.config.esp_sa.encryption.key.is_some()
    }
}
