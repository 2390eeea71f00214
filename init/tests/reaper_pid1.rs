//! The init's reaper running as PID 1 of a new pid namespace (`unshare`):
//! orphans re-parented to it are reaped, its own children's exit statuses
//! reach their waiters, a signal sent to PID 1 from inside the namespace
//! reaches the handler, and no zombie is left behind.
//!
//! The test binary re-executes itself under `unshare --pid --fork
//! --mount-proc`, so the body runs as PID 1 and /proc shows only the
//! namespace. It has its own `main` (harness = false): the signal mask must be
//! set before any other thread exists.

use std::process::{Command, ExitCode};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

const INSIDE: &str = "PHASE_REAPER_TEST_INSIDE";
/// Orphan-making shells, each leaving two orphans.
const SHELLS: u64 = 20;

/// The last signal the supervisor passed to the handler, with a condvar so
/// the test waits on delivery rather than on time.
static SIGNAL: Mutex<i32> = Mutex::new(0);
static DELIVERED: Condvar = Condvar::new();

fn main() -> ExitCode {
    if std::env::var_os(INSIDE).is_some() {
        return match as_pid1() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reaper test (inside the pid namespace): {e}");
                ExitCode::FAILURE
            }
        };
    }
    let exe = std::env::current_exe().expect("own path");
    let mut unshare = Command::new("unshare");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        // Without root, a user namespace grants the rights a pid namespace needs.
        unshare.args(["--user", "--map-root-user"]);
    }
    unshare
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&exe)
        .env(INSIDE, "1");
    eprintln!("reaper test: running {unshare:?}");
    let status = unshare
        .status()
        .expect("unshare (util-linux) must be installed");
    if status.success() {
        eprintln!("reaper test: ok");
        ExitCode::SUCCESS
    } else {
        eprintln!("reaper test: failed ({status})");
        ExitCode::FAILURE
    }
}

fn record(signal: i32) {
    *SIGNAL.lock().unwrap() = signal;
    DELIVERED.notify_all();
}

fn as_pid1() -> Result<(), String> {
    let pid = std::process::id();
    if pid != 1 {
        return Err(format!("expected to be PID 1, am {pid}"));
    }
    phase_init::reaper::start(record).map_err(|e| format!("starting the reaper: {e}"))?;

    // Each shell exits at once, leaving two background children re-parented
    // to PID 1; they exit a moment later and must be reaped by it.
    for i in 0..SHELLS {
        let mut sh = Command::new("sh");
        sh.args(["-c", "sleep 0.2 & sleep 0.3 & exit 7"]);
        let child =
            phase_init::reaper::spawn(&mut sh).map_err(|e| format!("spawning shell {i}: {e}"))?;
        let status = phase_init::reaper::wait(child);
        if status.exit_status() != Some(7) {
            return Err(format!("shell {i} exited with {status:?}, not 7"));
        }
    }
    // A child started outside the reaper and never waited for is reaped too.
    let stray = Command::new("true")
        .spawn()
        .map_err(|e| format!("spawning true: {e}"))?;
    drop(stray);

    let want = 2 * SHELLS + 1;
    let reaped = phase_init::reaper::wait_for_orphans(want, Duration::from_secs(30));
    if reaped < want {
        return Err(format!("only {reaped} of {want} orphans were reaped"));
    }

    // A signal to PID 1 from inside the namespace reaches the handler even
    // though the init installs no signal handler (the signal is blocked and
    // taken with sigwaitinfo).
    let mut kill = Command::new("kill");
    kill.args(["-USR1", "1"]);
    let k = phase_init::reaper::spawn(&mut kill).map_err(|e| format!("spawning kill: {e}"))?;
    phase_init::reaper::wait(k);
    let (got, _) = DELIVERED
        .wait_timeout_while(SIGNAL.lock().unwrap(), Duration::from_secs(10), |s| {
            *s != libc::SIGUSR1
        })
        .unwrap();
    if *got != libc::SIGUSR1 {
        return Err("SIGUSR1 sent to PID 1 never reached the handler".into());
    }
    drop(got);

    let zombies = zombies()?;
    if !zombies.is_empty() {
        return Err(format!("zombies left: {zombies:?}"));
    }
    eprintln!("reaper test: {reaped} orphans reaped, no zombies, SIGUSR1 handled");
    Ok(())
}

/// Processes in state Z, from /proc/<pid>/stat.
fn zombies() -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The state follows the parenthesised command name.
        let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
        if state.is_some_and(|s| s.starts_with('Z')) {
            found.push(stat.trim().to_owned());
        }
    }
    Ok(found)
}
