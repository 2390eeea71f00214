//! A block device's bytes → the partition-table and filesystem probes the
//! init runs before `root=` is mounted, at both sector sizes, then each
//! partition's own window the way the init probes `/dev/vdaN`. Nothing may
//! panic, loop without end, or read past the device.
#![no_main]
use libfuzzer_sys::fuzz_target;
use phase_init::plan::RootSpec;
use phase_init::root::probe;

fuzz_target!(|data: &[u8]| {
    for sector in [512, 4096] {
        let disk = probe::probe_bytes(data, sector);
        let parts = disk.table.map(|t| t.partitions).unwrap_or_default();
        for part in parts.iter().take(4) {
            let start = usize::try_from(part.offset).unwrap_or(usize::MAX);
            let end = usize::try_from(part.size).map_or(usize::MAX, |s| start.saturating_add(s));
            let Some(window) = data.get(start..end) else {
                continue;
            };
            let p = probe::probe_bytes(window, sector);
            let _ = probe::render("/dev/vda1", &p, Some(part));
            let spec = RootSpec::PartUuid("0a1b2c3d-01".into());
            let _ = probe::matches(&spec, "/dev/vda1", p.fs.as_ref(), Some(part));
        }
    }
});
