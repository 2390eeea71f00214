//! Every image format, built through the CLI twice with the same
//! SOURCE_DATE_EPOCH: the bytes must be identical, and each format's
//! reference tool must read the output back cleanly.
//!
//! The kernel is a stand-in (a PE/COFF file with the x86 setup header
//! magic): the formats only look at its header, and the real-kernel boots
//! are the QEMU scenarios' job. Stubs, syslinux and isolinux are Debian's,
//! as in production; a missing one skips its part with a printed reason
//! (a failure under `PHASE_REQUIRE_TOOLS`, which `cargo xtask test` sets).

mod fixtures;
mod referee;

use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

use fixtures::{elf_exec, fake_kernel};

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
    std::fs::write(&init, elf_exec(fixtures::EM_X86_64, 4096)).unwrap();
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
    phase_testkit::file(path, what, "a Debian package cargo xtask setup installs").is_some()
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

/// One build environment for [`every_format_is_bit_identical_across_environments`].
struct Env {
    /// Where the inputs are made, in this order, with this mtime.
    dir: PathBuf,
    reverse_order: bool,
    mtime: std::time::SystemTime,
    umask: &'static str,
    tz: &'static str,
    locale: &'static str,
}

/// A tmpfs mounted for the test (its readdir order is the reverse of
/// creation, unlike ext4's hash order), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=64m",
                "phase-test",
                dir.path().to_str().unwrap(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(dir))
        } else {
            phase_testkit::skip(
                "builds in two environments",
                "cannot mount a tmpfs (needs root)",
            );
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// The names in `dir` in the order the file system lists them.
fn listing_order(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_format_is_bit_identical_across_environments() {
    // The same inputs made and built in two environments that differ in
    // every way a build host can: file mtimes, the order files were created
    // and are listed in, umask, TZ, locale, working directory (and so
    // relative against absolute paths). SOURCE_DATE_EPOCH is the same.
    let stub = have(
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "UEFI formats",
    );
    let bios =
        have("/usr/bin/syslinux", "usb and qcow2") && have("/usr/lib/ISOLINUX/isolinux.bin", "iso");
    if !(stub && bios) {
        return;
    }
    let Some(tmpfs) = Tmpfs::mount() else { return };
    let ext4 = tempfile::tempdir().unwrap();
    let day = std::time::Duration::from_secs(86_400);
    let envs = [
        Env {
            dir: ext4.path().to_owned(),
            reverse_order: false,
            mtime: std::time::UNIX_EPOCH + day * 11_000,
            umask: "022",
            tz: "UTC",
            locale: "C",
        },
        Env {
            dir: tmpfs.0.path().to_owned(),
            reverse_order: true,
            mtime: std::time::UNIX_EPOCH + day * 22_000,
            umask: "077",
            tz: "Pacific/Kiritimati",
            locale: "C.UTF-8",
        },
    ];
    let dtbs = [
        "apple-t8103-j274.dtb",
        "apple-t8103-j293.dtb",
        "apple-t8112-j413.dtb",
    ];
    let mut outputs = Vec::new();
    for env in &envs {
        // Inputs: the same bytes, made in this environment's order.
        let files: Vec<(String, Vec<u8>)> = {
            let mut f = vec![
                ("vmlinuz".to_owned(), fake_kernel()),
                ("init".to_owned(), elf_exec(fixtures::EM_X86_64, 4096)),
                (
                    "spec.toml".to_owned(),
                    b"name = \"test\"\n[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n[[file]]\npath = \"/etc/motd\"\ntext = \"hello\\n\"\n[[dir]]\npath = \"/proc\"\n".to_vec(),
                ),
            ];
            f.extend(
                dtbs.iter()
                    .map(|d| (format!("dtb/{d}"), fixtures::fake_dtb())),
            );
            if env.reverse_order {
                f.reverse();
            }
            f
        };
        std::fs::create_dir_all(env.dir.join("dtb")).unwrap();
        for (name, bytes) in &files {
            let path = env.dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(env.mtime)
                .unwrap();
        }
        let run = |args: &[&str]| {
            // umask through the shell, everything else through the
            // environment; paths relative to the working directory.
            referee::run(
                Command::new("sh")
                    .args(["-c", &format!("umask {} && exec \"$0\" \"$@\"", env.umask)])
                    .arg(env!("CARGO_BIN_EXE_mkimage"))
                    .args(args)
                    .current_dir(&env.dir)
                    .env("SOURCE_DATE_EPOCH", EPOCH)
                    .env("TZ", env.tz)
                    .env("LC_ALL", env.locale)
                    .env("LANG", env.locale),
            );
        };
        run(&[
            "cpio",
            "--spec",
            "spec.toml",
            "--input",
            "init=init",
            "--out",
            "initrd.cpio.zst",
        ]);
        let boot = ["--kernel", "vmlinuz", "--initrd", "initrd.cpio.zst"];
        let with = |format: &str, extra: &[&str]| {
            let mut args = vec![format];
            args.extend(boot);
            args.extend_from_slice(extra);
            args.extend(["--out", format]);
            run(&args);
        };
        with("uki", &["--cmdline", "console=ttyS0"]);
        with("esp", &["--dtb-dir", "dtb"]);
        with("usb", &[]);
        with("iso", &[]);
        with("qcow2", &[]);
        outputs.push(env.dir.clone());
    }
    // The environments really differ where the file system shows it.
    assert_ne!(
        listing_order(&envs[0].dir.join("dtb")),
        listing_order(&envs[1].dir.join("dtb")),
        "both file systems list the DTBs in the same order: the test proves nothing about it"
    );
    for name in ["initrd.cpio.zst", "uki", "esp", "usb", "iso", "qcow2"] {
        let a = std::fs::read(outputs[0].join(name)).unwrap();
        let b = std::fs::read(outputs[1].join(name)).unwrap();
        assert!(a == b, "{name} differs between the two environments");
        println!("{name}: {} bytes, identical across environments", a.len());
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
        e.contains("the systemd-stub /nonexistent cannot be read"),
        "{e}"
    );
    let e = run(&["esp", "--stub", i, "--kernel", k, "--initrd", i, "-o", o]);
    assert!(e.contains("is not a usable systemd-stub"), "{e}");
    let e = run(&["esp", "--kernel", i, "--initrd", i, "-o", o]);
    assert!(
        e.contains("is an initramfs (zstd-compressed cpio), not a kernel"),
        "{e}"
    );
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

/// An initramfs whose spec names a state partition gets one on the USB disk
/// (sized automatically and to a given size): partition 2, 1 MiB of zeros
/// on a MiB boundary, with the label and our type, as sgdisk reads it.
#[test]
fn usb_makes_the_state_partition_the_image_names() {
    if !have("/usr/bin/syslinux", "USB referees")
        || !have(
            "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            "UEFI referees",
        )
    {
        return;
    }
    let base = inputs();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("state.toml");
    std::fs::write(
        &spec,
        format!(
            "{}\n[state]\npartlabel = \"PHASE-STATE\"\n",
            std::fs::read_to_string(&base.spec).unwrap()
        ),
    )
    .unwrap();
    let initrd = dir.path().join("initrd.cpio.zst");
    mkimage(&[
        "cpio",
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        &format!("init={}", base.init.display()),
        "--out",
        initrd.to_str().unwrap(),
    ]);
    let with_state = Inputs {
        initrd,
        spec,
        ..base
    };
    for extra in [&[][..], &["--size", "64M"][..]] {
        let usb = dir.path().join("usb.img");
        build("usb", &with_state, &usb, extra);
        let disk = std::fs::read(&usb).unwrap();
        // The second entry of the partition array at LBA 2.
        let entry = &disk[1024 + 128..1024 + 256];
        let first = u64::from_le_bytes(entry[32..40].try_into().unwrap());
        let last = u64::from_le_bytes(entry[40..48].try_into().unwrap());
        assert_eq!(first % 2048, 0, "{extra:?}: not on a MiB boundary");
        assert_eq!((last + 1 - first) * 512, 1 << 20, "{extra:?}");
        let part = &disk[(first * 512) as usize..((last + 1) * 512) as usize];
        assert!(part.iter().all(|&b| b == 0), "{extra:?}: not blank");
        let name: Vec<u16> = entry[56..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        assert_eq!(String::from_utf16(&name).unwrap(), "PHASE-STATE");
        if extra.is_empty() {
            assert_eq!(disk.len() as u64 % (1 << 20), 0);
        } else {
            assert_eq!(disk.len() as u64, 64 << 20);
        }
        if let Some(t) = referee::tool("sgdisk", "sgdisk -v / -i") {
            let text = referee::text(&referee::run(Command::new(&t).arg("-v").arg(&usb)));
            assert!(text.contains("No problems found"), "{text}");
            let text = referee::text(&referee::run(Command::new(t).args(["-i", "2"]).arg(&usb)));
            assert!(
                text.contains(&phase_initramfs::state::PARTITION_TYPE_GUID.to_uppercase()),
                "{text}"
            );
            assert!(text.contains("Partition name: 'PHASE-STATE'"), "{text}");
        }
    }
    // Without [state], no second partition.
    let usb = dir.path().join("plain.img");
    let plain = inputs();
    build("usb", &plain, &usb, &[]);
    let disk = std::fs::read(&usb).unwrap();
    assert!(disk[1024 + 128..1024 + 256].iter().all(|&b| b == 0));
}
