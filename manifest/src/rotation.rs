//! Key rotation: a signed document that replaces the trusted keys and
//! threshold. It is accepted only when the current threshold of current keys
//! AND the new threshold of its own new keys both signed it, so neither a
//! stolen old key set nor a set of fresh keys alone can take over.
//!
//! Payload (in an ordinary [`Envelope`]):
//!
//! ```json
//! {
//!   "type": "phase.rotation",
//!   "spec_version": "1.0",
//!   "generation": 1,
//!   "issued_at": 1700000000,
//!   "keys": [ { "key_id": "<64 hex>", "public_key": "<64 hex>" } ],
//!   "threshold": 2
//! }
//! ```
//!
//! `generation` must be the current one plus 1, so a rotation applies once,
//! in order, and an old one cannot be replayed. The floors of the trust store
//! are kept.

use serde::{Deserialize, Serialize};

use crate::ManifestError;
use crate::envelope::Envelope;
use crate::key::KeyRecord;
use crate::schema::{SPEC_VERSION, check_header};
use crate::trust::{TrustStore, check_keys, check_signatures};

/// The `type` of a rotation payload.
pub const ROTATION_TYPE: &str = "phase.rotation";

/// The signed payload of a key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    #[serde(rename = "type")]
    pub kind: String,
    pub spec_version: String,
    pub generation: u64,
    pub issued_at: u64,
    pub keys: Vec<KeyRecord>,
    pub threshold: usize,
}

impl Rotation {
    /// A rotation to `keys` / `threshold` from a store at `from_generation`.
    pub fn new(
        from_generation: u64,
        issued_at: u64,
        keys: Vec<KeyRecord>,
        threshold: usize,
    ) -> Self {
        Rotation {
            kind: ROTATION_TYPE.into(),
            spec_version: SPEC_VERSION.into(),
            generation: from_generation.saturating_add(1),
            issued_at,
            keys,
            threshold,
        }
    }

    /// Parses and checks a payload (after the header check).
    pub fn from_payload(payload: &[u8]) -> Result<Rotation, ManifestError> {
        check_header(payload, ROTATION_TYPE)?;
        serde_json::from_slice(payload).map_err(ManifestError::PayloadSyntax)
    }

    /// The payload bytes to sign.
    pub fn to_payload(&self) -> Vec<u8> {
        // Strings and integers always serialise.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Verifies a rotation envelope against `trust` and returns the rotated store.
pub fn apply(trust: &TrustStore, envelope: &[u8]) -> Result<TrustStore, ManifestError> {
    let envelope = Envelope::from_json(envelope)?;
    // The current keys first: nothing of the payload is read until the keys
    // this machine already trusts have vouched for it.
    check_signatures(
        trust.keys(),
        trust.threshold(),
        &envelope.payload,
        &envelope.signatures,
    )
    .map_err(|e| ManifestError::RotationOldKeys(Box::new(e)))?;
    let rotation = Rotation::from_payload(&envelope.payload)?;
    let expected = trust.generation.saturating_add(1);
    if rotation.generation != expected {
        return Err(ManifestError::RotationGeneration {
            found: rotation.generation,
            expected,
        });
    }
    let new_keys = check_keys(&rotation.keys, rotation.threshold)?;
    check_signatures(
        &new_keys,
        rotation.threshold,
        &envelope.payload,
        &envelope.signatures,
    )
    .map_err(|e| ManifestError::RotationNewKeys(Box::new(e)))?;
    Ok(trust.rotate(new_keys, rotation.threshold, rotation.generation))
}
