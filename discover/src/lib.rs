//! Finding Phase Boot providers on the local network (`phase.mode=local`)
//! with DNS-Based Service Discovery (RFC 6763) over Multicast DNS (RFC
//! 6762), shared by the init, which browses, and the `phase` CLI, which
//! announces (`phase announce`, `phase serve --announce`). No I/O: the
//! callers own the sockets and the clock.
//!
//! - [`dns`]: the message codec, bounded against hostile input;
//! - [`browse`]: [`Browser`], the querier as a state machine, and the
//!   [`Provider`]s it finds;
//! - [`respond`]: [`Responder`], the answers, probes, announcements and
//!   goodbyes of a host that announces;
//! - [`txt`]: [`Advert`], the TXT record's keys.
//!
//! # The service
//!
//! Providers are instances of `_phase-boot._tcp.local` ([`SERVICE`]). An
//! instance's SRV record gives the port and a host name; the host name's A
//! record gives the address. IPv4 only: the URL is built from the A record
//! (`http://A.B.C.D:PORT/PATH`), so the init needs no resolver; AAAA
//! records are noted but not used.
//!
//! # TXT keys
//!
//! | key | value | absent |
//! |---|---|---|
//! | `txtvers` | `1`; any other version is skipped, so a later format can change meaning | `1` |
//! | `path` | the base path of the provider tree on that server: `/`, `/boot/tree/`; RFC 3986 path characters only, no `?`, `#` or `@` | `/` |
//! | `scheme` | `http` or `https` | `http` |
//! | `channels` | comma-separated channels served: `stable,beta` | every channel |
//! | `arches` | comma-separated architectures served: `x86_64,aarch64` | every arch |
//! | `priority` | an integer 0–65535; lower is tried first, as with SRV priorities | `0` |
//!
//! The default scheme is `http`: a provider is chosen here, never trusted —
//! the manifest's signatures and the artifacts' hashes are what the init
//! trusts, whichever way the bytes arrive. `https` works only when the
//! provider's certificate names its IPv4 address, since that is what the
//! URL carries. Keys are case-insensitive, the first occurrence of a key
//! counts, and unknown keys are ignored.
//!
//! # Order
//!
//! [`Browser::providers`] keeps the instances that serve the machine's
//! channel and arch and have a usable address, lowest `priority` first;
//! equal priorities keep the order in which the instances' PTR records first
//! arrived, so on a quiet LAN the quickest responder is tried first. An
//! instance whose URL an earlier one already offers is left out.
//! [`Browser::instances`] lists every instance heard of with the reason it
//! was skipped, for the failure report.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::Ipv4Addr;

pub mod browse;
pub mod dns;
pub mod respond;
pub mod txt;

pub use browse::{Browser, Discovered, Provider, Skip};
pub use dns::{DnsError, Name};
pub use respond::{Answer, Instance, Responder};
pub use txt::Advert;

/// The DNS-SD service type of Phase Boot providers.
pub const SERVICE: &str = "_phase-boot._tcp.local";
/// The Multicast DNS group and port (RFC 6762 §3).
pub const MDNS_ADDR: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const MDNS_PORT: u16 = 5353;

/// [`SERVICE`] as a name.
pub fn service() -> Name {
    Name::new([&b"_phase-boot"[..], b"_tcp", b"local"]).unwrap_or_default()
}

/// For the fuzz target and its replay: every path untrusted bytes take,
/// as a datagram to a browser, a responder and the parser.
#[doc(hidden)]
pub fn fuzz_input(data: &[u8]) {
    use std::time::Duration;
    if let Ok(msg) = dns::Message::parse(data) {
        // What parses must build again, and the result parse the same.
        if let Ok(bytes) = msg.to_bytes() {
            let again = dns::Message::parse(&bytes);
            assert_eq!(again.as_ref(), Ok(&msg), "rebuilt message differs");
        }
        for r in msg.records() {
            let _ = r.name.to_string();
            if let dns::Data::Txt(strings) = &r.data {
                let _ = Advert::from_txt(strings);
            }
        }
    }
    let mut browser = Browser::new(service(), Duration::from_secs(5), 1, Duration::ZERO);
    let t = browser.next_wakeup().unwrap_or_default();
    let _ = browser.poll(t);
    let _ = browser.on_packet(data, t);
    let _ = browser.on_packet(data, t + Duration::from_millis(200));
    while let Some(t) = browser.next_wakeup() {
        let _ = browser.poll(t);
    }
    for d in browser.instances("stable", "x86_64") {
        let _ = d.outcome.map_err(|e| e.to_string());
    }
    let instance = Instance {
        name: "fuzz".into(),
        host: "fuzz.local".into(),
        ipv4: Ipv4Addr::new(10, 0, 0, 1),
        port: 80,
        txt: Vec::new(),
    };
    if let Ok(responder) = Responder::new(service(), vec![instance]) {
        let _ = responder.answer(data, MDNS_PORT);
        let _ = responder.answer(data, 1234);
        let _ = responder.conflict(data);
    }
}
