//! Test artifacts for the provider tests in this crate, the init's fetch
//! tests and the scenarios.

/// Deterministic pseudo-random bytes (xorshift), so artifacts are not
/// compressible and every byte matters to the hash.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Noise that passes for a kernel of `arch` where `phase publish` looks: an
/// x86 bzImage setup header (`HdrS`, boot protocol 2.15, `XLF_KERNEL_64`)
/// or an arm64 Image header (`ARM\x64` at 0x38). No loader could run it.
pub fn fake_kernel(arch: phase_manifest::Arch, len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = noise(len.max(0x240), seed);
    let mut put = |offset: usize, magic: &[u8]| {
        bytes[offset..offset + magic.len()].copy_from_slice(magic);
    };
    match arch {
        phase_manifest::Arch::X86_64 => {
            put(0x1fe, &[0x55, 0xaa]); // boot_flag
            put(0x202, b"HdrS"); // header
            put(0x206, &0x020f_u16.to_le_bytes()); // version 2.15
            put(0x236, &[0x03]); // xloadflags: KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
        }
        phase_manifest::Arch::Aarch64 => put(0x38, b"ARM\x64"), // magic
    }
    bytes.truncate(len);
    bytes
}

/// Noise behind a newc cpio magic: what `phase publish` takes for an initrd.
pub fn fake_initrd(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = noise(len.max(6), seed);
    bytes[..6].copy_from_slice(b"070701");
    bytes.truncate(len);
    bytes
}
