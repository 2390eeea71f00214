//! The version floor this machine keeps between boots (SECURITY.md row 5).
//!
//! Where it lives, decided once per boot ([`locate`]):
//!
//! - booted by UEFI (`/sys/firmware/efi` exists): the non-volatile EFI
//!   variable `PhaseBootFloor-f7f9e1c8-b161-470b-bc2e-a0edcb48c906` (our own
//!   vendor GUID, attributes `NV|BS|RT`), through efivarfs, mounted here if
//!   nothing has mounted it (and its module loaded if it is one);
//! - else, if the image names a state partition (`[state] partlabel`): two
//!   raw copies of the record on that GPT partition, found by the init's own
//!   probes (`root::devices`);
//! - else nowhere: the floor is the image's alone, and the boot says so once.
//!
//! The stored floor only rises, and only to the `floor` a verified manifest
//! carries, written just before the hand-off under that manifest
//! ([`Stored::raise`]). Someone with the machine in hand can still clear the
//! NVRAM or rewrite the partition; a TPM NV counter would be the next step.
//! The record's format is `phase_initramfs::state`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use phase_initramfs::image::ImageInfo;
use phase_initramfs::state::{self, Copy, Record};
use phase_manifest::FloorSource;
use serde_json::{Value, json};
use thiserror::Error;

use crate::plan::{BootPlan, RootSpec};
use crate::root::devices;
use crate::{error_chain, modules, sys};

/// Where efivarfs shows the variables.
const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// How long to wait for the state partition once the storage drivers are
/// loaded: the disk is there from the start, only its probe takes time.
const PARTITION_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum FloorError {
    #[error("mounting efivarfs on {EFIVARS}")]
    MountEfivarfs(#[source] io::Error),
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("clearing the immutable attribute of {path} (FS_IOC_SETFLAGS)")]
    Unlock {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("syncing {path}")]
    Sync {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no partition labelled {label} appeared within {} s", waited.as_secs())]
    NoPartition { label: String, waited: Duration },
}

/// Where this machine keeps its floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The EFI variable, as the efivarfs file at this path.
    EfiVariable { path: String },
    /// The state partition, as this block device.
    StatePartition { device: String, label: String },
    /// Nowhere; the reason.
    Nowhere { why: String },
}

/// The floor read from the store, and the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub floor: u64,
    pub store: Store,
    /// What was odd about the store (a damaged copy, an unreadable variable)
    /// though the boot goes on.
    pub notes: Vec<String>,
}

/// The efivarfs file of our variable.
pub fn efi_path() -> String {
    format!(
        "{EFIVARS}/{}-{}",
        state::EFI_VARIABLE,
        state::EFI_VENDOR_GUID
    )
}

/// Whether the machine booted by UEFI, so its floor goes to an EFI variable
/// and a state partition is not looked for.
pub fn booted_by_uefi() -> bool {
    Path::new("/sys/firmware/efi").is_dir()
}

/// Whether the boot will need the state partition, and so the storage
/// drivers: an image that names one, on a machine without EFI.
pub fn needs_partition(image: &ImageInfo) -> bool {
    image.state.is_some() && !booted_by_uefi()
}

impl Stored {
    pub fn source(&self) -> FloorSource {
        match self.store {
            Store::EfiVariable { .. } => FloorSource::EfiVariable,
            Store::StatePartition { .. } => FloorSource::StatePartition,
            Store::Nowhere { .. } => FloorSource::Image,
        }
    }

    /// The store as event data.
    pub fn fields(&self) -> Value {
        let (kind, at) = match &self.store {
            Store::EfiVariable { path } => ("efi_variable", json!(path)),
            Store::StatePartition { device, label } => (
                "state_partition",
                json!({ "device": device, "partlabel": label }),
            ),
            Store::Nowhere { why } => ("none", json!(why)),
        };
        json!({ "store": kind, "at": at, "stored": self.floor, "notes": self.notes })
    }

    /// Stores `floor` if it is above the stored one (never lower). Returns
    /// whether anything was written.
    pub fn raise(&mut self, floor: u64) -> Result<bool, FloorError> {
        if floor <= self.floor {
            return Ok(false);
        }
        let record = Record { floor };
        match &self.store {
            Store::EfiVariable { path } => write_efi(path, &record)?,
            Store::StatePartition { device, .. } => write_partition(device, &record)?,
            Store::Nowhere { .. } => return Ok(false),
        }
        self.floor = floor;
        Ok(true)
    }
}

/// Finds the store and reads the floor from it. A store that cannot be read
/// counts as holding no floor, with a note: the image's floor still applies.
pub fn locate(plan: &BootPlan, image: &ImageInfo) -> Stored {
    if booted_by_uefi() {
        return match read_efi(plan) {
            Ok((floor, notes)) => Stored {
                floor,
                store: Store::EfiVariable { path: efi_path() },
                notes,
            },
            Err(e) => nowhere(format!("EFI variables unavailable: {}", error_chain(&e))),
        };
    }
    let Some(location) = &image.state else {
        return nowhere(
            "no EFI variables (not booted by UEFI) and the image names no state partition".into(),
        );
    };
    let label = location.partlabel.clone();
    match read_partition(&label) {
        Ok((device, floor, notes)) => Stored {
            floor,
            store: Store::StatePartition { device, label },
            notes,
        },
        Err(e) => nowhere(error_chain(&e)),
    }
}

fn nowhere(why: String) -> Stored {
    Stored {
        floor: 0,
        store: Store::Nowhere { why },
        notes: Vec::new(),
    }
}

/// Mounts efivarfs if its directory is empty of variables (nothing mounted
/// it), loading the module first when the kernel lacks the file system.
fn mount_efivarfs(plan: &BootPlan) -> Result<(), FloorError> {
    let has_fs = || {
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("efivarfs"))
        })
    };
    if !has_fs()
        && let Ok(index) = modules::index()
        && index.get("efivarfs").is_some()
    {
        let wanted = [("efivarfs".to_owned(), "the version floor".to_owned())];
        if let Err(e) = modules::load(index, &wanted, &plan.blacklist, &mut |_| {}) {
            warn!("floor: module efivarfs: {}", error_chain(&e));
        }
    }
    match sys::mount(
        c"efivarfs",
        c"/sys/firmware/efi/efivars",
        c"efivarfs",
        sys::MountFlags::NOSUID | sys::MountFlags::NODEV | sys::MountFlags::NOEXEC,
        None,
    ) {
        Ok(()) => Ok(()),
        // Mounted already.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(FloorError::MountEfivarfs(e)),
    }
}

fn read_efi(plan: &BootPlan) -> Result<(u64, Vec<String>), FloorError> {
    mount_efivarfs(plan)?;
    let path = efi_path();
    match std::fs::read(&path) {
        Ok(bytes) => match state::from_efi_file(&bytes) {
            Ok(r) => Ok((r.floor, Vec::new())),
            // Someone else's bytes under our name, or a format from a later
            // init: not a floor this init can honour, and not fatal.
            Err(e) => Ok((0, vec![format!("{path}: {e}")])),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, Vec::new())),
        Err(source) => Err(FloorError::Read { path, source }),
    }
}

/// Writes the variable: efivarfs marks a variable of an unknown vendor
/// immutable, so an existing one is unlocked first and locked again after,
/// as efivar(1) does. The attributes and data go in one write, which
/// efivarfs turns into one SetVariable() call.
fn write_efi(path: &str, record: &Record) -> Result<(), FloorError> {
    let flags = |file: &std::fs::File, immutable: bool| {
        sys::ioctl_set_immutable(file, immutable).map_err(|source| FloorError::Unlock {
            path: path.to_owned(),
            source,
        })
    };
    if let Ok(existing) = std::fs::File::open(path) {
        flags(&existing, false)?;
    }
    let write_error = |source| FloorError::Write {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // A write to efivarfs replaces the whole variable (no
        // EFI_VARIABLE_APPEND_WRITE in the attributes); there is nothing to
        // truncate.
        .truncate(false)
        .open(path)
        .map_err(write_error)?;
    let bytes = state::efi_file(record);
    let n = std::io::Write::write(&mut &file, &bytes).map_err(write_error)?;
    if n != bytes.len() {
        return Err(write_error(io::Error::from(io::ErrorKind::WriteZero)));
    }
    // Locked again so a stray `rm` cannot delete it; the floor is stored
    // either way.
    if let Err(e) = flags(&file, true) {
        warn!("floor: {}", error_chain(&e));
    }
    Ok(())
}

fn read_partition(label: &str) -> Result<(String, u64, Vec<String>), FloorError> {
    let mut scan = devices::Scan::default();
    let spec = RootSpec::PartLabel(label.to_owned());
    let seen = devices::wait_for(&mut scan, &spec, PARTITION_WAIT).map_err(|e| {
        FloorError::NoPartition {
            label: label.to_owned(),
            waited: e.waited,
        }
    })?;
    let device = seen.path();
    let file = std::fs::File::open(&device).map_err(|source| FloorError::Read {
        path: device.clone(),
        source,
    })?;
    let mut notes = Vec::new();
    let mut copy = |offset: u64, name: &str| {
        let mut slot = vec![0u8; state::SLOT_LEN];
        match file.read_exact_at(&mut slot, offset) {
            Ok(()) => {
                let c = Copy::read(&slot);
                if let Copy::Bad(e) = &c {
                    notes.push(format!("{device}: copy {name}: {e}"));
                }
                c
            }
            Err(e) => {
                notes.push(format!("{device}: copy {name}: {e}"));
                Copy::Empty
            }
        }
    };
    let (a, b) = (copy(state::SLOT_A, "A"), copy(state::SLOT_B, "B"));
    Ok((device, state::partition_floor(&a, &b), notes))
}

/// Writes copy A, syncs, then copy B, and syncs: a write torn anywhere
/// leaves one copy valid (see `phase_initramfs::state`).
fn write_partition(device: &str, record: &Record) -> Result<(), FloorError> {
    let write_error = |source| FloorError::Write {
        path: device.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(write_error)?;
    let slot = record.slot();
    for offset in [state::SLOT_A, state::SLOT_B] {
        file.write_all_at(&slot, offset).map_err(write_error)?;
        file.sync_all().map_err(|source| FloorError::Sync {
            path: device.to_owned(),
            source,
        })?;
    }
    Ok(())
}
