//! Key files. A private key is PKCS#8 PEM (RFC 8410), readable by OpenSSL,
//! mode 0600; a public key is the JSON [`KeyRecord`] a trust store lists,
//! so it carries its key id.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use phase_manifest::{KeyId, KeyRecord, ManifestError, PublicKey};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeysError {
    #[error("getrandom(32 bytes)")]
    Random(#[source] getrandom::Error),
    #[error("create directory {0}")]
    CreateDir(PathBuf, #[source] io::Error),
    #[error("{0} exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("encode PKCS#8")]
    Encode(#[source] ed25519_dalek::pkcs8::Error),
    #[error("read private key {0}")]
    ReadPrivate(PathBuf, #[source] io::Error),
    #[error(
        "private key {path} is mode {mode:04o}; it must not be readable by group or others (chmod 600)"
    )]
    PrivateMode { path: PathBuf, mode: u32 },
    #[error("private key {0} is not an Ed25519 PKCS#8 PEM key")]
    DecodePrivate(PathBuf, #[source] ed25519_dalek::pkcs8::Error),
    #[error("read public key {0}")]
    ReadPublic(PathBuf, #[source] io::Error),
    #[error("public key {0}")]
    DecodePublic(PathBuf, #[source] ManifestError),
}

/// The files `keygen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedKey {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: String,
}

/// Generates a key pair as `DIR/NAME.key` (private) and `DIR/NAME.pub`.
/// Existing files are never overwritten.
pub fn keygen(dir: &Path, name: &str) -> Result<GeneratedKey, KeysError> {
    fs::create_dir_all(dir).map_err(|e| KeysError::CreateDir(dir.to_owned(), e))?;
    let private_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(KeysError::Exists(path.clone()));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeysError::Random)?;
    let signing = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(KeysError::Encode)?;
    write_new(&private_path, pem.as_bytes(), 0o600)?;
    let public = public_of(&signing);
    write_new(&public_path, public.record().to_json().as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_key: private_path,
        public_key: public_path,
        key_id: public.id().to_string(),
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeysError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| KeysError::Write(path.to_owned(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| KeysError::Write(path.to_owned(), e))
}

/// The public half of a signing key.
pub fn public_of(signing: &SigningKey) -> PublicKey {
    // A key derived from a secret scalar is never of small order.
    PublicKey::from_bytes(signing.verifying_key().as_bytes())
        .unwrap_or_else(|e| unreachable!("derived public key refused: {e}"))
}

/// Reads a private key, refusing one that others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeysError> {
    let meta = fs::metadata(path).map_err(|e| KeysError::ReadPrivate(path.to_owned(), e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeysError::PrivateMode {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = fs::read_to_string(path).map_err(|e| KeysError::ReadPrivate(path.to_owned(), e))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeysError::DecodePrivate(path.to_owned(), e))
}

/// Reads a public-key file.
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeysError> {
    let bytes = fs::read(path).map_err(|e| KeysError::ReadPublic(path.to_owned(), e))?;
    KeyRecord::from_json(&bytes).map_err(|e| KeysError::DecodePublic(path.to_owned(), e))
}

/// The id of a signing key.
pub fn key_id(signing: &SigningKey) -> KeyId {
    KeyId::of(signing.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_0600_pkcs8_key_and_a_public_record() {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(dir.path(), "release").unwrap();
        let mode = fs::metadata(&generated.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = fs::read_to_string(&generated.private_key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let signing = read_signing_key(&generated.private_key).unwrap();
        let public = read_public_key(&generated.public_key).unwrap();
        assert_eq!(public, public_of(&signing));
        assert_eq!(generated.key_id, public.id().to_string());
        // Never overwrites.
        assert!(matches!(
            keygen(dir.path(), "release"),
            Err(KeysError::Exists(p)) if p == generated.private_key
        ));
        // Two keys are different keys.
        let other = keygen(dir.path(), "other").unwrap();
        assert_ne!(other.key_id, generated.key_id);
    }

    #[test]
    fn unusable_key_files_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let generated = keygen(dir.path(), "k").unwrap();
        let open = dir.path().join("open.key");
        fs::copy(&generated.private_key, &open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let garbage = dir.path().join("garbage.key");
        write_new(&garbage, b"not a key", 0o600).unwrap();
        let missing = dir.path().join("missing.key");
        let table: [(&Path, String); 4] = [
            (
                &open,
                format!("private key {} is mode 0644", open.display()),
            ),
            (
                &garbage,
                format!("private key {} is not an Ed25519 PKCS#8", garbage.display()),
            ),
            (&missing, format!("read private key {}", missing.display())),
            (
                &generated.public_key,
                format!("private key {} is not", generated.public_key.display()),
            ),
        ];
        for (path, expected) in table {
            if path == generated.public_key {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
            }
            let error = read_signing_key(path).unwrap_err().to_string();
            assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
        }
        let error = read_public_key(&generated.private_key)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("public key {}", generated.private_key.display())
        );
    }
}
