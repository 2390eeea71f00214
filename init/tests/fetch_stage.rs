//! The init's fetch and verify stages on the host, against real providers
//! (`phase serve` on loopback) and broken ones: the right manifest is taken
//! from the first mirror that has one, every artifact lands in a sealed memfd
//! whose bytes hash to the manifest's value, and each refusal of SECURITY.md
//! rows 2, 4, 7, 8 and 11 ends the stage with its reason and what was tried.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use phase_fetch::{Client, Config, Roots};
use phase_init::fetch::{self, Budget};
use phase_init::plan::ProviderUrl;
use phase_manifest::{Arch, Binding, Handoff, PublicKey, State, TrustStore};
use phase_tools::publish::{Release, publish};
use phase_tools::serve::{Server, ServerHandle};
use phase_tools::testdata::{fake_initrd, fake_kernel};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn trust(version_floor: u64) -> TrustStore {
    let public = PublicKey::from_bytes(signing_key().verifying_key().as_bytes()).unwrap();
    TrustStore::new(&[public.record()], 1, version_floor, 1000, NOW - 100).unwrap()
}

/// A published tree: kernel and initrd of odd sizes, version `version`.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
}

fn tree(version: u64, arch: Arch, expires_at: u64) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let kernel = fake_kernel(arch, 300_001, 1);
    let initrd = fake_initrd(70_003, 2);
    std::fs::write(dir.path().join("vmlinuz"), &kernel).unwrap();
    std::fs::write(dir.path().join("initrd"), &initrd).unwrap();
    let root = dir.path().join("tree");
    let release = Release {
        channel: "stable".into(),
        arch,
        board: None,
        version,
        floor: None,
        issued_at: NOW - 10,
        expires_at,
        handoff: Handoff::Kexec,
        cmdline: "console=ttyS0 phase.report marker=42".into(),
        kernel: Some(dir.path().join("vmlinuz")),
        initrd: Some(dir.path().join("initrd")),
        dtb: None,
        root_image: None,
    };
    publish(&release, &[signing_key()], &root, false).unwrap();
    Tree {
        _dir: dir,
        root,
        kernel,
        initrd,
    }
}

fn serve(root: &Path) -> ServerHandle {
    Server::bind(root, "127.0.0.1:0".parse().unwrap(), None, Arc::new(|_| {}))
        .unwrap()
        .spawn()
}

fn mirror(url: &str) -> ProviderUrl {
    ProviderUrl::parse(url).unwrap()
}

/// A client for plain HTTP: the CA is never consulted, but one is required.
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

fn binding(arch: Arch) -> Binding {
    Binding {
        channel: "stable".into(),
        arch,
        board: None,
    }
}

fn state() -> State {
    State {
        now: NOW,
        ..State::default()
    }
}

fn budget(secs: u64) -> Budget {
    let mut b = Budget::new(Duration::from_secs(secs));
    b.first_delay = Duration::from_millis(200);
    b
}

/// The manifest from `mirrors` as an x86_64 machine on `stable` with a
/// floor of `floor` would fetch it, within `secs` seconds.
fn fetch_x86(
    c: &Client,
    mirrors: &[ProviderUrl],
    floor: u64,
    secs: u64,
) -> Result<fetch::Fetched, fetch::StageFailure> {
    fetch::fetch_manifest(
        c,
        mirrors,
        None,
        &binding(Arch::X86_64),
        &trust(floor),
        &state(),
        &budget(secs),
    )
}

/// A loopback server answering every request with the same bytes.
fn junk(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    url
}

/// A port nothing listens on.
fn dead() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn row3_artifacts_land_in_sealed_memfds_that_hash_to_the_manifest() {
    let t = tree(5, Arch::X86_64, NOW + 3600);
    let server = serve(&t.root);
    let mirrors = [mirror(server.url())];
    let c = client();
    let fetched = fetch_x86(&c, &mirrors, 0, 5).unwrap();
    assert_eq!(fetched.verified.manifest.version, 5);
    assert_eq!(
        fetched.verified.manifest.cmdline,
        "console=ttyS0 phase.report marker=42"
    );
    let mut last = 0;
    let (streamed, tried) = fetch::stream_artifacts(
        &c,
        &mirrors,
        fetched.mirror,
        &fetched.verified,
        &budget(5),
        &mut |p| {
            last = p.done;
        },
    )
    .unwrap();
    assert!(tried.is_empty());
    assert_eq!(last, t.initrd.len() as u64, "progress reached the end");
    let names: Vec<&str> = streamed.iter().map(|s| s.name).collect();
    assert_eq!(names, ["kernel", "initrd"]);
    for (s, bytes) in streamed.iter().zip([&t.kernel, &t.initrd]) {
        // What the hand-off will read is what was hashed.
        let back = s.sealed.read_all().unwrap();
        assert_eq!(sha256(&back), s.sha256);
        assert_eq!(&back, bytes);
        let mut f = std::fs::File::from(s.sealed.fd().try_clone_to_owned().unwrap());
        assert!(f.write(b"x").is_err(), "a sealed artifact took a write");
    }
}

#[test]
fn row11_a_bad_mirror_cannot_block_a_good_one() {
    let t = tree(5, Arch::X86_64, NOW + 3600);
    let good = serve(&t.root);
    let not_found =
        junk(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let garbage =
        junk(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{garbage}");
    let mirrors = [
        mirror(&dead()),
        mirror(&not_found),
        mirror(&garbage),
        mirror(good.url()),
    ];
    let c = client();
    let fetched = fetch_x86(&c, &mirrors, 0, 5).unwrap();
    assert_eq!(fetched.mirror, 3);
    let tried = &fetched.tried;
    assert_eq!(tried.len(), 3, "{tried:?}");
    // Which mirror failed, and why, as data.
    let seen: Vec<(&str, &str, &str)> = tried
        .iter()
        .map(|t| (t.at.as_deref().unwrap(), t.outcome, t.kind.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (mirrors[0].url.as_str(), "transport", "connection_refused"),
            (mirrors[1].url.as_str(), "transport", "status"),
            (mirrors[2].url.as_str(), "refused", "envelope_syntax"),
        ]
    );
    assert_eq!(tried[1].detail["status"], 404);
    // The dead mirror failed at its first request, the rotation index;
    // the others answered that and failed at the manifest.
    let what: Vec<&str> = tried.iter().filter_map(|t| t.what.as_deref()).collect();
    assert_eq!(what, ["rotation", "manifest", "manifest"]);
}

#[test]
fn row2_a_tampered_artifact_is_refused_and_taken_from_the_next_mirror() {
    let good = tree(5, Arch::X86_64, NOW + 3600);
    // A second tree with the same manifest whose kernel blob has one byte
    // flipped.
    let bad_dir = tempfile::tempdir().unwrap();
    let bad_root = bad_dir.path().join("tree");
    copy_dir(&good.root, &bad_root);
    let blob = bad_root.join("blobs/sha256").join(sha256(&good.kernel));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1234] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();

    let bad = serve(&bad_root);
    let ok = serve(&good.root);
    let c = client();
    // The bad mirror alone: refused once, no retry rounds.
    let only_bad = [mirror(bad.url())];
    let fetched = fetch_x86(&c, &only_bad, 0, 30).unwrap();
    let started = Instant::now();
    let err = fetch::stream_artifacts(
        &c,
        &only_bad,
        0,
        &fetched.verified,
        &budget(30),
        &mut |_| {},
    )
    .unwrap_err();
    // Refused for its digest, with both digests named: not a transport
    // error that happens to mention them.
    assert_eq!(err.kind, "artifact_digest", "{err:?}");
    assert_eq!(err.detail["expected"], sha256(&good.kernel));
    assert_eq!(err.detail["actual"], sha256(&bytes));
    assert_eq!(err.tried.len(), 1);
    assert_eq!(err.tried[0].outcome, "refused");
    assert_eq!(err.tried[0].what.as_deref(), Some("kernel"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refusal was retried"
    );
    // With a good mirror after it, the kernel comes from the good one.
    let both = [mirror(bad.url()), mirror(ok.url())];
    let (streamed, tried) =
        fetch::stream_artifacts(&c, &both, 0, &fetched.verified, &budget(30), &mut |_| {}).unwrap();
    assert_eq!(tried.len(), 1, "{tried:?}");
    assert_eq!(
        tried[0].at.as_deref(),
        Some(bad.url().trim_end_matches('/'))
    );
    assert_eq!(tried[0].kind, "artifact_digest");
    // The kernel came from the good mirror; the initrd, which the bad one
    // serves intact, from the first mirror in the order, the bad one.
    assert!(streamed[0].from.starts_with(ok.url()));
    assert!(streamed[1].from.starts_with(bad.url()));
    assert_eq!(streamed[0].sealed.read_all().unwrap(), good.kernel);
}

#[test]
fn mirrors_found_later_are_tried_after_the_named_ones_failed_once() {
    let t = tree(5, Arch::X86_64, NOW + 3600);
    let good = serve(&t.root);
    let named = [mirror(&dead()), mirror(&dead())];
    let c = client();
    let mut asked = 0;
    let mut more = || {
        asked += 1;
        vec![mirror(good.url())]
    };
    let started = Instant::now();
    let fetched = fetch::fetch_manifest(
        &c,
        &named,
        Some(&mut more),
        &binding(Arch::X86_64),
        &trust(0),
        &state(),
        &budget(30),
    )
    .unwrap();
    // Straight after the first round, without its backoff.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(asked, 1);
    assert_eq!(fetched.mirror, 2);
    assert_eq!(fetched.mirrors.len(), 3);
    assert_eq!(fetched.mirrors[2].url, good.url().trim_end_matches('/'));
    let at: Vec<&str> = fetched
        .tried
        .iter()
        .map(|t| t.at.as_deref().unwrap())
        .collect();
    assert_eq!(at, [named[0].url.as_str(), named[1].url.as_str()]);
    // Nothing more: the named ones are retried in rounds, as before, and
    // the hook is asked once only.
    let mut asked = 0;
    let mut nothing = || {
        asked += 1;
        Vec::new()
    };
    let err = fetch::fetch_manifest(
        &c,
        &[mirror(&dead())],
        Some(&mut nothing),
        &binding(Arch::X86_64),
        &trust(0),
        &state(),
        &budget(2),
    )
    .unwrap_err();
    assert_eq!(asked, 1);
    assert!(err.tried.len() >= 2, "{:?}", err.tried);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn refusals_name_their_reason_and_end_the_stage_at_once() {
    // (tree version, tree arch, expiry, machine arch, floor, expected words)
    let table: &[(u64, Arch, u64, Arch, u64, &str)] = &[
        (4, Arch::X86_64, NOW + 3600, Arch::X86_64, 5, "version 4"),
        (5, Arch::X86_64, NOW - 1, Arch::X86_64, 0, "expired"),
        (5, Arch::Aarch64, NOW + 3600, Arch::X86_64, 0, "arch"),
    ];
    let c = client();
    for (version, arch, expires, machine, floor, want) in table {
        let t = tree(*version, *arch, *expires);
        // The tree is published for its own arch; serve it under the
        // machine's path too, as a confused mirror would.
        let from = t.root.join("stable").join(arch.as_str());
        let to = t.root.join("stable").join(machine.as_str());
        if from != to {
            copy_dir(&from, &to);
        }
        let server = serve(&t.root);
        let started = Instant::now();
        let err = fetch::fetch_manifest(
            &c,
            &[mirror(server.url())],
            None,
            &binding(*machine),
            &trust(*floor),
            &state(),
            &budget(30),
        )
        .unwrap_err();
        assert!(err.error.to_lowercase().contains(want), "{want}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{want}: a refusal was retried"
        );
    }
}

#[test]
fn dead_mirrors_are_retried_until_the_budget_ends() {
    let c = client();
    let started = Instant::now();
    let err = fetch_x86(&c, &[mirror(&dead()), mirror(&dead())], 0, 2).unwrap_err();
    let took = started.elapsed();
    assert!(
        err.tried.len() >= 4,
        "fewer than two rounds: {:?}",
        err.tried
    );
    assert!(
        took < Duration::from_secs(4),
        "the budget did not hold: {took:?}"
    );
}

#[test]
fn a_mirror_that_refused_is_not_asked_again_while_a_dead_one_is_retried() {
    let c = client();
    let garbage =
        junk(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!");
    let dead = dead();
    let err = fetch_x86(&c, &[mirror(&garbage), mirror(&dead)], 0, 2).unwrap_err();
    let at = |url: &str| {
        err.tried
            .iter()
            .filter(|t| t.at.as_deref() == Some(mirror(url).url.as_str()))
            .map(|t| (t.outcome, t.kind.as_str()))
            .collect::<Vec<_>>()
    };
    // The garbage once, for its bytes; the dead one in every round.
    assert_eq!(at(&garbage), [("refused", "envelope_syntax")], "{err:?}");
    let dead_tries = at(&dead);
    assert!(
        dead_tries.len() >= 2
            && dead_tries
                .iter()
                .all(|t| *t == ("transport", "connection_refused")),
        "{err:?}"
    );
    assert_eq!(err.kind, "connection_refused");
}
