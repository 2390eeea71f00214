//! rtnetlink replies and link notifications as the network stage reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(replies) = phase_init::netlink::parse(data) {
        for reply in replies {
            if let phase_init::netlink::Reply::Link { link, .. } = reply {
                let _ = (link.has_carrier(), link.is_ethernet(), link.mac_text());
            }
        }
    }
});
