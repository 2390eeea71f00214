//! The committed corpus of a fuzz target, for the stable tests that replay
//! it (`*/tests/fuzz_seeds.rs` include this file with `#[path]`): every
//! input that once mattered to the fuzzer, seeds and any crash found, as
//! (file name, bytes), in name order.

use std::path::Path;

pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(!inputs.is_empty(), "{} has no seeds", dir.display());
    inputs.sort();
    inputs
}

/// The inputs alone.
#[allow(dead_code)]
pub fn inputs(target: &str) -> Vec<Vec<u8>> {
    corpus(target).into_iter().map(|(_, bytes)| bytes).collect()
}
