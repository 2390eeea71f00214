//! The block-device probes against util-linux: images written by the real
//! tools (mkfs.ext2/3/4, mksquashfs, mkfs.erofs, mkfs.vfat, genisoimage,
//! xorriso, sgdisk, sfdisk, fdisk) and by mkimage's own writers, each
//! probed by us and by `blkid -p -o udev` (or, for the partitions of a
//! table, `partx`, blkid's library behind another front end); the expected
//! values are always util-linux's, never ours.
//!
//! A missing tool skips its check with a printed reason, and fails the test
//! when `PHASE_REQUIRE_TOOLS` is set. ZFS cannot be formatted on this host
//! (no zfs module), so its label is built here from the on-disk format and
//! blkid is asked whether it agrees; a real pool is probed in a VM.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use phase_init::root::probe::{self, Device, Probe, ProbeError};

/// The tool's path, or `None` after the workspace's skip rule.
fn tool(name: &str, check: &str) -> Option<PathBuf> {
    phase_testkit::tool(name, check)
}

/// Runs a command; panics with its output when it fails. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Undoes the `\xNN` escapes of blkid's `*_ENC` values and partx's output.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (true, Some(byte)) = (b[i..].starts_with(b"\\x"), hex) {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// `blkid -p -o udev` on the image (from `offset` when given), as a map;
/// empty when blkid finds nothing.
fn blkid(image: &Path, offset: Option<u64>) -> BTreeMap<String, String> {
    let blkid = tool("blkid", "blkid").expect("blkid is checked first");
    let mut cmd = Command::new(blkid);
    cmd.args(["-p", "-o", "udev"]);
    if let Some(o) = offset {
        cmd.args(["-O", &o.to_string()]);
    }
    let out = cmd.arg(image).env("LC_ALL", "C.UTF-8").output().unwrap();
    // Exit status 2: nothing found.
    if out.status.code() == Some(2) {
        return BTreeMap::new();
    }
    assert!(out.status.success(), "blkid {image:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), unescape(v)))
        .collect()
}

/// `partx` on the image: one map per partition (NR, START and SECTORS in
/// 512-byte units, UUID, NAME, TYPE, SCHEME).
fn partx(image: &Path, sector: u32) -> Vec<BTreeMap<String, String>> {
    let partx = tool("partx", "partx").expect("partx comes with blkid");
    let out = run(Command::new(partx)
        .args(["-b", "-g", "-P", "-S", &sector.to_string()])
        .args(["-o", "NR,START,SECTORS,UUID,NAME,TYPE,SCHEME"])
        .arg(image));
    out.lines()
        .map(|l| {
            let mut m = BTreeMap::new();
            let mut rest = l;
            while let Some((k, v)) = rest.split_once("=\"") {
                let (v, tail) = v.split_once('"').unwrap();
                m.insert(k.trim().to_owned(), unescape(v));
                rest = tail;
            }
            m
        })
        .collect()
}

/// Probes `len` bytes of the file from `offset`, through the read callback
/// the init uses (a pread per request).
fn probe_file(image: &Path, offset: u64, len: Option<u64>, sector: u32) -> Probe {
    let file = File::open(image).unwrap();
    let len = len.unwrap_or_else(|| file.metadata().unwrap().len() - offset);
    let mut read = |at: u64, n: usize| {
        let mut buf = vec![0; n];
        file.read_exact_at(&mut buf, offset + at).ok().map(|_| buf)
    };
    probe::probe(&mut Device::new(len, sector, &mut read))
}

/// Our filesystem against blkid's: TYPE, LABEL, UUID and UUID_SUB.
fn agrees(image: &Path, ours: &Probe, theirs: &BTreeMap<String, String>) {
    let fs = ours.fs.as_ref();
    let field = |k: &str| theirs.get(k).map(String::as_str);
    let what = format!("{image:?}: ours {ours:?}, blkid {theirs:?}");
    assert_eq!(fs.map(|f| f.fstype), field("ID_FS_TYPE"), "TYPE of {what}");
    assert_eq!(
        fs.and_then(|f| f.label.as_deref()),
        field("ID_FS_LABEL_ENC"),
        "LABEL of {what}"
    );
    assert_eq!(
        fs.and_then(|f| f.uuid.as_deref()),
        field("ID_FS_UUID_ENC"),
        "UUID of {what}"
    );
    let sub = fs
        .and_then(|f| f.zfs.as_ref())
        .and_then(|z| z.guid)
        .map(|g| g.to_string());
    assert_eq!(
        sub.as_deref(),
        field("ID_FS_UUID_SUB_ENC"),
        "UUID_SUB of {what}"
    );
    let table = ours.table.as_ref();
    assert_eq!(
        table.map(|t| t.kind),
        field("ID_PART_TABLE_TYPE"),
        "PTTYPE of {what}"
    );
    assert_eq!(
        table.and_then(|t| t.id.as_deref()),
        field("ID_PART_TABLE_UUID"),
        "PTUUID of {what}"
    );
    assert!(ours.errors.is_empty(), "{what}");
}

/// Probes the whole image and compares with blkid; returns our probe.
fn check(image: &Path) -> Probe {
    let ours = probe_file(image, 0, None, 512);
    agrees(image, &ours, &blkid(image, None));
    ours
}

/// The partitions against partx's: numbers, offsets, sizes, PARTUUID,
/// PARTLABEL and type.
fn partitions_agree(image: &Path, ours: &Probe, sector: u32) {
    let theirs = partx(image, sector);
    let table = ours.table.as_ref().expect("a table");
    assert_eq!(
        table.partitions.len(),
        theirs.len(),
        "{image:?}: {ours:?} vs {theirs:?}"
    );
    for (p, t) in table.partitions.iter().zip(&theirs) {
        let what = format!("{image:?}: {p:?} vs {t:?}");
        assert_eq!(p.number.to_string(), t["NR"], "{what}");
        assert_eq!(p.offset / 512, t["START"].parse::<u64>().unwrap(), "{what}");
        assert_eq!(p.size / 512, t["SECTORS"].parse::<u64>().unwrap(), "{what}");
        assert_eq!(p.partuuid.as_deref().unwrap_or(""), t["UUID"], "{what}");
        assert_eq!(p.partlabel.as_deref().unwrap_or(""), t["NAME"], "{what}");
        assert_eq!(p.part_type, t["TYPE"], "{what}");
        assert_eq!(table.kind, t["SCHEME"], "{what}");
    }
}

fn tools(names: &[&str], check: &str) -> Option<Vec<PathBuf>> {
    // blkid is the referee of every check.
    let mut all = vec![tool("blkid", check)?];
    for n in names {
        all.push(tool(n, check)?);
    }
    Some(all)
}

/// An empty image file of `size` bytes (sparse).
fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

/// A small tree to put into filesystems.
fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("sbin")).unwrap();
    std::fs::write(root.join("sbin/init"), b"#!/bin/sh\n").unwrap();
    std::fs::write(root.join("data"), vec![7u8; 100_000]).unwrap();
    root
}

#[test]
fn ext2_ext3_ext4_and_jbd_agree_with_blkid() {
    let Some(t) = tools(&["mkfs.ext4", "mkfs.ext2"], "ext probes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("ext2", &["-L", "ext two"]),
        ("ext3", &["-t", "ext3", "-L", "root"]),
        ("ext4", &["-t", "ext4", "-L", "phase-root"]),
        ("ext4", &["-t", "ext4", "-O", "^has_journal"]),
        ("ext4", &["-t", "ext4", "-L", "Ünïcode ✓"]),
        ("jbd", &["-O", "journal_dev", "-b", "4096"]),
    ];
    for (i, (want, args)) in cases.iter().enumerate() {
        let img = image(dir.path(), &format!("ext{i}.img"), 16 << 20);
        // mkfs.ext2 for ext2 itself, mkfs.ext4 -t for the others.
        let mkfs = if *want == "ext2" { &t[2] } else { &t[1] };
        run(Command::new(mkfs).args(["-q", "-F"]).args(*args).arg(&img));
        let ours = check(&img);
        assert_eq!(ours.fs.unwrap().fstype, *want, "{args:?}");
    }
    // A label of all 16 bytes has no NUL to end it.
    let img = image(dir.path(), "full.img", 16 << 20);
    run(Command::new(&t[1])
        .args(["-q", "-F", "-L", "0123456789abcdef"])
        .arg(&img));
    assert_eq!(
        check(&img).fs.unwrap().label.as_deref(),
        Some("0123456789abcdef")
    );
}

#[test]
fn squashfs_agrees_with_blkid_and_bounds_its_image() {
    let Some(t) = tools(&["mksquashfs"], "squashfs probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    for comp in ["gzip", "xz", "zstd"] {
        let img = dir.path().join(format!("{comp}.sqfs"));
        run(Command::new(&t[1]).arg(&src).arg(&img).args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-comp",
            comp,
        ]));
        let ours = check(&img);
        let size = ours.fs.unwrap().size.unwrap();
        // mksquashfs pads the file to 4 KiB; the image proper ends before.
        let len = std::fs::metadata(&img).unwrap().len();
        assert!(size <= len && len - size < 4096, "{size} of {len}");
        // One byte short of the image is an error, not a squashfs.
        let bytes = std::fs::read(&img).unwrap();
        let cut = probe::probe_bytes(&bytes[..size as usize - 1], 512);
        assert_eq!(cut.fs, None);
        assert!(matches!(
            cut.errors[..],
            [ProbeError::Squashfs {
                what: "bytes used",
                ..
            }]
        ));
    }
}

/// CRC32C as erofs uses it (no final inversion), to re-seal a superblock
/// edited here; fsck.erofs is the referee that the result is right.
fn crc32c(bytes: &[u8]) -> u32 {
    bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0x82F6_3B78 & (c & 1).wrapping_neg());
        }
        c
    })
}

#[test]
fn erofs_agrees_with_blkid_and_checks_its_checksum() {
    let Some(t) = tools(&["mkfs.erofs", "fsck.erofs"], "erofs probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = dir.path().join("root.erofs");
    run(Command::new(&t[1])
        .arg("-U6f1c0e1e-0000-4000-8000-00000000abcd")
        .arg("--quiet")
        .arg(&img)
        .arg(&src));
    let ours = check(&img);
    let fs = ours.fs.unwrap();
    assert_eq!(
        fs.uuid.as_deref(),
        Some("6f1c0e1e-0000-4000-8000-00000000abcd")
    );
    assert_eq!(fs.size, Some(std::fs::metadata(&img).unwrap().len()));
    // erofs-utils 1.5 cannot set a volume name: write one, re-seal the
    // checksum, and let fsck.erofs and blkid judge it.
    let mut bytes = std::fs::read(&img).unwrap();
    assert_ne!(bytes[1024 + 8] & 1, 0, "mkfs.erofs wrote no checksum");
    bytes[1024 + 64..1024 + 72].copy_from_slice(b"root vol");
    bytes[1028..1032].fill(0);
    let crc = crc32c(&bytes[1024..4096]);
    bytes[1028..1032].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&img, &bytes).unwrap();
    let fsck = |img: &Path| {
        let out = Command::new(&t[2]).arg(img).output().unwrap();
        // fsck.erofs 1.5 exits 0 even then; its message is the verdict.
        !String::from_utf8_lossy(&out.stderr).contains("chksum")
    };
    assert!(fsck(&img));
    assert_eq!(check(&img).fs.unwrap().label.as_deref(), Some("root vol"));
    // One flipped byte under the checksum: fsck.erofs refuses the image
    // and so do we (blkid 2.38 does not look).
    bytes[2000] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    assert!(!fsck(&img));
    let ours = probe_file(&img, 0, None, 512);
    assert_eq!(ours.fs, None);
    assert!(matches!(ours.errors[..], [ProbeError::ErofsCrc { .. }]));
}

#[test]
fn vfat_agrees_with_blkid() {
    let Some(t) = tools(&["mkfs.vfat"], "vfat probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], u64)] = &[
        (&["-F", "12", "-n", "FAT12 VOL", "-i", "1234abcd"], 2 << 20),
        (&["-F", "16", "-n", "ESP"], 32 << 20),
        (&["-F", "32", "-n", "FAT32LBL", "-i", "0badcafe"], 40 << 20),
        (&["-F", "16", "-S", "4096", "-s", "1"], 64 << 20),
        (&["-F", "32", "-S", "4096", "-n", "BIGSECTOR"], 300 << 20),
    ];
    for (i, (args, size)) in cases.iter().enumerate() {
        let img = image(dir.path(), &format!("fat{i}.img"), *size);
        run(Command::new(&t[1]).args(*args).arg(&img));
        let ours = check(&img);
        assert!(ours.fs.unwrap().uuid.is_some());
    }
    // The root directory's label entry wins over the boot sector's, as in
    // blkid: write another label into each boot sector.
    for (i, at) in [(0, 0x2B), (2, 0x47)] {
        let img = dir.path().join(format!("fat{i}.img"));
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[at..at + 11].copy_from_slice(b"BOOTSECTOR ");
        std::fs::write(&img, &bytes).unwrap();
        let theirs = blkid(&img, None);
        assert_eq!(theirs["ID_FS_LABEL_FATBOOT_ENC"], "BOOTSECTOR");
        let ours = check(&img);
        assert_ne!(ours.fs.unwrap().label.as_deref(), Some("BOOTSECTOR"));
    }
}

#[test]
fn iso9660_agrees_with_blkid() {
    let Some(t) = tools(&["genisoimage", "xorriso"], "iso9660 probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let labels = [
        "PHASE_ROOT",
        "Phase Root 2024",
        "a very long volume label of 32ch",
        "Ünïcode näme",
    ];
    for (i, label) in labels.iter().enumerate() {
        let joliet = dir.path().join(format!("j{i}.iso"));
        run(Command::new(&t[1])
            .args(["-quiet", "-J", "-joliet-long", "-V", label, "-o"])
            .arg(&joliet)
            .arg(&src));
        let plain = dir.path().join(format!("p{i}.iso"));
        run(Command::new(&t[2])
            .args(["-as", "mkisofs", "-quiet", "-V", label, "-o"])
            .arg(&plain)
            .arg(&src));
        for img in [&joliet, &plain] {
            let ours = check(img);
            assert_eq!(ours.fs.unwrap().label.as_deref(), Some(*label), "{img:?}");
        }
    }
    // A Joliet name that is not the primary one's prefix is taken alone.
    let img = dir.path().join("j0.iso");
    let mut bytes = std::fs::read(&img).unwrap();
    let svd = (17..32)
        .map(|s| s * 2048)
        .find(|&at| bytes[at] == 2)
        .expect("genisoimage -J writes a supplementary descriptor");
    for (k, u) in "Other".encode_utf16().chain([0x20; 11]).enumerate() {
        bytes[svd + 40 + 2 * k..svd + 42 + 2 * k].copy_from_slice(&u.to_be_bytes());
    }
    std::fs::write(&img, &bytes).unwrap();
    assert_eq!(check(&img).fs.unwrap().label.as_deref(), Some("Other"));
}

#[test]
fn gpt_from_sgdisk_agrees_with_partx_and_blkid() {
    let Some(t) = tools(&["sgdisk", "partx", "mkfs.ext4"], "GPT probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "gpt.img", 32 << 20);
    run(Command::new(&t[1])
        .arg("-o")
        .args([
            "-n",
            "1:2048:+1M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI system",
            "-n",
            "3:0:+8M",
            "-t",
            "3:8304",
            "-c",
            "3:root fs",
            "-n",
            "4:0:+1M",
            "-c",
            "4:Ünïcode ✓",
            "-n",
            "128:0:0",
        ])
        .arg(&img));
    let ours = check(&img);
    partitions_agree(&img, &ours, 512);
    let numbers: Vec<u32> = ours
        .table
        .as_ref()
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(numbers, [1, 3, 4, 128]);
    // A filesystem in partition 3, probed through the partition's own
    // window, as the init reads /dev/vda3.
    let root = ours.table.unwrap().partitions[1].clone();
    run(Command::new(&t[3])
        .args(["-q", "-F", "-L", "root", "-E"])
        .arg(format!("offset={}", root.offset))
        .arg(&img)
        .arg(format!("{}k", root.size / 1024)));
    let part = probe_file(&img, root.offset, Some(root.size), 512);
    agrees(&img, &part, &blkid(&img, Some(root.offset)));
    let line = probe::render("/dev/vda3", &part, Some(&root));
    let uuid = part.fs.as_ref().unwrap().uuid.as_deref().unwrap();
    let partuuid = root.partuuid.as_deref().unwrap();
    assert_eq!(
        line,
        format!(
            "/dev/vda3: LABEL=\"root\" UUID=\"{uuid}\" TYPE=\"ext4\" PARTLABEL=\"root fs\" PARTUUID=\"{partuuid}\""
        )
    );
    use phase_init::plan::RootSpec;
    for spec in [
        RootSpec::Label("root".into()),
        RootSpec::Uuid(uuid.to_uppercase()),
        RootSpec::PartUuid(partuuid.into()),
        RootSpec::PartLabel("root fs".into()),
        RootSpec::Device("/dev/vda3".into()),
    ] {
        assert!(
            probe::matches(&spec, "/dev/vda3", part.fs.as_ref(), Some(&root)),
            "{spec:?}"
        );
    }
    // A corrupted primary header: the kernel would find no partitions, and
    // neither do we (blkid would fall back to the backup header).
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[512 + 40] ^= 1;
    let broken = probe::probe_bytes(&bytes, 512);
    assert_eq!(broken.table, None);
    assert!(matches!(
        broken.errors[..],
        [ProbeError::GptHeaderCrc { .. }]
    ));
}

#[test]
fn gpt_with_4096_byte_sectors_agrees_with_partx_and_fdisk() {
    let Some(t) = tools(&["fdisk", "partx"], "4K GPT probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "gpt4k.img", 16 << 20);
    // fdisk's dialogue: new GPT, partition 1 of 1 MiB, partition 2 for the
    // rest, then (expert menu) name partition 2.
    let mut child = Command::new(&t[1])
        .args(["-b", "4096"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"g\nn\n\n\n+1M\nn\n\n\n\nx\nn\n2\nroot fs\nr\nw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let ours = probe_file(&img, 0, None, 4096);
    assert!(ours.errors.is_empty(), "{ours:?}");
    partitions_agree(&img, &ours, 4096);
    let listing = run(Command::new(&t[1]).args(["-b", "4096", "-l"]).arg(&img));
    let id = listing
        .lines()
        .find_map(|l| l.strip_prefix("Disk identifier: "))
        .unwrap();
    let table = ours.table.unwrap();
    assert_eq!(table.id.unwrap(), id.to_lowercase());
    assert_eq!(table.partitions[1].partlabel.as_deref(), Some("root fs"));
    // Read with 512-byte sectors the same disk has no GPT header at LBA 1.
    let wrong = probe_file(&img, 0, None, 512);
    assert_eq!(wrong.errors, [ProbeError::GptSignature]);
}

#[test]
fn mbr_from_sfdisk_with_logical_partitions_agrees_with_partx() {
    let Some(t) = tools(&["sfdisk", "partx"], "MBR probe") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "mbr.img", 32 << 20);
    let script = "label: dos\nlabel-id: 0x0a1b2c3d\n\
        start=2048, size=4096, type=83, bootable\n\
        start=8192, size=40960, type=5\n\
        start=53248, size=2048, type=c\n\
        start=10240, size=8192, type=83\n\
        start=20480, size=4096, type=82\n\
        start=26624, type=83\n";
    let mut child = Command::new(&t[1])
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let ours = check(&img);
    partitions_agree(&img, &ours, 512);
    let table = ours.table.unwrap();
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 5, 6, 7]);
    assert_eq!(table.partitions[4].partuuid.as_deref(), Some("0a1b2c3d-06"));
}

#[test]
fn mkimage_writers_agree_with_blkid() {
    if tool("blkid", "mkimage images").is_none() {
        return;
    }
    use mkimage::gpt::{Gpt, Guid, Mbr, Partition};
    let dir = tempfile::tempdir().unwrap();
    // The ESP the USB image carries.
    let mut files = mkimage::fat::Files::new();
    files.add("EFI/BOOT/BOOTX64.EFI", vec![1; 70_000]).unwrap();
    let opts = mkimage::fat::FatOptions {
        label: Some("PHASE-ESP".into()),
        volume_id: 0x1234_5678,
        free_bytes: 1 << 20,
        ..Default::default()
    };
    let esp = mkimage::fat::build(&files, &opts).unwrap();
    let img = dir.path().join("esp.img");
    std::fs::write(&img, &esp.bytes).unwrap();
    let fs = check(&img).fs.unwrap();
    assert_eq!(
        (fs.label.as_deref(), fs.uuid.as_deref()),
        (Some("PHASE-ESP"), Some("1234-5678"))
    );
    // Its GPT, protective and hybrid.
    for mbr in [Mbr::Protective, Mbr::Hybrid(vec![(0, 0xEF)])] {
        let sectors = 40960u64;
        let gpt = Gpt {
            disk_guid: Guid::derive(b"disk"),
            partitions: vec![
                Partition {
                    type_guid: Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
                    guid: Guid::derive(b"esp"),
                    first_lba: 2048,
                    last_lba: 2048 + 8191,
                    attributes: 0,
                    name: "EFI System".into(),
                },
                Partition {
                    type_guid: Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
                    guid: Guid::derive(b"root"),
                    first_lba: 10240,
                    last_lba: mkimage::gpt::last_usable(sectors),
                    attributes: 0,
                    name: "root".into(),
                },
            ],
            mbr,
            boot_code: vec![],
            disk_signature: 0xfeed_f00d,
        };
        let mut disk = vec![0u8; sectors as usize * 512];
        gpt.write(&mut disk).unwrap();
        let img = dir.path().join("usb.img");
        std::fs::write(&img, &disk).unwrap();
        let ours = check(&img);
        partitions_agree(&img, &ours, 512);
    }
    // The ISO. (Its isohybrid MBR is written by the cdrom module around
    // it, from boot images this test does not have.)
    let files = vec![(
        "boot/vmlinuz".to_owned(),
        std::borrow::Cow::Owned(vec![2u8; 5000]),
    )];
    let opts = mkimage::iso9660::IsoOptions {
        volume_id: "PHASE_BOOT".into(),
        time: 1_700_000_000,
        ..Default::default()
    };
    let iso = mkimage::iso9660::build(files, &opts).unwrap().to_vec();
    let img = dir.path().join("boot.iso");
    std::fs::write(&img, &iso).unwrap();
    let fs = check(&img).fs.unwrap();
    assert_eq!(fs.label.as_deref(), Some("PHASE_BOOT"));
    assert!(fs.uuid.unwrap().starts_with("2023-11-14-"));
}

/// An XDR nvlist stream as `nvlist_pack(…, NV_ENCODE_XDR)` writes one:
/// each pair is its encoded size, decoded size, name, type, element count
/// and value, big-endian and 4-byte aligned.
struct Nvlist(Vec<u8>);

impl Nvlist {
    fn new() -> Self {
        // Encoding XDR, little-endian host; nvlist version 0, unique names.
        Nvlist(vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    }

    fn pair(&mut self, name: &str, kind: u32, value: &[u8]) -> &mut Self {
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend(name.as_bytes());
        p.resize(p.len().div_ceil(4) * 4, 0);
        p.extend(kind.to_be_bytes());
        p.extend(1u32.to_be_bytes());
        p.extend(value);
        let size = p.len() as u32 + 8;
        self.0.extend(size.to_be_bytes());
        self.0.extend((size + 16).to_be_bytes());
        self.0.extend(p);
        self
    }

    fn u64(&mut self, name: &str, v: u64) -> &mut Self {
        self.pair(name, 8, &v.to_be_bytes())
    }

    fn string(&mut self, name: &str, v: &str) -> &mut Self {
        let mut b = (v.len() as u32).to_be_bytes().to_vec();
        b.extend(v.as_bytes());
        b.resize(b.len().div_ceil(4) * 4, 0);
        self.pair(name, 9, &b)
    }

    fn list(&mut self, name: &str, inner: &Nvlist) -> &mut Self {
        let mut b = inner.0[4..].to_vec();
        b.extend([0; 8]);
        self.pair(name, 19, &b)
    }

    fn end(&self) -> Vec<u8> {
        let mut b = self.0.clone();
        b.extend([0; 8]);
        b
    }
}

/// The nvlist of a single-disk pool's label, in the order `zpool create`
/// writes it.
fn zfs_label(pool: &str, pool_guid: u64, guid: u64) -> Vec<u8> {
    let mut vdev = Nvlist::new();
    vdev.string("type", "disk")
        .u64("id", 0)
        .u64("guid", guid)
        .string("path", "/dev/vdb1")
        .u64("whole_disk", 1)
        .u64("metaslab_array", 256)
        .u64("metaslab_shift", 29)
        .u64("ashift", 12)
        .u64("asize", 64 << 20)
        .u64("is_log", 0)
        .u64("create_txg", 4);
    let mut features = Nvlist::new();
    features.pair("com.delphix:hole_birth", 0, &[]);
    Nvlist::new()
        .u64("version", 5000)
        .string("name", pool)
        .u64("state", 0)
        .u64("txg", 1234)
        .u64("pool_guid", pool_guid)
        .u64("errata", 0)
        .u64("hostid", 0x1234)
        .string("hostname", "builder")
        .u64("top_guid", guid)
        .u64("guid", guid)
        .u64("vdev_children", 1)
        .list("vdev_tree", &vdev)
        .list("features_for_read", &features)
        .end()
}

/// A 64 MiB device (blkid's minimum for ZFS) with labels L0 and L1, each
/// with the nvlist and four uberblocks (blkid wants that many).
fn zfs_disk(path: &Path, nvlist: &[u8]) {
    let file = File::create(path).unwrap();
    file.set_len(64 << 20).unwrap();
    for label in [0u64, 256 << 10] {
        file.write_all_at(nvlist, label + (16 << 10)).unwrap();
        for i in 0..4u64 {
            let mut ub = 0x00ba_b10cu64.to_le_bytes().to_vec();
            ub.extend(5000u64.to_le_bytes());
            ub.extend((1230 + i).to_le_bytes());
            file.write_all_at(&ub, label + (128 << 10) + i * 1024)
                .unwrap();
        }
    }
}

#[test]
fn a_zfs_label_built_from_the_format_agrees_with_blkid() {
    if tool("blkid", "ZFS probe").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("zfs.img");
    zfs_disk(&img, &zfs_label("rpool", 9_876_543_210_123_456_789, 4242));
    let ours = check(&img);
    let fs = ours.fs.unwrap();
    assert_eq!(fs.fstype, "zfs_member");
    assert_eq!(fs.label.as_deref(), Some("rpool"));
    assert_eq!(fs.uuid.as_deref(), Some("9876543210123456789"));
    let z = fs.zfs.unwrap();
    assert_eq!(
        (z.txg, z.state, z.guid, z.label),
        (Some(1234), Some(0), Some(4242), 0)
    );
    assert_eq!(z.hostname.as_deref(), Some("builder"));
    let member = probe_file(&img, 0, None, 512).fs;
    let spec = phase_init::plan::RootSpec::Zfs("rpool/ROOT/debian".into());
    assert!(probe::matches(&spec, "/dev/vdb1", member.as_ref(), None));
    assert!(!probe::matches(
        &phase_init::plan::RootSpec::Label("rpool".into()),
        "/dev/vdb1",
        member.as_ref(),
        None
    ));
}

#[test]
fn truncated_and_flipped_real_images_never_panic() {
    let Some(t) = tools(
        &["mkfs.ext4", "mkfs.vfat", "genisoimage", "sgdisk"],
        "hostile images",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let ext = image(dir.path(), "ext.img", 4 << 20);
    run(Command::new(&t[1]).args(["-q", "-F"]).arg(&ext));
    let fat = image(dir.path(), "fat.img", 2 << 20);
    run(Command::new(&t[2]).arg(&fat));
    let iso = dir.path().join("x.iso");
    run(Command::new(&t[3])
        .args(["-quiet", "-J", "-o"])
        .arg(&iso)
        .arg(&src));
    let gpt = image(dir.path(), "gpt.img", 2 << 20);
    run(Command::new(&t[4]).args(["-o", "-n", "1:0:0"]).arg(&gpt));
    let zfs = {
        let mut d = vec![0u8; 512 << 10];
        let l = zfs_label("tank", 1, 2);
        d[16 << 10..(16 << 10) + l.len()].copy_from_slice(&l);
        d
    };
    let mut images: Vec<Vec<u8>> = [ext, fat, iso, gpt]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    images.push(zfs);
    for bytes in &images {
        let whole = probe::probe_bytes(bytes, 512);
        // Every 509th length where the structures are, then 1000 more
        // spread over the whole image.
        let spread = (0..bytes.len()).step_by(bytes.len() / 1000 + 1);
        for len in (0..bytes.len().min(300_000)).step_by(509).chain(spread) {
            for ss in [512, 4096] {
                let p = probe::probe_bytes(&bytes[..len], ss);
                let _ = probe::render("/dev/x", &p, None);
            }
        }
        // Flip bytes where the structures are.
        for at in (0..bytes.len().min(70_000)).step_by(97) {
            let mut b = bytes.clone();
            b[at] ^= 0xFF;
            let _ = probe::probe_bytes(&b, 512);
        }
        assert!(whole.fs.is_some() || whole.table.is_some(), "{whole:?}");
    }
}
