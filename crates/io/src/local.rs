//! The local side: a TUN device with the kernel's offloads (virtio-net header). The kernel hands
//! us TCP super-packets of up to 64 KiB in one read, which are cut into MSS-sized segments here
//! — *before* any label is pushed, since the kernel has no MPLS GSO — and takes coalesced
//! segments in one write at the other end. The segments are cut straight into packet buffers,
//! behind their headroom (one copy, where a plain read would also make one). Attachment circuits to external SFs do not use this:
//! a per-packet caching proxy must see the packets its SF sees.
use crate::take_buffer;
use std::io;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};
use zsfc_dataplane::PacketBuf;
use zsfc_wire::buffer::DEFAULT_TAILROOM;

pub(crate) struct LocalTun {
    pub(crate) dev: SyncDevice,
    /// One read: the virtio-net header and up to 64 KiB of packet.
    orig: Vec<u8>,
    /// Buffers the segments of one read are cut into.
    segs: Vec<Spare>,
    /// Largest packet the local side sends (its MTU).
    mtu: usize,
    sizes: Vec<usize>,
    /// Packets waiting for [`flush`](Self::flush), each behind room for the virtio header.
    out: Vec<Vec<u8>>,
    queued: usize,
    gro: GROTable,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    pub packets: u64,
    pub failed: u64,
}

impl LocalTun {
    pub(crate) fn new(dev: SyncDevice, mtu: u16) -> Self {
        let seg = usize::from(mtu) + 256;
        Self {
            dev,
            orig: vec![0; VIRTIO_NET_HDR_LEN + 65_536],
            segs: Vec::with_capacity(IDEAL_BATCH_SIZE),
            mtu: usize::from(mtu),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            out: (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(VIRTIO_NET_HDR_LEN + seg)).collect(),
            queued: 0,
            gro: GROTable::default(),
        }
    }

    /// One read; calls `each` with every packet in it, each in a buffer of its own (from
    /// `pool`). `Ok(false)` when nothing was waiting.
    pub(crate) fn recv(&mut self, pool: &mut Vec<PacketBuf>, mut each: impl FnMut(PacketBuf)) -> io::Result<bool> {
        while self.segs.len() < IDEAL_BATCH_SIZE {
            self.segs.push(Spare(take_buffer(pool, self.mtu)));
        }
        let n = match self.dev.recv_multiple(&mut self.orig, &mut self.segs, &mut self.sizes, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        for (s, &len) in self.segs.iter_mut().zip(&self.sizes).take(n) {
            let fresh = Spare(take_buffer(pool, self.mtu));
            let mut b = core::mem::replace(s, fresh).0;
            if b.push_back(len).is_ok() {
                each(b);
            }
        }
        Ok(true)
    }

    /// Queues a packet for the next flush (flushing first when the queue is full).
    pub(crate) fn queue(&mut self, pkt: &[u8]) -> Written {
        let mut w = Written::default();
        if self.queued == self.out.len() {
            w = self.flush();
        }
        let b = &mut self.out[self.queued];
        b.clear();
        b.resize(VIRTIO_NET_HDR_LEN, 0);
        b.extend_from_slice(pkt);
        self.queued += 1;
        w
    }

    /// Writes every queued packet, TCP segments of one flow coalesced.
    pub(crate) fn flush(&mut self) -> Written {
        let n = core::mem::take(&mut self.queued) as u64;
        if n == 0 {
            return Written::default();
        }
        match self.dev.send_multiple(&mut self.gro, &mut self.out[..n as usize], VIRTIO_NET_HDR_LEN) {
            Ok(_) => Written { packets: n, failed: 0 },
            Err(_) => Written { packets: 0, failed: n },
        }
    }
}

/// A packet buffer seen as its free room behind the headroom, where the TUN reader writes a
/// segment.
struct Spare(PacketBuf);

impl AsRef<[u8]> for Spare {
    fn as_ref(&self) -> &[u8] {
        self.0.spare(DEFAULT_TAILROOM)
    }
}

impl AsMut<[u8]> for Spare {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.spare_mut(DEFAULT_TAILROOM)
    }
}
