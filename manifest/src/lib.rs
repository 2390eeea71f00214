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
pub use error::{ManifestError, TimeBasis};
pub use key::{KeyId, KeyRecord, PublicKey};
pub use policy::{Binding, State, Verified, verify};
pub use rotation::Rotation;
pub use schema::{Arch, Artifact, Artifacts, Handoff, Manifest};
pub use trust::TrustStore;
