//! An independent referee: Debian's dnspython reads the messages we build,
//! and we read the messages dnspython builds (with its own compression).
//! Both sides describe a message as the same JSON — labels as hex, record
//! data by type — and the descriptions must match.
//!
//! Needs `/usr/bin/python3` with `dns` (Debian's python3-dnspython); without
//! it each test says so and does nothing else, unless `PHASE_REQUIRE_TOOLS`
//! is set, when it fails.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use phase_discover::dns::{Data, Message, Name, Question, Record, Type};
use phase_discover::{Browser, Instance, Responder, service};
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";

/// Describes messages as JSON lines: `decode` reads hex lines from stdin,
/// `encode` builds its own messages and prints `hex JSON` lines.
const SCRIPT: &str = r#"
import json, sys
import dns.message, dns.flags, dns.rdata, dns.rdatatype, dns.rrset, dns.name

def labels(name):
    return [l.hex() for l in name.labels]

def rdata(r):
    if isinstance(r, dns.rdata.GenericRdata):
        return ["generic", r.data.hex()]
    t = r.rdtype
    if t == dns.rdatatype.A or t == dns.rdatatype.AAAA:
        return [dns.rdatatype.to_text(t), r.address]
    if t == dns.rdatatype.PTR:
        return ["PTR", labels(r.target)]
    if t == dns.rdatatype.SRV:
        return ["SRV", r.priority, r.weight, r.port, labels(r.target)]
    if t == dns.rdatatype.TXT:
        return ["TXT", [s.hex() for s in r.strings]]
    return ["generic", r.to_digestable().hex()]

def section(rrsets):
    out = []
    for rrset in rrsets:
        for r in rrset:
            out.append([labels(rrset.name), rrset.rdclass, rrset.rdtype, rrset.ttl, rdata(r)])
    return sorted(out, key=json.dumps)

def describe(m):
    return {
        "id": m.id,
        "flags": m.flags,
        "question": sorted([[labels(q.name), q.rdclass, q.rdtype] for q in m.question], key=json.dumps),
        "answer": section(m.answer),
        "authority": section(m.authority),
        "additional": section(m.additional),
    }

def built():
    inst = dns.name.from_text("Phase\\032on\\032x._phase-boot._tcp.local.")
    host = dns.name.from_text("box-7.local.")
    m = dns.message.Message(id=0)
    m.flags = dns.flags.QR | dns.flags.AA
    m.answer.append(dns.rrset.from_text("_phase-boot._tcp.local.", 4500, "IN", "PTR", inst.to_text()))
    m.additional.append(dns.rrset.from_text(inst, 120, "IN", "SRV", "3 0 8443 box-7.local."))
    m.additional.append(dns.rrset.from_text(inst, 4500, "IN", "TXT",
        '"txtvers=1" "path=/boot/" "scheme=https" "channels=stable" "" "%s"' % ("x" * 255)))
    m.additional.append(dns.rrset.from_text(host, 120, "IN", "A", "192.168.44.5"))
    m.additional.append(dns.rrset.from_text(host, 120, "IN", "AAAA", "fd00::5"))
    m.additional.append(dns.rrset.from_text(host, 120, "IN", "NSEC", "box-7.local. A AAAA"))
    yield m
    q = dns.message.make_query("_phase-boot._tcp.local.", "PTR")
    q.id = 0
    q.flags = 0
    q.answer.append(dns.rrset.from_text("_phase-boot._tcp.local.", 4000, "IN", "PTR", inst.to_text()))
    yield q

if sys.argv[1] == "decode":
    for line in sys.stdin:
        m = dns.message.from_wire(bytes.fromhex(line.strip()))
        print(json.dumps(describe(m)))
else:
    for m in built():
        print(m.to_wire().hex(), json.dumps(describe(m)))
"#;

fn referee_missing() -> Option<String> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import dns.message"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| format!("{PYTHON} with dnspython is missing (apt-get install python3-dnspython)"))
}

macro_rules! require_referee {
    () => {
        if let Some(why) = referee_missing() {
            phase_testkit::skip(module_path!(), format_args!("{why}"));
            return;
        }
    };
}

fn python(mode: &str, input: &str) -> String {
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dnspython failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn labels(name: &Name) -> Value {
    let mut l: Vec<Value> = name.labels().map(|l| hex(l).into()).collect();
    // dnspython lists the root label too.
    l.push("".into());
    l.into()
}

fn class(c: u16, top_bit: bool) -> u16 {
    c | if top_bit { 0x8000 } else { 0 }
}

fn section(records: &[Record]) -> Value {
    let mut out: Vec<Value> = records
        .iter()
        .map(|r| {
            let data = match (&r.data, r.cache_flush) {
                // dnspython knows A and SRV only in class IN; with the
                // cache-flush bit it keeps the data as bytes.
                (Data::A(a), true) => json!(["generic", hex(&a.octets())]),
                (Data::A(a), false) => json!(["A", a.to_string()]),
                (Data::Aaaa(a), true) => json!(["generic", hex(&a.octets())]),
                (Data::Aaaa(a), false) => json!(["AAAA", a.to_string()]),
                (Data::Ptr(n), _) => json!(["PTR", labels(n)]),
                (Data::Srv(s), false) => {
                    json!(["SRV", s.priority, s.weight, s.port, labels(&s.target)])
                }
                (Data::Srv(_), true) => panic!("compare SRV records without cache-flush"),
                (Data::Txt(t), _) => {
                    json!(["TXT", t.iter().map(|s| hex(s)).collect::<Vec<_>>()])
                }
                (Data::Other { bytes, .. }, _) => json!(["generic", hex(bytes)]),
            };
            json!([
                labels(&r.name),
                class(r.class, r.cache_flush),
                r.rtype().0,
                r.ttl,
                data
            ])
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out.into()
}

fn describe(m: &Message) -> Value {
    let mut questions: Vec<Value> = m
        .questions
        .iter()
        .map(|q| {
            json!([
                labels(&q.name),
                class(q.class, q.unicast_response),
                q.qtype.0
            ])
        })
        .collect();
    questions.sort_by_key(|v| v.to_string());
    json!({
        "id": m.id,
        "flags": m.flags,
        "question": questions,
        "answer": section(&m.answers),
        "authority": section(&m.authorities),
        "additional": section(&m.additionals),
    })
}

/// The same records without cache-flush bits, so dnspython decodes every
/// type; the bits themselves are checked on the A records, which it keeps.
fn without_flush(bytes: &[u8]) -> Message {
    let mut m = Message::parse(bytes).unwrap();
    for r in m
        .answers
        .iter_mut()
        .chain(&mut m.authorities)
        .chain(&mut m.additionals)
    {
        if !matches!(r.data, Data::A(_)) {
            r.cache_flush = false;
        }
    }
    m
}

fn responder() -> Responder {
    Responder::new(
        service(),
        vec![
            Instance {
                name: "Phase Boot on build.7".into(),
                host: "phase-build-7.local".into(),
                ipv4: Ipv4Addr::new(10, 1, 2, 3),
                port: 8080,
                txt: vec![b"txtvers=1".to_vec(), b"path=/tree/".to_vec()],
            },
            Instance {
                name: "Zweiter Spiegel".into(),
                host: "spiegel.local".into(),
                ipv4: Ipv4Addr::new(10, 1, 2, 4),
                port: 80,
                txt: vec![b"txtvers=1".to_vec(), b"priority=2".to_vec()],
            },
        ],
    )
    .unwrap()
}

#[test]
fn dnspython_reads_what_we_build() {
    require_referee!();
    let r = responder();
    let mut browser = Browser::new(service(), Duration::from_secs(10), 3, Duration::ZERO);
    let t = browser.next_wakeup().unwrap();
    let first_query = browser.poll(t).unwrap();
    let answer = r.answer(&first_query, 5353).unwrap().message;
    browser.on_packet(&answer, t).unwrap();
    let later_query = browser.poll(browser.next_wakeup().unwrap()).unwrap();
    let mut legacy = Message::query();
    legacy.id = 0xbeef;
    legacy.questions = vec![
        Question::new(service(), Type::PTR),
        Question::new(Name::from_dotted("spiegel.local").unwrap(), Type::ANY),
    ];
    let legacy_answer = r
        .answer(&legacy.to_bytes().unwrap(), 41000)
        .unwrap()
        .message;

    let messages: Vec<Message> = vec![
        Message::parse(&first_query).unwrap(),
        Message::parse(&later_query).unwrap(),
        without_flush(&answer),
        without_flush(&r.announcement()),
        without_flush(&r.goodbye()),
        Message::parse(&r.probe()).unwrap(),
        Message::parse(&legacy_answer).unwrap(),
    ];
    // The known answer and the legacy echo are really there.
    assert_eq!(messages[1].answers.len(), 2);
    assert_eq!(messages[6].questions.len(), 2);
    let input: String = messages
        .iter()
        .map(|m| hex(&m.to_bytes().unwrap()) + "\n")
        .collect();
    let output = python("decode", &input);
    let theirs: Vec<Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), messages.len());
    for (i, (m, theirs)) in messages.iter().zip(&theirs).enumerate() {
        assert_eq!(&describe(m), theirs, "message {i}");
    }
    // The QU bit of the first query, seen by dnspython as class 0x8001.
    assert_eq!(theirs[0]["question"][0][1], 0x8001);
    // The cache-flush bit on the A records, likewise.
    assert!(
        theirs[3]["answer"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[1] == 0x8001 && r[2] == 1)
    );
}

#[test]
fn we_read_what_dnspython_builds() {
    require_referee!();
    let output = python("encode", "");
    let mut lines = output.lines();
    let (response_hex, response_json) = lines.next().unwrap().split_once(' ').unwrap();
    let (query_hex, query_json) = lines.next().unwrap().split_once(' ').unwrap();
    for (h, j) in [(response_hex, response_json), (query_hex, query_json)] {
        let bytes = unhex(h);
        let ours = Message::parse(&bytes).unwrap();
        let theirs: Value = serde_json::from_str(j).unwrap();
        assert_eq!(describe(&ours), theirs);
    }
    // dnspython compressed its names; ours were read through the pointers.
    let response = unhex(response_hex);
    assert!(response.iter().any(|&b| b & 0xc0 == 0xc0));
    // And the browser makes a provider of it.
    let mut browser = Browser::new(service(), Duration::from_secs(3), 1, Duration::ZERO);
    // PTR, SRV, TXT, A and AAAA; not the NSEC.
    assert_eq!(browser.on_packet(&response, Duration::ZERO), Ok(5));
    let providers = browser.providers("stable", "aarch64");
    assert_eq!(
        providers.len(),
        1,
        "{:?}",
        browser.instances("stable", "aarch64")
    );
    assert_eq!(providers[0].instance, "Phase on x");
    assert_eq!(providers[0].url, "https://192.168.44.5:8443/boot/");
    // The query's known answer parses as one.
    let query = Message::parse(&unhex(query_hex)).unwrap();
    assert!(!query.is_response());
    assert_eq!(query.answers[0].ttl, 4000);
}
