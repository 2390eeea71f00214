//! A bzImage from the manifest → setup header → the x86_64 hand-off's
//! placement, boot_params and purgatory. Nothing may panic; a header that
//! parses must plan into page-aligned, non-overlapping segments in free RAM.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    phase_init::kexec::x86_64::check_bzimage_path(data);
});
