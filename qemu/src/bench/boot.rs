//! `cargo xtask bench boot`: kernel start → kexec syscall, Phase Boot against
//! a seed-style script init, in the same VM setup with the same provider
//! (real nginx on loopback), artifacts and kernel. The script init is what a
//! distribution initramfs does with Debian's busybox-static (`udhcpc`,
//! `wget`, `sha256sum`) and Debian's kexec-tools with its libraries; it checks
//! the artifacts' SHA-256 against values it is given, but cannot verify a
//! signature.
//!
//! On x86_64 Phase Boot has two rows, one per syscall: the default image
//! (`[kexec] method = "file"`: `kexec_file_load`) and the same image pinned
//! to `kexec_load` with the init's own boot_params and purgatory; each boot
//! is checked to have used the syscall its row names.
//!
//! Both report the kexec moment from the guest's own uptime clock (CLOCK_BOOTTIME)
//! in a `kexec` event. The hand-off time — kexec until the second kernel's
//! banner — is taken on the host clock (kexec-tools' purgatory re-hashes
//! every segment before jumping, which is slow under TCG).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mkimage::compress::Compression;
use mkimage::cpio::{Archive, Kind};
use mkimage::kmod::KernelTree;
use phase_initramfs::modindex::ModuleIndex;

use super::{Samples, Table};
use crate::artifacts::{self, Bundle, Variant};
use crate::debian::{self, Kernel};
use crate::provider::{self, Publication};
use crate::vm::{Vm, VmSpec};
use crate::{Arch, cmd, paths, setup};

const SPEC: &str = "tests/specs/netboot.toml";
/// Shared by both inits and the kernels: the console and no kernel chatter,
/// so the time measured is the init's work, not the serial line's.
const BASE: &str = "quiet";

/// The script init. `/bench.conf` supplies the provider, paths and hashes.
const SCRIPT: &str = r#"#!/bin/sh
# A seed-style netboot: busybox for DHCP, download and hashing, kexec-tools
# for the hand-off.
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
echo "phase-event: {\"event\":\"init\",\"t_ms\":$(awk '{printf "%d", $1 * 1000}' /proc/uptime)}"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /bench.conf
fail() { echo "script init: $*"; poweroff -f; }
for m in $MODULES; do insmod "/lib/modules/$m" || fail "insmod $m"; done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -s /udhcpc.sh || fail "no DHCP lease"
cd /tmp
wget -q "$BASE/stable/$ARCH/manifest.json" || fail "manifest"
wget -q -O kernel "$BASE/$KERNEL_PATH" || fail "kernel"
wget -q -O initrd "$BASE/$INITRD_PATH" || fail "initrd"
echo "$KERNEL_SHA  kernel" > sums
echo "$INITRD_SHA  initrd" >> sums
sha256sum -c -s sums || fail "sha256 mismatch"
kexec -l kernel --initrd=initrd --append="$CMDLINE" || fail "kexec -l"
echo "phase-event: {\"event\":\"kexec\",\"t_ms\":$(awk '{printf "%d", $1 * 1000}' /proc/uptime)}"
kexec -e
fail "kexec -e returned"
"#;

const UDHCPC: &str = "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nifconfig \"$interface\" \"$ip\" netmask \"$subnet\"\nroute add default gw \"$router\"\n";

/// Debian packages for `arch`: `root` and, recursively, the library
/// packages it depends on (named with "lib", as `libc6` and `zlib1g`),
/// unpacked.
fn unpack_with_libraries(root: &str, arch: Arch) -> Result<Vec<PathBuf>> {
    let mut todo = vec![root.to_owned()];
    let mut seen = BTreeSet::new();
    let mut roots = Vec::new();
    while let Some(package) = todo.pop() {
        if !seen.insert(package.clone()) {
            continue;
        }
        roots.push(debian::unpack(&package, arch)?);
        let spec = format!("{package}:{}", arch.debian());
        let text = cmd::output(Command::new("apt-cache").args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            &spec,
        ]))?;
        for line in text.lines() {
            let line = line.trim().trim_start_matches('|');
            if let Some(dep) = line.strip_prefix("Depends: ") {
                let dep = dep.split(':').next().unwrap_or(dep);
                if dep.contains("lib") && !dep.contains('<') {
                    todo.push(dep.to_owned());
                }
            }
        }
    }
    Ok(roots)
}

/// `readelf` lines for an ELF file (binutils reads every architecture).
/// When the first init started, in the VM's clock: its own `init` event,
/// or the `early` stage's end less its duration (the benchmark's and the
/// scenarios' inits both send one of them).
pub(super) fn init_start(vm: &Vm, name: &str) -> Result<f64> {
    vm.events()
        .iter()
        .find_map(|e| match (e["event"].as_str(), e["stage"].as_str()) {
            (Some("init"), _) => e["t_ms"].as_f64(),
            (Some("stage"), Some("early")) => Some(e["t_ms"].as_f64()? - e["ms"].as_f64()?),
            _ => None,
        })
        .with_context(|| format!("{name}: no event marks the init's start"))
}

fn readelf(flag: &str, file: &Path) -> Result<String> {
    cmd::output(Command::new("readelf").arg(flag).arg(file))
}

/// The program interpreter of a dynamic executable.
fn interpreter(file: &Path) -> Result<String> {
    let text = readelf("-l", file)?;
    text.lines()
        .find_map(|l| {
            l.split_once("Requesting program interpreter: ")
                .map(|(_, r)| r.trim_end_matches(']').to_owned())
        })
        .with_context(|| format!("{} has no program interpreter", file.display()))
}

/// Where the unpacked packages keep libraries: `lib`, `usr/lib` and their
/// multiarch subdirectories.
fn library_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in roots {
        for base in [root.join("lib"), root.join("usr/lib")] {
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    dirs.push(entry.path());
                }
            }
            dirs.push(base);
        }
    }
    dirs
}

fn find_library(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
}

/// Every shared library `file` needs, transitively.
fn libraries(file: &Path, dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut queue = vec![file.to_owned()];
    while let Some(f) = queue.pop() {
        for line in readelf("-d", &f)?.lines() {
            let Some(name) = line
                .split("Shared library: [")
                .nth(1)
                .map(|r| r.trim_end_matches(']'))
            else {
                continue;
            };
            if found
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == name))
            {
                continue;
            }
            let hit = find_library(name, dirs).with_context(|| {
                format!("no package provides {name} (needed by {})", f.display())
            })?;
            queue.push(hit.clone());
            found.push(hit);
        }
    }
    Ok(found)
}

/// The modules `wanted` and their dependencies from `kernel`'s tree, in
/// load order, as (file name, bytes) for a script's `insmod` loop; built-in
/// ones are left out.
pub fn modules_in_order(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    let tree = KernelTree::open(&kernel.tree, Some(&kernel.release))?;
    let wanted: Vec<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
    let index = ModuleIndex::build(&tree.release, tree.builtin.clone(), &wanted, &[], |name| {
        tree.lookup(name)
            .map(|hit| hit.map(|(rel, info)| (rel.display().to_string(), info)))
    })?;
    let mut out = Vec::new();
    for m in index.load_order(&wanted)? {
        let file = Path::new(&m.path)
            .file_name()
            .context("module file")?
            .to_string_lossy()
            .into_owned();
        out.push((file, std::fs::read(tree.dir.join(&m.path))?));
    }
    Ok(out)
}

/// The script init's image: busybox, kexec with its libraries and loader,
/// the virtio NIC's modules in load order, the script and its config.
fn script_image(arch: Arch, kernel: &Kernel, conf: &str, out: &Path) -> Result<PathBuf> {
    let mut a = Archive::new();
    let busybox = debian::unpack("busybox-static", arch)?.join("bin/busybox");
    a.add("/bin/busybox", 0o755, Kind::File(std::fs::read(&busybox)?))?;
    a.add("/bin/sh", 0o777, Kind::Symlink("busybox".into()))?;
    let roots = unpack_with_libraries("kexec-tools", arch)?;
    let kexec = roots[0].join("sbin/kexec");
    a.add("/bin/kexec", 0o755, Kind::File(std::fs::read(&kexec)?))?;
    let dirs = library_dirs(&roots);
    for lib in libraries(&kexec, &dirs)? {
        let name = lib
            .file_name()
            .context("library name")?
            .to_string_lossy()
            .into_owned();
        // Packages ship versioned files behind symlinks: read through them.
        a.add(
            &format!("/lib/{name}"),
            0o755,
            Kind::File(std::fs::read(&lib)?),
        )?;
    }
    // The loader is named by the executable, not NEEDED by it.
    let loader = interpreter(&kexec)?;
    let loader_name = Path::new(&loader)
        .file_name()
        .context("loader name")?
        .to_string_lossy()
        .into_owned();
    let loader_file = find_library(&loader_name, &dirs)
        .with_context(|| format!("no package provides the loader {loader}"))?;
    a.add(&loader, 0o755, Kind::File(std::fs::read(loader_file)?))?;
    let init = ScriptInit {
        modules: &["virtio_pci", "virtio_net"],
        script: SCRIPT,
        udhcpc: UDHCPC,
        conf,
        dirs: &["/proc", "/sys", "/dev", "/tmp"],
    };
    init.add_to(&mut a, kernel)?;
    let bytes = Compression::Zstd.compress(&a.to_bytes(0)?)?;
    std::fs::write(out, bytes)?;
    Ok(out.to_owned())
}

/// What the benchmarks' script inits share: the modules they insmod, the
/// script itself, its udhcpc hook and its config.
pub(super) struct ScriptInit<'a> {
    /// Loaded with their dependencies, in load order.
    pub modules: &'a [&'a str],
    pub script: &'a str,
    pub udhcpc: &'a str,
    /// `/bench.conf` after the `MODULES=` line.
    pub conf: &'a str,
    /// Mount points to create.
    pub dirs: &'a [&'a str],
}

impl ScriptInit<'_> {
    /// Adds the modules under /lib/modules, `/init`, `/udhcpc.sh`,
    /// `/bench.conf` (`MODULES=` in load order, then the config), the mount
    /// points and /dev/console.
    pub(super) fn add_to(&self, a: &mut Archive, kernel: &Kernel) -> Result<()> {
        let mut order = Vec::new();
        for (file, bytes) in modules_in_order(kernel, self.modules)? {
            a.add(&format!("/lib/modules/{file}"), 0o644, Kind::File(bytes))?;
            order.push(file);
        }
        a.add("/init", 0o755, Kind::File(self.script.as_bytes().to_vec()))?;
        a.add(
            "/udhcpc.sh",
            0o755,
            Kind::File(self.udhcpc.as_bytes().to_vec()),
        )?;
        let conf = format!("MODULES=\"{}\"\n{}", order.join(" "), self.conf);
        a.add("/bench.conf", 0o644, Kind::File(conf.into_bytes()))?;
        for d in self.dirs {
            a.add(d, 0o755, Kind::Dir)?;
        }
        a.add("/dev/console", 0o600, Kind::CharDev { major: 5, minor: 1 })?;
        Ok(())
    }
}

/// The netboot image with the x86_64 hand-off pinned to `kexec_load`.
const LOAD_SPEC: &str = "tests/specs/kexec-load.toml";

/// One boot: the kexec moment in the guest, and the hand-off on the host.
struct Sample {
    kexec_ms: f64,
    /// From the first moment the init reports (Phase Boot: the start of its
    /// early stage; the script: right after mounting /proc) to the kexec.
    init_ms: f64,
    handoff_ms: f64,
}

/// A Phase Boot image to time, and the syscall its hand-off must name.
struct Ours {
    label: &'static str,
    initrd: PathBuf,
    syscall: &'static str,
}

/// The Phase Boot images a run times on `arch`: the default image and, on
/// x86_64, the same image pinned to `kexec_load`, so both syscalls have a
/// row.
fn ours(arch: Arch, default: &Bundle) -> Result<Vec<Ours>> {
    Ok(match arch {
        Arch::X86_64 => vec![
            Ours {
                label: "phase (file: kexec_file_load)",
                initrd: default.initrd.clone(),
                syscall: "kexec_file_load",
            },
            Ours {
                label: "phase (load: kexec_load)",
                initrd: artifacts::bundle(arch, LOAD_SPEC, Variant::Release)?.initrd,
                syscall: "kexec_load",
            },
        ],
        Arch::Aarch64 => vec![Ours {
            label: "phase (kexec_load)",
            initrd: default.initrd.clone(),
            syscall: "kexec_load",
        }],
    })
}

/// Boots once; `syscall`, when given, is the one the init's `handoff`
/// stage event must name, so a row never times another path than its label.
fn measure(
    name: &str,
    arch: Arch,
    bundle: &Bundle,
    initrd: &Path,
    append: &str,
    syscall: Option<&str>,
) -> Result<Sample> {
    let mut spec = VmSpec::direct(name, arch, &bundle.kernel.image, initrd, append);
    spec.user_net = true;
    let mut vm = Vm::start(&spec)?;
    let kexec = vm.wait_event("kexec", Duration::from_secs(600))?;
    let at = Instant::now();
    let from = vm.console().len();
    vm.wait_console_from(from, "Linux version", Duration::from_secs(300))?;
    let handoff = at.elapsed();
    vm.kill()?;
    if let Some(want) = syscall {
        let used = vm
            .events()
            .iter()
            .find(|e| e["event"] == "stage" && e["stage"] == "handoff")
            .and_then(|e| e["kexec"]["syscall"].as_str())
            .with_context(|| format!("{name}: no handoff stage event naming its syscall"))?;
        if used != want {
            bail!("{name}: the hand-off used {used}, not {want}");
        }
    }
    let kexec_ms = kexec["t_ms"]
        .as_f64()
        .with_context(|| format!("{name}: kexec event without t_ms"))?;
    let init_start = init_start(&vm, name)?;
    Ok(Sample {
        kexec_ms,
        init_ms: kexec_ms - init_start,
        handoff_ms: handoff.as_secs_f64() * 1000.0,
    })
}

pub fn run(runs: usize, only: Option<Arch>) -> Result<()> {
    setup::ensure_all()?;
    setup::ensure_packages(&[("binutils", "readelf, to find kexec's libraries")])?;
    let arches: Vec<Arch> = only.map_or_else(|| Arch::ALL.to_vec(), |a| vec![a]);
    let mut table = Table::new(&[
        "arch",
        "init",
        "runs",
        "kernel start → kexec, median ms",
        "min",
        "max",
        "init start → kexec, median ms",
        "kexec → next kernel, median ms",
        "ratio",
    ]);
    for arch in arches {
        eprintln!("==> boot benchmark on {arch}: {runs} runs each");
        let bundle = artifacts::bundle(arch, SPEC, Variant::Release)?;
        let work = paths::phase().join("bench-boot").join(arch.name());
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        let next = format!(
            "{} phase.report phase.onfail=poweroff",
            arch.kernel_params()
        );
        let (tree, published) = provider::publish_tree(
            &work,
            &Publication {
                arch,
                version: 1,
                floor: None,
                expires_in: 3600,
                cmdline: next.clone(),
                kernel: &bundle.kernel.image,
                initrd: Some(&bundle.initrd),
                served_as: None,
                root_image: None,
            },
        )?;
        let nginx = provider::nginx(&tree, &work)?;
        let base = provider::guest_url("http", nginx.http.port());
        let artifact = |name: &str| {
            published
                .artifacts
                .iter()
                .find(|a| a.name == name)
                .context("artifact")
        };
        let (k, i) = (artifact("kernel")?, artifact("initrd")?);
        let conf = format!(
            "BASE=\"{}\"\nARCH=\"{}\"\nKERNEL_PATH=\"{}\"\nKERNEL_SHA=\"{}\"\nINITRD_PATH=\"{}\"\nINITRD_SHA=\"{}\"\nCMDLINE=\"{next}\"\n",
            base.trim_end_matches('/'),
            arch.name(),
            k.path,
            k.sha256,
            i.path,
            i.sha256
        );
        let script = script_image(arch, &bundle.kernel, &conf, &work.join("script.cpio.zst"))?;
        let ours_append = format!("{BASE} phase.provider={base} phase.onfail=poweroff");
        let variants = ours(arch, &bundle)?;
        let mut ours: Vec<Vec<Sample>> = variants.iter().map(|_| Vec::new()).collect();
        let mut theirs = Vec::new();
        // Alternate, so a change in machine load hits every row alike.
        for n in 0..runs.max(1) {
            for (v, samples) in variants.iter().zip(&mut ours) {
                samples.push(measure(
                    &format!("bench-phase-{arch}-{}-{n}", v.syscall),
                    arch,
                    &bundle,
                    &v.initrd,
                    &ours_append,
                    Some(v.syscall),
                )?);
            }
            theirs.push(measure(
                &format!("bench-script-{arch}-{n}"),
                arch,
                &bundle,
                &script,
                BASE,
                None,
            )?);
        }
        // Ratios are against the first (default) Phase Boot row.
        let ours_kexec: Samples = ours[0].iter().map(|s| s.kexec_ms).collect();
        let rows = variants
            .iter()
            .map(|v| v.label)
            .zip(ours.iter())
            .chain([("script", &theirs)]);
        for (who, samples) in rows {
            let kexec: Samples = samples.iter().map(|s| s.kexec_ms).collect();
            let handoff: Samples = samples.iter().map(|s| s.handoff_ms).collect();
            let init: Samples = samples.iter().map(|s| s.init_ms).collect();
            table.row(vec![
                arch.name().into(),
                who.into(),
                samples.len().to_string(),
                format!("{:.0}", kexec.median()),
                format!("{:.0}", kexec.min()),
                format!("{:.0}", kexec.max()),
                format!("{:.0}", init.median()),
                format!("{:.0}", handoff.median()),
                format!("{:.2}", kexec.median() / ours_kexec.median()),
            ]);
        }
        if ours_kexec.is_empty() || theirs.is_empty() {
            bail!("{arch}: no samples");
        }
    }
    println!();
    println!(
        "Netboot under QEMU (TCG, -smp 1, 512 MiB), same kernel, provider (nginx) and artifacts;"
    );
    println!(
        "ratio = median / the default Phase Boot row's median (target: script ≥ 2, i.e. Phase Boot ≤ 0.5×)."
    );
    table.print();
    Ok(())
}
