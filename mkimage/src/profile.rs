//! Build profiles: what an image is for decides its architecture, kernel
//! variants, command line and menu behaviour.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::arch::Arch;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("unknown profile {0:?}: expected qemu, m-series or xsc")]
    Unknown(String),
    #[error("profile {profile} is for {want} machines, but the kernel {variant:?} is {got}")]
    WrongArch {
        profile: Profile,
        variant: String,
        want: Arch,
        got: Arch,
    },
    #[error(
        "profile {profile} needs kernel variants {want:?} (pass --kernel NAME=PATH for each), got {got:?}"
    )]
    Variants {
        profile: Profile,
        want: Vec<&'static str>,
        got: Vec<String>,
    },
    #[error("kernel variants {a:?} ({a_arch}) and {b:?} ({b_arch}) are for different machines")]
    MixedArch {
        a: String,
        a_arch: Arch,
        b: String,
        b_arch: Arch,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The test VMs: serial console, menus that do not wait.
    Qemu,
    /// Apple silicon through m1n1 → U-Boot → EFI: arm64, a DTB directory.
    MSeries,
    /// XSC x86_64 machines: base and cfi-compat kernel variants.
    Xsc,
}

impl Profile {
    /// The architecture the profile is for; `None` takes the kernel's.
    pub fn arch(self) -> Option<Arch> {
        match self {
            Profile::Qemu => None,
            Profile::MSeries => Some(Arch::Aarch64),
            Profile::Xsc => Some(Arch::X86_64),
        }
    }

    /// Kernel variants the profile requires, in menu order.
    pub fn variants(self) -> Option<&'static [&'static str]> {
        match self {
            Profile::Xsc => Some(&["base", "cfi-compat"]),
            _ => None,
        }
    }

    /// The command line every entry starts with.
    pub fn cmdline(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (Profile::Qemu, Arch::X86_64) => "console=ttyS0",
            (Profile::Qemu, Arch::Aarch64) => "console=ttyAMA0",
            // The display first, the serial port last: the last console
            // gets /dev/console.
            (Profile::Xsc, _) => "console=tty0 console=ttyS0,115200",
            (Profile::MSeries, _) => "console=tty0",
        }
    }

    /// Seconds the boot menus wait.
    pub fn menu_timeout(self) -> u32 {
        match self {
            Profile::Qemu => 0,
            _ => 5,
        }
    }

    /// Whether systemd-boot's command line editor is on (test VMs only).
    pub fn editor(self) -> bool {
        self == Profile::Qemu
    }

    /// Checks the variants' architectures and names; returns the image's
    /// architecture.
    pub fn check(self, variants: &[(String, Arch)]) -> Result<Arch, ProfileError> {
        if let Some(want) = self.variants() {
            let got: Vec<String> = variants.iter().map(|(n, _)| n.clone()).collect();
            if got.len() != want.len() || want.iter().zip(&got).any(|(w, g)| w != g) {
                return Err(ProfileError::Variants {
                    profile: self,
                    want: want.to_vec(),
                    got,
                });
            }
        }
        let (first, first_arch) = &variants[0];
        for (name, arch) in variants {
            if let Some(want) = self.arch()
                && *arch != want
            {
                return Err(ProfileError::WrongArch {
                    profile: self,
                    variant: name.clone(),
                    want,
                    got: *arch,
                });
            }
            if arch != first_arch {
                return Err(ProfileError::MixedArch {
                    a: first.clone(),
                    a_arch: *first_arch,
                    b: name.clone(),
                    b_arch: *arch,
                });
            }
        }
        Ok(*first_arch)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Qemu => "qemu",
            Profile::MSeries => "m-series",
            Profile::Xsc => "xsc",
        })
    }
}

impl FromStr for Profile {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        match s {
            "qemu" => Ok(Profile::Qemu),
            "m-series" => Ok(Profile::MSeries),
            "xsc" => Ok(Profile::Xsc),
            _ => Err(ProfileError::Unknown(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_checks() {
        let x86 = vec![("linux".to_string(), Arch::X86_64)];
        assert_eq!(Profile::Qemu.check(&x86), Ok(Arch::X86_64));
        assert_eq!(
            Profile::MSeries.check(&x86),
            Err(ProfileError::WrongArch {
                profile: Profile::MSeries,
                variant: "linux".into(),
                want: Arch::Aarch64,
                got: Arch::X86_64
            })
        );
        assert!(matches!(
            Profile::Xsc.check(&x86),
            Err(ProfileError::Variants { .. })
        ));
        let xsc = vec![
            ("base".to_string(), Arch::X86_64),
            ("cfi-compat".to_string(), Arch::X86_64),
        ];
        assert_eq!(Profile::Xsc.check(&xsc), Ok(Arch::X86_64));
        let mixed = vec![
            ("a".to_string(), Arch::X86_64),
            ("b".to_string(), Arch::Aarch64),
        ];
        assert!(matches!(
            Profile::Qemu.check(&mixed),
            Err(ProfileError::MixedArch { .. })
        ));
    }
}
