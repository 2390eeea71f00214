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

/// A spec by name (`initramfs/<name>.toml`) or by path from the workspace
/// root (`tests/specs/floor.toml`).
pub fn spec_path(spec: &str) -> PathBuf {
    if spec.contains('/') {
        paths::root().join(spec)
    } else {
        paths::root().join("initramfs").join(format!("{spec}.toml"))
    }
}

/// Packs a spec for `arch` with the given init; returns the zstd-compressed
/// archive. The harness's release key and test CA are offered as the inputs
/// `@release-key` and `@test-ca`.
pub fn pack_initramfs(
    arch: Arch,
    spec: &str,
    init: &Path,
    kernel: &Kernel,
    out: &Path,
) -> Result<PathBuf> {
    pack_spec(
        arch,
        &spec_path(spec),
        init,
        kernel,
        BTreeMap::new(),
        Compression::Zstd,
        out,
    )
}

/// Packs the spec at `spec_path` like [`pack_initramfs`], with further named
/// inputs (`source = "@name"`), compressed with `compression`.
pub fn pack_spec(
    arch: Arch,
    spec_path: &Path,
    init: &Path,
    kernel: &Kernel,
    inputs: BTreeMap<String, PathBuf>,
    compression: Compression,
    out: &Path,
) -> Result<PathBuf> {
    let spec = Spec::load(spec_path)?;
    let mut named = inputs;
    named.insert("init".to_owned(), init.to_owned());
    named.insert("release-key".to_owned(), crate::provider::key()?.public);
    named.insert("test-ca".to_owned(), crate::provider::test_ca()?.ca);
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
    let bytes = compression.compress(&built.archive.to_bytes(build_time)?)?;
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

pub(crate) type Memo<K, V> = OnceLock<Mutex<HashMap<K, Arc<Mutex<Option<V>>>>>>;

/// Runs `make` once per key per process, even when several threads ask at
/// once: each key has its own lock, held while it is made, so a builder may
/// ask for other keys (a bundle needs a kernel) without deadlock. Errors are
/// not cached.
pub(crate) fn once<K: std::hash::Hash + Eq, V: Clone>(
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
        // Named by the spec file's stem; test specs live beside the others.
        let stem = spec_path(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = if spec.contains('/') { "test-specs" } else { "" };
        let out = paths::phase()
            .join(arch.name())
            .join(dir)
            .join(format!("{stem}{suffix}.cpio.zst"));
        let initrd = pack_initramfs(arch, spec, &init, &kernel, &out)?;
        Ok(Bundle {
            arch,
            kernel,
            init,
            initrd,
        })
    })
}

/// The kernel `cargo xtask kernel --profile <name>` builds (m-series, xsc),
/// built or found in a cache once per process.
pub fn profile_kernel(name: &str) -> Result<Kernel> {
    static MEMO: Memo<String, Kernel> = OnceLock::new();
    once(&MEMO, name.to_owned(), || {
        crate::kbuild::kernel(&crate::kbuild::spec(name, None)?)
    })
}

/// The spec the profile kernels boot: base plus the QEMU drivers, which the
/// built kernels have built in (the netboot spec also names NICs and disk
/// drivers they lack).
pub const PROFILE_SPEC: &str = "tests/specs/profile.toml";

/// A profile kernel with an initramfs of [`PROFILE_SPEC`] packed against its
/// own module tree, with the given init.
pub fn profile_bundle(name: &str, variant: Variant) -> Result<Bundle> {
    static MEMO: Memo<(String, Variant), Bundle> = OnceLock::new();
    once(&MEMO, (name.to_owned(), variant), || {
        let kernel = profile_kernel(name)?;
        let init = init(kernel.arch, variant)?;
        let suffix = if variant == Variant::TestHooks {
            "-test"
        } else {
            ""
        };
        let out = paths::phase()
            .join(kernel.arch.name())
            .join(format!("profile-{name}{suffix}.cpio.zst"));
        let initrd = pack_initramfs(kernel.arch, PROFILE_SPEC, &init, &kernel, &out)?;
        Ok(Bundle {
            arch: kernel.arch,
            kernel,
            init,
            initrd,
        })
    })
}

/// The kernel a kexec scenario's first stage hands off to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextKernel {
    /// The Debian kernel as packaged (x86 bzImage, arm64 Image).
    Debian,
    /// The arm64 Image gzip-compressed, as `Image.gz`.
    Gzip,
    /// The Debian kernel with its format magic broken (x86 `HdrS`, arm64
    /// `ARM\x64`), truncated to 1 MiB: no loader may accept it.
    BadMagic,
    /// The Debian kernel with one byte flipped in its middle: its signature
    /// no longer verifies.
    Tampered,
    /// The M-series kernel `cargo xtask kernel` builds (arm64, 16K pages),
    /// booting its own profile image (aarch64 only).
    MSeries,
}

impl NextKernel {
    fn name(self) -> &'static str {
        match self {
            NextKernel::Debian => "debian",
            NextKernel::Gzip => "gzip",
            NextKernel::BadMagic => "bad-magic",
            NextKernel::Tampered => "tampered",
            NextKernel::MSeries => "m-series",
        }
    }
}

/// The kernel that runs a kexec scenario's first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirstKernel {
    /// The Debian kernel, with the netboot image and the test hook.
    Debian,
    /// A profile kernel (`cargo xtask kernel --profile <name>`), with the
    /// profile image ([`PROFILE_SPEC`]) and the test hook.
    Profile(&'static str),
}

/// What a kexec scenario's first stage is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KexecSetup {
    pub arch: Arch,
    pub first: FirstKernel,
    pub next: NextKernel,
    /// Packed as `/kexec/method` (`file`, `load`, `auto`), which the test
    /// hook takes in place of the image's `[kexec] method`; `None` leaves
    /// the image's (the init's default).
    pub method: Option<&'static str>,
}

impl KexecSetup {
    /// The Debian kernel handing off to `next` with the default method.
    pub fn new(arch: Arch, next: NextKernel) -> KexecSetup {
        KexecSetup {
            arch,
            first: FirstKernel::Debian,
            next,
            method: None,
        }
    }

    fn dir_name(&self) -> String {
        let mut name = format!("kexec-{}", self.next.name());
        if let FirstKernel::Profile(profile) = self.first {
            name = format!("{name}-from-{profile}");
        }
        if let Some(method) = self.method {
            name = format!("{name}-{method}");
        }
        name
    }
}

/// A first-stage image for the kexec scenarios.
#[derive(Debug, Clone)]
pub struct KexecBundle {
    /// The first kernel and the first initramfs (test-hooks init), which
    /// holds `/kexec/{kernel,initrd,cmdline}` (and `method` if chosen).
    pub first: Bundle,
    /// The next kernel's command line, as packed in `/kexec/cmdline`.
    pub cmdline: String,
    /// A value unique to this process that appears only on the next
    /// kernel's command line (`phase_marker=…`).
    pub marker: String,
}

/// The kernel command line parameter that carries [`KexecBundle::marker`].
pub const MARKER_KEY: &str = "phase_marker";

fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
    })
}

/// [`kexec_bundle_with`] for the Debian kernel and the default method.
pub fn kexec_bundle(arch: Arch, next: NextKernel) -> Result<KexecBundle> {
    kexec_bundle_with(KexecSetup::new(arch, next))
}

/// Builds (once per process) the first stage of a kexec scenario: the
/// first kernel's image with the test-hooks init, plus the next kernel, a
/// second initramfs (the release netboot image, booted in report mode) and
/// the next command line with a marker. Packed uncompressed: the guest
/// unpacks it faster than it could inflate it under TCG.
pub fn kexec_bundle_with(setup: KexecSetup) -> Result<KexecBundle> {
    static MEMO: Memo<KexecSetup, KexecBundle> = OnceLock::new();
    once(&MEMO, setup, || {
        let KexecSetup {
            arch, first, next, ..
        } = setup;
        let debian = kernel(arch)?;
        let (first_kernel, first_spec) = match first {
            FirstKernel::Debian => (debian.clone(), "tests/specs/kexec.toml"),
            FirstKernel::Profile(name) => (profile_kernel(name)?, "tests/specs/kexec-profile.toml"),
        };
        anyhow::ensure!(
            first_kernel.arch == arch,
            "the first kernel is {}, not {arch}",
            first_kernel.arch
        );
        let init = init(arch, Variant::TestHooks)?;
        let second = match next {
            NextKernel::MSeries => profile_bundle("m-series", Variant::Release)?,
            _ => bundle(arch, "netboot", Variant::Release)?,
        };
        let dir = paths::phase().join(arch.name()).join(setup.dir_name());
        std::fs::create_dir_all(&dir)?;
        // The next kernel is Debian's (or a profile's), whichever kernel
        // runs the first stage.
        let image = std::fs::read(&debian.image)
            .with_context(|| format!("reading {}", debian.image.display()))?;
        let next_image = match next {
            NextKernel::Debian => image,
            NextKernel::MSeries => std::fs::read(&second.kernel.image)
                .with_context(|| format!("reading {}", second.kernel.image.display()))?,
            NextKernel::Gzip => Compression::Gzip.compress(&image)?,
            NextKernel::BadMagic => {
                // x86: "HdrS" at 0x202; arm64: "ARM\x64" at 0x38.
                let at = match arch {
                    Arch::X86_64 => 0x202,
                    Arch::Aarch64 => 0x38,
                };
                let mut bad = image[..image.len().min(1 << 20)].to_vec();
                bad[at] ^= 0xff;
                bad
            }
            NextKernel::Tampered => {
                let mut bad = image;
                let middle = bad.len() / 2;
                bad[middle] ^= 0x01;
                bad
            }
        };
        let kernel_path = dir.join("kernel");
        std::fs::write(&kernel_path, &next_image)?;
        let marker = marker().to_owned();
        let cmdline = format!(
            "{} phase.report phase.onfail=poweroff {MARKER_KEY}={marker}",
            arch.kernel_params()
        );
        let cmdline_path = dir.join("cmdline");
        std::fs::write(&cmdline_path, format!("{cmdline}\n"))?;
        let inputs = BTreeMap::from([
            ("kexec-kernel".to_owned(), kernel_path),
            ("kexec-initrd".to_owned(), second.initrd.clone()),
            ("kexec-cmdline".to_owned(), cmdline_path),
        ]);
        // A chosen method is one more file, in a spec that wraps the
        // first stage's.
        let spec = match setup.method {
            None => spec_path(first_spec),
            Some(method) => {
                let wrapper = dir.join("first.toml");
                std::fs::write(
                    &wrapper,
                    format!(
                        "# Written by the harness: {first_spec} with the test hook's method.\n\
                         include = [{:?}]\n\n[[file]]\npath = \"/kexec/method\"\ntext = \"{method}\\n\"\nmode = 0o644\n",
                        spec_path(first_spec).display().to_string()
                    ),
                )?;
                wrapper
            }
        };
        let out = dir.join("first.cpio");
        let initrd = pack_spec(
            arch,
            &spec,
            &init,
            &first_kernel,
            inputs,
            Compression::None,
            &out,
        )?;
        Ok(KexecBundle {
            first: Bundle {
                arch,
                kernel: first_kernel,
                init,
                initrd,
            },
            cmdline,
            marker,
        })
    })
}
