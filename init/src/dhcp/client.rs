//! The DHCPv4 client as a state machine without I/O (RFC 2131 §4.4): the
//! caller hands it the time and the datagrams it received, and asks it what
//! to send and when to wake it next. Budgets are the caller's business; the
//! machine only knows the retransmission schedule.
//!
//! ```text
//!   INIT-REBOOT ──NAK / 2 unanswered──┐
//!       │ ACK                         ▼
//!       │            ┌──────────── SELECTING ◀── NAK / 4 unanswered ──┐
//!       │            │ OFFER                                           │
//!       │            ▼                                                 │
//!       │        REQUESTING ───────────────────────────────────────────┘
//!       ▼            │ ACK
//!     BOUND ◀────────┘
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{Lease, Message, MessageType, Outgoing};

/// Retransmission delays before jitter: 1, 2, 4, then 8 s for every later
/// try, as iPXE does. RFC 2131 §4.1 starts at 4 s; a boot loader cannot
/// afford that on a network that drops the first packet.
const BACKOFF_S: [u64; 4] = [1, 2, 4, 8];
/// REQUESTs sent in REQUESTING without an answer before starting over.
const REQUEST_TRIES: u32 = 4;
/// REQUESTs sent in INIT-REBOOT before asking with DISCOVER instead. A
/// non-authoritative server stays silent about an address it does not know,
/// so this is kept short.
const INIT_REBOOT_TRIES: u32 = 2;

/// What the client is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mac: [u8; 6],
    /// The address to ask for first (INIT-REBOOT).
    pub requested: Option<Ipv4Addr>,
    /// Sent as option 12.
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    InitReboot { address: Ipv4Addr },
    Selecting,
    Requesting { server: Ipv4Addr, address: Ipv4Addr },
    Bound,
}

/// A small xorshift generator for jitter and transaction ids. The seed
/// comes from getrandom(2); quality matters only so that machines booting
/// together do not retransmit in lockstep.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What a received datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not for us, or not wanted now; the reason is for the debug log.
    Ignored(String),
    /// An OFFER was taken; a REQUEST goes out next.
    Offered { server: Ipv4Addr, address: Ipv4Addr },
    /// The server refused (NAK); the exchange starts again with DISCOVER.
    Restarted {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
    /// The lease is ours.
    Bound(Lease),
}

/// One message the client sent, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub kind: MessageType,
    pub at: Duration,
    pub xid: u32,
}

#[derive(Debug, Clone)]
pub struct Client {
    config: Config,
    state: State,
    xid: u32,
    rng: Rng,
    /// When acquisition began, for the `secs` field.
    began: Duration,
    /// Messages sent in the current state.
    tries: u32,
    next_send: Duration,
    naks: u32,
    sent: Vec<Sent>,
}

impl Client {
    /// A client that starts sending at `now`. `xid` is the first transaction
    /// id; `seed` (non-zero) drives jitter and later ids.
    pub fn new(config: Config, xid: u32, seed: u64, now: Duration) -> Client {
        let state = match config.requested {
            Some(address) => State::InitReboot { address },
            None => State::Selecting,
        };
        Client {
            config,
            state,
            xid,
            rng: Rng(seed | 1),
            began: now,
            tries: 0,
            next_send: now,
            naks: 0,
            sent: Vec::new(),
        }
    }

    /// Every message sent so far.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// The current transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// How many NAKs restarted the exchange.
    pub fn naks(&self) -> u32 {
        self.naks
    }

    /// When the client next wants [`Client::poll_transmit`] called; `None`
    /// once bound.
    pub fn next_wakeup(&self) -> Option<Duration> {
        (self.state != State::Bound).then_some(self.next_send)
    }

    /// The delay after try number `n` (0-based): the backoff table with
    /// ±25 % uniform jitter.
    fn delay(&mut self, n: u32) -> Duration {
        let i = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(BACKOFF_S.len() - 1);
        let base_ms = BACKOFF_S[i] * 1000;
        // 750..1250 per mille; base_ms * 1250 is far below u64::MAX.
        let factor = 750 + self.rng.next() % 501;
        Duration::from_millis(base_ms * factor / 1000)
    }

    fn restart(&mut self, now: Duration, wait: Duration) {
        self.state = State::Selecting;
        // A new exchange gets a new transaction id (RFC 2131 §4.4.1); the
        // truncation keeps 32 random bits.
        self.xid = self.rng.next() as u32;
        self.tries = 0;
        self.next_send = now + wait;
    }

    /// The message to send now, if one is due. Retransmissions advance the
    /// backoff; a state that has run out of tries falls back to DISCOVER.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<(MessageType, Vec<u8>)> {
        if self.state == State::Bound || now < self.next_send {
            return None;
        }
        let gave_up = match self.state {
            State::InitReboot { .. } => self.tries >= INIT_REBOOT_TRIES,
            State::Requesting { .. } => self.tries >= REQUEST_TRIES,
            _ => false,
        };
        if gave_up {
            self.restart(now, Duration::ZERO);
        }
        let (kind, requested, server) = match self.state {
            State::InitReboot { address } => (MessageType::Request, Some(address), None),
            State::Selecting => (MessageType::Discover, None, None),
            State::Requesting { server, address } => {
                (MessageType::Request, Some(address), Some(server))
            }
            State::Bound => return None,
        };
        let secs = u16::try_from(now.saturating_sub(self.began).as_secs()).unwrap_or(u16::MAX);
        let bytes = Outgoing {
            kind,
            xid: self.xid,
            secs,
            mac: self.config.mac,
            requested,
            server,
            hostname: self.config.hostname.as_deref(),
        }
        .encode();
        self.sent.push(Sent {
            kind,
            at: now,
            xid: self.xid,
        });
        let delay = self.delay(self.tries);
        self.tries += 1;
        self.next_send = now + delay;
        Some((kind, bytes))
    }

    /// Takes in a received DHCP message (the UDP payload).
    pub fn handle(&mut self, payload: &[u8], now: Duration) -> Step {
        let message = match Message::parse(payload) {
            Ok(m) => m,
            Err(e) => return Step::Ignored(e.to_string()),
        };
        if !message.is_reply_to(self.xid, &self.config.mac) {
            return Step::Ignored(format!(
                "{} for another transaction (xid {:#010x})",
                message.kind, message.xid
            ));
        }
        match (&self.state, message.kind) {
            (State::Selecting, MessageType::Offer) => match message.lease() {
                Ok(lease) => {
                    self.state = State::Requesting {
                        server: lease.server,
                        address: lease.address,
                    };
                    self.tries = 0;
                    self.next_send = now;
                    Step::Offered {
                        server: lease.server,
                        address: lease.address,
                    }
                }
                Err(e) => Step::Ignored(e.to_string()),
            },
            (State::Requesting { server, address }, MessageType::Ack) => {
                let (server, address) = (*server, *address);
                match message.lease() {
                    Ok(lease) if lease.server == server && lease.address == address => {
                        self.state = State::Bound;
                        Step::Bound(lease)
                    }
                    Ok(lease) => Step::Ignored(format!(
                        "ACK from {} for {}, but we asked {server} for {address}",
                        lease.server, lease.address
                    )),
                    Err(e) => Step::Ignored(e.to_string()),
                }
            }
            (State::InitReboot { address }, MessageType::Ack) => {
                let address = *address;
                match message.lease() {
                    Ok(lease) if lease.address == address => {
                        self.state = State::Bound;
                        Step::Bound(lease)
                    }
                    Ok(lease) => Step::Ignored(format!(
                        "ACK for {}, but we asked for {address}",
                        lease.address
                    )),
                    Err(e) => Step::Ignored(e.to_string()),
                }
            }
            (State::Requesting { server, .. }, MessageType::Nak) => {
                let from = message.server_id().ok().flatten();
                // Only the server we chose may refuse us (another server's
                // NAK is about its own offer).
                if from.is_some_and(|f| f != *server) {
                    return Step::Ignored(format!("NAK from {from:?}, not from {server}"));
                }
                self.nak(message, from, now)
            }
            (State::InitReboot { .. }, MessageType::Nak) => {
                let from = message.server_id().ok().flatten();
                self.nak(message, from, now)
            }
            (_, kind) => Step::Ignored(format!("unexpected {kind} now")),
        }
    }

    fn nak(&mut self, message: Message, server: Option<Ipv4Addr>, now: Duration) -> Step {
        self.naks += 1;
        // The first NAK restarts at once; a server that keeps refusing is
        // answered with the backoff, so a loop cannot flood the link.
        let wait = match self.naks {
            1 => Duration::ZERO,
            n => self.delay(n - 2),
        };
        self.restart(now, wait);
        Step::Restarted {
            server,
            message: message.server_message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::code;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    /// The transaction id in the captured dnsmasq replies.
    const CAPTURED_XID: u32 = 0x51c0_0604;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dhcp/");
        let packet = std::fs::read(format!("{path}{name}")).unwrap();
        crate::udp::decode(&packet).unwrap().payload.to_vec()
    }

    fn client(requested: Option<&str>) -> Client {
        Client::new(
            Config {
                mac: MAC,
                requested: requested.map(ip),
                hostname: None,
            },
            CAPTURED_XID,
            42,
            Duration::ZERO,
        )
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A server reply of `kind` from `server` offering `yiaddr`.
    fn reply(kind: MessageType, xid: u32, server: &str, yiaddr: &str, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[0] = 2;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&ip(yiaddr).octets());
        m[28..34].copy_from_slice(&MAC);
        m.extend_from_slice(&[99, 130, 83, 99, code::MESSAGE_TYPE, 1, kind as u8]);
        m.extend_from_slice(&[code::SERVER_ID, 4]);
        m.extend_from_slice(&ip(server).octets());
        m.extend_from_slice(extra);
        m.push(code::END);
        m
    }

    fn sent_message(bytes: &[u8]) -> Message {
        Message::parse(bytes).unwrap()
    }

    #[test]
    fn discover_offer_request_ack_with_captured_replies() {
        let mut c = client(None);
        let (kind, discover) = c.poll_transmit(Duration::ZERO).unwrap();
        assert_eq!(kind, MessageType::Discover);
        assert_eq!(sent_message(&discover).xid, CAPTURED_XID);
        assert_eq!(c.poll_transmit(secs(0.5)), None, "not due yet");
        assert_eq!(
            c.handle(&fixture("dnsmasq-offer-udhcpc.ip"), secs(0.1)),
            Step::Offered {
                server: ip("10.77.0.1"),
                address: ip("10.77.0.60")
            }
        );
        let (kind, request) = c.poll_transmit(secs(0.1)).unwrap();
        assert_eq!(kind, MessageType::Request);
        let request = sent_message(&request);
        assert_eq!(request.xid, CAPTURED_XID, "REQUEST keeps the OFFER's xid");
        assert_eq!(request.options[&code::SERVER_ID], [10, 77, 0, 1]);
        assert_eq!(request.options[&code::REQUESTED_IP], [10, 77, 0, 60]);
        let Step::Bound(lease) = c.handle(&fixture("dnsmasq-ack-udhcpc.ip"), secs(0.2)) else {
            panic!("not bound")
        };
        assert_eq!(lease.address, ip("10.77.0.60"));
        assert_eq!(c.next_wakeup(), None);
        assert_eq!(c.poll_transmit(secs(100.0)), None);
        let kinds: Vec<MessageType> = c.sent().iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [MessageType::Discover, MessageType::Request]);
    }

    #[test]
    fn retransmissions_back_off_1_2_4_8_with_jitter() {
        for seed in [1, 42, 0xffff_ffff_ffff_ffff, 7_777_777] {
            let mut c = Client::new(
                Config {
                    mac: MAC,
                    requested: None,
                    hostname: None,
                },
                1,
                seed,
                Duration::ZERO,
            );
            let mut times = Vec::new();
            let mut now = Duration::ZERO;
            while times.len() < 7 {
                if c.poll_transmit(now).is_some() {
                    times.push(now);
                }
                now = c.next_wakeup().unwrap();
            }
            let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
            for (gap, base) in gaps.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
                assert!(
                    *gap >= secs(base * 0.75) && *gap <= secs(base * 1.25),
                    "seed {seed}: gap {gap:?} for base {base}"
                );
            }
            assert!(c.sent().iter().all(|s| s.kind == MessageType::Discover));
            assert_eq!(c.sent().len(), 7);
        }
    }

    #[test]
    fn a_nak_restarts_with_a_new_transaction() {
        let mut c = client(None);
        c.poll_transmit(Duration::ZERO).unwrap();
        c.handle(&fixture("dnsmasq-offer-udhcpc.ip"), secs(0.1));
        c.poll_transmit(secs(0.1)).unwrap();
        // A NAK from another server is about its own offer: ignored.
        let other = reply(MessageType::Nak, CAPTURED_XID, "10.77.0.2", "0.0.0.0", &[]);
        assert!(matches!(c.handle(&other, secs(0.2)), Step::Ignored(_)));
        let nak = reply(
            MessageType::Nak,
            CAPTURED_XID,
            "10.77.0.1",
            "0.0.0.0",
            &[
                code::MESSAGE,
                9,
                b'w',
                b'r',
                b'o',
                b'n',
                b'g',
                b' ',
                b'n',
                b'e',
                b't',
            ],
        );
        assert_eq!(
            c.handle(&nak, secs(0.3)),
            Step::Restarted {
                server: Some(ip("10.77.0.1")),
                message: Some("wrong net".into())
            }
        );
        assert_ne!(c.xid(), CAPTURED_XID);
        let (kind, bytes) = c.poll_transmit(secs(0.3)).expect("restart is immediate");
        assert_eq!(kind, MessageType::Discover);
        assert_eq!(sent_message(&bytes).xid, c.xid());
        // The old transaction's ACK no longer counts.
        assert!(matches!(
            c.handle(&fixture("dnsmasq-ack-udhcpc.ip"), secs(0.4)),
            Step::Ignored(_)
        ));
        // A second NAK in a row waits out the backoff before restarting.
        let xid = c.xid();
        c.handle(
            &reply(MessageType::Offer, xid, "10.77.0.1", "10.77.0.61", &[]),
            secs(0.5),
        );
        c.poll_transmit(secs(0.5)).unwrap();
        c.handle(
            &reply(MessageType::Nak, xid, "10.77.0.1", "0.0.0.0", &[]),
            secs(0.6),
        );
        assert_eq!(c.naks(), 2);
        assert_eq!(c.poll_transmit(secs(0.6)), None);
        assert!(c.next_wakeup().unwrap() >= secs(0.6 + 0.75));
    }

    #[test]
    fn init_reboot_asks_for_the_old_address_then_falls_back() {
        // NAK: DISCOVER at once.
        let mut c = client(Some("10.9.9.9"));
        let (kind, bytes) = c.poll_transmit(Duration::ZERO).unwrap();
        assert_eq!(kind, MessageType::Request);
        let m = sent_message(&bytes);
        assert_eq!(m.options[&code::REQUESTED_IP], [10, 9, 9, 9]);
        assert!(
            !m.options.contains_key(&code::SERVER_ID),
            "INIT-REBOOT names no server"
        );
        let nak = reply(MessageType::Nak, CAPTURED_XID, "10.77.0.1", "0.0.0.0", &[]);
        assert!(matches!(c.handle(&nak, secs(0.1)), Step::Restarted { .. }));
        assert_eq!(c.poll_transmit(secs(0.1)).unwrap().0, MessageType::Discover);

        // Silence: two REQUESTs, then DISCOVER.
        let mut c = client(Some("10.9.9.9"));
        let kinds = transmissions(&mut c, Duration::ZERO, 3);
        assert_eq!(
            kinds,
            [
                MessageType::Request,
                MessageType::Request,
                MessageType::Discover
            ]
        );

        // ACK for the address asked for: bound.
        let mut c = client(Some("10.77.0.60"));
        c.poll_transmit(Duration::ZERO).unwrap();
        assert!(matches!(
            c.handle(&fixture("dnsmasq-ack-udhcpc.ip"), secs(0.1)),
            Step::Bound(_)
        ));
    }

    /// The kinds of the first `n` messages `c` sends from `now` on, waking
    /// when it asks to, with nothing answering.
    fn transmissions(c: &mut Client, mut now: Duration, n: usize) -> Vec<MessageType> {
        let mut kinds = Vec::new();
        while kinds.len() < n {
            if let Some((kind, _)) = c.poll_transmit(now) {
                kinds.push(kind);
            }
            now = c.next_wakeup().unwrap();
        }
        kinds
    }

    #[test]
    fn captured_nak_of_an_init_reboot_restarts() {
        let nak = fixture("dnsmasq-nak-init-reboot.ip");
        let xid = Message::parse(&nak).unwrap().xid;
        let mut c = Client::new(
            Config {
                mac: MAC,
                requested: Some(ip("10.1.1.1")),
                hostname: None,
            },
            xid,
            9,
            Duration::ZERO,
        );
        assert_eq!(
            c.poll_transmit(Duration::ZERO).unwrap().0,
            MessageType::Request
        );
        assert_eq!(
            c.handle(&nak, secs(0.01)),
            Step::Restarted {
                server: Some(ip("10.77.0.1")),
                message: Some("wrong address".into())
            }
        );
        assert_eq!(
            c.poll_transmit(secs(0.01)).unwrap().0,
            MessageType::Discover
        );
    }

    #[test]
    fn an_unanswered_request_starts_over() {
        let mut c = client(None);
        c.poll_transmit(Duration::ZERO).unwrap();
        c.handle(&fixture("dnsmasq-offer-udhcpc.ip"), secs(0.1));
        let kinds = transmissions(&mut c, secs(0.1), 5);
        assert_eq!(
            kinds,
            [
                MessageType::Request,
                MessageType::Request,
                MessageType::Request,
                MessageType::Request,
                MessageType::Discover
            ]
        );
    }

    #[test]
    fn stray_messages_are_ignored() {
        let offer = fixture("dnsmasq-offer-udhcpc.ip");
        let mut other_mac = offer.clone();
        other_mac[33] ^= 1;
        let mut as_request = offer.clone();
        as_request[0] = 1;
        let table: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", vec![1, 2, 3]),
            ("another client's", other_mac),
            ("a BOOTREQUEST", as_request),
            ("an ACK while selecting", fixture("dnsmasq-ack-udhcpc.ip")),
            ("an OFFER without a server id", {
                let mut m = reply(MessageType::Offer, CAPTURED_XID, "1.1.1.1", "10.0.0.1", &[]);
                m.truncate(240 + 3);
                m.push(code::END);
                m
            }),
            (
                "another transaction's",
                reply(MessageType::Offer, 7, "10.0.0.1", "10.0.0.9", &[]),
            ),
        ];
        for (what, bytes) in table {
            let mut c = client(None);
            c.poll_transmit(Duration::ZERO).unwrap();
            assert!(
                matches!(c.handle(&bytes, secs(0.1)), Step::Ignored(_)),
                "{what}"
            );
            assert_eq!(c.sent().len(), 1, "{what}");
            assert_eq!(c.poll_transmit(secs(0.1)), None, "{what} sent something");
        }
    }
}
