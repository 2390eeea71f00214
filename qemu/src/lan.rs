//! A LAN of the harness's own, for local mode: a network namespace with a
//! bridge (10.79.0.1/24, with a veth port so it has carrier before QEMU
//! attaches), a tap device on it for QEMU (`-netdev tap`), and dnsmasq for
//! DHCP on the bridge. Servers and responders run in the namespace on the
//! bridge's address; nothing listens anywhere else. The local scenarios
//! and `cargo xtask bench discover` build the same one.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use phase_tools::announce::{Announcer, Options, Target};
use phase_tools::testnet::{Dnsmasq, Netns};

use crate::vm::Tap;

pub const BRIDGE: &str = "br0";
pub const TAP: &str = "tap0";
/// The bridge's address: dnsmasq, the servers and the responders live here.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
/// What dnsmasq hands out (guests get 10.79.0.50–99).
const RANGE: &str = "10.79.0.50,10.79.0.99,255.255.255.0,1h";

/// The namespace and its bridge and tap; torn down on drop (the namespace
/// takes its interfaces with it, dnsmasq is stopped).
pub struct Lan {
    dnsmasq: Option<Dnsmasq>,
    pub ns: Netns,
}

impl Lan {
    /// The namespace, the bridge and the tap; no DHCP yet
    /// ([`Lan::start_dhcp`]).
    pub fn new() -> Result<Lan> {
        let ns = Netns::new("lan")?;
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ns.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", BRIDGE])?;
        // A veth pair with one end on the bridge gives it carrier (the
        // dummy driver may not be there).
        ns.ip(&[
            "link", "add", "carrier0", "type", "veth", "peer", "name", "carrier1",
        ])?;
        ns.ip(&["link", "set", "carrier0", "master", BRIDGE, "up"])?;
        ns.ip(&["link", "set", "carrier1", "up"])?;
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ns.ip(&["link", "set", TAP, "master", BRIDGE, "up"])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(Lan { dnsmasq: None, ns })
    }

    /// dnsmasq on the bridge, its leases in `dir`, with `boot_url` as
    /// option 67 (`dhcp-boot=`) if given.
    pub fn start_dhcp(&mut self, dir: &Path, boot_url: Option<&str>) -> Result<()> {
        let boot = boot_url.map(|url| format!("--dhcp-boot={url}"));
        let extra: Vec<&str> = boot.iter().map(String::as_str).collect();
        self.dnsmasq = Some(Dnsmasq::start(&self.ns, BRIDGE, RANGE, dir, &extra)?);
        Ok(())
    }

    /// Another machine on the LAN: a namespace of its own whose `eth0` is a
    /// veth port of the bridge, with `address` (10.79.0.2–49: outside
    /// dnsmasq's range). Deleted on drop.
    pub fn host(&self, address: Ipv4Addr) -> Result<Netns> {
        let host = Netns::new("host")?;
        // IFNAMSIZ: the bridge's end is named by the host's last octet.
        let port = format!("port{}", address.octets()[3]);
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
        ])?;
        self.ns
            .ip(&["link", "set", &port, "master", BRIDGE, "up"])?;
        host.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        host.ip(&["link", "set", "eth0", "multicast", "on", "up"])?;
        Ok(host)
    }

    /// The tap, for [`crate::vm::VmSpec::tap`].
    pub fn tap(&self) -> Tap {
        Tap {
            netns: self.ns.name.clone(),
            ifname: TAP.into(),
        }
    }

    /// `phase announce --url URL --interface br0 --name NAME` with a
    /// priority (lower first), by its own code, on a thread in the
    /// namespace; returns once its probes are done.
    pub fn announce(&self, url: &str, name: &str, priority: u16) -> Result<()> {
        let target = Target::from_url(url)?;
        let options = Options {
            interface: Some(BRIDGE.into()),
            name: Some(name.into()),
            channels: None,
            arches: None,
            priority,
        };
        let (tx, rx) = mpsc::channel();
        self.ns.spawn(move || {
            let announcer = match Announcer::bind(&target, &options) {
                Ok(a) => a,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let probed = announcer.probe().map_err(|e| e.to_string());
            let ok = probed.is_ok();
            let _ = tx.send(probed);
            if ok {
                let _ = announcer.run();
            }
        })?;
        rx.recv_timeout(Duration::from_secs(30))
            .context("the responder did not finish probing")?
            .map_err(|e| anyhow::anyhow!("phase announce: {e}"))
    }
}
