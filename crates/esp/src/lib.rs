//! ESP with AES-GCM (RFC 4303 + RFC 4106) and AES-GMAC (RFC 4543), sealing and opening in place.
//!
//! - [`OutboundSa::seal`] encrypts the IP packet at the start of a [`PacketBuf`] in tunnel
//!   mode: an outer header copied from the inner one, ESP header and IV go into the headroom,
//!   trailer and ICV into the tailroom; the whole inner packet is encrypted where it lies, so
//!   its header is authenticated end to end (RFC 4301 §5.2 check on opening).
//! - [`OutboundSa::seal_link`] wraps a labelled packet in link ESP (GMAC: authenticated only).
//! - [`InboundSa::open`] checks the replay window (cheap), opens the AEAD, and only then marks
//!   the sequence number as seen (RFC 4303 §3.4.3).
//! - The IV is the 64-bit sequence number, so it never repeats under one key; the sender
//!   refuses to seal at its hard limit and reports its soft limit (rekey wanted).
//! - Keys zeroize on drop and print as `<redacted>`.
//!
//! `clippy::indexing_slicing` is not on here: `open` and `seal` index the packet only after
//! `zsfc_wire::esp` and the IP views have checked its lengths (header, IV, ICV, trailer), and
//! keys are fixed-size arrays. The fuzz target of the engine's entry point and the property
//! tests of the replay window show that no packet reaches an index out of range.
#![forbid(unsafe_code)]

mod key;
mod replay;
mod sa;
mod time;

pub use key::{Algorithm, KeyError, SaKey};
pub use replay::{DEFAULT_WINDOW, ReplayError, ReplayWindow};
pub use sa::{
    InboundSa, Lifetimes, Limit, Limits, NEXT_HEADER_DUMMY, OVERHEAD_MAX, OpenError, Opened, OutboundSa, SaConfig,
    SealError, Sealed, TUNNEL_OVERHEAD_MAX, spi_of,
};
pub use time::Instant;
