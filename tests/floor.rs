//! The version floor outlives a reboot (SECURITY.md row 5), and where it
//! stops: three boots of one machine, from its own boot medium, against one
//! provider whose manifest changes between them.
//!
//! 1. A validly signed v5 carrying `floor: 5` is accepted; the init stores
//!    5 before it kexecs into the next stage.
//! 2. The same machine, the same NVRAM (or disk), is served a validly
//!    signed v4: refused, naming the stored floor and where it was kept;
//!    nothing kexec'd.
//! 3. The store reset (the NVRAM cleared, the state partition zeroed —
//!    what someone with the machine in hand can do): v4 is accepted. The
//!    floor persists against the network, not against the owner.
//!
//! Under UEFI (OVMF, AAVMF) the floor is an EFI variable in a variable
//! store kept across the boots; under SeaBIOS, from the USB disk, it is on
//! the disk's state partition, which the host reads back between boots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use phase_initramfs::state::{self, Copy};
use phase_scenarios::{check, contains, failure_in, wait_power, wait_stage};
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::images;
use xtask::provider::{self, Publication};
use xtask::vm::{Drive, Firmware, Media, Vm, VmSpec};

/// Firmware, a kernel, DHCP, a fetch and a kexec under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
/// The first stage's image: netboot with a state partition named.
const SPEC: &str = "tests/specs/state.toml";

/// Where this machine keeps its floor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keeper {
    /// An EFI variable, in a variable store file kept across boots.
    Nvram,
    /// The USB disk's state partition.
    StatePartition,
}

impl Keeper {
    fn source(self) -> &'static str {
        match self {
            Keeper::Nvram => "efi_variable",
            Keeper::StatePartition => "state_partition",
        }
    }
}

/// One machine: its boot disk (and variable store), and the provider it
/// is pointed at.
struct Machine {
    arch: Arch,
    name: String,
    keeper: Keeper,
    dir: tempfile::TempDir,
    disk: PathBuf,
    /// The state partition's offset and length on the disk.
    state: Option<(u64, u64)>,
    vars: PathBuf,
    bundle: Bundle,
    second: Bundle,
    _nginx: phase_tools::nginx::Nginx,
}

impl Machine {
    fn new(arch: Arch, keeper: Keeper) -> Result<Machine> {
        let bundle = artifacts::bundle(arch, SPEC, Variant::Release)?;
        let second = artifacts::bundle(arch, "tests/specs/netboot.toml", Variant::Release)?;
        let dir = tempfile::Builder::new().prefix("phase-floor-").tempdir()?;
        let name = match keeper {
            Keeper::Nvram => format!("floor-uefi-{arch}"),
            Keeper::StatePartition => format!("floor-usb-{arch}"),
        };
        // A first release, so the server has a tree to serve; each boot
        // publishes its own over it.
        let (tree, _) = provider::publish_tree(
            dir.path(),
            &release(arch, &bundle, &second, 1, None, "none"),
        )?;
        let nginx = provider::nginx(&tree, dir.path())?;
        let url = provider::guest_url("http", nginx.http.port());
        let append = format!("phase.provider={url} phase.onfail=poweroff");
        let disk = dir.path().join("disk.img");
        let state = match keeper {
            Keeper::Nvram => {
                images::direct_esp(
                    arch,
                    &bundle.kernel.image,
                    &bundle.initrd,
                    &append,
                    false,
                    &disk,
                )?;
                None
            }
            Keeper::StatePartition => {
                let state = images::usb_disk(
                    arch,
                    &bundle.kernel.image,
                    &bundle.initrd,
                    &append,
                    None,
                    &disk,
                )?;
                Some(state.context("the USB disk has no state partition")?)
            }
        };
        let vars = dir.path().join("efivars.fd");
        Ok(Machine {
            arch,
            name,
            keeper,
            dir,
            disk,
            state,
            vars,
            bundle,
            second,
            _nginx: nginx,
        })
    }

    /// Publishes `version` (with `floor`), the next stage reporting `mark`.
    fn publish(&self, version: u64, floor: Option<u64>, mark: &str) -> Result<()> {
        provider::publish_tree(
            self.dir.path(),
            &release(self.arch, &self.bundle, &self.second, version, floor, mark),
        )?;
        Ok(())
    }

    fn boot(&self, n: u32) -> Result<Vm> {
        let firmware = match self.keeper {
            Keeper::Nvram => Firmware::Uefi,
            Keeper::StatePartition => Firmware::Default,
        };
        Vm::start(&VmSpec {
            name: format!("{}-{n}", self.name),
            arch: self.arch,
            memory_mb: 512,
            kernel: None,
            initrd: None,
            append: String::new(),
            firmware,
            efi_vars: Some(self.vars.clone()),
            drives: vec![Drive {
                path: self.disk.clone(),
                media: Media::Disk,
                format: "raw",
                // The state partition is written.
                readonly: false,
            }],
            user_net: true,
            event_port: true,
            rtc_base: None,
            tap: None,
            extra_args: Vec::new(),
        })
    }

    /// The floor the state partition holds, read back on the host.
    fn partition_floor(&self) -> Result<Option<u64>> {
        let Some((offset, _)) = self.state else {
            return Ok(None);
        };
        let disk = std::fs::read(&self.disk)?;
        let slot = |at: u64| {
            let at = (offset + at) as usize;
            Copy::read(&disk[at..at + state::SLOT_LEN])
        };
        let (a, b) = (slot(state::SLOT_A), slot(state::SLOT_B));
        anyhow::ensure!(
            matches!((&a, &b), (Copy::Valid(x), Copy::Valid(y)) if x == y)
                || matches!((&a, &b), (Copy::Empty, Copy::Empty)),
            "the two copies differ: {a:?} {b:?}"
        );
        Ok(Some(state::partition_floor(&a, &b)))
    }

    /// What someone with the machine in hand can do: clear the NVRAM, or
    /// zero the state partition.
    fn reset_store(&self) -> Result<()> {
        match self.keeper {
            Keeper::Nvram => std::fs::remove_file(&self.vars)?,
            Keeper::StatePartition => {
                let (offset, len) = self.state.context("no state partition")?;
                let mut disk = std::fs::read(&self.disk)?;
                disk[offset as usize..(offset + len) as usize].fill(0);
                std::fs::write(&self.disk, disk)?;
            }
        }
        Ok(())
    }
}

fn release<'a>(
    arch: Arch,
    bundle: &'a Bundle,
    second: &'a Bundle,
    version: u64,
    floor: Option<u64>,
    mark: &str,
) -> Publication<'a> {
    Publication {
        arch,
        version,
        floor,
        expires_in: 3600,
        cmdline: format!(
            "{} phase.report phase.onfail=poweroff marker={mark}",
            arch.kernel_params()
        ),
        kernel: &bundle.kernel.image,
        initrd: Some(&second.initrd),
        served_as: None,
        root_image: None,
    }
}

fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{name}-{nanos:08x}")
}

/// Whether the variable store holds our variable's name (UTF-16, as the
/// firmware keeps it).
fn vars_hold_the_floor(vars: &Path) -> Result<bool> {
    let name: Vec<u8> = state::EFI_VARIABLE
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let bytes = std::fs::read(vars)?;
    Ok(bytes.windows(name.len()).any(|w| w == name))
}

fn persists(arch: Arch, keeper: Keeper) -> Result<()> {
    let m = Machine::new(arch, keeper)?;

    // Boot 1: v5 with floor 5, accepted; 5 stored before the kexec.
    let mark = marker(&format!("floor-{arch}"));
    m.publish(5, Some(5), &mark)?;
    let mut vm = m.boot(1)?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    check(
        &vm,
        fetch["version"] == 5
            && fetch["floor"] == 5
            && fetch["stored_floor"]["store"] == keeper.source()
            && fetch["stored_floor"]["stored"] == 0,
        &format!(
            "boot 1 did not start from an empty {} store: {fetch}",
            keeper.source()
        ),
    )?;
    let stored = vm.wait_event("floor", NETBOOT)?;
    check(
        &vm,
        stored["outcome"] == "raised" && stored["was"] == 0 && stored["stored"] == 5,
        &format!("the floor was not stored: {stored}"),
    )?;
    vm.wait_event("kexec", NETBOOT)?;
    let report = vm.wait_event("report", NETBOOT)?;
    contains(&report["cmdline"], &mark)?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    match keeper {
        Keeper::Nvram => anyhow::ensure!(
            vars_hold_the_floor(&m.vars)?,
            "{} holds no {} variable",
            m.vars.display(),
            state::EFI_VARIABLE
        ),
        Keeper::StatePartition => {
            anyhow::ensure!(
                m.partition_floor()? == Some(5),
                "the disk does not hold floor 5"
            )
        }
    }

    // Boot 2: the same machine is served a validly signed v4: refused by
    // the stored floor, which the report names; nothing kexec'd.
    m.publish(4, None, "never")?;
    let mut vm = m.boot(2)?;
    let failure = failure_in(&mut vm, "fetch", NETBOOT)?;
    check(
        &vm,
        failure["kind"] == "rollback"
            && failure["detail"]["version"] == 4
            && failure["detail"]["floor"] == 5
            && failure["detail"]["source"] == keeper.source(),
        &format!("v4 was not refused by the stored floor: {failure}"),
    )?;
    wait_power(&mut vm, "power off", Duration::from_secs(60))?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    check(
        &vm,
        !vm.events().iter().any(|e| e["event"] == "kexec"),
        "something was kexec'd",
    )?;

    // Boot 3: the store reset by hand, v4 is accepted — the limit.
    m.reset_store()?;
    let mut vm = m.boot(3)?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    check(
        &vm,
        fetch["version"] == 4 && fetch["stored_floor"]["stored"] == 0,
        &format!("v4 was not accepted after the reset: {fetch}"),
    )?;
    // A manifest without a floor leaves the store as it is.
    vm.wait_event("kexec", NETBOOT)?;
    check(
        &vm,
        !vm.events().iter().any(|e| e["event"] == "floor"),
        "a manifest without a floor moved the stored floor",
    )?;
    vm.kill()?;
    if keeper == Keeper::StatePartition {
        anyhow::ensure!(
            m.partition_floor()? == Some(0),
            "the reset disk holds a floor"
        );
    }
    Ok(())
}

#[test]
fn x86_64_floor_persists_in_ovmf_nvram() -> Result<()> {
    persists(Arch::X86_64, Keeper::Nvram)
}

#[test]
fn aarch64_floor_persists_in_aavmf_nvram() -> Result<()> {
    persists(Arch::Aarch64, Keeper::Nvram)
}

#[test]
fn x86_64_floor_persists_on_the_state_partition_under_seabios() -> Result<()> {
    persists(Arch::X86_64, Keeper::StatePartition)
}
