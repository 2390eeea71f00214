//! The erofs superblock (1 KiB in), its CRC32C checked when it has one, as
//! the kernel and blkid do.

use super::{Device, Filesystem, ProbeError, arr, le32, text, uuid};

const MAGIC: u32 = 0xE0F5_E1E2;
/// feature_compat: the superblock carries a checksum.
const SB_CHKSUM: u32 = 0x1;

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let Some(sb) = dev.read(1024, 128) else {
        return Ok(None);
    };
    if le32(&sb, 0) != MAGIC {
        return Ok(None);
    }
    // erofs blocks are at most 4 KiB; a block that ends before the
    // superblock does cannot hold it.
    let bits = sb[12];
    if !(10..=12).contains(&bits) {
        return Ok(None);
    }
    let block = 1u64 << bits;
    if le32(&sb, 8) & SB_CHKSUM != 0 {
        // The checksum covers the rest of the first block, from the
        // superblock on, with the checksum field taken as zero.
        let Some(mut rest) = dev.read(1024, (block - 1024) as usize) else {
            return Ok(None);
        };
        rest[4..8].fill(0);
        let (stored, computed) = (le32(&sb, 4), crc32c(&rest));
        if stored != computed {
            return Err(ProbeError::ErofsCrc { stored, computed });
        }
    }
    Ok(Some(Filesystem {
        fstype: "erofs",
        label: text(&sb[64..80]),
        uuid: uuid(arr(&sb, 48)),
        // Below 2^44: a u32 block count of at most 4 KiB blocks.
        size: Some(u64::from(le32(&sb, 36)) * block),
        zfs: None,
    }))
}

/// CRC32C (Castagnoli) as the kernel's `crc32c(~0, …)`: no final
/// inversion. Bitwise, since it runs over at most 3 KiB once per device.
fn crc32c(bytes: &[u8]) -> u32 {
    bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        c
    })
}

#[cfg(test)]
mod tests {
    use super::super::probe_bytes;
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC catalogue's check value for CRC-32C, before its final xor.
        assert_eq!(!crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_bad_checksum_or_block_size_is_no_erofs() {
        let mut d = vec![0u8; 8192];
        d[1024..1028].copy_from_slice(&MAGIC.to_le_bytes());
        d[1024 + 8] = 1;
        d[1024 + 12] = 12;
        d[1024 + 36] = 2;
        d[1024 + 64..1024 + 68].copy_from_slice(b"root");
        let crc = crc32c(&d[1024..4096]);
        d[1028..1032].copy_from_slice(&crc.to_le_bytes());
        let fs = probe_bytes(&d, 512).fs.unwrap();
        assert_eq!((fs.label.as_deref(), fs.size), (Some("root"), Some(8192)));
        d[3000] ^= 1;
        assert!(matches!(
            probe_bytes(&d, 512).errors[..],
            [ProbeError::ErofsCrc { .. }]
        ));
        for bits in [0, 9, 13, 255] {
            d[1024 + 12] = bits;
            assert_eq!(probe_bytes(&d, 512), Default::default());
        }
    }
}
