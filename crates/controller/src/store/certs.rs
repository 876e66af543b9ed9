//! Certificates after enrolment (issue 17): a node renews its own certificate, and the gateway
//! node the gateway's, over mutual TLS before two thirds of their life has passed; the operator
//! revokes an identity, or issues a reinstalled node a new bootstrap token (its old
//! certificates revoked in the same transaction). The identity of what is signed comes from the
//! caller's certificate and the domain, never from the request.
use super::{ApiError, Controller, Revocation, internal, set_meta, sha256};
use crate::audit::{self, Kind};
use crate::pki::Validity;
use rusqlite::params;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;
use zsfc_config::ikeless::RevokedClient;
use zsfc_identity::{Identity, Kind as IdKind};

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The kinds `zsfc revoke` takes (roles move with `zsfc role-key` and `controller-recover`).
pub fn revocable(kind: &str) -> Option<IdKind> {
    match kind {
        "node" => Some(IdKind::Node),
        "client" => Some(IdKind::Client),
        "gateway" => Some(IdKind::Gateway),
        _ => None,
    }
}

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
    pub fn renew(&self, node: &str, what: Renewal, csr: &str, peer: &str) -> Result<String, ApiError> {
        let domain = self.domain();
        let id_err = |e: zsfc_identity::IdentityError| ApiError::new(400, "invalid-value", e.to_string());
        let id = match what {
            Renewal::Node => Identity::new(&domain.name, IdKind::Node, node).map_err(id_err)?,
            Renewal::Gateway if domain.gateway_nodes.iter().any(|g| g == node) => {
                Identity::new(&domain.name, IdKind::Gateway, node).map_err(id_err)?
            }
            Renewal::Gateway => {
                self.audit(
                    Kind::Refused,
                    &format!("node/{node}"),
                    &format!("gateway renewal from {peer}: runs no gateway"),
                );
                return Err(ApiError::new(
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
            return Err(ApiError::new(403, "access-denied", format!("node {node:?} has not enrolled")));
        }
        let validity = self.validity_for(&id, domain.topology.certificates.node());
        let cert = self
            .ca
            .sign_csr_with_names(csr, &id, validity, what == Renewal::Gateway)
            .map_err(|e| ApiError::new(400, "invalid-value", format!("csr: {e}")))?;

        let until = unix_s(validity.not_after);
        let detail = format!("certificate renewed from {peer}, valid until {until} (unix s)");
        self.audit(Kind::Renew, &id.to_string(), &detail);
        Ok(cert)
    }

    /// The cut-off of `id`'s revocation, if it is revoked.
    fn revoked_before(&self, id: &Identity) -> Option<u64> {
        let kind = id.kind().segment();
        self.state().domain.revoked.iter().find(|r| r.kind == kind && r.name == id.name()).map(|r| r.before)
    }

    /// Whether a certificate of `id` valid from `not_before` (Unix seconds; `None`: unknown)
    /// is revoked.
    pub fn is_revoked(&self, id: &Identity, not_before: Option<u64>) -> bool {
        self.revoked_before(id).is_some_and(|before| not_before.is_none_or(|nb| nb <= before))
    }

    /// A validity of `life` from now for a new certificate of `id`: after its revocation's
    /// cut-off, if it has one (the clock-skew allowance must not carry it back before it).
    pub(crate) fn validity_for(&self, id: &Identity, life: Duration) -> Validity {
        let mut v = Validity::from_now(life);
        if let Some(before) = self.revoked_before(id) {
            v.not_before = v.not_before.max(UNIX_EPOCH + Duration::from_secs(before + 1));
        }
        v
    }

    /// The nodes cut off from the domain: revoked, and not enrolled again since. Rollouts give
    /// them nothing and do not wait for them.
    pub(crate) fn cut_off(&self) -> Result<std::collections::HashSet<String>, ApiError> {
        let revoked: Vec<(String, i64)> = self
            .state()
            .domain
            .revoked
            .iter()
            .filter(|r| r.kind == "node")
            .map(|r| (r.name.clone(), r.at_ms))
            .collect();
        let db = self.db();
        let mut cut = std::collections::HashSet::new();
        for (name, at_ms) in revoked {
            let enrolled: Option<i64> = db
                .query_row("SELECT enrolled_at FROM nodes WHERE name = ?1", [&name], |r| r.get(0))
                .map_err(internal)?;
            // An enrolment after the revocation gave a certificate after its cut-off.
            if enrolled.is_none_or(|ms| ms <= at_ms) {
                cut.insert(name);
            }
        }
        Ok(cut)
    }

    /// The nodes that never enrolled, sorted, but for those `cut` off.
    pub(crate) fn unenrolled(&self, cut: &std::collections::HashSet<String>) -> Result<Vec<String>, ApiError> {
        let db = self.db();
        let mut q = db.prepare("SELECT name FROM nodes WHERE enrolled_at IS NULL ORDER BY name").map_err(internal)?;
        let names = q.query_map([], |r| r.get::<_, String>(0)).map_err(internal)?;
        let mut out = Vec::new();
        for n in names {
            let n = n.map_err(internal)?;
            if !cut.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The revoked clients, for the gateway's document.
    pub(crate) fn revoked_clients(&self) -> Vec<RevokedClient> {
        let st = self.state();
        st.domain
            .revoked
            .iter()
            .filter(|r| r.kind == "client")
            .map(|r| RevokedClient { name: r.name.clone(), before: r.before })
            .collect()
    }

    /// The domain with `id` revoked as of now (a revocation of it before is moved to now).
    fn with_revocation(&self, id: &Identity) -> super::DomainSpec {
        let mut d = self.domain();
        let kind = id.kind().segment();
        d.revoked.retain(|r| !(r.kind == kind && r.name == id.name()));
        let (before, at_ms) = (unix_s(SystemTime::now()), audit::unix_ms());
        d.revoked.push(Revocation { kind: kind.to_owned(), name: id.name().to_owned(), before, at_ms });
        d
    }

    /// Revokes `kind`/`name` at once: the controller refuses its certificates from the next
    /// call, and a rollout gives every node new SAs — none to a revoked node, which is also not
    /// waited for — and the gateway the revoked clients. Audited; returns the rollout's version.
    pub async fn revoke(&self, kind: IdKind, name: &str, who: &str) -> Result<super::Rolled, ApiError> {
        let domain = self.domain();
        let id =
            Identity::new(&domain.name, kind, name).map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
        if kind == IdKind::Node && !self.knows(name) {
            return Err(ApiError::new(404, "invalid-value", format!("no node named {name:?}")));
        }
        let d = self.with_revocation(&id);
        self.store_domain(&d)?;
        self.state().domain = d;
        self.audit(Kind::Revoke, &id.to_string(), &format!("revoked by {who}: its certificates until now are refused"));
        self.rollout(&format!("{id} revoked")).await
    }

    /// A new single-use bootstrap token for `node` (a reinstalled host), and in the same
    /// transaction the revocation of its certificates until now. Audited; the token is returned
    /// once and only its hash is kept.
    pub async fn node_token(&self, node: &str, who: &str) -> Result<(Zeroizing<String>, u64), ApiError> {
        if !self.knows(node) {
            return Err(ApiError::new(404, "invalid-value", format!("no node named {node:?}")));
        }
        let id = Identity::new(&self.domain().name, IdKind::Node, node)
            .map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
        let mut raw = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| internal("no randomness"))?;
        let token = Zeroizing::new(hex::encode(raw.as_ref()));
        let d = self.with_revocation(&id);
        {
            let mut db = self.db();
            let tx = db.transaction().map_err(internal)?;
            tx.execute(
                "UPDATE nodes SET token_hash = ?2, enrolled_at = NULL WHERE name = ?1",
                params![node, sha256(token.as_bytes())],
            )
            .map_err(internal)?;
            set_meta(&tx, "domain", &serde_json::to_string(&d).map_err(internal)?).map_err(internal)?;
            let detail = format!("new bootstrap token issued by {who}; the node's certificates until now revoked");
            audit::append(&tx, Kind::Revoke, &id.to_string(), &detail).map_err(internal)?;
            tx.commit().map_err(internal)?;
        }
        self.state().domain = d;
        let version = self.rollout(&format!("{id} revoked for re-enrolment")).await?.version;
        Ok((token, version))
    }

    /// A certificate for client `name` and the key of `csr` (made where the client's key is to
    /// live), valid for `life` — at most the domain's client lifetime, which is also the
    /// default. Audited; a revoked client's new certificate starts after its cut-off.
    pub fn issue_client(&self, name: &str, csr: &str, life: Option<Duration>, who: &str) -> Result<String, ApiError> {
        let domain = self.domain();
        let max = domain.topology.certificates.client();
        let life = life.unwrap_or(max);
        if life > max || life < Duration::from_secs(zsfc_config::MIN_LIFETIME_S) {
            return Err(ApiError::new(
                400,
                "invalid-value",
                format!(
                    "lifetime {life:?}: {}..={} seconds in this domain",
                    zsfc_config::MIN_LIFETIME_S,
                    max.as_secs()
                ),
            ));
        }
        let id = Identity::new(&domain.name, IdKind::Client, name)
            .map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
        let validity = self.validity_for(&id, life);
        let cert = self
            .ca
            .sign_csr(csr, &id, validity)
            .map_err(|e| ApiError::new(400, "invalid-value", format!("csr: {e}")))?;
        let detail = format!("client certificate issued by {who}, valid until {} (unix s)", unix_s(validity.not_after));
        self.audit(Kind::Issue, &id.to_string(), &detail);
        Ok(cert)
    }
}
