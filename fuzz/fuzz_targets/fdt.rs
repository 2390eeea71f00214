//! A DTB from the manifest or /sys/firmware/fdt → validated tree → written
//! back → the arm64 hand-off's edit and placement. Nothing may panic; what
//! parses must read back as the same tree.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    phase_init::kexec::arm64::check_dtb_path(data);
});
