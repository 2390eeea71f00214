//! Reading an image's inputs from disk, with errors that name the input:
//! kernels, the initramfs, the systemd-boot stub and boot manager, device
//! trees — and checking them against the profile.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::arch::{Arch, ArchError};
use crate::esp::{BootSet, Variant};
use crate::menu::Menu;
use crate::profile::{Profile, ProfileError};
use crate::uki;

#[derive(Debug, Error)]
pub enum SourcesError {
    #[error("no kernel given (pass --kernel PATH, or --kernel NAME=PATH per variant)")]
    NoKernel,
    #[error("kernel {variant:?}: {} does not exist", path.display())]
    MissingKernel { variant: String, path: PathBuf },
    #[error("reading the {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("kernel {variant:?} ({})", path.display())]
    Kernel {
        variant: String,
        path: PathBuf,
        #[source]
        error: ArchError,
    },
    #[error(
        "the systemd-boot stub {} cannot be read (install systemd-boot-efi for {arch}, or pass --stub PATH)",
        path.display()
    )]
    UnreadableStub {
        path: PathBuf,
        arch: Arch,
        #[source]
        error: std::io::Error,
    },
    #[error("the stub {} is not a usable systemd-stub", path.display())]
    BadStub {
        path: PathBuf,
        #[source]
        error: uki::UkiError,
    },
    #[error("the stub {} is for {stub}, the kernels are {kernel}", path.display())]
    StubArch {
        path: PathBuf,
        stub: String,
        kernel: Arch,
    },
    #[error(
        "systemd-boot {} cannot be read (install systemd-boot-efi for {arch}, pass --systemd-boot PATH, or use --direct)",
        path.display()
    )]
    UnreadableSystemdBoot {
        path: PathBuf,
        arch: Arch,
        #[source]
        error: std::io::Error,
    },
    #[error("kernel variant {0:?} is given twice")]
    DuplicateVariant(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// Where the inputs are.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// (variant name, path); a single unnamed kernel is variant `linux`.
    pub kernels: Vec<(String, PathBuf)>,
    pub initrd: PathBuf,
    pub stub: Option<PathBuf>,
    pub systemd_boot: Option<PathBuf>,
    /// Replaces the profile's command line.
    pub cmdline: Option<String>,
    /// Appended to every entry's command line.
    pub append: String,
    pub dtb: Option<PathBuf>,
    pub dtb_dir: Option<PathBuf>,
    pub direct: bool,
    /// Replaces the profile's menu timeout (seconds).
    pub timeout: Option<u32>,
}

/// Debian's systemd-boot-efi paths for an architecture.
pub fn default_stub(arch: Arch) -> PathBuf {
    PathBuf::from(format!(
        "/usr/lib/systemd/boot/efi/linux{}.efi.stub",
        arch.efi_suffix()
    ))
}

pub fn default_systemd_boot(arch: Arch) -> PathBuf {
    PathBuf::from(format!(
        "/usr/lib/systemd/boot/efi/systemd-boot{}.efi",
        arch.efi_suffix()
    ))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SourcesError> {
    std::fs::read(path).map_err(|error| SourcesError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

impl Sources {
    /// Reads and checks everything; `build_version` goes into `.osrel`.
    pub fn load(&self, profile: Profile, build_version: &str) -> Result<BootSet, SourcesError> {
        if self.kernels.is_empty() {
            return Err(SourcesError::NoKernel);
        }
        let mut variants = Vec::new();
        let mut arches = Vec::new();
        for (name, path) in &self.kernels {
            if variants.iter().any(|v: &Variant| &v.name == name) {
                return Err(SourcesError::DuplicateVariant(name.clone()));
            }
            if !path.exists() {
                return Err(SourcesError::MissingKernel {
                    variant: name.clone(),
                    path: path.clone(),
                });
            }
            let kernel = read("kernel", path)?;
            let arch = Arch::of_kernel(&kernel, &path.display().to_string()).map_err(|error| {
                SourcesError::Kernel {
                    variant: name.clone(),
                    path: path.clone(),
                    error,
                }
            })?;
            arches.push((name.clone(), arch));
            variants.push(Variant {
                name: name.clone(),
                kernel,
            });
        }
        let arch = profile.check(&arches)?;
        let initrd = read("initramfs", &self.initrd)?;

        let stub_path = self.stub.clone().unwrap_or_else(|| default_stub(arch));
        let stub = std::fs::read(&stub_path).map_err(|error| SourcesError::UnreadableStub {
            path: stub_path.clone(),
            arch,
            error,
        })?;
        let pe = uki::Pe::parse(&stub, "the stub").map_err(|error| SourcesError::BadStub {
            path: stub_path.clone(),
            error,
        })?;
        if pe.machine != arch.pe_machine() {
            return Err(SourcesError::StubArch {
                path: stub_path,
                stub: Arch::from_pe_machine(pe.machine)
                    .map_or(format!("PE machine {:#06x}", pe.machine), |a| a.to_string()),
                kernel: arch,
            });
        }
        let systemd_boot = if self.direct {
            None
        } else {
            let path = self
                .systemd_boot
                .clone()
                .unwrap_or_else(|| default_systemd_boot(arch));
            Some(
                std::fs::read(&path).map_err(|error| SourcesError::UnreadableSystemdBoot {
                    path: path.clone(),
                    arch,
                    error,
                })?,
            )
        };
        let dtb = self
            .dtb
            .as_deref()
            .map(|p| read("device tree", p))
            .transpose()?;
        let mut dtb_dir = Vec::new();
        if let Some(dir) = &self.dtb_dir {
            collect_dtbs(dir, dir, &mut dtb_dir)?;
        }
        let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        let base = self.cmdline.as_deref().unwrap_or(profile.cmdline(arch));
        let menu = Menu::new(
            &names,
            base,
            &self.append,
            self.timeout.unwrap_or(profile.menu_timeout()),
            profile.editor(),
        );
        Ok(BootSet {
            arch,
            variants,
            initrd,
            stub,
            systemd_boot,
            menu,
            direct: self.direct,
            dtb,
            dtb_dir,
            osrel: uki::os_release(env!("CARGO_PKG_VERSION"), arch).replace(
                "VERSION_ID=",
                &format!("BUILD_ID={build_version}\nVERSION_ID="),
            ),
        })
    }
}

/// Every `*.dtb` under `dir`, by path relative to `root`, sorted.
fn collect_dtbs(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), SourcesError> {
    let io = |error| SourcesError::Read {
        what: "device tree directory",
        path: dir.to_owned(),
        error,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            collect_dtbs(root, &path, out)?;
        } else if path.extension().is_some_and(|x| x == "dtb") {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push((rel, read("device tree", &path)?));
        }
    }
    Ok(())
}

/// Where the BIOS boot pieces come from (Debian's syslinux, syslinux-common
/// and isolinux packages by default).
#[derive(Debug, Clone)]
pub struct BiosSources {
    /// The syslinux installer, which carries ldlinux.sys and its boot sector.
    pub syslinux: PathBuf,
    /// Directory of COM32 modules (menu.c32, libutil.c32, libcom32.c32,
    /// ldlinux.c32); `None` uses the built-in prompt instead of a menu.
    pub modules: Option<PathBuf>,
    /// MBR boot code; default gptmbr.bin, or mbr.bin for a hybrid MBR.
    pub mbr_code: Option<PathBuf>,
    pub isolinux: PathBuf,
    pub isohdpfx: PathBuf,
}

impl Default for BiosSources {
    fn default() -> Self {
        Self {
            syslinux: PathBuf::from("/usr/bin/syslinux"),
            modules: Some(PathBuf::from("/usr/lib/syslinux/modules/bios")),
            mbr_code: None,
            isolinux: PathBuf::from("/usr/lib/ISOLINUX/isolinux.bin"),
            isohdpfx: PathBuf::from("/usr/lib/ISOLINUX/isohdpfx.bin"),
        }
    }
}

/// The COM32 modules the syslinux menu needs, besides ldlinux.c32.
pub const MENU_MODULES: [&str; 3] = ["menu.c32", "libutil.c32", "libcom32.c32"];

#[derive(Debug, Error)]
pub enum BiosError {
    #[error("reading the {what} {} (install Debian's {package}, or pass {flag})", path.display())]
    Read {
        what: &'static str,
        package: &'static str,
        flag: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}", path.display())]
    Syslinux {
        path: PathBuf,
        #[source]
        error: crate::syslinux::SyslinuxError,
    },
}

impl BiosSources {
    fn read(
        what: &'static str,
        package: &'static str,
        flag: &'static str,
        path: &Path,
    ) -> Result<Vec<u8>, BiosError> {
        std::fs::read(path).map_err(|error| BiosError::Read {
            what,
            package,
            flag,
            path: path.to_owned(),
            error,
        })
    }

    /// The menu modules, or none when no module directory is given.
    pub fn menu_modules(&self) -> Result<Vec<(String, Vec<u8>)>, BiosError> {
        let Some(dir) = &self.modules else {
            return Ok(Vec::new());
        };
        MENU_MODULES
            .iter()
            .map(|m| {
                Self::read(
                    "syslinux menu module",
                    "syslinux-common",
                    "--syslinux-modules DIR",
                    &dir.join(m),
                )
                .map(|b| ((*m).to_owned(), b))
            })
            .collect()
    }

    /// What the USB image needs.
    pub fn usb(&self, hybrid: bool) -> Result<crate::usb::Bios, BiosError> {
        let installer = Self::read(
            "syslinux installer",
            "syslinux",
            "--syslinux PATH",
            &self.syslinux,
        )?;
        let syslinux = crate::syslinux::Syslinux::from_installer(
            &installer,
            &self.syslinux.display().to_string(),
        )
        .map_err(|error| BiosError::Syslinux {
            path: self.syslinux.clone(),
            error,
        })?;
        let mbr = self.mbr_code.clone().unwrap_or_else(|| {
            PathBuf::from(if hybrid {
                "/usr/lib/syslinux/mbr/mbr.bin"
            } else {
                "/usr/lib/syslinux/mbr/gptmbr.bin"
            })
        });
        Ok(crate::usb::Bios {
            syslinux,
            modules: self.menu_modules()?,
            mbr_code: Self::read("MBR boot code", "syslinux-common", "--mbr-code PATH", &mbr)?,
        })
    }
}

impl BiosSources {
    /// What an x86_64 ISO needs: isolinux.bin, isohdpfx.bin, and
    /// ldlinux.c32 with the menu modules from the module directory.
    pub fn iso(&self) -> Result<crate::cdrom::IsoBios, BiosError> {
        let modules_dir = self
            .modules
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/lib/syslinux/modules/bios"));
        Ok(crate::cdrom::IsoBios {
            isolinux: Self::read(
                "isolinux.bin",
                "isolinux",
                "--isolinux PATH",
                &self.isolinux,
            )?,
            ldlinux_c32: Self::read(
                "ldlinux.c32",
                "syslinux-common",
                "--syslinux-modules DIR",
                &modules_dir.join("ldlinux.c32"),
            )?,
            modules: self.menu_modules()?,
            isohdpfx: Self::read(
                "isohybrid MBR code",
                "isolinux",
                "--isohdpfx PATH",
                &self.isohdpfx,
            )?,
        })
    }
}
