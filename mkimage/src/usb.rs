//! The hybrid USB disk image: one GPT partition, the EFI system partition,
//! that both firmware kinds boot from.
//!
//! - UEFI finds the removable-media boot file on the ESP (`esp`).
//! - BIOS runs the MBR code: with the protective MBR that is syslinux's
//!   `gptmbr.bin`, which starts the GPT partition marked legacy-BIOS-bootable;
//!   with a hybrid MBR (the ESP also listed as an active MBR partition, for
//!   BIOSes that insist on one) it is `mbr.bin`. Either loads the volume boot
//!   sector that `syslinux` installed, which loads `ldlinux.sys`, which reads
//!   `/syslinux/syslinux.cfg` — the menu of kernel variants and modes.
//!
//! The partition starts at 1 MiB; the disk ends on a 1 MiB boundary after
//! the backup GPT.

use thiserror::Error;

use crate::esp::{BootSet, EspError};
use crate::fat::{self, FatError, FatOptions, FatType, Files};
use crate::gpt::{self, Gpt, GptError, Guid, Mbr, Partition};
use crate::syslinux::{Syslinux, SyslinuxError};

/// The ESP's first LBA: 1 MiB, as partitioning tools align.
pub const PART_START: u64 = 2048;
const SECTOR: u64 = 512;

#[derive(Debug, Error)]
pub enum UsbError {
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error("laying out the system partition")]
    Fat(#[source] FatError),
    #[error("installing syslinux on the system partition")]
    Syslinux(#[source] SyslinuxError),
    #[error("writing the partition table")]
    Gpt(#[source] GptError),
    #[error("a disk of {size} bytes is too small: the content needs {needed}")]
    TooSmall { size: u64, needed: u64 },
    #[error("the disk size {0} is not a multiple of 512 bytes")]
    Unaligned(u64),
}

/// The BIOS boot pieces.
#[derive(Debug, Clone)]
pub struct Bios {
    pub syslinux: Syslinux,
    /// COM32 modules for the menu (menu.c32, libutil.c32, libcom32.c32);
    /// empty for the built-in prompt.
    pub modules: Vec<(String, Vec<u8>)>,
    /// MBR boot code: gptmbr.bin (protective) or mbr.bin (hybrid).
    pub mbr_code: Vec<u8>,
}

impl Bios {
    pub fn has_menu(&self) -> bool {
        self.modules.iter().any(|(n, _)| n == "menu.c32")
    }
}

#[derive(Debug, Clone, Default)]
pub struct UsbOptions {
    /// The whole disk's size; `None` fits the content plus `free`.
    pub size: Option<u64>,
    pub free: u64,
    pub fat_type: Option<FatType>,
    /// A hybrid MBR instead of the protective one.
    pub hybrid: bool,
    /// Seed for the disk and partition GUIDs and the volume ID.
    pub seed: Vec<u8>,
    pub time: u64,
}

#[derive(Debug, Clone)]
pub struct UsbImage {
    pub bytes: Vec<u8>,
    pub esp_offset: u64,
    pub esp_len: u64,
    pub fat_type: FatType,
}

/// Where syslinux lives on the ESP.
pub const SYSLINUX_DIR: &str = "syslinux";

/// The files of a system partition that boots on both firmware kinds (or
/// on UEFI alone, without `bios`).
pub fn files(boot: &BootSet, bios: Option<&Bios>) -> Result<Files, UsbError> {
    let mut files = Files::new();
    boot.add_uefi(&mut files)?;
    let Some(bios) = bios else {
        return Ok(files);
    };
    let fat = |e| UsbError::Esp(EspError::Fat(e));
    for (path, data) in boot.bios_files() {
        files.add(&path, data.to_vec()).map_err(fat)?;
    }
    let sys = |name: &str| format!("{SYSLINUX_DIR}/{name}");
    files
        .add_with_attr(
            &sys("ldlinux.sys"),
            bios.syslinux.ldlinux_sys_file(),
            fat::attr::READ_ONLY | fat::attr::HIDDEN | fat::attr::SYSTEM,
        )
        .map_err(fat)?;
    files
        .add(&sys("ldlinux.c32"), bios.syslinux.ldlinux_c32.clone())
        .map_err(fat)?;
    for (name, data) in &bios.modules {
        files.add(&sys(name), data.clone()).map_err(fat)?;
    }
    files
        .add(
            &sys("syslinux.cfg"),
            boot.menu.syslinux_cfg(bios.has_menu()).into_bytes(),
        )
        .map_err(fat)?;
    Ok(files)
}

/// Writes the disk; `bios` is `None` for a UEFI-only (aarch64) disk.
pub fn build(boot: &BootSet, bios: Option<&Bios>, opts: &UsbOptions) -> Result<UsbImage, UsbError> {
    let files = files(boot, bios)?;
    let overhead = (PART_START + 1 + gpt::ARRAY_SECTORS) * SECTOR;
    let fat_size = match opts.size {
        Some(size) if !size.is_multiple_of(SECTOR) => return Err(UsbError::Unaligned(size)),
        Some(size) => {
            if size <= overhead {
                return Err(UsbError::TooSmall {
                    size,
                    needed: overhead + files.data_bytes(),
                });
            }
            Some(size - overhead)
        }
        None => None,
    };
    let build_fat = |size: Option<u64>| {
        fat::build(
            &files,
            &FatOptions {
                label: Some("PHASE-BOOT".into()),
                volume_id: {
                    let g = Guid::derive(&[&opts.seed[..], b" volume"].concat()).0;
                    u32::from_le_bytes([g[0], g[1], g[2], g[3]])
                },
                time: opts.time,
                hidden_sectors: PART_START as u32,
                size,
                free_bytes: opts.free,
                fat_type: opts.fat_type,
                cluster_size: None,
                sparse: false,
            },
        )
        .map_err(|e| match (e, opts.size) {
            (FatError::TooSmall { needed, .. }, Some(size)) => UsbError::TooSmall {
                size,
                needed: needed + overhead,
            },
            (e, _) => UsbError::Fat(e),
        })
    };
    let mut volume = build_fat(fat_size)?;
    if opts.size.is_none() {
        // Grow the volume to whole MiB so the partition ends aligned, as
        // partitioning tools expect; the disk adds 1 MiB for the backup GPT.
        let aligned = (volume.bytes.len() as u64).div_ceil(1 << 20) << 20;
        if aligned != volume.bytes.len() as u64 {
            volume = build_fat(Some(aligned))?;
        }
    }
    if let Some(bios) = bios {
        let ldlinux = volume.files[&format!("{SYSLINUX_DIR}/ldlinux.sys")];
        bios.syslinux
            .install(&mut volume.bytes, ldlinux, &format!("/{SYSLINUX_DIR}"))
            .map_err(UsbError::Syslinux)?;
    }

    let esp_sectors = volume.bytes.len() as u64 / SECTOR;
    let disk_sectors = match opts.size {
        Some(size) => size / SECTOR,
        None => PART_START + esp_sectors + 2048,
    };
    let mut disk = vec![0u8; (disk_sectors * SECTOR) as usize];
    let at = (PART_START * SECTOR) as usize;
    disk[at..at + volume.bytes.len()].copy_from_slice(&volume.bytes);
    let mbr_type = if volume.fat_type == FatType::Fat32 {
        gpt::mbr_types::FAT32
    } else {
        gpt::mbr_types::FAT16
    };
    Gpt {
        disk_guid: Guid::derive(&[&opts.seed[..], b" disk"].concat()),
        partitions: vec![Partition {
            type_guid: gpt::types::EFI_SYSTEM,
            guid: Guid::derive(&[&opts.seed[..], b" esp"].concat()),
            first_lba: PART_START,
            last_lba: PART_START + esp_sectors - 1,
            attributes: gpt::attributes::LEGACY_BIOS_BOOTABLE,
            name: "EFI system partition".into(),
        }],
        mbr: if opts.hybrid {
            Mbr::Hybrid(vec![(0, mbr_type)])
        } else {
            Mbr::Protective
        },
        boot_code: bios.map(|b| b.mbr_code.clone()).unwrap_or_default(),
        disk_signature: {
            let g = Guid::derive(&[&opts.seed[..], b" mbr"].concat()).0;
            u32::from_le_bytes([g[0], g[1], g[2], g[3]])
        },
    }
    .write(&mut disk)
    .map_err(UsbError::Gpt)?;
    Ok(UsbImage {
        bytes: disk,
        esp_offset: PART_START * SECTOR,
        esp_len: esp_sectors * SECTOR,
        fat_type: volume.fat_type,
    })
}
