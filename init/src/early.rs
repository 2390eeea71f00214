//! Stage 1: the filesystems every later stage needs.
//!
//! The Debian kernels have `DEVTMPFS_MOUNT` off, so `/dev` is mounted here
//! too. Mounting is idempotent: a target that is already mounted (`EBUSY`) is
//! left as it is, so the init can be re-run in a test VM or after a
//! `switch_root` into an image that mounted things already.

use std::ffi::CStr;
use std::io;

use thiserror::Error;

use crate::sys::{self, MountFlags};

#[derive(Debug, Error)]
pub enum EarlyError {
    #[error("mount({source:?}, {target:?}, {fstype:?}, {data:?})")]
    Mount {
        source: &'static str,
        target: &'static str,
        fstype: &'static str,
        data: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("mkdir({path:?})")]
    Mkdir {
        path: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("opening /dev/console for standard input/output")]
    Console(#[source] io::Error),
}

struct Mount {
    source: &'static CStr,
    target: &'static CStr,
    fstype: &'static CStr,
    flags: MountFlags,
    data: &'static CStr,
}

const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const NOSUID_NODEV_NOEXEC: MountFlags = NOSUID_NODEV.union(MountFlags::NOEXEC);

/// In order: parents before the mounts inside them.
const MOUNTS: &[Mount] = &[
    Mount {
        source: c"proc",
        target: c"/proc",
        fstype: c"proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    Mount {
        source: c"sysfs",
        target: c"/sys",
        fstype: c"sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    Mount {
        source: c"devtmpfs",
        target: c"/dev",
        fstype: c"devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
    },
    Mount {
        source: c"devpts",
        target: c"/dev/pts",
        fstype: c"devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=0620,ptmxmode=0666",
    },
    Mount {
        source: c"tmpfs",
        target: c"/dev/shm",
        fstype: c"tmpfs",
        flags: NOSUID_NODEV,
        data: c"mode=1777",
    },
    Mount {
        source: c"tmpfs",
        target: c"/run",
        fstype: c"tmpfs",
        flags: NOSUID_NODEV,
        data: c"mode=0755",
    },
    Mount {
        source: c"tmpfs",
        target: c"/tmp",
        fstype: c"tmpfs",
        flags: NOSUID_NODEV,
        data: c"mode=1777",
    },
];

fn name(s: &'static CStr) -> &'static str {
    // Every string above is ASCII.
    s.to_str().unwrap_or("?")
}

/// Mounts the basics. Returns the mount points it mounted (not counting ones
/// that were already there).
pub fn mount_basics() -> Result<Vec<&'static str>, EarlyError> {
    let mut mounted = Vec::new();
    for m in MOUNTS {
        match sys::mkdir(m.target, 0o755) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(EarlyError::Mkdir {
                    path: name(m.target),
                    error,
                });
            }
        }
        let data = if m.data.is_empty() {
            None
        } else {
            Some(m.data)
        };
        match sys::mount(m.source, m.target, m.fstype, m.flags, data) {
            Ok(()) => mounted.push(name(m.target)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(error) => {
                return Err(EarlyError::Mount {
                    source: name(m.source),
                    target: name(m.target),
                    fstype: name(m.fstype),
                    data: name(m.data),
                    error,
                });
            }
        }
    }
    Ok(mounted)
}

/// Gives the init standard input, output and error on `/dev/console` when
/// the kernel could not (no `/dev/console` node in the initramfs).
pub fn console_stdio() -> Result<(), EarlyError> {
    if sys::stdin_is_open() {
        return Ok(());
    }
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(EarlyError::Console)?;
    sys::dup2_stdio(&console).map_err(EarlyError::Console)
}
