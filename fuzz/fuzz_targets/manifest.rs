//! Envelope, payload, trust-store and rotation parsing, and the provider's
//! rotation index and chain: everything the init reads from a provider
//! before and after signature checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use phase_manifest::{Arch, Binding, Envelope, Manifest, Rotation, State, TrustStore, rotation};

/// The key the committed seeds are signed with (seed bytes all 1), so that
/// mutations of a signed seed reach the payload parser through `verify`.
const TRUST: &str = r#"{"keys":[{"key_id":"34750f98bd59fcfc946da45aaabe933be154a4b5094e1c4abf42866505f3c97e","public_key":"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"}],"threshold":1,"version_floor":0,"max_version_jump":1000,"time_floor":0}"#;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_json(data) {
        let _ = Manifest::from_payload(&env.payload);
        let _ = Rotation::from_payload(&env.payload);
        // Whatever parses must serialise and parse back to itself.
        assert_eq!(Envelope::from_json(env.to_json().as_bytes()).ok(), Some(env));
    }
    if let Ok(m) = Manifest::from_payload(data) {
        assert_eq!(Manifest::from_payload(&m.to_payload()).ok(), Some(m));
    }
    if let Ok(store) = TrustStore::from_json(data) {
        assert_eq!(TrustStore::from_json(store.to_json().as_bytes()).ok(), Some(store));
    }
    if let Ok(trust) = TrustStore::from_json(TRUST.as_bytes()) {
        let binding = Binding {
            channel: "stable".into(),
            arch: Arch::X86_64,
            board: None,
        };
        let _ = phase_manifest::verify(data, &trust, &binding, &State::default());
        let _ = rotation::apply(&trust, data);
        // The same bytes as every step of a chain as long as the index says.
        let chain = rotation::follow(&trust, u64::MAX, |_| Ok(data.to_vec()));
        assert!(chain.applied.len() as u64 <= rotation::MAX_CHAIN);
    }
    if let Ok(index) = rotation::Index::from_json(data) {
        assert_eq!(rotation::Index::from_json(index.to_json().as_bytes()).ok(), Some(index));
    }
});
