//! The contract of a Phase Boot image.
//!
//! mkimage writes an initramfs and the init reads it; everything both sides
//! must agree on lives here, with no I/O: where files go ([`layout`]), the
//! image description ([`image::ImageInfo`]), the kernel-module index
//! ([`modindex`]), the reading of a module's own `.modinfo` ([`modinfo`]) and
//! the floor record a machine keeps between boots ([`state`]).
#![forbid(unsafe_code)]

pub mod image;
pub mod layout;
pub mod modindex;
pub mod modinfo;
pub mod state;
