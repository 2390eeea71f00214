//! Stage 3: loading kernel modules in dependency order, from the index
//! mkimage wrote into the image, in two ways:
//!
//! - the modules the image and the plan name (`boot` list, `rd.driver.pre=`);
//! - the modules whose aliases match a device's `modalias` in
//!   `/sys/bus/*/devices/*/`, as udev does, repeated until a pass finds
//!   nothing new, because a bus driver that loads exposes new devices (the
//!   virtio PCI driver reveals the virtio NIC behind it).
//!
//! Built-in and already-loaded modules are no-ops. Every module in an
//! image is an uncompressed `.ko`: mkimage decompresses a tree's `.ko.xz`,
//! `.ko.zst` and `.ko.gz` files (the archive is compressed as a whole), so
//! the init carries no decoders and the kernel needs no
//! `CONFIG_MODULE_DECOMPRESS`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use phase_initramfs::layout;
use phase_initramfs::modindex::{IndexError, ModuleIndex};
use serde::Serialize;
use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum ModulesError {
    #[error("reading the module index {path}")]
    ReadIndex {
        path: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("parsing the module index {path}")]
    ParseIndex {
        path: &'static str,
        #[source]
        error: serde_json::Error,
    },
    #[error("resolving modules")]
    Resolve(#[from] IndexError),
    #[error("opening module {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("finit_module({}, \"\", 0)", path.display())]
    FinitModule {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
}

/// How one module load went.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub name: String,
    /// `loaded`, or `present` when the kernel already had it.
    pub outcome: &'static str,
    pub ms: u64,
    /// Why it was loaded: `boot`, `plan`, `modalias <alias>`, or
    /// `dependency of <module>`.
    pub reason: String,
}

/// How many of `loaded` the kernel did not have already, and their names
/// as a log line's tail (`": loop squashfs"`, or empty). Modules already
/// present (shared dependencies) are in the event, not in the count.
pub fn newly_loaded(loaded: &[Loaded]) -> (usize, String) {
    let names: Vec<&str> = loaded
        .iter()
        .filter(|m| m.outcome != "present")
        .map(|m| m.name.as_str())
        .collect();
    let tail = if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(" "))
    };
    (names.len(), tail)
}

/// The image's module index, read and parsed once: the modules stage, the
/// storage-driver thread, the root hand-off and the floor's efivarfs all
/// ask for it, and parsing it is most of the modules stage's own time.
pub fn index() -> Result<&'static ModuleIndex, ModulesError> {
    static INDEX: OnceLock<ModuleIndex> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(index);
    }
    let index = read_index()?;
    Ok(INDEX.get_or_init(|| index))
}

/// Reads the image's module index; an image without modules has an empty one.
fn read_index() -> Result<ModuleIndex, ModulesError> {
    let path = layout::MODULE_INDEX;
    match std::fs::read(path) {
        Ok(bytes) => {
            ModuleIndex::from_json(&bytes).map_err(|error| ModulesError::ParseIndex { path, error })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ModuleIndex::default()),
        Err(error) => Err(ModulesError::ReadIndex { path, error }),
    }
}

/// Loads `wanted` (with the reason for each) and their dependencies,
/// skipping blacklisted names and modules already loaded. `on_load` is told
/// about each module as it finishes.
pub fn load(
    index: &ModuleIndex,
    wanted: &[(String, String)],
    blacklist: &[String],
    on_load: &mut dyn FnMut(&Loaded),
) -> Result<Vec<Loaded>, ModulesError> {
    let names: Vec<&String> = wanted
        .iter()
        .map(|(n, _)| n)
        .filter(|w| !blacklist.contains(w))
        .collect();
    let mut loaded = Vec::new();
    let order = index.load_order(&names)?;
    for (i, entry) in order.iter().enumerate() {
        if blacklist.contains(&entry.name) {
            continue;
        }
        // Named, or needed by a module later in this same order.
        let reason = wanted
            .iter()
            .find(|(n, _)| *n == entry.name)
            .map(|(_, r)| r.clone())
            .or_else(|| {
                order[i + 1..]
                    .iter()
                    .find(|m| {
                        m.depends.contains(&entry.name) || m.softdep_pre.contains(&entry.name)
                    })
                    .map(|m| format!("dependency of {}", m.name))
            })
            .unwrap_or_else(|| "dependency".into());
        let start = Instant::now();
        let outcome = if is_loaded(&entry.name) {
            "present"
        } else {
            load_file(&Path::new(layout::MODULE_DIR).join(&entry.path))?
        };
        let done = Loaded {
            name: entry.name.clone(),
            outcome,
            ms: start.elapsed().as_millis() as u64,
            reason,
        };
        on_load(&done);
        loaded.push(done);
    }
    Ok(loaded)
}

/// Whether the kernel already has the module loaded. `initstate` exists
/// only for loadable modules (a built-in one with parameters also has a
/// /sys/module directory, and the index knows those anyway).
fn is_loaded(name: &str) -> bool {
    Path::new("/sys/module")
        .join(name)
        .join("initstate")
        .exists()
}

fn load_file(path: &Path) -> Result<&'static str, ModulesError> {
    let file = File::open(path).map_err(|error| ModulesError::Open {
        path: path.to_owned(),
        error,
    })?;
    let no_params = CString::default();
    match sys::finit_module(&file, &no_params) {
        Ok(()) => Ok("loaded"),
        // Loaded meanwhile (a module's own request_module, say).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok("present"),
        Err(error) => Err(ModulesError::FinitModule {
            path: path.to_owned(),
            error,
        }),
    }
}

/// The device modaliases under `sysfs/bus/*/devices/*/modalias`, read once
/// per device: a device's modalias is fixed when it appears, so the passes of
/// the modalias fixpoint after the first list the bus directories and read
/// only the devices that are new. Under TCG each sysfs file read costs
/// several syscalls' worth of emulation, and reading every device on every
/// pass was most of the modules stage.
pub struct Devices {
    sysfs: PathBuf,
    /// Each device seen, with its modalias (`None`: it has none).
    known: BTreeMap<PathBuf, Option<String>>,
}

impl Devices {
    pub fn new(sysfs: &Path) -> Self {
        Devices {
            sysfs: sysfs.to_owned(),
            known: BTreeMap::new(),
        }
    }

    /// The modaliases of the devices present now, sorted and without
    /// repeats. Unreadable entries are skipped: a device that vanishes
    /// mid-scan has nothing to load.
    pub fn modaliases(&mut self) -> Vec<String> {
        let mut out = BTreeSet::new();
        let Ok(buses) = std::fs::read_dir(self.sysfs.join("bus")) else {
            return Vec::new();
        };
        for bus in buses.flatten() {
            let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
                continue;
            };
            for device in devices.flatten() {
                let path = device.path();
                let alias = self
                    .known
                    .entry(path)
                    .or_insert_with_key(|path| read_attribute(&path.join("modalias")));
                if let Some(alias) = alias {
                    out.insert(alias.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// A sysfs attribute's text, trimmed; `None` if it is missing, unreadable or
/// empty. One `read`: sysfs hands over an attribute (at most a page, which
/// is 16K on an M-series kernel) whole.
fn read_attribute(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let mut buf = vec![0u8; crate::sys::page_size()];
    let n = loop {
        match file.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => break result.ok()?,
        }
    };
    let text = std::str::from_utf8(&buf[..n]).ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Whether a device's modalias names mass storage: a PCI mass-storage
/// function (class 01: AHCI, NVMe, virtio-blk, SCSI HBAs), a virtio block or
/// SCSI device, a SCSI device, or a USB mass-storage interface. Their
/// drivers are not on the way to the network, and probing disks can take
/// long (AHCI ports, NVMe resets), so the init leaves them out of a netboot
/// and otherwise loads them in the background while the network comes up.
pub fn is_storage(alias: &str) -> bool {
    // Field names in modaliases are lower case and values upper-case hex,
    // so a field like "bc01" cannot be matched by a value by accident.
    if let Some(rest) = alias.strip_prefix("pci:") {
        return rest.contains("bc01");
    }
    if let Some(rest) = alias.strip_prefix("virtio:d") {
        return rest.starts_with("00000002") || rest.starts_with("00000008");
    }
    alias.starts_with("scsi:") || (alias.starts_with("usb:") && alias.contains("ic08"))
}

/// What [`load_for_devices`] did: the modules it loaded, and those that only
/// passed-over devices ask for.
pub struct DeviceScan {
    pub loaded: Vec<Loaded>,
    pub deferred: Vec<String>,
}

/// Loads one batch of (module, reason) and returns what it loaded.
pub type Loader<'a> = dyn FnMut(&[(String, String)]) -> Result<Vec<Loaded>, ModulesError> + 'a;

/// The modalias fixpoint: scan the devices, load the modules that match and
/// were not tried before, and scan again, until a pass adds nothing. `load`
/// loads one batch (name, reason) and returns what it loaded; a batch that
/// fails is reported through `on_error` and the scan goes on, as udev does:
/// one driver that refuses its device must not keep the NIC's from loading.
/// Devices whose modalias `defer` picks are passed over, and a module only
/// they ask for is left out of `tried` and named in [`DeviceScan::deferred`],
/// so a later call with the same `tried` (and a `defer` that picks nothing)
/// loads exactly what was left.
pub fn load_for_devices(
    index: &ModuleIndex,
    sysfs: &Path,
    blacklist: &[String],
    defer: &dyn Fn(&str) -> bool,
    tried: &mut BTreeSet<String>,
    load: &mut Loader<'_>,
    on_error: &mut dyn FnMut(&str, &ModulesError),
) -> DeviceScan {
    let mut loaded = Vec::new();
    let mut devices = Devices::new(sysfs);
    // A modalias matches the same modules on every pass: each is matched
    // against the index's globs (a thousand in a netboot image) once.
    let mut matched: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    loop {
        let mut batch: Vec<(String, String)> = Vec::new();
        let mut deferred = BTreeSet::new();
        for alias in devices.modaliases() {
            let modules = matched
                .entry(alias.clone())
                .or_insert_with(|| index.modules_for_alias(&alias));
            for &module in modules.iter() {
                if blacklist.iter().any(|b| b == module) || index.is_builtin(module) {
                    continue;
                }
                if defer(&alias) {
                    deferred.insert(module.to_owned());
                } else if tried.insert(module.to_owned()) {
                    batch.push((module.to_owned(), format!("modalias {alias}")));
                }
            }
        }
        if batch.is_empty() {
            let deferred = deferred
                .into_iter()
                .filter(|m| !tried.contains(m))
                .collect();
            return DeviceScan { loaded, deferred };
        }
        for one in &batch {
            // One module at a time, so a failure names its module and does
            // not stop the others.
            match load(std::slice::from_ref(one)) {
                Ok(l) => loaded.extend(l),
                Err(e) => on_error(&one.0, &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_initramfs::modindex::ModuleEntry;

    fn entry(name: &str, depends: &[&str], aliases: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            depends: depends.iter().map(|d| d.to_string()).collect(),
            softdep_pre: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The amd64 virtio stack as Debian 6.1's modinfo describes it, with
    /// only the aliases that matter here.
    fn virtio_index() -> ModuleIndex {
        let mut modules = vec![
            entry(
                "virtio_pci",
                &["virtio", "virtio_ring"],
                &["pci:v00001AF4d*sv*sd*bc*sc*i*"],
            ),
            entry("virtio", &[], &[]),
            entry("virtio_ring", &[], &[]),
            entry("virtio_net", &["net_failover"], &["virtio:d00000001v*"]),
            entry("net_failover", &["failover"], &[]),
            entry("failover", &[], &[]),
            entry("virtio_console", &[], &["virtio:d00000003v*"]),
            entry("virtio_blk", &[], &["virtio:d00000002v*"]),
            entry("e1000e", &[], &["pci:v00008086d000010D3sv*sd*bc*sc*i*"]),
        ];
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        ModuleIndex {
            kernel_release: "6.1.0-test".into(),
            modules,
            builtin: BTreeSet::new(),
            boot: vec![],
        }
    }

    fn device(sysfs: &Path, bus: &str, name: &str, alias: &str) {
        let dir = sysfs.join("bus").join(bus).join("devices").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
    }

    #[test]
    fn modalias_fixpoint_follows_new_devices() {
        // A directory laid out like sysfs. The loader stands in for the
        // kernel's side: loading virtio_pci makes the devices behind the PCI
        // functions appear, as it does on a q35 machine.
        let dir = std::env::temp_dir().join(format!("phase-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        device(
            &dir,
            "pci",
            "0000:00:02.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        );
        device(
            &dir,
            "pci",
            "0000:00:03.0",
            "pci:v00001AF4d00001003sv00001AF4sd00000003bc07sc80i00",
        );
        device(
            &dir,
            "pci",
            "0000:00:1f.2",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
        );
        std::fs::create_dir_all(dir.join("bus/platform/devices/serial8250")).unwrap();
        let index = virtio_index();
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut load = |batch: &[(String, String)]| -> Result<Vec<Loaded>, ModulesError> {
            let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
            if names == ["virtio_pci"] {
                device(&dir, "virtio", "virtio0", "virtio:d00000001v00001AF4");
                device(&dir, "virtio", "virtio1", "virtio:d00000003v00001AF4");
            }
            let order = index.load_order(&names)?;
            batches.push(names);
            Ok(order
                .iter()
                .map(|e| Loaded {
                    name: e.name.clone(),
                    outcome: "loaded",
                    ms: 0,
                    reason: batch[0].1.clone(),
                })
                .collect())
        };
        let mut errors = Vec::new();
        let loaded = load_for_devices(
            &index,
            &dir,
            &[],
            &|_| false,
            &mut BTreeSet::new(),
            &mut load,
            &mut |m, e| errors.push(format!("{m}: {e}")),
        )
        .loaded;
        assert_eq!(
            batches,
            [
                vec!["virtio_pci"],
                vec!["virtio_net"],
                vec!["virtio_console"]
            ]
        );
        let names: Vec<&str> = loaded.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console"
            ]
        );
        let net = loaded.iter().find(|l| l.name == "virtio_net").unwrap();
        assert_eq!(net.reason, "modalias virtio:d00000001v00001AF4");
        assert!(errors.is_empty());

        // Blacklisted modules are never tried; a failing one does not stop
        // the rest.
        let mut tried = Vec::new();
        let mut failing = |batch: &[(String, String)]| -> Result<Vec<Loaded>, ModulesError> {
            tried.push(batch[0].0.clone());
            Err(ModulesError::Resolve(IndexError::Missing {
                module: batch[0].0.clone(),
                needed_by: None,
            }))
        };
        let mut errors = Vec::new();
        let loaded = load_for_devices(
            &index,
            &dir,
            &["virtio_console".to_owned()],
            &|_| false,
            &mut BTreeSet::new(),
            &mut failing,
            &mut |m, e| errors.push(format!("{m}: {e}")),
        )
        .loaded;
        assert!(loaded.is_empty());
        assert_eq!(tried, ["virtio_pci", "virtio_net"]);
        assert_eq!(
            errors,
            [
                "virtio_pci: resolving modules",
                "virtio_net: resolving modules"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn storage_drivers_are_left_for_a_second_pass() {
        for (alias, storage) in [
            (
                "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
                true,
            ),
            (
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                false,
            ),
            (
                "pci:v0000BC01d00001000sv00001AF4sd00000001bc02sc00i00",
                false,
            ),
            ("virtio:d00000002v00001AF4", true),
            ("virtio:d00000001v00001AF4", false),
            ("scsi:t-0x00", true),
            ("usb:v0781p5581d0100dc00dsc00dp00ic08isc06ip50in00", true),
            ("usb:v0BDAp8153d3100dc00dsc00dp00icFFiscFFip00in00", false),
            ("of:Nvirtio_mmioT(null)Cvirtio,mmio", false),
        ] {
            assert_eq!(is_storage(alias), storage, "{alias}");
        }

        let dir = std::env::temp_dir().join(format!("phase-sysfs-defer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        device(&dir, "virtio", "virtio0", "virtio:d00000001v00001AF4");
        device(&dir, "virtio", "virtio1", "virtio:d00000002v00001AF4");
        let index = virtio_index();
        let mut names = Vec::new();
        let mut load = |batch: &[(String, String)]| -> Result<Vec<Loaded>, ModulesError> {
            names.push(batch[0].0.clone());
            Ok(vec![])
        };
        let mut tried = BTreeSet::new();
        let mut errors = |_: &str, _: &ModulesError| {};
        load_for_devices(
            &index,
            &dir,
            &[],
            &is_storage,
            &mut tried,
            &mut load,
            &mut errors,
        );
        load_for_devices(
            &index,
            &dir,
            &[],
            &|_| false,
            &mut tried,
            &mut load,
            &mut errors,
        );
        // The NIC's driver first; the disk's on the second pass, once.
        assert_eq!(names, ["virtio_net", "virtio_blk"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modaliases_are_read_sorted_and_once() {
        let dir = std::env::temp_dir().join(format!("phase-sysfs-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        device(&dir, "virtio", "virtio1", "virtio:d00000003v00001AF4");
        device(&dir, "virtio", "virtio0", "virtio:d00000001v00001AF4");
        device(&dir, "virtio", "virtio2", "virtio:d00000001v00001AF4");
        device(&dir, "platform", "empty", "");
        let mut devices = Devices::new(&dir);
        assert_eq!(
            devices.modaliases(),
            ["virtio:d00000001v00001AF4", "virtio:d00000003v00001AF4"]
        );
        // A device that appears later is read; the others are not read again.
        device(&dir, "pci", "0000:00:03.0", "pci:v00001AF4d00001001sv*");
        std::fs::write(dir.join("bus/virtio/devices/virtio1/modalias"), "changed\n").unwrap();
        assert_eq!(
            devices.modaliases(),
            [
                "pci:v00001AF4d00001001sv*",
                "virtio:d00000001v00001AF4",
                "virtio:d00000003v00001AF4"
            ]
        );
        // A device that is gone is no longer listed.
        std::fs::remove_dir_all(dir.join("bus/virtio/devices/virtio1")).unwrap();
        assert_eq!(
            devices.modaliases(),
            ["pci:v00001AF4d00001001sv*", "virtio:d00000001v00001AF4"]
        );
        assert!(Devices::new(&dir.join("absent")).modaliases().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
