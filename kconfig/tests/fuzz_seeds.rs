//! Replays the committed fuzz corpus (`fuzz/corpus/kconfig`) on stable:
//! every input that once mattered to the fuzzer must go through every
//! parser without a panic.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn kconfig_corpus_goes_through_every_parser_without_panic() {
    let inputs = replay::corpus("kconfig");
    for (_, input) in &inputs {
        phase_kconfig::fuzz_input(input);
    }
    // The seeds include a real config, fragment and image header, which
    // must be understood rather than merely survived.
    let by_name = |n: &str| &inputs.iter().find(|(name, _)| name == n).unwrap().1;
    let text = std::str::from_utf8(by_name("config-arm64")).unwrap();
    assert_eq!(
        phase_kconfig::Config::parse(text).unwrap().arch(),
        Some(phase_kconfig::Arch::Arm64)
    );
    let fragment = std::str::from_utf8(by_name("fragment-xsc")).unwrap();
    assert!(phase_kconfig::Fragment::parse("xsc", fragment).is_ok());
    assert!(
        phase_kconfig::image::bzimage_payload(by_name("bzimage-header"))
            .unwrap()
            .is_some()
    );
    assert!(phase_kconfig::image::ikconfig_gzip(by_name("ikconfig-markers")).is_some());
}
