//! Where things live inside an image. Paths are absolute as the init sees them;
//! mkimage strips the leading `/` when it writes cpio entries.

/// The init binary the kernel executes.
pub const INIT: &str = "/init";
/// Image description written by mkimage ([`crate::image::ImageInfo`], JSON).
pub const IMAGE_INFO: &str = "/etc/phase/image.json";
/// Default kernel parameters baked into the image, in kernel command-line
/// syntax. The real command line overrides them key by key.
pub const CONFIG: &str = "/etc/phase/config";
/// Kernel-module index ([`crate::modindex::ModuleIndex`], JSON).
pub const MODULE_INDEX: &str = "/lib/modules/phase-index.json";
/// Directory that holds the `.ko` files named by the index.
pub const MODULE_DIR: &str = "/lib/modules";
/// The resolver configuration the network stage writes for musl.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// A shell, present only in images built with one.
pub const SHELL: &str = "/bin/sh";
/// Name of the virtio-serial port that carries test events to the host.
pub const EVENT_PORT_NAME: &str = "phase.events";
/// Trust material for the signed manifest (`phase_manifest::TrustStore`,
/// JSON): trusted keys, threshold, version floor, maximum forward jump and
/// time floor. Only the image sets it; nothing on the cmdline or from DHCP can.
pub const TRUST_STORE: &str = "/etc/phase/trust.json";
/// PEM certificates HTTPS trusts: a CA bundle, or one pinned CA.
pub const CA_BUNDLE: &str = "/etc/phase/ca.pem";
