//! A config against a profile's fragments: every requirement that is not
//! met becomes a finding with what was wanted, what was found, its severity
//! and why it matters.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::config::{Arch, Config, Setting, Value};
use crate::fragment::{Fragment, Requirement, Severity, Want, merge};

/// The names a kernel tree's Kconfig files define (`config X`,
/// `menuconfig X`), so that an option the config lacks can be told apart:
/// one the tree knows (its dependencies are off) from one it has never
/// heard of (an option of another tree, such as XSC's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Symbols(pub BTreeSet<String>);

impl Symbols {
    /// Adds the symbols one Kconfig file defines.
    pub fn add_kconfig(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("config" | "menuconfig"), Some(name)) = (words.next(), words.next()) {
                self.0.insert(name.to_owned());
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// What the config says about an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Set(Value),
    /// `# CONFIG_X is not set`.
    NotSet,
    /// No line at all, and the tree's symbols are not known: either the tree
    /// lacks the option or its dependencies are off.
    Absent,
    /// No line, and the tree knows the option: its dependencies are off.
    DependenciesOff,
    /// No line, and the tree's Kconfig files do not define it.
    Unknown,
    /// The members of an unsatisfied group, each with what was found.
    Group(Vec<(String, Found)>),
}

impl Found {
    fn of(config: &Config, symbols: Option<&Symbols>, option: &str) -> Found {
        match (config.get(option), symbols) {
            (Some(Setting::Set(v)), _) => Found::Set(v.clone()),
            (Some(Setting::NotSet), _) => Found::NotSet,
            (None, None) => Found::Absent,
            (None, Some(s)) if s.contains(option) => Found::DependenciesOff,
            (None, Some(_)) => Found::Unknown,
        }
    }

    /// Whether the option is missing from the config altogether (never set
    /// nor unset), however that came about.
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            Found::Absent | Found::DependenciesOff | Found::Unknown
        )
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Set(v) => write!(f, "{v}"),
            Found::NotSet => f.write_str("not set"),
            Found::Absent => f.write_str("absent (the tree lacks it, or its dependencies are off)"),
            Found::DependenciesOff => f.write_str("absent (its dependencies are off)"),
            Found::Unknown => f.write_str("unknown to this kernel tree"),
            Found::Group(members) => {
                for (i, (name, found)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "CONFIG_{name} {found}")?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for Found {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn satisfied(want: &Want, found: &Found) -> bool {
    match (want, found) {
        (Want::Exactly(w), Found::Set(v)) => w == v,
        (Want::YesOrModule, Found::Set(Value::Yes | Value::Module)) => true,
        (Want::Off, Found::Set(_)) => false,
        (Want::Off, _) => true,
        _ => false,
    }
}

/// One requirement (or group) the config does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `CONFIG_X`, or for a group `CONFIG_A or CONFIG_B`.
    pub option: String,
    /// `y`, `y or m`, `not set`, a value, or for a group `at least one of them`.
    pub wanted: String,
    pub found: Found,
    pub severity: Severity,
    pub reason: String,
    /// The fragment that asks for it.
    pub fragment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {}: wanted {}, found {} — {} [{}]",
            self.severity, self.option, self.wanted, self.found, self.reason, self.fragment
        )
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The config's architecture, when it names one of ours.
    pub arch: Option<Arch>,
    pub fragments: Vec<String>,
    /// Requirements that applied to this architecture.
    pub checked: usize,
    /// Fatal first, then degraded, then notes; in fragment order within each.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The worst severity found, notes aside: `None` when the kernel passes.
    pub fn worst(&self) -> Option<Severity> {
        self.findings
            .iter()
            .map(|f| f.severity)
            .filter(|s| *s > Severity::Note)
            .max()
    }

    /// 0: passes (notes at most), 1: degraded, 2: fatal.
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            None | Some(Severity::Note) => 0,
            Some(Severity::Degraded) => 1,
            Some(Severity::Fatal) => 2,
        }
    }

    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// The finding for `CONFIG_<option>` (or a group naming it), if any.
    pub fn finding(&self, option: &str) -> Option<&Finding> {
        let name = format!("CONFIG_{option}");
        self.findings
            .iter()
            .find(|f| f.option == name || f.option.split(" or ").any(|o| o == name))
    }
}

/// Checks `config` against `fragments` merged in order (a later line for an
/// option replaces an earlier one). `symbols`, when known, tells an option
/// the tree lacks from one whose dependencies are off.
pub fn check(config: &Config, fragments: &[Fragment], symbols: Option<&Symbols>) -> Report {
    let arch = config.arch();
    let (requirements, groups) = merge(fragments);
    let applicable: Vec<&Requirement> =
        requirements.iter().filter(|r| r.applies_to(arch)).collect();
    let found = |r: &Requirement| Found::of(config, symbols, &r.option);
    let mut findings = Vec::new();
    for group in &groups {
        let members: Vec<&&Requirement> = applicable
            .iter()
            .filter(|r| r.group.as_deref() == Some(group.name.as_str()))
            .collect();
        // A group whose members were all replaced by later fragments, or
        // that has none on this architecture, has nothing left to judge.
        if members.is_empty() || members.iter().any(|r| satisfied(&r.want, &found(r))) {
            continue;
        }
        findings.push(Finding {
            option: members
                .iter()
                .map(|r| format!("CONFIG_{}", r.option))
                .collect::<Vec<_>>()
                .join(" or "),
            wanted: "at least one of them".into(),
            found: Found::Group(
                members
                    .iter()
                    .map(|r| (r.option.clone(), found(r)))
                    .collect(),
            ),
            severity: group.severity,
            reason: group.reason.clone(),
            fragment: group.fragment.clone(),
            group: Some(group.name.clone()),
        });
    }
    let failed_groups: BTreeSet<String> = findings.iter().filter_map(|f| f.group.clone()).collect();
    for r in &applicable {
        let f = found(r);
        if satisfied(&r.want, &f) {
            continue;
        }
        // A member of a group nobody satisfied is covered by the group's finding.
        if r.group.as_ref().is_some_and(|g| failed_groups.contains(g)) {
            continue;
        }
        findings.push(Finding {
            option: format!("CONFIG_{}", r.option),
            wanted: r.want.to_string(),
            found: f,
            severity: r.severity,
            reason: r.reason.clone(),
            fragment: r.fragment.clone(),
            group: r.group.clone(),
        });
    }
    // Stable: fragment order within each severity.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Report {
        arch,
        fragments: fragments.iter().map(|f| f.name.clone()).collect(),
        checked: applicable.len(),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment() -> Fragment {
        Fragment::parse(
            "t",
            "\
# group kexec, fatal if none: no kexec at all
# degraded, in kexec: no kexec_load
CONFIG_KEXEC=y
# degraded, in kexec: no kexec_file_load
CONFIG_KEXEC_FILE=y
# fatal, y or m: no net
CONFIG_VIRTIO_NET=y
# fatal, arm64: no 16K
CONFIG_ARM64_16K_PAGES=y
# degraded: doorbell
# CONFIG_XSC_SOFT_DOORBELL is not set
# fatal: rings
CONFIG_XSC=y
# note: only noted
CONFIG_MODULE_DECOMPRESS=y
",
        )
        .unwrap()
    }

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn a_satisfying_config_passes() {
        let c = config(
            "CONFIG_ARM64=y\nCONFIG_KEXEC=y\nCONFIG_KEXEC_FILE=y\nCONFIG_VIRTIO_NET=m\n\
             CONFIG_ARM64_16K_PAGES=y\nCONFIG_XSC=y\nCONFIG_MODULE_DECOMPRESS=y\n",
        );
        let r = check(&c, &[fragment()], None);
        assert_eq!(r.findings, []);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.checked, 7);
    }

    #[test]
    fn groups_members_and_severities() {
        // x86_64: the arm64 line does not apply; one kexec member is enough.
        let c = config(
            "CONFIG_X86_64=y\nCONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\n\
             CONFIG_VIRTIO_NET=m\nCONFIG_XSC_SOFT_DOORBELL=y\nCONFIG_XSC=y\n",
        );
        let r = check(&c, &[fragment()], None);
        assert_eq!(r.arch, Some(Arch::X86_64));
        assert_eq!(r.checked, 6);
        let got: Vec<(&str, Severity, String)> = r
            .findings
            .iter()
            .map(|f| (f.option.as_str(), f.severity, f.found.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("CONFIG_KEXEC_FILE", Severity::Degraded, "not set".into()),
                ("CONFIG_XSC_SOFT_DOORBELL", Severity::Degraded, "y".into()),
                (
                    "CONFIG_MODULE_DECOMPRESS",
                    Severity::Note,
                    "absent (the tree lacks it, or its dependencies are off)".into()
                ),
            ]
        );
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn an_unsatisfied_group_is_one_finding() {
        let c = config(
            "CONFIG_X86_64=y\n# CONFIG_KEXEC is not set\nCONFIG_VIRTIO_NET=y\nCONFIG_XSC=y\n",
        );
        let r = check(&c, &[fragment()], None);
        let f = r.finding("KEXEC_FILE").unwrap();
        assert_eq!(f.option, "CONFIG_KEXEC or CONFIG_KEXEC_FILE");
        assert_eq!(f.severity, Severity::Fatal);
        assert_eq!(f.reason, "no kexec at all");
        assert_eq!(
            f.found.to_string(),
            "CONFIG_KEXEC not set; CONFIG_KEXEC_FILE absent (the tree lacks it, or its dependencies are off)"
        );
        assert_eq!(r.findings.iter().filter(|f| f.group.is_some()).count(), 1);
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn absent_options_are_told_apart_with_the_tree_symbols() {
        let c = config(
            "CONFIG_ARM64=y\nCONFIG_KEXEC=y\nCONFIG_VIRTIO_NET=m\n# CONFIG_ARM64_16K_PAGES is not set\n",
        );
        let mut symbols = Symbols::default();
        symbols
            .add_kconfig("config KEXEC\n\tbool\nmenuconfig KEXEC_FILE\nconfig ARM64_16K_PAGES\n");
        let r = check(&c, &[fragment()], Some(&symbols));
        let xsc = r.finding("XSC").unwrap();
        assert_eq!(xsc.found, Found::Unknown);
        assert_eq!(xsc.found.to_string(), "unknown to this kernel tree");
        assert_eq!(
            r.finding("KEXEC_FILE").unwrap().found,
            Found::DependenciesOff
        );
        assert_eq!(r.finding("ARM64_16K_PAGES").unwrap().found, Found::NotSet);
        // An option wanted off is met when the tree does not have it.
        assert!(r.finding("XSC_SOFT_DOORBELL").is_none());
        assert_eq!(r.exit_code(), 2);
    }
}
