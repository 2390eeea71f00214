//! Anything a DHCP server (or anyone on the link) can send: the bytes as an
//! IPv4 packet from the packet socket, and as a bare DHCP message, through
//! the codec and into a client waiting for an OFFER and one waiting for an ACK.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    phase_init::dhcp::fuzz_input(data);
});
