//! The root hand-off: find the root, mount it — or an overlay over it — at
//! [`switch_root::NEW_ROOT`], check the init it will run, and switch.
//!
//! Three kinds of lower, in order of trust (SECURITY.md row 27):
//!
//! - a **root image named in the signed manifest** (`handoff: switch_root`),
//!   fetched and verified like a kernel into a sealed memfd and attached
//!   read-only through a loop device made from that very memfd, so the bytes
//!   mounted are the bytes hashed; always under an overlay;
//! - a **device named by `root=`** (`LABEL=`, `UUID=`, `PARTUUID=`,
//!   `PARTLABEL=`, `/dev/…`), found by the init's own probes; mounted
//!   itself (read-only unless `rw`), or read-only under an overlay with
//!   `rd.overlay`;
//! - a **live medium** (`root=live:CDLABEL=…`): the named device's file
//!   system holds a squashfs or erofs image (`rd.live.dir`,
//!   `rd.live.squashimg`), attached read-only and overlaid.
//!
//! Nothing is torn down until the new root is mounted and its init checked;
//! any failure before that leaves the initramfs as it was, for the policy.

pub mod ahead;
pub mod devices;
pub mod mounts;
pub mod probe;
pub mod switch_root;
pub mod uevent;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::modules;
use crate::plan::Stage;
use crate::plan::{BootPlan, RootSpec};
use crate::policy::Failure;
use mounts::Mounted;
use probe::Device;
use switch_root::NEW_ROOT;

/// Where the root comes from.
pub enum Source {
    /// A verified root image in a sealed memfd, from the manifest.
    Image { fd: OwnedFd, sha256: String },
    /// `root=` on the command line.
    Named(RootSpec),
}

/// The mounted new root, ready to be switched to.
#[derive(Debug, Serialize)]
pub struct Prepared {
    /// What the root is: the device, the loop device of the image, or the
    /// overlay.
    pub root: String,
    pub fstype: String,
    pub options: String,
    pub read_only: bool,
    /// For an overlay: the lower and the upper's tmpfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<Mounted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<Mounted>,
    /// Every mount made, in order.
    pub mounts: Vec<Mounted>,
    /// The device `root=` found, as blkid prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The verified image's digest, for a manifest root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// The init that will run, and its arguments.
    pub init: String,
    pub init_args: Vec<String>,
    pub ms: u64,
}

fn fail(kind: &str, error: String, detail: Value) -> Failure {
    Failure::new(Stage::Handoff, error).because(kind, detail)
}

/// Whether the kernel knows file system `fstype` now.
fn kernel_has_fs(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(fstype))
    })
}

/// Loads the modules a mount needs: `names` by name (`loop`, `overlay`),
/// each file system of `fstypes` by its `fs-<type>` alias, as the kernel's
/// own request_module would. Built-in ones are skipped.
fn load_modules(plan: &BootPlan, names: &[&str], fstypes: &[&str]) -> Result<(), Failure> {
    ahead::finish();
    let index =
        modules::index().map_err(|e| fail("modules", crate::error_chain(&e), Value::Null))?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for name in names {
        if index.get(name).is_some() {
            wanted.push(((*name).to_owned(), "root hand-off".to_owned()));
        }
    }
    for fstype in fstypes {
        if kernel_has_fs(fstype) {
            continue;
        }
        let alias = format!("fs-{fstype}");
        match index.modules_for_alias(&alias).first() {
            Some(m) => wanted.push(((*m).to_owned(), alias)),
            None => {
                return Err(fail(
                    "no_filesystem",
                    format!(
                        "file system {fstype} is neither built into the kernel nor a module in this image"
                    ),
                    json!({ "fstype": fstype }),
                ));
            }
        }
    }
    modules::load(index, &wanted, &plan.blacklist, &mut |m| {
        if !plan.quiet {
            info!(
                "module {} {} in {} ms ({})",
                m.name, m.outcome, m.ms, m.reason
            );
        }
    })
    .map(|_| ())
    .map_err(|e| fail("modules", crate::error_chain(&e), Value::Null))
}

/// The file system type of an image (a memfd or a file on a medium), by
/// its superblock.
fn image_fstype(file: &impl FileExt, size: u64, what: &str) -> Result<&'static str, Failure> {
    let mut read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    };
    let found = probe::probe(&mut Device::new(size, 512, &mut read));
    match found.fs.map(|f| f.fstype) {
        Some(t @ ("squashfs" | "erofs")) => Ok(t),
        other => Err(fail(
            "root_image_type",
            format!(
                "{what} is {}, not a squashfs or erofs image",
                other.unwrap_or("of no type the probes know")
            ),
            json!({ "found": other }),
        )),
    }
}

fn mount_error(e: mounts::MountsError) -> Failure {
    fail("mount", crate::error_chain(&e), Value::Null)
}

/// How long `root=` may take to appear: `rd.timeout`, or what is left of
/// `phase.timeout` when that is 0.
fn device_budget(plan: &BootPlan) -> Duration {
    let left = plan
        .timeout
        .saturating_sub(crate::sys::clock_gettime_boottime());
    if plan.device_timeout.is_zero() {
        left
    } else {
        plan.device_timeout.min(left)
    }
}

/// Waits for the device `spec` names, or fails listing every device seen.
fn find_device(plan: &BootPlan, spec: &RootSpec) -> Result<devices::Seen, Failure> {
    let mut scan = devices::Scan::default();
    let budget = device_budget(plan);
    info!(
        "handoff: waiting up to {} s for root={}",
        budget.as_secs(),
        describe(spec)
    );
    devices::wait_for(&mut scan, spec, budget).map_err(|nf| {
        let seen: Vec<&devices::Seen> = scan.seen().collect();
        let mut failure = fail(
            "root_not_found",
            format!(
                "no block device answered to root={} within {} s{}",
                describe(spec),
                nf.waited.as_secs(),
                nf.uevents
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            json!({
                "root": describe(spec),
                "waited_ms": nf.waited.as_millis() as u64,
                "seen": seen,
            }),
        );
        failure.tried = if seen.is_empty() {
            vec![crate::policy::Tried::text("no block devices at all")]
        } else {
            seen.iter()
                .map(|s| crate::policy::Tried::text(s.blkid.clone()))
                .collect()
        };
        failure
    })
}

/// `rel` under `base`, each component matched without regard to case when
/// no exact match exists: an ISO 9660 volume without Rock Ridge names (as
/// mkimage writes them) shows `LiveOS` as `liveos`.
fn find_on_medium(base: &str, rel: &str) -> Option<String> {
    let mut path = std::path::PathBuf::from(base);
    for component in rel.split('/').filter(|c| !c.is_empty()) {
        let exact = path.join(component);
        path = if exact.exists() {
            exact
        } else {
            std::fs::read_dir(&path)
                .ok()?
                .flatten()
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .eq_ignore_ascii_case(component)
                })?
                .path()
        };
    }
    Some(path.display().to_string())
}

/// `root=` as the user wrote it.
pub fn describe(spec: &RootSpec) -> String {
    match spec {
        RootSpec::Zfs(ds) => format!("zfs:{ds}"),
        RootSpec::ZfsAuto => "zfs:AUTO".into(),
        RootSpec::Label(l) => format!("LABEL={l}"),
        RootSpec::Uuid(u) => format!("UUID={u}"),
        RootSpec::PartUuid(u) => format!("PARTUUID={u}"),
        RootSpec::PartLabel(l) => format!("PARTLABEL={l}"),
        RootSpec::Device(d) => d.clone(),
        RootSpec::Live(m) => format!("live:{}", describe(m)),
    }
}

/// Mounts the root from `source` at [`NEW_ROOT`] and checks its init.
/// Nothing outside `/run/phase` and `/sysroot` changes; on failure the
/// caller's policy finds the initramfs intact.
pub fn prepare(plan: &BootPlan, source: Source) -> Result<Prepared, Failure> {
    let start = Instant::now();
    let mut made = Vec::new();
    let mut device = None;
    let mut image_sha256 = None;
    let overlay_size = plan.overlay.as_ref().and_then(|o| o.size.as_deref());
    // The loop devices stay open until their file systems are mounted.
    let mut _loops: Vec<OwnedFd> = Vec::new();
    let (lower, upper, root) = match source {
        Source::Image { fd, sha256 } => {
            let size = crate::sys::fstat_size(&fd).unwrap_or(0);
            let file = std::fs::File::from(fd.try_clone().map_err(|e| {
                fail(
                    "memfd",
                    format!("dup of the root image memfd: {e}"),
                    Value::Null,
                )
            })?);
            let fstype = image_fstype(&file, size, "the manifest's root image")?;
            load_modules(plan, &["loop", "overlay"], &[fstype])?;
            let (loop_dev, held) =
                mounts::attach_loop(fd.as_fd(), "phase-root-image").map_err(mount_error)?;
            _loops.push(held);
            image_sha256 = Some(sha256);
            let lower =
                mounts::mount(&loop_dev, mounts::LOWER, fstype, false, "").map_err(mount_error)?;
            made.push(lower.clone());
            let over =
                mounts::overlay(mounts::LOWER, NEW_ROOT, overlay_size).map_err(mount_error)?;
            made.extend(over.iter().cloned());
            (Some(lower), over.first().cloned(), over.last().cloned())
        }
        Source::Named(RootSpec::Live(medium)) => {
            load_modules(plan, &["loop", "overlay"], &[])?;
            let found = find_device(plan, &medium)?;
            device = Some(found.blkid.clone());
            let fstype = plan
                .rootfstype
                .clone()
                .or_else(|| found.fs.as_ref().map(|f| f.fstype.to_owned()))
                .unwrap_or_else(|| "iso9660".into());
            load_modules(plan, &[], &[&fstype])?;
            let media = mounts::mount(&found.path(), mounts::MEDIA, &fstype, false, "")
                .map_err(mount_error)?;
            made.push(media);
            let path = find_on_medium(mounts::MEDIA, &plan.live_image)
                .unwrap_or_else(|| format!("{}/{}", mounts::MEDIA, plan.live_image));
            let file = mounts::open_image(&path).map_err(mount_error)?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let image_type = image_fstype(&file, size, &path)?;
            load_modules(plan, &[], &[image_type])?;
            let (loop_dev, held) =
                mounts::attach_loop(&file, &plan.live_image).map_err(mount_error)?;
            _loops.push(held);
            let lower = mounts::mount(&loop_dev, mounts::LOWER, image_type, false, "")
                .map_err(mount_error)?;
            made.push(lower.clone());
            let over =
                mounts::overlay(mounts::LOWER, NEW_ROOT, overlay_size).map_err(mount_error)?;
            made.extend(over.iter().cloned());
            (Some(lower), over.first().cloned(), over.last().cloned())
        }
        Source::Named(spec @ (RootSpec::Zfs(_) | RootSpec::ZfsAuto)) => {
            return Err(fail(
                "unsupported_root",
                format!("root={} is not supported by this build", describe(&spec)),
                Value::Null,
            ));
        }
        Source::Named(spec) => {
            let found = find_device(plan, &spec)?;
            device = Some(found.blkid.clone());
            let fstype = plan
                .rootfstype
                .clone()
                .or_else(|| found.fs.as_ref().map(|f| f.fstype.to_owned()))
                .ok_or_else(|| {
                    fail(
                        "root_type",
                        format!(
                            "{} has no file system the probes know; give rootfstype=",
                            found.path()
                        ),
                        json!({ "device": found.blkid }),
                    )
                })?;
            let flags = plan.rootflags.clone().unwrap_or_default();
            if plan.overlay.is_some() {
                load_modules(plan, &["overlay"], &[&fstype])?;
                let lower = mounts::mount(&found.path(), mounts::LOWER, &fstype, false, &flags)
                    .map_err(mount_error)?;
                made.push(lower.clone());
                let over =
                    mounts::overlay(mounts::LOWER, NEW_ROOT, overlay_size).map_err(mount_error)?;
                made.extend(over.iter().cloned());
                (Some(lower), over.first().cloned(), over.last().cloned())
            } else {
                load_modules(plan, &[], &[&fstype])?;
                let root = mounts::mount(&found.path(), NEW_ROOT, &fstype, plan.read_write, &flags)
                    .map_err(mount_error)?;
                made.push(root.clone());
                (None, None, Some(root))
            }
        }
    };
    let init = switch_root::find_init(NEW_ROOT, plan.init.as_deref()).map_err(|e| {
        let tried = match &e {
            switch_root::SwitchRootError::NoInit { tried } => tried.clone(),
            _ => Vec::new(),
        };
        let mut f = fail("no_init", crate::error_chain(&e), json!({ "tried": tried }));
        f.tried = tried.into_iter().map(crate::policy::Tried::text).collect();
        f
    })?;
    let root = root.unwrap_or_else(|| Mounted {
        source: String::new(),
        target: NEW_ROOT.into(),
        fstype: String::new(),
        options: String::new(),
        read_only: true,
    });
    Ok(Prepared {
        root: root.source.clone(),
        fstype: root.fstype.clone(),
        options: root.options.clone(),
        read_only: root.read_only,
        lower,
        upper,
        mounts: made,
        device,
        image_sha256,
        init,
        init_args: plan.init_args.clone(),
        ms: start.elapsed().as_millis() as u64,
    })
}
