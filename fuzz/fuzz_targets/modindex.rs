//! The module index JSON → load order and alias matching.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = phase_initramfs::modindex::ModuleIndex::from_json(data) {
        let names: Vec<String> = index.modules.iter().map(|m| m.name.clone()).collect();
        let _ = index.load_order(&names);
        let _ = index.modules_for_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
    }
});
