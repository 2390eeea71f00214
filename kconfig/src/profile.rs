//! The fragments in `kconfigs/`, embedded, and which of them each image
//! profile needs (`kconfigs/README.md` has the table).

use thiserror::Error;

use crate::fragment::{Fragment, FragmentError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("unknown profile {0:?}: expected qemu, m-series or xsc")]
    UnknownProfile(String),
    #[error("profile {profile} has no variant {variant:?}: expected {}", expected.join(" or "))]
    UnknownVariant {
        profile: String,
        variant: String,
        expected: Vec<&'static str>,
    },
    #[error("unknown fragment {0:?}: expected one of {names}", names = NAMES.join(", "))]
    UnknownFragment(String),
    #[error(transparent)]
    Fragment(#[from] FragmentError),
}

/// Every fragment by name, as `kconfigs/<name>.config` holds it.
pub const FRAGMENTS: &[(&str, &str)] = &[
    (
        "phase-init",
        include_str!("../../kconfigs/phase-init.config"),
    ),
    ("qemu-virt", include_str!("../../kconfigs/qemu-virt.config")),
    ("m-series", include_str!("../../kconfigs/m-series.config")),
    ("xsc", include_str!("../../kconfigs/xsc.config")),
    (
        "xsc-cfi-compat",
        include_str!("../../kconfigs/xsc-cfi-compat.config"),
    ),
    (
        "xsc-kexec-load",
        include_str!("../../kconfigs/xsc-kexec-load.config"),
    ),
    ("harness", include_str!("../../kconfigs/harness.config")),
];

const NAMES: [&str; 7] = [
    "phase-init",
    "qemu-virt",
    "m-series",
    "xsc",
    "xsc-cfi-compat",
    "xsc-kexec-load",
    "harness",
];

/// The embedded fragment `name`, parsed.
pub fn fragment(name: &str) -> Result<Fragment, ProfileError> {
    let (_, text) = FRAGMENTS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ProfileError::UnknownFragment(name.to_owned()))?;
    Ok(Fragment::parse(name, text)?)
}

/// Profiles, as mkimage names them.
pub const PROFILES: [&str; 3] = ["qemu", "m-series", "xsc"];

/// The variants a profile tells apart (the kernel variants of its images).
pub fn variants(profile: &str) -> &'static [&'static str] {
    match profile {
        "xsc" => &["base", "cfi-compat"],
        _ => &[],
    }
}

/// The fragment names a kernel of `profile` (and, for xsc, `variant`;
/// `base` when `None`) must meet, in merge order. Profiles without variants
/// ignore the variant (mkimage names a lone kernel `linux`).
pub fn fragment_names(
    profile: &str,
    variant: Option<&str>,
) -> Result<Vec<&'static str>, ProfileError> {
    match profile {
        "qemu" => Ok(vec!["phase-init", "qemu-virt"]),
        "m-series" => Ok(vec!["phase-init", "m-series"]),
        "xsc" => match variant.unwrap_or("base") {
            "base" => Ok(vec!["phase-init", "xsc"]),
            "cfi-compat" => Ok(vec!["phase-init", "xsc", "xsc-cfi-compat"]),
            other => Err(ProfileError::UnknownVariant {
                profile: profile.to_owned(),
                variant: other.to_owned(),
                expected: variants(profile).to_vec(),
            }),
        },
        other => Err(ProfileError::UnknownProfile(other.to_owned())),
    }
}

/// The parsed fragments of [`fragment_names`].
pub fn fragments(profile: &str, variant: Option<&str>) -> Result<Vec<Fragment>, ProfileError> {
    fragment_names(profile, variant)?
        .into_iter()
        .map(fragment)
        .collect()
}

/// A profile name, or fragment names joined by `+` (`phase-init+qemu-virt`),
/// as parsed fragments in that order.
pub fn resolve(spec: &str, variant: Option<&str>) -> Result<Vec<Fragment>, ProfileError> {
    if PROFILES.contains(&spec) || !spec.contains('+') && fragment(spec).is_err() {
        return fragments(spec, variant);
    }
    spec.split('+').map(|name| fragment(name.trim())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;
    use crate::fragment::{Severity, Want, render};

    #[test]
    fn every_fragment_parses_and_is_listed() {
        assert_eq!(FRAGMENTS.len(), NAMES.len());
        for (name, _) in FRAGMENTS {
            assert!(NAMES.contains(name), "{name}");
            let f = fragment(name).unwrap();
            assert!(!f.requirements.is_empty(), "{name}");
            for r in &f.requirements {
                assert!(
                    r.reason.len() > 10,
                    "{name}: CONFIG_{} says too little",
                    r.option
                );
            }
        }
        assert!(matches!(
            fragment("init"),
            Err(ProfileError::UnknownFragment(_))
        ));
    }

    #[test]
    fn profiles_name_their_fragments() {
        assert_eq!(
            fragment_names("qemu", Some("linux")).unwrap(),
            ["phase-init", "qemu-virt"]
        );
        assert_eq!(
            fragment_names("m-series", None).unwrap(),
            ["phase-init", "m-series"]
        );
        assert_eq!(fragment_names("xsc", None).unwrap(), ["phase-init", "xsc"]);
        assert_eq!(
            fragment_names("xsc", Some("cfi-compat")).unwrap(),
            ["phase-init", "xsc", "xsc-cfi-compat"]
        );
        assert!(matches!(
            fragment_names("xsc", Some("linux")),
            Err(ProfileError::UnknownVariant { .. })
        ));
        assert!(matches!(
            fragment_names("pc", None),
            Err(ProfileError::UnknownProfile(_))
        ));
        for p in PROFILES {
            fragments(p, None).unwrap();
            assert_eq!(resolve(p, None).unwrap(), fragments(p, None).unwrap());
        }
        let names = |v: Vec<Fragment>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(names(resolve("phase-init", None).unwrap()), ["phase-init"]);
        assert_eq!(
            names(resolve("phase-init+qemu-virt+harness", None).unwrap()),
            ["phase-init", "qemu-virt", "harness"]
        );
        assert!(matches!(
            resolve("phase-init+nope", None),
            Err(ProfileError::UnknownFragment(_))
        ));
        assert!(matches!(
            resolve("nope", None),
            Err(ProfileError::UnknownProfile(_))
        ));
    }

    #[test]
    fn the_fragments_say_what_the_brief_of_each_profile_is() {
        let init = fragment("phase-init").unwrap();
        let group = init.groups.iter().find(|g| g.name == "kexec").unwrap();
        assert_eq!(group.severity, Severity::Fatal);
        let members: Vec<&str> = init
            .requirements
            .iter()
            .filter(|r| r.group.as_deref() == Some("kexec"))
            .map(|r| r.option.as_str())
            .collect();
        assert_eq!(members, ["KEXEC", "KEXEC_FILE"]);
        let m = fragment("m-series").unwrap();
        let pages = m
            .requirements
            .iter()
            .find(|r| r.option == "ARM64_16K_PAGES")
            .unwrap();
        assert_eq!(
            (pages.severity, pages.arch),
            (Severity::Fatal, Some(Arch::Arm64))
        );
        let xsc = fragment("xsc").unwrap();
        let doorbell = xsc
            .requirements
            .iter()
            .find(|r| r.option == "XSC_SOFT_DOORBELL")
            .unwrap();
        assert_eq!(doorbell.want, Want::Off);
        // The xsc test kernel keeps kexec_load and leaves kexec_file_load out.
        let rendered = render(
            &[init, xsc, fragment("xsc-kexec-load").unwrap()],
            Arch::X86_64,
        );
        assert!(rendered.contains("CONFIG_KEXEC=y\n"));
        assert!(rendered.contains("# CONFIG_KEXEC_FILE is not set\n"));
        assert!(!rendered.contains("CONFIG_KEXEC_FILE=y"));
        assert!(!rendered.contains("ARM64"));
    }
}
