//! Human log lines: one per stage and per notable step, on the console and in
//! the kernel log.
//!
//! Lines go straight to the console so they appear even with `quiet`, and to
//! `/dev/kmsg` so `dmesg` keeps them after the hand-off. Kernel-log lines use
//! the debug level, which the kernel does not echo to the console (no
//! duplicates); failure reports use the error level so they surface even when
//! the console cannot be written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use crate::sys;

struct Sinks {
    console: Option<File>,
    kmsg: Option<File>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    console: None,
    kmsg: None,
});

/// Severity of a line; maps onto kernel log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Opens `/dev/console` and `/dev/kmsg` (after `/dev` is mounted). Until this
/// succeeds, lines go to standard error.
pub fn open() {
    let console = OpenOptions::new().write(true).open("/dev/console").ok();
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    if let Ok(mut sinks) = SINKS.lock() {
        sinks.console = console;
        sinks.kmsg = kmsg;
    }
}

/// Formats `text` the way every line looks: `[  3.142] phase: text`, using
/// the kernel's clock so our lines interleave with its own.
pub fn format_line(text: &str) -> String {
    let t = sys::clock_gettime_boottime();
    format!(
        "[{:>5}.{:03}] phase: {}\n",
        t.as_secs(),
        t.subsec_millis(),
        text
    )
}

/// Writes one line (or several, for multi-line text).
pub fn line(level: Level, text: &str) {
    let mut console_text = String::new();
    for part in text.lines() {
        console_text.push_str(&format_line(part));
    }
    let Ok(mut sinks) = SINKS.lock() else {
        // Poisoned: a thread panicked while logging. Stay useful anyway.
        let _ = std::io::stderr().write_all(console_text.as_bytes());
        return;
    };
    let console_ok = match sinks.console.as_mut() {
        Some(c) => c.write_all(console_text.as_bytes()).is_ok(),
        None => std::io::stderr().write_all(console_text.as_bytes()).is_ok(),
    };
    if let Some(kmsg) = sinks.kmsg.as_mut() {
        // <7> debug stays out of the console; <3> err shows everywhere.
        let prio = match level {
            Level::Error => 3,
            _ if !console_ok => 4,
            _ => 7,
        };
        for part in text.lines() {
            // One write per record: /dev/kmsg takes each write as one message.
            let _ = kmsg.write_all(format!("<{prio}>phase: {part}\n").as_bytes());
        }
    }
}

/// Writes raw text to the console only (a countdown, a progress bar).
pub fn console_raw(text: &str) {
    if let Ok(mut sinks) = SINKS.lock() {
        match sinks.console.as_mut() {
            Some(c) => {
                let _ = c.write_all(text.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
        }
    }
}

/// For the panic hook: writes without taking the lock, on freshly opened
/// files, because the panic may have happened while the lock was held.
pub fn emergency(text: &str) {
    let console_text = format_line(text);
    match OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut c) => {
            let _ = c.write_all(console_text.as_bytes());
        }
        Err(_) => {
            let _ = std::io::stderr().write_all(console_text.as_bytes());
        }
    }
    if let Ok(mut kmsg) = File::options().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<2>phase: {text}\n").as_bytes());
    }
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Info, &format!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Warn, &format!("warning: {}", format_args!($($arg)*))) };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Error, &format!($($arg)*)) };
}
