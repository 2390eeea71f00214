//! --dtb-dir walks a directory tree once: a symlink loop, a directory
//! reached twice, a tree too deep or a device tree that is not a regular
//! file is refused with its path, promptly.

mod fixtures;
mod referee;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use fixtures::*;

/// mkimage esp with --dtb-dir, given at most 60 s (coreutils' timeout):
/// the old walk never finished on two loops.
fn esp(inp: &Inputs, dtbs: &Path) -> std::process::Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_mkimage"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "esp",
            "--direct",
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--dtb-dir",
        ])
        .arg(dtbs)
        .arg("--out")
        .arg(inp.path("esp.img"))
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "mkimage did not finish within 60 s"
    );
    out
}

fn refused(out: std::process::Output, wants: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted; wanted {wants:?}");
    for w in wants {
        assert!(err.contains(w), "the error does not say {w:?}:\n{err}");
    }
}

#[test]
fn loops_repeats_depth_and_special_files_are_refused() {
    let inp = Inputs::new();
    let root = inp.path("dtbs");
    let new_tree = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("apple")).unwrap();
        std::fs::write(d.join("apple/t8103-j274.dtb"), fake_dtb()).unwrap();
        d
    };
    // One loop to itself, two, and one through the parent.
    let one = new_tree("one");
    symlink(".", one.join("a")).unwrap();
    refused(
        esp(&inp, &one),
        &[&one.join("a").display().to_string(), "loops back"],
    );
    let two = new_tree("two");
    symlink(".", two.join("a")).unwrap();
    symlink(".", two.join("b")).unwrap();
    refused(esp(&inp, &two), &["loops back"]);
    let up = new_tree("up");
    symlink("..", up.join("apple/up")).unwrap();
    refused(
        esp(&inp, &up),
        &[&up.join("apple/up").display().to_string(), "loops back"],
    );
    // A directory reached twice.
    let twice = new_tree("twice");
    symlink("apple", twice.join("alias")).unwrap();
    refused(esp(&inp, &twice), &["twice", "apple"]);
    // Too deep.
    let deep = new_tree("deep");
    let mut d = deep.clone();
    for i in 0..20 {
        d = d.join(format!("l{i}"));
    }
    std::fs::create_dir_all(&d).unwrap();
    refused(esp(&inp, &deep), &["deeper than"]);
    // A FIFO named like a device tree: reading it would block for ever.
    let fifo = new_tree("fifo");
    let f = fifo.join("x.dtb");
    assert!(Command::new("mkfifo").arg(&f).status().unwrap().success());
    refused(
        esp(&inp, &fifo),
        &[&f.display().to_string(), "not a regular file"],
    );
}

#[test]
fn symlinks_that_do_not_loop_are_followed() {
    if !have(STUB_X64, "--dtb-dir symlinks") {
        return;
    }
    let inp = Inputs::new();
    let dtbs = inp.path("dtbs");
    let elsewhere = inp.path("elsewhere");
    std::fs::create_dir_all(dtbs.join("apple")).unwrap();
    std::fs::create_dir_all(elsewhere.join("vendor")).unwrap();
    std::fs::write(dtbs.join("apple/a.dtb"), fake_dtb()).unwrap();
    std::fs::write(elsewhere.join("b.dtb"), fake_dtb()).unwrap();
    std::fs::write(elsewhere.join("vendor/c.dtb"), fake_dtb()).unwrap();
    symlink(elsewhere.join("b.dtb"), dtbs.join("b.dtb")).unwrap();
    symlink(elsewhere.join("vendor"), dtbs.join("vendor")).unwrap();
    let out = esp(&inp, &dtbs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = inp.path("esp.img");
    for f in ["dtb/apple/a.dtb", "dtb/b.dtb", "dtb/vendor/c.dtb"] {
        if let Some(data) = referee::mtools_read(&img, 0, f) {
            assert_eq!(data, fake_dtb(), "{f}");
        }
    }
}
