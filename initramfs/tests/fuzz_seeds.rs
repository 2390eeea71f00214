//! Replays the committed fuzz corpus on stable (see fuzz/Cargo.toml).

use phase_initramfs::modindex::ModuleIndex;

#[path = "../../fuzz/replay.rs"]
mod replay;
use replay::inputs as corpus;

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
