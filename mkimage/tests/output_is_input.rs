//! An output that is one of the inputs — the same path, a hard link or a
//! symlink to it — is refused before anything is written, naming both, for
//! every format and every kind of input.

mod fixtures;

use std::path::{Path, PathBuf};

use fixtures::*;

/// Runs `args` with `--out out`; it must fail naming `out` and `input`, and
/// leave `input` as it was.
fn refused(args: &[&str], out: &Path, input: &Path) {
    let before = std::fs::read(input).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--out", out.to_str().unwrap()]);
    let err = mkimage_err(&all);
    assert!(
        err.contains(&out.display().to_string()) && err.contains(&input.display().to_string()),
        "{all:?}: the error names neither {} nor {}:\n{err}",
        out.display(),
        input.display()
    );
    assert!(err.contains("the same file"), "{all:?}:\n{err}");
    assert_eq!(
        std::fs::read(input).unwrap(),
        before,
        "{all:?} changed {}",
        input.display()
    );
}

fn hard_link(from: &Path, name: &str) -> PathBuf {
    let to = from.with_file_name(name);
    std::fs::hard_link(from, &to).unwrap();
    to
}

fn symlink(from: &Path, name: &str) -> PathBuf {
    let to = from.with_file_name(name);
    std::os::unix::fs::symlink(from, &to).unwrap();
    to
}

#[test]
fn boot_images_refuse_to_overwrite_their_inputs() {
    if !have(STUB_X64, "output-is-input for UEFI formats") {
        return;
    }
    let inp = Inputs::new();
    let (k, i) = (inp.k(), inp.i());
    let dtb_dir = inp.path("dtbs");
    std::fs::create_dir(&dtb_dir).unwrap();
    let dtb = dtb_dir.join("board.dtb");
    let fdt = fake_dtb();
    std::fs::write(&dtb, &fdt).unwrap();
    let stub_copy = inp.path("stub.efi");
    std::fs::copy(STUB_X64, &stub_copy).unwrap();
    let stub = stub_copy.to_str().unwrap();

    let uki = ["uki", "--kernel", k, "--initrd", i];
    refused(&uki, &inp.kernel, &inp.kernel);
    refused(&uki, &inp.initrd, &inp.initrd);
    refused(
        &["uki", "--kernel", k, "--initrd", i, "--stub", stub],
        &stub_copy,
        &stub_copy,
    );
    refused(&uki, &hard_link(&inp.kernel, "kernel-link"), &inp.kernel);
    refused(&uki, &symlink(&inp.initrd, "initrd-symlink"), &inp.initrd);
    let esp = ["esp", "--direct", "--kernel", k, "--initrd", i];
    refused(&esp, &inp.kernel, &inp.kernel);
    refused(&esp, &symlink(&inp.kernel, "esp-symlink"), &inp.kernel);
    let dtb_arg = dtb_dir.to_str().unwrap();
    refused(
        &[
            "esp",
            "--direct",
            "--kernel",
            k,
            "--initrd",
            i,
            "--dtb-dir",
            dtb_arg,
        ],
        &dtb,
        &dtb,
    );
    refused(
        &[
            "esp",
            "--direct",
            "--kernel",
            k,
            "--initrd",
            i,
            "--dtb",
            dtb.to_str().unwrap(),
        ],
        &dtb,
        &dtb,
    );
    if have(
        SYSTEMD_BOOT_X64,
        "output-is-input for the systemd-boot menu",
    ) {
        let sd = inp.path("systemd-boot.efi");
        std::fs::copy(SYSTEMD_BOOT_X64, &sd).unwrap();
        refused(
            &[
                "esp",
                "--kernel",
                k,
                "--initrd",
                i,
                "--systemd-boot",
                sd.to_str().unwrap(),
            ],
            &sd,
            &sd,
        );
    }
    if have(
        "/usr/bin/syslinux",
        "output-is-input for usb, iso and qcow2",
    ) && have("/usr/lib/ISOLINUX/isolinux.bin", "output-is-input for iso")
    {
        let usb = ["usb", "--kernel", k, "--initrd", i];
        refused(&usb, &inp.initrd, &inp.initrd);
        let iso = ["iso", "--kernel", k, "--initrd", i];
        refused(&iso, &hard_link(&inp.initrd, "iso-link"), &inp.initrd);
        let isolinux = inp.path("isolinux.bin");
        std::fs::copy("/usr/lib/ISOLINUX/isolinux.bin", &isolinux).unwrap();
        refused(
            &[
                "iso",
                "--kernel",
                k,
                "--initrd",
                i,
                "--isolinux",
                isolinux.to_str().unwrap(),
            ],
            &isolinux,
            &isolinux,
        );
        let raw = inp.path("raw.img");
        mkimage_ok(&[
            "usb",
            "--kernel",
            k,
            "--initrd",
            i,
            "--out",
            raw.to_str().unwrap(),
        ]);
        refused(&["qcow2", "--from-raw", raw.to_str().unwrap()], &raw, &raw);
        refused(
            &["qcow2", "--from-raw", raw.to_str().unwrap()],
            &symlink(&raw, "raw-symlink"),
            &raw,
        );
        refused(
            &["qcow2", "--kernel", k, "--initrd", i],
            &inp.kernel,
            &inp.kernel,
        );
    }
}

#[test]
fn cpio_refuses_to_overwrite_its_spec_its_sources_and_the_kernel_tree() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, elf_exec(EM_X86_64, 4096)).unwrap();
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "hello\n").unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n",
    )
    .unwrap();
    let spec = dir.path().join("top.toml");
    std::fs::write(
        &spec,
        "include = [\"base.toml\"]\n[[file]]\npath = \"/etc/motd\"\nsource = \"motd\"\n",
    )
    .unwrap();
    // A kernel tree with one module the spec does not name.
    let release = dir.path().join("tree/lib/modules/6.1.0-test");
    std::fs::create_dir_all(release.join("kernel")).unwrap();
    let builtin = release.join("modules.builtin");
    std::fs::write(&builtin, "kernel/drivers/x.ko\n").unwrap();
    let module = release.join("kernel/other.ko");
    std::fs::write(&module, elf_exec(EM_X86_64, 256)).unwrap();
    let input = format!("--input=init={}", init.display());
    let tree = format!("--kernel-tree={}", dir.path().join("tree").display());
    let args = ["cpio", "--spec", spec.to_str().unwrap(), &input, &tree];
    refused(&args, &spec, &spec);
    refused(
        &args,
        &dir.path().join("base.toml"),
        &dir.path().join("base.toml"),
    );
    refused(&args, &init, &init);
    refused(&args, &motd, &motd);
    refused(&args, &symlink(&motd, "motd-link"), &motd);
    refused(&args, &builtin, &builtin);
    refused(&args, &module, &module);
}
