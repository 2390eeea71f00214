//! The verification policy: from envelope bytes to a manifest this machine may
//! boot, in a fixed order.
//!
//! 1. size cap, before any parsing ([`MAX_ENVELOPE_SIZE`]);
//! 2. envelope syntax;
//! 3. at least `threshold` distinct trusted keys verify the raw payload bytes
//!    (`verify_strict`);
//! 4. payload `type` and spec major, then the strict parse and field checks;
//! 5. binding: channel, arch, board;
//! 6. version: not below the floor — the higher of the image's and the one
//!    stored on the machine — nor more than `max_version_jump` above it;
//! 7. expiry: `expires_at` after max(clock, time floor, last accepted
//!    `issued_at`).
//!
//! [`MAX_ENVELOPE_SIZE`]: crate::envelope::MAX_ENVELOPE_SIZE

use crate::ManifestError;
use crate::envelope::Envelope;
use crate::error::{FloorSource, TimeBasis};
use crate::key::KeyId;
use crate::schema::{Arch, Manifest};
use crate::trust::{TrustStore, check_signatures};

/// What this machine is: a manifest must be for exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The channel the machine follows (`phase.channel=`).
    pub channel: String,
    pub arch: Arch,
    /// The board, when the image knows it. A manifest that names a board is
    /// refused unless it is this one; a manifest without a board fits all.
    pub board: Option<String>,
}

/// What the machine remembers between boots (or knows now). All in seconds
/// since the epoch, except the version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// The wall clock now. A dead RTC may say 1970; the floors below cover it.
    pub now: u64,
    /// The floor stored on this machine: the highest `floor` of a manifest
    /// it handed off under (0 when none is stored).
    pub version_floor: u64,
    /// Where [`State::version_floor`] is kept, for the refusal's report.
    pub floor_source: FloorSource,
    /// The `issued_at` of the last manifest accepted.
    pub last_issued_at: u64,
}

impl State {
    /// The state to store once `manifest`'s next stage has been reached. The
    /// floors only ever rise, and the version floor only by the manifest's
    /// signed `floor`: the version alone moves nothing, so a bad release
    /// that was accepted cannot keep the machine from the one before it.
    pub fn after(&self, manifest: &Manifest) -> State {
        State {
            now: self.now,
            version_floor: self.version_floor.max(manifest.floor.unwrap_or(0)),
            floor_source: self.floor_source,
            last_issued_at: self.last_issued_at.max(manifest.issued_at),
        }
    }

    /// The floor that applies and where it comes from: the higher of the
    /// image's and the stored one (the image's when they are equal).
    pub fn effective_floor(&self, trust: &TrustStore) -> (u64, FloorSource) {
        if self.version_floor > trust.version_floor {
            (self.version_floor, self.floor_source)
        } else {
            (trust.version_floor, FloorSource::Image)
        }
    }
}

/// A manifest that passed every check, with the keys that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Manifest,
    pub signed_by: Vec<KeyId>,
}

/// Runs the whole policy on the bytes of an envelope.
pub fn verify(
    envelope: &[u8],
    trust: &TrustStore,
    binding: &Binding,
    state: &State,
) -> Result<Verified, ManifestError> {
    let envelope = Envelope::from_json(envelope)?;
    let signed_by = check_signatures(
        trust.keys(),
        trust.threshold(),
        &envelope.payload,
        &envelope.signatures,
    )?;
    let manifest = Manifest::from_payload(&envelope.payload)?;
    check_binding(&manifest, binding)?;
    check_version(&manifest, trust, state)?;
    check_expiry(&manifest, trust, state)?;
    Ok(Verified {
        manifest,
        signed_by,
    })
}

/// Step 5: channel, arch, board.
pub fn check_binding(manifest: &Manifest, binding: &Binding) -> Result<(), ManifestError> {
    if manifest.channel != binding.channel {
        return Err(ManifestError::ChannelMismatch {
            found: manifest.channel.clone(),
            expected: binding.channel.clone(),
        });
    }
    if manifest.arch != binding.arch {
        return Err(ManifestError::ArchMismatch {
            found: manifest.arch,
            expected: binding.arch,
        });
    }
    if let Some(board) = &manifest.board
        && binding.board.as_ref() != Some(board)
    {
        return Err(ManifestError::BoardMismatch {
            found: board.clone(),
            expected: binding.board.clone(),
        });
    }
    Ok(())
}

/// Step 6: the effective floor is the higher of the image's and the stored
/// one. Equal to the floor is accepted (a reboot into the same release).
pub fn check_version(
    manifest: &Manifest,
    trust: &TrustStore,
    state: &State,
) -> Result<(), ManifestError> {
    let (floor, floor_source) = state.effective_floor(trust);
    if manifest.version < floor {
        return Err(ManifestError::Rollback {
            version: manifest.version,
            floor,
            floor_source,
        });
    }
    // `version >= floor` here, so the subtraction cannot underflow.
    if manifest.version - floor > trust.max_version_jump {
        return Err(ManifestError::VersionJump {
            version: manifest.version,
            floor,
            max_jump: trust.max_version_jump,
        });
    }
    Ok(())
}

/// Step 7: the reference time is the latest of three, so a clock stuck in
/// 1970 cannot revive an expired manifest.
pub fn check_expiry(
    manifest: &Manifest,
    trust: &TrustStore,
    state: &State,
) -> Result<(), ManifestError> {
    let (reference, basis) = [
        (state.now, TimeBasis::Clock),
        (trust.time_floor, TimeBasis::TimeFloor),
        (state.last_issued_at, TimeBasis::LastIssuedAt),
    ]
    .into_iter()
    .fold((0, TimeBasis::Clock), |best, candidate| {
        if candidate.0 > best.0 {
            candidate
        } else {
            best
        }
    });
    if manifest.expires_at <= reference {
        return Err(ManifestError::Expired {
            expires_at: manifest.expires_at,
            reference,
            basis,
        });
    }
    Ok(())
}
