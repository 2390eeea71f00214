//! Roots for the root hand-off scenarios: a small tree whose `/sbin/init`
//! is the target init (`tests/target-init`, which reports what it was handed
//! and powers off), packed the ways users pack roots — an ext4 file system
//! (whole disk or a GPT partition), a squashfs or erofs image — by the
//! Debian tools a user would run (`mkfs.ext4 -d`, `mksquashfs`,
//! `mkfs.erofs`, `sgdisk`), and read back after the VM powered off with
//! `debugfs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::artifacts::{Memo, once};
use crate::{Arch, cmd, paths};

/// Cross-builds the target init for `arch` (once per process).
pub fn target_init(arch: Arch) -> Result<PathBuf> {
    static MEMO: Memo<Arch, PathBuf> = std::sync::OnceLock::new();
    once(&MEMO, arch, || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        cmd::run(Command::new(cargo).current_dir(paths::root()).args([
            "build",
            "--quiet",
            "--package",
            "phase-target-init",
            "--bin",
            "target-init",
            "--profile",
            "init",
            "--target",
            arch.musl_target(),
        ]))?;
        Ok(paths::target()
            .join(arch.musl_target())
            .join("init")
            .join("target-init"))
    })
}

/// The files every test root holds besides its init, by path: small, with
/// contents the host can check after the VM ran.
pub fn data_files() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        ("/etc/hostname", b"phase-root\n".to_vec()),
        ("/data/small.txt", b"kept across the switch\n".to_vec()),
        (
            "/data/pattern.bin",
            (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect(),
        ),
    ])
}

/// Makes a root tree in `dir`: `/sbin/init` (the target init, or nothing
/// when `with_init` is false), the mount points a root has, the data files,
/// and `/target-write` when the target init should write a file.
pub fn tree(arch: Arch, dir: &Path, with_init: bool, write: bool) -> Result<PathBuf> {
    let root = dir.join("root-tree");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for d in ["sbin", "proc", "sys", "dev", "run", "tmp", "etc", "data"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    if with_init {
        std::fs::copy(target_init(arch)?, root.join("sbin/init"))
            .context("copying the target init")?;
    }
    for (path, bytes) in data_files() {
        std::fs::write(root.join(path.trim_start_matches('/')), bytes)?;
    }
    if write {
        std::fs::write(root.join("target-write"), b"")?;
    }
    Ok(root)
}

/// `mkfs.ext4 -d tree` into a new file of `size_mb` with `label`.
pub fn ext4(tree: &Path, label: &str, size_mb: u32, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-d"])
            .arg(tree)
            .arg(out)
            .arg(format!("{size_mb}M"))
            .env("E2FSPROGS_FAKE_TIME", "1700000000"),
    )
}

/// `mksquashfs tree out`, owned by root.
pub fn squashfs(tree: &Path, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    cmd::run(Command::new("mksquashfs").arg(tree).arg(out).args([
        "-noappend",
        "-all-root",
        "-quiet",
        "-no-progress",
    ]))
}

/// `mkfs.erofs out tree`.
pub fn erofs(tree: &Path, out: &Path) -> Result<()> {
    let _ = std::fs::remove_file(out);
    cmd::run(Command::new("mkfs.erofs").arg("--quiet").arg(out).arg(tree))
}

/// A GPT disk of `size_mb` with one partition from 1 MiB holding
/// `partition` (a file system image), named `name`, with the partition
/// GUID `partuuid`.
pub fn gpt_disk(
    partition: &Path,
    name: &str,
    partuuid: &str,
    size_mb: u32,
    out: &Path,
) -> Result<()> {
    let part_len = std::fs::metadata(partition)?.len();
    let file = std::fs::File::create(out)?;
    file.set_len(u64::from(size_mb) << 20)?;
    drop(file);
    cmd::run(
        Command::new("sgdisk")
            .args(["-o", "-n", &format!("1:2048:+{}K", part_len / 1024)])
            .args(["-c", &format!("1:{name}"), "-u", &format!("1:{partuuid}")])
            .arg(out),
    )?;
    cmd::run(
        Command::new("dd")
            .arg(format!("if={}", partition.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "seek=1", "conv=notrunc,fsync", "status=none"]),
    )
}

/// The files under `/` of an ext4 file system at byte `offset` of `image`
/// (a disk or the file system itself), read with `debugfs` after the VM has
/// powered off: path → SHA-256 of the content, for the paths asked.
pub fn ext4_files(
    image: &Path,
    offset: u64,
    paths: &[&str],
) -> Result<BTreeMap<String, Option<String>>> {
    let dir = tempfile::tempdir()?;
    let fs = if offset == 0 {
        image.to_owned()
    } else {
        // debugfs reads a file system, not a disk: cut the partition out.
        let cut = dir.path().join("partition.img");
        cmd::run(
            Command::new("dd")
                .arg(format!("if={}", image.display()))
                .arg(format!("of={}", cut.display()))
                .args(["bs=1M", &format!("skip={}", offset >> 20), "status=none"]),
        )?;
        cut
    };
    let mut out = BTreeMap::new();
    for path in paths {
        let dump = dir.path().join("dump");
        let _ = std::fs::remove_file(&dump);
        let result = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {path} {}", dump.display()))
            .arg(&fs)
            .output()
            .context("running debugfs")?;
        if !result.status.success() {
            bail!(
                "debugfs on {}: {}",
                fs.display(),
                String::from_utf8_lossy(&result.stderr)
            );
        }
        let digest = match std::fs::read(&dump) {
            Ok(bytes) if !String::from_utf8_lossy(&result.stderr).contains("not found") => {
                Some(sha256(&bytes))
            }
            _ => None,
        };
        out.insert((*path).to_owned(), digest);
    }
    Ok(out)
}

/// SHA-256 in hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
