//! The network stage against a real DHCP server: Debian's dnsmasq on one end
//! of a veth pair, the init's network stage (`netstage`) on the other, each
//! in a network namespace this test creates and removes. `netstage` runs as
//! PID 1 of its own PID and UTS namespaces, so its failure policy
//! (reboot(2)) ends only that namespace: the policy taken shows as the
//! signal that killed it (SIGHUP for reboot, SIGINT for power off).
//!
//! Needs root, iproute2, util-linux `unshare` and `/usr/sbin/dnsmasq`; without
//! them each test says so and does nothing else.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const CLIENT_MAC: &str = "52:54:00:5e:00:01";

fn missing_tools() -> Option<String> {
    // The effective uid, from /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "unshare"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new(DNSMASQ).exists() {
        return Some(format!(
            "{DNSMASQ} is not installed (apt-get install dnsmasq-base)"
        ));
    }
    None
}

macro_rules! require_tools {
    () => {
        if let Some(why) = missing_tools() {
            phase_testkit::skip("DHCP against dnsmasq in a network namespace", why);
            return;
        }
    };
}

fn run(cmd: &[&str]) {
    let status = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

fn output(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Two namespaces joined by a veth pair: the server end has 10.77.0.1/24,
/// the client end nothing. Removed on drop.
struct Net {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dir: PathBuf,
    dnsmasq: Option<Child>,
    dnsmasq_log: Option<mpsc::Receiver<String>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// `peer_up`: whether the server end is up (the client sees carrier).
    fn new(peer_up: bool) -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let net = Net {
            server_ns: format!("phase-srv-{id}"),
            client_ns: format!("phase-cli-{id}"),
            // IFNAMSIZ: at most 15 characters.
            server_if: format!("ps{id}"),
            client_if: format!("pc{id}"),
            dir: std::env::temp_dir().join(format!("phase-netns-{id}")),
            dnsmasq: None,
            dnsmasq_log: None,
        };
        std::fs::create_dir_all(&net.dir).unwrap();
        run(&["ip", "netns", "add", &net.server_ns]);
        run(&["ip", "netns", "add", &net.client_ns]);
        run(&[
            "ip",
            "link",
            "add",
            &net.server_if,
            "netns",
            &net.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_if,
            "netns",
            &net.client_ns,
            "address",
            CLIENT_MAC,
        ]);
        let s = |args: &[&str]| {
            let mut cmd = vec!["ip", "-n", &net.server_ns];
            cmd.extend_from_slice(args);
            run(&cmd);
        };
        s(&["addr", "add", "10.77.0.1/24", "dev", &net.server_if]);
        if peer_up {
            s(&["link", "set", &net.server_if, "up"]);
        }
        net
    }

    /// Starts dnsmasq on the server end with `extra` options and waits for it
    /// to say its DHCP socket is bound.
    fn start_dnsmasq(&mut self, extra: &[&str]) {
        let leases = self.dir.join("leases");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server_ns, DNSMASQ])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--log-facility=-",
                "--log-dhcp",
                "--port=0",
                "--bind-interfaces",
                "--dhcp-authoritative",
                // Answer at once instead of pinging the address first.
                "--no-ping",
                "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h",
            ])
            .arg(format!("--interface={}", self.server_if))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting dnsmasq");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // dnsmasq logs its DHCP range once the socket is ready.
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("dnsmasq did not report its DHCP range");
            if line.contains("DHCP, IP range") {
                break;
            }
        }
        self.dnsmasq = Some(child);
        self.dnsmasq_log = Some(rx);
    }

    /// Stops dnsmasq and returns everything it logged after starting.
    fn stop_dnsmasq(&mut self) -> Vec<String> {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.dnsmasq_log
            .take()
            .map(|rx| rx.iter().collect())
            .unwrap_or_default()
    }

    fn client(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "-n", &self.client_ns];
        cmd.extend_from_slice(args);
        output(&cmd)
    }

    /// Runs the network stage in the client namespace with `params` (a
    /// kernel command line). A watchdog kills it if it outlives `limit`,
    /// so a hang fails the test instead of stalling it.
    fn netstage(&self, params: &str, limit: Duration) -> Outcome {
        self.netstage_watching(params, limit, &mut |_| {})
    }

    /// Like [`Net::netstage`], calling `on_line` with each line it logs as
    /// it logs it, so the test can act on what the stage is doing.
    fn netstage_watching(
        &self,
        params: &str,
        limit: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Outcome {
        let resolv_conf = self.dir.join("resolv.conf");
        let _ = std::fs::remove_file(&resolv_conf);
        let params = params.replace("IFACE", &self.client_if);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .args(["unshare", "--pid", "--fork", "--uts"])
            .arg(env!("CARGO_BIN_EXE_netstage"))
            .arg("--resolv-conf")
            .arg(&resolv_conf)
            .arg("--")
            .args(params.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting netstage");
        let pid = child.id();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(limit).is_err() {
                // Timed out (or the test panicked): end the namespace's init.
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                return true;
            }
            false
        });
        let mut stderr = String::new();
        for line in BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            on_line(&line);
            stderr.push_str(&line);
            stderr.push('\n');
        }
        let status = child.wait().unwrap();
        let _ = done_tx.send(());
        let killed_by_watchdog = watchdog.join().unwrap();
        assert!(
            !killed_by_watchdog,
            "netstage outlived {limit:?}; stderr:\n{stderr}"
        );
        let events = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("phase-event: "))
            .map(|j| serde_json::from_str(j).unwrap())
            .collect();
        Outcome {
            status,
            stderr,
            events,
            resolv_conf: std::fs::read_to_string(&resolv_conf).ok(),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Outcome {
    status: ExitStatus,
    stderr: String,
    events: Vec<Value>,
    resolv_conf: Option<String>,
}

impl Outcome {
    fn event(&self, kind: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event; stderr:\n{}", self.stderr))
    }
}

/// dnsmasq options for a server that hands out everything the client uses.
const FULL_OPTIONS: &[&str] = &[
    "--dhcp-option=option:router,10.77.0.1",
    "--dhcp-option=option:dns-server,10.77.0.1,10.77.0.2",
    "--dhcp-option=option:domain-name,phase.test",
    "--dhcp-option=option:mtu,1400",
    "--dhcp-option=121,10.99.0.0/16,10.77.0.254,0.0.0.0/0,10.77.0.1",
];

#[test]
fn lease_is_obtained_and_applied() {
    require_tools!();
    let mut net = Net::new(true);
    let mut options = FULL_OPTIONS.to_vec();
    let host = format!("--dhcp-host={CLIENT_MAC},10.77.0.60,node7");
    options.push(&host);
    net.start_dnsmasq(&options);
    // Every way of choosing the interface finds the same one.
    for params in [
        "ip=dhcp phase.onfail=poweroff",
        "ip=IFACE:dhcp phase.onfail=poweroff",
        "BOOTIF=01-52-54-00-5e-00-01 phase.onfail=poweroff",
    ] {
        let out = net.netstage(params, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{params}: {}\n{}",
            out.status,
            out.stderr
        );
        let n = &out.event("stage")["network"];
        assert_eq!(n["interface"], net.client_if.as_str(), "{params}");
        assert_eq!(n["mac"], CLIENT_MAC);
        assert_eq!(n["method"], "dhcp");
        assert_eq!(n["address"], "10.77.0.60");
        assert_eq!(n["prefix_len"], 24);
        assert_eq!(n["gateway"], "10.77.0.1");
        assert_eq!(n["server"], "10.77.0.1");
        assert_eq!(n["dns"], serde_json::json!(["10.77.0.1", "10.77.0.2"]));
        assert_eq!(n["domain"], "phase.test");
        assert_eq!(n["hostname"], "node7");
        assert_eq!(n["mtu"], 1400);
        assert_eq!(n["lease_s"], 3600);
        assert_eq!(n["naks"], 0);
        // Applied: address, MTU, routes from option 121 (not option 3), resolv.conf.
        let addr = net.client(&["-4", "addr", "show", "dev", &net.client_if]);
        assert!(
            addr.contains("inet 10.77.0.60/24 brd 10.77.0.255"),
            "{addr}"
        );
        assert!(addr.contains("mtu 1400"), "{addr}");
        let routes = net.client(&["-4", "route", "show"]);
        assert!(
            routes.contains(&format!(
                "default via 10.77.0.1 dev {} proto dhcp src 10.77.0.60",
                net.client_if
            )),
            "{routes}"
        );
        assert!(
            routes.contains(&format!(
                "10.99.0.0/16 via 10.77.0.254 dev {} proto dhcp src 10.77.0.60",
                net.client_if
            )),
            "{routes}"
        );
        assert_eq!(
            out.resolv_conf.as_deref(),
            Some(
                format!(
                    "# Written by the Phase Boot init from DHCP on {}.\nsearch phase.test\n\
                     nameserver 10.77.0.1\nnameserver 10.77.0.2\n",
                    net.client_if
                )
                .as_str()
            )
        );
        net.client(&["addr", "flush", "dev", &net.client_if]);
    }
    let log = net.stop_dnsmasq();
    assert_eq!(
        log.iter().filter(|l| l.contains("DHCPACK(")).count(),
        3,
        "{log:#?}"
    );
}

#[test]
fn a_nak_restarts_the_exchange() {
    require_tools!();
    let mut net = Net::new(true);
    net.start_dnsmasq(FULL_OPTIONS);
    // INIT-REBOOT for an address on another network: an authoritative
    // server refuses it, and the client starts over with DISCOVER.
    let out = net.netstage(
        "ip=10.1.2.3:::::IFACE:dhcp phase.onfail=poweroff",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let n = &out.event("stage")["network"];
    assert_eq!(n["naks"], 1);
    let address = n["address"].as_str().unwrap();
    assert!(address.starts_with("10.77.0."), "{address}");
    assert!(
        out.stderr
            .contains("DHCP NAK from 10.77.0.1 (wrong network): starting over"),
        "{}",
        out.stderr
    );
    let log = net.stop_dnsmasq();
    let order: Vec<&str> = log
        .iter()
        .filter_map(|l| {
            ["DHCPNAK(", "DHCPOFFER(", "DHCPACK("]
                .into_iter()
                .find(|k| l.contains(k))
        })
        .collect();
    assert_eq!(order, ["DHCPNAK(", "DHCPOFFER(", "DHCPACK("], "{log:#?}");
}

/// A run that must fail: the failure report names `error`, and the policy
/// shows as the signal that ended the namespace.
fn assert_failed(out: &Outcome, error: &str, policy: &str, signal: i32) {
    assert_eq!(
        out.status.signal(),
        Some(signal),
        "{}\n{}",
        out.status,
        out.stderr
    );
    let failure = out.event("failure");
    assert_eq!(failure["stage"], "network");
    let text = failure["error"].as_str().unwrap();
    assert!(text.contains(error), "{text}");
    assert!(
        out.stderr.contains(&format!("policy: {policy}")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_silent_server_times_out_within_the_budget_and_takes_the_policy() {
    require_tools!();
    let table: &[(&str, &str, i32)] = &[
        (
            "poweroff",
            "power off (phase.onfail=poweroff)",
            libc::SIGINT,
        ),
        (
            "reboot:0",
            "reboot in 0 s (phase.onfail=reboot:0)",
            libc::SIGHUP,
        ),
    ];
    for (onfail, policy, signal) in table {
        let mut net = Net::new(true);
        // dnsmasq sees every DISCOVER and answers none: no client is known.
        net.start_dnsmasq(&["--dhcp-ignore=tag:!known"]);
        let out = net.netstage(
            &format!("ip=dhcp rd.net.timeout.dhcp=4 rd.retry=0 phase.onfail={onfail}"),
            Duration::from_secs(60),
        );
        assert_failed(
            &out,
            &format!(
                "no DHCP lease on {} within rd.net.timeout.dhcp=4 s (sent DISCOVER at 0.0 s, DISCOVER at ",
                net.client_if
            ),
            policy,
            *signal,
        );
        // The schedule 1 s, 2 s (±25 %) fits exactly three DISCOVERs into
        // 4 s; the next would be due after at least 5.25 s.
        let text = out.event("failure")["error"].as_str().unwrap().to_owned();
        let times: Vec<f64> = text
            .split("DISCOVER at ")
            .skip(1)
            .map(|t| t.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(times.len(), 3, "{text}");
        assert!(times.iter().all(|&t| t < 4.0), "{text}");
        let log = net.stop_dnsmasq();
        let ignored = log
            .iter()
            .filter(|l| l.contains("DHCPDISCOVER(") && l.contains("ignored"))
            .count();
        assert_eq!(ignored, 3, "the server saw every DISCOVER: {log:#?}");
    }
}

#[test]
fn no_link_and_no_carrier_take_the_policy() {
    require_tools!();
    let table: &[(bool, &str, &str)] = &[
        (
            false,
            "ip=IFACE:dhcp rd.net.timeout.carrier=1 rd.retry=0 phase.onfail=poweroff",
            "no carrier on IFACE within rd.net.timeout.carrier=1 s",
        ),
        (
            true,
            "ip=nosuch0:dhcp rd.net.timeout.iflink=1 rd.retry=0 phase.onfail=poweroff",
            "no network interface nosuch0 appeared within rd.net.timeout.iflink=1 s (links: lo, IFACE)",
        ),
    ];
    for (peer_up, params, error) in table {
        let net = Net::new(*peer_up);
        let out = net.netstage(params, Duration::from_secs(60));
        assert_failed(
            &out,
            &error.replace("IFACE", &net.client_if),
            "power off (phase.onfail=poweroff)",
            libc::SIGINT,
        );
    }
}

#[test]
fn carrier_that_comes_late_is_waited_for() {
    require_tools!();
    // (parameters, the line after which the server end comes up, retries)
    let table: &[(&str, &str, u64)] = &[
        // Within the carrier budget: the same attempt goes on.
        (
            "ip=IFACE:dhcp rd.net.timeout.carrier=60 phase.onfail=poweroff",
            "waiting up to 60 s for carrier on IFACE",
            0,
        ),
        // Past it: the attempt fails and the stage tries again (rd.retry).
        (
            "ip=IFACE:dhcp rd.net.timeout.carrier=1 rd.retry=60 phase.onfail=poweroff",
            "no carrier on IFACE within rd.net.timeout.carrier=1 s; retrying",
            1,
        ),
    ];
    for (params, trigger, retries) in table {
        let mut net = Net::new(false);
        net.start_dnsmasq(FULL_OPTIONS);
        let trigger = trigger.replace("IFACE", &net.client_if);
        let (ns, server_if) = (net.server_ns.clone(), net.server_if.clone());
        let mut raised = false;
        let out = net.netstage_watching(params, Duration::from_secs(120), &mut |line| {
            if !raised && line.contains(&trigger) {
                raised = true;
                run(&["ip", "-n", &ns, "link", "set", &server_if, "up"]);
            }
        });
        assert!(raised, "never saw {trigger:?}:\n{}", out.stderr);
        assert!(
            out.status.success(),
            "{params}: {}\n{}",
            out.status,
            out.stderr
        );
        let n = &out.event("stage")["network"];
        assert_eq!(n["retries"], *retries, "{params}");
        assert!(n["address"].as_str().unwrap().starts_with("10.77.0."));
    }
}
