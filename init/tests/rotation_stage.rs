//! The init's fetch stage and a provider's key rotation chain (SECURITY.md
//! row 13), on the host against `phase serve`: an image that trusts key A
//! boots a manifest signed only by key B when the mirror carries the
//! rotation A→B signed by both; a rotation signed by B alone is refused,
//! reported, and leaves the image judging by A.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use phase_fetch::{Client, Config, Roots};
use phase_init::fetch::{self, Budget};
use phase_init::plan::ProviderUrl;
use phase_manifest::rotation::{INDEX_PATH, Index, Rotation, step_path};
use phase_manifest::{Arch, Binding, Envelope, Handoff, KeyId, PublicKey, State, TrustStore};
use phase_tools::publish::{Options, Release, publish_with};
use phase_tools::serve::{Server, ServerHandle};
use phase_tools::testdata::{fake_initrd, fake_kernel};

const NOW: u64 = 1_800_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8) -> PublicKey {
    PublicKey::from_bytes(key(seed).verifying_key().as_bytes()).unwrap()
}

/// What the image baked: key A (seed 1) alone.
fn image_trust() -> TrustStore {
    TrustStore::new(&[public(1).record()], 1, 0, 1000, NOW - 100).unwrap()
}

/// A signed rotation from `store` to `new` (threshold 1), signed by `signers`.
fn rotation(store: &TrustStore, new: &[u8], signers: &[u8]) -> Vec<u8> {
    let doc = Rotation::new(
        store.generation,
        NOW - 50,
        new.iter().map(|&s| public(s).record()).collect(),
        1,
    );
    let keys: Vec<SigningKey> = signers.iter().map(|&s| key(s)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    Envelope::sign(doc.to_payload(), &refs)
        .to_json()
        .into_bytes()
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// A tree whose manifest (version 5) is signed by `signer`, with
/// `rotations` published through `phase publish --rotation`.
fn tree(signer: u8, rotations: &[Vec<u8>]) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vmlinuz"),
        fake_kernel(Arch::X86_64, 50_001, 1),
    )
    .unwrap();
    std::fs::write(dir.path().join("initrd"), fake_initrd(20_003, 2)).unwrap();
    let mut files = Vec::new();
    for (i, bytes) in rotations.iter().enumerate() {
        let path = dir.path().join(format!("rotation-{i}.json"));
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let root = dir.path().join("tree");
    let release = Release {
        channel: "stable".into(),
        arch: Arch::X86_64,
        board: None,
        version: 5,
        issued_at: NOW - 10,
        expires_at: NOW + 3600,
        handoff: Handoff::Kexec,
        cmdline: "console=ttyS0 marker=rotated".into(),
        kernel: Some(dir.path().join("vmlinuz")),
        initrd: Some(dir.path().join("initrd")),
        dtb: None,
        root_image: None,
        floor: None,
    };
    let options = Options {
        rotations: files,
        trust_store: (!rotations.is_empty()).then(image_trust),
        ..Options::default()
    };
    publish_with(&release, &[key(signer)], &root, &options).unwrap();
    Tree { _dir: dir, root }
}

/// Puts `bytes` into the tree as rotation `generation` and indexes it, as a
/// hostile or careless publisher could without `phase publish`.
fn plant(root: &Path, generation: u64, bytes: &[u8]) {
    std::fs::create_dir_all(root.join("rotations")).unwrap();
    std::fs::write(root.join(step_path(generation)), bytes).unwrap();
    std::fs::write(root.join(INDEX_PATH), Index::new(generation).to_json()).unwrap();
}

fn serve(root: &Path) -> ServerHandle {
    Server::bind(root, "127.0.0.1:0".parse().unwrap(), None, Arc::new(|_| {}))
        .unwrap()
        .spawn()
}

fn client() -> Client {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut config = Config::new(Roots::Pem(cert.pem().into_bytes()));
    config.first_byte = Duration::from_secs(2);
    Client::new(config).unwrap()
}

fn fetch(mirrors: &[&ServerHandle]) -> Result<fetch::Fetched, fetch::StageFailure> {
    let mirrors: Vec<ProviderUrl> = mirrors
        .iter()
        .map(|s| ProviderUrl::parse(s.url()).unwrap())
        .collect();
    let mut budget = Budget::new(Duration::from_secs(5));
    budget.first_delay = Duration::from_millis(100);
    fetch::fetch_manifest(
        &client(),
        &mirrors,
        None,
        &Binding {
            channel: "stable".into(),
            arch: Arch::X86_64,
            board: None,
        },
        &image_trust(),
        &State {
            now: NOW,
            ..State::default()
        },
        &budget,
    )
}

#[test]
fn row13_an_image_boots_a_manifest_signed_by_keys_it_learned_by_rotation() {
    let t = tree(2, &[rotation(&image_trust(), &[2], &[1, 2])]);
    let server = serve(&t.root);
    let fetched = fetch(&[&server]).unwrap();
    assert_eq!(
        fetched.verified.manifest.cmdline,
        "console=ttyS0 marker=rotated"
    );
    assert_eq!(fetched.verified.signed_by, [public(2).id()]);
    let r = &fetched.rotation;
    assert_eq!(
        (r.latest, r.applied.as_slice(), r.store.generation),
        (Some(1), &[1][..], 1)
    );
    assert!(r.stopped.is_none(), "{:?}", r.stopped);
    assert_eq!(r.to_json()["applied"], serde_json::json!([1]));
    // Key A is retired on this mirror: a manifest signed by it alone is
    // refused even though the image baked it.
    let old = tree(1, &[]);
    let chain = std::fs::read(t.root.join(step_path(1))).unwrap();
    plant(&old.root, 1, &chain);
    let server = serve(&old.root);
    let failure = fetch(&[&server]).unwrap_err();
    assert!(
        failure
            .error
            .contains("0 of the required 1 trusted keys signed the payload")
            && failure
                .error
                .ends_with("; judged by key generation 1 after rotation"),
        "{}",
        failure.error
    );
}

#[test]
fn row13_a_rotation_signed_by_the_new_key_only_is_refused_and_reported() {
    let t = tree(2, &[]);
    plant(&t.root, 1, &rotation(&image_trust(), &[2], &[2]));
    let server = serve(&t.root);
    let failure = fetch(&[&server]).unwrap_err();
    for part in [
        "refused: 0 of the required 1 trusted keys signed the payload",
        "; judged by key generation 0 because key rotation stopped before generation 1 (rotations/1.json): rotation is not signed by the current keys: 0 of the required 1",
    ] {
        assert!(
            failure.error.contains(part),
            "{} lacks {part:?}",
            failure.error
        );
    }
    assert_eq!(failure.tried.len(), 1, "{:?}", failure.tried);
}

#[test]
fn row13_each_mirror_is_judged_by_its_own_chain() {
    // Mirror 1 carries a takeover (new key only); mirror 2 the real chain.
    let bad = tree(2, &[]);
    plant(&bad.root, 1, &rotation(&image_trust(), &[9], &[9]));
    let good = tree(2, &[rotation(&image_trust(), &[2], &[1, 2])]);
    let (bad_server, good_server) = (serve(&bad.root), serve(&good.root));
    let fetched = fetch(&[&bad_server, &good_server]).unwrap();
    assert_eq!(fetched.mirror, 1);
    assert_eq!(fetched.rotation.store.keys(), [public(2)]);
    // Refused by the baked keys, the report saying why the chain stopped.
    assert_eq!(
        fetched.tried[0].kind, "signature_threshold",
        "{:?}",
        fetched.tried
    );
    assert!(
        fetched.tried[0]
            .error
            .contains("rotation is not signed by the current keys"),
        "{:?}",
        fetched.tried
    );
}

#[test]
fn row13_a_bad_index_or_a_missing_step_leaves_the_baked_keys_and_says_why() {
    // The last index names a step the tree does not have.
    let table: [(&[u8], &str); 3] = [
        (
            b"{\"type\":\"phase.rotations\",\"latest\":",
            "rotation index http://",
        ),
        (
            b"{\"type\":\"phase.manifest\",\"latest\":1}",
            "payload type is \"phase.manifest\"",
        ),
        (
            b"{\"type\":\"phase.rotations\",\"latest\":1}",
            "key rotation stopped before generation 1 (rotations/1.json): rotations/1.json: GET http://",
        ),
    ];
    for (index, expected) in table {
        // A manifest signed by the baked key still boots; the report says
        // why no rotation applied.
        let t = tree(1, &[]);
        std::fs::create_dir_all(t.root.join("rotations")).unwrap();
        std::fs::write(t.root.join(INDEX_PATH), index).unwrap();
        let server = serve(&t.root);
        let fetched = fetch(&[&server]).unwrap();
        let r = &fetched.rotation;
        assert_eq!(r.store.generation, 0);
        let stopped = r.stopped.clone().unwrap_or_default();
        assert!(stopped.contains(expected), "{stopped:?} lacks {expected:?}");
        assert_eq!(
            fetched.verified.signed_by,
            [KeyId::of(&public(1).to_bytes())]
        );
    }
}
