//! Reading an image's inputs from disk, with errors that name the input:
//! kernels, the initramfs, the systemd-boot stub and boot manager, device
//! trees — and checking them against the profile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::arch::Arch;
use crate::esp::{BootSet, Variant};
use crate::inspect::{self, InspectError};
use crate::menu::{Menu, MenuError};
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
    #[error("kernel variant {variant:?}")]
    Kernel {
        variant: String,
        path: PathBuf,
        #[source]
        error: Box<InspectError>,
    },
    /// A bad initramfs or device tree; the error names the file.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(
        "no systemd-stub for {arch}: {file} is in none of {tried}; {hint}, or pass --stub PATH"
    )]
    NoStub {
        arch: Arch,
        file: String,
        tried: String,
        hint: String,
    },
    #[error(
        "no systemd-boot for {arch}: {file} is in none of {tried}; {hint}, pass --systemd-boot PATH, or use --direct"
    )]
    NoSystemdBoot {
        arch: Arch,
        file: String,
        tried: String,
        hint: String,
    },
    #[error("the systemd-stub {} cannot be read (pass --stub PATH)", path.display())]
    UnreadableStub {
        path: PathBuf,
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
        "systemd-boot {} cannot be read (pass --systemd-boot PATH, or use --direct)",
        path.display()
    )]
    UnreadableSystemdBoot {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("--dtb-dir: {} {problem}", path.display())]
    DtbDir { path: PathBuf, problem: String },
    #[error("kernel variant {0:?} is given twice")]
    DuplicateVariant(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Menu(#[from] MenuError),
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
    /// The `phase.mode` of the default entry (default: `internet`).
    pub default_mode: Option<String>,
}

/// Where Debian's systemd-boot-efi puts its files.
pub const EFI_DIR: &str = "/usr/lib/systemd/boot/efi";

/// Debian's systemd-boot-efi paths for an architecture.
pub fn default_stub(arch: Arch) -> PathBuf {
    Path::new(EFI_DIR).join(stub_name(arch))
}

pub fn default_systemd_boot(arch: Arch) -> PathBuf {
    Path::new(EFI_DIR).join(systemd_boot_name(arch))
}

fn stub_name(arch: Arch) -> String {
    format!("linux{}.efi.stub", arch.efi_suffix())
}

fn systemd_boot_name(arch: Arch) -> String {
    format!("systemd-boot{}.efi", arch.efi_suffix())
}

/// Where systemd-boot-efi's files are looked for when no path is given:
/// the installed package, then the package `cargo xtask` fetches for that
/// architecture and unpacks under `<target>/debian/systemd-boot-efi_<arch>/root`
/// (CARGO_TARGET_DIR, else ./target), as it does for arm64.
pub fn efi_dirs(arch: Arch) -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    vec![
        PathBuf::from(EFI_DIR),
        target
            .join("debian")
            .join(format!("systemd-boot-efi_{}", arch.debian()))
            .join("root")
            .join(EFI_DIR.trim_start_matches('/')),
    ]
}

/// The first of [`efi_dirs`] that holds `file`, or the directories tried.
fn find_efi(file: &str, arch: Arch) -> Result<PathBuf, String> {
    let dirs = efi_dirs(arch);
    dirs.iter()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// How to get systemd-boot-efi for `arch` on this host.
pub fn install_hint(arch: Arch) -> String {
    let host = std::env::consts::ARCH.parse::<Arch>().ok();
    if host == Some(arch) {
        "install Debian's systemd-boot-efi (apt-get install systemd-boot-efi)".into()
    } else {
        let a = arch.debian();
        format!(
            "install Debian's systemd-boot-efi:{a} beside the host's (dpkg --add-architecture {a} && apt-get update && apt-get install systemd-boot-efi:{a})"
        )
    }
}

/// The systemd-stub to use: `explicit`, else the first found.
pub fn resolve_stub(explicit: Option<&Path>, arch: Arch) -> Result<PathBuf, SourcesError> {
    match explicit {
        Some(p) => Ok(p.to_owned()),
        None => find_efi(&stub_name(arch), arch).map_err(|tried| SourcesError::NoStub {
            arch,
            file: stub_name(arch),
            tried,
            hint: install_hint(arch),
        }),
    }
}

/// systemd-boot to use: `explicit`, else the first found.
pub fn resolve_systemd_boot(explicit: Option<&Path>, arch: Arch) -> Result<PathBuf, SourcesError> {
    match explicit {
        Some(p) => Ok(p.to_owned()),
        None => {
            find_efi(&systemd_boot_name(arch), arch).map_err(|tried| SourcesError::NoSystemdBoot {
                arch,
                file: systemd_boot_name(arch),
                tried,
                hint: install_hint(arch),
            })
        }
    }
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
        let mut inputs = Vec::new();
        for (name, _) in &self.kernels {
            crate::menu::check_variant(name)?;
        }
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
            inputs.push((format!("kernel {name:?}"), path.clone()));
            let arch = inspect::kernel(&kernel, &path.display().to_string())
                .map_err(|error| SourcesError::Kernel {
                    variant: name.clone(),
                    path: path.clone(),
                    error: Box::new(error),
                })?
                .arch;
            arches.push((name.clone(), arch));
            variants.push(Variant {
                name: name.clone(),
                kernel,
            });
        }
        let arch = profile.check(&arches)?;
        let initrd = read("initramfs", &self.initrd)?;
        inputs.push(("initramfs".to_owned(), self.initrd.clone()));
        let what = self.initrd.display().to_string();
        let info = inspect::initramfs(&initrd, &what)?;
        let why = match self.kernels.as_slice() {
            [(_, k)] => format!("the kernel {} is {arch}", k.display()),
            _ => format!("the kernels are {arch}"),
        };
        inspect::check_initramfs_for(&info, &what, arch, &why)?;

        let stub_path = resolve_stub(self.stub.as_deref(), arch)?;
        let stub = std::fs::read(&stub_path).map_err(|error| SourcesError::UnreadableStub {
            path: stub_path.clone(),
            error,
        })?;
        inputs.push(("systemd-stub".to_owned(), stub_path.clone()));
        let pe = uki::Pe::parse(&stub, "the stub").map_err(|error| SourcesError::BadStub {
            path: stub_path.clone(),
            error,
        })?;
        if pe.machine != arch.pe_machine() {
            return Err(SourcesError::StubArch {
                path: stub_path.clone(),
                stub: Arch::from_pe_machine(pe.machine)
                    .map_or(format!("PE machine {:#06x}", pe.machine), |a| a.to_string()),
                kernel: arch,
            });
        }
        let (systemd_boot, systemd_boot_path) = if self.direct {
            (None, None)
        } else {
            let path = resolve_systemd_boot(self.systemd_boot.as_deref(), arch)?;
            inputs.push(("systemd-boot".to_owned(), path.clone()));
            let bytes =
                std::fs::read(&path).map_err(|error| SourcesError::UnreadableSystemdBoot {
                    path: path.clone(),
                    error,
                })?;
            (Some(bytes), Some(path))
        };
        let dtb = self
            .dtb
            .as_deref()
            .map(|p| read("device tree", p))
            .transpose()?;
        if let (Some(p), Some(bytes)) = (&self.dtb, &dtb) {
            inspect::dtb(bytes, &p.display().to_string())?;
            inputs.push(("device tree".to_owned(), p.clone()));
        }
        let mut dtb_dir = Vec::new();
        if let Some(dir) = &self.dtb_dir {
            collect_dtbs(dir, dir, &mut dtb_dir, &mut inputs)?;
        }
        let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        let base = self.cmdline.as_deref().unwrap_or(profile.cmdline(arch));
        let mut menu = Menu::new(
            &names,
            base,
            &self.append,
            self.timeout.unwrap_or(profile.menu_timeout()),
            profile.editor(),
        )?;
        if let Some(mode) = &self.default_mode {
            menu.set_default_mode(mode)?;
        }
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
            secure_boot: None,
            inputs,
            stub_path,
            systemd_boot_path,
            state_partlabel: info.image.and_then(|i| i.state).map(|s| s.partlabel),
        })
    }
}

/// How deep `--dtb-dir` goes: vendor directories are one level, a tree
/// deeper than this is a mistake.
pub const DTB_DEPTH: usize = 16;

/// Every `*.dtb` under `dir`, by path relative to `root`, sorted. Symlinks
/// are followed, but each directory is read once: one reached again (a
/// loop such as `a -> .`, or a second link to it) is refused, as is a tree
/// deeper than [`DTB_DEPTH`] and a `.dtb` that is not a regular file.
fn collect_dtbs(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, Vec<u8>)>,
    inputs: &mut Vec<(String, PathBuf)>,
) -> Result<(), SourcesError> {
    let mut seen = BTreeMap::new();
    walk_dtbs(root, dir, 0, &mut seen, &mut Vec::new(), out, inputs)
}

fn walk_dtbs(
    root: &Path,
    dir: &Path,
    depth: usize,
    seen: &mut BTreeMap<(u64, u64), PathBuf>,
    ancestors: &mut Vec<(u64, u64)>,
    out: &mut Vec<(String, Vec<u8>)>,
    inputs: &mut Vec<(String, PathBuf)>,
) -> Result<(), SourcesError> {
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| SourcesError::Read {
            what: "device tree directory",
            path,
            error,
        }
    };
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) {
        return Err(SourcesError::DtbDir {
            path: dir.to_owned(),
            problem: format!(
                "loops back to {} (a symlink to itself or a parent)",
                seen.get(&id)
                    .map_or(String::new(), |p| p.display().to_string())
            ),
        });
    }
    if let Some(first) = seen.get(&id) {
        return Err(SourcesError::DtbDir {
            path: dir.to_owned(),
            problem: format!(
                "is the directory {} again: each is copied once, so link it only once",
                first.display()
            ),
        });
    }
    if depth > DTB_DEPTH {
        return Err(SourcesError::DtbDir {
            path: dir.to_owned(),
            problem: format!("is deeper than {DTB_DEPTH} levels below {}", root.display()),
        });
    }
    seen.insert(id, dir.to_owned());
    ancestors.push(id);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        // Follows a symlink to what it names.
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            walk_dtbs(root, &path, depth + 1, seen, ancestors, out, inputs)?;
        } else if path.extension().is_some_and(|x| x == "dtb") {
            if !meta.is_file() {
                return Err(SourcesError::DtbDir {
                    path,
                    problem: "is not a regular file".into(),
                });
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let bytes = read("device tree", &path)?;
            inspect::dtb(&bytes, &path.display().to_string())?;
            out.push((rel, bytes));
            inputs.push(("device tree".to_owned(), path));
        }
    }
    ancestors.pop();
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

    /// The menu modules' paths, as inputs.
    fn module_paths(&self) -> Vec<(String, PathBuf)> {
        let Some(dir) = &self.modules else {
            return Vec::new();
        };
        MENU_MODULES
            .iter()
            .map(|m| (format!("syslinux module {m}"), dir.join(m)))
            .collect()
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
        let mut inputs = vec![("syslinux installer".to_owned(), self.syslinux.clone())];
        inputs.extend(self.module_paths());
        inputs.push(("MBR boot code".to_owned(), mbr.clone()));
        Ok(crate::usb::Bios {
            syslinux,
            modules: self.menu_modules()?,
            mbr_code: Self::read("MBR boot code", "syslinux-common", "--mbr-code PATH", &mbr)?,
            inputs,
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
            inputs: {
                let mut inputs = vec![
                    ("isolinux.bin".to_owned(), self.isolinux.clone()),
                    ("ldlinux.c32".to_owned(), modules_dir.join("ldlinux.c32")),
                    ("isohybrid MBR code".to_owned(), self.isohdpfx.clone()),
                ];
                inputs.extend(self.module_paths());
                inputs
            },
        })
    }
}
