//! `phase verify`: what a booting machine would decide about a manifest, and
//! optionally about every artifact it names, from a file or over HTTP(S).
//!
//! Artifacts over HTTP are fetched the way a resuming client fetches them: in
//! `Range` requests of `chunk_size` bytes (one request when the artifact is
//! smaller), each of which must come back `206` with exactly the
//! `Content-Range` asked for, and the pieces are hashed together in order. So
//! a pass shows the provider serves byte ranges correctly, not only whole
//! files. A server that ignores `Range` and answers the first request `200`
//! with the whole body is accepted (the body is hashed as it comes) and
//! reported as `ranged: false`.
//!
//! Bytes are hashed raw: the client asks for `identity` and refuses any
//! `Content-Encoding`.

use indicatif::{ProgressBar, ProgressStyle};
use phase_fetch::{Client, Config, FetchError, Roots};
use phase_manifest::{
    Arch, Artifact, ArtifactCheck, Binding, MAX_ENVELOPE_SIZE, Manifest, ManifestError, State,
    TrustStore,
};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The default size of one ranged request.
pub const DEFAULT_CHUNK: u64 = 8 << 20;

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("read {0}")]
    ReadFile(PathBuf, #[source] io::Error),
    #[error("read CA certificates {0}")]
    ReadCa(PathBuf, #[source] io::Error),
    #[error("CA file {0}")]
    Ca(PathBuf, #[source] FetchError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{location} is not at <channel>/<arch>/manifest.json; pass --channel and --arch{why}")]
    Locate { location: String, why: &'static str },
    #[error("manifest {location} refused")]
    Refused {
        location: String,
        #[source]
        source: ManifestError,
    },
    #[error("{name} {location}")]
    ArtifactFetch {
        name: &'static str,
        location: String,
        #[source]
        source: Box<VerifyError>,
    },
    #[error("{name} {location} refused")]
    Artifact {
        name: &'static str,
        location: String,
        #[source]
        source: ManifestError,
    },
}

/// Where the manifest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// A URL when it has an http(s) scheme, a file otherwise.
    pub fn parse(text: &str) -> Source {
        if text.starts_with("http://") || text.starts_with("https://") {
            Source::Url(text.to_owned())
        } else {
            Source::File(PathBuf::from(text))
        }
    }

    fn location(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }

    /// The path part, split in segments, without query or fragment.
    fn segments(&self) -> Vec<String> {
        let path = match self {
            Source::File(p) => p.to_string_lossy().into_owned(),
            Source::Url(u) => {
                let after_scheme = u.split_once("://").map_or(u.as_str(), |(_, rest)| rest);
                let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
                path.split(['?', '#']).next().unwrap_or("").to_owned()
            }
        };
        path.split('/').map(str::to_owned).collect()
    }

    /// `(channel, arch)` from a location ending in
    /// `<channel>/<arch>/manifest.json`.
    fn channel_arch(&self) -> Option<(String, String)> {
        let segments = self.segments();
        match segments.as_slice() {
            [.., channel, arch, last]
                if last == "manifest.json" && !channel.is_empty() && !arch.is_empty() =>
            {
                Some((channel.clone(), arch.clone()))
            }
            _ => None,
        }
    }

    /// The tree root: the location less `<channel>/<arch>/manifest.json`.
    fn root(&self) -> Option<Source> {
        self.channel_arch()?;
        match self {
            Source::File(p) => {
                let root = p.parent()?.parent()?.parent()?;
                Some(Source::File(if root.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    root.to_owned()
                }))
            }
            Source::Url(u) => {
                let base = u.split(['?', '#']).next().unwrap_or(u);
                let mut cut = base;
                for _ in 0..3 {
                    cut = &cut[..cut.rfind('/')?];
                }
                Some(Source::Url(format!("{cut}/")))
            }
        }
    }

    fn join(&self, relative: &str) -> Source {
        match self {
            Source::File(p) => Source::File(p.join(relative)),
            Source::Url(u) => Source::Url(format!("{u}{relative}")),
        }
    }
}

/// How to verify.
pub struct Options {
    pub trust: TrustStore,
    /// The machine's channel and arch; taken from the location when absent.
    pub channel: Option<String>,
    pub arch: Option<Arch>,
    pub board: Option<String>,
    pub state: State,
    pub artifacts: bool,
    pub chunk_size: u64,
    /// Extra CA certificates (PEM) instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    pub progress: bool,
}

/// What passed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub location: String,
    pub signed_by: Vec<String>,
    pub manifest: Manifest,
    pub artifacts: Vec<ArtifactReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactReport {
    pub name: &'static str,
    pub location: String,
    pub size: u64,
    pub sha256: String,
    /// HTTP requests made for it (0 for files).
    pub requests: u32,
    /// Whether the server answered with byte ranges.
    pub ranged: bool,
}

/// A provider client (see `phase_fetch`) trusting `ca`, or Mozilla's roots.
pub fn client(ca: Option<&Path>) -> Result<Client, VerifyError> {
    let roots = match ca {
        Some(ca) => {
            Roots::Pem(std::fs::read(ca).map_err(|e| VerifyError::ReadCa(ca.to_owned(), e))?)
        }
        None => Roots::WebPki,
    };
    Client::new(Config::new(roots)).map_err(|e| match (ca, e) {
        (Some(ca), e @ (FetchError::Ca(_) | FetchError::NoCa)) => VerifyError::Ca(ca.to_owned(), e),
        (_, e) => VerifyError::Fetch(e),
    })
}

/// Fetches `artifact` from `url` in ranged chunks into `check`. Returns
/// (requests made, whether the server answered with ranges).
fn fetch_artifact(
    client: &Client,
    url: &str,
    artifact: &Artifact,
    chunk_size: u64,
    check: &mut ArtifactCheck<'_>,
    bar: &ProgressBar,
) -> Result<(u32, bool), VerifyError> {
    // The check's refusal is kept whole, so it is reported as a refusal of
    // the artifact rather than as a transport error.
    let mut refusal = None;
    let result = client.get_to(
        url,
        0,
        artifact.size,
        Some(chunk_size.max(1)),
        &mut |bytes| {
            check.update(bytes).map_err(|e| {
                refusal = Some(e);
                "refused by the manifest's size and digest".into()
            })
        },
        &mut |done| bar.set_position(done),
    );
    if let Some(source) = refusal {
        return Err(VerifyError::Artifact {
            name: "artifact",
            location: url.to_owned(),
            source,
        });
    }
    let transfer = result?;
    Ok((transfer.requests, transfer.ranged))
}

/// Verifies the manifest at `source`, and with `options.artifacts` every
/// artifact it names. Returns at the first failure.
pub fn verify(source: &Source, options: &Options) -> Result<Report, VerifyError> {
    let location = source.location();
    let client = client(options.ca.as_deref())?;
    let bytes = match source {
        Source::Url(url) => client.get_capped(url, MAX_ENVELOPE_SIZE as u64)?,
        Source::File(path) => read_file_capped(path, MAX_ENVELOPE_SIZE)?,
    };

    let from_location = source.channel_arch();
    let (channel, arch) = match (&options.channel, options.arch) {
        (Some(channel), Some(arch)) => (channel.clone(), arch),
        (channel, arch) => {
            let Some((loc_channel, loc_arch)) = from_location else {
                return Err(VerifyError::Locate { location, why: "" });
            };
            let arch = match arch {
                Some(arch) => arch,
                None => loc_arch.parse().map_err(|source| VerifyError::Refused {
                    location: location.clone(),
                    source,
                })?,
            };
            (channel.clone().unwrap_or(loc_channel), arch)
        }
    };
    let binding = Binding {
        channel,
        arch,
        board: options.board.clone(),
    };
    let verified = phase_manifest::verify(&bytes, &options.trust, &binding, &options.state)
        .map_err(|source| VerifyError::Refused {
            location: location.clone(),
            source,
        })?;

    let mut artifacts = Vec::new();
    if options.artifacts {
        let root = source.root().ok_or_else(|| VerifyError::Locate {
            location: location.clone(),
            why: " is not enough: artifacts are found relative to the tree root",
        })?;
        for (name, artifact) in verified.manifest.artifacts.iter() {
            let at = root.join(&artifact.path);
            let at_location = at.location();
            let refused = |source| VerifyError::Artifact {
                name,
                location: at_location.clone(),
                source,
            };
            let mut check = ArtifactCheck::new(artifact);
            let bar = progress_bar(name, artifact.size, options.progress);
            let (requests, ranged) = match &at {
                Source::Url(url) => {
                    fetch_artifact(&client, url, artifact, options.chunk_size, &mut check, &bar)
                        .map_err(|e| match e {
                            VerifyError::Artifact { source, .. } => refused(source),
                            other => VerifyError::ArtifactFetch {
                                name,
                                location: at_location.clone(),
                                source: Box::new(other),
                            },
                        })?
                }
                Source::File(path) => {
                    hash_file(path, &mut check, &bar).map_err(|e| match e {
                        VerifyError::Artifact { source, .. } => refused(source),
                        other => other,
                    })?;
                    (0, false)
                }
            };
            bar.finish_and_clear();
            check.finish().map_err(refused)?;
            artifacts.push(ArtifactReport {
                name,
                location: at_location,
                size: artifact.size,
                sha256: artifact.sha256.clone(),
                requests,
                ranged,
            });
        }
    }
    Ok(Report {
        location,
        signed_by: verified.signed_by.iter().map(ToString::to_string).collect(),
        manifest: verified.manifest,
        artifacts,
    })
}

fn read_file_capped(path: &Path, cap: usize) -> Result<Vec<u8>, VerifyError> {
    let file = File::open(path).map_err(|e| VerifyError::ReadFile(path.to_owned(), e))?;
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| VerifyError::ReadFile(path.to_owned(), e))?;
    Ok(bytes)
}

fn hash_file(
    path: &Path,
    check: &mut ArtifactCheck<'_>,
    bar: &ProgressBar,
) -> Result<(), VerifyError> {
    let mut file = File::open(path).map_err(|e| VerifyError::ReadFile(path.to_owned(), e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(VerifyError::ReadFile(path.to_owned(), e)),
        };
        check
            .update(&buf[..n])
            .map_err(|source| VerifyError::Artifact {
                name: "artifact",
                location: path.display().to_string(),
                source,
            })?;
        bar.inc(n as u64);
    }
}

fn progress_bar(name: &str, size: u64, progress: bool) -> ProgressBar {
    if !progress || size < crate::publish::PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("verifying {name}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_channel_arch_and_root() {
        type Case = (
            &'static str,
            Option<(&'static str, &'static str)>,
            Option<Source>,
        );
        let table: &[Case] = &[
            (
                "http://10.0.2.2:8080/stable/x86_64/manifest.json",
                Some(("stable", "x86_64")),
                Some(Source::Url("http://10.0.2.2:8080/".into())),
            ),
            (
                "https://cdn.example/boot/beta/aarch64/manifest.json?x=1",
                Some(("beta", "aarch64")),
                Some(Source::Url("https://cdn.example/boot/".into())),
            ),
            (
                "tree/stable/x86_64/manifest.json",
                Some(("stable", "x86_64")),
                Some(Source::File("tree".into())),
            ),
            (
                "stable/x86_64/manifest.json",
                Some(("stable", "x86_64")),
                Some(Source::File(".".into())),
            ),
            ("manifest.json", None, None),
            ("http://h/manifest.json", None, None),
            ("http://h/x86_64/m.json", None, None),
            ("http://h/x86_64/manifest.json", None, None),
        ];
        for (text, channel_arch, root) in table {
            let source = Source::parse(text);
            assert_eq!(
                source.channel_arch(),
                channel_arch.map(|(c, a)| (c.to_owned(), a.to_owned())),
                "{text}"
            );
            assert_eq!(&source.root(), root, "{text}");
        }
    }
}
