//! The zero page (`struct boot_params`, arch/x86/include/uapi/asm/bootparam.h)
//! and what hangs off it, built for the next kernel's 64-bit entry.
//!
//! One segment carries it all, page-aligned at `base`:
//!
//! ```text
//! base + 0x0000  boot_params (4096 bytes)
//! base + 0x1000  the command line, NUL-terminated
//!        align16 setup_data: SETUP_RNG_SEED, then SETUP_EFI, then SETUP_E820_EXT
//!        align16 the EFI runtime memory map (efi_info.efi_memmap points here)
//! ```
//!
//! The setup header is the image's own (0x1f1 to the end its jump
//! declares), with what a loader must fill in: `type_of_loader`, the
//! `loadflags` a 64-bit boot wants, the initrd, the command line and the
//! setup_data list. From the running kernel's boot_params
//! (`/sys/kernel/boot_params/data`) come the fields only firmware knows and
//! the next kernel cannot probe again: screen_info, the ACPI RSDP, EDD,
//! `secure_boot`, the hardware subarch, and `efi_info`, as the kernel's own
//! `kexec_file_load` copies them. Everything else is zero, so the sentinel
//! at 0x1ef is 0 and the kernel trusts the fields it reads.
//!
//! `type_of_loader` is 0xd0: loader ID 0xD ("kexec", boot.rst), version 0.
//! That is what the kernel's `kexec_file_load` writes too, so the next
//! kernel reports the same boot loader whichever syscall loaded it.

use std::ffi::CStr;

use super::bzimage::{self, SetupHeader, at};
use super::e820::Entry;
use super::efi;

/// `sizeof(struct boot_params)`.
pub const ZERO_PAGE_LEN: usize = 4096;
/// `E820_MAX_ENTRIES_ZEROPAGE`; more go into `SETUP_E820_EXT`.
pub const E820_MAX_ZEROPAGE: usize = 128;
/// `sizeof(struct boot_e820_entry)`: addr, size (u64), type (u32), packed.
pub const E820_ENTRY_LEN: usize = 20;
/// `sizeof(struct setup_data)` before its payload: next (u64), type, len (u32).
pub const SETUP_DATA_HEADER_LEN: usize = 16;
pub const SETUP_E820_EXT: u32 = 1;
pub const SETUP_EFI: u32 = 4;
pub const SETUP_RNG_SEED: u32 = 9;
/// What the kernel's `kexec_file_load` passes in `SETUP_RNG_SEED`.
pub const RNG_SEED_LEN: usize = 32;
/// Loader ID 0xD (kexec), version 0.
pub const TYPE_OF_LOADER: u8 = 0xd0;

/// Offsets of the fields written, in `struct boot_params` (the header's
/// own `/* 0x… */` comments; checked field by field in the tests).
pub mod off {
    pub const SCREEN_INFO: usize = 0x000;
    pub const SCREEN_INFO_LEN: usize = 0x40;
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const EFI_INFO: usize = 0x1c0;
    pub const EFI_INFO_LEN: usize = 32;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const EDDBUF_ENTRIES: usize = 0x1e9;
    pub const EDD_MBR_SIG_BUF_ENTRIES: usize = 0x1ea;
    pub const SECURE_BOOT: usize = 0x1ec;
    pub const SENTINEL: usize = 0x1ef;
    pub const HDR: usize = 0x1f1;
    /// The end of the room `hdr` has (`_pad7` runs up to here).
    pub const HDR_END: usize = 0x290;
    pub const EDD_MBR_SIG_BUFFER: usize = 0x290;
    /// `EDD_MBR_SIG_MAX` (16) × u32.
    pub const EDD_MBR_SIG_BUFFER_LEN: usize = 64;
    pub const E820_TABLE: usize = 0x2d0;
    pub const EDDBUF: usize = 0xd00;
    /// `EDDMAXNR` (6) × `sizeof(struct edd_info)` (82).
    pub const EDDBUF_LEN: usize = 492;
}

/// Offsets in `struct screen_info` (include/uapi/linux/screen_info.h).
pub mod screen {
    pub const EXT_MEM_K: usize = 0x02;
    pub const ORIG_VIDEO_COLS: usize = 0x07;
    pub const ORIG_VIDEO_LINES: usize = 0x0e;
    pub const ORIG_VIDEO_IS_VGA: usize = 0x0f;
    pub const ORIG_VIDEO_POINTS: usize = 0x10;
    pub const CL_MAGIC: usize = 0x20;
    pub const CL_OFFSET: usize = 0x22;
}

/// Everything the segment is built from.
pub struct Params<'a> {
    /// The bzImage, whose setup header is copied.
    pub image: &'a [u8],
    pub header: &'a SetupHeader,
    /// The running kernel's boot_params, when it could be read.
    pub running: Option<&'a [u8; ZERO_PAGE_LEN]>,
    pub e820: &'a [Entry],
    pub cmdline: &'a CStr,
    /// Physical address and exact length of the initrd.
    pub initrd: Option<(u64, u64)>,
    pub efi: Option<&'a efi::Runtime>,
    /// The RSDP from `/sys/firmware/efi/systab`, used when the running
    /// boot_params have none.
    pub acpi_rsdp: Option<u64>,
    pub rng_seed: [u8; RNG_SEED_LEN],
}

fn align16(n: usize) -> usize {
    // Lengths here are at most a few MiB: no overflow.
    n.div_ceil(16) * 16
}

/// Where each part lies in the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cmdline: usize,
    /// (type, offset of the setup_data header, payload length), in list order.
    pub setup_data: Vec<(u32, usize, usize)>,
    pub efi_map: Option<usize>,
    pub len: usize,
}

impl Layout {
    pub fn new(params: &Params<'_>) -> Layout {
        let cmdline = ZERO_PAGE_LEN;
        let mut at = align16(cmdline + params.cmdline.to_bytes_with_nul().len());
        let mut setup_data = Vec::new();
        let mut node = |kind: u32, len: usize, at: &mut usize| {
            setup_data.push((kind, *at, len));
            *at = align16(*at + SETUP_DATA_HEADER_LEN + len);
        };
        node(SETUP_RNG_SEED, RNG_SEED_LEN, &mut at);
        if params.efi.is_some() {
            node(SETUP_EFI, efi::SETUP_DATA_LEN, &mut at);
        }
        let extra = params.e820.len().saturating_sub(E820_MAX_ZEROPAGE);
        if extra > 0 {
            node(SETUP_E820_EXT, extra * E820_ENTRY_LEN, &mut at);
        }
        let efi_map = params.efi.map(|e| {
            let map = at;
            at += e.map.len() * efi::MEMDESC_SIZE;
            map
        });
        Layout {
            cmdline,
            setup_data,
            efi_map,
            len: at,
        }
    }
}

fn put(page: &mut [u8], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

fn e820_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * E820_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.kind.to_le_bytes());
    }
    out
}

/// The segment's bytes for a segment placed at `base`.
pub fn build(params: &Params<'_>, base: u64) -> Vec<u8> {
    let layout = Layout::new(params);
    let mut out = vec![0u8; layout.len];
    let addr = |offset: usize| base + offset as u64;
    let zp = &mut out[..ZERO_PAGE_LEN];

    // What only the firmware knew, from the running kernel's boot_params.
    match params.running {
        Some(running) => {
            let carry = |zp: &mut [u8], at: usize, len: usize| {
                zp[at..at + len].copy_from_slice(&running[at..at + len])
            };
            carry(zp, off::SCREEN_INFO, off::SCREEN_INFO_LEN);
            // The memory size is in the e820 table, and the command line is
            // found through cmd_line_ptr, not the old cl_magic protocol.
            put(zp, screen::EXT_MEM_K, &[0, 0]);
            put(zp, screen::CL_MAGIC, &[0, 0, 0, 0]);
            carry(zp, off::ACPI_RSDP_ADDR, 8);
            carry(zp, off::EDDBUF_ENTRIES, 2);
            carry(zp, off::EDD_MBR_SIG_BUFFER, off::EDD_MBR_SIG_BUFFER_LEN);
            carry(zp, off::EDDBUF, off::EDDBUF_LEN);
            carry(zp, off::SECURE_BOOT, 1);
            if params.efi.is_some() {
                carry(zp, off::EFI_INFO, off::EFI_INFO_LEN);
            }
        }
        None => {
            // 80×25 VGA text, as a BIOS leaves it.
            zp[screen::ORIG_VIDEO_COLS] = 80;
            zp[screen::ORIG_VIDEO_LINES] = 25;
            zp[screen::ORIG_VIDEO_IS_VGA] = 1;
            put(zp, screen::ORIG_VIDEO_POINTS, &16u16.to_le_bytes());
        }
    }
    if zp[off::ACPI_RSDP_ADDR..off::ACPI_RSDP_ADDR + 8] == [0; 8] {
        put(
            zp,
            off::ACPI_RSDP_ADDR,
            &params.acpi_rsdp.unwrap_or(0).to_le_bytes(),
        );
    }

    // The image's setup header, then a loader's part of it. header_end is
    // at most 0x202 + 0xff and parse() checked it is inside the image.
    let end = params.header.header_end.min(off::HDR_END);
    put(zp, off::HDR, &params.image[at::SETUP_SECTS..end]);
    zp[at::TYPE_OF_LOADER] = TYPE_OF_LOADER;
    zp[at::LOADFLAGS] = (params.header.loadflags | bzimage::LOADED_HIGH) & !bzimage::CAN_USE_HEAP;
    if let Some(running) = params.running {
        put(
            zp,
            at::HARDWARE_SUBARCH,
            &running[at::HARDWARE_SUBARCH..at::HARDWARE_SUBARCH_DATA + 8],
        );
    }
    let (ramdisk, ramdisk_len) = params.initrd.unwrap_or((0, 0));
    put(zp, at::RAMDISK_IMAGE, &(ramdisk as u32).to_le_bytes());
    put(zp, at::RAMDISK_SIZE, &(ramdisk_len as u32).to_le_bytes());
    put(
        zp,
        off::EXT_RAMDISK_IMAGE,
        &((ramdisk >> 32) as u32).to_le_bytes(),
    );
    put(
        zp,
        off::EXT_RAMDISK_SIZE,
        &((ramdisk_len >> 32) as u32).to_le_bytes(),
    );
    let cmdline = addr(layout.cmdline);
    put(zp, at::CMD_LINE_PTR, &(cmdline as u32).to_le_bytes());
    put(
        zp,
        off::EXT_CMD_LINE_PTR,
        &((cmdline >> 32) as u32).to_le_bytes(),
    );
    let first = layout.setup_data.first().map_or(0, |&(_, at, _)| addr(at));
    put(zp, at::SETUP_DATA, &first.to_le_bytes());

    // The memory map: the first 128 entries here, the rest in setup_data.
    let here = params.e820.len().min(E820_MAX_ZEROPAGE);
    zp[off::E820_ENTRIES] = here as u8;
    put(zp, off::E820_TABLE, &e820_bytes(&params.e820[..here]));

    if let (Some(efi), Some(map)) = (params.efi, layout.efi_map) {
        let map_addr = addr(map);
        let word = |v: u64| (v as u32).to_le_bytes();
        // efi_info: signature, systab and descriptor version stay as the
        // running kernel had them; the memory map is the runtime map.
        put(zp, off::EFI_INFO + 8, &word(efi::MEMDESC_SIZE as u64));
        put(zp, off::EFI_INFO + 16, &word(map_addr));
        put(
            zp,
            off::EFI_INFO + 20,
            &word((efi.map.len() * efi::MEMDESC_SIZE) as u64),
        );
        put(zp, off::EFI_INFO + 28, &word(map_addr >> 32));
        put(&mut out, map, &efi.map_bytes());
    }

    put(&mut out, layout.cmdline, params.cmdline.to_bytes_with_nul());
    for (i, &(kind, at, len)) in layout.setup_data.iter().enumerate() {
        let next = layout
            .setup_data
            .get(i + 1)
            .map_or(0, |&(_, at, _)| addr(at));
        put(&mut out, at, &next.to_le_bytes());
        put(&mut out, at + 8, &kind.to_le_bytes());
        put(&mut out, at + 12, &(len as u32).to_le_bytes());
        let payload = at + SETUP_DATA_HEADER_LEN;
        match kind {
            SETUP_RNG_SEED => put(&mut out, payload, &params.rng_seed),
            SETUP_EFI => {
                if let Some(efi) = params.efi {
                    put(&mut out, payload, &efi.setup_data());
                }
            }
            _ => put(&mut out, payload, &e820_bytes(&params.e820[here..])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kexec::bzimage::tests::image;
    use crate::kexec::e820::kind;

    /// `struct boot_params` and `struct setup_header` field by field, as
    /// bootparam.h declares them (Linux 6.x, with cc_blob_address): name,
    /// size, and the offset the header's comment gives (`None` where it
    /// gives none). Offsets are also summed from the sizes, so a wrong size
    /// or a missing field shows as a mismatch.
    #[rustfmt::skip]
    const BOOT_PARAMS: &[(&str, usize, Option<usize>)] = &[
        ("screen_info",             0x40,  Some(0x000)),
        ("apm_bios_info",           0x14,  Some(0x040)),
        ("_pad2",                   4,     Some(0x054)),
        ("tboot_addr",              8,     Some(0x058)),
        ("ist_info",                16,    Some(0x060)),
        ("acpi_rsdp_addr",          8,     Some(0x070)),
        ("_pad3",                   8,     Some(0x078)),
        ("hd0_info",                16,    Some(0x080)),
        ("hd1_info",                16,    Some(0x090)),
        ("sys_desc_table",          16,    Some(0x0a0)),
        ("olpc_ofw_header",         16,    Some(0x0b0)),
        ("ext_ramdisk_image",       4,     Some(0x0c0)),
        ("ext_ramdisk_size",        4,     Some(0x0c4)),
        ("ext_cmd_line_ptr",        4,     Some(0x0c8)),
        ("_pad4",                   112,   Some(0x0cc)),
        ("cc_blob_address",         4,     Some(0x13c)),
        ("edid_info",               128,   Some(0x140)),
        ("efi_info",                32,    Some(0x1c0)),
        ("alt_mem_k",               4,     Some(0x1e0)),
        ("scratch",                 4,     Some(0x1e4)),
        ("e820_entries",            1,     Some(0x1e8)),
        ("eddbuf_entries",          1,     Some(0x1e9)),
        ("edd_mbr_sig_buf_entries", 1,     Some(0x1ea)),
        ("kbd_status",              1,     Some(0x1eb)),
        ("secure_boot",             1,     Some(0x1ec)),
        ("_pad5",                   2,     Some(0x1ed)),
        ("sentinel",                1,     Some(0x1ef)),
        ("_pad6",                   1,     Some(0x1f0)),
        ("hdr",                     0x7b,  Some(0x1f1)),
        ("_pad7",                   0x24,  None),
        ("edd_mbr_sig_buffer",      64,    Some(0x290)),
        ("e820_table",              128 * 20, Some(0x2d0)),
        ("_pad8",                   48,    Some(0xcd0)),
        ("eddbuf",                  6 * 82, Some(0xd00)),
        ("_pad9",                   276,   Some(0xeec)),
    ];

    /// `struct setup_header` from 0x1f1; offsets from boot.rst's table.
    #[rustfmt::skip]
    const SETUP_HEADER: &[(&str, usize, usize)] = &[
        ("setup_sects",           1, 0x1f1),
        ("root_flags",            2, 0x1f2),
        ("syssize",               4, 0x1f4),
        ("ram_size",              2, 0x1f8),
        ("vid_mode",              2, 0x1fa),
        ("root_dev",              2, 0x1fc),
        ("boot_flag",             2, 0x1fe),
        ("jump",                  2, 0x200),
        ("header",                4, 0x202),
        ("version",               2, 0x206),
        ("realmode_swtch",        4, 0x208),
        ("start_sys_seg",         2, 0x20c),
        ("kernel_version",        2, 0x20e),
        ("type_of_loader",        1, 0x210),
        ("loadflags",             1, 0x211),
        ("setup_move_size",       2, 0x212),
        ("code32_start",          4, 0x214),
        ("ramdisk_image",         4, 0x218),
        ("ramdisk_size",          4, 0x21c),
        ("bootsect_kludge",       4, 0x220),
        ("heap_end_ptr",          2, 0x224),
        ("ext_loader_ver",        1, 0x226),
        ("ext_loader_type",       1, 0x227),
        ("cmd_line_ptr",          4, 0x228),
        ("initrd_addr_max",       4, 0x22c),
        ("kernel_alignment",      4, 0x230),
        ("relocatable_kernel",    1, 0x234),
        ("min_alignment",         1, 0x235),
        ("xloadflags",            2, 0x236),
        ("cmdline_size",          4, 0x238),
        ("hardware_subarch",      4, 0x23c),
        ("hardware_subarch_data", 8, 0x240),
        ("payload_offset",        4, 0x248),
        ("payload_length",        4, 0x24c),
        ("setup_data",            8, 0x250),
        ("pref_address",          8, 0x258),
        ("init_size",             4, 0x260),
        ("handover_offset",       4, 0x264),
        ("kernel_info_offset",    4, 0x268),
    ];

    fn field(name: &str) -> usize {
        BOOT_PARAMS
            .iter()
            .find(|f| f.0 == name)
            .and_then(|f| f.2)
            .or_else(|| SETUP_HEADER.iter().find(|f| f.0 == name).map(|f| f.2))
            .unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn offsets_match_bootparam_h() {
        let mut at = 0;
        for &(name, size, comment) in BOOT_PARAMS {
            if let Some(comment) = comment {
                assert_eq!(at, comment, "{name}: the sizes before it do not add up");
            }
            at += size;
        }
        assert_eq!(at, ZERO_PAGE_LEN);
        let mut at = off::HDR;
        for &(name, size, offset) in SETUP_HEADER {
            assert_eq!(at, offset, "setup_header.{name}");
            at += size;
        }
        assert_eq!(at, off::HDR + 0x7b, "sizeof(struct setup_header)");
        // Every constant the builder writes, against the header.
        let ours = [
            ("screen_info", off::SCREEN_INFO),
            ("acpi_rsdp_addr", off::ACPI_RSDP_ADDR),
            ("ext_ramdisk_image", off::EXT_RAMDISK_IMAGE),
            ("ext_ramdisk_size", off::EXT_RAMDISK_SIZE),
            ("ext_cmd_line_ptr", off::EXT_CMD_LINE_PTR),
            ("efi_info", off::EFI_INFO),
            ("e820_entries", off::E820_ENTRIES),
            ("eddbuf_entries", off::EDDBUF_ENTRIES),
            ("edd_mbr_sig_buf_entries", off::EDD_MBR_SIG_BUF_ENTRIES),
            ("secure_boot", off::SECURE_BOOT),
            ("sentinel", off::SENTINEL),
            ("hdr", off::HDR),
            ("edd_mbr_sig_buffer", off::EDD_MBR_SIG_BUFFER),
            ("e820_table", off::E820_TABLE),
            ("eddbuf", off::EDDBUF),
            ("setup_sects", at::SETUP_SECTS),
            ("syssize", at::SYSSIZE),
            ("boot_flag", at::BOOT_FLAG),
            ("jump", at::JUMP),
            ("header", at::HEADER),
            ("version", at::VERSION),
            ("type_of_loader", at::TYPE_OF_LOADER),
            ("loadflags", at::LOADFLAGS),
            ("ramdisk_image", at::RAMDISK_IMAGE),
            ("ramdisk_size", at::RAMDISK_SIZE),
            ("cmd_line_ptr", at::CMD_LINE_PTR),
            ("initrd_addr_max", at::INITRD_ADDR_MAX),
            ("kernel_alignment", at::KERNEL_ALIGNMENT),
            ("relocatable_kernel", at::RELOCATABLE_KERNEL),
            ("xloadflags", at::XLOADFLAGS),
            ("cmdline_size", at::CMDLINE_SIZE),
            ("hardware_subarch", at::HARDWARE_SUBARCH),
            ("hardware_subarch_data", at::HARDWARE_SUBARCH_DATA),
            ("payload_offset", at::PAYLOAD_OFFSET),
            ("payload_length", at::PAYLOAD_LENGTH),
            ("setup_data", at::SETUP_DATA),
            ("pref_address", at::PREF_ADDRESS),
            ("init_size", at::INIT_SIZE),
            ("handover_offset", at::END_OF_INIT_SIZE),
        ];
        for (name, offset) in ours {
            assert_eq!(offset, field(name), "{name}");
        }
        let size = |name: &str| BOOT_PARAMS.iter().find(|f| f.0 == name).unwrap().1;
        assert_eq!(off::SCREEN_INFO_LEN, size("screen_info"));
        assert_eq!(off::EFI_INFO_LEN, size("efi_info"));
        assert_eq!(off::EDD_MBR_SIG_BUFFER_LEN, size("edd_mbr_sig_buffer"));
        assert_eq!(off::EDDBUF_LEN, size("eddbuf"));
        assert_eq!(off::HDR_END, field("edd_mbr_sig_buffer"));
        assert_eq!(E820_MAX_ZEROPAGE * E820_ENTRY_LEN, size("e820_table"));
    }

    #[test]
    fn screen_info_offsets_match_screen_info_h() {
        #[rustfmt::skip]
        let fields: &[(&str, usize, usize)] = &[
            ("orig_x", 1, 0x00), ("orig_y", 1, 0x01), ("ext_mem_k", 2, 0x02),
            ("orig_video_page", 2, 0x04), ("orig_video_mode", 1, 0x06),
            ("orig_video_cols", 1, 0x07), ("flags", 1, 0x08), ("unused2", 1, 0x09),
            ("orig_video_ega_bx", 2, 0x0a), ("unused3", 2, 0x0c),
            ("orig_video_lines", 1, 0x0e), ("orig_video_isVGA", 1, 0x0f),
            ("orig_video_points", 2, 0x10), ("lfb_width", 2, 0x12),
            ("lfb_height", 2, 0x14), ("lfb_depth", 2, 0x16), ("lfb_base", 4, 0x18),
            ("lfb_size", 4, 0x1c), ("cl_magic", 2, 0x20), ("cl_offset", 2, 0x22),
            ("lfb_linelength", 2, 0x24), ("colours", 8, 0x26), ("vesapm_seg", 2, 0x2e),
            ("vesapm_off", 2, 0x30), ("pages", 2, 0x32), ("vesa_attributes", 2, 0x34),
            ("capabilities", 4, 0x36), ("ext_lfb_base", 4, 0x3a), ("_reserved", 2, 0x3e),
        ];
        let mut at = 0;
        for &(name, size, offset) in fields {
            assert_eq!(at, offset, "screen_info.{name}");
            at += size;
        }
        assert_eq!(at, off::SCREEN_INFO_LEN);
        let of = |name: &str| fields.iter().find(|f| f.0 == name).unwrap().2;
        assert_eq!(screen::EXT_MEM_K, of("ext_mem_k"));
        assert_eq!(screen::ORIG_VIDEO_COLS, of("orig_video_cols"));
        assert_eq!(screen::ORIG_VIDEO_LINES, of("orig_video_lines"));
        assert_eq!(screen::ORIG_VIDEO_IS_VGA, of("orig_video_isVGA"));
        assert_eq!(screen::ORIG_VIDEO_POINTS, of("orig_video_points"));
        assert_eq!(screen::CL_MAGIC, of("cl_magic"));
        assert_eq!(screen::CL_OFFSET, of("cl_offset"));
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn running() -> [u8; ZERO_PAGE_LEN] {
        let mut r = [0u8; ZERO_PAGE_LEN];
        // An EFI framebuffer (VIDEO_TYPE_EFI, 1280×800×32 at 0x80000000),
        // and stale values that must not be carried.
        r[0x0f] = 0x70;
        r[0x12..0x14].copy_from_slice(&1280u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&800u16.to_le_bytes());
        r[0x16..0x18].copy_from_slice(&32u16.to_le_bytes());
        r[0x18..0x1c].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        r[0x02..0x04].copy_from_slice(&0xfc00u16.to_le_bytes());
        r[0x20..0x24].copy_from_slice(&[0x3f, 0xa3, 0x00, 0x90]);
        r[0x070..0x078].copy_from_slice(&0xbfb7_e014u64.to_le_bytes());
        r[0x1c0..0x1c4].copy_from_slice(b"EL64");
        r[0x1c4..0x1c8].copy_from_slice(&0xbfea_f018u32.to_le_bytes());
        r[0x1c8..0x1cc].copy_from_slice(&48u32.to_le_bytes());
        r[0x1cc..0x1d0].copy_from_slice(&1u32.to_le_bytes());
        r[0x1d0..0x1d4].copy_from_slice(&0xbe00_0000u32.to_le_bytes());
        r[0x1d4..0x1d8].copy_from_slice(&0x1e00u32.to_le_bytes());
        r[0x1e8] = 7; // the running kernel's own e820 count: not carried
        r[0x1e9] = 1;
        r[0x1ea] = 1;
        r[0x1ec] = 2; // secure_boot: disabled
        r[0x1ef] = 0xff; // a sentinel: never carried
        r[0x23c] = 0; // hardware_subarch: PC
        r[0x250] = 0x42; // the running kernel's setup_data: not carried
        r[0x290..0x294].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        r[0xd00] = 0x80; // eddbuf[0].device
        r
    }

    fn memmap(n: usize) -> Vec<Entry> {
        (0..n as u64)
            .map(|i| Entry {
                addr: i << 24,
                size: 1 << 23,
                kind: if i % 2 == 0 {
                    kind::RAM
                } else {
                    kind::RESERVED
                },
            })
            .collect()
    }

    #[test]
    fn builds_the_zero_page() {
        let kernel = image(0x1000);
        let header = SetupHeader::parse(&kernel).unwrap();
        let e820 = memmap(3);
        let efi = efi::handover(Some(efi::tests::info()), &efi::tests::sources()).unwrap();
        let running = running();
        let params = Params {
            image: &kernel,
            header: &header,
            running: Some(&running),
            e820: &e820,
            cmdline: c"console=ttyS0 phase.marker=1",
            initrd: Some((0x1_2345_6000, 0x30_0001)),
            efi: Some(&efi),
            acpi_rsdp: Some(0x1234),
            rng_seed: [0x5a; RNG_SEED_LEN],
        };
        let base = 0x10_0000;
        let b = build(&params, base);
        let layout = Layout::new(&params);
        assert_eq!(
            layout.setup_data,
            [(SETUP_RNG_SEED, 0x1020, 32), (SETUP_EFI, 0x1050, 96)]
        );
        assert_eq!(layout.efi_map, Some(0x10c0));
        assert_eq!(b.len(), 0x10c0 + 3 * 40);

        // screen_info carried, minus the stale memory size and cl_magic.
        assert_eq!(b[0x0f], 0x70);
        assert_eq!(b[0x12..0x1c], running[0x12..0x1c]);
        assert_eq!(b[0x02..0x04], [0, 0]);
        assert_eq!(b[0x20..0x24], [0, 0, 0, 0]);
        // The running RSDP wins over the systab's.
        assert_eq!(u64_at(&b, field("acpi_rsdp_addr")), 0xbfb7_e014);
        assert_eq!(b[field("eddbuf_entries")], 1);
        assert_eq!(b[field("edd_mbr_sig_buf_entries")], 1);
        assert_eq!(u32_at(&b, field("edd_mbr_sig_buffer")), 0xdead_beef);
        assert_eq!(b[field("eddbuf")], 0x80);
        assert_eq!(b[field("secure_boot")], 2);
        assert_eq!(b[field("sentinel")], 0);
        // The image's header, with the loader's fields.
        assert_eq!(&b[field("header")..field("header") + 4], b"HdrS");
        assert_eq!(b[field("setup_sects")], 0x27);
        assert_eq!(u32_at(&b, field("init_size")), 0x3f9_8000);
        assert_eq!(b[field("type_of_loader")], 0xd0);
        assert_eq!(b[field("loadflags")], 0x01);
        assert_eq!(u32_at(&b, field("ramdisk_image")), 0x2345_6000);
        assert_eq!(u32_at(&b, field("ext_ramdisk_image")), 0x1);
        assert_eq!(u32_at(&b, field("ramdisk_size")), 0x30_0001);
        assert_eq!(u32_at(&b, field("ext_ramdisk_size")), 0);
        assert_eq!(u32_at(&b, field("cmd_line_ptr")), 0x10_1000);
        assert_eq!(u32_at(&b, field("ext_cmd_line_ptr")), 0);
        assert_eq!(&b[0x1000..0x101d], b"console=ttyS0 phase.marker=1\0");
        // Nothing of the image past its header, nothing at all past 0x26c.
        assert!(b[0x26c..0x290].iter().all(|&x| x == 0));
        // e820.
        assert_eq!(b[field("e820_entries")], 3);
        #[rustfmt::skip]
        let second: [u8; 20] = [
            0, 0, 0, 0x01, 0, 0, 0, 0,   // addr 0x1000000
            0, 0, 0x80, 0, 0, 0, 0, 0,   // size 0x800000
            2, 0, 0, 0,                  // Reserved
        ];
        assert_eq!(b[0x2d0 + 20..0x2d0 + 40], second);
        assert!(b[0x2d0 + 60..0xcd0].iter().all(|&x| x == 0));
        // setup_data: RNG seed, then EFI, then the end of the list.
        assert_eq!(u64_at(&b, field("setup_data")), base + 0x1020);
        assert_eq!(u64_at(&b, 0x1020), base + 0x1050);
        assert_eq!(u32_at(&b, 0x1028), SETUP_RNG_SEED);
        assert_eq!(u32_at(&b, 0x102c), 32);
        assert_eq!(b[0x1030..0x1050], [0x5a; 32]);
        assert_eq!(u64_at(&b, 0x1050), 0);
        assert_eq!(u32_at(&b, 0x1058), SETUP_EFI);
        assert_eq!(u32_at(&b, 0x105c), 96);
        assert_eq!(b[0x1060..0x10c0], efi.setup_data());
        // efi_info: the running systab, our runtime map.
        let ei = field("efi_info");
        assert_eq!(&b[ei..ei + 4], b"EL64");
        assert_eq!(u32_at(&b, ei + 4), 0xbfea_f018);
        assert_eq!(u32_at(&b, ei + 8), 40);
        assert_eq!(u32_at(&b, ei + 12), 1);
        assert_eq!(u32_at(&b, ei + 16), 0x10_10c0);
        assert_eq!(u32_at(&b, ei + 20), 120);
        assert_eq!(u32_at(&b, ei + 28), 0);
        assert_eq!(b[0x10c0..], efi.map_bytes()[..]);
    }

    #[test]
    fn without_running_params_or_efi() {
        let kernel = image(0x1000);
        let header = SetupHeader::parse(&kernel).unwrap();
        let e820 = memmap(130);
        let params = Params {
            image: &kernel,
            header: &header,
            running: None,
            e820: &e820,
            cmdline: c"",
            initrd: None,
            efi: None,
            acpi_rsdp: Some(0xf_5a60),
            rng_seed: [1; RNG_SEED_LEN],
        };
        let base = 0x2_0000_0000;
        let b = build(&params, base);
        // VGA text defaults; the RSDP from the systab; no EFI.
        assert_eq!((b[0x07], b[0x0e], b[0x0f], b[0x10]), (80, 25, 1, 16));
        assert_eq!(u64_at(&b, field("acpi_rsdp_addr")), 0xf_5a60);
        assert!(b[0x1c0..0x1e0].iter().all(|&x| x == 0));
        assert_eq!(u32_at(&b, field("ramdisk_image")), 0);
        // A command line above 4 GiB uses ext_cmd_line_ptr.
        assert_eq!(u32_at(&b, field("cmd_line_ptr")), 0x1000);
        assert_eq!(u32_at(&b, field("ext_cmd_line_ptr")), 2);
        // 128 entries in the zero page, 2 in SETUP_E820_EXT after the seed.
        assert_eq!(b[field("e820_entries")], 128);
        let layout = Layout::new(&params);
        assert_eq!(
            layout.setup_data,
            [(SETUP_RNG_SEED, 0x1010, 32), (SETUP_E820_EXT, 0x1040, 40)]
        );
        assert_eq!(u64_at(&b, 0x1010), base + 0x1040);
        assert_eq!(u64_at(&b, 0x1040), 0);
        assert_eq!(u32_at(&b, 0x1048), SETUP_E820_EXT);
        assert_eq!(u64_at(&b, 0x1050), 128 << 24);
        assert_eq!(u64_at(&b, 0x1050 + 20), 129 << 24);
        assert_eq!(u32_at(&b, 0x1050 + 36), kind::RESERVED);
        assert_eq!(b.len(), 0x1080);
    }
}
