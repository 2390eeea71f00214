//! Whole-archive compression the kernel can undo at boot (RD_GZIP, RD_ZSTD,
//! RD_XZ). Each encoder runs single-threaded with fixed settings and no
//! timestamps, so the same input always gives the same bytes.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
    Xz,
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            _ => Err(format!(
                "unknown compression {s:?}: expected none, gzip, zstd or xz"
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        })
    }
}

impl Compression {
    pub fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Gzip => {
                // GzBuilder writes mtime 0 and OS "unknown" unless told otherwise.
                let mut enc =
                    flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Zstd => zstd::bulk::compress(data, 19),
            Compression::Xz => {
                // The kernel's XZ decoder checks CRC32 (or nothing), not the
                // default CRC64.
                let stream = xz2::stream::Stream::new_easy_encoder(6, xz2::stream::Check::Crc32)?;
                let mut enc = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
                enc.write_all(data)?;
                enc.finish()
            }
        }
    }
}
