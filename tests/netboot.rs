//! The main job end to end, on both arches: the first kernel's init gets an
//! address by DHCP from QEMU's user network, fetches a signed manifest from
//! real nginx on the host's loopback (10.0.2.2 to the guest), verifies it,
//! streams the Debian kernel and an initramfs into sealed memfds and kexecs.
//! The second kernel boots the same image in report mode; its report carries
//! a marker that only the signed command line has, so the report can only
//! come from the second kernel. The negative runs must end in the failure
//! policy with nothing kexec'd.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use phase_scenarios::{check, contains, failure_in, marker, stage_event, wait_power, wait_stage};
use serde_json::{Value, json};
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::faults::{Fault, FaultProvider};
use xtask::provider::{self, Publication};
use xtask::vm::{Drive, Media, Vm, VmSpec};

/// A netboot with two kernel boots and a kexec takes 20–60 s under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
const SPEC: &str = "tests/specs/netboot.toml";
/// QEMU's i6300ESB watchdog (PCI, so on both machines); on expiry QEMU
/// resets the guest, which `-no-reboot` turns into QEMU exiting.
const WATCHDOG: [&str; 4] = ["-device", "i6300esb", "-watchdog-action", "reset"];
/// For a rescue shell to answer what is typed.
const SHELL: Duration = Duration::from_secs(60);

/// The signed command line of the second kernel.
fn second_cmdline(arch: Arch, marker: &str) -> String {
    format!(
        "{} phase.report phase.onfail=poweroff {marker}",
        arch.kernel_params()
    )
}

struct Run {
    _dir: tempfile::TempDir,
    _nginx: phase_tools::nginx::Nginx,
    http: String,
    https: String,
    tree: std::path::PathBuf,
    bundle: Bundle,
}

/// Publishes the Debian kernel and the test image with `adjust` applied, and
/// serves the tree with nginx.
fn provider(arch: Arch, spec: &str, adjust: impl FnOnce(&mut Publication<'_>)) -> Result<Run> {
    let bundle = artifacts::bundle(arch, spec, Variant::Release)?;
    let dir = tempfile::Builder::new()
        .prefix("phase-netboot-")
        .tempdir()?;
    let second = artifacts::bundle(arch, SPEC, Variant::Release)?;
    let mut publication = Publication {
        arch,
        version: 5,
        floor: None,
        expires_in: 3600,
        cmdline: String::new(),
        kernel: &bundle.kernel.image,
        initrd: Some(&second.initrd),
        served_as: None,
        root_image: None,
    };
    adjust(&mut publication);
    let (tree, _) = provider::publish_tree(dir.path(), &publication)?;
    let nginx = provider::nginx(&tree, dir.path())?;
    Ok(Run {
        http: provider::guest_url("http", nginx.http.port()),
        https: provider::guest_url("https", nginx.https.port()),
        _nginx: nginx,
        tree,
        _dir: dir,
        bundle,
    })
}

fn boot(arch: Arch, name: &str, bundle: &Bundle, append: &str) -> Result<Vm> {
    boot_with(arch, name, bundle, append, |_| {})
}

fn boot_with(
    arch: Arch,
    name: &str,
    bundle: &Bundle,
    append: &str,
    adjust: impl FnOnce(&mut VmSpec),
) -> Result<Vm> {
    let mut spec = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        append,
    );
    spec.user_net = true;
    adjust(&mut spec);
    Vm::start(&spec)
}

/// A blank 1 MiB raw disk in `dir`, for a VM that must have a disk
/// controller.
fn blank_disk(dir: &Path) -> Result<Drive> {
    let path = dir.join("disk.img");
    std::fs::write(&path, vec![0u8; 1 << 20])?;
    Ok(Drive {
        path,
        media: Media::Disk,
        format: "raw",
        readonly: true,
    })
}

/// How many kernels started on this console.
fn kernel_starts(vm: &Vm) -> usize {
    vm.console()
        .iter()
        .filter(|l| l.contains("Linux version"))
        .count()
}

fn boots(arch: Arch, scheme: &str) -> Result<()> {
    let mark = marker(scheme, arch);
    let run = provider(arch, SPEC, |p| p.cmdline = second_cmdline(arch, &mark))?;
    let url = if scheme == "https" {
        &run.https
    } else {
        &run.http
    };
    // init=/bin/sh and rd.break on the first command line must not reach the
    // second kernel: it boots with the signed command line verbatim (row 15).
    let append = format!("phase.provider={url} phase.onfail=poweroff init=/bin/sh");
    // A virtio disk, so that both arches have a storage driver to pass over.
    let scratch = tempfile::tempdir()?;
    let disk = blank_disk(scratch.path())?;
    // A hardware watchdog (SECURITY.md row 22), which the init arms and
    // leaves armed through the kexec.
    let mut vm = boot_with(
        arch,
        &format!("netboot-{scheme}"),
        &run.bundle,
        &append,
        |s| {
            s.drives.push(disk);
            s.extra_args.extend(WATCHDOG.map(str::to_owned));
        },
    )?;
    let network = wait_stage(&mut vm, "network", NETBOOT)?;
    check(
        &vm,
        network.to_string().contains("10.0.2.15"),
        "DHCP did not give 10.0.2.15",
    )?;
    // A netboot leaves the disks to the next kernel: the virtio disk asks
    // for virtio_blk (and q35's AHCI controller for ahci), which are named
    // and not loaded.
    let modules = stage_event(&vm, "modules");
    let skipped = &modules["storage_not_loaded"];
    let expected = match arch {
        Arch::X86_64 => json!(["ahci", "virtio_blk"]),
        Arch::Aarch64 => json!(["virtio_blk"]),
    };
    check(
        &vm,
        *skipped == expected,
        &format!("storage drivers not loaded: {skipped}, expected {expected}"),
    )?;
    let loaded = modules["loaded"].to_string();
    check(
        &vm,
        !loaded.contains("\"ahci\"") && !loaded.contains("\"virtio_blk\""),
        "a storage driver was loaded on the netboot path",
    )?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    check(&vm, fetch["version"] == 5, "not version 5")?;
    contains(&fetch["mirror"], &url[..url.len() - 1])?;
    let verify = wait_stage(&mut vm, "verify", NETBOOT)?;
    check(
        &vm,
        verify["artifacts"].as_array().is_some_and(|a| a.len() == 2),
        "two artifacts were not verified",
    )?;
    // The first stage found the watchdog stopped, armed it, and left it
    // armed with no way out; the second kernel's driver found it running,
    // its lock bit still set.
    let armed = vm
        .events()
        .iter()
        .find(|e| e["event"] == "watchdog")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        armed["armed"] == true
            && armed["found"]["hardware"] == json!({ "running": false, "locked": false }),
        &format!("the first stage did not arm a stopped watchdog: {armed}"),
    )?;
    let kexec = vm.wait_event("kexec", NETBOOT)?;
    check(
        &vm,
        kexec["watchdog"]["nowayout"] == true && kexec["watchdog"]["errors"] == json!([]),
        &format!("the watchdog was not left armed for the next stage: {kexec}"),
    )?;
    let report = vm.wait_event("report", NETBOOT)?;
    check(
        &vm,
        report["watchdog"]["found"]["hardware"] == json!({ "running": true, "locked": true }),
        &format!("the second stage did not find the watchdog running: {report}"),
    )?;
    let cmdline = report["cmdline"].as_str().unwrap_or_default();
    check(
        &vm,
        cmdline.contains(&mark),
        "the report lacks the marker of the signed command line",
    )?;
    check(
        &vm,
        !cmdline.contains("init=/bin/sh"),
        "the first command line leaked into the second kernel",
    )?;
    check(
        &vm,
        kernel_starts(&vm) == 2,
        "the console does not show two kernels",
    )?;
    if arch == Arch::Aarch64 {
        check(
            &vm,
            !vm.console_contains("KASLR disabled due to lack of seed"),
            "the second kernel had no KASLR seed",
        )?;
    }
    vm.expect_clean_exit(Duration::from_secs(60))
}

/// A refused boot: the failure event's stage, its reason's kind and the
/// values it names (each of `detail` must equal the event's), the policy
/// (power off), and only one kernel on the console.
fn refused(vm: &mut Vm, stage: &str, kind: &str, detail: Value) -> Result<()> {
    let failure = failure_in(vm, stage, NETBOOT)?;
    check(
        vm,
        failure["kind"] == kind,
        &format!("the failure is not {kind}: {failure}"),
    )?;
    for (field, want) in detail.as_object().into_iter().flatten() {
        check(
            vm,
            failure["detail"][field] == *want,
            &format!("the failure's {field} is not {want}: {failure}"),
        )?;
    }
    // The last attempt was a refusal of bytes that arrived, not a transport
    // error.
    let tried = failure["tried"].as_array().cloned().unwrap_or_default();
    check(
        vm,
        tried.last().is_some_and(|t| t["outcome"] == "refused"),
        &format!("the last attempt is not a refusal: {failure}"),
    )?;
    wait_power(vm, "power off", Duration::from_secs(60))?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    check(vm, kernel_starts(vm) == 1, "a second kernel started")?;
    check(
        vm,
        !vm.events().iter().any(|e| e["event"] == "kexec"),
        "something was kexec'd",
    )
}

fn tampered_kernel_is_refused(arch: Arch) -> Result<()> {
    let run = provider(arch, SPEC, |p| {
        p.cmdline = second_cmdline(arch, "marker=never")
    })?;
    let blob = run
        .tree
        .join("blobs/sha256")
        .join(sha256_hex(&run.bundle.kernel.image)?);
    let mut bytes = std::fs::read(&blob)?;
    bytes[4096] ^= 0x20;
    std::fs::write(&blob, bytes)?;
    let expected = sha256_hex(&run.bundle.kernel.image)?;
    let actual = sha256_hex(&blob)?;
    let mut vm = boot(
        arch,
        "tampered",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(
        &mut vm,
        "verify",
        "artifact_digest",
        json!({ "expected": expected, "actual": actual }),
    )
}

fn rolled_back_manifest_is_refused(arch: Arch) -> Result<()> {
    let run = provider(arch, "tests/specs/floor.toml", |p| {
        p.version = 4;
        p.cmdline = second_cmdline(arch, "marker=never");
    })?;
    let mut vm = boot(
        arch,
        "rollback",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(
        &mut vm,
        "fetch",
        "rollback",
        json!({ "version": 4, "floor": 5 }),
    )
}

fn expired_manifest_is_refused(arch: Arch) -> Result<()> {
    let run = provider(arch, SPEC, |p| {
        p.expires_in = -60;
        p.cmdline = second_cmdline(arch, "marker=never");
    })?;
    let mut vm = boot(
        arch,
        "expired",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(&mut vm, "fetch", "expired", json!({}))?;
    let failure = vm
        .events()
        .iter()
        .find(|e| e["event"] == "failure")
        .cloned();
    // Expired against something later than its expiry.
    let detail = &failure.unwrap_or_default()["detail"];
    check(
        &vm,
        detail["expires_at"].as_u64() < detail["reference"].as_u64(),
        &format!("not expired by its own figures: {detail}"),
    )
}

fn other_arch_manifest_is_refused(arch: Arch) -> Result<()> {
    let other = if arch == Arch::X86_64 {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    // `phase publish` checks the kernel against the manifest's arch, so the
    // misplaced manifest carries the other arch's kernel, as a mixed-up
    // mirror would serve it.
    let kernel: &'static std::path::Path =
        Box::leak(artifacts::kernel(other)?.image.into_boxed_path());
    let run = provider(arch, SPEC, |p| {
        p.arch = other;
        p.kernel = kernel;
        p.served_as = Some(arch);
        p.cmdline = second_cmdline(arch, "marker=never");
    })?;
    let mut vm = boot(
        arch,
        "otherarch",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(
        &mut vm,
        "fetch",
        "arch_mismatch",
        json!({ "found": other.name(), "expected": arch.name() }),
    )
}

/// The first mirror is dead; the second is good and the machine boots.
fn dead_first_mirror_fails_over(arch: Arch) -> Result<()> {
    let mark = marker("failover", arch);
    let run = provider(arch, SPEC, |p| p.cmdline = second_cmdline(arch, &mark))?;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        provider::guest_url("http", l.local_addr()?.port())
    };
    let append = format!("phase.provider={dead},{} phase.onfail=poweroff", run.http);
    let mut vm = boot(arch, "failover", &run.bundle, &append)?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    let tried: Vec<Value> = fetch["tried"].as_array().cloned().unwrap_or_default();
    // The dead mirror was tried first and failed to connect; the manifest
    // came from the good one, and so did every artifact.
    check(
        &vm,
        tried.len() == 1
            && tried[0]["at"] == dead.trim_end_matches('/')
            && tried[0]["outcome"] == "transport"
            && tried[0]["kind"] == "connection_refused"
            // Its first request: the rotation index, before the manifest.
            && tried[0]["what"] == "rotation",
        &format!("the dead mirror's attempt is not a refused connection: {tried:?}"),
    )?;
    check(
        &vm,
        fetch["mirror"] == run.http.trim_end_matches('/'),
        &format!("the manifest did not come from {}: {fetch}", run.http),
    )?;
    let verify = wait_stage(&mut vm, "verify", NETBOOT)?;
    let from: Vec<&str> = verify["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["from"].as_str())
        .collect();
    check(
        &vm,
        from.len() == 2 && from.iter().all(|f| f.starts_with(&run.http)),
        &format!("not every artifact came from {}: {from:?}", run.http),
    )?;
    check(
        &vm,
        verify["tried"].as_array().is_some_and(Vec::is_empty),
        "an artifact needed a second try",
    )?;
    let report = vm.wait_event("report", NETBOOT)?;
    contains(&report["cmdline"], &mark)?;
    vm.expect_clean_exit(Duration::from_secs(60))
}

/// `phase.timeout` ends a boot that every per-transfer deadline would let
/// go on: a provider that sends the kernel at 16 KiB/s (above the client's
/// minimum rate, never silent for long) needs minutes for it, and the 40 s
/// budget for the whole boot runs out during the transfer.
fn the_boot_budget_ends_a_slow_transfer(arch: Arch) -> Result<()> {
    let run = provider(arch, SPEC, |p| {
        p.cmdline = second_cmdline(arch, "marker=never")
    })?;
    let slow = FaultProvider::start(
        &run.tree,
        Fault::Trickle {
            bytes_per_s: 16 << 10,
        },
    )?;
    let url = provider::guest_url("http", slow.port());
    let mut vm = boot(
        arch,
        "budget",
        &run.bundle,
        &format!("phase.provider={url} phase.timeout=40 phase.onfail=poweroff"),
    )?;
    // The manifest arrives; the kernel is still arriving when time is up.
    wait_stage(&mut vm, "fetch", NETBOOT)?;
    let failure = failure_in(&mut vm, "verify", NETBOOT)?;
    check(
        &vm,
        failure["kind"] == "boot_timeout" && failure["detail"]["timeout_s"] == 40,
        &format!("the boot budget did not end it: {failure}"),
    )?;
    let at = failure["t_ms"].as_u64().unwrap_or(0);
    check(
        &vm,
        (40_000..50_000).contains(&at),
        &format!("the failure came at {at} ms, not when the 40 s budget ended"),
    )?;
    wait_power(&mut vm, "power off", Duration::from_secs(60))?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    check(
        &vm,
        !vm.events().iter().any(|e| e["event"] == "kexec"),
        "something was kexec'd",
    )
}

/// A provider that sends the kernel's headers and then nothing, to a boot
/// told to retry for an hour with an hour's budget: only the hardware
/// watchdog ends it (SECURITY.md row 22). Its 30 s run out after the last
/// sign of progress — the verify stage starting — and QEMU resets the
/// machine (with `-no-reboot`: exits). The policy is `halt`, which would
/// leave QEMU running, and nothing reports a failure or powers off first.
fn a_stalled_fetch_is_ended_by_the_watchdog(arch: Arch) -> Result<()> {
    const WATCHDOG_S: u64 = 30;
    let run = provider(arch, SPEC, |p| {
        p.cmdline = second_cmdline(arch, "marker=never")
    })?;
    let hang = FaultProvider::start(&run.tree, Fault::Hang)?;
    let url = provider::guest_url("http", hang.port());
    let mut vm = boot_with(
        arch,
        "watchdog-hang",
        &run.bundle,
        &format!(
            "phase.provider={url} rd.retry=3600 phase.timeout=3600 phase.watchdog={WATCHDOG_S} phase.onfail=halt"
        ),
        |s| s.extra_args.extend(WATCHDOG.map(str::to_owned)),
    )?;
    let armed = vm.wait_event("watchdog", NETBOOT)?;
    check(
        &vm,
        armed["armed"] == true && armed["timeout_s"] == WATCHDOG_S,
        &format!("the watchdog was not armed for {WATCHDOG_S} s: {armed}"),
    )?;
    wait_stage(&mut vm, "fetch", NETBOOT)?;
    let stalled = std::time::Instant::now();
    // The deadline is far beyond the watchdog's: only it can end the boot
    // in time.
    let status = vm.wait_exit(Duration::from_secs(WATCHDOG_S + 90))?;
    let after = stalled.elapsed();
    check(&vm, status.success(), &format!("QEMU exited with {status}"))?;
    check(
        &vm,
        after <= Duration::from_secs(WATCHDOG_S) + xtask::vm::scaled(Duration::from_secs(30)),
        &format!("the machine reset only {after:?} after the stall"),
    )?;
    check(
        &vm,
        after >= Duration::from_secs(WATCHDOG_S - 5),
        &format!(
            "the machine reset {after:?} after the stall, before the watchdog's {WATCHDOG_S} s"
        ),
    )?;
    for kind in ["failure", "power", "kexec"] {
        check(
            &vm,
            !vm.events().iter().any(|e| e["event"] == kind),
            &format!("a {kind} event came before the reset: the init ended the boot itself"),
        )?;
    }
    check(
        &vm,
        !vm.console_contains("reboot: "),
        "the kernel restarted or halted the machine itself",
    )?;
    eprintln!(
        "[watchdog-hang-{arch}] reset {:.1} s after the stall ({WATCHDOG_S} s watchdog)",
        after.as_secs_f64()
    );
    Ok(())
}

/// A netboot that fails into the rescue shell (debug image,
/// `phase.onfail=shell`) first loads the storage drivers it passed over, so
/// the shell sees the machine's disks: here a virtio disk (and q35's AHCI).
fn rescue_shell_gets_the_storage_drivers(arch: Arch) -> Result<()> {
    let bundle = artifacts::bundle(arch, "debug", Variant::Release)?;
    let scratch = tempfile::tempdir()?;
    let disk = blank_disk(scratch.path())?;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        provider::guest_url("http", l.local_addr()?.port())
    };
    let mut spec = VmSpec::direct(
        format!("rescue-shell-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        format!("phase.provider={dead} rd.retry=0 phase.onfail=shell"),
    );
    spec.user_net = true;
    spec.drives.push(disk);
    let mut vm = Vm::start(&spec)?;
    let modules = wait_stage(&mut vm, "modules", NETBOOT)?;
    check(
        &vm,
        modules["storage_not_loaded"]
            .to_string()
            .contains("\"virtio_blk\""),
        "virtio_blk is not named as passed over",
    )?;
    failure_in(&mut vm, "fetch", NETBOOT)?;
    let loaded = vm.wait_event_where("storage drivers for the shell", NETBOOT, |e| {
        e["event"] == "modules" && e["background"] == false
    })?;
    check(
        &vm,
        loaded["loaded"].to_string().contains("\"virtio_blk\""),
        &format!("virtio_blk was not loaded for the shell: {loaded}"),
    )?;
    vm.wait_console("starting /bin/sh", NETBOOT)?;
    check(
        &vm,
        vm.console_contains("storage driver(s) loaded for the shell"),
        "the console does not say the storage drivers were loaded for the shell",
    )?;
    // The shell runs what is typed and sees the disk: the arithmetic shows
    // the line was executed (the terminal only echoes it), and the size is
    // the 1 MiB disk in 512-byte sectors. (The prompt ends no line, so it
    // is not waited for: the terminal holds what is typed until the shell
    // reads it.)
    vm.type_console("echo shell-$((6*7)) disk-$(cat /sys/block/vda/size)\n")?;
    vm.wait_console("shell-42 disk-2048", SHELL)?;
    // PID 1 still supervises: SIGUSR2 from the shell powers off.
    vm.type_console("kill -USR2 1\n")?;
    wait_power(&mut vm, "power off", SHELL)?;
    vm.expect_clean_exit(SHELL)
}

fn sha256_hex(path: &Path) -> Result<String> {
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn boots_over_http(arch: Arch) -> Result<()> {
    boots(arch, "http")
}

fn boots_over_https(arch: Arch) -> Result<()> {
    boots(arch, "https")
}

phase_scenarios::on_both_arches!(
    boots_over_http,
    boots_over_https,
    tampered_kernel_is_refused,
    rolled_back_manifest_is_refused,
    expired_manifest_is_refused,
    other_arch_manifest_is_refused,
    dead_first_mirror_fails_over,
    the_boot_budget_ends_a_slow_transfer,
    a_stalled_fetch_is_ended_by_the_watchdog,
    rescue_shell_gets_the_storage_drivers,
);
