//! `phase publish`: a static provider tree that any HTTP server, CDN or object
//! store can serve without logic of its own.
//!
//! ```text
//! TREE/blobs/sha256/<hex>                 artifacts, named by their SHA-256
//! TREE/<channel>/<arch>/manifest.json     the signed envelope
//! ```
//!
//! Blobs never change once written (their name is their content), so a CDN
//! may cache them forever; only `manifest.json` changes between releases.
//! Every file is written to a temporary name and renamed into place, blobs
//! before the manifest, so a server never shows a manifest whose blobs are
//! missing or a blob half written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressStyle};
use phase_manifest::encoding::hex;
use phase_manifest::schema::{MANIFEST_TYPE, SPEC_VERSION};
use phase_manifest::{Arch, Artifact, Artifacts, Envelope, Handoff, Manifest, ManifestError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Where blobs live, relative to the tree root.
pub const BLOB_DIR: &str = "blobs/sha256";
/// Files at least this big get a progress bar while they are hashed.
pub const PROGRESS_THRESHOLD: u64 = 16 << 20;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("{name} {path}")]
    OpenArtifact {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{name} {path} is empty")]
    EmptyArtifact { name: &'static str, path: PathBuf },
    #[error("copy {name} {from} into {to}")]
    CopyArtifact {
        name: &'static str,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create {0}")]
    CreateDir(PathBuf, #[source] io::Error),
    #[error("write {0}")]
    WriteManifest(PathBuf, #[source] io::Error),
    #[error("the manifest would be refused by every verifier")]
    Manifest(#[source] ManifestError),
    #[error("no signing key given")]
    NoKeys,
}

/// Everything a release names.
pub struct Release {
    pub channel: String,
    pub arch: Arch,
    pub board: Option<String>,
    pub version: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub handoff: Handoff,
    pub cmdline: String,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub root_image: Option<PathBuf>,
}

/// What was published.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub manifest_path: PathBuf,
    pub channel: String,
    pub arch: Arch,
    pub version: u64,
    pub expires_at: u64,
    pub key_ids: Vec<String>,
    pub artifacts: Vec<PublishedArtifact>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedArtifact {
    pub name: &'static str,
    pub source: PathBuf,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The blob was already in the tree (same content, published before).
    pub reused: bool,
}

/// Publishes `release` into `tree`, signed by every key in `keys`.
pub fn publish(
    release: &Release,
    keys: &[SigningKey],
    tree: &Path,
    progress: bool,
) -> Result<Published, PublishError> {
    if keys.is_empty() {
        return Err(PublishError::NoKeys);
    }
    // Check the names before any file is written, so a typo leaves no blobs.
    phase_manifest::schema::check_name("channel", &release.channel)
        .map_err(PublishError::Manifest)?;
    if let Some(board) = &release.board {
        phase_manifest::schema::check_name("board", board).map_err(PublishError::Manifest)?;
    }
    let blob_dir = tree.join(BLOB_DIR);
    fs::create_dir_all(&blob_dir).map_err(|e| PublishError::CreateDir(blob_dir.clone(), e))?;

    let mut artifacts = Artifacts::default();
    let mut published = Vec::new();
    for (name, source, slot) in [
        ("kernel", &release.kernel, &mut artifacts.kernel),
        ("initrd", &release.initrd, &mut artifacts.initrd),
        ("dtb", &release.dtb, &mut artifacts.dtb),
        ("root_image", &release.root_image, &mut artifacts.root_image),
    ] {
        let Some(source) = source else { continue };
        let (artifact, reused) = store_blob(name, source, tree, progress)?;
        published.push(PublishedArtifact {
            name,
            source: source.clone(),
            path: artifact.path.clone(),
            sha256: artifact.sha256.clone(),
            size: artifact.size,
            reused,
        });
        *slot = Some(artifact);
    }

    let manifest = Manifest {
        kind: MANIFEST_TYPE.into(),
        spec_version: SPEC_VERSION.into(),
        channel: release.channel.clone(),
        arch: release.arch,
        board: release.board.clone(),
        version: release.version,
        issued_at: release.issued_at,
        expires_at: release.expires_at,
        handoff: release.handoff,
        cmdline: release.cmdline.clone(),
        artifacts,
    };
    // Refuse to sign what no verifier would accept.
    manifest.check().map_err(PublishError::Manifest)?;
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let envelope = Envelope::sign(manifest.to_payload(), &refs);

    let dir = tree.join(&release.channel).join(release.arch.as_str());
    fs::create_dir_all(&dir).map_err(|e| PublishError::CreateDir(dir.clone(), e))?;
    let manifest_path = dir.join("manifest.json");
    write_atomic(&manifest_path, envelope.to_json().as_bytes())
        .map_err(|e| PublishError::WriteManifest(manifest_path.clone(), e))?;
    Ok(Published {
        manifest_path,
        channel: release.channel.clone(),
        arch: release.arch,
        version: release.version,
        expires_at: release.expires_at,
        key_ids: keys
            .iter()
            .map(|k| crate::keys::key_id(k).to_string())
            .collect(),
        artifacts: published,
    })
}

/// Streams `source` into a temporary file in the tree while hashing it, then
/// renames it to its content address.
fn store_blob(
    name: &'static str,
    source: &Path,
    tree: &Path,
    progress: bool,
) -> Result<(Artifact, bool), PublishError> {
    let open_error = |e| PublishError::OpenArtifact {
        name,
        path: source.to_owned(),
        source: e,
    };
    let mut input = File::open(source).map_err(open_error)?;
    let size_hint = input.metadata().map_err(open_error)?.len();
    let blob_dir = tree.join(BLOB_DIR);
    let copy_error = |e| PublishError::CopyArtifact {
        name,
        from: source.to_owned(),
        to: blob_dir.clone(),
        source: e,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&blob_dir)
        .map_err(copy_error)?;
    let bar = progress_bar(name, source, size_hint, progress);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(copy_error(e)),
        };
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n]).map_err(copy_error)?;
        size += n as u64;
        bar.set_position(size);
    }
    bar.finish_and_clear();
    if size == 0 {
        return Err(PublishError::EmptyArtifact {
            name,
            path: source.to_owned(),
        });
    }
    let sha256 = hex(&hasher.finalize());
    let path = format!("{BLOB_DIR}/{sha256}");
    let target = tree.join(&path);
    // Same name, same content: a blob already present is this blob.
    let reused = target.exists();
    if !reused {
        temp.as_file().sync_all().map_err(copy_error)?;
        let file = temp.persist(&target).map_err(|e| copy_error(e.error))?;
        set_mode(&file, 0o644).map_err(copy_error)?;
    }
    Ok((Artifact { path, sha256, size }, reused))
}

fn progress_bar(name: &str, source: &Path, size: u64, progress: bool) -> ProgressBar {
    if !progress || size < PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("hashing {name} {}", source.display()));
    bar
}

fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, so readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    let file = temp.persist(path).map_err(|e| e.error)?;
    set_mode(&file, 0o644)
}
