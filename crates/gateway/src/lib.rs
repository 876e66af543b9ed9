//! The ingress gateway: terminates the clients' mutual TLS (TLS 1.3 only, client certificate
//! required and verified against the domain CA), takes the client's identity from its
//! certificate, asks the [`Policy`] whether that identity may use the service its SNI names
//! (default deny), and then opens the inner connection to the service — the traffic that
//! traverses the chain. The flow entry that steers the inner connection onto the service's chain
//! goes to the packet loop *before* the connection's first packet exists.
//!
//! Every refusal is counted by [`Refusal`] and logged with the peer, the identity (when known)
//! and the reason. A source or an identity refused too often within a while is blocked for a
//! while ([`Blocking`], seed 004 REQ11): refused outright, before any further TLS or policy work.
#![forbid(unsafe_code)]

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zsfc_dataplane::ChainId;
use zsfc_identity::{Identity, Kind as IdKind};
use zsfc_io::Control;
use zsfc_wire::ip::{FiveTuple, protocol};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a flow entry outlives its connection, so the last FIN/ACK exchange still finds it.
const FLOW_LINGER: Duration = Duration::from_secs(5);

/// A service reachable through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The server name clients ask for (SNI); also the name in policies.
    pub name: String,
    /// Where the inner connection goes (through the chain).
    pub address: SocketAddr,
}

/// One client identity may use one service, and its connections take `chain` (two identities
/// may reach the same service through different chains). With a `path`, the grant covers only
/// connections whose first HTTP request's target starts with it (classification by HTTP path;
/// the longest matching prefix wins, a grant without a path matches every path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: String,
    pub service: String,
    pub chain: ChainId,
    pub path: Option<String>,
}

/// Identity → allowed services → chain. Anything not granted is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub services: Vec<Service>,
    pub grants: Vec<Grant>,
}

impl Policy {
    fn grants_for<'a>(&'a self, identity: &'a str, service: &'a Service) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants.iter().filter(move |g| g.identity == identity && g.service.eq_ignore_ascii_case(&service.name))
    }

    /// Whether the chain of `identity`'s connections to `sni` depends on the HTTP path.
    pub fn needs_path(&self, identity: &str, sni: Option<&str>) -> bool {
        let Some(service) = sni.and_then(|n| self.services.iter().find(|s| s.name.eq_ignore_ascii_case(n))) else {
            return false;
        };
        self.grants_for(identity, service).any(|g| g.path.is_some())
    }

    /// The service `identity` reaches by asking for `sni` (and `path`, the target of the first
    /// HTTP request, where [`needs_path`](Self::needs_path)), and the chain it takes, or why not.
    pub fn decide(
        &self,
        identity: &str,
        sni: Option<&str>,
        path: Option<&str>,
    ) -> Result<(&Service, ChainId), Refusal> {
        let sni = sni.ok_or(Refusal::NoServerName)?;
        let service = self.services.iter().find(|s| s.name.eq_ignore_ascii_case(sni)).ok_or(Refusal::UnknownService)?;
        if self.grants_for(identity, service).next().is_none() {
            return Err(Refusal::NotAllowed);
        }
        self.grants_for(identity, service)
            .filter(|g| match (&g.path, path) {
                (None, _) => true,
                (Some(prefix), Some(p)) => p.starts_with(prefix.as_str()),
                (Some(_), None) => false,
            })
            .max_by_key(|g| g.path.as_ref().map_or(0, String::len))
            .map(|g| (service, g.chain))
            .ok_or(Refusal::PathNotAllowed)
    }
}

/// Why a client connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client presented no certificate.
    NoCertificate,
    /// The client's certificate does not verify against the domain CA (another CA, expired,
    /// wrong usage).
    UntrustedCertificate,
    /// Any other handshake failure (not TLS, TLS 1.2 only, timeout).
    HandshakeFailed,
    /// The certificate verified but names no usable identity (no single SPIFFE URI SAN of
    /// this domain; the common name is never taken for one).
    NoIdentity,
    /// The certificate names an identity of another kind than a client (a node's, a role's,
    /// a gateway's): only clients use services.
    NotAClient,
    /// The client named no service (no SNI).
    NoServerName,
    /// The SNI names no service of this gateway.
    UnknownService,
    /// The identity is not granted the service.
    NotAllowed,
    /// The inner connection to the service failed.
    ServiceUnreachable,
    /// The chain depends on the HTTP path, but no HTTP request line came.
    NoHttpRequest,
    /// No grant of the identity covers the requested path.
    PathNotAllowed,
    /// The source address opened more connections than its rate allows (refused before the
    /// TLS handshake costs anything).
    SourceRateLimited,
    /// The client identity opened more connections than its rate allows.
    IdentityRateLimited,
    /// The source address is blocked after too many refusals (refused before the handshake).
    SourceBlocked,
    /// The client identity is blocked after too many refusals.
    IdentityBlocked,
}

/// Whom a refusal counts against when [`Blocking`] tallies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Culprit {
    /// Failed or missing authentication, or load: the source address.
    Source,
    /// Asking for what the policy does not grant, or load: the authenticated identity.
    Identity,
}

impl Refusal {
    pub const ALL: [Refusal; 15] = [
        Refusal::SourceRateLimited,
        Refusal::IdentityRateLimited,
        Refusal::NoCertificate,
        Refusal::UntrustedCertificate,
        Refusal::HandshakeFailed,
        Refusal::NoIdentity,
        Refusal::NotAClient,
        Refusal::NoServerName,
        Refusal::UnknownService,
        Refusal::NotAllowed,
        Refusal::ServiceUnreachable,
        Refusal::NoHttpRequest,
        Refusal::PathNotAllowed,
        Refusal::SourceBlocked,
        Refusal::IdentityBlocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::UntrustedCertificate => "untrusted_certificate",
            Refusal::HandshakeFailed => "handshake_failed",
            Refusal::NoIdentity => "no_identity",
            Refusal::NotAClient => "not_a_client",
            Refusal::NoServerName => "no_server_name",
            Refusal::UnknownService => "unknown_service",
            Refusal::NotAllowed => "not_allowed",
            Refusal::ServiceUnreachable => "service_unreachable",
            Refusal::NoHttpRequest => "no_http_request",
            Refusal::PathNotAllowed => "path_not_allowed",
            Refusal::SourceRateLimited => "source_rate_limited",
            Refusal::IdentityRateLimited => "identity_rate_limited",
            Refusal::SourceBlocked => "source_blocked",
            Refusal::IdentityBlocked => "identity_blocked",
        }
    }

    /// Whom this refusal counts against for blocking: `None` for what is not the client's doing
    /// (the service is unreachable) and for refusals of what is blocked already (a block runs
    /// its time from when it began).
    fn culprit(self) -> Option<Culprit> {
        use Refusal::*;
        match self {
            NoCertificate | UntrustedCertificate | HandshakeFailed | NoIdentity | NotAClient | SourceRateLimited => {
                Some(Culprit::Source)
            }
            NoServerName | UnknownService | NotAllowed | NoHttpRequest | PathNotAllowed | IdentityRateLimited => {
                Some(Culprit::Identity)
            }
            ServiceUnreachable | SourceBlocked | IdentityBlocked => None,
        }
    }
}

/// What the gateway did; shared with the node process for its report.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub accepted: AtomicU64,
    pub served: AtomicU64,
    /// Blocks begun (of sources and identities).
    pub blocks: AtomicU64,
    /// Packets SFs dropped for what they carried, reported for a client this gateway served.
    pub sf_drops: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl GatewayStats {
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused[r as usize].load(Ordering::Relaxed)
    }
    /// Counts a refusal; the count so far.
    fn refuse(&self, r: Refusal) -> u64 {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Everything the gateway needs.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// PEM files: the domain CA (client certificates must chain to it), the gateway's own
    /// certificate chain and private key.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The address inner connections come from: the node's local side (TUN).
    pub inner_source: IpAddr,
    pub policy: Policy,
    pub limits: RateLimits,
    pub blocking: Blocking,
}

/// A sustained rate and a burst, of new connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_s: f64,
    pub burst: f64,
}

/// The gateway's admission limits (availability, seed 004 REQ3): new connections per source
/// address (checked before the TLS handshake) and per client identity (after it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub per_source: Rate,
    pub per_identity: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        let r = Rate { per_s: 100.0, burst: 200.0 };
        Self { per_source: r, per_identity: r }
    }
}

/// Automatic blocking (seed 004 REQ11: "filtering policies should prevent access to a user ...
/// when a malicious behavior is noticed"): a source address refused `after` times within
/// `within` (no, untrusted or no-identity certificates, failed handshakes, its rate exceeded)
/// or an identity refused `after` times within `within` (services or paths not granted, unknown
/// services, its rate exceeded) is refused outright for `duration`: a blocked source before the
/// TLS handshake, a blocked identity right after it. `after = 0` turns blocking off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    pub after: u32,
    pub within: Duration,
    pub duration: Duration,
}

/// Refusals counted per key (source or identity) in a window that starts with the first one,
/// and the blocks they led to; bounded like [`Buckets`]. When it is full of live entries a new
/// key's refusal is not tallied (blocking is on top of authentication and rate limits, which
/// still apply).
struct Strikes<K> {
    rule: Blocking,
    map: std::sync::Mutex<std::collections::HashMap<K, Strike>>,
}

#[derive(Debug, Clone, Copy)]
struct Strike {
    count: u32,
    since: std::time::Instant,
    blocked_until: Option<std::time::Instant>,
}

impl<K: std::hash::Hash + Eq> Strikes<K> {
    fn new(rule: Blocking) -> Self {
        Self { rule, map: Default::default() }
    }

    fn blocked(&self, key: &K, now: std::time::Instant) -> bool {
        let m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(key).and_then(|s| s.blocked_until).is_some_and(|until| now < until)
    }

    /// Tallies one refusal of `key`; the number of refusals when this one begins a block.
    fn strike(&self, key: K, now: std::time::Instant) -> Option<u32> {
        if self.rule.after == 0 {
            return None;
        }
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Strike { count: 0, since: now, blocked_until: None };
        let live = |s: &Strike| match s.blocked_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(s.since) < self.rule.within,
        };
        if m.len() >= MAX_BUCKETS && !m.contains_key(&key) {
            m.retain(|_, s| live(s));
            if m.len() >= MAX_BUCKETS {
                return None;
            }
        }
        let s = m.entry(key).or_insert(fresh);
        match s.blocked_until {
            Some(until) if now < until => return None,
            _ if !live(s) => *s = fresh,
            _ => {}
        }
        s.count += 1;
        if s.count < self.rule.after {
            return None;
        }
        // A duration past what the clock can count blocks for a century instead of panicking.
        let century = Duration::from_secs(100 * 365 * 86_400);
        s.blocked_until = Some(now.checked_add(self.rule.duration).or_else(|| now.checked_add(century))?);
        Some(s.count)
    }
}

/// Keys (sources or identities) remembered at most; beyond, the full buckets are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets by key, bounded in number: an attacker's many keys can fill it, but it never
/// grows past [`MAX_BUCKETS`], and a key that cannot get a bucket is refused (fail closed).
struct Buckets<K> {
    rate: Rate,
    map: std::sync::Mutex<std::collections::HashMap<K, (f64, std::time::Instant)>>,
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    fn new(rate: Rate) -> Self {
        Self { rate, map: Default::default() }
    }

    fn admit(&self, key: K, now: std::time::Instant) -> bool {
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |(t, last): (f64, std::time::Instant)| {
            (t + now.saturating_duration_since(last).as_secs_f64() * self.rate.per_s).min(self.rate.burst)
        };
        if m.len() >= MAX_BUCKETS && !m.contains_key(&key) {
            m.retain(|_, b| refill(*b) < self.rate.burst);
            if m.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let b = m.entry(key).or_insert((self.rate.burst, now));
        let tokens = refill(*b);
        *b = (if tokens >= 1.0 { tokens - 1.0 } else { tokens }, now);
        tokens >= 1.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("reading {path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Builds the TLS 1.3 server configuration with mandatory client certificates from `ca`, and
/// returns it with the trust domain of the gateway's own certificate (which must name a
/// gateway: `spiffe://DOMAIN/gateway/NAME`); clients must be of that domain.
pub fn server_config(
    ca: &PathBuf,
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(rustls::ServerConfig, String), GatewayError> {
    let pem_err = |path: &PathBuf| {
        let path = path.clone();
        move |e: rustls::pki_types::pem::Error| GatewayError::Pem { path, why: e.to_string() }
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(pem_err(ca))? {
        roots.add(c.map_err(pem_err(ca))?).map_err(|e| GatewayError::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(GatewayError::Pem { path: ca.clone(), why: "no certificate in the file".into() });
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(pem_err(cert))?.collect::<Result<_, _>>().map_err(pem_err(cert))?;
    let own = chain.first().map(|c| Identity::of_certificate(c));
    let domain = match own {
        Some(Ok(id)) if id.kind() == IdKind::Gateway => id.domain().to_owned(),
        Some(Ok(id)) => {
            return Err(GatewayError::Pem { path: cert.clone(), why: format!("names {id}, not a gateway") });
        }
        Some(Err(e)) => return Err(GatewayError::Pem { path: cert.clone(), why: e.to_string() }),
        None => return Err(GatewayError::Pem { path: cert.clone(), why: "no certificate in the file".into() }),
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map(|c| (c, domain))
        .map_err(|e| GatewayError::Tls(e.to_string()))
}

/// The client a verified certificate names: its SPIFFE ID must be `client/NAME` of `domain`;
/// the name is what the policy grants. The common name is never read.
pub fn client_of(cert: &CertificateDer<'_>, domain: &str) -> Result<String, Refusal> {
    match Identity::of_certificate(cert) {
        Ok(id) if id.domain() != domain => Err(Refusal::NoIdentity),
        Ok(id) if id.kind() == IdKind::Client => Ok(id.name().to_owned()),
        Ok(_) => Err(Refusal::NotAClient),
        Err(_) => Err(Refusal::NoIdentity),
    }
}

/// Most bytes read while looking for the HTTP request line.
const MAX_REQUEST_LINE: usize = 8192;

/// Reads from `r` into `head` until the first line is complete and returns its request target
/// (`GET /a/b HTTP/1.1` → `/a/b`; an absolute URI gives its path), or `None`.
async fn read_request_target<R: tokio::io::AsyncRead + Unpin>(r: &mut R, head: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 2048];
    while !head.contains(&b'\n') {
        if head.len() >= MAX_REQUEST_LINE {
            return None;
        }
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    request_target(head)
}

/// The target of an HTTP/1.x request line at the start of `head`.
pub fn request_target(head: &[u8]) -> Option<String> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (_method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    path.starts_with('/').then(|| path.to_owned())
}

/// Sorts a failed handshake into a refusal reason.
fn handshake_refusal(e: &std::io::Error) -> Refusal {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => Refusal::NoCertificate,
        Some(rustls::Error::InvalidCertificate(_)) => Refusal::UntrustedCertificate,
        _ => Refusal::HandshakeFailed,
    }
}

/// A running gateway: its stats, and the thread that runs it (it lives as long as the process).
pub struct Gateway {
    pub stats: Arc<GatewayStats>,
    pub local_addr: SocketAddr,
    policy: Arc<RwLock<Arc<Policy>>>,
    shared: Arc<Shared>,
}

impl core::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gateway").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Gateway {
    /// Replaces the policy (a push from the controller); connections accepted from now on are
    /// decided by it, open ones keep their chain.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    /// `count` packets of the client with subscriber id `subscriber` were dropped by an SF for
    /// what they carried (`what`: the SF and the reason): each counts as a refusal of the
    /// client's identity toward blocking it (seed 004 REQ11). The identity, when this gateway
    /// gave out that pseudonym (it keeps the last [`MAX_BUCKETS`]); `None` for one it did not.
    pub fn sf_drops(&self, subscriber: u64, count: u32, what: &str) -> Option<String> {
        let identity = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&subscriber)
            .cloned()?;
        self.stats.sf_drops.fetch_add(u64::from(count), Ordering::Relaxed);
        let now = std::time::Instant::now();
        // Past `after` strikes nothing more can happen within one report.
        let strikes = count.min(self.shared.settings.blocking.after.max(1));
        let mut begun = None;
        for _ in 0..strikes {
            begun = self.shared.identity_strikes.strike(identity.clone(), now).or(begun);
        }
        if let Some(n) = begun {
            self.shared.block_begun(&format!("identity={identity}"), n, &format!("packets an SF dropped ({what})"));
        }
        Some(identity)
    }
}

/// Binds the listener now (so a bad address fails the node's start) and serves clients on a
/// thread of its own. Flow entries go to every packet loop (one per worker lane) through
/// `control`.
pub fn start(settings: GatewaySettings, control: Vec<Sender<Control>>) -> Result<Gateway, GatewayError> {
    let (tls, domain) = server_config(&settings.ca, &settings.cert, &settings.key)?;
    let tls = Arc::new(tls);
    let listener = std::net::TcpListener::bind(settings.listen)
        .map_err(|source| GatewayError::Listen { addr: settings.listen, source })?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(GatewayStats::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let policy = Arc::new(RwLock::new(Arc::new(settings.policy.clone())));
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| GatewayError::Io(std::io::Error::other("no randomness")))?;
    let pseudonyms = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    secret.fill(0);
    let (sources, identities) = (Buckets::new(settings.limits.per_source), Buckets::new(settings.limits.per_identity));
    let (source_strikes, identity_strikes) = (Strikes::new(settings.blocking), Strikes::new(settings.blocking));
    let shared = Arc::new(Shared {
        domain,
        subscribers: Default::default(),
        source_strikes,
        identity_strikes,
        settings,
        policy: policy.clone(),
        control,
        stats: stats.clone(),
        pseudonyms,
        sources,
        identities,
    });
    let handle = shared.clone();
    std::thread::Builder::new().name("gateway".into()).spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return eprintln!("gateway: {e}"),
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move { shared.serve(acceptor, tcp, peer).await });
            }
        });
    })?;
    Ok(Gateway { stats, local_addr, policy, shared: handle })
}

struct Shared {
    settings: GatewaySettings,
    /// The trust domain of the gateway's certificate: clients must be of it.
    domain: String,
    /// The live policy (`settings.policy` is the one the gateway started with).
    policy: Arc<RwLock<Arc<Policy>>>,
    control: Vec<Sender<Control>>,
    stats: Arc<GatewayStats>,
    /// Key of the subscriber ids: HMAC-SHA-256 of the identity, random per gateway start, so
    /// an SF that may read the id can tell a client's packets apart but not name the client.
    pseudonyms: aws_lc_rs::hmac::Key,
    sources: Buckets<IpAddr>,
    identities: Buckets<String>,
    source_strikes: Strikes<IpAddr>,
    identity_strikes: Strikes<String>,
    /// Subscriber id → identity of the clients served (at most [`MAX_BUCKETS`]; then it starts
    /// afresh), so that SF drops reported by pseudonym count against the identity.
    subscribers: std::sync::Mutex<std::collections::HashMap<u64, String>>,
}

impl Shared {
    /// Sends `c` to every packet loop; `false` when one is gone.
    fn tell(&self, c: impl Fn() -> Control) -> bool {
        // Every lane gets it, even when one is gone.
        let sent = self.control.iter().filter(|tx| tx.send(c()).is_ok()).count();
        sent == self.control.len()
    }

    fn refuse(&self, peer: SocketAddr, identity: Option<&str>, sni: Option<&str>, r: Refusal, detail: &str) {
        let n = self.stats.refuse(r);
        self.tally(peer, identity, r);
        // A flood must not flood the log: refusals for rate or block are logged at the 1st, 2nd,
        // 4th, 8th ... with their count.
        let limited = matches!(
            r,
            Refusal::SourceRateLimited
                | Refusal::IdentityRateLimited
                | Refusal::SourceBlocked
                | Refusal::IdentityBlocked
        );
        if limited && !n.is_power_of_two() {
            return;
        }
        let detail = if limited { format!("{n} so far") } else { detail.to_owned() };
        eprintln!(
            "gateway: refused {peer} identity={} service={} reason={}{}{detail}",
            identity.unwrap_or("-"),
            sni.unwrap_or("-"),
            r.name(),
            if detail.is_empty() { "" } else { ": " }
        );
    }

    /// Counts the refusal against its source or identity, and begins a block when that makes
    /// too many (logged once per block).
    fn tally(&self, peer: SocketAddr, identity: Option<&str>, r: Refusal) {
        let now = std::time::Instant::now();
        let (count, identity) = match (r.culprit(), identity) {
            (Some(Culprit::Identity), Some(id)) => (self.identity_strikes.strike(id.to_owned(), now), Some(id)),
            (Some(_), _) => (self.source_strikes.strike(peer.ip(), now), None),
            (None, _) => return,
        };
        if let Some(count) = count {
            let who = identity.map_or_else(|| format!("source={}", peer.ip()), |id| format!("identity={id}"));
            self.block_begun(&who, count, r.name());
        }
    }

    /// Counts and logs (once) a block that begins after `count` refusals, the last `last`.
    fn block_begun(&self, who: &str, count: u32, last: &str) {
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        let rule = self.settings.blocking;
        eprintln!(
            "gateway: blocking {who} for {} s: {count} refusals within {} s, the last {last}",
            rule.duration.as_secs(),
            rule.within.as_secs(),
        );
    }

    async fn serve(&self, acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if self.source_strikes.blocked(&peer.ip(), std::time::Instant::now()) {
            return self.refuse(peer, None, None, Refusal::SourceBlocked, "");
        }
        if !self.sources.admit(peer.ip(), std::time::Instant::now()) {
            return self.refuse(peer, None, None, Refusal::SourceRateLimited, "");
        }
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.refuse(peer, None, None, handshake_refusal(&e), &e.to_string()),
            Err(_) => return self.refuse(peer, None, None, Refusal::HandshakeFailed, "timed out"),
        };
        let (_, conn) = tls.get_ref();
        let sni = conn.server_name().map(str::to_owned);
        let identity = match conn.peer_certificates().and_then(|c| c.first()) {
            Some(c) => client_of(c, &self.domain),
            None => Err(Refusal::NoIdentity),
        };
        let identity = match identity {
            Ok(i) => i,
            Err(r) => return self.refuse(peer, None, sni.as_deref(), r, ""),
        };
        if self.identity_strikes.blocked(&identity, std::time::Instant::now()) {
            return self.refuse(peer, Some(&identity), sni.as_deref(), Refusal::IdentityBlocked, "");
        }
        if !self.identities.admit(identity.clone(), std::time::Instant::now()) {
            return self.refuse(peer, Some(&identity), sni.as_deref(), Refusal::IdentityRateLimited, "");
        }
        // Classification by HTTP path: read the request line first (and pass it on later).
        let mut head = Vec::new();
        let policy = self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let path = if policy.needs_path(&identity, sni.as_deref()) {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_request_target(&mut tls, &mut head)).await {
                Ok(Some(p)) => Some(p),
                _ => return self.refuse(peer, Some(&identity), sni.as_deref(), Refusal::NoHttpRequest, ""),
            }
        } else {
            None
        };
        let (service, chain) = match policy.decide(&identity, sni.as_deref(), path.as_deref()) {
            Ok((s, c)) => (s.clone(), c),
            Err(r) => {
                let detail = path.map(|p| format!("path {p}")).unwrap_or_default();
                return self.refuse(peer, Some(&identity), sni.as_deref(), r, &detail);
            }
        };
        let tag = aws_lc_rs::hmac::sign(&self.pseudonyms, identity.as_bytes());
        let subscriber = u64::from_be_bytes(tag.as_ref()[..8].try_into().unwrap_or_default());
        {
            let mut known = self.subscribers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.len() >= MAX_BUCKETS && !known.contains_key(&subscriber) {
                known.clear();
            }
            known.insert(subscriber, identity.clone());
        }
        let (mut inner, tuple) = match self.connect(&service, chain, subscriber).await {
            Ok(connected) => connected,
            Err((tuple, e)) => {
                if let Some(t) = tuple {
                    self.tell(|| Control::RemoveFlow(t));
                }
                return self.refuse(peer, Some(&identity), Some(&service.name), Refusal::ServiceUnreachable, &e);
            }
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        eprintln!("gateway: {peer} identity={identity} service={} chain={}", service.name, chain.0);
        use tokio::io::AsyncWriteExt;
        if inner.write_all(&head).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
        }
        drop(inner);
        tokio::time::sleep(FLOW_LINGER).await;
        self.tell(|| Control::RemoveFlow(tuple));
    }

    /// Binds the inner socket to the local side, steers its 5-tuple onto the service's chain,
    /// and only then connects; returns the connection and the 5-tuple of its flow entry.
    async fn connect(
        &self,
        service: &Service,
        chain: ChainId,
        subscriber: u64,
    ) -> Result<(tokio::net::TcpStream, FiveTuple), (Option<FiveTuple>, String)> {
        let src = self.settings.inner_source;
        let sock = if src.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .map_err(|e| (None, e.to_string()))?;
        sock.bind(SocketAddr::new(src, 0)).map_err(|e| (None, format!("binding {src}: {e}")))?;
        let local = sock.local_addr().map_err(|e| (None, e.to_string()))?;
        let tuple = FiveTuple {
            src: local.ip(),
            dst: service.address.ip(),
            protocol: protocol::TCP,
            src_port: local.port(),
            dst_port: service.address.port(),
        };
        if !self.tell(|| Control::InsertFlow(tuple, chain, subscriber)) {
            return Err((None, "the packet loop is gone".into()));
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, sock.connect(service.address)).await {
            Ok(Ok(s)) => Ok((s, tuple)),
            Ok(Err(e)) => Err((Some(tuple), format!("connecting to {}: {e}", service.address))),
            Err(_) => Err((Some(tuple), format!("connecting to {}: timed out", service.address))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            services: vec![
                Service { name: "web.example".into(), address: "10.9.0.1:80".parse().unwrap() },
                Service { name: "admin.example".into(), address: "10.9.0.2:80".parse().unwrap() },
            ],
            grants: vec![
                Grant { identity: "alice".into(), service: "web.example".into(), chain: ChainId(1), path: None },
                Grant { identity: "alice".into(), service: "admin.example".into(), chain: ChainId(2), path: None },
                Grant { identity: "bob".into(), service: "web.example".into(), chain: ChainId(3), path: None },
                Grant {
                    identity: "carol".into(),
                    service: "web.example".into(),
                    chain: ChainId(4),
                    path: Some("/".into()),
                },
                Grant {
                    identity: "carol".into(),
                    service: "web.example".into(),
                    chain: ChainId(5),
                    path: Some("/static/".into()),
                },
                Grant {
                    identity: "dave".into(),
                    service: "web.example".into(),
                    chain: ChainId(6),
                    path: Some("/api/".into()),
                },
            ],
        }
    }

    #[test]
    fn refusals_within_the_window_block_for_the_duration_and_no_longer() {
        let rule = Blocking { after: 3, within: Duration::from_secs(60), duration: Duration::from_secs(300) };
        let strikes = Strikes::new(rule);
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Two refusals, then the window ends: the count starts over.
        assert_eq!(strikes.strike("mallory", at(0)), None);
        assert_eq!(strikes.strike("mallory", at(30)), None);
        assert_eq!(strikes.strike("mallory", at(61)), None);
        assert!(!strikes.blocked(&"mallory", at(61)));
        // Three within 60 s: blocked from the third for 300 s, and only that key.
        assert_eq!(strikes.strike("mallory", at(70)), None);
        assert_eq!(strikes.strike("mallory", at(80)), Some(3));
        assert!(strikes.blocked(&"mallory", at(80)) && strikes.blocked(&"mallory", at(379)));
        assert!(!strikes.blocked(&"alice", at(80)));
        // Refusals while blocked neither extend the block nor begin another.
        assert_eq!(strikes.strike("mallory", at(200)), None);
        assert!(!strikes.blocked(&"mallory", at(380)));
        // After the block the count starts over.
        assert_eq!(strikes.strike("mallory", at(381)), None);
        assert!(!strikes.blocked(&"mallory", at(381)));
        // `after = 0`: never blocks.
        let off = Strikes::new(Blocking { after: 0, ..rule });
        assert!((0..100).all(|_| off.strike("mallory", at(0)).is_none()) && !off.blocked(&"mallory", at(0)));
    }

    #[test]
    fn the_tally_stays_bounded_and_keeps_live_blocks() {
        let strikes =
            Strikes::new(Blocking { after: 1, within: Duration::from_secs(60), duration: Duration::from_secs(300) });
        let t0 = std::time::Instant::now();
        for k in 0..MAX_BUCKETS as u32 {
            assert_eq!(strikes.strike(k, t0), Some(1));
        }
        // Full of live blocks: a new key is not tallied, the old blocks stand.
        assert_eq!(strikes.strike(u32::MAX, t0), None);
        assert!(strikes.blocked(&0, t0) && !strikes.blocked(&u32::MAX, t0));
        // Once the blocks are over they make room.
        let later = t0 + Duration::from_secs(301);
        assert_eq!(strikes.strike(u32::MAX, later), Some(1));
        assert!(strikes.map.lock().unwrap().len() <= MAX_BUCKETS);
    }

    #[test]
    fn policy_grants_only_what_is_listed() {
        let p = policy();
        assert_eq!(p.decide("alice", Some("admin.example"), None).map(|(_, c)| c), Ok(ChainId(2)));
        assert_eq!(p.decide("alice", Some("web.example"), None).map(|(_, c)| c), Ok(ChainId(1)));
        assert_eq!(
            p.decide("bob", Some("WEB.example"), None).map(|(s, c)| (s.address.port(), c)),
            Ok((80, ChainId(3)))
        );
        assert_eq!(p.decide("bob", Some("admin.example"), None), Err(Refusal::NotAllowed));
        assert_eq!(p.decide("mallory", Some("web.example"), None), Err(Refusal::NotAllowed));
        assert_eq!(p.decide("alice", Some("other.example"), None), Err(Refusal::UnknownService));
        assert_eq!(p.decide("alice", None, None), Err(Refusal::NoServerName));
        assert_eq!(Policy::default().decide("alice", Some("web.example"), None), Err(Refusal::UnknownService));
    }

    #[test]
    fn the_longest_matching_path_prefix_picks_the_chain() {
        let p = policy();
        assert!(p.needs_path("carol", Some("web.example")) && !p.needs_path("alice", Some("web.example")));
        assert_eq!(p.decide("carol", Some("web.example"), Some("/static/a.css")).map(|(_, c)| c), Ok(ChainId(5)));
        assert_eq!(p.decide("carol", Some("web.example"), Some("/index.html")).map(|(_, c)| c), Ok(ChainId(4)));
        assert_eq!(p.decide("dave", Some("web.example"), Some("/api/v1")).map(|(_, c)| c), Ok(ChainId(6)));
        assert_eq!(p.decide("dave", Some("web.example"), Some("/admin")), Err(Refusal::PathNotAllowed));
        assert_eq!(p.decide("dave", Some("web.example"), None), Err(Refusal::PathNotAllowed));
    }

    proptest::proptest! {
        /// Whatever a client sends, reading the target never panics, and a target found is a
        /// path that the first line of the input really contains.
        #[test]
        fn request_target_of_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Some(t) = request_target(&bytes) {
                let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
                proptest::prop_assert!(t.starts_with('/'));
                proptest::prop_assert!(t == "/" || first.windows(t.len()).any(|w| w == t.as_bytes()));
            }
        }

        /// Well-formed request lines give back their target.
        #[test]
        fn request_target_of_request_lines(path in "/[a-z0-9/._?=-]{0,40}", method in "[A-Z]{3,7}") {
            let line = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            proptest::prop_assert_eq!(request_target(line.as_bytes()), Some(path));
        }
    }

    #[test]
    fn request_targets_are_read_from_the_request_line() {
        assert_eq!(request_target(b"GET /a/b?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(), Some("/a/b?x=1"));
        assert_eq!(request_target(b"GET http://h.example/p HTTP/1.1\r\n").as_deref(), Some("/p"));
        assert_eq!(request_target(b"GET http://h.example HTTP/1.0\r\n").as_deref(), Some("/"));
        assert_eq!(request_target(b"GET /a HTTP/2\r\n"), None);
        assert_eq!(request_target(b"GET  /a HTTP/1.1\r\n"), None);
        assert_eq!(request_target(b"\xff\xfe /a HTTP/1.1\r\n"), None);
        assert_eq!(request_target(b"GET * HTTP/1.1\r\n"), None);
        assert_eq!(request_target(b""), None);
    }

    #[test]
    fn the_client_is_read_from_the_spiffe_id_never_the_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = |cn: &str, uri: Option<&str>| {
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            if let Some(u) = uri {
                params.subject_alt_names.push(rcgen::SanType::URI(u.try_into().unwrap()));
            }
            params.self_signed(&key).unwrap()
        };
        let alice = cert("bob", Some("spiffe://d/client/alice"));
        assert_eq!(client_of(alice.der(), "d"), Ok("alice".to_owned()));
        assert_eq!(client_of(alice.der(), "other"), Err(Refusal::NoIdentity));
        assert_eq!(client_of(cert("alice", None).der(), "d"), Err(Refusal::NoIdentity));
        assert_eq!(client_of(cert("alice", Some("spiffe://d/node/alice")).der(), "d"), Err(Refusal::NotAClient));
        assert_eq!(client_of(cert("x", Some("spiffe://d/role/operator")).der(), "d"), Err(Refusal::NotAClient));
        assert_eq!(client_of(&CertificateDer::from(vec![1, 2, 3]), "d"), Err(Refusal::NoIdentity));
    }

    #[test]
    fn buckets_admit_a_burst_then_the_rate_and_stay_bounded() {
        let b = Buckets::new(Rate { per_s: 10.0, burst: 5.0 });
        let t0 = std::time::Instant::now();
        let admitted = (0..20).filter(|_| b.admit("10.0.0.1", t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(b.admit("10.0.0.2", t0), "another source has its own bucket");
        let t1 = t0 + std::time::Duration::from_millis(300);
        let admitted = (0..20).filter(|_| b.admit("10.0.0.1", t1)).count();
        assert_eq!(admitted, 3, "0.3 s at 10/s");
        for i in 0..MAX_BUCKETS + 10 {
            b.admit(format!("k{i}").leak(), t1);
        }
        assert!(b.map.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
