//! What an artifact file is, from its first bytes, so that `phase publish`
//! refuses to sign a kernel the machines cannot load: a kernel of the other
//! arch, or kernel and initrd given the wrong way round, is signed and
//! served as happily as the right ones, and fails only on the machine,
//! after the download, with nothing kexec'd.
//!
//! What each hand-off loads:
//! - x86_64: `kexec_file_load` takes a 64-bit bzImage: the setup header's
//!   `HdrS` at 0x202 (Documentation/arch/x86/boot.rst), and from boot
//!   protocol 2.12 on, `XLF_KERNEL_64` in `xloadflags` at 0x236;
//! - aarch64: the init's own loader takes an `Image` (`ARM\x64` at 0x38,
//!   Documentation/arch/arm64/booting.rst) or that Image gzip-compressed;
//! - an initrd is a newc cpio (`070701`/`070702`), or one compressed by any
//!   of the kernel's initramfs decompressors;
//! - a DTB starts with the FDT magic `d00dfeed`; a root image is squashfs
//!   (`hsqs`) or EROFS (`e0f5e1e2` at 1024).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use phase_manifest::Arch;
use thiserror::Error;

/// Bytes read from the start of a file: enough for every header above.
const HEAD: usize = 4096;
/// Bytes inflated from a compressed file to see what it holds.
const INNER: usize = 0x40;

#[derive(Debug, Error)]
pub enum FormatsError {
    #[error("read {name} {path}")]
    Read {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{name} {path} is {found}; {expected}{hint}")]
    Wrong {
        name: &'static str,
        path: PathBuf,
        found: Kind,
        expected: String,
        hint: &'static str,
    },
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An x86 bzImage; `kernel64` from `xloadflags` (protocol ≥ 2.12), or
    /// `None` for an older protocol that does not say.
    BzImage {
        kernel64: Option<bool>,
    },
    Arm64Image,
    /// An arm64 EFI zboot image (`zimg`), which only EFI firmware unpacks.
    Zboot,
    /// gzip data holding an arm64 Image.
    Arm64ImageGz,
    Elf,
    Cpio,
    /// Compressed data holding a cpio archive, or of a format whose content
    /// is not inspected here (the name says which).
    CompressedCpio(&'static str),
    /// Compressed data that does not hold a cpio archive or a kernel.
    Compressed(&'static str),
    Fdt,
    Squashfs,
    Erofs,
    Unknown,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::BzImage {
                kernel64: Some(false),
            } => f.write_str("a 32-bit x86 bzImage (HdrS at 0x202, no XLF_KERNEL_64)"),
            Kind::BzImage { .. } => f.write_str("an x86 bzImage (HdrS at 0x202)"),
            Kind::Arm64Image => f.write_str("an arm64 Image (ARM\\x64 at 0x38)"),
            Kind::Zboot => f.write_str("an arm64 EFI zboot image (zimg)"),
            Kind::Arm64ImageGz => f.write_str("a gzip-compressed arm64 Image (Image.gz)"),
            Kind::Elf => f.write_str("an ELF file (a vmlinux, not a boot image)"),
            Kind::Cpio => f.write_str("a cpio archive (an initramfs)"),
            Kind::CompressedCpio(how) => {
                write!(f, "a {how}-compressed cpio archive (an initramfs)")
            }
            Kind::Compressed(how) => write!(
                f,
                "{how} data that holds neither a kernel nor a cpio archive"
            ),
            Kind::Fdt => f.write_str("a device tree blob"),
            Kind::Squashfs => f.write_str("a squashfs image"),
            Kind::Erofs => f.write_str("an EROFS image"),
            Kind::Unknown => f.write_str("of no format a boot stage loads"),
        }
    }
}

/// Compression magics the kernel's initramfs unpacker knows
/// (lib/decompress.c), with their names.
const COMPRESSED: &[(&[u8], &str)] = &[
    (&[0x1f, 0x8b], "gzip"),
    (&[0x1f, 0x9e], "gzip"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x5d, 0x00, 0x00], "lzma"),
    (b"BZh", "bzip2"),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
    (&[0x89, b'L', b'Z', b'O', 0x00], "lzo"),
];

/// Classifies the start of a file. `inner` is the start of its decompressed
/// content when the file is compressed and that could be read.
pub fn classify(head: &[u8], inner: Option<&[u8]>) -> Kind {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0x202, b"HdrS") {
        let version = head
            .get(0x206..0x208)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let kernel64 =
            (version >= 0x020c).then(|| head.get(0x236).is_some_and(|flags| flags & 1 == 1));
        return Kind::BzImage { kernel64 };
    }
    if at(0x38, b"ARM\x64") {
        return Kind::Arm64Image;
    }
    if at(0, b"MZ") && at(4, b"zimg") {
        return Kind::Zboot;
    }
    if at(0, b"\x7fELF") {
        return Kind::Elf;
    }
    if at(0, b"070701") || at(0, b"070702") {
        return Kind::Cpio;
    }
    if at(0, &[0xd0, 0x0d, 0xfe, 0xed]) {
        return Kind::Fdt;
    }
    if at(0, b"hsqs") {
        return Kind::Squashfs;
    }
    if at(1024, &[0xe2, 0xe1, 0xf5, 0xe0]) {
        return Kind::Erofs;
    }
    if let Some((_, how)) = COMPRESSED.iter().find(|(magic, _)| at(0, magic)) {
        return match inner.map(|inner| classify(inner, None)) {
            Some(Kind::Arm64Image) if *how == "gzip" => Kind::Arm64ImageGz,
            Some(Kind::Cpio) => Kind::CompressedCpio(how),
            // Could not look inside (a format not decoded here, or the
            // start did not inflate): the magic is all there is to go by.
            None => Kind::CompressedCpio(how),
            Some(_) => Kind::Compressed(how),
        };
    }
    Kind::Unknown
}

/// The start of `path` and, for gzip, zstd and xz, of what it holds.
fn read_heads(path: &Path) -> io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut head = Vec::with_capacity(HEAD);
    File::open(path)?.take(HEAD as u64).read_to_end(&mut head)?;
    let file = || File::open(path);
    let decoder: Option<Box<dyn Read>> = if head.starts_with(&[0x1f, 0x8b]) {
        Some(Box::new(flate2::read::GzDecoder::new(file()?)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(file()?)
            .ok()
            .map(|d| Box::new(d) as Box<dyn Read>)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Box::new(xz2::read::XzDecoder::new(file()?)))
    } else {
        None
    };
    // A stream that does not decode is judged by its magic alone, and the
    // machine's decompressor will say more; this check is about mix-ups.
    let inner = decoder.and_then(|d| {
        let mut inner = Vec::with_capacity(INNER);
        d.take(INNER as u64).read_to_end(&mut inner).ok()?;
        (inner.len() >= 6).then_some(inner)
    });
    Ok((head, inner))
}

/// Checks that the file given as artifact `name` is what `arch` loads
/// there, naming the file, what it is and what was expected.
pub fn check(name: &'static str, path: &Path, arch: Arch) -> Result<Kind, FormatsError> {
    let (head, inner) = read_heads(path).map_err(|source| FormatsError::Read {
        name,
        path: path.to_owned(),
        source,
    })?;
    let found = classify(&head, inner.as_deref());
    let (ok, expected) = match (name, arch) {
        ("kernel", Arch::X86_64) => (
            matches!(found, Kind::BzImage { kernel64 } if kernel64 != Some(false)),
            "x86_64 kexec loads a 64-bit bzImage (HdrS at 0x202)",
        ),
        ("kernel", Arch::Aarch64) => (
            matches!(found, Kind::Arm64Image | Kind::Arm64ImageGz),
            "aarch64 kexec loads an arm64 Image (ARM\\x64 at 0x38) or Image.gz",
        ),
        ("initrd", _) => (
            matches!(found, Kind::Cpio | Kind::CompressedCpio(_)),
            "an initrd is a cpio archive (070701), plain or compressed",
        ),
        ("dtb", _) => (
            found == Kind::Fdt,
            "a dtb is a flattened device tree (d00dfeed)",
        ),
        ("root_image", _) => (
            matches!(found, Kind::Squashfs | Kind::Erofs),
            "a root image is squashfs (hsqs) or EROFS",
        ),
        _ => (true, ""),
    };
    if ok {
        return Ok(found);
    }
    let kernel_kind = matches!(
        found,
        Kind::BzImage { .. } | Kind::Arm64Image | Kind::Arm64ImageGz | Kind::Zboot
    );
    let hint = match (name, found) {
        ("kernel", Kind::Cpio | Kind::CompressedCpio(_)) => {
            "; were --kernel and --initrd given the wrong way round?"
        }
        ("initrd", _) if kernel_kind => "; were --kernel and --initrd given the wrong way round?",
        ("kernel", Kind::BzImage { .. }) | ("kernel", Kind::Arm64Image | Kind::Arm64ImageGz) => {
            "; is --arch right?"
        }
        ("kernel", Kind::Elf) => "; publish the bzImage or Image the build made from it",
        ("kernel", Kind::Zboot) => {
            "; the init loads only Image or Image.gz (build with CONFIG_EFI_ZBOOT=n)"
        }
        _ => "",
    };
    Err(FormatsError::Wrong {
        name,
        path: path.to_owned(),
        found,
        expected: expected.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of `len` zero bytes with `magic` at `offset`.
    fn with(len: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut head = vec![0u8; len];
        for (offset, magic) in parts {
            head[*offset..*offset + magic.len()].copy_from_slice(magic);
        }
        head
    }

    #[test]
    fn headers_are_told_apart() {
        let bz = |version: u16, flags: u8| {
            with(
                HEAD,
                &[
                    (0x202, b"HdrS"),
                    (0x206, &version.to_le_bytes()),
                    (0x236, &[flags]),
                ],
            )
        };
        let image = with(HEAD, &[(0x38, b"ARM\x64")]);
        let cpio = with(HEAD, &[(0, b"070701")]);
        type Case<'a> = (Vec<u8>, Option<&'a [u8]>, Kind);
        let table: &[Case<'_>] = &[
            (
                bz(0x020f, 0x7f),
                None,
                Kind::BzImage {
                    kernel64: Some(true),
                },
            ),
            (
                bz(0x020f, 0x7e),
                None,
                Kind::BzImage {
                    kernel64: Some(false),
                },
            ),
            (bz(0x020a, 0), None, Kind::BzImage { kernel64: None }),
            (image.clone(), None, Kind::Arm64Image),
            (with(HEAD, &[(0, b"MZ"), (4, b"zimg")]), None, Kind::Zboot),
            (with(HEAD, &[(0, b"\x7fELF")]), None, Kind::Elf),
            (cpio.clone(), None, Kind::Cpio),
            (with(HEAD, &[(0, b"070702")]), None, Kind::Cpio),
            (
                with(HEAD, &[(0, &[0xd0, 0x0d, 0xfe, 0xed])]),
                None,
                Kind::Fdt,
            ),
            (with(HEAD, &[(0, b"hsqs")]), None, Kind::Squashfs),
            (
                with(HEAD, &[(1024, &[0xe2, 0xe1, 0xf5, 0xe0])]),
                None,
                Kind::Erofs,
            ),
            (
                with(HEAD, &[(0, &[0x1f, 0x8b])]),
                Some(&image),
                Kind::Arm64ImageGz,
            ),
            (
                with(HEAD, &[(0, &[0x1f, 0x8b])]),
                Some(&cpio),
                Kind::CompressedCpio("gzip"),
            ),
            (
                with(HEAD, &[(0, &[0x1f, 0x8b])]),
                Some(&[0u8; 64]),
                Kind::Compressed("gzip"),
            ),
            (
                with(HEAD, &[(0, &[0x28, 0xb5, 0x2f, 0xfd])]),
                Some(&cpio),
                Kind::CompressedCpio("zstd"),
            ),
            (
                with(HEAD, &[(0, b"BZh")]),
                None,
                Kind::CompressedCpio("bzip2"),
            ),
            (
                with(HEAD, &[(0, &[0x02, 0x21, 0x4c, 0x18])]),
                None,
                Kind::CompressedCpio("lz4"),
            ),
            (vec![0u8; HEAD], None, Kind::Unknown),
            (Vec::new(), None, Kind::Unknown),
            (b"HdrS".to_vec(), None, Kind::Unknown),
            // A bzImage cut right after its magic: no version, no flags.
            (
                with(0x206, &[(0x202, b"HdrS")]),
                None,
                Kind::BzImage { kernel64: None },
            ),
        ];
        for (head, inner, kind) in table {
            assert_eq!(classify(head, *inner), *kind, "{kind}");
        }
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn each_artifact_must_be_what_its_arch_loads_there() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bz = file(
            d,
            "bzImage",
            &crate::testdata::fake_kernel(Arch::X86_64, 8192, 1),
        );
        let bz32 = file(
            d,
            "bzImage32",
            &with(
                HEAD,
                &[(0x202, b"HdrS"), (0x206, &[0x0f, 0x02]), (0x236, &[0])],
            ),
        );
        let image = file(
            d,
            "Image",
            &crate::testdata::fake_kernel(Arch::Aarch64, 8192, 2),
        );
        let image_gz = file(
            d,
            "Image.gz",
            &gzip(&crate::testdata::fake_kernel(Arch::Aarch64, 8192, 3)),
        );
        let cpio = file(d, "initrd.cpio", &crate::testdata::fake_initrd(5000, 4));
        let cpio_zst = file(
            d,
            "initrd.cpio.zst",
            &zstd::encode_all(&crate::testdata::fake_initrd(5000, 5)[..], 1).unwrap(),
        );
        let cpio_gz = file(
            d,
            "initrd.cpio.gz",
            &gzip(&crate::testdata::fake_initrd(5000, 6)),
        );
        let noise = file(d, "noise", &crate::testdata::noise(5000, 7));
        let gz_noise = file(d, "noise.gz", &gzip(&crate::testdata::noise(5000, 8)));
        let elf = file(d, "vmlinux", b"\x7fELF\x02\x01\x01");
        let missing = d.join("missing");
        let name = |p: &Path| p.display().to_string();
        type Case<'a> = (&'static str, &'a Path, Arch, Result<(), String>);
        let table: Vec<Case<'_>> = vec![
            ("kernel", &bz, Arch::X86_64, Ok(())),
            ("kernel", &image, Arch::Aarch64, Ok(())),
            ("kernel", &image_gz, Arch::Aarch64, Ok(())),
            ("initrd", &cpio, Arch::X86_64, Ok(())),
            ("initrd", &cpio_zst, Arch::Aarch64, Ok(())),
            ("initrd", &cpio_gz, Arch::Aarch64, Ok(())),
            (
                "kernel",
                &image,
                Arch::X86_64,
                Err(format!(
                    "kernel {} is an arm64 Image (ARM\\x64 at 0x38); x86_64 kexec loads a 64-bit bzImage (HdrS at 0x202); is --arch right?",
                    name(&image)
                )),
            ),
            (
                "kernel",
                &bz,
                Arch::Aarch64,
                Err(format!(
                    "kernel {} is an x86 bzImage (HdrS at 0x202); aarch64 kexec loads an arm64 Image (ARM\\x64 at 0x38) or Image.gz; is --arch right?",
                    name(&bz)
                )),
            ),
            (
                "kernel",
                &bz32,
                Arch::X86_64,
                Err("is a 32-bit x86 bzImage (HdrS at 0x202, no XLF_KERNEL_64)".into()),
            ),
            (
                "kernel",
                &cpio_zst,
                Arch::X86_64,
                Err(format!(
                    "kernel {} is a zstd-compressed cpio archive (an initramfs); x86_64 kexec loads a 64-bit bzImage (HdrS at 0x202); were --kernel and --initrd given the wrong way round?",
                    name(&cpio_zst)
                )),
            ),
            (
                "initrd",
                &bz,
                Arch::X86_64,
                Err(format!(
                    "initrd {} is an x86 bzImage (HdrS at 0x202); an initrd is a cpio archive (070701), plain or compressed; were --kernel and --initrd given the wrong way round?",
                    name(&bz)
                )),
            ),
            (
                "initrd",
                &image_gz,
                Arch::Aarch64,
                Err(
                    "is a gzip-compressed arm64 Image (Image.gz); an initrd is a cpio archive"
                        .into(),
                ),
            ),
            (
                "kernel",
                &noise,
                Arch::X86_64,
                Err("is of no format a boot stage loads".into()),
            ),
            (
                "initrd",
                &noise,
                Arch::X86_64,
                Err("is of no format a boot stage loads".into()),
            ),
            (
                "initrd",
                &gz_noise,
                Arch::X86_64,
                Err("is gzip data that holds neither a kernel nor a cpio archive".into()),
            ),
            (
                "kernel",
                &elf,
                Arch::X86_64,
                Err("is an ELF file (a vmlinux, not a boot image)".into()),
            ),
            (
                "dtb",
                &cpio,
                Arch::Aarch64,
                Err("a dtb is a flattened device tree (d00dfeed)".into()),
            ),
            (
                "root_image",
                &cpio,
                Arch::Aarch64,
                Err("a root image is squashfs (hsqs) or EROFS".into()),
            ),
            (
                "kernel",
                &missing,
                Arch::X86_64,
                Err(format!("read kernel {}", name(&missing))),
            ),
        ];
        for (artifact, path, arch, expected) in table {
            let got = check(artifact, path, arch)
                .map(|_| ())
                .map_err(|e| e.to_string());
            match (&got, &expected) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(expected)) => {
                    assert!(got.contains(expected), "{got:?} lacks {expected:?}");
                }
                _ => panic!(
                    "{artifact} {}: {got:?}, expected {expected:?}",
                    path.display()
                ),
            }
        }
    }
}
