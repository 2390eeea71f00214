//! Finding the root device: every block device the kernel has, probed as
//! blkid would, matched against `root=`, and — until it appears — the
//! kernel's uevents, so a disk that is still being probed is seen the moment
//! its driver registers it (no sysfs polling in a sleep loop).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::probe::{self, Device, Filesystem, Partition, Probe};
use super::uevent;
use crate::plan::RootSpec;
use crate::sys;

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/class/block";

/// One block device as seen, with what the probes found.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The kernel's name (`vda1`); the node is `/dev/<name>`.
    pub name: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<Filesystem>,
    /// The device's entry in its disk's partition table, for a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// What went wrong reading or probing it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The line `blkid` would print for it.
    pub blkid: String,
    #[serde(skip)]
    pub probe: Probe,
}

impl Seen {
    pub fn path(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// Whether `spec` names this device.
    pub fn answers(&self, spec: &RootSpec) -> bool {
        probe::matches(
            spec,
            &self.path(),
            self.fs.as_ref(),
            self.partition.as_ref(),
        )
    }
}

fn read_sys(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Probes the device at `node` of `size` bytes.
fn probe_node(node: &str, size: u64, sector: u32) -> Result<Probe, String> {
    let file = std::fs::File::open(node).map_err(|e| format!("open({node}): {e}"))?;
    let mut read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    };
    Ok(probe::probe(&mut Device::new(size, sector, &mut read)))
}

/// The devices seen so far, and their disks' tables, probed once each
/// (again when the kernel says a device changed).
#[derive(Default)]
pub struct Scan {
    seen: BTreeMap<String, Seen>,
}

impl Scan {
    /// Every device seen, in name order.
    pub fn seen(&self) -> impl Iterator<Item = &Seen> {
        self.seen.values()
    }

    /// Probes `name` (again), with its partition entry from its disk.
    pub fn look(&mut self, name: &str) {
        let dir = Path::new(SYS_BLOCK).join(name);
        // Sizes are in 512-byte units whatever the device's sector size.
        let Some(sectors) = read_sys(&dir.join("size")).and_then(|s| s.parse::<u64>().ok()) else {
            return;
        };
        let size = sectors.saturating_mul(512);
        // Empty loop and RAM devices, a CD drive without a disc.
        if size == 0 {
            self.seen.remove(name);
            return;
        }
        let number = read_sys(&dir.join("partition")).and_then(|s| s.parse::<u32>().ok());
        // A partition's disk is its parent directory in sysfs.
        let disk = match number {
            Some(_) => std::fs::canonicalize(&dir).ok().and_then(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            }),
            None => None,
        };
        let sector = read_sys(
            &Path::new(SYS_BLOCK)
                .join(disk.as_deref().unwrap_or(name))
                .join("queue/logical_block_size"),
        )
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(512);
        let mut errors = Vec::new();
        let probe = match probe_node(&format!("/dev/{name}"), size, sector) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                Probe::default()
            }
        };
        errors.extend(probe.errors.iter().map(ToString::to_string));
        let partition = match (number, &disk) {
            (Some(n), Some(disk)) => {
                if !self.seen.contains_key(disk) {
                    self.look(disk);
                }
                self.seen
                    .get(disk)
                    .and_then(|d| d.probe.table.as_ref())
                    .and_then(|t| t.partitions.iter().find(|p| p.number == n))
                    .cloned()
            }
            _ => None,
        };
        let blkid = probe::render(&format!("/dev/{name}"), &probe, partition.as_ref());
        self.seen.insert(
            name.to_owned(),
            Seen {
                name: name.to_owned(),
                size,
                fs: probe.fs.clone(),
                partition,
                errors,
                blkid,
                probe,
            },
        );
    }

    /// Probes every block device the kernel lists now.
    pub fn look_all(&mut self) {
        let Ok(entries) = std::fs::read_dir(SYS_BLOCK) else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // Disks before their partitions.
        names.sort_by_key(|n| (n.len(), n.clone()));
        for name in names {
            self.look(&name);
        }
    }

    /// The first device (in name order) that answers to `spec`.
    pub fn find(&self, spec: &RootSpec) -> Option<&Seen> {
        self.seen.values().find(|s| s.answers(spec))
    }
}

/// Why no device answered.
#[derive(Debug)]
pub struct NotFound {
    pub waited: Duration,
    /// Set when the uevent socket could not be used and only the devices
    /// present at the start (and at the deadline) were looked at.
    pub uevents: Option<String>,
}

/// Waits up to `timeout` for a device that answers to `spec`: looks at
/// every device now, then at each block device the kernel announces.
/// The uevent socket is opened before the first look, so a device that
/// appears in between is not missed.
pub fn wait_for(scan: &mut Scan, spec: &RootSpec, timeout: Duration) -> Result<Seen, NotFound> {
    let start = Instant::now();
    let socket = sys::socket_netlink_uevent();
    scan.look_all();
    if let Some(found) = scan.find(spec) {
        return Ok(found.clone());
    }
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            return Err(NotFound {
                waited: start.elapsed(),
                uevents: Some(format!("socket(NETLINK_KOBJECT_UEVENT): {e}")),
            });
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            // A last look, in case an event was lost to a full socket buffer.
            scan.look_all();
            return match scan.find(spec) {
                Some(found) => Ok(found.clone()),
                None => Err(NotFound {
                    waited: start.elapsed(),
                    uevents: None,
                }),
            };
        }
        match sys::poll_readable(&socket, left) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                return Err(NotFound {
                    waited: start.elapsed(),
                    uevents: Some(format!("poll on the uevent socket: {e}")),
                });
            }
        }
        // Every queued event, then one look at the devices they named.
        let mut named = Vec::new();
        while let Ok(n) = sys::recv(&socket, &mut buf, true) {
            if let Some(name) = uevent::parse(&buf[..n])
                .as_ref()
                .and_then(uevent::Uevent::block_device_ready)
            {
                named.push(name.to_owned());
            }
        }
        for name in named {
            scan.look(&name);
        }
        if let Some(found) = scan.find(spec) {
            return Ok(found.clone());
        }
    }
}
