//! Providers for netboot runs: the harness's signing key and test CA (made
//! once, kept under `target/phase/`), trees published with the `phase`
//! library, and servers for them — real nginx for the scenarios, `phase
//! serve` for the demo. Guests under QEMU user networking reach the host's
//! loopback at 10.0.2.2, so everything here listens on 127.0.0.1 only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use phase_manifest::{Arch as ManifestArch, Handoff};
use phase_tools::keys;
use phase_tools::nginx::Nginx;
use phase_tools::publish::{Options, Published, Release, publish_with};
use phase_tools::serve::{Server, ServerHandle, TlsFiles};
use phase_tools::testca::TestCa;
use phase_tools::testnet::Netns;

use crate::{Arch, paths};

/// The harness's release key: `target/phase/keys/release.{key,pub}`.
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// The release key, made on first use. Images built by the harness trust it.
pub fn key() -> Result<Key> {
    let dir = paths::phase().join("keys");
    let key = Key {
        private: dir.join("release.key"),
        public: dir.join("release.pub"),
    };
    if !key.private.exists() {
        eprintln!(
            "provider: generating the test release key in {}",
            dir.display()
        );
        keys::keygen(&dir, "release")?;
    }
    Ok(key)
}

/// The harness's test CA with a certificate for 127.0.0.1 and localhost,
/// made on first use (`target/phase/pki/`). Test images pin it.
pub fn test_ca() -> Result<TestCa> {
    let dir = paths::phase().join("pki");
    let ca = TestCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if ca.ca.exists() && ca.cert.exists() && ca.key.exists() {
        return Ok(ca);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("provider: making a test CA in {}", dir.display());
    Ok(TestCa::new(&dir)?)
}

pub fn manifest_arch(arch: Arch) -> ManifestArch {
    match arch {
        Arch::X86_64 => ManifestArch::X86_64,
        Arch::Aarch64 => ManifestArch::Aarch64,
    }
}

/// What to publish.
pub struct Publication<'a> {
    pub arch: Arch,
    pub version: u64,
    /// The signed `floor` (machines store it before they hand off).
    pub floor: Option<u64>,
    /// Seconds from now until the manifest expires; negative: already expired.
    pub expires_in: i64,
    pub cmdline: String,
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    /// Publish under this arch's path instead (a mirror serving the wrong
    /// arch's manifest).
    pub served_as: Option<Arch>,
    /// A root image: the manifest hands off by switch_root to it instead
    /// (kernel, initrd and cmdline are then not published).
    pub root_image: Option<&'a Path>,
}

/// Publishes into a fresh tree under `dir` with the harness's key.
pub fn publish_tree(dir: &Path, p: &Publication<'_>) -> Result<(PathBuf, Published)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signing = keys::read_signing_key(&key()?.private)?;
    let tree = dir.join("tree");
    let release = Release {
        channel: "stable".into(),
        arch: manifest_arch(p.arch),
        board: None,
        version: p.version,
        floor: p.floor,
        issued_at: now.saturating_sub(60),
        expires_at: now.saturating_add_signed(p.expires_in),
        handoff: if p.root_image.is_some() {
            Handoff::SwitchRoot
        } else {
            Handoff::Kexec
        },
        cmdline: if p.root_image.is_some() {
            String::new()
        } else {
            p.cmdline.clone()
        },
        kernel: p.root_image.is_none().then(|| p.kernel.to_owned()),
        initrd: p
            .initrd
            .filter(|_| p.root_image.is_none())
            .map(Path::to_owned),
        dtb: None,
        root_image: p.root_image.map(Path::to_owned),
    };
    // A scenario plays the provider it needs, an older release over a newer
    // one included (the rollback attacks): what `phase publish` refuses
    // without `--allow-downgrade` is the point of those runs.
    let options = Options {
        allow_downgrade: true,
        ..Options::default()
    };
    let published =
        publish_with(&release, &[signing], &tree, &options).context("publishing the test tree")?;
    if let Some(other) = p.served_as {
        let from = tree.join("stable").join(p.arch.name());
        let to = tree.join("stable").join(other.name());
        std::fs::create_dir_all(&to)?;
        std::fs::copy(from.join("manifest.json"), to.join("manifest.json"))?;
    }
    Ok((tree, published))
}

/// Real nginx serving `tree` over HTTP and HTTPS (the test CA's
/// certificate), with its files in `dir`.
pub fn nginx(tree: &Path, dir: &Path) -> Result<Nginx> {
    let (tls, run) = nginx_files(dir)?;
    Nginx::start(tree, &tls, &run).context("starting nginx")
}

/// [`nginx`] on free ports of `ip` inside the network namespace `ns` (a
/// test LAN), where the guest reaches it directly.
pub fn nginx_in(ns: &Netns, ip: IpAddr, tree: &Path, dir: &Path) -> Result<Nginx> {
    let (tls, run) = nginx_files(dir)?;
    let tree = tree.to_owned();
    ns.enter(move || Nginx::start_on(&tree, &tls, &run, ip))?
        .with_context(|| format!("starting nginx on {ip} in {}", ns.name))
}

/// The test CA's certificate for nginx, and a directory for its files.
fn nginx_files(dir: &Path) -> Result<(TlsFiles, PathBuf)> {
    let ca = test_ca()?;
    let run = dir.join("nginx");
    std::fs::create_dir_all(&run)?;
    let tls = TlsFiles {
        cert: ca.cert.clone(),
        key: ca.key.clone(),
    };
    Ok((tls, run))
}

/// `phase serve` on a free loopback port, logging each request to stderr.
pub fn phase_serve(tree: &Path) -> Result<ServerHandle> {
    let server = Server::bind(
        tree,
        "127.0.0.1:0".parse()?,
        None,
        Arc::new(|line| eprintln!("provider| {line}")),
    )?;
    Ok(server.spawn())
}

/// The URL a guest uses for a server listening on the host's loopback.
pub fn guest_url(scheme: &str, port: u16) -> String {
    format!("{scheme}://10.0.2.2:{port}/")
}
