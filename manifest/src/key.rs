//! Ed25519 public keys, their ids, and the one verification call the project
//! makes: [`VerifyingKey::verify_strict`].

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ManifestError;
use crate::encoding::{hex, unhex};

/// A key id: the SHA-256 of the 32 raw public-key bytes, so anyone can
/// recompute it (`sha256sum` of the raw key). It only finds a key; trust comes
/// from the key itself being in the trust store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of a raw public key.
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        KeyId(Sha256::digest(public_key).into())
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<KeyId> {
        unhex::<32>(text).map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A public key fit to be trusted: on the curve and not of small order.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    /// Accepts 32 raw bytes, refusing points off the curve and the small-order
    /// points that would make one forged signature verify for many messages.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, ManifestError> {
        let id = KeyId::of(bytes);
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ManifestError::PublicKeyInvalid {
            key_id: id.to_string(),
        })?;
        if key.is_weak() {
            return Err(ManifestError::PublicKeyWeak {
                key_id: id.to_string(),
            });
        }
        Ok(PublicKey { key, id })
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `signature` is this key's signature of exactly `message`, by
    /// RFC 8032 §5.1.7 with the strict checks: canonical `s` and `R`, and no
    /// small-order `R` or key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// The JSON form used in public-key files and trust stores.
    pub fn record(&self) -> KeyRecord {
        KeyRecord {
            key_id: self.id.to_string(),
            public_key: hex(&self.to_bytes()),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// A public key as JSON: `{"key_id": "<64 hex>", "public_key": "<64 hex>"}`.
/// `phase keygen` writes one per key; a trust store lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub key_id: String,
    pub public_key: String,
}

impl KeyRecord {
    /// Checks the record: the key is valid and strong, and the id is its own.
    pub fn to_public_key(&self) -> Result<PublicKey, ManifestError> {
        let bytes =
            unhex::<32>(&self.public_key).ok_or_else(|| ManifestError::PublicKeySyntax {
                key_id: self.key_id.clone(),
                public_key: self.public_key.clone(),
            })?;
        let key = PublicKey::from_bytes(&bytes)?;
        if key.id().to_string() != self.key_id {
            return Err(ManifestError::KeyIdMismatch {
                key_id: self.key_id.clone(),
                computed: key.id().to_string(),
            });
        }
        Ok(key)
    }

    /// Parses the JSON form of one key.
    pub fn from_json(bytes: &[u8]) -> Result<PublicKey, ManifestError> {
        let record: KeyRecord = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::TrustSyntax { source })?;
        record.to_public_key()
    }

    /// The JSON form with a trailing newline.
    pub fn to_json(&self) -> String {
        // Two strings always serialise.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey, Verifier};

    use super::*;

    fn bytes<const N: usize>(text: &str) -> [u8; N] {
        unhex::<N>(text).unwrap()
    }

    /// RFC 8032 §7.1, tests 1–3 and SHA(abc): secret key, public key,
    /// message, signature.
    const RFC8032: [(&str, &str, &str, &str); 4] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
        (
            "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
            "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        ),
    ];

    fn message(text: &str) -> Vec<u8> {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc8032_vectors_sign_and_verify() {
        for (secret, public, msg, sig) in RFC8032 {
            let signing = SigningKey::from_bytes(&bytes::<32>(secret));
            let msg = message(msg);
            assert_eq!(hex(signing.verifying_key().as_bytes()), public);
            assert_eq!(hex(&signing.sign(&msg).to_bytes()), sig);
            let key = PublicKey::from_bytes(&bytes::<32>(public)).unwrap();
            assert!(key.verify(&msg, &bytes::<64>(sig)), "{public}");
            // One flipped bit anywhere in the message or signature breaks it.
            let mut flipped = bytes::<64>(sig);
            flipped[63] ^= 0x01;
            assert!(!key.verify(&msg, &flipped));
            let mut longer = msg.clone();
            longer.push(0);
            assert!(!key.verify(&longer, &bytes::<64>(sig)));
        }
    }

    /// The eight small-order points of edwards25519 (with both signs of x
    /// where x ≠ 0): the identity, the point of order 2, two of order 4 and
    /// four of order 8.
    pub(crate) const SMALL_ORDER: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ];

    #[test]
    fn small_order_keys_are_refused_though_a_lax_verifier_takes_their_forgeries() {
        // The forgery: R = the identity, s = 0. For the identity key the
        // equation [s]B = R + [k]A holds for every message.
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let forged_sig = Signature::from_bytes(&forged);
        let identity = VerifyingKey::from_bytes(&bytes::<32>(SMALL_ORDER[0])).unwrap();
        for msg in [&b"kernel"[..], b"any other payload"] {
            // Naive: the unchecked RFC 8032 equation accepts the forgery.
            assert!(identity.verify(msg, &forged_sig).is_ok());
            // Ours: strict verification refuses it.
            assert!(identity.verify_strict(msg, &forged_sig).is_err());
        }
        for point in SMALL_ORDER {
            let raw = bytes::<32>(point);
            // Naive: the bytes decode to a curve point, so a lax loader keeps it.
            assert!(VerifyingKey::from_bytes(&raw).is_ok(), "{point}");
            // Ours: refused as a key before it can verify anything.
            match PublicKey::from_bytes(&raw) {
                Err(ManifestError::PublicKeyWeak { key_id }) => {
                    assert_eq!(key_id, KeyId::of(&raw).to_string());
                }
                other => panic!("{point}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_canonical_s_is_refused_though_the_reduced_equation_holds() {
        use curve25519_dalek::scalar::Scalar;
        // s + ℓ is a second encoding of the same signature (malleability).
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let (secret, public, msg, sig) = RFC8032[0];
        let _ = secret;
        let sig = bytes::<64>(sig);
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            s_plus_l[i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "s + ℓ fits in 256 bits for this vector");
        let mut malleated = sig;
        malleated[32..].copy_from_slice(&s_plus_l);
        // Naive: reducing s mod ℓ first gives back the original scalar, so a
        // verifier that reduces accepts the second encoding.
        assert_eq!(
            Scalar::from_bytes_mod_order(s_plus_l),
            Scalar::from_bytes_mod_order(sig[32..].try_into().unwrap())
        );
        let naive = naive_verify(&bytes::<32>(public), &message(msg), &malleated);
        assert!(naive);
        // Ours refuses it.
        let key = PublicKey::from_bytes(&bytes::<32>(public)).unwrap();
        assert!(!key.verify(&message(msg), &malleated));
        assert!(key.verify(&message(msg), &sig));
    }

    /// A textbook verifier that skips the canonical-encoding checks:
    /// [s mod ℓ]B == R + [k]A, compared as points.
    fn naive_verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
        use curve25519_dalek::scalar::Scalar;
        use sha2::Sha512;
        let (Some(a), Some(r)) = (
            CompressedEdwardsY(*public).decompress(),
            CompressedEdwardsY(sig[..32].try_into().unwrap()).decompress(),
        ) else {
            return false;
        };
        let s = Scalar::from_bytes_mod_order(sig[32..].try_into().unwrap());
        let mut h = Sha512::new();
        h.update(&sig[..32]);
        h.update(public);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        EdwardsPoint::mul_base(&s) == r + a * k
    }

    #[test]
    fn key_records_round_trip_and_bind_id_to_key() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
        let json = key.record().to_json();
        assert_eq!(KeyRecord::from_json(json.as_bytes()).unwrap(), key);

        let other = PublicKey::from_bytes(
            SigningKey::from_bytes(&[8u8; 32])
                .verifying_key()
                .as_bytes(),
        )
        .unwrap();
        let table = [
            (
                KeyRecord {
                    key_id: other.id().to_string(),
                    ..key.record()
                },
                "does not match its public key",
            ),
            (
                KeyRecord {
                    public_key: key.record().public_key.to_uppercase(),
                    ..key.record()
                },
                "is not 64 lowercase hex digits",
            ),
            (
                KeyRecord {
                    key_id: KeyId::of(&bytes::<32>(SMALL_ORDER[4])).to_string(),
                    public_key: SMALL_ORDER[4].into(),
                },
                "small order",
            ),
        ];
        for (record, reason) in table {
            let error = record.to_public_key().unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
        let unknown = r#"{"key_id":"00","public_key":"00","comment":"x"}"#;
        assert!(KeyRecord::from_json(unknown.as_bytes()).is_err());
    }
}
