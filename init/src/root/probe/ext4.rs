//! The ext2/3/4 superblock (1 KiB in), typed as blkid types it: by which
//! features an ext2 or ext3 driver would not understand.

use super::{Device, Filesystem, ProbeError, arr, le32, text, uuid};

const HAS_JOURNAL: u32 = 0x4; // compat
const JOURNAL_DEV: u32 = 0x8; // incompat
/// sparse_super, large_file, btree_dir: all ext2 and ext3 know of ro_compat.
const RO_COMPAT_EXT23: u32 = 0x1 | 0x2 | 0x4;
/// filetype, meta_bg: what ext2 knows of incompat; ext3 adds recover.
const INCOMPAT_EXT2: u32 = 0x2 | 0x10;
const INCOMPAT_EXT3: u32 = INCOMPAT_EXT2 | 0x4;

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let Some(sb) = dev.read(1024, 512) else {
        return Ok(None);
    };
    if sb[0x38..0x3A] != [0x53, 0xEF] {
        return Ok(None);
    }
    let (compat, incompat, ro) = (le32(&sb, 0x5C), le32(&sb, 0x60), le32(&sb, 0x64));
    let ext3_only = ro & !RO_COMPAT_EXT23 == 0 && incompat & !INCOMPAT_EXT3 == 0;
    let ext2_only = ro & !RO_COMPAT_EXT23 == 0 && incompat & !INCOMPAT_EXT2 == 0;
    let fstype = if incompat & JOURNAL_DEV != 0 {
        "jbd"
    } else if compat & HAS_JOURNAL != 0 {
        if ext3_only { "ext3" } else { "ext4" }
    } else if ext2_only {
        "ext2"
    } else if !ext3_only {
        "ext4"
    } else {
        // No journal but ext3's recover flag: neither blkid's ext2, ext3
        // nor ext4 claims it.
        return Ok(None);
    };
    Ok(Some(Filesystem {
        fstype,
        label: text(&sb[0x78..0x88]),
        uuid: uuid(arr(&sb, 0x68)),
        size: None,
        zfs: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::probe_bytes;

    fn image(compat: u32, incompat: u32, ro: u32) -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        let sb = &mut d[1024..];
        sb[0x38..0x3A].copy_from_slice(&[0x53, 0xEF]);
        sb[0x5C..0x60].copy_from_slice(&compat.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x64..0x68].copy_from_slice(&ro.to_le_bytes());
        sb[0x68] = 0xAB;
        sb[0x78..0x7C].copy_from_slice(b"root");
        d
    }

    #[test]
    fn types_by_features_as_blkid_does() {
        let cases = [
            ((0, 0x2, 0x3), Some("ext2")),
            ((0x4, 0x2, 0x3), Some("ext3")),
            ((0x4, 0x2 | 0x4, 0x3), Some("ext3")),
            ((0x4, 0x2 | 0x40, 0x3), Some("ext4")),
            ((0, 0x2 | 0x40, 0x3), Some("ext4")),
            ((0, 0x2, 0x3 | 0x400), Some("ext4")),
            ((0, 0x8, 0), Some("jbd")),
            ((0, 0x2 | 0x4, 0), None),
        ];
        for ((c, i, r), want) in cases {
            let got = probe_bytes(&image(c, i, r), 512).fs;
            assert_eq!(got.as_ref().map(|f| f.fstype), want, "{c:#x} {i:#x} {r:#x}");
            if let Some(fs) = got {
                assert_eq!(fs.label.as_deref(), Some("root"));
                assert_eq!(
                    fs.uuid.as_deref(),
                    Some("ab000000-0000-0000-0000-000000000000")
                );
            }
        }
    }

    #[test]
    fn a_truncated_superblock_is_not_ext() {
        let d = image(0x4, 0x2 | 0x40, 0x3);
        for len in [0, 1024, 1024 + 0x3A, 1024 + 511] {
            assert_eq!(probe_bytes(&d[..len], 512), Default::default());
        }
    }
}
