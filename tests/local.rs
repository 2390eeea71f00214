//! Local mode end to end, on both arches: a LAN of the test's own — a
//! network namespace with a bridge, a tap device for QEMU (`-netdev tap`),
//! dnsmasq for DHCP on the bridge and real nginx serving the published tree
//! on the bridge's address, nothing on any other address — and a machine
//! booted with `phase.mode=local` and no `phase.provider=`. It must find the
//! provider, verify and kexec; the second kernel's report carries a marker
//! only the signed command line has.
//!
//! - announced over mDNS/DNS-SD by `phase announce`'s own responder;
//! - announced by avahi-daemon from the README's service file (a real
//!   responder nobody here wrote);
//! - named only by dnsmasq's `dhcp-boot=http://…` (option 67), no mDNS;
//! - a hostile provider announced first (a validly signed manifest for the
//!   other arch) and the good one second: the hostile one is refused, the
//!   good one boots the machine (SECURITY.md: discovery chooses where, never
//!   what);
//! - nobody on the LAN: the policy, after the discovery window and the
//!   retry budget.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use phase_scenarios::failure_in;
use phase_scenarios::{check, contains, marker, wait_power, wait_stage};
use phase_tools::announce::{Announcer, Options, Target};
use phase_tools::nginx::Nginx;
use phase_tools::testnet::{Avahi, Dnsmasq, Netns};
use serde_json::Value;
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::provider::{self, Publication};
use xtask::vm::{Tap, Vm, VmSpec};

/// Two kernel boots, discovery and a kexec under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
const SPEC: &str = "tests/specs/netboot.toml";
const BRIDGE: &str = "br0";
const TAP: &str = "tap0";
/// The bridge's address: dnsmasq, nginx and the responder live here.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);

/// The test's LAN, torn down on drop (the namespace takes its interfaces
/// with it; nginx and dnsmasq are stopped).
struct Lan {
    _dnsmasq: Dnsmasq,
    nginx: Nginx,
    /// More servers on the LAN (a hostile provider).
    others: Vec<Nginx>,
    ns: Netns,
    dir: tempfile::TempDir,
    bundle: Bundle,
    /// The provider's URL as the guest sees it.
    url: String,
}

/// Builds the LAN: the bridge (with a veth port, so it has carrier before
/// QEMU attaches), the tap, nginx serving a tree published for `arch` with
/// `mark` on the next command line, and dnsmasq handing out 10.79.0.50–99
/// with `dhcp_boot` as option 67 if given.
fn lan(arch: Arch, mark: &str, dhcp_boot: bool) -> Result<Lan> {
    let ns = Netns::new("lan")?;
    ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ns.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", BRIDGE])?;
    // A veth pair with one end on the bridge gives it carrier (the dummy
    // driver may not be there).
    ns.ip(&[
        "link", "add", "carrier0", "type", "veth", "peer", "name", "carrier1",
    ])?;
    ns.ip(&["link", "set", "carrier0", "master", BRIDGE, "up"])?;
    ns.ip(&["link", "set", "carrier1", "up"])?;
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    ns.ip(&["link", "set", TAP, "master", BRIDGE, "up"])?;
    ns.ip(&["link", "set", BRIDGE, "up"])?;
    let bundle = artifacts::bundle(arch, SPEC, Variant::Release)?;
    let dir = tempfile::Builder::new().prefix("phase-local-").tempdir()?;
    let cmdline = format!(
        "{} phase.report phase.onfail=poweroff {mark}",
        arch.kernel_params()
    );
    let (tree, _) = provider::publish_tree(
        dir.path(),
        &Publication {
            arch,
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
    let nginx = provider::nginx_in(&ns, IpAddr::V4(SERVER), &tree, dir.path())?;
    let url = format!("http://{}/", nginx.http);
    let boot = format!("--dhcp-boot={url}");
    let extra: Vec<&str> = if dhcp_boot { vec![&boot] } else { vec![] };
    let dnsmasq = Dnsmasq::start(
        &ns,
        BRIDGE,
        "10.79.0.50,10.79.0.99,255.255.255.0,1h",
        dir.path(),
        &extra,
    )?;
    Ok(Lan {
        _dnsmasq: dnsmasq,
        nginx,
        others: Vec::new(),
        ns,
        dir,
        bundle,
        url,
    })
}

impl Lan {
    /// A second server on the bridge's address serving a tree whose
    /// manifest is validly signed for the other arch, with that arch's
    /// kernel, put where `arch`'s manifest belongs (a mixed-up or hostile
    /// mirror); returns its URL.
    fn serve_misplaced(&mut self, arch: Arch) -> Result<String> {
        let other = match arch {
            Arch::X86_64 => Arch::Aarch64,
            Arch::Aarch64 => Arch::X86_64,
        };
        let kernel = artifacts::kernel(other)?;
        let dir = self.dir.path().join("hostile");
        std::fs::create_dir_all(&dir)?;
        let (tree, _) = provider::publish_tree(
            &dir,
            &Publication {
                arch: other,
                version: 5,
                floor: None,
                expires_in: 3600,
                cmdline: format!("{} marker=never", arch.kernel_params()),
                kernel: &kernel.image,
                initrd: None,
                served_as: Some(arch),
                root_image: None,
            },
        )?;
        let nginx = provider::nginx_in(&self.ns, IpAddr::V4(SERVER), &tree, &dir)?;
        let url = format!("http://{}/", nginx.http);
        self.others.push(nginx);
        Ok(url)
    }

    /// avahi-daemon on the bridge announcing the provider from the service
    /// file README.md gives, with this LAN's port and path.
    fn avahi(&self) -> Result<Avahi> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
        let local = &readme[readme
            .find("## Local mode")
            .context("README has a Local mode section")?..];
        let start = local
            .find("```xml\n")
            .context("Local mode has an XML block")?
            + 7;
        let end = start + local[start..].find("```").context("the XML block ends")?;
        let xml = local[start..end]
            .replace(
                "<port>80</port>",
                &format!("<port>{}</port>", self.nginx.http.port()),
            )
            .replace("path=/boot/tree/", "path=/");
        anyhow::ensure!(
            xml.contains(&format!("<port>{}</port>", self.nginx.http.port()))
                && xml.contains("path=/<"),
            "the README's service file no longer has the port and path this test replaces:\n{xml}"
        );
        Avahi::start(&self.ns, BRIDGE, Some(&xml))
    }

    /// `phase announce --url URL --interface br0`, by its own code, on a
    /// thread in the namespace, once its probes are done.
    fn announce(&self, name: &str) -> Result<()> {
        self.announce_url(&self.url, name, 0)
    }

    /// [`Lan::announce`] for any URL, with a priority (lower first).
    fn announce_url(&self, url: &str, name: &str, priority: u16) -> Result<()> {
        let target = Target::from_url(url)?;
        let options = Options {
            interface: Some(BRIDGE.into()),
            name: Some(name.into()),
            channels: None,
            arches: None,
            priority,
        };
        let (tx, rx) = mpsc::channel();
        self.ns.spawn(move || {
            let announcer = match Announcer::bind(&target, &options) {
                Ok(a) => a,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let probed = announcer.probe().map_err(|e| e.to_string());
            let ok = probed.is_ok();
            let _ = tx.send(probed);
            if ok {
                let _ = announcer.run();
            }
        })?;
        rx.recv_timeout(Duration::from_secs(30))
            .context("the responder did not finish probing")?
            .map_err(|e| anyhow::anyhow!("phase announce: {e}"))
    }

    /// Boots the machine on the tap in local mode, with no provider named.
    fn boot(&self, arch: Arch, name: &str) -> Result<Vm> {
        self.boot_with(
            arch,
            name,
            "phase.mode=local phase.discover.timeout=5 phase.onfail=poweroff",
        )
    }

    /// [`Lan::boot`] with its own command line.
    fn boot_with(&self, arch: Arch, name: &str, append: &str) -> Result<Vm> {
        let mut spec = VmSpec::direct(
            format!("{name}-{arch}"),
            arch,
            &self.bundle.kernel.image,
            &self.bundle.initrd,
            append,
        );
        spec.tap = Some(Tap {
            netns: self.ns.name.clone(),
            ifname: TAP.into(),
        });
        Vm::start(&spec)
    }

    /// Follows the boot from discovery to the second kernel's report and
    /// returns the discover and fetch stages' events: the manifest and both
    /// artifacts came from the good provider (nginx's log shows the guest's
    /// requests), and the report carries the marker.
    fn boots_to_the_marker(&self, vm: &mut Vm, mark: &str) -> Result<(Value, Value)> {
        let network = wait_stage(vm, "network", NETBOOT)?;
        check(
            vm,
            network.to_string().contains("10.79.0."),
            "dnsmasq on the test LAN gave no address",
        )?;
        let discover = wait_stage(vm, "discover", NETBOOT)?;
        let provider = self.url.trim_end_matches('/');
        check(
            vm,
            discover["discovered"]["providers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|u| u == provider)),
            &format!("the provider {provider} was not discovered: {discover}"),
        )?;
        let fetch = wait_stage(vm, "fetch", NETBOOT)?;
        check(vm, fetch["version"] == 5, "not version 5")?;
        contains(&fetch["mirror"], provider)?;
        wait_stage(vm, "verify", NETBOOT)?;
        vm.wait_event("kexec", NETBOOT)?;
        let report = vm.wait_event("report", NETBOOT)?;
        contains(&report["cmdline"], mark)?;
        wait_power(vm, "power off", NETBOOT)?;
        vm.expect_clean_exit(Duration::from_secs(30))?;
        let log = self.nginx.access_log();
        for path in ["manifest.json", "/blobs/"] {
            check(
                vm,
                log.lines()
                    .any(|l| l.starts_with("10.79.0.") && l.contains(path)),
                &format!("nginx served no {path} to the guest:\n{log}"),
            )?;
        }
        Ok((discover, fetch))
    }
}

/// Whether the discover event heard `from` (`mdns`, `dhcp`) and kept it.
fn heard(discover: &Value, from: &str) -> bool {
    discover["discovered"]["heard"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|h| h["from"] == from && h["skipped"].is_null())
}

fn discovers_the_announced_provider(arch: Arch) -> Result<()> {
    let mark = marker("local-mdns", arch);
    let lan = lan(arch, &mark, false)?;
    lan.announce("rack provider")?;
    let mut vm = lan.boot(arch, "local-mdns")?;
    let (discover, _) = lan.boots_to_the_marker(&mut vm, &mark)?;
    check(
        &vm,
        heard(&discover, "mdns") && !heard(&discover, "dhcp"),
        &format!("the provider was not found over mDNS alone: {discover}"),
    )
}

fn discovers_the_dhcp_boot_url(arch: Arch) -> Result<()> {
    let mark = marker("local-dhcp", arch);
    let lan = lan(arch, &mark, true)?;
    let mut vm = lan.boot(arch, "local-dhcp")?;
    let (discover, _) = lan.boots_to_the_marker(&mut vm, &mark)?;
    check(
        &vm,
        heard(&discover, "dhcp") && !heard(&discover, "mdns"),
        &format!("the provider was not found by the DHCP boot URL alone: {discover}"),
    )
}

fn discovers_what_avahi_announces(arch: Arch) -> Result<()> {
    let mark = marker("local-avahi", arch);
    let lan = lan(arch, &mark, false)?;
    let _avahi = lan.avahi()?;
    let mut vm = lan.boot(arch, "local-avahi")?;
    let (discover, _) = lan.boots_to_the_marker(&mut vm, &mark)?;
    let by_avahi = discover["discovered"]["heard"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|h| {
            h["from"] == "mdns"
                && h["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Phase Boot on "))
        });
    check(
        &vm,
        by_avahi,
        &format!("avahi's \"Phase Boot on <host>\" was not heard: {discover}"),
    )
}

fn a_hostile_provider_first_is_refused_and_the_good_one_boots(arch: Arch) -> Result<()> {
    let mark = marker("local-hostile", arch);
    let mut lan = lan(arch, &mark, false)?;
    let hostile = lan.serve_misplaced(arch)?;
    lan.announce_url(&hostile, "hostile", 0)?;
    lan.announce_url(&lan.url.clone(), "good", 5)?;
    let mut vm = lan.boot(arch, "local-hostile")?;
    let (discover, fetch) = lan.boots_to_the_marker(&mut vm, &mark)?;
    let hostile = hostile.trim_end_matches('/');
    let good = lan.url.trim_end_matches('/');
    check(
        &vm,
        discover["discovered"]["providers"] == serde_json::json!([hostile, good]),
        &format!("not the hostile provider first, then the good one: {discover}"),
    )?;
    let tried = fetch["tried"].as_array().cloned().unwrap_or_default();
    check(
        &vm,
        tried.len() == 1
            && tried[0]["at"] == hostile
            && tried[0]["outcome"] == "refused"
            && tried[0]["kind"] == "arch_mismatch",
        &format!("the hostile provider was not refused for its arch: {tried:?}"),
    )?;
    check(
        &vm,
        fetch["mirror"] == good,
        &format!("the manifest did not come from {good}: {fetch}"),
    )
}

fn nobody_on_the_lan_takes_the_policy(arch: Arch) -> Result<()> {
    let lan = lan(arch, "marker=never", false)?;
    let mut vm = lan.boot_with(
        arch,
        "local-nobody",
        "phase.mode=local phase.discover.timeout=2 rd.retry=4 phase.onfail=poweroff",
    )?;
    let network = wait_stage(&mut vm, "network", NETBOOT)?;
    let failure = failure_in(&mut vm, "discover", NETBOOT)?;
    let took = failure["t_ms"].as_u64().unwrap_or(0) - network["t_ms"].as_u64().unwrap_or(0);
    check(
        &vm,
        failure["kind"] == "nothing_discovered"
            && failure["detail"]["timeout_s"] == 2
            && failure["detail"]["heard"] == 0
            && failure["policy"] == serde_json::json!({"action": "poweroff"}),
        &format!("not the nothing-discovered failure: {failure}"),
    )?;
    // At least the 2 s window; at most the window, the 4 s retry budget and
    // one more window.
    check(
        &vm,
        (2_000..=2_000 + 4_000 + 2_500).contains(&took),
        &format!("failed {took} ms after the network came up"),
    )?;
    wait_power(&mut vm, "power off", NETBOOT)?;
    vm.expect_clean_exit(Duration::from_secs(30))
}

phase_scenarios::on_both_arches!(
    discovers_the_announced_provider,
    discovers_what_avahi_announces,
    discovers_the_dhcp_boot_url,
    a_hostile_provider_first_is_refused_and_the_good_one_boots,
    nobody_on_the_lan_takes_the_policy,
);
