//! The `mkimage` command line.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mkimage::compress::Compression;
use mkimage::initramfs::{self, Inputs};
use mkimage::kmod::KernelTree;
use mkimage::spec::Spec;

/// Packs the Phase Boot init into images. Every output is bit-identical for
/// the same inputs and SOURCE_DATE_EPOCH.
#[derive(Parser)]
#[command(name = "mkimage", version)]
struct Cli {
    /// Print a JSON summary on standard output instead of a human one.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write an initramfs (newc cpio, optionally compressed) from a spec.
    Cpio(CpioArgs),
}

#[derive(clap::Args)]
struct CpioArgs {
    /// The initramfs spec (initramfs/*.toml).
    #[arg(long)]
    spec: PathBuf,
    /// A named input for `source = "@NAME"` entries, e.g. --input init=target/…/init.
    #[arg(long = "input", value_name = "NAME=PATH", value_parser = parse_input)]
    inputs: Vec<(String, PathBuf)>,
    /// Kernel modules come from here: an unpacked kernel package, its
    /// lib/modules, or lib/modules/<release>.
    #[arg(long)]
    kernel_tree: Option<PathBuf>,
    /// Which release under lib/modules, when the tree holds several.
    #[arg(long)]
    kernel_release: Option<String>,
    /// none, gzip, zstd or xz.
    #[arg(long, default_value = "zstd")]
    compress: Compression,
    /// Where to write the archive.
    #[arg(long, short)]
    out: PathBuf,
}

fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
    if name.is_empty() || path.is_empty() {
        return Err("expected NAME=PATH".into());
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkimage: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Cpio(args) => cpio(args, cli.json),
    }
}

fn cpio(args: CpioArgs, json: bool) -> Result<()> {
    let build_time = mkimage::build_time().map_err(anyhow::Error::msg)?;
    let spec = Spec::load(&args.spec)?;
    let mut named = BTreeMap::new();
    for (name, path) in args.inputs {
        if named.insert(name.clone(), path).is_some() {
            bail!("input @{name} given twice");
        }
    }
    let kernel_tree = args
        .kernel_tree
        .as_deref()
        .map(|t| KernelTree::open(t, args.kernel_release.as_deref()))
        .transpose()?;
    let built = initramfs::build(&spec, &Inputs { named, kernel_tree }, build_time)?;
    let raw = built.archive.to_bytes(build_time)?;
    let bytes = args
        .compress
        .compress(&raw)
        .with_context(|| format!("compressing with {}", args.compress))?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    let modules = built.index.as_ref().map_or(0, |i| i.modules.len());
    if json {
        let summary = serde_json::json!({
            "format": "cpio",
            "spec": spec.name,
            "out": args.out,
            "bytes": bytes.len(),
            "uncompressed_bytes": raw.len(),
            "compression": args.compress.to_string(),
            "entries": built.archive.len(),
            "modules": modules,
            "kernel_release": built.info.kernel_release,
            "build_time": build_time,
        });
        println!("{summary}");
    } else {
        println!(
            "{}: {} bytes ({} uncompressed, {}), {} entries, {} modules",
            args.out.display(),
            bytes.len(),
            raw.len(),
            args.compress,
            built.archive.len(),
            modules
        );
    }
    Ok(())
}
