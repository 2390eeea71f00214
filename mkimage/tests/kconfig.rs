//! `mkimage --profile` checks the kernels it packs before it builds: a
//! fatal mismatch is refused unless `--force`, degraded findings are
//! printed, and a kernel whose config cannot be had is packed with a note.
//! With Debian's amd64 kernel (`PHASE_TEST_KERNEL_TREE_X86_64`) as well as
//! a stand-in; the UEFI stub is Debian's.

mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn have_stub() -> bool {
    phase_testkit::file(STUB, "the kernel check", "Debian package systemd-boot-efi").is_some()
}

fn mkimage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mkimage"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A stand-in x86 kernel and an initramfs, from the CLI tests' fixtures
/// (they pass mkimage's input checks), copied into `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let f = fixtures::Inputs::new();
    let kernel = dir.join("vmlinuz");
    std::fs::copy(&f.kernel, &kernel).unwrap();
    let initrd = dir.join("initrd");
    std::fs::copy(&f.initrd, &initrd).unwrap();
    (kernel, initrd)
}

fn esp(kernel: &str, initrd: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "esp",
        "--direct",
        "--stub",
        STUB,
        "--initrd",
        initrd.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for k in kernel.split(' ') {
        args.extend(["--kernel", k]);
    }
    args.extend_from_slice(extra);
    mkimage(&args)
}

#[test]
fn a_stand_in_kernel_is_checked_by_its_given_config() {
    if !have_stub() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = inputs(dir.path());
    let k = kernel.to_str().unwrap();
    let out = dir.path().join("esp.img");

    // No IKCONFIG and no config: built, with a note that says so.
    let o = esp(k, &initrd, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("could not check the \"linux\" kernel against profile qemu"),
        "{e}"
    );

    // A config that lacks what the init needs is refused, and nothing is written.
    let config = dir.path().join("config");
    std::fs::write(&config, "CONFIG_X86_64=y\nCONFIG_DEVTMPFS=y\n").unwrap();
    std::fs::remove_file(&out).unwrap();
    let c = config.to_str().unwrap();
    let o = esp(k, &initrd, &out, &["--kernel-config", c]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("the \"linux\" kernel does not meet profile qemu"),
        "{e}"
    );
    assert!(
        e.contains("CONFIG_BLK_DEV_INITRD (wanted y, found absent"),
        "{e}"
    );
    assert!(e.contains("pass --force"), "{e}");
    assert!(!out.exists(), "an image was written for a refused kernel");

    // Forced: built, the fatal findings printed as forced.
    let o = esp(k, &initrd, &out, &["--kernel-config", c, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("CONFIG_BLK_DEV_INITRD: wanted y"));
    assert!(stderr(&o).contains("(forced)"));
    assert!(out.exists());

    // A config for a variant the image does not have is an error.
    let o = esp(k, &initrd, &out, &["--kernel-config", &format!("base={c}")]);
    assert!(
        stderr(&o).contains("there is no kernel variant \"base\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn debian_amd64_packs_for_qemu_but_not_for_xsc() {
    if !have_stub() {
        return;
    }
    let Some(root) = std::env::var_os("PHASE_TEST_KERNEL_TREE_X86_64") else {
        phase_testkit::skip(
            module_path!(),
            format_args!("PHASE_TEST_KERNEL_TREE_X86_64 is not set (cargo xtask test sets it)"),
        );
        return;
    };
    let boot = PathBuf::from(root).join("boot");
    let find = |prefix: &str| {
        std::fs::read_dir(&boot)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap()
    };
    let (kernel, config) = (find("vmlinuz-"), find("config-"));
    let dir = tempfile::tempdir().unwrap();
    let (_, initrd) = inputs(dir.path());
    let out = dir.path().join("esp.img");
    let (k, c) = (kernel.to_str().unwrap(), config.to_str().unwrap());

    let o = esp(k, &initrd, &out, &["--kernel-config", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("kernel \"linux\" against profile qemu: ok"),
        "{}",
        stderr(&o)
    );

    let variants = format!("base={k} cfi-compat={k}");
    let o = esp(
        &variants,
        &initrd,
        &out,
        &[
            "--profile",
            "xsc",
            "--kernel-config",
            &format!("base={c}"),
            "--kernel-config",
            &format!("cfi-compat={c}"),
        ],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("the \"base\" kernel does not meet profile xsc"),
        "{e}"
    );
    assert!(e.contains("CONFIG_XSC (wanted y, found absent"), "{e}");
}
