//! x86_64 hand-off with `kexec_load`: segments the init builds itself — the
//! protected-mode kernel of the bzImage, the initrd, one segment with the
//! zero page, command line and setup_data ([`bootparam`]), and a purgatory
//! of eleven instructions — so that the next kernel starts without the
//! kernel's SHA-256 pass over the files (`kexec_file_load` hashes them, and
//! its purgatory hashes them again) and on kernels without `KEXEC_FILE`.
//!
//! Placement, lowest address first where it matters:
//!
//! - the kernel at `pref_address` when `init_size` bytes are free there,
//!   else at the lowest `kernel_alignment`-aligned address above it (a
//!   relocatable kernel loaded below `LOAD_PHYSICAL_ADDR` moves itself up
//!   to it, so nothing else may sit there);
//! - the initrd as high as it fits, below `initrd_addr_max` unless
//!   `XLF_CAN_BE_LOADED_ABOVE_4G`, as kexec-tools does: away from the
//!   kernel's decompression;
//! - boot_params and the purgatory as low as they fit above 1 MiB, below
//!   4 GiB: under the kernel's load address nothing the decompressor or
//!   KASLR does can reach them.
//!
//! Free memory is what both `/sys/firmware/memmap` and `/proc/iomem` call
//! System RAM ([`e820::free_ram`]). Everything here but [`load`] and the
//! readers of sysfs is pure and tested on the build host.

use std::ffi::CStr;
use std::os::fd::AsFd;

use serde::Serialize;

use super::bootparam::{self, Params, ZERO_PAGE_LEN};
use super::bzimage::{self, SetupHeader};
use super::e820::{self, Entry, LOW_LIMIT};
use super::efi;
use super::method::{self, Lockdown};
use super::{KexecError, Loaded, Region, Segment, SegmentBytes, SegmentInfo, describe, iomem};
use crate::sys;

const PAGE: u64 = 4096;
const SZ_4G: u64 = 1 << 32;

/// Bytes of the purgatory: [`PURGATORY_CODE`], then the boot_params and
/// kernel entry literals, the GDT register and a three-entry GDT.
pub const PURGATORY_LEN: usize = 0x70;
/// Where the literals and the GDT sit in the purgatory.
const BOOT_PARAMS_AT: usize = 0x30;
const ENTRY_AT: usize = 0x38;
const GDTR_AT: usize = 0x40;
const GDT_AT: usize = 0x50;
/// `__BOOT_CS` and `__BOOT_DS` of boot.rst's 64-bit protocol.
const BOOT_CS: u8 = 0x10;
const BOOT_DS: u8 = 0x18;
/// Flat 4 GiB descriptors, accessed bit set so the CPU need not write it:
/// 64-bit code (execute/read, L=1) and data (read/write).
const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;

/// The purgatory's instructions. `kexec_load`'s relocation code enters it
/// in 64-bit mode on an identity map of RAM and of every segment, with
/// interrupts off and the GDT and IDT invalidated. The 64-bit boot protocol
/// (boot.rst) wants: interrupts off, a GDT with flat `__BOOT_CS` (0x10) and
/// `__BOOT_DS` (0x18), CS = 0x10, DS = ES = SS = 0x18, and `rsi` = the
/// boot_params. The kernel's startup_64 loads its own GDT and stack before
/// using either, so these only have to be valid. No checksum of the
/// segments: they were hashed from the same sealed files moments before.
#[rustfmt::skip]
pub const PURGATORY_CODE: [u8; 0x2f] = [
    0xfa,                                     // 0x00 cli
    0x0f, 0x01, 0x15, 0x38, 0x00, 0x00, 0x00, // 0x01 lgdt [rip + 0x38]     (gdtr at 0x40)
    0xb8, BOOT_DS, 0x00, 0x00, 0x00,          // 0x08 mov eax, 0x18
    0x8e, 0xd8,                               // 0x0d mov ds, eax
    0x8e, 0xc0,                               // 0x0f mov es, eax
    0x8e, 0xd0,                               // 0x11 mov ss, eax
    0x8e, 0xe0,                               // 0x13 mov fs, eax
    0x8e, 0xe8,                               // 0x15 mov gs, eax
    0x48, 0x8d, 0x25, 0xe2, 0x0f, 0x00, 0x00, // 0x17 lea rsp, [rip + 0xfe2] (the page's end)
    0x48, 0x8b, 0x35, 0x0b, 0x00, 0x00, 0x00, // 0x1e mov rsi, [rip + 0x0b]  (boot_params at 0x30)
    0x6a, BOOT_CS,                            // 0x25 push 0x10
    0xff, 0x35, 0x0b, 0x00, 0x00, 0x00,       // 0x27 push [rip + 0x0b]      (entry at 0x38)
    0x48, 0xcb,                               // 0x2d lretq                  (to 0x10:entry)
];

/// The purgatory placed at `at` (page-aligned: its stack is the rest of its
/// page), for boot_params at `boot_params` and the kernel's 64-bit entry at
/// `entry`.
pub fn purgatory(at: u64, boot_params: u64, entry: u64) -> [u8; PURGATORY_LEN] {
    let mut out = [0xcc; PURGATORY_LEN];
    out[..PURGATORY_CODE.len()].copy_from_slice(&PURGATORY_CODE);
    out[BOOT_PARAMS_AT..BOOT_PARAMS_AT + 8].copy_from_slice(&boot_params.to_le_bytes());
    out[ENTRY_AT..ENTRY_AT + 8].copy_from_slice(&entry.to_le_bytes());
    // The GDT register: limit (three entries after the null one, minus 1)
    // and the GDT's physical address, which the identity map makes linear.
    out[GDTR_AT..GDTR_AT + 2].copy_from_slice(&(4 * 8 - 1u16).to_le_bytes());
    out[GDTR_AT + 2..GDTR_AT + 10].copy_from_slice(&(at + GDT_AT as u64).to_le_bytes());
    out[GDTR_AT + 10..GDT_AT].fill(0);
    out[GDT_AT..GDT_AT + 16].fill(0);
    out[GDT_AT + 16..GDT_AT + 24].copy_from_slice(&GDT_CODE64.to_le_bytes());
    out[GDT_AT + 24..GDT_AT + 32].copy_from_slice(&GDT_DATA.to_le_bytes());
    out
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    // align is a power of two.
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Free RAM, from which segments are taken.
struct Memory {
    free: Vec<Region>,
}

impl Memory {
    fn take(&mut self, region: Region) -> Region {
        self.free = iomem::subtract(&self.free, &[region]);
        region
    }

    /// `[at, at + len)` if all of it is free.
    fn take_at(&mut self, at: u64, len: u64) -> Option<Region> {
        let want = Region::new(at, at.checked_add(len)?);
        self.free
            .iter()
            .any(|f| f.start <= want.start && want.end <= f.end)
            .then(|| self.take(want))
    }

    /// The lowest `align`-aligned `len` bytes within `[min, max)`.
    fn take_low(&mut self, len: u64, align: u64, min: u64, max: u64) -> Option<Region> {
        let found = self.free.iter().find_map(|f| {
            let start = align_up(f.start.max(min), align)?;
            let end = start.checked_add(len)?;
            (end <= f.end.min(max)).then_some(Region::new(start, end))
        })?;
        Some(self.take(found))
    }

    /// The highest `align`-aligned `len` bytes within `[min, max)`.
    fn take_high(&mut self, len: u64, align: u64, min: u64, max: u64) -> Option<Region> {
        let found = self.free.iter().rev().find_map(|f| {
            let end = f.end.min(max);
            let start = end.checked_sub(len)? & !(align - 1);
            (start >= f.start.max(min)).then_some(Region::new(start, start + len))
        })?;
        Some(self.take(found))
    }
}

/// What was carried into the next kernel's boot_params, for the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Carried {
    /// Whether the running kernel's boot_params were read (else defaults).
    pub running_boot_params: bool,
    pub e820_entries: usize,
    /// Where the e820 table came from: `memmap` (the firmware's, in
    /// `/sys/firmware/memmap`) or `iomem` (the kernel's, without it).
    pub e820_from: &'static str,
    pub acpi_rsdp: u64,
    /// `none` (no EFI boot), `kept`, or why EFI was not handed on.
    pub efi: &'static str,
}

/// Inputs of [`plan`], all already in memory.
pub struct Inputs<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a CStr,
    /// The next kernel's e820 table (`/sys/firmware/memmap`, else
    /// [`e820::from_iomem`]).
    pub e820: &'a [Entry],
    /// `memmap` or `iomem`, for the event.
    pub e820_from: &'static str,
    /// Where segments may go ([`e820::free_ram`]).
    pub free: Vec<Region>,
    pub running: Option<&'a [u8; ZERO_PAGE_LEN]>,
    pub efi: Result<efi::Runtime, efi::Outcome>,
    /// From `/sys/firmware/efi/systab`, for when the running boot_params
    /// have no RSDP.
    pub acpi_rsdp: Option<u64>,
    pub rng_seed: [u8; bootparam::RNG_SEED_LEN],
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub header: SetupHeader,
    /// The purgatory's address, `kexec_load`'s entry.
    pub entry: u64,
    /// The kernel's 64-bit entry, where the purgatory jumps.
    pub kernel_entry: u64,
    pub boot_params: u64,
    pub segments: Vec<Segment>,
    pub carried: Carried,
}

/// Decides every segment: validates the setup header, places kernel,
/// initrd, boot_params and purgatory in free RAM without overlap, and
/// builds the boot_params and the purgatory.
pub fn plan(inputs: &Inputs<'_>) -> Result<Plan, KexecError> {
    let header = SetupHeader::parse(inputs.kernel)?;
    let cmdline_len = inputs.cmdline.to_bytes().len();
    if cmdline_len as u64 > u64::from(header.cmdline_size) {
        return Err(KexecError::CmdlineTooLong {
            len: cmdline_len,
            max: header.cmdline_size as usize,
        });
    }
    let mut memory = Memory {
        free: inputs.free.clone(),
    };
    let limit = if header.above_4g() { u64::MAX } else { SZ_4G };
    let place = |what: &'static str, len: u64, align: u64, min: u64, max: u64| KexecError::Place {
        what,
        len,
        align,
        min,
        max,
    };

    // init_size is a u32, so the page-rounded length cannot overflow.
    let kernel_len = u64::from(header.init_size).div_ceil(PAGE) * PAGE;
    let pref = header.pref_address;
    let kernel = if header.relocatable {
        let align = u64::from(header.kernel_alignment);
        let min = pref.max(LOW_LIMIT);
        let at_pref = if pref.is_multiple_of(align) && pref >= LOW_LIMIT {
            memory.take_at(pref, kernel_len)
        } else {
            None
        };
        at_pref
            .filter(|r| r.end <= limit)
            .or_else(|| memory.take_low(kernel_len, align, min, limit))
            .ok_or(place("kernel", kernel_len, align, min, limit))?
    } else {
        memory
            .take_at(pref, kernel_len)
            .filter(|r| r.end <= limit)
            .ok_or(place(
                "kernel",
                kernel_len,
                PAGE,
                pref,
                pref.saturating_add(kernel_len),
            ))?
    };

    let initrd = match inputs.initrd {
        Some(bytes) => {
            let len = (bytes.len() as u64).div_ceil(PAGE) * PAGE;
            let max = if header.above_4g() {
                u64::MAX
            } else {
                u64::from(header.initrd_addr_max) + 1
            };
            let region = memory
                .take_high(len, PAGE, LOW_LIMIT, max)
                .ok_or(place("initrd", len, PAGE, LOW_LIMIT, max))?;
            Some((region, bytes.len() as u64))
        }
        None => None,
    };

    let efi = inputs.efi.as_ref().ok();
    let params = Params {
        image: inputs.kernel,
        header: &header,
        running: inputs.running,
        e820: inputs.e820,
        cmdline: inputs.cmdline,
        initrd: initrd.map(|(r, len)| (r.start, len)),
        efi,
        acpi_rsdp: inputs.acpi_rsdp,
        rng_seed: inputs.rng_seed,
    };
    let params_len = (bootparam::Layout::new(&params).len as u64).div_ceil(PAGE) * PAGE;
    let boot_params = memory
        .take_low(params_len, PAGE, LOW_LIMIT, SZ_4G)
        .ok_or(place("boot_params", params_len, PAGE, LOW_LIMIT, SZ_4G))?;
    let purgatory_at = memory.take_low(PAGE, PAGE, LOW_LIMIT, SZ_4G).ok_or(place(
        "purgatory",
        PAGE,
        PAGE,
        LOW_LIMIT,
        SZ_4G,
    ))?;

    let params_bytes = bootparam::build(&params, boot_params.start);
    let acpi_rsdp = u64::from_le_bytes(
        params_bytes[bootparam::off::ACPI_RSDP_ADDR..bootparam::off::ACPI_RSDP_ADDR + 8]
            .try_into()
            .unwrap_or_default(),
    );
    let kernel_entry = kernel.start + bzimage::ENTRY_64;
    let mut segments = vec![Segment {
        name: "kernel",
        bytes: SegmentBytes::Kernel,
        mem: kernel.start,
        memsz: kernel.len(),
    }];
    if let Some((r, _)) = initrd {
        segments.push(Segment {
            name: "initrd",
            bytes: SegmentBytes::Initrd,
            mem: r.start,
            memsz: r.len(),
        });
    }
    segments.push(Segment {
        name: "boot_params",
        bytes: SegmentBytes::Owned(params_bytes),
        mem: boot_params.start,
        memsz: boot_params.len(),
    });
    segments.push(Segment {
        name: "purgatory",
        bytes: SegmentBytes::Owned(
            purgatory(purgatory_at.start, boot_params.start, kernel_entry).to_vec(),
        ),
        mem: purgatory_at.start,
        memsz: purgatory_at.len(),
    });
    Ok(Plan {
        header,
        entry: purgatory_at.start,
        kernel_entry,
        boot_params: boot_params.start,
        segments,
        carried: Carried {
            running_boot_params: inputs.running.is_some(),
            e820_entries: inputs.e820.len(),
            e820_from: inputs.e820_from,
            acpi_rsdp,
            efi: match &inputs.efi {
                Ok(_) => efi::Outcome::Kept.describe(),
                Err(outcome) => outcome.describe(),
            },
        },
    })
}

pub const BOOT_PARAMS_DATA: &str = "/sys/kernel/boot_params/data";
const MEMMAP: &str = "/sys/firmware/memmap";
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
const SECURITYFS: &CStr = c"/sys/kernel/security";
const EFI: &str = "/sys/firmware/efi";

/// The running kernel's boot_params, if sysfs has them and they are whole.
pub fn read_running() -> Option<Box<[u8; ZERO_PAGE_LEN]>> {
    let bytes = std::fs::read(BOOT_PARAMS_DATA).ok()?;
    bytes.into_boxed_slice().try_into().ok()
}

/// Lockdown and Secure Boot, for [`method::decide`]. securityfs is mounted
/// here if nothing has mounted it yet: the lockdown file lives there.
pub fn situation(
    method: phase_initramfs::image::KexecMethod,
    running: Option<&[u8; ZERO_PAGE_LEN]>,
) -> method::Situation {
    let read = || std::fs::read_to_string(LOCKDOWN).ok();
    let text = read().or_else(|| {
        // Already mounted (EBUSY) or no securityfs: either way, read again.
        let _ = sys::mount(
            c"securityfs",
            SECURITYFS,
            c"securityfs",
            sys::MountFlags::NOSUID | sys::MountFlags::NODEV | sys::MountFlags::NOEXEC,
            None,
        );
        read()
    });
    let lockdown = text
        .as_deref()
        .and_then(Lockdown::parse)
        .unwrap_or(Lockdown::Unknown);
    let from_boot_params = running
        .is_some_and(|r| r[bootparam::off::SECURE_BOOT] == method::BOOT_PARAMS_SECURE_BOOT_ENABLED);
    let from_var = std::fs::read(method::SECURE_BOOT_VAR)
        .ok()
        .and_then(|b| method::secure_boot_var(&b))
        .unwrap_or(false);
    method::Situation {
        arch: method::Arch::X86_64,
        method,
        lockdown,
        secure_boot: from_boot_params || from_var,
    }
}

fn read_file(path: String) -> Result<String, KexecError> {
    std::fs::read_to_string(&path).map_err(|source| KexecError::ReadFile { path, source })
}

/// Every `/sys/firmware/memmap/<n>/{start,end,type}`.
fn read_memmap() -> Result<Vec<e820::Listed>, KexecError> {
    let dirs = std::fs::read_dir(MEMMAP).map_err(|source| KexecError::Read {
        path: MEMMAP,
        source,
    })?;
    let mut out = Vec::new();
    for dir in dirs {
        let dir = dir.map_err(|source| KexecError::Read {
            path: MEMMAP,
            source,
        })?;
        let name = dir.file_name().to_string_lossy().into_owned();
        let file = |f: &str| read_file(format!("{MEMMAP}/{name}/{f}"));
        out.push(e820::Listed {
            start: file("start")?,
            end: file("end")?,
            kind: file("type")?,
            dir: name,
        });
    }
    Ok(out)
}

/// The EFI files [`efi::handover`] decides from; all `None` on a BIOS boot.
fn read_efi() -> efi::Sources {
    let file = |f: &str| std::fs::read_to_string(format!("{EFI}/{f}")).ok();
    let runtime_map = std::fs::read_dir(format!("{EFI}/runtime-map"))
        .ok()
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .filter_map(|d| {
                    let dir = d.file_name().to_string_lossy().into_owned();
                    let f = |name: &str| file(&format!("runtime-map/{dir}/{name}"));
                    Some(efi::Listed {
                        kind: f("type")?,
                        phys_addr: f("phys_addr")?,
                        virt_addr: f("virt_addr")?,
                        num_pages: f("num_pages")?,
                        attribute: f("attribute")?,
                        dir,
                    })
                })
                .collect()
        });
    efi::Sources {
        runtime_map,
        systab: file("systab"),
        fw_vendor: file("fw_vendor"),
        runtime: file("runtime"),
        config_table: file("config_table"),
        fw_platform_size: file("fw_platform_size"),
    }
}

/// Loads the next kernel with `kexec_load`. The bzImage and the initrd are
/// mapped from their sealed memfds, so the bytes loaded are the bytes that
/// were hashed. `running` is the running kernel's boot_params
/// ([`read_running`]).
pub fn load(
    kernel: impl AsFd,
    initrd: Option<impl AsFd>,
    cmdline: &CStr,
    running: Option<&[u8; ZERO_PAGE_LEN]>,
) -> Result<Loaded, KexecError> {
    let map = |what: &'static str, fd: std::os::fd::BorrowedFd<'_>| {
        sys::mmap_sealed(fd).map_err(|source| KexecError::Map {
            what,
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            source,
        })
    };
    let kernel_map = map("kernel", kernel.as_fd())?;
    let initrd_map = match &initrd {
        Some(fd) => Some(map("initrd", fd.as_fd())?),
        None => None,
    };
    let iomem_text = std::fs::read_to_string("/proc/iomem").map_err(|source| KexecError::Read {
        path: "/proc/iomem",
        source,
    })?;
    let resources = iomem::parse(&iomem_text)?;
    let (e820, e820_from) = match read_memmap() {
        Ok(listing) => (e820::parse(&listing)?, "memmap"),
        // A kernel without CONFIG_FIRMWARE_MEMMAP.
        Err(KexecError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            (e820::from_iomem(&resources)?, "iomem")
        }
        Err(e) => return Err(e),
    };
    let free = e820::free_ram(&e820, &resources);
    if free.is_empty() {
        return Err(KexecError::NoRam);
    }
    let sources = read_efi();
    let info = running.map(|r| {
        let mut words = [0u8; 32];
        words.copy_from_slice(&r[bootparam::off::EFI_INFO..bootparam::off::EFI_INFO + 32]);
        efi::Info::parse(&words)
    });
    let mut rng_seed = [0u8; bootparam::RNG_SEED_LEN];
    sys::getrandom(&mut rng_seed).map_err(|source| KexecError::Getrandom {
        len: rng_seed.len(),
        source,
    })?;
    let plan = plan(&Inputs {
        kernel: &kernel_map,
        initrd: initrd_map.as_deref(),
        cmdline,
        e820: &e820,
        e820_from,
        free,
        running,
        efi: efi::handover(info, &sources),
        acpi_rsdp: sources.systab.as_deref().and_then(efi::acpi_rsdp),
        rng_seed,
    })?;
    let segments: Vec<sys::KexecSegment<'_>> = plan
        .segments
        .iter()
        .map(|s| sys::KexecSegment {
            buf: match &s.bytes {
                // parse() checked kernel_offset is inside the file.
                SegmentBytes::Kernel => kernel_map
                    .get(plan.header.kernel_offset..)
                    .unwrap_or_default(),
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
    let mut loaded = Loaded::new("kexec_load");
    loaded.entry = Some(plan.entry);
    loaded.kernel_entry = Some(plan.kernel_entry);
    loaded.segments = plan
        .segments
        .iter()
        .zip(&segments)
        .map(|(s, raw)| SegmentInfo {
            name: s.name,
            mem: s.mem,
            memsz: s.memsz,
            bufsz: raw.buf.len() as u64,
        })
        .collect();
    loaded.boot_params = Some(plan.carried);
    Ok(loaded)
}

/// The setup-header parser and placement for one untrusted image, as the
/// fuzz target and the corpus replay run them. Returns whether the header
/// parsed. Panics only on a broken invariant: segments that overlap, leave
/// free RAM, are not page-aligned, or a purgatory that does not point at
/// the kernel.
pub fn check_bzimage_path(image: &[u8]) -> bool {
    if SetupHeader::parse(image).is_err() {
        return false;
    }
    let e820 = [
        Entry {
            addr: 0,
            size: 0x9_fc00,
            kind: e820::kind::RAM,
        },
        Entry {
            addr: 0x10_0000,
            size: 0xbff0_0000,
            kind: e820::kind::RAM,
        },
        Entry {
            addr: 0x1_0000_0000,
            size: 0x1_0000_0000,
            kind: e820::kind::RAM,
        },
    ];
    let free = vec![
        Region::new(LOW_LIMIT, 0xc000_0000),
        Region::new(0x1_0000_0000, 0x2_0000_0000),
    ];
    let initrd = [0x5a; 100];
    let planned = plan(&Inputs {
        kernel: image,
        initrd: Some(&initrd),
        cmdline: c"console=ttyS0",
        e820: &e820,
        e820_from: "memmap",
        free: free.clone(),
        running: None,
        efi: Err(efi::Outcome::None),
        acpi_rsdp: None,
        rng_seed: [1; bootparam::RNG_SEED_LEN],
    });
    let plan = match planned {
        Ok(plan) => plan,
        // A declared init_size or pref_address may not fit this map.
        Err(KexecError::Place { .. } | KexecError::CmdlineTooLong { .. }) => return true,
        Err(e) => panic!("a header that parsed failed to plan: {e}"),
    };
    let mut regions: Vec<Region> = plan
        .segments
        .iter()
        .map(|s| Region::new(s.mem, s.mem + s.memsz))
        .collect();
    iomem::sort_by(&mut regions, |r| r.start);
    for pair in regions.windows(2) {
        assert!(pair[0].end <= pair[1].start, "segments overlap: {pair:?}");
    }
    for r in &regions {
        assert!(
            r.start % PAGE == 0 && r.end % PAGE == 0,
            "{r:?} not page-aligned"
        );
        assert!(
            free.iter().any(|f| f.start <= r.start && r.end <= f.end),
            "{r:?} outside free RAM"
        );
    }
    let code = plan
        .segments
        .iter()
        .find_map(|s| match (&s.name, &s.bytes) {
            (&"purgatory", SegmentBytes::Owned(b)) => Some(b.clone()),
            _ => None,
        });
    assert_eq!(
        code.as_deref(),
        Some(&purgatory(plan.entry, plan.boot_params, plan.kernel_entry)[..])
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kexec::bzimage::tests::image;
    use crate::kexec::e820::tests::{HOST_IOMEM, HOST_MEMMAP, listing};

    #[test]
    fn purgatory_bytes_are_as_annotated() {
        let bytes = purgatory(0x10_1000, 0x10_0000, 0x100_0200);
        assert_eq!(bytes[..0x2f], PURGATORY_CODE);
        // The rel32 displacements are measured from the next instruction.
        let rel32 = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as i64;
        assert_eq!(0x08 + rel32(0x04), GDTR_AT as i64);
        assert_eq!(0x1e + rel32(0x1a), 0x1000);
        assert_eq!(0x25 + rel32(0x21), BOOT_PARAMS_AT as i64);
        assert_eq!(0x2d + rel32(0x29), ENTRY_AT as i64);
        #[rustfmt::skip]
        let data: [u8; PURGATORY_LEN - 0x2f] = [
            0xcc,                                           // 0x2f padding (int3)
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x30 boot_params
            0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // 0x38 kernel entry
            0x1f, 0x00,                                     // 0x40 GDT limit: 4 entries
            0x50, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x42 GDT base: 0x101050
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,             // 0x4a padding
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x50 null descriptor
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x58 unused (0x08)
            0xff, 0xff, 0x00, 0x00, 0x00, 0x9b, 0xaf, 0x00, // 0x60 __BOOT_CS: 64-bit code
            0xff, 0xff, 0x00, 0x00, 0x00, 0x93, 0xcf, 0x00, // 0x68 __BOOT_DS: data
        ];
        assert_eq!(bytes[0x2f..], data);
    }

    /// The purgatory's code as binutils' `objdump` disassembles it (Debian
    /// `binutils`, installed by setup).
    #[test]
    fn purgatory_disassembles_as_intended() {
        let objdump = "objdump";
        let dir = std::env::temp_dir().join(format!("phase-purgatory-x86-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("purgatory.bin");
        std::fs::write(&bin, &purgatory(0x10_1000, 0, 0)[..0x2f]).unwrap();
        let out = match std::process::Command::new(objdump)
            .args(["-D", "-b", "binary", "-mi386:x86-64", "-M", "intel"])
            .arg(&bin)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                phase_testkit::skip(
                    module_path!(),
                    format_args!("{objdump} not runnable ({e}); install binutils"),
                );
                return;
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let insns: Vec<String> = text
            .lines()
            .filter(|l| l.split('\t').count() > 2)
            .map(|l| {
                let insn = l.split('\t').skip(2).collect::<Vec<_>>().join(" ");
                // Drop objdump's "# 0x40" target comments and spacing.
                let insn = insn.split('#').next().unwrap_or_default();
                insn.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        assert_eq!(
            insns,
            [
                "cli",
                "lgdt [rip+0x38]",
                "mov eax,0x18",
                "mov ds,eax",
                "mov es,eax",
                "mov ss,eax",
                "mov fs,eax",
                "mov gs,eax",
                "lea rsp,[rip+0xfe2]",
                "mov rsi,QWORD PTR [rip+0xb]",
                "push 0x10",
                "push QWORD PTR [rip+0xb]",
                "retfq",
            ],
            "{text}"
        );
    }

    fn host_map() -> (Vec<Entry>, Vec<Region>) {
        let e820 = e820::parse(&listing(HOST_MEMMAP)).unwrap();
        let free = e820::free_ram(&e820, &iomem::parse(HOST_IOMEM).unwrap());
        (e820, free)
    }

    fn inputs<'a>(
        kernel: &'a [u8],
        initrd: Option<&'a [u8]>,
        e820: &'a [Entry],
        free: Vec<Region>,
    ) -> Inputs<'a> {
        Inputs {
            kernel,
            initrd,
            cmdline: c"console=ttyS0 phase.marker=1",
            e820,
            e820_from: "memmap",
            free,
            running: None,
            efi: Err(efi::Outcome::None),
            acpi_rsdp: None,
            rng_seed: [7; bootparam::RNG_SEED_LEN],
        }
    }

    fn at<'p>(plan: &'p Plan, name: &str) -> &'p Segment {
        plan.segments.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn plans_a_boot_on_the_host_map() {
        let kernel = image(0x7d_8000);
        let initrd = vec![0x5a; 0x30_0001];
        let (e820, free) = host_map();
        let plan = plan(&inputs(&kernel, Some(&initrd), &e820, free.clone())).unwrap();
        let names: Vec<&str> = plan.segments.iter().map(|s| s.name).collect();
        assert_eq!(names, ["kernel", "initrd", "boot_params", "purgatory"]);
        // The kernel at pref_address with init_size; the 64-bit entry 0x200 in.
        assert_eq!(
            (at(&plan, "kernel").mem, at(&plan, "kernel").memsz),
            (0x100_0000, 0x3f9_8000)
        );
        assert_eq!(plan.kernel_entry, 0x100_0200);
        // XLF_CAN_BE_LOADED_ABOVE_4G: the initrd at the top of all RAM.
        assert_eq!(at(&plan, "initrd").mem, 0x6_4000_0000 - 0x30_1000);
        // boot_params and purgatory low, right above 1 MiB.
        assert_eq!(plan.boot_params, 0x10_0000);
        assert_eq!(at(&plan, "boot_params").memsz, 0x2000);
        assert_eq!(plan.entry, 0x10_2000);
        assert_eq!(at(&plan, "purgatory").memsz, 0x1000);
        let SegmentBytes::Owned(code) = &at(&plan, "purgatory").bytes else {
            panic!()
        };
        assert_eq!(code[..], purgatory(0x10_2000, 0x10_0000, 0x100_0200)[..]);
        let SegmentBytes::Owned(zp) = &at(&plan, "boot_params").bytes else {
            panic!()
        };
        // The e820 is the host's whole memmap, not only its free RAM.
        assert_eq!(zp[bootparam::off::E820_ENTRIES], 5);
        let ramdisk = |at: usize| u32::from_le_bytes(zp[at..at + 4].try_into().unwrap());
        assert_eq!(ramdisk(0x218), 0x3fcf_f000);
        assert_eq!(ramdisk(0x0c0), 0x6);
        assert_eq!(ramdisk(0x21c), 0x30_0001);
        assert_eq!(plan.carried.e820_entries, 5);
        assert!(check_plan_invariants(&plan, &free));
    }

    fn check_plan_invariants(plan: &Plan, free: &[Region]) -> bool {
        let mut regions: Vec<Region> = plan
            .segments
            .iter()
            .map(|s| Region::new(s.mem, s.mem + s.memsz))
            .collect();
        iomem::sort_by(&mut regions, |r| r.start);
        regions.windows(2).all(|p| p[0].end <= p[1].start)
            && regions.iter().all(|r| {
                r.start % PAGE == 0
                    && r.end % PAGE == 0
                    && free.iter().any(|f| f.start <= r.start && r.end <= f.end)
            })
    }

    #[test]
    fn below_4g_without_xlf_can_be_loaded_above_4g() {
        let mut kernel = image(0x1000);
        kernel[bzimage::at::XLOADFLAGS] = 0x01;
        let initrd = vec![1; 0x1000];
        let (e820, free) = host_map();
        let plan = plan(&inputs(&kernel, Some(&initrd), &e820, free.clone())).unwrap();
        // The initrd's last byte at initrd_addr_max (0x7fffffff).
        assert_eq!(at(&plan, "initrd").mem, 0x7fff_f000);
        assert!(check_plan_invariants(&plan, &free));
        // A map with RAM only above 4 GiB (and the low MiB) cannot hold it.
        let high = vec![Region::new(0x1_0000_0000, 0x2_0000_0000)];
        assert!(matches!(
            super::plan(&inputs(&kernel, Some(&initrd), &e820, high)),
            Err(KexecError::Place { what: "kernel", .. })
        ));
    }

    #[test]
    fn the_kernel_moves_up_when_pref_address_is_taken() {
        let kernel = image(0x1000);
        let (e820, _) = host_map();
        // A hole at 16 MiB + 8 MiB: pref_address has no init_size free, so
        // the kernel goes to the next 2 MiB boundary after the hole.
        let free = vec![
            Region::new(0x10_0000, 0x180_0000),
            Region::new(0x1a1_0000, 0xc000_0000),
        ];
        let plan = plan(&inputs(&kernel, None, &e820, free.clone())).unwrap();
        assert_eq!(at(&plan, "kernel").mem, 0x1c0_0000);
        assert_eq!(plan.kernel_entry, 0x1c0_0200);
        assert!(plan.segments.iter().all(|s| s.name != "initrd"));
        assert!(check_plan_invariants(&plan, &free));
        // Never below pref_address, where the kernel would move itself to.
        let low = vec![
            Region::new(0x10_0000, 0xff_f000),
            Region::new(0x100_0000, 0x200_0000),
        ];
        assert!(matches!(
            super::plan(&inputs(&kernel, None, &e820, low)),
            Err(KexecError::Place {
                what: "kernel",
                min: 0x100_0000,
                ..
            })
        ));
        // A kernel that is not relocatable goes exactly to pref_address.
        let mut fixed = image(0x1000);
        fixed[bzimage::at::RELOCATABLE_KERNEL] = 0;
        let taken = vec![
            Region::new(0x10_0000, 0x100_0000),
            Region::new(0x100_1000, 0x1_0000_0000),
        ];
        assert!(matches!(
            super::plan(&inputs(&fixed, None, &e820, taken)),
            Err(KexecError::Place {
                what: "kernel",
                min: 0x100_0000,
                ..
            })
        ));
    }

    #[test]
    fn refuses_a_long_command_line_and_a_bad_header() {
        let mut kernel = image(0x1000);
        kernel[bzimage::at::CMDLINE_SIZE..bzimage::at::CMDLINE_SIZE + 4]
            .copy_from_slice(&10u32.to_le_bytes());
        let (e820, free) = host_map();
        assert!(matches!(
            plan(&inputs(&kernel, None, &e820, free.clone())),
            Err(KexecError::CmdlineTooLong { len: 28, max: 10 })
        ));
        assert!(matches!(
            plan(&inputs(&kernel[..0x200], None, &e820, free)),
            Err(KexecError::BzImage { .. })
        ));
    }

    #[test]
    fn carries_efi_into_the_plan() {
        let kernel = image(0x1000);
        let (e820, free) = host_map();
        let runtime = efi::handover(Some(efi::tests::info()), &efi::tests::sources()).unwrap();
        let mut running = [0u8; ZERO_PAGE_LEN];
        running[0x1c0..0x1c4].copy_from_slice(b"EL64");
        running[0x070..0x078].copy_from_slice(&0xbfb7_e014u64.to_le_bytes());
        let mut i = inputs(&kernel, None, &e820, free);
        i.running = Some(&running);
        i.efi = Ok(runtime);
        let plan = plan(&i).unwrap();
        assert_eq!(
            plan.carried,
            Carried {
                running_boot_params: true,
                e820_entries: 5,
                e820_from: "memmap",
                acpi_rsdp: 0xbfb7_e014,
                efi: "kept",
            }
        );
        assert_eq!(
            serde_json::to_value(&plan.carried).unwrap(),
            serde_json::json!({
                "running_boot_params": true, "e820_entries": 5, "e820_from": "memmap", "acpi_rsdp": 0xbfb7_e014u64, "efi": "kept"
            })
        );
    }

    #[test]
    fn the_fuzz_path_holds_on_the_synthetic_image() {
        assert!(check_bzimage_path(&image(0x1000)));
        assert!(!check_bzimage_path(b"MZ"));
    }
}
