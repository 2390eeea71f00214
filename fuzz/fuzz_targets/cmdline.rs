//! The kernel command line (and /etc/phase/config) → parameters → BootPlan.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = phase_init::cmdline::split(data);
    let _ = phase_init::plan::parse(&params, true);
});
