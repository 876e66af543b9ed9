//! The one crate that touches the operating system's network: it moves packets between sockets
//! or devices and a [`Node`], and owns the loop. Today: MPLS-in-UDP (RFC 7510) between nodes and
//! a TUN device for the local side, on one thread. (Planned: batching with recvmmsg/sendmmsg or
//! GSO/GRO, AF_PACKET rings, attachment circuits for external SFs, worker threads.)
#![forbid(unsafe_code)]

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use zsfc_dataplane::{Instant, Node, PacketBuf, Verdict};
use zsfc_wire::buffer::{DEFAULT_HEADROOM, DEFAULT_TAILROOM};

/// Largest packet read from a socket or device.
const MAX_PACKET: usize = 65535;
/// Packets read from one source before looking at the other.
const BATCH: usize = 64;

/// What the drivers did (the engine counts its own drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub udp_rx: u64,
    pub udp_tx: u64,
    /// Datagrams from an address that is no peer's: dropped before the engine sees them.
    pub udp_unknown_source: u64,
    pub tun_rx: u64,
    pub tun_tx: u64,
    /// Verdicts the drivers could not carry out (no peer address, no TUN, no external SF
    /// attachment yet, a failed send).
    pub undeliverable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("creating TUN device {name}: {source}")]
    Tun { name: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The drivers of one node process.
pub struct Drivers {
    udp: UdpSocket,
    /// Peer addresses indexed by peer id.
    peers: Vec<Option<SocketAddr>>,
    tun: Option<tun_rs::SyncDevice>,
    pool: Vec<PacketBuf>,
    pub stats: IoStats,
}

impl core::fmt::Debug for Drivers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Drivers")
            .field("udp", &self.udp.local_addr().ok())
            .field("tun", &self.tun.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

/// A TUN device to create: name, addresses (address, prefix length) and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSpec {
    pub name: String,
    pub addresses: Vec<(std::net::IpAddr, u8)>,
    pub mtu: u16,
}

impl Drivers {
    /// Binds the MPLS-in-UDP socket and creates the TUN device, if any.
    pub fn open(listen: SocketAddr, peers: &[(u32, SocketAddr)], tun: Option<&TunSpec>) -> Result<Self, IoError> {
        let udp = UdpSocket::bind(listen).map_err(|source| IoError::Bind { addr: listen, source })?;
        udp.set_nonblocking(true)?;
        let mut table = Vec::new();
        for &(id, addr) in peers {
            let i = id as usize;
            if table.len() <= i {
                table.resize(i + 1, None);
            }
            table[i] = Some(addr);
        }
        let tun = match tun {
            None => None,
            Some(t) => {
                let tun_err = |source| IoError::Tun { name: t.name.clone(), source };
                let mut b = tun_rs::DeviceBuilder::new().name(t.name.clone()).mtu(t.mtu);
                for &(a, len) in &t.addresses {
                    b = match a {
                        std::net::IpAddr::V4(v4) => b.ipv4(v4, len, None),
                        std::net::IpAddr::V6(v6) => b.ipv6(v6, len),
                    };
                }
                let dev = b.build_sync().map_err(tun_err)?;
                dev.set_nonblocking(true).map_err(tun_err)?;
                Some(dev)
            }
        };
        Ok(Self { udp, peers: table, tun, pool: Vec::new(), stats: IoStats::default() })
    }

    fn buffer(&mut self) -> PacketBuf {
        let mut b = self
            .pool
            .pop()
            .unwrap_or_else(|| PacketBuf::new(DEFAULT_HEADROOM + MAX_PACKET + DEFAULT_TAILROOM, DEFAULT_HEADROOM));
        b.reset(DEFAULT_HEADROOM);
        b
    }

    fn recycle(&mut self, b: PacketBuf) {
        if self.pool.len() < 4 * BATCH {
            self.pool.push(b);
        }
    }

    /// Carries out a verdict.
    fn act(&mut self, v: Verdict) {
        match v {
            Verdict::Forward(peer, b) => {
                match self.peers.get(peer.0 as usize).copied().flatten() {
                    Some(addr) if self.udp.send_to(b.as_slice(), addr).is_ok() => self.stats.udp_tx += 1,
                    _ => self.stats.undeliverable += 1,
                }
                self.recycle(b);
            }
            Verdict::Deliver(b) => {
                match &self.tun {
                    Some(t) if t.send(b.as_slice()).is_ok() => self.stats.tun_tx += 1,
                    _ => self.stats.undeliverable += 1,
                }
                self.recycle(b);
            }
            Verdict::ToSf(_, b) => {
                self.stats.undeliverable += 1;
                self.recycle(b);
            }
            Verdict::Held => {}
            Verdict::Drop(_, b) => self.recycle(b),
        }
    }

    fn is_peer(&self, from: &SocketAddr) -> bool {
        self.peers.iter().flatten().any(|p| p.ip() == from.ip())
    }

    /// Runs `node` until `stop` is set: reads both sources, hands packets to the engine, acts on
    /// verdicts, releases held packets on time and does the engine's housekeeping every second.
    pub fn run(&mut self, node: &mut Node, stop: &AtomicBool) -> Result<(), IoError> {
        let epoch = std::time::Instant::now();
        let now = || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
        let mut next_housekeeping = now() + core::time::Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            let t = now();
            let wait_ms =
                node.poll_timeout().map_or(100, |d| (d.as_nanos().saturating_sub(t.as_nanos()) / 1_000_000).min(100));
            let (udp_ready, tun_ready) = {
                let mut fds = vec![PollFd::new(self.udp.as_fd(), PollFlags::POLLIN)];
                if let Some(tun) = &self.tun {
                    fds.push(PollFd::new(tun.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::try_from(wait_ms as i32).unwrap_or(PollTimeout::NONE)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(IoError::Io(e.into())),
                }
                let ready =
                    |f: Option<&PollFd<'_>>| f.and_then(PollFd::revents).is_some_and(|r| r.contains(PollFlags::POLLIN));
                (ready(fds.first()), ready(fds.get(1)))
            };
            if udp_ready {
                for _ in 0..BATCH {
                    let mut b = self.buffer();
                    let mut from = None;
                    let udp = &self.udp;
                    match b.append_with(DEFAULT_TAILROOM, |space| {
                        udp.recv_from(space).map(|(n, a)| {
                            from = Some(a);
                            n
                        })
                    }) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.recycle(b);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    if !from.is_some_and(|a| self.is_peer(&a)) {
                        self.stats.udp_unknown_source += 1;
                        self.recycle(b);
                        continue;
                    }
                    self.stats.udp_rx += 1;
                    let v = node.handle_from_domain(now(), b);
                    self.act(v);
                }
            }
            if tun_ready {
                for _ in 0..BATCH {
                    let mut b = self.buffer();
                    let Some(tun) = &self.tun else { break };
                    match b.append_with(DEFAULT_TAILROOM, |space| tun.recv(space)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.recycle(b);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    self.stats.tun_rx += 1;
                    let v = node.handle_local(now(), b);
                    self.act(v);
                }
            }
            while let Some(v) = node.poll_output(now()) {
                self.act(v);
            }
            if now() >= next_housekeeping {
                node.housekeeping(now());
                next_housekeeping = now() + core::time::Duration::from_secs(1);
            }
        }
        Ok(())
    }
}
