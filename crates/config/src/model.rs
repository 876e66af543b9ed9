//! The serialized shapes. Every struct refuses unknown fields, so a typo is an error, not a
//! silently ignored setting.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{Ipv4Addr, Ipv6Addr};
use zeroize::Zeroizing;

/// One node's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Format version; see [`crate::VERSION`].
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sfs: Vec<SfConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_sas: Vec<OutboundSaConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_sas: Vec<InboundSaConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainConfig>,
    /// SF pools: the instances of each SF with several, which this node steers flows over
    /// (`zsfc_dataplane::pool`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolConfig>,
    /// Link protection: the outbound SA of the link to each peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkConfig>,
    /// SFC integrity: the chain keys this node holds (see `settings.sfc_integrity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_keys: Vec<ChainKeyConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// How this node talks to its peers (a node process needs it; the simulation does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportConfig>,
    /// The local side: a TUN device carrying the clients' or the service's plain IP traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
    /// The mutual-TLS ingress gateway (ingress nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayConfig>,
    /// Where the node serves its counters as Prometheus metrics (`GET /metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// The controller that pushes this node's SAs, labels, chains, rules and gateway grants
    /// (then the file holds none of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerConfig>,
}

/// Where the controller is and how the node proves who it is: a one-time bootstrap token the
/// first time, the certificate it got for it after that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// `host:port` of the controller's HTTPS API.
    pub address: String,
    /// The name in the controller's certificate.
    #[serde(default = "controller_name")]
    pub server_name: String,
    /// PEM of the domain CA (verifies the controller).
    pub ca: String,
    /// Directory for the node's private key and certificate (created 0700 at enrolment).
    pub identity_dir: String,
    /// File holding the one-time bootstrap token; removed once the node is enrolled.
    pub bootstrap: String,
}

fn controller_name() -> String {
    "controller".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: String,
}

/// The ingress gateway: where clients connect with TLS, the PEM files of the domain CA and of
/// the gateway's certificate, the address inner connections come from (on the local side), the
/// services (by server name) and which client identity may use which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub inner_source: String,
    #[serde(default)]
    pub services: Vec<GatewayService>,
    #[serde(default)]
    pub grants: Vec<GatewayGrant>,
    #[serde(default)]
    pub rate_limits: GatewayRateLimits,
    #[serde(default)]
    pub blocking: GatewayBlocking,
}

/// Automatic blocking (seed 004 REQ11): a source address or a client identity refused
/// `after_refusals` times within `within_s` seconds is refused outright for `block_s` seconds.
/// A source counts failed authentications and its rate exceeded; an identity counts services or
/// paths it was not granted and its rate exceeded. `after_refusals = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayBlocking {
    pub after_refusals: u32,
    pub within_s: u32,
    pub block_s: u32,
}

impl Default for GatewayBlocking {
    fn default() -> Self {
        Self { after_refusals: 100, within_s: 60, block_s: 300 }
    }
}

/// New connections the gateway admits: per source address (before the TLS handshake) and per
/// client identity (after it), each a sustained rate per second and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayRateLimits {
    pub per_source_per_s: u32,
    pub per_source_burst: u32,
    pub per_identity_per_s: u32,
    pub per_identity_burst: u32,
}

impl Default for GatewayRateLimits {
    fn default() -> Self {
        Self { per_source_per_s: 100, per_source_burst: 200, per_identity_per_s: 100, per_identity_burst: 200 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayService {
    /// The server name (SNI) clients ask for.
    pub name: String,
    /// `address:port` of the service.
    pub address: String,
}

/// The client `identity` (its certificate's subject common name) may use `service`; its
/// connections take `chain`. Whatever is not granted is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayGrant {
    pub identity: String,
    pub service: String,
    pub chain: u32,
    /// Only connections whose first HTTP request's target starts with this (classification by
    /// HTTP path; the longest matching prefix wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// How this node reaches its peers: MPLS-in-UDP (RFC 7510) on `listen` to peers with an
/// `address`, and/or Ethernet + MPLS (ethertype 0x8847) on the interface `ethernet` to peers
/// with a `mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethernet: Option<String>,
    /// How the Ethernet link's receive ring hands frames over (default `frames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<EthernetRing>,
    /// The IP MTU of the links to the peers (the underlay's; default 1500): no datagram larger
    /// than it leaves the node, and the inner MTU (`local.mtu`) plus the encapsulation must fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

impl TransportConfig {
    /// The links' MTU unless the file says otherwise: Ethernet's 1500 (RFC 894).
    pub const DEFAULT_MTU: u16 = 1500;

    pub fn link_mtu(&self) -> u16 {
        self.mtu.unwrap_or(Self::DEFAULT_MTU)
    }

    /// The largest labelled packet (MPLS label stack first, or link ESP) a link carries: the
    /// link MTU less the outer IP and UDP headers of MPLS-in-UDP or UDP-encapsulated ESP (20 +
    /// 8 over IPv4, 40 + 8 over IPv6); an Ethernet-only node's frames carry it as it is.
    pub fn max_datagram(&self) -> u16 {
        let outer = match self.listen.as_deref().and_then(|l| l.parse::<std::net::SocketAddr>().ok()) {
            Some(a) if a.is_ipv6() => 48,
            Some(_) => 28,
            None if self.ethernet.is_some() => 0,
            None => 28,
        };
        self.link_mtu().saturating_sub(outer)
    }
}

/// Bytes the domain adds to an inner packet before the outer IP and UDP headers: `labels`
/// label stack entries, payload ESP in tunnel mode (the outer IP header, at most IPv6's 40,
/// ESP header 8 + IV 8 + ICV 16 + pad length/next header 2 and up to 3 bytes of padding); link
/// ESP around everything on a protected link; the NSH of SFC integrity (with room for a tenant
/// id).
pub fn encapsulation_overhead(labels: usize, link_protection: bool, sfc_integrity: bool) -> u16 {
    let link = if link_protection { zsfc_esp::OVERHEAD_MAX } else { 0 };
    let nsh = if sfc_integrity { zsfc_dataplane::integrity::NSH_OVERHEAD + 8 } else { 0 };
    (4 * labels + zsfc_esp::TUNNEL_OVERHEAD_MAX + link + nsh) as u16
}

/// How an AF_PACKET receive ring hands frames to the node: `frames` (TPACKET_V2, a slot per
/// frame, handed over at once) or `blocks` (TPACKET_V3, frames packed into blocks handed over
/// when full or after 1 ms: fewer wake-ups, but a lone packet waits for the timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EthernetRing {
    #[default]
    Frames,
    Blocks,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// TUN device name.
    pub tun: String,
    /// Addresses of the device, as prefixes (`10.1.0.1/24`, `fd01::1/64`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Inner MTU: leaves room for the outer headers, labels and ESP so nothing fragments.
    #[serde(default = "mtu")]
    pub mtu: u16,
    /// Prefixes routed into the domain through the device (`10.9.0.0/24`): where the services
    /// or the clients behind the other end of the chains are. The node installs them each time
    /// it creates the device, so that a restarted node is reachable again by itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

fn mtu() -> u16 {
    1280
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub max_label_depth: usize,
    pub max_flows: usize,
    /// Largest MSS a TCP SYN entering the domain here may announce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_mss_clamp: Option<u16>,
    /// Worker lanes: threads with an engine each, own UDP port (`listen` + lane) or own socket in
    /// the Ethernet link's fanout group (at most 8 lanes there), own TUN queue and own SAs
    /// (derived per lane from the configured ones). Every node of a domain must have the same
    /// number; lane k talks only to lane k of its peers.
    #[serde(skip_serializing_if = "is_one")]
    pub lanes: u32,
    /// Link protection: every packet to or from another node travels in link ESP under the SA
    /// of that link (`links`); plain labelled packets from the domain are dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link_auth: bool,
    /// SFC integrity: packets reaching an SF or the delivery label here must carry an NSH with
    /// a valid RFC 9145 MAC under one of `chain_keys`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sfc_integrity: bool,
    /// Liveness probes to every peer (SF pools steer flows only to instances on live peers).
    #[serde(skip_serializing_if = "LivenessConfig::is_default")]
    pub liveness: LivenessConfig,
}

/// Liveness of adjacent nodes: BFD-like probes on the data plane (RFC 5880 timing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// Probe interval in milliseconds (10..=10000); 0 turns probing off, and every peer
    /// then counts as up.
    pub interval_ms: u32,
    /// Probes missed before a peer counts as down (1..=50).
    pub detect_mult: u8,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        let d = zsfc_dataplane::LivenessSettings::default();
        Self { interval_ms: d.interval.as_millis() as u32, detect_mult: d.detect_mult }
    }
}

impl LivenessConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The engine's settings; `None` when probing is off.
    pub fn settings(&self) -> Option<zsfc_dataplane::LivenessSettings> {
        (self.interval_ms > 0).then(|| zsfc_dataplane::LivenessSettings {
            interval: core::time::Duration::from_millis(u64::from(self.interval_ms)),
            detect_mult: self.detect_mult,
        })
    }

    /// Refuses intervals and multipliers outside their ranges, naming the field under `at`.
    pub fn check(&self, at: &str) -> Result<(), crate::FieldError> {
        if self.interval_ms != 0 && !(10..=10_000).contains(&self.interval_ms) {
            return Err(crate::build::bad(
                format!("{at}.interval_ms"),
                format!("{} is outside 10..=10000 (0 turns probing off)", self.interval_ms),
            ));
        }
        if !(1..=50).contains(&self.detect_mult) {
            return Err(crate::build::bad(
                format!("{at}.detect_mult"),
                format!("{} is outside 1..=50", self.detect_mult),
            ));
        }
        Ok(())
    }
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

impl Default for Settings {
    fn default() -> Self {
        let d = zsfc_dataplane::NodeSettings::default();
        Self {
            max_label_depth: d.max_label_depth,
            max_flows: d.max_flows,
            tcp_mss_clamp: d.tcp_mss_clamp,
            lanes: 1,
            link_auth: false,
            sfc_integrity: false,
            liveness: LivenessConfig::default(),
        }
    }
}

/// A neighbouring node: `address` is where its MPLS-in-UDP packets go (`host:port`), `mac`
/// where its Ethernet + MPLS frames go (one of the two; the simulation needs neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A label this node does not own an SF for: either delivered here or sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelEntry {
    pub label: u32,
    /// Send packets with this top label to the peer with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u32>,
    /// Chains end here: decrypt and deliver to the local side.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deliver: bool,
}

/// A service function instance on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfConfig {
    pub label: u32,
    pub name: String,
    /// Sees decrypted packets (and re-encrypts with this node's SA).
    pub intrusive: bool,
    /// An SFC-unaware program behind an attachment circuit (no `function` then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
    /// The external SF translates addresses or ports (NAT): its caching proxy recognises
    /// returning packets by the header fields translation leaves alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translates_addresses: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_capacity: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_age_ms: Option<u64>,
    /// How a node process reaches an external SF (the simulation needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentConfig>,
    /// With worker lanes: the attachment circuits of lanes 1, 2, ... (`attachment` is lane 0's),
    /// one per further lane, so that each lane's proxy gets back what it handed over (the SF
    /// routes each circuit's in side to its own out side).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lane_attachments: Vec<AttachmentConfig>,
}

/// The attachment circuit of an external SF: packets for the SF leave on `to_sf`, the SF
/// routes them out of its other interface back to the node's `from_sf`. With `kind = "tun"`
/// (default) both are TUN devices the node creates; with `kind = "veth"` both are existing veth
/// ends in the node's namespace whose peers belong to the SF, and `to_sf_mac` is the MAC address
/// of the SF's interface on the `to_sf` link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentConfig {
    pub to_sf: String,
    pub from_sf: String,
    #[serde(default = "attachment_mtu")]
    pub mtu: u16,
    #[serde(default, skip_serializing_if = "is_tun")]
    pub kind: AttachmentKindConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_sf_mac: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKindConfig {
    #[default]
    Tun,
    Veth,
}

fn is_tun(k: &AttachmentKindConfig) -> bool {
    *k == AttachmentKindConfig::Tun
}

fn attachment_mtu() -> u16 {
    1500
}

/// A built-in service function and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Function {
    Forward,
    Counter,
    Firewall {
        #[serde(default = "allow")]
        default: AclAction,
        #[serde(default)]
        rules: Vec<AclRuleConfig>,
    },
    Dpi {
        patterns: Vec<String>,
    },
    Nat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v4: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        v6: Option<Ipv6Addr>,
        #[serde(default = "nat_ports")]
        ports: (u16, u16),
        #[serde(default = "nat_idle")]
        idle_timeout_s: u64,
    },
    RateLimiter {
        rate_bytes_per_s: u64,
        burst_bytes: u64,
    },
    Delay {
        delay_us: u64,
        #[serde(default = "delay_capacity")]
        capacity: usize,
    },
    Logger {
        pcap: std::path::PathBuf,
        #[serde(default = "snaplen")]
        snaplen: usize,
    },
}

fn allow() -> AclAction {
    AclAction::Allow
}
fn nat_ports() -> (u16, u16) {
    (20000, 29999)
}
fn nat_idle() -> u64 {
    300
}
fn delay_capacity() -> usize {
    4096
}
fn snaplen() -> usize {
    65535
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    Allow,
    Deny,
}

/// One firewall ACL line; absent fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default = "all_ports")]
    pub dst_ports: (u16, u16),
    pub action: AclAction,
}

fn all_ports() -> (u16, u16) {
    (0, u16::MAX)
}

/// An IP protocol by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    Name(ProtocolName),
    Number(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Protocol {
    pub fn number(self) -> u8 {
        use zsfc_wire::ip::protocol as p;
        match self {
            Self::Number(n) => n,
            Self::Name(ProtocolName::Tcp) => p::TCP,
            Self::Name(ProtocolName::Udp) => p::UDP,
            Self::Name(ProtocolName::Icmp) => p::ICMP,
            Self::Name(ProtocolName::Icmpv6) => p::ICMPV6,
        }
    }
}

/// The ESP transform: AES-GCM (payloads) or AES-GMAC (RFC 4543, authentication only: links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    #[serde(rename = "aes-128-gmac")]
    Aes128Gmac,
    #[serde(rename = "aes-256-gmac")]
    Aes256Gmac,
}

impl Algorithm {
    pub fn esp(self) -> zsfc_esp::Algorithm {
        match self {
            Self::Aes128Gcm => zsfc_esp::Algorithm::Aes128Gcm,
            Self::Aes256Gcm => zsfc_esp::Algorithm::Aes256Gcm,
            Self::Aes128Gmac => zsfc_esp::Algorithm::Aes128Gmac,
            Self::Aes256Gmac => zsfc_esp::Algorithm::Aes256Gmac,
        }
    }
    /// The authentication-only transform of the same key size.
    pub fn gmac(self) -> Self {
        match self {
            Self::Aes128Gcm | Self::Aes128Gmac => Self::Aes128Gmac,
            Self::Aes256Gcm | Self::Aes256Gmac => Self::Aes256Gmac,
        }
    }
}

/// Key material (key ‖ 4-byte salt) written as hex. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(pub Zeroizing<Vec<u8>>);

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

impl Serialize for KeyMaterial {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = Zeroizing::new(hex::encode(&*self.0));
        s.serialize_str(&h)
    }
}

impl<'de> Deserialize<'de> for KeyMaterial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        // Decoded into a buffer of the final size: a growing one (`hex::decode`) would leave
        // the key's first bytes behind in each buffer it outgrew, freed but not zeroized.
        let mut bytes = Zeroizing::new(vec![0u8; s.len() / 2]);
        hex::decode_to_slice(s.as_str(), &mut bytes)
            .map_err(|_| serde::de::Error::custom("key material must be hex"))?;
        Ok(Self(bytes))
    }
}

/// Lifetime limits; absent means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeConfig {
    #[serde(default)]
    pub soft: LimitsConfig,
    #[serde(default)]
    pub hard: LimitsConfig,
}

/// The parameters every SA has (RFC 9061 `ietf-i2nsf-ikeless` names where they exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaParams {
    pub spi: u32,
    pub algorithm: Algorithm,
    pub keymat: KeyMaterial,
    #[serde(default = "yes")]
    pub esn: bool,
    #[serde(default = "replay_window")]
    pub replay_window: u64,
    #[serde(default)]
    pub lifetime: LifetimeConfig,
}

fn yes() -> bool {
    true
}
fn replay_window() -> u64 {
    zsfc_esp::DEFAULT_WINDOW
}

/// An SA this node seals with; chains and re-sealing SFs name it by `index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSaConfig {
    pub index: u32,
    pub sa: SaParams,
}

/// An SA this node opens with, and what it opens for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSaConfig {
    pub sa: SaParams,
    /// Re-seal with this outbound SA after an intrusive SF; absent: terminate (deliver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseal: Option<u32>,
    /// With an SF pool next: the outbound SA to re-seal with by the label of the next
    /// encrypting instance the packet names (`reseal` when it names none of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reseal_via: Vec<ViaConfig>,
    /// Authenticates the link ESP of packets from an adjacent node (see `settings.link_auth`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
}

/// The outbound SA (by index) that protects the link to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub peer: u32,
    pub sa: u32,
}

/// A chain this node classifies onto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub id: u32,
    /// Top first; the last is the delivery label.
    pub labels: Vec<u32>,
    /// Outbound SA index.
    pub sa: u32,
    /// With an SF pool first: the outbound SA by the label of the first encrypting instance
    /// the flow crosses (`sa` when it names none of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sa_via: Vec<ViaConfig>,
    #[serde(default = "ttl")]
    pub ttl: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsh: Option<NshConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<ChainIntegrityConfig>,
}

fn ttl() -> u8 {
    64
}

/// An outbound SA (by index) for packets whose labels name instance `label`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViaConfig {
    pub label: u32,
    pub sa: u32,
}

/// The instances of one SF (RFC 7665 §2.2): each flow crosses one, chosen by a weighted
/// rendezvous hash of the flow that every node computes alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The SF's name.
    pub sf: String,
    /// Mixed into the hash; the same on every node.
    pub seed: u64,
    pub members: Vec<PoolMemberConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolMemberConfig {
    /// The instance's label.
    pub label: u32,
    #[serde(default = "one")]
    pub weight: u32,
}

pub(crate) fn one() -> u32 {
    1
}

/// How a classifier protects a chain's NSH: MAC and encrypted subscriber id under the chain
/// key `key_id`, and a proof of transit with `pot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainIntegrityConfig {
    pub key_id: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pot: bool,
}

/// One generation of a chain's NSH protection at one node. Key material is hex, zeroized,
/// redacted in `Debug`; a controller's document lists a key the node already holds without it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainKeyConfig {
    pub key_id: u32,
    pub chain: u32,
    /// HMAC-SHA-256 key, 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_key: Option<KeyMaterial>,
    /// AES-128-GCM key of the encrypted context headers, 16 bytes: only for nodes that may read
    /// the subscriber id (the classifier, nodes of intrusive SFs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<KeyMaterial>,
    /// HMAC-SHA-256 key, 32 bytes, only for the classifier and the chain's end: the classifier
    /// derives each packet's PktID from the NSH fields it sets, the end checks it, so no node
    /// between them can change those fields (key holders included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_key: Option<KeyMaterial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pot: Option<PotConfig>,
}

impl core::fmt::Debug for ChainKeyConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChainKeyConfig")
            .field("key_id", &self.key_id)
            .field("chain", &self.chain)
            .field("keys", &self.mac_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// This node's part of a chain's proof-of-transit profile (GF(2^64 - 59)). `Debug` shows no
/// share and no secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotConfig {
    /// Public coefficients 1.. of the per-packet polynomial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poly2: Vec<u64>,
    /// One share per SF of the chain on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<PotShareConfig>,
    /// The chain's end verifies: the profile's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<u64>,
}

impl core::fmt::Debug for PotShareConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PotShareConfig").field("label", &self.label).finish()
    }
}

impl core::fmt::Debug for PotConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PotConfig")
            .field("shares", &self.shares.len())
            .field("verifier", &self.secret.is_some())
            .finish()
    }
}

/// `Debug` shows the label only.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotShareConfig {
    pub label: u32,
    pub x: u64,
    pub y: u64,
    pub lpc: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NshConfig {
    #[serde(default = "si")]
    pub si: u8,
    #[serde(default)]
    pub context: Vec<TlvConfig>,
}

fn si() -> u8 {
    255
}

/// One MD type 2 context header; `value` is text, or bytes in hex with `hex = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlvConfig {
    #[serde(default)]
    pub class: u16,
    #[serde(rename = "type")]
    pub tlv_type: u8,
    pub value: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hex: bool,
}

/// A classification rule: tried in order, first match wins, nothing matched means deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub src: String,
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default = "all_ports")]
    pub src_ports: (u16, u16),
    #[serde(default = "all_ports")]
    pub dst_ports: (u16, u16),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny: bool,
}
