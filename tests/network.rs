//! Network scenarios on both arches: the virtio NIC's driver stack loads from
//! the devices' modaliases alone (the netboot spec names no module to load),
//! DHCP against QEMU's user network gives 10.0.2.15, and a provider's host
//! name resolves through the DNS server DHCP named (10.0.2.3).
//!
//! The name is deb.debian.org: this sandbox reaches Debian's package archive
//! and nothing else, so its resolver answers for that name (and crates.io's)
//! and not for arbitrary ones; slirp's 10.0.2.3 forwards to that resolver.

use std::process::Command;

use anyhow::Result;
use phase_scenarios::{
    BOOT, SHORT, boot_with, check, contains, failure_in, stage_event, wait_power,
};
use serde_json::Value;
use xtask::Arch;
use xtask::artifacts::{self, Variant};
use xtask::vm::{Vm, VmSpec};

/// The name resolved through the guest's DNS (see the module comment).
const PROVIDER_HOST: &str = "deb.debian.org";

/// Modules from modalias, DHCP lease, DNS through the lease's server.
fn nic_from_modalias_dhcp_and_dns(arch: Arch) -> Result<()> {
    let append =
        format!("phase.provider=http://{PROVIDER_HOST}/phase phase.report phase.onfail=poweroff");
    let mut vm = boot_with(arch, "dhcp", Variant::Release, &append, |spec| {
        spec.user_net = true
    })?;
    let ready = vm.wait_event("ready", BOOT)?;

    let modules = stage_event(&vm, "modules");
    let loaded = modules["loaded"].as_array().cloned().unwrap_or_default();
    let reason = |name: &str| {
        loaded
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["reason"].as_str())
            .unwrap_or("not loaded")
            .to_owned()
    };
    check(
        &vm,
        reason("virtio_net").starts_with("modalias virtio:d00000001v"),
        "virtio_net was not loaded for the NIC's modalias",
    )?;
    check(
        &vm,
        reason("virtio_pci").starts_with("modalias pci:v00001AF4d0000100"),
        "virtio_pci was not loaded for the PCI function",
    )?;
    for dep in ["net_failover", "failover"] {
        check(
            &vm,
            reason(dep).starts_with("dependency of"),
            &format!("{dep} was not loaded as a dependency"),
        )?;
    }
    // Built-in modules are no-ops: virtio and virtio_ring are built into the
    // arm64 kernel and modules on amd64.
    for core in ["virtio", "virtio_ring"] {
        let r = reason(core);
        let want_loaded = arch == Arch::X86_64;
        check(
            &vm,
            want_loaded == r.starts_with("dependency of"),
            &format!("{core} on {arch}: {r}"),
        )?;
    }
    // Nothing was loaded because a list named it.
    let listed: Vec<&Value> = loaded
        .iter()
        .filter(|m| {
            let r = m["reason"].as_str().unwrap_or_default();
            !(r.starts_with("modalias ") || r.starts_with("dependency"))
        })
        .collect();
    check(
        &vm,
        listed.is_empty(),
        &format!("modules loaded from a list: {listed:?}"),
    )?;

    let net = &stage_event(&vm, "network")["network"];
    check(&vm, net["method"] == "dhcp", "not configured by DHCP")?;
    check(&vm, net["interface"] == "eth0", "not eth0")?;
    check(
        &vm,
        net["address"] == "10.0.2.15" && net["prefix_len"] == 24,
        "DHCP did not give 10.0.2.15/24",
    )?;
    check(&vm, net["gateway"] == "10.0.2.2", "no gateway 10.0.2.2")?;
    check(
        &vm,
        net["dns"] == serde_json::json!(["10.0.2.3"]),
        "DNS is not 10.0.2.3",
    )?;
    check(&vm, net["lease_s"] == 86400, "not slirp's one-day lease")?;
    check(
        &vm,
        ready["network"] == *net,
        "the ready event lacks the network",
    )?;
    let resolved = &stage_event(&vm, "network")["resolved"][PROVIDER_HOST];
    let addrs = resolved.as_array().cloned().unwrap_or_default();
    check(
        &vm,
        !addrs.is_empty(),
        &format!("{PROVIDER_HOST} did not resolve: {resolved}"),
    )?;

    vm.wait_event("report", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// Static ip= with a DNS server: no DHCP, the name still resolves.
fn static_ip(arch: Arch) -> Result<()> {
    let append = format!(
        "ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:none:10.0.2.3 \
         phase.provider=http://{PROVIDER_HOST}/phase phase.report phase.onfail=poweroff"
    );
    let mut vm = boot_with(arch, "static", Variant::Release, &append, |spec| {
        spec.user_net = true
    })?;
    vm.wait_event("ready", BOOT)?;
    let stage = stage_event(&vm, "network");
    let net = &stage["network"];
    check(
        &vm,
        net["method"] == "static",
        "not the static configuration",
    )?;
    check(
        &vm,
        net["address"] == "10.0.2.15" && net["gateway"] == "10.0.2.2",
        "wrong address or gateway",
    )?;
    check(
        &vm,
        net["hostname"] == "node1" && net["lease_s"].is_null(),
        "wrong host name or a lease",
    )?;
    let addrs = stage["resolved"][PROVIDER_HOST]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check(
        &vm,
        !addrs.is_empty(),
        "the name did not resolve through the static DNS server",
    )?;
    vm.wait_event("report", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// No NIC at all: the interface budget runs out and the policy follows.
fn no_nic_takes_the_policy(arch: Arch) -> Result<()> {
    let append =
        "rd.neednet=1 rd.net.timeout.iflink=2 rd.retry=0 phase.report phase.onfail=poweroff";
    let mut vm = boot_with(arch, "no-nic", Variant::Release, append, |_| {})?;
    let failure = failure_in(&mut vm, "network", BOOT)?;
    contains(
        &failure["error"],
        "no network interface of Ethernet type appeared within rd.net.timeout.iflink=2 s",
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// A module the command line names but the image lacks is named in the
/// failure report.
fn missing_module_is_named(arch: Arch) -> Result<()> {
    let append = "rd.driver.pre=nosuch_nic phase.report phase.onfail=poweroff";
    let mut vm = boot_with(arch, "missing-module", Variant::Release, append, |_| {})?;
    let failure = failure_in(&mut vm, "modules", BOOT)?;
    contains(&failure["error"], "module nosuch_nic is not in the image")?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// A copy of the test kernel's module tree (hard links, so it costs no
/// space) in which the NIC's modules are compressed the way kbuild does:
/// virtio_net and net_failover with xz, failover with zstd.
fn tree_with_compressed_nic_modules(arch: Arch) -> Result<xtask::debian::Kernel> {
    let mut kernel = artifacts::kernel(arch)?;
    let copy = xtask::paths::phase()
        .join(arch.name())
        .join("compressed-modules-tree");
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    std::fs::create_dir_all(&copy)?;
    run(Command::new("cp")
        .arg("-al")
        .arg(kernel.tree.join("lib"))
        .arg(&copy))?;
    let modules = copy
        .join("lib/modules")
        .join(&kernel.release)
        .join("kernel");
    let compress = [
        ("drivers/net/virtio_net.ko", "xz"),
        ("drivers/net/net_failover.ko", "xz"),
        ("net/core/failover.ko", "zstd"),
    ];
    for (path, tool) in compress {
        let file = modules.join(path);
        // Replace the hard link with a file of our own before compressing.
        let bytes = std::fs::read(&file)?;
        std::fs::remove_file(&file)?;
        std::fs::write(&file, bytes)?;
        match tool {
            "xz" => run(Command::new("xz")
                .args(["--check=crc32", "--lzma2=dict=1MiB"])
                .arg(&file))?,
            _ => run(Command::new("zstd").args(["-q", "--rm", "-19"]).arg(&file))?,
        }
    }
    kernel.tree = copy;
    Ok(kernel)
}

/// Every module file the image holds, by path.
fn kernel_modules_in(image: &mkimage::inspect::InitramfsInfo) -> Vec<String> {
    image
        .files
        .iter()
        .filter(|p| p.starts_with("/lib/modules/") && p.contains(".ko"))
        .cloned()
        .collect()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}

/// A tree whose NIC modules are compressed (xz and zstd, as kbuild does)
/// boots as well as a plain one: mkimage writes them into the image as
/// plain `.ko` files (Debian's kernels could not decompress them: no
/// CONFIG_MODULE_DECOMPRESS), and the init loads them with finit_module.
fn compressed_modules_load(arch: Arch) -> Result<()> {
    let kernel = tree_with_compressed_nic_modules(arch)?;
    let init = artifacts::init(arch, Variant::Release)?;
    let out = xtask::paths::phase()
        .join(arch.name())
        .join("netboot-compressed.cpio.zst");
    let initrd = artifacts::pack_initramfs(arch, "netboot", &init, &kernel, &out)?;
    let image = mkimage::inspect::initramfs(&std::fs::read(&initrd)?, "the image")?;
    let modules = kernel_modules_in(&image);
    for name in ["virtio_net.ko", "net_failover.ko", "failover.ko"] {
        let path = modules.iter().find(|p| p.ends_with(&format!("/{name}")));
        anyhow::ensure!(
            path.is_some_and(|p| image.elves.iter().any(|(e, _)| e == p)),
            "{name} is not in the image as a plain ELF file: {modules:?}"
        );
    }
    anyhow::ensure!(
        !modules.iter().any(|p| !p.ends_with(".ko")),
        "the image holds compressed modules: {modules:?}"
    );
    let mut spec = VmSpec::direct(
        format!("compressed-{arch}"),
        arch,
        &kernel.image,
        &initrd,
        "rd.neednet=1 phase.report phase.onfail=poweroff",
    );
    spec.user_net = true;
    let mut vm = Vm::start(&spec)?;
    let ready = vm.wait_event("ready", BOOT)?;
    let loaded = stage_event(&vm, "modules")["loaded"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in ["virtio_net", "net_failover", "failover"] {
        let outcome = loaded
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["outcome"].clone())
            .unwrap_or_default();
        check(&vm, outcome == "loaded", &format!("{name}: {outcome}"))?;
    }
    check(
        &vm,
        ready["network"]["address"] == "10.0.2.15",
        "the NIC did not work",
    )?;
    vm.wait_event("report", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

phase_scenarios::on_both_arches!(
    nic_from_modalias_dhcp_and_dns,
    static_ip,
    no_nic_takes_the_policy,
    compressed_modules_load,
    missing_module_is_named,
);
