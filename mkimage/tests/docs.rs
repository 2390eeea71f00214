//! The README and `--help` say what the code does: the synopsis uses only
//! options each command has, what is called common is common, every
//! command's help has examples, every spec key is documented and the
//! documented example parses; a missing systemd-stub names its package.

mod fixtures;

use std::collections::BTreeSet;
use std::process::Command;

use fixtures::*;

const README: &str = include_str!("../README.md");
const SPEC_RS: &str = include_str!("../src/spec.rs");
const COMMANDS: [&str; 6] = ["cpio", "uki", "esp", "usb", "iso", "qcow2"];

fn help(command: &str) -> String {
    let out = mkimage_ok(&[command, "--help"]);
    String::from_utf8(out.stdout).unwrap()
}

/// `--flag` tokens in a text.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if !name.is_empty() {
            out.insert(format!("--{name}"));
        }
    }
    out
}

fn section<'a>(from: &str, to: &str) -> &'a str {
    let a = README
        .find(from)
        .unwrap_or_else(|| panic!("README has no {from:?}"));
    let b = a + README[a..]
        .find(to)
        .unwrap_or_else(|| panic!("README has no {to:?} after {from:?}"));
    &README[a..b]
}

#[test]
fn the_synopsis_and_option_lists_match_each_commands_help() {
    let helps: Vec<(&str, String)> = COMMANDS.iter().map(|c| (*c, help(c))).collect();
    let help_of = |c: &str| &helps.iter().find(|(n, _)| *n == c).unwrap().1;
    let synopsis = section("```\nmkimage cpio", "\n```\n");
    for line in synopsis.lines().filter(|l| l.starts_with("mkimage ")) {
        let command = line.split_whitespace().nth(1).unwrap();
        for f in flags(line) {
            assert!(
                help_of(command).contains(&f),
                "README: `{line}` uses {f}, which `mkimage {command} --help` lacks"
            );
        }
    }
    // The cpio and uki lists, and the options the boot images share.
    for (command, list) in [
        ("cpio", section("- **cpio**", "- **uki**")),
        ("uki", section("- **uki**", "The options below")),
    ] {
        for f in flags(list) {
            assert!(
                help_of(command).contains(&f),
                "README's {command} list names {f}"
            );
        }
    }
    let shared = section("(the boot images) share:", "`esp`, `usb` and `qcow2` take");
    for f in flags(shared) {
        for c in ["esp", "usb", "iso", "qcow2"] {
            assert!(
                help_of(c).contains(&f),
                "README calls {f} shared, `mkimage {c}` lacks it"
            );
        }
    }
    // ... and says they are not for uki, which must be true.
    for f in flags(shared) {
        if !["--kernel", "--initrd", "--cmdline", "--stub", "--dtb"].contains(&f.as_str()) {
            assert!(
                !help_of("uki").contains(&format!("{f} ")),
                "uki has {f} after all"
            );
        }
    }
    for (f, commands) in [
        ("--size", &["esp", "usb", "qcow2"][..]),
        ("--hybrid-mbr", &["usb", "qcow2"][..]),
        ("--isolinux", &["iso"][..]),
    ] {
        for c in commands {
            assert!(help_of(c).contains(f), "README: `{c}` takes {f}");
        }
    }
}

#[test]
fn every_command_has_examples_in_its_help() {
    for c in COMMANDS {
        let h = help(c);
        assert!(
            h.contains(&format!("Examples:\n  mkimage {c} ")),
            "`mkimage {c} --help` has no example:\n{h}"
        );
        for line in h
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("mkimage {c} ")))
        {
            for f in flags(line) {
                assert!(
                    h.contains(&format!("  {f} ")) || h.contains(&format!(", {f} ")),
                    "the example `{line}` uses {f}, which {c} lacks"
                );
            }
        }
    }
}

/// Field names of the spec's serde structs, as the TOML spells them.
fn spec_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for s in [
        "SpecFile",
        "Modules",
        "TrustSpec",
        "TlsSpec",
        "StateSpec",
        "FileSpec",
        "DirSpec",
        "SymlinkSpec",
        "NodeSpec",
    ] {
        let start = SPEC_RS
            .find(&format!("struct {s} {{"))
            .unwrap_or_else(|| panic!("no struct {s}"));
        let body = &SPEC_RS[start..start + SPEC_RS[start..].find("\n}").unwrap()];
        let mut skip = false;
        let mut rename = None;
        for line in body.lines().skip(1).map(str::trim) {
            if line.starts_with("#[serde(") {
                skip |= line.contains("skip");
                if let Some(r) = line.split("rename = \"").nth(1) {
                    rename = r.split('"').next().map(str::to_owned);
                }
                continue;
            }
            let Some(name) = line
                .strip_prefix("pub ")
                .or(Some(line))
                .and_then(|l| l.split(':').next())
            else {
                continue;
            };
            if line.starts_with("//") || !line.contains(':') {
                continue;
            }
            if !skip {
                keys.insert(rename.take().unwrap_or_else(|| name.trim().to_owned()));
            }
            skip = false;
            rename = None;
        }
    }
    keys
}

#[test]
fn every_spec_key_is_documented_and_the_example_parses() {
    let table = section("## Initramfs specs", "```toml");
    let keys = spec_keys();
    assert!(
        keys.contains("version_floor") && keys.contains("file") && !keys.contains("spec"),
        "{keys:?}"
    );
    for k in &keys {
        assert!(
            table.contains(&format!("`{k}`"))
                || table.contains(&format!("[[{k}]]"))
                || table.contains(&format!("[{k}]")),
            "the spec key {k} is not documented"
        );
    }
    let example = section("```toml\n", "\n```\n").trim_start_matches("```toml\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.toml"), "").unwrap();
    std::fs::write(dir.path().join("example.toml"), example).unwrap();
    let spec = mkimage::spec::Spec::load(&dir.path().join("example.toml")).unwrap();
    assert_eq!(spec.name, "example");
    assert_eq!(spec.nodes.len(), 1);
}

#[test]
fn a_missing_stub_names_its_package_and_a_found_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = d.join("Image");
    std::fs::write(&kernel, fake_arm64_kernel()).unwrap();
    let init = d.join("init");
    std::fs::write(&init, elf_exec(EM_AARCH64, 4096)).unwrap();
    let spec = d.join("s.toml");
    std::fs::write(
        &spec,
        "[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n",
    )
    .unwrap();
    let initrd = d.join("initrd.cpio");
    mkimage_ok(&[
        "cpio",
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        &format!("init={}", init.display()),
        "--out",
        initrd.to_str().unwrap(),
    ]);
    // Nothing under an empty target directory: only the system's package.
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("CARGO_TARGET_DIR", d.join("target"))
            .args(["--json", format, "--kernel"])
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .arg("--out")
            .arg(d.join("out"))
            .output()
            .unwrap()
    };
    let stub = "/usr/lib/systemd/boot/efi/linuxaa64.efi.stub";
    for format in ["uki", "esp"] {
        let out = run(format);
        let text = String::from_utf8_lossy(&out.stderr);
        if std::path::Path::new(stub).exists() {
            // The stand-in kernel gets as far as the UKI.
            assert!(!text.contains("no systemd-stub"), "{text}");
        } else {
            assert!(!out.status.success());
            for want in [
                "no systemd-stub for aarch64",
                "linuxaa64.efi.stub",
                "/usr/lib/systemd/boot/efi",
                "systemd-boot-efi:arm64",
                "--stub PATH",
            ] {
                assert!(
                    text.contains(want),
                    "{format}: the error does not say {want:?}:\n{text}"
                );
            }
        }
    }
    if have(STUB_X64, "the stub named in the summary") {
        let inp = Inputs::new();
        let out = mkimage_ok(&[
            "--json",
            "uki",
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--out",
            inp.path("x.efi").to_str().unwrap(),
        ]);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["stub"], STUB_X64);
    }
}
