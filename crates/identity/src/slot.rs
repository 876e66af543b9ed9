//! A certificate and its key that can be replaced while TLS configurations use them: a node's
//! agent renews the node's client certificate and the gateway's server certificate without a
//! restart (issue 17: renewal before two thirds of the life), and the controller issues itself a
//! new server certificate the same way. Every handshake after [`CertSlot::replace`] presents the
//! new certificate; connections open already keep theirs.
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};

/// Why a certificate and key cannot go into a slot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("the key: {0}")]
    Key(String),
    #[error("the key does not belong to the certificate: {0}")]
    Mismatch(String),
}

pub struct CertSlot {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl core::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CertSlot(<key redacted>)")
    }
}

fn certified(provider: &CryptoProvider, cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, SlotError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| SlotError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(SlotError::Certificate("no certificate in the PEM text".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| SlotError::Key(e.to_string()))?;
    let signer = provider.key_provider.load_private_key(key).map_err(|e| SlotError::Key(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| SlotError::Mismatch(e.to_string()))?;
    Ok(ck)
}

impl CertSlot {
    /// A slot holding `cert_pem` (the certificate first, then any chain) and `key_pem`.
    pub fn new(provider: Arc<CryptoProvider>, cert_pem: &str, key_pem: &str) -> Result<Arc<Self>, SlotError> {
        let ck = certified(&provider, cert_pem, key_pem)?;
        Ok(Arc::new(Self { provider, current: RwLock::new(Arc::new(ck)) }))
    }

    /// Puts a new certificate and key in the slot; on error the old ones stay.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), SlotError> {
        let ck = Arc::new(certified(&self.provider, cert_pem, key_pem)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = ck;
        Ok(())
    }

    /// What handshakes present now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl rustls::server::ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for CertSlot {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let ck = self.current();
        ck.key.choose_scheme(schemes).is_some().then_some(ck)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
