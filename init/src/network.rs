//! Stage 4: the network. Choose the interface, bring it up and wait for
//! carrier ([`crate::link`]), then either run DHCPv4 on a packet socket
//! ([`crate::dhcp`]) or apply a static `ip=`; install address, routes and
//! MTU through netlink, write `resolv.conf` for musl's resolver, and set the
//! host name. A failed attempt is retried as a whole until `rd.retry` runs
//! out; each step inside an attempt has its own `rd.net.timeout.*` budget.
//!
//! Everything here also runs as an ordinary program inside a network
//! namespace (`netstage`), which is how it is tested against a real DHCP
//! server.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::dhcp::client::{Client, Config, Step};
use crate::dhcp::{self, Lease, MessageType, Route};
use crate::link::{self, Choice, LinkError, Netlink};
use crate::netlink::{Link, RouteOrigin, RouteSpec};
use crate::plan::{BootPlan, IpConfig, Mode, StaticIp};
use crate::{error_chain, sys, udp};

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("ip=none: the network is not to be configured")]
    NotConfigured,
    #[error("bringing up the link")]
    Link(#[from] LinkError),
    #[error("opening a packet socket on {interface}")]
    PacketSocket {
        interface: String,
        #[source]
        error: io::Error,
    },
    #[error("sending a DHCP {kind} on {interface}")]
    DhcpSend {
        interface: String,
        kind: MessageType,
        #[source]
        error: io::Error,
    },
    #[error("receiving DHCP replies on {interface}")]
    DhcpReceive {
        interface: String,
        #[source]
        error: io::Error,
    },
    #[error("getrandom for the DHCP transaction id")]
    Random(#[source] io::Error),
    #[error("no DHCP lease on {interface} within rd.net.timeout.dhcp={} s ({})", budget.as_secs(), describe_sent(sent, *naks))]
    DhcpTimeout {
        interface: String,
        budget: Duration,
        sent: Vec<(MessageType, Duration)>,
        naks: u32,
    },
    #[error("applying the configuration to {interface}")]
    Apply {
        interface: String,
        #[source]
        error: LinkError,
    },
    #[error("writing {}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("sethostname({name:?})")]
    Hostname {
        name: String,
        #[source]
        error: io::Error,
    },
}

impl NetworkError {
    /// A stable snake-case name for what went wrong, for the failure event:
    /// a silent DHCP server, a missing link and a link without carrier are
    /// three different faults to whoever reads the report.
    pub fn kind(&self) -> &'static str {
        match self {
            NetworkError::NotConfigured => "not_configured",
            NetworkError::Link(LinkError::NoLink { .. }) => "no_link",
            NetworkError::Link(LinkError::NoCarrier { .. }) => "no_carrier",
            NetworkError::Link(_) => "netlink",
            NetworkError::PacketSocket { .. } => "packet_socket",
            NetworkError::DhcpSend { .. } => "dhcp_send",
            NetworkError::DhcpReceive { .. } => "dhcp_receive",
            NetworkError::Random(_) => "getrandom",
            NetworkError::DhcpTimeout { .. } => "dhcp_timeout",
            NetworkError::Apply { .. } => "apply",
            NetworkError::ResolvConf { .. } => "resolv_conf",
            NetworkError::Hostname { .. } => "hostname",
        }
    }

    /// The values a budget that ran out names, for the failure event
    /// (`null` for the other errors, whose text says it all).
    pub fn detail(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            NetworkError::Link(LinkError::NoLink {
                wanted,
                budget,
                seen,
            }) => {
                json!({ "wanted": wanted, "timeout_s": budget.as_secs(), "seen": seen })
            }
            NetworkError::Link(LinkError::NoCarrier { names, budget }) => {
                json!({ "interfaces": names, "timeout_s": budget.as_secs() })
            }
            NetworkError::DhcpTimeout {
                interface,
                budget,
                sent,
                naks,
            } => json!({
                "interface": interface,
                "timeout_s": budget.as_secs(),
                "sent": sent.len(),
                "naks": naks,
            }),
            _ => serde_json::Value::Null,
        }
    }
}

fn describe_sent(sent: &[(MessageType, Duration)], naks: u32) -> String {
    if sent.is_empty() {
        return "nothing sent".into();
    }
    let times: Vec<String> = sent
        .iter()
        .map(|(k, t)| format!("{k} at {:.1} s", t.as_secs_f64()))
        .collect();
    let naks = match naks {
        0 => String::new(),
        n => format!(", {n} NAK(s)"),
    };
    format!("sent {}{naks}", times.join(", "))
}

/// How the interface got its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Dhcp,
    Static,
}

/// The network as configured; the stage's event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Configured {
    pub interface: String,
    pub mac: String,
    pub method: Method,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// Seconds; `None` for a static address, `u32::MAX` for an infinite lease.
    pub lease_s: Option<u32>,
    pub server: Option<Ipv4Addr>,
    pub routes: Vec<Route>,
    /// Milliseconds from the start of the attempt until carrier, and for the
    /// DHCP exchange (first DISCOVER to ACK).
    pub carrier_ms: u64,
    pub dhcp_ms: Option<u64>,
    /// DHCP messages sent, and NAKs that restarted the exchange.
    pub dhcp_sent: usize,
    pub naks: u32,
    /// Failed attempts before this one.
    pub retries: u32,
    /// The lease's boot file when it is a provider URL (option 67).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_url: Option<String>,
}

/// Where the stage writes and what it may change.
#[derive(Debug, Clone)]
pub struct Target {
    /// `/etc/resolv.conf` in the initramfs.
    pub resolv_conf: PathBuf,
    /// Set the host name from `ip=` or DHCP option 12.
    pub set_hostname: bool,
}

/// The interface choice the plan makes: `ip=…:<iface>:`, then `BOOTIF=`,
/// then the first Ethernet link with carrier.
pub fn choice(plan: &BootPlan) -> Choice {
    let named = match &plan.ip {
        IpConfig::Dhcp { interface, .. } => interface.clone(),
        IpConfig::Static(s) => s.interface.clone(),
        IpConfig::None => None,
    };
    match (named, plan.bootif) {
        (Some(name), _) => Choice::Name(name),
        (None, Some(mac)) => Choice::Mac(mac),
        (None, None) => Choice::FirstWithCarrier,
    }
}

/// Why the stage brings the network up (`Ok`), or why it is skipped.
pub fn needed(plan: &BootPlan) -> Result<&'static str, &'static str> {
    if plan.ip == IpConfig::None {
        return Err("ip=none");
    }
    if !plan.providers.is_empty() {
        Ok("phase.provider=")
    } else if plan.mode == Mode::Local {
        Ok("phase.mode=local")
    } else if plan.need_net {
        Ok("rd.neednet=1")
    } else {
        Err("no provider and no rd.neednet=1")
    }
}

/// Runs the stage: attempts until one succeeds or `rd.retry` has passed
/// since the first began. `say` receives progress lines; `tried` collects one
/// line per failed attempt for the failure report.
pub fn run(
    plan: &BootPlan,
    target: &Target,
    say: &mut dyn FnMut(&str),
    tried: &mut Vec<String>,
) -> Result<Configured, NetworkError> {
    if plan.ip == IpConfig::None {
        return Err(NetworkError::NotConfigured);
    }
    let start = Instant::now();
    let mut retries = 0;
    loop {
        match attempt(plan, target, say) {
            Ok(mut done) => {
                done.retries = retries;
                return Ok(done);
            }
            Err(e) => {
                let line = error_chain(&e);
                tried.push(format!("attempt {}: {line}", retries + 1));
                if start.elapsed() >= plan.retry {
                    return Err(e);
                }
                retries += 1;
                say(&format!(
                    "{line}; retrying (rd.retry={} s, {} s left)",
                    plan.retry.as_secs(),
                    plan.retry.saturating_sub(start.elapsed()).as_secs()
                ));
                // Failures that return at once (a refused netlink request)
                // must not spin; the budgets bound everything else.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn attempt(
    plan: &BootPlan,
    target: &Target,
    say: &mut dyn FnMut(&str),
) -> Result<Configured, NetworkError> {
    let mut nl = Netlink::open()?;
    let choice = choice(plan);
    let chosen = link::bring_up(
        &mut nl,
        &choice,
        plan.net_timeout.iflink,
        plan.net_timeout.carrier,
        say,
    )?;
    let link = chosen.link;
    say(&format!(
        "{} ({}) has carrier after {} ms",
        link.name,
        link.mac_text(),
        chosen.carrier_after.as_millis()
    ));
    let carrier_ms = chosen.carrier_after.as_millis() as u64;
    let configured = match &plan.ip {
        IpConfig::Static(s) => apply_static(&mut nl, &link, s, carrier_ms)?,
        IpConfig::Dhcp { mtu, requested, .. } => {
            let mac = link.mac.unwrap_or_default();
            let config = Config {
                mac,
                requested: *requested,
                hostname: None,
            };
            let (lease, stats) = exchange(&link, config, plan.net_timeout.dhcp, say)?;
            say(&format!(
                "DHCP lease {}/{} from {} for {} s after {} ms",
                lease.address,
                lease.prefix_len,
                lease.server,
                lease.lease_secs,
                stats.elapsed.as_millis()
            ));
            apply_lease(&mut nl, &link, &lease, *mtu, carrier_ms, &stats)?
        }
        IpConfig::None => return Err(NetworkError::NotConfigured),
    };
    write_resolv_conf(&target.resolv_conf, &configured)?;
    if target.set_hostname
        && let Some(name) = &configured.hostname
    {
        sys::sethostname(name).map_err(|error| NetworkError::Hostname {
            name: name.clone(),
            error,
        })?;
    }
    Ok(configured)
}

/// What the exchange cost.
#[derive(Debug, Clone)]
pub struct ExchangeStats {
    pub elapsed: Duration,
    pub sent: usize,
    pub naks: u32,
}

/// One DHCP exchange on `link`'s packet socket, bounded by `budget`.
pub fn exchange(
    link: &Link,
    config: Config,
    budget: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<(Lease, ExchangeStats), NetworkError> {
    let interface = link.name.clone();
    let socket =
        sys::socket_packet_ipv4(link.index).map_err(|error| NetworkError::PacketSocket {
            interface: interface.clone(),
            error,
        })?;
    let mut random = [0u8; 12];
    // Not secret, only different per machine; must not wait for the entropy pool.
    sys::getrandom_insecure(&mut random).map_err(NetworkError::Random)?;
    let xid = u32::from_ne_bytes([random[0], random[1], random[2], random[3]]);
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&random[4..]);
    let start = Instant::now();
    let deadline = start + budget;
    let mut client = Client::new(config, xid, u64::from_ne_bytes(seed), Duration::ZERO);
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some((kind, payload)) = client.poll_transmit(start.elapsed()) {
            let packet = udp::encode(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                dhcp::CLIENT_PORT,
                dhcp::SERVER_PORT,
                &payload,
            );
            sys::sendto_link_broadcast(&socket, link.index, &packet).map_err(|error| {
                NetworkError::DhcpSend {
                    interface: interface.clone(),
                    kind,
                    error,
                }
            })?;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NetworkError::DhcpTimeout {
                interface,
                budget,
                sent: client.sent().iter().map(|s| (s.kind, s.at)).collect(),
                naks: client.naks(),
            });
        }
        let wake = client
            .next_wakeup()
            .map_or(deadline, |w| (start + w).min(deadline));
        let readable =
            sys::poll_readable(&socket, wake.saturating_duration_since(now)).map_err(|error| {
                NetworkError::DhcpReceive {
                    interface: interface.clone(),
                    error,
                }
            })?;
        if !readable {
            continue;
        }
        // Drain everything queued; the socket sees all IPv4 on the link.
        loop {
            let n = match sys::recv(&socket, &mut buf, true) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    return Err(NetworkError::DhcpReceive {
                        interface: interface.clone(),
                        error,
                    });
                }
            };
            let Ok(datagram) = udp::decode(&buf[..n]) else {
                continue;
            };
            if datagram.destination_port != dhcp::CLIENT_PORT
                || datagram.source_port != dhcp::SERVER_PORT
            {
                continue;
            }
            match client.handle(datagram.payload, start.elapsed()) {
                Step::Bound(lease) => {
                    let stats = ExchangeStats {
                        elapsed: start.elapsed(),
                        sent: client.sent().len(),
                        naks: client.naks(),
                    };
                    return Ok((lease, stats));
                }
                Step::Offered { server, address } => {
                    say(&format!("DHCP OFFER of {address} from {server}"));
                }
                Step::Restarted { server, message } => say(&format!(
                    "DHCP NAK from {}{}: starting over",
                    server.map_or("a server".to_owned(), |s| s.to_string()),
                    message.map(|m| format!(" ({m})")).unwrap_or_default()
                )),
                Step::Ignored(_) => {}
            }
        }
    }
}

fn in_subnet(address: Ipv4Addr, prefix_len: u8, other: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    u32::from(address) & mask == u32::from(other) & mask
}

/// The kernel routes to install for `routes` from an interface with
/// `address/prefix_len`: a `0.0.0.0` gateway means on-link, and a gateway
/// outside the subnet is marked on-link so the kernel accepts it.
pub fn route_specs(
    address: Ipv4Addr,
    prefix_len: u8,
    routes: &[Route],
    origin: RouteOrigin,
) -> Vec<RouteSpec> {
    routes
        .iter()
        .map(|r| {
            let gateway = Some(r.gateway).filter(|g| !g.is_unspecified());
            RouteSpec {
                destination: r.destination,
                prefix_len: r.prefix_len,
                gateway,
                source: Some(address),
                onlink: gateway.is_some_and(|g| !in_subnet(address, prefix_len, g)),
                origin,
            }
        })
        .collect()
}

fn apply(
    nl: &mut Netlink,
    link: &Link,
    address: Ipv4Addr,
    prefix_len: u8,
    broadcast: Option<Ipv4Addr>,
    mtu: Option<u16>,
    routes: &[RouteSpec],
) -> Result<(), LinkError> {
    if let Some(mtu) = mtu {
        nl.set_up(link, Some(u32::from(mtu)))?;
    }
    nl.add_address(link, address, prefix_len, broadcast)?;
    for route in routes {
        nl.add_route(link, route)?;
    }
    Ok(())
}

fn apply_lease(
    nl: &mut Netlink,
    link: &Link,
    lease: &Lease,
    mtu_override: Option<u16>,
    carrier_ms: u64,
    stats: &ExchangeStats,
) -> Result<Configured, NetworkError> {
    let routes = lease.effective_routes();
    let specs = route_specs(lease.address, lease.prefix_len, &routes, RouteOrigin::Dhcp);
    let mtu = mtu_override.or(lease.mtu);
    apply(
        nl,
        link,
        lease.address,
        lease.prefix_len,
        lease.broadcast,
        mtu,
        &specs,
    )
    .map_err(|error| NetworkError::Apply {
        interface: link.name.clone(),
        error,
    })?;
    Ok(Configured {
        interface: link.name.clone(),
        mac: link.mac_text(),
        method: Method::Dhcp,
        address: lease.address,
        prefix_len: lease.prefix_len,
        gateway: lease.gateway(),
        dns: lease.dns.clone(),
        domain: lease.domain.clone(),
        hostname: lease.hostname.clone(),
        mtu,
        lease_s: Some(lease.lease_secs),
        server: Some(lease.server),
        routes,
        carrier_ms,
        dhcp_ms: Some(stats.elapsed.as_millis() as u64),
        dhcp_sent: stats.sent,
        naks: stats.naks,
        retries: 0,
        boot_url: lease.boot_url.clone(),
    })
}

fn apply_static(
    nl: &mut Netlink,
    link: &Link,
    s: &StaticIp,
    carrier_ms: u64,
) -> Result<Configured, NetworkError> {
    let routes: Vec<Route> = s
        .gateway
        .map(|gateway| Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway,
        })
        .into_iter()
        .collect();
    let specs = route_specs(s.address, s.prefix_len, &routes, RouteOrigin::Boot);
    apply(nl, link, s.address, s.prefix_len, None, s.mtu, &specs).map_err(|error| {
        NetworkError::Apply {
            interface: link.name.clone(),
            error,
        }
    })?;
    Ok(Configured {
        interface: link.name.clone(),
        mac: link.mac_text(),
        method: Method::Static,
        address: s.address,
        prefix_len: s.prefix_len,
        gateway: s.gateway,
        dns: s.dns.clone(),
        domain: None,
        hostname: s.hostname.clone(),
        mtu: s.mtu,
        lease_s: None,
        server: None,
        routes,
        carrier_ms,
        dhcp_ms: None,
        dhcp_sent: 0,
        naks: 0,
        retries: 0,
        boot_url: None,
    })
}

/// Resolves a host name through the C library's resolver (musl reads
/// resolv.conf), as the fetch stage will. Returns the addresses as text.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<String>> {
    use std::net::ToSocketAddrs;
    let mut addrs: Vec<String> = (host, port)
        .to_socket_addrs()?
        .map(|a| a.ip().to_string())
        .collect();
    addrs.dedup();
    Ok(addrs)
}

/// The resolv.conf text for a configuration: musl reads at most three
/// name servers. `None` when there is nothing to say (no DNS servers), so
/// an existing file is left alone.
pub fn resolv_conf_text(c: &Configured) -> Option<String> {
    if c.dns.is_empty() {
        return None;
    }
    let mut text = format!(
        "# Written by the Phase Boot init from {} on {}.\n",
        match c.method {
            Method::Dhcp => "DHCP",
            Method::Static => "ip=",
        },
        c.interface
    );
    if let Some(domain) = &c.domain {
        text.push_str(&format!("search {domain}\n"));
    }
    for ns in c.dns.iter().take(3) {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    Some(text)
}

/// Writes resolv.conf in place (it may be a bind mount, which a rename
/// would fail on).
fn write_resolv_conf(path: &Path, c: &Configured) -> Result<(), NetworkError> {
    let Some(text) = resolv_conf_text(c) else {
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| NetworkError::ResolvConf {
            path: path.to_owned(),
            error,
        })?;
    }
    std::fs::write(path, text).map_err(|error| NetworkError::ResolvConf {
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn interface_choice_order() {
        let table: &[(&str, Choice)] = &[
            ("ip=dhcp", Choice::FirstWithCarrier),
            (
                "ip=eth1:dhcp BOOTIF=01-52-54-00-12-34-56",
                Choice::Name("eth1".into()),
            ),
            (
                "BOOTIF=01-52-54-00-12-34-56",
                Choice::Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            ),
            (
                "ip=10.0.0.5::10.0.0.1:24::enp3s0:none BOOTIF=01-52-54-00-12-34-56",
                Choice::Name("enp3s0".into()),
            ),
            (
                "ip=10.0.0.5::10.0.0.1:24:::none BOOTIF=01-52-54-00-12-34-56",
                Choice::Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            ),
        ];
        for (line, want) in table {
            let plan = crate::plan::parse(&split(line.as_bytes()), false).plan;
            assert_eq!(choice(&plan), *want, "{line}");
        }
    }

    #[test]
    fn budget_errors_name_their_kind_and_values() {
        let dhcp = NetworkError::DhcpTimeout {
            interface: "eth0".into(),
            budget: Duration::from_secs(5),
            sent: vec![
                (MessageType::Discover, Duration::ZERO),
                (MessageType::Discover, Duration::from_millis(1100)),
            ],
            naks: 0,
        };
        assert_eq!(dhcp.kind(), "dhcp_timeout");
        assert_eq!(
            dhcp.detail(),
            serde_json::json!({ "interface": "eth0", "timeout_s": 5, "sent": 2, "naks": 0 })
        );
        let carrier = NetworkError::Link(LinkError::NoCarrier {
            names: vec!["eth0".into()],
            budget: Duration::from_secs(10),
        });
        assert_eq!(carrier.kind(), "no_carrier");
        assert_eq!(
            carrier.detail(),
            serde_json::json!({ "interfaces": ["eth0"], "timeout_s": 10 })
        );
        let link = NetworkError::Link(LinkError::NoLink {
            wanted: "of Ethernet type".into(),
            budget: Duration::from_secs(2),
            seen: vec!["lo".into()],
        });
        assert_eq!(link.kind(), "no_link");
        assert_eq!(link.detail()["timeout_s"], 2);
        assert_eq!(NetworkError::NotConfigured.kind(), "not_configured");
        assert!(NetworkError::NotConfigured.detail().is_null());
    }

    #[test]
    fn when_the_stage_runs() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("phase.report", Err("no provider and no rd.neednet=1")),
            ("rd.neednet=1", Ok("rd.neednet=1")),
            ("phase.provider=http://p/", Ok("phase.provider=")),
            ("phase.mode=local", Ok("phase.mode=local")),
            ("phase.provider=http://p/ ip=none", Err("ip=none")),
            ("rd.neednet=1 ip=off", Err("ip=none")),
            (
                "rd.neednet=1 ip=10.0.0.5::10.0.0.1:24::eth0:none",
                Ok("rd.neednet=1"),
            ),
        ];
        for (line, want) in table {
            let plan = crate::plan::parse(&split(line.as_bytes()), false).plan;
            assert_eq!(needed(&plan), *want, "{line}");
        }
    }

    #[test]
    fn routes_become_kernel_routes() {
        let r = |d: &str, len: u8, gw: &str| Route {
            destination: ip(d),
            prefix_len: len,
            gateway: ip(gw),
        };
        let specs = route_specs(
            ip("10.0.2.15"),
            24,
            &[
                r("0.0.0.0", 0, "10.0.2.2"),
                r("192.168.9.0", 24, "0.0.0.0"),
                r("10.99.0.0", 16, "172.16.0.1"),
            ],
            RouteOrigin::Dhcp,
        );
        let summary: Vec<(Option<Ipv4Addr>, bool)> =
            specs.iter().map(|s| (s.gateway, s.onlink)).collect();
        assert_eq!(
            summary,
            [
                (Some(ip("10.0.2.2")), false),
                (None, false),
                (Some(ip("172.16.0.1")), true)
            ]
        );
        assert!(specs.iter().all(|s| s.source == Some(ip("10.0.2.15"))));
        // A /32 lease (cloud style): the gateway is never in the subnet.
        let specs = route_specs(
            ip("10.1.2.3"),
            32,
            &[r("0.0.0.0", 0, "10.1.2.1")],
            RouteOrigin::Dhcp,
        );
        assert!(specs[0].onlink);
    }

    fn configured() -> Configured {
        Configured {
            interface: "eth0".into(),
            mac: "52:54:00:12:34:56".into(),
            method: Method::Dhcp,
            address: ip("10.0.2.15"),
            prefix_len: 24,
            gateway: Some(ip("10.0.2.2")),
            dns: vec![ip("10.0.2.3")],
            domain: None,
            hostname: None,
            mtu: None,
            lease_s: Some(86400),
            server: Some(ip("10.0.2.2")),
            routes: vec![],
            carrier_ms: 0,
            dhcp_ms: Some(3),
            dhcp_sent: 2,
            naks: 0,
            retries: 0,
            boot_url: None,
        }
    }

    #[test]
    fn resolv_conf_for_musl() {
        let qemu = configured();
        assert_eq!(
            resolv_conf_text(&qemu).unwrap(),
            "# Written by the Phase Boot init from DHCP on eth0.\nnameserver 10.0.2.3\n"
        );
        let mut many = configured();
        many.domain = Some("lab.example".into());
        many.dns = ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]
            .map(ip)
            .to_vec();
        many.method = Method::Static;
        assert_eq!(
            resolv_conf_text(&many).unwrap(),
            "# Written by the Phase Boot init from ip= on eth0.\nsearch lab.example\n\
             nameserver 1.1.1.1\nnameserver 2.2.2.2\nnameserver 3.3.3.3\n"
        );
        let mut none = configured();
        none.dns.clear();
        assert_eq!(resolv_conf_text(&none), None);
    }

    #[test]
    fn timeout_report_lists_what_was_sent() {
        let e = NetworkError::DhcpTimeout {
            interface: "eth0".into(),
            budget: Duration::from_secs(8),
            sent: vec![
                (MessageType::Discover, Duration::ZERO),
                (MessageType::Discover, Duration::from_millis(1100)),
                (MessageType::Discover, Duration::from_millis(3040)),
            ],
            naks: 0,
        };
        assert_eq!(
            e.to_string(),
            "no DHCP lease on eth0 within rd.net.timeout.dhcp=8 s (sent DISCOVER at 0.0 s, \
             DISCOVER at 1.1 s, DISCOVER at 3.0 s)"
        );
    }
}
