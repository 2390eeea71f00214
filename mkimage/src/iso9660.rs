//! ISO9660 (ECMA-119) images with El Torito boot entries and an isohybrid
//! MBR, so the same file boots as a CD and written raw to a disk.
//!
//! Layout in 2048-byte blocks: the 32 KiB system area (the isohybrid MBR in
//! its first 512 bytes), the primary volume descriptor at 16, the El Torito
//! boot record at 17, the terminator, the little- and big-endian path
//! tables, the directories breadth-first, the boot catalog, then the files
//! in path order. Names are upper-case d-characters with `;1` versions;
//! every timestamp is the build time.
//!
//! El Torito ("Bootable CD-ROM Format Specification" 1.0): a validation
//! entry, the default entry (BIOS: isolinux.bin, no emulation, four virtual
//! sectors, with the boot-info-table patched in) and a final section for
//! UEFI (platform 0xEF) whose entry is a FAT image. isohybrid: syslinux's
//! isohdpfx.bin MBR code with the 512-byte LBA of isolinux.bin at offset
//! 432; partition 1 (type 0, active) spans the image for BIOSes that want
//! an active partition, partition 2 (type 0xEF) is the FAT image, which is
//! how UEFI firmware finds its boot file on the raw disk.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

use thiserror::Error;

use crate::pieces::{Pieces, PiecesError};

use crate::gpt::{MbrEntry, mbr_types, write_mbr};

pub const BLOCK: u64 = 2048;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IsoError {
    #[error("ISO path {0:?} is empty or has an empty, . or .. component")]
    BadPath(String),
    #[error(
        "ISO name {name:?} in {path:?} maps to {mapped:?}, which is not valid ISO9660 (A-Z 0-9 _, one dot, at most 30 characters)"
    )]
    BadName {
        path: String,
        name: String,
        mapped: String,
    },
    #[error("ISO paths {a:?} and {b:?} map to the same ISO9660 name")]
    Duplicate { a: String, b: String },
    #[error("ISO path {path:?} is under {parent:?}, which is a file")]
    NotADirectory { path: String, parent: String },
    #[error("the boot image {0:?} is not in the image")]
    MissingBootFile(String),
    #[error("isolinux.bin is {0} bytes; it must be at least 2048 to carry a boot info table")]
    IsolinuxTooSmall(usize),
    #[error(
        "isolinux.bin has no isohybrid signature at offset 0x40 (it must be isolinux 4 or newer)"
    )]
    NotHybridIsolinux,
    #[error("isohybrid MBR code is {0} bytes; it must be at most 432")]
    MbrCode(usize),
    #[error("ISO image of {0} bytes is larger than ISO9660's 32-bit block counts allow")]
    TooLarge(u64),
    #[error("alias {path:?} is not {len} bytes at a block boundary {offset} inside {of:?}")]
    Alias {
        path: String,
        of: String,
        offset: u64,
        len: u64,
    },
    #[error("file {path:?} is {size} bytes; a single ISO9660 extent holds less than 4 GiB")]
    FileTooLarge { path: String, size: u64 },
}

/// Which firmware a boot entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// BIOS (El Torito platform 0, x86).
    Bios,
    /// UEFI (platform 0xEF).
    Efi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub platform: Platform,
    /// The path of the boot image, as added.
    pub path: String,
    /// Patch an isolinux boot info table into the image (BIOS).
    pub boot_info_table: bool,
}

#[derive(Debug, Clone, Default)]
pub struct IsoOptions {
    /// Up to 32 d-characters.
    pub volume_id: String,
    pub time: u64,
    /// Boot entries, the first the default; empty for a non-bootable image.
    pub boot: Vec<BootEntry>,
    /// Where the boot catalog appears in the tree.
    pub catalog_path: String,
    /// The isohybrid MBR: code (isohdpfx.bin), added when given.
    pub hybrid_mbr_code: Option<Vec<u8>>,
    /// The disk signature of the isohybrid MBR.
    pub disk_signature: u32,
    /// Files whose data lies inside another file's (e.g. a kernel inside
    /// the UKI inside the EFI image): stored once, listed twice.
    pub aliases: Vec<Alias>,
}

/// A file listed at `path` whose bytes are `len` bytes at `offset` into the
/// file `of` (a multiple of 2048, so the data starts on a block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub path: String,
    pub of: String,
    pub offset: u64,
    pub len: u64,
}

/// Where a file landed: first block and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoExtent {
    pub lba: u32,
    pub len: u64,
}

/// A laid-out image: the metadata blocks, then each file's data at its
/// offset, zeros between and after. Written out as a stream, so file data
/// is never copied into one big buffer.
#[derive(Debug, Clone)]
pub struct IsoImage<'a> {
    /// Blocks 0 up to the first file: system area, descriptors, path
    /// tables, directories, boot catalog.
    pub head: Vec<u8>,
    /// (byte offset, contents) of each file, in offset order.
    pub parts: Vec<(u64, Cow<'a, [u8]>)>,
    /// The whole image's length in bytes.
    pub len: u64,
    pub files: BTreeMap<String, IsoExtent>,
    pub catalog_lba: u32,
}

impl IsoImage<'_> {
    /// Writes the image to `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        static ZEROS: [u8; 65536] = [0; 65536];
        let mut at = self.head.len() as u64;
        w.write_all(&self.head)?;
        let zeros = |w: &mut dyn Write, n: u64| -> io::Result<()> {
            let mut left = n;
            while left > 0 {
                let k = left.min(ZEROS.len() as u64) as usize;
                w.write_all(&ZEROS[..k])?;
                left -= k as u64;
            }
            Ok(())
        };
        for (offset, data) in &self.parts {
            zeros(w, offset - at)?;
            w.write_all(data)?;
            at = offset + data.len() as u64;
        }
        zeros(w, self.len - at)
    }

    /// The image as pieces.
    pub fn pieces(&self) -> Result<Pieces<'_>, PiecesError> {
        let mut list = vec![(0, Cow::Borrowed(self.head.as_slice()))];
        list.extend(
            self.parts
                .iter()
                .map(|(o, d)| (*o, Cow::Borrowed(d.as_ref()))),
        );
        Pieces::from_unsorted(self.len, list)
    }

    /// The image as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len as usize);
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

/// Maps a name to ISO9660 d-characters: upper case, `-` and other
/// characters to `_`. Files get `;1`.
pub fn iso_name(name: &str, dir: bool) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            let u = c.to_ascii_uppercase();
            if u.is_ascii_uppercase() || u.is_ascii_digit() || u == '.' {
                u
            } else {
                '_'
            }
        })
        .collect();
    if dir {
        mapped
    } else if mapped.contains('.') {
        format!("{mapped};1")
    } else {
        format!("{mapped}.;1")
    }
}

fn valid(mapped: &str, dir: bool) -> bool {
    let bare = mapped.trim_end_matches(";1");
    let dots = bare.matches('.').count();
    !bare.is_empty()
        && bare.len() <= 31
        && if dir { dots == 0 } else { dots == 1 }
        && bare
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

#[derive(Debug, Default)]
struct Dir {
    /// ISO name → (path as added, node).
    children: BTreeMap<(String, String), (String, Node)>,
}

#[derive(Debug)]
enum Node {
    Dir(Dir),
    /// Index into the file list.
    File(usize),
}

/// Sort key of an identifier: name, then extension (ECMA-119 9.3).
fn sort_key(iso: &str) -> (String, String) {
    let bare = iso.trim_end_matches(";1");
    match bare.split_once('.') {
        Some((n, e)) => (n.to_owned(), e.to_owned()),
        None => (bare.to_owned(), String::new()),
    }
}

/// Writes the image. `files` are (path, contents); the boot catalog is
/// added at `opts.catalog_path`.
pub fn build<'a>(
    mut files: Vec<(String, Cow<'a, [u8]>)>,
    opts: &IsoOptions,
) -> Result<IsoImage<'a>, IsoError> {
    let catalog_index = files.len();
    let mut root = Dir::default();
    let mut all: Vec<(String, &[u8])> =
        files.iter().map(|(p, d)| (p.clone(), d.as_ref())).collect();
    let bootable = !opts.boot.is_empty();
    if bootable {
        all.push((opts.catalog_path.clone(), &[]));
    }
    let alias_base = all.len();
    for a in &opts.aliases {
        all.push((a.path.clone(), &[]));
    }
    for (index, (path, data)) in all.iter().enumerate() {
        if data.len() as u64 >= 1 << 32 {
            return Err(IsoError::FileTooLarge {
                path: path.clone(),
                size: data.len() as u64,
            });
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(IsoError::BadPath(path.clone()));
        }
        let (last, parents) = parts.split_last().expect("non-empty");
        let mut dir = &mut root;
        for (i, name) in parents.iter().enumerate() {
            let iso = iso_name(name, true);
            if !valid(&iso, true) {
                return Err(IsoError::BadName {
                    path: path.clone(),
                    name: (*name).to_owned(),
                    mapped: iso,
                });
            }
            let entry = dir
                .children
                .entry(sort_key(&iso))
                .or_insert_with(|| (parts[..=i].join("/"), Node::Dir(Dir::default())));
            dir = match &mut entry.1 {
                Node::Dir(d) => d,
                Node::File(_) => {
                    return Err(IsoError::NotADirectory {
                        path: path.clone(),
                        parent: parts[..=i].join("/"),
                    });
                }
            };
        }
        let iso = iso_name(last, false);
        if !valid(&iso, false) {
            return Err(IsoError::BadName {
                path: path.clone(),
                name: (*last).to_owned(),
                mapped: iso,
            });
        }
        let key = sort_key(&iso);
        if let Some((other, _)) = dir.children.get(&key) {
            return Err(IsoError::Duplicate {
                a: other.clone(),
                b: path.clone(),
            });
        }
        dir.children.insert(key, (path.clone(), Node::File(index)));
    }
    for b in &opts.boot {
        if !files.iter().any(|(p, _)| p == &b.path) {
            return Err(IsoError::MissingBootFile(b.path.clone()));
        }
    }

    // Directories breadth-first: (node, parent number, identifier).
    struct DirInfo<'a> {
        dir: &'a Dir,
        parent: usize,
        ident: Vec<u8>,
        size: u64,
        lba: u32,
    }
    let mut dirs: Vec<DirInfo<'_>> = vec![DirInfo {
        dir: &root,
        parent: 0,
        ident: vec![0],
        size: 0,
        lba: 0,
    }];
    let mut i = 0;
    while i < dirs.len() {
        let d = dirs[i].dir;
        for ((name, _), (_, node)) in &d.children {
            if let Node::Dir(child) = node {
                dirs.push(DirInfo {
                    dir: child,
                    parent: i,
                    ident: name.as_bytes().to_vec(),
                    size: 0,
                    lba: 0,
                });
            }
        }
        i += 1;
    }
    let record_len = |ident_len: usize| 33 + ident_len + (1 - ident_len % 2);
    for d in &mut dirs {
        let mut lens = vec![record_len(1), record_len(1)];
        for ((name, ext), (_, node)) in &d.dir.children {
            let ident = match node {
                Node::Dir(_) => name.len(),
                Node::File(_) => name.len() + 1 + ext.len() + 2,
            };
            lens.push(record_len(ident));
        }
        d.size = dir_size(&lens);
    }
    let path_table_size: u64 = dirs
        .iter()
        .map(|d| 8 + d.ident.len() as u64 + d.ident.len() as u64 % 2)
        .sum();
    let pt_blocks = path_table_size.div_ceil(BLOCK);

    // Assign blocks.
    let mut next: u64 = 16 + 1 + u64::from(bootable) + 1; // PVD, boot record, terminator
    let l_table = next;
    next += pt_blocks;
    let m_table = next;
    next += pt_blocks;
    for d in &mut dirs {
        d.lba = next as u32;
        next += d.size / BLOCK;
    }
    let mut extents: Vec<IsoExtent> = vec![IsoExtent { lba: 0, len: 0 }; all.len()];
    if bootable {
        extents[catalog_index] = IsoExtent {
            lba: next as u32,
            len: BLOCK,
        };
        next += 1;
    }
    let head_blocks = next;
    // Files in path order; empty files get no block (extent 0, length 0).
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| all[a].0.cmp(&all[b].0));
    for &fi in &order {
        let len = all[fi].1.len() as u64;
        if len > 0 {
            extents[fi] = IsoExtent {
                lba: next as u32,
                len,
            };
            next += len.div_ceil(BLOCK);
        }
    }
    for (k, a) in opts.aliases.iter().enumerate() {
        let bad = || IsoError::Alias {
            path: a.path.clone(),
            of: a.of.clone(),
            offset: a.offset,
            len: a.len,
        };
        let target = files.iter().position(|(p, _)| p == &a.of).ok_or_else(bad)?;
        let t = extents[target];
        if !a.offset.is_multiple_of(BLOCK) || a.offset + a.len > t.len {
            return Err(bad());
        }
        extents[alias_base + k] = IsoExtent {
            // Within the target, which fits 32-bit block numbers.
            lba: t.lba + (a.offset / BLOCK) as u32,
            len: a.len,
        };
    }
    // The volume ends on a 1 MiB boundary, as isohybrid pads for disks.
    let volume_blocks = next.div_ceil(512) * 512;
    let total = volume_blocks * BLOCK;
    if volume_blocks > u64::from(u32::MAX) {
        return Err(IsoError::TooLarge(total));
    }
    let mut img = vec![0u8; (head_blocks * BLOCK) as usize];
    let (date7, date17) = (dir_date(opts.time), volume_date(opts.time));
    // Boot info tables to patch into file data: (file index, bytes 8..64).
    let mut patches: Vec<(usize, [u8; 56])> = Vec::new();

    // Directories.
    let dir_lba = |d: &Dir| -> (u32, u64) {
        let info = dirs
            .iter()
            .find(|x| std::ptr::eq(x.dir, d))
            .expect("every directory is listed");
        (info.lba, info.size)
    };
    for d in &dirs {
        let parent = &dirs[d.parent];
        let mut recs = vec![
            record(&[0], d.lba, d.size, true, &date7),
            record(&[1], parent.lba, parent.size, true, &date7),
        ];
        for ((name, ext), (_, node)) in &d.dir.children {
            match node {
                Node::Dir(child) => {
                    let (lba, size) = dir_lba(child);
                    recs.push(record(name.as_bytes(), lba, size, true, &date7));
                }
                Node::File(fi) => {
                    let ident = format!("{name}.{ext};1");
                    let e = extents[*fi];
                    recs.push(record(ident.as_bytes(), e.lba, e.len, false, &date7));
                }
            }
        }
        let mut at = u64::from(d.lba) * BLOCK;
        let end = at + d.size;
        for r in recs {
            // A record never crosses a block boundary.
            if at % BLOCK + r.len() as u64 > BLOCK {
                at = at.div_ceil(BLOCK) * BLOCK;
            }
            debug_assert!(at + r.len() as u64 <= end);
            img[at as usize..at as usize + r.len()].copy_from_slice(&r);
            at += r.len() as u64;
        }
    }

    // Path tables: one record per directory, breadth-first.
    for (table, big) in [(l_table, false), (m_table, true)] {
        let mut at = (table * BLOCK) as usize;
        for d in &dirs {
            img[at] = d.ident.len() as u8; // length of directory identifier
            img[at + 1] = 0; // extended attribute record length
            let (lba, parent) = if big {
                (d.lba.to_be_bytes(), ((d.parent + 1) as u16).to_be_bytes())
            } else {
                (d.lba.to_le_bytes(), ((d.parent + 1) as u16).to_le_bytes())
            };
            img[at + 2..at + 6].copy_from_slice(&lba); // location of extent
            img[at + 6..at + 8].copy_from_slice(&parent); // parent directory number
            img[at + 8..at + 8 + d.ident.len()].copy_from_slice(&d.ident);
            at += 8 + d.ident.len() + d.ident.len() % 2;
        }
    }

    // Primary volume descriptor.
    {
        let root_info = &dirs[0];
        let p = &mut img[16 * BLOCK as usize..17 * BLOCK as usize];
        p[0] = 1; // volume descriptor type: primary
        p[1..6].copy_from_slice(b"CD001"); // standard identifier
        p[6] = 1; // version
        p[8..40].copy_from_slice(&padded(b"LINUX", 32)); // system identifier
        p[40..72].copy_from_slice(&padded(opts.volume_id.as_bytes(), 32)); // volume identifier
        p[80..88].copy_from_slice(&both32(volume_blocks as u32)); // volume space size
        p[120..124].copy_from_slice(&both16(1)); // volume set size
        p[124..128].copy_from_slice(&both16(1)); // volume sequence number
        p[128..132].copy_from_slice(&both16(BLOCK as u16)); // logical block size
        p[132..140].copy_from_slice(&both32(path_table_size as u32)); // path table size
        p[140..144].copy_from_slice(&(l_table as u32).to_le_bytes()); // L path table
        p[148..152].copy_from_slice(&(m_table as u32).to_be_bytes()); // M path table
        let r = record(&[0], root_info.lba, root_info.size, true, &date7);
        p[156..190].copy_from_slice(&r); // root directory record
        p[190..318].copy_from_slice(&padded(b"", 128)); // volume set identifier
        p[318..446].copy_from_slice(&padded(b"", 128)); // publisher
        p[446..574].copy_from_slice(&padded(b"", 128)); // data preparer
        p[574..702].copy_from_slice(&padded(b"PHASE BOOT MKIMAGE", 128)); // application
        p[702..813].copy_from_slice(&padded(b"", 111)); // copyright, abstract, bibliographic files
        p[813..830].copy_from_slice(&date17); // creation
        p[830..847].copy_from_slice(&date17); // modification
        p[847..863].copy_from_slice(b"0000000000000000"); // expiration: none
        p[864..880].copy_from_slice(b"0000000000000000"); // effective: none
        p[881] = 1; // file structure version
    }
    let mut next_vd = 17;
    let catalog_lba = extents.get(catalog_index).map_or(0, |e| e.lba);
    if bootable {
        let b = &mut img[17 * BLOCK as usize..18 * BLOCK as usize];
        b[0] = 0; // boot record
        b[1..6].copy_from_slice(b"CD001");
        b[6] = 1;
        b[7..30].copy_from_slice(b"EL TORITO SPECIFICATION"); // boot system identifier
        b[0x47..0x4B].copy_from_slice(&catalog_lba.to_le_bytes()); // boot catalog LBA
        next_vd = 18;
    }
    {
        let t = &mut img[next_vd * BLOCK as usize..(next_vd + 1) * BLOCK as usize];
        t[0] = 255; // volume descriptor set terminator
        t[1..6].copy_from_slice(b"CD001");
        t[6] = 1;
    }

    if bootable {
        let find = |path: &str| {
            let i = files
                .iter()
                .position(|(p, _)| p == path)
                .expect("checked above");
            (extents[i], files[i].1.as_ref())
        };
        let mut cat = [0u8; BLOCK as usize];
        let first = &opts.boot[0];
        // Validation entry.
        cat[0] = 1; // header ID
        cat[1] = platform_id(first.platform);
        cat[30] = 0x55;
        cat[31] = 0xAA;
        let sum = cat[..32].chunks_exact(2).fold(0u16, |s, w| {
            s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes()); // checksum
        // Default entry.
        let (e, data) = find(&first.path);
        cat[32..64].copy_from_slice(&boot_entry(first, e, data.len()));
        // Further entries, one section each; the last header is final (0x91).
        for (n, b) in opts.boot[1..].iter().enumerate() {
            let at = 64 + 64 * n;
            let last = n + 2 == opts.boot.len();
            cat[at] = if last { 0x91 } else { 0x90 }; // section header
            cat[at + 1] = platform_id(b.platform);
            cat[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes()); // one entry
            let (e, data) = find(&b.path);
            cat[at + 32..at + 64].copy_from_slice(&boot_entry(b, e, data.len()));
        }
        let at = (u64::from(catalog_lba) * BLOCK) as usize;
        img[at..at + cat.len()].copy_from_slice(&cat);

        for b in &opts.boot {
            if !b.boot_info_table {
                continue;
            }
            let (e, data) = find(&b.path);
            if data.len() < BLOCK as usize {
                return Err(IsoError::IsolinuxTooSmall(data.len()));
            }
            // Boot info table at offset 8: PVD LBA, file LBA, length, and
            // the 32-bit sum of the file from offset 64.
            let csum = data[64..]
                .chunks(4)
                .map(|c| {
                    let mut w = [0u8; 4];
                    w[..c.len()].copy_from_slice(c);
                    u32::from_le_bytes(w)
                })
                .fold(0u32, u32::wrapping_add);
            let mut table = [0u8; 56]; // bytes 8..64 of the file
            table[0..4].copy_from_slice(&16u32.to_le_bytes()); // bi_pvd
            table[4..8].copy_from_slice(&e.lba.to_le_bytes()); // bi_file
            table[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes()); // bi_length
            table[12..16].copy_from_slice(&csum.to_le_bytes()); // bi_csum
            // 16..56: bi_reserved, zero.
            let index = files
                .iter()
                .position(|(p, _)| p == &b.path)
                .expect("checked above");
            patches.push((index, table));
        }

        if let Some(code) = &opts.hybrid_mbr_code {
            if code.len() > 432 {
                return Err(IsoError::MbrCode(code.len()));
            }
            let mut entries = vec![MbrEntry {
                active: true,
                kind: mbr_types::EMPTY,
                first_lba: 0,
                sectors: total / 512,
            }];
            let mut mbr_code = code.clone();
            mbr_code.resize(440, 0);
            if let Some(bios) = opts.boot.iter().find(|b| b.platform == Platform::Bios) {
                let (e, data) = find(&bios.path);
                if data.get(0x40..0x44) != Some(&0x7078_C0FBu32.to_le_bytes()) {
                    return Err(IsoError::NotHybridIsolinux);
                }
                // The LBA of isolinux.bin in 512-byte sectors, where
                // isohdpfx.bin loads it from.
                mbr_code[432..436].copy_from_slice(&(e.lba * 4).to_le_bytes());
            }
            if let Some(efi) = opts.boot.iter().find(|b| b.platform == Platform::Efi) {
                let (e, _) = find(&efi.path);
                entries.push(MbrEntry {
                    active: false,
                    kind: mbr_types::EFI_SYSTEM,
                    first_lba: u64::from(e.lba) * 4,
                    sectors: e.len.div_ceil(512),
                });
            }
            write_mbr(&mut img[..512], &mbr_code, opts.disk_signature, &entries)
                .expect("code checked above");
        }
    }

    let mut out_files = BTreeMap::new();
    for (i, (path, _)) in files.iter().enumerate() {
        out_files.insert(path.clone(), extents[i]);
    }
    for (k, a) in opts.aliases.iter().enumerate() {
        out_files.insert(a.path.clone(), extents[alias_base + k]);
    }
    for (index, table) in patches {
        files[index].1.to_mut()[8..64].copy_from_slice(&table);
    }
    let mut parts: Vec<(u64, Cow<'a, [u8]>)> = files
        .into_iter()
        .enumerate()
        .filter(|(_, (_, d))| !d.is_empty())
        .map(|(i, (_, d))| (u64::from(extents[i].lba) * BLOCK, d))
        .collect();
    parts.sort_by_key(|(offset, _)| *offset);
    Ok(IsoImage {
        head: img,
        parts,
        len: total,
        files: out_files,
        catalog_lba,
    })
}

fn platform_id(p: Platform) -> u8 {
    match p {
        Platform::Bios => 0x00,
        Platform::Efi => 0xEF,
    }
}

fn boot_entry(b: &BootEntry, e: IsoExtent, len: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[0] = 0x88; // bootable
    out[1] = 0; // no emulation
    out[2..4].copy_from_slice(&0u16.to_le_bytes()); // load segment: default 0x7C0
    out[4] = 0; // system type
    let sectors = match b.platform {
        // isolinux loads the rest of itself: the BIOS loads 2048 bytes.
        Platform::Bios => 4,
        // The whole FAT image in 512-byte sectors, when that fits; 0 makes
        // firmware take the rest of the volume, and FAT knows its own size.
        Platform::Efi => u16::try_from(len.div_ceil(512)).unwrap_or(0),
    };
    out[6..8].copy_from_slice(&sectors.to_le_bytes()); // sector count
    out[8..12].copy_from_slice(&e.lba.to_le_bytes()); // load RBA
    out
}

/// Size of a directory whose records have these lengths: records do not
/// cross blocks, and a directory fills whole blocks.
pub(crate) fn dir_size(lens: &[usize]) -> u64 {
    let mut at = 0u64;
    for &l in lens {
        if at % BLOCK + l as u64 > BLOCK {
            at = at.div_ceil(BLOCK) * BLOCK;
        }
        at += l as u64;
    }
    at.div_ceil(BLOCK).max(1) * BLOCK
}

/// A directory record (ECMA-119 9.1).
fn record(ident: &[u8], lba: u32, len: u64, dir: bool, date: &[u8; 7]) -> Vec<u8> {
    let n = 33 + ident.len() + (1 - ident.len() % 2);
    let mut r = vec![0u8; n];
    r[0] = n as u8; // length of directory record
    r[1] = 0; // extended attribute record length
    r[2..10].copy_from_slice(&both32(lba)); // location of extent
    r[10..18].copy_from_slice(&both32(len as u32)); // data length
    r[18..25].copy_from_slice(date); // recording date and time
    r[25] = if dir { 0x02 } else { 0x00 }; // file flags
    r[28..32].copy_from_slice(&both16(1)); // volume sequence number
    r[32] = ident.len() as u8; // length of file identifier
    r[33..33 + ident.len()].copy_from_slice(ident);
    r
}

pub(crate) fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

pub(crate) fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn padded(s: &[u8], n: usize) -> Vec<u8> {
    let mut v = s[..s.len().min(n)].to_vec();
    v.resize(n, b' ');
    v
}

fn split_time(unix: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (y, m, d) = crate::fat::civil_from_days((unix / 86400) as i64);
    let s = unix % 86400;
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// The 7-byte directory record time (years since 1900, UTC).
pub(crate) fn dir_date(unix: u64) -> [u8; 7] {
    let (y, m, d, hh, mm, ss) = split_time(unix);
    [
        (y - 1900).clamp(0, 255) as u8,
        m as u8,
        d as u8,
        hh as u8,
        mm as u8,
        ss as u8,
        0, // offset from GMT in 15-minute units
    ]
}

/// The 17-byte volume descriptor time: "YYYYMMDDHHMMSScc" and the offset.
fn volume_date(unix: u64) -> [u8; 17] {
    let (y, m, d, hh, mm, ss) = split_time(unix);
    let text = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}00");
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(&text.as_bytes()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_d_characters() {
        assert_eq!(iso_name("vmlinuz", false), "VMLINUZ.;1");
        assert_eq!(iso_name("isolinux.bin", false), "ISOLINUX.BIN;1");
        assert_eq!(iso_name("cfi-compat", true), "CFI_COMPAT");
        assert!(valid("ISOLINUX.BIN;1", false));
        assert!(!valid("A.B.C;1", false));
        assert!(!valid("A.B", true));
    }

    #[test]
    fn directory_record_golden() {
        let r = record(b"KERNEL.;1", 0x1234, 5000, false, &dir_date(1_700_000_000));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[42u8, 0][..],                                       // record length (33 + 9, even), no XAR
            &[0x34, 0x12, 0, 0, 0, 0, 0x12, 0x34],                // extent LBA, both-endian
            &[0x88, 0x13, 0, 0, 0, 0, 0x13, 0x88],                // 5000 bytes, both-endian
            &[123, 11, 14, 22, 13, 20, 0],                        // 2023-11-14 22:13:20 UTC
            &[0, 0, 0],                                           // flags, unit size, gap
            &[1, 0, 0, 1],                                        // volume sequence 1, both-endian
            &[9],                                                 // identifier length
            b"KERNEL.;1",
        ]
        .concat();
        assert_eq!(r, want);
        // An even identifier gets a pad byte so the record stays even.
        assert_eq!(record(b"AB", 0, 0, true, &[0; 7]).len(), 36);
    }

    #[test]
    fn volume_date_text() {
        assert_eq!(&volume_date(1_700_000_000)[..16], b"2023111422132000");
    }

    #[test]
    fn records_do_not_cross_blocks() {
        // 60 records of 34 bytes: 2040 fit in the first block, the next
        // starts the second.
        assert_eq!(dir_size(&[34; 60]), 2048);
        assert_eq!(dir_size(&[34; 61]), 4096);
    }

    #[test]
    fn catalog_and_boot_info_table() {
        let mut isolinux = vec![0u8; 4096];
        isolinux[0x40..0x44].copy_from_slice(&0x7078_C0FBu32.to_le_bytes());
        isolinux[100] = 7;
        let efi = vec![0xEE; 3000];
        let files: Vec<(String, Cow<'_, [u8]>)> = vec![
            ("isolinux/isolinux.bin".into(), Cow::Borrowed(&isolinux)),
            ("efi.img".into(), Cow::Borrowed(&efi)),
        ];
        let img = build(
            files,
            &IsoOptions {
                volume_id: "PHASE".into(),
                time: 1_700_000_000,
                boot: vec![
                    BootEntry {
                        platform: Platform::Bios,
                        path: "isolinux/isolinux.bin".into(),
                        boot_info_table: true,
                    },
                    BootEntry {
                        platform: Platform::Efi,
                        path: "efi.img".into(),
                        boot_info_table: false,
                    },
                ],
                catalog_path: "isolinux/boot.cat".into(),
                hybrid_mbr_code: Some(vec![0xFA; 432]),
                disk_signature: 0x01020304,
                aliases: vec![Alias {
                    path: "inner.bin".into(),
                    of: "efi.img".into(),
                    offset: 2048,
                    len: 952,
                }],
            },
        )
        .unwrap();
        let bytes = img.to_vec();
        let b = &bytes;
        let cat = (img.catalog_lba as usize) * 2048;
        let iso = img.files["isolinux/isolinux.bin"];
        let e = img.files["efi.img"];
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // Validation entry: header 1, platform x86, checksum, 55 AA.
            &[1u8, 0, 0, 0][..], &[0; 24], &[0xAA, 0x55, 0x55, 0xAA],
            // Default entry: bootable, no emulation, segment 0, 4 sectors, LBA.
            &[0x88, 0, 0, 0, 0, 0, 4, 0], &iso.lba.to_le_bytes(), &[0; 20],
            // Final section header: UEFI, one entry.
            &[0x91, 0xEF, 1, 0], &[0; 28],
            // Its entry: the FAT image, 6 sectors of 512 bytes.
            &[0x88, 0, 0, 0, 0, 0, 6, 0], &e.lba.to_le_bytes(), &[0; 20],
        ]
        .concat();
        assert_eq!(&b[cat..cat + 128], &want[..]);
        // Boot record points at the catalog.
        assert_eq!(
            &b[17 * 2048 + 0x47..17 * 2048 + 0x4B],
            &img.catalog_lba.to_le_bytes()
        );
        // Boot info table.
        let f = &b[iso.lba as usize * 2048..];
        assert_eq!(&f[8..12], &16u32.to_le_bytes());
        assert_eq!(&f[12..16], &iso.lba.to_le_bytes());
        assert_eq!(&f[16..20], &4096u32.to_le_bytes());
        let sum = 0x7078_C0FBu32.wrapping_add(7);
        assert_eq!(&f[20..24], &sum.to_le_bytes());
        // isohybrid MBR: isolinux.bin's 512-byte LBA at 432, then partitions.
        assert_eq!(&b[432..436], &(iso.lba * 4).to_le_bytes());
        assert_eq!(b[446], 0x80);
        assert_eq!(b[446 + 16 + 4], 0xEF);
        assert_eq!(&b[446 + 16 + 8..446 + 16 + 12], &(e.lba * 4).to_le_bytes());
        assert_eq!(b.len() % (1 << 20), 0);
        // The alias is a block into the EFI image, listed with its own size.
        assert_eq!(
            img.files["inner.bin"],
            IsoExtent {
                lba: e.lba + 1,
                len: 952
            }
        );
    }
}
