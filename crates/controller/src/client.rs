//! An HTTPS client for the controller's API (nodes and the `zsfc` operator commands): TLS 1.3,
//! the controller verified against the domain CA, optionally with a client certificate.
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

/// Why a call to the controller failed before it had an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the domain CA: {0}")]
    CaPem(#[from] rustls_pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the client certificate: {0}")]
    Certificate(#[from] zsfc_identity::SlotError),
    #[error("the hardware token: {0}")]
    Token(#[from] crate::token::TokenError),
    #[error("{0:?} is not a server name")]
    ServerName(String),
    #[error("this client has no certificate to renew")]
    NothingToRenew,
    #[error("{method} {path}: no answer within {timeout:?}")]
    Timeout { method: String, path: String, timeout: Duration },
    #[error("{address}: {source}")]
    Io { address: String, source: std::io::Error },
    /// The server's certificate is the domain's, but not the controller's.
    #[error("{address}: the server is {found}, not the controller")]
    NotTheController { address: String, found: String },
    #[error("{address}: the server's certificate: {why}")]
    ServerCertificate { address: String, why: String },
    #[error("{address}: the server sent no certificate")]
    NoServerCertificate { address: String },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
}

#[derive(Clone)]
pub struct Client {
    address: String,
    server_name: rustls_pki_types::ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    /// The client certificate of a PEM identity, replaceable (renewal; shared by every clone).
    slot: Option<Arc<zsfc_identity::CertSlot>>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client").field("address", &self.address).finish()
    }
}

/// A reply: HTTP status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Zeroized on drop: a node's documents carry key material.
    pub body: zeroize::Zeroizing<Vec<u8>>,
}

impl Reply {
    /// The RFC 8040 error message, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["ietf-restconf:errors"]["error"][0]["error-message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// Who the caller is: nobody (enrolment), a certificate with its key in PEM, or a certificate
/// whose key is on a hardware token.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    Anonymous,
    Pem { cert: &'a str, key: &'a str },
    Token { cert: &'a str, key: &'a Arc<crate::token::TokenKey> },
}

impl Client {
    /// `identity`: PEM certificate and key of the caller (`None`: no client certificate, as at
    /// enrolment).
    pub fn new(
        address: &str,
        server_name: &str,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Self, ClientError> {
        let identity = identity.map_or(Identity::Anonymous, |(cert, key)| Identity::Pem { cert, key });
        Self::with_identity(address, server_name, ca_pem, identity)
    }

    pub fn with_identity(
        address: &str,
        server_name: &str,
        ca_pem: &str,
        identity: Identity<'_>,
    ) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
        let mut slot = None;
        let cfg = match identity {
            Identity::Anonymous => b.with_no_client_auth(),
            Identity::Pem { cert, key } => {
                let s = zsfc_identity::CertSlot::new(provider.clone(), cert, key)?;
                slot = Some(s.clone());
                b.with_client_cert_resolver(s)
            }
            Identity::Token { cert, key } => b.with_client_cert_resolver(crate::token::resolver(cert, key.clone())?),
        };
        Ok(Self {
            address: address.to_owned(),
            server_name: rustls_pki_types::ServerName::try_from(server_name.to_owned())
                .map_err(|_| ClientError::ServerName(server_name.to_owned()))?,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            slot,
        })
    }

    /// Presents `cert` and `key` from the next connection on (a renewed certificate), in this
    /// client and every clone of it. Only a client with a PEM identity has one to replace.
    pub fn renew(&self, cert: &str, key: &str) -> Result<(), ClientError> {
        let slot = self.slot.as_ref().ok_or(ClientError::NothingToRenew)?;
        Ok(slot.replace(cert, key)?)
    }

    /// One request on its own connection, bounded by `timeout`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        tokio::time::timeout(timeout, self.request_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout { method: method.to_owned(), path: path.to_owned(), timeout })?
    }

    async fn request_inner(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Reply, ClientError> {
        let io = |source| ClientError::Io { address: self.address.clone(), source };
        let tcp = tokio::net::TcpStream::connect(&self.address).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(io)?;
        // The server's certificate chains to the domain CA and names the server; it must also be
        // the controller's (zsfc_identity): a gateway's server certificate, say, whose names an
        // operator made to include "controller", is not.
        let server = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        match server.map(|c| zsfc_identity::Identity::of_certificate(c)) {
            Some(Ok(id)) if id.kind() == zsfc_identity::Kind::Controller => {}
            Some(Ok(id)) => {
                return Err(ClientError::NotTheController { address: self.address.clone(), found: id.to_string() });
            }
            Some(Err(e)) => {
                return Err(ClientError::ServerCertificate { address: self.address.clone(), why: e.to_string() });
            }
            None => return Err(ClientError::NoServerCertificate { address: self.address.clone() }),
        }
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.server_name.to_str().as_ref())
            .header(hyper::header::CONTENT_TYPE, "application/yang-data+json")
            // Erased once sent (an enrolment carries its bootstrap token).
            .body(Full::new(Bytes::from_owner(zeroize::Zeroizing::new(body.unwrap_or_default()))))?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = zeroize::Zeroizing::new(resp.into_body().collect().await?.to_bytes().to_vec());
        Ok(Reply { status, body })
    }

    pub fn blocking(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClientError::Io { address: self.address.clone(), source })?;
        rt.block_on(self.request(method, path, body, timeout))
    }
}
