//! The packet buffer: one contiguous allocation with headroom in front and tailroom behind.
//!
//! Pushing an MPLS label, an NSH or an ESP header writes into the headroom; the ESP trailer and
//! ICV go into the tailroom. The payload bytes never move. Inserting ESP *between* the IP header
//! and its payload (transport mode) moves only the IP header forward into the headroom
//! ([`PacketBuf::open_gap`]).
//!
//! Buffers are allocated once (by a driver's pool or a test) and reused: nothing on the hot path
//! allocates.
use crate::{Error, Result};

/// Headroom that fits Ethernet (14) + outer IPv6/UDP (48) + 16 labels (64) + an NSH with
/// metadata (up to 252) would be 378; 384 keeps a margin and stays cache-line aligned.
pub const DEFAULT_HEADROOM: usize = 384;
/// ESP trailer (at most 3 pad + 2) + 16-byte ICV, rounded up.
pub const DEFAULT_TAILROOM: usize = 64;

/// Data that travels beside the packet through one node and never goes on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Key of the proxy cache entry holding this packet's SFC headers, for service functions
    /// that carry metadata (seed 003 operation mode "kernel", here: in-process SFs).
    pub proxy_key: Option<u64>,
    /// Flow entropy for the outer UDP source port (RFC 7510 §3), 0 if none: set by whoever sees
    /// the inner flow (the classifier, an SF node after its SF) or carried over from the source
    /// port the packet arrived from, so one flow keeps one port along the chain.
    pub entropy: u16,
}

/// An owned packet with head- and tailroom.
pub struct PacketBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
    /// Per-packet metadata beside the bytes.
    pub meta: PacketMeta,
}

impl core::fmt::Debug for PacketBuf {
    // Payload bytes never reach a log line: only the geometry is printed.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .field("meta", &self.meta)
            .finish()
    }
}

impl PacketBuf {
    /// An empty buffer of `capacity` bytes whose data starts after `headroom` bytes.
    pub fn new(capacity: usize, headroom: usize) -> Self {
        let headroom = headroom.min(capacity);
        Self { data: vec![0; capacity].into_boxed_slice(), start: headroom, end: headroom, meta: PacketMeta::default() }
    }

    /// A buffer holding a copy of `bytes`, with the default head- and tailroom.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::from_slice_with(bytes, DEFAULT_HEADROOM, DEFAULT_TAILROOM)
    }

    /// A buffer holding a copy of `bytes` with the given head- and tailroom.
    pub fn from_slice_with(bytes: &[u8], headroom: usize, tailroom: usize) -> Self {
        let mut b = Self::new(headroom + bytes.len() + tailroom, headroom);
        b.end = headroom + bytes.len();
        b.data[headroom..b.end].copy_from_slice(bytes);
        b
    }

    /// Empties the buffer for reuse, with `headroom` bytes in front.
    pub fn reset(&mut self, headroom: usize) {
        self.start = headroom.min(self.data.len());
        self.end = self.start;
        self.meta = PacketMeta::default();
    }

    /// Replaces the contents with `bytes`, keeping `headroom` in front.
    pub fn set(&mut self, bytes: &[u8], headroom: usize) -> Result<()> {
        if headroom + bytes.len() > self.data.len() {
            return Err(Error::NoRoom);
        }
        self.reset(headroom);
        self.end = headroom + bytes.len();
        self.data[headroom..self.end].copy_from_slice(bytes);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn headroom(&self) -> usize {
        self.start
    }

    pub fn tailroom(&self) -> usize {
        self.data.len() - self.end
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Grows the packet by `n` bytes at the front (into the headroom) and returns them.
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8]> {
        if n > self.start {
            return Err(Error::NoRoom);
        }
        self.start -= n;
        Ok(&mut self.data[self.start..self.start + n])
    }

    /// Removes `n` bytes from the front.
    pub fn pull_front(&mut self, n: usize) -> Result<()> {
        if n > self.len() {
            return Err(Error::Truncated);
        }
        self.start += n;
        Ok(())
    }

    /// Grows the packet by `n` bytes at the back (into the tailroom) and returns them.
    pub fn push_back(&mut self, n: usize) -> Result<&mut [u8]> {
        if n > self.tailroom() {
            return Err(Error::NoRoom);
        }
        self.end += n;
        Ok(&mut self.data[self.end - n..self.end])
    }

    /// Appends bytes written by `f` into the free space after the data, keeping `tailroom`
    /// bytes free (for a driver's `recv` into the buffer). `f` returns how many it wrote.
    pub fn append_with<E>(
        &mut self,
        tailroom: usize,
        f: impl FnOnce(&mut [u8]) -> core::result::Result<usize, E>,
    ) -> core::result::Result<usize, E> {
        let limit = self.data.len().saturating_sub(tailroom).max(self.end);
        let n = f(&mut self.data[self.end..limit])?;
        self.end += n.min(limit - self.end);
        Ok(n)
    }

    /// The free space after the packet, less `tailroom`: where a scatter receive (one system
    /// call filling several buffers) writes. [`push_back`](Self::push_back) then takes in what
    /// it wrote.
    pub fn spare_mut(&mut self, tailroom: usize) -> &mut [u8] {
        let limit = self.data.len().saturating_sub(tailroom).max(self.end);
        &mut self.data[self.end..limit]
    }

    /// [`spare_mut`](Self::spare_mut), read-only.
    pub fn spare(&self, tailroom: usize) -> &[u8] {
        let limit = self.data.len().saturating_sub(tailroom).max(self.end);
        &self.data[self.end..limit]
    }

    /// Removes `n` bytes from the back.
    pub fn trim_back(&mut self, n: usize) -> Result<()> {
        if n > self.len() {
            return Err(Error::Truncated);
        }
        self.end -= n;
        Ok(())
    }

    /// Opens a gap of `n` bytes at offset `at` by moving the first `at` bytes (a header, never
    /// the payload) forward into the headroom. Returns the gap.
    pub fn open_gap(&mut self, at: usize, n: usize) -> Result<&mut [u8]> {
        if at > self.len() {
            return Err(Error::Truncated);
        }
        if n > self.start {
            return Err(Error::NoRoom);
        }
        let old = self.start;
        self.data.copy_within(old..old + at, old - n);
        self.start -= n;
        Ok(&mut self.data[self.start + at..self.start + at + n])
    }

    /// Removes the `n` bytes at offset `at` by moving the first `at` bytes back over them.
    pub fn close_gap(&mut self, at: usize, n: usize) -> Result<()> {
        if at.checked_add(n).is_none_or(|e| e > self.len()) {
            return Err(Error::Truncated);
        }
        let old = self.start;
        self.data.copy_within(old..old + at, old + n);
        self.start += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scatter_receive_fills_the_spare_room_and_push_back_takes_it_in() {
        let mut b = PacketBuf::new(32, 8);
        assert_eq!(b.spare(4).len(), 20);
        b.spare_mut(4)[..5].copy_from_slice(b"hello");
        b.push_back(5).unwrap();
        assert_eq!(b.as_slice(), b"hello");
        assert_eq!(b.headroom(), 8);
        assert_eq!(b.spare(4).len(), 15);
        // More tailroom than there is free space leaves nothing to write into.
        assert!(b.spare_mut(100).is_empty());
    }

    #[test]
    fn push_and_pull_front_use_headroom_without_moving_payload() {
        let mut b = PacketBuf::from_slice_with(b"payload", 8, 4);
        b.push_front(4).unwrap().copy_from_slice(b"HDR:");
        assert_eq!(b.as_slice(), b"HDR:payload");
        assert_eq!(b.push_front(5), Err(Error::NoRoom));
        b.pull_front(4).unwrap();
        assert_eq!(b.as_slice(), b"payload");
        assert_eq!(b.pull_front(8), Err(Error::Truncated));
    }

    #[test]
    fn open_and_close_gap_move_only_the_header() {
        let mut b = PacketBuf::from_slice_with(b"IPHDRdata", 8, 0);
        b.open_gap(5, 3).unwrap().copy_from_slice(b"ESP");
        assert_eq!(b.as_slice(), b"IPHDRESPdata");
        b.close_gap(5, 3).unwrap();
        assert_eq!(b.as_slice(), b"IPHDRdata");
        assert_eq!(b.close_gap(5, 10), Err(Error::Truncated));
        assert_eq!(b.open_gap(5, 9), Err(Error::NoRoom));
    }

    #[test]
    fn append_with_keeps_the_tailroom_free() {
        let mut b = PacketBuf::new(16, 4);
        let n = b.append_with(2, |space| {
            assert_eq!(space.len(), 10);
            space[..3].copy_from_slice(b"abc");
            Ok::<_, ()>(3)
        });
        assert_eq!((n, b.as_slice(), b.tailroom()), (Ok(3), &b"abc"[..], 9));
    }

    #[test]
    fn debug_output_never_shows_bytes() {
        let b = PacketBuf::from_slice(b"secret");
        assert!(!format!("{b:?}").contains("secret"));
        assert!(!format!("{b:?}").contains("115")); // 's'
    }
}
