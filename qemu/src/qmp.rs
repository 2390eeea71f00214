//! QEMU's machine protocol (QMP), for scenarios that change a running VM
//! from outside: a NIC's link going down and up (`set_link`), a VM started
//! paused (`-S`) and let go (`cont`).
//!
//! The harness listens on a Unix socket and QEMU connects to it as it starts
//! (`-qmp unix:PATH`, QEMU the client), so there is no race with QEMU
//! creating a socket: [`QmpListener::accept`] simply waits for the
//! connection. Commands are answered in order; asynchronous events QEMU
//! sends in between are passed over.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::vm::{VmSpec, scaled};

/// A socket QEMU will connect its monitor to.
pub struct QmpListener {
    listener: UnixListener,
    path: PathBuf,
}

impl QmpListener {
    /// Listens on `dir/qmp.sock` and adds `-qmp unix:…` to `spec`.
    pub fn attach(spec: &mut VmSpec, dir: &Path) -> Result<QmpListener> {
        let path = dir.join("qmp.sock");
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        spec.extra_args
            .extend(["-qmp".to_owned(), format!("unix:{}", path.display())]);
        Ok(QmpListener { listener, path })
    }

    /// Waits for QEMU to connect and negotiates capabilities.
    pub fn accept(self, timeout: Duration) -> Result<Qmp> {
        let (tx, rx) = mpsc::channel();
        let listener = self.listener;
        std::thread::spawn(move || {
            let _ = tx.send(listener.accept().map(|(s, _)| s));
        });
        let stream = rx
            .recv_timeout(scaled(timeout))
            .map_err(|_| anyhow!("QEMU did not connect to {}", self.path.display()))?
            .context("accepting QEMU's monitor connection")?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        };
        let greeting = qmp.read(timeout)?;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }
}

/// A QMP connection to a running VM.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

/// How long QEMU gets to answer one command.
const ANSWER: Duration = Duration::from_secs(10);

impl Qmp {
    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = json!({ "execute": command, "arguments": arguments });
        eprintln!("qmp: {request}");
        writeln!(self.stream, "{request}").context("writing to QMP")?;
        loop {
            let answer = self.read(ANSWER)?;
            if answer.get("event").is_some() {
                continue;
            }
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            bail!("QMP {command}: {answer}");
        }
    }

    /// `set_link`: carrier on or off for the NIC of netdev `name`.
    pub fn set_link(&mut self, name: &str, up: bool) -> Result<()> {
        self.execute("set_link", json!({ "name": name, "up": up }))
            .map(drop)
    }

    /// Starts a VM that QEMU started paused (`-S`).
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", json!({})).map(drop)
    }

    fn read(&mut self, timeout: Duration) -> Result<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(scaled(timeout)))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?;
        if n == 0 {
            bail!("QEMU closed the QMP connection");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }
}
