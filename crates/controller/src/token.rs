//! Administrative keys on a hardware token (seed 004 REQ8), through PKCS#11: the key pair is
//! generated on the token, its private half marked sensitive and not extractable, and every
//! signature — the TLS 1.3 handshake's `CertificateVerify` and the certificate signing request
//! that binds a role to the key — is made by the token. Works with any PKCS#11 module: a smart
//! card or YubiKey through OpenSC or ykcs11, a network HSM, or SoftHSM (what the tests use).
//!
//! Keys are ECDSA P-256 (`CKM_ECDSA` over a SHA-256 digest computed here), which every token
//! supports and TLS 1.3 offers as `ecdsa_secp256r1_sha256`.
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// DER of the P-256 curve's OID (`prime256v1`), the value of `CKA_EC_PARAMS`.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// An uncompressed P-256 point: 0x04, x, y.
const POINT_LEN: usize = 65;

/// Where a key lives: the PKCS#11 module (a shared library), the token's label and the key's
/// label on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    pub module: std::path::PathBuf,
    pub token: String,
    pub key: String,
}

/// A private key that never leaves its token; signs through a logged-in session.
pub struct TokenKey {
    // One session; PKCS#11 sessions are not to be used from two threads at once.
    session: Mutex<Session>,
    key: ObjectHandle,
    /// The public key: an uncompressed P-256 point.
    point: Vec<u8>,
    label: String,
}

impl core::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenKey").field("label", &self.label).finish_non_exhaustive()
    }
}

/// What went wrong with a hardware token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module refused a call.
    #[error("PKCS#11: {what}: {source}")]
    Pkcs11 { what: String, source: cryptoki::error::Error },
    #[error("PKCS#11: no token labelled {token:?} in {module}")]
    NoToken { token: String, module: String },
    #[error("PKCS#11: {count} objects are labelled {label:?}; the label must name one key")]
    AmbiguousLabel { label: String, count: usize },
    #[error("PKCS#11: token {token:?} holds no key pair labelled {key:?}")]
    NoKeyPair { token: String, key: String },
    #[error("PKCS#11: token {token:?} already holds a key labelled {key:?}")]
    KeyExists { token: String, key: String },
    /// The token says the key can be read out: not a hardware key.
    #[error("PKCS#11: the token made key {label:?} readable ({attributes}); refusing it")]
    Readable { label: String, attributes: String },
    #[error("PKCS#11: the public key has no EC point")]
    NoPoint,
    #[error("PKCS#11: the key is not an uncompressed P-256 point ({0} bytes)")]
    NotP256(usize),
    #[error("PKCS#11: a P-256 signature is 64 bytes, the token gave {0}")]
    BadSignature(usize),
    #[error("set {PIN_VAR} to the token's user PIN")]
    NoPin,
    #[error("the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    #[error("the certificate: {0}")]
    Certificate(String),
    #[error("the certificate is not for the key {0:?} on the token")]
    NotForKey(String),
}

fn err(what: impl core::fmt::Display) -> impl FnOnce(cryptoki::error::Error) -> TokenError {
    move |source| TokenError::Pkcs11 { what: what.to_string(), source }
}

/// The module's context, one per module and process: a module is initialized once, and
/// finalizing a second context would pull the first one's sessions from under it.
fn context(module: &Path) -> Result<Pkcs11, TokenError> {
    static CONTEXTS: Mutex<Vec<(std::path::PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut all = CONTEXTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, p11)) = all.iter().find(|(m, _)| m == module) {
        return Ok(p11.clone());
    }
    let p11 = Pkcs11::new(module).map_err(err(format!("loading {}", module.display())))?;
    match p11.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(cryptoki::error::Error::AlreadyInitialized) => {}
        Err(e) => return Err(err("initializing the module")(e)),
    }
    all.push((module.to_owned(), p11.clone()));
    Ok(p11)
}

/// A read-write session on the token labelled `token`, logged in as its user with `pin`.
fn login(module: &Path, token: &str, pin: &str) -> Result<Session, TokenError> {
    let p11 = context(module)?;
    let mut found = None;
    for slot in p11.get_slots_with_token().map_err(err("listing slots"))? {
        if p11.get_token_info(slot).map_err(err("reading a token's label"))?.label() == token {
            found = Some(slot);
            break;
        }
    }
    let slot =
        found.ok_or_else(|| TokenError::NoToken { token: token.to_owned(), module: module.display().to_string() })?;
    let session = p11.open_rw_session(slot).map_err(err(format!("opening a session on token {token:?}")))?;
    // PKCS#11 logs the user in per token and application: a second key on the same token (the
    // caller's and the new one, in `zsfc role-key`) finds the user logged in already.
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(err(format!("logging in to token {token:?} (wrong PIN?)"))(e)),
    }
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>, TokenError> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(err(format!("looking for key {label:?}")))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(TokenError::AmbiguousLabel { label: label.to_owned(), count: found.len() }),
    }
}

/// The public point of the key pair's public half (`CKA_EC_POINT` is a DER OCTET STRING around
/// it; some modules give the bare point).
fn point_of(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, TokenError> {
    let attrs = session.get_attributes(public, &[AttributeType::EcPoint]).map_err(err("reading the public key"))?;
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        return Err(TokenError::NoPoint);
    };
    let point = match p.as_slice() {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
        _ => p,
    };
    if point.len() != POINT_LEN || point[0] != 0x04 {
        return Err(TokenError::NotP256(point.len()));
    }
    Ok(point)
}

/// The environment variable that holds the token's user PIN (never a command-line argument,
/// which other users could read from the process list).
pub const PIN_VAR: &str = "ZSFC_PKCS11_PIN";

/// The user PIN from [`PIN_VAR`].
pub fn pin_from_env() -> Result<zeroize::Zeroizing<String>, TokenError> {
    std::env::var(PIN_VAR).map(zeroize::Zeroizing::new).map_err(|_| TokenError::NoPin)
}

impl TokenKey {
    /// The key labelled `r.key` on token `r.token`.
    pub fn open(r: &TokenRef, pin: &str) -> Result<Arc<Self>, TokenError> {
        let session = login(&r.module, &r.token, pin)?;
        let missing = || TokenError::NoKeyPair { token: r.token.clone(), key: r.key.clone() };
        let key = find(&session, ObjectClass::PRIVATE_KEY, &r.key)?.ok_or_else(missing)?;
        let public = find(&session, ObjectClass::PUBLIC_KEY, &r.key)?.ok_or_else(missing)?;
        let point = point_of(&session, public)?;
        Ok(Arc::new(Self { session: Mutex::new(session), key, point, label: r.key.clone() }))
    }

    /// A new P-256 key pair labelled `r.key`, generated on the token: the private key is
    /// sensitive and not extractable, so no one — the operator included — can read it out.
    /// Refuses a label that is already taken.
    pub fn generate(r: &TokenRef, pin: &str) -> Result<Arc<Self>, TokenError> {
        let session = login(&r.module, &r.token, pin)?;
        if find(&session, ObjectClass::PRIVATE_KEY, &r.key)?.is_some() {
            return Err(TokenError::KeyExists { token: r.token.clone(), key: r.key.clone() });
        }
        let label = Attribute::Label(r.key.as_bytes().to_vec());
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            label.clone(),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::KeyType(KeyType::EC),
            label,
        ];
        let (public, key) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(err("generating a P-256 key pair"))?;
        let made = Self { session: Mutex::new(session), key, point: Vec::new(), label: r.key.clone() };
        // What the token says of the key it made, not what was asked: a module that ignores
        // the template must not pass for a hardware key.
        let kept = made.check_kept().and_then(|()| point_of(&made.session(), public));
        match kept {
            Ok(point) => Ok(Arc::new(Self { point, ..made })),
            Err(e) => {
                made.destroy();
                Err(e)
            }
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The private key is sensitive, not extractable and never was.
    fn check_kept(&self) -> Result<(), TokenError> {
        let want = [AttributeType::Sensitive, AttributeType::Extractable, AttributeType::NeverExtractable];
        let attrs = self.session().get_attributes(self.key, &want).map_err(err("reading the key's attributes"))?;
        let kept = attrs.iter().all(|a| {
            matches!(a, Attribute::Sensitive(true) | Attribute::Extractable(false) | Attribute::NeverExtractable(true))
        });
        if attrs.len() != want.len() || !kept {
            return Err(TokenError::Readable { label: self.label.clone(), attributes: format!("{attrs:?}") });
        }
        Ok(())
    }

    /// Removes both halves of the key pair from the token (a key the controller refused to
    /// bind, or one the token made wrongly).
    pub fn destroy(&self) {
        let s = self.session();
        let halves = [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY];
        for h in halves.into_iter().filter_map(|c| find(&s, c, &self.label).ok().flatten()) {
            let _ = s.destroy_object(h);
        }
    }

    /// The public key as an X.509 SubjectPublicKeyInfo (DER).
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }

    /// A certificate signing request for `cn`, signed by the token: what the controller
    /// certifies when it binds a role to this key.
    pub fn csr(&self, cn: &str) -> Result<String, TokenError> {
        let mut p = rcgen::CertificateParams::new(Vec::new())?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let req = p.serialize_request(self)?;
        Ok(req.pem()?)
    }

    /// ECDSA P-256 over SHA-256 of `msg`, DER-encoded (RFC 3279 `Ecdsa-Sig-Value`).
    fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let raw = self.session().sign(&Mechanism::Ecdsa, self.key, digest.as_ref()).map_err(err("signing"))?;
        ecdsa_der(&raw)
    }
}

/// `r || s` (as PKCS#11 returns an ECDSA signature) → `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, TokenError> {
    if raw.len() != 64 {
        return Err(TokenError::BadSignature(raw.len()));
    }
    let int = |v: &[u8]| {
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1)..];
        let mut out = vec![0x02, (v.len() + usize::from(v[0] >= 0x80)) as u8];
        if v[0] >= 0x80 {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let (r, s) = (int(&raw[..32]), int(&raw[32..]));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Ok(der)
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // rcgen's error carries no text; `csr` says what failed.
        self.sign_der(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The token key as rustls signs with it (client authentication in TLS 1.3).
#[derive(Debug)]
struct TlsKey(Arc<TokenKey>);

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TlsSigner(Arc<TokenKey>);

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign_der(message).map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// The certificate `cert_pem` with its key on a token, as rustls resolves a client certificate.
pub(crate) fn resolver(cert_pem: &str, key: Arc<TokenKey>) -> Result<Arc<dyn ResolvesClientCert>, TokenError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |e: &dyn core::fmt::Display| TokenError::Certificate(e.to_string());
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let end = chain.first().ok_or_else(|| bad(&"no certificate in the PEM"))?;
    let (_, c) = x509_parser::parse_x509_certificate(end).map_err(|e| bad(&e))?;
    if c.public_key().raw != key.spki_der().as_slice() {
        return Err(TokenError::NotForKey(key.label.clone()));
    }
    Ok(Arc::new(Always(Arc::new(rustls::sign::CertifiedKey::new(chain, Arc::new(TlsKey(key)))))))
}

/// Offers the one certificate whenever the server asks for one.
#[derive(Debug)]
struct Always(Arc<rustls::sign::CertifiedKey>);

impl ResolvesClientCert for Always {
    fn resolve(&self, _hints: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256).then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_signature_becomes_the_der_aws_lc_verifies() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
        // Enough signatures that r or s start with a high bit or a zero byte many times.
        for i in 0..300u32 {
            let msg = i.to_be_bytes();
            let raw = key.sign(&rng, &msg).unwrap();
            let der = ecdsa_der(raw.as_ref()).unwrap();
            public.verify(&msg, &der).unwrap_or_else(|_| panic!("signature {i}: {der:02x?}"));
        }
        assert!(ecdsa_der(&[1; 63]).is_err());
    }
}
