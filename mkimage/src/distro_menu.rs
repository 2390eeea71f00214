//! Phase Boot's entries added to a distribution's own boot menus, for
//! `mkimage iso --into`: the isolinux/syslinux configuration BIOS boots
//! from and each `grub.cfg` on the ISO filesystem.
//!
//! The edit is an append: the distribution's text stays byte for byte, and
//! the entries follow it, so every original entry, default and submenu is
//! where it was. Appending is only right for a file that is what it looks
//! like, so each is checked first: syslinux text must consist of known
//! directives (comments and `TEXT … ENDTEXT` blocks aside); a `grub.cfg`
//! must be UTF-8 with its quotes closed and braces balanced. Anything else
//! is an error naming the file and line; `--entry-only` adds the files and
//! leaves every menu alone.

use std::fmt::Write as _;

use thiserror::Error;

use crate::menu::{Menu, MenuError};
use crate::remaster::phase_paths;

#[derive(Debug, Error)]
pub enum DistroMenuError {
    #[error(
        "{path}: line {line} is not syslinux configuration mkimage understands ({text:?}); pass --entry-only to add the files without touching the menus"
    )]
    Syslinux {
        path: String,
        line: usize,
        text: String,
    },
    #[error(
        "{path}: not grub configuration mkimage understands: {reason}; pass --entry-only to add the files without touching the menus"
    )]
    Grub { path: String, reason: String },
    #[error(
        "{path}: not a text file (it is not UTF-8, or holds NUL bytes); pass --entry-only to add the files without touching the menus"
    )]
    NotText { path: String },
    #[error(
        "{path} is {len} bytes, more than a boot menu's {max}; pass --entry-only to add the files without touching the menus"
    )]
    TooLarge { path: String, len: u64, max: u64 },
    #[error(
        "the BIOS boot image {boot:?} has no isolinux.cfg or syslinux.cfg where isolinux looks; pass --entry-only to add the files without touching the menus"
    )]
    NoSyslinuxConfig { boot: String },
    #[error(transparent)]
    Menu(#[from] MenuError),
}

/// The largest menu file edited.
pub const MAX_MENU: u64 = 1 << 20;

/// Where isolinux looks for its configuration, given where isolinux.bin
/// is: its own directory first, then the fixed places (syslinux 6,
/// `core/fs/iso9660` search order).
pub fn syslinux_candidates(boot: &str) -> Vec<String> {
    let dir = match boot.rsplit_once('/') {
        Some((d, _)) => format!("{d}/"),
        None => String::new(),
    };
    let mut v = vec![format!("{dir}isolinux.cfg"), format!("{dir}syslinux.cfg")];
    for c in [
        "boot/isolinux/isolinux.cfg",
        "isolinux/isolinux.cfg",
        "boot/syslinux/syslinux.cfg",
        "syslinux/syslinux.cfg",
        "isolinux.cfg",
        "syslinux.cfg",
    ] {
        if !v.iter().any(|x| x == c) {
            v.push(c.to_owned());
        }
    }
    v
}

/// The `grub.cfg` files GRUB on a CD reads (its prefix is one of these).
pub const GRUB_CANDIDATES: [&str; 4] = [
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
    "EFI/BOOT/grub.cfg",
    "EFI/boot/grub.cfg",
];

/// Checks menu bytes are text.
pub fn text<'a>(path: &str, bytes: &'a [u8]) -> Result<&'a str, DistroMenuError> {
    if bytes.contains(&0) {
        return Err(DistroMenuError::NotText {
            path: path.to_owned(),
        });
    }
    std::str::from_utf8(bytes).map_err(|_| DistroMenuError::NotText {
        path: path.to_owned(),
    })
}

/// syslinux's directives (`doc/syslinux.txt`, `doc/menu.txt`), lower case.
const SYSLINUX_DIRECTIVES: &[&str] = &[
    "include",
    "menu",
    "label",
    "kernel",
    "linux",
    "boot",
    "bss",
    "pxe",
    "fdimage",
    "comboot",
    "com32",
    "config",
    "localboot",
    "initrd",
    "append",
    "ipappend",
    "sysappend",
    "default",
    "ui",
    "prompt",
    "timeout",
    "totaltimeout",
    "noescape",
    "nocomplete",
    "nohalt",
    "ontimeout",
    "onerror",
    "allowoptions",
    "implicit",
    "serial",
    "console",
    "font",
    "kbdmap",
    "display",
    "say",
    "path",
    "text",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "f6",
    "f7",
    "f8",
    "f9",
    "f10",
    "f11",
    "f12",
    "f0",
];

/// Checks `text` is syslinux configuration.
pub fn check_syslinux(path: &str, text: &str) -> Result<(), DistroMenuError> {
    let mut in_text = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let word = t
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if in_text {
            in_text = word != "endtext";
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if word == "text" {
            in_text = true;
        }
        if !SYSLINUX_DIRECTIVES.contains(&word.as_str()) {
            return Err(DistroMenuError::Syslinux {
                path: path.to_owned(),
                line: n + 1,
                text: line.to_owned(),
            });
        }
    }
    Ok(())
}

/// `text` with Phase Boot's entries appended. With `default`, the menu's
/// default entry becomes the first variant's entry of the menu's default
/// mode and the menu waits the menu's timeout.
pub fn syslinux(
    path: &str,
    text: &str,
    menu: &Menu,
    default: bool,
) -> Result<String, DistroMenuError> {
    check_syslinux(path, text)?;
    // Reuse the one writer of our own entries, so the checks on titles
    // and command lines are the same; take its LABEL blocks.
    let ours = menu.syslinux_cfg(true)?;
    let labels = ours
        .find("\nLABEL ")
        .map(|at| &ours[at + 1..])
        .unwrap_or_default();
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# Phase Boot, added by mkimage iso --into\n");
    let default_id = &menu.default_entry().id;
    for block in labels.split("\n\n") {
        let block = block.trim_end();
        out.push_str(block);
        out.push('\n');
        if default && block.starts_with(&format!("LABEL {default_id}\n")) {
            out.push_str("  MENU DEFAULT\n");
        }
    }
    if default {
        // Without a UI module the built-in prompt boots DEFAULT; with one
        // (UI, or a DEFAULT that names a .c32 module, as Debian's does)
        // DEFAULT must stay the module, and MENU DEFAULT picks the entry.
        let ui = text.lines().any(|l| {
            let l = l.trim().to_ascii_lowercase();
            l.starts_with("ui ") || (l.starts_with("default ") && l.ends_with(".c32"))
        });
        if !ui {
            let _ = writeln!(out, "DEFAULT {default_id}");
        }
        let tenths = u64::from(menu.timeout).saturating_mul(10).max(1);
        let _ = writeln!(out, "TIMEOUT {tenths}");
    }
    Ok(out)
}

/// Checks `text` is grub script whose end is at the top level: quotes
/// closed and braces balanced outside quotes and comments.
pub fn check_grub(path: &str, text: &str) -> Result<(), DistroMenuError> {
    let bad = |reason: String| DistroMenuError::Grub {
        path: path.to_owned(),
        reason,
    };
    let mut depth: i64 = 0;
    let mut quote: Option<(char, usize)> = None;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word_start = true;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match quote {
            Some((q, _)) => {
                if c == q {
                    quote = None;
                } else if c == '\\' && q == '"' {
                    chars.next();
                }
            }
            None => match c {
                '\\' => {
                    chars.next();
                }
                '\'' | '"' => quote = Some((c, line)),
                '#' if word_start => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            line += 1;
                            break;
                        }
                    }
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(bad(format!("line {line} closes a brace never opened")));
                    }
                }
                _ => {}
            },
        }
        word_start = c.is_whitespace() || c == ';';
    }
    if let Some((q, at)) = quote {
        return Err(bad(format!(
            "the {q} quote opened on line {at} never closes"
        )));
    }
    if depth != 0 {
        return Err(bad(format!("{depth} brace(s) never close")));
    }
    Ok(())
}

/// A value in grub's single quotes, where nothing is special but the
/// quote itself.
fn grub_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `text` with a `menuentry` for each of the menu's entries appended; with
/// `default`, `set default` and `set timeout` after them.
pub fn grub(path: &str, text: &str, menu: &Menu, default: bool) -> Result<String, DistroMenuError> {
    check_grub(path, text)?;
    // The same checks our other writers make of every title and line.
    menu.loader_conf()?;
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# Phase Boot, added by mkimage iso --into\n");
    for e in &menu.entries {
        let (kernel, initrd) = phase_paths(&e.variant);
        let _ = write!(
            out,
            "menuentry {} --id {} {{\n    linux /{kernel} {}\n    initrd /{initrd}\n}}\n",
            grub_quote(&e.title),
            grub_quote(&e.id),
            grub_quote(&e.cmdline),
        );
    }
    if default {
        let _ = writeln!(out, "set default={}", grub_quote(&menu.default_entry().id));
        let _ = writeln!(out, "set timeout={}", menu.timeout);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu() -> Menu {
        Menu::new(&["linux".into()], "console=ttyS0", "", 3, false).unwrap()
    }

    #[test]
    fn syslinux_entries_follow_the_distros_text() {
        let distro = "# D-I config version 2.0\npath \nprompt 0\ntimeout 0\ninclude menu.cfg\ndefault vesamenu.c32\n";
        let out = syslinux("isolinux.cfg", distro, &menu(), false).unwrap();
        assert!(out.starts_with(distro));
        assert_eq!(
            &out[distro.len()..],
            "\n# Phase Boot, added by mkimage iso --into\n\
             LABEL phase-linux-internet\n  MENU LABEL Phase Boot: internet\n  LINUX /phase/linux/vmlinuz\n  INITRD /phase/linux/initrd\n  APPEND console=ttyS0 phase.mode=internet\n\
             LABEL phase-linux-local\n  MENU LABEL Phase Boot: local\n  LINUX /phase/linux/vmlinuz\n  INITRD /phase/linux/initrd\n  APPEND console=ttyS0 phase.mode=local\n\
             LABEL phase-linux-private\n  MENU LABEL Phase Boot: private\n  LINUX /phase/linux/vmlinuz\n  INITRD /phase/linux/initrd\n  APPEND console=ttyS0 phase.mode=private\n"
        );
        // As the default: MENU DEFAULT (DEFAULT stays vesamenu.c32) and a timeout.
        let mut m = menu();
        m.set_default_mode("local").unwrap();
        let out = syslinux("isolinux.cfg", distro, &m, true).unwrap();
        assert!(
            out.contains("LABEL phase-linux-local\n  MENU LABEL Phase Boot: local\n  LINUX /phase/linux/vmlinuz\n  INITRD /phase/linux/initrd\n  APPEND console=ttyS0 phase.mode=local\n  MENU DEFAULT\n"),
            "{out}"
        );
        assert!(out.ends_with("TIMEOUT 30\n"), "{out}");
        assert!(!out.contains("DEFAULT phase"), "{out}");
        let plain = syslinux("s.cfg", "prompt 1\ntimeout 5\n", &m, true).unwrap();
        assert!(
            plain.contains("DEFAULT phase-linux-local\nTIMEOUT 30\n"),
            "{plain}"
        );
    }

    #[test]
    fn syslinux_it_cannot_read_is_named() {
        let err = syslinux(
            "isolinux/isolinux.cfg",
            "default x\nmenuentry 'grub?' {\n",
            &menu(),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("isolinux/isolinux.cfg: line 2 is not syslinux configuration"),
            "{err}"
        );
        assert!(err.contains("--entry-only"), "{err}");
        // Help text is anything until ENDTEXT.
        check_syslinux(
            "x",
            "label a\n  text help\n  free words { here\n  endtext\n",
        )
        .unwrap();
    }

    #[test]
    fn grub_entries_are_quoted_and_checked() {
        let distro = "menuentry 'Install' {\n    linux /linux --- quiet\n}\n";
        let mut m = Menu::new(
            &["linux".into()],
            "console=ttyS0 root=\"LABEL=a b\"",
            "x='y'",
            5,
            false,
        )
        .unwrap();
        let out = grub("boot/grub/grub.cfg", distro, &m, false).unwrap();
        assert!(out.starts_with(distro));
        assert!(
            out.contains("menuentry 'Phase Boot: internet' --id 'phase-linux-internet' {\n    linux /phase/linux/vmlinuz 'console=ttyS0 root=\"LABEL=a b\" phase.mode=internet x='\\''y'\\'''\n    initrd /phase/linux/initrd\n}\n"),
            "{out}"
        );
        check_grub("out", &out).unwrap();
        m.set_default_mode("private").unwrap();
        let out = grub("boot/grub/grub.cfg", distro, &m, true).unwrap();
        assert!(out.ends_with("set default='phase-linux-private'\nset timeout=5\n"));
        for (bad, why) in [
            ("menuentry 'x' {\n", "never close"),
            ("}\n", "never opened"),
            ("echo 'unterminated\n", "never closes"),
        ] {
            let err = grub("g.cfg", bad, &m, false).unwrap_err().to_string();
            assert!(
                err.starts_with("g.cfg: ") && err.contains(why),
                "{bad:?}: {err}"
            );
        }
        // Braces and quotes in comments and quotes do not count.
        check_grub("x", "# it's {\necho '}' \"{\"\n").unwrap();
        assert!(matches!(
            text("b.cfg", b"a\0b"),
            Err(DistroMenuError::NotText { .. })
        ));
    }
}
