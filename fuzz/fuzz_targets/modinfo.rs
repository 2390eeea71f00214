//! A kernel module's ELF file → its .modinfo metadata.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = phase_initramfs::modinfo::parse(data);
});
