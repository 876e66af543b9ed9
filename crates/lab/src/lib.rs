//! Labs: a whole domain in network namespaces from one file (`zsfc up`, `run`, the namespace
//! tests and the benchmarks).
//!
//! - [`plan`]: a [`Lab`] file turned into everything to build (namespaces, addresses, routes, one
//!   node configuration per node, external SFs, services), touching nothing, so that every mistake
//!   is reported before anything exists.
//! - [`build`](LabGuard::up): the controller's database and PKI, segments, circuits, processes.
//! - [`guard`]: the one RAII owner of what a lab creates ([`LabGuard`], [`Namespaces`]); dropping
//!   it removes exactly that, and `down` removes exactly what a lab recorded.
//! - [`restart`]: one node process stopped and started again, as systemd would on a host.
//! - [`check`]: the lab's expected outcomes, brought about for real and checked.
//! - [`access`]: an operator's command reaching the controller with a role's credentials.
//!
//! This crate runs the system's tools (ip, sysctl, curl, iptables) and reports to a person, so
//! its errors are `anyhow` errors carrying the command and what it printed, as a tool's are.
#![forbid(unsafe_code)]

pub mod access;
mod build;
pub mod check;
mod gateways;
pub mod guard;
pub mod plan;
mod planned;
mod restart;
pub mod shell;
mod state;
mod summary;

pub use build::site_files;
pub use guard::{Down, LabGuard, Namespaces, down};
pub use plan::*;
pub use restart::{Restarted, restart};
pub use state::State;
pub use summary::{summary, warnings};
