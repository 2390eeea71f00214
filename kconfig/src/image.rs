//! Finding a kernel's own config (`CONFIG_IKCONFIG`) in its image.
//!
//! `kernel/configs.c` embeds the gzip'd `.config` between the markers
//! `IKCFG_ST` and `IKCFG_ED` (what `scripts/extract-ikconfig` looks for).
//! They are plain bytes in an uncompressed arm64 `Image` or a vmlinux; a
//! bzImage carries vmlinux compressed, at `payload_offset` for
//! `payload_length` bytes of the protected-mode code (boot protocol 2.08,
//! Documentation/arch/x86/boot.rst), in whatever format the kernel was built
//! with; an `Image.gz` and `/proc/config.gz` are gzip as a whole.
//!
//! This module only finds bytes and says how they are compressed; the
//! `decompress` feature adds [`read_config`], which undoes it all.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "the bzImage's setup header is cut short or its payload (offset {offset}, {length} bytes) lies outside its {size} bytes"
    )]
    Payload {
        offset: u64,
        length: u64,
        size: usize,
    },
    #[error(
        "the bzImage uses boot protocol {version:#06x}, older than 2.08, which records no payload"
    )]
    OldProtocol { version: u16 },
    #[error(
        "the bzImage's payload is {0}, which cannot be read here (gzip, xz, lzma, zstd and lz4 can)"
    )]
    Unsupported(Compression),
    #[error("the bzImage's payload starts with {head:02x?}, no compression format known")]
    UnknownPayload { head: Vec<u8> },
    #[error("the IKCFG_ST marker is not followed by gzip data")]
    NotGzip,
}

/// Compression formats a kernel (or its config) may come in, by magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lzma,
    Zstd,
    /// The legacy lz4 frame (`lz4 -l`) the kernel's build writes.
    Lz4,
    Bzip2,
    Lzo,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
        })
    }
}

impl Compression {
    /// The format `data` starts with (the magics of scripts/Makefile.lib's
    /// compressors), if any.
    pub fn sniff(data: &[u8]) -> Option<Compression> {
        match data {
            [0x1f, 0x8b, ..] => Some(Compression::Gzip),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            [0x02, 0x21, 0x4c, 0x18, ..] => Some(Compression::Lz4),
            [b'B', b'Z', b'h', ..] => Some(Compression::Bzip2),
            [0x89, b'L', b'Z', b'O', ..] => Some(Compression::Lzo),
            // lzma_alone: lc=3 lp=0 pb=2 (0x5d), then a little-endian
            // dictionary size; the kernel's is far below 4 GiB.
            [0x5d, 0x00, 0x00, ..] => Some(Compression::Lzma),
            _ => None,
        }
    }
}

const START: &[u8] = b"IKCFG_ST";
const END: &[u8] = b"IKCFG_ED";

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let offset = haystack[at..].iter().position(|&b| b == first)?;
        at += offset;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The gzip'd config between `IKCFG_ST` and `IKCFG_ED`, if the bytes (an
/// uncompressed kernel) hold them. A marker not followed by gzip data (a
/// string in some other code) is passed over.
pub fn ikconfig_gzip(kernel: &[u8]) -> Option<&[u8]> {
    let mut from = 0;
    while let Some(start) = find(kernel, START, from) {
        let data = start + START.len();
        if kernel.get(data..data + 2) == Some(&[0x1f, 0x8b]) {
            let end = find(kernel, END, data)?;
            return Some(&kernel[data..end]);
        }
        from = start + 1;
    }
    None
}

/// Whether the bytes are an x86 bzImage ("HdrS" at 0x202).
pub fn is_bzimage(kernel: &[u8]) -> bool {
    kernel.get(0x202..0x206) == Some(b"HdrS")
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A bzImage's compressed vmlinux and its format; `Ok(None)` if the bytes
/// are no bzImage.
pub fn bzimage_payload(kernel: &[u8]) -> Result<Option<(Compression, &[u8])>, ImageError> {
    if !is_bzimage(kernel) {
        return Ok(None);
    }
    let short = || ImageError::Payload {
        offset: 0,
        length: 0,
        size: kernel.len(),
    };
    let version = le16(kernel, 0x206).ok_or_else(short)?;
    if version < 0x0208 {
        return Err(ImageError::OldProtocol { version });
    }
    // setup_sects 0 means 4 (boot.rst); the protected-mode code follows the
    // boot sector and the setup sectors.
    let sects = match kernel.get(0x1f1).copied().ok_or_else(short)? {
        0 => 4,
        n => u64::from(n),
    };
    let offset = (sects + 1) * 512 + u64::from(le32(kernel, 0x248).ok_or_else(short)?);
    let length = u64::from(le32(kernel, 0x24c).ok_or_else(short)?);
    let outside = || ImageError::Payload {
        offset,
        length,
        size: kernel.len(),
    };
    let start = usize::try_from(offset).map_err(|_| outside())?;
    let end = usize::try_from(offset + length).map_err(|_| outside())?;
    let payload = kernel.get(start..end).ok_or_else(outside)?;
    match Compression::sniff(payload) {
        Some(c) => Ok(Some((c, payload))),
        None => Err(ImageError::UnknownPayload {
            head: payload.iter().take(8).copied().collect(),
        }),
    }
}

/// Where a config was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `.config` text.
    Text,
    /// gzip'd `.config` text (`/proc/config.gz`).
    ConfigGz,
    /// IKCONFIG of an uncompressed kernel (arm64 `Image`, vmlinux).
    Image,
    /// IKCONFIG of a gzip'd kernel (`Image.gz`).
    ImageGz,
    /// IKCONFIG of a bzImage's payload, compressed so.
    BzImage(Compression),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Text => f.write_str(".config text"),
            Origin::ConfigGz => f.write_str("gzip'd .config (config.gz)"),
            Origin::Image => f.write_str("IKCONFIG of an uncompressed kernel image"),
            Origin::ImageGz => f.write_str("IKCONFIG of a gzip'd kernel image"),
            Origin::BzImage(c) => write!(f, "IKCONFIG of a bzImage ({c} payload)"),
        }
    }
}

#[cfg(feature = "decompress")]
pub use read::{ReadError, decompress, read_config};

#[cfg(feature = "decompress")]
mod read {
    use std::io::Read;

    use thiserror::Error;

    use super::{Compression, ImageError, Origin, bzimage_payload, ikconfig_gzip};
    use crate::config::{Config, ConfigError};

    /// More than any kernel or config inflates to: a bound on what a
    /// hostile input can make the host allocate.
    pub const LIMIT: u64 = 1 << 30;

    #[derive(Debug, Error)]
    pub enum ReadError {
        #[error("decompressing {format}")]
        Decompress {
            format: Compression,
            #[source]
            error: std::io::Error,
        },
        #[error(transparent)]
        Image(#[from] ImageError),
        #[error("the config is not UTF-8 text")]
        NotText,
        #[error("{what}")]
        Config {
            what: String,
            #[source]
            error: ConfigError,
        },
        #[error(
            "{0} without IKCONFIG (no IKCFG_ST marker): build it with CONFIG_IKCONFIG, or give its .config"
        )]
        NoIkconfig(&'static str),
        #[error("neither a kernel config (text or gzip) nor a kernel image with IKCONFIG")]
        Unrecognised,
    }

    /// Decompresses `data`, at most [`LIMIT`] bytes of output. Trailing
    /// bytes after the stream (the size the kernel's build appends) are
    /// ignored.
    pub fn decompress(format: Compression, data: &[u8]) -> Result<Vec<u8>, ReadError> {
        let err = |error| ReadError::Decompress { format, error };
        let mut out = Vec::new();
        let mut take = |r: &mut dyn Read| r.take(LIMIT).read_to_end(&mut out).map(drop);
        match format {
            Compression::Gzip => take(&mut flate2::read::GzDecoder::new(data)),
            Compression::Xz => xz2::stream::Stream::new_stream_decoder(LIMIT, 0)
                .map_err(std::io::Error::other)
                .and_then(|s| lzma_family(s, data, &mut out)),
            Compression::Lzma => xz2::stream::Stream::new_lzma_decoder(LIMIT)
                .map_err(std::io::Error::other)
                .and_then(|s| lzma_family(s, data, &mut out)),
            Compression::Zstd => zstd::stream::read::Decoder::with_buffer(data)
                .map(|d| d.single_frame())
                .and_then(|mut d| take(&mut d)),
            Compression::Lz4 => lz4_legacy(data, &mut out),
            Compression::Bzip2 | Compression::Lzo => {
                return Err(ImageError::Unsupported(format).into());
            }
        }
        .map_err(err)?;
        Ok(out)
    }

    /// Runs an xz or lzma decoder until its stream ends, leaving what
    /// follows unread: liblzma's readers refuse bytes after the stream, and
    /// the kernel's build appends the uncompressed size there.
    fn lzma_family(
        mut stream: xz2::stream::Stream,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        use xz2::stream::{Action, Status};
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 1 << 16 {
                out.reserve(1 << 20);
            }
            let (seen, made) = (stream.total_in(), stream.total_out());
            let action = if input.is_empty() {
                Action::Finish
            } else {
                Action::Run
            };
            let status = stream
                .process_vec(input, out, action)
                .map_err(std::io::Error::other)?;
            // What one call consumed is below the input's length.
            input = &input[(stream.total_in() - seen) as usize..];
            if status == Status::StreamEnd {
                return Ok(());
            }
            if out.len() as u64 > LIMIT {
                return Err(std::io::Error::other("more than the 1 GiB limit"));
            }
            if input.is_empty() && stream.total_out() == made && stream.total_in() == seen {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stream ends early",
                ));
            }
        }
    }

    /// The legacy lz4 frame: the magic, then blocks of a little-endian
    /// compressed length and the block, each inflating to at most 8 MiB. A
    /// length that is not a whole block of what is left ends the frame (the
    /// kernel's build appends the uncompressed size after it).
    fn lz4_legacy(data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        const BLOCK: usize = 8 << 20;
        let mut rest = data.get(4..).unwrap_or_default();
        let mut block = vec![0u8; BLOCK];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len == 0x184c_2102 {
                // Another frame's magic: concatenated frames continue.
                rest = &rest[4..];
                continue;
            }
            let Some(body) = rest.get(4..4 + len) else {
                break;
            };
            let n = lz4_flex::block::decompress_into(body, &mut block)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            if out.len() as u64 + n as u64 > LIMIT {
                return Err(std::io::Error::other("more than the 1 GiB limit"));
            }
            out.extend_from_slice(&block[..n]);
            rest = &rest[4 + len..];
        }
        Ok(())
    }

    fn parse(text: Vec<u8>, what: &str) -> Result<Config, ReadError> {
        let text = String::from_utf8(text).map_err(|_| ReadError::NotText)?;
        Config::parse(&text).map_err(|error| ReadError::Config {
            what: what.to_owned(),
            error,
        })
    }

    fn from_ikconfig(kernel: &[u8], what: &'static str) -> Result<Option<Config>, ReadError> {
        let Some(gz) = ikconfig_gzip(kernel) else {
            return Ok(None);
        };
        let text = decompress(Compression::Gzip, gz)?;
        parse(text, &format!("the IKCONFIG of the {what}")).map(Some)
    }

    /// Reads a kernel config from any of: `.config` text, gzip'd text
    /// (`/proc/config.gz`), an uncompressed kernel with IKCONFIG (arm64
    /// `Image`, vmlinux), a gzip'd one (`Image.gz`), or a bzImage whose
    /// payload holds IKCONFIG.
    pub fn read_config(bytes: &[u8]) -> Result<(Config, Origin), ReadError> {
        if let Some((format, payload)) = bzimage_payload(bytes)? {
            let vmlinux = decompress(format, payload)?;
            return match from_ikconfig(&vmlinux, "bzImage")? {
                Some(c) => Ok((c, Origin::BzImage(format))),
                None => Err(ReadError::NoIkconfig("a bzImage")),
            };
        }
        if let Some(c) = from_ikconfig(bytes, "kernel image")? {
            return Ok((c, Origin::Image));
        }
        if Compression::sniff(bytes) == Some(Compression::Gzip) {
            let inflated = decompress(Compression::Gzip, bytes)?;
            if inflated.get(0x38..0x3c) == Some(b"ARM\x64") || inflated.starts_with(b"\x7fELF") {
                return match from_ikconfig(&inflated, "gzip'd kernel image")? {
                    Some(c) => Ok((c, Origin::ImageGz)),
                    None => Err(ReadError::NoIkconfig("a gzip'd kernel image")),
                };
            }
            return Ok((parse(inflated, "the gzip'd config")?, Origin::ConfigGz));
        }
        if bytes.get(0x38..0x3c) == Some(b"ARM\x64") || bytes.starts_with(b"\x7fELF") {
            return Err(ReadError::NoIkconfig("a kernel image"));
        }
        match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("CONFIG_") => {
                Ok((parse(bytes.to_vec(), "the config")?, Origin::Text))
            }
            _ => Err(ReadError::Unrecognised),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: setup_sects, protocol 2.15, payload at +0x100.
    pub(crate) fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let pm = (usize::from(setup_sects) + 1) * 512;
        let mut b = vec![0u8; pm + 0x100];
        b[0x1f1] = setup_sects;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0x100u32.to_le_bytes());
        // The build appends the uncompressed size to the compressed data,
        // inside payload_length; padding follows.
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        b.extend_from_slice(payload);
        b.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn markers_and_payloads() {
        let mut k = b"....IKCFG_ST but no gzip here ....IKCFG_ST".to_vec();
        k.extend_from_slice(&[0x1f, 0x8b, 8, 0, 1, 2, 3]);
        k.extend_from_slice(b"IKCFG_ED....");
        assert_eq!(ikconfig_gzip(&k), Some(&[0x1f, 0x8b, 8, 0, 1, 2, 3][..]));
        assert_eq!(ikconfig_gzip(b"IKCFG_ST\x1f\x8b never ends"), None);
        assert_eq!(ikconfig_gzip(b"nothing"), None);

        let b = bzimage(&[0xfd, b'7', b'z', b'X', b'Z', 0, 9, 9]);
        let (c, p) = bzimage_payload(&b).unwrap().unwrap();
        assert_eq!(c, Compression::Xz);
        assert_eq!(p.len(), 12);
        assert_eq!(bzimage_payload(b"not a kernel"), Ok(None));
        let mut cut = b.clone();
        cut.truncate(0x300);
        assert!(matches!(
            bzimage_payload(&cut),
            Err(ImageError::Payload { .. })
        ));
        let mut old = b.clone();
        old[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
        assert_eq!(
            bzimage_payload(&old),
            Err(ImageError::OldProtocol { version: 0x0204 })
        );
        let junk = bzimage(b"junkjunk");
        assert!(matches!(
            bzimage_payload(&junk),
            Err(ImageError::UnknownPayload { .. })
        ));
    }

    #[test]
    fn magics() {
        for (head, want) in [
            (&[0x1f, 0x8b, 8][..], Some(Compression::Gzip)),
            (&[0x28, 0xb5, 0x2f, 0xfd], Some(Compression::Zstd)),
            (&[0x02, 0x21, 0x4c, 0x18], Some(Compression::Lz4)),
            (&[0x5d, 0, 0, 0x80, 0], Some(Compression::Lzma)),
            (b"BZh9", Some(Compression::Bzip2)),
            (&[0x89, b'L', b'Z', b'O'], Some(Compression::Lzo)),
            (b"CONFIG_A=y", None),
        ] {
            assert_eq!(Compression::sniff(head), want, "{head:02x?}");
        }
    }

    #[cfg(feature = "decompress")]
    mod read {
        use std::io::Write;

        use super::super::*;
        use super::bzimage;

        const TEXT: &str = "CONFIG_X86_64=y\nCONFIG_IKCONFIG=y\n# CONFIG_KEXEC_FILE is not set\n";

        fn gz(data: &[u8]) -> Vec<u8> {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }

        /// Kernel-like bytes with the config embedded as configs.c does.
        fn vmlinux() -> Vec<u8> {
            let mut v = b"\x7fELF....IKCFG_ST".to_vec();
            v.extend_from_slice(&gz(TEXT.as_bytes()));
            v.extend_from_slice(b"IKCFG_ED");
            v.extend_from_slice(&[0u8; 4096]);
            v
        }

        fn lz4_legacy(data: &[u8]) -> Vec<u8> {
            let mut out = vec![0x02, 0x21, 0x4c, 0x18];
            for chunk in data.chunks(1000) {
                let block = lz4_flex::block::compress(chunk);
                out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                out.extend_from_slice(&block);
            }
            out
        }

        #[test]
        fn every_form_gives_the_same_config() {
            let want = crate::Config::parse(TEXT).unwrap();
            let v = vmlinux();
            let mut xz = Vec::new();
            {
                let s =
                    xz2::stream::Stream::new_easy_encoder(6, xz2::stream::Check::Crc32).unwrap();
                let mut e = xz2::write::XzEncoder::new_stream(&mut xz, s);
                e.write_all(&v).unwrap();
                e.finish().unwrap();
            }
            let mut lzma = Vec::new();
            {
                let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
                let s = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
                let mut e = xz2::write::XzEncoder::new_stream(&mut lzma, s);
                e.write_all(&v).unwrap();
                e.finish().unwrap();
            }
            let zst = zstd::bulk::compress(&v, 3).unwrap();
            let cases: Vec<(&str, Vec<u8>, Origin)> = vec![
                ("text", TEXT.as_bytes().to_vec(), Origin::Text),
                ("config.gz", gz(TEXT.as_bytes()), Origin::ConfigGz),
                ("vmlinux", v.clone(), Origin::Image),
                ("Image.gz", gz(&v), Origin::ImageGz),
                (
                    "bzImage gzip",
                    bzimage(&gz(&v)),
                    Origin::BzImage(Compression::Gzip),
                ),
                ("bzImage xz", bzimage(&xz), Origin::BzImage(Compression::Xz)),
                (
                    "bzImage lzma",
                    bzimage(&lzma),
                    Origin::BzImage(Compression::Lzma),
                ),
                (
                    "bzImage zstd",
                    bzimage(&zst),
                    Origin::BzImage(Compression::Zstd),
                ),
                (
                    "bzImage lz4",
                    bzimage(&lz4_legacy(&v)),
                    Origin::BzImage(Compression::Lz4),
                ),
            ];
            for (what, bytes, origin) in cases {
                let (got, o) = read_config(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(got, want, "{what}");
                assert_eq!(o, origin, "{what}");
            }
        }

        #[test]
        fn images_without_ikconfig_say_so() {
            let plain = b"\x7fELF no config in here".to_vec();
            for (what, bytes, want) in [
                ("vmlinux", plain.clone(), "a kernel image without IKCONFIG"),
                (
                    "Image.gz",
                    gz(&plain),
                    "a gzip'd kernel image without IKCONFIG",
                ),
                (
                    "bzImage",
                    bzimage(&gz(&plain)),
                    "a bzImage without IKCONFIG",
                ),
                ("binary", vec![0u8, 1, 2, 3], "neither a kernel config"),
                (
                    "bzip2 bzImage",
                    bzimage(b"BZh91AY&SY"),
                    "bzip2, which cannot be read here",
                ),
            ] {
                let e = read_config(&bytes).unwrap_err().to_string();
                assert!(e.contains(want), "{what}: {e}");
            }
        }
    }
}
