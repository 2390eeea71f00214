//! Partition tables: the GUID Partition Table (UEFI 2.10 §5.3) with its
//! protective or hybrid MBR (§5.2), and plain MBR tables for isohybrid
//! images.
//!
//! A GPT disk has the MBR in LBA 0, the header in LBA 1 and 128 entries of
//! 128 bytes in LBAs 2–33; the same entries and a header pointing back sit in
//! the last 33 LBAs. Both headers carry CRC32s of themselves and of the
//! entry array. GUIDs are derived from a seed by the caller, so the same
//! inputs give the same disk.

use sha2::{Digest, Sha256};
use thiserror::Error;

pub const SECTOR: u64 = 512;
/// Entries in the partition array, and the array's size in sectors.
pub const ENTRIES: u32 = 128;
pub const ENTRY_SIZE: u32 = 128;
pub const ARRAY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// First LBA a partition may use: after the MBR, header and array.
pub const FIRST_USABLE: u64 = 2 + ARRAY_SECTORS;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GptError {
    #[error(
        "partition {name:?} spans LBAs {first}..={last}, outside the usable {usable_first}..={usable_last}"
    )]
    OutOfRange {
        name: String,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {a:?} and {b:?} overlap")]
    Overlap { a: String, b: String },
    #[error("a disk of {sectors} sectors is too small for a GPT")]
    DiskTooSmall { sectors: u64 },
    #[error("the image buffer is {len} bytes, not the {sectors} sectors the table describes")]
    BufferSize { len: usize, sectors: u64 },
    #[error("MBR boot code is {0} bytes; at most 440 fit before the disk signature")]
    BootCode(usize),
    #[error("a hybrid MBR holds at most 3 partitions besides the protective entry, not {0}")]
    HybridCount(usize),
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    Name(String),
}

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the canonical `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` form.
    pub const fn parse(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "GUID must be 36 characters");
        const fn hex(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not a hex digit"),
            }
        }
        // Positions of each byte's two digits in the text, in text order.
        const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            text[i] = hex(b[POS[i]]) << 4 | hex(b[POS[i] + 1]);
            i += 1;
        }
        // Mixed endian: swap the first three fields.
        Guid([
            text[3], text[2], text[1], text[0], text[5], text[4], text[7], text[6], text[8],
            text[9], text[10], text[11], text[12], text[13], text[14], text[15],
        ])
    }

    /// A version-4-shaped GUID from a SHA-256 of `seed`: unique per seed,
    /// the same every time.
    pub fn derive(seed: &[u8]) -> Guid {
        let h = Sha256::digest(seed);
        let mut g = [0u8; 16];
        g.copy_from_slice(&h[..16]);
        g[7] = (g[7] & 0x0F) | 0x40; // version 4 (high nibble of field 3, stored LE)
        g[8] = (g[8] & 0x3F) | 0x80; // RFC 4122 variant
        Guid(g)
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9]
        )?;
        for b in &g[10..] {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Partition type GUIDs.
pub mod types {
    use super::Guid;
    pub const EFI_SYSTEM: Guid = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    pub const BASIC_DATA: Guid = Guid::parse("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
    pub const LINUX_DATA: Guid = Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
}

/// GPT partition attribute bits.
pub mod attributes {
    /// Firmware must not touch the partition.
    pub const REQUIRED: u64 = 1 << 0;
    /// Legacy BIOS bootable: what syslinux's gptmbr.bin looks for.
    pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
}

/// MBR partition types used here.
pub mod mbr_types {
    pub const EMPTY: u8 = 0x00;
    pub const FAT16: u8 = 0x0E; // FAT16 with LBA
    pub const FAT32: u8 = 0x0C; // FAT32 with LBA
    pub const PROTECTIVE: u8 = 0xEE;
    pub const EFI_SYSTEM: u8 = 0xEF;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// What LBA 0 holds besides the boot code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mbr {
    /// One 0xEE entry over the whole disk (UEFI's protective MBR).
    Protective,
    /// A 0xEE entry over the GPT structures, then up to three GPT
    /// partitions mirrored as MBR entries `(index into partitions, MBR type)`,
    /// the first of them marked active — for BIOSes that only boot an active
    /// MBR partition.
    Hybrid(Vec<(usize, u8)>),
}

#[derive(Debug, Clone)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
    pub mbr: Mbr,
    /// Up to 440 bytes of MBR boot code (e.g. syslinux's gptmbr.bin).
    pub boot_code: Vec<u8>,
    pub disk_signature: u32,
}

/// The last LBA a partition may use on a disk of `sectors` sectors.
pub fn last_usable(sectors: u64) -> u64 {
    sectors - 1 - ARRAY_SECTORS - 1
}

impl Gpt {
    /// Writes LBA 0 (MBR), the primary header and array, and the backup
    /// array and header at the end of `disk` (a whole disk image).
    pub fn write(&self, disk: &mut [u8]) -> Result<(), GptError> {
        if !(disk.len() as u64).is_multiple_of(SECTOR) {
            return Err(GptError::BufferSize {
                len: disk.len(),
                sectors: disk.len() as u64 / SECTOR,
            });
        }
        for (offset, bytes) in self.pieces(disk.len() as u64 / SECTOR)? {
            disk[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    /// What [`Gpt::write`] writes on a disk of `sectors` sectors, as
    /// (byte offset, bytes): the MBR, the primary header with the array,
    /// the backup array with its header. The rest of the disk is not
    /// touched, so a disk of any size costs the same.
    pub fn pieces(&self, sectors: u64) -> Result<Vec<(u64, Vec<u8>)>, GptError> {
        if sectors < FIRST_USABLE + 1 + ARRAY_SECTORS + 1 {
            return Err(GptError::DiskTooSmall { sectors });
        }
        let last = last_usable(sectors);
        for p in &self.partitions {
            if p.first_lba < FIRST_USABLE || p.last_lba > last || p.first_lba > p.last_lba {
                return Err(GptError::OutOfRange {
                    name: p.name.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first: FIRST_USABLE,
                    usable_last: last,
                });
            }
            if p.name.encode_utf16().count() > 36 {
                return Err(GptError::Name(p.name.clone()));
            }
        }
        for (i, a) in self.partitions.iter().enumerate() {
            for b in &self.partitions[i + 1..] {
                if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
                    return Err(GptError::Overlap {
                        a: a.name.clone(),
                        b: b.name.clone(),
                    });
                }
            }
        }

        // The entry array, then both headers.
        let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (p, e) in self
            .partitions
            .iter()
            .zip(array.chunks_mut(ENTRY_SIZE as usize))
        {
            e[0..16].copy_from_slice(&p.type_guid.0); // PartitionTypeGUID
            e[16..32].copy_from_slice(&p.guid.0); // UniquePartitionGUID
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes()); // StartingLBA
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes()); // EndingLBA
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes()); // Attributes
            for (j, u) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes()); // PartitionName
            }
        }
        let array_crc = crc32fast::hash(&array);
        let backup_array = sectors - 1 - ARRAY_SECTORS;
        let primary = header(self.disk_guid, 1, sectors - 1, 2, last, array_crc);
        let backup = header(
            self.disk_guid,
            sectors - 1,
            1,
            backup_array,
            last,
            array_crc,
        );
        let mut front = primary.to_vec();
        front.extend_from_slice(&array);
        let mut back = array;
        back.extend_from_slice(&backup);

        let mut entries = Vec::new();
        match &self.mbr {
            Mbr::Protective => entries.push(MbrEntry {
                active: false,
                kind: mbr_types::PROTECTIVE,
                first_lba: 1,
                sectors: sectors - 1,
            }),
            Mbr::Hybrid(mirrored) => {
                if mirrored.len() > 3 {
                    return Err(GptError::HybridCount(mirrored.len()));
                }
                let first_part = self
                    .partitions
                    .iter()
                    .map(|p| p.first_lba)
                    .min()
                    .unwrap_or(sectors);
                entries.push(MbrEntry {
                    active: false,
                    kind: mbr_types::PROTECTIVE,
                    first_lba: 1,
                    sectors: first_part - 1,
                });
                for (n, &(i, kind)) in mirrored.iter().enumerate() {
                    let p = &self.partitions[i];
                    entries.push(MbrEntry {
                        active: n == 0,
                        kind,
                        first_lba: p.first_lba,
                        sectors: p.last_lba - p.first_lba + 1,
                    });
                }
            }
        }
        let mut mbr = vec![0u8; SECTOR as usize];
        write_mbr(&mut mbr, &self.boot_code, self.disk_signature, &entries)?;
        Ok(vec![
            (0, mbr),
            (SECTOR, front),
            (backup_array * SECTOR, back),
        ])
    }
}

fn header(
    disk_guid: Guid,
    my_lba: u64,
    alternate_lba: u64,
    array_lba: u64,
    last_usable: u64,
    array_crc: u32,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART"); // Signature
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes()); // Revision 1.0
    h[12..16].copy_from_slice(&92u32.to_le_bytes()); // HeaderSize
    // 16..20 HeaderCRC32, computed over the 92 bytes with this field zero.
    h[24..32].copy_from_slice(&my_lba.to_le_bytes()); // MyLBA
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes()); // AlternateLBA
    h[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes()); // FirstUsableLBA
    h[48..56].copy_from_slice(&last_usable.to_le_bytes()); // LastUsableLBA
    h[56..72].copy_from_slice(&disk_guid.0); // DiskGUID
    h[72..80].copy_from_slice(&array_lba.to_le_bytes()); // PartitionEntryLBA
    h[80..84].copy_from_slice(&ENTRIES.to_le_bytes()); // NumberOfPartitionEntries
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes()); // SizeOfPartitionEntry
    h[88..92].copy_from_slice(&array_crc.to_le_bytes()); // PartitionEntryArrayCRC32
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// One of the four MBR partition entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub active: bool,
    pub kind: u8,
    pub first_lba: u64,
    pub sectors: u64,
}

/// CHS address of an LBA with 255 heads and 63 sectors per track, or the
/// customary FE FF FF past what CHS can address.
pub fn chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (255 * 63);
    if cyl > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    [
        head as u8,
        (sector as u8) | ((cyl >> 2) as u8 & 0xC0),
        cyl as u8,
    ]
}

/// Writes an MBR: boot code, disk signature, up to four entries, 55 AA.
/// LBA fields saturate at 2^32 - 1, as the protective MBR of a large disk
/// requires.
pub fn write_mbr(
    sector: &mut [u8],
    boot_code: &[u8],
    disk_signature: u32,
    entries: &[MbrEntry],
) -> Result<(), GptError> {
    if boot_code.len() > 440 {
        return Err(GptError::BootCode(boot_code.len()));
    }
    sector[..440].fill(0);
    sector[..boot_code.len()].copy_from_slice(boot_code);
    sector[440..444].copy_from_slice(&disk_signature.to_le_bytes()); // disk signature
    sector[444..446].fill(0);
    sector[446..510].fill(0);
    for (i, e) in entries.iter().take(4).enumerate() {
        let p = &mut sector[446 + 16 * i..462 + 16 * i];
        p[0] = if e.active { 0x80 } else { 0x00 }; // status
        let last = e.first_lba + e.sectors.max(1) - 1;
        if e.kind == mbr_types::PROTECTIVE && e.first_lba == 1 {
            // UEFI §5.2.3: the protective entry starts at CHS 0/0/2.
            p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        } else {
            p[1..4].copy_from_slice(&chs(e.first_lba)); // first CHS
        }
        p[4] = e.kind; // type
        p[5..8].copy_from_slice(&chs(last)); // last CHS
        let first = u32::try_from(e.first_lba).unwrap_or(u32::MAX);
        let count = u32::try_from(e.sectors).unwrap_or(u32::MAX);
        p[8..12].copy_from_slice(&first.to_le_bytes()); // first LBA
        p[12..16].copy_from_slice(&count.to_le_bytes()); // sector count
    }
    sector[510] = 0x55;
    sector[511] = 0xAA;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_disk_order() {
        let g = types::EFI_SYSTEM;
        assert_eq!(
            g.0,
            [
                0x28, 0x73, 0x2A, 0xC1, // C12A7328, little-endian
                0x1F, 0xF8, // F81F
                0xD2, 0x11, // 11D2
                0xBA, 0x4B, // BA4B, big-endian from here
                0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
            ]
        );
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        let d = Guid::derive(b"seed");
        assert_eq!(d, Guid::derive(b"seed"));
        assert_ne!(d, Guid::derive(b"seed2"));
        assert_eq!(d.to_string().as_bytes()[14], b'4');
    }

    #[test]
    fn protective_mbr_golden() {
        let mut s = [0u8; 512];
        write_mbr(
            &mut s,
            &[0xFA, 0x33],
            0xDEAD_BEEF,
            &[MbrEntry {
                active: false,
                kind: mbr_types::PROTECTIVE,
                first_lba: 1,
                sectors: 20479,
            }],
        )
        .unwrap();
        assert_eq!(&s[..2], &[0xFA, 0x33]); // boot code
        assert_eq!(&s[440..446], &[0xEF, 0xBE, 0xAD, 0xDE, 0, 0]); // signature
        #[rustfmt::skip]
        let entry: [u8; 16] = [
            0x00,                   // not active
            0x00, 0x02, 0x00,       // CHS 0/0/2
            0xEE,                   // GPT protective
            0x46, 0x05, 0x01,       // CHS of LBA 20479: head 70, sector 5, cylinder 1
            0x01, 0x00, 0x00, 0x00, // LBA 1
            0xFF, 0x4F, 0x00, 0x00, // 20479 sectors
        ];
        assert_eq!(&s[446..462], &entry);
        assert_eq!(&s[462..510], &[0; 48]);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
    }

    fn sample(sectors: u64) -> (Gpt, Vec<u8>) {
        let gpt = Gpt {
            disk_guid: Guid::derive(b"disk"),
            partitions: vec![Partition {
                type_guid: types::EFI_SYSTEM,
                guid: Guid::derive(b"esp"),
                first_lba: 2048,
                last_lba: sectors - 2048,
                attributes: attributes::LEGACY_BIOS_BOOTABLE,
                name: "ESP".into(),
            }],
            mbr: Mbr::Protective,
            boot_code: vec![],
            disk_signature: 1,
        };
        (gpt, vec![0u8; (sectors * SECTOR) as usize])
    }

    #[test]
    fn header_fields_and_crcs() {
        let (gpt, mut disk) = sample(8192);
        gpt.write(&mut disk).unwrap();
        let h = &disk[512..1024];
        assert_eq!(&h[0..8], b"EFI PART");
        assert_eq!(u64::from_le_bytes(h[24..32].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), 8191);
        assert_eq!(u64::from_le_bytes(h[40..48].try_into().unwrap()), 34);
        assert_eq!(u64::from_le_bytes(h[48..56].try_into().unwrap()), 8158);
        let mut zeroed = h[..92].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(
            u32::from_le_bytes(h[16..20].try_into().unwrap()),
            crc32fast::hash(&zeroed)
        );
        // The backup header points back at the primary and at its own array.
        let b = &disk[8191 * 512..];
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 8191);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(b[72..80].try_into().unwrap()), 8159);
        assert_eq!(disk[2 * 512..34 * 512], disk[8159 * 512..8191 * 512]);
        // Entry 0: ESP type, name in UTF-16.
        let e = &disk[1024..1152];
        assert_eq!(&e[0..16], &types::EFI_SYSTEM.0);
        assert_eq!(&e[48..56], &4u64.to_le_bytes());
        assert_eq!(&e[56..62], &[b'E', 0, b'S', 0, b'P', 0]);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let (mut gpt, mut disk) = sample(8192);
        gpt.partitions[0].last_lba = 8180;
        assert!(matches!(
            gpt.write(&mut disk),
            Err(GptError::OutOfRange { .. })
        ));
        let (mut gpt, mut disk) = sample(8192);
        let mut second = gpt.partitions[0].clone();
        second.name = "B".into();
        second.first_lba = 4000;
        gpt.partitions.push(second);
        assert_eq!(
            gpt.write(&mut disk),
            Err(GptError::Overlap {
                a: "ESP".into(),
                b: "B".into()
            })
        );
    }

    #[test]
    fn chs_values() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        // Cylinder 256: its bits 8-9 go to the top of the sector byte.
        assert_eq!(chs(256 * 255 * 63), [0, 0x41, 0]);
        assert_eq!(chs(255 * 63 * 1024), [0xFE, 0xFF, 0xFF]);
    }
}
