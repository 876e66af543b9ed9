//! A zsfc node process (`zsfc node`): the engines of `zsfc-dataplane` on worker lanes, driven by
//! `zsfc-io`'s loops, the mutual-TLS gateway where the node is an ingress, the controller agent
//! that enrols, follows the controller's documents and applies them, and the metrics endpoint.
//!
//! - [`process`]: start-up (configuration, enrolment, devices), the lanes, shutdown and the
//!   final report;
//! - [`agent`]: the controller agent (enrolment, long polls, applying SAD/SPD documents to the
//!   engines make-before-break, acknowledgements, SF drop reports);
//! - [`metrics`]: the Prometheus families and their HTTP endpoint;
//! - `report`: the engines' events (SA expiry, SF drops, liveness) reported to the controller;
//! - `renew`: the agent's renewal of the node's and the gateway's certificates;
//! - `routes`: the routes into the domain through the node's TUN device.
//!
//! A process runtime reports to its operator, so its errors are `anyhow` errors with context.
#![forbid(unsafe_code)]

pub mod agent;
pub mod interop;
pub mod metrics;
pub mod process;
mod renew;
mod report;
mod routes;

pub use process::{Options, run};
