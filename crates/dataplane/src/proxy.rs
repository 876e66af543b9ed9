//! The caching SFC proxy of seed 003: strip the SFC headers before an SFC-unaware SF, keep them
//! in a fixed-size LRU cache under a per-packet key, put them back when the SF returns the
//! packet.
//!
//! Two ways to key a packet (seed 003 §IV-B):
//! - [`CacheKey::Meta`]: a sequence number carried beside the packet in [`PacketMeta`]
//!   (`zsfc_wire::PacketMeta::proxy_key`). Works for SFs that rewrite every header (NAT), as long
//!   as the metadata survives: in-process SFs.
//! - [`CacheKey::Header`]: immutable header fields ([`header_key`]). Works for external SFs
//!   that never see our metadata, as long as they do not rewrite those fields.
//!   [`KeyMode::Translated`] leaves addresses and ports out of the key, so an external SF that
//!   translates them (an iptables NAT) still returns recognisable packets: what is left (IPv4
//!   identification / IPv6 flow label, TCP sequence and acknowledgment numbers, UDP length and
//!   first payload bytes, ICMP type, code and sequence) is what NAT does not touch.
//!
//! The cache never grows: it is allocated once; when full, the least recently used entry is
//! evicted (counted), and its packet will later be a counted `TX_NOT_CACHED` drop.
use crate::SaIdx;
use core::hash::BuildHasher;
use hashbrown::HashTable;
use zsfc_esp::Instant;
use zsfc_wire::{be_u16, be_u32, ip, mpls, nsh};

/// Most bytes cached per packet: a full label stack and the longest NSH.
pub const MAX_CACHED: usize = mpls::DEFAULT_MAX_DEPTH * mpls::LSE_LEN + nsh::MAX_LEN;
/// Default number of packets that can be inside one SF at a time.
pub const DEFAULT_CAPACITY: usize = 4096;
const NIL: u32 = u32::MAX;

/// How the proxy recognises a packet coming back from its SF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// Per-packet metadata beside the packet (in-process SFs; opaque SFs such as NAT).
    Metadata,
    /// Immutable header fields (external SFC-unaware SFs).
    Headers,
    /// Header fields that address and port translation leaves alone (external NAT SFs).
    Translated,
}

/// Immutable fields that identify one packet (seed 003 §IV-B.2). Mutable fields (TTL/hop limit,
/// lengths, checksums) are left out so the SF may change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderKey {
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    /// IPv4 identification or IPv6 flow label.
    id: u32,
    /// Upper-layer fields, by protocol:
    /// TCP: ports, sequence number, acknowledgment number;
    /// UDP: ports, UDP length, first 4 payload bytes;
    /// ICMP/ICMPv6: type+code, identifier+sequence, first 4 payload bytes;
    /// ESP: SPI, sequence number, 0.
    l4: [u32; 3],
}

/// Computes the header key of the IP packet `pkt`; `None` when its protocol carries too little
/// to tell packets apart (or it is a later fragment).
pub fn header_key(pkt: &[u8]) -> Option<HeaderKey> {
    header_key_in(pkt, false)
}

/// Like [`header_key`], but without the fields a NAT rewrites: addresses, ports, ICMP
/// identifier.
pub fn translated_key(pkt: &[u8]) -> Option<HeaderKey> {
    header_key_in(pkt, true)
}

fn header_key_in(pkt: &[u8], translated: bool) -> Option<HeaderKey> {
    let s = ip::parse(pkt).ok()?;
    if s.later_fragment {
        return None;
    }
    let l4 = pkt.get(s.l4_offset..s.total_len)?;
    let first4 = |at: usize| {
        let mut w = [0u8; 4];
        for (d, s) in w.iter_mut().zip(l4.iter().skip(at)) {
            *d = *s;
        }
        u32::from_be_bytes(w)
    };
    let l4w = match s.tuple.protocol {
        ip::protocol::TCP if l4.len() >= 12 => [be_u32(l4, 0), be_u32(l4, 4), be_u32(l4, 8)],
        ip::protocol::UDP if l4.len() >= 8 => [be_u32(l4, 0), u32::from(be_u16(l4, 4)), first4(8)],
        ip::protocol::ICMP | ip::protocol::ICMPV6 if l4.len() >= 8 => {
            [u32::from(be_u16(l4, 0)), be_u32(l4, 4), first4(8)]
        }
        ip::protocol::ESP if l4.len() >= 8 => [be_u32(l4, 0), be_u32(l4, 4), 0],
        _ => return None,
    };
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    if translated {
        let l4 = match s.tuple.protocol {
            ip::protocol::TCP | ip::protocol::UDP => [0, l4w[1], l4w[2]],
            ip::protocol::ICMP | ip::protocol::ICMPV6 => [l4w[0], l4w[1] & 0xffff, l4w[2]],
            _ => l4w,
        };
        let id = if s.tuple.src.is_ipv4() { u32::from(be_u16(pkt, 4)) } else { be_u32(pkt, 0) & 0xf_ffff };
        return Some(HeaderKey { src, dst, protocol: s.tuple.protocol, id, l4 });
    }
    let id = match (s.tuple.src, s.tuple.dst) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            src[..4].copy_from_slice(&a.octets());
            dst[..4].copy_from_slice(&b.octets());
            u32::from(be_u16(pkt, 4))
        }
        (a, b) => {
            src = ipv6_octets(a);
            dst = ipv6_octets(b);
            be_u32(pkt, 0) & 0xf_ffff
        }
    };
    Some(HeaderKey { src, dst, protocol: s.tuple.protocol, id, l4: l4w })
}

fn ipv6_octets(a: std::net::IpAddr) -> [u8; 16] {
    match a {
        std::net::IpAddr::V6(a) => a.octets(),
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Length of the SFC encapsulation at the start of `b` (a label stack, then an NSH when the
/// byte after the bottom label starts one) and whether an NSH is there.
pub fn encap_len(b: &[u8], max_depth: usize) -> Result<(usize, bool), zsfc_wire::Error> {
    let labels = mpls::stack_depth(b, max_depth)? * mpls::LSE_LEN;
    match b.get(labels) {
        None => Err(zsfc_wire::Error::Truncated),
        Some(&x) if nsh::looks_like_nsh(x) => {
            let h = nsh::Header::new_checked(b.get(labels..).unwrap_or(&[]))?;
            Ok((labels + h.len(), true))
        }
        Some(_) => Ok((labels, false)),
    }
}

/// The key a cache entry is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Meta(u64),
    Header(HeaderKey),
}

/// The counters of seed 003, plus evictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub rx_ignored: u64,
    pub rx_success: u64,
    pub rx_collision: u64,
    pub tx_ignored: u64,
    pub tx_not_cached: u64,
    pub tx_success: u64,
    pub evicted: u64,
    /// Entries older than the maximum age, removed by [`ProxyCache::expire`].
    pub expired: u64,
    /// Entries removed because the (in-process) SF dropped their packet.
    pub sf_dropped: u64,
    /// Most packets inside the SF at once (cache entries).
    pub peak_in_flight: u64,
}

/// A staged cache entry that has no key yet.
#[derive(Debug)]
#[must_use = "a staged entry must be committed or aborted"]
pub struct Ticket(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("a packet with the same key is already cached")]
    Collision,
    #[error("more than {MAX_CACHED} bytes of headers")]
    TooLong,
}

struct Entry {
    key: CacheKey,
    hash: u64,
    prev: u32,
    next: u32,
    reseal: Option<SaIdx>,
    inserted: Instant,
    len: u16,
    hdr: [u8; MAX_CACHED],
}

/// A fixed-capacity LRU map from packet key to the SFC headers stripped from that packet.
///
/// The index is a hash table of entry numbers, hashed once per operation with a per-process
/// random seed (foldhash): keys are attacker-influenced, and the table never grows.
pub struct ProxyCache {
    map: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Most and least recently inserted.
    head: u32,
    tail: u32,
    next_meta: u64,
    capacity: usize,
    pub stats: ProxyStats,
}

impl core::fmt::Debug for ProxyCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProxyCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("stats", &self.stats)
            .finish()
    }
}

impl ProxyCache {
    /// A cache for `capacity` packets (at least 1), allocated now.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, NIL as usize - 2);
        // One spare entry to stage into while the cache is full.
        let entries = (0..=capacity)
            .map(|_| Entry {
                key: CacheKey::Meta(0),
                hash: 0,
                prev: NIL,
                next: NIL,
                reseal: None,
                inserted: Instant::ZERO,
                len: 0,
                hdr: [0; MAX_CACHED],
            })
            .collect();
        Self {
            map: HashTable::with_capacity(capacity + 1),
            hasher: foldhash::fast::RandomState::default(),
            entries,
            free: (0..=capacity as u32).rev().collect(),
            capacity,
            head: NIL,
            tail: NIL,
            next_meta: 1,
            stats: ProxyStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A fresh metadata key (never 0, never reused while the cache lives).
    pub fn next_meta_key(&mut self) -> u64 {
        let k = self.next_meta;
        self.next_meta = self.next_meta.wrapping_add(1).max(1);
        k
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = match self.entries.get(i as usize) {
            Some(e) => (e.prev, e.next),
            None => return,
        };
        match self.entries.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn link_front(&mut self, i: u32) {
        let old = self.head;
        if let Some(e) = self.entries.get_mut(i as usize) {
            e.prev = NIL;
            e.next = old;
        }
        match self.entries.get_mut(old as usize) {
            Some(o) => o.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// Removes entry `i` (whose hash is `hash`) from the index.
    fn unindex(&mut self, i: u32, hash: u64) {
        if let Ok(e) = self.map.find_entry(hash, |&j| j == i) {
            e.remove();
        }
    }

    /// Finds the entry for `key` (hashed to `hash`).
    fn find(&self, key: &CacheKey, hash: u64) -> Option<u32> {
        let entries = &self.entries;
        self.map.find(hash, |&j| entries.get(j as usize).is_some_and(|e| e.key == *key)).copied()
    }

    fn evict_lru(&mut self) -> Option<u32> {
        let t = self.tail;
        let hash = self.entries.get(t as usize)?.hash;
        self.unlink(t);
        self.unindex(t, hash);
        self.stats.evicted += 1;
        Some(t)
    }

    /// Copies `hdr` into a free entry before the packet's key is known. Every ticket must be [`commit`](Self::commit)ted or
    /// [`abort`](Self::abort)ed.
    pub fn stage(&mut self, hdr: &[u8]) -> Result<Ticket, InsertError> {
        if hdr.len() > MAX_CACHED {
            return Err(InsertError::TooLong);
        }
        let i = self.free.pop().or_else(|| self.evict_lru()).ok_or(InsertError::TooLong)?;
        if let Some(e) = self.entries.get_mut(i as usize) {
            e.len = hdr.len() as u16;
            e.hdr[..hdr.len()].copy_from_slice(hdr);
        }
        Ok(Ticket(i))
    }

    /// Gives up a staged entry.
    pub fn abort(&mut self, t: Ticket) {
        self.free.push(t.0);
    }

    /// Files a staged entry under `key`. A key already present is a collision: the packet
    /// cannot be told apart from one the SF still holds (seed 003 drops it; so do we).
    pub fn commit(&mut self, t: Ticket, key: CacheKey, reseal: Option<SaIdx>, now: Instant) -> Result<(), InsertError> {
        let hash = self.hasher.hash_one(key);
        if self.find(&key, hash).is_some() {
            self.free.push(t.0);
            self.stats.rx_collision += 1;
            return Err(InsertError::Collision);
        }
        if self.map.len() >= self.capacity
            && let Some(i) = self.evict_lru()
        {
            self.free.push(i);
        }
        if let Some(e) = self.entries.get_mut(t.0 as usize) {
            e.key = key;
            e.hash = hash;
            e.reseal = reseal;
            e.inserted = now;
        }
        self.link_front(t.0);
        let entries = &self.entries;
        self.map.insert_unique(hash, t.0, |&j| entries.get(j as usize).map_or(0, |e| e.hash));
        self.stats.rx_success += 1;
        self.stats.peak_in_flight = self.stats.peak_in_flight.max(self.map.len() as u64);
        Ok(())
    }

    /// Stages and commits in one step.
    pub fn insert(
        &mut self,
        key: CacheKey,
        hdr: &[u8],
        reseal: Option<SaIdx>,
        now: Instant,
    ) -> Result<(), InsertError> {
        let t = self.stage(hdr)?;
        self.commit(t, key, reseal, now)
    }

    /// The cached headers under `key`, without removing them.
    pub fn peek(&self, key: &CacheKey) -> Option<&[u8]> {
        let e = self.entries.get(self.find(key, self.hasher.hash_one(key))? as usize)?;
        e.hdr.get(..usize::from(e.len))
    }

    /// Removes entries inserted at or before `now - max_age`: packets an SF dropped without
    /// telling (an external SF cannot). Returns how many were removed.
    pub fn expire(&mut self, now: Instant, max_age: core::time::Duration) -> usize {
        let mut n = 0;
        while let Some(e) = self.entries.get(self.tail as usize) {
            if now.saturating_since(e.inserted) < max_age {
                break;
            }
            let (t, hash) = (self.tail, e.hash);
            self.unlink(t);
            self.unindex(t, hash);
            self.free.push(t);
            self.stats.expired += 1;
            n += 1;
        }
        n
    }

    /// Removes the entry of a packet its SF dropped (no TX will come for it).
    pub fn forget(&mut self, key: &CacheKey) -> bool {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let Ok(found) = self.map.find_entry(hash, |&j| entries.get(j as usize).is_some_and(|e| e.key == *key)) else {
            return false;
        };
        let i = found.remove().0;
        self.unlink(i);
        self.free.push(i);
        self.stats.sf_dropped += 1;
        true
    }

    /// Removes the entry for `key` and lends its headers and re-seal SA to `f`. `None` (and a
    /// TX_NOT_CACHED count) when nothing is cached under `key`.
    pub fn take_with<R>(&mut self, key: &CacheKey, f: impl FnOnce(&[u8], Option<SaIdx>) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let found = self.map.find_entry(hash, |&j| entries.get(j as usize).is_some_and(|e| e.key == *key));
        let Ok(found) = found else {
            self.stats.tx_not_cached += 1;
            return None;
        };
        let i = found.remove().0;
        self.unlink(i);
        self.free.push(i);
        let e = self.entries.get(i as usize)?;
        self.stats.tx_success += 1;
        Some(f(&e.hdr[..usize::from(e.len)], e.reseal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_least_recently_inserted_when_full() {
        let mut c = ProxyCache::new(2);
        c.insert(CacheKey::Meta(1), b"one", None, Instant::ZERO).unwrap();
        c.insert(CacheKey::Meta(2), b"two", Some(SaIdx(4)), Instant::ZERO).unwrap();
        c.insert(CacheKey::Meta(3), b"three", None, Instant::ZERO).unwrap();
        assert_eq!(c.stats.evicted, 1);
        assert_eq!(c.take_with(&CacheKey::Meta(1), |h, _| h.to_vec()), None);
        assert_eq!(c.take_with(&CacheKey::Meta(2), |h, r| (h.to_vec(), r)), Some((b"two".to_vec(), Some(SaIdx(4)))));
        assert_eq!(c.take_with(&CacheKey::Meta(3), |h, _| h.to_vec()), Some(b"three".to_vec()));
        assert!(c.is_empty());
        assert_eq!((c.stats.rx_success, c.stats.tx_success, c.stats.tx_not_cached), (3, 2, 1));
    }

    #[test]
    fn rejects_a_colliding_key_and_keeps_the_first() {
        let mut c = ProxyCache::new(4);
        c.insert(CacheKey::Meta(9), b"first", None, Instant::ZERO).unwrap();
        assert_eq!(c.insert(CacheKey::Meta(9), b"second", None, Instant::ZERO), Err(InsertError::Collision));
        assert_eq!(c.stats.rx_collision, 1);
        assert_eq!(c.take_with(&CacheKey::Meta(9), |h, _| h.to_vec()), Some(b"first".to_vec()));
        assert_eq!(c.insert(CacheKey::Meta(1), &[0; MAX_CACHED + 1], None, Instant::ZERO), Err(InsertError::TooLong));
    }

    #[test]
    fn expires_entries_older_than_max_age_oldest_first() {
        let mut c = ProxyCache::new(8);
        for k in 0..4u64 {
            c.insert(CacheKey::Meta(k), b"h", None, Instant::from_millis(k * 100)).unwrap();
        }
        let age = core::time::Duration::from_millis(250);
        assert_eq!(c.expire(Instant::from_millis(300), age), 1);
        assert_eq!(c.expire(Instant::from_millis(540), age), 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.peek(&CacheKey::Meta(3)), Some(&b"h"[..]));
        assert_eq!(c.stats.expired, 3);
        let t = c.stage(b"x").unwrap();
        c.abort(t);
        assert_eq!(c.len(), 1);
    }

    /// An IPv4 packet from `src`:`sport` to 10.9.0.1:80 with IP ID 0x1234: TCP (seq 7, ack 9)
    /// or UDP with payload "ping".
    fn packet(tcp: bool, src: [u8; 4], sport: u16) -> Vec<u8> {
        let l4: Vec<u8> = if tcp {
            let mut t = vec![0u8; 20];
            t[4..8].copy_from_slice(&7u32.to_be_bytes());
            t[8..12].copy_from_slice(&9u32.to_be_bytes());
            t[12] = 0x50;
            t
        } else {
            let mut u = vec![0u8; 8];
            u[4..6].copy_from_slice(&12u16.to_be_bytes());
            u.extend_from_slice(b"ping");
            u
        };
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, if tcp { 6 } else { 17 }, 0, 0];
        p[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&[10, 9, 0, 1]);
        p.extend_from_slice(&l4);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p
    }

    #[test]
    fn the_translated_key_survives_source_nat_and_the_header_key_does_not() {
        for tcp in [true, false] {
            let before = packet(tcp, [10, 1, 0, 1], 40000);
            let after = packet(tcp, [10, 77, 0, 1], 1024);
            assert_ne!(header_key(&before), header_key(&after));
            assert_eq!(translated_key(&before), translated_key(&after));
            assert!(translated_key(&before).is_some());
            // Another packet of the flow (another IP ID) is another key.
            let mut next = before.clone();
            next[5] = 0x35;
            assert_ne!(translated_key(&before), translated_key(&next));
        }
    }

    proptest! {
        /// The cache behaves like a map with FIFO eviction at capacity (every hit removes).
        #[test]
        fn agrees_with_a_bounded_map_model(cap in 1usize..8, ops in proptest::collection::vec((any::<bool>(), 0u64..12), 1..200)) {
            let mut c = ProxyCache::new(cap);
            let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
            for (insert, k) in ops {
                let key = CacheKey::Meta(k);
                if insert {
                    let v = k.to_be_bytes().to_vec();
                    let r = c.insert(key, &v, None, Instant::ZERO);
                    if model.iter().any(|(mk, _)| *mk == k) {
                        prop_assert_eq!(r, Err(InsertError::Collision));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        if model.len() == cap { model.remove(0); }
                        model.push((k, v));
                    }
                } else {
                    let got = c.take_with(&key, |h, _| h.to_vec());
                    let want = model.iter().position(|(mk, _)| *mk == k).map(|i| model.remove(i).1);
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(c.len(), model.len());
                prop_assert!(c.len() <= cap);
            }
        }
    }
}
