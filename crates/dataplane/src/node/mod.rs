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

mod types;
pub use types::*;

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
}

mod packets;
use packets::{check_label, refusal};
#[cfg(test)]
mod tests;
