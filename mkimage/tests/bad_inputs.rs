//! Inputs that would make an image a machine refuses are refused, naming
//! the file and what was expected: programs for another machine, a kernel
//! as /init, a truncated kernel, an initramfs that is not one (or is the
//! kernel), an initramfs for another machine, a broken device tree.

mod fixtures;

use std::path::{Path, PathBuf};

use fixtures::*;

/// A kernel tree with one x86_64 (or `machine`) module.
fn tree(dir: &Path, machine: u16) -> PathBuf {
    let release = dir.join("lib/modules/6.1.0-test");
    std::fs::create_dir_all(release.join("kernel/fs")).unwrap();
    let mut ko = elf_exec(machine, 512);
    ko[16] = 1; // ET_REL
    std::fs::write(release.join("kernel/fs/x.ko"), ko).unwrap();
    dir.to_owned()
}

fn spec(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("spec.toml");
    std::fs::write(
        &p,
        format!("[[file]]\npath = \"/init\"\nsource = \"@init\"\nmode = 0o755\n{extra}"),
    )
    .unwrap();
    p
}

fn cpio(spec: &Path, init: &Path, extra: &[&str], out: &Path) -> std::process::Output {
    let mut args = vec![
        "cpio".to_owned(),
        "--spec".into(),
        spec.display().to_string(),
        "--input".into(),
        format!("init={}", init.display()),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mkimage(&args)
}

fn refused(out: std::process::Output, wants: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted; wanted an error with {wants:?}"
    );
    for w in wants {
        assert!(err.contains(w), "the error does not say {w:?}:\n{err}");
    }
}

#[test]
fn cpio_refuses_programs_for_another_machine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x86_tree = tree(&d.join("tree"), EM_X86_64);
    let t = format!("--kernel-tree={}", x86_tree.display());
    let out = d.join("out.cpio");
    let init = d.join("init");
    let tool = d.join("tool");
    let s = spec(
        d,
        "[[file]]\npath = \"/bin/tool\"\nsource = \"tool\"\nmode = 0o755\n",
    );

    // An aarch64 init next to x86_64 modules.
    std::fs::write(&init, elf_exec(EM_AARCH64, 4096)).unwrap();
    std::fs::write(&tool, elf_exec(EM_X86_64, 4096)).unwrap();
    refused(
        cpio(&s, &init, &[&t], &out),
        &[
            "/init (from",
            "an aarch64 ELF program",
            "for x86_64, as the kernel modules in",
        ],
    );
    // The same with --arch and no tree.
    refused(
        cpio(&s, &init, &["--arch", "x86_64"], &out),
        &["/init", "an aarch64 ELF program", "x86_64 (--arch)"],
    );
    // Without a tree or --arch, every program agrees with /init.
    std::fs::write(&init, elf_exec(EM_X86_64, 4096)).unwrap();
    std::fs::write(&tool, elf_exec(EM_AARCH64, 4096)).unwrap();
    refused(
        cpio(&s, &init, &[], &out),
        &["/bin/tool", "aarch64", "as /init is"],
    );
    // A 32-bit x86 program is another machine too.
    let mut i386 = elf_exec(3, 4096);
    i386[4] = 1;
    std::fs::write(&tool, &i386).unwrap();
    refused(
        cpio(&s, &init, &[&t], &out),
        &["/bin/tool", "32-bit little-endian i386"],
    );
    // A kernel given as init.
    std::fs::write(&init, fake_kernel()).unwrap();
    std::fs::write(&tool, elf_exec(EM_X86_64, 4096)).unwrap();
    refused(
        cpio(&s, &init, &[&t], &out),
        &["/init", "neither an ELF program nor a #! script"],
    );
    // A module of the wrong machine in the tree itself.
    let arm_tree = tree(&d.join("arm-tree"), EM_AARCH64);
    std::fs::write(&init, elf_exec(EM_X86_64, 4096)).unwrap();
    refused(
        cpio(
            &s,
            &init,
            &[&format!("--kernel-tree={}", arm_tree.display())],
            &out,
        ),
        &[
            "/bin/tool (from",
            "an x86_64 ELF program",
            "aarch64, as the kernel modules",
        ],
    );
    // What is right is accepted: a script init, x86_64 programs.
    std::fs::write(&init, b"#!/bin/sh\nexec /bin/tool\n").unwrap();
    let ok = cpio(&s, &init, &[&t], &out);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn cpio_refuses_a_dynamic_program_without_its_loader() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init = d.join("init");
    // A PIE with PT_INTERP /lib64/ld-linux-x86-64.so.2.
    let mut b = elf_exec(EM_X86_64, 4096);
    let loader = b"/lib64/ld-linux-x86-64.so.2\0";
    b[16] = 3; // ET_DYN
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    b[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
    b[72..80].copy_from_slice(&0x200u64.to_le_bytes()); // p_offset
    b[96..104].copy_from_slice(&(loader.len() as u64).to_le_bytes()); // p_filesz
    b[0x200..0x200 + loader.len()].copy_from_slice(loader);
    std::fs::write(&init, &b).unwrap();
    let out = d.join("out.cpio");
    let s = spec(d, "");
    refused(
        cpio(&s, &init, &[], &out),
        &[
            "/init (from",
            "needs /lib64/ld-linux-x86-64.so.2",
            "link it statically",
        ],
    );
    let ld = d.join("ld.so");
    let mut so = elf_exec(EM_X86_64, 4096);
    so[16] = 3;
    std::fs::write(&ld, so).unwrap();
    let s = spec(
        d,
        "[[file]]\npath = \"/lib64/ld-linux-x86-64.so.2\"\nsource = \"ld.so\"\nmode = 0o755\n",
    );
    let ok = cpio(&s, &init, &[], &out);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// An initramfs whose /init is for `machine`.
fn initrd_for(dir: &Path, machine: u16) -> PathBuf {
    let init = dir.join(format!("init-{machine}"));
    std::fs::write(&init, elf_exec(machine, 4096)).unwrap();
    let s = spec(dir, "");
    let out = dir.join(format!("initrd-{machine}.cpio.zst"));
    let o = cpio(&s, &init, &[], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn boot_images_refuse_an_initramfs_for_another_machine_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = d.join("vmlinuz");
    std::fs::write(&kernel, fake_kernel()).unwrap();
    let k = kernel.to_str().unwrap();
    let arm = initrd_for(d, EM_AARCH64);
    let out = d.join("out").display().to_string();
    for format in ["uki", "esp", "usb", "iso", "qcow2"] {
        refused(
            mkimage(&[
                format,
                "--kernel",
                k,
                "--initrd",
                arm.to_str().unwrap(),
                "--out",
                &out,
            ]),
            &[
                arm.to_str().unwrap(),
                "/init is an aarch64 ELF program",
                &format!("the kernel {k} is x86_64"),
            ],
        );
    }
    // Swapped, or not an initramfs at all.
    let x86 = initrd_for(d, EM_X86_64);
    let i = x86.to_str().unwrap();
    refused(
        mkimage(&["esp", "--kernel", i, "--initrd", k, "--out", &out]),
        &[
            i,
            "is an initramfs (zstd-compressed cpio), not a kernel: are --kernel and --initrd swapped?",
        ],
    );
    refused(
        mkimage(&["uki", "--kernel", k, "--initrd", k, "--out", &out]),
        &[
            k,
            "is not an initramfs",
            "a Linux kernel (x86_64): are --kernel and --initrd swapped?",
        ],
    );
    let text = d.join("notes.txt");
    std::fs::write(&text, "not an archive\n").unwrap();
    refused(
        mkimage(&[
            "esp",
            "--kernel",
            k,
            "--initrd",
            text.to_str().unwrap(),
            "--out",
            &out,
        ]),
        &["notes.txt is not an initramfs", "070701", "something else"],
    );
    let gz = d.join("text.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, b"text, not cpio").unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    refused(
        mkimage(&[
            "uki",
            "--kernel",
            k,
            "--initrd",
            gz.to_str().unwrap(),
            "--out",
            &out,
        ]),
        &["text.gz", "gzip-compressed data that is not a cpio archive"],
    );
    let cut = d.join("cut.cpio");
    let raw = d.join("raw.cpio");
    let init = d.join("init-62");
    let o = cpio(&spec(d, ""), &init, &["--compress", "none"], &raw);
    assert!(o.status.success());
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        mkimage(&[
            "esp",
            "--kernel",
            k,
            "--initrd",
            cut.to_str().unwrap(),
            "--out",
            &out,
        ]),
        &["cut.cpio is a damaged cpio archive"],
    );
    // An archive without /init boots nothing.
    let empty_spec = d.join("empty.toml");
    std::fs::write(&empty_spec, "[[dir]]\npath = \"/etc\"\n").unwrap();
    let no_init = d.join("no-init.cpio");
    let o = mkimage(&[
        "cpio",
        "--spec",
        empty_spec.to_str().unwrap(),
        "--out",
        no_init.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    refused(
        mkimage(&[
            "esp",
            "--kernel",
            k,
            "--initrd",
            no_init.to_str().unwrap(),
            "--out",
            &out,
        ]),
        &["no-init.cpio has no /init"],
    );
    // A device tree that is not one.
    let dtb = d.join("bad.dtb");
    std::fs::write(&dtb, b"\xd0\x0d\xfe\xed but short").unwrap();
    refused(
        mkimage(&[
            "esp",
            "--direct",
            "--kernel",
            k,
            "--initrd",
            i,
            "--dtb",
            dtb.to_str().unwrap(),
            "--out",
            &out,
        ]),
        &["bad.dtb is not a device tree blob"],
    );
}

/// The Debian kernel under an unpacked package root.
fn debian_kernel(var: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os(var) else {
        phase_testkit::skip(
            module_path!(),
            format_args!("not set (cargo xtask test sets it to a Debian kernel tree)"),
        );
        return None;
    };
    std::fs::read_dir(Path::new(&root).join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

#[test]
fn a_truncated_kernel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x86 = initrd_for(d, EM_X86_64);
    let arm = initrd_for(d, EM_AARCH64);
    let out = d.join("out").display().to_string();
    let whole = fake_kernel_len(256 << 10);
    let mut cases = vec![(
        whole[..64 << 10].to_vec(),
        x86.clone(),
        "its setup header (setup_sects 1, syssize 16320) declares 262144 bytes",
    )];
    let mut debian = Vec::new();
    for (var, initrd) in [
        ("PHASE_TEST_KERNEL_TREE_X86_64", &x86),
        ("PHASE_TEST_KERNEL_TREE_AARCH64", &arm),
    ] {
        if let Some(k) = debian_kernel(var) {
            let bytes = std::fs::read(&k).unwrap();
            // The whole kernel passes the checks (up to the stub).
            debian.push((k, initrd.clone()));
            cases.push((bytes[..64 << 10].to_vec(), initrd.clone(), "is truncated"));
        }
    }
    for (i, (bytes, initrd, want)) in cases.iter().enumerate() {
        let k = d.join(format!("cut-{i}"));
        std::fs::write(&k, bytes).unwrap();
        for format in ["uki", "esp"] {
            refused(
                mkimage(&[
                    format,
                    "--kernel",
                    k.to_str().unwrap(),
                    "--initrd",
                    initrd.to_str().unwrap(),
                    "--out",
                    &out,
                ]),
                &[k.to_str().unwrap(), want, "the file has 65536"],
            );
        }
    }
    for (k, initrd) in debian {
        let o = mkimage(&[
            "esp",
            "--direct",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--out",
            &out,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("truncated") && !err.contains("initramfs"),
            "{}: {err}",
            k.display()
        );
    }
}
