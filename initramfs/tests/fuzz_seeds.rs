//! Replays the committed fuzz corpus on stable (see fuzz/Cargo.toml).

use std::path::Path;

use phase_initramfs::modindex::ModuleIndex;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "{} has no seeds", dir.display());
    inputs
}

#[test]
fn modinfo_corpus_parses_without_panic() {
    let parsed = corpus("modinfo")
        .iter()
        .filter(|i| phase_initramfs::modinfo::parse(i).is_ok())
        .count();
    assert!(parsed > 0, "no seed is a valid module");
}

#[test]
fn modindex_corpus_resolves_without_panic() {
    for input in corpus("modindex") {
        if let Ok(index) = ModuleIndex::from_json(&input) {
            let names: Vec<String> = index.modules.iter().map(|m| m.name.clone()).collect();
            let _ = index.load_order(&names);
            let _ =
                index.modules_for_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
        }
    }
}
