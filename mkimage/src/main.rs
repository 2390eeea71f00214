//! The `mkimage` command line.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
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
use mkimage::profile::Profile;
use mkimage::sources::Sources;
use mkimage::spec::Spec;
use mkimage::uki;

/// Packs the Phase Boot init into images. Every output is bit-identical for
/// the same inputs and SOURCE_DATE_EPOCH.
#[derive(Parser)]
#[command(name = "mkimage", version)]
struct Cli {
    /// Print a JSON summary on standard output instead of a human one.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an initramfs (newc cpio, optionally compressed) from a spec.
    Cpio(CpioArgs),
    /// Write a unified kernel image: systemd-stub + kernel + initramfs.
    Uki(UkiArgs),
    /// Write an EFI system partition image (FAT) that boots the kernel(s).
    Esp(EspArgs),
    /// Write a hybrid USB disk image (GPT + ESP, syslinux for BIOS) for dd.
    Usb(UsbArgs),
    /// Write a bootable ISO9660 image (El Torito BIOS + UEFI, isohybrid).
    Iso(IsoArgs),
    /// Write the USB disk image as qcow2 (for VMs), or convert a raw image.
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
        })
    }

    fn load(&self, build_time: u64) -> Result<BootSet> {
        Ok(self
            .sources()?
            .load(self.profile, &build_time.to_string())?)
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
    #[arg(long)]
    initrd: PathBuf,
    /// The embedded command line; without it the boot loader's options apply.
    #[arg(long)]
    cmdline: Option<String>,
    /// A device tree to embed (.dtb).
    #[arg(long)]
    dtb: Option<PathBuf>,
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
    /// none, gzip, zstd or xz.
    #[arg(long, default_value = "zstd")]
    compress: Compression,
    /// Where to write the archive.
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
    let out = args.usb.out.clone();
    let raw = match &args.from_raw {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => usb_image(&args.usb, build_time)?.1.bytes,
    };
    let bytes = mkimage::qcow2::from_raw(&raw)?;
    write_output(&out, &bytes, json)?;
    report(
        json,
        serde_json::json!({
            "format": "qcow2",
            "out": out,
            "bytes": bytes.len(),
            "virtual_bytes": raw.len(),
            "build_time": build_time,
        }),
    );
    Ok(())
}

fn iso(args: IsoArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let boot = args.boot.load(build_time)?;
    let bios = match boot.arch {
        Arch::X86_64 => Some(args.bios.sources().iso()?),
        Arch::Aarch64 => None,
    };
    let image = mkimage::cdrom::build(
        &boot,
        bios.as_ref(),
        &mkimage::cdrom::CdromOptions {
            seed: seed("iso", build_time, &boot),
            time: build_time,
        },
    )?;
    write_stream(&args.out, image.len, json, |w| image.write_to(w))?;
    report(
        json,
        serde_json::json!({
            "format": "iso",
            "out": args.out,
            "bytes": image.len,
            "arch": boot.arch.to_string(),
            "profile": args.boot.profile.to_string(),
            "bios": bios.is_some(),
            "entries": boot.menu.entries.len(),
            "build_time": build_time,
        }),
    );
    Ok(())
}

fn usb_image(args: &UsbArgs, build_time: u64) -> Result<(BootSet, mkimage::usb::UsbImage)> {
    let boot = args.boot.load(build_time)?;
    let bios = match boot.arch {
        Arch::X86_64 => Some(args.bios.sources().usb(args.hybrid_mbr)?),
        Arch::Aarch64 => None,
    };
    let image = mkimage::usb::build(
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
    Ok((boot, image))
}

fn usb(args: UsbArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let (boot, image) = usb_image(&args, build_time)?;
    write_output(&args.out, &image.bytes, json)?;
    report(
        json,
        serde_json::json!({
            "format": "usb",
            "out": args.out,
            "bytes": image.bytes.len(),
            "arch": boot.arch.to_string(),
            "profile": args.boot.profile.to_string(),
            "fat": image.fat_type.bits(),
            "esp_offset": image.esp_offset,
            "esp_bytes": image.esp_len,
            "mbr": if args.hybrid_mbr { "hybrid" } else { "protective" },
            "entries": boot.menu.entries.len(),
            "build_time": build_time,
        }),
    );
    Ok(())
}

/// Inputs and outputs past this size get a progress bar (on a terminal).
const PROGRESS_THRESHOLD: u64 = 32 << 20;

/// Writes the output in chunks, with a progress bar for large images.
fn write_output(path: &Path, bytes: &[u8], json: bool) -> Result<()> {
    write_stream(path, bytes.len() as u64, json, |w| {
        for chunk in bytes.chunks(4 << 20) {
            w.write_all(chunk)?;
        }
        Ok(())
    })
}

/// Creates `path` and lets `fill` write its `len` bytes, through a progress
/// bar when the output is large and stderr a terminal.
fn write_stream(
    path: &Path,
    len: u64,
    json: bool,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    // An existing output is rewritten in place and then cut to length,
    // rather than truncated first: a rebuild then reuses the file's cached
    // pages instead of freeing and allocating them again (a third of the
    // time of an ISO rebuild), and a block device is written the same way.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let handle = file
        .try_clone()
        .with_context(|| format!("opening {}", path.display()))?;
    let bar = if !json && len >= PROGRESS_THRESHOLD {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template"),
        );
        bar.set_message(format!("writing {}", path.display()));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut w = bar.wrap_write(file);
    fill(&mut w).with_context(|| format!("writing {}", path.display()))?;
    bar.finish_and_clear();
    // Cut a longer old file to this image's length (not a device).
    if handle.metadata().is_ok_and(|m| m.is_file()) {
        handle
            .set_len(len)
            .with_context(|| format!("setting the length of {}", path.display()))?;
    }
    Ok(())
}

fn report(json: bool, summary: serde_json::Value) {
    if json {
        println!("{summary}");
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
        println!(
            "{}: {}",
            summary["out"].as_str().unwrap_or("?"),
            fields.join(" ")
        );
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
    let read = |what: &str, p: &Path| {
        std::fs::read(p).with_context(|| format!("reading the {what} {}", p.display()))
    };
    if !args.kernel.exists() {
        bail!("the kernel {} does not exist", args.kernel.display());
    }
    let kernel = read("kernel", &args.kernel)?;
    let arch = Arch::of_kernel(&kernel, &args.kernel.display().to_string())?;
    let stub_path = args
        .stub
        .clone()
        .unwrap_or_else(|| mkimage::sources::default_stub(arch));
    let stub = std::fs::read(&stub_path).with_context(|| {
        format!(
            "the systemd-boot stub {} cannot be read (install systemd-boot-efi for {arch}, or pass --stub PATH)",
            stub_path.display()
        )
    })?;
    let initrd = read("initramfs", &args.initrd)?;
    let dtb = args
        .dtb
        .as_deref()
        .map(|p| read("device tree", p))
        .transpose()?;
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
    write_output(&args.out, &built.bytes, json)?;
    report(
        json,
        serde_json::json!({
            "format": "uki",
            "out": args.out,
            "bytes": built.bytes.len(),
            "arch": arch.to_string(),
            "sections": built.sections.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "build_time": build_time,
        }),
    );
    Ok(())
}

fn esp(args: EspArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let boot = args.boot.load(build_time)?;
    let mut files = fat::Files::new();
    boot.add_uefi(&mut files)?;
    let image = fat::build(
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
    write_output(&args.out, &image.bytes, json)?;
    report(
        json,
        serde_json::json!({
            "format": "esp",
            "out": args.out,
            "bytes": image.bytes.len(),
            "arch": boot.arch.to_string(),
            "profile": args.boot.profile.to_string(),
            "fat": image.fat_type.bits(),
            "files": image.files.len(),
            "entries": if boot.direct { 1 } else { boot.menu.entries.len() },
            "build_time": build_time,
        }),
    );
    Ok(())
}

fn cpio(args: CpioArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
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
    let built = initramfs::build(&spec, &Inputs { named, kernel_tree }, build_time)?;
    let raw = built.archive.to_bytes(build_time)?;
    let bytes = args
        .compress
        .compress(&raw)
        .with_context(|| format!("compressing with {}", args.compress))?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
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
        println!("{summary}");
    } else {
        println!(
            "{}: {} bytes ({} uncompressed, {}), {} entries, {} modules",
            args.out.display(),
            bytes.len(),
            raw.len(),
            args.compress,
            built.archive.len(),
            modules
        );
    }
    Ok(())
}
