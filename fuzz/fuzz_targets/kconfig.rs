//! A user's kernel config or kernel image → the config, its check against
//! every profile, and the IKCONFIG and bzImage payload locators.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    phase_kconfig::fuzz_input(data);
});
