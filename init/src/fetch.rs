//! Stages fetch and verify: a signed manifest from the first mirror that has
//! a good one, then every artifact it names streamed through SHA-256 into a
//! sealed memfd.
//!
//! The manifest is verified against the image's trust store before anything
//! else is fetched: signatures over the raw bytes, binding, version floor,
//! expiry (`phase_manifest::verify`), after the mirror's key rotation chain
//! was followed from that store (`crate::rotation`). Artifacts are content-addressed and
//! checked byte by byte against their declared size and digest, so any
//! mirror may serve them: a mirror that fails for one artifact is replaced by
//! the next for that artifact (SECURITY.md row 11). Transport failures are
//! retried in rounds with exponential backoff inside `rd.retry`; when every
//! mirror *refused* (a validly served but unacceptable manifest, a digest
//! mismatch), another round would see the same bytes, so the stage fails at
//! once.

use std::time::{Duration, Instant};

use phase_fetch::{Client, Config, FetchError, Roots};
use phase_initramfs::layout;
use phase_manifest::{
    Arch, Artifact, ArtifactCheck, Binding, MAX_ENVELOPE_SIZE, ManifestError, State, TrustStore,
    Verified,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error_chain;
use crate::plan::ProviderUrl;
use crate::policy::Tried;
use crate::sealed::{Sealed, Unsealed};
use crate::sys;

/// What the image trusts: the store of keys and floors, and the certificates
/// for HTTPS.
pub struct Trust {
    pub store: TrustStore,
    pub ca: Vec<u8>,
}

/// Reads the image's trust material.
pub fn read_trust() -> Result<Trust, String> {
    let store = std::fs::read(layout::TRUST_STORE).map_err(|e| {
        format!(
            "{}: {e}: this image carries no trust store and cannot verify a manifest",
            layout::TRUST_STORE
        )
    })?;
    let store = TrustStore::from_json(&store)
        .map_err(|e| format!("{}: {}", layout::TRUST_STORE, error_chain(&e)))?;
    let ca = std::fs::read(layout::CA_BUNDLE).map_err(|e| format!("{}: {e}", layout::CA_BUNDLE))?;
    Ok(Trust { store, ca })
}

/// The client every fetch uses: the image's CAs, the boot's deadlines.
pub fn client(trust: &Trust) -> Result<Client, String> {
    Client::new(Config::new(Roots::Pem(trust.ca.clone())))
        .map_err(|e| format!("{}: {}", layout::CA_BUNDLE, error_chain(&e)))
}

/// A stage that failed: the last error (as a line, and as `kind` and
/// `detail`), and every attempt, the last one included.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFailure {
    pub error: String,
    pub kind: String,
    pub detail: Value,
    pub tried: Vec<Tried>,
}

/// How long to keep trying, and how long to wait between rounds.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub deadline: Instant,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Budget {
    pub fn new(retry: Duration) -> Budget {
        Budget {
            deadline: Instant::now() + retry,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
        }
    }

    /// Waits `delay` (±25 % jitter, so a fleet does not retry in step) if the
    /// deadline allows; false when it does not.
    pub fn wait(&self, delay: Duration) -> bool {
        let mut byte = [0u8; 1];
        let jitter = if sys::getrandom(&mut byte).is_ok() {
            // 0..=255 → 0.75..1.25
            0.75 + f64::from(byte[0]) / 510.0
        } else {
            1.0
        };
        let delay = delay.mul_f64(jitter);
        if Instant::now() + delay >= self.deadline {
            return false;
        }
        std::thread::sleep(delay);
        true
    }
}

/// Why one attempt failed, as a line and as data.
struct Reason {
    what: &'static str,
    url: String,
    kind: String,
    detail: Value,
    error: String,
}

impl Reason {
    /// A transfer that failed: what the client said, and its kind.
    fn fetch(what: &'static str, url: &str, e: &FetchError) -> Reason {
        Reason {
            what,
            url: url.to_owned(),
            kind: e.kind().to_owned(),
            detail: fetch_detail(e),
            error: error_chain(e),
        }
    }

    /// Bytes that arrived and were refused by the manifest's rules.
    fn refused(what: &'static str, url: &str, e: &ManifestError) -> Reason {
        Reason {
            what,
            url: url.to_owned(),
            kind: e.kind(),
            detail: e.to_value(),
            error: format!("{what} {url} refused: {}", error_chain(e)),
        }
    }

    /// A local step that failed (a memfd, a seal).
    fn local(what: &'static str, url: &str, kind: &str, error: String) -> Reason {
        Reason {
            what,
            url: url.to_owned(),
            kind: kind.to_owned(),
            detail: Value::Null,
            error,
        }
    }

    fn tried(self, mirror: &ProviderUrl, outcome: &'static str) -> Tried {
        let mut detail = self.detail;
        if let Value::Object(map) = &mut detail {
            map.remove("kind");
        }
        Tried {
            at: Some(mirror.url.clone()),
            what: Some(self.what.to_owned()),
            outcome,
            kind: self.kind,
            detail: match detail {
                Value::Object(mut map) => {
                    map.insert("url".into(), json!(self.url));
                    Value::Object(map)
                }
                _ => json!({ "url": self.url }),
            },
            error: self.error,
        }
    }
}

/// The values a fetch error names, for the failure event.
fn fetch_detail(e: &FetchError) -> Value {
    match e {
        FetchError::Status { status, .. } => json!({ "status": status }),
        FetchError::Redirects { limit, .. } => json!({ "limit": limit }),
        FetchError::BadRedirect { location, .. } => json!({ "location": location }),
        FetchError::Downgrade { from, to } => json!({ "from": from, "to": to }),
        FetchError::ContentEncoding { encoding, .. } => json!({ "encoding": encoding }),
        FetchError::Truncated { got, expected, .. } => {
            json!({ "received": got, "expected": expected })
        }
        FetchError::TooLarge { cap, .. } => json!({ "cap": cap }),
        FetchError::TooSlow {
            bytes,
            elapsed,
            min,
            ..
        } => json!({
            "bytes": bytes,
            "elapsed_ms": elapsed.as_millis() as u64,
            "min_bytes": min.bytes,
            "per_s": min.per.as_secs(),
        }),
        _ => Value::Null,
    }
}

/// Whether a failure would repeat with the same bytes (a refusal) or might
/// not (transport).
enum Attempt<T> {
    Ok(T),
    Refused(Reason),
    Transport(Reason),
}

/// More mirrors, asked for once when the first round has failed
/// (`phase.mode=internet`: those discovered on the LAN).
pub type More<'a> = Option<&'a mut dyn FnMut() -> Vec<ProviderUrl>>;

/// Runs `attempt` over the mirrors in rounds until one succeeds, every
/// mirror refuses, or the budget ends; after the first failed round, the
/// mirrors `more` gives join the end of the list and are tried at once.
/// A mirror that refused is not asked again in later rounds: it would
/// serve the same bytes, and the report names it once. Every failed attempt
/// is recorded in `tried`; the error is the last of them.
fn over_mirrors<T>(
    mirrors: &mut Vec<ProviderUrl>,
    mut more: More<'_>,
    budget: &Budget,
    tried: &mut Vec<Tried>,
    mut attempt: impl FnMut(&ProviderUrl) -> Attempt<T>,
) -> Result<(usize, T), StageFailure> {
    let mut delay = budget.first_delay;
    let mut i = 0;
    // One flag per mirror, those `more` adds included.
    let mut refused = vec![false; mirrors.len()];
    loop {
        while let Some(mirror) = mirrors.get(i) {
            if refused.get(i).copied().unwrap_or(false) {
                i += 1;
                continue;
            }
            match attempt(mirror) {
                Attempt::Ok(value) => return Ok((i, value)),
                Attempt::Refused(r) => {
                    if let Some(flag) = refused.get_mut(i) {
                        *flag = true;
                    }
                    tried.push(r.tried(mirror, "refused"));
                }
                Attempt::Transport(r) => tried.push(r.tried(mirror, "transport")),
            }
            i += 1;
        }
        if let Some(more) = more.take() {
            mirrors.extend(more());
            refused.resize(mirrors.len(), false);
            if i < mirrors.len() {
                continue;
            }
        }
        let all_refused = refused.iter().all(|&r| r);
        if mirrors.is_empty() || all_refused || !budget.wait(delay) {
            return Err(match tried.last() {
                Some(last) => StageFailure {
                    error: last.error.clone(),
                    kind: last.kind.clone(),
                    detail: last.detail.clone(),
                    tried: tried.clone(),
                },
                None => StageFailure {
                    error: "no provider given (phase.provider=)".into(),
                    kind: "no_provider".into(),
                    detail: Value::Null,
                    tried: Vec::new(),
                },
            });
        }
        delay = (delay * 2).min(budget.max_delay);
        i = 0;
    }
}

/// The manifest's location on a mirror.
pub fn manifest_url(mirror: &ProviderUrl, channel: &str, arch: Arch) -> String {
    phase_fetch::join(
        &mirror.url,
        &format!("{channel}/{}/manifest.json", arch.as_str()),
    )
}

/// A verified manifest and where it came from.
#[derive(Debug)]
pub struct Fetched {
    pub verified: Verified,
    /// Every mirror, those `more` added included.
    pub mirrors: Vec<ProviderUrl>,
    /// Index into `mirrors`.
    pub mirror: usize,
    pub tried: Vec<Tried>,
    /// The mirror's key rotation chain, followed before the manifest was
    /// verified; its store is the one that judged.
    pub rotation: crate::rotation::Followed,
    /// Where the successful attempt's time went.
    pub took: Took,
}

/// The successful attempt's times, from its start: the rotation chain
/// followed, the manifest's bytes in hand (the two run at once), and the
/// signature and policy checks after both.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Took {
    pub rotation_ms: u64,
    pub manifest_ms: u64,
    pub verify_ms: u64,
}

/// Stage fetch: the first acceptable manifest from the mirrors (and, once
/// they all failed, from those `more` gives).
pub fn fetch_manifest(
    client: &Client,
    mirrors: &[ProviderUrl],
    more: More<'_>,
    binding: &Binding,
    trust: &TrustStore,
    state: &State,
    budget: &Budget,
) -> Result<Fetched, StageFailure> {
    let mut tried = Vec::new();
    let mut mirrors = mirrors.to_vec();
    let result = over_mirrors(&mut mirrors, more, budget, &mut tried, |mirror| {
        let url = manifest_url(mirror, &binding.channel, binding.arch);
        let started = Instant::now();
        // The rotation chain and the manifest are asked for at once, on two
        // connections: the manifest is judged by the store the chain leads
        // to, but its bytes do not depend on it, and a boot should not wait
        // for two round trips one after the other.
        let (followed, bytes) = std::thread::scope(|s| {
            let manifest = std::thread::Builder::new()
                .name("manifest-get".into())
                .spawn_scoped(s, || {
                    let got = client.get_capped(&url, MAX_ENVELOPE_SIZE as u64);
                    (got, started.elapsed())
                });
            let followed = crate::rotation::follow(client, mirror, trust);
            let rotation_ms = started.elapsed().as_millis() as u64;
            let bytes = match manifest {
                Ok(handle) => handle.join().ok(),
                // No thread: ask on this one.
                Err(_) => Some((
                    client.get_capped(&url, MAX_ENVELOPE_SIZE as u64),
                    started.elapsed(),
                )),
            };
            ((followed, rotation_ms), bytes)
        });
        let (followed, rotation_ms) = followed;
        let followed = match followed {
            Ok(f) => f,
            Err(e) => {
                return Attempt::Transport(Reason {
                    what: "rotation",
                    url: e.url,
                    kind: e.kind.to_owned(),
                    detail: Value::Null,
                    error: e.error,
                });
            }
        };
        let Some((bytes, manifest_took)) = bytes else {
            return Attempt::Transport(Reason::local(
                "manifest",
                &url,
                "thread",
                "the thread fetching the manifest ended without an answer".into(),
            ));
        };
        let bytes = match bytes {
            Ok(b) => b,
            // An oversized manifest is refused for its size: another round
            // would get the same bytes.
            Err(e @ FetchError::TooLarge { .. }) => {
                return Attempt::Refused(Reason::fetch("manifest", &url, &e));
            }
            Err(e) => return Attempt::Transport(Reason::fetch("manifest", &url, &e)),
        };
        let verifying = Instant::now();
        match phase_manifest::verify(&bytes, &followed.store, binding, state) {
            Ok(v) => {
                let took = Took {
                    rotation_ms,
                    manifest_ms: manifest_took.as_millis() as u64,
                    verify_ms: verifying.elapsed().as_millis() as u64,
                };
                Attempt::Ok((v, followed, took))
            }
            Err(e) => {
                let mut reason = Reason::refused("manifest", &url, &e);
                reason.error.push_str(&followed.note());
                Attempt::Refused(reason)
            }
        }
    });
    let (mirror, (verified, rotation, took)) = result?;
    Ok(Fetched {
        verified,
        mirrors,
        mirror,
        tried,
        rotation,
        took,
    })
}

/// Transfer progress of one artifact.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub name: &'a str,
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

/// One artifact in its sealed memfd.
#[derive(Debug)]
pub struct Streamed {
    pub name: &'static str,
    pub sealed: Sealed,
    pub sha256: String,
    pub from: String,
    pub elapsed: Duration,
}

/// Stage verify: streams every artifact of the manifest through its size and
/// SHA-256 check into a sealed memfd, starting with the mirror the manifest
/// came from.
pub fn stream_artifacts(
    client: &Client,
    mirrors: &[ProviderUrl],
    first: usize,
    verified: &Verified,
    budget: &Budget,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Vec<Streamed>, Vec<Tried>), StageFailure> {
    let mut order: Vec<ProviderUrl> = mirrors.iter().skip(first).cloned().collect();
    order.extend(mirrors.iter().take(first).cloned());
    let mut tried = Vec::new();
    let mut out = Vec::new();
    for (name, artifact) in verified.manifest.artifacts.iter() {
        let (_, streamed) = over_mirrors(&mut order, None, budget, &mut tried, |mirror| {
            stream_one(client, mirror, name, artifact, progress)
        })?;
        out.push(streamed);
    }
    Ok((out, tried))
}

fn stream_one(
    client: &Client,
    mirror: &ProviderUrl,
    name: &'static str,
    artifact: &Artifact,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Attempt<Streamed> {
    let url = phase_fetch::join(&mirror.url, &artifact.path);
    let started = Instant::now();
    let mut file = match Unsealed::new(name) {
        Ok(f) => f,
        Err(e) => {
            return Attempt::Transport(Reason::local(name, &url, "memfd", error_chain(&e)));
        }
    };
    let mut check = ArtifactCheck::new(artifact);
    // Which check failed, kept whole so it reads as a refusal.
    let mut refusal: Option<ManifestError> = None;
    let mut write_error = None;
    let result = client.get_to(
        &url,
        0,
        artifact.size,
        None,
        &mut |bytes| {
            if let Err(e) = check.update(bytes) {
                refusal = Some(e);
                return Err("refused".into());
            }
            file.write(bytes).map_err(|e| {
                let text = error_chain(&e);
                write_error = Some(text.clone());
                text.into()
            })
        },
        &mut |done| {
            progress(Progress {
                name,
                done,
                total: artifact.size,
                elapsed: started.elapsed(),
            })
        },
    );
    if let Some(e) = refusal {
        return Attempt::Refused(Reason::refused(name, &url, &e));
    }
    if let Some(e) = write_error {
        return Attempt::Transport(Reason::local(
            name,
            &url,
            "memfd_write",
            format!("{name}: {e}"),
        ));
    }
    if let Err(e) = result {
        let mut reason = Reason::fetch(name, &url, &e);
        reason.error = format!("{name}: {}", reason.error);
        return match e {
            FetchError::TooLarge { .. } => Attempt::Refused(reason),
            _ => Attempt::Transport(reason),
        };
    }
    if let Err(e) = check.finish() {
        return Attempt::Refused(Reason::refused(name, &url, &e));
    }
    match file.seal() {
        Ok(sealed) => Attempt::Ok(Streamed {
            name,
            sealed,
            sha256: artifact.sha256.clone(),
            from: url,
            elapsed: started.elapsed(),
        }),
        Err(e) => Attempt::Transport(Reason::local(name, &url, "seal", error_chain(&e))),
    }
}
