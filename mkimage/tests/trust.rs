//! Trust material baked into images: the keys and floors a spec names become
//! /etc/phase/trust.json (with the build time as time floor), and the CA
//! bundle or pinned CA becomes /etc/phase/ca.pem. Bad inputs are named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mkimage::cpio::Kind;
use mkimage::initramfs::{self, Inputs};
use mkimage::spec::Spec;
use phase_manifest::{KeyId, TrustStore};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// A public key file as `phase keygen` writes it, for a valid key.
fn key_file(dir: &Path, name: &str, seed: u8) -> PathBuf {
    use ed25519_dalek::SigningKey;
    let public = SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes();
    let hex: String = public.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    let id = KeyId::of(&public);
    std::fs::write(
        &path,
        format!("{{\"key_id\":\"{id}\",\"public_key\":\"{hex}\"}}"),
    )
    .unwrap();
    path
}

fn build(spec_text: &str, inputs: &[(&str, PathBuf)]) -> Result<mkimage::initramfs::Built, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), CA).unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(&spec, spec_text).unwrap();
    let spec = Spec::load(&spec).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let named: BTreeMap<String, PathBuf> = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    initramfs::build(
        &spec,
        &Inputs {
            named,
            kernel_tree: None,
        },
        1_700_000_000,
    )
    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
}

fn file(built: &mkimage::initramfs::Built, path: &str) -> Vec<u8> {
    match &built.archive.get(path).unwrap().kind {
        Kind::File(d) => d.clone(),
        other => panic!("{path} is {other:?}"),
    }
}

#[test]
fn trust_store_and_ca_are_written() {
    let keys = tempfile::tempdir().unwrap();
    let a = key_file(keys.path(), "a.pub", 1);
    let b = key_file(keys.path(), "b.pub", 2);
    let built = build(
        "[trust]\nkeys = [\"@a\", \"@b\"]\nthreshold = 2\nversion_floor = 5\n[tls]\npin = \"ca.pem\"\n",
        &[("a", a), ("b", b)],
    )
    .unwrap();
    let store = TrustStore::from_json(&file(&built, "/etc/phase/trust.json")).unwrap();
    assert_eq!(store.keys().len(), 2);
    assert_eq!(store.threshold(), 2);
    assert_eq!(store.version_floor, 5);
    assert_eq!(store.max_version_jump, 1000);
    assert_eq!(
        store.time_floor, 1_700_000_000,
        "the time floor is the build time"
    );
    assert_eq!(file(&built, "/etc/phase/ca.pem"), CA.as_bytes());
}

#[test]
fn an_including_spec_overrides_single_trust_fields() {
    let keys = tempfile::tempdir().unwrap();
    let a = key_file(keys.path(), "a.pub", 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), CA).unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "[trust]\nkeys = [\"@a\"]\n[tls]\nbundle = \"ca.pem\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("floor.toml"),
        "include = [\"base.toml\"]\n[trust]\nversion_floor = 7\n",
    )
    .unwrap();
    let spec = Spec::load(&dir.path().join("floor.toml")).unwrap();
    let named = [("a".to_string(), a)].into_iter().collect();
    let built = initramfs::build(
        &spec,
        &Inputs {
            named,
            kernel_tree: None,
        },
        1,
    )
    .unwrap();
    let store = TrustStore::from_json(&file(&built, "/etc/phase/trust.json")).unwrap();
    assert_eq!((store.keys().len(), store.version_floor), (1, 7));
}

#[test]
fn bad_trust_inputs_are_named() {
    let keys = tempfile::tempdir().unwrap();
    let a = key_file(keys.path(), "a.pub", 1);
    let garbage = keys.path().join("garbage.pub");
    std::fs::write(&garbage, "not a key").unwrap();
    let no_cert = keys.path().join("empty.pem");
    std::fs::write(&no_cert, "nothing here").unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, PathBuf)], &'a str);
    let table: &[Case<'_>] = &[
        (
            "[trust]\nkeys = [\"@a\"]\n",
            &[],
            "comes from input @a, which was not given",
        ),
        (
            "[trust]\nkeys = []\n",
            &[],
            "[trust] needs at least one key",
        ),
        (
            "[trust]\nkeys = [\"@a\"]\nthreshold = 2\n[tls]\npin = \"ca.pem\"\n",
            &[("a", a.clone())],
            "[trust]: ",
        ),
        (
            "[trust]\nkeys = [\"@g\"]\n",
            &[("g", garbage)],
            "garbage.pub",
        ),
        (
            "[trust]\nkeys = [\"@a\"]\n[tls]\npin = \"@p\"\n",
            &[("a", a.clone()), ("p", no_cert)],
            "holds no PEM certificate",
        ),
        (
            "[trust]\nkeys = [\"@a\"]\n[tls]\nbundle = \"/nonexistent/ca.pem\"\n",
            &[("a", a)],
            "/nonexistent/ca.pem",
        ),
    ];
    for (spec, inputs, want) in table {
        let err = build(spec, inputs).err().unwrap_or_default();
        assert!(err.contains(want), "{spec:?}: {err}");
    }
}
