//! What the next kernel needs to keep EFI runtime services after a
//! `kexec_load`: the runtime regions' memory map with the virtual addresses
//! the running kernel gave them (SetVirtualAddressMap can be called only
//! once per boot, so the next kernel must map them at the same places), and
//! a `SETUP_EFI` setup_data that tells it this is such a boot and where the
//! firmware's vendor string and configuration tables are. This is what the
//! kernel's own `kexec_file_load` passes (arch/x86/kernel/kexec-bzimage64.c),
//! read from sysfs:
//!
//! - `/sys/firmware/efi/runtime-map/<n>/{type,phys_addr,virt_addr,num_pages,attribute}`
//! - `/sys/firmware/efi/{fw_vendor,runtime,config_table}`, `/sys/firmware/efi/systab`
//!   (`SMBIOS=`, and `ACPI20=`/`ACPI=` for the RSDP), `/sys/firmware/efi/fw_platform_size`
//!
//! Only a 64-bit firmware's state is handed on. Anything missing or odd
//! drops EFI from the hand-off instead (a zero `efi_info`): the next kernel
//! then boots as on a BIOS machine, without runtime services but with its
//! ACPI tables, since the RSDP is passed either way.

/// `efi_info.efi_loader_signature` of a 64-bit EFI boot: "EL64".
pub const EL64: u32 = u32::from_le_bytes(*b"EL64");
/// The only `efi_memdesc_version` there is.
pub const MEMDESC_VERSION: u32 = 1;
/// `efi_memory_desc_t` as written here: type, pad, phys, virt, pages, attribute.
pub const MEMDESC_SIZE: usize = 40;
/// `struct efi_setup_data` (arch/x86/include/asm/efi.h): fw_vendor,
/// an unused word (kexec-tools puts `runtime` there), tables, smbios and
/// eight reserved words.
pub const SETUP_DATA_LEN: usize = 96;

/// One runtime region as `/sys/firmware/efi/runtime-map/<dir>` lists it,
/// the five files' contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listed {
    pub dir: String,
    pub kind: String,
    pub phys_addr: String,
    pub virt_addr: String,
    pub num_pages: String,
    pub attribute: String,
}

/// `efi_memory_desc_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemDesc {
    pub kind: u32,
    pub phys_addr: u64,
    pub virt_addr: u64,
    pub num_pages: u64,
    pub attribute: u64,
}

impl MemDesc {
    pub fn to_bytes(&self) -> [u8; MEMDESC_SIZE] {
        let mut out = [0u8; MEMDESC_SIZE];
        out[0..4].copy_from_slice(&self.kind.to_le_bytes());
        // 4..8 is padding.
        out[8..16].copy_from_slice(&self.phys_addr.to_le_bytes());
        out[16..24].copy_from_slice(&self.virt_addr.to_le_bytes());
        out[24..32].copy_from_slice(&self.num_pages.to_le_bytes());
        out[32..40].copy_from_slice(&self.attribute.to_le_bytes());
        out
    }
}

/// The sysfs files read for the hand-off; `None` where a file was absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    pub runtime_map: Option<Vec<Listed>>,
    pub systab: Option<String>,
    pub fw_vendor: Option<String>,
    pub runtime: Option<String>,
    pub config_table: Option<String>,
    pub fw_platform_size: Option<String>,
}

/// The EFI state handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub map: Vec<MemDesc>,
    pub fw_vendor: u64,
    pub runtime: u64,
    pub config_table: u64,
    pub smbios: u64,
}

impl Runtime {
    /// The `SETUP_EFI` payload.
    pub fn setup_data(&self) -> [u8; SETUP_DATA_LEN] {
        let mut out = [0u8; SETUP_DATA_LEN];
        out[0..8].copy_from_slice(&self.fw_vendor.to_le_bytes());
        out[8..16].copy_from_slice(&self.runtime.to_le_bytes());
        out[16..24].copy_from_slice(&self.config_table.to_le_bytes());
        out[24..32].copy_from_slice(&self.smbios.to_le_bytes());
        out
    }

    /// The runtime map as the next kernel reads it at `efi_memmap`.
    pub fn map_bytes(&self) -> Vec<u8> {
        self.map.iter().flat_map(|d| d.to_bytes()).collect()
    }
}

/// What happens to EFI across the hand-off, for the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not an EFI boot (or no running boot_params to tell).
    None,
    /// Runtime services are handed on.
    Kept,
    /// An EFI boot whose runtime state cannot be handed on.
    Dropped(&'static str),
}

impl Outcome {
    /// For the event: `none`, `kept`, or why it was dropped.
    pub fn describe(&self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Kept => "kept",
            Outcome::Dropped(why) => why,
        }
    }
}

/// A `0x…` number as sysfs prints it (surrounding white space allowed).
pub fn hex(text: &str) -> Option<u64> {
    let digits = text.trim().strip_prefix("0x")?;
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The value of `KEY=0x…` in `/sys/firmware/efi/systab`.
pub fn systab_value(systab: &str, key: &str) -> Option<u64> {
    systab.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        if k == key { hex(v) } else { None }
    })
}

/// The ACPI RSDP the firmware published, 2.0 table first.
pub fn acpi_rsdp(systab: &str) -> Option<u64> {
    systab_value(systab, "ACPI20").or_else(|| systab_value(systab, "ACPI"))
}

/// The runtime map, sorted by the directory's number (the kernel's order).
pub fn parse_runtime_map(listing: &[Listed]) -> Option<Vec<MemDesc>> {
    let mut map: Vec<(u64, MemDesc)> = Vec::with_capacity(listing.len());
    for l in listing {
        let index = l.dir.parse::<u64>().ok()?;
        map.push((
            index,
            MemDesc {
                kind: u32::try_from(hex(&l.kind)?).ok()?,
                phys_addr: hex(&l.phys_addr)?,
                virt_addr: hex(&l.virt_addr)?,
                num_pages: hex(&l.num_pages)?,
                attribute: hex(&l.attribute)?,
            },
        ));
    }
    super::iomem::sort_by(&mut map, |(i, _)| *i);
    Some(map.into_iter().map(|(_, d)| d).collect())
}

/// The running kernel's `efi_info` (32 bytes at 0x1c0 of its boot_params).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub signature: u32,
    pub systab: u64,
    pub memdesc_version: u32,
    pub memmap_size: u32,
}

impl Info {
    pub fn parse(bytes: &[u8; 32]) -> Info {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Info {
            signature: word(0),
            systab: u64::from(word(4)) | (u64::from(word(24)) << 32),
            memdesc_version: word(12),
            memmap_size: word(20),
        }
    }
}

/// Decides what of EFI the next kernel gets: `Ok` with the state to hand
/// on, or the outcome to report when nothing is handed on.
pub fn handover(info: Option<Info>, sources: &Sources) -> Result<Runtime, Outcome> {
    let Some(info) = info.filter(|i| i.memmap_size != 0) else {
        return Err(Outcome::None);
    };
    if info.signature != EL64 {
        return Err(Outcome::Dropped(
            "the firmware is not 64-bit EFI (efi_loader_signature is not EL64)",
        ));
    }
    if sources
        .fw_platform_size
        .as_deref()
        .is_some_and(|s| s.trim() != "64")
    {
        return Err(Outcome::Dropped("fw_platform_size is not 64"));
    }
    if info.memdesc_version != MEMDESC_VERSION {
        return Err(Outcome::Dropped("efi_memdesc_version is not 1"));
    }
    let Some(listing) = &sources.runtime_map else {
        return Err(Outcome::Dropped(
            "no /sys/firmware/efi/runtime-map (CONFIG_EFI_RUNTIME_MAP)",
        ));
    };
    let Some(map) = parse_runtime_map(listing).filter(|m| !m.is_empty()) else {
        return Err(Outcome::Dropped(
            "/sys/firmware/efi/runtime-map is empty or malformed",
        ));
    };
    let value = |text: &Option<String>| text.as_deref().and_then(hex);
    let (Some(fw_vendor), Some(runtime), Some(config_table)) = (
        value(&sources.fw_vendor),
        value(&sources.runtime),
        value(&sources.config_table),
    ) else {
        return Err(Outcome::Dropped(
            "/sys/firmware/efi/{fw_vendor,runtime,config_table} are missing or malformed",
        ));
    };
    let smbios = sources
        .systab
        .as_deref()
        .and_then(|s| systab_value(s, "SMBIOS"))
        .unwrap_or(0);
    Ok(Runtime {
        map,
        fw_vendor,
        runtime,
        config_table,
        smbios,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A runtime map as an OVMF guest shows it (values of the shape the
    /// kernel prints; addresses made up for the test).
    pub(crate) fn sources() -> Sources {
        let entry = |dir: &str, kind: &str, phys: &str, virt: &str, pages: &str| Listed {
            dir: dir.into(),
            kind: format!("{kind}\n"),
            phys_addr: format!("{phys}\n"),
            virt_addr: format!("{virt}\n"),
            num_pages: format!("{pages}\n"),
            attribute: "0x800000000000000f\n".into(),
        };
        Sources {
            runtime_map: Some(vec![
                entry("10", "0xb", "0xffc00000", "0xfffffffeffc00000", "0x400"),
                entry("2", "0x5", "0xbf5ee000", "0xfffffffeff5ee000", "0x8a"),
                entry("1", "0x6", "0xbf500000", "0xfffffffeff500000", "0xee"),
            ]),
            systab: Some("ACPI20=0xbfb7e014\nACPI=0xbfb7e000\nSMBIOS=0xbf9bc000\n".into()),
            fw_vendor: Some("0xbfeb0f98\n".into()),
            runtime: Some("0xbfeeeb98\n".into()),
            config_table: Some("0xbfeaf018\n".into()),
            fw_platform_size: Some("64\n".into()),
        }
    }

    pub(crate) fn info() -> Info {
        Info {
            signature: EL64,
            systab: 0x1_bfea_f018,
            memdesc_version: 1,
            memmap_size: 0x1e00,
        }
    }

    #[test]
    fn hands_on_a_64_bit_runtime() {
        let r = handover(Some(info()), &sources()).unwrap();
        // Sorted by directory number, not by name.
        let phys: Vec<u64> = r.map.iter().map(|d| d.phys_addr).collect();
        assert_eq!(phys, [0xbf50_0000, 0xbf5e_e000, 0xffc0_0000]);
        assert_eq!(r.smbios, 0xbf9b_c000);
        #[rustfmt::skip]
        let first: [u8; MEMDESC_SIZE] = [
            0x06, 0, 0, 0,  0, 0, 0, 0,                         // type, pad
            0x00, 0x00, 0x50, 0xbf, 0, 0, 0, 0,                 // phys_addr
            0x00, 0x00, 0x50, 0xff, 0xfe, 0xff, 0xff, 0xff,     // virt_addr
            0xee, 0, 0, 0, 0, 0, 0, 0,                          // num_pages
            0x0f, 0, 0, 0, 0, 0, 0, 0x80,                       // attribute
        ];
        assert_eq!(r.map_bytes()[..MEMDESC_SIZE], first);
        assert_eq!(r.map_bytes().len(), 3 * MEMDESC_SIZE);
        #[rustfmt::skip]
        let setup: [u8; 32] = [
            0x98, 0x0f, 0xeb, 0xbf, 0, 0, 0, 0,   // fw_vendor
            0x98, 0xeb, 0xee, 0xbf, 0, 0, 0, 0,   // the unused word: runtime
            0x18, 0xf0, 0xea, 0xbf, 0, 0, 0, 0,   // tables
            0x00, 0xc0, 0x9b, 0xbf, 0, 0, 0, 0,   // smbios
        ];
        assert_eq!(r.setup_data()[..32], setup);
        assert!(r.setup_data()[32..].iter().all(|&b| b == 0));
    }

    #[test]
    fn drops_what_cannot_be_handed_on() {
        assert_eq!(handover(None, &sources()), Err(Outcome::None));
        let bios = Info {
            memmap_size: 0,
            ..info()
        };
        assert_eq!(handover(Some(bios), &sources()), Err(Outcome::None));
        let dropped =
            |info: Info, sources: Sources, needle: &str| match handover(Some(info), &sources) {
                Err(Outcome::Dropped(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{needle}: {other:?}"),
            };
        let el32 = Info {
            signature: u32::from_le_bytes(*b"EL32"),
            ..info()
        };
        dropped(el32, sources(), "not EL64");
        dropped(
            info(),
            Sources {
                fw_platform_size: Some("32\n".into()),
                ..sources()
            },
            "fw_platform_size",
        );
        dropped(
            Info {
                memdesc_version: 2,
                ..info()
            },
            sources(),
            "version",
        );
        dropped(
            info(),
            Sources {
                runtime_map: None,
                ..sources()
            },
            "CONFIG_EFI_RUNTIME_MAP",
        );
        dropped(
            info(),
            Sources {
                runtime_map: Some(vec![]),
                ..sources()
            },
            "empty",
        );
        let mut bad = sources();
        bad.runtime_map.as_mut().unwrap()[0].num_pages = "400\n".into();
        dropped(info(), bad, "malformed");
        dropped(
            info(),
            Sources {
                runtime: None,
                ..sources()
            },
            "runtime",
        );
        // No SMBIOS line is not a reason to drop EFI.
        let r = handover(
            Some(info()),
            &Sources {
                systab: None,
                ..sources()
            },
        )
        .unwrap();
        assert_eq!(r.smbios, 0);
    }

    #[test]
    fn reads_the_systab() {
        let systab = "ACPI20=0xbfb7e014\nACPI=0xbfb7e000\nSMBIOS3=0xbf9bb000\nSMBIOS=0xbf9bc000\n";
        assert_eq!(acpi_rsdp(systab), Some(0xbfb7_e014));
        assert_eq!(acpi_rsdp("ACPI=0xf5a60\n"), Some(0xf_5a60));
        assert_eq!(systab_value(systab, "SMBIOS"), Some(0xbf9b_c000));
        assert_eq!(acpi_rsdp("ACPI20=bfb7e014\n"), None);
        assert_eq!(acpi_rsdp(""), None);
    }

    #[test]
    fn reads_efi_info() {
        let mut bytes = [0u8; 32];
        bytes[0..4].copy_from_slice(b"EL64");
        bytes[4..8].copy_from_slice(&0xbfea_f018u32.to_le_bytes());
        bytes[8..12].copy_from_slice(&48u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        bytes[20..24].copy_from_slice(&0x1e00u32.to_le_bytes());
        bytes[24..28].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(Info::parse(&bytes), info());
    }
}
