//! Text from the command line that reaches a boot configuration —
//! `--append`, `--cmdline`, kernel variant names — cannot add lines to
//! syslinux.cfg or systemd-boot entries, nor unbalance the kernel's
//! quoting: it is refused, naming the option.

mod fixtures;

use fixtures::*;

#[test]
fn control_characters_and_broken_quoting_are_refused_everywhere() {
    let inp = Inputs::new();
    let (k, i) = (inp.k(), inp.i());
    let out = inp.path("out").display().to_string();
    let long = "x".repeat(2100);
    let bad: &[(&str, &str, &str)] = &[
        ("--append", "quiet\nLINUX /evil", "--append"),
        ("--append", "quiet\r\nAPPEND init=/bin/sh", "--append"),
        ("--append", "a\tb", "--append"),
        ("--append", "a\u{85}b", "--append"),
        (
            "--cmdline",
            "console=ttyS0\noptions init=/bin/sh",
            "--cmdline",
        ),
        ("--cmdline", "console=ttyS0 \u{1b}[2J", "--cmdline"),
        ("--append", "foo=\"bar", "unbalanced double quote"),
        ("--append", &long, "COMMAND_LINE_SIZE"),
    ];
    let formats: &[&[&str]] = &[
        &["esp"],
        &["usb"],
        &["iso"],
        &["esp", "--direct"],
        &["qcow2"],
    ];
    for format in formats {
        for (flag, value, want) in bad {
            let mut args: Vec<&str> = format.to_vec();
            args.extend(["--kernel", k, "--initrd", i, flag, value, "--out", &out]);
            let err = mkimage_err(&args);
            assert!(err.contains(want), "{args:?}:\n{err}");
        }
        // A variant name is text in the menus too.
        let mut args: Vec<&str> = format.to_vec();
        let variant = format!("base\nMENU HIDE={k}");
        args.extend(["--kernel", &variant, "--initrd", i, "--out", &out]);
        let err = mkimage_err(&args);
        assert!(err.contains("kernel variant name"), "{args:?}:\n{err}");
    }
    for (flag, value, want) in &bad[4..] {
        if *flag != "--cmdline" {
            continue;
        }
        let err = mkimage_err(&[
            "uki", "--kernel", k, "--initrd", i, flag, value, "--out", &out,
        ]);
        assert!(err.contains(want), "uki {flag} {value:?}:\n{err}");
    }
    assert!(
        !std::path::Path::new(&out).exists(),
        "an output was written"
    );
}

#[test]
fn ordinary_text_reaches_every_menu_as_given() {
    if !have(STUB_X64, "menu text") || !have(SYSTEMD_BOOT_X64, "menu text") {
        return;
    }
    let inp = Inputs::new();
    let esp = inp.path("esp.img");
    let append = "quiet root=\"LABEL=a b\" phase.provider=https://x.example/a?b=c#d";
    mkimage_ok(&[
        "esp",
        "--kernel",
        inp.k(),
        "--initrd",
        inp.i(),
        "--append",
        append,
        "--out",
        esp.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&esp).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(&format!(
            "options console=ttyS0 phase.mode=internet {append}\n"
        )),
        "the entry does not carry the text as given"
    );
}
