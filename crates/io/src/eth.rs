//! Ethernet + MPLS (ethertype 0x8847) on an L2 link such as a veth, as in the seed testbed: an
//! AF_PACKET socket bound to the interface. Frames carry the label stack right after the
//! Ethernet header; a peer is known by its MAC address. The kernel has no MPLS here, so it
//! ignores these frames and only we see them.
//!
//! Frames arrive through a receive ring ([`crate::ring`]: no system call per frame) and
//! leave in batches of up to 64 per system call (`sendmmsg`). The socket is bound to MPLS
//! unicast frames (ethertype 0x8847): ARP, neighbour discovery and the host's own IP traffic on
//! the link never reach it, nor do the frames this host sends.
//!
//! Worker lanes share the link through a fanout group: each lane has its own socket and ring,
//! and the kernel hands every frame to the lane it names ([`LaneMark`]): the top byte of the
//! link ESP SPI when link protection is on, else the traffic class of the top label, which the
//! sending lane sets (lane k of a node talks to lane k of its peers, as over MPLS-in-UDP).
use crate::ring::{LaneMark, RingKind, RxRing, bind_ethertype, ignore_outgoing, join_lanes};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, MultiHeaders, SockFlag, SockProtocol, SockType, bind, sendmmsg, setsockopt,
    socket, sockopt,
};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use zsfc_dataplane::PacketBuf;
use zsfc_wire::buffer::{DEFAULT_HEADROOM, DEFAULT_TAILROOM};

/// Frames per system call.
const ETH_BATCH: usize = 64;
/// Receive and send buffer of the socket.
const SOCKET_BUFFER: usize = 8 << 20;

const ETHERTYPE_MPLS: u16 = zsfc_wire::ethernet::ethertype::MPLS;
const HEADER: usize = zsfc_wire::ethernet::HEADER_LEN;
/// `sll_pkttype` of a frame this host sent (AF_PACKET sockets see those too).
const PACKET_OUTGOING: u8 = 4;

pub(crate) struct EthLink {
    fd: OwnedFd,
    pub(crate) mac: [u8; 6],
    pub(crate) interface: String,
    ring: RxRing,
    /// Frames waiting for [`flush`](Self::flush).
    pending: Vec<PacketBuf>,
    /// No destination address: the socket is bound to its interface and frames carry their MAC.
    no_addrs: Vec<Option<LinkAddr>>,
    /// The traffic class this lane writes into the top label of what it sends.
    tc: Option<u8>,
    /// The lanes' fanout group, if this link is shared by lanes.
    pub(crate) group: Option<u16>,
}

/// How one lane joins a link shared by several.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneJoin {
    pub index: u16,
    pub mark: LaneMark,
    /// The group lane 0 created (`None` for lane 0 itself).
    pub group: Option<u16>,
}

/// What a received frame is.
pub(crate) enum Frame {
    /// An MPLS frame from `src`; the buffer holds the label stack onwards.
    Mpls { src: [u8; 6], buf: PacketBuf },
    /// Anything else: the socket is bound to MPLS frames, so only a frame this host sent (which
    /// `PACKET_IGNORE_OUTGOING` keeps away too) or a runt.
    Other,
    /// An MPLS frame not addressed to this interface: broadcast, multicast, or unicast to
    /// another address (flooded by a switch, or seen in promiscuous mode).
    NotForUs,
    /// An MPLS frame that carried an 802.1Q or 802.1ad tag.
    Tagged,
}

/// A non-blocking AF_PACKET socket on `interface` for the frames of `ethertype` (every frame
/// without one; none with ethertype 0: a socket that only sends), and the interface's MAC.
fn bind_to(interface: &str, ethertype: Option<u16>) -> io::Result<(OwnedFd, [u8; 6])> {
    let link = nix::ifaddrs::getifaddrs()?
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface named {interface:?}")))?;
    let mac = link.addr().ok_or_else(|| io::Error::other(format!("{interface} has no MAC address")))?;
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = match ethertype {
        // No protocol until bound: nothing of another type is queued in between.
        Some(t) => {
            let fd = socket(AddressFamily::Packet, SockType::Raw, flags, None)?;
            bind_ethertype(fd.as_fd(), link.ifindex() as u32, t)?;
            fd
        }
        None => {
            let fd = socket(AddressFamily::Packet, SockType::Raw, flags, SockProtocol::EthAll)?;
            bind(fd.as_raw_fd(), &link)?;
            fd
        }
    };
    ignore_outgoing(fd.as_fd())?;
    Ok((fd, mac))
}

impl EthLink {
    pub(crate) fn open(interface: &str, ring: RingKind, lane: Option<LaneJoin>) -> io::Result<Self> {
        let (fd, mac) = bind_to(interface, Some(ETHERTYPE_MPLS))?;
        let ring = RxRing::attach(fd.as_fd(), interface, ring)?;
        let group = match lane {
            Some(l) => Some(join_lanes(fd.as_fd(), l.group, l.mark)?),
            None => None,
        };
        let tc = lane.filter(|l| l.mark == LaneMark::LabelTc).map(|l| l.index as u8);
        if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
        }
        Ok(Self {
            fd,
            mac,
            interface: interface.to_owned(),
            ring,
            pending: Vec::with_capacity(ETH_BATCH),
            no_addrs: vec![None; ETH_BATCH],
            tc,
            group,
        })
    }

    /// Receives up to a batch of frames from the ring; calls `each` with every one, an MPLS
    /// frame's label stack onwards copied into a buffer from `fresh(len)`. Returns
    /// how many frames it saw (fewer than a batch: the ring is empty for now).
    pub(crate) fn recv_batch(
        &mut self,
        mut fresh: impl FnMut(usize) -> PacketBuf,
        mut each: impl FnMut(Frame),
    ) -> usize {
        let mac = self.mac;
        self.ring.recv(ETH_BATCH, |f, meta| {
            if meta.pkttype == PACKET_OUTGOING
                || f.len() <= HEADER
                || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_MPLS
            {
                return each(Frame::Other);
            }
            // The links carry untagged frames; a tag means the frame came from some other
            // network. The kernel takes the tag off the bytes: for a VLAN with no device of its
            // own it marks the frame as for another host (so: to our address, yet "other host"),
            // otherwise it says so in the ring (`tagged`). A frame with two tags (802.1ad) keeps
            // its inner 802.1Q type and never reaches this MPLS socket.
            if meta.tagged || (meta.pkttype == PACKET_OTHERHOST && f[..6] == mac) {
                return each(Frame::Tagged);
            }
            // Only unicast to this interface's own address: a broadcast, multicast or flooded
            // frame would be forwarded by every node that sees it.
            if meta.pkttype != PACKET_HOST || f[..6] != mac {
                return each(Frame::NotForUs);
            }
            let mut buf = fresh(f.len() - HEADER);
            if buf.set(&f[HEADER..], DEFAULT_HEADROOM).is_err() {
                return each(Frame::Other);
            }
            let mut src = [0u8; 6];
            src.copy_from_slice(&f[6..12]);
            each(Frame::Mpls { src, buf });
        })
    }

    /// Frames the ring could not deliver whole (cut by the kernel, or in an inconsistent block).
    pub(crate) fn ring_errors(&self) -> u64 {
        self.ring.truncated + self.ring.malformed
    }

    /// Queues the labelled packet in `b` for `dst`, adding the Ethernet header in the headroom.
    /// Returns `false` (and the buffer is dropped) when there is no headroom.
    pub(crate) fn queue(&mut self, dst: [u8; 6], mut b: PacketBuf) -> bool {
        let Ok(h) = b.push_front(HEADER) else { return false };
        h[..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&self.mac);
        h[12..14].copy_from_slice(&ETHERTYPE_MPLS.to_be_bytes());
        if let Some(tc) = self.tc
            && let Some(x) = b.as_mut_slice().get_mut(HEADER + 2)
        {
            // The top label's traffic class names this lane to the receiving node's fanout.
            *x = (*x & 0xf1) | (tc << 1);
        }
        self.pending.push(b);
        true
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends every queued frame in batches; returns (sent, failed). Buffers go to `recycle`.
    pub(crate) fn flush(&mut self, mut recycle: impl FnMut(PacketBuf)) -> (u64, u64) {
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut pending = core::mem::take(&mut self.pending);
        let mut hdrs = MultiHeaders::<LinkAddr>::preallocate(ETH_BATCH, None);
        for chunk in pending.chunks(ETH_BATCH) {
            let mut it = chunk.iter();
            let iovs: [[IoSlice<'_>; 1]; ETH_BATCH] =
                std::array::from_fn(|_| [IoSlice::new(it.next().map_or(&[][..], PacketBuf::as_slice))]);
            let n = chunk.len();
            let r = sendmmsg(
                self.fd.as_raw_fd(),
                &mut hdrs,
                iovs[..n].iter(),
                &self.no_addrs[..n],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            let ok = r.map(Iterator::count).unwrap_or(0) as u64;
            sent += ok;
            failed += n as u64 - ok;
        }
        pending.drain(..).for_each(&mut recycle);
        self.pending = pending;
        (sent, failed)
    }
}

impl AsFd for EthLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// IP packets in Ethernet frames on one interface, for the veth attachment circuit of an
/// external SF: frames go to the SF's MAC address, and the frames addressed to this interface
/// come back. One frame per system call (an attachment carries one SF's traffic).
pub(crate) struct IpOverEthernet {
    fd: OwnedFd,
    mac: [u8; 6],
    /// Where frames go (the SF's interface); `None` for a receive-only side.
    peer: Option<[u8; 6]>,
}

/// `sll_pkttype` of a frame addressed to this host.
const PACKET_HOST: u8 = 0;
const PACKET_OTHERHOST: u8 = 3;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

impl IpOverEthernet {
    pub(crate) fn open(interface: &str, peer: Option<[u8; 6]>) -> io::Result<Self> {
        // The sending side never reads: bound to no ethertype, the kernel hands it no frame
        // (bound to every type, each frame on the link was cloned to it and dropped).
        let (fd, mac) = bind_to(interface, peer.map(|_| 0))?;
        if peer.is_none() && setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
            // The receiving side holds a burst coming back from the SF.
            let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
        }
        Ok(Self { fd, mac, peer })
    }

    /// Sends the IP packet in `b` in a frame to the peer (the header goes into the headroom).
    pub(crate) fn send(&self, b: &mut PacketBuf) -> io::Result<()> {
        let peer = self.peer.ok_or_else(|| io::Error::other("a receive-only side"))?;
        let ethertype = if b.as_slice().first().is_some_and(|v| v >> 4 == 6) { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        let h = b.push_front(HEADER).map_err(|e| io::Error::other(e.to_string()))?;
        h[..6].copy_from_slice(&peer);
        h[6..12].copy_from_slice(&self.mac);
        h[12..14].copy_from_slice(&ethertype.to_be_bytes());
        nix::sys::socket::send(self.fd.as_raw_fd(), b.as_slice(), MsgFlags::MSG_DONTWAIT)?;
        Ok(())
    }

    /// Receives one frame into `b` (empty, with headroom): `Ok(Some(true))` when it held an IP
    /// packet addressed to us (now alone in `b`), `Ok(Some(false))` for any other frame,
    /// `Ok(None)` when nothing waits.
    pub(crate) fn recv(&self, b: &mut PacketBuf) -> io::Result<Option<bool>> {
        let mut pkttype = PACKET_HOST;
        let fd = self.fd.as_raw_fd();
        let got = b.append_with(DEFAULT_TAILROOM, |space| {
            nix::sys::socket::recvfrom::<LinkAddr>(fd, space)
                .map(|(n, a)| {
                    pkttype = a.map_or(PACKET_HOST, |a| a.pkttype());
                    n
                })
                .map_err(io::Error::from)
        });
        match got {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let f = b.as_slice();
        let ours = pkttype == PACKET_HOST
            && f.len() > HEADER
            && f[..6] == self.mac
            && matches!(u16::from_be_bytes([f[12], f[13]]), ETHERTYPE_IPV4 | ETHERTYPE_IPV6);
        if !ours || b.pull_front(HEADER).is_err() {
            return Ok(Some(false));
        }
        Ok(Some(true))
    }
}

impl AsFd for IpOverEthernet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn ip(args: &str) {
        let ok = Command::new("ip").args(args.split(' ')).status().unwrap().success();
        assert!(ok, "ip {args}");
    }

    /// The veth pair `va`/`vb`, up, in a network namespace of this test thread alone: it goes
    /// with the thread, whatever happens, and `ip` (forked from this thread) works in it.
    fn veth_pair_of_this_thread() {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        assert!(root, "this test needs root (CI machines run as root)");
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        ip("link add va type veth peer name vb");
        ip("link set va up");
        ip("link set vb up");
    }

    /// Lanes `0..count` of one node on `dev`, joined in lane order.
    fn lanes(dev: &str, count: u16, mark: LaneMark) -> Vec<EthLink> {
        let mut out: Vec<EthLink> = Vec::new();
        for index in 0..count {
            let group = out.first().and_then(|l| l.group);
            out.push(EthLink::open(dev, RingKind::Frames, Some(LaneJoin { index, mark, group })).unwrap());
        }
        out
    }

    /// The labels (first label value of each MPLS frame) each lane receives within 2 s, once
    /// `want` frames arrived in all, and how many other frames they saw.
    fn received(lanes: &mut [EthLink], want: usize) -> (Vec<Vec<u32>>, usize) {
        let (mut got, mut other) = (vec![Vec::new(); lanes.len()], 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
            for (lane, l) in lanes.iter_mut().enumerate() {
                l.recv_batch(
                    |len| PacketBuf::new(DEFAULT_HEADROOM + len + DEFAULT_TAILROOM, DEFAULT_HEADROOM),
                    |f| match f {
                        Frame::Mpls { buf, .. } => {
                            let b = buf.as_slice();
                            got[lane].push(u32::from_be_bytes([0, b[0], b[1], b[2]]) >> 4);
                        }
                        Frame::Other | Frame::NotForUs | Frame::Tagged => other += 1,
                    },
                );
            }
        }
        (got, other)
    }

    /// The attachment circuit's sending side: frames go out, none is queued for it to read.
    #[test]
    fn the_sending_side_of_an_attachment_sends_frames_and_receives_none() {
        veth_pair_of_this_thread();
        let rx = IpOverEthernet::open("vb", None).unwrap();
        let tx = IpOverEthernet::open("va", Some(rx.mac)).unwrap();
        // Toward the SF, and frames coming back on the same link.
        let back = IpOverEthernet::open("vb", Some(tx.mac)).unwrap();
        for i in 0..10u8 {
            let mut b = PacketBuf::new(DEFAULT_HEADROOM + 64 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            b.push_back(40).unwrap().fill(i);
            b.as_mut_slice()[0] = 0x45;
            tx.send(&mut b).unwrap();
            let mut b = PacketBuf::new(DEFAULT_HEADROOM + 64 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            b.push_back(40).unwrap().fill(i);
            b.as_mut_slice()[0] = 0x60;
            back.send(&mut b).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 10 && Instant::now() < deadline {
            let mut b = PacketBuf::new(DEFAULT_HEADROOM + 1600 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            if rx.recv(&mut b).unwrap() == Some(true) {
                got.push(b.as_slice()[1]);
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>(), "the receiving side gets every IPv4 packet, in order");
        // Ten IPv6 frames arrived at `va` from `back`: the sending side was handed none.
        let mut b = PacketBuf::new(DEFAULT_HEADROOM + 1600 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
        assert_eq!(tx.recv(&mut b).unwrap(), None, "a frame was queued to a socket that only sends");
    }

    /// A frame body: one label (value `label`, traffic class 7, bottom of stack) or, as link
    /// ESP would start, an SPI whose top byte is `label`'s lane.
    fn body(first: [u8; 4]) -> PacketBuf {
        let mut b = PacketBuf::new(DEFAULT_HEADROOM + 64 + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
        b.push_back(64).unwrap().fill(0x5a);
        b.as_mut_slice()[..4].copy_from_slice(&first);
        b
    }

    #[test]
    fn lanes_sharing_a_link_each_receive_the_frames_marked_for_them_and_no_other_frame() {
        veth_pair_of_this_thread();

        // Without link ESP: the sending lane writes its number into the top label's traffic
        // class (whatever was there), the receiving node's fanout reads it.
        let mut rx = lanes("vb", 2, LaneMark::LabelTc);
        let mut tx = lanes("va", 2, LaneMark::LabelTc);
        let to = rx[0].mac;
        for i in 0..20u32 {
            let label = 1000 + i;
            let first = ((label << 12) | 0b1111 << 8 | 64).to_be_bytes();
            let lane = (i % 2) as usize;
            assert!(tx[lane].queue(to, body(first)));
        }
        // And an IPv4 frame (the kind the host's own stack sends on the link): not for us.
        assert!(tx[0].queue(to, body([0x45, 0, 0, 64])));
        tx[0].pending.last_mut().unwrap().as_mut_slice()[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(tx[0].flush(drop), (11, 0));
        assert_eq!(tx[1].flush(drop), (10, 0));
        let (got, other) = received(&mut rx, 20);
        assert_eq!(other, 0, "the sockets see MPLS frames only");
        assert_eq!(got[0], (0..20).step_by(2).map(|i| 1000 + i).collect::<Vec<_>>(), "lane 0");
        assert_eq!(got[1], (1..20).step_by(2).map(|i| 1000 + i).collect::<Vec<_>>(), "lane 1");
        drop((rx, tx));

        // With link ESP: the SPI's top byte is the lane (lane k's SAs have k there); nothing
        // is rewritten on the way out.
        let mut rx = lanes("vb", 3, LaneMark::LinkSpi);
        let mut tx = EthLink::open("va", RingKind::Frames, None).unwrap();
        for i in 0..30u32 {
            let spi = (i % 3) << 24 | 0x100 | i;
            assert!(tx.queue(to, body(spi.to_be_bytes())));
        }
        assert_eq!(tx.flush(drop), (30, 0));
        let (got, _) = received(&mut rx, 30);
        for (lane, g) in got.iter().enumerate() {
            // The "label" read back is the SPI's top 20 bits: the lane in its top byte.
            let want: Vec<u32> =
                (0..30u32).filter(|i| i % 3 == lane as u32).map(|i| ((i % 3) << 24 | 0x100 | i) >> 12).collect();
            assert_eq!(*g, want, "lane {lane}");
        }
    }
}
