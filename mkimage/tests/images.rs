//! Every image format, built through the CLI twice with the same
//! SOURCE_DATE_EPOCH: the bytes must be identical, and each format's
//! reference tool must read the output back cleanly.
//!
//! The kernel is a stand-in (a PE/COFF file with the x86 setup header
//! magic): the formats only look at its header, and the real-kernel boots
//! are the QEMU scenarios' job. Stubs, syslinux and isolinux are Debian's,
//! as in production; a missing one skips its part with a printed reason
//! (a failure under `PHASE_REQUIRE_TOOLS`, which `cargo xtask test` sets).

mod referee;

use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

/// A stand-in x86_64 kernel: a PE32+ image with "HdrS" at 0x202.
fn fake_kernel() -> Vec<u8> {
    let mut b = vec![0u8; 0x10000];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    b[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes());
    b[0x54..0x56].copy_from_slice(&112u16.to_le_bytes());
    b[0x58..0x5A].copy_from_slice(&0x20Bu16.to_le_bytes());
    b[0x202..0x206].copy_from_slice(b"HdrS");
    for (i, x) in b[0x400..].iter_mut().enumerate() {
        *x = (i * 7 % 251) as u8;
    }
    b
}

fn mkimage(args: &[&str]) -> std::process::Output {
    referee::run(
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .arg("--json")
            .args(args),
    )
}

struct Inputs {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    spec: PathBuf,
    init: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, fake_kernel()).unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, b"\x7fELF stand-in init").unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "name = \"test\"\n[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n[[dir]]\npath = \"/proc\"\n",
    )
    .unwrap();
    let initrd = dir.path().join("initrd.cpio.zst");
    mkimage(&[
        "cpio",
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        &format!("init={}", init.display()),
        "--out",
        initrd.to_str().unwrap(),
    ]);
    Inputs {
        _dir: dir,
        kernel,
        initrd,
        spec,
        init,
    }
}

/// What each format needs beyond the kernel and initramfs, if present.
fn have(path: &str, what: &str) -> bool {
    let ok = Path::new(path).exists();
    if !ok {
        assert!(
            std::env::var_os("PHASE_REQUIRE_TOOLS").is_none(),
            "{what}: {path} is missing and PHASE_REQUIRE_TOOLS is set"
        );
        println!("SKIPPED {what}: {path} is not installed");
    }
    ok
}

/// Builds `format` into `out` with the boot inputs.
fn build(format: &str, inputs: &Inputs, out: &Path, extra: &[&str]) {
    let mut args = vec![
        format,
        "--kernel",
        inputs.kernel.to_str().unwrap(),
        "--initrd",
        inputs.initrd.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let outp = mkimage(&args);
    let summary: serde_json::Value = serde_json::from_slice(&outp.stdout).unwrap();
    assert_eq!(summary["format"], format);
    assert_eq!(summary["build_time"], 1_700_000_000);
}

#[test]
fn every_format_is_bit_identical_across_builds() {
    let inputs = inputs();
    let stub = have(
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "UEFI formats",
    );
    let bios =
        have("/usr/bin/syslinux", "usb and qcow2") && have("/usr/lib/ISOLINUX/isolinux.bin", "iso");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut formats: Vec<(&str, Vec<&str>)> = Vec::new();
    if stub {
        formats.push(("uki", vec![]));
        formats.push(("esp", vec!["--direct"]));
    }
    if stub && bios {
        formats.push(("usb", vec![]));
        formats.push(("iso", vec![]));
        formats.push(("qcow2", vec![]));
    }
    // The second build writes over longer files full of junk: an existing
    // output is rewritten in place and cut to length, and must come out
    // the same as a fresh one.
    for name in ["initrd.cpio", "uki", "esp", "usb", "iso", "qcow2"] {
        std::fs::write(dirs[1].path().join(name), vec![0xA5; 16 << 20]).unwrap();
    }
    for dir in &dirs {
        let cpio = dir.path().join("initrd.cpio");
        mkimage(&[
            "cpio",
            "--spec",
            inputs.spec.to_str().unwrap(),
            "--input",
            &format!("init={}", inputs.init.display()),
            "--compress",
            "none",
            "--out",
            cpio.to_str().unwrap(),
        ]);
        for (format, extra) in &formats {
            if *format == "uki" {
                mkimage(&[
                    "uki",
                    "--kernel",
                    inputs.kernel.to_str().unwrap(),
                    "--initrd",
                    inputs.initrd.to_str().unwrap(),
                    "--cmdline",
                    "console=ttyS0",
                    "--out",
                    dir.path().join("uki").to_str().unwrap(),
                ]);
            } else {
                build(format, &inputs, &dir.path().join(format), extra);
            }
        }
    }
    let mut names = vec!["initrd.cpio"];
    names.extend(formats.iter().map(|(f, _)| *f));
    for name in names {
        let a = std::fs::read(dirs[0].path().join(name)).unwrap();
        let b = std::fs::read(dirs[1].path().join(name)).unwrap();
        assert!(
            a == b,
            "{name} differs between a fresh build and one over an old file"
        );
        println!("{name}: {} bytes, identical", a.len());
    }
}

#[test]
fn referees_read_every_format_back() {
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();

    // cpio: GNU cpio and bsdtar list the archive.
    let cpio = dir.path().join("initrd.cpio");
    mkimage(&[
        "cpio",
        "--spec",
        inputs.spec.to_str().unwrap(),
        "--input",
        &format!("init={}", inputs.init.display()),
        "--compress",
        "none",
        "--out",
        cpio.to_str().unwrap(),
    ]);
    if let Some(t) = referee::tool("cpio", "cpio -t") {
        let out = referee::run(
            Command::new(t)
                .arg("-t")
                .stdin(std::fs::File::open(&cpio).unwrap()),
        );
        assert!(referee::text(&out).contains("init"));
    }
    if let Some(t) = referee::tool("bsdtar", "bsdtar -tf (cpio)") {
        let out = referee::run(Command::new(t).arg("-tf").arg(&cpio));
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == "init")
        );
    }

    if !have(
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "UEFI referees",
    ) {
        return;
    }
    // UKI: objdump lists the appended sections.
    let uki = dir.path().join("phase.efi");
    mkimage(&[
        "uki",
        "--kernel",
        inputs.kernel.to_str().unwrap(),
        "--initrd",
        inputs.initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
        "--out",
        uki.to_str().unwrap(),
    ]);
    if let Some(t) = referee::tool("objdump", "objdump -h") {
        let text = referee::text(&referee::run(Command::new(t).arg("-h").arg(&uki)));
        for s in [".osrel", ".cmdline", ".linux", ".initrd"] {
            assert!(text.contains(s), "objdump -h shows no {s}:\n{text}");
        }
        assert!(text.contains("pei-x86-64"), "{text}");
    }

    // ESP with the menu.
    let esp = dir.path().join("esp.img");
    build("esp", &inputs, &esp, &["--free", "1M"]);
    referee::fsck_fat(&esp);
    if let Some(conf) = referee::mtools_read(&esp, 0, "loader/entries/phase-linux-local.conf") {
        let conf = String::from_utf8(conf).unwrap();
        assert!(
            conf.contains("options console=ttyS0 phase.mode=local"),
            "{conf}"
        );
    }

    if !have("/usr/bin/syslinux", "USB referees") {
        return;
    }
    // USB: sgdisk verifies the GPT, fsck.fat the partition.
    let usb = dir.path().join("usb.img");
    build("usb", &inputs, &usb, &[]);
    if let Some(t) = referee::tool("sgdisk", "sgdisk -v") {
        let text = referee::text(&referee::run(Command::new(t).arg("-v").arg(&usb)));
        assert!(text.contains("No problems found"), "{text}");
    }
    let disk = std::fs::read(&usb).unwrap();
    let part = dir.path().join("usb-esp.img");
    let first = u64::from_le_bytes(disk[1024 + 32..1024 + 40].try_into().unwrap());
    let last = u64::from_le_bytes(disk[1024 + 40..1024 + 48].try_into().unwrap());
    std::fs::write(
        &part,
        &disk[(first * 512) as usize..((last + 1) * 512) as usize],
    )
    .unwrap();
    referee::fsck_fat(&part);
    if let Some(cfg) = referee::mtools_read(&part, 0, "syslinux/syslinux.cfg") {
        let cfg = String::from_utf8(cfg).unwrap();
        assert!(
            cfg.contains("APPEND console=ttyS0 phase.mode=private"),
            "{cfg}"
        );
    }

    if !have("/usr/lib/ISOLINUX/isolinux.bin", "ISO referees") {
        return;
    }
    // ISO: xorriso reports both El Torito entries, bsdtar lists the tree.
    let iso = dir.path().join("phase.iso");
    build("iso", &inputs, &iso, &[]);
    if let Some(t) = referee::tool("xorriso", "xorriso -report_el_torito") {
        let text = referee::text(&referee::run(
            Command::new(t)
                .arg("-indev")
                .arg(&iso)
                .args(["-report_el_torito", "plain"]),
        ));
        assert!(
            text.contains("El Torito boot img :   1  BIOS  y   none"),
            "{text}"
        );
        assert!(
            text.contains("El Torito boot img :   2  UEFI  y   none"),
            "{text}"
        );
        assert!(
            text.contains("boot-info-table isohybrid-suitable"),
            "{text}"
        );
        assert!(
            !text.contains("FAILURE") && !text.contains("SORRY"),
            "{text}"
        );
    }
    if let Some(t) = referee::tool("bsdtar", "bsdtar -tf (iso)") {
        let out = referee::run(Command::new(t).arg("-tf").arg(&iso));
        let list = String::from_utf8_lossy(&out.stdout);
        for f in [
            "ISOLINUX/ISOLINUX.BIN",
            "ISOLINUX/ISOLINUX.CFG",
            "PHASE/LINUX/VMLINUZ",
            "EFI/EFIBOOT.IMG",
        ] {
            assert!(
                list.lines().any(|l| l == f),
                "bsdtar does not list {f}:\n{list}"
            );
        }
        // The BIOS kernel, stored once inside the UKI inside the EFI
        // image, reads back as the kernel.
        let out = referee::run(
            Command::new(referee::tool("bsdtar", "bsdtar -xOf").unwrap())
                .arg("-xOf")
                .arg(&iso)
                .arg("PHASE/LINUX/VMLINUZ"),
        );
        assert!(
            out.stdout == fake_kernel(),
            "PHASE/LINUX/VMLINUZ is not the kernel"
        );
        // The EFI image inside passes fsck.fat too.
        let efi = dir.path().join("efiboot.img");
        let out = referee::run(
            Command::new(referee::tool("bsdtar", "bsdtar -xOf").unwrap())
                .arg("-xOf")
                .arg(&iso)
                .arg("EFI/EFIBOOT.IMG"),
        );
        std::fs::write(&efi, &out.stdout).unwrap();
        referee::fsck_fat(&efi);
    }

    // qcow2: qemu-img checks it and finds it equal to the raw disk.
    let q = dir.path().join("usb.qcow2");
    mkimage(&[
        "qcow2",
        "--from-raw",
        usb.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    if let Some(t) = referee::tool("qemu-img", "qemu-img check") {
        referee::run(Command::new(&t).arg("check").arg(&q));
        referee::run(Command::new(&t).arg("compare").arg(&q).arg(&usb));
    }
}

#[test]
fn bad_inputs_give_specific_errors() {
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let k = inputs.kernel.to_str().unwrap();
    let i = inputs.initrd.to_str().unwrap();
    let o = out.to_str().unwrap();
    let e = run(&["esp", "--kernel", "/nonexistent", "--initrd", i, "-o", o]);
    assert!(e.contains("/nonexistent does not exist"), "{e}");
    let e = run(&[
        "esp",
        "--profile",
        "m-series",
        "--kernel",
        k,
        "--initrd",
        i,
        "-o",
        o,
    ]);
    assert!(
        e.contains("profile m-series is for aarch64 machines"),
        "{e}"
    );
    let e = run(&[
        "esp",
        "--stub",
        "/nonexistent",
        "--kernel",
        k,
        "--initrd",
        i,
        "-o",
        o,
    ]);
    assert!(
        e.contains("the systemd-boot stub /nonexistent cannot be read"),
        "{e}"
    );
    let e = run(&["esp", "--stub", i, "--kernel", k, "--initrd", i, "-o", o]);
    assert!(e.contains("is not a usable systemd-stub"), "{e}");
    let e = run(&["esp", "--kernel", i, "--initrd", i, "-o", o]);
    assert!(e.contains("compressed (zstd)"), "{e}");
    if have("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "size error") {
        let e = run(&[
            "esp", "--size", "64K", "--direct", "--kernel", k, "--initrd", i, "-o", o,
        ]);
        assert!(e.contains("too small for its content"), "{e}");
    }
}

#[test]
fn xsc_profile_lists_both_variants_in_both_menus() {
    if !have("/usr/lib/ISOLINUX/isolinux.bin", "xsc ISO")
        || !have("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "xsc ISO")
    {
        return;
    }
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("xsc.iso");
    let k = inputs.kernel.to_str().unwrap();
    mkimage(&[
        "iso",
        "--profile",
        "xsc",
        "--kernel",
        &format!("base={k}"),
        "--kernel",
        &format!("cfi-compat={k}"),
        "--initrd",
        inputs.initrd.to_str().unwrap(),
        "--out",
        iso.to_str().unwrap(),
    ]);
    let Some(bsdtar) = referee::tool("bsdtar", "bsdtar (xsc ISO)") else {
        return;
    };
    let list = referee::run(Command::new(&bsdtar).arg("-tf").arg(&iso));
    let list = String::from_utf8_lossy(&list.stdout);
    for f in ["PHASE/BASE/VMLINUZ", "PHASE/CFI_COMPAT/INITRD"] {
        assert!(list.lines().any(|l| l == f), "no {f}:\n{list}");
    }
    let cfg = referee::run(
        Command::new(&bsdtar)
            .arg("-xOf")
            .arg(&iso)
            .arg("ISOLINUX/ISOLINUX.CFG"),
    );
    let cfg = String::from_utf8_lossy(&cfg.stdout);
    assert_eq!(cfg.matches("\nLABEL ").count(), 6, "{cfg}");
    assert!(cfg.contains("LINUX /phase/cfi_compat/vmlinuz"), "{cfg}");
    assert!(
        cfg.contains("APPEND console=tty0 console=ttyS0,115200 phase.mode=private"),
        "{cfg}"
    );
    // The UEFI side: six systemd-boot entries in the EFI image.
    let efi = dir.path().join("efiboot.img");
    let img = referee::run(
        Command::new(&bsdtar)
            .arg("-xOf")
            .arg(&iso)
            .arg("EFI/EFIBOOT.IMG"),
    );
    std::fs::write(&efi, &img.stdout).unwrap();
    referee::fsck_fat(&efi);
    if let Some(entry) = referee::mtools_read(&efi, 0, "loader/entries/phase-cfi_compat-local.conf")
    {
        let entry = String::from_utf8(entry).unwrap();
        assert!(entry.contains("efi /EFI/phase/cfi_compat.efi"), "{entry}");
        assert!(entry.contains("phase.mode=local"), "{entry}");
    }
}
