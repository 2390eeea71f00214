//! `phase publish`: a static provider tree that any HTTP server, CDN or object
//! store can serve without logic of its own.
//!
//! ```text
//! TREE/blobs/sha256/<hex>                 artifacts, named by their SHA-256
//! TREE/<channel>/<arch>/manifest.json     the signed envelope
//! TREE/rotations/index.json               the key rotation chain, when there
//! TREE/rotations/<generation>.json        is one (phase_manifest::rotation)
//! ```
//!
//! Blobs never change once written (their name is their content), so a CDN
//! may cache them forever; only `manifest.json` and the rotation index change
//! between releases.
//!
//! A publish either happens whole or leaves the tree as it was. Everything
//! that can refuse is checked first: names, what each artifact file is
//! (`formats`), the manifest's own checks, a downgrade against the manifest
//! already there, the rotation chain, and whether machines following that
//! chain would accept the signers. Blobs are hashed into a staging directory
//! inside the tree meanwhile, which a refusal removes. Only then are files
//! renamed into place, blobs before rotations before the manifest, so a
//! server never shows a manifest whose blobs or keys are missing, nor a blob
//! half written. A blob already in the tree is used only if its size and
//! SHA-256 are right; a damaged one is replaced (by rename, atomically).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressStyle};
use phase_manifest::encoding::hex;
use phase_manifest::rotation::{self, INDEX_PATH, Index, MAX_INDEX_SIZE};
use phase_manifest::schema::{MANIFEST_TYPE, SPEC_VERSION};
use phase_manifest::{
    Arch, Artifact, Artifacts, Binding, Envelope, Handoff, KeyId, MAX_ENVELOPE_SIZE, Manifest,
    ManifestError, Rotation, State, TrustStore,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::formats::{self, FormatsError};

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
    #[error(transparent)]
    Format(#[from] FormatsError),
    #[error("copy {name} {from} into {to}")]
    CopyArtifact {
        name: &'static str,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("check the blob already at {0}")]
    CheckBlob(PathBuf, #[source] io::Error),
    #[error("create {0}")]
    CreateDir(PathBuf, #[source] io::Error),
    #[error("write {0}")]
    WriteManifest(PathBuf, #[source] io::Error),
    #[error("the manifest would be refused by every verifier")]
    Manifest(#[source] ManifestError),
    #[error("no signing key given")]
    NoKeys,
    #[error(
        "{path} publishes version {existing}; version {version} would replace it with an older release (pass --allow-downgrade to do so)"
    )]
    Downgrade {
        path: PathBuf,
        existing: u64,
        version: u64,
    },
    #[error(
        "{path} already publishes version {version} with other artifacts, cmdline or hand-off; a new release needs a new version (or pass --allow-downgrade)"
    )]
    SameVersion { path: PathBuf, version: u64 },
    #[error(
        "{path} is not a manifest this tool can read, so a downgrade cannot be ruled out (move it away, or pass --allow-downgrade)"
    )]
    ExistingManifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("read {0}")]
    ReadTree(PathBuf, #[source] io::Error),
    #[error("rotation {0}")]
    Rotation(PathBuf, #[source] ManifestError),
    #[error("the tree's rotation index {0}")]
    RotationIndex(PathBuf, #[source] ManifestError),
    #[error(
        "--rotation needs --trust-store: the trust store the chain starts from (an image's /etc/phase/trust.json)"
    )]
    RotationNeedsTrust,
    #[error("{0} already holds a different rotation to generation {1}")]
    RotationConflict(PathBuf, u64),
    #[error("the rotation chain would be refused by machines")]
    Chain(#[source] ManifestError),
    #[error(
        "machines that follow the tree's key rotation to generation {generation} trust {trusted} with threshold {threshold}; the manifest is signed by {signers}, so they would refuse it"
    )]
    SignersNotTrusted {
        generation: u64,
        trusted: String,
        threshold: usize,
        signers: String,
    },
    #[error("machines with trust store generation {generation} would refuse the manifest")]
    Refused {
        generation: u64,
        #[source]
        source: ManifestError,
    },
}

/// Everything a release names.
pub struct Release {
    pub channel: String,
    pub arch: Arch,
    pub board: Option<String>,
    pub version: u64,
    /// The publisher's floor: machines that hand off under this release
    /// store it and refuse anything below it from then on.
    pub floor: Option<u64>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub handoff: Handoff,
    pub cmdline: String,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub root_image: Option<PathBuf>,
}

/// How to publish, beyond the release itself.
#[derive(Default)]
pub struct Options {
    /// A progress bar on stderr for big files.
    pub progress: bool,
    /// Replace a newer published version, or the same version with other
    /// content.
    pub allow_downgrade: bool,
    /// Rotation envelopes (from `phase rotate`) to add to the tree's chain.
    pub rotations: Vec<PathBuf>,
    /// The trust store images start from. Needed with `rotations`; when
    /// given, the manifest is also verified as such a machine would.
    pub trust_store: Option<TrustStore>,
}

/// What was published.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub manifest_path: PathBuf,
    pub channel: String,
    pub arch: Arch,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<u64>,
    pub expires_at: u64,
    pub key_ids: Vec<String>,
    pub artifacts: Vec<PublishedArtifact>,
    /// The generations of the tree's rotation chain this publish added.
    pub rotations_added: Vec<u64>,
    /// The newest generation of the tree's chain (0: none).
    pub rotation_latest: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedArtifact {
    pub name: &'static str,
    pub source: PathBuf,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The blob was already in the tree with this content.
    pub reused: bool,
    /// A blob of that name was in the tree with other content (damaged),
    /// and was replaced.
    pub replaced: bool,
}

/// Publishes `release` into `tree`, signed by every key in `keys`, with
/// default [`Options`].
pub fn publish(
    release: &Release,
    keys: &[SigningKey],
    tree: &Path,
    progress: bool,
) -> Result<Published, PublishError> {
    let options = Options {
        progress,
        ..Options::default()
    };
    publish_with(release, keys, tree, &options)
}

/// Removes the tree directory on drop if this publish created it and left
/// it empty (a refused first publish leaves nothing).
struct CreatedTree<'a> {
    tree: &'a Path,
    created: bool,
}

impl Drop for CreatedTree<'_> {
    fn drop(&mut self) {
        if self.created {
            // Fails, as it should, if anything was published into it.
            let _ = fs::remove_dir(self.tree);
        }
    }
}

/// Publishes `release` into `tree`, signed by every key in `keys`.
pub fn publish_with(
    release: &Release,
    keys: &[SigningKey],
    tree: &Path,
    options: &Options,
) -> Result<Published, PublishError> {
    if keys.is_empty() {
        return Err(PublishError::NoKeys);
    }
    // Everything that needs only the arguments and the input files first.
    phase_manifest::schema::check_name("channel", &release.channel)
        .map_err(PublishError::Manifest)?;
    if let Some(board) = &release.board {
        phase_manifest::schema::check_name("board", board).map_err(PublishError::Manifest)?;
    }
    let inputs: Vec<(&'static str, &PathBuf)> = [
        ("kernel", &release.kernel),
        ("initrd", &release.initrd),
        ("dtb", &release.dtb),
        ("root_image", &release.root_image),
    ]
    .into_iter()
    .filter_map(|(name, path)| path.as_ref().map(|p| (name, p)))
    .collect();
    for (name, path) in &inputs {
        formats::check(name, path, release.arch)?;
    }
    let dir = tree.join(&release.channel).join(release.arch.as_str());
    let manifest_path = dir.join("manifest.json");
    let existing = read_existing(&manifest_path, options.allow_downgrade)?;
    let chain = plan_rotations(tree, options)?;

    let created = CreatedTree {
        tree,
        created: !tree.exists(),
    };
    fs::create_dir_all(tree).map_err(|e| PublishError::CreateDir(tree.to_owned(), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(tree)
        .map_err(|e| PublishError::CreateDir(tree.to_owned(), e))?;

    let mut artifacts = Artifacts::default();
    let mut staged = Vec::new();
    for (name, source) in &inputs {
        let blob = stage_blob(name, source, staging.path(), options.progress)?;
        let slot = match *name {
            "kernel" => &mut artifacts.kernel,
            "initrd" => &mut artifacts.initrd,
            "dtb" => &mut artifacts.dtb,
            _ => &mut artifacts.root_image,
        };
        *slot = Some(blob.artifact.clone());
        staged.push(blob);
    }

    let manifest = Manifest {
        kind: MANIFEST_TYPE.into(),
        spec_version: SPEC_VERSION.into(),
        channel: release.channel.clone(),
        arch: release.arch,
        board: release.board.clone(),
        version: release.version,
        floor: release.floor,
        issued_at: release.issued_at,
        expires_at: release.expires_at,
        handoff: release.handoff,
        cmdline: release.cmdline.clone(),
        artifacts,
    };
    // Refuse to sign what no verifier would accept.
    manifest.check().map_err(PublishError::Manifest)?;
    if let Some(existing) = &existing
        && !options.allow_downgrade
    {
        check_downgrade(&manifest_path, existing, &manifest)?;
    }
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let envelope = Envelope::sign(manifest.to_payload(), &refs).to_json();
    check_signers(&chain, keys)?;
    if let Some(store) = &chain.store {
        let binding = Binding {
            channel: release.channel.clone(),
            arch: release.arch,
            board: release.board.clone(),
        };
        let state = State {
            now: crate::time::now().max(release.issued_at),
            ..State::default()
        };
        phase_manifest::verify(envelope.as_bytes(), store, &binding, &state).map_err(|source| {
            PublishError::Refused {
                generation: store.generation,
                source,
            }
        })?;
    }

    // Every check passed: move the files into place.
    let blob_dir = tree.join(BLOB_DIR);
    fs::create_dir_all(&blob_dir).map_err(|e| PublishError::CreateDir(blob_dir.clone(), e))?;
    let mut published = Vec::new();
    for blob in staged {
        published.push(commit_blob(blob, tree)?);
    }
    let rotations_added = commit_rotations(tree, &chain)?;
    fs::create_dir_all(&dir).map_err(|e| PublishError::CreateDir(dir.clone(), e))?;
    write_atomic(&manifest_path, envelope.as_bytes())
        .map_err(|e| PublishError::WriteManifest(manifest_path.clone(), e))?;
    drop(staging);
    drop(created);
    Ok(Published {
        manifest_path,
        channel: release.channel.clone(),
        arch: release.arch,
        version: release.version,
        floor: release.floor,
        expires_at: release.expires_at,
        key_ids: keys
            .iter()
            .map(|k| crate::keys::key_id(k).to_string())
            .collect(),
        artifacts: published,
        rotations_added,
        rotation_latest: chain.latest,
    })
}

/// The manifest already published at `path`, if any. One that cannot be
/// read is refused unless a downgrade is allowed anyway.
fn read_existing(path: &Path, allow_downgrade: bool) -> Result<Option<Manifest>, PublishError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PublishError::ReadTree(path.to_owned(), e)),
    };
    // The tree is the publisher's own: its signatures are not the question
    // here, only which release it names.
    let parsed =
        Envelope::from_json(&bytes).and_then(|envelope| Manifest::from_payload(&envelope.payload));
    match parsed {
        Ok(manifest) => Ok(Some(manifest)),
        Err(_) if allow_downgrade => Ok(None),
        Err(source) => Err(PublishError::ExistingManifest {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A newer version may replace an older one; the same version only with
/// the same release (artifacts, cmdline, hand-off, board): re-signing it with
/// a new expiry is how a release is kept alive.
fn check_downgrade(path: &Path, existing: &Manifest, new: &Manifest) -> Result<(), PublishError> {
    if existing.version > new.version {
        return Err(PublishError::Downgrade {
            path: path.to_owned(),
            existing: existing.version,
            version: new.version,
        });
    }
    let release = |m: &Manifest| Manifest {
        issued_at: 0,
        expires_at: 0,
        ..m.clone()
    };
    if existing.version == new.version && release(existing) != release(new) {
        return Err(PublishError::SameVersion {
            path: path.to_owned(),
            version: new.version,
        });
    }
    Ok(())
}

/// The tree's rotation chain after this publish.
struct ChainPlan {
    /// The newest generation (0: no chain).
    latest: u64,
    /// Steps to write: generation → envelope bytes.
    new_steps: BTreeMap<u64, Vec<u8>>,
    /// Keys and threshold at the end of the chain.
    end: Option<(u64, Vec<KeyId>, usize)>,
    /// With a trust store: the store a machine built from it reaches.
    store: Option<TrustStore>,
}

/// Reads the tree's chain, adds `options.rotations` to it, and checks it
/// from `options.trust_store` the way a machine follows it.
fn plan_rotations(tree: &Path, options: &Options) -> Result<ChainPlan, PublishError> {
    let index_path = tree.join(INDEX_PATH);
    let mut latest = match read_optional(&index_path, MAX_INDEX_SIZE)? {
        Some(bytes) => {
            Index::from_json(&bytes)
                .map_err(|e| PublishError::RotationIndex(index_path.clone(), e))?
                .latest
        }
        None => 0,
    };
    if !options.rotations.is_empty() && options.trust_store.is_none() {
        return Err(PublishError::RotationNeedsTrust);
    }
    let mut new_steps = BTreeMap::new();
    for file in &options.rotations {
        let bytes = fs::read(file).map_err(|e| PublishError::ReadTree(file.clone(), e))?;
        let rotation = Envelope::from_json(&bytes)
            .and_then(|envelope| Rotation::from_payload(&envelope.payload))
            .map_err(|e| PublishError::Rotation(file.clone(), e))?;
        let at = tree.join(rotation::step_path(rotation.generation));
        match read_optional(&at, MAX_ENVELOPE_SIZE)? {
            Some(present) if present == bytes => continue,
            Some(_) => return Err(PublishError::RotationConflict(at, rotation.generation)),
            None => {}
        }
        if new_steps.insert(rotation.generation, bytes).is_some() {
            return Err(PublishError::RotationConflict(at, rotation.generation));
        }
        latest = latest.max(rotation.generation);
    }
    let step = |generation: u64| -> Result<Option<Vec<u8>>, PublishError> {
        match new_steps.get(&generation) {
            Some(bytes) => Ok(Some(bytes.clone())),
            None => read_optional(
                &tree.join(rotation::step_path(generation)),
                MAX_ENVELOPE_SIZE,
            ),
        }
    };
    let store = match &options.trust_store {
        Some(base) => {
            let mut read_error = None;
            let chain = rotation::follow(base, latest, |path| {
                let generation = path
                    .strip_prefix("rotations/")
                    .and_then(|p| p.strip_suffix(".json"))
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0);
                match step(generation) {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err("absent from the tree".into()),
                    Err(e) => {
                        let text = e.to_string();
                        read_error = Some(e);
                        Err(text)
                    }
                }
            });
            if let Some(e) = read_error {
                return Err(e);
            }
            if let Some(stopped) = chain.stopped {
                return Err(PublishError::Chain(stopped));
            }
            Some(chain.store)
        }
        None => None,
    };
    let end = match &store {
        // No chain: the full verification with the store says the rest.
        _ if latest == 0 => None,
        Some(store) => Some((
            store.generation,
            store.keys().iter().map(|k| k.id()).collect(),
            store.threshold(),
        )),
        None if latest > 0 => {
            // Without a trust store the last step's keys are read without
            // judging its signatures: enough to know whom machines that
            // followed the chain trust.
            let path = tree.join(rotation::step_path(latest));
            let bytes = step(latest)?.ok_or_else(|| {
                PublishError::ReadTree(path.clone(), io::ErrorKind::NotFound.into())
            })?;
            let rotation = Envelope::from_json(&bytes)
                .and_then(|envelope| Rotation::from_payload(&envelope.payload))
                .map_err(|e| PublishError::Rotation(path.clone(), e))?;
            let ids = rotation
                .keys
                .iter()
                .map(|r| r.to_public_key().map(|k| k.id()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PublishError::Rotation(path, e))?;
            Some((latest, ids, rotation.threshold))
        }
        None => None,
    };
    Ok(ChainPlan {
        latest,
        new_steps,
        end,
        store,
    })
}

/// Machines that follow the chain trust only its last keys: the signers
/// must meet that threshold.
fn check_signers(chain: &ChainPlan, keys: &[SigningKey]) -> Result<(), PublishError> {
    let Some((generation, trusted, threshold)) = &chain.end else {
        return Ok(());
    };
    let mut signers: Vec<KeyId> = keys.iter().map(crate::keys::key_id).collect();
    signers.dedup();
    let counted = signers.iter().filter(|id| trusted.contains(id)).count();
    if counted >= *threshold {
        return Ok(());
    }
    let short = |ids: &[KeyId]| {
        ids.iter()
            .map(|id| format!("{}…", &id.to_string()[..16]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(PublishError::SignersNotTrusted {
        generation: *generation,
        trusted: short(trusted),
        threshold: *threshold,
        signers: short(&signers),
    })
}

/// Writes the new steps, then the index, each atomically.
fn commit_rotations(tree: &Path, chain: &ChainPlan) -> Result<Vec<u64>, PublishError> {
    if chain.new_steps.is_empty() {
        return Ok(Vec::new());
    }
    let dir = tree.join("rotations");
    fs::create_dir_all(&dir).map_err(|e| PublishError::CreateDir(dir.clone(), e))?;
    for (generation, bytes) in &chain.new_steps {
        let path = tree.join(rotation::step_path(*generation));
        write_atomic(&path, bytes).map_err(|e| PublishError::WriteManifest(path.clone(), e))?;
    }
    let index = tree.join(INDEX_PATH);
    write_atomic(&index, Index::new(chain.latest).to_json().as_bytes())
        .map_err(|e| PublishError::WriteManifest(index.clone(), e))?;
    Ok(chain.new_steps.keys().copied().collect())
}

/// The bytes of `path` (at most `cap` + 1), or `None` if it does not exist.
fn read_optional(path: &Path, cap: usize) -> Result<Option<Vec<u8>>, PublishError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PublishError::ReadTree(path.to_owned(), e)),
    };
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PublishError::ReadTree(path.to_owned(), e))?;
    Ok(Some(bytes))
}

/// An artifact hashed into the staging directory, not yet in the tree.
struct Staged {
    name: &'static str,
    source: PathBuf,
    artifact: Artifact,
    temp: tempfile::NamedTempFile,
}

/// Streams `source` into a file in `staging` while hashing it.
fn stage_blob(
    name: &'static str,
    source: &Path,
    staging: &Path,
    progress: bool,
) -> Result<Staged, PublishError> {
    let open_error = |e| PublishError::OpenArtifact {
        name,
        path: source.to_owned(),
        source: e,
    };
    let mut input = File::open(source).map_err(open_error)?;
    let size_hint = input.metadata().map_err(open_error)?.len();
    let copy_error = |e| PublishError::CopyArtifact {
        name,
        from: source.to_owned(),
        to: staging.to_owned(),
        source: e,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(name)
        .tempfile_in(staging)
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
    Ok(Staged {
        name,
        source: source.to_owned(),
        artifact: Artifact {
            path: format!("{BLOB_DIR}/{sha256}"),
            sha256,
            size,
        },
        temp,
    })
}

/// Whether the file at `path` has exactly `size` bytes hashing to `sha256`.
/// `None` when there is no file.
fn blob_matches(path: &Path, size: u64, sha256: &str) -> io::Result<Option<bool>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() != size {
        return Ok(Some(false));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(hex(&hasher.finalize()) == sha256))
}

/// Puts a staged blob at its content address, unless an intact copy is
/// there already; a damaged copy is replaced by rename.
fn commit_blob(blob: Staged, tree: &Path) -> Result<PublishedArtifact, PublishError> {
    let target = tree.join(&blob.artifact.path);
    let present = blob_matches(&target, blob.artifact.size, &blob.artifact.sha256)
        .map_err(|e| PublishError::CheckBlob(target.clone(), e))?;
    let copy_error = |e| PublishError::CopyArtifact {
        name: blob.name,
        from: blob.source.clone(),
        to: target.clone(),
        source: e,
    };
    let reused = present == Some(true);
    if !reused {
        blob.temp.as_file().sync_all().map_err(copy_error)?;
        let file = blob
            .temp
            .persist(&target)
            .map_err(|e| copy_error(e.error))?;
        set_mode(&file, 0o644).map_err(copy_error)?;
    }
    Ok(PublishedArtifact {
        name: blob.name,
        source: blob.source.clone(),
        path: blob.artifact.path.clone(),
        sha256: blob.artifact.sha256.clone(),
        size: blob.artifact.size,
        reused,
        replaced: present == Some(false),
    })
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
