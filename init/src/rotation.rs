//! Key rotation at boot: before a mirror's manifest is verified, the
//! mirror's rotation chain (`rotations/index.json`, then
//! `rotations/<generation>.json`; see `phase_manifest::rotation`) is followed
//! from the trust store baked into the image, so an image built before a
//! rotation boots manifests signed only by the new keys (SECURITY.md row 13).
//!
//! Each step must be signed by the threshold of the keys trusted so far and
//! by the threshold of its own new keys, with a generation one above the
//! current; at most `MAX_CHAIN` steps are followed, and the first bad step
//! stops the chain where it got to, with the reason kept for the report. A
//! mirror without an index (HTTP 404) has no chain. The chain is per mirror:
//! every mirror starts again from the baked store, so a hostile mirror's
//! chain cannot change what another mirror's manifest is judged by.

use phase_fetch::{Client, FetchError};
use phase_manifest::rotation::{self, INDEX_PATH, Index, MAX_INDEX_SIZE};
use phase_manifest::{MAX_ENVELOPE_SIZE, TrustStore};
use serde_json::{Value, json};

use crate::error_chain;
use crate::plan::ProviderUrl;

/// What following one mirror's chain gave.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The store the manifest is judged by.
    pub store: TrustStore,
    /// The generation the mirror's index names; `None` without an index.
    pub latest: Option<u64>,
    /// The generations applied, in order.
    pub applied: Vec<u64>,
    /// Why the chain stopped before `latest`, or the index was unusable.
    pub stopped: Option<String>,
}

impl Followed {
    /// Appended to a refusal of the manifest, so the report says which keys
    /// judged it and why the chain did not reach further.
    pub fn note(&self) -> String {
        match &self.stopped {
            Some(why) => format!(
                "; judged by key generation {} because {why}",
                self.store.generation
            ),
            None if !self.applied.is_empty() => format!(
                "; judged by key generation {} after rotation",
                self.store.generation
            ),
            None => String::new(),
        }
    }

    /// The fields of the fetch stage's event.
    pub fn to_json(&self) -> Value {
        json!({
            "generation": self.store.generation,
            "latest": self.latest,
            "applied": self.applied,
            "keys": self.store.keys().len(),
            "threshold": self.store.threshold(),
            "stopped": self.stopped,
        })
    }
}

/// Whether a failed GET is the server's answer (it would say the same
/// again) or the transport's (another try might get through).
fn is_answer(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Status { .. }
            | FetchError::TooLarge { .. }
            | FetchError::Redirects { .. }
            | FetchError::BadRedirect { .. }
            | FetchError::Downgrade { .. }
            | FetchError::ContentEncoding { .. }
    )
}

/// A mirror that could not be asked for its chain: where, the transport
/// error's kind (`FetchError::kind`) and the error as a line.
#[derive(Debug, Clone)]
pub struct Unreachable {
    pub url: String,
    pub kind: &'static str,
    pub error: String,
}

/// Follows `mirror`'s chain from `trust`. Returns `Err` when the mirror
/// could not be asked (a transport failure: the attempt is retried like any
/// other), else where the chain led.
pub fn follow(
    client: &Client,
    mirror: &ProviderUrl,
    trust: &TrustStore,
) -> Result<Followed, Unreachable> {
    let mut followed = Followed {
        store: trust.clone(),
        latest: None,
        applied: Vec::new(),
        stopped: None,
    };
    let index_url = phase_fetch::join(&mirror.url, INDEX_PATH);
    let index = match client.get_capped(&index_url, MAX_INDEX_SIZE as u64) {
        Ok(bytes) => Index::from_json(&bytes),
        Err(FetchError::Status { status: 404, .. }) => return Ok(followed),
        Err(e) if is_answer(&e) => {
            followed.stopped = Some(format!("rotation index: {}", error_chain(&e)));
            return Ok(followed);
        }
        Err(e) => {
            return Err(Unreachable {
                url: index_url,
                kind: e.kind(),
                error: format!("rotation index: {}", error_chain(&e)),
            });
        }
    };
    let latest = match index {
        Ok(index) => index.latest,
        Err(e) => {
            followed.stopped = Some(format!("rotation index {index_url}: {}", error_chain(&e)));
            return Ok(followed);
        }
    };
    followed.latest = Some(latest);
    let mut transport = None;
    let chain = rotation::follow(trust, latest, |path| {
        let url = phase_fetch::join(&mirror.url, path);
        client
            .get_capped(&url, MAX_ENVELOPE_SIZE as u64)
            .map_err(|e| {
                let text = error_chain(&e);
                if !is_answer(&e) {
                    transport = Some(Unreachable {
                        url: url.clone(),
                        kind: e.kind(),
                        error: format!("key rotation: {text}"),
                    });
                }
                text
            })
    });
    if let Some(e) = transport {
        return Err(e);
    }
    followed.store = chain.store;
    followed.applied = chain.applied;
    followed.stopped = chain.stopped.map(|e| error_chain(&e));
    Ok(followed)
}
