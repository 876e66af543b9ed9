//! The engine's public types: verdicts, label actions, what chains, SFs and settings are
//! configured with, its errors, events and counters.
use super::*;

/// What the driver must do with a packet.
#[derive(Debug)]
pub enum Verdict {
    /// Send the labelled packet to the node `NodeId`.
    Forward(NodeId, PacketBuf),
    /// Hand the plain IP packet to the local side (the service at an egress, the client at an
    /// ingress).
    Deliver(PacketBuf),
    /// Send the packet to the external SF `SfId` over its attachment circuit.
    ToSf(SfId, PacketBuf),
    /// An SF holds the packet; it comes out of [`Node::poll_output`] later.
    Held,
    /// Drop the packet (already counted under its reason). The buffer can be reused.
    Drop(DropReason, PacketBuf),
    /// The node took what the packet said (a liveness probe, counted in [`NodeStats`]). The
    /// buffer can be reused.
    Consumed(PacketBuf),
}

/// What the top label means at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelAction {
    /// A service function instance on this node: pop, run it, continue.
    Sf(SfId),
    /// The end of chains here: pop, strip, decrypt, deliver locally.
    Deliver,
    /// Belongs to another node: decrement TTL and forward there.
    Remote(NodeId),
}

/// The job of an inbound SA at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaUse {
    /// Decrypt for delivery (egress or ingress return).
    Terminate,
    /// Decrypt for an intrusive SF, then re-encrypt with this node's own outbound SA.
    Reseal(SaIdx),
    /// Authenticate the link ESP around packets from an adjacent node.
    Link,
}

/// An NSH to push below the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NshSpec {
    /// Initial service index.
    pub si: u8,
    /// Encoded MD type 2 context headers.
    pub context: Vec<u8>,
}

/// A chain as the classifier of this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub id: ChainId,
    /// Label stack, top first; the last is the delivery label of the far end.
    pub labels: Vec<u32>,
    /// The outbound SA this node seals the chain's packets with.
    pub sa: SaIdx,
    /// With SF pools ([`Node::set_pools`]): the outbound SA by the label of the first
    /// encrypting instance the flow crosses (one SA per pair of instances); a flow whose
    /// labels name none of them is sealed with `sa`.
    pub sa_via: Vec<(u32, SaIdx)>,
    pub nsh: Option<NshSpec>,
    /// Initial TTL of every label.
    pub ttl: u8,
    /// SFC integrity, metadata encryption and proof of transit (module [`integrity`]).
    pub integrity: Option<ChainIntegrity>,
}

/// How the classifier protects a chain's NSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainIntegrity {
    /// The chain key (installed with [`Node::install_chain_key`]) to protect with.
    pub key_id: u32,
    /// Carry a proof of transit.
    pub pot: bool,
}

/// Where an SF runs.
pub enum SfAttach {
    /// Inside the node process.
    InProcess(Box<dyn ServiceFunction>),
    /// A separate SFC-unaware program reached through an attachment circuit.
    External,
}

impl core::fmt::Debug for SfAttach {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InProcess(sf) => write!(f, "InProcess({})", sf.kind()),
            Self::External => f.write_str("External"),
        }
    }
}

/// An SF instance to add to a node.
#[derive(Debug)]
pub struct SfSpec {
    pub label: u32,
    pub name: String,
    /// Intrusive SFs see the decrypted packet; non-intrusive ones only the ESP packet.
    pub intrusive: bool,
    pub key_mode: KeyMode,
    pub attach: SfAttach,
    pub cache_capacity: usize,
    /// Cached headers older than this are removed by [`Node::housekeeping`].
    pub cache_max_age: core::time::Duration,
}

impl SfSpec {
    pub fn in_process(label: u32, name: &str, intrusive: bool, sf: Box<dyn ServiceFunction>) -> Self {
        Self {
            label,
            name: name.to_owned(),
            intrusive,
            key_mode: KeyMode::Metadata,
            attach: SfAttach::InProcess(sf),
            cache_capacity: proxy::DEFAULT_CAPACITY,
            cache_max_age: DEFAULT_CACHE_MAX_AGE,
        }
    }
    pub fn external(label: u32, name: &str, intrusive: bool) -> Self {
        Self {
            label,
            name: name.to_owned(),
            intrusive,
            key_mode: KeyMode::Headers,
            attach: SfAttach::External,
            cache_capacity: proxy::DEFAULT_CAPACITY,
            cache_max_age: DEFAULT_CACHE_MAX_AGE,
        }
    }
}

/// How long a proxy keeps the headers of a packet its SF has not returned.
pub const DEFAULT_CACHE_MAX_AGE: core::time::Duration = core::time::Duration::from_secs(2);

/// Limits of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSettings {
    /// Deepest label stack accepted (RFC 3032 has no limit; deeper is a counted drop).
    pub max_label_depth: usize,
    /// Exact flow entries the classifier holds.
    pub max_flows: usize,
    /// Largest TCP MSS a SYN entering the domain may announce, so that segments still fit the
    /// underlay after labels, NSH and ESP are added (`None`: leave SYNs as they are).
    pub tcp_mss_clamp: Option<u16>,
    /// Link protection: every packet to another node leaves in link ESP under the SA of that
    /// link ([`Node::set_link_sa`]), and every packet from the domain must arrive in link ESP
    /// under an inbound [`SaUse::Link`] SA; anything else is a counted drop.
    pub link_auth: bool,
    /// SFC integrity: every labelled packet reaching an SF or the delivery label here must
    /// carry an NSH with a valid RFC 9145 MAC (see [`integrity`]).
    pub sfc_integrity: bool,
    /// Accepted NSH timestamp distance from this node's clock (RFC 9145 §7.4 Delta).
    pub nsh_delta: core::time::Duration,
    /// The largest packet a link to a peer carries (its MTU less the outer headers the driver
    /// adds): larger ones are `too_big`, and a classifier answers an inner packet that would
    /// not fit with ICMP ([`crate::pmtu`]). `None`: no limit (in-memory links).
    pub max_datagram: Option<u16>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            max_label_depth: mpls::DEFAULT_MAX_DEPTH,
            max_flows: 65536,
            tcp_mss_clamp: None,
            link_auth: false,
            sfc_integrity: false,
            nsh_delta: core::time::Duration::from_secs(2),
            max_datagram: None,
        }
    }
}

/// Why a configuration change was refused; the message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("chain {chain}: labels: {why}")]
    ChainLabels { chain: u32, why: String },
    #[error("chain {chain}: sa: outbound SA {sa} is not installed")]
    ChainSa { chain: u32, sa: u32 },
    #[error("chain {chain}: nsh: {why}")]
    ChainNsh { chain: u32, why: String },
    #[error("chain {chain}: ttl must be at least 1")]
    ChainTtl { chain: u32 },
    #[error("sf {name}: {why}")]
    Sf { name: String, why: String },
    #[error("label {label}: {why}")]
    Label { label: u32, why: String },
    #[error("sa spi {spi:#x}: {why}")]
    Sa { spi: u32, why: String },
    #[error("peer {peer}: link sa: {why}")]
    Link { peer: u32, why: String },
    #[error("chain key {key_id}: {why}")]
    ChainKey { key_id: u32, why: String },
}

/// Events the node reports to its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An outbound SA reached its soft lifetime: ask the controller for a new one.
    RekeyWanted { sa: SaIdx, spi: u32 },
    /// An ESP packet named an SPI no inbound SA has (RFC 9061 `sadb-bad-spi`).
    BadSpi { spi: u32 },
    /// An SF dropped a packet for what it carried (a DPI match, a firewall rule), and the packet
    /// named its client: the gateway's subscriber id (a pseudonym), read with the chain key.
    /// What the gateway's blocking counts (seed 004 REQ11).
    SfDrop { subscriber: u64, sf: SfId, reason: DropReason },
    /// A peer's liveness session went up or down (RFC 5880 state Up entered or left), at
    /// `unix_ms` on the wall clock ([`Node::set_wall_clock`]).
    PeerChanged { peer: NodeId, up: bool, unix_ms: u64 },
    /// The attachment circuit of the external SF `sf` started or stopped returning probes
    /// (`circuit.rs`): this node is usable for that SF, or not.
    CircuitChanged { sf: SfId, up: bool, unix_ms: u64 },
}

/// Packet counts by what happened (drops are in [`DropCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub classified: u64,
    pub forwarded: u64,
    pub delivered: u64,
    pub to_external_sf: u64,
    pub from_external_sf: u64,
    /// TCP SYNs whose MSS the classifier lowered.
    pub mss_clamped: u64,
    /// SAs whose key material was erased at their hard lifetime.
    pub sas_erased: u64,
    /// Inbound SAs removed after they were retired ([`Node::retire_inbound`]): quiet, or
    /// retired for [`RETIRE_MAX`].
    pub sas_retired: u64,
    /// Liveness probes sent to and accepted from peers.
    pub probes_tx: u64,
    pub probes_rx: u64,
    /// Well-formed probes for no session here (see [`Node::handle_from_peer`]).
    pub probes_ignored: u64,
    /// Probes sent into external SFs' attachment circuits, and come back (`circuit.rs`).
    pub circuit_probes_tx: u64,
    pub circuit_probes_rx: u64,
    /// SF pools: flows moved off an instance that went down (local repair).
    pub flows_moved: u64,
    /// SF pools: flows not pinned to their instances because the pin table was full.
    pub pins_refused: u64,
    /// ICMP fragmentation-needed / packet-too-big errors sent to the local side
    /// ([`crate::pmtu`]; each one's packet also counts as a `too_big` drop).
    pub icmp_too_big: u64,
}

/// The longest a retired inbound SA keeps accepting packets, however busy it still is.
pub const RETIRE_MAX: core::time::Duration = core::time::Duration::from_secs(10);
/// The shortest: a retired SA stays at least this long even if nothing arrives on it.
pub const RETIRE_MIN: core::time::Duration = core::time::Duration::from_secs(1);

/// What one SF instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfReport {
    pub id: SfId,
    pub label: u32,
    pub name: String,
    pub kind: &'static str,
    pub intrusive: bool,
    pub external: bool,
    pub proxy: ProxyStats,
    pub cached: usize,
    pub counters: Vec<(&'static str, u64)>,
}
