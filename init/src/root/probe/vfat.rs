//! FAT12/16/32 as blkid's `vfat` sees it: the boot sector's BPB checked
//! for sanity, the label taken from the root directory's volume-label entry
//! when there is one (else the boot sector's), the UUID `XXXX-XXXX` from
//! the volume serial number.

use super::{Device, Filesystem, ProbeError, le16, le32, text};

const FAT12_MAX: u64 = 0xFF4;
const FAT16_MAX: u64 = 0xFFF4;
const FAT32_MAX: u64 = 0x0FFF_FFF6;
/// Root-directory bytes searched for the label, in all.
const MAX_DIR: usize = 256 << 10;
/// blkid's bound on the FAT32 root directory's cluster chain.
const MAX_CLUSTERS: usize = 99;
const NO_NAME: &[u8] = b"NO NAME    ";

/// The layout a valid boot sector describes.
pub struct Geometry {
    sector: u64,
    reserved: u64,
    /// Sectors of all FATs together.
    fat_sectors: u64,
}

/// The geometry of a FAT boot sector (512 bytes), or `None` when `s0` is
/// not one: the test blkid's MBR probe also uses to tell the two apart.
pub fn valid(s0: &[u8]) -> Option<Geometry> {
    let magic = |at: usize, m: &[u8]| s0.get(at..at + m.len()) == Some(m);
    let named = magic(0x52, b"MSWIN")
        || magic(0x52, b"FAT32   ")
        || [&b"MSDOS"[..], b"FAT16   ", b"FAT12   ", b"FAT     "]
            .iter()
            .any(|m| magic(0x36, m));
    if !named {
        // Without a name only a jump instruction or the 55 AA mark says
        // FAT, and blkid then wants the mark; OS/2's FAT-like headers on
        // JFS and HPFS are not FAT.
        if !magic(0x1FE, &[0x55, 0xAA]) || magic(0x36, b"JFS     ") || magic(0x36, b"HPFS    ") {
            return None;
        }
    }
    let (fats, reserved, media, cluster) = (s0[0x10], le16(s0, 0x0E), s0[0x15], s0[0x0D]);
    if fats == 0 || reserved == 0 || !(media >= 0xF8 || media == 0xF0) {
        return None;
    }
    let sector = le16(s0, 0x0B);
    if !cluster.is_power_of_two() || !sector.is_power_of_two() || !(512..=4096).contains(&sector) {
        return None;
    }
    let sectors = match le16(s0, 0x13) {
        0 => u64::from(le32(s0, 0x20)),
        n => n.into(),
    };
    let fat16_length = le16(s0, 0x16);
    let fat32_length = le32(s0, 0x24);
    let fat_length = match fat16_length {
        0 => u64::from(fat32_length),
        n => n.into(),
    };
    let fat_sectors = fat_length * u64::from(fats);
    let dir_sectors = (u64::from(le16(s0, 0x11)) * 32).div_ceil(sector.into());
    let clusters =
        sectors.checked_sub(u64::from(reserved) + fat_sectors + dir_sectors)? / u64::from(cluster);
    let max = if fat16_length == 0 && fat32_length != 0 {
        FAT32_MAX
    } else if clusters > FAT12_MAX {
        FAT16_MAX
    } else {
        FAT12_MAX
    };
    (clusters <= max).then_some(Geometry {
        sector: sector.into(),
        reserved: reserved.into(),
        fat_sectors,
    })
}

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let Some(s0) = dev.read(0, 512) else {
        return Ok(None);
    };
    let Some(g) = valid(&s0) else {
        return Ok(None);
    };
    let mut dir_left = MAX_DIR;
    let (dir_label, boot_label, serial) = if le16(&s0, 0x16) != 0 {
        // FAT12/16: the root directory follows the FATs.
        let at = (g.reserved + g.fat_sectors) * g.sector;
        let entries = usize::from(le16(&s0, 0x11));
        let label = search(dev, at, entries, &mut dir_left);
        (label, &s0[0x2B..0x36], &s0[0x27..0x2B])
    } else if le32(&s0, 0x24) != 0 {
        // FAT32: the root directory is a cluster chain from BPB_RootClus.
        let cluster_sectors = u64::from(s0[0x0D]);
        let entries = cluster_sectors * g.sector / 32;
        let fat_entries = u64::from(le32(&s0, 0x24)) * g.sector / 4;
        let mut next = u64::from(le32(&s0, 0x2C));
        let mut label = None;
        for _ in 0..MAX_CLUSTERS {
            if next < 2 || next >= fat_entries {
                break;
            }
            // next < fat_entries < 2^30 and the rest are 16-bit: no overflow.
            let at = (g.reserved + g.fat_sectors + (next - 2) * cluster_sectors) * g.sector;
            label = search(dev, at, entries as usize, &mut dir_left);
            if label.is_some() {
                break;
            }
            let Some(e) = dev.read(g.reserved * g.sector + next * 4, 4) else {
                break;
            };
            next = u64::from(le32(&e, 0) & 0x0FFF_FFFF);
        }
        let info = le16(&s0, 0x30);
        if info != 0 {
            // Some formatters leave FSInfo zeroed; anything else must be
            // FSInfo (blkid refuses the volume otherwise).
            let s = dev.read(u64::from(info) * g.sector, 512);
            let sig = |at: usize, ok: &[&[u8; 4]]| {
                s.as_ref()
                    .is_some_and(|s| ok.iter().any(|m| s[at..at + 4] == **m))
            };
            if !sig(0, &[b"RRaA", b"RRdA", &[0; 4]]) || !sig(484, &[b"rrAa", &[0; 4]]) {
                return Err(ProbeError::FatInfo { sector: info });
            }
        }
        (label, &s0[0x47..0x52], &s0[0x43..0x47])
    } else {
        // Neither FAT length: blkid names the type and nothing else.
        (None, &[][..], &[0u8; 4][..])
    };
    let label = dir_label
        .filter(|l| l != NO_NAME)
        .or_else(|| Some(boot_label.to_vec()))
        .filter(|l| l != NO_NAME)
        .and_then(|l| text(&l));
    let uuid = (serial != [0; 4]).then(|| {
        format!(
            "{:02X}{:02X}-{:02X}{:02X}",
            serial[3], serial[2], serial[1], serial[0]
        )
    });
    Ok(Some(Filesystem {
        fstype: "vfat",
        label,
        uuid,
        size: None,
        zfs: None,
    }))
}

/// The volume-label entry among the first `entries` directory entries at
/// `at`, reading no more than `left` bytes more.
fn search(dev: &mut Device<'_>, at: u64, entries: usize, left: &mut usize) -> Option<Vec<u8>> {
    let len = entries.saturating_mul(32).min(*left);
    *left -= len;
    let dir = dev.read(at, len)?;
    for e in dir.chunks_exact(32) {
        let attr = e[11];
        match e[0] {
            0 => return None,
            0xE5 => continue,
            _ => {}
        }
        // Long-name entries and anything with a cluster is not the label.
        if attr & 0x3F == 0x0F || le16(e, 20) != 0 || le16(e, 26) != 0 {
            continue;
        }
        if attr & 0x18 == 0x08 {
            return Some(e[..11].to_vec());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::probe_bytes;
    use super::*;

    /// A FAT16 boot sector: 512-byte sectors, 4 per cluster, 1 reserved, 2
    /// FATs of 32 sectors, 512 root entries, 65536 sectors.
    fn fat16() -> Vec<u8> {
        let mut d = vec![0u8; 65536 * 512];
        d[0] = 0xEB;
        d[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        d[0x0D] = 4;
        d[0x0E] = 1;
        d[0x10] = 2;
        d[0x11..0x13].copy_from_slice(&512u16.to_le_bytes());
        d[0x15] = 0xF8;
        d[0x16] = 32;
        d[0x20..0x24].copy_from_slice(&65536u32.to_le_bytes());
        d[0x27..0x2B].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        d[0x2B..0x36].copy_from_slice(b"BOOTLABEL  ");
        d[0x36..0x3E].copy_from_slice(b"FAT16   ");
        d[510] = 0x55;
        d[511] = 0xAA;
        d
    }

    const ROOT: usize = (1 + 64) * 512;

    #[test]
    fn the_root_directory_label_wins() {
        let mut d = fat16();
        let fs = probe_bytes(&d, 512).fs.unwrap();
        assert_eq!(fs.label.as_deref(), Some("BOOTLABEL"));
        assert_eq!(fs.uuid.as_deref(), Some("1234-ABCD"));
        // A long-name entry and a deleted one come first, then the label.
        d[ROOT + 11] = 0x0F;
        d[ROOT] = b'A';
        d[ROOT + 32] = 0xE5;
        d[ROOT + 64..ROOT + 75].copy_from_slice(b"DIRLABEL   ");
        d[ROOT + 75] = 0x08;
        assert_eq!(
            probe_bytes(&d, 512).fs.unwrap().label.as_deref(),
            Some("DIRLABEL")
        );
        // "NO NAME" in the directory defers to the boot sector's label.
        d[ROOT + 64..ROOT + 75].copy_from_slice(NO_NAME);
        assert_eq!(
            probe_bytes(&d, 512).fs.unwrap().label.as_deref(),
            Some("BOOTLABEL")
        );
        d[0x2B..0x36].copy_from_slice(NO_NAME);
        assert_eq!(probe_bytes(&d, 512).fs.unwrap().label, None);
    }

    #[test]
    fn insane_geometry_is_not_fat() {
        let edits: [fn(&mut [u8]); 6] = [
            |d| d[0x10] = 0,
            |d| d[0x0E] = 0,
            |d| d[0x15] = 0x12,
            |d| d[0x0D] = 3,
            |d| d[0x0B..0x0D].copy_from_slice(&8192u16.to_le_bytes()),
            // More sectors of FAT than the volume has.
            |d| d[0x16..0x18].copy_from_slice(&60000u16.to_le_bytes()),
        ];
        for edit in edits {
            let mut d = fat16();
            edit(&mut d);
            assert_eq!(probe_bytes(&d, 512).fs, None);
        }
    }

    #[test]
    fn a_fat32_chain_that_loops_ends() {
        let mut d = fat16();
        d[0x16] = 0;
        d[0x24..0x52].fill(0);
        d[0x24] = 32; // FAT32 length
        d[0x2C] = 2; // root cluster
        d[0x52..0x5A].copy_from_slice(b"FAT32   ");
        // Cluster 2's FAT entry points back at cluster 2.
        d[512 + 8] = 2;
        let fs = probe_bytes(&d, 512).fs.unwrap();
        assert_eq!(fs.label, None);
        // A nonzero FSInfo sector without the signature is refused.
        d[0x30] = 1;
        d[512] = 1;
        assert_eq!(
            probe_bytes(&d, 512).errors,
            [ProbeError::FatInfo { sector: 1 }]
        );
    }
}
