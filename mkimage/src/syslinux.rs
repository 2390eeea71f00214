//! Installing syslinux on a FAT volume, as its installer does, without it.
//!
//! An install is: `ldlinux.sys` (the loader core, followed by two sectors of
//! ADV, syslinux's small persistent store) written as a file; the volume
//! boot sector's jump and code replaced by syslinux's, keeping the BPB; and
//! both patched with where the file's sectors are — the boot sector learns
//! the first sector, the core's patch area the rest as extents, the ADV
//! sectors, the directory it lives in and a checksum
//! (syslinux 6 `libinstaller/syslxmod.c`, `syslxint.h`).
//!
//! Debian ships neither `ldlinux.sys` nor its boot sector as files: both are
//! compiled into the installer `/usr/bin/syslinux` (package `syslinux`), as
//! `bin2c` arrays that lie one after another in the ELF's `.data` — boot
//! sector, `ldlinux.sys`, `ldlinux.c32` — with their lengths in `.rodata`.
//! [`Syslinux::from_installer`] finds them by what they are, not by offset:
//! the boot sector by its jump, OEM name "SYSLINUX" and 55 AA; `ldlinux.sys`
//! right after it by its banner and LDLINUX_MAGIC patch area; `ldlinux.c32`
//! by its ELF header, whose own size and the gap before it must both appear
//! in `.rodata` as the installer's length constants. Any mismatch is an
//! error naming what was not found. The installer's own `ldlinux.c32` is
//! used too, so core and module always come from the same build.

use thiserror::Error;

use crate::fat::Extent;

pub const LDLINUX_MAGIC: u32 = 0x3EB2_02FE;
const ADV_MAGIC1: u32 = 0x5A2D_2FA5;
const ADV_MAGIC2: u32 = 0xA304_1767;
const ADV_MAGIC3: u32 = 0xDD28_BF64;
const SECTOR: usize = 512;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SyslinuxError {
    #[error("{what} is not a 64-bit little-endian ELF file with section headers")]
    NotElf { what: String },
    #[error("{what} has no {section} section")]
    NoSection { what: String, section: &'static str },
    #[error("{what}: {missing} not found; is it Debian's syslinux installer (package syslinux)?")]
    NotFound { what: String, missing: &'static str },
    #[error("ldlinux.sys has no patch area (LDLINUX_MAGIC) in its first sector")]
    NoPatchArea,
    #[error("ldlinux.sys patch area points outside the image ({field} = {value})")]
    BadPatchArea { field: &'static str, value: usize },
    #[error("ldlinux.sys is {len} bytes in the volume, not the {want} the install needs")]
    WrongLength { len: u64, want: u64 },
    #[error("ldlinux.sys needs {needed} sector extents, the core has room for {room}")]
    TooManyExtents { needed: usize, room: usize },
    #[error("the install directory {dir:?} is longer than the core's {room}-byte field")]
    DirTooLong { dir: String, room: usize },
    #[error("the volume is {len} bytes, too short for its boot sector and ldlinux.sys")]
    VolumeTooShort { len: usize },
}

/// The pieces of syslinux an install needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syslinux {
    /// The 512-byte boot sector (`ldlinux.bss`).
    pub boot_sector: Vec<u8>,
    /// `ldlinux.sys` without the ADV.
    pub ldlinux_sys: Vec<u8>,
    pub ldlinux_c32: Vec<u8>,
}

struct ElfSection {
    offset: usize,
    size: usize,
}

fn elf64_sections(b: &[u8], what: &str) -> Result<Vec<(String, ElfSection)>, SyslinuxError> {
    let not = || SyslinuxError::NotElf {
        what: what.to_owned(),
    };
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(not());
    }
    let u16_at = |at: usize| b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
    };
    let u64_at = |at: usize| {
        b.get(at..at + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8")))
    };
    let shoff = u64_at(0x28).ok_or_else(not)? as usize;
    let shentsize = u16_at(0x3A).ok_or_else(not)? as usize;
    let shnum = u16_at(0x3C).ok_or_else(not)? as usize;
    let shstrndx = u16_at(0x3E).ok_or_else(not)? as usize;
    if shentsize < 64 || shnum == 0 || shstrndx >= shnum {
        return Err(not());
    }
    let header = |i: usize| -> Option<(u32, ElfSection)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(h)?,
            ElfSection {
                offset: u64_at(h + 0x18)? as usize,
                size: u64_at(h + 0x20)? as usize,
            },
        ))
    };
    let (_, strtab) = header(shstrndx).ok_or_else(not)?;
    let names = b
        .get(strtab.offset..strtab.offset.saturating_add(strtab.size))
        .ok_or_else(not)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let (name_off, s) = header(i).ok_or_else(not)?;
        let name = names
            .get(name_off as usize..)
            .and_then(|n| n.split(|&c| c == 0).next())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        out.push((name, s));
    }
    Ok(out)
}

/// Size of a 32-bit ELF file from its header: section headers come last.
fn elf32_size(b: &[u8]) -> Option<usize> {
    if b.get(..4)? != b"\x7fELF" || *b.get(4)? != 1 {
        return None;
    }
    let shoff = u32::from_le_bytes(b.get(0x20..0x24)?.try_into().ok()?) as usize;
    let shentsize = u16::from_le_bytes(b.get(0x2E..0x30)?.try_into().ok()?) as usize;
    let shnum = u16::from_le_bytes(b.get(0x30..0x32)?.try_into().ok()?) as usize;
    shoff.checked_add(shentsize * shnum)
}

fn find_magic(image: &[u8], limit: usize) -> Option<usize> {
    (0..limit.min(image.len().saturating_sub(4)))
        .step_by(4)
        .find(|&i| u32::from_le_bytes(image[i..i + 4].try_into().expect("4")) == LDLINUX_MAGIC)
}

impl Syslinux {
    /// Finds the boot sector, `ldlinux.sys` and `ldlinux.c32` inside the
    /// syslinux installer binary (see the module comment).
    pub fn from_installer(b: &[u8], what: &str) -> Result<Syslinux, SyslinuxError> {
        let sections = elf64_sections(b, what)?;
        let section = |name: &'static str| {
            sections
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s)
                .ok_or(SyslinuxError::NoSection {
                    what: what.to_owned(),
                    section: name,
                })
        };
        let data_s = section(".data")?;
        let rodata_s = section(".rodata")?;
        let not_found = |missing| SyslinuxError::NotFound {
            what: what.to_owned(),
            missing,
        };
        let data = b
            .get(data_s.offset..data_s.offset + data_s.size)
            .ok_or(not_found(".data contents"))?;
        let rodata = b
            .get(rodata_s.offset..rodata_s.offset + rodata_s.size)
            .ok_or(not_found(".rodata contents"))?;
        let rodata_has = |v: usize| {
            u32::try_from(v).is_ok_and(|v| {
                rodata
                    .chunks_exact(4)
                    .any(|c| u32::from_le_bytes(c.try_into().expect("4")) == v)
            })
        };

        // The boot sector: EB xx 90 "SYSLINUX", 55 AA at 510.
        let bss = data
            .windows(8)
            .enumerate()
            .filter(|(_, w)| *w == b"SYSLINUX")
            .map(|(i, _)| i.wrapping_sub(3))
            .find(|&s| {
                data.get(s..s + SECTOR).is_some_and(|bs| {
                    bs[0] == 0xEB && bs[2] == 0x90 && bs[510] == 0x55 && bs[511] == 0xAA
                })
            })
            .ok_or(not_found("the syslinux boot sector"))?;
        let sys = bss + SECTOR;
        let rest = &data[sys..];
        if !rest.starts_with(b"\r\nSYSLINUX ") || find_magic(rest, SECTOR).is_none() {
            return Err(not_found("ldlinux.sys after the boot sector"));
        }
        // ldlinux.c32 follows at the next ELF header on a 32-byte boundary.
        let c32_rel = (SECTOR..rest.len())
            .step_by(32)
            .find(|&i| rest[i..].starts_with(b"\x7fELF\x01\x01\x01"))
            .ok_or(not_found("ldlinux.c32 after ldlinux.sys"))?;
        let sys_len = c32_rel;
        let c32 = &rest[c32_rel..];
        let c32_len = elf32_size(c32)
            .filter(|&l| l <= c32.len())
            .ok_or(not_found("a complete ldlinux.c32"))?;
        if !rodata_has(SECTOR) || !rodata_has(sys_len) || !rodata_has(c32_len) {
            return Err(not_found(
                "the installer's length constants for ldlinux.sys and ldlinux.c32 in .rodata",
            ));
        }
        Ok(Syslinux {
            boot_sector: data[bss..sys].to_vec(),
            ldlinux_sys: rest[..sys_len].to_vec(),
            ldlinux_c32: c32[..c32_len].to_vec(),
        })
    }

    /// The file to store as `ldlinux.sys`: the core plus two ADV sectors.
    pub fn ldlinux_sys_file(&self) -> Vec<u8> {
        let mut f = self.ldlinux_sys.clone();
        f.resize(self.ldlinux_sys.len().div_ceil(SECTOR) * SECTOR, 0);
        let mut adv = [0u8; SECTOR];
        adv[0..4].copy_from_slice(&ADV_MAGIC1.to_le_bytes()); // head
        // The checksum makes the data words sum to ADV_MAGIC2; they are
        // all zero in an empty ADV.
        adv[4..8].copy_from_slice(&ADV_MAGIC2.to_le_bytes());
        adv[508..512].copy_from_slice(&ADV_MAGIC3.to_le_bytes()); // tail
        f.extend_from_slice(&adv);
        f.extend_from_slice(&adv);
        f
    }

    /// Patches an installed volume: `volume` is the whole FAT volume (its
    /// boot sector first), `file` where `ldlinux_sys_file()` landed in it,
    /// `dir` the directory holding it (e.g. "/syslinux").
    pub fn install(&self, volume: &mut [u8], file: Extent, dir: &str) -> Result<(), SyslinuxError> {
        if (file.offset + file.len) as usize > volume.len() || (file.offset as usize) < SECTOR {
            return Err(SyslinuxError::VolumeTooShort { len: volume.len() });
        }
        let (head, rest) = volume.split_at_mut(file.offset as usize);
        self.install_parts(head, &mut rest[..file.len as usize], file, dir)
    }

    /// [`Syslinux::install`] on the parts of a volume it changes, for a
    /// volume that is never one buffer: `reserved` is the volume from its
    /// boot sector on (at least the reserved sectors, which hold the FAT32
    /// backup boot sector), `ldlinux` the data of the file `file` describes.
    pub fn install_parts(
        &self,
        reserved: &mut [u8],
        ldlinux: &mut [u8],
        file: Extent,
        dir: &str,
    ) -> Result<(), SyslinuxError> {
        let image_len = self.ldlinux_sys.len();
        let nsect = image_len.div_ceil(SECTOR) + 2;
        let want = self.ldlinux_sys_file().len() as u64;
        if file.len != want || ldlinux.len() as u64 != want {
            return Err(SyslinuxError::WrongLength {
                len: file.len.min(ldlinux.len() as u64),
                want,
            });
        }
        if reserved.len() < SECTOR {
            return Err(SyslinuxError::VolumeTooShort {
                len: reserved.len(),
            });
        }
        // The FAT writer stores every file contiguously, sector-aligned.
        let first = file.offset / SECTOR as u64;
        let sectors: Vec<u64> = (first..first + nsect as u64).collect();

        let mut image = self.ldlinux_sys.clone();
        let mut bs = self.boot_sector.clone();
        let patch = find_magic(&image, SECTOR).ok_or(SyslinuxError::NoPatchArea)?;
        let get16 = |img: &[u8], at: usize| u16::from_le_bytes([img[at], img[at + 1]]) as usize;
        let epa = get16(&image, patch + 22);
        if epa + 20 > image.len() {
            return Err(SyslinuxError::BadPatchArea {
                field: "epaoffset",
                value: epa,
            });
        }
        let field = |name: &'static str, at: usize, len: usize, limit: usize| {
            let v = get16(&image, epa + at);
            if v + len > limit {
                Err(SyslinuxError::BadPatchArea {
                    field: name,
                    value: v,
                })
            } else {
                Ok(v)
            }
        };
        let adv_ptrs = field("advptroffset", 0, 16, image_len)?;
        let dir_off = field("diroffset", 2, 0, image_len)?;
        let dir_len = get16(&image, epa + 4);
        let ext_off = field("secptroffset", 10, 0, image_len)?;
        let ext_cnt = get16(&image, epa + 12);
        let sect1 = field("sect1ptr0", 14, 4, 510)?;
        let sect1_hi = field("sect1ptr1", 16, 4, 510)?;

        // The boot sector loads the first sector of ldlinux.sys itself.
        bs[sect1..sect1 + 4].copy_from_slice(&(sectors[0] as u32).to_le_bytes());
        bs[sect1_hi..sect1_hi + 4].copy_from_slice(&((sectors[0] >> 32) as u32).to_le_bytes());

        // Totals: sectors of the core (not counting the ADV), ADV sectors,
        // dwords the checksum covers.
        image[patch + 8..patch + 10].copy_from_slice(&((nsect - 2) as u16).to_le_bytes());
        image[patch + 10..patch + 12].copy_from_slice(&2u16.to_le_bytes());
        image[patch + 12..patch + 16].copy_from_slice(&((image_len / 4) as u32).to_le_bytes());

        // Extents for the sectors after the first, up to the ADV.
        let extents = extents(&sectors[1..nsect - 2]);
        if extents.len() > ext_cnt || ext_off + 10 * ext_cnt > image_len {
            return Err(SyslinuxError::TooManyExtents {
                needed: extents.len(),
                room: ext_cnt,
            });
        }
        image[ext_off..ext_off + 10 * ext_cnt].fill(0);
        for (i, (lba, len)) in extents.iter().enumerate() {
            let at = ext_off + 10 * i;
            image[at..at + 8].copy_from_slice(&lba.to_le_bytes());
            image[at + 8..at + 10].copy_from_slice(&len.to_le_bytes());
        }
        image[adv_ptrs..adv_ptrs + 8].copy_from_slice(&sectors[nsect - 2].to_le_bytes());
        image[adv_ptrs + 8..adv_ptrs + 16].copy_from_slice(&sectors[nsect - 1].to_le_bytes());

        if dir.len() + 1 > dir_len || dir_off + dir_len > image_len {
            return Err(SyslinuxError::DirTooLong {
                dir: dir.to_owned(),
                room: dir_len,
            });
        }
        image[dir_off..dir_off + dir_len].fill(0);
        image[dir_off..dir_off + dir.len()].copy_from_slice(dir.as_bytes());

        // Checksum: all dwords of the core sum to LDLINUX_MAGIC.
        image[patch + 16..patch + 20].fill(0);
        let sum = image[..image_len / 4 * 4]
            .chunks_exact(4)
            .fold(0u32, |s, c| {
                s.wrapping_add(u32::from_le_bytes(c.try_into().expect("4")))
            });
        image[patch + 16..patch + 20]
            .copy_from_slice(&LDLINUX_MAGIC.wrapping_sub(sum).to_le_bytes());

        ldlinux[..image_len].copy_from_slice(&image);

        // syslinux's jump and OEM name, the volume's BPB, syslinux's code.
        let volume = reserved;
        volume[..11].copy_from_slice(&bs[..11]);
        volume[90..510].copy_from_slice(&bs[90..510]);
        // FAT32 keeps a backup boot sector (BPB_BkBootSec) that must match.
        let fat32 = u16::from_le_bytes([volume[22], volume[23]]) == 0;
        let backup = u16::from_le_bytes([volume[50], volume[51]]) as usize;
        if fat32 && backup != 0 && backup * SECTOR + SECTOR <= volume.len() {
            let (head, tail) = volume.split_at_mut(backup * SECTOR);
            tail[..SECTOR].copy_from_slice(&head[..SECTOR]);
        }
        Ok(())
    }
}

/// Groups sectors into (first LBA, count) runs the core loads with one
/// read each, as syslinux's `generate_extents` does: consecutive sectors,
/// under 64 KiB per run, each sector within one 64 KiB segment of the load
/// address (which starts at 0x8000; the first sector of ldlinux.sys, loaded
/// by the boot sector at 0x7E00, is not in the list).
fn extents(sectors: &[u64]) -> Vec<(u64, u16)> {
    let mut out: Vec<(u64, u16)> = Vec::new();
    let mut addr: u32 = 0x8000;
    let mut base = addr;
    for &s in sectors {
        if let Some((lba, len)) = out.last_mut() {
            let bytes = (u32::from(*len) + 1) * SECTOR as u32;
            if s == *lba + u64::from(*len)
                && bytes < 65536
                && (addr ^ (base + bytes - 1)) & 0xFFFF_0000 == 0
            {
                *len += 1;
                addr += SECTOR as u32;
                continue;
            }
        }
        base = addr;
        out.push((s, 1));
        addr += SECTOR as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_split_at_64k_load_boundaries() {
        // A run stops below 64 KiB: 127 sectors.
        let sectors: Vec<u64> = (100..400).collect();
        assert_eq!(extents(&sectors), [(100, 127), (227, 127), (354, 46)]);
        // A gap starts a new extent too.
        assert_eq!(extents(&[5, 6, 9]), [(5, 2), (9, 1)]);
    }

    #[test]
    fn adv_sectors_golden() {
        let s = Syslinux {
            boot_sector: vec![0; 512],
            ldlinux_sys: vec![0; 1000],
            ldlinux_c32: vec![],
        };
        let f = s.ldlinux_sys_file();
        assert_eq!(f.len(), 1024 + 1024);
        let adv = &f[1024..1536];
        assert_eq!(&adv[0..4], &[0xA5, 0x2F, 0x2D, 0x5A]); // ADV_MAGIC1
        assert_eq!(&adv[4..8], &[0x67, 0x17, 0x04, 0xA3]); // checksum = ADV_MAGIC2 - 0
        assert_eq!(&adv[508..512], &[0x64, 0xBF, 0x28, 0xDD]); // ADV_MAGIC3
        assert_eq!(&f[1024..1536], &f[1536..]);
    }

    fn installer() -> Option<Syslinux> {
        let path = phase_testkit::file(
            "/usr/bin/syslinux",
            "syslinux extraction",
            "Debian package syslinux",
        )?;
        let bytes = std::fs::read(&path).unwrap();
        Some(Syslinux::from_installer(&bytes, "/usr/bin/syslinux").unwrap())
    }

    #[test]
    fn pieces_come_out_of_debians_installer() {
        let Some(s) = installer() else { return };
        assert_eq!(s.boot_sector.len(), 512);
        assert_eq!(&s.boot_sector[3..11], b"SYSLINUX");
        assert!(s.ldlinux_sys.starts_with(b"\r\nSYSLINUX "));
        assert_eq!(s.ldlinux_sys.len() % 512, 0);
        assert!(s.ldlinux_c32.starts_with(b"\x7fELF"));
    }

    #[test]
    fn install_patches_sector_map_and_checksum() {
        let Some(s) = installer() else { return };
        let file = s.ldlinux_sys_file();
        let mut volume = vec![0u8; 4096 * 512];
        let offset = 1000 * 512;
        volume[offset..offset + file.len()].copy_from_slice(&file);
        volume[22] = 1; // not FAT32
        s.install(
            &mut volume,
            Extent {
                offset: offset as u64,
                len: file.len() as u64,
            },
            "/syslinux",
        )
        .unwrap();
        let image = &volume[offset..offset + s.ldlinux_sys.len()];
        let sum = image.chunks_exact(4).fold(0u32, |a, c| {
            a.wrapping_add(u32::from_le_bytes(c.try_into().unwrap()))
        });
        assert_eq!(sum, LDLINUX_MAGIC);
        let patch = find_magic(image, 512).unwrap();
        let nsect = s.ldlinux_sys.len() / 512 + 2;
        assert_eq!(
            u16::from_le_bytes([image[patch + 8], image[patch + 9]]) as usize,
            nsect - 2
        );
        // The boot sector now points at the file's first sector.
        let epa = u16::from_le_bytes([image[patch + 22], image[patch + 23]]) as usize;
        let sect1 = u16::from_le_bytes([image[epa + 14], image[epa + 15]]) as usize;
        assert_eq!(&volume[sect1..sect1 + 4], &1000u32.to_le_bytes());
        assert_eq!(&volume[..3], &s.boot_sector[..3]);
        // The first extent starts right after the first sector.
        let ext = u16::from_le_bytes([image[epa + 10], image[epa + 11]]) as usize;
        assert_eq!(&image[ext..ext + 8], &1001u64.to_le_bytes());
    }

    #[test]
    fn other_binaries_are_refused() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(matches!(
            Syslinux::from_installer(&me, "test binary"),
            Err(SyslinuxError::NotFound { .. })
        ));
        assert!(matches!(
            Syslinux::from_installer(b"#!/bin/sh", "script"),
            Err(SyslinuxError::NotElf { .. })
        ));
    }
}
