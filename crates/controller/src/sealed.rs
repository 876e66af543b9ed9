//! A node's desired state travels sealed to a key its agent made for that one poll, so that key
//! material never exists in plaintext in buffers zsfc does not control.
//!
//! TLS 1.3 already protects the document on the wire, but rustls and hyper keep the received
//! plaintext in their own buffers and free them without erasing: a node's memory kept its last
//! key documents long after the SAs' hard lifetime (seen: the JSON of earlier generations, every
//! SA key in hex, in each node's heap). Sealing keeps those buffers ciphertext only:
//!
//! 1. each poll carries a fresh X25519 public key of the agent (`seal=` in the query);
//! 2. the controller answers with its own fresh X25519 public key and the document encrypted
//!    with AES-256-GCM under HKDF-SHA-256(ECDH shared secret, salt = both public keys,
//!    info = label ‖ node), the node's name also authenticated as associated data. The body is
//!    binary (`application/vnd.zsfc.sealed-state`): `MAGIC` (8 bytes) ‖ the controller's public
//!    key (32) ‖ ciphertext ‖ tag (16) — a JSON envelope with hex doubled the time of a push of
//!    1,000 chains;
//! 3. the agent derives the same key and opens the document in place, in the zeroize-on-drop
//!    buffer the reply arrived in, and parses the keys from there.
//!
//! Both private keys live for one document and are erased with it (aws-lc scrubs them when
//! freed, the shared secret is a `Zeroizing` buffer), so the seal adds forward secrecy of its
//! own: a later theft of a node's certificate key opens no recorded document. Each derived key
//! seals exactly one message, so the nonce is fixed.
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

/// The media type of a sealed reply.
pub const CONTENT_TYPE: &str = "application/vnd.zsfc.sealed-state";
/// The first bytes of a sealed reply; a new format gets a new one.
const MAGIC: &[u8; 8] = b"zsfcSS01";
/// HKDF info and associated-data label.
const LABEL: &[u8] = b"zsfc sealed node state v1";
const PUBLIC_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + PUBLIC_LEN;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("seal key: {0}")]
    PublicKey(&'static str),
    #[error("not a sealed document ({0})")]
    Format(&'static str),
    #[error("sealed document does not open (another poll's key, another node, or altered)")]
    Open,
    #[error("no randomness or key agreement failed")]
    Crypto,
}

/// The one-document AEAD key both sides derive.
fn document_key(
    private: EphemeralPrivateKey,
    peer: &[u8],
    controller_public: &[u8],
    agent_public: &[u8],
    node: &str,
) -> Result<LessSafeKey, SealError> {
    let salt = [controller_public, agent_public].concat();
    agreement::agree_ephemeral(private, UnparsedPublicKey::new(&X25519, peer), SealError::Open, |shared| {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
        let info = [LABEL, node.as_bytes()];
        let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| SealError::Crypto)?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    })
}

fn aad(node: &str) -> Aad<Vec<u8>> {
    Aad::from([LABEL, b"\0", node.as_bytes()].concat())
}

fn fresh_private() -> Result<EphemeralPrivateKey, SealError> {
    EphemeralPrivateKey::generate(&X25519, &aws_lc_rs::rand::SystemRandom::new()).map_err(|_| SealError::Crypto)
}

/// A poll's public key (its `seal=` value), checked once when the poll arrives: 32 bytes, and a
/// point X25519 agrees with (a low-order point yields no shared secret), so a bad key is
/// refused before the poll waits, and sealing does not parse it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPublic([u8; PUBLIC_LEN]);

impl PollPublic {
    pub fn parse(hex_key: &str) -> Result<Self, SealError> {
        let mut key = [0u8; PUBLIC_LEN];
        hex::decode_to_slice(hex_key, &mut key).map_err(|_| SealError::PublicKey("64 hex digits expected"))?;
        let unusable = SealError::PublicKey("not a usable X25519 public key");
        agreement::agree_ephemeral(fresh_private()?, UnparsedPublicKey::new(&X25519, &key), unusable, |_| Ok(()))?;
        Ok(Self(key))
    }
}

/// The agent's key for one poll. `open` consumes it: one key, one document.
pub struct PollKey {
    private: EphemeralPrivateKey,
    public: [u8; PUBLIC_LEN],
}

impl core::fmt::Debug for PollKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PollKey").field("public", &hex::encode(self.public)).finish_non_exhaustive()
    }
}

impl PollKey {
    pub fn new() -> Result<Self, SealError> {
        let private = fresh_private()?;
        let public = private.compute_public_key().map_err(|_| SealError::Crypto)?;
        let public = public.as_ref().try_into().map_err(|_| SealError::Crypto)?;
        Ok(Self { private, public })
    }

    /// The `seal=` value of the poll.
    pub fn public_hex(&self) -> String {
        hex::encode(self.public)
    }

    /// Opens `node`'s sealed reply in place; the buffer then holds exactly the document.
    pub fn open(self, node: &str, mut reply: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if reply.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Format("shorter than its header and tag"));
        }
        if &reply[..MAGIC.len()] != MAGIC {
            return Err(SealError::Format("unknown magic"));
        }
        let peer: [u8; PUBLIC_LEN] = reply[MAGIC.len()..HEADER_LEN].try_into().map_err(|_| SealError::Crypto)?;
        let key = document_key(self.private, &peer, &peer, &self.public, node)?;
        let len = key
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), aad(node), &mut reply[HEADER_LEN..])
            .map_err(|_| SealError::Open)?
            .len();
        reply.copy_within(HEADER_LEN..HEADER_LEN + len, 0);
        reply.truncate(len);
        Ok(reply)
    }
}

/// The controller's side: `document` sealed for `node` to the poll's key `agent_public_hex`.
pub fn seal(node: &str, agent: &PollPublic, document: &[u8]) -> Result<Vec<u8>, SealError> {
    let agent_public = agent.0;
    let private = fresh_private()?;
    let public = private.compute_public_key().map_err(|_| SealError::Crypto)?;
    let key = document_key(private, &agent_public, public.as_ref(), &agent_public, node)
        .map_err(|_| SealError::PublicKey("not a usable X25519 public key"))?;
    // Encrypted in place: this buffer holds plaintext only within this call (erased if it fails).
    let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + document.len() + TAG_LEN));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(public.as_ref());
    out.extend_from_slice(document);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), aad(node), &mut out[HEADER_LEN..])
        .map_err(|_| SealError::Crypto)?;
    out.extend_from_slice(tag.as_ref());
    Ok(std::mem::take(&mut *out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{"zsfc:version":7,"key":"00112233445566778899aabbccddeeff"}"#;

    fn sealed_for(node: &str) -> (PollKey, Zeroizing<Vec<u8>>) {
        let key = PollKey::new().unwrap();
        let reply = seal(node, &PollPublic::parse(&key.public_hex()).unwrap(), DOC).unwrap();
        (key, Zeroizing::new(reply))
    }

    #[test]
    fn a_document_sealed_to_a_polls_key_opens_with_that_key_only() {
        let (key, reply) = sealed_for("sf");
        // Nothing of the document in the clear on the way.
        assert!(!reply.windows(8).any(|w| w == b"aabbccdd" || w == b"version\""), "{reply:?}");
        assert_eq!(reply.len(), HEADER_LEN + DOC.len() + TAG_LEN);
        // Another poll's key (say, a replayed reply to an earlier poll) does not open it.
        assert_eq!(PollKey::new().unwrap().open("sf", reply.clone()), Err(SealError::Open));
        assert_eq!(&key.open("sf", reply).unwrap()[..], DOC);
    }

    #[test]
    fn an_altered_or_misaddressed_reply_is_refused() {
        // One flipped bit anywhere after the magic: in the controller's key, the ciphertext, the tag.
        for at in [MAGIC.len() + 3, HEADER_LEN + 3, HEADER_LEN + DOC.len() + 3] {
            let (key, mut reply) = sealed_for("sf");
            reply[at] ^= 1;
            assert_eq!(key.open("sf", reply), Err(SealError::Open), "bit flipped at {at}");
        }
        // A reply for another node: the associated data and the derived key differ.
        let (key, reply) = sealed_for("sf");
        assert_eq!(key.open("egress", reply), Err(SealError::Open));
        // The controller's key swapped for another (a man in the middle without the agent's key).
        let (key, mut reply) = sealed_for("sf");
        reply[MAGIC.len()..HEADER_LEN].copy_from_slice(&PollKey::new().unwrap().public);
        assert_eq!(key.open("sf", reply), Err(SealError::Open));
        // Truncated, empty and foreign bodies are errors, never panics.
        let (key, mut reply) = sealed_for("sf");
        let short = reply.len() - 1;
        reply.truncate(short);
        assert_eq!(key.open("sf", reply), Err(SealError::Open));
        for body in [&b""[..], &MAGIC[..], &[0u8; HEADER_LEN + TAG_LEN][..], br#"{"zsfc:version":1}"#] {
            let (key, _) = sealed_for("sf");
            assert!(matches!(key.open("sf", Zeroizing::new(body.to_vec())), Err(SealError::Format(_))), "{body:?}");
        }
    }

    #[test]
    fn the_controller_refuses_poll_keys_it_cannot_agree_with() {
        assert!(matches!(PollPublic::parse("zz"), Err(SealError::PublicKey(_))));
        assert!(matches!(PollPublic::parse(&"ab".repeat(31)), Err(SealError::PublicKey(_))));
        // The all-zero point and the point of order 8 (RFC 7748 §6.1's low-order points): no
        // shared secret, so refused when the poll arrives.
        let order_8 = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
        for low in ["00".repeat(32), order_8.to_owned()] {
            assert_eq!(PollPublic::parse(&low), Err(SealError::PublicKey("not a usable X25519 public key")), "{low}");
        }
        assert!(PollPublic::parse(&PollKey::new().unwrap().public_hex()).is_ok());
    }
}
