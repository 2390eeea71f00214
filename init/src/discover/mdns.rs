//! DNS-SD over Multicast DNS on the boot link: `phase-discover`'s
//! [`Browser`] driven over a UDP socket on port 5353 that only sees the
//! boot link (`SO_BINDTODEVICE`), IPv4 link-local multicast only.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use phase_discover::dns::MAX_MESSAGE;
use phase_discover::{Browser, Discovered, MDNS_ADDR, MDNS_PORT, Provider, service};
use thiserror::Error;

use crate::sys;

const GROUP: SocketAddrV4 = SocketAddrV4::new(MDNS_ADDR, MDNS_PORT);

#[derive(Debug, Error)]
pub enum MdnsError {
    #[error("opening UDP port 5353 on {interface} ({address}) for 224.0.0.251")]
    Socket {
        interface: String,
        address: Ipv4Addr,
        #[source]
        error: io::Error,
    },
    #[error("getrandom for the first query's delay")]
    Random(#[source] io::Error),
    #[error("sending an mDNS query on {interface}")]
    Send {
        interface: String,
        #[source]
        error: io::Error,
    },
    #[error("receiving mDNS answers on {interface}")]
    Receive {
        interface: String,
        #[source]
        error: io::Error,
    },
}

/// What one browse heard.
#[derive(Debug, Clone)]
pub struct Browsed {
    /// Every instance, in the order their PTR records first arrived.
    pub instances: Vec<Discovered>,
    /// The usable ones, lowest priority first, then arrival.
    pub providers: Vec<Provider>,
    pub queries: u32,
    /// When the first usable provider was known, from the start.
    pub first: Option<Duration>,
}

/// Browses for providers of `channel`/`arch` on `interface` (whose address
/// is `address`) for at most `window`. Once a provider is known — one of
/// the LAN's, or `known` (the DHCP boot URL) — it stops at `settle` after
/// the start instead, when every responder has answered the first query.
pub fn browse(
    interface: &str,
    address: Ipv4Addr,
    window: Duration,
    settle: Duration,
    known: bool,
    channel: &str,
    arch: &str,
) -> Result<Browsed, MdnsError> {
    let socket =
        sys::socket_udp_multicast(interface, address, MDNS_ADDR, MDNS_PORT).map_err(|error| {
            MdnsError::Socket {
                interface: interface.into(),
                address,
                error,
            }
        })?;
    let mut seed = [0u8; 8];
    // Not secret: only different per machine, so a rack powered on at
    // once does not query in step.
    sys::getrandom_insecure(&mut seed).map_err(MdnsError::Random)?;
    let start = Instant::now();
    let mut browser = Browser::new(service(), window, u64::from_ne_bytes(seed), Duration::ZERO);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut first = None;
    loop {
        let now = start.elapsed();
        if let Some(query) = browser.poll(now) {
            sys::sendto_ipv4(&socket, &query, GROUP).map_err(|error| MdnsError::Send {
                interface: interface.into(),
                error,
            })?;
            continue;
        }
        let end = if known || first.is_some() {
            window.min(settle)
        } else {
            window
        };
        if now >= end {
            break;
        }
        let wake = browser.next_wakeup().map_or(end, |w| w.min(end));
        let readable = sys::poll_readable(&socket, wake.saturating_sub(now)).map_err(|error| {
            MdnsError::Receive {
                interface: interface.into(),
                error,
            }
        })?;
        if !readable {
            continue;
        }
        loop {
            let n = match sys::recv(&socket, &mut buf, true) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    return Err(MdnsError::Receive {
                        interface: interface.into(),
                        error,
                    });
                }
            };
            // What does not parse, or concerns another service, is
            // passed over.
            let taken = browser.on_packet(&buf[..n], start.elapsed());
            if taken.is_ok_and(|t| t > 0)
                && first.is_none()
                && !browser.providers(channel, arch).is_empty()
            {
                first = Some(start.elapsed());
            }
        }
    }
    Ok(Browsed {
        instances: browser.instances(channel, arch),
        providers: browser.providers(channel, arch),
        queries: browser.queries_sent(),
        first,
    })
}
