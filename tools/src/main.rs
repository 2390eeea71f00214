//! `phase`: keys, signed manifests and providers for Phase Boot.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use phase_manifest::rotation::Rotation;
use phase_manifest::{Arch, Envelope, Handoff, KeyRecord, State, TrustStore};
use phase_tools::publish::{self, Release};
use phase_tools::serve::{RequestLog, Server, TlsFiles};
use phase_tools::verify::{self, Source};
use phase_tools::{keys, time};

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
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "phase")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the trust store an image carries (/etc/phase/trust.json).
    Trust {
        /// Public-key files (from keygen), one per trusted key.
        #[arg(long = "key", value_name = "PUB", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        #[arg(long, default_value_t = 0)]
        version_floor: u64,
        /// How far above the floor a manifest's version may be.
        #[arg(long, default_value_t = 1000)]
        max_version_jump: u64,
        /// RFC 3339 time or seconds since the epoch; default now.
        #[arg(long, value_name = "TIME")]
        time_floor: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Hash and copy artifacts into TREE and sign TREE/<channel>/<arch>/manifest.json.
    Publish(PublishArgs),
    /// Check a manifest (file or URL) as a booting machine would; print the first failure.
    Verify(VerifyArgs),
    /// Serve a published tree (a development provider).
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
    },
    /// Sign a key rotation: current keys (threshold) and the new keys both sign.
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
    /// A duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    expires: String,
    /// RFC 3339 time or seconds since the epoch; default now. Fixing it makes
    /// the output bit-identical for the same inputs and keys.
    #[arg(long, value_name = "TIME")]
    issued_at: Option<String>,
    #[arg(long, value_name = "TREE")]
    out: PathBuf,
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
    #[arg(long, default_value_t = 1, conflicts_with = "trust_store")]
    threshold: usize,
    /// A trust store (trust.json) instead of --trust keys.
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
    /// A stored version floor, as a machine that booted it would have.
    #[arg(long, default_value_t = 0)]
    version_floor: u64,
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
        Command::Keygen { out, name, json } => {
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
        Command::Serve {
            tree,
            listen,
            tls_cert,
            tls_key,
            json,
        } => {
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
            // The first line says where, so a script that asked for port 0
            // learns the port; it is printed only once the socket listens.
            println!("serving {} at {}", tree.display(), server.url());
            std::io::stdout().flush()?;
            server.run()?;
        }
        Command::Rotate {
            trust_store,
            new_keys,
            threshold,
            keys: key_files,
            out,
        } => {
            let bytes = std::fs::read(&trust_store)
                .with_context(|| format!("read {}", trust_store.display()))?;
            let store = TrustStore::from_json(&bytes)
                .with_context(|| format!("trust store {}", trust_store.display()))?;
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
        issued_at,
        expires_at,
        handoff,
        cmdline,
        kernel: args.kernel,
        initrd: args.initrd,
        dtb: args.dtb,
        root_image: args.root_image,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let published = publish::publish(&release, &signing, &args.out, progress)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&published)?);
    } else {
        println!(
            "{} version {} expires {}",
            published.manifest_path.display(),
            published.version,
            time::rfc3339(published.expires_at)
        );
        for a in &published.artifacts {
            println!(
                "  {:<10} {} {} bytes{}",
                a.name,
                a.path,
                a.size,
                if a.reused { " (already present)" } else { "" }
            );
        }
    }
    Ok(())
}

fn verify_command(args: VerifyArgs) -> Result<ExitCode> {
    let json = args.json;
    let result = verify_inner(args);
    match (result, json) {
        (Ok(report), true) => {
            let mut value = serde_json::to_value(&report)?;
            value["ok"] = true.into();
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
        (Ok(report), false) => {
            let m = &report.manifest;
            println!("ok  manifest {}", report.location);
            println!(
                "    {} {} version {} {} expires {}",
                m.channel,
                m.arch,
                m.version,
                m.handoff.as_str(),
                time::rfc3339(m.expires_at)
            );
            for id in &report.signed_by {
                println!("    signed by {id}");
            }
            for a in &report.artifacts {
                let how = match (a.requests, a.ranged) {
                    (0, _) => "file".to_owned(),
                    (n, true) => format!("{n} ranged requests"),
                    (n, false) => format!("{n} requests, server ignored Range"),
                };
                println!("ok  {} {} bytes ({how})", a.name, a.size);
            }
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), true) => {
            let value = serde_json::json!({ "ok": false, "error": format!("{e:#}") });
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::FAILURE)
        }
        (Err(e), false) => Err(e),
    }
}

fn verify_inner(args: VerifyArgs) -> Result<verify::Report> {
    let mut trust = match &args.trust_store {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            TrustStore::from_json(&bytes)
                .with_context(|| format!("trust store {}", path.display()))?
        }
        None => TrustStore::new(
            &read_public_keys(&args.trust)?,
            args.threshold,
            0,
            u64::MAX,
            0,
        )
        .context("--trust keys")?,
    };
    trust.version_floor = trust.version_floor.max(args.version_floor);
    let arch = args
        .arch
        .as_deref()
        .map(|a| a.parse::<Arch>().with_context(|| format!("--arch {a}")))
        .transpose()?;
    let options = verify::Options {
        trust,
        channel: args.channel,
        arch,
        board: args.board,
        state: State {
            now: time::now(),
            ..State::default()
        },
        artifacts: args.artifacts,
        chunk_size: args.chunk_size,
        ca: args.ca,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    Ok(verify::verify(&Source::parse(&args.source), &options)?)
}
