//! Certificates after enrolment: a node renews its own certificate, and the gateway node the
//! gateway's, over mutual TLS before two thirds of their life has passed (issue 17). The
//! identity of what is signed comes from the caller's certificate and the domain, never from
//! the request.
use super::{Controller, Refusal, internal};
use crate::audit::Kind;
use crate::pki::Validity;
use zsfc_identity::{Identity, Kind as IdKind};

/// What a node asks to be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Renewal {
    /// Its own client certificate (`spiffe://DOMAIN/node/NAME`).
    Node,
    /// The server certificate of the gateway it runs (`spiffe://DOMAIN/gateway/NAME`), with
    /// the DNS names and addresses its request states.
    Gateway,
}

impl Controller {
    /// Signs `csr` for node `node` (the caller, authenticated by its current certificate) as
    /// `what`, valid for the domain's node certificate lifetime; audited.
    pub fn renew(&self, node: &str, what: Renewal, csr: &str, peer: &str) -> Result<String, Refusal> {
        let domain = self.domain();
        let id_err = |e: zsfc_identity::IdentityError| Refusal::new(400, "invalid-value", e.to_string());
        let id = match what {
            Renewal::Node => Identity::new(&domain.name, IdKind::Node, node).map_err(id_err)?,
            Renewal::Gateway if domain.gateway_node.as_deref() == Some(node) => {
                Identity::new(&domain.name, IdKind::Gateway, node).map_err(id_err)?
            }
            Renewal::Gateway => {
                self.audit(
                    Kind::Refused,
                    &format!("node/{node}"),
                    &format!("gateway renewal from {peer}: runs no gateway"),
                );
                return Err(Refusal::new(
                    403,
                    "access-denied",
                    format!("node {node:?} runs no gateway of this domain"),
                ));
            }
        };
        let enrolled: Option<i64> = self
            .db()
            .query_row("SELECT enrolled_at FROM nodes WHERE name = ?1", [node], |r| r.get(0))
            .map_err(internal)?;
        if enrolled.is_none() {
            return Err(Refusal::new(403, "access-denied", format!("node {node:?} has not enrolled")));
        }
        let validity = Validity::from_now(domain.topology.certificates.node());
        let cert = self
            .ca
            .sign_csr_with_names(csr, &id, validity, what == Renewal::Gateway)
            .map_err(|e| Refusal::new(400, "invalid-value", format!("csr: {e}")))?;
        let until = validity.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.audit(
            Kind::Renew,
            &id.to_string(),
            &format!("certificate renewed from {peer}, valid until {until} (unix s)"),
        );
        Ok(cert)
    }
}
