//! Bootable images for the firmware scenarios, made with mkimage's library
//! from the netboot bundle: an ESP whose boot file is the UKI, the hybrid
//! USB disk (and it as qcow2), and the hybrid ISO. Every entry's command line
//! ends in `phase.report panic=-1`, so each boot reports and powers off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use mkimage::arch::Arch as ImageArch;
use mkimage::esp::BootSet;
use mkimage::fat::{self, FatOptions};
use mkimage::profile::Profile;
use mkimage::sources::{self, BiosSources, Sources};

use crate::artifacts::{self, Variant};
use crate::{Arch, debian, paths};

/// What the command line of every image entry ends with.
pub const APPEND: &str = "phase.report panic=-1";

/// The images of one architecture.
#[derive(Debug, Clone)]
pub struct BootImages {
    /// A FAT ESP with the UKI as `EFI/BOOT/BOOT*.EFI` (direct, no menu).
    pub esp: PathBuf,
    /// GPT + ESP (systemd-boot menu) + syslinux on x86_64.
    pub usb: PathBuf,
    /// The USB disk as qcow2.
    pub qcow2: PathBuf,
    /// ISO9660 with El Torito and the isohybrid MBR.
    pub iso: PathBuf,
}

fn image_arch(arch: Arch) -> ImageArch {
    match arch {
        Arch::X86_64 => ImageArch::X86_64,
        Arch::Aarch64 => ImageArch::Aarch64,
    }
}

/// systemd-stub and systemd-boot for `arch`: the host's for x86_64, the
/// `systemd-boot-efi:arm64` package unpacked under target/debian for aarch64.
pub fn systemd_boot_efi(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let a = image_arch(arch);
    match arch {
        Arch::X86_64 => Ok((sources::default_stub(a), sources::default_systemd_boot(a))),
        Arch::Aarch64 => {
            let root = debian::unpack("systemd-boot-efi", arch)?;
            let strip = |p: PathBuf| {
                root.join(
                    p.strip_prefix("/")
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|_| p.clone()),
                )
            };
            Ok((
                strip(sources::default_stub(a)),
                strip(sources::default_systemd_boot(a)),
            ))
        }
    }
}

/// The boot set for `arch` from the netboot bundle.
pub fn boot_set(arch: Arch, direct: bool) -> Result<BootSet> {
    let bundle = artifacts::bundle(arch, "netboot", Variant::Release)?;
    let (stub, systemd_boot) = systemd_boot_efi(arch)?;
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    Ok(Sources {
        kernels: vec![("linux".into(), bundle.kernel.image.clone())],
        initrd: bundle.initrd.clone(),
        stub: Some(stub),
        systemd_boot: Some(systemd_boot),
        append: APPEND.into(),
        direct,
        ..Sources::default()
    }
    .load(Profile::Qemu, &build_time.to_string())?)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn make(arch: Arch) -> Result<BootImages> {
    let dir = paths::phase().join(arch.name()).join("images");
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let seed = |kind: &str| format!("phase-boot scenario {kind} {arch} {build_time}").into_bytes();

    let direct = boot_set(arch, true)?;
    let mut files = fat::Files::new();
    direct.add_uefi(&mut files)?;
    let esp = fat::build(
        &files,
        &FatOptions {
            label: Some("PHASE-ESP".into()),
            time: build_time,
            ..FatOptions::default()
        },
    )?;
    let out = BootImages {
        esp: dir.join("esp.img"),
        usb: dir.join("usb.img"),
        qcow2: dir.join("usb.qcow2"),
        iso: dir.join("phase.iso"),
    };
    write(&out.esp, &esp.bytes)?;

    let menu = boot_set(arch, false)?;
    let bios = BiosSources::default();
    let usb_bios = match arch {
        Arch::X86_64 => Some(bios.usb(false)?),
        Arch::Aarch64 => None,
    };
    let usb = mkimage::usb::build(
        &menu,
        usb_bios.as_ref(),
        &mkimage::usb::UsbOptions {
            seed: seed("usb"),
            time: build_time,
            ..Default::default()
        },
    )?;
    write(&out.usb, &usb.bytes)?;
    write(&out.qcow2, &mkimage::qcow2::from_raw(&usb.bytes)?)?;

    let iso_bios = match arch {
        Arch::X86_64 => Some(bios.iso()?),
        Arch::Aarch64 => None,
    };
    let iso = mkimage::cdrom::build(
        &menu,
        iso_bios.as_ref(),
        &mkimage::cdrom::CdromOptions {
            seed: seed("iso"),
            time: build_time,
        },
    )?;
    write(&out.iso, &iso.to_vec())?;
    eprintln!(
        "images: {arch}: esp {} KiB, usb {} KiB, qcow2 {} KiB, iso {} KiB in {}",
        esp.bytes.len() >> 10,
        usb.bytes.len() >> 10,
        std::fs::metadata(&out.qcow2)?.len() >> 10,
        iso.len >> 10,
        dir.display()
    );
    Ok(out)
}

/// The images for `arch`, made once per process.
pub fn boot_images(arch: Arch) -> Result<BootImages> {
    static MEMO: OnceLock<Mutex<HashMap<Arch, BootImages>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    // Held while building, so two scenarios never write the same files.
    let mut map = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(images) = map.get(&arch) {
        return Ok(images.clone());
    }
    let images = make(arch)?;
    map.insert(arch, images.clone());
    Ok(images)
}
