//! A distribution's ISO for the remaster tests (`mkimage iso --into`):
//! Debian's installer as its `mini.iso` is laid out.
//!
//! Debian publishes `mini.iso` on its mirrors' `installer-amd64` tree, not
//! in a package: `debian-installer-12-netboot-amd64` (fetched with `apt-get
//! download` like the kernels, see [`crate::debian`]) carries the same
//! installer kernel, initrd, syslinux menus, GRUB configuration and
//! signed EFI binaries, and this module puts them on an ISO the way
//! debian-installer's own build does (`build/config/x86.cfg`): xorriso with
//! Rock Ridge and Joliet, isolinux.bin (Debian's `isolinux` package) as
//! the BIOS no-emulation entry with a boot info table, a FAT image
//! `boot/grub/efi.img` holding `EFI/boot/bootx64.efi` as the UEFI entry, an
//! isohybrid MBR and GPT. The menus' paths are made absolute to the ISO
//! root where mini.iso keeps the files; nothing else is changed, unless the
//! caller asks for [`Tweaks`], which say so in the file name.
//!
//! The ISO is cached under `target/phase/distro/`, keyed by the package
//! version.
//!
//! Its UEFI side is not mini.iso's: the package's GRUB is the netboot
//! build, whose prefix is the TFTP server, so under OVMF it stops at a
//! `grub>` prompt instead of reading `boot/grub/grub.cfg` from the CD
//! (tried: a remastered CD under OVMF reached that prompt). Only the BIOS
//! side is booted by the scenarios.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Arch, cmd, debian, paths};

pub const NETBOOT_PACKAGE: &str = "debian-installer-12-netboot-amd64";

/// Changes to the installer's own menu, for boots nobody watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tweaks {
    /// The installer's menu waits forever (`timeout 0`); wait 1 s, then
    /// boot its default entry, Install.
    pub timeout: bool,
    /// The Install entry prints on the serial console, where the harness
    /// reads: `console=ttyS0` before its `---`, and not `quiet`, which
    /// would hide the banner.
    pub serial: bool,
}

/// The netboot tree's `debian-installer/amd64` directory, fetched (cached).
pub fn netboot_tree() -> Result<PathBuf> {
    let root = debian::unpack(NETBOOT_PACKAGE, Arch::X86_64)?;
    Ok(root.join("usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"))
}

/// Debian's installer ISO for x86_64, assembled from the netboot package
/// (cached by its version).
pub fn debian_mini_iso(tweaks: Tweaks) -> Result<PathBuf> {
    let tree = netboot_tree()?;
    let stamp_dir = paths::debian().join(format!("{NETBOOT_PACKAGE}_amd64"));
    let version = std::fs::read_to_string(stamp_dir.join(".unpacked")).unwrap_or_default();
    let dir = paths::phase().join("distro");
    std::fs::create_dir_all(&dir)?;
    let mut name = "debian-mini-amd64".to_owned();
    if tweaks.timeout {
        name.push_str("-timeout");
    }
    if tweaks.serial {
        name.push_str("-serial");
    }
    let iso = dir.join(format!("{name}.iso"));
    let key = dir.join(format!("{name}.from"));
    if iso.exists() && std::fs::read_to_string(&key).ok().as_deref() == Some(version.as_str()) {
        return Ok(iso);
    }
    let work = tempfile::tempdir_in(&dir)?;
    assemble(&tree, work.path(), &iso, tweaks)?;
    std::fs::write(&key, version)?;
    Ok(iso)
}

/// Lays out the mini.iso tree from the netboot tree and writes the ISO.
pub fn assemble(tree: &Path, work: &Path, iso: &Path, tweaks: Tweaks) -> Result<()> {
    let root = work.join("root");
    let grub = root.join("boot/grub");
    std::fs::create_dir_all(&grub)?;
    let isolinux = Path::new("/usr/lib/ISOLINUX/isolinux.bin");
    let isohdpfx = Path::new("/usr/lib/ISOLINUX/isohdpfx.bin");
    for p in [isolinux, isohdpfx] {
        if !p.exists() {
            bail!("{} is missing (package isolinux)", p.display());
        }
    }
    std::fs::copy(isolinux, root.join("isolinux.bin"))?;
    // The syslinux menus, modules and help screens at the root, the
    // netboot paths made root-relative as on mini.iso.
    for entry in std::fs::read_dir(tree.join("boot-screens"))? {
        let path = entry?.path();
        let name = path.file_name().context("a file name")?.to_owned();
        let to = if name == "syslinux.cfg" {
            root.join("isolinux.cfg")
        } else {
            root.join(&name)
        };
        if path.extension().is_some_and(|e| e == "cfg") {
            let mut text = std::fs::read_to_string(&path)?
                .replace("debian-installer/amd64/boot-screens/", "")
                .replace("debian-installer/amd64/", "");
            if tweaks.timeout && name == "syslinux.cfg" {
                text = text.replace("timeout 0\n", "timeout 10\n");
            }
            if tweaks.serial && name == "txt.cfg" {
                text = text.replace(" --- quiet", " console=ttyS0 ---");
            }
            std::fs::write(&to, text)?;
        } else {
            std::fs::copy(&path, &to)?;
        }
    }
    for f in ["linux", "initrd.gz"] {
        std::fs::copy(tree.join(f), root.join(f))?;
    }
    let cfg = std::fs::read_to_string(tree.join("grub/grub.cfg"))?
        .replace("/debian-installer/amd64/", "/");
    std::fs::write(grub.join("grub.cfg"), cfg)?;
    std::fs::copy(tree.join("grub/font.pf2"), grub.join("font.pf2"))?;
    cmd::run(
        Command::new("cp")
            .arg("-r")
            .arg(tree.join("grub/x86_64-efi"))
            .arg(&grub),
    )?;
    // The EFI image: shim as the removable-media boot file, GRUB beside it.
    let efi = grub.join("efi.img");
    cmd::run(
        Command::new("mkfs.vfat")
            .args(["-C", "-n", "DEBIAN-EFI", "-i", "d1b1a2e5"])
            .arg(&efi)
            .arg("8192"),
    )?;
    let img = format!("{}", efi.display());
    cmd::run(Command::new("mmd").args(["-i", &img, "::/EFI", "::/EFI/boot"]))?;
    for (from, to) in [
        ("bootnetx64.efi", "::/EFI/boot/bootx64.efi"),
        ("grubx64.efi", "::/EFI/boot/grubx64.efi"),
    ] {
        cmd::run(
            Command::new("mcopy")
                .args(["-i", &img])
                .arg(tree.join(from))
                .arg(to),
        )?;
    }
    let tmp = iso.with_extension("iso.tmp");
    cmd::run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-r", "-J", "-V", "ISOIMAGE"])
            .arg("-o")
            .arg(&tmp)
            .arg("-isohybrid-mbr")
            .arg(isohdpfx)
            .args([
                "-b",
                "isolinux.bin",
                "-c",
                "boot.cat",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "-eltorito-alt-boot",
                "-e",
                "boot/grub/efi.img",
                "-no-emul-boot",
                "-isohybrid-gpt-basdat",
            ])
            .arg(&root),
    )?;
    std::fs::rename(&tmp, iso)?;
    Ok(())
}
