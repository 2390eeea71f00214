//! arm64 hand-off with `kexec_load`: the Debian arm64 kernel has no
//! `kexec_file_load`, so the init builds the segments itself — the kernel
//! Image, the initrd, an edited DTB and a five-instruction purgatory — and
//! the running kernel only copies them into place at the jump.
//!
//! Placement follows Documentation/arch/arm64/booting.rst: the Image goes
//! `text_offset` bytes above a 2 MiB-aligned base, with `image_size` bytes
//! free from there; the DTB is 8-byte aligned and at most 2 MiB; x0 holds
//! the DTB's physical address and x1–x3 are zero at entry. The initrd and the
//! DTB go above the kernel and within 32 GiB of its 1 GiB-aligned base, as
//! the kernel's own kexec_file_load does, so that even kernels whose linear
//! map starts at the kernel reach them.
//!
//! Everything here but [`load`] is pure and tested on the build host.

use std::ffi::CStr;
use std::os::fd::AsFd;

use serde::Serialize;

use super::{KexecError, Region, gzip, iomem};
pub use super::{Segment, SegmentBytes, describe};
use crate::fdt::{Fdt, MAX_SIZE as MAX_DTB_SIZE};
use crate::sys;

/// `ARM\x64`, little-endian, at offset 56 of the Image header.
const IMAGE_MAGIC: u32 = 0x644d_5241;
const HEADER_LEN: usize = 64;
/// Flags bit 0: the kernel is big-endian.
const FLAG_BE: u64 = 1;
/// Flags bit 3: the 2 MiB-aligned base may be anywhere in RAM (otherwise as
/// low as possible: older kernels cannot use memory below their base).
const FLAG_PHYS_ANYWHERE: u64 = 1 << 3;
const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;
/// The initrd and DTB stay below the kernel's 1 GiB-aligned base + 32 GiB.
const REACH: u64 = 32 << 30;
/// An Image.gz may inflate to at most this (Debian's Image is 33 MB).
pub const MAX_KERNEL: usize = 256 << 20;
/// What the kernel's own kexec_file_load puts in `rng-seed`
/// (`RNG_SEED_SIZE` in drivers/of/kexec.c).
pub const RNG_SEED_LEN: usize = 128;
/// `/chosen` properties that describe the running boot, not the next one.
/// Each is removed, and the ones the next boot needs are written fresh.
pub const STALE_CHOSEN: [&str; 8] = [
    "bootargs",
    "linux,initrd-start",
    "linux,initrd-end",
    "kaslr-seed",
    "rng-seed",
    // A crash kernel's view of the crashed one (kdump).
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    // The IMA measurement list handed over by a previous kexec_file_load.
    "linux,ima-kexec-buffer",
];

/// The fields of the 64-byte arm64 Image header that placement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
}

impl ImageHeader {
    pub fn parse(image: &[u8]) -> Result<ImageHeader, KexecError> {
        let bad = |field: &'static str, problem: String| KexecError::ImageHeader { field, problem };
        if image.len() < HEADER_LEN {
            return Err(bad(
                "length",
                format!("{} bytes, shorter than the 64-byte header", image.len()),
            ));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&image[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32::from_le_bytes([image[56], image[57], image[58], image[59]]);
        if magic != IMAGE_MAGIC {
            return Err(bad(
                "magic",
                format!("magic {magic:#010x} at offset 56 is not ARM\\x64"),
            ));
        }
        let header = ImageHeader {
            text_offset: u64_at(8),
            image_size: u64_at(16),
            flags: u64_at(24),
        };
        if header.flags & FLAG_BE != 0 {
            return Err(bad("flags", "a big-endian kernel".into()));
        }
        if header.image_size == 0 {
            // Before Linux 3.17 the size was not recorded and text_offset had
            // no fixed endianness; such kernels cannot be placed safely.
            return Err(bad(
                "image_size",
                "image_size is 0 (a kernel older than 3.17)".into(),
            ));
        }
        if header.image_size < image.len() as u64 {
            return Err(bad(
                "image_size",
                format!(
                    "image_size {} is smaller than the image file ({} bytes)",
                    header.image_size,
                    image.len()
                ),
            ));
        }
        if !header.text_offset.is_multiple_of(4096) || header.text_offset >= SZ_2M {
            return Err(bad(
                "text_offset",
                format!(
                    "text_offset {:#x} is not a page multiple below 2 MiB",
                    header.text_offset
                ),
            ));
        }
        Ok(header)
    }

    /// Whether the base may be anywhere in RAM rather than as low as possible.
    pub fn phys_anywhere(&self) -> bool {
        self.flags & FLAG_PHYS_ANYWHERE != 0
    }
}

/// Bytes of the purgatory: [`PURGATORY_CODE`] followed by the DTB address
/// and the kernel entry as little-endian literals.
pub const PURGATORY_LEN: usize = 40;

/// The purgatory's instructions. The running kernel jumps to the purgatory
/// with the MMU and caches off and x0 = 0 (`kexec_load` has no DTB
/// argument); it sets up what booting.rst asks for and enters the kernel.
/// No checksum of the segments: they were hashed in the init, from the same
/// sealed files, just before (kexec-tools' purgatory SHA-256 pass is what
/// takes 13–17 s under TCG).
pub const PURGATORY_CODE: [u32; 6] = [
    0x5800_00c0, // ldr x0, #24   (x0 = the DTB literal at offset 24)
    0xaa1f_03e1, // mov x1, xzr
    0xaa1f_03e2, // mov x2, xzr
    0xaa1f_03e3, // mov x3, xzr
    0x5800_0084, // ldr x4, #16   (x4 = the entry literal at offset 32)
    0xd61f_0080, // br  x4
];

/// The purgatory for a DTB at `dtb` and a kernel entered at `entry`.
pub fn purgatory(dtb: u64, entry: u64) -> [u8; PURGATORY_LEN] {
    let mut out = [0u8; PURGATORY_LEN];
    for (slot, insn) in out.chunks_exact_mut(4).zip(PURGATORY_CODE) {
        slot.copy_from_slice(&insn.to_le_bytes());
    }
    out[24..32].copy_from_slice(&dtb.to_le_bytes());
    out[32..40].copy_from_slice(&entry.to_le_bytes());
    out
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    // align is a power of two.
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Free RAM from which segments are taken, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    free: Vec<Region>,
}

impl Memory {
    pub fn new(free: Vec<Region>) -> Memory {
        Memory { free }
    }

    /// The lowest `len` bytes at an address `align`-aligned plus `offset`,
    /// within `[min, max)`, taken out of the free list.
    fn take(
        &mut self,
        what: &'static str,
        len: u64,
        align: u64,
        offset: u64,
        min: u64,
        max: u64,
    ) -> Result<Region, KexecError> {
        let none = || KexecError::Place {
            what,
            len,
            align,
            min,
            max,
        };
        for region in &self.free {
            let lo = region.start.max(min);
            let hi = region.end.min(max);
            // The lowest start >= lo whose base (start - offset) is aligned.
            let start =
                align_up(lo.saturating_sub(offset), align).and_then(|b| b.checked_add(offset));
            match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
                Some((start, end)) if end <= hi => {
                    let taken = Region::new(start, end);
                    self.free = iomem::subtract(&self.free, &[taken]);
                    return Ok(taken);
                }
                _ => continue,
            }
        }
        Err(none())
    }
}

/// The seeds written into `/chosen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    pub kaslr: [u8; 8],
    pub rng: [u8; RNG_SEED_LEN],
}

/// Rewrites `/chosen` for the next boot: every [`STALE_CHOSEN`] property is
/// removed, then `bootargs`, the initrd range (if any), `kaslr-seed` and
/// `rng-seed` are set. Returns the stale properties that were present and
/// not written again.
pub fn edit_chosen(
    fdt: &mut Fdt,
    cmdline: &CStr,
    initrd: Option<Region>,
    seeds: &Seeds,
) -> Vec<&'static str> {
    let chosen = fdt.root.child_mut_or_insert("chosen");
    let mut dropped: Vec<&'static str> = STALE_CHOSEN
        .into_iter()
        .filter(|name| chosen.remove(name))
        .collect();
    chosen.set("bootargs", cmdline.to_bytes_with_nul().to_vec());
    if let Some(initrd) = initrd {
        chosen.set("linux,initrd-start", initrd.start.to_be_bytes().to_vec());
        chosen.set("linux,initrd-end", initrd.end.to_be_bytes().to_vec());
    }
    chosen.set("kaslr-seed", seeds.kaslr.to_vec());
    chosen.set("rng-seed", seeds.rng.to_vec());
    dropped.retain(|name| chosen.property(name).is_none());
    dropped
}

/// Where the DTB came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DtbSource {
    /// A `dtb` artifact of the manifest.
    Given,
    /// The running kernel's, from `/sys/firmware/fdt`.
    Firmware,
}

impl DtbSource {
    pub fn describe(self) -> &'static str {
        match self {
            DtbSource::Given => "the given DTB",
            DtbSource::Firmware => FIRMWARE_FDT,
        }
    }
}

pub const FIRMWARE_FDT: &str = "/sys/firmware/fdt";

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub header: ImageHeader,
    pub entry: u64,
    pub kernel_entry: u64,
    pub segments: Vec<Segment>,
    pub dropped: Vec<&'static str>,
}

/// Inputs of [`plan`], all already in memory.
pub struct Inputs<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub dtb: &'a [u8],
    pub dtb_source: DtbSource,
    pub cmdline: &'a CStr,
    /// Free System RAM (see [`iomem::free_ram`]).
    pub free: Vec<Region>,
    pub page_size: u64,
    pub seeds: Seeds,
}

/// Decides every segment: validates the Image header and the DTB, places
/// kernel, initrd, DTB and purgatory in free RAM without overlap, and edits
/// the DTB's `/chosen`.
pub fn plan(inputs: &Inputs<'_>) -> Result<Plan, KexecError> {
    let page = inputs.page_size;
    if !page.is_power_of_two() || page > SZ_2M {
        return Err(KexecError::PageSize { page });
    }
    let header = ImageHeader::parse(inputs.kernel)?;
    let mut fdt = Fdt::parse(inputs.dtb).map_err(|source| KexecError::Dtb {
        from: inputs.dtb_source.describe(),
        source,
    })?;
    // The next kernel keeps the DTB's own reservations; nothing goes there.
    let reserved: Vec<Region> = fdt
        .reservations
        .iter()
        .map(|&(address, size)| Region::new(address, address.saturating_add(size)))
        .collect();
    let mut memory = Memory::new(iomem::subtract(&inputs.free, &reserved));
    let paged = |len: u64| align_up(len, page).ok_or(KexecError::PageSize { page });

    let kernel = memory.take(
        "kernel",
        paged(header.image_size)?,
        SZ_2M,
        header.text_offset,
        0,
        u64::MAX,
    )?;
    // `kernel.start - text_offset` is the 2 MiB-aligned base (take() placed
    // it so); reach is counted from its 1 GiB-aligned floor.
    let floor = (kernel.start - header.text_offset) & !(SZ_1G - 1);
    let max = floor.saturating_add(REACH);
    let initrd = match inputs.initrd {
        Some(bytes) => Some(memory.take(
            "initrd",
            paged(bytes.len() as u64)?,
            page,
            0,
            kernel.end,
            max,
        )?),
        None => None,
    };
    let initrd_range = initrd.map(|r| {
        Region::new(
            r.start,
            r.start + inputs.initrd.map_or(0, |b| b.len() as u64),
        )
    });
    let dropped = edit_chosen(&mut fdt, inputs.cmdline, initrd_range, &inputs.seeds);
    let dtb_bytes = fdt.to_bytes();
    if dtb_bytes.len() > MAX_DTB_SIZE {
        return Err(KexecError::DtbTooLarge {
            len: dtb_bytes.len(),
            max: MAX_DTB_SIZE,
        });
    }
    let dtb = memory.take(
        "dtb",
        paged(dtb_bytes.len() as u64)?,
        page,
        0,
        kernel.end,
        max,
    )?;
    let purgatory_at = memory.take(
        "purgatory",
        paged(PURGATORY_LEN as u64)?,
        page,
        0,
        kernel.end,
        max,
    )?;
    let kernel_entry = kernel.start;
    let mut segments = vec![Segment {
        name: "kernel",
        bytes: SegmentBytes::Kernel,
        mem: kernel.start,
        memsz: kernel.len(),
    }];
    if let Some(r) = initrd {
        segments.push(Segment {
            name: "initrd",
            bytes: SegmentBytes::Initrd,
            mem: r.start,
            memsz: r.len(),
        });
    }
    segments.push(Segment {
        name: "dtb",
        bytes: SegmentBytes::Owned(dtb_bytes),
        mem: dtb.start,
        memsz: dtb.len(),
    });
    segments.push(Segment {
        name: "purgatory",
        bytes: SegmentBytes::Owned(purgatory(dtb.start, kernel_entry).to_vec()),
        mem: purgatory_at.start,
        memsz: purgatory_at.len(),
    });
    Ok(Plan {
        header,
        entry: purgatory_at.start,
        kernel_entry,
        segments,
        dropped,
    })
}

/// Loads the next kernel with `kexec_load`. The kernel (gzip or not), the
/// initrd and a given DTB are mapped from their sealed memfds, so the bytes
/// loaded are the bytes that were hashed.
pub fn load(
    kernel: impl AsFd,
    initrd: Option<impl AsFd>,
    dtb: Option<impl AsFd>,
    cmdline: &CStr,
) -> Result<super::Loaded, KexecError> {
    let map = |what: &'static str, fd: std::os::fd::BorrowedFd<'_>| {
        sys::mmap_sealed(fd).map_err(|source| KexecError::Map {
            what,
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            source,
        })
    };
    let kernel_map = map("kernel", kernel.as_fd())?;
    let inflated;
    let (kernel_bytes, gzipped): (&[u8], bool) = if gzip::is_gzip(&kernel_map) {
        inflated = gzip::gunzip(&kernel_map, MAX_KERNEL).map_err(KexecError::Gunzip)?;
        (&inflated, true)
    } else {
        (&kernel_map, false)
    };
    let initrd_map = match &initrd {
        Some(fd) => Some(map("initrd", fd.as_fd())?),
        None => None,
    };
    let (dtb_bytes, dtb_source) = match &dtb {
        Some(fd) => (map("dtb", fd.as_fd())?.to_vec(), DtbSource::Given),
        None => (
            std::fs::read(FIRMWARE_FDT).map_err(|source| KexecError::Read {
                path: FIRMWARE_FDT,
                source,
            })?,
            DtbSource::Firmware,
        ),
    };
    let iomem_text = std::fs::read_to_string("/proc/iomem").map_err(|source| KexecError::Read {
        path: "/proc/iomem",
        source,
    })?;
    let free = iomem::free_ram(&iomem::parse(&iomem_text)?);
    if free.is_empty() {
        return Err(KexecError::NoRam);
    }
    let mut random = [0u8; 8 + RNG_SEED_LEN];
    sys::getrandom(&mut random).map_err(|source| KexecError::Getrandom {
        len: random.len(),
        source,
    })?;
    let mut seeds = Seeds {
        kaslr: [0; 8],
        rng: [0; RNG_SEED_LEN],
    };
    seeds.kaslr.copy_from_slice(&random[..8]);
    seeds.rng.copy_from_slice(&random[8..]);
    let plan = plan(&Inputs {
        kernel: kernel_bytes,
        initrd: initrd_map.as_deref(),
        dtb: &dtb_bytes,
        dtb_source,
        cmdline,
        free,
        page_size: sys::page_size() as u64,
        seeds,
    })?;
    let segments: Vec<sys::KexecSegment<'_>> = plan
        .segments
        .iter()
        .map(|s| sys::KexecSegment {
            buf: match &s.bytes {
                SegmentBytes::Kernel => kernel_bytes,
                SegmentBytes::Initrd => initrd_map.as_deref().unwrap_or_default(),
                SegmentBytes::Owned(bytes) => bytes,
            },
            mem: s.mem,
            memsz: s.memsz,
        })
        .collect();
    let flags = sys::KEXEC_ARCH_DEFAULT;
    sys::kexec_load(plan.entry, &segments, flags).map_err(|source| KexecError::KexecLoad {
        entry: plan.entry,
        nr_segments: segments.len(),
        flags,
        segments: describe(&plan.segments),
        source,
    })?;
    // Test builds say which seeds the loaded DTB carries (as digests), read
    // back from the very bytes given to kexec_load, so a scenario can tell
    // two hand-offs apart.
    #[cfg(feature = "test-hooks")]
    let seeds_sha256 = plan.segments.iter().find_map(|s| match (&s.bytes, s.name) {
        (SegmentBytes::Owned(bytes), "dtb") => seed_digests(bytes),
        _ => None,
    });
    #[cfg(not(feature = "test-hooks"))]
    let seeds_sha256 = None;
    let mut loaded = super::Loaded::new("kexec_load");
    loaded.entry = Some(plan.entry);
    loaded.kernel_entry = Some(plan.kernel_entry);
    loaded.segments = plan
        .segments
        .iter()
        .zip(&segments)
        .map(|(s, raw)| super::SegmentInfo {
            name: s.name,
            mem: s.mem,
            memsz: s.memsz,
            bufsz: raw.buf.len() as u64,
        })
        .collect();
    loaded.kernel_gzip = gzipped;
    loaded.dtb = Some(dtb_source);
    loaded.dropped = plan.dropped;
    loaded.image = Some(plan.header);
    loaded.seeds_sha256 = seeds_sha256;
    Ok(loaded)
}

/// SHA-256 of `/chosen`'s `kaslr-seed` and `rng-seed` in a DTB, in hex.
#[cfg(feature = "test-hooks")]
fn seed_digests(dtb: &[u8]) -> Option<super::SeedDigests> {
    use sha2::Digest;
    let fdt = Fdt::parse(dtb).ok()?;
    let chosen = fdt.root.child("chosen")?;
    let hex = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Some(super::SeedDigests {
        kaslr: hex(chosen.property("kaslr-seed")?),
        rng: hex(chosen.property("rng-seed")?),
    })
}

/// The whole DTB path for one untrusted blob, as the fuzz target and the
/// corpus replay run it: parse; if that succeeds, the tree must write back
/// and read as itself, and the hand-off's planning (edit `/chosen`, write,
/// place) must succeed on it. Returns whether the blob parsed. Panics only
/// on a broken invariant, which is what the fuzzer looks for.
pub fn check_dtb_path(blob: &[u8]) -> bool {
    let Ok(fdt) = Fdt::parse(blob) else {
        return false;
    };
    let written = fdt.to_bytes();
    // A blob near the limit may grow when shared string suffixes are
    // written out in full; such a tree cannot be handed off anyway.
    if written.len() <= MAX_DTB_SIZE {
        assert_eq!(
            Fdt::parse(&written).as_ref(),
            Ok(&fdt),
            "written tree reads back differently"
        );
    }
    let mut kernel = vec![0u8; 4096];
    kernel[16..24].copy_from_slice(&0x20_0000u64.to_le_bytes());
    kernel[24..32].copy_from_slice(&0xau64.to_le_bytes());
    kernel[56..60].copy_from_slice(b"ARMd");
    let planned = plan(&Inputs {
        kernel: &kernel,
        initrd: Some(&[0; 100]),
        dtb: blob,
        dtb_source: DtbSource::Given,
        cmdline: c"console=ttyAMA0",
        free: vec![Region::new(0x4000_0000, 0x6000_0000)],
        page_size: 4096,
        seeds: Seeds {
            kaslr: [1; 8],
            rng: [2; RNG_SEED_LEN],
        },
    });
    match planned {
        Ok(p) => {
            let dtb = p.segments.iter().find_map(|s| match (&s.name, &s.bytes) {
                (&"dtb", SegmentBytes::Owned(b)) => Some(b),
                _ => None,
            });
            let edited = dtb.map(|b| Fdt::parse(b));
            assert!(
                matches!(edited, Some(Ok(_))),
                "the edited DTB does not parse"
            );
        }
        // Reservations may cover all of RAM, or the edit may pass 2 MiB.
        Err(KexecError::Place { .. } | KexecError::DtbTooLarge { .. }) => {}
        Err(e) => panic!("planning a valid DTB failed: {e}"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::Node;

    #[test]
    fn purgatory_encodes_each_instruction() {
        // Each word checked against the A64 encoding, field by field
        // (Arm ARM C6.2: LDR (literal), ORR (shifted register), BR).
        let ldr_literal = |rt: u32, offset: u32| 0x5800_0000 | ((offset / 4) << 5) | rt;
        let mov_xzr = |rd: u32| 0xaa00_0000 | (31 << 16) | (31 << 5) | rd;
        let br = |rn: u32| 0xd61f_0000 | (rn << 5);
        assert_eq!(
            PURGATORY_CODE,
            [
                ldr_literal(0, 24), // x0 <- [pc + 24]: 24 - 0
                mov_xzr(1),
                mov_xzr(2),
                mov_xzr(3),
                ldr_literal(4, 16), // x4 <- [pc + 16]: 32 - 16
                br(4),
            ]
        );
        let bytes = purgatory(0x4800_0000, 0x4020_0000);
        #[rustfmt::skip]
        let expected: [u8; PURGATORY_LEN] = [
            0xc0, 0x00, 0x00, 0x58, // ldr x0, 24
            0xe1, 0x03, 0x1f, 0xaa, // mov x1, xzr
            0xe2, 0x03, 0x1f, 0xaa, // mov x2, xzr
            0xe3, 0x03, 0x1f, 0xaa, // mov x3, xzr
            0x84, 0x00, 0x00, 0x58, // ldr x4, 16
            0x80, 0x00, 0x1f, 0xd6, // br x4
            0x00, 0x00, 0x00, 0x48, 0x00, 0x00, 0x00, 0x00, // DTB address
            0x00, 0x00, 0x20, 0x40, 0x00, 0x00, 0x00, 0x00, // kernel entry
        ];
        assert_eq!(bytes, expected);
    }

    /// An objdump of the purgatory, when the cross binutils are installed.
    #[test]
    fn purgatory_disassembles_as_intended() {
        let objdump = "aarch64-linux-gnu-objdump";
        let dir = std::env::temp_dir().join(format!("phase-purgatory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("purgatory.bin");
        std::fs::write(&bin, &purgatory(0, 0)[..24]).unwrap();
        let out = match std::process::Command::new(objdump)
            .args(["-D", "-b", "binary", "-m", "aarch64"])
            .arg(&bin)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                phase_testkit::skip(
                    "purgatory disassembly",
                    format_args!(
                        "{objdump} not runnable ({e}); install binutils-aarch64-linux-gnu"
                    ),
                );
                return;
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let insns: Vec<String> = text
            .lines()
            .filter(|l| l.split('\t').count() > 2)
            .map(|l| l.split('\t').skip(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            insns,
            [
                "ldr x0, 0x18",
                "mov x1, xzr",
                "mov x2, xzr",
                "mov x3, xzr",
                "ldr x4, 0x20",
                "br x4"
            ],
            "{text}"
        );
    }

    /// A synthetic Image: the header of Debian's 6.1 arm64 kernel (flags
    /// 0xa: little-endian, 4 KiB pages, anywhere in RAM) and `len` bytes.
    fn image(len: usize, image_size: u64) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..4].copy_from_slice(b"MZ@\xfa");
        b[16..24].copy_from_slice(&image_size.to_le_bytes());
        b[24..32].copy_from_slice(&0xau64.to_le_bytes());
        b[56..60].copy_from_slice(b"ARMd");
        b
    }

    #[test]
    fn reads_the_image_header() {
        let h = ImageHeader::parse(&image(4096, 0x0201_0000)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0,
                image_size: 0x0201_0000,
                flags: 0xa
            }
        );
        assert!(h.phys_anywhere());
        let with = |at: usize, bytes: &[u8]| {
            let mut b = image(4096, 0x10000);
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (image(63, 0x10000), "shorter than the 64-byte header"),
            (with(56, b"ARM\x65"), "is not ARM\\x64"),
            (with(24, &[0xb]), "big-endian"),
            (image(4096, 0), "older than 3.17"),
            (image(8192, 4096), "smaller than the image file"),
            (with(8, &[0x80, 0x00, 0x08]), "not a page multiple"),
            (with(10, &[0x20]), "not a page multiple below 2 MiB"),
        ];
        for (bytes, needle) in cases {
            match ImageHeader::parse(&bytes) {
                Err(KexecError::ImageHeader { problem, .. }) => {
                    assert!(problem.contains(needle), "{problem:?} lacks {needle:?}")
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
    }

    fn firmware_dtb() -> Vec<u8> {
        let mut root = Node::new("");
        root.set("#address-cells", 2u32.to_be_bytes().to_vec());
        let chosen = root.child_mut_or_insert("chosen");
        chosen.set("bootargs", b"console=ttyAMA0 old\0".to_vec());
        chosen.set("stdout-path", b"/pl011@9000000\0".to_vec());
        chosen.set("kaslr-seed", vec![0; 8]);
        chosen.set("linux,initrd-start", 0x4800_0000u64.to_be_bytes().to_vec());
        chosen.set("linux,initrd-end", 0x4a00_0000u64.to_be_bytes().to_vec());
        chosen.set("linux,elfcorehdr", vec![0; 16]);
        chosen.set("linux,usable-memory-range", vec![0; 16]);
        Fdt {
            boot_cpuid_phys: 0,
            reservations: vec![(0x4400_0000, 0x10_0000)],
            root,
        }
        .to_bytes()
    }

    fn seeds() -> Seeds {
        Seeds {
            kaslr: [0x11; 8],
            rng: [0x22; RNG_SEED_LEN],
        }
    }

    #[test]
    fn plans_a_boot_in_free_ram() {
        let kernel = image(0x0100_0123, 0x0201_0000);
        let initrd = vec![0x5a; 0x30_0001];
        let dtb = firmware_dtb();
        let cmdline = c"console=ttyAMA0 phase.marker=1";
        // Free RAM as in a 512 MiB QEMU guest, with a hole too small for the
        // kernel first and the DTB's reservation inside the second range.
        let free = vec![
            Region::new(0x4010_0000, 0x4021_0000),
            Region::new(0x428e_0000, 0x4800_0000),
            Region::new(0x4a10_0000, 0x5fe0_0000),
        ];
        let plan = plan(&Inputs {
            kernel: &kernel,
            initrd: Some(&initrd),
            dtb: &dtb,
            dtb_source: DtbSource::Firmware,
            cmdline,
            free: free.clone(),
            page_size: 4096,
            seeds: seeds(),
        })
        .unwrap();
        let names: Vec<&str> = plan.segments.iter().map(|s| s.name).collect();
        assert_eq!(names, ["kernel", "initrd", "dtb", "purgatory"]);
        let at = |name: &str| plan.segments.iter().find(|s| s.name == name).unwrap();
        // The kernel: the lowest 2 MiB-aligned base that fits 0x2010000
        // bytes, above the DTB reservation at 0x44000000..0x44100000.
        assert_eq!(at("kernel").mem, 0x4420_0000);
        assert_eq!(at("kernel").memsz, 0x0201_0000);
        assert_eq!(plan.kernel_entry, 0x4420_0000);
        // Initrd, DTB and purgatory follow the kernel, page-aligned.
        assert_eq!(at("initrd").mem, 0x4621_0000);
        assert_eq!(at("initrd").memsz, 0x30_1000);
        assert_eq!(at("dtb").mem, 0x4651_1000);
        assert_eq!(plan.entry, at("purgatory").mem);
        assert_eq!(at("purgatory").memsz, 4096);
        // No overlaps; all inside free RAM; pages aligned.
        let mut regions: Vec<Region> = plan
            .segments
            .iter()
            .map(|s| Region::new(s.mem, s.mem + s.memsz))
            .collect();
        regions.sort_by_key(|r| r.start);
        for pair in regions.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{pair:?} overlap");
        }
        for (s, r) in plan.segments.iter().zip(&regions) {
            assert_eq!(s.mem % 4096, 0, "{}", s.name);
            assert_eq!(s.memsz % 4096, 0, "{}", s.name);
            assert!(
                free.iter().any(|f| f.start <= r.start && r.end <= f.end),
                "{r:?}"
            );
            assert!(!r.overlaps(&Region::new(0x4400_0000, 0x4410_0000)));
        }
        // The purgatory points at the DTB and the kernel.
        let SegmentBytes::Owned(code) = &at("purgatory").bytes else {
            panic!()
        };
        assert_eq!(code[..], purgatory(at("dtb").mem, 0x4420_0000)[..]);
        // /chosen: fresh values, stale ones gone, the rest kept.
        let SegmentBytes::Owned(blob) = &at("dtb").bytes else {
            panic!()
        };
        let fdt = Fdt::parse(blob).unwrap();
        let chosen = fdt.root.child("chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs"),
            Some(&b"console=ttyAMA0 phase.marker=1\0"[..])
        );
        assert_eq!(
            chosen.property("linux,initrd-start"),
            Some(&0x4621_0000u64.to_be_bytes()[..])
        );
        assert_eq!(
            chosen.property("linux,initrd-end"),
            Some(&0x4651_0001u64.to_be_bytes()[..])
        );
        assert_eq!(chosen.property("kaslr-seed"), Some(&[0x11; 8][..]));
        assert_eq!(chosen.property("rng-seed"), Some(&[0x22; RNG_SEED_LEN][..]));
        assert_eq!(
            chosen.property("stdout-path"),
            Some(&b"/pl011@9000000\0"[..])
        );
        assert_eq!(chosen.property("linux,elfcorehdr"), None);
        assert_eq!(chosen.property("linux,usable-memory-range"), None);
        assert_eq!(
            plan.dropped,
            ["linux,elfcorehdr", "linux,usable-memory-range"]
        );
        assert_eq!(fdt.reservations, [(0x4400_0000, 0x10_0000)]);
        assert_eq!(fdt.root.property("#address-cells"), Some(&[0, 0, 0, 2][..]));
    }

    #[test]
    fn plans_what_the_guest_did() {
        // The placement worked out by hand from the guest's /proc/iomem
        // (iomem::tests::VIRT, captured in the scenario's guest) and the
        // rules of Documentation/arch/arm64/booting.rst, not from our output:
        // - System RAM is 0x40000000..0x60000000; inside it the running
        //   kernel's code, a reservation and its data are back to back,
        //   0x40210000..0x42210000, so the free RAM below them
        //   (0x40000000..0x40210000) is too small for the image's
        //   image_size of 0x2010000, and the next free byte is 0x42210000;
        // - the kernel goes at a 2 MiB-aligned base + text_offset (0 here):
        //   0x42210000 rounded up to 2 MiB is 0x42400000;
        // - the initrd follows the kernel's image_size, on a page boundary:
        //   0x42400000 + 0x2010000 = 0x44410000, and its 0x4c001 bytes take
        //   0x4d pages.
        // The same map was given the scenario's guest, which placed the
        // segments there (its hand-off event names the addresses).
        const SZ_2M: u64 = 2 << 20;
        let next_free = 0x4221_0000u64;
        let base = next_free.div_ceil(SZ_2M) * SZ_2M;
        assert_eq!(base, 0x4240_0000);
        let initrd_at = base + 0x0201_0000;
        let initrd_pages = 0x4c001u64.div_ceil(4096) * 4096;
        let free = iomem::free_ram(&iomem::parse(iomem::tests::VIRT).unwrap());
        let mut dtb = Fdt::parse(&firmware_dtb()).unwrap();
        dtb.reservations.clear();
        let plan = plan(&Inputs {
            kernel: &image(0x1000, 0x0201_0000),
            initrd: Some(&vec![0; 0x4c001]),
            dtb: &dtb.to_bytes(),
            dtb_source: DtbSource::Firmware,
            cmdline: c"x",
            free,
            page_size: 4096,
            seeds: seeds(),
        })
        .unwrap();
        let placed: Vec<(u64, u64)> = plan.segments.iter().map(|s| (s.mem, s.memsz)).collect();
        assert_eq!(
            placed[..2],
            [(base, 0x0201_0000), (initrd_at, initrd_pages)]
        );
    }

    /// QEMU's `virt` blob as the running kernel leaves it in
    /// /sys/firmware/fdt: rng-seed overwritten with NOP tokens, kaslr-seed
    /// zeroed (a committed fuzz seed).
    #[test]
    fn the_booted_firmware_blob_gets_fresh_seeds() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/fdt/qemu-virt-as-booted.dtb"
        );
        let blob = std::fs::read(path).unwrap();
        let before = Fdt::parse(&blob).unwrap();
        let chosen = before.root.child("chosen").unwrap();
        assert_eq!(chosen.property("kaslr-seed"), Some(&[0u8; 8][..]));
        assert_eq!(chosen.property("rng-seed"), None);
        let plan = plan(&Inputs {
            kernel: &image(0x1000, 0x20_0000),
            initrd: None,
            dtb: &blob,
            dtb_source: DtbSource::Firmware,
            cmdline: c"console=ttyAMA0",
            free: vec![Region::new(0x4000_0000, 0x6000_0000)],
            page_size: 4096,
            seeds: seeds(),
        })
        .unwrap();
        let SegmentBytes::Owned(out) = &plan.segments[1].bytes else {
            panic!()
        };
        let after = Fdt::parse(out).unwrap();
        let chosen = after.root.child("chosen").unwrap();
        assert_eq!(chosen.property("kaslr-seed"), Some(&[0x11; 8][..]));
        assert_eq!(chosen.property("rng-seed"), Some(&[0x22; RNG_SEED_LEN][..]));
        assert_eq!(
            chosen.property("stdout-path"),
            Some(&b"/pl011@9000000\0"[..])
        );
        // Everything outside /chosen is untouched.
        let strip = |mut f: Fdt| {
            f.root.children.retain(|c| c.name != "chosen");
            f
        };
        assert_eq!(strip(after), strip(before));
    }

    #[test]
    fn without_an_initrd_the_old_range_is_dropped() {
        let plan = plan(&Inputs {
            kernel: &image(0x1000, 0x20_0000),
            initrd: None,
            dtb: &firmware_dtb(),
            dtb_source: DtbSource::Firmware,
            cmdline: c"",
            free: vec![Region::new(0x4000_0000, 0x5000_0000)],
            page_size: 4096,
            seeds: seeds(),
        })
        .unwrap();
        let SegmentBytes::Owned(blob) = &plan.segments[1].bytes else {
            panic!()
        };
        let chosen = Fdt::parse(blob)
            .unwrap()
            .root
            .child("chosen")
            .cloned()
            .unwrap();
        assert_eq!(chosen.property("linux,initrd-start"), None);
        assert_eq!(chosen.property("linux,initrd-end"), None);
        assert_eq!(chosen.property("bootargs"), Some(&b"\0"[..]));
        assert!(plan.dropped.contains(&"linux,initrd-start"));
        assert_eq!(plan.segments[0].mem, 0x4000_0000);
    }

    #[test]
    fn text_offset_and_alignment_are_respected() {
        let mut kernel = image(0x1000, 0x10_0000);
        kernel[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
        let plan = plan(&Inputs {
            kernel: &kernel,
            initrd: None,
            dtb: &firmware_dtb(),
            dtb_source: DtbSource::Given,
            cmdline: c"x",
            // 0x40180000 would fit, but its base 0x40100000 is not 2 MiB-aligned.
            free: vec![
                Region::new(0x4010_0000, 0x4040_0000),
                Region::new(0x4100_0000, 0x4200_0000),
            ],
            page_size: 4096,
            seeds: seeds(),
        })
        .unwrap();
        assert_eq!(plan.segments[0].mem, 0x4028_0000);
        assert_eq!(plan.kernel_entry, 0x4028_0000);
    }

    #[test]
    fn refuses_what_does_not_fit_or_does_not_parse() {
        let base = |free: Vec<Region>, dtb: Vec<u8>| {
            plan(&Inputs {
                kernel: &image(0x1000, 0x0200_0000),
                initrd: Some(&[1; 0x1000]),
                dtb: &dtb,
                dtb_source: DtbSource::Given,
                cmdline: c"x",
                free,
                page_size: 4096,
                seeds: seeds(),
            })
        };
        let small = vec![Region::new(0x4000_0000, 0x41ff_ffff)];
        assert!(matches!(
            base(small, firmware_dtb()),
            Err(KexecError::Place { what: "kernel", .. })
        ));
        let exact = vec![Region::new(0x4000_0000, 0x4200_0000)];
        assert!(matches!(
            base(exact, firmware_dtb()),
            Err(KexecError::Place { what: "initrd", .. })
        ));
        let mut bad_dtb = firmware_dtb();
        bad_dtb.push(0);
        assert!(matches!(
            base(vec![Region::new(0x4000_0000, 0x5000_0000)], bad_dtb),
            Err(KexecError::Dtb {
                from: "the given DTB",
                ..
            })
        ));
        // The initrd must stay within 32 GiB of the kernel's 1 GiB floor.
        let far = vec![
            Region::new(0x4000_0000, 0x4200_0000),
            Region::new(0x40_0000_0000 + 0x4000_0000, 0x40_0000_0000 + 0x5000_0000),
        ];
        assert!(matches!(
            base(far, firmware_dtb()),
            Err(KexecError::Place {
                what: "initrd",
                max: 0x8_4000_0000,
                ..
            })
        ));
    }

    #[test]
    fn stale_chosen_properties_are_replaced() {
        let mut fdt = Fdt::parse(&firmware_dtb()).unwrap();
        let dropped = edit_chosen(
            &mut fdt,
            c"a b",
            Some(Region::new(0x1000, 0x2000)),
            &seeds(),
        );
        assert_eq!(dropped, ["linux,elfcorehdr", "linux,usable-memory-range"]);
        let chosen = fdt.root.child("chosen").unwrap();
        for name in STALE_CHOSEN {
            let expected_present = matches!(
                name,
                "bootargs" | "linux,initrd-start" | "linux,initrd-end" | "kaslr-seed" | "rng-seed"
            );
            assert_eq!(chosen.property(name).is_some(), expected_present, "{name}");
        }
        assert_ne!(chosen.property("kaslr-seed"), Some(&[0u8; 8][..]));
        // A tree without /chosen gets one.
        let mut bare = Fdt::default();
        edit_chosen(&mut bare, c"", None, &seeds());
        assert!(
            bare.root
                .child("chosen")
                .unwrap()
                .property("rng-seed")
                .is_some()
        );
    }
}
