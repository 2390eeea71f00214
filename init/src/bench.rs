//! Test builds only (`phase.test.bench=dhcp:ROUNDS`): DHCP-to-lease of the
//! init's client against busybox `udhcpc`, in the same VM, on the same link,
//! from the same server, alternating so drift hits both alike. Each sample
//! is one `bench` event; the host (`cargo xtask bench dhcp`) takes medians.
//!
//! What is timed: for the init, one full exchange (packet socket opened,
//! DISCOVER … ACK parsed) in-process; for udhcpc, the process from spawn to
//! exit with `-q` (quit once leased) and a no-op script, which is how a
//! shell-based initramfs uses it. Neither applies the lease, so rounds do
//! not disturb each other.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::dhcp::client::Config;
use crate::link::Netlink;
use crate::{error_chain, event, network, reaper};

const BUSYBOX: &str = "/bin/busybox";
/// Each exchange's budget: generous, since QEMU's slirp answers at once.
const BUDGET: Duration = Duration::from_secs(30);

pub fn dhcp(interface: &str, rounds: u32) -> Result<(), String> {
    let mut nl = Netlink::open().map_err(|e| error_chain(&e))?;
    let link = nl
        .links()
        .map_err(|e| error_chain(&e))?
        .into_iter()
        .find(|l| l.name == interface)
        .ok_or(format!("no link {interface}"))?;
    let mac = link.mac.ok_or(format!("{interface} has no MAC address"))?;
    if !std::path::Path::new(BUSYBOX).exists() {
        return Err(format!(
            "{BUSYBOX} is not in this image (use the debug spec)"
        ));
    }
    for round in 0..rounds {
        let start = Instant::now();
        let config = Config {
            mac,
            requested: None,
            hostname: None,
        };
        let (lease, stats) =
            network::exchange(&link, config, BUDGET, &mut |_| {}).map_err(|e| error_chain(&e))?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        event::emit(
            "bench",
            json!({ "client": "phase", "round": round, "ms": ms, "address": lease.address, "sent": stats.sent }),
        );

        let mut cmd = Command::new(BUSYBOX);
        cmd.args([
            "udhcpc",
            "-i",
            interface,
            "-f",
            "-q",
            "-n",
            "-s",
            "/bin/true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let start = Instant::now();
        let pid = reaper::spawn(&mut cmd).map_err(|e| format!("starting udhcpc: {e}"))?;
        let status = reaper::wait(pid);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        event::emit(
            "bench",
            json!({ "client": "udhcpc", "round": round, "ms": ms, "exit": status.exit_status() }),
        );
    }
    event::emit("bench_done", json!({ "rounds": rounds }));
    Ok(())
}
