//! The kexec hand-off in QEMU, without the network: the test-hooks init
//! takes a kernel, a second initramfs and a command line packed into its
//! image (`phase.test.kexec=/kexec`), puts them into sealed memfds as the
//! fetch stage does with what it downloads, and hands off for real. The
//! second kernel boots the release image in report mode; its report carries
//! a marker that only the next command line has.

use std::time::Duration;

use anyhow::Result;
use phase_initramfs::image::KexecMethod;
use phase_scenarios::{
    BOOT, SHORT, check, contains, failure_in, stage_event, wait_power, wait_stage,
};
use serde_json::{Value, json};
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
        // The image names no method: the init's default decides.
        Arch::X86_64 => {
            let (syscall, why) = match KexecMethod::DEFAULT {
                KexecMethod::File => ("kexec_file_load", "method_file"),
                KexecMethod::Load => ("kexec_load", "method_load"),
                KexecMethod::Auto => ("kexec_load", "method_auto"),
            };
            check(
                &vm,
                kexec["syscall"] == syscall && kexec["why"] == why,
                &format!("x86_64 did not use {syscall} ({why}): {kexec}"),
            )?
        }
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

/// Checks a failure's `kind` and that `detail` has each field of `want`.
fn failure_is(vm: &Vm, failure: &Value, kind: &str, want: Value) -> Result<()> {
    let detail = &failure["detail"];
    let matches = want
        .as_object()
        .is_some_and(|w| w.iter().all(|(k, v)| &detail[k] == v));
    check(
        vm,
        failure["kind"] == kind && matches,
        &format!("expected a {kind} failure with {want}: {failure}"),
    )
}

/// The `what` and `detail.why` of each attempt a failure lists.
fn tried(failure: &Value) -> Vec<(Value, Value)> {
    failure["tried"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["what"].clone(), t["detail"]["why"].clone()))
        .collect()
}

/// SECURITY.md row 23: a kernel no loader accepts ends in the failure policy,
/// with nothing kexec'd. Its header is refused before any syscall, and the
/// failure names the field (x86 `HdrS` at 0x202, arm64 `ARM\x64` at 0x38).
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
        Arch::X86_64 => failure_is(
            &vm,
            &failure,
            "bzimage_header",
            json!({ "field": "header", "value": 0x5372_64b7u32 }),
        )?,
        Arch::Aarch64 => failure_is(&vm, &failure, "image_header", json!({ "field": "magic" }))?,
    }
    check(
        &vm,
        tried(&failure).is_empty(),
        &format!("a syscall was tried for a kernel with a bad header: {failure}"),
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_count(BANNER) == 1 && !vm.console_contains(STARTING),
        "a kernel was started",
    )
}

/// SECURITY.md rows 16 and 23 under `lockdown=integrity`. x86_64: only
/// kexec_file_load is tried, whatever the image's method, and Debian's own
/// kernel is refused — its signature chains to Debian's CA, which this
/// kernel does not trust without Secure Boot's keys (tests/secureboot.rs
/// shows the accepted case, a kernel signed with a db key) — and the init
/// fails closed: no kexec_load. arm64: lockdown forbids kexec_load itself.
fn lockdown_refusal_fails_closed(arch: Arch) -> Result<()> {
    let bundle = artifacts::kexec_bundle(arch, NextKernel::Debian)?;
    let mut vm = boot(
        arch,
        "kexec-lockdown",
        &bundle,
        "lockdown=integrity phase.test.kexec=/kexec phase.onfail=poweroff",
    )?;
    let failure = failure_in(&mut vm, "handoff", BOOT)?;
    match arch {
        Arch::X86_64 => {
            failure_is(
                &vm,
                &failure,
                "kexec_refused",
                json!({ "syscall": "kexec_file_load", "errno": "EPERM", "stop": "policy_refusal" }),
            )?;
            check(
                &vm,
                tried(&failure) == [(json!("kexec_file_load"), json!("locked_down"))],
                &format!("expected kexec_file_load alone, for lockdown: {failure}"),
            )?;
        }
        Arch::Aarch64 => {
            failure_is(
                &vm,
                &failure,
                "kexec_failed",
                json!({ "syscall": "kexec_load", "errno": "EPERM", "nr_segments": 4 }),
            )?;
            check(
                &vm,
                tried(&failure) == [(json!("kexec_load"), json!("aarch64"))],
                &format!("expected kexec_load alone: {failure}"),
            )?;
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

/// SHA-256 of eight zero bytes: a `kaslr-seed` the kernel ignores.
const ZERO_SEED_SHA256: &str = "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc";

/// SECURITY.md row 17, freshness: every hand-off writes new seeds. The
/// running kernel zeroes `kaslr-seed` and removes `rng-seed` from the DTB it
/// keeps (so the second kernel's /sys/firmware/fdt cannot show them); what
/// shows is (a) the seeds in the DTB as given to kexec_load, by digest, from
/// the test build's hand-off event, and (b) their effect: on cortex-a57,
/// which has no RNDR, the arm64 KASLR offset is a function of `kaslr-seed`
/// alone, so the second kernel's `_text` moves only if the seed changed.
/// Two hand-offs must differ in both, and each second kernel must sit
/// elsewhere than the first kernel it came from.
#[test]
fn kexec_aarch64_every_hand_off_carries_fresh_seeds() -> Result<()> {
    let mut runs = Vec::new();
    for run in 0..2 {
        let (vm, _) = hand_off(
            Arch::Aarch64,
            &format!("kexec-seeds{run}"),
            NextKernel::Debian,
        )?;
        let first = stage_event(&vm, "fetch")["kernel_text"].clone();
        let seeds = stage_event(&vm, "handoff")["kexec"]["seeds_sha256"].clone();
        let second = vm
            .events()
            .iter()
            .find(|e| e["event"] == "report")
            .map(|e| e["kernel_text"].clone())
            .unwrap_or_default();
        check(
            &vm,
            first.is_string() && second.is_string() && seeds["rng"].is_string(),
            &format!("missing kernel_text or seeds: first {first}, second {second}, seeds {seeds}"),
        )?;
        check(
            &vm,
            seeds["kaslr"] != ZERO_SEED_SHA256,
            "the hand-off's kaslr-seed is zero",
        )?;
        check(
            &vm,
            first != second,
            &format!("the second kernel sits where the first did: {first}"),
        )?;
        runs.push((seeds, second));
    }
    let (a, b) = (&runs[0], &runs[1]);
    anyhow::ensure!(
        a.0["kaslr"] != b.0["kaslr"] && a.0["rng"] != b.0["rng"],
        "two hand-offs carried the same seeds: {} and {}",
        a.0,
        b.0
    );
    anyhow::ensure!(
        a.1 != b.1,
        "two second kernels got the same KASLR offset: {}",
        a.1
    );
    Ok(())
}
