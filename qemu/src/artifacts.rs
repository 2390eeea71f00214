//! What the VMs boot: the init cross-built for each arch, Debian test
//! kernels, and initramfs images packed with mkimage's library. Each is made
//! once per process (and cargo and the caches make repeats cheap), so the
//! scenarios can ask for what they need in any order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use mkimage::compress::Compression;
use mkimage::initramfs::{self, Inputs};
use mkimage::kmod::KernelTree;
use mkimage::spec::Spec;

use crate::debian::{self, Kernel};
use crate::{Arch, cmd, paths};

/// Which init build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// What users get.
    Release,
    /// With the `test-hooks` feature (`phase.test.panic=`); tests only.
    TestHooks,
}

impl Variant {
    fn profile(self) -> &'static str {
        match self {
            Variant::Release => "init",
            Variant::TestHooks => "init-test",
        }
    }
}

/// Cross-builds the init for `arch`; returns the static binary.
pub fn build_init(arch: Arch, variant: Variant) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(paths::root()).args([
        "build",
        "--quiet",
        "--package",
        "phase-init",
        "--bin",
        "init",
        "--profile",
        variant.profile(),
        "--target",
        arch.musl_target(),
    ]);
    if variant == Variant::TestHooks {
        c.args(["--features", "test-hooks"]);
    }
    cmd::run(&mut c)?;
    Ok(paths::target()
        .join(arch.musl_target())
        .join(variant.profile())
        .join("init"))
}

/// Packs `initramfs/<spec>.toml` for `arch` with the given init; returns the
/// zstd-compressed archive.
pub fn pack_initramfs(
    arch: Arch,
    spec: &str,
    init: &Path,
    kernel: &Kernel,
    out: &Path,
) -> Result<PathBuf> {
    let spec_path = paths::root().join("initramfs").join(format!("{spec}.toml"));
    let spec = Spec::load(&spec_path)?;
    let mut named = BTreeMap::new();
    named.insert("init".to_owned(), init.to_owned());
    if spec
        .files
        .iter()
        .any(|f| f.source.as_deref() == Some("@busybox"))
    {
        let root = debian::unpack("busybox-static", arch)?;
        named.insert("busybox".to_owned(), root.join("bin/busybox"));
    }
    let tree = KernelTree::open(&kernel.tree, Some(&kernel.release))?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let built = initramfs::build(
        &spec,
        &Inputs {
            named,
            kernel_tree: Some(tree),
        },
        build_time,
    )?;
    let bytes = Compression::Zstd.compress(&built.archive.to_bytes(build_time)?)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_owned())
}

/// A kernel with an initramfs to boot it with.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub arch: Arch,
    pub kernel: Kernel,
    pub init: PathBuf,
    pub initrd: PathBuf,
}

type Memo<K, V> = OnceLock<Mutex<HashMap<K, Arc<Mutex<Option<V>>>>>>;

/// Runs `make` once per key per process, even when several threads ask at
/// once: each key has its own lock, held while it is made, so a builder may
/// ask for other keys (a bundle needs a kernel) without deadlock. Errors are
/// not cached.
fn once<K: std::hash::Hash + Eq, V: Clone>(
    memo: &'static Memo<K, V>,
    key: K,
    make: impl FnOnce() -> Result<V>,
) -> Result<V> {
    let slot = {
        let mut map = memo
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    };
    let mut value = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = value.as_ref() {
        return Ok(v.clone());
    }
    let v = make()?;
    *value = Some(v.clone());
    Ok(v)
}

/// The test kernel for `arch`, fetched once per process.
pub fn kernel(arch: Arch) -> Result<Kernel> {
    static MEMO: Memo<Arch, Kernel> = OnceLock::new();
    once(&MEMO, arch, || debian::kernel(arch))
}

/// The init for `arch`, built once per process.
pub fn init(arch: Arch, variant: Variant) -> Result<PathBuf> {
    static MEMO: Memo<(Arch, Variant), PathBuf> = OnceLock::new();
    once(&MEMO, (arch, variant), || build_init(arch, variant))
}

/// The Debian kernel plus an initramfs from `spec` with the given init.
pub fn bundle(arch: Arch, spec: &str, variant: Variant) -> Result<Bundle> {
    static MEMO: Memo<(Arch, String, Variant), Bundle> = OnceLock::new();
    once(&MEMO, (arch, spec.to_owned(), variant), || {
        let kernel = kernel(arch)?;
        let init = init(arch, variant)?;
        let suffix = if variant == Variant::TestHooks {
            "-test"
        } else {
            ""
        };
        let out = paths::phase()
            .join(arch.name())
            .join(format!("{spec}{suffix}.cpio.zst"));
        let initrd = pack_initramfs(arch, spec, &init, &kernel, &out)?;
        Ok(Bundle {
            arch,
            kernel,
            init,
            initrd,
        })
    })
}
