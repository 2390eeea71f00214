//! GPT (UEFI 2.10 §5.3), read as the kernel's `block/partitions/efi.c`
//! reads it: the primary header at LBA 1 with its CRC32, the entry array
//! with its CRC32, each used entry numbered by its index + 1.

use super::{Device, Partition, ProbeError, Table, guid, le32, le64, utf16};
use crate::kexec::gzip::crc32;

/// The largest entry array read: 4096 entries of 128 bytes. Real tables
/// have 128 (16 KiB); the kernel numbers no more than 255 anyway.
pub const MAX_ARRAY: usize = 512 << 10;
/// The only entry size the kernel accepts.
const ENTRY: usize = 128;
/// The kernel's `DISK_MAX_PARTS`, less the disk itself.
const MAX_NUMBER: usize = 255;

/// Reads the GPT behind a protective MBR (the caller has checked the MBR).
pub fn probe(dev: &mut Device<'_>) -> Result<Table, ProbeError> {
    let ss = dev.sector_size();
    // Less than two sectors cannot hold a header: the read fails.
    let h = dev
        .read(ss, ss as usize)
        .ok_or(ProbeError::GptReadHeader { offset: ss })?;
    if h[..8] != *b"EFI PART" {
        return Err(ProbeError::GptSignature);
    }
    let bad = |what, value| Err(ProbeError::GptHeader { what, value });
    let header_size = le32(&h, 12) as usize;
    if !(92..=h.len()).contains(&header_size) {
        return bad("header size", header_size as u64);
    }
    let stored = le32(&h, 16);
    let mut zeroed = h[..header_size].to_vec();
    zeroed[16..20].fill(0);
    let computed = crc32(&zeroed);
    if computed != stored {
        return Err(ProbeError::GptHeaderCrc { stored, computed });
    }
    // The reads above prove the device holds at least two sectors.
    let last_lba = dev.size() / ss - 1;
    let (my_lba, first, last) = (le64(&h, 24), le64(&h, 40), le64(&h, 48));
    if my_lba != 1 {
        return bad("my LBA", my_lba);
    }
    if first > last_lba || first > last {
        return bad("first usable LBA", first);
    }
    if last > last_lba {
        return bad("last usable LBA", last);
    }
    let (lba, count, size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
    if size as usize != ENTRY {
        return bad("entry size", size.into());
    }
    // count × 128 fits in u64; it must also fit the cap before it is read.
    let bytes = u64::from(count) * ENTRY as u64;
    if bytes > MAX_ARRAY as u64 {
        return bad("entry count", count.into());
    }
    let entries = lba
        .checked_mul(ss)
        .and_then(|offset| dev.read(offset, bytes as usize))
        .ok_or(ProbeError::GptReadEntries { lba, count })?;
    let stored = le32(&h, 88);
    let computed = crc32(&entries);
    if computed != stored {
        return Err(ProbeError::GptEntriesCrc { stored, computed });
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(ENTRY).enumerate().take(MAX_NUMBER) {
        let type_guid: [u8; 16] = super::arr(e, 0);
        let (start, end) = (le64(e, 32), le64(e, 40));
        // The kernel skips unused entries and those reaching past the disk.
        if type_guid == [0; 16] || start > end || end > last_lba {
            continue;
        }
        partitions.push(Partition {
            // At most 255: the loop takes no more entries.
            number: i as u32 + 1,
            // end ≤ last_lba < size / ss, so neither product overflows.
            offset: start * ss,
            size: (end - start + 1) * ss,
            partuuid: Some(guid(super::arr(e, 16))),
            partlabel: utf16((56..ENTRY).step_by(2).map(|at| super::le16(e, at))),
            part_type: guid(type_guid),
        });
    }
    Ok(Table {
        kind: "gpt",
        id: Some(guid(super::arr(&h, 56))),
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{probe_bytes, table};
    use super::*;

    /// A disk of `sectors` sectors of `ss` bytes with a protective MBR and a
    /// GPT of `count` entries at LBA 2, the first used; `edit` changes the
    /// header before its CRC is sealed.
    fn disk(ss: usize, sectors: usize, count: u32, edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut d = vec![0u8; ss * sectors];
        d[446 + 4] = 0xEE;
        d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xAA;
        let array = 2 * ss;
        let e = &mut d[array..array + 128];
        e[0] = 0xAF; // any non-zero type GUID
        e[16] = 0x11;
        e[32..40].copy_from_slice(&34u64.to_le_bytes());
        e[40..48].copy_from_slice(&40u64.to_le_bytes());
        for (i, u) in "root".encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        let n = (count as usize * 128).min(d.len() - array);
        let array_crc = crc32(&d[array..array + n]);
        let h = &mut d[ss..ss + 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors as u64 - 34).to_le_bytes());
        h[56] = 0x42;
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        edit(h);
        let crc = crc32(h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        d
    }

    #[test]
    fn reads_a_table_at_either_sector_size() {
        for ss in [512usize, 4096] {
            let d = disk(ss, 100, 128, |_| {});
            let t = probe_bytes(&d, ss as u32).table.unwrap();
            assert_eq!(t.kind, "gpt");
            assert_eq!(
                t.id.as_deref(),
                Some("00000042-0000-0000-0000-000000000000")
            );
            assert_eq!(t.partitions.len(), 1);
            let p = &t.partitions[0];
            assert_eq!(
                (p.number, p.offset, p.size),
                (1, 34 * ss as u64, 7 * ss as u64)
            );
            assert_eq!(p.partlabel.as_deref(), Some("root"));
            assert_eq!(
                p.partuuid.as_deref(),
                Some("00000011-0000-0000-0000-000000000000")
            );
        }
        // The wrong sector size finds no header.
        assert!(
            probe_bytes(&disk(4096, 100, 128, |_| {}), 512).errors == [ProbeError::GptSignature]
        );
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        type Edit = fn(&mut [u8]);
        let cases: [(Edit, ProbeError); 5] = [
            (
                |h| h[12] = 91,
                ProbeError::GptHeader {
                    what: "header size",
                    value: 91,
                },
            ),
            (
                |h| h[24] = 2,
                ProbeError::GptHeader {
                    what: "my LBA",
                    value: 2,
                },
            ),
            (
                |h| h[84] = 0,
                ProbeError::GptHeader {
                    what: "entry size",
                    value: 0,
                },
            ),
            (
                |h| h[48] = 200,
                ProbeError::GptHeader {
                    what: "last usable LBA",
                    value: 200,
                },
            ),
            (
                // The entry array would start past the disk's end.
                |h| h[79] = 0x80,
                ProbeError::GptReadEntries {
                    lba: 2 | 0x80 << 56,
                    count: 128,
                },
            ),
        ];
        for (edit, want) in cases {
            let d = disk(512, 100, 128, edit);
            assert_eq!(probe_bytes(&d, 512).errors, [want]);
        }
        let mut d = disk(512, 100, 128, |_| {});
        // Past the header's 92 bytes the sector is not covered by its CRC.
        d[512 + 100] ^= 1;
        assert!(probe_bytes(&d, 512).errors.is_empty());
        d[512 + 50] ^= 1;
        assert!(matches!(
            probe_bytes(&d, 512).errors[..],
            [ProbeError::GptHeaderCrc { .. }]
        ));
        let mut d = disk(512, 100, 128, |_| {});
        d[1024 + 200] ^= 1;
        assert!(matches!(
            probe_bytes(&d, 512).errors[..],
            [ProbeError::GptEntriesCrc { .. }]
        ));
    }

    #[test]
    fn an_entry_count_that_would_overflow_is_refused_before_any_read() {
        // u32::MAX entries × 128 bytes: 512 GiB, refused by the cap; and a
        // count × size product that overflows u32 does not wrap to a small
        // array.
        for count in [u32::MAX, 1 << 25, 4097] {
            let d = disk(512, 100, count, |_| {});
            assert_eq!(
                probe_bytes(&d, 512).errors,
                [ProbeError::GptHeader {
                    what: "entry count",
                    value: count.into(),
                }]
            );
        }
    }

    #[test]
    fn a_protective_entry_not_at_lba_1_hides_the_table() {
        let mut d = disk(512, 100, 128, |_| {});
        d[446 + 8] = 2;
        let mut read = |o: u64, l: usize| d.get(o as usize..o as usize + l).map(<[u8]>::to_vec);
        let r = table(&mut Device::new(100 * 512, 512, &mut read));
        assert_eq!(r, Err(ProbeError::ProtectiveMbr { index: 0, lba: 2 }));
    }
}
