//! MPLS-in-UDP between nodes with UDP GSO and GRO: packets of one burst to one peer leave in one
//! `sendmsg` (the kernel carries them as one buffer through its stack and the veth/bridge, and
//! cuts them into datagrams only where it must), and arrive coalesced in one `recvmsg` that we
//! cut back into datagrams. On the wire they are ordinary datagrams, one packet each (RFC 7510).
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt, sockopt,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use zsfc_dataplane::PacketBuf;

/// Most datagrams one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Most bytes one UDP send or coalesced receive may carry.
const MAX_GSO_BYTES: usize = 65_000;
/// Receive and send buffer of the socket.
const SOCKET_BUFFER: usize = 8 << 20;

pub(crate) struct UdpLink {
    pub(crate) sock: UdpSocket,
    gso: bool,
    rx: Vec<u8>,
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
        Self { sock, gso: true, rx: vec![0; 65_536], cmsg: nix::cmsg_space!(i32), pending: Vec::with_capacity(256) }
    }

    /// Receives one (possibly coalesced) buffer and calls `each` with every datagram in it.
    /// `Ok(false)` when nothing was waiting.
    pub(crate) fn recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> std::io::Result<bool> {
        let fd = self.sock.as_raw_fd();
        let (n, from, seg) = {
            let mut iov = [IoSliceMut::new(&mut self.rx)];
            let msg = match recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut self.cmsg), MsgFlags::MSG_DONTWAIT) {
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
        let data = &self.rx[..n];
        match seg {
            Some(s) => data.chunks(s).for_each(|d| each(from, d)),
            None => each(from, data),
        }
        Ok(true)
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

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
