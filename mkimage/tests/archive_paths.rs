//! Archive paths that would let the kernel's unpacker write outside what
//! the spec says — an entry under a symlink, device node or file that
//! replaced its directory — and paths the kernel refuses or misreads
//! (too long, `.`/`..`/empty components, NUL) are refused, naming the spec
//! file and the entry.

mod fixtures;

use std::path::Path;

use fixtures::*;

fn build(dir: &Path, top: &str) -> std::process::Output {
    let init = dir.join("init");
    std::fs::write(&init, elf_exec(EM_X86_64, 4096)).unwrap();
    std::fs::write(dir.join("data"), b"data").unwrap();
    let spec = dir.join("top.toml");
    std::fs::write(&spec, top).unwrap();
    mkimage(&[
        "cpio",
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        &format!("init={}", init.display()),
        "--out",
        dir.join("out.cpio").to_str().unwrap(),
    ])
}

const INIT: &str = "[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n";

#[test]
fn entries_under_a_non_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("base.toml"),
        format!("{INIT}[[file]]\npath = \"/etc/motd\"\ntext = \"hi\"\n"),
    )
    .unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[file]]\npath = \"/x/y\"\ntext = \"y\"\n[[symlink]]\npath = \"/x\"\ntarget = \"/etc\"\n",
            "top.toml",
            "[[symlink]] /x",
        ),
        (
            "[[file]]\npath = \"/x/y\"\ntext = \"y\"\n[[node]]\npath = \"/x\"\nkind = \"char\"\nmajor = 1\nminor = 3\n",
            "top.toml",
            "[[node]] /x",
        ),
        (
            "[[file]]\npath = \"/x/y\"\ntext = \"y\"\n[[file]]\npath = \"/x\"\ntext = \"file\"\n",
            "top.toml",
            "[[file]] /x",
        ),
        (
            "[[dir]]\npath = \"/x/y\"\n[[symlink]]\npath = \"/x\"\ntarget = \"/\"\n",
            "top.toml",
            "[[symlink]] /x",
        ),
        // Over a directory an included spec filled.
        (
            "include = [\"base.toml\"]\n[[symlink]]\npath = \"/etc\"\ntarget = \"/tmp\"\n",
            "top.toml",
            "/etc/motd",
        ),
        // Under a symlink listed first.
        (
            "[[symlink]]\npath = \"/x\"\ntarget = \"/etc\"\n[[file]]\npath = \"/x/y\"\ntext = \"y\"\n",
            "top.toml",
            "/x/y",
        ),
    ];
    for (spec, file, entry) in cases {
        let text = if spec.contains("include") {
            spec.to_string()
        } else {
            format!("{INIT}{spec}")
        };
        let out = build(d, &text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(err.contains(file) && err.contains(entry), "{text}\n{err}");
    }
    // Replacing an empty directory, or a file by a file, is an override.
    let out = build(
        d,
        &format!(
            "{INIT}[[dir]]\npath = \"/bin\"\n[[symlink]]\npath = \"/bin\"\ntarget = \"usr/bin\"\n[[file]]\npath = \"/init\"\ntext = \"#!/bin/sh\\n\"\nmode = 0o755\n"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn paths_the_kernel_refuses_or_misreads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long_name = "n".repeat(256);
    let long_path = format!("/{}", vec!["d".repeat(200); 21].join("/"));
    let bad: Vec<(String, &str)> = vec![
        ("/a//b".into(), "empty"),
        ("/a/b/".into(), "empty"),
        ("/a/./b".into(), "."),
        ("/a/../b".into(), ".."),
        ("/".into(), "empty"),
        ("".into(), "empty"),
        ("/a\\u0000b".into(), "NUL"),
        (format!("/{long_name}"), "255"),
        (long_path, "4095"),
    ];
    for (path, want) in &bad {
        for kind in ["file", "dir", "symlink", "node"] {
            let entry = match kind {
                "file" => format!("[[file]]\npath = \"{path}\"\ntext = \"x\"\n"),
                "dir" => format!("[[dir]]\npath = \"{path}\"\n"),
                "symlink" => format!("[[symlink]]\npath = \"{path}\"\ntarget = \"x\"\n"),
                _ => {
                    format!("[[node]]\npath = \"{path}\"\nkind = \"char\"\nmajor = 1\nminor = 3\n")
                }
            };
            let out = build(d, &format!("{INIT}{entry}"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "accepted {kind} {path:?}");
            assert!(
                err.contains("top.toml")
                    && err.contains(&format!("[[{kind}]]"))
                    && err.contains(want),
                "{kind} {path:?}: {err}"
            );
        }
    }
    for (target, want) in [("", "empty"), ("a\\u0000b", "NUL")] {
        let out = build(
            d,
            &format!("{INIT}[[symlink]]\npath = \"/l\"\ntarget = \"{target}\"\n"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted target {target:?}");
        assert!(err.contains("top.toml") && err.contains(want), "{err}");
    }
}
