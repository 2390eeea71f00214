//! The image description mkimage writes to [`crate::layout::IMAGE_INFO`].

use serde::{Deserialize, Serialize};

/// What an image knows about itself. The init trusts this file as much as it
/// trusts its own binary: both come from the same signed or locally built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Name of the initramfs spec the image was built from.
    pub spec: String,
    /// Build time in seconds since the epoch (`SOURCE_DATE_EPOCH` when set).
    /// The init never lets the wall clock read earlier than this.
    pub build_time: u64,
    /// Whether the image carries a shell at [`crate::layout::SHELL`] and its
    /// builder allowed `rd.shell` / `phase.onfail=shell` to use it.
    pub shell: bool,
    /// Kernel release the modules were taken from, if the image has modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// How an x86_64 kexec hand-off loads the next kernel (`[kexec] method`
    /// of the spec); absent means [`KexecMethod::DEFAULT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kexec_method: Option<KexecMethod>,
    /// Where the machine keeps its version floor when it has no EFI
    /// variables (`[state]` of the spec); absent: nowhere but there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateLocation>,
}

/// A state partition, found by its GPT partition label (see
/// [`crate::state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateLocation {
    pub partlabel: String,
}

/// Which syscall a kexec hand-off tries first. The init decides the rest
/// (lockdown, Secure Boot and the kernel's answers can overrule this); the
/// image only states a preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KexecMethod {
    /// `kexec_file_load`: the kernel reads, checks and places the files.
    File,
    /// `kexec_load` with segments the init builds.
    Load,
    /// `kexec_load` unless the kernel is locked down or refuses it, then
    /// `kexec_file_load`.
    Auto,
}

impl KexecMethod {
    /// The method of an image whose spec names none: `file`.
    /// `kexec_file_load` lets the kernel check what it loads (a signature
    /// under lockdown or `KEXEC_SIG`), and `cargo xtask bench boot` found
    /// it no slower than the init's own `kexec_load` segments: on the
    /// x86_64 TCG guest the handoff stage took 1146–1815 ms by
    /// `kexec_file_load` against 1562–1936 ms by `kexec_load` (5 boots
    /// each, alternating), and the jump to the next kernel's banner
    /// 4901 against 4750 ms (medians). A kernel without `KEXEC_FILE`
    /// answers `ENOSYS` and the init moves on to `kexec_load`.
    pub const DEFAULT: KexecMethod = KexecMethod::File;

    pub fn as_str(self) -> &'static str {
        match self {
            KexecMethod::File => "file",
            KexecMethod::Load => "load",
            KexecMethod::Auto => "auto",
        }
    }
}

impl ImageInfo {
    /// Parses the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The JSON form, with a trailing newline.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, integers and booleans cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let info = ImageInfo {
            spec: "netboot".into(),
            build_time: 1_700_000_000,
            shell: false,
            kernel_release: Some("6.1.0-56-amd64".into()),
            kexec_method: Some(KexecMethod::Auto),
            state: Some(StateLocation {
                partlabel: "PHASE-STATE".into(),
            }),
        };
        assert_eq!(
            ImageInfo::from_json(info.to_json().as_bytes()).unwrap(),
            info
        );
        assert!(info.to_json().contains("\"kexec_method\": \"auto\""));
        assert!(
            info.to_json()
                .contains("\"state\": {\n    \"partlabel\": \"PHASE-STATE\"\n  }")
        );
        // Images written before the field existed still parse, as the default.
        let old = r#"{"spec":"x","build_time":1,"shell":false}"#;
        assert_eq!(
            ImageInfo::from_json(old.as_bytes()).unwrap().kexec_method,
            None
        );
        let bad = r#"{"spec":"x","build_time":1,"shell":false,"kexec_method":"fast"}"#;
        assert!(ImageInfo::from_json(bad.as_bytes()).is_err());
        let extra = r#"{"spec":"x","build_time":1,"shell":false,"insecure":true}"#;
        assert!(ImageInfo::from_json(extra.as_bytes()).is_err());
    }
}
