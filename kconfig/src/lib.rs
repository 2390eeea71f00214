//! Kernel configs against Phase Boot's profiles, shared by `phase kconfig
//! check` (tools), `mkimage --profile` and `cargo xtask kernel`:
//!
//! - [`config`]: `.config` text (`CONFIG_X=y|m|"str"|123`, `# CONFIG_X is not set`);
//! - [`fragment`]: the annotated fragments of `kconfigs/` (why each option,
//!   and what its absence costs), merged and rendered for a kernel build;
//! - [`profile`]: the fragments, embedded, and which a profile needs;
//! - [`check`]: a config against fragments, as findings;
//! - [`image`]: a kernel's own config (IKCONFIG) in its image.
//!
//! No I/O: everything takes bytes or text. The `decompress` feature (host
//! tools) adds reading configs out of compressed kernels.
//!
//! ```
//! use phase_kconfig::{Config, check, profile};
//! let config = Config::parse("CONFIG_ARM64=y\nCONFIG_KEXEC=y\n").unwrap();
//! let report = check::check(&config, &profile::fragments("m-series", None).unwrap(), None);
//! assert_eq!(report.exit_code(), 2); // no 16K pages, no initramfs, …
//! for finding in &report.findings {
//!     println!("{finding}");
//! }
//! ```
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod fragment;
pub mod image;
pub mod profile;

pub use check::{Finding, Found, Report, Symbols, check};

/// What the fuzz target (`fuzz/fuzz_targets/kconfig.rs`) and the seed replay
/// run on one input: every parser a user's file reaches, none of which may
/// panic. Decompression is left out (it is the compression crates' code).
pub fn fuzz_input(data: &[u8]) {
    let _ = image::ikconfig_gzip(data);
    let _ = image::bzimage_payload(data);
    let _ = image::Compression::sniff(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Fragment::parse("fuzz", text);
    let mut symbols = Symbols::default();
    symbols.add_kconfig(text);
    if let Ok(config) = Config::parse(text) {
        for p in profile::PROFILES {
            for v in [None, Some("cfi-compat")] {
                if let Ok(fragments) = profile::fragments(p, v) {
                    let report = check(&config, &fragments, Some(&symbols));
                    let _ = report.exit_code();
                    for f in &report.findings {
                        let _ = f.to_string();
                    }
                }
            }
        }
    }
}
pub use config::{Arch, Config, Setting, Value};
pub use fragment::{Fragment, Severity};
