//! Boot menus: one entry per kernel variant and `phase.mode`, written as a
//! syslinux/isolinux configuration for BIOS and as systemd-boot entries for
//! UEFI.
//!
//! On UEFI every entry starts the same UKI of its variant and passes its
//! command line as load options: systemd-boot type #1 entries with `efi` and
//! `options` (Boot Loader Specification). Such a UKI is built without
//! `.cmdline`, so systemd-stub takes the options even under Secure Boot,
//! while the kernel and the initramfs — which carries the trust keys — stay
//! covered by the UKI's signature. One UKI per mode would triple the
//! image for a choice the command line makes anyway, and trust never comes
//! from the command line.

use std::fmt::Write;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MenuError {
    #[error(
        "{field} {value:?} holds {what} at byte {at}: boot menus take one line per setting, and this would end the line and start another"
    )]
    Control {
        field: String,
        value: String,
        at: usize,
        what: String,
    },
    #[error(
        "{field} {value:?} has an unbalanced double quote: the kernel would take everything after it, phase.mode= included, as one parameter"
    )]
    Quote { field: String, value: String },
    #[error(
        "{field} is {len} bytes; the kernel keeps {max} bytes of a command line (COMMAND_LINE_SIZE, with its NUL) and would drop the rest"
    )]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error(
        "kernel variant name {0:?}: use 1 to 32 letters, digits, '-' and '_' (it names files and menu entries)"
    )]
    VariantName(String),
    #[error("boot mode {0:?}: the menus offer internet, local and private")]
    Mode(String),
    #[error("kernel variants {a:?} and {b:?} would share the files of {dir:?}")]
    VariantClash { a: String, b: String, dir: String },
}

/// What a piece of text is, for [`config_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// A kernel command line, or a part of one: the kernel splits it at
    /// spaces outside double quotes.
    CommandLine,
    /// A title or another value that runs to the end of its line.
    Line,
}

/// The longest command line the kernel keeps: COMMAND_LINE_SIZE is 2048 on
/// x86_64 and arm64, its NUL included.
pub const MAX_CMDLINE: usize = 2047;

/// The one check of every text that reaches a boot configuration
/// (syslinux.cfg, isolinux.cfg, loader.conf, systemd-boot entries, a UKI's
/// `.cmdline`): each writer calls it on what it interpolates. Refuses
/// control characters (C0, DEL, C1 — a newline or carriage return would
/// start a new `LINUX`, `APPEND` or `options` line) and Unicode line
/// separators; a command line must also keep its double quotes balanced,
/// which is how the kernel groups a parameter with spaces.
pub fn config_text(field: &str, value: &str, kind: Text) -> Result<(), MenuError> {
    for (at, c) in value.char_indices() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            let what = match c {
                '\n' => "a newline".to_owned(),
                '\r' => "a carriage return".to_owned(),
                '\t' => "a tab".to_owned(),
                _ => format!("the control character U+{:04X}", c as u32),
            };
            return Err(MenuError::Control {
                field: field.to_owned(),
                value: value.to_owned(),
                at,
                what,
            });
        }
    }
    if kind == Text::CommandLine && value.matches('"').count() % 2 == 1 {
        return Err(MenuError::Quote {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Checks a kernel variant name: it becomes file names, menu labels and
/// titles.
pub fn check_variant(name: &str) -> Result<(), MenuError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MenuError::VariantName(name.to_owned()))
    }
}

/// The `phase.mode` values, in menu order.
pub const MODES: [&str; 3] = ["internet", "local", "private"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A file-name-safe identifier, e.g. `phase-base-internet`.
    pub id: String,
    pub title: String,
    pub variant: String,
    pub mode: String,
    /// The whole kernel command line of this entry.
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub entries: Vec<Entry>,
    /// The entry booted when the menu times out (an index into `entries`).
    pub default: usize,
    /// Seconds the menu waits before booting the default entry.
    pub timeout: u32,
    /// Whether the UEFI menu lets the user edit a command line.
    pub editor: bool,
}

impl Menu {
    /// Entries for each variant and mode: `base` + `phase.mode=<mode>` +
    /// `append`, the first variant's `internet` entry first (the default).
    /// Refuses text that would break out of its line ([`config_text`]),
    /// bad variant names, and command lines the kernel would cut.
    pub fn new(
        variants: &[String],
        base: &str,
        append: &str,
        timeout: u32,
        editor: bool,
    ) -> Result<Menu, MenuError> {
        config_text("the command line (--cmdline)", base, Text::CommandLine)?;
        config_text("--append", append, Text::CommandLine)?;
        for (i, variant) in variants.iter().enumerate() {
            check_variant(variant)?;
            if let Some(other) = variants[..i]
                .iter()
                .find(|o| dir_name(o) == dir_name(variant))
            {
                return Err(MenuError::VariantClash {
                    a: other.clone(),
                    b: variant.clone(),
                    dir: dir_name(variant),
                });
            }
        }
        let mut entries = Vec::new();
        for variant in variants {
            for mode in MODES {
                let cmdline = [base, &format!("phase.mode={mode}"), append]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                if cmdline.len() > MAX_CMDLINE {
                    return Err(MenuError::TooLong {
                        field: format!("the command line of entry {mode} ({variant})"),
                        len: cmdline.len(),
                        max: MAX_CMDLINE,
                    });
                }
                let title = if variants.len() > 1 {
                    format!("Phase Boot: {mode} ({variant})")
                } else {
                    format!("Phase Boot: {mode}")
                };
                entries.push(Entry {
                    id: format!("phase-{}-{mode}", dir_name(variant)),
                    title,
                    variant: variant.clone(),
                    mode: mode.to_owned(),
                    cmdline,
                });
            }
        }
        Ok(Menu {
            entries,
            default: 0,
            timeout,
            editor,
        })
    }

    /// Makes the first variant's entry of `mode` the default, for an image
    /// that boots unattended in that mode (a rack booting from its LAN:
    /// `local`); the entries and their order stay as they are.
    pub fn set_default_mode(&mut self, mode: &str) -> Result<(), MenuError> {
        self.default = self
            .entries
            .iter()
            .position(|e| e.mode == mode)
            .ok_or_else(|| MenuError::Mode(mode.to_owned()))?;
        Ok(())
    }

    /// Every entry's text checked again, as each writer interpolates it
    /// ([`Menu`]'s fields are public, so a menu need not come from
    /// [`Menu::new`]).
    fn check(&self) -> Result<(), MenuError> {
        for e in &self.entries {
            config_text("an entry id", &e.id, Text::Line)?;
            config_text("an entry title", &e.title, Text::Line)?;
            check_variant(&e.variant)?;
            config_text("an entry's command line", &e.cmdline, Text::CommandLine)?;
        }
        Ok(())
    }

    /// The default entry; the first when `default` is out of range (the
    /// fields are public).
    pub fn default_entry(&self) -> &Entry {
        self.entries.get(self.default).unwrap_or(&self.entries[0])
    }

    /// syslinux.cfg / isolinux.cfg. `dir` is where each variant's `vmlinuz`
    /// and `initrd` live (`/phase/<variant>`); `menu` says whether menu.c32
    /// is installed beside ldlinux.c32 — without it the built-in prompt
    /// lists the labels.
    pub fn syslinux_cfg(&self, menu: bool) -> Result<String, MenuError> {
        self.check()?;
        let mut s = String::new();
        // TIMEOUT is in tenths of a second; 0 would wait forever.
        let tenths = u64::from(self.timeout).saturating_mul(10).max(1);
        if menu {
            s.push_str("UI menu.c32\nMENU TITLE Phase Boot\n");
        } else {
            let labels: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
            let _ = writeln!(s, "SAY Phase Boot: {}", labels.join(" "));
        }
        let _ = writeln!(s, "PROMPT {}", u8::from(!menu));
        let _ = writeln!(s, "TIMEOUT {tenths}");
        let _ = writeln!(s, "DEFAULT {}", self.default_entry().id);
        for e in &self.entries {
            let dir = format!("/phase/{}", dir_name(&e.variant));
            let _ = write!(
                s,
                "\nLABEL {}\n  MENU LABEL {}\n  LINUX {dir}/vmlinuz\n  INITRD {dir}/initrd\n  APPEND {}\n",
                e.id, e.title, e.cmdline
            );
        }
        Ok(s)
    }

    /// `loader/loader.conf`.
    pub fn loader_conf(&self) -> Result<String, MenuError> {
        self.check()?;
        Ok(format!(
            "default {}.conf\ntimeout {}\neditor {}\n",
            self.default_entry().id,
            self.timeout,
            if self.editor { "yes" } else { "no" }
        ))
    }

    /// `loader/entries/<id>.conf` for each entry, starting
    /// `/EFI/phase/<variant>.efi`.
    pub fn systemd_boot_entries(&self) -> Result<Vec<(String, String)>, MenuError> {
        self.check()?;
        Ok(self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    format!("loader/entries/{}.conf", e.id),
                    format!(
                        "title {}\nsort-key phase-{i:02}\nefi /{}\noptions {}\n",
                        e.title,
                        uki_path(&e.variant),
                        e.cmdline
                    ),
                )
            })
            .collect())
    }
}

/// A variant name as a directory or file name on every medium: ISO9660
/// allows only letters, digits and `_`.
pub fn dir_name(variant: &str) -> String {
    variant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a variant's UKI goes on an ESP.
pub fn uki_path(variant: &str) -> String {
    format!("EFI/phase/{}.efi", dir_name(variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_mode_moves_the_default_not_the_entries() {
        let mut m = Menu::new(&["linux".into()], "console=ttyS0", "", 0, false).unwrap();
        m.set_default_mode("local").unwrap();
        assert_eq!(m.default_entry().id, "phase-linux-local");
        assert_eq!(m.entries[0].mode, "internet");
        let cfg = m.syslinux_cfg(true).unwrap();
        assert!(cfg.contains("DEFAULT phase-linux-local\n"), "{cfg}");
        assert!(
            m.loader_conf()
                .unwrap()
                .starts_with("default phase-linux-local.conf\n")
        );
        assert_eq!(
            m.set_default_mode("lan"),
            Err(MenuError::Mode("lan".into()))
        );
    }

    #[test]
    fn entries_per_variant_and_mode() {
        let m = Menu::new(
            &["base".into(), "cfi-compat".into()],
            "console=ttyS0",
            "phase.report",
            5,
            false,
        )
        .unwrap();
        let ids: Vec<&str> = m.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "phase-base-internet",
                "phase-base-local",
                "phase-base-private",
                "phase-cfi_compat-internet",
                "phase-cfi_compat-local",
                "phase-cfi_compat-private"
            ]
        );
        assert_eq!(
            m.entries[4].cmdline,
            "console=ttyS0 phase.mode=local phase.report"
        );
        assert_eq!(m.entries[4].title, "Phase Boot: local (cfi-compat)");
    }

    #[test]
    fn syslinux_and_systemd_boot_text() {
        let m = Menu::new(&["base".into()], "console=ttyS0", "", 3, false).unwrap();
        assert_eq!(
            m.syslinux_cfg(true).unwrap(),
            "UI menu.c32\nMENU TITLE Phase Boot\nPROMPT 0\nTIMEOUT 30\nDEFAULT phase-base-internet\n\
             \nLABEL phase-base-internet\n  MENU LABEL Phase Boot: internet\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=internet\n\
             \nLABEL phase-base-local\n  MENU LABEL Phase Boot: local\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=local\n\
             \nLABEL phase-base-private\n  MENU LABEL Phase Boot: private\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=private\n"
        );
        assert_eq!(
            m.loader_conf().unwrap(),
            "default phase-base-internet.conf\ntimeout 3\neditor no\n"
        );
        let entries = m.systemd_boot_entries().unwrap();
        assert_eq!(entries[2].0, "loader/entries/phase-base-private.conf");
        assert_eq!(
            entries[2].1,
            "title Phase Boot: private\nsort-key phase-02\nefi /EFI/phase/base.efi\noptions console=ttyS0 phase.mode=private\n"
        );
    }

    #[test]
    fn text_that_would_break_out_of_its_line_is_refused() {
        let v = ["base".to_owned()];
        for (base, append) in [
            ("console=ttyS0\nLINUX /x", ""),
            ("console=ttyS0", "a\rb"),
            ("console=ttyS0", "a\u{2028}b"),
            ("console=ttyS0", "a\u{7f}"),
        ] {
            assert!(
                matches!(
                    Menu::new(&v, base, append, 0, false),
                    Err(MenuError::Control { .. })
                ),
                "{base:?} {append:?}"
            );
        }
        assert!(matches!(
            Menu::new(&v, "x", "root=\"LABEL=a b", 0, false),
            Err(MenuError::Quote { .. })
        ));
        assert!(Menu::new(&v, "x", "root=\"LABEL=a b\"", 0, false).is_ok());
        assert!(matches!(
            Menu::new(&v, "x", &"y".repeat(2100), 0, false),
            Err(MenuError::TooLong { .. })
        ));
        for bad in ["", "a b", "a\nb", "ä", "a/b", &"x".repeat(33)] {
            assert!(
                matches!(
                    Menu::new(&[bad.to_owned()], "x", "", 0, false),
                    Err(MenuError::VariantName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Menu::new(&["a-b".into(), "a_b".into()], "x", "", 0, false),
            Err(MenuError::VariantClash { .. })
        ));
        // A menu put together by hand goes through the same check in
        // every writer.
        let mut m = Menu::new(&v, "x", "", 0, false).unwrap();
        m.entries[1].title = "t\nMENU HIDDEN".into();
        assert!(m.syslinux_cfg(true).is_err());
        assert!(m.loader_conf().is_err());
        assert!(m.systemd_boot_entries().is_err());
        // The timeout cannot overflow.
        m.entries[1].title = "t".into();
        m.timeout = u32::MAX;
        assert!(
            m.syslinux_cfg(false)
                .unwrap()
                .contains("TIMEOUT 42949672950\n")
        );
    }
}
