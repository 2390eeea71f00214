//! DNS-SD browsing (RFC 6763 §4) as a state machine without I/O: the caller
//! hands it the time and the datagrams it received, sends what [`Browser::poll`]
//! returns to 224.0.0.251:5353 on the boot link, and wakes it at
//! [`Browser::next_wakeup`]. Once the browse window is over,
//! [`Browser::providers`] says where to fetch from and
//! [`Browser::instances`] what was found and why each was passed over.
//!
//! The schedule is RFC 6762 §5.2's continuous querying cut to the window:
//! the first query 20–120 ms after the start (so machines powered on
//! together do not query in lockstep), with the QU bit (§5.4: a host
//! starting up asks for unicast replies); then after 1 s, 2 s, 4 s … while
//! the window lasts. Later queries carry the PTR records already known,
//! with more than half their TTL left, as known answers (§7.1), so
//! responders that were heard stay quiet. When a response leaves an
//! instance without its SRV or TXT record, or an SRV target without an
//! IPv4 address, a follow-up query asks for exactly those 120 ms later (by
//! then the responses to the same query from other hosts are in, RFC 6762
//! §6), and every later query asks again until they arrive.
//!
//! Memory is bounded whatever the LAN sends: at most [`MAX_INSTANCES`]
//! instances and as many host names, each with at most [`MAX_ADDRESSES`]
//! addresses; instances beyond that are counted, not kept.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use thiserror::Error;

use crate::dns::{CLASS_IN, Data, DnsError, Message, Name, Question, Record, Srv, Type};
use crate::txt::{Advert, TxtError};

/// Instances kept.
pub const MAX_INSTANCES: usize = 32;
/// IPv4 addresses kept per host name.
pub const MAX_ADDRESSES: usize = 4;
/// A query stays below this, so it fits a 1500-byte Ethernet frame with its
/// IP and UDP headers; questions or known answers that do not fit wait for
/// the next query.
const QUERY_BUDGET: usize = 1400;
const HEADER: usize = 12;
/// The wait before a follow-up query.
const FOLLOWUP_DELAY: Duration = Duration::from_millis(120);
const FIRST_INTERVAL: Duration = Duration::from_secs(1);

/// Why an instance is not a provider, for the init's failure report.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Skip {
    #[error("said goodbye (a PTR record with TTL 0)")]
    Goodbye,
    #[error("no SRV record arrived")]
    NoSrv,
    #[error("no TXT record arrived")]
    NoTxt,
    #[error("no IPv4 address arrived for {host}")]
    NoAddress { host: String },
    #[error("only IPv6 addresses arrived for {host}; local mode uses IPv4")]
    OnlyIpv6 { host: String },
    #[error("its address {0} cannot be a provider on the LAN")]
    Address(Ipv4Addr),
    #[error("its SRV record names port 0")]
    Port,
    #[error("its TXT record is not understood")]
    Txt(#[source] TxtError),
    #[error("it serves channels {offered:?}, not {wanted:?}")]
    Channel {
        wanted: String,
        offered: Vec<String>,
    },
    #[error("it serves arches {offered:?}, not {wanted:?}")]
    Arch {
        wanted: String,
        offered: Vec<String>,
    },
    #[error("{url} is already offered by {of:?}")]
    Duplicate { url: String, of: String },
}

impl Skip {
    /// A stable snake-case name of the reason, for reports read by programs.
    pub fn kind(&self) -> &'static str {
        match self {
            Skip::Goodbye => "goodbye",
            Skip::NoSrv => "no_srv",
            Skip::NoTxt => "no_txt",
            Skip::NoAddress { .. } => "no_address",
            Skip::OnlyIpv6 { .. } => "only_ipv6",
            Skip::Address(_) => "address",
            Skip::Port => "port",
            Skip::Txt(_) => "txt",
            Skip::Channel { .. } => "channel",
            Skip::Arch { .. } => "arch",
            Skip::Duplicate { .. } => "duplicate",
        }
    }
}

/// A provider to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The instance name (its first label), printable.
    pub instance: String,
    /// `http[s]://A.B.C.D:PORT/PATH`: the base URL of the provider tree.
    pub url: String,
    pub address: SocketAddrV4,
    pub priority: u16,
}

/// One discovered instance and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The instance name (its first label), printable.
    pub instance: String,
    pub outcome: Result<Provider, Skip>,
}

#[derive(Debug, Clone)]
struct Seen {
    name: Name,
    ptr_ttl: u32,
    ptr_at: Duration,
    goodbye: bool,
    srv: Option<Srv>,
    txt: Option<Vec<Vec<u8>>>,
}

#[derive(Debug, Clone)]
struct Host {
    name: Name,
    ipv4: Vec<Ipv4Addr>,
    ipv6: bool,
    /// The packet whose cache-flush A records last replaced the set.
    flushed_in: u64,
}

/// A DNS-SD browser for one service type.
#[derive(Debug, Clone)]
pub struct Browser {
    service: Name,
    deadline: Duration,
    next_query: Option<Duration>,
    interval: Duration,
    followup_at: Option<Duration>,
    queries: u32,
    packets: u64,
    instances: Vec<Seen>,
    hosts: Vec<Host>,
    overflow: usize,
}

impl Browser {
    /// Browses for `service` (e.g. [`crate::service`]) from `now` for
    /// `window`. `seed` picks the first query's delay; any value will do,
    /// but machines booting together should not share one.
    pub fn new(service: Name, window: Duration, seed: u64, now: Duration) -> Browser {
        // 20–120 ms, from a splitmix64 step of the seed.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let delay = Duration::from_millis(20 + (z ^ (z >> 31)) % 101);
        let deadline = now.saturating_add(window);
        let first = now + delay;
        Browser {
            service,
            deadline,
            next_query: (first < deadline).then_some(first),
            interval: FIRST_INTERVAL,
            followup_at: None,
            queries: 0,
            packets: 0,
            instances: Vec::new(),
            hosts: Vec::new(),
            overflow: 0,
        }
    }

    /// The end of the browse window.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// When [`Browser::poll`] has something to send next; `None` once the
    /// window has no more queries in it.
    pub fn next_wakeup(&self) -> Option<Duration> {
        [self.next_query, self.followup_at]
            .into_iter()
            .flatten()
            .filter(|&t| t < self.deadline)
            .min()
    }

    /// Queries sent so far.
    pub fn queries_sent(&self) -> u32 {
        self.queries
    }

    /// Instances heard of beyond [`MAX_INSTANCES`], not kept.
    pub fn overflow(&self) -> usize {
        self.overflow
    }

    /// The query to send now, if one is due.
    pub fn poll(&mut self, now: Duration) -> Option<Vec<u8>> {
        if now >= self.deadline {
            self.next_query = None;
            self.followup_at = None;
            return None;
        }
        let regular = self.next_query.is_some_and(|t| now >= t);
        let followup = self.followup_at.is_some_and(|t| now >= t);
        if !regular && !followup {
            return None;
        }
        let mut msg = Message::query();
        let mut budget = QUERY_BUDGET - HEADER;
        if regular {
            let mut q = Question::new(self.service.clone(), Type::PTR);
            q.unicast_response = self.queries == 0;
            // A name is at most 255 bytes: this always fits the budget.
            budget -= q.name.wire_len() + 4;
            msg.questions.push(q);
            self.queries += 1;
            let next = now.saturating_add(self.interval);
            self.next_query = (next < self.deadline).then_some(next);
            self.interval = self.interval.saturating_mul(2);
        }
        self.followup_at = None;
        for q in self.missing() {
            let cost = q.name.wire_len() + 4;
            if cost > budget {
                self.followup_at = Some(now + FOLLOWUP_DELAY);
                break;
            }
            budget -= cost;
            msg.questions.push(q);
        }
        if regular {
            for seen in self.instances.iter().filter(|s| !s.goodbye) {
                let age = now.saturating_sub(seen.ptr_at).as_secs();
                let left = u64::from(seen.ptr_ttl).saturating_sub(age);
                if left <= u64::from(seen.ptr_ttl / 2) {
                    continue;
                }
                // Uncompressed size: an upper bound.
                let cost = self.service.wire_len() + 10 + seen.name.wire_len();
                if cost > budget {
                    break;
                }
                budget -= cost;
                // `left` ≤ the TTL received, a u32.
                let ttl = u32::try_from(left).unwrap_or(seen.ptr_ttl);
                msg.answers.push(Record::new(
                    self.service.clone(),
                    ttl,
                    Data::Ptr(seen.name.clone()),
                ));
            }
        }
        if msg.questions.is_empty() {
            return None;
        }
        msg.to_bytes().ok()
    }

    /// Questions for what the instances heard of still lack.
    fn missing(&self) -> Vec<Question> {
        let mut questions = Vec::new();
        let mut targets: Vec<&Name> = Vec::new();
        for seen in self.instances.iter().filter(|s| !s.goodbye) {
            if seen.srv.is_none() {
                questions.push(Question::new(seen.name.clone(), Type::SRV));
            }
            if seen.txt.is_none() {
                questions.push(Question::new(seen.name.clone(), Type::TXT));
            }
            if let Some(srv) = &seen.srv
                && !targets.contains(&&srv.target)
                && self.host(&srv.target).is_none_or(|h| h.ipv4.is_empty())
            {
                targets.push(&srv.target);
                questions.push(Question::new(srv.target.clone(), Type::A));
            }
        }
        questions
    }

    fn host(&self, name: &Name) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == *name)
    }

    /// Takes a received datagram. Returns how many of its records concerned
    /// the service; queries, other services and failed responses count 0.
    pub fn on_packet(&mut self, bytes: &[u8], now: Duration) -> Result<usize, DnsError> {
        let msg = Message::parse(bytes)?;
        // RFC 6762 §18.3, §18.11: responses with another opcode or rcode
        // are ignored.
        if !msg.is_response() || msg.opcode() != 0 || msg.rcode() != 0 {
            return Ok(0);
        }
        self.packets += 1;
        let records: Vec<&Record> = msg
            .answers
            .iter()
            .chain(&msg.additionals)
            .filter(|r| r.class == CLASS_IN)
            .collect();
        let mut taken = 0;
        // PTR records first, so SRV and TXT records for a new instance in
        // the same packet find it whatever the order.
        for r in &records {
            let Data::Ptr(target) = &r.data else { continue };
            if r.name != self.service || !target.is_child_of(&self.service) {
                continue;
            }
            taken += 1;
            if let Some(seen) = self.instances.iter_mut().find(|s| s.name == *target) {
                seen.goodbye = r.ttl == 0;
                seen.ptr_ttl = r.ttl;
                seen.ptr_at = now;
            } else if r.ttl == 0 {
                // A goodbye from an instance never heard of.
            } else if self.instances.len() >= MAX_INSTANCES {
                self.overflow += 1;
            } else {
                self.instances.push(Seen {
                    name: target.clone(),
                    ptr_ttl: r.ttl,
                    ptr_at: now,
                    goodbye: false,
                    srv: None,
                    txt: None,
                });
            }
        }
        for r in &records {
            let Some(seen) = self.instances.iter_mut().find(|s| s.name == r.name) else {
                continue;
            };
            match &r.data {
                Data::Srv(srv) => seen.srv = (r.ttl != 0).then(|| srv.clone()),
                Data::Txt(strings) => seen.txt = (r.ttl != 0).then(|| strings.clone()),
                _ => continue,
            }
            taken += 1;
        }
        for r in &records {
            let (Data::A(_) | Data::Aaaa(_)) = r.data else {
                continue;
            };
            let wanted = self
                .instances
                .iter()
                .any(|s| s.srv.as_ref().is_some_and(|srv| srv.target == r.name));
            if !wanted {
                continue;
            }
            taken += 1;
            let index = match self.hosts.iter().position(|h| h.name == r.name) {
                Some(i) => i,
                None if self.hosts.len() >= MAX_INSTANCES => continue,
                None => {
                    self.hosts.push(Host {
                        name: r.name.clone(),
                        ipv4: Vec::new(),
                        ipv6: false,
                        flushed_in: 0,
                    });
                    self.hosts.len() - 1
                }
            };
            let host = &mut self.hosts[index];
            match r.data {
                Data::A(a) if r.ttl == 0 => host.ipv4.retain(|&x| x != a),
                Data::A(a) => {
                    // Cache-flush: this packet's records are the whole set
                    // (RFC 6762 §10.2).
                    if r.cache_flush && host.flushed_in != self.packets {
                        host.ipv4.clear();
                        host.flushed_in = self.packets;
                    }
                    if !host.ipv4.contains(&a) && host.ipv4.len() < MAX_ADDRESSES {
                        host.ipv4.push(a);
                    }
                }
                _ => host.ipv6 = r.ttl != 0,
            }
        }
        if taken > 0 && self.followup_at.is_none() && !self.missing().is_empty() {
            let at = now + FOLLOWUP_DELAY;
            self.followup_at = (at < self.deadline).then_some(at);
        }
        Ok(taken)
    }

    /// Every instance heard of, in the order their PTR records first
    /// arrived, each a provider for `channel` and `arch` or the reason it
    /// is not one.
    pub fn instances(&self, channel: &str, arch: &str) -> Vec<Discovered> {
        let mut found: Vec<Discovered> = self
            .instances
            .iter()
            .map(|seen| Discovered {
                instance: printable(seen.name.first_label().unwrap_or_default()),
                outcome: self.judge(seen, channel, arch),
            })
            .collect();
        // The same URL twice: the one that comes first in provider order
        // stays.
        let order = provider_order(&found);
        for (n, &i) in order.iter().enumerate() {
            let Ok(p) = &found[i].outcome else { continue };
            let earlier = order[..n].iter().find_map(|&j| match &found[j].outcome {
                Ok(q) if q.url == p.url => Some(q.instance.clone()),
                _ => None,
            });
            if let Some(of) = earlier {
                let url = p.url.clone();
                found[i].outcome = Err(Skip::Duplicate { url, of });
            }
        }
        found
    }

    /// The providers for `channel` and `arch`: lowest priority first, then
    /// in the order their PTR records first arrived.
    pub fn providers(&self, channel: &str, arch: &str) -> Vec<Provider> {
        let found = self.instances(channel, arch);
        provider_order(&found)
            .into_iter()
            .filter_map(|i| found[i].outcome.clone().ok())
            .collect()
    }

    fn judge(&self, seen: &Seen, channel: &str, arch: &str) -> Result<Provider, Skip> {
        if seen.goodbye {
            return Err(Skip::Goodbye);
        }
        let srv = seen.srv.as_ref().ok_or(Skip::NoSrv)?;
        let txt = seen.txt.as_ref().ok_or(Skip::NoTxt)?;
        let advert = Advert::from_txt(txt).map_err(Skip::Txt)?;
        if !advert.serves_channel(channel) {
            return Err(Skip::Channel {
                wanted: channel.into(),
                offered: advert.channels.unwrap_or_default(),
            });
        }
        if !advert.serves_arch(arch) {
            return Err(Skip::Arch {
                wanted: arch.into(),
                offered: advert.arches.unwrap_or_default(),
            });
        }
        if srv.port == 0 {
            return Err(Skip::Port);
        }
        let host = self.host(&srv.target);
        let address = match host.and_then(|h| h.ipv4.first()) {
            Some(&a) => a,
            None if host.is_some_and(|h| h.ipv6) => {
                return Err(Skip::OnlyIpv6 {
                    host: srv.target.to_string(),
                });
            }
            None => {
                return Err(Skip::NoAddress {
                    host: srv.target.to_string(),
                });
            }
        };
        if address.is_unspecified()
            || address.is_broadcast()
            || address.is_multicast()
            || address.is_loopback()
        {
            return Err(Skip::Address(address));
        }
        let scheme = if advert.https { "https" } else { "http" };
        Ok(Provider {
            instance: printable(seen.name.first_label().unwrap_or_default()),
            url: format!("{scheme}://{address}:{}{}", srv.port, advert.path),
            address: SocketAddrV4::new(address, srv.port),
            priority: advert.priority,
        })
    }
}

/// Indices of the providers in `found`: by priority, then arrival (the
/// sort is stable and `found` is in arrival order).
fn provider_order(found: &[Discovered]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].outcome.is_ok())
        .collect();
    order.sort_by_key(|&i| found[i].outcome.as_ref().map_or(u16::MAX, |p| p.priority));
    order
}

/// A label for a console line: UTF-8 with control characters replaced.
fn printable(label: &[u8]) -> String {
    String::from_utf8_lossy(label)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::{Instance, Responder};

    const MS: Duration = Duration::from_millis(1);

    fn service() -> Name {
        crate::service()
    }

    fn instance(name: &str, last: u8, txt: &[&str]) -> Instance {
        Instance {
            name: name.into(),
            host: format!("{}.local", name.to_lowercase().replace(' ', "-")),
            ipv4: Ipv4Addr::new(10, 0, 0, last),
            port: 8080,
            txt: txt.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    fn query_of(bytes: &[u8]) -> Message {
        Message::parse(bytes).unwrap()
    }

    #[test]
    fn queries_on_the_rfc_schedule_within_the_window() {
        let start = Duration::from_secs(100);
        let mut b = Browser::new(service(), Duration::from_secs(10), 7, start);
        let first = b.next_wakeup().unwrap();
        assert!(
            (start + 20 * MS..=start + 120 * MS).contains(&first),
            "{first:?}"
        );
        assert_eq!(b.poll(first - MS), None);
        let q = query_of(&b.poll(first).unwrap());
        assert_eq!(q.questions.len(), 1);
        assert!(q.questions[0].unicast_response, "the first query asks QU");
        assert_eq!(q.questions[0].qtype, Type::PTR);
        assert_eq!(q.questions[0].name, service());
        let mut sent = vec![first];
        while let Some(t) = b.next_wakeup() {
            let q = query_of(&b.poll(t).unwrap());
            assert!(!q.questions[0].unicast_response);
            sent.push(t);
        }
        let gaps: Vec<u64> = sent.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps, [1, 2, 4], "sent at {sent:?}");
        assert_eq!(b.queries_sent(), 4);
        assert_eq!(b.poll(start + Duration::from_secs(10)), None);
        // Different seeds spread the first query.
        let firsts: Vec<_> = (0..20)
            .map(|s| Browser::new(service(), Duration::from_secs(10), s, start).next_wakeup())
            .collect();
        assert!(firsts.iter().any(|f| *f != firsts[0]));
    }

    /// A responder for `instances`, and a browser that heard its answer to
    /// the first query.
    fn browse(instances: Vec<Instance>) -> (Browser, Duration) {
        let responder = Responder::new(service(), instances).unwrap();
        let mut b = Browser::new(service(), Duration::from_secs(3), 1, Duration::ZERO);
        let t = b.next_wakeup().unwrap();
        let query = b.poll(t).unwrap();
        let answer = responder.answer(&query, 5353).unwrap();
        assert!(answer.unicast);
        assert!(b.on_packet(&answer.message, t + MS).unwrap() > 0);
        (b, t)
    }

    #[test]
    fn one_response_makes_a_provider() {
        let (mut b, t) = browse(vec![instance(
            "Phase on a",
            1,
            &["txtvers=1", "path=/tree/", "channels=stable"],
        )]);
        assert_eq!(
            b.providers("stable", "x86_64"),
            [Provider {
                instance: "Phase on a".into(),
                url: "http://10.0.0.1:8080/tree/".into(),
                address: "10.0.0.1:8080".parse().unwrap(),
                priority: 0,
            }]
        );
        // Nothing was missing, so no follow-up: the next query is the
        // regular one.
        assert_eq!(b.next_wakeup(), Some(t + Duration::from_secs(1)));
        // It carries the PTR as a known answer.
        let q = query_of(&b.poll(b.next_wakeup().unwrap()).unwrap());
        assert_eq!(q.answers.len(), 1);
        assert_eq!(
            q.answers[0].data,
            Data::Ptr(service().child(b"Phase on a").unwrap())
        );
    }

    #[test]
    fn orders_by_priority_then_arrival_and_explains_every_skip() {
        let mut instances = [
            instance("late low", 1, &["priority=5"]),
            instance("other arch", 2, &["arches=aarch64"]),
            instance("first", 3, &["priority=5"]),
            instance("best", 4, &["priority=1", "scheme=https", "path=/b"]),
            instance("beta only", 5, &["channels=beta"]),
            instance("bad txt", 6, &["scheme=gopher"]),
            instance("loopback", 7, &[]),
            instance("same url", 3, &["priority=9"]),
        ];
        instances[6].ipv4 = Ipv4Addr::LOCALHOST;
        let mut b = Browser::new(service(), Duration::from_secs(3), 1, Duration::ZERO);
        // Each instance answers from its own responder, in this order:
        // arrival is the order of the packets.
        let order = [2, 0, 1, 3, 4, 5, 6, 7];
        let t = b.next_wakeup().unwrap();
        let query = b.poll(t).unwrap();
        for (n, &i) in order.iter().enumerate() {
            let r = Responder::new(service(), vec![instances[i].clone()]).unwrap();
            let answer = r.answer(&query, 5353).unwrap();
            b.on_packet(&answer.message, t + (n as u32 + 1) * MS)
                .unwrap();
        }
        let urls: Vec<String> = b
            .providers("stable", "x86_64")
            .into_iter()
            .map(|p| format!("{} {}", p.instance, p.url))
            .collect();
        assert_eq!(
            urls,
            [
                "best https://10.0.0.4:8080/b",
                "first http://10.0.0.3:8080/",
                "late low http://10.0.0.1:8080/",
            ]
        );
        let skipped: Vec<String> = b
            .instances("stable", "x86_64")
            .into_iter()
            .filter_map(|d| d.outcome.err().map(|e| format!("{}: {e}", d.instance)))
            .collect();
        assert_eq!(
            skipped,
            [
                "other arch: it serves arches [\"aarch64\"], not \"x86_64\"",
                "beta only: it serves channels [\"beta\"], not \"stable\"",
                "bad txt: its TXT record is not understood",
                "loopback: its address 127.0.0.1 cannot be a provider on the LAN",
                "same url: http://10.0.0.3:8080/ is already offered by \"first\"",
            ]
        );
        let kinds: Vec<&str> = b
            .instances("stable", "x86_64")
            .iter()
            .filter_map(|d| d.outcome.as_ref().err().map(Skip::kind))
            .collect();
        assert_eq!(kinds, ["arch", "channel", "txt", "address", "duplicate"]);
    }

    /// A response holding only `records`.
    fn packet(records: Vec<Record>) -> Vec<u8> {
        Message {
            answers: records,
            ..Message::response()
        }
        .to_bytes()
        .unwrap()
    }

    #[test]
    fn asks_for_what_a_response_left_out() {
        let mut b = Browser::new(service(), Duration::from_secs(5), 1, Duration::ZERO);
        let t = b.next_wakeup().unwrap();
        b.poll(t).unwrap();
        let inst = service().child(b"x").unwrap();
        let host = Name::from_dotted("x.local").unwrap();
        // A PTR alone.
        let ptr = Record::new(service(), 4500, Data::Ptr(inst.clone()));
        assert_eq!(b.on_packet(&packet(vec![ptr]), t + 10 * MS), Ok(1));
        assert_eq!(b.next_wakeup(), Some(t + 130 * MS));
        assert_eq!(b.instances("stable", "x86_64")[0].outcome, Err(Skip::NoSrv));
        let q = query_of(&b.poll(t + 130 * MS).unwrap());
        let asked: Vec<(String, Type)> = q
            .questions
            .iter()
            .map(|q| (q.name.to_string(), q.qtype))
            .collect();
        assert_eq!(
            asked,
            [
                ("x._phase-boot._tcp.local".into(), Type::SRV),
                ("x._phase-boot._tcp.local".into(), Type::TXT)
            ]
        );
        // The SRV arrives; its target has no address yet.
        let srv = Record::new(
            inst.clone(),
            120,
            Data::Srv(Srv {
                priority: 0,
                weight: 0,
                port: 80,
                target: host.clone(),
            }),
        );
        let txt = Record::new(inst.clone(), 4500, Data::Txt(vec![b"txtvers=1".to_vec()]));
        b.on_packet(&packet(vec![srv, txt]), t + 140 * MS).unwrap();
        assert_eq!(
            b.instances("stable", "x86_64")[0].outcome,
            Err(Skip::NoAddress {
                host: "x.local".into()
            })
        );
        let q = query_of(&b.poll(t + 260 * MS).unwrap());
        assert_eq!(q.questions, [Question::new(host.clone(), Type::A)]);
        // An AAAA alone is not enough.
        let aaaa = Record::new(host.clone(), 120, Data::Aaaa("fd00::1".parse().unwrap()));
        b.on_packet(&packet(vec![aaaa]), t + 300 * MS).unwrap();
        assert_eq!(
            b.instances("stable", "x86_64")[0].outcome,
            Err(Skip::OnlyIpv6 {
                host: "x.local".into()
            })
        );
        // The regular query asks again, besides the PTR question.
        let at = b.next_query.unwrap();
        let q = query_of(&b.poll(at).unwrap());
        assert_eq!(q.questions.len(), 2);
        assert_eq!(q.questions[1], Question::new(host.clone(), Type::A));
        let a = Record::new(host, 120, Data::A(Ipv4Addr::new(192, 168, 1, 9)));
        b.on_packet(&packet(vec![a]), at + MS).unwrap();
        assert_eq!(
            b.providers("stable", "x86_64")[0].url,
            "http://192.168.1.9:80/"
        );
        // A goodbye takes it away.
        let bye = Record::new(service(), 0, Data::Ptr(inst));
        b.on_packet(&packet(vec![bye]), at + 2 * MS).unwrap();
        assert_eq!(
            b.instances("stable", "x86_64")[0].outcome,
            Err(Skip::Goodbye)
        );
        assert!(b.providers("stable", "x86_64").is_empty());
    }

    #[test]
    fn cache_flush_replaces_addresses_and_plain_records_add() {
        let (mut b, _) = browse(vec![instance("h", 1, &[])]);
        let host = Name::from_dotted("h.local").unwrap();
        let a = |last, flush| Record {
            cache_flush: flush,
            ..Record::new(host.clone(), 120, Data::A(Ipv4Addr::new(10, 0, 0, last)))
        };
        b.on_packet(
            &packet(vec![a(2, true), a(3, true)]),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            b.hosts[0].ipv4,
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]
        );
        b.on_packet(&packet(vec![a(4, false)]), Duration::from_secs(1))
            .unwrap();
        assert_eq!(b.hosts[0].ipv4.len(), 3);
        assert_eq!(
            b.providers("stable", "x86_64")[0].url,
            "http://10.0.0.2:8080/"
        );
    }

    #[test]
    fn ignores_queries_failures_and_other_services() {
        let mut b = Browser::new(service(), Duration::from_secs(3), 1, Duration::ZERO);
        let other = Name::from_dotted("_ipp._tcp.local").unwrap();
        let ptr = |owner: &Name, target: &Name| {
            Record::new(owner.clone(), 4500, Data::Ptr(target.clone()))
        };
        let cases = [
            // Another service.
            packet(vec![ptr(&other, &other.child(b"printer").unwrap())]),
            // Our service pointing outside it.
            packet(vec![ptr(&service(), &other.child(b"printer").unwrap())]),
            // A query carrying a known answer.
            Message {
                answers: vec![ptr(&service(), &service().child(b"q").unwrap())],
                ..Message::query()
            }
            .to_bytes()
            .unwrap(),
            // A response with an error code.
            Message {
                flags: crate::dns::flags::QR | 3,
                answers: vec![ptr(&service(), &service().child(b"e").unwrap())],
                ..Message::default()
            }
            .to_bytes()
            .unwrap(),
        ];
        for p in cases {
            assert_eq!(b.on_packet(&p, Duration::ZERO), Ok(0));
        }
        assert!(b.instances("stable", "x86_64").is_empty());
        assert!(b.on_packet(&[1, 2, 3], Duration::ZERO).is_err());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut b = Browser::new(service(), Duration::from_secs(3), 1, Duration::ZERO);
        for i in 0..100u32 {
            let inst = service().child(format!("i{i}").as_bytes()).unwrap();
            let records = vec![Record::new(service(), 4500, Data::Ptr(inst))];
            b.on_packet(&packet(records), Duration::ZERO).unwrap();
        }
        assert_eq!(b.instances.len(), MAX_INSTANCES);
        assert_eq!(b.overflow(), 100 - MAX_INSTANCES);
        // The follow-up for 32 instances' SRV and TXT stays within budget
        // and leaves the rest for the next query.
        let at = b.next_wakeup().unwrap();
        let bytes = b.poll(at).unwrap();
        assert!(bytes.len() <= QUERY_BUDGET, "{}", bytes.len());
        assert!(query_of(&bytes).questions.len() < 2 * MAX_INSTANCES);
        assert!(b.followup_at.is_some());
    }

    #[test]
    fn console_names_are_printable() {
        assert_eq!(printable(b"a\x1b[2Jb\n"), "a?[2Jb?");
        assert_eq!(printable("Café".as_bytes()), "Café");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
    }
}
