//! The `/sbin/init` of the roots the QEMU scenarios switch into. It runs as
//! PID 1 after Phase Boot's switch_root and proves, in one event on the
//! console (`phase-event: {"event":"target",…}`), what it was handed:
//!
//! - the root mount and every other mount (`/proc/self/mountinfo`),
//! - its own argv, the kernel command line, the page size,
//! - the open file descriptors (only the console should be left),
//! - every regular file of the root's own file system with its SHA-256
//!   (the test roots are small; at most [`MAX_FILES`]),
//! - the same for each mount the hand-off made under `/run/phase` (an
//!   overlay's lower and upper), which moved with `/run`.
//!
//! If `/target-write` exists it writes `/written-by-target` before
//! reporting, for the scenarios that check where a write lands. Then it
//! syncs and powers off.
//!
//! The event goes to the harness's virtio event port when the VM has one,
//! as the Phase init's do: the line is kilobytes long, and on the serial
//! console a late kernel message could land in the middle of it. Without a
//! port it goes to the console, with the kernel's console loglevel lowered
//! first for the same reason.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use phase_initramfs::layout::EVENT_PORT_NAME;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MAX_FILES: usize = 500;

fn main() {
    // First, so a benchmark reads when this program began (CLOCK_BOOTTIME,
    // the clock the kernel's log and the init's events use).
    let uptime_ms = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64);
    let wrote = if Path::new("/target-write").exists() {
        let ok = std::fs::write("/written-by-target", b"written by the target init\n").is_ok();
        Some(ok)
    } else {
        None
    };
    // Mount points end a walk (an overlay's files report the device of
    // their layer, so devices cannot tell where a file system ends).
    let points: Vec<String> = mounts()
        .iter()
        .filter_map(|m| m["mount_point"].as_str().map(str::to_owned))
        .collect();
    let mut files = BTreeMap::new();
    walk(Path::new("/"), &points, &mut files);
    // The hand-off's own mounts under the moved /run (an overlay's lower
    // and upper, a live medium), each walked on its own device.
    let mut trees = BTreeMap::new();
    for m in mounts() {
        let Some(point) = m["mount_point"].as_str() else {
            continue;
        };
        if !point.starts_with("/run/phase/") {
            continue;
        }
        let mut under = BTreeMap::new();
        walk(Path::new(point), &points, &mut under);
        trees.insert(point.to_owned(), under);
    }
    let event = json!({
        "event": "target",
        "uptime_ms": uptime_ms,
        "argv": std::env::args().collect::<Vec<_>>(),
        "pid": std::process::id(),
        "cmdline": std::fs::read_to_string("/proc/cmdline").unwrap_or_default().trim(),
        "page_size": rustix::param::page_size(),
        "mounts": mounts(),
        "fds": fds(),
        "files": files,
        "trees": trees,
        "wrote": wrote,
        "env": std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    report(&event.to_string());
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // Only if the power-off failed: PID 1 must not exit.
    loop {
        std::thread::park();
    }
}

/// Writes the event where the harness reads it: a bare JSON line on the
/// event port if there is one, else a prefixed line on the console.
fn report(json: &str) {
    if let Some(port) = event_port()
        && std::fs::OpenOptions::new()
            .write(true)
            .open(&port)
            .and_then(|mut f| f.write_all(format!("{json}\n").as_bytes()))
            .is_ok()
    {
        return;
    }
    // Only emergency messages reach the console from here on, so none
    // splits the line.
    let _ = std::fs::write("/proc/sys/kernel/printk", "1");
    let mut out = std::io::stdout();
    let _ = out.write_all(format!("phase-event: {json}\n").as_bytes());
    let _ = out.flush();
}

/// The device of the virtio-serial port named [`EVENT_PORT_NAME`].
fn event_port() -> Option<PathBuf> {
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.trim() == EVENT_PORT_NAME)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
}

/// `/proc/self/mountinfo` as `{mount_point, source, fstype, options}`, in
/// order.
fn mounts() -> Vec<Value> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount_point options [optional…] - fstype source super_options
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(json!({
                "mount_point": left.get(4)?,
                "options": left.get(5)?,
                "fstype": right.first()?,
                "source": right.get(1)?,
                "super_options": right.get(2).unwrap_or(&""),
            }))
        })
        .collect()
}

/// The open descriptors and what they point at.
fn fds() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.insert(e.file_name().to_string_lossy().into_owned(), target);
        }
    }
    out
}

/// Every regular file under `dir` that is not under another mount point,
/// by path, with its SHA-256.
fn walk(dir: &Path, points: &[String], files: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if files.len() >= MAX_FILES {
            return;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if points.iter().any(|p| Path::new(p) == path) {
                continue;
            }
            walk(&path, points, files);
        } else if meta.is_file() {
            let digest = std::fs::read(&path)
                .map(|b| {
                    Sha256::digest(&b)
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                })
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            files.insert(path.display().to_string(), digest);
        }
    }
}
