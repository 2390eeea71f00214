//! The trust material an image carries at
//! `phase_initramfs::layout::TRUST_STORE` (`/etc/phase/trust.json`): which keys, how many of them, and
//! the floors below which nothing is accepted. Nothing on the cmdline or from
//! DHCP can change it; a key rotation replaces keys and threshold only.
//!
//! ```json
//! {
//!   "keys": [ { "key_id": "<64 hex>", "public_key": "<64 hex>" } ],
//!   "threshold": 1,
//!   "generation": 0,
//!   "version_floor": 0,
//!   "max_version_jump": 1000,
//!   "time_floor": 1700000000
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::ManifestError;
use crate::envelope::SignatureEntry;
use crate::key::{KeyId, KeyRecord, PublicKey};

/// The most keys a trust store (or a rotation) may name.
pub const MAX_KEYS: usize = 32;

/// What an image's `[trust]` holds when its spec leaves a field out (mkimage),
/// and what `phase verify --trust` judges by unless told otherwise: the two
/// must agree, or the host tool would pass manifests every default image
/// refuses.
pub const DEFAULT_THRESHOLD: usize = 1;
/// See [`DEFAULT_THRESHOLD`].
pub const DEFAULT_VERSION_FLOOR: u64 = 0;
/// See [`DEFAULT_THRESHOLD`].
pub const DEFAULT_MAX_VERSION_JUMP: u64 = 1000;

/// Checked trust material: distinct strong keys, and a threshold between 1
/// and their number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    keys: Vec<PublicKey>,
    threshold: usize,
    /// The key generation: 0 as built, +1 per accepted rotation.
    pub generation: u64,
    /// Manifests with a lower `version` are refused.
    pub version_floor: u64,
    /// Manifests more than this far above the floor are refused.
    pub max_version_jump: u64,
    /// Seconds since the epoch; the expiry check never uses an earlier time.
    /// mkimage sets it to the image build time.
    pub time_floor: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustJson {
    keys: Vec<KeyRecord>,
    threshold: usize,
    #[serde(default)]
    generation: u64,
    version_floor: u64,
    max_version_jump: u64,
    time_floor: u64,
}

/// Checks a key list and threshold: 1..=[`MAX_KEYS`] distinct strong keys,
/// 1 ≤ threshold ≤ keys.
pub(crate) fn check_keys(
    records: &[KeyRecord],
    threshold: usize,
) -> Result<Vec<PublicKey>, ManifestError> {
    if records.is_empty() || records.len() > MAX_KEYS {
        return Err(ManifestError::KeyCount {
            count: records.len(),
            max: MAX_KEYS,
        });
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(records.len());
    for record in records {
        let key = record.to_public_key()?;
        if keys.iter().any(|k| k.id() == key.id()) {
            return Err(ManifestError::KeyDuplicate {
                key_id: record.key_id.clone(),
            });
        }
        keys.push(key);
    }
    if threshold == 0 || threshold > keys.len() {
        return Err(ManifestError::Threshold {
            threshold,
            keys: keys.len(),
        });
    }
    Ok(keys)
}

/// Counts the distinct keys of `keys` whose signature over exactly `payload`
/// is in `signatures`, and refuses unless at least `threshold` did.
///
/// A key counts once however often it appears; a signature under an unknown
/// id, or one that does not verify, counts for nothing. Every signature that
/// did not count is named in the error.
pub fn check_signatures(
    keys: &[PublicKey],
    threshold: usize,
    payload: &[u8],
    signatures: &[SignatureEntry],
) -> Result<Vec<KeyId>, ManifestError> {
    let mut signed: Vec<KeyId> = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    for entry in signatures {
        let short = &entry.key_id.to_string()[..16];
        let Some(key) = keys.iter().find(|k| k.id() == entry.key_id) else {
            rejected.push(format!("key {short}…: not trusted"));
            continue;
        };
        if signed.contains(&entry.key_id) {
            rejected.push(format!("key {short}…: counted already"));
            continue;
        }
        if key.verify(payload, &entry.sig) {
            signed.push(entry.key_id);
        } else {
            rejected.push(format!("key {short}…: signature does not verify"));
        }
    }
    if signed.len() >= threshold {
        return Ok(signed);
    }
    if signatures.is_empty() {
        rejected.push("no signatures".into());
    }
    Err(ManifestError::SignatureThreshold {
        valid: signed.len(),
        required: threshold,
        rejected: rejected.join("; "),
    })
}

impl TrustStore {
    /// Builds and checks a trust store.
    pub fn new(
        keys: &[KeyRecord],
        threshold: usize,
        version_floor: u64,
        max_version_jump: u64,
        time_floor: u64,
    ) -> Result<TrustStore, ManifestError> {
        let keys = check_keys(keys, threshold)?;
        if max_version_jump == 0 {
            return Err(ManifestError::MaxJumpZero);
        }
        Ok(TrustStore {
            keys,
            threshold,
            generation: 0,
            version_floor,
            max_version_jump,
            time_floor,
        })
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// How many distinct trusted keys must sign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Replaces keys and threshold (after a rotation was verified).
    pub(crate) fn rotate(&self, keys: Vec<PublicKey>, threshold: usize, generation: u64) -> Self {
        TrustStore {
            keys,
            threshold,
            generation,
            ..self.clone()
        }
    }

    /// Parses and checks the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<TrustStore, ManifestError> {
        let json: TrustJson = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::TrustSyntax { source })?;
        let mut store = TrustStore::new(
            &json.keys,
            json.threshold,
            json.version_floor,
            json.max_version_jump,
            json.time_floor,
        )?;
        store.generation = json.generation;
        Ok(store)
    }

    /// The JSON form with a trailing newline. Keys keep their order, so the
    /// same store always gives the same bytes (mkimage reproducibility).
    pub fn to_json(&self) -> String {
        let json = TrustJson {
            keys: self.keys.iter().map(PublicKey::record).collect(),
            threshold: self.threshold,
            generation: self.generation,
            version_floor: self.version_floor,
            max_version_jump: self.max_version_jump,
            time_floor: self.time_floor,
        };
        // Strings and integers always serialise.
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn record(seed: u8) -> KeyRecord {
        PublicKey::from_bytes(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
        .unwrap()
        .record()
    }

    #[test]
    fn json_round_trips_byte_for_byte() {
        let mut store = TrustStore::new(&[record(1), record(2)], 2, 7, 100, 1_700_000_000).unwrap();
        store.generation = 3;
        let json = store.to_json();
        let back = TrustStore::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, store);
        assert_eq!(back.to_json(), json);
    }

    #[test]
    fn generation_defaults_to_zero() {
        let json = format!(
            r#"{{"keys":[{}],"threshold":1,"version_floor":0,"max_version_jump":1,"time_floor":0}}"#,
            serde_json::to_string(&record(1)).unwrap()
        );
        assert_eq!(
            TrustStore::from_json(json.as_bytes()).unwrap().generation,
            0
        );
    }

    #[test]
    fn bad_stores_are_refused_with_the_offending_value() {
        let too_many: Vec<KeyRecord> = (1..=33).map(record).collect();
        let table: Vec<(Vec<KeyRecord>, usize, u64, String)> = vec![
            (vec![], 1, 1, "0 keys, outside 1..=32".into()),
            (too_many, 1, 1, "33 keys, outside 1..=32".into()),
            (
                vec![record(1), record(1)],
                1,
                1,
                format!("key {} is listed twice", record(1).key_id),
            ),
            (vec![record(1)], 0, 1, "threshold 0 is outside 1..=1".into()),
            (
                vec![record(1), record(2)],
                3,
                1,
                "threshold 3 is outside 1..=2".into(),
            ),
            (vec![record(1)], 1, 0, "max_version_jump is 0".into()),
        ];
        for (keys, threshold, jump, expected) in table {
            let error = TrustStore::new(&keys, threshold, 0, jump, 0)
                .unwrap_err()
                .to_string();
            assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
        }
        let unknown_field = r#"{"keys":[],"threshold":1,"version_floor":0,"max_version_jump":1,"time_floor":0,"insecure":true}"#;
        assert!(matches!(
            TrustStore::from_json(unknown_field.as_bytes()),
            Err(ManifestError::TrustSyntax { .. })
        ));
    }
}
