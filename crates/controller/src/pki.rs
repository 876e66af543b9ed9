//! The domain CA: issues the controller's, the gateway's, the clients' and (from a certificate
//! signing request at enrolment) the nodes' certificates. Its key lives only in the
//! controller's database (file mode 0600) and in memory.
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;
use zsfc_identity::{Identity, Kind};

/// How long the domain CA itself is valid: ten years. Everything it issues is short-lived
/// ([`Lifetimes`]); replacing the CA means enrolling the domain again.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Administrative roles' certificates: one year (a role on a hardware token is bound to its
/// key, and `zsfc controller-recover` issues new ones).
pub const ROLE_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// When a certificate is valid: `not_before` is set a little before now (a tenth of the
/// lifetime, at most a minute) so that hosts whose clocks differ slightly accept it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from now (less the skew allowance) for `life`.
    pub fn from_now(life: Duration) -> Self {
        let now = SystemTime::now();
        let skew = (life / 10).min(Duration::from_secs(60));
        Self { not_before: now - skew, not_after: now + life }
    }

    /// When a holder renews a certificate of this validity: once two thirds of it have passed.
    pub fn renew_at(&self) -> SystemTime {
        let life = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    /// The validity a certificate states (PEM or DER).
    pub fn of_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = u64::try_from(t.timestamp()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        };
        let v = cert.validity();
        Some(Self { not_before: at(v.not_before)?, not_after: at(v.not_after)? })
    }

    /// [`of_certificate`](Self::of_certificate) of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Option<Self> {
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).ok()?;
        Self::of_certificate(&der)
    }

    fn apply(&self, p: &mut CertificateParams) {
        p.not_before = self.not_before.into();
        p.not_after = self.not_after.into();
    }
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl core::fmt::Debug for Ca {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ca(<key redacted>)")
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Validity::from_now(CA_LIFETIME).apply(&mut p);
        let issued = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
        let cert_pem = issued.pem();
        let key_pem = Zeroizing::new(issued.key().serialize_pem());
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// The CA stored by [`pem`](Self::pem) and [`key_pem`](Self::key_pem).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_owned(), key_pem: Zeroizing::new(key_pem.to_owned()) })
    }

    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate and its new key for `id`: its SPIFFE ID as the one URI SAN, its name
    /// as the common name (for people; nothing decides on it), the extended key usage of its kind
    /// (server auth for the gateway and the controller, client auth otherwise). A server
    /// certificate also carries `dns_names` and `ips`.
    pub fn issue(
        &self,
        id: &Identity,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        validity: Validity,
    ) -> Result<(String, Zeroizing<String>), rcgen::Error> {
        let mut p = CertificateParams::new(dns_names.to_vec())?;
        p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        set_identity(&mut p, id)?;
        validity.apply(&mut p);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }

    /// Signs a certificate signing request as a certificate for `id`, whatever subject and
    /// names the request asked for: the identity comes from the credential the caller proved
    /// (a node's bootstrap token, the operator's certificate for a role).
    pub fn sign_csr(&self, csr_pem: &str, id: &Identity, validity: Validity) -> Result<String, rcgen::Error> {
        self.sign_csr_with_names(csr_pem, id, validity, false)
    }

    /// [`sign_csr`](Self::sign_csr) that keeps the DNS names and IP addresses the request asked
    /// for (at most [`MAX_SERVER_NAMES`]): a server's renewal (the gateway's names are its own to
    /// state; its identity still comes from the caller).
    pub fn sign_csr_with_names(
        &self,
        csr_pem: &str,
        id: &Identity,
        validity: Validity,
        keep_names: bool,
    ) -> Result<String, rcgen::Error> {
        let mut req = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let p = &mut req.params;
        let names: Vec<SanType> = if keep_names {
            p.subject_alt_names
                .drain(..)
                .filter(|n| matches!(n, SanType::DnsName(_) | SanType::IpAddress(_)))
                .take(MAX_SERVER_NAMES)
                .collect()
        } else {
            Vec::new()
        };
        p.subject_alt_names = names;
        p.is_ca = IsCa::NoCa;
        set_identity(p, id)?;
        validity.apply(p);
        Ok(req.signed_by(&self.issuer)?.pem())
    }
}

/// Subject, SAN and key usages of a certificate for `id` (zsfc_identity's table).
fn set_identity(p: &mut CertificateParams, id: &Identity) -> Result<(), rcgen::Error> {
    let cn = if id.kind() == Kind::Controller { "controller" } else { id.name() };
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, DnValue::Utf8String(cn.to_owned()));
    p.subject_alt_names.push(SanType::URI(rcgen::string::Ia5String::try_from(id.uri())?));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if id.kind().is_server() {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    Ok(())
}

/// The most DNS names and addresses a server certificate's renewal keeps.
pub const MAX_SERVER_NAMES: usize = 16;

/// A node's new key and the CSR for it (the key never leaves the node).
pub fn new_csr(cn: &str) -> Result<(String, Zeroizing<String>), rcgen::Error> {
    new_server_csr(cn, &[], &[])
}

/// A new key and a CSR for it that asks for `dns_names` and `ips` (a gateway's renewal).
pub fn new_server_csr(
    cn: &str,
    dns_names: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(String, Zeroizing<String>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(dns_names.to_vec())?;
    p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.distinguished_name.push(DnType::CommonName, cn);
    let csr = p.serialize_request(&key)?;
    Ok((csr.pem()?, Zeroizing::new(key.serialize_pem())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_is_signed_for_the_enrolled_identity_only() {
        let ca = Ca::new("test CA").unwrap();
        let (csr, _key) = new_csr("i-claim-to-be-egress").unwrap();
        let sf1 = Identity::new("d", Kind::Node, "sf1").unwrap();
        let pem = ca.sign_csr(&csr, &sf1, Validity::from_now(Duration::from_secs(60))).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c);
        let der = der.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert.subject().iter_common_name().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(cn, ["sf1"]);
        assert_eq!(Identity::of_certificate(&der).unwrap(), sf1);
        // The CA survives a round trip through its stored form.
        let again = Ca::from_pem(ca.pem(), ca.key_pem()).unwrap();
        let v = Validity::from_now(Duration::from_secs(600));
        assert!(again.sign_csr(&csr, &Identity::new("d", Kind::Node, "sf2").unwrap(), v).is_ok());
    }

    #[test]
    fn certificates_state_the_validity_they_were_issued_for() {
        let ca = Ca::new("test CA").unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let ca_v = Validity::of_pem(ca.pem()).unwrap();
        assert!(ca_v.not_after.duration_since(ca_v.not_before).unwrap() >= CA_LIFETIME);
        let v = Validity::from_now(Duration::from_secs(86_400));
        let id = Identity::new("d", Kind::Client, "alice").unwrap();
        let got = Validity::of_pem(&ca.issue(&id, &[], &[], v).unwrap().0).unwrap();
        assert_eq!((secs(got.not_before), secs(got.not_after)), (secs(v.not_before), secs(v.not_after)));
        // Skew allowance: a minute at most, a tenth of short lifetimes.
        assert_eq!(v.not_after.duration_since(v.not_before).unwrap(), Duration::from_secs(86_400 + 60));
        let short = Validity::from_now(Duration::from_secs(9));
        assert_eq!(short.not_after.duration_since(short.not_before).unwrap(), Duration::from_millis(9_900));
        assert_eq!(short.renew_at(), short.not_before + Duration::from_millis(6_600));
        // A renewal of a server keeps the names it asks for, never another identity.
        let gw = Identity::new("d", Kind::Gateway, "ingress").unwrap();
        let ip: std::net::IpAddr = "172.16.0.1".parse().unwrap();
        let (csr, _) = new_server_csr("ingress", &["web.example".into()], &[ip]).unwrap();
        let pem = ca.sign_csr_with_names(&csr, &gw, v, true).unwrap();
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(Identity::of_certificate(&der).unwrap(), gw);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = cert.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(names, 3, "DNS name, address, SPIFFE ID");
    }

    #[test]
    fn every_kind_gets_its_uri_and_key_usage() {
        use x509_parser::extensions::ParsedExtension;
        let ca = Ca::new("test CA").unwrap();
        for kind in Kind::ALL {
            let id = Identity::new("d", kind, "x").unwrap();
            let (pem, _) = ca.issue(&id, &[], &[], Validity::from_now(Duration::from_secs(60))).unwrap();
            let der: rustls_pki_types::CertificateDer<'static> =
                rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(Identity::of_certificate(&der).unwrap(), id);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let eku = cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::ExtendedKeyUsage(u) => Some((u.server_auth, u.client_auth)),
                    _ => None,
                })
                .unwrap();
            assert_eq!(eku, (kind.is_server(), !kind.is_server()), "{kind}");
        }
    }
}

/// Writes `data` to `path`, readable by the owner only (keys, node files, tokens); the error
/// names the file.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(named)?;
    f.write_all(data).map_err(named)
}

/// Why credentials could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("issuing a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("writing credentials: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Identity(#[from] zsfc_identity::IdentityError),
}

/// One client certificate per administrative role (`ROLE.pem`, `ROLE.key` in `dir`), each
/// limited to what its role may do ([`crate::Role`]); hand each person only theirs.
pub fn issue_roles(ca: &Ca, domain: &str, dir: &std::path::Path) -> Result<(), IssueError> {
    for role in crate::Role::ALL {
        let (cert, key) = ca.issue(&role.identity(domain)?, &[], &[], Validity::from_now(ROLE_LIFETIME))?;
        std::fs::write(dir.join(format!("{}.pem", role.name())), cert)?;
        write_private(&dir.join(format!("{}.key", role.name())), key.as_bytes())?;
    }
    Ok(())
}
