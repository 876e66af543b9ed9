//! The ingress gateway: terminates the clients' mutual TLS (TLS 1.3 only, client certificate
//! required and verified against the domain CA), takes the client's identity from its
//! certificate, asks the [`Policy`] whether that identity may use the service its SNI names
//! (default deny), and then opens the inner connection to the service — the traffic that
//! traverses the chain. The flow entry that steers the inner connection onto the service's chain
//! goes to the packet loop *before* the connection's first packet exists.
//!
//! Every refusal is counted by [`ClientRefusal`] and logged with the peer, the identity (when known)
//! and the reason. A source or an identity refused too often within a while is blocked for a
//! while ([`Blocking`], seed 004 REQ11): refused outright, before any further TLS or policy work.
#![forbid(unsafe_code)]

use rustls::pki_types::{CertificateDer, pem::PemObject};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zsfc_dataplane::ChainId;
use zsfc_identity::{CertSlot, Identity, Kind as IdKind};

pub mod http;
mod limits;
mod policy;
mod revoked;

use limits::{Buckets, MAX_BUCKETS, Strikes};
use policy::Culprit;
pub use policy::{ClientRefusal, Grant, Policy, Service};
use zsfc_io::Control;
use zsfc_wire::ip::{FiveTuple, protocol};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a flow entry outlives its connection, so the last FIN/ACK exchange still finds it.
const FLOW_LINGER: Duration = Duration::from_secs(5);

/// What the gateway did; shared with the node process for its report.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub accepted: AtomicU64,
    pub served: AtomicU64,
    /// Blocks begun (of sources and identities).
    pub blocks: AtomicU64,
    /// Packets SFs dropped for what they carried, reported for a client this gateway served.
    pub sf_drops: AtomicU64,
    refused: [AtomicU64; ClientRefusal::ALL.len()],
}

impl GatewayStats {
    pub fn refused(&self, r: ClientRefusal) -> u64 {
        self.refused[r as usize].load(Ordering::Relaxed)
    }
    /// Counts a refusal; the count so far.
    fn refuse(&self, r: ClientRefusal) -> u64 {
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
/// gateway: `spiffe://DOMAIN/gateway/NAME`; clients must be of that domain) and the slot that
/// holds that certificate (renewal replaces it: [`Gateway::renew_certificate`]).
pub fn server_config(
    ca: &PathBuf,
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(rustls::ServerConfig, String, Arc<CertSlot>), GatewayError> {
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
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| GatewayError::Pem { path: path.clone(), why: e.to_string() })
    };
    let (cert_pem, key_pem) = (read(cert)?, zeroize::Zeroizing::new(read(key)?));
    let domain = gateway_domain(&cert_pem).map_err(|why| GatewayError::Pem { path: cert.clone(), why })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let slot = CertSlot::new(provider.clone(), &cert_pem, &key_pem)
        .map_err(|e| GatewayError::Pem { path: key.clone(), why: e.to_string() })?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(slot.clone());
    Ok((config, domain, slot))
}

/// The trust domain of a gateway's certificate (PEM), which must name a gateway.
fn gateway_domain(cert_pem: &str) -> Result<String, String> {
    let first = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).next();
    match first.map(|c| c.map(|c| Identity::of_certificate(&c))) {
        Some(Ok(Ok(id))) if id.kind() == IdKind::Gateway => Ok(id.domain().to_owned()),
        Some(Ok(Ok(id))) => Err(format!("names {id}, not a gateway")),
        Some(Ok(Err(e))) => Err(e.to_string()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no certificate in the file".into()),
    }
}

/// The client a verified certificate names: its SPIFFE ID must be `client/NAME` of `domain`;
/// the name is what the policy grants. The common name is never read.
pub fn client_of(cert: &CertificateDer<'_>, domain: &str) -> Result<String, ClientRefusal> {
    match Identity::of_certificate(cert) {
        Ok(id) if id.domain() != domain => Err(ClientRefusal::NoIdentity),
        Ok(id) if id.kind() == IdKind::Client => Ok(id.name().to_owned()),
        Ok(_) => Err(ClientRefusal::NotAClient),
        Err(_) => Err(ClientRefusal::NoIdentity),
    }
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
    http::path_of(target)
}

/// Sorts a failed handshake into a refusal reason.
fn handshake_refusal(e: &std::io::Error) -> ClientRefusal {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => ClientRefusal::NoCertificate,
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
        )) => ClientRefusal::CertificateExpired,
        Some(rustls::Error::InvalidCertificate(_)) => ClientRefusal::UntrustedCertificate,
        _ => ClientRefusal::HandshakeFailed,
    }
}

/// A running gateway: its stats, and the thread that runs it (it lives as long as the process).
pub struct Gateway {
    pub stats: Arc<GatewayStats>,
    pub local_addr: SocketAddr,
    policy: Arc<RwLock<Arc<Policy>>>,
    shared: Arc<Shared>,
    certificate: Arc<CertSlot>,
}

impl core::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gateway").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Gateway {
    /// Replaces the revoked clients (name, cut-off in Unix seconds: certificates issued at or
    /// before it are refused); connections of a newly revoked client are closed at once.
    pub fn set_revoked(&self, list: Vec<(String, u64)>) {
        self.shared.revocations.set(list);
    }

    /// Presents `cert_pem` and `key_pem` from the next handshake on (a renewed certificate);
    /// refused unless it names a gateway of this gateway's domain. Open connections go on.
    pub fn renew_certificate(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        match gateway_domain(cert_pem)? {
            d if d == self.shared.domain => self.certificate.replace(cert_pem, key_pem).map_err(|e| e.to_string()),
            d => Err(format!("the certificate is of domain {d:?}, not {:?}", self.shared.domain)),
        }
    }

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
    let (tls, domain, certificate) = server_config(&settings.ca, &settings.cert, &settings.key)?;
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
        revocations: revoked::Revocations::new(),
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
                Err(e) => return tracing::error!("gateway: {e}"),
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move { shared.serve(acceptor, tcp, peer).await });
            }
        });
    })?;
    Ok(Gateway { stats, local_addr, policy, shared: handle, certificate })
}

/// What a served connection is: who, to which service, through which chain, under which policy.
#[derive(Clone, Copy)]
struct Served<'a> {
    peer: SocketAddr,
    identity: &'a str,
    sni: Option<&'a str>,
    service: &'a Service,
    chain: ChainId,
    policy: &'a Policy,
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
    /// Revoked clients, as the controller pushed them.
    revocations: revoked::Revocations,
}

impl Shared {
    /// Sends `c` to every packet loop; `false` when one is gone.
    fn tell(&self, c: impl Fn() -> Control) -> bool {
        // Every lane gets it, even when one is gone.
        let sent = self.control.iter().filter(|tx| tx.send(c()).is_ok()).count();
        sent == self.control.len()
    }

    fn refuse(&self, peer: SocketAddr, identity: Option<&str>, sni: Option<&str>, r: ClientRefusal, detail: &str) {
        let n = self.stats.refuse(r);
        self.tally(peer, identity, r);
        // A flood must not flood the log: refusals for rate or block are logged at the 1st, 2nd,
        // 4th, 8th ... with their count.
        let limited = matches!(
            r,
            ClientRefusal::SourceRateLimited
                | ClientRefusal::IdentityRateLimited
                | ClientRefusal::SourceBlocked
                | ClientRefusal::IdentityBlocked
        );
        if limited && !n.is_power_of_two() {
            return;
        }
        let detail = if limited { format!("{n} so far") } else { detail.to_owned() };
        tracing::info!(
            "gateway: refused {peer} identity={} service={} reason={}{}{detail}",
            identity.unwrap_or("-"),
            sni.unwrap_or("-"),
            r.name(),
            if detail.is_empty() { "" } else { ": " }
        );
    }

    /// Counts the refusal against its source or identity, and begins a block when that makes
    /// too many (logged once per block).
    fn tally(&self, peer: SocketAddr, identity: Option<&str>, r: ClientRefusal) {
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
        tracing::info!(
            "gateway: blocking {who} for {} s: {count} refusals within {} s, the last {last}",
            rule.duration.as_secs(),
            rule.within.as_secs(),
        );
    }

    async fn serve(&self, acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if self.source_strikes.blocked(&peer.ip(), std::time::Instant::now()) {
            return self.refuse(peer, None, None, ClientRefusal::SourceBlocked, "");
        }
        if !self.sources.admit(peer.ip(), std::time::Instant::now()) {
            return self.refuse(peer, None, None, ClientRefusal::SourceRateLimited, "");
        }
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.refuse(peer, None, None, handshake_refusal(&e), &e.to_string()),
            Err(_) => return self.refuse(peer, None, None, ClientRefusal::HandshakeFailed, "timed out"),
        };
        let (_, conn) = tls.get_ref();
        let sni = conn.server_name().map(str::to_owned);
        let cert = conn.peer_certificates().and_then(|c| c.first());
        let not_before = cert.and_then(|c| zsfc_identity::not_before(c));
        let identity = match cert {
            Some(c) => client_of(c, &self.domain),
            None => Err(ClientRefusal::NoIdentity),
        };
        let identity = match identity {
            Ok(i) => i,
            Err(r) => return self.refuse(peer, None, sni.as_deref(), r, ""),
        };
        let revocations = self.revocations.watch();
        if self.revocations.is_revoked(&identity, not_before) {
            return self.refuse(peer, Some(&identity), sni.as_deref(), ClientRefusal::Revoked, "");
        }
        if self.identity_strikes.blocked(&identity, std::time::Instant::now()) {
            return self.refuse(peer, Some(&identity), sni.as_deref(), ClientRefusal::IdentityBlocked, "");
        }
        if !self.identities.admit(identity.clone(), std::time::Instant::now()) {
            return self.refuse(peer, Some(&identity), sni.as_deref(), ClientRefusal::IdentityRateLimited, "");
        }
        // Classification by HTTP path: read the first request's head (and pass it on later).
        let mut head = Vec::new();
        let policy = self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let path = if policy.needs_path(&identity, sni.as_deref()) {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, http::read_head(&mut tls, &mut head)).await {
                Ok(Ok(h)) => Some(h.target),
                Ok(Err(http::Stop::Malformed(why))) => {
                    return self.refuse(peer, Some(&identity), sni.as_deref(), ClientRefusal::NoHttpRequest, why);
                }
                _ => return self.refuse(peer, Some(&identity), sni.as_deref(), ClientRefusal::NoHttpRequest, ""),
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
        let (inner, tuple) = match self.connect(&service, chain, subscriber).await {
            Ok(connected) => connected,
            Err((tuple, e)) => {
                if let Some(t) = tuple {
                    self.tell(|| Control::RemoveFlow(t));
                }
                return self.refuse(peer, Some(&identity), Some(&service.name), ClientRefusal::ServiceUnreachable, &e);
            }
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        tracing::info!("gateway: {peer} identity={identity} service={} chain={}", service.name, chain.0);
        let served =
            Served { peer, identity: &identity, sni: sni.as_deref(), service: &service, chain, policy: &policy };
        tokio::select! {
            () = self.relay(&served, tls, inner, head, path.is_some()) => {}
            () = self.revocations.until_revoked(revocations, &identity, not_before) => {
                self.refuse(peer, Some(&identity), Some(&service.name), ClientRefusal::Revoked, "open connection closed");
            }
        }
        tokio::time::sleep(FLOW_LINGER).await;
        self.tell(|| Control::RemoveFlow(tuple));
    }

    /// Carries a served connection's bytes both ways until either side ends; where the chain
    /// depends on the path, request by request (a request of another chain ends it).
    async fn relay(
        &self,
        s: &Served<'_>,
        mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        mut inner: tokio::net::TcpStream,
        head: Vec<u8>,
        by_path: bool,
    ) {
        let Served { peer, identity, sni, service, chain, policy } = *s;
        use tokio::io::AsyncWriteExt;
        if !by_path {
            // No grant of this identity for this service depends on the path: bytes both ways.
            if inner.write_all(&head).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
            }
            drop(inner);
        } else {
            // The chain depends on the path: every request on the connection must take the
            // connection's chain (keep-alive and pipelining included), or the connection ends.
            let same = |target: &str| {
                matches!(policy.decide(identity, sni, Some(target)),
                    Ok((s, c)) if s.name == service.name && c == chain)
            };
            let (mut from_client, mut to_client) = tokio::io::split(tls);
            let (mut from_service, mut to_service) = inner.into_split();
            let requests = async {
                let stop = http::forward(&mut from_client, &mut to_service, head, same).await;
                // Nothing more for the service; it finishes what it was sent.
                let _ = to_service.shutdown().await;
                stop
            };
            let answers = async {
                let _ = tokio::io::copy(&mut from_service, &mut to_client).await;
                let _ = to_client.shutdown().await;
            };
            let (stop, ()) = tokio::join!(requests, answers);
            match stop {
                http::Stop::Closed => {}
                http::Stop::Refused(target) => {
                    let why = match policy.decide(identity, sni, Some(&target)) {
                        Err(r) => r,
                        Ok(_) => ClientRefusal::OtherChain,
                    };
                    let detail = format!("path {target} on a connection of chain {}", chain.0);
                    self.refuse(peer, Some(identity), Some(&service.name), why, &detail);
                }
                http::Stop::Malformed(why) => {
                    self.refuse(peer, Some(identity), Some(&service.name), ClientRefusal::NoHttpRequest, why);
                }
            }
        }
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
        assert!(strikes.len() <= MAX_BUCKETS);
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
        assert_eq!(p.decide("bob", Some("admin.example"), None), Err(ClientRefusal::NotAllowed));
        assert_eq!(p.decide("mallory", Some("web.example"), None), Err(ClientRefusal::NotAllowed));
        assert_eq!(p.decide("alice", Some("other.example"), None), Err(ClientRefusal::UnknownService));
        assert_eq!(p.decide("alice", None, None), Err(ClientRefusal::NoServerName));
        assert_eq!(Policy::default().decide("alice", Some("web.example"), None), Err(ClientRefusal::UnknownService));
    }

    #[test]
    fn the_longest_matching_path_prefix_picks_the_chain() {
        let p = policy();
        assert!(p.needs_path("carol", Some("web.example")) && !p.needs_path("alice", Some("web.example")));
        assert_eq!(p.decide("carol", Some("web.example"), Some("/static/a.css")).map(|(_, c)| c), Ok(ChainId(5)));
        assert_eq!(p.decide("carol", Some("web.example"), Some("/index.html")).map(|(_, c)| c), Ok(ChainId(4)));
        assert_eq!(p.decide("dave", Some("web.example"), Some("/api/v1")).map(|(_, c)| c), Ok(ChainId(6)));
        assert_eq!(p.decide("dave", Some("web.example"), Some("/admin")), Err(ClientRefusal::PathNotAllowed));
        assert_eq!(p.decide("dave", Some("web.example"), None), Err(ClientRefusal::PathNotAllowed));
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
        assert_eq!(client_of(alice.der(), "other"), Err(ClientRefusal::NoIdentity));
        assert_eq!(client_of(cert("alice", None).der(), "d"), Err(ClientRefusal::NoIdentity));
        assert_eq!(client_of(cert("alice", Some("spiffe://d/node/alice")).der(), "d"), Err(ClientRefusal::NotAClient));
        assert_eq!(client_of(cert("x", Some("spiffe://d/role/operator")).der(), "d"), Err(ClientRefusal::NotAClient));
        assert_eq!(client_of(&CertificateDer::from(vec![1, 2, 3]), "d"), Err(ClientRefusal::NoIdentity));
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
        assert!(b.len() <= MAX_BUCKETS);
    }
}
