//! Reference tools that read our images back. Each is looked up on PATH; a
//! missing one makes its check print why it was skipped, never pass silently,
//! and fail when `PHASE_REQUIRE_TOOLS` is set (as `cargo xtask test` does).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tool's path, or `None` after the workspace's skip rule
/// ([`phase_testkit::skip`]).
pub fn tool(name: &str, check: &str) -> Option<PathBuf> {
    phase_testkit::tool(name, check)
}

/// Runs a tool, returning its output; panics with both streams when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `fsck.fat -n` (no repairs) must accept the image without complaint.
pub fn fsck_fat(image: &Path) {
    let Some(fsck) = tool("fsck.fat", "fsck.fat -n") else {
        return;
    };
    let out = run(Command::new(fsck).arg("-n").arg("-v").arg(image));
    let text = text(&out);
    // fsck.fat exits 0 for some things it only reports; anything it would
    // have changed shows up as one of these.
    for bad in [
        "differences",
        "Dirty bit",
        "Perform changes",
        "Free cluster summary",
        "Unable",
        "Bad ",
        "nvalid",
        "corrupt",
        "Orphaned",
        "Leaving file system unchanged",
    ] {
        assert!(
            !text.contains(bad),
            "fsck.fat -n on {} reports {bad:?}:\n{text}",
            image.display()
        );
    }
}

/// Reads one file out of a FAT volume (at a byte offset in `image`) with
/// mtools' mcopy.
pub fn mtools_read(image: &Path, offset: u64, path: &str) -> Option<Vec<u8>> {
    let mcopy = tool("mcopy", "mcopy read-back")?;
    let out = run(Command::new(mcopy)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::{path}"))
        .arg("-"));
    Some(out.stdout)
}
