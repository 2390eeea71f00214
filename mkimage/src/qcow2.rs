//! qcow2 (version 3) written directly from a raw disk image (QEMU's
//! docs/interop/qcow2.txt). Small enough not to need a dependency, and
//! written in a fixed order so the bytes depend only on the raw image.
//!
//! 64 KiB clusters. Host layout: the header cluster, the L1 table, the
//! refcount table, the refcount blocks, the L2 tables, then the data
//! clusters in guest order. Guest clusters that are all zero are left
//! unallocated (they read as zeros), so the file holds only what is used.
//! Every allocated cluster has refcount 1 (16-bit refcounts), and every L1
//! and L2 entry carries the COPIED flag, as for an image with no snapshots.

use thiserror::Error;

pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: u32 = 104;
/// L1/L2 entry flag: refcount is exactly one.
const COPIED: u64 = 1 << 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Qcow2Error {
    #[error("a raw image of {0} bytes is not a whole number of 512-byte sectors")]
    Unaligned(u64),
}

/// Converts a raw disk image.
pub fn from_raw(raw: &[u8]) -> Result<Vec<u8>, Qcow2Error> {
    let size = raw.len() as u64;
    if !size.is_multiple_of(512) {
        return Err(Qcow2Error::Unaligned(size));
    }
    let guest_clusters = size.div_ceil(CLUSTER);
    let l2_entries = CLUSTER / 8;
    let l1_size = guest_clusters.div_ceil(l2_entries);
    let used: Vec<u64> = (0..guest_clusters)
        .filter(|&c| {
            let start = (c * CLUSTER) as usize;
            let end = ((c + 1) * CLUSTER).min(size) as usize;
            raw[start..end].iter().any(|&b| b != 0)
        })
        .collect();
    let l2_tables: Vec<u64> = {
        let mut t: Vec<u64> = used.iter().map(|c| c / l2_entries).collect();
        t.dedup();
        t
    };
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    // Refcount blocks cover every host cluster, themselves included.
    let per_block = CLUSTER / 2;
    let fixed = 1 + l1_clusters + l2_tables.len() as u64 + used.len() as u64;
    let (mut rb, mut rt) = (1u64, 1u64);
    loop {
        let total = fixed + rb + rt;
        let need_rb = total.div_ceil(per_block);
        let need_rt = (need_rb * 8).div_ceil(CLUSTER);
        if need_rb == rb && need_rt == rt {
            break;
        }
        rb = need_rb;
        rt = need_rt;
    }
    let l1_at = 1;
    let rt_at = l1_at + l1_clusters;
    let rb_at = rt_at + rt;
    let l2_at = rb_at + rb;
    let data_at = l2_at + l2_tables.len() as u64;
    let total = data_at + used.len() as u64;

    let mut out = vec![0u8; (total * CLUSTER) as usize];
    let h = &mut out[..HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"QFI\xfb"); // magic
    h[4..8].copy_from_slice(&3u32.to_be_bytes()); // version
    // 8..20: no backing file
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes()); // cluster_bits
    h[24..32].copy_from_slice(&size.to_be_bytes()); // size
    // 32..36: crypt_method none
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes()); // l1_size
    h[40..48].copy_from_slice(&(l1_at * CLUSTER).to_be_bytes()); // l1_table_offset
    h[48..56].copy_from_slice(&(rt_at * CLUSTER).to_be_bytes()); // refcount_table_offset
    h[56..60].copy_from_slice(&(rt as u32).to_be_bytes()); // refcount_table_clusters
    // 60..72: no snapshots; 72..96: no feature bits
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
    h[100..104].copy_from_slice(&HEADER_LEN.to_be_bytes()); // header_length
    // Then the end-of-extensions marker: type 0, length 0 (already zero).

    let put = |out: &mut [u8], at: u64, v: u64| {
        out[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
    };
    for (i, &t) in l2_tables.iter().enumerate() {
        put(
            &mut out,
            l1_at * CLUSTER + t * 8,
            ((l2_at + i as u64) * CLUSTER) | COPIED,
        );
    }
    for (i, &c) in used.iter().enumerate() {
        let host = data_at + i as u64;
        let table = l2_tables
            .binary_search(&(c / l2_entries))
            .expect("every used cluster has its table");
        let entry = (l2_at + table as u64) * CLUSTER + (c % l2_entries) * 8;
        put(&mut out, entry, (host * CLUSTER) | COPIED);
        let start = (c * CLUSTER) as usize;
        let end = ((c + 1) * CLUSTER).min(size) as usize;
        let dst = (host * CLUSTER) as usize;
        out[dst..dst + end - start].copy_from_slice(&raw[start..end]);
    }
    for b in 0..rb {
        put(&mut out, rt_at * CLUSTER + b * 8, (rb_at + b) * CLUSTER);
    }
    for c in 0..total {
        let at = (rb_at * CLUSTER + c * 2) as usize;
        out[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_golden() {
        let mut raw = vec![0u8; 3 << 16];
        raw[0x10000] = 1; // only the second cluster holds data
        let q = from_raw(&raw).unwrap();
        #[rustfmt::skip]
        let want: [u8; 104] = [
            b'Q', b'F', b'I', 0xFB,             // magic
            0, 0, 0, 3,                         // version 3
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // no backing file
            0, 0, 0, 16,                        // 64 KiB clusters
            0, 0, 0, 0, 0, 3, 0, 0,             // 192 KiB virtual size
            0, 0, 0, 0,                         // no encryption
            0, 0, 0, 1,                         // one L1 entry
            0, 0, 0, 0, 0, 1, 0, 0,             // L1 table in cluster 1
            0, 0, 0, 0, 0, 2, 0, 0,             // refcount table in cluster 2
            0, 0, 0, 1,                         // one refcount table cluster
            0, 0, 0, 0,                         // no snapshots
            0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0,             // incompatible features
            0, 0, 0, 0, 0, 0, 0, 0,             // compatible features
            0, 0, 0, 0, 0, 0, 0, 0,             // autoclear features
            0, 0, 0, 4,                         // 16-bit refcounts
            0, 0, 0, 104,                       // header length
        ];
        assert_eq!(&q[..104], &want);
        // Header, L1, refcount table and block, one L2, one data cluster.
        assert_eq!(q.len() as u64, 6 * CLUSTER);
        // L1[0] → L2 in cluster 4; L2[1] → data in cluster 5.
        assert_eq!(
            &q[0x10000..0x10008],
            &((4 * CLUSTER) | COPIED).to_be_bytes()
        );
        assert_eq!(
            &q[0x40008..0x40010],
            &((5 * CLUSTER) | COPIED).to_be_bytes()
        );
        assert_eq!(q[0x50000], 1);
    }
}
