//! Authenticode signatures on PE/COFF images, for UEFI Secure Boot: what
//! `sbsign` writes, without OpenSSL (Microsoft's "Windows Authenticode
//! Portable Executable Signature Format"; PE format, "The Attribute
//! Certificate Table").
//!
//! - The image hash is SHA-256 over the file in order, leaving out the
//!   CheckSum field, the certificate-table entry of the data directory and
//!   the certificate table itself. The specification hashes the headers,
//!   then each section's raw data by file offset, then whatever follows the
//!   last section up to the certificate table. Verifiers differ where
//!   sections leave gaps (firmware, shim and the kernel hash by section and
//!   then from "bytes hashed so far"; osslsigncode hashes the file in one
//!   run), so this module signs only images whose headers and sections tile
//!   the file from offset 0: there every verifier computes the same hash and
//!   every byte before the certificate table is signed.
//! - An unsigned image is padded with zeros to 8 bytes (the padding is
//!   hashed, as `sbsign` and the firmware do) and the certificate table
//!   starts there. An image that already has one keeps it: the new entry is
//!   appended, so earlier signatures stay valid (as `sbsign` does).
//! - The signature is a PKCS#7 `SignedData` (version 1) whose content is an
//!   `SpcIndirectDataContent`: `SPC_PE_IMAGE_DATAOBJ` and the image's
//!   SHA-256. One signer, identified by issuer and serial number, with the
//!   signed attributes contentType, messageDigest and an empty
//!   SpcSpOpusInfo — no signing time, so the same inputs and key give the
//!   same bytes (RSA PKCS#1 v1.5 signatures are deterministic). The
//!   signer's certificate travels in `certificates`.
//! - The table entry is a `WIN_CERTIFICATE` (revision 0x0200, type
//!   `WIN_CERT_TYPE_PKCS_SIGNED_DATA`), padded to 8 bytes; the data
//!   directory then names the table and the PE checksum is recomputed.
//!
//! Crates: `rsa` (PKCS#1 v1.5 over SHA-256), `x509-cert` (reading the
//! signer's certificate), `cms` (the SignedData and SignerInfo types) and
//! `der`, all RustCrypto, pure Rust and of the `der` 0.8 / `digest` 0.11
//! generation `sha2` already is here; the init links none of them.

use std::ops::Range;
use std::path::{Path, PathBuf};

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, DecodePem, Encode, Sequence};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::uki::{self, CERTIFICATE_TABLE, Pe, UkiError};

#[derive(Debug, Error)]
pub enum AuthenticodeError {
    #[error("reading the PE image {what}")]
    Pe {
        what: String,
        #[source]
        error: UkiError,
    },
    #[error("{what} has no certificate-table entry in its data directory")]
    NoCertificateDirectory { what: String },
    #[error(
        "bytes {start:#x}..{end:#x} of {what} are in no section: a signature over it would \
         not be computed alike by every verifier"
    )]
    Gap {
        what: String,
        start: usize,
        end: usize,
    },
    #[error("the section data of {what} overlaps at {at:#x} or runs past the end of the file")]
    Overlap { what: String, at: usize },
    #[error(
        "the certificate table of {what} ({start:#x}+{size:#x}) is not 8-byte aligned at the end of the file"
    )]
    CertificateTable {
        what: String,
        start: usize,
        size: usize,
    },
    #[error("the sparse data of {what} at {at:#x} is out of order or outside the image")]
    Sparse { what: String, at: u64 },
    #[error("{what} would exceed 4 GiB with its signature")]
    TooLarge { what: String },
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is an encrypted private key: decrypt it first (openssl pkcs8 -in KEY -out PLAIN)")]
    EncryptedKey(PathBuf),
    #[error("{path} is not an RSA private key in PEM (PKCS#8 or PKCS#1): {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path} is not an X.509 certificate (PEM or DER)")]
    Certificate {
        path: PathBuf,
        #[source]
        error: der::Error,
    },
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{path} is a {bits}-bit RSA key; UEFI firmware takes 2048 to 4096 bits")]
    KeySize { path: PathBuf, bits: usize },
    #[error("RSA signing")]
    Sign(#[source] rsa::Error),
    #[error("encoding the signature")]
    Encode(#[source] der::Error),
}

/// `WIN_CERTIFICATE.wRevision`: WIN_CERT_REVISION_2_0.
pub const WIN_CERT_REVISION: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType`: WIN_CERT_TYPE_PKCS_SIGNED_DATA.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
const SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
const SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// `SpcPeImageData` as every signer writes it: no flags, and the file link
/// Authenticode has carried as a fixed "<<<Obsolete>>>" since it stopped
/// meaning anything.
#[rustfmt::skip]
const SPC_PE_IMAGE_DATA_VALUE: [u8; 39] = [
    0x30, 0x25,             // SEQUENCE SpcPeImageData
    0x03, 0x01, 0x00,       //   flags: BIT STRING, empty
    0xA0, 0x20,             //   file [0] EXPLICIT SpcLink
    0xA2, 0x1E,             //     file [2] EXPLICIT SpcString
    0x80, 0x1C,             //       unicode [0] IMPLICIT BMPString, 14 characters
    0x00, b'<', 0x00, b'<', 0x00, b'<', 0x00, b'O', 0x00, b'b', 0x00, b's', 0x00, b'o',
    0x00, b'l', 0x00, b'e', 0x00, b't', 0x00, b'e', 0x00, b'>', 0x00, b'>', 0x00, b'>',
];

/// `SpcAttributeTypeAndOptionalValue`.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct SpcAttribute {
    value_type: ObjectIdentifier,
    value: Any,
}

/// `DigestInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// `SpcIndirectDataContent`: what the signer vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttribute,
    message_digest: DigestInfo,
}

/// An algorithm identifier with the NULL parameters RSA and SHA-2
/// identifiers carry in PKCS#7.
fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// Where an image's hashed bytes and its certificate table are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    checksum_at: usize,
    directory_at: usize,
    /// The certificate table (start, size), if the image has one.
    table: Option<(usize, usize)>,
}

impl Layout {
    fn of(image: &[u8], what: &str) -> Result<Layout, AuthenticodeError> {
        let pe = Pe::parse(image, what).map_err(|error| AuthenticodeError::Pe {
            what: what.to_owned(),
            error,
        })?;
        let dir = pe.data_directory(image, CERTIFICATE_TABLE).ok_or_else(|| {
            AuthenticodeError::NoCertificateDirectory {
                what: what.to_owned(),
            }
        })?;
        let table = (dir.size != 0).then_some((dir.address as usize, dir.size as usize));
        if let Some((start, size)) = table
            && (start.checked_add(size) != Some(image.len()) || !start.is_multiple_of(8))
        {
            return Err(AuthenticodeError::CertificateTable {
                what: what.to_owned(),
                start,
                size,
            });
        }
        let data_end = table.map_or(image.len(), |(start, _)| start);
        // Headers, then the sections by file offset, must tile the file.
        let mut regions: Vec<(usize, usize)> = pe
            .sections
            .iter()
            .filter(|s| s.raw_size > 0)
            .map(|s| (s.raw_offset as usize, s.raw_size as usize))
            .collect();
        regions.sort_unstable();
        let mut at = pe.size_of_headers as usize;
        if at > data_end || dir.at + 8 > at {
            return Err(AuthenticodeError::Overlap {
                what: what.to_owned(),
                at,
            });
        }
        for (offset, size) in regions {
            if offset > at {
                return Err(AuthenticodeError::Gap {
                    what: what.to_owned(),
                    start: at,
                    end: offset,
                });
            }
            if offset < at || offset + size > data_end {
                return Err(AuthenticodeError::Overlap {
                    what: what.to_owned(),
                    at: offset,
                });
            }
            at = offset + size;
        }
        Ok(Layout {
            checksum_at: pe.checksum_offset(),
            directory_at: dir.at,
            table,
        })
    }

    /// The hashed ranges of an image whose certificate table starts at
    /// `data_end` (or that ends there).
    fn hashed(&self, data_end: usize) -> [Range<usize>; 3] {
        [
            0..self.checksum_at,
            self.checksum_at + 4..self.directory_at,
            self.directory_at + 8..data_end,
        ]
    }
}

/// An image's bytes, with the data of some ranges held elsewhere: a sparse
/// UKI ([`crate::uki::build_sparse`]) has zeros where the kernel and the
/// initramfs go.
struct View<'a> {
    bytes: &'a [u8],
    /// (offset, data), ordered and disjoint, inside `bytes`.
    holes: Vec<(usize, &'a [u8])>,
}

impl<'a> View<'a> {
    fn new(
        bytes: &'a [u8],
        holes: &[(u64, &'a [u8])],
        what: &str,
    ) -> Result<View<'a>, AuthenticodeError> {
        let mut sorted = holes.to_vec();
        sorted.sort_by_key(|h| h.0);
        let mut end = 0u64;
        let mut out = Vec::with_capacity(sorted.len());
        for (at, data) in sorted {
            if at < end || at + data.len() as u64 > bytes.len() as u64 {
                return Err(AuthenticodeError::Sparse {
                    what: what.to_owned(),
                    at,
                });
            }
            end = at + data.len() as u64;
            // Inside `bytes`, so it fits in usize.
            out.push((at as usize, data));
        }
        Ok(View { bytes, holes: out })
    }

    /// Feeds `range` of the whole image to `hash`.
    fn feed(&self, hash: &mut Sha256, range: Range<usize>) {
        let mut at = range.start;
        for &(start, data) in &self.holes {
            let end = start + data.len();
            if end <= at || start >= range.end {
                continue;
            }
            if start > at {
                hash.update(&self.bytes[at..start]);
                at = start;
            }
            let stop = end.min(range.end);
            hash.update(&data[at - start..stop - start]);
            at = stop;
        }
        if at < range.end {
            hash.update(&self.bytes[at..range.end]);
        }
    }

    /// The PE checksum of the whole image, its CheckSum field at `at`.
    fn checksum(&self, at: usize) -> u32 {
        let mut sum = uki::word_sum(self.bytes) - uki::field_sum(self.bytes, at);
        for &(start, data) in &self.holes {
            // Replace what `bytes` holds there by the data.
            sum = sum - words_at(&self.bytes[start..start + data.len()], start)
                + words_at(data, start);
        }
        uki::fold_checksum(sum, self.bytes.len() as u64)
    }
}

/// The 16-bit little-endian words `data` contributes at file offset `at`.
fn words_at(data: &[u8], at: usize) -> u64 {
    if at.is_multiple_of(2) {
        return uki::word_sum(data);
    }
    // Shifted by one: each byte is the high half of the word it lands in
    // when its offset is odd.
    data.iter()
        .enumerate()
        .map(|(i, &b)| u64::from(b) << (((at + i) % 2) * 8))
        .sum()
}

/// The Authenticode SHA-256 of a PE image (signed or not): what its
/// signatures' `SpcIndirectDataContent` must name. An unsigned image is
/// hashed as signing would pad it.
pub fn image_digest(image: &[u8], what: &str) -> Result<[u8; 32], AuthenticodeError> {
    let layout = Layout::of(image, what)?;
    let view = View::new(image, &[], what)?;
    let mut hash = Sha256::new();
    let data_end = match layout.table {
        Some((start, _)) => start,
        None => image.len(),
    };
    for range in layout.hashed(data_end) {
        view.feed(&mut hash, range);
    }
    if layout.table.is_none() {
        hash.update(&[0u8; 8][..data_end.next_multiple_of(8) - data_end]);
    }
    Ok(hash.finalize().into())
}

/// The image without its certificate table: what it was before it was
/// signed (with the padding signing added), to sign afresh — the Linux
/// kernel checks only the first signature a kernel image carries.
pub fn strip(image: &[u8], what: &str) -> Result<Vec<u8>, AuthenticodeError> {
    let layout = Layout::of(image, what)?;
    let Some((start, _)) = layout.table else {
        return Ok(image.to_vec());
    };
    let mut out = image[..start].to_vec();
    out[layout.directory_at..layout.directory_at + 8].fill(0);
    let sum = uki::pe_checksum(&out, layout.checksum_at);
    out[layout.checksum_at..layout.checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// One entry of an image's certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinCertificate {
    pub revision: u16,
    pub certificate_type: u16,
    /// The PKCS#7 `ContentInfo` (DER) of a `PKCS_SIGNED_DATA` entry.
    pub data: Vec<u8>,
}

/// The entries of an image's certificate table (none if unsigned).
pub fn certificate_table(
    image: &[u8],
    what: &str,
) -> Result<Vec<WinCertificate>, AuthenticodeError> {
    let layout = Layout::of(image, what)?;
    let Some((start, size)) = layout.table else {
        return Ok(Vec::new());
    };
    let bad = || AuthenticodeError::CertificateTable {
        what: what.to_owned(),
        start,
        size,
    };
    let mut out = Vec::new();
    let mut at = start;
    while at < image.len() {
        let field = |o: usize, n: usize| image.get(at + o..at + o + n).ok_or_else(bad);
        let len = u32::from_le_bytes(field(0, 4)?.try_into().map_err(|_| bad())?) as usize;
        if len < 8 {
            return Err(bad());
        }
        out.push(WinCertificate {
            revision: u16::from_le_bytes(field(4, 2)?.try_into().map_err(|_| bad())?),
            certificate_type: u16::from_le_bytes(field(6, 2)?.try_into().map_err(|_| bad())?),
            data: field(8, len - 8)?.to_vec(),
        });
        at += len.next_multiple_of(8);
    }
    Ok(out)
}

/// A signing key and its certificate.
#[derive(Clone)]
pub struct Signer {
    key: rsa::PrivateKey,
    cert: Certificate,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field(
                "subject",
                &self.cert.tbs_certificate().subject().to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads an RSA key (PEM: PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE
    /// KEY`) and its X.509 certificate (PEM or DER), and checks that they
    /// belong together.
    pub fn load(key: &Path, cert: &Path) -> Result<Signer, AuthenticodeError> {
        let key_text =
            std::fs::read_to_string(key).map_err(|e| AuthenticodeError::Read(key.to_owned(), e))?;
        let cert_bytes =
            std::fs::read(cert).map_err(|e| AuthenticodeError::Read(cert.to_owned(), e))?;
        Signer::from_pem(&key_text, &cert_bytes, key, cert)
    }

    /// Like [`Signer::load`], from the files' contents (the paths name them
    /// in errors).
    pub fn from_pem(
        key_pem: &str,
        cert: &[u8],
        key_path: &Path,
        cert_path: &Path,
    ) -> Result<Signer, AuthenticodeError> {
        let key_err = |reason: String| AuthenticodeError::Key {
            path: key_path.to_owned(),
            reason,
        };
        let key = match der::pem::decode_label(key_pem.as_bytes()) {
            Ok("PRIVATE KEY") => {
                rsa::PrivateKey::from_pkcs8_pem(key_pem).map_err(|e| key_err(e.to_string()))?
            }
            Ok("RSA PRIVATE KEY") => {
                rsa::PrivateKey::from_pkcs1_pem(key_pem).map_err(|e| key_err(e.to_string()))?
            }
            Ok("ENCRYPTED PRIVATE KEY") => {
                return Err(AuthenticodeError::EncryptedKey(key_path.to_owned()));
            }
            Ok(other) => return Err(key_err(format!("a PEM {other:?} block"))),
            Err(e) => return Err(key_err(e.to_string())),
        };
        let bits = key.size() * 8;
        if !(2048..=4096).contains(&bits) {
            return Err(AuthenticodeError::KeySize {
                path: key_path.to_owned(),
                bits,
            });
        }
        let cert_err = |error| AuthenticodeError::Certificate {
            path: cert_path.to_owned(),
            error,
        };
        let cert = if cert.starts_with(b"-----BEGIN") {
            Certificate::from_pem(cert).map_err(cert_err)?
        } else {
            Certificate::from_der(cert).map_err(cert_err)?
        };
        let cert_der = cert.to_der().map_err(cert_err)?;
        let public = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| key_err(e.to_string()))?;
        let spki = cert.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != RSA_ENCRYPTION
            || spki.subject_public_key.raw_bytes() != public.as_bytes()
        {
            return Err(AuthenticodeError::KeyMismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            });
        }
        Ok(Signer {
            key,
            cert,
            cert_der,
        })
    }

    /// The certificate, DER (what `mokutil --import` takes).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Returns `image` with this signer's signature added.
    pub fn sign(&self, image: &[u8], what: &str) -> Result<Vec<u8>, AuthenticodeError> {
        self.sign_sparse(image.to_vec(), &[], what)
    }

    /// Signs an image whose bytes at each `(offset, data)` of `holes` are
    /// held elsewhere (a sparse UKI, which holds zeros there). The result
    /// keeps those ranges as they were, so it is sparse in the same way:
    /// filled in, it is the signed whole image.
    pub fn sign_sparse(
        &self,
        mut image: Vec<u8>,
        holes: &[(u64, &[u8])],
        what: &str,
    ) -> Result<Vec<u8>, AuthenticodeError> {
        let layout = Layout::of(&image, what)?;
        let (start, old_size) = match layout.table {
            Some(table) => table,
            None => {
                let start = image.len().next_multiple_of(8);
                image.resize(start, 0);
                (start, 0)
            }
        };
        let digest = {
            let view = View::new(&image, holes, what)?;
            let mut hash = Sha256::new();
            for range in layout.hashed(start) {
                view.feed(&mut hash, range);
            }
            hash.finalize()
        };
        let signature = self.signed_data(&digest)?;
        let entry_len = 8 + signature.len();
        let too_large = || AuthenticodeError::TooLarge {
            what: what.to_owned(),
        };
        let table_size =
            u32::try_from(old_size + entry_len.next_multiple_of(8)).map_err(|_| too_large())?;
        if u32::try_from(start + table_size as usize).is_err() {
            return Err(too_large());
        }
        // Both fit in 32 bits: checked above.
        image.extend_from_slice(&(entry_len as u32).to_le_bytes()); // dwLength
        image.extend_from_slice(&WIN_CERT_REVISION.to_le_bytes()); // wRevision
        image.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes()); // wCertificateType
        image.extend_from_slice(&signature); // bCertificate
        image.resize(start + table_size as usize, 0); // to 8 bytes
        let dir = layout.directory_at;
        image[dir..dir + 4].copy_from_slice(&(start as u32).to_le_bytes()); // VirtualAddress: a file offset
        image[dir + 4..dir + 8].copy_from_slice(&table_size.to_le_bytes()); // Size
        let view = View::new(&image, holes, what)?;
        let sum = view.checksum(layout.checksum_at);
        image[layout.checksum_at..layout.checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
        Ok(image)
    }

    /// The PKCS#7 `ContentInfo` (DER) that signs an image hash.
    fn signed_data(&self, image_digest: &[u8]) -> Result<Vec<u8>, AuthenticodeError> {
        let enc = AuthenticodeError::Encode;
        let content = SpcIndirectDataContent {
            data: SpcAttribute {
                value_type: SPC_PE_IMAGE_DATA,
                value: Any::from_der(&SPC_PE_IMAGE_DATA_VALUE).map_err(enc)?,
            },
            message_digest: DigestInfo {
                algorithm: algorithm(SHA256),
                digest: OctetString::new(image_digest).map_err(enc)?,
            },
        };
        let content = Any::from_der(&content.to_der().map_err(enc)?).map_err(enc)?;
        // PKCS#7 digests the content's value, without its tag and length
        // (RFC 2315 9.3).
        let content_digest = Sha256::digest(content.value());
        let attribute = |oid, value: Any| -> Result<Attribute, der::Error> {
            Ok(Attribute {
                oid,
                values: SetOfVec::from_iter([value])?,
            })
        };
        let signed_attrs = SetOfVec::from_iter([
            attribute(
                CONTENT_TYPE,
                Any::encode_from(&SPC_INDIRECT_DATA).map_err(enc)?,
            )
            .map_err(enc)?,
            attribute(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(&content_digest[..]).map_err(enc)?)
                    .map_err(enc)?,
            )
            .map_err(enc)?,
            // SpcSpOpusInfo: no program name or URL.
            attribute(SPC_SP_OPUS_INFO, Any::from_der(&[0x30, 0x00]).map_err(enc)?).map_err(enc)?,
        ])
        .map_err(enc)?;
        // The signature covers the attributes as a SET (their DER with tag
        // 0x31), not as the [0] IMPLICIT field they are stored in.
        let signature = self
            .key
            .pkcs1v15_sign::<Sha256>(&signed_attrs.to_der().map_err(enc)?)
            .map_err(AuthenticodeError::Sign)?;
        let tbs = self.cert.tbs_certificate();
        let signer = SignerInfo {
            version: cms::content_info::CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: algorithm(SHA256),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: algorithm(RSA_ENCRYPTION),
            signature: OctetString::new(signature).map_err(enc)?,
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: cms::content_info::CmsVersion::V1,
            digest_algorithms: SetOfVec::from_iter([algorithm(SHA256)]).map_err(enc)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: SPC_INDIRECT_DATA,
                econtent: Some(content),
            },
            certificates: Some(CertificateSet(
                SetOfVec::from_iter([cms::cert::CertificateChoices::Certificate(
                    self.cert.clone(),
                )])
                .map_err(enc)?,
            )),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::from_iter([signer]).map_err(enc)?),
        };
        ContentInfo {
            content_type: SIGNED_DATA,
            content: Any::encode_from(&signed).map_err(enc)?,
        }
        .to_der()
        .map_err(enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uki::tests::tiny_pe_dirs;

    /// A public key pair committed for tests (see testdata/README.md).
    pub(crate) fn test_signer() -> Signer {
        Signer::from_pem(
            include_str!("../testdata/secureboot-test.key"),
            include_bytes!("../testdata/secureboot-test.crt"),
            Path::new("secureboot-test.key"),
            Path::new("secureboot-test.crt"),
        )
        .unwrap()
    }

    /// A tiled image (headers 0..0x200, .text 0x200..0x400) with five data
    /// directories and an odd tail, so signing must pad it.
    fn image() -> Vec<u8> {
        let mut b = tiny_pe_dirs(0x8664, 0x200, 5);
        b.extend_from_slice(b"trailing symbols");
        b.push(0x5A);
        b
    }

    const CHECKSUM: usize = 0x44 + 20 + 64;
    const CERT_DIR: usize = 0x44 + 20 + 112 + 8 * CERTIFICATE_TABLE;

    #[test]
    fn pe_image_data_is_well_formed_der() {
        let any = Any::from_der(&SPC_PE_IMAGE_DATA_VALUE).unwrap();
        assert_eq!(any.to_der().unwrap(), SPC_PE_IMAGE_DATA_VALUE);
        let text: Vec<u16> = SPC_PE_IMAGE_DATA_VALUE[11..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&text).unwrap(), "<<<Obsolete>>>");
    }

    #[test]
    fn the_digest_skips_the_checksum_and_the_certificate_entry_only() {
        let b = image();
        let base = image_digest(&b, "t").unwrap();
        // (The certificate entry: signing fills it in, and the digest of the
        // signed image is the unsigned one's, tested below.)
        for at in [CHECKSUM, CHECKSUM + 3] {
            let mut c = b.clone();
            c[at] ^= 0xFF;
            assert_eq!(
                image_digest(&c, "t").unwrap(),
                base,
                "byte {at:#x} was hashed"
            );
        }
        // Every other byte counts: one in the DOS header, one beside each
        // skipped field, one in .text and the last.
        for at in [
            2,
            CHECKSUM - 12, // Win32VersionValue (SizeOfHeaders is just before CheckSum)
            CHECKSUM + 4,
            CERT_DIR - 1,
            CERT_DIR + 8,
            0x300,
            b.len() - 1,
        ] {
            let mut c = b.clone();
            c[at] ^= 0x01;
            assert_ne!(
                image_digest(&c, "t").unwrap(),
                base,
                "byte {at:#x} was not hashed"
            );
        }
    }

    #[test]
    fn a_signature_is_an_aligned_win_certificate_the_header_names() {
        let b = image();
        let signed = test_signer().sign(&b, "t").unwrap();
        let start = b.len().next_multiple_of(8);
        assert_eq!(
            &signed[..b.len()],
            &b[..CHECKSUM]
                .iter()
                .chain(&signed[CHECKSUM..CHECKSUM + 4])
                .chain(&b[CHECKSUM + 4..CERT_DIR])
                .chain(&signed[CERT_DIR..CERT_DIR + 8])
                .chain(&b[CERT_DIR + 8..])
                .copied()
                .collect::<Vec<u8>>()[..]
        );
        assert!(signed[b.len()..start].iter().all(|&x| x == 0), "padding");
        assert_eq!(signed.len() % 8, 0);
        let len = u32::from_le_bytes(signed[start..start + 4].try_into().unwrap()) as usize;
        #[rustfmt::skip]
        assert_eq!(&signed[start + 4..start + 8], &[
            0x00, 0x02, // wRevision: WIN_CERT_REVISION_2_0
            0x02, 0x00, // wCertificateType: WIN_CERT_TYPE_PKCS_SIGNED_DATA
        ]);
        assert_eq!(signed.len(), start + len.next_multiple_of(8));
        let dir = &signed[CERT_DIR..CERT_DIR + 8];
        assert_eq!(
            u32::from_le_bytes(dir[..4].try_into().unwrap()) as usize,
            start
        );
        assert_eq!(
            u32::from_le_bytes(dir[4..].try_into().unwrap()) as usize,
            signed.len() - start
        );
        let pe = Pe::parse(&signed, "signed").unwrap();
        assert_eq!(pe.checksum, uki::pe_checksum(&signed, CHECKSUM));
        // The signature names the digest of the image as signed.
        let table = certificate_table(&signed, "signed").unwrap();
        assert_eq!(table.len(), 1);
        let digest = image_digest(&signed, "signed").unwrap();
        assert_eq!(digest, image_digest(&b, "t").unwrap());
        assert!(table[0].data.windows(32).any(|w| w == digest));
    }

    #[test]
    fn signing_is_deterministic_and_a_second_signature_is_appended() {
        let s = test_signer();
        let once = s.sign(&image(), "t").unwrap();
        assert_eq!(once, s.sign(&image(), "t").unwrap());
        let twice = s.sign(&once, "t").unwrap();
        assert_eq!(&twice[CERT_DIR + 8..once.len()], &once[CERT_DIR + 8..]);
        let table = certificate_table(&twice, "t").unwrap();
        assert_eq!(table.len(), 2);
        // Stripped, it is the unsigned image with signing's padding.
        let mut padded = image();
        padded.resize(padded.len().next_multiple_of(8), 0);
        let stripped = strip(&twice, "t").unwrap();
        assert_eq!(stripped[..CHECKSUM], padded[..CHECKSUM]);
        assert_eq!(stripped[CHECKSUM + 4..], padded[CHECKSUM + 4..]);
        assert_eq!(
            Pe::parse(&stripped, "s").unwrap().checksum,
            uki::pe_checksum(&stripped, CHECKSUM)
        );
        assert_eq!(
            table[0], table[1],
            "both sign the same digest, deterministically"
        );
    }

    #[test]
    fn a_sparse_image_signs_as_the_whole_one() {
        let whole = image();
        let mut sparse = whole.clone();
        // Leave out most of .text, from an odd offset.
        let hole = 0x203..0x3F1;
        sparse[hole.clone()].fill(0);
        let s = test_signer();
        let mut signed = s
            .sign_sparse(sparse, &[(hole.start as u64, &whole[hole.clone()])], "t")
            .unwrap();
        assert!(signed[hole.clone()].iter().all(|&x| x == 0));
        signed[hole.clone()].copy_from_slice(&whole[hole]);
        assert_eq!(signed, s.sign(&whole, "t").unwrap());
    }

    #[test]
    fn bytes_outside_every_section_are_refused() {
        let mut b = tiny_pe_dirs(0x8664, 0x200, 5);
        // Move .text's data from 0x200 to 0x400: 0x200..0x400 is in nothing.
        let s = 0x44 + 20 + 112 + 40;
        b[s + 20..s + 24].copy_from_slice(&0x400u32.to_le_bytes());
        b.resize(0x600, 0);
        assert!(matches!(
            test_signer().sign(&b, "t"),
            Err(AuthenticodeError::Gap {
                start: 0x200,
                end: 0x400,
                ..
            })
        ));
        // No data directory entry for a certificate table.
        assert!(matches!(
            test_signer().sign(&crate::uki::tests::tiny_pe(0x8664, 0x200), "t"),
            Err(AuthenticodeError::NoCertificateDirectory { .. })
        ));
    }

    #[test]
    fn keys_are_checked_against_the_certificate() {
        let key = include_str!("../testdata/secureboot-test.key");
        let cert = include_bytes!("../testdata/secureboot-test.crt");
        let (k, c) = (Path::new("k"), Path::new("c"));
        // DER certificates are read as well as PEM.
        let der = test_signer().certificate_der().to_vec();
        assert!(Signer::from_pem(key, &der, k, c).is_ok());
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMA==\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            Signer::from_pem(encrypted, cert, k, c),
            Err(AuthenticodeError::EncryptedKey(_))
        ));
        assert!(matches!(
            Signer::from_pem(key, b"garbage", k, c),
            Err(AuthenticodeError::Certificate { .. })
        ));
        // Another key with this certificate.
        let other = rsa::PrivateKey::new(&mut test_rng(), 2048).unwrap();
        let other =
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, der::pem::LineEnding::LF).unwrap();
        assert!(matches!(
            Signer::from_pem(&other, cert, k, c),
            Err(AuthenticodeError::KeyMismatch { .. })
        ));
    }

    /// A deterministic RNG is enough for a throwaway key in a test.
    fn test_rng() -> impl rsa::rand_core::TryCryptoRng {
        struct Counter(u64);
        impl rsa::rand_core::TryRng for Counter {
            type Error = core::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                Ok(self.try_next_u64()? as u32)
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                // splitmix64
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                Ok(z ^ (z >> 31))
            }
            fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
                for chunk in dst.chunks_mut(8) {
                    let v = self.try_next_u64()?.to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
                Ok(())
            }
        }
        impl rsa::rand_core::TryCryptoRng for Counter {}
        Counter(7)
    }
}
