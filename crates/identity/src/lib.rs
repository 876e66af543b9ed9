//! Typed identities. Every certificate the domain CA issues names its holder's kind and name in
//! one URI subject alternative name in the SPIFFE form (SPIFFE ID, `spiffe://DOMAIN/PATH`):
//!
//! | kind       | URI SAN                               | extended key usage |
//! | ---------- | ------------------------------------- | ------------------ |
//! | node       | `spiffe://DOMAIN/node/NAME`           | client auth        |
//! | client     | `spiffe://DOMAIN/client/NAME`         | client auth        |
//! | role       | `spiffe://DOMAIN/role/NAME`           | client auth        |
//! | gateway    | `spiffe://DOMAIN/gateway/NAME`        | server auth        |
//! | controller | `spiffe://DOMAIN/controller`          | server auth        |
//!
//! The controller, the nodes' agents and the gateway decide who a peer is from that SAN only,
//! never from the subject common name (which stays, for people reading certificates): a client
//! named `sf` is `client/sf`, which is not `node/sf`, so names may repeat across kinds. A
//! certificate without exactly one such SAN has no identity here and is refused.
//!
//! The trust domain is the zsfc domain's name; both it and each name are checked against the
//! SPIFFE ID grammar (trust domain: lowercase letters, digits, `.`, `-`, `_`; a path segment:
//! letters, digits, `.`, `-`, `_`, neither `.` nor `..`).
#![forbid(unsafe_code)]

mod slot;
pub use slot::{CertSlot, SlotError};

use std::fmt;

/// What a certificate's holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A node process of the domain (its agent polls the controller's nodes' interface).
    Node,
    /// A person or program using a service through the gateway.
    Client,
    /// An administrative role (`operator`, `auditor`, ...) on the controller's management
    /// interface.
    Role,
    /// The mutual-TLS gateway's server certificate.
    Gateway,
    /// The controller's server certificate.
    Controller,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Node, Kind::Client, Kind::Role, Kind::Gateway, Kind::Controller];

    /// The path segment of the kind in the SPIFFE ID.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Client => "client",
            Kind::Role => "role",
            Kind::Gateway => "gateway",
            Kind::Controller => "controller",
        }
    }

    /// Whether certificates of this kind authenticate a server (TLS server auth) rather than a
    /// client.
    pub fn is_server(self) -> bool {
        matches!(self, Kind::Gateway | Kind::Controller)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())
    }
}

/// Why a value is not an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed")]
    NotACertificate,
    #[error("the certificate names no zsfc identity (no spiffe:// URI SAN)")]
    NoIdentity,
    #[error("the certificate names {0} SPIFFE identities; one is required")]
    SeveralIdentities(usize),
    #[error("{uri:?} is not a zsfc identity: {why}")]
    Malformed { uri: String, why: &'static str },
    #[error("{0:?} is not a valid trust domain (lowercase letters, digits, '.', '-', '_')")]
    BadDomain(String),
    #[error("{0:?} is not a valid name (letters, digits, '.', '-', '_'; not '.' or '..')")]
    BadName(String),
}

/// A typed identity: trust domain, kind and name (the controller has no name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    domain: String,
    kind: Kind,
    name: String,
}

const SCHEME: &str = "spiffe://";
/// SPIFFE IDs are at most 2048 bytes.
const MAX_URI: usize = 2048;

fn valid_domain(d: &str) -> bool {
    !d.is_empty() && d.len() <= 255 && d.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks that `domain` can be a trust domain (a zsfc domain's name must be one).
pub fn check_domain(domain: &str) -> Result<(), IdentityError> {
    if valid_domain(domain) { Ok(()) } else { Err(IdentityError::BadDomain(domain.to_owned())) }
}

/// Checks that `name` can name a node, client, role or gateway.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    if valid_segment(name) { Ok(()) } else { Err(IdentityError::BadName(name.to_owned())) }
}

impl Identity {
    /// The identity of `kind` named `name` in `domain` (for [`Kind::Controller`], `name` is
    /// ignored: there is one controller per domain).
    pub fn new(domain: &str, kind: Kind, name: &str) -> Result<Self, IdentityError> {
        check_domain(domain)?;
        let name = if kind == Kind::Controller { String::new() } else { name.to_owned() };
        if kind != Kind::Controller {
            check_name(&name)?;
        }
        Ok(Self { domain: domain.to_owned(), kind, name })
    }

    /// The controller of `domain`.
    pub fn controller(domain: &str) -> Result<Self, IdentityError> {
        Self::new(domain, Kind::Controller, "")
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The holder's name (empty for the controller).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is `kind` named `name`.
    pub fn is(&self, kind: Kind, name: &str) -> bool {
        self.kind == kind && self.name == name
    }

    /// The SPIFFE ID, as it is written in the certificate's URI SAN.
    pub fn uri(&self) -> String {
        match self.kind {
            Kind::Controller => format!("{SCHEME}{}/controller", self.domain),
            k => format!("{SCHEME}{}/{}/{}", self.domain, k.segment(), self.name),
        }
    }

    /// Reads a SPIFFE ID written by [`Identity::uri`].
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = |why| IdentityError::Malformed { uri: uri.chars().take(120).collect(), why };
        if uri.len() > MAX_URI {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| bad("not a spiffe:// URI"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
        if !valid_domain(domain) {
            return Err(bad("invalid trust domain"));
        }
        let mut segments = path.split('/');
        let kind = match segments.next() {
            Some(s) => Kind::ALL.into_iter().find(|k| k.segment() == s).ok_or_else(|| bad("unknown kind"))?,
            None => return Err(bad("no kind")),
        };
        let name = match (kind, segments.next(), segments.next()) {
            (Kind::Controller, None, _) => String::new(),
            (Kind::Controller, Some(_), _) => return Err(bad("the controller has no name")),
            (_, Some(n), None) if valid_segment(n) => n.to_owned(),
            (_, Some(_), None) => return Err(bad("invalid name")),
            (_, None, _) => return Err(bad("no name")),
            (_, Some(_), Some(_)) => return Err(bad("more than kind and name")),
        };
        Ok(Self { domain: domain.to_owned(), kind, name })
    }

    /// The identity a DER certificate names: its one `spiffe://` URI SAN. The certificate's
    /// signature and validity are the TLS verifier's business, checked before this.
    pub fn of_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::NotACertificate)?;
        let san = cert.subject_alternative_name().map_err(|_| IdentityError::NotACertificate)?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|s| s.value.general_names.iter())
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .filter(|u| u.starts_with(SCHEME))
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::NoIdentity),
            [one] => Self::parse_uri(one),
            several => Err(IdentityError::SeveralIdentities(several.len())),
        }
    }
}

/// When a certificate (DER) became valid, in Unix seconds: what a revocation's cut-off is
/// compared with (certificates issued at or before it are revoked).
pub fn not_before(der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    u64::try_from(cert.validity().not_before.timestamp()).ok()
}

impl fmt::Display for Identity {
    /// `kind/name` (`controller` for the controller): what logs and the audit show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Controller => f.write_str("controller"),
            k => write!(f, "{}/{}", k.segment(), self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_uri() {
        for kind in Kind::ALL {
            let id = Identity::new("quickstart", kind, "sf").unwrap();
            assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id, "{kind}");
        }
        assert_eq!(Identity::controller("d").unwrap().uri(), "spiffe://d/controller");
        assert_eq!(Identity::new("d", Kind::Client, "sf").unwrap().to_string(), "client/sf");
    }

    #[test]
    fn the_same_name_of_two_kinds_is_two_identities() {
        let node = Identity::new("d", Kind::Node, "sf").unwrap();
        let client = Identity::new("d", Kind::Client, "sf").unwrap();
        assert_ne!(node, client);
        assert!(node.is(Kind::Node, "sf") && !client.is(Kind::Node, "sf"));
    }

    #[test]
    fn malformed_uris_and_names_are_refused() {
        for uri in [
            "https://d/node/a",
            "spiffe://d",
            "spiffe://D/node/a",
            "spiffe://d/host/a",
            "spiffe://d/node/",
            "spiffe://d/node/a/b",
            "spiffe://d/node/..",
            "spiffe://d/controller/x",
            "spiffe://d/node/a b",
        ] {
            assert!(Identity::parse_uri(uri).is_err(), "{uri}");
        }
        assert!(Identity::parse_uri(&format!("spiffe://d/node/{}", "a".repeat(3000))).is_err());
        assert!(Identity::new("Upper", Kind::Node, "a").is_err());
        assert!(Identity::new("d", Kind::Node, "a/b").is_err());
        assert!(Identity::new("d", Kind::Node, "").is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(Identity::of_certificate(b"not DER"), Err(IdentityError::NotACertificate));
    }
}
