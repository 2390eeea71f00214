//! Links over rtnetlink, with no subprocess: list them, set them up, wait
//! for carrier within a budget, and configure addresses, routes and MTU.
//!
//! Waiting is event-driven: a second netlink socket subscribed to link
//! notifications wakes the wait whenever any link changes, and the state is
//! then read afresh with a dump, so no notification can be missed between
//! the dump and the wait.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::netlink::{self, Link, NetlinkError, Reply, RouteSpec};
use crate::sys;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE) with groups {groups:#x}")]
    Socket {
        groups: u32,
        #[source]
        error: io::Error,
    },
    #[error("netlink {what}: send")]
    Send {
        what: String,
        #[source]
        error: io::Error,
    },
    #[error("netlink {what}: receive")]
    Receive {
        what: String,
        #[source]
        error: io::Error,
    },
    #[error("netlink {what}")]
    Parse {
        what: String,
        #[source]
        error: NetlinkError,
    },
    #[error("netlink {what}: the kernel refused")]
    Refused {
        what: String,
        #[source]
        error: io::Error,
    },
    #[error("waiting for link changes: poll")]
    Wait(#[source] io::Error),
    #[error("no network interface {wanted} appeared within rd.net.timeout.iflink={} s (links: {})", budget.as_secs(), seen.join(", "))]
    NoLink {
        wanted: String,
        budget: Duration,
        seen: Vec<String>,
    },
    #[error("no carrier on {} within rd.net.timeout.carrier={} s", names.join(", "), budget.as_secs())]
    NoCarrier {
        names: Vec<String>,
        budget: Duration,
    },
}

/// Which interface the network stage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `ip=…:<iface>:…`.
    Name(String),
    /// `BOOTIF=`: the PXE boot interface's MAC address.
    Mac([u8; 6]),
    /// The first Ethernet link that reports carrier.
    FirstWithCarrier,
}

impl Choice {
    fn describe(&self) -> String {
        match self {
            Choice::Name(n) => n.clone(),
            Choice::Mac(m) => format!("with MAC {} (BOOTIF=)", netlink::mac_text(m)),
            Choice::FirstWithCarrier => "of Ethernet type".into(),
        }
    }

    fn matches(&self, link: &Link) -> bool {
        match self {
            Choice::Name(n) => link.name == *n,
            Choice::Mac(m) => link.mac.as_ref() == Some(m),
            Choice::FirstWithCarrier => link.is_ethernet(),
        }
    }
}

/// A netlink route socket for requests.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// Large enough for any one datagram of a link dump (the kernel sends at
/// most 32 KiB at a time).
const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    pub fn open() -> Result<Netlink, LinkError> {
        let fd =
            sys::socket_netlink_route(0).map_err(|error| LinkError::Socket { groups: 0, error })?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request and collects the replies to it, up to its
    /// acknowledgement or the end of its dump.
    fn exchange(&mut self, what: &str, request: &[u8], seq: u32) -> Result<Vec<Reply>, LinkError> {
        sys::send(&self.fd, request).map_err(|error| LinkError::Send {
            what: what.to_owned(),
            error,
        })?;
        let mut out = Vec::new();
        loop {
            let n =
                sys::recv(&self.fd, &mut self.buf, false).map_err(|error| LinkError::Receive {
                    what: what.to_owned(),
                    error,
                })?;
            let replies = netlink::parse(&self.buf[..n]).map_err(|error| LinkError::Parse {
                what: what.to_owned(),
                error,
            })?;
            for reply in replies {
                match reply {
                    Reply::Done { seq: s } if s == seq => return Ok(out),
                    Reply::Error { seq: s, errno } if s == seq => {
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(LinkError::Refused {
                            what: what.to_owned(),
                            error: io::Error::from_raw_os_error(errno.saturating_neg()),
                        });
                    }
                    other if reply_seq(&other) == seq => out.push(other),
                    // A late reply to an earlier request: not ours.
                    _ => {}
                }
            }
        }
    }

    /// Every link the kernel knows.
    pub fn links(&mut self) -> Result<Vec<Link>, LinkError> {
        let seq = self.next_seq();
        let replies = self.exchange("RTM_GETLINK dump", &netlink::get_links(seq), seq)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Link { link, .. } => Some(link),
                _ => None,
            })
            .collect())
    }

    /// Sets a link up, and its MTU if given.
    pub fn set_up(&mut self, link: &Link, mtu: Option<u32>) -> Result<(), LinkError> {
        let seq = self.next_seq();
        let what = match mtu {
            Some(m) => format!("RTM_NEWLINK {} up mtu {m}", link.name),
            None => format!("RTM_NEWLINK {} up", link.name),
        };
        self.exchange(&what, &netlink::set_link_up(seq, link.index, mtu), seq)
            .map(drop)
    }

    pub fn add_address(
        &mut self,
        link: &Link,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<(), LinkError> {
        let seq = self.next_seq();
        let what = format!("RTM_NEWADDR {address}/{prefix_len} dev {}", link.name);
        let request = netlink::add_address(seq, link.index, address, prefix_len, broadcast);
        self.exchange(&what, &request, seq).map(drop)
    }

    pub fn add_route(&mut self, link: &Link, route: &RouteSpec) -> Result<(), LinkError> {
        let seq = self.next_seq();
        let via = route
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let what = format!(
            "RTM_NEWROUTE {}/{}{via} dev {}{}",
            route.destination,
            route.prefix_len,
            link.name,
            if route.onlink { " onlink" } else { "" }
        );
        self.exchange(&what, &netlink::add_route(seq, link.index, route), seq)
            .map(drop)
    }
}

fn reply_seq(reply: &Reply) -> u32 {
    match reply {
        Reply::Link { seq, .. }
        | Reply::Error { seq, .. }
        | Reply::Done { seq }
        | Reply::Other { seq, .. } => *seq,
    }
}

/// A socket that wakes on link notifications.
struct Watch {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Watch {
    fn open() -> Result<Watch, LinkError> {
        let groups = netlink::RTMGRP_LINK;
        let fd = sys::socket_netlink_route(groups)
            .map_err(|error| LinkError::Socket { groups, error })?;
        Ok(Watch {
            fd,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Waits until a link changes or `deadline` passes, then drains what
    /// arrived (the caller re-reads the state with a dump).
    fn wait(&mut self, deadline: Instant) -> Result<(), LinkError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if sys::poll_readable(&self.fd, left).map_err(LinkError::Wait)? {
            // ENOBUFS (notifications overflowed) is harmless here: the dump
            // that follows reads the current state anyway.
            while sys::recv(&self.fd, &mut self.buf, true).is_ok() {}
        }
        Ok(())
    }
}

/// What bring-up found.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub link: Link,
    /// When the link was first seen, and when it had carrier, from the start.
    pub appeared_after: Duration,
    pub carrier_after: Duration,
}

/// Brings `lo` and the candidate links up and waits until the chosen one has
/// carrier. The interface must appear within `iflink`; once it has, carrier
/// must come within `carrier`. With [`Choice::FirstWithCarrier`] every
/// Ethernet link is set up and the lowest-numbered one with carrier wins.
/// `say` hears once when the wait for the interface, and for carrier, begins.
pub fn bring_up(
    nl: &mut Netlink,
    choice: &Choice,
    iflink: Duration,
    carrier: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Chosen, LinkError> {
    // Subscribe before the first dump, so a change in between still wakes us.
    let mut watch = Watch::open()?;
    let start = Instant::now();
    let mut appeared: Option<Instant> = None;
    let mut lo_done = false;
    let (mut said_iflink, mut said_carrier) = (false, false);
    loop {
        let links = nl.links()?;
        if !lo_done && let Some(lo) = links.iter().find(|l| l.name == "lo" && !l.is_up()) {
            nl.set_up(lo, None)?;
        }
        lo_done = true;
        let mut candidates: Vec<&Link> = links.iter().filter(|l| choice.matches(l)).collect();
        candidates.sort_by_key(|l| l.index);
        for link in candidates.iter().filter(|l| !l.is_up()) {
            nl.set_up(link, None)?;
        }
        let now = Instant::now();
        if let Some(link) = candidates.iter().find(|l| l.has_carrier()) {
            return Ok(Chosen {
                link: (*link).clone(),
                appeared_after: appeared.unwrap_or(now) - start,
                carrier_after: now - start,
            });
        }
        let deadline = if candidates.is_empty() {
            let deadline = start + iflink;
            if now >= deadline {
                return Err(LinkError::NoLink {
                    wanted: choice.describe(),
                    budget: iflink,
                    seen: links.iter().map(|l| l.name.clone()).collect(),
                });
            }
            if !said_iflink {
                said_iflink = true;
                say(&format!(
                    "waiting up to {} s for a network interface {}",
                    iflink.as_secs(),
                    choice.describe()
                ));
            }
            deadline
        } else {
            let first = *appeared.get_or_insert(now);
            let deadline = first + carrier;
            if now >= deadline {
                return Err(LinkError::NoCarrier {
                    names: candidates.iter().map(|l| l.name.clone()).collect(),
                    budget: carrier,
                });
            }
            if !said_carrier && now > first {
                said_carrier = true;
                let names: Vec<&str> = candidates.iter().map(|l| l.name.as_str()).collect();
                say(&format!(
                    "waiting up to {} s for carrier on {}",
                    carrier.as_secs(),
                    names.join(", ")
                ));
            }
            deadline
        };
        watch.wait(deadline)?;
    }
}
