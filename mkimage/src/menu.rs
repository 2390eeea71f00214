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
    /// Seconds the menu waits before booting the first entry.
    pub timeout: u32,
    /// Whether the UEFI menu lets the user edit a command line.
    pub editor: bool,
}

impl Menu {
    /// Entries for each variant and mode: `base` + `phase.mode=<mode>` +
    /// `append`, the first variant's `internet` entry first (the default).
    pub fn new(variants: &[String], base: &str, append: &str, timeout: u32, editor: bool) -> Menu {
        let mut entries = Vec::new();
        for variant in variants {
            for mode in MODES {
                let cmdline = [base, &format!("phase.mode={mode}"), append]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
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
        Menu {
            entries,
            timeout,
            editor,
        }
    }

    pub fn default_entry(&self) -> &Entry {
        &self.entries[0]
    }

    /// syslinux.cfg / isolinux.cfg. `dir` is where each variant's `vmlinuz`
    /// and `initrd` live (`/phase/<variant>`); `menu` says whether menu.c32
    /// is installed beside ldlinux.c32 — without it the built-in prompt
    /// lists the labels.
    pub fn syslinux_cfg(&self, menu: bool) -> String {
        let mut s = String::new();
        // TIMEOUT is in tenths of a second; 0 would wait forever.
        let tenths = (self.timeout * 10).max(1);
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
        s
    }

    /// `loader/loader.conf`.
    pub fn loader_conf(&self) -> String {
        format!(
            "default {}.conf\ntimeout {}\neditor {}\n",
            self.default_entry().id,
            self.timeout,
            if self.editor { "yes" } else { "no" }
        )
    }

    /// `loader/entries/<id>.conf` for each entry, starting
    /// `/EFI/phase/<variant>.efi`.
    pub fn systemd_boot_entries(&self) -> Vec<(String, String)> {
        self.entries
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
            .collect()
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
    fn entries_per_variant_and_mode() {
        let m = Menu::new(
            &["base".into(), "cfi-compat".into()],
            "console=ttyS0",
            "phase.report",
            5,
            false,
        );
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
        let m = Menu::new(&["base".into()], "console=ttyS0", "", 3, false);
        assert_eq!(
            m.syslinux_cfg(true),
            "UI menu.c32\nMENU TITLE Phase Boot\nPROMPT 0\nTIMEOUT 30\nDEFAULT phase-base-internet\n\
             \nLABEL phase-base-internet\n  MENU LABEL Phase Boot: internet\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=internet\n\
             \nLABEL phase-base-local\n  MENU LABEL Phase Boot: local\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=local\n\
             \nLABEL phase-base-private\n  MENU LABEL Phase Boot: private\n  LINUX /phase/base/vmlinuz\n  INITRD /phase/base/initrd\n  APPEND console=ttyS0 phase.mode=private\n"
        );
        assert_eq!(
            m.loader_conf(),
            "default phase-base-internet.conf\ntimeout 3\neditor no\n"
        );
        let entries = m.systemd_boot_entries();
        assert_eq!(entries[2].0, "loader/entries/phase-base-private.conf");
        assert_eq!(
            entries[2].1,
            "title Phase Boot: private\nsort-key phase-02\nefi /EFI/phase/base.efi\noptions console=ttyS0 phase.mode=private\n"
        );
    }
}
