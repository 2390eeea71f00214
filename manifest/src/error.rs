//! Every reason a manifest, a trust store or a rotation document is refused.

use serde::Serialize;
use thiserror::Error;

use crate::schema::Arch;

/// Why verification refused its input. One variant per reason; each names the
/// offending value so that the one-line console report is enough to act on.
///
/// It also serialises as data — `{"kind": "rollback", "version": 4,
/// "floor": 5}` — so a failure event carries the reason and the values
/// compared, and a test can assert on them instead of on the text.
#[derive(Debug, Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ManifestError {
    // The envelope, before any signature is checked.
    #[error("envelope is {size} bytes, more than the {max}-byte cap")]
    EnvelopeTooLarge { size: usize, max: usize },
    #[error("envelope is not valid JSON of the expected shape")]
    EnvelopeSyntax {
        #[source]
        #[serde(skip)]
        source: serde_json::Error,
    },
    #[error("envelope payload is not canonical base64: {reason}")]
    PayloadEncoding { reason: String },
    #[error("envelope carries {count} signatures, more than the {max} allowed")]
    TooManySignatures { count: usize, max: usize },
    #[error("signature {index}: key id {key_id:?} is not 64 lowercase hex digits")]
    KeyIdSyntax { index: usize, key_id: String },
    #[error("signature {index} (key {key_id}): not 128 lowercase hex digits")]
    SignatureSyntax { index: usize, key_id: String },

    // Signatures.
    #[error("{valid} of the required {required} trusted keys signed the payload ({rejected})")]
    SignatureThreshold {
        valid: usize,
        required: usize,
        /// One entry per signature that did not count, with its reason.
        rejected: String,
    },

    // The payload, after its signatures were accepted.
    #[error("payload type is {found:?}, expected {expected:?}")]
    PayloadType {
        found: String,
        expected: &'static str,
    },
    #[error("spec_version {found:?} is not supported (this verifier reads {supported_major}.x)")]
    SpecVersion { found: String, supported_major: u32 },
    #[error("payload is not valid JSON of the expected shape")]
    PayloadSyntax {
        #[source]
        #[serde(skip)]
        source: serde_json::Error,
    },
    #[error(
        "{field} {value:?} is not 1–64 letters, digits, '-', '_' or '.' (not starting with '.')"
    )]
    NameSyntax { field: &'static str, value: String },
    #[error("unknown arch {found:?} (expected x86_64 or aarch64{hint})")]
    ArchUnknown { found: String, hint: &'static str },
    #[error("floor {floor} is above the version {version}: a release cannot forbid itself")]
    FloorAboveVersion { floor: u64, version: u64 },
    #[error("issued_at {issued_at} is after expires_at {expires_at}")]
    Validity { issued_at: u64, expires_at: u64 },
    #[error("cmdline is {len} bytes, more than the kernel's {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("cmdline has control character {byte:#04x} at offset {offset}")]
    CmdlineControl { byte: u8, offset: usize },
    #[error("artifact {name}: path {path:?} is not a relative path of [A-Za-z0-9._-] segments")]
    ArtifactPath { name: &'static str, path: String },
    #[error("artifact {name}: sha256 {value:?} is not 64 lowercase hex digits")]
    ArtifactDigestSyntax { name: &'static str, value: String },
    #[error("artifact {name}: size {size} is outside 1..={max}")]
    ArtifactSize {
        name: &'static str,
        size: u64,
        max: u64,
    },
    #[error("hand-off {handoff} {problem} {name}")]
    HandoffArtifacts {
        handoff: &'static str,
        problem: &'static str,
        name: &'static str,
    },
    #[error("hand-off switch_root takes no cmdline, got {cmdline:?}")]
    HandoffCmdline { cmdline: String },

    // Policy.
    #[error("manifest is for channel {found:?}, this machine follows {expected:?}")]
    ChannelMismatch { found: String, expected: String },
    #[error("manifest is for arch {found}, this machine is {expected}")]
    ArchMismatch { found: Arch, expected: Arch },
    #[error("manifest is for board {found:?}, this machine is {expected:?}")]
    BoardMismatch {
        found: String,
        expected: Option<String>,
    },
    #[error("version {version} is below the floor {floor}, {floor_source} (rollback)")]
    Rollback {
        version: u64,
        floor: u64,
        /// Which floor refused: the image's own, or the one stored on the
        /// machine (and where). Named `source` in the data; not `source`
        /// here, where thiserror would take it for the error's cause.
        #[serde(rename = "source")]
        floor_source: FloorSource,
    },
    #[error("version {version} jumps more than {max_jump} past the floor {floor}")]
    VersionJump {
        version: u64,
        floor: u64,
        max_jump: u64,
    },
    #[error("expired: expires_at {expires_at} is not after {reference} ({basis})")]
    Expired {
        expires_at: u64,
        reference: u64,
        basis: TimeBasis,
    },

    // Artifacts, as their bytes stream past.
    #[error("artifact {path}: more than the declared {declared} bytes")]
    ArtifactTooLong { path: String, declared: u64 },
    #[error("artifact {path}: {received} bytes, declared {declared}")]
    ArtifactTruncated {
        path: String,
        received: u64,
        declared: u64,
    },
    #[error("artifact {path}: sha256 is {actual}, the manifest says {expected}")]
    ArtifactDigest {
        path: String,
        expected: String,
        actual: String,
    },

    // Keys and the trust store.
    #[error("key {key_id}: public key {public_key:?} is not 64 lowercase hex digits")]
    PublicKeySyntax { key_id: String, public_key: String },
    #[error("key {key_id}: public key is not a point on the curve")]
    PublicKeyInvalid { key_id: String },
    #[error("key {key_id}: public key has small order (it would verify forged signatures)")]
    PublicKeyWeak { key_id: String },
    #[error("key id {key_id} does not match its public key, whose id is {computed}")]
    KeyIdMismatch { key_id: String, computed: String },
    #[error("key {key_id} is listed twice")]
    KeyDuplicate { key_id: String },
    #[error("{count} keys, outside 1..={max}")]
    KeyCount { count: usize, max: usize },
    #[error("threshold {threshold} is outside 1..={keys} (the number of keys)")]
    Threshold { threshold: usize, keys: usize },
    #[error("max_version_jump is 0, which would refuse every update")]
    MaxJumpZero,
    #[error("trust store is not valid JSON of the expected shape")]
    TrustSyntax {
        #[source]
        #[serde(skip)]
        source: serde_json::Error,
    },

    // Key rotation.
    #[error("rotation to generation {found}, expected {expected} (the current one plus 1)")]
    RotationGeneration { found: u64, expected: u64 },
    #[error("rotation is not signed by the current keys")]
    RotationOldKeys {
        #[source]
        cause: Box<ManifestError>,
    },
    #[error("rotation is not signed by its own new keys")]
    RotationNewKeys {
        #[source]
        cause: Box<ManifestError>,
    },
    #[error("rotation index is {size} bytes, more than the {max}-byte cap")]
    RotationIndexTooLarge { size: usize, max: usize },
    #[error("rotation index is not valid JSON of the expected shape")]
    RotationIndexSyntax {
        #[source]
        #[serde(skip)]
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    RotationFetch { path: String, reason: String },
    #[error("key rotation stopped before generation {generation} ({path})")]
    RotationStep {
        generation: u64,
        path: String,
        #[source]
        source: Box<ManifestError>,
    },
    #[error(
        "key rotation from generation {from} to {latest} is more than {max} steps; stopped after {max}"
    )]
    RotationChainTooLong { from: u64, latest: u64, max: u64 },
}

/// Where a version floor comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorSource {
    /// The image's trust store (`[trust] version_floor`).
    #[default]
    Image,
    /// The machine's non-volatile EFI variable.
    EfiVariable,
    /// The state partition the image names.
    StatePartition,
    /// Given by the caller (`phase verify --version-floor`).
    Given,
}

impl FloorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FloorSource::Image => "image",
            FloorSource::EfiVariable => "efi_variable",
            FloorSource::StatePartition => "state_partition",
            FloorSource::Given => "given",
        }
    }
}

impl std::fmt::Display for FloorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloorSource::Image => "the image's own",
            FloorSource::EfiVariable => "stored in the EFI variable",
            FloorSource::StatePartition => "stored on the state partition",
            FloorSource::Given => "given",
        })
    }
}

/// Which of the three clocks set the reference time for the expiry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBasis {
    /// The machine's clock.
    Clock,
    /// The trust store's time floor (the image build time).
    TimeFloor,
    /// The `issued_at` of the last manifest this machine accepted.
    LastIssuedAt,
}

impl ManifestError {
    /// The reason as data: `kind` (the variant in snake case) and the
    /// values it names.
    pub fn to_value(&self) -> serde_json::Value {
        // Every field is a number, a string, an arch or a nested error,
        // all of which serialise.
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({ "kind": "unknown" }))
    }

    /// The variant's name in snake case, as in [`to_value`](Self::to_value).
    pub fn kind(&self) -> String {
        self.to_value()["kind"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned()
    }
}

impl std::fmt::Display for TimeBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeBasis::Clock => "the clock",
            TimeBasis::TimeFloor => "the image's time floor",
            TimeBasis::LastIssuedAt => "the last accepted issued_at",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_are_data_with_the_values_compared() {
        let rollback = ManifestError::Rollback {
            version: 4,
            floor: 5,
            floor_source: FloorSource::EfiVariable,
        };
        assert_eq!(
            rollback.to_value(),
            json!({ "kind": "rollback", "version": 4, "floor": 5, "source": "efi_variable" })
        );
        let arch = ManifestError::ArchMismatch {
            found: Arch::Aarch64,
            expected: Arch::X86_64,
        };
        assert_eq!(
            arch.to_value(),
            json!({ "kind": "arch_mismatch", "found": "aarch64", "expected": "x86_64" })
        );
        let expired = ManifestError::Expired {
            expires_at: 9,
            reference: 10,
            basis: TimeBasis::TimeFloor,
        };
        assert_eq!(expired.to_value()["basis"], "time_floor");
        // Sources that are not data are left out; nested reasons stay whole.
        let syntax = ManifestError::PayloadSyntax {
            source: serde_json::from_slice::<u8>(b"x").unwrap_err(),
        };
        assert_eq!(syntax.to_value(), json!({ "kind": "payload_syntax" }));
        let nested = ManifestError::RotationOldKeys {
            cause: Box::new(rollback),
        };
        assert_eq!(
            nested.to_value(),
            json!({ "kind": "rotation_old_keys", "cause": { "kind": "rollback", "version": 4, "floor": 5, "source": "efi_variable" } })
        );
        assert_eq!(nested.kind(), "rotation_old_keys");
    }
}
