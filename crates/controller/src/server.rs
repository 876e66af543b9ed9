//! The controller's HTTPS API: RESTCONF conventions (RFC 8040: `/restconf/data` for resources,
//! `/restconf/operations` for operations, `{"module:input": ...}` bodies, `ietf-restconf:errors`
//! on failure) over TLS 1.3. Enrolment needs no client certificate; every other call needs a
//! certificate of the domain CA (a node's, for its own resources, or the operator's).
use crate::Admin;
use crate::audit::Kind;
use crate::store::{ApiError, Controller};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;
use zsfc_config::GatewayGrant;
use zsfc_identity::{Identity, Kind as IdKind};

/// The OpenAPI document of this API (`docs/controller-openapi.json`), also served at
/// `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/controller-openapi.json");

/// Every route: method, path as the OpenAPI document writes it, and its handler.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("post", "/restconf/operations/zsfc:enrol"),
    ("post", "/restconf/operations/zsfc:renew"),
    ("get", "/restconf/data/zsfc:nodes/node={node}/desired"),
    ("post", "/restconf/operations/zsfc:ack"),
    ("post", "/restconf/operations/ietf-i2nsf-ikeless:sadb-expire"),
    ("post", "/restconf/operations/ietf-i2nsf-ikeless:sadb-bad-spi"),
    ("get", "/restconf/data/zsfc:domain"),
    ("get", "/restconf/data/zsfc:nodes/node={node}"),
    ("put", "/restconf/data/zsfc:domain/chain={name}"),
    ("put", "/restconf/data/zsfc:domain/grants"),
    ("post", "/restconf/operations/zsfc:rekey"),
    ("post", "/restconf/operations/zsfc:bind-role"),
    ("post", "/restconf/operations/zsfc:revoke"),
    ("post", "/restconf/operations/zsfc:node-token"),
    ("post", "/restconf/operations/zsfc:client-certificate"),
    ("post", "/restconf/operations/zsfc:sf-drops"),
    ("get", "/restconf/data/zsfc:nodes/node={node}/sf-drops"),
    ("post", "/restconf/operations/zsfc:liveness"),
    ("get", "/openapi.json"),
];

/// How long a node's poll waits for a new document before an empty answer.
const POLL_WAIT: Duration = Duration::from_secs(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller may take to send a request's headers (also the wait for the next request
/// on a kept-alive connection): a connection that sends nothing, or a little at a time, is
/// closed after this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body (every legitimate one is a few KiB); larger is 413.
pub const MAX_BODY: usize = 1 << 20;
/// Failed TLS handshakes are audited as one summary row per this period, not a row each.
const HANDSHAKE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Who is calling: the identity of its client certificate (its SPIFFE ID, `zsfc_identity`;
/// never its common name), the SHA-256 of its public key, the address, and the listener it
/// came in on.
#[derive(Debug, Clone)]
struct Peer {
    caller: Caller,
    key: Option<Vec<u8>>,
    /// The certificate's notBefore (Unix seconds): revocations cut off by it.
    not_before: Option<u64>,
    addr: SocketAddr,
    plane: Plane,
}

/// What the client certificate says of its holder.
#[derive(Debug, Clone)]
enum Caller {
    /// No client certificate.
    Anonymous,
    /// A certificate of the domain CA without a usable identity.
    Unidentified(zsfc_identity::IdentityError),
    Known(Identity),
}

impl Peer {
    /// The caller's name if it is a node.
    fn node_name(&self) -> Option<&str> {
        match &self.caller {
            Caller::Known(id) if id.kind() == IdKind::Node => Some(id.name()),
            _ => None,
        }
    }
}

/// Which callers a listener serves (seed 004 REQ1: the planes on interfaces of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// Nodes and administrative roles alike (one listener for everything).
    All,
    /// Nodes only: enrolment, their documents, acknowledgements and reports.
    Nodes,
    /// Administrative roles only (the operator's commands).
    Management,
}

type Ctl = State<Arc<Controller>>;

fn error(r: &ApiError) -> Response {
    let body = serde_json::json!({"ietf-restconf:errors": {"error": [{
        "error-type": if r.status >= 500 { "application" } else { "protocol" },
        "error-tag": r.tag, "error-message": r.message,
    }]}});
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/yang-data+json")], body.to_string()).into_response()
}

fn ok(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/yang-data+json")], v.to_string()).into_response()
}

/// Parses `{"<wrapper>": T}`; the message says where the body is wrong.
fn input<T: DeserializeOwned>(body: &[u8], wrapper: &str) -> Result<T, ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "malformed-message", format!("body is not JSON: {e}")))?;
    let inner = v
        .get_mut(wrapper)
        .map(serde_json::Value::take)
        .ok_or_else(|| ApiError::new(400, "malformed-message", format!("body must be {{\"{wrapper}\": ...}}")))?;
    serde_json::from_value(inner).map_err(|e| ApiError::new(400, "invalid-value", format!("{wrapper}: {e}")))
}

fn refuse_unauthenticated(ctl: &Controller, peer: &Peer, what: &str) -> ApiError {
    ctl.audit(Kind::Refused, &peer.addr.to_string(), &format!("{what} without a client certificate"));
    ApiError::new(401, "access-denied", "a client certificate of the domain CA is required")
}

/// The caller must be the node `node` itself or hold an administrative role that may do
/// `admin` ([`crate::Role::may`]), each decided on the kind and name of its certificate's
/// SPIFFE ID (a client named `sf` is not node `sf`, one named `operator` holds no role); a role
/// bound to a key on a hardware token acts only with that key. The caller's name is returned.
fn require(ctl: &Controller, peer: &Peer, node: Option<&str>, admin: Admin, what: &str) -> Result<String, ApiError> {
    let id = match &peer.caller {
        Caller::Anonymous => return Err(refuse_unauthenticated(ctl, peer, what)),
        Caller::Unidentified(e) => {
            ctl.audit(Kind::Refused, &peer.addr.to_string(), &format!("{what}: {e}"));
            return Err(ApiError::new(403, "access-denied", e.to_string()));
        }
        Caller::Known(id) => id,
    };
    let domain = ctl.domain().name;
    if id.domain() != domain {
        ctl.audit(Kind::Refused, &id.uri(), &format!("{what} from {}: an identity of another domain", peer.addr));
        return Err(ApiError::new(403, "access-denied", format!("{} is not of domain {domain:?}", id.uri())));
    }
    if ctl.is_revoked(id, peer.not_before) {
        ctl.audit(Kind::Refused, &id.to_string(), &format!("{what} from {}: the certificate is revoked", peer.addr));
        return Err(ApiError::new(403, "access-denied", format!("{id}: this certificate is revoked")));
    }
    let role = crate::Role::of_identity(id);
    let allowed = node.is_some_and(|n| id.is(IdKind::Node, n)) || role.is_some_and(|r| r.may(admin));
    if !allowed {
        ctl.audit(Kind::Refused, &id.to_string(), &format!("{what} from {}: not allowed for this identity", peer.addr));
        return Err(ApiError::new(403, "access-denied", format!("{id} may not {what}")));
    }
    let wrong_plane = match (peer.plane, role) {
        (Plane::Nodes, Some(_)) => Some("administrative roles use the management interface"),
        (Plane::Management, None) => Some("nodes use the nodes' interface"),
        _ => None,
    };
    if let Some(why) = wrong_plane {
        ctl.audit(Kind::Refused, &id.to_string(), &format!("{what} from {}: {why}", peer.addr));
        return Err(ApiError::new(403, "access-denied", why));
    }
    if let Some(r) = role
        && let Some(bound) = ctl.role_key(r)?
        && peer.key.as_ref() != Some(&bound)
    {
        ctl.audit(
            Kind::Refused,
            &id.to_string(),
            &format!("{what} from {}: the role is bound to another key", peer.addr),
        );
        return Err(ApiError::new(
            403,
            "access-denied",
            format!("{id} acts only with the key on its hardware token; this certificate's key is not it"),
        ));
    }
    Ok(id.name().to_owned())
}

fn list_key(key: &str, name: &str) -> Result<String, ApiError> {
    key.strip_prefix(&format!("{name}="))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(400, "invalid-value", format!("expected {name}=<key> in the path, got {key:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolInput {
    node: String,
    token: Zeroizing<String>,
    csr: String,
}

async fn enrol(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        if peer.plane == Plane::Management {
            return Err(ApiError::new(403, "access-denied", "nodes enrol on the nodes' interface"));
        }
        let i: EnrolInput = input(&body, "zsfc:input")?;
        let cert = ctl.enrol(&i.node, &i.token, &i.csr, &peer.addr.to_string())?;
        Ok(serde_json::json!({"zsfc:output": {"certificate": cert, "ca": ctl.ca.pem()}}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewInput {
    /// `node` (the caller's own certificate) or `gateway` (the gateway it runs).
    #[serde(rename = "for")]
    what: crate::Renewal,
    csr: String,
}

/// A node renews its certificate (or its gateway's) with its current, valid one: only a node
/// may, only for itself (an administrative role acting for a node may not).
async fn renew(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let node = require(&ctl, &peer, peer.node_name(), Admin::ActForNode, "renew a certificate")?;
        if peer.node_name().is_none() {
            ctl.audit(Kind::Refused, &node, &format!("certificate renewal from {}: not a node", peer.addr));
            return Err(ApiError::new(403, "access-denied", "only a node renews its certificates"));
        }
        let i: RenewInput = input(&body, "zsfc:input")?;
        let cert = ctl.renew(&node, i.what, &i.csr, &peer.addr.to_string())?;
        Ok(serde_json::json!({"zsfc:output": {"certificate": cert}}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
struct PollQuery {
    #[serde(default)]
    after: u64,
    boot: String,
    /// The poll's X25519 public key (hex): the reply is sealed to it (`sealed.rs`).
    seal: String,
}

async fn desired(
    State(ctl): Ctl,
    Extension(peer): Extension<Peer>,
    Path(key): Path<String>,
    q: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let node = match list_key(&key, "node") {
        Ok(n) => n,
        Err(e) => return error(&e),
    };
    if let Err(e) = require(&ctl, &peer, Some(&node), Admin::ActForNode, "poll its state").and_then(|_| {
        if peer.node_name() == Some(&node) { Ok(()) } else { Err(ApiError::new(403, "access-denied", "nodes only")) }
    }) {
        return error(&e);
    }
    let Ok(Query(q)) = q else {
        return error(&ApiError::new(
            400,
            "invalid-value",
            "query: after=<version>&boot=<id>&seal=<X25519 public key, hex> expected",
        ));
    };
    let seal_to = match crate::sealed::PollPublic::parse(&q.seal) {
        Ok(k) => k,
        Err(e) => return error(&ApiError::new(400, "invalid-value", e.to_string())),
    };
    ctl.contact(&node);
    match ctl.poll(&node, q.after, &q.boot, POLL_WAIT).await {
        // Sealed to the poll's key: TLS and HTTP buffers on both sides only ever hold ciphertext.
        Some(p) => match crate::sealed::seal(&node, &seal_to, &p.body) {
            Ok(sealed) => ([(header::CONTENT_TYPE, crate::sealed::CONTENT_TYPE)], sealed).into_response(),
            Err(e) => error(&ApiError::new(400, "invalid-value", e.to_string())),
        },
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckInput {
    node: String,
    version: u64,
    #[serde(default)]
    error: Option<String>,
}

async fn ack(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let i: AckInput = input(&body, "zsfc:input")?;
        require(&ctl, &peer, Some(&i.node), Admin::ActForNode, "acknowledge")?;
        ctl.ack(&i.node, i.version, i.error.as_deref())?;
        Ok(serde_json::json!({}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
struct ExpireInput {
    #[serde(rename = "ipsec-sa-name")]
    name: String,
    #[serde(rename = "soft-lifetime-expire", default = "yes")]
    soft: bool,
    #[serde(rename = "lifetime-current", default)]
    _current: serde_json::Value,
}

fn yes() -> bool {
    true
}

async fn sadb_expire(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let id = require(&ctl, &peer, peer.node_name(), Admin::ActForNode, "notify")?;
        let i: ExpireInput = input(&body, "ietf-i2nsf-ikeless:input")?;
        ctl.expired(&id, &i.name, i.soft);
        Ok(serde_json::json!({}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BadSpiInput {
    spi: u32,
}

async fn sadb_bad_spi(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let id = require(&ctl, &peer, peer.node_name(), Admin::ActForNode, "notify")?;
        let i: BadSpiInput = input(&body, "ietf-i2nsf-ikeless:input")?;
        ctl.bad_spi(&id, i.spi);
        Ok(serde_json::json!({}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

async fn domain(State(ctl): Ctl, Extension(peer): Extension<Peer>) -> Response {
    match require(&ctl, &peer, None, Admin::Read, "read the domain") {
        Ok(_) => ok(ctl.status()),
        Err(e) => error(&e),
    }
}

async fn node(State(ctl): Ctl, Extension(peer): Extension<Peer>, Path(key): Path<String>) -> Response {
    let r = (|| {
        let node = list_key(&key, "node")?;
        require(&ctl, &peer, Some(&node), Admin::Read, "read a node")?;
        let doc = ctl
            .node_state(&node)
            .ok_or_else(|| ApiError::new(404, "invalid-value", format!("no state for {node:?}")))?;
        serde_json::to_value(doc).map_err(|e| ApiError::new(500, "operation-failed", e.to_string()))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainInput {
    sfs: Vec<String>,
}

async fn chain(State(ctl): Ctl, Extension(peer): Extension<Peer>, Path(key): Path<String>, body: Bytes) -> Response {
    let prep = (|| {
        let name = list_key(&key, "chain")?;
        let who = require(&ctl, &peer, None, Admin::ChangeChain, "change a chain")?;
        let i: ChainInput = input(&body, "zsfc:chain")?;
        Ok((name, who, i))
    })();
    match prep {
        Err(e) => error(&e),
        Ok((name, who, i)) => match ctl.set_chain(&name, i.sfs, &who).await {
            Ok(r) => ok(r.output()),
            Err(e) => error(&e),
        },
    }
}

async fn grants(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let prep = (|| {
        let who = require(&ctl, &peer, None, Admin::ChangePolicy, "change the policy")?;
        let g: Vec<GatewayGrant> = input(&body, "zsfc:grants")?;
        Ok((who, g))
    })();
    match prep {
        Err(e) => error(&e),
        Ok((who, g)) => match ctl.set_grants(g, &who).await {
            Ok(r) => ok(r.output()),
            Err(e) => error(&e),
        },
    }
}

async fn rekey(State(ctl): Ctl, Extension(peer): Extension<Peer>) -> Response {
    let who = match require(&ctl, &peer, None, Admin::Rekey, "rekey") {
        Ok(w) => w,
        Err(e) => return error(&e),
    };
    match ctl.rollout(&format!("rekey requested by {who}")).await {
        Ok(r) => ok(r.output()),
        Err(e) => error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SfDropsInput {
    drops: Vec<crate::SfDrops>,
}

/// A node reports the packets its SFs dropped for what they carried, by subscriber.
async fn report_sf_drops(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let id = require(&ctl, &peer, peer.node_name(), Admin::ActForNode, "report SF drops")?;
        if !ctl.knows(&id) {
            return Err(ApiError::new(403, "access-denied", "nodes only"));
        }
        let i: SfDropsInput = input(&body, "zsfc:input")?;
        ctl.report_sf_drops(&id, i.drops)?;
        Ok(serde_json::json!({}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LivenessInput {
    peers: Vec<crate::PeerReport>,
    /// The external SFs' attachment circuits (nodes that serve none leave it out).
    #[serde(default)]
    sfs: Vec<crate::CircuitReport>,
}

/// A node reports the liveness of its peers (its data-plane sessions); the controller takes
/// the SF instances of nodes seen down out of the plan and puts them back (issue 20 point 4).
async fn report_liveness(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let id = require(&ctl, &peer, peer.node_name(), Admin::ActForNode, "report liveness")?;
        if !ctl.knows(&id) {
            return Err(ApiError::new(403, "access-denied", "nodes only"));
        }
        let i: LivenessInput = input(&body, "zsfc:input")?;
        ctl.report_liveness(&id, i.peers, i.sfs)?;
        Ok(serde_json::json!({}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
struct AfterQuery {
    #[serde(default)]
    after: u64,
}

/// The gateway's node fetches the SF drops reported after `after` (a long poll): they count
/// toward blocking the client they name (seed 004 REQ11).
async fn sf_drops(
    State(ctl): Ctl,
    Extension(peer): Extension<Peer>,
    Path(key): Path<String>,
    q: Result<Query<AfterQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = (|| {
        let node = list_key(&key, "node")?;
        if !ctl.domain().gateway_nodes.contains(&node) {
            return Err(ApiError::new(404, "invalid-value", format!("{node:?} is not the gateway's node")));
        }
        require(&ctl, &peer, Some(&node), Admin::ActForNode, "read SF drops")?;
        q.map(|Query(q)| q.after).map_err(|_| ApiError::new(400, "invalid-value", "query: after=<number> expected"))
    })();
    match r {
        Ok(after) => {
            let (last, drops) = ctl.sf_drops_after(after, POLL_WAIT).await;
            ok(serde_json::json!({"zsfc:sf-drops": {"last": last, "drops": drops}}))
        }
        Err(e) => error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertificateInput {
    name: String,
    csr: String,
    /// Seconds; at most (and by default) the domain's client certificate lifetime.
    #[serde(default, rename = "lifetime-s")]
    lifetime_s: Option<u64>,
}

/// The operator has the CA sign a client's certificate (the client's key stays where it was
/// made).
async fn client_certificate(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let who = require(&ctl, &peer, None, Admin::Revoke, "issue a client certificate")?;
        let i: ClientCertificateInput = input(&body, "zsfc:input")?;
        let life = i.lifetime_s.map(Duration::from_secs);
        let cert = ctl.issue_client(&i.name, &i.csr, life, &format!("role/{who}"))?;
        Ok(serde_json::json!({"zsfc:output": {"certificate": cert}}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindInput {
    role: String,
    csr: String,
}

async fn bind_role(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let r = (|| {
        let who = require(&ctl, &peer, None, Admin::BindRole, "bind a role to a key")?;
        let i: BindInput = input(&body, "zsfc:input")?;
        let role = crate::Role::of(&i.role).ok_or_else(|| {
            ApiError::new(400, "invalid-value", format!("{:?} is not an administrative role", i.role))
        })?;
        let cert = ctl.bind_role(role, &i.csr, &who)?;
        Ok(serde_json::json!({"zsfc:output": {"certificate": cert}}))
    })();
    r.map_or_else(|e: ApiError| error(&e), ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeInput {
    /// `node`, `client` or `gateway`.
    kind: String,
    name: String,
}

/// The operator revokes an identity: refused at once by the controller, pushed to the
/// gateway, a revoked node's SAs rotated out.
async fn revoke(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let who = match require(&ctl, &peer, None, Admin::Revoke, "revoke an identity") {
        Ok(w) => w,
        Err(e) => return error(&e),
    };
    let i: RevokeInput = match input(&body, "zsfc:input") {
        Ok(i) => i,
        Err(e) => return error(&e),
    };
    let Some(kind) = crate::revocable(&i.kind) else {
        return error(&ApiError::new(400, "invalid-value", format!("{:?}: node, client or gateway", i.kind)));
    };
    match ctl.revoke(kind, &i.name, &format!("role/{who}")).await {
        Ok(r) => ok(r.output()),
        Err(e) => error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeTokenInput {
    node: String,
}

/// The operator issues a reinstalled node a new bootstrap token (its old certificates revoked).
async fn node_token(State(ctl): Ctl, Extension(peer): Extension<Peer>, body: Bytes) -> Response {
    let who = match require(&ctl, &peer, None, Admin::Revoke, "issue a bootstrap token") {
        Ok(w) => w,
        Err(e) => return error(&e),
    };
    let i: NodeTokenInput = match input(&body, "zsfc:input") {
        Ok(i) => i,
        Err(e) => return error(&e),
    };
    match ctl.node_token(&i.node, &format!("role/{who}")).await {
        Ok((token, v)) => ok(serde_json::json!({"zsfc:output": {"token": token.as_str(), "version": v}})),
        Err(e) => error(&e),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The router, built from [`API_ROUTES`] (so the table the OpenAPI test checks is the one
/// served).
fn router(ctl: Arc<Controller>) -> Router {
    use axum::routing::{get, post, put};
    let mut r = Router::new();
    for &(method, path) in API_ROUTES {
        // RFC 8040 list keys (`node={node}`) are whole path segments, parsed by the handler.
        let axum_path = path.replace("node={node}", "{key}").replace("chain={name}", "{key}");
        let route = match (method, path) {
            (_, "/restconf/operations/zsfc:enrol") => post(enrol),
            (_, "/restconf/operations/zsfc:renew") => post(renew),
            (_, "/restconf/data/zsfc:nodes/node={node}/desired") => get(desired),
            (_, "/restconf/operations/zsfc:ack") => post(ack),
            (_, "/restconf/operations/ietf-i2nsf-ikeless:sadb-expire") => post(sadb_expire),
            (_, "/restconf/operations/ietf-i2nsf-ikeless:sadb-bad-spi") => post(sadb_bad_spi),
            (_, "/restconf/data/zsfc:domain") => get(domain),
            (_, "/restconf/data/zsfc:nodes/node={node}") => get(node),
            (_, "/restconf/data/zsfc:domain/chain={name}") => put(chain),
            (_, "/restconf/data/zsfc:domain/grants") => put(grants),
            (_, "/restconf/operations/zsfc:rekey") => post(rekey),
            (_, "/restconf/operations/zsfc:bind-role") => post(bind_role),
            (_, "/restconf/operations/zsfc:revoke") => post(revoke),
            (_, "/restconf/operations/zsfc:node-token") => post(node_token),
            (_, "/restconf/operations/zsfc:client-certificate") => post(client_certificate),
            (_, "/restconf/operations/zsfc:sf-drops") => post(report_sf_drops),
            (_, "/restconf/data/zsfc:nodes/node={node}/sf-drops") => get(sf_drops),
            (_, "/restconf/operations/zsfc:liveness") => post(report_liveness),
            (_, "/openapi.json") => get(openapi),
            _ => unreachable!("every route in API_ROUTES has a handler"),
        };
        r = r.route(&axum_path, route);
    }
    r.fallback(|| async { error(&ApiError::new(404, "invalid-value", "no such resource")) })
        .method_not_allowed_fallback(|| async {
            error(&ApiError::new(405, "operation-not-supported", "this resource does not take this method"))
        })
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctl)
}

/// A body announced larger than [`MAX_BODY`] is refused with 413 (one sent without a length is
/// cut at the limit by `DefaultBodyLimit`, also 413). A caller that asked `Expect:
/// 100-continue` (curl does for large bodies) gets the 413 before it sends any of the body;
/// one that did not is read for a bounded while ([`DRAIN_AT_MOST`] bytes, [`DRAIN_FOR`]), so
/// that the 413 reaches it rather than a reset, and then the connection is closed.
async fn refuse_large_bodies(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use http_body_util::BodyExt;
    let headers = req.headers();
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_none_or(|n| n <= MAX_BODY as u64) {
        return next.run(req).await;
    }
    let expects = headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        let mut body = req.into_body();
        let mut read = 0usize;
        let _ = tokio::time::timeout(DRAIN_FOR, async {
            while read < DRAIN_AT_MOST {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
        })
        .await;
    }
    let mut r = error(&ApiError::new(413, "too-big", format!("request bodies are at most {MAX_BODY} bytes")));
    r.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    r
}

/// How much of an oversized body is read (and thrown away) so that its 413 arrives.
const DRAIN_AT_MOST: usize = 16 << 20;
const DRAIN_FOR: Duration = Duration::from_secs(3);

/// Failed TLS handshakes since the last audit row about them: audited as one summary per
/// [`HANDSHAKE_REPORT_EVERY`] (300 garbage connections are one row, not 300).
#[derive(Debug, Default)]
struct HandshakeFailures {
    count: u64,
    last: String,
    reported: Option<std::time::Instant>,
}

impl HandshakeFailures {
    /// Counts a failure; the summary to audit now, if one is due.
    fn failed(&mut self, addr: SocketAddr, why: &str) -> Option<String> {
        self.count += 1;
        self.last = format!("{addr}: {}", why.chars().take(200).collect::<String>());
        if self.reported.is_some_and(|t| t.elapsed() < HANDSHAKE_REPORT_EVERY) {
            return None;
        }
        let summary = format!("{} TLS handshakes failed (the last from {})", self.count, self.last);
        (self.count, self.reported) = (0, Some(std::time::Instant::now()));
        Some(summary)
    }
}

/// The controller's server certificate: issued by its CA when the listener starts and again at
/// the first handshake after two thirds of its life (the nodes' certificate lifetime) have
/// passed. Its key is never written.
/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the controller's identity: {0}")]
    Identity(#[from] zsfc_identity::IdentityError),
    #[error("issuing the server certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the server certificate: {0}")]
    Certificate(#[from] zsfc_identity::SlotError),
    #[error("the domain CA: {0}")]
    CaPem(#[from] rustls_pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("verifying clients: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

#[derive(Debug)]
struct OwnCertificate {
    ctl: Arc<Controller>,
    server_name: String,
    slot: Arc<zsfc_identity::CertSlot>,
    renew_at: std::sync::Mutex<std::time::SystemTime>,
}

impl OwnCertificate {
    fn issue(
        ctl: &Controller,
        server_name: &str,
    ) -> Result<(String, Zeroizing<String>, crate::pki::Validity), ServeError> {
        let v = crate::pki::Validity::from_now(ctl.domain().topology.certificates.node());
        let id = Identity::controller(&ctl.domain().name)?;
        let (cert, key) = ctl.ca.issue(&id, &[server_name.to_owned()], &[], v)?;
        Ok((cert, key, v))
    }

    fn new(
        ctl: Arc<Controller>,
        server_name: &str,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, ServeError> {
        let (cert, key, v) = Self::issue(&ctl, server_name)?;
        let slot = zsfc_identity::CertSlot::new(provider, &cert, &key)?;
        Ok(Self { ctl, server_name: server_name.to_owned(), slot, renew_at: std::sync::Mutex::new(v.renew_at()) })
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut at = self.renew_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::time::SystemTime::now() >= *at {
            let renewed = Self::issue(&self.ctl, &self.server_name)
                .and_then(|(cert, key, v)| Ok(self.slot.replace(&cert, &key).map(|()| v)?));
            match renewed {
                Ok(v) => *at = v.renew_at(),
                // The current certificate serves until it expires; the next handshake tries again.
                Err(e) => tracing::warn!("zsfc controller: renewing its server certificate: {e}"),
            }
        }
        Some(self.slot.current())
    }
}

fn server_tls(ctl: &Arc<Controller>, server_name: &str) -> Result<rustls::ServerConfig, ServeError> {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(ctl.ca.pem().as_bytes())?)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let own = OwnCertificate::new(ctl.clone(), server_name, provider.clone())?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(own)))
}

/// Serves the API on `listener` until the process ends, to nodes and administrative roles
/// alike. The server certificate is issued by the domain CA for `server_name` and renewed on
/// its own ([`OwnCertificate`]; its key is never written).
pub async fn serve(
    ctl: Arc<Controller>,
    listener: tokio::net::TcpListener,
    server_name: &str,
) -> Result<(), ServeError> {
    serve_plane(ctl, listener, server_name, Plane::All).await
}

/// [`serve`] for the callers of one `plane` only: a call of the other plane's callers is
/// refused (403) and audited.
pub async fn serve_plane(
    ctl: Arc<Controller>,
    listener: tokio::net::TcpListener,
    server_name: &str,
    plane: Plane,
) -> Result<(), ServeError> {
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(&ctl, server_name)?));
    let app = router(ctl.clone());
    let limits = ctl.domain().api;
    let limiter = Arc::new(crate::limit::Limiter::new(limits));
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_open.max(1) as usize));
    // Refusals for lack of room are audited once per 10 s with their count.
    let (mut full, mut full_reported) = (0u64, None::<std::time::Instant>);
    let handshakes = Arc::new(std::sync::Mutex::new(HandshakeFailures::default()));
    loop {
        let Ok((tcp, addr)) = listener.accept().await else { continue };
        // Admission before any TLS work: rate per source, and a cap on open connections.
        let refused = match limiter.admit(addr.ip(), std::time::Instant::now()) {
            crate::limit::Admission::Admit => None,
            crate::limit::Admission::Refuse(report) => Some(report.map(|n| format!("{n} connections"))),
        };
        let slot = match refused {
            Some(_) => None,
            None => match limiter.open(addr.ip(), std::time::Instant::now()) {
                Ok(slot) => Some(slot),
                Err(report) => {
                    if let Some(n) = report {
                        let detail =
                            format!("{n} connections refused: {} open from this source", limits.max_open_per_source);
                        ctl.audit(Kind::Refused, &addr.ip().to_string(), &detail);
                    }
                    continue;
                }
            },
        };
        let permit = match (refused, open.clone().try_acquire_owned()) {
            (None, Ok(p)) => p,
            (Some(report), _) => {
                if let Some(n) = report {
                    ctl.audit(Kind::Refused, &addr.ip().to_string(), &format!("rate limit: refused {n}"));
                }
                continue;
            }
            (None, Err(_)) => {
                full += 1;
                if full_reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    let detail = format!("{full} connections refused: {} open already", limits.max_open);
                    ctl.audit(Kind::Refused, &addr.ip().to_string(), &detail);
                    (full, full_reported) = (0, Some(std::time::Instant::now()));
                }
                continue;
            }
        };
        // Small request/response exchanges: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let (tls, app, ctl, handshakes) = (tls.clone(), app.clone(), ctl.clone(), handshakes.clone());
        tokio::spawn(async move {
            let _held = (permit, slot);
            let failed = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            let stream = match failed {
                Ok(s) => s,
                Err(why) => {
                    let due = handshakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failed(addr, &why);
                    if let Some(summary) = due {
                        ctl.audit(Kind::Refused, &addr.ip().to_string(), &summary);
                    }
                    return;
                }
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
            let caller = match cert.map(|c| Identity::of_certificate(c)) {
                None => Caller::Anonymous,
                Some(Ok(id)) => Caller::Known(id),
                Some(Err(e)) => Caller::Unidentified(e),
            };
            let key = cert.and_then(|c| crate::store::spki_sha256(c));
            let not_before = cert.and_then(|c| zsfc_identity::not_before(c));
            let svc = app.layer(Extension(Peer { caller, key, not_before, addr, plane }));
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = API_ROUTES.iter().map(|&(m, p)| (m.to_owned(), p.to_owned())).collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
