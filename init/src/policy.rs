//! What happens when the boot fails, and how PID 1 stops the machine.
//!
//! Every failure ends here: one structured report on the console (and in the
//! kernel log, and as a `failure` event), then the plan's `phase.onfail`
//! policy. PID 1 never returns from `main` and never exits; if even the final
//! `reboot(2)` fails it parks forever, still reaping children.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use phase_initramfs::layout;
use serde::Serialize;
use serde_json::{Value, json};

use crate::plan::{FailPolicy, Stage};
use crate::sys::{self, RebootCommand};
use crate::{event, log, reaper};

/// A failed boot: where, why, and what was tried first.
///
/// `error` is the line a person reads; `kind` and `detail` say the same as
/// data (`"artifact_digest"` with the expected and actual digests), so the
/// failure event can be checked field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub stage: Stage,
    pub error: String,
    /// A stable snake-case name of the reason (`"error"` when there is none
    /// more specific).
    pub kind: String,
    /// The reason's values, as an object (`null` when there are none).
    pub detail: Value,
    pub tried: Vec<Tried>,
}

impl Failure {
    pub fn new(stage: Stage, error: impl Into<String>) -> Self {
        Failure {
            stage,
            error: error.into(),
            kind: "error".into(),
            detail: Value::Null,
            tried: Vec::new(),
        }
    }

    /// The same failure with its reason as data.
    pub fn because(mut self, kind: impl Into<String>, detail: Value) -> Self {
        self.kind = kind.into();
        self.detail = detail;
        self
    }
}

/// One attempt before the failure, as a line and as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tried {
    /// Where it was tried: a mirror's URL, an interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What was asked for there: `manifest`, `kernel`, `initrd`, ….
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// `refused` (the bytes arrived and were judged: another try would see
    /// the same), `transport` (they did not arrive), or `error`.
    pub outcome: &'static str,
    pub kind: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    /// The attempt as one line.
    pub error: String,
}

impl Tried {
    /// An attempt known only as a line of text.
    pub fn text(line: impl Into<String>) -> Tried {
        Tried {
            at: None,
            what: None,
            outcome: "error",
            kind: "error".into(),
            detail: Value::Null,
            error: line.into(),
        }
    }

    /// The line for the console report.
    pub fn line(&self) -> String {
        match &self.at {
            Some(at) => format!("{at}: {}", self.error),
            None => self.error.clone(),
        }
    }
}

struct Settings {
    policy: FailPolicy,
    shell_available: bool,
}

static SETTINGS: Mutex<Settings> = Mutex::new(Settings {
    policy: FailPolicy::Reboot {
        delay_s: FailPolicy::DEFAULT_REBOOT_DELAY_S,
    },
    shell_available: false,
});
/// Set by the first thread to fail; later failures (a deadline firing while a
/// stage also fails) wait instead of acting twice.
static TAKEN: AtomicBool = AtomicBool::new(false);
/// Set while a shell runs on the console: a signal then acts even though a
/// failure is being handled, since that failure's policy is the shell
/// itself and a person in it may well `kill -TERM 1` to reboot.
static IN_SHELL: AtomicBool = AtomicBool::new(false);
/// Run before any shell starts (see [`before_shell`]).
static BEFORE_SHELL: OnceLock<fn()> = OnceLock::new();
static STAGE: AtomicU8 = AtomicU8::new(0);
/// Set once a hand-off is past the point of no return (the initramfs is
/// being deleted): the boot deadline no longer acts.
static DEADLINE_DISARMED: AtomicBool = AtomicBool::new(false);

/// Tells the boot deadline not to act: the hand-off is under way and a
/// failure of its own still takes the policy.
pub fn disarm_deadline() {
    DEADLINE_DISARMED.store(true, Ordering::SeqCst);
}

pub fn deadline_disarmed() -> bool {
    DEADLINE_DISARMED.load(Ordering::SeqCst)
}

/// Records the policy from the plan and whether the image has a usable shell.
pub fn configure(policy: FailPolicy, shell_available: bool) {
    if let Ok(mut s) = SETTINGS.lock() {
        s.policy = policy;
        s.shell_available = shell_available;
    }
}

/// Records the stage the boot is in, for failures raised outside it (the
/// deadline, a panic).
pub fn enter(stage: Stage) {
    STAGE.store(stage as u8, Ordering::SeqCst);
}

pub fn current_stage() -> Stage {
    let n = STAGE.load(Ordering::SeqCst);
    Stage::ALL
        .get(usize::from(n))
        .copied()
        .unwrap_or(Stage::Early)
}

fn settings() -> (FailPolicy, bool) {
    match SETTINGS.try_lock() {
        Ok(s) => (s.policy, s.shell_available),
        Err(_) => (FailPolicy::default(), false),
    }
}

/// Writes a line through the normal logger, or, after a panic, through the
/// lock-free emergency path.
fn say(emergency: bool, text: &str) {
    if emergency {
        log::emergency(text);
    } else {
        log::line(log::Level::Error, text);
    }
}

/// Reports the failure and follows the policy. Never returns.
pub fn fail(failure: Failure) -> ! {
    fail_inner(failure, false)
}

fn fail_inner(failure: Failure, emergency: bool) -> ! {
    if TAKEN.swap(true, Ordering::SeqCst) {
        // Another thread is already reporting and acting.
        park();
    }
    event::flush_buffer_to_console();
    let (policy, shell_available) = settings();
    let effective = effective_policy(policy, shell_available);
    say(emergency, "======== boot failed ========");
    say(emergency, &format!("stage:  {}", failure.stage));
    say(emergency, &format!("error:  {}", failure.error));
    for attempt in &failure.tried {
        say(emergency, &format!("tried:  {}", attempt.line()));
    }
    say(
        emergency,
        &format!("policy: {}", describe(policy, effective)),
    );
    let fields = json!({
        "stage": failure.stage,
        "error": failure.error,
        "kind": failure.kind,
        "detail": failure.detail,
        "tried": failure.tried,
        "policy": effective,
    });
    if emergency {
        event::try_emit("failure", fields);
    } else {
        event::emit("failure", fields);
    }
    act(effective, emergency)
}

/// The policy that will really be followed: `shell` without a shell in the
/// image becomes the default reboot.
fn effective_policy(policy: FailPolicy, shell_available: bool) -> FailPolicy {
    match policy {
        FailPolicy::Shell if !shell_available => FailPolicy::default(),
        other => other,
    }
}

fn describe(asked: FailPolicy, effective: FailPolicy) -> String {
    let what = match effective {
        FailPolicy::Reboot { delay_s } => format!("reboot in {delay_s} s"),
        FailPolicy::Halt => "halt".into(),
        FailPolicy::Poweroff => "power off".into(),
        FailPolicy::Shell => "shell on the console, then reboot".into(),
    };
    if asked == effective {
        format!("{what} (phase.onfail={asked})")
    } else {
        format!("{what} (phase.onfail={asked}, but this image has no shell)")
    }
}

fn act(policy: FailPolicy, emergency: bool) -> ! {
    match policy {
        FailPolicy::Reboot { delay_s } => {
            countdown(delay_s, emergency);
            power(RebootCommand::Restart, "reboot")
        }
        FailPolicy::Halt => {
            crate::watchdog::disarm("halt: the policy is to stay stopped");
            power(RebootCommand::Halt, "halt")
        }
        FailPolicy::Poweroff => power(RebootCommand::PowerOff, "power off"),
        FailPolicy::Shell => {
            run_shell("the boot failed");
            say(emergency, "shell exited: rebooting");
            power(RebootCommand::Restart, "reboot")
        }
    }
}

/// A visible countdown, one number per second on the same line.
fn countdown(seconds: u32, emergency: bool) {
    if seconds == 0 {
        return;
    }
    say(emergency, &format!("rebooting in {seconds} s"));
    for left in (1..=seconds).rev() {
        if !emergency {
            log::console_raw(&format!("{left} "));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if !emergency {
        log::console_raw("\n");
    }
}

/// Sets what runs before a shell starts: the boot uses it to load the
/// drivers a netboot left out, so a rescue shell sees the local disks.
/// Only the first call counts.
pub fn before_shell(hook: fn()) {
    let _ = BEFORE_SHELL.set(hook);
}

/// Starts the image's shell on the console and waits for it to exit.
/// Returns false if the image has none or it could not start.
pub fn run_shell(reason: &str) -> bool {
    if !std::path::Path::new(layout::SHELL).exists() {
        return false;
    }
    if let Some(hook) = BEFORE_SHELL.get() {
        hook();
    }
    crate::watchdog::disarm("a shell: a person is at the console");
    log::line(
        log::Level::Warn,
        &format!(
            "{reason}: starting {} on the console; exit it to continue",
            layout::SHELL
        ),
    );
    let console = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .map(Stdio::from)
    };
    let (Ok(stdin), Ok(stdout), Ok(stderr)) = (console(), console(), console()) else {
        return false;
    };
    let mut cmd = Command::new(layout::SHELL);
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .env("PS1", "phase# ");
    sys::command_setsid_ctty(&mut cmd);
    match reaper::spawn(&mut cmd) {
        Ok(pid) => {
            IN_SHELL.store(true, Ordering::SeqCst);
            reaper::wait(pid);
            IN_SHELL.store(false, Ordering::SeqCst);
            true
        }
        Err(e) => {
            log::line(
                log::Level::Error,
                &format!("cannot start {}: {e}", layout::SHELL),
            );
            false
        }
    }
}

/// Whether a shell may be started (the image has one and the plan allows it).
pub fn shell_available() -> bool {
    settings().1
}

/// Ends a boot that did not fail (report mode): powers off unless a failure
/// or signal is already being handled.
pub fn finish(cmd: RebootCommand, what: &str) -> ! {
    if TAKEN.swap(true, Ordering::SeqCst) {
        park();
    }
    power(cmd, what)
}

/// Syncs and asks the kernel to stop the machine. If that fails, logs why and
/// parks: PID 1 must never exit.
pub fn power(cmd: RebootCommand, what: &str) -> ! {
    event::try_emit("power", json!({ "action": what }));
    sys::sync();
    if let Err(e) = sys::reboot(cmd) {
        log::emergency(&format!(
            "reboot(2) for {what} failed: {e}; waiting forever"
        ));
    }
    park()
}

/// Parks the calling thread forever. The supervisor thread keeps reaping.
pub fn park() -> ! {
    loop {
        std::thread::park();
    }
}

/// Installs the panic hook: the message goes to the console and the kernel
/// log, then the failure policy is followed. With `panic = "abort"` the hook
/// is the last code that runs in a panicking thread, so it never returns.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("init panicked: {info}");
        log::emergency(&message);
        event::try_emit("panic", json!({ "message": message }));
        fail_inner(Failure::new(current_stage(), message), true)
    }));
}

/// Turns a signal sent to PID 1 into an action, as busybox init does:
/// SIGTERM, SIGINT (Ctrl-Alt-Del) and SIGHUP reboot, SIGUSR1 halts, SIGUSR2
/// and SIGPWR power off.
pub fn on_signal(signal: i32) {
    let (cmd, what) = match signal {
        libc::SIGUSR1 => (RebootCommand::Halt, "halt"),
        libc::SIGUSR2 | libc::SIGPWR => (RebootCommand::PowerOff, "power off"),
        _ => (RebootCommand::Restart, "reboot"),
    };
    log::line(
        log::Level::Warn,
        &format!("signal {signal} received: {what}"),
    );
    if TAKEN.swap(true, Ordering::SeqCst) && !IN_SHELL.load(Ordering::SeqCst) {
        return;
    }
    power(cmd, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_policy_without_a_shell_falls_back_to_reboot() {
        assert_eq!(
            effective_policy(FailPolicy::Shell, false),
            FailPolicy::default()
        );
        assert_eq!(effective_policy(FailPolicy::Shell, true), FailPolicy::Shell);
        assert_eq!(effective_policy(FailPolicy::Halt, false), FailPolicy::Halt);
        assert_eq!(
            describe(FailPolicy::Shell, FailPolicy::default()),
            "reboot in 10 s (phase.onfail=shell, but this image has no shell)"
        );
        assert_eq!(
            describe(FailPolicy::Poweroff, FailPolicy::Poweroff),
            "power off (phase.onfail=poweroff)"
        );
    }
}
