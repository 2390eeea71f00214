//! Annotated config fragments (`kconfigs/*.config`): option lines that
//! `merge_config.sh` takes as they are, each preceded by a comment that says
//! what its absence costs (grammar in `kconfigs/README.md`):
//!
//! ```text
//! # group kexec, fatal if none: neither syscall, so no kexec hand-off
//! # degraded, in kexec: no kexec_file_load: …
//! CONFIG_KEXEC_FILE=y
//! # degraded, y or m, arm64: …
//! CONFIG_VIRTIO_BLK=y
//! ```

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::config::{Arch, ConfigError, Setting, Value, parse_line};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("fragment {fragment}: {source}")]
    Config {
        fragment: String,
        #[source]
        source: ConfigError,
    },
    #[error(
        "fragment {fragment}, line {line}: CONFIG_{option} has no annotation above it (\"# fatal|degraded|note[, y or m][, arm64|x86_64][, in GROUP]: why\")"
    )]
    NoAnnotation {
        fragment: String,
        line: usize,
        option: String,
    },
    #[error("fragment {fragment}, line {line}: {what} in {text:?}")]
    Annotation {
        fragment: String,
        line: usize,
        text: String,
        what: String,
    },
    #[error("fragment {fragment}, line {line}: CONFIG_{option} is given twice")]
    Duplicate {
        fragment: String,
        line: usize,
        option: String,
    },
}

/// What a missing or mismatched option costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Reported; never fails a check.
    Note,
    /// The init boots with less; the reason says what.
    Degraded,
    /// The init cannot boot this way.
    Fatal,
}

impl Severity {
    fn parse(s: &str) -> Option<Severity> {
        match s {
            "fatal" => Some(Severity::Fatal),
            "degraded" => Some(Severity::Degraded),
            "note" => Some(Severity::Note),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that a report can align the severities.
        f.pad(match self {
            Severity::Note => "note",
            Severity::Degraded => "degraded",
            Severity::Fatal => "fatal",
        })
    }
}

/// What a requirement accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Exactly this value (`=y`, a string, a number).
    Exactly(Value),
    /// Built in or a module.
    YesOrModule,
    /// Off: `is not set`, or missing from the config altogether.
    Off,
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Exactly(v) => write!(f, "{v}"),
            Want::YesOrModule => f.write_str("y or m"),
            Want::Off => f.write_str("not set"),
        }
    }
}

/// One annotated option of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Without the `CONFIG_` prefix.
    pub option: String,
    /// The line as written, which a kernel build merges.
    pub setting: Setting,
    pub want: Want,
    pub severity: Severity,
    pub reason: String,
    /// Only for this architecture.
    pub arch: Option<Arch>,
    /// Member of this "at least one of" group.
    pub group: Option<String>,
    /// The fragment it comes from.
    pub fragment: String,
}

impl Requirement {
    pub fn applies_to(&self, arch: Option<Arch>) -> bool {
        match (self.arch, arch) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            // A config of no known architecture gets only the general lines.
            (Some(_), None) => false,
        }
    }
}

/// An "at least one of" group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// What it costs when no member is satisfied.
    pub severity: Severity,
    pub reason: String,
    pub fragment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub name: String,
    pub requirements: Vec<Requirement>,
    pub groups: Vec<Group>,
}

struct Annotation {
    severity: Severity,
    modules_ok: bool,
    arch: Option<Arch>,
    group: Option<String>,
    reason: String,
}

impl Fragment {
    /// Parses an annotated fragment. Every option line must have an
    /// annotation on the line directly above it, and every group a member
    /// names must be declared earlier in the same fragment.
    pub fn parse(name: &str, text: &str) -> Result<Fragment, FragmentError> {
        let mut requirements: Vec<Requirement> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut previous: Option<(usize, &str)> = None;
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let option = parse_line(number, line).map_err(|source| FragmentError::Config {
                fragment: name.to_owned(),
                source,
            })?;
            let bad = |what: String| FragmentError::Annotation {
                fragment: name.to_owned(),
                line: number,
                text: line.to_owned(),
                what,
            };
            if let Some(option) = option {
                let Some((above_line, above)) =
                    previous.filter(|(n, text)| *n + 1 == number && !text.trim().is_empty())
                else {
                    return Err(FragmentError::NoAnnotation {
                        fragment: name.to_owned(),
                        line: number,
                        option: option.name,
                    });
                };
                let a = parse_annotation(above).map_err(|what| FragmentError::Annotation {
                    fragment: name.to_owned(),
                    line: above_line,
                    text: above.to_owned(),
                    what,
                })?;
                if let Some(g) = &a.group
                    && !groups.iter().any(|x| &x.name == g)
                {
                    return Err(bad(format!("group {g:?} is not declared above")));
                }
                if requirements.iter().any(|r| r.option == option.name) {
                    return Err(FragmentError::Duplicate {
                        fragment: name.to_owned(),
                        line: number,
                        option: option.name,
                    });
                }
                let want = match (&option.setting, a.modules_ok) {
                    (Setting::NotSet, false) => Want::Off,
                    (Setting::Set(Value::Yes | Value::Module), true) => Want::YesOrModule,
                    (Setting::Set(v), false) => Want::Exactly(v.clone()),
                    (_, true) => {
                        return Err(bad(
                            "\"y or m\" qualifies only an option set to y or m".into()
                        ));
                    }
                };
                requirements.push(Requirement {
                    option: option.name,
                    setting: option.setting,
                    want,
                    severity: a.severity,
                    reason: a.reason,
                    arch: a.arch,
                    group: a.group,
                    fragment: name.to_owned(),
                });
            } else if let Some(rest) = line.trim().strip_prefix("# group ") {
                let group = parse_group(rest, name).map_err(bad)?;
                if groups.iter().any(|g| g.name == group.name) {
                    return Err(bad(format!("group {:?} is declared twice", group.name)));
                }
                groups.push(group);
            }
            previous = Some((number, line));
        }
        Ok(Fragment {
            name: name.to_owned(),
            requirements,
            groups,
        })
    }
}

/// `fatal, y or m, arm64, in kexec: reason` after the `# `.
fn parse_annotation(line: &str) -> Result<Annotation, String> {
    let body = line
        .trim()
        .strip_prefix("# ")
        .ok_or("an annotation is a comment line")?;
    let (head, reason) = body
        .split_once(": ")
        .ok_or("no \": \" between the severity and the reason")?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("the reason is empty".into());
    }
    let mut parts = head.split(',').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let severity = Severity::parse(first)
        .ok_or_else(|| format!("{first:?} is not a severity (fatal, degraded or note)"))?;
    let mut a = Annotation {
        severity,
        modules_ok: false,
        arch: None,
        group: None,
        reason: reason.to_owned(),
    };
    for q in parts {
        if q == "y or m" {
            a.modules_ok = true;
        } else if let Some(arch) = Arch::from_name(q) {
            a.arch = Some(arch);
        } else if let Some(g) = q.strip_prefix("in ") {
            a.group = Some(g.trim().to_owned());
        } else {
            return Err(format!(
                "{q:?} is not a qualifier (y or m, arm64, x86_64, in GROUP)"
            ));
        }
    }
    Ok(a)
}

/// `NAME, <severity> if none: reason` after `# group `.
fn parse_group(rest: &str, fragment: &str) -> Result<Group, String> {
    let (head, reason) = rest
        .split_once(": ")
        .ok_or("no \": \" before the group's reason")?;
    let (name, severity) = head
        .split_once(',')
        .ok_or("expected \"# group NAME, <severity> if none: why\"")?;
    let severity = severity
        .trim()
        .strip_suffix(" if none")
        .and_then(Severity::parse)
        .ok_or("expected \"<severity> if none\" after the group's name")?;
    let name = name.trim();
    if name.is_empty() || name.contains(' ') {
        return Err(format!("{name:?} is not a group name"));
    }
    Ok(Group {
        name: name.to_owned(),
        severity,
        reason: reason.trim().to_owned(),
        fragment: fragment.to_owned(),
    })
}

/// The requirements of `fragments` in order, where a later fragment's line
/// for an option replaces an earlier one (as `merge_config.sh` does), and
/// the groups they declare.
pub fn merge(fragments: &[Fragment]) -> (Vec<Requirement>, Vec<Group>) {
    let mut out: Vec<Requirement> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for f in fragments {
        for r in &f.requirements {
            out.retain(|o| o.option != r.option);
            out.push(r.clone());
        }
        for g in &f.groups {
            groups.retain(|o| o.name != g.name);
            groups.push(g.clone());
        }
    }
    (out, groups)
}

/// The fragments merged and rendered for one architecture: the option lines
/// a kernel build appends to its base config, one per option, in order.
pub fn render(fragments: &[Fragment], arch: Arch) -> String {
    let (requirements, _) = merge(fragments);
    let mut out = String::new();
    for r in requirements.iter().filter(|r| r.applies_to(Some(arch))) {
        out.push_str(&r.setting.line(&r.option));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Prose at the top is fine.

# group kexec, fatal if none: no kexec hand-off
# degraded, in kexec: no kexec_load
CONFIG_KEXEC=y
# degraded, in kexec: no kexec_file_load
CONFIG_KEXEC_FILE=y
# fatal, y or m, arm64: no console
CONFIG_SERIAL_AMBA_PL011=y
# note: a string
CONFIG_LOCALVERSION=\"-phase\"
# degraded: soft doorbell traps
# CONFIG_XSC_SOFT_DOORBELL is not set
";

    #[test]
    fn parses_annotations_and_groups() {
        let f = Fragment::parse("sample", SAMPLE).unwrap();
        assert_eq!(f.groups.len(), 1);
        assert_eq!(f.groups[0].severity, Severity::Fatal);
        assert_eq!(f.groups[0].reason, "no kexec hand-off");
        let names: Vec<&str> = f.requirements.iter().map(|r| r.option.as_str()).collect();
        assert_eq!(
            names,
            [
                "KEXEC",
                "KEXEC_FILE",
                "SERIAL_AMBA_PL011",
                "LOCALVERSION",
                "XSC_SOFT_DOORBELL"
            ]
        );
        let pl011 = &f.requirements[2];
        assert_eq!(pl011.want, Want::YesOrModule);
        assert_eq!(pl011.arch, Some(Arch::Arm64));
        assert_eq!(pl011.severity, Severity::Fatal);
        assert_eq!(f.requirements[0].group.as_deref(), Some("kexec"));
        assert_eq!(f.requirements[0].want, Want::Exactly(Value::Yes));
        assert_eq!(f.requirements[4].want, Want::Off);
        assert_eq!(
            f.requirements[3].want,
            Want::Exactly(Value::Text("-phase".into()))
        );
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        let cases = [
            ("CONFIG_A=y\n", "has no annotation"),
            ("# why\n\nCONFIG_A=y\n", "has no annotation"),
            ("# fatal why\nCONFIG_A=y\n", "no \": \""),
            ("# bad: why\nCONFIG_A=y\n", "is not a severity"),
            ("# fatal, maybe: why\nCONFIG_A=y\n", "is not a qualifier"),
            ("# fatal: \nCONFIG_A=y\n", "no \": \""),
            ("# fatal, in g: why\nCONFIG_A=y\n", "is not declared above"),
            (
                "# fatal, y or m: why\n# CONFIG_A is not set\n",
                "qualifies only",
            ),
            (
                "# fatal: a\nCONFIG_A=y\n# fatal: b\nCONFIG_A=m\n",
                "given twice",
            ),
            ("# group g fatal: why\n", "expected"),
            ("# group g, fatal: why\n", "if none"),
            ("# fatal: a\nCONFIG_A=maybe\n", "bad value"),
        ];
        for (text, want) in cases {
            let e = Fragment::parse("t", text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn later_fragments_win_and_render_per_arch() {
        let a = Fragment::parse("a", SAMPLE).unwrap();
        let b = Fragment::parse(
            "b",
            "# fatal: kexec_load only\nCONFIG_KEXEC=y\n# fatal: not this\n# CONFIG_KEXEC_FILE is not set\n",
        )
        .unwrap();
        let (merged, groups) = merge(&[a.clone(), b.clone()]);
        let file = merged.iter().find(|r| r.option == "KEXEC_FILE").unwrap();
        assert_eq!(file.want, Want::Off);
        assert_eq!(file.fragment, "b");
        assert_eq!(groups.len(), 1);
        assert_eq!(
            render(&[a.clone(), b], Arch::X86_64),
            "CONFIG_LOCALVERSION=\"-phase\"\n# CONFIG_XSC_SOFT_DOORBELL is not set\n\
             CONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\n"
        );
        assert!(render(&[a], Arch::Arm64).contains("CONFIG_SERIAL_AMBA_PL011=y\n"));
    }
}
