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

#[test]
fn state_corpus_decodes_without_panic() {
    use phase_initramfs::state::{self, Copy, Record, SLOT_LEN};
    let mut floors = Vec::new();
    for (name, input) in replay::corpus("state") {
        let (a, b) = input.split_at(input.len().min(SLOT_LEN));
        floors.push((name, state::partition_floor(&Copy::read(a), &Copy::read(b))));
        let _ = Record::decode(&input);
        let _ = state::from_efi_file(&input);
    }
    // The seeds cover a fresh partition, a good pair, and each torn copy.
    let floor = |n: &str| floors.iter().find(|(name, _)| name == n).map(|(_, f)| *f);
    assert_eq!(floor("blank"), Some(0));
    assert_eq!(floor("both-7"), Some(7));
    assert_eq!(floor("a-torn-b-3"), Some(3));
    assert_eq!(floor("a-9-b-torn"), Some(9));
}
