//! Zero-copy views over the headers zsfc reads and writes, and the packet buffer they live in.
//!
//! Every view follows the same shape (after smoltcp's `wire` module): `Foo::new_checked(bytes)`
//! validates lengths once and returns a view whose accessors cannot fail; a `FooRepr` has
//! `parse` and `emit` and round-trips. No function in this crate panics on any input: the fuzz
//! targets in `fuzz/` feed every parser arbitrary bytes.
//!
//! `clippy::indexing_slicing` is not on here, for a reason: every view checks its buffer's
//! length once, in `new_checked`, and its accessors then index with the ranges of its `field`
//! module, which that check covers (smoltcp's discipline). Turning each of those ~150 accesses
//! into `get()` would add error paths that cannot be taken to every header read on the hot
//! path. What shows that attacker bytes cannot make an index fail is the property tests (parse
//! and emit round trips over arbitrary bytes) and the fuzz targets of every parser.
#![forbid(unsafe_code)]

pub mod bfd;
pub mod buffer;
pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod nsh;
pub mod tcp;
pub mod udp;

pub use buffer::{PacketBuf, PacketMeta};

/// Why a buffer could not be read or written. Small and `Copy` so the hot path never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or the length it declares) does.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the standard forbids (bad version, header length, ...).
    #[error("malformed")]
    Malformed,
    /// More MPLS labels than the configured limit.
    #[error("too deep")]
    TooDeep,
    /// Valid, but not something zsfc handles.
    #[error("unsupported")]
    Unsupported,
    /// Not enough head- or tailroom in the buffer for the bytes to be added.
    #[error("no room in buffer")]
    NoRoom,
}

pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` at `at`, or 0 past the end (for callers that checked lengths).
#[inline]
pub fn be_u16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a big-endian `u32` at `at`, or 0 past the end (for callers that checked lengths).
#[inline]
pub fn be_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a big-endian `u16` at `at`; callers have checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`; callers have checked the length.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
