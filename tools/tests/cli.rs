//! The `phase` binary on files: keygen → publish → verify, the tree layout,
//! reproducibility, and the errors a user sees.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;

use common::{DTB_SIZE, Fixture, INITRD_SIZE, KERNEL_SIZE, fails, ok, phase};
use phase_manifest::encoding::{base64, unbase64};

#[test]
fn keygen_publish_verify_on_files() {
    let f = Fixture::new();
    let mode = std::fs::metadata(&f.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The tree: content-addressed blobs and one manifest.
    let mut files: Vec<String> = walk(&f.tree);
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files.contains(&"stable/aarch64/manifest.json".to_owned()));
    for (name, size) in [
        ("vmlinuz", KERNEL_SIZE),
        ("initrd.img", INITRD_SIZE),
        ("board.dtb", DTB_SIZE),
    ] {
        let bytes = std::fs::read(f.input(name)).unwrap();
        assert_eq!(bytes.len(), size);
        let digest = sha256_hex(&bytes);
        let blob = f.tree.join("blobs/sha256").join(&digest);
        assert_eq!(std::fs::read(&blob).unwrap(), bytes, "{name}");
    }

    let (passed, report) = f.verify(f.manifest().to_str().unwrap(), &[]);
    assert!(passed, "{report}");
    assert_eq!(report["manifest"]["version"], 7);
    assert_eq!(report["manifest"]["arch"], "aarch64");
    assert_eq!(
        report["manifest"]["cmdline"],
        "console=ttyAMA0 phase.test=kexec-ok"
    );
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 3);

    // The human form names each check.
    let text = ok(phase([
        OsStr::new("verify"),
        "--trust".as_ref(),
        f.public.as_os_str(),
        "--artifacts".as_ref(),
        f.manifest().as_os_str(),
    ]));
    assert!(text.starts_with("ok  manifest "), "{text}");
    assert!(text.contains("ok  kernel 300001 bytes (file)"), "{text}");
}

#[test]
fn publish_is_bit_identical_for_the_same_inputs() {
    let f = Fixture::new();
    let fixed = [
        "--version",
        "9",
        "--issued-at",
        "2026-06-01T00:00:00Z",
        "--expires",
        "2099-01-01T00:00:00Z",
    ];
    ok(f.publish(&fixed));
    let first = std::fs::read(f.manifest()).unwrap();
    ok(f.publish(&fixed));
    assert_eq!(std::fs::read(f.manifest()).unwrap(), first);
    // Publishing again reuses the blobs it already has.
    let mut json = fixed.to_vec();
    json.push("--json");
    let published: serde_json::Value = serde_json::from_str(&ok(f.publish(&json))).unwrap();
    for a in published["artifacts"].as_array().unwrap() {
        assert_eq!(a["reused"], true, "{a}");
    }
}

#[test]
fn verify_names_the_first_failure() {
    let f = Fixture::new();
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.manifest()).unwrap()).unwrap();

    // One flipped payload byte: the signature no longer verifies.
    let mut payload = unbase64(envelope["payload"].as_str().unwrap()).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    let mut flipped = envelope.clone();
    flipped["payload"] = base64(&payload).into();
    write_manifest(&f, "flipped", &flipped);

    // A blob with one flipped byte; a truncated one.
    let kernel = blob(&f, "vmlinuz");
    let mut bytes = std::fs::read(&kernel).unwrap();
    bytes[1000] ^= 0x80;
    std::fs::write(&kernel, &bytes).unwrap();
    let initrd = blob(&f, "initrd.img");
    let mut short = std::fs::read(&initrd).unwrap();
    short.pop();
    std::fs::write(&initrd, &short).unwrap();

    let other = f.dir.path().join("other");
    ok(phase([
        OsStr::new("keygen"),
        "--out".as_ref(),
        other.as_os_str(),
    ]));

    let table: Vec<(Vec<String>, String, String)> = vec![
        (
            vec![],
            path(&f.tree.join("flipped/aarch64/manifest.json")),
            "refused: 0 of the required 1 trusted keys signed the payload (key ".into(),
        ),
        (
            vec!["--trust".into(), path(&other.join("phase.pub"))],
            path(&f.manifest()),
            "…: not trusted)".into(),
        ),
        (
            vec![],
            path(&f.manifest()),
            format!("kernel {} refused: artifact", path(&kernel)),
        ),
        (
            vec!["--arch".into(), "x86_64".into()],
            path(&f.manifest()),
            "manifest is for arch aarch64, this machine is x86_64".into(),
        ),
        (
            vec!["--version-floor".into(), "8".into()],
            path(&f.manifest()),
            "version 7 is below the floor 8 (rollback)".into(),
        ),
    ];
    for (extra, source, expected) in table {
        let mut args: Vec<String> = vec!["verify".into()];
        if !extra.contains(&"--trust".to_owned()) {
            args.extend(["--trust".into(), path(&f.public)]);
        }
        args.extend(extra);
        args.extend(["--artifacts".into(), source]);
        let stderr = fails(phase(&args));
        assert!(stderr.contains(&expected), "{args:?}:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }

    // Repair the kernel: the truncated initrd is next.
    bytes[1000] ^= 0x80;
    std::fs::write(&kernel, &bytes).unwrap();
    let (passed, report) = f.verify(&path(&f.manifest()), &[]);
    assert!(!passed);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "initrd {} refused: artifact {}: 70002 bytes, declared 70003",
            path(&initrd),
            common_blob_path(&f, "initrd.img")
        )),
        "{error}"
    );
}

#[test]
fn errors_say_what_was_wrong_and_where() {
    let f = Fixture::new();
    let missing = f.dir.path().join("nope/vmlinuz");
    let open_key = f.dir.path().join("open.key");
    std::fs::copy(&f.key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_a_key = f.dir.path().join("public-as-private.key");
    std::fs::copy(&f.public, &not_a_key).unwrap();
    std::fs::set_permissions(&not_a_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let table: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--kernel".into(), path(&missing)],
            format!("--kernel {}: no such file", path(&missing)),
        ),
        (
            vec!["--key".into(), path(&open_key)],
            format!(
                "private key {} is mode 0644; it must not be readable by group or others",
                path(&open_key)
            ),
        ),
        (
            vec!["--key".into(), path(&not_a_key)],
            format!("private key {} is not an Ed25519 PKCS#8 PEM key", path(&not_a_key)),
        ),
        (
            vec!["--arch".into(), "arm64".into()],
            "--arch arm64: unknown arch \"arm64\" (expected x86_64 or aarch64; arm64 is spelled aarch64)"
                .into(),
        ),
        (
            vec!["--expires".into(), "2020-01-01T00:00:00Z".into()],
            "--expires \"2020-01-01T00:00:00Z\" is in the past (now is ".into(),
        ),
        (
            vec!["--expires".into(), "soon".into()],
            "--expires \"soon\" is neither a duration (30d, 12h) nor an RFC 3339 time".into(),
        ),
        (
            vec!["--channel".into(), "../etc".into()],
            "channel \"../etc\" is not 1–64 letters".into(),
        ),
        (
            vec!["--cmdline".into(), "a\u{7}b".into()],
            "cmdline has control character 0x07 at offset 1".into(),
        ),
    ];
    for (override_args, expected) in table {
        // Later flags win in clap only for single values; build the command
        // from scratch so each case changes exactly one thing.
        let mut args = base_publish(&f);
        for pair in override_args.chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(i) => args[i + 1] = pair[1].clone(),
                None => args.extend(pair.iter().cloned()),
            }
        }
        let stderr = fails(phase(&args));
        assert!(stderr.contains(&expected), "{args:?}:\n{stderr}");
        assert!(stderr.starts_with("phase: "), "{stderr}");
    }
    // A failed publish leaves the existing manifest alone.
    assert!(f.verify(&path(&f.manifest()), &[]).0);
}

#[test]
fn trust_store_and_rotation_commands() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let store = dir.join("trust.json");
    ok(phase([
        OsStr::new("trust"),
        "--key".as_ref(),
        f.public.as_os_str(),
        "--time-floor".as_ref(),
        "2026-01-01T00:00:00Z".as_ref(),
        "--out".as_ref(),
        store.as_os_str(),
    ]));
    let parsed = phase_manifest::TrustStore::from_json(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(parsed.time_floor, 1_767_225_600);
    assert_eq!(parsed.threshold(), 1);
    // The store verifies the tree just as --trust does.
    let (passed, report) = f.verify(
        &path(&f.manifest()),
        &["--trust-store", store.to_str().unwrap()],
    );
    assert!(passed, "{report}");

    let new = dir.join("new");
    ok(phase([
        OsStr::new("keygen"),
        "--out".as_ref(),
        new.as_os_str(),
    ]));
    let rotation = dir.join("rotation.json");
    let rotate = |signers: &[&std::path::Path]| {
        let mut args: Vec<&OsStr> = vec![
            "rotate".as_ref(),
            "--trust-store".as_ref(),
            store.as_os_str(),
            "--new-key".as_ref(),
        ];
        let new_pub = new.join("phase.pub");
        let mut owned = vec![new_pub.into_os_string()];
        for s in signers {
            owned.push("--key".into());
            owned.push(s.as_os_str().to_owned());
        }
        args.extend(owned.iter().map(|s| s.as_os_str()));
        args.extend([
            "--threshold".as_ref(),
            "1".as_ref(),
            "--out".as_ref(),
            rotation.as_os_str(),
        ]);
        phase(args)
    };
    // Only the new key: the tool refuses to write what machines would refuse.
    let stderr = fails(rotate(&[&new.join("phase.key")]));
    assert!(
        stderr
            .contains("the rotation would be refused: rotation is not signed by the current keys"),
        "{stderr}"
    );
    assert!(!rotation.exists());
    // Old and new: accepted.
    let out = ok(rotate(&[&f.key, &new.join("phase.key")]));
    assert!(
        out.contains("generation 0 → 1, 1 keys, threshold 1"),
        "{out}"
    );
    let rotated =
        phase_manifest::rotation::apply(&parsed, &std::fs::read(&rotation).unwrap()).unwrap();
    assert_eq!(
        rotated.keys()[0].record().key_id,
        key_id(&new.join("phase.pub"))
    );
}

fn key_id(public: &std::path::Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(public).unwrap()).unwrap();
    v["key_id"].as_str().unwrap().to_owned()
}

fn base_publish(f: &Fixture) -> Vec<String> {
    vec![
        "publish".into(),
        "--key".into(),
        path(&f.key),
        "--arch".into(),
        "aarch64".into(),
        "--kernel".into(),
        path(&f.input("vmlinuz")),
        "--cmdline".into(),
        "console=ttyAMA0".into(),
        "--version".into(),
        "8".into(),
        "--expires".into(),
        "1d".into(),
        "--out".into(),
        path(&f.tree),
    ]
}

fn write_manifest(f: &Fixture, channel: &str, envelope: &serde_json::Value) {
    let dir = f.tree.join(channel).join("aarch64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), envelope.to_string()).unwrap();
}

fn common_blob_path(f: &Fixture, input: &str) -> String {
    format!(
        "blobs/sha256/{}",
        sha256_hex(&std::fs::read(f.input(input)).unwrap())
    )
}

fn blob(f: &Fixture, input: &str) -> std::path::PathBuf {
    f.tree.join(common_blob_path(f, input))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    phase_manifest::encoding::hex(&Sha256::digest(bytes))
}

fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}
