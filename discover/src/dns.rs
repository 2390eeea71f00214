//! DNS messages (RFC 1035 §4) with the Multicast DNS bits (RFC 6762 §18):
//! the unicast-response bit in a question's class, the cache-flush bit in a
//! record's class. Pure functions over bytes.
//!
//! Parsing treats every byte as hostile. A message is at most
//! [`MAX_MESSAGE`] bytes; the header's counts must fit the bytes that follow
//! before anything is allocated; a compression pointer must point before
//! the place the name being read began, which makes every chain strictly
//! decreasing and so loop-free, and at most [`MAX_JUMPS`] are followed; a
//! name is at most [`MAX_NAME`] bytes in wire form. Record data is read
//! within its RDLENGTH only. Bytes after the last record are ignored.
//!
//! Building compresses every name (owner names and the names inside PTR
//! and SRV data, as RFC 6762 §18.14 allows) against the names already
//! written, matching labels byte for byte so the case of each name is kept.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// The largest Multicast DNS message (RFC 6762 §17), in either direction.
pub const MAX_MESSAGE: usize = 9000;
/// The largest name in wire form, length bytes and the root label included.
pub const MAX_NAME: usize = 255;
/// The largest label.
pub const MAX_LABEL: usize = 63;
/// Compression pointers followed in one name. A name of at most 255 bytes
/// has at most 127 labels, so a valid name never needs more.
pub const MAX_JUMPS: usize = 127;

const HEADER: usize = 12;
/// The smallest question: the root name (one byte), type and class.
const MIN_QUESTION: usize = 5;
/// The smallest record: the root name, type, class, TTL and RDLENGTH.
const MIN_RECORD: usize = 11;

/// The class IN.
pub const CLASS_IN: u16 = 1;
/// The QCLASS that matches every class.
pub const CLASS_ANY: u16 = 255;
/// The top bit of a question's class asks for a unicast response; of a
/// record's class it tells caches to flush older records of the set.
const CLASS_TOP_BIT: u16 = 0x8000;

/// Header flag bits (RFC 1035 §4.1.1).
pub mod flags {
    /// A response, not a query.
    pub const QR: u16 = 0x8000;
    /// The opcode field (four bits).
    pub const OPCODE: u16 = 0x7800;
    /// Authoritative answer: every Multicast DNS response sets it.
    pub const AA: u16 = 0x0400;
    /// Truncated: more known answers follow in another packet.
    pub const TC: u16 = 0x0200;
    /// The response code field (four bits).
    pub const RCODE: u16 = 0x000f;
}

/// A record or question type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type(pub u16);

impl Type {
    pub const A: Type = Type(1);
    pub const PTR: Type = Type(12);
    pub const TXT: Type = Type(16);
    pub const AAAA: Type = Type(28);
    pub const SRV: Type = Type(33);
    pub const NSEC: Type = Type(47);
    /// In a question: every type.
    pub const ANY: Type = Type(255);

    /// Whether a question of this type asks for records of type `rtype`.
    pub fn matches(self, rtype: Type) -> bool {
        self == Type::ANY || self == rtype
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Type::A => "A",
            Type::PTR => "PTR",
            Type::TXT => "TXT",
            Type::AAAA => "AAAA",
            Type::SRV => "SRV",
            Type::NSEC => "NSEC",
            Type::ANY => "ANY",
            // RFC 3597's spelling of an unknown type.
            Type(n) => return write!(f, "TYPE{n}"),
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DnsError {
    #[error(
        "parsing a {len}-byte message: longer than the {MAX_MESSAGE}-byte Multicast DNS maximum"
    )]
    ParseTooLong { len: usize },
    #[error("parsing {what} at offset {offset}: it runs past byte {end}")]
    ParseTruncated {
        what: &'static str,
        offset: usize,
        end: usize,
    },
    #[error(
        "parsing the header: {questions} questions and {records} records cannot fit in the {remaining} bytes after it"
    )]
    ParseCounts {
        questions: u16,
        records: u32,
        remaining: usize,
    },
    #[error("parsing a name at offset {offset}: label type bits {bits:#04x} are not defined")]
    ParseLabelType { offset: usize, bits: u8 },
    #[error(
        "parsing a name at offset {offset}: the compression pointer to {target} does not point before {floor}"
    )]
    ParsePointer {
        offset: usize,
        target: usize,
        floor: usize,
    },
    #[error("parsing the name at offset {offset}: more than {MAX_JUMPS} compression pointers")]
    ParsePointerChain { offset: usize },
    #[error("parsing the name at offset {offset}: longer than {MAX_NAME} bytes")]
    ParseNameTooLong { offset: usize },
    #[error("parsing {rtype} data of {len} bytes at offset {offset}: {reason}")]
    ParseData {
        rtype: Type,
        offset: usize,
        len: usize,
        reason: &'static str,
    },
    #[error("making a name of label {label:?}: {len} bytes, longer than {MAX_LABEL}")]
    NameLabel { label: String, len: usize },
    #[error("making the name {name:?}: it has an empty label")]
    NameEmptyLabel { name: String },
    #[error("making the name {name:?}: {len} bytes in wire form, longer than {MAX_NAME}")]
    NameTooLong { name: String, len: usize },
    #[error("building a TXT string of {len} bytes: longer than 255")]
    BuildTxt { len: usize },
    #[error("building {rtype} data of {len} bytes: longer than 65535")]
    BuildData { rtype: Type, len: usize },
    #[error(
        "building a message of {len} bytes: longer than the {MAX_MESSAGE}-byte Multicast DNS maximum"
    )]
    BuildTooLong { len: usize },
}

/// A domain name: its labels, most specific first, without the root.
/// Labels are bytes (DNS-SD instance names are UTF-8 with any character,
/// dots included); names compare case-insensitively in ASCII, as DNS does.
#[derive(Debug, Clone, Default)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root name.
    pub fn root() -> Name {
        Name::default()
    }

    /// A name from its labels, checked: none empty, none over 63 bytes, the
    /// whole at most 255 bytes in wire form.
    pub fn new<I, L>(labels: I) -> Result<Name, DnsError>
    where
        I: IntoIterator<Item = L>,
        L: Into<Vec<u8>>,
    {
        let name = Name {
            labels: labels.into_iter().map(Into::into).collect(),
        };
        for label in &name.labels {
            if label.is_empty() {
                return Err(DnsError::NameEmptyLabel {
                    name: name.to_string(),
                });
            }
            if label.len() > MAX_LABEL {
                return Err(DnsError::NameLabel {
                    label: String::from_utf8_lossy(label).into_owned(),
                    len: label.len(),
                });
            }
        }
        if name.wire_len() > MAX_NAME {
            return Err(DnsError::NameTooLong {
                name: name.to_string(),
                len: name.wire_len(),
            });
        }
        Ok(name)
    }

    /// `a.b.local` (a trailing dot is allowed). Dots always separate labels
    /// here; a label with a dot in it needs [`Name::child`].
    pub fn from_dotted(text: &str) -> Result<Name, DnsError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Ok(Name::root());
        }
        Name::new(text.split('.').map(str::as_bytes))
    }

    /// This name with `label` in front: `label.self`.
    pub fn child(&self, label: &[u8]) -> Result<Name, DnsError> {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        labels.push(label.to_vec());
        labels.extend(self.labels.iter().cloned());
        Name::new(labels)
    }

    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        self.labels.iter().map(Vec::as_slice)
    }

    /// The most specific label; for a DNS-SD instance, its user-visible name.
    pub fn first_label(&self) -> Option<&[u8]> {
        self.labels.first().map(Vec::as_slice)
    }

    /// Whether this name is `<one label>.parent`.
    pub fn is_child_of(&self, parent: &Name) -> bool {
        self.labels.len() == parent.labels.len() + 1 && labels_eq(&self.labels[1..], &parent.labels)
    }

    /// Bytes in uncompressed wire form: a length byte per label, the
    /// labels, the root's zero.
    pub fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| 1 + l.len()).sum::<usize>() + 1
    }
}

fn labels_eq(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        labels_eq(&self.labels, &other.labels)
    }
}

impl Eq for Name {}

/// Master-file style (RFC 1035 §5.1) without the final dot: `.` and `\`
/// inside a label are escaped with `\`, bytes other than printable ASCII
/// and space as `\DDD`, so a hostile name cannot forge log lines.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            return f.write_str(".");
        }
        for (i, label) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for &b in label {
                match b {
                    b'.' | b'\\' => write!(f, "\\{}", char::from(b))?,
                    0x20..=0x7e => write!(f, "{}", char::from(b))?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
        }
        Ok(())
    }
}

/// A question. `class` is without the unicast-response bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: Type,
    pub class: u16,
    /// The QU bit (RFC 6762 §5.4): the querier wants a unicast reply.
    pub unicast_response: bool,
}

impl Question {
    /// A question for `name` of class IN, multicast reply wanted (QM).
    pub fn new(name: Name, qtype: Type) -> Question {
        Question {
            name,
            qtype,
            class: CLASS_IN,
            unicast_response: false,
        }
    }
}

/// SRV data (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: Name,
}

/// Record data; types other than these are kept as their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Name),
    Srv(Srv),
    /// The character-strings of a TXT record, each at most 255 bytes.
    Txt(Vec<Vec<u8>>),
    /// Any other type, as received (RFC 3597: never compressed, so the
    /// bytes mean the same in any message).
    Other {
        rtype: Type,
        bytes: Vec<u8>,
    },
}

impl Data {
    pub fn rtype(&self) -> Type {
        match self {
            Data::A(_) => Type::A,
            Data::Aaaa(_) => Type::AAAA,
            Data::Ptr(_) => Type::PTR,
            Data::Srv(_) => Type::SRV,
            Data::Txt(_) => Type::TXT,
            Data::Other { rtype, .. } => *rtype,
        }
    }
}

/// A resource record. `class` is without the cache-flush bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub class: u16,
    /// The cache-flush bit (RFC 6762 §10.2): this is the whole set.
    pub cache_flush: bool,
    pub ttl: u32,
    pub data: Data,
}

impl Record {
    /// A record of class IN without the cache-flush bit.
    pub fn new(name: Name, ttl: u32, data: Data) -> Record {
        Record {
            name,
            class: CLASS_IN,
            cache_flush: false,
            ttl,
            data,
        }
    }

    pub fn rtype(&self) -> Type {
        self.data.rtype()
    }

    /// Same name, type, class and data: the same record, whatever its TTL.
    pub fn same_as(&self, other: &Record) -> bool {
        self.name == other.name && self.class == other.class && self.data == other.data
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub id: u16,
    /// The header's second 16 bits, as on the wire; see [`flags`].
    pub flags: u16,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Message {
    /// A Multicast DNS query: id 0, no flags (RFC 6762 §18).
    pub fn query() -> Message {
        Message::default()
    }

    /// A Multicast DNS response: id 0, QR and AA set (RFC 6762 §18).
    pub fn response() -> Message {
        Message {
            flags: flags::QR | flags::AA,
            ..Message::default()
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags & flags::QR != 0
    }

    pub fn opcode(&self) -> u8 {
        // Four bits after the shift.
        ((self.flags & flags::OPCODE) >> 11) as u8
    }

    pub fn rcode(&self) -> u8 {
        // Four bits.
        (self.flags & flags::RCODE) as u8
    }

    /// Answers, then authorities, then additionals.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
    }

    /// Parses a message; see the module documentation for the bounds.
    pub fn parse(bytes: &[u8]) -> Result<Message, DnsError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(DnsError::ParseTooLong { len: bytes.len() });
        }
        let mut r = Reader { msg: bytes, pos: 0 };
        let id = r.u16("the header")?;
        let flags = r.u16("the header")?;
        let qd = r.u16("the header")?;
        let an = r.u16("the header")?;
        let ns = r.u16("the header")?;
        let ar = r.u16("the header")?;
        let records = u32::from(an) + u32::from(ns) + u32::from(ar);
        let remaining = bytes.len() - HEADER;
        // At most 3 × 65535 × 11 + 65535 × 5: no overflow in usize.
        let needed = usize::from(qd) * MIN_QUESTION + records as usize * MIN_RECORD;
        if needed > remaining {
            return Err(DnsError::ParseCounts {
                questions: qd,
                records,
                remaining,
            });
        }
        let mut questions = Vec::with_capacity(usize::from(qd));
        for _ in 0..qd {
            let name = r.name(bytes.len())?;
            let qtype = Type(r.u16("a question")?);
            let class = r.u16("a question")?;
            questions.push(Question {
                name,
                qtype,
                class: class & !CLASS_TOP_BIT,
                unicast_response: class & CLASS_TOP_BIT != 0,
            });
        }
        let mut section = |count: u16| -> Result<Vec<Record>, DnsError> {
            let mut records = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                records.push(r.record()?);
            }
            Ok(records)
        };
        let answers = section(an)?;
        let authorities = section(ns)?;
        let additionals = section(ar)?;
        Ok(Message {
            id,
            flags,
            questions,
            answers,
            authorities,
            additionals,
        })
    }

    /// The message in wire form, every name compressed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DnsError> {
        let mut w = Writer::default();
        w.u16(self.id);
        w.u16(self.flags);
        for count in [
            self.questions.len(),
            self.answers.len(),
            self.authorities.len(),
            self.additionals.len(),
        ] {
            // Every entry takes at least 5 bytes, so a count above 65535
            // could never fit in a message anyway.
            let count = u16::try_from(count).map_err(|_| DnsError::BuildTooLong {
                len: count.saturating_mul(MIN_QUESTION),
            })?;
            w.u16(count);
        }
        for q in &self.questions {
            w.name(&q.name);
            w.u16(q.qtype.0);
            w.u16(q.class | if q.unicast_response { CLASS_TOP_BIT } else { 0 });
        }
        for record in self.records() {
            w.record(record)?;
        }
        if w.buf.len() > MAX_MESSAGE {
            return Err(DnsError::BuildTooLong { len: w.buf.len() });
        }
        Ok(w.buf)
    }
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes, which must end at or before `end`.
    fn take_within(
        &mut self,
        n: usize,
        end: usize,
        what: &'static str,
    ) -> Result<&'a [u8], DnsError> {
        let start = self.pos;
        // `start` ≤ the message length ≤ 9000 and `n` ≤ 65535: no overflow.
        if start + n > end {
            return Err(DnsError::ParseTruncated {
                what,
                offset: start,
                end,
            });
        }
        self.pos = start + n;
        Ok(&self.msg[start..start + n])
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DnsError> {
        self.take_within(n, self.msg.len(), what)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DnsError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DnsError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name starting here whose uncompressed part ends by `end`; leaves
    /// the reader after it (after its first pointer, if any).
    fn name(&mut self, end: usize) -> Result<Name, DnsError> {
        let start = self.pos;
        let mut labels = Vec::new();
        let mut wire = 1;
        let mut pos = start;
        let mut limit = end;
        // Every pointer must point below `floor`: the place where the part
        // of the name being read began. Each jump lowers it, so no chain
        // can come back to a place it has been.
        let mut floor = start;
        let mut jumps = 0;
        let mut after = None;
        loop {
            let Some(&len) = self.msg.get(pos).filter(|_| pos < limit) else {
                return Err(DnsError::ParseTruncated {
                    what: "a name",
                    offset: start,
                    end: limit,
                });
            };
            match len & 0xc0 {
                0x00 if len == 0 => {
                    pos += 1;
                    break;
                }
                0x00 => {
                    let len = usize::from(len);
                    // `pos` < 9000 and `len` ≤ 63: no overflow.
                    if pos + 1 + len > limit {
                        return Err(DnsError::ParseTruncated {
                            what: "a label",
                            offset: pos,
                            end: limit,
                        });
                    }
                    wire += 1 + len;
                    if wire > MAX_NAME {
                        return Err(DnsError::ParseNameTooLong { offset: start });
                    }
                    labels.push(self.msg[pos + 1..pos + 1 + len].to_vec());
                    pos += 1 + len;
                }
                0xc0 => {
                    let Some(&low) = self.msg.get(pos + 1).filter(|_| pos + 1 < limit) else {
                        return Err(DnsError::ParseTruncated {
                            what: "a compression pointer",
                            offset: pos,
                            end: limit,
                        });
                    };
                    let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                    if target >= floor {
                        return Err(DnsError::ParsePointer {
                            offset: pos,
                            target,
                            floor,
                        });
                    }
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err(DnsError::ParsePointerChain { offset: start });
                    }
                    after.get_or_insert(pos + 2);
                    floor = target;
                    pos = target;
                    // The name pointed to lies anywhere earlier in the message.
                    limit = self.msg.len();
                }
                bits => {
                    return Err(DnsError::ParseLabelType { offset: pos, bits });
                }
            }
        }
        self.pos = after.unwrap_or(pos);
        Ok(Name { labels })
    }

    fn record(&mut self) -> Result<Record, DnsError> {
        let name = self.name(self.msg.len())?;
        let rtype = Type(self.u16("a record")?);
        let class = self.u16("a record")?;
        let ttl = self.u32("a record")?;
        let len = usize::from(self.u16("a record")?);
        let offset = self.pos;
        let end = offset + len;
        let bytes = self.take(len, "record data")?;
        let bad = |reason| DnsError::ParseData {
            rtype,
            offset,
            len,
            reason,
        };
        let data = match rtype {
            Type::A => Data::A(Ipv4Addr::from(
                <[u8; 4]>::try_from(bytes).map_err(|_| bad("an A record has 4 bytes"))?,
            )),
            Type::AAAA => Data::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(bytes).map_err(|_| bad("an AAAA record has 16 bytes"))?,
            )),
            Type::PTR => {
                let mut r = Reader {
                    msg: self.msg,
                    pos: offset,
                };
                let target = r.name(end)?;
                if r.pos != end {
                    return Err(bad("bytes follow the name"));
                }
                Data::Ptr(target)
            }
            Type::SRV => {
                if len < 7 {
                    return Err(bad("an SRV record has at least 7 bytes"));
                }
                let mut r = Reader {
                    msg: self.msg,
                    pos: offset + 6,
                };
                let target = r.name(end)?;
                if r.pos != end {
                    return Err(bad("bytes follow the target name"));
                }
                let field = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
                Data::Srv(Srv {
                    priority: field(0),
                    weight: field(2),
                    port: field(4),
                    target,
                })
            }
            // RFC 6763 §6.1: TXT data of zero bytes means one empty string,
            // which is also how it is built again.
            Type::TXT if bytes.is_empty() => Data::Txt(vec![Vec::new()]),
            Type::TXT => {
                let mut strings = Vec::new();
                let mut rest = bytes;
                while let Some((&n, tail)) = rest.split_first() {
                    let n = usize::from(n);
                    if n > tail.len() {
                        return Err(bad("a string runs past the end"));
                    }
                    strings.push(tail[..n].to_vec());
                    rest = &tail[n..];
                }
                Data::Txt(strings)
            }
            rtype => Data::Other {
                rtype,
                bytes: bytes.to_vec(),
            },
        };
        Ok(Record {
            name,
            class: class & !CLASS_TOP_BIT,
            cache_flush: class & CLASS_TOP_BIT != 0,
            ttl,
            data,
        })
    }
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// Names (suffixes) already written, and where, for compression.
    written: Vec<(Vec<Vec<u8>>, u16)>,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn name(&mut self, name: &Name) {
        for i in 0..name.labels.len() {
            let suffix = &name.labels[i..];
            if let Some((_, offset)) = self.written.iter().find(|(s, _)| s.as_slice() == suffix) {
                self.u16(0xc000 | offset);
                return;
            }
            // A pointer holds 14 bits of offset; later names are written out.
            if let Ok(offset) = u16::try_from(self.buf.len())
                && offset < 0x4000
            {
                self.written.push((suffix.to_vec(), offset));
            }
            let label = &name.labels[i];
            // Labels are at most 63 bytes: `Name` is checked when made.
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
        }
        self.buf.push(0);
    }

    fn record(&mut self, record: &Record) -> Result<(), DnsError> {
        let rtype = record.rtype();
        self.name(&record.name);
        self.u16(rtype.0);
        self.u16(record.class | if record.cache_flush { CLASS_TOP_BIT } else { 0 });
        self.buf.extend_from_slice(&record.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.u16(0);
        match &record.data {
            Data::A(a) => self.buf.extend_from_slice(&a.octets()),
            Data::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            Data::Ptr(target) => self.name(target),
            Data::Srv(srv) => {
                self.u16(srv.priority);
                self.u16(srv.weight);
                self.u16(srv.port);
                self.name(&srv.target);
            }
            Data::Txt(strings) if strings.is_empty() => {
                // RFC 6763 §6.1: an empty TXT record is one empty string.
                self.buf.push(0);
            }
            Data::Txt(strings) => {
                for s in strings {
                    let len =
                        u8::try_from(s.len()).map_err(|_| DnsError::BuildTxt { len: s.len() })?;
                    self.buf.push(len);
                    self.buf.extend_from_slice(s);
                }
            }
            Data::Other { bytes, .. } => self.buf.extend_from_slice(bytes),
        }
        let len = self.buf.len() - len_at - 2;
        let len16 = u16::try_from(len).map_err(|_| DnsError::BuildData { rtype, len })?;
        self.buf[len_at..len_at + 2].copy_from_slice(&len16.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    /// A query for `_phase-boot._tcp.local` PTR with the QU bit.
    #[rustfmt::skip]
    const QUERY: &[u8] = &[
        0x00, 0x00, // id
        0x00, 0x00, // flags: standard query
        0x00, 0x01, // 1 question
        0x00, 0x00, // 0 answers
        0x00, 0x00, // 0 authorities
        0x00, 0x00, // 0 additionals
        0x0b, b'_', b'p', b'h', b'a', b's', b'e', b'-', b'b', b'o', b'o', b't',
        0x04, b'_', b't', b'c', b'p',
        0x05, b'l', b'o', b'c', b'a', b'l',
        0x00,       // root
        0x00, 0x0c, // type PTR
        0x80, 0x01, // QU bit | class IN
    ];

    #[test]
    fn golden_query() {
        let mut q = Question::new(name("_phase-boot._tcp.local"), Type::PTR);
        q.unicast_response = true;
        let msg = Message {
            questions: vec![q],
            ..Message::query()
        };
        assert_eq!(msg.to_bytes().unwrap(), QUERY);
        assert_eq!(Message::parse(QUERY).unwrap(), msg);
    }

    /// A response: PTR, then SRV and A in the additional section, names
    /// compressed against the first.
    #[rustfmt::skip]
    const RESPONSE: &[u8] = &[
        0x00, 0x00, // id
        0x84, 0x00, // flags: QR | AA
        0x00, 0x00, // 0 questions
        0x00, 0x01, // 1 answer
        0x00, 0x00, // 0 authorities
        0x00, 0x02, // 2 additionals
        // 12: answer owner _phase-boot._tcp.local
        0x0b, b'_', b'p', b'h', b'a', b's', b'e', b'-', b'b', b'o', b'o', b't',
        // 24: _tcp.local
        0x04, b'_', b't', b'c', b'p',
        // 29: local
        0x05, b'l', b'o', b'c', b'a', b'l',
        0x00,
        0x00, 0x0c,             // type PTR
        0x00, 0x01,             // class IN
        0x00, 0x00, 0x11, 0x94, // TTL 4500
        0x00, 0x05,             // RDLENGTH 5
        // 46: the instance label, then a pointer to offset 12
        0x02, b'p', b'b',
        0xc0, 0x0c,
        // 51: additional 1, owner pb._phase-boot._tcp.local: a pointer to 46
        0xc0, 0x2e,
        0x00, 0x21,             // type SRV
        0x80, 0x01,             // cache-flush | class IN
        0x00, 0x00, 0x00, 0x78, // TTL 120
        0x00, 0x0a,             // RDLENGTH 10
        0x00, 0x00,             // priority 0
        0x00, 0x00,             // weight 0
        0x1f, 0x90,             // port 8080
        // 69: target h.local: one label, then a pointer to local at 29
        0x01, b'h',
        0xc0, 0x1d,
        // additional 2, owner h.local: a pointer to 69
        0xc0, 0x45,
        0x00, 0x01,             // type A
        0x80, 0x01,             // cache-flush | class IN
        0x00, 0x00, 0x00, 0x78, // TTL 120
        0x00, 0x04,             // RDLENGTH 4
        10, 0, 0, 1,            // 10.0.0.1
    ];

    fn response() -> Message {
        let service = name("_phase-boot._tcp.local");
        let instance = service.child(b"pb").unwrap();
        let mut srv = Record::new(
            instance.clone(),
            120,
            Data::Srv(Srv {
                priority: 0,
                weight: 0,
                port: 8080,
                target: name("h.local"),
            }),
        );
        srv.cache_flush = true;
        let mut a = Record::new(name("h.local"), 120, Data::A(Ipv4Addr::new(10, 0, 0, 1)));
        a.cache_flush = true;
        Message {
            answers: vec![Record::new(service, 4500, Data::Ptr(instance))],
            additionals: vec![srv, a],
            ..Message::response()
        }
    }

    #[test]
    fn golden_response_with_compression() {
        assert_eq!(response().to_bytes().unwrap(), RESPONSE);
        assert_eq!(Message::parse(RESPONSE).unwrap(), response());
    }

    #[test]
    fn round_trips_every_type() {
        let mut msg = response();
        msg.additionals.push(Record::new(
            name("h.local"),
            120,
            Data::Aaaa("fe80::1".parse().unwrap()),
        ));
        msg.additionals.push(Record::new(
            name("pb._phase-boot._tcp.local"),
            4500,
            Data::Txt(vec![b"txtvers=1".to_vec(), Vec::new(), vec![b'x'; 255]]),
        ));
        msg.authorities.push(Record::new(
            name("h.local"),
            120,
            Data::Other {
                rtype: Type::NSEC,
                bytes: vec![1, 2, 3],
            },
        ));
        msg.questions
            .push(Question::new(name("H.Local"), Type::ANY));
        let bytes = msg.to_bytes().unwrap();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back, msg);
        // Compression kept each name's own case.
        assert_eq!(back.questions[0].name.to_string(), "H.Local");
        // And building the parsed message again gives the same bytes.
        assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn an_empty_txt_record_is_one_empty_string() {
        let msg = Message {
            answers: vec![Record::new(name("a.local"), 1, Data::Txt(Vec::new()))],
            ..Message::response()
        };
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(&bytes[bytes.len() - 3..], &[0x00, 0x01, 0x00]);
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.answers[0].data, Data::Txt(vec![Vec::new()]));
        // TXT data of zero bytes (not ours to send) reads the same way.
        let mut zero = bytes.clone();
        let len = zero.len();
        zero[len - 3..len - 1].copy_from_slice(&[0, 0]);
        zero.pop();
        let back = Message::parse(&zero).unwrap();
        assert_eq!(back.answers[0].data, Data::Txt(vec![Vec::new()]));
    }

    #[test]
    fn names_compare_case_insensitively_and_display_escaped() {
        assert_eq!(name("A.LOCAL"), name("a.local"));
        assert_ne!(name("a.local"), name("b.local"));
        let odd = name("local").child(b"My.Box\\ \x07").unwrap();
        assert_eq!(odd.to_string(), "My\\.Box\\\\ \\007.local");
        assert!(odd.is_child_of(&name("LOCAL")));
        assert!(!name("local").is_child_of(&name("local")));
        assert_eq!(Name::root().to_string(), ".");
    }

    #[test]
    fn names_are_checked_when_made() {
        assert!(matches!(
            Name::from_dotted("a..b"),
            Err(DnsError::NameEmptyLabel { .. })
        ));
        assert!(matches!(
            Name::new([vec![b'a'; 64]]),
            Err(DnsError::NameLabel { len: 64, .. })
        ));
        // 4 labels of 63 bytes: 4 × 64 + 1 = 257 bytes.
        assert!(matches!(
            Name::new(vec![vec![b'a'; 63]; 4]),
            Err(DnsError::NameTooLong { len: 257, .. })
        ));
        // 3 × 64 + 62 + 1 = 255: the largest name.
        let mut labels = vec![vec![b'a'; 63]; 3];
        labels.push(vec![b'b'; 61]);
        let max = Name::new(labels).unwrap();
        assert_eq!(max.wire_len(), 255);
        let msg = Message {
            questions: vec![Question::new(max, Type::A)],
            ..Message::query()
        };
        assert_eq!(Message::parse(&msg.to_bytes().unwrap()).unwrap(), msg);
    }

    #[test]
    fn building_refuses_what_cannot_be_sent() {
        let long_txt = Message {
            answers: vec![Record::new(name("a"), 1, Data::Txt(vec![vec![0; 256]]))],
            ..Message::response()
        };
        assert_eq!(long_txt.to_bytes(), Err(DnsError::BuildTxt { len: 256 }));
        let huge = Message {
            answers: vec![Record::new(
                name("a"),
                1,
                Data::Other {
                    rtype: Type(99),
                    bytes: vec![0; 9000],
                },
            )],
            ..Message::response()
        };
        assert!(matches!(
            huge.to_bytes(),
            Err(DnsError::BuildTooLong { .. })
        ));
    }

    /// A header with the given counts followed by `body`.
    fn with_header(counts: [u16; 4], body: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 0, 0x84, 0];
        for c in counts {
            m.extend_from_slice(&c.to_be_bytes());
        }
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        let cases: Vec<(&str, Vec<u8>, DnsError)> = vec![
            (
                "short header",
                vec![0; 11],
                DnsError::ParseTruncated {
                    what: "the header",
                    offset: 10,
                    end: 11,
                },
            ),
            (
                "too long",
                vec![0; MAX_MESSAGE + 1],
                DnsError::ParseTooLong {
                    len: MAX_MESSAGE + 1,
                },
            ),
            (
                "huge counts",
                with_header([0, 0xffff, 0xffff, 0xffff], &[0; 20]),
                DnsError::ParseCounts {
                    questions: 0,
                    records: 3 * 0xffff,
                    remaining: 20,
                },
            ),
            (
                "pointer to itself",
                with_header([1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]),
                DnsError::ParsePointer {
                    offset: 12,
                    target: 12,
                    floor: 12,
                },
            ),
            (
                "forward pointer",
                with_header([1, 0, 0, 0], &[0xc0, 14, 0, 0, 1, 0, 1]),
                DnsError::ParsePointer {
                    offset: 12,
                    target: 14,
                    floor: 12,
                },
            ),
            (
                // A label, then a pointer back to that label: backwards, but
                // into the name being read, which would loop forever.
                "loop through a label",
                with_header([1, 0, 0, 0], &[1, b'a', 0xc0, 12, 0, 1, 0, 1]),
                DnsError::ParsePointer {
                    offset: 14,
                    target: 12,
                    floor: 12,
                },
            ),
            (
                // The second question points back into the first, whose
                // pointer then points forward into the second.
                "two names pointing at each other",
                with_header(
                    [2, 0, 0, 0],
                    &[1, b'a', 0xc0, 22, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1],
                ),
                DnsError::ParsePointer {
                    offset: 14,
                    target: 22,
                    floor: 12,
                },
            ),
            (
                "extended label type",
                with_header([1, 0, 0, 0], &[0x41, 0, 0, 0, 1]),
                DnsError::ParseLabelType {
                    offset: 12,
                    bits: 0x40,
                },
            ),
            (
                "label past the end",
                with_header([1, 0, 0, 0], &[9, b'a', 0, 0, 0]),
                DnsError::ParseTruncated {
                    what: "a label",
                    offset: 12,
                    end: 17,
                },
            ),
            (
                "truncated record header",
                with_header([0, 1, 0, 0], &[0, 0, 1, 0, 1, 0, 0, 0, 0, 0]),
                DnsError::ParseCounts {
                    questions: 0,
                    records: 1,
                    remaining: 10,
                },
            ),
            (
                "RDLENGTH past the end",
                with_header([0, 1, 0, 0], &[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 9, 1, 2]),
                DnsError::ParseTruncated {
                    what: "record data",
                    offset: 23,
                    end: 25,
                },
            ),
            (
                "short A",
                with_header([0, 1, 0, 0], &[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 3, 1, 2, 3]),
                DnsError::ParseData {
                    rtype: Type::A,
                    offset: 23,
                    len: 3,
                    reason: "an A record has 4 bytes",
                },
            ),
            (
                "TXT string past the end",
                with_header([0, 1, 0, 0], &[0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 5, b'a']),
                DnsError::ParseData {
                    rtype: Type::TXT,
                    offset: 23,
                    len: 2,
                    reason: "a string runs past the end",
                },
            ),
            (
                // The PTR's name would run past RDLENGTH into the next bytes.
                "PTR name past its data",
                with_header(
                    [0, 1, 0, 0],
                    &[0, 0, 12, 0, 1, 0, 0, 0, 0, 0, 2, 1, b'a', 0],
                ),
                DnsError::ParseTruncated {
                    what: "a name",
                    offset: 23,
                    end: 25,
                },
            ),
            (
                "bytes after the PTR name",
                with_header([0, 1, 0, 0], &[0, 0, 12, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0]),
                DnsError::ParseData {
                    rtype: Type::PTR,
                    offset: 23,
                    len: 2,
                    reason: "bytes follow the name",
                },
            ),
            (
                "short SRV",
                with_header(
                    [0, 1, 0, 0],
                    &[0, 0, 33, 0, 1, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0],
                ),
                DnsError::ParseData {
                    rtype: Type::SRV,
                    offset: 23,
                    len: 6,
                    reason: "an SRV record has at least 7 bytes",
                },
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(Message::parse(&bytes), Err(want), "{what}");
        }
    }

    #[test]
    fn names_longer_than_255_bytes_are_refused_even_through_pointers() {
        // Five names of two 63-byte labels, each pointing at the one before:
        // every pointer is backwards, but the last decodes to 10 labels.
        let mut body = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..5 {
            offsets.push(HEADER + body.len());
            body.push(63);
            body.extend_from_slice(&[b'a'; 63]);
            if i == 0 {
                body.push(0);
            } else {
                let prev = offsets[i - 1] as u16;
                body.extend_from_slice(&(0xc000 | prev).to_be_bytes());
            }
            body.extend_from_slice(&[0, 1, 0, 1]);
        }
        let msg = with_header([5, 0, 0, 0], &body);
        assert_eq!(
            Message::parse(&msg),
            Err(DnsError::ParseNameTooLong { offset: offsets[3] })
        );
    }

    #[test]
    fn long_pointer_chains_are_cut() {
        // The root name at 12, then 200 pointers, each to the one before: a
        // chain that ends, every jump backwards, but longer than any valid
        // name needs. Read from the last pointer.
        let mut msg = with_header([0, 0, 0, 0], &[0]);
        for i in 0..200u16 {
            let target = if i == 0 { 12 } else { 13 + 2 * (i - 1) };
            msg.extend_from_slice(&(0xc000 | target).to_be_bytes());
        }
        let start = msg.len() - 2;
        let mut r = Reader {
            msg: &msg,
            pos: start,
        };
        assert_eq!(
            r.name(msg.len()),
            Err(DnsError::ParsePointerChain { offset: start })
        );
        // A chain of MAX_JUMPS pointers is still read.
        let start = 13 + 2 * (MAX_JUMPS - 1);
        let mut r = Reader {
            msg: &msg,
            pos: start,
        };
        assert_eq!(r.name(msg.len()), Ok(Name::root()));
        assert_eq!(r.pos, start + 2);
    }

    #[test]
    fn ignores_bytes_after_the_last_record() {
        let mut bytes = RESPONSE.to_vec();
        bytes.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(Message::parse(&bytes).unwrap(), response());
    }

    #[test]
    fn truncating_a_valid_message_anywhere_is_an_error() {
        for len in 0..RESPONSE.len() {
            assert!(Message::parse(&RESPONSE[..len]).is_err(), "{len} bytes");
        }
    }
}
