//! The newc ("SVR4 with no CRC") cpio format the kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Every header is `070701` followed by thirteen 8-digit upper-case hex
//! fields; the name (with its NUL) and the file data are each padded to a
//! multiple of four bytes. Output is canonical: entries sorted by path (a
//! directory always precedes what it contains, since a path sorts after its
//! prefixes), inode numbers counted from 1 in that order, owner 0:0, one
//! timestamp for all, and the archive padded to 512 bytes as GNU cpio does.

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpioError {
    #[error("path {path:?} {reason}")]
    BadPath { path: String, reason: String },
    #[error("symlink /{path} has target {target:?}, which {reason}")]
    BadTarget {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error(
        "/{path} is a directory holding /{child}; a {kind} in its place would put /{child} wherever it leads, or nowhere"
    )]
    ReplacesDirectory {
        path: String,
        kind: &'static str,
        child: String,
    },
    #[error("cpio entry {path:?} is {size} bytes; newc stores sizes in 32 bits")]
    TooLarge { path: String, size: usize },
    #[error("/{path} is a {existing}, so nothing can go under it")]
    NotADirectory {
        path: String,
        existing: &'static str,
    },
    #[error("cpio mtime {0} does not fit newc's 32-bit field")]
    Mtime(u64),
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

impl Kind {
    fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev { .. } => "character device",
            Kind::BlockDev { .. } => "block device",
        }
    }
}

/// One archive member: permission bits (without the type) and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub kind: Kind,
}

/// An archive being assembled. Adding a path twice replaces the first one, so
/// a spec can override what it includes.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// The longest name of one path component (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// The longest path with its NUL (PATH_MAX): the kernel's unpacker refuses
/// longer names.
pub const PATH_MAX: usize = 4096;

/// Checks an archive path and returns it without the leading `/`: `/a/b`
/// → `a/b`. Refuses what the kernel would refuse or read otherwise: empty
/// paths and components (`a//b`, a trailing `/`), `.` and `..`, NUL, a
/// component longer than NAME_MAX, a path longer than PATH_MAX.
pub fn normalize(path: &str) -> Result<String, CpioError> {
    let bad = |reason: String| CpioError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad(
            "holds a NUL byte, where the kernel would cut the name".into()
        ));
    }
    let rel = path.strip_prefix('/').unwrap_or(path);
    if rel.is_empty() {
        return Err(bad(
            "is empty: it names no entry (the root is implied)".into()
        ));
    }
    for part in rel.split('/') {
        match part {
            "" => return Err(bad("has an empty component (// or a trailing /)".into())),
            "." | ".." => {
                return Err(bad(format!(
                    "has a {part:?} component; write the path it means"
                )));
            }
            _ if part.len() > NAME_MAX => {
                return Err(bad(format!(
                    "has a component of {} bytes; names are at most {NAME_MAX}",
                    part.len()
                )));
            }
            _ => {}
        }
    }
    if rel.len() + 1 > PATH_MAX {
        return Err(bad(format!(
            "is {} bytes; with its NUL a path is at most {PATH_MAX} ({} bytes)",
            rel.len(),
            PATH_MAX - 1
        )));
    }
    Ok(rel.to_owned())
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an entry; missing parent directories are added with
    /// mode 0755.
    pub fn add(&mut self, path: &str, mode: u32, kind: Kind) -> Result<(), CpioError> {
        let path = normalize(path)?;
        if let Kind::Symlink(target) = &kind {
            let reason = if target.is_empty() {
                Some("is empty")
            } else if target.contains('\0') {
                Some("holds a NUL byte")
            } else if target.len() + 1 > PATH_MAX {
                Some("is longer than PATH_MAX")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(CpioError::BadTarget {
                    path,
                    target: target.clone(),
                    reason,
                });
            }
        }
        // A directory with entries under it stays one: anything else in its
        // place would have the kernel write those entries through it (a
        // symlink to /etc) or fail on them.
        if kind != Kind::Dir
            && let Some(child) = self.first_child(&path)
        {
            return Err(CpioError::ReplacesDirectory {
                path,
                kind: kind.describe(),
                child,
            });
        }
        if let Kind::File(data) = &kind
            && u32::try_from(data.len()).is_err()
        {
            return Err(CpioError::TooLarge {
                path,
                size: data.len(),
            });
        }
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(other) => {
                    return Err(CpioError::NotADirectory {
                        path: parent,
                        existing: other.kind.describe(),
                    });
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            mode: 0o755,
                            kind: Kind::Dir,
                        },
                    );
                }
            }
        }
        self.entries.insert(
            path,
            Entry {
                mode: mode & 0o7777,
                kind,
            },
        );
        Ok(())
    }

    /// The first entry under `dir`, if any.
    fn first_child(&self, dir: &str) -> Option<String> {
        let prefix = format!("{dir}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&prefix))
            .cloned()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Total bytes of file contents.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len() as u64,
                Kind::Symlink(t) => t.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive with every timestamp set to `mtime`.
    pub fn to_bytes(&self, mtime: u64) -> Result<Vec<u8>, CpioError> {
        let mtime = u32::try_from(mtime).map_err(|_| CpioError::Mtime(mtime))?;
        // Every entry's parent is a directory in the archive: add() keeps it
        // so, and the kernel's unpacker relies on it.
        for path in self.entries.keys() {
            if let Some((parent, _)) = path.rsplit_once('/') {
                match self.entries.get(parent) {
                    Some(Entry {
                        kind: Kind::Dir, ..
                    }) => {}
                    other => {
                        return Err(CpioError::NotADirectory {
                            path: parent.to_owned(),
                            existing: other.map_or("missing entry", |e| e.kind.describe()),
                        });
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(self.content_bytes() as usize + self.entries.len() * 160);
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (data, rdev): (&[u8], (u32, u32)) = match &entry.kind {
                Kind::File(d) => (d, (0, 0)),
                Kind::Symlink(t) => (t.as_bytes(), (0, 0)),
                Kind::Dir => (&[], (0, 0)),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    (&[], (*major, *minor))
                }
            };
            let header = Header {
                ino,
                mode: entry.kind.type_bits() | entry.mode,
                nlink: if entry.kind == Kind::Dir { 2 } else { 1 },
                mtime,
                // Checked in add() for files; symlink targets are short strings.
                filesize: data.len() as u32,
                rdev,
            };
            header.write(&mut out, path);
            out.extend_from_slice(data);
            pad(&mut out, 4);
        }
        Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev: (0, 0),
        }
        .write(&mut out, TRAILER);
        pad(&mut out, 512);
        Ok(out)
    }
}

/// The name of the last entry of every newc archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
}

impl Header {
    fn write(&self, out: &mut Vec<u8>, name: &str) {
        // Name length including its NUL; paths are far below 4 GiB.
        let namesize = name.len() as u32 + 1;
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor
            0, // devminor
            self.rdev.0,
            self.rdev.1,
            namesize,
            0, // check (only used by the 070702 CRC format)
        ];
        out.extend_from_slice(MAGIC);
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(out, 4);
    }
}

fn pad(out: &mut Vec<u8>, to: usize) {
    while !out.len().is_multiple_of(to) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_single_file() {
        let mut a = Archive::new();
        a.add("/x", 0o644, Kind::File(b"hi".to_vec())).unwrap();
        let bytes = a.to_bytes(0x5f5e100).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(b"070701"); // magic
        want.extend_from_slice(b"00000001"); // ino
        want.extend_from_slice(b"000081A4"); // mode: S_IFREG | 0644
        want.extend_from_slice(b"00000000"); // uid
        want.extend_from_slice(b"00000000"); // gid
        want.extend_from_slice(b"00000001"); // nlink
        want.extend_from_slice(b"05F5E100"); // mtime
        want.extend_from_slice(b"00000002"); // filesize
        want.extend_from_slice(b"00000000"); // devmajor
        want.extend_from_slice(b"00000000"); // devminor
        want.extend_from_slice(b"00000000"); // rdevmajor
        want.extend_from_slice(b"00000000"); // rdevminor
        want.extend_from_slice(b"00000002"); // namesize: "x\0"
        want.extend_from_slice(b"00000000"); // check
        want.extend_from_slice(b"x\0"); // 110 + 2 = 112: already aligned
        want.extend_from_slice(b"hi\0\0"); // data, padded to 4
        want.extend_from_slice(b"070701");
        want.extend_from_slice(b"00000000000000000000000000000000000000010000000000000000");
        want.extend_from_slice(b"00000000000000000000000000000000"); // dev and rdev
        want.extend_from_slice(b"0000000B"); // namesize: "TRAILER!!!\0"
        want.extend_from_slice(b"00000000");
        want.extend_from_slice(b"TRAILER!!!\0\0\0\0\0"); // 110 + 11 = 121 → 124
        want.resize(512, 0);
        assert_eq!(bytes, want);
    }

    #[test]
    fn parents_are_implied_sorted_and_replaceable() {
        let mut a = Archive::new();
        a.add("dev/console", 0o600, Kind::CharDev { major: 5, minor: 1 })
            .unwrap();
        a.add("/bin/sh", 0o777, Kind::Symlink("busybox".into()))
            .unwrap();
        a.add("bin-extra", 0o644, Kind::File(vec![])).unwrap();
        a.add("/bin/sh", 0o777, Kind::Symlink("dash".into()))
            .unwrap();
        let paths: Vec<&str> = a.paths().collect();
        assert_eq!(paths, ["bin", "bin-extra", "bin/sh", "dev", "dev/console"]);
        assert_eq!(a.get("/bin/sh").unwrap().kind, Kind::Symlink("dash".into()));
    }

    #[test]
    fn bad_paths_and_file_parents_are_refused() {
        for bad in ["", "/", "a/../b", "./a", "a//b", "a/", "a\0b"] {
            assert!(
                matches!(
                    Archive::new().add(bad, 0, Kind::Dir),
                    Err(CpioError::BadPath { .. })
                ),
                "{bad:?}"
            );
        }
        let mut a = Archive::new();
        a.add("x/y", 0o644, Kind::File(vec![])).unwrap();
        assert_eq!(
            a.add("/x", 0o777, Kind::Symlink("/etc".into())),
            Err(CpioError::ReplacesDirectory {
                path: "x".into(),
                kind: "symlink",
                child: "x/y".into()
            })
        );
        // "x-y" sorts between "x" and "x/": not a child.
        let mut a = Archive::new();
        a.add("x-y", 0o644, Kind::File(vec![])).unwrap();
        a.add("x", 0o755, Kind::Dir).unwrap();
        a.add("x", 0o644, Kind::File(vec![])).unwrap();
        let mut a = Archive::new();
        a.add("init", 0o755, Kind::File(vec![1])).unwrap();
        assert_eq!(
            a.add("init/x", 0o644, Kind::Dir),
            Err(CpioError::NotADirectory {
                path: "init".into(),
                existing: "file"
            })
        );
        assert_eq!(
            Archive::new().to_bytes(1 << 33),
            Err(CpioError::Mtime(1 << 33))
        );
    }
}
