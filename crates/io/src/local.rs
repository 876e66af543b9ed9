//! The local side: a TUN device with the kernel's offloads (virtio-net header). The kernel hands
//! us TCP super-packets of up to 64 KiB in one read, which are cut into MSS-sized segments here
//! — *before* any label is pushed, since the kernel has no MPLS GSO — and takes coalesced
//! segments in one write at the other end. Attachment circuits to external SFs do not use this:
//! a per-packet caching proxy must see the packets its SF sees.
use std::io;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

pub(crate) struct LocalTun {
    pub(crate) dev: SyncDevice,
    /// One read: the virtio-net header and up to 64 KiB of packet.
    orig: Vec<u8>,
    /// The segments of one read.
    segs: Vec<Vec<u8>>,
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
            segs: (0..IDEAL_BATCH_SIZE).map(|_| vec![0; seg]).collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            out: (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(VIRTIO_NET_HDR_LEN + seg)).collect(),
            queued: 0,
            gro: GROTable::default(),
        }
    }

    /// One read; calls `each` with every packet in it. `Ok(false)` when nothing was waiting.
    pub(crate) fn recv(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<bool> {
        let n = match self.dev.recv_multiple(&mut self.orig, &mut self.segs, &mut self.sizes, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        for (s, &len) in self.segs.iter().zip(&self.sizes).take(n) {
            each(&s[..len]);
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
