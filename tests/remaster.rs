//! A distribution's ISO remastered by `mkimage iso --into`, booted: Debian's
//! installer ISO (assembled from `debian-installer-12-netboot-amd64` by
//! `xtask::distro`) as a CD under SeaBIOS. The Phase Boot entry reaches the
//! init's `ready` event, and the installer's own entry, still the default
//! when nobody asks otherwise, boots the installer's kernel.

use anyhow::Result;
use phase_scenarios::{BOOT, SHORT, check, contains};
use xtask::Arch;
use xtask::distro::{self, Tweaks};
use xtask::images;
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

fn cd(name: &str, iso: std::path::PathBuf) -> VmSpec {
    VmSpec::firmware(
        format!("{name}-x86_64"),
        Arch::X86_64,
        Firmware::Default,
        Drive {
            path: iso,
            media: Media::Cdrom,
            format: "raw",
            readonly: true,
        },
    )
}

/// `--phase-default`: the installer's menu now boots Phase Boot's internet
/// entry after its timeout, from /phase/ on the installer's CD.
#[test]
fn the_phase_entry_of_debians_installer_cd_reaches_ready_under_seabios() -> Result<()> {
    let distro = distro::debian_mini_iso(Tweaks::default())?;
    let dir = tempfile::tempdir()?;
    let iso = dir.path().join("mini-phase.iso");
    images::remastered_iso(&distro, true, &iso)?;
    let mut vm = Vm::start(&cd("remaster-phase-cd-seabios", iso))?;
    let ready = vm.wait_event("ready", BOOT)?;
    check(&vm, ready["arch"] == "x86_64", "ready names the wrong arch")?;
    let report = vm.wait_event("report", SHORT)?;
    contains(&report["cmdline"], "phase.mode=internet")?;
    contains(&report["cmdline"], images::APPEND)?;
    vm.expect_clean_exit(SHORT)
}

/// Without `--phase-default` the installer's default entry is the one that
/// boots. Debian's menu waits forever and its kernel is quiet on a VGA
/// console, so this CD's menu waits 1 s and its Install entry has
/// `console=ttyS0` without `quiet` (the only changes, made before the
/// remaster): then its banner and command line show on the serial port.
#[test]
fn the_installer_entry_of_a_remastered_debian_cd_still_boots_under_seabios() -> Result<()> {
    let distro = distro::debian_mini_iso(Tweaks {
        timeout: true,
        serial: true,
    })?;
    let dir = tempfile::tempdir()?;
    let iso = dir.path().join("mini-phase.iso");
    images::remastered_iso(&distro, false, &iso)?;
    let mut vm = Vm::start(&cd("remaster-installer-cd-seabios", iso))?;
    vm.wait_console("Linux version", BOOT)?;
    vm.wait_console(
        "Command line: BOOT_IMAGE=linux vga=788 initrd=initrd.gz console=ttyS0 ---",
        SHORT,
    )?;
    check(
        &vm,
        !vm.console_contains("phase.mode="),
        "a Phase Boot entry booted, not the installer's",
    )?;
    vm.kill()
}
