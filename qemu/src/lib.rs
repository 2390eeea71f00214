//! The harness behind `cargo xtask`: installs what is missing, cross-builds
//! the init, fetches Debian test kernels, packs images with mkimage's
//! library, and boots them under QEMU (TCG), waiting on the init's JSON
//! events rather than on time. The end-to-end scenarios in `tests/` drive
//! the same library.
#![forbid(unsafe_code)]

pub mod arch;
pub mod artifacts;
pub mod bench;
pub mod cmd;
pub mod debian;
pub mod distro;
pub mod faults;
pub mod images;
pub mod kbuild;
pub mod lan;
pub mod paths;
pub mod provider;
pub mod qmp;
pub mod roots;
pub mod setup;
pub mod vm;

pub use arch::Arch;
