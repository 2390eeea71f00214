//! What the workspace's tests share.
//!
//! **The skip rule.** A check that needs something the machine may lack — a
//! referee tool, a server, a boot blob from a Debian package, a kernel tree
//! — skips with a printed reason when it is absent, so `cargo test` works on
//! a bare machine. Under `PHASE_REQUIRE_TOOLS` (which `cargo xtask test`
//! sets after installing everything) the same absence is a failure, so a
//! test can never pass by skipping where the suite promises to run it.
//! Every test in the workspace goes through [`skip`]; nothing else prints
//! "SKIPPED" or returns early on a missing input.
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// Set by `cargo xtask test`: a missing tool or input fails the test.
pub const REQUIRE_VAR: &str = "PHASE_REQUIRE_TOOLS";

/// Whether missing tools and inputs fail tests instead of skipping them.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some()
}

/// `check` cannot run because of `why`: panics under
/// [`PHASE_REQUIRE_TOOLS`](REQUIRE_VAR), otherwise prints the reason. The
/// caller returns right after.
pub fn skip(check: &str, why: impl Display) {
    assert!(
        !required(),
        "{check}: {why}, and {REQUIRE_VAR} is set (cargo xtask test installs everything first)"
    );
    println!("SKIPPED {check}: {why}");
}

/// The path of the program `name` on `PATH` (or in `/usr/sbin`, `/sbin`,
/// where root's tools live), or `None` after [`skip`].
pub fn tool(name: &str, check: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(path) => Some(path),
        None => {
            skip(check, format_args!("{name} is not installed"));
            None
        }
    }
}

/// The path of the program `name`, if installed; never skips.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `path` if it exists (an input file from a Debian package, say), or
/// `None` after [`skip`] naming what provides it.
pub fn file(path: impl AsRef<Path>, check: &str, provided_by: &str) -> Option<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        Some(path.to_owned())
    } else {
        skip(
            check,
            format_args!("{} is missing ({provided_by})", path.display()),
        );
        None
    }
}

/// The directory named by the environment variable `var` (which `cargo
/// xtask test` sets), or `None` after [`skip`].
pub fn env_dir(var: &str, check: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(dir) if Path::new(&dir).is_dir() => Some(PathBuf::from(dir)),
        Some(dir) => {
            skip(
                check,
                format_args!("{var}={} is not a directory", Path::new(&dir).display()),
            );
            None
        }
        None => {
            skip(
                check,
                format_args!("{var} is not set (cargo xtask test sets it)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_path_and_in_sbin() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("no-such-program-phase").is_none());
    }

    #[test]
    fn a_missing_tool_skips_or_fails_by_the_variable() {
        // The rule itself, both ways, in a child process so the variable
        // can be set without racing the other tests.
        if let Some(mode) = std::env::var_os("PHASE_TESTKIT_CHILD") {
            let found = tool("no-such-program-phase", "child check");
            assert!(found.is_none());
            assert_eq!(mode, "skipped", "tool() returned instead of failing");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let run = |require: bool| {
            let mut c = std::process::Command::new(&exe);
            c.args([
                "--exact",
                "tests::a_missing_tool_skips_or_fails_by_the_variable",
                "--nocapture",
            ]);
            c.env_remove(REQUIRE_VAR);
            if require {
                c.env(REQUIRE_VAR, "1").env("PHASE_TESTKIT_CHILD", "failed");
            } else {
                c.env("PHASE_TESTKIT_CHILD", "skipped");
            }
            c.output().unwrap()
        };
        let skipped = run(false);
        assert!(skipped.status.success());
        assert!(
            String::from_utf8_lossy(&skipped.stdout)
                .contains("SKIPPED child check: no-such-program-phase is not installed")
        );
        let failed = run(true);
        assert!(
            !failed.status.success(),
            "a missing tool passed under {REQUIRE_VAR}"
        );
        assert!(String::from_utf8_lossy(&failed.stderr).contains("PHASE_REQUIRE_TOOLS is set"));
    }
}
