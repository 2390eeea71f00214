//! The root hand-off in QEMU, on both arches: the release netboot image
//! finds the root the command line names (or the verified image a manifest
//! names), mounts it — or an overlay over it — and switch_roots into it. The
//! target root's `/sbin/init` is the test's target init, which reports in a
//! `target` event what it was handed (mounts, files with digests, open
//! descriptors) and powers off; the host then reads the disk image back with
//! debugfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use phase_scenarios::{SHORT, check, failure_in, stage_event, wait_power, wait_stage};
use serde_json::Value;
use xtask::Arch;
use xtask::artifacts::{self, Variant};
use xtask::images;
use xtask::provider::{self, Publication};
use xtask::roots;
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

/// A root hand-off boots the kernel once; with a fetch, twice as long.
const ROOT: Duration = Duration::from_secs(240);

const LABEL: &str = "phase-root";
const PARTUUID: &str = "8d0a3f2e-5b1c-4e7a-9f60-2c4b7d9e1a35";

fn disk(path: &Path, writable: bool) -> Drive {
    Drive {
        path: path.to_owned(),
        media: Media::Disk,
        format: "raw",
        readonly: !writable,
    }
}

/// Boots `spec`'s image with `append` and `drives` (and QEMU's user network
/// when `net`).
fn boot(
    arch: Arch,
    name: &str,
    spec: &str,
    append: &str,
    drives: Vec<Drive>,
    net: bool,
) -> Result<Vm> {
    let bundle = artifacts::bundle(arch, spec, Variant::Release)?;
    let mut s = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        append,
    );
    s.drives = drives;
    s.user_net = net;
    Vm::start(&s)
}

/// The mount at `point` in the target's report.
fn mount<'a>(target: &'a Value, point: &str) -> Option<&'a Value> {
    target["mounts"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["mount_point"] == point)
}

/// The data files of the test root, with their digests.
fn expected_files() -> BTreeMap<String, String> {
    roots::data_files()
        .into_iter()
        .map(|(p, b)| (p.to_owned(), roots::sha256(&b)))
        .collect()
}

/// Checks what every successful hand-off must show: the target init runs as
/// PID 1 from `/sbin/init` with the next arguments, only the console is
/// open, and the root holds the data files intact.
fn handed_over(vm: &Vm, target: &Value, files: &Value) -> Result<()> {
    check(
        vm,
        target["pid"] == 1 && target["argv"][0] == "/sbin/init",
        &format!(
            "the target init is not PID 1 /sbin/init: {}",
            target["argv"]
        ),
    )?;
    let fds: Vec<&str> = target["fds"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    // 0–2 are the console; one more is the directory being listed.
    check(
        vm,
        fds.len() == 4 && fds[..3] == ["0", "1", "2"],
        &format!(
            "descriptors other than the console crossed the exec: {}",
            target["fds"]
        ),
    )?;
    for (path, digest) in expected_files() {
        check(
            vm,
            files[&path] == digest.as_str(),
            &format!("{path} is not intact in the new root: {}", files[&path]),
        )?;
    }
    check(
        vm,
        target["env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "TERM=linux")),
        "the next init did not get the kernel's environment",
    )
}

/// `root=LABEL=` of an ext4 disk under `rd.overlay`: the lower is the disk,
/// read-only; the upper a tmpfs; a write lands in the upper and never on the
/// disk, which the host reads back after power-off. The lower and upper are
/// listed by the target under the moved /run.
fn overlay_over_a_local_disk_found_by_label(arch: Arch) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = roots::tree(arch, dir.path(), true, true)?;
    let image = dir.path().join("root.ext4");
    roots::ext4(&tree, LABEL, 32, &image)?;
    let mut vm = boot(
        arch,
        "root-overlay-label",
        "netboot",
        &format!(
            "root=LABEL={LABEL} rd.overlay=tmpfs:size=64m phase.onfail=poweroff -- from-the-cmdline"
        ),
        vec![disk(&image, true)],
        false,
    )?;
    let handoff = wait_stage(&mut vm, "handoff", ROOT)?;
    let r = &handoff["root"];
    check(
        &vm,
        r["lower"]["fstype"] == "ext4"
            && r["lower"]["read_only"] == true
            && r["upper"]["fstype"] == "tmpfs",
        &format!("not an overlay over the ext4 disk: {r}"),
    )?;
    check(
        &vm,
        r["upper"]["options"]
            .as_str()
            .is_some_and(|o| o.contains("size=64m")),
        &format!("rd.overlay's size did not reach the tmpfs: {r}"),
    )?;
    let target = vm.wait_event("target", ROOT)?;
    let root = mount(&target, "/").cloned().unwrap_or_default();
    check(
        &vm,
        root["fstype"] == "overlay",
        &format!("/ is not the overlay: {root}"),
    )?;
    let lower = mount(&target, "/run/phase/lower")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        lower["fstype"] == "ext4"
            && lower["options"]
                .as_str()
                .is_some_and(|o| o.starts_with("ro")),
        &format!("the lower is not the read-only ext4 disk: {lower}"),
    )?;
    check(
        &vm,
        target["argv"][1] == "from-the-cmdline",
        &format!(
            "the arguments after -- did not reach the next init: {}",
            target["argv"]
        ),
    )?;
    check(
        &vm,
        target["wrote"] == true,
        "the target could not write into the overlay",
    )?;
    handed_over(&vm, &target, &target["files"])?;
    // The lower and upper, listed under the moved /run: the disk's files
    // below, the write above.
    let lower_files = &target["trees"]["/run/phase/lower"];
    for (path, digest) in expected_files() {
        check(
            &vm,
            lower_files[format!("/run/phase/lower{path}")] == digest.as_str(),
            &format!("the lower lacks {path}: {lower_files}"),
        )?;
    }
    check(
        &vm,
        target["trees"]["/run/phase/overlay"]["/run/phase/overlay/upper/written-by-target"]
            .is_string(),
        &format!(
            "the write is not in the upper: {}",
            target["trees"]["/run/phase/overlay"]
        ),
    )?;
    // The target init powers off by itself.
    vm.expect_clean_exit(SHORT)?;
    // The disk never saw the write.
    let mut paths: Vec<&str> = roots::data_files().into_keys().collect();
    paths.push("/written-by-target");
    let on_disk = roots::ext4_files(&image, 0, &paths)?;
    ensure!(
        on_disk["/written-by-target"].is_none(),
        "the overlay's write reached the disk"
    );
    for (path, digest) in expected_files() {
        ensure!(
            on_disk[&path].as_deref() == Some(digest.as_str()),
            "{path} on the disk changed: {:?}",
            on_disk[&path]
        );
    }
    Ok(())
}

/// `root=PARTUUID=` of a GPT partition, read-write with `rw` (SECURITY.md
/// row 25): the cleanup of the initramfs must not cross into the new root,
/// so after the switch and the target's write the disk holds every file of
/// the root intact, plus the write.
fn read_write_partition_by_partuuid_keeps_every_file(arch: Arch) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = roots::tree(arch, dir.path(), true, true)?;
    let part = dir.path().join("part.ext4");
    roots::ext4(&tree, "data", 24, &part)?;
    let image = dir.path().join("disk.img");
    roots::gpt_disk(&part, "phase-root-part", PARTUUID, 32, &image)?;
    let mut vm = boot(
        arch,
        "root-partuuid-rw",
        "netboot",
        &format!(
            "root=PARTUUID={} rw phase.onfail=poweroff",
            PARTUUID.to_uppercase()
        ),
        vec![disk(&image, true)],
        false,
    )?;
    let handoff = wait_stage(&mut vm, "handoff", ROOT)?;
    check(
        &vm,
        handoff["root"]["root"] == "/dev/vda1" && handoff["root"]["read_only"] == false,
        &format!("not /dev/vda1 read-write: {}", handoff["root"]),
    )?;
    let target = vm.wait_event("target", ROOT)?;
    let root = mount(&target, "/").cloned().unwrap_or_default();
    check(
        &vm,
        root["source"] == "/dev/vda1"
            && root["fstype"] == "ext4"
            && root["options"]
                .as_str()
                .is_some_and(|o| o.starts_with("rw")),
        &format!("/ is not /dev/vda1 read-write: {root}"),
    )?;
    check(
        &vm,
        target["wrote"] == true,
        "the target could not write to its root",
    )?;
    handed_over(&vm, &target, &target["files"])?;
    vm.expect_clean_exit(SHORT)?;
    let mut paths: Vec<&str> = roots::data_files().into_keys().collect();
    paths.extend(["/written-by-target", "/sbin/init"]);
    let on_disk = roots::ext4_files(&image, 1 << 20, &paths)?;
    for (path, digest) in expected_files() {
        ensure!(
            on_disk[&path].as_deref() == Some(digest.as_str()),
            "{path} was damaged by the switch: {:?}",
            on_disk[&path]
        );
    }
    ensure!(
        on_disk["/sbin/init"].as_deref()
            == Some(roots::sha256(&std::fs::read(roots::target_init(arch)?)?).as_str()),
        "/sbin/init on the disk changed"
    );
    ensure!(
        on_disk["/written-by-target"].as_deref()
            == Some(roots::sha256(b"written by the target init\n").as_str()),
        "the target's write is not on the disk"
    );
    Ok(())
}

/// The provider tree for a root image.
struct Published {
    _dir: tempfile::TempDir,
    _nginx: phase_tools::nginx::Nginx,
    url: String,
    tree: PathBuf,
    image: PathBuf,
}

fn publish_root(arch: Arch, kind: &str) -> Result<Published> {
    let dir = tempfile::tempdir()?;
    let tree = roots::tree(arch, dir.path(), true, false)?;
    let image = dir.path().join(format!("root.{kind}"));
    match kind {
        "squashfs" => roots::squashfs(&tree, &image)?,
        _ => roots::erofs(&tree, &image)?,
    }
    let bundle = artifacts::bundle(arch, "netboot", Variant::Release)?;
    let (published, _) = provider::publish_tree(
        dir.path(),
        &Publication {
            arch,
            version: 5,
            floor: None,
            expires_in: 3600,
            cmdline: String::new(),
            kernel: &bundle.kernel.image,
            initrd: None,
            served_as: None,
            root_image: Some(&image),
        },
    )?;
    let nginx = provider::nginx(&published, dir.path())?;
    Ok(Published {
        url: provider::guest_url("http", nginx.http.port()),
        _nginx: nginx,
        tree: published,
        image,
        _dir: dir,
    })
}

/// A signed manifest with `handoff: switch_root` names a root image; the
/// init fetches it from nginx into a sealed memfd, verifies it, attaches a
/// read-only loop device to that very memfd and overlays it.
fn overlay_over_a_fetched_image(arch: Arch, kind: &str) -> Result<()> {
    let p = publish_root(arch, kind)?;
    let digest = roots::sha256(&std::fs::read(&p.image)?);
    let mut vm = boot(
        arch,
        &format!("root-fetched-{kind}"),
        "netboot",
        &format!("phase.provider={} phase.onfail=poweroff", p.url),
        Vec::new(),
        true,
    )?;
    let verify = wait_stage(&mut vm, "verify", ROOT)?;
    check(
        &vm,
        verify["artifacts"][0]["name"] == "root_image"
            && verify["artifacts"][0]["sha256"] == digest.as_str(),
        &format!("the root image was not verified: {verify}"),
    )?;
    let handoff = wait_stage(&mut vm, "handoff", ROOT)?;
    let r = &handoff["root"];
    check(
        &vm,
        r["image_sha256"] == digest.as_str()
            && r["lower"]["fstype"] == kind
            && r["lower"]["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("/dev/loop")),
        &format!("not the verified image on a loop device: {r}"),
    )?;
    let target = vm.wait_event("target", ROOT)?;
    let lower = mount(&target, "/run/phase/lower")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        lower["fstype"] == kind
            && lower["options"]
                .as_str()
                .is_some_and(|o| o.starts_with("ro")),
        &format!("the lower is not the read-only {kind} image: {lower}"),
    )?;
    check(
        &vm,
        mount(&target, "/").is_some_and(|m| m["fstype"] == "overlay"),
        "/ is not an overlay",
    )?;
    handed_over(&vm, &target, &target["files"])?;
    vm.expect_clean_exit(SHORT)
}

fn overlay_over_a_signed_squashfs_from_nginx(arch: Arch) -> Result<()> {
    overlay_over_a_fetched_image(arch, "squashfs")
}

#[test]
fn x86_64_overlay_over_a_signed_erofs_from_nginx() -> Result<()> {
    overlay_over_a_fetched_image(Arch::X86_64, "erofs")
}

/// SECURITY.md row 27: one byte of the served image changed → refused at
/// verify, before anything is mounted.
fn a_tampered_root_image_mounts_nothing(arch: Arch) -> Result<()> {
    let p = publish_root(arch, "squashfs")?;
    let digest = roots::sha256(&std::fs::read(&p.image)?);
    let blob = p.tree.join("blobs/sha256").join(&digest);
    let mut bytes = std::fs::read(&blob)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&blob, &bytes)?;
    let mut vm = boot(
        arch,
        "root-tampered",
        "netboot",
        &format!("phase.provider={} phase.onfail=poweroff", p.url),
        Vec::new(),
        true,
    )?;
    let failure = failure_in(&mut vm, "verify", ROOT)?;
    check(
        &vm,
        failure["kind"] == "artifact_digest" && failure["detail"]["expected"] == digest.as_str(),
        &format!("not refused for its digest: {failure}"),
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        stage_event(&vm, "handoff").is_null()
            && !vm.events().iter().any(|e| e["event"] == "target"),
        "something was mounted or switched to",
    )
}

/// A root without an init: the report names every path tried and the
/// policy finds the initramfs intact — here the debug image's shell, which
/// still runs the initramfs's own programs.
fn a_root_without_init_leaves_the_initramfs_intact(arch: Arch) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = roots::tree(arch, dir.path(), false, false)?;
    let image = dir.path().join("root.ext4");
    roots::ext4(&tree, LABEL, 32, &image)?;
    let mut vm = boot(
        arch,
        "root-no-init",
        "debug",
        &format!("root=LABEL={LABEL} phase.onfail=shell"),
        vec![disk(&image, false)],
        false,
    )?;
    let failure = failure_in(&mut vm, "handoff", ROOT)?;
    let tried: Vec<&str> = failure["detail"]["tried"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    check(
        &vm,
        failure["kind"] == "no_init"
            && tried
                == [
                    "/sbin/init (does not exist)",
                    "/etc/init (does not exist)",
                    "/bin/init (does not exist)",
                    "/bin/sh (does not exist)",
                ],
        &format!("the report does not name the paths tried: {failure}"),
    )?;
    vm.wait_console("starting /bin/sh", SHORT)?;
    vm.type_console("test -x /init && test -x /bin/busybox && echo initramfs-$((40+2))\n")?;
    vm.wait_console("initramfs-42", SHORT)?;
    vm.kill()
}

/// A root that never appears: within `rd.timeout` the report lists every
/// device seen, with what the probes found on it, as blkid prints it.
fn a_missing_root_lists_the_devices_seen(arch: Arch) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![0u8; 8 << 20])?;
    xtask::cmd::run(
        std::process::Command::new("mkfs.vfat")
            .args(["-n", "OTHER", "-i", "1234abcd"])
            .arg(&other),
    )?;
    let mut vm = boot(
        arch,
        "root-missing",
        "netboot",
        "root=LABEL=nowhere rd.timeout=5 phase.onfail=poweroff",
        vec![disk(&other, false)],
        false,
    )?;
    let failure = failure_in(&mut vm, "handoff", ROOT)?;
    let seen = failure["detail"]["seen"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let vda = seen
        .iter()
        .find(|s| s["name"] == "vda")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        failure["kind"] == "root_not_found"
            && vda["fs"]["fstype"] == "vfat"
            && vda["fs"]["label"] == "OTHER"
            && vda["blkid"] == "/dev/vda: LABEL=\"OTHER\" UUID=\"1234-ABCD\" TYPE=\"vfat\"",
        &format!("the report does not list the vfat disk as blkid would: {failure}"),
    )?;
    let waited = failure["detail"]["waited_ms"].as_u64().unwrap_or(0);
    check(
        &vm,
        (5_000..8_000).contains(&waited),
        &format!("waited {waited} ms, not rd.timeout=5"),
    )?;
    // The event can overtake the console: read the console once the
    // machine is off and every line of it is in.
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_contains("tried:  /dev/vda: LABEL=\"OTHER\""),
        "the console report does not list the device",
    )
}

/// The live-ISO case, with dracut's spelling: an ISO that mkimage wrote
/// with a squashfs root inside (`mkimage iso --root-image`), booted by the
/// firmware's menu with `root=live:CDLABEL=PHASE_BOOT`; the init finds the
/// medium by its volume id, loops the image and overlays it.
fn live_iso(name: &str, firmware: Firmware, media: Media) -> Result<()> {
    let arch = Arch::X86_64;
    let dir = tempfile::tempdir()?;
    let tree = roots::tree(arch, dir.path(), true, true)?;
    let image = dir.path().join("root.squashfs");
    roots::squashfs(&tree, &image)?;
    let iso = dir.path().join("live.iso");
    images::live_iso(
        arch,
        &image,
        &format!("{} phase.onfail=poweroff", arch.kernel_params()),
        &iso,
    )?;
    let mut vm = Vm::start(&VmSpec::firmware(
        format!("{name}-{arch}"),
        arch,
        firmware,
        Drive {
            path: iso,
            media,
            format: "raw",
            readonly: true,
        },
    ))?;
    let handoff = wait_stage(&mut vm, "handoff", ROOT)?;
    let r = &handoff["root"];
    check(
        &vm,
        r["lower"]["fstype"] == "squashfs"
            && r["device"].as_str().is_some_and(|d| {
                d.contains("LABEL=\"PHASE_BOOT\" ") && d.contains("TYPE=\"iso9660\"")
            }),
        &format!("not the ISO's squashfs under an overlay: {r}"),
    )?;
    let target = vm.wait_event("target", ROOT)?;
    let media_mount = mount(&target, "/run/phase/media")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        media_mount["fstype"] == "iso9660",
        &format!("the medium is not mounted as iso9660: {media_mount}"),
    )?;
    check(
        &vm,
        mount(&target, "/").is_some_and(|m| m["fstype"] == "overlay") && target["wrote"] == true,
        "/ is not a writable overlay",
    )?;
    handed_over(&vm, &target, &target["files"])?;
    vm.expect_clean_exit(SHORT)
}

#[test]
fn x86_64_live_iso_as_a_cd_under_seabios() -> Result<()> {
    live_iso("root-live-cd-seabios", Firmware::Default, Media::Cdrom)
}

#[test]
fn x86_64_live_iso_as_a_disk_under_ovmf() -> Result<()> {
    live_iso("root-live-disk-ovmf", Firmware::Uefi, Media::Disk)
}

phase_scenarios::on_both_arches!(
    root_x86_64,
    root_aarch64;
    overlay_over_a_local_disk_found_by_label,
    read_write_partition_by_partuuid_keeps_every_file,
    overlay_over_a_signed_squashfs_from_nginx,
    a_tampered_root_image_mounts_nothing,
    a_root_without_init_leaves_the_initramfs_intact,
    a_missing_root_lists_the_devices_seen,
);
