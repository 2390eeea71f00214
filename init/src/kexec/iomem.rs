//! `/proc/iomem`: where the System RAM is, and which parts of it are taken.
//!
//! Each line is `start-end : name` (hexadecimal, `end` inclusive), indented
//! two spaces per level of nesting. Top-level `System RAM` entries are the
//! machine's RAM; what is nested in them (`Kernel code`, `Kernel data`,
//! `reserved` for memblock reservations such as firmware tables, the DTB and
//! the current initrd, `Crash kernel`) is left alone when placing the next
//! kernel's segments: the kernel's own memory would be free at the jump, but
//! a reservation may be firmware's (GIC tables, UEFI) and stays live across
//! kexec, and RAM is plentiful enough not to need the difference.

use super::{KexecError, Region};

/// One line of `/proc/iomem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub region: Region,
    pub name: String,
    /// 0 for top-level entries.
    pub depth: usize,
}

/// Parses the whole file; a malformed line is an error rather than a line
/// skipped, since a missed reservation could be overwritten.
pub fn parse(text: &str) -> Result<Vec<Resource>, KexecError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || KexecError::Iomem {
            line: index + 1,
            text: line.to_owned(),
        };
        let indent = line.len() - line.trim_start_matches(' ').len();
        let (range, name) = line.trim_start().split_once(" : ").ok_or_else(bad)?;
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let start = u64::from_str_radix(start, 16).map_err(|_| bad())?;
        let end = u64::from_str_radix(end, 16).map_err(|_| bad())?;
        if end < start {
            return Err(bad());
        }
        out.push(Resource {
            // An inclusive end of u64::MAX loses its last byte; no RAM ends there.
            region: Region::new(start, end.saturating_add(1)),
            name: name.to_owned(),
            depth: indent / 2,
        });
    }
    Ok(out)
}

/// System RAM minus everything nested in it, sorted and merged.
pub fn free_ram(resources: &[Resource]) -> Vec<Region> {
    let ram: Vec<Region> = resources
        .iter()
        .filter(|r| r.depth == 0 && r.name == "System RAM" && !r.region.is_empty())
        .map(|r| r.region)
        .collect();
    let taken: Vec<Region> = resources
        .iter()
        .filter(|r| r.depth > 0 && ram.iter().any(|ram| ram.overlaps(&r.region)))
        .map(|r| r.region)
        .collect();
    subtract(&ram, &taken)
}

/// `from` minus every region of `taken`, sorted, merged, empty parts dropped.
pub fn subtract(from: &[Region], taken: &[Region]) -> Vec<Region> {
    let mut free: Vec<Region> = from.to_vec();
    for t in taken {
        free = free
            .into_iter()
            .flat_map(|f| {
                if !f.overlaps(t) {
                    return vec![f];
                }
                let mut parts = Vec::with_capacity(2);
                if f.start < t.start {
                    parts.push(Region::new(f.start, t.start));
                }
                if t.end < f.end {
                    parts.push(Region::new(t.end, f.end));
                }
                parts
            })
            .collect();
    }
    sort_by(&mut free, |r| r.start);
    let mut merged: Vec<Region> = Vec::with_capacity(free.len());
    for r in free {
        match merged.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Sorts a short list by `key`, keeping the order of equal keys. The lists
/// here (memory ranges, EFI regions) have tens of entries: an insertion sort
/// is a few dozen bytes of code, where the standard library's sort costs
/// kilobytes in the init for every type it sorts.
pub fn sort_by<T>(list: &mut [T], key: impl Fn(&T) -> u64) {
    for i in 1..list.len() {
        let mut j = i;
        while j > 0 && key(&list[j - 1]) > key(&list[j]) {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Read in a QEMU `virt` guest (512 MiB, cortex-a57, Debian 6.1) by the
    /// first stage of the kexec scenario, just before it placed segments.
    pub(crate) const VIRT: &str = "\
09000000-09000fff : pl011@9000000
  09000000-09000fff : 9000000.pl011 pl011@9000000
09010000-09010fff : pl031@9010000
  09010000-09010fff : rtc-pl031
09030000-09030fff : pl061@9030000
  09030000-09030fff : 9030000.pl061 pl061@9030000
10000000-3efeffff : pcie@10000000
  10000000-10000fff : 0000:00:01.0
40000000-5fffffff : System RAM
  40210000-4185ffff : Kernel code
  41860000-41eaffff : reserved
  41eb0000-4220ffff : Kernel data
  48000000-4a07cfff : reserved
  4a200000-4a2fffff : reserved
  5b5c0000-5fdfffff : reserved
  5fe2b000-5feabfff : reserved
  5feac000-5fecafff : reserved
  5fecd000-5fecefff : reserved
  5fecf000-5fecffff : reserved
  5fed0000-5fef3fff : reserved
  5fef4000-5fefcfff : reserved
  5fefd000-5fffffff : reserved
4010000000-401fffffff : PCI ECAM
8000000000-ffffffffff : pcie@10000000
  8000000000-8000003fff : 0000:00:01.0
    8000000000-8000003fff : virtio-pci-modern
";

    #[test]
    fn free_ram_leaves_out_what_is_nested() {
        let resources = parse(VIRT).unwrap();
        assert_eq!(resources.len(), 26);
        assert_eq!(resources[8].name, "System RAM");
        assert_eq!(resources[8].depth, 0);
        assert_eq!(resources[8].region, Region::new(0x4000_0000, 0x6000_0000));
        assert_eq!(resources[25].depth, 2);
        assert_eq!(
            free_ram(&resources),
            [
                Region::new(0x4000_0000, 0x4021_0000),
                Region::new(0x4221_0000, 0x4800_0000),
                Region::new(0x4a07_d000, 0x4a20_0000),
                Region::new(0x4a30_0000, 0x5b5c_0000),
                Region::new(0x5fe0_0000, 0x5fe2_b000),
                Region::new(0x5fec_b000, 0x5fec_d000),
            ]
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for (text, line) in [
            ("40000000-5fffffff System RAM\n", 1),
            ("x-5fffffff : System RAM\n", 1),
            ("40000000 : System RAM\n", 1),
            (
                "40000000-5fffffff : System RAM\n  50000000-4fffffff : reserved\n",
                2,
            ),
            ("40000000-1ffffffffffffffff : System RAM\n", 1),
        ] {
            match parse(text) {
                Err(KexecError::Iomem { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn sorts_stably() {
        let mut list = [(3, 'a'), (1, 'b'), (3, 'c'), (0, 'd'), (1, 'e')];
        sort_by(&mut list, |&(k, _)| k);
        assert_eq!(list, [(0, 'd'), (1, 'b'), (1, 'e'), (3, 'a'), (3, 'c')]);
        let mut empty: [u64; 0] = [];
        sort_by(&mut empty, |&k| k);
    }

    #[test]
    fn subtract_handles_every_overlap() {
        let r = |a, b| Region::new(a, b);
        let cases = [
            (vec![r(0, 100)], vec![r(10, 20)], vec![r(0, 10), r(20, 100)]),
            (vec![r(0, 100)], vec![r(0, 100)], vec![]),
            (vec![r(0, 100)], vec![r(50, 200)], vec![r(0, 50)]),
            (vec![r(50, 100)], vec![r(0, 60)], vec![r(60, 100)]),
            (vec![r(0, 10), r(10, 20)], vec![], vec![r(0, 20)]),
            (
                vec![r(30, 40), r(0, 10)],
                vec![r(100, 200)],
                vec![r(0, 10), r(30, 40)],
            ),
        ];
        for (from, taken, expected) in cases {
            assert_eq!(subtract(&from, &taken), expected, "{from:?} - {taken:?}");
        }
    }
}
