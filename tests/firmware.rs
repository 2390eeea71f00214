//! The boot matrix: every image mkimage writes, on every firmware that must
//! boot it, reaches the init's ready event through the boot menu's default
//! entry (or the UKI itself), then reports and powers off.
//!
//! x86_64: the UKI on an ESP under OVMF; the USB disk under SeaBIOS and
//! OVMF (and as qcow2 under SeaBIOS); the ISO as a CD and as a raw disk,
//! each under SeaBIOS and OVMF. aarch64: the ESP/UKI, the USB disk and the
//! ISO as a raw disk under AAVMF.

use std::path::Path;

use anyhow::Result;
use phase_scenarios::{BOOT, SHORT, check, contains};
use xtask::Arch;
use xtask::images::{self, BootImages};
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

fn boot(
    arch: Arch,
    name: &str,
    firmware: Firmware,
    media: Media,
    image: impl Fn(&BootImages) -> &Path,
    format: &'static str,
) -> Result<()> {
    let images = images::boot_images(arch)?;
    let spec = VmSpec::firmware(
        format!("{name}-{arch}"),
        arch,
        firmware,
        Drive {
            path: image(&images).to_owned(),
            media,
            format,
            // The matrix boots one image in several VMs at once.
            readonly: true,
        },
    );
    let started = std::time::Instant::now();
    let mut vm = Vm::start(&spec)?;
    let ready = vm.wait_event("ready", BOOT)?;
    eprintln!(
        "[{name}-{arch}] ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check(
        &vm,
        ready["arch"] == arch.name(),
        "ready names the wrong arch",
    )?;
    let report = vm.wait_event("report", SHORT)?;
    // The default entry of every menu is phase.mode=internet, and the
    // image's own command line arrived (not one from the harness).
    contains(&report["cmdline"], "phase.mode=internet")?;
    contains(&report["cmdline"], images::APPEND)?;
    vm.expect_clean_exit(SHORT)
}

use Firmware::{Default as Bios, Uefi};
use Media::{Cdrom, Disk};

mod x86_64 {
    use super::*;
    const A: Arch = Arch::X86_64;

    #[test]
    fn esp_uki_ovmf() -> Result<()> {
        boot(A, "esp-uki-ovmf", Uefi, Disk, |i| &i.esp, "raw")
    }
    #[test]
    fn usb_seabios() -> Result<()> {
        boot(A, "usb-seabios", Bios, Disk, |i| &i.usb, "raw")
    }
    #[test]
    fn usb_ovmf() -> Result<()> {
        boot(A, "usb-ovmf", Uefi, Disk, |i| &i.usb, "raw")
    }
    #[test]
    fn usb_qcow2_seabios() -> Result<()> {
        boot(A, "usb-qcow2-seabios", Bios, Disk, |i| &i.qcow2, "qcow2")
    }
    #[test]
    fn iso_cd_seabios() -> Result<()> {
        boot(A, "iso-cd-seabios", Bios, Cdrom, |i| &i.iso, "raw")
    }
    #[test]
    fn iso_cd_ovmf() -> Result<()> {
        boot(A, "iso-cd-ovmf", Uefi, Cdrom, |i| &i.iso, "raw")
    }
    #[test]
    fn iso_disk_seabios() -> Result<()> {
        boot(A, "iso-disk-seabios", Bios, Disk, |i| &i.iso, "raw")
    }
    #[test]
    fn iso_disk_ovmf() -> Result<()> {
        boot(A, "iso-disk-ovmf", Uefi, Disk, |i| &i.iso, "raw")
    }
}

mod aarch64 {
    use super::*;
    const A: Arch = Arch::Aarch64;

    #[test]
    fn esp_uki_aavmf() -> Result<()> {
        boot(A, "esp-uki-aavmf", Uefi, Disk, |i| &i.esp, "raw")
    }
    #[test]
    fn usb_aavmf() -> Result<()> {
        boot(A, "usb-aavmf", Uefi, Disk, |i| &i.usb, "raw")
    }
    #[test]
    fn iso_disk_aavmf() -> Result<()> {
        boot(A, "iso-disk-aavmf", Uefi, Disk, |i| &i.iso, "raw")
    }
}
