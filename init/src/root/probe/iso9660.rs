//! ISO 9660 (ECMA-119) volume descriptors from sector 16: the primary
//! descriptor's volume id as LABEL, or the Joliet one as blkid prefers it,
//! and the UUID blkid makes from the volume's modification (else creation)
//! date, `YYYY-MM-DD-HH-MM-SS-CC`.

use super::{Device, Filesystem, ProbeError, text, utf16};

const FIRST: u64 = 16 * 2048;
/// Descriptors read before giving up on a terminator (blkid's bound).
const MAX_DESCRIPTORS: u64 = 16;

pub fn probe(dev: &mut Device<'_>) -> Result<Option<Filesystem>, ProbeError> {
    let Some(first) = dev.read(FIRST, 2048) else {
        return Ok(None);
    };
    let found = |label, uuid| {
        Ok(Some(Filesystem {
            fstype: "iso9660",
            label,
            uuid,
            size: None,
            zfs: None,
        }))
    };
    if first[9..14] == *b"CDROM" {
        // High Sierra, ISO 9660's predecessor: a label and nothing else.
        return found(text(&first[48..80]), None);
    }
    if first[1..6] != *b"CD001" {
        return Ok(None);
    }
    let (mut pvd, mut joliet) = (None, None);
    for i in 0..MAX_DESCRIPTORS {
        let d = if i == 0 {
            first.clone()
        } else {
            match dev.read(FIRST + i * 2048, 2048) {
                Some(d) => d,
                None => break,
            }
        };
        match d[0] {
            0xFF => break,
            1 if pvd.is_none() => pvd = Some(d),
            // A supplementary descriptor is Joliet when its escape
            // sequence names UCS-2 level 1, 2 or 3.
            2 if joliet.is_none() && matches!(&d[88..91], b"%/@" | b"%/C" | b"%/E") => {
                joliet = Some(d)
            }
            _ => {}
        }
        if pvd.is_some() && joliet.is_some() {
            break;
        }
    }
    let Some(pvd) = pvd else {
        return Ok(None);
    };
    let label = match &joliet {
        Some(j) => {
            let units: Vec<u16> = j[40..72]
                .chunks_exact(2)
                .map(|u| u16::from_be_bytes([u[0], u[1]]))
                .collect();
            utf16(merge(&units, &pvd[40..72]).unwrap_or(units))
        }
        None => text(&pvd[40..72]),
    };
    found(label, date_uuid(&pvd))
}

/// Joliet holds 16 UTF-16 characters, the primary descriptor 32 ASCII
/// ones with `_` for what ASCII lacks. When the Joliet name is the primary
/// one's prefix (but for `_` and case), blkid rebuilds the whole name: the
/// Joliet characters, then the primary name's tail.
fn merge(joliet: &[u16], ascii: &[u8]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(ascii.len() + 1);
    let (mut a, mut u) = (0, 0);
    while u < joliet.len() && a < ascii.len() {
        let mut j = joliet[u];
        // A surrogate pair stands for one ASCII character.
        if (0xD800..0xDC00).contains(&j)
            && joliet
                .get(u + 1)
                .is_some_and(|n| (0xDC00..0xE000).contains(n))
        {
            out.push(j);
            u += 1;
            j = joliet[u];
        }
        let c = ascii[a];
        out.push(if c == b'_' {
            j
        } else if j == u16::from(b'_') {
            c.into()
        } else if j < 0x100 && c.eq_ignore_ascii_case(&(j as u8)) {
            if c.is_ascii_uppercase() { j } else { c.into() }
        } else {
            return None;
        });
        a += 1;
        u += 1;
    }
    out.extend(ascii[a..].iter().map(|&c| u16::from(c)));
    Some(out)
}

/// blkid's UUID from a PVD: the modification date, or the creation date
/// when that is unset (all `0` digits, zero offset).
fn date_uuid(pvd: &[u8]) -> Option<String> {
    let unset = |d: &[u8]| d[..16].iter().all(|&c| c == b'0') && d[16] == 0;
    let (created, modified) = (&pvd[813..830], &pvd[830..847]);
    let d = if !unset(modified) {
        modified
    } else if !unset(created) {
        created
    } else {
        return None;
    };
    if d[..16] == [0; 16] {
        return None;
    }
    let mut s = String::with_capacity(22);
    for (i, &c) in d[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10 | 12 | 14) {
            s.push('-');
        }
        s.push(char::from(c));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        let mut u: Vec<u16> = s.encode_utf16().collect();
        u.resize(16, 0x20);
        u
    }

    fn ascii(s: &str) -> Vec<u8> {
        let mut a = s.as_bytes().to_vec();
        a.resize(32, b' ');
        a
    }

    fn merged(j: &str, a: &str) -> Option<String> {
        merge(&units(j), &ascii(a)).and_then(utf16)
    }

    #[test]
    fn joliet_and_primary_names_merge_as_blkid_merges_them() {
        let long = "A_VERY_LONG_VOLUME_LABEL_OF_32CH";
        assert_eq!(merged("A_VERY_LONG_VOLU", long).as_deref(), Some(long));
        assert_eq!(
            merged("Ünïcode name", "_N_CODE_NAME").as_deref(),
            Some("Ünïcode name")
        );
        assert_eq!(merged("lower", "LOWER").as_deref(), Some("lower"));
        assert_eq!(merged("other", "LOWER"), None);
        assert_eq!(merged("😀x", "_X").as_deref(), Some("😀x"));
    }

    #[test]
    fn the_uuid_comes_from_the_dates() {
        let mut pvd = vec![0u8; 2048];
        pvd[813..829].copy_from_slice(b"2024010203040506");
        pvd[830..846].copy_from_slice(b"0000000000000000");
        assert_eq!(date_uuid(&pvd).as_deref(), Some("2024-01-02-03-04-05-06"));
        pvd[846] = 4; // a time zone makes the zero date a date
        assert_eq!(date_uuid(&pvd).as_deref(), Some("0000-00-00-00-00-00-00"));
        pvd[830..847].fill(0);
        assert_eq!(date_uuid(&pvd), None);
    }
}
