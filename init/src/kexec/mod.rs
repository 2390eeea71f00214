//! The kexec hand-off: load the verified next kernel from sealed memfds, then
//! jump to it.
//!
//! ```text
//! let loaded = kexec::load(kernel, initrd, dtb, &manifest.cmdline)?;  // nothing is lost yet
//! let error = kexec::execute(loaded);                                 // returns only on failure
//! ```
//!
//! - **x86_64** uses `kexec_file_load`: the kernel reads the files itself and
//!   applies its signature and lockdown policy. A refusal fails closed; this
//!   module has no path from `kexec_file_load` to `kexec_load` on x86_64 at
//!   all, so nothing can fall back to loading the same bytes without the
//!   check (SECURITY.md row 16).
//! - **aarch64** uses `kexec_load` with segments built in [`arm64`]: Debian's
//!   arm64 kernel has no `kexec_file_load`.
//!
//! Every file descriptor must be a memfd sealed against writes, shrinking
//! and growing: the bytes the kernel gets are the bytes that were hashed
//! (SECURITY.md row 3). Every syscall error names the syscall and its
//! arguments.

pub mod arm64;
pub mod gzip;
pub mod iomem;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use serde::Serialize;
use thiserror::Error;

use crate::fdt::FdtError;
use crate::sys::{self, RebootCommand};

/// `COMMAND_LINE_SIZE` on x86_64 and arm64, less the terminating NUL.
pub const MAX_CMDLINE: usize = 2047;

/// A half-open physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub fn new(start: u64, end: u64) -> Region {
        Region { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn overlaps(&self, other: &Region) -> bool {
        self.start < other.end && other.start < self.end
    }
}

#[derive(Debug, Error)]
pub enum KexecError {
    #[error("fcntl(fd={fd}, F_GET_SEALS) on the {what} file descriptor (is it a memfd?)")]
    Seals {
        what: &'static str,
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error(
        "the {what} file descriptor is not sealed against writes, shrinking and growing; only sealed memfds are handed off"
    )]
    NotSealed { what: &'static str },
    #[error("the command line has a NUL byte at offset {offset}")]
    CmdlineNul { offset: usize },
    #[error("the command line is {len} bytes; the kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("a DTB was given, but {arch} boots without one (kexec_file_load takes none)")]
    DtbUnsupported { arch: &'static str },
    #[error("kexec is not implemented for {arch}")]
    Unsupported { arch: &'static str },
    #[error(
        "kexec_file_load(kernel_fd={kernel_fd}, initrd_fd={initrd_fd}, cmdline_len={cmdline_len}, flags={flags:#x}) refused: {reason}; failing closed, no fallback to kexec_load"
    )]
    KexecFileLoadRefused {
        kernel_fd: i32,
        initrd_fd: i32,
        cmdline_len: usize,
        flags: u64,
        reason: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "kexec_file_load(kernel_fd={kernel_fd}, initrd_fd={initrd_fd}, cmdline_len={cmdline_len}, flags={flags:#x})"
    )]
    KexecFileLoad {
        kernel_fd: i32,
        initrd_fd: i32,
        cmdline_len: usize,
        flags: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "mmap(NULL, size of fd {fd}, PROT_READ, MAP_SHARED, fd={fd}, 0) of the sealed {what} memfd"
    )]
    Map {
        what: &'static str,
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error("decompressing the gzip kernel image")]
    Gunzip(#[source] gzip::GzipError),
    #[error("not an arm64 Image: {problem}")]
    ImageHeader { problem: String },
    #[error("reading {path}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("/proc/iomem line {line} is malformed: {text:?}")]
    Iomem { line: usize, text: String },
    #[error("/proc/iomem lists no free System RAM")]
    NoRam,
    #[error("page size {page} is not a power of two up to 2 MiB")]
    PageSize { page: u64 },
    #[error("{from} is not a valid device tree")]
    Dtb {
        from: &'static str,
        #[source]
        source: FdtError,
    },
    #[error("the edited DTB is {len} bytes; arm64 boots at most {max}")]
    DtbTooLarge { len: usize, max: usize },
    #[error(
        "no room for the {what} ({len:#x} bytes at {align:#x} alignment, between {min:#x} and {max:#x}) in free System RAM"
    )]
    Place {
        what: &'static str,
        len: u64,
        align: u64,
        min: u64,
        max: u64,
    },
    #[error("getrandom({len} bytes) for kaslr-seed and rng-seed")]
    Getrandom {
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "kexec_load(entry={entry:#x}, nr_segments={nr_segments}, flags={flags:#x}) with segments {segments}"
    )]
    KexecLoad {
        entry: u64,
        nr_segments: usize,
        flags: u64,
        segments: String,
        #[source]
        source: io::Error,
    },
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC)")]
    Reboot(#[source] io::Error),
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC) returned without starting the next kernel")]
    RebootReturned,
}

/// A segment as loaded, for the hand-off event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    pub name: &'static str,
    pub mem: u64,
    pub memsz: u64,
    pub bufsz: u64,
}

/// Proof that [`load`] succeeded: the next kernel is in place and
/// [`execute`] may jump to it. Describes what was loaded, for the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loaded {
    pub syscall: &'static str,
    /// `kexec_load` only: the purgatory's physical address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<u64>,
    /// `kexec_load` only: where the purgatory enters the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_entry: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentInfo>,
    pub kernel_gzip: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtb: Option<arm64::DtbSource>,
    /// Stale `/chosen` properties removed from the DTB.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<arm64::ImageHeader>,
}

impl Loaded {
    /// One line for the console.
    pub fn summary(&self) -> String {
        let mut text = self.syscall.to_owned();
        if let Some(entry) = self.entry {
            text.push_str(&format!(" entry {entry:#x}"));
        }
        for s in &self.segments {
            text.push_str(&format!(", {} {:#x}+{:#x}", s.name, s.mem, s.memsz));
        }
        if self.kernel_gzip {
            text.push_str(", kernel was gzip");
        }
        if !self.dropped.is_empty() {
            text.push_str(&format!(", dropped /chosen {}", self.dropped.join(" ")));
        }
        text
    }
}

/// Checks that `fd` is sealed the way `fcntl_seal_all` leaves a memfd.
pub fn check_sealed(what: &'static str, fd: impl AsFd) -> Result<(), KexecError> {
    use std::os::fd::AsRawFd;
    let fd = fd.as_fd();
    match sys::fcntl_get_seals_all(fd) {
        Ok(true) => Ok(()),
        Ok(false) => Err(KexecError::NotSealed { what }),
        Err(source) => Err(KexecError::Seals {
            what,
            fd: fd.as_raw_fd(),
            source,
        }),
    }
}

/// The command line as the kernel takes it.
pub fn cmdline(text: &str) -> Result<CString, KexecError> {
    if text.len() > MAX_CMDLINE {
        return Err(KexecError::CmdlineTooLong {
            len: text.len(),
            max: MAX_CMDLINE,
        });
    }
    CString::new(text).map_err(|e| KexecError::CmdlineNul {
        offset: e.nul_position(),
    })
}

/// Loads the next kernel: `kernel`, optional `initrd` and (arm64) `dtb`,
/// each a sealed memfd, and the signed command line verbatim. Nothing is
/// lost on failure: the running system is untouched and the caller takes
/// its failure policy.
pub fn load(
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: &str,
) -> Result<Loaded, KexecError> {
    check_sealed("kernel", &kernel)?;
    if let Some(fd) = &initrd {
        check_sealed("initrd", fd)?;
    }
    if let Some(fd) = &dtb {
        check_sealed("dtb", fd)?;
    }
    let cmdline = self::cmdline(cmdline)?;
    load_arch(kernel, initrd, dtb, &cmdline)
}

#[cfg(target_arch = "x86_64")]
fn load_arch(
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: &std::ffi::CStr,
) -> Result<Loaded, KexecError> {
    use std::os::fd::AsRawFd;
    if dtb.is_some() {
        return Err(KexecError::DtbUnsupported { arch: "x86_64" });
    }
    let flags = 0;
    match sys::kexec_file_load(
        kernel.as_fd(),
        initrd.as_ref().map(|fd| fd.as_fd()),
        cmdline,
        flags,
    ) {
        Ok(()) => Ok(Loaded {
            syscall: "kexec_file_load",
            entry: None,
            kernel_entry: None,
            segments: Vec::new(),
            kernel_gzip: false,
            dtb: None,
            dropped: Vec::new(),
            image: None,
        }),
        Err(source) => Err(file_load_error(
            kernel.as_raw_fd(),
            initrd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            cmdline.to_bytes_with_nul().len(),
            if initrd.is_some() {
                flags
            } else {
                flags | sys::KEXEC_FILE_NO_INITRAMFS
            },
            source,
        )),
    }
}

#[cfg(target_arch = "aarch64")]
fn load_arch(
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: &std::ffi::CStr,
) -> Result<Loaded, KexecError> {
    arm64::load(kernel, initrd, dtb, cmdline)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn load_arch(
    _kernel: OwnedFd,
    _initrd: Option<OwnedFd>,
    _dtb: Option<OwnedFd>,
    _cmdline: &std::ffi::CStr,
) -> Result<Loaded, KexecError> {
    Err(KexecError::Unsupported {
        arch: std::env::consts::ARCH,
    })
}

/// Why `kexec_file_load` refused an image on policy: a signature that does
/// not verify, a key it does not trust, lockdown, IMA appraisal. `None` for
/// other errors (a malformed image, no memory).
pub fn refusal_reason(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "lockdown or signature enforcement (EPERM)",
        libc::EACCES => "IMA appraisal (EACCES)",
        libc::EKEYREJECTED => "the kernel's signature was rejected (EKEYREJECTED)",
        libc::EKEYREVOKED => "the signing key is revoked (EKEYREVOKED)",
        libc::EKEYEXPIRED => "the signing key has expired (EKEYEXPIRED)",
        libc::ENOKEY => "no trusted key matches the signature (ENOKEY)",
        libc::EBADMSG => "the signature is malformed (EBADMSG)",
        libc::ENODATA => "the kernel carries no signature (ENODATA)",
        libc::ENOPKG => "the signature's algorithm is not available (ENOPKG)",
        _ => return None,
    })
}

/// The error for a failed `kexec_file_load`. Either way the caller fails:
/// there is no retry with another syscall.
pub fn file_load_error(
    kernel_fd: i32,
    initrd_fd: i32,
    cmdline_len: usize,
    flags: u64,
    source: io::Error,
) -> KexecError {
    match source.raw_os_error().and_then(refusal_reason) {
        Some(reason) => KexecError::KexecFileLoadRefused {
            kernel_fd,
            initrd_fd,
            cmdline_len,
            flags,
            reason,
            source,
        },
        None => KexecError::KexecFileLoad {
            kernel_fd,
            initrd_fd,
            cmdline_len,
            flags,
            source,
        },
    }
}

/// Syncs and jumps to the loaded kernel with
/// `reboot(LINUX_REBOOT_CMD_KEXEC)`. Returns only if that failed.
pub fn execute(loaded: Loaded) -> KexecError {
    drop(loaded);
    sys::sync();
    match sys::reboot(RebootCommand::Kexec) {
        Err(e) => KexecError::Reboot(e),
        Ok(()) => KexecError::RebootReturned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain;
    use std::io::Write;

    #[test]
    fn policy_refusals_fail_closed_and_say_so() {
        // SECURITY.md row 16: each of these is a refusal, reported as one,
        // and the message says there is no fallback.
        let refusals = [
            libc::EPERM,
            libc::EACCES,
            libc::EKEYREJECTED,
            libc::EKEYREVOKED,
            libc::EKEYEXPIRED,
            libc::ENOKEY,
            libc::EBADMSG,
            libc::ENODATA,
            libc::ENOPKG,
        ];
        for errno in refusals {
            let e = file_load_error(3, 4, 31, 0, io::Error::from_raw_os_error(errno));
            assert!(
                matches!(e, KexecError::KexecFileLoadRefused { .. }),
                "errno {errno}: {e:?}"
            );
            let text = error_chain(&e);
            assert!(
                text.starts_with(
                    "kexec_file_load(kernel_fd=3, initrd_fd=4, cmdline_len=31, flags=0x0) refused: "
                ) && text.contains("failing closed, no fallback to kexec_load"),
                "{text}"
            );
        }
        // Other failures are plain errors with the arguments, not refusals.
        for errno in [libc::ENOEXEC, libc::ENOMEM, libc::EINVAL, libc::ENOSYS] {
            let e = file_load_error(3, -1, 1, 4, io::Error::from_raw_os_error(errno));
            assert!(matches!(e, KexecError::KexecFileLoad { .. }), "{e:?}");
            assert!(error_chain(&e).starts_with(
                "kexec_file_load(kernel_fd=3, initrd_fd=-1, cmdline_len=1, flags=0x4): "
            ));
        }
    }

    #[test]
    fn command_lines_are_checked() {
        assert_eq!(cmdline("a b").unwrap().as_bytes(), b"a b");
        assert!(matches!(
            cmdline("a\0b"),
            Err(KexecError::CmdlineNul { offset: 1 })
        ));
        assert!(cmdline(&"x".repeat(MAX_CMDLINE)).is_ok());
        assert!(matches!(
            cmdline(&"x".repeat(MAX_CMDLINE + 1)),
            Err(KexecError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
    }

    fn sealed(bytes: &[u8]) -> OwnedFd {
        let mut m = crate::sealed::Unsealed::new("test").unwrap();
        m.write(bytes).unwrap();
        m.seal().unwrap().into_fd()
    }

    #[test]
    fn only_sealed_memfds_are_taken() {
        let mut open = std::fs::File::from(sys::memfd_create(c"open").unwrap());
        open.write_all(b"kernel").unwrap();
        let open = OwnedFd::from(open);
        assert!(matches!(
            check_sealed("kernel", &open),
            Err(KexecError::NotSealed { what: "kernel" })
        ));
        // Mapping is refused too, since the bytes could still change.
        assert_eq!(
            sys::mmap_sealed(&open).err().and_then(|e| e.raw_os_error()),
            Some(libc::EPERM)
        );
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        assert!(matches!(
            check_sealed("initrd", &file),
            Err(KexecError::Seals { what: "initrd", .. })
        ));
        let kernel = sealed(b"kernel");
        check_sealed("kernel", &kernel).unwrap();
        assert_eq!(&sys::mmap_sealed(&kernel).unwrap()[..], b"kernel");
        assert_eq!(
            sys::mmap_sealed(sealed(b""))
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::EINVAL)
        );
        // load() checks before it does anything else.
        let e = load(kernel, Some(open), None, "x").unwrap_err();
        assert!(
            matches!(e, KexecError::NotSealed { what: "initrd" }),
            "{e:?}"
        );
    }

    #[test]
    fn syscall_errors_name_the_call_and_arguments() {
        let e = KexecError::KexecLoad {
            entry: 0x4651_2000,
            nr_segments: 4,
            flags: 0,
            segments: "kernel 0x44200000+0x2010000".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(
            error_chain(&e),
            format!(
                "kexec_load(entry=0x46512000, nr_segments=4, flags=0x0) with segments kernel 0x44200000+0x2010000: {}",
                io::Error::from_raw_os_error(libc::EBUSY)
            )
        );
    }
}
