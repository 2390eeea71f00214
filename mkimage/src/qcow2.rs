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

use std::io;

use thiserror::Error;

use crate::pieces::{Pieces, Sink};

pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: u32 = 104;
/// L1/L2 entry flag: refcount is exactly one.
const COPIED: u64 = 1 << 63;

#[derive(Debug, Error)]
pub enum Qcow2Error {
    #[error("a raw image of {0} bytes is not a whole number of 512-byte sectors")]
    Unaligned(u64),
    #[error("reading the raw image")]
    Read(#[source] io::Error),
}

/// A raw disk image qcow2 is made from, read cluster by cluster.
pub trait Raw {
    /// The image's size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset` (all of it lies within the image).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Whether `offset..offset + len` may hold anything but zeros; `false`
    /// lets the scan skip reading it.
    fn may_hold_data(&self, _offset: u64, _len: u64) -> bool {
        true
    }
}

impl Raw for [u8] {
    fn size(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.copy_from_slice(&self[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

impl Raw for Pieces<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        Pieces::read_at(self, offset, buf);
        Ok(())
    }
    fn may_hold_data(&self, offset: u64, len: u64) -> bool {
        self.touches(offset, len)
    }
}

/// A raw image in a file or on a block device.
pub struct RawFile {
    file: std::fs::File,
    len: u64,
}

impl RawFile {
    pub fn open(path: &std::path::Path) -> io::Result<RawFile> {
        use std::io::Seek;
        let mut file = std::fs::File::open(path)?;
        // Seeking to the end also sizes a block device, whose metadata says 0.
        let len = file.seek(io::SeekFrom::End(0))?;
        Ok(RawFile { file, len })
    }
}

impl Raw for RawFile {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }
}

/// Where everything goes, worked out from which guest clusters hold data.
#[derive(Debug, Clone)]
pub struct Plan {
    size: u64,
    /// Guest clusters that hold data, in order.
    used: Vec<u64>,
    /// L2 tables needed (index into L1), in order.
    l2_tables: Vec<u64>,
    l1_size: u64,
    l1_clusters: u64,
    rt: u64,
    rb: u64,
}

const L2_ENTRIES: u64 = CLUSTER / 8;

/// Scans the raw image for the clusters that hold data and lays the qcow2
/// file out. Memory: one cluster, and eight bytes per used cluster.
pub fn plan<R: Raw + ?Sized>(raw: &R) -> Result<Plan, Qcow2Error> {
    let size = raw.size();
    if !size.is_multiple_of(512) {
        return Err(Qcow2Error::Unaligned(size));
    }
    let guest_clusters = size.div_ceil(CLUSTER);
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
    let mut buf = vec![0u8; CLUSTER as usize];
    let mut used = Vec::new();
    for c in 0..guest_clusters {
        let start = c * CLUSTER;
        let len = CLUSTER.min(size - start);
        if !raw.may_hold_data(start, len) {
            continue;
        }
        let chunk = &mut buf[..len as usize];
        raw.read_at(start, chunk).map_err(Qcow2Error::Read)?;
        if chunk.iter().fold(0u8, |a, &b| a | b) != 0 {
            used.push(c);
        }
    }
    let mut l2_tables: Vec<u64> = used.iter().map(|c| c / L2_ENTRIES).collect();
    l2_tables.dedup();
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
    Ok(Plan {
        size,
        used,
        l2_tables,
        l1_size,
        l1_clusters,
        rt,
        rb,
    })
}

impl Plan {
    fn l1_at(&self) -> u64 {
        1
    }
    fn rt_at(&self) -> u64 {
        self.l1_at() + self.l1_clusters
    }
    fn rb_at(&self) -> u64 {
        self.rt_at() + self.rt
    }
    fn l2_at(&self) -> u64 {
        self.rb_at() + self.rb
    }
    fn data_at(&self) -> u64 {
        self.l2_at() + self.l2_tables.len() as u64
    }
    fn clusters(&self) -> u64 {
        self.data_at() + self.used.len() as u64
    }

    /// The qcow2 file's length.
    pub fn file_len(&self) -> u64 {
        self.clusters() * CLUSTER
    }

    /// Writes the file: header, L1, refcount table and blocks, L2 tables,
    /// then each used cluster read from `raw` again.
    pub fn write_to<R: Raw + ?Sized>(&self, raw: &R, sink: &mut dyn Sink) -> io::Result<()> {
        let put = |buf: &mut [u8], at: u64, v: u64| {
            buf[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
        };
        let mut cluster = vec![0u8; CLUSTER as usize];
        let h = &mut cluster[..HEADER_LEN as usize];
        h[0..4].copy_from_slice(b"QFI\xfb"); // magic
        h[4..8].copy_from_slice(&3u32.to_be_bytes()); // version
        // 8..20: no backing file
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes()); // cluster_bits
        h[24..32].copy_from_slice(&self.size.to_be_bytes()); // size
        // 32..36: crypt_method none
        h[36..40].copy_from_slice(&(self.l1_size as u32).to_be_bytes()); // l1_size
        h[40..48].copy_from_slice(&(self.l1_at() * CLUSTER).to_be_bytes()); // l1_table_offset
        h[48..56].copy_from_slice(&(self.rt_at() * CLUSTER).to_be_bytes()); // refcount_table_offset
        h[56..60].copy_from_slice(&(self.rt as u32).to_be_bytes()); // refcount_table_clusters
        // 60..72: no snapshots; 72..96: no feature bits
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
        h[100..104].copy_from_slice(&HEADER_LEN.to_be_bytes()); // header_length
        // Then the end-of-extensions marker: type 0, length 0 (already zero).
        sink.data(&cluster)?;

        // L1: one entry per L2 table that exists.
        let mut l1 = vec![0u8; (self.l1_clusters * CLUSTER) as usize];
        for (i, &t) in self.l2_tables.iter().enumerate() {
            put(
                &mut l1,
                t * 8,
                ((self.l2_at() + i as u64) * CLUSTER) | COPIED,
            );
        }
        sink.data(&l1)?;
        drop(l1);

        // The refcount table, then the blocks: every host cluster once.
        let mut rt = vec![0u8; (self.rt * CLUSTER) as usize];
        for b in 0..self.rb {
            put(&mut rt, b * 8, (self.rb_at() + b) * CLUSTER);
        }
        sink.data(&rt)?;
        drop(rt);
        let per_block = CLUSTER / 2;
        let total = self.clusters();
        for b in 0..self.rb {
            cluster.fill(0);
            let first = b * per_block;
            for c in first..total.min(first + per_block) {
                let at = ((c - first) * 2) as usize;
                cluster[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            sink.data(&cluster)?;
        }

        // L2 tables, each for its run of used clusters.
        let mut next = 0usize;
        for &t in &self.l2_tables {
            cluster.fill(0);
            while let Some(&c) = self.used.get(next) {
                if c / L2_ENTRIES != t {
                    break;
                }
                let host = self.data_at() + next as u64;
                put(
                    &mut cluster,
                    (c % L2_ENTRIES) * 8,
                    (host * CLUSTER) | COPIED,
                );
                next += 1;
            }
            sink.data(&cluster)?;
        }

        // The data, in guest order; a short last cluster is padded.
        for &c in &self.used {
            let start = c * CLUSTER;
            let len = CLUSTER.min(self.size - start) as usize;
            cluster[len..].fill(0);
            raw.read_at(start, &mut cluster[..len])?;
            sink.data(&cluster)?;
        }
        Ok(())
    }
}

/// Converts a raw disk image held in memory.
pub fn from_raw(raw: &[u8]) -> Result<Vec<u8>, Qcow2Error> {
    let plan = plan(raw)?;
    let mut out = Vec::with_capacity(plan.file_len() as usize);
    plan.write_to(raw, &mut out).map_err(Qcow2Error::Read)?;
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

    #[test]
    fn streamed_from_pieces_or_a_file_the_same_as_from_memory() {
        use std::borrow::Cow;
        // Data in the middle of a cluster, across two, and in a short last
        // cluster; the clusters between stay unallocated.
        let len = (40 << 16) - 512;
        let pieces = Pieces::from_unsorted(
            len,
            vec![
                (5, Cow::Owned(vec![1u8; 70_000])),
                ((7 << 16) + 12345, Cow::Owned(vec![2u8; 3])),
                ((12 << 16) - 1, Cow::Owned(vec![3u8; 2])),
                (len - 1, Cow::Owned(vec![4u8])),
            ],
        )
        .unwrap();
        let p = plan(&pieces).unwrap();
        let mut from_pieces = Vec::new();
        p.write_to(&pieces, &mut from_pieces).unwrap();
        // Header, L1, refcount table and block, one L2 table, six data
        // clusters (0, 1, 7, 11, 12, 39).
        assert_eq!(p.file_len(), (1 + 1 + 1 + 1 + 1 + 6) * CLUSTER);
        assert_eq!(from_pieces.len() as u64, p.file_len());
        let bytes = pieces.to_vec();
        assert!(from_raw(&bytes).unwrap() == from_pieces);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        std::fs::write(&path, &bytes).unwrap();
        let raw = RawFile::open(&path).unwrap();
        let mut from_file = Vec::new();
        plan(&raw).unwrap().write_to(&raw, &mut from_file).unwrap();
        assert!(from_file == from_pieces);
    }
}
