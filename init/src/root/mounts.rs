//! Mounting what the root hand-off found: a device, a loop device over a
//! sealed memfd or an image file, and an overlay with a tmpfs upper.
//!
//! The layout, as dracut's:
//!
//! ```text
//! /sysroot                 the new root (the device, or the overlay)
//! /run/phase/lower         the overlay's read-only lower (device or image)
//! /run/phase/overlay       tmpfs: upper/ and work/
//! /run/phase/media         a live medium the image file is read from
//! ```
//!
//! `/run` moves into the new root with the switch, so the lower and upper
//! stay reachable (and mounted) at the same paths there.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use serde::Serialize;
use thiserror::Error;

use crate::sys::{self, MountFlags};

pub const LOWER: &str = "/run/phase/lower";
pub const OVERLAY: &str = "/run/phase/overlay";
pub const MEDIA: &str = "/run/phase/media";

#[derive(Debug, Error)]
pub enum MountsError {
    #[error("mount({source_path}, {target}, {fstype}, {flags}, {data:?})")]
    Mount {
        source_path: String,
        target: String,
        fstype: String,
        flags: &'static str,
        data: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mkdir({path})")]
    Mkdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open(/dev/loop-control) or LOOP_CTL_GET_FREE")]
    LoopControl(#[source] std::io::Error),
    #[error("open({path}, O_RDONLY)")]
    LoopOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ioctl({path}, LOOP_CONFIGURE, read-only, backing {backing})")]
    LoopConfigure {
        path: String,
        backing: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open({path}) as a loop device's backing file")]
    Backing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {value:?} holds a NUL byte")]
    Nul { what: &'static str, value: String },
}

/// One mount as made, for the hand-off's event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mounted {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: String,
    pub read_only: bool,
}

fn cstring(what: &'static str, value: &str) -> Result<CString, MountsError> {
    CString::new(value).map_err(|_| MountsError::Nul {
        what,
        value: value.into(),
    })
}

/// `mkdir -p`.
pub fn make_dir(path: &str) -> Result<(), MountsError> {
    std::fs::create_dir_all(path).map_err(|source| MountsError::Mkdir {
        path: path.into(),
        source,
    })
}

/// Mounts `source` of `fstype` on `target` (made if missing), read-only
/// unless `read_write`, with `data` as the file system's options.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    read_write: bool,
    data: &str,
) -> Result<Mounted, MountsError> {
    make_dir(target)?;
    let flags = if read_write {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    let data_c = cstring("mount options", data)?;
    sys::mount(
        &cstring("device", source)?,
        &cstring("mount point", target)?,
        &cstring("file system type", fstype)?,
        flags,
        (!data.is_empty()).then_some(data_c.as_c_str()),
    )
    .map_err(|e| MountsError::Mount {
        source_path: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        flags: if read_write { "rw" } else { "MS_RDONLY" },
        data: data.into(),
        source: e,
    })?;
    Ok(Mounted {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        options: data.into(),
        read_only: !read_write,
    })
}

/// A read-only loop device over `backing` (a sealed memfd or an open image
/// file), detached by the kernel when its last user goes: the mount holds
/// it from then on. Returns the device path and its open descriptor, which
/// the caller keeps until the file system is mounted.
pub fn attach_loop(backing: impl AsFd, name: &str) -> Result<(String, OwnedFd), MountsError> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(MountsError::LoopControl)?;
    let n = sys::loop_ctl_get_free(&control).map_err(MountsError::LoopControl)?;
    let path = format!("/dev/loop{n}");
    let device = std::fs::File::open(&path).map_err(|source| MountsError::LoopOpen {
        path: path.clone(),
        source,
    })?;
    sys::loop_configure(
        &device,
        backing,
        sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR,
        name,
    )
    .map_err(|source| MountsError::LoopConfigure {
        path: path.clone(),
        backing: name.into(),
        source,
    })?;
    Ok((path, OwnedFd::from(device)))
}

/// Opens an image file (on a live medium) read-only for [`attach_loop`].
pub fn open_image(path: &str) -> Result<std::fs::File, MountsError> {
    std::fs::File::open(path).map_err(|source| MountsError::Backing {
        path: path.into(),
        source,
    })
}

/// The tmpfs options for the overlay's upper: `size=` from
/// `rd.overlay=tmpfs:size=N` (as tmpfs spells sizes), else tmpfs's default
/// (half of RAM).
pub fn upper_options(size: Option<&str>) -> String {
    match size {
        Some(s) => format!("mode=0755,size={s}"),
        None => "mode=0755".into(),
    }
}

/// A tmpfs at [`OVERLAY`] with `upper/` and `work/`, and the overlay of it
/// over `lower` at `target`.
pub fn overlay(lower: &str, target: &str, size: Option<&str>) -> Result<Vec<Mounted>, MountsError> {
    let tmpfs = mount("tmpfs", OVERLAY, "tmpfs", true, &upper_options(size))?;
    let upper = format!("{OVERLAY}/upper");
    let work = format!("{OVERLAY}/work");
    make_dir(&upper)?;
    make_dir(&work)?;
    let data = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    let overlay = mount("overlay", target, "overlay", true, &data)?;
    Ok(vec![tmpfs, overlay])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_size_is_passed_to_tmpfs() {
        assert_eq!(upper_options(None), "mode=0755");
        assert_eq!(upper_options(Some("512m")), "mode=0755,size=512m");
    }
}
