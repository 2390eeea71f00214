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
    /// The same firmware with Secure Boot enforced, trusting `keys`
    /// (x86_64: the SMM build, as Secure Boot needs protected variables).
    SecureBoot(SecureBootKeys),
}

/// Which keys a Secure Boot variable store holds (Debian's ovmf and
/// qemu-efi-aarch64 ship both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureBootKeys {
    /// The public "snakeoil" test key (`/usr/share/ovmf/PkKek-1-snakeoil.*`)
    /// as PK, KEK and db.
    Snakeoil,
    /// Microsoft's KEK and db certificates, as stock PCs have.
    Microsoft,
}

impl Firmware {
    /// The (code, variable store template) flash images, if UEFI.
    pub fn flash(self, arch: Arch) -> Option<(&'static str, &'static str)> {
        use SecureBootKeys::{Microsoft, Snakeoil};
        Some(match (self, arch) {
            (Firmware::Default, _) => return None,
            (Firmware::Uefi, Arch::X86_64) => (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            ),
            (Firmware::Uefi, Arch::Aarch64) => (
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            ),
            (Firmware::SecureBoot(Snakeoil), Arch::X86_64) => (
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd",
            ),
            (Firmware::SecureBoot(Microsoft), Arch::X86_64) => (
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            ),
            (Firmware::SecureBoot(Snakeoil), Arch::Aarch64) => (
                "/usr/share/AAVMF/AAVMF_CODE.snakeoil.fd",
                "/usr/share/AAVMF/AAVMF_VARS.snakeoil.fd",
            ),
            (Firmware::SecureBoot(Microsoft), Arch::Aarch64) => (
                "/usr/share/AAVMF/AAVMF_CODE.ms.fd",
                "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
            ),
        })
    }
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
    /// A UEFI variable store that outlives the VM: made from the
    /// firmware's template the first time, then booted as it is, so
    /// variables a guest wrote are there at its next boot (delete the file
    /// to reset them). `None`: a fresh copy per VM, discarded with it.
    pub efi_vars: Option<PathBuf>,
    pub drives: Vec<Drive>,
    /// A virtio NIC on QEMU user networking (DHCP gives 10.0.2.15, the host's
    /// loopback is 10.0.2.2).
    pub user_net: bool,
    /// Attach the `phase.events` virtio-serial port.
    pub event_port: bool,
    /// `-rtc base=…`, to start the guest clock elsewhere.
    pub rtc_base: Option<String>,
    /// A virtio NIC on a tap device of a test's network namespace; QEMU
    /// then runs inside that namespace (`ip netns exec`), where the tap is.
    pub tap: Option<Tap>,
    pub extra_args: Vec<String>,
}

/// A tap device in a network namespace, for [`VmSpec::tap`].
#[derive(Debug, Clone)]
pub struct Tap {
    pub netns: String,
    pub ifname: String,
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
            efi_vars: None,
            drives: Vec::new(),
            user_net: false,
            event_port: true,
            rtc_base: None,
            tap: None,
            extra_args: Vec::new(),
        }
    }

    /// A VM whose firmware boots `drive` (no `-kernel`): the path through
    /// a boot loader and its menu.
    pub fn firmware(name: impl Into<String>, arch: Arch, firmware: Firmware, drive: Drive) -> Self {
        VmSpec {
            name: name.into(),
            arch,
            memory_mb: 512,
            kernel: None,
            initrd: None,
            append: String::new(),
            firmware,
            efi_vars: None,
            drives: vec![drive],
            user_net: false,
            event_port: true,
            rtc_base: None,
            tap: None,
            extra_args: Vec::new(),
        }
    }

    /// The QEMU command line. `events` is the socket the harness listens on;
    /// `scratch` a directory for per-VM files (the UEFI variable store copy).
    pub fn command(&self, events: &Path, scratch: &Path) -> Result<Command> {
        let mut c = match &self.tap {
            // ip executes QEMU, so the child's pid is QEMU's.
            Some(tap) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &tap.netns, self.arch.qemu_binary()]);
                c
            }
            None => Command::new(self.arch.qemu_binary()),
        };
        c.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        // A `-cpu` in the extra arguments replaces the arch's default CPU
        // (a 16K-page kernel needs one with the 16K granule).
        let own_cpu = self.extra_args.iter().any(|a| a == "-cpu");
        let machine: &[&str] = match (self.firmware, self.arch) {
            // OVMF's Secure Boot build keeps its variables in SMM-protected
            // flash, and stops when the machine has no SMM.
            (Firmware::SecureBoot(_), Arch::X86_64) => {
                c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                &["-machine", "q35,smm=on"]
            }
            _ => self.arch.machine_args(),
        };
        let mut i = 0;
        while i < machine.len() {
            if own_cpu && machine[i] == "-cpu" {
                i += 2;
                continue;
            }
            c.arg(machine[i]);
            i += 1;
        }
        c.args(["-m", &self.memory_mb.to_string(), "-smp", "1"]);
        c.args([
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        if let Some((code, vars)) = self.firmware.flash(self.arch) {
            // Each VM gets its own writable copy of the variable store,
            // unless the spec keeps one across boots.
            let vars_copy = match &self.efi_vars {
                Some(kept) => kept.clone(),
                None => scratch.join("efivars.fd"),
            };
            if self.efi_vars.is_none() || !vars_copy.exists() {
                std::fs::copy(vars, &vars_copy).with_context(|| format!("copying {vars}"))?;
            }
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
            let append = format!("{} {}", self.arch.kernel_params(), self.append);
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
        if let Some(tap) = &self.tap {
            c.arg("-netdev").arg(format!(
                "tap,id=lan0,ifname={},script=no,downscript=no",
                tap.ifname
            ));
            c.args(["-device", "virtio-net-pci,netdev=lan0"]);
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
    /// QEMU closed the event socket: every event it carried has arrived.
    EventsClosed,
}

/// A running VM.
pub struct Vm {
    name: String,
    child: Child,
    /// Whether the VM has the event port (whose socket's end marks the last
    /// event).
    event_port: bool,
    /// Writes reach the guest's serial console as if typed.
    console_in: Option<std::process::ChildStdin>,
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
        // The serial console's input: a pipe the harness types into.
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", spec.arch.qemu_binary()))?;
        let (tx, rx) = channel();
        let stdout = child.stdout.take().context("QEMU stdout")?;
        let stderr = child.stderr.take().context("QEMU stderr")?;
        let console_in = child.stdin.take();
        spawn_console_reader(spec.name.clone(), stdout, tx.clone(), true);
        spawn_console_reader(format!("{}:qemu", spec.name), stderr, tx.clone(), false);
        if spec.event_port {
            spawn_event_reader(listener, tx);
        }
        Ok(Vm {
            name: spec.name.clone(),
            child,
            event_port: spec.event_port,
            console_in,
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
                // The reap drained the last events: one may be it.
                if let Some(offset) = self.events[self.cursor..].iter().position(&pred) {
                    let index = self.cursor + offset;
                    self.cursor = index + 1;
                    return Ok(self.events[index].clone());
                }
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
            Ok(Msg::EventsClosed) => {}
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
        // Drain what the readers still hold. The event socket may still be
        // delivering what the guest sent just before it stopped (a power
        // event, then the power-off): wait for its end, briefly.
        let settle = Instant::now() + Duration::from_secs(2);
        let mut events_done = !self.event_port;
        loop {
            let msg = if events_done {
                match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                match self
                    .rx
                    .recv_timeout(settle.saturating_duration_since(Instant::now()))
                {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            match msg {
                Msg::Console(line, at) => self.push_console(line, at),
                Msg::Event(event) => self.events.push(event),
                Msg::ConsoleClosed => {}
                Msg::EventsClosed => events_done = true,
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

    /// Types `text` on the guest's serial console (a line needs its `\n`).
    /// For the console's readers — a rescue shell, a passphrase prompt —
    /// after the harness has seen them ask.
    pub fn type_console(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        let name = self.name.clone();
        let input = self
            .console_in
            .as_mut()
            .with_context(|| format!("[{name}] the console input is closed"))?;
        // QEMU reads the pipe only as fast as the guest's UART takes bytes,
        // so a long line waits in the pipe rather than being dropped.
        input
            .write_all(text.as_bytes())
            .and_then(|()| input.flush())
            .with_context(|| format!("[{name}] typing on the console"))?;
        Ok(())
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
        let mut lines = ConsoleLines::default();
        let mut open = true;
        while open {
            let chunk = match reader.fill_buf() {
                Ok([]) | Err(_) => {
                    open = false;
                    b"\n".to_vec()
                }
                Ok(chunk) => chunk.to_vec(),
            };
            if open {
                reader.consume(chunk.len());
            }
            for raw in lines.push(&chunk) {
                if !open && raw.is_empty() {
                    continue;
                }
                let line = String::from_utf8_lossy(&raw).replace('\r', "");
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
        }
        if signal_close {
            let _ = tx.send(Msg::ConsoleClosed);
        }
    });
}

/// Splits a serial console into lines: at each newline, and where a
/// firmware's text UI moves the cursor to a row (`ESC [ row ; col H`), since
/// such a screen (shim's error box, a setup menu) may never send a newline.
#[derive(Default)]
struct ConsoleLines {
    line: Vec<u8>,
    /// The bytes of an escape sequence being read, from its ESC.
    escape: Vec<u8>,
}

impl ConsoleLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if !self.escape.is_empty() {
                self.escape.push(b);
                let csi = self.escape.get(1) == Some(&b'[');
                if self.escape.len() == 2 && !csi {
                    self.line.append(&mut self.escape);
                } else if self.escape.len() > 2 && !(b.is_ascii_digit() || b == b';') {
                    if b == b'H' && !self.line.is_empty() {
                        out.push(std::mem::take(&mut self.line));
                    }
                    self.line.append(&mut self.escape);
                }
                continue;
            }
            match b {
                b'\n' => out.push(std::mem::take(&mut self.line)),
                0x1b => self.escape.push(b),
                _ => self.line.push(b),
            }
        }
        out
    }
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
        let _ = tx.send(Msg::EventsClosed);
    });
}

#[cfg(test)]
mod tests {
    use super::ConsoleLines;

    #[test]
    fn console_lines_split_at_newlines_and_cursor_rows() {
        let mut l = ConsoleLines::default();
        assert_eq!(l.push(b"boot"), Vec::<Vec<u8>>::new());
        assert_eq!(l.push(b"ing\r\nnext"), vec![b"booting\r".to_vec()]);
        // shim's box: rows placed by the cursor, no newline.
        let out = l.push(b"\x1b[02;01H| Verification failed |\x1b[03;01H+--+\x1b[1m");
        assert_eq!(
            out,
            vec![
                b"next".to_vec(),
                b"\x1b[02;01H| Verification failed |".to_vec()
            ]
        );
        assert_eq!(l.push(b"\n"), vec![b"\x1b[03;01H+--+\x1b[1m".to_vec()]);
        // Other escapes stay in the line, split across reads too.
        assert_eq!(l.push(b"a\x1b["), Vec::<Vec<u8>>::new());
        assert_eq!(l.push(b"0mb\n"), vec![b"a\x1b[0mb".to_vec()]);
    }
}
