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
//! - only hostile providers (other arch, rolled back below the image's
//!   floor, garbage, 404, nothing listening): nothing kexec'd, and the
//!   failure event lists each with its own refusal;
//! - nobody on the LAN: the policy, after the discovery window and the
//!   retry budget;
//! - x86_64 under SeaBIOS: the ISO (as a CD, through isolinux) and the
//!   hybrid USB disk (as a disk, through syslinux) that mkimage writes with
//!   `--default-mode local` boot their local entry, and this way.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use phase_scenarios::failure_in;
use phase_scenarios::{check, contains, marker, wait_power, wait_stage};
use phase_tools::nginx::Nginx;
use phase_tools::testnet::Avahi;
use serde_json::Value;
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::images;
use xtask::lan::{self, BRIDGE, SERVER};
use xtask::provider::{self, Publication};
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

/// Two kernel boots, discovery and a kexec under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
const SPEC: &str = "tests/specs/netboot.toml";
/// The same image with a version floor of 5.
const FLOOR_SPEC: &str = "tests/specs/floor.toml";

/// The test's LAN (`xtask::lan`) with real nginx serving the published tree
/// on the bridge's address; torn down on drop (nginx stopped, then the
/// namespace with dnsmasq).
struct Lan {
    nginx: Nginx,
    /// More servers on the LAN (hostile providers).
    others: Vec<Nginx>,
    net: lan::Lan,
    dir: tempfile::TempDir,
    bundle: Bundle,
    /// The provider's URL as the guest sees it.
    url: String,
}

/// Builds the LAN with nginx serving a tree published for `arch` with
/// `mark` on the next command line, and dnsmasq with that tree's URL as
/// option 67 if `dhcp_boot`.
fn lan(arch: Arch, mark: &str, dhcp_boot: bool) -> Result<Lan> {
    lan_of(arch, SPEC, mark, dhcp_boot)
}

/// [`lan`] for a machine booting the image of `spec`.
fn lan_of(arch: Arch, spec: &str, mark: &str, dhcp_boot: bool) -> Result<Lan> {
    let mut net = lan::Lan::new()?;
    let bundle = artifacts::bundle(arch, spec, Variant::Release)?;
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
    let nginx = provider::nginx_in(&net.ns, IpAddr::V4(SERVER), &tree, dir.path())?;
    let url = format!("http://{}/", nginx.http);
    net.start_dhcp(dir.path(), dhcp_boot.then_some(url.as_str()))?;
    Ok(Lan {
        nginx,
        others: Vec::new(),
        net,
        dir,
        bundle,
        url,
    })
}

impl Lan {
    /// Another nginx on the bridge's address serving `tree` (its files in
    /// `dir`); returns its URL.
    fn serve(&mut self, tree: &std::path::Path, dir: &std::path::Path) -> Result<String> {
        let nginx = provider::nginx_in(&self.net.ns, IpAddr::V4(SERVER), tree, dir)?;
        let url = format!("http://{}/", nginx.http);
        self.others.push(nginx);
        Ok(url)
    }

    /// Another server publishing `publication` validly signed; `name` keeps
    /// its files apart. Returns its URL.
    fn serve_published(&mut self, name: &str, publication: &Publication<'_>) -> Result<String> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let (tree, _) = provider::publish_tree(&dir, publication)?;
        self.serve(&tree, &dir)
    }

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
        self.serve_published(
            "hostile",
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
        )
    }

    /// A server whose manifest for `arch` is validly signed but of version
    /// 4, below the floor of 5 the image carries (`tests/specs/floor.toml`):
    /// a replayed old release.
    fn serve_rolled_back(&mut self, arch: Arch) -> Result<String> {
        let kernel = self.bundle.kernel.image.clone();
        self.serve_published(
            "rolled-back",
            &Publication {
                arch,
                version: 4,
                floor: None,
                expires_in: 3600,
                cmdline: format!("{} marker=never", arch.kernel_params()),
                kernel: &kernel,
                initrd: None,
                served_as: None,
                root_image: None,
            },
        )
    }

    /// A server whose `manifest.json` for `arch` is not a manifest at all.
    fn serve_garbage(&mut self, arch: Arch) -> Result<String> {
        let dir = self.dir.path().join("garbage");
        let tree = dir.join("tree");
        let at = tree.join("stable").join(arch.name());
        std::fs::create_dir_all(&at)?;
        std::fs::write(at.join("manifest.json"), b"<html>It works!</html>\n")?;
        self.serve(&tree, &dir)
    }

    /// A server with an empty tree: every request is a 404.
    fn serve_nothing(&mut self) -> Result<String> {
        let dir = self.dir.path().join("empty");
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree)?;
        self.serve(&tree, &dir)
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
        Avahi::start(&self.net.ns, BRIDGE, Some(&xml))
    }

    /// `phase announce --url URL --interface br0`, by its own code, on a
    /// thread in the namespace, once its probes are done.
    fn announce(&self, name: &str) -> Result<()> {
        self.announce_url(&self.url, name, 0)
    }

    /// [`Lan::announce`] for any URL, with a priority (lower first).
    fn announce_url(&self, url: &str, name: &str, priority: u16) -> Result<()> {
        self.net.announce(url, name, priority)
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
        let spec = VmSpec::direct(
            format!("{name}-{arch}"),
            arch,
            &self.bundle.kernel.image,
            &self.bundle.initrd,
            append,
        );
        self.start(spec)
    }

    /// Starts `spec` with its NIC on the LAN's tap.
    fn start(&self, mut spec: VmSpec) -> Result<Vm> {
        spec.tap = Some(self.net.tap());
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

/// Only hostile providers on the LAN, each announced, none good: the
/// failure report names every one of them with its own refusal, and nothing
/// is kexec'd. The image has a floor of 5, so a validly signed v4 is a
/// rollback.
fn only_hostile_providers_each_refused_in_the_report(arch: Arch) -> Result<()> {
    let mut lan = lan_of(arch, FLOOR_SPEC, "marker=never", false)?;
    // Announced in this order of priority, so the report's first round
    // lists them so.
    let providers = [
        ("other arch", lan.serve_misplaced(arch)?),
        ("rolled back", lan.serve_rolled_back(arch)?),
        ("garbage", lan.serve_garbage(arch)?),
        ("404", lan.serve_nothing()?),
        // Port 9 on the bridge: nothing listens there in this namespace.
        ("silent", format!("http://{SERVER}:9/")),
    ];
    for (priority, (name, url)) in (0u16..).zip(&providers) {
        lan.announce_url(url, name, priority)?;
    }
    let mut vm = lan.boot_with(
        arch,
        "local-all-hostile",
        "phase.mode=local phase.discover.timeout=5 rd.retry=3 phase.onfail=poweroff",
    )?;
    let discover = wait_stage(&mut vm, "discover", NETBOOT)?;
    let urls: Vec<&str> = providers
        .iter()
        .map(|(_, u)| u.trim_end_matches('/'))
        .collect();
    check(
        &vm,
        discover["discovered"]["providers"] == serde_json::json!(urls),
        &format!("not the five hostile providers in priority order: {discover}"),
    )?;
    let failure = failure_in(&mut vm, "fetch", NETBOOT)?;
    let tried = failure["tried"].as_array().cloned().unwrap_or_default();
    let other = match arch {
        Arch::X86_64 => Arch::Aarch64,
        Arch::Aarch64 => Arch::X86_64,
    };
    // What each must have answered: the outcome, its kind, what was asked
    // for, and values of its detail.
    let expected = [
        (
            "refused",
            "arch_mismatch",
            "manifest",
            serde_json::json!({ "found": other.name(), "expected": arch.name() }),
        ),
        (
            "refused",
            "rollback",
            "manifest",
            serde_json::json!({ "version": 4, "floor": 5 }),
        ),
        (
            "refused",
            "envelope_syntax",
            "manifest",
            serde_json::json!({}),
        ),
        (
            "transport",
            "status",
            "manifest",
            serde_json::json!({ "status": 404 }),
        ),
        // The first request to a mirror asks for its key rotation index.
        (
            "transport",
            "connection_refused",
            "rotation",
            serde_json::json!({}),
        ),
    ];
    for (priority, ((name, url), (outcome, kind, what, detail))) in
        (0u16..).zip(providers.iter().zip(&expected))
    {
        let at = url.trim_end_matches('/');
        let attempts: Vec<&Value> = tried.iter().filter(|t| t["at"] == at).collect();
        let as_expected = |t: &&Value| {
            t["outcome"] == *outcome
                && t["kind"] == *kind
                && t["what"] == *what
                && t["detail"]["discovered"]
                    == serde_json::json!({ "from": "mdns", "name": name, "priority": priority })
                && detail
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(k, v)| t["detail"][k] == *v)
        };
        check(
            &vm,
            !attempts.is_empty() && attempts.iter().all(as_expected),
            &format!("the report does not name {name} ({at}) as {outcome} {kind}: {attempts:?}"),
        )?;
        // A refusal would repeat with the same bytes: named once; the
        // transport failures are retried in rounds within rd.retry.
        check(
            &vm,
            *outcome != "refused" || attempts.len() == 1,
            &format!("{name} refused more than once: {attempts:?}"),
        )?;
    }
    // The first round, in priority order.
    let first: Vec<&str> = tried
        .iter()
        .take(urls.len())
        .filter_map(|t| t["at"].as_str())
        .collect();
    check(
        &vm,
        first == urls,
        &format!("the first round is not in priority order: {first:?}"),
    )?;
    check(
        &vm,
        failure["policy"] == serde_json::json!({"action": "poweroff"})
            && !vm.events().iter().any(|e| e["event"] == "kexec"),
        &format!("not the policy, or something was kexec'd: {failure}"),
    )?;
    wait_power(&mut vm, "power off", NETBOOT)?;
    vm.expect_clean_exit(Duration::from_secs(30))
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

/// The ISO's "local" menu entry under SeaBIOS: mkimage writes the ISO of
/// this LAN's image with `--default-mode local`, as a rack that boots
/// unattended from its LAN would have it, and isolinux boots that entry —
/// the same entry, command line and all, that a person picks from the menu
/// (the entries and their order do not change, only which one is the
/// default). The machine discovers the announced provider and boots to the
/// second kernel's marker.
fn the_iso_local_entry_boots_from_the_lan_under_seabios() -> Result<()> {
    local_entry_boots_under_seabios("iso", Media::Cdrom, &|lan, out| {
        images::menu_iso(
            Arch::X86_64,
            &lan.bundle.kernel.image,
            &lan.bundle.initrd,
            LOCAL_ENTRY_APPEND,
            "local",
            out,
        )
    })
}

/// The same for the hybrid USB disk (`mkimage usb --default-mode local`),
/// booted as a disk: syslinux on its own partition boots the entry.
fn the_usb_local_entry_boots_from_the_lan_under_seabios() -> Result<()> {
    local_entry_boots_under_seabios("usb", Media::Disk, &|lan, out| {
        images::usb_disk(
            Arch::X86_64,
            &lan.bundle.kernel.image,
            &lan.bundle.initrd,
            LOCAL_ENTRY_APPEND,
            Some("local"),
            out,
        )
        .map(|_| ())
    })
}

const LOCAL_ENTRY_APPEND: &str = "phase.discover.timeout=5 phase.onfail=poweroff";

/// Builds a medium with `build`, boots it under SeaBIOS on the LAN with
/// the provider announced, and checks the machine took the local entry,
/// found the provider over mDNS and reached the second kernel's marker.
fn local_entry_boots_under_seabios(
    medium: &str,
    media: Media,
    build: &dyn Fn(&Lan, &std::path::Path) -> Result<()>,
) -> Result<()> {
    let arch = Arch::X86_64;
    let mark = marker(&format!("local-{medium}"), arch);
    let lan = lan(arch, &mark, false)?;
    lan.announce("rack provider")?;
    let image = lan.dir.path().join(format!("local.{medium}"));
    build(&lan, &image)?;
    let mut vm = lan.start(VmSpec::firmware(
        format!("local-{medium}-seabios-{arch}"),
        arch,
        Firmware::Default,
        Drive {
            path: image,
            media,
            format: "raw",
            readonly: media == Media::Cdrom,
        },
    ))?;
    let (discover, _) = lan.boots_to_the_marker(&mut vm, &mark)?;
    // The first boot's plan came from the entry's command line on the
    // medium (the harness passed none).
    let ready = vm
        .events()
        .iter()
        .find(|e| e["event"] == "ready")
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        ready["plan"]["mode"] == "local" && heard(&discover, "mdns"),
        &format!("not the local entry, or the provider was not found over mDNS: {ready}"),
    )
}

mod seabios_x86_64 {
    #[test]
    fn the_iso_local_entry_boots_from_the_lan_under_seabios() -> anyhow::Result<()> {
        super::the_iso_local_entry_boots_from_the_lan_under_seabios()
    }

    #[test]
    fn the_usb_local_entry_boots_from_the_lan_under_seabios() -> anyhow::Result<()> {
        super::the_usb_local_entry_boots_from_the_lan_under_seabios()
    }
}

phase_scenarios::on_both_arches!(
    discovers_the_announced_provider,
    discovers_what_avahi_announces,
    discovers_the_dhcp_boot_url,
    a_hostile_provider_first_is_refused_and_the_good_one_boots,
    only_hostile_providers_each_refused_in_the_report,
    nobody_on_the_lan_takes_the_policy,
);
