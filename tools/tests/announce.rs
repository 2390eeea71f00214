//! `phase announce`, `phase serve --announce` and `phase discover` over a
//! real link: two network namespaces this test creates and removes, joined
//! by a veth pair (10.79.N.1/24 announces, 10.79.N.2/24 browses), with
//! multicast on 224.0.0.251 between them and nothing else reachable. The
//! browser is `phase discover`, which drives the crate's `Browser` over a
//! UDP socket as the init will. When avahi-daemon, avahi-browse and
//! dbus-daemon are installed, avahi also runs on the browsing side (on its
//! own private D-Bus) and must see the announcement, with our browser
//! sharing port 5353 with it.
//!
//! Needs root and iproute2; without them each test says so and does nothing
//! else, unless `PHASE_REQUIRE_TOOLS` is set, when it fails.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::Fixture;
use phase_tools::testnet::{self, Avahi, Netns, Running};
use rustix::process::{Signal, kill_process};
use serde_json::Value;

const PHASE: &str = env!("CARGO_BIN_EXE_phase");
/// A bound for every wait on a child's output; the events come far sooner.
const WAIT: Duration = Duration::from_secs(30);

macro_rules! require {
    ($check:expr) => {
        if let Some(why) = $check {
            phase_testkit::skip(module_path!(), format_args!("{why}"));
            return;
        }
    };
}

/// Two namespaces and a veth pair; removed on drop.
struct Lan {
    announcer_ns: Netns,
    browser_ns: Netns,
    announcer_if: String,
    browser_if: String,
    announcer_ip: String,
}

impl Lan {
    fn new() -> Lan {
        let announcer_ns = Netns::new("ann").unwrap();
        let browser_ns = Netns::new("brw").unwrap();
        let id = testnet::unique("");
        let n: u32 = id.rsplit('x').next().unwrap().parse().unwrap();
        let lan = Lan {
            // IFNAMSIZ: at most 15 characters.
            announcer_if: format!("pa{id}"),
            browser_if: format!("pb{id}"),
            announcer_ip: format!("10.79.{}.1", n % 250),
            announcer_ns,
            browser_ns,
        };
        testnet::run(&[
            "ip",
            "link",
            "add",
            &lan.announcer_if,
            "netns",
            &lan.announcer_ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &lan.browser_if,
            "netns",
            &lan.browser_ns.name,
        ])
        .unwrap();
        let browser_ip = format!("10.79.{}.2/24", n % 250);
        let announcer_ip = format!("{}/24", lan.announcer_ip);
        for (ns, interface, address) in [
            (&lan.announcer_ns, &lan.announcer_if, &announcer_ip),
            (&lan.browser_ns, &lan.browser_if, &browser_ip),
        ] {
            ns.ip(&["addr", "add", address, "dev", interface]).unwrap();
            ns.ip(&["link", "set", interface, "multicast", "on", "up"])
                .unwrap();
        }
        lan
    }

    fn announcer(&self, args: &[&str]) -> Command {
        self.announcer_ns.command(PHASE, args)
    }

    fn discover(&self, args: &[&str]) -> Command {
        let mut all = vec!["discover", "--interface", &self.browser_if, "--json"];
        all.extend_from_slice(args);
        self.browser_ns.command(PHASE, &all)
    }
}

fn start(command: Command) -> Running {
    Running::start(command).unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn discover(lan: &Lan, args: &[&str]) -> (bool, Value) {
    let output = lan.discover(args).output().unwrap();
    (output.status.success(), json(&output))
}

#[test]
fn a_browser_on_the_link_finds_the_announced_tree_until_goodbye() {
    require!(testnet::missing_netns());
    let lan = Lan::new();
    let url = format!("http://{}:8080/boot/tree/", lan.announcer_ip);
    let mut announcer = start(lan.announcer(&[
        "announce",
        "--url",
        &url,
        "--interface",
        &lan.announcer_if,
        "--name",
        "Rack 4 mirror",
        "--channels",
        "stable,beta",
        "--arches",
        "x86_64",
        "--priority",
        "4",
    ]));
    // Printed once the probes found no one else using the names.
    let line = announcer.wait_for(true, "announcing", WAIT).unwrap();
    assert!(line.contains(&url), "{line}");

    let (found, report) = discover(
        &lan,
        &["--channel", "beta", "--arch", "x86_64", "--seconds", "2"],
    );
    assert!(found, "{report}");
    let providers = report["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1, "{report}");
    assert_eq!(providers[0]["instance"], "Rack 4 mirror");
    assert_eq!(providers[0]["url"], url.as_str());
    assert_eq!(providers[0]["priority"], 4);

    // The TXT record's arches are honoured: an aarch64 machine skips it,
    // and says why.
    let (found, report) = discover(&lan, &["--arch", "aarch64", "--seconds", "2"]);
    assert!(!found, "{report}");
    let reason = report["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("serves arches [\"x86_64\"]"), "{report}");

    // A browser that has heard the provider sees it leave on SIGTERM.
    let mut browser = start(lan.discover(&["--seconds", "6"]));
    browser
        .wait_for(false, "heard \"Rack 4 mirror\"", WAIT)
        .unwrap();
    kill_process(announcer.pid(), Signal::TERM).unwrap();
    let (clean, out) = announcer.finish().unwrap();
    assert!(clean, "{out}");
    assert!(out.contains("goodbye sent"), "{out}");
    let (found, out) = browser.finish().unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(!found, "{report}");
    assert_eq!(
        report["skipped"][0]["reason"], "said goodbye (a PTR record with TTL 0)",
        "{report}"
    );
}

#[test]
fn serve_announce_points_a_browser_at_a_tree_verify_accepts() {
    require!(testnet::missing_netns());
    let lan = Lan::new();
    let f = Fixture::new();
    let tree = f.tree.to_str().unwrap();
    let mut server = start(lan.announcer(&[
        "serve",
        tree,
        "--listen",
        "0.0.0.0:0",
        "--announce",
        "--interface",
        &lan.announcer_if,
        "--name",
        "dev tree",
    ]));
    let serving = server.wait_for(true, "serving", WAIT).unwrap();
    let port = serving.rsplit(':').next().unwrap().trim_end_matches('/');
    let announcing = server.wait_for(true, "announcing", WAIT).unwrap();
    let url = format!("http://{}:{port}/", lan.announcer_ip);
    assert!(announcing.contains(&url), "{announcing} vs {url}");

    let (found, report) = discover(&lan, &["--arch", "aarch64", "--seconds", "2"]);
    assert!(found, "{report}");
    let discovered = report["providers"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(discovered, url);

    // What was discovered is a provider: the manifest verifies from the
    // browsing side, over the link.
    let manifest = format!("{discovered}stable/aarch64/manifest.json");
    let public = f.public.to_str().unwrap();
    let verify = lan
        .browser_ns
        .command(
            PHASE,
            &["verify", "--trust", public, "--artifacts", &manifest],
        )
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn avahi_on_the_link_sees_the_announcement() {
    require!(testnet::missing_netns());
    require!(testnet::missing_avahi());
    let lan = Lan::new();
    let avahi = Avahi::start(&lan.browser_ns, &lan.browser_if, None).unwrap();
    let url = format!("http://{}:8443/tree/", lan.announcer_ip);
    let mut announcer = start(lan.announcer(&[
        "announce",
        "--url",
        &url,
        "--interface",
        &lan.announcer_if,
        "--name",
        "Edge cache",
        "--arches",
        "x86_64,aarch64",
    ]));
    announcer.wait_for(true, "announcing", WAIT).unwrap();

    // -r resolves each instance (SRV, TXT, A); -p prints parsable lines.
    let mut command = lan
        .browser_ns
        .command("avahi-browse", &["-r", "-p", "_phase-boot._tcp"]);
    command.env("DBUS_SYSTEM_BUS_ADDRESS", &avahi.bus_address);
    let mut browse = start(command);
    let resolved = browse.wait_for(true, "=;", WAIT).unwrap();
    drop(browse);
    // =;IF;IPv4;NAME;TYPE;DOMAIN;HOST;ADDRESS;PORT;TXT
    let fields: Vec<&str> = resolved.splitn(10, ';').collect();
    assert_eq!(fields.len(), 10, "{resolved}");
    assert_eq!(fields[3], "Edge\\032cache", "{resolved}");
    assert_eq!(fields[4], "_phase-boot._tcp", "{resolved}");
    assert_eq!(fields[6], "edge-cache.local", "{resolved}");
    assert_eq!(fields[7], lan.announcer_ip, "{resolved}");
    assert_eq!(fields[8], "8443", "{resolved}");
    for txt in [
        "\"txtvers=1\"",
        "\"path=/tree/\"",
        "\"scheme=http\"",
        "\"arches=x86_64,aarch64\"",
    ] {
        assert!(fields[9].contains(txt), "{txt} missing: {resolved}");
    }

    // Our browser shares port 5353 with avahi-daemon in the same namespace.
    let (found, report) = discover(&lan, &["--arch", "aarch64", "--seconds", "2"]);
    assert!(found, "{report}");
    assert_eq!(report["providers"][0]["url"], url.as_str());
}

/// The service file README.md gives for avahi-daemon.
fn readme_service_file() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let local = &readme[readme
        .find("## Local mode")
        .expect("README has a Local mode section")..];
    let start = local.find("```xml\n").expect("Local mode has an XML block") + 7;
    let end = start + local[start..].find("```").unwrap();
    local[start..end].to_owned()
}

#[test]
fn the_browser_finds_what_avahi_announces_from_the_readme_service_file() {
    require!(testnet::missing_netns());
    require!(testnet::missing_avahi());
    let lan = Lan::new();
    let xml = readme_service_file();
    assert!(xml.contains("<type>_phase-boot._tcp</type>"), "{xml}");
    let _avahi = Avahi::start(&lan.announcer_ns, &lan.announcer_if, Some(&xml)).unwrap();
    let (found, report) = discover(&lan, &["--arch", "aarch64", "--seconds", "3"]);
    assert!(found, "{report}");
    let provider = &report["providers"][0];
    assert_eq!(
        provider["url"],
        format!("http://{}:80/boot/tree/", lan.announcer_ip).as_str(),
        "{report}"
    );
    assert_eq!(provider["priority"], 10, "{report}");
    let instance = provider["instance"].as_str().unwrap();
    assert!(instance.starts_with("Phase Boot on "), "{report}");
    // The channels key is honoured on avahi's records too.
    let (found, report) = discover(&lan, &["--channel", "beta", "--seconds", "2"]);
    assert!(!found, "{report}");
}
