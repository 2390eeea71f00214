//! DHCPv4 messages (RFC 2131) and the options the init uses (RFC 2132, RFC
//! 3442 classless static routes, RFC 3396 long options), as pure functions
//! over bytes: no sockets, no clock. [`client`] is the state machine that
//! drives an exchange; the network stage does the I/O.
//!
//! Parsing treats every byte as hostile: lengths are checked before each
//! read, options may arrive split (RFC 3396) or overloaded into the `file`
//! and `sname` fields (option 52), and text that ends up in
//! `/etc/resolv.conf` or the host name is restricted to host-name characters.

pub mod client;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;
use thiserror::Error;

/// UDP port of DHCP servers and of clients.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// RFC 2131 §3: the options field starts with this cookie.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, 4 addresses, chaddr, sname, file.
const BOOTP_LEN: usize = 236;
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;
/// A message without options would be useless to us: every DHCP message
/// carries at least option 53.
const MIN_LEN: usize = BOOTP_LEN + MAGIC_COOKIE.len();

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHER: u8 = 1;

/// Option codes (RFC 2132 unless noted).
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETERS: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 3442.
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// What the client asks the server for (option 55).
const PARAMETERS: [u8; 12] = [
    code::SUBNET_MASK,
    code::ROUTER,
    code::DNS,
    code::HOSTNAME,
    code::DOMAIN,
    code::MTU,
    code::BROADCAST,
    code::LEASE_TIME,
    code::SERVER_ID,
    code::RENEWAL,
    code::REBINDING,
    code::CLASSLESS_ROUTES,
];

/// The vendor class (option 60) servers can match on.
pub const VENDOR_CLASS: &str = "phase-boot";

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DISCOVER",
            MessageType::Offer => "OFFER",
            MessageType::Request => "REQUEST",
            MessageType::Decline => "DECLINE",
            MessageType::Ack => "ACK",
            MessageType::Nak => "NAK",
            MessageType::Release => "RELEASE",
            MessageType::Inform => "INFORM",
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DhcpError {
    #[error("parsing a DHCP message of {len} bytes: shorter than the {MIN_LEN}-byte header")]
    ParseShort { len: usize },
    #[error("parsing a DHCP message: the magic cookie is {found:02x?}")]
    ParseCookie { found: [u8; 4] },
    #[error("parsing DHCP option {code} at byte {at}: it runs past the end of its field")]
    ParseOptionOverrun { code: u8, at: usize },
    #[error("parsing a DHCP message: it has no message type (option 53)")]
    ParseNoMessageType,
    #[error("parsing a DHCP message: unknown message type {value}")]
    ParseMessageType { value: u8 },
    #[error("reading DHCP option {code} ({name}): {len} bytes is not a valid length")]
    OptionLength {
        code: u8,
        name: &'static str,
        len: usize,
    },
    #[error("reading DHCP option 1 (subnet mask): {mask} is not a contiguous netmask")]
    OptionNetmask { mask: Ipv4Addr },
    #[error("reading a DHCP {kind}: it names no {what}")]
    LeaseMissing {
        kind: MessageType,
        what: &'static str,
    },
}

/// A parsed message: the BOOTP fields the client checks and the options,
/// each code's data concatenated in order of appearance (RFC 3396).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub kind: MessageType,
    pub options: BTreeMap<u8, Vec<u8>>,
}

fn ipv4(bytes: &[u8], at: usize) -> Ipv4Addr {
    let mut b = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    Ipv4Addr::from(b)
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Walks one options area, appending each option's data to `out`. Returns the
/// overload value (option 52) if this area carried one. `base` is the area's
/// offset in the message, for error messages.
fn read_options(
    area: &[u8],
    base: usize,
    out: &mut BTreeMap<u8, Vec<u8>>,
) -> Result<Option<u8>, DhcpError> {
    let mut overload = None;
    let mut i = 0;
    while let Some(&c) = area.get(i) {
        match c {
            code::PAD => i += 1,
            code::END => break,
            _ => {
                let Some(&len) = area.get(i + 1) else {
                    return Err(DhcpError::ParseOptionOverrun {
                        code: c,
                        at: base + i,
                    });
                };
                // i + 2 + len cannot overflow: i < area.len() and len <= 255.
                let data = area.get(i + 2..i + 2 + usize::from(len)).ok_or(
                    DhcpError::ParseOptionOverrun {
                        code: c,
                        at: base + i,
                    },
                )?;
                if c == code::OVERLOAD {
                    overload = data.first().copied();
                } else {
                    out.entry(c).or_default().extend_from_slice(data);
                }
                i += 2 + usize::from(len);
            }
        }
    }
    Ok(overload)
}

impl Message {
    /// Parses a DHCP message (the UDP payload).
    pub fn parse(bytes: &[u8]) -> Result<Message, DhcpError> {
        if bytes.len() < MIN_LEN {
            return Err(DhcpError::ParseShort { len: bytes.len() });
        }
        let mut cookie = [0u8; 4];
        cookie.copy_from_slice(&bytes[BOOTP_LEN..MIN_LEN]);
        if cookie != MAGIC_COOKIE {
            return Err(DhcpError::ParseCookie { found: cookie });
        }
        let mut options = BTreeMap::new();
        let overload = read_options(&bytes[MIN_LEN..], MIN_LEN, &mut options)?;
        // RFC 2131 §4.1: with option 52, options continue in `file`, then `sname`.
        if let Some(v) = overload {
            if v & 1 != 0 {
                read_options(&bytes[FILE], FILE.start, &mut options)?;
            }
            if v & 2 != 0 {
                read_options(&bytes[SNAME], SNAME.start, &mut options)?;
            }
        }
        let kind = match options.get(&code::MESSAGE_TYPE).map(Vec::as_slice) {
            Some([v]) => {
                MessageType::from_u8(*v).ok_or(DhcpError::ParseMessageType { value: *v })?
            }
            Some(other) => {
                return Err(DhcpError::OptionLength {
                    code: code::MESSAGE_TYPE,
                    name: "message type",
                    len: other.len(),
                });
            }
            None => return Err(DhcpError::ParseNoMessageType),
        };
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&bytes[28..44]);
        Ok(Message {
            op: bytes[0],
            xid: be32(bytes, 4),
            secs: be16(bytes, 8),
            flags: be16(bytes, 10),
            ciaddr: ipv4(bytes, 12),
            yiaddr: ipv4(bytes, 16),
            siaddr: ipv4(bytes, 20),
            giaddr: ipv4(bytes, 24),
            chaddr,
            kind,
            options,
        })
    }

    /// Whether this is a server's reply to our transaction `xid` for `mac`.
    pub fn is_reply_to(&self, xid: u32, mac: &[u8; 6]) -> bool {
        self.op == BOOTREPLY && self.xid == xid && self.chaddr[..6] == mac[..]
    }

    fn option(&self, c: u8) -> Option<&[u8]> {
        self.options.get(&c).map(Vec::as_slice)
    }

    fn addr_option(&self, c: u8, name: &'static str) -> Result<Option<Ipv4Addr>, DhcpError> {
        match self.option(c) {
            None => Ok(None),
            Some(d) if d.len() == 4 => Ok(Some(ipv4(d, 0))),
            Some(d) => Err(DhcpError::OptionLength {
                code: c,
                name,
                len: d.len(),
            }),
        }
    }

    fn addr_list(&self, c: u8, name: &'static str) -> Result<Vec<Ipv4Addr>, DhcpError> {
        match self.option(c) {
            None => Ok(Vec::new()),
            Some(d) if !d.is_empty() && d.len() % 4 == 0 => {
                Ok(d.chunks_exact(4).map(|a| ipv4(a, 0)).collect())
            }
            Some(d) => Err(DhcpError::OptionLength {
                code: c,
                name,
                len: d.len(),
            }),
        }
    }

    fn u32_option(&self, c: u8, name: &'static str) -> Result<Option<u32>, DhcpError> {
        match self.option(c) {
            None => Ok(None),
            Some(d) if d.len() == 4 => Ok(Some(be32(d, 0))),
            Some(d) => Err(DhcpError::OptionLength {
                code: c,
                name,
                len: d.len(),
            }),
        }
    }

    /// Option 54, which every OFFER, ACK and NAK must carry.
    pub fn server_id(&self) -> Result<Option<Ipv4Addr>, DhcpError> {
        self.addr_option(code::SERVER_ID, "server identifier")
    }

    /// Option 56: the server's explanation, for a NAK. Printable ASCII only.
    pub fn server_message(&self) -> Option<String> {
        self.option(code::MESSAGE).map(printable)
    }

    /// The configuration an OFFER or ACK carries.
    pub fn lease(&self) -> Result<Lease, DhcpError> {
        let missing = |what| DhcpError::LeaseMissing {
            kind: self.kind,
            what,
        };
        if self.yiaddr.is_unspecified() || self.yiaddr.is_broadcast() {
            return Err(missing("address (yiaddr)"));
        }
        let server = self
            .server_id()?
            .ok_or_else(|| missing("server (option 54)"))?;
        let prefix_len = match self.addr_option(code::SUBNET_MASK, "subnet mask")? {
            Some(mask) => {
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(DhcpError::OptionNetmask { mask });
                }
                // leading_ones() of a u32 is at most 32.
                bits.leading_ones() as u8
            }
            // RFC 2131 leaves it to the client; the class-based default is
            // meaningless today, so assume a single host on the link.
            None => 32,
        };
        let mtu = match self.option(code::MTU) {
            None => None,
            Some(d) if d.len() == 2 => Some(be16(d, 0)).filter(|&m| m >= 68),
            Some(d) => {
                return Err(DhcpError::OptionLength {
                    code: code::MTU,
                    name: "MTU",
                    len: d.len(),
                });
            }
        };
        let lease_secs = self
            .u32_option(code::LEASE_TIME, "lease time")?
            .unwrap_or(u32::MAX);
        let routes = self
            .option(code::CLASSLESS_ROUTES)
            .and_then(classless_routes);
        Ok(Lease {
            address: self.yiaddr,
            prefix_len,
            server,
            routers: self.addr_list(code::ROUTER, "router")?,
            dns: self.addr_list(code::DNS, "DNS servers")?,
            domain: self.option(code::DOMAIN).and_then(host_text),
            hostname: self.option(code::HOSTNAME).and_then(host_text),
            mtu,
            lease_secs,
            renewal_secs: self.u32_option(code::RENEWAL, "renewal time")?,
            rebinding_secs: self.u32_option(code::REBINDING, "rebinding time")?,
            broadcast: self.addr_option(code::BROADCAST, "broadcast address")?,
            routes: routes.unwrap_or_default(),
        })
    }
}

/// A route from option 121.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `0.0.0.0` means the destination is on the link.
    pub gateway: Ipv4Addr,
}

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// `u32::MAX` is an infinite lease (RFC 2132 §9.2), as is a missing option.
    pub lease_secs: u32,
    pub renewal_secs: Option<u32>,
    pub rebinding_secs: Option<u32>,
    pub broadcast: Option<Ipv4Addr>,
    /// Classless static routes (option 121); when present the router option
    /// is ignored (RFC 3442 §2).
    pub routes: Vec<Route>,
}

impl Lease {
    /// The routes to install, RFC 3442's way: option 121 if the server sent
    /// it, otherwise a default route through the first router.
    pub fn effective_routes(&self) -> Vec<Route> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        self.routers
            .first()
            .map(|&gateway| Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway,
            })
            .into_iter()
            .collect()
    }

    /// The default gateway, for reports.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.effective_routes()
            .iter()
            .find(|r| r.prefix_len == 0)
            .map(|r| r.gateway)
    }
}

/// Decodes option 121: a list of (width, significant destination octets,
/// router). A malformed option is ignored as a whole (`None`), since half a
/// routing table is worse than none and the router option then applies.
pub fn classless_routes(data: &[u8]) -> Option<Vec<Route>> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let width = data[i];
        if width > 32 {
            return None;
        }
        let octets = usize::from(width).div_ceil(8);
        let dest = data.get(i + 1..i + 1 + octets)?;
        let gw = data.get(i + 1 + octets..i + 5 + octets)?;
        let mut d = [0u8; 4];
        d[..octets].copy_from_slice(dest);
        // Bits beyond the prefix must be ignored; clear them so the kernel
        // accepts the route.
        let mask = u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0);
        routes.push(Route {
            destination: Ipv4Addr::from(u32::from_be_bytes(d) & mask),
            prefix_len: width,
            gateway: ipv4(gw, 0),
        });
        i += 5 + octets;
    }
    Some(routes)
}

/// Text that will be written into resolv.conf or become the host name:
/// letters, digits, `-`, `_` and `.` only, trailing NULs dropped (some servers
/// send them). Anything else is ignored rather than sanitised, so a hostile
/// server cannot add lines to a configuration file.
fn host_text(data: &[u8]) -> Option<String> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let text = &data[..end];
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| String::from_utf8_lossy(text).into_owned())
}

fn printable(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub kind: MessageType,
    pub xid: u32,
    /// Seconds since the client began the exchange.
    pub secs: u16,
    pub mac: [u8; 6],
    /// Option 50: the address we want (REQUEST after an OFFER, INIT-REBOOT).
    pub requested: Option<Ipv4Addr>,
    /// Option 54: the server whose OFFER we accept (SELECTING only).
    pub server: Option<Ipv4Addr>,
    /// Option 12.
    pub hostname: Option<&'a str>,
}

impl Outgoing<'_> {
    /// The message as bytes, padded to the 300 bytes of a BOOTP message that
    /// old relays expect.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = vec![0u8; BOOTP_LEN];
        m[0] = BOOTREQUEST;
        m[1] = HTYPE_ETHER;
        m[2] = 6;
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        m[8..10].copy_from_slice(&self.secs.to_be_bytes());
        // flags 0: we receive unicast replies on the packet socket.
        m[28..34].copy_from_slice(&self.mac);
        m.extend_from_slice(&MAGIC_COOKIE);
        let mut put = |c: u8, data: &[u8]| {
            // Every option written here is far shorter than 255 bytes.
            m.push(c);
            m.push(data.len().min(255) as u8);
            m.extend_from_slice(&data[..data.len().min(255)]);
        };
        put(code::MESSAGE_TYPE, &[self.kind as u8]);
        let mut client_id = [HTYPE_ETHER, 0, 0, 0, 0, 0, 0];
        client_id[1..].copy_from_slice(&self.mac);
        put(code::CLIENT_ID, &client_id);
        if let Some(ip) = self.requested {
            put(code::REQUESTED_IP, &ip.octets());
        }
        if let Some(ip) = self.server {
            put(code::SERVER_ID, &ip.octets());
        }
        // The largest message we accept: an Ethernet frame's worth (RFC 2132 §9.10).
        put(code::MAX_SIZE, &1500u16.to_be_bytes());
        put(code::PARAMETERS, &PARAMETERS);
        put(code::VENDOR_CLASS, VENDOR_CLASS.as_bytes());
        if let Some(name) = self.hostname {
            put(code::HOSTNAME, name.as_bytes());
        }
        m.push(code::END);
        if m.len() < 300 {
            m.resize(300, code::PAD);
        }
        m
    }
}

/// The fuzz target's body, here so that the fuzzer and the corpus replay
/// test run exactly the same code: `data` as a packet off the socket and as
/// a bare message, into clients in each state that accepts replies.
#[doc(hidden)]
pub fn fuzz_input(data: &[u8]) {
    use std::time::Duration;
    let mut payloads = vec![data];
    if let Ok(d) = crate::udp::decode(data) {
        payloads.push(d.payload);
    }
    for payload in payloads {
        if let Ok(m) = Message::parse(payload) {
            let _ = m.lease().map(|l| l.effective_routes());
            let _ = m.server_message();
            for requested in [None, Some(m.yiaddr)] {
                let mut c = client::Client::new(
                    client::Config {
                        mac: m.chaddr[..6].try_into().unwrap_or_default(),
                        requested,
                        hostname: None,
                    },
                    m.xid,
                    1,
                    Duration::ZERO,
                );
                let _ = c.poll_transmit(Duration::ZERO);
                // An OFFER moves a selecting client on; the same bytes then
                // arrive as the answer to its REQUEST.
                let _ = c.handle(payload, Duration::from_millis(1));
                let _ = c.poll_transmit(Duration::from_millis(1));
                let _ = c.handle(payload, Duration::from_millis(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dhcp/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    /// The DHCP payload of a captured IPv4 packet.
    fn payload(name: &str) -> Vec<u8> {
        let packet = fixture(name);
        crate::udp::decode(&packet).unwrap().payload.to_vec()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dnsmasq_offer_and_ack_parse() {
        // Captured on a veth pair: Debian's dnsmasq 2.90 answering busybox udhcpc.
        for (name, kind) in [
            ("dnsmasq-offer-udhcpc.ip", MessageType::Offer),
            ("dnsmasq-ack-udhcpc.ip", MessageType::Ack),
        ] {
            let m = Message::parse(&payload(name)).unwrap();
            assert_eq!(m.kind, kind, "{name}");
            assert!(m.is_reply_to(m.xid, &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
            assert!(!m.is_reply_to(m.xid ^ 1, &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
            let lease = m.lease().unwrap();
            assert_eq!(
                lease,
                Lease {
                    address: ip("10.77.0.60"),
                    prefix_len: 24,
                    server: ip("10.77.0.1"),
                    routers: vec![ip("10.77.0.1")],
                    dns: vec![ip("10.77.0.1"), ip("10.77.0.2")],
                    domain: Some("phase.test".into()),
                    hostname: Some("node7".into()),
                    mtu: None,
                    lease_secs: 3600,
                    renewal_secs: Some(1800),
                    rebinding_secs: Some(3150),
                    broadcast: Some(ip("10.77.0.255")),
                    routes: vec![],
                },
                "{name}"
            );
            assert_eq!(lease.gateway(), Some(ip("10.77.0.1")));
        }
    }

    #[test]
    fn dnsmasq_replies_to_our_client_parse() {
        // Captured on a veth pair: dnsmasq 2.90 answering the init's own
        // client, which asks for option 121 (and so gets it, with the MTU).
        let offer = Message::parse(&payload("dnsmasq-offer-routes.ip")).unwrap();
        let ack = Message::parse(&payload("dnsmasq-ack-routes.ip")).unwrap();
        assert_eq!(
            (offer.kind, ack.kind),
            (MessageType::Offer, MessageType::Ack)
        );
        assert_eq!(offer.xid, ack.xid);
        for m in [&offer, &ack] {
            let lease = m.lease().unwrap();
            assert_eq!(lease.mtu, Some(1400));
            assert_eq!(
                lease.routes,
                [
                    Route {
                        destination: ip("10.99.0.0"),
                        prefix_len: 16,
                        gateway: ip("10.77.0.254")
                    },
                    Route {
                        destination: ip("0.0.0.0"),
                        prefix_len: 0,
                        gateway: ip("10.77.0.1")
                    }
                ]
            );
            assert_eq!(lease.effective_routes(), lease.routes);
            assert_eq!(lease.gateway(), Some(ip("10.77.0.1")));
        }
        // An INIT-REBOOT REQUEST for an address on another network.
        let nak = Message::parse(&payload("dnsmasq-nak-init-reboot.ip")).unwrap();
        assert_eq!(nak.kind, MessageType::Nak);
        assert_eq!(nak.server_id().unwrap(), Some(ip("10.77.0.1")));
        assert_eq!(nak.server_message().as_deref(), Some("wrong address"));
        assert!(nak.lease().is_err());
    }

    #[test]
    fn qemu_user_network_replies_parse() {
        // Captured with QEMU's filter-dump on `-netdev user` while the init
        // booted: slirp's OFFER and ACK to the init's own client.
        for (name, kind) in [
            ("qemu-slirp-offer.ip", MessageType::Offer),
            ("qemu-slirp-ack.ip", MessageType::Ack),
        ] {
            let m = Message::parse(&payload(name)).unwrap();
            assert_eq!(m.kind, kind, "{name}");
            let lease = m.lease().unwrap();
            assert_eq!(lease.address, ip("10.0.2.15"), "{name}");
            assert_eq!(lease.prefix_len, 24);
            assert_eq!(lease.server, ip("10.0.2.2"));
            assert_eq!(lease.gateway(), Some(ip("10.0.2.2")));
            assert_eq!(lease.dns, [ip("10.0.2.3")]);
            assert_eq!(lease.lease_secs, 86400);
        }
    }

    #[test]
    fn captured_requests_are_what_encode_writes() {
        // The init's DISCOVER and REQUEST as QEMU saw them on the wire: the
        // codec and the IPv4/UDP framing reproduce them byte for byte.
        for (name, kind) in [
            ("phase-discover.ip", MessageType::Discover),
            ("phase-request.ip", MessageType::Request),
        ] {
            let wire = fixture(name);
            let m = Message::parse(&payload(name)).unwrap();
            assert_eq!(m.kind, kind);
            let addr = |c: u8| m.options.get(&c).map(|d| ipv4(d, 0));
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&m.chaddr[..6]);
            let bytes = Outgoing {
                kind,
                xid: m.xid,
                secs: m.secs,
                mac,
                requested: addr(code::REQUESTED_IP),
                server: addr(code::SERVER_ID),
                hostname: None,
            }
            .encode();
            let packet = crate::udp::encode(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                CLIENT_PORT,
                SERVER_PORT,
                &bytes,
            );
            assert_eq!(packet, wire, "{name}");
        }
    }

    /// A reply built by hand: BOOTP header, cookie, then `options` verbatim.
    fn reply(options: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; BOOTP_LEN];
        m[0] = BOOTREPLY;
        m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 0, 9]); // yiaddr
        m[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(options);
        m
    }

    const ACK_SERVER: [u8; 9] = [53, 1, 5, 54, 4, 10, 0, 0, 1];

    #[test]
    fn malformed_messages_are_named() {
        let table: Vec<(Vec<u8>, DhcpError)> = vec![
            (vec![0u8; 239], DhcpError::ParseShort { len: 239 }),
            (
                {
                    let mut m = reply(&[53, 1, 5, 255]);
                    m[236] = 0;
                    m
                },
                DhcpError::ParseCookie {
                    found: [0, 130, 83, 99],
                },
            ),
            (
                reply(&[53]),
                DhcpError::ParseOptionOverrun { code: 53, at: 240 },
            ),
            (
                reply(&[0, 0, 3, 8, 10, 0]),
                DhcpError::ParseOptionOverrun { code: 3, at: 242 },
            ),
            (
                reply(&[1, 4, 255, 255, 255, 0, 255]),
                DhcpError::ParseNoMessageType,
            ),
            (reply(&[53, 1, 9]), DhcpError::ParseMessageType { value: 9 }),
            (
                reply(&[53, 2, 5, 5]),
                DhcpError::OptionLength {
                    code: 53,
                    name: "message type",
                    len: 2,
                },
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(Message::parse(&bytes).unwrap_err(), want);
        }
    }

    #[test]
    fn bad_option_values_refuse_the_lease() {
        let table: &[(&[u8], &str)] = &[
            (
                &[53, 1, 5],
                "reading a DHCP ACK: it names no server (option 54)",
            ),
            (
                &[53, 1, 5, 54, 3, 10, 0, 0],
                "reading DHCP option 54 (server identifier): 3 bytes is not a valid length",
            ),
            (
                &[1, 4, 255, 0, 255, 0],
                "reading DHCP option 1 (subnet mask): 255.0.255.0 is not a contiguous netmask",
            ),
            (
                &[3, 6, 10, 0, 0, 1, 10, 0],
                "reading DHCP option 3 (router): 6 bytes is not a valid length",
            ),
            (
                &[6, 0],
                "reading DHCP option 6 (DNS servers): 0 bytes is not a valid length",
            ),
            (
                &[26, 1, 5],
                "reading DHCP option 26 (MTU): 1 bytes is not a valid length",
            ),
            (
                &[51, 2, 0, 1],
                "reading DHCP option 51 (lease time): 2 bytes is not a valid length",
            ),
        ];
        for (extra, want) in table {
            let mut opts = if extra.starts_with(&[53]) {
                vec![]
            } else {
                ACK_SERVER.to_vec()
            };
            opts.extend_from_slice(extra);
            opts.push(255);
            let m = Message::parse(&reply(&opts)).unwrap();
            assert_eq!(m.lease().unwrap_err().to_string(), *want);
        }
        let mut no_address = reply(&[53, 1, 2, 54, 4, 10, 0, 0, 1, 255]);
        no_address[16..20].fill(0);
        assert_eq!(
            Message::parse(&no_address)
                .unwrap()
                .lease()
                .unwrap_err()
                .to_string(),
            "reading a DHCP OFFER: it names no address (yiaddr)"
        );
    }

    #[test]
    fn options_split_and_overloaded_are_joined() {
        // RFC 3396: option 6 in two pieces; option 52 = 3 moves more options
        // into `file` (read first) and `sname`.
        let mut m = reply(&[
            53, 1, 5, 54, 4, 10, 0, 0, 1, 6, 4, 9, 9, 9, 9, 52, 1, 3, 6, 4, 1, 1, 1, 1, 255,
        ]);
        m[FILE.start..FILE.start + 8].copy_from_slice(&[15, 3, b'l', b'a', b'n', 6, 0, 255]);
        m[SNAME.start..SNAME.start + 7].copy_from_slice(&[12, 4, b'n', b'o', b'd', b'e', 255]);
        let lease = Message::parse(&m).unwrap().lease().unwrap();
        assert_eq!(lease.dns, [ip("9.9.9.9"), ip("1.1.1.1")]);
        assert_eq!(lease.domain.as_deref(), Some("lan"));
        assert_eq!(lease.hostname.as_deref(), Some("node"));
        // Without option 52 the same `file` bytes are a boot file name, not options.
        let mut plain = m.clone();
        plain[240..].copy_from_slice(&[
            53, 1, 5, 54, 4, 10, 0, 0, 1, 6, 4, 9, 9, 9, 9, 0, 0, 0, 6, 4, 1, 1, 1, 1, 255,
        ]);
        let lease = Message::parse(&plain).unwrap().lease().unwrap();
        assert_eq!((lease.domain, lease.hostname), (None, None));
        // An overrun inside `file` is reported with its offset in the message.
        let mut bad = m;
        bad[FILE.start..FILE.start + 3].copy_from_slice(&[15, 200, b'x']);
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            DhcpError::ParseOptionOverrun { code: 15, at: 108 }
        );
    }

    #[test]
    fn text_options_cannot_inject_lines() {
        let table: &[(&[u8], Option<&str>)] = &[
            (b"example.org", Some("example.org")),
            (b"example.org\0\0", Some("example.org")),
            (b"lab_net-1.corp", Some("lab_net-1.corp")),
            (b"evil\nnameserver 6.6.6.6", None),
            (b"a b", None),
            (b"\0", None),
            (b"", None),
            (&[0xc3, 0xa9], None),
        ];
        for (data, want) in table {
            assert_eq!(host_text(data).as_deref(), *want, "{data:?}");
        }
        assert_eq!(printable(b"no\x07 lease\n"), "no? lease?");
    }

    #[test]
    fn classless_routes_rfc3442() {
        let r = |d: &str, len: u8, gw: &str| Route {
            destination: ip(d),
            prefix_len: len,
            gateway: ip(gw),
        };
        let table: &[(&[u8], Option<Vec<Route>>)] = &[
            // The examples of RFC 3442 §2: widths 0, 8, 24, 32, and 9 bits
            // with the host bits set (they are cleared).
            (&[0, 10, 0, 0, 1], Some(vec![r("0.0.0.0", 0, "10.0.0.1")])),
            (
                &[8, 10, 10, 0, 0, 1],
                Some(vec![r("10.0.0.0", 8, "10.0.0.1")]),
            ),
            (
                &[24, 192, 168, 7, 0, 0, 0, 0, 32, 1, 2, 3, 4, 10, 0, 0, 9],
                Some(vec![
                    r("192.168.7.0", 24, "0.0.0.0"),
                    r("1.2.3.4", 32, "10.0.0.9"),
                ]),
            ),
            (
                &[9, 129, 255, 10, 0, 0, 1],
                Some(vec![r("129.128.0.0", 9, "10.0.0.1")]),
            ),
            (&[], Some(vec![])),
            (&[33, 0, 0, 0, 0, 0, 0, 0, 0], None),
            (&[24, 192, 168, 7, 10, 0, 0], None),
            (&[16, 10], None),
        ];
        for (data, want) in table {
            assert_eq!(classless_routes(data), *want, "{data:?}");
        }
    }

    #[test]
    fn option_121_replaces_the_router_option() {
        let opts = [
            53, 1, 5, 54, 4, 10, 0, 0, 1, 3, 4, 10, 0, 0, 1, 121, 12, 16, 10, 99, 10, 0, 0, 254, 0,
            10, 0, 0, 2, 255,
        ];
        let lease = Message::parse(&reply(&opts)).unwrap().lease().unwrap();
        assert_eq!(
            lease.effective_routes(),
            [
                Route {
                    destination: ip("10.99.0.0"),
                    prefix_len: 16,
                    gateway: ip("10.0.0.254")
                },
                Route {
                    destination: ip("0.0.0.0"),
                    prefix_len: 0,
                    gateway: ip("10.0.0.2")
                }
            ]
        );
        assert_eq!(lease.gateway(), Some(ip("10.0.0.2")));
        // A malformed 121 falls back to the router.
        let mut broken = opts;
        broken[17] = 40;
        let lease = Message::parse(&reply(&broken)).unwrap().lease().unwrap();
        assert_eq!(lease.gateway(), Some(ip("10.0.0.1")));
    }

    #[test]
    fn discover_and_request_bytes() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let discover = Outgoing {
            kind: MessageType::Discover,
            xid: 0xdead_beef,
            secs: 3,
            mac,
            requested: None,
            server: None,
            hostname: None,
        }
        .encode();
        assert_eq!(discover.len(), 300);
        #[rustfmt::skip]
        let head: &[u8] = &[
            1, 1, 6, 0,                     // op BOOTREQUEST, htype Ethernet, hlen 6, hops
            0xde, 0xad, 0xbe, 0xef,         // xid
            0, 3, 0, 0,                     // secs 3, flags 0 (unicast replies)
        ];
        assert_eq!(&discover[..12], head);
        assert_eq!(&discover[12..28], &[0u8; 16], "ciaddr yiaddr siaddr giaddr");
        assert_eq!(&discover[28..34], &mac);
        #[rustfmt::skip]
        let options: &[u8] = &[
            99, 130, 83, 99,                // magic cookie
            53, 1, 1,                       // DISCOVER
            61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // client id: Ethernet + MAC
            57, 2, 0x05, 0xdc,              // max message size 1500
            55, 12, 1, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 121,
            60, 10, b'p', b'h', b'a', b's', b'e', b'-', b'b', b'o', b'o', b't',
            255,
        ];
        assert_eq!(&discover[236..236 + options.len()], options);
        assert!(discover[236 + options.len()..].iter().all(|&b| b == 0));

        let request = Outgoing {
            kind: MessageType::Request,
            xid: 1,
            secs: 0,
            mac,
            requested: Some(ip("10.0.2.15")),
            server: Some(ip("10.0.2.2")),
            hostname: Some("node7"),
        }
        .encode();
        let parsed = Message::parse(&request).unwrap();
        assert_eq!(parsed.kind, MessageType::Request);
        assert_eq!(parsed.options[&code::REQUESTED_IP], [10, 0, 2, 15]);
        assert_eq!(parsed.options[&code::SERVER_ID], [10, 0, 2, 2]);
        assert_eq!(parsed.options[&code::HOSTNAME], b"node7");
        assert_eq!(parsed.op, BOOTREQUEST);
    }
}
