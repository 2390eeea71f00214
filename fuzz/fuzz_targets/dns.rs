//! Anything a host on the LAN can send to 224.0.0.251:5353: the bytes as a
//! DNS message through the parser (and, when they parse, built again and
//! parsed back to the same message), into a browsing init's `on_packet`
//! and through its later queries and verdicts, and into the responder of
//! `phase announce`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    phase_discover::fuzz_input(data);
});
