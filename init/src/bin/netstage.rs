//! `netstage`: the init's network stage as an ordinary program, so it can be
//! tested against a real DHCP server inside network namespaces.
//!
//! ```text
//! ip netns exec NS unshare --pid --fork --uts netstage --resolv-conf FILE -- ip=dhcp rd.net.timeout.dhcp=5 …
//! ```
//!
//! The arguments after `--` are kernel command-line parameters. With
//! `phase.mode=local` the discover stage follows on the configured link. On
//! success it prints the stages' events and exits 0; on failure it follows the init's
//! failure policy, which ends in reboot(2). It therefore refuses to run
//! unless it is PID 1 of its own PID namespace, where reboot(2) only ends the
//! namespace: its parent then sees it killed by SIGHUP (reboot) or SIGINT
//! (halt, power off).

use std::path::PathBuf;
use std::time::Duration;

use phase_init::network::{self, Target};
use phase_init::plan::Mode;
use phase_init::plan::{self, Stage};
use phase_init::policy::{self, Failure};
use phase_init::{cmdline, error_chain, event, info, sys};
use phase_init::{discover, fetch};
use serde_json::json;

fn main() {
    if sys::getpid() != 1 {
        eprintln!(
            "netstage: run me as PID 1 of a new PID namespace (unshare --pid --fork --uts …): \
             a failure ends in the init's failure policy, which calls reboot(2)"
        );
        std::process::exit(2);
    }
    let mut args = std::env::args().skip(1);
    let mut resolv_conf = PathBuf::from("/etc/resolv.conf");
    let mut line = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--resolv-conf" => match args.next() {
                Some(path) => resolv_conf = PathBuf::from(path),
                None => usage(),
            },
            "--" => line.extend(args.by_ref()),
            _ => usage(),
        }
    }
    policy::install_panic_hook();
    // Events go to standard error as `phase-event: {…}` lines.
    event::open_channel(Duration::ZERO);
    let parsed = plan::parse(&cmdline::split(line.join(" ").as_bytes()), false);
    let plan = parsed.plan;
    policy::configure(plan.onfail, false);
    if !parsed.errors.is_empty() {
        let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        policy::fail(Failure::new(Stage::Plan, errors.join("; ")));
    }
    policy::enter(Stage::Network);
    let target = Target {
        resolv_conf,
        set_hostname: true,
    };
    let mut tried = Vec::new();
    let mut say = |l: &str| info!("network: {l}");
    match network::run(&plan, &target, &mut say, &mut tried) {
        Ok(configured) => {
            info!(
                "network: {} {}/{} via {:?}",
                configured.interface, configured.address, configured.prefix_len, configured.gateway
            );
            event::emit(
                "stage",
                json!({ "stage": Stage::Network, "network": configured }),
            );
            if plan.mode == Mode::Local {
                policy::enter(Stage::Discover);
                let arch = phase_manifest::Arch::native().map_or("", |a| a.as_str());
                let budget = fetch::Budget::new(plan.retry);
                let found = discover::run(&plan, &configured, arch, Some(&budget));
                if found.providers.is_empty() {
                    policy::fail(found.nothing(&plan));
                }
                info!("discover: {}", found.summary());
                event::emit(
                    "stage",
                    json!({ "stage": Stage::Discover, "discovered": found }),
                );
            }
        }
        Err(e) => {
            let mut failure = Failure::new(Stage::Network, error_chain(&e));
            failure.tried = tried.into_iter().map(policy::Tried::text).collect();
            policy::fail(failure)
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: netstage [--resolv-conf FILE] -- PARAMETER…");
    std::process::exit(2);
}
