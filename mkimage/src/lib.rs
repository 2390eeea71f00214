//! mkimage: every byte of every image Phase Boot ships, written here.
//!
//! One module per format. Output depends only on the inputs and the build
//! time (`SOURCE_DATE_EPOCH`), so the same inputs give bit-identical images.
#![forbid(unsafe_code)]

pub mod arch;
pub mod authenticode;
pub mod cdrom;
pub mod compress;
pub mod cpio;
pub mod distro_menu;
pub mod esp;
pub mod fat;
pub mod gpt;
pub mod initramfs;
pub mod inspect;
pub mod iso9660;
pub mod isoread;
pub mod kconfig;
pub mod kmod;
pub mod menu;
pub mod output;
pub mod pieces;
pub mod profile;
pub mod qcow2;
pub mod remaster;
pub mod secureboot;
pub mod sources;
pub mod spec;
pub mod syslinux;
pub mod uki;
pub mod usb;

/// The build time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn build_time() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}
