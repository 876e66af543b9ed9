//! The sans-IO data plane of a zsfc node: classifier, SFF, caching SFC proxy, egress.
//!
//! A [`Node`] is a plain struct. A driver hands it packets with the current time and acts on
//! the [`Verdict`] it returns; the node never reads a clock, opens a socket or spawns a task.
//! Every drop has a [`DropReason`] and is counted.
//!
//! `clippy::indexing_slicing` is not on here: the engine reads headers through `zsfc_wire`'s
//! checked views, and its own indexing (integrity TLVs, proof-of-transit shares, the proxy's
//! keys) follows a length check in the same function. The engine fuzz target (every entry
//! point, arbitrary bytes) and the simulation tests are what show that no input panics.
#![forbid(unsafe_code)]

pub mod circuit;
pub mod classifier;
mod drop;
pub mod integrity;
mod liveness;
mod node;
pub mod pmtu;
pub mod pool;
pub mod proxy;
pub mod sf;

pub use circuit::CircuitLiveness;
pub use classifier::{Action, Classifier, Prefix, Rule};
pub use drop::{DropCounters, DropReason};
pub use liveness::{LivenessSettings, PeerLiveness};
pub use node::{
    ChainIntegrity, ChainSpec, ConfigError, Event, LabelAction, Node, NodeSettings, NodeStats, NshSpec, RETIRE_MAX,
    RETIRE_MIN, SaUse, SfAttach, SfReport, SfSpec, Verdict,
};
pub use pool::{Member, Pool, flow_hash, rendezvous};
pub use proxy::{KeyMode, ProxyStats};
pub use sf::{ServiceFunction, SfContext, SfVerdict};
pub use zsfc_esp::Instant;
pub use zsfc_wire::PacketBuf;

/// A neighbouring node, as the driver numbers its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// A chain (service function path); also the NSH service path identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(pub u32);

/// An outbound SA slot on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaIdx(pub u32);

/// A service function instance on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfId(pub u32);
