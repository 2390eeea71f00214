//! Which kexec syscall to use, decided before each attempt from what is
//! known: the arch, the image's configured [`KexecMethod`], whether the
//! running kernel is locked down or booted with Secure Boot, and how the
//! syscalls tried so far failed.
//!
//! | situation | first | after a failure |
//! |---|---|---|
//! | aarch64 (any method) | `kexec_load` | nothing |
//! | x86_64 locked down or Secure Boot | `kexec_file_load` | nothing |
//! | x86_64 `file` | `kexec_file_load` | `ENOSYS` → `kexec_load` |
//! | x86_64 `load` | `kexec_load` | nothing |
//! | x86_64 `auto` | `kexec_load` | `EPERM`, `ENOSYS`, or no segments built → `kexec_file_load` |
//!
//! A signature or lockdown refusal of `kexec_file_load`
//! ([`super::refusal_reason`]) ends the hand-off whatever else holds: the
//! same bytes are never offered to `kexec_load` after the kernel's own check
//! said no (SECURITY.md row 16). Going the other way is always allowed,
//! since `kexec_file_load` checks at least what `kexec_load` would.
//!
//! Debian's arm64 kernel has no `KEXEC_FILE` and the init has no arm64
//! `kexec_file_load` path, so on aarch64 only `kexec_load` exists: a locked
//! down arm64 kernel refuses it itself.
//!
//! Everything here is pure; the reading of `/sys/kernel/security/lockdown`
//! and of the Secure Boot state happens in [`super::x86_64`].

use phase_initramfs::image::KexecMethod;
use serde::Serialize;

/// The two ways to load a kernel for kexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Syscall {
    #[serde(rename = "kexec_file_load")]
    FileLoad,
    #[serde(rename = "kexec_load")]
    Load,
}

impl Syscall {
    pub fn name(self) -> &'static str {
        match self {
            Syscall::FileLoad => "kexec_file_load",
            Syscall::Load => "kexec_load",
        }
    }
}

/// The arch whose hand-off is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// `/sys/kernel/security/lockdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
    /// The file could not be read (no securityfs, no lockdown LSM).
    Unknown,
}

impl Lockdown {
    /// Parses the file's one line, e.g. `none [integrity] confidentiality`:
    /// the bracketed word is the current level. `None` for anything else.
    pub fn parse(text: &str) -> Option<Lockdown> {
        let mut current = None;
        for word in text.split_ascii_whitespace() {
            if let Some(name) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                if current.is_some() {
                    return None;
                }
                current = Some(match name {
                    "none" => Lockdown::None,
                    "integrity" => Lockdown::Integrity,
                    "confidentiality" => Lockdown::Confidentiality,
                    _ => return None,
                });
            }
        }
        current
    }

    fn locked(self) -> bool {
        matches!(self, Lockdown::Integrity | Lockdown::Confidentiality)
    }
}

/// The GUID of the EFI global variables (`EFI_GLOBAL_VARIABLE`).
pub const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098e6bd3a";

/// The SecureBoot variable as efivarfs shows it: four bytes of attributes,
/// then the one-byte value, 1 when Secure Boot is on. `None` when the file
/// is too short to hold both.
pub fn secure_boot_var(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 5 {
        return None;
    }
    bytes.last().map(|&value| value == 1)
}

/// `boot_params.secure_boot` as the EFI stub sets it
/// (`efi_secureboot_mode_enabled` in `include/linux/efi.h`).
pub const BOOT_PARAMS_SECURE_BOOT_ENABLED: u8 = 3;

/// What is known before the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub arch: Arch,
    pub method: KexecMethod,
    pub lockdown: Lockdown,
    pub secure_boot: bool,
}

/// One syscall tried, and the errno it failed with (`None` when the init
/// failed before making the call, e.g. an image it cannot place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub syscall: Syscall,
    pub errno: Option<i32>,
}

/// Why a syscall is tried, or why the hand-off stops: a stable name for the
/// events (`why`) and a sentence for people ([`Why::text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// aarch64: the init builds the segments; there is no other way.
    Aarch64,
    /// Locked down: `kexec_file_load` only.
    LockedDown,
    /// Secure Boot: `kexec_file_load` only.
    SecureBoot,
    MethodFile,
    MethodLoad,
    MethodAuto,
    /// `auto` with lockdown unreadable: a locked-down kernel would refuse
    /// `kexec_load` itself.
    MethodAutoLockdownUnknown,
    /// `kexec_file_load` failed with `ENOSYS`.
    FileLoadMissing,
    /// `kexec_load` failed with `EPERM`.
    LoadRefused,
    /// `kexec_load` failed with `ENOSYS`.
    LoadMissing,
    /// The init could not build `kexec_load`'s segments.
    SegmentsNotBuilt,
    /// Stop: a signature or lockdown refusal of `kexec_file_load`.
    PolicyRefusal,
    /// Stop: aarch64 has nothing else to try.
    Aarch64Only,
    /// Stop: locked down or Secure Boot, and `kexec_file_load` failed.
    LockedDownFileLoadOnly,
    /// Stop: no other syscall could avoid this failure.
    Unavoidable,
    /// Stop: both syscalls failed.
    BothTried,
}

impl Why {
    pub fn text(self) -> &'static str {
        match self {
            Why::Aarch64 => {
                "aarch64: the init builds its own segments (Debian's arm64 kernel has no kexec_file_load)"
            }
            Why::LockedDown => {
                "the kernel is locked down: only kexec_file_load, whose checks the kernel enforces"
            }
            Why::SecureBoot => {
                "Secure Boot is on: only kexec_file_load, whose checks the kernel enforces"
            }
            Why::MethodFile => "method file",
            Why::MethodLoad => "method load",
            Why::MethodAuto => "method auto and the kernel is not locked down",
            Why::MethodAutoLockdownUnknown => {
                "method auto; lockdown unknown, and a locked-down kernel refuses kexec_load itself"
            }
            Why::FileLoadMissing => {
                "kexec_file_load is not in this kernel (ENOSYS) and it is not locked down"
            }
            Why::LoadRefused => {
                "kexec_load was refused (EPERM: kexec_load_disabled, IMA or lockdown); the kernel's own loader applies its checks"
            }
            Why::LoadMissing => "kexec_load is not in this kernel (ENOSYS)",
            Why::SegmentsNotBuilt => {
                "the init could not build kexec_load's segments; the kernel's own loader may"
            }
            Why::PolicyRefusal => {
                "kexec_file_load refused the image on policy; that is final, no fallback to kexec_load"
            }
            Why::Aarch64Only => "aarch64 has only kexec_load",
            Why::LockedDownFileLoadOnly => "locked down or Secure Boot: kexec_load is never tried",
            Why::Unavoidable => "this failure is not one another syscall could avoid",
            Why::BothTried => "both syscalls were tried",
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Try { syscall: Syscall, why: Why },
    Stop { why: Why },
}

/// The next step, given the situation and every failed attempt so far.
pub fn decide(situation: &Situation, attempts: &[Attempt]) -> Decision {
    use Decision::{Stop, Try};
    use Syscall::{FileLoad, Load};
    let refused = attempts
        .iter()
        .any(|a| a.syscall == FileLoad && a.errno.and_then(super::refusal_reason).is_some());
    if refused {
        return Stop {
            why: Why::PolicyRefusal,
        };
    }
    if situation.arch == Arch::Aarch64 {
        return match attempts {
            [] => Try {
                syscall: Load,
                why: Why::Aarch64,
            },
            _ => Stop {
                why: Why::Aarch64Only,
            },
        };
    }
    if situation.lockdown.locked() || situation.secure_boot {
        return match attempts {
            [] if situation.lockdown.locked() => Try {
                syscall: FileLoad,
                why: Why::LockedDown,
            },
            [] => Try {
                syscall: FileLoad,
                why: Why::SecureBoot,
            },
            _ => Stop {
                why: Why::LockedDownFileLoadOnly,
            },
        };
    }
    let unknown = situation.lockdown == Lockdown::Unknown;
    let after = |syscall: Syscall, errno: Option<i32>| [Attempt { syscall, errno }];
    match (situation.method, attempts) {
        (KexecMethod::File, []) => Try {
            syscall: FileLoad,
            why: Why::MethodFile,
        },
        (KexecMethod::Load, []) => Try {
            syscall: Load,
            why: Why::MethodLoad,
        },
        (KexecMethod::Auto, []) if unknown => Try {
            syscall: Load,
            why: Why::MethodAutoLockdownUnknown,
        },
        (KexecMethod::Auto, []) => Try {
            syscall: Load,
            why: Why::MethodAuto,
        },
        (KexecMethod::File | KexecMethod::Auto, a) if a == after(FileLoad, Some(libc::ENOSYS)) => {
            Try {
                syscall: Load,
                why: Why::FileLoadMissing,
            }
        }
        (KexecMethod::Auto, a) if a == after(Load, Some(libc::EPERM)) => Try {
            syscall: FileLoad,
            why: Why::LoadRefused,
        },
        (KexecMethod::Auto, a) if a == after(Load, Some(libc::ENOSYS)) => Try {
            syscall: FileLoad,
            why: Why::LoadMissing,
        },
        (KexecMethod::Auto, a) if a == after(Load, None) => Try {
            syscall: FileLoad,
            why: Why::SegmentsNotBuilt,
        },
        (_, [_]) => Stop {
            why: Why::Unavoidable,
        },
        _ => Stop {
            why: Why::BothTried,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Syscall::{FileLoad, Load};

    fn x86(method: KexecMethod, lockdown: Lockdown, secure_boot: bool) -> Situation {
        Situation {
            arch: Arch::X86_64,
            method,
            lockdown,
            secure_boot,
        }
    }

    fn failed(syscall: Syscall, errno: i32) -> Attempt {
        Attempt {
            syscall,
            errno: Some(errno),
        }
    }

    /// Stands for a failure before the syscall (no errno).
    const BUILD_FAILED: i32 = -1;

    /// How a kernel answers each syscall: `None` = it loads.
    type Answers = Vec<(Syscall, Option<i32>)>;

    /// Runs the decision against a kernel whose answers are `answers` (per
    /// syscall: `None` = succeeds), returning the syscalls tried in order
    /// and whether one succeeded.
    fn run(situation: &Situation, answers: &[(Syscall, Option<i32>)]) -> (Vec<Syscall>, bool) {
        let mut attempts = Vec::new();
        let mut tried = Vec::new();
        loop {
            match decide(situation, &attempts) {
                Decision::Try { syscall, .. } => {
                    assert!(!tried.contains(&syscall), "{syscall:?} tried twice");
                    tried.push(syscall);
                    let answer = answers
                        .iter()
                        .find(|(s, _)| *s == syscall)
                        .map_or(Some(libc::ENOSYS), |(_, a)| *a);
                    match answer {
                        None => return (tried, true),
                        Some(BUILD_FAILED) => attempts.push(Attempt {
                            syscall,
                            errno: None,
                        }),
                        Some(errno) => attempts.push(failed(syscall, errno)),
                    }
                }
                Decision::Stop { .. } => return (tried, false),
            }
        }
    }

    #[test]
    fn every_situation_takes_the_documented_path() {
        use KexecMethod::{Auto, File, Load as MLoad};
        use Lockdown::{Confidentiality, Integrity, None as Open, Unknown};
        let ok = None;
        let e = Some;
        #[rustfmt::skip]
        let cases: Vec<(Situation, Answers, Vec<Syscall>, bool)> = vec![
            // Today's behaviour: kexec_file_load, and nothing else when it works.
            (x86(File, Open, false), vec![(FileLoad, ok)], vec![FileLoad], true),
            // A kernel without KEXEC_FILE: on to kexec_load.
            (x86(File, Open, false), vec![(FileLoad, e(libc::ENOSYS)), (Load, ok)], vec![FileLoad, Load], true),
            (x86(File, Unknown, false), vec![(FileLoad, e(libc::ENOSYS)), (Load, ok)], vec![FileLoad, Load], true),
            // Other kexec_file_load failures end it.
            (x86(File, Open, false), vec![(FileLoad, e(libc::ENOEXEC))], vec![FileLoad], false),
            (x86(File, Open, false), vec![(FileLoad, e(libc::ENOMEM))], vec![FileLoad], false),
            // auto: kexec_load first, the kernel's loader if kexec_load is refused or absent.
            (x86(Auto, Open, false), vec![(Load, ok)], vec![Load], true),
            (x86(Auto, Unknown, false), vec![(Load, ok)], vec![Load], true),
            (x86(Auto, Open, false), vec![(Load, e(libc::EPERM)), (FileLoad, ok)], vec![Load, FileLoad], true),
            (x86(Auto, Open, false), vec![(Load, e(libc::ENOSYS)), (FileLoad, ok)], vec![Load, FileLoad], true),
            (x86(Auto, Open, false), vec![(Load, e(libc::EBUSY))], vec![Load], false),
            (x86(Auto, Open, false), vec![(Load, e(BUILD_FAILED)), (FileLoad, ok)], vec![Load, FileLoad], true),
            (x86(File, Open, false), vec![(FileLoad, e(libc::ENOSYS)), (Load, e(BUILD_FAILED))], vec![FileLoad, Load], false),
            (x86(MLoad, Open, false), vec![(Load, e(BUILD_FAILED))], vec![Load], false),
            (x86(Auto, Open, false), vec![(Load, e(libc::EPERM)), (FileLoad, e(libc::EKEYREJECTED))], vec![Load, FileLoad], false),
            // load: kexec_load or nothing.
            (x86(MLoad, Open, false), vec![(Load, ok)], vec![Load], true),
            (x86(MLoad, Open, false), vec![(Load, e(libc::EPERM))], vec![Load], false),
            (x86(MLoad, Open, false), vec![(Load, e(libc::ENOSYS))], vec![Load], false),
            // Locked down or Secure Boot: kexec_file_load only, whatever the method.
            (x86(Auto, Integrity, false), vec![(FileLoad, ok)], vec![FileLoad], true),
            (x86(MLoad, Confidentiality, false), vec![(FileLoad, ok)], vec![FileLoad], true),
            (x86(File, Integrity, false), vec![(FileLoad, e(libc::ENOSYS))], vec![FileLoad], false),
            (x86(Auto, Open, true), vec![(FileLoad, ok)], vec![FileLoad], true),
            (x86(MLoad, Unknown, true), vec![(FileLoad, e(libc::ENOSYS))], vec![FileLoad], false),
            // arm64: kexec_load as before, whatever the image says.
            (Situation { arch: Arch::Aarch64, method: File, lockdown: Unknown, secure_boot: false },
                vec![(Load, ok)], vec![Load], true),
            (Situation { arch: Arch::Aarch64, method: Auto, lockdown: Integrity, secure_boot: true },
                vec![(Load, e(libc::EPERM))], vec![Load], false),
        ];
        for (situation, answers, tried, booted) in cases {
            assert_eq!(
                run(&situation, &answers),
                (tried, booted),
                "{situation:?} with {answers:?}"
            );
        }
    }

    #[test]
    fn a_policy_refusal_is_final() {
        // SECURITY.md row 16: after any signature or lockdown refusal of
        // kexec_file_load, in any situation, nothing else is tried.
        for errno in [
            libc::EPERM,
            libc::EACCES,
            libc::EKEYREJECTED,
            libc::EKEYREVOKED,
            libc::EKEYEXPIRED,
            libc::ENOKEY,
            libc::EBADMSG,
            libc::ENODATA,
            libc::ENOPKG,
        ] {
            for method in [KexecMethod::File, KexecMethod::Load, KexecMethod::Auto] {
                for lockdown in [Lockdown::None, Lockdown::Unknown, Lockdown::Integrity] {
                    for arch in [Arch::X86_64, Arch::Aarch64] {
                        let situation = Situation {
                            arch,
                            method,
                            lockdown,
                            secure_boot: false,
                        };
                        for attempts in [
                            vec![failed(FileLoad, errno)],
                            vec![failed(Load, libc::EPERM), failed(FileLoad, errno)],
                        ] {
                            assert!(
                                matches!(decide(&situation, &attempts), Decision::Stop { .. }),
                                "{situation:?} after {attempts:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_reason_names_why() {
        let reason = |s: &Situation, a: &[Attempt]| match decide(s, a) {
            Decision::Try { why, .. } | Decision::Stop { why } => why.text(),
        };
        let open = x86(KexecMethod::Auto, Lockdown::None, false);
        assert_eq!(
            reason(&open, &[]),
            "method auto and the kernel is not locked down"
        );
        assert!(reason(&open, &[failed(Load, libc::EPERM)]).contains("EPERM"));
        assert!(
            reason(&x86(KexecMethod::Load, Lockdown::Integrity, false), &[])
                .contains("locked down")
        );
        assert!(reason(&x86(KexecMethod::Load, Lockdown::None, true), &[]).contains("Secure Boot"));
        assert!(
            reason(
                &open,
                &[failed(Load, libc::EPERM), failed(FileLoad, libc::ENOKEY)]
            )
            .contains("no fallback to kexec_load")
        );
        // An error before kexec_load was made goes to the kernel's loader
        // under auto only.
        let before = Attempt {
            syscall: Load,
            errno: None,
        };
        assert!(reason(&open, &[before]).contains("could not build"));
        // The events name each reason by a stable code.
        assert_eq!(
            decide(
                &x86(KexecMethod::File, Lockdown::None, false),
                &[failed(FileLoad, libc::ENOSYS)]
            ),
            Decision::Try {
                syscall: Load,
                why: Why::FileLoadMissing
            }
        );
        assert_eq!(
            serde_json::to_value(Why::FileLoadMissing).unwrap(),
            "file_load_missing"
        );
        assert_eq!(
            serde_json::to_value(Why::LockedDown).unwrap(),
            "locked_down"
        );
        let load = x86(KexecMethod::Load, Lockdown::None, false);
        assert!(matches!(decide(&load, &[before]), Decision::Stop { .. }));
    }

    #[test]
    fn reads_the_lockdown_file() {
        for (text, want) in [
            ("[none] integrity confidentiality\n", Some(Lockdown::None)),
            (
                "none [integrity] confidentiality\n",
                Some(Lockdown::Integrity),
            ),
            (
                "none integrity [confidentiality]\n",
                Some(Lockdown::Confidentiality),
            ),
            ("none integrity confidentiality\n", None),
            ("[none] [integrity]\n", None),
            ("[everything]\n", None),
            ("", None),
        ] {
            assert_eq!(Lockdown::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn reads_the_secure_boot_variable() {
        // Attributes NV|BS|RT (0x06) then the value, as efivarfs shows it.
        assert_eq!(secure_boot_var(&[0x06, 0, 0, 0, 1]), Some(true));
        assert_eq!(secure_boot_var(&[0x06, 0, 0, 0, 0]), Some(false));
        assert_eq!(secure_boot_var(&[0x06, 0, 0, 0]), None);
        assert_eq!(secure_boot_var(&[]), None);
    }
}
