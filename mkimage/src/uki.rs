//! Unified kernel images: systemd-stub with the kernel, initrd, command line
//! and os-release appended as PE/COFF sections (UAPI.5 "Unified Kernel
//! Image"; PE format per Microsoft's PE/COFF specification).
//!
//! The stub is kept byte for byte; new section headers go into the free
//! space after the existing ones (inside SizeOfHeaders), new section data
//! after the end of the file. Each new section's RVA follows the previous
//! one at SectionAlignment and its file offset at 4096 bytes (a multiple of
//! every FileAlignment), then SizeOfImage, SizeOfInitializedData and the
//! checksum are brought up to date.

use thiserror::Error;

use crate::arch::{Arch, ArchError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UkiError {
    #[error("{what} is not a PE/COFF image: {reason}")]
    NotPe { what: String, reason: &'static str },
    #[error("{what} is a PE32 image; only PE32+ (64-bit) stubs are supported")]
    Pe32 { what: String },
    #[error("the stub is for {stub} but the kernel is {kernel}")]
    ArchMismatch { stub: Arch, kernel: Arch },
    #[error("the stub's PE machine {machine:#06x} is neither x86_64 nor aarch64")]
    StubMachine { machine: u16 },
    #[error("the kernel has no EFI stub (no PE header for {arch}); build it with CONFIG_EFI_STUB")]
    NoEfiStub { arch: Arch },
    #[error("the stub already has a {0} section: it is a UKI, not a stub")]
    AlreadyUki(String),
    #[error(
        "the stub has room for {room} more section headers before its first section, not {needed}"
    )]
    NoHeaderRoom { room: usize, needed: usize },
    #[error("the image would exceed 4 GiB")]
    TooLarge,
    #[error("kernel")]
    Kernel(#[source] ArchError),
}

/// One section header, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

/// The parts of a PE/COFF image this module reads and updates.
#[derive(Debug, Clone)]
pub struct Pe {
    pub machine: u16,
    /// Offset of the COFF header ("PE\0\0" + 4).
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub checksum: u32,
    pub sections: Vec<Section>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Pe {
    /// Parses the headers of a PE32+ image.
    pub fn parse(b: &[u8], what: &str) -> Result<Pe, UkiError> {
        let not = |reason| UkiError::NotPe {
            what: what.to_owned(),
            reason,
        };
        if b.get(..2) != Some(b"MZ") {
            return Err(not("no MZ signature"));
        }
        let pe = u32_at(b, 0x3C).ok_or(not("truncated DOS header"))? as usize;
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(not("no PE signature at e_lfanew"));
        }
        let coff = pe + 4;
        let machine = u16_at(b, coff).ok_or(not("truncated COFF header"))?;
        let nsections = u16_at(b, coff + 2).ok_or(not("truncated COFF header"))?;
        let opt_size = u16_at(b, coff + 16).ok_or(not("truncated COFF header"))? as usize;
        let opt = coff + 20;
        match u16_at(b, opt) {
            Some(0x20B) => {}
            Some(0x10B) => {
                return Err(UkiError::Pe32 {
                    what: what.to_owned(),
                });
            }
            _ => return Err(not("unknown optional header magic")),
        }
        let field = |off: usize| u32_at(b, opt + off).ok_or(not("truncated optional header"));
        let mut sections = Vec::new();
        let table = opt + opt_size;
        for i in 0..nsections as usize {
            let s = b
                .get(table + 40 * i..table + 40 * (i + 1))
                .ok_or(not("truncated section table"))?;
            let name_end = s[..8].iter().position(|&c| c == 0).unwrap_or(8);
            let word = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().expect("4 bytes"));
            sections.push(Section {
                name: String::from_utf8_lossy(&s[..name_end]).into_owned(),
                virtual_size: word(8),
                virtual_address: word(12),
                raw_size: word(16),
                raw_offset: word(20),
                characteristics: word(36),
            });
        }
        Ok(Pe {
            machine,
            coff,
            opt,
            section_alignment: field(32)?,
            file_alignment: field(36)?,
            size_of_image: field(56)?,
            size_of_headers: field(60)?,
            checksum: field(64)?,
            sections,
        })
    }

    fn section_table(&self, b: &[u8]) -> usize {
        // SizeOfOptionalHeader was read in parse().
        self.opt + u16_at(b, self.coff + 16).unwrap_or(0) as usize
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A section's bytes as stored in the file (VirtualSize of them).
    pub fn section_data<'a>(&self, b: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let s = self.section(name)?;
        let len = s.virtual_size.min(s.raw_size) as usize;
        b.get(s.raw_offset as usize..s.raw_offset as usize + len)
    }
}

/// The PE checksum (as imagehlp's CheckSumMappedFile computes it): the
/// 16-bit one's-complement sum of the file, skipping the checksum field,
/// plus the file length.
pub fn pe_checksum(b: &[u8], checksum_at: usize) -> u32 {
    fold_checksum(word_sum(b) - field_sum(b, checksum_at), b.len() as u64)
}

/// The sum of `b`'s 16-bit little-endian words (an odd last byte is a word
/// with a zero high byte). One's-complement addition is associative: sum in
/// a wide accumulator (2^31 words of at most 0xFFFF cannot overflow 64
/// bits) and fold the carries once at the end; the compiler vectorises this.
fn word_sum(b: &[u8]) -> u64 {
    let words = b.chunks_exact(2);
    let tail = words.remainder().first().map_or(0, |&x| u64::from(x));
    words
        .map(|w| u64::from(u16::from_le_bytes([w[0], w[1]])))
        .sum::<u64>()
        + tail
}

/// The words of the checksum field, which the checksum leaves out.
fn field_sum(b: &[u8], checksum_at: usize) -> u64 {
    [checksum_at, checksum_at + 2]
        .iter()
        .filter_map(|&at| b.get(at..at + 2))
        .map(|w| u64::from(u16::from_le_bytes([w[0], w[1]])))
        .sum()
}

fn fold_checksum(mut sum: u64, len: u64) -> u32 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    // The length of a PE image fits in 32 bits (checked by the caller).
    (sum as u32).wrapping_add(len as u32)
}

/// `nop` in AArch64 (0xD503201F), little-endian.
const AARCH64_NOP: [u8; 4] = [0x1F, 0x20, 0x03, 0xD5];

/// Characteristics of the appended sections: initialized, read-only data.
pub const DATA_RO: u32 = 0x4000_0040;

/// What a UKI is made of.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub stub: &'a [u8],
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    /// `None` leaves out `.cmdline`, so the command line comes from the
    /// boot loader (systemd-boot entries) instead.
    pub cmdline: Option<&'a str>,
    pub osrel: &'a str,
    pub uname: Option<&'a str>,
    /// A device tree systemd-stub installs before starting the kernel.
    pub dtb: Option<&'a [u8]>,
}

/// A built UKI and where its payload sections are.
#[derive(Debug, Clone)]
pub struct Uki {
    /// The image; from [`build_sparse`], with zeros where `.linux` and
    /// `.initrd` go.
    pub bytes: Vec<u8>,
    pub arch: Arch,
    pub sections: Vec<Section>,
}

/// File offsets of new sections are aligned to this.
pub const DATA_ALIGN: u64 = 4096;

/// Appends the parts to the stub.
pub fn build(parts: &Parts<'_>) -> Result<Uki, UkiError> {
    assemble(parts, false)
}

/// The sections whose data [`build_sparse`] leaves out.
pub const SPARSE_SECTIONS: [&str; 2] = [".linux", ".initrd"];

/// Like [`build`], but the bytes hold zeros where the kernel and the
/// initramfs go (the headers and the checksum are those of the whole UKI):
/// for a writer that streams those two from the inputs instead of copying
/// them into the UKI first.
pub fn build_sparse(parts: &Parts<'_>) -> Result<Uki, UkiError> {
    assemble(parts, true)
}

fn assemble(parts: &Parts<'_>, sparse: bool) -> Result<Uki, UkiError> {
    let stub = Pe::parse(parts.stub, "the stub")?;
    let arch = Arch::from_pe_machine(stub.machine).ok_or(UkiError::StubMachine {
        machine: stub.machine,
    })?;
    let kernel_arch = Arch::of_kernel(parts.kernel, "the kernel").map_err(UkiError::Kernel)?;
    if kernel_arch != arch {
        return Err(UkiError::ArchMismatch {
            stub: arch,
            kernel: kernel_arch,
        });
    }
    match Pe::parse(parts.kernel, "the kernel") {
        Ok(k) if k.machine == arch.pe_machine() => {}
        _ => return Err(UkiError::NoEfiStub { arch }),
    }
    for name in [".linux", ".initrd", ".cmdline", ".osrel"] {
        if stub.section(name).is_some() {
            return Err(UkiError::AlreadyUki(name.to_owned()));
        }
    }

    let mut new: Vec<(&str, &[u8])> = vec![(".osrel", parts.osrel.as_bytes())];
    if let Some(c) = parts.cmdline {
        new.push((".cmdline", c.as_bytes()));
    }
    if let Some(d) = parts.dtb {
        new.push((".dtb", d));
    }
    if let Some(u) = parts.uname {
        new.push((".uname", u.as_bytes()));
    }
    new.push((".linux", parts.kernel));
    new.push((".initrd", parts.initrd));

    let table = stub.section_table(parts.stub);
    let table_end = table + 40 * stub.sections.len();
    let first_raw = stub
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(stub.size_of_headers as usize)
        .min(stub.size_of_headers as usize);
    let room = first_raw.saturating_sub(table_end) / 40;
    if room < new.len() {
        return Err(UkiError::NoHeaderRoom {
            room,
            needed: new.len(),
        });
    }
    // The header area past the table must be padding — zeros, or the
    // AArch64 NOPs gnu-efi's hand-written arm64 header is padded with — and
    // not hold the entry point; anything else (a signature, say) would be
    // overwritten by the new headers.
    let room_bytes = &parts.stub[table_end..table_end + 40 * new.len()];
    let padding = room_bytes.iter().all(|&b| b == 0)
        || (arch == Arch::Aarch64
            && room_bytes
                .chunks(4)
                .all(|w| w == AARCH64_NOP.get(..w.len()).unwrap_or(&[])));
    let entry = u32_at(parts.stub, stub.opt + 16).unwrap_or(0) as usize;
    if !padding || (table_end..table_end + 40 * new.len()).contains(&entry) {
        return Err(UkiError::NoHeaderRoom {
            room: 0,
            needed: new.len(),
        });
    }

    let sa = u64::from(stub.section_alignment.max(1));
    let fa = u64::from(stub.file_alignment.max(1));
    let align = |v: u64, a: u64| v.div_ceil(a) * a;
    let mut next_rva = align(
        stub.sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
            .max()
            .unwrap_or(u64::from(stub.size_of_headers)),
        sa,
    );
    let total: u64 = parts.stub.len() as u64
        + new
            .iter()
            .map(|(_, d)| d.len() as u64 + DATA_ALIGN)
            .sum::<u64>();
    if total > u64::from(u32::MAX) {
        return Err(UkiError::TooLarge);
    }
    // Lay the sections out, then fill one zeroed buffer: what a sparse
    // build leaves out is never touched.
    let mut end = parts.stub.len() as u64;
    let placed: Vec<(u64, u64)> = new
        .iter()
        .map(|(_, data)| {
            let raw_offset = align(end, DATA_ALIGN.max(fa));
            let raw_size = align(data.len() as u64, fa);
            end = raw_offset + raw_size;
            (raw_offset, raw_size)
        })
        .collect();
    let mut out = vec![0u8; end as usize];
    out[..parts.stub.len()].copy_from_slice(parts.stub);
    // Words of the left-out data, for the checksum.
    let mut left_out = 0u64;
    let mut sections = stub.sections.clone();
    let mut added_init = 0u64;
    for (i, ((name, data), &(raw_offset, raw_size))) in new.iter().zip(&placed).enumerate() {
        if sparse && SPARSE_SECTIONS.contains(name) {
            left_out += word_sum(data);
        } else {
            out[raw_offset as usize..raw_offset as usize + data.len()].copy_from_slice(data);
        }
        // Checked against 4 GiB above.
        let s = Section {
            name: (*name).to_owned(),
            virtual_size: data.len() as u32,
            virtual_address: next_rva as u32,
            raw_size: raw_size as u32,
            raw_offset: raw_offset as u32,
            characteristics: DATA_RO,
        };
        let h = &mut out[table_end + 40 * i..table_end + 40 * (i + 1)];
        h.fill(0); // over the padding
        h[..name.len()].copy_from_slice(name.as_bytes()); // Name, NUL-padded
        h[8..12].copy_from_slice(&s.virtual_size.to_le_bytes()); // VirtualSize
        h[12..16].copy_from_slice(&s.virtual_address.to_le_bytes()); // VirtualAddress
        h[16..20].copy_from_slice(&s.raw_size.to_le_bytes()); // SizeOfRawData
        h[20..24].copy_from_slice(&s.raw_offset.to_le_bytes()); // PointerToRawData
        // 24..36: relocations and line numbers, none.
        h[36..40].copy_from_slice(&s.characteristics.to_le_bytes()); // Characteristics
        next_rva = align(next_rva + data.len().max(1) as u64, sa);
        added_init += raw_size;
        sections.push(s);
    }
    if next_rva > u64::from(u32::MAX) {
        return Err(UkiError::TooLarge);
    }
    let count = (stub.sections.len() + new.len()) as u16;
    out[stub.coff + 2..stub.coff + 4].copy_from_slice(&count.to_le_bytes()); // NumberOfSections
    let init = u32_at(&out, stub.opt + 8).unwrap_or(0);
    let init = u32::try_from(u64::from(init) + added_init).map_err(|_| UkiError::TooLarge)?;
    out[stub.opt + 8..stub.opt + 12].copy_from_slice(&init.to_le_bytes()); // SizeOfInitializedData
    out[stub.opt + 56..stub.opt + 60].copy_from_slice(&(next_rva as u32).to_le_bytes()); // SizeOfImage
    let checksum_at = stub.opt + 64;
    // Sparse: the zeros add nothing, and every left-out section starts on
    // an even offset, so its words are the image's words.
    let sum = fold_checksum(
        word_sum(&out) + left_out - field_sum(&out, checksum_at),
        out.len() as u64,
    );
    out[checksum_at..checksum_at + 4].copy_from_slice(&sum.to_le_bytes()); // CheckSum
    Ok(Uki {
        bytes: out,
        arch,
        sections,
    })
}

/// The os-release text for `.osrel`.
pub fn os_release(version: &str, arch: Arch) -> String {
    format!(
        "NAME=\"Phase Boot\"\nID=phase\nPRETTY_NAME=\"Phase Boot {version} ({arch})\"\nVERSION_ID={version}\nHOME_URL=\"{}\"\n",
        env!("CARGO_PKG_REPOSITORY")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: DOS header, PE header, optional header with
    /// no data directories, one .text section, as a stub stand-in for the
    /// header arithmetic (the real stubs are exercised by the referee tests).
    pub(crate) fn tiny_pe(machine: u16, section_alignment: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes()); // e_lfanew
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        b[coff..coff + 2].copy_from_slice(&machine.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes()); // one section
        b[coff + 16..coff + 18].copy_from_slice(&112u16.to_le_bytes()); // optional header size
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&section_alignment.to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
        b[opt + 56..opt + 60].copy_from_slice(&(section_alignment * 2).to_le_bytes()); // SizeOfImage
        b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        let s = opt + 112;
        b[s..s + 5].copy_from_slice(b".text");
        b[s + 8..s + 12].copy_from_slice(&0x10u32.to_le_bytes()); // VirtualSize
        b[s + 12..s + 16].copy_from_slice(&section_alignment.to_le_bytes()); // VirtualAddress
        b[s + 16..s + 20].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfRawData
        b[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes()); // PointerToRawData
        b[0x200] = 0xC3;
        b
    }

    fn tiny_kernel_x86() -> Vec<u8> {
        let mut k = tiny_pe(0x8664, 0x200);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    #[test]
    fn sections_are_appended_with_aligned_addresses() {
        let stub = tiny_pe(0x8664, 0x1000);
        let kernel = tiny_kernel_x86();
        let uki = build(&Parts {
            stub: &stub,
            kernel: &kernel,
            initrd: &[9; 5000],
            cmdline: Some("console=ttyS0"),
            osrel: "ID=phase\n",
            uname: None,
            dtb: None,
        })
        .unwrap();
        let pe = Pe::parse(&uki.bytes, "uki").unwrap();
        let names: Vec<&str> = pe.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".osrel", ".cmdline", ".linux", ".initrd"]);
        // RVAs follow .text (0x1000..0x1200) at 0x1000 alignment.
        let rvas: Vec<u32> = pe.sections.iter().map(|s| s.virtual_address).collect();
        assert_eq!(rvas, [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]);
        // File data at 4096-byte offsets, raw sizes in whole FileAlignment units.
        let initrd = pe.section(".initrd").unwrap();
        assert_eq!(initrd.raw_offset % 4096, 0);
        assert_eq!(initrd.raw_size, 5120);
        assert_eq!(initrd.virtual_size, 5000);
        assert_eq!(
            pe.section_data(&uki.bytes, ".cmdline"),
            Some(&b"console=ttyS0"[..])
        );
        assert_eq!(pe.section_data(&uki.bytes, ".linux"), Some(&kernel[..]));
        // SizeOfImage covers the last section, rounded to SectionAlignment.
        assert_eq!(pe.size_of_image, 0x5000 + 0x2000);
        assert_eq!(pe.checksum, pe_checksum(&uki.bytes, pe.opt + 64));
        assert_eq!(pe.sections[4].characteristics, DATA_RO);
    }

    #[test]
    fn a_sparse_uki_is_the_whole_uki_without_kernel_and_initrd() {
        let stub = tiny_pe(0x8664, 0x1000);
        let mut kernel = tiny_kernel_x86();
        kernel.push(0xA5); // an odd length: the checksum pairs it with padding
        let initrd: Vec<u8> = (0..7001u32).map(|i| (i * 7) as u8).collect();
        let parts = Parts {
            stub: &stub,
            kernel: &kernel,
            initrd: &initrd,
            cmdline: Some("console=ttyS0"),
            osrel: "ID=phase\n",
            uname: None,
            dtb: None,
        };
        let whole = build(&parts).unwrap();
        let mut sparse = build_sparse(&parts).unwrap();
        assert_eq!(sparse.bytes.len(), whole.bytes.len());
        let pe = Pe::parse(&sparse.bytes, "sparse").unwrap();
        for (name, data) in [(".linux", &kernel), (".initrd", &initrd)] {
            let at = pe.section(name).unwrap().raw_offset as usize;
            let hole = &mut sparse.bytes[at..at + data.len()];
            assert!(hole.iter().all(|&b| b == 0), "{name} was written");
            hole.copy_from_slice(data);
        }
        // Headers, checksum included, describe the whole UKI.
        assert_eq!(sparse.bytes, whole.bytes);
    }

    #[test]
    fn section_header_golden() {
        let stub = tiny_pe(0x8664, 0x1000);
        let kernel = tiny_kernel_x86();
        let uki = build(&Parts {
            stub: &stub,
            kernel: &kernel,
            initrd: &[],
            cmdline: None,
            osrel: "ID=phase\n",
            uname: None,
            dtb: None,
        })
        .unwrap();
        let at = 0x44 + 20 + 112 + 40; // after the stub's one header
        #[rustfmt::skip]
        let want: [u8; 40] = [
            b'.', b'o', b's', b'r', b'e', b'l', 0, 0, // Name
            0x09, 0x00, 0x00, 0x00,                   // VirtualSize: 9 bytes
            0x00, 0x20, 0x00, 0x00,                   // VirtualAddress 0x2000
            0x00, 0x02, 0x00, 0x00,                   // SizeOfRawData 0x200
            0x00, 0x10, 0x00, 0x00,                   // PointerToRawData 0x1000
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       // no relocations or line numbers
            0x40, 0x00, 0x00, 0x40,                   // initialized data, readable
        ];
        assert_eq!(&uki.bytes[at..at + 40], &want);
    }

    #[test]
    fn arm64_nop_padding_is_replaced_cleanly() {
        // gnu-efi's arm64 header pads with NOPs up to the first section.
        let mut stub = tiny_pe(0xAA64, 0x1000);
        for w in stub[0xF0..0x200].chunks_mut(4) {
            w.copy_from_slice(&AARCH64_NOP);
        }
        let mut kernel = tiny_pe(0xAA64, 0x1000);
        kernel[0x38..0x3C].copy_from_slice(b"ARM\x64");
        let uki = build(&Parts {
            stub: &stub,
            kernel: &kernel,
            initrd: &[1],
            cmdline: None,
            osrel: "ID=phase\n",
            uname: None,
            dtb: Some(&[0xD0, 0x0D, 0xFE, 0xED]),
        })
        .unwrap();
        let pe = Pe::parse(&uki.bytes, "uki").unwrap();
        let names: Vec<&str> = pe.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".osrel", ".dtb", ".linux", ".initrd"]);
        let dtb = 0xF0 + 40; // the second new header, after .text and .osrel
        assert_eq!(&uki.bytes[dtb..dtb + 8], b".dtb\0\0\0\0");
        assert_eq!(&uki.bytes[dtb + 24..dtb + 36], &[0; 12]);
    }

    #[test]
    fn checksum_matches_known_value() {
        // Debian's stub ships with a checksum; recomputing it must agree.
        let path = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        let Ok(stub) = std::fs::read(path) else {
            println!("SKIPPED checksum against {path}: not installed");
            return;
        };
        let pe = Pe::parse(&stub, path).unwrap();
        if pe.checksum != 0 {
            assert_eq!(pe_checksum(&stub, pe.opt + 64), pe.checksum);
        }
    }

    #[test]
    fn mismatches_are_refused() {
        let stub = tiny_pe(0xAA64, 0x1000);
        let kernel = tiny_kernel_x86();
        let parts = Parts {
            stub: &stub,
            kernel: &kernel,
            initrd: &[],
            cmdline: None,
            osrel: "",
            uname: None,
            dtb: None,
        };
        assert_eq!(
            build(&parts).unwrap_err(),
            UkiError::ArchMismatch {
                stub: Arch::Aarch64,
                kernel: Arch::X86_64
            }
        );
        let mut no_stub = vec![0u8; 0x300];
        no_stub[0x202..0x206].copy_from_slice(b"HdrS");
        let x86_stub = tiny_pe(0x8664, 0x1000);
        assert_eq!(
            build(&Parts {
                stub: &x86_stub,
                kernel: &no_stub,
                ..parts
            })
            .unwrap_err(),
            UkiError::NoEfiStub { arch: Arch::X86_64 }
        );
        assert!(matches!(
            build(&Parts {
                stub: b"not a stub",
                ..parts
            }),
            Err(UkiError::NotPe { .. })
        ));
    }
}
