//! The init's life, from kernel start to hand-off. Each stage is timed,
//! logged as one human line, emitted as one event, and on failure turned into
//! a [`Failure`] that the policy handles. Nothing here returns.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use phase_manifest::{Arch, Binding, State};

use phase_initramfs::image::{ImageInfo, KexecMethod};
use phase_initramfs::layout;
use serde_json::{Value, json};

use crate::clock::{self, Floor};
use crate::discover::{self, Found};
use crate::event::{self, Channel};
use crate::network::{self, Configured, Target};
use crate::plan::ProviderUrl;
use crate::plan::{self, BootPlan, Mode, Stage};
use crate::policy::{self, Failure, Tried};
use crate::sys::RebootCommand;
use crate::{
    cmdline, early, error_chain, fetch, floor, kexec, log, modules, reaper, root, sys, watchdog,
};

/// How long the modules stage waits for the host to announce the event port.
const EVENT_PORT_BUDGET: Duration = Duration::from_secs(3);

/// What a stage hands back: a value for the next stage, a human summary, and
/// fields for its event.
struct Done<T> {
    value: T,
    summary: String,
    fields: Value,
}

fn done<T>(value: T, summary: impl Into<String>, fields: Value) -> Done<T> {
    Done {
        value,
        summary: summary.into(),
        fields,
    }
}

/// Runs one stage: records it for failures raised elsewhere, honours
/// `rd.break` and the test panic hook, times it, logs and emits the outcome.
fn run_stage<T>(
    stage: Stage,
    plan: Option<&BootPlan>,
    f: impl FnOnce() -> Result<Done<T>, Failure>,
) -> T {
    policy::enter(stage);
    // Each stage begun is progress.
    watchdog::pet();
    if let Some(plan) = plan
        && plan.break_before == Some(stage)
    {
        break_to_shell(stage);
    }
    #[cfg(feature = "test-hooks")]
    if let Some(plan) = plan
        && plan.test_panic == Some(stage)
    {
        if plan.test_panic_thread {
            // The panicking thread takes the policy; this one waits for a
            // join that never comes, as the main thread would on any
            // helper thread.
            let helper = std::thread::spawn(move || {
                panic!("test hook: injected panic on a helper thread in stage {stage}")
            });
            let _ = helper.join();
        }
        panic!("test hook: injected panic at the start of stage {stage}");
    }
    let start = Instant::now();
    match f() {
        Ok(d) => {
            let ms = start.elapsed().as_millis() as u64;
            info!("{stage}: {} ({ms} ms)", d.summary);
            let mut fields = json!({ "stage": stage, "ms": ms });
            if let (Value::Object(all), Value::Object(extra)) = (&mut fields, d.fields) {
                all.extend(extra);
            }
            event::emit("stage", fields);
            d.value
        }
        Err(failure) => policy::fail(failure),
    }
}

fn break_to_shell(stage: Stage) {
    if policy::shell_available() {
        policy::run_shell(&format!("rd.break before {stage}"));
    } else {
        warn!("rd.break={stage} ignored: this image has no shell");
    }
}

/// PID 1's entry point.
pub fn main() -> ! {
    if sys::getpid() != 1 {
        eprintln!(
            "phase init {}: this program is the first process of a Phase Boot initramfs and runs only as PID 1.",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(2);
    }
    policy::install_panic_hook();
    policy::before_shell(storage_for_shell);
    // Before any other thread exists, so all of them inherit the signal mask.
    let reaper = reaper::start(policy::on_signal);

    let image = run_stage(Stage::Early, None, || early_stage(reaper));
    let plan = run_stage(Stage::Plan, None, || plan_stage(&image));
    let loaded = run_stage(Stage::Modules, Some(&plan), || modules_stage(&plan, &image));
    if root::ahead::wanted(&plan) {
        root::ahead::start(&plan);
    }
    if let Some(fields) = watchdog::open(&plan) {
        event::emit("watchdog", fields);
    }
    let net = match network::needed(&plan) {
        Ok(_) => Some(run_stage(Stage::Network, Some(&plan), || {
            network_stage(&plan)
        })),
        Err(why) => {
            policy::enter(Stage::Network);
            info!("network: skipped ({why})");
            event::emit("stage", json!({ "stage": Stage::Network, "skipped": why }));
            None
        }
    };

    ready(&plan, &image, &loaded, net.as_ref());
    #[cfg(feature = "test-hooks")]
    if let Some(rounds) = plan.test_bench_dhcp {
        bench_dhcp(net.as_ref(), rounds);
    }
    if plan.report {
        report();
    }
    #[cfg(feature = "test-hooks")]
    if let Some(dir) = &plan.test_kexec {
        test_kexec(&plan, &image, dir);
    }
    // Local mode: the LAN's providers first, then any named ones.
    let mut found = None;
    let mut providers = plan.providers.clone();
    if plan.mode == Mode::Local
        && let Some(net) = &net
    {
        let f = run_stage(Stage::Discover, Some(&plan), || {
            discover_stage(&plan, net, true)
        });
        providers = f.providers.iter().chain(&plan.providers).cloned().collect();
        found = Some(f);
    }
    if !providers.is_empty() {
        let (client, fetched, stored) = run_stage(Stage::Fetch, Some(&plan), || {
            fetch_stage(&plan, &image, &providers, net.as_ref(), &mut found)
        });
        let artifacts = run_stage(Stage::Verify, Some(&plan), || {
            verify_stage(&plan, &client, &fetched, found.as_ref())
        });
        handoff(&plan, &image, &fetched, stored, artifacts);
    }
    if let Some(spec) = &plan.root {
        root_handoff(&plan, root::Source::Named(spec.clone()));
    }
    policy::enter(Stage::Handoff);
    policy::fail(
        Failure::new(
            Stage::Handoff,
            "nothing to boot: the command line names no phase.provider= and no root=",
        )
        .because("nothing_to_boot", Value::Null),
    )
}

/// The root hand-off stage: mounts the root (`root=`, or the manifest's
/// verified image) at /sysroot and checks its init — the `handoff` stage
/// event says what was mounted — then, past the point of no return, emits
/// a `switch_root` event, deletes the initramfs and executes the new init.
/// Never returns.
fn root_handoff(plan: &BootPlan, source: root::Source) -> ! {
    let prepared = run_stage(Stage::Handoff, Some(plan), || {
        let started = Instant::now();
        root::ahead::finish();
        let ahead_ms = started.elapsed().as_millis() as u64;
        let p = root::prepare(plan, source)?;
        let summary = match (&p.lower, &p.upper) {
            (Some(lower), Some(upper)) => format!(
                "overlay: lower {} ({}, read-only) at {}, upper tmpfs {}; init {}",
                lower.source, lower.fstype, lower.target, upper.target, p.init
            ),
            _ => format!(
                "{} ({}, {}{}) at {}; init {}",
                p.root,
                p.fstype,
                if p.read_only { "ro" } else { "rw" },
                if p.options.is_empty() {
                    String::new()
                } else {
                    format!(",{}", p.options)
                },
                root::switch_root::NEW_ROOT,
                p.init
            ),
        };
        // The wait for the modules loaded ahead, then finding, attaching and
        // mounting the root and checking its init.
        let took = json!({ "ahead_ms": ahead_ms, "prepare_ms": p.ms });
        let fields = json!({ "root": &p, "took": took });
        Ok(done(p, summary, fields))
    });
    // Nothing may still be probing disks, or fire a deadline, once the
    // initramfs goes.
    finish_storage_drivers();
    policy::disarm_deadline();
    // Closed without the magic character when the new init is executed:
    // with nowayout set, the device keeps running for it.
    let armed = watchdog::arm_for_handoff(None);
    info!(
        "handoff: switch_root to {} ({}), executing {}{}",
        prepared.root,
        prepared.fstype,
        prepared.init,
        if prepared.init_args.is_empty() {
            String::new()
        } else {
            format!(" {}", prepared.init_args.join(" "))
        }
    );
    event::emit(
        "switch_root",
        json!({ "root": prepared.root, "fstype": prepared.fstype, "init": prepared.init, "args": prepared.init_args, "watchdog": armed }),
    );
    let (cleanup, error) = root::switch_root::switch(
        root::switch_root::NEW_ROOT,
        &prepared.init,
        &prepared.init_args,
    );
    policy::fail(Failure::new(Stage::Handoff, error_chain(&error)).because(
        "switch_root",
        json!({ "deleted_files": cleanup.files, "mount_points_kept": cleanup.mount_points }),
    ))
}

/// A failed fetch or verify stage as the policy reports it.
fn stage_failure(stage: Stage, f: fetch::StageFailure) -> Failure {
    Failure {
        stage,
        error: f.error,
        kind: f.kind,
        detail: f.detail,
        tried: f.tried,
    }
}

/// The budget for one retrying stage: `rd.retry`, but never past the whole
/// boot's `phase.timeout` (counted from kernel start).
fn stage_budget(plan: &BootPlan) -> fetch::Budget {
    let left = plan.timeout.saturating_sub(sys::clock_gettime_boottime());
    fetch::Budget::new(plan.retry.min(left))
}

/// The discover stage: providers on the boot link `net`. With `rounds`
/// (local mode) it repeats while nothing is found, inside `rd.retry`, and
/// fails when nothing was found and nothing is named.
fn discover_stage(plan: &BootPlan, net: &Configured, rounds: bool) -> Result<Done<Found>, Failure> {
    let arch = Arch::native().map_or("", Arch::as_str);
    let budget = stage_budget(plan);
    let found = discover::run(plan, net, arch, rounds.then_some(&budget));
    if rounds && found.providers.is_empty() && plan.providers.is_empty() {
        return Err(found.nothing(plan));
    }
    let fields = json!({
        "discovered": &found,
        "timeout_s": plan.discover_timeout.as_secs(),
        "after_named": !rounds,
    });
    Ok(done(found.clone(), found.summary(), fields))
}

/// A failure of a stage that fetched from discovered providers: the report
/// lists every provider heard of with its skip reason or its attempts.
fn with_discovered(mut failure: Failure, found: Option<&Found>) -> Failure {
    if let Some(found) = found {
        found.annotate(&mut failure.tried);
    }
    failure
}

type FetchDone = (phase_fetch::Client, fetch::Fetched, floor::Stored);

fn fetch_stage(
    plan: &BootPlan,
    image: &ImageInfo,
    providers: &[ProviderUrl],
    net: Option<&Configured>,
    found: &mut Option<Found>,
) -> Result<Done<FetchDone>, Failure> {
    let fail = |e: String| Failure::new(Stage::Fetch, e);
    let started = Instant::now();
    let trust = fetch::read_trust().map_err(fail)?;
    // The state partition's disk probes on the storage-driver thread.
    if floor::needs_partition(image) {
        finish_storage_drivers();
    }
    let stored = floor::locate(plan, image);
    for note in &stored.notes {
        warn!("floor: {note}");
    }
    match &stored.store {
        floor::Store::Nowhere { why } => warn!(
            "floor: {why}: the version floor is the image's only ({})",
            trust.store.version_floor
        ),
        store => info!(
            "floor: {} stored in {}",
            stored.floor,
            match store {
                floor::Store::EfiVariable { path } => path.clone(),
                floor::Store::StatePartition { device, label } =>
                    format!("the state partition {device} ({label})"),
                floor::Store::Nowhere { .. } => String::new(),
            }
        ),
    }
    let floor_ms = started.elapsed().as_millis() as u64;
    let client = fetch::client(&trust).map_err(fail)?;
    let client_ms = started.elapsed().as_millis() as u64 - floor_ms;
    let arch =
        Arch::native().ok_or_else(|| fail("this architecture has no manifest arch".into()))?;
    let binding = Binding {
        channel: plan.channel.clone(),
        arch,
        board: None,
    };
    let state = State {
        // A clock before 1970 counts as 1970; the trust store's time floor
        // covers a dead RTC.
        now: u64::try_from(sys::clock_gettime_realtime()).unwrap_or(0),
        version_floor: stored.floor,
        floor_source: stored.source(),
        ..State::default()
    };
    // Internet mode: the LAN's providers after the named ones, once each
    // of those has failed.
    let mut after_named = || -> Vec<ProviderUrl> {
        let Some(net) = net.filter(|_| plan.mode == Mode::Internet) else {
            return Vec::new();
        };
        warn!("fetch: every named provider failed; looking on the LAN");
        let f = run_stage(Stage::Discover, Some(plan), || {
            discover_stage(plan, net, false)
        });
        policy::enter(Stage::Fetch);
        let providers = f.providers.clone();
        *found = Some(f);
        providers
    };
    let fetched = fetch::fetch_manifest(
        &client,
        providers,
        Some(&mut after_named),
        &binding,
        &trust.store,
        &state,
        &stage_budget(plan),
    )
    .map_err(|f| with_discovered(stage_failure(Stage::Fetch, f), found.as_ref()))?;
    let m = &fetched.verified.manifest;
    let mirror = &fetched.mirrors[fetched.mirror].url;
    let signed_by: Vec<String> = fetched
        .verified
        .signed_by
        .iter()
        .map(ToString::to_string)
        .collect();
    for t in &fetched.tried {
        warn!("tried {}", t.line());
    }
    let rotation = &fetched.rotation;
    if let Some(why) = &rotation.stopped {
        warn!("key rotation at {mirror}: {why}");
    }
    let summary = format!(
        "manifest version {} for {}/{} from {mirror}, signed by {} of {} trusted key(s) (generation {}), {} hand-off",
        m.version,
        m.channel,
        m.arch.as_str(),
        signed_by.len(),
        rotation.store.keys().len(),
        rotation.store.generation,
        m.handoff.as_str()
    );
    let fields = json!({
        "mirror": mirror,
        "version": m.version,
        "issued_at": m.issued_at,
        "expires_at": m.expires_at,
        "handoff": m.handoff.as_str(),
        "cmdline": m.cmdline,
        "signed_by": signed_by,
        "tried": fetched.tried,
        "rotation": rotation.to_json(),
        "floor": m.floor,
        "stored_floor": stored.fields(),
        "image_floor": trust.store.version_floor,
        "took": {
            "trust_and_floor_ms": floor_ms,
            "client_ms": client_ms,
            "manifest_ms": started.elapsed().as_millis() as u64 - floor_ms - client_ms,
            // Within the successful attempt, from its start: the rotation
            // chain and the manifest's bytes (asked for at once), and the
            // signature and policy checks.
            "attempt_rotation_ms": fetched.took.rotation_ms,
            "attempt_get_ms": fetched.took.manifest_ms,
            "attempt_verify_ms": fetched.took.verify_ms,
        },
    });
    Ok(done((client, fetched, stored), summary, fields))
}

fn verify_stage(
    plan: &BootPlan,
    client: &phase_fetch::Client,
    fetched: &fetch::Fetched,
    found: Option<&Found>,
) -> Result<Done<Vec<fetch::Streamed>>, Failure> {
    let mut last_shown = Instant::now();
    let mut progress = |p: fetch::Progress<'_>| {
        // Bytes arriving are progress.
        watchdog::pet_progress();
        // A console line per half second, updated in place.
        if p.done < p.total && last_shown.elapsed() < Duration::from_millis(500) {
            return;
        }
        last_shown = Instant::now();
        let mb = |b: u64| b as f64 / 1e6;
        let rate = mb(p.done) / p.elapsed.as_secs_f64().max(1e-3);
        // done ≤ total, and total > 0 for every artifact (the manifest checks it).
        let pct = p.done * 100 / p.total.max(1);
        let end = if p.done >= p.total { "\n" } else { "" };
        log::console_raw(&format!(
            "\r         phase: {:<7} {pct:>3}% {:>7.1} of {:.1} MB {rate:>6.1} MB/s{end}",
            p.name,
            mb(p.done),
            mb(p.total)
        ));
    };
    let (streamed, tried) = fetch::stream_artifacts(
        client,
        &fetched.mirrors,
        fetched.mirror,
        &fetched.verified,
        &stage_budget(plan),
        &mut progress,
    )
    .map_err(|f| with_discovered(stage_failure(Stage::Verify, f), found))?;
    for t in &tried {
        warn!("tried {}", t.line());
    }
    let total: u64 = streamed.iter().map(|a| a.sealed.len).sum();
    let summary = streamed
        .iter()
        .map(|a| {
            let ms = a.elapsed.as_millis().max(1);
            format!(
                "{} {} bytes sha256 ok ({:.1} MB/s)",
                a.name,
                a.sealed.len,
                a.sealed.len as f64 / 1e3 / ms as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let artifacts: Vec<Value> = streamed
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "size": a.sealed.len,
                "sha256": a.sha256,
                "from": a.from,
                "ms": a.elapsed.as_millis() as u64,
                "sealed": true,
            })
        })
        .collect();
    let fields = json!({ "artifacts": artifacts, "bytes": total, "tried": tried });
    Ok(done(streamed, format!("{summary}; sealed"), fields))
}

/// Hands off to what the manifest names: for `kexec`, the verified sealed
/// memfds and the signed command line go to [`kexec_handoff`]. Returns only
/// if there is nothing this build can hand off to, which the caller reports.
fn handoff(
    plan: &BootPlan,
    image: &ImageInfo,
    fetched: &fetch::Fetched,
    mut stored: floor::Stored,
    mut artifacts: Vec<fetch::Streamed>,
) {
    let manifest = &fetched.verified.manifest;
    policy::enter(Stage::Handoff);
    store_floor(manifest, &mut stored);
    let mut take = |name: &str| {
        artifacts
            .iter()
            .position(|a| a.name == name)
            .map(|i| artifacts.swap_remove(i).sealed.into_fd())
    };
    if manifest.handoff == phase_manifest::Handoff::SwitchRoot {
        let Some(fd) = take("root_image") else {
            // The manifest check makes a switch_root manifest name one.
            policy::enter(Stage::Handoff);
            policy::fail(Failure::new(
                Stage::Handoff,
                "the manifest names no root image",
            ))
        };
        let sha256 = manifest
            .artifacts
            .root_image
            .as_ref()
            .map(|a| a.sha256.clone())
            .unwrap_or_default();
        root_handoff(plan, root::Source::Image { fd, sha256 });
    }
    let Some(kernel) = take("kernel") else {
        // The manifest check makes a kexec manifest name a kernel.
        policy::enter(Stage::Handoff);
        policy::fail(Failure::new(Stage::Handoff, "the manifest names no kernel"))
    };
    let next = NextKernel {
        kernel,
        initrd: take("initrd"),
        dtb: take("dtb"),
        cmdline: manifest.cmdline.clone(),
        method: image.kexec_method.unwrap_or(KexecMethod::DEFAULT),
    };
    kexec_handoff(plan, next)
}

/// Before a hand-off under `manifest`: stores its signed floor if it is
/// above the stored one, and says so (a `floor` event). A store that cannot
/// be written does not stop the boot — the release is verified; only its
/// floor will not outlive this boot — but it is reported.
fn store_floor(manifest: &phase_manifest::Manifest, stored: &mut floor::Stored) {
    let Some(wanted) = manifest.floor else {
        return;
    };
    let was = stored.floor;
    let (outcome, error) = match stored.raise(wanted) {
        Ok(true) => {
            info!(
                "floor: raised from {was} to {wanted} (signed in manifest version {})",
                manifest.version
            );
            ("raised", None)
        }
        Ok(false) if matches!(stored.store, floor::Store::Nowhere { .. }) => {
            warn!("floor: {wanted} not stored: this machine has nowhere to keep it");
            ("nowhere", None)
        }
        Ok(false) => ("kept", None),
        Err(e) => {
            let text = error_chain(&e);
            warn!("floor: {wanted} not stored: {text}");
            ("failed", Some(text))
        }
    };
    let mut fields = stored.fields();
    if let Value::Object(map) = &mut fields {
        map.insert("outcome".into(), json!(outcome));
        map.insert("was".into(), json!(was));
        map.insert("wanted".into(), json!(wanted));
        map.insert("error".into(), json!(error));
    }
    event::emit("floor", fields);
}

fn early_stage(reaper: std::io::Result<()>) -> Result<Done<ImageInfo>, Failure> {
    let mounted = early::mount_basics().map_err(|e| Failure::new(Stage::Early, error_chain(&e)))?;
    early::console_stdio().map_err(|e| Failure::new(Stage::Early, error_chain(&e)))?;
    log::open();
    if let Err(e) = reaper {
        // Boot on: only zombie reaping and signal handling are lost.
        warn!("cannot start the supervisor thread: {e}");
    }
    let image = match std::fs::read(layout::IMAGE_INFO) {
        Ok(bytes) => ImageInfo::from_json(&bytes)
            .map_err(|e| Failure::new(Stage::Early, format!("{}: {e}", layout::IMAGE_INFO)))?,
        Err(e) => {
            warn!("{}: {e}; no clock floor, no shell", layout::IMAGE_INFO);
            ImageInfo {
                spec: "unknown".into(),
                build_time: 0,
                shell: false,
                kernel_release: None,
                kexec_method: None,
                state: None,
            }
        }
    };
    let floor = clock::apply_floor(image.build_time)
        .map_err(|e| Failure::new(Stage::Early, error_chain(&e)))?;
    let clock_note = match floor {
        Floor::Kept { .. } => "clock ok".to_owned(),
        Floor::Raised { was, now } => {
            format!("clock raised from {was} to the image build time {now}")
        }
    };
    let fields = json!({
        "mounted": mounted,
        "clock": match floor {
            Floor::Kept { now } => json!({ "kept": now }),
            Floor::Raised { was, now } => json!({ "raised_from": was, "to": now }),
        },
    });
    Ok(done(
        image,
        format!("mounted {}; {clock_note}", mounted.join(" ")),
        fields,
    ))
}

fn plan_stage(image: &ImageInfo) -> Result<Done<BootPlan>, Failure> {
    let config = std::fs::read(layout::CONFIG).unwrap_or_default();
    let line = std::fs::read("/proc/cmdline")
        .map_err(|e| Failure::new(Stage::Plan, format!("reading /proc/cmdline: {e}")))?;
    let mut params = cmdline::split(&config);
    params.extend(cmdline::split(&line));
    let parsed = plan::parse(&params, cfg!(feature = "test-hooks"));
    let plan = parsed.plan;
    // Honour the policy the user asked for even when other keys are malformed.
    policy::configure(plan.onfail, image.shell);
    let mut warnings: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    if plan.shell && !image.shell {
        warnings.push("rd.shell refused: this image was built without a shell".into());
    }
    for w in &warnings {
        warn!("{w}");
    }
    if !parsed.errors.is_empty() {
        let mut failure = Failure::new(
            Stage::Plan,
            parsed
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
        failure.tried.push(Tried::text(format!(
            "kernel command line: {}",
            String::from_utf8_lossy(&line).trim()
        )));
        return Err(failure);
    }
    policy::configure(
        plan.onfail,
        image.shell && (plan.shell || plan.onfail == plan::FailPolicy::Shell),
    );
    start_deadline(plan.timeout);
    let summary = format!(
        "{} provider(s), channel {}, mode {:?}, onfail {}, timeout {} s",
        plan.providers.len(),
        plan.channel,
        plan.mode,
        plan.onfail,
        plan.timeout.as_secs()
    );
    let fields = json!({ "plan": &plan, "warnings": warnings });
    Ok(done(plan, summary.to_lowercase(), fields))
}

/// Fails the boot if it is not handed off within `phase.timeout`, counted
/// from kernel start.
fn start_deadline(budget: Duration) {
    let spawned = std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || {
            let left = budget.saturating_sub(sys::clock_gettime_boottime());
            std::thread::sleep(left);
            if policy::deadline_disarmed() {
                return;
            }
            policy::fail(
                Failure::new(
                    policy::current_stage(),
                    format!(
                        "the boot did not finish within phase.timeout={} s",
                        budget.as_secs()
                    ),
                )
                .because("boot_timeout", json!({ "timeout_s": budget.as_secs() })),
            )
        });
    if let Err(e) = spawned {
        warn!("cannot start the boot deadline: {e}");
    }
}

/// What the modules stage does with the storage drivers its device scan
/// passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageChoice {
    /// No device asked for one.
    Nothing,
    /// Load them on their own thread while the network comes up: the boot
    /// will use a local disk.
    Background,
    /// Leave them out: a netboot ends in kexec, the next kernel probes the
    /// disks itself, and probing them here only takes CPU from the fetch. A
    /// rescue shell still gets them.
    Keep,
}

/// `state_disk`: the version floor lives on a state partition, which a
/// netboot reads before it trusts a manifest.
fn storage_choice(plan: &BootPlan, deferred: &[String], state_disk: bool) -> StorageChoice {
    if deferred.is_empty() {
        StorageChoice::Nothing
    } else if (plan.providers.is_empty() && plan.mode != Mode::Local)
        || plan.root.is_some()
        || state_disk
    {
        StorageChoice::Background
    } else {
        StorageChoice::Keep
    }
}

/// Where the storage drivers the modules stage passed over stand (see
/// [`modules_stage`]).
enum Storage {
    /// None were passed over, or they are done.
    Settled,
    /// A netboot left them out; a rescue shell loads them
    /// ([`storage_for_shell`]).
    Kept(StorageWork),
    /// Loading on their own thread; joined before any hand-off or shell.
    Loading(Background),
}

static STORAGE: Mutex<Storage> = Mutex::new(Storage::Settled);

/// Takes the storage drivers' state, leaving it settled.
fn take_storage() -> Storage {
    STORAGE
        .lock()
        .map(|mut s| std::mem::replace(&mut *s, Storage::Settled))
        .unwrap_or(Storage::Settled)
}

fn set_storage(state: Storage) {
    if let Ok(mut s) = STORAGE.lock() {
        *s = state;
    }
}

/// What the storage-driver work loaded, and how long it took.
type StorageResult = (Vec<modules::Loaded>, Duration);
type Background = JoinHandle<StorageResult>;
type StorageWork = Box<dyn FnOnce() -> StorageResult + Send>;

/// Tells how a module load went, unless the plan is quiet.
fn say_loaded(quiet: bool) -> impl FnMut(&modules::Loaded) {
    move |m| {
        if !quiet {
            info!(
                "module {} {} in {} ms ({})",
                m.name, m.outcome, m.ms, m.reason
            );
        }
    }
}

/// The rest of what the devices ask for — the storage drivers the modules
/// stage passed over, and whatever their devices reveal — as work to run
/// on a thread or later.
fn storage_work(
    plan: &BootPlan,
    index: &'static phase_initramfs::modindex::ModuleIndex,
    tried: BTreeSet<String>,
) -> StorageWork {
    let blacklist = plan.blacklist.clone();
    let quiet = plan.quiet;
    Box::new(move || {
        let start = Instant::now();
        let mut tried = tried;
        let mut say = say_loaded(quiet);
        let loaded = modules::load_for_devices(
            index,
            std::path::Path::new("/sys"),
            &blacklist,
            &|_| false,
            &mut tried,
            &mut |batch| modules::load(index, batch, &blacklist, &mut say),
            &mut |module, e| warn!("module {module} (for a device): {}", error_chain(e)),
        )
        .loaded;
        (loaded, start.elapsed())
    })
}

/// Loads the storage drivers on a thread of its own, so disk controllers
/// probe while the network comes up. Not used for a netboot, whose kexec
/// hand-off never touches local disks.
fn load_storage_drivers(work: StorageWork) {
    match std::thread::Builder::new()
        .name("storage-drivers".into())
        .spawn(work)
    {
        Ok(handle) => set_storage(Storage::Loading(handle)),
        Err(e) => {
            warn!("cannot start the storage-driver thread ({e}); storage drivers are not loaded")
        }
    }
}

/// Before a shell: loads the storage drivers a netboot passed over, or waits
/// for the background ones, so the shell sees the machine's disks.
fn storage_for_shell() {
    root::ahead::stop();
    match take_storage() {
        Storage::Kept(work) => {
            let (loaded, took) = work();
            report_storage(&loaded, took, "for the shell", None);
        }
        Storage::Loading(handle) => join_storage(handle),
        Storage::Settled => {}
    }
}

/// Logs and emits what a storage-driver load did.
fn report_storage(loaded: &[modules::Loaded], took: Duration, how: &str, waited: Option<Duration>) {
    let (count, names) = modules::newly_loaded(loaded);
    info!(
        "modules: {count} storage driver(s) loaded {how} in {} ms{}{names}",
        took.as_millis(),
        waited.map_or(String::new(), |w| format!(", waited {} ms", w.as_millis())),
    );
    event::emit(
        "modules",
        json!({ "background": waited.is_some(), "ms": took.as_millis() as u64, "loaded": loaded }),
    );
}

/// Before a hand-off: waits for the background storage drivers, so nothing
/// is still probing when the next kernel starts. Drivers a netboot kept
/// back stay unloaded.
fn finish_storage_drivers() {
    match take_storage() {
        Storage::Loading(handle) => join_storage(handle),
        other => set_storage(other),
    }
}

/// Joins the storage-driver thread, then logs and emits what it loaded.
fn join_storage(handle: Background) {
    let waited = Instant::now();
    match handle.join() {
        Ok((loaded, took)) => {
            report_storage(&loaded, took, "in the background", Some(waited.elapsed()))
        }
        Err(_) => warn!("the storage-driver thread panicked"),
    }
}

fn modules_stage(
    plan: &BootPlan,
    image: &ImageInfo,
) -> Result<Done<Vec<modules::Loaded>>, Failure> {
    let fail = |e: &dyn std::error::Error| Failure::new(Stage::Modules, error_chain(e));
    let started = Instant::now();
    let index = modules::index().map_err(|e| fail(&e))?;
    let index_ms = started.elapsed().as_millis() as u64;
    let mut wanted: Vec<(String, String)> = index
        .boot
        .iter()
        .map(|n| (n.clone(), "boot".to_owned()))
        .collect();
    wanted.extend(
        plan.drivers
            .iter()
            .map(|n| (n.clone(), "rd.driver.pre=".to_owned())),
    );
    let mut say = say_loaded(plan.quiet);
    let mut loaded =
        modules::load(index, &wanted, &plan.blacklist, &mut say).map_err(|e| fail(&e))?;
    // Then whatever the devices ask for, as udev would — storage last, on
    // its own thread, while the network comes up.
    let boot_ms = started.elapsed().as_millis() as u64 - index_ms;
    let mut tried = BTreeSet::new();
    let from_devices = modules::load_for_devices(
        index,
        std::path::Path::new("/sys"),
        &plan.blacklist,
        &modules::is_storage,
        &mut tried,
        &mut |batch| modules::load(index, batch, &plan.blacklist, &mut say),
        &mut |module, e| warn!("module {module} (for a device): {}", error_chain(e)),
    );
    let devices_ms = started.elapsed().as_millis() as u64 - index_ms - boot_ms;
    loaded.extend(from_devices.loaded);
    let deferred = from_devices.deferred;
    let mut skipped: Vec<&str> = Vec::new();
    match storage_choice(plan, &deferred, floor::needs_partition(image)) {
        StorageChoice::Nothing => {}
        StorageChoice::Background => load_storage_drivers(storage_work(plan, index, tried)),
        StorageChoice::Keep => {
            info!(
                "modules: storage driver(s) not loaded, a netboot hand-off does not use local disks: {}",
                deferred.join(" ")
            );
            skipped = deferred.iter().map(String::as_str).collect();
            set_storage(Storage::Kept(storage_work(plan, index, tried)));
        }
    }
    let port_started = Instant::now();
    let channel = event::open_channel(EVENT_PORT_BUDGET);
    let port_ms = port_started.elapsed().as_millis() as u64;
    let channel_note = match &channel {
        Channel::Port(p) => format!("events on {}", p.display()),
        Channel::NoDevice => "events on the console".to_owned(),
        Channel::NoPort => {
            warn!(
                "a virtio console exists but no {} port appeared",
                layout::EVENT_PORT_NAME
            );
            "events on the console".to_owned()
        }
    };
    let summary = format!("{} loaded; {channel_note}", loaded.len());
    // Where the stage's time went: reading the module index, the image's
    // boot modules, the device scan with what it loaded, and waiting for the
    // event port (test VMs only).
    let took = json!({ "index_ms": index_ms, "boot_ms": boot_ms, "devices_ms": devices_ms, "port_ms": port_ms });
    let fields = json!({ "loaded": &loaded, "storage_not_loaded": skipped, "took": took });
    Ok(done(loaded, summary, fields))
}

fn network_stage(plan: &BootPlan) -> Result<Done<Configured>, Failure> {
    let target = Target {
        resolv_conf: layout::RESOLV_CONF.into(),
        set_hostname: true,
    };
    let mut tried = Vec::new();
    let mut say = |line: &str| info!("network: {line}");
    let c = network::run(plan, &target, &mut say, &mut tried).map_err(|e| {
        let mut failure =
            Failure::new(Stage::Network, error_chain(&e)).because(e.kind(), e.detail());
        failure.tried = tried.into_iter().map(Tried::text).collect();
        failure
    })?;
    // Resolve the providers' host names now, through the DNS servers just
    // configured: a wrong DNS setup shows here, next to its cause, rather
    // than as a fetch failure. The fetch stage resolves again and decides.
    let mut resolved = serde_json::Map::new();
    for provider in &plan.providers {
        if provider.host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let value = match network::resolve(&provider.host, provider.port) {
            Ok(addrs) => {
                info!(
                    "network: {} resolves to {}",
                    provider.host,
                    addrs.join(", ")
                );
                json!(addrs)
            }
            Err(e) => {
                warn!("network: cannot resolve {}: {e}", provider.host);
                json!({ "error": e.to_string() })
            }
        };
        resolved.insert(provider.host.clone(), value);
    }
    let gateway = c
        .gateway
        .map_or("no gateway".to_owned(), |g| format!("via {g}"));
    let dns: Vec<String> = c.dns.iter().map(ToString::to_string).collect();
    let lease = c
        .lease_s
        .map(|s| format!(", lease {s} s"))
        .unwrap_or_default();
    let summary = format!(
        "{} {}/{} {gateway}, dns {}{lease}",
        c.interface,
        c.address,
        c.prefix_len,
        if dns.is_empty() {
            "none".to_owned()
        } else {
            dns.join(" ")
        },
    );
    let fields = json!({ "network": &c, "resolved": resolved });
    Ok(done(c, summary, fields))
}

fn ready(plan: &BootPlan, image: &ImageInfo, loaded: &[modules::Loaded], net: Option<&Configured>) {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    let machine = uname.machine().to_string_lossy().into_owned();
    info!("ready: kernel {release} on {machine}, image {}", image.spec);
    event::emit(
        "ready",
        json!({
            "kernel": release,
            "arch": machine,
            // 16384 on an M-series kernel: the scenarios check that the init
            // runs on a kernel with other than 4K pages.
            "page_size": sys::page_size(),
            "image": { "spec": image.spec, "build_time": image.build_time, "shell": image.shell },
            "modules": loaded.len(),
            "network": net,
            "plan": plan,
        }),
    );
}

/// The next kernel for [`kexec_handoff`]: sealed memfds holding bytes that
/// were verified, and the signed command line.
pub struct NextKernel {
    pub kernel: OwnedFd,
    pub initrd: Option<OwnedFd>,
    /// arm64 only; without one the running kernel's DTB is edited.
    pub dtb: Option<OwnedFd>,
    pub cmdline: String,
    /// The image's `[kexec] method`.
    pub method: KexecMethod,
}

/// The kexec hand-off stage: loads the next kernel, emits the `handoff`
/// stage event and a `kexec` event just before `reboot(2)`, and jumps.
/// Never returns: a failure to load or to jump takes the failure policy,
/// with nothing kexec'd.
pub fn kexec_handoff(plan: &BootPlan, next: NextKernel) -> ! {
    finish_storage_drivers();
    root::ahead::stop();
    let next_cmdline = next.cmdline.clone();
    let loaded = run_stage(Stage::Handoff, Some(plan), || {
        let loaded = kexec::load(
            next.kernel,
            next.initrd,
            next.dtb,
            &next.cmdline,
            next.method,
        )
        .map_err(|e| kexec_failure(&e))?;
        let summary = loaded.summary();
        let fields = json!({ "kexec": &loaded });
        Ok(done(loaded, summary, fields))
    });
    let armed = watchdog::arm_for_handoff(watchdog::expected_by(&next_cmdline));
    info!("handoff: starting the next kernel");
    event::emit(
        "kexec",
        json!({ "syscall": "reboot(LINUX_REBOOT_CMD_KEXEC)", "watchdog": armed }),
    );
    let error = kexec::execute(loaded);
    policy::fail(kexec_failure(&error))
}

/// A failed kexec as the policy reports it: the error's kind and values,
/// and each syscall tried, with why it was tried.
fn kexec_failure(e: &kexec::KexecError) -> Failure {
    let mut failure = Failure::new(Stage::Handoff, error_chain(e)).because(e.kind(), e.detail());
    failure.tried = e
        .attempts()
        .iter()
        .map(|a| Tried {
            at: None,
            what: Some(a.syscall.name().to_owned()),
            outcome: if a.kind == "kexec_refused" {
                "refused"
            } else {
                "error"
            },
            kind: a.kind.to_owned(),
            detail: json!({ "why": a.why, "errno": a.errno }),
            error: a.error.clone(),
        })
        .collect();
    failure
}

/// Test hook (`phase.test.kexec=DIR`): stands in for the fetch stage with
/// files packed into the image. They go into sealed memfds the way fetched
/// artifacts do, and the hand-off is the real one.
#[cfg(feature = "test-hooks")]
fn test_kexec(plan: &BootPlan, image: &ImageInfo, dir: &str) -> ! {
    use crate::sealed::Unsealed;
    let next = run_stage(Stage::Fetch, Some(plan), || {
        let fail =
            |e: String| Failure::new(Stage::Fetch, format!("test hook phase.test.kexec: {e}"));
        let dir = std::path::Path::new(dir);
        let sealed = |name: &str| -> Result<Option<(OwnedFd, u64)>, Failure> {
            let path = dir.join(name);
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != "kernel" => {
                    return Ok(None);
                }
                Err(e) => return Err(fail(format!("{}: {e}", path.display()))),
            };
            // Chunk by chunk into a memfd, as the fetch stage streams a body.
            let mut memfd = Unsealed::new(name).map_err(|e| fail(error_chain(&e)))?;
            let mut chunk = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut file, &mut chunk)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                if n == 0 {
                    break;
                }
                memfd
                    .write(&chunk[..n])
                    .map_err(|e| fail(error_chain(&e)))?;
            }
            let sealed = memfd.seal().map_err(|e| fail(error_chain(&e)))?;
            let len = sealed.len;
            Ok(Some((sealed.into_fd(), len)))
        };
        let Some((kernel, kernel_len)) = sealed("kernel")? else {
            return Err(fail("no kernel".into()));
        };
        let initrd = sealed("initrd")?;
        let dtb = sealed("dtb")?;
        let cmdline = std::fs::read_to_string(dir.join("cmdline"))
            .map_err(|e| fail(format!("{}/cmdline: {e}", dir.display())))?;
        let cmdline = cmdline.trim_end_matches('\n').to_owned();
        // DIR/method (file, load or auto) stands in for the image's
        // [kexec] method, so one test image can exercise each path.
        let method = match std::fs::read_to_string(dir.join("method")) {
            Ok(text) => serde_json::from_value(json!(text.trim()))
                .map_err(|e| fail(format!("{}/method: {e}", dir.display())))?,
            Err(_) => image.kexec_method.unwrap_or(KexecMethod::DEFAULT),
        };
        let fields = json!({
            "test_hook": dir,
            "kernel_text": kernel_text(),
            "method": method,
            "kernel": kernel_len,
            "initrd": initrd.as_ref().map(|(_, len)| len),
            "dtb": dtb.as_ref().map(|(_, len)| len),
        });
        let summary = format!(
            "test hook: {} into sealed memfds (kernel {kernel_len} bytes)",
            dir.display()
        );
        let next = NextKernel {
            kernel,
            initrd: initrd.map(|(fd, _)| fd),
            dtb: dtb.map(|(fd, _)| fd),
            cmdline,
            method,
        };
        Ok(done(next, summary, fields))
    });
    kexec_handoff(plan, next)
}

/// `phase.test.bench=dhcp:N`: time the DHCP clients, then power off.
#[cfg(feature = "test-hooks")]
fn bench_dhcp(net: Option<&Configured>, rounds: u32) -> ! {
    let result = match net {
        Some(c) => crate::bench::dhcp(&c.interface, rounds),
        None => Err("the network stage did not run (give rd.neednet=1)".into()),
    };
    match result {
        Ok(()) => policy::finish(RebootCommand::PowerOff, "power off"),
        Err(e) => policy::fail(Failure::new(Stage::Network, format!("DHCP benchmark: {e}"))),
    }
}

/// Where the running kernel's text starts (`_stext` in /proc/kallsyms, which
/// both arches list; arm64 lists no `_text`), which
/// KASLR moves by a seed-derived offset at every boot. Report mode and the
/// test hook name it, so a test can tell that two boots were randomised
/// differently. Symbols are sorted by address and `_stext` comes within the
/// first lines, so little is read.
fn kernel_text() -> Option<String> {
    use std::io::BufRead;
    let file = std::fs::File::open("/proc/kallsyms").ok()?;
    std::io::BufReader::new(file)
        .lines()
        .take(10_000)
        .map_while(Result::ok)
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (address, _kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            (name == "_stext").then(|| address.to_owned())
        })
}

/// Report mode: say what booted and power off. The second stage of a netboot
/// test uses this to prove which kernel and command line it came up with.
fn report() -> ! {
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let line = line.trim();
    info!("report: booted with: {line}");
    event::emit(
        "report",
        json!({
            "cmdline": line,
            "uptime_ms": sys::clock_gettime_boottime().as_millis() as u64,
            "kernel_text": kernel_text(),
            "watchdog": watchdog::status(),
            "efi": efi_report(),
        }),
    );
    policy::finish(RebootCommand::PowerOff, "power off")
}

/// What report mode says of EFI: `null` without an EFI boot, else whether
/// the kernel knows the runtime services table and how many variables
/// efivarfs lists, proof that GetNextVariableName works (`null` if it
/// could not be mounted). A kernel that lost its runtime services — a
/// kexec without the EFI setup_data, say — lists none.
fn efi_report() -> Value {
    const EFI: &str = "/sys/firmware/efi";
    const EFIVARS: &std::ffi::CStr = c"/sys/firmware/efi/efivars";
    if !std::path::Path::new(EFI).exists() {
        return Value::Null;
    }
    let mount = || {
        sys::mount(
            c"efivarfs",
            EFIVARS,
            c"efivarfs",
            sys::MountFlags::NOSUID | sys::MountFlags::NODEV | sys::MountFlags::NOEXEC,
            None,
        )
    };
    let mounted = |r: std::io::Result<()>| match r {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(e),
    };
    let mut result = mounted(mount());
    if result
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENODEV))
    {
        // A modular efivarfs (Debian's) loads by its fs- alias, as the
        // kernel's own request_module would.
        if let Ok(index) = modules::index() {
            let wanted: Vec<(String, String)> = index
                .modules_for_alias("fs-efivarfs")
                .first()
                .map(|m| ((*m).to_owned(), "report".to_owned()))
                .into_iter()
                .collect();
            if modules::load(index, &wanted, &[], &mut |_| {}).is_ok() {
                result = mounted(mount());
            }
        }
    }
    let listed = result.ok().and_then(|()| {
        std::fs::read_dir("/sys/firmware/efi/efivars")
            .ok()
            .map(|dir| dir.filter_map(Result::ok).count())
    });
    json!({
        "runtime": std::path::Path::new("/sys/firmware/efi/runtime").exists(),
        "efivars": listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ProviderUrl, RootSpec};

    #[test]
    fn storage_drivers_load_only_for_boots_that_use_a_disk() {
        let disks = ["ahci".to_owned(), "virtio_blk".to_owned()];
        let provider = ProviderUrl::parse("http://10.0.2.2:8080").unwrap();
        let netboot = BootPlan {
            providers: vec![provider.clone()],
            ..BootPlan::default()
        };
        let local_root = BootPlan {
            root: Some(RootSpec::Label("root".into())),
            ..BootPlan::default()
        };
        let netboot_over_a_local_root = BootPlan {
            providers: vec![provider],
            root: Some(RootSpec::Label("root".into())),
            ..BootPlan::default()
        };
        let cases = [
            (&netboot, &disks[..], StorageChoice::Keep),
            (&netboot, &[][..], StorageChoice::Nothing),
            (&local_root, &disks[..], StorageChoice::Background),
            (
                &netboot_over_a_local_root,
                &disks[..],
                StorageChoice::Background,
            ),
            // Nothing to boot from the network: whatever happens next (a
            // shell, a report) may want the disks.
            (&BootPlan::default(), &disks[..], StorageChoice::Background),
        ];
        // A netboot whose floor lives on a state partition needs the disks.
        assert_eq!(
            storage_choice(&netboot, &disks, true),
            StorageChoice::Background
        );
        for (plan, deferred, want) in cases {
            assert_eq!(
                storage_choice(plan, deferred, false),
                want,
                "{plan:?} {deferred:?}"
            );
        }
    }
}
