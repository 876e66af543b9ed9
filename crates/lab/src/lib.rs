//! Labs: a whole domain in network namespaces from one file (`zsfc up`, `run`, the namespace
//! tests and the benchmarks).
//!
//! - [`plan`]: a [`Lab`] file turned into everything to build (namespaces, addresses, routes, one
//!   node configuration per node, external SFs, services), touching nothing, so that every mistake
//!   is reported before anything exists.
#![forbid(unsafe_code)]

pub mod plan;

pub use plan::*;
