//! The profiles on their own kernels (`cargo xtask kernel`, built from
//! Debian's linux-source-6.1): the 16K-page M-series kernel packed by
//! `mkimage esp --profile m-series` into a UKI that AAVMF boots, and reached
//! by kexec from Debian's 4K-page arm64 kernel; the xsc kernel (kexec_load
//! only) booting the init directly. A 16K-page kernel needs a CPU with the
//! 16K granule: neoverse-n1 (cortex-a57, the default, hangs silently).

use anyhow::Result;
use phase_scenarios::{BOOT, SHORT, check, contains, wait_power, wait_stage};
use xtask::Arch;
use xtask::artifacts::{self, MARKER_KEY, NextKernel, Variant};
use xtask::images;
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

/// A CPU with 16K pages that TCG runs about as fast as cortex-a57.
const CPU_16K: [&str; 2] = ["-cpu", "neoverse-n1"];

fn cpu_16k() -> Vec<String> {
    CPU_16K.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn m_series_uki_boots_under_aavmf_with_16k_pages() -> Result<()> {
    let kernel = artifacts::profile_kernel("m-series")?;
    let (esp, said) = images::profile_esp("m-series")?;
    // mkimage read the kernel's own config and found it fit for M-series.
    anyhow::ensure!(
        said.contains("kernel \"linux\" against profile m-series: ok")
            && said.contains("IKCONFIG of an uncompressed kernel image"),
        "mkimage did not pass the kernel from its IKCONFIG:\n{said}"
    );
    let spec = VmSpec {
        name: "m-series-uki-aavmf".into(),
        arch: Arch::Aarch64,
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
        extra_args: cpu_16k(),
    };
    let mut vm = Vm::start(&spec)?;
    let ready = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        ready["page_size"] == 16384 && ready["kernel"] == kernel.release.as_str(),
        &format!(
            "expected the {} kernel with 16K pages: {ready}",
            kernel.release
        ),
    )?;
    let report = vm.wait_event("report", SHORT)?;
    // The UKI's own command line: the profile's console plus the harness's.
    contains(&report["cmdline"], "console=tty0")?;
    contains(&report["cmdline"], images::APPEND)?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

#[test]
fn m_series_kernel_is_reached_by_kexec_from_debian_arm64() -> Result<()> {
    let bundle = artifacts::kexec_bundle(Arch::Aarch64, NextKernel::MSeries)?;
    let m_series = artifacts::profile_kernel("m-series")?;
    let mut spec = VmSpec::direct(
        "kexec-m-series-aarch64",
        Arch::Aarch64,
        &bundle.first.kernel.image,
        &bundle.first.initrd,
        "phase.test.kexec=/kexec phase.onfail=poweroff",
    );
    spec.extra_args = cpu_16k();
    let mut vm = Vm::start(&spec)?;
    let first = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        first["page_size"] == 4096 && first["kernel"] == bundle.first.kernel.release.as_str(),
        &format!("the first kernel is not Debian's 4K-page one: {first}"),
    )?;
    let handoff = wait_stage(&mut vm, "handoff", BOOT)?;
    check(
        &vm,
        handoff["kexec"]["syscall"] == "kexec_load",
        "Debian's arm64 kernel did not hand off with kexec_load",
    )?;
    vm.wait_event("kexec", SHORT)?;
    let second = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        second["page_size"] == 16384 && second["kernel"] == m_series.release.as_str(),
        &format!("the second kernel is not the 16K-page M-series one: {second}"),
    )?;
    let report = vm.wait_event("report", SHORT)?;
    contains(
        &report["cmdline"],
        &format!("{MARKER_KEY}={}", bundle.marker),
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

#[test]
fn xsc_kernel_boots_the_init() -> Result<()> {
    let bundle = artifacts::profile_bundle("xsc", Variant::Release)?;
    let spec = VmSpec::direct(
        "xsc-direct-x86_64",
        Arch::X86_64,
        &bundle.kernel.image,
        &bundle.initrd,
        "phase.report",
    );
    let mut vm = Vm::start(&spec)?;
    let ready = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        ready["kernel"] == bundle.kernel.release.as_str() && ready["page_size"] == 4096,
        &format!("not the xsc kernel: {ready}"),
    )?;
    vm.wait_event("report", SHORT)?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}
