//! `cargo xtask bench discover`: discovery time to the first provider on a
//! LAN of the harness's own (`crate::lan`), with `phase announce`'s
//! responder announcing one provider — the init's DNS-SD browser against
//! avahi's, the same responder answering both, in the same run.
//!
//! - phase: a machine booted with `phase.mode=local` reports, in its
//!   discover event, the milliseconds from the stage's start (socket
//!   opened, first query after the RFC 6762 20–120 ms delay) to the first
//!   provider resolved (PTR, SRV, TXT, A) and usable for its arch. Each run
//!   is a fresh boot, so nothing is cached. The provider serves nothing,
//!   so the fetch fails at once (`rd.retry=0`) and the machine powers off:
//!   only discovery is timed.
//! - avahi: a fresh avahi-daemon (browse only, cold cache) on another
//!   machine of the LAN (a namespace of its own on the bridge), and
//!   `avahi-browse -rp _phase-boot._tcp` timed on the host clock from its
//!   start to its first resolved (`=`) line — what a person on the LAN
//!   would run to find the same provider — once after each boot.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use phase_tools::testnet::{Avahi, Running};

use super::{Samples, Table};
use crate::artifacts::{self, Variant};
use crate::lan::{self, SERVER};
use crate::vm::{Vm, VmSpec};
use crate::{Arch, provider, setup};

/// Runs the benchmark on one arch or both.
pub fn run(runs: usize, only: Option<Arch>) -> Result<()> {
    setup::ensure_all()?;
    let arches: Vec<Arch> = match only {
        Some(a) => vec![a],
        None => Arch::ALL.to_vec(),
    };
    let dir = tempfile::Builder::new()
        .prefix("phase-bench-discover-")
        .tempdir()?;
    let mut net = lan::Lan::new()?;
    net.start_dhcp(dir.path(), None)?;
    // The provider's tree is empty: discovery finds it, the fetch gets a
    // 404 and the machine powers off.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    let nginx = provider::nginx_in(&net.ns, std::net::IpAddr::V4(SERVER), &tree, dir.path())?;
    let url = format!("http://{}/", nginx.http);
    net.announce(&url, "bench provider", 0)?;

    let mut table = Table::new(&["arch", "browser", "runs", "median ms", "min ms", "max ms"]);
    for arch in arches {
        eprintln!("==> discovery benchmark on {arch}: {runs} boots");
        let bundle = artifacts::bundle(arch, "tests/specs/netboot.toml", Variant::Release)?;
        let mut phase = Samples::default();
        let mut avahi = Samples::default();
        for i in 0..runs {
            let mut spec = VmSpec::direct(
                format!("bench-discover-{arch}-{i}"),
                arch,
                &bundle.kernel.image,
                &bundle.initrd,
                "phase.mode=local phase.discover.timeout=5 rd.retry=0 phase.onfail=poweroff quiet",
            );
            spec.tap = Some(net.tap());
            let mut vm = Vm::start(&spec)?;
            let discover =
                vm.wait_event_where("discover stage", Duration::from_secs(300), |e| {
                    e["event"] == "stage" && e["stage"] == "discover"
                })?;
            vm.wait_event("failure", Duration::from_secs(120))?;
            vm.expect_clean_exit(Duration::from_secs(60))?;
            let found = &discover["discovered"];
            let ours = url.trim_end_matches('/');
            if !found["providers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|u| u == ours))
            {
                bail!("{arch}: run {i} did not discover {ours}: {discover}");
            }
            let ms = found["first_ms"]
                .as_f64()
                .with_context(|| format!("{arch}: run {i}: no first_ms in {discover}"))?;
            eprintln!("    phase {arch} run {i}: first provider after {ms} ms");
            phase.push(ms);
            // The anchor, alternating with the boots.
            let took = avahi_browse(&net)?;
            eprintln!("    avahi run: first resolved after {took:.1} ms");
            avahi.push(took);
        }
        table.row(row(arch.name(), "phase (init, TCG guest)", &phase));
        table.row(row(arch.name(), "avahi-browse -rp (host)", &avahi));
    }
    drop(nginx);
    println!();
    println!(
        "Discovery time to the first provider, median of {runs}: one provider announced by \
         `phase announce` on the harness's LAN (netns bridge + tap)"
    );
    table.print();
    println!(
        "phase: the init's discover stage start → first usable provider (PTR+SRV+TXT+A), \
         in a fresh TCG guest each run (-smp 1); avahi: a fresh avahi-daemon 0.8 (cold cache) \
         on the same bridge, avahi-browse start → first resolved line, host clock, \
         alternating with that arch's boots. The init's first query waits a random \
         20–120 ms (RFC 6762 §5.2)."
    );
    Ok(())
}

fn row(arch: &str, browser: &str, s: &Samples) -> Vec<String> {
    vec![
        arch.into(),
        browser.into(),
        s.len().to_string(),
        format!("{:.0}", s.median()),
        format!("{:.0}", s.min()),
        format!("{:.0}", s.max()),
    ]
}

/// One cold avahi browse from another machine on the LAN: milliseconds from
/// avahi-browse's start to its first resolved line.
fn avahi_browse(net: &lan::Lan) -> Result<f64> {
    let host = net.host(Ipv4Addr::new(10, 79, 0, 2))?;
    let avahi = Avahi::start(&host, "eth0", None)?;
    let mut command = host.command("avahi-browse", &["-r", "-p", "_phase-boot._tcp"]);
    command.env("DBUS_SYSTEM_BUS_ADDRESS", &avahi.bus_address);
    let started = Instant::now();
    let mut browse = Running::start(command)?;
    browse.wait_for(true, "=;", Duration::from_secs(30))?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    // avahi-browse and the daemon go before the namespace they run in.
    drop(browse);
    drop(avahi);
    drop(host);
    Ok(took)
}
