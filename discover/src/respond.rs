//! The responder side: what a host announcing providers sends. Pure: given
//! the instances and a received query, the answer; and the probe (RFC 6762
//! §8.1), announcement (§8.3) and goodbye (§10.1) packets.
//!
//! Each instance publishes four records: the shared PTR from the service
//! type to the instance (TTL 4500 s, RFC 6762 §10), its SRV and TXT, and an
//! A record for its host name (SRV and A: 120 s, as host-name records), plus
//! the service-type enumeration PTR (RFC 6763 §9). SRV, TXT and A are
//! unique records: the cache-flush bit is set on them in multicast
//! responses.
//!
//! Answers follow RFC 6762 §6 and RFC 6763 §12: the records asked for
//! (type ANY included), minus those the query lists as known answers with at
//! least half their TTL left (§7.1), plus the records a browser needs next
//! in the additional section (for a PTR: SRV, TXT and A; for an SRV: A).
//! A query from a port other than 5353 is a legacy one-shot query (§6.7):
//! the answer goes back unicast with the query's id and questions, TTLs of
//! at most 10 s and no cache-flush bits. Otherwise the answer is unicast
//! only when every question it answers asked so (the QU bit).

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::MDNS_PORT;
use crate::dns::{CLASS_ANY, CLASS_IN, Data, DnsError, Message, Name, Question, Record, Srv, Type};

/// TTL of records that do not name a host (RFC 6762 §10).
pub const SHARED_TTL: u32 = 4500;
/// TTL of host-name records: A and SRV (RFC 6762 §10).
pub const HOST_TTL: u32 = 120;
/// The most a legacy unicast answer may say (RFC 6762 §6.7).
const LEGACY_TTL: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespondError {
    #[error("naming instance {instance:?}")]
    Name {
        instance: String,
        #[source]
        source: DnsError,
    },
    #[error("building the announcement of {count} instances")]
    Build {
        count: usize,
        #[source]
        source: DnsError,
    },
}

/// A service instance to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance name, one label of at most 63 bytes, any UTF-8:
    /// "Phase Boot on build-7".
    pub name: String,
    /// The host name the SRV record names: "phase-build-7.local".
    pub host: String,
    pub ipv4: Ipv4Addr,
    pub port: u16,
    /// The TXT strings (see [`crate::txt::Advert::to_txt`]).
    pub txt: Vec<Vec<u8>>,
}

/// An answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub message: Vec<u8>,
    /// Send it to the querier's address and port, not to the group.
    pub unicast: bool,
}

#[derive(Debug, Clone)]
struct Own {
    instance: Name,
    host: Name,
    ipv4: Ipv4Addr,
    port: u16,
    txt: Vec<Vec<u8>>,
}

/// Answers for a fixed set of instances of one service type.
#[derive(Debug, Clone)]
pub struct Responder {
    service: Name,
    own: Vec<Own>,
}

/// `_services._dns-sd._udp.local`: the service-type enumeration name.
fn services_name() -> Name {
    Name::new([&b"_services"[..], b"_dns-sd", b"_udp", b"local"]).unwrap_or_default()
}

impl Responder {
    pub fn new(service: Name, instances: Vec<Instance>) -> Result<Responder, RespondError> {
        let mut own = Vec::with_capacity(instances.len());
        for i in instances {
            let named = |r: Result<Name, DnsError>| {
                r.map_err(|source| RespondError::Name {
                    instance: i.name.clone(),
                    source,
                })
            };
            own.push(Own {
                instance: named(service.child(i.name.as_bytes()))?,
                host: named(Name::from_dotted(&i.host))?,
                ipv4: i.ipv4,
                port: i.port,
                txt: i.txt,
            });
        }
        let responder = Responder { service, own };
        // Building the largest packet once shows every later one fits.
        responder
            .packet(responder.records(), None)
            .map_err(|source| RespondError::Build {
                count: responder.own.len(),
                source,
            })?;
        Ok(responder)
    }

    /// Every record, cache-flush set on the unique ones.
    fn records(&self) -> Vec<Record> {
        let unique = |name: &Name, ttl, data| Record {
            cache_flush: true,
            ..Record::new(name.clone(), ttl, data)
        };
        let mut records = vec![Record::new(
            services_name(),
            SHARED_TTL,
            Data::Ptr(self.service.clone()),
        )];
        for o in &self.own {
            records.push(Record::new(
                self.service.clone(),
                SHARED_TTL,
                Data::Ptr(o.instance.clone()),
            ));
            records.push(unique(
                &o.instance,
                HOST_TTL,
                Data::Srv(Srv {
                    priority: 0,
                    weight: 0,
                    port: o.port,
                    target: o.host.clone(),
                }),
            ));
            records.push(unique(&o.instance, SHARED_TTL, Data::Txt(o.txt.clone())));
            records.push(unique(&o.host, HOST_TTL, Data::A(o.ipv4)));
        }
        records
    }

    /// A response with `answers` (and `additionals`, when given).
    fn packet(
        &self,
        answers: Vec<Record>,
        additionals: Option<Vec<Record>>,
    ) -> Result<Vec<u8>, DnsError> {
        Message {
            answers,
            additionals: additionals.unwrap_or_default(),
            ..Message::response()
        }
        .to_bytes()
    }

    /// The unsolicited announcement (RFC 6762 §8.3): every record in the
    /// answer section. Send it twice, one second apart.
    pub fn announcement(&self) -> Vec<u8> {
        // `new` built this very packet once.
        self.packet(self.records(), None).unwrap_or_default()
    }

    /// The goodbye (RFC 6762 §10.1): every record with TTL 0.
    pub fn goodbye(&self) -> Vec<u8> {
        let records = self
            .records()
            .into_iter()
            .map(|r| Record { ttl: 0, ..r })
            .collect();
        self.packet(records, None).unwrap_or_default()
    }

    /// The probe (RFC 6762 §8.1): ANY questions for the unique names, with
    /// the QU bit, and the records proposed for them in the authority
    /// section. Send it three times, 250 ms apart, and watch for
    /// [`Responder::conflict`] before announcing.
    pub fn probe(&self) -> Vec<u8> {
        let mut msg = Message::query();
        for o in &self.own {
            for name in [&o.instance, &o.host] {
                msg.questions.push(Question {
                    unicast_response: true,
                    ..Question::new(name.clone(), Type::ANY)
                });
            }
        }
        msg.authorities = self
            .records()
            .into_iter()
            .filter(|r| r.cache_flush)
            .map(|r| Record {
                cache_flush: false,
                ..r
            })
            .collect();
        msg.to_bytes().unwrap_or_default()
    }

    /// A record in a received response that claims one of our unique names
    /// (instance or host) with other data: another host uses the name. Our
    /// own packets, looped back, never conflict.
    pub fn conflict(&self, packet: &[u8]) -> Option<String> {
        let msg = Message::parse(packet).ok()?;
        if !msg.is_response() {
            return None;
        }
        let ours = self.records();
        let unique = |n: &Name| self.own.iter().any(|o| o.instance == *n || o.host == *n);
        msg.answers
            .iter()
            .chain(&msg.additionals)
            .find(|r| unique(&r.name) && !ours.iter().any(|o| o.same_as(r)))
            .map(|r| format!("{} {}", r.name, r.rtype()))
    }

    /// The answer to a query received from `source_port`, or `None` when
    /// it asks for nothing of ours (or is not a valid query).
    pub fn answer(&self, query: &[u8], source_port: u16) -> Option<Answer> {
        let msg = Message::parse(query).ok()?;
        if msg.is_response() || msg.opcode() != 0 {
            return None;
        }
        let legacy = source_port != MDNS_PORT;
        let ours = self.records();
        let mut answers: Vec<Record> = Vec::new();
        let mut all_qu = true;
        for q in &msg.questions {
            if q.class != CLASS_IN && q.class != CLASS_ANY {
                continue;
            }
            let mut hit = false;
            for r in ours
                .iter()
                .filter(|r| r.name == q.name && q.qtype.matches(r.rtype()))
            {
                hit = true;
                if !answers.iter().any(|a| a.same_as(r)) {
                    answers.push(r.clone());
                }
            }
            if hit {
                all_qu &= q.unicast_response;
            }
        }
        let known = |r: &Record| {
            msg.answers
                .iter()
                .any(|k| k.same_as(r) && k.ttl >= r.ttl / 2)
        };
        answers.retain(|r| !known(r));
        if answers.is_empty() {
            return None;
        }
        let mut additionals: Vec<Record> = Vec::new();
        let mut add = |r: &Record, answers: &[Record]| {
            if !answers.iter().chain(&additionals).any(|a| a.same_as(r)) {
                additionals.push(r.clone());
            }
        };
        for a in &answers {
            let wanted: Vec<&Record> = match &a.data {
                Data::Ptr(instance) if a.name == self.service => {
                    let hosts: Vec<&Name> = self
                        .own
                        .iter()
                        .filter(|o| o.instance == *instance)
                        .map(|o| &o.host)
                        .collect();
                    ours.iter()
                        .filter(|r| r.name == *instance || hosts.contains(&&r.name))
                        .collect()
                }
                Data::Srv(srv) => ours.iter().filter(|r| r.name == srv.target).collect(),
                _ => Vec::new(),
            };
            for r in wanted {
                add(r, &answers);
            }
        }
        let mut response = Message {
            answers,
            additionals,
            ..Message::response()
        };
        if legacy {
            response.id = msg.id;
            response.questions = msg.questions.clone();
            for r in response.answers.iter_mut().chain(&mut response.additionals) {
                r.ttl = r.ttl.min(LEGACY_TTL);
                r.cache_flush = false;
            }
        }
        Some(Answer {
            message: response.to_bytes().ok()?,
            unicast: legacy || all_qu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> Responder {
        Responder::new(
            crate::service(),
            vec![Instance {
                name: "Phase Boot on b7".into(),
                host: "phase-b7.local".into(),
                ipv4: Ipv4Addr::new(192, 168, 7, 2),
                port: 8080,
                txt: vec![b"txtvers=1".to_vec(), b"path=/".to_vec()],
            }],
        )
        .unwrap()
    }

    fn query(questions: Vec<Question>) -> Vec<u8> {
        Message {
            questions,
            ..Message::query()
        }
        .to_bytes()
        .unwrap()
    }

    fn q(name: &str, qtype: Type) -> Question {
        Question::new(Name::from_dotted(name).unwrap(), qtype)
    }

    fn summary(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}{}",
                    r.name,
                    r.rtype(),
                    r.ttl,
                    if r.cache_flush { " flush" } else { "" }
                )
            })
            .collect()
    }

    const INSTANCE: &str = "Phase Boot on b7._phase-boot._tcp.local";

    #[test]
    fn answers_a_browse_with_everything_needed_next() {
        let r = responder();
        let a = r
            .answer(&query(vec![q("_phase-boot._tcp.local", Type::PTR)]), 5353)
            .unwrap();
        assert!(!a.unicast);
        let m = Message::parse(&a.message).unwrap();
        assert_eq!((m.id, m.flags, m.questions.len()), (0, 0x8400, 0));
        assert_eq!(summary(&m.answers), ["_phase-boot._tcp.local PTR 4500"]);
        assert_eq!(
            summary(&m.additionals),
            [
                format!("{INSTANCE} SRV 120 flush"),
                format!("{INSTANCE} TXT 4500 flush"),
                "phase-b7.local A 120 flush".into(),
            ]
        );
    }

    #[test]
    fn answers_each_record_type_and_any() {
        let r = responder();
        let table: &[(Question, &[&str], &[&str])] = &[
            (q(INSTANCE, Type::SRV), &["SRV"], &["A"]),
            (q(INSTANCE, Type::TXT), &["TXT"], &[]),
            (q(INSTANCE, Type::ANY), &["SRV", "TXT"], &["A"]),
            (q("PHASE-B7.local", Type::A), &["A"], &[]),
            (q("_services._dns-sd._udp.local", Type::PTR), &["PTR"], &[]),
        ];
        for (question, answers, additionals) in table {
            let a = r.answer(&query(vec![question.clone()]), 5353).unwrap();
            let m = Message::parse(&a.message).unwrap();
            let types =
                |rs: &[Record]| rs.iter().map(|r| r.rtype().to_string()).collect::<Vec<_>>();
            assert_eq!(types(&m.answers), *answers, "{question:?}");
            assert_eq!(types(&m.additionals), *additionals, "{question:?}");
        }
        for question in [
            q("phase-b7.local", Type::AAAA),
            q("_ipp._tcp.local", Type::PTR),
            Question {
                class: 3,
                ..q(INSTANCE, Type::SRV)
            },
        ] {
            assert_eq!(
                r.answer(&query(vec![question.clone()]), 5353),
                None,
                "{question:?}"
            );
        }
        // Responses and garbage are not queries.
        assert_eq!(r.answer(&r.announcement(), 5353), None);
        assert_eq!(r.answer(&[0xff; 40], 5353), None);
    }

    #[test]
    fn known_answers_with_half_their_ttl_suppress() {
        let r = responder();
        let ptr = |ttl| {
            Record::new(
                crate::service(),
                ttl,
                Data::Ptr(
                    Name::from_dotted("_phase-boot._tcp.local")
                        .unwrap()
                        .child(b"Phase Boot on b7")
                        .unwrap(),
                ),
            )
        };
        let with_known = |ttl| {
            Message {
                questions: vec![q("_phase-boot._tcp.local", Type::PTR)],
                answers: vec![ptr(ttl)],
                ..Message::query()
            }
            .to_bytes()
            .unwrap()
        };
        assert_eq!(r.answer(&with_known(2250), 5353), None);
        assert!(r.answer(&with_known(2249), 5353).is_some());
    }

    #[test]
    fn qu_and_legacy_queries_get_unicast_answers() {
        let r = responder();
        let mut qu = q("_phase-boot._tcp.local", Type::PTR);
        qu.unicast_response = true;
        let a = r.answer(&query(vec![qu.clone()]), 5353).unwrap();
        assert!(a.unicast);
        // One QM question among the answered ones makes it multicast.
        let a = r
            .answer(&query(vec![qu, q("phase-b7.local", Type::A)]), 5353)
            .unwrap();
        assert!(!a.unicast);
        // A legacy query: id and question echoed, short TTLs, no flush.
        let mut legacy = Message {
            questions: vec![q(INSTANCE, Type::SRV)],
            ..Message::query()
        };
        legacy.id = 0x1234;
        let a = r.answer(&legacy.to_bytes().unwrap(), 40000).unwrap();
        assert!(a.unicast);
        let m = Message::parse(&a.message).unwrap();
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.questions, legacy.questions);
        assert_eq!(summary(&m.answers), [format!("{INSTANCE} SRV 10")]);
        assert_eq!(summary(&m.additionals), ["phase-b7.local A 10"]);
    }

    #[test]
    fn announcement_goodbye_and_probe() {
        let r = responder();
        let m = Message::parse(&r.announcement()).unwrap();
        assert_eq!(
            summary(&m.answers),
            [
                "_services._dns-sd._udp.local PTR 4500".to_string(),
                "_phase-boot._tcp.local PTR 4500".into(),
                format!("{INSTANCE} SRV 120 flush"),
                format!("{INSTANCE} TXT 4500 flush"),
                "phase-b7.local A 120 flush".into(),
            ]
        );
        let bye = Message::parse(&r.goodbye()).unwrap();
        assert!(bye.answers.iter().all(|a| a.ttl == 0));
        assert_eq!(bye.answers.len(), 5);
        let probe = Message::parse(&r.probe()).unwrap();
        assert!(!probe.is_response());
        assert!(
            probe
                .questions
                .iter()
                .all(|q| q.qtype == Type::ANY && q.unicast_response)
        );
        assert_eq!(probe.questions.len(), 2);
        assert_eq!(probe.authorities.len(), 3);
        // Our own packets do not conflict; another host's A for our name does.
        assert_eq!(r.conflict(&r.announcement()), None);
        assert_eq!(r.conflict(&r.goodbye()), None);
        assert_eq!(r.conflict(&r.probe()), None);
        let other = Message {
            answers: vec![Record::new(
                Name::from_dotted("phase-b7.local").unwrap(),
                120,
                Data::A(Ipv4Addr::new(192, 168, 7, 3)),
            )],
            ..Message::response()
        };
        assert_eq!(
            r.conflict(&other.to_bytes().unwrap()),
            Some("phase-b7.local A".into())
        );
    }

    #[test]
    fn refuses_names_that_cannot_be_sent() {
        let mut i = Instance {
            name: "x".repeat(64),
            host: "h.local".into(),
            ipv4: Ipv4Addr::new(10, 0, 0, 1),
            port: 1,
            txt: Vec::new(),
        };
        assert!(matches!(
            Responder::new(crate::service(), vec![i.clone()]),
            Err(RespondError::Name { .. })
        ));
        i.name = "x".into();
        i.txt = vec![vec![b'a'; 256]];
        assert!(matches!(
            Responder::new(crate::service(), vec![i]),
            Err(RespondError::Build { .. })
        ));
    }
}
