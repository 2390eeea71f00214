//! An image as the pieces that are not zeros: (offset, bytes) in offset
//! order, zeros between and after. Every format lays itself out this way,
//! so a 64 GiB disk that holds 20 MB is 20 MB in memory, a raw output can
//! seek over the zeros (a sparse file), and qcow2 can tell which of its
//! clusters hold data without reading a disk image back.
//!
//! No I/O here: [`Sink`] is what the pieces are written to, implemented by
//! `output` for files, devices and standard output.

use std::borrow::Cow;
use std::io;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PiecesError {
    #[error("piece at {offset} ({len} bytes) overlaps the one before, which ends at {end}")]
    Overlap { offset: u64, len: u64, end: u64 },
    #[error("piece at {offset} ({len} bytes) ends past the image's {image} bytes")]
    PastEnd { offset: u64, len: u64, image: u64 },
}

/// Where the bytes of an image go, in order from offset 0.
pub trait Sink {
    /// Writes `bytes` at the current position.
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Advances over `n` zero bytes (a file seeks, a device writes them).
    fn zeros(&mut self, n: u64) -> io::Result<()>;
}

/// Collects everything into memory: for tests and for callers that want
/// the whole image as one buffer (small images only).
impl Sink for Vec<u8> {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> io::Result<()> {
        let n = usize::try_from(n).map_err(|_| io::Error::other("image too large for memory"))?;
        self.resize(self.len() + n, 0);
        Ok(())
    }
}

/// The pieces of an image of `len` bytes.
#[derive(Debug, Clone, Default)]
pub struct Pieces<'a> {
    pub len: u64,
    /// Sorted by offset, not overlapping, each within `len`.
    list: Vec<(u64, Cow<'a, [u8]>)>,
}

impl<'a> Pieces<'a> {
    pub fn new(len: u64) -> Self {
        Pieces {
            len,
            list: Vec::new(),
        }
    }

    /// Builds from pieces in any order; refuses overlaps and pieces past the end.
    pub fn from_unsorted(
        len: u64,
        mut list: Vec<(u64, Cow<'a, [u8]>)>,
    ) -> Result<Self, PiecesError> {
        list.retain(|(_, d)| !d.is_empty());
        list.sort_by_key(|(o, _)| *o);
        let mut end = 0u64;
        for (offset, data) in &list {
            let plen = data.len() as u64;
            if *offset < end {
                return Err(PiecesError::Overlap {
                    offset: *offset,
                    len: plen,
                    end,
                });
            }
            end = offset + plen;
            if end > len {
                return Err(PiecesError::PastEnd {
                    offset: *offset,
                    len: plen,
                    image: len,
                });
            }
        }
        Ok(Pieces { len, list })
    }

    /// The pieces, in offset order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.list.iter().map(|(o, d)| (*o, d.as_ref()))
    }

    /// Moves every piece by `by` bytes into an image of `len` bytes (a
    /// partition placed on a disk).
    pub fn shifted(self, by: u64, len: u64) -> Result<Pieces<'a>, PiecesError> {
        Pieces::from_unsorted(
            len,
            self.list.into_iter().map(|(o, d)| (o + by, d)).collect(),
        )
    }

    /// Joins two sets of pieces into one image of `len` bytes.
    pub fn merged(self, other: Pieces<'a>, len: u64) -> Result<Pieces<'a>, PiecesError> {
        let mut list = self.list;
        list.extend(other.list);
        Pieces::from_unsorted(len, list)
    }

    /// Bytes held in memory (the image's non-zero part, roughly).
    pub fn data_bytes(&self) -> u64 {
        self.list.iter().map(|(_, d)| d.len() as u64).sum()
    }

    /// Writes the whole image, zeros included, to `sink`.
    pub fn write_to(&self, sink: &mut dyn Sink) -> io::Result<()> {
        let mut at = 0u64;
        for (offset, data) in &self.list {
            sink.zeros(offset - at)?;
            sink.data(data)?;
            at = offset + data.len() as u64;
        }
        sink.zeros(self.len - at)
    }

    /// The image as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len as usize);
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }

    /// Whether any piece overlaps `offset..offset + len` (if none does, the
    /// range is all zeros).
    pub fn touches(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        // The first piece that ends after `offset`.
        let i = self
            .list
            .partition_point(|(o, d)| o + d.len() as u64 <= offset);
        self.list.get(i).is_some_and(|(o, _)| *o < end)
    }

    /// Fills `buf` with the image's bytes at `offset` (zeros past the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset.saturating_add(buf.len() as u64);
        let mut i = self
            .list
            .partition_point(|(o, d)| o + d.len() as u64 <= offset);
        while let Some((o, d)) = self.list.get(i) {
            if *o >= end {
                break;
            }
            let from = offset.max(*o);
            let to = end.min(o + d.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&d[(from - o) as usize..(to - o) as usize]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_write_out_with_zeros_between() {
        let p = Pieces::from_unsorted(
            12,
            vec![
                (8, Cow::Borrowed(&b"xy"[..])),
                (1, Cow::Owned(b"ab".to_vec())),
                (5, Cow::Borrowed(&b""[..])),
            ],
        )
        .unwrap();
        assert_eq!(p.to_vec(), b"\0ab\0\0\0\0\0xy\0\0");
        assert!(p.touches(0, 2));
        assert!(!p.touches(3, 5));
        assert!(p.touches(9, 100));
        assert!(!p.touches(10, 2));
        let mut buf = [9u8; 6];
        p.read_at(2, &mut buf);
        assert_eq!(&buf, b"b\0\0\0\0\0");
        p.read_at(7, &mut buf);
        assert_eq!(&buf, b"\0xy\0\0\0");
        assert_eq!(
            Pieces::from_unsorted(
                4,
                vec![
                    (0, Cow::Borrowed(&b"abc"[..])),
                    (2, Cow::Borrowed(&b"c"[..]))
                ]
            )
            .unwrap_err(),
            PiecesError::Overlap {
                offset: 2,
                len: 1,
                end: 3
            }
        );
        assert!(matches!(
            Pieces::from_unsorted(2, vec![(1, Cow::Borrowed(&b"ab"[..]))]),
            Err(PiecesError::PastEnd { .. })
        ));
    }
}
