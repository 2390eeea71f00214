//! `phase`: keys, signed manifests and providers for Phase Boot.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use phase_manifest::rotation::Rotation;
use phase_manifest::{Arch, Envelope, Handoff, KeyRecord, State, TrustStore, trust};
use phase_tools::announce::{self, Announcer, Target};
use phase_tools::publish::{self, Release};
use phase_tools::serve::{RequestLog, Server, TlsFiles};
use phase_tools::verify::{self, Source};
use phase_tools::{keys, secureboot, time};

#[derive(Parser)]
#[command(
    name = "phase",
    version,
    about = "Keys, signed boot manifests and providers for Phase Boot"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a signing key: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub.
    /// With --secure-boot: an RSA key NAME.key and a self-signed code-signing
    /// certificate NAME.crt (PEM) and NAME.cer (DER, for `mokutil --import`),
    /// for `mkimage --sign NAME.key --cert NAME.crt`.
    #[command(after_help = "Example:\n  phase keygen --out keys --name release\n  \
        # keys/release.key stays offline; keys/release.pub goes into images ([trust] keys)\n  \
        phase keygen --secure-boot --out keys --name db   # for mkimage --sign keys/db.key --cert keys/db.crt")]
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "phase")]
        name: String,
        /// A UEFI Secure Boot key and certificate instead of a manifest key.
        #[arg(long)]
        secure_boot: bool,
        /// RSA key size for --secure-boot: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048, requires = "secure_boot")]
        bits: usize,
        /// The certificate's common name (--secure-boot).
        #[arg(
            long,
            default_value = "Phase Boot Secure Boot signing key",
            requires = "secure_boot"
        )]
        common_name: String,
        /// How long the certificate is valid, in days (--secure-boot).
        #[arg(long, default_value_t = 3650, requires = "secure_boot")]
        days: u32,
        #[arg(long)]
        json: bool,
    },
    /// Write the trust store an image carries (/etc/phase/trust.json).
    #[command(
        after_help = "Example:\n  phase trust --key keys/release.pub --out trust.json\n  \
        # the store mkimage bakes from the same [trust]; use it with verify, rotate and publish"
    )]
    Trust {
        /// Public-key files (from keygen), one per trusted key.
        #[arg(long = "key", value_name = "PUB", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, default_value_t = trust::DEFAULT_THRESHOLD)]
        threshold: usize,
        #[arg(long, default_value_t = trust::DEFAULT_VERSION_FLOOR)]
        version_floor: u64,
        /// How far above the floor a manifest's version may be.
        #[arg(long, default_value_t = trust::DEFAULT_MAX_VERSION_JUMP)]
        max_version_jump: u64,
        /// RFC 3339 time or seconds since the epoch; default now.
        #[arg(long, value_name = "TIME")]
        time_floor: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Hash and copy artifacts into TREE and sign TREE/<channel>/<arch>/manifest.json.
    #[command(after_help = "Examples:\n  \
        phase publish --key keys/release.key --arch x86_64 \\\n      \
        --kernel vmlinuz --initrd initrd.img --cmdline \"console=ttyS0\" \\\n      \
        --version 1 --expires 30d --out tree\n  \
        # after `phase rotate`, with the new key, carrying the rotation to machines:\n  \
        phase publish --key keys/new.key --rotation rotation-1.json --trust-store trust.json \\\n      \
        --arch x86_64 --kernel vmlinuz --initrd initrd.img --cmdline \"console=ttyS0\" \\\n      \
        --version 2 --expires 30d --out tree")]
    Publish(PublishArgs),
    /// Check a manifest (file or URL) as a booting machine would; print the first failure.
    #[command(after_help = "Examples:\n  \
        phase verify --trust keys/release.pub tree/stable/x86_64/manifest.json --artifacts\n  \
        phase verify --trust-store trust.json http://192.0.2.10:8080/stable/x86_64/manifest.json")]
    Verify(VerifyArgs),
    /// Serve a published tree (a development provider).
    #[command(after_help = "Example:\n  phase serve tree --listen 0.0.0.0:8080\n  \
        # machines boot with phase.provider=http://<this host's address>:8080")]
    Serve {
        tree: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks one).
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Log requests as JSON lines.
        #[arg(long)]
        json: bool,
        /// Also answer Multicast DNS queries for the tree (as `phase announce`).
        #[arg(long)]
        announce: bool,
        #[command(flatten)]
        announcing: AnnounceArgs,
    },
    /// Answer Multicast DNS queries for a provider tree served elsewhere
    /// (nginx, a CDN edge), so machines booting with phase.mode=local find it.
    Announce {
        /// The tree's base URL as machines on the LAN reach it; a host name
        /// is resolved once, to its IPv4 address.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        announcing: AnnounceArgs,
    },
    /// Browse for providers as a machine booting with phase.mode=local does.
    Discover {
        /// Interface to browse on (default: the one routing to 224.0.0.251).
        #[arg(long, value_name = "IF")]
        interface: Option<String>,
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Default: this host's.
        #[arg(long)]
        arch: Option<String>,
        /// How long to browse.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Sign a key rotation: current keys (threshold) and the new keys both sign.
    #[command(after_help = "Example:\n  \
        phase keygen --out keys --name new\n  \
        phase rotate --trust-store trust.json --new-key keys/new.pub --threshold 1 \\\n      \
        --key keys/release.key --key keys/new.key --out rotation-1.json\n  \
        # then carry it to machines: phase publish --rotation rotation-1.json --trust-store trust.json …")]
    Rotate {
        /// The trust store the rotation starts from.
        #[arg(long, value_name = "FILE")]
        trust_store: PathBuf,
        /// Public-key files of the new key set.
        #[arg(long = "new-key", value_name = "PUB", required = true)]
        new_keys: Vec<PathBuf>,
        #[arg(long)]
        threshold: usize,
        /// Private keys that sign: enough current ones and enough new ones.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Kernel configs against the init's profiles (kconfigs/).
    Kconfig {
        #[command(subcommand)]
        command: phase_tools::kconfig::KconfigCommand,
    },
}

#[derive(Args)]
struct AnnounceArgs {
    /// Interface to announce on (default: the one routing to 224.0.0.251).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Instance name (default: "Phase Boot on HOSTNAME").
    #[arg(long)]
    name: Option<String>,
    /// Channels served, comma-separated (default: every channel).
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<String>>,
    /// Architectures served, comma-separated (default: every one).
    #[arg(long, value_delimiter = ',')]
    arches: Option<Vec<String>>,
    /// Lower is tried first.
    #[arg(long, default_value_t = 0)]
    priority: u16,
}

impl AnnounceArgs {
    fn given(&self) -> bool {
        self.interface.is_some()
            || self.name.is_some()
            || self.channels.is_some()
            || self.arches.is_some()
            || self.priority != 0
    }

    fn options(self) -> announce::Options {
        announce::Options {
            interface: self.interface,
            name: self.name,
            channels: self.channels,
            arches: self.arches,
            priority: self.priority,
        }
    }
}

#[derive(Args)]
struct PublishArgs {
    /// Private keys to sign with (each signs once).
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
    #[arg(long, default_value = "stable")]
    channel: String,
    /// x86_64 or aarch64.
    #[arg(long)]
    arch: String,
    #[arg(long)]
    board: Option<String>,
    #[arg(long, value_enum, default_value_t = HandoffArg::Kexec)]
    handoff: HandoffArg,
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    dtb: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    root_image: Option<PathBuf>,
    /// The next kernel's exact command line (kexec).
    #[arg(long, allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Monotonic release number.
    #[arg(long)]
    version: u64,
    /// Forbid every machine that boots this release to boot anything below
    /// N from then on (N ≤ --version): each stores N as its floor before it
    /// hands off. Without it, machines keep the floor they have. Set it
    /// once a release is known good: a floor cannot be lowered remotely.
    #[arg(long, value_name = "N")]
    floor: Option<u64>,
    /// A duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    expires: String,
    /// RFC 3339 time or seconds since the epoch; default now. Fixing it makes
    /// the output bit-identical for the same inputs and keys.
    #[arg(long, value_name = "TIME")]
    issued_at: Option<String>,
    #[arg(long, value_name = "TREE")]
    out: PathBuf,
    /// Replace a newer published version with this one, or the same version
    /// with other artifacts, cmdline or hand-off.
    #[arg(long)]
    allow_downgrade: bool,
    /// A signed key rotation (from `phase rotate`) to add to the tree's
    /// chain, served as rotations/<generation>.json; repeatable.
    #[arg(long = "rotation", value_name = "FILE", requires = "trust_store")]
    rotations: Vec<PathBuf>,
    /// The trust store images start from (an image's /etc/phase/trust.json):
    /// the rotation chain is checked from it, and the manifest verified as
    /// such an image would.
    #[arg(long, value_name = "FILE")]
    trust_store: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum HandoffArg {
    Kexec,
    SwitchRoot,
}

#[derive(Args)]
struct VerifyArgs {
    /// Public-key files of trusted keys.
    #[arg(
        long = "trust",
        value_name = "PUB",
        required_unless_present = "trust_store"
    )]
    trust: Vec<PathBuf>,
    /// How many distinct --trust keys must sign.
    #[arg(long, default_value_t = trust::DEFAULT_THRESHOLD, conflicts_with = "trust_store")]
    threshold: usize,
    /// How far above the floor a manifest's version may be, with --trust
    /// (default: an image's, 1000).
    #[arg(long, value_name = "N", conflicts_with = "trust_store")]
    max_version_jump: Option<u64>,
    /// A trust store instead of --trust keys: an image's /etc/phase/trust.json
    /// (or `phase trust`'s output), judged exactly as that image would.
    #[arg(long, value_name = "FILE", conflicts_with = "trust")]
    trust_store: Option<PathBuf>,
    /// The machine's channel; default: from the location.
    #[arg(long)]
    channel: Option<String>,
    /// The machine's arch; default: from the location.
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    board: Option<String>,
    /// The floor a machine has stored (as from its EFI variable or state
    /// partition); a manifest below it is refused as a rollback.
    #[arg(long, value_name = "N")]
    version_floor: Option<u64>,
    /// Also fetch and check every artifact.
    #[arg(long)]
    artifacts: bool,
    /// Bytes per ranged request when fetching artifacts over HTTP.
    #[arg(long, default_value_t = verify::DEFAULT_CHUNK)]
    chunk_size: u64,
    /// CA certificates (PEM) to trust for HTTPS instead of the web roots.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// The manifest: a file or an http(s) URL.
    source: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("phase: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keygen {
            out,
            name,
            secure_boot: true,
            bits,
            common_name,
            days,
            json,
        } => {
            let made = secureboot::keygen(&out, &name, &common_name, bits, days)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                println!("private key      {}", made.private_key.display());
                println!("certificate      {}", made.certificate.display());
                println!("certificate DER  {}", made.certificate_der.display());
                println!("subject          {}", made.subject);
                println!("sha256           {}", made.fingerprint);
            }
        }
        Command::Keygen {
            out, name, json, ..
        } => {
            let generated = keys::keygen(&out, &name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&generated)?);
            } else {
                println!("private key {}", generated.private_key.display());
                println!("public key  {}", generated.public_key.display());
                println!("key id      {}", generated.key_id);
            }
        }
        Command::Trust {
            keys: key_files,
            threshold,
            version_floor,
            max_version_jump,
            time_floor,
            out,
        } => {
            let records = read_public_keys(&key_files)?;
            let time_floor = match time_floor {
                Some(t) => time::parse_instant("--time-floor", &t)?,
                None => time::now(),
            };
            let store = TrustStore::new(
                &records,
                threshold,
                version_floor,
                max_version_jump,
                time_floor,
            )
            .context("trust store")?;
            publish::write_atomic(&out, store.to_json().as_bytes())
                .with_context(|| format!("write {}", out.display()))?;
            println!("{}", out.display());
        }
        Command::Publish(args) => publish_command(args)?,
        Command::Verify(args) => return verify_command(args),
        Command::Kconfig { command } => return Ok(phase_tools::kconfig::run(command)),
        Command::Serve {
            tree,
            listen,
            tls_cert,
            tls_key,
            json,
            announce,
            announcing,
        } => {
            if !announce && announcing.given() {
                bail!("--interface, --name, --channels, --arches and --priority need --announce");
            }
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            };
            let log: Arc<dyn Fn(&RequestLog) + Send + Sync> = if json {
                Arc::new(|line: &RequestLog| {
                    if let Ok(text) = serde_json::to_string(line) {
                        eprintln!("{text}");
                    }
                })
            } else {
                Arc::new(|line: &RequestLog| eprintln!("{line}"))
            };
            let server = Server::bind(&tree, listen, tls.as_ref(), log)?;
            let announcer = if announce {
                let target = Target::listener(server.local_addr(), tls.is_some())?;
                Some(start_announcer(&target, &announcing.options())?)
            } else {
                None
            };
            // The first line says where, so a script that asked for port 0
            // learns the port; it is printed only once the socket listens.
            println!("serving {} at {}", tree.display(), server.url());
            if let Some(a) = announcer {
                announcing_line(&a);
                std::thread::spawn(move || {
                    if let Err(e) = a.run() {
                        eprintln!("phase: {:#}", anyhow::Error::from(e));
                        std::process::exit(1);
                    }
                });
            }
            std::io::stdout().flush()?;
            server.run()?;
        }
        Command::Announce { url, announcing } => {
            let target = Target::from_url(&url)?;
            let a = start_announcer(&target, &announcing.options())?;
            announcing_line(&a);
            std::io::stdout().flush()?;
            a.run()?;
        }
        Command::Discover {
            interface,
            channel,
            arch,
            seconds,
            json,
        } => return discover_command(interface, &channel, arch, seconds, json),
        Command::Rotate {
            trust_store,
            new_keys,
            threshold,
            keys: key_files,
            out,
        } => {
            let store = read_trust_store(&trust_store)?;
            let records = read_public_keys(&new_keys)?;
            let signing = read_signing_keys(&key_files)?;
            let doc = Rotation::new(store.generation, time::now(), records, threshold);
            let refs: Vec<_> = signing.iter().collect();
            let envelope = Envelope::sign(doc.to_payload(), &refs).to_json();
            // Check it the way a machine would before anyone ships it.
            let rotated = phase_manifest::rotation::apply(&store, envelope.as_bytes())
                .context("the rotation would be refused")?;
            publish::write_atomic(&out, envelope.as_bytes())
                .with_context(|| format!("write {}", out.display()))?;
            println!(
                "{}: generation {} → {}, {} keys, threshold {}",
                out.display(),
                store.generation,
                rotated.generation,
                rotated.keys().len(),
                rotated.threshold()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds and probes; from here on a signal sends the goodbye.
fn start_announcer(target: &Target, options: &announce::Options) -> Result<Arc<Announcer>> {
    let a = Arc::new(Announcer::bind(target, options)?);
    a.probe()?;
    announce::goodbye_on_signals(Arc::clone(&a)).context("installing signal handlers")?;
    Ok(a)
}

fn announcing_line(a: &Announcer) {
    println!(
        "announcing {:?} at {} on {}",
        a.instance(),
        a.url(),
        a.interface()
    );
}

fn discover_command(
    interface: Option<String>,
    channel: &str,
    arch: Option<String>,
    seconds: u64,
    json: bool,
) -> Result<ExitCode> {
    let arch = arch.unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let found = announce::discover(
        interface.as_deref(),
        Duration::from_secs(seconds),
        channel,
        &arch,
        |name| eprintln!("heard {name:?}"),
    )?;
    let why = |skip: &phase_discover::Skip| format!("{:#}", anyhow::Error::from(skip.clone()));
    let providers: Vec<&phase_discover::Provider> = {
        let mut ok: Vec<_> = found
            .iter()
            .filter_map(|d| d.outcome.as_ref().ok())
            .collect();
        // The order the init tries them in: priority, then arrival.
        ok.sort_by_key(|p| p.priority);
        ok
    };
    if json {
        let value = serde_json::json!({
            "channel": channel,
            "arch": arch,
            "providers": providers.iter().map(|p| serde_json::json!({
                "instance": p.instance,
                "url": p.url,
                "priority": p.priority,
            })).collect::<Vec<_>>(),
            "skipped": found.iter().filter_map(|d| d.outcome.as_ref().err().map(|e| serde_json::json!({
                "instance": d.instance,
                "reason": why(e),
            }))).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for p in &providers {
            println!(
                "provider {:?} {} priority {}",
                p.instance, p.url, p.priority
            );
        }
        for d in &found {
            if let Err(e) = &d.outcome {
                println!("skipped  {:?}: {}", d.instance, why(e));
            }
        }
    }
    if providers.is_empty() {
        eprintln!("phase: no provider for channel {channel} and arch {arch}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn read_trust_store(path: &std::path::Path) -> Result<TrustStore> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    TrustStore::from_json(&bytes).with_context(|| format!("trust store {}", path.display()))
}

fn read_public_keys(files: &[PathBuf]) -> Result<Vec<KeyRecord>> {
    files
        .iter()
        .map(|f| Ok(keys::read_public_key(f)?.record()))
        .collect()
}

fn read_signing_keys(files: &[PathBuf]) -> Result<Vec<ed25519_dalek::SigningKey>> {
    files
        .iter()
        .map(|f| Ok(keys::read_signing_key(f)?))
        .collect()
}

fn publish_command(args: PublishArgs) -> Result<()> {
    let arch: Arch = args
        .arch
        .parse()
        .with_context(|| format!("--arch {}", args.arch))?;
    let handoff = match args.handoff {
        HandoffArg::Kexec => Handoff::Kexec,
        HandoffArg::SwitchRoot => Handoff::SwitchRoot,
    };
    let cmdline = match (handoff, args.cmdline) {
        (Handoff::Kexec, None) => bail!("--cmdline is required for --handoff kexec"),
        (_, cmdline) => cmdline.unwrap_or_default(),
    };
    for (flag, path) in [
        ("--kernel", &args.kernel),
        ("--initrd", &args.initrd),
        ("--dtb", &args.dtb),
        ("--root-image", &args.root_image),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            bail!("{flag} {}: no such file", path.display());
        }
    }
    let now = time::now();
    let issued_at = match &args.issued_at {
        Some(t) => time::parse_instant("--issued-at", t)?,
        None => now,
    };
    // The expiry must lie ahead of both now and the issue time.
    let expires_at = time::parse_expiry("--expires", &args.expires, issued_at.max(now))?;
    let signing = read_signing_keys(&args.keys)?;
    let release = Release {
        channel: args.channel,
        arch,
        board: args.board,
        version: args.version,
        floor: args.floor,
        issued_at,
        expires_at,
        handoff,
        cmdline,
        kernel: args.kernel,
        initrd: args.initrd,
        dtb: args.dtb,
        root_image: args.root_image,
    };
    let trust_store = args
        .trust_store
        .as_deref()
        .map(read_trust_store)
        .transpose()?;
    let options = publish::Options {
        progress: !args.json && std::io::stderr().is_terminal(),
        allow_downgrade: args.allow_downgrade,
        rotations: args.rotations,
        trust_store,
    };
    let published = publish::publish_with(&release, &signing, &args.out, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&published)?);
    } else {
        println!(
            "{} version {}{} expires {}",
            published.manifest_path.display(),
            published.version,
            published
                .floor
                .map(|f| format!(" floor {f}"))
                .unwrap_or_default(),
            time::rfc3339(published.expires_at)
        );
        for a in &published.artifacts {
            println!(
                "  {:<10} {} {} bytes{}",
                a.name,
                a.path,
                a.size,
                match (a.reused, a.replaced) {
                    (true, _) => " (already present)",
                    (_, true) => " (replaced a damaged copy)",
                    _ => "",
                }
            );
        }
        if published.rotation_latest > 0 {
            let added: Vec<String> = published
                .rotations_added
                .iter()
                .map(u64::to_string)
                .collect();
            println!(
                "  rotations  up to generation {}{}",
                published.rotation_latest,
                if added.is_empty() {
                    String::new()
                } else {
                    format!(" (added {})", added.join(", "))
                }
            );
        }
    }
    Ok(())
}

fn verify_command(args: VerifyArgs) -> Result<ExitCode> {
    let json = args.json;
    let outcome = verify_inner(args)?;
    let passed = outcome.result.is_ok();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verify::render_json(&outcome))?
        );
    } else {
        let (out, error) = verify::render_text(&outcome);
        print!("{out}");
        std::io::stdout().flush()?;
        if let Some(error) = error {
            eprintln!("phase: {error}");
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The trust store the verifier judges by: a trust store file as an image
/// carries it, or `--trust` keys with the defaults of an image built by
/// mkimage, each overridable. A `--version-floor` is not folded in here: it
/// plays the machine's stored floor (see `verify_inner`).
fn verify_trust(args: &VerifyArgs) -> Result<(TrustStore, String)> {
    let (trust, from) = match &args.trust_store {
        Some(path) => (
            read_trust_store(path)?,
            format!("trust store {}", path.display()),
        ),
        None => {
            let store = TrustStore::new(
                &read_public_keys(&args.trust)?,
                args.threshold,
                trust::DEFAULT_VERSION_FLOOR,
                args.max_version_jump
                    .unwrap_or(trust::DEFAULT_MAX_VERSION_JUMP),
                0,
            )
            .context("--trust keys")?;
            let from = match args.max_version_jump {
                None => "--trust keys with an image's defaults",
                Some(_) => "--trust keys, --max-version-jump",
            };
            (store, from.to_owned())
        }
    };
    Ok((trust, from))
}

fn verify_inner(args: VerifyArgs) -> Result<verify::Outcome> {
    let (trust, trust_from) = verify_trust(&args)?;
    let arch = args
        .arch
        .as_deref()
        .map(|a| a.parse::<Arch>().with_context(|| format!("--arch {a}")))
        .transpose()?;
    let trust_from = match args.version_floor {
        Some(n) => format!("{trust_from}; stored version floor {n} from --version-floor"),
        None => trust_from,
    };
    let options = verify::Options {
        trust,
        trust_from,
        channel: args.channel,
        arch,
        board: args.board,
        // The given floor plays the machine's stored one, so a refusal
        // names it apart from the trust store's.
        state: State {
            now: time::now(),
            version_floor: args.version_floor.unwrap_or(0),
            floor_source: phase_manifest::FloorSource::Given,
            ..State::default()
        },
        artifacts: args.artifacts,
        chunk_size: args.chunk_size,
        ca: args.ca,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    Ok(verify::verify(&Source::parse(&args.source), &options))
}
