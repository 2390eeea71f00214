//! The signed boot manifest of Phase Boot, shared by the init and the host
//! tools. No I/O: bytes in, a verdict out.
//!
//! - [`envelope`]: raw payload bytes plus Ed25519 signatures with key ids;
//! - [`schema`]: the payload, [`Manifest`];
//! - [`trust`]: the keys, threshold and floors an image carries, [`TrustStore`];
//! - [`policy`]: the order of checks, [`policy::verify`];
//! - [`rotation`]: replacing keys with a document both key sets signed;
//! - [`artifact`]: size and SHA-256 of artifact bytes as they stream.
//!
//! The threats each check answers are the rows of SECURITY.md; the tests in
//! `security` show each one as a pair: a naive check fooled, ours refusing.
//!
//! Size, measured as the growth of a static musl binary that already parses
//! JSON with serde (opt-level z, LTO, panic=abort, stripped) when it adds
//! trust-store parsing, [`verify`] and [`ArtifactCheck`]: +93 KiB on aarch64,
//! +145 KiB on x86_64. Of that the primitives (strict Ed25519, SHA-512,
//! SHA-256) are 40 KiB and 77 KiB; x86_64 is larger because curve25519-dalek
//! compiles its AVX2 backend with runtime detection, and building with
//! `--cfg curve25519_dalek_backend="serial"` saves 26 KiB of that.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod encoding;
pub mod envelope;
mod error;
pub mod key;
pub mod policy;
pub mod rotation;
pub mod schema;
pub mod trust;

#[cfg(test)]
mod security;

pub use artifact::ArtifactCheck;
pub use envelope::{Envelope, MAX_ENVELOPE_SIZE};
pub use error::{FloorSource, ManifestError, TimeBasis};
pub use key::{KeyId, KeyRecord, PublicKey};
pub use policy::{Binding, State, Verified, verify};
pub use rotation::Rotation;
pub use schema::{Arch, Artifact, Artifacts, Handoff, Manifest};
pub use trust::TrustStore;
