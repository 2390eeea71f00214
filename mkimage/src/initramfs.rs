//! Assembles an initramfs archive from a spec: files, directories, symlinks
//! and device nodes as written, the generated image description and default
//! parameters, and the kernel modules the spec names with their dependency
//! closure and the module index the init loads from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phase_initramfs::image::ImageInfo;
use phase_initramfs::layout;
use phase_initramfs::modindex::{IndexError, ModuleIndex};
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
            (Some(source), None) => {
                let source_path = match source.strip_prefix('@') {
                    Some(input) => inputs.named.get(input).cloned().ok_or_else(|| {
                        InitramfsError::MissingInput {
                            path: file.path.clone(),
                            input: input.to_owned(),
                        }
                    })?,
                    None => PathBuf::from(source),
                };
                std::fs::read(&source_path).map_err(|error| InitramfsError::ReadSource {
                    path: file.path.clone(),
                    source_path,
                    error,
                })?
            }
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
