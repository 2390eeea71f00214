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
