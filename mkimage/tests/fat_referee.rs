//! FAT images read back by fsck.fat and mtools.

mod referee;

use mkimage::fat::{self, FatOptions, FatType, Files};

fn sample() -> Files {
    let mut f = Files::new();
    f.add(
        "EFI/BOOT/BOOTX64.EFI",
        (0..70_000u32).map(|i| i as u8).collect(),
    )
    .unwrap();
    f.add(
        "loader/entries/phase-internet.conf",
        b"title Phase\n".to_vec(),
    )
    .unwrap();
    f.add("dtb/apple/t8103-j274.dtb", vec![0xd0; 3000]).unwrap();
    f.add("dtb/apple/t8103-j293.dtb", vec![0xd1; 3000]).unwrap();
    f.add("syslinux.cfg", b"DEFAULT x\n".to_vec()).unwrap();
    f.add_dir("empty/dir").unwrap();
    f.add("empty.txt", vec![]).unwrap();
    for i in 0..40 {
        f.add(
            &format!("many/a-long-file-name-number-{i}.txt"),
            format!("{i}").into_bytes(),
        )
        .unwrap();
    }
    f
}

#[test]
fn every_fat_type_passes_fsck_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    for (t, cluster) in [
        (FatType::Fat12, None),
        (FatType::Fat16, None),
        (FatType::Fat32, Some(512)),
    ] {
        let img = fat::build(
            &sample(),
            &FatOptions {
                label: Some("PHASE-ESP".into()),
                volume_id: 0xCAFE_F00D,
                time: 1_700_000_000,
                fat_type: Some(t),
                cluster_size: cluster,
                free_bytes: 1 << 20,
                ..FatOptions::default()
            },
        )
        .unwrap();
        assert_eq!(img.fat_type, t);
        let path = dir.path().join(format!("{t:?}.img"));
        std::fs::write(&path, &img.bytes).unwrap();
        referee::fsck_fat(&path);
        if let Some(data) = referee::mtools_read(&path, 0, "EFI/BOOT/BOOTX64.EFI") {
            assert_eq!(data, (0..70_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        }
        if let Some(data) = referee::mtools_read(&path, 0, "many/a-long-file-name-number-39.txt") {
            assert_eq!(data, b"39");
        }
        if let Some(data) = referee::mtools_read(&path, 0, "dtb/apple/t8103-j293.dtb") {
            assert_eq!(data, vec![0xd1; 3000]);
        }
    }
}

#[test]
fn fixed_size_volume_passes_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let img = fat::build(
        &sample(),
        &FatOptions {
            size: Some(64 << 20),
            hidden_sectors: 2048,
            ..FatOptions::default()
        },
    )
    .unwrap();
    let path = dir.path().join("esp.img");
    std::fs::write(&path, &img.bytes).unwrap();
    referee::fsck_fat(&path);
}

#[test]
fn mtools_ignores_a_long_name_whose_checksum_is_wrong() {
    // The long names above read back only if each long entry's checksum
    // matches its short entry: with one checksum byte changed, mdir lists
    // the file by its short name only.
    if referee::tool("mcopy", "long-name checksum read-back").is_none() {
        return;
    }
    let mut f = Files::new();
    f.add("Mixed.Case", b"body".to_vec()).unwrap();
    let img = fat::build(&f, &FatOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.img");
    std::fs::write(&good, &img.bytes).unwrap();
    assert_eq!(
        referee::mtools_read(&good, 0, "Mixed.Case").unwrap(),
        b"body"
    );
    // The root directory follows the reserved sectors and two FATs of one
    // sector each; its one long-name entry has the attribute byte 0x0F.
    let root = (4 + 2) * 512;
    let lfn = (root..root + 16 * 32)
        .step_by(32)
        .find(|&e| img.bytes[e + 11] == 0x0F)
        .expect("no long-name entry in the root directory");
    let mut bad = img.bytes.clone();
    bad[lfn + 13] ^= 0x01;
    let broken = dir.path().join("broken.img");
    std::fs::write(&broken, &bad).unwrap();
    let listing = std::process::Command::new(phase_testkit::find_tool("mdir").unwrap())
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&broken)
        .arg("::")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing.contains("Mixed.Case"),
        "mdir still shows the long name:\n{listing}"
    );
    assert!(listing.contains("MIXED~1"), "{listing}");
}

#[test]
fn fsck_notices_a_broken_image() {
    // The referee must be able to fail: a FAT whose second copy differs.
    let Some(_) = referee::tool("fsck.fat", "fsck.fat sanity check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut img = fat::build(&sample(), &FatOptions::default()).unwrap();
    // Scramble the chain of cluster 2 in the first FAT only.
    let fat = 4 * 512 + 3; // reserved sectors, then entry 2 of a FAT12
    assert_eq!(img.fat_type, FatType::Fat12);
    img.bytes[fat] ^= 0x55;
    let path = dir.path().join("broken.img");
    std::fs::write(&path, &img.bytes).unwrap();
    let result = std::panic::catch_unwind(|| referee::fsck_fat(&path));
    assert!(result.is_err(), "fsck.fat accepted a corrupted FAT");
}
