//! What UEFI Secure Boot changes on an ESP: every PE image the firmware or
//! a loader starts is signed (`authenticode`), and optionally shim goes in
//! front of them.
//!
//! - Signed only (`--sign`): the boot file — the UKI, or systemd-boot in
//!   front of the UKIs — and every UKI carry our signature. The firmware
//!   starts them when our certificate is in its `db`.
//! - With shim (`--shim`): Debian's shim, signed by Microsoft's UEFI CA
//!   (which stock PCs trust), is the boot file; it starts
//!   `grub{x64,aa64}.efi` beside it — our signed systemd-boot, or the UKI
//!   when booting directly — if its signature verifies against `db`, shim's
//!   built-in vendor certificate or the Machine Owner Keys (MOK). On first
//!   boot our certificate is none of those: shim starts MokManager
//!   (`mm{x64,aa64}.efi`), where "Enroll key from disk" takes
//!   [`CERTIFICATE`] from this ESP; after a reboot shim starts our loader.
//!   systemd-boot then has shim verify each UKI it loads, against the same
//!   keys.
//!
//! The certificate (DER) is on every signed ESP, for `mokutil --import`
//! from a running system or a firmware's own key enrollment menu. shim
//! also requires SBAT data in what it starts: systemd-boot and the UKI
//! (from the stub, or added by `uki`) have a `.sbat` section.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::arch::Arch;
use crate::authenticode::{self, AuthenticodeError, Signer};
use crate::fat::{FatError, Files};
use crate::uki::{self, Uki};

#[derive(Debug, Error)]
pub enum SecureBootError {
    #[error("signing {what}")]
    Sign {
        what: String,
        #[source]
        error: Box<AuthenticodeError>,
    },
    #[error("reading shim's {path} (Debian: apt-get install shim-signed)")]
    ReadShim {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path} is not a PE image for {arch}")]
    ShimArch { path: PathBuf, arch: Arch },
    #[error(
        "{path} carries no signature: firmware would refuse it (use the .signed files of shim-signed)"
    )]
    ShimUnsigned { path: PathBuf },
    #[error(transparent)]
    Fat(Box<FatError>),
}

// Boxed: a FAT error is large, and every signing result would carry it.
impl From<FatError> for SecureBootError {
    fn from(e: FatError) -> Self {
        SecureBootError::Fat(Box::new(e))
    }
}

/// Where our certificate goes on the ESP.
pub const CERTIFICATE: &str = "EFI/phase/phase-boot.cer";

/// Debian's signed shim binaries (package shim-signed).
pub const DEBIAN_SHIM_DIR: &str = "/usr/lib/shim";

/// shim and MokManager, as signed by Microsoft.
#[derive(Debug, Clone)]
pub struct Shim {
    pub shim: Vec<u8>,
    pub mok_manager: Vec<u8>,
}

impl Shim {
    /// Reads `shim{x64,aa64}.efi.signed` and `mm{x64,aa64}.efi.signed`
    /// from `dir` (Debian: [`DEBIAN_SHIM_DIR`]).
    pub fn load(dir: &Path, arch: Arch) -> Result<Shim, SecureBootError> {
        let read = |name: String| {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|error| SecureBootError::ReadShim {
                path: path.clone(),
                error,
            })?;
            match uki::Pe::parse(&bytes, "shim") {
                Ok(pe) if pe.machine == arch.pe_machine() => {}
                _ => return Err(SecureBootError::ShimArch { path, arch }),
            }
            match authenticode::certificate_table(&bytes, "shim") {
                Ok(table) if !table.is_empty() => Ok(bytes),
                _ => Err(SecureBootError::ShimUnsigned { path }),
            }
        };
        let sfx = arch.efi_suffix();
        Ok(Shim {
            shim: read(format!("shim{sfx}.efi.signed"))?,
            mok_manager: read(format!("mm{sfx}.efi.signed"))?,
        })
    }
}

/// How an image's boot files are signed.
#[derive(Debug, Clone)]
pub struct SecureBoot {
    pub signer: Signer,
    /// shim in front of our signed loader.
    pub shim: Option<Shim>,
}

/// The loader shim starts: `grub{x64,aa64}.efi` beside it.
pub fn second_stage(arch: Arch) -> String {
    format!("EFI/BOOT/grub{}.efi", arch.efi_suffix())
}

/// Where shim looks for MokManager: beside itself.
pub fn mok_manager(arch: Arch) -> String {
    format!("EFI/BOOT/mm{}.efi", arch.efi_suffix())
}

impl SecureBoot {
    /// Signs a PE image; `what` names it in errors.
    pub fn sign(&self, image: &[u8], what: &str) -> Result<Vec<u8>, SecureBootError> {
        self.signer
            .sign(image, what)
            .map_err(|error| SecureBootError::Sign {
                what: what.to_owned(),
                error: Box::new(error),
            })
    }

    /// Signs a UKI built from `kernel` and `initrd`; a sparse one
    /// ([`uki::build_sparse`]) stays sparse.
    pub fn sign_uki(
        &self,
        built: Uki,
        sparse: bool,
        kernel: &[u8],
        initrd: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, SecureBootError> {
        let mut holes = Vec::new();
        if sparse {
            for (name, data) in uki::SPARSE_SECTIONS.iter().zip([kernel, initrd]) {
                if let Some(s) = built.sections.iter().find(|s| s.name == *name) {
                    holes.push((u64::from(s.raw_offset), data));
                }
            }
        }
        self.signer
            .sign_sparse(built.bytes, &holes, what)
            .map_err(|error| SecureBootError::Sign {
                what: what.to_owned(),
                error: Box::new(error),
            })
    }

    /// Adds the signed boot file — behind shim and MokManager when asked —
    /// and our certificate.
    pub fn add_boot_file(
        &self,
        files: &mut Files,
        arch: Arch,
        signed: Vec<u8>,
    ) -> Result<(), SecureBootError> {
        match &self.shim {
            Some(shim) => {
                files.add(arch.efi_boot_file(), shim.shim.clone())?;
                files.add(&mok_manager(arch), shim.mok_manager.clone())?;
                files.add(&second_stage(arch), signed)?;
            }
            None => files.add(arch.efi_boot_file(), signed)?,
        }
        files.add(CERTIFICATE, self.signer.certificate_der().to_vec())?;
        Ok(())
    }
}
