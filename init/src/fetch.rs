//! Stages fetch and verify: a signed manifest from the first mirror that has
//! a good one, then every artifact it names streamed through SHA-256 into a
//! sealed memfd.
//!
//! The manifest is verified against the image's trust store before anything
//! else is fetched: signatures over the raw bytes, binding, version floor,
//! expiry (`phase_manifest::verify`). Artifacts are content-addressed and
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

use crate::error_chain;
use crate::plan::ProviderUrl;
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

/// A stage that failed: the last error, and every attempt before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFailure {
    pub error: String,
    pub tried: Vec<String>,
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
    fn wait(&self, delay: Duration) -> bool {
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

/// Whether a failure would repeat with the same bytes (a refusal) or might
/// not (transport).
enum Attempt<T> {
    Ok(T),
    Refused(String),
    Transport(String),
}

/// Runs `attempt` over the mirrors in rounds until one succeeds, every
/// mirror refuses, or the budget ends.
fn over_mirrors<T>(
    mirrors: &[&ProviderUrl],
    budget: &Budget,
    tried: &mut Vec<String>,
    mut attempt: impl FnMut(&ProviderUrl) -> Attempt<T>,
) -> Result<(usize, T), String> {
    let mut delay = budget.first_delay;
    let mut last = String::from("no provider given (phase.provider=)");
    loop {
        let mut all_refused = true;
        for (i, mirror) in mirrors.iter().enumerate() {
            match attempt(mirror) {
                Attempt::Ok(value) => return Ok((i, value)),
                Attempt::Refused(e) => {
                    tried.push(format!("{}: {e}", mirror.url));
                    last = e;
                }
                Attempt::Transport(e) => {
                    all_refused = false;
                    tried.push(format!("{}: {e}", mirror.url));
                    last = e;
                }
            }
        }
        if mirrors.is_empty() || all_refused || !budget.wait(delay) {
            return Err(last);
        }
        delay = (delay * 2).min(budget.max_delay);
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
    /// Index into the mirror list.
    pub mirror: usize,
    pub tried: Vec<String>,
}

/// Stage fetch: the first acceptable manifest from the mirrors.
pub fn fetch_manifest(
    client: &Client,
    mirrors: &[ProviderUrl],
    binding: &Binding,
    trust: &TrustStore,
    state: &State,
    budget: &Budget,
) -> Result<Fetched, StageFailure> {
    let mut tried = Vec::new();
    let refs: Vec<&ProviderUrl> = mirrors.iter().collect();
    let result = over_mirrors(&refs, budget, &mut tried, |mirror| {
        let url = manifest_url(mirror, &binding.channel, binding.arch);
        let bytes = match client.get_capped(&url, MAX_ENVELOPE_SIZE as u64) {
            Ok(b) => b,
            Err(e) => return Attempt::Transport(error_chain(&e)),
        };
        match phase_manifest::verify(&bytes, trust, binding, state) {
            Ok(v) => Attempt::Ok(v),
            Err(e) => Attempt::Refused(format!("manifest {url} refused: {}", error_chain(&e))),
        }
    });
    match result {
        Ok((mirror, verified)) => Ok(Fetched {
            verified,
            mirror,
            tried,
        }),
        Err(error) => Err(StageFailure { error, tried }),
    }
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
) -> Result<(Vec<Streamed>, Vec<String>), StageFailure> {
    let mut order: Vec<&ProviderUrl> = mirrors.iter().skip(first).collect();
    order.extend(mirrors.iter().take(first));
    let mut tried = Vec::new();
    let mut out = Vec::new();
    for (name, artifact) in verified.manifest.artifacts.iter() {
        let result = over_mirrors(&order, budget, &mut tried, |mirror| {
            stream_one(client, mirror, name, artifact, progress)
        });
        match result {
            Ok((_, streamed)) => out.push(streamed),
            Err(error) => return Err(StageFailure { error, tried }),
        }
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
        Err(e) => return Attempt::Transport(error_chain(&e)),
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
        return Attempt::Refused(format!("{name} {url} refused: {}", error_chain(&e)));
    }
    if let Some(e) = write_error {
        return Attempt::Transport(format!("{name}: {e}"));
    }
    if let Err(e) = result {
        return match e {
            FetchError::TooLarge { .. } => Attempt::Refused(format!("{name}: {}", error_chain(&e))),
            other => Attempt::Transport(format!("{name}: {}", error_chain(&other))),
        };
    }
    if let Err(e) = check.finish() {
        return Attempt::Refused(format!("{name} {url} refused: {}", error_chain(&e)));
    }
    match file.seal() {
        Ok(sealed) => Attempt::Ok(Streamed {
            name,
            sealed,
            sha256: artifact.sha256.clone(),
            from: url,
            elapsed: started.elapsed(),
        }),
        Err(e) => Attempt::Transport(error_chain(&e)),
    }
}
