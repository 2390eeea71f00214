//! Assembles an initramfs archive from a spec: files, directories, symlinks
//! and device nodes as written, the generated image description and default
//! parameters, and the kernel modules the spec names with their dependency
//! closure and the module index the init loads from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phase_initramfs::image::ImageInfo;
use phase_initramfs::layout;
use phase_initramfs::modindex::{IndexError, ModuleIndex};
use phase_manifest::trust::{DEFAULT_MAX_VERSION_JUMP, DEFAULT_THRESHOLD, DEFAULT_VERSION_FLOOR};
use phase_manifest::{KeyRecord, ManifestError, TrustStore};
use thiserror::Error;

use crate::arch::Arch;
use crate::cpio::{Archive, CpioError, Entry, Kind};
use crate::inspect;
use crate::kmod::{self, KernelTree};
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
    #[error("module {module} ({path}) is in the index but was never looked up in the tree")]
    ModuleSource { module: String, path: String },
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
    #[error("spec {}: [[{kind}]] {path}", spec.display())]
    Entry {
        spec: PathBuf,
        kind: &'static str,
        path: String,
        #[source]
        error: Box<CpioError>,
    },
    #[error(transparent)]
    Inspect(#[from] inspect::InspectError),
    #[error(
        "{file} is linked dynamically and needs {interp}, which the image does not hold (link it statically or add its loader and libraries)"
    )]
    MissingInterpreter { file: String, interp: String },
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

    /// Reads a source, noting the path in `log`.
    fn read(
        &self,
        source: &str,
        what: &str,
        log: &mut Vec<(String, PathBuf)>,
    ) -> Result<(PathBuf, Vec<u8>), InitramfsError> {
        let source_path = self.resolve(source, what)?;
        log.push((format!("source of {what}"), source_path.clone()));
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
    /// Every file read, as (what, path): an output must be none of them.
    pub inputs: Vec<(String, PathBuf)>,
}

/// Assembles the image for the machine its kernel modules (or its `/init`)
/// are for.
pub fn build(spec: &Spec, inputs: &Inputs, build_time: u64) -> Result<Built, InitramfsError> {
    build_for(spec, inputs, build_time, None)
}

/// Assembles the image; every ELF file in it must be for `arch` (when
/// given), else for the machine of the kernel modules, else for that of
/// `/init`.
pub fn build_for(
    spec: &Spec,
    inputs: &Inputs,
    build_time: u64,
    arch: Option<Arch>,
) -> Result<Built, InitramfsError> {
    let mut archive = Archive::new();
    let mut read = Vec::new();
    // Where each file's bytes came from, for errors about them.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let entry = |spec: &Path, kind: &'static str, path: &str| {
        let (spec, path) = (spec.to_owned(), path.to_owned());
        move |error| InitramfsError::Entry {
            spec,
            kind,
            path,
            error: Box::new(error),
        }
    };
    for dir in &spec.dirs {
        archive
            .add(&dir.path, dir.mode.unwrap_or(0o755), Kind::Dir)
            .map_err(entry(&dir.spec, "dir", &dir.path))?;
    }
    for file in &spec.files {
        let data = match (&file.source, &file.text) {
            (_, Some(text)) => text.clone().into_bytes(),
            (Some(source), None) => {
                let (path, data) = inputs.read(source, &file.path, &mut read)?;
                if let Ok(p) = crate::cpio::normalize(&file.path) {
                    origin.insert(p, path.display().to_string());
                }
                data
            }
            // Spec::load refuses files with neither.
            (None, None) => Vec::new(),
        };
        archive
            .add(&file.path, file.mode.unwrap_or(0o644), Kind::File(data))
            .map_err(entry(&file.spec, "file", &file.path))?;
    }
    for link in &spec.symlinks {
        archive
            .add(&link.path, 0o777, Kind::Symlink(link.target.clone()))
            .map_err(entry(&link.spec, "symlink", &link.path))?;
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
        archive
            .add(&node.path, node.mode.unwrap_or(0o600), kind)
            .map_err(entry(&node.spec, "node", &node.path))?;
    }

    let index = add_modules(spec, inputs, &mut archive, &mut read)?;
    check_programs(spec, inputs, &archive, &origin, arch)?;

    if let Some(trust) = &spec.trust {
        add_trust(spec, trust, inputs, build_time, &mut archive, &mut read)?;
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
        kexec_method: spec.kexec_method,
        state: spec
            .state_partlabel
            .clone()
            .map(|partlabel| phase_initramfs::image::StateLocation { partlabel }),
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
        inputs: read,
    })
}

/// Every ELF file must be for the image's machine — `arch`, else the
/// kernel modules', else `/init`'s — and find its interpreter in the image;
/// `/init` must be a program.
fn check_programs(
    spec: &Spec,
    inputs: &Inputs,
    archive: &Archive,
    origin: &BTreeMap<String, String>,
    arch: Option<Arch>,
) -> Result<(), InitramfsError> {
    let what = format!("spec {}", spec.name);
    let named = |path: &str| match origin.get(path) {
        Some(src) => format!("/{path} (from {src})"),
        None => format!("/{path}"),
    };
    let mut target = match (arch, &inputs.kernel_tree) {
        (Some(a), _) => Some((a, format!("the image is for {a} (--arch)"))),
        (None, Some(tree)) => tree.arch().map(|a| {
            (
                a,
                format!(
                    "the image is for {a}, as the kernel modules in {} are",
                    tree.dir.display()
                ),
            )
        }),
        (None, None) => None,
    };
    if let Some(Entry {
        kind: Kind::File(data),
        ..
    }) = archive.get("init")
    {
        match inspect::elf(data) {
            Some(Ok(e)) => {
                if target.is_none()
                    && let Some(a) = e.arch()
                {
                    target = Some((a, format!("the image is for {a}, as /init is")));
                }
            }
            Some(Err(_)) => {}
            None if data.starts_with(b"#!") => {}
            None => {
                return Err(inspect::InspectError::InitNotProgram {
                    what: format!("{what}: {}", named("init")),
                    head: data.iter().take(8).copied().collect(),
                }
                .into());
            }
        }
    }
    for (path, entry) in archive.entries() {
        let Kind::File(data) = &entry.kind else {
            continue;
        };
        let Some(e) = inspect::elf(data) else {
            continue;
        };
        let e = e.map_err(|reason| inspect::InspectError::BadElf {
            what: what.clone(),
            file: named(path),
            reason,
        })?;
        let (want, why) = match &target {
            Some(t) => t.clone(),
            None => {
                let Some(a) = e.arch() else {
                    return Err(inspect::InspectError::WrongMachine {
                        what: what.clone(),
                        file: named(path),
                        found: e.describe(),
                        expected: "images are for x86_64 or aarch64".into(),
                    }
                    .into());
                };
                let t = (a, format!("the image is for {a}, as /{path} is"));
                target = Some(t.clone());
                t
            }
        };
        if e.arch() != Some(want) {
            return Err(inspect::InspectError::WrongMachine {
                what: what.clone(),
                file: named(path),
                found: e.describe(),
                expected: why,
            }
            .into());
        }
        if let Some(interp) = &e.interp
            && archive.get(interp).is_none()
        {
            return Err(InitramfsError::MissingInterpreter {
                file: named(path),
                interp: interp.clone(),
            });
        }
    }
    Ok(())
}

/// Writes the trust store (keys, threshold, floors; the time floor is the
/// build time) and the certificates HTTPS trusts.
fn add_trust(
    spec: &Spec,
    trust: &crate::spec::TrustSpec,
    inputs: &Inputs,
    build_time: u64,
    archive: &mut Archive,
    read: &mut Vec<(String, PathBuf)>,
) -> Result<(), InitramfsError> {
    let mut records = Vec::new();
    for key in trust.keys.iter().flatten() {
        let (path, bytes) = inputs.read(key, "[trust] keys", read)?;
        let public = KeyRecord::from_json(&bytes)
            .map_err(|error| InitramfsError::TrustKey { path, error })?;
        records.push(public.record());
    }
    if records.is_empty() {
        return Err(InitramfsError::NoTrustKeys);
    }
    let store = TrustStore::new(
        &records,
        trust.threshold.unwrap_or(DEFAULT_THRESHOLD),
        trust.version_floor.unwrap_or(DEFAULT_VERSION_FLOOR),
        trust.max_version_jump.unwrap_or(DEFAULT_MAX_VERSION_JUMP),
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
    let (path, pem) = inputs.read(source, layout::CA_BUNDLE, read)?;
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
    read: &mut Vec<(String, PathBuf)>,
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
    // Index path → the file in the tree it is read from.
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    let index = ModuleIndex::build(
        &tree.release,
        tree.builtin.clone(),
        &spec.modules.boot,
        &spec.modules.extra,
        |name| {
            tree.lookup(name).map(|hit| {
                hit.map(|(rel, info)| {
                    let path = format!(
                        "{}/{}",
                        tree.release,
                        kmod::uncompressed_name(&rel).display()
                    );
                    sources.insert(path.clone(), rel);
                    (path, info)
                })
            })
        },
    )
    .map_err(|error| InitramfsError::Modules {
        tree: tree.dir.clone(),
        error,
    })?;
    for module in &index.modules {
        // The index path is "<release>/<relative path>", under /lib/modules,
        // with the name the module has uncompressed; the tree's file may be
        // compressed.
        let source_path = tree.dir.join(sources.get(&module.path).ok_or_else(|| {
            InitramfsError::ModuleSource {
                module: module.name.clone(),
                path: module.path.clone(),
            }
        })?);
        read.push((
            format!("kernel module {}", module.name),
            source_path.clone(),
        ));
        let data =
            kmod::read_uncompressed(&source_path).map_err(|error| InitramfsError::ReadSource {
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
