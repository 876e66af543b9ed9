//! Certificate renewal by the node's agent (issue 17): the node's client certificate, and on
//! the gateway node the gateway's server certificate, are renewed over mutual TLS with the
//! current certificate once two thirds of their life has passed — a new key each time, made
//! here and never sent. The new certificate is written next to the old (atomically, 0600) and
//! taken by the next handshake; nothing restarts and no packet waits for it. A node whose
//! certificate expired before it could renew (the controller was out of reach for a third of
//! the lifetime) can no longer reach the controller: it needs a new bootstrap token.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use zsfc_controller::client::Client;
use zsfc_controller::pki::{Validity, new_server_csr, write_private};

/// A certificate this node holds and renews.
pub(crate) struct Held {
    /// `node` or `gateway`, as the controller's `zsfc:renew` takes it.
    pub what: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The gateway, to present the renewed server certificate (`None`: the node's own client
    /// certificate, which `Client::renew` takes).
    pub gateway: Option<Arc<zsfc_gateway::Gateway>>,
}

/// The longest sleep between looks at the clock (a suspended host wakes up late).
const LOOK_EVERY: Duration = Duration::from_secs(30);

/// Renews every certificate in `held` for as long as the process lives.
pub(crate) fn follow(name: &str, client: &Client, held: &[Held]) {
    let mut due: Vec<Option<SystemTime>> = held.iter().map(|h| renew_at(&h.cert)).collect();
    loop {
        let now = SystemTime::now();
        let next = due.iter().flatten().min().copied().unwrap_or(now + LOOK_EVERY);
        if let Ok(wait) = next.duration_since(now) {
            std::thread::sleep(wait.min(LOOK_EVERY));
            continue;
        }
        for (h, d) in held.iter().zip(due.iter_mut()) {
            if d.is_none_or(|t| t > SystemTime::now()) {
                continue;
            }
            match renew(name, client, h) {
                Ok(v) => {
                    tracing::info!("zsfc node {name:?}: {} certificate renewed, valid for {:?}", h.what, lifetime(&v));
                    *d = Some(v.renew_at());
                }
                Err(e) => {
                    // Try again soon, but not in a tight loop: a tenth of what is left, 1-10 s.
                    let left = renew_left(&h.cert);
                    let again = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
                    tracing::warn!(
                        "zsfc node {name:?}: renewing the {} certificate: {e:#} (again in {again:?})",
                        h.what
                    );
                    *d = Some(SystemTime::now() + again);
                }
            }
        }
    }
}

fn lifetime(v: &Validity) -> Duration {
    v.not_after.duration_since(v.not_before).unwrap_or_default()
}

fn renew_at(cert: &Path) -> Option<SystemTime> {
    Validity::of_pem(&std::fs::read_to_string(cert).ok()?).map(|v| v.renew_at())
}

/// How long the certificate at `cert` is still valid.
fn renew_left(cert: &Path) -> Duration {
    std::fs::read_to_string(cert)
        .ok()
        .and_then(|p| Validity::of_pem(&p))
        .and_then(|v| v.not_after.duration_since(SystemTime::now()).ok())
        .unwrap_or_default()
}

/// The DNS names and addresses a server certificate states (a gateway's renewal asks for the
/// same).
fn server_names(cert_pem: &str) -> anyhow::Result<(Vec<String>, Vec<IpAddr>)> {
    use x509_parser::extensions::GeneralName;
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for n in cert.subject_alternative_name()?.map(|s| s.value.general_names.clone()).unwrap_or_default() {
        match n {
            GeneralName::DNSName(d) => dns.push(d.to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => ips.extend(<[u8; 4]>::try_from(b).ok().map(IpAddr::from)),
                16 => ips.extend(<[u8; 16]>::try_from(b).ok().map(IpAddr::from)),
                _ => {}
            },
            _ => {}
        }
    }
    Ok((dns, ips))
}

/// One renewal: a new key and CSR, the controller's signature, the files, the TLS slot.
fn renew(name: &str, client: &Client, h: &Held) -> anyhow::Result<Validity> {
    let old = std::fs::read_to_string(&h.cert)?;
    let (dns, ips) = if h.gateway.is_some() { server_names(&old)? } else { (Vec::new(), Vec::new()) };
    let (csr, key) = new_server_csr(name, &dns, &ips)?;
    let body = serde_json::json!({"zsfc:input": {"for": h.what, "csr": csr}});
    let reply = client.blocking(
        "POST",
        "/restconf/operations/zsfc:renew",
        Some(body.to_string().into_bytes()),
        Duration::from_secs(10),
    )?;
    if reply.status != 200 {
        anyhow::bail!("refused ({}): {}", reply.status, reply.message());
    }
    let v: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let cert =
        v["zsfc:output"]["certificate"].as_str().ok_or_else(|| anyhow::anyhow!("the answer holds no certificate"))?;
    let validity = Validity::of_pem(cert).ok_or_else(|| anyhow::anyhow!("the answer's certificate is unreadable"))?;
    match &h.gateway {
        Some(gw) => gw.renew_certificate(cert, &key).map_err(anyhow::Error::msg)?,
        None => client.renew(cert, &key)?,
    }
    replace_pair(&h.cert, cert.as_bytes(), &h.key, key.as_bytes())?;
    Ok(validity)
}

fn new_beside(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to).map_err(|e| anyhow::anyhow!("{} -> {}: {e}", from.display(), to.display()))
}

/// Replaces a certificate and its key, each whole: both are written beside the old ones
/// (`.new`, 0600), then the key is renamed over the old key, then the certificate. A crash in
/// between is finished by [`finish_interrupted`] at the next start.
fn replace_pair(cert: &Path, cert_pem: &[u8], key: &Path, key_pem: &[u8]) -> anyhow::Result<()> {
    let (cert_new, key_new) = (new_beside(cert), new_beside(key));
    write_private(&cert_new, cert_pem)?;
    write_private(&key_new, key_pem)?;
    rename(&key_new, key)?;
    rename(&cert_new, cert)
}

/// Finishes a [`replace_pair`] a crash interrupted: with both `.new` files left nothing was
/// replaced (they go); with the certificate's only, the key is new already and the
/// certificate follows it.
pub(crate) fn finish_interrupted(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let (cert_new, key_new) = (new_beside(cert), new_beside(key));
    match (cert_new.exists(), key_new.exists()) {
        (true, true) => {
            std::fs::remove_file(&cert_new)?;
            std::fs::remove_file(&key_new)?;
        }
        (true, false) => rename(&cert_new, cert)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_replacement_is_finished_or_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
        std::fs::write(&cert, "old cert").unwrap();
        std::fs::write(&key, "old key").unwrap();
        replace_pair(&cert, b"cert 1", &key, b"key 1").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!((read(&cert), read(&key)), ("cert 1".to_owned(), "key 1".to_owned()));
        // Crash after both were written: nothing was replaced.
        std::fs::write(new_beside(&cert), "cert 2").unwrap();
        std::fs::write(new_beside(&key), "key 2").unwrap();
        finish_interrupted(&cert, &key).unwrap();
        assert_eq!((read(&cert), read(&key)), ("cert 1".to_owned(), "key 1".to_owned()));
        // Crash after the key was renamed: the certificate follows.
        std::fs::write(new_beside(&cert), "cert 3").unwrap();
        std::fs::write(&key, "key 3").unwrap();
        finish_interrupted(&cert, &key).unwrap();
        assert_eq!((read(&cert), read(&key)), ("cert 3".to_owned(), "key 3".to_owned()));
        assert!(!new_beside(&cert).exists() && !new_beside(&key).exists());
    }
}
