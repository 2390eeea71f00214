//! mkimage's archives read back by the reference tools (GNU cpio, bsdtar),
//! built twice for identical bytes, and the module closure checked against
//! real Debian kernel trees when `cargo xtask test` provides them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mkimage::compress::Compression;
use mkimage::cpio::{Archive, Kind};
use mkimage::initramfs::{self, Inputs};
use mkimage::kmod::KernelTree;
use mkimage::spec::Spec;

/// Whether `tool` is installed; otherwise the workspace's skip rule
/// ([`phase_testkit::skip`]) has been applied.
fn have(tool: &str, check: &str) -> bool {
    phase_testkit::tool(tool, check).is_some()
}

fn sample() -> Archive {
    let mut a = Archive::new();
    a.add("/init", 0o755, Kind::File(b"\x7fELF-not-really".to_vec()))
        .unwrap();
    a.add(
        "/etc/phase/config",
        0o644,
        Kind::File(b"phase.channel=beta\n".to_vec()),
    )
    .unwrap();
    a.add("/bin/sh", 0o777, Kind::Symlink("busybox".into()))
        .unwrap();
    a.add("/dev/console", 0o600, Kind::CharDev { major: 5, minor: 1 })
        .unwrap();
    a.add(
        "/dev/vda",
        0o660,
        Kind::BlockDev {
            major: 254,
            minor: 0,
        },
    )
    .unwrap();
    a.add("/tmp", 0o1777, Kind::Dir).unwrap();
    a.add("/empty", 0o644, Kind::File(Vec::new())).unwrap();
    a
}

#[test]
fn gnu_cpio_reads_back_every_entry_kind() {
    if !have("cpio", "GNU cpio reads back every entry kind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.cpio");
    std::fs::write(&path, sample().to_bytes(1_700_000_000).unwrap()).unwrap();
    let out = Command::new("cpio")
        .args(["-itv", "--quiet", "-F"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GNU cpio lists `mode links owner group size date name [-> target]`.
    let text = String::from_utf8_lossy(&out.stdout);
    let entries: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = match f.iter().position(|w| *w == "->") {
                Some(arrow) => format!("{} -> {}", f[arrow - 1], f[arrow + 1]),
                None => f[f.len() - 1].to_owned(),
            };
            (f[0].to_owned(), name)
        })
        .collect();
    let want = [
        ("drwxr-xr-x", "bin"),
        ("lrwxrwxrwx", "bin/sh -> busybox"),
        ("drwxr-xr-x", "dev"),
        ("crw-------", "dev/console"),
        ("brw-rw----", "dev/vda"),
        ("-rw-r--r--", "empty"),
        ("drwxr-xr-x", "etc"),
        ("drwxr-xr-x", "etc/phase"),
        ("-rw-r--r--", "etc/phase/config"),
        ("-rwxr-xr-x", "init"),
        ("drwxrwxrwt", "tmp"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(m, n)| (m.to_string(), n.to_string()))
        .collect();
    assert_eq!(entries, want, "GNU cpio's listing, in archive order");
    // Extract and compare contents.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let run = Command::new("cpio")
        // Device nodes are left out: creating them needs root. GNU cpio
        // stops reading options at the first pattern, so -F comes first.
        .args(["-idm", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&path)
        .args(["-f", "dev/*"])
        .current_dir(&x)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read(x.join("etc/phase/config")).unwrap(),
        b"phase.channel=beta\n"
    );
    assert_eq!(
        std::fs::read_link(x.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let mtime = std::fs::metadata(x.join("init"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_700_000_000
    );
}

#[test]
fn bsdtar_reads_back_every_compression() {
    if !have("bsdtar", "bsdtar reads back every entry kind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = sample().to_bytes(1_700_000_000).unwrap();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
    ] {
        let path = dir.path().join(format!("a.{compression}"));
        std::fs::write(&path, compression.compress(&raw).unwrap()).unwrap();
        let out = Command::new("bsdtar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for name in [
            "init",
            "etc/phase/config",
            "bin/sh -> busybox",
            "dev/console",
            "dev/vda",
            "tmp",
            "empty",
        ] {
            assert!(
                text.contains(name),
                "{compression}: bsdtar listing lacks {name:?}:\n{text}"
            );
        }
        let content = Command::new("bsdtar")
            .arg("-xOf")
            .arg(&path)
            .arg("etc/phase/config")
            .output()
            .unwrap();
        assert_eq!(content.stdout, b"phase.channel=beta\n", "{compression}");
    }
}

/// A synthetic module tree: ELF files with .modinfo sections, as a linker
/// would lay them out, plus modules.builtin.
fn fake_tree(dir: &Path) -> PathBuf {
    let release = dir.join("lib/modules/6.1.0-test");
    let modules: &[(&str, &str)] = &[
        (
            "kernel/drivers/net/virtio_net.ko",
            "alias=virtio:d00000001v*\0depends=net_failover,virtio_ring\0name=virtio_net\0",
        ),
        (
            "kernel/drivers/net/net_failover.ko",
            "depends=failover\0name=net_failover\0",
        ),
        ("kernel/net/core/failover.ko", "depends=\0name=failover\0"),
        ("kernel/drivers/unrelated.ko", "depends=\0name=unrelated\0"),
    ];
    for (path, modinfo) in modules {
        let file = release.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, elf64_with_modinfo(modinfo.as_bytes())).unwrap();
    }
    std::fs::write(
        release.join("modules.builtin"),
        "kernel/drivers/virtio/virtio_ring.ko\n",
    )
    .unwrap();
    dir.to_owned()
}

fn elf64_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
    let names = b"\0.modinfo\0.shstrtab\0";
    let body_at = 64u64;
    let names_at = body_at + modinfo.len() as u64;
    let shoff = names_at + names.len() as u64;
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    out[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
    out[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
    out.extend_from_slice(modinfo);
    out.extend_from_slice(names);
    out.extend_from_slice(&[0u8; 64]); // SHN_UNDEF
    for (name, offset, size) in [
        (1u32, body_at, modinfo.len() as u64),
        (10u32, names_at, names.len() as u64),
    ] {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&h);
    }
    out
}

fn write_spec(dir: &Path, init: &Path) -> PathBuf {
    let spec = dir.join("net.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"net\"\nconfig = [\"phase.channel=beta\"]\n[modules]\nboot = [\"virtio-net\"]\n\
             [[file]]\npath = \"/init\"\nsource = \"{}\"\nmode = 0o755\n\
             [[node]]\npath = \"/dev/console\"\nkind = \"char\"\nmajor = 5\nminor = 1\n",
            init.display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn the_cli_builds_the_same_bytes_twice_and_resolves_the_closure() {
    let dir = tempfile::tempdir().unwrap();
    let tree = fake_tree(&dir.path().join("kernel"));
    let init = dir.path().join("init");
    std::fs::write(&init, b"#!init").unwrap();
    let spec = write_spec(dir.path(), &init);
    let mut outputs = Vec::new();
    for (i, compress) in ["zstd", "zstd", "gzip", "gzip", "xz", "xz"]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{i}"));
        let run = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .args(["--json", "cpio", "--compress", compress, "--spec"])
            .arg(&spec)
            .arg("--kernel-tree")
            .arg(&tree)
            .arg("--out")
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(summary["modules"], 3, "{summary}");
        assert_eq!(summary["build_time"], 1_700_000_000);
        outputs.push(std::fs::read(&out).unwrap());
    }
    for pair in outputs.chunks(2) {
        assert_eq!(pair[0], pair[1], "two builds from the same inputs differ");
    }
    // The image carries the closure, the index and the image description.
    let spec = Spec::load(&spec).unwrap();
    let built = initramfs::build(
        &spec,
        &Inputs {
            named: BTreeMap::new(),
            kernel_tree: Some(KernelTree::open(&tree, None).unwrap()),
        },
        1_700_000_000,
    )
    .unwrap();
    let index = built.index.unwrap();
    let order: Vec<&str> = index
        .load_order(&index.boot)
        .unwrap()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(order, ["failover", "net_failover", "virtio_net"]);
    assert!(index.is_builtin("virtio_ring"));
    assert!(
        built
            .archive
            .get("/lib/modules/6.1.0-test/kernel/net/core/failover.ko")
            .is_some()
    );
    assert!(
        built
            .archive
            .get("/lib/modules/6.1.0-test/kernel/drivers/unrelated.ko")
            .is_none()
    );
    assert_eq!(built.info.build_time, 1_700_000_000);
}

#[test]
fn the_cli_names_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, b"#!init").unwrap();
    let spec = write_spec(dir.path(), &init);
    let tree = fake_tree(&dir.path().join("kernel"));
    let missing_init = dir.path().join("missing");
    std::fs::create_dir(&missing_init).unwrap();
    let spec_without_init = write_spec(&missing_init, &missing_init.join("init"));
    let tree_arg = tree.to_str().unwrap();
    let table: &[(&Path, &[&str], &str)] = &[
        (
            &spec,
            &[],
            "the spec names kernel modules (virtio-net) but no kernel module tree was given (pass --kernel-tree DIR)",
        ),
        (
            &spec,
            &["--kernel-tree", "/nonexistent"],
            "reading /nonexistent",
        ),
        (
            &spec,
            &["--kernel-tree", tree_arg, "--compress", "lz4"],
            "unknown compression \"lz4\"",
        ),
        (
            &spec_without_init,
            &["--kernel-tree", tree_arg],
            "missing/init for /init: No such file",
        ),
        (
            Path::new("/nonexistent.toml"),
            &[],
            "reading spec /nonexistent.toml",
        ),
    ];
    for (spec, args, want) in table {
        let run = Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .arg("cpio")
            .arg("--spec")
            .arg(spec)
            .args(*args)
            .args(["--out", "/dev/null"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

/// With the Debian kernels `cargo xtask test` fetched: the virtio network
/// stack's closure as Debian's own .modinfo describes it.
#[test]
fn debian_module_closures() {
    let cases = [
        (
            "PHASE_TEST_KERNEL_TREE_X86_64",
            &[
                "failover",
                "net_failover",
                "virtio",
                "virtio_ring",
                "virtio_net",
            ][..],
        ),
        (
            "PHASE_TEST_KERNEL_TREE_AARCH64",
            &["failover", "net_failover", "virtio_net"][..],
        ),
    ];
    for (var, want) in cases {
        let Some(tree) = phase_testkit::env_dir(var, "module closure of a Debian kernel tree")
        else {
            continue;
        };
        let tree = KernelTree::open(&tree, None).unwrap();
        let index = mkimage_index(&tree, &["virtio_net"]);
        let mut got: Vec<&str> = index.modules.iter().map(|m| m.name.as_str()).collect();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "{var}");
        let order: Vec<&str> = index
            .load_order(&["virtio_net"])
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(order.last(), Some(&"virtio_net"));
        let pos = |n: &str| order.iter().position(|m| *m == n).unwrap();
        assert!(pos("failover") < pos("net_failover"));
        // The virtio NIC's modalias matches virtio_net's own alias.
        assert_eq!(
            index.modules_for_alias("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
    }
}

fn mkimage_index(tree: &KernelTree, boot: &[&str]) -> phase_initramfs::modindex::ModuleIndex {
    let boot: Vec<String> = boot.iter().map(|s| s.to_string()).collect();
    phase_initramfs::modindex::ModuleIndex::build(
        &tree.release,
        tree.builtin.clone(),
        &boot,
        &[],
        |name| {
            tree.lookup(name).map(|hit| {
                hit.map(|(rel, info)| (format!("{}/{}", tree.release, rel.display()), info))
            })
        },
    )
    .unwrap()
}
