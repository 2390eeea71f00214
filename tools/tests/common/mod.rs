//! Shared by the integration tests: the real `phase` binary, a published
//! tree made with it, and a test CA.
#![allow(dead_code)] // Each test binary uses a different part.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use phase_manifest::Arch;
pub use phase_tools::testdata::{fake_initrd, fake_kernel, noise};
use tempfile::TempDir;

/// Runs the `phase` binary Cargo built for these tests.
pub fn phase<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(args)
        .output()
        .expect("run phase")
}

/// Stdout of a run that must succeed.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "phase failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Stderr of a run that must fail.
pub fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "phase succeeded:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// A key pair and a tree published with them by the `phase` binary.
pub struct Fixture {
    pub dir: TempDir,
    pub key: PathBuf,
    pub public: PathBuf,
    pub tree: PathBuf,
}

/// Artifact sizes: odd, so ranged chunks never divide them evenly.
pub const KERNEL_SIZE: usize = 300_001;
pub const INITRD_SIZE: usize = 70_003;
pub const DTB_SIZE: usize = 2_345;

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        ok(phase([
            OsStr::new("keygen"),
            "--out".as_ref(),
            keys.as_os_str(),
        ]));
        let inputs = dir.path().join("inputs");
        std::fs::create_dir(&inputs).unwrap();
        let mut dtb = noise(DTB_SIZE, 3);
        dtb[..4].copy_from_slice(&[0xd0, 0x0d, 0xfe, 0xed]);
        for (name, bytes) in [
            ("vmlinuz", fake_kernel(Arch::Aarch64, KERNEL_SIZE, 1)),
            ("initrd.img", fake_initrd(INITRD_SIZE, 2)),
            ("board.dtb", dtb),
        ] {
            std::fs::write(inputs.join(name), bytes).unwrap();
        }
        let fixture = Fixture {
            key: keys.join("phase.key"),
            public: keys.join("phase.pub"),
            tree: dir.path().join("tree"),
            dir,
        };
        ok(fixture.publish(&["--version", "7"]));
        fixture
    }

    pub fn input(&self, name: &str) -> PathBuf {
        self.dir.path().join("inputs").join(name)
    }

    /// `phase publish` of the fixture's inputs with extra arguments.
    pub fn publish(&self, extra: &[&str]) -> Output {
        let mut args: Vec<&OsStr> = vec![
            "publish".as_ref(),
            "--key".as_ref(),
            self.key.as_os_str(),
            "--arch".as_ref(),
            "aarch64".as_ref(),
            "--kernel".as_ref(),
        ];
        let kernel = self.input("vmlinuz");
        let initrd = self.input("initrd.img");
        let dtb = self.input("board.dtb");
        args.extend([
            kernel.as_os_str(),
            "--initrd".as_ref(),
            initrd.as_os_str(),
            "--dtb".as_ref(),
            dtb.as_os_str(),
            "--cmdline".as_ref(),
            "console=ttyAMA0 phase.test=kexec-ok".as_ref(),
            "--out".as_ref(),
            self.tree.as_os_str(),
        ]);
        if !extra.contains(&"--expires") {
            args.extend([OsStr::new("--expires"), OsStr::new("1d")]);
        }
        args.extend(extra.iter().map(OsStr::new));
        phase(args)
    }

    pub fn manifest(&self) -> PathBuf {
        self.tree.join("stable/aarch64/manifest.json")
    }

    /// `phase verify --trust PUB --artifacts --json SOURCE` plus extras;
    /// returns the parsed JSON report (which says ok or not).
    pub fn verify(&self, source: &str, extra: &[&str]) -> (bool, serde_json::Value) {
        let mut args: Vec<&OsStr> =
            vec!["verify".as_ref(), "--artifacts".as_ref(), "--json".as_ref()];
        if !extra.contains(&"--trust-store") {
            args.extend([OsStr::new("--trust"), self.public.as_os_str()]);
        }
        args.extend(extra.iter().map(OsStr::new));
        args.push(source.as_ref());
        let output = phase(args);
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "verify printed no JSON ({e}):\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        assert_eq!(output.status.success(), report["ok"] == true, "{report}");
        (output.status.success(), report)
    }
}

/// Asserts a passing report fetched every artifact in ranged requests of
/// `chunk` bytes.
pub fn assert_ranged(report: &serde_json::Value, chunk: usize) {
    assert_eq!(report["ok"], true, "{report}");
    let artifacts = report["artifacts"].as_array().unwrap();
    let sizes = [KERNEL_SIZE, INITRD_SIZE, DTB_SIZE];
    assert_eq!(artifacts.len(), sizes.len(), "{report}");
    for (artifact, size) in artifacts.iter().zip(sizes) {
        assert_eq!(artifact["size"], size, "{artifact}");
        assert_eq!(artifact["ranged"], true, "{artifact}");
        assert_eq!(artifact["requests"], size.div_ceil(chunk), "{artifact}");
    }
}
