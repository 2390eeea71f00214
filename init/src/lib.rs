//! Phase Boot's PID 1, as a library: the pure logic (command line, plan,
//! policy decisions) is host-testable and fuzzable; every side effect goes
//! through [`sys`], the only module allowed `unsafe`.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "test-hooks")]
pub mod bench;
pub mod clock;
pub mod cmdline;
pub mod dhcp;
pub mod discover;
pub mod early;
pub mod event;
pub mod fdt;
pub mod fetch;
pub mod kexec;
#[macro_use]
pub mod log;
pub mod floor;
pub mod link;
pub mod modules;
pub mod netlink;
pub mod network;
pub mod pid1;
pub mod plan;
pub mod policy;
pub mod reaper;
pub mod root;
pub mod rotation;
pub mod sealed;
pub mod sys;
pub mod udp;
pub mod watchdog;

/// An error and its sources as one line: `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
