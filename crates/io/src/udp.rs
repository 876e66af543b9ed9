//! MPLS-in-UDP between nodes with UDP GSO and GRO: packets of one burst to one peer leave in one
//! `sendmsg` (the kernel carries them as one buffer through its stack and the veth/bridge, and
//! cuts them into datagrams only where it must), and arrive coalesced in one `recvmsg` that we
//! cut back into datagrams. On the wire they are ordinary datagrams, one packet each (RFC 7510).
//!
//! A coalesced receive is scattered straight into packet buffers: one buffer per datagram of the
//! size the peer's last burst had, so each datagram lands behind its buffer's headroom and is
//! never copied again. A burst of another size is cut and copied as before, and sets the size
//! for the next one.
use crate::{MAX_PACKET, give_back, take_buffer};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt, sockopt,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use zsfc_dataplane::PacketBuf;
use zsfc_wire::buffer::DEFAULT_TAILROOM;

/// Most datagrams one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Most bytes one UDP send or coalesced receive may carry.
const MAX_GSO_BYTES: usize = 65_000;
/// Receive and send buffer of the socket.
const SOCKET_BUFFER: usize = 8 << 20;
/// Most bytes one receive returns (a coalesced one included).
const MAX_RECEIVE: usize = 65_536;
/// Datagram size expected before the first coalesced receive said otherwise (a 1500-byte link).
const FIRST_SEGMENT_GUESS: usize = 1_472;

/// Sockets that send with flow entropy in their source port (RFC 7510 §3): a flow's packets
/// leave from `senders[entropy % SENDERS]`, so ECMP and RSS on the underlay spread a link's flows
/// over up to this many paths and queues while each flow keeps one.
const SENDERS: usize = 16;
/// The ephemeral range RFC 7510 §3 asks the entropy port to come from.
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;

pub(crate) struct UdpLink {
    pub(crate) sock: UdpSocket,
    /// Send-only sockets on ports of the ephemeral range, bound to the same address as `sock`
    /// (what arrives on them is never read: their receive buffers are the kernel's smallest).
    senders: Vec<UdpSocket>,
    gso: bool,
    /// Buffers a receive scatters into, `segment` bytes each.
    staged: Vec<PacketBuf>,
    /// The size of the datagrams of the last coalesced receive.
    segment: usize,
    /// What does not fit into the staged buffers.
    overflow: Vec<u8>,
    cmsg: Vec<u8>,
    /// Packets waiting for [`flush`](Self::flush), in verdict order, with the socket each
    /// leaves from (0: `sock`, k: `senders[k - 1]`).
    pending: Vec<(SocketAddr, usize, PacketBuf)>,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flushed {
    pub sent: u64,
    pub failed: u64,
    /// Refused by the kernel as larger than the path (EMSGSIZE), not among `failed`.
    pub too_big: u64,
    pub syscalls: u64,
}

impl UdpLink {
    pub(crate) fn new(sock: UdpSocket) -> Self {
        // Bursts from a peer must wait in the socket, not be lost there: ask for large buffers
        // (the forced variants pass the system limit with CAP_NET_ADMIN; else the plain ones).
        if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER);
        }
        if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER);
        }
        // Without GRO the kernel hands us one datagram per receive; that works too.
        let _ = setsockopt(&sock, sockopt::UdpGroSegment, &true);
        let senders = sock.local_addr().map(|a| bind_senders(a, SENDERS)).unwrap_or_default();
        Self {
            sock,
            senders,
            gso: true,
            staged: Vec::new(),
            segment: FIRST_SEGMENT_GUESS,
            overflow: vec![0; MAX_RECEIVE],
            cmsg: nix::cmsg_space!(i32),
            pending: Vec::with_capacity(256),
        }
    }

    /// Receives one (possibly coalesced) buffer and calls `each` with every datagram in it, each
    /// in a buffer of its own (from `pool`). `Ok(false)` when nothing was waiting.
    pub(crate) fn recv(
        &mut self,
        pool: &mut Vec<PacketBuf>,
        mut each: impl FnMut(SocketAddr, PacketBuf),
    ) -> std::io::Result<bool> {
        let fd = self.sock.as_raw_fd();
        let segment = self.segment;
        let staged = MAX_RECEIVE.div_ceil(segment).min(MAX_SEGMENTS);
        self.stage(pool, staged);
        let (n, from, seg) = {
            let mut iov: [IoSliceMut<'_>; MAX_SEGMENTS + 1] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
            for (slot, b) in iov.iter_mut().zip(self.staged.iter_mut()) {
                *slot = IoSliceMut::new(&mut b.spare_mut(DEFAULT_TAILROOM)[..segment]);
            }
            iov[staged] = IoSliceMut::new(&mut self.overflow);
            let msg =
                match recvmsg::<SockaddrStorage>(fd, &mut iov[..=staged], Some(&mut self.cmsg), MsgFlags::MSG_DONTWAIT)
                {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EAGAIN) => return Ok(false),
                    Err(e) => return Err(e.into()),
                };
            let seg = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                    _ => None,
                })
                .filter(|&s| s > 0);
            let from = msg.address.and_then(|a: SockaddrStorage| to_std(&a));
            (msg.bytes, from, seg)
        };
        let Some(from) = from else { return Ok(true) };
        if n == 0 {
            // An empty datagram: the engine counts it as a drop like any other bad packet.
            each(from, take_buffer(pool, 0));
            return Ok(true);
        }
        // One datagram, or several of `seg` bytes each (the last may be shorter).
        let seg = seg.unwrap_or(n).max(1);
        let matched = seg == segment || (n <= segment && seg == n);
        let count = n.div_ceil(seg);
        // Datagram k landed whole in staged buffer k: handed on as it is.
        let moved = if matched { count.min(staged) } else { 0 };
        for k in 0..moved {
            let len = seg.min(n - k * seg);
            let fresh = take_buffer(pool, segment);
            let mut b = core::mem::replace(&mut self.staged[k], fresh);
            if b.push_back(len).is_ok() {
                each(from, b);
            }
        }
        // The rest (past the staged buffers, or of another size) is copied out of the scattered
        // bytes; the buffers handed on above lie before it.
        for k in moved..count {
            let (at, len) = (k * seg, seg.min(n - k * seg));
            let mut b = take_buffer(pool, len);
            let copied = b
                .spare_mut(DEFAULT_TAILROOM)
                .get_mut(..len)
                .is_some_and(|out| gather(&self.staged[..staged], segment, &self.overflow, at, out));
            if copied && b.push_back(len).is_ok() {
                each(from, b);
            } else {
                give_back(pool, b);
            }
        }
        if !matched {
            self.segment = seg.min(MAX_PACKET);
        }
        Ok(true)
    }

    /// Makes sure the first `count` staged buffers are empty and hold a datagram of the
    /// expected size.
    fn stage(&mut self, pool: &mut Vec<PacketBuf>, count: usize) {
        let segment = self.segment;
        for b in &mut self.staged {
            if b.spare(DEFAULT_TAILROOM).len() < segment {
                *b = take_buffer(pool, segment);
            }
        }
        while self.staged.len() < count {
            self.staged.push(take_buffer(pool, segment));
        }
    }

    /// Queues `b` for `to`, from the entropy port of its flow (`b.meta.entropy`) or, without
    /// one (probes, packets whose flow no hop saw), from the listening port.
    pub(crate) fn queue(&mut self, to: SocketAddr, b: PacketBuf) {
        let from = match (b.meta.entropy, self.senders.len()) {
            (0, _) | (_, 0) => 0,
            // Multiplicative hashing: entropy values that differ only in high bits (the previous
            // hop's ports) still spread over the senders.
            (e, n) => 1 + (u32::from(e).wrapping_mul(0x9e37_79b1) >> 16) as usize % n,
        };
        self.pending.push((to, from, b));
    }

    /// The source ports packets leave from: the listening port, then the entropy ports.
    #[cfg(test)]
    pub(crate) fn source_ports(&self) -> Vec<u16> {
        core::iter::once(&self.sock)
            .chain(&self.senders)
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
            .collect()
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends everything queued, in order: each run of same-size packets to one peer (the last
    /// may be shorter) in one GSO send. Buffers go back through `recycle`.
    pub(crate) fn flush(&mut self, mut recycle: impl FnMut(PacketBuf)) -> Flushed {
        let mut f = Flushed::default();
        let mut pending = core::mem::take(&mut self.pending);
        let mut i = 0;
        while i < pending.len() {
            let (to, from, size) = (pending[i].0, pending[i].1, pending[i].2.len());
            let mut j = i + 1;
            if self.gso {
                let mut total = size;
                while j < pending.len()
                    && j - i < MAX_SEGMENTS
                    && pending[j].0 == to
                    && pending[j].1 == from
                    && pending[j].2.len() <= size
                    && total + pending[j].2.len() <= MAX_GSO_BYTES
                {
                    total += pending[j].2.len();
                    j += 1;
                    if pending[j - 1].2.len() < size {
                        break; // a shorter one ends a run
                    }
                }
            }
            let run = &pending[i..j];
            let sock = match from.checked_sub(1).and_then(|k| self.senders.get(k)) {
                Some(s) => s,
                None => &self.sock,
            };
            let sent: Result<(), nix::errno::Errno> = if run.len() == 1 {
                sock.send_to(run[0].2.as_slice(), to).map(drop).map_err(errno)
            } else {
                // The kernel gathers the packets from their own buffers: no copy here.
                let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
                for (slot, (_, _, b)) in iov.iter_mut().zip(run) {
                    *slot = IoSlice::new(b.as_slice());
                }
                let seg = size as u16;
                let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
                let addr = SockaddrStorage::from(to);
                match sendmsg(sock.as_raw_fd(), &iov[..run.len()], &cmsg, MsgFlags::empty(), Some(&addr)) {
                    Ok(_) => Ok(()),
                    Err(nix::errno::Errno::EIO | nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => {
                        // No GSO on this path: send them one by one from now on.
                        self.gso = false;
                        run.iter().try_for_each(|(_, _, b)| sock.send_to(b.as_slice(), to).map(drop).map_err(errno))
                    }
                    Err(e) => Err(e),
                }
            };
            let n = run.len() as u64;
            match sent {
                Ok(()) => f.sent += n,
                Err(nix::errno::Errno::EMSGSIZE) => f.too_big += n,
                Err(_) => f.failed += n,
            }
            f.syscalls += 1;
            i = j;
        }
        for (_, _, b) in pending.drain(..) {
            recycle(b);
        }
        self.pending = pending;
        f
    }
}

fn errno(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// The entropy a datagram brings from the previous hop: its source port if it is one of the
/// ephemeral range (RFC 7510 §3), which the packet keeps on its next hop; else none (0).
pub(crate) fn entropy_of_port(port: u16) -> u16 {
    if EPHEMERAL.contains(&port) { port } else { 0 }
}

/// Up to `count` send-only sockets on `local`'s address, on ports of the ephemeral range from a
/// start of this process's own (ports in use are passed over). Their receive buffers are the
/// kernel's smallest: nothing reads them, so what a stranger sends there costs a few KiB.
fn bind_senders(local: SocketAddr, count: usize) -> Vec<UdpSocket> {
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut out = Vec::with_capacity(count);
    for k in 0..span.min(4 * count as u32) {
        if out.len() == count {
            break;
        }
        // Spread over the range: the k-th try lies span/count further on (then in between).
        let step = span / count.max(1) as u32;
        let offset = (start + k * step + k / count.max(1) as u32) % span;
        let port = EPHEMERAL.start() + offset as u16;
        let Ok(s) = UdpSocket::bind(SocketAddr::new(local.ip(), port)) else { continue };
        let _ = setsockopt(&s, sockopt::RcvBuf, &0);
        if setsockopt(&s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&s, sockopt::SndBuf, &SOCKET_BUFFER);
        }
        if s.set_nonblocking(true).is_ok() {
            out.push(s);
        }
    }
    out
}

/// Copies `out.len()` bytes from offset `at` of what a scatter receive wrote: `segment` bytes into
/// each of `staged`, the rest into `overflow`. False if they were not all there.
fn gather(staged: &[PacketBuf], segment: usize, overflow: &[u8], mut at: usize, out: &mut [u8]) -> bool {
    let mut done = 0;
    while done < out.len() {
        let piece = match staged.get(at / segment) {
            Some(b) => b.spare(DEFAULT_TAILROOM).get(at % segment..segment),
            None => overflow.get(at - staged.len() * segment..),
        };
        let Some(piece) = piece.filter(|p| !p.is_empty()) else { return false };
        let n = piece.len().min(out.len() - done);
        out[done..done + n].copy_from_slice(&piece[..n]);
        done += n;
        at += n;
    }
    true
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use zsfc_wire::buffer::DEFAULT_HEADROOM;

    fn link() -> UdpLink {
        UdpLink::new(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Datagram `i` of a test burst: its number, then a pattern of its own.
    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| if j == 0 { i as u8 } else { (i * 31 + j) as u8 }).collect()
    }

    /// Sends the datagrams in one flush (one GSO send per run of equal sizes).
    fn send(tx: &mut UdpLink, to: SocketAddr, sizes: &[usize]) {
        for (i, &len) in sizes.iter().enumerate() {
            tx.queue(to, PacketBuf::from_slice(&datagram(i, len)));
        }
        let f = tx.flush(|_| {});
        assert_eq!(f.sent, sizes.len() as u64);
    }

    /// Receives `count` datagrams (within 2 s); returns them and the number of receive calls.
    fn receive(rx: &mut UdpLink, pool: &mut Vec<PacketBuf>, count: usize) -> (Vec<PacketBuf>, usize) {
        let (mut got, mut calls) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < count && Instant::now() < deadline {
            if rx.recv(pool, |_, b| got.push(b)).unwrap() {
                calls += 1;
            }
        }
        (got, calls)
    }

    fn assert_burst(got: &[PacketBuf], sizes: &[usize]) {
        assert_eq!(got.len(), sizes.len());
        for (i, (b, &len)) in got.iter().zip(sizes).enumerate() {
            assert_eq!(b.as_slice(), datagram(i, len).as_slice(), "datagram {i}");
            assert_eq!(b.headroom(), DEFAULT_HEADROOM, "datagram {i} keeps the headroom for labels");
        }
    }

    #[test]
    fn coalesced_bursts_of_the_expected_and_of_other_sizes_come_out_whole() {
        let (mut tx, mut rx, mut pool) = (link(), link(), Vec::new());
        let to = rx.sock.local_addr().unwrap();

        // The size expected at first: scattered straight into the staged buffers.
        let sizes = [FIRST_SEGMENT_GUESS; 10];
        send(&mut tx, to, &sizes);
        let (got, calls) = receive(&mut rx, &mut pool, sizes.len());
        assert_burst(&got, &sizes);
        assert!(calls < sizes.len(), "the kernel coalesced the burst ({calls} receives)");

        // Another size (and a shorter last one): copied out, and expected from then on.
        let sizes = [1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 300];
        send(&mut tx, to, &sizes);
        let (got, _) = receive(&mut rx, &mut pool, sizes.len());
        assert_burst(&got, &sizes);
        assert_eq!(rx.segment, 1_000);
        send(&mut tx, to, &sizes);
        let (got, _) = receive(&mut rx, &mut pool, sizes.len());
        assert_burst(&got, &sizes);

        // Jumbo datagrams, then a lone small one.
        let sizes = [8_972; 5];
        send(&mut tx, to, &sizes);
        let (got, _) = receive(&mut rx, &mut pool, sizes.len());
        assert_burst(&got, &sizes);
        send(&mut tx, to, &[64]);
        let (got, _) = receive(&mut rx, &mut pool, 1);
        assert_burst(&got, &[64]);

        // An empty datagram reaches the engine (to be counted) and changes no expectation.
        tx.sock.send_to(&[], to).unwrap();
        let (got, _) = receive(&mut rx, &mut pool, 1);
        assert_eq!(got.len(), 1);
        assert!(got[0].is_empty());
        assert_eq!(rx.segment, 8_972);
    }

    #[test]
    fn a_flow_leaves_from_one_entropy_port_and_flows_spread_over_several() {
        let (mut tx, rx) = (link(), UdpSocket::bind("127.0.0.1:0").unwrap());
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = rx.local_addr().unwrap();
        let ports = tx.source_ports();
        assert_eq!(ports.len(), 1 + SENDERS, "{ports:?}");
        assert!(ports[1..].iter().all(|p| EPHEMERAL.contains(p)), "{ports:?}");
        // Entropy values as the classifier makes them (one per flow), each sent twice, and
        // one packet without entropy (a probe).
        let flows: Vec<u16> = (0..64u32).map(zsfc_wire::mpls::in_udp::entropy_port).collect();
        let mut seen = std::collections::HashMap::new();
        for round in 0..2 {
            for &e in flows.iter().chain([&0]) {
                let mut b = PacketBuf::from_slice(&e.to_be_bytes());
                b.meta.entropy = e;
                tx.queue(to, b);
                assert_eq!(tx.flush(|_| {}).sent, 1);
                let mut got = [0u8; 2];
                let (_, from) = rx.recv_from(&mut got).unwrap();
                let was = seen.insert(u16::from_be_bytes(got), from.port());
                assert!(round == 0 || was == Some(from.port()), "flow {e} changed its source port");
            }
        }
        assert_eq!(seen[&0], ports[0], "no entropy: the listening port");
        let used: std::collections::HashSet<u16> = flows.iter().map(|e| seen[e]).collect();
        assert!(used.len() >= SENDERS / 2, "64 flows left from only {} ports", used.len());
        assert!(!used.contains(&ports[0]));
        // The port a packet came from is the entropy it keeps on its next hop.
        assert_eq!(entropy_of_port(ports[1]), ports[1]);
        assert_eq!(entropy_of_port(zsfc_wire::mpls::in_udp::PORT), 0);
    }

    #[test]
    fn gather_reads_across_staged_buffers_and_the_overflow() {
        let mut staged = Vec::new();
        for part in [b"abcd", b"efgh"] {
            let mut b = PacketBuf::new(DEFAULT_HEADROOM + 4 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            b.spare_mut(DEFAULT_TAILROOM)[..4].copy_from_slice(part);
            staged.push(b);
        }
        let overflow = b"ijkl";
        let mut out = [0u8; 6];
        assert!(gather(&staged, 4, overflow, 3, &mut out));
        assert_eq!(&out, b"defghi");
        assert!(gather(&staged, 4, overflow, 6, &mut out));
        assert_eq!(&out, b"ghijkl");
        // Past the end of what was received: refused, not a panic.
        assert!(!gather(&staged, 4, overflow, 7, &mut out));
    }
}
