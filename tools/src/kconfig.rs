//! `phase kconfig check`: does this kernel support the init, for this
//! profile? Reads a `.config`, a `config.gz` or a kernel image built with
//! IKCONFIG, and prints what is missing or mismatched, why, and what it
//! costs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use phase_kconfig::image::{Origin, read_config};
use phase_kconfig::{Config, Report, Severity, Symbols, check, profile};

#[derive(Subcommand)]
pub enum KconfigCommand {
    /// Check a kernel config against a profile's fragments (kconfigs/).
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
}

const CHECK_HELP: &str = "\
Exit status: 0 the kernel passes (notes at most), 1 it works with less
(degraded), 2 the init cannot boot this way (fatal), 3 the check could not run.

Examples: Debian's arm64 kernel, for the QEMU test machines and for M-series:

  $ phase kconfig check --profile qemu /boot/config-6.1.0-57-arm64
  …
  degraded CONFIG_KEXEC_FILE: wanted y, found not set — no kexec_file_load: …
  works with less (degraded): 0 fatal, 1 degraded, 2 notes
  $ echo $?
  1
  $ phase kconfig check --profile m-series /boot/config-6.1.0-57-arm64
  …
  fatal    CONFIG_ARM64_16K_PAGES: wanted y, found not set — Apple's DART IOMMUs map 16K pages; …
  fatal    CONFIG_APPLE_AIC: wanted y, found absent (the tree lacks it, or its dependencies are off) — …
  …
  the init cannot boot this way (fatal): 9 fatal, 5 degraded, 1 notes
  $ echo $?
  2

--profile also takes fragment names joined by + (phase-init+qemu-virt).
SOURCE may be a kernel image built with CONFIG_IKCONFIG (Image, Image.gz,
bzImage, vmlinux) or /proc/config.gz.";

#[derive(Args)]
pub struct CheckArgs {
    /// qemu, m-series or xsc; or fragment names joined by + (phase-init,
    /// phase-init+qemu-virt).
    #[arg(long)]
    pub profile: String,
    /// The profile's kernel variant (xsc: base or cfi-compat; default base).
    #[arg(long)]
    pub variant: Option<String>,
    /// The kernel's source tree: options the config lacks are then told
    /// apart as unknown to the tree or with their dependencies off.
    #[arg(long, value_name = "DIR")]
    pub tree: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A .config, a config.gz (/proc/config.gz), or a kernel image with
    /// IKCONFIG (arm64 Image or Image.gz, bzImage, vmlinux).
    pub source: PathBuf,
}

/// Runs a `phase kconfig` command; its exit status is the verdict.
pub fn run(command: KconfigCommand) -> ExitCode {
    match command {
        KconfigCommand::Check(args) => match check_command(&args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("phase: {e:#}");
                ExitCode::from(3)
            }
        },
    }
}

/// Reads a config the way `check` does: text, gzip'd text or IKCONFIG.
pub fn read_source(path: &Path) -> Result<(Config, Origin)> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    read_config(&bytes).with_context(|| format!("{}", path.display()))
}

/// The symbols every `Kconfig*` file under `tree` defines.
pub fn tree_symbols(tree: &Path) -> Result<Symbols> {
    let mut symbols = Symbols::default();
    let mut stack = vec![tree.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            let name = entry.file_name();
            if kind.is_dir() && !name.to_string_lossy().starts_with('.') {
                stack.push(path);
            } else if kind.is_file() && name.to_string_lossy().starts_with("Kconfig") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                symbols.add_kconfig(&text);
            }
        }
    }
    anyhow::ensure!(
        !symbols.0.is_empty(),
        "{} holds no Kconfig files: not a kernel source tree",
        tree.display()
    );
    Ok(symbols)
}

fn check_command(args: &CheckArgs) -> Result<u8> {
    let fragments = profile::resolve(&args.profile, args.variant.as_deref())?;
    let (config, origin) = read_source(&args.source)?;
    let symbols = args.tree.as_deref().map(tree_symbols).transpose()?;
    let report = check(&config, &fragments, symbols.as_ref());
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["source"] = args.source.display().to_string().into();
        value["read_from"] = origin.to_string().into();
        value["profile"] = args.profile.clone().into();
        value["exit_code"] = report.exit_code().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&args.source, origin, &args.profile, &report);
    }
    Ok(report.exit_code())
}

fn print_report(source: &Path, origin: Origin, profile: &str, report: &Report) {
    let arch = report
        .arch
        .map_or("no known architecture".into(), |a| a.to_string());
    println!(
        "{} ({origin}, {arch}) against profile {profile} ({}): {} options checked",
        source.display(),
        report.fragments.join(" + "),
        report.checked
    );
    for f in &report.findings {
        println!("{f}");
    }
    let count = |s| report.with_severity(s).count();
    let verdict = match report.worst() {
        None => "ok",
        Some(Severity::Degraded) => "works with less (degraded)",
        Some(_) => "the init cannot boot this way (fatal)",
    };
    println!(
        "{verdict}: {} fatal, {} degraded, {} notes",
        count(Severity::Fatal),
        count(Severity::Degraded),
        count(Severity::Note)
    );
}
