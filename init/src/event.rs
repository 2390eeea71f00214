//! Machine-readable events for the test host: one JSON object per line.
//!
//! When the VM has a virtio-serial port named `phase.events`, events go there
//! and the host reads them from a socket, so tests assert on events instead of
//! scraping console text or sleeping. Events raised before the port can exist
//! (the port needs `virtio_console`, loaded in the modules stage) wait in a
//! buffer. Without a port, events go to the console as
//! `phase-event: {…}` lines, which the host harness also understands.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use phase_initramfs::layout::EVENT_PORT_NAME;
use serde_json::{Map, Value};

use crate::sys;

/// Marks an event line on the console.
pub const CONSOLE_PREFIX: &str = "phase-event: ";

enum Sink {
    Buffer(Vec<String>),
    Port(File),
    Console,
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Buffer(Vec::new()));

/// Emits an event of `kind` with the given fields (an object), stamped with
/// `t_ms`, milliseconds since the kernel started (CLOCK_BOOTTIME).
pub fn emit(kind: &str, fields: Value) {
    let line = stamp(kind, fields);
    if let Ok(mut sink) = SINK.lock() {
        write(&mut sink, line, false);
    }
}

/// Like [`emit`], but gives up instead of waiting for the sink's lock; for the
/// panic path, where the lock may be held by the panicking thread.
pub fn try_emit(kind: &str, fields: Value) {
    let line = stamp(kind, fields);
    if let Ok(mut sink) = SINK.try_lock() {
        write(&mut sink, line, true);
    }
}

/// On failure before the channel is open: send what is buffered to the
/// console, so the host still sees every event.
pub fn flush_buffer_to_console() {
    // Only a buffer is replaced: an open port stays the sink.
    if let Ok(mut sink) = SINK.try_lock()
        && matches!(*sink, Sink::Buffer(_))
        && let Sink::Buffer(lines) = std::mem::replace(&mut *sink, Sink::Console)
    {
        for line in lines {
            crate::log::emergency(&format!("{CONSOLE_PREFIX}{line}"));
        }
    }
}

fn stamp(kind: &str, fields: Value) -> String {
    let mut object = Map::new();
    object.insert("event".into(), Value::from(kind));
    // u64 milliseconds since boot: overflow would take 584 million years.
    let t_ms = sys::clock_gettime_boottime().as_millis() as u64;
    object.insert("t_ms".into(), Value::from(t_ms));
    if let Value::Object(extra) = fields {
        object.extend(extra);
    }
    Value::Object(object).to_string()
}

fn write(sink: &mut Sink, line: String, emergency: bool) {
    match sink {
        Sink::Buffer(lines) => lines.push(line),
        Sink::Port(port) => {
            let _ = port.write_all(format!("{line}\n").as_bytes());
        }
        Sink::Console if emergency => crate::log::emergency(&format!("{CONSOLE_PREFIX}{line}")),
        Sink::Console => crate::log::console_raw(&format!("{CONSOLE_PREFIX}{line}\n")),
    }
}

/// Where events ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Port(PathBuf),
    /// The VM has no virtio console device: events go to the console.
    NoDevice,
    /// A virtio console device exists but no port named `phase.events`
    /// appeared within the budget.
    NoPort,
}

/// Finds the `phase.events` port and sends buffered events to it; falls back
/// to the console. Waits up to `budget` for the port to be announced, but only
/// when the VM has a virtio console device at all.
pub fn open_channel(budget: Duration) -> Channel {
    let channel = find_channel(budget);
    let port = match &channel {
        Channel::Port(path) => OpenOptions::new().write(true).open(path).ok(),
        _ => None,
    };
    let Ok(mut sink) = SINK.lock() else {
        return channel;
    };
    let opened = port.map_or(Sink::Console, Sink::Port);
    if let Sink::Buffer(lines) = std::mem::replace(&mut *sink, opened) {
        for line in lines {
            write(&mut sink, line, false);
        }
    }
    channel
}

fn find_channel(budget: Duration) -> Channel {
    if !has_virtio_console() {
        return Channel::NoDevice;
    }
    let deadline = Instant::now() + budget;
    loop {
        if let Some(path) = find_port() {
            return Channel::Port(path);
        }
        if Instant::now() >= deadline {
            return Channel::NoPort;
        }
        // The host announces port names asynchronously after the driver
        // binds; poll sysfs briefly rather than pull in a uevent listener.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether any virtio device of type 3 (console) is present.
fn has_virtio_console() -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/bus/virtio/devices") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("device")).is_ok_and(|id| id.trim() == "0x0003")
    })
}

fn find_port() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in entries.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == EVENT_PORT_NAME {
            let dev = Path::new("/dev").join(entry.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}
