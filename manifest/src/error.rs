//! Every reason a manifest, a trust store or a rotation document is refused.

use thiserror::Error;

use crate::schema::Arch;

/// Why verification refused its input. One variant per reason; each names the
/// offending value so that the one-line console report is enough to act on.
#[derive(Debug, Error)]
pub enum ManifestError {
    // The envelope, before any signature is checked.
    #[error("envelope is {size} bytes, more than the {max}-byte cap")]
    EnvelopeTooLarge { size: usize, max: usize },
    #[error("envelope is not valid JSON of the expected shape")]
    EnvelopeSyntax(#[source] serde_json::Error),
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
    PayloadSyntax(#[source] serde_json::Error),
    #[error(
        "{field} {value:?} is not 1–64 letters, digits, '-', '_' or '.' (not starting with '.')"
    )]
    NameSyntax { field: &'static str, value: String },
    #[error("unknown arch {found:?} (expected x86_64 or aarch64{hint})")]
    ArchUnknown { found: String, hint: &'static str },
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
    #[error("version {version} is below the floor {floor} (rollback)")]
    Rollback { version: u64, floor: u64 },
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
    TrustSyntax(#[source] serde_json::Error),

    // Key rotation.
    #[error("rotation to generation {found}, expected {expected} (the current one plus 1)")]
    RotationGeneration { found: u64, expected: u64 },
    #[error("rotation is not signed by the current keys")]
    RotationOldKeys(#[source] Box<ManifestError>),
    #[error("rotation is not signed by its own new keys")]
    RotationNewKeys(#[source] Box<ManifestError>),
}

/// Which of the three clocks set the reference time for the expiry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBasis {
    /// The machine's clock.
    Clock,
    /// The trust store's time floor (the image build time).
    TimeFloor,
    /// The `issued_at` of the last manifest this machine accepted.
    LastIssuedAt,
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
