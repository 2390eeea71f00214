//! The hybrid USB disk image: the EFI system partition, that both firmware
//! kinds boot from, and — when the initramfs names one — a state partition
//! where a machine without EFI variables keeps its version floor.
//!
//! - UEFI finds the removable-media boot file on the ESP (`esp`).
//! - BIOS runs the MBR code: with the protective MBR that is syslinux's
//!   `gptmbr.bin`, which starts the GPT partition marked legacy-BIOS-bootable;
//!   with a hybrid MBR (the ESP also listed as an active MBR partition, for
//!   BIOSes that insist on one) it is `mbr.bin`. Either loads the volume boot
//!   sector that `syslinux` installed, which loads `ldlinux.sys`, which reads
//!   `/syslinux/syslinux.cfg` — the menu of kernel variants and modes.
//!
//! The ESP starts at 1 MiB; the state partition (1 MiB of zeros, so the
//! floor it holds is 0, labelled as the image's `[state] partlabel`, of the
//! type `phase_initramfs::state::PARTITION_TYPE_GUID`) follows it on the
//! next 1 MiB boundary; the disk ends on a 1 MiB boundary after the backup
//! GPT.

use std::borrow::Cow;

use thiserror::Error;

use crate::esp::{BootSet, EspError};
use crate::fat::{self, FatError, FatLayout, FatOptions, FatType, Files};
use crate::gpt::{self, Gpt, GptError, Guid, Mbr, Partition};
use crate::pieces::{Pieces, PiecesError};
use crate::syslinux::{Syslinux, SyslinuxError};

/// The ESP's first LBA: 1 MiB, as partitioning tools align.
pub const PART_START: u64 = 2048;
/// The state partition's type.
pub const STATE_TYPE: Guid = Guid::parse(phase_initramfs::state::PARTITION_TYPE_GUID);
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
    #[error("laying out the disk")]
    Layout(#[source] PiecesError),
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
    /// The files these came from, as (what, path).
    pub inputs: Vec<(String, std::path::PathBuf)>,
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
    /// The state partition's byte offset and length, if the disk has one.
    pub state: Option<(u64, u64)>,
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
            boot.menu
                .syslinux_cfg(bios.has_menu())
                .map_err(|e| UsbError::Esp(EspError::Menu(e)))?
                .into_bytes(),
        )
        .map_err(fat)?;
    Ok(files)
}

/// The disk laid out: the GPT's pieces, the system partition's layout and
/// its files, the rest zeros. [`UsbLayout::pieces`] is the whole disk, so a
/// disk of any `--size` costs what its files do.
#[derive(Debug, Clone)]
pub struct UsbLayout {
    pub len: u64,
    pub esp_offset: u64,
    pub esp_len: u64,
    pub fat_type: FatType,
    /// The state partition's byte offset and length, if the disk has one.
    pub state: Option<(u64, u64)>,
    files: Files,
    volume: FatLayout,
    gpt: Vec<(u64, Vec<u8>)>,
}

impl UsbLayout {
    /// The whole disk as pieces.
    pub fn pieces(&self) -> Result<Pieces<'_>, UsbError> {
        let volume = self
            .volume
            .pieces(&self.files)
            .and_then(|p| p.shifted(self.esp_offset, self.len))
            .map_err(UsbError::Layout)?;
        let table = Pieces::from_unsorted(
            self.len,
            self.gpt
                .iter()
                .map(|(o, d)| (*o, Cow::Borrowed(d.as_slice())))
                .collect(),
        )
        .map_err(UsbError::Layout)?;
        volume.merged(table, self.len).map_err(UsbError::Layout)
    }
}

/// Writes the disk into one buffer; `bios` is `None` for a UEFI-only
/// (aarch64) disk. For large disks, [`layout`] and [`UsbLayout::pieces`].
pub fn build(boot: &BootSet, bios: Option<&Bios>, opts: &UsbOptions) -> Result<UsbImage, UsbError> {
    let l = layout(boot, bios, opts)?;
    Ok(UsbImage {
        bytes: l.pieces()?.to_vec(),
        esp_offset: l.esp_offset,
        esp_len: l.esp_len,
        fat_type: l.fat_type,
        state: l.state,
    })
}

/// Lays the disk out; `bios` is `None` for a UEFI-only (aarch64) disk.
pub fn layout(
    boot: &BootSet,
    bios: Option<&Bios>,
    opts: &UsbOptions,
) -> Result<UsbLayout, UsbError> {
    let mut files = files(boot, bios)?;
    const MIB: u64 = 1 << 20;
    let state_len = boot
        .state_partlabel
        .as_ref()
        .map_or(0, |_| phase_initramfs::state::PARTITION_SIZE);
    let overhead = (PART_START + 1 + gpt::ARRAY_SECTORS) * SECTOR + state_len;
    let fat_size = match opts.size {
        Some(size) if !size.is_multiple_of(SECTOR) => return Err(UsbError::Unaligned(size)),
        Some(size) => {
            if size <= overhead {
                return Err(UsbError::TooSmall {
                    size,
                    needed: overhead + files.data_bytes(),
                });
            }
            // With a state partition after it, the ESP ends on a MiB
            // boundary so the state partition starts on one.
            Some(if state_len > 0 {
                (size - overhead) / MIB * MIB
            } else {
                size - overhead
            })
        }
        None => None,
    };
    let build_fat = |files: &Files, size: Option<u64>| {
        fat::layout(
            files,
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
    let mut volume = build_fat(&files, fat_size)?;
    if opts.size.is_none() {
        // Grow the volume to whole MiB so the partition ends aligned, as
        // partitioning tools expect; the disk adds 1 MiB for the backup GPT.
        let aligned = volume.len.div_ceil(1 << 20) << 20;
        if aligned != volume.len {
            volume = build_fat(&files, Some(aligned))?;
        }
    }
    if let Some(bios) = bios {
        let path = format!("{SYSLINUX_DIR}/ldlinux.sys");
        let ldlinux = volume.files[&path];
        let data = files.get_mut(&path).expect("files() added ldlinux.sys");
        bios.syslinux
            .install_parts(
                volume.reserved_mut(),
                data,
                ldlinux,
                &format!("/{SYSLINUX_DIR}"),
            )
            .map_err(UsbError::Syslinux)?;
    }

    let esp_sectors = volume.len / SECTOR;
    let state_sectors = state_len / SECTOR;
    // The ESP ends on a MiB boundary when a state partition follows (auto
    // size, or the explicit size rounded above), so this is aligned too.
    let state_first = (PART_START + esp_sectors).next_multiple_of(2048);
    let disk_sectors = match opts.size {
        Some(size) => size / SECTOR,
        None => state_first + state_sectors + 2048,
    };
    let mbr_type = if volume.fat_type == FatType::Fat32 {
        gpt::mbr_types::FAT32
    } else {
        gpt::mbr_types::FAT16
    };
    let mut partitions = vec![Partition {
        type_guid: gpt::types::EFI_SYSTEM,
        guid: Guid::derive(&[&opts.seed[..], b" esp"].concat()),
        first_lba: PART_START,
        last_lba: PART_START + esp_sectors - 1,
        attributes: gpt::attributes::LEGACY_BIOS_BOOTABLE,
        name: "EFI system partition".into(),
    }];
    if let Some(label) = &boot.state_partlabel {
        partitions.push(Partition {
            type_guid: STATE_TYPE,
            guid: Guid::derive(&[&opts.seed[..], b" state"].concat()),
            first_lba: state_first,
            last_lba: state_first + state_sectors - 1,
            attributes: 0,
            name: label.clone(),
        });
    }
    let gpt = Gpt {
        disk_guid: Guid::derive(&[&opts.seed[..], b" disk"].concat()),
        partitions,
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
    .pieces(disk_sectors)
    .map_err(UsbError::Gpt)?;
    Ok(UsbLayout {
        len: disk_sectors * SECTOR,
        esp_offset: PART_START * SECTOR,
        esp_len: esp_sectors * SECTOR,
        fat_type: volume.fat_type,
        state: boot
            .state_partlabel
            .as_ref()
            .map(|_| (state_first * SECTOR, state_len)),
        files,
        volume,
        gpt,
    })
}
