//! Where the harness reads and writes.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of `qemu/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        None => root().join("target"),
    }
}

/// The harness's own cache and outputs: `target/phase`.
pub fn phase() -> PathBuf {
    target().join("phase")
}

/// Debian packages fetched and unpacked for tests: `target/debian`.
pub fn debian() -> PathBuf {
    target().join("debian")
}
