//! Network namespaces for tests: a namespace of its own, commands run in
//! it (`ip netns exec`), sockets bound in it, and the daemons tests put
//! there — avahi-daemon on a private D-Bus, dnsmasq. The `phase announce`
//! tests, the init's discovery test and the QEMU discovery scenarios all
//! build their LANs from these, and remove them when dropped.
//!
//! Needs root and iproute2 (`missing_netns` says so when they are absent).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Debian's dnsmasq binary.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// How long a daemon may take to say it is ready.
const READY: Duration = Duration::from_secs(30);

/// Whether this process runs as root (network namespaces need
/// CAP_NET_ADMIN).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

fn runs(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Why network namespaces cannot be made here, if they cannot.
pub fn missing_netns() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    (!runs("ip", "-V")).then(|| "ip (iproute2) is not installed".into())
}

/// Why avahi-daemon cannot run in a namespace here, if it cannot.
pub fn missing_avahi() -> Option<String> {
    for (tool, arg) in [
        ("avahi-daemon", "--version"),
        ("avahi-browse", "--version"),
        ("dbus-daemon", "--version"),
        ("unshare", "--version"),
    ] {
        if !runs(tool, arg) {
            return Some(format!(
                "{tool} is not installed (apt-get install avahi-daemon avahi-utils dbus-daemon util-linux)"
            ));
        }
    }
    None
}

/// Why dnsmasq cannot run here, if it cannot.
pub fn missing_dnsmasq() -> Option<String> {
    (!Path::new(DNSMASQ).exists())
        .then(|| format!("{DNSMASQ} is not installed (apt-get install dnsmasq-base)"))
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) -> Result<()> {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| format!("{args:?}"))?;
    if !status.success() {
        bail!("{args:?}: {status}");
    }
    Ok(())
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other test of this machine uses at the same time: `prefix`,
/// the pid and a counter, at most 15 characters when `prefix` has 4 or
/// fewer (IFNAMSIZ, for names that become interfaces).
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace with its loopback up; deleted on drop, with every
/// interface in it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let ns = Netns {
            name: format!("phase-{}", unique(prefix)),
        };
        run(&["ip", "netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// `ip netns exec NAME PROGRAM ARGS…`; ip executes the program, so the
    /// child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        c
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it
    /// opens belong to the namespace wherever they are used later (a
    /// listener handed to a server in another namespace still listens
    /// here).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let thread = std::thread::spawn(move || -> std::io::Result<T> {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        });
        match thread.join() {
            Ok(result) => result.with_context(|| format!("setns into {}", self.name)),
            Err(_) => bail!("the thread in {} panicked", self.name),
        }
    }

    /// Like [`Netns::enter`] for work that goes on (a responder): `f` runs
    /// on its own thread in the namespace, which is not waited for.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let moved = rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            );
            let ok = moved.is_ok();
            let _ = tx.send(moved);
            if ok {
                f();
            }
        });
        rx.recv()
            .context("the thread ended")?
            .with_context(|| format!("setns into {}", self.name))
    }

    /// A TCP listener on `address` in this namespace.
    pub fn listen(&self, address: std::net::SocketAddr) -> Result<std::net::TcpListener> {
        self.enter(move || std::net::TcpListener::bind(address))?
            .with_context(|| format!("binding {address} in {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child whose output lines arrive on channels; killed on drop.
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Echo each line to stderr with this prefix.
    name: String,
}

fn lines(pipe: impl Read + Send + 'static, echo: Option<String>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(prefix) = &echo {
                eprintln!("{prefix}| {line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `command` with piped output.
    pub fn start(command: Command) -> Result<Running> {
        Running::start_named(command, "", false)
    }

    /// Like [`Running::start`], echoing every line prefixed with `name`
    /// when `echo` (and `PHASE_QUIET` is unset), for scenarios whose
    /// failures should show what the daemons said.
    pub fn start_named(mut command: Command, name: &str, echo: bool) -> Result<Running> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let echo = (echo && std::env::var_os("PHASE_QUIET").is_none()).then(|| name.to_owned());
        let stdout = lines(child.stdout.take().context("stdout")?, echo.clone());
        let stderr = lines(child.stderr.take().context("stderr")?, echo);
        Ok(Running {
            child,
            stdout,
            stderr,
            name: name.into(),
        })
    }

    /// The first line on stdout (or stderr) that contains `needle`; fails,
    /// with what the child said on both, if none comes within `timeout`.
    pub fn wait_for(&mut self, stdout: bool, needle: &str, timeout: Duration) -> Result<String> {
        let rx = if stdout { &self.stdout } else { &self.stderr };
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => {
                    let other: Vec<String> = if stdout {
                        self.stderr.try_iter().collect()
                    } else {
                        self.stdout.try_iter().collect()
                    };
                    bail!(
                        "{}: no line with {needle:?} within {timeout:?}; it said:\n{}\n{}",
                        self.name,
                        seen.join("\n"),
                        other.join("\n")
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(&self.child)
    }

    /// Waits for the exit; returns success and all remaining stdout (to
    /// the end of the pipe, so nothing the child wrote is missed).
    pub fn finish(mut self) -> Result<(bool, String)> {
        let status = self.child.wait()?;
        let out: Vec<String> = self.stdout.iter().collect();
        Ok((status.success(), out.join("\n")))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private system bus and avahi-daemon in a namespace, in a mount
/// namespace of their own with a fresh /run (avahi keeps its pid file and
/// socket there). With `service`, that service file is the only one in
/// /etc/avahi/services and avahi publishes it as host `phase-avahi`;
/// without, it only browses.
pub struct Avahi {
    _dir: tempfile::TempDir,
    pub bus_address: String,
    _dbus: Running,
    _daemon: Running,
}

impl Avahi {
    pub fn start(ns: &Netns, interface: &str, service: Option<&str>) -> Result<Avahi> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("bus");
        let bus_conf = dir.path().join("bus.conf");
        std::fs::write(
            &bus_conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )?;
        // Publishing: only the service file's records and the host's own
        // address record, under a host name of our choosing.
        let publish = match service {
            Some(_) => "[publish]\npublish-workstation=no\n",
            None => "[publish]\ndisable-publishing=yes\n",
        };
        let avahi_conf = dir.path().join("avahi.conf");
        std::fs::write(
            &avahi_conf,
            format!(
                "[server]\nhost-name=phase-avahi\nuse-ipv4=yes\nuse-ipv6=no\n\
                 allow-interfaces={interface}\nenable-dbus=yes\n\
                 [wide-area]\nenable-wide-area=no\n{publish}"
            ),
        )?;
        let services = dir.path().join("services");
        std::fs::create_dir(&services)?;
        if let Some(xml) = service {
            std::fs::write(services.join("phase-boot.service"), xml)?;
        }
        let mut dbus = Running::start(ns.command(
            "dbus-daemon",
            &[
                "--nofork",
                "--print-address",
                &format!("--config-file={}", bus_conf.display()),
            ],
        ))?;
        // The address is printed once the bus listens.
        dbus.wait_for(true, "unix:path=", READY)?;
        let bus_address = format!("unix:path={}", socket.display());
        let script = format!(
            "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && \
             mount --bind {} /etc/avahi/services && exec avahi-daemon -f {} \
             --no-drop-root --no-chroot --no-rlimits --no-proc-title",
            services.display(),
            avahi_conf.display()
        );
        let mut command = ns.command(
            "unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        );
        command.env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address);
        let mut daemon = Running::start_named(command, "avahi", true)?;
        daemon.wait_for(false, "Server startup complete", READY)?;
        Ok(Avahi {
            _dir: dir,
            bus_address,
            _dbus: dbus,
            _daemon: daemon,
        })
    }
}

/// dnsmasq as a DHCP server only (no DNS) on one interface of a namespace;
/// stopped on drop.
pub struct Dnsmasq {
    running: Running,
}

impl Dnsmasq {
    /// Serves `range` (`FIRST,LAST,MASK,LEASE`) on `interface` with the
    /// `extra` options, once it says its DHCP socket is bound. Its leases
    /// file lives in `dir`.
    pub fn start(
        ns: &Netns,
        interface: &str,
        range: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Dnsmasq> {
        let mut args = vec![
            "--no-daemon".to_owned(),
            "--conf-file=/dev/null".into(),
            "--log-facility=-".into(),
            "--log-dhcp".into(),
            "--port=0".into(),
            "--bind-interfaces".into(),
            "--dhcp-authoritative".into(),
            // Answer at once instead of pinging the address first.
            "--no-ping".into(),
            format!("--dhcp-range={range}"),
            format!("--interface={interface}"),
            format!("--dhcp-leasefile={}", dir.join("leases").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut running = Running::start_named(ns.command(DNSMASQ, &args), "dnsmasq", true)?;
        // dnsmasq logs its DHCP range once the socket is ready.
        running.wait_for(false, "DHCP, IP range", READY)?;
        Ok(Dnsmasq { running })
    }

    pub fn pid(&self) -> rustix::process::Pid {
        self.running.pid()
    }
}
