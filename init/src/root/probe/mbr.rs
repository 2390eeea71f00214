//! The MBR (DOS) partition table with its extended partitions, numbered as
//! the kernel's `block/partitions/msdos.c` numbers them: primaries 1–4 by
//! slot, logical partitions from 5 in chain order.

use super::{Device, Partition, ProbeError, Table, le32};

/// Links followed without finding a data partition before the chain is
/// taken as ended (the kernel's and blkid's bound).
const MAX_EMPTY_LINKS: usize = 100;
/// The kernel's `DISK_MAX_PARTS`, less the disk itself.
const MAX_NUMBER: u32 = 255;

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

/// One 16-byte entry of the table at 446: (boot flag, type, start, sectors).
fn entry(sector: &[u8], i: usize) -> (u8, u8, u64, u64) {
    let e = &sector[446 + 16 * i..462 + 16 * i];
    (e[0], e[4], le32(e, 8).into(), le32(e, 12).into())
}

/// Reads the table in `s0`, the device's sector 0 (with 55 AA, no 0xEE
/// entry and no FAT boot sector: the caller has checked).
pub fn probe(dev: &mut Device<'_>, s0: &[u8]) -> Result<Option<Table>, ProbeError> {
    // A boot flag other than 0 or 0x80 means sector 0 is something else.
    if (0..4).any(|i| !matches!(entry(s0, i).0, 0 | 0x80)) {
        return Ok(None);
    }
    let signature = le32(s0, 440);
    let id = (signature != 0).then(|| format!("{signature:08x}"));
    let mut table = Table {
        kind: "dos",
        id,
        partitions: Vec::new(),
    };
    let ss = dev.sector_size();
    for i in 0..4 {
        let (_, kind, start, sectors) = entry(s0, i);
        if sectors != 0 {
            add(&mut table, i as u32 + 1, start, sectors, ss, kind);
        }
    }
    let mut next = 5;
    for i in 0..4 {
        let (_, kind, start, sectors) = entry(s0, i);
        if sectors != 0 && is_extended(kind) {
            logical(dev, &mut table, &mut next, start, sectors)?;
        }
    }
    Ok(Some(table))
}

fn add(table: &mut Table, number: u32, start: u64, sectors: u64, ss: u64, kind: u8) {
    table.partitions.push(Partition {
        number,
        // Both are below 2^33 sectors of at most 4 KiB: no overflow.
        offset: start * ss,
        size: sectors * ss,
        partuuid: table.id.as_ref().map(|id| format!("{id}-{number:02x}")),
        partlabel: None,
        part_type: format!("0x{kind:x}"),
    });
}

/// Follows the chain of extended boot records of the extended partition at
/// `first` (`size` sectors). Data partitions start relative to their own
/// record, links relative to `first`.
fn logical(
    dev: &mut Device<'_>,
    table: &mut Table,
    next: &mut u32,
    first: u64,
    size: u64,
) -> Result<(), ProbeError> {
    let ss = dev.sector_size();
    let (mut this, mut this_size) = (first, size);
    let mut seen = Vec::new();
    let mut empty = 0;
    // Each pass either adds a partition (at most 255 in all), counts an
    // empty link (at most 100 in a row) or ends: the loop is bounded.
    while *next <= MAX_NUMBER && empty < MAX_EMPTY_LINKS {
        empty += 1;
        // A record seen before means the chain is a loop; the kernel would
        // number the same partitions again until it runs out of numbers.
        if seen.contains(&this) {
            return Err(ProbeError::MbrChainLoop { lba: this });
        }
        seen.push(this);
        let Some(ebr) = this.checked_mul(ss).and_then(|at| dev.read(at, 512)) else {
            break;
        };
        if ebr[510..512] != [0x55, 0xAA] {
            break;
        }
        for i in 0..4 {
            let (_, kind, start, sectors) = entry(&ebr, i);
            if sectors == 0 || is_extended(kind) {
                continue;
            }
            let abs = this + start;
            // The third and fourth entries often hold garbage: the kernel
            // takes them only when they lie inside the extended partition.
            if i >= 2
                && (start + sectors > this_size || abs < first || abs + sectors > first + size)
            {
                continue;
            }
            add(table, *next, abs, sectors, ss, kind);
            empty = 0;
            *next += 1;
            if *next > MAX_NUMBER {
                return Ok(());
            }
        }
        match (0..4)
            .map(|i| entry(&ebr, i))
            .find(|e| e.3 != 0 && is_extended(e.1))
        {
            Some((_, _, start, sectors)) => (this, this_size) = (first + start, sectors),
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::probe_bytes;
    use super::*;

    fn set(sector: &mut [u8], i: usize, kind: u8, start: u32, sectors: u32) {
        let e = &mut sector[446 + 16 * i..462 + 16 * i];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xAA;
    }

    /// A disk with a primary at 2048, an extended partition at 4096 and
    /// two logical partitions in it.
    fn disk() -> Vec<u8> {
        let mut d = vec![0u8; 16384 * 512];
        d[440..444].copy_from_slice(&0x0a1b2c3du32.to_le_bytes());
        set(&mut d, 0, 0x83, 2048, 2048);
        set(&mut d, 1, 0x05, 4096, 8192);
        let at = 4096 * 512;
        set(&mut d[at..at + 512], 0, 0x83, 2048, 1024);
        set(&mut d[at..at + 512], 1, 0x05, 4096, 2048);
        let at = 8192 * 512;
        set(&mut d[at..at + 512], 0, 0x82, 1024, 512);
        d
    }

    #[test]
    fn numbers_primaries_and_logicals_as_the_kernel_does() {
        let t = probe_bytes(&disk(), 512).table.unwrap();
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.offset / 512,
                    p.size / 512,
                    p.partuuid.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 2048, 2048, "0a1b2c3d-01".into()),
                (2, 4096, 8192, "0a1b2c3d-02".into()),
                (5, 6144, 1024, "0a1b2c3d-05".into()),
                (6, 9216, 512, "0a1b2c3d-06".into()),
            ]
        );
        assert_eq!(t.id.as_deref(), Some("0a1b2c3d"));
        assert_eq!(t.partitions[3].part_type, "0x82");
    }

    #[test]
    fn a_chain_that_loops_is_an_error() {
        let mut d = disk();
        // The second record links back to the first.
        let at = 8192 * 512;
        set(&mut d[at..at + 512], 1, 0x05, 0, 100);
        assert_eq!(
            probe_bytes(&d, 512).errors,
            [ProbeError::MbrChainLoop { lba: 4096 }]
        );
        // A record that links to itself, with no data partition.
        let mut d = disk();
        let at = 4096 * 512;
        d[at..at + 512].fill(0);
        set(&mut d[at..at + 512], 1, 0x05, 0, 100);
        assert_eq!(
            probe_bytes(&d, 512).errors,
            [ProbeError::MbrChainLoop { lba: 4096 }]
        );
    }

    #[test]
    fn a_long_chain_stops_at_the_kernels_last_number() {
        // 300 records in a row, each with one data partition.
        let mut d = vec![0u8; 1000 * 512];
        set(&mut d, 0, 0x05, 1, 900);
        for k in 0..300usize {
            let at = (1 + k) * 512;
            set(&mut d[at..at + 512], 0, 0x83, 600, 1);
            set(&mut d[at..at + 512], 1, 0x05, k as u32 + 1, 1);
        }
        let t = probe_bytes(&d, 512).table.unwrap();
        assert_eq!(t.partitions.len(), 1 + 251);
        assert_eq!(t.partitions.last().unwrap().number, 255);
        assert_eq!(t.id, None);
        assert_eq!(t.partitions[0].partuuid, None);
    }

    #[test]
    fn a_bad_boot_flag_means_no_table() {
        let mut d = disk();
        d[446 + 16] = 0x01;
        assert_eq!(probe_bytes(&d, 512).table, None);
    }
}
