//! Checking the kernels an image packs against its profile before anything
//! is built: each variant's config comes from `--kernel-config` or from the
//! kernel's own IKCONFIG, and is judged by `phase-kconfig` against the
//! profile's fragments (`kconfigs/`). A fatal finding refuses the image
//! unless forced; degraded ones are printed; a kernel whose config cannot be
//! had is named as unchecked.

use phase_kconfig::image::read_config;
use phase_kconfig::{Report, Severity, check, profile};
use thiserror::Error;

use crate::profile::Profile;

#[derive(Debug, Error)]
pub enum KconfigError {
    #[error("the kernel config given for {variant:?}")]
    Config {
        variant: String,
        #[source]
        error: phase_kconfig::image::ReadError,
    },
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error(
        "the {variant:?} kernel does not meet profile {profile} ({} fatal): {}; pass --force to build the image anyway",
        findings.len(),
        findings.join("; ")
    )]
    Fatal {
        profile: Profile,
        variant: String,
        findings: Vec<String>,
    },
}

/// The outcome for one kernel variant.
#[derive(Debug)]
pub enum KernelCheck {
    Checked {
        variant: String,
        /// Where the config came from (`--kernel-config`, or the image's IKCONFIG).
        from: String,
        report: Report,
    },
    /// Neither `--kernel-config` nor a readable IKCONFIG: nothing to judge.
    Unchecked { variant: String, why: String },
}

/// Checks one variant's kernel. `config` is the file `--kernel-config` gave
/// for it, if any; otherwise the kernel's IKCONFIG is read.
pub fn check_kernel(
    profile: Profile,
    variant: &str,
    kernel: &[u8],
    config: Option<&[u8]>,
) -> Result<KernelCheck, KconfigError> {
    let (parsed, from) = match config {
        Some(bytes) => {
            let (c, origin) = read_config(bytes).map_err(|error| KconfigError::Config {
                variant: variant.to_owned(),
                error,
            })?;
            (c, format!("--kernel-config ({origin})"))
        }
        // A kernel whose config cannot be read from it (no IKCONFIG, a
        // payload format this cannot undo) is packed unchecked, and said so.
        None => match read_config(kernel) {
            Ok((c, origin)) => (c, origin.to_string()),
            Err(error) => {
                return Ok(KernelCheck::Unchecked {
                    variant: variant.to_owned(),
                    why: format!("{error:#}"),
                });
            }
        },
    };
    // Profiles without variants name a lone kernel `linux`: not a variant.
    let variant_of_profile =
        (!profile::variants(&profile.to_string()).is_empty()).then_some(variant);
    let fragments = profile::fragments(&profile.to_string(), variant_of_profile)?;
    Ok(KernelCheck::Checked {
        variant: variant.to_owned(),
        from,
        report: check(&parsed, &fragments, None),
    })
}

/// The lines to print about `checks`, or the refusal of the first fatal
/// one unless `force`.
pub fn verdict(
    profile: Profile,
    checks: &[KernelCheck],
    force: bool,
) -> Result<Vec<String>, KconfigError> {
    let mut lines = Vec::new();
    for c in checks {
        match c {
            KernelCheck::Unchecked { variant, why } => lines.push(format!(
                "note: could not check the {variant:?} kernel against profile {profile}: {why}; give its config with --kernel-config {variant}=FILE"
            )),
            KernelCheck::Checked {
                variant,
                from,
                report,
            } => {
                let fatal: Vec<String> = report
                    .with_severity(Severity::Fatal)
                    .map(|f| format!("{} (wanted {}, found {})", f.option, f.wanted, f.found))
                    .collect();
                if !fatal.is_empty() && !force {
                    return Err(KconfigError::Fatal {
                        profile,
                        variant: variant.clone(),
                        findings: fatal,
                    });
                }
                let worst = report.worst().map_or("ok".to_owned(), |s| s.to_string());
                lines.push(format!(
                    "kernel {variant:?} against profile {profile}: {worst} ({} options, config from {from})",
                    report.checked
                ));
                for f in &report.findings {
                    if f.severity > Severity::Note {
                        let forced = if f.severity == Severity::Fatal {
                            " (forced)"
                        } else {
                            ""
                        };
                        lines.push(format!("  {f}{forced}"));
                    }
                }
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &str) -> Vec<u8> {
        lines.as_bytes().to_vec()
    }

    #[test]
    fn checks_refuses_forces_and_notes() {
        let fragments = profile::fragments("m-series", None).unwrap();
        let full = format!(
            "CONFIG_ARM64=y\n{}",
            phase_kconfig::fragment::render(&fragments, phase_kconfig::Arch::Arm64)
        );
        // A kernel without IKCONFIG and no config: unchecked, with a note.
        let kernel = b"\x7fELF a kernel without its config".to_vec();
        let c = check_kernel(Profile::MSeries, "linux", &kernel, None).unwrap();
        assert!(matches!(c, KernelCheck::Unchecked { .. }));
        let lines = verdict(Profile::MSeries, &[c], false).unwrap();
        assert!(
            lines[0].contains("could not check") && lines[0].contains("without IKCONFIG"),
            "{lines:?}"
        );

        // The full profile passes.
        let c = check_kernel(Profile::MSeries, "linux", &kernel, Some(&text(&full))).unwrap();
        let lines = verdict(Profile::MSeries, &[c], false).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(": ok ("), "{lines:?}");

        // 4K pages are fatal: refused, unless forced.
        let four_k = full.replace("CONFIG_ARM64_16K_PAGES=y", "CONFIG_ARM64_4K_PAGES=y");
        let bad =
            || check_kernel(Profile::MSeries, "linux", &kernel, Some(&text(&four_k))).unwrap();
        let e = verdict(Profile::MSeries, &[bad()], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CONFIG_ARM64_16K_PAGES (wanted y, found absent"),
            "{e}"
        );
        assert!(e.contains("--force"), "{e}");
        let lines = verdict(Profile::MSeries, &[bad()], true).unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ARM64_16K_PAGES") && l.ends_with("(forced)"))
        );

        // Degraded findings are printed, not refused.
        let no_file = full.replace("CONFIG_KEXEC_FILE=y", "# CONFIG_KEXEC_FILE is not set");
        let c = check_kernel(Profile::MSeries, "linux", &kernel, Some(&text(&no_file))).unwrap();
        let lines = verdict(Profile::MSeries, &[c], false).unwrap();
        assert!(lines[0].contains(": degraded ("), "{lines:?}");
        assert!(lines[1].contains("CONFIG_KEXEC_FILE"), "{lines:?}");

        // xsc variants get their own fragments.
        let c = check_kernel(
            Profile::Xsc,
            "cfi-compat",
            &kernel,
            Some(&text("CONFIG_X86_64=y\n")),
        )
        .unwrap();
        let KernelCheck::Checked { report, .. } = c else {
            panic!("not checked");
        };
        assert!(report.fragments.contains(&"xsc-cfi-compat".to_owned()));
    }
}
