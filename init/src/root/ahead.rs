//! The root hand-off's own modules — `loop`, squashfs (a root image's
//! usual file system) and `overlay` — loaded ahead, on a thread of the
//! lowest priority, while the network comes up and the manifest is
//! fetched.
//!
//! Which hand-off a netboot ends in is the signed manifest's to say, and it
//! says so only after the network, the fetch and the signature; loading
//! these at the hand-off put ~100 ms of `finit_module` (under TCG) on the
//! root hand-off's path after everything else. Loaded ahead, they take
//! CPU the boot leaves idle while it waits on the carrier, DHCP and the
//! provider: the thread runs at nice 19, so the boot's own work is never
//! kept waiting for it. A kexec hand-off stops it (between two modules) and
//! the next kernel starts fresh; a root hand-off waits for it and then finds
//! its modules present.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::event;
use crate::modules::{self, Loaded};
use crate::plan::{BootPlan, Mode, RootSpec};
use crate::sys;

/// The modules, in the order a root image needs them. erofs (and the crc32c
/// modules it pulls in) is left to the hand-off: loading it ahead for every
/// squashfs root cost more idle time than the rarer erofs root saved.
const AHEAD: [Want; 3] = [
    Want::Module("loop"),
    Want::Fs("squashfs"),
    Want::Module("overlay"),
];

#[derive(Clone, Copy)]
enum Want {
    /// A module by name.
    Module(&'static str),
    /// A file system, by its `fs-<type>` alias, unless the kernel has it.
    Fs(&'static str),
}

struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<Loaded>, Duration)>,
}

static AHEAD_THREAD: Mutex<Option<Running>> = Mutex::new(None);

/// Whether this boot may end in a root hand-off that uses them: a netboot
/// (the manifest decides), a live medium, or `root=` under `rd.overlay`.
pub fn wanted(plan: &BootPlan) -> bool {
    !plan.providers.is_empty()
        || plan.mode == Mode::Local
        || matches!(plan.root, Some(RootSpec::Live(_)))
        || (plan.root.is_some() && plan.overlay.is_some())
}

/// Starts loading the modules ahead, if the image has any of them and the
/// kernel lacks them.
pub fn start(plan: &BootPlan) {
    let Ok(index) = modules::index() else {
        return;
    };
    let wanted: Vec<(String, String)> = AHEAD
        .iter()
        .filter_map(|w| match *w {
            Want::Module(name) => index
                .get(name)
                .is_some()
                .then(|| (name.to_owned(), "root hand-off, ahead".to_owned())),
            Want::Fs(fs) if super::kernel_has_fs(fs) => None,
            Want::Fs(fs) => {
                let alias = format!("fs-{fs}");
                index
                    .modules_for_alias(&alias)
                    .first()
                    .map(|m| ((*m).to_owned(), format!("{alias}, ahead")))
            }
        })
        .filter(|(name, _)| !index.is_builtin(name) && !plan.blacklist.contains(name))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let blacklist = plan.blacklist.clone();
    let spawned = std::thread::Builder::new()
        .name("root-modules".into())
        .spawn(move || {
            if let Err(e) = sys::lowest_priority() {
                warn!("modules ahead: cannot lower this thread's priority ({e})");
            }
            let started = Instant::now();
            let mut loaded = Vec::new();
            for one in &wanted {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                // A failure here is the hand-off's to report, when it loads
                // the module itself.
                if let Ok(l) =
                    modules::load(index, std::slice::from_ref(one), &blacklist, &mut |_| {})
                {
                    loaded.extend(l);
                }
            }
            (loaded, started.elapsed())
        });
    match spawned {
        Ok(handle) => {
            if let Ok(mut slot) = AHEAD_THREAD.lock() {
                *slot = Some(Running { stop, handle });
            }
        }
        Err(e) => warn!("modules ahead: cannot start a thread ({e}); the hand-off loads them"),
    }
}

/// Waits for the thread to finish what it is loading (`finish`: all of it,
/// for a root hand-off; else only the module in progress) and reports
/// what it loaded. A no-op when none runs.
fn join(finish: bool) {
    let Some(running) = AHEAD_THREAD.lock().ok().and_then(|mut s| s.take()) else {
        return;
    };
    if !finish {
        running.stop.store(true, Ordering::Release);
    }
    let waited = Instant::now();
    let Ok((loaded, took)) = running.handle.join() else {
        warn!("modules ahead: the thread panicked");
        return;
    };
    let (count, names) = modules::newly_loaded(&loaded);
    info!(
        "modules: {count} loaded ahead for a root hand-off in {} ms (waited {} ms){names}",
        took.as_millis(),
        waited.elapsed().as_millis(),
    );
    event::emit(
        "modules",
        json!({
            "ahead": true,
            "background": true,
            "ms": took.as_millis() as u64,
            "waited_ms": waited.elapsed().as_millis() as u64,
            "loaded": loaded,
        }),
    );
}

/// Before a root hand-off loads its modules: lets the thread finish.
pub fn finish() {
    join(true);
}

/// Before a kexec hand-off or a shell: stops the thread after the module it
/// is loading.
pub fn stop() {
    join(false);
}
