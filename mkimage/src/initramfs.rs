//! Assembles an initramfs archive from a spec: files, directories, symlinks
//! and device nodes as written, the generated image description and default
//! parameters, and the kernel modules the spec names with their dependency
//! closure and the module index the init loads from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phase_initramfs::image::ImageInfo;
use phase_initramfs::layout;
use phase_initramfs::modindex::{IndexError, ModuleIndex};
use phase_manifest::{KeyRecord, ManifestError, TrustStore};
use thiserror::Error;

use crate::cpio::{Archive, CpioError, Kind};
use crate::kmod::KernelTree;
use crate::spec::{NodeKind, Spec};

#[derive(Debug, Error)]
pub enum InitramfsError {
    #[error(
        "file {path} comes from input @{input}, which was not given (pass --input {input}=PATH)"
    )]
    MissingInput { path: String, input: String },
    #[error("reading {} for {path}", source_path.display())]
    ReadSource {
        path: String,
        source_path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "the spec names kernel modules ({modules}) but no kernel module tree was given (pass --kernel-tree DIR)"
    )]
    NoKernelTree { modules: String },
    #[error("resolving kernel modules from {}", tree.display())]
    Modules {
        tree: PathBuf,
        #[source]
        error: IndexError,
    },
    #[error("trust key {}", path.display())]
    TrustKey {
        path: PathBuf,
        #[source]
        error: ManifestError,
    },
    #[error("[trust] needs at least one key in keys = [...]")]
    NoTrustKeys,
    #[error("[trust]")]
    Trust(#[source] ManifestError),
    #[error("{} holds no PEM certificate (BEGIN CERTIFICATE), so HTTPS could trust nothing", path.display())]
    NoCertificates { path: PathBuf },
    #[error("spec {name} sets shell = true but puts nothing at {}", layout::SHELL)]
    ShellMissing { name: String },
    #[error(transparent)]
    Cpio(#[from] CpioError),
}

/// Named inputs (`@name` sources) and the kernel tree modules come from.
#[derive(Debug, Default)]
pub struct Inputs {
    pub named: BTreeMap<String, PathBuf>,
    pub kernel_tree: Option<KernelTree>,
}

/// The build host's CA bundle (Debian's ca-certificates), the default trust
/// for HTTPS when a spec names none.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Inputs {
    /// The file behind a spec source: `@name` is a named input, anything
    /// else a path. `what` names the entry for the error.
    fn resolve(&self, source: &str, what: &str) -> Result<PathBuf, InitramfsError> {
        match source.strip_prefix('@') {
            Some(input) => {
                self.named
                    .get(input)
                    .cloned()
                    .ok_or_else(|| InitramfsError::MissingInput {
                        path: what.to_owned(),
                        input: input.to_owned(),
                    })
            }
            None => Ok(PathBuf::from(source)),
        }
    }

    fn read(&self, source: &str, what: &str) -> Result<(PathBuf, Vec<u8>), InitramfsError> {
        let source_path = self.resolve(source, what)?;
        let bytes = std::fs::read(&source_path).map_err(|error| InitramfsError::ReadSource {
            path: what.to_owned(),
            source_path: source_path.clone(),
            error,
        })?;
        Ok((source_path, bytes))
    }
}

/// An assembled image before it is written.
#[derive(Debug)]
pub struct Built {
    pub archive: Archive,
    pub info: ImageInfo,
    pub index: Option<ModuleIndex>,
}

pub fn build(spec: &Spec, inputs: &Inputs, build_time: u64) -> Result<Built, InitramfsError> {
    let mut archive = Archive::new();
    for dir in &spec.dirs {
        archive.add(&dir.path, dir.mode.unwrap_or(0o755), Kind::Dir)?;
    }
    for file in &spec.files {
        let data = match (&file.source, &file.text) {
            (_, Some(text)) => text.clone().into_bytes(),
            (Some(source), None) => inputs.read(source, &file.path)?.1,
            // Spec::load refuses files with neither.
            (None, None) => Vec::new(),
        };
        archive.add(&file.path, file.mode.unwrap_or(0o644), Kind::File(data))?;
    }
    for link in &spec.symlinks {
        archive.add(&link.path, 0o777, Kind::Symlink(link.target.clone()))?;
    }
    for node in &spec.nodes {
        let kind = match node.kind {
            NodeKind::Char => Kind::CharDev {
                major: node.major,
                minor: node.minor,
            },
            NodeKind::Block => Kind::BlockDev {
                major: node.major,
                minor: node.minor,
            },
        };
        archive.add(&node.path, node.mode.unwrap_or(0o600), kind)?;
    }

    let index = add_modules(spec, inputs, &mut archive)?;

    if let Some(trust) = &spec.trust {
        add_trust(spec, trust, inputs, build_time, &mut archive)?;
    }
    if spec.shell && archive.get(layout::SHELL).is_none() {
        return Err(InitramfsError::ShellMissing {
            name: spec.name.clone(),
        });
    }
    if !spec.config.is_empty() {
        let mut text = spec.config.join("\n");
        text.push('\n');
        archive.add(layout::CONFIG, 0o644, Kind::File(text.into_bytes()))?;
    }
    let info = ImageInfo {
        spec: spec.name.clone(),
        build_time,
        shell: spec.shell,
        kernel_release: index.as_ref().map(|i| i.kernel_release.clone()),
    };
    archive.add(
        layout::IMAGE_INFO,
        0o644,
        Kind::File(info.to_json().into_bytes()),
    )?;
    Ok(Built {
        archive,
        info,
        index,
    })
}

/// Writes the trust store (keys, threshold, floors; the time floor is the
/// build time) and the certificates HTTPS trusts.
fn add_trust(
    spec: &Spec,
    trust: &crate::spec::TrustSpec,
    inputs: &Inputs,
    build_time: u64,
    archive: &mut Archive,
) -> Result<(), InitramfsError> {
    let mut records = Vec::new();
    for key in trust.keys.iter().flatten() {
        let (path, bytes) = inputs.read(key, "[trust] keys")?;
        let public = KeyRecord::from_json(&bytes)
            .map_err(|error| InitramfsError::TrustKey { path, error })?;
        records.push(public.record());
    }
    if records.is_empty() {
        return Err(InitramfsError::NoTrustKeys);
    }
    let store = TrustStore::new(
        &records,
        trust.threshold.unwrap_or(1),
        trust.version_floor.unwrap_or(0),
        trust.max_version_jump.unwrap_or(1000),
        build_time,
    )
    .map_err(InitramfsError::Trust)?;
    archive.add(
        layout::TRUST_STORE,
        0o644,
        Kind::File(store.to_json().into_bytes()),
    )?;

    let source = spec
        .tls
        .pin
        .as_deref()
        .or(spec.tls.bundle.as_deref())
        .unwrap_or(HOST_CA_BUNDLE);
    let (path, pem) = inputs.read(source, layout::CA_BUNDLE)?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(InitramfsError::NoCertificates { path });
    }
    archive.add(layout::CA_BUNDLE, 0o644, Kind::File(pem))?;
    Ok(())
}

fn add_modules(
    spec: &Spec,
    inputs: &Inputs,
    archive: &mut Archive,
) -> Result<Option<ModuleIndex>, InitramfsError> {
    let wanted = spec.all_modules();
    if wanted.is_empty() {
        return Ok(None);
    }
    let tree = inputs
        .kernel_tree
        .as_ref()
        .ok_or_else(|| InitramfsError::NoKernelTree {
            modules: wanted.iter().copied().collect::<Vec<_>>().join(", "),
        })?;
    let index = ModuleIndex::build(
        &tree.release,
        tree.builtin.clone(),
        &spec.modules.boot,
        &spec.modules.extra,
        |name| {
            tree.lookup(name).map(|hit| {
                hit.map(|(rel, info)| (format!("{}/{}", tree.release, rel.display()), info))
            })
        },
    )
    .map_err(|error| InitramfsError::Modules {
        tree: tree.dir.clone(),
        error,
    })?;
    for module in &index.modules {
        // The index path is "<release>/<relative path>", under /lib/modules.
        let rel = module
            .path
            .split_once('/')
            .map_or(module.path.as_str(), |(_, r)| r);
        let source_path = tree.dir.join(rel);
        let data = std::fs::read(&source_path).map_err(|error| InitramfsError::ReadSource {
            path: module.path.clone(),
            source_path: source_path.clone(),
            error,
        })?;
        let target = Path::new(layout::MODULE_DIR).join(&module.path);
        archive.add(&target.to_string_lossy(), 0o644, Kind::File(data))?;
    }
    archive.add(
        layout::MODULE_INDEX,
        0o644,
        Kind::File(index.to_json().into_bytes()),
    )?;
    Ok(Some(index))
}
