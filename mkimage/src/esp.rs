//! What goes on an EFI system partition, and the boot set every image is
//! made from: kernel variants, one initramfs, the stub, the menu.
//!
//! Two UEFI layouts:
//! - direct: the UKI (with `.cmdline`) is the removable-media boot file
//!   `EFI/BOOT/BOOT{X64,AA64}.EFI` — nothing between firmware and kernel;
//! - menu: systemd-boot is the boot file, each variant's UKI (without
//!   `.cmdline`) sits at `EFI/phase/<variant>.efi`, and one entry per mode
//!   starts it with its command line (see `menu`).
//!
//! Device trees for firmware that loads them (U-Boot) go under `dtb/`.

use thiserror::Error;

use crate::arch::Arch;
use crate::fat::{FatError, Files};
use crate::menu::{self, Menu, MenuError};
use crate::secureboot::{SecureBoot, SecureBootError};
use crate::uki::{self, UkiError};

#[derive(Debug, Error)]
pub enum EspError {
    #[error("building the UKI for kernel variant {variant:?}")]
    Uki {
        variant: String,
        #[source]
        error: UkiError,
    },
    #[error("a menu needs systemd-boot (pass --systemd-boot PATH), or use --direct")]
    NoSystemdBoot,
    #[error("the systemd-boot binary is for PE machine {machine:#06x}, not {arch}")]
    SystemdBootArch { machine: u16, arch: Arch },
    #[error("systemd-boot")]
    SystemdBoot(#[source] UkiError),
    #[error("a direct UEFI boot starts one kernel; there are {0} variants")]
    DirectVariants(usize),
    #[error(transparent)]
    Fat(#[from] FatError),
    #[error(transparent)]
    SecureBoot(Box<SecureBootError>),
    #[error(transparent)]
    Menu(#[from] MenuError),
}

// Boxed: a signing error carries a FAT error and names, and would make
// every ESP result as large.
impl From<SecureBootError> for EspError {
    fn from(e: SecureBootError) -> Self {
        EspError::SecureBoot(Box::new(e))
    }
}

/// One kernel variant.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub kernel: Vec<u8>,
}

/// Everything an image boots.
#[derive(Debug, Clone)]
pub struct BootSet {
    pub arch: Arch,
    pub variants: Vec<Variant>,
    pub initrd: Vec<u8>,
    pub stub: Vec<u8>,
    pub systemd_boot: Option<Vec<u8>>,
    pub menu: Menu,
    /// Direct boot: the UKI as the boot file, no menu.
    pub direct: bool,
    /// Device tree embedded in each UKI (`.dtb`).
    pub dtb: Option<Vec<u8>>,
    /// Device trees copied to `dtb/` (relative path, bytes).
    pub dtb_dir: Vec<(String, Vec<u8>)>,
    /// `.osrel` text.
    pub osrel: String,
    /// Sign the UKIs and systemd-boot (and put shim in front).
    pub secure_boot: Option<SecureBoot>,
    /// Every file read, as (what, path): an output must be none of them.
    pub inputs: Vec<(String, std::path::PathBuf)>,
    /// The systemd-stub used (given or found).
    pub stub_path: std::path::PathBuf,
    /// systemd-boot, when the menu needs it.
    pub systemd_boot_path: Option<std::path::PathBuf>,
    /// The state partition the initramfs names (its `image.json`), which a
    /// disk image makes beside the system partition.
    pub state_partlabel: Option<String>,
}

impl BootSet {
    /// The UKI of each variant: with the default entry's command line when
    /// booted directly, without one behind the menu.
    pub fn ukis(&self) -> Result<Vec<(String, Vec<u8>)>, EspError> {
        self.ukis_built(false)
    }

    fn ukis_built(&self, sparse: bool) -> Result<Vec<(String, Vec<u8>)>, EspError> {
        let build = if sparse {
            uki::build_sparse
        } else {
            uki::build
        };
        let cmdline = self
            .direct
            .then(|| self.menu.default_entry().cmdline.as_str());
        self.variants
            .iter()
            .map(|v| {
                build(&uki::Parts {
                    stub: &self.stub,
                    kernel: &v.kernel,
                    initrd: &self.initrd,
                    cmdline,
                    osrel: &self.osrel,
                    uname: None,
                    dtb: self.dtb.as_deref(),
                })
                .map_err(|error| EspError::Uki {
                    variant: v.name.clone(),
                    error,
                })
                .and_then(|u| match &self.secure_boot {
                    Some(sb) => {
                        let what = format!("the UKI of variant {:?}", v.name);
                        Ok(sb.sign_uki(u, sparse, &v.kernel, &self.initrd, &what)?)
                    }
                    None => Ok(u.bytes),
                })
                .map(|bytes| (v.name.clone(), bytes))
            })
            .collect()
    }

    /// The UEFI side of an ESP: boot file, UKIs, loader entries, DTBs.
    pub fn add_uefi(&self, files: &mut Files) -> Result<(), EspError> {
        self.add_uefi_ukis(files, self.ukis()?)
    }

    /// Like [`BootSet::add_uefi`], with UKIs from [`uki::build_sparse`]
    /// (zeros where each variant's kernel and the initramfs go), for a
    /// writer that streams those from the inputs.
    pub fn add_uefi_sparse(&self, files: &mut Files) -> Result<(), EspError> {
        self.add_uefi_ukis(files, self.ukis_built(true)?)
    }

    fn add_uefi_ukis(
        &self,
        files: &mut Files,
        ukis: Vec<(String, Vec<u8>)>,
    ) -> Result<(), EspError> {
        if self.direct {
            if ukis.len() != 1 {
                return Err(EspError::DirectVariants(ukis.len()));
            }
            let (_, bytes) = ukis.into_iter().next().expect("one");
            self.add_boot_file(files, bytes)?;
        } else {
            let sd = self.systemd_boot.as_ref().ok_or(EspError::NoSystemdBoot)?;
            let pe = uki::Pe::parse(sd, "systemd-boot").map_err(EspError::SystemdBoot)?;
            if pe.machine != self.arch.pe_machine() {
                return Err(EspError::SystemdBootArch {
                    machine: pe.machine,
                    arch: self.arch,
                });
            }
            let sd = match &self.secure_boot {
                Some(sb) => sb.sign(sd, "systemd-boot")?,
                None => sd.clone(),
            };
            self.add_boot_file(files, sd)?;
            files.add("loader/loader.conf", self.menu.loader_conf()?.into_bytes())?;
            for (path, text) in self.menu.systemd_boot_entries()? {
                files.add(&path, text.into_bytes())?;
            }
            for (name, bytes) in ukis {
                files.add(&menu::uki_path(&name), bytes)?;
            }
        }
        for (rel, bytes) in &self.dtb_dir {
            files.add(&format!("dtb/{rel}"), bytes.clone())?;
        }
        Ok(())
    }

    /// The removable-media boot file, or with Secure Boot what that adds.
    fn add_boot_file(&self, files: &mut Files, bytes: Vec<u8>) -> Result<(), EspError> {
        match &self.secure_boot {
            Some(sb) => sb.add_boot_file(files, self.arch, bytes)?,
            None => files.add(self.arch.efi_boot_file(), bytes)?,
        }
        Ok(())
    }

    /// The BIOS side: each variant's kernel and the initramfs under
    /// `/phase/<variant>/`, where the syslinux menu looks.
    pub fn bios_files(&self) -> Vec<(String, &[u8])> {
        let mut out = Vec::new();
        for v in &self.variants {
            let dir = format!("phase/{}", menu::dir_name(&v.name));
            out.push((format!("{dir}/vmlinuz"), v.kernel.as_slice()));
            out.push((format!("{dir}/initrd"), self.initrd.as_slice()));
        }
        out
    }
}
