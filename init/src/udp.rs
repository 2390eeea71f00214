//! IPv4 + UDP framing for the DHCP client, which talks on a packet socket
//! before the interface has an address, so the kernel's IP stack cannot
//! build or check these headers for it. Pure functions over bytes.

use std::net::Ipv4Addr;

use thiserror::Error;

const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const PROTO_UDP: u8 = 17;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UdpError {
    #[error("decoding an IPv4 packet of {len} bytes: too short")]
    DecodeShort { len: usize },
    #[error("decoding an IPv4 packet: version {version}, header length {ihl} words")]
    DecodeHeader { version: u8, ihl: u8 },
    #[error("decoding an IPv4 packet: total length {total} does not fit the {len} bytes received")]
    DecodeLength { total: usize, len: usize },
    #[error("decoding an IPv4 packet: header checksum mismatch")]
    DecodeChecksum,
    #[error("decoding an IPv4 packet: a fragment")]
    DecodeFragment,
    #[error("decoding an IPv4 packet: protocol {protocol}, not UDP")]
    DecodeProtocol { protocol: u8 },
    #[error("decoding a UDP datagram: length {udp_len} does not fit the {len}-byte IP payload")]
    DecodeUdpLength { udp_len: usize, len: usize },
}

/// A received UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub source_port: u16,
    pub destination_port: u16,
    pub payload: &'a [u8],
}

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum`.
fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    // Fold early so the sum cannot overflow for any datagram up to 64 KiB:
    // 32768 words of at most 0xffff each stay below 2^31.
    sum
}

fn checksum_finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold leaves at most 16 bits.
    !(sum as u16)
}

/// An IPv4 packet holding one UDP datagram, TTL 64, don't-fragment unset,
/// both checksums filled in. `payload` is a DHCP message, far below 64 KiB.
pub fn encode(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = UDP_HEADER + payload.len();
    let total = IP_HEADER + udp_len;
    let mut p = Vec::with_capacity(total);
    // Lengths are u16 on the wire; callers send DHCP messages of a few
    // hundred bytes, and anything larger is clamped rather than wrapped.
    let total16 = u16::try_from(total).unwrap_or(u16::MAX);
    let udp16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
    #[rustfmt::skip]
    p.extend_from_slice(&[
        0x45, 0x00,                         // version 4, 5-word header; TOS 0
        (total16 >> 8) as u8, total16 as u8,
        0, 0, 0, 0,                         // identification, flags, fragment offset
        64, PROTO_UDP, 0, 0,                // TTL, protocol, checksum (below)
    ]);
    p.extend_from_slice(&source.octets());
    p.extend_from_slice(&destination.octets());
    let ip_sum = checksum_finish(checksum_add(0, &p));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&source_port.to_be_bytes());
    p.extend_from_slice(&destination_port.to_be_bytes());
    p.extend_from_slice(&udp16.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo-header, the UDP header and the payload.
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&source.octets());
    pseudo[4..8].copy_from_slice(&destination.octets());
    pseudo[9] = PROTO_UDP;
    pseudo[10..].copy_from_slice(&udp16.to_be_bytes());
    let sum = checksum_add(checksum_add(0, &pseudo), &p[IP_HEADER..]);
    // RFC 768: a computed zero is sent as all ones.
    let udp_sum = match checksum_finish(sum) {
        0 => 0xffff,
        s => s,
    };
    p[IP_HEADER + 6..IP_HEADER + 8].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// Decodes an IPv4 packet carrying UDP. The IP header checksum is verified.
/// The UDP checksum is not: on a packet socket, a datagram from a sender on
/// the same host (a veth peer, a virtio NIC with offload) arrives with a
/// partial checksum the hardware would have finished, so checking it would
/// reject good replies. DHCP's transaction id, client address and magic
/// cookie guard the payload instead.
pub fn decode(packet: &[u8]) -> Result<Datagram<'_>, UdpError> {
    if packet.len() < IP_HEADER {
        return Err(UdpError::DecodeShort { len: packet.len() });
    }
    let version = packet[0] >> 4;
    let ihl = packet[0] & 0x0f;
    let header = usize::from(ihl) * 4;
    if version != 4 || header < IP_HEADER || header > packet.len() {
        return Err(UdpError::DecodeHeader { version, ihl });
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < header || total > packet.len() {
        return Err(UdpError::DecodeLength {
            total,
            len: packet.len(),
        });
    }
    if checksum_finish(checksum_add(0, &packet[..header])) != 0 {
        return Err(UdpError::DecodeChecksum);
    }
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    // More-fragments set, or a non-zero offset.
    if frag & 0x3fff != 0 {
        return Err(UdpError::DecodeFragment);
    }
    if packet[9] != PROTO_UDP {
        return Err(UdpError::DecodeProtocol {
            protocol: packet[9],
        });
    }
    // Link layers pad short frames; only `total` bytes are the packet.
    let ip_payload = &packet[header..total];
    if ip_payload.len() < UDP_HEADER {
        return Err(UdpError::DecodeUdpLength {
            udp_len: 0,
            len: ip_payload.len(),
        });
    }
    let udp_len = usize::from(u16::from_be_bytes([ip_payload[4], ip_payload[5]]));
    if udp_len < UDP_HEADER || udp_len > ip_payload.len() {
        return Err(UdpError::DecodeUdpLength {
            udp_len,
            len: ip_payload.len(),
        });
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Ok(Datagram {
        source: addr(12),
        destination: addr(16),
        source_port: u16::from_be_bytes([ip_payload[0], ip_payload[1]]),
        destination_port: u16::from_be_bytes([ip_payload[2], ip_payload[3]]),
        payload: &ip_payload[UDP_HEADER..udp_len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dhcp/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn captured_reply_decodes() {
        let packet = fixture("dnsmasq-offer-udhcpc.ip");
        let d = decode(&packet).unwrap();
        assert_eq!(d.source, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(d.destination, Ipv4Addr::new(10, 77, 0, 60));
        assert_eq!((d.source_port, d.destination_port), (67, 68));
        assert_eq!(d.payload.len(), packet.len() - 28);
    }

    #[test]
    fn encode_matches_a_reference_checksum_and_round_trips() {
        let payload = b"phase";
        let p = encode(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, payload);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x45, 0x00, 0x00, 0x21,         // v4, IHL 5, total 33
            0x00, 0x00, 0x00, 0x00,         // id, flags, offset
            0x40, 0x11, 0x7a, 0xcd,         // TTL 64, UDP, header checksum (Python reference)
            0, 0, 0, 0,                     // source 0.0.0.0
            255, 255, 255, 255,             // destination broadcast
            0x00, 0x44, 0x00, 0x43,         // ports 68 -> 67
            0x00, 0x0d, 0xc8, 0x71,         // UDP length 13, checksum (Python reference)
            b'p', b'h', b'a', b's', b'e',
        ];
        assert_eq!(p, want);
        let d = decode(&p).unwrap();
        assert_eq!(d.payload, payload);
        // Trailing link-layer padding is not part of the datagram.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 13]);
        assert_eq!(decode(&padded).unwrap().payload, payload);
    }

    #[test]
    fn malformed_packets_are_refused() {
        let good = encode(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, 67, 68, b"x");
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            p
        };
        // Rewrites the header checksum after an edit, so later checks run.
        let fix = |p: &mut Vec<u8>| {
            p[10..12].fill(0);
            let s = checksum_finish(checksum_add(0, &p[..20]));
            p[10..12].copy_from_slice(&s.to_be_bytes());
        };
        let table: Vec<(Vec<u8>, UdpError)> = vec![
            (good[..19].to_vec(), UdpError::DecodeShort { len: 19 }),
            (
                edit(&|p| p[0] = 0x65),
                UdpError::DecodeHeader { version: 6, ihl: 5 },
            ),
            (
                edit(&|p| p[0] = 0x44),
                UdpError::DecodeHeader { version: 4, ihl: 4 },
            ),
            (
                edit(&|p| p[3] = 0xff),
                UdpError::DecodeLength {
                    total: 255,
                    len: 29,
                },
            ),
            (edit(&|p| p[8] = 1), UdpError::DecodeChecksum),
            (
                edit(&|p| {
                    p[6] = 0x20;
                    fix(p)
                }),
                UdpError::DecodeFragment,
            ),
            (
                edit(&|p| {
                    p[9] = 6;
                    fix(p)
                }),
                UdpError::DecodeProtocol { protocol: 6 },
            ),
            (
                edit(&|p| p[25] = 30),
                UdpError::DecodeUdpLength {
                    udp_len: 30,
                    len: 9,
                },
            ),
            (
                edit(&|p| p[25] = 7),
                UdpError::DecodeUdpLength { udp_len: 7, len: 9 },
            ),
        ];
        for (packet, want) in table {
            assert_eq!(decode(&packet).unwrap_err(), want);
        }
    }
}
