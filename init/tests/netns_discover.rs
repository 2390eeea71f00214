//! The discover stage against real servers: the init's network and discover
//! stages (`netstage` with `phase.mode=local`) in a client namespace; on the
//! other end of a veth pair dnsmasq (DHCP, `dhcp-boot=http://…`) and
//! responders driven by `phase announce`'s own code. A third namespace on a
//! second interface of the client floods the group with an advertisement,
//! which the init must never see: its socket is bound to the boot link.
//!
//! Needs root, iproute2, util-linux `unshare` and dnsmasq; without them each
//! test says so and does nothing else.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use phase_discover::{Instance, MDNS_ADDR, MDNS_PORT, Responder, service};
use phase_tools::announce::{Announcer, Options, Target};
use phase_tools::testnet::{self, Dnsmasq, Netns};
use serde_json::Value;

const CLIENT_MAC: &str = "52:54:00:5e:00:07";

fn missing() -> Option<String> {
    testnet::missing_netns()
        .or_else(testnet::missing_dnsmasq)
        .or_else(|| {
            (!Command::new("unshare")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()))
            .then(|| "unshare (util-linux) is not installed".into())
        })
}

macro_rules! require_tools {
    () => {
        if let Some(why) = missing() {
            phase_testkit::skip("the discover stage in network namespaces", why);
            return;
        }
    };
}

/// Server and client namespaces on a veth pair (server 10.78.0.1/24), and
/// an "other" namespace on a second veth pair of the client's
/// (10.78.9.1/24 there, 10.78.9.2/24 on the client).
struct Lan {
    server: Netns,
    client: Netns,
    other: Netns,
    server_if: String,
    client_if: String,
    dir: tempfile::TempDir,
    _dnsmasq: Option<Dnsmasq>,
}

impl Lan {
    fn new() -> Lan {
        let server = Netns::new("dsrv").unwrap();
        let client = Netns::new("dcli").unwrap();
        let other = Netns::new("doth").unwrap();
        let id = testnet::unique("");
        let lan = Lan {
            server_if: format!("ds{id}"),
            client_if: format!("dc{id}"),
            server,
            client,
            other,
            dir: tempfile::tempdir().unwrap(),
            _dnsmasq: None,
        };
        let (other_if, side_if) = (format!("do{id}"), format!("dx{id}"));
        for (a, ans, b, bns, mac) in [
            (
                &lan.server_if,
                &lan.server,
                &lan.client_if,
                &lan.client,
                CLIENT_MAC,
            ),
            (
                &other_if,
                &lan.other,
                &side_if,
                &lan.client,
                "52:54:00:5e:00:08",
            ),
        ] {
            testnet::run(&[
                "ip", "link", "add", a, "netns", &ans.name, "type", "veth", "peer", "name", b,
                "netns", &bns.name, "address", mac,
            ])
            .unwrap();
        }
        lan.server
            .ip(&["addr", "add", "10.78.0.1/24", "dev", &lan.server_if])
            .unwrap();
        lan.server
            .ip(&["link", "set", &lan.server_if, "up"])
            .unwrap();
        lan.other
            .ip(&["addr", "add", "10.78.9.1/24", "dev", &other_if])
            .unwrap();
        lan.other.ip(&["link", "set", &other_if, "up"]).unwrap();
        lan.client
            .ip(&["addr", "add", "10.78.9.2/24", "dev", &side_if])
            .unwrap();
        lan.client.ip(&["link", "set", &side_if, "up"]).unwrap();
        // Something on the client joins the group on the side link, as
        // avahi would: without SO_BINDTODEVICE, the init's socket would get
        // the side link's traffic through that membership.
        let side = lan
            .client
            .enter(|| {
                let fd = rustix::net::socket(
                    rustix::net::AddressFamily::INET,
                    rustix::net::SocketType::DGRAM,
                    None,
                )?;
                rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
                rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT))?;
                rustix::net::sockopt::set_ip_add_membership(
                    &fd,
                    &MDNS_ADDR,
                    &Ipv4Addr::new(10, 78, 9, 2),
                )?;
                Ok::<_, std::io::Error>(UdpSocket::from(fd))
            })
            .unwrap()
            .unwrap();
        // Kept open for the test's life.
        std::mem::forget(side);
        lan.other
            .spawn(|| {
                let responder = Responder::new(
                    service(),
                    vec![Instance {
                        name: "other link".into(),
                        host: "other.local".into(),
                        ipv4: Ipv4Addr::new(10, 78, 9, 1),
                        port: 80,
                        txt: vec![b"priority=0".to_vec()],
                    }],
                )
                .unwrap();
                let Ok(socket) = UdpSocket::bind((Ipv4Addr::new(10, 78, 9, 1), 0)) else {
                    return;
                };
                let _ = socket.set_multicast_ttl_v4(255);
                let group = SocketAddrV4::new(MDNS_ADDR, MDNS_PORT);
                // A flood, not a wait: every 100 ms for the test's life.
                while socket.send_to(&responder.announcement(), group).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .unwrap();
        lan
    }

    fn dnsmasq(&mut self, extra: &[&str]) {
        self._dnsmasq = Some(
            Dnsmasq::start(
                &self.server,
                &self.server_if,
                "10.78.0.50,10.78.0.99,255.255.255.0,1h",
                self.dir.path(),
                extra,
            )
            .unwrap(),
        );
    }

    /// A responder for `url` on the server end, once its probes are done.
    fn announce(&self, url: &str, name: &str, priority: u16, arches: Option<&[&str]>) {
        let target = Target::from_url(url).unwrap();
        let options = Options {
            interface: Some(self.server_if.clone()),
            name: Some(name.into()),
            channels: None,
            arches: arches.map(|a| a.iter().map(|s| s.to_string()).collect()),
            priority,
        };
        let (tx, rx) = mpsc::channel();
        self.server
            .spawn(move || {
                let announcer = Announcer::bind(&target, &options).unwrap();
                announcer.probe().unwrap();
                tx.send(()).unwrap();
                let _ = announcer.run();
            })
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the responder did not finish probing");
    }

    /// Runs the network and discover stages in the client namespace.
    fn netstage(&self, params: &str, limit: Duration) -> Outcome {
        let mut child = self
            .client
            .command("unshare", &["--pid", "--fork", "--uts"])
            .arg(env!("CARGO_BIN_EXE_netstage"))
            .arg("--resolv-conf")
            .arg(self.dir.path().join("resolv.conf"))
            .arg("--")
            .arg(format!("ip={}:dhcp", self.client_if))
            .args(params.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(limit).is_err() {
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
            stderr.push_str(&line);
            stderr.push('\n');
        }
        let status = child.wait().unwrap();
        let _ = done_tx.send(());
        assert!(
            !watchdog.join().unwrap(),
            "netstage outlived {limit:?}:\n{stderr}"
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
        }
    }
}

struct Outcome {
    status: ExitStatus,
    stderr: String,
    events: Vec<Value>,
}

impl Outcome {
    fn event(&self, pred: impl Fn(&Value) -> bool) -> &Value {
        self.events
            .iter()
            .find(|e| pred(e))
            .unwrap_or_else(|| panic!("no such event; stderr:\n{}", self.stderr))
    }

    fn stage(&self, stage: &str) -> &Value {
        self.event(|e| e["event"] == "stage" && e["stage"] == stage)
    }
}

#[test]
fn the_boot_url_then_the_announced_providers_by_priority_none_from_another_link() {
    require_tools!();
    let mut lan = Lan::new();
    lan.dnsmasq(&["--dhcp-boot=http://10.78.0.1:8080/tree/"]);
    lan.announce("http://10.78.0.1:9001/", "second", 7, None);
    lan.announce(
        "http://10.78.0.1:9000/a/",
        "first",
        2,
        Some(&["x86_64", "aarch64"]),
    );
    lan.announce(
        "http://10.78.0.1:9002/",
        "sparc only",
        0,
        Some(&["sparc64"]),
    );
    let out = lan.netstage(
        "phase.mode=local phase.discover.timeout=4 phase.onfail=poweroff",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let network = out.stage("network");
    assert_eq!(
        network["network"]["boot_url"], "http://10.78.0.1:8080/tree/",
        "{network}"
    );
    let d = &out.stage("discover")["discovered"];
    assert_eq!(
        d["providers"],
        serde_json::json!([
            "http://10.78.0.1:8080/tree",
            "http://10.78.0.1:9000/a",
            "http://10.78.0.1:9001"
        ]),
        "{d}"
    );
    let heard: Vec<(String, String, Value)> = d["heard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap().to_owned(),
                h["name"].as_str().unwrap().to_owned(),
                h["skipped"].clone(),
            )
        })
        .collect();
    assert!(
        heard.contains(&("dhcp".into(), "10.78.0.1".into(), Value::Null)),
        "{d}"
    );
    assert!(
        heard.contains(&("mdns".into(), "sparc only".into(), "arch".into())),
        "{d}"
    );
    // The other link's flood never reached the init.
    assert!(
        !heard.iter().any(|(_, name, _)| name == "other link"),
        "an answer from another interface was heard: {d}"
    );
    assert_eq!(d["interface"], lan.client_if.as_str());
    assert_eq!(d["first_ms"], 0, "the boot URL is known at once: {d}");
    assert_eq!(d["rounds"], 1);
}

#[test]
fn mdns_alone_finds_the_provider_and_settles_early() {
    require_tools!();
    let mut lan = Lan::new();
    lan.dnsmasq(&[]);
    lan.announce("http://10.78.0.1:9000/", "only", 0, None);
    let out = lan.netstage(
        "phase.mode=local phase.discover.timeout=20 phase.onfail=poweroff",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
    let discover = out.stage("discover");
    let d = &discover["discovered"];
    assert_eq!(d["providers"], serde_json::json!(["http://10.78.0.1:9000"]));
    assert_eq!(d["heard"][0]["from"], "mdns");
    let first = d["first_ms"].as_u64().unwrap();
    assert!(first < 1000, "first provider after {first} ms: {d}");
    // The round ended a second after it began, not at the 20 s timeout.
    let took = discover["t_ms"].as_u64().unwrap() - out.stage("network")["t_ms"].as_u64().unwrap();
    assert!(took < 3000, "discovery took {took} ms");
}

#[test]
fn nothing_on_the_lan_fails_after_the_timeout_and_the_retry_budget() {
    require_tools!();
    let mut lan = Lan::new();
    lan.dnsmasq(&[]);
    let out = lan.netstage(
        "phase.mode=local phase.discover.timeout=1 rd.retry=3 phase.onfail=poweroff",
        Duration::from_secs(60),
    );
    // Power off in a PID namespace: the init is killed by SIGINT.
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{}", out.stderr);
    let failure = out.event(|e| e["event"] == "failure");
    assert_eq!(failure["stage"], "discover", "{failure}");
    assert_eq!(failure["kind"], "nothing_discovered", "{failure}");
    assert_eq!(failure["detail"]["timeout_s"], 1);
    assert_eq!(failure["detail"]["heard"], 0, "{failure}");
    let rounds = failure["detail"]["rounds"].as_u64().unwrap();
    assert!(rounds >= 2, "{failure}");
    let took = failure["t_ms"].as_u64().unwrap() - out.stage("network")["t_ms"].as_u64().unwrap();
    assert!(
        (1000..=1000 + 3000 + 1500).contains(&took),
        "failed {took} ms after the network came up"
    );
}
