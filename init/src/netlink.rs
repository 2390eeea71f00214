//! rtnetlink messages ([rtnetlink(7)](https://man7.org/linux/man-pages/man7/rtnetlink.7.html)),
//! built and parsed as bytes: the few requests the network stage makes
//! (list links, set a link up and its MTU, add an address, add a route) and
//! the replies and notifications it reads. No I/O; [`crate::link`] owns the
//! socket. Netlink uses the host's byte order.
//!
//! Replies come from the kernel, but they are parsed as carefully as
//! anything else: every length is checked before it is used.

use std::net::Ipv4Addr;

use thiserror::Error;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_CARRIER: u16 = 33;

/// `struct ifaddrmsg`: family, prefixlen, flags, scope, index.
const IFADDRMSG: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

/// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope,
/// type, flags.
const RTMSG: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;

/// `ifi_flags` bits (netdevice(7)).
pub const IFF_UP: u32 = 0x1;
pub const IFF_LOOPBACK: u32 = 0x8;
pub const IFF_LOWER_UP: u32 = 0x1_0000;
/// `ifi_type` of Ethernet-like links (`ARPHRD_ETHER`).
pub const ARPHRD_ETHER: u16 = 1;

/// The `RTMGRP_LINK` multicast group: link state notifications.
pub const RTMGRP_LINK: u32 = 1;

/// Who installed a route (`rtm_protocol`): the kernel's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `RTPROT_BOOT`: configured at boot (the command line).
    Boot = 3,
    /// `RTPROT_DHCP`.
    Dhcp = 16,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetlinkError {
    #[error(
        "parsing a netlink message at byte {at}: length {len} does not fit the {left} bytes left"
    )]
    ParseHeader { at: usize, len: usize, left: usize },
    #[error("parsing netlink message type {kind} at byte {at}: body of {len} bytes is too short")]
    ParseBody { kind: u16, at: usize, len: usize },
}

/// A link as `RTM_NEWLINK` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `ARPHRD_*`.
    pub kind: u16,
    pub flags: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// `IFLA_OPERSTATE` (`IF_OPER_UP` is 6).
    pub operstate: Option<u8>,
    /// `IFLA_CARRIER`, when the kernel reports it.
    pub carrier_attr: Option<bool>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }

    /// Whether the link has carrier: `IFLA_CARRIER` where present, else the
    /// `IFF_LOWER_UP` flag. A link that is down reports no carrier.
    pub fn has_carrier(&self) -> bool {
        self.is_up() && self.carrier_attr.unwrap_or(self.flags & IFF_LOWER_UP != 0)
    }

    /// An Ethernet-like link that is not loopback: a candidate for DHCP.
    pub fn is_ethernet(&self) -> bool {
        self.kind == ARPHRD_ETHER && self.flags & IFF_LOOPBACK == 0
    }

    /// `aa:bb:cc:dd:ee:ff`, for logs.
    pub fn mac_text(&self) -> String {
        self.mac.map(|m| mac_text(&m)).unwrap_or_default()
    }
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One message from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Link {
        seq: u32,
        link: Link,
    },
    /// `NLMSG_ERROR`: `errno` 0 is an acknowledgement, otherwise a negated
    /// errno for request `seq`.
    Error {
        seq: u32,
        errno: i32,
    },
    Done {
        seq: u32,
    },
    Other {
        seq: u32,
        kind: u16,
    },
}

fn ne16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_ne_bytes([x, y]),
        _ => 0,
    }
}

fn ne32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_ne_bytes([w, x, y, z]),
        _ => 0,
    }
}

fn align4(n: usize) -> usize {
    // Callers pass lengths below 2^32; adding 3 cannot overflow a usize.
    (n + 3) & !3
}

/// Splits a buffer of netlink messages and decodes the ones the stage uses.
pub fn parse(buf: &[u8]) -> Result<Vec<Reply>, NetlinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDR {
        let len = ne32(buf, at) as usize;
        let left = buf.len() - at;
        if len < NLMSG_HDR || len > left {
            return Err(NetlinkError::ParseHeader { at, len, left });
        }
        let kind = ne16(buf, at + 4);
        let seq = ne32(buf, at + 8);
        let body = &buf[at + NLMSG_HDR..at + len];
        let short = || NetlinkError::ParseBody {
            kind,
            at,
            len: body.len(),
        };
        out.push(match kind {
            NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(short());
                }
                Reply::Error {
                    seq,
                    errno: ne32(body, 0) as i32,
                }
            }
            NLMSG_DONE => Reply::Done { seq },
            RTM_NEWLINK => {
                if body.len() < IFINFOMSG {
                    return Err(short());
                }
                Reply::Link {
                    seq,
                    link: parse_link(body),
                }
            }
            _ => Reply::Other { seq, kind },
        });
        at += align4(len).min(left);
    }
    Ok(out)
}

/// Attributes after a fixed header: (type, data). A truncated attribute ends
/// the list; the rest of the message is ignored.
fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(ne16(b, 0));
        if len < 4 || len > b.len() {
            break;
        }
        // The top bits are NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        out.push((ne16(b, 2) & 0x3fff, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn parse_link(body: &[u8]) -> Link {
    let mut link = Link {
        kind: ne16(body, 2),
        index: ne32(body, 4),
        flags: ne32(body, 8),
        ..Link::default()
    };
    for (kind, data) in attributes(&body[IFINFOMSG..]) {
        match kind {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                link.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            IFLA_ADDRESS => link.mac = data.try_into().ok(),
            IFLA_MTU if data.len() == 4 => link.mtu = Some(ne32(data, 0)),
            IFLA_OPERSTATE => link.operstate = data.first().copied(),
            IFLA_CARRIER => link.carrier_attr = data.first().map(|&c| c != 0),
            _ => {}
        }
    }
    link
}

/// Builds one request: header, fixed part, attributes.
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Builder {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(fixed);
        Builder { buf }
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Builder {
        // Attributes here are 4 bytes; 4 + 4 fits a u16.
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        // A request is a few dozen bytes.
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG] {
    let mut m = [0u8; IFINFOMSG];
    m[0] = AF_UNSPEC;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// `RTM_GETLINK` dump: every link.
pub fn get_links(seq: u32) -> Vec<u8> {
    Builder::new(RTM_GETLINK, NLM_F_DUMP, seq, &ifinfomsg(0, 0, 0)).finish()
}

/// `RTM_NEWLINK` on an existing link: set it up, and its MTU if given.
pub fn set_link_up(seq: u32, index: u32, mtu: Option<u32>) -> Vec<u8> {
    let b = Builder::new(
        RTM_NEWLINK,
        NLM_F_ACK,
        seq,
        &ifinfomsg(index, IFF_UP, IFF_UP),
    );
    match mtu {
        Some(mtu) => b.attr(IFLA_MTU, &mtu.to_ne_bytes()),
        None => b,
    }
    .finish()
}

/// `RTM_NEWADDR`: `address/prefix_len` on `index`, replacing an equal one.
pub fn add_address(
    seq: u32,
    index: u32,
    address: Ipv4Addr,
    prefix_len: u8,
    broadcast: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = [0u8; IFADDRMSG];
    m[0] = AF_INET;
    m[1] = prefix_len;
    m[3] = RT_SCOPE_UNIVERSE;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    let b = Builder::new(
        RTM_NEWADDR,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        &m,
    )
    .attr(IFA_LOCAL, &address.octets())
    .attr(IFA_ADDRESS, &address.octets());
    match broadcast {
        Some(bc) => b.attr(IFA_BROADCAST, &bc.octets()),
        None => b,
    }
    .finish()
}

/// A route to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: the destination is on the link.
    pub gateway: Option<Ipv4Addr>,
    pub source: Option<Ipv4Addr>,
    /// The gateway is reachable on the link even though no prefix covers it
    /// (a /32 lease, a classless route through a router off the subnet).
    pub onlink: bool,
    pub origin: RouteOrigin,
}

/// `RTM_NEWROUTE` in the main table through `index`, replacing an equal one.
pub fn add_route(seq: u32, index: u32, route: &RouteSpec) -> Vec<u8> {
    let mut m = [0u8; RTMSG];
    m[0] = AF_INET;
    m[1] = route.prefix_len;
    m[4] = RT_TABLE_MAIN;
    m[5] = route.origin as u8;
    m[6] = if route.gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    m[7] = RTN_UNICAST;
    if route.onlink {
        m[8..12].copy_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
    }
    let mut b = Builder::new(
        RTM_NEWROUTE,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        &m,
    );
    if route.prefix_len > 0 {
        b = b.attr(RTA_DST, &route.destination.octets());
    }
    if let Some(gw) = route.gateway {
        b = b.attr(RTA_GATEWAY, &gw.octets());
    }
    if let Some(src) = route.source {
        b = b.attr(RTA_PREFSRC, &src.octets());
    }
    b.attr(RTA_OIF, &index.to_ne_bytes()).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/netlink/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn captured_link_dump_parses() {
        // RTM_GETLINK dump from a network namespace holding lo and one veth
        // end, captured on x86_64 (little-endian) with Linux 6.1.
        if cfg!(target_endian = "big") {
            return;
        }
        let replies = parse(&fixture("getlink-veth.bin")).unwrap();
        let links: Vec<&Link> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Link { link, .. } => Some(link),
                _ => None,
            })
            .collect();
        assert_eq!(links.len(), 2);
        let lo = links[0];
        assert_eq!((lo.index, lo.name.as_str()), (1, "lo"));
        assert!(!lo.is_ethernet());
        let veth = links[1];
        assert_eq!(veth.name, "p5c");
        assert!(veth.is_ethernet());
        assert_eq!(veth.mac, Some([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(veth.mtu, Some(1500));
        assert!(veth.is_up() && veth.has_carrier());
        assert_eq!(veth.mac_text(), "52:54:00:12:34:56");
        assert!(matches!(replies.last(), Some(Reply::Done { .. })));
    }

    fn header(len: u32, kind: u16, seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&0u16.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn acks_errors_and_malformed_buffers() {
        let mut ack = header(36, NLMSG_ERROR, 7);
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend_from_slice(&[0; 16]);
        let mut eexist = header(36, NLMSG_ERROR, 8);
        eexist.extend_from_slice(&(-17i32).to_ne_bytes());
        eexist.extend_from_slice(&[0; 16]);
        let mut both = ack.clone();
        both.extend_from_slice(&eexist);
        assert_eq!(
            parse(&both).unwrap(),
            [
                Reply::Error { seq: 7, errno: 0 },
                Reply::Error { seq: 8, errno: -17 }
            ]
        );
        let table: Vec<(Vec<u8>, NetlinkError)> = vec![
            (
                header(8, NLMSG_DONE, 1),
                NetlinkError::ParseHeader {
                    at: 0,
                    len: 8,
                    left: 16,
                },
            ),
            (
                header(64, NLMSG_DONE, 1),
                NetlinkError::ParseHeader {
                    at: 0,
                    len: 64,
                    left: 16,
                },
            ),
            (
                header(16, NLMSG_ERROR, 1),
                NetlinkError::ParseBody {
                    kind: NLMSG_ERROR,
                    at: 0,
                    len: 0,
                },
            ),
            (
                {
                    let mut m = header(20, RTM_NEWLINK, 1);
                    m.extend_from_slice(&[0; 4]);
                    m
                },
                NetlinkError::ParseBody {
                    kind: RTM_NEWLINK,
                    at: 0,
                    len: 4,
                },
            ),
        ];
        for (buf, want) in table {
            assert_eq!(parse(&buf).unwrap_err(), want);
        }
        // A trailing fragment shorter than a header is ignored.
        assert_eq!(parse(&[1, 2, 3]).unwrap(), []);
    }

    #[test]
    fn truncated_attributes_end_the_list() {
        let mut body = ifinfomsg(3, IFF_UP | IFF_LOWER_UP, 0).to_vec();
        body[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        body.extend_from_slice(&9u16.to_ne_bytes());
        body.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        body.extend_from_slice(b"eth0\0\0\0\0");
        body.extend_from_slice(&200u16.to_ne_bytes()); // claims more than is there
        body.extend_from_slice(&IFLA_MTU.to_ne_bytes());
        let link = parse_link(&body);
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu),
            (3, "eth0", None)
        );
        assert!(link.has_carrier());
        // IFLA_CARRIER wins over the flag.
        let mut no_carrier = body.clone();
        no_carrier.truncate(IFINFOMSG + 12);
        no_carrier.extend_from_slice(&5u16.to_ne_bytes());
        no_carrier.extend_from_slice(&IFLA_CARRIER.to_ne_bytes());
        no_carrier.extend_from_slice(&[0, 0, 0, 0]);
        assert!(!parse_link(&no_carrier).has_carrier());
    }

    #[test]
    fn request_bytes() {
        if cfg!(target_endian = "big") {
            return;
        }
        #[rustfmt::skip]
        let getlink: &[u8] = &[
            32, 0, 0, 0,            // length
            18, 0,                  // RTM_GETLINK
            0x01, 0x03,             // NLM_F_REQUEST | NLM_F_DUMP
            9, 0, 0, 0,             // seq
            0, 0, 0, 0,             // pid: the kernel
            0, 0, 0, 0,             // ifinfomsg: AF_UNSPEC, type 0
            0, 0, 0, 0,             // index 0
            0, 0, 0, 0, 0, 0, 0, 0, // flags, change
        ];
        assert_eq!(get_links(9), getlink);

        #[rustfmt::skip]
        let up: &[u8] = &[
            40, 0, 0, 0, 16, 0, 0x05, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, // RTM_NEWLINK, REQUEST|ACK
            0, 0, 0, 0, 2, 0, 0, 0, // index 2
            1, 0, 0, 0, 1, 0, 0, 0, // flags IFF_UP, change IFF_UP
            8, 0, 4, 0, 0xdc, 0x05, 0, 0, // IFLA_MTU 1500
        ];
        assert_eq!(set_link_up(1, 2, Some(1500)), up);

        #[rustfmt::skip]
        let addr: &[u8] = &[
            40, 0, 0, 0, 20, 0, 0x05, 0x05, 2, 0, 0, 0, 0, 0, 0, 0, // RTM_NEWADDR, REQUEST|ACK|CREATE|REPLACE
            2, 24, 0, 0, 2, 0, 0, 0,      // AF_INET /24, scope universe, index 2
            8, 0, 2, 0, 10, 0, 2, 15,     // IFA_LOCAL
            8, 0, 1, 0, 10, 0, 2, 15,     // IFA_ADDRESS
        ];
        assert_eq!(
            add_address(2, 2, Ipv4Addr::new(10, 0, 2, 15), 24, None),
            addr
        );

        #[rustfmt::skip]
        let default_route: &[u8] = &[
            44, 0, 0, 0, 24, 0, 0x05, 0x05, 3, 0, 0, 0, 0, 0, 0, 0, // RTM_NEWROUTE
            2, 0, 0, 0, 254, 16, 0, 1,    // AF_INET /0, main table, RTPROT_DHCP, universe, unicast
            4, 0, 0, 0,                   // RTNH_F_ONLINK
            8, 0, 5, 0, 10, 0, 2, 2,      // RTA_GATEWAY
            8, 0, 4, 0, 2, 0, 0, 0,       // RTA_OIF 2
        ];
        assert_eq!(
            add_route(
                3,
                2,
                &RouteSpec {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                    source: None,
                    onlink: true,
                    origin: RouteOrigin::Dhcp,
                }
            ),
            default_route
        );
        let link_route = add_route(
            4,
            2,
            &RouteSpec {
                destination: Ipv4Addr::new(192, 168, 7, 0),
                prefix_len: 24,
                gateway: None,
                source: Some(Ipv4Addr::new(10, 0, 2, 15)),
                onlink: false,
                origin: RouteOrigin::Boot,
            },
        );
        // scope link, RTA_DST and RTA_PREFSRC, no gateway.
        assert_eq!(&link_route[16..24], &[2, 24, 0, 0, 254, 3, 253, 1]);
        assert_eq!(&link_route[28..36], &[8, 0, 1, 0, 192, 168, 7, 0]);
        assert_eq!(&link_route[36..44], &[8, 0, 7, 0, 10, 0, 2, 15]);
        assert_eq!(link_route.len(), 52);
    }
}
