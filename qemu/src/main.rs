//! `cargo xtask`: Phase Boot's two commands for a newcomer, and the steps
//! behind them.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xtask::artifacts::{self, Variant};
use xtask::vm::{Vm, VmSpec};
use xtask::{Arch, cmd, paths, provider, setup};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test Phase Boot under QEMU (TCG)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, the arm64 dpkg architecture,
    /// Rust musl targets. Idempotent.
    Setup,
    /// Cross-build the static init for an architecture.
    BuildInit {
        #[arg(long)]
        arch: Arch,
        /// Build with the test-only hooks (phase.test.panic=).
        #[arg(long)]
        test_hooks: bool,
    },
    /// Build the init and pack an initramfs for an architecture.
    Initramfs {
        #[arg(long)]
        arch: Arch,
        /// A spec under initramfs/ (netboot, debug, …).
        #[arg(long, default_value = "netboot")]
        spec: String,
        #[arg(long)]
        test_hooks: bool,
    },
    /// The main job on x86_64: build, fetch a Debian kernel, pack, boot under
    /// QEMU and report each stage.
    #[command(name = "qemu-x86_64")]
    QemuX86_64(BootArgs),
    /// The main job on aarch64.
    #[command(name = "qemu-aarch64")]
    QemuAarch64(BootArgs),
    /// Every test: format and lint checks, unit, golden and reference-tool
    /// tests, the PID 1 reaper test, and the QEMU scenarios on both arches.
    Test {
        /// Only run QEMU scenarios whose name contains one of these.
        filters: Vec<String>,
        /// Skip the QEMU scenarios.
        #[arg(long)]
        no_qemu: bool,
    },
    /// Benchmarks, printed as tables (never asserted on).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Build a small kernel from Debian's linux-source-6.1 for a profile
    /// (tinyconfig + phase-init + qemu-virt + the profile's fragments, with
    /// IKCONFIG), cached by the hash of its inputs.
    Kernel {
        /// m-series (arm64, 16K pages), xsc (x86_64, kexec_load only), or
        /// fragment names joined by + (with --arch).
        #[arg(long)]
        profile: String,
        /// Needed for a fragment set; a profile knows its own.
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Run a fuzz target with cargo-fuzz (nightly) for a while.
    Fuzz {
        /// cmdline, modinfo, modindex, …; all targets when omitted.
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// DHCP to lease: the init's client against busybox udhcpc, alternating
    /// in the same VM on QEMU's user network.
    Dhcp {
        /// Exchanges per client.
        #[arg(long, default_value_t = 21)]
        rounds: u32,
        /// One architecture; both when omitted.
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Discovery time to the first provider on the harness's LAN: the
    /// init's DNS-SD browser against avahi-browse, same responder.
    Discover {
        /// Boots (and avahi browses); the median counts.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// One architecture; both when omitted.
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Kernel start → kexec: Phase Boot against a seed-style script init
    /// (busybox udhcpc + wget + sha256sum + kexec-tools), same provider.
    Boot {
        /// Boots of each init; the median counts.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// One architecture; both when omitted.
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// Kernel start → the target root's init, for an overlay over a root
    /// image fetched from nginx: Phase Boot against a dracut-style busybox
    /// script (wget + sha256sum + losetup + mount + switch_root).
    Root {
        /// Boots of each init; the median counts.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// One architecture; both when omitted.
        #[arg(long)]
        arch: Option<Arch>,
    },
    /// The same hybrid ISO built with mkimage, grub-mkrescue and the
    /// xorriso + isolinux + mkfs.vfat + mtools pipeline: time and size.
    Mkimage {
        /// Runs of each way; the median counts.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[derive(clap::Args)]
struct BootArgs {
    /// Extra kernel parameters.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// The initramfs spec to boot.
    #[arg(long, default_value = "netboot")]
    spec: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::ensure_all().map(|()| eprintln!("setup: everything is installed")),
        Cmd::BuildInit { arch, test_hooks } => build_init(arch, test_hooks),
        Cmd::Initramfs {
            arch,
            spec,
            test_hooks,
        } => initramfs(arch, &spec, test_hooks),
        Cmd::QemuX86_64(args) => boot(Arch::X86_64, &args),
        Cmd::QemuAarch64(args) => boot(Arch::Aarch64, &args),
        Cmd::Test { filters, no_qemu } => test(&filters, no_qemu),
        Cmd::Bench {
            what: BenchCmd::Dhcp { rounds, arch },
        } => xtask::bench::dhcp::run(rounds, arch),
        Cmd::Bench {
            what: BenchCmd::Discover { runs, arch },
        } => xtask::bench::discover::run(runs, arch),
        Cmd::Fuzz { target, seconds } => fuzz(target.as_deref(), seconds),
        Cmd::Kernel { profile, arch } => kernel(&profile, arch),
        Cmd::Bench {
            what: BenchCmd::Boot { runs, arch },
        } => xtask::bench::boot::run(runs, arch),
        Cmd::Bench {
            what: BenchCmd::Root { runs, arch },
        } => xtask::bench::root::run(runs, arch),
        Cmd::Bench {
            what: BenchCmd::Mkimage { runs },
        } => xtask::bench::mkimage::mkimage(runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn variant(test_hooks: bool) -> Variant {
    if test_hooks {
        Variant::TestHooks
    } else {
        Variant::Release
    }
}

fn build_init(arch: Arch, test_hooks: bool) -> Result<()> {
    setup::ensure_rust_targets()?;
    let init = artifacts::init(arch, variant(test_hooks))?;
    describe_init(&init)
}

fn kernel(profile: &str, arch: Option<Arch>) -> Result<()> {
    let spec = xtask::kbuild::spec(profile, arch)?;
    let k = xtask::kbuild::kernel(&spec)?;
    eprintln!(
        "kernel: {} ({}, {} bytes)\n  image  {}\n  config {}\n  tree   {}",
        k.release,
        k.arch,
        std::fs::metadata(&k.image)?.len(),
        k.image.display(),
        k.config.display(),
        k.tree.display()
    );
    Ok(())
}

fn describe_init(init: &std::path::Path) -> Result<()> {
    let size = std::fs::metadata(init)?.len();
    let kind = cmd::output(Command::new("file").arg("-b").arg(init)).unwrap_or_default();
    eprintln!("init: {} ({size} bytes): {}", init.display(), kind.trim());
    Ok(())
}

fn initramfs(arch: Arch, spec: &str, test_hooks: bool) -> Result<()> {
    setup::ensure_all()?;
    let bundle = artifacts::bundle(arch, spec, variant(test_hooks))?;
    eprintln!(
        "initramfs: {} ({} bytes) for kernel {}",
        bundle.initrd.display(),
        std::fs::metadata(&bundle.initrd)?.len(),
        bundle.kernel.release
    );
    Ok(())
}

/// Step banner.
fn step(text: &str) {
    eprintln!("==> {text}");
}

fn boot(arch: Arch, args: &BootArgs) -> Result<()> {
    let started = Instant::now();
    step("setup");
    setup::ensure_all()?;
    step(&format!("kernel for {arch}"));
    let kernel = artifacts::kernel(arch)?;
    eprintln!("kernel: {} ({})", kernel.release, kernel.image.display());
    step(&format!("init and initramfs for {arch}"));
    let bundle = artifacts::bundle(arch, &args.spec, Variant::Release)?;
    describe_init(&bundle.init)?;
    eprintln!(
        "initramfs: {} ({} bytes)",
        bundle.initrd.display(),
        std::fs::metadata(&bundle.initrd)?.len()
    );

    step("a provider with a freshly signed manifest");
    // The next stage is the same kernel and image in report mode; the marker
    // exists only in the signed command line, so a report carrying it can
    // only come from the kexec'd kernel.
    let marker = format!(
        "marker=demo-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let demo = paths::phase().join("demo").join(arch.name());
    if demo.exists() {
        std::fs::remove_dir_all(&demo)?;
    }
    std::fs::create_dir_all(&demo)?;
    let (tree, published) = provider::publish_tree(
        &demo,
        &provider::Publication {
            arch,
            version: 1,
            floor: None,
            expires_in: 3600,
            cmdline: format!(
                "{} phase.report phase.onfail=poweroff {marker}",
                arch.kernel_params()
            ),
            kernel: &bundle.kernel.image,
            initrd: Some(&bundle.initrd),
            served_as: None,
            root_image: None,
        },
    )?;
    eprintln!(
        "provider: {} signed by {}",
        published.manifest_path.display(),
        published.key_ids.join(", ")
    );
    let server = provider::phase_serve(&tree)?;
    let url = provider::guest_url("http", server.addr().port());
    eprintln!(
        "provider: phase serve on {} (guests use {url})",
        server.url()
    );

    step(&format!("netboot {arch} under QEMU (TCG)"));
    let append = format!(
        "phase.provider={url} phase.onfail=poweroff {}",
        args.cmdline
    );
    let mut spec = VmSpec::direct(
        format!("qemu-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        append.trim_end(),
    );
    spec.user_net = true;
    let mut vm = Vm::start(&spec)?;
    let timeout = Duration::from_secs(300);
    vm.wait_event("kexec", timeout)?;
    // The second kernel's banner is the first "Linux version" after the
    // line where init hands off; both are timed on the host as they arrive.
    let handoff_line = "phase: handoff: starting the next kernel";
    vm.wait_console(handoff_line, timeout)?;
    let (handoff_at, handoff_time) = vm
        .console_find(0, handoff_line)
        .context("hand-off line seen but not found")?;
    vm.wait_console_from(handoff_at + 1, "Linux version", timeout)?;
    let (_, banner_time) = vm
        .console_find(handoff_at + 1, "Linux version")
        .context("second banner seen but not found")?;
    let second_kernel = banner_time.saturating_sub(handoff_time);
    let report = vm.wait_event("report", timeout)?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    let cmdline = report["cmdline"].as_str().unwrap_or_default();
    if !cmdline.contains(&marker) {
        bail!(vm.failure("the second kernel's report lacks the signed marker"));
    }

    eprintln!();
    eprintln!("{arch}: stages of the first boot (t = time since kernel start)");
    let first_boot = vm
        .events()
        .iter()
        .take_while(|e| e["event"] != "kexec")
        .filter(|e| e["event"] == "stage" || e["event"] == "ready");
    for event in first_boot {
        let detail = match event["stage"].as_str().unwrap_or_default() {
            "network" => format!(
                "{} via DHCP",
                event["network"]["address"].as_str().unwrap_or("?")
            ),
            "fetch" => format!(
                "manifest v{} from {}",
                event["version"],
                event["mirror"].as_str().unwrap_or("?")
            ),
            "verify" => format!("{} bytes sha256 ok, sealed", event["bytes"]),
            _ => String::new(),
        };
        let took = match event["ms"].as_u64() {
            Some(ms) => format!("{ms:>6} ms"),
            None => String::new(),
        };
        let line = format!(
            "  {:<9} {took:>9}   t = {:>6} ms   {detail}",
            event["stage"].as_str().unwrap_or("ready"),
            event["t_ms"].as_u64().unwrap_or(0),
        );
        eprintln!("{}", line.trim_end());
    }
    if let Some(k) = vm.events().iter().find(|e| e["event"] == "kexec") {
        eprintln!(
            "  {:<9} {:>9}   t = {:>6} ms",
            "kexec",
            "",
            k["t_ms"].as_u64().unwrap_or(0)
        );
    }
    eprintln!(
        "  second kernel banner {:.1} s after init handed off (host clock)",
        second_kernel.as_secs_f64()
    );
    eprintln!("  second kernel reported: {cmdline}");
    eprintln!(
        "{arch}: DHCP → fetch → verify → kexec → second kernel with the signed marker; QEMU {:.1} s, whole command {:.1} s",
        vm.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(paths::root());
    c
}

fn test(filters: &[String], no_qemu: bool) -> Result<()> {
    let started = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut timed = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        step(name);
        let t = Instant::now();
        f().with_context(|| format!("step {name:?} failed"))?;
        timings.push((name.to_owned(), t.elapsed()));
        Ok(())
    };
    timed("setup", &mut || setup::ensure_all())?;
    timed("format check", &mut || {
        cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    timed("clippy", &mut || {
        cmd::run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // Real Debian module trees for mkimage's closure tests.
    let mut kernels = Vec::new();
    timed("test kernels", &mut || {
        for arch in Arch::ALL {
            kernels.push(artifacts::kernel(arch)?);
        }
        Ok(())
    })?;
    // The profiles' own kernels, built once (fresh: minutes each; cached:
    // instant); the kconfig tests read their configs and IKCONFIG images,
    // the profile scenarios boot them.
    let mut profile_kernels = Vec::new();
    timed("profile kernels (m-series, xsc)", &mut || {
        for name in ["m-series", "xsc"] {
            profile_kernels.push((name, artifacts::profile_kernel(name)?));
        }
        Ok(())
    })?;
    // A distribution ISO (Debian's installer) for mkimage's remaster tests.
    let mut distro_iso = None;
    timed("distribution ISO", &mut || {
        distro_iso = Some(xtask::distro::debian_mini_iso(
            xtask::distro::Tweaks::default(),
        )?);
        Ok(())
    })?;
    timed("unit, golden and reference-tool tests", &mut || {
        let mut c = cargo();
        // Setup installed every referee and server; a test that would skip
        // for lack of one fails instead.
        c.env("PHASE_REQUIRE_TOOLS", "1");
        c.args([
            "test",
            "--workspace",
            "--exclude",
            "phase-scenarios",
            "--quiet",
        ]);
        for k in &kernels {
            c.env(
                format!("PHASE_TEST_KERNEL_TREE_{}", k.arch.name().to_uppercase()),
                &k.tree,
            );
        }
        for (name, k) in &profile_kernels {
            c.env(
                format!(
                    "PHASE_TEST_PROFILE_KERNEL_{}",
                    name.replace('-', "_").to_uppercase()
                ),
                &k.tree,
            );
        }
        c.env("PHASE_TEST_KERNEL_SOURCE", xtask::kbuild::source_tree()?);
        if let Some(iso) = &distro_iso {
            c.env("PHASE_TEST_DISTRO_ISO_X86_64", iso);
        }
        cmd::run(&mut c)
    })?;
    if !no_qemu {
        timed("inits and images for both arches", &mut || {
            for arch in Arch::ALL {
                for v in [Variant::Release, Variant::TestHooks] {
                    artifacts::bundle(arch, "netboot", v)?;
                }
            }
            Ok(())
        })?;
        timed("QEMU scenarios", &mut || {
            let mut c = cargo();
            // Every scenario file runs even after one fails, so a CI log
            // names every failure at once.
            c.args(["test", "--package", "phase-scenarios", "--quiet"]);
            c.args(["--no-fail-fast", "--"]);
            c.args(["--test-threads", "2"]);
            c.args(filters);
            cmd::run(&mut c)
        })?;
    }
    eprintln!();
    eprintln!(
        "all tests passed in {:.0} s:",
        started.elapsed().as_secs_f64()
    );
    for (name, t) in &timings {
        eprintln!("  {:>6.1} s  {name}", t.as_secs_f64());
    }
    Ok(())
}

fn fuzz(target: Option<&str>, seconds: u64) -> Result<()> {
    let fuzz_dir: PathBuf = paths::root().join("fuzz");
    if cmd::output(Command::new("cargo").args(["+nightly", "fuzz", "--version"])).is_err() {
        eprintln!("fuzz: installing cargo-fuzz (nightly)");
        cmd::run(Command::new("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<String> = match target {
        Some(t) => vec![t.to_owned()],
        None => cmd::output(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "list"])
                .current_dir(&fuzz_dir),
        )?
        .lines()
        .map(str::to_owned)
        .collect(),
    };
    if targets.is_empty() {
        bail!("no fuzz targets in {}", fuzz_dir.display());
    }
    for t in targets {
        cmd::run(
            Command::new("cargo")
                .args([
                    "+nightly",
                    "fuzz",
                    "run",
                    &t,
                    "--",
                    &format!("-max_total_time={seconds}"),
                ])
                .current_dir(&fuzz_dir),
        )?;
    }
    Ok(())
}
