//! The kexec hand-off in QEMU, without the network: the test-hooks init
//! takes a kernel, a second initramfs and a command line packed into its
//! image (`phase.test.kexec=/kexec`), puts them into sealed memfds as the
//! fetch stage does with what it downloads, and hands off for real. The
//! second kernel boots the release image in report mode; its report carries
//! a marker that only the next command line has.

use std::time::Duration;

use anyhow::Result;
use phase_scenarios::{
    BOOT, SHORT, check, contains, failure_in, stage_event, wait_power, wait_stage,
};
use xtask::Arch;
use xtask::artifacts::{self, KexecBundle, MARKER_KEY, NextKernel};
use xtask::vm::{Vm, VmSpec};

/// The first kernel's banner; the second kernel prints it again.
const BANNER: &str = "Linux version ";
/// What the first kernel prints as it jumps (kernel/kexec_core.c).
const STARTING: &str = "kexec_core: Starting new kernel";
/// What an arm64 kernel prints when /chosen has no usable kaslr-seed.
const NO_SEED: &str = "KASLR disabled due to lack of seed";

fn boot(arch: Arch, name: &str, bundle: &KexecBundle, append: &str) -> Result<Vm> {
    let spec = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &bundle.first.kernel.image,
        &bundle.first.initrd,
        append,
    );
    Vm::start(&spec)
}

/// Boots the first stage, which hands off; the second kernel reports the
/// marker. Returns the VM for further checks.
fn hand_off(arch: Arch, name: &str, next: NextKernel) -> Result<(Vm, KexecBundle)> {
    let bundle = artifacts::kexec_bundle(arch, next)?;
    let mut vm = boot(
        arch,
        name,
        &bundle,
        "phase.test.kexec=/kexec phase.onfail=poweroff",
    )?;
    vm.wait_event("ready", BOOT)?;
    let fetch = wait_stage(&mut vm, "fetch", BOOT)?;
    check(
        &vm,
        fetch["test_hook"] == "/kexec",
        "the fetch stage was not the test hook",
    )?;
    let handoff = wait_stage(&mut vm, "handoff", BOOT)?;
    let kexec = &handoff["kexec"];
    match arch {
        Arch::X86_64 => check(
            &vm,
            kexec["syscall"] == "kexec_file_load",
            "x86_64 did not use kexec_file_load",
        )?,
        Arch::Aarch64 => {
            let names: Vec<&str> = kexec["segments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str())
                .collect();
            check(
                &vm,
                kexec["syscall"] == "kexec_load"
                    && names == ["kernel", "initrd", "dtb", "purgatory"]
                    && kexec["dtb"] == "firmware",
                "arm64 did not load kernel, initrd, the firmware DTB and purgatory with kexec_load",
            )?;
        }
    }
    vm.wait_event("kexec", SHORT)?;
    let report = vm.wait_event("report", BOOT)?;
    let expected = format!("{MARKER_KEY}={}", bundle.marker);
    contains(&report["cmdline"], &expected)?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    // The report came from a second kernel: the first one said it was
    // starting a new kernel, and a second banner followed.
    let (starting, _) = vm
        .console_find(0, STARTING)
        .ok_or_else(|| vm.failure("the first kernel never started a new one"))?;
    let (second, _) = vm
        .console_find(starting, BANNER)
        .ok_or_else(|| vm.failure("no second kernel banner after the kexec"))?;
    let (reported, _) = vm
        .console_find(second, "report: booted with:")
        .ok_or_else(|| vm.failure("no report line from the second kernel"))?;
    check(
        &vm,
        vm.console_count(BANNER) == 2 && vm.console()[reported].contains(&expected),
        "expected exactly two kernels, the second reporting the marker",
    )?;
    Ok((vm, bundle))
}

/// Wall time on the host from the first kernel's "Starting new kernel" to
/// the second kernel's banner and to its init's report.
fn hand_off_times(vm: &Vm) -> Option<(Duration, Duration)> {
    let (i, start) = vm.console_find(0, STARTING)?;
    let (j, banner) = vm.console_find(i, BANNER)?;
    let (_, report) = vm.console_find(j, "report: booted with:")?;
    Some((banner - start, report - start))
}

fn hands_off_to_the_next_kernel(arch: Arch) -> Result<()> {
    let (vm, _) = hand_off(arch, "kexec", NextKernel::Debian)?;
    if let Some((banner, report)) = hand_off_times(&vm) {
        eprintln!(
            "[kexec-{arch}] hand-off: reboot(KEXEC) to the second kernel's banner {:.2} s, to its report {:.2} s",
            banner.as_secs_f64(),
            report.as_secs_f64()
        );
    }
    if arch == Arch::Aarch64 {
        // SECURITY.md row 17: the second kernel found a fresh kaslr-seed.
        // The running kernel zeroes the seed it booted with, so a DTB
        // passed on unedited makes the next kernel print this.
        check(
            &vm,
            !vm.console_contains(NO_SEED),
            "the second kernel booted without a KASLR seed",
        )?;
        let second = vm
            .console_find(0, STARTING)
            .and_then(|(i, _)| vm.console_find(i, BANNER));
        check(
            &vm,
            second.is_some_and(|(i, _)| vm.console_find(i, "KASLR enabled").is_some()),
            "the second kernel did not say KASLR enabled",
        )?;
    }
    Ok(())
}

/// SECURITY.md row 23: a kernel no loader accepts ends in the failure policy,
/// with nothing kexec'd.
fn a_bad_kernel_takes_the_policy(arch: Arch) -> Result<()> {
    let bundle = artifacts::kexec_bundle(arch, NextKernel::BadMagic)?;
    let mut vm = boot(
        arch,
        "kexec-bad",
        &bundle,
        "phase.test.kexec=/kexec phase.onfail=poweroff",
    )?;
    let failure = failure_in(&mut vm, "handoff", BOOT)?;
    match arch {
        // The kernel's bzImage loader does not recognise it.
        Arch::X86_64 => contains(&failure["error"], "kexec_file_load(kernel_fd=")?,
        Arch::Aarch64 => contains(
            &failure["error"],
            "not an arm64 Image: magic 0x644d52be at offset 56 is not ARM\\x64",
        )?,
    }
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_count(BANNER) == 1 && !vm.console_contains(STARTING),
        "a kernel was started",
    )
}

/// SECURITY.md rows 16 and 23 under `lockdown=integrity`. x86_64: a kernel
/// whose signature no longer verifies is refused by kexec_file_load and the
/// init fails closed — no kexec_load. arm64: lockdown forbids kexec_load
/// itself; the error names the call and its arguments.
fn lockdown_refusal_fails_closed(arch: Arch) -> Result<()> {
    let next = match arch {
        Arch::X86_64 => NextKernel::Tampered,
        Arch::Aarch64 => NextKernel::Debian,
    };
    let bundle = artifacts::kexec_bundle(arch, next)?;
    let mut vm = boot(
        arch,
        "kexec-lockdown",
        &bundle,
        "lockdown=integrity phase.test.kexec=/kexec phase.onfail=poweroff",
    )?;
    let failure = failure_in(&mut vm, "handoff", BOOT)?;
    let error = failure["error"].as_str().unwrap_or_default().to_owned();
    match arch {
        Arch::X86_64 => {
            contains(&failure["error"], "kexec_file_load(kernel_fd=")?;
            contains(
                &failure["error"],
                "refused: lockdown or signature enforcement (EPERM); failing closed, no fallback to kexec_load",
            )?;
            check(
                &vm,
                !error.contains("kexec_load("),
                "kexec_load was tried after the refusal",
            )?;
        }
        Arch::Aarch64 => {
            contains(&failure["error"], "kexec_load(entry=0x")?;
            contains(
                &failure["error"],
                ", nr_segments=4, flags=0x0) with segments kernel 0x",
            )?;
            contains(&failure["error"], "Operation not permitted")?;
        }
    }
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_count(BANNER) == 1 && !vm.console_contains(STARTING),
        "a kernel was started",
    )
}

phase_scenarios::on_both_arches!(
    kexec_x86_64,
    kexec_aarch64;
    hands_off_to_the_next_kernel,
    a_bad_kernel_takes_the_policy,
    lockdown_refusal_fails_closed,
);

/// An Image.gz is inflated in the init and handed off the same way.
#[test]
fn kexec_aarch64_hands_off_an_image_gz() -> Result<()> {
    let (vm, _) = hand_off(Arch::Aarch64, "kexec-gz", NextKernel::Gzip)?;
    check(
        &vm,
        stage_event(&vm, "handoff")["kexec"]["kernel_gzip"] == true,
        "the kernel was not taken as gzip",
    )
}
