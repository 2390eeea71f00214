//! Debian packages fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into `target/debian/` — test kernels and foreign-arch
//! tools that are read, never installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Arch, cmd, paths, setup};

/// Fetches and unpacks `package` for `arch` (cached); returns the unpacked root.
pub fn unpack(package: &str, arch: Arch) -> Result<PathBuf> {
    let dir = paths::debian().join(format!("{package}_{}", arch.debian()));
    let root = dir.join("root");
    let stamp = dir.join(".unpacked");
    if stamp.exists() && root.is_dir() {
        return Ok(root);
    }
    if arch == Arch::Aarch64 {
        setup::ensure_arm64_architecture()?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = format!("{package}:{}", arch.debian());
    eprintln!(
        "fetch: downloading Debian package {spec} into {}",
        dir.display()
    );
    let download = |dir: &Path| {
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", &spec])
                .current_dir(dir),
        )
    };
    if download(&dir).is_err() {
        // A stale or missing package index is the usual cause.
        setup::apt_update()?;
        download(&dir)?;
    }
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {spec} left no .deb in {}", dir.display()))?;
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::write(
        &stamp,
        deb.file_name().unwrap_or_default().as_encoded_bytes(),
    )?;
    Ok(root)
}

/// The current Debian kernel package for `arch`, as the meta-package names it
/// (`linux-image-amd64` → `linux-image-6.1.0-56-amd64`).
pub fn kernel_package(arch: Arch) -> Result<String> {
    let meta = format!("linux-image-{0}:{0}", arch.debian());
    let query = || cmd::output(Command::new("apt-cache").args(["depends", &meta]));
    let text = match query() {
        Ok(t) => t,
        Err(_) => {
            if arch == Arch::Aarch64 {
                setup::ensure_arm64_architecture()?;
            }
            setup::apt_update()?;
            query()?
        }
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.split(':').next().unwrap_or(p).to_owned())
        .find(|p| p.starts_with("linux-image-") && !p.contains("unsigned"))
        .with_context(|| format!("apt-cache depends {meta} names no linux-image package:\n{text}"))
}

/// A Debian test kernel, unpacked.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub arch: Arch,
    pub package: String,
    /// `uname -r` of the kernel.
    pub release: String,
    /// The bootable image (`boot/vmlinuz-<release>`): an x86 bzImage or an
    /// arm64 Image, both with an EFI stub.
    pub image: PathBuf,
    /// The unpacked package root; modules are under `lib/modules/<release>`.
    pub tree: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
}

/// Fetches (cached) the current Debian kernel for `arch`.
pub fn kernel(arch: Arch) -> Result<Kernel> {
    let package = kernel_package(arch)?;
    let tree = unpack(&package, arch)?;
    let modules = tree.join("lib/modules");
    let release = std::fs::read_dir(&modules)
        .with_context(|| format!("{} has no lib/modules", tree.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules.display()))?;
    let image = tree.join(format!("boot/vmlinuz-{release}"));
    let config = tree.join(format!("boot/config-{release}"));
    if !image.is_file() {
        bail!("{} holds no kernel image {}", package, image.display());
    }
    Ok(Kernel {
        arch,
        package,
        release,
        image,
        tree,
        config,
    })
}
