//! `cargo xtask bench root`: kernel start → the target root's init, for an
//! overlay over a root image fetched from nginx — Phase Boot against a
//! dracut-style shell init doing the same with busybox (`udhcpc`, `wget`,
//! `sha256sum`, `losetup`, `mount`, `switch_root`), in the same VM, with the
//! same kernel, provider and image. The script checks the image's SHA-256
//! against the value it is given; it verifies no signature.
//!
//! Both targets are the test roots' init (`tests/target-init`), which
//! reports its own uptime (CLOCK_BOOTTIME) as the first thing it does: that
//! is the exec moment. The init's start comes from its first event (Phase
//! Boot: the early stage's start; the script: right after mounting /proc).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mkimage::compress::Compression;
use mkimage::cpio::{Archive, Kind};

use super::{Samples, Table, boot};
use crate::artifacts::{self, Bundle, Variant};
use crate::provider::{self, Publication};
use crate::vm::{Vm, VmSpec};
use crate::{Arch, debian, paths, roots, setup};

const BASE: &str = "quiet";

/// The script init. `/bench.conf` supplies the provider, path and hash.
const SCRIPT: &str = r#"#!/bin/sh
# A dracut-style live root: busybox for DHCP, download, hashing, the loop
# device, the mounts and switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
echo "phase-event: {\"event\":\"init\",\"t_ms\":$(awk '{printf "%d", $1 * 1000}' /proc/uptime)}"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
. /bench.conf
fail() { echo "script init: $*"; poweroff -f; }
for m in $MODULES; do insmod "/lib/modules/$m" || fail "insmod $m"; done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -s /udhcpc.sh || fail "no DHCP lease"
wget -q -O /run/root.img "$BASE/$ROOT_PATH" || fail "root image"
echo "$ROOT_SHA  /run/root.img" > /run/sums
sha256sum -c -s /run/sums || fail "sha256 mismatch"
mkdir -p /run/lower /run/overlay /sysroot
losetup -r /dev/loop0 /run/root.img || fail "losetup"
mount -t squashfs -o ro /dev/loop0 /run/lower || fail "mount lower"
mount -t tmpfs tmpfs /run/overlay || fail "mount upper"
mkdir -p /run/overlay/upper /run/overlay/work
mount -t overlay overlay -o lowerdir=/run/lower,upperdir=/run/overlay/upper,workdir=/run/overlay/work /sysroot || fail "overlay"
for d in dev proc sys run; do mount --move /$d /sysroot/$d || fail "move /$d"; done
exec switch_root /sysroot /sbin/init
"#;

const UDHCPC: &str = "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nifconfig \"$interface\" \"$ip\" netmask \"$subnet\"\nroute add default gw \"$router\"\n";

/// The script's image: busybox, the NIC, loop, squashfs and overlay
/// modules in load order, the script and its config.
fn script_image(arch: Arch, bundle: &Bundle, conf: &str, out: &Path) -> Result<()> {
    let mut a = Archive::new();
    let busybox = debian::unpack("busybox-static", arch)?.join("bin/busybox");
    a.add("/bin/busybox", 0o755, Kind::File(std::fs::read(&busybox)?))?;
    a.add("/bin/sh", 0o777, Kind::Symlink("busybox".into()))?;
    let init = boot::ScriptInit {
        modules: &["virtio_pci", "virtio_net", "loop", "squashfs", "overlay"],
        script: SCRIPT,
        udhcpc: UDHCPC,
        conf,
        dirs: &["/proc", "/sys", "/dev", "/run"],
    };
    init.add_to(&mut a, &bundle.kernel)?;
    std::fs::write(out, Compression::Zstd.compress(&a.to_bytes(0)?)?)?;
    Ok(())
}

/// One boot: the exec moment and the init's start, both on the guest's
/// clock.
struct Sample {
    exec_ms: f64,
    init_ms: f64,
    /// Phase Boot's stage events, in order: (stage, ms it took).
    stages: Vec<(String, f64)>,
}

fn measure(name: &str, arch: Arch, bundle: &Bundle, initrd: &Path, append: &str) -> Result<Sample> {
    let mut spec = VmSpec::direct(name, arch, &bundle.kernel.image, initrd, append);
    spec.user_net = true;
    let mut vm = Vm::start(&spec)?;
    let target = vm.wait_event("target", Duration::from_secs(600))?;
    vm.wait_exit(Duration::from_secs(60))?;
    let exec_ms = target["uptime_ms"]
        .as_f64()
        .with_context(|| format!("{name}: the target reported no uptime"))?;
    let init_start = boot::init_start(&vm, name)?;
    // Each stage, then the parts its `took` breakdown names (`fetch.client_ms`).
    let mut stages = Vec::new();
    for e in vm.events().iter().filter(|e| e["event"] == "stage") {
        let (Some(stage), Some(ms)) = (e["stage"].as_str(), e["ms"].as_f64()) else {
            continue;
        };
        stages.push((stage.to_owned(), ms));
        if let Some(took) = e["took"].as_object() {
            for (part, ms) in took {
                if let Some(ms) = ms.as_f64() {
                    stages.push((format!("{stage}.{part}"), ms));
                }
            }
        }
    }
    Ok(Sample {
        exec_ms,
        init_ms: exec_ms - init_start,
        stages,
    })
}

pub fn run(runs: usize, only: Option<Arch>) -> Result<()> {
    setup::ensure_all()?;
    let arches: Vec<Arch> = only.map_or_else(|| Arch::ALL.to_vec(), |a| vec![a]);
    let mut table = Table::new(&[
        "arch",
        "init",
        "runs",
        "kernel start → target init, median ms",
        "min",
        "max",
        "init start → target init, median ms",
        "ratio",
    ]);
    let mut stages = Table::new(&["arch", "Phase Boot stage", "median ms", "min", "max"]);
    for arch in arches {
        eprintln!("==> root benchmark on {arch}: {runs} runs each");
        let bundle = artifacts::bundle(arch, "netboot", Variant::Release)?;
        let work = paths::phase().join("bench-root").join(arch.name());
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        let tree = roots::tree(arch, &work, true, false)?;
        let image = work.join("root.squashfs");
        roots::squashfs(&tree, &image)?;
        let (provider_tree, published) = provider::publish_tree(
            &work,
            &Publication {
                arch,
                version: 1,
                expires_in: 3600,
                cmdline: String::new(),
                kernel: &bundle.kernel.image,
                initrd: None,
                served_as: None,
                root_image: Some(&image),
                floor: None,
            },
        )?;
        let nginx = provider::nginx(&provider_tree, &work)?;
        let base = provider::guest_url("http", nginx.http.port());
        let root = published
            .artifacts
            .iter()
            .find(|a| a.name == "root_image")
            .context("the published root image")?;
        let conf = format!(
            "BASE=\"{}\"\nROOT_PATH=\"{}\"\nROOT_SHA=\"{}\"\n",
            base.trim_end_matches('/'),
            root.path,
            root.sha256
        );
        let script = work.join("script.cpio.zst");
        script_image(arch, &bundle, &conf, &script)?;
        let ours_append = format!("{BASE} phase.provider={base} phase.onfail=poweroff");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Alternate, so a change in machine load hits both alike.
        for n in 0..runs.max(1) {
            ours.push(measure(
                &format!("bench-root-phase-{arch}-{n}"),
                arch,
                &bundle,
                &bundle.initrd,
                &ours_append,
            )?);
            theirs.push(measure(
                &format!("bench-root-script-{arch}-{n}"),
                arch,
                &bundle,
                &script,
                BASE,
            )?);
        }
        if ours.is_empty() || theirs.is_empty() {
            bail!("{arch}: no samples");
        }
        let ours_init: Samples = ours.iter().map(|s| s.init_ms).collect();
        for (stage, took) in stage_samples(&ours) {
            stages.row(vec![
                arch.name().into(),
                stage,
                format!("{:.0}", took.median()),
                format!("{:.0}", took.min()),
                format!("{:.0}", took.max()),
            ]);
        }
        for (who, samples) in [("phase", &ours), ("script", &theirs)] {
            let exec: Samples = samples.iter().map(|s| s.exec_ms).collect();
            let init: Samples = samples.iter().map(|s| s.init_ms).collect();
            table.row(vec![
                arch.name().into(),
                who.into(),
                samples.len().to_string(),
                format!("{:.0}", exec.median()),
                format!("{:.0}", exec.min()),
                format!("{:.0}", exec.max()),
                format!("{:.0}", init.median()),
                format!("{:.2}", init.median() / ours_init.median()),
            ]);
        }
    }
    println!();
    println!(
        "Overlay over a root image fetched from nginx, under QEMU (TCG, -smp 1, 512 MiB), same kernel, image and provider;"
    );
    println!(
        "ratio = init start → target init median / Phase Boot's (target: script ≥ 2, i.e. Phase Boot ≤ 0.5×)."
    );
    table.print();
    println!();
    println!("Where Phase Boot's init-start → target init goes (its own stage events):");
    stages.print();
    Ok(())
}

/// Each stage's durations across the samples, in the order the first boot
/// ran them.
fn stage_samples(samples: &[Sample]) -> Vec<(String, Samples)> {
    let mut out: Vec<(String, Samples)> = Vec::new();
    for (stage, ms) in samples.iter().flat_map(|s| &s.stages) {
        match out.iter_mut().find(|(name, _)| name == stage) {
            Some((_, took)) => took.push(*ms),
            None => {
                let mut took = Samples::default();
                took.push(*ms);
                out.push((stage.clone(), took));
            }
        }
    }
    out
}
