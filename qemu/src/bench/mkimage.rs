//! `cargo xtask bench mkimage`: equivalent bootable hybrid ISOs (a BIOS menu
//! and UEFI, bootable as CD and raw disk) from the same kernel and
//! initramfs, built three ways in one run, timed and measured:
//! - mkimage (`mkimage iso`, the release build);
//! - grub-mkrescue (GRUB for BIOS and UEFI, xorriso and mtools underneath);
//! - the classic pipeline: isolinux + objcopy for the UKI + mkfs.vfat and
//!   mtools for the EFI image + xorriso for the ISO.
//!
//! Each way runs several times; the table shows the median wall time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Samples, Table};
use crate::artifacts::{self, Variant};
use crate::{Arch, cmd, paths};

const MODES: [&str; 3] = ["internet", "local", "private"];
const CMDLINE: &str = "console=ttyS0";

struct Inputs {
    kernel: PathBuf,
    initrd: PathBuf,
    mkimage: PathBuf,
    work: PathBuf,
}

fn run(c: &mut Command) -> Result<()> {
    cmd::output(c).map(|_| ())
}

fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn with_mkimage(i: &Inputs) -> Result<PathBuf> {
    let out = i.work.join("mkimage.iso");
    run(Command::new(&i.mkimage)
        .args(["iso", "--kernel"])
        .arg(&i.kernel)
        .arg("--initrd")
        .arg(&i.initrd)
        .arg("--out")
        .arg(&out))?;
    Ok(out)
}

fn with_grub(i: &Inputs) -> Result<PathBuf> {
    let tree = i.work.join("grub-tree");
    fresh(&tree.join("boot/grub"))?;
    std::fs::copy(&i.kernel, tree.join("boot/vmlinuz"))?;
    std::fs::copy(&i.initrd, tree.join("boot/initrd"))?;
    let mut cfg = String::from("set timeout=0\n");
    for m in MODES {
        cfg += &format!(
            "menuentry 'Phase Boot: {m}' {{ linux /boot/vmlinuz {CMDLINE} phase.mode={m}; initrd /boot/initrd; }}\n"
        );
    }
    std::fs::write(tree.join("boot/grub/grub.cfg"), cfg)?;
    let out = i.work.join("grub.iso");
    run(Command::new("grub-mkrescue").arg("-o").arg(&out).arg(&tree))?;
    Ok(out)
}

fn with_pipeline(i: &Inputs) -> Result<PathBuf> {
    let tree = i.work.join("pipeline-tree");
    fresh(&tree)?;
    let isolinux = tree.join("isolinux");
    let linux = tree.join("phase/linux");
    std::fs::create_dir_all(&isolinux)?;
    std::fs::create_dir_all(&linux)?;
    std::fs::create_dir_all(tree.join("efi"))?;
    std::fs::copy(
        "/usr/lib/ISOLINUX/isolinux.bin",
        isolinux.join("isolinux.bin"),
    )?;
    for m in ["ldlinux", "menu", "libutil", "libcom32"] {
        std::fs::copy(
            format!("/usr/lib/syslinux/modules/bios/{m}.c32"),
            isolinux.join(format!("{m}.c32")),
        )?;
    }
    std::fs::copy(&i.kernel, linux.join("vmlinuz"))?;
    std::fs::copy(&i.initrd, linux.join("initrd"))?;
    let mut cfg = String::from("UI menu.c32\nTIMEOUT 1\nDEFAULT phase-linux-internet\n");
    for m in MODES {
        cfg += &format!(
            "LABEL phase-linux-{m}\n  LINUX /phase/linux/vmlinuz\n  INITRD /phase/linux/initrd\n  APPEND {CMDLINE} phase.mode={m}\n"
        );
    }
    std::fs::write(isolinux.join("isolinux.cfg"), cfg)?;

    // The UKI the way it was made before ukify: objcopy at fixed addresses.
    let osrel = i.work.join("osrel");
    std::fs::write(&osrel, "ID=phase\n")?;
    let uki = i.work.join("phase.efi");
    let section = |name: &str, path: &Path, vma: &str| {
        [
            "--add-section".to_owned(),
            format!("{name}={}", path.display()),
            "--change-section-vma".to_owned(),
            format!("{name}={vma}"),
        ]
    };
    run(Command::new("objcopy")
        .args(section(".osrel", &osrel, "0x20000"))
        .args(section(".linux", &i.kernel, "0x2000000"))
        .args(section(".initrd", &i.initrd, "0x3000000"))
        .arg("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        .arg(&uki))?;

    let img = tree.join("efi/efiboot.img");
    let kib = (std::fs::metadata(&uki)?.len() + (1 << 20)) / 1024;
    run(Command::new("mkfs.vfat")
        .arg("-C")
        .arg(&img)
        .arg(kib.to_string()))?;
    let m = |tool: &str| {
        let mut c = Command::new(tool);
        c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&img);
        c
    };
    run(m("mmd").args([
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/phase",
        "::/loader",
        "::/loader/entries",
    ]))?;
    run(m("mcopy")
        .arg("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    run(m("mcopy").arg(&uki).arg("::/EFI/phase/linux.efi"))?;
    let conf = i.work.join("loader.conf");
    std::fs::write(&conf, "default phase-linux-internet.conf\ntimeout 0\n")?;
    run(m("mcopy").arg(&conf).arg("::/loader/loader.conf"))?;
    for mode in MODES {
        let entry = i.work.join(format!("phase-linux-{mode}.conf"));
        std::fs::write(
            &entry,
            format!(
                "title Phase Boot: {mode}\nefi /EFI/phase/linux.efi\noptions {CMDLINE} phase.mode={mode}\n"
            ),
        )?;
        run(m("mcopy")
            .arg(&entry)
            .arg(format!("::/loader/entries/phase-linux-{mode}.conf")))?;
    }
    let out = i.work.join("pipeline.iso");
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&out)
        .args([
            "-isohybrid-mbr",
            "/usr/lib/ISOLINUX/isohdpfx.bin",
            "-c",
            "isolinux/boot.cat",
            "-b",
            "isolinux/isolinux.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "efi/efiboot.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ])
        .arg(&tree))?;
    Ok(out)
}

type Way = fn(&Inputs) -> Result<PathBuf>;

/// Runs the benchmark with `runs` repetitions of each way.
pub fn mkimage(runs: usize) -> Result<()> {
    for tool in [
        "grub-mkrescue",
        "xorriso",
        "mkfs.vfat",
        "mcopy",
        "mmd",
        "objcopy",
    ] {
        if cmd::output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    eprintln!("bench: building mkimage (release) and the x86_64 netboot bundle");
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(paths::root())
            .args(["build", "--quiet", "--release", "--package", "mkimage"]),
    )?;
    let bundle = artifacts::bundle(Arch::X86_64, "netboot", Variant::Release)?;
    let work = paths::phase().join("bench");
    fresh(&work)?;
    let inputs = Inputs {
        kernel: bundle.kernel.image.clone(),
        initrd: bundle.initrd.clone(),
        mkimage: paths::target().join("release/mkimage"),
        work,
    };
    let ways: [(&str, Way); 3] = [
        ("mkimage", with_mkimage),
        ("grub-mkrescue", with_grub),
        ("xorriso+isolinux+mkfs.vfat+mtools", with_pipeline),
    ];
    let mut rows = Vec::new();
    for (name, way) in ways {
        let mut times = Vec::new();
        let mut out = PathBuf::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            out = way(&inputs).with_context(|| format!("building the ISO with {name}"))?;
            times.push(t.elapsed());
        }
        let size = std::fs::metadata(&out)?.len();
        let ms: Samples = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        rows.push((name, ms, size));
    }
    println!(
        "inputs: {} ({} KiB), {} ({} KiB); {} runs each, median wall time",
        inputs.kernel.display(),
        std::fs::metadata(&inputs.kernel)?.len() >> 10,
        inputs.initrd.display(),
        std::fs::metadata(&inputs.initrd)?.len() >> 10,
        runs.max(1)
    );
    let mut table = Table::new(&[
        "tool",
        "median ms",
        "min ms",
        "max ms",
        "size KiB",
        "vs mkimage",
    ]);
    let base = rows[0].1.median();
    for (name, ms, size) in &rows {
        table.row(vec![
            name.to_string(),
            format!("{:.1}", ms.median()),
            format!("{:.1}", ms.min()),
            format!("{:.1}", ms.max()),
            (size >> 10).to_string(),
            format!("{:.1}x", ms.median() / base),
        ]);
    }
    table.print();
    Ok(())
}
