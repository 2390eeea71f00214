//! The typed boot plan, built from the kernel command line (and the image's
//! default parameters in `/etc/phase/config`).
//!
//! Our own keys live under `phase.`; where dracut already has a name for a
//! thing, dracut's spelling is accepted too. An unknown `phase.*` or `rd.*`
//! key is a warning that names it; a malformed value is an error that names
//! the key and the value. Keys that belong to the kernel (`console=`, `quiet`,
//! …) are left alone.
//!
//! Trust never comes from here: keys and floors are baked into the image, and
//! there is deliberately no key that switches verification off.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::cmdline::Param;

/// The stages of the boot pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Early,
    Plan,
    Modules,
    Network,
    /// Finding providers on the LAN (`phase.mode=local`, and after the
    /// named ones fail in `internet` mode).
    Discover,
    Fetch,
    Verify,
    Handoff,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Early,
        Stage::Plan,
        Stage::Modules,
        Stage::Network,
        Stage::Discover,
        Stage::Fetch,
        Stage::Verify,
        Stage::Handoff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Early => "early",
            Stage::Plan => "plan",
            Stage::Modules => "modules",
            Stage::Network => "network",
            Stage::Discover => "discover",
            Stage::Fetch => "fetch",
            Stage::Verify => "verify",
            Stage::Handoff => "handoff",
        }
    }

    /// Parses a stage name for `rd.break=`; dracut's hook names map onto the
    /// nearest stage of ours.
    fn parse_break(value: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| s.name() == value)
            .or(match value {
                "cmdline" => Some(Stage::Modules),
                "pre-udev" | "pre-trigger" | "initqueue" => Some(Stage::Network),
                "pre-mount" | "mount" | "pre-pivot" | "cleanup" => Some(Stage::Handoff),
                _ => None,
            })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do when the boot fails (`phase.onfail=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum FailPolicy {
    /// Reboot after a visible countdown (`reboot` or `reboot:SECONDS`).
    Reboot { delay_s: u32 },
    /// Stop the CPUs and leave the machine on, with the report on screen.
    Halt,
    /// Power the machine off.
    Poweroff,
    /// Start the image's shell on the console (only if the image has one).
    Shell,
}

impl FailPolicy {
    pub const DEFAULT_REBOOT_DELAY_S: u32 = 10;
}

impl Default for FailPolicy {
    fn default() -> Self {
        FailPolicy::Reboot {
            delay_s: Self::DEFAULT_REBOOT_DELAY_S,
        }
    }
}

impl fmt::Display for FailPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailPolicy::Reboot { delay_s } => write!(f, "reboot:{delay_s}"),
            FailPolicy::Halt => f.write_str("halt"),
            FailPolicy::Poweroff => f.write_str("poweroff"),
            FailPolicy::Shell => f.write_str("shell"),
        }
    }
}

/// Where the provider is found (`phase.mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The providers named on the command line, reached over any route;
    /// when every one of them has failed once, those discovered on the
    /// LAN after them.
    #[default]
    Internet,
    /// Providers discovered on the local network (DNS-SD over mDNS, the
    /// DHCP boot URL), then any named ones.
    Local,
    /// Only the named providers; nothing is discovered.
    Private,
}

/// A provider base URL from `phase.provider=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderUrl {
    /// The URL as given, without a trailing `/`.
    pub url: String,
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl ProviderUrl {
    /// Accepts `http://host[:port][/path]` and `https://…`; IPv6 hosts in
    /// brackets. Query strings, fragments and user info are refused, since a
    /// provider is a static file tree.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("expected an http:// or https:// URL".into());
        };
        if rest.contains(['?', '#', '@'])
            || rest.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("a provider URL has no user, query, fragment or spaces".into());
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            if !after.is_empty() && !after.starts_with(':') {
                return Err(format!("{after:?} after the IPv6 address"));
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        // What the HTTP client takes as a host: a name or IPv4 address of
        // [A-Za-z0-9.-], or an IPv6 address in brackets. Anything else would
        // pass here and be refused by the fetch stage, after the network.
        let host_ok = if authority.starts_with('[') {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        };
        if !host_ok {
            return Err(format!("bad host {host:?}"));
        }
        let path = &rest[authority.len()..];
        if let Some(bad) = path.bytes().find(|&b| !is_path_byte(b)) {
            return Err(format!(
                "the path has {:?}, which a URL must percent-encode",
                char::from(bad)
            ));
        }
        if !percent_escapes_ok(path) {
            return Err("the path has a % not followed by two hex digits".into());
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(format!("bad port {p:?}")),
            },
        };
        Ok(ProviderUrl {
            url: text.trim_end_matches('/').to_owned(),
            https,
            host: host.to_owned(),
            port,
        })
    }
}

/// RFC 3986 `pchar` and `/`, less the `?`, `#` and `@` refused before.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
        )
}

/// Every `%` starts an escape of two hex digits.
fn percent_escapes_ok(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// A static IPv4 configuration (`ip=<client>::<gw>:<mask>:<host>:<iface>:none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub interface: Option<String>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
}

/// How the network is configured (`ip=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum IpConfig {
    /// DHCPv4, on the named interface or the first one with carrier.
    Dhcp {
        interface: Option<String>,
        mtu: Option<u16>,
        /// `ip=<client>:…:dhcp`: the address the machine had before. The client
        /// asks for it first (RFC 2131 INIT-REBOOT); a NAK falls back to a full
        /// DISCOVER.
        #[serde(skip_serializing_if = "Option::is_none")]
        requested: Option<Ipv4Addr>,
    },
    /// No network configuration.
    None,
    Static(StaticIp),
}

/// How long each step of bringing the network up may take, in dracut's
/// `rd.net.timeout.*` names. A failed attempt is retried as a whole until
/// `rd.retry` runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetTimeouts {
    /// `rd.net.timeout.iflink=SECONDS`: for the interface to appear (a driver
    /// may probe asynchronously).
    #[serde(serialize_with = "as_secs")]
    pub iflink: Duration,
    /// `rd.net.timeout.carrier=SECONDS`: for the link to report carrier.
    #[serde(serialize_with = "as_secs")]
    pub carrier: Duration,
    /// `rd.net.timeout.dhcp=SECONDS`: for one DHCP exchange, retransmissions
    /// included.
    #[serde(serialize_with = "as_secs")]
    pub dhcp: Duration,
}

impl Default for NetTimeouts {
    fn default() -> Self {
        // dracut's defaults for iflink and carrier; dhclient's 60 s for DHCP.
        NetTimeouts {
            iflink: Duration::from_secs(60),
            carrier: Duration::from_secs(10),
            dhcp: Duration::from_secs(60),
        }
    }
}

/// The root to switch to (`root=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum RootSpec {
    /// `zfs:pool/dataset` or dracut's `ZFS=pool/dataset`.
    Zfs(String),
    /// `zfs:AUTO`: the pool's `bootfs` property names the dataset.
    ZfsAuto,
    Label(String),
    Uuid(String),
    PartUuid(String),
    PartLabel(String),
    /// A device path such as `/dev/vda2`.
    Device(String),
    /// dracut's `live:<device>` (`live:CDLABEL=…`, `live:LABEL=…`,
    /// `live:UUID=…`, `live:/dev/sr0`): a medium whose file system holds the
    /// root image (`rd.live.dir`/`rd.live.squashimg`), which is mounted
    /// read-only under an overlay.
    Live(Box<RootSpec>),
}

impl RootSpec {
    fn parse(value: &str) -> Result<Self, String> {
        if let Some(medium) = value.strip_prefix("live:") {
            // dracut's CDLABEL= is the ISO 9660 volume id, which the probes
            // report as the label.
            let medium = match medium.strip_prefix("CDLABEL=") {
                Some(label) => format!("LABEL={label}"),
                None => medium.to_owned(),
            };
            return match RootSpec::parse(&medium)? {
                m @ (RootSpec::Label(_)
                | RootSpec::Uuid(_)
                | RootSpec::PartUuid(_)
                | RootSpec::PartLabel(_)
                | RootSpec::Device(_)) => Ok(RootSpec::Live(Box::new(m))),
                _ => Err(
                    "live: takes CDLABEL=, LABEL=, UUID=, PARTUUID=, PARTLABEL= or /dev/…".into(),
                ),
            };
        }
        let nonempty = |kind: &str, v: &str| {
            if v.is_empty() {
                Err(format!("{kind} needs a value"))
            } else {
                Ok(v.to_owned())
            }
        };
        if let Some(ds) = value
            .strip_prefix("zfs:")
            .or_else(|| value.strip_prefix("ZFS="))
        {
            if ds == "AUTO" {
                return Ok(RootSpec::ZfsAuto);
            }
            if ds.is_empty() || ds.starts_with('/') || ds.ends_with('/') || ds.contains("//") {
                return Err("expected zfs:<pool>/<dataset> or zfs:AUTO".into());
            }
            // ZFS's own name rules (zfs_namecheck.c): at most 255 bytes of
            // letters, digits, '_', '-', '.', ':' and '/'.
            if ds.len() > 255
                || !ds.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/')
                })
            {
                return Err(
                    "a ZFS dataset name is at most 255 letters, digits, '_', '-', '.', ':' and '/'"
                        .into(),
                );
            }
            return Ok(RootSpec::Zfs(ds.to_owned()));
        }
        if let Some(v) = value.strip_prefix("LABEL=") {
            return nonempty("LABEL=", v).map(RootSpec::Label);
        }
        if let Some(v) = value.strip_prefix("UUID=") {
            return nonempty("UUID=", v).map(RootSpec::Uuid);
        }
        if let Some(v) = value.strip_prefix("PARTUUID=") {
            return nonempty("PARTUUID=", v).map(RootSpec::PartUuid);
        }
        if let Some(v) = value.strip_prefix("PARTLABEL=") {
            return nonempty("PARTLABEL=", v).map(RootSpec::PartLabel);
        }
        if value.starts_with("/dev/") && value.len() > "/dev/".len() {
            return Ok(RootSpec::Device(value.to_owned()));
        }
        Err("expected zfs:<pool>/<dataset>, zfs:AUTO, LABEL=, UUID=, PARTUUID=, PARTLABEL= or /dev/…".into())
    }
}

/// Everything the init will do, decided before it does any of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootPlan {
    /// `phase.provider=URL[,URL…]`: mirrors, tried in order.
    pub providers: Vec<ProviderUrl>,
    /// `phase.channel=` (default `stable`).
    pub channel: String,
    /// `phase.mode=`.
    pub mode: Mode,
    /// `phase.discover.timeout=SECONDS`: how long one round of discovery
    /// listens for providers on the LAN.
    #[serde(serialize_with = "as_secs")]
    pub discover_timeout: Duration,
    /// `phase.onfail=`.
    pub onfail: FailPolicy,
    /// `phase.timeout=SECONDS`: budget for the whole boot.
    #[serde(serialize_with = "as_secs")]
    pub timeout: Duration,
    /// `phase.watchdog=SECONDS`: how long the hardware watchdog waits for a
    /// sign of progress; `None` (the default) is `phase.timeout` plus a
    /// margin, 0 leaves the device alone.
    #[serde(serialize_with = "as_opt_secs")]
    pub watchdog: Option<Duration>,
    /// `ip=`.
    pub ip: IpConfig,
    /// `rd.neednet=1`: bring the network up even without a provider.
    pub need_net: bool,
    /// `rd.net.timeout.*`.
    pub net_timeout: NetTimeouts,
    /// `rd.shell`: start the image's shell when the boot fails.
    pub shell: bool,
    /// `rd.break[=stage]`: stop before a stage with a shell.
    pub break_before: Option<Stage>,
    /// `rd.overlay[=tmpfs:size=N]`: mount the root read-only under a tmpfs
    /// overlay (of tmpfs's default size, half of RAM, or N).
    pub overlay: Option<Overlay>,
    /// `rd.live.dir=` and `rd.live.squashimg=`: where a live medium
    /// (`root=live:…`) keeps its root image.
    pub live_image: String,
    /// What follows `--` on the command line: arguments for the init that
    /// is switched to.
    pub init_args: Vec<String>,
    /// `root=`.
    pub root: Option<RootSpec>,
    /// `rootfstype=`.
    pub rootfstype: Option<String>,
    /// `rootflags=`.
    pub rootflags: Option<String>,
    /// The kernel's `rw` (and `ro`, the default): whether `root=` is
    /// mounted read-write. The last of the two wins, as in the kernel.
    pub read_write: bool,
    /// `init=`: the program to execute in the new root.
    pub init: Option<String>,
    /// `rd.retry=SECONDS`: how long a failing network or fetch step is retried.
    #[serde(serialize_with = "as_secs")]
    pub retry: Duration,
    /// `rd.timeout=SECONDS`: how long to wait for the root device (0 = until
    /// `phase.timeout`).
    #[serde(serialize_with = "as_secs")]
    pub device_timeout: Duration,
    /// `BOOTIF=01-aa-bb-cc-dd-ee-ff`: the PXE boot interface's MAC address.
    pub bootif: Option<[u8; 6]>,
    /// `rd.driver.pre=`: modules to load before anything else.
    pub drivers: Vec<String>,
    /// `rd.driver.blacklist=` / `module_blacklist=`: modules never loaded.
    pub blacklist: Vec<String>,
    /// `phase.report`: instead of handing off, report the boot and power off.
    pub report: bool,
    /// The kernel's `quiet`.
    pub quiet: bool,
    /// `phase.test.panic=[thread:]STAGE` (test builds only): panic at the
    /// start of a stage, on the main thread or on a helper thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_panic: Option<Stage>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_panic_thread: bool,
    /// `phase.test.kexec=DIR` (test builds only): hand off to `DIR/kernel`
    /// (+ `DIR/initrd`, `DIR/dtb`) with the command line in `DIR/cmdline`,
    /// files packed into the image, instead of fetching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_kexec: Option<String>,
    /// `phase.test.bench=dhcp:ROUNDS` (test builds only): after the network
    /// stage, time ROUNDS DHCP exchanges of the init's client and of busybox
    /// udhcpc, alternating, then power off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_bench_dhcp: Option<u32>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn as_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

impl Default for BootPlan {
    fn default() -> Self {
        BootPlan {
            providers: Vec::new(),
            channel: "stable".into(),
            mode: Mode::Internet,
            discover_timeout: DEFAULT_DISCOVER_TIMEOUT,
            onfail: FailPolicy::default(),
            timeout: Duration::from_secs(300),
            watchdog: None,
            ip: IpConfig::Dhcp {
                interface: None,
                mtu: None,
                requested: None,
            },
            need_net: false,
            net_timeout: NetTimeouts::default(),
            shell: false,
            break_before: None,
            overlay: None,
            live_image: DEFAULT_LIVE_IMAGE.into(),
            init_args: Vec::new(),
            root: None,
            rootfstype: None,
            rootflags: None,
            read_write: false,
            init: None,
            retry: Duration::from_secs(180),
            device_timeout: Duration::ZERO,
            bootif: None,
            drivers: Vec::new(),
            blacklist: Vec::new(),
            report: false,
            quiet: false,
            test_panic: None,
            test_panic_thread: false,
            test_kexec: None,
            test_bench_dhcp: None,
        }
    }
}

/// A malformed value: the key, the value as given, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key}={value}: {reason}")]
pub struct PlanError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// Something the plan ignored, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of reading the parameters: the plan (with every valid key
/// applied, even when others were malformed, so the failure policy the user
/// asked for is honoured), warnings, and errors.
#[derive(Debug, Default)]
pub struct Parsed {
    pub plan: BootPlan,
    pub warnings: Vec<Warning>,
    pub errors: Vec<PlanError>,
}

/// Every key this module understands; used for "did you mean" hints.
const PHASE_KEYS: &[&str] = &[
    "phase.provider",
    "phase.channel",
    "phase.mode",
    "phase.discover.timeout",
    "phase.onfail",
    "phase.timeout",
    "phase.watchdog",
    "phase.report",
    "phase.test.panic",
    "phase.test.kexec",
    "phase.test.bench",
];
const RD_KEYS: &[&str] = &[
    "rd.neednet",
    "rd.shell",
    "rd.break",
    "rd.overlay",
    "rd.live.dir",
    "rd.live.squashimg",
    "rd.retry",
    "rd.net.timeout.iflink",
    "rd.net.timeout.carrier",
    "rd.net.timeout.dhcp",
    "rd.timeout",
    "rd.driver.pre",
    "rd.driver.blacklist",
];

/// The default `phase.discover.timeout`: three mDNS queries (RFC 6762
/// §5.2 sends them 1 s and 2 s apart), so a lost packet or a responder
/// that is slow to answer still counts, while a LAN without providers
/// costs the boot little. A round ends sooner once one answered.
pub const DEFAULT_DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where dracut's live media keep the root image (`rd.live.dir` /
/// `rd.live.squashimg`), relative to the medium's root.
pub const DEFAULT_LIVE_IMAGE: &str = "LiveOS/squashfs.img";

/// The overlay asked for with `rd.overlay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    /// tmpfs `size=` of the upper (`512m`, `25%`), or tmpfs's default.
    pub size: Option<String>,
}

/// `rd.overlay`, `rd.overlay=1|0`, or `rd.overlay=tmpfs:size=N`.
fn parse_overlay(value: Option<&str>) -> Result<Option<Overlay>, String> {
    if let Some(size) = value.and_then(|v| v.strip_prefix("tmpfs:size=")) {
        let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || size.len() - digits.len() > 1
        {
            return Err("expected tmpfs:size=N with N a number, optionally k, m, g or %".into());
        }
        return Ok(Some(Overlay {
            size: Some(size.to_owned()),
        }));
    }
    Ok(boolean(value)?.then_some(Overlay { size: None }))
}

/// A relative path on a live medium: segments of letters, digits, `.`, `_`
/// and `-`, no `..`.
fn image_path(value: Option<&str>) -> Result<String, String> {
    let v = required(value)?.trim_matches('/');
    let ok = !v.is_empty()
        && v.split('/').all(|seg| {
            !seg.is_empty()
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err("expected a relative path of letters, digits, '.', '_' and '-'".into())
    }
}

/// Builds the plan from parameters in order; a later parameter overrides an
/// earlier one, as with the kernel's own parameters. Pass the image defaults
/// first and the real command line after them. Everything after a bare
/// `--` is for the init that is switched to, as the kernel passes it.
pub fn parse(params: &[Param], test_hooks: bool) -> Parsed {
    let mut out = Parsed::default();
    let split = params
        .iter()
        .position(|p| p.name == "--" && p.value.is_none());
    let (params, init_args) = match split {
        Some(i) => (&params[..i], &params[i + 1..]),
        None => (params, &[][..]),
    };
    out.plan.init_args = init_args
        .iter()
        .map(|p| match &p.value {
            Some(v) => format!("{}={v}", p.name),
            None => p.name.clone(),
        })
        .collect();
    for param in params {
        if let Err(reason) = apply(&mut out, param, test_hooks) {
            out.errors.push(PlanError {
                key: param.name.clone(),
                value: param.value.clone().unwrap_or_default(),
                reason,
            });
        }
    }
    validate(&mut out);
    out
}

fn apply(out: &mut Parsed, param: &Param, test_hooks: bool) -> Result<(), String> {
    let plan = &mut out.plan;
    let value = param.value.as_deref();
    let name = param.name.as_str();
    match name {
        "phase.provider" => {
            let value = required(value)?;
            plan.providers = value
                .split(',')
                .map(|u| ProviderUrl::parse(u).map_err(|e| format!("{e} (in {u:?})")))
                .collect::<Result<_, _>>()?;
        }
        "phase.channel" => {
            let value = required(value)?;
            // The rule every manifest's channel follows, so a channel the
            // fetch stage could never match is refused here.
            if phase_manifest::schema::check_name("channel", value).is_err() {
                return Err(format!(
                    "a channel is 1–64 letters, digits, '-', '_' and '.', not starting with '.' (this is {} bytes)",
                    value.len()
                ));
            }
            plan.channel = value.to_owned();
        }
        "phase.mode" => {
            plan.mode = match required(value)? {
                "internet" => Mode::Internet,
                "local" => Mode::Local,
                "private" => Mode::Private,
                _ => return Err("expected internet, local or private".into()),
            }
        }
        "phase.discover.timeout" => plan.discover_timeout = seconds(value, 1)?,
        "phase.onfail" => plan.onfail = parse_policy(required(value)?)?,
        "phase.timeout" => plan.timeout = seconds(value, 1)?,
        "phase.watchdog" => plan.watchdog = Some(seconds(value, 0)?),
        "phase.report" => plan.report = boolean(value)?,
        "phase.test.panic" if test_hooks => {
            let value = required(value)?;
            let (thread, value) = match value.strip_prefix("thread:") {
                Some(stage) => (true, stage),
                None => (false, value),
            };
            plan.test_panic_thread = thread;
            plan.test_panic = Some(
                Stage::ALL
                    .into_iter()
                    .find(|s| s.name() == value)
                    .ok_or("expected a stage name")?,
            );
        }
        "phase.test.kexec" if test_hooks => {
            let value = required(value)?;
            if !value.starts_with('/') {
                return Err("expected an absolute path".into());
            }
            plan.test_kexec = Some(value.to_owned());
        }
        "phase.test.bench" if test_hooks => {
            let rounds = required(value)?
                .strip_prefix("dhcp:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=1000).contains(n))
                .ok_or("expected dhcp:ROUNDS with ROUNDS from 1 to 1000")?;
            plan.test_bench_dhcp = Some(rounds);
        }
        "phase.test.panic" | "phase.test.kexec" | "phase.test.bench" => out.warnings.push(Warning(
            format!("{name} is honoured only by test builds of the init (ignored)"),
        )),
        "ip" => plan.ip = parse_ip(required(value)?)?,
        "rd.neednet" => plan.need_net = boolean(value)?,
        "rd.shell" => plan.shell = boolean(value)?,
        "rd.break" => {
            plan.break_before = Some(match value {
                None | Some("") => Stage::Handoff,
                Some(v) => Stage::parse_break(v).ok_or("expected a stage name (early, plan, modules, network, discover, fetch, verify, handoff) or a dracut hook")?,
            })
        }
        "rd.overlay" => plan.overlay = parse_overlay(value)?,
        "rd.live.dir" => {
            let dir = image_path(value)?;
            let name = plan.live_image.rsplit('/').next().unwrap_or_default().to_owned();
            plan.live_image = format!("{dir}/{name}");
        }
        "rd.live.squashimg" => {
            let name = image_path(value)?;
            if name.contains('/') {
                return Err("a file name, not a path (rd.live.dir= names the directory)".into());
            }
            let dir = plan.live_image.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
            plan.live_image = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        }
        "rd.retry" => plan.retry = seconds(value, 0)?,
        "rd.net.timeout.iflink" => plan.net_timeout.iflink = seconds(value, 1)?,
        "rd.net.timeout.carrier" => plan.net_timeout.carrier = seconds(value, 1)?,
        "rd.net.timeout.dhcp" => plan.net_timeout.dhcp = seconds(value, 1)?,
        "rd.timeout" => plan.device_timeout = seconds(value, 0)?,
        "root" => plan.root = Some(RootSpec::parse(required(value)?)?),
        "rootfstype" => plan.rootfstype = Some(word(value)?),
        "rootflags" => plan.rootflags = Some(required(value)?.to_owned()),
        "init" => {
            let value = required(value)?;
            if !value.starts_with('/') {
                return Err("expected an absolute path".into());
            }
            plan.init = Some(value.to_owned());
        }
        "BOOTIF" => plan.bootif = Some(parse_bootif(required(value)?)?),
        "rd.driver.pre" => plan.drivers.extend(module_list(value)?),
        "rd.driver.blacklist" | "module_blacklist" => plan.blacklist.extend(module_list(value)?),
        "quiet" => plan.quiet = true,
        "rw" if value.is_none() => plan.read_write = true,
        "ro" if value.is_none() => plan.read_write = false,
        _ if name.starts_with("phase.") => out.warnings.push(Warning(format!(
            "unknown key {name} (ignored){}",
            hint(name, PHASE_KEYS)
        ))),
        _ if name.starts_with("rd.") => out.warnings.push(Warning(format!(
            "{name} is not supported by Phase Boot (ignored){}",
            hint(name, RD_KEYS)
        ))),
        // Everything else is the kernel's or another program's business.
        _ => {}
    }
    Ok(())
}

/// Cross-key checks, after every parameter is applied.
fn validate(out: &mut Parsed) {
    let plan = &out.plan;
    if plan.mode == Mode::Private && plan.providers.is_empty() {
        out.errors.push(PlanError {
            key: "phase.mode".into(),
            value: "private".into(),
            reason: "private mode needs phase.provider=".into(),
        });
    }
    if plan.providers.is_empty()
        && plan.root.is_none()
        && !plan.report
        && plan.mode != Mode::Local
        && plan.test_kexec.is_none()
    {
        out.warnings.push(Warning(
            "nothing to boot: give phase.provider= or root= (or phase.report)".into(),
        ));
    }
}

fn required(value: Option<&str>) -> Result<&str, String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err("a value is required".into()),
    }
}

fn word(value: Option<&str>) -> Result<String, String> {
    let v = required(value)?;
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Ok(v.to_owned())
    } else {
        Err("expected a single word".into())
    }
}

/// dracut's boolean spelling: a bare flag or `1`/`yes`/`true`/`on` is true,
/// `0`/`no`/`false`/`off` false; anything else is an error rather than a guess.
fn boolean(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off") => Ok(false),
        Some(_) => Err("expected 1 or 0 (or no value)".into()),
    }
}

fn seconds(value: Option<&str>, min: u64) -> Result<Duration, String> {
    let v = required(value)?;
    match v.parse::<u64>() {
        // A day is far beyond any boot; the cap keeps deadline arithmetic
        // far from overflow.
        Ok(s) if s >= min && s <= 86_400 => Ok(Duration::from_secs(s)),
        _ => Err(format!(
            "expected a whole number of seconds from {min} to 86400"
        )),
    }
}

fn parse_policy(value: &str) -> Result<FailPolicy, String> {
    let (action, arg) = match value.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (value, None),
    };
    let policy = match action {
        "reboot" => FailPolicy::Reboot {
            delay_s: match arg {
                None => FailPolicy::DEFAULT_REBOOT_DELAY_S,
                Some(s) => s
                    .parse::<u32>()
                    .ok()
                    .filter(|&d| d <= 3600)
                    .ok_or("expected reboot:SECONDS with SECONDS from 0 to 3600")?,
            },
        },
        "halt" => FailPolicy::Halt,
        "poweroff" => FailPolicy::Poweroff,
        "shell" => FailPolicy::Shell,
        _ => return Err("expected reboot[:SECONDS], halt, poweroff or shell".into()),
    };
    if arg.is_some() && !matches!(policy, FailPolicy::Reboot { .. }) {
        return Err(format!("{action} takes no argument"));
    }
    Ok(policy)
}

/// The longest module name the kernel has (`MODULE_NAME_LEN` - 1 on 64-bit).
const MAX_MODULE_NAME: usize = 55;

fn module_list(value: Option<&str>) -> Result<Vec<String>, String> {
    let v = required(value)?;
    v.split(',')
        .map(|m| {
            // MODULE_NAME_LEN is 64 - sizeof(unsigned long), NUL included:
            // no module has a longer name.
            if !m.is_empty()
                && m.len() <= MAX_MODULE_NAME
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                Ok(m.replace('-', "_"))
            } else {
                Err(format!("bad module name {m:?}"))
            }
        })
        .collect()
}

/// `BOOTIF=01-aa-bb-cc-dd-ee-ff` (PXELINUX: ARP type 01, then the MAC).
fn parse_bootif(value: &str) -> Result<[u8; 6], String> {
    let hex = value.strip_prefix("01-").unwrap_or(value);
    let parts: Vec<&str> = hex.split(['-', ':']).collect();
    let bad = || "expected 01-aa-bb-cc-dd-ee-ff".to_owned();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// `ip=` in the kernel's and dracut's forms:
/// `dhcp|on|any`, `none|off`, `<iface>:dhcp[:<mtu>]`, and
/// `<client>:[<peer>]:<gw>:<mask>:<host>:<iface>:<autoconf>[:<mtu>|<dns1>[:<dns2>]]`.
fn parse_ip(value: &str) -> Result<IpConfig, String> {
    match value {
        "dhcp" | "on" | "any" => {
            return Ok(IpConfig::Dhcp {
                interface: None,
                mtu: None,
                requested: None,
            });
        }
        "none" | "off" => return Ok(IpConfig::None),
        "dhcp6" | "auto6" | "ibft" | "either6" | "link6" => {
            return Err(format!(
                "{value} is not supported; use dhcp, none or a static IPv4 address"
            ));
        }
        _ => {}
    }
    if value.contains('[') {
        return Err(
            "IPv6 addresses are not supported; use dhcp, none or a static IPv4 address".into(),
        );
    }
    let fields: Vec<&str> = value.split(':').collect();
    // `<iface>:dhcp[:<mtu>[:<mac>]]`
    if fields.len() >= 2 && fields.len() <= 4 && matches!(fields[1], "dhcp" | "on" | "any") {
        let interface = interface_name(fields[0])?;
        let mtu = fields
            .get(2)
            .filter(|m| !m.is_empty())
            .map(|m| parse_mtu(m))
            .transpose()?;
        return Ok(IpConfig::Dhcp {
            interface: Some(interface),
            mtu,
            requested: None,
        });
    }
    if fields.len() < 7 {
        return Err(
            "expected dhcp, none, <iface>:dhcp, or <client>::<gw>:<mask>:<host>:<iface>:none"
                .into(),
        );
    }
    let address: Ipv4Addr = fields[0]
        .parse()
        .map_err(|_| format!("bad client address {:?}", fields[0]))?;
    let interface = Some(fields[5])
        .filter(|i| !i.is_empty())
        .map(interface_name)
        .transpose()?;
    match fields[6] {
        "none" | "off" | "" => {}
        // The kernel's ipconfig asks the server for <client> in this form; we
        // do the same with an INIT-REBOOT request. Gateway and mask come from
        // the server, so they are not read here.
        "dhcp" | "on" | "any" => {
            let mtu = fields
                .get(7)
                .filter(|m| !m.is_empty())
                .map(|m| parse_mtu(m))
                .transpose()?;
            return Ok(IpConfig::Dhcp {
                interface,
                mtu,
                requested: Some(address),
            });
        }
        other => {
            return Err(format!(
                "autoconf {other:?} is not supported with a static address; use none or dhcp"
            ));
        }
    }
    let gateway = optional_ip(fields[2], "gateway")?;
    let prefix_len = parse_netmask(fields[3])?;
    let hostname = Some(fields[4])
        .filter(|h| !h.is_empty())
        .map(host_name)
        .transpose()?;
    let mut dns = Vec::new();
    let mut mtu = None;
    for extra in fields.iter().skip(7).filter(|f| !f.is_empty()) {
        if let Ok(ip) = extra.parse::<Ipv4Addr>() {
            dns.push(ip);
        } else if extra.bytes().all(|b| b.is_ascii_digit()) {
            mtu = Some(parse_mtu(extra)?);
        } else if extra.len() == 2 && fields.len() > 9 {
            // The tail of a MAC address split by `:` (dracut's <macaddr>); MAC
            // matching is done with BOOTIF= instead.
        } else {
            return Err(format!("unexpected field {extra:?} after autoconf"));
        }
    }
    Ok(IpConfig::Static(StaticIp {
        address,
        prefix_len,
        gateway,
        hostname,
        interface,
        dns,
        mtu,
    }))
}

fn optional_ip(text: &str, what: &str) -> Result<Option<Ipv4Addr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("bad {what} address {text:?}"))
}

fn parse_netmask(text: &str) -> Result<u8, String> {
    if let Ok(len) = text.parse::<u8>()
        && len <= 32
    {
        return Ok(len);
    }
    let mask: Ipv4Addr = text.parse().map_err(|_| format!("bad netmask {text:?}"))?;
    let bits = u32::from(mask);
    // A netmask is ones followed by zeros: its complement plus one is a power of two.
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("netmask {text} is not contiguous"));
    }
    // leading_ones() of a u32 is at most 32, so it fits in u8.
    Ok(bits.leading_ones() as u8)
}

fn parse_mtu(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(m) if m >= 576 => Ok(m),
        _ => Err(format!("bad MTU {text:?} (576 to 65535)")),
    }
}

fn interface_name(text: &str) -> Result<String, String> {
    // The kernel's dev_valid_name(): IFNAMSIZ is 16 including the NUL; not
    // "." or ".."; no '/', ':' or space (the tokenizer already split on
    // spaces).
    if text.is_empty()
        || text.len() > 15
        || text == "."
        || text == ".."
        || text.contains(['/', ':', ' '])
    {
        return Err(format!("bad interface name {text:?}"));
    }
    Ok(text.to_owned())
}

/// The host name of a static `ip=`: what sethostname(2) takes (at most
/// HOST_NAME_MAX, 64 bytes), in the host-name characters DHCP's names are
/// held to as well.
fn host_name(text: &str) -> Result<String, String> {
    let ok = text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "bad host name {text:?} (at most 64 letters, digits, '-', '_' and '.')"
        ))
    }
}

/// " (did you mean X?)" for a key within edit distance 2 of a known one.
fn hint(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::split;

    fn plan(line: &str) -> Parsed {
        parse(&split(line.as_bytes()), false)
    }

    fn ok(line: &str) -> BootPlan {
        let parsed = plan(line);
        assert!(parsed.errors.is_empty(), "{line}: {:?}", parsed.errors);
        parsed.plan
    }

    #[test]
    fn root_hand_off_keys() {
        let p =
            ok("root=live:CDLABEL=PHASE_LIVE rd.live.dir=boot/live rd.live.squashimg=root.sqfs");
        assert_eq!(
            p.root,
            Some(RootSpec::Live(Box::new(RootSpec::Label(
                "PHASE_LIVE".into()
            ))))
        );
        assert_eq!(p.live_image, "boot/live/root.sqfs");
        assert_eq!(ok("root=live:/dev/sr0").live_image, DEFAULT_LIVE_IMAGE);
        assert_eq!(ok("rd.overlay").overlay, Some(Overlay { size: None }));
        assert_eq!(ok("rd.overlay=0").overlay, None);
        assert_eq!(
            ok("rd.overlay=tmpfs:size=512m").overlay,
            Some(Overlay {
                size: Some("512m".into())
            })
        );
        for bad in [
            "rd.overlay=tmpfs:size=",
            "rd.overlay=tmpfs:size=12mb",
            "rd.overlay=tmpfs:size=1,nr_inodes=9",
            "rd.live.squashimg=a/b",
            "rd.live.dir=../etc",
            "root=live:zfs:tank/root",
            "root=live:",
        ] {
            assert_eq!(plan(bad).errors.len(), 1, "{bad}");
        }
        // After `--`: the next init's arguments, never plan keys.
        let p = ok("root=/dev/vda1 -- single phase.mode=local systemd.unit=rescue.target");
        assert_eq!(
            p.init_args,
            ["single", "phase.mode=local", "systemd.unit=rescue.target"]
        );
        assert_eq!(p.mode, Mode::Internet);
    }

    #[test]
    fn defaults() {
        let p = ok("console=ttyS0 quiet");
        assert_eq!(p.channel, "stable");
        assert_eq!(p.mode, Mode::Internet);
        assert_eq!(p.discover_timeout, Duration::from_secs(5));
        assert_eq!(p.onfail, FailPolicy::Reboot { delay_s: 10 });
        assert_eq!(p.timeout, Duration::from_secs(300));
        assert!(p.quiet);
        assert!(matches!(
            p.ip,
            IpConfig::Dhcp {
                interface: None,
                ..
            }
        ));
    }

    #[test]
    fn every_key_parses() {
        let p = ok(
            "phase.provider=http://10.0.2.2:8080/,https://[fd00::1]/boot phase.channel=beta-2 \
            phase.mode=private phase.discover.timeout=2 phase.onfail=poweroff phase.timeout=90 phase.watchdog=45 \
            phase.report ip=eth0:dhcp:1400 rd.neednet=1 rd.shell rd.break=fetch rd.overlay root=zfs:tank/root rootfstype=zfs \
            rootflags=ro,noatime init=/sbin/init rd.retry=30 rd.timeout=0 BOOTIF=01-52-54-00-12-34-56 \
            rd.driver.pre=virtio-net,e1000e rd.driver.blacklist=nouveau module_blacklist=radeon",
        );
        assert_eq!(p.providers.len(), 2);
        assert_eq!(p.providers[0].url, "http://10.0.2.2:8080");
        assert_eq!((p.providers[0].port, p.providers[0].https), (8080, false));
        assert_eq!(
            (p.providers[1].host.as_str(), p.providers[1].port),
            ("fd00::1", 443)
        );
        assert_eq!(p.channel, "beta-2");
        assert_eq!(p.mode, Mode::Private);
        assert_eq!(p.discover_timeout, Duration::from_secs(2));
        assert_eq!(p.onfail, FailPolicy::Poweroff);
        assert_eq!(p.timeout, Duration::from_secs(90));
        assert_eq!(p.watchdog, Some(Duration::from_secs(45)));
        assert!(p.report && p.need_net && p.shell && p.overlay.is_some());
        assert_eq!(
            p.ip,
            IpConfig::Dhcp {
                interface: Some("eth0".into()),
                mtu: Some(1400),
                requested: None,
            }
        );
        assert_eq!(p.break_before, Some(Stage::Fetch));
        assert_eq!(p.root, Some(RootSpec::Zfs("tank/root".into())));
        assert_eq!(p.rootfstype.as_deref(), Some("zfs"));
        assert_eq!(p.rootflags.as_deref(), Some("ro,noatime"));
        assert_eq!(p.init.as_deref(), Some("/sbin/init"));
        assert_eq!(p.retry, Duration::from_secs(30));
        assert_eq!(p.device_timeout, Duration::ZERO);
        assert_eq!(p.bootif, Some([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(p.drivers, ["virtio_net", "e1000e"]);
        assert_eq!(p.blacklist, ["nouveau", "radeon"]);
    }

    #[test]
    fn root_forms() {
        let table: &[(&str, RootSpec)] = &[
            ("root=zfs:AUTO", RootSpec::ZfsAuto),
            (
                "root=ZFS=rpool/ROOT/debian",
                RootSpec::Zfs("rpool/ROOT/debian".into()),
            ),
            (
                "root=LABEL=phase-root",
                RootSpec::Label("phase-root".into()),
            ),
            ("root=UUID=0a1b-2c3d", RootSpec::Uuid("0a1b-2c3d".into())),
            ("root=PARTUUID=abc-01", RootSpec::PartUuid("abc-01".into())),
            ("root=PARTLABEL=root", RootSpec::PartLabel("root".into())),
            ("root=/dev/vda2", RootSpec::Device("/dev/vda2".into())),
        ];
        for (line, want) in table {
            assert_eq!(ok(line).root.as_ref(), Some(want), "{line}");
        }
    }

    #[test]
    fn ip_forms() {
        let p = ok("ip=10.0.0.5::10.0.0.1:255.255.255.0:node1:eth0:none");
        assert_eq!(
            p.ip,
            IpConfig::Static(StaticIp {
                address: Ipv4Addr::new(10, 0, 0, 5),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                hostname: Some("node1".into()),
                interface: Some("eth0".into()),
                dns: vec![],
                mtu: None,
            })
        );
        let p = ok("ip=192.168.1.9:::16::enp1s0:off:192.168.0.53:9.9.9.9");
        let IpConfig::Static(s) = p.ip else { panic!() };
        assert_eq!((s.prefix_len, s.gateway, s.dns.len()), (16, None, 2));
        let p = ok("ip=10.0.0.5::10.0.0.1:24::eth0:none:9000");
        let IpConfig::Static(s) = p.ip else { panic!() };
        assert_eq!(s.mtu, Some(9000));
        assert_eq!(ok("ip=none").ip, IpConfig::None);
        assert_eq!(ok("ip=off").ip, IpConfig::None);
        assert!(matches!(ok("ip=any").ip, IpConfig::Dhcp { .. }));
    }

    #[test]
    fn dhcp_with_a_client_address_asks_for_it_first() {
        let table: &[(&str, Option<&str>, Option<u16>, &str)] = &[
            ("ip=10.0.0.5:::::eth0:dhcp", Some("eth0"), None, "10.0.0.5"),
            (
                "ip=192.168.7.9::192.168.7.1:24:node:enp1s0:on:1500",
                Some("enp1s0"),
                Some(1500),
                "192.168.7.9",
            ),
            ("ip=10.1.2.3::::::any", None, None, "10.1.2.3"),
        ];
        for (line, interface, mtu, requested) in table {
            assert_eq!(
                ok(line).ip,
                IpConfig::Dhcp {
                    interface: interface.map(str::to_owned),
                    mtu: *mtu,
                    requested: Some(requested.parse().unwrap()),
                },
                "{line}"
            );
        }
    }

    #[test]
    fn net_timeouts() {
        let table: &[(&str, NetTimeouts)] = &[
            ("", NetTimeouts::default()),
            (
                "rd.net.timeout.iflink=5 rd.net.timeout.carrier=3 rd.net.timeout.dhcp=20",
                NetTimeouts {
                    iflink: Duration::from_secs(5),
                    carrier: Duration::from_secs(3),
                    dhcp: Duration::from_secs(20),
                },
            ),
            (
                "rd.net.timeout.dhcp=7",
                NetTimeouts {
                    dhcp: Duration::from_secs(7),
                    ..NetTimeouts::default()
                },
            ),
        ];
        for (line, want) in table {
            assert_eq!(
                ok(&format!("phase.report {line}")).net_timeout,
                *want,
                "{line}"
            );
        }
        assert_eq!(
            NetTimeouts::default(),
            NetTimeouts {
                iflink: Duration::from_secs(60),
                carrier: Duration::from_secs(10),
                dhcp: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn later_parameters_override_earlier_ones() {
        let p = ok("phase.channel=a phase.channel=b ip=none ip=dhcp");
        assert_eq!(p.channel, "b");
        assert!(matches!(p.ip, IpConfig::Dhcp { .. }));
    }

    #[test]
    fn malformed_values_name_key_and_value() {
        let table: &[(&str, &str)] = &[
            (
                "phase.timeout=soon",
                "phase.timeout=soon: expected a whole number of seconds from 1 to 86400",
            ),
            (
                "phase.timeout=0",
                "phase.timeout=0: expected a whole number of seconds from 1 to 86400",
            ),
            ("phase.timeout", "phase.timeout=: a value is required"),
            (
                "phase.discover.timeout=0",
                "phase.discover.timeout=0: expected a whole number of seconds from 1 to 86400",
            ),
            (
                "phase.onfail=explode",
                "phase.onfail=explode: expected reboot[:SECONDS], halt, poweroff or shell",
            ),
            (
                "phase.onfail=reboot:forever",
                "phase.onfail=reboot:forever: expected reboot:SECONDS with SECONDS from 0 to 3600",
            ),
            (
                "phase.onfail=halt:3",
                "phase.onfail=halt:3: halt takes no argument",
            ),
            (
                "phase.mode=lan",
                "phase.mode=lan: expected internet, local or private",
            ),
            (
                "phase.provider=ftp://x",
                "phase.provider=ftp://x: expected an http:// or https:// URL (in \"ftp://x\")",
            ),
            (
                "phase.provider=http://",
                "phase.provider=http://: the URL has no host (in \"http://\")",
            ),
            (
                "phase.provider=http://h:99999/",
                "phase.provider=http://h:99999/: bad port \"99999\" (in \"http://h:99999/\")",
            ),
            (
                "phase.provider=http://u@h/",
                "phase.provider=http://u@h/: a provider URL has no user, query, fragment or spaces (in \"http://u@h/\")",
            ),
            (
                "phase.channel=../etc",
                "phase.channel=../etc: a channel is 1–64 letters, digits, '-', '_' and '.', not starting with '.' (this is 6 bytes)",
            ),
            (
                "phase.report=maybe",
                "phase.report=maybe: expected 1 or 0 (or no value)",
            ),
            (
                "ip=10.0.0.5::10.0.0.1:255.0.255.0::eth0:none",
                "ip=10.0.0.5::10.0.0.1:255.0.255.0::eth0:none: netmask 255.0.255.0 is not contiguous",
            ),
            (
                "ip=10.0.0.300::10.0.0.1:24::eth0:none",
                "ip=10.0.0.300::10.0.0.1:24::eth0:none: bad client address \"10.0.0.300\"",
            ),
            (
                "ip=dhcp6",
                "ip=dhcp6: dhcp6 is not supported; use dhcp, none or a static IPv4 address",
            ),
            (
                "ip=eth0",
                "ip=eth0: expected dhcp, none, <iface>:dhcp, or <client>::<gw>:<mask>:<host>:<iface>:none",
            ),
            (
                "rd.net.timeout.dhcp=0",
                "rd.net.timeout.dhcp=0: expected a whole number of seconds from 1 to 86400",
            ),
            (
                "rd.net.timeout.carrier=ten",
                "rd.net.timeout.carrier=ten: expected a whole number of seconds from 1 to 86400",
            ),
            (
                "ip=10.0.0.5:::::eth0:bootp",
                "ip=10.0.0.5:::::eth0:bootp: autoconf \"bootp\" is not supported with a static address; use none or dhcp",
            ),
            (
                "ip=10.0.0.5:::::eth0:dhcp:12",
                "ip=10.0.0.5:::::eth0:dhcp:12: bad MTU \"12\" (576 to 65535)",
            ),
            (
                "root=sda1",
                "root=sda1: expected zfs:<pool>/<dataset>, zfs:AUTO, LABEL=, UUID=, PARTUUID=, PARTLABEL= or /dev/…",
            ),
            (
                "root=zfs:",
                "root=zfs:: expected zfs:<pool>/<dataset> or zfs:AUTO",
            ),
            ("root=LABEL=", "root=LABEL=: LABEL= needs a value"),
            (
                "init=sbin/init",
                "init=sbin/init: expected an absolute path",
            ),
            (
                "BOOTIF=01-52-54-00-12-34",
                "BOOTIF=01-52-54-00-12-34: expected 01-aa-bb-cc-dd-ee-ff",
            ),
            (
                "rd.break=later",
                "rd.break=later: expected a stage name (early, plan, modules, network, discover, fetch, verify, handoff) or a dracut hook",
            ),
            (
                "rd.driver.pre=a,,b",
                "rd.driver.pre=a,,b: bad module name \"\"",
            ),
            (
                "rootfstype=ext4;rm",
                "rootfstype=ext4;rm: expected a single word",
            ),
            (
                "phase.mode=private",
                "phase.mode=private: private mode needs phase.provider=",
            ),
        ];
        for (line, want) in table {
            let parsed = plan(line);
            let got: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
            assert_eq!(got, [*want], "{line}");
        }
    }

    #[test]
    fn values_a_later_stage_would_refuse_are_refused_here_with_the_key() {
        let long = |n: usize| "c".repeat(n);
        let table: Vec<(String, String)> = vec![
            // The manifest's channel rule (1–64 bytes): a 4096-byte channel
            // could never match a manifest.
            (
                format!("phase.channel={}", long(65)),
                "phase.channel=".to_owned()
                    + &long(65)
                    + ": a channel is 1–64 letters, digits, '-', '_' and '.', not starting with '.' (this is 65 bytes)",
            ),
            (
                format!("phase.channel={}", long(4096)),
                "(this is 4096 bytes)".into(),
            ),
            (
                "phase.channel=.hidden".into(),
                "not starting with '.'".into(),
            ),
            (
                "phase.channel=a/b".into(),
                "phase.channel=a/b: a channel is".into(),
            ),
            // What the HTTP client refuses in a URL.
            (
                "phase.provider=http://a\"b/".into(),
                "phase.provider=http://a\"b/: bad host \"a\\\"b\"".into(),
            ),
            (
                "phase.provider=http://h_1/".into(),
                "bad host \"h_1\"".into(),
            ),
            (
                "phase.provider=http://[fd00::zz]/".into(),
                "bad host \"fd00::zz\"".into(),
            ),
            (
                "phase.provider=http://h/a{b}".into(),
                "the path has '{', which a URL must percent-encode".into(),
            ),
            (
                "phase.provider=http://h/a%zz".into(),
                "the path has a % not followed by two hex digits".into(),
            ),
            (
                "phase.provider=http://h/\u{e9}".into(),
                "which a URL must percent-encode".into(),
            ),
            // sethostname(2) takes at most 64 bytes.
            (
                format!("ip=10.0.0.5::10.0.0.1:24:{}:eth0:none", long(65)),
                "bad host name".into(),
            ),
            (
                "ip=10.0.0.5::10.0.0.1:24:a;b:eth0:none".into(),
                "bad host name \"a;b\"".into(),
            ),
            // dev_valid_name().
            (
                "ip=..:dhcp".into(),
                "ip=..:dhcp: bad interface name \"..\"".into(),
            ),
            (format!("ip={}:dhcp", long(16)), "bad interface name".into()),
            // MODULE_NAME_LEN.
            (
                format!("rd.driver.pre={}", long(56)),
                "bad module name".into(),
            ),
            (
                format!("rd.driver.blacklist=a,{}", long(56)),
                "bad module name".into(),
            ),
            // ZFS names.
            (
                format!("root=zfs:pool/{}", long(251)),
                "a ZFS dataset name is at most 255".into(),
            ),
            (
                "root=zfs:pool/a@snap".into(),
                "a ZFS dataset name is at most 255".into(),
            ),
        ];
        for (line, want) in &table {
            let parsed = plan(line);
            let got: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
            assert_eq!(got.len(), 1, "{line}: {got:?}");
            assert!(
                got[0].contains(want.as_str()),
                "{line}: {got:?} lacks {want:?}"
            );
            let key = line.split('=').next().unwrap();
            assert_eq!(parsed.errors[0].key, key, "{line}");
        }
        // At the limits, accepted.
        let p = ok(&format!(
            "phase.channel={} ip=10.0.0.5::10.0.0.1:24:{}:{}:none rd.driver.pre={} root=zfs:pool/{}",
            long(64),
            long(64),
            long(15),
            long(55),
            long(250)
        ));
        assert_eq!(p.channel.len(), 64);
        assert_eq!(p.drivers[0].len(), 55);
    }

    /// xorshift, seeded: the same inputs every run.
    fn rng(seed: u64) -> impl FnMut(usize) -> usize {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        }
    }

    #[test]
    fn every_channel_the_plan_takes_is_one_a_manifest_can_name() {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "9",
            "-",
            "_",
            ".",
            "/",
            "..",
            " ",
            "\u{e9}",
            "%",
            "cccccccccccccccc",
        ];
        let mut next = rng(0x00c4_a77e_1000_0001);
        for case in 0..20_000 {
            let channel: String = (0..next(10)).map(|_| PIECES[next(PIECES.len())]).collect();
            if channel.is_empty() || channel.contains(char::is_whitespace) || channel.contains('"')
            {
                continue;
            }
            let parsed = plan(&format!("phase.channel={channel}"));
            let manifest_ok = phase_manifest::schema::check_name("channel", &channel).is_ok();
            assert_eq!(
                parsed.errors.is_empty(),
                manifest_ok,
                "case {case}: {channel:?}"
            );
        }
    }

    #[test]
    fn every_provider_the_plan_takes_is_a_url_the_http_client_takes() {
        const PIECES: &[&str] = &[
            "http://",
            "https://",
            "h",
            "10.0.2.2",
            "[fd00::1]",
            "[zz]",
            "[",
            "]",
            ":",
            "8080",
            "0",
            "/",
            "a",
            "%",
            "%2f",
            "%z",
            "\"",
            "<",
            ">",
            "{",
            "|",
            "\\",
            "^",
            "`",
            "\u{e9}",
            "~",
            ".",
            "-",
            "_",
            "!",
            "$",
            "&",
            "'",
            "(",
            "*",
            "+",
            ";",
            "=",
            ",",
            "@",
            "?",
            "#",
        ];
        let mut next = rng(0x0000_0ed1_5c0b_e2ed);
        let mut taken = 0;
        for case in 0..50_000 {
            let start = if next(4) == 0 { "" } else { PIECES[next(2)] };
            let url: String = std::iter::once(start)
                .chain((0..next(8)).map(|_| PIECES[next(PIECES.len())]))
                .collect();
            let Ok(provider) = ProviderUrl::parse(&url) else {
                continue;
            };
            taken += 1;
            let manifest = format!("{}/stable/x86_64/manifest.json", provider.url);
            let uri: ureq::http::Uri = manifest
                .parse()
                .unwrap_or_else(|e| panic!("case {case}: {url:?} taken, but {manifest:?}: {e}"));
            assert!(uri.host().is_some(), "case {case}: {url:?}");
            assert_eq!(
                uri.port_u16()
                    .unwrap_or(if provider.https { 443 } else { 80 }),
                provider.port
            );
        }
        assert!(taken > 1000, "only {taken} URLs were taken");
    }

    #[test]
    fn valid_keys_still_apply_beside_a_malformed_one() {
        let parsed = plan("phase.onfail=poweroff phase.timeout=soon");
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.plan.onfail, FailPolicy::Poweroff);
    }

    #[test]
    fn unknown_keys_warn_with_a_hint() {
        let parsed =
            plan("phase.provder=http://x phase.color=blue rd.luks.uuid=1 console=ttyS0 foo.bar=1");
        let got: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "unknown key phase.provder (ignored) (did you mean phase.provider?)",
                "unknown key phase.color (ignored)",
                "rd.luks.uuid is not supported by Phase Boot (ignored)",
                "nothing to boot: give phase.provider= or root= (or phase.report)",
            ]
        );
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn test_hook_keys_exist_only_in_test_builds() {
        let params = split(b"phase.test.panic=modules phase.test.kexec=/kexec phase.report");
        let release = parse(&params, false);
        assert_eq!(release.plan.test_panic, None);
        assert_eq!(release.plan.test_kexec, None);
        assert_eq!(
            release
                .warnings
                .iter()
                .map(|w| w.0.as_str())
                .collect::<Vec<_>>(),
            [
                "phase.test.panic is honoured only by test builds of the init (ignored)",
                "phase.test.kexec is honoured only by test builds of the init (ignored)",
            ]
        );
        let test = parse(&params, true);
        assert_eq!(test.plan.test_panic, Some(Stage::Modules));
        assert_eq!(test.plan.test_kexec.as_deref(), Some("/kexec"));
        assert!(test.warnings.is_empty());
        let relative = parse(&split(b"phase.test.kexec=kexec"), true);
        assert_eq!(
            relative.errors[0].to_string(),
            "phase.test.kexec=kexec: expected an absolute path"
        );
        // With something to boot, there is no "nothing to boot" warning.
        assert!(
            parse(&split(b"phase.test.kexec=/k"), true)
                .warnings
                .is_empty()
        );

        let params = split(b"phase.test.bench=dhcp:20 phase.report");
        assert_eq!(parse(&params, false).plan.test_bench_dhcp, None);
        assert_eq!(parse(&params, true).plan.test_bench_dhcp, Some(20));
        for bad in [
            "phase.test.bench=dhcp:0",
            "phase.test.bench=dns:3",
            "phase.test.bench",
        ] {
            let parsed = parse(&split(bad.as_bytes()), true);
            assert_eq!(parsed.errors.len(), 1, "{bad}");
        }
    }

    #[test]
    fn no_key_turns_verification_off() {
        // SECURITY.md row 15: nothing on the command line disables checks. Any
        // key that sounds like it is merely unknown.
        for key in [
            "phase.insecure",
            "phase.verify=0",
            "phase.noverify",
            "phase.trust=http://evil",
            "phase.floor=0",
        ] {
            let parsed = plan(&format!("{key} phase.report"));
            assert!(parsed.errors.is_empty(), "{key}");
            assert_eq!(
                parsed.plan,
                plan("phase.report").plan,
                "{key} changed the plan"
            );
            assert!(
                parsed
                    .warnings
                    .iter()
                    .any(|w| w.0.starts_with("unknown key")),
                "{key}"
            );
        }
    }
}
