//! The one crate that touches the operating system's network: it moves packets between sockets
//! or devices and a [`Node`], and owns the loop. Drivers: MPLS-in-UDP (RFC 7510, UDP GSO/GRO)
//! between nodes, Ethernet + MPLS on an L2 link (an AF_PACKET receive ring, `sendmmsg`), a TUN
//! device with offloads for the local side (clients at an ingress, the service at an egress),
//! and attachment circuits to external SFC-unaware SFs (a veth pair or a TUN device pair the
//! SF's host routes between). One thread per worker lane; readiness through epoll.
#![deny(unsafe_code)]

mod eth;
mod local;
mod ring;
mod udp;

pub use ring::{LaneMark, MAX_TC_LANES, RingKind};

use eth::{EthLink, Frame, LaneJoin};
use local::LocalTun;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use udp::UdpLink;
use zsfc_dataplane::{ChainId, DropReason, Instant, Node, NodeId, PacketBuf, SfId, Verdict};
use zsfc_wire::buffer::{DEFAULT_HEADROOM, DEFAULT_TAILROOM};
use zsfc_wire::ip::FiveTuple;

/// Largest packet read from a socket or device.
const MAX_PACKET: usize = 65535;
/// Transmit queue of our TUN devices (packets the kernel holds for us to read).
const TX_QUEUE: u32 = 10_000;
/// Packets read from one source before looking at the others.
const BATCH: usize = 64;
/// Epoll tokens: the UDP socket, the local TUN, the Ethernet link, then attachment `i` at
/// `FIRST_AC + i`.
const TOKEN_UDP: u64 = 0;
const TOKEN_TUN: u64 = 1;
const TOKEN_ETH: u64 = 2;
const FIRST_AC: u64 = 3;

/// What the drivers did (the engine counts its own drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub udp_rx: u64,
    pub udp_tx: u64,
    /// System calls that received and sent them (GRO and GSO put many in one).
    pub udp_recv_calls: u64,
    pub udp_send_calls: u64,
    /// Datagrams from an address that is no peer's: dropped before the engine sees them.
    pub udp_unknown_source: u64,
    /// MPLS frames from a MAC address that is no peer's: dropped before the engine.
    pub eth_unknown_source: u64,
    /// MPLS frames received and sent on the Ethernet link.
    pub eth_rx: u64,
    pub eth_tx: u64,
    /// Frames from the Ethernet link that are not MPLS frames to hand on (the socket is bound to
    /// MPLS frames, so only runts): not for the engine.
    pub eth_other: u64,
    /// MPLS frames not addressed to this interface (broadcast, multicast, another address).
    pub eth_not_for_us: u64,
    /// MPLS frames that carried a VLAN tag.
    pub eth_tagged: u64,
    /// Frames on attachment circuits that are not IP packets for the node (ARP, ...).
    pub circuit_other: u64,
    /// Frames the receive ring could not deliver whole (longer than a slot or block, or with
    /// inconsistent offsets): lost before the engine saw them. Updated once a second.
    pub eth_ring_errors: u64,
    pub tun_rx: u64,
    pub tun_tx: u64,
    /// Reads from the local TUN (one read may carry a TCP super-packet of many segments).
    pub tun_reads: u64,
    /// Packets sent to and received from external SFs over their attachment circuits.
    pub sf_tx: u64,
    pub sf_rx: u64,
    /// Flow entries the gateway asked for, and the ones the full flow table refused.
    pub flows_inserted: u64,
    pub flows_refused: u64,
    /// Verdicts the drivers could not carry out (no peer address, no TUN, no attachment
    /// circuit for the SF, a failed send).
    pub undeliverable: u64,
    /// Datagrams the kernel refused as larger than the path takes (EMSGSIZE): the engine's
    /// own limit ([`zsfc_dataplane::pmtu`]) is set above what the link really carries.
    pub too_big: u64,
}

impl IoStats {
    /// The drivers' drops, each with its reason (the engine counts its own).
    pub fn drops(&self) -> [(DropReason, u64); 9] {
        [
            (DropReason::UdpUnknownSource, self.udp_unknown_source),
            (DropReason::EthUnknownSource, self.eth_unknown_source),
            (DropReason::EthRunt, self.eth_other),
            (DropReason::EthNotForUs, self.eth_not_for_us),
            (DropReason::EthTagged, self.eth_tagged),
            (DropReason::EthRingError, self.eth_ring_errors),
            (DropReason::CircuitNotIp, self.circuit_other),
            (DropReason::Undeliverable, self.undeliverable),
            (DropReason::TooBig, self.too_big),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("opening the Ethernet link {name}: {source}")]
    Link { name: String, source: std::io::Error },
    #[error("creating TUN device {name}: {source}")]
    Tun { name: String, source: std::io::Error },
    #[error("attachment circuit {name}: {why}")]
    Attachment { name: String, why: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<nix::errno::Errno> for IoError {
    fn from(e: nix::errno::Errno) -> Self {
        Self::Io(e.into())
    }
}

/// A TUN device to create: name, addresses (address, prefix length) and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSpec {
    pub name: String,
    pub addresses: Vec<(IpAddr, u8)>,
    pub mtu: u16,
}

/// The attachment circuit of one external SF: the node writes the SF's packets to the TUN device
/// `to_sf` and reads what the SF sends on from `from_sf`. The SF's host (a network namespace, a
/// VM, the machine itself) owns both interfaces and routes from one to the other; `zsfc up`
/// moves them into the SF's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSpec {
    pub sf: SfId,
    /// The worker lane that uses this circuit (each lane has its own; see `Drivers::open_lanes`).
    pub lane: u16,
    pub to_sf: String,
    pub from_sf: String,
    pub mtu: u16,
    pub kind: AttachmentKind,
}

/// What an attachment circuit is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    /// Two TUN devices the node creates (and whoever runs the SF takes over).
    Tun,
    /// Two existing veth ends in the node's namespace whose peers are the SF's interfaces:
    /// packets go in Ethernet frames to `to_sf_mac` (the SF's interface on the `to_sf` link)
    /// and come back as frames to the `from_sf` end.
    Veth { to_sf_mac: [u8; 6] },
}

/// One side of an attachment circuit.
enum AcPort {
    Tun(tun_rs::SyncDevice),
    Veth(eth::IpOverEthernet),
}

impl AcPort {
    fn open(name: &str, mtu: u16, kind: AttachmentKind, peer: Option<[u8; 6]>) -> Result<Self, IoError> {
        Ok(match kind {
            AttachmentKind::Tun => {
                let spec = TunSpec { name: name.to_owned(), addresses: Vec::new(), mtu };
                Self::Tun(open_tun(&spec, false, false)?)
            }
            AttachmentKind::Veth { .. } => Self::Veth(
                eth::IpOverEthernet::open(name, peer)
                    .map_err(|source| IoError::Link { name: name.to_owned(), source })?,
            ),
        })
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Self::Tun(t) => t.as_fd(),
            Self::Veth(v) => v.as_fd(),
        }
    }
}

/// A change to the engine asked for by another thread (the ingress gateway). Applied by the
/// packet loop before it reads the next packets, so a flow entry sent before a connection's
/// first packet is in place when that packet arrives.
pub enum Control {
    /// A flow entry: the 5-tuple, its chain and its subscriber id (RFC 8979; 0: none).
    InsertFlow(FiveTuple, ChainId, u64),
    RemoveFlow(FiveTuple),
    /// Any other change to the engine (a configuration push from the controller: SAs, chains,
    /// labels, rules), run between two batches with the loop's clock.
    Configure(Reconfigure),
}

/// A change to run on an engine, with the packet loop's clock.
pub type Reconfigure = Box<dyn FnOnce(&mut Node, Instant) + Send>;

impl core::fmt::Debug for Control {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InsertFlow(t, c, _) => write!(f, "InsertFlow({t:?}, {c:?})"),
            Self::RemoveFlow(t) => write!(f, "RemoveFlow({t:?})"),
            Self::Configure(_) => f.write_str("Configure(..)"),
        }
    }
}

struct Attachment {
    sf: SfId,
    to_sf: AcPort,
    from_sf: AcPort,
    /// Largest packet (or frame) that comes back.
    room: usize,
}

/// The drivers of one node process.
/// Where a peer's packets go: MPLS-in-UDP to an address, or Ethernet + MPLS to a MAC address on
/// the node's Ethernet link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    Udp(SocketAddr),
    Ethernet([u8; 6]),
}

/// The node's links into the domain: MPLS-in-UDP on `listen`, Ethernet + MPLS on the interface
/// `ethernet`, or both (each peer uses the one its address is for).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransportSpec {
    pub listen: Option<SocketAddr>,
    pub ethernet: Option<String>,
    /// How the Ethernet link's receive ring hands frames over.
    pub ring: RingKind,
    /// Frames between nodes carry link ESP (then the link SPI names the lane on an Ethernet
    /// link shared by lanes; else the top label's traffic class does).
    pub link_esp: bool,
}

pub struct Drivers {
    udp: Option<UdpLink>,
    eth: Option<EthLink>,
    /// Datagrams of one receive, before the engine sees them.
    inbox: Vec<(SocketAddr, PacketBuf)>,
    /// MPLS frames of one Ethernet receive, with their source MAC.
    eth_inbox: Vec<([u8; 6], PacketBuf)>,
    /// Peer addresses indexed by peer id.
    peers: Vec<Option<PeerAddr>>,
    tun: Option<LocalTun>,
    attachments: Vec<Attachment>,
    /// Attachment index by `SfId`.
    ac_of_sf: Vec<Option<usize>>,
    epoll: Epoll,
    pool: Vec<PacketBuf>,
    pub stats: IoStats,
}

impl core::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Drivers")
            .field("udp", &self.udp.as_ref().and_then(|u| u.sock.local_addr().ok()))
            .field("ethernet", &self.eth.as_ref().map(|e| e.interface.clone()))
            .field("tun", &self.tun.is_some())
            .field("attachments", &self.attachments.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Creates a TUN device with a long transmit queue (the packets the kernel holds for us to
/// read); `offload` turns on the virtio-net header with TSO/checksum offloads (the local side;
/// never an attachment circuit). A local side without IPv6 addresses gets no IPv6 at all before
/// it comes up: otherwise the kernel's first IPv6 packets on it (multicast listener reports,
/// router solicitations) reached the classifier as `no_matching_rule` drops.
fn open_tun(t: &TunSpec, offload: bool, multi_queue: bool) -> Result<tun_rs::SyncDevice, IoError> {
    let tun_err = |source| IoError::Tun { name: t.name.clone(), source };
    let mut b = tun_rs::DeviceBuilder::new().name(t.name.clone()).mtu(t.mtu).tx_queue_len(TX_QUEUE).enable(false);
    if offload {
        b = b.offload(true);
    }
    if multi_queue {
        b = b.multi_queue(true);
    }
    let dev = b.build_sync().map_err(tun_err)?;
    for &(a, len) in &t.addresses {
        match a {
            IpAddr::V4(v4) => dev.add_address_v4(v4, len),
            IpAddr::V6(v6) => dev.add_address_v6(v6, len),
        }
        .map_err(tun_err)?;
    }
    if offload && t.addresses.iter().all(|(a, _)| a.is_ipv4()) {
        // Best effort: the key is absent when the kernel has no IPv6 or took it off the device
        // already (an MTU below 1280).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", t.name), "1");
    }
    dev.enabled(true).map_err(tun_err)?;
    dev.set_nonblocking(true).map_err(tun_err)?;
    Ok(dev)
}

/// A buffer with room for a packet of `room` bytes (plus head- and tailroom), from the pool when
/// the pooled one is large enough. Sized to the packet, so a node holding many packets (a
/// delaying SF, a full proxy cache) holds them in small buffers.
fn take_buffer(pool: &mut Vec<PacketBuf>, room: usize) -> PacketBuf {
    let need = DEFAULT_HEADROOM + room.min(MAX_PACKET) + DEFAULT_TAILROOM;
    let mut b = match pool.pop() {
        Some(b) if b.capacity() >= need => b,
        _ => PacketBuf::new(need.next_multiple_of(BUFFER_GRAIN), DEFAULT_HEADROOM),
    };
    b.reset(DEFAULT_HEADROOM);
    b
}

/// Buffers are allocated in multiples of this.
const BUFFER_GRAIN: usize = 512;

/// Returns a buffer to the pool (which stays small: the rest are freed).
fn give_back(pool: &mut Vec<PacketBuf>, b: PacketBuf) {
    if pool.len() < 4 * BATCH {
        pool.push(b);
    }
}

impl Drivers {
    /// Binds the MPLS-in-UDP socket and creates the TUN devices.
    pub fn open(
        transport: &TransportSpec,
        peers: &[(u32, PeerAddr)],
        tun: Option<&TunSpec>,
        attachments: &[AttachmentSpec],
    ) -> Result<Self, IoError> {
        let tun = tun.map(|t| Ok::<_, IoError>((open_tun(t, true, false)?, t.mtu))).transpose()?;
        Self::open_with(transport, peers, tun, attachments, None)
    }

    /// The drivers of `lanes` worker lanes: lane k listens on the MPLS-in-UDP port + k and sends
    /// to its peers' port + k, or on an Ethernet link has its own socket in the lanes' fanout
    /// group and marks what it sends as lane k's; and reads its own queue of one multi-queue TUN
    /// device. Lanes do not use attachment circuits (the configuration refuses them).
    pub fn open_lanes(
        transport: &TransportSpec,
        peers: &[(u32, PeerAddr)],
        tun: Option<&TunSpec>,
        attachments: &[AttachmentSpec],
        lanes: u16,
    ) -> Result<Vec<Self>, IoError> {
        if lanes <= 1 {
            return Ok(vec![Self::open(transport, peers, tun, attachments)?]);
        }
        if let Some(a) = attachments.iter().find(|a| a.lane >= lanes) {
            return Err(IoError::Attachment { name: a.to_sf.clone(), why: format!("lane {} of {lanes}", a.lane) });
        }
        // One queue per lane: the device's first, then clones (each a new queue).
        let mut queues: Vec<Option<(tun_rs::SyncDevice, u16)>> = Vec::new();
        if let Some(t) = tun {
            let tun_err = |source| IoError::Tun { name: t.name.clone(), source };
            let first = open_tun(t, true, true)?;
            for _ in 1..lanes {
                let q = first.try_clone().map_err(tun_err)?;
                q.set_nonblocking(true).map_err(tun_err)?;
                queues.push(Some((q, t.mtu)));
            }
            queues.insert(0, Some((first, t.mtu)));
        }
        queues.resize_with(usize::from(lanes), || None);
        let mark = if transport.link_esp { LaneMark::LinkSpi } else { LaneMark::LabelTc };
        let mut out: Vec<Self> = Vec::new();
        for (lane, queue) in (0..lanes).zip(queues) {
            let shift = |a: SocketAddr| SocketAddr::new(a.ip(), a.port().wrapping_add(lane));
            let lane_transport = TransportSpec { listen: transport.listen.map(shift), ..transport.clone() };
            let lane_peers: Vec<(u32, PeerAddr)> = peers
                .iter()
                .map(|&(id, p)| (id, if let PeerAddr::Udp(a) = p { PeerAddr::Udp(shift(a)) } else { p }))
                .collect();
            let group = out.first().and_then(|d| d.eth.as_ref()).and_then(|e| e.group);
            let join = LaneJoin { index: lane, mark, group };
            let circuits: Vec<AttachmentSpec> = attachments.iter().filter(|a| a.lane == lane).cloned().collect();
            out.push(Self::open_with(&lane_transport, &lane_peers, queue, &circuits, Some(join))?);
        }
        Ok(out)
    }

    fn open_with(
        transport: &TransportSpec,
        peers: &[(u32, PeerAddr)],
        tun: Option<(tun_rs::SyncDevice, u16)>,
        attachments: &[AttachmentSpec],
        lane: Option<LaneJoin>,
    ) -> Result<Self, IoError> {
        let udp = match transport.listen {
            Some(listen) => {
                let s = UdpSocket::bind(listen).map_err(|source| IoError::Bind { addr: listen, source })?;
                s.set_nonblocking(true)?;
                Some(UdpLink::new(s))
            }
            None => None,
        };
        let eth = match &transport.ethernet {
            Some(name) => Some(
                EthLink::open(name, transport.ring, lane)
                    .map_err(|source| IoError::Link { name: name.clone(), source })?,
            ),
            None => None,
        };
        let mut table = Vec::new();
        for &(id, addr) in peers {
            let i = id as usize;
            if table.len() <= i {
                table.resize(i + 1, None);
            }
            table[i] = Some(addr);
        }
        let tun = tun.map(|(dev, mtu)| LocalTun::new(dev, mtu));
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        if let Some(u) = &udp {
            epoll.add(&u.sock, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_UDP))?;
        }
        if let Some(e) = &eth {
            epoll.add(e, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_ETH))?;
        }
        if let Some(t) = &tun {
            epoll.add(&t.dev, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TUN))?;
        }
        let mut acs = Vec::new();
        let mut ac_of_sf = Vec::new();
        for (i, a) in attachments.iter().enumerate() {
            let peer = match a.kind {
                AttachmentKind::Veth { to_sf_mac } => Some(to_sf_mac),
                AttachmentKind::Tun => None,
            };
            let ac = Attachment {
                sf: a.sf,
                to_sf: AcPort::open(&a.to_sf, a.mtu, a.kind, peer)?,
                from_sf: AcPort::open(&a.from_sf, a.mtu, a.kind, None)?,
                room: usize::from(a.mtu) + 64,
            };
            epoll.add(ac.from_sf.fd(), EpollEvent::new(EpollFlags::EPOLLIN, FIRST_AC + i as u64))?;
            let k = a.sf.0 as usize;
            if ac_of_sf.len() <= k {
                ac_of_sf.resize(k + 1, None);
            }
            ac_of_sf[k] = Some(i);
            acs.push(ac);
        }
        Ok(Self {
            udp,
            eth,
            inbox: Vec::with_capacity(BATCH),
            eth_inbox: Vec::with_capacity(BATCH),
            peers: table,
            tun,
            attachments: acs,
            ac_of_sf,
            epoll,
            pool: Vec::new(),
            stats: IoStats::default(),
        })
    }

    fn buffer(&mut self, room: usize) -> PacketBuf {
        take_buffer(&mut self.pool, room)
    }

    fn recycle(&mut self, b: PacketBuf) {
        give_back(&mut self.pool, b);
    }

    /// Carries out a verdict.
    fn act(&mut self, v: Verdict) {
        let (sent, b) = match v {
            Verdict::Forward(peer, b) => {
                match (self.peers.get(peer.0 as usize).copied().flatten(), &mut self.udp, &mut self.eth) {
                    (Some(PeerAddr::Udp(a)), Some(udp), _) => {
                        udp.queue(a, b);
                        if udp.pending() >= BATCH {
                            self.flush();
                        }
                        return;
                    }
                    (Some(PeerAddr::Ethernet(mac)), _, Some(eth)) => {
                        if !eth.queue(mac, b) {
                            self.stats.undeliverable += 1;
                        } else if eth.pending() >= BATCH {
                            self.flush();
                        }
                        return;
                    }
                    _ => (false, b),
                }
            }
            Verdict::Deliver(b) => match &mut self.tun {
                Some(t) => {
                    let w = t.queue(b.as_slice());
                    self.count_written(w);
                    (true, b)
                }
                None => (false, b),
            },
            Verdict::ToSf(sf, mut b) => {
                let ac = self.ac_of_sf.get(sf.0 as usize).copied().flatten();
                let ok = ac.is_some_and(|i| match &self.attachments[i].to_sf {
                    AcPort::Tun(t) => t.send(b.as_slice()).is_ok(),
                    AcPort::Veth(v) => v.send(&mut b).is_ok(),
                });
                self.stats.sf_tx += u64::from(ok);
                (ok, b)
            }
            Verdict::Held => return,
            Verdict::Drop(_, b) | Verdict::Consumed(b) => (true, b),
        };
        self.stats.undeliverable += u64::from(!sent);
        self.recycle(b);
    }

    fn count_written(&mut self, w: local::Written) {
        self.stats.tun_tx += w.packets;
        self.stats.undeliverable += w.failed;
    }

    /// Sends the queued MPLS-in-UDP packets and writes the queued local packets.
    fn flush(&mut self) {
        if let Some(t) = &mut self.tun {
            let w = t.flush();
            self.count_written(w);
        }
        let pool = &mut self.pool;
        if let Some(eth) = &mut self.eth {
            let (sent, failed) = eth.flush(|b| give_back(pool, b));
            self.stats.eth_tx += sent;
            self.stats.undeliverable += failed;
        }
        if let Some(udp) = &mut self.udp {
            let f = udp.flush(|b| give_back(pool, b));
            self.stats.udp_tx += f.sent;
            self.stats.undeliverable += f.failed;
            self.stats.too_big += f.too_big;
            self.stats.udp_send_calls += f.syscalls;
        }
    }

    /// The peer a datagram came from, by its source address (any source port: RFC 7510 §3
    /// senders may vary it).
    fn peer_of(&self, from: &SocketAddr) -> Option<NodeId> {
        let i = self.peers.iter().position(|p| matches!(p, Some(PeerAddr::Udp(a)) if a.ip() == from.ip()))?;
        Some(NodeId(i as u32))
    }

    fn peer_of_mac(&self, from: &[u8; 6]) -> Option<NodeId> {
        let i = self.peers.iter().position(|p| *p == Some(PeerAddr::Ethernet(*from)))?;
        Some(NodeId(i as u32))
    }

    fn apply(&mut self, node: &mut Node, c: Control, now: Instant) {
        match c {
            Control::InsertFlow(t, chain, subscriber) => {
                match node.classifier_mut().insert_flow_for(t, chain, subscriber) {
                    Ok(()) => self.stats.flows_inserted += 1,
                    Err(_) => self.stats.flows_refused += 1,
                }
            }
            Control::RemoveFlow(t) => {
                node.classifier_mut().remove_flow(&t);
            }
            Control::Configure(f) => f(node, now),
        }
    }

    /// Receives up to a few batches of frames from the Ethernet link.
    fn drain_eth(&mut self, node: &mut Node, now: &impl Fn() -> Instant) -> Result<(), IoError> {
        for _ in 0..4 {
            let Self { eth, eth_inbox, pool, stats, .. } = self;
            let Some(eth) = eth else { return Ok(()) };
            let n = eth.recv_batch(
                |len| take_buffer(pool, len),
                |f| match f {
                    Frame::Mpls { src, buf } => eth_inbox.push((src, buf)),
                    Frame::Other => stats.eth_other += 1,
                    Frame::NotForUs => stats.eth_not_for_us += 1,
                    Frame::Tagged => stats.eth_tagged += 1,
                },
            );
            let mut inbox = core::mem::take(&mut self.eth_inbox);
            for (src, b) in inbox.drain(..) {
                let Some(peer) = self.peer_of_mac(&src) else {
                    self.stats.eth_unknown_source += 1;
                    self.recycle(b);
                    continue;
                };
                self.stats.eth_rx += 1;
                let v = node.handle_from_peer(now(), peer, b);
                self.act(v);
            }
            self.eth_inbox = inbox;
            self.flush();
            if n < 64 {
                break;
            }
        }
        Ok(())
    }

    /// Receives up to one batch of (coalesced) MPLS-in-UDP buffers and hands each datagram to
    /// the engine.
    fn drain_udp(&mut self, node: &mut Node, now: &impl Fn() -> Instant) -> Result<(), IoError> {
        for _ in 0..BATCH {
            let Self { udp, inbox, pool, .. } = self;
            let Some(udp) = udp else { return Ok(()) };
            let got = udp.recv(pool, |from, b| inbox.push((from, b)))?;
            if !got {
                break;
            }
            self.stats.udp_recv_calls += 1;
            let mut inbox = core::mem::take(&mut self.inbox);
            for (from, b) in inbox.drain(..) {
                let Some(peer) = self.peer_of(&from) else {
                    self.stats.udp_unknown_source += 1;
                    self.recycle(b);
                    continue;
                };
                self.stats.udp_rx += 1;
                let mut b = b;
                b.meta.entropy = udp::entropy_of_port(from.port());
                let v = node.handle_from_peer(now(), peer, b);
                self.act(v);
            }
            self.inbox = inbox;
        }
        self.flush();
        Ok(())
    }

    /// Reads up to one batch of (offloaded) reads from the local TUN and hands each packet to
    /// the engine's classifier.
    fn drain_local(&mut self, node: &mut Node, now: &impl Fn() -> Instant) -> Result<(), IoError> {
        for _ in 0..BATCH {
            let Self { tun, inbox, pool, .. } = self;
            let Some(tun) = tun else { return Ok(()) };
            let any = SocketAddr::from(([0, 0, 0, 0], 0));
            let got = tun.recv(pool, |b| inbox.push((any, b)))?;
            if !got {
                break;
            }
            self.stats.tun_reads += 1;
            let mut inbox = core::mem::take(&mut self.inbox);
            for (_, b) in inbox.drain(..) {
                self.stats.tun_rx += 1;
                let v = node.handle_local(now(), b);
                self.act(v);
            }
            self.inbox = inbox;
        }
        self.flush();
        Ok(())
    }

    /// Reads up to one batch from the device source `token` and hands each packet to the engine.
    fn drain(&mut self, node: &mut Node, token: u64, now: &impl Fn() -> Instant) -> Result<(), IoError> {
        match token {
            TOKEN_UDP => return self.drain_udp(node, now),
            TOKEN_TUN => return self.drain_local(node, now),
            TOKEN_ETH => return self.drain_eth(node, now),
            _ => {}
        }
        let room = self.attachments.get((token - FIRST_AC) as usize).map_or(0, |a| a.room);
        for _ in 0..BATCH {
            let mut b = self.buffer(room);
            let read = match self.attachments.get((token - FIRST_AC) as usize).map(|ac| &ac.from_sf) {
                Some(AcPort::Tun(t)) => b.append_with(DEFAULT_TAILROOM, |space| t.recv(space)).map(|_| Some(true)),
                Some(AcPort::Veth(v)) => v.recv(&mut b),
                None => return Ok(()),
            };
            match read {
                Ok(Some(true)) => {}
                Ok(Some(false)) => {
                    // A frame on the veth that is not an IP packet for us (ARP, neighbour
                    // discovery, our own frames).
                    self.stats.circuit_other += 1;
                    self.recycle(b);
                    continue;
                }
                Ok(None) => {
                    self.recycle(b);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.recycle(b);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            self.stats.sf_rx += 1;
            let sf = self.attachments[(token - FIRST_AC) as usize].sf;
            let v = node.handle_from_sf(now(), sf, b);
            self.act(v);
        }
        self.flush();
        Ok(())
    }

    /// Copies the receive ring's loss counters into the stats (once a second and at the end).
    fn sync_ring_errors(&mut self) {
        self.stats.eth_ring_errors = self.eth.as_ref().map_or(0, EthLink::ring_errors);
    }

    /// Runs `node` until `stop` is set: applies control messages, reads every ready source,
    /// hands packets to the engine, acts on verdicts, releases held packets on time and does the
    /// engine's housekeeping every second. `tick` is called once a second with the drivers' and
    /// the engine's counters (to publish them).
    pub fn run(
        &mut self,
        node: &mut Node,
        stop: &AtomicBool,
        control: Option<&Receiver<Control>>,
        mut tick: impl FnMut(&IoStats, &mut Node),
    ) -> Result<(), IoError> {
        let epoch = std::time::Instant::now();
        let now = || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
        // NSH timestamps are wall-clock times: the engine learns where its epoch lies, again
        // every second (the wall clock may be stepped).
        let wall_clock = |node: &mut Node| {
            let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            node.set_wall_clock((unix.as_nanos() as u64).saturating_sub(now().as_nanos()));
        };
        wall_clock(node);
        let mut next_housekeeping = now() + core::time::Duration::from_secs(1);
        tick(&self.stats, node);
        let mut events = [EpollEvent::empty(); 16];
        while !stop.load(Ordering::Relaxed) {
            let t = now();
            let wait_ms =
                node.poll_timeout().map_or(100, |d| (d.as_nanos().saturating_sub(t.as_nanos()) / 1_000_000).min(100));
            let n = match self
                .epoll
                .wait(&mut events, EpollTimeout::try_from(wait_ms as i32).unwrap_or(EpollTimeout::NONE))
            {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            // Control first: a flow entry must be in place before its connection's packets.
            if let Some(rx) = control {
                while let Ok(c) = rx.try_recv() {
                    self.apply(node, c, now());
                }
            }
            for e in &events[..n] {
                self.drain(node, e.data(), &now)?;
            }
            while let Some(v) = node.poll_output(now()) {
                self.act(v);
            }
            self.flush();
            if now() >= next_housekeeping {
                node.housekeeping(now());
                wall_clock(node);
                self.sync_ring_errors();
                tick(&self.stats, node);
                next_housekeeping = now() + core::time::Duration::from_secs(1);
            }
        }
        self.sync_ring_errors();
        Ok(())
    }
}
