//! Reading an existing ISO9660 image: what `mkimage iso --into` needs to
//! remaster a distribution's ISO without loading it.
//!
//! Everything here reads through [`ReadAt`], so the codec is the same over
//! a byte buffer (tests) and a file (the CLI), and only metadata is read:
//! the volume descriptors (ECMA-119 8: the primary at block 16, a Joliet
//! supplementary one if any, the El Torito boot record), every directory of
//! the primary and Joliet trees with each record's raw bytes (so a rewrite
//! keeps its Rock Ridge fields as they were), the El Torito boot catalog
//! ("Bootable CD-ROM Format Specification" 1.0: validation entry, default
//! entry, section headers and their entries) and the system area's MBR
//! and GPT, if the image is isohybrid. File data is never read, except the
//! first 64 bytes of a BIOS boot image to see whether it carries a boot
//! info table. Every count and length that comes from the image is
//! bounded before it sizes a read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use thiserror::Error;

pub const BLOCK: u64 = 2048;

/// The largest directory read (bytes); real ones are a few blocks.
const MAX_DIR: u32 = 16 << 20;
/// The most directories a tree may have (path tables number them in 16
/// bits, and a remaster adds a few), and how deep it may nest.
const MAX_DIRS: usize = 60_000;
/// The most records a tree may have: bounds what a tree of directories
/// that all point at one large extent could make us hold.
const MAX_RECORDS: usize = 1 << 20;
const MAX_DEPTH: usize = 64;
/// The most Rock Ridge continuation areas followed for one record.
const MAX_CE: usize = 8;

#[derive(Debug, Error)]
pub enum IsoReadError {
    #[error("reading {len} bytes at offset {offset} of {what}")]
    Read {
        what: String,
        offset: u64,
        len: usize,
        #[source]
        error: io::Error,
    },
    #[error(
        "{what} is not an ISO9660 image: no primary volume descriptor (CD001) at block 16{found}"
    )]
    NotIso { what: String, found: String },
    #[error(
        "{what} is truncated: its volume descriptor says {blocks} blocks ({want} bytes), the file has {len}"
    )]
    Truncated {
        what: String,
        blocks: u32,
        want: u64,
        len: u64,
    },
    #[error(
        "{what} has no volume descriptor set terminator within its first {0} descriptors",
        MAX_DESCRIPTORS
    )]
    NoTerminator { what: String },
    #[error("{what} has logical blocks of {size} bytes; only 2048 is supported")]
    BlockSize { what: String, size: u16 },
    #[error(
        "{what} has no El Torito boot catalog: it is not a bootable CD, so there is nothing to add boot entries to"
    )]
    NoBootCatalog { what: String },
    #[error("{what}: the El Torito boot catalog at block {lba} is not valid: {reason}")]
    BadCatalog {
        what: String,
        lba: u32,
        reason: String,
    },
    #[error("{what}: directory {path:?} is not valid: {reason}")]
    BadDirectory {
        what: String,
        path: String,
        reason: String,
    },
}

const MAX_DESCRIPTORS: u32 = 64;

/// Exact reads at an offset: over a file, or a buffer in tests.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.as_slice().len() as u64)
    }
}

/// One directory record, as it is in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The whole record: a rewrite changes only its extent and size.
    pub raw: Vec<u8>,
    pub lba: u32,
    pub size: u32,
    /// File flags (ECMA-119 9.1.6): 0x02 directory, 0x80 multi-extent.
    pub flags: u8,
    /// The file identifier as stored (d-characters, or UCS-2 for Joliet).
    pub ident: Vec<u8>,
    /// The name a reader shows: Rock Ridge `NM` if there is one, else the
    /// identifier without its `;1` version (Joliet decoded from UCS-2).
    pub name: String,
    /// For a directory: its index in [`Tree::dirs`].
    pub child: Option<usize>,
}

impl Record {
    pub fn is_dir(&self) -> bool {
        self.flags & 0x02 != 0
    }
}

/// A directory: its records after `.` and `..`, in the order stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    pub path: String,
    pub parent: usize,
    /// The `.` and `..` records, raw.
    pub dot: Vec<u8>,
    pub dotdot: Vec<u8>,
    pub records: Vec<Record>,
    pub lba: u32,
    pub size: u32,
}

/// A directory tree; `dirs[0]` is the root, the rest in the order found
/// (breadth-first, records in stored order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Which volume descriptor (block) roots it.
    pub descriptor_lba: u32,
    pub dirs: Vec<Dir>,
}

impl Tree {
    /// The record at `path` (names as [`Record::name`], `/`-separated).
    pub fn find(&self, path: &str) -> Option<&Record> {
        let mut dir = 0;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (last, parents) = parts.split_last()?;
        for p in parents {
            dir = self.dirs[dir]
                .records
                .iter()
                .find(|r| r.is_dir() && r.name == *p)?
                .child?;
        }
        self.dirs[dir].records.iter().find(|r| r.name == *last)
    }

    /// Every file as (path, record), in tree order.
    pub fn files(&self) -> Vec<(String, &Record)> {
        let mut out = Vec::new();
        for d in &self.dirs {
            for r in d.records.iter().filter(|r| !r.is_dir()) {
                out.push((join(&d.path, &r.name), r));
            }
        }
        out
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Which firmware a boot catalog entry is for (its section's platform ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    X86,
    PowerPc,
    Mac,
    Efi,
    Other(u8),
}

impl Platform {
    fn from_id(id: u8) -> Platform {
        match id {
            0x00 => Platform::X86,
            0x01 => Platform::PowerPc,
            0x02 => Platform::Mac,
            0xEF => Platform::Efi,
            n => Platform::Other(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    pub platform: Platform,
    pub bootable: bool,
    /// 0 no emulation, 1–3 floppies, 4 hard disk.
    pub media: u8,
    pub load_segment: u16,
    /// Virtual 512-byte sectors the firmware loads.
    pub sectors: u16,
    pub lba: u32,
    /// The file whose extent starts at `lba`, if the tree lists one.
    pub path: Option<String>,
    /// A boot info table (isolinux's, at offset 8) naming this image.
    pub boot_info_table: bool,
}

/// What the first 32 KiB hold, besides zeros.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemArea {
    /// MBR partitions (type, first 512-byte sector, sectors), if 55 AA.
    pub mbr: Vec<(u8, u32, u32)>,
    /// A GPT header at sector 1.
    pub gpt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub volume_id: String,
    /// The volume space size in blocks, from the primary descriptor.
    pub blocks: u32,
    /// The input's length in bytes (at least `blocks` × 2048).
    pub len: u64,
    pub primary: Tree,
    pub joliet: Option<Tree>,
    pub rock_ridge: bool,
    /// SUSP bytes to skip at the start of each system use field.
    pub susp_skip: usize,
    pub catalog_lba: u32,
    pub boot: Vec<BootImage>,
    pub system_area: SystemArea,
}

struct Reader<'a> {
    src: &'a dyn ReadAt,
    what: &'a str,
}

impl Reader<'_> {
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, IsoReadError> {
        let mut buf = vec![0u8; len];
        self.src
            .read_exact_at(&mut buf, offset)
            .map_err(|error| IsoReadError::Read {
                what: self.what.to_owned(),
                offset,
                len,
                error,
            })?;
        Ok(buf)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the volume: descriptors, both trees, the boot catalog and the
/// system area. `what` names the input in errors.
pub fn read(src: &dyn ReadAt, what: &str) -> Result<Volume, IsoReadError> {
    let r = Reader { src, what };
    let len = src.size().map_err(|error| IsoReadError::Read {
        what: what.to_owned(),
        offset: 0,
        len: 0,
        error,
    })?;
    if len < 17 * BLOCK {
        return Err(IsoReadError::NotIso {
            what: what.to_owned(),
            found: format!(" (the file is only {len} bytes)"),
        });
    }
    let pvd = r.read(16 * BLOCK, BLOCK as usize)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Err(IsoReadError::NotIso {
            what: what.to_owned(),
            found: String::new(),
        });
    }
    let block_size = le16(&pvd, 128);
    if u64::from(block_size) != BLOCK {
        return Err(IsoReadError::BlockSize {
            what: what.to_owned(),
            size: block_size,
        });
    }
    let blocks = le32(&pvd, 80);
    let want = u64::from(blocks) * BLOCK;
    if want > len {
        return Err(IsoReadError::Truncated {
            what: what.to_owned(),
            blocks,
            want,
            len,
        });
    }
    let volume_id = String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned();

    // The descriptor set: the boot record and a Joliet SVD, up to the
    // terminator.
    let mut catalog = None;
    let mut joliet_lba = None;
    let mut terminated = false;
    for lba in 17..16 + MAX_DESCRIPTORS {
        if u64::from(lba + 1) * BLOCK > len {
            break;
        }
        let d = r.read(u64::from(lba) * BLOCK, BLOCK as usize)?;
        if &d[1..6] != b"CD001" {
            break;
        }
        match d[0] {
            0 if d[7..30] == *b"EL TORITO SPECIFICATION" => catalog = Some(le32(&d, 0x47)),
            2 if matches!(&d[88..91], b"%/@" | b"%/C" | b"%/E") => joliet_lba = Some(lba),
            255 => {
                terminated = true;
                break;
            }
            _ => {}
        }
    }
    if !terminated {
        return Err(IsoReadError::NoTerminator {
            what: what.to_owned(),
        });
    }

    let mut primary = read_tree(&r, 16, &pvd, blocks, false, 0)?;
    // Rock Ridge: SUSP's SP entry opens the root's "." system use field
    // (SUSP 1.12 5.3), and says how many bytes to skip in every other.
    let root_dot = &primary.dirs[0].dot;
    let su = system_use(root_dot);
    let (rock_ridge, susp_skip) = match su {
        [b'S', b'P', 7, 1, 0xBE, 0xEF, skip, ..] => (true, usize::from(*skip)),
        _ => (false, 0),
    };
    if rock_ridge {
        primary = read_tree(&r, 16, &pvd, blocks, false, susp_skip + 1)?;
    }
    let joliet = match joliet_lba {
        Some(lba) => {
            let svd = r.read(u64::from(lba) * BLOCK, BLOCK as usize)?;
            Some(read_tree(&r, lba, &svd, blocks, true, 0)?)
        }
        None => None,
    };

    let catalog_lba = catalog.ok_or_else(|| IsoReadError::NoBootCatalog {
        what: what.to_owned(),
    })?;
    let bad = |reason: String| IsoReadError::BadCatalog {
        what: what.to_owned(),
        lba: catalog_lba,
        reason,
    };
    if catalog_lba >= blocks {
        return Err(bad(format!("it is past the volume's {blocks} blocks")));
    }
    let cat = r.read(u64::from(catalog_lba) * BLOCK, BLOCK as usize)?;
    let mut boot = parse_catalog(&cat).map_err(bad)?;
    for b in &mut boot {
        b.path = primary
            .files()
            .into_iter()
            .find(|(_, rec)| rec.lba == b.lba && rec.size > 0)
            .map(|(p, _)| p);
        if b.platform == Platform::X86 && b.media == 0 && u64::from(b.lba) < u64::from(blocks) {
            let head = r.read(u64::from(b.lba) * BLOCK, 64)?;
            b.boot_info_table = le32(&head, 8) == 16 && le32(&head, 12) == b.lba;
        }
    }

    let sa = r.read(0, 1024)?;
    Ok(Volume {
        volume_id,
        blocks,
        len,
        primary,
        joliet,
        rock_ridge,
        susp_skip,
        catalog_lba,
        boot,
        system_area: parse_system_area(&sa),
    })
}

/// The El Torito catalog's entries (validation entry checked).
pub fn parse_catalog(cat: &[u8]) -> Result<Vec<BootImage>, String> {
    if cat.len() < 64 {
        return Err("shorter than a validation and a default entry".into());
    }
    if cat[0] != 1 || cat[30] != 0x55 || cat[31] != 0xAA {
        return Err("no validation entry (header ID 1, key 55 AA)".into());
    }
    let sum = cat[..32].chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    if sum != 0 {
        return Err(format!(
            "the validation entry's checksum does not sum to zero ({sum:#06x})"
        ));
    }
    let entry = |e: &[u8], platform: u8| -> Result<BootImage, String> {
        if e[0] != 0x88 && e[0] != 0x00 {
            return Err(format!("boot indicator {:#04x} is neither 88 nor 00", e[0]));
        }
        Ok(BootImage {
            platform: Platform::from_id(platform),
            bootable: e[0] == 0x88,
            media: e[1] & 0x0F,
            load_segment: le16(e, 2),
            sectors: le16(e, 6),
            lba: le32(e, 8),
            path: None,
            boot_info_table: false,
        })
    };
    let mut out = vec![entry(&cat[32..64], cat[1])?];
    let mut at = 64;
    // Sections: a header (0x90, or 0x91 for the last) and its entries,
    // each possibly followed by extension entries (0x44).
    while at + 32 <= cat.len() {
        let header = cat[at];
        if header != 0x90 && header != 0x91 {
            break;
        }
        let platform = cat[at + 1];
        let count = usize::from(le16(cat, at + 2));
        at += 32;
        let mut seen = 0;
        while seen < count {
            let e = cat
                .get(at..at + 32)
                .ok_or_else(|| "a section's entries run past the catalog block".to_owned())?;
            at += 32;
            if e[0] == 0x44 {
                continue;
            }
            out.push(entry(e, platform)?);
            seen += 1;
        }
        if header == 0x91 {
            break;
        }
    }
    Ok(out)
}

/// The MBR partitions and whether a GPT header follows.
pub fn parse_system_area(sa: &[u8]) -> SystemArea {
    let mut out = SystemArea::default();
    if sa.len() >= 1024 && sa[510] == 0x55 && sa[511] == 0xAA {
        for i in 0..4 {
            let e = &sa[446 + 16 * i..462 + 16 * i];
            if e[4] != 0 || le32(e, 12) != 0 {
                out.mbr.push((e[4], le32(e, 8), le32(e, 12)));
            }
        }
        out.gpt = &sa[512..520] == b"EFI PART";
    }
    out
}

/// The system use field of a directory record.
fn system_use(rec: &[u8]) -> &[u8] {
    let id_len = usize::from(rec.get(32).copied().unwrap_or(0));
    let start = 33 + id_len + (1 - id_len % 2);
    rec.get(start..).unwrap_or(&[])
}

/// Reads a tree from the root record of descriptor `desc` (at block
/// `desc_lba`). `rr_skip` is 0 without Rock Ridge, else SUSP's skip + 1.
fn read_tree(
    r: &Reader<'_>,
    desc_lba: u32,
    desc: &[u8],
    blocks: u32,
    joliet: bool,
    rr_skip: usize,
) -> Result<Tree, IsoReadError> {
    let root = &desc[156..190];
    let mut dirs = vec![Dir {
        path: String::new(),
        parent: 0,
        dot: Vec::new(),
        dotdot: Vec::new(),
        records: Vec::new(),
        lba: le32(root, 2),
        size: le32(root, 10),
    }];
    let mut depth = vec![0usize];
    let mut records = 0usize;
    let mut i = 0;
    while i < dirs.len() {
        let (lba, size, path) = (dirs[i].lba, dirs[i].size, dirs[i].path.clone());
        let bad = |reason: String| IsoReadError::BadDirectory {
            what: r.what.to_owned(),
            path: format!("/{path}"),
            reason,
        };
        if size > MAX_DIR || size == 0 {
            return Err(bad(format!("its size {size} is 0 or over {MAX_DIR} bytes")));
        }
        if u64::from(lba) + u64::from(size).div_ceil(BLOCK) > u64::from(blocks) {
            return Err(bad(format!(
                "its extent (block {lba}, {size} bytes) runs past the volume"
            )));
        }
        let data = r.read(u64::from(lba) * BLOCK, size as usize)?;
        let mut at = 0usize;
        let mut n = 0usize;
        while at < data.len() {
            let rec_len = usize::from(data[at]);
            if rec_len == 0 {
                // Records never cross a block: the rest of this one is padding.
                at = (at / BLOCK as usize + 1) * BLOCK as usize;
                continue;
            }
            let rec = data
                .get(at..at + rec_len)
                .filter(|rec| rec_len >= 34 && 33 + usize::from(rec[32]) <= rec_len)
                .ok_or_else(|| bad(format!("a record at byte {at} is malformed")))?;
            at += rec_len;
            n += 1;
            records += 1;
            if records > MAX_RECORDS {
                return Err(bad(format!(
                    "the tree has over {MAX_RECORDS} directory records"
                )));
            }
            if n == 1 {
                dirs[i].dot = rec.to_vec();
                continue;
            }
            if n == 2 {
                dirs[i].dotdot = rec.to_vec();
                continue;
            }
            let ident = rec[33..33 + usize::from(rec[32])].to_vec();
            let flags = rec[25];
            let name = match rr_skip {
                0 => plain_name(&ident, joliet),
                skip => rr_name(r, system_use(rec).get(skip - 1..).unwrap_or(&[]))?
                    .unwrap_or_else(|| plain_name(&ident, joliet)),
            };
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(bad(format!("it holds a record named {name:?}")));
            }
            let mut record = Record {
                raw: rec.to_vec(),
                lba: le32(rec, 2),
                size: le32(rec, 10),
                flags,
                ident,
                name,
                child: None,
            };
            if record.is_dir() {
                if dirs.len() >= MAX_DIRS || depth[i] >= MAX_DEPTH {
                    return Err(bad(format!(
                        "the tree has over {MAX_DIRS} directories or nests deeper than {MAX_DEPTH}"
                    )));
                }
                record.child = Some(dirs.len());
                dirs.push(Dir {
                    path: join(&path, &record.name),
                    parent: i,
                    dot: Vec::new(),
                    dotdot: Vec::new(),
                    records: Vec::new(),
                    lba: record.lba,
                    size: record.size,
                });
                depth.push(depth[i] + 1);
            }
            dirs[i].records.push(record);
        }
        if n < 2 {
            return Err(bad("it has no . and .. records".into()));
        }
        i += 1;
    }
    Ok(Tree {
        descriptor_lba: desc_lba,
        dirs,
    })
}

/// An identifier without its version, Joliet decoded from UCS-2.
fn plain_name(ident: &[u8], joliet: bool) -> String {
    let s = if joliet {
        let units: Vec<u16> = ident
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(ident).into_owned()
    };
    let s = s.split(';').next().unwrap_or_default();
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

/// The Rock Ridge `NM` name in a system use area, following `CE`
/// continuation areas; `None` when it has none.
fn rr_name(r: &Reader<'_>, su: &[u8]) -> Result<Option<String>, IsoReadError> {
    let mut name: Option<Vec<u8>> = None;
    let mut area = su.to_vec();
    for _ in 0..=MAX_CE {
        let mut next = None;
        let mut at = 0;
        while at + 4 <= area.len() {
            let (sig, len) = (&area[at..at + 2], usize::from(area[at + 2]));
            if len < 4 || at + len > area.len() {
                break;
            }
            let body = &area[at + 4..at + len];
            match sig {
                // NM: flags, then the name part; flag 1 says it continues.
                b"NM" if !body.is_empty() => {
                    name.get_or_insert_with(Vec::new)
                        .extend_from_slice(&body[1..]);
                }
                // CE: block, offset and length of the continuation area.
                b"CE" if body.len() >= 24 => {
                    next = Some((le32(body, 0), le32(body, 8), le32(body, 16)));
                }
                b"ST" => break,
                _ => {}
            }
            at += len;
        }
        match next {
            Some((lba, off, len)) if len > 0 && len <= BLOCK as u32 => {
                area = r.read(u64::from(lba) * BLOCK + u64::from(off), len as usize)?;
            }
            _ => break,
        }
    }
    Ok(name.map(|n| String::from_utf8_lossy(&n).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_with_bios_and_efi_sections() {
        let mut cat = vec![0u8; 2048];
        cat[0] = 1;
        cat[30] = 0x55;
        cat[31] = 0xAA;
        let sum = cat[..32].chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        #[rustfmt::skip]
        let rest: Vec<u8> = [
            &[0x88u8, 0, 0, 0, 0, 0, 4, 0], &40u32.to_le_bytes()[..], &[0; 20], // default: BIOS, 4 sectors at 40
            &[0x91, 0xEF, 1, 0], &[0; 28],                                     // final section: UEFI, one entry
            &[0x88, 0, 0, 0, 0, 0, 0, 0x40], &99u32.to_le_bytes()[..], &[0; 20], // 0x4000 sectors at 99
        ]
        .concat();
        cat[32..32 + rest.len()].copy_from_slice(&rest);
        let got = parse_catalog(&cat).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].platform, got[0].sectors, got[0].lba),
            (Platform::X86, 4, 40)
        );
        assert_eq!(
            (got[1].platform, got[1].sectors, got[1].lba),
            (Platform::Efi, 0x4000, 99)
        );
        // A broken checksum is named.
        cat[4] ^= 1;
        assert!(parse_catalog(&cat).unwrap_err().contains("checksum"));
        cat[4] ^= 1;
        cat[0] = 2;
        assert!(
            parse_catalog(&cat)
                .unwrap_err()
                .contains("validation entry")
        );
    }

    #[test]
    fn names_plain_joliet_and_rock_ridge() {
        assert_eq!(plain_name(b"ISOLINUX.CFG;1", false), "ISOLINUX.CFG");
        assert_eq!(plain_name(b"LINUX.;1", false), "LINUX");
        let ucs: Vec<u8> = "txt.cfg;1"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        assert_eq!(plain_name(&ucs, true), "txt.cfg");
        // NM split over two entries (the first flagged "continues").
        let su = [
            &b"PX"[..],
            &[8, 1, 0, 0, 0, 0],
            b"NM",
            &[9, 1, 1],
            b"isol",
            b"NM",
            &[13, 1, 0],
            b"inux.cfg",
        ]
        .concat();
        let buf: Vec<u8> = Vec::new();
        let r = Reader {
            src: &buf,
            what: "test",
        };
        assert_eq!(rr_name(&r, &su).unwrap().as_deref(), Some("isolinux.cfg"));
        assert_eq!(rr_name(&r, b"PX\x04\x01").unwrap(), None);
    }

    #[test]
    fn not_an_iso_and_truncated() {
        let zeros = vec![0u8; 40 * 2048];
        assert!(matches!(
            read(&zeros, "zeros"),
            Err(IsoReadError::NotIso { .. })
        ));
        let short = vec![0u8; 100];
        let err = read(&short, "short").unwrap_err().to_string();
        assert!(err.contains("only 100 bytes"), "{err}");
        let mut pvd = vec![0u8; 40 * 2048];
        pvd[16 * 2048] = 1;
        pvd[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        pvd[16 * 2048 + 128..16 * 2048 + 130].copy_from_slice(&2048u16.to_le_bytes());
        pvd[16 * 2048 + 80..16 * 2048 + 84].copy_from_slice(&1000u32.to_le_bytes());
        let err = read(&pvd, "cut").unwrap_err();
        assert!(
            matches!(err, IsoReadError::Truncated { blocks: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn system_area_mbr_and_gpt() {
        let mut sa = vec![0u8; 1024];
        sa[510] = 0x55;
        sa[511] = 0xAA;
        sa[446 + 4] = 0x00;
        sa[446 + 12..446 + 16].copy_from_slice(&1000u32.to_le_bytes());
        sa[462 + 4] = 0xEF;
        sa[462 + 8..462 + 12].copy_from_slice(&240u32.to_le_bytes());
        sa[462 + 12..462 + 16].copy_from_slice(&16u32.to_le_bytes());
        sa[512..520].copy_from_slice(b"EFI PART");
        let got = parse_system_area(&sa);
        assert_eq!(got.mbr, vec![(0, 0, 1000), (0xEF, 240, 16)]);
        assert!(got.gpt);
    }
}
