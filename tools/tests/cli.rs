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
    assert!(
        text.starts_with("trust: 1 key ("),
        "the store judged by comes first: {text}"
    );
    assert!(text.contains("\nok  manifest "), "{text}");
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
            "version 7 is below the floor 8, given (rollback)".into(),
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
        (
            vec!["--floor".into(), "9".into()],
            "floor 9 is above the version 8".into(),
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

    // The floor is signed into the payload, where every verifier reads it.
    let mut args = base_publish(&f);
    args.extend(["--floor".into(), "8".into(), "--json".into()]);
    let published: serde_json::Value = serde_json::from_str(&ok(phase(&args))).unwrap();
    assert_eq!(published["floor"], 8);
    let envelope =
        phase_manifest::Envelope::from_json(&std::fs::read(f.manifest()).unwrap()).unwrap();
    let manifest = phase_manifest::Manifest::from_payload(&envelope.payload).unwrap();
    assert_eq!((manifest.version, manifest.floor), (8, Some(8)));
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

#[test]
fn secure_boot_keygen_writes_a_certificate_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(phase([
        OsStr::new("keygen"),
        "--secure-boot".as_ref(),
        "--bits".as_ref(),
        "3072".as_ref(),
        "--common-name".as_ref(),
        "Test db key".as_ref(),
        "--out".as_ref(),
        dir.path().as_os_str(),
        "--name".as_ref(),
        "db".as_ref(),
        "--json".as_ref(),
    ]));
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["subject"], "CN=Test db key");
    for file in ["db.key", "db.crt", "db.cer"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let mode = std::fs::metadata(dir.path().join("db.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second run never replaces the key.
    let err = fails(phase([
        OsStr::new("keygen"),
        "--secure-boot".as_ref(),
        "--out".as_ref(),
        dir.path().as_os_str(),
        "--name".as_ref(),
        "db".as_ref(),
    ]));
    assert!(err.contains("refusing to overwrite"), "{err}");

    // OpenSSL, the referee: the DER file is the PEM certificate, a
    // 3072-bit RSA code-signing certificate, with the fingerprint printed.
    let Some(openssl) = ["/usr/bin/openssl", "/bin/openssl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        phase_testkit::skip(module_path!(), format_args!("openssl is not installed"));
        return;
    };
    let x509 = |args: &[&str]| {
        let out = std::process::Command::new(openssl)
            .arg("x509")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = x509(&["-inform", "DER", "-in", "db.cer", "-noout", "-text"]);
    assert!(text.contains("Public-Key: (3072 bit)"), "{text}");
    assert!(text.contains("Code Signing"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let fingerprint = x509(&["-in", "db.crt", "-noout", "-fingerprint", "-sha256"]);
    let want = made["fingerprint"].as_str().unwrap().to_uppercase();
    assert_eq!(
        fingerprint
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', ""),
        want
    );
}

#[test]
fn verify_judges_by_an_images_defaults_unless_told_otherwise_and_says_so() {
    let f = Fixture::new();
    let store = f.dir.path().join("jump5.json");
    ok(phase([
        OsStr::new("trust"),
        "--key".as_ref(),
        f.public.as_os_str(),
        "--max-version-jump".as_ref(),
        "5".as_ref(),
        "--out".as_ref(),
        store.as_os_str(),
    ]));
    let store = path(&store);
    let key = path(&f.public);
    // (version published, verify flags, passes, what stdout or stderr says)
    type Case = (u64, Vec<&'static str>, bool, String);
    let table: Vec<Case> = vec![
        (
            5000,
            vec![],
            false,
            "version 5000 jumps more than 1000 past the floor 0".into(),
        ),
        (
            1000,
            vec![],
            true,
            "max version jump 1000, time floor 1970-01-01T00:00:00Z (--trust keys with an image's defaults)".into(),
        ),
        (
            1001,
            vec![],
            false,
            "version 1001 jumps more than 1000".into(),
        ),
        (
            5000,
            vec!["--max-version-jump", "10000"],
            true,
            "max version jump 10000, time floor 1970-01-01T00:00:00Z (--trust keys, --max-version-jump)".into(),
        ),
        (
            5000,
            vec!["--version-floor", "4500"],
            true,
            "version floor 4500".into(),
        ),
        (
            5000,
            vec!["--version-floor", "5001"],
            false,
            "version 5000 is below the floor 5001".into(),
        ),
        (
            7,
            vec!["--trust-store", "STORE"],
            false,
            "version 7 jumps more than 5 past the floor 0".into(),
        ),
        (
            5,
            vec!["--trust-store", "STORE"],
            true,
            "max version jump 5, time floor ".into(),
        ),
    ];
    for (version, flags, passes, expected) in table {
        ok(f.publish(&["--version", &version.to_string(), "--allow-downgrade"]));
        let mut args: Vec<String> = vec!["verify".into()];
        if !flags.contains(&"--trust-store") {
            args.extend(["--trust".into(), key.clone()]);
        }
        args.extend(flags.iter().map(|f| {
            if *f == "STORE" {
                store.clone()
            } else {
                (*f).to_owned()
            }
        }));
        args.push(path(&f.manifest()));
        let output = phase(&args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.success(),
            passes,
            "{args:?}\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains(&expected) || stderr.contains(&expected),
            "{args:?} lacks {expected:?}:\n{stdout}{stderr}"
        );
        // Which store judged is printed whether it passed or not.
        let trust = stdout.lines().next().unwrap_or_default();
        assert!(trust.starts_with("trust: 1 key ("), "{stdout}");
        assert!(
            trust.contains(", threshold 1, generation 0, version floor "),
            "{trust}"
        );
        if flags.contains(&"--trust-store") {
            assert!(
                trust.ends_with(&format!("(trust store {store})")),
                "{trust}"
            );
        }
    }
    // The JSON report carries the same store.
    ok(f.publish(&["--version", "5000", "--allow-downgrade"]));
    let (passed, report) = f.verify(&path(&f.manifest()), &[]);
    assert!(!passed);
    assert_eq!(report["trust"]["max_version_jump"], 1000, "{report}");
    assert_eq!(report["trust"]["version_floor"], 0, "{report}");
    assert_eq!(report["judged_by"], report["trust"], "{report}");
}

/// Every file under `root` with its bytes, for before/after comparisons.
fn snapshot(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walk(root)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(root.join(&p)).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn publish_checks_a_blob_already_in_the_tree_and_replaces_a_damaged_one() {
    let f = Fixture::new();
    let kernel = blob(&f, "vmlinuz");
    let initrd = blob(&f, "initrd.img");
    let dtb = blob(&f, "board.dtb");
    let good = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (kernel_bytes, initrd_bytes, dtb_bytes) = (good(&kernel), good(&initrd), good(&dtb));
    type Damage = fn(&mut Vec<u8>);
    let table: [(&str, Damage); 4] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("one byte flipped", |b| b[100] ^= 0x01),
        ("one byte longer", |b| b.push(0)),
        ("empty", |b| b.clear()),
    ];
    for (what, damage) in table {
        let mut bad = kernel_bytes.clone();
        damage(&mut bad);
        std::fs::write(&kernel, &bad).unwrap();
        let mut bad = initrd_bytes.clone();
        damage(&mut bad);
        std::fs::write(&initrd, &bad).unwrap();
        // The same release again: the damaged copies must not be "already
        // present" and signed into a manifest machines refuse.
        let out = ok(f.publish(&["--version", "7"]));
        assert!(
            out.contains(&format!(
                "kernel     {} 300001 bytes (replaced a damaged copy)",
                common_blob_path(&f, "vmlinuz")
            )),
            "{what}: {out}"
        );
        assert!(
            out.contains("(replaced a damaged copy)\n  dtb"),
            "{what}: {out}"
        );
        assert!(
            out.contains(&format!(
                "dtb        {} 2345 bytes (already present)",
                common_blob_path(&f, "board.dtb")
            )),
            "{what}: {out}"
        );
        assert_eq!(good(&kernel), kernel_bytes, "{what}");
        assert_eq!(good(&initrd), initrd_bytes, "{what}");
        assert_eq!(good(&dtb), dtb_bytes, "{what}");
        let mode = std::fs::metadata(&kernel).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{what}");
        assert!(f.verify(&path(&f.manifest()), &[]).0, "{what}");
    }
    // Nothing is left of the staging.
    assert_eq!(walk(&f.tree).len(), 4, "{:?}", walk(&f.tree));
}

#[test]
fn a_refused_publish_leaves_the_tree_as_it_was() {
    let f = Fixture::new();
    let before = snapshot(&f.tree);
    let other_kernel = f.dir.path().join("other-vmlinuz");
    std::fs::write(
        &other_kernel,
        common::fake_kernel(phase_manifest::Arch::Aarch64, 5000, 99),
    )
    .unwrap();
    let x86_kernel = f.dir.path().join("bzImage");
    std::fs::write(
        &x86_kernel,
        common::fake_kernel(phase_manifest::Arch::X86_64, 5000, 98),
    )
    .unwrap();
    let initrd = path(&f.input("initrd.img"));
    let kernel = path(&f.input("vmlinuz"));
    let other = path(&other_kernel);
    let x86 = path(&x86_kernel);
    let long_channel = "c".repeat(65);
    // Each refusal comes after a new blob was hashed: none may stay.
    let table: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--kernel", &other, "--cmdline", "a\u{1}b", "--version", "8"],
            "cmdline has control character 0x01".into(),
        ),
        (
            vec!["--kernel", &other, "--version", "6"],
            "publishes version 7; version 6 would replace it with an older release (pass --allow-downgrade".into(),
        ),
        (
            vec!["--kernel", &other, "--version", "7"],
            "already publishes version 7 with other artifacts, cmdline or hand-off".into(),
        ),
        (
            vec!["--kernel", &other, "--version", "8", "--expires", "10000years"],
            "--expires \"10000years\" is after 9999-12-31T23:59:59Z".into(),
        ),
        (
            vec!["--kernel", &x86, "--version", "8"],
            format!("kernel {x86} is an x86 bzImage (HdrS at 0x202); aarch64 kexec loads an arm64 Image (ARM\\x64 at 0x38) or Image.gz; is --arch right?"),
        ),
        (
            vec!["--kernel", &initrd, "--initrd", &kernel, "--version", "8"],
            format!("kernel {initrd} is a cpio archive (an initramfs); aarch64 kexec loads an arm64 Image (ARM\\x64 at 0x38) or Image.gz; were --kernel and --initrd given the wrong way round?"),
        ),
        (
            vec!["--kernel", &other, "--version", "8", "--channel", &long_channel],
            "is not 1–64 letters".into(),
        ),
    ];
    for (flags, expected) in table {
        let mut args = base_publish(&f);
        for pair in flags.chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(i) => args[i + 1] = pair[1].to_owned(),
                None => args.extend(pair.iter().map(|s| (*s).to_owned())),
            }
        }
        let stderr = fails(phase(&args));
        assert!(stderr.contains(&expected), "{flags:?}:\n{stderr}");
        assert_eq!(snapshot(&f.tree), before, "{flags:?} changed the tree");
    }
    // A refused first publish does not even leave the tree directory.
    let fresh = f.dir.path().join("fresh");
    let mut args = base_publish(&f);
    let out = args.iter().position(|a| a == "--out").unwrap();
    args[out + 1] = path(&fresh);
    args.extend(["--cmdline".into(), "x\u{7f}".into()]);
    fails(phase(&args));
    assert!(!fresh.exists());
}

#[test]
fn publish_refuses_a_downgrade_unless_allowed() {
    let f = Fixture::new();
    let version = |f: &Fixture| {
        let (_, report) = f.verify(&path(&f.manifest()), &[]);
        report["manifest"]["version"].clone()
    };
    // The same release re-signed with a later expiry: allowed.
    ok(f.publish(&["--version", "7", "--expires", "30d"]));
    // Older, or the same version with another cmdline: refused, then allowed.
    let stderr = fails(f.publish(&["--version", "6"]));
    assert!(
        stderr.contains(&format!(
            "{} publishes version 7; version 6 would replace it with an older release",
            path(&f.manifest())
        )),
        "{stderr}"
    );
    assert_eq!(version(&f), 7);
    ok(f.publish(&["--version", "6", "--allow-downgrade"]));
    assert_eq!(version(&f), 6);
    let mut args = base_publish(&f);
    let v = args.iter().position(|a| a == "--version").unwrap();
    args[v + 1] = "6".into();
    let stderr = fails(phase(&args));
    assert!(
        stderr.contains("already publishes version 6 with other artifacts, cmdline or hand-off"),
        "{stderr}"
    );
    args.push("--allow-downgrade".into());
    ok(phase(&args));
    // A manifest that cannot be read cannot be compared.
    std::fs::write(f.manifest(), b"not json").unwrap();
    let stderr = fails(f.publish(&["--version", "9"]));
    assert!(
        stderr.contains("is not a manifest this tool can read, so a downgrade cannot be ruled out"),
        "{stderr}"
    );
    ok(f.publish(&["--version", "9", "--allow-downgrade"]));
    assert_eq!(version(&f), 9);
}

#[test]
fn publish_carries_the_rotation_chain_and_verify_follows_it() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let store = dir.join("trust.json");
    ok(phase([
        OsStr::new("trust"),
        "--key".as_ref(),
        f.public.as_os_str(),
        "--out".as_ref(),
        store.as_os_str(),
    ]));
    let new = dir.join("new");
    ok(phase([
        OsStr::new("keygen"),
        "--out".as_ref(),
        new.as_os_str(),
    ]));
    let (new_key, new_pub) = (new.join("phase.key"), new.join("phase.pub"));
    let rotation = dir.join("rotation-1.json");
    ok(phase([
        OsStr::new("rotate"),
        "--trust-store".as_ref(),
        store.as_os_str(),
        "--new-key".as_ref(),
        new_pub.as_os_str(),
        "--threshold".as_ref(),
        "1".as_ref(),
        "--key".as_ref(),
        f.key.as_os_str(),
        "--key".as_ref(),
        new_key.as_os_str(),
        "--out".as_ref(),
        rotation.as_os_str(),
    ]));
    let publish_new = |extra: &[&str]| {
        let mut args = base_publish(&f);
        let k = args.iter().position(|a| a == "--key").unwrap();
        args[k + 1] = path(&new_key);
        for pair in extra.chunks(2) {
            match args.iter().position(|a| *a == pair[0]) {
                Some(i) => args[i + 1] = pair[1].to_owned(),
                None => args.extend(pair.iter().map(|s| (*s).to_owned())),
            }
        }
        phase(&args)
    };
    // --rotation needs the store the chain starts from.
    let stderr = fails(publish_new(&["--rotation", &path(&rotation)]));
    assert!(stderr.contains("--trust-store"), "{stderr}");
    // Without the rotation, a manifest signed by the new key alone would be
    // refused by every image that trusts the old one.
    let stderr = fails(publish_new(&["--trust-store", &path(&store)]));
    assert!(
        stderr.contains("machines with trust store generation 0 would refuse the manifest: 0 of the required 1 trusted keys signed"),
        "{stderr}"
    );
    let out = ok(publish_new(&[
        "--rotation",
        &path(&rotation),
        "--trust-store",
        &path(&store),
    ]));
    assert!(
        out.contains("  rotations  up to generation 1 (added 1)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(f.tree.join("rotations/1.json")).unwrap(),
        std::fs::read(&rotation).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(f.tree.join("rotations/index.json")).unwrap(),
        "{\"type\":\"phase.rotations\",\"latest\":1}\n"
    );
    // verify follows the chain from the old key, as an image does, and says
    // which store judged.
    for trust in [
        ["--trust-store", &path(&store)],
        ["--trust", &path(&f.public)],
    ] {
        let output = phase(["verify", trust[0], trust[1], &path(&f.manifest())]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("rotations/index.json names generation 1; applied 1\n"),
            "{stdout}"
        );
        assert!(stdout.contains("judged by: 1 key ("), "{stdout}");
        assert!(stdout.contains(", generation 1, "), "{stdout}");
        assert!(stdout.contains("after key rotation)\n"), "{stdout}");
    }
    let (passed, report) = f.verify(&path(&f.manifest()), &[]);
    assert!(passed, "{report}");
    assert_eq!(report["rotation"]["applied"], serde_json::json!([1]));
    assert_eq!(report["judged_by"]["generation"], 1);
    // The old key is retired: publishing with it alone is refused, naming
    // the keys machines that followed the chain trust.
    let stderr = fails(phase(base_publish(&f)));
    assert!(
        stderr.contains("machines that follow the tree's key rotation to generation 1 trust"),
        "{stderr}"
    );
    // The same rotation again adds nothing; another one for generation 1 is
    // a conflict.
    let out = ok(publish_new(&[
        "--version",
        "9",
        "--rotation",
        &path(&rotation),
        "--trust-store",
        &path(&store),
    ]));
    assert!(out.contains("  rotations  up to generation 1\n"), "{out}");
    let other = dir.join("other");
    ok(phase([
        OsStr::new("keygen"),
        "--out".as_ref(),
        other.as_os_str(),
    ]));
    let conflicting = dir.join("rotation-1b.json");
    ok(phase([
        OsStr::new("rotate"),
        "--trust-store".as_ref(),
        store.as_os_str(),
        "--new-key".as_ref(),
        other.join("phase.pub").as_os_str(),
        "--threshold".as_ref(),
        "1".as_ref(),
        "--key".as_ref(),
        f.key.as_os_str(),
        "--key".as_ref(),
        other.join("phase.key").as_os_str(),
        "--out".as_ref(),
        conflicting.as_os_str(),
    ]));
    let before = snapshot(&f.tree);
    let stderr = fails(publish_new(&[
        "--version",
        "10",
        "--rotation",
        &path(&conflicting),
        "--trust-store",
        &path(&store),
    ]));
    assert!(
        stderr.contains("already holds a different rotation to generation 1"),
        "{stderr}"
    );
    assert_eq!(snapshot(&f.tree), before);
    // A damaged step stops the chain: verify says where and refuses.
    let step = f.tree.join("rotations/1.json");
    let mut bytes = std::fs::read(&step).unwrap();
    let at = bytes.iter().position(|&b| b == b'"').unwrap() + 20;
    bytes[at] ^= 0x01;
    std::fs::write(&step, &bytes).unwrap();
    let output = phase([
        "verify",
        "--trust-store",
        &path(&store),
        &path(&f.manifest()),
    ]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("key rotation stopped before generation 1 (rotations/1.json)"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0 of the required 1 trusted keys signed the payload"),
        "{stderr}"
    );
}

#[test]
fn every_subcommand_help_shows_a_runnable_example() {
    for command in ["keygen", "trust", "publish", "verify", "serve", "rotate"] {
        let help = ok(phase([command, "--help"]));
        let example = help
            .split_once("Example")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("phase {command} --help has no example:\n{help}"));
        assert!(
            example.contains(&format!("phase {command} ")),
            "phase {command} --help: the example does not run {command}:\n{help}"
        );
    }
}
