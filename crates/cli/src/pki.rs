//! The lab's PKI: a domain CA, the gateway's server certificate, one client certificate per
//! client, and — to show a refusal — certificates with the same names from a CA the domain does
//! not trust. The CA keys are never written: once `up` has issued everything they are dropped.
use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use zeroize::Zeroizing;

pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl core::fmt::Debug for Ca {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ca(<key redacted>)")
    }
}

impl Ca {
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        let mut p = CertificateParams::new(Vec::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self { issuer: CertifiedIssuer::self_signed(p, KeyPair::generate()?)? })
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for `cn`; a server certificate carries `dns_names` and `ips`.
    pub(crate) fn issue(
        &self,
        cn: &str,
        server: bool,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
    ) -> anyhow::Result<(String, Zeroizing<String>)> {
        let mut p = CertificateParams::new(dns_names.to_vec())?;
        p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }
}

/// Writes `data` to `path`, readable by the owner only.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data).with_context(|| format!("writing {}", path.display()))
}
