//! SECURITY.md rows 1, 4, 6, 7, 8, 9, 13 and 14, one attack per test, each
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
use crate::{ArtifactCheck, ManifestError, TimeBasis, TrustStore};

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

#[test]
fn row4_rollback_to_a_validly_signed_older_version_is_refused() {
    let store = trust(1, 1);
    let v5 = verify(&signed(&manifest(5), &[1]), &store, &machine(), &today()).unwrap();
    let state = today().after(&v5.manifest);
    assert_eq!(state.version_floor, 5);

    let v4 = signed(&manifest(4), &[1]);
    assert!(naive_no_floors(&v4, &store, state.now).is_some());
    match verify(&v4, &store, &machine(), &state) {
        Err(ManifestError::Rollback {
            version: 4,
            floor: 5,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Equal to the floor: accepted, and the floor does not move.
    let again = verify(&signed(&manifest(5), &[1]), &store, &machine(), &state).unwrap();
    assert_eq!(state.after(&again.manifest), state);
    // The image's own floor counts even with no stored state.
    let mut floored = store.clone();
    floored.version_floor = 5;
    assert!(matches!(
        verify(&v4, &floored, &machine(), &today()),
        Err(ManifestError::Rollback { floor: 5, .. })
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
        version_floor: 0,
        last_issued_at: BUILT + 20 * DAY,
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
        Err(ManifestError::EnvelopeSyntax(_))
    ));
}

#[test]
fn row9_endless_artifact_body_stops_at_the_declared_size() {
    let artifact = &manifest(1).artifacts.kernel.unwrap();
    let chunk = [0x5a_u8; 1000];
    // Naive: hash the whole body, compare at the end. Given 10 000 chunks of
    // an endless body it reads all of them (and would never stop).
    let naive_read = std::iter::repeat_n(&chunk, 10_000)
        .map(|c| c.len())
        .sum::<usize>();
    assert_eq!(naive_read, 10_000_000);
    // Ours on the endless body: refused at the first chunk past 4096 bytes.
    let mut check = ArtifactCheck::new(artifact);
    let mut read = 0;
    let error = std::iter::repeat(&chunk)
        .find_map(|c| match check.update(c) {
            Ok(()) => {
                read += c.len();
                None
            }
            Err(e) => Some(e),
        })
        .unwrap();
    assert_eq!(read, 4000);
    assert!(matches!(
        error,
        ManifestError::ArtifactTooLong { declared: 4096, .. }
    ));
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
        Err(ManifestError::RotationOldKeys(inner)) => assert!(
            matches!(*inner, ManifestError::SignatureThreshold { valid: 0, .. }),
            "{inner}"
        ),
        other => panic!("{other:?}"),
    }
    // Below the old threshold (one of two old keys) is refused too.
    let half = rotation(&store, &[7, 8], 2, &[1, 7, 8]);
    assert!(matches!(
        rotation::apply(&store, &half),
        Err(ManifestError::RotationOldKeys(_))
    ));
}

#[test]
fn row13_rotation_signed_by_old_keys_only_is_refused() {
    // Stolen old keys cannot hand the machine to keys nobody holds proof of.
    let store = trust(2, 2);
    let old_only = rotation(&store, &[7, 8], 2, &[1, 2]);
    match rotation::apply(&store, &old_only) {
        Err(ManifestError::RotationNewKeys(inner)) => assert!(
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
