//! `cargo xtask bench dhcp`: DHCP to lease, the init's client against busybox
//! udhcpc, alternating in the same VM on QEMU's user network. The test-hooks
//! init runs both (`phase.test.bench=dhcp:N`) and emits one event per sample.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{Samples, Table};
use crate::artifacts::{self, Variant};
use crate::vm::{Vm, VmSpec};
use crate::{Arch, setup};

/// Runs the benchmark on one arch or both.
pub fn run(rounds: u32, only: Option<Arch>) -> Result<()> {
    setup::ensure_all()?;
    let arches: Vec<Arch> = match only {
        Some(a) => vec![a],
        None => Arch::ALL.to_vec(),
    };
    let mut table = Table::new(&["arch", "client", "rounds", "median ms", "min ms", "max ms"]);
    for arch in arches {
        eprintln!("==> DHCP benchmark on {arch}: {rounds} rounds per client");
        // The debug image has busybox (udhcpc); the test-hooks init has the
        // benchmark hook.
        let bundle = artifacts::bundle(arch, "debug", Variant::TestHooks)?;
        let append =
            format!("rd.neednet=1 phase.test.bench=dhcp:{rounds} phase.onfail=poweroff quiet");
        let mut spec = VmSpec::direct(
            format!("bench-dhcp-{arch}"),
            arch,
            &bundle.kernel.image,
            &bundle.initrd,
            append,
        );
        spec.user_net = true;
        let mut vm = Vm::start(&spec)?;
        // Generous: a sample is tens of milliseconds, but TCG boots slowly.
        vm.wait_event("bench_done", Duration::from_secs(600))?;
        vm.expect_clean_exit(Duration::from_secs(60))?;
        for client in ["phase", "udhcpc"] {
            let ms: Samples = vm
                .events()
                .iter()
                .filter(|e| e["event"] == "bench" && e["client"] == client)
                .filter_map(|e| e["ms"].as_f64())
                .collect();
            if ms.is_empty() {
                bail!("{arch}: no samples from {client}");
            }
            table.row(vec![
                arch.name().into(),
                client.into(),
                ms.len().to_string(),
                format!("{:.1}", ms.median()),
                format!("{:.1}", ms.min()),
                format!("{:.1}", ms.max()),
            ]);
        }
    }
    println!();
    println!("DHCP to lease under QEMU (TCG, -smp 1), user network, same VM, clients alternating");
    table.print();
    println!(
        "phase: one exchange in the init (packet socket opened, DISCOVER…ACK parsed); \
         udhcpc: busybox udhcpc -f -q -n with a no-op script, spawn to exit."
    );
    Ok(())
}
