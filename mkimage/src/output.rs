//! Writing an image where `--out` says, without ever losing what was there.
//!
//! - **A file** is written to a temporary file beside it,
//!   `.<name>.mkimage-<pid>.tmp`, seeking over zeros (so a raw disk image is
//!   a sparse file), then flushed (`fsync`), renamed over the target and
//!   the directory flushed. A failed run removes the temporary file and
//!   leaves the old output as it was; a run killed mid-write leaves at most
//!   that temporary file, which the next run writing the same output
//!   removes once the process its name carries is gone.
//! - **A block device** (`--out /dev/sdX`, writing a USB stick) is written
//!   in place, zeros included, and flushed before success is reported. A
//!   device that is mounted — it or any of its partitions, by major:minor
//!   in `/proc/self/mountinfo` —, used as swap, or held by another device
//!   (device mapper, RAID) is refused; it is opened with `O_EXCL`, so the
//!   kernel refuses one in use even if those checks missed it.
//!   [`Output::device`] describes what is about to be overwritten.
//! - **`-`** is standard output (refused when it is a terminal); a character
//!   device or a FIFO is written as a stream too. Nothing here ever creates
//!   a file named `-`.
//!
//! Before anything is written, [`Output::refuse_inputs`] makes sure the
//! output is none of the inputs: same device and inode, so a hard link or a
//! symlink to an input is caught as well as the same path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::pieces::Sink;

#[derive(Debug, Error)]
pub enum OutputError {
    #[error(
        "the output {} is the {what} {} (the same file): writing it would destroy that input; choose another output path",
        out.display(),
        input.display()
    )]
    IsInput {
        out: PathBuf,
        what: String,
        input: PathBuf,
    },
    #[error("the output {} is a directory; name a file in it", .0.display())]
    Directory(PathBuf),
    #[error("the output {} is a symlink to {}, which does not exist", path.display(), target.display())]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error("the output's directory {} does not exist", .0.display())]
    NoDirectory(PathBuf),
    #[error("the output {} is a socket, not a file or a device", .0.display())]
    Socket(PathBuf),
    #[error("standard output is a terminal: redirect it (`--out - > FILE`) or name a file")]
    Terminal,
    #[error("inspecting {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{} is mounted ({device} on {mountpoint}); unmount it before writing an image to it", path.display())]
    Mounted {
        path: PathBuf,
        device: String,
        mountpoint: String,
    },
    #[error("{} is in use as swap ({swap}); swapoff it first", path.display())]
    Swap { path: PathBuf, swap: String },
    #[error("{} is held by {holders} (device mapper, RAID or similar); release it first", path.display())]
    Held { path: PathBuf, holders: String },
    #[error("the image is {len} bytes, but {} holds only {size}", path.display())]
    DeviceTooSmall { path: PathBuf, len: u64, size: u64 },
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("creating the temporary file {}", path.display())]
    CreateTemp {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("the image writer produced {wrote} bytes for {}, not the {len} it laid out", path.display())]
    Length { path: PathBuf, wrote: u64, len: u64 },
    #[error("flushing {} to disk", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("renaming {} to {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        error: io::Error,
    },
}

/// `O_EXCL` (the same value on x86_64 and aarch64 Linux). Opening a block
/// device with it and without `O_CREAT` fails with EBUSY while the device
/// is mounted or otherwise claimed by the kernel.
const O_EXCL: i32 = 0o200;

/// A device number as major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Splits a `dev_t` as glibc's `major()`/`minor()` do.
    pub fn from_raw(dev: u64) -> DevNum {
        DevNum {
            major: (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32,
            minor: ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32,
        }
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A block device about to be written, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub dev: DevNum,
    /// Bytes.
    pub size: u64,
    /// Vendor and model, when the device reports them.
    pub model: Option<String>,
    /// For a loop device, the file behind it.
    pub backing_file: Option<String>,
    /// (name, device number, bytes) of each partition.
    pub partitions: Vec<(String, DevNum, u64)>,
}

impl Device {
    /// One line for the user: what is about to be overwritten.
    pub fn describe(&self, path: &Path) -> String {
        let mut s = format!(
            "{} ({}, {})",
            path.display(),
            self.dev,
            human_bytes(self.size)
        );
        if let Some(m) = &self.model {
            s.push_str(&format!(", {m}"));
        }
        if let Some(b) = &self.backing_file {
            s.push_str(&format!(", backed by {b}"));
        }
        if self.partitions.is_empty() {
            s.push_str(", no partitions");
        } else {
            let parts: Vec<String> = self
                .partitions
                .iter()
                .map(|(n, _, size)| format!("{n} {}", human_bytes(*size)))
                .collect();
            s.push_str(&format!(", partitions: {}", parts.join(", ")));
        }
        s
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(Debug, Clone)]
enum Target {
    /// A regular file (or none yet) at this resolved path.
    File {
        path: PathBuf,
        existing: bool,
    },
    Device {
        path: PathBuf,
        device: Device,
    },
    /// A character device or FIFO, written front to back.
    Stream(PathBuf),
    Stdout,
}

/// Where an image goes.
#[derive(Debug, Clone)]
pub struct Output {
    /// As the user gave it.
    pub path: PathBuf,
    target: Target,
}

impl Output {
    /// Classifies `path`: `-` is standard output; a block device, a
    /// character device or FIFO, or a file (following symlinks). Refuses
    /// directories, dangling symlinks, a terminal as standard output and,
    /// for a block device, one that is mounted, swap or held.
    pub fn new(path: &Path) -> Result<Output, OutputError> {
        if path.as_os_str() == "-" {
            if io::stdout().is_terminal() {
                return Err(OutputError::Terminal);
            }
            return Ok(Output {
                path: path.to_owned(),
                target: Target::Stdout,
            });
        }
        let target = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = parent_dir(path);
                if !dir.is_dir() {
                    return Err(OutputError::NoDirectory(dir));
                }
                Target::File {
                    path: path.to_owned(),
                    existing: false,
                }
            }
            Err(error) => {
                return Err(OutputError::Stat {
                    path: path.to_owned(),
                    error,
                });
            }
            Ok(meta) => {
                let resolved = if meta.file_type().is_symlink() {
                    match fs::canonicalize(path) {
                        Ok(p) => p,
                        Err(_) => {
                            return Err(OutputError::DanglingSymlink {
                                path: path.to_owned(),
                                target: fs::read_link(path).unwrap_or_default(),
                            });
                        }
                    }
                } else {
                    path.to_owned()
                };
                let meta = fs::metadata(&resolved).map_err(|error| OutputError::Stat {
                    path: resolved.clone(),
                    error,
                })?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    return Err(OutputError::Directory(path.to_owned()));
                } else if ft.is_block_device() {
                    let dev = DevNum::from_raw(meta.rdev());
                    let device = inspect_device(&resolved, dev)?;
                    Target::Device {
                        path: resolved,
                        device,
                    }
                } else if ft.is_char_device() || ft.is_fifo() {
                    Target::Stream(resolved)
                } else if ft.is_socket() {
                    return Err(OutputError::Socket(path.to_owned()));
                } else {
                    Target::File {
                        path: resolved,
                        existing: true,
                    }
                }
            }
        };
        Ok(Output {
            path: path.to_owned(),
            target,
        })
    }

    /// Whether the image goes to standard output (the summary then goes to
    /// standard error).
    pub fn is_stdout(&self) -> bool {
        matches!(self.target, Target::Stdout)
    }

    /// The block device about to be overwritten, if the output is one.
    pub fn device(&self) -> Option<&Device> {
        match &self.target {
            Target::Device { device, .. } => Some(device),
            _ => None,
        }
    }

    /// Refuses an output that is one of `inputs` (what, path): the same
    /// device and inode, or the same block device.
    pub fn refuse_inputs(&self, inputs: &[(String, PathBuf)]) -> Result<(), OutputError> {
        let probe = match &self.target {
            Target::File {
                existing: false, ..
            } => return Ok(()),
            Target::File { path, .. } | Target::Device { path, .. } | Target::Stream(path) => {
                path.clone()
            }
            // What standard output was redirected to, when it is a file.
            Target::Stdout => PathBuf::from("/proc/self/fd/1"),
        };
        let Ok(out) = fs::metadata(&probe) else {
            return Ok(());
        };
        if !(out.is_file() || out.file_type().is_block_device()) {
            // /dev/null, a pipe: nothing an input could be.
            return Ok(());
        }
        for (what, input) in inputs {
            let Ok(m) = fs::metadata(input) else { continue };
            let same_inode = m.dev() == out.dev() && m.ino() == out.ino();
            let same_device = m.file_type().is_block_device()
                && out.file_type().is_block_device()
                && m.rdev() == out.rdev();
            if same_inode || same_device {
                return Err(OutputError::IsInput {
                    out: self.path.clone(),
                    what: what.clone(),
                    input: input.clone(),
                });
            }
        }
        Ok(())
    }

    /// Writes an image of `len` bytes that `fill` produces. `progress` is
    /// told how many bytes went out after each write.
    pub fn write(
        &self,
        len: u64,
        progress: &dyn Fn(u64),
        fill: impl FnOnce(&mut dyn Sink) -> io::Result<()>,
    ) -> Result<(), OutputError> {
        match &self.target {
            Target::File { path, existing } => write_file(path, *existing, len, progress, fill),
            Target::Device { path, device } => {
                if len > device.size {
                    return Err(OutputError::DeviceTooSmall {
                        path: path.clone(),
                        len,
                        size: device.size,
                    });
                }
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(O_EXCL)
                    .open(path)
                    .map_err(|error| OutputError::Open {
                        path: path.clone(),
                        error,
                    })?;
                let mut sink = Counted::new(Plain::new(&file), progress);
                let wrote = fill_and_flush(&mut sink, fill, path)?;
                check_length(path, wrote, len)?;
                file.sync_all().map_err(|error| OutputError::Sync {
                    path: path.clone(),
                    error,
                })
            }
            Target::Stream(path) => {
                let file = OpenOptions::new().write(true).open(path).map_err(|error| {
                    OutputError::Open {
                        path: path.clone(),
                        error,
                    }
                })?;
                let mut sink = Counted::new(Plain::new(&file), progress);
                let wrote = fill_and_flush(&mut sink, fill, path)?;
                check_length(path, wrote, len)
            }
            Target::Stdout => {
                let path = PathBuf::from("standard output");
                let stdout = io::stdout();
                let mut sink = Counted::new(Plain::new(stdout.lock()), progress);
                let wrote = fill_and_flush(&mut sink, fill, &path)?;
                check_length(&path, wrote, len)
            }
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn check_length(path: &Path, wrote: u64, len: u64) -> Result<(), OutputError> {
    if wrote != len {
        return Err(OutputError::Length {
            path: path.to_owned(),
            wrote,
            len,
        });
    }
    Ok(())
}

fn fill_and_flush<W: Write>(
    sink: &mut Counted<'_, Plain<W>>,
    fill: impl FnOnce(&mut dyn Sink) -> io::Result<()>,
    path: &Path,
) -> Result<u64, OutputError> {
    let err = |error| OutputError::Write {
        path: path.to_owned(),
        error,
    };
    fill(sink).map_err(err)?;
    sink.inner.w.flush().map_err(err)?;
    Ok(sink.pos)
}

/// The temporary file name for `target`'s name and a process id.
pub fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.mkimage-{pid}.tmp")
}

/// The process id in a temporary file name of ours for `name`, if it is one.
fn temp_pid(file: &str, name: &str) -> Option<u32> {
    file.strip_prefix(&format!(".{name}.mkimage-"))?
        .strip_suffix(".tmp")?
        .parse()
        .ok()
}

/// Removes temporary files of ours for `name` in `dir` whose process is
/// gone (a run that was killed). Best effort: without /proc nothing is
/// removed.
fn remove_stale_temps(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = temp_pid(&file.to_string_lossy(), name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes the temporary file unless the write was committed.
struct TempGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn write_file(
    target: &Path,
    existing: bool,
    len: u64,
    progress: &dyn Fn(u64),
    fill: impl FnOnce(&mut dyn Sink) -> io::Result<()>,
) -> Result<(), OutputError> {
    let dir = parent_dir(target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    remove_stale_temps(&dir, &name);
    let temp = dir.join(temp_name(&name, std::process::id()));
    // A file of that name can only be left by an earlier process with our
    // pid, which is gone: ours to remove.
    let _ = fs::remove_file(&temp);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|error| OutputError::CreateTemp {
            path: temp.clone(),
            error,
        })?;
    let mut guard = TempGuard {
        path: temp.clone(),
        keep: false,
    };
    let err = |error| OutputError::Write {
        path: temp.clone(),
        error,
    };
    if existing && let Ok(old) = fs::metadata(target) {
        // The new file keeps the old one's permissions.
        fs::set_permissions(&temp, fs::Permissions::from_mode(old.mode() & 0o7777)).map_err(err)?;
    }
    let mut sink = Counted::new(SparseFile::new(&file), progress);
    fill(&mut sink).map_err(err)?;
    let wrote = sink.pos;
    sink.inner.finish().map_err(err)?;
    check_length(target, wrote, len)?;
    file.sync_all().map_err(|error| OutputError::Sync {
        path: temp.clone(),
        error,
    })?;
    drop(file);
    fs::rename(&temp, target).map_err(|error| OutputError::Rename {
        from: temp.clone(),
        to: target.to_owned(),
        error,
    })?;
    guard.keep = true;
    // The rename is durable once the directory is.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| OutputError::Sync { path: dir, error })
}

/// Counts bytes and reports progress.
struct Counted<'p, S> {
    inner: S,
    pos: u64,
    progress: &'p dyn Fn(u64),
}

impl<'p, S: Sink> Counted<'p, S> {
    fn new(inner: S, progress: &'p dyn Fn(u64)) -> Self {
        Counted {
            inner,
            pos: 0,
            progress,
        }
    }
}

impl<S: Sink> Sink for Counted<'_, S> {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.data(bytes)?;
        self.pos += bytes.len() as u64;
        (self.progress)(bytes.len() as u64);
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> io::Result<()> {
        self.inner.zeros(n)?;
        self.pos += n;
        (self.progress)(n);
        Ok(())
    }
}

/// Writes everything, zeros included: devices, pipes, standard output.
struct Plain<W: Write> {
    w: io::BufWriter<W>,
}

impl<W: Write> Plain<W> {
    fn new(w: W) -> Self {
        Plain {
            w: io::BufWriter::with_capacity(1 << 20, w),
        }
    }
}

static ZEROS: [u8; 65536] = [0; 65536];

impl<W: Write> Sink for Plain<W> {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }
    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.w.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// Blocks of this size that are all zeros are seeked over, not written.
const HOLE: u64 = 4096;

/// A fresh file written with holes where the image has zeros.
struct SparseFile<'f> {
    file: &'f File,
    pos: u64,
    /// Zeros passed over since the last write.
    skip: u64,
}

impl<'f> SparseFile<'f> {
    fn new(file: &'f File) -> Self {
        SparseFile {
            file,
            pos: 0,
            skip: 0,
        }
    }

    fn write_run(&mut self, run: &[u8]) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if self.skip > 0 {
            // Images are far below 2^63 bytes.
            (&*self.file).seek(SeekFrom::Current(self.skip as i64))?;
            self.skip = 0;
        }
        (&*self.file).write_all(run)
    }

    /// Sets the length, which also makes the trailing zeros a hole.
    fn finish(&mut self) -> io::Result<()> {
        self.file.set_len(self.pos)
    }
}

impl Sink for SparseFile<'_> {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut i = 0usize;
        let mut run_start = 0usize;
        while i < bytes.len() {
            // Up to the next HOLE boundary of the file position.
            let at = self.pos + i as u64;
            let n = ((HOLE - at % HOLE) as usize).min(bytes.len() - i);
            let block = &bytes[i..i + n];
            if n as u64 == HOLE && block.iter().fold(0u8, |a, &b| a | b) == 0 {
                let run = &bytes[run_start..i];
                self.write_run(run)?;
                self.skip += HOLE;
                run_start = i + n;
            }
            i += n;
        }
        let run = &bytes[run_start..];
        self.write_run(run)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> io::Result<()> {
        self.skip += n;
        self.pos += n;
        Ok(())
    }
}

/// The device numbers of mounts listed in a `/proc/self/mountinfo` text:
/// (device, mount point).
pub fn mounts(mountinfo: &str) -> Vec<(DevNum, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let dev = fields.nth(2)?;
            let mountpoint = fields.nth(1)?;
            let (major, minor) = dev.split_once(':')?;
            Some((
                DevNum {
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                },
                mountpoint.to_owned(),
            ))
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Reads what sysfs knows about the block device `dev` at `path` and
/// refuses one that is mounted, swap or held.
fn inspect_device(path: &Path, dev: DevNum) -> Result<Device, OutputError> {
    let sys = PathBuf::from(format!("/sys/dev/block/{dev}"));
    let sectors = read_trimmed(&sys.join("size")).and_then(|s| s.parse::<u64>().ok());
    let size = match sectors {
        Some(s) => s * 512,
        None => File::open(path)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .map_err(|error| OutputError::Open {
                path: path.to_owned(),
                error,
            })?,
    };
    let model = {
        let parts: Vec<String> = ["device/vendor", "device/model"]
            .iter()
            .filter_map(|f| read_trimmed(&sys.join(f)))
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    };
    let backing_file = read_trimmed(&sys.join("loop/backing_file"));
    let mut partitions = Vec::new();
    if let Ok(entries) = fs::read_dir(&sys) {
        for e in entries.flatten() {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            let Some(num) = read_trimmed(&p.join("dev")).and_then(|d| {
                let (a, b) = d.split_once(':')?;
                Some(DevNum {
                    major: a.parse().ok()?,
                    minor: b.parse().ok()?,
                })
            }) else {
                continue;
            };
            let psize = read_trimmed(&p.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                * 512;
            partitions.push((e.file_name().to_string_lossy().into_owned(), num, psize));
        }
    }
    partitions.sort();
    let device = Device {
        dev,
        size,
        model,
        backing_file,
        partitions,
    };
    let mut ours: Vec<(String, DevNum, PathBuf)> = vec![(path.display().to_string(), dev, sys)];
    for (name, num, _) in &device.partitions {
        ours.push((
            format!("partition {name}"),
            *num,
            PathBuf::from(format!("/sys/dev/block/{num}")),
        ));
    }
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").map_err(|error| OutputError::Stat {
            path: PathBuf::from("/proc/self/mountinfo"),
            error,
        })?;
    let mounted = mounts(&mountinfo);
    for (what, num, sys) in &ours {
        if let Some((_, mp)) = mounted.iter().find(|(d, _)| d == num) {
            return Err(OutputError::Mounted {
                path: path.to_owned(),
                device: format!("{what}, {num}"),
                mountpoint: mp.clone(),
            });
        }
        let holders: Vec<String> = fs::read_dir(sys.join("holders"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(OutputError::Held {
                path: path.to_owned(),
                holders: holders.join(", "),
            });
        }
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let Some(swap) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(m) = fs::metadata(swap)
                && m.file_type().is_block_device()
                && ours
                    .iter()
                    .any(|(_, n, _)| *n == DevNum::from_raw(m.rdev()))
            {
                return Err(OutputError::Swap {
                    path: path.to_owned(),
                    swap: swap.to_owned(),
                });
            }
        }
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_numbers() {
        let text = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    30 22 7:1 / /mnt/usb rw - vfat /dev/loop1p1 rw\n\
                    31 22 0:45 / /tmp/x rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mounts(text),
            [
                (
                    DevNum {
                        major: 254,
                        minor: 0
                    },
                    "/".to_owned()
                ),
                (DevNum { major: 7, minor: 1 }, "/mnt/usb".to_owned()),
                (
                    DevNum {
                        major: 0,
                        minor: 45
                    },
                    "/tmp/x".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn dev_t_splits_like_glibc() {
        // makedev(259, 65537): minor bits above 8 go to bits 20..
        let dev = (259u64 << 8) | (65537u64 & 0xff) | ((65537u64 & !0xff) << 12);
        assert_eq!(
            DevNum::from_raw(dev),
            DevNum {
                major: 259,
                minor: 65537
            }
        );
        assert_eq!(DevNum::from_raw(0x0701), DevNum { major: 7, minor: 1 });
    }

    #[test]
    fn temp_names_are_recognised() {
        let t = temp_name("usb.img", 4242);
        assert_eq!(t, ".usb.img.mkimage-4242.tmp");
        assert_eq!(temp_pid(&t, "usb.img"), Some(4242));
        assert_eq!(temp_pid(&t, "usb"), None);
        assert_eq!(temp_pid(".usb.img.mkimage-x.tmp", "usb.img"), None);
    }

    #[test]
    fn a_sparse_file_reads_back_as_written_and_has_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut want = vec![0u8; 1 << 20];
        want[10] = 1;
        want[8192 + 5000] = 2; // straddles nothing: inside one block
        want[(1 << 20) - 1] = 3;
        let out = Output::new(&path).unwrap();
        out.write(want.len() as u64 + (8 << 20), &|_| {}, |s| {
            s.data(&want[..5000])?;
            s.data(&want[5000..])?;
            s.zeros(8 << 20)
        })
        .unwrap();
        let got = fs::read(&path).unwrap();
        assert_eq!(&got[..want.len()], &want[..]);
        assert!(got[want.len()..].iter().all(|&b| b == 0));
        let blocks = fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 < 64 << 10, "{blocks} blocks allocated");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }
}
