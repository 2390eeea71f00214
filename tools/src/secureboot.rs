//! Secure Boot signing keys: an RSA key and a self-signed X.509
//! code-signing certificate, for `mkimage --sign KEY --cert CERT` and for
//! enrolling in firmware (`db`, through the firmware's setup or
//! `efi-updatevar`) or in shim's MOK list (`mokutil --import NAME.cer`).
//!
//! Files: `NAME.key` (PKCS#8 PEM, mode 0600), `NAME.crt` (PEM) and
//! `NAME.cer` (the same certificate as DER, which `mokutil` takes). A key
//! and certificate made elsewhere (`openssl req -x509 -newkey rsa:2048
//! -nodes -addext extendedKeyUsage=codeSigning …`, a CA's) serve as well:
//! mkimage reads any RSA key in PEM, PKCS#8 or PKCS#1, with its certificate.
//!
//! The key is RSA because UEFI firmware verifies only RSA (2048 bits is
//! what every firmware takes; 3072 and 4096 work on current OVMF and shim).
//! Crates: `rsa` generates it (RustCrypto, pure Rust; `ring`, which the
//! workspace already has, cannot generate RSA keys), `x509-cert`'s builder
//! makes the certificate — the same family mkimage signs with, so the
//! formats agree by construction.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use der::Encode;
use der::pem::LineEnding;
use rsa::pkcs8::EncodePrivateKey;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;

#[derive(Debug, Error)]
pub enum SecureBootError {
    #[error("an RSA key of {0} bits: choose 2048, 3072 or 4096")]
    Bits(usize),
    #[error("create directory {0}")]
    CreateDir(PathBuf, #[source] io::Error),
    #[error("{0} exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("generating an RSA-{bits} key")]
    Generate {
        bits: usize,
        #[source]
        error: rsa::Error,
    },
    #[error("the certificate subject CN={0:?}")]
    Subject(String, #[source] der::Error),
    #[error("encoding the key")]
    EncodeKey(#[source] rsa::pkcs8::Error),
    #[error("building the certificate")]
    Certificate(#[source] x509_cert::builder::Error),
    #[error("encoding the certificate")]
    EncodeCertificate(#[source] der::Error),
    #[error("write {0}")]
    Write(PathBuf, #[source] io::Error),
}

/// The files [`keygen`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedCertificate {
    pub private_key: PathBuf,
    /// PEM, for `mkimage --cert` and `sbverify --cert`.
    pub certificate: PathBuf,
    /// DER, for `mokutil --import` and firmware setup screens.
    pub certificate_der: PathBuf,
    pub subject: String,
    /// SHA-256 of the DER certificate, as `mokutil --list-enrolled` shows it.
    pub fingerprint: String,
}

/// Key sizes firmware verifies.
pub const BITS: [usize; 3] = [2048, 3072, 4096];

/// A self-signed certificate for signing code: not a CA, digital
/// signatures only, extended key usage codeSigning.
struct CodeSigning {
    subject: Name,
}

impl BuilderProfile for CodeSigning {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let mut ext = vec![
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_extension(tbs.subject(), &[])?,
        ];
        ext.push(KeyUsage(KeyUsages::DigitalSignature.into()).to_extension(tbs.subject(), &ext)?);
        ext.push(
            ExtendedKeyUsage(vec![der::oid::db::rfc5280::ID_KP_CODE_SIGNING])
                .to_extension(tbs.subject(), &ext)?,
        );
        ext.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(ski.0.clone()),
                ..Default::default()
            }
            .to_extension(tbs.subject(), &ext)?,
        );
        ext.push(ski.to_extension(tbs.subject(), &ext)?);
        Ok(ext)
    }
}

/// Generates `DIR/NAME.key`, `DIR/NAME.crt` and `DIR/NAME.cer`: an RSA key
/// of `bits` and a certificate for it with subject `CN=common_name`, valid
/// from now for `days` (firmware does not check the dates; tools that read
/// the certificate may). Existing files are never overwritten.
pub fn keygen(
    dir: &Path,
    name: &str,
    common_name: &str,
    bits: usize,
    days: u32,
) -> Result<GeneratedCertificate, SecureBootError> {
    if !BITS.contains(&bits) {
        return Err(SecureBootError::Bits(bits));
    }
    fs::create_dir_all(dir).map_err(|e| SecureBootError::CreateDir(dir.to_owned(), e))?;
    let paths = ["key", "crt", "cer"].map(|ext| dir.join(format!("{name}.{ext}")));
    for path in &paths {
        if path.exists() {
            return Err(SecureBootError::Exists(path.clone()));
        }
    }
    let key = rsa::PrivateKey::new(&mut getrandom04::SysRng, bits)
        .map_err(|error| SecureBootError::Generate { bits, error })?;
    let cert = certificate(&key, common_name, days)?;
    let der = cert.to_der().map_err(SecureBootError::EncodeCertificate)?;
    let pem = der::EncodePem::to_pem(&cert, LineEnding::LF)
        .map_err(SecureBootError::EncodeCertificate)?;
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(SecureBootError::EncodeKey)?;
    let [key_path, crt_path, cer_path] = paths;
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&crt_path, pem.as_bytes(), 0o644)?;
    write_new(&cer_path, &der, 0o644)?;
    Ok(GeneratedCertificate {
        private_key: key_path,
        certificate: crt_path,
        certificate_der: cer_path,
        subject: cert.tbs_certificate().subject().to_string(),
        fingerprint: hex(&Sha256::digest(&der)),
    })
}

/// The self-signed code-signing certificate of `key`.
pub fn certificate(
    key: &rsa::PrivateKey,
    common_name: &str,
    days: u32,
) -> Result<x509_cert::Certificate, SecureBootError> {
    let subject = Name::from_str(&format!("CN={}", escape_rdn(common_name)))
        .map_err(|e| SecureBootError::Subject(common_name.to_owned(), e))?;
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| SecureBootError::EncodeKey(e.into()))?;
    let spki = <SubjectPublicKeyInfoOwned as der::Decode>::from_der(spki_der.as_bytes())
        .map_err(SecureBootError::EncodeCertificate)?;
    let validity = Validity::from_now(Duration::from_secs(u64::from(days) * 86_400))
        .map_err(SecureBootError::EncodeCertificate)?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    CertificateBuilder::new(
        CodeSigning { subject },
        SerialNumber::generate(&mut getrandom04::rand_core::UnwrapErr(getrandom04::SysRng)),
        validity,
        spki,
    )
    .and_then(|b| b.build::<_, rsa::pkcs1v15::Signature>(&signer))
    .map_err(SecureBootError::Certificate)
}

/// RFC 4514 escaping for an attribute value.
fn escape_rdn(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        let edge = i == 0 && (c == ' ' || c == '#') || i + 1 == value.chars().count() && c == ' ';
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecureBootError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| SecureBootError::Write(path.to_owned(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| SecureBootError::Write(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_code_signing_certificate_for_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let made = keygen(dir.path(), "db", "Example, Inc. Secure Boot", 2048, 3650).unwrap();
        let mode = fs::metadata(&made.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let der = fs::read(&made.certificate_der).unwrap();
        let pem = fs::read_to_string(&made.certificate).unwrap();
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
        assert_eq!(
            cert,
            <x509_cert::Certificate as der::DecodePem>::from_pem(&pem).unwrap()
        );
        assert_eq!(made.subject, "CN=Example\\, Inc. Secure Boot");
        let tbs = cert.tbs_certificate();
        assert_eq!(tbs.issuer(), tbs.subject());
        let (_, eku) = tbs.get_extension::<ExtendedKeyUsage>().unwrap().unwrap();
        assert_eq!(eku.0, [der::oid::db::rfc5280::ID_KP_CODE_SIGNING]);
        let (_, bc) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
        assert!(!bc.ca);
        // The key signs what the certificate's key verifies.
        let key_pem = fs::read_to_string(&made.private_key).unwrap();
        let key =
            <rsa::PrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&key_pem).unwrap();
        let spki = tbs.subject_public_key_info().to_der().unwrap();
        assert_eq!(
            key.to_public_key().to_public_key_der().unwrap().as_bytes(),
            &spki[..]
        );
        assert_eq!(made.fingerprint, hex(&Sha256::digest(&der)));
        // Never over an existing key.
        assert!(matches!(
            keygen(dir.path(), "db", "x", 2048, 1),
            Err(SecureBootError::Exists(_))
        ));
        assert!(matches!(
            keygen(dir.path(), "other", "x", 1024, 1),
            Err(SecureBootError::Bits(1024))
        ));
    }
}
