//! `cargo xtask setup`: installs what the build and the tests need, and says
//! what it installs. Idempotent: a second run finds everything present and
//! prints one line.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

use crate::cmd;

/// Debian packages, each with the reason it is needed.
pub const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots x86_64 test VMs"),
    ("qemu-system-arm", "boots aarch64 test VMs"),
    ("qemu-utils", "qemu-img, the qcow2 referee"),
    ("ovmf", "UEFI firmware for x86_64 VMs"),
    ("qemu-efi-aarch64", "UEFI firmware (AAVMF) for aarch64 VMs"),
    (
        "musl-tools",
        "C compiler for ring on x86_64-unknown-linux-musl",
    ),
    (
        "gcc-aarch64-linux-gnu",
        "C compiler for ring on aarch64-unknown-linux-musl",
    ),
    (
        "libc6-dev-arm64-cross",
        "headers for the aarch64 C compiler",
    ),
    ("cpio", "referee: reads back our cpio archives"),
    (
        "libarchive-tools",
        "referee: bsdtar reads back our archives",
    ),
    ("zstd", "decompresses images for inspection"),
    (
        "device-tree-compiler",
        "referee: dtc reads back the DTBs the init writes",
    ),
    (
        "binutils-aarch64-linux-gnu",
        "referee: objdump disassembles the arm64 purgatory",
    ),
    (
        "xz-utils",
        "compresses kernel modules for the compressed-module scenario",
    ),
    ("file", "checks that the init is static"),
    ("busybox-static", "the shell in debug images"),
    (
        "ca-certificates",
        "the CA bundle netboot images trust for HTTPS",
    ),
    (
        "util-linux",
        "unshare, for the PID 1 reaper test; blkid and partx referee the probes",
    ),
    (
        "openssl",
        "referee: openssl pkey reads the private keys phase keygen writes",
    ),
    ("iproute2", "network namespaces for host network tests"),
    (
        "dnsmasq-base",
        "the real DHCP server the network stage is tested against",
    ),
    (
        "nginx-light",
        "real nginx serves a published provider tree in tests",
    ),
    (
        "dosfstools",
        "referee: fsck.fat -n reads back our FAT images; mkfs.vfat for the probes",
    ),
    (
        "gdisk",
        "referee: sgdisk -v reads back our GPT disks; sgdisk for the probes",
    ),
    (
        "mtools",
        "referee: mcopy reads files out of our FAT images; the bench pipeline",
    ),
    (
        "xorriso",
        "referee: -report_el_torito reads back our ISOs; the bench pipeline",
    ),
    (
        "binutils",
        "referee: objdump -h reads back our x86_64 UKIs and disassembles the x86_64 purgatory; the bench pipeline",
    ),
    (
        "binutils-aarch64-linux-gnu",
        "referee: objdump for aarch64 UKIs",
    ),
    (
        "systemd-boot-efi",
        "input: systemd-stub and systemd-boot (x86_64)",
    ),
    (
        "syslinux",
        "input: the installer that carries ldlinux.sys and its boot sector",
    ),
    (
        "syslinux-common",
        "input: ldlinux.c32, menu.c32, gptmbr.bin, mbr.bin",
    ),
    ("isolinux", "input: isolinux.bin and isohdpfx.bin"),
    (
        "shim-signed",
        "input: Debian's Microsoft-signed shim and MokManager (--shim)",
    ),
    (
        "sbsigntool",
        "referee: sbverify checks our Authenticode signatures; sbsign signs alike",
    ),
    (
        "osslsigncode",
        "referee: lists our signatures and checks the PE checksum",
    ),
    ("pesign", "referee: lists our signatures and the image hash"),
    (
        "openssl",
        "referee: reads keygen's certificates; decrypts OVMF's snakeoil key",
    ),
    (
        "time",
        "referee: GNU time measures mkimage's peak memory for 64 GiB disks",
    ),
    (
        "e2fsprogs",
        "mkfs.ext2: a file system to mount on loop devices, for mkimage's mounted-device refusal",
    ),
    ("grub-common", "bench: grub-mkrescue"),
    ("grub-pc-bin", "bench: grub-mkrescue's BIOS images"),
    (
        "python3-scapy",
        "referee: scapy decodes the DHCP packets the init writes",
    ),
    (
        "python3-pefile",
        "referee: pefile computes the PE checksum of our UKIs independently",
    ),
    ("grub-efi-amd64-bin", "bench: grub-mkrescue's UEFI images"),
    (
        "e2fsprogs",
        "mkfs.ext2/3/4: images for the init's block-device probes",
    ),
    (
        "squashfs-tools",
        "mksquashfs: images for the init's block-device probes",
    ),
    (
        "erofs-utils",
        "mkfs.erofs and fsck.erofs: images and checksum referee for the probes",
    ),
    (
        "fdisk",
        "sfdisk and fdisk: MBR and 4K-sector GPT disks for the probes",
    ),
    ("genisoimage", "Joliet ISOs for the init's iso9660 probe"),
    (
        "python3-dnspython",
        "referee: dnspython reads our DNS messages and writes some for us to read",
    ),
    (
        "avahi-daemon",
        "referee: avahi must see what phase announce announces",
    ),
    (
        "avahi-utils",
        "referee: avahi-browse resolves our announcement",
    ),
    (
        "dbus-daemon",
        "the private bus avahi-daemon needs in the announce test",
    ),
];

/// What `cargo xtask kernel` needs to build the profile kernels from
/// Debian's kernel source (Documentation/process/changes.rst); installed by
/// setup too, since `cargo xtask test` builds them.
pub const KERNEL_BUILD_PACKAGES: &[(&str, &str)] = &[
    (
        "linux-source-6.1",
        "the kernel tree the M-series and xsc test kernels are built from",
    ),
    ("make", "drives the kernel build"),
    (
        "gcc",
        "compiles the x86_64 test kernel and the kernel's host tools",
    ),
    ("libc6-dev", "headers for the kernel's host tools"),
    ("flex", "the kernel's Kconfig and dtc lexers"),
    ("bison", "the kernel's Kconfig and dtc parsers"),
    ("bc", "the kernel build computes constants with it"),
    (
        "libelf-dev",
        "objtool and resolve_btfids in the kernel build",
    ),
    ("libssl-dev", "the kernel's module signing and cert tools"),
    ("kmod", "depmod for the test kernels' modules_install"),
];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// How long apt-get waits for another apt (a second `cargo xtask` on a
/// fresh machine, unattended-upgrades) to release its lock before failing.
const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=600";

/// Runs `apt-get update` once per process.
pub fn apt_update() -> Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        cmd::run(Command::new("apt-get").args(["-o", APT_LOCK_WAIT, "update", "-q"]))?;
    }
    Ok(())
}

/// Whether a package (optionally `name:arch`) is installed.
pub fn installed(package: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_ok_and(|s| s.trim() == "installed")
}

/// Installs the missing ones of `packages`, printing what and why.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = packages.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (package, why) in &missing {
        eprintln!("setup: installing {package} ({why})");
    }
    if !is_root() {
        let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
        bail!(
            "these Debian packages are missing and installing them needs root: sudo apt-get install {}",
            names.join(" ")
        );
    }
    apt_update()?;
    apt_install(missing.iter().map(|(p, _)| *p))?;
    // apt may remove a package to satisfy another: a backported qemu-utils
    // goes when Debian's own qemu-system packages come in. Check the whole
    // list again and put back what went.
    let removed: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    for package in &removed {
        eprintln!("setup: installing {package} again (apt removed it while installing the others)");
    }
    apt_install(removed.iter().copied())?;
    let still: Vec<&str> = removed.into_iter().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get did not install {}; install them by hand and run again",
            still.join(" ")
        );
    }
    Ok(())
}

fn apt_install<'a>(packages: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut apt = Command::new("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", APT_LOCK_WAIT])
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages);
    cmd::run(&mut apt)
}

/// Adds Debian's arm64 architecture so arm64 kernels and tools can be
/// downloaded (not installed) with apt-get download.
pub fn ensure_arm64_architecture() -> Result<()> {
    let foreign = cmd::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|a| a.trim() == "arm64") {
        return Ok(());
    }
    eprintln!("setup: adding the arm64 architecture to dpkg (for arm64 test kernels)");
    cmd::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    APT_UPDATED.store(false, Ordering::SeqCst);
    apt_update()
}

/// Installs the Rust musl targets. rust-toolchain.toml lists them, but with
/// RUSTUP_AUTO_INSTALL=0 rustup does not add them by itself.
pub fn ensure_rust_targets() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for target in crate::Arch::ALL.map(|a| a.musl_target()) {
        if !installed.lines().any(|l| l.trim() == target) {
            eprintln!("setup: adding Rust target {target}");
            cmd::run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    Ok(())
}

/// Everything: packages, architectures, Rust targets.
pub fn ensure_all() -> Result<()> {
    ensure_packages(PACKAGES)?;
    ensure_packages(KERNEL_BUILD_PACKAGES)?;
    ensure_arm64_architecture()?;
    ensure_rust_targets()
}
