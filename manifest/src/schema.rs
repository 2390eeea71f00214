//! The signed payload: what the next stage is, for which machines, and until
//! when. Parsed only after its signatures were accepted, and then strictly:
//! unknown fields are refused, every field is checked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ManifestError;
use crate::encoding::unhex;

/// The `type` of a manifest payload. Each signed document type has its own, so
/// a signature over one can never be taken for another.
pub const MANIFEST_TYPE: &str = "phase.manifest";
/// The spec version this crate writes.
pub const SPEC_VERSION: &str = "1.0";
/// The major spec version this crate reads. A payload with another major is
/// refused before its other fields are looked at. Minor versions only clarify.
/// A field added later is optional and left out of payloads that do not use
/// it, so those read as before; a payload that carries one is refused by
/// verifiers that predate it (unknown fields are refused), so a publisher
/// that sets it knows that every machine accepting the manifest honours it.
pub const SPEC_MAJOR: u32 = 1;
/// The kernels' `COMMAND_LINE_SIZE` (2048 on x86_64 and arm64) less the NUL.
pub const MAX_CMDLINE: usize = 2047;
/// The largest artifact a manifest may declare (1 TiB). Keeps size arithmetic
/// far from overflow; the init applies its own, memory-based limit.
pub const MAX_ARTIFACT_SIZE: u64 = 1 << 40;

/// A CPU architecture, spelled as the kernel and Rust spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture this code was compiled for, if it is one of ours.
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ManifestError;

    /// Accepts only the canonical names; Debian's and others' spellings get a
    /// hint instead of a silent alias, so that a tree has one path per arch.
    fn from_str(s: &str) -> Result<Arch, ManifestError> {
        match s {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            _ => Err(ManifestError::ArchUnknown {
                found: s.to_owned(),
                hint: match s.to_ascii_lowercase().as_str() {
                    "amd64" | "x64" | "x86-64" | "x86_64" => "; amd64 is spelled x86_64",
                    "arm64" | "armv8" | "aarch64" => "; arm64 is spelled aarch64",
                    _ => "",
                },
            }),
        }
    }
}

/// How the init hands the machine to the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// Load `kernel` (+ `initrd`, `dtb`) and `cmdline` with kexec.
    Kexec,
    /// Mount `root_image` as the lower layer of an overlay and switch_root.
    SwitchRoot,
}

impl Handoff {
    pub fn as_str(self) -> &'static str {
        match self {
            Handoff::Kexec => "kexec",
            Handoff::SwitchRoot => "switch_root",
        }
    }
}

/// One file the next stage needs. `path` is relative to the provider's base
/// URL (the directory that holds `<channel>/<arch>/manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl Artifact {
    /// The digest as bytes. Valid after [`Manifest::from_payload`].
    pub fn digest(&self) -> [u8; 32] {
        unhex::<32>(&self.sha256).unwrap_or([0; 32])
    }

    fn check(&self, name: &'static str) -> Result<(), ManifestError> {
        if !is_relative_path(&self.path) {
            return Err(ManifestError::ArtifactPath {
                name,
                path: self.path.clone(),
            });
        }
        if unhex::<32>(&self.sha256).is_none() {
            return Err(ManifestError::ArtifactDigestSyntax {
                name,
                value: self.sha256.clone(),
            });
        }
        if self.size == 0 || self.size > MAX_ARTIFACT_SIZE {
            return Err(ManifestError::ArtifactSize {
                name,
                size: self.size,
                max: MAX_ARTIFACT_SIZE,
            });
        }
        Ok(())
    }
}

/// The artifacts of a manifest. Which ones must be present depends on the
/// hand-off (see [`Manifest::from_payload`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_image: Option<Artifact>,
}

impl Artifacts {
    /// Each present artifact with its name, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Artifact)> {
        [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("dtb", &self.dtb),
            ("root_image", &self.root_image),
        ]
        .into_iter()
        .filter_map(|(name, a)| a.as_ref().map(|a| (name, a)))
    }
}

/// The signed payload of a boot manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `MAJOR.MINOR`; see [`SPEC_MAJOR`].
    pub spec_version: String,
    pub channel: String,
    pub arch: Arch,
    /// Absent: the manifest fits every board of `arch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// Monotonic release number; see the version floor in [`crate::policy`].
    pub version: u64,
    /// The publisher's statement that no machine may boot a version below
    /// this one from now on: a machine that hands off under this manifest
    /// stores it as its floor (if higher than the one it has). At most
    /// `version`. Absent: the stored floor stays as it is. A machine never
    /// raises its floor on its own judgement, so accepting a bad release
    /// cannot lock a machine out of the good one before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u64>,
    /// Seconds since the epoch.
    pub issued_at: u64,
    /// Seconds since the epoch; the manifest is refused from this second on.
    pub expires_at: u64,
    pub handoff: Handoff,
    /// The next kernel's command line, used verbatim. Empty for switch_root.
    pub cmdline: String,
    pub artifacts: Artifacts,
}

/// The two fields read before the strict parse, so that a payload of another
/// type or major version is refused for that reason and not as a syntax error.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    spec_version: String,
}

/// Checks `type` and the spec major of a payload.
pub(crate) fn check_header(payload: &[u8], expected: &'static str) -> Result<(), ManifestError> {
    let header: Header = serde_json::from_slice(payload)
        .map_err(|source| ManifestError::PayloadSyntax { source })?;
    if header.kind != expected {
        return Err(ManifestError::PayloadType {
            found: header.kind,
            expected,
        });
    }
    let major = header
        .spec_version
        .split_once('.')
        .filter(|(major, minor)| is_number(major) && is_number(minor))
        .and_then(|(major, _)| major.parse::<u32>().ok());
    if major != Some(SPEC_MAJOR) {
        return Err(ManifestError::SpecVersion {
            found: header.spec_version,
            supported_major: SPEC_MAJOR,
        });
    }
    Ok(())
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

impl Manifest {
    /// Parses and checks a payload whose signatures were already accepted.
    pub fn from_payload(payload: &[u8]) -> Result<Manifest, ManifestError> {
        check_header(payload, MANIFEST_TYPE)?;
        let manifest: Manifest = serde_json::from_slice(payload)
            .map_err(|source| ManifestError::PayloadSyntax { source })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The payload bytes `phase publish` signs: pretty JSON, fields in
    /// declaration order, trailing newline.
    pub fn to_payload(&self) -> Vec<u8> {
        // Strings, integers, enums and options always serialise.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Every check that needs only the manifest itself.
    pub fn check(&self) -> Result<(), ManifestError> {
        check_name("channel", &self.channel)?;
        if let Some(board) = &self.board {
            check_name("board", board)?;
        }
        if let Some(floor) = self.floor
            && floor > self.version
        {
            return Err(ManifestError::FloorAboveVersion {
                floor,
                version: self.version,
            });
        }
        if self.issued_at > self.expires_at {
            return Err(ManifestError::Validity {
                issued_at: self.issued_at,
                expires_at: self.expires_at,
            });
        }
        if self.cmdline.len() > MAX_CMDLINE {
            return Err(ManifestError::CmdlineTooLong {
                len: self.cmdline.len(),
                max: MAX_CMDLINE,
            });
        }
        if let Some((offset, byte)) = self
            .cmdline
            .bytes()
            .enumerate()
            .find(|(_, b)| b.is_ascii_control())
        {
            return Err(ManifestError::CmdlineControl { byte, offset });
        }
        for (name, artifact) in self.artifacts.iter() {
            artifact.check(name)?;
        }
        let a = &self.artifacts;
        // What each hand-off needs and what it can use at all.
        let needs: &[&str] = match self.handoff {
            Handoff::Kexec => &["kernel"],
            Handoff::SwitchRoot => &["root_image"],
        };
        let takes: &[&str] = match self.handoff {
            Handoff::Kexec => &["kernel", "initrd", "dtb"],
            Handoff::SwitchRoot => &["root_image"],
        };
        let present = [
            ("kernel", a.kernel.is_some()),
            ("initrd", a.initrd.is_some()),
            ("dtb", a.dtb.is_some()),
            ("root_image", a.root_image.is_some()),
        ];
        let handoff = self.handoff.as_str();
        // A missing artifact is the more useful report, so it comes first.
        let missing = present
            .iter()
            .find(|(name, present)| !present && needs.contains(name))
            .map(|(name, _)| ("needs", *name));
        let extra = present
            .iter()
            .find(|(name, present)| *present && !takes.contains(name))
            .map(|(name, _)| ("does not take", *name));
        if let Some((problem, name)) = missing.or(extra) {
            return Err(ManifestError::HandoffArtifacts {
                handoff,
                problem,
                name,
            });
        }
        if self.handoff == Handoff::SwitchRoot && !self.cmdline.is_empty() {
            return Err(ManifestError::HandoffCmdline {
                cmdline: self.cmdline.clone(),
            });
        }
        Ok(())
    }
}

/// Channel and board names become path components on providers, so they
/// follow the init's `phase.channel=` rule.
pub fn check_name(field: &'static str, value: &str) -> Result<(), ManifestError> {
    let ok = (1..=64).contains(&value.len())
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::NameSyntax {
            field,
            value: value.to_owned(),
        })
    }
}

/// A relative path that stays under the base it is joined to: `/`-separated
/// segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`, at most 255 bytes.
/// No scheme, query, fragment or percent-encoding can hide in it.
pub fn is_relative_path(path: &str) -> bool {
    path.len() <= 255
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            kind: MANIFEST_TYPE.into(),
            spec_version: SPEC_VERSION.into(),
            channel: "stable".into(),
            arch: Arch::X86_64,
            board: None,
            version: 5,
            floor: None,
            issued_at: 1_700_000_000,
            expires_at: 1_700_086_400,
            handoff: Handoff::Kexec,
            cmdline: "console=ttyS0 quiet".into(),
            artifacts: Artifacts {
                kernel: Some(Artifact {
                    path: "blobs/sha256/aa".into(),
                    sha256: "ab".repeat(32),
                    size: 10,
                }),
                ..Artifacts::default()
            },
        }
    }

    #[test]
    fn payload_round_trips() {
        let m = sample();
        assert_eq!(Manifest::from_payload(&m.to_payload()).unwrap(), m);
    }

    #[test]
    fn each_field_check_refuses_and_names_the_value() {
        type Edit = fn(&mut Manifest);
        let table: &[(Edit, &str)] = &[
            (|m| m.channel = "../etc".into(), "channel \"../etc\""),
            (|m| m.channel = String::new(), "channel \"\""),
            (|m| m.board = Some("a/b".into()), "board \"a/b\""),
            (|m| m.issued_at = m.expires_at + 1, "issued_at 1700086401"),
            (|m| m.floor = Some(6), "floor 6 is above the version 5"),
            (|m| m.cmdline = "a".repeat(2048), "cmdline is 2048 bytes"),
            (
                |m| m.cmdline = "a\nb".into(),
                "control character 0x0a at offset 1",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().path = "../x".into(),
                "path \"../x\"",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().path = "/etc/x".into(),
                "path \"/etc/x\"",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().path = "http://h/x".into(),
                "path \"http://h/x\"",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().path = "a//b".into(),
                "path \"a//b\"",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().path = "a%2e%2e".into(),
                "path \"a%2e%2e\"",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().sha256 = "AB".repeat(32),
                "sha256 \"ABAB",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().size = 0,
                "kernel: size 0",
            ),
            (
                |m| m.artifacts.kernel.as_mut().unwrap().size = MAX_ARTIFACT_SIZE + 1,
                "size 1099511627777",
            ),
            (|m| m.artifacts.kernel = None, "hand-off kexec needs kernel"),
            (
                |m| m.artifacts.root_image = m.artifacts.kernel.clone(),
                "hand-off kexec does not take root_image",
            ),
            (
                |m| {
                    m.handoff = Handoff::SwitchRoot;
                    m.artifacts.root_image = m.artifacts.kernel.take();
                },
                "switch_root takes no cmdline, got \"console=ttyS0 quiet\"",
            ),
            (
                |m| m.handoff = Handoff::SwitchRoot,
                "hand-off switch_root needs root_image",
            ),
        ];
        for (edit, expected) in table {
            let mut m = sample();
            edit(&mut m);
            let error = Manifest::from_payload(&m.to_payload())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn the_floor_is_optional_and_absent_from_payloads_without_it() {
        // Payloads signed before the field existed read the same.
        let without = String::from_utf8(sample().to_payload()).unwrap();
        assert!(!without.contains("floor"), "{without}");
        let mut m = sample();
        m.floor = Some(5);
        let with = String::from_utf8(m.to_payload()).unwrap();
        assert!(with.contains("\"version\": 5,\n  \"floor\": 5,"), "{with}");
        assert_eq!(Manifest::from_payload(with.as_bytes()).unwrap(), m);
        // Equal to the version is the usual case: this release and later.
        m.floor = Some(0);
        assert!(Manifest::from_payload(&m.to_payload()).is_ok());
    }

    #[test]
    fn header_is_checked_before_the_strict_parse() {
        let table = [
            (
                r#"{"type":"phase.rotation","spec_version":"1.0"}"#,
                "payload type is \"phase.rotation\"",
            ),
            (
                r#"{"type":"phase.manifest","spec_version":"2.0","new":1}"#,
                "spec_version \"2.0\" is not supported",
            ),
            (
                r#"{"type":"phase.manifest","spec_version":"1"}"#,
                "spec_version \"1\"",
            ),
            (
                r#"{"type":"phase.manifest","spec_version":"01.0x"}"#,
                "spec_version \"01.0x\"",
            ),
            (
                r#"{"type":"phase.manifest","spec_version":"1.7","insecure":true}"#,
                "expected shape",
            ),
        ];
        for (payload, expected) in table {
            let error = Manifest::from_payload(payload.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        // Parsers differ on which duplicate wins; a signed payload must not
        // mean one thing to the verifier and another to a reader.
        let payload = String::from_utf8(sample().to_payload()).unwrap();
        let twice = payload.replacen("\"version\": 5,", "\"version\": 5,\n  \"version\": 6,", 1);
        assert_ne!(twice, payload);
        match Manifest::from_payload(twice.as_bytes()) {
            Err(ManifestError::PayloadSyntax { source: e }) => {
                assert!(e.to_string().contains("duplicate field `version`"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arch_names_are_canonical_with_hints() {
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Aarch64);
        let table = [
            ("arm64", "arm64 is spelled aarch64"),
            ("amd64", "amd64 is spelled x86_64"),
            ("X86_64", "amd64 is spelled x86_64"),
            ("riscv64", "expected x86_64 or aarch64)"),
        ];
        for (input, expected) in table {
            let error = input.parse::<Arch>().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?}");
            assert!(error.contains(&format!("{input:?}")), "{error:?}");
        }
    }
}
