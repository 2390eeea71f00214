//! Replays the committed fuzz corpus on stable: every input that once
//! mattered to the fuzzer (seeds and any crash found) must go through the
//! parser, the browser and the responder without a panic.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn dns_corpus_goes_through_without_panic() {
    let corpus = replay::corpus("dns");
    for (name, input) in &corpus {
        eprintln!("{name}");
        phase_discover::fuzz_input(input);
    }
    // The committed seeds include valid messages of every kind we send,
    // and they must parse.
    let parsed = corpus
        .iter()
        .filter(|(_, i)| phase_discover::dns::Message::parse(i).is_ok())
        .count();
    assert!(parsed >= 9, "only {parsed} seeds parsed");
}
