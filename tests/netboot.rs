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
use phase_scenarios::{check, contains, failure_in, stage_event, wait_power, wait_stage};
use serde_json::{Value, json};
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::provider::{self, Publication};
use xtask::vm::{Drive, Media, Vm, VmSpec};

/// A netboot with two kernel boots and a kexec takes 20–60 s under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
const SPEC: &str = "tests/specs/netboot.toml";

/// A marker unique to this run, so a stale report cannot pass.
fn marker(name: &str, arch: Arch) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("marker={name}-{arch}-{nanos:08x}")
}

/// The signed command line of the second kernel.
fn second_cmdline(arch: Arch, marker: &str) -> String {
    format!(
        "console={} panic=-1 phase.report phase.onfail=poweroff {marker}",
        arch.console()
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
        expires_in: 3600,
        cmdline: String::new(),
        kernel: &bundle.kernel.image,
        initrd: Some(&second.initrd),
        served_as: None,
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
    let mut spec = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        append,
    );
    spec.user_net = true;
    Vm::start(&spec)
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
    let mut vm = boot(arch, &format!("netboot-{scheme}"), &run.bundle, &append)?;
    let network = wait_stage(&mut vm, "network", NETBOOT)?;
    check(
        &vm,
        network.to_string().contains("10.0.2.15"),
        "DHCP did not give 10.0.2.15",
    )?;
    // A netboot leaves the disks to the next kernel: q35's AHCI controller
    // asks for ahci, which is named and not loaded.
    let modules = stage_event(&vm, "modules");
    let skipped = &modules["storage_not_loaded"];
    let expected = match arch {
        Arch::X86_64 => json!(["ahci"]),
        Arch::Aarch64 => json!([]),
    };
    check(
        &vm,
        *skipped == expected,
        &format!("storage drivers not loaded: {skipped}, expected {expected}"),
    )?;
    check(
        &vm,
        !modules["loaded"].to_string().contains("\"ahci\""),
        "ahci was loaded on the netboot path",
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
    vm.wait_event("kexec", NETBOOT)?;
    let report = vm.wait_event("report", NETBOOT)?;
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

/// A refused boot: the failure event's stage and reason, the policy (power
/// off), and only one kernel on the console.
fn refused(vm: &mut Vm, stage: &str, reason: &str) -> Result<()> {
    let failure = failure_in(vm, stage, NETBOOT)?;
    contains(&failure["error"], reason)?;
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
    let mut vm = boot(
        arch,
        "tampered",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(&mut vm, "verify", "sha256")
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
    refused(&mut vm, "fetch", "version 4")
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
    refused(&mut vm, "fetch", "expired")
}

fn other_arch_manifest_is_refused(arch: Arch) -> Result<()> {
    let other = if arch == Arch::X86_64 {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let run = provider(arch, SPEC, |p| {
        p.arch = other;
        p.served_as = Some(arch);
        p.cmdline = second_cmdline(arch, "marker=never");
    })?;
    let mut vm = boot(
        arch,
        "otherarch",
        &run.bundle,
        &format!("phase.provider={} phase.onfail=poweroff", run.http),
    )?;
    refused(&mut vm, "fetch", "arch")
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
    check(&vm, tried.len() == 1, "the dead mirror was not tried first")?;
    let report = vm.wait_event("report", NETBOOT)?;
    contains(&report["cmdline"], &mark)?;
    vm.expect_clean_exit(Duration::from_secs(60))
}

/// A netboot that fails into the rescue shell (debug image,
/// `phase.onfail=shell`) first loads the storage drivers it passed over, so
/// the shell sees the machine's disks: here a virtio disk (and q35's AHCI).
fn rescue_shell_gets_the_storage_drivers(arch: Arch) -> Result<()> {
    let bundle = artifacts::bundle(arch, "debug", Variant::Release)?;
    let scratch = tempfile::tempdir()?;
    let disk = scratch.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20])?;
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
    spec.drives.push(Drive {
        path: disk,
        media: Media::Disk,
        format: "raw",
        readonly: true,
    });
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
    vm.kill()
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
    rescue_shell_gets_the_storage_drivers,
);
