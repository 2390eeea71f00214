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

#[test]
fn probe_corpus_goes_through_the_probes_without_panic() {
    use phase_init::root::probe;
    for (name, input) in replay::corpus("probe") {
        for sector in [512, 4096] {
            let _ = probe::probe_bytes(&input, sector);
        }
        // The seeds are real images, named for what blkid calls them
        // (`ext4`, `gpt-sgdisk`, …); each must still be found as that.
        let kind = name.split('-').next().unwrap_or_default();
        let p = probe::probe_bytes(&input, 512);
        let found = [
            p.fs.as_ref().map(|f| f.fstype),
            p.table.as_ref().map(|t| t.kind),
        ];
        const KINDS: [&str; 9] = [
            "ext2",
            "ext4",
            "squashfs",
            "erofs",
            "vfat",
            "iso9660",
            "gpt",
            "dos",
            "zfs_member",
        ];
        if KINDS.contains(&kind) {
            assert!(found.contains(&Some(kind)), "{name}: {p:?}");
        }
    }
}

#[test]
fn bzimage_corpus_goes_through_placement_without_panic() {
    let inputs = corpus("bzimage");
    // The committed seeds include a real setup header resized to fit,
    // which must be accepted and planned.
    let accepted = inputs
        .iter()
        .filter(|i| phase_init::kexec::x86_64::check_bzimage_path(i))
        .count();
    assert!(accepted >= 1, "only {accepted} seeds parsed");
}
