//! Key files. A private key is PKCS#8 PEM, mode 0600; a public key is the
//! JSON [`KeyRecord`] a trust store lists, so it carries its key id.
//!
//! The private key is written as RFC 8410's `OneAsymmetricKey` **version 1**
//! (`PrivateKeyInfo`: the seed and nothing else), which every OpenSSL since
//! 1.1.1 reads. Version 2 adds the public key, and OpenSSL 3.0 (Debian 12's)
//! refuses it for Ed25519, so a key written that way could not be inspected
//! or used there. Both versions are read.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use phase_manifest::encoding::base64;
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
    let pem = pkcs8_v1_pem(&signing);
    write_new(&private_path, pem.as_bytes(), 0o600)?;
    let public = public_of(&signing);
    write_new(&public_path, public.record().to_json().as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_key: private_path,
        public_key: public_path,
        key_id: public.id().to_string(),
    })
}

/// The DER prefix of an Ed25519 `PrivateKeyInfo` (RFC 8410 §7, RFC 5958
/// version 1); the 32-byte seed follows it.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, // SEQUENCE, 46 bytes: OneAsymmetricKey
    0x02, 0x01, 0x00, // INTEGER 0: version v1 (no public key)
    0x30, 0x05, // SEQUENCE, 5 bytes: AlgorithmIdentifier
    0x06, 0x03, 0x2b, 0x65, 0x70, // OID 1.3.101.112: id-Ed25519
    0x04, 0x22, // OCTET STRING, 34 bytes: privateKey
    0x04, 0x20, // OCTET STRING, 32 bytes: CurvePrivateKey, the seed
];

/// The DER of `signing` as a version-1 `PrivateKeyInfo`.
fn pkcs8_v1_der(signing: &SigningKey) -> [u8; 48] {
    let mut der = [0u8; 48];
    der[..16].copy_from_slice(&PKCS8_V1_PREFIX);
    der[16..].copy_from_slice(signing.as_bytes());
    der
}

/// The PEM (`BEGIN PRIVATE KEY`) of [`pkcs8_v1_der`]. 48 bytes make 64
/// base64 characters: one line.
fn pkcs8_v1_pem(signing: &SigningKey) -> Secret {
    let mut der = pkcs8_v1_der(signing);
    let body = Secret(base64(&der));
    der.fill(0);
    Secret(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        body.0
    ))
}

/// Text holding a secret, cleared when it is dropped.
struct Secret(String);

impl Secret {
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn zeroize_in_place(&mut self) {
        // Overwriting with ASCII zeros keeps the String valid UTF-8.
        let len = self.0.len();
        self.0.clear();
        self.0.extend(std::iter::repeat_n('0', len));
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.zeroize_in_place();
    }
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

    /// RFC 8410 §10.3's example private key: a version-1 `PrivateKeyInfo`.
    const RFC8410_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";
    const RFC8410_SEED: &str = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842";

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_byte_for_byte() {
        let seed = phase_manifest::encoding::unhex::<32>(RFC8410_SEED).unwrap();
        let signing = SigningKey::from_bytes(&seed);
        assert_eq!(pkcs8_v1_pem(&signing).0, RFC8410_PEM);
        let der = pkcs8_v1_der(&signing);
        assert_eq!(der[4], 0x00, "version v1");
        assert_eq!(&der[16..], &seed);
        // Different seeds, different keys, same framing.
        for byte in [0u8, 1, 0xff] {
            let der = pkcs8_v1_der(&SigningKey::from_bytes(&[byte; 32]));
            assert_eq!(der[..16], PKCS8_V1_PREFIX);
            assert_eq!(der[16..], [byte; 32]);
        }
    }

    #[test]
    fn both_pkcs8_versions_are_read() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let dir = tempfile::tempdir().unwrap();
        let seed = phase_manifest::encoding::unhex::<32>(RFC8410_SEED).unwrap();
        let signing = SigningKey::from_bytes(&seed);
        // Version 2 (with the public key), as ed25519-dalek and older
        // releases of this tool wrote it.
        let v2 = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_ne!(v2.as_str(), RFC8410_PEM);
        for (name, pem) in [("v1.key", RFC8410_PEM), ("v2.key", v2.as_str())] {
            let path = dir.path().join(name);
            write_new(&path, pem.as_bytes(), 0o600).unwrap();
            let read = read_signing_key(&path).unwrap();
            assert_eq!(read.as_bytes(), &seed, "{name}");
        }
    }

    /// `openssl`, or `None` with a printed reason (a failure under
    /// `PHASE_REQUIRE_TOOLS`).
    fn openssl() -> Option<&'static str> {
        let present = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            return Some("openssl");
        }
        phase_testkit::skip(
            module_path!(),
            format_args!("openssl is not installed (apt-get install openssl)"),
        );
        None
    }

    #[test]
    fn openssl_reads_the_private_key_and_derives_the_same_public_key() {
        let Some(openssl) = openssl() else { return };
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            let generated = keygen(dir.path(), name).unwrap();
            let check = std::process::Command::new(openssl)
                .args(["pkey", "-noout", "-in"])
                .arg(&generated.private_key)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "openssl pkey refused {}: {}",
                generated.private_key.display(),
                String::from_utf8_lossy(&check.stderr)
            );
            let pubout = std::process::Command::new(openssl)
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&generated.private_key)
                .output()
                .unwrap();
            assert!(pubout.status.success(), "{pubout:?}");
            // SubjectPublicKeyInfo of Ed25519 (RFC 8410 §4): 12 bytes of
            // framing, then the 32-byte key.
            let spki = pubout.stdout;
            assert_eq!(spki.len(), 44, "{spki:02x?}");
            assert_eq!(
                spki[..12],
                [
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
                ]
            );
            let ours = read_public_key(&generated.public_key).unwrap();
            assert_eq!(
                phase_manifest::encoding::hex(&spki[12..]),
                ours.record().public_key,
                "{name}"
            );
        }
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
