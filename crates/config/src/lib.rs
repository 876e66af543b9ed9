//! The configuration of one node: its peers, labels, service functions, SAs, chains and
//! classification rules. It is the data model the controller will push and what a node reads
//! from a file: serializable (TOML here, JSON through serde), versioned, and checked as a whole
//! before anything is built, with errors that name the field (`sfs[1].function.patterns: ...`).
//!
//! ```toml
//! version = 1
//! name = "node-a"
//! [[peers]]
//! id = 1
//! name = "egress"
//! address = "192.0.2.10:6635"
//! [[labels]]
//! label = 999
//! peer = 1
//! [[sfs]]
//! label = 1002
//! name = "dpi"
//! intrusive = true
//! function = { kind = "dpi", patterns = ["test"] }
//! ```
//! See `examples/` for whole domains.
#![forbid(unsafe_code)]

mod build;
mod certificates;
pub mod ikeless;
mod io;
mod model;
mod topology;

pub use build::{
    FieldError, MAX_ETHERNET_LANES, chain_spec, check_function, configured_spi, install_chain_key, lane_spi, pools,
    rule, sa_config,
};
pub use certificates::{CertificateLifetimes, MAX_CLIENT_LIFETIME_S, MAX_NODE_LIFETIME_S, MIN_LIFETIME_S};
pub use io::{AttachmentSettings, GatewaySettings, IoSettings, PeerLink, TunSettings, link_port, parse_mac};
pub use model::*;
pub use topology::*;

/// The configuration format version this build reads and writes.
pub const VERSION: u32 = 1;

/// serde default of the protections that are on unless a file turns them off
/// (`link_protection`, `sfc_integrity`): secure by default.
pub fn on() -> bool {
    true
}

/// Whether a protection is on (serialized only when a file turned it off).
pub fn is_on(v: &bool) -> bool {
    *v
}
