//! `phase announce` and `phase serve --announce`: answer Multicast DNS
//! queries for a provider tree on one interface, so machines booting with
//! `phase.mode=local` find it; and `phase discover`, which browses the way
//! such a machine does. The records, answers and browsing are
//! `phase-discover`'s; this module owns the socket.
//!
//! The socket is UDP 5353 on all addresses with `SO_REUSEADDR` and
//! `SO_REUSEPORT`, so avahi-daemon or another responder on the host keeps
//! working; it joins 224.0.0.251 on the chosen interface only and sends
//! there with TTL 255 (RFC 6762 §11). IPv4 only. A responder probes for
//! its names (three probes, 250 ms apart, RFC 6762 §8.1) and stops if
//! another host claims them, announces twice one second apart (§8.3), and
//! on SIGINT or SIGTERM sends a goodbye (§10.1) before it exits. It does
//! not break probe ties between hosts probing at the same moment.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phase_discover::browse::Discovered;
use phase_discover::respond::RespondError;
use phase_discover::txt::TxtError;
use phase_discover::{Advert, Browser, Instance, MDNS_ADDR, MDNS_PORT, Responder, service};
use rustix::net::{AddressFamily, SocketType, ipproto, netdevice, sockopt};
use thiserror::Error;

const GROUP: SocketAddrV4 = SocketAddrV4::new(MDNS_ADDR, MDNS_PORT);
const PROBES: u32 = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// The same multicast answer is not sent again within this (RFC 6762 §6).
const REPEAT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum AnnounceError {
    #[error("--url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("resolving {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("interface {0}")]
    Interface(String, #[source] io::Error),
    #[error(
        "finding the IPv4 address of {0} (no route to 224.0.0.251 there? name one with --interface)"
    )]
    InterfaceAddress(String, #[source] io::Error),
    #[error("{0} has no IPv4 address")]
    NoAddress(String),
    #[error("opening UDP port 5353 on {0}")]
    Socket(String, #[source] io::Error),
    #[error("sending to {0}")]
    Send(SocketAddrV4, #[source] io::Error),
    #[error("receiving on {0}")]
    Receive(String, #[source] io::Error),
    #[error("the provider's TXT record")]
    Txt(#[source] TxtError),
    #[error("the instance name {0:?}")]
    Responder(String, #[source] RespondError),
    #[error(
        "another host on {interface} already answers for {record}: choose another name with --name"
    )]
    Conflict { interface: String, record: String },
}

/// Where the provider tree is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// The server's address; unspecified means the interface's own.
    pub address: Ipv4Addr,
    pub port: u16,
    /// The tree's base path, starting with `/`.
    pub path: String,
}

impl Target {
    /// `http[s]://HOST[:PORT][/PATH]`. A host name is resolved here, once,
    /// to its first IPv4 address: the init uses the address it is given.
    pub fn from_url(url: &str) -> Result<Target, AnnounceError> {
        let bad = |reason: &str| AnnounceError::Url {
            url: url.into(),
            reason: reason.into(),
        };
        let lower = url.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            return Err(bad("expected an http:// or https:// URL"));
        };
        if rest.contains(['?', '#', '@'])
            || rest.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("a provider URL has no user, query, fragment or spaces"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.starts_with('[') {
            return Err(bad("local mode announces IPv4 addresses only"));
        }
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (
                host,
                port.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("the URL has no host or port"));
        }
        let address = match host.parse::<Ipv4Addr>() {
            Ok(a) => a,
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|source| AnnounceError::Resolve {
                    host: host.into(),
                    source,
                })?
                .find_map(|a| match a.ip() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .ok_or_else(|| bad("the host has no IPv4 address"))?,
        };
        let target = Target {
            https,
            address,
            port,
            path: path.into(),
        };
        target.check().map_err(|reason| bad(&reason))?;
        Ok(target)
    }

    /// The tree `phase serve` serves at `listen`: an unspecified address
    /// means the announcing interface's own.
    pub fn listener(listen: SocketAddr, https: bool) -> Result<Target, AnnounceError> {
        let bad = |reason: String| AnnounceError::Url {
            url: format!("{listen}"),
            reason,
        };
        let SocketAddr::V4(v4) = listen else {
            return Err(bad("local mode announces IPv4 addresses only".into()));
        };
        let target = Target {
            https,
            address: *v4.ip(),
            port: v4.port(),
            path: "/".into(),
        };
        if !target.address.is_unspecified() {
            target.check().map_err(bad)?;
        }
        Ok(target)
    }

    /// What a machine on the LAN could not reach.
    fn check(&self) -> Result<(), String> {
        let a = self.address;
        if a.is_loopback() || a.is_multicast() || a.is_broadcast() || a.is_unspecified() {
            return Err(format!(
                "{a} cannot be reached from the LAN: give the address machines there use"
            ));
        }
        Ok(())
    }

    fn url(&self, address: Ipv4Addr) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{address}:{}{}", self.port, self.path)
    }
}

/// What to announce besides the URL.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The interface to announce on; default: the one that routes to
    /// 224.0.0.251.
    pub interface: Option<String>,
    /// The instance name; default "Phase Boot on HOSTNAME".
    pub name: Option<String>,
    pub channels: Option<Vec<String>>,
    pub arches: Option<Vec<String>>,
    pub priority: u16,
}

/// The mDNS socket on one interface.
struct Link {
    socket: UdpSocket,
    /// The interface, for messages: its name or "the interface of ADDR".
    name: String,
    address: Ipv4Addr,
}

impl Link {
    fn open(interface: Option<&str>) -> Result<Link, AnnounceError> {
        let label = interface.unwrap_or("the default interface").to_owned();
        let sock_err = |e: rustix::io::Errno| AnnounceError::Socket(label.clone(), e.into());
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, Some(ipproto::UDP))
            .map_err(sock_err)?;
        let index = interface
            .map(|name| {
                netdevice::name_to_index(&fd, name)
                    .map_err(|e| AnnounceError::Interface(name.into(), e.into()))
            })
            .transpose()?;
        let address = interface_address(index)
            .map_err(|e| AnnounceError::InterfaceAddress(label.clone(), e))?;
        if address.is_unspecified() {
            return Err(AnnounceError::NoAddress(label.clone()));
        }
        let name = match interface {
            Some(name) => name.to_owned(),
            None => format!("the interface of {address}"),
        };
        sockopt::set_socket_reuseaddr(&fd, true).map_err(sock_err)?;
        sockopt::set_socket_reuseport(&fd, true).map_err(sock_err)?;
        rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT))
            .map_err(sock_err)?;
        match index {
            Some(i) => {
                sockopt::set_ip_add_membership_with_ifindex(&fd, &MDNS_ADDR, &address, i)
                    .map_err(sock_err)?;
                sockopt::set_ip_multicast_if_with_ifindex(&fd, &MDNS_ADDR, &address, i)
                    .map_err(sock_err)?;
            }
            None => {
                sockopt::set_ip_add_membership(&fd, &MDNS_ADDR, &address).map_err(sock_err)?;
                sockopt::set_ip_multicast_if(&fd, &address).map_err(sock_err)?;
            }
        }
        sockopt::set_ip_multicast_ttl(&fd, 255).map_err(sock_err)?;
        sockopt::set_ip_ttl(&fd, 255).map_err(sock_err)?;
        // Browsers on this host (avahi's included) hear us too.
        sockopt::set_ip_multicast_loop(&fd, true).map_err(sock_err)?;
        Ok(Link {
            socket: UdpSocket::from(fd),
            name,
            address,
        })
    }

    fn send(&self, bytes: &[u8], to: SocketAddrV4) -> Result<(), AnnounceError> {
        self.socket
            .send_to(bytes, to)
            .map(drop)
            .map_err(|e| AnnounceError::Send(to, e))
    }

    /// The next datagram before `until` (`None`: wait as long as it takes).
    fn receive(
        &self,
        buf: &mut [u8],
        until: Option<Instant>,
    ) -> Result<Option<(usize, SocketAddrV4)>, AnnounceError> {
        loop {
            let timeout = match until {
                None => None,
                Some(u) => match u.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            self.socket
                .set_read_timeout(timeout)
                .map_err(|e| AnnounceError::Receive(self.name.clone(), e))?;
            match self.socket.recv_from(buf) {
                Ok((n, SocketAddr::V4(from))) => return Ok(Some((n, from))),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(AnnounceError::Receive(self.name.clone(), e)),
            }
        }
    }

    /// Whether `source` is on this link: the kernel would reach it from
    /// this interface's address (RFC 6762 §11 answers the local link only;
    /// the group's traffic from other interfaces can reach this socket when
    /// another program joined it there).
    fn on_link(&self, source: Ipv4Addr) -> bool {
        let probe = || -> io::Result<IpAddr> {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect((source, MDNS_PORT))?;
            Ok(s.local_addr()?.ip())
        };
        probe().is_ok_and(|a| a == self.address)
    }
}

/// The address the kernel sends multicast from on interface `index` (or
/// on the route to 224.0.0.251): a connected UDP socket's source, which
/// needs no address list.
fn interface_address(index: Option<u32>) -> io::Result<Ipv4Addr> {
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, Some(ipproto::UDP))?;
    if let Some(i) = index {
        sockopt::set_ip_multicast_if_with_ifindex(&fd, &MDNS_ADDR, &Ipv4Addr::UNSPECIFIED, i)?;
    }
    let socket = UdpSocket::from(fd);
    socket.connect(GROUP)?;
    match socket.local_addr()?.ip() {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Ok(Ipv4Addr::UNSPECIFIED),
    }
}

/// "phase-boot-on-build-7": a host label from an instance name.
fn host_label(name: &str) -> String {
    let mut label = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.ends_with('-') {
            label.push('-');
        }
    }
    let label: String = label.trim_matches('-').chars().take(63).collect();
    let label = label.trim_end_matches('-');
    if label.is_empty() {
        "phase-boot".into()
    } else {
        label.into()
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if host.is_empty() {
        "Phase Boot".into()
    } else {
        format!("Phase Boot on {host}")
    }
}

/// A responder bound to its interface.
pub struct Announcer {
    link: Link,
    responder: Responder,
    instance: String,
    url: String,
    /// The last multicast answer and when it went out.
    last: Mutex<Option<(Vec<u8>, Instant)>>,
}

impl Announcer {
    pub fn bind(target: &Target, options: &Options) -> Result<Announcer, AnnounceError> {
        let link = Link::open(options.interface.as_deref())?;
        let address = if target.address.is_unspecified() {
            link.address
        } else {
            target.address
        };
        let instance = options.name.clone().unwrap_or_else(default_name);
        let advert = Advert {
            path: target.path.clone(),
            https: target.https,
            channels: options.channels.clone(),
            arches: options.arches.clone(),
            priority: options.priority,
        };
        let responder = Responder::new(
            service(),
            vec![Instance {
                name: instance.clone(),
                host: format!("{}.local", host_label(&instance)),
                ipv4: address,
                port: target.port,
                txt: advert.to_txt().map_err(AnnounceError::Txt)?,
            }],
        )
        .map_err(|e| AnnounceError::Responder(instance.clone(), e))?;
        Ok(Announcer {
            url: target.url(address),
            link,
            responder,
            instance,
            last: Mutex::new(None),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The URL a browsing machine builds from the records.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn interface(&self) -> &str {
        &self.link.name
    }

    /// Probes for the names; fails if another host answers for them.
    pub fn probe(&self) -> Result<(), AnnounceError> {
        let mut buf = vec![0; phase_discover::dns::MAX_MESSAGE];
        // RFC 6762 §8.1: a random 0–250 ms first, so hosts started together
        // do not probe in step.
        let mut seed = [0u8; 2];
        let _ = getrandom::fill(&mut seed);
        let mut until =
            Instant::now() + Duration::from_millis(u64::from(u16::from_le_bytes(seed) % 251));
        self.listen_for_conflicts(&mut buf, until)?;
        for _ in 0..PROBES {
            self.link.send(&self.responder.probe(), GROUP)?;
            until += PROBE_INTERVAL;
            self.listen_for_conflicts(&mut buf, until)?;
        }
        Ok(())
    }

    fn listen_for_conflicts(&self, buf: &mut [u8], until: Instant) -> Result<(), AnnounceError> {
        while let Some((n, _)) = self.link.receive(buf, Some(until))? {
            if let Some(record) = self.responder.conflict(&buf[..n]) {
                return Err(AnnounceError::Conflict {
                    interface: self.link.name.clone(),
                    record,
                });
            }
        }
        Ok(())
    }

    /// Announces, then answers queries; returns only on an error.
    pub fn run(&self) -> Result<(), AnnounceError> {
        let mut buf = vec![0; phase_discover::dns::MAX_MESSAGE];
        self.link.send(&self.responder.announcement(), GROUP)?;
        self.answer_until(&mut buf, Some(Instant::now() + ANNOUNCE_INTERVAL))?;
        self.link.send(&self.responder.announcement(), GROUP)?;
        self.answer_until(&mut buf, None)
    }

    fn answer_until(&self, buf: &mut [u8], until: Option<Instant>) -> Result<(), AnnounceError> {
        while let Some((n, from)) = self.link.receive(buf, until)? {
            // One querier we cannot reach must not stop the answers to others.
            if let Err(e) = self.handle(&buf[..n], from) {
                eprintln!("phase announce: {:#}", anyhow::Error::from(e));
            }
        }
        Ok(())
    }

    fn handle(&self, packet: &[u8], from: SocketAddrV4) -> Result<(), AnnounceError> {
        if let Some(record) = self.responder.conflict(packet) {
            eprintln!(
                "phase announce: {from} on {} also answers for {record}",
                self.link.name
            );
        }
        if !self.link.on_link(*from.ip()) {
            return Ok(());
        }
        let Some(answer) = self.responder.answer(packet, from.port()) else {
            return Ok(());
        };
        if answer.unicast {
            return self.link.send(&answer.message, from);
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((bytes, at)) = &*last
            && *bytes == answer.message
            && at.elapsed() < REPEAT_INTERVAL
        {
            return Ok(());
        }
        self.link.send(&answer.message, GROUP)?;
        *last = Some((answer.message, Instant::now()));
        Ok(())
    }

    /// Tells the LAN the instance is gone (TTL 0), twice: one lost packet
    /// should not leave a dead provider in caches.
    pub fn goodbye(&self) -> Result<(), AnnounceError> {
        let bye = self.responder.goodbye();
        self.link.send(&bye, GROUP)?;
        self.link.send(&bye, GROUP)
    }
}

/// On SIGINT or SIGTERM: the goodbye, a line saying so, and exit 0.
pub fn goodbye_on_signals(announcer: Arc<Announcer>) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let code = match announcer.goodbye() {
                Ok(()) => {
                    println!("goodbye sent for {:?}", announcer.instance());
                    0
                }
                Err(e) => {
                    eprintln!("phase: {:#}", anyhow::Error::from(e));
                    1
                }
            };
            let _ = io::stdout().flush();
            std::process::exit(code);
        }
    });
    Ok(())
}

/// Browses as a booting machine would for `window`; `heard` is called with
/// each instance name when its first record arrives.
pub fn discover(
    interface: Option<&str>,
    window: Duration,
    channel: &str,
    arch: &str,
    mut heard: impl FnMut(&str),
) -> Result<Vec<Discovered>, AnnounceError> {
    let link = Link::open(interface)?;
    let start = Instant::now();
    let now = || start.elapsed();
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut browser = Browser::new(service(), window, u64::from_le_bytes(seed), now());
    let mut buf = vec![0; phase_discover::dns::MAX_MESSAGE];
    let mut known = 0;
    loop {
        while let Some(query) = browser.poll(now()) {
            link.send(&query, GROUP)?;
        }
        let wake = browser
            .next_wakeup()
            .unwrap_or(browser.deadline())
            .min(browser.deadline());
        if now() >= browser.deadline() {
            break;
        }
        if let Some((n, _)) = link.receive(&mut buf, Some(start + wake))? {
            // A datagram that does not parse is someone else's problem.
            let _ = browser.on_packet(&buf[..n], now());
            let found = browser.instances(channel, arch);
            for d in &found[known..] {
                heard(&d.instance);
            }
            known = found.len();
        }
    }
    Ok(browser.instances(channel, arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_provider_urls() {
        let t = Target::from_url("http://10.0.0.5:8080/tree/").unwrap();
        assert_eq!(
            t,
            Target {
                https: false,
                address: Ipv4Addr::new(10, 0, 0, 5),
                port: 8080,
                path: "/tree/".into()
            }
        );
        let t = Target::from_url("HTTPS://192.168.1.2").unwrap();
        assert_eq!((t.https, t.port, t.path.as_str()), (true, 443, "/"));
        assert_eq!(t.url(t.address), "https://192.168.1.2:443/");
        let served = Target::listener("0.0.0.0:8080".parse().unwrap(), false).unwrap();
        assert!(served.address.is_unspecified());
        assert!(Target::listener("127.0.0.1:8080".parse().unwrap(), false).is_err());
        assert!(Target::listener("[::]:8080".parse().unwrap(), false).is_err());
        for bad in [
            "ftp://10.0.0.1/",
            "http://user@10.0.0.1/",
            "http://10.0.0.1/?q",
            "http://[fd00::1]/",
            "http://10.0.0.1:x/",
            "http://10.0.0.1:0/",
            "http://127.0.0.1:8080/",
            "http://224.0.0.251/",
            "http://:80/",
            "http://0.0.0.0:80/",
        ] {
            assert!(Target::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(host_label("Phase Boot on build-7"), "phase-boot-on-build-7");
        assert_eq!(host_label("  Café / Ünïcode  "), "caf-n-code");
        assert_eq!(host_label("---"), "phase-boot");
        assert_eq!(host_label(&"a".repeat(80)).len(), 63);
    }
}
