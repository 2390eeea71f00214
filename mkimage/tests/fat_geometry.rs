//! FAT volumes of a fixed size, across the FAT12/16/32 boundaries and up to
//! 64 GiB, read back by fsck.fat -n with the cluster count and FAT width
//! mkimage reports; and memory that does not grow with `--size`.

mod fixtures;
mod referee;

use std::path::Path;
use std::process::Command;

use fixtures::*;
use mkimage::fat::{self, FatError, FatOptions, FatType, Files};
use mkimage::output::Output;

fn files() -> Files {
    let mut f = Files::new();
    f.add("EFI/BOOT/BOOTX64.EFI", vec![0x5A; 300_000]).unwrap();
    f.add("loader/loader.conf", b"timeout 0\n".to_vec())
        .unwrap();
    f
}

/// Builds a volume of `size` bytes to `path` (sparse); `None` when mkimage
/// refuses the size.
fn volume(
    path: &Path,
    size: u64,
    fat_type: Option<FatType>,
    cluster: Option<u32>,
) -> Option<fat::FatLayout> {
    let f = files();
    let layout = match fat::layout(
        &f,
        &FatOptions {
            label: Some("PHASE".into()),
            volume_id: 1,
            time: 1_700_000_000,
            size: Some(size),
            fat_type,
            cluster_size: cluster,
            ..FatOptions::default()
        },
    ) {
        Ok(l) => l,
        Err(e @ (FatError::ClusterCount { .. } | FatError::TooSmall { .. })) => {
            // A refusal must say why in terms the user can act on.
            assert!(
                e.to_string().contains("clusters") || e.to_string().contains("too small"),
                "{e}"
            );
            return None;
        }
        Err(e) => panic!("{size}: {e}"),
    };
    assert_eq!(layout.len, size, "the volume is not the size asked for");
    let pieces = layout.pieces(&f).unwrap();
    Output::new(path)
        .unwrap()
        .write(size, &|_| {}, |s| pieces.write_to(s))
        .unwrap();
    Some(layout)
}

/// fsck.fat -n -v must accept the volume and count what mkimage laid out.
fn check(path: &Path, layout: &fat::FatLayout) {
    referee::fsck_fat(path);
    let Some(fsck) = referee::tool("fsck.fat", "fsck.fat cluster count") else {
        return;
    };
    let out = referee::run(Command::new(fsck).arg("-n").arg("-v").arg(path));
    let text = referee::text(&out);
    let width = format!("{} bit entries", layout.fat_type.bits());
    assert!(
        text.contains(&width),
        "fsck.fat does not see {width}:\n{text}"
    );
    let counted = format!("/{} clusters", layout.clusters);
    assert!(
        text.contains(&counted),
        "fsck.fat counts other than {counted}:\n{text}"
    );
}

#[test]
fn sizes_across_the_fat_type_boundaries_pass_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    // At the default 2 KiB clusters, 4085 and 65525 clusters are the
    // FAT12/16 and FAT16/32 boundaries; sizes whose count lands on, next to
    // and 16 around them, in steps of a sector and of a cluster.
    let mut built = 0;
    for boundary in [4085u64, 65525] {
        for delta in [-40i64, -17, -16, -2, -1, 0, 1, 2, 15, 16, 17, 40] {
            let clusters = (boundary as i64 + delta) as u64;
            for extra_sectors in [0u64, 1, 3, 40, 75] {
                let size = (clusters * 4 + extra_sectors) * 512;
                let layout = volume(&path, size, None, None)
                    .unwrap_or_else(|| panic!("{size} bytes was refused"));
                check(&path, &layout);
                built += 1;
            }
        }
    }
    assert_eq!(built, 120);
    // Forced types and cluster sizes: either a volume fsck.fat accepts or a
    // refusal, never a volume it rejects.
    for (t, cluster) in [
        (FatType::Fat12, 2048),
        (FatType::Fat16, 2048),
        (FatType::Fat16, 512),
        (FatType::Fat32, 512),
        (FatType::Fat32, 1024),
    ] {
        for clusters in [4080u64, 4085, 4101, 65508, 65525, 65541, 70000] {
            let size = clusters * u64::from(cluster) + 128 * 1024;
            if let Some(layout) = volume(&path, size, Some(t), Some(cluster)) {
                assert_eq!(layout.fat_type, t);
                check(&path, &layout);
            }
        }
    }
}

#[test]
fn large_volumes_pass_fsck_and_stay_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    for size in [256u64 << 20, 1 << 30, 4 << 30, 64 << 30] {
        let layout = volume(&path, size, None, None).unwrap();
        assert_eq!(layout.fat_type, FatType::Fat32);
        check(&path, &layout);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 32 << 20,
            "{size}: {} bytes allocated",
            meta.blocks() * 512
        );
    }
}

/// Peak resident memory of a command in KiB, by GNU time.
fn peak_rss(args: &[&str]) -> Option<u64> {
    let time = referee::tool("time", "peak memory (GNU time)")?;
    let out = referee::run(
        Command::new(time)
            .args(["-f", "%M"])
            .arg(env!("CARGO_BIN_EXE_mkimage"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(args),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines().last().and_then(|l| l.trim().parse().ok())
}

#[test]
fn memory_does_not_grow_with_the_disk_size() {
    if !have(STUB_X64, "memory of large disks")
        || !have("/usr/bin/syslinux", "memory of large disks")
    {
        return;
    }
    let inp = Inputs::new();
    let mut peaks = Vec::new();
    for (format, size) in [
        ("usb", "1G"),
        ("usb", "64G"),
        ("qcow2", "1G"),
        ("qcow2", "64G"),
    ] {
        let out = inp.path(&format!("{format}-{size}"));
        let Some(kib) = peak_rss(&[
            format,
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--size",
            size,
            "--out",
            out.to_str().unwrap(),
        ]) else {
            return;
        };
        println!("{format} --size {size}: peak RSS {kib} KiB");
        assert!(kib < 64 << 10, "{format} --size {size} took {kib} KiB");
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated < 16 << 20,
            "{format} --size {size}: {allocated} bytes allocated"
        );
        if format == "qcow2"
            && let Some(q) = referee::tool("qemu-img", "qemu-img check (64G)")
        {
            referee::run(Command::new(q).arg("check").arg(&out));
        }
        std::fs::remove_file(&out).unwrap();
        peaks.push(kib);
    }
    // 64 times the disk, (nearly) the same memory.
    assert!(peaks[1] < peaks[0] + (8 << 10), "{peaks:?}");
    assert!(peaks[3] < peaks[2] + (8 << 10), "{peaks:?}");
}

#[test]
fn a_large_qcow2_is_its_raw_disk() {
    if !have(STUB_X64, "large qcow2") || !have("/usr/bin/syslinux", "large qcow2") {
        return;
    }
    let Some(qemu_img) = referee::tool("qemu-img", "qemu-img compare (large qcow2)") else {
        return;
    };
    let inp = Inputs::new();
    let raw = inp.path("usb.img");
    let q = inp.path("usb.qcow2");
    let converted = inp.path("converted.qcow2");
    let args = |format: &str, out: &Path| {
        mkimage_ok(&[
            format,
            "--kernel",
            inp.k(),
            "--initrd",
            inp.i(),
            "--size",
            "600M",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    args("usb", &raw);
    args("qcow2", &q);
    mkimage_ok(&[
        "qcow2",
        "--from-raw",
        raw.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    // The GPT's backup at the end of the disk, past 512 MiB, puts data
    // under a second L2 table.
    referee::run(Command::new(&qemu_img).arg("check").arg(&q));
    referee::run(Command::new(&qemu_img).arg("compare").arg(&q).arg(&raw));
    assert!(std::fs::read(&q).unwrap() == std::fs::read(&converted).unwrap());
}
