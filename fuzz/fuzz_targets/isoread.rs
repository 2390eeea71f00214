//! A distribution's ISO given to `mkimage iso --into` → the ISO9660 reader
//! (descriptors, Rock Ridge and Joliet trees, El Torito catalog, MBR/GPT),
//! the menu edits and the remaster plan, written to memory. Nothing may
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mkimage::remaster::fuzz_input(data);
});
