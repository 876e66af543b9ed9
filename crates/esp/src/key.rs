//! Key material of one SA (RFC 4106 §8.1: the AES key followed by a 4-byte salt).
use zeroize::Zeroize;

/// The transforms zsfc speaks. All use a 16-byte ICV (RFC 4106 §6) and an 8-byte explicit IV.
/// The GMAC ones (RFC 4543 ENCR_NULL_AUTH_AES_GMAC) authenticate without encrypting: zsfc uses
/// them between adjacent nodes, where the payload is already protected end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Aes128Gcm,
    Aes256Gcm,
    Aes128Gmac,
    Aes256Gmac,
}

impl Algorithm {
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Aes128Gmac => 16,
            Self::Aes256Gcm | Self::Aes256Gmac => 32,
        }
    }
    /// Authentication only (GMAC): the payload stays in clear and is covered by the ICV.
    pub const fn authenticates_only(self) -> bool {
        matches!(self, Self::Aes128Gmac | Self::Aes256Gmac)
    }
    /// Key plus salt (RFC 4106 §8.1: KEYMAT of 20 or 36 octets).
    pub const fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }
    pub(crate) fn aead(self) -> &'static aws_lc_rs::aead::Algorithm {
        match self {
            Self::Aes128Gcm | Self::Aes128Gmac => &aws_lc_rs::aead::AES_128_GCM,
            Self::Aes256Gcm | Self::Aes256Gmac => &aws_lc_rs::aead::AES_256_GCM,
        }
    }
}

pub(crate) const SALT_LEN: usize = 4;
const MAX_KEYMAT: usize = 36;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key material must be {expected} bytes (key + 4-byte salt), got {got}")]
    Length { expected: usize, got: usize },
    #[error("the crypto library refused the key")]
    Rejected,
}

/// Key and salt of one SA. Zeroized on drop; `Debug` prints no byte of it. The bytes live in
/// one heap allocation: moving an `SaKey` (or the `SaConfig` around it) moves a pointer, so no
/// stale copy of the key is left in a stack frame that drop cannot reach.
#[derive(Clone)]
pub struct SaKey {
    alg: Algorithm,
    bytes: Box<[u8; MAX_KEYMAT]>,
}

impl Zeroize for SaKey {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
    }
}

impl Drop for SaKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl core::fmt::Debug for SaKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SaKey({:?}, <redacted>)", self.alg)
    }
}

impl PartialEq for SaKey {
    /// Constant-time comparison (used by tests and the control plane, never on the hot path).
    fn eq(&self, other: &Self) -> bool {
        self.alg == other.alg
            && aws_lc_rs::constant_time::verify_slices_are_equal(self.keymat(), other.keymat()).is_ok()
    }
}

impl SaKey {
    /// Takes `keymat` = key ‖ salt. The caller should zeroize its own copy.
    pub fn new(alg: Algorithm, keymat: &[u8]) -> Result<Self, KeyError> {
        if keymat.len() != alg.keymat_len() {
            return Err(KeyError::Length { expected: alg.keymat_len(), got: keymat.len() });
        }
        let mut bytes = Box::new([0u8; MAX_KEYMAT]);
        bytes[..keymat.len()].copy_from_slice(keymat);
        Ok(Self { alg, bytes })
    }

    /// Fresh key material from the OS CSPRNG (through AWS-LC).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut bytes = Box::new([0u8; MAX_KEYMAT]);
        aws_lc_rs::rand::fill(&mut bytes[..alg.keymat_len()]).map_err(|_| KeyError::Rejected)?;
        Ok(Self { alg, bytes })
    }

    /// Fresh key material as bytes, for a controller that must hand it to other nodes.
    pub fn generate_keymat(alg: Algorithm) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        let mut v = zeroize::Zeroizing::new(vec![0u8; alg.keymat_len()]);
        aws_lc_rs::rand::fill(&mut v).map_err(|_| KeyError::Rejected)?;
        Ok(v)
    }

    /// The key material of worker lane `lane` of an SA whose configured material is `keymat`:
    /// lane 0 uses `keymat` itself; every other lane gets its own key and salt from
    /// HKDF-SHA256(salt = "zsfc lane", ikm = keymat, info = lane). Both ends of the SA derive
    /// the same; no two lanes share a key, so no GCM nonce is ever used twice under one key.
    pub fn lane_keymat(keymat: &[u8], lane: u32) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        let mut out = zeroize::Zeroizing::new(keymat.to_vec());
        if lane == 0 {
            return Ok(out);
        }
        struct Len(usize);
        impl aws_lc_rs::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let info = lane.to_be_bytes();
        let info = [&info[..]];
        aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"zsfc lane")
            .extract(keymat)
            .expand(&info, Len(out.len()))
            .and_then(|okm| okm.fill(&mut out))
            .map_err(|_| KeyError::Rejected)?;
        Ok(out)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn keymat(&self) -> &[u8] {
        &self.bytes[..self.alg.keymat_len()]
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.bytes[..self.alg.key_len()]
    }

    pub(crate) fn salt(&self) -> [u8; SALT_LEN] {
        let k = self.alg.key_len();
        [self.bytes[k], self.bytes[k + 1], self.bytes[k + 2], self.bytes[k + 3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let k = SaKey::new(Algorithm::Aes128Gcm, &[0x41; 20]).unwrap();
        let s = format!("{k:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains("65") && !s.contains("41"));
    }

    #[test]
    fn lanes_get_distinct_deterministic_keys() {
        let base = [0x11u8; 36];
        assert_eq!(&SaKey::lane_keymat(&base, 0).unwrap()[..], &base[..]);
        let l1 = SaKey::lane_keymat(&base, 1).unwrap();
        let l2 = SaKey::lane_keymat(&base, 2).unwrap();
        assert_eq!(l1.len(), 36);
        assert_ne!(&l1[..], &base[..]);
        assert_ne!(&l1[..], &l2[..]);
        assert_eq!(&SaKey::lane_keymat(&base, 1).unwrap()[..], &l1[..], "both ends derive the same");
        assert_ne!(&SaKey::lane_keymat(&[0x12; 36], 1).unwrap()[..], &l1[..]);
        assert_eq!(SaKey::lane_keymat(&[0x11; 20], 3).unwrap().len(), 20);
    }

    #[test]
    fn rejects_wrong_keymat_length() {
        assert_eq!(SaKey::new(Algorithm::Aes256Gcm, &[0; 32]).unwrap_err(), KeyError::Length { expected: 36, got: 32 });
    }

    #[test]
    fn zeroize_clears_every_key_byte() {
        let mut k = SaKey::new(Algorithm::Aes256Gcm, &[0x5a; 36]).unwrap();
        k.zeroize();
        assert!(k.bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn generated_keys_differ() {
        let a = SaKey::generate(Algorithm::Aes256Gcm).unwrap();
        let b = SaKey::generate(Algorithm::Aes256Gcm).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.salt().len(), 4);
    }
}
