//! The `mkimage` command line.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mkimage::arch::Arch;
use mkimage::compress::Compression;
use mkimage::esp::BootSet;
use mkimage::fat::{self, FatOptions, FatType};
use mkimage::gpt::Guid;
use mkimage::initramfs::{self, Inputs};
use mkimage::kmod::KernelTree;
use mkimage::output::Output;
use mkimage::profile::Profile;
use mkimage::qcow2::{Raw, RawFile};
use mkimage::sources::Sources;
use mkimage::spec::Spec;
use mkimage::uki;

/// Packs the Phase Boot init into images. Every output is bit-identical for
/// the same inputs and SOURCE_DATE_EPOCH.
#[derive(Parser)]
#[command(
    name = "mkimage",
    version,
    after_help = "Run `mkimage <command> --help` for a command's options and examples; mkimage/README.md has the formats, the spec keys and where outputs go."
)]
struct Cli {
    /// Print a JSON summary instead of a human one (on standard output, or
    /// standard error when the image goes to standard output).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an initramfs (newc cpio, optionally compressed) from a spec.
    #[command(after_help = "Examples:
  mkimage cpio --spec initramfs/netboot.toml \\
      --input init=target/x86_64-unknown-linux-musl/init/init \\
      --input release-key=keys/release.pub \\
      --kernel-tree /tmp/linux-image-6.1.0-57-amd64 --out initrd.cpio.zst
  mkimage cpio --spec initramfs/base.toml --input init=./init --compress none --out - | cpio -t

Spec keys are listed in mkimage/README.md (\"Initramfs specs\").")]
    Cpio(CpioArgs),
    /// Write a unified kernel image: systemd-stub + kernel + initramfs.
    #[command(after_help = "Examples:
  mkimage uki --kernel vmlinuz --initrd initrd.cpio.zst --cmdline \"console=ttyS0\" --out phase.efi
  mkimage uki --kernel Image --initrd initrd.cpio.zst \\
      --stub /usr/lib/systemd/boot/efi/linuxaa64.efi.stub --dtb board.dtb --out phase.efi

Without --stub, systemd-stub is looked up in /usr/lib/systemd/boot/efi/
(Debian's systemd-boot-efi; for arm64 on an amd64 host,
systemd-boot-efi:arm64), then in the package cargo xtask unpacks under
target/debian/; the summary names the file used.")]
    Uki(UkiArgs),
    /// Write an EFI system partition image (FAT) that boots the kernel(s).
    #[command(after_help = "Examples:
  mkimage esp --kernel vmlinuz --initrd initrd.cpio.zst --free 4M --out esp.img
  mkimage esp --direct --kernel vmlinuz --initrd initrd.cpio.zst --size 64M --out /dev/sdb1
  mkimage esp --profile m-series --kernel Image --initrd initrd.cpio.zst --dtb-dir dtbs/ --out esp.img")]
    Esp(EspArgs),
    /// Write a hybrid USB disk image (GPT + ESP, syslinux for BIOS) for dd.
    #[command(after_help = "Examples:
  mkimage usb --kernel vmlinuz --initrd initrd.cpio.zst --out usb.img
  mkimage usb --kernel vmlinuz --initrd initrd.cpio.zst --size 4G --out /dev/sdb   # a USB stick
  mkimage usb --profile xsc --kernel base=vmlinuz-base --kernel cfi-compat=vmlinuz-cfi \\
      --initrd initrd.cpio.zst --hybrid-mbr --out usb.img")]
    Usb(UsbArgs),
    /// Write a bootable ISO9660 image (El Torito BIOS + UEFI, isohybrid).
    #[command(after_help = "Examples:
  mkimage iso --kernel vmlinuz --initrd initrd.cpio.zst --out phase.iso
  mkimage iso --kernel Image --initrd initrd.cpio.zst --append \"phase.channel=beta\" --out phase.iso
  mkimage iso --kernel vmlinuz --initrd initrd.cpio.zst --root-image root.squashfs --out live.iso
  mkimage iso --into debian-mini.iso --kernel vmlinuz --initrd initrd.cpio.zst --out mini-phase.iso

With --root-image the ISO is a live medium: the image (squashfs or erofs)
is stored as /LiveOS/squashfs.img and every entry boots
root=live:CDLABEL=PHASE_BOOT, an overlay over it.

With --into the ISO is a distribution's ISO with Phase Boot added: every
original file, volume label and El Torito boot entry is kept, /phase/ gets
the kernels and the initramfs, and the distribution's isolinux/syslinux
configuration and grub.cfg on the ISO filesystem get the Phase Boot
entries after their own (grub.cfg inside the EFI image is not edited).
The input is only read.")]
    Iso(IsoArgs),
    /// Write the USB disk image as qcow2 (for VMs), or convert a raw image.
    #[command(after_help = "Examples:
  mkimage qcow2 --kernel vmlinuz --initrd initrd.cpio.zst --size 8G --out disk.qcow2
  mkimage qcow2 --from-raw usb.img --out disk.qcow2")]
    Qcow2(Qcow2Args),
}

#[derive(clap::Args)]
struct Qcow2Args {
    /// Convert this raw disk image instead of building the USB disk.
    #[arg(long, conflicts_with_all = ["kernels", "initrd"])]
    from_raw: Option<PathBuf>,
    /// Otherwise: the USB disk image's inputs.
    #[command(flatten)]
    usb: UsbArgs,
}

#[derive(clap::Args)]
struct IsoArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    bios: BiosArgs,
    /// A root image (squashfs or erofs) to boot live from the ISO: stored as
    /// /LiveOS/squashfs.img, every entry gets root=live:CDLABEL=PHASE_BOOT.
    #[arg(long, value_name = "FILE", conflicts_with = "into")]
    root_image: Option<PathBuf>,
    /// Remaster this distribution ISO: keep all it has, add /phase/ and
    /// Phase Boot's entries to its isolinux/syslinux and grub.cfg menus.
    #[arg(long, value_name = "DISTRO.iso")]
    into: Option<PathBuf>,
    /// With --into: add the files only, leave the distribution's menus as
    /// they are (for menus mkimage does not understand).
    #[arg(long, requires = "into")]
    entry_only: bool,
    /// With --into: make the Phase Boot entry of --default-mode the
    /// menus' default, booted after --timeout (else the distribution's
    /// default and timeout stay).
    #[arg(long, requires = "into", conflicts_with = "entry_only")]
    phase_default: bool,
    /// Where to write: a file (replaced only once complete; never an
    /// input), a block device (written in place when nothing mounts it),
    /// or - for standard output.
    #[arg(long, short)]
    out: PathBuf,
}

/// Where the BIOS boot loaders come from.
#[derive(clap::Args)]
struct BiosArgs {
    /// The syslinux installer that carries ldlinux.sys (Debian: /usr/bin/syslinux).
    #[arg(long, default_value = "/usr/bin/syslinux")]
    syslinux: PathBuf,
    /// COM32 modules for the BIOS menu (menu.c32 and its libraries).
    #[arg(long, default_value = "/usr/lib/syslinux/modules/bios")]
    syslinux_modules: PathBuf,
    /// Use syslinux's built-in prompt instead of menu.c32.
    #[arg(long)]
    no_menu_module: bool,
    /// MBR boot code (default: syslinux's gptmbr.bin, or mbr.bin with --hybrid-mbr).
    #[arg(long)]
    mbr_code: Option<PathBuf>,
    /// isolinux.bin for ISO images.
    #[arg(long, default_value = "/usr/lib/ISOLINUX/isolinux.bin")]
    isolinux: PathBuf,
    /// The isohybrid MBR code for ISO images.
    #[arg(long, default_value = "/usr/lib/ISOLINUX/isohdpfx.bin")]
    isohdpfx: PathBuf,
}

impl BiosArgs {
    fn sources(&self) -> mkimage::sources::BiosSources {
        mkimage::sources::BiosSources {
            syslinux: self.syslinux.clone(),
            modules: (!self.no_menu_module).then(|| self.syslinux_modules.clone()),
            mbr_code: self.mbr_code.clone(),
            isolinux: self.isolinux.clone(),
            isohdpfx: self.isohdpfx.clone(),
        }
    }
}

#[derive(clap::Args)]
struct UsbArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    bios: BiosArgs,
    /// Disk size (e.g. 1G); default: the content plus --free, to the next MiB.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Free space to leave on the system partition when sizing automatically.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    free: u64,
    /// Force FAT12, FAT16 or FAT32 (12, 16, 32).
    #[arg(long, value_parser = parse_fat)]
    fat: Option<FatType>,
    /// A hybrid MBR (the ESP also as an active MBR partition) for BIOSes
    /// that only boot an active partition.
    #[arg(long)]
    hybrid_mbr: bool,
    /// Where to write: a file (replaced only once complete; never an
    /// input), a block device (written in place when nothing mounts it),
    /// or - for standard output.
    #[arg(long, short)]
    out: PathBuf,
}

/// What every bootable image is made of.
#[derive(clap::Args)]
struct BootArgs {
    /// qemu (test VMs), m-series (arm64 Apple silicon via m1n1/U-Boot) or
    /// xsc (x86_64, base and cfi-compat variants).
    #[arg(long, default_value = "qemu")]
    profile: Profile,
    /// A kernel (bzImage or arm64 Image with EFI stub); NAME=PATH names a
    /// variant (xsc needs base=… and cfi-compat=…).
    #[arg(long = "kernel", value_name = "[NAME=]PATH")]
    kernels: Vec<String>,
    /// The initramfs (e.g. from `mkimage cpio`).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// systemd-stub (default: Debian's linux{x64,aa64}.efi.stub).
    #[arg(long)]
    stub: Option<PathBuf>,
    /// systemd-boot for the UEFI menu (default: Debian's systemd-boot{x64,aa64}.efi).
    #[arg(long)]
    systemd_boot: Option<PathBuf>,
    /// Replace the profile's kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Add to every entry's kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// A device tree to embed in the UKI (.dtb section).
    #[arg(long)]
    dtb: Option<PathBuf>,
    /// A directory of *.dtb files to copy to dtb/ on the ESP.
    #[arg(long)]
    dtb_dir: Option<PathBuf>,
    /// Boot the UKI directly (it becomes EFI/BOOT/BOOT*.EFI, with the default
    /// command line) instead of through the systemd-boot menu.
    #[arg(long)]
    direct: bool,
    /// Seconds the boot menus wait (default: the profile's).
    #[arg(long)]
    timeout: Option<u32>,
    /// The mode of the entry the menus boot when nobody chooses: internet,
    /// local (discover a provider on the LAN) or private.
    #[arg(long, value_name = "MODE", default_value = "internet")]
    default_mode: String,
    #[command(flatten)]
    key: KeyArgs,
    /// Secure Boot on stock PCs: Debian's Microsoft-signed shim as the boot
    /// file, our signed loader as the grub*.efi it starts, MokManager and
    /// our certificate beside them (needs --sign).
    #[arg(long, requires = "sign")]
    shim: bool,
    /// Where shim{x64,aa64}.efi.signed and mm{x64,aa64}.efi.signed are.
    #[arg(long, value_name = "DIR", default_value = mkimage::secureboot::DEBIAN_SHIM_DIR)]
    shim_dir: PathBuf,
    /// The kernel's config to check against the profile, for a kernel built
    /// without IKCONFIG; NAME=FILE per variant. Default: the image's own.
    #[arg(long = "kernel-config", value_name = "[NAME=]FILE")]
    kernel_configs: Vec<String>,
    /// Build even when a kernel fails the profile's fatal checks.
    #[arg(long)]
    force: bool,
}

/// Secure Boot signing.
#[derive(clap::Args)]
struct KeyArgs {
    /// Sign the UKIs and systemd-boot (Authenticode) with this RSA key
    /// (PEM, PKCS#8 or PKCS#1; from `phase keygen --secure-boot`).
    #[arg(long, value_name = "KEY", requires = "cert")]
    sign: Option<PathBuf>,
    /// The signing key's X.509 certificate (PEM or DER).
    #[arg(long, value_name = "CERT", requires = "sign")]
    cert: Option<PathBuf>,
}

impl KeyArgs {
    /// The key and certificate, as inputs an output must not be.
    fn inputs(&self) -> Vec<(String, PathBuf)> {
        let mut inputs = Vec::new();
        if let Some(key) = &self.sign {
            inputs.push(("signing key".to_owned(), key.clone()));
        }
        if let Some(cert) = &self.cert {
            inputs.push(("signing certificate".to_owned(), cert.clone()));
        }
        inputs
    }

    fn signer(&self) -> Result<Option<mkimage::authenticode::Signer>> {
        match (&self.sign, &self.cert) {
            (Some(key), Some(cert)) => Ok(Some(mkimage::authenticode::Signer::load(key, cert)?)),
            _ => Ok(None),
        }
    }
}

impl BootArgs {
    fn sources(&self) -> Result<Sources> {
        let mut kernels = Vec::new();
        for k in &self.kernels {
            let (name, path) = match k.split_once('=') {
                Some((n, p)) if !n.is_empty() && !n.contains('/') => (n.to_owned(), p),
                _ => ("linux".to_owned(), k.as_str()),
            };
            kernels.push((name, PathBuf::from(path)));
        }
        Ok(Sources {
            kernels,
            initrd: self
                .initrd
                .clone()
                .context("no initramfs given (pass --initrd PATH, e.g. from `mkimage cpio`)")?,
            stub: self.stub.clone(),
            systemd_boot: self.systemd_boot.clone(),
            cmdline: self.cmdline.clone(),
            append: self.append.clone(),
            dtb: self.dtb.clone(),
            dtb_dir: self.dtb_dir.clone(),
            direct: self.direct,
            timeout: self.timeout,
            default_mode: Some(self.default_mode.clone()),
        })
    }

    fn load(&self, build_time: u64) -> Result<BootSet> {
        let mut boot = self
            .sources()?
            .load(self.profile, &build_time.to_string())?;
        self.check_kernels(&boot)?;
        if let Some(signer) = self.key.signer()? {
            let shim = self
                .shim
                .then(|| mkimage::secureboot::Shim::load(&self.shim_dir, boot.arch))
                .transpose()?;
            boot.secure_boot = Some(mkimage::secureboot::SecureBoot { signer, shim });
            boot.inputs.extend(self.key.inputs());
        }
        Ok(boot)
    }

    /// Each kernel against the profile (kconfigs/), before anything is
    /// built: fatal findings refuse the image unless --force.
    fn check_kernels(&self, boot: &BootSet) -> Result<()> {
        let mut configs = BTreeMap::new();
        for k in &self.kernel_configs {
            let (name, path) = match k.split_once('=') {
                Some((n, p)) if !n.is_empty() && !n.contains('/') => (n.to_owned(), p),
                _ => (boot.variants[0].name.clone(), k.as_str()),
            };
            let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            configs.insert(name, bytes);
        }
        if let Some(name) = configs
            .keys()
            .find(|n| !boot.variants.iter().any(|v| &v.name == *n))
        {
            bail!("--kernel-config {name}=…: there is no kernel variant {name:?}");
        }
        let mut checks = Vec::new();
        for v in &boot.variants {
            let config = configs.get(&v.name).map(Vec::as_slice);
            checks.push(mkimage::kconfig::check_kernel(
                self.profile,
                &v.name,
                &v.kernel,
                config,
            )?);
        }
        for line in mkimage::kconfig::verdict(self.profile, &checks, self.force)? {
            eprintln!("mkimage: {line}");
        }
        Ok(())
    }
}

#[derive(clap::Args)]
struct UkiArgs {
    /// systemd-stub (default: Debian's linux{x64,aa64}.efi.stub for the kernel's arch).
    #[arg(long)]
    stub: Option<PathBuf>,
    /// The kernel: bzImage or arm64 Image, with EFI stub.
    #[arg(long)]
    kernel: PathBuf,
    /// The initramfs (e.g. from `mkimage cpio`).
    #[arg(long)]
    initrd: PathBuf,
    /// The embedded command line; without it the boot loader's options apply.
    #[arg(long)]
    cmdline: Option<String>,
    /// A device tree to embed (.dtb).
    #[arg(long)]
    dtb: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    /// Where to write: a file (replaced only once complete; never an
    /// input), a block device (written in place when nothing mounts it),
    /// or - for standard output.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct EspArgs {
    #[command(flatten)]
    boot: BootArgs,
    /// Image size (e.g. 64M); default: sized to the content plus --free.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Free space to leave when sizing automatically (e.g. 4M for DTBs added later).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    free: u64,
    /// Force FAT12, FAT16 or FAT32 (12, 16, 32).
    #[arg(long, value_parser = parse_fat)]
    fat: Option<FatType>,
    /// Where to write: a file (replaced only once complete; never an
    /// input), a block device (written in place when nothing mounts it),
    /// or - for standard output.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct CpioArgs {
    /// The initramfs spec (initramfs/*.toml).
    #[arg(long)]
    spec: PathBuf,
    /// A named input for `source = "@NAME"` entries, e.g. --input init=target/…/init.
    #[arg(long = "input", value_name = "NAME=PATH", value_parser = parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// Kernel modules come from here: an unpacked kernel package, its
    /// lib/modules, or lib/modules/<release>.
    #[arg(long)]
    kernel_tree: Option<PathBuf>,
    /// Which release under lib/modules, when the tree holds several.
    #[arg(long)]
    kernel_release: Option<String>,
    /// The machine the image is for (x86_64 or aarch64); every ELF file in
    /// it must match. Default: the kernel modules' machine, else /init's.
    #[arg(long)]
    arch: Option<Arch>,
    /// none, gzip, zstd or xz.
    #[arg(long, default_value = "zstd")]
    compress: Compression,
    /// Where to write: a file (replaced only once complete; never an
    /// input), a block device (written in place when nothing mounts it),
    /// or - for standard output.
    #[arg(long, short)]
    out: PathBuf,
}

/// Sizes like 4096, 64K, 300M, 2G (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size like 4096, 64K, 300M or 2G"))
}

fn parse_fat(s: &str) -> Result<FatType, String> {
    match s {
        "12" => Ok(FatType::Fat12),
        "16" => Ok(FatType::Fat16),
        "32" => Ok(FatType::Fat32),
        _ => Err(format!("{s:?}: expected 12, 16 or 32")),
    }
}

fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
    if name.is_empty() || path.is_empty() {
        return Err("expected NAME=PATH".into());
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkimage: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Cpio(args) => cpio(args, cli.json),
        Command::Uki(args) => uki_cmd(args, cli.json),
        Command::Esp(args) => esp(args, cli.json),
        Command::Usb(args) => usb(args, cli.json),
        Command::Iso(args) => iso(args, cli.json),
        Command::Qcow2(args) => qcow2(args, cli.json),
    }
}

fn qcow2(args: Qcow2Args, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.usb.out, json)?;
    let (plan, virtual_bytes) = match &args.from_raw {
        Some(path) => {
            out.refuse(&[("raw image".to_owned(), path.clone())])?;
            let raw = RawFile::open(path).with_context(|| format!("reading {}", path.display()))?;
            let plan = mkimage::qcow2::plan(&raw)
                .with_context(|| format!("converting {}", path.display()))?;
            out.write(plan.file_len(), |s| plan.write_to(&raw, s))?;
            (plan, raw.size())
        }
        None => {
            let (boot, bios, layout) = usb_layout(&args.usb, build_time)?;
            out.refuse(&inputs_of(&boot, bios.as_ref().map(|b| &b.inputs)))?;
            let pieces = layout.pieces()?;
            let plan = mkimage::qcow2::plan(&pieces)?;
            out.write(plan.file_len(), |s| plan.write_to(&pieces, s))?;
            (plan, layout.len)
        }
    };
    out.report(serde_json::json!({
        "format": "qcow2",
        "out": args.usb.out,
        "bytes": plan.file_len(),
        "virtual_bytes": virtual_bytes,
        "build_time": build_time,
    }));
    Ok(())
}

/// Every input of a boot image, as (what, path).
fn inputs_of(boot: &BootSet, bios: Option<&Vec<(String, PathBuf)>>) -> Vec<(String, PathBuf)> {
    let mut v = boot.inputs.clone();
    v.extend(bios.into_iter().flatten().cloned());
    v
}

fn iso(mut args: IsoArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.out, json)?;
    if let Some(into) = args.into.clone() {
        return remaster(&args, &into, &out, build_time);
    }
    let root_image = match &args.root_image {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the root image {}", path.display()))?;
            mkimage::inspect::root_image(&bytes, &path.display().to_string())?;
            let live = format!("root=live:CDLABEL={}", mkimage::cdrom::VOLUME_ID);
            args.boot.append = format!("{} {live}", args.boot.append).trim().to_owned();
            Some(bytes)
        }
        None => None,
    };
    let boot = args.boot.load(build_time)?;
    let bios = match boot.arch {
        Arch::X86_64 => Some(args.bios.sources().iso()?),
        Arch::Aarch64 => None,
    };
    let mut inputs = inputs_of(&boot, bios.as_ref().map(|b| &b.inputs));
    inputs.extend(
        args.root_image
            .iter()
            .map(|p| ("root image".to_owned(), p.clone())),
    );
    out.refuse(&inputs)?;
    let options = mkimage::cdrom::CdromOptions {
        seed: seed("iso", build_time, &boot),
        time: build_time,
        root_image,
    };
    let image = mkimage::cdrom::build(&boot, bios.as_ref(), &options)?;
    let pieces = image.pieces()?;
    out.write(pieces.len, |s| pieces.write_to(s))?;
    out.report(serde_json::json!({
        "format": "iso",
        "stub": boot.stub_path,
        "systemd_boot": boot.systemd_boot_path,
        "out": args.out,
        "bytes": image.len,
        "arch": boot.arch.to_string(),
        "profile": args.boot.profile.to_string(),
        "bios": bios.is_some(),
        "entries": boot.menu.entries.len(),
        "live": args.root_image.is_some(),
        "build_time": build_time,
    }));
    Ok(())
}

/// `mkimage iso --into`: the distribution's ISO with Phase Boot added.
fn remaster(args: &IsoArgs, into: &Path, out: &Out, build_time: u64) -> Result<()> {
    let what = into.display().to_string();
    let src = std::fs::File::open(into).with_context(|| format!("opening {what}"))?;
    let volume = mkimage::isoread::read(&src, &what)?;
    let boot = args.boot.load(build_time)?;
    let mut inputs = boot.inputs.clone();
    inputs.push(("distribution ISO".to_owned(), into.to_owned()));
    out.refuse(&inputs)?;
    let embed = mkimage::remaster::Embed {
        kernels: boot
            .variants
            .iter()
            .map(|v| (v.name.clone(), &v.kernel[..]))
            .collect(),
        initrd: &boot.initrd,
        menu: &boot.menu,
        entry_only: args.entry_only,
        phase_default: args.phase_default,
        time: build_time,
    };
    let (image, edited) = mkimage::remaster::embed(&volume, &src, &embed, &what)?;
    out.write(image.len, |s| image.write_to(&src, s))?;
    out.report(serde_json::json!({
        "format": "iso",
        "into": into,
        "out": args.out,
        "bytes": image.len,
        "volume_id": volume.volume_id,
        "boot_entries": volume.boot.len(),
        "menus_edited": edited,
        "entries": if args.entry_only { 0 } else { boot.menu.entries.len() },
        "build_time": build_time,
    }));
    Ok(())
}

fn usb_layout(
    args: &UsbArgs,
    build_time: u64,
) -> Result<(BootSet, Option<mkimage::usb::Bios>, mkimage::usb::UsbLayout)> {
    let boot = args.boot.load(build_time)?;
    let bios = match boot.arch {
        Arch::X86_64 => Some(args.bios.sources().usb(args.hybrid_mbr)?),
        Arch::Aarch64 => None,
    };
    let layout = mkimage::usb::layout(
        &boot,
        bios.as_ref(),
        &mkimage::usb::UsbOptions {
            size: args.size,
            free: args.free,
            fat_type: args.fat,
            hybrid: args.hybrid_mbr,
            seed: seed("usb", build_time, &boot),
            time: build_time,
        },
    )?;
    Ok((boot, bios, layout))
}

fn usb(args: UsbArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.out, json)?;
    let (boot, bios, layout) = usb_layout(&args, build_time)?;
    out.refuse(&inputs_of(&boot, bios.as_ref().map(|b| &b.inputs)))?;
    let pieces = layout.pieces()?;
    out.write(pieces.len, |s| pieces.write_to(s))?;
    out.report(serde_json::json!({
        "format": "usb",
        "stub": boot.stub_path,
        "systemd_boot": boot.systemd_boot_path,
        "out": args.out,
        "bytes": layout.len,
        "arch": boot.arch.to_string(),
        "profile": args.boot.profile.to_string(),
        "fat": layout.fat_type.bits(),
        "esp_offset": layout.esp_offset,
        "esp_bytes": layout.esp_len,
        "mbr": if args.hybrid_mbr { "hybrid" } else { "protective" },
        "entries": boot.menu.entries.len(),
        "build_time": build_time,
    }));
    Ok(())
}

/// Outputs past this size get a progress bar (on a terminal).
const PROGRESS_THRESHOLD: u64 = 32 << 20;

/// Where the image goes, and how the summary is printed.
struct Out {
    output: Output,
    json: bool,
}

impl Out {
    fn new(path: &Path, json: bool) -> Result<Out> {
        Ok(Out {
            output: Output::new(path)?,
            json,
        })
    }

    /// Refuses an output that is one of the inputs.
    fn refuse(&self, inputs: &[(String, PathBuf)]) -> Result<()> {
        Ok(self.output.refuse_inputs(inputs)?)
    }

    /// Writes `len` bytes that `fill` produces, through a progress bar
    /// when the output is large and stderr a terminal.
    fn write(
        &self,
        len: u64,
        fill: impl FnOnce(&mut dyn mkimage::pieces::Sink) -> std::io::Result<()>,
    ) -> Result<()> {
        if let Some(device) = self.output.device() {
            eprintln!(
                "mkimage: writing {len} bytes over {}",
                device.describe(&self.output.path)
            );
        }
        let bar = if !self.json && len >= PROGRESS_THRESHOLD {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template"),
            );
            bar.set_message(format!("writing {}", self.output.path.display()));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        self.output.write(len, &|n| bar.inc(n), fill)?;
        bar.finish_and_clear();
        Ok(())
    }

    /// Prints a line: on stdout, or on stderr when the image went there.
    fn print(&self, text: &str) {
        if self.output.is_stdout() {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// Prints the summary: on stdout, or on stderr when the image went there.
    fn report(&self, summary: serde_json::Value) {
        let text = if self.json {
            summary.to_string()
        } else {
            let fields: Vec<String> = summary
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "out")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}: {}",
                summary["out"].as_str().unwrap_or("?"),
                fields.join(" ")
            )
        };
        self.print(&text);
    }
}

/// A seed for volume IDs and GUIDs: the same inputs give the same disk.
fn seed(kind: &str, build_time: u64, boot: &BootSet) -> Vec<u8> {
    let mut s = format!("phase-boot {kind} {build_time} {}", boot.arch).into_bytes();
    for v in &boot.variants {
        s.extend_from_slice(v.name.as_bytes());
        s.extend_from_slice(&(v.kernel.len() as u64).to_le_bytes());
    }
    s.extend_from_slice(&(boot.initrd.len() as u64).to_le_bytes());
    s
}

fn volume_id(seed: &[u8]) -> u32 {
    let g = Guid::derive(seed).0;
    u32::from_le_bytes([g[0], g[1], g[2], g[3]])
}

fn uki_cmd(args: UkiArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.out, json)?;
    let read = |what: &str, p: &Path| {
        std::fs::read(p).with_context(|| format!("reading the {what} {}", p.display()))
    };
    if !args.kernel.exists() {
        bail!("the kernel {} does not exist", args.kernel.display());
    }
    let kernel = read("kernel", &args.kernel)?;
    let arch = mkimage::inspect::kernel(&kernel, &args.kernel.display().to_string())?.arch;
    let initrd = read("initramfs", &args.initrd)?;
    let initrd_what = args.initrd.display().to_string();
    let info = mkimage::inspect::initramfs(&initrd, &initrd_what)?;
    mkimage::inspect::check_initramfs_for(
        &info,
        &initrd_what,
        arch,
        &format!("the kernel {} is {arch}", args.kernel.display()),
    )?;
    let dtb = args
        .dtb
        .as_deref()
        .map(|p| {
            let bytes = read("device tree", p)?;
            mkimage::inspect::dtb(&bytes, &p.display().to_string())?;
            Ok::<_, anyhow::Error>(bytes)
        })
        .transpose()?;
    let stub_path = mkimage::sources::resolve_stub(args.stub.as_deref(), arch)?;
    let stub = std::fs::read(&stub_path).with_context(|| {
        format!(
            "the systemd-stub {} cannot be read (pass --stub PATH)",
            stub_path.display()
        )
    })?;
    let osrel = uki::os_release(env!("CARGO_PKG_VERSION"), arch).replace(
        "VERSION_ID=",
        &format!("BUILD_ID={build_time}\nVERSION_ID="),
    );
    let built = uki::build(&uki::Parts {
        stub: &stub,
        kernel: &kernel,
        initrd: &initrd,
        cmdline: args.cmdline.as_deref(),
        osrel: &osrel,
        uname: None,
        dtb: dtb.as_deref(),
    })
    .with_context(|| format!("building a UKI from {}", stub_path.display()))?;
    let signer = args.key.signer()?;
    let bytes = match &signer {
        Some(signer) => signer.sign(&built.bytes, &args.out.display().to_string())?,
        None => built.bytes.clone(),
    };
    let mut inputs = vec![
        ("kernel".to_owned(), args.kernel.clone()),
        ("initramfs".to_owned(), args.initrd.clone()),
        ("systemd-stub".to_owned(), stub_path.clone()),
    ];
    inputs.extend(
        args.dtb
            .iter()
            .map(|p| ("device tree".to_owned(), p.clone())),
    );
    inputs.extend(args.key.inputs());
    out.refuse(&inputs)?;
    out.write(bytes.len() as u64, |s| s.data(&bytes))?;
    out.report(serde_json::json!({
        "format": "uki",
        "out": args.out,
        "bytes": bytes.len(),
        "arch": arch.to_string(),
        "sections": built.sections.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "stub": stub_path,
        "signed": signer.is_some(),
        "build_time": build_time,
    }));
    Ok(())
}

fn esp(args: EspArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.out, json)?;
    let boot = args.boot.load(build_time)?;
    out.refuse(&boot.inputs)?;
    let mut files = fat::Files::new();
    boot.add_uefi(&mut files)?;
    let image = fat::layout(
        &files,
        &FatOptions {
            label: Some("PHASE-ESP".into()),
            volume_id: volume_id(&seed("esp", build_time, &boot)),
            time: build_time,
            size: args.size,
            free_bytes: args.free,
            fat_type: args.fat,
            ..FatOptions::default()
        },
    )
    .context("laying out the ESP")?;
    let pieces = image.pieces(&files)?;
    out.write(pieces.len, |s| pieces.write_to(s))?;
    out.report(serde_json::json!({
        "format": "esp",
        "stub": boot.stub_path,
        "systemd_boot": boot.systemd_boot_path,
        "out": args.out,
        "bytes": image.len,
        "arch": boot.arch.to_string(),
        "profile": args.boot.profile.to_string(),
        "fat": image.fat_type.bits(),
        "files": image.files.len(),
        "entries": if boot.direct { 1 } else { boot.menu.entries.len() },
        "build_time": build_time,
    }));
    Ok(())
}

fn cpio(args: CpioArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let out = Out::new(&args.out, json)?;
    let spec = Spec::load(&args.spec)?;
    let mut named = BTreeMap::new();
    for (name, path) in args.inputs {
        if named.insert(name.clone(), path).is_some() {
            bail!("input @{name} given twice");
        }
    }
    let kernel_tree = args
        .kernel_tree
        .as_deref()
        .map(|t| KernelTree::open(t, args.kernel_release.as_deref()))
        .transpose()?;
    let inputs = Inputs { named, kernel_tree };
    let built = initramfs::build_for(&spec, &inputs, build_time, args.arch)?;
    let mut read: Vec<(String, PathBuf)> = spec
        .sources
        .iter()
        .map(|p| ("spec".to_owned(), p.clone()))
        .collect();
    read.extend(built.inputs.iter().cloned());
    read.extend(
        inputs
            .named
            .iter()
            .map(|(n, p)| (format!("input @{n}"), p.clone())),
    );
    if let Some(tree) = &inputs.kernel_tree {
        read.extend(
            tree.files()
                .into_iter()
                .map(|p| ("kernel tree file".to_owned(), p)),
        );
    }
    out.refuse(&read)?;
    let raw = built.archive.to_bytes(build_time)?;
    let bytes = args
        .compress
        .compress(&raw)
        .with_context(|| format!("compressing with {}", args.compress))?;
    out.write(bytes.len() as u64, |s| s.data(&bytes))?;
    let modules = built.index.as_ref().map_or(0, |i| i.modules.len());
    if json {
        let summary = serde_json::json!({
            "format": "cpio",
            "spec": spec.name,
            "out": args.out,
            "bytes": bytes.len(),
            "uncompressed_bytes": raw.len(),
            "compression": args.compress.to_string(),
            "entries": built.archive.len(),
            "modules": modules,
            "kernel_release": built.info.kernel_release,
            "build_time": build_time,
        });
        out.print(&summary.to_string());
    } else {
        out.print(&format!(
            "{}: {} bytes ({} uncompressed, {}), {} entries, {} modules",
            args.out.display(),
            bytes.len(),
            raw.len(),
            args.compress,
            built.archive.len(),
            modules
        ));
    }
    Ok(())
}
