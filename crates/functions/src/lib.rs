//! Built-in service functions. Each implements [`zsfc_dataplane::ServiceFunction`], works on the
//! packet starting at its IP header, and reports what it did through counters.
//!
//! | SF | does |
//! |---|---|
//! | [`Forward`] | passes every packet (the seed's SF 1) |
//! | [`Firewall`] | 5-tuple ACL, first match wins, allow/deny |
//! | [`Dpi`] | drops packets whose L4 payload contains a pattern (Aho-Corasick) |
//! | [`SourceNat`] | rewrites source address/port, keeps a translation table; opaque |
//! | [`RateLimiter`] | token bucket in bytes per second |
//! | [`Delay`] | holds each packet for a fixed time (this kernel has no netem) |
//! | [`PacketLogger`] | writes every packet to a pcap file (LINKTYPE_RAW) |
//! | [`Counter`] | counts packets and bytes per protocol |
#![forbid(unsafe_code)]

mod delay;
mod dpi;
mod firewall;
mod logger;
mod nat;
mod simple;

pub use delay::Delay;
pub use dpi::{Dpi, DpiError};
pub use firewall::{AclRule, Firewall, Verdict as AclVerdict};
pub use logger::PacketLogger;
pub use nat::{NatConfig, SourceNat};
pub use simple::{Counter, Forward, RateLimiter};
