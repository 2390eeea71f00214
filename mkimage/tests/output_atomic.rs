//! A failed or killed run never leaves a half-written image and never
//! damages the previous one; a block device is written in place only when
//! nothing has it mounted; `--out -` is standard output.

mod fixtures;
mod referee;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fixtures::*;
use mkimage::output::Output;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str, what: &str) -> Option<Tmpfs> {
        if !can(is_root(), what, "mounting a tmpfs needs root") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        can(ok, what, "mount -t tmpfs failed").then_some(Tmpfs { dir })
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Fills what is left with a file, so the next allocation fails.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let block = vec![0x5Au8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_leaves_no_partial_output_and_the_old_image_intact() {
    if !have(STUB_X64, "ENOSPC on an ESP") {
        return;
    }
    let Some(fs) = Tmpfs::mount("6m", "ENOSPC on an ESP") else {
        return;
    };
    // About 2.5 MB of incompressible initramfs: the UKI cannot fit twice.
    let inp = Inputs::with_payload(2_500_000);
    let esp = fs.path("esp.img");
    let build = |append: &str, size: &str| {
        mkimage(&[
            "esp",
            "--direct",
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--append",
            append,
            "--size",
            size,
            "--out",
            esp.to_str().unwrap(),
        ])
    };
    // A fresh output that does not fit: nothing is left behind.
    let small = Tmpfs::mount("1m", "ENOSPC on a fresh output").unwrap();
    let fresh = small.path("esp.img");
    let out = mkimage(&[
        "esp",
        "--direct",
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--out",
        fresh.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a 1 MiB tmpfs held the ESP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(small.names().is_empty(), "left behind: {:?}", small.names());

    // A good image, then a rebuild (other content, larger) on a full disk.
    assert!(build("one", "4M").status.success());
    referee::fsck_fat(&esp);
    let good = std::fs::read(&esp).unwrap();
    fs.fill();
    for size in ["4M", "5M"] {
        let out = build("two", size);
        assert!(!out.status.success(), "the rebuild fitted on a full tmpfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No space left on device"), "{err}");
        assert!(
            std::fs::read(&esp).unwrap() == good,
            "the old ESP was changed"
        );
        referee::fsck_fat(&esp);
        assert_eq!(fs.names(), ["esp.img", "filler"]);
    }
}

const CHILD: &str = "MKIMAGE_TEST_KILLED_WRITER";

/// The child half of the next test: writes half an image, says so, and
/// waits to be killed.
fn killed_writer(target: &Path) -> ! {
    let out = Output::new(target).unwrap();
    let _ = out.write(2 << 20, &|_| {}, |sink| {
        sink.data(&vec![0xC3; 1 << 20])?;
        println!("HALF-WRITTEN");
        std::io::stdout().flush()?;
        // Blocks until the parent kills this process.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        panic!("the parent did not kill the writer");
    });
    unreachable!("write returned");
}

#[test]
fn a_killed_write_leaves_the_old_output_and_a_named_temporary_file() {
    if let Some(target) = std::env::var_os(CHILD) {
        killed_writer(Path::new(&target));
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("disk.img");
    std::fs::write(&target, b"the previous image").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_write_leaves_the_old_output_and_a_named_temporary_file",
            "--nocapture",
        ])
        .env(CHILD, &target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "HALF-WRITTEN")),
        "the writer never got half way"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous image");
    let temp = dir.path().join(format!(".disk.img.mkimage-{pid}.tmp"));
    let partial = std::fs::read(&temp).expect("the temporary file is where the docs say");
    assert_eq!(partial.len(), 1 << 20);
    // The next write of the same output succeeds and removes the stale
    // temporary file of the dead process.
    Output::new(&target)
        .unwrap()
        .write(3, &|_| {}, |s| s.data(b"new"))
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// A loop device over a file, detached when dropped.
struct Loop {
    dev: PathBuf,
    _backing: tempfile::TempDir,
    mounted: Option<PathBuf>,
}

impl Loop {
    fn new(size: u64, partitions: Option<&[u8]>, what: &str) -> Option<Loop> {
        if !can(is_root(), what, "loop devices need root")
            || !can(
                Path::new("/dev/loop-control").exists(),
                what,
                "/dev/loop-control is missing",
            )
        {
            return None;
        }
        let backing = tempfile::tempdir().unwrap();
        let file = backing.path().join("disk");
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(size).unwrap();
        if let Some(image) = partitions {
            std::fs::write(&file, image).unwrap();
        }
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if partitions.is_some() {
            cmd.arg("-P");
        }
        let out = cmd.arg(&file).output().unwrap();
        if !can(out.status.success(), what, "losetup -f failed") {
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(Loop {
            dev,
            _backing: backing,
            mounted: None,
        })
    }
    /// Puts an ext2 file system on `dev` (this device or one of its
    /// partitions) and mounts it: any file system will do, and ext2 is the
    /// one every kernel here has.
    fn mount(&mut self, dev: &Path) {
        let dir = tempfile::tempdir().unwrap().keep();
        let mkfs = referee::tool("mkfs.ext2", "mounting a loop device").unwrap();
        referee::run(Command::new(mkfs).arg("-q").arg(dev));
        referee::run(Command::new("mount").arg(dev).arg(&dir));
        self.mounted = Some(dir);
    }
    fn unmount(&mut self) {
        if let Some(dir) = self.mounted.take() {
            let _ = Command::new("umount").arg(&dir).status();
            let _ = std::fs::remove_dir(&dir);
        }
    }
    fn s(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.unmount();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn a_block_device_is_written_in_place_unless_it_is_mounted() {
    if !have(STUB_X64, "block device output") {
        return;
    }
    let Some(mut lo) = Loop::new(8 << 20, None, "block device output") else {
        return;
    };
    let inp = Inputs::new();
    let file = inp.path("esp.img");
    let esp = |out: &str, size: &str| {
        mkimage(&[
            "esp",
            "--direct",
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--size",
            size,
            "--out",
            out,
        ])
    };
    assert!(esp(file.to_str().unwrap(), "4M").status.success());
    let want = std::fs::read(&file).unwrap();
    // Junk on the device first: the image's zeros must be written too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lo.dev)
        .unwrap()
        .write_all(&vec![0xA5; 8 << 20])
        .unwrap();
    let out = esp(lo.s(), "4M");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(lo.s()) && err.contains("8.0 MiB"),
        "no description of the device:\n{err}"
    );
    let got = std::fs::read(&lo.dev).unwrap();
    assert!(
        got[..want.len()] == want[..],
        "the device does not hold the image"
    );
    assert!(
        got[want.len()..].iter().all(|&b| b == 0xA5),
        "written past the image"
    );
    referee::fsck_fat(&lo.dev);
    // Too large for the device: refused before writing.
    let out = esp(lo.s(), "16M");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds only 8388608"), "{err}");
    // Mounted: refused, naming the mount point, and the device unchanged.
    let dev = lo.dev.clone();
    lo.mount(&dev);
    let got = std::fs::read(&lo.dev).unwrap();
    let out = esp(lo.s(), "4M");
    assert!(!out.status.success(), "a mounted device was overwritten");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is mounted"), "{err}");
    assert!(
        err.contains(&lo.mounted.as_ref().unwrap().display().to_string()),
        "{err}"
    );
    assert!(
        std::fs::read(&lo.dev).unwrap() == got,
        "the mounted device was changed"
    );
}

#[test]
fn a_disk_with_a_mounted_partition_is_refused() {
    if !have(STUB_X64, "partition mount check")
        || !have("/usr/bin/syslinux", "partition mount check")
    {
        return;
    }
    let inp = Inputs::new();
    let usb = inp.path("usb.img");
    mkimage_ok(&[
        "usb",
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--out",
        usb.to_str().unwrap(),
    ]);
    let image = std::fs::read(&usb).unwrap();
    let Some(mut lo) = Loop::new(image.len() as u64, Some(&image), "partition mount check") else {
        return;
    };
    let part = PathBuf::from(format!("{}p1", lo.s()));
    if !part.exists() {
        // Some kernels leave the scan to user space (util-linux's partx).
        let _ = Command::new("partx").arg("-a").arg(&lo.dev).status();
    }
    if !can(
        part.exists(),
        "partition mount check",
        "losetup -P made no partition node",
    ) {
        return;
    }
    let out = mkimage(&[
        "usb",
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--out",
        lo.s(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("partitions: "),
        "the partitions are not listed:\n{err}"
    );
    lo.mount(&part);
    let before = std::fs::read(&lo.dev).unwrap();
    let out = mkimage(&[
        "usb",
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--out",
        lo.s(),
    ]);
    assert!(
        !out.status.success(),
        "a disk with a mounted partition was overwritten"
    );
    assert!(
        std::fs::read(&lo.dev).unwrap() == before,
        "the disk was changed"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is mounted") && err.contains("p1"), "{err}");
}

#[test]
fn dash_is_standard_output_never_a_file() {
    let inp = Inputs::new();
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &str| {
        vec![
            "cpio".to_owned(),
            "--spec".into(),
            inp.spec.display().to_string(),
            "--input".into(),
            format!("init={}", inp.init.display()),
            "--out".into(),
            out.to_owned(),
        ]
    };
    let file = dir.path().join("a.cpio");
    let a: Vec<String> = args(file.to_str().unwrap());
    let run = |a: &[String]| {
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .current_dir(dir.path())
            .args(a)
            .output()
            .unwrap()
    };
    assert!(run(&a).status.success());
    let out = run(&args("-"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(&file).unwrap(),
        "standard output is not the archive"
    );
    assert!(!dir.path().join("-").exists(), "a file named - was written");
    if have(STUB_X64, "--out - for a UKI") {
        let out = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .current_dir(dir.path())
            .args([
                "--json",
                "uki",
                "--kernel",
                inp.k(),
                "--initrd",
                inp.i(),
                "--out",
                "-",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(&out.stdout[..2], b"MZ");
        // The summary goes to standard error when the image is on stdout.
        assert!(String::from_utf8_lossy(&out.stderr).contains("\"format\":\"uki\""));
        assert!(!dir.path().join("-").exists());
    }
}
