//! How long the certificates the domain CA issues are valid (seed 004 REQ20: a stolen key is
//! worth little for long). Nodes', the gateway's and the controller's certificates are
//! short-lived and renewed by their holders over mutual TLS once two thirds of their life has
//! passed; a client's certificate lives as long as the operator chose and is then issued anew.
use crate::build::{FieldError, bad};
use serde::{Deserialize, Serialize};

/// `[certificates]` of a topology or lab file (also `zsfc controller-init` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateLifetimes {
    /// Nodes', the gateway's and the controller's certificates, in seconds (default 24 h).
    pub node_s: u64,
    /// Clients' certificates, in seconds (default 30 days).
    pub client_s: u64,
}

impl Default for CertificateLifetimes {
    fn default() -> Self {
        Self { node_s: 86_400, client_s: 30 * 86_400 }
    }
}

/// The shortest lifetime: renewal at two thirds must leave the agent time to ask again.
pub const MIN_LIFETIME_S: u64 = 6;
/// The longest a node's certificate may live: a week (a short life is the point).
pub const MAX_NODE_LIFETIME_S: u64 = 7 * 86_400;
/// The longest a client's certificate may live: a year.
pub const MAX_CLIENT_LIFETIME_S: u64 = 366 * 86_400;

impl CertificateLifetimes {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Both lifetimes within bounds; the error names the field (`certificates.node_s`).
    pub fn check(&self) -> Result<(), FieldError> {
        let within = |field: &str, v: u64, max: u64| {
            if (MIN_LIFETIME_S..=max).contains(&v) {
                Ok(())
            } else {
                Err(bad(format!("certificates.{field}"), format!("{v} s: must be {MIN_LIFETIME_S}..={max} seconds")))
            }
        };
        within("node_s", self.node_s, MAX_NODE_LIFETIME_S)?;
        within("client_s", self.client_s, MAX_CLIENT_LIFETIME_S)
    }

    pub fn node(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.node_s)
    }

    pub fn client(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.client_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_out_of_bounds_name_their_field() {
        CertificateLifetimes::default().check().unwrap();
        let e = CertificateLifetimes { node_s: 2, ..Default::default() }.check().unwrap_err();
        assert!(e.to_string().starts_with("certificates.node_s: 2 s"), "{e}");
        let e = CertificateLifetimes { client_s: 400 * 86_400, ..Default::default() }.check().unwrap_err();
        assert!(e.to_string().starts_with("certificates.client_s"), "{e}");
    }
}
