//! `phase kconfig check` on real kernels: Debian bookworm's configs (the
//! packages `cargo xtask test` unpacks, `PHASE_TEST_KERNEL_TREE_*`) and the
//! kernels `cargo xtask kernel` builds (`PHASE_TEST_PROFILE_KERNEL_*`),
//! against the profiles. Without those variables a test says it skips,
//! unless `PHASE_REQUIRE_TOOLS` is set.

mod common;

use std::path::{Path, PathBuf};

use common::phase;
use phase_kconfig::config::Arch;
use phase_kconfig::fragment::render;
use phase_kconfig::{Config, Found, Report, Severity, check, profile};
use phase_tools::kconfig::{read_source, tree_symbols};

/// The directory an environment variable names, or `None` after the
/// workspace's skip rule.
fn env_dir(var: &str, what: &str) -> Option<PathBuf> {
    phase_testkit::env_dir(var, what)
}

/// `boot/<prefix>-*` in an unpacked kernel package.
fn boot_file(root: &Path, prefix: &str) -> PathBuf {
    let boot = root.join("boot");
    std::fs::read_dir(&boot)
        .unwrap_or_else(|e| panic!("{}: {e}", boot.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}-")))
        })
        .unwrap_or_else(|| panic!("no {prefix}-* in {}", boot.display()))
}

fn debian_config(arch: &str) -> Option<(PathBuf, Config)> {
    let var = format!("PHASE_TEST_KERNEL_TREE_{}", arch.to_uppercase());
    let root = env_dir(&var, &format!("Debian {arch} config"))?;
    let path = boot_file(&root, "config");
    let (config, _) = read_source(&path).unwrap();
    Some((path, config))
}

fn run(profile: &str, source: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["kconfig", "check", "--json", "--profile", profile];
    args.extend_from_slice(extra);
    let out = phase(args.iter().map(|a| a.as_ref()).chain([source.as_os_str()]));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn options(report: &serde_json::Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["option"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn debian_arm64_lacks_kexec_file_and_16k_pages() {
    let Some((path, config)) = debian_config("aarch64") else {
        return;
    };
    // The init's own needs: only kexec_file_load is missing, and that
    // costs the signature check, not the hand-off (kexec_load remains).
    let (code, report) = run("phase-init", &path, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(options(&report, "fatal"), Vec::<String>::new());
    assert_eq!(options(&report, "degraded"), ["CONFIG_KEXEC_FILE"]);
    let file = &report["findings"][0];
    assert_eq!(file["found"], "not set");
    assert!(file["reason"].as_str().unwrap().contains("kexec_file_load"));

    // M-series: 4K pages and no Apple platform are fatal.
    let (code, report) = run("m-series", &path, &[]);
    assert_eq!(code, 2, "{report:#}");
    let fatal = options(&report, "fatal");
    for want in ["CONFIG_ARM64_16K_PAGES", "CONFIG_ARCH_APPLE"] {
        assert!(fatal.iter().any(|o| o == want), "{fatal:?}");
    }
    let r = check(
        &config,
        &profile::fragments("m-series", None).unwrap(),
        None,
    );
    let pages = r.finding("ARM64_16K_PAGES").unwrap();
    assert_eq!(
        (pages.severity, &pages.found),
        (Severity::Fatal, &Found::NotSet)
    );
    assert!(pages.reason.contains("16K"), "{}", pages.reason);
}

#[test]
fn debian_amd64_passes_the_init_and_qemu() {
    let Some((path, config)) = debian_config("x86_64") else {
        return;
    };
    for profile in ["phase-init", "qemu"] {
        let (code, report) = run(profile, &path, &[]);
        assert_eq!(code, 0, "{profile}: {report:#}");
        assert_eq!(report["arch"], "x86_64");
        let worst: Vec<&serde_json::Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] != "note")
            .collect();
        assert!(worst.is_empty(), "{profile}: {worst:?}");
    }
    // The human form says so too.
    let out = phase([
        "kconfig".as_ref(),
        "check".as_ref(),
        "--profile".as_ref(),
        "qemu".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok: 0 fatal, 0 degraded"), "{text}");
    assert_eq!(
        check(&config, &profile::fragments("qemu", None).unwrap(), None).exit_code(),
        0
    );
}

/// The XSC options a config for the xsc profile must carry.
const XSC: &str = "CONFIG_XSC=y\nCONFIG_XSC_ADAPTIVE_POLL=y\n# CONFIG_XSC_SOFT_DOORBELL is not set\n\
    CONFIG_XSC_TRACE=y\nCONFIG_XSC_SECCOMP=y\n";

#[test]
fn a_synthetic_xsc_config_passes_xsc() {
    let dir = tempfile::tempdir().unwrap();
    // Everything the profile asks for, as a build of it would have it.
    let fragments = profile::fragments("xsc", None).unwrap();
    let text = format!("CONFIG_X86_64=y\n{}", render(&fragments, Arch::X86_64));
    assert!(text.contains(XSC.lines().next().unwrap()));
    let path = dir.path().join("xsc.config");
    std::fs::write(&path, &text).unwrap();
    let (code, report) = run("xsc", &path, &[]);
    assert_eq!(code, 0, "{report:#}");
    // cfi-compat wants more than base has.
    let (code, report) = run("xsc", &path, &["--variant", "cfi-compat"]);
    assert_eq!(code, 2, "{report:#}");
    assert!(options(&report, "fatal").contains(&"CONFIG_X86_KERNEL_IBT".to_owned()));

    // Debian's amd64 config with the XSC options added passes too.
    let Some((debian, _)) = debian_config("x86_64") else {
        return;
    };
    let mut text = std::fs::read_to_string(debian).unwrap();
    text.push_str(XSC);
    std::fs::write(&path, &text).unwrap();
    let (code, report) = run("xsc", &path, &[]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn debian_amd64_fails_xsc_naming_the_xsc_options() {
    let Some((path, config)) = debian_config("x86_64") else {
        return;
    };
    let (code, report) = run("xsc", &path, &[]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        options(&report, "fatal"),
        ["CONFIG_XSC", "CONFIG_XSC_SECCOMP"]
    );
    assert_eq!(
        options(&report, "degraded"),
        ["CONFIG_XSC_ADAPTIVE_POLL", "CONFIG_XSC_TRACE"]
    );
    for f in report["findings"].as_array().unwrap() {
        if f["option"].as_str().unwrap().starts_with("CONFIG_XSC") {
            // Never "not set": Debian's tree does not have them at all.
            assert!(f["found"].as_str().unwrap().starts_with("absent"), "{f}");
        }
    }
    // Given the tree's Kconfig files, they are unknown to it.
    let Some(tree) = env_dir("PHASE_TEST_KERNEL_SOURCE", "xsc against the source tree") else {
        return;
    };
    let symbols = tree_symbols(&tree).unwrap();
    let r = check(
        &config,
        &profile::fragments("xsc", None).unwrap(),
        Some(&symbols),
    );
    for o in ["XSC", "XSC_ADAPTIVE_POLL", "XSC_TRACE", "XSC_SECCOMP"] {
        assert_eq!(r.finding(o).unwrap().found, Found::Unknown, "{o}");
    }
    let (code, report) = run("xsc", &path, &["--tree", tree.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        report["findings"][0]["found"],
        "unknown to this kernel tree"
    );
}

/// A kernel `cargo xtask kernel` built: its config and image.
fn built(profile: &str) -> Option<(PathBuf, PathBuf)> {
    let var = format!(
        "PHASE_TEST_PROFILE_KERNEL_{}",
        profile.replace('-', "_").to_uppercase()
    );
    let root = env_dir(&var, &format!("the {profile} kernel"))?;
    Some((boot_file(&root, "config"), boot_file(&root, "vmlinuz")))
}

fn report(profile: &str, path: &Path) -> Report {
    let (config, _) = read_source(path).unwrap();
    check(&config, &profile::fragments(profile, None).unwrap(), None)
}

#[test]
fn the_built_m_series_kernel_passes_m_series() {
    let Some((config, _)) = built("m-series") else {
        return;
    };
    let (code, json) = run("m-series", &config, &[]);
    assert_eq!(code, 0, "{json:#}");
    let r = report("m-series", &config);
    assert_eq!(r.arch, Some(Arch::Arm64));
    assert!(r.worst().is_none(), "{:?}", r.findings);
}

#[test]
fn the_built_xsc_kernel_has_kexec_load_only_and_no_xsc() {
    let Some((config, _)) = built("xsc") else {
        return;
    };
    let r = report("xsc", &config);
    assert_eq!(r.arch, Some(Arch::X86_64));
    // A mainline tree: the XSC options are absent, not off.
    for o in ["XSC", "XSC_SECCOMP"] {
        let f = r.finding(o).unwrap();
        assert_eq!(f.severity, Severity::Fatal);
        assert!(f.found.is_absent(), "{o}: {}", f.found);
    }
    // Built for a kexec_load test: kexec_load and no kexec_file_load.
    let (parsed, _) = read_source(&config).unwrap();
    assert_eq!(
        parsed.get("KEXEC"),
        Some(&phase_kconfig::Setting::Set(phase_kconfig::Value::Yes))
    );
    let file = r.finding("KEXEC_FILE").unwrap();
    assert_eq!(file.severity, Severity::Degraded);
    assert!(!matches!(
        parsed.get("KEXEC_FILE"),
        Some(phase_kconfig::Setting::Set(_))
    ));
}

#[test]
fn an_ikconfig_image_reads_as_its_config() {
    for profile in ["m-series", "xsc"] {
        let Some((config, image)) = built(profile) else {
            continue;
        };
        let (from_text, _) = read_source(&config).unwrap();
        let (from_image, origin) = read_source(&image).unwrap();
        assert_eq!(from_image, from_text, "{profile}: {origin}");
        eprintln!("{profile}: {} read from the {origin}", image.display());
        // And the CLI reaches the same verdict from either.
        let (a, ra) = run(profile, &config, &[]);
        let (b, rb) = run(profile, &image, &[]);
        assert_eq!((a, &ra["findings"]), (b, &rb["findings"]), "{profile}");
    }
}

#[test]
fn unreadable_sources_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, [0u8, 1, 2, 3]).unwrap();
    for (args, want) in [
        (
            vec!["--profile", "qemu", junk.to_str().unwrap()],
            "neither a kernel config",
        ),
        (
            vec!["--profile", "pc", junk.to_str().unwrap()],
            "unknown profile",
        ),
        (
            vec!["--profile", "qemu", "/nonexistent/config"],
            "read /nonexistent/config",
        ),
    ] {
        let out = phase(["kconfig", "check"].into_iter().chain(args));
        assert_eq!(out.status.code(), Some(3));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}
