//! The kexec hand-off: load the verified next kernel from sealed memfds, then
//! jump to it.
//!
//! ```text
//! let loaded = kexec::load(kernel, initrd, dtb, &manifest.cmdline, method)?;  // nothing is lost yet
//! let error = kexec::execute(loaded);                                         // returns only on failure
//! ```
//!
//! Which syscall loads the kernel is decided by [`method::decide`] before
//! each attempt, and the hand-off reports the syscall used and why:
//!
//! - **x86_64** has both. `kexec_file_load`: the kernel reads the files
//!   itself and applies its signature and lockdown policy. `kexec_load`:
//!   [`x86_64`] builds the segments (bzImage, initrd, boot_params, a tiny
//!   purgatory), which skips the kernel's SHA-256 passes and works on
//!   kernels without `KEXEC_FILE`. A locked-down or Secure Boot kernel gets
//!   `kexec_file_load` only, and a signature or lockdown refusal from
//!   `kexec_file_load` is final: nothing falls back to loading the same bytes
//!   without the check (SECURITY.md row 16).
//! - **aarch64** uses `kexec_load` with segments built in [`arm64`]: Debian's
//!   arm64 kernel has no `kexec_file_load`.
//!
//! Every file descriptor must be a memfd sealed against writes, shrinking
//! and growing: the bytes the kernel gets are the bytes that were hashed
//! (SECURITY.md row 3). Every syscall error names the syscall and its
//! arguments.

pub mod arm64;
pub mod bootparam;
pub mod bzimage;
pub mod e820;
pub mod efi;
pub mod gzip;
pub mod iomem;
pub mod method;
pub mod x86_64;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use phase_initramfs::image::KexecMethod;
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
    ImageHeader {
        field: &'static str,
        problem: String,
    },
    /// `field` is the setup header's name for what is wrong (boot.rst).
    #[error("not a bzImage a 64-bit loader can take: {problem} ({value:#x})")]
    BzImage {
        field: &'static str,
        problem: &'static str,
        value: u64,
    },
    #[error("/sys/firmware/memmap/{dir}: {problem}")]
    Memmap { dir: String, problem: &'static str },
    #[error("reading {path}")]
    ReadFile {
        path: String,
        #[source]
        source: io::Error,
    },
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
    /// Every syscall [`method::decide`] asked for failed. The text is each
    /// attempt's error in order; `last` is the final attempt's, which names
    /// the failure.
    #[error("{}", attempts_text(tried))]
    Attempts {
        tried: Vec<Attempted>,
        stop: method::Why,
        last: Box<KexecError>,
    },
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC)")]
    Reboot(#[source] io::Error),
    #[error("reboot(LINUX_REBOOT_CMD_KEXEC) returned without starting the next kernel")]
    RebootReturned,
}

/// One syscall that was tried and failed, for the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempted {
    pub syscall: method::Syscall,
    /// Why it was tried.
    pub why: method::Why,
    /// `None` when the init failed before making the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
    /// [`KexecError::kind`] of its error.
    pub kind: &'static str,
    pub error: String,
}

fn attempts_text(tried: &[Attempted]) -> String {
    let mut text = String::new();
    for (i, a) in tried.iter().enumerate() {
        if i > 0 {
            text.push_str("; then, since ");
            text.push_str(a.why.text());
            text.push_str(", ");
        }
        text.push_str(&a.error);
    }
    text
}

/// The names of the errnos the kexec syscalls answer with, for the events;
/// others are shown by number.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSYS => "ENOSYS",
        libc::ENODATA => "ENODATA",
        libc::EBADMSG => "EBADMSG",
        libc::ENOPKG => "ENOPKG",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYREJECTED => "EKEYREJECTED",
        _ => return None,
    })
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
    /// Why this syscall ([`method::decide`]), as a name and a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<method::Why>,
    pub reason: &'static str,
    /// Attempts that failed before this one, with their errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Attempted>,
    /// x86_64 only: what the decision knew.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockdown: Option<method::Lockdown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
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
    /// x86_64 `kexec_load` only: what the next kernel's boot_params carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_params: Option<x86_64::Carried>,
    /// Test builds, arm64: digests of the seeds in the DTB as loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds_sha256: Option<SeedDigests>,
}

/// SHA-256 digests of the DTB's `kaslr-seed` and `rng-seed` (the seeds
/// themselves are never logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedDigests {
    pub kaslr: String,
    pub rng: String,
}

impl Loaded {
    /// A `Loaded` for `syscall` with nothing else known yet.
    pub fn new(syscall: &'static str) -> Loaded {
        Loaded {
            syscall,
            why: None,
            reason: "",
            tried: Vec::new(),
            lockdown: None,
            secure_boot: None,
            entry: None,
            kernel_entry: None,
            segments: Vec::new(),
            kernel_gzip: false,
            dtb: None,
            dropped: Vec::new(),
            image: None,
            boot_params: None,
            seeds_sha256: None,
        }
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        let mut text = self.syscall.to_owned();
        if !self.reason.is_empty() {
            text.push_str(&format!(" ({})", self.reason));
        }
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
        match self.boot_params.as_ref().map(|c| c.efi) {
            None | Some("none") => {}
            Some("kept") => text.push_str(", EFI runtime handed on"),
            Some(why) => text.push_str(&format!(", EFI not handed on: {why}")),
        }
        text
    }
}

/// One segment of a `kexec_load` plan, for the syscall and for the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: &'static str,
    pub bytes: SegmentBytes,
    pub mem: u64,
    pub memsz: u64,
}

/// A segment's bytes: borrowed from the caller's buffers, or built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentBytes {
    Kernel,
    Initrd,
    Owned(Vec<u8>),
}

/// `kernel 0x40200000+0x2010000, dtb …` for error messages.
pub fn describe(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| format!("{} {:#x}+{:#x}", s.name, s.mem, s.memsz))
        .collect::<Vec<_>>()
        .join(", ")
}

impl KexecError {
    /// The errno of a failed kexec syscall; `None` for errors before any.
    pub fn syscall_errno(&self) -> Option<i32> {
        match self {
            KexecError::KexecFileLoad { source, .. }
            | KexecError::KexecFileLoadRefused { source, .. }
            | KexecError::KexecLoad { source, .. } => source.raw_os_error(),
            KexecError::Attempts { last, .. } => last.syscall_errno(),
            _ => None,
        }
    }

    /// A stable snake-case name of the failure, for the `failure` event.
    pub fn kind(&self) -> &'static str {
        use KexecError as E;
        match self {
            E::Seals { .. } | E::NotSealed { .. } => "not_sealed",
            E::CmdlineNul { .. } | E::CmdlineTooLong { .. } => "cmdline",
            E::DtbUnsupported { .. } | E::Unsupported { .. } => "unsupported",
            E::KexecFileLoadRefused { .. } => "kexec_refused",
            E::KexecFileLoad { .. } | E::KexecLoad { .. } => "kexec_failed",
            E::Map { .. } | E::Getrandom { .. } => "error",
            E::Gunzip(_) => "gunzip",
            E::ImageHeader { .. } => "image_header",
            E::BzImage { .. } => "bzimage_header",
            E::Memmap { .. } | E::Iomem { .. } | E::NoRam | E::PageSize { .. } => "memory_map",
            E::ReadFile { .. } | E::Read { .. } => "read",
            E::Dtb { .. } | E::DtbTooLarge { .. } => "dtb",
            E::Place { .. } => "no_room",
            E::Attempts { last, .. } => last.kind(),
            E::Reboot(_) | E::RebootReturned => "reboot",
        }
    }

    /// The failure's values, for the `failure` event (`null` when there
    /// are none worth a test's attention).
    pub fn detail(&self) -> serde_json::Value {
        use KexecError as E;
        use serde_json::json;
        let errno = |e: &io::Error| {
            e.raw_os_error()
                .map(|n| errno_name(n).map_or_else(|| json!(n), |name| json!(name)))
        };
        match self {
            E::NotSealed { what } | E::Seals { what, .. } | E::Map { what, .. } => {
                json!({ "what": what })
            }
            E::CmdlineTooLong { len, max } => json!({ "len": len, "max": max }),
            E::KexecFileLoadRefused { reason, source, .. } => json!({
                "syscall": "kexec_file_load", "errno": errno(source), "refusal": reason,
            }),
            E::KexecFileLoad { source, .. } => {
                json!({ "syscall": "kexec_file_load", "errno": errno(source) })
            }
            E::KexecLoad {
                source,
                nr_segments,
                ..
            } => json!({
                "syscall": "kexec_load", "errno": errno(source), "nr_segments": nr_segments,
            }),
            E::ImageHeader { field, .. } => json!({ "field": field }),
            E::BzImage { field, value, .. } => json!({ "field": field, "value": value }),
            E::Place { what, len, .. } => json!({ "what": what, "len": len }),
            E::Attempts { stop, last, .. } => {
                let mut detail = match last.detail() {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                detail.insert("stop".into(), json!(stop));
                serde_json::Value::Object(detail)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Whether the kernel image was refused by its own bytes (a header that
    /// does not hold, a gzip that does not inflate), before any syscall.
    pub fn refuses_the_image(&self) -> bool {
        matches!(
            self,
            KexecError::ImageHeader { .. } | KexecError::BzImage { .. } | KexecError::Gunzip(_)
        )
    }

    /// The syscalls tried before the failure, in order (empty when the
    /// init failed before any).
    pub fn attempts(&self) -> &[Attempted] {
        match self {
            KexecError::Attempts { tried, .. } => tried,
            _ => &[],
        }
    }
}

/// Runs [`method::decide`] to its end: each attempt it asks for, until one
/// loads the kernel or the decision stops. The error lists every attempt
/// ([`KexecError::Attempts`]).
pub fn drive(
    situation: &method::Situation,
    attempt: &mut dyn FnMut(method::Syscall) -> Result<Loaded, KexecError>,
) -> Result<Loaded, KexecError> {
    let mut attempts = Vec::new();
    let mut tried = Vec::new();
    let mut last = None;
    loop {
        match method::decide(situation, &attempts) {
            method::Decision::Try { syscall, why } => match attempt(syscall) {
                // The image itself is refused before any syscall: no other
                // syscall would take it, and none was tried.
                Err(e) if e.refuses_the_image() => return Err(e),
                Ok(mut loaded) => {
                    loaded.why = Some(why);
                    loaded.reason = why.text();
                    loaded.tried = tried;
                    return Ok(loaded);
                }
                Err(e) => {
                    let errno = e.syscall_errno();
                    attempts.push(method::Attempt { syscall, errno });
                    tried.push(Attempted {
                        syscall,
                        why,
                        errno: errno.map(|n| errno_name(n).unwrap_or("other")),
                        kind: e.kind(),
                        error: crate::error_chain(&e),
                    });
                    last = Some(e);
                }
            },
            method::Decision::Stop { why } => {
                return Err(match last {
                    Some(last) => KexecError::Attempts {
                        tried,
                        stop: why,
                        last: Box::new(last),
                    },
                    // decide() never stops before a first attempt.
                    None => KexecError::Unsupported {
                        arch: std::env::consts::ARCH,
                    },
                });
            }
        }
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
/// each a sealed memfd, and the signed command line verbatim, with the
/// image's configured `method`. Nothing is lost on failure: the running
/// system is untouched and the caller takes its failure policy.
pub fn load(
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: &str,
    method: KexecMethod,
) -> Result<Loaded, KexecError> {
    check_sealed("kernel", &kernel)?;
    if let Some(fd) = &initrd {
        check_sealed("initrd", fd)?;
    }
    if let Some(fd) = &dtb {
        check_sealed("dtb", fd)?;
    }
    let cmdline = self::cmdline(cmdline)?;
    load_arch(kernel, initrd, dtb, &cmdline, method)
}

#[cfg(target_arch = "x86_64")]
fn load_arch(
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    dtb: Option<OwnedFd>,
    cmdline: &std::ffi::CStr,
    method: KexecMethod,
) -> Result<Loaded, KexecError> {
    if dtb.is_some() {
        return Err(KexecError::DtbUnsupported { arch: "x86_64" });
    }
    // Both syscalls take only a 64-bit bzImage (the kernel's own loader,
    // kexec_bzImage64_probe, checks the same header), so one whose header
    // does not hold is refused here, before either is asked.
    let image = sys::mmap_sealed(kernel.as_fd()).map_err(|source| KexecError::Map {
        what: "kernel",
        fd: std::os::fd::AsRawFd::as_raw_fd(&kernel),
        source,
    })?;
    bzimage::SetupHeader::parse(&image)?;
    drop(image);
    let running = x86_64::read_running();
    let situation = x86_64::situation(method, running.as_deref());
    let mut loaded = drive(&situation, &mut |syscall| match syscall {
        method::Syscall::FileLoad => file_load(&kernel, initrd.as_ref(), cmdline),
        method::Syscall::Load => load_x86_64(&kernel, initrd.as_ref(), cmdline, running.as_deref()),
    })?;
    loaded.lockdown = Some(situation.lockdown);
    loaded.secure_boot = Some(situation.secure_boot);
    Ok(loaded)
}

#[cfg(all(target_arch = "x86_64", feature = "x86-kexec-load"))]
fn load_x86_64(
    kernel: &OwnedFd,
    initrd: Option<&OwnedFd>,
    cmdline: &std::ffi::CStr,
    running: Option<&[u8; bootparam::ZERO_PAGE_LEN]>,
) -> Result<Loaded, KexecError> {
    x86_64::load(kernel, initrd, cmdline, running)
}

#[cfg(all(target_arch = "x86_64", not(feature = "x86-kexec-load")))]
fn load_x86_64(
    _kernel: &OwnedFd,
    _initrd: Option<&OwnedFd>,
    _cmdline: &std::ffi::CStr,
    _running: Option<&[u8; bootparam::ZERO_PAGE_LEN]>,
) -> Result<Loaded, KexecError> {
    Err(KexecError::Unsupported {
        arch: "x86_64 kexec_load in this init (built without the x86-kexec-load feature)",
    })
}

#[cfg(target_arch = "x86_64")]
fn file_load(
    kernel: &OwnedFd,
    initrd: Option<&OwnedFd>,
    cmdline: &std::ffi::CStr,
) -> Result<Loaded, KexecError> {
    use std::os::fd::AsRawFd;
    let flags = 0;
    match sys::kexec_file_load(kernel.as_fd(), initrd.map(|fd| fd.as_fd()), cmdline, flags) {
        Ok(()) => Ok(Loaded::new("kexec_file_load")),
        Err(source) => Err(file_load_error(
            kernel.as_raw_fd(),
            initrd.map_or(-1, |fd| fd.as_raw_fd()),
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
    method: KexecMethod,
) -> Result<Loaded, KexecError> {
    // Lockdown is not read: kexec_load is the only syscall here, and a
    // locked-down kernel refuses it itself.
    let situation = method::Situation {
        arch: method::Arch::Aarch64,
        method,
        lockdown: method::Lockdown::Unknown,
        secure_boot: false,
    };
    drive(&situation, &mut |syscall| match syscall {
        method::Syscall::Load => arm64::load(&kernel, initrd.as_ref(), dtb.as_ref(), cmdline),
        method::Syscall::FileLoad => Err(KexecError::Unsupported {
            arch: "aarch64 kexec_file_load",
        }),
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn load_arch(
    _kernel: OwnedFd,
    _initrd: Option<OwnedFd>,
    _dtb: Option<OwnedFd>,
    _cmdline: &std::ffi::CStr,
    _method: KexecMethod,
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
        let e = load(kernel, Some(open), None, "x", KexecMethod::Auto).unwrap_err();
        assert!(
            matches!(e, KexecError::NotSealed { what: "initrd" }),
            "{e:?}"
        );
    }

    #[test]
    fn drive_reports_the_syscall_the_reason_and_what_failed_first() {
        let situation = method::Situation {
            arch: method::Arch::X86_64,
            method: KexecMethod::File,
            lockdown: method::Lockdown::None,
            secure_boot: false,
        };
        let enosys = || file_load_error(3, -1, 2, 4, io::Error::from_raw_os_error(libc::ENOSYS));
        let load_error = |errno| KexecError::KexecLoad {
            entry: 0x10_2000,
            nr_segments: 3,
            flags: 0,
            segments: "kernel 0x1000000+0x3f98000".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        // kexec_file_load is missing: kexec_load loads, and says why.
        let mut calls = Vec::new();
        let loaded = drive(&situation, &mut |syscall| {
            calls.push(syscall);
            match syscall {
                method::Syscall::FileLoad => Err(enosys()),
                method::Syscall::Load => Ok(Loaded::new("kexec_load")),
            }
        })
        .unwrap();
        assert_eq!(calls, [method::Syscall::FileLoad, method::Syscall::Load]);
        assert_eq!(loaded.why, Some(method::Why::FileLoadMissing));
        assert_eq!(
            loaded.reason,
            "kexec_file_load is not in this kernel (ENOSYS) and it is not locked down"
        );
        assert_eq!(loaded.tried.len(), 1);
        assert!(
            loaded.tried[0]
                .error
                .starts_with("kexec_file_load(kernel_fd=3")
        );
        let event = serde_json::to_value(&loaded).unwrap();
        assert_eq!(event["syscall"], "kexec_load");
        assert_eq!(event["why"], "file_load_missing");
        assert_eq!(
            event["tried"],
            serde_json::json!([{
                "syscall": "kexec_file_load", "why": "method_file", "errno": "ENOSYS",
                "kind": "kexec_failed", "error": loaded.tried[0].error,
            }])
        );
        assert!(
            loaded
                .summary()
                .starts_with("kexec_load (kexec_file_load is not in this kernel")
        );
        // Both fail: one error naming both calls, in order.
        let e = drive(&situation, &mut |syscall| match syscall {
            method::Syscall::FileLoad => Err(enosys()),
            method::Syscall::Load => Err(load_error(libc::EPERM)),
        })
        .unwrap_err();
        let text = error_chain(&e);
        assert!(
            text.starts_with(
                "kexec_file_load(kernel_fd=3, initrd_fd=-1, cmdline_len=2, flags=0x4): "
            ) && text.contains("; then, since kexec_file_load is not in this kernel (ENOSYS)")
                && text.contains(", kexec_load(entry=0x102000, nr_segments=3, flags=0x0)"),
            "{text}"
        );
        // As data: the last call names the failure, every call is listed.
        assert_eq!(e.kind(), "kexec_failed");
        assert_eq!(
            e.detail(),
            serde_json::json!({
                "syscall": "kexec_load", "errno": "EPERM", "nr_segments": 3, "stop": "both_tried",
            })
        );
        let tried: Vec<_> = e
            .attempts()
            .iter()
            .map(|a| (a.syscall, a.why, a.errno))
            .collect();
        assert_eq!(
            tried,
            [
                (
                    method::Syscall::FileLoad,
                    method::Why::MethodFile,
                    Some("ENOSYS")
                ),
                (
                    method::Syscall::Load,
                    method::Why::FileLoadMissing,
                    Some("EPERM")
                ),
            ]
        );
        // A refusal is returned as it is, and nothing else is called.
        let mut calls = 0;
        let e = drive(&situation, &mut |_| {
            calls += 1;
            Err(file_load_error(
                3,
                4,
                2,
                0,
                io::Error::from_raw_os_error(libc::EKEYREJECTED),
            ))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(e.kind(), "kexec_refused");
        assert_eq!(
            e.detail(),
            serde_json::json!({
                "syscall": "kexec_file_load", "errno": "EKEYREJECTED",
                "refusal": "the kernel's signature was rejected (EKEYREJECTED)",
                "stop": "policy_refusal",
            })
        );
        assert_eq!(e.attempts().len(), 1);
        // One attempt: the text is that attempt's error alone.
        assert!(
            error_chain(&e)
                .contains("failing closed, no fallback to kexec_load: Key was rejected by service"),
            "{}",
            error_chain(&e)
        );
        // An image refused by its own bytes (arm64 parses its header inside
        // the attempt) is returned as it is: no syscall was tried.
        let e = drive(&situation, &mut |_| {
            Err(KexecError::ImageHeader {
                field: "magic",
                problem: "bad".into(),
            })
        })
        .unwrap_err();
        assert_eq!(e.kind(), "image_header");
        assert!(e.attempts().is_empty());
    }

    /// A bzImage whose header does not hold is refused before either
    /// syscall, whatever the method, and the error names the field. (Only
    /// images that fail are given: this runs on the build host.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_bad_bzimage_is_refused_before_any_syscall() {
        let mut garbage = bzimage::tests::image(0x1000);
        garbage[bzimage::at::HEADER] ^= 0xff;
        for method in [KexecMethod::File, KexecMethod::Load, KexecMethod::Auto] {
            for (bytes, field) in [(&garbage[..], "header"), (&b"MZ"[..], "length")] {
                let e =
                    load(sealed(bytes), Some(sealed(b"initrd")), None, "x", method).unwrap_err();
                assert_eq!(
                    (e.kind(), e.detail()["field"].as_str()),
                    ("bzimage_header", Some(field))
                );
                assert!(e.attempts().is_empty(), "{e:?}");
            }
        }
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
