//! AF_PACKET receive rings (Linux `Documentation/networking/packet_mmap.rst`): the kernel copies
//! every frame of the interface into a buffer shared with us by `mmap`, so reading a frame is a
//! memory access instead of a system call (PLATFORM.md measured 0.11 µs per frame against 0.7 µs
//! with `recvmmsg`). Two layouts, chosen per node ([`RingKind`]):
//!
//! - **frames** (TPACKET_V2, the default): one fixed-size slot per frame, each handed over on its
//!   own and with its own wake-up, so a lone packet is read at once;
//! - **blocks** (TPACKET_V3): frames packed into blocks, a block handed over when it is full or
//!   after [`RETIRE_MS`]; fewer wake-ups and no slot waste, but a lone packet waits for the
//!   block's timer (measured on the seed testbed: +4 ms per HTTPS request over 3 Ethernet hops,
//!   for no throughput gain over frames in a forwarding node; see docs/BENCHMARKS.md).
//!
//! The project's only `unsafe` code lives here: setting the ring up (`setsockopt` with C structs,
//! `ioctl`, `mmap`), the atomic handover word of each slot or block, and reading what the kernel
//! has handed to us. Everything the kernel wrote (offsets, lengths) is bounds-checked like
//! untrusted input: a bad value ends the walk of that block or skips that slot, it never reads
//! outside it.
#![allow(unsafe_code, reason = "the shared ring needs mmap and the kernel's handover protocol")]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of the whole ring: 8 MiB, like the socket buffer it replaces.
const RING_BYTES: usize = 8 << 20;
/// Bytes per V3 block: holds about 85 frames of 1,514 bytes, 14 of 9,014, one of 65,535.
const BLOCK_SIZE: usize = 128 << 10;
/// Only used by the kernel to check a V3 request; V3 frames are as long as the packet.
const V3_FRAME_SIZE: usize = 2048;
/// A V3 block that is not full is handed over after this many milliseconds.
const RETIRE_MS: u32 = 1;
/// Room in a V2 slot before the frame: `tpacket2_hdr` and `sockaddr_ll`, aligned, plus the 16
/// bytes the kernel keeps before the network header (`netoff` in `tpacket_rcv`).
const V2_FRAME_OFFSET: usize = 80;
/// Ethernet header with a VLAN tag.
const LINK_HEADER: usize = 18;

const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;
/// `tpacket_block_desc`: `hdr.bh1.block_status`, `num_pkts`, `offset_to_first_pkt`.
const BLOCK_STATUS: usize = 8;
const BLOCK_PACKETS: usize = 12;
const BLOCK_FIRST: usize = 16;
/// `tpacket3_hdr`: `tp_next_offset`, `tp_snaplen`, `tp_len`, `tp_mac`; then the `sockaddr_ll`
/// at `TPACKET_ALIGN(sizeof(tpacket3_hdr))`, whose `sll_pkttype` is at byte 10.
const FRAME_NEXT: usize = 0;
const FRAME_SNAPLEN: usize = 12;
const FRAME_LEN: usize = 16;
const FRAME_STATUS: usize = 20;
const FRAME_MAC: usize = 24;
const FRAME_PKTTYPE: usize = 48 + 10;
const FRAME_HEADER: usize = FRAME_PKTTYPE + 1;
/// `tpacket2_hdr`: `tp_status`, `tp_len`, `tp_snaplen`, `tp_mac`; `sockaddr_ll` at 32.
const SLOT_STATUS: usize = 0;
const SLOT_LEN: usize = 4;
const SLOT_SNAPLEN: usize = 8;
const SLOT_MAC: usize = 12;
const SLOT_PKTTYPE: usize = 32 + 10;
/// `TP_STATUS_VLAN_VALID` in `tp_status`: the kernel took an 802.1Q/802.1ad tag off the frame
/// (VLAN offload) and keeps it beside it; the bytes look untagged.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

/// What the kernel says of a received frame besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// `sll_pkttype`: to this host, broadcast, multicast, another host, outgoing.
    pub pkttype: u8,
    /// The frame carried a VLAN tag the kernel removed.
    pub tagged: bool,
}

/// How the kernel hands frames over (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingKind {
    /// TPACKET_V2: a slot per frame, handed over at once.
    #[default]
    Frames,
    /// TPACKET_V3: blocks of frames, handed over when full or after a timer.
    Blocks,
}

impl RingKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Frames => "frames",
            Self::Blocks => "blocks",
        }
    }
}

/// The ring's geometry: `units` slots (V2) or blocks (V3) of `unit` bytes.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kind: RingKind,
    unit: usize,
    units: usize,
}

impl Geometry {
    /// V2 slots hold the largest frame the interface may carry (`mtu` bytes of network packet):
    /// a power of two, at least 2 KiB; V3 blocks are fixed.
    fn new(kind: RingKind, mtu: usize) -> Self {
        let unit = match kind {
            RingKind::Frames => (V2_FRAME_OFFSET + LINK_HEADER + mtu).next_power_of_two().max(2048),
            RingKind::Blocks => BLOCK_SIZE,
        };
        let unit = unit.min(RING_BYTES);
        Self { kind, unit, units: RING_BYTES / unit }
    }

    fn bytes(&self) -> usize {
        self.unit * self.units
    }
}

/// A receive ring on one AF_PACKET socket, with a cursor into the slot or block being read.
#[derive(Debug)]
pub(crate) struct RxRing {
    map: NonNull<u8>,
    geometry: Geometry,
    /// Index of the slot or block being read or to be read next.
    unit: usize,
    /// Within that block (V3, when it is ours): frames left and the offset of the next one.
    left: u32,
    offset: usize,
    /// Frames the kernel cut short (longer than a slot or block) and blocks or slots with
    /// inconsistent offsets: lost before anyone saw them.
    pub(crate) truncated: u64,
    pub(crate) malformed: u64,
}

// SAFETY: the mapping is owned by this value alone (nothing else holds its address), so moving
// it to another thread moves the only access to it.
unsafe impl Send for RxRing {}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` and the length passed is exactly its size; the
    // kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Stops the socket from receiving copies of the frames this host sends on its interface
/// (`PACKET_IGNORE_OUTGOING`, Linux 4.20): they were half of what a forwarding node read.
pub(crate) fn ignore_outgoing(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(fd, libc::PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)
}

/// Binds the packet socket to interface `ifindex` for frames of `ethertype` only: the kernel
/// hands it nothing else (no ARP, no neighbour discovery, none of the host's own IP traffic on
/// the link), so such frames cost no copy into the ring.
pub(crate) fn bind_ethertype(fd: BorrowedFd<'_>, ifindex: u32, ethertype: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain old data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("interface index out of range"))?;
    // SAFETY: the address is a live, initialised `sockaddr_ll` and the length passed is its
    // size; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Where a frame names the worker lane it is for, when several lanes share one Ethernet link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneMark {
    /// The traffic class of the top label (three bits), which the sending lane sets.
    LabelTc,
    /// The top byte of the link ESP SPI (lane k's SAs have k there).
    LinkSpi,
}

/// Most lanes [`LaneMark::LabelTc`] can name.
pub const MAX_TC_LANES: u16 = 8;

/// `ld proto`: the frame's ethertype (classic BPF ancillary load, `SKF_AD_OFF + SKF_AD_PROTOCOL`).
const LOAD_PROTOCOL: u32 = (-0x1000i32) as u32;

/// The classic BPF program of a lane group: an MPLS frame goes to the lane its mark names (the
/// kernel takes the result modulo the number of sockets, which joined in lane order), anything
/// else to lane 0. Offsets count from the network header, where the label stack (or the link
/// ESP header) starts.
fn lane_program(mark: LaneMark) -> Vec<libc::sock_filter> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RSH_K: u16 = 0x74;
    const AND_K: u16 = 0x54;
    const RET_A: u16 = 0x16;
    const RET_K: u16 = 0x06;
    let mpls = u32::from(zsfc_wire::ethernet::ethertype::MPLS);
    match mark {
        LaneMark::LabelTc => vec![
            op(LD_H_ABS, 0, 0, LOAD_PROTOCOL),
            op(JEQ_K, 0, 4, mpls),
            op(LD_B_ABS, 0, 0, 2), // label bits 4-7 | TC | bottom of stack
            op(RSH_K, 0, 0, 1),
            op(AND_K, 0, 0, 7),
            op(RET_A, 0, 0, 0),
            op(RET_K, 0, 0, 0),
        ],
        LaneMark::LinkSpi => vec![
            op(LD_H_ABS, 0, 0, LOAD_PROTOCOL),
            op(JEQ_K, 0, 2, mpls),
            op(LD_B_ABS, 0, 0, 0), // SPI, top byte
            op(RET_A, 0, 0, 0),
            op(RET_K, 0, 0, 0),
        ],
    }
}

/// Puts the socket into a fanout group that hands each frame of the interface to one socket
/// of the group, the one of the lane the frame names ([`lane_program`]). `group: None` creates
/// a group with an id the kernel picks (lane 0), `Some(id)` joins it (lanes 1.., in order).
/// Returns the group's id.
pub(crate) fn join_lanes(fd: BorrowedFd<'_>, group: Option<u16>, mark: LaneMark) -> io::Result<u16> {
    let kind = libc::PACKET_FANOUT_CBPF;
    let arg = match group {
        None => (kind | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
        Some(id) => u32::from(id) | kind << 16,
    };
    setsockopt(fd, libc::PACKET_FANOUT, &arg)?;
    let id = fanout_id(fd)?;
    if group.is_none() {
        let mut program = lane_program(mark);
        let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
        // The kernel copies the program during the call; `program` outlives it.
        setsockopt(fd, libc::PACKET_FANOUT_DATA, &prog)?;
    }
    Ok(id)
}

/// The id of the fanout group the socket is in.
fn fanout_id(fd: BorrowedFd<'_>) -> io::Result<u16> {
    let mut v: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals the kernel writes at most `len` bytes into.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_FANOUT, (&mut v as *mut u32).cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((v & 0xffff) as u16)
}

/// The MTU of `interface` (`SIOCGIFMTU` through any socket, here the packet socket).
fn interface_mtu(fd: BorrowedFd<'_>, interface: &str) -> io::Result<usize> {
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { core::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::other(format!("interface name {interface:?} is too long")));
    }
    for (d, &c) in req.ifr_name.iter_mut().zip(name) {
        *d = c as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name and writes `ifru_mtu` of the `ifreq` we
    // pass by pointer, which lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req as *mut libc::ifreq) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the `ifru_mtu` member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).map_err(|_| io::Error::other(format!("{interface} reports MTU {mtu}")))
}

impl RxRing {
    /// Turns `fd` (an AF_PACKET socket bound to `interface`) into a receive ring of `kind` and
    /// maps it. The socket keeps working for sending.
    pub(crate) fn attach(fd: BorrowedFd<'_>, interface: &str, kind: RingKind) -> io::Result<Self> {
        let g = Geometry::new(kind, interface_mtu(fd, interface)?);
        match kind {
            RingKind::Frames => {
                setsockopt(fd, libc::PACKET_VERSION, &TPACKET_V2)?;
                let req = libc::tpacket_req {
                    tp_block_size: g.unit.max(1 << 16) as u32,
                    tp_block_nr: (g.bytes() / g.unit.max(1 << 16)) as u32,
                    tp_frame_size: g.unit as u32,
                    tp_frame_nr: g.units as u32,
                };
                setsockopt(fd, libc::PACKET_RX_RING, &req)?;
            }
            RingKind::Blocks => {
                setsockopt(fd, libc::PACKET_VERSION, &TPACKET_V3)?;
                let req = libc::tpacket_req3 {
                    tp_block_size: g.unit as u32,
                    tp_block_nr: g.units as u32,
                    tp_frame_size: V3_FRAME_SIZE as u32,
                    tp_frame_nr: (g.bytes() / V3_FRAME_SIZE) as u32,
                    tp_retire_blk_tov: RETIRE_MS,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                setsockopt(fd, libc::PACKET_RX_RING, &req)?;
            }
        }
        // SAFETY: a fresh shared mapping of the ring the kernel just allocated for this socket
        // (offset 0, the exact size requested); nothing else in this process refers to it.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                g.bytes(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { map, geometry: g, unit: 0, left: 0, offset: 0, truncated: 0, malformed: 0 })
    }

    /// The handover word of the current slot or block: `TP_STATUS_USER` set while it is ours.
    fn status(&self) -> &AtomicU32 {
        let at = match self.geometry.kind {
            RingKind::Frames => SLOT_STATUS,
            RingKind::Blocks => BLOCK_STATUS,
        };
        // SAFETY: `unit` < `units`, so the word lies inside the mapping, at a 4-aligned offset of
        // a page-aligned mapping whose units are multiples of 16 bytes; it lives as long as
        // `self` and is only ever accessed atomically by us (the kernel uses its own barriers).
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(self.unit * self.geometry.unit + at).cast()) }
    }

    /// The current slot or block as bytes; only while its status says it is ours (the kernel
    /// does not write one it has handed over until we hand it back).
    fn bytes(&self) -> &[u8] {
        // SAFETY: inside the mapping (see `status`); the caller has seen TP_STATUS_USER with
        // Acquire ordering, so the kernel's writes are visible and it makes no more until
        // `release`, which needs `&mut self` and so outlives no slice from here.
        unsafe {
            core::slice::from_raw_parts(self.map.as_ptr().add(self.unit * self.geometry.unit), self.geometry.unit)
        }
    }

    fn ours(&self) -> bool {
        self.status().load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Hands the current slot or block back to the kernel and moves to the next.
    fn release(&mut self) {
        self.status().store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.unit = (self.unit + 1) % self.geometry.units;
        self.left = 0;
    }

    /// Calls `each(frame, meta)` for up to `max` received frames (the whole Ethernet frame and
    /// what the kernel says of it), handing them back to the kernel. Returns how many it saw;
    /// fewer than `max` means the ring is empty for now.
    pub(crate) fn recv(&mut self, max: usize, mut each: impl FnMut(&[u8], Meta)) -> usize {
        let mut seen = 0;
        while seen < max {
            if self.geometry.kind == RingKind::Frames {
                if !self.ours() {
                    break;
                }
                match slot(self.bytes()) {
                    Some(f) if f.complete => each(f.bytes, f.meta),
                    Some(_) => self.truncated += 1,
                    None => self.malformed += 1,
                }
                seen += 1;
                self.release();
                continue;
            }
            if self.left == 0 {
                if !self.ours() {
                    break;
                }
                let b = self.bytes();
                match (read_u32(b, BLOCK_PACKETS), read_u32(b, BLOCK_FIRST)) {
                    (Some(n), Some(first)) if n > 0 => {
                        self.left = n;
                        self.offset = first as usize;
                    }
                    _ => {
                        self.release();
                        continue;
                    }
                }
            }
            match frame_at(self.bytes(), self.offset) {
                Some(Frame { bytes, meta, complete, next }) => {
                    if complete {
                        each(bytes, meta);
                    } else {
                        self.truncated += 1;
                    }
                    seen += 1;
                    self.left -= 1;
                    if self.left == 0 || next == 0 {
                        self.release();
                    } else {
                        self.offset += next;
                    }
                }
                None => {
                    self.malformed += 1;
                    self.release();
                }
            }
        }
        seen
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `attach`, with its size; no slice into it outlives `self`.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.geometry.bytes());
        }
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One frame of a block, as the kernel described it.
struct Frame<'a> {
    bytes: &'a [u8],
    meta: Meta,
    /// `false` when the kernel cut it (`tp_snaplen < tp_len`).
    complete: bool,
    /// Offset of the next frame from this one (0: none).
    next: usize,
}

/// The frame whose `tpacket3_hdr` starts at `at` in `block`, or `None` when any of its offsets
/// or lengths points outside the block.
fn frame_at(block: &[u8], at: usize) -> Option<Frame<'_>> {
    let h = block.get(at..at.checked_add(FRAME_HEADER)?)?;
    let snaplen = read_u32(h, FRAME_SNAPLEN)? as usize;
    let len = read_u32(h, FRAME_LEN)? as usize;
    let mac = at.checked_add(read_u16(h, FRAME_MAC)? as usize)?;
    let bytes = block.get(mac..mac.checked_add(snaplen)?)?;
    let tagged = read_u32(h, FRAME_STATUS)? & TP_STATUS_VLAN_VALID != 0;
    let meta = Meta { pkttype: h[FRAME_PKTTYPE], tagged };
    Some(Frame { bytes, meta, complete: snaplen == len, next: read_u32(h, FRAME_NEXT)? as usize })
}

/// The frame in a V2 slot, or `None` when its offsets point outside the slot.
fn slot(slot: &[u8]) -> Option<Frame<'_>> {
    let len = read_u32(slot, SLOT_LEN)? as usize;
    let snaplen = read_u32(slot, SLOT_SNAPLEN)? as usize;
    let mac = read_u16(slot, SLOT_MAC)? as usize;
    let bytes = slot.get(mac..mac.checked_add(snaplen)?)?;
    let tagged = read_u32(slot, SLOT_STATUS)? & TP_STATUS_VLAN_VALID != 0;
    let meta = Meta { pkttype: *slot.get(SLOT_PKTTYPE)?, tagged };
    Some(Frame { bytes, meta, complete: snaplen == len, next: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as the kernel lays it out, with the given frames.
    fn block(frames: &[(&[u8], u8)]) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[BLOCK_PACKETS..BLOCK_PACKETS + 4].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        b[BLOCK_FIRST..BLOCK_FIRST + 4].copy_from_slice(&48u32.to_ne_bytes());
        for (i, (f, pkttype)) in frames.iter().enumerate() {
            let at = b.len();
            let mac = 80usize;
            let mut h = vec![0u8; mac + f.len()];
            let next = if i + 1 < frames.len() { (mac + f.len()).next_multiple_of(16) } else { 0 };
            h.resize(next.max(h.len()), 0);
            h[FRAME_NEXT..4].copy_from_slice(&(next as u32).to_ne_bytes());
            h[FRAME_SNAPLEN..FRAME_SNAPLEN + 4].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            h[FRAME_LEN..FRAME_LEN + 4].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            h[FRAME_MAC..FRAME_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            h[FRAME_PKTTYPE] = *pkttype;
            h[mac..mac + f.len()].copy_from_slice(f);
            assert_eq!(b.len(), at);
            b.extend_from_slice(&h);
        }
        b
    }

    #[test]
    fn frames_are_walked_by_their_offsets() {
        let b = block(&[(b"first frame", 0), (b"second", 4)]);
        let f = frame_at(&b, 48).expect("first");
        assert_eq!((f.bytes, f.meta.pkttype, f.complete, f.meta.tagged), (&b"first frame"[..], 0, true, false));
        let g = frame_at(&b, 48 + f.next).expect("second");
        assert_eq!((g.bytes, g.meta.pkttype, g.next), (&b"second"[..], 4, 0));
    }

    #[test]
    fn a_tag_the_kernel_took_off_is_reported() {
        let mut b = block(&[(b"tagged frame", 0)]);
        b[48 + FRAME_STATUS..48 + FRAME_STATUS + 4].copy_from_slice(&(TP_STATUS_VLAN_VALID | 1).to_ne_bytes());
        assert!(frame_at(&b, 48).expect("frame").meta.tagged);
        let mut s = vec![0u8; 2048];
        s[SLOT_LEN..SLOT_LEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        s[SLOT_SNAPLEN..SLOT_SNAPLEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        s[SLOT_MAC..SLOT_MAC + 2].copy_from_slice(&66u16.to_ne_bytes());
        assert!(!slot(&s).expect("untagged").meta.tagged);
        s[SLOT_STATUS..SLOT_STATUS + 4].copy_from_slice(&(TP_STATUS_VLAN_VALID | 1).to_ne_bytes());
        assert!(slot(&s).expect("tagged").meta.tagged);
    }

    #[test]
    fn offsets_outside_the_block_end_the_walk() {
        let mut b = block(&[(b"a frame", 0)]);
        assert!(frame_at(&b, b.len() - 10).is_none(), "header past the end");
        b[48 + FRAME_SNAPLEN..48 + FRAME_SNAPLEN + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(frame_at(&b, 48).is_none(), "snaplen past the end");
        b[48 + FRAME_SNAPLEN..48 + FRAME_SNAPLEN + 4].copy_from_slice(&7u32.to_ne_bytes());
        b[48 + FRAME_MAC..48 + FRAME_MAC + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(frame_at(&b, 48).is_none(), "mac offset past the end");
        assert!(frame_at(&b, usize::MAX - 3).is_none(), "offset overflow");
    }

    #[test]
    fn a_cut_frame_is_marked_incomplete() {
        let mut b = block(&[(b"a long frame", 0)]);
        b[48 + FRAME_LEN..48 + FRAME_LEN + 4].copy_from_slice(&9000u32.to_ne_bytes());
        assert!(!frame_at(&b, 48).expect("frame").complete);
    }

    #[test]
    fn a_slot_is_read_by_its_offsets_and_checked() {
        let mut s = vec![0u8; 2048];
        s[SLOT_LEN..SLOT_LEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        s[SLOT_SNAPLEN..SLOT_SNAPLEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        s[SLOT_MAC..SLOT_MAC + 2].copy_from_slice(&66u16.to_ne_bytes());
        s[SLOT_PKTTYPE] = 3;
        s[66..71].copy_from_slice(b"frame");
        let f = slot(&s).expect("frame");
        assert_eq!((f.bytes, f.meta.pkttype, f.complete), (&b"frame"[..], 3, true));
        s[SLOT_MAC..SLOT_MAC + 2].copy_from_slice(&2046u16.to_ne_bytes());
        assert!(slot(&s).is_none(), "frame past the slot's end");
    }

    #[test]
    fn slots_hold_the_largest_frame_of_the_interface() {
        for (mtu, unit) in [(1500, 2048), (1900, 2048), (9000, 16384), (65535, 131072)] {
            let g = Geometry::new(RingKind::Frames, mtu);
            assert_eq!(g.unit, unit, "MTU {mtu}");
            assert!(V2_FRAME_OFFSET + LINK_HEADER + mtu <= g.unit);
            assert_eq!(g.bytes(), RING_BYTES);
        }
        assert_eq!(Geometry::new(RingKind::Blocks, 9000).unit, BLOCK_SIZE);
    }
}
