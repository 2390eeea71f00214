//! The firmware's memory map as `/sys/firmware/memmap` shows it: one
//! directory per entry with `start`, `end` (inclusive, hexadecimal) and
//! `type` (the kernel's name for the e820 type). This is the map the
//! firmware gave the running kernel, before the kernel's own changes, and
//! it is what the next kernel gets as its e820 table, as kexec-tools does.
//!
//! Segments go only where both this map and `/proc/iomem` say System RAM,
//! above 1 MiB, and not into anything `/proc/iomem` nests in that RAM other
//! than the running kernel itself (which is gone by the time the segments
//! are copied into place): a crash kernel's reservation, or a range the
//! kernel set aside after boot, stays untouched.

use super::iomem::{self, Resource};
use super::{KexecError, Region};

/// e820 types (`enum e820_type` in arch/x86/include/asm/e820/types.h).
pub mod kind {
    pub const RAM: u32 = 1;
    pub const RESERVED: u32 = 2;
    pub const ACPI: u32 = 3;
    pub const NVS: u32 = 4;
    pub const UNUSABLE: u32 = 5;
    pub const PMEM: u32 = 7;
    pub const PRAM: u32 = 12;
    pub const SOFT_RESERVED: u32 = 0xefff_ffff;
}

/// The e820 type for a memmap `type` string, as the kernel's
/// `e820_type_to_string` names them. Any other name, including the
/// kernel's own "Unknown E820 type", becomes Reserved: the next kernel then
/// leaves that memory alone, which is the safe reading of a name not known.
pub fn type_from_name(name: &str) -> u32 {
    match name {
        "System RAM" => kind::RAM,
        "ACPI Tables" => kind::ACPI,
        "ACPI Non-volatile Storage" => kind::NVS,
        "Unusable memory" => kind::UNUSABLE,
        "Persistent Memory (legacy)" => kind::PRAM,
        "Persistent Memory" => kind::PMEM,
        "Soft Reserved" => kind::SOFT_RESERVED,
        _ => kind::RESERVED,
    }
}

/// The e820 type of a `/proc/iomem` resource the kernel registered from
/// its e820 table (named by `e820_type_to_string`); `None` for devices,
/// ROMs and memblock's lowercase `reserved`.
fn iomem_type(name: &str) -> Option<u32> {
    Some(match name {
        "System RAM" => kind::RAM,
        "Reserved" => kind::RESERVED,
        "ACPI Tables" => kind::ACPI,
        "ACPI Non-volatile Storage" => kind::NVS,
        "Unusable memory" => kind::UNUSABLE,
        "Persistent Memory (legacy)" => kind::PRAM,
        "Persistent Memory" => kind::PMEM,
        "Soft Reserved" => kind::SOFT_RESERVED,
        _ => return None,
    })
}

/// The e820 table as the running kernel registered it in `/proc/iomem`, for
/// kernels without `/sys/firmware/memmap` (`CONFIG_FIRMWARE_MEMMAP`), as
/// kexec-tools falls back to. It is the kernel's table after its own
/// changes, which only ever reserve more than the firmware said. Entries
/// with e820 names count at any depth outside System RAM, since the kernel
/// registers some Reserved ranges late, under the PCI windows; one inside
/// another already taken is not repeated.
pub fn from_iomem(resources: &[Resource]) -> Result<Vec<Entry>, KexecError> {
    let ram: Vec<Region> = resources
        .iter()
        .filter(|r| r.depth == 0 && r.name == "System RAM")
        .map(|r| r.region)
        .collect();
    let within =
        |outer: &Region, inner: &Region| outer.start <= inner.start && inner.end <= outer.end;
    let mut out: Vec<Entry> = Vec::new();
    for r in resources {
        let Some(kind) = iomem_type(&r.name) else {
            continue;
        };
        if r.region.is_empty()
            || (r.depth > 0 && ram.iter().any(|m| within(m, &r.region)))
            || out.iter().any(|e| within(&e.region(), &r.region))
        {
            continue;
        }
        out.push(Entry {
            addr: r.region.start,
            size: r.region.len(),
            kind,
        });
    }
    if !out.iter().any(|e| e.kind == kind::RAM) {
        return Err(KexecError::NoRam);
    }
    iomem::sort_by(&mut out, |e| e.addr);
    Ok(out)
}

/// One entry of the next kernel's e820 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl Entry {
    pub fn region(&self) -> Region {
        Region::new(self.addr, self.addr.saturating_add(self.size))
    }
}

/// One `/sys/firmware/memmap/<dir>` as read: the three files' contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub dir: String,
    pub start: String,
    pub end: String,
    pub kind: String,
}

fn hex(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The e820 table from the listing, sorted by address. A malformed entry is
/// an error rather than skipped: a missing reservation could be overwritten.
pub fn parse(listing: &[Listed]) -> Result<Vec<Entry>, KexecError> {
    let mut out = Vec::with_capacity(listing.len());
    for l in listing {
        let bad = |problem: &'static str| KexecError::Memmap {
            dir: l.dir.clone(),
            problem,
        };
        let start = hex(&l.start).ok_or_else(|| bad("start is not a hexadecimal number"))?;
        let end = hex(&l.end).ok_or_else(|| bad("end is not a hexadecimal number"))?;
        if end < start {
            return Err(bad("end is below start"));
        }
        // The size of an entry ending at u64::MAX would not fit; no RAM
        // ends there, so the last byte is dropped instead.
        let size = (end - start).saturating_add(1);
        out.push(Entry {
            addr: start,
            size,
            kind: type_from_name(l.kind.trim_end_matches('\n')),
        });
    }
    if out.is_empty() {
        return Err(KexecError::NoRam);
    }
    iomem::sort_by(&mut out, |e| e.addr);
    Ok(out)
}

/// Names of `/proc/iomem` entries that are the running kernel itself: free
/// at the jump, so placement may use their memory.
const RUNNING_KERNEL: [&str; 4] = ["Kernel code", "Kernel rodata", "Kernel data", "Kernel bss"];

/// Nothing is placed below 1 MiB: the real-mode area, BIOS data and the
/// next kernel's trampoline live there.
pub const LOW_LIMIT: u64 = 1 << 20;

/// RAM the segments may use: System RAM in both `memmap` and `iomem`, above
/// [`LOW_LIMIT`], minus everything `iomem` nests in its System RAM except
/// the running kernel's own image.
pub fn free_ram(memmap: &[Entry], iomem: &[Resource]) -> Vec<Region> {
    let firmware: Vec<Region> = memmap
        .iter()
        .filter(|e| e.kind == kind::RAM)
        .map(Entry::region)
        .collect();
    let ram: Vec<Region> = iomem
        .iter()
        .filter(|r| r.depth == 0 && r.name == "System RAM")
        .map(|r| r.region)
        .collect();
    let mut taken: Vec<Region> = iomem
        .iter()
        .filter(|r| r.depth > 0 && !RUNNING_KERNEL.contains(&r.name.as_str()))
        .map(|r| r.region)
        .collect();
    taken.push(Region::new(0, LOW_LIMIT));
    let both = intersect(
        &iomem::subtract(&firmware, &[]),
        &iomem::subtract(&ram, &[]),
    );
    iomem::subtract(&both, &taken)
}

/// The parts of `a` that are also in `b`; both sorted and merged.
pub fn intersect(a: &[Region], b: &[Region]) -> Vec<Region> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let start = x.start.max(y.start);
            let end = x.end.min(y.end);
            if start < end {
                out.push(Region::new(start, end));
            }
        }
    }
    iomem::subtract(&out, &[])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `grep . /sys/firmware/memmap/*/*` on the x86_64 machine this was
    /// written on (a virtual machine with 24 GiB of RAM, Linux 6.18), verbatim.
    pub(crate) const HOST_MEMMAP: &str = "\
/sys/firmware/memmap/0/end:0x9fbff
/sys/firmware/memmap/0/start:0x0
/sys/firmware/memmap/0/type:System RAM
/sys/firmware/memmap/1/end:0xfffff
/sys/firmware/memmap/1/start:0x9fc00
/sys/firmware/memmap/1/type:Reserved
/sys/firmware/memmap/2/end:0xbfffffff
/sys/firmware/memmap/2/start:0x100000
/sys/firmware/memmap/2/type:System RAM
/sys/firmware/memmap/3/end:0xfebfffff
/sys/firmware/memmap/3/start:0xeec00000
/sys/firmware/memmap/3/type:Reserved
/sys/firmware/memmap/4/end:0x63fffffff
/sys/firmware/memmap/4/start:0x100000000
/sys/firmware/memmap/4/type:System RAM
";

    /// The same machine's `/proc/iomem`, read at the same time, up to the
    /// end of RAM, without the device entries nested in its Reserved ranges.
    pub(crate) const HOST_IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-bfffffff : System RAM
  01000000-0220bb07 : Kernel code
  02400000-02e09fff : Kernel rodata
  03000000-0327c13f : Kernel data
  03b34000-03c57fff : Kernel bss
c0001000-eebfffff : PCI Bus 0000:00
eec00000-febfffff : Reserved
fec00000-fec003ff : IOAPIC 0
100000000-63fffffff : System RAM
";

    /// Turns `grep . dir/*/*` output back into the listing the init reads.
    pub(crate) fn listing(grep: &str) -> Vec<Listed> {
        let mut out: Vec<Listed> = Vec::new();
        for line in grep.lines() {
            let (path, value) = line.split_once(':').unwrap();
            let mut parts = path.rsplit('/');
            let file = parts.next().unwrap();
            let dir = parts.next().unwrap().to_owned();
            if out.last().is_none_or(|l| l.dir != dir) {
                out.push(Listed {
                    dir: dir.clone(),
                    start: String::new(),
                    end: String::new(),
                    kind: String::new(),
                });
            }
            let entry = out.last_mut().unwrap();
            let value = format!("{value}\n");
            match file {
                "start" => entry.start = value,
                "end" => entry.end = value,
                "type" => entry.kind = value,
                other => panic!("{other}"),
            }
        }
        out
    }

    #[test]
    fn parses_the_host_memmap() {
        let map = parse(&listing(HOST_MEMMAP)).unwrap();
        assert_eq!(
            map,
            [
                Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: kind::RAM
                },
                Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: kind::RESERVED
                },
                Entry {
                    addr: 0x10_0000,
                    size: 0xbff0_0000,
                    kind: kind::RAM
                },
                Entry {
                    addr: 0xeec0_0000,
                    size: 0x1000_0000,
                    kind: kind::RESERVED
                },
                Entry {
                    addr: 0x1_0000_0000,
                    size: 0x5_4000_0000,
                    kind: kind::RAM
                },
            ]
        );
    }

    #[test]
    fn segments_go_where_both_maps_say_ram() {
        let map = parse(&listing(HOST_MEMMAP)).unwrap();
        let iomem = iomem::parse(HOST_IOMEM).unwrap();
        // The running kernel's image is usable; below 1 MiB is not.
        assert_eq!(
            free_ram(&map, &iomem),
            [
                Region::new(0x10_0000, 0xc000_0000),
                Region::new(0x1_0000_0000, 0x6_4000_0000),
            ]
        );
        // A crash kernel reservation and a range the kernel reserved after
        // boot (split out of System RAM in iomem only) are left alone.
        let later = HOST_IOMEM.replace(
            "00100000-bfffffff : System RAM\n",
            "00100000-afffffff : System RAM\n  a0000000-a7ffffff : Crash kernel\n\
             b0000000-b0000fff : Reserved\nb0001000-bfffffff : System RAM\n",
        );
        assert_eq!(
            free_ram(&map, &iomem::parse(&later).unwrap()),
            [
                Region::new(0x10_0000, 0xa000_0000),
                Region::new(0xa800_0000, 0xb000_0000),
                Region::new(0xb000_1000, 0xc000_0000),
                Region::new(0x1_0000_0000, 0x6_4000_0000),
            ]
        );
    }

    #[test]
    fn the_iomem_table_stands_in_for_memmap() {
        let iomem = iomem::parse(HOST_IOMEM).unwrap();
        let entry = |addr, size, kind| Entry { addr, size, kind };
        // The kernel's first page is Reserved in its own table; ROMs, PCI
        // windows, the IOAPIC and what is nested in RAM are not e820.
        assert_eq!(
            from_iomem(&iomem).unwrap(),
            [
                entry(0, 0x1000, kind::RESERVED),
                entry(0x1000, 0x9_ec00, kind::RAM),
                entry(0x9_fc00, 0x6_0400, kind::RESERVED),
                entry(0x10_0000, 0xbff0_0000, kind::RAM),
                entry(0xeec0_0000, 0x1000_0000, kind::RESERVED),
                entry(0x1_0000_0000, 0x5_4000_0000, kind::RAM),
            ]
        );
        // Placement from it matches placement from the firmware's map.
        let memmap = parse(&listing(HOST_MEMMAP)).unwrap();
        assert_eq!(
            free_ram(&from_iomem(&iomem).unwrap(), &iomem),
            free_ram(&memmap, &iomem)
        );
        // A Reserved range registered late under a PCI window counts; a
        // lowercase memblock reservation in RAM does not.
        let late = iomem::parse(
            "00100000-bfffffff : System RAM
  00200000-00200fff : reserved
             c0000000-febfffff : PCI Bus 0000:00
  e0000000-efffffff : Reserved
",
        )
        .unwrap();
        assert_eq!(
            from_iomem(&late).unwrap(),
            [
                entry(0x10_0000, 0xbff0_0000, kind::RAM),
                entry(0xe000_0000, 0x1000_0000, kind::RESERVED),
            ]
        );
        assert!(matches!(
            from_iomem(
                &iomem::parse(
                    "000f0000-000fffff : System ROM
"
                )
                .unwrap()
            ),
            Err(KexecError::NoRam)
        ));
    }

    #[test]
    fn every_type_name_maps() {
        for (name, want) in [
            ("System RAM", 1),
            ("Reserved", 2),
            ("reserved", 2),
            ("ACPI Tables", 3),
            ("ACPI Non-volatile Storage", 4),
            ("Unusable memory", 5),
            ("Persistent Memory", 7),
            ("Persistent Memory (legacy)", 12),
            ("Soft Reserved", 0xefff_ffff),
            ("Unknown E820 type", 2),
            ("anything else", 2),
        ] {
            assert_eq!(type_from_name(name), want, "{name}");
        }
    }

    #[test]
    fn malformed_entries_are_errors() {
        let one = |start: &str, end: &str| {
            parse(&[Listed {
                dir: "7".into(),
                start: start.into(),
                end: end.into(),
                kind: "System RAM\n".into(),
            }])
        };
        for (start, end, problem) in [
            ("0xzz\n", "0x1000\n", "start is not"),
            ("0x1000\n", "\n", "end is not"),
            ("0x", "0x1000", "start is not"),
            ("0x2000\n", "0x1000\n", "below start"),
        ] {
            match one(start, end) {
                Err(KexecError::Memmap { dir, problem: p }) => {
                    assert_eq!(dir, "7");
                    assert!(p.contains(problem), "{p}");
                }
                other => panic!("{start:?} {end:?}: {other:?}"),
            }
        }
        assert!(matches!(parse(&[]), Err(KexecError::NoRam)));
        // Without the 0x prefix and at the very top of the address space.
        assert_eq!(
            one("1000", "ffffffffffffffff").unwrap()[0],
            Entry {
                addr: 0x1000,
                size: u64::MAX - 0x1000 + 1,
                kind: kind::RAM
            }
        );
    }
}
