//! Key rotation reaching a booting machine, on both arches (SECURITY.md row
//! 13). The image trusts only the harness's release key A. The provider tree
//! carries the rotation A→B, signed by both, and a manifest signed by B
//! alone: the init follows the chain from its baked store and boots the
//! second kernel, whose report carries the signed marker. With a rotation
//! signed by B alone, the chain stops, the manifest is judged by A and
//! refused, and nothing is kexec'd.

use std::time::Duration;

use anyhow::Result;
use phase_manifest::rotation::{INDEX_PATH, Index, Rotation, step_path};
use phase_manifest::{Envelope, Handoff, TrustStore};
use phase_scenarios::{check, contains, failure_in, wait_power, wait_stage};
use phase_tools::keys;
use phase_tools::publish::{Options, Release, publish_with};
use xtask::Arch;
use xtask::artifacts::{self, Bundle, Variant};
use xtask::provider;
use xtask::vm::{Vm, VmSpec};

/// Two kernel boots and a kexec under TCG.
const NETBOOT: Duration = Duration::from_secs(300);
const SPEC: &str = "tests/specs/netboot.toml";

/// A marker unique to this run, so a stale report cannot pass.
fn marker(name: &str, arch: Arch) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("marker={name}-{arch}-{nanos:08x}")
}

struct Run {
    _dir: tempfile::TempDir,
    _nginx: phase_tools::nginx::Nginx,
    http: String,
    bundle: Bundle,
    /// Key B's id.
    new_key_id: String,
}

/// Who signs the rotation A→B.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RotationSigners {
    /// A and B: what a machine must accept.
    OldAndNew,
    /// B alone: a takeover a machine must refuse.
    NewOnly,
}

/// A tree with a manifest signed by a fresh key B only, and the rotation
/// A→B signed by `signers`, served by nginx.
fn serve_tree(arch: Arch, signers: RotationSigners, mark: &str) -> Result<Run> {
    let bundle = artifacts::bundle(arch, SPEC, Variant::Release)?;
    let second = artifacts::bundle(arch, SPEC, Variant::Release)?;
    let dir = tempfile::Builder::new()
        .prefix("phase-rotation-")
        .tempdir()?;
    let old_key = provider::key()?;
    let old = keys::read_signing_key(&old_key.private)?;
    let generated = keys::keygen(&dir.path().join("keys"), "b")?;
    let new = keys::read_signing_key(&generated.private_key)?;
    // The store every image the harness builds starts from: key A,
    // generation 0 (the floors do not enter a rotation).
    let image_store = TrustStore::new(&[keys::public_of(&old).record()], 1, 0, 1000, 0)?;
    let now = phase_tools::time::now();
    let doc = Rotation::new(0, now, vec![keys::public_of(&new).record()], 1);
    let envelope = match signers {
        RotationSigners::OldAndNew => Envelope::sign(doc.to_payload(), &[&old, &new]),
        RotationSigners::NewOnly => Envelope::sign(doc.to_payload(), &[&new]),
    };
    let rotation_file = dir.path().join("rotation-1.json");
    std::fs::write(&rotation_file, envelope.to_json())?;

    let tree = dir.path().join("tree");
    let release = Release {
        channel: "stable".into(),
        arch: provider::manifest_arch(arch),
        board: None,
        version: 5,
        issued_at: now.saturating_sub(60),
        expires_at: now + 3600,
        handoff: Handoff::Kexec,
        cmdline: format!(
            "console={} panic=-1 phase.report phase.onfail=poweroff {mark}",
            arch.console()
        ),
        kernel: Some(bundle.kernel.image.clone()),
        initrd: Some(second.initrd.clone()),
        dtb: None,
        root_image: None,
        floor: None,
    };
    match signers {
        // As a publisher does it: phase publish checks the chain from the
        // image's store and that B's signature satisfies its end.
        RotationSigners::OldAndNew => {
            let options = Options {
                rotations: vec![rotation_file],
                trust_store: Some(image_store),
                ..Options::default()
            };
            publish_with(&release, &[new], &tree, &options)?;
        }
        // phase publish refuses such a chain, so it is put in place by hand,
        // as a hostile mirror would serve it.
        RotationSigners::NewOnly => {
            publish_with(&release, &[new], &tree, &Options::default())?;
            std::fs::create_dir_all(tree.join("rotations"))?;
            std::fs::copy(&rotation_file, tree.join(step_path(1)))?;
            std::fs::write(tree.join(INDEX_PATH), Index::new(1).to_json())?;
        }
    }
    let nginx = provider::nginx(&tree, dir.path())?;
    Ok(Run {
        http: provider::guest_url("http", nginx.http.port()),
        _nginx: nginx,
        _dir: dir,
        bundle,
        new_key_id: generated.key_id,
    })
}

fn boot(arch: Arch, name: &str, run: &Run) -> Result<Vm> {
    let mut spec = VmSpec::direct(
        format!("{name}-{arch}"),
        arch,
        &run.bundle.kernel.image,
        &run.bundle.initrd,
        format!("phase.provider={} phase.onfail=poweroff", run.http),
    );
    spec.user_net = true;
    Vm::start(&spec)
}

fn kernel_starts(vm: &Vm) -> usize {
    vm.console()
        .iter()
        .filter(|l| l.contains("Linux version"))
        .count()
}

fn boots_a_manifest_signed_by_a_key_learned_by_rotation(arch: Arch) -> Result<()> {
    let mark = marker("rotated", arch);
    let run = serve_tree(arch, RotationSigners::OldAndNew, &mark)?;
    let mut vm = boot(arch, "rotation-cross-signed", &run)?;
    let fetch = wait_stage(&mut vm, "fetch", NETBOOT)?;
    let rotation = &fetch["rotation"];
    check(
        &vm,
        rotation["applied"] == serde_json::json!([1]) && rotation["generation"] == 1,
        &format!("the rotation was not applied: {rotation}"),
    )?;
    check(
        &vm,
        fetch["signed_by"] == serde_json::json!([run.new_key_id]),
        &format!("not signed by the rotated-in key: {}", fetch["signed_by"]),
    )?;
    vm.wait_event("kexec", NETBOOT)?;
    let report = vm.wait_event("report", NETBOOT)?;
    contains(&report["cmdline"], &mark)?;
    check(
        &vm,
        kernel_starts(&vm) == 2,
        "the console does not show two kernels",
    )?;
    vm.expect_clean_exit(Duration::from_secs(60))
}

fn a_rotation_signed_by_the_new_key_only_is_refused(arch: Arch) -> Result<()> {
    let run = serve_tree(arch, RotationSigners::NewOnly, "marker=never")?;
    let mut vm = boot(arch, "rotation-new-only", &run)?;
    let failure = failure_in(&mut vm, "fetch", NETBOOT)?;
    contains(
        &failure["error"],
        "rotation is not signed by the current keys",
    )?;
    contains(&failure["error"], "judged by key generation 0")?;
    wait_power(&mut vm, "power off", Duration::from_secs(60))?;
    vm.expect_clean_exit(Duration::from_secs(60))?;
    check(&vm, kernel_starts(&vm) == 1, "a second kernel started")?;
    check(
        &vm,
        !vm.events().iter().any(|e| e["event"] == "kexec"),
        "something was kexec'd",
    )
}

phase_scenarios::on_both_arches!(
    boots_a_manifest_signed_by_a_key_learned_by_rotation,
    a_rotation_signed_by_the_new_key_only_is_refused,
);
