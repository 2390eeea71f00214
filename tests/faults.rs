//! Faults in QEMU, from the init's side (SECURITY.md rows 9–12 and 21): the
//! host tests show the client refusing each hostile server; these show the
//! booting machine doing it with the real kernel, network stack and
//! deadlines, and then doing the right thing — the next mirror, or the
//! failure policy on time.
//!
//! The fault provider (`xtask::faults`) serves the published tree with one
//! fault on its blobs; the manifest it serves is intact, so each boot gets as
//! far as the fault. Mirrors are the ordered `phase.provider=` list and
//! artifacts are content-addressed, so one boot carries every fault in
//! front of a good nginx mirror: each artifact is asked of each faulty
//! mirror in turn, then of the good one. x86_64 only: the fetch path is the
//! same code on both arches, and TCG time is better spent on the faults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use phase_scenarios::{check, failure_in, marker, wait_power, wait_stage};
use phase_tools::publish::PublishedArtifact;
use serde_json::{Value, json};
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::faults::{self, Fault, FaultProvider};
use xtask::lan::Lan;
use xtask::provider::{self, Publication};
use xtask::qmp::QmpListener;
use xtask::vm::{Vm, VmSpec};

const ARCH: Arch = Arch::X86_64;
const SPEC: &str = "tests/specs/netboot.toml";
/// A netboot with two kernel boots and a kexec takes 20–60 s under TCG; the
/// faults add their deadlines.
const NETBOOT: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(60);
/// The client's deadlines (`phase_fetch::Config::new`): silence between
/// reads, and the minimum-rate window.
const STALL_MS: u64 = 10_000;
const RATE_WINDOW_MS: u64 = 10_000;
/// How much a lying Content-Length is off by.
const LIE: u64 = 4096;

/// A published release served by nginx, and what the fault providers serve
/// it from.
struct Release {
    _dir: tempfile::TempDir,
    _nginx: phase_tools::nginx::Nginx,
    /// nginx over plain HTTP, as the guest sees it.
    good: String,
    good_port: u16,
    tree: PathBuf,
    bundle: Bundle,
    /// The kernel, then the initrd: the order the init fetches them in.
    artifacts: Vec<PublishedArtifact>,
}

/// Publishes the Debian kernel and the netboot image, whose signed command
/// line carries `mark` (the second kernel's report then proves the kexec).
fn release(mark: &str) -> Result<Release> {
    let bundle = artifacts::bundle(ARCH, SPEC, Variant::Release)?;
    let dir = tempfile::Builder::new().prefix("phase-faults-").tempdir()?;
    let cmdline = format!(
        "{} phase.report phase.onfail=poweroff {mark}",
        ARCH.kernel_params()
    );
    let (tree, published) = provider::publish_tree(
        dir.path(),
        &Publication {
            arch: ARCH,
            version: 5,
            floor: None,
            expires_in: 3600,
            cmdline,
            kernel: &bundle.kernel.image,
            initrd: Some(&bundle.initrd),
            served_as: None,
            root_image: None,
        },
    )?;
    let artifacts = ["kernel", "initrd"]
        .iter()
        .map(|name| {
            published
                .artifacts
                .iter()
                .find(|a| a.name == *name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("nothing published as the {name}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let nginx = provider::nginx(&tree, dir.path())?;
    Ok(Release {
        good: provider::guest_url("http", nginx.http.port()),
        good_port: nginx.http.port(),
        _nginx: nginx,
        tree,
        _dir: dir,
        bundle,
        artifacts,
    })
}

fn boot_with(
    name: &str,
    bundle: &Bundle,
    append: &str,
    adjust: impl FnOnce(&mut VmSpec),
) -> Result<Vm> {
    let mut spec = VmSpec::direct(
        format!("{name}-{ARCH}"),
        ARCH,
        &bundle.kernel.image,
        &bundle.initrd,
        append,
    );
    spec.user_net = true;
    adjust(&mut spec);
    Vm::start(&spec)
}

/// What the init must report for one fault.
struct Expected {
    kind: &'static str,
    /// `transport` (retried) or `refused` (the bytes arrived and were judged:
    /// never asked of that mirror again).
    outcome: &'static str,
    /// Fields of the attempt's `detail`, each equal.
    detail: Value,
}

/// The attempt a fault provider at `at` causes for the artifact `a`.
fn expected(fault: Fault, a: &PublishedArtifact, at: &str) -> Expected {
    let url = format!("{at}/{}", a.path);
    match fault {
        Fault::NotFound => Expected {
            kind: "status",
            outcome: "transport",
            detail: json!({ "status": 404, "url": url }),
        },
        Fault::RedirectLoop => Expected {
            kind: "redirects",
            outcome: "transport",
            detail: json!({ "limit": 5, "url": url }),
        },
        Fault::Downgrade { to_port } => Expected {
            kind: "downgrade",
            outcome: "transport",
            detail: json!({
                "from": url,
                "to": format!("http://10.0.2.2:{to_port}/{}", a.path),
            }),
        },
        Fault::Garbage => Expected {
            kind: "artifact_digest",
            outcome: "refused",
            detail: json!({
                "expected": a.sha256,
                "actual": faults::garbage_sha256(a.size as usize),
                "url": url,
            }),
        },
        Fault::ShortLength { by } => Expected {
            kind: "truncated",
            outcome: "transport",
            detail: json!({ "received": a.size - by, "expected": a.size, "url": url }),
        },
        // Every byte of the artifact arrives, then the connection closes
        // with the Content-Length unmet: a transfer that did not finish.
        Fault::LongLength { .. } => Expected {
            kind: "unexpected_eof",
            outcome: "transport",
            detail: json!({ "url": url }),
        },
        // Cut at the declared size, which is the cap.
        Fault::EndlessChunked => Expected {
            kind: "too_large",
            outcome: "refused",
            detail: json!({ "cap": a.size, "url": url }),
        },
        Fault::Trickle { .. } => Expected {
            kind: "too_slow",
            outcome: "transport",
            detail: json!({ "min_bytes": 65536, "per_s": 10, "url": url }),
        },
        // The same kind for both hangs: the error line says which deadline
        // (the response head's, or the body's per-read one).
        Fault::Hang | Fault::Silent => Expected {
            kind: "timed_out",
            outcome: "transport",
            detail: json!({ "url": url }),
        },
    }
}

impl Expected {
    /// Whether attempt `t` is this one, at mirror `at`, for `what`.
    fn matches(&self, t: &Value, at: &str, what: &str) -> bool {
        t["at"] == at
            && t["what"] == what
            && t["kind"] == self.kind
            && t["outcome"] == self.outcome
            && self
                .detail
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| t["detail"][k] == *v)
    }
}

/// Every fault the provider has, those that take a client deadline last.
fn every_fault(release: &Release) -> Vec<Fault> {
    vec![
        Fault::NotFound,
        Fault::RedirectLoop,
        Fault::Downgrade {
            to_port: release.good_port,
        },
        Fault::Garbage,
        Fault::ShortLength { by: LIE },
        Fault::LongLength { by: LIE },
        Fault::EndlessChunked,
        Fault::Trickle { bytes_per_s: 1 },
        Fault::Hang,
    ]
}

/// Rows 9–12 and 11's failover: nine faulty mirrors in front of a good
/// one. The manifest comes from the first (it is served intact); each
/// artifact is asked of every faulty mirror in order, each attempt fails
/// with its fault's own kind and values, and both come from the good
/// mirror; the second kernel's report carries the signed marker.
#[test]
fn x86_64_each_fault_in_front_of_a_good_mirror_fails_over() -> Result<()> {
    let mark = marker("faults-failover", ARCH);
    let release = release(&mark)?;
    let faults = every_fault(&release);
    let providers = faults
        .iter()
        .map(|&f| FaultProvider::start(&release.tree, f))
        .collect::<Result<Vec<_>>>()?;
    let mut urls: Vec<String> = providers.iter().map(FaultProvider::guest_url).collect();
    urls.push(release.good.clone());
    // The faults that wait for a deadline take ~10 s per artifact each;
    // the whole boot gets room for them.
    let append = format!(
        "phase.provider={} phase.timeout=400 phase.onfail=poweroff",
        urls.join(",")
    );
    let mut vm = boot_with("faults-failover", &release.bundle, &append, |_| {})?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    let first = urls[0].trim_end_matches('/');
    check(
        &vm,
        fetch["mirror"] == first && fetch["tried"] == json!([]),
        &format!("the manifest did not come from the first mirror at once: {fetch}"),
    )?;
    let verify = wait_stage(&mut vm, "verify", NETBOOT)?;
    let good = release.good.trim_end_matches('/');
    let from: Vec<Value> = verify["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!([a["name"], a["from"]]))
        .collect();
    let want_from: Vec<Value> = release
        .artifacts
        .iter()
        .map(|a| json!([a.name, format!("{good}/{}", a.path)]))
        .collect();
    check(
        &vm,
        from == want_from,
        &format!("the artifacts did not come from the good mirror {good}: {from:?}"),
    )?;
    let tried = verify["tried"].as_array().cloned().unwrap_or_default();
    let mut want = Vec::new();
    for a in &release.artifacts {
        for (fault, url) in faults.iter().zip(&urls) {
            let at = url.trim_end_matches('/').to_owned();
            want.push((expected(*fault, a, &at), at, a.name));
        }
    }
    check(
        &vm,
        tried.len() == want.len(),
        &format!(
            "{} attempts before the good mirror, not {}: {tried:#?}",
            tried.len(),
            want.len()
        ),
    )?;
    for (t, (e, at, what)) in tried.iter().zip(&want) {
        check(
            &vm,
            e.matches(t, at, what),
            &format!(
                "the attempt at {at} for {what} is not {} ({}) with {}: {t}",
                e.kind, e.outcome, e.detail
            ),
        )?;
    }
    // Within its budget: per artifact, the two deadlines the hang and the
    // trickle wait for, and the transfers of the rest (under 10 s here).
    let took = verify["t_ms"].as_u64().unwrap_or(0) - fetch["t_ms"].as_u64().unwrap_or(0);
    let most = 2 * (STALL_MS + RATE_WINDOW_MS) + 20_000;
    check(
        &vm,
        took <= most,
        &format!("the artifacts took {took} ms past the faults, more than {most} ms"),
    )?;
    vm.wait_event("kexec", NETBOOT)?;
    let report = vm.wait_event("report", NETBOOT)?;
    check(
        &vm,
        report["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains(&mark)),
        "the second kernel's report lacks the signed marker",
    )?;
    vm.expect_clean_exit(SHORT)?;
    eprintln!(
        "[faults-failover-{ARCH}] verify took {took} ms past {} faulty mirrors; {:.1} s of QEMU",
        faults.len(),
        vm.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One fault alone, the only mirror: the failure is in stage verify and
/// names the fault (kind and values, as its last attempt), every attempt
/// was that fault at that mirror, a refusal was not asked again while a
/// transport fault was retried, the failure came within `rd.retry` (plus
/// the attempt running when it ran out), and the policy followed with
/// nothing kexec'd.
fn alone(name: &str, fault: impl FnOnce(&Release) -> Fault, onfail: &str) -> Result<()> {
    const RETRY_S: u64 = 4;
    let release = release("marker=never")?;
    let fault = fault(&release);
    let provider = FaultProvider::start(&release.tree, fault)?;
    let url = provider.guest_url();
    let at = url.trim_end_matches('/');
    let e = expected(fault, &release.artifacts[0], at);
    let mut vm = boot_with(
        &format!("alone-{name}"),
        &release.bundle,
        &format!("phase.provider={url} rd.retry={RETRY_S} phase.onfail={onfail}"),
        |_| {},
    )?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    let failure = failure_in(&mut vm, "verify", NETBOOT)?;
    check(
        &vm,
        failure["kind"] == e.kind
            && e.detail
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| k == "url" || failure["detail"][k] == *v),
        &format!("the failure is not {} with {}: {failure}", e.kind, e.detail),
    )?;
    let tried = failure["tried"].as_array().cloned().unwrap_or_default();
    check(
        &vm,
        !tried.is_empty() && tried.iter().all(|t| e.matches(t, at, "kernel")),
        &format!("an attempt is not {} at {at}: {tried:#?}", e.kind),
    )?;
    // The two hangs, told apart: silence after the head ends the body's
    // read, silence before it the request itself.
    let in_body = |t: &Value| {
        t["error"]
            .as_str()
            .is_some_and(|e| e.contains(": reading the body:"))
    };
    match fault {
        Fault::Hang => check(
            &vm,
            tried.iter().all(in_body),
            &format!("the hang did not end while reading the body: {tried:#?}"),
        )?,
        Fault::Silent => check(
            &vm,
            !tried.iter().any(in_body),
            &format!("the silent mirror's attempt got as far as a body: {tried:#?}"),
        )?,
        _ => {}
    }
    // How long one attempt may take: a deadline's worth for the faults that
    // wait for one, a transfer of the kernel for the rest.
    let (attempt_min_ms, attempt_max_ms) = match fault {
        Fault::Hang => (STALL_MS, STALL_MS + 3_000),
        // ureq applies its per-read deadline to the response head too, so
        // the head gets the stall's 10 s, not the first-byte deadline's 20.
        Fault::Silent => (STALL_MS, STALL_MS + 3_000),
        Fault::Trickle { .. } => (RATE_WINDOW_MS, RATE_WINDOW_MS + 3_000),
        _ => (0, 10_000),
    };
    match e.outcome {
        "refused" => check(
            &vm,
            tried.len() == 1,
            &format!("a refusing mirror was asked again: {tried:#?}"),
        )?,
        _ if attempt_min_ms == 0 => check(
            &vm,
            tried.len() >= 2,
            &format!("a transport fault was not retried within rd.retry={RETRY_S}: {tried:#?}"),
        )?,
        _ => {}
    }
    let took = failure["t_ms"].as_u64().unwrap_or(0) - fetch["t_ms"].as_u64().unwrap_or(0);
    let budget = RETRY_S * 1000 + attempt_max_ms;
    check(
        &vm,
        (attempt_min_ms..=budget).contains(&took),
        &format!(
            "the verify stage failed {took} ms after it began, not within {attempt_min_ms}..={budget} ms"
        ),
    )?;
    let (policy, action) = match onfail {
        "poweroff" => (json!({ "action": "poweroff" }), "power off"),
        _ => (json!({ "action": "reboot", "delay_s": 0 }), "reboot"),
    };
    check(
        &vm,
        failure["policy"] == policy,
        &format!("not the policy phase.onfail={onfail}: {failure}"),
    )?;
    wait_power(&mut vm, action, SHORT)?;
    // -no-reboot: a reboot ends QEMU as a power-off does.
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        !vm.events().iter().any(|e| e["event"] == "kexec"),
        "something was kexec'd",
    )?;
    eprintln!(
        "[alone-{name}-{ARCH}] {} after {took} ms of verify, {} attempt(s); {:.1} s of QEMU",
        e.kind,
        tried.len(),
        vm.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn x86_64_alone_not_found() -> Result<()> {
    alone("404", |_| Fault::NotFound, "poweroff")
}

#[test]
fn x86_64_alone_redirect_loop() -> Result<()> {
    alone("redirect-loop", |_| Fault::RedirectLoop, "reboot:0")
}

#[test]
fn x86_64_alone_https_to_http_redirect() -> Result<()> {
    alone(
        "downgrade",
        |r| Fault::Downgrade {
            to_port: r.good_port,
        },
        "poweroff",
    )
}

#[test]
fn x86_64_alone_garbage() -> Result<()> {
    alone("garbage", |_| Fault::Garbage, "reboot:0")
}

#[test]
fn x86_64_alone_short_content_length() -> Result<()> {
    alone(
        "short-length",
        |_| Fault::ShortLength { by: LIE },
        "poweroff",
    )
}

#[test]
fn x86_64_alone_long_content_length() -> Result<()> {
    alone("long-length", |_| Fault::LongLength { by: LIE }, "reboot:0")
}

#[test]
fn x86_64_alone_endless_chunked_body() -> Result<()> {
    alone("endless-chunked", |_| Fault::EndlessChunked, "poweroff")
}

#[test]
fn x86_64_alone_trickle() -> Result<()> {
    alone("trickle", |_| Fault::Trickle { bytes_per_s: 1 }, "reboot:0")
}

#[test]
fn x86_64_alone_hang() -> Result<()> {
    alone("hang", |_| Fault::Hang, "poweroff")
}

/// Not among the failover's mirrors: it would add a deadline per artifact
/// to what the hang already shows there.
#[test]
fn x86_64_alone_silent_before_the_response_head() -> Result<()> {
    alone("silent", |_| Fault::Silent, "reboot:0")
}

/// Row 21, a late link: the NIC's link is down when the machine starts
/// (QEMU started paused, `set_link` off before it runs) and comes up 30 s
/// after the NIC's driver has loaded. The init waits for carrier in
/// `rd.net.timeout.carrier` rounds inside `rd.retry`, gets it, and boots:
/// DHCP, the manifest, both artifacts, the kexec, the second kernel's
/// report with the signed marker.
#[test]
fn x86_64_a_link_that_comes_up_30_s_late_boots() -> Result<()> {
    const LATE: Duration = Duration::from_secs(30);
    const CARRIER_S: u64 = 10;
    let mark = marker("link-late", ARCH);
    let release = release(&mark)?;
    let scratch = tempfile::tempdir()?;
    let mut monitor = None;
    let mut vm = boot_with(
        "link-late",
        &release.bundle,
        &format!(
            "phase.provider={} rd.net.timeout.carrier={CARRIER_S} phase.onfail=poweroff",
            release.good
        ),
        |spec| {
            spec.extra_args.push("-S".into());
            monitor = Some(QmpListener::attach(spec, scratch.path()));
        },
    )?;
    let mut qmp = monitor
        .ok_or_else(|| anyhow::anyhow!("no monitor attached"))??
        .accept(SHORT)?;
    // The NIC of VmSpec::user_net is on netdev net0.
    qmp.set_link("net0", false)?;
    qmp.cont()?;
    let modules = wait_stage(&mut vm, "modules", NETBOOT)?;
    // The link's absence is the fault; its length is the scenario, not a
    // wait for anything.
    std::thread::sleep(LATE);
    qmp.set_link("net0", true)?;
    let network = wait_stage(&mut vm, "network", NETBOOT)?;
    let net = &network["network"];
    let waited = network["t_ms"].as_u64().unwrap_or(0) - modules["t_ms"].as_u64().unwrap_or(0);
    check(
        &vm,
        net["address"] == "10.0.2.15" && net["method"] == "dhcp",
        &format!("DHCP did not give 10.0.2.15 once the link was up: {net}"),
    )?;
    // 30 s of no carrier is at least two full carrier budgets of 10 s.
    check(
        &vm,
        net["retries"].as_u64().is_some_and(|r| r >= 2) && waited >= LATE.as_millis() as u64,
        &format!(
            "the network came up {waited} ms after the driver, after {} failed attempts",
            net["retries"]
        ),
    )?;
    check(
        &vm,
        vm.console_count(&format!(
            "no carrier on eth0 within rd.net.timeout.carrier={CARRIER_S} s"
        )) >= 2,
        "the console does not say twice that carrier was waited for",
    )?;
    wait_stage(&mut vm, "verify", NETBOOT)?;
    vm.wait_event("kexec", NETBOOT)?;
    let report = vm.wait_event("report", NETBOOT)?;
    check(
        &vm,
        report["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains(&mark)),
        "the second kernel's report lacks the signed marker",
    )?;
    vm.expect_clean_exit(SHORT)?;
    eprintln!(
        "[link-late-{ARCH}] network {waited} ms after the driver, {} retries; {:.1} s of QEMU",
        net["retries"],
        vm.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Row 21, a silent DHCP server: the machine's NIC is on a LAN of the
/// test's own (a network namespace with a bridge and a tap) where no DHCP
/// server answers. Each attempt's exchange ends at `rd.net.timeout.dhcp`,
/// attempts repeat while `rd.retry` lasts, and then the failure names the
/// timeout and the policy follows — on time.
#[test]
fn x86_64_a_dhcp_server_that_never_answers_takes_the_policy_on_time() -> Result<()> {
    const DHCP_S: u64 = 5;
    const RETRY_S: u64 = 8;
    let lan = Lan::new()?;
    let bundle = artifacts::bundle(ARCH, SPEC, Variant::Release)?;
    let mut spec = VmSpec::direct(
        format!("dhcp-silent-{ARCH}"),
        ARCH,
        &bundle.kernel.image,
        &bundle.initrd,
        format!(
            "phase.provider=http://{}/ rd.net.timeout.dhcp={DHCP_S} rd.retry={RETRY_S} phase.onfail=poweroff",
            xtask::lan::SERVER
        ),
    );
    spec.tap = Some(lan.tap());
    let mut vm = Vm::start(&spec)?;
    let modules = wait_stage(&mut vm, "modules", NETBOOT)?;
    let failure = failure_in(&mut vm, "network", NETBOOT)?;
    check(
        &vm,
        failure["kind"] == "dhcp_timeout"
            && failure["detail"]["interface"] == "eth0"
            && failure["detail"]["timeout_s"] == DHCP_S
            && failure["detail"]["naks"] == 0
            // DISCOVER at 0, ~1 and ~3 s (backoff 1, 2, 4 with jitter).
            && failure["detail"]["sent"].as_u64().is_some_and(|n| n >= 3),
        &format!("the failure is not a DHCP timeout after {DHCP_S} s: {failure}"),
    )?;
    let tried = failure["tried"].as_array().cloned().unwrap_or_default();
    check(
        &vm,
        tried.len() >= 2
            && tried.iter().all(|t| {
                t["error"].as_str().is_some_and(|e| {
                    e.contains(&format!(
                        "no DHCP lease on eth0 within rd.net.timeout.dhcp={DHCP_S} s"
                    ))
                })
            }),
        &format!("not every attempt was a DHCP timeout, or there was no retry: {tried:#?}"),
    )?;
    // At least rd.retry (attempts go on while it lasts); at most rd.retry,
    // the attempt running when it ran out, the pause between attempts and
    // slack for the carrier wait and the report.
    let took = failure["t_ms"].as_u64().unwrap_or(0) - modules["t_ms"].as_u64().unwrap_or(0);
    let most = (RETRY_S + DHCP_S + 1 + 2) * 1000;
    check(
        &vm,
        (RETRY_S * 1000..=most).contains(&took),
        &format!(
            "the network stage failed after {took} ms, not within {} ..= {most} ms",
            RETRY_S * 1000
        ),
    )?;
    check(
        &vm,
        failure["policy"] == json!({ "action": "poweroff" }),
        &format!("not the policy asked for: {failure}"),
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    eprintln!(
        "[dhcp-silent-{ARCH}] failed {took} ms after the driver, {} attempts; {:.1} s of QEMU",
        tried.len(),
        vm.elapsed().as_secs_f64()
    );
    Ok(())
}
