//! The bootable ISO: isolinux for BIOS, an embedded ESP image for UEFI, and
//! the isohybrid MBR — so one file boots as a CD and written to a disk, on
//! both firmware kinds (x86_64), or on UEFI (aarch64).
//!
//! Tree: `isolinux/` (isolinux.bin, ldlinux.c32, the menu modules,
//! isolinux.cfg, boot.cat), `phase/<variant>/{vmlinuz,initrd}` for the BIOS
//! menu, and `efi/efiboot.img`, the FAT image the UEFI El Torito entry and
//! MBR partition 2 point at, holding the same UEFI layout as an ESP.

use std::borrow::Cow;

use thiserror::Error;

use crate::arch::Arch;
use crate::esp::{BootSet, EspError};
use crate::fat::{self, FatError, FatOptions, Files};
use crate::gpt::Guid;
use crate::iso9660::{self, Alias, BootEntry, IsoError, IsoImage, IsoOptions, Platform};

#[derive(Debug, Error)]
pub enum CdromError {
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error("laying out the EFI boot image")]
    Fat(#[source] FatError),
    #[error("writing the ISO9660 image")]
    Iso(#[source] IsoError),
    #[error("the UKI of variant {variant:?} is not where the EFI image should hold it")]
    UkiMissing { variant: String },
    #[error("an x86_64 ISO needs isolinux for BIOS boot (pass --isolinux and --isohdpfx)")]
    NoIsolinux,
}

/// The BIOS pieces of a CD: isolinux and the modules beside it.
#[derive(Debug, Clone)]
pub struct IsoBios {
    pub isolinux: Vec<u8>,
    pub ldlinux_c32: Vec<u8>,
    /// menu.c32 and its libraries; empty for the built-in prompt.
    pub modules: Vec<(String, Vec<u8>)>,
    /// isohdpfx.bin.
    pub isohdpfx: Vec<u8>,
    /// The files these came from, as (what, path).
    pub inputs: Vec<(String, std::path::PathBuf)>,
}

#[derive(Debug, Clone, Default)]
pub struct CdromOptions {
    pub seed: Vec<u8>,
    pub time: u64,
    /// A root image for a live boot, stored as [`LIVE_IMAGE`].
    pub root_image: Option<Vec<u8>>,
}

/// The ISO's volume identifier, which `root=live:CDLABEL=` names.
pub const VOLUME_ID: &str = "PHASE_BOOT";

/// Where a live root image goes on the ISO: dracut's default
/// (`rd.live.dir=LiveOS`, `rd.live.squashimg=squashfs.img`), which the init
/// shares.
pub const LIVE_IMAGE: &str = "LiveOS/squashfs.img";

pub const EFI_IMAGE: &str = "efi/efiboot.img";

/// The EFI boot image: a FAT volume sized to the UEFI layout, built sparse
/// (file data left out of its bytes), with the files that belong in it.
pub fn efi_image(
    boot: &BootSet,
    opts: &CdromOptions,
) -> Result<(fat::FatImage, Files), CdromError> {
    let mut files = Files::new();
    boot.add_uefi_sparse(&mut files)?;
    let image = fat::build(
        &files,
        &FatOptions {
            label: Some("PHASE-EFI".into()),
            volume_id: {
                let g = Guid::derive(&[&opts.seed[..], b" efi"].concat()).0;
                u32::from_le_bytes([g[0], g[1], g[2], g[3]])
            },
            time: opts.time,
            sparse: true,
            ..FatOptions::default()
        },
    )
    .map_err(CdromError::Fat)?;
    Ok((image, files))
}

/// Lays out the ISO; kernels, initramfs and blobs are borrowed, not copied.
pub fn build<'a>(
    boot: &'a BootSet,
    bios: Option<&'a IsoBios>,
    opts: &'a CdromOptions,
) -> Result<IsoImage<'a>, CdromError> {
    let (efi, efi_files) = efi_image(boot, opts)?;
    let mut files: Vec<(String, Cow<'a, [u8]>)> = Vec::new();
    let mut aliases = Vec::new();
    let mut entries = Vec::new();
    let mut mbr_code = Vec::new();
    let catalog = match (boot.arch, bios) {
        (Arch::X86_64, None) => return Err(CdromError::NoIsolinux),
        (Arch::X86_64, Some(bios)) => {
            let menu = bios.modules.iter().any(|(n, _)| n == "menu.c32");
            let cfg = boot
                .menu
                .syslinux_cfg(menu)
                .map_err(|e| CdromError::Esp(EspError::Menu(e)))?
                .into_bytes();
            files.push((
                "isolinux/isolinux.bin".into(),
                Cow::Borrowed(&bios.isolinux),
            ));
            files.push((
                "isolinux/ldlinux.c32".into(),
                Cow::Borrowed(&bios.ldlinux_c32),
            ));
            files.push(("isolinux/isolinux.cfg".into(), Cow::Owned(cfg)));
            for (name, data) in &bios.modules {
                files.push((format!("isolinux/{name}"), Cow::Borrowed(data)));
            }
            // The BIOS menu's kernels and initramfs are the bytes of the
            // UKIs' .linux and .initrd sections inside the EFI image: listed
            // in the ISO tree, stored once.
            aliases = uki_aliases(boot, &efi, &efi_files)?;
            entries.push(BootEntry {
                platform: Platform::Bios,
                path: "isolinux/isolinux.bin".into(),
                boot_info_table: true,
            });
            mbr_code = bios.isohdpfx.clone();
            "isolinux/boot.cat"
        }
        (Arch::Aarch64, _) => "efi/boot.cat",
    };
    // The EFI image goes into the layout as its sparse bytes (for its size),
    // then its part is replaced by the pieces: metadata and each file's own
    // buffer, so the UKIs are never copied into one image.
    let efi_len = efi.bytes.len();
    files.push((EFI_IMAGE.into(), Cow::Owned(vec![0; efi_len])));
    if let Some(root) = &opts.root_image {
        files.push((LIVE_IMAGE.into(), Cow::Borrowed(&root[..])));
    }
    entries.push(BootEntry {
        platform: Platform::Efi,
        path: EFI_IMAGE.into(),
        boot_info_table: false,
    });
    let mut image = iso9660::build(
        files,
        &IsoOptions {
            volume_id: VOLUME_ID.into(),
            time: opts.time,
            boot: entries,
            catalog_path: catalog.into(),
            hybrid_mbr_code: Some(mbr_code),
            disk_signature: {
                let g = Guid::derive(&[&opts.seed[..], b" mbr"].concat()).0;
                u32::from_le_bytes([g[0], g[1], g[2], g[3]])
            },
            aliases,
        },
    )
    .map_err(CdromError::Iso)?;

    // Each UKI's kernel and initramfs: borrowed from the inputs, by the
    // UKI's offset in the EFI image.
    let mut payloads = std::collections::BTreeMap::new();
    for v in &boot.variants {
        let path = uki_path(boot, &v.name);
        let extent = efi.files.get(&path).ok_or_else(|| CdromError::UkiMissing {
            variant: v.name.clone(),
        })?;
        payloads.insert(extent.offset, (v, &boot.initrd[..]));
    }
    let Some(i) = image.parts.iter().position(|(o, _)| {
        image
            .files
            .get(EFI_IMAGE)
            .is_some_and(|e| u64::from(e.lba) * iso9660::BLOCK == *o)
    }) else {
        return Err(CdromError::UkiMissing {
            variant: EFI_IMAGE.into(),
        });
    };
    let at = image.parts[i].0;
    let mut pieces: Vec<(u64, Cow<'a, [u8]>)> = Vec::new();
    for (o, bytes) in efi.into_pieces(efi_files) {
        match payloads.get(&o) {
            Some(&(v, initrd)) => {
                let missing = || CdromError::UkiMissing {
                    variant: v.name.clone(),
                };
                for (rel, piece) in uki_pieces(bytes, &v.kernel, initrd).ok_or_else(missing)? {
                    pieces.push((at + o + rel, piece));
                }
            }
            None => pieces.push((at + o, Cow::Owned(bytes))),
        }
    }
    image.parts.splice(i..=i, pieces);
    Ok(image)
}

/// Where a variant's UKI is in the EFI image.
fn uki_path(boot: &BootSet, variant: &str) -> String {
    if boot.direct {
        boot.arch.efi_boot_file().to_owned()
    } else {
        crate::menu::uki_path(variant)
    }
}

/// A sparse UKI ([`crate::uki::build_sparse`]) as pieces relative to its
/// start: its own bytes around the left-out sections, and the kernel and
/// initramfs borrowed where those go. `None` if it does not parse as one.
fn uki_pieces<'a>(
    uki: Vec<u8>,
    kernel: &'a [u8],
    initrd: &'a [u8],
) -> Option<Vec<(u64, Cow<'a, [u8]>)>> {
    let pe = crate::uki::Pe::parse(&uki, "the UKI").ok()?;
    let mut holes = Vec::new();
    for (name, data) in crate::uki::SPARSE_SECTIONS.iter().zip([kernel, initrd]) {
        let s = pe.section(name)?;
        if s.virtual_size as usize != data.len() {
            return None;
        }
        holes.push((u64::from(s.raw_offset), data));
    }
    holes.sort_by_key(|h| h.0);
    let mut out = Vec::new();
    let mut at = 0u64;
    for (offset, data) in holes {
        if offset < at || offset + data.len() as u64 > uki.len() as u64 {
            return None;
        }
        if offset > at {
            out.push((at, Cow::Owned(uki[at as usize..offset as usize].to_vec())));
        }
        out.push((offset, Cow::Borrowed(data)));
        at = offset + data.len() as u64;
    }
    if (at as usize) < uki.len() {
        out.push((at, Cow::Owned(uki[at as usize..].to_vec())));
    }
    Some(out)
}

/// `phase/<variant>/{vmlinuz,initrd}` as aliases of the sections of each
/// variant's UKI in the EFI image: FAT data is 2048-aligned and the UKI's
/// sections start on 4096-byte file offsets, so they start on ISO blocks.
fn uki_aliases(
    boot: &BootSet,
    efi: &fat::FatImage,
    efi_files: &Files,
) -> Result<Vec<Alias>, CdromError> {
    let mut out = Vec::new();
    for v in &boot.variants {
        let path = uki_path(boot, &v.name);
        let missing = || CdromError::UkiMissing {
            variant: v.name.clone(),
        };
        let extent = efi.files.get(&path).ok_or_else(missing)?;
        let bytes = efi_files.get(&path).ok_or_else(missing)?;
        let pe = crate::uki::Pe::parse(bytes, "the UKI").map_err(|_| missing())?;
        let dir = format!("phase/{}", crate::menu::dir_name(&v.name));
        for (section, name) in [(".linux", "vmlinuz"), (".initrd", "initrd")] {
            let s = pe.section(section).ok_or_else(missing)?;
            out.push(Alias {
                path: format!("{dir}/{name}"),
                of: EFI_IMAGE.into(),
                offset: extent.offset + u64::from(s.raw_offset),
                len: u64::from(s.virtual_size),
            });
        }
    }
    Ok(out)
}
