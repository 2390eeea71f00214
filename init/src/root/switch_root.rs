//! switch_root, as util-linux and busybox do it, with the checks first.
//!
//! ```text
//! let target = switch_root::find_init(NEW_ROOT, plan.init.as_deref())?;  // nothing torn down yet
//! switch_root::switch(NEW_ROOT, &target, &args)                          // returns only an error
//! ```
//!
//! 1. [`find_init`]: the program to run (`init=`, else `/sbin/init`,
//!    `/etc/init`, `/bin/init`, `/bin/sh`, as the kernel tries them) must
//!    resolve *inside the new root* — symlinks followed relative to it, never
//!    out of it — to an executable regular file. If none does, the caller
//!    reports every path tried and takes its policy with the initramfs
//!    intact.
//! 2. [`switch`]: `/proc`, `/sys`, `/dev` and `/run` move into the new root
//!    (`MS_MOVE`); the initramfs's own files are deleted without crossing
//!    into any other mount (each directory's `st_dev` is compared with the
//!    initramfs's, and symlinks are never followed), so the new root and
//!    everything mounted under it are untouched (SECURITY.md row 25); the
//!    new root moves onto `/`, the init chroots into it and executes the
//!    target with the console as its standard streams, the signal mask
//!    cleared and the kernel's environment (`HOME=/`, `TERM=linux`).
//!
//! Every descriptor the init opened is close-on-exec, so only the console
//! (0–2) crosses the `execve`; other threads end with it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::sys;

/// Where the new root is mounted before the switch.
pub const NEW_ROOT: &str = "/sysroot";

/// What the kernel tries when `init=` is not given, in its order
/// (init/main.c).
pub const DEFAULT_INITS: [&str; 4] = ["/sbin/init", "/etc/init", "/bin/init", "/bin/sh"];

/// The mounts that move into the new root.
pub const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error)]
pub enum SwitchRootError {
    #[error("no init to run in the new root: tried {}", tried.join(", "))]
    NoInit {
        /// Each path with why it was refused.
        tried: Vec<String>,
    },
    #[error("mount({from}, {to}, MS_MOVE)")]
    Move {
        from: String,
        to: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chdir({path})")]
    Chdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chroot(.) in {path}")]
    Chroot {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("execve({path})")]
    Exec {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What reading the new root says about one path component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Missing,
    Directory,
    Symlink(PathBuf),
    /// A regular file, with whether any execute bit is set.
    File {
        executable: bool,
    },
    Other,
}

/// Resolves `path` as the kernel would after `chroot(root)`: `..` stops at
/// the root, absolute symlinks restart from the root. `look` tells what a
/// path under the root (given root-relative, starting with `/`) is. Pure
/// apart from `look`, so the rules are tested without a file system.
pub fn resolve_in_root(
    path: &str,
    look: &mut dyn FnMut(&Path) -> Node,
) -> Result<PathBuf, &'static str> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err("not an absolute path");
    }
    let mut current = PathBuf::from("/");
    let mut links = 0;
    // Components still to walk, the next one last.
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    push_components(path, &mut rest);
    while let Some(name) = rest.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        match look(&next) {
            Node::Missing => return Err("does not exist"),
            Node::Directory => current = next,
            Node::File { executable } => {
                if !rest.is_empty() {
                    return Err("a file is used as a directory");
                }
                return if executable {
                    Ok(next)
                } else {
                    Err("is not executable")
                };
            }
            Node::Other => return Err("is not a regular file"),
            Node::Symlink(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err("too many levels of symbolic links");
                }
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                push_components(&target, &mut rest);
            }
        }
    }
    Err("is a directory")
}

/// Pushes `path`'s components onto `rest` so that the first is popped first.
fn push_components(path: &Path, rest: &mut Vec<std::ffi::OsString>) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => rest.push(n.to_owned()),
            Component::ParentDir => rest.push("..".into()),
            _ => {}
        }
    }
}

/// What `path` (root-relative) is in the tree mounted at `root`, without
/// following a final symlink.
fn look_under(root: &Path, path: &Path) -> Node {
    let full = root.join(path.strip_prefix("/").unwrap_or(path));
    match std::fs::symlink_metadata(&full) {
        Err(_) => Node::Missing,
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&full) {
            Ok(t) => Node::Symlink(t),
            Err(_) => Node::Missing,
        },
        Ok(m) if m.is_dir() => Node::Directory,
        Ok(m) if m.is_file() => Node::File {
            executable: m.permissions().mode() & 0o111 != 0,
        },
        Ok(_) => Node::Other,
    }
}

/// The init to run in the new root at `root`: `wanted` (`init=`) alone if
/// given, else the first of [`DEFAULT_INITS`] that resolves to an
/// executable file. Returns the path as given (the kernel resolves it again
/// after the chroot).
pub fn find_init(root: &str, wanted: Option<&str>) -> Result<String, SwitchRootError> {
    let candidates: Vec<&str> = match wanted {
        Some(w) => vec![w],
        None => DEFAULT_INITS.to_vec(),
    };
    let mut tried = Vec::new();
    for candidate in candidates {
        match resolve_in_root(candidate, &mut |p| look_under(Path::new(root), p)) {
            Ok(_) => return Ok(candidate.to_owned()),
            Err(why) => tried.push(format!("{candidate} ({why})")),
        }
    }
    Err(SwitchRootError::NoInit { tried })
}

/// What the deletion of the initramfs did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub files: u64,
    pub dirs: u64,
    /// Directories left alone because another file system is mounted there.
    pub mount_points: Vec<String>,
    /// Entries that could not be removed, with the error.
    pub failed: Vec<String>,
}

/// Deletes everything under `dir` that lives on device `dev`, never
/// descending into a directory on another device (a mount point) and never
/// following a symlink. `dir` itself stays.
pub fn delete_on_device(dir: &Path, dev: u64, out: &mut Cleanup) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.failed.push(format!("{}: cannot list", dir.display()));
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        match sys::lstat_dev_dir(&c) {
            Ok((d, _)) if d != dev => out.mount_points.push(path.display().to_string()),
            Ok((_, true)) => {
                delete_on_device(&path, dev, out);
                match std::fs::remove_dir(&path) {
                    Ok(()) => out.dirs += 1,
                    // A directory that still holds a mount point stays.
                    Err(e) => out.failed.push(format!("{}: {e}", path.display())),
                }
            }
            Ok((_, false)) => match std::fs::remove_file(&path) {
                Ok(()) => out.files += 1,
                Err(e) => out.failed.push(format!("{}: {e}", path.display())),
            },
            Err(e) => out.failed.push(format!("{}: {e}", path.display())),
        }
    }
}

fn cstr(path: &str) -> CString {
    // Our own constant paths and NEW_ROOT: no NUL inside.
    CString::new(path).unwrap_or_default()
}

/// Moves the basic mounts into `root`, deletes the initramfs, moves `root`
/// onto `/`, chroots and executes `init` with `args`. Returns only if a
/// step failed; after the deletion has begun there is no way back to the
/// initramfs, so the caller can only take its policy.
pub fn switch(root: &str, init: &str, args: &[String]) -> (Cleanup, SwitchRootError) {
    let mut cleanup = Cleanup::default();
    for m in MOVED {
        let to = format!("{root}{m}");
        // The new root may lack the directory; make it (on a read-only root
        // this fails and the move below says so).
        let _ = sys::mkdir(&cstr(&to), 0o755);
        if let Err(source) = sys::mount_move(&cstr(m), &cstr(&to)) {
            return (
                cleanup,
                SwitchRootError::Move {
                    from: m.into(),
                    to,
                    source,
                },
            );
        }
    }
    // The initramfs is the file system of `/`; everything else under it is
    // now the new root or a mount inside it.
    if let Ok((dev, _)) = sys::lstat_dev_dir(c"/") {
        delete_on_device(Path::new("/"), dev, &mut cleanup);
    }
    if let Err(source) = sys::chdir(&cstr(root)) {
        return (
            cleanup,
            SwitchRootError::Chdir {
                path: root.into(),
                source,
            },
        );
    }
    if let Err(source) = sys::mount_move(c".", c"/") {
        return (
            cleanup,
            SwitchRootError::Move {
                from: root.into(),
                to: "/".into(),
                source,
            },
        );
    }
    if let Err(source) = sys::chroot(c".") {
        return (
            cleanup,
            SwitchRootError::Chroot {
                path: root.into(),
                source,
            },
        );
    }
    if let Err(source) = sys::chdir(c"/") {
        return (
            cleanup,
            SwitchRootError::Chdir {
                path: "/".into(),
                source,
            },
        );
    }
    // std's exec clears the signal mask (the supervisor blocked every
    // signal it takes) and leaves fds 0–2, the console, as they are.
    let source = std::process::Command::new(init)
        .args(args)
        .env_clear()
        .env("HOME", "/")
        .env("TERM", "linux")
        .exec();
    (
        cleanup,
        SwitchRootError::Exec {
            path: init.into(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tree(entries: &[(&str, Node)]) -> BTreeMap<PathBuf, Node> {
        entries
            .iter()
            .map(|(p, n)| (PathBuf::from(p), n.clone()))
            .collect()
    }

    fn resolve(t: &BTreeMap<PathBuf, Node>, path: &str) -> Result<PathBuf, &'static str> {
        resolve_in_root(path, &mut |p| t.get(p).cloned().unwrap_or(Node::Missing))
    }

    #[test]
    fn symlinks_resolve_inside_the_new_root() {
        let exe = Node::File { executable: true };
        let t = tree(&[
            ("/sbin", Node::Symlink("usr/sbin".into())),
            ("/usr", Node::Directory),
            ("/usr/sbin", Node::Directory),
            (
                "/usr/sbin/init",
                Node::Symlink("/lib/systemd/systemd".into()),
            ),
            ("/lib", Node::Symlink("usr/lib".into())),
            ("/usr/lib", Node::Directory),
            ("/usr/lib/systemd", Node::Directory),
            ("/usr/lib/systemd/systemd", exe.clone()),
            ("/bin", Node::Directory),
            ("/bin/sh", Node::File { executable: false }),
            ("/bin/escape", Node::Symlink("../../../../bin/real".into())),
            ("/bin/real", exe),
            ("/bin/loop", Node::Symlink("/bin/loop".into())),
            ("/etc", Node::Directory),
        ]);
        // An absolute symlink restarts at the new root, not at the
        // initramfs's root.
        assert_eq!(
            resolve(&t, "/sbin/init"),
            Ok(PathBuf::from("/usr/lib/systemd/systemd"))
        );
        // `..` stops at the root.
        assert_eq!(resolve(&t, "/bin/escape"), Ok(PathBuf::from("/bin/real")));
        assert_eq!(resolve(&t, "/bin/sh"), Err("is not executable"));
        assert_eq!(resolve(&t, "/etc/init"), Err("does not exist"));
        assert_eq!(resolve(&t, "/etc"), Err("is a directory"));
        assert_eq!(
            resolve(&t, "/bin/loop"),
            Err("too many levels of symbolic links")
        );
        assert_eq!(resolve(&t, "sbin/init"), Err("not an absolute path"));
    }

    #[test]
    fn the_first_default_init_that_runs_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        // /sbin/init points outside the root if resolved from the host's
        // root: only a root-relative resolution finds it missing.
        std::os::unix::fs::symlink("/usr/bin/env", root.join("sbin/init")).unwrap();
        let sh = root.join("bin/sh");
        std::fs::write(&sh, b"#!").unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = root.to_str().unwrap();
        assert_eq!(find_init(root, None).unwrap(), "/bin/sh");
        let err = find_init(root, Some("/sbin/init")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no init to run in the new root: tried /sbin/init (does not exist)"
        );
        let SwitchRootError::NoInit { tried } =
            find_init(&format!("{root}/bin"), None).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(tried.len(), 4);
    }

    #[test]
    fn deletion_stays_on_its_device() {
        // Everything here is one device; a "foreign" device number leaves
        // the whole tree alone, its own number empties it.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/file"), b"x").unwrap();
        std::fs::write(d.join("top"), b"y").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("link")).unwrap();
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(d).unwrap());
        let mut kept = Cleanup::default();
        delete_on_device(d, dev + 1, &mut kept);
        assert_eq!(kept.files, 0);
        assert_eq!(kept.mount_points.len(), 3);
        let mut gone = Cleanup::default();
        delete_on_device(d, dev, &mut gone);
        assert_eq!((gone.files, gone.dirs), (3, 2), "{gone:?}");
        assert!(gone.failed.is_empty(), "{gone:?}");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
        // The symlink was removed, not followed.
        assert!(Path::new("/etc/passwd").exists());
    }
}
