//! Booting a QEMU VM (TCG only: KVM does not work on these machines) and
//! following it through the init's JSON events.
//!
//! Events arrive on a virtio-serial port named `phase.events`, which QEMU
//! connects to a Unix socket the harness listens on; lines the init prints on
//! the console as `phase-event: {…}` (before the port exists, or in VMs
//! without one) count as events too. The console streams live to stderr,
//! prefixed with the VM's name, and is kept for failure reports. Every wait
//! has a timeout; nothing here sleeps.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use phase_initramfs::layout::EVENT_PORT_NAME;
use serde_json::Value;

use crate::{Arch, cmd};

/// Marks an event line on the console (the init's `event::CONSOLE_PREFIX`).
const CONSOLE_EVENT_PREFIX: &str = "phase-event: ";
/// How many console lines a failure report shows.
const TAIL_LINES: usize = 40;

/// UEFI firmware to boot with; without one, x86 VMs get SeaBIOS and direct
/// kernel boot works on both arches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default: SeaBIOS on x86_64, none on aarch64 (direct boot).
    Default,
    /// OVMF on x86_64, AAVMF on aarch64.
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Disk,
    Cdrom,
}

/// A disk or CD image attached to the VM.
#[derive(Debug, Clone)]
pub struct Drive {
    pub path: PathBuf,
    pub media: Media,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    /// Attach read-only (CDs always are), so several VMs can share an image.
    pub readonly: bool,
}

/// Everything that describes one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Prefix for console lines and failure reports.
    pub name: String,
    pub arch: Arch,
    pub memory_mb: u32,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Kernel command line for direct boot; the console and `panic=-1` are
    /// added in front.
    pub append: String,
    pub firmware: Firmware,
    pub drives: Vec<Drive>,
    /// A virtio NIC on QEMU user networking (DHCP gives 10.0.2.15, the host's
    /// loopback is 10.0.2.2).
    pub user_net: bool,
    /// Attach the `phase.events` virtio-serial port.
    pub event_port: bool,
    /// `-rtc base=…`, to start the guest clock elsewhere.
    pub rtc_base: Option<String>,
    pub extra_args: Vec<String>,
}

impl VmSpec {
    /// A VM that boots `kernel` + `initrd` directly with `append`.
    pub fn direct(
        name: impl Into<String>,
        arch: Arch,
        kernel: &Path,
        initrd: &Path,
        append: impl Into<String>,
    ) -> Self {
        VmSpec {
            name: name.into(),
            arch,
            memory_mb: 512,
            kernel: Some(kernel.to_owned()),
            initrd: Some(initrd.to_owned()),
            append: append.into(),
            firmware: Firmware::Default,
            drives: Vec::new(),
            user_net: false,
            event_port: true,
            rtc_base: None,
            extra_args: Vec::new(),
        }
    }

    /// The QEMU command line. `events` is the socket the harness listens on;
    /// `scratch` a directory for per-VM files (the UEFI variable store copy).
    pub fn command(&self, events: &Path, scratch: &Path) -> Result<Command> {
        let mut c = Command::new(self.arch.qemu_binary());
        c.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        c.args(self.arch.machine_args());
        c.args(["-m", &self.memory_mb.to_string(), "-smp", "1"]);
        c.args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        if self.firmware == Firmware::Uefi {
            let (code, vars) = match self.arch {
                Arch::X86_64 => (
                    "/usr/share/OVMF/OVMF_CODE_4M.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.fd",
                ),
                Arch::Aarch64 => (
                    "/usr/share/AAVMF/AAVMF_CODE.fd",
                    "/usr/share/AAVMF/AAVMF_VARS.fd",
                ),
            };
            // Each VM gets its own writable copy of the variable store.
            let vars_copy = scratch.join("efivars.fd");
            std::fs::copy(vars, &vars_copy).with_context(|| format!("copying {vars}"))?;
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ));
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars_copy.display()
            ));
        }
        if let Some(kernel) = &self.kernel {
            c.arg("-kernel").arg(kernel);
            let append = format!("console={} panic=-1 {}", self.arch.console(), self.append);
            c.args(["-append", append.trim_end()]);
        }
        if let Some(initrd) = &self.initrd {
            c.arg("-initrd").arg(initrd);
        }
        if self.event_port {
            c.args(["-device", "virtio-serial-pci,id=vser0"]);
            c.arg("-chardev")
                .arg(format!("socket,id=events,path={}", events.display()));
            c.args([
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=events,name={EVENT_PORT_NAME}"),
            ]);
        }
        if self.user_net {
            c.args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0",
            ]);
        }
        for (i, drive) in self.drives.iter().enumerate() {
            let readonly = if drive.media == Media::Cdrom || drive.readonly {
                "on"
            } else {
                "off"
            };
            c.arg("-drive").arg(format!(
                "if=none,id=drive{i},file={},format={},readonly={readonly}",
                drive.path.display(),
                drive.format,
            ));
            // With -kernel, QEMU's x86 loader ROM holds boot index 0 and
            // the drives are not booted from.
            let boot = if self.kernel.is_none() {
                format!(",bootindex={i}")
            } else {
                String::new()
            };
            let device = match (drive.media, self.arch) {
                (Media::Disk, _) => format!("virtio-blk-pci,drive=drive{i}{boot}"),
                // q35's AHCI controller takes IDE CD drives.
                (Media::Cdrom, Arch::X86_64) => format!("ide-cd,drive=drive{i}{boot}"),
                // aarch64 virt has no IDE: a SCSI CD on virtio-scsi.
                (Media::Cdrom, Arch::Aarch64) => {
                    if !c.get_args().any(|a| a == "virtio-scsi-pci,id=scsi0") {
                        c.args(["-device", "virtio-scsi-pci,id=scsi0"]);
                    }
                    format!("scsi-cd,drive=drive{i},bus=scsi0.0{boot}")
                }
            };
            c.args(["-device", &device]);
        }
        if let Some(base) = &self.rtc_base {
            c.args(["-rtc", &format!("base={base}")]);
        }
        c.args(&self.extra_args);
        Ok(c)
    }
}

enum Msg {
    /// A console line and when the harness read it.
    Console(String, Instant),
    Event(Value),
    ConsoleClosed,
}

/// A running VM.
pub struct Vm {
    name: String,
    child: Child,
    rx: Receiver<Msg>,
    console: Vec<String>,
    /// When each console line arrived, since QEMU started.
    console_at: Vec<Duration>,
    events: Vec<Value>,
    /// Index of the first event no wait has consumed yet.
    cursor: usize,
    exited: Option<ExitStatus>,
    console_closed: bool,
    started: Instant,
    // Holds the event socket; removed when the VM is dropped.
    _dir: tempfile::TempDir,
}

/// Multiplies every timeout, for slow machines (`PHASE_TIMEOUT_SCALE=2`).
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var("PHASE_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    timeout.mul_f64(scale)
}

impl Vm {
    /// Prints the QEMU command line and starts the VM.
    pub fn start(spec: &VmSpec) -> Result<Vm> {
        let dir = tempfile::Builder::new().prefix("phase-vm-").tempdir()?;
        let socket = dir.path().join("events.sock");
        let listener =
            UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        let mut command = spec.command(&socket, dir.path())?;
        eprintln!("[{}] $ {}", spec.name, cmd::display(&command));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", spec.arch.qemu_binary()))?;
        let (tx, rx) = channel();
        let stdout = child.stdout.take().context("QEMU stdout")?;
        let stderr = child.stderr.take().context("QEMU stderr")?;
        spawn_console_reader(spec.name.clone(), stdout, tx.clone(), true);
        spawn_console_reader(format!("{}:qemu", spec.name), stderr, tx.clone(), false);
        if spec.event_port {
            spawn_event_reader(listener, tx);
        }
        Ok(Vm {
            name: spec.name.clone(),
            child,
            rx,
            console: Vec::new(),
            console_at: Vec::new(),
            events: Vec::new(),
            cursor: 0,
            exited: None,
            console_closed: false,
            started: Instant::now(),
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// The whole console output so far.
    pub fn console(&self) -> &[String] {
        &self.console
    }

    pub fn console_contains(&self, needle: &str) -> bool {
        self.console.iter().any(|l| l.contains(needle))
    }

    /// The first console line at index `from` or later that contains
    /// `needle`: its index and when it arrived (since QEMU started). For
    /// measuring wall time between things only the console shows, such as a
    /// second kernel's first line after a kexec.
    pub fn console_find(&self, from: usize, needle: &str) -> Option<(usize, Duration)> {
        self.console
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| (i, self.console_at[i]))
    }

    /// How many console lines contain `needle`.
    pub fn console_count(&self, needle: &str) -> usize {
        self.console.iter().filter(|l| l.contains(needle)).count()
    }

    fn push_console(&mut self, line: String, at: Instant) {
        self.console.push(line);
        self.console_at
            .push(at.saturating_duration_since(self.started));
    }

    /// Waits for the next event of `kind` (events before it are passed over
    /// but kept in [`Vm::events`]).
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Result<Value> {
        self.wait_event_where(&format!("event {kind:?}"), timeout, |e| e["event"] == kind)
    }

    /// Waits for the next event that satisfies `pred`.
    pub fn wait_event_where(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(offset) = self.events[self.cursor..].iter().position(&pred) {
                let index = self.cursor + offset;
                self.cursor = index + 1;
                return Ok(self.events[index].clone());
            }
            if self.console_closed {
                let status = self.reap()?;
                return Err(self.failure(&format!("QEMU exited ({status}) before {what}")));
            }
            self.pump(deadline, what)?;
        }
    }

    /// Waits for a console line containing `needle` (for what only the
    /// kernel says, such as "reboot: System halted").
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_console_from(0, needle, timeout)
    }

    /// Like [`Vm::wait_console`], looking only at lines from index `from` on
    /// (for what a second kernel prints after a kexec).
    pub fn wait_console_from(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + scaled(timeout);
        let what = format!("console line {needle:?}");
        let mut seen = from.min(self.console.len());
        loop {
            if self.console[seen..].iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            seen = self.console.len();
            if self.console_closed {
                let status = self.reap()?;
                return Err(self.failure(&format!("QEMU exited ({status}) before {what}")));
            }
            self.pump(deadline, &what)?;
        }
    }

    /// Waits for QEMU to exit (after a power-off or, with `-no-reboot`, a
    /// reboot) and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + scaled(timeout);
        while !self.console_closed {
            self.pump(deadline, "QEMU to exit")?;
        }
        self.reap()
    }

    /// Receives one message, or fails at the deadline.
    fn pump(&mut self, deadline: Instant, what: &str) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Msg::Console(line, at)) => {
                let panicked = line.contains("Kernel panic - not syncing");
                self.push_console(line, at);
                if panicked {
                    // Let the panic's own lines arrive before reporting.
                    let settle = Instant::now() + Duration::from_millis(500);
                    while let Ok(Msg::Console(more, at)) = self
                        .rx
                        .recv_timeout(settle.saturating_duration_since(Instant::now()))
                    {
                        self.push_console(more, at);
                    }
                    return Err(self.failure(&format!(
                        "the guest kernel panicked while waiting for {what}"
                    )));
                }
            }
            Ok(Msg::Event(event)) => self.events.push(event),
            Ok(Msg::ConsoleClosed) => self.console_closed = true,
            Err(RecvTimeoutError::Timeout) => {
                return Err(self.failure(&format!(
                    "timed out after {:.0} s waiting for {what}",
                    self.started.elapsed().as_secs_f64()
                )));
            }
            Err(RecvTimeoutError::Disconnected) => self.console_closed = true,
        }
        Ok(())
    }

    fn reap(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait().context("waiting for QEMU")?;
        // Drain what the readers still hold.
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Console(line, at) => self.push_console(line, at),
                Msg::Event(event) => self.events.push(event),
                Msg::ConsoleClosed => {}
            }
        }
        self.exited = Some(status);
        Ok(status)
    }

    /// An error naming the VM, with the last console lines and the events.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let tail: VecDeque<&String> = self.console.iter().rev().take(TAIL_LINES).rev().collect();
        let events: Vec<String> = self.events.iter().map(Value::to_string).collect();
        anyhow!(
            "[{}] {what}\n--- last {} console lines ---\n{}\n--- events ---\n{}",
            self.name,
            tail.len(),
            tail.into_iter().cloned().collect::<Vec<_>>().join("\n"),
            events.join("\n")
        )
    }

    /// Kills QEMU (for VMs that halt rather than power off).
    pub fn kill(&mut self) -> Result<()> {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.reap()?;
        }
        Ok(())
    }

    /// Checks that the VM ended with QEMU exiting cleanly.
    pub fn expect_clean_exit(&mut self, timeout: Duration) -> Result<()> {
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            bail!(self.failure(&format!("QEMU exited with {status}")));
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_console_reader(
    name: String,
    stream: impl Read + Send + 'static,
    tx: Sender<Msg>,
    signal_close: bool,
) {
    std::thread::spawn(move || {
        let echo = std::env::var_os("PHASE_QUIET").is_none();
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
            if echo {
                eprintln!("{name}| {line}");
            }
            if let Some(at) = line.find(CONSOLE_EVENT_PREFIX)
                && let Ok(event) =
                    serde_json::from_str::<Value>(&line[at + CONSOLE_EVENT_PREFIX.len()..])
            {
                let _ = tx.send(Msg::Event(event));
            }
            if tx.send(Msg::Console(line, Instant::now())).is_err() {
                return;
            }
        }
        if signal_close {
            let _ = tx.send(Msg::ConsoleClosed);
        }
    });
}

fn spawn_event_reader(listener: UnixListener, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Value>(&line) {
                Ok(event) => {
                    if tx.send(Msg::Event(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Msg::Console(
                        format!("harness: unparsable event line {line:?}: {e}"),
                        Instant::now(),
                    ));
                }
            }
        }
    });
}
