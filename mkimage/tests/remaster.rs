//! `mkimage iso --into`: a distribution's ISO remastered with Phase Boot.
//!
//! The referees judge the result: xorriso reports the same El Torito
//! entries and a system area that spans the new image, `isoinfo -d -R -J`
//! reads the descriptors, Rock Ridge and Joliet, sgdisk verifies the GPT,
//! and osirrox extracts both trees so every original file is hashed against
//! its copy. The distribution ISO is Debian's installer
//! (`PHASE_TEST_DISTRO_ISO_X86_64`, which `cargo xtask test` builds from
//! `debian-installer-12-netboot-amd64`); the bad inputs and the menus
//! mkimage refuses use small ISOs xorriso writes here.

mod fixtures;
mod referee;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fixtures::*;
use referee::{run, text, tool};
use sha2::{Digest, Sha256};

const ISOLINUX: &str = "/usr/lib/ISOLINUX/isolinux.bin";
const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";

/// The distribution ISO `cargo xtask test` provides, or `None` after the
/// skip rule.
fn distro_iso(check: &str) -> Option<PathBuf> {
    match std::env::var_os("PHASE_TEST_DISTRO_ISO_X86_64") {
        Some(p) => phase_testkit::file(PathBuf::from(p), check, "cargo xtask test builds it"),
        None => {
            phase_testkit::skip(
                check,
                "PHASE_TEST_DISTRO_ISO_X86_64 is not set (cargo xtask test sets it)",
            );
            None
        }
    }
}

/// Every tool these tests need, or `None` after the skip rule.
fn tools(check: &str) -> Option<()> {
    for t in ["xorriso", "osirrox", "isoinfo", "sgdisk"] {
        tool(t, check)?;
    }
    if !have(ISOLINUX, check) || !have(STUB_X64, check) || !have(SYSTEMD_BOOT_X64, check) {
        return None;
    }
    Some(())
}

/// A small bootable ISO xorriso writes from `files` (path, contents), with
/// isolinux as its BIOS entry when `bootable`.
fn small_iso(dir: &Path, name: &str, files: &[(&str, &[u8])], bootable: bool) -> PathBuf {
    let root = dir.join(format!("{name}.tree"));
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let iso = dir.join(format!("{name}.iso"));
    let mut c = Command::new("xorriso");
    c.args(["-as", "mkisofs", "-r", "-J", "-V", "SMALL_DISTRO", "-o"])
        .arg(&iso);
    if bootable {
        c.args(["-isohybrid-mbr", ISOHDPFX]).args([
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ]);
    }
    run(c.arg(&root));
    iso
}

fn isolinux_bin() -> Vec<u8> {
    std::fs::read(ISOLINUX).unwrap()
}

const CFG: &[u8] = b"prompt 0\ntimeout 50\ndefault live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd boot=live\n";
const GRUB: &[u8] =
    b"menuentry 'Live' {\n  linux /live/vmlinuz boot=live\n  initrd /live/initrd\n}\n";

fn remaster(inp: &Inputs, into: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "iso",
        "--into",
        into.to_str().unwrap(),
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mkimage(&args)
}

fn sha256(path: &Path) -> String {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file of the ISO's Rock Ridge tree, extracted by osirrox: path →
/// (SHA-256, bytes).
fn tree(iso: &Path, dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(iso)
        .args(["-extract", "/"])
        .arg(dir));
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                let bytes = std::fs::read(&p).unwrap();
                out.insert(rel, (sha256(&p), bytes));
            }
        }
    }
    out
}

/// The El Torito lines of xorriso's report, which must not change.
fn el_torito(iso: &Path) -> Vec<String> {
    let out = run(Command::new("xorriso").arg("-indev").arg(iso).args([
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    ]));
    let all = text(&out);
    for bad in ["FAILURE", "SORRY", "WARNING", "MISHAP"] {
        assert!(!all.contains(bad), "xorriso on {}:\n{all}", iso.display());
    }
    all.lines()
        .filter(|l| l.starts_with("El Torito"))
        .map(str::to_owned)
        .collect()
}

fn isoinfo_clean(iso: &Path) -> String {
    let d = run(Command::new("isoinfo")
        .args(["-d", "-R", "-J", "-i"])
        .arg(iso));
    let s = text(&d);
    assert!(
        s.contains("Joliet with UCS level") && s.contains("Rock Ridge signatures"),
        "{s}"
    );
    // A full listing of both trees must read without a complaint.
    for tree in ["-R", "-J"] {
        let l = run(Command::new("isoinfo").args([tree, "-l", "-i"]).arg(iso));
        assert!(
            l.stderr.is_empty(),
            "isoinfo {tree} -l: {}",
            String::from_utf8_lossy(&l.stderr)
        );
    }
    s
}

/// `sgdisk -v` finds no more in `out` than in `input`: an isohybrid GPT's
/// first partition overlaps the tables by design, but a bad CRC or a
/// backup header in the wrong place would be new.
fn sgdisk_as_clean(out: &Path, input: &Path) {
    let v = |p: &Path| text(&Command::new("sgdisk").arg("-v").arg(p).output().unwrap());
    assert_eq!(v(out), v(input), "sgdisk -v");
}

#[test]
fn debian_installer_iso_keeps_every_file_and_boot_entry() {
    let check = "remastering Debian's installer ISO";
    if tools(check).is_none() {
        return;
    }
    let Some(distro) = distro_iso(check) else {
        return;
    };
    let inp = Inputs::new();
    let before = sha256(&distro);
    let out = inp.path("mini-phase.iso");
    let t = std::time::Instant::now();
    let o = remaster(&inp, &distro, &out, &["--json"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["menus_edited"],
        serde_json::json!(["isolinux.cfg", "boot/grub/grub.cfg"])
    );
    println!(
        "remastered {} ({} bytes) into {} bytes in {:.2} s",
        distro.display(),
        std::fs::metadata(&distro).unwrap().len(),
        summary["bytes"],
        took.as_secs_f64()
    );
    assert_eq!(sha256(&distro), before, "the input ISO changed");

    // The same El Torito entries, paths and options; the system area
    // stretched to the new size; GPT valid.
    assert_eq!(el_torito(&out), el_torito(&distro));
    let sa = text(&run(Command::new("xorriso")
        .arg("-indev")
        .arg(&out)
        .args(["-report_system_area", "plain"])));
    let sectors = std::fs::metadata(&out).unwrap().len() / 512;
    assert!(
        sa.contains(&format!("ISO image size/512 : {sectors}"))
            && sa.contains("MBR isohybrid cyl-align-on GPT")
            && sa.contains(&format!(
                "MBR partition      :   1   0x80  0x00            0       {sectors}"
            )),
        "{sa}"
    );
    sgdisk_as_clean(&out, &distro);
    let info = isoinfo_clean(&out);
    let info_in = isoinfo_clean(&distro);
    let vol = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Volume id:"))
            .map(str::to_owned)
    };
    assert_eq!(vol(&info), vol(&info_in));

    // Every original file, byte for byte; the two menus are the original
    // text followed by ours; /phase/ has the kernel and initramfs.
    let a = tree(&distro, &inp.path("in"));
    let b = tree(&out, &inp.path("out"));
    assert!(
        a.len() > 250,
        "only {} files in the distribution ISO",
        a.len()
    );
    for (path, (hash, bytes)) in &a {
        let (h2, b2) = b
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing from the remastered ISO"));
        if path == "isolinux.cfg" || path == "boot/grub/grub.cfg" {
            assert!(b2.starts_with(bytes), "{path} lost its original text");
            let added = String::from_utf8_lossy(&b2[bytes.len()..]).into_owned();
            assert!(
                added.contains("Phase Boot: internet")
                    && added.contains("Phase Boot: local")
                    && added.contains("Phase Boot: private"),
                "{path}: {added}"
            );
        } else {
            assert_eq!(hash, h2, "{path} changed");
        }
    }
    let kernel = std::fs::read(&inp.kernel).unwrap();
    let initrd = std::fs::read(&inp.initrd).unwrap();
    assert_eq!(b["phase/linux/vmlinuz"].1, kernel);
    assert_eq!(b["phase/linux/initrd"].1, initrd);
    assert_eq!(b.len(), a.len() + 2, "{:?}", b.keys().collect::<Vec<_>>());
    // Joliet lists the added files too, under their own names.
    let joliet = text(&run(Command::new("isoinfo")
        .args(["-J", "-f", "-i"])
        .arg(&out)));
    assert!(
        joliet.lines().any(|l| l == "/phase/linux/vmlinuz"),
        "{joliet}"
    );

    // Reproducible.
    let again = inp.path("again.iso");
    let o = remaster(&inp, &distro, &again, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sha256(&again), sha256(&out), "two remasters differ");
    // A remastered ISO is not remastered again over its /phase/.
    let o = remaster(&inp, &out, &inp.path("twice.iso"), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already has \"phase\""), "{}", text(&o));
}

#[test]
fn bad_inputs_are_named_and_nothing_is_written() {
    let check = "remaster bad inputs";
    if tools(check).is_none() {
        return;
    }
    let inp = Inputs::new();
    let good = small_iso(
        inp.dir.path(),
        "good",
        &[
            ("isolinux/isolinux.bin", &isolinux_bin()),
            ("isolinux/isolinux.cfg", CFG),
            ("live/vmlinuz", &[7u8; 5000]),
        ],
        true,
    );
    let not_iso = inp.path("random.iso");
    std::fs::write(&not_iso, vec![0x5Au8; 1 << 20]).unwrap();
    let truncated = inp.path("truncated.iso");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let no_boot = small_iso(
        inp.dir.path(),
        "data",
        &[("isolinux/isolinux.cfg", CFG)],
        false,
    );
    for (input, want) in [
        (
            &not_iso,
            "is not an ISO9660 image: no primary volume descriptor",
        ),
        (&truncated, "is truncated: its volume descriptor says"),
        (&no_boot, "has no El Torito boot catalog"),
    ] {
        let out = inp.path("out.iso");
        let o = remaster(&inp, input, &out, &[]);
        let err = text(&o);
        assert!(
            !o.status.success() && err.contains(want),
            "{}: {err}",
            input.display()
        );
        assert!(err.contains(&input.display().to_string()), "{err}");
        assert!(!out.exists(), "{} was written", out.display());
    }
    // The output may not be the input.
    let o = remaster(&inp, &good, &good, &[]);
    assert!(
        !o.status.success() && text(&o).contains("the same file"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
}

#[test]
fn a_menu_it_cannot_read_is_named_and_entry_only_passes_it_by() {
    let check = "remaster menus";
    if tools(check).is_none() {
        return;
    }
    let inp = Inputs::new();
    let strange: &[u8] = b"prompt 0\nthis is not syslinux\n";
    let iso = small_iso(
        inp.dir.path(),
        "strange",
        &[
            ("isolinux/isolinux.bin", &isolinux_bin()),
            ("isolinux/isolinux.cfg", strange),
            ("boot/grub/grub.cfg", GRUB),
            ("live/vmlinuz", &[7u8; 5000]),
            ("Docs/Mixed Case Name.txt", b"kept as it is\n"),
        ],
        true,
    );
    let out = inp.path("out.iso");
    let o = remaster(&inp, &iso, &out, &[]);
    let err = text(&o);
    assert!(
        !o.status.success()
            && err.contains("isolinux/isolinux.cfg: line 2 is not syslinux configuration")
            && err.contains("--entry-only"),
        "{err}"
    );
    assert!(!out.exists());

    let o = remaster(&inp, &iso, &out, &["--entry-only", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["menus_edited"], serde_json::json!([]));
    el_torito(&out);
    isoinfo_clean(&out);
    let a = tree(&iso, &inp.path("a"));
    let b = tree(&out, &inp.path("b"));
    for (path, (hash, _)) in &a {
        assert_eq!(Some(hash), b.get(path).map(|x| &x.0), "{path}");
    }
    assert!(b.contains_key("phase/linux/vmlinuz") && b.contains_key("phase/linux/initrd"));

    // A grub.cfg with an open brace is named the same way.
    let iso = small_iso(
        inp.dir.path(),
        "grubby",
        &[
            ("isolinux/isolinux.bin", &isolinux_bin()),
            ("isolinux/isolinux.cfg", CFG),
            ("boot/grub/grub.cfg", b"menuentry 'x' {\n"),
        ],
        true,
    );
    let o = remaster(&inp, &iso, &inp.path("g.iso"), &[]);
    let err = text(&o);
    assert!(
        err.contains("boot/grub/grub.cfg: not grub configuration mkimage understands"),
        "{err}"
    );

    // --phase-default makes the Phase Boot entry the menus' default.
    let iso = small_iso(
        inp.dir.path(),
        "plain",
        &[
            ("isolinux/isolinux.bin", &isolinux_bin()),
            ("isolinux/isolinux.cfg", CFG),
            ("boot/grub/grub.cfg", GRUB),
        ],
        true,
    );
    let out = inp.path("default.iso");
    let o = remaster(
        &inp,
        &iso,
        &out,
        &[
            "--phase-default",
            "--default-mode",
            "local",
            "--timeout",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let b = tree(&out, &inp.path("d"));
    let cfg = String::from_utf8_lossy(&b["isolinux/isolinux.cfg"].1).into_owned();
    assert!(
        cfg.ends_with("DEFAULT phase-linux-local\nTIMEOUT 20\n"),
        "{cfg}"
    );
    let grub = String::from_utf8_lossy(&b["boot/grub/grub.cfg"].1).into_owned();
    assert!(
        grub.ends_with("set default='phase-linux-local'\nset timeout=2\n"),
        "{grub}"
    );
}

/// Peak RSS of a remaster of a 1 GiB ISO, by GNU time.
#[test]
fn a_gigabyte_iso_is_streamed_not_loaded() {
    let check = "remaster memory";
    if tools(check).is_none() {
        return;
    }
    let Some(time) = phase_testkit::file("/usr/bin/time", check, "package time") else {
        return;
    };
    let inp = Inputs::new();
    let root = inp.path("big.tree");
    std::fs::create_dir_all(root.join("isolinux")).unwrap();
    std::fs::write(root.join("isolinux/isolinux.bin"), isolinux_bin()).unwrap();
    std::fs::write(root.join("isolinux/isolinux.cfg"), CFG).unwrap();
    // Sparse on the host; xorriso writes its gigabyte of zeros.
    let big = std::fs::File::create(root.join("data.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    let iso = inp.path("big.iso");
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-r", "-J", "-o"])
        .arg(&iso)
        .args(["-isohybrid-mbr", ISOHDPFX])
        .args([
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ])
        .arg(&root));
    let out = inp.path("big-phase.iso");
    let o = run(Command::new(time)
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_mkimage"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["iso", "--into"])
        .arg(&iso)
        .args(["--kernel", inp.k(), "--initrd", inp.i(), "--out"])
        .arg(&out));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in {err}"));
    let in_len = std::fs::metadata(&iso).unwrap().len();
    println!("remastering a {in_len}-byte ISO peaked at {kib} KiB RSS");
    assert!(in_len >= 1 << 30);
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    // The big file came through.
    let listing = text(&run(Command::new("isoinfo")
        .args(["-R", "-l", "-i"])
        .arg(&out)));
    assert!(listing.contains("1073741824"), "{listing}");
}
