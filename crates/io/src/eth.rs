//! Ethernet + MPLS (ethertype 0x8847) on an L2 link such as a veth, as in the seed testbed: an
//! AF_PACKET socket bound to the interface. Frames carry the label stack right after the
//! Ethernet header; a peer is known by its MAC address. The kernel has no MPLS here, so it
//! ignores these frames and only we see them.
//!
//! One frame per system call for now; the TPACKET_V3 ring PLATFORM.md measured (about twice
//! the packet rate) needs a raw `mmap` and comes with its own `unsafe`-permitted module.
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, bind, recvfrom, send, socket,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use zsfc_dataplane::PacketBuf;
use zsfc_wire::buffer::DEFAULT_TAILROOM;

pub(crate) const ETHERTYPE_MPLS: u16 = 0x8847;
const HEADER: usize = 14;
/// `sll_pkttype` of a frame this host sent (AF_PACKET sockets see those too).
const PACKET_OUTGOING: u8 = 4;

pub(crate) struct EthLink {
    fd: OwnedFd,
    pub(crate) mac: [u8; 6],
    pub(crate) interface: String,
}

/// What a received frame is.
pub(crate) enum Frame {
    /// An MPLS frame from `src`; the buffer holds the label stack onwards.
    Mpls { src: [u8; 6] },
    /// Anything else on the link (ARP, IPv6 neighbour discovery, our own frames): not ours.
    Other,
}

impl EthLink {
    pub(crate) fn open(interface: &str) -> io::Result<Self> {
        let link = nix::ifaddrs::getifaddrs()?
            .filter(|a| a.interface_name == interface)
            .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface named {interface:?}")))?;
        let mac = link.addr().ok_or_else(|| io::Error::other(format!("{interface} has no MAC address")))?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )?;
        bind(fd.as_raw_fd(), &link)?;
        Ok(Self { fd, mac, interface: interface.to_owned() })
    }

    /// Receives one frame into `b` (which must be empty). `Ok(None)` when nothing waits.
    pub(crate) fn recv(&self, b: &mut PacketBuf) -> io::Result<Option<Frame>> {
        let mut from: Option<LinkAddr> = None;
        let fd = self.fd.as_raw_fd();
        match b.append_with(DEFAULT_TAILROOM, |space| {
            recvfrom::<LinkAddr>(fd, space)
                .map(|(n, a)| {
                    from = a;
                    n
                })
                .map_err(io::Error::from)
        }) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let f = b.as_slice();
        if from.is_some_and(|a| a.pkttype() == PACKET_OUTGOING)
            || f.len() <= HEADER
            || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_MPLS
        {
            return Ok(Some(Frame::Other));
        }
        let mut src = [0u8; 6];
        src.copy_from_slice(&f[6..12]);
        b.pull_front(HEADER).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Some(Frame::Mpls { src }))
    }

    /// Sends the labelled packet in `b` to `dst`, adding the Ethernet header in the headroom.
    pub(crate) fn send(&self, dst: [u8; 6], b: &mut PacketBuf) -> io::Result<()> {
        let h = b.push_front(HEADER).map_err(|e| io::Error::other(e.to_string()))?;
        h[..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&self.mac);
        h[12..14].copy_from_slice(&ETHERTYPE_MPLS.to_be_bytes());
        send(self.fd.as_raw_fd(), b.as_slice(), MsgFlags::MSG_DONTWAIT)?;
        Ok(())
    }
}

impl AsFd for EthLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
