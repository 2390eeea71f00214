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
        };
        assert_eq!(
            ImageInfo::from_json(info.to_json().as_bytes()).unwrap(),
            info
        );
        let extra = r#"{"spec":"x","build_time":1,"shell":false,"insecure":true}"#;
        assert!(ImageInfo::from_json(extra.as_bytes()).is_err());
    }
}
