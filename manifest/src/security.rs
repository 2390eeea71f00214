//! SECURITY.md rows 1, 4, 5, 6, 7, 8, 9, 13 (with the provider's rotation
//! chain) and 14, one attack per test, each
//! written as a pair: a naive check that is fooled by the input, then ours
//! refusing it. The naive checks are the mistakes real update clients made
//! (TUF's attack catalogue); they exist to show the input is a real attack
//! and not a malformed document any parser would refuse.

use ed25519_dalek::{SigningKey, Verifier, VerifyingKey};

use crate::encoding::unhex;
use crate::envelope::{Envelope, MAX_ENVELOPE_SIZE, SignatureEntry};
use crate::key::{KeyId, PublicKey};
use crate::policy::{Binding, State, verify};
use crate::rotation::{self, Rotation};
use crate::schema::{Arch, Artifact, Artifacts, Handoff, MANIFEST_TYPE, Manifest, SPEC_VERSION};
use crate::{ArtifactCheck, FloorSource, ManifestError, TimeBasis, TrustStore};

const DAY: u64 = 86_400;
/// The image's build time: the trust store's time floor.
const BUILT: u64 = 1_750_000_000;

fn signing(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8) -> PublicKey {
    PublicKey::from_bytes(signing(seed).verifying_key().as_bytes()).unwrap()
}

/// Trusts keys 1..=n with threshold k, floor 0, jump 1000.
fn trust(n: u8, k: usize) -> TrustStore {
    let records: Vec<_> = (1..=n).map(|s| public(s).record()).collect();
    TrustStore::new(&records, k, 0, 1000, BUILT).unwrap()
}

fn manifest(version: u64) -> Manifest {
    Manifest {
        kind: MANIFEST_TYPE.into(),
        spec_version: SPEC_VERSION.into(),
        channel: "stable".into(),
        arch: Arch::X86_64,
        board: None,
        version,
        floor: None,
        issued_at: BUILT + DAY,
        expires_at: BUILT + 30 * DAY,
        handoff: Handoff::Kexec,
        cmdline: "console=ttyS0 phase.test=1".into(),
        artifacts: Artifacts {
            kernel: Some(Artifact {
                path: "blobs/sha256/".to_owned() + &"11".repeat(32),
                sha256: "11".repeat(32),
                size: 4096,
            }),
            initrd: Some(Artifact {
                path: "blobs/sha256/".to_owned() + &"22".repeat(32),
                sha256: "22".repeat(32),
                size: 8192,
            }),
            ..Artifacts::default()
        },
    }
}

fn signed(m: &Manifest, seeds: &[u8]) -> Vec<u8> {
    let keys: Vec<SigningKey> = seeds.iter().map(|&s| signing(s)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    Envelope::sign(m.to_payload(), &refs).to_json().into_bytes()
}

fn machine() -> Binding {
    Binding {
        channel: "stable".into(),
        arch: Arch::X86_64,
        board: None,
    }
}

/// A machine whose clock is right (a day after the manifests were issued).
fn today() -> State {
    State {
        now: BUILT + 2 * DAY,
        ..State::default()
    }
}

/// Naive: "the payload parses and its fields look right" — signatures unread.
fn naive_parse_only(envelope: &[u8]) -> Option<Manifest> {
    let env = Envelope::from_json(envelope).ok()?;
    Manifest::from_payload(&env.payload).ok()
}

/// Naive: counts signature entries that verify under any key of `keys`, with
/// the lax RFC 8032 check, without asking whether two entries are one key.
fn naive_count_valid(envelope: &[u8], keys: &[VerifyingKey], k: usize) -> Option<Manifest> {
    let env = Envelope::from_json(envelope).ok()?;
    let valid = env
        .signatures
        .iter()
        .filter(|s| {
            keys.iter().any(|key| {
                key.verify(&env.payload, &ed25519_dalek::Signature::from_bytes(&s.sig))
                    .is_ok()
            })
        })
        .count();
    (valid >= k).then(|| Manifest::from_payload(&env.payload).ok())?
}

/// Naive: trusts a signature entry because it names a trusted key id.
fn naive_key_ids(envelope: &[u8], trust: &TrustStore) -> Option<Manifest> {
    let env = Envelope::from_json(envelope).ok()?;
    let named = env
        .signatures
        .iter()
        .filter(|s| trust.keys().iter().any(|k| k.id() == s.key_id))
        .count();
    (named >= trust.threshold()).then(|| Manifest::from_payload(&env.payload).ok())?
}

/// Naive: signatures and expiry against the clock; no version floor, no
/// binding, no time floor.
fn naive_no_floors(envelope: &[u8], trust: &TrustStore, now: u64) -> Option<Manifest> {
    let keys: Vec<VerifyingKey> = trust
        .keys()
        .iter()
        .map(|k| VerifyingKey::from_bytes(&k.to_bytes()).unwrap())
        .collect();
    naive_count_valid(envelope, &keys, trust.threshold()).filter(|m| m.expires_at > now)
}

// Row 1: boot only if ≥ k distinct trusted keys verify the exact payload bytes.

#[test]
fn row1_unsigned_manifest_is_refused() {
    let unsigned = signed(&manifest(1), &[]);
    assert!(naive_parse_only(&unsigned).is_some());
    match verify(&unsigned, &trust(1, 1), &machine(), &today()) {
        Err(ManifestError::SignatureThreshold {
            valid: 0,
            required: 1,
            rejected,
        }) => assert_eq!(rejected, "no signatures"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn row1_signature_by_an_unknown_key_is_refused() {
    // Key 9 signs, and a client that trusts the key the provider offers
    // alongside the manifest (trust on first use) is fooled.
    let envelope = signed(&manifest(1), &[9]);
    assert!(naive_count_valid(&envelope, &[signing(9).verifying_key()], 1).is_some());
    let error = verify(&envelope, &trust(3, 1), &machine(), &today()).unwrap_err();
    let id = &public(9).id().to_string()[..16];
    assert!(
        error
            .to_string()
            .contains(&format!("key {id}…: not trusted")),
        "{error}"
    );
}

#[test]
fn row1_one_signature_repeated_k_times_is_refused() {
    // Threshold 2 of keys 1..=3, and key 1's valid signature three times.
    let one = Envelope::from_json(&signed(&manifest(1), &[1])).unwrap();
    let repeated = Envelope {
        signatures: vec![one.signatures[0].clone(); 3],
        ..one
    }
    .to_json()
    .into_bytes();
    let keys: Vec<VerifyingKey> = (1..=3).map(|s| signing(s).verifying_key()).collect();
    assert!(naive_count_valid(&repeated, &keys, 2).is_some());
    match verify(&repeated, &trust(3, 2), &machine(), &today()) {
        Err(ManifestError::SignatureThreshold {
            valid: 1,
            required: 2,
            rejected,
        }) => assert!(rejected.contains("counted already"), "{rejected}"),
        other => panic!("{other:?}"),
    }
    // Two distinct keys do meet the threshold.
    let two = signed(&manifest(1), &[1, 3]);
    assert_eq!(
        verify(&two, &trust(3, 2), &machine(), &today())
            .unwrap()
            .signed_by,
        vec![public(1).id(), public(3).id()]
    );
}

#[test]
fn row1_any_flipped_payload_byte_is_refused() {
    let good = Envelope::from_json(&signed(&manifest(1), &[1])).unwrap();
    let store = trust(1, 1);
    assert!(verify(&good.to_json().into_bytes(), &store, &machine(), &today()).is_ok());
    let mut naive_fooled = 0;
    for i in 0..good.payload.len() {
        let mut env = good.clone();
        // Flip the lowest bit of byte i: a one-bit change anywhere.
        env.payload[i] ^= 0x01;
        let bytes = env.to_json().into_bytes();
        if naive_key_ids(&bytes, &store).is_some() {
            naive_fooled += 1;
        }
        match verify(&bytes, &store, &machine(), &today()) {
            Err(ManifestError::SignatureThreshold { valid: 0, .. }) => {}
            other => panic!("byte {i}: {other:?}"),
        }
    }
    // Many one-bit changes still parse (a digit of the version, a letter of
    // the cmdline), and the key-id check takes each of them.
    assert!(naive_fooled > 10, "{naive_fooled}");
}

// Row 4: version below the floor refused; equal = no change.

/// Version `v` with the publisher's `floor`.
fn floored(v: u64, floor: u64) -> Manifest {
    Manifest {
        floor: Some(floor),
        ..manifest(v)
    }
}

#[test]
fn row4_rollback_to_a_validly_signed_older_version_is_refused() {
    let store = trust(1, 1);
    let v5 = verify(&signed(&floored(5, 5), &[1]), &store, &machine(), &today()).unwrap();
    let state = State {
        floor_source: FloorSource::EfiVariable,
        ..today().after(&v5.manifest)
    };
    assert_eq!(state.version_floor, 5);

    let v4 = signed(&manifest(4), &[1]);
    assert!(naive_no_floors(&v4, &store, state.now).is_some());
    match verify(&v4, &store, &machine(), &state) {
        Err(ManifestError::Rollback {
            version: 4,
            floor: 5,
            floor_source: FloorSource::EfiVariable,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Equal to the floor: accepted, and the floor does not move.
    let again = verify(&signed(&floored(5, 5), &[1]), &store, &machine(), &state).unwrap();
    assert_eq!(state.after(&again.manifest), state);
    // The image's own floor counts even with no stored state, and is named.
    let mut image = store.clone();
    image.version_floor = 5;
    assert!(matches!(
        verify(&v4, &image, &machine(), &today()),
        Err(ManifestError::Rollback {
            floor: 5,
            floor_source: FloorSource::Image,
            ..
        })
    ));
    // Of two floors the higher refuses, and is the one named.
    image.version_floor = 3;
    let stored = State {
        version_floor: 4,
        floor_source: FloorSource::StatePartition,
        ..today()
    };
    assert!(matches!(
        verify(&signed(&manifest(2), &[1]), &image, &machine(), &stored),
        Err(ManifestError::Rollback {
            floor: 4,
            floor_source: FloorSource::StatePartition,
            ..
        })
    ));
}

// Row 5: the floor persists and rises only by a signed `floor` field.

#[test]
fn row5_only_a_signed_floor_raises_the_stored_floor() {
    let store = trust(1, 1);
    // A machine that stored its floor after every accepted version (the
    // naive rule) is locked out of v5 by a bad v6 it accepted once.
    let v6 = verify(&signed(&manifest(6), &[1]), &store, &machine(), &today()).unwrap();
    let naive = State {
        version_floor: v6.manifest.version,
        ..today()
    };
    assert!(verify(&signed(&manifest(5), &[1]), &store, &machine(), &naive).is_err());
    // Ours: a manifest without `floor` leaves the floor as it was.
    let after = today().after(&v6.manifest);
    assert_eq!(after.version_floor, 0);
    assert!(verify(&signed(&manifest(5), &[1]), &store, &machine(), &after).is_ok());
    // A floor below the stored one lowers nothing.
    let high = State {
        version_floor: 7,
        ..today()
    };
    assert_eq!(high.after(&floored(8, 2)).version_floor, 7);
    // The floor is signed: a mirror cannot add it (or raise it) without
    // breaking the signature, and a publisher cannot set it above the
    // version it signs.
    let mut env = Envelope::from_json(&signed(&manifest(6), &[1])).unwrap();
    env.payload = floored(6, 6).to_payload();
    assert!(matches!(
        verify(&env.to_json().into_bytes(), &store, &machine(), &today()),
        Err(ManifestError::SignatureThreshold { valid: 0, .. })
    ));
    assert!(matches!(
        verify(&signed(&floored(6, 7), &[1]), &store, &machine(), &today()),
        Err(ManifestError::FloorAboveVersion {
            floor: 7,
            version: 6
        })
    ));
}

// Row 6: the floor cannot jump unboundedly.

#[test]
fn row6_unbounded_version_jump_is_refused() {
    let store = trust(1, 1);
    let state = State {
        version_floor: 5,
        ..today()
    };
    let huge = signed(&manifest(1_000_000_000), &[1]);
    assert!(naive_no_floors(&huge, &store, state.now).is_some());
    match verify(&huge, &store, &machine(), &state) {
        Err(ManifestError::VersionJump {
            version: 1_000_000_000,
            floor: 5,
            max_jump: 1000,
        }) => {}
        other => panic!("{other:?}"),
    }
    // At the edge of the allowance: accepted; one past: refused.
    assert!(verify(&signed(&manifest(1005), &[1]), &store, &machine(), &state).is_ok());
    assert!(verify(&signed(&manifest(1006), &[1]), &store, &machine(), &state).is_err());
    // u64::MAX cannot overflow the check.
    let max = signed(&manifest(u64::MAX), &[1]);
    assert!(matches!(
        verify(&max, &store, &machine(), &state),
        Err(ManifestError::VersionJump { .. })
    ));
}

// Row 7: expires_at checked against max(clock, image build time, last seen issued_at).

#[test]
fn row7_expired_manifest_with_the_clock_in_1970_is_refused() {
    let store = trust(1, 1);
    let mut old = manifest(1);
    old.issued_at = BUILT - 60 * DAY;
    old.expires_at = BUILT - 30 * DAY;
    let envelope = signed(&old, &[1]);
    let dead_rtc = State::default();
    assert!(naive_no_floors(&envelope, &store, dead_rtc.now).is_some());
    match verify(&envelope, &store, &machine(), &dead_rtc) {
        Err(ManifestError::Expired {
            reference: BUILT,
            basis: TimeBasis::TimeFloor,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn row7_manifest_expired_before_the_last_accepted_issue_is_refused() {
    // The machine once accepted a manifest issued at T; a replayed manifest
    // that expired before T is refused even with the clock and floor behind.
    let store = trust(1, 1);
    let mut stale = manifest(1);
    stale.expires_at = BUILT + 10 * DAY;
    let envelope = signed(&stale, &[1]);
    let state = State {
        now: 0,
        last_issued_at: BUILT + 20 * DAY,
        ..State::default()
    };
    assert!(naive_no_floors(&envelope, &store, state.now).is_some());
    match verify(&envelope, &store, &machine(), &state) {
        Err(ManifestError::Expired {
            basis: TimeBasis::LastIssuedAt,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // The same manifest on a fresh machine with a right clock is fine.
    assert!(verify(&envelope, &store, &machine(), &today()).is_ok());
    // And the expiry second itself is already too late.
    let at_expiry = State {
        now: stale.expires_at,
        ..State::default()
    };
    assert!(matches!(
        verify(&envelope, &store, &machine(), &at_expiry),
        Err(ManifestError::Expired {
            basis: TimeBasis::Clock,
            ..
        })
    ));
}

// Row 8: manifest bound to channel / arch / board.

#[test]
fn row8_manifest_for_another_channel_arch_or_board_is_refused() {
    type Edit = fn(&mut Manifest);
    let table: &[(Edit, Option<&str>, &str)] = &[
        (
            |m| m.arch = Arch::Aarch64,
            None,
            "manifest is for arch aarch64, this machine is x86_64",
        ),
        (
            |m| m.channel = "beta".into(),
            None,
            "manifest is for channel \"beta\", this machine follows \"stable\"",
        ),
        (
            |m| m.board = Some("rpi4".into()),
            Some("m1-mini"),
            "manifest is for board \"rpi4\", this machine is Some(\"m1-mini\")",
        ),
        (
            |m| m.board = Some("rpi4".into()),
            None,
            "manifest is for board \"rpi4\", this machine is None",
        ),
    ];
    let store = trust(1, 1);
    for (edit, board, expected) in table {
        let mut m = manifest(1);
        edit(&mut m);
        let envelope = signed(&m, &[1]);
        assert!(naive_no_floors(&envelope, &store, today().now).is_some());
        let binding = Binding {
            board: board.map(str::to_owned),
            ..machine()
        };
        let error = verify(&envelope, &store, &binding, &today()).unwrap_err();
        assert_eq!(error.to_string(), *expected);
    }
    // A board-less manifest fits a machine that knows its board.
    let generic = signed(&manifest(1), &[1]);
    let board = Binding {
        board: Some("m1-mini".into()),
        ..machine()
    };
    assert!(verify(&generic, &store, &board, &today()).is_ok());
}

// Row 9: manifest size capped before parsing; artifacts capped at declared size.

#[test]
fn row9_oversized_envelope_is_refused_before_parsing() {
    let store = trust(1, 1);
    // A validly signed manifest whose payload is padded with JSON whitespace
    // past the cap: every byte of it is signed and parses.
    let mut payload = manifest(1).to_payload();
    payload.extend(std::iter::repeat_n(b' ', MAX_ENVELOPE_SIZE));
    let envelope = Envelope::sign(payload, &[&signing(1)])
        .to_json()
        .into_bytes();
    let naive = serde_json::from_slice::<serde_json::Value>(&envelope)
        .ok()
        .and_then(|v| {
            let text = v["payload"].as_str()?.to_owned();
            let payload = crate::encoding::unbase64(&text).ok()?;
            Manifest::from_payload(&payload).ok()
        });
    assert!(naive.is_some());
    match verify(&envelope, &store, &machine(), &today()) {
        Err(ManifestError::EnvelopeTooLarge { size, max }) => {
            assert_eq!((size, max), (envelope.len(), MAX_ENVELOPE_SIZE));
        }
        other => panic!("{other:?}"),
    }
    // The cap comes before syntax: 16 MiB of garbage is refused for its size.
    let garbage = vec![b'['; 16 << 20];
    assert!(matches!(
        verify(&garbage, &store, &machine(), &today()),
        Err(ManifestError::EnvelopeTooLarge { .. })
    ));
    // One byte under the cap is parsed (and refused for its syntax instead).
    let under = vec![b'['; MAX_ENVELOPE_SIZE];
    assert!(matches!(
        verify(&under, &store, &machine(), &today()),
        Err(ManifestError::EnvelopeSyntax { .. })
    ));
}

#[test]
fn row9_endless_artifact_body_stops_at_the_declared_size() {
    let artifact = &manifest(1).artifacts.kernel.unwrap();
    let chunk = [0x5a_u8; 1000];
    // Naive: hash whatever the body gives, compare at the end. Given an
    // endless body (a reader that never ends, bounded here only by the
    // test at 10 MB) it reads all of it and never stops on its own.
    let mut endless = std::io::Read::take(std::io::repeat(0x5a), 10_000_000);
    let mut naive = sha2::Sha256::default();
    let naive_read = std::io::copy(&mut endless, &mut HashWriter(&mut naive)).unwrap();
    assert_eq!(naive_read, 10_000_000, "the naive reader stopped by itself");
    // Ours on the same 10 MB: refused at the first chunk past 4096 bytes
    // (a check that never refused would read all 10,000 chunks and fail
    // here, not hang).
    let mut check = ArtifactCheck::new(artifact);
    let mut read = 0;
    let error = std::iter::repeat_n(&chunk, 10_000)
        .find_map(|c| match check.update(c) {
            Ok(()) => {
                read += c.len();
                None
            }
            Err(e) => Some(e),
        })
        .expect("the check took the whole 10 MB body without refusing it");
    assert_eq!(read, 4000);
    assert!(matches!(
        error,
        ManifestError::ArtifactTooLong { declared: 4096, .. }
    ));
}

/// Lets `io::copy` feed a hash, as a naive downloader would.
struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Row 13: key rotation only through a document signed by old and new thresholds.

fn rotation(store: &TrustStore, new: &[u8], threshold: usize, signers: &[u8]) -> Vec<u8> {
    let doc = Rotation::new(
        store.generation,
        BUILT + DAY,
        new.iter().map(|&s| public(s).record()).collect(),
        threshold,
    );
    let keys: Vec<SigningKey> = signers.iter().map(|&s| signing(s)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    Envelope::sign(doc.to_payload(), &refs)
        .to_json()
        .into_bytes()
}

/// Naive: a rotation document is valid if its own new keys signed it.
fn naive_self_signed(envelope: &[u8]) -> bool {
    let Some(doc) = Envelope::from_json(envelope)
        .ok()
        .and_then(|env| Rotation::from_payload(&env.payload).ok())
    else {
        return false;
    };
    let keys: Vec<VerifyingKey> = doc
        .keys
        .iter()
        .map(|r| VerifyingKey::from_bytes(&unhex::<32>(&r.public_key).unwrap()).unwrap())
        .collect();
    let Ok(env) = Envelope::from_json(envelope) else {
        return false;
    };
    let valid = env
        .signatures
        .iter()
        .filter(|s| {
            keys.iter().any(|k| {
                k.verify(&env.payload, &ed25519_dalek::Signature::from_bytes(&s.sig))
                    .is_ok()
            })
        })
        .count();
    valid >= doc.threshold
}

#[test]
fn row13_rotation_signed_by_new_keys_only_is_refused() {
    // Trusted: keys 1, 2 with threshold 2. The attacker's keys 7, 8.
    let store = trust(2, 2);
    let takeover = rotation(&store, &[7, 8], 2, &[7, 8]);
    assert!(naive_self_signed(&takeover));
    match rotation::apply(&store, &takeover) {
        Err(ManifestError::RotationOldKeys { cause: inner }) => assert!(
            matches!(*inner, ManifestError::SignatureThreshold { valid: 0, .. }),
            "{inner}"
        ),
        other => panic!("{other:?}"),
    }
    // Below the old threshold (one of two old keys) is refused too.
    let half = rotation(&store, &[7, 8], 2, &[1, 7, 8]);
    assert!(matches!(
        rotation::apply(&store, &half),
        Err(ManifestError::RotationOldKeys { .. })
    ));
}

#[test]
fn row13_rotation_signed_by_old_keys_only_is_refused() {
    // Stolen old keys cannot hand the machine to keys nobody holds proof of.
    let store = trust(2, 2);
    let old_only = rotation(&store, &[7, 8], 2, &[1, 2]);
    match rotation::apply(&store, &old_only) {
        Err(ManifestError::RotationNewKeys { cause: inner }) => assert!(
            matches!(*inner, ManifestError::SignatureThreshold { valid: 0, .. }),
            "{inner}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn row13_cross_signed_rotation_is_accepted_once_and_moves_trust() {
    let store = trust(2, 2);
    let cross = rotation(&store, &[7, 8, 9], 2, &[1, 2, 7, 9]);
    let rotated = rotation::apply(&store, &cross).unwrap();
    assert_eq!(rotated.generation, 1);
    assert_eq!(rotated.threshold(), 2);
    let ids: Vec<KeyId> = rotated.keys().iter().map(PublicKey::id).collect();
    assert_eq!(ids, vec![public(7).id(), public(8).id(), public(9).id()]);
    // Floors are kept.
    assert_eq!(
        (
            rotated.version_floor,
            rotated.time_floor,
            rotated.max_version_jump
        ),
        (
            store.version_floor,
            store.time_floor,
            store.max_version_jump
        )
    );
    // New keys now sign manifests; old ones no longer do.
    let m = manifest(1);
    assert!(verify(&signed(&m, &[7, 8]), &rotated, &machine(), &today()).is_ok());
    assert!(verify(&signed(&m, &[1, 2]), &rotated, &machine(), &today()).is_err());
    assert!(verify(&signed(&m, &[7, 8]), &store, &machine(), &today()).is_err());
    // Replaying the same document on the rotated store is refused: its new
    // keys would vouch for it again, but its generation is spent.
    match rotation::apply(&rotated, &cross) {
        Err(ManifestError::RotationGeneration {
            found: 1,
            expected: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    // A document for the wrong generation is refused even when cross-signed.
    let mut skipped = store.clone();
    skipped.generation = 5;
    match rotation::apply(&skipped, &cross) {
        Err(ManifestError::RotationGeneration {
            found: 1,
            expected: 6,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn row13_manifest_signature_does_not_pass_as_a_rotation() {
    // Each document type has its own `type`, so a signed manifest can never
    // be applied as a rotation, whoever signed it.
    let store = trust(1, 1);
    let manifest_envelope = signed(&manifest(1), &[1]);
    assert!(matches!(
        rotation::apply(&store, &manifest_envelope),
        Err(ManifestError::PayloadType {
            expected: "phase.rotation",
            ..
        })
    ));
}

/// A cross-signed chain over key sets `sets` (each a list of seeds, threshold
/// 1), starting at `store`: step g is signed by set g-1 and set g.
fn chain_steps(store: &TrustStore, sets: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut steps = Vec::new();
    let mut current = store.clone();
    let mut previous: Vec<u8> = current
        .keys()
        .iter()
        .filter_map(|k| (1..=255u8).find(|&s| public(s).id() == k.id()))
        .collect();
    for set in sets {
        let signers: Vec<u8> = previous.iter().chain(set.iter()).copied().collect();
        let step = rotation(&current, set, 1, &signers);
        current = rotation::apply(&current, &step).unwrap();
        steps.push(step);
        previous = set.to_vec();
    }
    steps
}

/// `fetch` for [`rotation::follow`] over `steps` (step g at index g-1),
/// recording every path asked for.
fn serve_steps<'a>(
    steps: &'a [Vec<u8>],
    asked: &'a mut Vec<String>,
) -> impl FnMut(&str) -> Result<Vec<u8>, String> + 'a {
    move |path: &str| {
        asked.push(path.to_owned());
        let generation: usize = path
            .strip_prefix("rotations/")
            .and_then(|p| p.strip_suffix(".json"))
            .and_then(|g| g.parse().ok())
            .ok_or("bad path")?;
        steps
            .get(generation.wrapping_sub(1))
            .cloned()
            .ok_or_else(|| "HTTP 404".to_owned())
    }
}

/// Naive: takes each step's new keys as soon as they signed it themselves.
fn naive_follow(store: &TrustStore, steps: &[Vec<u8>]) -> Vec<PublicKey> {
    let mut keys = store.keys().to_vec();
    for step in steps {
        if naive_self_signed(step)
            && let Some(doc) = Envelope::from_json(step)
                .ok()
                .and_then(|env| Rotation::from_payload(&env.payload).ok())
        {
            keys = doc
                .keys
                .iter()
                .filter_map(|r| r.to_public_key().ok())
                .collect();
        }
    }
    keys
}

#[test]
fn row13_a_cross_signed_chain_is_followed_in_order_from_any_generation() {
    let base = trust(1, 1);
    let steps = chain_steps(&base, &[&[2], &[3]]);
    let mut asked = Vec::new();
    let chain = rotation::follow(&base, 2, serve_steps(&steps, &mut asked));
    assert!(chain.stopped.is_none(), "{:?}", chain.stopped);
    assert_eq!(chain.applied, [1, 2]);
    assert_eq!(asked, ["rotations/1.json", "rotations/2.json"]);
    assert_eq!(chain.store.generation, 2);
    assert_eq!(chain.store.keys(), [public(3)]);
    // A manifest signed by the newest key only boots an image that baked
    // the oldest; one signed by a retired key no longer does.
    let m = manifest(1);
    assert!(verify(&signed(&m, &[3]), &chain.store, &machine(), &today()).is_ok());
    assert!(verify(&signed(&m, &[3]), &base, &machine(), &today()).is_err());
    assert!(verify(&signed(&m, &[1]), &chain.store, &machine(), &today()).is_err());
    // An image built at generation 1 fetches only the step it lacks; one
    // built at the latest generation or past it fetches nothing.
    let at_one = rotation::apply(&base, &steps[0]).unwrap();
    let mut asked = Vec::new();
    let chain = rotation::follow(&at_one, 2, serve_steps(&steps, &mut asked));
    assert_eq!(
        (chain.applied, asked),
        (vec![2], vec!["rotations/2.json".to_owned()])
    );
    for latest in [0, 1] {
        let mut asked = Vec::new();
        let chain = rotation::follow(&at_one, latest, serve_steps(&steps, &mut asked));
        assert!(asked.is_empty() && chain.applied.is_empty() && chain.stopped.is_none());
        assert_eq!(chain.store, at_one);
    }
}

#[test]
fn row13_a_bad_step_stops_the_chain_where_it_is_and_says_why() {
    let base = trust(1, 1);
    let good = chain_steps(&base, &[&[2]]);
    let at_one = rotation::apply(&base, &good[0]).unwrap();
    // Step 2 signed by its new key alone: a takeover of the chain's end.
    let takeover = rotation(&at_one, &[9], 1, &[9]);
    let steps = vec![good[0].clone(), takeover];
    assert_eq!(naive_follow(&base, &steps), [public(9)], "naive is fooled");
    let mut asked = Vec::new();
    let chain = rotation::follow(&base, 3, serve_steps(&steps, &mut asked));
    assert_eq!(chain.applied, [1]);
    assert_eq!(chain.store, at_one, "the chain keeps what it reached");
    assert_eq!(asked.len(), 2, "nothing is fetched after a bad step");
    match &chain.stopped {
        Some(ManifestError::RotationStep {
            generation: 2,
            path,
            source,
        }) => {
            assert_eq!(path, "rotations/2.json");
            assert!(
                matches!(**source, ManifestError::RotationOldKeys { .. }),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    let m = manifest(1);
    assert!(verify(&signed(&m, &[9]), &chain.store, &machine(), &today()).is_err());

    // A missing step, a replayed step (generation 1's document served as
    // 2.json) and garbage each stop the chain at that step.
    let replayed = vec![good[0].clone(), good[0].clone()];
    let garbage = vec![good[0].clone(), b"{}".to_vec()];
    let table: [(&[Vec<u8>], &str); 3] = [
        (&good, "rotations/2.json: HTTP 404"),
        (&replayed, "rotation to generation 1, expected 2"),
        (&garbage, "envelope is not valid JSON"),
    ];
    for (steps, expected) in table {
        let mut asked = Vec::new();
        let chain = rotation::follow(&base, 2, serve_steps(steps, &mut asked));
        assert_eq!(chain.applied, [1]);
        let stopped = chain.stopped.expect("stopped");
        let text = chain_text(&stopped);
        assert!(
            text.starts_with("key rotation stopped before generation 2 (rotations/2.json)"),
            "{text}"
        );
        assert!(text.contains(expected), "{text:?} lacks {expected:?}");
    }
}

#[test]
fn row13_a_chain_is_bounded_in_length() {
    let base = trust(1, 1);
    let sets: Vec<[u8; 1]> = (2..=30u8).map(|s| [s]).collect();
    let set_refs: Vec<&[u8]> = sets.iter().map(|s| &s[..]).collect();
    let steps = chain_steps(&base, &set_refs);
    let mut asked = Vec::new();
    let chain = rotation::follow(&base, u64::MAX, serve_steps(&steps, &mut asked));
    assert_eq!(asked.len() as u64, rotation::MAX_CHAIN);
    assert_eq!(chain.store.generation, rotation::MAX_CHAIN);
    assert!(
        matches!(
            chain.stopped,
            Some(ManifestError::RotationChainTooLong {
                from: 0,
                latest: u64::MAX,
                max: rotation::MAX_CHAIN
            })
        ),
        "{:?}",
        chain.stopped
    );
    // A store near the end of u64 does not overflow.
    let mut late = base.clone();
    late.generation = u64::MAX - 1;
    let mut asked = Vec::new();
    let chain = rotation::follow(&late, u64::MAX, serve_steps(&steps, &mut asked));
    assert_eq!(asked, [format!("rotations/{}.json", u64::MAX)]);
    assert!(chain.stopped.is_some());
}

#[test]
fn row13_the_index_is_capped_typed_and_strict() {
    let index = rotation::Index::new(3);
    assert_eq!(
        index.to_json(),
        "{\"type\":\"phase.rotations\",\"latest\":3}\n"
    );
    assert_eq!(
        rotation::Index::from_json(index.to_json().as_bytes()).unwrap(),
        index
    );
    let big = format!(
        "{{\"type\":\"phase.rotations\",\"latest\":1{}}}",
        " ".repeat(5000)
    );
    let table: [(&[u8], &str); 4] = [
        (
            big.as_bytes(),
            "rotation index is 5037 bytes, more than the 4096-byte cap",
        ),
        (
            br#"{"type":"phase.manifest","latest":1}"#,
            "payload type is \"phase.manifest\"",
        ),
        (
            br#"{"type":"phase.rotations","latest":1,"keys":[]}"#,
            "rotation index is not valid JSON",
        ),
        (
            br#"{"type":"phase.rotations","latest":-1}"#,
            "rotation index is not valid JSON",
        ),
    ];
    for (bytes, expected) in table {
        let error = rotation::Index::from_json(bytes).unwrap_err().to_string();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

/// An error with its sources, as the init and the CLI print it.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// Row 14: non-canonical or small-order signatures and keys refused. The
// RFC 8032 vectors, the eight small-order points and a malleated `s` are in
// `key::tests`; here the same attack end to end.

#[test]
fn row14_small_order_key_cannot_enter_a_trust_store() {
    // The identity point as a "trusted" key, and the forgery R = identity,
    // s = 0, which the lax equation accepts for any payload at all.
    let identity: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let payload = manifest(99).to_payload();
    let envelope = Envelope {
        payload: payload.clone(),
        signatures: vec![SignatureEntry {
            key_id: KeyId::of(&identity),
            sig: forged,
        }],
    }
    .to_json()
    .into_bytes();
    let lax = VerifyingKey::from_bytes(&identity).unwrap();
    assert!(naive_count_valid(&envelope, &[lax], 1).is_some());
    let json = format!(
        r#"{{"keys":[{{"key_id":"{}","public_key":"{}"}}],"threshold":1,"version_floor":0,"max_version_jump":1,"time_floor":0}}"#,
        KeyId::of(&identity),
        crate::encoding::hex(&identity)
    );
    assert!(matches!(
        TrustStore::from_json(json.as_bytes()),
        Err(ManifestError::PublicKeyWeak { .. })
    ));
}
