//! Remastering a distribution's ISO (`mkimage iso --into`): the new image
//! is the input, byte for byte, with new metadata appended and pointed at.
//!
//! Every original block stays where it was, so every file keeps its bytes
//! and its extent, and everything that names an extent by number — the El
//! Torito catalog, the boot info table in isolinux.bin, the isohybrid MBR
//! code's LBA of it, Rock Ridge continuation areas, the EFI image's MBR
//! and GPT partitions — stays true without being understood. Appended
//! after the input: new path tables and every directory of the primary
//! and (if present) Joliet trees, written again from their records' raw
//! bytes with the `/phase/` entries inserted and the edited menu files'
//! extents moved; the edited menu files; the kernels and initramfs. Then
//! the descriptors at block 16 on are patched to root the new trees and
//! count the new size, an isohybrid MBR partition or GPT that spanned the
//! old image is stretched to the new one, and a GPT gets its backup at the
//! new end. The old directories stay behind as unreferenced blocks.
//!
//! Output is a pure function of the input ISO, the added files and the
//! build time, and the input is read, never written.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;

use thiserror::Error;

use crate::distro_menu::{self, DistroMenuError};
use crate::iso9660::{both16, both32, dir_date, dir_size, iso_name};
use crate::isoread::{BLOCK, Platform, ReadAt, Tree, Volume};
use crate::menu::Menu;
use crate::pieces::Sink;

#[derive(Debug, Error)]
pub enum RemasterError {
    #[error("{what} already has {path:?}: it was remastered before, or uses the name itself")]
    Exists { what: String, path: String },
    #[error("{what}: {path:?} is under {parent:?}, which is a file")]
    NotADirectory {
        what: String,
        path: String,
        parent: String,
    },
    #[error("{what}: the file to replace {path:?} is not in the image")]
    Missing { what: String, path: String },
    #[error(
        "the remastered image would be {0} bytes, more than ISO9660's 32-bit block counts allow"
    )]
    TooLarge(u64),
    #[error("{what}: the GPT header at sector 1 is not valid: {reason}")]
    BadGpt { what: String, reason: String },
    #[error(transparent)]
    Menu(#[from] DistroMenuError),
    #[error(
        "{what} has neither an isolinux/syslinux configuration nor a grub.cfg where its boot loaders look; pass --entry-only to add the files without menu entries"
    )]
    NoMenus { what: String },
    #[error("reading {what}")]
    Read {
        what: String,
        #[source]
        error: io::Error,
    },
}

/// What to change: new files (path → index into `blobs`, so several paths
/// can share one blob) and files whose contents are replaced.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub blobs: Vec<Cow<'a, [u8]>>,
    /// New files, `/`-separated paths in the names Rock Ridge shows.
    pub add: Vec<(String, usize)>,
    /// Existing files (by primary-tree path) and their new contents.
    pub replace: Vec<(String, Vec<u8>)>,
    /// The directory records' time for new entries (seconds since 1970).
    pub time: u64,
}

/// The new image: the input's bytes with `patches` laid over them, then
/// `tail`; zeros elsewhere.
#[derive(Debug)]
pub struct Remaster<'a> {
    /// How many bytes of the input are copied.
    pub copied: u64,
    pub len: u64,
    patches: Vec<(u64, Vec<u8>)>,
    tail: Vec<(u64, Cow<'a, [u8]>)>,
    /// Where each added or replaced file landed (path, first block, bytes).
    pub placed: Vec<(String, u32, u64)>,
}

enum Target {
    Keep,
    Blob(usize),
    Replaced(usize),
    Dir(usize),
}

struct NRec {
    raw: Vec<u8>,
    target: Target,
}

struct NDir {
    dot: Vec<u8>,
    dotdot: Vec<u8>,
    parent: usize,
    records: Vec<NRec>,
    lba: u32,
    size: u64,
}

/// Which naming a tree uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    /// ISO9660 d-characters, with Rock Ridge fields when `rr`.
    Primary { rr: bool, skip: usize },
    /// UCS-2 names; `versions` when the tree's files carry `;1`.
    Joliet { versions: bool },
}

/// Lays out the remastered image of `vol`.
pub fn plan<'a>(
    vol: &Volume,
    src: &dyn ReadAt,
    changes: Changes<'a>,
    what: &str,
) -> Result<Remaster<'a>, RemasterError> {
    let date = dir_date(changes.time);
    // Menu files to replace, by their old extent: both trees list them.
    let mut replaced_lba: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, (path, _)) in changes.replace.iter().enumerate() {
        let rec = vol
            .primary
            .find(path)
            .filter(|r| !r.is_dir())
            .ok_or_else(|| RemasterError::Missing {
                what: what.to_owned(),
                path: path.clone(),
            })?;
        replaced_lba.insert(rec.lba, k);
    }

    let mut trees = vec![(
        &vol.primary,
        Names::Primary {
            rr: vol.rock_ridge,
            skip: vol.susp_skip,
        },
    )];
    if let Some(j) = &vol.joliet {
        // Writers differ on `;1` in Joliet names: new ones follow the tree.
        let versions = j
            .dirs
            .iter()
            .flat_map(|d| d.records.iter())
            .filter(|r| !r.is_dir())
            .any(|r| r.ident.ends_with(&[0, b';', 0, b'1']));
        trees.push((j, Names::Joliet { versions }));
    }
    let mut models = Vec::new();
    for (tree, names) in &trees {
        models.push(model(tree, *names, &changes, &replaced_lba, &date, what)?);
    }

    // Blocks: the input, then per tree its path tables and directories,
    // then the replaced files and the blobs.
    let copied = vol.len;
    let mut next = copied.div_ceil(BLOCK);
    let mut metadata: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut tables = Vec::new();
    for dirs in &mut models {
        let order = bfs(dirs);
        let pt_size = path_table(dirs, &order, false).len() as u64;
        let l = next;
        next += pt_size.div_ceil(BLOCK);
        let m = next;
        next += pt_size.div_ceil(BLOCK);
        for &d in &order {
            dirs[d].size = dir_size(&dir_lens(&dirs[d]));
            dirs[d].lba = block(next)?;
            next += dirs[d].size / BLOCK;
        }
        tables.push((l, m, pt_size, order));
    }
    let mut placed = Vec::new();
    let mut replaced_at = Vec::new();
    for (path, data) in &changes.replace {
        let lba = block(next)?;
        replaced_at.push((lba, data.len() as u64));
        placed.push((path.clone(), lba, data.len() as u64));
        next += (data.len() as u64).div_ceil(BLOCK);
    }
    let mut blob_at = Vec::new();
    for b in &changes.blobs {
        blob_at.push((block(next)?, b.len() as u64));
        next += (b.len() as u64).div_ceil(BLOCK);
    }
    for (path, k) in &changes.add {
        placed.push((path.clone(), blob_at[*k].0, blob_at[*k].1));
    }
    let gpt = vol.system_area.gpt;
    // A GPT's backup (its entry array and header) takes the last sectors;
    // the image ends on a MiB, as isohybrid images do.
    let reserve = if gpt {
        (gpt_array_len(src, what)? as u64 + 512).div_ceil(BLOCK)
    } else {
        0
    };
    let total_blocks = (next + reserve).div_ceil(512) * 512;
    let len = total_blocks * BLOCK;
    let total32 = block(total_blocks)?;

    for (t, dirs) in models.iter().enumerate() {
        let (l, m, pt_size, order) = &tables[t];
        metadata.push((l * BLOCK, path_table(dirs, order, false)));
        metadata.push((m * BLOCK, path_table(dirs, order, true)));
        for &d in order {
            metadata.push((
                u64::from(dirs[d].lba) * BLOCK,
                dir_bytes(dirs, d, &replaced_at, &blob_at),
            ));
        }
        // The descriptor: volume space size, path tables, root record.
        let desc = u64::from(trees[t].0.descriptor_lba) * BLOCK;
        let mut d = vec![0u8; BLOCK as usize];
        src.read_exact_at(&mut d, desc)
            .map_err(|error| RemasterError::Read {
                what: what.to_owned(),
                error,
            })?;
        d[80..88].copy_from_slice(&both32(total32));
        d[132..140].copy_from_slice(&both32(*pt_size as u32));
        d[140..144].copy_from_slice(&(*l as u32).to_le_bytes());
        d[144..148].fill(0);
        d[148..152].copy_from_slice(&(*m as u32).to_be_bytes());
        d[152..156].fill(0);
        d[158..166].copy_from_slice(&both32(dirs[0].lba));
        d[166..174].copy_from_slice(&both32(dirs[0].size as u32));
        metadata.push((desc, d));
    }

    let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut tail: Vec<(u64, Cow<'a, [u8]>)> = Vec::new();
    for (o, bytes) in metadata {
        if o < copied {
            patches.push((o, bytes));
        } else {
            tail.push((o, Cow::Owned(bytes)));
        }
    }
    for ((lba, _), (_, data)) in replaced_at.iter().zip(changes.replace) {
        tail.push((u64::from(*lba) * BLOCK, Cow::Owned(data)));
    }
    for ((lba, _), data) in blob_at.iter().zip(changes.blobs) {
        if !data.is_empty() {
            tail.push((u64::from(*lba) * BLOCK, data));
        }
    }

    // The system area.
    let mut sa = vec![0u8; 512];
    src.read_exact_at(&mut sa, 0)
        .map_err(|error| RemasterError::Read {
            what: what.to_owned(),
            error,
        })?;
    let sectors = len / 512;
    let old_sectors = u64::from(vol.blocks) * 4;
    let mut mbr_changed = false;
    if sa[510] == 0x55 && sa[511] == 0xAA {
        for i in 0..4 {
            let e = &mut sa[446 + 16 * i..462 + 16 * i];
            let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let count = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            // A partition that ran to the old end (the isohybrid whole-image
            // partition, or GPT's protective one) runs to the new end.
            if count > 0 && start + count >= old_sectors.min(vol.len / 512) {
                let new = u32::try_from(sectors.saturating_sub(start)).unwrap_or(u32::MAX);
                e[12..16].copy_from_slice(&new.to_le_bytes());
                // The end's CHS in the geometry the old end implies (heads
                // from its head number, sectors per track from its sector).
                let (heads, per_track) = (u64::from(e[5]) + 1, u64::from(e[6] & 0x3F));
                if per_track > 0 {
                    let last = start + u64::from(new) - 1;
                    let cyl = (last / (heads * per_track)).min(1023);
                    let head = (last / per_track) % heads;
                    let sec = last % per_track + 1;
                    e[5] = head as u8;
                    e[6] = sec as u8 | ((cyl >> 2) as u8 & 0xC0);
                    e[7] = cyl as u8;
                }
                mbr_changed = true;
            }
        }
    }
    if mbr_changed {
        patches.push((446, sa[446..510].to_vec()));
    }
    if gpt {
        let (primary, array, backup) = gpt_fixup(src, sectors, what)?;
        patches.push((512, primary.0));
        patches.push((primary.1, array.clone()));
        tail.push((
            (sectors - 1 - array.len() as u64 / 512) * 512,
            Cow::Owned(array),
        ));
        tail.push(((sectors - 1) * 512, Cow::Owned(backup)));
    }
    patches.sort_by_key(|p| p.0);
    tail.sort_by_key(|p| p.0);
    Ok(Remaster {
        copied,
        len,
        patches,
        tail,
        placed,
    })
}

fn block(n: u64) -> Result<u32, RemasterError> {
    u32::try_from(n).map_err(|_| RemasterError::TooLarge(n.saturating_mul(BLOCK)))
}

/// The size of the primary GPT's entry array, in whole sectors.
fn gpt_array_len(src: &dyn ReadAt, what: &str) -> Result<usize, RemasterError> {
    let mut h = [0u8; 92];
    src.read_exact_at(&mut h, 512)
        .map_err(|error| RemasterError::Read {
            what: what.to_owned(),
            error,
        })?;
    let count = u32::from_le_bytes([h[80], h[81], h[82], h[83]]) as usize;
    let size = u32::from_le_bytes([h[84], h[85], h[86], h[87]]) as usize;
    if !(128..=1024).contains(&size) || count == 0 || count * size > 128 * 1024 {
        return Err(RemasterError::BadGpt {
            what: what.to_owned(),
            reason: "its entry array is empty, or over 128 KiB".into(),
        });
    }
    Ok((count * size).div_ceil(512) * 512)
}

/// The primary GPT header and entry array, stretched to `sectors`: the
/// header's backup and last usable sector move to the new end, and every
/// partition that reached the old last usable sector ends as far before
/// the new one. Returns ((header, at 512), (array, its offset)), the
/// backup header.
#[allow(clippy::type_complexity)]
fn gpt_fixup(
    src: &dyn ReadAt,
    sectors: u64,
    what: &str,
) -> Result<((Vec<u8>, u64), Vec<u8>, Vec<u8>), RemasterError> {
    let bad = |reason: &str| RemasterError::BadGpt {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let read = |off: u64, len: usize| -> Result<Vec<u8>, RemasterError> {
        let mut b = vec![0u8; len];
        src.read_exact_at(&mut b, off)
            .map_err(|error| RemasterError::Read {
                what: what.to_owned(),
                error,
            })?;
        Ok(b)
    };
    let mut h = read(512, 512)?;
    let u32_at = |h: &[u8], at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let u64_at = |h: &[u8], at: usize| {
        u64::from_le_bytes([
            h[at],
            h[at + 1],
            h[at + 2],
            h[at + 3],
            h[at + 4],
            h[at + 5],
            h[at + 6],
            h[at + 7],
        ])
    };
    let header_size = u32_at(&h, 12) as usize;
    if !(92..=512).contains(&header_size) {
        return Err(bad("its header size is not between 92 and 512"));
    }
    let old_last_usable = u64_at(&h, 48);
    let entries_lba = u64_at(&h, 72);
    let count = u32_at(&h, 80) as usize;
    let entry_size = u32_at(&h, 84) as usize;
    if !(128..=1024).contains(&entry_size) || count == 0 || count * entry_size > 128 * 1024 {
        return Err(bad("its entry array is empty, or over 128 KiB"));
    }
    let array_len = (count * entry_size).div_ceil(512) * 512;
    let inside = entries_lba
        .checked_mul(512)
        .and_then(|o| o.checked_add(array_len as u64))
        .is_some_and(|end| end <= 32 * 1024);
    if entries_lba < 2 || !inside {
        return Err(bad("its entry array is not inside the system area"));
    }
    let mut array = read(entries_lba * 512, array_len)?;
    let backup_entries = sectors - 1 - (array_len as u64 / 512);
    let last_usable = backup_entries - 1;
    for i in 0..count {
        let e = &mut array[i * entry_size..(i + 1) * entry_size];
        let last = u64_at(e, 40);
        if e[..16].iter().any(|&b| b != 0) && last + 1 >= old_last_usable && last <= old_last_usable
        {
            let moved = last_usable - (old_last_usable - last);
            e[40..48].copy_from_slice(&moved.to_le_bytes());
        }
    }
    let array_crc = crc32fast::hash(&array[..count * entry_size]);
    let header = |h: &mut [u8], me: u64, alt: u64, entries: u64| {
        h[24..32].copy_from_slice(&me.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..header_size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    };
    let mut backup = h.clone();
    header(&mut h, 1, sectors - 1, entries_lba);
    header(&mut backup, sectors - 1, 1, backup_entries);
    Ok(((h, entries_lba * 512), array, backup))
}

/// A tree as directories to write again, with the additions inserted.
fn model(
    tree: &Tree,
    names: Names,
    changes: &Changes<'_>,
    replaced_lba: &BTreeMap<u32, usize>,
    date: &[u8; 7],
    what: &str,
) -> Result<Vec<NDir>, RemasterError> {
    let mut dirs: Vec<NDir> = tree
        .dirs
        .iter()
        .map(|d| NDir {
            dot: d.dot.clone(),
            dotdot: d.dotdot.clone(),
            parent: d.parent,
            records: d
                .records
                .iter()
                .map(|r| NRec {
                    raw: r.raw.clone(),
                    target: match (r.child, replaced_lba.get(&r.lba)) {
                        (Some(c), _) => Target::Dir(c),
                        (None, Some(&k)) if r.size > 0 => Target::Replaced(k),
                        _ => Target::Keep,
                    },
                })
                .collect(),
            lba: 0,
            size: 0,
        })
        .collect();
    // Names as the tree shows them, to find where an added path goes.
    let mut shown: Vec<Vec<(String, bool)>> = tree
        .dirs
        .iter()
        .map(|d| {
            d.records
                .iter()
                .map(|r| (r.name.clone(), r.is_dir()))
                .collect()
        })
        .collect();
    for (path, blob) in &changes.add {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut dir = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let so_far = parts[..=i].join("/");
            let existing = shown[dir]
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(part));
            match existing {
                Some(k) if !last && shown[dir][k].1 => {
                    // A directory we added earlier, or an original one.
                    let Target::Dir(child) = dirs[dir].records[k].target else {
                        return Err(RemasterError::NotADirectory {
                            what: what.to_owned(),
                            path: path.clone(),
                            parent: so_far,
                        });
                    };
                    dir = child;
                    // Adding to an original directory of the name is
                    // refused for the top level (`phase/` must be new).
                    if i == 0 && dir < tree.dirs.len() {
                        return Err(RemasterError::Exists {
                            what: what.to_owned(),
                            path: so_far,
                        });
                    }
                }
                Some(_) if !last => {
                    return Err(RemasterError::NotADirectory {
                        what: what.to_owned(),
                        path: path.clone(),
                        parent: so_far,
                    });
                }
                Some(_) => {
                    return Err(RemasterError::Exists {
                        what: what.to_owned(),
                        path: so_far,
                    });
                }
                None => {
                    let raw = new_record(part, !last, names, date);
                    let target = if last {
                        Target::Blob(*blob)
                    } else {
                        Target::Dir(dirs.len())
                    };
                    // Records stay sorted by identifier.
                    let ident = &raw[33..33 + usize::from(raw[32])];
                    let at = dirs[dir]
                        .records
                        .iter()
                        .position(|r| r.raw[33..33 + usize::from(r.raw[32])] > *ident)
                        .unwrap_or(dirs[dir].records.len());
                    dirs[dir].records.insert(at, NRec { raw, target });
                    shown[dir].insert(at, ((*part).to_owned(), !last));
                    if !last {
                        let child = dirs.len();
                        let dot = new_dot(&[0], names, date);
                        let dotdot = new_dot(&[1], names, date);
                        dirs.push(NDir {
                            dot,
                            dotdot,
                            parent: dir,
                            records: Vec::new(),
                            lba: 0,
                            size: 0,
                        });
                        shown.push(Vec::new());
                        dir = child;
                    }
                }
            }
        }
    }
    Ok(dirs)
}

/// Directory indices in path table order: breadth-first, children in
/// record order (which is identifier order), so by level, then parent
/// number, then name (ECMA-119 9.4).
fn bfs(dirs: &[NDir]) -> Vec<usize> {
    let mut order = vec![0];
    let mut i = 0;
    while i < order.len() {
        for r in &dirs[order[i]].records {
            if let Target::Dir(c) = r.target {
                order.push(c);
            }
        }
        i += 1;
    }
    order
}

fn dir_lens(d: &NDir) -> Vec<usize> {
    let mut lens = vec![d.dot.len(), d.dotdot.len()];
    lens.extend(d.records.iter().map(|r| r.raw.len()));
    lens
}

fn set_extent(raw: &mut [u8], lba: u32, size: u64) {
    raw[2..10].copy_from_slice(&both32(lba));
    // Sizes come from a 32-bit field or a file checked below 4 GiB.
    raw[10..18].copy_from_slice(&both32(size as u32));
}

fn dir_bytes(dirs: &[NDir], d: usize, replaced: &[(u32, u64)], blobs: &[(u32, u64)]) -> Vec<u8> {
    let dir = &dirs[d];
    let parent = &dirs[dir.parent];
    let mut out = vec![0u8; dir.size as usize];
    let mut at = 0usize;
    let mut put = |raw: &[u8]| {
        if at % BLOCK as usize + raw.len() > BLOCK as usize {
            at = at.div_ceil(BLOCK as usize) * BLOCK as usize;
        }
        out[at..at + raw.len()].copy_from_slice(raw);
        at += raw.len();
    };
    let mut dot = dir.dot.clone();
    set_extent(&mut dot, dir.lba, dir.size);
    put(&dot);
    let mut dotdot = dir.dotdot.clone();
    set_extent(&mut dotdot, parent.lba, parent.size);
    put(&dotdot);
    for r in &dir.records {
        let mut raw = r.raw.clone();
        match r.target {
            Target::Keep => {}
            Target::Dir(c) => set_extent(&mut raw, dirs[c].lba, dirs[c].size),
            Target::Replaced(k) => set_extent(&mut raw, replaced[k].0, replaced[k].1),
            Target::Blob(k) => {
                let (lba, len) = blobs[k];
                set_extent(&mut raw, if len == 0 { 0 } else { lba }, len);
            }
        }
        put(&raw);
    }
    out
}

fn path_table(dirs: &[NDir], order: &[usize], big_endian: bool) -> Vec<u8> {
    let mut number = vec![0u16; dirs.len()];
    for (n, &d) in order.iter().enumerate() {
        number[d] = (n + 1) as u16;
    }
    let mut out = Vec::new();
    for &d in order {
        let ident: Vec<u8> = if d == 0 {
            vec![0]
        } else {
            // The record in the parent that names this directory.
            dirs[dirs[d].parent]
                .records
                .iter()
                .find(|r| matches!(r.target, Target::Dir(c) if c == d))
                .map(|r| r.raw[33..33 + usize::from(r.raw[32])].to_vec())
                .unwrap_or_else(|| vec![0])
        };
        let parent = number[dirs[d].parent];
        out.push(ident.len() as u8);
        out.push(0);
        if big_endian {
            out.extend_from_slice(&dirs[d].lba.to_be_bytes());
            out.extend_from_slice(&parent.to_be_bytes());
        } else {
            out.extend_from_slice(&dirs[d].lba.to_le_bytes());
            out.extend_from_slice(&parent.to_le_bytes());
        }
        out.extend_from_slice(&ident);
        if ident.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

/// A directory record for an added file or directory (extent filled in
/// when written), with Rock Ridge PX and NM when the tree has them.
fn new_record(name: &str, dir: bool, names: Names, date: &[u8; 7]) -> Vec<u8> {
    let ident: Vec<u8> = match names {
        Names::Primary { .. } => {
            let mapped = iso_name(name, dir);
            mapped.into_bytes()
        }
        Names::Joliet { versions } => {
            let shown = if dir || !versions {
                name.to_owned()
            } else {
                format!("{name};1")
            };
            shown.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
        }
    };
    let mut su = Vec::new();
    if let Names::Primary { rr: true, skip } = names {
        su.resize(skip, 0);
        su.extend_from_slice(&rr_fields(name, dir));
    }
    record(&ident, dir, &su, date)
}

/// `.` (ident 0) or `..` (ident 1) of an added directory.
fn new_dot(ident: &[u8], names: Names, date: &[u8; 7]) -> Vec<u8> {
    let mut su = Vec::new();
    if let Names::Primary { rr: true, skip } = names {
        su.resize(skip, 0);
        su.extend_from_slice(&px(true));
    }
    record(ident, true, &su, date)
}

fn record(ident: &[u8], dir: bool, su: &[u8], date: &[u8; 7]) -> Vec<u8> {
    let n = 33 + ident.len() + (1 - ident.len() % 2);
    let mut r = vec![0u8; n];
    r[18..25].copy_from_slice(date);
    r[25] = if dir { 0x02 } else { 0x00 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = ident.len() as u8;
    r[33..33 + ident.len()].copy_from_slice(ident);
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

/// Rock Ridge `PX` (RRIP 1.10: mode, links, uid, gid): read-only, owned
/// by root.
fn px(dir: bool) -> Vec<u8> {
    let (mode, links) = if dir { (0o40555, 2) } else { (0o100444, 1) };
    let mut v = vec![b'P', b'X', 36, 1];
    for field in [mode, links, 0, 0] {
        v.extend_from_slice(&both32(field));
    }
    v
}

fn rr_fields(name: &str, dir: bool) -> Vec<u8> {
    let mut v = px(dir);
    v.extend_from_slice(&[b'N', b'M', (5 + name.len()) as u8, 1, 0]);
    v.extend_from_slice(name.as_bytes());
    v
}

impl Remaster<'_> {
    /// Streams the image: the input in 1 MiB pieces with the patches laid
    /// over, then the tail.
    pub fn write_to(&self, src: &dyn ReadAt, sink: &mut dyn Sink) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut buf = vec![0u8; CHUNK as usize];
        let mut at = 0u64;
        while at < self.copied {
            let n = CHUNK.min(self.copied - at);
            let b = &mut buf[..n as usize];
            src.read_exact_at(b, at)?;
            for (o, p) in &self.patches {
                let (start, end) = (*o, *o + p.len() as u64);
                if start < at + n && end > at {
                    let from = start.max(at);
                    let to = end.min(at + n);
                    b[(from - at) as usize..(to - at) as usize]
                        .copy_from_slice(&p[(from - start) as usize..(to - start) as usize]);
                }
            }
            sink.data(b)?;
            at += n;
        }
        for (o, data) in &self.tail {
            if *o < at {
                return Err(io::Error::other("remaster pieces overlap"));
            }
            sink.zeros(o - at)?;
            sink.data(data)?;
            at = o + data.len() as u64;
        }
        sink.zeros(self.len - at)
    }
}

/// Where a remastered image keeps each variant's kernel and the
/// initramfs, as the menus name them.
pub fn phase_paths(variant: &str) -> (String, String) {
    let dir = format!("phase/{}", crate::menu::dir_name(variant));
    (format!("{dir}/vmlinuz"), format!("{dir}/initrd"))
}

/// What `mkimage iso --into` adds to a distribution's ISO.
#[derive(Debug)]
pub struct Embed<'a> {
    /// (variant, kernel) pairs, in menu order.
    pub kernels: Vec<(String, &'a [u8])>,
    pub initrd: &'a [u8],
    pub menu: &'a Menu,
    /// Add the files, leave the menus alone.
    pub entry_only: bool,
    /// Make the menus boot the menu's default entry unattended.
    pub phase_default: bool,
    pub time: u64,
}

/// The remastered image and the menu files edited.
pub fn embed<'a>(
    vol: &Volume,
    src: &dyn ReadAt,
    e: &Embed<'a>,
    what: &str,
) -> Result<(Remaster<'a>, Vec<String>), RemasterError> {
    let mut replace = Vec::new();
    if !e.entry_only {
        let read_menu = |path: &str| -> Result<Option<Vec<u8>>, RemasterError> {
            let Some(rec) = vol.primary.find(path).filter(|r| !r.is_dir()) else {
                return Ok(None);
            };
            if u64::from(rec.size) > distro_menu::MAX_MENU {
                return Err(DistroMenuError::TooLarge {
                    path: path.to_owned(),
                    len: u64::from(rec.size),
                    max: distro_menu::MAX_MENU,
                }
                .into());
            }
            let mut buf = vec![0u8; rec.size as usize];
            src.read_exact_at(&mut buf, u64::from(rec.lba) * BLOCK)
                .map_err(|error| RemasterError::Read {
                    what: format!("{path} in {what}"),
                    error,
                })?;
            Ok(Some(buf))
        };
        let bios = vol
            .boot
            .iter()
            .filter(|b| b.platform == Platform::X86 && b.media == 0)
            .find_map(|b| b.path.clone());
        if let Some(boot) = &bios {
            for path in distro_menu::syslinux_candidates(boot) {
                if let Some(bytes) = read_menu(&path)? {
                    let text = distro_menu::text(&path, &bytes)?;
                    let new = distro_menu::syslinux(&path, text, e.menu, e.phase_default)?;
                    replace.push((path, new.into_bytes()));
                    break;
                }
            }
        }
        for path in distro_menu::GRUB_CANDIDATES {
            if let Some(bytes) = read_menu(path)? {
                let text = distro_menu::text(path, &bytes)?;
                let new = distro_menu::grub(path, text, e.menu, e.phase_default)?;
                replace.push((path.to_owned(), new.into_bytes()));
            }
        }
        if replace.is_empty() {
            return Err(RemasterError::NoMenus {
                what: what.to_owned(),
            });
        }
    }
    let edited = replace.iter().map(|(p, _)| p.clone()).collect();
    let mut changes = Changes {
        blobs: vec![Cow::Borrowed(e.initrd)],
        time: e.time,
        replace,
        ..Changes::default()
    };
    for (name, kernel) in &e.kernels {
        let (k, i) = phase_paths(name);
        changes.blobs.push(Cow::Borrowed(kernel));
        changes.add.push((k, changes.blobs.len() - 1));
        changes.add.push((i, 0));
    }
    Ok((plan(vol, src, changes, what)?, edited))
}

/// What the fuzz target (`fuzz/fuzz_targets/isoread.rs`) and the seed
/// replay run: read `data` as an ISO and, if it reads, remaster it with a
/// small kernel and initramfs into memory. Nothing may panic.
pub fn fuzz_input(data: &[u8]) {
    let src = data.to_vec();
    let Ok(vol) = crate::isoread::read(&src, "fuzz input") else {
        return;
    };
    let Ok(menu) = Menu::new(&["linux".into()], "console=ttyS0", "", 1, false) else {
        return;
    };
    let kernel = [0x4Bu8; 3000];
    let e = Embed {
        kernels: vec![("linux".into(), &kernel[..])],
        initrd: &[0x49; 100],
        menu: &menu,
        entry_only: false,
        phase_default: true,
        time: 0,
    };
    if let Ok((image, _)) = embed(&vol, &src, &e, "fuzz input") {
        let mut out = Vec::new();
        let _ = image.write_to(&src, &mut out);
    }
}
