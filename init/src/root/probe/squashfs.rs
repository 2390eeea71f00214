//! The squashfs superblock (96 bytes at 0). blkid reads only the version;
//! the kernel also needs a sane block size and an image that fits the
//! device, so those are checked here, before anything is mounted.

use super::{Device, Filesystem, ProbeError, le16, le32, le64};

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let Some(sb) = dev.read(0, 96) else {
        return Ok(None);
    };
    let major = match &sb[..4] {
        b"hsqs" => le16(&sb, 28),
        // Big-endian images are squashfs 3 or older.
        b"sqsh" => u16::from_be_bytes([sb[28], sb[29]]),
        _ => return Ok(None),
    };
    let found = |fstype, size| {
        Ok(Some(Filesystem {
            fstype,
            label: None,
            uuid: None,
            size,
            zfs: None,
        }))
    };
    if major < 4 {
        return found("squashfs3", None);
    }
    let bad = |what, value| Err(ProbeError::Squashfs { what, value });
    if major > 4 {
        return bad("major version", major.into());
    }
    let block = le32(&sb, 12);
    if !block.is_power_of_two() || !(4096..=1 << 20).contains(&block) {
        return bad("block size", block.into());
    }
    let log = le16(&sb, 22);
    if u32::from(log) != block.trailing_zeros() {
        return bad("block log", log.into());
    }
    let bytes_used = le64(&sb, 40);
    if bytes_used < 96 || bytes_used > dev.size() {
        return bad("bytes used", bytes_used);
    }
    found("squashfs", Some(bytes_used))
}

#[cfg(test)]
mod tests {
    use super::super::probe_bytes;
    use super::*;

    fn image(block: u32, log: u16, used: u64) -> Vec<u8> {
        let mut d = vec![0u8; 8192];
        d[..4].copy_from_slice(b"hsqs");
        d[12..16].copy_from_slice(&block.to_le_bytes());
        d[22..24].copy_from_slice(&log.to_le_bytes());
        d[28..30].copy_from_slice(&4u16.to_le_bytes());
        d[40..48].copy_from_slice(&used.to_le_bytes());
        d
    }

    #[test]
    fn absurd_sizes_are_errors() {
        let ok = probe_bytes(&image(131072, 17, 4096), 512).fs.unwrap();
        assert_eq!((ok.fstype, ok.size), ("squashfs", Some(4096)));
        let cases = [
            (image(0, 0, 4096), "block size", 0),
            (image(u32::MAX, 31, 4096), "block size", u32::MAX as u64),
            (image(1 << 21, 21, 4096), "block size", 1 << 21),
            (image(131072, 12, 4096), "block log", 12),
            (image(131072, 17, u64::MAX), "bytes used", u64::MAX),
            (image(131072, 17, 8193), "bytes used", 8193),
            (image(131072, 17, 0), "bytes used", 0),
        ];
        for (d, what, value) in cases {
            let p = probe_bytes(&d, 512);
            assert_eq!(p.fs, None);
            assert_eq!(p.errors, [ProbeError::Squashfs { what, value }]);
        }
        let mut v3 = image(0, 0, 0);
        v3[28] = 3;
        assert_eq!(probe_bytes(&v3, 512).fs.unwrap().fstype, "squashfs3");
    }
}
