//! Initramfs specs: what goes into an image, as data (`initramfs/*.toml`).
//!
//! ```toml
//! name = "netboot"
//! include = ["base.toml"]          # merged first; later entries win per path
//! shell = false                    # true: the image carries /bin/sh for rd.shell
//! config = ["phase.channel=stable"] # default parameters, /etc/phase/config
//!
//! [modules]
//! boot = ["virtio_pci", "virtio_console"]  # loaded on every boot, with dependencies
//! extra = ["e1000e"]                       # in the image, loaded when a device asks
//!
//! [[file]]
//! path = "/init"
//! source = "@init"        # a named input given to mkimage (--input init=PATH)
//! mode = 0o755
//! [[file]]
//! path = "/etc/motd"
//! text = "hello\n"        # or inline text
//! [[dir]]
//! path = "/var/empty"
//! [[symlink]]
//! path = "/bin/sh"
//! target = "busybox"
//! [trust]                 # what the image verifies manifests against
//! keys = ["@release-key"]  # public key files from `phase keygen`
//! threshold = 1
//! version_floor = 0        # manifests below this version are refused
//! max_version_jump = 1000  # nor more than this far above it
//!
//! [kexec]                  # how an x86_64 kexec hand-off loads the next kernel
//! method = "file"          # file (the default) | load | auto
//!
//! [state]                  # where a machine without EFI variables keeps its
//! partlabel = "PHASE-STATE" # version floor: a GPT partition `mkimage usb` makes
//!
//! [tls]                    # what HTTPS trusts (default: the build host's bundle)
//! bundle = "/etc/ssl/certs/ca-certificates.crt"
//! pin = "@provider-ca"     # if set, only this CA
//!
//! [[node]]
//! path = "/dev/console"
//! kind = "char"
//! major = 5
//! minor = 1
//! mode = 0o600
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use phase_initramfs::image::KexecMethod;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("reading spec {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("parsing spec {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        error: Box<toml::de::Error>,
    },
    #[error("spec {} includes itself through {}", path.display(), chain)]
    IncludeCycle { path: PathBuf, chain: String },
    #[error("spec {}: file {file:?} needs exactly one of source = … or text = …", spec.display())]
    FileSource { spec: PathBuf, file: String },
    #[error("spec {}: [state] partlabel {label:?} is not 1–36 letters, digits, '-', '_' or '.' (a GPT name the init can be told)", spec.display())]
    StatePartlabel { spec: PathBuf, label: String },
}

/// A GPT partition name (at most 36 UTF-16 units) that reads the same on
/// every tool and on a kernel command line.
fn is_partlabel(label: &str) -> bool {
    (1..=36).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    #[serde(default)]
    pub boot: Vec<String>,
    #[serde(default)]
    pub extra: Vec<String>,
}

/// `[trust]`: every field may be set by an including spec on its own.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustSpec {
    /// Public key files (`@input` or a path relative to the spec).
    pub keys: Option<Vec<String>>,
    pub threshold: Option<usize>,
    pub version_floor: Option<u64>,
    pub max_version_jump: Option<u64>,
}

/// `[kexec]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KexecSpec {
    pub method: Option<KexecMethod>,
}

/// `[state]`: the partition a machine without EFI variables keeps its
/// version floor on (see `phase_initramfs::state`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    pub partlabel: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// A PEM bundle of CAs (`@input` or a path).
    pub bundle: Option<String>,
    /// One CA that replaces the bundle.
    pub pin: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    /// `@name` for a named input, otherwise a path relative to the spec file.
    pub source: Option<String>,
    pub text: Option<String>,
    pub mode: Option<u32>,
    /// The spec file this entry is written in (set when loading).
    #[serde(skip)]
    pub spec: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    pub path: String,
    pub mode: Option<u32>,
    /// The spec file this entry is written in (set when loading).
    #[serde(skip)]
    pub spec: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    pub path: String,
    pub target: String,
    /// The spec file this entry is written in (set when loading).
    #[serde(skip)]
    pub spec: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Char,
    Block,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub path: String,
    pub kind: NodeKind,
    pub major: u32,
    pub minor: u32,
    pub mode: Option<u32>,
    /// The spec file this entry is written in (set when loading).
    #[serde(skip)]
    pub spec: PathBuf,
}

/// One spec file as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    shell: Option<bool>,
    #[serde(default)]
    config: Vec<String>,
    #[serde(default)]
    modules: Modules,
    trust: Option<TrustSpec>,
    tls: Option<TlsSpec>,
    kexec: Option<KexecSpec>,
    state: Option<StateSpec>,
    #[serde(default, rename = "file")]
    files: Vec<FileSpec>,
    #[serde(default, rename = "dir")]
    dirs: Vec<DirSpec>,
    #[serde(default, rename = "symlink")]
    symlinks: Vec<SymlinkSpec>,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSpec>,
}

/// A spec with its includes merged. File sources are resolved to absolute
/// paths (or kept as `@input` names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub shell: bool,
    pub config: Vec<String>,
    pub modules: Modules,
    /// Present when the image verifies manifests (a netboot image).
    pub trust: Option<TrustSpec>,
    pub tls: TlsSpec,
    /// `[kexec] method`; `None` leaves the init's default.
    pub kexec_method: Option<KexecMethod>,
    /// `[state] partlabel`; `None`: the image names no state partition.
    pub state_partlabel: Option<String>,
    pub files: Vec<FileSpec>,
    pub dirs: Vec<DirSpec>,
    pub symlinks: Vec<SymlinkSpec>,
    pub nodes: Vec<NodeSpec>,
    /// The spec files read: this one and every include.
    pub sources: Vec<PathBuf>,
}

impl Spec {
    /// Loads a spec and everything it includes (depth first, includes before
    /// the including file).
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let mut spec = Spec::default();
        let mut stack = Vec::new();
        merge(path, &mut spec, &mut stack)?;
        if spec.name.is_empty() {
            spec.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(spec)
    }

    /// Module names from both lists, without repeats.
    pub fn all_modules(&self) -> BTreeSet<&str> {
        self.modules
            .boot
            .iter()
            .chain(&self.modules.extra)
            .map(String::as_str)
            .collect()
    }
}

fn merge(path: &Path, spec: &mut Spec, stack: &mut Vec<PathBuf>) -> Result<(), SpecError> {
    let canonical = path.canonicalize().map_err(|error| SpecError::Read {
        path: path.to_owned(),
        error,
    })?;
    if stack.contains(&canonical) {
        let chain = stack
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" -> ");
        return Err(SpecError::IncludeCycle {
            path: path.to_owned(),
            chain,
        });
    }
    let text = std::fs::read_to_string(&canonical).map_err(|error| SpecError::Read {
        path: path.to_owned(),
        error,
    })?;
    let file: SpecFile = toml::from_str(&text).map_err(|error| SpecError::Parse {
        path: path.to_owned(),
        error: Box::new(error),
    })?;
    let dir = canonical.parent().unwrap_or(Path::new("/")).to_owned();
    // `@name` is a named input; anything else is relative to this spec file.
    let source = |text: String| {
        if text.starts_with('@') {
            text
        } else {
            dir.join(text).to_string_lossy().into_owned()
        }
    };
    spec.sources.push(path.to_owned());
    stack.push(canonical.clone());
    for include in &file.include {
        merge(&dir.join(include), spec, stack)?;
    }
    stack.pop();
    if let Some(name) = file.name {
        spec.name = name;
    }
    if let Some(shell) = file.shell {
        spec.shell = shell;
    }
    spec.config.extend(file.config);
    if let Some(t) = file.trust {
        let into = spec.trust.get_or_insert_with(TrustSpec::default);
        if let Some(keys) = t.keys {
            into.keys = Some(keys.into_iter().map(source).collect());
        }
        into.threshold = t.threshold.or(into.threshold);
        into.version_floor = t.version_floor.or(into.version_floor);
        into.max_version_jump = t.max_version_jump.or(into.max_version_jump);
    }
    if let Some(t) = file.tls {
        if let Some(bundle) = t.bundle {
            spec.tls.bundle = Some(source(bundle));
        }
        if let Some(pin) = t.pin {
            spec.tls.pin = Some(source(pin));
        }
    }
    if let Some(method) = file.kexec.and_then(|k| k.method) {
        spec.kexec_method = Some(method);
    }
    if let Some(label) = file.state.and_then(|s| s.partlabel) {
        if !is_partlabel(&label) {
            return Err(SpecError::StatePartlabel {
                spec: path.to_owned(),
                label,
            });
        }
        spec.state_partlabel = Some(label);
    }
    extend_unique(&mut spec.modules.boot, file.modules.boot);
    extend_unique(&mut spec.modules.extra, file.modules.extra);
    for mut f in file.files {
        match (f.source.take(), &f.text) {
            (Some(text), None) => f.source = Some(source(text)),
            (None, Some(_)) => {}
            _ => {
                return Err(SpecError::FileSource {
                    spec: path.to_owned(),
                    file: f.path,
                });
            }
        }
        f.spec = path.to_owned();
        spec.files.push(f);
    }
    for mut d in file.dirs {
        d.spec = path.to_owned();
        spec.dirs.push(d);
    }
    for mut l in file.symlinks {
        l.spec = path.to_owned();
        spec.symlinks.push(l);
    }
    for mut n in file.nodes {
        n.spec = path.to_owned();
        spec.nodes.push(n);
    }
    Ok(())
}

fn extend_unique(list: &mut Vec<String>, more: Vec<String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_merge_in_order_and_cycles_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "name = \"base\"\nconfig = [\"a=1\"]\n[modules]\nboot = [\"virtio_pci\"]\n\
             [[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n\
             [[file]]\npath = \"/etc/x\"\nsource = \"x.txt\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("net.toml"),
            "name = \"net\"\ninclude = [\"base.toml\"]\nconfig = [\"b=2\"]\n\
             [modules]\nboot = [\"virtio_net\", \"virtio_pci\"]\nextra = [\"e1000e\"]\n",
        )
        .unwrap();
        let spec = Spec::load(&dir.path().join("net.toml")).unwrap();
        assert_eq!(spec.name, "net");
        assert_eq!(spec.config, ["a=1", "b=2"]);
        assert_eq!(spec.modules.boot, ["virtio_pci", "virtio_net"]);
        assert_eq!(spec.files[0].source.as_deref(), Some("@init"));
        let x = spec.files[1].source.as_deref().unwrap();
        assert!(x.ends_with("/x.txt") && x.starts_with('/'), "{x}");

        std::fs::write(dir.path().join("loop.toml"), "include = [\"loop.toml\"]\n").unwrap();
        let err = Spec::load(&dir.path().join("loop.toml")).unwrap_err();
        assert!(matches!(err, SpecError::IncludeCycle { .. }), "{err}");

        std::fs::write(dir.path().join("bad.toml"), "[[file]]\npath = \"/a\"\n").unwrap();
        let err = Spec::load(&dir.path().join("bad.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "spec {}: file \"/a\" needs exactly one of source = … or text = …",
                dir.path().join("bad.toml").display()
            )
        );

        std::fs::write(
            dir.path().join("kexec.toml"),
            "include = [\"net.toml\"]\n[kexec]\nmethod = \"auto\"\n",
        )
        .unwrap();
        assert_eq!(spec.kexec_method, None);
        let spec = Spec::load(&dir.path().join("kexec.toml")).unwrap();
        assert_eq!(spec.kexec_method, Some(KexecMethod::Auto));
        std::fs::write(dir.path().join("fast.toml"), "[kexec]\nmethod = \"fast\"\n").unwrap();
        assert!(Spec::load(&dir.path().join("fast.toml")).is_err());

        std::fs::write(
            dir.path().join("state.toml"),
            "include = [\"net.toml\"]\n[state]\npartlabel = \"PHASE-STATE\"\n",
        )
        .unwrap();
        assert_eq!(spec.state_partlabel, None);
        let state = Spec::load(&dir.path().join("state.toml")).unwrap();
        assert_eq!(state.state_partlabel.as_deref(), Some("PHASE-STATE"));
        std::fs::write(
            dir.path().join("badlabel.toml"),
            "[state]\npartlabel = \"a b\"\n",
        )
        .unwrap();
        assert!(matches!(
            Spec::load(&dir.path().join("badlabel.toml")),
            Err(SpecError::StatePartlabel { .. })
        ));

        std::fs::write(dir.path().join("typo.toml"), "modlues = []\n").unwrap();
        let err = Spec::load(&dir.path().join("typo.toml")).unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("unknown field `modlues`"));
    }
}
