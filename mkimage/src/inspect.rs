//! What an input really is, checked before it goes into an image: a kernel
//! that is whole, an initramfs that is one and whose programs are for the
//! kernel's machine, a device tree with its own length. Pure functions of
//! the bytes (decompressing an initramfs in memory is the only work), so
//! `phase publish` can run the same checks on what it publishes.
//!
//! - Kernels: the architecture from the boot header (`Arch::of_kernel`);
//!   an x86 bzImage must be as long as its setup header says
//!   (`(setup_sects + 1) * 512 + syssize * 16`, Documentation/arch/x86/boot.rst);
//!   an EFI stub's PE sections and signature must lie within the file (an
//!   arm64 Image's `image_size` is its size in memory, with bss, so it
//!   cannot tell a truncated file). An initramfs given as a kernel is named
//!   as such.
//! - Initramfs: newc cpio (`070701`, or `070702` with CRCs), or one
//!   compressed with a format the kernel can unpack; archives may follow
//!   one another, as the kernel reads them. Every ELF file in it must be for
//!   the kernel's architecture, and `/init` must be a program (ELF or `#!`).
//! - ELF: class, byte order, `e_machine`, and the interpreter (`PT_INTERP`)
//!   a dynamically linked program needs.

use std::io::{self, Read};

use thiserror::Error;

use crate::arch::{Arch, ArchError};

#[derive(Debug, Error)]
pub enum InspectError {
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error("{what} is not a squashfs or erofs image (no magic at byte 0 or 1024)")]
    NotRootImage { what: String },
    #[error("{what} is an initramfs ({format}), not a kernel: are --kernel and --initrd swapped?")]
    InitramfsAsKernel { what: String, format: String },
    #[error("{what} is truncated: {declared_by} declares {declared} bytes, the file has {len}")]
    Truncated {
        what: String,
        declared_by: String,
        declared: u64,
        len: u64,
    },
    #[error("{what} is not an x86 bzImage: {reason}")]
    BadBzImage { what: String, reason: &'static str },
    #[error(
        "{what} is not an initramfs: expected a newc cpio archive (070701) or one compressed with gzip, zstd, xz, lzma, bzip2, lz4 or lzo; it is {found}"
    )]
    NotInitramfs { what: String, found: String },
    #[error(
        "{what} is a damaged cpio archive (entry at byte {offset} of its {format} data): {reason}"
    )]
    BadCpio {
        what: String,
        format: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("{what}: decompressing its {format} data")]
    Decompress {
        what: String,
        format: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("{what} has no /init: the kernel would find nothing to start")]
    NoInit { what: String },
    #[error(
        "{what}: /init is neither an ELF program nor a #! script (it starts {head:02x?}); the kernel cannot run it"
    )]
    InitNotProgram { what: String, head: Vec<u8> },
    #[error("{what}: {file} is {found}, but {expected}")]
    WrongMachine {
        what: String,
        file: String,
        found: String,
        expected: String,
    },
    #[error("{what}: {file} is a damaged ELF file: {reason}")]
    BadElf {
        what: String,
        file: String,
        reason: &'static str,
    },
    #[error("{what} is not a device tree blob: {reason}")]
    NotDtb { what: String, reason: String },
}

/// ELF `e_machine` values of the two architectures.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// The ELF machine of an architecture.
pub fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => EM_X86_64,
        Arch::Aarch64 => EM_AARCH64,
    }
}

/// What an ELF header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub class64: bool,
    pub little_endian: bool,
    /// `e_type`: 1 relocatable (a kernel module), 2 executable, 3 shared
    /// object or position-independent executable.
    pub kind: u16,
    pub machine: u16,
    /// `PT_INTERP`: the dynamic loader a program needs, when it needs one.
    pub interp: Option<String>,
}

impl Elf {
    /// The architecture, if it is one of ours (64-bit, little-endian).
    pub fn arch(&self) -> Option<Arch> {
        if !self.class64 || !self.little_endian {
            return None;
        }
        match self.machine {
            EM_X86_64 => Some(Arch::X86_64),
            EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// "an aarch64 ELF program", "an x86_64 kernel module", …
    pub fn describe(&self) -> String {
        let what = match self.kind {
            1 => "ELF object (kernel module)",
            2 | 3 => "ELF program",
            _ => "ELF file",
        };
        let machine = match self.arch() {
            Some(a) => a.to_string(),
            None => {
                let name = match self.machine {
                    3 => "i386",
                    8 => "MIPS",
                    20 => "PowerPC",
                    21 => "PowerPC64",
                    22 => "s390",
                    40 => "32-bit ARM",
                    62 => "x86_64",
                    183 => "aarch64",
                    243 => "RISC-V",
                    258 => "LoongArch",
                    _ => "unknown",
                };
                format!(
                    "{}-bit {}-endian {name} (e_machine {})",
                    if self.class64 { 64 } else { 32 },
                    if self.little_endian { "little" } else { "big" },
                    self.machine
                )
            }
        };
        // "an x86_64", "an aarch64", "a 32-bit …".
        let article = if machine.starts_with(['a', 'x', 'i']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {machine} {what}")
    }
}

/// Parses an ELF header (and program headers, for the interpreter) from
/// the start of a file. `None` when it does not start with the ELF magic;
/// `Some(Err)` when it does but the header is damaged.
pub fn elf(b: &[u8]) -> Option<Result<Elf, &'static str>> {
    if b.get(..4) != Some(b"\x7fELF") {
        return None;
    }
    Some(parse_elf(b))
}

fn parse_elf(b: &[u8]) -> Result<Elf, &'static str> {
    let class64 = match b.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("its class is neither 32- nor 64-bit"),
    };
    let little_endian = match b.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("its byte order is neither little- nor big-endian"),
    };
    let u16_at = |at: usize| -> Option<u64> {
        let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if little_endian {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little_endian {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
        Some(if little_endian {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    };
    let short = "its header is cut short";
    let kind = u16_at(16).ok_or(short)? as u16;
    let machine = u16_at(18).ok_or(short)? as u16;
    let (phoff, phentsize, phnum) = if class64 {
        (
            u64_at(32).ok_or(short)?,
            u16_at(54).ok_or(short)?,
            u16_at(56).ok_or(short)?,
        )
    } else {
        (
            u32_at(28).ok_or(short)?,
            u16_at(42).ok_or(short)?,
            u16_at(44).ok_or(short)?,
        )
    };
    let mut interp = None;
    if phnum > 0 && (kind == 2 || kind == 3) {
        for i in 0..phnum {
            // Program headers far into a file are past what was read (the
            // first 64 KiB); none of ours are.
            let Some(h) = phoff
                .checked_add(i * phentsize)
                .and_then(|h| usize::try_from(h).ok())
            else {
                break;
            };
            let Some(p_type) = u32_at(h) else { break };
            if p_type != 3 {
                continue;
            }
            let (off, size) = if class64 {
                (u64_at(h + 8), u64_at(h + 32))
            } else {
                (u32_at(h + 4), u32_at(h + 16))
            };
            let (Some(off), Some(size)) = (off, size) else {
                return Err("its PT_INTERP header is cut short");
            };
            let path = usize::try_from(off)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(o, s)| b.get(o..o.checked_add(s)?))
                .ok_or("its PT_INTERP points past the file")?;
            let path = path.split(|&c| c == 0).next().unwrap_or_default();
            interp = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    Ok(Elf {
        class64,
        little_endian,
        kind,
        machine,
        interp,
    })
}

/// What a kernel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub arch: Arch,
}

/// Checks a kernel image (`what` names it in errors).
pub fn kernel(b: &[u8], what: &str) -> Result<KernelInfo, InspectError> {
    let arch = match Arch::of_kernel(b, what) {
        Ok(a) => a,
        Err(e) => {
            if let Some(format) = initramfs_format(b) {
                return Err(InspectError::InitramfsAsKernel {
                    what: what.to_owned(),
                    format,
                });
            }
            return Err(e.into());
        }
    };
    let len = b.len() as u64;
    if arch == Arch::X86_64 {
        let bad = |reason| InspectError::BadBzImage {
            what: what.to_owned(),
            reason,
        };
        if b.get(0x1FE..0x200) != Some(&[0x55, 0xAA]) {
            return Err(bad("no boot flag 55 AA at 0x1fe"));
        }
        // setup_sects 0 means 4 (Documentation/arch/x86/boot.rst).
        let setup_sects = match b[0x1F1] {
            0 => 4,
            n => u64::from(n),
        };
        let syssize = u64::from(u32::from_le_bytes(
            b.get(0x1F4..0x1F8)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("setup header cut short"))?,
        ));
        let declared = (setup_sects + 1) * 512 + syssize * 16;
        if declared > len {
            return Err(InspectError::Truncated {
                what: what.to_owned(),
                declared_by: format!(
                    "its setup header (setup_sects {setup_sects}, syssize {syssize})"
                ),
                declared,
                len,
            });
        }
    }
    pe_extents(b, what)?;
    Ok(KernelInfo { arch })
}

/// An EFI stub's sections and signature must lie within the file.
fn pe_extents(b: &[u8], what: &str) -> Result<(), InspectError> {
    let Ok(pe) = crate::uki::Pe::parse(b, what) else {
        return Ok(());
    };
    let len = b.len() as u64;
    for s in &pe.sections {
        let end = u64::from(s.raw_offset) + u64::from(s.raw_size);
        if s.raw_size > 0 && end > len {
            return Err(InspectError::Truncated {
                what: what.to_owned(),
                declared_by: format!("its EFI stub's section {}", s.name),
                declared: end,
                len,
            });
        }
    }
    // The certificate table (data directory 4) holds the Authenticode
    // signature appended to signed kernels; its file offset is a file
    // offset, not an RVA.
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
    };
    let opt = u32_at(0x3C).unwrap_or(0) as usize + 24;
    if let (Some(count), Some(offset), Some(size)) = (
        u32_at(opt + 108),
        u32_at(opt + 112 + 32),
        u32_at(opt + 112 + 36),
    ) && count > 4
        && size > 0
        && offset + size > len
    {
        return Err(InspectError::Truncated {
            what: what.to_owned(),
            declared_by: "its EFI stub's signature (certificate table)".into(),
            declared: offset + size,
            len,
        });
    }
    Ok(())
}

/// Compression formats the kernel unpacks an initramfs from, by magic.
fn compression(b: &[u8]) -> Option<&'static str> {
    Some(match b {
        [0x1F, 0x8B, ..] | [0x1F, 0x9E, ..] => "gzip",
        [0x28, 0xB5, 0x2F, 0xFD, ..] => "zstd",
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x5D, 0x00, 0x00, ..] => "lzma",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x02, 0x21, 0x4C, 0x18, ..] => "lz4",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        _ => return None,
    })
}

/// "cpio" or "zstd-compressed cpio" when `b` is an initramfs, judged by
/// the magic and, for formats this crate decodes, the first bytes inside.
fn initramfs_format(b: &[u8]) -> Option<String> {
    if is_cpio_magic(b) {
        return Some("cpio".into());
    }
    let format = compression(b)?;
    let mut head = [0u8; 6];
    match decoder(format, b)? {
        Ok(mut r) => r.read_exact(&mut head).ok()?,
        Err(_) => return None,
    }
    is_cpio_magic(&head).then(|| format!("{format}-compressed cpio"))
}

fn is_cpio_magic(b: &[u8]) -> bool {
    b.starts_with(b"070701") || b.starts_with(b"070702")
}

/// A decoder for the formats this crate links; `None` for the others.
fn decoder<'a>(format: &str, b: &'a [u8]) -> Option<io::Result<Box<dyn Read + 'a>>> {
    Some(match format {
        "gzip" => Ok(Box::new(flate2::read::MultiGzDecoder::new(b))),
        "zstd" => zstd::stream::read::Decoder::new(b).map(|d| Box::new(d) as Box<dyn Read>),
        "xz" => Ok(Box::new(xz2::read::XzDecoder::new_multi_decoder(b))),
        _ => return None,
    })
}

/// A description of bytes that are not an initramfs, for the error.
fn describe_other(b: &[u8]) -> String {
    if let Ok(a) = Arch::of_kernel(b, "") {
        return format!("a Linux kernel ({a}): are --kernel and --initrd swapped?");
    }
    if b.starts_with(b"MZ") {
        return "a PE/EFI executable".into();
    }
    if let Some(Ok(e)) = elf(b) {
        return e.describe();
    }
    if b.starts_with(&0xD00D_FEEDu32.to_be_bytes()) {
        return "a device tree blob".into();
    }
    if let Some(format) = compression(b) {
        return format!("{format}-compressed data that is not a cpio archive");
    }
    format!("something else (it starts {:02x?})", &b[..b.len().min(8)])
}

/// What an initramfs holds, as far as booting is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitramfsInfo {
    /// The format of each archive, in order: "cpio", "zstd", …
    pub formats: Vec<String>,
    /// Whether an entry named `init` exists.
    pub has_init: bool,
    /// Every regular file by path, in archive order.
    pub files: Vec<String>,
    /// Every ELF file by path, with what its header says.
    pub elves: Vec<(String, Elf)>,
    /// Whether some data was compressed with a format this crate cannot
    /// decode (lzma, bzip2, lz4, lzo), so its contents were not seen.
    pub opaque: bool,
    /// The image's own description (`/etc/phase/image.json`), if it has a
    /// readable one: the last in the archive wins, as the kernel unpacks.
    pub image: Option<phase_initramfs::image::ImageInfo>,
}

/// Reads an initramfs (`what` names it in errors): every archive in it,
/// decompressing what this crate can.
pub fn initramfs(b: &[u8], what: &str) -> Result<InitramfsInfo, InspectError> {
    if b.is_empty() {
        return Err(InspectError::NotInitramfs {
            what: what.to_owned(),
            found: "an empty file".into(),
        });
    }
    let mut info = InitramfsInfo::default();
    let mut at = 0usize;
    loop {
        // The kernel skips zeros between archives.
        while at < b.len() && b[at] == 0 {
            at += 1;
        }
        if at >= b.len() {
            break;
        }
        let rest = &b[at..];
        if is_cpio_magic(rest) {
            let mut r = io::Cursor::new(rest);
            walk_cpio(&mut r, what, "cpio", &mut info)?;
            info.formats.push("cpio".into());
            at += r.position() as usize;
            continue;
        }
        let Some(format) = compression(rest) else {
            let found = if info.formats.is_empty() {
                describe_other(b)
            } else {
                format!("followed at byte {at} by {}", describe_other(rest))
            };
            return Err(InspectError::NotInitramfs {
                what: what.to_owned(),
                found,
            });
        };
        info.formats.push(format.into());
        match decoder(format, rest) {
            None => info.opaque = true,
            Some(r) => {
                let mut r = r.map_err(|error| InspectError::Decompress {
                    what: what.to_owned(),
                    format,
                    error,
                })?;
                let mut head = [0u8; 6];
                r.read_exact(&mut head)
                    .map_err(|error| InspectError::Decompress {
                        what: what.to_owned(),
                        format,
                        error,
                    })?;
                if !is_cpio_magic(&head) {
                    return Err(InspectError::NotInitramfs {
                        what: what.to_owned(),
                        found: format!("{format}-compressed data that is not a cpio archive"),
                    });
                }
                // Archives follow one another inside the stream too.
                let mut pending = head.to_vec();
                loop {
                    walk_cpio(&mut (&pending[..]).chain(&mut r), what, format, &mut info)?;
                    match next_magic(&mut r, what, format)? {
                        Some(magic) => pending = magic.to_vec(),
                        None => break,
                    }
                }
            }
        }
        // A compressed stream runs to the end of the file for the formats
        // used here; what might follow it is not looked at.
        break;
    }
    Ok(info)
}

/// Skips the zeros after a trailer: the magic of the next archive, or
/// `None` at the end of the stream.
fn next_magic(
    r: &mut dyn Read,
    what: &str,
    format: &'static str,
) -> Result<Option<[u8; 6]>, InspectError> {
    let io = |error| InspectError::Decompress {
        what: what.to_owned(),
        format,
        error,
    };
    let mut magic = [0u8; 6];
    loop {
        match r.read(&mut magic[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) if magic[0] == 0 => continue,
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        }
    }
    r.read_exact(&mut magic[1..]).map_err(io)?;
    if !is_cpio_magic(&magic) {
        return Err(InspectError::BadCpio {
            what: what.to_owned(),
            format,
            offset: 0,
            reason: format!("the data after a trailer starts {magic:02x?}"),
        });
    }
    Ok(Some(magic))
}

/// Reads newc entries up to the trailer, noting `init` and ELF headers.
fn walk_cpio(
    r: &mut dyn Read,
    what: &str,
    format: &'static str,
    info: &mut InitramfsInfo,
) -> Result<(), InspectError> {
    let mut offset = 0u64;
    let damaged = |offset: u64, reason: String| InspectError::BadCpio {
        what: what.to_owned(),
        format,
        offset,
        reason,
    };
    let io = |error: io::Error| InspectError::Decompress {
        what: what.to_owned(),
        format,
        error,
    };
    loop {
        let mut h = [0u8; 110];
        read_exact_or(r, &mut h, offset, &damaged, &io)?;
        if !is_cpio_magic(&h) {
            return Err(damaged(
                offset,
                format!("no 070701 magic (found {:02x?})", &h[..6]),
            ));
        }
        let field = |i: usize| {
            let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).ok()?;
            u32::from_str_radix(s, 16).ok()
        };
        let (Some(mode), Some(filesize), Some(namesize)) = (field(1), field(6), field(11)) else {
            return Err(damaged(offset, "a header field is not hexadecimal".into()));
        };
        if namesize == 0 || namesize > 4096 {
            return Err(damaged(offset, format!("name size {namesize}")));
        }
        let name_pad = (110 + namesize as u64).next_multiple_of(4) - 110;
        let mut name = vec![0u8; name_pad as usize];
        read_exact_or(r, &mut name, offset, &damaged, &io)?;
        name.truncate(namesize as usize - 1);
        let name = String::from_utf8_lossy(&name).into_owned();
        let data_pad = u64::from(filesize).next_multiple_of(4);
        // The start of the file is enough for its ELF header and its
        // interpreter path.
        let keep = data_pad.min(64 << 10);
        let mut head = vec![0u8; keep as usize];
        read_exact_or(r, &mut head, offset, &damaged, &io)?;
        let skipped = io::copy(&mut r.take(data_pad - keep), &mut io::sink()).map_err(io)?;
        if skipped != data_pad - keep {
            return Err(damaged(offset, format!("{name}: the data is cut short")));
        }
        head.truncate(filesize as usize);
        offset += 110 + name_pad + data_pad;
        if name == "TRAILER!!!" {
            return Ok(());
        }
        let path = name.trim_start_matches("./").trim_start_matches('/');
        if mode & 0o170000 == 0o100000 && format!("/{path}") == phase_initramfs::layout::IMAGE_INFO
        {
            // An unreadable one only means the image's wishes are unknown.
            info.image = phase_initramfs::image::ImageInfo::from_json(&head).ok();
        }
        if path == "init" {
            info.has_init = true;
            let regular = mode & 0o170000 == 0o100000;
            if regular && elf(&head).is_none() && !head.starts_with(b"#!") {
                return Err(InspectError::InitNotProgram {
                    what: what.to_owned(),
                    head: head.iter().take(8).copied().collect(),
                });
            }
        }
        if mode & 0o170000 == 0o100000 {
            info.files.push(format!("/{path}"));
        }
        if mode & 0o170000 == 0o100000
            && let Some(e) = elf(&head)
        {
            let e = e.map_err(|reason| InspectError::BadElf {
                what: what.to_owned(),
                file: format!("/{path}"),
                reason,
            })?;
            info.elves.push((format!("/{path}"), e));
        }
    }
}

fn read_exact_or(
    r: &mut dyn Read,
    buf: &mut [u8],
    offset: u64,
    damaged: &dyn Fn(u64, String) -> InspectError,
    io: &dyn Fn(io::Error) -> InspectError,
) -> Result<(), InspectError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            damaged(offset, "the archive ends without a TRAILER!!! entry".into())
        } else {
            io(e)
        }
    })
}

/// Checks that a kernel and an initramfs make a machine that boots: each
/// is what it claims, the initramfs has a `/init` program, and every ELF
/// file in it is for the kernel's architecture.
pub fn boot_pair(
    kernel_bytes: &[u8],
    kernel_what: &str,
    initrd: &[u8],
    initrd_what: &str,
) -> Result<(KernelInfo, InitramfsInfo), InspectError> {
    let k = kernel(kernel_bytes, kernel_what)?;
    let i = initramfs(initrd, initrd_what)?;
    check_initramfs_for(
        &i,
        initrd_what,
        k.arch,
        &format!("the kernel {kernel_what} is {}", k.arch),
    )?;
    Ok((k, i))
}

/// Checks an initramfs for a machine of `arch`; `why` says where the
/// expectation comes from ("the kernel K is x86_64").
pub fn check_initramfs_for(
    info: &InitramfsInfo,
    what: &str,
    arch: Arch,
    why: &str,
) -> Result<(), InspectError> {
    if !info.has_init && !info.opaque {
        return Err(InspectError::NoInit {
            what: what.to_owned(),
        });
    }
    for (path, e) in &info.elves {
        if e.arch() != Some(arch) {
            return Err(InspectError::WrongMachine {
                what: what.to_owned(),
                file: path.clone(),
                found: e.describe(),
                expected: why.to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks a flattened device tree: magic, a header that fits, and a
/// `totalsize` equal to the file's length.
pub fn dtb(b: &[u8], what: &str) -> Result<(), InspectError> {
    let not = |reason: String| InspectError::NotDtb {
        what: what.to_owned(),
        reason,
    };
    let be = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    if be(0) != Some(0xD00D_FEED) {
        return Err(not(format!(
            "no d00dfeed magic (it starts {:02x?})",
            &b[..b.len().min(4)]
        )));
    }
    let (Some(total), Some(structs), Some(strings), Some(version)) = (be(4), be(8), be(12), be(20))
    else {
        return Err(not("its header is cut short".into()));
    };
    if total != b.len() {
        return Err(not(format!(
            "its header says {total} bytes (totalsize), the file has {}",
            b.len()
        )));
    }
    if version < 16 || structs >= total || strings > total {
        return Err(not(format!(
            "version {version}, structure block at {structs}, strings at {strings} of {total}"
        )));
    }
    Ok(())
}

/// The file system of a root image for a switch_root hand-off or a live
/// medium, by its superblock magic: `squashfs` ("hsqs" at 0) or `erofs`
/// (0xE0F5E1E2, little-endian, at 1024).
pub fn root_image(b: &[u8], what: &str) -> Result<&'static str, InspectError> {
    if b.starts_with(b"hsqs") {
        return Ok("squashfs");
    }
    if b.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
        return Ok("erofs");
    }
    Err(InspectError::NotRootImage { what: what.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_exec(machine: u16, interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&3u16.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        if let Some(path) = interp {
            b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
            b[54..56].copy_from_slice(&56u16.to_le_bytes());
            b[56..58].copy_from_slice(&1u16.to_le_bytes());
            b[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
            b[72..80].copy_from_slice(&0x100u64.to_le_bytes());
            b[96..104].copy_from_slice(&(path.len() as u64 + 1).to_le_bytes());
            b[0x100..0x100 + path.len()].copy_from_slice(path.as_bytes());
        }
        b
    }

    #[test]
    fn elf_headers() {
        let e = elf(&elf_exec(EM_AARCH64, None)).unwrap().unwrap();
        assert_eq!(e.arch(), Some(Arch::Aarch64));
        assert_eq!(e.interp, None);
        assert_eq!(e.describe(), "an aarch64 ELF program");
        let e = elf(&elf_exec(EM_X86_64, Some("/lib64/ld-linux-x86-64.so.2")))
            .unwrap()
            .unwrap();
        assert_eq!(e.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        let mut i386 = elf_exec(3, None);
        i386[4] = 1;
        let e = elf(&i386).unwrap().unwrap();
        assert_eq!(e.arch(), None);
        assert!(
            e.describe().contains("32-bit little-endian i386"),
            "{}",
            e.describe()
        );
        assert!(elf(b"#!/bin/sh").is_none());
        assert!(elf(b"\x7fELF stand-in").unwrap().is_err());
    }

    fn newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |name: &str, mode: u32, data: &[u8]| {
            out.extend_from_slice(b"070701");
            for f in [
                1,
                mode,
                0,
                0,
                1,
                0,
                data.len() as u32,
                0,
                0,
                0,
                0,
                name.len() as u32 + 1,
                0,
            ] {
                out.extend_from_slice(format!("{f:08X}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (n, m, d) in entries {
            put(n, *m, d);
        }
        put("TRAILER!!!", 0, &[]);
        out
    }

    #[test]
    fn initramfs_contents_are_read_through_compression_and_concatenation() {
        let init = elf_exec(EM_X86_64, None);
        let early = newc(&[("kernel/x86/microcode/x.bin", 0o100644, b"ucode")]);
        let main = newc(&[
            ("init", 0o100755, &init),
            ("lib/a.ko", 0o100644, &elf_exec(EM_X86_64, None)),
        ]);
        let zstd_main = zstd::encode_all(&main[..], 3).unwrap();
        let mut both = early.clone();
        both.resize(both.len().next_multiple_of(512), 0);
        both.extend_from_slice(&zstd_main);
        let info = initramfs(&both, "i").unwrap();
        assert_eq!(info.formats, ["cpio", "zstd"]);
        assert!(info.has_init);
        assert_eq!(
            info.files,
            ["/kernel/x86/microcode/x.bin", "/init", "/lib/a.ko"]
        );
        assert_eq!(info.elves.len(), 2);
        check_initramfs_for(&info, "i", Arch::X86_64, "x").unwrap();
        let err = check_initramfs_for(&info, "i", Arch::Aarch64, "the kernel k is aarch64")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "i: /init is an x86_64 ELF program, but the kernel k is aarch64"
        );
        // Not an initramfs at all, or a damaged one.
        let mut k = vec![0u8; 0x300];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        let err = initramfs(&k, "i").unwrap_err().to_string();
        assert!(
            err.contains("a Linux kernel (x86_64): are --kernel and --initrd swapped?"),
            "{err}"
        );
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b"just text").unwrap();
            e.finish().unwrap()
        };
        let err = initramfs(&gz, "i").unwrap_err().to_string();
        assert!(
            err.contains("gzip-compressed data that is not a cpio archive"),
            "{err}"
        );
        let err = initramfs(&main[..main.len() - 120], "i")
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged cpio archive"), "{err}");
        let no_init = newc(&[("etc/x", 0o100644, b"x")]);
        let info = initramfs(&no_init, "i").unwrap();
        assert!(matches!(
            check_initramfs_for(&info, "i", Arch::X86_64, "x"),
            Err(InspectError::NoInit { .. })
        ));
        let kernel_init = newc(&[("init", 0o100755, &k)]);
        assert!(matches!(
            initramfs(&kernel_init, "i"),
            Err(InspectError::InitNotProgram { .. })
        ));
    }

    #[test]
    fn kernels_must_be_whole() {
        let mut k = vec![0u8; 0x4000];
        k[0x1F1] = 3;
        k[0x1F4..0x1F8].copy_from_slice(&((0x4000u32 - 2048) / 16).to_le_bytes());
        k[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel(&k, "k").unwrap().arch, Arch::X86_64);
        let err = kernel(&k[..0x3000], "k").unwrap_err().to_string();
        assert_eq!(
            err,
            "k is truncated: its setup header (setup_sects 3, syssize 896) declares 16384 bytes, the file has 12288"
        );
        let cpio = newc(&[("init", 0o100755, b"#!/bin/sh\n")]);
        let z = zstd::encode_all(&cpio[..], 3).unwrap();
        assert_eq!(
            kernel(&z, "k").unwrap_err().to_string(),
            "k is an initramfs (zstd-compressed cpio), not a kernel: are --kernel and --initrd swapped?"
        );
    }

    #[test]
    fn device_trees_carry_their_length() {
        let mut d = vec![0u8; 72];
        d[0..4].copy_from_slice(&0xD00D_FEEDu32.to_be_bytes());
        d[4..8].copy_from_slice(&72u32.to_be_bytes());
        d[8..12].copy_from_slice(&56u32.to_be_bytes());
        d[12..16].copy_from_slice(&72u32.to_be_bytes());
        d[20..24].copy_from_slice(&17u32.to_be_bytes());
        dtb(&d, "d").unwrap();
        assert!(
            dtb(&d[..60], "d")
                .unwrap_err()
                .to_string()
                .contains("totalsize")
        );
        assert!(dtb(b"hello", "d").is_err());
    }
}
