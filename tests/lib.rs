//! Shared helpers for the QEMU scenarios.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use xtask::Arch;
use xtask::artifacts::{self, Variant};
use xtask::vm::{Vm, VmSpec};

/// Generous for TCG with two VMs on two cores; scaled by PHASE_TIMEOUT_SCALE.
pub const BOOT: Duration = Duration::from_secs(180);
pub const SHORT: Duration = Duration::from_secs(60);

/// Boots the netboot image of `variant` directly with `append`.
pub fn boot(arch: Arch, name: &str, variant: Variant, append: &str) -> Result<Vm> {
    boot_with(arch, name, variant, append, |_| {})
}

/// Like [`boot`], with a chance to adjust the VM first.
pub fn boot_with(
    arch: Arch,
    name: &str,
    variant: Variant,
    append: &str,
    adjust: impl FnOnce(&mut VmSpec),
) -> Result<Vm> {
    let bundle = artifacts::bundle(arch, "netboot", variant)?;
    let mut spec = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &bundle.kernel.image,
        &bundle.initrd,
        append,
    );
    adjust(&mut spec);
    Vm::start(&spec)
}

/// The `stage` events seen so far, by name, in order.
pub fn stages(vm: &Vm) -> Vec<String> {
    vm.events()
        .iter()
        .filter(|e| e["event"] == "stage")
        .filter_map(|e| e["stage"].as_str().map(str::to_owned))
        .collect()
}

/// The event of a stage seen so far (`null` if none).
pub fn stage_event(vm: &Vm, stage: &str) -> Value {
    vm.events()
        .iter()
        .find(|e| e["event"] == "stage" && e["stage"] == stage)
        .cloned()
        .unwrap_or_default()
}

/// Waits for the `failure` event and checks that it names `stage`.
pub fn failure_in(vm: &mut Vm, stage: &str, timeout: Duration) -> Result<Value> {
    let failure = vm.wait_event("failure", timeout)?;
    check(
        vm,
        failure["stage"] == stage,
        &format!("the failure is not in stage {stage}: {failure}"),
    )?;
    Ok(failure)
}

/// Waits for the `stage` event of `stage`.
pub fn wait_stage(vm: &mut Vm, stage: &str, timeout: Duration) -> Result<Value> {
    vm.wait_event_where(&format!("{stage} stage"), timeout, |e| {
        e["event"] == "stage" && e["stage"] == stage
    })
}

/// Waits for the init's `power` event with `action` ("power off", "reboot",
/// "halt").
pub fn wait_power(vm: &mut Vm, action: &str, timeout: Duration) -> Result<Value> {
    vm.wait_event_where(action, timeout, |e| {
        e["event"] == "power" && e["action"] == action
    })
}

/// Fails with the VM's console unless `cond` holds.
pub fn check(vm: &Vm, cond: bool, what: &str) -> Result<()> {
    if cond { Ok(()) } else { Err(vm.failure(what)) }
}

/// Asserts a JSON string field contains `needle`.
pub fn contains(value: &Value, needle: &str) -> Result<()> {
    let text = value.as_str().unwrap_or_default();
    ensure!(
        text.contains(needle),
        "{text:?} does not contain {needle:?}"
    );
    Ok(())
}

/// Declares each scenario `fn name(arch: Arch) -> Result<()>` as two tests,
/// `x86_64::name` and `aarch64::name`, or in the two modules named first
/// (`on_both_arches!(kexec_x86_64, kexec_aarch64; a, b)`), so that a filter
/// such as `kexec` selects a file's scenarios.
#[macro_export]
macro_rules! on_both_arches {
    ($x86:ident, $arm:ident; $($scenario:ident),* $(,)?) => {
        mod $x86 {
            $(#[test] fn $scenario() -> anyhow::Result<()> { super::$scenario(xtask::Arch::X86_64) })*
        }
        mod $arm {
            $(#[test] fn $scenario() -> anyhow::Result<()> { super::$scenario(xtask::Arch::Aarch64) })*
        }
    };
    ($($scenario:ident),* $(,)?) => {
        $crate::on_both_arches!(x86_64, aarch64; $($scenario),*);
    };
}

/// `marker=<name>-<arch>-<nanos>`, unique to this run, for a signed next
/// command line: a stale report cannot carry it.
pub fn marker(name: &str, arch: xtask::Arch) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("marker={name}-{arch}-{nanos:08x}")
}
