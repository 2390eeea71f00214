//! The envelope: raw payload bytes plus signatures over exactly those bytes.
//!
//! ```json
//! {
//!   "payload": "<standard base64 of the payload bytes>",
//!   "signatures": [ { "key_id": "<64 hex>", "sig": "<128 hex>" } ]
//! }
//! ```
//!
//! The payload travels as base64 so that no JSON re-encoding can change the
//! bytes that were signed: verifiers check the decoded bytes, and only then
//! parse them.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ManifestError;
use crate::encoding::{base64, hex, unbase64, unhex};
use crate::key::KeyId;

/// The largest envelope accepted, checked before any parsing. A manifest with
/// four artifacts, a full-length cmdline and a few signatures is under 8 KiB.
pub const MAX_ENVELOPE_SIZE: usize = 64 * 1024;
/// The most signatures one envelope may carry: enough for a rotation signed
/// by two full key sets ([`crate::trust::MAX_KEYS`] each), and a bound on the
/// verification work one envelope can cause (64 verifications, ~3 ms).
pub const MAX_SIGNATURES: usize = 2 * crate::trust::MAX_KEYS;

/// One signature as it appears in an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    pub key_id: KeyId,
    pub sig: [u8; 64],
}

/// A parsed envelope. Nothing in it is trusted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload: Vec<u8>,
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    payload: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson {
    key_id: String,
    sig: String,
}

impl Envelope {
    /// Parses an envelope, refusing anything over [`MAX_ENVELOPE_SIZE`]
    /// before reading a byte of it.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, ManifestError> {
        if bytes.len() > MAX_ENVELOPE_SIZE {
            return Err(ManifestError::EnvelopeTooLarge {
                size: bytes.len(),
                max: MAX_ENVELOPE_SIZE,
            });
        }
        let json: EnvelopeJson = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::EnvelopeSyntax { source })?;
        if json.signatures.len() > MAX_SIGNATURES {
            return Err(ManifestError::TooManySignatures {
                count: json.signatures.len(),
                max: MAX_SIGNATURES,
            });
        }
        let payload = unbase64(&json.payload).map_err(|e| ManifestError::PayloadEncoding {
            reason: e.to_string(),
        })?;
        let signatures = json
            .signatures
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                let key_id = KeyId::from_hex(&s.key_id).ok_or(ManifestError::KeyIdSyntax {
                    index,
                    key_id: s.key_id.clone(),
                })?;
                let sig = unhex::<64>(&s.sig).ok_or(ManifestError::SignatureSyntax {
                    index,
                    key_id: s.key_id,
                })?;
                Ok(SignatureEntry { key_id, sig })
            })
            .collect::<Result<_, ManifestError>>()?;
        Ok(Envelope {
            payload,
            signatures,
        })
    }

    /// Signs `payload` with each key, in order.
    pub fn sign(payload: Vec<u8>, keys: &[&SigningKey]) -> Envelope {
        let signatures = keys
            .iter()
            .map(|key| SignatureEntry {
                key_id: KeyId::of(key.verifying_key().as_bytes()),
                sig: key.sign(&payload).to_bytes(),
            })
            .collect();
        Envelope {
            payload,
            signatures,
        }
    }

    /// The JSON form with a trailing newline.
    pub fn to_json(&self) -> String {
        let json = EnvelopeJson {
            payload: base64(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| SignatureJson {
                    key_id: s.key_id.to_string(),
                    sig: hex(&s.sig),
                })
                .collect(),
        };
        // Strings only: serialisation cannot fail.
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let env = Envelope::sign(b"{\"x\":1}\n".to_vec(), &[&key]);
        assert_eq!(Envelope::from_json(env.to_json().as_bytes()).unwrap(), env);
    }

    #[test]
    fn malformed_envelopes_are_refused_with_the_offending_value() {
        let id = "ab".repeat(32);
        let sig = "cd".repeat(64);
        let one = |key_id: &str, sig: &str| format!(r#"{{"key_id":"{key_id}","sig":"{sig}"}}"#);
        let env = |sigs: &str| format!(r#"{{"payload":"e30=","signatures":[{sigs}]}}"#);
        let table: Vec<(String, String)> = vec![
            (r#"{"payload":"e30="}"#.into(), "expected shape".into()),
            (
                r#"{"payload":"e30=","signatures":[],"extra":1}"#.into(),
                "expected shape".into(),
            ),
            (
                r#"{"payload":"e30","signatures":[]}"#.into(),
                "length 3 is not a multiple of 4".into(),
            ),
            (env(&one("xy", &sig)), "signature 0: key id \"xy\"".into()),
            (env(&one(&id, "00")), format!("signature 0 (key {id})")),
            (
                env(&vec![one(&id, &sig); 65].join(",")),
                "carries 65 signatures, more than the 64".into(),
            ),
        ];
        for (input, expected) in table {
            let error = Envelope::from_json(input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
        }
    }
}
