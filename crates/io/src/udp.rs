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

pub(crate) struct UdpLink {
    pub(crate) sock: UdpSocket,
    gso: bool,
    /// Buffers a receive scatters into, `segment` bytes each.
    staged: Vec<PacketBuf>,
    /// The size of the datagrams of the last coalesced receive.
    segment: usize,
    /// What does not fit into the staged buffers.
    overflow: Vec<u8>,
    cmsg: Vec<u8>,
    /// Packets waiting for [`flush`](Self::flush), in verdict order.
    pending: Vec<(SocketAddr, PacketBuf)>,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flushed {
    pub sent: u64,
    pub failed: u64,
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
        Self {
            sock,
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

    pub(crate) fn queue(&mut self, to: SocketAddr, b: PacketBuf) {
        self.pending.push((to, b));
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
            let (to, size) = (pending[i].0, pending[i].1.len());
            let mut j = i + 1;
            if self.gso {
                let mut total = size;
                while j < pending.len()
                    && j - i < MAX_SEGMENTS
                    && pending[j].0 == to
                    && pending[j].1.len() <= size
                    && total + pending[j].1.len() <= MAX_GSO_BYTES
                {
                    total += pending[j].1.len();
                    j += 1;
                    if pending[j - 1].1.len() < size {
                        break; // a shorter one ends a run
                    }
                }
            }
            let run = &pending[i..j];
            let ok = if run.len() == 1 {
                self.sock.send_to(run[0].1.as_slice(), to).is_ok()
            } else {
                // The kernel gathers the packets from their own buffers: no copy here.
                let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
                for (slot, (_, b)) in iov.iter_mut().zip(run) {
                    *slot = IoSlice::new(b.as_slice());
                }
                let seg = size as u16;
                let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
                let addr = SockaddrStorage::from(to);
                match sendmsg(self.sock.as_raw_fd(), &iov[..run.len()], &cmsg, MsgFlags::empty(), Some(&addr)) {
                    Ok(_) => true,
                    Err(nix::errno::Errno::EIO | nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => {
                        // No GSO on this path: send them one by one from now on.
                        self.gso = false;
                        run.iter().all(|(_, b)| self.sock.send_to(b.as_slice(), to).is_ok())
                    }
                    Err(_) => false,
                }
            };
            let n = run.len() as u64;
            if ok {
                f.sent += n
            } else {
                f.failed += n
            }
            f.syscalls += 1;
            i = j;
        }
        for (_, b) in pending.drain(..) {
            recycle(b);
        }
        self.pending = pending;
        f
    }
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
