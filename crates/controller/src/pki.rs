//! The domain CA: issues the controller's, the gateway's, the clients' and (from a certificate
//! signing request at enrolment) the nodes' certificates. Its key lives only in the
//! controller's database (file mode 0600) and in memory.
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;
use zsfc_identity::{Identity, Kind};

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
    ) -> Result<(String, Zeroizing<String>), rcgen::Error> {
        let mut p = CertificateParams::new(dns_names.to_vec())?;
        p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        set_identity(&mut p, id)?;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }

    /// Signs a certificate signing request as a certificate for `id`, whatever subject and
    /// names the request asked for: the identity comes from the credential the caller proved
    /// (a node's bootstrap token, the operator's certificate for a role).
    pub fn sign_csr(&self, csr_pem: &str, id: &Identity) -> Result<String, rcgen::Error> {
        let mut req = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let p = &mut req.params;
        p.subject_alt_names.clear();
        p.is_ca = IsCa::NoCa;
        set_identity(p, id)?;
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

/// A node's new key and the CSR for it (the key never leaves the node).
pub fn new_csr(cn: &str) -> Result<(String, Zeroizing<String>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::new())?;
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
        let pem = ca.sign_csr(&csr, &sf1).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c);
        let der = der.unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert.subject().iter_common_name().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(cn, ["sf1"]);
        assert_eq!(Identity::of_certificate(&der).unwrap(), sf1);
        // The CA survives a round trip through its stored form.
        let again = Ca::from_pem(ca.pem(), ca.key_pem()).unwrap();
        assert!(again.sign_csr(&csr, &Identity::new("d", Kind::Node, "sf2").unwrap()).is_ok());
    }

    #[test]
    fn every_kind_gets_its_uri_and_key_usage() {
        use x509_parser::extensions::ParsedExtension;
        let ca = Ca::new("test CA").unwrap();
        for kind in Kind::ALL {
            let id = Identity::new("d", kind, "x").unwrap();
            let (pem, _) = ca.issue(&id, &[], &[]).unwrap();
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
        let (cert, key) = ca.issue(&role.identity(domain)?, &[], &[])?;
        std::fs::write(dir.join(format!("{}.pem", role.name())), cert)?;
        write_private(&dir.join(format!("{}.key", role.name())), key.as_bytes())?;
    }
    Ok(())
}
