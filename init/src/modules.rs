//! Stage 3: loading kernel modules with `finit_module`, in dependency order,
//! from the index mkimage wrote into the image.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use phase_initramfs::layout;
use phase_initramfs::modindex::{IndexError, ModuleIndex};
use serde::Serialize;
use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum ModulesError {
    #[error("reading the module index {path}")]
    ReadIndex {
        path: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("parsing the module index {path}")]
    ParseIndex {
        path: &'static str,
        #[source]
        error: serde_json::Error,
    },
    #[error("resolving modules")]
    Resolve(#[from] IndexError),
    #[error("opening module {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("finit_module({}, \"\", 0)", path.display())]
    FinitModule {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
}

/// How one module load went.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub name: String,
    /// `loaded`, or `present` when the kernel already had it.
    pub outcome: &'static str,
    pub ms: u64,
}

/// Reads the image's module index; an image without modules has an empty one.
pub fn read_index() -> Result<ModuleIndex, ModulesError> {
    let path = layout::MODULE_INDEX;
    match std::fs::read(path) {
        Ok(bytes) => {
            ModuleIndex::from_json(&bytes).map_err(|error| ModulesError::ParseIndex { path, error })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ModuleIndex::default()),
        Err(error) => Err(ModulesError::ReadIndex { path, error }),
    }
}

/// Loads `wanted` and their dependencies, skipping blacklisted names.
/// `on_load` is told about each module as it finishes.
pub fn load(
    index: &ModuleIndex,
    wanted: &[String],
    blacklist: &[String],
    mut on_load: impl FnMut(&Loaded),
) -> Result<Vec<Loaded>, ModulesError> {
    let wanted: Vec<&String> = wanted.iter().filter(|w| !blacklist.contains(w)).collect();
    let mut loaded = Vec::new();
    for entry in index.load_order(&wanted)? {
        if blacklist.contains(&entry.name) {
            continue;
        }
        let start = Instant::now();
        let path = Path::new(layout::MODULE_DIR).join(&entry.path);
        let outcome = load_file(&path)?;
        let done = Loaded {
            name: entry.name.clone(),
            outcome,
            ms: start.elapsed().as_millis() as u64,
        };
        on_load(&done);
        loaded.push(done);
    }
    Ok(loaded)
}

fn load_file(path: &Path) -> Result<&'static str, ModulesError> {
    let file = File::open(path).map_err(|error| ModulesError::Open {
        path: path.to_owned(),
        error,
    })?;
    let no_params = CString::default();
    match sys::finit_module(&file, &no_params, 0) {
        Ok(()) => Ok("loaded"),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok("present"),
        Err(error) => Err(ModulesError::FinitModule {
            path: path.to_owned(),
            error,
        }),
    }
}
