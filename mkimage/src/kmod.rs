//! A kernel's module tree on the build host (`lib/modules/<release>/`), as
//! unpacked from a distribution package: find modules by name, read their
//! `.modinfo`, and know which modules are built in.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use phase_initramfs::modinfo::{self, ModInfo, normalize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KmodError {
    #[error("{} holds no lib/modules/<release> directory", path.display())]
    NoTree { path: PathBuf },
    #[error("{} holds modules for several kernels ({}); pick one with --kernel-release", path.display(), releases.join(", "))]
    SeveralReleases {
        path: PathBuf,
        releases: Vec<String>,
    },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// Suffixes a module file may have, compressed or not.
const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

#[derive(Debug, Clone)]
pub struct KernelTree {
    pub release: String,
    /// `…/lib/modules/<release>`.
    pub dir: PathBuf,
    /// Module name → path relative to `dir`.
    modules: BTreeMap<String, PathBuf>,
    /// Names from `modules.builtin`.
    pub builtin: BTreeSet<String>,
}

impl KernelTree {
    /// Opens a tree given as a package root (with `lib/modules/<release>`),
    /// as `lib/modules`, or as the release directory itself.
    pub fn open(path: &Path, release: Option<&str>) -> Result<Self, KmodError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| KmodError::Io { path, error }
        };
        let dir = if path.join("modules.builtin").exists() || path.join("kernel").is_dir() {
            path.to_owned()
        } else {
            let base = if path.join("lib/modules").is_dir() {
                path.join("lib/modules")
            } else {
                path.to_owned()
            };
            let mut releases: Vec<String> = std::fs::read_dir(&base)
                .map_err(io(&base))?
                .flatten()
                .filter(|e| e.path().join("kernel").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            releases.sort();
            match (release, releases.as_slice()) {
                (Some(r), _) if releases.iter().any(|x| x == r) => base.join(r),
                (None, [one]) => base.join(one),
                (_, []) => {
                    return Err(KmodError::NoTree {
                        path: path.to_owned(),
                    });
                }
                _ => {
                    return Err(KmodError::SeveralReleases {
                        path: path.to_owned(),
                        releases,
                    });
                }
            }
        };
        let release = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut modules = BTreeMap::new();
        walk(&dir, Path::new(""), &mut modules)?;
        let builtin_path = dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => text.lines().filter_map(module_name).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(error) => {
                return Err(KmodError::Io {
                    path: builtin_path,
                    error,
                });
            }
        };
        Ok(KernelTree {
            release,
            dir,
            modules,
            builtin,
        })
    }

    /// Every file of the tree mkimage knows of (the modules and
    /// `modules.builtin`): an output must be none of them.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .modules
            .values()
            .map(|rel| self.dir.join(rel))
            .collect();
        v.push(self.dir.join("modules.builtin"));
        v
    }

    /// The machine the modules are for, from the first module's ELF header
    /// (`None` for a tree without modules, or one whose first module
    /// cannot be read as ELF).
    pub fn arch(&self) -> Option<crate::arch::Arch> {
        let rel = self.modules.values().next()?;
        let elf = read_uncompressed(&self.dir.join(rel)).ok()?;
        crate::inspect::elf(&elf)?.ok()?.arch()
    }

    /// Number of module files in the tree.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Finds a module by name and reads its metadata. `Ok(None)` when the tree
    /// has no such module file.
    pub fn lookup(&self, name: &str) -> Result<Option<(PathBuf, ModInfo)>, String> {
        let Some(rel) = self.modules.get(&normalize(name)) else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        let elf = read_uncompressed(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let info = modinfo::parse(&elf).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some((rel.clone(), info)))
    }
}

/// `kernel/drivers/virtio/virtio.ko` → `virtio`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .map(normalize)
}

fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), KmodError> {
    let here = dir.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&here)
        .map_err(|error| KmodError::Io {
            path: here.clone(),
            error,
        })?
        .flatten()
        .collect();
    // Sorted, so that if two files claim one name the choice is stable.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let rel_child = rel.join(&name);
        let kind = entry.file_type().map_err(|error| KmodError::Io {
            path: entry.path(),
            error,
        })?;
        if kind.is_dir() {
            walk(dir, &rel_child, out)?;
        } else if let Some(module) = module_name(&name.to_string_lossy()) {
            out.entry(module).or_insert(rel_child);
        }
    }
    Ok(())
}

/// The name a module has in an image: `net/virtio_net.ko.xz` →
/// `net/virtio_net.ko`. Images hold every module uncompressed (the archive
/// is compressed as a whole), so the init needs no decoders and the kernel
/// no `CONFIG_MODULE_DECOMPRESS`.
pub fn uncompressed_name(rel: &Path) -> PathBuf {
    let name = rel.to_string_lossy();
    for suffix in [".xz", ".zst", ".gz"] {
        if let Some(stem) = name.strip_suffix(suffix)
            && stem.ends_with(".ko")
        {
            return PathBuf::from(stem);
        }
    }
    rel.to_owned()
}

/// Reads a module file, undoing xz, zstd or gzip compression. kbuild signs
/// a module before it compresses it, so the bytes returned end with the
/// signature (`~Module signature appended~`) exactly as the kernel checks it.
pub fn read_uncompressed(path: &Path) -> std::io::Result<Vec<u8>> {
    let raw = std::fs::read(path)?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(raw.as_slice()).read_to_end(&mut out)?;
    } else if name.ends_with(".zst") {
        out = zstd::decode_all(raw.as_slice())?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out)?;
    } else {
        out = raw;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio.ko").as_deref(),
            Some("virtio")
        );
        assert_eq!(
            module_name("kernel/drivers/net/net-failover.ko.zst").as_deref(),
            Some("net_failover")
        );
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn image_names_drop_the_compression_suffix() {
        let table = [
            ("kernel/net/core/failover.ko", "kernel/net/core/failover.ko"),
            (
                "kernel/drivers/net/virtio_net.ko.xz",
                "kernel/drivers/net/virtio_net.ko",
            ),
            ("kernel/fs/ext4/ext4.ko.zst", "kernel/fs/ext4/ext4.ko"),
            ("kernel/fs/vfat.ko.gz", "kernel/fs/vfat.ko"),
            // Only a module's own suffix goes.
            ("kernel/odd.xz", "kernel/odd.xz"),
        ];
        for (rel, want) in table {
            assert_eq!(uncompressed_name(Path::new(rel)), Path::new(want), "{rel}");
        }
    }

    #[test]
    fn compressed_modules_read_back_byte_for_byte() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // An ELF-looking body with a module signature trailer, as kbuild
        // leaves it before compressing.
        let mut module = b"\x7fELF".to_vec();
        module.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
        module.extend_from_slice(b"~Module signature appended~\n");
        let xz = dir.path().join("m.ko.xz");
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&module).unwrap();
        std::fs::write(&xz, e.finish().unwrap()).unwrap();
        let zst = dir.path().join("m.ko.zst");
        std::fs::write(&zst, zstd::encode_all(&module[..], 19).unwrap()).unwrap();
        let gz = dir.path().join("m.ko.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&module).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        for path in [xz, zst, gz] {
            assert_eq!(
                read_uncompressed(&path).unwrap(),
                module,
                "{}",
                path.display()
            );
        }
    }
}
