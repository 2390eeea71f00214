//! `cargo xtask kernel`: small kernels built from Debian's `linux-source-6.1`
//! for a profile — tinyconfig, then the profile's fragments from `kconfigs/`
//! (rendered for the architecture by `phase-kconfig`), then
//! `make olddefconfig` — so the profiles meet real kernels: the M-series one
//! with 16K pages, the xsc one with `kexec_load` only, both with IKCONFIG.
//!
//! A kernel is cached by the hash of everything that goes into it (the
//! source package's version, the rendered fragments, the compiler's version
//! and [`RECIPE`]) under `target/phase/kernels/<hash>/` and under
//! `${PHASE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/phase-boot}/kernels/<hash>/`,
//! so a second clean clone on the same machine reuses it. Each cached kernel
//! has the shape of an unpacked Debian package ([`Kernel`]):
//! `root/boot/vmlinuz-<release>`, `root/boot/config-<release>` and
//! `root/lib/modules/<release>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use phase_kconfig::fragment::render;
use phase_kconfig::{Config, check, profile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::debian::Kernel;
use crate::{Arch, cmd, paths, setup};

/// How a kernel is built. Changing the build below means changing this
/// text, which changes every hash and so rebuilds.
pub const RECIPE: &str = "phase-boot kernel recipe 1: make tinyconfig; append the rendered \
    fragments; make olddefconfig; make -j2 <image> modules; make modules_install \
    INSTALL_MOD_STRIP=1; LOCALVERSION=-phase-<name>; KBUILD_BUILD_USER=phase \
    KBUILD_BUILD_HOST=xtask";

/// The Debian package whose tarball is built.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The profile (`m-series`, `xsc`) or fragment set it was asked as; part
    /// of the kernel's release (`6.1.192-phase-m-series`).
    pub name: String,
    pub arch: Arch,
    /// Fragment names, in merge order.
    pub fragments: Vec<&'static str>,
}

/// The fragments the harness builds a profile's kernel from: the profile's
/// own (`phase_kconfig::profile`), with `qemu-virt` so it boots in the test
/// VMs and `harness` (IKCONFIG) last. `xsc` adds `xsc-kexec-load`: its kernel
/// is the first kernel of an x86_64 kexec_load test. Anything else is a
/// `+`-joined fragment set and needs `arch`.
pub fn spec(name: &str, arch: Option<Arch>) -> Result<BuildSpec> {
    let fixed = |profile_arch: Arch| match arch {
        Some(a) if a != profile_arch => bail!("the {name} kernel is for {profile_arch}, not {a}"),
        _ => Ok(profile_arch),
    };
    let (arch, fragments): (Arch, Vec<&'static str>) = match name {
        "m-series" => (
            fixed(Arch::Aarch64)?,
            vec!["phase-init", "qemu-virt", "m-series", "harness"],
        ),
        "xsc" => (
            fixed(Arch::X86_64)?,
            vec![
                "phase-init",
                "qemu-virt",
                "xsc",
                "xsc-kexec-load",
                "harness",
            ],
        ),
        set => {
            let arch = arch.with_context(|| {
                format!("the fragment set {set:?} is for no particular machine: give --arch")
            })?;
            let mut names = Vec::new();
            for part in set.split('+') {
                let (known, _) = profile::FRAGMENTS
                    .iter()
                    .find(|(n, _)| *n == part.trim())
                    .with_context(|| {
                        format!(
                            "{part:?} is neither a profile (m-series, xsc) nor a fragment in kconfigs/"
                        )
                    })?;
                names.push(*known);
            }
            if !names.contains(&"harness") {
                names.push("harness");
            }
            (arch, names)
        }
    };
    Ok(BuildSpec {
        name: name.replace('+', "-"),
        arch,
        fragments,
    })
}

impl BuildSpec {
    fn kconfig_arch(&self) -> phase_kconfig::Arch {
        match self.arch {
            Arch::X86_64 => phase_kconfig::Arch::X86_64,
            Arch::Aarch64 => phase_kconfig::Arch::Arm64,
        }
    }

    /// The lines appended to tinyconfig.
    pub fn rendered(&self) -> Result<String> {
        let fragments: Vec<_> = self
            .fragments
            .iter()
            .map(|n| profile::fragment(n))
            .collect::<Result<_, _>>()?;
        Ok(render(&fragments, self.kconfig_arch()))
    }

    fn make_arch(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }

    fn cross(&self) -> Option<&'static str> {
        match self.arch {
            Arch::X86_64 => None,
            Arch::Aarch64 => Some("aarch64-linux-gnu-"),
        }
    }

    /// The image target and where make leaves it.
    fn image_target(&self) -> (&'static str, &'static str) {
        match self.arch {
            Arch::X86_64 => ("bzImage", "arch/x86/boot/bzImage"),
            Arch::Aarch64 => ("Image", "arch/arm64/boot/Image"),
        }
    }

    fn compiler(&self) -> String {
        format!("{}gcc", self.cross().unwrap_or(""))
    }

    fn localversion(&self) -> String {
        format!("-phase-{}", self.name)
    }
}

/// What `kernel.json` records beside a built kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    pub hash: String,
    pub name: String,
    pub arch: String,
    pub release: String,
    pub source: String,
    pub compiler: String,
    pub fragments: Vec<String>,
    /// Wall time of the build that made it.
    pub build_seconds: f64,
    pub image_bytes: u64,
}

/// The user-wide cache: `$PHASE_CACHE_DIR`, else `$XDG_CACHE_HOME/phase-boot`,
/// else `~/.cache/phase-boot`.
pub fn user_cache() -> Option<PathBuf> {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    nonempty("PHASE_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("phase-boot")))
        .or_else(|| nonempty("HOME").map(|d| d.join(".cache/phase-boot")))
}

fn source_version() -> Result<String> {
    let v = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PACKAGE]))
        .with_context(|| format!("{SOURCE_PACKAGE} is not installed (cargo xtask setup)"))?;
    Ok(v.trim().to_owned())
}

fn first_line(mut c: Command) -> Result<String> {
    let out = cmd::output(&mut c)?;
    Ok(out.lines().next().unwrap_or_default().trim().to_owned())
}

/// The hash of every input, and the inputs' description.
fn inputs(spec: &BuildSpec) -> Result<(String, String, String, String)> {
    let source = source_version()?;
    let compiler = first_line({
        let mut c = Command::new(spec.compiler());
        c.arg("--version");
        c
    })?;
    let rendered = spec.rendered()?;
    let mut h = Sha256::new();
    for part in [
        RECIPE,
        &source,
        spec.make_arch(),
        &spec.name,
        &compiler,
        &rendered,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, source, compiler, rendered))
}

/// The unpacked source tree of the installed package (once per version).
pub fn source_tree() -> Result<PathBuf> {
    let version = source_version()?;
    let dir = paths::phase().join("kernels/src").join(&version);
    let tree = dir.join(SOURCE_PACKAGE);
    let stamp = dir.join(".unpacked");
    if stamp.exists() && tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    let tarball = PathBuf::from(format!("/usr/src/{SOURCE_PACKAGE}.tar.xz"));
    if !tarball.is_file() {
        bail!(
            "{} is missing: install {SOURCE_PACKAGE} (cargo xtask setup)",
            tarball.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "kernel: unpacking {} into {}",
        tarball.display(),
        dir.display()
    );
    cmd::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dir),
    )?;
    std::fs::write(&stamp, &version)?;
    Ok(tree)
}

fn load(dir: &Path, arch: Arch) -> Result<Option<(Kernel, Built)>> {
    let Ok(text) = std::fs::read_to_string(dir.join("kernel.json")) else {
        return Ok(None);
    };
    let built: Built =
        serde_json::from_str(&text).with_context(|| format!("{}/kernel.json", dir.display()))?;
    let tree = dir.join("root");
    let kernel = Kernel {
        arch,
        package: format!(
            "{SOURCE_PACKAGE} {} + {}",
            built.source,
            built.fragments.join(" + ")
        ),
        release: built.release.clone(),
        image: tree.join(format!("boot/vmlinuz-{}", built.release)),
        config: tree.join(format!("boot/config-{}", built.release)),
        tree,
    };
    if !kernel.image.is_file() || !kernel.config.is_file() {
        return Ok(None);
    }
    Ok(Some((kernel, built)))
}

/// Copies `from` to `to` through a temporary sibling and a rename, so a
/// reader never sees half a kernel.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().context("cache path without a parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        to.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    cmd::run(Command::new("cp").arg("-a").arg(from).arg(&tmp))?;
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))
}

/// A kernel already built with these inputs: in the target's cache, or in
/// the user's (then copied into the target's, so the target stays whole).
fn cached(name: &str, arch: Arch, local: &Path, shared: Option<&Path>) -> Result<Option<Kernel>> {
    if let Some((k, b)) = load(local, arch)? {
        eprintln!(
            "kernel: {name} {} cached in {} (built in {:.0} s)",
            k.release,
            local.display(),
            b.build_seconds
        );
        return Ok(Some(k));
    }
    if let Some(shared) = shared
        && load(shared, arch)?.is_some()
    {
        eprintln!(
            "kernel: {name} reused from {} (the user cache)",
            shared.display()
        );
        copy_dir(shared, local)?;
        return load(local, arch).map(|hit| hit.map(|(k, _)| k));
    }
    Ok(None)
}

/// The kernel for `spec`: from the target cache, the user cache, or built.
pub fn kernel(spec: &BuildSpec) -> Result<Kernel> {
    setup::ensure_packages(setup::KERNEL_BUILD_PACKAGES)?;
    let (hash, source, compiler, rendered) = inputs(spec)?;
    let local = paths::phase().join("kernels").join(&hash);
    let shared = user_cache().map(|c| c.join("kernels").join(&hash));
    if let Some(k) = cached(&spec.name, spec.arch, &local, shared.as_deref())? {
        return Ok(k);
    }
    let started = Instant::now();
    let built = build(spec, &hash, &source, &compiler, &rendered, &local)?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut record = built.1;
    record.build_seconds = elapsed;
    std::fs::write(
        local.join("kernel.json"),
        serde_json::to_string_pretty(&record)?,
    )?;
    eprintln!(
        "kernel: built {} {} for {} in {elapsed:.0} s: image {} bytes, in {}",
        spec.name,
        record.release,
        spec.arch,
        record.image_bytes,
        local.display()
    );
    if let Some(shared) = &shared {
        match copy_dir(&local, shared) {
            Ok(()) => eprintln!("kernel: copied to {}", shared.display()),
            // The user cache is a convenience: a read-only home only costs
            // the next clone a build.
            Err(e) => eprintln!(
                "kernel: could not copy to the user cache {}: {e:#}",
                shared.display()
            ),
        }
    }
    Ok(built.0)
}

fn make(spec: &BuildSpec, tree: &Path, out: &Path) -> Command {
    let mut c = Command::new("make");
    c.current_dir(tree)
        .arg(format!("O={}", out.display()))
        .arg(format!("ARCH={}", spec.make_arch()))
        .arg(format!("LOCALVERSION={}", spec.localversion()))
        .env("KBUILD_BUILD_USER", "phase")
        .env("KBUILD_BUILD_HOST", "xtask");
    if let Some(cross) = spec.cross() {
        c.arg(format!("CROSS_COMPILE={cross}"));
    }
    c
}

/// Runs a make step with its output in `log`; on failure the error carries
/// the log's last lines.
fn logged(mut c: Command, log: &Path) -> Result<()> {
    eprintln!("$ {}  (output in {})", cmd::display(&c), log.display());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let status = c
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {}", cmd::display(&c)))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{} failed with {status}; the end of {}:\n{}",
            cmd::display(&c),
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

fn build(
    spec: &BuildSpec,
    hash: &str,
    source: &str,
    compiler: &str,
    rendered: &str,
    local: &Path,
) -> Result<(Kernel, Built)> {
    let tree = source_tree()?;
    let out = paths::phase().join("kernels").join(format!("{hash}.build"));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let log = out.join("build.log");
    eprintln!(
        "kernel: building {} for {} from {SOURCE_PACKAGE} {source} with {compiler}: tinyconfig + {}",
        spec.name,
        spec.arch,
        spec.fragments.join(" + ")
    );
    let mut c = make(spec, &tree, &out);
    c.arg("tinyconfig");
    logged(c, &log)?;
    let config_path = out.join(".config");
    let mut config = std::fs::read_to_string(&config_path)?;
    config.push_str("\n# cargo xtask kernel: the fragments\n");
    config.push_str(rendered);
    std::fs::write(&config_path, config)?;
    let mut c = make(spec, &tree, &out);
    c.arg("olddefconfig");
    logged(c, &log)?;
    report_merge(spec, &config_path, &tree)?;

    let (target, image_path) = spec.image_target();
    let mut c = make(spec, &tree, &out);
    c.args(["-j2", target, "modules"]);
    logged(c, &log)?;
    let release = cmd::output(make(spec, &tree, &out).args(["-s", "kernelrelease"]))?
        .trim()
        .to_owned();
    if local.exists() {
        std::fs::remove_dir_all(local)?;
    }
    let root = local.join("root");
    let boot = root.join("boot");
    std::fs::create_dir_all(&boot)?;
    let mut c = make(spec, &tree, &out);
    c.arg(format!("INSTALL_MOD_PATH={}", root.display()))
        .args(["INSTALL_MOD_STRIP=1", "modules_install"]);
    logged(c, &log)?;
    // A kernel with every driver built in installs no kernel/ directory,
    // which is how mkimage's module tree recognises a release.
    std::fs::create_dir_all(root.join("lib/modules").join(&release).join("kernel"))?;
    let image = boot.join(format!("vmlinuz-{release}"));
    std::fs::copy(out.join(image_path), &image)?;
    std::fs::copy(&config_path, boot.join(format!("config-{release}")))?;
    let image_bytes = std::fs::metadata(&image)?.len();
    std::fs::remove_dir_all(&out)?;
    let built = Built {
        hash: hash.to_owned(),
        name: spec.name.clone(),
        arch: spec.arch.name().to_owned(),
        release: release.clone(),
        source: source.to_owned(),
        compiler: compiler.to_owned(),
        fragments: spec.fragments.iter().map(|s| (*s).to_owned()).collect(),
        build_seconds: 0.0,
        image_bytes,
    };
    let kernel = Kernel {
        arch: spec.arch,
        package: format!("{SOURCE_PACKAGE} {source} + {}", spec.fragments.join(" + ")),
        release,
        image,
        config: boot.join(format!("config-{}", built.release)),
        tree: root,
    };
    Ok((kernel, built))
}

/// After olddefconfig: what of the fragments the tree did not take, told
/// apart by the tree's own symbols (unknown to it, or dependencies off).
/// An option the tree knows but dropped is a fragment bug for this tree,
/// unless only a note wanted it.
fn report_merge(spec: &BuildSpec, config_path: &Path, tree: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config_path)?;
    let config = Config::parse(&text)?;
    let fragments: Vec<_> = spec
        .fragments
        .iter()
        .map(|n| profile::fragment(n))
        .collect::<Result<_, _>>()?;
    let symbols = phase_tools::kconfig::tree_symbols(tree)?;
    let report = check(&config, &fragments, Some(&symbols));
    if report.findings.is_empty() {
        eprintln!("kernel: the merged config has every fragment option");
    }
    for f in &report.findings {
        eprintln!("kernel: not taken: {f}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_in_the_user_cache_is_reused_by_another_target() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("user/kernels/abc");
        let boot = shared.join("root/boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.1-phase-x"), b"image").unwrap();
        std::fs::write(boot.join("config-6.1.1-phase-x"), b"CONFIG_ARM64=y\n").unwrap();
        let built = Built {
            hash: "abc".into(),
            name: "x".into(),
            arch: "aarch64".into(),
            release: "6.1.1-phase-x".into(),
            source: "6.1.1-1".into(),
            compiler: "gcc".into(),
            fragments: vec!["phase-init".into()],
            build_seconds: 1.0,
            image_bytes: 5,
        };
        std::fs::write(
            shared.join("kernel.json"),
            serde_json::to_string(&built).unwrap(),
        )
        .unwrap();
        let local = dir.path().join("target/phase/kernels/abc");
        // A fresh target with nothing cached and no user cache: build.
        assert!(cached("x", Arch::Aarch64, &local, None).unwrap().is_none());
        // With the user cache: copied in, and then found in the target.
        let k = cached("x", Arch::Aarch64, &local, Some(&shared))
            .unwrap()
            .unwrap();
        assert_eq!(k.release, "6.1.1-phase-x");
        assert_eq!(k.image, local.join("root/boot/vmlinuz-6.1.1-phase-x"));
        assert_eq!(std::fs::read(&k.image).unwrap(), b"image");
        std::fs::remove_dir_all(&shared).unwrap();
        let again = cached("x", Arch::Aarch64, &local, None).unwrap().unwrap();
        assert_eq!(again.config, k.config);
    }

    #[test]
    fn specs_name_their_fragments_and_arch() {
        let m = spec("m-series", None).unwrap();
        assert_eq!(m.arch, Arch::Aarch64);
        assert_eq!(
            m.fragments,
            ["phase-init", "qemu-virt", "m-series", "harness"]
        );
        assert!(m.rendered().unwrap().contains("CONFIG_ARM64_16K_PAGES=y\n"));
        let x = spec("xsc", None).unwrap();
        let rendered = x.rendered().unwrap();
        assert!(
            rendered.contains("CONFIG_KEXEC=y\n")
                && rendered.contains("# CONFIG_KEXEC_FILE is not set\n")
        );
        assert!(rendered.contains("CONFIG_IKCONFIG=y\n"));
        assert!(spec("xsc", Some(Arch::Aarch64)).is_err());
        assert!(spec("phase-init+qemu-virt", None).is_err());
        let set = spec("phase-init+qemu-virt", Some(Arch::X86_64)).unwrap();
        assert_eq!(set.name, "phase-init-qemu-virt");
        assert_eq!(set.fragments, ["phase-init", "qemu-virt", "harness"]);
        assert!(spec("phase-init+nope", Some(Arch::X86_64)).is_err());
    }
}
