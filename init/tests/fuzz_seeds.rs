//! Replays the committed fuzz corpus on stable: every input that once
//! mattered to the fuzzer (seeds and any crash found) must parse without a
//! panic.

#[path = "../../fuzz/replay.rs"]
mod replay;
use replay::inputs as corpus;

#[test]
fn cmdline_corpus_parses_without_panic() {
    for input in corpus("cmdline") {
        let params = phase_init::cmdline::split(&input);
        let _ = phase_init::plan::parse(&params, true);
    }
}

#[test]
fn fdt_corpus_goes_through_the_dtb_path_without_panic() {
    let inputs = corpus("fdt");
    // The committed seeds include real blobs, which must be accepted.
    let accepted = inputs
        .iter()
        .filter(|i| phase_init::kexec::arm64::check_dtb_path(i))
        .count();
    assert!(accepted >= 3, "only {accepted} seeds parsed");
}

#[test]
fn dhcp_corpus_parses_without_panic() {
    for input in corpus("dhcp") {
        phase_init::dhcp::fuzz_input(&input);
    }
}

#[test]
fn netlink_corpus_parses_without_panic() {
    for input in corpus("netlink") {
        if let Ok(replies) = phase_init::netlink::parse(&input) {
            for reply in replies {
                if let phase_init::netlink::Reply::Link { link, .. } = reply {
                    let _ = (link.has_carrier(), link.is_ethernet(), link.mac_text());
                }
            }
        }
    }
}
