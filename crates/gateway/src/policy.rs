//! Who may use which service through which chain ([`Policy`], default deny), and why a client
//! connection was refused ([`ClientRefusal`]).
use std::net::SocketAddr;
use zsfc_dataplane::ChainId;

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
    ) -> Result<(&Service, ChainId), ClientRefusal> {
        let sni = sni.ok_or(ClientRefusal::NoServerName)?;
        let service =
            self.services.iter().find(|s| s.name.eq_ignore_ascii_case(sni)).ok_or(ClientRefusal::UnknownService)?;
        if self.grants_for(identity, service).next().is_none() {
            return Err(ClientRefusal::NotAllowed);
        }
        self.grants_for(identity, service)
            .filter(|g| match (&g.path, path) {
                (None, _) => true,
                (Some(prefix), Some(p)) => p.starts_with(prefix.as_str()),
                (Some(_), None) => false,
            })
            .max_by_key(|g| g.path.as_ref().map_or(0, String::len))
            .map(|g| (service, g.chain))
            .ok_or(ClientRefusal::PathNotAllowed)
    }
}

/// Why a client connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientRefusal {
    /// The client presented no certificate.
    NoCertificate,
    /// The client's certificate does not verify against the domain CA (another CA, wrong
    /// usage, not yet valid).
    UntrustedCertificate,
    /// The client's certificate is past its validity (issue 17: client certificates live as
    /// long as the operator chose, then the client needs a new one). The validity is checked
    /// before the issuer, so an expired certificate of another CA is refused this way too.
    CertificateExpired,
    /// The client's identity was revoked (`zsfc revoke client NAME`) and its certificate is
    /// from before that: refused after the handshake, or its open connection closed.
    Revoked,
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
    /// A later request on a connection needs another chain than the connection's (the
    /// connection ends there; the client may ask again on a new one).
    OtherChain,
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
pub(crate) enum Culprit {
    /// Failed or missing authentication, or load: the source address.
    Source,
    /// Asking for what the policy does not grant, or load: the authenticated identity.
    Identity,
}

impl ClientRefusal {
    pub const ALL: [ClientRefusal; 18] = [
        ClientRefusal::SourceRateLimited,
        ClientRefusal::IdentityRateLimited,
        ClientRefusal::NoCertificate,
        ClientRefusal::UntrustedCertificate,
        ClientRefusal::CertificateExpired,
        ClientRefusal::Revoked,
        ClientRefusal::HandshakeFailed,
        ClientRefusal::NoIdentity,
        ClientRefusal::NotAClient,
        ClientRefusal::NoServerName,
        ClientRefusal::UnknownService,
        ClientRefusal::NotAllowed,
        ClientRefusal::ServiceUnreachable,
        ClientRefusal::NoHttpRequest,
        ClientRefusal::PathNotAllowed,
        ClientRefusal::OtherChain,
        ClientRefusal::SourceBlocked,
        ClientRefusal::IdentityBlocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientRefusal::NoCertificate => "no_certificate",
            ClientRefusal::UntrustedCertificate => "untrusted_certificate",
            ClientRefusal::CertificateExpired => "certificate_expired",
            ClientRefusal::Revoked => "revoked",
            ClientRefusal::HandshakeFailed => "handshake_failed",
            ClientRefusal::NoIdentity => "no_identity",
            ClientRefusal::NotAClient => "not_a_client",
            ClientRefusal::NoServerName => "no_server_name",
            ClientRefusal::UnknownService => "unknown_service",
            ClientRefusal::NotAllowed => "not_allowed",
            ClientRefusal::ServiceUnreachable => "service_unreachable",
            ClientRefusal::NoHttpRequest => "no_http_request",
            ClientRefusal::PathNotAllowed => "path_not_allowed",
            ClientRefusal::OtherChain => "other_chain",
            ClientRefusal::SourceRateLimited => "source_rate_limited",
            ClientRefusal::IdentityRateLimited => "identity_rate_limited",
            ClientRefusal::SourceBlocked => "source_blocked",
            ClientRefusal::IdentityBlocked => "identity_blocked",
        }
    }

    /// Whom this refusal counts against for blocking: `None` for what is not the client's doing
    /// (the service is unreachable) and for refusals of what is blocked already (a block runs
    /// its time from when it began).
    pub(crate) fn culprit(self) -> Option<Culprit> {
        use ClientRefusal::*;
        match self {
            NoCertificate | UntrustedCertificate | CertificateExpired | HandshakeFailed | NoIdentity | NotAClient
            | SourceRateLimited => Some(Culprit::Source),
            NoServerName | UnknownService | NotAllowed | NoHttpRequest | PathNotAllowed | IdentityRateLimited => {
                Some(Culprit::Identity)
            }
            // A browser reusing a connection across paths of two chains does nothing wrong; a
            // revoked client is refused outright anyway.
            ServiceUnreachable | OtherChain | SourceBlocked | IdentityBlocked | Revoked => None,
        }
    }
}
