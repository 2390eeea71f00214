//! PID 1's duties to its children: reap every zombie for the whole life of
//! the init, and turn signals into actions.
//!
//! The supervised signals are blocked in every thread (the mask is set before
//! any thread starts) and taken synchronously by one supervisor thread with
//! `sigwaitinfo`. On `SIGCHLD` it reaps every exited child with
//! `waitpid(-1, WNOHANG)`. Children the init started itself are registered
//! under the same lock that `spawn` holds while forking, so their exit status
//! is kept for [`wait`]; anything else (orphans re-parented to PID 1) is
//! reaped and counted.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys::{self, WaitStatus};

#[derive(Default)]
struct Registry {
    /// Children of ours being waited for: pid → exit status once reaped.
    waiting: HashMap<i32, Option<WaitStatus>>,
    /// How many children not started through [`spawn`] were reaped.
    orphans: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn registry() -> MutexGuard<'static, Option<Registry>> {
    // A poisoned lock only means a panic elsewhere; the data is still valid.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the supervised signals on this thread (call first thing in `main`,
/// before any other thread exists) and starts the supervisor thread, which
/// reaps children and passes every other signal to `on_signal`.
pub fn start(on_signal: fn(i32)) -> io::Result<()> {
    sys::sigprocmask_block_supervised()?;
    *registry() = Some(Registry::default());
    std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            loop {
                match sys::sigwaitinfo() {
                    Ok(libc::SIGCHLD) => reap_all(),
                    Ok(signal) => on_signal(signal),
                    // Only EINVAL is possible, and the set is fixed; keep reaping.
                    Err(_) => reap_all(),
                }
            }
        })?;
    // Children may have exited before the supervisor started waiting.
    reap_all();
    Ok(())
}

fn reap_all() {
    let mut guard = registry();
    let Some(reg) = guard.as_mut() else { return };
    // Stops when no child has changed state, or there are none (ECHILD).
    while let Ok(Some((pid, status))) = sys::waitpid_any_nohang() {
        let pid = pid.as_raw_nonzero().get();
        match reg.waiting.get_mut(&pid) {
            Some(slot) => *slot = Some(status),
            None => reg.orphans += 1,
        }
    }
    drop(guard);
    CHANGED.notify_all();
}

/// Starts `cmd` as a child whose exit status [`wait`] will return. The
/// registry lock is held across the fork so the supervisor cannot reap the
/// child before it is registered.
pub fn spawn(cmd: &mut Command) -> io::Result<i32> {
    let mut guard = registry();
    let reg = guard
        .as_mut()
        .ok_or_else(|| io::Error::other("the reaper is not running"))?;
    let child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    reg.waiting.insert(pid, None);
    // Dropping a std Child neither waits nor kills; the supervisor reaps it.
    drop(child);
    Ok(pid)
}

/// Waits for a child started with [`spawn`] to exit.
pub fn wait(pid: i32) -> WaitStatus {
    let mut guard = registry();
    loop {
        if let Some(reg) = guard.as_mut()
            && let Some(Some(status)) = reg.waiting.get(&pid).copied()
        {
            reg.waiting.remove(&pid);
            return status;
        }
        guard = CHANGED.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

/// Number of orphans reaped so far.
pub fn orphans_reaped() -> u64 {
    registry().as_ref().map_or(0, |r| r.orphans)
}

/// Waits until at least `count` orphans have been reaped, or `timeout`
/// passes; returns the number reaped.
pub fn wait_for_orphans(count: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut guard = registry();
    loop {
        let reaped = guard.as_ref().map_or(0, |r| r.orphans);
        let now = Instant::now();
        if reaped >= count || now >= deadline {
            return reaped;
        }
        guard = CHANGED
            .wait_timeout(guard, deadline - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}
