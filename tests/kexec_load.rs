//! x86_64 hand-off by `kexec_load` with the init's own boot_params and
//! purgatory, through the test hook (`phase.test.kexec=/kexec`, see
//! `tests/kexec.rs`) with the method packed as `/kexec/method`:
//!
//! - under direct `-kernel` boot, and under OVMF from a UKI, where the
//!   second kernel must still have EFI runtime services (it lists EFI
//!   variables in its report);
//! - from the xsc kernel, which has no `kexec_file_load`: the image asks for
//!   `file`, gets `ENOSYS`, and the init says it moved on to `kexec_load`.
//!
//! The refusals (a garbage bzImage header, lockdown) are in `tests/kexec.rs`.

use anyhow::Result;
use phase_scenarios::{BOOT, SHORT, check, contains, wait_power, wait_stage};
use serde_json::{Value, json};
use xtask::Arch;
use xtask::artifacts::{self, FirstKernel, KexecBundle, KexecSetup, MARKER_KEY, NextKernel};
use xtask::images;
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

const A: Arch = Arch::X86_64;
const HOOK: &str = "phase.test.kexec=/kexec phase.onfail=poweroff";
/// What the first kernel prints as it jumps (kernel/kexec_core.c).
const STARTING: &str = "kexec_core: Starting new kernel";

fn setup(first: FirstKernel, method: &'static str) -> KexecSetup {
    KexecSetup {
        arch: A,
        first,
        next: NextKernel::Debian,
        method: Some(method),
    }
}

/// The segments a `kexec_load` hand-off names, in order.
fn segment_names(kexec: &Value) -> Vec<&str> {
    kexec["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect()
}

/// Waits for the hand-off and the second kernel's report, checks that the
/// report carries the marker of the next command line and came after the
/// jump, and returns the `handoff` stage event and the report.
fn second_kernel_reports(vm: &mut Vm, bundle: &KexecBundle) -> Result<(Value, Value)> {
    let handoff = wait_stage(vm, "handoff", BOOT)?;
    vm.wait_event("kexec", SHORT)?;
    let report = vm.wait_event("report", BOOT)?;
    contains(
        &report["cmdline"],
        &format!("{MARKER_KEY}={}", bundle.marker),
    )?;
    wait_power(vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    let jumped = vm
        .console_find(0, STARTING)
        .and_then(|(i, _)| vm.console_find(i, "Linux version "));
    check(
        vm,
        jumped.is_some(),
        "no second kernel banner after the kexec",
    )?;
    Ok((handoff, report))
}

fn checks_kexec_load(vm: &Vm, kexec: &Value, why: &str, efi: &str) -> Result<()> {
    check(
        vm,
        kexec["syscall"] == "kexec_load"
            && kexec["why"] == why
            && segment_names(kexec) == ["kernel", "initrd", "boot_params", "purgatory"]
            && kexec["boot_params"]["running_boot_params"] == true
            && kexec["boot_params"]["efi"] == efi,
        &format!("expected kexec_load ({why}) with EFI {efi}: {kexec}"),
    )
}

/// Direct boot (SeaBIOS, no EFI): `kexec_load` with the init's segments,
/// and the second kernel boots with no EFI to speak of.
#[test]
fn x86_64_kexec_load_hands_off_under_direct_boot() -> Result<()> {
    let bundle = artifacts::kexec_bundle_with(setup(FirstKernel::Debian, "load"))?;
    let spec = VmSpec::direct(
        "kexec-load-direct-x86_64",
        A,
        &bundle.first.kernel.image,
        &bundle.first.initrd,
        HOOK,
    );
    let mut vm = Vm::start(&spec)?;
    let (handoff, report) = second_kernel_reports(&mut vm, &bundle)?;
    checks_kexec_load(&vm, &handoff["kexec"], "method_load", "none")?;
    check(
        &vm,
        handoff["kexec"]["tried"].is_null() && report["efi"].is_null(),
        &format!("expected no earlier attempt and no EFI: {handoff} {report}"),
    )
}

/// Under OVMF, from a UKI: the init hands the EFI runtime on (efi_info and
/// SETUP_EFI), and the second kernel has runtime services — it lists the
/// firmware's variables. Without them it would have no /sys/firmware/efi,
/// or (had SetVirtualAddressMap been called twice) no runtime at all.
#[test]
fn x86_64_kexec_load_keeps_efi_runtime_services_under_ovmf() -> Result<()> {
    let bundle = artifacts::kexec_bundle_with(setup(FirstKernel::Debian, "load"))?;
    let dir = tempfile::Builder::new()
        .prefix("phase-kexec-ovmf-")
        .tempdir()?;
    let esp = dir.path().join("esp.img");
    images::direct_esp(
        A,
        &bundle.first.kernel.image,
        &bundle.first.initrd,
        HOOK,
        false,
        &esp,
    )?;
    let spec = VmSpec {
        name: "kexec-load-ovmf-x86_64".into(),
        arch: A,
        memory_mb: 512,
        kernel: None,
        initrd: None,
        append: String::new(),
        firmware: Firmware::Uefi,
        efi_vars: None,
        drives: vec![Drive {
            path: esp,
            media: Media::Disk,
            format: "raw",
            readonly: true,
        }],
        user_net: false,
        event_port: true,
        rtc_base: None,
        tap: None,
        extra_args: Vec::new(),
    };
    let mut vm = Vm::start(&spec)?;
    let (handoff, report) = second_kernel_reports(&mut vm, &bundle)?;
    checks_kexec_load(&vm, &handoff["kexec"], "method_load", "kept")?;
    let efi = &report["efi"];
    check(
        &vm,
        efi["runtime"] == true && efi["efivars"].as_u64().is_some_and(|n| n > 0),
        &format!("the second kernel has no EFI runtime services: {efi}"),
    )
}

/// The xsc kernel has kexec_load and no kexec_file_load: an image that asks
/// for `file` gets ENOSYS, and the init loads with kexec_load instead,
/// naming both the syscall and why. The next kernel is Debian's.
#[test]
fn x86_64_enosys_from_kexec_file_load_moves_on_to_kexec_load() -> Result<()> {
    let bundle = artifacts::kexec_bundle_with(setup(FirstKernel::Profile("xsc"), "file"))?;
    let debian = artifacts::kernel(A)?;
    let spec = VmSpec::direct(
        "kexec-enosys-xsc-x86_64",
        A,
        &bundle.first.kernel.image,
        &bundle.first.initrd,
        HOOK,
    );
    let mut vm = Vm::start(&spec)?;
    let first = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        first["kernel"] == bundle.first.kernel.release.as_str(),
        &format!("the first kernel is not the xsc one: {first}"),
    )?;
    let (handoff, _) = second_kernel_reports(&mut vm, &bundle)?;
    let kexec = &handoff["kexec"];
    // The xsc kernel has no /sys/firmware/memmap: the e820 comes from iomem.
    checks_kexec_load(&vm, kexec, "file_load_missing", "none")?;
    let tried = &kexec["tried"];
    check(
        &vm,
        tried.as_array().map(Vec::len) == Some(1)
            && tried[0]["syscall"] == "kexec_file_load"
            && tried[0]["why"] == "method_file"
            && tried[0]["errno"] == "ENOSYS"
            && kexec["boot_params"]["e820_from"] == "iomem",
        &format!("expected one kexec_file_load failing with ENOSYS first: {kexec}"),
    )?;
    let second: Vec<&Value> = vm
        .events()
        .iter()
        .filter(|e| e["event"] == "ready")
        .collect();
    check(
        &vm,
        second.len() == 2 && second[1]["kernel"] == debian.release.as_str(),
        &format!(
            "the second kernel is not Debian's {}: {}",
            debian.release,
            json!(second)
        ),
    )
}
