//! ZFS vdev labels: the XDR-encoded nvlist 16 KiB into label L0 (at 0) or
//! L1 (at 256 KiB) names the pool this device belongs to. blkid calls such
//! a device `zfs_member`, its LABEL the pool name and its UUID the pool
//! GUID in decimal; `zpool import` finds the pool by the same fields.
//!
//! Only the top level of the nvlist is read (nested lists such as
//! `vdev_tree` are skipped by their encoded size), and only the pairs named
//! here. The labels at the device's end (L2, L3) and the uberblock ring are
//! not needed to name the pool.

use serde::Serialize;

use super::{Device, Filesystem, ProbeError, be32, text};

/// The nvlist area of a label: 16 KiB in, 112 KiB long.
const NVLIST_AT: u64 = 16 << 10;
const NVLIST_LEN: usize = 112 << 10;
const LABEL_SIZE: u64 = 256 << 10;
const DATA_TYPE_UINT64: u32 = 8;
const DATA_TYPE_STRING: u32 = 9;

/// What a vdev label says. A spare or cache device's label names no pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ZfsLabel {
    /// Which label was read: 0 or 1 (when L0 is damaged).
    pub label: u8,
    /// The pool's name (`name`).
    pub pool: Option<String>,
    pub pool_guid: Option<u64>,
    /// This vdev's GUID (`guid`, blkid's UUID_SUB).
    pub guid: Option<u64>,
    /// The transaction group the label was last written in.
    pub txg: Option<u64>,
    /// The pool state ([`state_name`]).
    pub state: Option<u64>,
    /// The pool's on-disk version (5000 with feature flags).
    pub version: Option<u64>,
    /// The host that last imported the pool.
    pub hostname: Option<String>,
}

/// The name of a `pool_state_t` value, as `zpool import` prints it.
pub fn state_name(state: u64) -> &'static str {
    match state {
        0 => "ACTIVE",
        1 => "EXPORTED",
        2 => "DESTROYED",
        3 => "SPARE",
        4 => "L2CACHE",
        5 => "UNINITIALIZED",
        6 => "UNAVAIL",
        7 => "POTENTIALLY_ACTIVE",
        _ => "UNKNOWN",
    }
}

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let mut error = None;
    for label in 0..2u8 {
        let at = u64::from(label) * LABEL_SIZE + NVLIST_AT;
        // The stream header (XDR encoding, either host byte order) and the
        // nvlist's version (0) and flags (unique names) tell a label from
        // anything else before 112 KiB are read.
        let Some(head) = dev.read(at, 12) else {
            continue;
        };
        if head[0] != 1 || head[1] > 1 || be32(&head, 4) != 0 || be32(&head, 8) != 1 {
            continue;
        }
        // A device too small for the whole area still gets its nvlist read
        // (the head read proved `at + 12` fits).
        let len = NVLIST_LEN.min(usize::try_from(dev.size() - at).unwrap_or(NVLIST_LEN));
        let Some(list) = dev.read(at, len) else {
            continue;
        };
        match parse(&list, label) {
            Ok(z) => {
                return Ok(Some(Filesystem {
                    fstype: "zfs_member",
                    label: z.pool.clone(),
                    uuid: z.pool_guid.filter(|&g| g != 0).map(|g| g.to_string()),
                    size: None,
                    zfs: Some(z),
                }));
            }
            Err(e) => error = error.or(Some(e)),
        }
    }
    error.map_or(Ok(None), Err)
}

/// The top-level pairs of an XDR nvlist stream (header already checked).
/// Each pair is: encoded size, decoded size, name (length + bytes padded to
/// 4), type, element count, value.
fn parse(list: &[u8], label: u8) -> Result<ZfsLabel, ProbeError> {
    let err = |offset, what| {
        Err(ProbeError::ZfsNvlist {
            label,
            offset,
            what,
        })
    };
    let mut z = ZfsLabel {
        label,
        ..Default::default()
    };
    let mut pos = 12;
    // Every pass moves on by at least 12 bytes of a 112 KiB buffer.
    loop {
        let size = be32(list, pos) as usize;
        if size == 0 {
            break;
        }
        let Some(pair) = list.get(pos..pos.saturating_add(size)) else {
            return err(pos, "a pair runs past the label");
        };
        let name_len = be32(pair, 8) as usize;
        let value = (name_len.saturating_add(3) & !3).saturating_add(12);
        if size < 12 || !size.is_multiple_of(4) || value.saturating_add(8) > size {
            return err(pos, "a pair's sizes do not add up");
        }
        let name = &pair[12..12 + name_len];
        let kind = be32(pair, value);
        let body = &pair[value + 8..];
        let number = || {
            let b: [u8; 8] = super::arr(body, 0);
            (kind == DATA_TYPE_UINT64 && body.len() >= 8).then(|| u64::from_be_bytes(b))
        };
        let string = || {
            let len = be32(body, 0) as usize;
            let s = body.get(4..4usize.saturating_add(len));
            s.filter(|_| kind == DATA_TYPE_STRING).and_then(text)
        };
        match name {
            b"name" => z.pool = string(),
            b"hostname" => z.hostname = string(),
            b"pool_guid" => z.pool_guid = number(),
            b"guid" => z.guid = number(),
            b"txg" => z.txg = number(),
            b"state" => z.state = number(),
            b"version" => z.version = number(),
            _ => {}
        }
        pos += size;
    }
    // Every label names its own vdev; a list without that is not a label.
    if z.guid.is_none() {
        return err(pos, "no vdev guid");
    }
    Ok(z)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::probe_bytes;
    use super::*;

    /// An XDR nvlist stream, as `nvlist_pack(…, NV_ENCODE_XDR)` writes it.
    #[derive(Default)]
    pub struct Nvlist(pub Vec<u8>);

    impl Nvlist {
        pub fn new() -> Self {
            Nvlist(vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        }

        fn pair(&mut self, name: &str, kind: u32, value: &[u8]) -> &mut Self {
            let mut p = Vec::new();
            p.extend((name.len() as u32).to_be_bytes());
            p.extend(name.as_bytes());
            p.resize(p.len().div_ceil(4) * 4, 0);
            p.extend(kind.to_be_bytes());
            p.extend(1u32.to_be_bytes());
            p.extend(value);
            let size = (p.len() + 8) as u32;
            self.0.extend(size.to_be_bytes());
            // The decoded size is the native nvpair's; nothing reads it.
            self.0.extend((size + 16).to_be_bytes());
            self.0.extend(p);
            self
        }

        pub fn u64(&mut self, name: &str, v: u64) -> &mut Self {
            self.pair(name, DATA_TYPE_UINT64, &v.to_be_bytes())
        }

        pub fn string(&mut self, name: &str, v: &str) -> &mut Self {
            let mut b = (v.len() as u32).to_be_bytes().to_vec();
            b.extend(v.as_bytes());
            b.resize(b.len().div_ceil(4) * 4, 0);
            self.pair(name, DATA_TYPE_STRING, &b)
        }

        /// A nested nvlist (type 19): version, flags, pairs, end mark.
        pub fn list(&mut self, name: &str, inner: &Nvlist) -> &mut Self {
            let mut b = inner.0[4..].to_vec();
            b.extend([0; 8]);
            self.pair(name, 19, &b)
        }

        pub fn end(&mut self) -> Vec<u8> {
            let mut b = self.0.clone();
            b.extend([0; 8]);
            b
        }
    }

    fn label() -> Vec<u8> {
        let mut child = Nvlist::new();
        child.string("type", "disk").u64("guid", 99);
        Nvlist::new()
            .u64("version", 5000)
            .string("name", "tank")
            .u64("state", 1)
            .u64("txg", 42)
            .u64("pool_guid", 1234567890123)
            .string("hostname", "host")
            .u64("top_guid", 7)
            .list("vdev_tree", &child)
            .u64("guid", 7)
            .end()
    }

    fn disk(l0: &[u8], l1: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 512 << 10];
        d[16 << 10..(16 << 10) + l0.len()].copy_from_slice(l0);
        d[272 << 10..(272 << 10) + l1.len()].copy_from_slice(l1);
        d
    }

    #[test]
    fn reads_the_pool_from_l0_or_l1() {
        let want = ZfsLabel {
            label: 0,
            pool: Some("tank".into()),
            pool_guid: Some(1234567890123),
            guid: Some(7),
            txg: Some(42),
            state: Some(1),
            version: Some(5000),
            hostname: Some("host".into()),
        };
        let fs = probe_bytes(&disk(&label(), &[]), 512).fs.unwrap();
        assert_eq!(fs.fstype, "zfs_member");
        assert_eq!(fs.label.as_deref(), Some("tank"));
        assert_eq!(fs.uuid.as_deref(), Some("1234567890123"));
        assert_eq!(fs.zfs.as_ref(), Some(&want));
        assert_eq!(state_name(fs.zfs.unwrap().state.unwrap()), "EXPORTED");
        // L0 damaged: L1 speaks.
        let mut broken = label();
        broken[12..16].copy_from_slice(&0xFFFF_FF00u32.to_be_bytes());
        let fs = probe_bytes(&disk(&broken, &label()), 512).fs.unwrap();
        assert_eq!(fs.zfs.unwrap().label, 1);
        // Both damaged: an error, no member.
        let p = probe_bytes(&disk(&broken, &broken), 512);
        assert_eq!(p.fs, None);
        assert_eq!(
            p.errors,
            [ProbeError::ZfsNvlist {
                label: 0,
                offset: 12,
                what: "a pair runs past the label"
            }]
        );
    }

    #[test]
    fn hostile_pairs_are_errors() {
        for size in [4u32, 13, 16] {
            let mut l = label();
            l[12..16].copy_from_slice(&size.to_be_bytes());
            let p = probe_bytes(&disk(&l, &[]), 512);
            assert!(
                matches!(p.errors[..], [ProbeError::ZfsNvlist { .. }]),
                "{size}: {p:?}"
            );
        }
        // A name length that points past the pair.
        let mut l = label();
        l[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(!probe_bytes(&disk(&l, &[]), 512).errors.is_empty());
        // A value of the wrong type is ignored, not misread.
        let odd = Nvlist::new().string("pool_guid", "x").u64("guid", 1).end();
        let fs = probe_bytes(&disk(&odd, &[]), 512).fs.unwrap();
        assert_eq!((fs.uuid, fs.zfs.unwrap().pool_guid), (None, None));
    }
}
