//! A kernel `.config` as text: `CONFIG_X=y|m|"string"|123|0x10` and
//! `# CONFIG_X is not set`, everything else a comment or blank.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("line {line}: {text:?} is neither CONFIG_NAME=VALUE, a comment nor blank")]
    Line { line: usize, text: String },
    #[error(
        "line {line}: {name} has the bad value {value:?} (expected y, m, n, a number or a quoted string)"
    )]
    Value {
        line: usize,
        name: String,
        value: String,
    },
    #[error("the text holds no CONFIG_ line at all, so it is no kernel config")]
    Empty,
}

/// The value of a set option.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Yes,
    Module,
    /// A quoted string, unescaped.
    Text(String),
    /// A decimal or hex number, as written.
    Number(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::Text(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            Value::Number(n) => f.write_str(n),
        }
    }
}

/// What a config line says about an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Set(Value),
    /// `# CONFIG_X is not set`, or `CONFIG_X=n` in a fragment.
    NotSet,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Set(v) => write!(f, "{v}"),
            Setting::NotSet => f.write_str("not set"),
        }
    }
}

impl Setting {
    /// The line a `.config` or fragment would hold for `name` (without the
    /// `CONFIG_` prefix).
    pub fn line(&self, name: &str) -> String {
        match self {
            Setting::Set(v) => format!("CONFIG_{name}={v}"),
            Setting::NotSet => format!("# CONFIG_{name} is not set"),
        }
    }
}

/// One option line: its name without `CONFIG_`, and its setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionLine {
    pub name: String,
    pub setting: Setting,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b.is_ascii_lowercase()
        })
}

/// Parses one line; `Ok(None)` for blanks and plain comments.
pub fn parse_line(line: usize, text: &str) -> Result<Option<OptionLine>, ConfigError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(comment) = t.strip_prefix('#') {
        let name = comment
            .trim()
            .strip_prefix("CONFIG_")
            .and_then(|r| r.strip_suffix(" is not set"));
        return Ok(name.filter(|n| is_name(n)).map(|n| OptionLine {
            name: n.to_owned(),
            setting: Setting::NotSet,
        }));
    }
    let bad_line = || ConfigError::Line {
        line,
        text: text.to_owned(),
    };
    let (name, value) = t
        .strip_prefix("CONFIG_")
        .and_then(|r| r.split_once('='))
        .ok_or_else(bad_line)?;
    if !is_name(name) {
        return Err(bad_line());
    }
    let bad_value = || ConfigError::Value {
        line,
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let setting = match value {
        "y" => Setting::Set(Value::Yes),
        "m" => Setting::Set(Value::Module),
        "n" => Setting::NotSet,
        v if v.starts_with('"') => Setting::Set(Value::Text(unquote(v).ok_or_else(bad_value)?)),
        v if is_number(v) => Setting::Set(Value::Number(v.to_owned())),
        _ => return Err(bad_value()),
    };
    Ok(Some(OptionLine {
        name: name.to_owned(),
        setting,
    }))
}

fn is_number(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else {
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

/// `"a\"b"` → `a"b`; `None` unless the quotes close at the very end.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// The machine a config is for, from `CONFIG_X86_64` or `CONFIG_ARM64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// The name the fragments use as a qualifier (`x86_64`, `arm64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed `.config`: every option it mentions, by name without `CONFIG_`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub options: BTreeMap<String, Setting>,
}

impl Config {
    /// Parses `.config` text (as `make` writes it, `/proc/config.gz`
    /// inflated, or IKCONFIG). A later line for the same option wins, as in
    /// kconfig itself.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut options = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(o) = parse_line(i + 1, line)? {
                options.insert(o.name, o.setting);
            }
        }
        if options.is_empty() {
            return Err(ConfigError::Empty);
        }
        Ok(Config { options })
    }

    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.options.get(name)
    }

    /// The architecture, if the config names one of ours.
    pub fn arch(&self) -> Option<Arch> {
        let on = |n| self.get(n) == Some(&Setting::Set(Value::Yes));
        if on("X86_64") {
            Some(Arch::X86_64)
        } else if on("ARM64") {
            Some(Arch::Arm64)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let text = "#\n# Automatically generated file; DO NOT EDIT.\n\
            CONFIG_ARM64=y\nCONFIG_VIRTIO_NET=m\n# CONFIG_KEXEC_FILE is not set\n\
            CONFIG_LOCALVERSION=\"-phase \\\"x\\\"\"\nCONFIG_NR_CPUS=256\nCONFIG_ILLEGAL_POINTER_VALUE=0xdead000000000000\n\
            CONFIG_PANIC_TIMEOUT=-1\nCONFIG_FOO=n\n\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.arch(), Some(Arch::Arm64));
        assert_eq!(c.get("VIRTIO_NET"), Some(&Setting::Set(Value::Module)));
        assert_eq!(c.get("KEXEC_FILE"), Some(&Setting::NotSet));
        assert_eq!(c.get("FOO"), Some(&Setting::NotSet));
        assert_eq!(
            c.get("LOCALVERSION"),
            Some(&Setting::Set(Value::Text("-phase \"x\"".into())))
        );
        assert_eq!(
            c.get("NR_CPUS"),
            Some(&Setting::Set(Value::Number("256".into())))
        );
        assert_eq!(
            c.get("PANIC_TIMEOUT"),
            Some(&Setting::Set(Value::Number("-1".into())))
        );
        assert_eq!(c.get("ABSENT"), None);
        // Lines round-trip.
        assert_eq!(
            c.get("LOCALVERSION").unwrap().line("LOCALVERSION"),
            "CONFIG_LOCALVERSION=\"-phase \\\"x\\\"\""
        );
        assert_eq!(
            Setting::NotSet.line("KEXEC_FILE"),
            "# CONFIG_KEXEC_FILE is not set"
        );
    }

    #[test]
    fn errors() {
        for (text, want) in [
            (
                "CONFIG_A=y\nhello\n",
                ConfigError::Line {
                    line: 2,
                    text: "hello".into(),
                },
            ),
            (
                "CONFIG_A=yes\n",
                ConfigError::Value {
                    line: 1,
                    name: "A".into(),
                    value: "yes".into(),
                },
            ),
            (
                "CONFIG_A=\"open\n",
                ConfigError::Value {
                    line: 1,
                    name: "A".into(),
                    value: "\"open".into(),
                },
            ),
            ("# just a comment\n\n", ConfigError::Empty),
            (
                "CONFIG_=y\n",
                ConfigError::Line {
                    line: 1,
                    text: "CONFIG_=y".into(),
                },
            ),
        ] {
            assert_eq!(Config::parse(text), Err(want), "{text:?}");
        }
    }
}
