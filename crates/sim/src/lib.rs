//! An in-memory zsfc domain: real [`Node`] engines wired together by a discrete-event loop
//! with a fake clock, optional loss and reordering, and fake end hosts. Tests, the `zsfc demo`
//! command and the benchmarks run on it; nothing here opens a socket.
#![forbid(unsafe_code)]

pub mod domain;
pub mod hosts;
pub mod packets;
pub mod scenario;

use std::collections::{BinaryHeap, HashMap};
use zsfc_dataplane::{
    DropReason, Instant, Node, NodeId, PacketBuf, ServiceFunction, SfContext, SfId, SfVerdict, Verdict,
};

pub use hosts::{ClientSide, FakeEchoService, LocalSide};

/// How packets travel between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkModel {
    pub latency: core::time::Duration,
    /// Extra random delay in [0, jitter): reorders packets when larger than their spacing.
    pub jitter: core::time::Duration,
    /// Packets lost per million.
    pub loss_ppm: u32,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self { latency: core::time::Duration::from_micros(50), jitter: core::time::Duration::ZERO, loss_ppm: 0 }
    }
}

/// A deterministic fake random source (SplitMix64) for loss and jitter; not for keys.
#[derive(Debug, Clone)]
pub struct FakeRng(u64);

impl FakeRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Where an event enters a node.
#[derive(Debug)]
enum Door {
    Local,
    Domain,
    FromSf(SfId),
}

#[derive(Debug)]
struct Event {
    at: Instant,
    seq: u64,
    node: usize,
    door: Door,
    buf: PacketBuf,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // Reversed: BinaryHeap is a max-heap, the earliest event must come first.
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One node of the simulation, its local side and the external SFs attached to it.
pub struct SimNode {
    pub name: String,
    pub node: Node,
    pub local: Box<dyn LocalSide>,
    /// SFC-unaware SFs "outside" the node process: they get no per-packet metadata.
    pub external: HashMap<SfId, Box<dyn ServiceFunction>>,
}

impl core::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNode").field("name", &self.name).field("node", &self.node).finish()
    }
}

/// A packet seen on an inter-node link.
#[derive(Debug, Clone)]
pub struct Captured {
    pub from: usize,
    pub to: usize,
    pub bytes: Vec<u8>,
}

/// Decides the fate of a packet on a link: return false to drop it. Used by tests to tamper.
pub type Interceptor = Box<dyn FnMut(usize, usize, &mut PacketBuf) -> bool>;

/// The simulated domain.
pub struct Sim {
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    pub link: LinkModel,
    pub rng: FakeRng,
    queue: BinaryHeap<Event>,
    seq: u64,
    /// Every packet on an inter-node link, when `capture` is on.
    pub capture: bool,
    pub captured: Vec<Captured>,
    pub intercept: Option<Interceptor>,
    /// Drops by node and reason, as the nodes reported them.
    pub drops: Vec<(usize, DropReason)>,
    /// Packets lost on links by the loss model, and dropped silently by external SFs.
    pub link_lost: u64,
    pub external_dropped: u64,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Sim {
    pub fn new(nodes: Vec<SimNode>) -> Self {
        Self {
            now: Instant::from_secs(1),
            nodes,
            link: LinkModel::default(),
            rng: FakeRng::new(1),
            queue: BinaryHeap::new(),
            seq: 0,
            capture: false,
            captured: Vec::new(),
            intercept: None,
            drops: Vec::new(),
            link_lost: 0,
            external_dropped: 0,
        }
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn schedule(&mut self, at: Instant, node: usize, door: Door, buf: PacketBuf) {
        self.seq += 1;
        self.queue.push(Event { at, seq: self.seq, node, door, buf });
    }

    /// A packet from the local side of `node` (a client at an ingress) at time `at`.
    pub fn send_local(&mut self, node: usize, at: Instant, pkt: &[u8]) {
        self.schedule(at, node, Door::Local, PacketBuf::from_slice(pkt));
    }

    /// A labelled packet arriving at `node` from the domain (for replay and injection tests).
    pub fn inject_domain(&mut self, node: usize, at: Instant, pkt: &[u8]) {
        self.schedule(at, node, Door::Domain, PacketBuf::from_slice(pkt));
    }

    /// Runs until nothing is left to do or `max_events` events were handled. Returns the
    /// number of events handled.
    pub fn run(&mut self, max_events: usize) -> usize {
        let mut n = 0;
        while n < max_events {
            let next_timer = self.nodes.iter().filter_map(|s| s.node.poll_timeout()).min();
            let next_event = self.queue.peek().map(|e| e.at);
            let at = match (next_event, next_timer) {
                (Some(e), Some(t)) => e.min(t),
                (Some(e), None) => e,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            self.now = self.now.max(at);
            if next_event.is_some_and(|e| e <= at)
                && let Some(ev) = self.queue.pop()
            {
                self.handle(ev);
            }
            self.poll_nodes();
            n += 1;
        }
        n
    }

    /// Advances the clock by `d` and lets every node forget stale proxy entries.
    pub fn advance(&mut self, d: core::time::Duration) {
        self.now = self.now + d;
        for s in &mut self.nodes {
            s.node.housekeeping(self.now);
        }
    }

    fn poll_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(v) = self.nodes.get_mut(i).and_then(|s| s.node.poll_output(self.now)) {
                self.act(i, v);
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = self.now;
        let Some(s) = self.nodes.get_mut(ev.node) else { return };
        let v = match ev.door {
            Door::Local => s.node.handle_local(now, ev.buf),
            Door::Domain => s.node.handle_from_domain(now, ev.buf),
            Door::FromSf(sf) => s.node.handle_from_sf(now, sf, ev.buf),
        };
        self.act(ev.node, v);
    }

    fn act(&mut self, node: usize, v: Verdict) {
        let now = self.now;
        match v {
            Verdict::Forward(NodeId(to), mut buf) => {
                let to = to as usize;
                if let Some(f) = self.intercept.as_mut()
                    && !f(node, to, &mut buf)
                {
                    return;
                }
                if self.capture {
                    self.captured.push(Captured { from: node, to, bytes: buf.as_slice().to_vec() });
                }
                if self.link.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(self.link.loss_ppm) {
                    self.link_lost += 1;
                    return;
                }
                let jitter = self.rng.below(self.link.jitter.as_nanos() as u64);
                let at = now + self.link.latency + core::time::Duration::from_nanos(jitter);
                self.schedule(at, to, Door::Domain, buf);
            }
            Verdict::Deliver(buf) => {
                let replies = match self.nodes.get_mut(node) {
                    Some(s) => s.local.deliver(now, buf.as_slice()),
                    None => Vec::new(),
                };
                for r in replies {
                    self.schedule(now + self.link.latency, node, Door::Local, PacketBuf::from_slice(&r));
                }
            }
            Verdict::ToSf(sf, mut buf) => {
                // Outside the node process the per-packet metadata is gone.
                buf.meta = Default::default();
                let Some(ext) = self.nodes.get_mut(node).and_then(|s| s.external.get_mut(&sf)) else { return };
                match ext.process(&SfContext { now, label: 0, metadata: &[], subscriber: None }, buf) {
                    SfVerdict::Pass(b) => {
                        self.schedule(now + core::time::Duration::from_micros(5), node, Door::FromSf(sf), b)
                    }
                    SfVerdict::Drop(..) | SfVerdict::Held => self.external_dropped += 1,
                }
            }
            Verdict::Held | Verdict::Consumed(_) => {}
            Verdict::Drop(r, _) => self.drops.push((node, r)),
        }
    }

    /// Drops of reason `r` over all nodes.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.nodes.iter().map(|s| s.node.drops().get(r)).sum()
    }

    /// Packets waiting in proxy caches over all nodes.
    pub fn cached_packets(&self) -> usize {
        self.nodes.iter().map(|s| s.node.cached_packets()).sum()
    }

    /// The local side of `node`, as its concrete type.
    pub fn local<T: 'static>(&self, node: usize) -> Option<&T> {
        self.nodes.get(node)?.local.as_any().downcast_ref::<T>()
    }
}
