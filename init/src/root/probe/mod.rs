//! Block-device probes: which partition table and which filesystem a device
//! holds, named the way util-linux's `blkid` names them (`TYPE`, `LABEL`,
//! `UUID`, `PTTYPE`, `PTUUID`, `PARTUUID`, `PARTLABEL`), so that a `root=`
//! written for dracut finds the same device here.
//!
//! # What a caller reads
//!
//! Nothing here does I/O. A caller wraps the device in a [`Device`]: its
//! size in bytes, its logical sector size (`/sys/block/<dev>/queue/
//! logical_block_size`; 512 for an image file) and a callback
//! `read(offset, len)` that returns exactly `len` bytes from `offset`, or
//! `None` when it cannot (an I/O error; a short read is `None` too). The
//! probes only ask for ranges inside `[0, size)`; each request is at most
//! [`MAX_READ`] bytes and all of them together at most [`BUDGET`], so a
//! hostile device cannot make the init read or allocate more than that. What
//! a probe asks for, at most:
//!
//! | format | bytes |
//! |---|---|
//! | MBR | sector 0; one sector per extended boot record, ≤ 255 of them |
//! | GPT | the header at LBA 1; the entry array it names, ≤ [`gpt::MAX_ARRAY`] |
//! | ext2/3/4 | 512 bytes at 1 KiB |
//! | squashfs | 96 bytes at 0 |
//! | erofs | 128 bytes at 1 KiB; the rest of its first block for the checksum |
//! | vfat | sector 0; the root directory, ≤ 256 KiB, and the FAT entries of its chain; the FSInfo sector |
//! | iso9660 | the volume descriptors from 32 KiB, ≤ 16 sectors of 2 KiB |
//! | zfs | 12 bytes at 16 KiB, then the nvlist area (112 KiB, or to the end of a smaller device) of label L0 (at 16 KiB) or L1 (at 272 KiB) |
//!
//! Reads are small and repeat sector 0 a few times; the page cache makes
//! that free, so the callback can be a plain `pread`.
//!
//! # Differences from blkid, on purpose
//!
//! - GPT follows the kernel (`block/partitions/efi.c`), not blkid: only the
//!   primary header is read, as the kernel does without `gpt` on its command
//!   line, so a disk whose primary header is broken has no partitions here
//!   either; the entry size must be 128; entries past the disk's end and
//!   numbers above 255 are left out.
//! - ZFS needs no uberblocks and no 64 MiB minimum: the label's nvlist
//!   alone names the pool.
//! - Absurd squashfs and GPT geometry, a bad erofs checksum and an MBR chain
//!   that loops are errors ([`ProbeError`]) rather than silence.
pub mod erofs;
pub mod ext4;
pub mod gpt;
pub mod iso9660;
pub mod mbr;
pub mod squashfs;
pub mod vfat;
pub mod zfs;

use std::fmt::Write as _;

use serde::Serialize;
use thiserror::Error;

use crate::plan::RootSpec;

/// What the probes may read from one device, in all.
pub const BUDGET: usize = 4 << 20;
/// The largest single read a probe asks for (the ZFS nvlist and the GPT
/// entry array are the big ones).
pub const MAX_READ: usize = 512 << 10;

/// A device as the probes see it: a size, a sector size and a way to read.
pub struct Device<'a> {
    size: u64,
    sector: u64,
    left: usize,
    read: &'a mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
}

impl<'a> Device<'a> {
    /// `sector_size` is the logical block size; anything but 512, 1024,
    /// 2048 or 4096 is taken as 512.
    pub fn new(
        size: u64,
        sector_size: u32,
        read: &'a mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
    ) -> Device<'a> {
        let sector = match sector_size {
            1024 | 2048 | 4096 => u64::from(sector_size),
            _ => 512,
        };
        Device {
            size,
            sector,
            left: BUDGET,
            read,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    /// `len` bytes at `offset`, or `None` past the end, past the budget or
    /// when the callback fails.
    fn read(&mut self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let end = offset.checked_add(len as u64)?;
        if end > self.size || len > MAX_READ || len > self.left {
            return None;
        }
        self.left -= len;
        (self.read)(offset, len).filter(|b| b.len() == len)
    }
}

/// A filesystem (or pool member) signature and what it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    /// blkid's `TYPE`: `ext2`, `ext3`, `ext4`, `jbd`, `squashfs`,
    /// `squashfs3`, `erofs`, `vfat`, `iso9660` or `zfs_member`.
    pub fstype: &'static str,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// The bytes the image occupies where its superblock says so outright
    /// (squashfs, erofs): the range a verifier hashes.
    pub size: Option<u64>,
    /// For `zfs_member`: what the vdev label says of the pool.
    pub zfs: Option<zfs::ZfsLabel>,
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// blkid's `PTTYPE`: `gpt` or `dos`.
    pub kind: &'static str,
    /// blkid's `PTUUID`: the GPT disk GUID, or the MBR disk signature as 8
    /// hex digits (none when it is zero).
    pub id: Option<String>,
    pub partitions: Vec<Partition>,
}

/// One partition as the kernel numbers it (`/dev/vda2` is number 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    /// Offset and size in bytes.
    pub offset: u64,
    pub size: u64,
    /// The GPT partition GUID, or `<disk signature>-<number, 2 hex digits>`
    /// for MBR (none when the signature is zero, as blkid has it).
    pub partuuid: Option<String>,
    /// The GPT partition name; MBR has none.
    pub partlabel: Option<String>,
    /// blkid's `PART_ENTRY_TYPE`: the GPT type GUID, or `0x83` for MBR.
    pub part_type: String,
}

/// Everything known of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub fs: Option<Filesystem>,
    pub table: Option<Table>,
    /// Signatures that were found but did not hold together.
    pub errors: Vec<ProbeError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    #[error("reading the GPT header at byte {offset}")]
    GptReadHeader { offset: u64 },
    #[error("the GPT header at LBA 1 has no \"EFI PART\" signature")]
    GptSignature,
    #[error("the GPT header at LBA 1: {what} is {value}")]
    GptHeader { what: &'static str, value: u64 },
    #[error("the GPT header's CRC32 is {stored:#010x}, its bytes give {computed:#010x}")]
    GptHeaderCrc { stored: u32, computed: u32 },
    #[error("reading the GPT entry array of {count} entries at LBA {lba}")]
    GptReadEntries { lba: u64, count: u32 },
    #[error("the GPT entry array's CRC32 is {stored:#010x}, its bytes give {computed:#010x}")]
    GptEntriesCrc { stored: u32, computed: u32 },
    #[error("the protective MBR entry {index} starts at LBA {lba}, not 1")]
    ProtectiveMbr { index: usize, lba: u32 },
    #[error("the MBR extended partition chain comes back to LBA {lba}")]
    MbrChainLoop { lba: u64 },
    #[error("the squashfs superblock's {what} is {value}")]
    Squashfs { what: &'static str, value: u64 },
    #[error("the erofs superblock's CRC32C is {stored:#010x}, its bytes give {computed:#010x}")]
    ErofsCrc { stored: u32, computed: u32 },
    #[error("the FAT32 FSInfo sector {sector} has no FSInfo signature")]
    FatInfo { sector: u16 },
    #[error("the ZFS label L{label}'s nvlist: {what} at byte {offset}")]
    ZfsNvlist {
        label: u8,
        offset: usize,
        what: &'static str,
    },
    #[error("more than one filesystem signature: {}", types.join(", "))]
    Ambivalent { types: Vec<&'static str> },
}

/// One filesystem probe: `Ok(None)` when its signature is absent.
type FsProbe = fn(&mut Device<'_>) -> Result<Option<Filesystem>, ProbeError>;

/// The filesystem probes in blkid's order, which decides what a device with
/// two signatures is.
const FS_PROBES: [FsProbe; 6] = [
    vfat::probe,
    ext4::probe,
    iso9660::probe,
    zfs::probe,
    squashfs::probe,
    erofs::probe,
];

/// Probes the device for a filesystem and a partition table.
pub fn probe(dev: &mut Device<'_>) -> Probe {
    let mut out = Probe::default();
    let mut found = Vec::new();
    for fs_probe in FS_PROBES {
        match fs_probe(dev) {
            Ok(Some(fs)) => {
                // A pool member ends the search, as RAID members do for
                // blkid: what follows it on the device belongs to the pool.
                let member = fs.fstype == "zfs_member";
                found.push(fs);
                if member {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => out.errors.push(e),
        }
    }
    // blkid reports nothing for a device with two signatures (unless both
    // are iso9660-like, which only one of ours is): mounting either would be
    // a guess.
    if found.len() > 1 {
        let types = found.iter().map(|f| f.fstype).collect();
        out.errors.push(ProbeError::Ambivalent { types });
    } else {
        out.fs = found.pop();
    }
    match table(dev) {
        Ok(t) => out.table = t,
        Err(e) => out.errors.push(e),
    }
    out
}

/// Probes only the partition table: GPT behind a protective MBR, else MBR.
pub fn table(dev: &mut Device<'_>) -> Result<Option<Table>, ProbeError> {
    let Some(s0) = dev.read(0, 512) else {
        return Ok(None);
    };
    if s0[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let entry = |i: usize| &s0[446 + 16 * i..462 + 16 * i];
    if let Some(index) = (0..4).find(|&i| entry(i)[4] == 0xEE) {
        // The kernel takes a GPT only behind an 0xEE entry at LBA 1
        // (protective or hybrid MBR), and an MBR holding one is no MBR.
        let lba = le32(entry(index), 8);
        if lba != 1 {
            return Err(ProbeError::ProtectiveMbr { index, lba });
        }
        return gpt::probe(dev).map(Some);
    }
    // A FAT boot sector ends in 55 AA too; blkid takes it for FAT.
    if vfat::valid(&s0).is_some() {
        return Ok(None);
    }
    mbr::probe(dev, &s0)
}

/// Probes an image held in memory (tests, fuzzing, a file read whole).
pub fn probe_bytes(image: &[u8], sector_size: u32) -> Probe {
    let mut read = |offset: u64, len: usize| {
        let at = usize::try_from(offset).ok()?;
        image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
    };
    probe(&mut Device::new(image.len() as u64, sector_size, &mut read))
}

/// The device as `blkid` prints it:
/// `/dev/vda1: LABEL="root" UUID="…" TYPE="ext4" PARTUUID="…"`, with the
/// tags this module knows (LABEL, UUID, UUID_SUB, TYPE, PTUUID, PTTYPE,
/// PARTLABEL, PARTUUID) in blkid's order. `part` is the device's entry in its
/// disk's table, when it is a partition.
pub fn render(device: &str, probe: &Probe, part: Option<&Partition>) -> String {
    let mut tags: Vec<(&str, &str)> = Vec::new();
    let sub;
    if let Some(fs) = &probe.fs {
        tags.extend(fs.label.as_deref().map(|v| ("LABEL", v)));
        tags.extend(fs.uuid.as_deref().map(|v| ("UUID", v)));
        sub = fs.zfs.as_ref().and_then(|z| z.guid).map(|g| g.to_string());
        tags.extend(sub.as_deref().map(|v| ("UUID_SUB", v)));
        tags.push(("TYPE", fs.fstype));
    }
    if let Some(t) = &probe.table {
        tags.extend(t.id.as_deref().map(|v| ("PTUUID", v)));
        tags.push(("PTTYPE", t.kind));
    }
    if let Some(p) = part {
        tags.extend(p.partlabel.as_deref().map(|v| ("PARTLABEL", v)));
        tags.extend(p.partuuid.as_deref().map(|v| ("PARTUUID", v)));
    }
    let mut line = format!("{device}:");
    for (key, value) in tags {
        let _ = write!(line, " {key}=\"");
        // blkid's safe_print: quotes and backslashes escaped, control
        // characters as ^X.
        for c in value.chars() {
            match c {
                '"' | '\\' => line.extend(['\\', c]),
                '\x7f' => line.push_str("^?"),
                c if c < ' ' => line.extend(['^', char::from(c as u8 + b'@')]),
                c => line.push(c),
            }
        }
        line.push('"');
    }
    line
}

/// Whether a device answers to `root=`. `device` is its path (`/dev/vda2`),
/// `fs` what [`probe`] found on it and `part` its entry in its disk's table.
///
/// UUIDs and PARTUUIDs compare without regard to case, labels exactly, as
/// udev's `/dev/disk/by-*` links do; `root=/dev/disk/by-label/…` (and
/// by-uuid, by-partuuid, by-partlabel, udev's `\x2f` escapes undone) is the
/// same as the tag, since no udev makes those links here. A ZFS pool member
/// answers to no LABEL or UUID (udev makes no link for one) but to
/// `zfs:<pool>/…` naming its pool, and to `zfs:AUTO` whatever its pool.
pub fn matches(
    spec: &RootSpec,
    device: &str,
    fs: Option<&Filesystem>,
    part: Option<&Partition>,
) -> bool {
    let pool = fs
        .and_then(|f| f.zfs.as_ref())
        .and_then(|z| z.pool.as_deref());
    let fs = fs.filter(|f| f.fstype != "zfs_member");
    let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
    match spec {
        RootSpec::Label(l) => fs.and_then(|f| f.label.as_deref()) == Some(l),
        RootSpec::Uuid(u) => same(fs.and_then(|f| f.uuid.as_deref()), u),
        RootSpec::PartUuid(u) => same(part.and_then(|p| p.partuuid.as_deref()), u),
        RootSpec::PartLabel(l) => part.and_then(|p| p.partlabel.as_deref()) == Some(l),
        RootSpec::Device(path) => {
            let link = |dir: &str| {
                path.strip_prefix("/dev/disk/")
                    .and_then(|p| p.strip_prefix(dir))
                    .map(unescape)
            };
            let tagged = if let Some(v) = link("by-label/") {
                RootSpec::Label(v)
            } else if let Some(v) = link("by-uuid/") {
                RootSpec::Uuid(v)
            } else if let Some(v) = link("by-partuuid/") {
                RootSpec::PartUuid(v)
            } else if let Some(v) = link("by-partlabel/") {
                RootSpec::PartLabel(v)
            } else {
                return path == device;
            };
            matches(&tagged, device, fs, part)
        }
        RootSpec::Zfs(ds) => pool.is_some_and(|p| ds.split('/').next() == Some(p)),
        RootSpec::ZfsAuto => pool.is_some(),
        // A live medium is found by the spec inside `live:`.
        RootSpec::Live(medium) => matches(medium, device, fs, part),
    }
}

/// Undoes udev's `\xNN` escapes in a `/dev/disk/by-*` name.
fn unescape(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if b[i] == b'\\' && b[i + 1] == b'x' => {
                out.push(byte);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `N` bytes at `at`, zeros where `b` is too short: callers read fixed-size
/// buffers first, so the zeros only ever stand for bytes a hostile length
/// pointed past.
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0; N];
    if let Some(s) = b.get(at..at.saturating_add(N)) {
        a.copy_from_slice(s);
    }
    a
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(arr(b, at))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(arr(b, at))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(arr(b, at))
}

/// A label as blkid keeps one: up to the first NUL, trailing white space
/// dropped; `None` when nothing is left.
fn text(b: &[u8]) -> Option<String> {
    let b = b.split(|&c| c == 0).next().unwrap_or_default();
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    (!s.is_empty()).then(|| s.to_owned())
}

/// UTF-16 code units as text, up to the first NUL, trailing white space
/// dropped (blkid's `set_utf8label`).
fn utf16(units: impl IntoIterator<Item = u16>) -> Option<String> {
    let s: String = char::decode_utf16(units.into_iter().take_while(|&u| u != 0))
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    text(s.as_bytes())
}

/// A big-endian UUID as `01234567-89ab-cdef-0123-456789abcdef`; `None` when
/// all zero, as blkid leaves an empty UUID out.
fn uuid(b: [u8; 16]) -> Option<String> {
    if b == [0; 16] {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    Some(s)
}

/// A GUID as stored by EFI (the first three fields little-endian).
fn guid(mut b: [u8; 16]) -> String {
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    uuid(b).unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4(label: &str, uuid: &str) -> Filesystem {
        Filesystem {
            fstype: "ext4",
            label: Some(label.into()),
            uuid: Some(uuid.into()),
            size: None,
            zfs: None,
        }
    }

    fn part() -> Partition {
        Partition {
            number: 2,
            offset: 1 << 20,
            size: 1 << 20,
            partuuid: Some("0a1b2c3d-02".into()),
            partlabel: Some("my root".into()),
            part_type: "0x83".into(),
        }
    }

    #[test]
    fn matcher_follows_udev() {
        let fs = ext4("root", "6F1c0e1e-0000-4000-8000-00000000abcd");
        let p = part();
        let yes = [
            RootSpec::Label("root".into()),
            RootSpec::Uuid("6f1c0e1e-0000-4000-8000-00000000ABCD".into()),
            RootSpec::PartUuid("0A1B2C3D-02".into()),
            RootSpec::PartLabel("my root".into()),
            RootSpec::Device("/dev/vda2".into()),
            RootSpec::Device("/dev/disk/by-label/root".into()),
            RootSpec::Device("/dev/disk/by-partlabel/my\\x20root".into()),
            RootSpec::Device("/dev/disk/by-partuuid/0a1b2c3d-02".into()),
            RootSpec::Device("/dev/disk/by-uuid/6f1c0e1e-0000-4000-8000-00000000abcd".into()),
        ];
        for spec in &yes {
            assert!(matches(spec, "/dev/vda2", Some(&fs), Some(&p)), "{spec:?}");
        }
        let no = [
            RootSpec::Label("ROOT".into()),
            RootSpec::Uuid("6f1c0e1e".into()),
            RootSpec::PartUuid("0a1b2c3d-2".into()),
            RootSpec::PartLabel("My root".into()),
            RootSpec::Device("/dev/vda".into()),
            RootSpec::Device("/dev/disk/by-label/boot".into()),
            RootSpec::Zfs("root/x".into()),
            RootSpec::ZfsAuto,
        ];
        for spec in &no {
            assert!(!matches(spec, "/dev/vda2", Some(&fs), Some(&p)), "{spec:?}");
        }
        // Nothing probed, nothing but the path matches.
        assert!(!matches(&yes[0], "/dev/vda2", None, None));
        assert!(!matches(&yes[2], "/dev/vda2", Some(&fs), None));
    }

    #[test]
    fn a_pool_member_answers_to_its_pool_only() {
        let member = Filesystem {
            fstype: "zfs_member",
            label: Some("tank".into()),
            uuid: Some("1234".into()),
            size: None,
            zfs: Some(zfs::ZfsLabel {
                pool: Some("tank".into()),
                pool_guid: Some(1234),
                ..Default::default()
            }),
        };
        let m = |s: RootSpec| matches(&s, "/dev/vdb", Some(&member), None);
        assert!(m(RootSpec::Zfs("tank/ROOT/debian".into())));
        assert!(m(RootSpec::Zfs("tank".into())));
        assert!(m(RootSpec::ZfsAuto));
        assert!(!m(RootSpec::Zfs("tanker/root".into())));
        assert!(!m(RootSpec::Label("tank".into())));
        assert!(!m(RootSpec::Uuid("1234".into())));
    }

    #[test]
    fn render_quotes_as_blkid_does() {
        let probe = Probe {
            fs: Some(ext4("a \"b\\c\"\u{1}", "u")),
            ..Default::default()
        };
        assert_eq!(
            render("/dev/vda2", &probe, Some(&part())),
            r#"/dev/vda2: LABEL="a \"b\\c\"^A" UUID="u" TYPE="ext4" PARTLABEL="my root" PARTUUID="0a1b2c3d-02""#
        );
        let disk = Probe {
            table: Some(Table {
                kind: "gpt",
                id: Some("g".into()),
                partitions: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(
            render("/dev/vda", &disk, None),
            r#"/dev/vda: PTUUID="g" PTTYPE="gpt""#
        );
        assert_eq!(render("/dev/vdc", &Probe::default(), None), "/dev/vdc:");
    }

    #[test]
    fn reads_stay_inside_the_device_and_the_budget() {
        let mut calls = 0;
        let mut read = |_: u64, len: usize| {
            calls += 1;
            Some(vec![0; len])
        };
        let mut dev = Device::new(1 << 40, 4096, &mut read);
        assert_eq!(dev.sector_size(), 4096);
        assert!(dev.read((1 << 40) - 1, 2).is_none());
        assert!(dev.read(u64::MAX, 2).is_none());
        assert!(dev.read(0, MAX_READ + 1).is_none());
        let mut total = 0;
        while dev.read(total as u64, MAX_READ).is_some() {
            total += MAX_READ;
        }
        assert_eq!(total, BUDGET);
        assert_eq!(calls, BUDGET / MAX_READ);
        // A callback that returns the wrong length is a failed read.
        let mut short = |_: u64, len: usize| Some(vec![0; len - 1]);
        assert!(Device::new(4096, 512, &mut short).read(0, 512).is_none());
        // Unusual sector sizes fall back to 512.
        let mut none = |_: u64, _: usize| None;
        assert_eq!(Device::new(0, 520, &mut none).sector_size(), 512);
    }

    #[test]
    fn helpers() {
        assert_eq!(text(b"root  \0junk"), Some("root".into()));
        assert_eq!(text(b"   "), None);
        assert_eq!(
            utf16([0x41, 0xD83D, 0xDE00, 0x20, 0, 0x42]),
            Some("A😀".into())
        );
        assert_eq!(uuid([0; 16]), None);
        assert_eq!(
            guid([
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(unescape("a\\x2fb\\x2"), "a/b\\x2");
        assert_eq!(le32(&[1, 2], 0), 0);
    }
}
