//! FAT12/16/32 images, written in one pass from a set of files.
//!
//! The layout follows Microsoft's "FAT: General Overview of On-Disk Format"
//! (the BPB, FAT entries, directory entries and long names) and is chosen so
//! that the same files always give the same bytes:
//! - the FAT type follows from the cluster count alone (below 4085 FAT12,
//!   below 65525 FAT16, else FAT32), and automatic sizing keeps clear of
//!   both boundaries so every reader agrees on the type;
//! - directories list their entries sorted by name; clusters are handed out
//!   in one pre-order walk, so every file is contiguous — which is what lets
//!   syslinux's sector map and the ISO writer point straight at file data;
//! - every timestamp is the build time, the volume ID is given by the caller.
//!
//! Names that are valid 8.3 in one case are stored as short names only (with
//! the NT lower-case flags when lower case); any other name gets VFAT long
//! name entries and a generated `BASIS~N.EXT` short name.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::pieces::{Pieces, PiecesError};

pub const SECTOR: u64 = 512;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FatError {
    #[error("FAT path {0:?} is empty or has an empty, . or .. component")]
    BadPath(String),
    #[error("FAT name {name:?} in {path:?} has a character FAT does not allow")]
    BadName { path: String, name: String },
    #[error("FAT path {path:?} is added twice (FAT names ignore case)")]
    Duplicate { path: String },
    #[error("FAT path {path:?} is under {parent:?}, which is a file")]
    NotADirectory { path: String, parent: String },
    #[error("FAT image of {size} bytes is too small for its content: it needs {needed} bytes")]
    TooSmall { size: u64, needed: u64 },
    #[error(
        "a FAT{bits} image needs between {min} and {max} clusters; this content gives {clusters}"
    )]
    ClusterCount {
        bits: u8,
        clusters: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "a FAT volume of {size} bytes has {clusters} clusters of {cluster_bytes} bytes, too close to a FAT12/16/32 boundary for every reader to agree on its type; choose another size"
    )]
    BetweenTypes {
        size: u64,
        clusters: u64,
        cluster_bytes: u64,
    },
    #[error("FAT file {path:?} is {size} bytes; FAT stores at most 4 GiB - 1")]
    FileTooLarge { path: String, size: u64 },
    #[error("FAT cluster size {0} is not a power of two between 512 and 65536 bytes")]
    ClusterSize(u32),
    #[error("FAT volume label {0:?} is longer than 11 bytes or not printable ASCII")]
    Label(String),
}

/// Which FAT variant, by the width of a FAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    pub fn bits(self) -> u8 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// The cluster counts this type may have, keeping 16 clear of each
    /// boundary where implementations have disagreed.
    fn cluster_range(self) -> (u64, u64) {
        match self {
            FatType::Fat12 => (1, 4085 - 16),
            FatType::Fat16 => (4085 + 16, 65525 - 16),
            FatType::Fat32 => (65525 + 16, 0x0FFF_FFF0),
        }
    }
}

/// File attributes (the directory entry's DIR_Attr bits).
pub mod attr {
    pub const READ_ONLY: u8 = 0x01;
    pub const HIDDEN: u8 = 0x02;
    pub const SYSTEM: u8 = 0x04;
    pub const VOLUME_ID: u8 = 0x08;
    pub const DIRECTORY: u8 = 0x10;
    pub const ARCHIVE: u8 = 0x20;
    pub const LONG_NAME: u8 = 0x0F;
}

/// What goes into the image: files by path, directories implied by them or
/// added empty.
#[derive(Debug, Default, Clone)]
pub struct Files {
    root: Dir,
}

#[derive(Debug, Default, Clone)]
struct Dir {
    /// Keyed by the upper-cased name, so names that differ only in case
    /// collide as they would on disk; the value keeps the name as given.
    children: BTreeMap<String, (String, Node)>,
}

#[derive(Debug, Clone)]
enum Node {
    Dir(Dir),
    File { data: Vec<u8>, attr: u8 },
}

impl Files {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file with the archive attribute.
    pub fn add(&mut self, path: &str, data: Vec<u8>) -> Result<(), FatError> {
        self.add_with_attr(path, data, attr::ARCHIVE)
    }

    /// Adds a file with the given attribute bits.
    pub fn add_with_attr(&mut self, path: &str, data: Vec<u8>, attr: u8) -> Result<(), FatError> {
        if u32::try_from(data.len()).is_err() {
            return Err(FatError::FileTooLarge {
                path: path.to_owned(),
                size: data.len() as u64,
            });
        }
        self.insert(path, Node::File { data, attr })
    }

    /// The data of the file at `path`, as added.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        let mut dir = &self.root;
        let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
        while let Some(name) = parts.next() {
            match (dir.children.get(&name.to_ascii_uppercase()), parts.peek()) {
                (Some((_, Node::Dir(d))), Some(_)) => dir = d,
                (Some((_, Node::File { data, .. })), None) => return Some(data),
                _ => return None,
            }
        }
        None
    }

    /// The data of the file at `path`, to change in place (its length
    /// must stay what the layout was made for).
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Vec<u8>> {
        let mut dir = &mut self.root;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (last, parents) = parts.split_last()?;
        for name in parents {
            match dir.children.get_mut(&name.to_ascii_uppercase()) {
                Some((_, Node::Dir(d))) => dir = d,
                _ => return None,
            }
        }
        match dir.children.get_mut(&last.to_ascii_uppercase()) {
            Some((_, Node::File { data, .. })) => Some(data),
            _ => None,
        }
    }

    /// Each file's data by its path (as [`FatImage::files`] names it).
    pub fn into_data(self) -> BTreeMap<String, Vec<u8>> {
        fn walk(dir: Dir, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
            for (name, node) in dir.children.into_values() {
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                match node {
                    Node::Dir(d) => walk(d, &path, out),
                    Node::File { data, .. } => {
                        out.insert(path, data);
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root, "", &mut out);
        out
    }

    /// Adds an empty directory (parents of files are added implicitly).
    pub fn add_dir(&mut self, path: &str) -> Result<(), FatError> {
        self.insert(path, Node::Dir(Dir::default()))
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), FatError> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(FatError::BadPath(path.to_owned()));
        }
        for name in &parts {
            check_name(path, name)?;
        }
        let (last, parents) = parts.split_last().expect("checked non-empty");
        let mut dir = &mut self.root;
        for (i, name) in parents.iter().enumerate() {
            let entry = dir
                .children
                .entry(name.to_ascii_uppercase())
                .or_insert_with(|| ((*name).to_owned(), Node::Dir(Dir::default())));
            dir = match &mut entry.1 {
                Node::Dir(d) => d,
                Node::File { .. } => {
                    return Err(FatError::NotADirectory {
                        path: path.to_owned(),
                        parent: parts[..=i].join("/"),
                    });
                }
            };
        }
        let key = last.to_ascii_uppercase();
        match (dir.children.get(&key), &node) {
            (None, _) => {
                dir.children.insert(key, ((*last).to_owned(), node));
                Ok(())
            }
            // Adding a directory that already exists is harmless.
            (Some((_, Node::Dir(_))), Node::Dir(_)) => Ok(()),
            _ => Err(FatError::Duplicate {
                path: path.to_owned(),
            }),
        }
    }

    /// Total bytes of file data.
    pub fn data_bytes(&self) -> u64 {
        fn walk(d: &Dir) -> u64 {
            d.children
                .values()
                .map(|(_, n)| match n {
                    Node::Dir(d) => walk(d),
                    Node::File { data, .. } => data.len() as u64,
                })
                .sum()
        }
        walk(&self.root)
    }
}

fn check_name(path: &str, name: &str) -> Result<(), FatError> {
    let bad = name.len() > 255
        || name.ends_with('.')
        || name.ends_with(' ')
        || name
            .chars()
            .any(|c| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c) || (c as u32) > 0xFFFF);
    if bad {
        return Err(FatError::BadName {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// How to lay the image out.
#[derive(Debug, Clone, Default)]
pub struct FatOptions {
    /// Volume label, up to 11 characters (upper-cased on disk).
    pub label: Option<String>,
    pub volume_id: u32,
    /// Unix time for every timestamp.
    pub time: u64,
    /// Sectors before the volume on its disk (BPB_HiddSec): the partition's
    /// first LBA, which boot code such as syslinux relies on.
    pub hidden_sectors: u32,
    /// The exact image size in bytes; `None` sizes the image to its content
    /// plus `free_bytes`.
    pub size: Option<u64>,
    /// Free space to leave when sizing automatically.
    pub free_bytes: u64,
    /// Force a FAT type; `None` picks the smallest that fits.
    pub fat_type: Option<FatType>,
    /// Bytes per cluster; `None` picks 2048 (so data can be 2048-aligned for
    /// ISO9660), or more for very large volumes.
    pub cluster_size: Option<u32>,
    /// Leave file data out of [`FatImage::bytes`] (zeros where it goes), for
    /// a writer that streams each file from its own buffer instead
    /// ([`FatImage::into_pieces`]): the ISO's EFI image is mostly one UKI,
    /// and copying it only to write it out again costs as much as the rest
    /// of the build.
    pub sparse: bool,
}

/// Where a file's bytes landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset from the start of the image.
    pub offset: u64,
    pub len: u64,
}

/// A written image.
#[derive(Debug, Clone)]
pub struct FatImage {
    pub bytes: Vec<u8>,
    pub fat_type: FatType,
    pub cluster_size: u32,
    pub clusters: u64,
    /// Each file's data, by the path it was added with.
    pub files: BTreeMap<String, Extent>,
}

impl FatImage {
    /// The image as (offset, bytes) pieces in offset order, for an image
    /// built with [`FatOptions::sparse`] from `files`: the metadata between
    /// the files copied out of [`FatImage::bytes`], each file's data moved
    /// out of `files`. Runs of whole zero sectors are left out; whoever
    /// writes the pieces fills gaps with zeros.
    pub fn into_pieces(self, files: Files) -> Vec<(u64, Vec<u8>)> {
        let mut data = files.into_data();
        let mut holes: Vec<(u64, u64, Vec<u8>)> = self
            .files
            .iter()
            .filter(|(_, e)| e.offset > 0 && e.len > 0)
            .filter_map(|(path, e)| data.remove(path).map(|d| (e.offset, e.len, d)))
            .collect();
        holes.sort_by_key(|h| h.0);
        let mut pieces = Vec::new();
        // Adds the non-zero sectors of bytes[from..to], joining neighbours.
        let metadata = |from: u64, to: u64, pieces: &mut Vec<(u64, Vec<u8>)>| {
            let mut run: Option<(u64, Vec<u8>)> = None;
            let mut at = from;
            while at < to {
                let end = (at - at % SECTOR + SECTOR).min(to);
                let chunk = &self.bytes[at as usize..end as usize];
                if chunk.iter().any(|&b| b != 0) {
                    run.get_or_insert_with(|| (at, Vec::new()))
                        .1
                        .extend_from_slice(chunk);
                } else if let Some(done) = run.take() {
                    pieces.push(done);
                }
                at = end;
            }
            pieces.extend(run);
        };
        let mut at = 0u64;
        for (offset, len, bytes) in holes {
            metadata(at, offset, &mut pieces);
            pieces.push((offset, bytes));
            at = offset + len;
        }
        metadata(at, self.bytes.len() as u64, &mut pieces);
        pieces
    }

    /// Byte offset of the boot code area after the BPB (where syslinux's
    /// code goes): 62 for FAT12/16, 90 for FAT32.
    pub fn boot_code_offset(&self) -> usize {
        if self.fat_type == FatType::Fat32 {
            90
        } else {
            62
        }
    }
}

/// The geometry the image is written with.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    fat_type: FatType,
    sectors_per_cluster: u32,
    reserved: u32,
    fat_sectors: u32,
    root_entries: u32,
    clusters: u64,
    total_sectors: u64,
}

impl Geometry {
    fn root_sectors(&self) -> u64 {
        u64::from(self.root_entries) * 32 / SECTOR
    }
    fn data_start(&self) -> u64 {
        u64::from(self.reserved) + 2 * u64::from(self.fat_sectors) + self.root_sectors()
    }
    fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * SECTOR
    }

    /// Lays out `clusters` clusters: the FAT just large enough for them.
    fn new(fat_type: FatType, spc: u32, clusters: u64, root_entries: u32) -> Self {
        let fat_sectors = fat_type.sectors_for(clusters + 2);
        let mut g = Geometry::with_fat(fat_type, spc, fat_sectors, root_entries);
        g.clusters = clusters;
        g.total_sectors = g.data_start() + clusters * u64::from(spc);
        g
    }

    /// The areas before the data for a FAT of `fat_sectors`: the reserved
    /// area is padded so the data region starts on a cluster (and
    /// 2048-byte) boundary. No clusters yet.
    fn with_fat(fat_type: FatType, spc: u32, fat_sectors: u32, root_entries: u32) -> Self {
        let (reserved, root_entries) = match fat_type {
            FatType::Fat32 => (32u32, 0),
            _ => (1u32, root_entries),
        };
        let align = u64::from(spc).max(4);
        let mut g = Geometry {
            fat_type,
            sectors_per_cluster: spc,
            reserved,
            fat_sectors,
            root_entries,
            clusters: 0,
            total_sectors: 0,
        };
        let rem = g.data_start() % align;
        if rem != 0 {
            // The pad is below `align`, at most 128 sectors.
            g.reserved += (align - rem) as u32;
        }
        g
    }

    /// A volume of exactly `total` sectors. Readers count the clusters from
    /// the BPB — (total − data start) / sectors per cluster — so the FAT
    /// must hold that many entries plus the two reserved ones. The FAT is
    /// the smallest that does, which is what the Microsoft FAT
    /// specification's FATSz formula approximates; found exactly here by
    /// bisection, since a larger FAT leaves fewer clusters and a smaller
    /// one more. `None` when not even the FAT fits.
    fn fixed(fat_type: FatType, spc: u32, total: u64, root_entries: u32) -> Option<Self> {
        let with = |fat_sectors: u32| {
            let mut g = Geometry::with_fat(fat_type, spc, fat_sectors, root_entries);
            let start = g.data_start();
            (start <= total).then(|| {
                g.clusters = (total - start) / u64::from(spc);
                g.total_sectors = total;
                g
            })
        };
        // Enough (or too much, past the volume's end): stop there.
        let enough = |f: u32| with(f).is_none_or(|g| fat_type.entries_in(f) >= g.clusters + 2);
        let (mut lo, mut hi) = (1u32, fat_type.sectors_for(total / u64::from(spc) + 2));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if enough(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        with(lo).filter(|g| fat_type.entries_in(lo) >= g.clusters + 2)
    }
}

impl FatType {
    /// Sectors for a FAT of `entries` entries; 12-bit entries pack two to
    /// three bytes.
    fn sectors_for(self, entries: u64) -> u32 {
        let bytes = match self {
            FatType::Fat12 => (entries * 3).div_ceil(2),
            FatType::Fat16 => entries * 2,
            FatType::Fat32 => entries * 4,
        };
        // Volumes are below 2^41 bytes, so a FAT is below 2^32 sectors.
        bytes.div_ceil(SECTOR) as u32
    }

    /// Entries that fit in a FAT of `sectors` sectors.
    fn entries_in(self, sectors: u32) -> u64 {
        let bytes = u64::from(sectors) * SECTOR;
        match self {
            FatType::Fat12 => bytes * 2 / 3,
            FatType::Fat16 => bytes / 2,
            FatType::Fat32 => bytes / 4,
        }
    }
}

/// A directory as it will be written: its entries, in order, each with the
/// short name and any long name.
struct Listing {
    entries: Vec<DirEntry>,
}

struct DirEntry {
    short: [u8; 11],
    nt_flags: u8,
    long: Option<Vec<u16>>,
    attr: u8,
    /// Index into the arena of directories, or the file.
    target: Target,
}

enum Target {
    Dir(usize),
    File { path: String, size: u32 },
}

impl DirEntry {
    fn slots(&self) -> u64 {
        1 + self
            .long
            .as_ref()
            .map_or(0, |l| l.len().div_ceil(13) as u64)
    }
}

/// Every directory, flattened in pre-order; index 0 is the root.
struct Arena<'a> {
    dirs: Vec<Listing>,
    files: BTreeMap<String, &'a [u8]>,
}

fn flatten<'a>(root: &'a Dir) -> Arena<'a> {
    let mut arena = Arena {
        dirs: Vec::new(),
        files: BTreeMap::new(),
    };
    fn walk<'a>(dir: &'a Dir, prefix: &str, arena: &mut Arena<'a>) -> usize {
        let index = arena.dirs.len();
        arena.dirs.push(Listing {
            entries: Vec::new(),
        });
        let mut used: BTreeSet<[u8; 11]> = BTreeSet::new();
        let mut entries = Vec::new();
        // Names that need no long entry claim their short names first, so a
        // generated `~N` name never takes a name a file really has.
        let mut plain: BTreeMap<&str, ([u8; 11], u8)> = BTreeMap::new();
        for (name, _) in dir.children.values() {
            if let Some((short, flags)) = plain_short_name(name) {
                used.insert(short);
                plain.insert(name.as_str(), (short, flags));
            }
        }
        for (name, node) in dir.children.values() {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let (short, nt_flags, long) = match plain.get(name.as_str()) {
                Some(&(short, flags)) => (short, flags, None),
                None => {
                    let short = generated_short_name(name, &used);
                    used.insert(short);
                    (short, 0, Some(name.encode_utf16().collect()))
                }
            };
            let (attr, target) = match node {
                Node::Dir(d) => (attr::DIRECTORY, Target::Dir(walk(d, &path, arena))),
                Node::File { data, attr } => {
                    arena.files.insert(path.clone(), data);
                    (
                        *attr,
                        Target::File {
                            path,
                            // Checked in Files::add_with_attr.
                            size: data.len() as u32,
                        },
                    )
                }
            };
            entries.push(DirEntry {
                short,
                nt_flags,
                long,
                attr,
                target,
            });
        }
        arena.dirs[index].entries = entries;
        index
    }
    walk(root, "", &mut arena);
    arena
}

const SHORT_CHARS: &[u8] = b"!#$%&'()-@^_`{}~";

fn short_char_ok(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_CHARS.contains(&c) || c >= 0x80
}

/// A name that is valid 8.3 with each part in one case: the short name and
/// the NT case flags (0x08 lower-case base, 0x10 lower-case extension).
fn plain_short_name(name: &str) -> Option<([u8; 11], u8)> {
    if !name.is_ascii() {
        return None;
    }
    let (base, ext) = match name.rsplit_once('.') {
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || base.contains('.') {
        return None;
    }
    let mut flags = 0;
    for (part, flag) in [(base, 0x08), (ext, 0x10)] {
        let has_lower = part.bytes().any(|c| c.is_ascii_lowercase());
        let has_upper = part.bytes().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper {
            return None;
        }
        if has_lower {
            flags |= flag;
        }
        if !part.bytes().all(|c| short_char_ok(c.to_ascii_uppercase())) {
            return None;
        }
    }
    let mut short = [b' '; 11];
    for (i, c) in base.bytes().enumerate() {
        short[i] = c.to_ascii_uppercase();
    }
    for (i, c) in ext.bytes().enumerate() {
        short[8 + i] = c.to_ascii_uppercase();
    }
    Some((short, flags))
}

/// The `BASIS~N.EXT` short name for a name that needs a long entry: the
/// first `~N` not already used in the directory.
fn generated_short_name(name: &str, used: &BTreeSet<[u8; 11]>) -> [u8; 11] {
    let clean = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && short_char_ok(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (clean(b), clean(e)),
        _ => (clean(trimmed), Vec::new()),
    };
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&base[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        for (i, c) in ext.iter().take(3).enumerate() {
            short[8 + i] = *c;
        }
        if !used.contains(&short) {
            return short;
        }
    }
    unreachable!("a directory holds fewer than 10^7 names")
}

/// The checksum of a short name that each long-name entry carries.
pub fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// DOS date and time (UTC) for a Unix time, clamped to 1980–2107.
pub fn dos_datetime(unix: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = unix.clamp(MIN, MAX);
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let (y, m, d) = civil_from_days(days);
    let date = (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16;
    let time =
        ((secs / 3600) as u16) << 11 | (((secs / 60) % 60) as u16) << 5 | (secs % 60 / 2) as u16;
    (date, time)
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn label_bytes(label: Option<&str>) -> Result<Option<[u8; 11]>, FatError> {
    let Some(label) = label else { return Ok(None) };
    if label.len() > 11 || !label.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Err(FatError::Label(label.to_owned()));
    }
    let mut out = [b' '; 11];
    for (i, c) in label.bytes().enumerate() {
        out[i] = c.to_ascii_uppercase();
    }
    Ok(Some(out))
}

/// Writes the image into one buffer (for volumes that fit in memory; a
/// writer that streams uses [`layout`]).
pub fn build(files: &Files, opts: &FatOptions) -> Result<FatImage, FatError> {
    let layout = layout(files, opts)?;
    let mut bytes = vec![0u8; layout.len as usize];
    for (offset, data) in &layout.metadata {
        bytes[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    if !opts.sparse {
        for (offset, data) in layout.file_data(files) {
            bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        }
    }
    Ok(FatImage {
        bytes,
        fat_type: layout.fat_type,
        cluster_size: layout.cluster_size,
        clusters: layout.clusters,
        files: layout.files,
    })
}

/// A volume laid out but not written: its metadata (boot sectors, the
/// nonzero start of both FATs, directories) as pieces, and where each
/// file's data goes. Everything else is zeros, so a 64 GiB volume costs
/// what its files and directories do.
#[derive(Debug, Clone)]
pub struct FatLayout {
    pub len: u64,
    pub fat_type: FatType,
    pub cluster_size: u32,
    pub clusters: u64,
    /// Each file's data, by the path it was added with.
    pub files: BTreeMap<String, Extent>,
    /// (offset, bytes) of everything but file data, in offset order.
    pub metadata: Vec<(u64, Vec<u8>)>,
}

impl FatLayout {
    /// Each non-empty file's data at its offset, from the `files` the
    /// layout was made from.
    pub fn file_data<'a>(&self, files: &'a Files) -> Vec<(u64, &'a [u8])> {
        self.files
            .iter()
            .filter(|(_, e)| e.len > 0)
            .filter_map(|(path, e)| files.get(path).map(|d| (e.offset, d)))
            .collect()
    }

    /// The whole volume as pieces.
    pub fn pieces<'a>(&'a self, files: &'a Files) -> Result<Pieces<'a>, PiecesError> {
        let mut list: Vec<(u64, Cow<'a, [u8]>)> = self
            .metadata
            .iter()
            .map(|(o, d)| (*o, Cow::Borrowed(d.as_slice())))
            .collect();
        list.extend(
            self.file_data(files)
                .into_iter()
                .map(|(o, d)| (o, Cow::Borrowed(d))),
        );
        Pieces::from_unsorted(self.len, list)
    }

    /// The reserved sectors (boot sector, FSInfo and their backups): where
    /// boot code such as syslinux's goes.
    pub fn reserved_mut(&mut self) -> &mut [u8] {
        &mut self.metadata[0].1
    }
}

/// Lays out the volume.
pub fn layout(files: &Files, opts: &FatOptions) -> Result<FatLayout, FatError> {
    let label = label_bytes(opts.label.as_deref())?;
    let arena = flatten(&files.root);
    let default_cluster = match opts.cluster_size {
        Some(c) if c.is_power_of_two() && (512..=65536).contains(&c) => u64::from(c),
        Some(c) => return Err(FatError::ClusterSize(c)),
        None => {
            // 2048 bytes keeps file data on ISO9660 block boundaries; larger
            // volumes get larger clusters so the FATs stay small.
            let size = opts.size.unwrap_or(files.data_bytes() + opts.free_bytes);
            let mut c = 2048u64;
            while size / c > 1 << 20 && c < 32768 {
                c *= 2;
            }
            c
        }
    };
    let first = plan(&arena, label.is_some(), opts, default_cluster);
    let geometry = match first {
        Ok(g) => g,
        // A fixed size whose cluster count falls between two FAT types at
        // the default cluster size (8 MiB is 4096 clusters of 2 KiB, right
        // on the FAT12/16 boundary): other cluster sizes move the count
        // clear of it. Sizes that worked before keep their layout.
        Err(e @ (FatError::ClusterCount { .. } | FatError::BetweenTypes { .. }))
            if opts.size.is_some() && opts.cluster_size.is_none() =>
        {
            let halves = (0..)
                .map(|i| default_cluster >> (i + 1))
                .take_while(|&c| c >= 512);
            let doubles = (0..)
                .map(|i| default_cluster << (i + 1))
                .take_while(|&c| c <= 32768);
            halves
                .chain(doubles)
                .find_map(|c| plan(&arena, label.is_some(), opts, c).ok())
                .ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    Ok(write(&arena, &geometry, opts, label))
}

/// The geometry for the content at one cluster size.
fn plan(
    arena: &Arena<'_>,
    label: bool,
    opts: &FatOptions,
    cluster_bytes: u64,
) -> Result<Geometry, FatError> {
    let spc = (cluster_bytes / SECTOR) as u32;

    // Slots per directory; the root also holds the volume label.
    let dir_slots: Vec<u64> = arena
        .dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let own = if i == 0 {
                u64::from(label)
            } else {
                2 // "." and ".."
            };
            own + d.entries.iter().map(DirEntry::slots).sum::<u64>()
        })
        .collect();
    let clusters_for = |bytes: u64| bytes.div_ceil(cluster_bytes);
    let file_clusters: u64 = arena
        .files
        .values()
        .map(|d| clusters_for(d.len() as u64))
        .sum();
    let subdir_clusters: u64 = dir_slots[1..]
        .iter()
        .map(|s| clusters_for(s * 32).max(1))
        .sum();
    let root_slots = dir_slots[0];
    // FAT12/16 roots are a fixed area outside the clusters: at least the
    // customary size, rounded to whole sectors.
    let root_entries_for = |t: FatType| -> u32 {
        let min = if t == FatType::Fat12 { 224 } else { 512 };
        (root_slots.max(min).div_ceil(16) * 16) as u32
    };
    let content = |t: FatType| -> u64 {
        file_clusters
            + subdir_clusters
            + if t == FatType::Fat32 {
                clusters_for(root_slots * 32).max(1)
            } else {
                0
            }
    };

    let candidates: Vec<FatType> = match opts.fat_type {
        Some(t) => vec![t],
        None => vec![FatType::Fat12, FatType::Fat16, FatType::Fat32],
    };
    match opts.size {
        None => {
            let free = opts.free_bytes.div_ceil(cluster_bytes);
            for &t in &candidates {
                let (min, max) = t.cluster_range();
                let need = content(t) + free;
                if need <= max {
                    return Ok(Geometry::new(t, spc, need.max(min), root_entries_for(t)));
                }
            }
            let t = *candidates.last().expect("non-empty");
            let (min, max) = t.cluster_range();
            Err(FatError::ClusterCount {
                bits: t.bits(),
                clusters: content(t) + free,
                min,
                max,
            })
        }
        Some(size) => {
            let total = size / SECTOR;
            let fits: Vec<(FatType, Option<Geometry>)> = candidates
                .iter()
                .map(|&t| (t, Geometry::fixed(t, spc, total, root_entries_for(t))))
                .collect();
            let count = |g: &Option<Geometry>| g.map_or(0, |g| g.clusters);
            // The largest type whose cluster count, as every reader counts
            // it from the size, fits that type.
            let chosen = fits.iter().rev().find_map(|(t, g)| {
                let (min, max) = t.cluster_range();
                g.filter(|g| g.clusters >= min && g.clusters <= max)
            });
            let Some(g) = chosen else {
                let (t0, g0) = fits[0];
                let (min0, _) = t0.cluster_range();
                if count(&g0) < min0 {
                    let needed =
                        Geometry::new(t0, spc, content(t0).max(min0), root_entries_for(t0))
                            .total_sectors
                            * SECTOR;
                    return Err(FatError::TooSmall {
                        size,
                        needed: needed.max(size + SECTOR),
                    });
                }
                if let [(t, g)] = fits.as_slice() {
                    let (min, max) = t.cluster_range();
                    return Err(FatError::ClusterCount {
                        bits: t.bits(),
                        clusters: count(g),
                        min,
                        max,
                    });
                }
                return Err(FatError::BetweenTypes {
                    size,
                    clusters: count(&g0),
                    cluster_bytes,
                });
            };
            let t = g.fat_type;
            if content(t) > g.clusters {
                let needed =
                    Geometry::new(t, spc, content(t), root_entries_for(t)).total_sectors * SECTOR;
                return Err(FatError::TooSmall { size, needed });
            }
            Ok(g)
        }
    }
}

fn write(arena: &Arena<'_>, g: &Geometry, opts: &FatOptions, label: Option<[u8; 11]>) -> FatLayout {
    let cluster_bytes = g.cluster_bytes();
    let (date, time) = dos_datetime(opts.time);
    let mut metadata: Vec<(u64, Vec<u8>)> = Vec::new();

    // Hand out clusters in pre-order: a directory, then its entries.
    let mut alloc = Allocator {
        arena,
        cluster_bytes,
        fat32: g.fat_type == FatType::Fat32,
        label: label.is_some(),
        next: 2,
        dir_cluster: vec![0u64; arena.dirs.len()],
        file_cluster: BTreeMap::new(),
        chains: Vec::new(),
    };
    alloc.dir(0);
    let Allocator {
        next,
        dir_cluster,
        file_cluster,
        chains,
        ..
    } = alloc;
    let used = next - 2;

    // The reserved sectors: boot sector, and on FAT32 FSInfo and backups.
    let mut head = vec![0u8; g.reserved as usize * SECTOR as usize];
    write_bpb(&mut head[..512], g, opts, label);
    if g.fat_type == FatType::Fat32 {
        // FSInfo at sector 1 and backups of both at sectors 6 and 7.
        let fsinfo = &mut head[512..1024];
        fsinfo[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes()); // lead signature
        fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes()); // struct signature
        // Free count and next free hint; the counts fit 28 bits.
        fsinfo[488..492].copy_from_slice(&((g.clusters - used) as u32).to_le_bytes());
        fsinfo[492..496].copy_from_slice(&(next as u32).to_le_bytes());
        fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes()); // trail signature
        let (first, backup) = head.split_at_mut(6 * 512);
        backup[..1024].copy_from_slice(&first[..1024]);
    }
    metadata.push((0, head));

    // The FATs: only the entries up to the last allocated cluster are not
    // zero, so only those sectors are written.
    let fat_start = u64::from(g.reserved) * SECTOR;
    let fat_len = u64::from(g.fat_sectors) * SECTOR;
    {
        let entry_bytes = match g.fat_type {
            FatType::Fat12 => (next * 3).div_ceil(2) + 1,
            FatType::Fat16 => next * 2,
            FatType::Fat32 => next * 4,
        };
        let mut fat = vec![
            0u8;
            entry_bytes
                .div_ceil(SECTOR)
                .saturating_mul(SECTOR)
                .min(fat_len) as usize
        ];
        let mut set = |cluster: u64, value: u32| match g.fat_type {
            FatType::Fat12 => {
                let at = (cluster + cluster / 2) as usize;
                let cur = u16::from_le_bytes([fat[at], fat[at + 1]]);
                let v = if cluster.is_multiple_of(2) {
                    (cur & 0xF000) | (value as u16 & 0x0FFF)
                } else {
                    (cur & 0x000F) | ((value as u16 & 0x0FFF) << 4)
                };
                fat[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
            FatType::Fat16 => {
                let at = (cluster * 2) as usize;
                fat[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
            }
            FatType::Fat32 => {
                let at = (cluster * 4) as usize;
                fat[at..at + 4].copy_from_slice(&(value & 0x0FFF_FFFF).to_le_bytes());
            }
        };
        let eoc = match g.fat_type {
            FatType::Fat12 => 0xFFF,
            FatType::Fat16 => 0xFFFF,
            FatType::Fat32 => 0x0FFF_FFFF,
        };
        // Entry 0 carries the media byte, entry 1 end-of-chain with the
        // clean-shutdown and no-error bits set.
        set(0, (eoc & !0xFF) | 0xF8);
        set(1, eoc);
        for &(start, n) in &chains {
            for c in start..start + n - 1 {
                set(c, (c + 1) as u32);
            }
            set(start + n - 1, eoc);
        }
        metadata.push((fat_start, fat.clone()));
        metadata.push((fat_start + fat_len, fat));
    }

    // Directories.
    let data_start = g.data_start() * SECTOR;
    let cluster_offset = |c: u64| data_start + (c - 2) * cluster_bytes;
    let root_offset = if g.fat_type == FatType::Fat32 {
        cluster_offset(dir_cluster[0])
    } else {
        (u64::from(g.reserved) + 2 * u64::from(g.fat_sectors)) * SECTOR
    };
    for (i, listing) in arena.dirs.iter().enumerate() {
        let mut out: Vec<u8> = Vec::new();
        if i == 0 {
            if let Some(label) = label {
                out.extend_from_slice(&short_entry(&label, 0, attr::VOLUME_ID, 0, 0, date, time));
            }
        } else {
            let parent = parent_of(arena, i);
            // ".." of a directory in the root points at cluster 0, even on FAT32.
            let parent_cluster = if parent == 0 { 0 } else { dir_cluster[parent] };
            out.extend_from_slice(&short_entry(
                b".          ",
                0,
                attr::DIRECTORY,
                dir_cluster[i],
                0,
                date,
                time,
            ));
            out.extend_from_slice(&short_entry(
                b"..         ",
                0,
                attr::DIRECTORY,
                parent_cluster,
                0,
                date,
                time,
            ));
        }
        for e in &listing.entries {
            if let Some(long) = &e.long {
                let sum = lfn_checksum(&e.short);
                let n = long.len().div_ceil(13);
                for ord in (1..=n).rev() {
                    let mut chars = [0xFFFFu16; 13];
                    let chunk = &long[(ord - 1) * 13..long.len().min(ord * 13)];
                    chars[..chunk.len()].copy_from_slice(chunk);
                    if chunk.len() < 13 {
                        chars[chunk.len()] = 0;
                    }
                    let mut le = [0u8; 32];
                    le[0] = ord as u8 | if ord == n { 0x40 } else { 0 };
                    for (j, c) in chars.iter().enumerate() {
                        let at = match j {
                            0..=4 => 1 + 2 * j,
                            5..=10 => 14 + 2 * (j - 5),
                            _ => 28 + 2 * (j - 11),
                        };
                        le[at..at + 2].copy_from_slice(&c.to_le_bytes());
                    }
                    le[11] = attr::LONG_NAME;
                    le[13] = sum;
                    out.extend_from_slice(&le);
                }
            }
            let (cluster, size) = match &e.target {
                Target::Dir(d) => (dir_cluster[*d], 0),
                Target::File { path, size } => {
                    let c = file_cluster.get(path.as_str()).copied().unwrap_or(0);
                    (c, *size)
                }
            };
            out.extend_from_slice(&short_entry(
                &e.short, e.nt_flags, e.attr, cluster, size, date, time,
            ));
        }
        let at = if i == 0 {
            root_offset
        } else {
            cluster_offset(dir_cluster[i])
        };
        if !out.is_empty() {
            metadata.push((at, out));
        }
    }
    metadata.sort_by_key(|(o, _)| *o);
    let mut extents = BTreeMap::new();
    for (path, data) in &arena.files {
        let offset = file_cluster
            .get(path.as_str())
            .map_or(0, |&c| cluster_offset(c));
        extents.insert(
            path.clone(),
            Extent {
                offset,
                len: data.len() as u64,
            },
        );
    }
    FatLayout {
        len: g.total_sectors * SECTOR,
        fat_type: g.fat_type,
        cluster_size: cluster_bytes as u32,
        clusters: g.clusters,
        files: extents,
        metadata,
    }
}

/// Hands out clusters in one pre-order walk.
struct Allocator<'a, 'b> {
    arena: &'b Arena<'a>,
    cluster_bytes: u64,
    fat32: bool,
    label: bool,
    next: u64,
    dir_cluster: Vec<u64>,
    file_cluster: BTreeMap<String, u64>,
    /// (first cluster, count) of every contiguous chain.
    chains: Vec<(u64, u64)>,
}

impl Allocator<'_, '_> {
    fn take(&mut self, n: u64) -> u64 {
        let first = self.next;
        self.chains.push((first, n));
        self.next += n;
        first
    }

    fn dir(&mut self, i: usize) {
        let arena = self.arena;
        let own = if i == 0 { u64::from(self.label) } else { 2 };
        let slots = own
            + arena.dirs[i]
                .entries
                .iter()
                .map(DirEntry::slots)
                .sum::<u64>();
        if i != 0 || self.fat32 {
            self.dir_cluster[i] = self.take((slots * 32).div_ceil(self.cluster_bytes).max(1));
        }
        for e in &arena.dirs[i].entries {
            if let Target::Dir(d) = &e.target {
                self.dir(*d);
            }
        }
        // Files after the directories they sit in: directories stay near
        // the front, and each file is one contiguous run.
        for e in &arena.dirs[i].entries {
            if let Target::File { path, size } = &e.target {
                let n = u64::from(*size).div_ceil(self.cluster_bytes);
                if n > 0 {
                    let first = self.take(n);
                    self.file_cluster.insert(path.clone(), first);
                }
            }
        }
    }
}

fn parent_of(arena: &Arena<'_>, child: usize) -> usize {
    arena
        .dirs
        .iter()
        .position(|d| {
            d.entries
                .iter()
                .any(|e| matches!(e.target, Target::Dir(c) if c == child))
        })
        .unwrap_or(0)
}

fn short_entry(
    name: &[u8; 11],
    nt_flags: u8,
    attr: u8,
    cluster: u64,
    size: u32,
    date: u16,
    time: u16,
) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0..11].copy_from_slice(name); // DIR_Name
    e[11] = attr; // DIR_Attr
    e[12] = nt_flags; // DIR_NTRes: lower-case base (0x08) / extension (0x10)
    e[13] = 0; // DIR_CrtTimeTenth
    e[14..16].copy_from_slice(&time.to_le_bytes()); // DIR_CrtTime
    e[16..18].copy_from_slice(&date.to_le_bytes()); // DIR_CrtDate
    e[18..20].copy_from_slice(&date.to_le_bytes()); // DIR_LstAccDate
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes()); // DIR_FstClusHI
    e[22..24].copy_from_slice(&time.to_le_bytes()); // DIR_WrtTime
    e[24..26].copy_from_slice(&date.to_le_bytes()); // DIR_WrtDate
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes()); // DIR_FstClusLO
    e[28..32].copy_from_slice(&size.to_le_bytes()); // DIR_FileSize
    e
}

fn write_bpb(bs: &mut [u8], g: &Geometry, opts: &FatOptions, label: Option<[u8; 11]>) {
    let fat32 = g.fat_type == FatType::Fat32;
    // A short jump over the BPB to the boot code, and NOP.
    bs[0..3].copy_from_slice(&[0xEB, if fat32 { 0x58 } else { 0x3C }, 0x90]);
    bs[3..11].copy_from_slice(b"PHASEBT "); // BS_OEMName
    bs[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes()); // BPB_BytsPerSec
    bs[13] = g.sectors_per_cluster as u8; // BPB_SecPerClus
    bs[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes()); // BPB_RsvdSecCnt
    bs[16] = 2; // BPB_NumFATs
    bs[17..19].copy_from_slice(&(g.root_entries as u16).to_le_bytes()); // BPB_RootEntCnt
    let small = !fat32 && g.total_sectors < 0x10000;
    let total16 = if small { g.total_sectors as u16 } else { 0 };
    bs[19..21].copy_from_slice(&total16.to_le_bytes()); // BPB_TotSec16
    bs[21] = 0xF8; // BPB_Media: fixed disk
    let fatsz16 = if fat32 { 0 } else { g.fat_sectors as u16 };
    bs[22..24].copy_from_slice(&fatsz16.to_le_bytes()); // BPB_FATSz16
    bs[24..26].copy_from_slice(&63u16.to_le_bytes()); // BPB_SecPerTrk
    bs[26..28].copy_from_slice(&255u16.to_le_bytes()); // BPB_NumHeads
    bs[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes()); // BPB_HiddSec
    let total32 = if small { 0 } else { g.total_sectors as u32 };
    bs[32..36].copy_from_slice(&total32.to_le_bytes()); // BPB_TotSec32
    let ext = if fat32 {
        bs[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes()); // BPB_FATSz32
        bs[40..42].copy_from_slice(&0u16.to_le_bytes()); // BPB_ExtFlags: both FATs mirrored
        bs[42..44].copy_from_slice(&0u16.to_le_bytes()); // BPB_FSVer 0.0
        bs[44..48].copy_from_slice(&2u32.to_le_bytes()); // BPB_RootClus
        bs[48..50].copy_from_slice(&1u16.to_le_bytes()); // BPB_FSInfo
        bs[50..52].copy_from_slice(&6u16.to_le_bytes()); // BPB_BkBootSec
        64
    } else {
        36
    };
    bs[ext] = 0x80; // BS_DrvNum
    bs[ext + 2] = 0x29; // BS_BootSig: the next three fields are present
    bs[ext + 3..ext + 7].copy_from_slice(&opts.volume_id.to_le_bytes()); // BS_VolID
    bs[ext + 7..ext + 18].copy_from_slice(&label.unwrap_or(*b"NO NAME    ")); // BS_VolLab
    let fs = match g.fat_type {
        FatType::Fat12 => b"FAT12   ",
        FatType::Fat16 => b"FAT16   ",
        FatType::Fat32 => b"FAT32   ",
    };
    bs[ext + 18..ext + 26].copy_from_slice(fs); // BS_FilSysType
    // Boot code for a volume nobody installed a loader on: INT 18h hands
    // the boot back to the BIOS, then halt.
    let code = ext + 26;
    bs[code..code + 4].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
    bs[510] = 0x55;
    bs[511] = 0xAA;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FatOptions {
        FatOptions {
            label: Some("PHASE".into()),
            volume_id: 0x1234_5678,
            time: 1_700_000_000, // 2023-11-14 22:13:20 UTC
            ..FatOptions::default()
        }
    }

    #[test]
    fn sparse_pieces_write_out_as_the_whole_image() {
        let mut f = Files::new();
        f.add(
            "EFI/BOOT/BOOTX64.EFI",
            (0..70_001u32).map(|i| i as u8).collect(),
        )
        .unwrap();
        f.add("loader/loader.conf", b"timeout 0\n".to_vec())
            .unwrap();
        f.add("empty", Vec::new()).unwrap();
        f.add("odd", vec![0xA5; 2049]).unwrap();
        let whole = build(&f, &opts()).unwrap();
        let sparse = build(
            &f,
            &FatOptions {
                sparse: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(sparse.files, whole.files);
        let mut out = vec![0u8; sparse.bytes.len()];
        let mut end = 0;
        for (offset, bytes) in sparse.into_pieces(f) {
            assert!(offset as usize >= end, "pieces overlap or are out of order");
            out[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
            end = offset as usize + bytes.len();
        }
        assert_eq!(out, whole.bytes);
    }

    #[test]
    fn fat12_boot_sector_golden() {
        let mut f = Files::new();
        f.add("hello.txt", b"hi\n".to_vec()).unwrap();
        let img = build(&f, &opts()).unwrap();
        assert_eq!(img.fat_type, FatType::Fat12);
        let bs = &img.bytes[..64];
        #[rustfmt::skip]
        let want: [u8; 62] = [
            0xEB, 0x3C, 0x90,                               // jump over the BPB, NOP
            b'P', b'H', b'A', b'S', b'E', b'B', b'T', b' ', // OEM name
            0x00, 0x02,                                     // 512 bytes per sector
            0x04,                                           // 4 sectors (2048 bytes) per cluster
            0x04, 0x00,                                     // 4 reserved sectors: data starts 2048-aligned
            0x02,                                           // two FATs
            0xE0, 0x00,                                     // 224 root entries (14 sectors)
            0x18, 0x00,                                     // 24 sectors: 20 before the data, one cluster
            0xF8,                                           // media: fixed disk
            0x01, 0x00,                                     // 1 sector per FAT
            0x3F, 0x00,                                     // 63 sectors per track
            0xFF, 0x00,                                     // 255 heads
            0x00, 0x00, 0x00, 0x00,                         // no hidden sectors
            0x00, 0x00, 0x00, 0x00,                         // 32-bit total unused
            0x80,                                           // drive 0x80
            0x00,                                           // reserved
            0x29,                                           // extended boot signature
            0x78, 0x56, 0x34, 0x12,                         // volume ID
            b'P', b'H', b'A', b'S', b'E', b' ', b' ', b' ', b' ', b' ', b' ', // label
            b'F', b'A', b'T', b'1', b'2', b' ', b' ', b' ', // type
        ];
        assert_eq!(&bs[..62], &want);
        assert_eq!(&img.bytes[510..512], &[0x55, 0xAA]);
        let fat = &img.bytes[4 * 512..4 * 512 + 6];
        // Entries 0 and 1 (F8 FF FF), then cluster 2 = end of chain (FF 0F).
        assert_eq!(fat, &[0xF8, 0xFF, 0xFF, 0xFF, 0x0F, 0x00]);
    }

    #[test]
    fn directory_entries_golden() {
        let mut f = Files::new();
        f.add("ldlinux.sys", vec![1; 600]).unwrap();
        f.add("Mixed.Case", vec![]).unwrap();
        let img = build(&f, &opts()).unwrap();
        let root = (4 + 2) * 512; // reserved + two one-sector FATs
        let d = &img.bytes[root..root + 32 * 5];
        // Volume label.
        assert_eq!(&d[0..11], b"PHASE      ");
        assert_eq!(d[11], attr::VOLUME_ID);
        // Sorted by name: "ldlinux.sys" first, then "Mixed.Case", which
        // needs a long entry: ord 0x41, "Mixed" in UCS-2.
        let lfn = &d[64..96];
        assert_eq!(lfn[0], 0x41); // last (and only) long entry, ordinal 1
        assert_eq!(&lfn[1..11], &[b'M', 0, b'i', 0, b'x', 0, b'e', 0, b'd', 0]);
        assert_eq!(lfn[11], attr::LONG_NAME);
        assert_eq!(
            &lfn[14..26],
            &[b'.', 0, b'C', 0, b'a', 0, b's', 0, b'e', 0, 0, 0]
        );
        assert_eq!(&lfn[28..32], &[0xFF, 0xFF, 0xFF, 0xFF]); // padding after the NUL
        let short = &d[96..128];
        assert_eq!(&short[0..11], b"MIXED~1 CAS");
        // The checksum of "MIXED~1 CAS" by the FAT specification's own loop
        // (§7.2: Sum = ((Sum & 1) ? 0x80 : 0) + (Sum >> 1) + *name++),
        // worked by hand, not by our function; mtools, which ignores a long
        // entry whose checksum does not match, checks it too
        // (tests/fat_referee.rs).
        assert_eq!(lfn[13], 0xAA);
        assert_eq!(&short[26..28], &[0, 0]); // empty file: no cluster
        // "ldlinux.sys": an 8.3 name in lower case, flagged, no long entry.
        let ld = &d[32..64];
        #[rustfmt::skip]
        let want: [u8; 32] = [
            b'L', b'D', b'L', b'I', b'N', b'U', b'X', b' ', b'S', b'Y', b'S', // name
            0x20,                   // archive
            0x18,                   // lower-case base and extension
            0x00,                   // creation tenths
            0xAA, 0xB1,             // 22:13:20 → (22<<11)|(13<<5)|10
            0x6E, 0x57,             // 2023-11-14 → (43<<9)|(11<<5)|14
            0x6E, 0x57,             // access date
            0x00, 0x00,             // cluster high
            0xAA, 0xB1,             // write time
            0x6E, 0x57,             // write date
            0x02, 0x00,             // first cluster 2
            0x58, 0x02, 0x00, 0x00, // 600 bytes
        ];
        assert_eq!(ld, &want);
        let e = img.files["ldlinux.sys"];
        assert_eq!(e.len, 600);
        assert_eq!(
            &img.bytes[e.offset as usize..e.offset as usize + 600],
            &[1; 600][..]
        );
        assert_eq!(e.offset % 2048, 0);
    }

    #[test]
    fn long_names_get_unique_short_names() {
        let used: BTreeSet<[u8; 11]> = [*b"VERYLO~1DTB"].into();
        assert_eq!(
            &generated_short_name("very-long-name.dtb", &used),
            b"VERY-L~1DTB"
        );
        assert_eq!(
            &generated_short_name("verylongname.dtb", &used),
            b"VERYLO~2DTB"
        );
        assert_eq!(
            &generated_short_name(".hidden", &BTreeSet::new()),
            b"HIDDEN~1   "
        );
        assert_eq!(plain_short_name("BOOTX64.EFI"), Some((*b"BOOTX64 EFI", 0)));
        assert_eq!(
            plain_short_name("syslinux.cfg"),
            Some((*b"SYSLINUXCFG", 0x18))
        );
        assert_eq!(plain_short_name("EFI"), Some((*b"EFI        ", 0)));
        assert_eq!(plain_short_name("Linux"), None);
        assert_eq!(plain_short_name("a.b.c"), None);
    }

    #[test]
    fn types_follow_cluster_counts() {
        let mut f = Files::new();
        f.add("big", vec![0; 20 << 20]).unwrap();
        let img = build(&f, &opts()).unwrap();
        assert_eq!(img.fat_type, FatType::Fat16);
        let img = build(
            &f,
            &FatOptions {
                fat_type: Some(FatType::Fat32),
                cluster_size: Some(512),
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(img.fat_type, FatType::Fat32);
        assert!(img.clusters >= 65541);
        // Backup boot sector and FSInfo match the originals.
        assert_eq!(img.bytes[..1024], img.bytes[6 * 512..8 * 512]);
    }

    #[test]
    fn too_small_is_refused_with_the_needed_size() {
        let mut f = Files::new();
        f.add("k", vec![0; 1 << 20]).unwrap();
        let err = build(
            &f,
            &FatOptions {
                size: Some(512 << 10),
                ..opts()
            },
        )
        .unwrap_err();
        match err {
            FatError::TooSmall { size, needed } => {
                assert_eq!(size, 512 << 10);
                assert!(needed > 1 << 20, "{needed}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fixed_size_is_exact() {
        let mut f = Files::new();
        f.add("EFI/BOOT/BOOTX64.EFI", vec![7; 5000]).unwrap();
        for size in [1u64 << 20, 33 << 20, 100 << 20] {
            let img = build(
                &f,
                &FatOptions {
                    size: Some(size),
                    ..opts()
                },
            )
            .unwrap();
            assert_eq!(img.bytes.len() as u64, size);
        }
    }

    #[test]
    fn names_that_collide_or_are_invalid_are_refused() {
        let mut f = Files::new();
        f.add("EFI/boot/x", vec![]).unwrap();
        assert_eq!(
            f.add("efi/BOOT/X", vec![]),
            Err(FatError::Duplicate {
                path: "efi/BOOT/X".into()
            })
        );
        assert!(matches!(
            f.add("a/b?c", vec![]),
            Err(FatError::BadName { .. })
        ));
        assert!(matches!(
            f.add("EFI/boot/x/y", vec![]),
            Err(FatError::NotADirectory { .. })
        ));
        assert!(matches!(f.add("/", vec![]), Err(FatError::BadPath(_))));
    }

    #[test]
    fn dos_dates() {
        assert_eq!(dos_datetime(0), (0x0021, 0)); // clamped to 1980-01-01
        assert_eq!(dos_datetime(1_700_000_000), (0x576E, 0xB1AA));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
    }
}
