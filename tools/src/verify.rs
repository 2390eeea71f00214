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
//!
//! Before the manifest is judged, the tree's key rotation chain
//! (`rotations/index.json` beside `<channel>/`, see
//! `phase_manifest::rotation`) is followed from the given trust store exactly
//! as a booting machine follows it, and the outcome says which store judged:
//! keys, threshold, generation and floors.

use indicatif::{ProgressBar, ProgressStyle};
use phase_fetch::{Client, Config, FetchError, Roots};
use phase_manifest::rotation::{self, INDEX_PATH, Index, MAX_INDEX_SIZE};
use phase_manifest::{
    Arch, Artifact, ArtifactCheck, Binding, MAX_ENVELOPE_SIZE, Manifest, ManifestError, State,
    TrustStore,
};
use serde::Serialize;
use std::fmt;
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
    /// The trust store a machine was built with.
    pub trust: TrustStore,
    /// Where it came from, for the report (`--trust keys`, a file).
    pub trust_from: String,
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

/// The trust a manifest was judged by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustSummary {
    pub from: String,
    pub keys: Vec<String>,
    pub threshold: usize,
    pub generation: u64,
    pub version_floor: u64,
    pub max_version_jump: u64,
    pub time_floor: u64,
}

impl TrustSummary {
    pub fn of(store: &TrustStore, from: &str) -> TrustSummary {
        TrustSummary {
            from: from.to_owned(),
            keys: store.keys().iter().map(|k| k.id().to_string()).collect(),
            threshold: store.threshold(),
            generation: store.generation,
            version_floor: store.version_floor,
            max_version_jump: store.max_version_jump,
            time_floor: store.time_floor,
        }
    }
}

impl fmt::Display for TrustSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| &k[..k.len().min(16)]).collect();
        write!(
            f,
            "{} key{} ({}…), threshold {}, generation {}, version floor {}, max version jump {}, time floor {} ({})",
            self.keys.len(),
            if self.keys.len() == 1 { "" } else { "s" },
            keys.join("…, "),
            self.threshold,
            self.generation,
            self.version_floor,
            self.max_version_jump,
            crate::time::rfc3339(self.time_floor),
            self.from
        )
    }
}

/// What following the tree's key rotation chain did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// Where the index was looked for; `None` when the manifest's location
    /// is not inside a tree.
    pub index: Option<String>,
    /// The generation the index names, when there is one.
    pub latest: Option<u64>,
    /// The generations applied, in order.
    pub applied: Vec<u64>,
    /// Why the chain stopped early, or why the index could not be used.
    pub stopped: Option<String>,
}

impl fmt::Display for RotationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(index) = &self.index else {
            return f.write_str("not looked for (the manifest is not inside a tree)");
        };
        match (self.latest, self.applied.as_slice()) {
            (None, _) if self.stopped.is_none() => write!(f, "none published ({index} absent)")?,
            (None, _) => write!(f, "index {index} unusable")?,
            (Some(latest), []) => write!(f, "{index} names generation {latest}; nothing applied")?,
            (Some(latest), applied) => {
                let list: Vec<String> = applied.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "{index} names generation {latest}; applied {}",
                    list.join(", ")
                )?;
            }
        }
        if let Some(stopped) = &self.stopped {
            write!(f, "; {stopped}")?;
        }
        Ok(())
    }
}

/// A verification's result together with the trust it was judged by, which
/// is reported whether the manifest passed or not.
#[derive(Debug)]
pub struct Outcome {
    /// The trust store given.
    pub trust: TrustSummary,
    pub rotation: RotationReport,
    /// The store after the rotation chain: what judged the manifest.
    pub judged_by: TrustSummary,
    pub result: Result<Report, VerifyError>,
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

/// Verifies the manifest at `source` after following the tree's rotation
/// chain, and with `options.artifacts` every artifact it names. Stops at the
/// first failure.
pub fn verify(source: &Source, options: &Options) -> Outcome {
    let trust = TrustSummary::of(&options.trust, &options.trust_from);
    let unjudged = |result| Outcome {
        trust: trust.clone(),
        rotation: RotationReport {
            index: None,
            latest: None,
            applied: Vec::new(),
            stopped: None,
        },
        judged_by: trust.clone(),
        result,
    };
    let client = match client(options.ca.as_deref()) {
        Ok(c) => c,
        Err(e) => return unjudged(Err(e)),
    };
    let (store, rotation) = follow_rotations(&client, source, &options.trust);
    let judged_by = TrustSummary::of(
        &store,
        &if rotation.applied.is_empty() {
            options.trust_from.clone()
        } else {
            format!("{} after key rotation", options.trust_from)
        },
    );
    let result = verify_with(&client, source, &store, options);
    Outcome {
        trust,
        rotation,
        judged_by,
        result,
    }
}

/// Follows the tree's rotation chain from `trust`, as the init does before
/// it verifies a manifest. An absent index means no rotation; an unusable
/// one, or a bad step, is reported and leaves the store where it got to.
fn follow_rotations(
    client: &Client,
    source: &Source,
    trust: &TrustStore,
) -> (TrustStore, RotationReport) {
    let mut report = RotationReport {
        index: None,
        latest: None,
        applied: Vec::new(),
        stopped: None,
    };
    let Some(root) = source.root() else {
        return (trust.clone(), report);
    };
    let index_at = root.join(INDEX_PATH);
    report.index = Some(index_at.location());
    let bytes = match read_capped(client, &index_at, MAX_INDEX_SIZE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return (trust.clone(), report),
        Err(e) => {
            report.stopped = Some(format!("rotation index: {}", chain_text(&e)));
            return (trust.clone(), report);
        }
    };
    let latest = match Index::from_json(&bytes) {
        Ok(index) => index.latest,
        Err(e) => {
            report.stopped = Some(format!("rotation index: {}", chain_text(&e)));
            return (trust.clone(), report);
        }
    };
    report.latest = Some(latest);
    let chain = rotation::follow(trust, latest, |path| {
        match read_capped(client, &root.join(path), MAX_ENVELOPE_SIZE) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err("absent".into()),
            Err(e) => Err(chain_text(&e)),
        }
    });
    report.applied = chain.applied;
    report.stopped = chain.stopped.map(|e| chain_text(&e));
    (chain.store, report)
}

/// The bytes at `at`, at most `cap` (one more shows the cap was passed), or
/// `None` when there is no such file (HTTP 404).
fn read_capped(client: &Client, at: &Source, cap: usize) -> Result<Option<Vec<u8>>, VerifyError> {
    match at {
        Source::Url(url) => match client.get_capped(url, cap as u64) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(FetchError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        },
        Source::File(path) => match read_file_capped(path, cap) {
            Err(VerifyError::ReadFile(_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        },
    }
}

/// An error and its sources on one line.
pub fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn verify_with(
    client: &Client,
    source: &Source,
    trust: &TrustStore,
    options: &Options,
) -> Result<Report, VerifyError> {
    let location = source.location();
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
    let verified =
        phase_manifest::verify(&bytes, trust, &binding, &options.state).map_err(|source| {
            VerifyError::Refused {
                location: location.clone(),
                source,
            }
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
                    fetch_artifact(client, url, artifact, options.chunk_size, &mut check, &bar)
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

/// The human report: what goes to stdout (trust, rotation, and on success
/// what passed), and the error line for stderr when it failed.
pub fn render_text(outcome: &Outcome) -> (String, Option<String>) {
    let mut out = format!("trust: {}\n", outcome.trust);
    out.push_str(&format!("rotation: {}\n", outcome.rotation));
    if outcome.judged_by.generation != outcome.trust.generation {
        out.push_str(&format!("judged by: {}\n", outcome.judged_by));
    }
    let report = match &outcome.result {
        Ok(report) => report,
        Err(e) => return (out, Some(chain_text(e))),
    };
    let m = &report.manifest;
    out.push_str(&format!("ok  manifest {}\n", report.location));
    out.push_str(&format!(
        "    {} {} version {} {} issued {} expires {}\n",
        m.channel,
        m.arch,
        m.version,
        m.handoff.as_str(),
        crate::time::rfc3339(m.issued_at),
        crate::time::rfc3339(m.expires_at)
    ));
    for id in &report.signed_by {
        out.push_str(&format!("    signed by {id}\n"));
    }
    for a in &report.artifacts {
        let how = match (a.requests, a.ranged) {
            (0, _) => "file".to_owned(),
            (n, true) => format!("{n} ranged requests"),
            (n, false) => format!("{n} requests, server ignored Range"),
        };
        out.push_str(&format!("ok  {} {} bytes ({how})\n", a.name, a.size));
    }
    (out, None)
}

/// The JSON report: `ok`, the trust and rotation, then the report or the
/// error.
pub fn render_json(outcome: &Outcome) -> serde_json::Value {
    let mut value = match &outcome.result {
        Ok(report) => {
            let mut v = serde_json::to_value(report).unwrap_or_default();
            v["ok"] = true.into();
            v
        }
        Err(e) => serde_json::json!({ "ok": false, "error": chain_text(e) }),
    };
    value["trust"] = serde_json::to_value(&outcome.trust).unwrap_or_default();
    value["rotation"] = serde_json::to_value(&outcome.rotation).unwrap_or_default();
    value["judged_by"] = serde_json::to_value(&outcome.judged_by).unwrap_or_default();
    value
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

    /// xorshift64*, seeded, so a failing case is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        /// Mostly edge values: 0, 1, the limits of the CLI and of u64.
        fn number(&mut self) -> u64 {
            let edges = [
                0,
                1,
                999,
                1000,
                1001,
                crate::time::MAX_TIME,
                crate::time::MAX_TIME + 1,
                u64::MAX - 1,
                u64::MAX,
            ];
            match self.below(3) {
                0 => edges[self.below(edges.len() as u64) as usize],
                1 => self.below(2_000_000_000),
                _ => self.next(),
            }
        }

        fn name(&mut self) -> String {
            const CHARS: &[u8] = b"abcXYZ019-_.";
            let len = 1 + self.below(64) as usize;
            let mut name: String = (0..len)
                .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
                .collect();
            if name.starts_with('.') {
                name.replace_range(..1, "a");
            }
            name
        }

        fn cmdline(&mut self) -> String {
            const PIECES: &[&str] = &[
                "console=ttyS0",
                " ",
                "\"",
                "=",
                "\u{e0}",
                "\u{a0}",
                "\u{1f600}",
                "\\",
                "%",
                "{}",
                "{0}",
                "\u{200b}",
                "x",
            ];
            let mut line = String::new();
            for _ in 0..self.below(40) {
                line.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
            while line.len() > phase_manifest::schema::MAX_CMDLINE {
                line.pop();
            }
            line
        }

        fn artifact(&mut self) -> Artifact {
            let digest: String = (0..32)
                .map(|_| format!("{:02x}", self.next() as u8))
                .collect();
            Artifact {
                path: format!("{}/{}", self.name().replace("..", "a."), digest),
                sha256: digest,
                size: 1 + self.below(phase_manifest::schema::MAX_ARTIFACT_SIZE),
            }
        }
    }

    #[test]
    fn any_valid_manifest_verifies_or_fails_and_prints_without_panic() {
        use phase_manifest::schema::{MANIFEST_TYPE, SPEC_VERSION};
        use phase_manifest::{Artifacts, Envelope, Handoff};
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let public = crate::keys::public_of(&key);
        let mut rng = Rng(0x007e_570f_9e11);
        let mut passed = 0;
        for case in 0..400 {
            let a = rng.number();
            let b = rng.number();
            let handoff = if rng.below(4) == 0 {
                Handoff::SwitchRoot
            } else {
                Handoff::Kexec
            };
            let mut artifacts = Artifacts::default();
            let cmdline = match handoff {
                Handoff::Kexec => {
                    artifacts.kernel = Some(rng.artifact());
                    if rng.below(2) == 0 {
                        artifacts.initrd = Some(rng.artifact());
                    }
                    if rng.below(3) == 0 {
                        artifacts.dtb = Some(rng.artifact());
                    }
                    rng.cmdline()
                }
                Handoff::SwitchRoot => {
                    artifacts.root_image = Some(rng.artifact());
                    String::new()
                }
            };
            let manifest = Manifest {
                kind: MANIFEST_TYPE.into(),
                spec_version: SPEC_VERSION.into(),
                channel: rng.name(),
                arch: if rng.below(2) == 0 {
                    Arch::X86_64
                } else {
                    Arch::Aarch64
                },
                board: (rng.below(2) == 0).then(|| rng.name()),
                version: rng.number(),
                issued_at: a.min(b),
                expires_at: a.max(b),
                handoff,
                cmdline,
                artifacts,
                floor: None,
            };
            manifest
                .check()
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            let at = dir
                .path()
                .join(&manifest.channel)
                .join(manifest.arch.as_str());
            std::fs::create_dir_all(&at).unwrap();
            let file = at.join("manifest.json");
            std::fs::write(
                &file,
                Envelope::sign(manifest.to_payload(), &[&key]).to_json(),
            )
            .unwrap();
            let trust = TrustStore::new(
                &[public.record()],
                1,
                rng.number(),
                1 + rng.below(u64::MAX - 1),
                rng.number(),
            )
            .unwrap();
            let options = Options {
                trust,
                trust_from: "test".into(),
                channel: None,
                arch: None,
                board: manifest.board.clone(),
                state: State {
                    now: rng.number(),
                    version_floor: rng.number(),
                    floor_source: phase_manifest::FloorSource::Given,
                    last_issued_at: rng.number(),
                },
                artifacts: rng.below(2) == 0,
                chunk_size: rng.number(),
                ca: None,
                progress: false,
            };
            let outcome = verify(&Source::File(file.clone()), &options);
            let (text, error) = render_text(&outcome);
            let json = render_json(&outcome);
            assert!(text.starts_with("trust: 1 key ("), "case {case}: {text}");
            assert_eq!(json["ok"] == true, error.is_none(), "case {case}");
            if outcome.result.is_ok() {
                passed += 1;
                assert!(
                    text.contains(&format!("version {}", manifest.version)),
                    "{text}"
                );
            }
            std::fs::remove_file(&file).unwrap();
        }
        // Some pass, so the printing of a passing report is exercised too.
        assert!(passed > 10, "only {passed} of 400 passed");
    }
}
