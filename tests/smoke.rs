//! Smoke scenarios on both arches: the init boots to ready with the parsed
//! plan, reports malformed command lines, follows each failure policy, and
//! survives an injected panic the way PID 1 must.

use anyhow::Result;
use phase_scenarios::{
    BOOT, SHORT, boot, boot_with, check, contains, failure_in, stage_event, stages, wait_power,
};
use serde_json::json;
use xtask::Arch;
use xtask::artifacts::{self, Variant};
use xtask::vm::{Vm, VmSpec};

/// Boots to ready with the plan from the command line in the event, then
/// reports and powers off.
fn boots_to_ready(arch: Arch) -> Result<()> {
    let mut vm = boot(
        arch,
        "ready",
        Variant::Release,
        "phase.report phase.channel=smoke phase.onfail=poweroff phase.color=blue",
    )?;
    let ready = vm.wait_event("ready", BOOT)?;
    check(
        &vm,
        ready["arch"] == arch.name(),
        "ready names the wrong arch",
    )?;
    check(
        &vm,
        ready["plan"]["channel"] == "smoke",
        "the plan lacks phase.channel=smoke",
    )?;
    check(
        &vm,
        ready["plan"]["onfail"] == json!({"action": "poweroff"}),
        "the plan lacks phase.onfail",
    )?;
    check(
        &vm,
        ready["plan"]["report"] == true,
        "the plan lacks phase.report",
    )?;
    // The network stage reports itself skipped: nothing here needs it.
    check(
        &vm,
        stages(&vm) == ["early", "plan", "modules", "network"],
        "stages out of order",
    )?;
    let plan_event = stage_event(&vm, "plan");
    contains(&plan_event["warnings"][0], "unknown key phase.color")?;
    let modules = stage_event(&vm, "modules");
    let loaded: Vec<&str> = modules["loaded"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    check(
        &vm,
        loaded.contains(&"virtio_console"),
        "virtio_console was not loaded",
    )?;
    let report = vm.wait_event("report", SHORT)?;
    contains(&report["cmdline"], "phase.channel=smoke")?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// A malformed value is named with its key, and the default policy (reboot
/// after a visible 10 s countdown) follows.
fn malformed_cmdline_reboots(arch: Arch) -> Result<()> {
    let mut vm = boot(arch, "malformed", Variant::Release, "phase.timeout=soon")?;
    let failure = failure_in(&mut vm, "plan", BOOT)?;
    contains(
        &failure["error"],
        "phase.timeout=soon: expected a whole number of seconds",
    )?;
    check(
        &vm,
        failure["policy"] == json!({"action": "reboot", "delay_s": 10}),
        "not the default reboot policy",
    )?;
    wait_power(&mut vm, "reboot", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_contains("rebooting in 10 s"),
        "no visible countdown",
    )?;
    check(
        &vm,
        vm.console_contains("======== boot failed ========"),
        "no failure report",
    )
}

/// phase.onfail=poweroff powers the VM off when there is nothing to boot.
fn poweroff_policy(arch: Arch) -> Result<()> {
    let mut vm = boot(arch, "poweroff", Variant::Release, "phase.onfail=poweroff")?;
    let failure = failure_in(&mut vm, "handoff", BOOT)?;
    contains(&failure["error"], "nothing to boot")?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

/// phase.onfail=halt stops the machine without powering it off.
fn halt_policy(arch: Arch) -> Result<()> {
    let mut vm = boot(arch, "halt", Variant::Release, "phase.onfail=halt")?;
    wait_power(&mut vm, "halt", BOOT)?;
    // The kernel confirms on the console; QEMU keeps running, so stop it.
    vm.wait_console("reboot: System halted", SHORT)?;
    vm.kill()
}

/// A panic in PID 1 (test build only) is logged on the console and the
/// policy is followed instead of the kernel's "Attempted to kill init".
fn panic_is_logged_and_policy_taken(arch: Arch) -> Result<()> {
    let mut vm = boot(
        arch,
        "panic",
        Variant::TestHooks,
        "phase.report phase.test.panic=modules phase.onfail=reboot:0",
    )?;
    let panic = vm.wait_event("panic", BOOT)?;
    contains(
        &panic["message"],
        "injected panic at the start of stage modules",
    )?;
    failure_in(&mut vm, "modules", SHORT)?;
    wait_power(&mut vm, "reboot", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        vm.console_contains("init panicked"),
        "the panic message is not on the console",
    )?;
    check(
        &vm,
        !vm.console_contains("Attempted to kill init"),
        "PID 1 exited",
    )
}

/// A panic on a thread other than main (test build only) takes the policy
/// the same way: the panic hook runs on the panicking thread.
fn a_panic_on_a_helper_thread_takes_the_policy(arch: Arch) -> Result<()> {
    let mut vm = boot(
        arch,
        "thread-panic",
        Variant::TestHooks,
        "phase.report phase.test.panic=thread:modules phase.onfail=poweroff",
    )?;
    let panic = vm.wait_event("panic", BOOT)?;
    contains(
        &panic["message"],
        "injected panic on a helper thread in stage modules",
    )?;
    let failure = failure_in(&mut vm, "modules", SHORT)?;
    check(
        &vm,
        failure["policy"] == json!({"action": "poweroff"}),
        &format!("not the policy asked for: {failure}"),
    )?;
    wait_power(&mut vm, "power off", SHORT)?;
    vm.expect_clean_exit(SHORT)?;
    check(
        &vm,
        !vm.console_contains("Attempted to kill init"),
        "PID 1 exited",
    )
}

/// Signals to PID 1 follow busybox init, sent for real from a shell in the
/// guest (the debug image's rescue shell, after a boot with nothing to
/// boot): SIGTERM, SIGINT and SIGHUP reboot, SIGUSR1 halts, SIGUSR2 and
/// SIGPWR power off. One boot per signal, on x86_64; aarch64 sees SIGUSR2
/// in the rescue-shell netboot scenario.
#[test]
fn x86_64_signals_to_pid1_follow_busybox_init() -> Result<()> {
    let arch = Arch::X86_64;
    let bundle = artifacts::bundle(arch, "debug", Variant::Release)?;
    for (signal, action) in [
        ("TERM", "reboot"),
        ("INT", "reboot"),
        ("HUP", "reboot"),
        ("USR1", "halt"),
        ("USR2", "power off"),
        ("PWR", "power off"),
    ] {
        let spec = VmSpec::direct(
            format!("signal-{signal}-{arch}"),
            arch,
            &bundle.kernel.image,
            &bundle.initrd,
            "phase.onfail=shell",
        );
        let mut vm = Vm::start(&spec)?;
        vm.wait_console("starting /bin/sh", BOOT)?;
        vm.type_console(&format!("kill -{signal} 1\n"))?;
        vm.wait_console(
            &format!("signal {} received: {action}", number(signal)),
            SHORT,
        )?;
        wait_power(&mut vm, action, SHORT)?;
        if action == "halt" {
            vm.wait_console("reboot: System halted", SHORT)?;
            vm.kill()?;
        } else {
            // -no-reboot: a reboot ends QEMU as a power-off does.
            vm.expect_clean_exit(SHORT)?;
        }
    }
    Ok(())
}

/// The x86_64 signal numbers the init logs.
fn number(signal: &str) -> u32 {
    match signal {
        "HUP" => 1,
        "INT" => 2,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "PWR" => 30,
        _ => 0,
    }
}

/// With the RTC in 2001 the clock is raised to the image's build time; the
/// release image refuses rd.shell.
fn clock_floor_and_no_shell(arch: Arch) -> Result<()> {
    let mut vm = boot_with(
        arch,
        "clock",
        Variant::Release,
        "phase.report rd.shell phase.onfail=poweroff",
        |spec| {
            spec.rtc_base = Some("2001-01-01T00:00:00".into());
        },
    )?;
    let ready = vm.wait_event("ready", BOOT)?;
    let early = stage_event(&vm, "early");
    let raised_from = early["clock"]["raised_from"].as_i64().unwrap_or(0);
    check(
        &vm,
        (978_307_200..978_307_200 + 600).contains(&raised_from),
        "the clock did not start in 2001",
    )?;
    check(
        &vm,
        early["clock"]["to"] == ready["image"]["build_time"],
        "the clock was not raised to the build time",
    )?;
    check(
        &vm,
        ready["image"]["shell"] == false,
        "the release image claims a shell",
    )?;
    let plan_event = stage_event(&vm, "plan");
    let warnings = plan_event["warnings"].to_string();
    check(
        &vm,
        warnings.contains("rd.shell refused"),
        "rd.shell was not refused",
    )?;
    vm.wait_event("report", SHORT)?;
    vm.expect_clean_exit(SHORT)
}

phase_scenarios::on_both_arches!(
    boots_to_ready,
    malformed_cmdline_reboots,
    poweroff_policy,
    halt_policy,
    panic_is_logged_and_policy_taken,
    a_panic_on_a_helper_thread_takes_the_policy,
    clock_floor_and_no_shell,
);
