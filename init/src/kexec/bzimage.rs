//! The setup header of an x86 bzImage (Documentation/arch/x86/boot.rst), as
//! far as a 64-bit loader needs it: where the protected-mode kernel starts in
//! the file, how much memory it needs where, and what the 64-bit entry
//! accepts. Only boot protocol 2.12 and later are taken (the first with
//! `xloadflags`, so the first that can say it has a 64-bit entry).
//!
//! The parser is pure and fuzzed (`fuzz/fuzz_targets/bzimage.rs`): every
//! declared size is checked against the file before it is believed.

use super::KexecError;

/// Offsets in the file (and in `boot_params`, which embeds the header at the
/// same place), from boot.rst's table.
pub mod at {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    /// The jump over the header; its second byte is the header's length
    /// counted from 0x202.
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const HARDWARE_SUBARCH: usize = 0x23c;
    pub const HARDWARE_SUBARCH_DATA: usize = 0x240;
    pub const PAYLOAD_OFFSET: usize = 0x248;
    pub const PAYLOAD_LENGTH: usize = 0x24c;
    pub const SETUP_DATA: usize = 0x250;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// The first byte after `init_size`, the last field this loader reads.
    pub const END_OF_INIT_SIZE: usize = 0x264;
}

/// `0xAA55`, the boot sector signature.
pub const BOOT_FLAG: u16 = 0xaa55;
/// `HdrS`, little-endian.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// Boot protocol 2.12: `xloadflags`, the 64-bit entry, loading above 4 GiB.
pub const MIN_VERSION: u16 = 0x020c;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 0x100000 or
/// above (every bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 7: real-mode setup may use a heap (irrelevant to the
/// 64-bit entry, so cleared).
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags` bit 1: kernel, initrd, boot_params and command line may all
/// be above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// Where the 64-bit entry is, from the start of the protected-mode kernel.
pub const ENTRY_64: u64 = 0x200;

/// The fields placement and boot_params need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    pub version: u16,
    pub loadflags: u8,
    pub xloadflags: u16,
    /// Real-mode setup sectors (0 in the file means 4).
    pub setup_sects: u8,
    pub relocatable: bool,
    pub kernel_alignment: u32,
    /// The highest address the initrd's last byte may have.
    pub initrd_addr_max: u32,
    /// The longest command line, without its NUL.
    pub cmdline_size: u32,
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address to decompress and run.
    pub init_size: u32,
    /// Offset of the protected-mode kernel in the file: the setup sectors
    /// and the boot sector before it.
    pub kernel_offset: usize,
    /// The end of the header in the file (from the jump at 0x200): what a
    /// loader copies from 0x1f1 into `boot_params.hdr`.
    pub header_end: usize,
}

impl SetupHeader {
    /// Refuses, naming the field and its value, anything that is not a
    /// 64-bit-loadable bzImage or whose declared sizes pass the file's end.
    pub fn parse(image: &[u8]) -> Result<SetupHeader, KexecError> {
        let bad = |field: &'static str, problem: &'static str, value: u64| {
            Err(KexecError::BzImage {
                field,
                problem,
                value,
            })
        };
        let len = image.len() as u64;
        if image.len() < at::END_OF_INIT_SIZE {
            return bad(
                "length",
                "truncated: shorter than the 0x264-byte setup header, bytes",
                len,
            );
        }
        // In bounds: every offset below is under END_OF_INIT_SIZE.
        let u8_at = |at: usize| image[at];
        let u16_at = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([image[at], image[at + 1], image[at + 2], image[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);

        let flag = u16_at(at::BOOT_FLAG);
        if flag != BOOT_FLAG {
            return bad("boot_flag", "boot_flag at 0x1fe is not 0xaa55", flag.into());
        }
        let magic = u32_at(at::HEADER);
        if magic != HEADER_MAGIC {
            return bad(
                "header",
                "header at 0x202 is not HdrS (boot protocol before 2.00)",
                magic.into(),
            );
        }
        let version = u16_at(at::VERSION);
        if version < MIN_VERSION {
            return bad(
                "version",
                "boot protocol version is older than 2.12 (0x20c)",
                version.into(),
            );
        }
        let header_end = at::HEADER + usize::from(u8_at(at::JUMP + 1));
        if header_end < at::END_OF_INIT_SIZE {
            return bad(
                "jump",
                "the setup header (its end from the jump at 0x200) stops before init_size",
                header_end as u64,
            );
        }
        let loadflags = u8_at(at::LOADFLAGS);
        if loadflags & LOADED_HIGH == 0 {
            return bad(
                "loadflags",
                "loadflags lack LOADED_HIGH: a zImage, not a bzImage",
                loadflags.into(),
            );
        }
        let xloadflags = u16_at(at::XLOADFLAGS);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return bad(
                "xloadflags",
                "xloadflags lack XLF_KERNEL_64: no 64-bit entry",
                xloadflags.into(),
            );
        }
        let setup_sects = match u8_at(at::SETUP_SECTS) {
            0 => 4,
            n => n,
        };
        // At most (255 + 1) * 512: no overflow.
        let kernel_offset = (usize::from(setup_sects) + 1) * 512;
        if image.len() <= kernel_offset || header_end > kernel_offset {
            return bad(
                "setup_sects",
                "truncated: the file ends before the kernel offset setup_sects declares",
                kernel_offset as u64,
            );
        }
        let kernel_len = len - kernel_offset as u64;
        // syssize counts 16-byte paragraphs, rounded up.
        let syssize = u64::from(u32_at(at::SYSSIZE)) * 16;
        if syssize > kernel_len + 15 {
            return bad(
                "syssize",
                "truncated: syssize declares more protected-mode kernel than the file has, bytes",
                syssize,
            );
        }
        let payload_end =
            u64::from(u32_at(at::PAYLOAD_OFFSET)) + u64::from(u32_at(at::PAYLOAD_LENGTH));
        if payload_end > kernel_len {
            return bad(
                "payload_length",
                "truncated: payload_offset + payload_length end past the file, at",
                payload_end,
            );
        }
        let init_size = u32_at(at::INIT_SIZE);
        if u64::from(init_size) < kernel_len {
            return bad(
                "init_size",
                "init_size is smaller than the protected-mode kernel",
                init_size.into(),
            );
        }
        let relocatable = u8_at(at::RELOCATABLE_KERNEL) != 0;
        let kernel_alignment = u32_at(at::KERNEL_ALIGNMENT);
        if relocatable && (!kernel_alignment.is_power_of_two() || kernel_alignment < 4096) {
            return bad(
                "kernel_alignment",
                "kernel_alignment is not a power of two of at least a page",
                kernel_alignment.into(),
            );
        }
        let pref_address = u64_at(at::PREF_ADDRESS);
        if !relocatable && !pref_address.is_multiple_of(4096) {
            return bad(
                "pref_address",
                "pref_address of a kernel that is not relocatable is not page-aligned",
                pref_address,
            );
        }
        Ok(SetupHeader {
            version,
            loadflags,
            xloadflags,
            setup_sects,
            relocatable,
            kernel_alignment,
            initrd_addr_max: u32_at(at::INITRD_ADDR_MAX),
            cmdline_size: u32_at(at::CMDLINE_SIZE),
            pref_address,
            init_size,
            kernel_offset,
            header_end,
        })
    }

    /// Whether everything may go above 4 GiB.
    pub fn above_4g(&self) -> bool {
        self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A synthetic bzImage with the header values of Debian's 6.1.0-57
    /// amd64 kernel (protocol 2.15, 39 setup sectors, init_size 0x3f98000)
    /// around `kernel_len` bytes of protected-mode kernel.
    pub(crate) fn image(kernel_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 40 * 512 + kernel_len];
        let put = |b: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut b, at::SETUP_SECTS, &[0x27]);
        put(
            &mut b,
            at::SYSSIZE,
            &((kernel_len as u32).div_ceil(16)).to_le_bytes(),
        );
        put(&mut b, at::BOOT_FLAG, &[0x55, 0xaa]);
        put(&mut b, at::JUMP, &[0xeb, 0x6a]);
        put(&mut b, at::HEADER, b"HdrS");
        put(&mut b, at::VERSION, &0x020fu16.to_le_bytes());
        put(&mut b, at::LOADFLAGS, &[0x01]);
        put(&mut b, 0x214, &0x0010_0000u32.to_le_bytes());
        put(&mut b, at::INITRD_ADDR_MAX, &0x7fff_ffffu32.to_le_bytes());
        put(&mut b, at::KERNEL_ALIGNMENT, &0x0020_0000u32.to_le_bytes());
        put(&mut b, at::RELOCATABLE_KERNEL, &[1, 0x15]);
        put(&mut b, at::XLOADFLAGS, &0x7fu16.to_le_bytes());
        put(&mut b, at::CMDLINE_SIZE, &0x7ffu32.to_le_bytes());
        put(&mut b, at::PAYLOAD_OFFSET, &0x2ccu32.to_le_bytes());
        put(
            &mut b,
            at::PAYLOAD_LENGTH,
            &((kernel_len as u32) / 2).to_le_bytes(),
        );
        put(&mut b, at::PREF_ADDRESS, &0x0100_0000u64.to_le_bytes());
        put(&mut b, at::INIT_SIZE, &0x03f9_8000u32.to_le_bytes());
        b
    }

    #[test]
    fn reads_the_header() {
        let h = SetupHeader::parse(&image(0x1000)).unwrap();
        assert_eq!(
            h,
            SetupHeader {
                version: 0x020f,
                loadflags: 0x01,
                xloadflags: 0x7f,
                setup_sects: 0x27,
                relocatable: true,
                kernel_alignment: 0x20_0000,
                initrd_addr_max: 0x7fff_ffff,
                cmdline_size: 0x7ff,
                pref_address: 0x100_0000,
                init_size: 0x3f9_8000,
                kernel_offset: 0x5000,
                header_end: 0x26c,
            }
        );
        assert!(h.above_4g());
        // setup_sects 0 means 4.
        let mut four = image(0x1000);
        four[at::SETUP_SECTS] = 0;
        assert_eq!(SetupHeader::parse(&four).unwrap().kernel_offset, 0xa00);
    }

    #[test]
    fn refuses_what_is_not_64_bit_loadable_or_truncated() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = image(0x1000);
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        #[rustfmt::skip]
        let cases: Vec<(Vec<u8>, &str, &str, u64)> = vec![
            (image(0x1000)[..0x263].to_vec(), "length", "shorter than the 0x264-byte setup header", 0x263),
            (with(at::BOOT_FLAG, &[0x55, 0xab]), "boot_flag", "boot_flag", 0xab55),
            (with(at::HEADER, b"HdrT"), "header", "is not HdrS", 0x5472_6448),
            (with(at::VERSION, &[0x0b, 0x02]), "version", "older than 2.12", 0x20b),
            (with(at::JUMP + 1, &[0x5e]), "jump", "stops before init_size", 0x260),
            (with(at::LOADFLAGS, &[0x80]), "loadflags", "lack LOADED_HIGH", 0x80),
            (with(at::XLOADFLAGS, &[0x7e]), "xloadflags", "lack XLF_KERNEL_64", 0x7e),
            (image(0x1000)[..0x5000].to_vec(), "setup_sects", "ends before the kernel offset", 0x5000),
            (with(at::SETUP_SECTS, &[0xff]), "setup_sects", "ends before the kernel offset", 0x2_0000),
            (image(0x1000)[..0x5800].to_vec(), "syssize", "syssize declares more", 0x1000),
            (with(at::PAYLOAD_LENGTH, &0x1000u32.to_le_bytes()), "payload_length", "payload_length end past", 0x12cc),
            (with(at::INIT_SIZE, &0xfffu32.to_le_bytes()), "init_size", "init_size is smaller", 0xfff),
            (with(at::KERNEL_ALIGNMENT, &0x30_0000u32.to_le_bytes()), "kernel_alignment", "kernel_alignment", 0x30_0000),
            (with(at::KERNEL_ALIGNMENT, &0x800u32.to_le_bytes()), "kernel_alignment", "kernel_alignment", 0x800),
            (
                {
                    let mut b = with(at::RELOCATABLE_KERNEL, &[0]);
                    b[at::PREF_ADDRESS] = 0x10;
                    b
                },
                "pref_address", "not relocatable is not page-aligned", 0x100_0010,
            ),
        ];
        for (bytes, want_field, needle, want) in cases {
            match SetupHeader::parse(&bytes) {
                Err(KexecError::BzImage {
                    field,
                    problem,
                    value,
                }) => {
                    assert_eq!(field, want_field, "{needle}");
                    assert!(problem.contains(needle), "{problem:?} lacks {needle:?}");
                    assert_eq!(value, want, "{needle}");
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
        // The message names the field and the value.
        let e = SetupHeader::parse(&with(at::XLOADFLAGS, &[0x7e])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a bzImage a 64-bit loader can take: xloadflags lack XLF_KERNEL_64: no 64-bit entry (0x7e)"
        );
    }

    /// The Debian kernel `cargo xtask test` unpacked
    /// (`PHASE_TEST_KERNEL_TREE_X86_64`), read as the hand-off would.
    #[test]
    fn reads_the_debian_kernel() {
        let var = "PHASE_TEST_KERNEL_TREE_X86_64";
        let Some(tree) = std::env::var_os(var) else {
            phase_testkit::skip(
                module_path!(),
                format_args!("{var} is not set (cargo xtask test sets it to a Debian kernel tree)"),
            );
            return;
        };
        let boot = std::path::Path::new(&tree).join("boot");
        let path = std::fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .unwrap_or_else(|| panic!("no vmlinuz-* in {}", boot.display()));
        let bytes = std::fs::read(&path).unwrap();
        let h = SetupHeader::parse(&bytes).unwrap();
        // What every Debian bookworm amd64 kernel has: protocol 2.15, a
        // relocatable 64-bit kernel that may live above 4 GiB, 16 MiB
        // preferred, 2 MiB aligned, a 2047-byte command line.
        assert_eq!(h.version, 0x020f, "{}", path.display());
        assert_eq!(h.xloadflags & 0x3, 0x3);
        assert!(h.relocatable);
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.kernel_alignment, 0x20_0000);
        assert_eq!(h.cmdline_size, 2047);
        assert_eq!(h.initrd_addr_max, 0x7fff_ffff);
        assert_eq!(h.header_end, 0x26c);
        assert!(u64::from(h.init_size) > (bytes.len() - h.kernel_offset) as u64);
    }
}
