//! A state partition's two copies or an EFI variable's bytes → the stored
//! floor. Whoever holds the disk writes these bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use phase_initramfs::state::{self, Copy, Record, SLOT_LEN};

fuzz_target!(|data: &[u8]| {
    let (a, b) = data.split_at(data.len().min(SLOT_LEN));
    let floor = state::partition_floor(&Copy::read(a), &Copy::read(b));
    if let Ok(r) = Record::decode(a) {
        assert!(floor >= r.floor);
    }
    let _ = state::from_efi_file(data);
});
