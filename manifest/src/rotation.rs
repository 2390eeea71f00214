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
//!
//! ## The chain on a provider
//!
//! A provider tree carries every rotation it ever published, as static
//! files beside the manifests, so any HTTP server can serve them:
//!
//! ```text
//! TREE/rotations/index.json      {"type": "phase.rotations", "latest": 2}
//! TREE/rotations/1.json          the envelope of the rotation to generation 1
//! TREE/rotations/2.json          … to generation 2
//! ```
//!
//! A machine starts from the trust store baked into its image and applies
//! `<generation + 1>.json` … `<latest>.json` in order ([`follow`]) before it
//! verifies a manifest, so an image built before a rotation still boots
//! manifests signed only by the new keys. The index is not signed: it only
//! says how far to look. A lie can only stop the chain early (and a manifest
//! signed by newer keys is then refused) or send the machine looking for
//! steps that are not there; it cannot add a key, since every step must be
//! signed by the keys the machine already trusts. At most [`MAX_CHAIN`]
//! steps are followed in one boot; the first bad step stops the chain and
//! is reported with the store reached so far.
//!
//! Nothing is remembered between boots yet, so a mirror that omits the chain
//! leaves a machine on its baked keys (SECURITY.md, row 13).

use serde::{Deserialize, Serialize};

use crate::ManifestError;
use crate::envelope::Envelope;
use crate::key::KeyRecord;
use crate::schema::{SPEC_VERSION, check_header};
use crate::trust::{TrustStore, check_keys, check_signatures};

/// The `type` of a rotation payload.
pub const ROTATION_TYPE: &str = "phase.rotation";
/// The `type` of a provider's rotation index.
pub const INDEX_TYPE: &str = "phase.rotations";
/// Where a provider tree keeps its rotation index, relative to its root.
pub const INDEX_PATH: &str = "rotations/index.json";
/// The largest index read: it holds one number.
pub const MAX_INDEX_SIZE: usize = 4096;
/// The most rotations one boot follows. A fleet rotates keys rarely; the cap
/// bounds what a hostile index can make a machine fetch.
pub const MAX_CHAIN: u64 = 16;

/// Where the rotation to `generation` lives, relative to the tree root.
pub fn step_path(generation: u64) -> String {
    format!("rotations/{generation}.json")
}

/// A provider's rotation index: the newest generation it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    #[serde(rename = "type")]
    pub kind: String,
    pub latest: u64,
}

impl Index {
    pub fn new(latest: u64) -> Index {
        Index {
            kind: INDEX_TYPE.into(),
            latest,
        }
    }

    /// Parses an index, refusing one over [`MAX_INDEX_SIZE`] or of another type.
    pub fn from_json(bytes: &[u8]) -> Result<Index, ManifestError> {
        if bytes.len() > MAX_INDEX_SIZE {
            return Err(ManifestError::RotationIndexTooLarge {
                size: bytes.len(),
                max: MAX_INDEX_SIZE,
            });
        }
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::RotationIndexSyntax { source })?;
        if index.kind != INDEX_TYPE {
            return Err(ManifestError::PayloadType {
                found: index.kind,
                expected: INDEX_TYPE,
            });
        }
        Ok(index)
    }

    /// The JSON form with a trailing newline.
    pub fn to_json(&self) -> String {
        // A string and an integer always serialise.
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Where following a chain ended.
#[derive(Debug)]
pub struct Chain {
    /// The store reached: the starting one when nothing applied.
    pub store: TrustStore,
    /// The generations applied, in order.
    pub applied: Vec<u64>,
    /// Why the chain stopped before `latest`, if it did.
    pub stopped: Option<ManifestError>,
}

/// Follows a provider's chain from `trust` up to generation `latest`:
/// `fetch(path)` returns the bytes of a step ([`step_path`]) or why it could
/// not. Steps at or below the store's generation are not fetched; more than
/// [`MAX_CHAIN`] are not followed.
pub fn follow(
    trust: &TrustStore,
    latest: u64,
    mut fetch: impl FnMut(&str) -> Result<Vec<u8>, String>,
) -> Chain {
    let mut chain = Chain {
        store: trust.clone(),
        applied: Vec::new(),
        stopped: None,
    };
    if latest <= trust.generation {
        return chain;
    }
    let end = latest.min(trust.generation.saturating_add(MAX_CHAIN));
    // `end` > generation here, and generation + 1 cannot overflow since
    // `end` ≤ u64::MAX.
    for generation in trust.generation + 1..=end {
        let path = step_path(generation);
        let step = fetch(&path)
            .map_err(|reason| ManifestError::RotationFetch {
                path: path.clone(),
                reason,
            })
            .and_then(|bytes| apply(&chain.store, &bytes));
        match step {
            Ok(store) => {
                chain.store = store;
                chain.applied.push(generation);
            }
            Err(source) => {
                chain.stopped = Some(ManifestError::RotationStep {
                    generation,
                    path,
                    source: Box::new(source),
                });
                return chain;
            }
        }
    }
    if end < latest {
        chain.stopped = Some(ManifestError::RotationChainTooLong {
            from: trust.generation,
            latest,
            max: MAX_CHAIN,
        });
    }
    chain
}

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
        serde_json::from_slice(payload).map_err(|source| ManifestError::PayloadSyntax { source })
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
    .map_err(|e| ManifestError::RotationOldKeys { cause: Box::new(e) })?;
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
    .map_err(|e| ManifestError::RotationNewKeys { cause: Box::new(e) })?;
    Ok(trust.rotate(new_keys, rotation.threshold, rotation.generation))
}
