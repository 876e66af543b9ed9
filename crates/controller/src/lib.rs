//! The zsfc controller (RFC 9061 IKE-less case): runs the domain CA, enrols nodes with one-time
//! bootstrap tokens, generates every SA from the OS CSPRNG, pushes each node its desired state
//! (SAD, SPD, labels, chains, gateway grants) over mutual TLS 1.3, rekeys make-before-break,
//! applies chain and policy changes at run time and keeps an audit log with a hash chain.
//!
//! State lives in SQLite (the domain, nodes, token hashes, SA metadata, the CA, the audit log);
//! no SA key is ever written to it: a key exists in memory until the one node that needs it has
//! acknowledged the document carrying it.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod limit;
pub mod pki;
pub mod rollout;
pub mod sealed;
mod server;
mod store;

pub use server::{API_ROUTES, OPENAPI, serve};
pub use store::{Controller, DomainSpec, RekeySettings, StartError};

/// The CN of the operator's client certificate (commands such as `zsfc rekey` use it); no node
/// may take this name.
pub const OPERATOR: &str = "operator";
