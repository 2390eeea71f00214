//! The hardware watchdog (SECURITY.md row 22): armed from the modules stage
//! to the hand-off and through it, so a hang anywhere — a stage that never
//! returns, a wedged kernel, a next stage that never comes up — resets the
//! machine even when the init's own `phase.timeout` cannot act.
//!
//! - **Opened** after the modules stage (its driver is loaded by modalias
//!   like any other, e.g. `i6300esb`), if `/sys/class/watchdog` lists one,
//!   with the timeout `phase.watchdog=S` (default: `phase.timeout` plus
//!   [`MARGIN`]), clamped to what the device can count. `phase.watchdog=0`
//!   leaves the device alone.
//! - **Petted** at the start of every stage and while an artifact's bytes
//!   arrive (at most once a second): progress keeps the machine alive,
//!   silence does not.
//! - **Armed for the hand-off** just before it: the timeout the next stage
//!   expects (its signed command line's `phase.watchdog=`, else this one's),
//!   `nowayout` set (sysfs), and the device stopped and started again so a
//!   driver that latches "no way out" when it starts latches it — the
//!   i6300ESB sets its lock bit, after which not even the kernel's own
//!   reboot notifier, which stops watchdogs on the way into kexec, can
//!   disable it. The descriptor is never closed with the magic character.
//!   The next kernel's driver then finds it running (the lock bit still set)
//!   and its init must open it within the timeout. A watchdog whose hardware
//!   can be stopped is stopped by that notifier on the way into kexec: then
//!   only the init's `phase.timeout` guards the next kernel's boot.
//! - **Disarmed** (magic close) before a halt or a shell: a person is there,
//!   or the policy said to stay stopped.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::plan::BootPlan;
use crate::{error_chain, sys};

/// What `phase.timeout` gets on top by default: the watchdog is the
/// backstop for a boot the init's own deadline could not end.
pub const MARGIN: Duration = Duration::from_secs(60);
/// The least time between two pets from transfer progress.
const PET_EVERY: Duration = Duration::from_secs(1);
const CLASS: &str = "/sys/class/watchdog";

/// The i6300ESB's PCI ids and its lock register in configuration space
/// (Intel 6300ESB datasheet 300641-004, "WDT Lock Register", offset 0x68:
/// bit 1 enables the timer, bit 0 locks both bits until a reset).
const ESB_VENDOR: &str = "0x8086";
const ESB_DEVICE: &str = "0x25ab";
const ESB_LOCK_REG: u64 = 0x68;

/// What the device looked like before the init opened it.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// `watchdog0`.
    pub device: String,
    pub identity: String,
    /// sysfs `state` (`active` only once some process opened it).
    pub state: String,
    /// sysfs `timeout` as the driver set it at probe.
    pub timeout_s: Option<u32>,
    /// For an i6300ESB, its enable and lock bits, read from configuration
    /// space: `running` after a kexec means the previous stage's watchdog
    /// survived the jump. `None` for other devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hardware {
    pub running: bool,
    pub locked: bool,
}

struct Armed {
    file: std::fs::File,
    device: String,
    timeout_s: u32,
    last_pet: Instant,
    pets: u64,
}

static FOUND: Mutex<Option<Found>> = Mutex::new(None);
static ARMED: Mutex<Option<Armed>> = Mutex::new(None);

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The first watchdog the kernel lists.
fn first_device() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(CLASS)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("watchdog"))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    names.into_iter().next()
}

/// The i6300ESB's enable and lock bits, if the machine has one.
fn esb_hardware() -> Option<Hardware> {
    let dir = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|d| {
            read(d, "vendor").as_deref() == Some(ESB_VENDOR)
                && read(d, "device").as_deref() == Some(ESB_DEVICE)
        })?;
    let config = std::fs::File::open(dir.join("config")).ok()?;
    let mut byte = [0u8; 1];
    config.read_exact_at(&mut byte, ESB_LOCK_REG).ok()?;
    Some(Hardware {
        running: byte[0] & 0x02 != 0,
        locked: byte[0] & 0x01 != 0,
    })
}

/// The timeout to ask for: `phase.watchdog`, else the boot budget plus
/// [`MARGIN`], within the device's range.
pub fn timeout_for(plan: &BootPlan, min: Option<u32>, max: Option<u32>) -> u32 {
    let wanted = plan
        .watchdog
        .unwrap_or_else(|| plan.timeout.saturating_add(MARGIN))
        .as_secs();
    let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
    wanted
        .max(min.unwrap_or(1))
        .min(max.unwrap_or(u32::MAX))
        .max(1)
}

/// Opens the watchdog, if there is one and the plan lets it: returns the
/// fields of the `watchdog` event (and logs a line), or `None` without one.
pub fn open(plan: &BootPlan) -> Option<Value> {
    let device = first_device()?;
    let dir = Path::new(CLASS).join(&device);
    let number = |name| read(&dir, name).and_then(|s| s.parse::<u32>().ok());
    let found = Found {
        device: device.clone(),
        identity: read(&dir, "identity").unwrap_or_default(),
        state: read(&dir, "state").unwrap_or_default(),
        timeout_s: number("timeout"),
        hardware: esb_hardware(),
    };
    if let Ok(mut f) = FOUND.lock() {
        *f = Some(found.clone());
    }
    if plan.watchdog == Some(Duration::ZERO) {
        info!(
            "watchdog: {device} ({}) left alone (phase.watchdog=0)",
            found.identity
        );
        return Some(json!({ "found": found, "armed": false, "why": "phase.watchdog=0" }));
    }
    let timeout = timeout_for(plan, number("min_timeout"), number("max_timeout"));
    let node = PathBuf::from("/dev").join(&device);
    let armed = std::fs::OpenOptions::new()
        .write(true)
        .open(&node)
        .map_err(|e| format!("open({}): {e}", node.display()))
        .and_then(|file| {
            let set = sys::watchdog_settimeout(&file, timeout as i32)
                .map_err(|e| format!("WDIOC_SETTIMEOUT {timeout}: {e}"))?;
            sys::watchdog_keepalive(&file).map_err(|e| format!("WDIOC_KEEPALIVE: {e}"))?;
            Ok(Armed {
                file,
                device: device.clone(),
                timeout_s: u32::try_from(set).unwrap_or(timeout),
                last_pet: Instant::now(),
                pets: 1,
            })
        });
    match armed {
        Ok(a) => {
            let timeout_s = a.timeout_s;
            info!(
                "watchdog: {device} ({}) armed, {timeout_s} s without a sign of progress resets the machine",
                found.identity
            );
            if let Ok(mut slot) = ARMED.lock() {
                *slot = Some(a);
            }
            Some(json!({ "found": found, "armed": true, "timeout_s": timeout_s }))
        }
        Err(e) => {
            // A watchdog the init cannot drive must not stop the boot; a
            // half-opened one the driver stops on close.
            warn!("watchdog: {device}: {e}; the boot goes on without it");
            Some(json!({ "found": found, "armed": false, "error": e }))
        }
    }
}

/// Pets the watchdog, if armed.
pub fn pet() {
    if let Ok(mut slot) = ARMED.try_lock()
        && let Some(a) = slot.as_mut()
        && sys::watchdog_keepalive(&a.file).is_ok()
    {
        a.last_pet = Instant::now();
        a.pets += 1;
    }
}

/// Pets the watchdog for a transfer's progress, at most once a second.
pub fn pet_progress() {
    let due = ARMED
        .try_lock()
        .ok()
        .and_then(|s| s.as_ref().map(|a| a.last_pet.elapsed() >= PET_EVERY))
        .unwrap_or(false);
    if due {
        pet();
    }
}

/// The next stage's timeout from its command line (`phase.watchdog=S`).
pub fn expected_by(cmdline: &str) -> Option<u32> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("phase.watchdog="))
        .next_back()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&s| s > 0)
}

/// Leaves the watchdog armed for the next stage (see the module text):
/// `timeout` (else the current one), `nowayout`, restarted so the driver
/// latches it, petted. Returns the `handoff` event's `watchdog` field.
pub fn arm_for_handoff(timeout: Option<u32>) -> Value {
    let Ok(mut slot) = ARMED.lock() else {
        return Value::Null;
    };
    let Some(a) = slot.as_mut() else {
        return Value::Null;
    };
    let mut steps = Vec::new();
    let timeout = timeout.unwrap_or(a.timeout_s);
    match sys::watchdog_settimeout(&a.file, timeout as i32) {
        Ok(set) => a.timeout_s = u32::try_from(set).unwrap_or(timeout),
        Err(e) => steps.push(format!("WDIOC_SETTIMEOUT {timeout}: {e}")),
    }
    // Stopped for the moment it takes to set nowayout, then started again.
    let nowayout = Path::new(CLASS).join(&a.device).join("nowayout");
    let restarted = sys::watchdog_setoptions(&a.file, sys::WDIOS_DISABLECARD)
        .map_err(|e| format!("WDIOS_DISABLECARD: {e}"))
        .and_then(|()| {
            std::fs::write(&nowayout, "1").map_err(|e| format!("{}: {e}", nowayout.display()))
        });
    if let Err(e) = &restarted {
        steps.push(e.clone());
    }
    // Whatever happened above, the device must end up running.
    if let Err(e) = sys::watchdog_setoptions(&a.file, sys::WDIOS_ENABLECARD) {
        steps.push(format!("WDIOS_ENABLECARD: {e}"));
    }
    if let Err(e) = sys::watchdog_keepalive(&a.file) {
        steps.push(format!("WDIOC_KEEPALIVE: {e}"));
    }
    let timeout_s = sys::watchdog_gettimeout(&a.file)
        .ok()
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(a.timeout_s);
    for s in &steps {
        warn!("watchdog: hand-off: {s}");
    }
    info!(
        "watchdog: {} left armed for the next stage: {timeout_s} s{}",
        a.device,
        if restarted.is_ok() {
            ", no way out"
        } else {
            ""
        }
    );
    json!({
        "device": a.device,
        "timeout_s": timeout_s,
        "nowayout": restarted.is_ok(),
        "pets": a.pets,
        "errors": steps,
    })
}

/// Stops the watchdog (magic close), for a halt or a shell.
pub fn disarm(why: &str) {
    let Ok(mut slot) = ARMED.try_lock() else {
        return;
    };
    if let Some(a) = slot.take() {
        match std::io::Write::write(&mut &a.file, b"V") {
            Ok(_) => info!("watchdog: {} stopped ({why})", a.device),
            Err(e) => warn!("watchdog: {}: magic close: {}", a.device, error_chain(&e)),
        }
    }
}

/// The watchdog as found and as armed, for the report.
pub fn status() -> Value {
    let found = FOUND.lock().ok().and_then(|f| f.clone());
    let armed = ARMED.try_lock().ok().and_then(|a| {
        a.as_ref()
            .map(|a| json!({ "device": a.device, "timeout_s": a.timeout_s, "pets": a.pets }))
    });
    match (found, armed) {
        (None, _) => Value::Null,
        (Some(found), armed) => json!({ "found": found, "armed": armed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_the_budget_plus_a_margin_within_the_device() {
        let plan = BootPlan::default();
        assert_eq!(timeout_for(&plan, Some(1), Some(2046)), 360);
        assert_eq!(timeout_for(&plan, Some(1), Some(300)), 300);
        let asked = BootPlan {
            watchdog: Some(Duration::from_secs(30)),
            ..BootPlan::default()
        };
        assert_eq!(timeout_for(&asked, Some(1), Some(2046)), 30);
        assert_eq!(timeout_for(&asked, Some(60), None), 60);
        let long = BootPlan {
            timeout: Duration::from_secs(3600),
            ..BootPlan::default()
        };
        assert_eq!(timeout_for(&long, None, Some(2046)), 2046);
    }

    #[test]
    fn the_next_stage_names_its_timeout_on_its_command_line() {
        assert_eq!(
            expected_by("console=ttyS0 phase.watchdog=90 quiet"),
            Some(90)
        );
        assert_eq!(
            expected_by("phase.watchdog=90 phase.watchdog=120"),
            Some(120)
        );
        assert_eq!(expected_by("phase.watchdog=0"), None);
        assert_eq!(expected_by("phase.watchdog=x console=ttyS0"), None);
        assert_eq!(expected_by(""), None);
    }
}
