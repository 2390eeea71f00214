//! Flattened device tree (DTB) reading, editing and writing, for the arm64
//! kexec hand-off.
//!
//! The blob comes from the manifest or from `/sys/firmware/fdt`, so it is
//! untrusted input: [`Fdt::parse`] checks the whole structure (header, block
//! bounds and alignment, `totalsize` equal to the length, balanced nodes,
//! string offsets, unique names) into a small tree, and [`Fdt::to_bytes`]
//! writes a fresh, compact blob (version 17, strings deduplicated) instead of
//! patching the old one in place. Of the tree the hand-off only edits
//! `/chosen`; see `kexec::arm64`.
//!
//! Format: the Devicetree Specification, chapter 5 ("Flattened Devicetree
//! (DTB) Format"). Written here rather than taken from a crate: `fdt` only
//! reads, and an editor that re-emits the blob is a few hundred lines with no
//! dependency, which is cheaper in the init than any crate that can write.

use std::collections::BTreeMap;

use thiserror::Error;

/// `0xd00dfeed`, big-endian, at offset 0.
pub const MAGIC: u32 = 0xd00d_feed;
/// The arm64 kernel maps at most 2 MiB of DTB (`MAX_FDT_SIZE` in
/// `arch/arm64/include/asm/boot.h`); a larger blob could not be booted.
pub const MAX_SIZE: usize = 2 << 20;
/// Deeper trees are refused; real ones are under ten levels.
pub const MAX_DEPTH: usize = 64;
/// The version [`Fdt::to_bytes`] writes, and the oldest one read (version 16
/// lacks `size_dt_struct`; dtc has written 17 since 2007).
pub const VERSION: u32 = 17;
/// What a version 17 blob declares itself compatible with.
pub const LAST_COMP_VERSION: u32 = 16;

const HEADER_LEN: usize = 40;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FdtError {
    #[error("the DTB is {len} bytes, shorter than its 40-byte header")]
    Short { len: usize },
    #[error("the DTB is {len} bytes; arm64 boots at most {max}")]
    TooLarge { len: usize, max: usize },
    #[error("bad DTB magic {found:#010x} (expected 0xd00dfeed)")]
    Magic { found: u32 },
    #[error("DTB totalsize {totalsize} differs from its length {len}")]
    TotalSize { totalsize: u32, len: usize },
    #[error("DTB version {version} (last compatible {last_comp}) is not supported: need 17")]
    Version { version: u32, last_comp: u32 },
    #[error(
        "DTB {block} block at offset {offset}, {size} bytes, lies outside the blob or is misaligned"
    )]
    Block {
        block: &'static str,
        offset: u32,
        size: u32,
    },
    #[error("DTB memory reservation map has no terminating entry")]
    ReservationsUnterminated,
    #[error("DTB structure block: {what} at offset {offset}")]
    Structure { what: &'static str, offset: usize },
    #[error(
        "DTB property name offset {nameoff} at structure offset {offset} is outside the strings block or unterminated"
    )]
    StringOffset { nameoff: u32, offset: usize },
    #[error("DTB {kind} name {name:?} at structure offset {offset} is not printable ASCII")]
    Name {
        kind: &'static str,
        name: String,
        offset: usize,
    },
    #[error("DTB node {path:?} has two {kind} named {name:?}")]
    Duplicate {
        path: String,
        kind: &'static str,
        name: String,
    },
    #[error("DTB nesting deeper than {max} levels at offset {offset}")]
    Depth { max: usize, offset: usize },
}

/// A property: a name and raw bytes (cells are big-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub value: Vec<u8>,
}

/// A node: its name (`unit@address`; empty for the root), properties, then
/// children, in blob order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub properties: Vec<Property>,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(name: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    pub fn property(&self, name: &str) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_slice())
    }

    /// Sets a property, replacing its value in place if it exists (so the
    /// order of the others is kept) or appending it.
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.properties.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value,
            None => self.properties.push(Property {
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes a property; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.properties.len();
        self.properties.retain(|p| p.name != name);
        self.properties.len() != before
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The child called `name`, created (last) if missing.
    pub fn child_mut_or_insert(&mut self, name: &str) -> &mut Node {
        let index = match self.children.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.children.push(Node::new(name));
                self.children.len() - 1
            }
        };
        &mut self.children[index]
    }
}

/// A whole device tree blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fdt {
    pub boot_cpuid_phys: u32,
    /// The memory reservation map: (address, size) pairs.
    pub reservations: Vec<(u64, u64)>,
    pub root: Node,
}

/// Big-endian reads that fail with a position instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    /// Offset of `bytes[0]` in the blob, for error messages.
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FdtError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FdtError::Structure {
                what,
                offset: self.offset(),
            }),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FdtError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips to the next 4-byte boundary (of the blob: blocks are aligned).
    fn align4(&mut self, what: &'static str) -> Result<(), FdtError> {
        let pad = (4 - self.pos % 4) % 4;
        self.take(pad, what).map(|_| ())
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Names in a blob are printable ASCII without spaces (the specification's
/// character sets are subsets of this); anything else is refused rather than
/// carried into the next kernel.
fn check_name(kind: &'static str, raw: &[u8], offset: usize) -> Result<String, FdtError> {
    if raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        // Printable ASCII is valid UTF-8.
        Ok(String::from_utf8_lossy(raw).into_owned())
    } else {
        Err(FdtError::Name {
            kind,
            name: String::from_utf8_lossy(raw).into_owned(),
            offset,
        })
    }
}

/// The bytes up to (not including) the first NUL, or None without one.
fn until_nul(bytes: &[u8]) -> Option<&[u8]> {
    bytes.iter().position(|&b| b == 0).map(|n| &bytes[..n])
}

impl Fdt {
    /// Parses and validates a whole blob.
    pub fn parse(blob: &[u8]) -> Result<Fdt, FdtError> {
        if blob.len() < HEADER_LEN {
            return Err(FdtError::Short { len: blob.len() });
        }
        if blob.len() > MAX_SIZE {
            return Err(FdtError::TooLarge {
                len: blob.len(),
                max: MAX_SIZE,
            });
        }
        let field = |i: usize| be32(blob, i * 4);
        let magic = field(0);
        if magic != MAGIC {
            return Err(FdtError::Magic { found: magic });
        }
        let totalsize = field(1);
        if usize::try_from(totalsize).ok() != Some(blob.len()) {
            return Err(FdtError::TotalSize {
                totalsize,
                len: blob.len(),
            });
        }
        let (off_struct, off_strings, off_rsvmap) = (field(2), field(3), field(4));
        let (version, last_comp) = (field(5), field(6));
        if version < VERSION || last_comp > VERSION {
            return Err(FdtError::Version { version, last_comp });
        }
        let boot_cpuid_phys = field(7);
        let (size_strings, size_struct) = (field(8), field(9));
        let strings = block(blob, "strings", off_strings, size_strings, 1)?;
        let structure = block(blob, "structure", off_struct, size_struct, 4)?;
        // The reservation map has no size field: it runs to its (0, 0) entry.
        let rsv_len = u32::try_from(blob.len()).unwrap_or(u32::MAX);
        let rsv = block(
            blob,
            "memory reservation",
            off_rsvmap,
            rsv_len.saturating_sub(off_rsvmap),
            8,
        )?;
        let reservations = parse_reservations(rsv)?;
        let root = parse_structure(structure, off_struct as usize, strings)?;
        Ok(Fdt {
            boot_cpuid_phys,
            reservations,
            root,
        })
    }

    /// Writes the tree as a compact version 17 blob: header, reservation map,
    /// structure block, strings block (each property name stored once).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut rsv = Vec::with_capacity((self.reservations.len() + 1) * 16);
        for &(address, size) in self.reservations.iter().chain([&(0, 0)]) {
            rsv.extend_from_slice(&address.to_be_bytes());
            rsv.extend_from_slice(&size.to_be_bytes());
        }
        let mut structure = Vec::new();
        let mut strings = Strings::default();
        write_node(&self.root, &mut structure, &mut strings);
        structure.extend_from_slice(&FDT_END.to_be_bytes());

        // The header is 40 bytes, a multiple of 8, so the reservation map
        // that follows is 8-aligned; its entries are 16 bytes, so the
        // structure block after it is 4-aligned.
        let off_rsvmap = HEADER_LEN;
        let off_struct = off_rsvmap + rsv.len();
        let off_strings = off_struct + structure.len();
        let total = off_strings + strings.bytes.len();
        let mut out = Vec::with_capacity(total);
        // Every value below is at most `total`, which stays far below 4 GiB
        // for any tree this module is asked to write (the kexec path refuses
        // anything over MAX_SIZE afterwards); saturate rather than wrap.
        let u = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for value in [
            MAGIC,
            u(total),
            u(off_struct),
            u(off_strings),
            u(off_rsvmap),
            VERSION,
            LAST_COMP_VERSION,
            self.boot_cpuid_phys,
            u(strings.bytes.len()),
            u(structure.len()),
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&rsv);
        out.extend_from_slice(&structure);
        out.extend_from_slice(&strings.bytes);
        out
    }
}

/// A block of the blob, checked to lie inside it and to be aligned.
fn block<'a>(
    blob: &'a [u8],
    name: &'static str,
    offset: u32,
    size: u32,
    align: u32,
) -> Result<&'a [u8], FdtError> {
    let bad = FdtError::Block {
        block: name,
        offset,
        size,
    };
    let start = offset as usize;
    let end = start.checked_add(size as usize).ok_or(bad.clone())?;
    if start < HEADER_LEN || end > blob.len() || !offset.is_multiple_of(align) {
        return Err(bad);
    }
    Ok(&blob[start..end])
}

fn parse_reservations(rsv: &[u8]) -> Result<Vec<(u64, u64)>, FdtError> {
    let mut out = Vec::new();
    for entry in rsv.chunks_exact(16) {
        let (address, size) = (be64(entry, 0), be64(entry, 8));
        if address == 0 && size == 0 {
            return Ok(out);
        }
        out.push((address, size));
    }
    Err(FdtError::ReservationsUnterminated)
}

/// Walks the structure block with an explicit stack (no recursion on input).
fn parse_structure(structure: &[u8], base: usize, strings: &[u8]) -> Result<Node, FdtError> {
    let mut r = Reader {
        bytes: structure,
        base,
        pos: 0,
    };
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let at = r.offset();
        let token = r.u32("truncated token")?;
        match token {
            FDT_NOP => {}
            FDT_BEGIN_NODE => {
                if root.is_some() {
                    return Err(FdtError::Structure {
                        what: "a second root node",
                        offset: at,
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(FdtError::Depth {
                        max: MAX_DEPTH,
                        offset: at,
                    });
                }
                let rest = &structure[r.pos..];
                let raw = until_nul(rest).ok_or(FdtError::Structure {
                    what: "unterminated node name",
                    offset: r.offset(),
                })?;
                let name_at = r.offset();
                r.take(raw.len() + 1, "unterminated node name")?;
                r.align4("node name padding")?;
                if stack.is_empty() != raw.is_empty() {
                    return Err(FdtError::Structure {
                        what: if stack.is_empty() {
                            "a named root node"
                        } else {
                            "a node without a name"
                        },
                        offset: at,
                    });
                }
                let name = check_name("node", raw, name_at)?;
                if let Some(parent) = stack.last()
                    && parent.children.iter().any(|c| c.name == name)
                {
                    return Err(FdtError::Duplicate {
                        path: path_of(&stack),
                        kind: "nodes",
                        name,
                    });
                }
                stack.push(Node::new(name));
            }
            FDT_PROP => {
                let Some(node) = stack.last_mut() else {
                    return Err(FdtError::Structure {
                        what: "a property outside any node",
                        offset: at,
                    });
                };
                if !node.children.is_empty() {
                    return Err(FdtError::Structure {
                        what: "a property after a child node",
                        offset: at,
                    });
                }
                let len = r.u32("truncated property header")?;
                let nameoff = r.u32("truncated property header")?;
                let value = r.take(len as usize, "property value past the block")?;
                r.align4("property padding")?;
                let raw = strings.get(nameoff as usize..).and_then(until_nul).ok_or(
                    FdtError::StringOffset {
                        nameoff,
                        offset: at,
                    },
                )?;
                let name = check_name("property", raw, at)?;
                if node.properties.iter().any(|p| p.name == name) {
                    let path = path_of(&stack);
                    return Err(FdtError::Duplicate {
                        path,
                        kind: "properties",
                        name,
                    });
                }
                node.properties.push(Property {
                    name,
                    value: value.to_vec(),
                });
            }
            FDT_END_NODE => {
                let Some(done) = stack.pop() else {
                    return Err(FdtError::Structure {
                        what: "an end of node without a node",
                        offset: at,
                    });
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            FDT_END => {
                if !stack.is_empty() {
                    return Err(FdtError::Structure {
                        what: "the end inside an open node",
                        offset: at,
                    });
                }
                return root.ok_or(FdtError::Structure {
                    what: "the end before any root node",
                    offset: at,
                });
            }
            _ => {
                return Err(FdtError::Structure {
                    what: "an unknown token",
                    offset: at,
                });
            }
        }
    }
}

fn path_of(stack: &[Node]) -> String {
    if stack.len() <= 1 {
        return "/".into();
    }
    stack[1..].iter().fold(String::new(), |mut path, n| {
        path.push('/');
        path.push_str(&n.name);
        path
    })
}

#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    offsets: BTreeMap<String, u32>,
}

impl Strings {
    fn offset(&mut self, name: &str) -> u32 {
        if let Some(&off) = self.offsets.get(name) {
            return off;
        }
        let off = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.offsets.insert(name.to_owned(), off);
        off
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Depth is bounded by MAX_DEPTH for parsed trees; trees built in code are
/// a few levels deep.
fn write_node(node: &Node, out: &mut Vec<u8>, strings: &mut Strings) {
    out.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
    out.extend_from_slice(node.name.as_bytes());
    out.push(0);
    pad4(out);
    for p in &node.properties {
        out.extend_from_slice(&FDT_PROP.to_be_bytes());
        let len = u32::try_from(p.value.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&strings.offset(&p.name).to_be_bytes());
        out.extend_from_slice(&p.value);
        pad4(out);
    }
    for child in &node.children {
        write_node(child, out, strings);
    }
    out.extend_from_slice(&FDT_END_NODE.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root { compatible = "q"; chosen { bootargs = "a"; }; } with one
    /// reservation, written by hand from the specification.
    #[rustfmt::skip]
    const TINY: &[u8] = &[
        // header
        0xd0, 0x0d, 0xfe, 0xed, // magic
        0x00, 0x00, 0x00, 0x9c, // totalsize = 156
        0x00, 0x00, 0x00, 0x48, // off_dt_struct = 72
        0x00, 0x00, 0x00, 0x88, // off_dt_strings = 136
        0x00, 0x00, 0x00, 0x28, // off_mem_rsvmap = 40
        0x00, 0x00, 0x00, 0x11, // version = 17
        0x00, 0x00, 0x00, 0x10, // last_comp_version = 16
        0x00, 0x00, 0x00, 0x00, // boot_cpuid_phys
        0x00, 0x00, 0x00, 0x14, // size_dt_strings = 20
        0x00, 0x00, 0x00, 0x40, // size_dt_struct = 64
        // memory reservation map
        0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, // address 0x80000000
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // size 0x1000
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // terminator
        // structure block
        0x00, 0x00, 0x00, 0x01, // FDT_BEGIN_NODE
        0x00, 0x00, 0x00, 0x00, // "" (root), padded
        0x00, 0x00, 0x00, 0x03, // FDT_PROP
        0x00, 0x00, 0x00, 0x02, //   len 2
        0x00, 0x00, 0x00, 0x00, //   nameoff 0 ("compatible")
        b'q', 0x00, 0x00, 0x00, //   "q\0", padded
        0x00, 0x00, 0x00, 0x01, // FDT_BEGIN_NODE
        b'c', b'h', b'o', b's', // "chosen\0", padded
        b'e', b'n', 0x00, 0x00,
        0x00, 0x00, 0x00, 0x03, // FDT_PROP
        0x00, 0x00, 0x00, 0x02, //   len 2
        0x00, 0x00, 0x00, 0x0b, //   nameoff 11 ("bootargs")
        b'a', 0x00, 0x00, 0x00, //   "a\0", padded
        0x00, 0x00, 0x00, 0x02, // FDT_END_NODE (chosen)
        0x00, 0x00, 0x00, 0x02, // FDT_END_NODE (root)
        0x00, 0x00, 0x00, 0x09, // FDT_END
        // strings block
        b'c', b'o', b'm', b'p', b'a', b't', b'i', b'b', b'l', b'e', 0x00,
        b'b', b'o', b'o', b't', b'a', b'r', b'g', b's', 0x00,
    ];

    fn tiny() -> Fdt {
        let mut root = Node::new("");
        root.set("compatible", b"q\0".to_vec());
        root.child_mut_or_insert("chosen")
            .set("bootargs", b"a\0".to_vec());
        Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![(0x8000_0000, 0x1000)],
            root,
        }
    }

    #[test]
    fn writes_the_golden_blob() {
        assert_eq!(tiny().to_bytes(), TINY);
    }

    #[test]
    fn reads_the_golden_blob() {
        assert_eq!(Fdt::parse(TINY), Ok(tiny()));
    }

    /// A blob with the quirks real ones have: NOP tokens where the kernel
    /// removed `rng-seed` in place, strings shared by two properties, a
    /// strings block before the structure block, trailing slack.
    fn quirky() -> Vec<u8> {
        let mut s = Vec::new();
        let tok = |s: &mut Vec<u8>, t: u32| s.extend_from_slice(&t.to_be_bytes());
        tok(&mut s, FDT_NOP);
        tok(&mut s, FDT_BEGIN_NODE);
        tok(&mut s, 0); // root name
        for (name_off, value) in [(0u32, &b"x\0"[..]), (2, &b"\0\0\0\x01"[..])] {
            tok(&mut s, FDT_PROP);
            tok(&mut s, value.len() as u32);
            tok(&mut s, name_off);
            s.extend_from_slice(value);
            pad4(&mut s);
        }
        tok(&mut s, FDT_NOP);
        tok(&mut s, FDT_NOP);
        tok(&mut s, FDT_BEGIN_NODE);
        s.extend_from_slice(b"n@1\0");
        tok(&mut s, FDT_PROP);
        tok(&mut s, 0);
        tok(&mut s, 0); // "a" again, empty value
        tok(&mut s, FDT_END_NODE);
        tok(&mut s, FDT_END_NODE);
        tok(&mut s, FDT_END);
        let strings = b"a\0bb\0";
        // header, rsvmap (terminator only), strings, 3 bytes of padding,
        // structure, 8 bytes of slack.
        let off_strings = 40 + 16;
        let off_struct = (off_strings + strings.len() + 3) & !3;
        let total = off_struct + s.len() + 8;
        let mut blob = Vec::new();
        for v in [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            40,
            17,
            16,
            0,
            strings.len() as u32,
            s.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_be_bytes());
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(strings);
        blob.resize(off_struct, 0);
        blob.extend_from_slice(&s);
        blob.resize(total, 0);
        blob
    }

    #[test]
    fn reads_nops_shared_strings_and_any_block_order() {
        let fdt = Fdt::parse(&quirky()).unwrap();
        assert_eq!(fdt.root.property("a"), Some(&b"x\0"[..]));
        assert_eq!(fdt.root.property("bb"), Some(&[0, 0, 0, 1][..]));
        let child = fdt.root.child("n@1").unwrap();
        assert_eq!(child.property("a"), Some(&[][..]));
        // Written back compactly, it reads as the same tree.
        let again = fdt.to_bytes();
        assert!(again.len() < quirky().len());
        assert_eq!(Fdt::parse(&again).unwrap(), fdt);
    }

    /// Rewrites one big-endian word of a blob.
    fn poke(blob: &[u8], at: usize, value: u32) -> Vec<u8> {
        let mut b = blob.to_vec();
        b[at..at + 4].copy_from_slice(&value.to_be_bytes());
        b
    }

    #[test]
    fn refuses_malformed_blobs() {
        let long = {
            let mut b = TINY.to_vec();
            b.push(0);
            b
        };
        let cases: Vec<(&str, Vec<u8>, FdtError)> = vec![
            ("short", TINY[..39].to_vec(), FdtError::Short { len: 39 }),
            (
                "magic",
                poke(TINY, 0, 0xedfe0dd0),
                FdtError::Magic { found: 0xedfe0dd0 },
            ),
            (
                "totalsize > length",
                poke(TINY, 4, 157),
                FdtError::TotalSize {
                    totalsize: 157,
                    len: 156,
                },
            ),
            (
                "length > totalsize",
                long,
                FdtError::TotalSize {
                    totalsize: 156,
                    len: 157,
                },
            ),
            (
                "version 16",
                poke(TINY, 20, 16),
                FdtError::Version {
                    version: 16,
                    last_comp: 16,
                },
            ),
            (
                "struct past the end",
                poke(TINY, 36, 0x100),
                FdtError::Block {
                    block: "structure",
                    offset: 72,
                    size: 0x100,
                },
            ),
            (
                "struct misaligned",
                poke(TINY, 8, 73),
                FdtError::Block {
                    block: "structure",
                    offset: 73,
                    size: 64,
                },
            ),
            (
                "struct inside the header",
                poke(TINY, 8, 0),
                FdtError::Block {
                    block: "structure",
                    offset: 0,
                    size: 64,
                },
            ),
            (
                "strings offset wraps",
                poke(TINY, 12, u32::MAX),
                FdtError::Block {
                    block: "strings",
                    offset: u32::MAX,
                    size: 20,
                },
            ),
            (
                "name offset past strings",
                poke(TINY, 88, 20),
                FdtError::StringOffset {
                    nameoff: 20,
                    offset: 80,
                },
            ),
            (
                "property value past the block",
                poke(TINY, 84, 0x1000),
                FdtError::Structure {
                    what: "property value past the block",
                    offset: 92,
                },
            ),
            (
                "unknown token",
                poke(TINY, 96, 7),
                FdtError::Structure {
                    what: "an unknown token",
                    offset: 96,
                },
            ),
            (
                "missing end of node",
                poke(TINY, 124, FDT_END),
                FdtError::Structure {
                    what: "the end inside an open node",
                    offset: 124,
                },
            ),
            (
                "stray end of node",
                poke(TINY, 132, FDT_END_NODE),
                FdtError::Structure {
                    what: "an end of node without a node",
                    offset: 132,
                },
            ),
            (
                "no end token",
                poke(TINY, 132, FDT_NOP),
                FdtError::Structure {
                    what: "truncated token",
                    offset: 136,
                },
            ),
            (
                "named root",
                poke(TINY, 76, u32::from_be_bytes(*b"r\0\0\0")),
                FdtError::Structure {
                    what: "a named root node",
                    offset: 72,
                },
            ),
            (
                "control byte in a node name",
                poke(TINY, 100, u32::from_be_bytes(*b"c\nos")),
                FdtError::Name {
                    kind: "node",
                    name: "c\nosen".into(),
                    offset: 100,
                },
            ),
        ];
        for (what, blob, expected) in cases {
            assert_eq!(Fdt::parse(&blob), Err(expected), "{what}");
        }
    }

    #[test]
    fn refuses_duplicates_and_misordered_properties() {
        let mut dup_prop = tiny();
        dup_prop.root.properties.push(Property {
            name: "compatible".into(),
            value: vec![],
        });
        let mut dup_node = tiny();
        dup_node.root.children.push(Node::new("chosen"));
        let cases = [
            (
                dup_prop,
                FdtError::Duplicate {
                    path: "/".into(),
                    kind: "properties",
                    name: "compatible".into(),
                },
            ),
            (
                dup_node,
                FdtError::Duplicate {
                    path: "/".into(),
                    kind: "nodes",
                    name: "chosen".into(),
                },
            ),
        ];
        for (fdt, expected) in cases {
            assert_eq!(Fdt::parse(&fdt.to_bytes()), Err(expected));
        }
        // A property after a child node: move root's property behind chosen
        // by hand (to_bytes always writes properties first).
        let mut blob = TINY.to_vec();
        let prop: Vec<u8> = blob[80..96].to_vec();
        let chosen: Vec<u8> = blob[96..128].to_vec();
        blob[80..112].copy_from_slice(&chosen);
        blob[112..128].copy_from_slice(&prop);
        assert_eq!(
            Fdt::parse(&blob),
            Err(FdtError::Structure {
                what: "a property after a child node",
                offset: 112,
            })
        );
    }

    #[test]
    fn refuses_deep_and_huge_trees() {
        let mut node = Node::new("n");
        for _ in 0..MAX_DEPTH {
            node = Node {
                name: "n".into(),
                properties: vec![],
                children: vec![node],
            };
        }
        let fdt = Fdt {
            root: Node {
                name: String::new(),
                properties: vec![],
                children: vec![node],
            },
            ..Fdt::default()
        };
        assert!(matches!(
            Fdt::parse(&fdt.to_bytes()),
            Err(FdtError::Depth { max: MAX_DEPTH, .. })
        ));
        let big = vec![0u8; MAX_SIZE + 1];
        assert_eq!(
            Fdt::parse(&big),
            Err(FdtError::TooLarge {
                len: MAX_SIZE + 1,
                max: MAX_SIZE
            })
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        // Cut the blob short and make totalsize agree, so the block checks
        // (not just the length check) see every cut. Only the 8 bytes of
        // slack at the end lie outside all blocks.
        let blob = quirky();
        for len in 0..blob.len() - 8 {
            let mut cut = blob[..len].to_vec();
            if len >= 8 {
                cut[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            }
            assert!(Fdt::parse(&cut).is_err(), "len {len}");
        }
        assert!(Fdt::parse(&poke(&blob[..blob.len() - 8], 4, blob.len() as u32 - 8)).is_ok());
    }

    #[test]
    fn edits_keep_order_and_reach_the_blob() {
        let mut fdt = tiny();
        let chosen = fdt.root.child_mut_or_insert("chosen");
        chosen.set("bootargs", b"b c\0".to_vec());
        chosen.set("kaslr-seed", vec![1; 8]);
        assert!(chosen.remove("kaslr-seed"));
        assert!(!chosen.remove("kaslr-seed"));
        fdt.root.child_mut_or_insert("new").set("p", vec![]);
        let back = Fdt::parse(&fdt.to_bytes()).unwrap();
        assert_eq!(
            back.root.child("chosen").unwrap().property("bootargs"),
            Some(&b"b c\0"[..])
        );
        let names: Vec<&str> = back.root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["chosen", "new"]);
    }

    /// The blob QEMU's `virt` machine gives its guests (`-machine
    /// virt,dumpdtb=`, packed by dtc), committed as a fuzz seed.
    fn qemu_virt() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/fdt/qemu-virt.dtb"
        );
        std::fs::read(path).unwrap()
    }

    /// `dtc -I dtb -O dts` of a blob, or None (with the reason printed) when
    /// dtc is not installed.
    fn dtc(blob: &[u8], name: &str) -> Option<String> {
        let dir = std::env::temp_dir().join(format!("phase-fdt-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.dtb");
        std::fs::write(&path, blob).unwrap();
        let out = std::process::Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output();
        std::fs::remove_dir_all(&dir).unwrap();
        match out {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "dtc refused {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(String::from_utf8(out.stdout).unwrap())
            }
            Err(e) => {
                phase_testkit::skip(
                    "dtc reads the blob back",
                    format_args!("dtc not runnable ({e}); install device-tree-compiler"),
                );
                None
            }
        }
    }

    #[test]
    fn a_real_blob_round_trips_as_dtc_reads_it() {
        let original = qemu_virt();
        let fdt = Fdt::parse(&original).unwrap();
        assert_eq!(
            fdt.root.child("chosen").unwrap().property("stdout-path"),
            Some(&b"/pl011@9000000\0"[..])
        );
        let ours = fdt.to_bytes();
        assert_eq!(Fdt::parse(&ours).unwrap(), fdt);
        // The reference tool sees the same tree in both blobs.
        let (Some(a), Some(b)) = (dtc(&original, "qemu"), dtc(&ours, "ours")) else {
            return;
        };
        assert_eq!(a, b);
        assert!(a.contains("kaslr-seed"), "{a}");
    }

    #[test]
    fn dtc_reads_the_golden_blob() {
        let Some(dts) = dtc(TINY, "tiny") else { return };
        let expected = "/dts-v1/;\n\n/memreserve/\t0x0000000080000000 0x0000000000001000;\n/ {\n\tcompatible = \"q\";\n\n\tchosen {\n\t\tbootargs = \"a\";\n\t};\n};\n";
        assert_eq!(dts, expected);
    }
}
