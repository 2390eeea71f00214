//! Replays the committed fuzz corpus (`fuzz/corpus/isoread`) on stable:
//! every input that once mattered to the fuzzer must go through the ISO
//! reader and the remaster without a panic.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn isoread_corpus_goes_through_reader_and_remaster_without_panic() {
    let inputs = replay::corpus("isoread");
    for (_, input) in &inputs {
        mkimage::remaster::fuzz_input(input);
    }
    // The xorriso seed must be understood, not merely survived.
    let by_name = |n: &str| inputs.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let iso = by_name("xorriso-rr-joliet-bios-efi.iso");
    let vol = mkimage::isoread::read(&iso, "seed").unwrap();
    assert!(vol.rock_ridge && vol.joliet.is_some());
    assert_eq!(vol.volume_id, "SEED");
    assert_eq!(vol.boot.len(), 2);
    assert_eq!(vol.boot[0].path.as_deref(), Some("isolinux/isolinux.bin"));
    assert!(vol.boot[0].boot_info_table);
    assert_eq!(vol.boot[1].platform, mkimage::isoread::Platform::Efi);
    assert_eq!(vol.boot[1].path.as_deref(), Some("efi.img"));
    assert!(vol.primary.find("boot/grub/grub.cfg").is_some());
    let cut = by_name("truncated-after-descriptors");
    assert!(matches!(
        mkimage::isoread::read(&cut, "cut"),
        Err(mkimage::isoread::IsoReadError::Truncated { .. })
    ));
}

/// Without cargo-fuzz at hand: the xorriso seed with bytes of its
/// descriptors, path tables, directories and boot catalog (the first
/// 40 KiB) overwritten at pseudo-random places, and cut at every block;
/// nothing may panic.
#[test]
fn mutated_isos_do_not_panic() {
    let seed = replay::corpus("isoread")
        .into_iter()
        .find(|(n, _)| n == "xorriso-rr-joliet-bios-efi.iso")
        .unwrap()
        .1;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..1000 {
        let mut iso = seed.clone();
        for _ in 0..1 + next() % 4 {
            let at = (16 * 2048 + next() % (24 * 1024)) as usize;
            iso[at] = next() as u8;
        }
        mkimage::remaster::fuzz_input(&iso);
    }
    for blocks in 0..seed.len() / 2048 {
        mkimage::remaster::fuzz_input(&seed[..blocks * 2048]);
    }
}
