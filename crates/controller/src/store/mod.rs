//! The controller's state and operations, independent of HTTP (see `server.rs`).
use crate::audit::{self, Kind};
use crate::pki::Ca;
use crate::rollout;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;
use zsfc_config::ikeless::{Direction, NodeState, sa_name};
use zsfc_config::{GatewayGrant, Topology};

pub use certs::{Renewal, revocable};
pub use liveness::{CircuitReport, PeerReport};

mod certs;
mod liveness;
mod sf_drops;
mod status;

/// What the controller runs: the compiled domain, who gets the gateway policy, and when to
/// rekey. Stored in the database; changed at run time through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    pub name: String,
    pub topology: Topology,
    /// The nodes whose gateways take `grants` (one, or several ingress gateways of the same
    /// domain; the old single `gateway_node` is read too).
    #[serde(default, alias = "gateway_node", deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub gateway_nodes: Vec<String>,
    #[serde(default)]
    pub grants: Vec<GatewayGrant>,
    #[serde(default)]
    pub rekey: RekeySettings,
    #[serde(default)]
    pub api: crate::limit::ApiLimits,
    /// Revoked identities (`zsfc revoke`, `zsfc node-token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<Revocation>,
}

/// A revoked identity: its certificates issued at or before `before` (Unix seconds, their
/// notBefore) are refused everywhere; one issued later (a node's re-enrolment) is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// `node`, `client` or `gateway`.
    pub kind: String,
    pub name: String,
    pub before: u64,
    /// When it was revoked (Unix ms): a node enrolled after this has a certificate after the
    /// cut-off and is back in the domain.
    #[serde(default)]
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RekeySettings {
    /// Rekey the whole domain this often (0: only on soft lifetime or on request).
    pub period_s: u64,
    /// How long the old SAs stay after the switch (packets in flight, SFs holding packets).
    pub grace_ms: u64,
    /// How long a push waits for a node's acknowledgement before it goes on without it.
    pub ack_timeout_ms: u64,
}

impl Default for RekeySettings {
    fn default() -> Self {
        Self { period_s: 0, grace_ms: 300, ack_timeout_ms: 5000 }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ca (id INTEGER PRIMARY KEY CHECK (id = 1), cert TEXT NOT NULL, key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, token_hash BLOB, enrolled_at INTEGER, boot TEXT, state TEXT);
CREATE TABLE IF NOT EXISTS sas (spi INTEGER PRIMARY KEY, name TEXT NOT NULL, from_node TEXT, to_node TEXT,
    created_at INTEGER NOT NULL, retired_at INTEGER);
CREATE TABLE IF NOT EXISTS role_keys (role TEXT PRIMARY KEY, spki_sha256 BLOB NOT NULL, bound_at INTEGER NOT NULL,
    bound_by TEXT NOT NULL);
";

/// The first SPI a domain hands out; below are RFC 4303's reserved values and room.
const FIRST_SPI: u32 = 0x1000;
/// SPIs stay below 2^24 so that worker lanes can put their number in the top byte.
const SPI_LIMIT: u32 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("certificate authority: {0}")]
    Ca(#[from] rcgen::Error),
    #[error("domain: {0}")]
    Domain(String),
    #[error("identity: {0}")]
    Identity(#[from] zsfc_identity::IdentityError),
}

/// An API failure: HTTP status, RFC 8040 error-tag and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub tag: &'static str,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.tag, self.message)
    }
}

impl ApiError {
    pub fn new(status: u16, tag: &'static str, message: impl Into<String>) -> Self {
        Self { status, tag, message: message.into() }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, "operation-failed", e.to_string())
}

/// A document waiting for its node.
#[derive(Debug)]
pub struct Pending {
    pub version: u64,
    /// The JSON; holds key material until it is superseded.
    pub body: Zeroizing<Vec<u8>>,
}

struct NodeChan {
    pending: watch::Sender<Option<Arc<Pending>>>,
    acked: watch::Sender<u64>,
}

struct State {
    domain: DomainSpec,
    version: u64,
    next_spi: u32,
    /// Each node's last completed state, without keys.
    docs: HashMap<String, NodeState>,
    boots: HashMap<String, String>,
    rolling: bool,
    /// When the SAs the nodes run now were made (the start of the last rollout); `None` before
    /// this controller's first rollout.
    renewed_at: Option<std::time::Instant>,
    /// The nodes whose SF instances the last rollout took out of the plan (seen down).
    drained: std::collections::BTreeSet<String>,
    /// The SF instances it took out, as (SF, node).
    out_of_plan: Vec<(String, String)>,
}

pub struct Controller {
    db: Mutex<Connection>,
    state: Mutex<State>,
    nodes: HashMap<String, NodeChan>,
    rollout_lock: tokio::sync::Mutex<()>,
    wanted: Notify,
    /// A rollout was asked for and has not started yet.
    requested: std::sync::atomic::AtomicBool,
    pub ca: Ca,
    pub rollouts: AtomicU64,
    /// Time from publishing each step of a rollout to the last node's acknowledgement.
    push_latencies: Mutex<Vec<Duration>>,
    /// SF drops reported by nodes, numbered, for the gateway to count (the last
    /// [`SF_DROPS_KEPT`]); woken on every report.
    sf_drops: Mutex<(u64, std::collections::VecDeque<SfDrops>)>,
    sf_drops_added: Notify,
    /// What the nodes report of their peers' liveness.
    liveness: Mutex<liveness::Liveness>,
}

/// How many reports of SF drops the controller keeps for the gateway to fetch.
const SF_DROPS_KEPT: usize = 1024;

/// Packets of one client an SF dropped for what they carried (a DPI match, a firewall rule),
/// as a node reports them: the subscriber id is the gateway's pseudonym (hex), which only the
/// gateway can map to an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfDrops {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub node: String,
    pub sf: String,
    pub subscriber: String,
    pub reason: String,
    pub count: u32,
}

impl core::fmt::Debug for Controller {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Controller").field("nodes", &self.nodes.len()).finish()
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref().to_vec()
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: what names the key a role is bound to.
pub(crate) fn spki_sha256(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(sha256(c.public_key().raw))
}

fn empty_state(version: u64) -> NodeState {
    NodeState { version, ikeless: Default::default(), sfc: Default::default() }
}

/// What `init` hands to whoever deploys the nodes.
pub struct Init {
    /// One bootstrap token per node (hex), each usable once.
    pub tokens: Vec<(String, Zeroizing<String>)>,
}

impl core::fmt::Debug for Init {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Init").field("tokens", &self.tokens.len()).finish()
    }
}

fn set_meta(db: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value]).map(drop)
}

/// The domain CA stored by [`Controller::init`].
fn load_ca(db: &Connection) -> Result<Ca, StartError> {
    let (cert, key): (String, Zeroizing<String>) =
        db.query_row("SELECT cert, key FROM ca WHERE id = 1", [], |r| Ok((r.get(0)?, Zeroizing::new(r.get(1)?))))?;
    Ok(Ca::from_pem(&cert, &key)?)
}

fn meta(db: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

/// What a rollout did: the version it gave every node, and the nodes that did not acknowledge
/// one of its steps in time (dead, unreachable or slow; each gets the current document when it
/// polls again, and `zsfc domain` shows it behind until then), and the nodes not waited for
/// because they never enrolled (each gets the current document at its enrolment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rolled {
    pub version: u64,
    pub late: Vec<String>,
    pub unenrolled: Vec<String>,
}

impl Rolled {
    /// The API's reply: `{"zsfc:output": {"version", "not-acknowledged", "not-enrolled"}}`.
    pub fn output(&self) -> serde_json::Value {
        serde_json::json!({"zsfc:output": {
            "version": self.version, "not-acknowledged": self.late, "not-enrolled": self.unenrolled,
        }})
    }
}

impl Controller {
    /// Creates the database of a new domain: the CA, the domain and one bootstrap token per
    /// node (only their hashes are stored).
    pub fn init(path: &Path, domain: &DomainSpec) -> Result<(Init, Ca), StartError> {
        check_domain(domain).map_err(StartError::Domain)?;
        let mut db = Connection::open(path)?;
        restrict(path);
        db.execute_batch(SCHEMA)?;
        db.execute_batch(audit::SCHEMA)?;
        if meta(&db, "domain")?.is_some() {
            return Err(StartError::Domain(format!("{} already holds a domain", path.display())));
        }
        let ca = Ca::new(&format!("zsfc {} domain CA", domain.name))?;
        let tx = db.transaction()?;
        tx.execute("INSERT INTO ca (id, cert, key) VALUES (1, ?1, ?2)", params![ca.pem(), ca.key_pem()])?;
        set_meta(&tx, "domain", &serde_json::to_string(domain).map_err(|e| StartError::Domain(e.to_string()))?)?;
        set_meta(&tx, "version", "0")?;
        set_meta(&tx, "next_spi", &FIRST_SPI.to_string())?;
        let mut tokens = Vec::new();
        for n in &domain.topology.nodes {
            let mut raw = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(raw.as_mut()).map_err(|_| StartError::Domain("no randomness".into()))?;
            let token = Zeroizing::new(hex::encode(raw.as_ref()));
            tx.execute(
                "INSERT INTO nodes (name, token_hash) VALUES (?1, ?2)",
                params![n.name, sha256(token.as_bytes())],
            )?;
            tokens.push((n.name.clone(), token));
        }
        audit::append(&tx, Kind::Start, &domain.name, &format!("domain created with {} nodes", tokens.len()))?;
        tx.commit()?;
        Ok((Init { tokens }, ca))
    }

    /// Break glass, on the controller's host (whoever may read its database holds the CA key
    /// anyway): removes `role`'s binding to a hardware-token key and issues the role a new
    /// certificate and key (files), audited — for a role whose token was lost, the `operator`'s
    /// above all, which no one else can rebind. A running controller sees it at the next call.
    pub fn recover_role(path: &Path, role: crate::Role) -> Result<(String, Zeroizing<String>), StartError> {
        let mut db = Connection::open(path)?;
        if meta(&db, "domain")?.is_none() {
            return Err(StartError::Domain(format!("{} holds no domain", path.display())));
        }
        db.execute_batch(SCHEMA)?;
        let text = meta(&db, "domain")?.unwrap_or_default();
        let domain: DomainSpec = serde_json::from_str(&text).map_err(|e| StartError::Domain(e.to_string()))?;
        let life = crate::pki::Validity::from_now(crate::pki::ROLE_LIFETIME);
        let issued = load_ca(&db)?.issue(&role.identity(&domain.name)?, &[], &[], life)?;
        // Immediate: the audit chain's last hash is read under the write lock (a running
        // controller appends too).
        db.busy_timeout(Duration::from_secs(5))?;
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let unbound = tx.execute("DELETE FROM role_keys WHERE role = ?1", [role.name()])?;
        let detail = format!(
            "role recovered on the controller's host: {} new file credentials issued",
            if unbound > 0 { "its hardware-token binding removed," } else { "no binding to remove;" }
        );
        audit::append(&tx, Kind::RoleKey, role.name(), &detail)?;
        tx.commit()?;
        Ok(issued)
    }

    /// Opens an initialised database.
    pub fn open(path: &Path) -> Result<Arc<Self>, StartError> {
        let db = Connection::open(path)?;
        db.execute_batch(SCHEMA)?;
        db.execute_batch(audit::SCHEMA)?;
        let text =
            meta(&db, "domain")?.ok_or_else(|| StartError::Domain(format!("{} holds no domain", path.display())))?;
        let domain: DomainSpec = serde_json::from_str(&text).map_err(|e| StartError::Domain(e.to_string()))?;
        let ca = load_ca(&db)?;
        let num = |k: &str| -> Result<u64, StartError> {
            meta(&db, k)?.and_then(|v| v.parse().ok()).ok_or_else(|| StartError::Domain(format!("meta {k} is missing")))
        };
        let version = num("version")?;
        let next_spi = num("next_spi")? as u32;
        let mut docs = HashMap::new();
        let mut boots = HashMap::new();
        {
            let mut q = db.prepare("SELECT name, boot, state FROM nodes")?;
            let rows = q.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
            })?;
            for row in rows {
                let (name, boot, state) = row?;
                if let Some(s) = state.and_then(|s| serde_json::from_str(&s).ok()) {
                    docs.insert(name.clone(), s);
                }
                if let Some(b) = boot {
                    boots.insert(name, b);
                }
            }
        }
        let nodes = domain
            .topology
            .nodes
            .iter()
            .map(|n| (n.name.clone(), NodeChan { pending: watch::channel(None).0, acked: watch::channel(0).0 }))
            .collect();
        audit::append(&db, Kind::Start, &domain.name, &format!("controller started at version {version}"))?;
        Ok(Arc::new(Self {
            db: Mutex::new(db),
            state: Mutex::new(State {
                domain,
                version,
                next_spi,
                docs,
                boots,
                rolling: false,
                renewed_at: None,
                drained: Default::default(),
                out_of_plan: Vec::new(),
            }),
            nodes,
            rollout_lock: tokio::sync::Mutex::new(()),
            wanted: Notify::new(),
            requested: std::sync::atomic::AtomicBool::new(false),
            ca,
            rollouts: AtomicU64::new(0),
            push_latencies: Mutex::new(Vec::new()),
            sf_drops: Mutex::new((0, std::collections::VecDeque::new())),
            sf_drops_added: Notify::new(),
            liveness: Mutex::default(),
        }))
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends to the audit log; a log that cannot be written is reported, not ignored.
    pub fn audit(&self, kind: Kind, subject: &str, detail: &str) {
        if let Err(e) = audit::append(&self.db(), kind, subject, detail) {
            tracing::error!("controller: audit log write failed: {e}");
        }
    }

    pub fn domain(&self) -> DomainSpec {
        self.state().domain.clone()
    }

    /// Enrolment: the node's one-time token buys a certificate for its CSR's key, with the
    /// node's name as identity. A wrong, unknown or used token is refused and audited.
    pub fn enrol(&self, node: &str, token: &str, csr: &str, peer: &str) -> Result<String, ApiError> {
        let refuse = |why: &str| {
            self.audit(Kind::Refused, node, &format!("enrolment from {peer}: {why}"));
            ApiError::new(403, "access-denied", format!("enrolment refused: {why}"))
        };
        let mut db = self.db();
        let row: Option<(Option<Vec<u8>>, Option<i64>)> = db
            .query_row("SELECT token_hash, enrolled_at FROM nodes WHERE name = ?1", [node], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(internal)?;
        drop(db);
        let Some((hash, enrolled)) = row else { return Err(refuse("no such node")) };
        let Some(hash) = hash else {
            return Err(refuse(if enrolled.is_some() { "the bootstrap token was already used" } else { "no token" }));
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(&hash, &sha256(token.as_bytes())).is_err() {
            return Err(refuse("wrong bootstrap token"));
        }
        let id = zsfc_identity::Identity::new(&self.domain().name, zsfc_identity::Kind::Node, node)
            .map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
        let life = self.validity_for(&id, self.domain().topology.certificates.node());
        let cert =
            self.ca.sign_csr(csr, &id, life).map_err(|e| ApiError::new(400, "invalid-value", format!("csr: {e}")))?;
        db = self.db();
        let tx = db.transaction().map_err(internal)?;
        tx.execute(
            "UPDATE nodes SET token_hash = NULL, enrolled_at = ?2 WHERE name = ?1",
            params![node, audit::unix_ms()],
        )
        .map_err(internal)?;
        audit::append(&tx, Kind::Enrol, node, &format!("enrolled from {peer}; token consumed")).map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(cert)
    }

    /// Binds administrative role `role` to the key of `csr` (made on a hardware token): the
    /// answer is a certificate for the role and that key, and from now on only certificates of
    /// that key act as the role — the role's earlier certificates, whose keys were files, are
    /// refused. Binding again moves the role to another key.
    pub fn bind_role(&self, role: crate::Role, csr: &str, who: &str) -> Result<String, ApiError> {
        let id = role.identity(&self.domain().name).map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
        let life = crate::pki::Validity::from_now(crate::pki::ROLE_LIFETIME);
        let cert =
            self.ca.sign_csr(csr, &id, life).map_err(|e| ApiError::new(400, "invalid-value", format!("csr: {e}")))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c)
            .map_err(internal)?;
        let key = spki_sha256(&der)
            .ok_or_else(|| ApiError::new(500, "operation-failed", "issued an unreadable certificate"))?;
        let mut db = self.db();
        let tx = db.transaction().map_err(internal)?;
        tx.execute(
            "INSERT OR REPLACE INTO role_keys (role, spki_sha256, bound_at, bound_by) VALUES (?1, ?2, ?3, ?4)",
            params![role.name(), key, audit::unix_ms(), who],
        )
        .map_err(internal)?;
        let detail = format!(
            "role bound to key {} (SHA-256 of its public key); its other keys are refused",
            hex::encode(&key[..8])
        );
        audit::append(&tx, Kind::RoleKey, role.name(), &detail).map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(cert)
    }

    /// The SHA-256 of the public key `role` is bound to, if it is.
    pub fn role_key(&self, role: crate::Role) -> Result<Option<Vec<u8>>, ApiError> {
        self.db()
            .query_row("SELECT spki_sha256 FROM role_keys WHERE role = ?1", [role.name()], |r| r.get(0))
            .optional()
            .map_err(internal)
    }

    /// Whether `node` belongs to the domain.
    pub fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Long poll: the node's document newer than `after`, or `None` after `wait`. A new `boot`
    /// id means the node restarted and lost its SAs: it gets a fresh generation (and its peers'
    /// SAs toward the old instance go with the old generation, RFC 9061 §4.2).
    pub async fn poll(&self, node: &str, after: u64, boot: &str, wait: Duration) -> Option<Arc<Pending>> {
        let chan = self.nodes.get(node)?;
        let restarted = {
            let mut st = self.state();
            let prev = st.boots.insert(node.to_owned(), boot.to_owned());
            if prev.as_deref() != Some(boot) {
                st.docs.insert(node.to_owned(), empty_state(0));
                let _ =
                    self.db().execute("UPDATE nodes SET boot = ?2, state = NULL WHERE name = ?1", params![node, boot]);
            }
            prev.as_deref() != Some(boot)
        };
        if restarted {
            self.audit(Kind::Push, node, &format!("node (re)started (boot {boot}): new SAs for the domain"));
            self.request_rollout();
        }
        let mut rx = chan.pending.subscribe();
        let fresh = |p: &Option<Arc<Pending>>| p.as_ref().is_some_and(|p| p.version > after);
        let got = tokio::time::timeout(wait, rx.wait_for(fresh)).await;
        match got {
            Ok(Ok(p)) => p.clone(),
            _ => None,
        }
    }

    pub fn ack(&self, node: &str, version: u64, error: Option<&str>) -> Result<(), ApiError> {
        let Some(chan) = self.nodes.get(node) else {
            return Err(ApiError::new(404, "invalid-value", format!("no node {node:?}")));
        };
        // A node acknowledges what it was given: a version beyond the last one pushed to it
        // would show it as converged on a state it never received.
        let pushed = chan.pending.borrow().as_ref().map_or(0, |p| p.version);
        if version > pushed {
            self.audit(
                Kind::Refused,
                node,
                &format!("acknowledgement of version {version}, never pushed (last {pushed})"),
            );
            return Err(ApiError::new(
                400,
                "invalid-value",
                format!("version {version} was never pushed to {node} (the last was {pushed})"),
            ));
        }
        match error {
            None => {
                chan.acked.send_if_modified(|a| {
                    let newer = version > *a;
                    if newer {
                        *a = version;
                    }
                    newer
                });
            }
            Some(e) => self.audit(Kind::Push, node, &format!("version {version} refused by the node: {}", bounded(e))),
        }
        Ok(())
    }

    /// `sadb-expire`: a soft lifetime asks for a rekey; a hard one is recorded.
    pub fn expired(&self, node: &str, sa: &str, soft: bool) {
        self.audit(Kind::Notification, node, &format!("sadb-expire {sa} ({})", if soft { "soft" } else { "hard" }));
        if soft {
            self.request_rollout();
        }
    }

    pub fn bad_spi(&self, node: &str, spi: u32) {
        self.audit(Kind::Notification, node, &format!("sadb-bad-spi {spi:#x}"));
    }

    /// Asks the background task for a rollout (requests coalesce).
    pub fn request_rollout(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wanted.notify_one();
    }

    /// Rolls out on request, periodically (`rekey.period_s`) and once at start.
    pub async fn run_background(self: Arc<Self>) {
        // A restarted controller has forgotten every key: new SAs for nodes it knows. Nodes it
        // has never heard of ask by polling.
        if !self.state().boots.is_empty() {
            self.request_rollout();
        }
        loop {
            let period = self.state().domain.rekey.period_s;
            // Whichever comes first: the operator's period, or the SAs' renewal by time — SAs are
            // renewed before their soft lifetime whether or not they carry traffic (a node only
            // asks when it seals past the soft lifetime, which an idle node never does).
            let wait =
                [(period > 0).then(|| Duration::from_secs(period)), self.renewal_due()].into_iter().flatten().min();
            let tick = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = self.wanted.notified() => {
                    // Let requests that come together (nodes starting) make one rollout.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                () = tick => {}
            }
            // Requests until here are served by this rollout (its compile comes after): take a
            // permit they left too, so they do not cause a second one.
            let _ = tokio::time::timeout(Duration::ZERO, self.wanted.notified()).await;
            self.requested.store(false, Ordering::SeqCst);
            if let Err(e) = self.rollout("scheduled").await {
                tracing::error!("controller: rollout failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn next_version(&self) -> Result<u64, ApiError> {
        let mut st = self.state();
        st.version += 1;
        set_meta(&self.db(), "version", &st.version.to_string()).map_err(internal)?;
        Ok(st.version)
    }

    fn publish(&self, node: &str, doc: &NodeState) -> Result<(), ApiError> {
        // Sized up front so that growing never leaves a copy of key material behind.
        let entries = doc.ikeless.sad.entries.len() + doc.ikeless.spd.entries.len() + doc.sfc.chains.len();
        let mut body = Zeroizing::new(Vec::with_capacity(4096 + entries * 1024));
        serde_json::to_writer(&mut *body, doc).map_err(internal)?;
        if let Some(c) = self.nodes.get(node) {
            c.pending.send_replace(Some(Arc::new(Pending { version: doc.version, body })));
        }
        Ok(())
    }

    /// Waits until every node but the cut-off ones acknowledged `version`; returns the ones
    /// that did not in time.
    async fn acks(&self, version: u64, cut: &std::collections::HashSet<String>) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.state().domain.rekey.ack_timeout_ms);
        let waits = self.nodes.iter().filter(|(name, _)| !cut.contains(*name)).map(|(name, c)| {
            let mut rx = c.acked.subscribe();
            async move {
                let ok =
                    tokio::time::timeout_at(deadline, rx.wait_for(|a| *a >= version)).await.is_ok_and(|r| r.is_ok());
                (!ok).then(|| name.clone())
            }
        });
        let mut late = Vec::new();
        for w in waits {
            late.extend(w.await);
        }
        late
    }

    /// A new generation of SAs (and the current chains and grants) to every node, make before
    /// break. Returns the final version and the nodes that did not acknowledge in time.
    pub async fn rollout(&self, reason: &str) -> Result<Rolled, ApiError> {
        let _one_at_a_time = self.rollout_lock.lock().await;
        // Revoked nodes get nothing (their SAs go with the old generation) and are not waited for.
        let cut = self.cut_off()?;
        // Nodes never enrolled cannot acknowledge; they are published to (the document waits
        // for their first poll) but not waited for.
        let unenrolled = self.unenrolled(&cut)?;
        let revoked_clients = self.revoked_clients();
        let down = self.nodes_seen_down();
        let unusable = self.instances_unusable(&down);
        let (olds, news, grace) = {
            let mut st = self.state();
            let (mut cfgs, next) = st
                .domain
                .topology
                .compile_from(st.next_spi)
                .map_err(|e| ApiError::new(400, "invalid-value", e.to_string()))?;
            // A revoked node's instances leave every pool with it (issue 17 point 3): flows go to
            // the SF's other instances, not into a node that gets no SA.
            let out_nodes: std::collections::BTreeSet<String> = down.iter().chain(&cut).cloned().collect();
            let out = liveness::drain(&mut cfgs, &out_nodes, &unusable);
            if out != st.out_of_plan {
                let list: Vec<String> = out.iter().map(|(sf, node)| format!("{sf}@{node}")).collect();
                tracing::info!(
                    "controller: rollout ({reason}): out of the plan (node seen down or revoked, or circuit dead): [{}]",
                    list.join(", ")
                );
            }
            st.drained = down;
            st.out_of_plan = out;
            if next >= SPI_LIMIT {
                return Err(ApiError::new(507, "resource-denied", "the domain has used every SPI below 2^24"));
            }
            // Persist the SPI counter and the SAs before any key leaves: never reuse an SPI.
            {
                let mut db = self.db();
                let tx = db.transaction().map_err(internal)?;
                set_meta(&tx, "next_spi", &next.to_string()).map_err(internal)?;
                let now = audit::unix_ms();
                for c in &cfgs {
                    let ends = c.outbound_sas.iter().map(|o| (o.sa.spi, "from_node"));
                    for (spi, end) in ends.chain(c.inbound_sas.iter().map(|i| (i.sa.spi, "to_node"))) {
                        // `end` is one of two fixed column names.
                        let sql = format!(
                            "INSERT INTO sas (spi, name, {end}, created_at) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT(spi) DO UPDATE SET {end} = ?3"
                        );
                        tx.execute(&sql, params![spi, sa_name(spi), c.name, now]).map_err(internal)?;
                    }
                }
                tx.commit().map_err(internal)?;
            }
            st.next_spi = next;
            // From here the rollout runs to its end (and clears this): status is not converged.
            st.rolling = true;
            st.renewed_at = Some(std::time::Instant::now());
            let gw = st.domain.gateway_nodes.clone();
            let news: Vec<(String, NodeState)> = cfgs
                .iter()
                .filter(|c| !cut.contains(&c.name))
                .map(|c| {
                    let is_gw = gw.contains(&c.name);
                    let grants = if is_gw { st.domain.grants.clone() } else { Vec::new() };
                    let mut doc = NodeState::from_config(0, c, grants, |_| true);
                    if is_gw {
                        doc.sfc.revoked.clone_from(&revoked_clients);
                    }
                    (c.name.clone(), doc)
                })
                .collect();
            let olds: Vec<NodeState> =
                news.iter().map(|(n, _)| st.docs.get(n).cloned().unwrap_or_else(|| empty_state(0))).collect();
            (olds, news, Duration::from_millis(st.domain.rekey.grace_ms))
        };
        let mut not_waited = cut.clone();
        not_waited.extend(unenrolled.iter().cloned());
        let result = self.three_steps(&olds, news, grace, reason, &not_waited).await;
        self.state().rolling = false;
        result.map(|(version, late)| Rolled { version, late, unenrolled })
    }

    async fn three_steps(
        &self,
        olds: &[NodeState],
        news: Vec<(String, NodeState)>,
        grace: Duration,
        reason: &str,
        cut: &std::collections::HashSet<String>,
    ) -> Result<(u64, Vec<String>), ApiError> {
        let v1 = self.next_version()?;
        let t = std::time::Instant::now();
        for ((n, new), old) in news.iter().zip(olds) {
            self.publish(n, &rollout::prepare(old, new, v1))?;
        }
        let late = self.acks(v1, cut).await;
        self.pushed(t);
        // A node that missed the install is not waited for again in this rollout (it is dead,
        // cut off from us or slow): one dead node costs the others one ack timeout, not three.
        let mut skip = cut.clone();
        skip.extend(late.iter().cloned());
        // Every node that acknowledged has its keys; nothing here needs them any more.
        let news: Vec<(String, NodeState)> = news.into_iter().map(|(n, d)| (n, rollout::strip_keys(&d))).collect();
        let v2 = self.next_version()?;
        let t = std::time::Instant::now();
        for ((n, new), old) in news.iter().zip(olds) {
            self.publish(n, &rollout::switch(old, new, v2))?;
        }
        let late2 = self.acks(v2, &skip).await;
        self.pushed(t);
        skip.extend(late2.iter().cloned());
        tokio::time::sleep(grace).await;
        let v3 = self.next_version()?;
        let t = std::time::Instant::now();
        for (n, new) in &news {
            self.publish(n, &rollout::finish(new, v3))?;
        }
        let late3 = self.acks(v3, &skip).await;
        self.pushed(t);
        {
            let mut st = self.state();
            let db = self.db();
            let now = audit::unix_ms();
            for ((n, new), old) in news.iter().zip(olds) {
                let done = rollout::finish(new, v3);
                let _ = db.execute(
                    "UPDATE nodes SET state = ?2 WHERE name = ?1",
                    params![n, serde_json::to_string(&done).unwrap_or_default()],
                );
                for e in old.ikeless.sad.entries.iter().filter(|e| e.direction == Direction::Outbound) {
                    let _ = db.execute("UPDATE sas SET retired_at = ?2 WHERE spi = ?1", params![e.config.spi, now]);
                }
                st.docs.insert(n.clone(), done);
            }
        }
        self.rollouts.fetch_add(1, Ordering::Relaxed);
        let sas: usize = news.iter().map(|(_, d)| d.ikeless.sad.entries.len()).sum::<usize>() / 2;
        let mut detail = format!("{reason}: versions {v1}-{v3}, {sas} new SAs, make-before-break");
        for (step, late) in [("install", &late), ("switch", &late2), ("remove", &late3)] {
            if !late.is_empty() {
                detail.push_str(&format!("; not acknowledged at {step}: {}", late.join(",")));
            }
        }
        self.audit(Kind::Rekey, "domain", &detail);
        let mut late: Vec<String> = late.into_iter().chain(late2).chain(late3).collect();
        late.sort();
        late.dedup();
        Ok((v3, late))
    }

    fn pushed(&self, since: std::time::Instant) {
        let mut l = self.push_latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.len() < 100_000 {
            l.push(since.elapsed());
        }
    }

    /// The push latencies measured so far (publish to every node's acknowledgement, one per
    /// rollout step), emptied.
    pub fn take_push_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.push_latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the SFs of chain `name` (add, remove, reorder); new flows take the new path
    /// once the rollout that follows is done.
    pub async fn set_chain(&self, name: &str, sfs: Vec<String>, who: &str) -> Result<Rolled, ApiError> {
        let before = {
            let mut st = self.state();
            let mut d = st.domain.clone();
            let c = d
                .topology
                .chains
                .iter_mut()
                .find(|c| c.name == name)
                .ok_or_else(|| ApiError::new(404, "invalid-value", format!("no chain named {name:?}")))?;
            let before = std::mem::replace(&mut c.sfs, sfs.clone());
            check_domain(&d).map_err(|e| ApiError::new(400, "invalid-value", e))?;
            self.store_domain(&d)?;
            st.domain = d;
            before
        };
        self.audit(Kind::Policy, who, &format!("chain {name}: SFs {before:?} -> {sfs:?}"));
        self.rollout(&format!("chain {name} changed")).await
    }

    /// Replaces the gateway policy.
    pub async fn set_grants(&self, grants: Vec<GatewayGrant>, who: &str) -> Result<Rolled, ApiError> {
        {
            let mut st = self.state();
            let mut d = st.domain.clone();
            d.grants = grants.clone();
            check_domain(&d).map_err(|e| ApiError::new(400, "invalid-value", e))?;
            self.store_domain(&d)?;
            st.domain = d;
        }
        let list: Vec<String> = grants.iter().map(|g| format!("{}->{}:{}", g.identity, g.service, g.chain)).collect();
        self.audit(Kind::Policy, who, &format!("grants set to [{}]", list.join(", ")));
        self.rollout("grants changed").await
    }

    fn store_domain(&self, d: &DomainSpec) -> Result<(), ApiError> {
        set_meta(&self.db(), "domain", &serde_json::to_string(d).map_err(internal)?).map_err(internal)
    }

    /// One node's current state without keys.
    pub fn node_state(&self, node: &str) -> Option<NodeState> {
        self.state().docs.get(node).cloned()
    }
}

/// Longest text from a node that goes into the audit log (an acknowledgement's error).
const MAX_NODE_TEXT: usize = 512;

/// `text` fit for one audit record: control characters replaced, at most [`MAX_NODE_TEXT`]
/// bytes (cut at a character boundary, the full length said).
fn bounded(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.len() <= MAX_NODE_TEXT {
        return clean;
    }
    let mut end = MAX_NODE_TEXT;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &clean[..end], text.len())
}

/// A domain must compile (every chain names existing SFs, every grant an existing chain).
fn check_domain(d: &DomainSpec) -> Result<(), String> {
    // Certificates name the domain and the nodes in SPIFFE IDs (zsfc_identity). A node may be
    // called like a client or a role: the kinds keep them apart.
    zsfc_identity::check_domain(&d.name).map_err(|e| format!("name: {e}"))?;
    for (i, n) in d.topology.nodes.iter().enumerate() {
        zsfc_identity::check_name(&n.name).map_err(|e| format!("topology.nodes[{i}].name: {e}"))?;
    }
    d.topology.compile().map_err(|e| e.to_string())?;
    let chains = d.topology.chains.len() as u32;
    for (i, g) in d.grants.iter().enumerate() {
        if g.chain == 0 || g.chain > chains {
            return Err(format!("grants[{i}].chain: no chain with id {}", g.chain));
        }
    }
    for (i, g) in d.gateway_nodes.iter().enumerate() {
        if !d.topology.nodes.iter().any(|n| &n.name == g) || d.gateway_nodes[..i].contains(g) {
            return Err(format!("gateway_nodes[{i}]: {g:?} is not a node of the topology, named once"));
        }
    }
    Ok(())
}

/// A list of names, or one name alone (what `gateway_node` was).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}
