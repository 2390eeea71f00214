//! Replays the committed fuzz corpus on stable (see fuzz/Cargo.toml), with the
//! same round-trip assertions as the fuzz target.

use std::path::Path;

use phase_manifest::{Arch, Binding, Envelope, Manifest, Rotation, State, TrustStore, rotation};

#[path = "../../fuzz/replay.rs"]
mod replay;
use replay::corpus;

#[test]
fn manifest_corpus_parses_without_panic_and_round_trips() {
    let trust = TrustStore::from_json(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/manifest/trust.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let binding = Binding {
        channel: "stable".into(),
        arch: Arch::X86_64,
        board: None,
    };
    let mut verified = Vec::new();
    let mut indexes = Vec::new();
    for (name, data) in corpus("manifest") {
        if let Ok(env) = Envelope::from_json(&data) {
            let _ = Manifest::from_payload(&env.payload);
            let _ = Rotation::from_payload(&env.payload);
            assert_eq!(
                Envelope::from_json(env.to_json().as_bytes()).ok(),
                Some(env)
            );
        }
        if let Ok(m) = Manifest::from_payload(&data) {
            assert_eq!(Manifest::from_payload(&m.to_payload()).ok(), Some(m));
        }
        if let Ok(store) = TrustStore::from_json(&data) {
            assert_eq!(
                TrustStore::from_json(store.to_json().as_bytes()).ok(),
                Some(store)
            );
        }
        if phase_manifest::verify(&data, &trust, &binding, &State::default()).is_ok() {
            verified.push(name.clone());
        }
        let _ = rotation::apply(&trust, &data);
        let chain = rotation::follow(&trust, u64::MAX, |_| Ok(data.clone()));
        assert!(chain.applied.len() as u64 <= rotation::MAX_CHAIN);
        if let Ok(index) = rotation::Index::from_json(&data) {
            assert_eq!(
                rotation::Index::from_json(index.to_json().as_bytes()).ok(),
                Some(index)
            );
            indexes.push(name.clone());
        }
    }
    assert_eq!(indexes, ["rotation-index.json"]);
    // The signed seeds are what lets mutations reach the payload parser.
    assert_eq!(verified, ["signed-kexec.json"]);
}
