//! The node engine: the roles of one zsfc node over one packet at a time.
//!
//! Packets enter through three doors, all returning a [`Verdict`]:
//! - [`Node::handle_local`]: a plain IP packet from this node's local side (clients at an
//!   ingress, the service at an egress). Classifier: pick a chain, seal with the chain's SA,
//!   push NSH and labels.
//! - [`Node::handle_from_domain`]: a labelled packet from another node. SFF: look up the top
//!   label; forward it, or pop it and run the local SF through the proxy, or deliver.
//! - [`Node::handle_from_sf`]: a packet coming back from an external SF.
use crate::circuit::{self, CircuitLiveness, Circuits};
use crate::integrity::{self, ChainKey, ChainKeyConfig, IntegrityFailure};
use crate::liveness::{Liveness, LivenessSettings, PeerLiveness};
use crate::pmtu;
use crate::pool::{self, Pool, Pools};
use crate::proxy::{self, CacheKey, KeyMode, ProxyCache, ProxyStats};
use crate::sf::{ServiceFunction, SfContext, SfVerdict};
use crate::{ChainId, Classifier, DropCounters, DropReason, NodeId, SaIdx, SfId};
use std::collections::VecDeque;

/// Hash maps of the engine: seeded per process (keys can be attacker-influenced), faster than
/// SipHash on the small keys of the hot path.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use zsfc_esp::{InboundSa, Instant, OutboundSa, SaConfig, spi_of};
use zsfc_wire::buffer::{DEFAULT_HEADROOM, DEFAULT_TAILROOM};
use zsfc_wire::mpls::{self, LSE_LEN, Lse};
use zsfc_wire::{PacketBuf, bfd, ip, nsh, tcp};

/// IP protocol number of MPLS-in-IP (RFC 4023).
const MPLS_IN_IP: u8 = 137;

/// The outer UDP source port of a flow (RFC 7510 §3: entropy from 49152-65535, the same for
/// every packet of the flow; [`pool::flow_hash`] is the same for both directions).
fn entropy(flow_hash: u64) -> u16 {
    mpls::in_udp::entropy_port((flow_hash ^ (flow_hash >> 32)) as u32)
}

/// An IP packet from outside that carries a label stack to the domain's own tunnel endpoints
/// (MPLS-in-UDP, MPLS-in-IP): never let it in, it would arrive as if steered.
fn carries_sfc_encapsulation(t: &ip::FiveTuple) -> bool {
    t.protocol == MPLS_IN_IP || (t.protocol == ip::protocol::UDP && t.dst_port == mpls::in_udp::PORT)
}

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

struct Chain {
    /// The labels `encap` starts with (pooled SFs named by any instance's label).
    labels: Vec<u32>,
    sa_via: Vec<(u32, SaIdx)>,
    encap: Vec<u8>,
    /// Offset of the NSH Next Protocol byte in `encap`.
    nsh_next_proto: Option<usize>,
    sa: SaIdx,
    /// The chain key the NSH is protected with.
    key_id: Option<u32>,
}

struct OutboundSlot {
    sa: OutboundSa,
    rekey_reported: bool,
}

struct InboundSlot {
    sa: InboundSa,
    usage: SaUse,
    /// With SF pools, the re-seal SA by the label of the next encrypting instance the
    /// packet's labels name (`usage`'s SA when they name none of them).
    reseal_via: Vec<(u32, SaIdx)>,
    /// Set once the SA is retired: when, and its highest sequence number at the last
    /// housekeeping (unchanged between two: nothing arrives on it any more).
    retiring: Option<(Instant, u64)>,
}

struct SfSlot {
    label: u32,
    name: String,
    intrusive: bool,
    key_mode: KeyMode,
    attach: SfAttach,
    cache: ProxyCache,
    cache_max_age: core::time::Duration,
}

impl SfSlot {
    fn header_key(&self, pkt: &[u8]) -> Option<proxy::HeaderKey> {
        if self.key_mode == KeyMode::Translated { proxy::translated_key(pkt) } else { proxy::header_key(pkt) }
    }
}

const MAX_EVENTS: usize = 1024;
/// Labels of a chain that SF pools steer per flow (a chain is never deeper than the label
/// depth limit, at most 64).
const STEER_MAX: usize = 64;
const RANDOM_BLOCK: usize = 4096;

/// Reports once per SA that it reached its soft lifetime.
fn report_rekey(events: &mut VecDeque<Event>, slot: &mut OutboundSlot, sa: SaIdx, wanted: bool) {
    if wanted && !slot.rekey_reported && events.len() < MAX_EVENTS {
        slot.rekey_reported = true;
        events.push_back(Event::RekeyWanted { sa, spi: slot.sa.spi() });
    }
}

/// One node's data plane: a state machine without I/O (the sans-IO style of quinn-proto's
/// `Connection`). The driver (`zsfc_io::Drivers::run`, or `zsfc_sim` in memory) owns the
/// sockets and the clock and calls it as follows:
///
/// 1. **Configure** with [`new`](Self::new), then the `install_*`, `set_*`, `add_*` and
///    `remove_*`/`retire_*` methods, at start and between any two calls below (the agent
///    applies each controller document this way); a change holds from the next packet on.
/// 2. **Feed every packet** to the handler of where it came from, with the current time:
///    [`handle_local`](Self::handle_local) (a plain IP packet from the local side),
///    [`handle_from_peer`](Self::handle_from_peer) (a datagram or frame from a peer the
///    driver recognised by its address; [`handle_from_domain`](Self::handle_from_domain) when
///    it cannot tell), [`handle_from_sf`](Self::handle_from_sf) (a packet back from an external
///    SF's attachment circuit). Carry out the returned [`Verdict`] at once: `Forward` to the
///    peer, `Deliver` to the local side, `ToSf` into the SF's circuit; `Drop` (already counted)
///    and `Consumed` give the buffer back; `Held` means an SF keeps it.
/// 3. **Drain** after each batch: [`poll_output`](Self::poll_output) until `None` (packets SFs
///    release, liveness and circuit probes due), and [`poll_event`](Self::poll_event) until
///    `None` (rekeys wanted, bad SPIs, liveness changes, SF drops: for the agent).
/// 4. **Wait** at most until [`poll_timeout`](Self::poll_timeout), and call
///    [`housekeeping`](Self::housekeeping) about once a second (expired keys erased, stale
///    cache entries, flow pins and retired SAs dropped).
///
/// `now` never goes backwards and is the same clock for every call. One `Node` per worker
/// lane: it is `Send`, not shared. Untrusted bytes never panic it: every refusal is a
/// [`DropReason`].
pub struct Node {
    settings: NodeSettings,
    labels: HashMap<u32, LabelAction>,
    chains: HashMap<ChainId, Chain>,
    classifier: Classifier,
    outbound: Vec<Option<OutboundSlot>>,
    inbound: HashMap<u32, InboundSlot>,
    /// The outbound SA of the link to each peer (by `NodeId`), under link protection.
    links: Vec<Option<SaIdx>>,
    /// Chain keys by key id (two generations live during a rekey).
    chain_keys: HashMap<u32, ChainKey>,
    /// Unix time in nanoseconds at `Instant::ZERO` (NSH timestamps are wall-clock times).
    wall_base_ns: u64,
    /// CSPRNG bytes for per-packet nonces and POT values, refilled in blocks.
    random: Box<[u8; RANDOM_BLOCK]>,
    random_at: usize,
    sfs: Vec<SfSlot>,
    drops: DropCounters,
    stats: NodeStats,
    events: VecDeque<Event>,
    pools: Pools,
    liveness: Liveness,
    circuits: Circuits,
    icmp: pmtu::IcmpLimiter,
    /// The time of the last [`housekeeping`](Self::housekeeping).
    housekept_at: Instant,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("labels", &self.labels.len())
            .field("chains", &self.chains.len())
            .field("sfs", &self.sfs.len())
            .field("inbound_sas", &self.inbound.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Where a packet's processing goes next.
enum Step {
    /// Labels on top again: continue routing.
    Route(PacketBuf),
    Done(Verdict),
}

impl Node {
    pub fn new(settings: NodeSettings) -> Self {
        Self {
            settings,
            labels: HashMap::default(),
            chains: HashMap::default(),
            classifier: Classifier::new(settings.max_flows),
            outbound: Vec::new(),
            inbound: HashMap::default(),
            links: Vec::new(),
            chain_keys: HashMap::default(),
            wall_base_ns: 0,
            random: Box::new([0; RANDOM_BLOCK]),
            random_at: RANDOM_BLOCK,
            sfs: Vec::new(),
            drops: DropCounters::default(),
            stats: NodeStats::default(),
            events: VecDeque::new(),
            pools: Pools::new(settings.max_flows),
            liveness: Liveness::default(),
            circuits: Circuits::default(),
            icmp: pmtu::IcmpLimiter::default(),
            housekept_at: Instant::ZERO,
        }
    }

    // ---- configuration -------------------------------------------------------------------

    pub fn classifier_mut(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    pub fn set_label(&mut self, label: u32, action: LabelAction) -> Result<(), ConfigError> {
        check_label(label)?;
        if let LabelAction::Sf(id) = action
            && self.sfs.get(id.0 as usize).is_none()
        {
            return Err(ConfigError::Label { label, why: format!("SF {} does not exist", id.0) });
        }
        self.labels.insert(label, action);
        Ok(())
    }

    pub fn remove_label(&mut self, label: u32) -> Option<LabelAction> {
        self.labels.remove(&label)
    }

    pub fn install_outbound(&mut self, idx: SaIdx, cfg: &SaConfig, now: Instant) -> Result<(), ConfigError> {
        let sa = OutboundSa::new(cfg, now).map_err(|e| ConfigError::Sa { spi: cfg.spi, why: e.to_string() })?;
        let i = idx.0 as usize;
        if self.outbound.len() <= i {
            self.outbound.resize_with(i + 1, || None);
        }
        self.outbound[i] = Some(OutboundSlot { sa, rekey_reported: false });
        Ok(())
    }

    pub fn remove_outbound(&mut self, idx: SaIdx) -> bool {
        self.outbound.get_mut(idx.0 as usize).and_then(Option::take).is_some()
    }

    pub fn install_inbound(&mut self, cfg: &SaConfig, usage: SaUse, now: Instant) -> Result<(), ConfigError> {
        if self.inbound.get(&cfg.spi).is_some_and(|s| s.retiring.is_none()) {
            return Err(ConfigError::Sa { spi: cfg.spi, why: "an inbound SA with this SPI is installed".into() });
        }
        let sa = InboundSa::new(cfg, now).map_err(|e| ConfigError::Sa { spi: cfg.spi, why: e.to_string() })?;
        self.inbound.insert(cfg.spi, InboundSlot { sa, usage, reseal_via: Vec::new(), retiring: None });
        Ok(())
    }

    /// Gives the [`SaUse::Reseal`] SA `spi` one outbound SA per instance of the next encrypting
    /// SF's pool: after the SF, the packet is sealed with the SA of the instance its labels
    /// name.
    pub fn set_reseal_via(&mut self, spi: u32, via: Vec<(u32, SaIdx)>) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::Sa { spi, why };
        for &(label, sa) in &via {
            check_label(label).map_err(|e| bad(e.to_string()))?;
            if self.outbound.get(sa.0 as usize).is_none_or(Option::is_none) {
                return Err(bad(format!("reseal via label {label}: outbound SA {} is not installed", sa.0)));
            }
        }
        match self.inbound.get_mut(&spi) {
            Some(slot @ InboundSlot { usage: SaUse::Reseal(_), .. }) => {
                slot.reseal_via = via;
                Ok(())
            }
            Some(_) => Err(bad("reseal via: the SA does not re-seal".into())),
            None => Err(bad("reseal via: no inbound SA has this SPI".into())),
        }
    }

    /// Replaces the SF pools this node steers flows over (module [`pool`]).
    /// Probes `peers` for liveness (RFC 5880 sessions on the data plane, see `liveness.rs`);
    /// `None` stops probing, and every peer then counts as up. SF pools steer flows only to
    /// instances on peers that are up.
    pub fn set_liveness(&mut self, settings: Option<LivenessSettings>, peers: &[NodeId], now: Instant) {
        let mut discs = Vec::with_capacity(peers.len());
        for _ in peers {
            discs.push(self.random::<4>().map_or(1, u32::from_ne_bytes));
        }
        let mut discs = discs.into_iter();
        self.liveness.set(settings, peers, now, || discs.next().unwrap_or(1));
        self.circuits.set(settings);
    }

    /// Every probed peer's liveness.
    pub fn liveness(&self) -> impl Iterator<Item = PeerLiveness> + '_ {
        self.liveness.report()
    }

    /// Every external SF's attachment circuit, as its probes see it.
    pub fn circuits(&self) -> impl Iterator<Item = CircuitLiveness> + '_ {
        self.circuits.report()
    }

    /// The time of the last housekeeping (what reports of ages are measured against).
    pub fn housekept_at(&self) -> Instant {
        self.housekept_at
    }

    /// Flows pinned to SF pool instances.
    pub fn pinned_flows(&self) -> usize {
        self.pools.pinned()
    }

    pub fn set_pools(&mut self, pools: Vec<Pool>) -> Result<(), ConfigError> {
        self.pools.set(pools).map_err(|(label, why)| ConfigError::Label { label, why: format!("pool: {why}") })
    }

    pub fn remove_inbound(&mut self, spi: u32) -> bool {
        self.inbound.remove(&spi).is_some()
    }

    /// Retires an inbound SA instead of removing it: it keeps accepting packets still in flight
    /// (queued behind a busy hop, say) and goes at the first [`housekeeping`](Self::housekeeping)
    /// at least [`RETIRE_MIN`] after now that finds nothing arrived on it since the one before,
    /// or [`RETIRE_MAX`] after now. So the end
    /// of a make-before-break rollout loses nothing however long packets queued. `false`: no
    /// such SA, or already retired.
    pub fn retire_inbound(&mut self, spi: u32, now: Instant) -> bool {
        match self.inbound.get_mut(&spi) {
            Some(slot) if slot.retiring.is_none() => {
                slot.retiring = Some((now, slot.sa.highest_seq()));
                true
            }
            _ => false,
        }
    }

    /// Installs one generation of a chain's NSH protection (a key id is never reused).
    pub fn install_chain_key(&mut self, c: &ChainKeyConfig<'_>) -> Result<(), ConfigError> {
        let key = ChainKey::new(c).map_err(|why| ConfigError::ChainKey { key_id: c.key_id, why })?;
        self.chain_keys.insert(c.key_id, key);
        Ok(())
    }

    pub fn remove_chain_key(&mut self, key_id: u32) -> bool {
        self.chain_keys.remove(&key_id).is_some()
    }

    /// The installed chain key ids.
    pub fn chain_key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.chain_keys.keys().copied()
    }

    /// Tells the engine the wall-clock time (Unix nanoseconds) at `Instant::ZERO`, for NSH
    /// timestamps; drivers call it once when they take their clock's epoch.
    pub fn set_wall_clock(&mut self, unix_ns_at_zero: u64) {
        self.wall_base_ns = unix_ns_at_zero;
    }

    fn wall(&self, now: Instant) -> u64 {
        self.wall_base_ns.saturating_add(now.as_nanos())
    }

    /// Liveness sessions that went up or down become events (bounded: one per peer).
    fn report_liveness_changes(&mut self) {
        for (peer, up, at) in self.liveness.take_changes() {
            if self.events.len() < MAX_EVENTS {
                let unix_ms = self.wall(at) / 1_000_000;
                self.events.push_back(Event::PeerChanged { peer, up, unix_ms });
            }
        }
        for (sf, up, at) in self.circuits.take_changes() {
            if self.events.len() < MAX_EVENTS {
                let unix_ms = self.wall(at) / 1_000_000;
                self.events.push_back(Event::CircuitChanged { sf, up, unix_ms });
            }
        }
    }

    /// `N` CSPRNG bytes from the block (one AWS-LC call per 4 KiB); `None` if the system's
    /// generator failed (the packet is then dropped: a nonce must never repeat).
    fn random<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.random_at + N > RANDOM_BLOCK {
            aws_lc_rs::rand::fill(&mut self.random[..]).ok()?;
            self.random_at = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.random[self.random_at..self.random_at + N]);
        self.random_at += N;
        Some(out)
    }

    /// The classifier's per-packet NSH protection (timestamp, nonce, encrypted subscriber id,
    /// POT start, MAC).
    fn impose(&mut self, now: Instant, key_id: u32, subscriber: u64, b: &mut [u8]) -> Result<(), DropReason> {
        let loc = integrity::locate(b, self.settings.max_label_depth)?.ok_or(DropReason::SfcIntegrityMissing)?;
        let random = self.random::<20>().ok_or(DropReason::NotConfigured)?;
        let wall = self.wall(now);
        let key = self.chain_keys.get(&key_id).ok_or(DropReason::SfcKeyUnknown)?;
        integrity::impose(key, b, &loc, wall, subscriber, random).map_err(refusal)
    }

    /// SFC integrity at an SF hop or the chain's end: the MAC over labels and NSH (before the
    /// top label is popped).
    fn check_integrity(&self, now: Instant, b: &[u8]) -> Result<(), DropReason> {
        let loc = match integrity::locate(b, self.settings.max_label_depth) {
            Ok(Some(l)) => l,
            Ok(None) if self.settings.sfc_integrity => return Err(DropReason::SfcIntegrityMissing),
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let key = self.chain_keys.get(&loc.key_id).ok_or(DropReason::SfcKeyUnknown)?;
        let delta = u64::try_from(self.settings.nsh_delta.as_nanos()).unwrap_or(u64::MAX);
        integrity::verify(key, b, &loc, self.wall(now), delta).map_err(refusal)
    }

    /// Computes the NSH MAC of a labelled packet again after its labels or NSH changed, with
    /// the chain key the packet names (RFC 9145 §7.1: whoever updates the NSH re-applies the
    /// integrity protection). Only a holder of the chain key can; the proof of transit still
    /// lacks the share of any SF the packet did not cross.
    pub fn refresh_nsh_mac(&self, b: &mut [u8]) -> Result<(), DropReason> {
        let loc = integrity::locate(b, self.settings.max_label_depth)?.ok_or(DropReason::SfcIntegrityMissing)?;
        let key = self.chain_keys.get(&loc.key_id).ok_or(DropReason::SfcKeyUnknown)?;
        integrity::seal_mac(key, b, &loc);
        Ok(())
    }

    /// At the chain's end (before the delivery label is popped): the classifier's fields are
    /// as it set them (the origin-derived PktID), then the proof of transit.
    fn check_transit(&self, b: &[u8]) -> Result<(), DropReason> {
        let Some(loc) = integrity::locate(b, self.settings.max_label_depth)? else { return Ok(()) };
        let Some(key) = self.chain_keys.get(&loc.key_id) else { return Ok(()) };
        integrity::origin_verify(key, b, &loc).map_err(refusal)?;
        match &key.pot {
            Some(pot) => integrity::pot_verify(pot, b, &loc).map_err(refusal),
            None => Ok(()),
        }
    }

    /// After an SF: the SF's step of the proof of transit, then a new MAC over what the packet
    /// carries now (one label less, SI decremented).
    fn reprotect(&mut self, label: u32, b: &mut [u8]) -> Result<(), DropReason> {
        let loc = match integrity::locate(b, self.settings.max_label_depth) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let key = self.chain_keys.get(&loc.key_id).ok_or(DropReason::SfcKeyUnknown)?;
        if let Some(pot) = &key.pot {
            integrity::pot_update(pot, label, b, &loc);
        }
        integrity::seal_mac(key, b, &loc);
        Ok(())
    }

    /// Seals every packet to `peer` with the outbound SA `sa` (`None`: the link has no SA).
    /// Switching a link to a new SA is the switch step of a rekey, as for chains.
    pub fn set_link_sa(&mut self, peer: NodeId, sa: Option<SaIdx>) -> Result<(), ConfigError> {
        if let Some(sa) = sa
            && self.outbound.get(sa.0 as usize).is_none_or(Option::is_none)
        {
            return Err(ConfigError::Link { peer: peer.0, why: format!("outbound SA {} is not installed", sa.0) });
        }
        let i = peer.0 as usize;
        if self.links.len() <= i {
            self.links.resize(i + 1, None);
        }
        self.links[i] = sa;
        Ok(())
    }

    /// The outbound SA of the link to `peer`.
    pub fn link_sa(&self, peer: NodeId) -> Option<SaIdx> {
        self.links.get(peer.0 as usize).copied().flatten()
    }

    /// Adds or replaces a chain this node classifies onto.
    pub fn add_chain(&mut self, spec: ChainSpec) -> Result<(), ConfigError> {
        let chain = spec.id.0;
        let bad = |why: &str| ConfigError::ChainLabels { chain, why: why.to_owned() };
        if spec.labels.is_empty() {
            return Err(bad("at least one label (the delivery label) is needed"));
        }
        if spec.labels.len() > self.settings.max_label_depth {
            return Err(bad(&format!(
                "{} labels exceed the depth limit {}",
                spec.labels.len(),
                self.settings.max_label_depth
            )));
        }
        for &l in &spec.labels {
            check_label(l).map_err(|e| bad(&e.to_string()))?;
        }
        if spec.ttl == 0 {
            return Err(ConfigError::ChainTtl { chain });
        }
        for sa in std::iter::once(spec.sa).chain(spec.sa_via.iter().map(|v| v.1)) {
            if self.outbound.get(sa.0 as usize).is_none_or(Option::is_none) {
                return Err(ConfigError::ChainSa { chain, sa: sa.0 });
            }
        }
        let mut encap = vec![0u8; spec.labels.len() * LSE_LEN];
        mpls::emit_stack(&spec.labels, spec.ttl, &mut encap).map_err(|e| bad(&e.to_string()))?;
        let mut nsh_next_proto = None;
        let mut nsh = spec.nsh.clone();
        if let Some(i) = spec.integrity {
            match self.chain_keys.get(&i.key_id) {
                Some(k) if k.chain == chain => {}
                _ => {
                    return Err(ConfigError::ChainNsh {
                        chain,
                        why: format!("chain key {} is not installed", i.key_id),
                    });
                }
            }
            let n = nsh.get_or_insert(NshSpec { si: 255, context: Vec::new() });
            n.context.extend_from_slice(&integrity::template(i.key_id, i.pot));
        }
        if let Some(n) = &nsh {
            let r = nsh::Repr {
                ttl: 63,
                md_type: nsh::MD_TYPE_2,
                next_proto: nsh::next_proto::IPV4,
                spi: chain,
                si: n.si,
                context: &n.context,
            };
            let at = encap.len();
            encap.resize(at + r.wire_len(), 0);
            r.emit(&mut encap[at..]).map_err(|e| ConfigError::ChainNsh { chain, why: e.to_string() })?;
            nsh::Header::new_checked(&encap[at..])
                .map_err(|e| ConfigError::ChainNsh { chain, why: format!("context headers: {e}") })?;
            nsh_next_proto = Some(at + 3);
        }
        let key_id = spec.integrity.map(|i| i.key_id);
        let (labels, sa_via) = (spec.labels, spec.sa_via);
        self.chains.insert(spec.id, Chain { labels, sa_via, encap, nsh_next_proto, sa: spec.sa, key_id });
        Ok(())
    }

    /// The ids of the chains this node classifies onto.
    pub fn chain_ids(&self) -> impl Iterator<Item = ChainId> + '_ {
        self.chains.keys().copied()
    }

    /// The SPIs of the installed inbound SAs.
    /// SPIs of the installed inbound SAs, retired ones included until they go.
    pub fn inbound_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.inbound.keys().copied()
    }

    /// SPIs of the inbound SAs that are retired and not yet gone.
    pub fn retiring_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.inbound.iter().filter(|(_, s)| s.retiring.is_some()).map(|(&spi, _)| spi)
    }

    pub fn remove_chain(&mut self, id: ChainId) -> bool {
        self.chains.remove(&id).is_some()
    }

    /// Points a chain at another outbound SA (the switch step of a rekey).
    pub fn set_chain_sa(&mut self, id: ChainId, sa: SaIdx) -> Result<(), ConfigError> {
        if self.outbound.get(sa.0 as usize).is_none_or(Option::is_none) {
            return Err(ConfigError::ChainSa { chain: id.0, sa: sa.0 });
        }
        let c =
            self.chains.get_mut(&id).ok_or(ConfigError::ChainLabels { chain: id.0, why: "no such chain".into() })?;
        c.sa = sa;
        Ok(())
    }

    /// Adds an SF instance and binds its label to it.
    pub fn add_sf(&mut self, spec: SfSpec) -> Result<SfId, ConfigError> {
        let sf_err = |why: &str| ConfigError::Sf { name: spec.name.clone(), why: why.to_owned() };
        check_label(spec.label).map_err(|e| sf_err(&e.to_string()))?;
        if matches!(spec.attach, SfAttach::External) && spec.key_mode == KeyMode::Metadata {
            return Err(sf_err("key_mode: an external SF cannot carry per-packet metadata; use headers"));
        }
        if self.labels.contains_key(&spec.label) {
            return Err(sf_err(&format!("label {} is already bound", spec.label)));
        }
        let id = SfId(self.sfs.len() as u32);
        if matches!(spec.attach, SfAttach::External) {
            self.circuits.add(id);
        }
        self.sfs.push(SfSlot {
            label: spec.label,
            name: spec.name,
            intrusive: spec.intrusive,
            key_mode: spec.key_mode,
            attach: spec.attach,
            cache: ProxyCache::new(spec.cache_capacity),
            cache_max_age: spec.cache_max_age,
        });
        self.labels.insert(spec.label, LabelAction::Sf(id));
        Ok(id)
    }

    // ---- observation -----------------------------------------------------------------------

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn sf_ids(&self) -> impl Iterator<Item = SfId> + '_ {
        (0..self.sfs.len() as u32).map(SfId)
    }

    pub fn sf_report(&self, id: SfId) -> Option<SfReport> {
        let s = self.sfs.get(id.0 as usize)?;
        let mut counters = Vec::new();
        let kind = match &s.attach {
            SfAttach::InProcess(sf) => {
                sf.counters(&mut |n, v| counters.push((n, v)));
                sf.kind()
            }
            SfAttach::External => "external",
        };
        Some(SfReport {
            id,
            label: s.label,
            name: s.name.clone(),
            kind,
            intrusive: s.intrusive,
            external: matches!(s.attach, SfAttach::External),
            proxy: s.cache.stats,
            cached: s.cache.len(),
            counters,
        })
    }

    /// Packets held in proxy caches (waiting for their SF) over all SFs.
    pub fn cached_packets(&self) -> usize {
        self.sfs.iter().map(|s| s.cache.len()).sum()
    }

    // ---- packet entry points ---------------------------------------------------------------

    fn drop(&mut self, r: DropReason, buf: PacketBuf) -> Verdict {
        self.drops.add(r);
        // Only the drop path pays for the report (RFC 9061 `sadb-bad-spi`); the agent rate-limits it.
        if r == DropReason::EspBadSpi
            && self.events.len() < MAX_EVENTS
            && let Ok(spi) = spi_of(buf.as_slice())
        {
            self.events.push_back(Event::BadSpi { spi });
        }
        Verdict::Drop(r, buf)
    }

    /// Classifier: a plain IP packet from the local side.
    pub fn handle_local(&mut self, now: Instant, mut buf: PacketBuf) -> Verdict {
        let s = match ip::parse(buf.as_slice()) {
            Ok(s) => s,
            Err(e) => {
                let b = buf.as_slice();
                let encap =
                    mpls::stack_depth(b, self.settings.max_label_depth).is_ok() || nsh::Header::new_checked(b).is_ok();
                return self.drop(if encap { DropReason::EncapFromOutside } else { e.into() }, buf);
            }
        };
        if carries_sfc_encapsulation(&s.tuple) {
            return self.drop(DropReason::EncapFromOutside, buf);
        }
        let Some((chain_id, subscriber)) = self.classifier.classify_subscriber(&s.tuple) else {
            return self.drop(DropReason::NoMatchingRule, buf);
        };
        let Some(chain) = self.chains.get(&chain_id) else {
            return self.drop(DropReason::NotConfigured, buf);
        };
        if let Some(max) = self.settings.max_datagram {
            let room = pmtu::inner_room(max, chain.encap.len(), s.is_v4(), self.settings.link_auth);
            if buf.len() > room {
                return self.too_big(now, buf, room);
            }
        }
        // SF pools: each pooled SF's instance for this flow, among those on live nodes (local
        // repair, RFC 7665 §5.7), and the SA to the first encrypting one. The labels are
        // steered once they are pushed.
        let hash = pool::flow_hash(&s.tuple);
        let flow = (!self.pools.is_empty()).then_some(hash);
        let mut steer = [0u32; STEER_MAX];
        let mut sa_idx = chain.sa;
        if let Some(flow) = flow {
            let (labels, liveness) = (&self.labels, &self.liveness);
            let up = |l: u32| match labels.get(&l) {
                Some(LabelAction::Remote(peer)) => liveness.is_up(*peer),
                _ => true,
            };
            let mut via = None;
            for (i, &from) in chain.labels.iter().enumerate() {
                let Some((to, how)) = self.pools.pick(from, flow, now, up) else {
                    return self.drop(DropReason::SfUnavailable, buf);
                };
                self.stats.flows_moved += u64::from(how.moved);
                self.stats.pins_refused += u64::from(how.unpinned);
                if let Some(at) = steer.get_mut(i) {
                    *at = to;
                }
                via = via.or_else(|| chain.sa_via.iter().find(|(v, _)| *v == to).map(|v| v.1));
            }
            sa_idx = via.unwrap_or(sa_idx);
        }
        let Some(Some(slot)) = self.outbound.get_mut(sa_idx.0 as usize) else {
            return self.drop(DropReason::NotConfigured, buf);
        };
        buf.meta = Default::default();
        buf.meta.entropy = entropy(hash);
        if let Some(max) = self.settings.tcp_mss_clamp
            && s.tuple.protocol == ip::protocol::TCP
            && !s.later_fragment
            && let Some(seg) = buf.as_mut_slice().get_mut(s.l4_offset..s.total_len)
            && let Ok(mut seg) = tcp::Segment::new_checked(seg)
            && seg.clamp_mss(max).is_some_and(|old| old > max)
        {
            self.stats.mss_clamped += 1;
        }
        match slot.sa.seal(now, &mut buf) {
            Ok(sealed) => report_rekey(&mut self.events, slot, sa_idx, sealed.rekey_wanted),
            Err(e) => return self.drop(e.into(), buf),
        }
        match buf.push_front(chain.encap.len()) {
            Ok(h) => {
                h.copy_from_slice(&chain.encap);
                if flow.is_some() {
                    for (i, (lse, &from)) in h.chunks_exact_mut(LSE_LEN).zip(&chain.labels).enumerate() {
                        let to = steer.get(i).copied().unwrap_or(from);
                        if from != to
                            && let Ok(e) = Lse::read(lse)
                        {
                            lse.copy_from_slice(&Lse::new(to, e.tc(), e.bos(), e.ttl()).to_bytes());
                        }
                    }
                }
                if let Some(at) = chain.nsh_next_proto {
                    h[at] = if s.is_v4() { nsh::next_proto::IPV4 } else { nsh::next_proto::IPV6 };
                }
            }
            Err(_) => return self.drop(DropReason::NoBufferRoom, buf),
        }
        if let Some(key_id) = chain.key_id
            && let Err(r) = self.impose(now, key_id, subscriber, buf.as_mut_slice())
        {
            return self.drop(r, buf);
        }
        self.stats.classified += 1;
        self.route(now, buf, false)
    }

    /// SFF: a labelled packet (label stack first) from another node; under link protection
    /// the link ESP around it is checked and removed first.
    pub fn handle_from_domain(&mut self, now: Instant, buf: PacketBuf) -> Verdict {
        self.handle_from(now, None, buf)
    }

    /// [`handle_from_domain`](Self::handle_from_domain) for a packet the driver knows came
    /// from `peer` (by its address): liveness probes count only from a known peer.
    pub fn handle_from_peer(&mut self, now: Instant, peer: NodeId, buf: PacketBuf) -> Verdict {
        self.handle_from(now, Some(peer), buf)
    }

    fn handle_from(&mut self, now: Instant, peer: Option<NodeId>, mut buf: PacketBuf) -> Verdict {
        if self.settings.link_auth
            && let Err(r) = self.open_link(now, &mut buf)
        {
            return self.drop(r, buf);
        }
        if bfd::is_probe(buf.as_slice()) {
            return self.on_probe(now, peer, buf);
        }
        self.route(now, buf, true)
    }

    /// A liveness probe. A malformed one is a drop; a well-formed one for no session here
    /// (the peer is not probed, or one of the two restarted) is discarded as RFC 5880 §6.8.6
    /// says, counted in `probes_ignored`: it is the normal start of a session.
    fn on_probe(&mut self, now: Instant, peer: Option<NodeId>, buf: PacketBuf) -> Verdict {
        let Ok(c) = bfd::Control::parse_probe(buf.as_slice()) else {
            return self.drop(DropReason::ProbeRefused, buf);
        };
        if peer.is_some_and(|p| self.liveness.on_probe(now, p, &c)) {
            self.stats.probes_rx += 1;
            self.report_liveness_changes();
        } else {
            self.stats.probes_ignored += 1;
        }
        Verdict::Consumed(buf)
    }

    /// Cheap checks first: the SPI must name a link SA of this node before any crypto runs.
    fn open_link(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<(), DropReason> {
        let spi = match zsfc_wire::esp::Packet::new_checked(buf.as_slice()) {
            Ok(p) => p.spi(),
            Err(_) => return Err(DropReason::LinkUnauthenticated),
        };
        let Some(InboundSlot { sa, usage: SaUse::Link, .. }) = self.inbound.get_mut(&spi) else {
            return Err(DropReason::LinkUnauthenticated);
        };
        use zsfc_esp::OpenError as E;
        match sa.open_link(now, buf) {
            Ok(o) if o.next_header == MPLS_IN_IP => Ok(()),
            Ok(_) => Err(DropReason::Unsupported),
            Err(E::Replay(_)) => Err(DropReason::LinkReplay),
            Err(E::Dummy) => Err(DropReason::EspDummy),
            Err(E::Auth | E::Trailer) => Err(DropReason::LinkAuthFailed),
            Err(E::Expired(_)) => Err(DropReason::SaExpired),
            Err(_) => Err(DropReason::LinkUnauthenticated),
        }
    }

    /// The last step before a packet leaves for `peer`: link ESP around it when the link has
    /// an SA; without one, under link protection, the packet is dropped (fail closed).
    fn send_to_peer(&mut self, now: Instant, peer: NodeId, mut buf: PacketBuf) -> Verdict {
        let Some(idx) = self.link_sa(peer) else {
            if self.settings.link_auth {
                return self.drop(DropReason::LinkNoSa, buf);
            }
            return self.forward(peer, buf);
        };
        let Some(Some(slot)) = self.outbound.get_mut(idx.0 as usize) else {
            return self.drop(DropReason::LinkNoSa, buf);
        };
        match slot.sa.seal_link(now, &mut buf, MPLS_IN_IP) {
            Ok(sealed) => report_rekey(&mut self.events, slot, idx, sealed.rekey_wanted),
            Err(e) => return self.drop(e.into(), buf),
        }
        self.forward(peer, buf)
    }

    /// The last step to a peer: nothing larger than the link carries leaves (no IP fragments).
    fn forward(&mut self, peer: NodeId, buf: PacketBuf) -> Verdict {
        if self.settings.max_datagram.is_some_and(|max| buf.len() > usize::from(max)) {
            return self.drop(DropReason::TooBig, buf);
        }
        self.stats.forwarded += 1;
        Verdict::Forward(peer, buf)
    }

    /// A classifier's inner packet that would not fit its link once encapsulated: dropped, and
    /// the sender told the MTU that fits (`room`), as far as the rate limit allows.
    fn too_big(&mut self, now: Instant, mut buf: PacketBuf, room: usize) -> Verdict {
        self.drops.add(DropReason::TooBig);
        let mtu = u16::try_from(room).unwrap_or(u16::MAX);
        if let Some(err) = pmtu::too_big(buf.as_slice(), mtu)
            && self.icmp.allow(now)
            && buf.set(&err, DEFAULT_HEADROOM).is_ok()
        {
            self.stats.icmp_too_big += 1;
            return Verdict::Deliver(buf);
        }
        Verdict::Drop(DropReason::TooBig, buf)
    }

    /// Proxy TX: a packet coming back from the external SF `sf`.
    pub fn handle_from_sf(&mut self, now: Instant, sf: SfId, buf: PacketBuf) -> Verdict {
        if circuit::is_probe(buf.as_slice()) {
            if !self.circuits.on_return(now, sf, buf.as_slice()) {
                return self.drop(DropReason::ProbeRefused, buf);
            }
            self.stats.circuit_probes_rx += 1;
            self.report_liveness_changes();
            return Verdict::Consumed(buf);
        }
        self.stats.from_external_sf += 1;
        // What comes back from the circuit is a new buffer: the flow's entropy again, from the
        // packet the SF returned (a flow keeps its source port across the SF).
        let mut buf = buf;
        if let Ok(s) = ip::parse(buf.as_slice()) {
            buf.meta.entropy = entropy(pool::flow_hash(&s.tuple));
        }
        match self.sf_tx(now, sf, buf) {
            Step::Route(b) => {
                self.circuits.on_traffic(now, sf);
                self.route(now, b, false)
            }
            Step::Done(v) => v,
        }
    }

    /// Packets that SFs held (delay) and release at `now`, and liveness probes due; call until
    /// `None`.
    pub fn poll_output(&mut self, now: Instant) -> Option<Verdict> {
        for i in 0..self.sfs.len() {
            let released = match self.sfs.get_mut(i).map(|s| &mut s.attach) {
                Some(SfAttach::InProcess(sf)) => sf.poll_release(now),
                _ => None,
            };
            if let Some(b) = released {
                return Some(match self.sf_tx(now, SfId(i as u32), b) {
                    Step::Route(b) => self.route(now, b, false),
                    Step::Done(v) => v,
                });
            }
        }
        // A circuit also comes up on the proxy's own packets (`handle_from_sf`): report that too.
        if self.liveness.expire(now) + self.circuits.expire(now) > 0 || self.circuits.has_changes() {
            self.report_liveness_changes();
        }
        if let Some(v) = self.poll_circuit_probe(now) {
            return Some(v);
        }
        if self.liveness.next_due().is_none_or(|t| t > now) {
            return None;
        }
        let jitter = self.random::<1>().map_or(255, |[j]| j);
        while let Some((peer, c)) = self.liveness.due(now, jitter) {
            // Under link protection a probe waits for the link's SA (it is not a drop).
            if self.settings.link_auth && self.link_sa(peer).is_none() {
                continue;
            }
            let mut buf = PacketBuf::new(DEFAULT_HEADROOM + bfd::PROBE_LEN + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            let mut probe = [0u8; bfd::PROBE_LEN];
            c.emit_probe(&mut probe);
            match buf.push_back(bfd::PROBE_LEN) {
                Ok(b) => b.copy_from_slice(&probe),
                Err(_) => return Some(self.drop(DropReason::NoBufferRoom, buf)),
            }
            self.stats.probes_tx += 1;
            return Some(self.send_to_peer(now, peer, buf));
        }
        None
    }

    /// The next probe due into an external SF's attachment circuit.
    fn poll_circuit_probe(&mut self, now: Instant) -> Option<Verdict> {
        if self.circuits.next_due().is_none_or(|t| t > now) {
            return None;
        }
        let Some(nonce) = self.random::<16>() else {
            // No randomness, no probe (a guessable nonce would let the SF's traffic forge one).
            return None;
        };
        let (sf, probe) = self.circuits.due(now, nonce)?;
        let mut buf = PacketBuf::new(DEFAULT_HEADROOM + circuit::PROBE_LEN + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
        match buf.push_back(circuit::PROBE_LEN) {
            Ok(b) => b.copy_from_slice(&probe),
            Err(_) => return Some(self.drop(DropReason::NoBufferRoom, buf)),
        }
        self.stats.circuit_probes_tx += 1;
        Some(Verdict::ToSf(sf, buf))
    }

    /// The next time [`poll_output`](Self::poll_output) has something to release.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sfs
            .iter()
            .filter_map(|s| match &s.attach {
                SfAttach::InProcess(sf) => sf.poll_timeout(),
                SfAttach::External => None,
            })
            .chain(self.liveness.next_due())
            .chain(self.circuits.next_due())
            .min()
    }

    /// Periodic upkeep: forgets cached headers of packets their SF never returned, and the key
    /// material of every SA past its hard lifetime (forward secrecy: an expired key is gone
    /// from the node, not just unused; the SA stays as a tombstone that refuses packets, counted
    /// as `sa_expired`, until the controller removes it).
    pub fn housekeeping(&mut self, now: Instant) -> usize {
        self.housekept_at = now;
        self.pools.expire(now);
        for slot in self.outbound.iter_mut().flatten() {
            if !slot.sa.is_erased() && slot.sa.hard_expired(now).is_some() {
                slot.sa.erase();
                self.stats.sas_erased += 1;
            }
        }
        for slot in self.inbound.values_mut() {
            if !slot.sa.is_erased() && slot.sa.hard_expired(now).is_some() {
                slot.sa.erase();
                self.stats.sas_erased += 1;
            }
        }
        let before = self.inbound.len();
        self.inbound.retain(|_, slot| match &mut slot.retiring {
            None => true,
            Some((since, seen)) => {
                let highest = slot.sa.highest_seq();
                let age = now.saturating_since(*since);
                let keep = (highest != *seen || age < RETIRE_MIN) && age < RETIRE_MAX;
                *seen = highest;
                keep
            }
        });
        self.stats.sas_retired += (before - self.inbound.len()) as u64;
        self.sfs.iter_mut().map(|s| s.cache.expire(now, s.cache_max_age)).sum()
    }

    /// SPIs of the SAs (outbound and inbound) that still hold key material.
    pub fn keyed_spis(&self) -> Vec<u32> {
        let out = self.outbound.iter().flatten().filter(|s| !s.sa.is_erased()).map(|s| s.sa.spi());
        out.chain(self.inbound.values().filter(|s| !s.sa.is_erased()).map(|s| s.sa.spi())).collect()
    }

    /// The SFF loop: act on top labels until the packet leaves this node.
    fn route(&mut self, now: Instant, mut buf: PacketBuf, mut arrived: bool) -> Verdict {
        // Each turn pops a label or returns, so the stack depth bounds the loop.
        for _ in 0..=self.settings.max_label_depth {
            let depth = match mpls::stack_depth(buf.as_slice(), self.settings.max_label_depth) {
                Ok(d) => d,
                Err(e) => return self.drop(e.into(), buf),
            };
            let Ok(top) = Lse::read(buf.as_slice()) else {
                return self.drop(DropReason::Truncated, buf);
            };
            let Some(&action) = self.labels.get(&top.label()) else {
                return self.drop(DropReason::UnknownLabel, buf);
            };
            match action {
                LabelAction::Remote(peer) => {
                    if arrived {
                        // A transit hop: RFC 3032 §2.4.1, decrement and drop at zero.
                        if top.ttl() <= 1 {
                            return self.drop(DropReason::TtlExpired, buf);
                        }
                        buf.as_mut_slice()[..LSE_LEN].copy_from_slice(&top.with_ttl(top.ttl() - 1).to_bytes());
                    }
                    return self.send_to_peer(now, peer, buf);
                }
                LabelAction::Sf(id) => {
                    if depth == 1 {
                        return self.drop(DropReason::MissingServiceLabel, buf);
                    }
                    if arrived && let Err(r) = self.check_integrity(now, buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(r) = pop_label(&mut buf, top) {
                        return self.drop(r, buf);
                    }
                    match self.sf_rx(now, id, buf) {
                        Step::Route(b) => buf = b,
                        Step::Done(v) => return v,
                    }
                    arrived = false;
                }
                LabelAction::Deliver => {
                    if depth != 1 {
                        return self.drop(DropReason::LabelsBelowService, buf);
                    }
                    if arrived && let Err(r) = self.check_integrity(now, buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(r) = self.check_transit(buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(e) = buf.pull_front(LSE_LEN) {
                        return self.drop(e.into(), buf);
                    }
                    return self.deliver(now, buf);
                }
            }
        }
        self.drop(DropReason::LabelStackTooDeep, buf)
    }

    /// Egress: strip the NSH, decrypt with a terminating SA, deliver.
    fn deliver(&mut self, now: Instant, mut buf: PacketBuf) -> Verdict {
        if buf.as_slice().first().is_some_and(|&b| nsh::looks_like_nsh(b)) {
            let len = match nsh::Header::new_checked(buf.as_slice()) {
                Ok(h) => h.len(),
                Err(e) => return self.drop(e.into(), buf),
            };
            if let Err(e) = buf.pull_front(len) {
                return self.drop(e.into(), buf);
            }
        }
        let spi = match spi_of(buf.as_slice()) {
            Ok(s) => s,
            Err(e) => return self.drop(e.into(), buf),
        };
        let Some(slot) = self.inbound.get_mut(&spi) else {
            return self.drop(DropReason::EspBadSpi, buf);
        };
        if slot.usage != SaUse::Terminate {
            return self.drop(DropReason::SaRoleMismatch, buf);
        }
        if let Err(e) = slot.sa.open(now, &mut buf) {
            return self.drop(e.into(), buf);
        }
        buf.meta = Default::default();
        self.stats.delivered += 1;
        Verdict::Deliver(buf)
    }

    /// Proxy RX: cache what is left of the encapsulation, decrypt for an intrusive SF, run an
    /// in-process SF or hand the packet to an external one.
    fn sf_rx(&mut self, now: Instant, id: SfId, mut buf: PacketBuf) -> Step {
        let max_depth = self.settings.max_label_depth;
        let Some(slot) = self.sfs.get_mut(id.0 as usize) else {
            return Step::Done(self.drop(DropReason::NotConfigured, buf));
        };
        let (encap_len, has_nsh) = match proxy::encap_len(buf.as_slice(), max_depth) {
            Ok(v) => v,
            Err(e) => {
                slot.cache.stats.rx_ignored += 1;
                return Step::Done(self.drop(e.into(), buf));
            }
        };
        // Only with SF pools may the re-seal SA depend on the labels.
        let pooled = slot.intrusive && !self.pools.is_empty();
        let via = if pooled { reseal_via(&self.inbound, buf.as_slice(), encap_len) } else { None };
        let ticket = match slot.cache.stage(&buf.as_slice()[..encap_len]) {
            Ok(t) => t,
            Err(_) => return Step::Done(self.drop(DropReason::NoBufferRoom, buf)),
        };
        if let Err(e) = buf.pull_front(encap_len) {
            slot.cache.abort(ticket);
            return Step::Done(self.drop(e.into(), buf));
        }
        let mut reseal = None;
        if slot.intrusive {
            let opened = match spi_of(buf.as_slice()) {
                Err(e) => Err(e.into()),
                Ok(spi) => match self.inbound.get_mut(&spi) {
                    None => Err(DropReason::EspBadSpi),
                    Some(InboundSlot { usage: SaUse::Terminate | SaUse::Link, .. }) => Err(DropReason::SaRoleMismatch),
                    Some(InboundSlot { sa, usage: SaUse::Reseal(out), .. }) => {
                        reseal = Some(via.unwrap_or(*out));
                        sa.open(now, &mut buf).map_err(DropReason::from)
                    }
                },
            };
            if let Err(r) = opened {
                slot.cache.abort(ticket);
                return Step::Done(self.drop(r, buf));
            }
        }
        let key = match slot.key_mode {
            KeyMode::Metadata => {
                let k = slot.cache.next_meta_key();
                buf.meta.proxy_key = Some(k);
                CacheKey::Meta(k)
            }
            KeyMode::Headers | KeyMode::Translated => match slot.header_key(buf.as_slice()) {
                Some(k) => CacheKey::Header(k),
                None => {
                    slot.cache.abort(ticket);
                    slot.cache.stats.rx_ignored += 1;
                    return Step::Done(self.drop(DropReason::ProxyRxIgnored, buf));
                }
            },
        };
        if slot.cache.commit(ticket, key, reseal, now).is_err() {
            return Step::Done(self.drop(DropReason::ProxyCollision, buf));
        }
        let verdict = match &mut slot.attach {
            SfAttach::External => {
                self.stats.to_external_sf += 1;
                return Step::Done(Verdict::ToSf(id, buf));
            }
            SfAttach::InProcess(sf) => {
                let hdr = if has_nsh { slot.cache.peek(&key).unwrap_or(&[]) } else { &[] };
                let subscriber =
                    if sf.wants_subscriber() { subscriber_in(&self.chain_keys, hdr, max_depth) } else { None };
                sf.process(&SfContext { now, label: slot.label, metadata: nsh_context(hdr), subscriber }, buf)
            }
        };
        match verdict {
            SfVerdict::Pass(b) => self.sf_tx(now, id, b),
            SfVerdict::Drop(b, r) => {
                // Only the drop path reads the subscriber id (bounded like every event).
                if matches!(r, DropReason::SfDpiMatch | DropReason::SfFirewallDeny)
                    && has_nsh
                    && self.events.len() < MAX_EVENTS
                {
                    let hdr = slot.cache.peek(&key).unwrap_or(&[]);
                    let subscriber = subscriber_in(&self.chain_keys, hdr, max_depth).filter(|&s| s != 0);
                    if let Some(subscriber) = subscriber {
                        self.events.push_back(Event::SfDrop { subscriber, sf: id, reason: r });
                    }
                }
                slot.cache.forget(&key);
                Step::Done(self.drop(r, b))
            }
            SfVerdict::Held => Step::Done(Verdict::Held),
        }
    }

    /// Proxy TX: find the cached encapsulation, re-seal with this node's SA for an intrusive
    /// SF, restore the headers, decrement the NSH service index on the SF's behalf and the TTL
    /// as the SFF that forwards the packet on.
    fn sf_tx(&mut self, now: Instant, id: SfId, mut buf: PacketBuf) -> Step {
        let Some(slot) = self.sfs.get_mut(id.0 as usize) else {
            return Step::Done(self.drop(DropReason::NotConfigured, buf));
        };
        let key = match slot.key_mode {
            KeyMode::Metadata => buf.meta.proxy_key.take().map(CacheKey::Meta),
            KeyMode::Headers | KeyMode::Translated => slot.header_key(buf.as_slice()).map(CacheKey::Header),
        };
        let Some(key) = key else {
            slot.cache.stats.tx_ignored += 1;
            return Step::Done(self.drop(DropReason::ProxyTxIgnored, buf));
        };
        let outbound = &mut self.outbound;
        let events = &mut self.events;
        let max_depth = self.settings.max_label_depth;
        let restored = slot.cache.take_with(&key, |hdr, reseal| {
            if let Some(idx) = reseal {
                let Some(Some(out)) = outbound.get_mut(idx.0 as usize) else {
                    return Err(DropReason::NotConfigured);
                };
                let sealed = out.sa.seal(now, &mut buf).map_err(DropReason::from)?;
                report_rekey(events, out, idx, sealed.rekey_wanted);
            }
            let h = buf.push_front(hdr.len()).map_err(|_| DropReason::NoBufferRoom)?;
            h.copy_from_slice(hdr);
            if let Some(at) = mpls::stack_depth(hdr, max_depth).ok().map(|d| d * LSE_LEN)
                && hdr.get(at).is_some_and(|b| nsh::looks_like_nsh(*b))
                && let Some(base) = h.get_mut(at..at + 8)
            {
                // RFC 8300 §2.3: the proxy decrements the SI on behalf of an SFC-unaware SF.
                base[7] = base[7].saturating_sub(1);
                // RFC 8300 §2.2: the SFF decrements the TTL before it forwards (0 becomes 63)
                // and does not forward a packet whose TTL is then 0. The MAC leaves it out.
                let ttl = ((base[0] & 0x0f) << 2) | (base[1] >> 6);
                let ttl = if ttl == 0 { 63 } else { ttl - 1 };
                if ttl == 0 {
                    return Err(DropReason::NshTtlExpired);
                }
                base[0] = (base[0] & 0xf0) | (ttl >> 2);
                base[1] = (base[1] & 0x3f) | ((ttl & 3) << 6);
            }
            Ok(())
        });
        let label = slot.label;
        match restored {
            None => Step::Done(self.drop(DropReason::ProxyNotCached, buf)),
            Some(Err(r)) => Step::Done(self.drop(r, buf)),
            Some(Ok(())) => match self.reprotect(label, buf.as_mut_slice()) {
                Ok(()) => Step::Route(buf),
                Err(r) => Step::Done(self.drop(r, buf)),
            },
        }
    }
}

/// The re-seal SA that the labels left in `b[..encap_len]` call for, when the inbound SA
/// after them re-seals per pool instance ([`Node::set_reseal_via`]).
fn reseal_via(inbound: &HashMap<u32, InboundSlot>, b: &[u8], encap_len: usize) -> Option<SaIdx> {
    let spi = spi_of(b.get(encap_len..)?).ok()?;
    let via = &inbound.get(&spi)?.reseal_via;
    if via.is_empty() {
        return None;
    }
    let labels = b.get(..encap_len)?;
    let mut more = true;
    mpls::entries(labels)
        .take_while(|e| std::mem::replace(&mut more, !e.bos()))
        .find_map(|e| via.iter().find(|(l, _)| *l == e.label()).map(|v| v.1))
}

fn refusal(r: IntegrityFailure) -> DropReason {
    match r {
        IntegrityFailure::Missing => DropReason::SfcIntegrityMissing,
        IntegrityFailure::UnknownKey => DropReason::SfcKeyUnknown,
        IntegrityFailure::Stale => DropReason::SfcStale,
        IntegrityFailure::BadMac => DropReason::SfcMacFailed,
        IntegrityFailure::PotFailed => DropReason::PotFailed,
        IntegrityFailure::OriginMismatch => DropReason::SfcOriginFailed,
    }
}

fn check_label(label: u32) -> Result<(), ConfigError> {
    if !(mpls::FIRST_UNRESERVED_LABEL..=mpls::LABEL_MAX).contains(&label) {
        return Err(ConfigError::Label {
            label,
            why: format!("must be in {}..={}", mpls::FIRST_UNRESERVED_LABEL, mpls::LABEL_MAX),
        });
    }
    Ok(())
}

/// Pops the top label `top`, carrying its TTL minus one into the new top entry (RFC 3032
/// §2.4.1 uniform model: the minimum of the two).
fn pop_label(buf: &mut PacketBuf, top: Lse) -> Result<(), DropReason> {
    if top.ttl() <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let b = buf.as_mut_slice();
    let next = Lse::read(b.get(LSE_LEN..).unwrap_or(&[]))?;
    let ttl = next.ttl().min(top.ttl() - 1);
    if let Some(n) = b.get_mut(LSE_LEN..2 * LSE_LEN) {
        n.copy_from_slice(&next.with_ttl(ttl).to_bytes());
    }
    buf.pull_front(LSE_LEN)?;
    Ok(())
}

/// The NSH context headers inside cached encapsulation bytes.
fn nsh_context(hdr: &[u8]) -> &[u8] {
    let at = mpls::stack_depth(hdr, mpls::DEFAULT_MAX_DEPTH).map_or(hdr.len(), |d| d * LSE_LEN);
    let rest = hdr.get(at..).unwrap_or(&[]);
    match nsh::Header::new_checked(rest) {
        Ok(h) => rest.get(nsh::BASE_LEN..h.len()).unwrap_or(&[]),
        Err(_) => &[],
    }
}

/// The subscriber id in the cached encapsulation `hdr`, for a node that holds the chain's
/// encryption key.
fn subscriber_in(keys: &HashMap<u32, ChainKey>, hdr: &[u8], max_depth: usize) -> Option<u64> {
    let l = integrity::locate(hdr, max_depth).ok().flatten()?;
    integrity::subscriber(keys.get(&l.key_id)?, hdr, &l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zsfc_esp::{Algorithm, SaKey};

    fn node_with_sa() -> Node {
        let mut n = Node::new(NodeSettings { max_label_depth: 4, ..NodeSettings::default() });
        let sa = SaConfig::new(0x77, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        n.install_outbound(SaIdx(0), &sa, Instant::ZERO).unwrap();
        n
    }

    fn chain(labels: Vec<u32>, sa: u32) -> ChainSpec {
        ChainSpec { id: ChainId(7), labels, sa: SaIdx(sa), sa_via: Vec::new(), nsh: None, ttl: 64, integrity: None }
    }

    #[test]
    fn refuses_bad_chains_naming_the_field() {
        let mut n = node_with_sa();
        let e = n.add_chain(chain(vec![20, 21, 22, 23, 24], 0)).unwrap_err();
        assert_eq!(e.to_string(), "chain 7: labels: 5 labels exceed the depth limit 4");
        let e = n.add_chain(chain(vec![3], 0)).unwrap_err();
        assert!(e.to_string().starts_with("chain 7: labels: label 3: must be in 16..="), "{e}");
        assert_eq!(
            n.add_chain(chain(vec![20], 5)).unwrap_err().to_string(),
            "chain 7: sa: outbound SA 5 is not installed"
        );
        assert!(n.add_chain(chain(vec![], 0)).unwrap_err().to_string().contains("at least one label"));
        let bad_nsh = ChainSpec { nsh: Some(NshSpec { si: 1, context: vec![0, 0, 1, 9] }), ..chain(vec![20], 0) };
        assert!(n.add_chain(bad_nsh).unwrap_err().to_string().starts_with("chain 7: nsh:"));
        n.add_chain(chain(vec![20, 21], 0)).unwrap();
    }

    #[test]
    fn refuses_bad_sfs_labels_and_duplicate_spis() {
        let mut n = node_with_sa();
        let ext = SfSpec { key_mode: KeyMode::Metadata, ..SfSpec::external(100, "dpi", true) };
        assert!(n.add_sf(ext).unwrap_err().to_string().starts_with("sf dpi: key_mode:"));
        n.add_sf(SfSpec::external(100, "dpi", true)).unwrap();
        assert!(
            n.add_sf(SfSpec::external(100, "dpi2", true))
                .unwrap_err()
                .to_string()
                .contains("label 100 is already bound")
        );
        assert!(n.set_label(101, LabelAction::Sf(SfId(9))).is_err());
        let sa = SaConfig::new(0x88, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        n.install_inbound(&sa, SaUse::Terminate, Instant::ZERO).unwrap();
        assert!(
            n.install_inbound(&sa, SaUse::Terminate, Instant::ZERO)
                .unwrap_err()
                .to_string()
                .starts_with("sa spi 0x88:")
        );
    }

    /// Node 0 classifies onto label 500 of node 1, which delivers; the link 0 → 1 is protected.
    fn linked_pair() -> (Node, Node) {
        let settings = NodeSettings { link_auth: true, ..NodeSettings::default() };
        let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        let link = SaConfig::new(0x2000, SaKey::generate(Algorithm::Aes128Gmac).unwrap());
        let mut a = Node::new(settings);
        a.install_outbound(SaIdx(0), &payload, Instant::ZERO).unwrap();
        a.install_outbound(SaIdx(1), &link, Instant::ZERO).unwrap();
        a.set_label(500, LabelAction::Remote(NodeId(1))).unwrap();
        a.add_chain(chain(vec![500], 0)).unwrap();
        a.classifier_mut().push_rule(crate::Rule::between(
            crate::Prefix::any_v4(),
            crate::Prefix::any_v4(),
            crate::Action::Chain(ChainId(7)),
        ));
        a.set_link_sa(NodeId(1), Some(SaIdx(1))).unwrap();
        let mut b = Node::new(settings);
        b.install_inbound(&payload, SaUse::Terminate, Instant::ZERO).unwrap();
        b.install_inbound(&link, SaUse::Link, Instant::ZERO).unwrap();
        b.set_label(500, LabelAction::Deliver).unwrap();
        (a, b)
    }

    fn udp_packet() -> PacketBuf {
        let mut p = vec![0u8; 28 + 10];
        zsfc_wire::ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 17, 18).emit(&mut p).unwrap();
        PacketBuf::from_slice(&p)
    }

    fn forwarded(v: Verdict) -> PacketBuf {
        match v {
            Verdict::Forward(NodeId(1), b) => b,
            other => panic!("not forwarded to node 1: {other:?}"),
        }
    }

    #[test]
    fn link_protection_refuses_replayed_forged_and_plain_packets() {
        let (mut a, mut b) = linked_pair();
        let sent = forwarded(a.handle_local(Instant::ZERO, udp_packet()));
        assert_eq!(&sent.as_slice()[..4], &0x2000u32.to_be_bytes(), "leaves in link ESP");
        let copy = sent.as_slice().to_vec();
        assert!(matches!(b.handle_from_domain(Instant::ZERO, sent), Verdict::Deliver(_)));
        let again = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&copy));
        assert!(matches!(again, Verdict::Drop(DropReason::LinkReplay, _)), "{again:?}");

        let mut forged = forwarded(a.handle_local(Instant::ZERO, udp_packet())).as_slice().to_vec();
        forged[20] ^= 1;
        let v = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&forged));
        assert!(matches!(v, Verdict::Drop(DropReason::LinkAuthFailed, _)), "{v:?}");

        // The inner labelled packet without its link ESP, as an injector would send it.
        let plain = copy[16..copy.len() - 16 - 2].to_vec();
        let v = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&plain));
        assert!(matches!(v, Verdict::Drop(DropReason::LinkUnauthenticated, _)), "{v:?}");
        assert_eq!(b.drops().total(), 3);
        assert_eq!(b.stats().delivered, 1);
    }

    #[test]
    fn without_a_link_sa_nothing_leaves_under_link_protection() {
        let (mut a, _) = linked_pair();
        a.set_link_sa(NodeId(1), None).unwrap();
        let v = a.handle_local(Instant::ZERO, udp_packet());
        assert!(matches!(v, Verdict::Drop(DropReason::LinkNoSa, _)), "{v:?}");
        assert!(a.set_link_sa(NodeId(1), Some(SaIdx(9))).unwrap_err().to_string().starts_with("peer 1: link sa:"));
    }

    #[test]
    fn key_material_is_erased_at_the_hard_lifetime_and_the_sa_then_refuses_packets() {
        let (mut a, mut b) = linked_pair();
        let five_s = zsfc_esp::Limits { packets: u64::MAX, bytes: u64::MAX, time_ns: 5_000_000_000 };
        let lifetimes = zsfc_esp::Lifetimes { soft: zsfc_esp::Limits::UNLIMITED, hard: five_s };
        let sa = SaConfig { lifetimes, ..SaConfig::new(0x3000, SaKey::generate(Algorithm::Aes128Gcm).unwrap()) };
        a.install_outbound(SaIdx(2), &sa, Instant::ZERO).unwrap();
        a.set_chain_sa(ChainId(7), SaIdx(2)).unwrap();
        b.install_inbound(&sa, SaUse::Terminate, Instant::ZERO).unwrap();
        let sent = forwarded(a.handle_local(Instant::from_secs(1), udp_packet()));
        assert!(matches!(b.handle_from_domain(Instant::from_secs(1), sent), Verdict::Deliver(_)));
        assert!(a.keyed_spis().contains(&0x3000) && b.keyed_spis().contains(&0x3000));

        let later = Instant::from_secs(6);
        a.housekeeping(later);
        b.housekeeping(later);
        assert!(!a.keyed_spis().contains(&0x3000), "the sender still holds the key");
        assert!(!b.keyed_spis().contains(&0x3000), "the receiver still holds the key");
        assert_eq!((a.stats().sas_erased, b.stats().sas_erased), (1, 1));
        // The SAs without limits (the link's, the other payload SA) keep theirs.
        assert!(a.keyed_spis().contains(&0x2000) && b.keyed_spis().contains(&0x1000));
        let v = a.handle_local(later, udp_packet());
        assert!(matches!(v, Verdict::Drop(DropReason::SaExpired, _)), "{v:?}");
    }

    #[test]
    fn a_retired_inbound_sa_accepts_late_packets_until_it_goes_quiet() {
        let (mut a, mut b) = linked_pair();
        let t = |ms| Instant::from_millis(ms);
        // Packets sealed before the switch, still queued somewhere when the SA is retired.
        let late: Vec<PacketBuf> = (0..3).map(|_| forwarded(a.handle_local(t(0), udp_packet()))).collect();
        assert!(b.retire_inbound(0x1000, t(10)));
        assert!(!b.retire_inbound(0x1000, t(10)), "retired once");
        assert!(!b.retire_inbound(0x9999, t(10)), "no such SA");
        assert_eq!(b.retiring_spis().collect::<Vec<_>>(), vec![0x1000]);
        let mut late = late.into_iter();
        assert!(matches!(b.handle_from_domain(t(500), late.next().unwrap()), Verdict::Deliver(_)));
        // Busy since the retirement: stays, however short the gap.
        b.housekeeping(t(1500));
        assert!(b.inbound_spis().any(|s| s == 0x1000));
        assert!(matches!(b.handle_from_domain(t(2000), late.next().unwrap()), Verdict::Deliver(_)));
        b.housekeeping(t(2500));
        assert!(b.inbound_spis().any(|s| s == 0x1000), "a packet arrived since the last look");
        // Quiet for a whole housekeeping interval: gone, and what still arrives is refused.
        b.housekeeping(t(3500));
        assert!(!b.inbound_spis().any(|s| s == 0x1000));
        assert_eq!(b.stats().sas_retired, 1);
        let v = b.handle_from_domain(t(3600), late.next().unwrap());
        assert!(matches!(v, Verdict::Drop(DropReason::EspBadSpi, _)), "{v:?}");
        // The link SA was never retired; a quiet retired SA still waits RETIRE_MIN, a busy one
        // no longer than RETIRE_MAX.
        assert!(b.inbound_spis().any(|s| s == 0x2000));
        assert!(b.retire_inbound(0x2000, t(4000)));
        b.housekeeping(t(4500));
        assert!(b.inbound_spis().any(|s| s == 0x2000), "younger than RETIRE_MIN");
        b.housekeeping(t(4000) + RETIRE_MIN);
        assert!(!b.inbound_spis().any(|s| s == 0x2000));
        let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        b.install_inbound(&payload, SaUse::Terminate, t(5000)).unwrap();
        assert!(b.retire_inbound(0x1000, t(5000)));
        // A retired SPI may be installed again (a restarted controller's first generation).
        b.install_inbound(&payload, SaUse::Terminate, t(5000)).unwrap();
        assert_eq!(b.retiring_spis().count(), 0);
    }

    /// A fake SF (unit test only) that records the subscriber id it is given.
    struct FakeSubscriberReader(std::sync::Arc<std::sync::Mutex<Vec<Option<u64>>>>);

    impl ServiceFunction for FakeSubscriberReader {
        fn kind(&self) -> &'static str {
            "fake-subscriber-reader"
        }
        fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
            self.0.lock().unwrap().push(ctx.subscriber);
            SfVerdict::Pass(pkt)
        }
        fn counters(&self, _: &mut dyn FnMut(&'static str, u64)) {}
        fn wants_subscriber(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_sf_that_asks_reads_the_encrypted_subscriber_id_only_with_the_chain_key() {
        use crate::integrity::ChainKeyConfig;
        let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        let key = |enc: bool| ChainKeyConfig {
            key_id: 9,
            chain: 7,
            mac_key: &[1; 32],
            enc_key: enc.then_some(&[2u8; 16][..]),
            origin_key: None,
            pot: None,
        };
        let mut a = Node::new(NodeSettings::default());
        a.install_outbound(SaIdx(0), &payload, Instant::ZERO).unwrap();
        a.install_chain_key(&key(true)).unwrap();
        a.set_label(600, LabelAction::Remote(NodeId(1))).unwrap();
        a.add_chain(ChainSpec {
            integrity: Some(ChainIntegrity { key_id: 9, pot: false }),
            ..chain(vec![600, 500], 0)
        })
        .unwrap();
        let tuple = ip::parse(udp_packet().as_slice()).unwrap().tuple;
        a.classifier_mut().insert_flow_for(tuple, ChainId(7), 0xfeed).unwrap();
        for enc in [true, false] {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut b = Node::new(NodeSettings { sfc_integrity: true, ..NodeSettings::default() });
            b.install_chain_key(&key(enc)).unwrap();
            let sf = SfSpec::in_process(600, "reader", false, Box::new(FakeSubscriberReader(seen.clone())));
            b.add_sf(sf).unwrap();
            b.set_label(500, LabelAction::Remote(NodeId(2))).unwrap();
            let v = b.handle_from_domain(Instant::ZERO, forwarded(a.handle_local(Instant::ZERO, udp_packet())));
            assert!(matches!(v, Verdict::Forward(NodeId(2), _)), "{v:?}");
            let expected = if enc { Some(0xfeed) } else { None };
            assert_eq!(*seen.lock().unwrap(), vec![expected], "with the encryption key: {enc}");
        }
    }
}
