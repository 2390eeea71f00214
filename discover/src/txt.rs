//! What a provider says about itself in its TXT record: the keys of the
//! crate documentation, as `key=value` strings (RFC 6763 §6).
//!
//! Keys are matched case-insensitively and the first occurrence of a key
//! wins (§6.4); a string without `=` or with an unknown key is ignored, so
//! later versions can add keys. Values are checked here, so nothing that
//! reaches a URL or a console line is unchecked.

use thiserror::Error;

/// The TXT record format version this crate writes and reads.
pub const TXTVERS: &str = "1";

/// The longest `path` value: with `path=` it stays within one 255-byte
/// TXT string.
const MAX_PATH: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxtError {
    #[error("txtvers={0:?}: only version {TXTVERS} is understood")]
    Version(String),
    #[error("scheme={0:?}: expected http or https")]
    Scheme(String),
    #[error(
        "path={0:?}: expected an absolute path of at most {MAX_PATH} URL path characters (no query, fragment or user)"
    )]
    Path(String),
    #[error("priority={0:?}: expected an integer from 0 to 65535")]
    Priority(String),
    #[error(
        "{key}={value:?}: expected a comma-separated list of names of letters, digits, '.', '_', '-' and '+'"
    )]
    List { key: &'static str, value: String },
    #[error("the {key} value is not UTF-8")]
    Utf8 { key: &'static str },
}

/// A provider's advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Base path of the provider tree on the server, starting with `/`.
    pub path: String,
    pub https: bool,
    /// Channels served; `None` serves every channel.
    pub channels: Option<Vec<String>>,
    /// Architectures served (`x86_64`, `aarch64`); `None` serves every one.
    pub arches: Option<Vec<String>>,
    /// Lower first; the default is 0.
    pub priority: u16,
}

impl Default for Advert {
    fn default() -> Advert {
        Advert {
            path: "/".into(),
            https: false,
            channels: None,
            arches: None,
            priority: 0,
        }
    }
}

impl Advert {
    /// Reads the TXT strings of a record.
    pub fn from_txt(strings: &[Vec<u8>]) -> Result<Advert, TxtError> {
        let get = |key: &'static str| -> Result<Option<&str>, TxtError> {
            let value = strings.iter().find_map(|s| {
                let eq = s.iter().position(|&b| b == b'=')?;
                s[..eq]
                    .eq_ignore_ascii_case(key.as_bytes())
                    .then(|| &s[eq + 1..])
            });
            value
                .map(|v| std::str::from_utf8(v).map_err(|_| TxtError::Utf8 { key }))
                .transpose()
        };
        if let Some(v) = get("txtvers")?
            && v != TXTVERS
        {
            return Err(TxtError::Version(v.into()));
        }
        let https = match get("scheme")? {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) => return Err(TxtError::Scheme(s.into())),
        };
        let path = match get("path")? {
            None => "/".to_owned(),
            Some(p) => check_path(p)?.to_owned(),
        };
        let priority = match get("priority")? {
            None => 0,
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TxtError::Priority(p.into()));
                }
                p.parse().map_err(|_| TxtError::Priority(p.into()))?
            }
        };
        Ok(Advert {
            path,
            https,
            channels: get("channels")?.map(|v| list("channels", v)).transpose()?,
            arches: get("arches")?.map(|v| list("arches", v)).transpose()?,
            priority,
        })
    }

    /// The TXT strings, `txtvers` first (RFC 6763 §6.7); defaults are left
    /// out except the path and scheme, which readers of the record (people
    /// running `avahi-browse`) want to see.
    pub fn to_txt(&self) -> Result<Vec<Vec<u8>>, TxtError> {
        check_path(&self.path)?;
        let mut strings = vec![
            format!("txtvers={TXTVERS}"),
            format!("path={}", self.path),
            format!("scheme={}", if self.https { "https" } else { "http" }),
        ];
        for (key, value) in [("channels", &self.channels), ("arches", &self.arches)] {
            if let Some(names) = value {
                let joined = names.join(",");
                list(key, &joined)?;
                strings.push(format!("{key}={joined}"));
            }
        }
        if self.priority != 0 {
            strings.push(format!("priority={}", self.priority));
        }
        Ok(strings.into_iter().map(String::into_bytes).collect())
    }

    /// Whether `channel` is served.
    pub fn serves_channel(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == channel))
    }

    /// Whether `arch` is served.
    pub fn serves_arch(&self, arch: &str) -> bool {
        self.arches
            .as_ref()
            .is_none_or(|a| a.iter().any(|x| x == arch))
    }
}

/// An absolute URL path: RFC 3986 `pchar`s and `/`, without `@` (a URL the
/// init reads refuses user info) — so the value cannot change the scheme,
/// host or port of the URL it is appended to.
fn check_path(path: &str) -> Result<&str, TxtError> {
    let ok = path.starts_with('/')
        && path.len() <= MAX_PATH
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/%!$&'()*+,;=:".contains(&b));
    if ok {
        Ok(path)
    } else {
        Err(TxtError::Path(path.into()))
    }
}

/// `a,b,c`, spaces around the names allowed; an empty value is a list of
/// none.
fn list(key: &'static str, value: &str) -> Result<Vec<String>, TxtError> {
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        {
            return Err(TxtError::List {
                key,
                value: value.into(),
            });
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(strings: &[&str]) -> Vec<Vec<u8>> {
        strings.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        assert_eq!(Advert::from_txt(&[]), Ok(Advert::default()));
        assert_eq!(
            Advert::from_txt(&txt(&["", "path", "=x"])),
            Ok(Advert::default())
        );
        let a = Advert::default();
        assert!(a.serves_channel("anything") && a.serves_arch("riscv64"));
    }

    #[test]
    fn reads_every_key() {
        let a = Advert::from_txt(&txt(&[
            "TxtVers=1",
            "PATH=/boot/tree/",
            "scheme=HTTPS",
            "channels=stable, beta",
            "arches=x86_64",
            "priority=7",
            "unknown=ignored",
            "path=/second/is/ignored",
        ]))
        .unwrap();
        assert_eq!(
            a,
            Advert {
                path: "/boot/tree/".into(),
                https: true,
                channels: Some(vec!["stable".into(), "beta".into()]),
                arches: Some(vec!["x86_64".into()]),
                priority: 7,
            }
        );
        assert!(a.serves_channel("beta") && !a.serves_channel("Beta"));
        assert!(a.serves_arch("x86_64") && !a.serves_arch("aarch64"));
        assert_eq!(Advert::from_txt(&a.to_txt().unwrap()), Ok(a));
        // An empty list serves nothing.
        let none = Advert::from_txt(&txt(&["channels="])).unwrap();
        assert!(!none.serves_channel("stable"));
    }

    #[test]
    fn refuses_values_that_would_change_the_url_or_the_console() {
        let cases: &[(&str, TxtError)] = &[
            ("txtvers=2", TxtError::Version("2".into())),
            ("scheme=ftp", TxtError::Scheme("ftp".into())),
            ("path=boot", TxtError::Path("boot".into())),
            ("path=/a?b", TxtError::Path("/a?b".into())),
            ("path=/a#b", TxtError::Path("/a#b".into())),
            ("path=/@evil", TxtError::Path("/@evil".into())),
            ("path=/a b", TxtError::Path("/a b".into())),
            ("path=/\x1b[2J", TxtError::Path("/\x1b[2J".into())),
            ("priority=-1", TxtError::Priority("-1".into())),
            ("priority=+1", TxtError::Priority("+1".into())),
            ("priority=65536", TxtError::Priority("65536".into())),
            (
                "arches=x86_64;rm",
                TxtError::List {
                    key: "arches",
                    value: "x86_64;rm".into(),
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(Advert::from_txt(&txt(&[s])), Err(want.clone()), "{s}");
        }
        assert_eq!(
            Advert::from_txt(&[b"path=/\xff".to_vec()]),
            Err(TxtError::Utf8 { key: "path" })
        );
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert_eq!(
            Advert {
                path: long.clone(),
                ..Advert::default()
            }
            .to_txt(),
            Err(TxtError::Path(long))
        );
    }

    #[test]
    fn writes_txtvers_first_and_leaves_out_defaults() {
        let strings = Advert::default().to_txt().unwrap();
        assert_eq!(strings, txt(&["txtvers=1", "path=/", "scheme=http"]));
    }
}
