//! The published policy (`ArcSwap<Policy>`) and what is known of the version
//! of every list in force. Every update — a file change, an HTTP pull, a
//! push, a zone transfer — goes through [`Lists::apply`]: gate, compile aside,
//! swap. Queries in flight finish on the policy they loaded, new ones see
//! the new one. A list's rules live only in the published index; an update
//! of one list carries the others' rules over from it. Remote lists are
//! persisted in the state directory after every accepted version.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::delta::{build_delta, Edit, ListEdits};
use super::parse::ParseOutput;
use super::push::{Journal, PushEntry, PushMethod, SignaturePolicy};
use super::push_body::PushBody;
use super::{build_with, gate, state as files, ListState, LoadError, SourceMeta};
use crate::config::{ListConfig, SourceKind};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::rules::ListId;

/// How long the reaper waits for the last query to let go of a replaced
/// policy before dropping its own reference anyway (a hickory-path query
/// holds the policy it started with until its upstream answers: at most
/// the upstream timeout).
const RETIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A thread that frees replaced policies, then runs the after-build hook
/// ([`Lists::with_after_build`]). Without it the last query of the old
/// generation (usually a fast-path batch, whose guard the swap turned into
/// a reference) freed the old index on the serving thread: at 1M rules
/// ~55 MB in a few large blocks, returned to the OS there. The reaper waits
/// (polling every millisecond, up to [`RETIRE_WAIT`]) until it holds the
/// only reference, then drops it and runs the hook.
///
/// Owned by [`Lists`], started on its first publish that replaces a
/// policy; dropping it stops the thread and joins it.
struct Reaper {
    inbox: Option<std::sync::mpsc::Sender<Arc<Policy>>>,
    /// Set on drop: stop waiting for readers, drop what is queued, exit.
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    /// Starts the thread; `None` (logged) if it cannot be started.
    fn start(after_build: Option<fn()>) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Policy>>();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let spawned = std::thread::Builder::new().name("qalqan-reaper".into()).spawn(move || {
            for old in rx {
                let until = std::time::Instant::now() + RETIRE_WAIT;
                while Arc::strong_count(&old) > 1 && std::time::Instant::now() < until && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let t = std::time::Instant::now();
                let generation = old.generation;
                drop(old);
                if let Some(f) = after_build {
                    f();
                }
                tracing::debug!(generation, took_us = t.elapsed().as_micros(), "replaced policy freed (and after_build run)");
            }
        });
        match spawned {
            Ok(thread) => Some(Self { inbox: Some(tx), stopping, thread: Some(thread) }),
            Err(e) => {
                tracing::warn!(error = %e, "no reaper thread: replaced policies are freed by their last user");
                None
            }
        }
    }

    /// Queues `old`; gives it back if the thread is gone.
    fn send(&self, old: Arc<Policy>) -> Result<(), Arc<Policy>> {
        match &self.inbox {
            Some(tx) => tx.send(old).map_err(|e| e.0),
            None => Err(old),
        }
    }
}

impl Drop for Reaper {
    /// Stops the thread: what it still holds is dropped at once (a reader
    /// still holding a policy then frees it), the hook runs for each, and
    /// the thread is joined, so none outlives its [`Lists`].
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.inbox = None; // disconnects: the thread's loop ends once the queue is empty
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("the reaper thread panicked");
            }
        }
    }
}

/// A thread that writes files of the state directory behind the updates
/// that made them (a push list's `NAME.list`: a restart reads its journal,
/// so the copy need not be on disk before the client hears back). Queued
/// versions of one file are coalesced: only the newest is written. Owned by
/// [`Lists`], started on first use; dropping it writes what is queued and
/// joins the thread.
/// What a persisted copy holds: its bytes, or the way to render them (a
/// zone transfer's text, rendered only here, off the update).
#[derive(Clone)]
pub enum Body {
    Bytes(Arc<Vec<u8>>),
    Render(Render),
}

impl Body {
    fn bytes(&self) -> Arc<Vec<u8>> {
        match self {
            Body::Bytes(b) => Arc::clone(b),
            Body::Render(r) => r.render(),
        }
    }
}

/// Renders a version's bytes when something needs them (a full build, a
/// held version, the persisted copy): see [`Incoming::render`].
#[derive(Clone)]
pub struct Render(Arc<dyn Fn() -> Arc<Vec<u8>> + Send + Sync>);

impl Render {
    pub fn new(f: impl Fn() -> Vec<u8> + Send + Sync + 'static) -> Self {
        Self(Arc::new(move || Arc::new(f())))
    }

    /// A renderer whose bytes may be shared already (a PATCHed push
    /// list's version, made once: `push_body::Patched::bytes`), not copied.
    pub fn shared(f: impl Fn() -> Arc<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn render(&self) -> Arc<Vec<u8>> {
        (self.0)()
    }
}

impl std::fmt::Debug for Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Render")
    }
}

struct Behind {
    inbox: Option<std::sync::mpsc::Sender<(PathBuf, Body)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Behind {
    /// Starts the thread at nice value `nice` (`reload_nice`: rendering a
    /// zone's text is a build's worth of CPU, queries first).
    fn start(nice: i32) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, Body)>();
        let spawned = std::thread::Builder::new().name("qalqan-persist".into()).spawn(move || {
            if nice != 0 {
                if let Err(e) = rustix::process::setpriority_process(None, nice) {
                    tracing::debug!(error = %e, nice, "cannot lower the persist thread's priority");
                }
            }
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter());
                for (k, (path, bytes)) in jobs.iter().enumerate() {
                    if jobs.get(k + 1..).is_some_and(|later| later.iter().any(|(p, _)| p == path)) {
                        continue; // a newer version of this file is queued
                    }
                    if let Err(e) = files::write(path, &bytes.bytes()) {
                        tracing::warn!(path = %path.display(), error = %e, "could not persist the list copy");
                    }
                }
            }
        });
        match spawned {
            Ok(thread) => Some(Self { inbox: Some(tx), thread: Some(thread) }),
            Err(e) => {
                tracing::warn!(error = %e, "no persist thread: list copies are written on the update");
                None
            }
        }
    }

    /// Queues the write; gives the job back if the thread is gone.
    fn send(&self, job: (PathBuf, Body)) -> Result<(), (PathBuf, Body)> {
        match &self.inbox {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.inbox = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("the persist thread panicked");
            }
        }
    }
}

/// Runs a list build `f` on a thread of its own, named `qalqan-build`, at nice
/// value `nice` (Linux: per thread), and awaits its result.
///
/// Why: a large build (`compile/1m_rules` in `benches/hot_path.rs`) is a
/// long stretch of CPU. On the tokio blocking pool at the workers' priority
/// it shares a core with a query worker as an equal, and the scheduler hands
/// it whole slices, which the worst query latency of a reload shows; at
/// nice 19 the worker preempts the build at every wakeup, and the worst
/// latency stays that of rounds without a reload, for a somewhat longer
/// build (`benches/e2e/reload-latency.sh` measures both; its runs are in
/// `benches/RESULTS.md`, "Reload latency and build priority"). A thread of
/// its own because an unprivileged process cannot lower a thread's nice
/// value back, so a pool thread would stay low for whatever it runs next.
/// Cost: one thread start per reload. If the thread cannot be started the
/// build runs on the blocking pool as before.
pub async fn on_build_thread<T: Send + 'static>(
    nice: i32,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BuildThreadError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let f = Arc::new(Mutex::new(Some(f)));
    let g = Arc::clone(&f);
    let spawned = std::thread::Builder::new().name("qalqan-build".into()).spawn(move || {
        if nice != 0 {
            if let Err(e) = rustix::process::setpriority_process(None, nice) {
                tracing::debug!(error = %e, nice, "cannot lower the build thread's priority");
            }
        }
        let job = g.lock().ok().and_then(|mut j| j.take());
        if let Some(job) = job {
            let _ = tx.send(job());
        }
    });
    match spawned {
        Ok(_) => rx.await.map_err(|_| BuildThreadError::NoResult),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a build thread; building on the blocking pool");
            let job = f.lock().ok().and_then(|mut j| j.take()).ok_or(BuildThreadError::Lost)?;
            tokio::task::spawn_blocking(job).await.map_err(BuildThreadError::Pool)
        }
    }
}

/// Why [`on_build_thread`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum BuildThreadError {
    /// The build panicked on its thread.
    #[error("the build thread ended without a result")]
    NoResult,
    #[error("the build job was lost")]
    Lost,
    /// No thread could be started, and the blocking pool's task failed.
    #[error("the build task on the blocking pool failed")]
    Pool(#[source] tokio::task::JoinError),
}

/// One offered version of one list.
#[derive(Debug)]
pub struct Incoming {
    /// Which list.
    pub list: ListId,
    /// Shared, so that a push list's version in force and its persisted
    /// copy hold the same bytes, not copies.
    pub bytes: Arc<Vec<u8>>,
    pub meta: SourceMeta,
    /// Skip the shrink gate for this version (operator override).
    pub force: bool,
    /// Parse this instead of `bytes` (a zone transfer's records); `bytes`
    /// is still what is hashed, size-checked and persisted.
    pub records: Option<super::RecordParser>,
    /// The change from the version in force, when the channel knows it
    /// (a PATCH, an IXFR): then the update may go by delta (see
    /// `lists/delta.rs`); a file list's change is diffed here.
    pub edit: Option<Edit>,
    /// When the channel received the update (`qalqan_update_enforce_seconds`).
    pub received: std::time::Instant,
    /// Whether the guard (`[guard]`) looks at this version.
    pub guard: GuardMode,
    /// Lines of this version left out of the policy (the guard's
    /// `apply_rest`; empty: every line counts).
    pub drop: Vec<u32>,
    /// The version's identity when the channel knows it without the bytes
    /// (a zone transfer: a sum of record hashes kept up to date by each
    /// IXFR, see `zone_sync::RecordSum`); `None`: the hash of `bytes`.
    pub version: Option<String>,
    /// `bytes` not made yet: rendered when a full build, a held version or
    /// the persisted copy needs them (a zone's text, O(zone)); an update by
    /// delta never does, and its copy is rendered on the persist thread.
    pub render: Option<Render>,
    /// The length of `bytes` when known without making them (a PATCH over
    /// an indexed push list, `lists/push_body.rs`).
    pub len: Option<usize>,
}

impl Incoming {
    /// A version of `list` with no edit and no records, received now.
    pub fn new(list: ListId, bytes: Vec<u8>, meta: SourceMeta) -> Self {
        Self {
            list,
            bytes: Arc::new(bytes),
            meta,
            force: false,
            records: None,
            edit: None,
            received: std::time::Instant::now(),
            guard: GuardMode::Check,
            drop: Vec::new(),
            version: None,
            render: None,
            len: None,
        }
    }

    /// Makes `bytes`, if they are still to be rendered.
    pub fn materialize(&mut self) {
        if let Some(render) = self.render.take() {
            self.bytes = render.render();
        }
    }

    /// The version's identity: the channel's, else the hash of the bytes
    /// (rendered first if need be).
    pub fn version_id(&mut self) -> String {
        if let Some(v) = &self.version {
            return v.clone();
        }
        self.materialize();
        super::content_version(&self.bytes)
    }

    /// What to persist: the bytes, or their renderer.
    fn body(&self) -> Body {
        match &self.render {
            Some(r) => Body::Render(r.clone()),
            None => Body::Bytes(Arc::clone(&self.bytes)),
        }
    }
}

/// Whether the guard checks a version (it only ever checks remote lists:
/// HTTP, zone transfers, pushes; a file the operator edits is trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// A new version from its channel: checked.
    Check,
    /// The persisted copy read at start: it was accepted before.
    Skip,
    /// A held version an operator confirmed: published as if it passed.
    Release,
}

/// An update the guard holds (see `lists/guard.rs`), shown in `/v1/lists`
/// and released by [`Lists::confirm`].
#[derive(Debug, Clone)]
pub struct Held {
    /// Content version of the held update.
    pub version: String,
    /// The protected names it would newly block.
    pub names: Vec<String>,
    /// `apply_rest`: the lines left out of the version now in force, with
    /// the rule of each that blocked a protected name (`hold_all`: empty).
    pub rules: Vec<(u32, String)>,
    pub since: std::time::SystemTime,
    /// `hold_all`: the version in force stayed; `apply_rest`: the update
    /// is in force without `rules`.
    pub on_hit: crate::rules::GuardOnHit,
    bytes: Arc<Vec<u8>>,
    meta: SourceMeta,
    records: Option<super::RecordParser>,
    force: bool,
    /// A held push: the journal and body to install when confirmed.
    push: Option<PushHead>,
}

/// Why [`Lists::confirm`] released nothing.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("no list `{0}`")]
    NoList(String),
    #[error("nothing is held for list `{0}`: no update of it waits for confirmation")]
    NothingHeld(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What `NAME.guard.json` in the state directory keeps of an update
/// applied without some lines (`apply_rest`), so that a restart leaves
/// them out again (the persisted copy is the update as received).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct GuardFile {
    version: String,
    lines: Vec<u32>,
    names: Vec<String>,
    rules: Vec<(u32, String)>,
    since_unix: u64,
}

/// Most rebuilds of one `apply_rest` update (each leaves out the lines
/// that still block a protected name: a name may be covered by its own
/// rule, a parent's, a wildcard's and a keyword's); past it the update is held whole.
const MAX_GUARD_ROUNDS: usize = 8;
/// A list's config and where it is read from: its file, or its persisted
/// copy in the state directory (`None`: a remote list without one, or a
/// vacant catalog slot). Derefs to the config.
#[derive(Debug)]
pub struct ListSpec {
    pub config: ListConfig,
    pub path: Option<PathBuf>,
}

impl std::ops::Deref for ListSpec {
    type Target = ListConfig;
    fn deref(&self) -> &ListConfig {
        &self.config
    }
}

/// Default of `[server] delta_merge_share`.
pub const DEFAULT_DELTA_MERGE_SHARE: f64 = 0.02;
/// Default of `[server] delta_diff_max_lines`.
pub const DEFAULT_DIFF_MAX_LINES: usize = 2_000_000;

/// Lists and the policy built from them.
pub struct Lists {
    /// Each list and where it is read from: its file, or its persisted
    /// copy in the state directory (`None`: a remote list without one).
    /// Swapped only for a catalog's member slots (`lists/catalog.rs`), under
    /// the update lock; a reader holds the spec it loaded.
    configs: Vec<ArcSwap<ListSpec>>,
    /// `[log] audit`, set once by `serve` (`qalqan check` never writes it).
    audit_log: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
    /// Each list's `mode` in force: from the config, then [`Lists::set_modes`].
    modes: Mutex<Vec<crate::rules::ListMode>>,
    states: Mutex<Vec<Option<ListState>>>,
    /// Content version of the last rejected source of each list, and why:
    /// not retried, and refused again with that reason.
    failed: Mutex<Vec<Option<(String, String)>>>,
    /// Push lists: the pushes that make up the version in force, and its bytes (the base of PATCH).
    pushed: Mutex<Vec<Option<PushHead>>>,
    /// Signature rules for pushes, also applied to persisted pushes on load.
    signatures: SignaturePolicy,
    /// One-shot shrink overrides requested through the admin API.
    force_next: Mutex<Vec<bool>>,
    pub policy: Arc<ArcSwap<Policy>>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
    state_dir: Option<PathBuf>,
    /// One update at a time (held across gate + compile + publish).
    lock: Mutex<()>,
    /// Nice value of the threads that build reloads ([`on_build_thread`]).
    reload_nice: i32,
    /// Run after every build (see [`Lists::with_after_build`]).
    after_build: Option<fn()>,
    /// Frees replaced policies; started on first use (`None` inside: it
    /// could not be started, and replaced policies drop where they are).
    reaper: std::sync::OnceLock<Option<Reaper>>,
    /// Writes push lists' `NAME.list` behind the update ([`Behind`]).
    behind: std::sync::OnceLock<Option<Behind>>,
    /// Per list: its version in force as edits over its version in the
    /// published base index (`None`: the base has it as it is).
    edits: Mutex<Vec<Option<ListEdits>>>,
    /// Per file or HTTP list: the line codes of its version in force, to
    /// diff the next version against (`None`: not kept, a change is built in full).
    codes: Mutex<Vec<Option<Arc<Vec<u64>>>>>,
    /// Deltas are folded into a fresh base past this share of its rules.
    delta_merge_share: f64,
    /// File lists of at most this many lines keep their line codes.
    diff_max_lines: usize,
    /// `[guard]`: the protected names (`None`: no guard); swapped by
    /// [`Lists::set_guard`] (SIGHUP re-reads the file).
    guard: arc_swap::ArcSwapOption<super::guard::Guard>,
    /// Per list: the update the guard holds, if any.
    held: Mutex<Vec<Option<Held>>>,
    /// Per list: the lines the guard left out of the version in force.
    dropped: Mutex<Vec<Vec<u32>>>,
}

/// The version in force of a push list: its journal and its bytes.
#[derive(Debug, Clone)]
pub struct PushHead {
    pub journal: Journal,
    pub body: PushBody,
}

/// Why a push was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum PushRefused {
    #[error("version {version} is not newer than {current} (replay?)")]
    Stale { version: u64, current: u64 },
    #[error("the patch applies to version {base}, but version {current} is in force")]
    Base { base: u64, current: u64 },
    #[error("no base version to patch; PUT the full list")]
    NoBase,
    #[error("{0}")]
    Patch(String),
    #[error("the journal of PATCHes since the last PUT would exceed {limit} bytes; PUT the full list")]
    JournalFull { limit: u64 },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub failed: Vec<LoadError>,
    pub generation: Option<u64>,
}

impl Lists {
    pub fn new(configs: Vec<(ListConfig, Option<PathBuf>)>, metrics: Arc<Metrics>, state_dir: Option<PathBuf>) -> Self {
        let n = configs.len();
        let modes = configs.iter().map(|(c, _)| c.mode).collect();
        for (c, _) in &configs {
            if matches!(c.origin, SourceKind::Http(_) | SourceKind::Axfr { .. }) {
                metrics.list_refresh.with_label_values(&[&c.name]).set(i64::try_from(c.refresh.as_secs()).unwrap_or(i64::MAX));
            }
        }
        Self {
            configs: configs.into_iter().map(|(config, path)| ArcSwap::from_pointee(ListSpec { config, path })).collect(),
            audit_log: std::sync::OnceLock::new(),
            modes: Mutex::new(modes),
            states: Mutex::new(vec![None; n]),
            failed: Mutex::new(vec![None; n]),
            pushed: Mutex::new(vec![None; n]),
            signatures: SignaturePolicy::default(),
            force_next: Mutex::new(vec![false; n]),
            policy: Arc::new(ArcSwap::from_pointee(Policy::empty())),
            generation: AtomicU64::new(0),
            metrics,
            state_dir,
            lock: Mutex::new(()),
            reload_nice: 0,
            after_build: None,
            reaper: std::sync::OnceLock::new(),
            behind: std::sync::OnceLock::new(),
            edits: Mutex::new(vec![None; n]),
            codes: Mutex::new(vec![None; n]),
            delta_merge_share: DEFAULT_DELTA_MERGE_SHARE,
            diff_max_lines: DEFAULT_DIFF_MAX_LINES,
            guard: arc_swap::ArcSwapOption::empty(),
            held: Mutex::new(vec![None; n]),
            dropped: Mutex::new(vec![Vec::new(); n]),
        }
    }

    /// Sets the collateral-damage guard (`[guard]`): remote updates that
    /// would newly block one of its names are held (see `lists/guard.rs`).
    #[must_use]
    pub fn with_guard(self, guard: super::guard::Guard) -> Self {
        self.guard.store(Some(Arc::new(guard)));
        self
    }

    /// Replaces the protected names (SIGHUP re-reads `[guard] protected`);
    /// updates checked from now on use them.
    pub fn set_guard(&self, guard: super::guard::Guard) {
        self.metrics.guard_protected.set(i64::try_from(guard.names.len()).unwrap_or(i64::MAX));
        self.guard.store(Some(Arc::new(guard)));
    }

    /// The guard, if configured.
    pub fn guard(&self) -> Option<Arc<super::guard::Guard>> {
        self.guard.load_full()
    }

    fn has_guard(&self) -> bool {
        self.guard.load().is_some()
    }

    /// The update the guard holds for list `id`, if any.
    pub fn held(&self, id: ListId) -> Option<Held> {
        self.held.lock().ok().and_then(|h| h.get(id.index()).cloned().flatten())
    }

    /// The guard to check `inc` with: configured, a remote list, a new version.
    fn guard_for(&self, cfg: &ListConfig, inc: &Incoming) -> Option<Arc<super::guard::Guard>> {
        self.guard.load_full().filter(|_| inc.guard == GuardMode::Check && cfg.origin.is_remote())
    }

    /// Whether the version in force of list `i` has lines left out by the guard.
    fn has_dropped(&self, i: usize) -> bool {
        self.dropped.lock().ok().is_some_and(|d| d.get(i).is_some_and(|l| !l.is_empty()))
    }

    /// The held update of list `i` if its version is `version`.
    fn held_as(&self, i: usize, version: &str) -> Option<Held> {
        self.held.lock().ok().and_then(|h| h.get(i).cloned().flatten()).filter(|h| h.version == version)
    }

    /// Records a held update of `cfg`: kept for `/v1/lists` and confirm,
    /// counted, logged and written to the audit log. With `rules` (the
    /// lines left out) it is an `apply_rest` update in force without them;
    /// without, a `hold_all` one.
    fn hold(&self, cfg: &ListConfig, inc: &Incoming, version: &str, hits: &[super::guard::GuardHit], rules: Vec<(u32, String)>) -> Held {
        let id = inc.list;
        let on_hit = if rules.is_empty() { crate::rules::GuardOnHit::HoldAll } else { crate::rules::GuardOnHit::ApplyRest };
        let mut names: Vec<String> = Vec::new();
        for h in hits {
            if !names.contains(&h.name) {
                names.push(h.name.clone());
            }
        }
        let held = Held {
            version: version.to_owned(),
            names: names.clone(),
            rules: rules.clone(),
            since: std::time::SystemTime::now(),
            on_hit,
            bytes: Arc::clone(&inc.bytes),
            meta: inc.meta.clone(),
            records: inc.records.clone(),
            force: inc.force,
            push: None,
        };
        if let Ok(mut h) = self.held.lock() {
            if let Some(slot) = h.get_mut(id.index()) {
                *slot = Some(held.clone());
            }
        }
        self.metrics.guard_held.with_label_values(&[&cfg.name]).inc();
        self.metrics.guard_held_names.with_label_values(&[&cfg.name]).set(i64::try_from(names.len()).unwrap_or(i64::MAX));
        let action = match on_hit {
            crate::rules::GuardOnHit::HoldAll => "held: the version in force stays",
            crate::rules::GuardOnHit::ApplyRest => "applied without the lines that block protected names",
        };
        let dropped: Vec<String> = rules.iter().map(|(l, r)| format!("{}:{l}: {r}", cfg.source)).collect();
        tracing::warn!(
            target: "qalqan::audit",
            list = %cfg.name,
            version,
            who = %inc.meta.who,
            protected = %names.join(","),
            dropped = %dropped.join(", "),
            on_hit = on_hit.as_str(),
            "guard: update would newly block protected names; {action}; POST /v1/lists/{}/confirm releases it",
            cfg.name
        );
        self.audit_event(
            "guard held",
            serde_json::json!({"list": cfg.name, "version": version, "who": inc.meta.who, "names": names, "on_hit": on_hit.as_str(), "dropped": dropped}),
        );
        held
    }

    /// Sets what the guard left out of the version in force of list `i`
    /// (`held`: an `apply_rest` update, or `None`) and keeps it in
    /// `NAME.guard.json` for a restart.
    fn set_dropped(&self, cfg: &ListConfig, i: usize, lines: Vec<u32>, held: Option<Held>) {
        let path = self.state_dir.as_ref().map(|d| d.join(format!("{}.guard.json", cfg.name)));
        match (&held, path) {
            (Some(h), Some(path)) if !lines.is_empty() => {
                let since_unix = h.since.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let file = GuardFile { version: h.version.clone(), lines: lines.clone(), names: h.names.clone(), rules: h.rules.clone(), since_unix };
                let r = serde_json::to_vec(&file).map_err(std::io::Error::other).and_then(|b| files::write(&path, &b));
                if let Err(e) = r {
                    tracing::error!(list = %cfg.name, path = %path.display(), error = %e, "could not persist what the guard left out: a restart would enforce it");
                }
            }
            (_, Some(path)) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(list = %cfg.name, path = %path.display(), error = %e, "could not remove the guard file");
                    }
                }
            }
            _ => {}
        }
        if held.is_none() {
            self.metrics.guard_held_names.with_label_values(&[&cfg.name]).set(0);
        }
        if let Ok(mut d) = self.dropped.lock() {
            if let Some(slot) = d.get_mut(i) {
                *slot = lines;
            }
        }
        if let Ok(mut h) = self.held.lock() {
            if let Some(slot) = h.get_mut(i) {
                *slot = held;
            }
        }
    }

    /// The lines `NAME.guard.json` says to leave out of persisted version
    /// `version` of `cfg`, with the held record to restore (`None`: none, or
    /// for another version).
    fn read_guard_file(&self, cfg: &ListConfig, version: &str, bytes: &[u8], meta: &SourceMeta) -> Option<(Vec<u32>, Held)> {
        let path = self.state_dir.as_ref()?.join(format!("{}.guard.json", cfg.name));
        let file: GuardFile = serde_json::from_slice(&files::read(&path).ok()?).ok()?;
        if file.version != version {
            return None;
        }
        let held = Held {
            version: file.version,
            names: file.names,
            rules: file.rules,
            since: std::time::UNIX_EPOCH + std::time::Duration::from_secs(file.since_unix),
            on_hit: crate::rules::GuardOnHit::ApplyRest,
            bytes: Arc::new(bytes.to_vec()),
            meta: meta.clone(),
            records: None,
            force: false,
            push: None,
        };
        Some((file.lines, held))
    }

    /// Releases the update the guard holds for list `id`: it is published
    /// as if the guard had passed it (still gated: shrink, bad lines), and a
    /// held push becomes the push version in force. Written to the audit log.
    pub fn confirm(&self, id: ListId, who: &str) -> Result<ListState, ConfirmError> {
        let Some(cfg) = self.config(id) else { return Err(ConfirmError::NoList(String::new())) };
        let guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(held) = self.held(id) else { return Err(ConfirmError::NothingHeld(cfg.name.clone())) };
        let inc = Incoming {
            force: held.force,
            records: held.records.clone(),
            guard: GuardMode::Release,
            version: Some(held.version.clone()),
            ..Incoming::new(id, held.bytes.to_vec(), held.meta.clone())
        };
        let (mut report, replaced) = self.apply_locked(vec![inc]);
        let result = match report.failed.pop() {
            Some(e) => Err(ConfirmError::Load(e)),
            None => {
                if let Some(head) = held.push.clone() {
                    if let Ok(mut p) = self.pushed.lock() {
                        if let Some(slot) = p.get_mut(id.index()) {
                            *slot = Some(head.clone());
                        }
                    }
                    self.persist_journal(&cfg, &head.journal, &held.meta);
                }
                self.metrics.guard_confirmed.with_label_values(&[&cfg.name]).inc();
                tracing::info!(target: "qalqan::audit", list = %cfg.name, version = %held.version, names = %held.names.join(","), who, "guard: held update confirmed and published");
                self.audit_event(
                    "guard confirmed",
                    serde_json::json!({"list": cfg.name, "version": held.version, "names": held.names, "who": who, "on_hit": held.on_hit.as_str()}),
                );
                self.state(id).ok_or_else(|| ConfirmError::NothingHeld(cfg.name.clone()))
            }
        };
        drop(guard);
        self.finish_build(replaced);
        result
    }

    /// Async wrapper: [`Lists::confirm`] on a build thread ([`on_build_thread`]).
    pub async fn confirm_async(self: &Arc<Self>, id: ListId, who: String) -> Result<ListState, ConfirmError> {
        let me = Arc::clone(self);
        let list = self.config(id).map(|c| c.name.clone()).unwrap_or_default();
        on_build_thread(self.reload_nice, move || me.confirm(id, &who))
            .await
            .unwrap_or_else(|source| Err(ConfirmError::Load(LoadError::BuildThread { list, source })))
    }

    /// Sets when deltas are folded into a fresh base (`[server]
    /// delta_merge_share`) and up to what size file lists are diffed
    /// (`[server] delta_diff_max_lines`).
    #[must_use]
    pub fn with_delta(mut self, merge_share: f64, diff_max_lines: usize) -> Self {
        self.delta_merge_share = merge_share;
        self.diff_max_lines = diff_max_lines;
        self
    }

    /// Sets a function run after every policy build (published or
    /// rejected), once the build's temporaries and, for a published one,
    /// the policy it replaced are freed: on the updating thread, or on the
    /// reaper thread that frees replaced policies off the serving threads. The binary uses it to return the
    /// allocator's freed pages to the OS: a list build allocates and frees
    /// about as much again as the index it produces. Set it before the
    /// first load, which it then covers too.
    #[must_use]
    pub fn with_after_build(mut self, f: fn()) -> Self {
        self.after_build = Some(f);
        self
    }

    /// Sets the nice value at which reloads are built (see
    /// [`on_build_thread`]); the first load at start is not affected.
    #[must_use]
    /// The nice value of build threads (`[server] reload_nice`).
    pub fn reload_nice(&self) -> i32 {
        self.reload_nice
    }

    pub fn with_reload_nice(mut self, nice: i32) -> Self {
        self.reload_nice = nice;
        self
    }

    /// Sets the signature rules of pushes (`[admin] regulator_keys`,
    /// `require_signature`); persisted pushes are checked against them on load.
    #[must_use]
    pub fn with_signatures(mut self, signatures: SignaturePolicy) -> Self {
        self.signatures = signatures;
        self
    }

    /// The regulator keys (`[admin] regulator_keys`): pushes and required pull signatures.
    pub fn signature_keys(&self) -> Vec<[u8; 32]> {
        self.signatures.keys.clone()
    }

    /// The version in force of push list `id` (journal and bytes).
    pub fn pushed(&self, id: ListId) -> Option<PushHead> {
        self.pushed.lock().ok().and_then(|p| p.get(id.index()).cloned().flatten())
    }

    /// The metrics this instance counts in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every list's spec, in config order (member slots of catalogs last).
    pub fn configs(&self) -> Vec<Arc<ListSpec>> {
        self.configs.iter().map(ArcSwap::load_full).collect()
    }

    /// Every list's config as it is now (what a build compiles against).
    fn config_list(&self) -> Vec<ListConfig> {
        self.configs.iter().map(|c| c.load().config.clone()).collect()
    }

    /// Every list with its id, config and file (its own, or its persisted
    /// copy), in config order.
    pub fn each(&self) -> impl Iterator<Item = (ListId, Arc<ListSpec>)> + '_ {
        ListId::all(self.configs.len()).zip(&self.configs).map(|(id, c)| (id, c.load_full()))
    }

    /// The config of list `id`.
    pub fn config(&self, id: ListId) -> Option<Arc<ListSpec>> {
        self.configs.get(id.index()).map(ArcSwap::load_full)
    }

    /// The list called `name` (the operator's key: the admin API and the
    /// command line name lists, everything past them uses the id).
    pub fn id_of(&self, name: &str) -> Option<ListId> {
        self.each().find(|(_, c)| c.name == name).map(|(id, _)| id)
    }

    /// The version in force of every list (None where a list has none yet).
    pub fn snapshot(&self) -> Vec<Option<ListState>> {
        self.states.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The version in force of list `id`.
    pub fn state(&self, id: ListId) -> Option<ListState> {
        self.states.lock().ok().and_then(|s| s.get(id.index()).cloned().flatten())
    }

    /// Lets the next version of list `id` skip the shrink gate.
    pub fn force_next(&self, id: ListId) {
        if let Ok(mut f) = self.force_next.lock() {
            if let Some(slot) = f.get_mut(id.index()) {
                *slot = true;
            }
        }
    }

    /// Loads every file list and the persisted copy of every remote list.
    /// Any file list that fails is returned as an error (we never start
    /// serving with a configured list missing); remote lists without a
    /// persisted copy stay pending and are fetched by their source task.
    pub fn load_initial(&self) -> Result<(), Vec<LoadError>> {
        let mut batch = Vec::new();
        let mut errors = Vec::new();
        let mut heads = Vec::new();
        let mut restored = Vec::new();
        // a persisted copy was accepted before: not checked by the guard
        // again, but what `apply_rest` left out of it stays out
        let mut persisted = |i: ListId, cfg: &ListConfig, bytes: Arc<Vec<u8>>, meta: SourceMeta, version: Option<String>| {
            let version = version.or_else(|| matches!(cfg.origin, SourceKind::Axfr { .. }).then(|| super::zone_version_in_text(&bytes)).flatten());
            let mut inc = Incoming { guard: GuardMode::Skip, bytes, version, ..Incoming::new(i, Vec::new(), meta) };
            let version = inc.version_id();
            if let Some((lines, held)) = self.read_guard_file(cfg, &version, &inc.bytes, &inc.meta) {
                tracing::warn!(list = %cfg.name, lines = ?lines, "guard: leaving out the lines it held before (not confirmed yet)");
                inc.drop = lines.clone();
                restored.push((i, lines, held));
            }
            inc
        };
        for (i, cfg) in self.each() {
            if cfg.origin == SourceKind::Vacant {
                continue;
            }
            let path = cfg.path.as_deref();
            let Some(path) = path else {
                tracing::info!(list = %cfg.name, "no state directory, so no persisted copy; waiting for the source");
                continue;
            };
            if cfg.origin == SourceKind::Push {
                match self.load_pushed(&cfg, path) {
                    Ok(Some(head)) => {
                        let meta = SourceMeta {
                            push_version: head.journal.version(),
                            who: format!("persisted push {} (re-verified)", path.display()),
                            ..Default::default()
                        };
                        tracing::info!(list = %cfg.name, version = ?head.journal.version(), "serving the persisted push");
                        batch.push(persisted(i, &cfg, head.body.bytes(), meta, Some(head.journal.content_id())));
                        heads.push((i, head));
                    }
                    Ok(None) => tracing::info!(list = %cfg.name, "no persisted push; waiting for the first push"),
                    Err(reason) => tracing::error!(
                        list = %cfg.name,
                        dir = %path.parent().unwrap_or(path).display(),
                        %reason,
                        "persisted push REJECTED (tampered, torn or unsigned): not served; push the list again"
                    ),
                }
                continue;
            }
            let read = if cfg.origin.is_remote() { files::read(path) } else { std::fs::read(path) };
            match (&cfg.origin, read) {
                (SourceKind::File(_), Ok(bytes)) => {
                    batch.push(Incoming::new(i, bytes, SourceMeta { who: "file".into(), ..Default::default() }))
                }
                (SourceKind::File(_), Err(source)) => {
                    errors.push(LoadError::Source { list: cfg.name.clone(), path: path.display().to_string(), source })
                }
                (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => tracing::error!(
                    list = %cfg.name,
                    path = %path.display(),
                    error = %e,
                    "persisted copy REJECTED (a symlink or not a regular file?): not served; waiting for the source"
                ),
                (_, Ok(bytes)) => {
                    let mut meta = self.read_meta(&cfg).unwrap_or_default();
                    meta.who = format!("persisted copy {}", path.display());
                    tracing::warn!(list = %cfg.name, path = %path.display(), "serving the persisted copy until the source answers");
                    batch.push(persisted(i, &cfg, Arc::new(bytes), meta, None));
                }
                (_, Err(_)) => tracing::info!(list = %cfg.name, "no persisted copy; waiting for the source"),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let report = self.apply(batch);
        for (i, lines, held) in restored {
            if let Some(cfg) = self.config(i).filter(|c| report.changed.contains(&c.name)) {
                self.metrics.guard_held_names.with_label_values(&[&cfg.name]).set(i64::try_from(held.names.len()).unwrap_or(i64::MAX));
                self.set_dropped(&cfg, i.index(), lines, Some(held));
            }
        }
        for (i, mut head) in heads {
            let accepted = self.config(i).is_some_and(|c| report.changed.contains(&c.name));
            if !accepted {
                continue;
            }
            // the lines indexed for the next PATCH, after the list is in force
            head.body = head.body.indexed();
            if let Ok(mut p) = self.pushed.lock() {
                if let Some(slot) = p.get_mut(i.index()) {
                    *slot = Some(head);
                }
            }
        }
        if report.failed.is_empty() {
            Ok(())
        } else {
            Err(report.failed)
        }
    }

    /// Re-reads the file lists at `which` (None = every file list).
    pub fn reload_files(&self, which: Option<&[ListId]>) -> ReloadReport {
        let mut batch = Vec::new();
        let mut report = ReloadReport::default();
        for (i, cfg) in self.each() {
            let path = cfg.path.as_deref();
            let (SourceKind::File(_), Some(path)) = (&cfg.origin, path) else { continue };
            if which.is_some_and(|w| !w.contains(&i)) {
                continue;
            }
            match self.stream_file(&cfg, i, path) {
                Some(Some(inc)) => {
                    batch.push(inc);
                    continue;
                }
                Some(None) => {
                    self.confirm_unchanged(&cfg.name, &mut report.unchanged);
                    continue;
                }
                None => {}
            }
            match std::fs::read(path) {
                Ok(bytes) => batch.push(Incoming::new(i, bytes, SourceMeta { who: "file".into(), ..Default::default() })),
                Err(source) => {
                    let e = LoadError::Source { list: cfg.name.clone(), path: path.display().to_string(), source };
                    self.reject(&cfg, e, &mut report);
                }
            }
        }
        let mut r = self.apply(batch);
        r.failed.extend(report.failed);
        r.unchanged.extend(report.unchanged);
        r
    }

    /// Async wrapper: [`Lists::reload_files`] on a build thread ([`on_build_thread`]).
    pub async fn reload(self: &Arc<Self>, which: Option<Vec<ListId>>) -> ReloadReport {
        let me = Arc::clone(self);
        match on_build_thread(self.reload_nice, move || me.reload_files(which.as_deref())).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %super::ErrorChain(&e), "reload task failed; keeping the current policy");
                ReloadReport::default()
            }
        }
    }

    /// Offers one version of one list; returns the state now in force for it.
    pub fn offer(&self, inc: Incoming) -> Result<ListState, LoadError> {
        let i = inc.list;
        let mut report = self.apply(vec![inc]);
        if let Some(e) = report.failed.pop() {
            return Err(e);
        }
        self.state(i).ok_or_else(|| LoadError::Rejected {
            list: self.config(i).map(|c| c.name.clone()).unwrap_or_default(),
            reason: "compiling the policy failed".into(),
        })
    }

    /// Async wrapper: [`Lists::offer`] on a build thread ([`on_build_thread`]).
    pub async fn offer_async(self: &Arc<Self>, inc: Incoming) -> Result<ListState, LoadError> {
        let me = Arc::clone(self);
        let list = self.config(inc.list).map(|c| c.name.clone()).unwrap_or_default();
        on_build_thread(self.reload_nice, move || me.offer(inc))
            .await
            .unwrap_or_else(|source| Err(LoadError::BuildThread { list, source }))
    }

    /// [`Lists::offer_async`] for a version that is itself costly to put
    /// together (a zone transfer's records decoded and written out as the
    /// text to persist): `make` runs on the build thread too, not on the
    /// async thread that called.
    pub async fn offer_made(self: &Arc<Self>, make: impl FnOnce() -> Incoming + Send + 'static) -> Result<ListState, LoadError> {
        let me = Arc::clone(self);
        on_build_thread(self.reload_nice, move || me.offer(make()))
            .await
            .unwrap_or_else(|source| Err(LoadError::BuildThread { list: String::new(), source }))
    }

    /// Marks a source check that found nothing new (HTTP 304, same serial):
    /// the list is fresh, so its last-success time moves on.
    pub fn touch(&self, id: ListId) {
        if let Some(cfg) = self.config(id) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            self.metrics.list_last_success.with_label_values(&[&cfg.name]).set(i64::try_from(now).unwrap_or(i64::MAX));
            self.metrics.list_reloads.with_label_values(&[&cfg.name, "unchanged"]).inc();
            self.metrics.confirm_list(&cfg.name);
        }
    }

    /// Records a failed source check (download error, bad status, HTML…).
    pub fn source_failed(&self, e: &LoadError) {
        if let Some((_, cfg)) = self.each().find(|(_, c)| c.name == e.list()) {
            self.metrics.list_reloads.with_label_values(&[&cfg.name, "error"]).inc();
        }
        tracing::warn!(error = %e.chain(), "list source failed; keeping last good version");
    }

    /// Hands a replaced policy to the reaper, or runs the after-build hook
    /// here when nothing was replaced (or the reaper is gone, the policy then
    /// dropped here): only after the update lock is released, with the
    /// build's temporaries freed, so that the hook covers them too.
    fn finish_build(&self, replaced: Option<Arc<Policy>>) {
        if let Some(old) = replaced {
            let reaper = self.reaper.get_or_init(|| Reaper::start(self.after_build));
            match reaper.as_ref().map(|r| r.send(old)) {
                Some(Ok(())) => return,
                Some(Err(old)) => drop(old),
                None => {}
            }
        }
        if let Some(f) = self.after_build {
            f();
        }
    }

    fn reject(&self, cfg: &ListConfig, e: LoadError, report: &mut ReloadReport) {
        self.metrics.list_reloads.with_label_values(&[&cfg.name, "error"]).inc();
        tracing::warn!(list = %cfg.name, stage = e.stage(), error = %e.chain(), "list rejected; keeping last good version");
        report.failed.push(e);
    }

    /// Gates every offered version and publishes the accepted ones in one
    /// new policy. Each version is parsed straight into a new index that
    /// carries the other lists' rules over (no per-rule entry vectors), then
    /// gated; a rejected version's index is dropped unpublished. Remote lists
    /// are persisted after the publish.
    pub fn apply(&self, batch: Vec<Incoming>) -> ReloadReport {
        let guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (report, replaced) = self.apply_locked(batch);
        drop(guard);
        self.finish_build(replaced);
        report
    }

    /// [`Lists::apply`] with the update lock held by the caller: the
    /// report, and the policy a publish replaced. One version of one list
    /// whose change is known (or, for a file, can be diffed) goes by delta
    /// ([`Lists::try_delta`]); anything else is built in full, which folds
    /// every pending delta into the new base.
    fn apply_locked(&self, mut batch: Vec<Incoming>) -> (ReloadReport, Option<Arc<Policy>>) {
        // a vacant catalog slot takes no version (a member's last sync racing its removal)
        batch.retain(|inc| self.config(inc.list).is_some_and(|c| c.origin != SourceKind::Vacant));
        // a reread of every file list (SIGHUP) offers the unchanged ones too:
        // set them aside, so that one changed list can still go by delta
        let mut unchanged = Vec::new();
        if batch.len() > 1 {
            let states = self.snapshot();
            batch.retain_mut(|inc| {
                let same = states.get(inc.list.index()).and_then(Option::as_ref).is_some_and(|s| s.version == inc.version_id());
                if same {
                    if let Some(cfg) = self.config(inc.list) {
                        self.confirm_unchanged(&cfg.name, &mut unchanged);
                    }
                }
                !same
            });
        }
        let (mut report, replaced) = match batch.pop() {
            Some(inc) if batch.is_empty() => match self.try_delta(inc) {
                Ok(done) => done,
                Err(inc) => self.apply_full(vec![inc]),
            },
            Some(inc) => {
                batch.push(inc);
                self.apply_full(batch)
            }
            None => (ReloadReport::default(), None),
        };
        report.unchanged.extend(unchanged);
        (report, replaced)
    }

    /// A version of list `name` that is the one in force: nothing to build,
    /// but the source confirmed it (`qalqan_list_age_seconds` restarts).
    fn confirm_unchanged(&self, name: &str, unchanged: &mut Vec<String>) {
        unchanged.push(name.to_owned());
        self.metrics.confirm_list(name);
    }

    /// The parser of list `id`'s lines and the line codes of its version in
    /// force, which a change of it is diffed against (file and HTTP lists
    /// whose last full build kept them).
    fn line_codes(&self, cfg: &ListConfig, id: ListId) -> Option<(super::parse::LineFn, Arc<Vec<u64>>)> {
        if !matches!(cfg.origin, SourceKind::File(_) | SourceKind::Http(_)) {
            return None;
        }
        let line_fn = super::parse::line_parser(cfg.format)?;
        let codes = self.codes.lock().ok()?.get(id.index()).cloned().flatten()?;
        Some((line_fn, codes))
    }

    /// The line codes a file change is diffed against, and the edit, if
    /// list `id` keeps them and the change comes to at most `max_edits`
    /// lines deleted plus inserted (the delta's budget: a bigger change is
    /// built in full, and finding that out costs one counting pass).
    fn file_edit(&self, cfg: &ListConfig, id: ListId, prev: &ListState, bytes: &[u8], max_edits: usize) -> Option<Edit> {
        let (line_fn, codes) = self.line_codes(cfg, id)?;
        let t = std::time::Instant::now();
        let edit = super::delta::file_edit(line_fn, &cfg.source, prev.version.clone(), &codes, bytes, max_edits);
        tracing::debug!(list = %cfg.name, took_us = t.elapsed().as_micros() as u64, diffed = edit.is_some(), "file diffed against the version in force");
        edit
    }

    /// A file list's new version as a diff against the version in force,
    /// read through a small buffer instead of whole
    /// ([`super::delta::file_edit_streamed`]): `Some(Some(inc))` the update
    /// with its edit (its bytes read again only if a full build needs
    /// them), `Some(None)` the file is unchanged, `None` read it whole (no
    /// version in force or line codes, a list with keyword, regex or
    /// address rules, a change past the delta's budget, an I/O error).
    /// A reload of 1 % of a 1M-line file spent most of its time in the
    /// kernel zeroing the fresh pages of a 30 MB read; this touches 8 bytes
    /// a line (the new line codes).
    fn stream_file(&self, cfg: &ListConfig, id: ListId, path: &Path) -> Option<Option<Incoming>> {
        let prev = self.state(id)?;
        let (line_fn, codes) = self.line_codes(cfg, id)?;
        let budget = {
            let published = self.policy.load();
            if published.index.has_other_rules(id) {
                return None;
            }
            self.delta_budget(published.index.len())
        };
        let received = std::time::Instant::now();
        let r = super::delta::file_edit_streamed(line_fn, &cfg.source, path, prev.version.clone(), &codes, cfg.max_bytes, budget);
        tracing::debug!(list = %cfg.name, took_us = received.elapsed().as_micros() as u64, diffed = matches!(r, Ok(Some(_))), "file streamed and diffed against the version in force");
        let (edit, streamed) = r.ok()??;
        let Some(edit) = edit else { return Some(None) };
        let again = path.to_path_buf();
        Some(Some(Incoming {
            edit: Some(edit),
            version: Some(streamed.version),
            len: usize::try_from(streamed.len).ok(),
            // a full build after all (the deltas past their share): the file read whole
            render: Some(Render::new(move || std::fs::read(&again).unwrap_or_default())),
            received,
            ..Incoming::new(id, Vec::new(), SourceMeta { who: "file".into(), ..Default::default() })
        }))
    }

    /// Publishes `inc` as a delta over the published base, if it can go
    /// that way: the list in force is the version the edit starts from, no
    /// rule but name rules changes, and the deltas stay under
    /// `delta_merge_share` of the base. `Err` gives the version back for a
    /// full build. Cost: O(k) to apply the edit plus O(size of the deltas)
    /// to build the delta index; the base is shared, not copied.
    #[allow(clippy::result_large_err)] // the version handed back, moved, not copied
    fn try_delta(&self, mut inc: Incoming) -> Result<(ReloadReport, Option<Arc<Policy>>), Incoming> {
        let started = std::time::Instant::now();
        let id = inc.list;
        let i = id.index();
        let (Some(cfg), Some(prev)) = (self.config(id), self.state(id)) else { return Err(inc) };
        // a version still to be rendered is a zone transfer's, whose size the
        // transfer's own limits bound
        if inc.render.is_none() && inc.bytes.len() as u64 > cfg.max_bytes || inc.len.is_some_and(|l| l as u64 > cfg.max_bytes) {
            return Err(inc);
        }
        let version = inc.version_id();
        if prev.version == version {
            return Err(inc);
        }
        // lines left out by the guard, or a version it holds: a full build
        // looks at them again
        if self.has_guard() && (self.has_dropped(i) || inc.guard == GuardMode::Release || self.held_as(i, &version).is_some()) {
            return Err(inc);
        }
        let forced = inc.force || self.force_next.lock().ok().is_some_and(|f| f.get(i).copied().unwrap_or(false));
        let failed_before = self.failed.lock().ok().and_then(|f| f.get(i).cloned().flatten());
        if !forced && failed_before.is_some_and(|(v, _)| v == version) {
            return Err(inc);
        }
        let published = self.policy.load_full();
        if published.index.has_other_rules(id) {
            return Err(inc);
        }
        let edit = match inc.edit.take() {
            Some(e) => e,
            None => match self.file_edit(&cfg, id, &prev, &inc.bytes, self.delta_budget(published.index.len())) {
                Some(e) => e,
                None => return Err(inc),
            },
        };
        if edit.from_version != prev.version {
            return Err(inc);
        }
        let mut edits = self.edits.lock().map(|e| e.clone()).unwrap_or_default();
        let Some(slot) = edits.get_mut(i) else { return Err(inc) };
        let cur = slot.clone().unwrap_or_else(|| ListEdits::identity(prev.lines));
        if cur.lines() != edit.from_lines {
            return Err(inc);
        }
        let Some(next) = cur.apply(&edit.hunks).filter(|n| n.lines() == edit.to_lines()) else { return Err(inc) };
        *slot = Some(next);
        let size: usize = edits.iter().flatten().map(ListEdits::size).sum();
        if size as f64 > self.delta_merge_share * published.index.len().max(1) as f64 {
            tracing::debug!(list = %cfg.name, size, base = published.index.len(), "delta past delta_merge_share: folding into a fresh base");
            return Err(inc);
        }
        let configs: Vec<ListConfig> = self.config_list();
        let Ok(delta) = build_delta(&configs, &edits) else { return Err(inc) };
        let mut stats = ParseOutput::default();
        stats.rules = (prev.rules + edit.added_rules()).saturating_sub(edit.removed_rules);
        stats.lines = edit.to_lines();
        stats.bad_lines = (prev.bad_lines + edit.added_bad).saturating_sub(edit.removed_bad);
        stats.errors = prev.errors.clone();
        stats.unsupported = prev.unsupported.clone();
        let mut report = ReloadReport::default();
        if let Err(e) = gate(&cfg, Some(&prev), &stats, forced) {
            if let Ok(mut f) = self.failed.lock() {
                if let Some(slot) = f.get_mut(i) {
                    *slot = Some((version, e.chain().to_string()));
                }
            }
            self.reject(&cfg, e, &mut report);
            return Ok((report, None));
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let lists = self.infos_now(&configs);
        let has_shadow = crate::policy::any_shadow(&lists);
        let policy = Policy { index: Arc::clone(&published.index), delta: Some(Arc::new(delta)), lists, has_shadow, generation };
        if let Some(g) = self.guard_for(&cfg, &inc) {
            let hits = g.newly_blocked(&published, &policy);
            if !hits.is_empty() {
                if g.on_hit == crate::rules::GuardOnHit::ApplyRest {
                    return Err(inc); // a full build leaves the lines out
                }
                inc.materialize(); // kept for confirm
                let held = self.hold(&cfg, &inc, &version, &hits, Vec::new());
                report.failed.push(LoadError::Held { list: cfg.name.clone(), version, names: held.names });
                return Ok((report, None));
            }
        }
        if let Ok(mut f) = self.failed.lock() {
            if let Some(slot) = f.get_mut(i) {
                *slot = None;
            }
        }
        if forced {
            if let Ok(mut f) = self.force_next.lock() {
                if let Some(slot) = f.get_mut(i) {
                    *slot = false;
                }
            }
        }
        // not rendered yet: the size of the last version rendered stands
        let size = if inc.render.is_some() { inc.len.unwrap_or(prev.bytes) } else { inc.bytes.len() };
        let body = inc.body();
        let state = ListState::from_stats(&stats, prev.addresses, version, size, inc.meta);
        self.audit(&cfg, Some(&prev), &state, forced, "delta");
        let mut states = self.snapshot();
        if let Some(slot) = states.get_mut(i) {
            *slot = Some(state);
        }
        if let (Some(codes), Ok(mut c)) = (edit.codes, self.codes.lock()) {
            if let Some(slot) = c.get_mut(i) {
                *slot = Some(Arc::new(codes));
            }
        }
        if let Ok(mut e) = self.edits.lock() {
            *e = edits;
        }
        if self.has_guard() && cfg.origin.is_remote() {
            // a new version of the list: what was held for it is moot
            self.set_dropped(&cfg, i, Vec::new(), None);
        }
        let to_persist = if cfg.origin.is_remote() && (inc.render.is_some() || !inc.bytes.is_empty()) { vec![(id, body)] } else { Vec::new() };
        report.changed.push(cfg.name.clone());
        drop(published);
        let replaced = self.publish(policy, states, &mut report, to_persist, started, &[(id, inc.received)], "delta");
        Ok((report, Some(replaced)))
    }

    /// Most lines deleted plus inserted an update may bring and still go by
    /// delta over a base of `base_rules` rules: `delta_merge_share` of it,
    /// less what the deltas in force already take.
    fn delta_budget(&self, base_rules: usize) -> usize {
        let share = self.delta_merge_share * base_rules.max(1) as f64;
        let share = if share >= usize::MAX as f64 { usize::MAX } else { share as usize };
        let used: usize = self.edits.lock().map(|e| e.iter().flatten().map(ListEdits::size).sum()).unwrap_or(0);
        share.saturating_sub(used)
    }

    /// Gives catalog slot `id` a new config (a member zone taken into the
    /// slot, or a member whose `group` changed) and its persisted copy's
    /// path. A slot that holds rules is republished under a new generation
    /// so that its name, action and kind take effect at once; its rules
    /// are not rebuilt. Cost: one policy swap when it holds rules.
    pub fn assign(&self, id: ListId, config: ListConfig, path: Option<PathBuf>) {
        let _update = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(slot) = self.configs.get(id.index()) else { return };
        if let Ok(mut modes) = self.modes.lock() {
            if let Some(m) = modes.get_mut(id.index()) {
                *m = config.mode;
            }
        }
        if matches!(config.origin, SourceKind::Axfr { .. }) {
            let refresh = i64::try_from(config.refresh.as_secs()).unwrap_or(i64::MAX);
            self.metrics.list_refresh.with_label_values(&[&config.name]).set(refresh);
        }
        slot.store(Arc::new(ListSpec { config, path }));
        if self.state(id).is_none() {
            return;
        }
        self.republish_lists(self.infos_now(&self.config_list()));
    }

    /// Publishes the policy in force again with new per-list facts (`lists`:
    /// names, modes, actions) over the same index and delta, as the next
    /// generation; returns it. For changes no rule depends on (a catalog
    /// slot's config, a list's mode). Callers hold the update lock.
    fn republish_lists(&self, lists: Vec<crate::policy::ListInfo>) -> u64 {
        let current = self.policy.load_full();
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let policy = Policy {
            index: Arc::clone(&current.index),
            delta: current.delta.clone(),
            has_shadow: crate::policy::any_shadow(&lists),
            lists,
            generation,
        };
        self.policy.store(Arc::new(policy));
        self.generation.store(generation, Ordering::Relaxed);
        self.metrics.policy_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        generation
    }

    /// [`Lists::retire`] on a build thread ([`on_build_thread`]): it builds
    /// an index and waits for the update lock, neither on an async thread.
    pub async fn retire_async(self: &Arc<Self>, id: ListId, vacant: ListConfig) -> Option<u64> {
        let me = Arc::clone(self);
        on_build_thread(self.reload_nice, move || me.retire(id, vacant)).await.ok().flatten()
    }

    /// [`Lists::assign`] off the async threads (it may wait for the update lock).
    pub async fn assign_async(self: &Arc<Self>, id: ListId, config: ListConfig, path: Option<PathBuf>) {
        let me = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || me.assign(id, config, path)).await {
            tracing::error!(error = %e, "assigning a catalog member slot failed");
        }
    }

    /// Empties catalog slot `id` (its member zone left the catalog): a new
    /// policy without its rules is built and published (the other lists'
    /// rules carried over, as any full build does), its version in force is
    /// forgotten, its metrics series and persisted files are removed, and
    /// the slot takes `vacant` as its config. Returns the generation
    /// published (`None`: nothing was in force, or the build failed and
    /// the rules stay; logged).
    pub fn retire(&self, id: ListId, vacant: ListConfig) -> Option<u64> {
        let guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = id.index();
        let old = self.config(id)?;
        let started = std::time::Instant::now();
        let mut published_gen = None;
        let mut replaced = None;
        if self.state(id).is_some() {
            let mut configs = self.config_list();
            let published = self.policy.load_full();
            let built = super::build_with(&configs, &published.index, published.delta.as_deref(), id, b"", None, 0, &[]);
            drop(published);
            let index = match built {
                Ok(b) => b.index,
                Err(e) => {
                    tracing::error!(list = %old.name, error = %super::ErrorChain(&e), "could not build the policy without the member zone; its rules stay in force");
                    return None;
                }
            };
            if let Some(c) = configs.get_mut(i) {
                *c = vacant.clone();
            }
            let mut states = self.snapshot();
            if let Some(s) = states.get_mut(i) {
                *s = None;
            }
            // the new base holds every list as it is now: no edits remain
            if let Ok(mut e) = self.edits.lock() {
                e.iter_mut().for_each(|slot| *slot = None);
            }
            if let Ok(mut c) = self.codes.lock() {
                if let Some(slot) = c.get_mut(i) {
                    *slot = None;
                }
            }
            if let Ok(mut modes) = self.modes.lock() {
                if let Some(m) = modes.get_mut(i) {
                    *m = vacant.mode;
                }
            }
            if let Some(slot) = self.configs.get(i) {
                slot.store(Arc::new(ListSpec { config: vacant.clone(), path: None }));
            }
            let generation = self.generation.load(Ordering::Relaxed) + 1;
            let lists = self.infos_now(&configs);
            let policy = Policy { index: Arc::new(index), delta: None, has_shadow: crate::policy::any_shadow(&lists), lists, generation };
            let mut report = ReloadReport::default();
            replaced = Some(self.publish(policy, states, &mut report, Vec::new(), started, &[], "full"));
            published_gen = Some(generation);
        } else if let Some(slot) = self.configs.get(i) {
            slot.store(Arc::new(ListSpec { config: vacant.clone(), path: None }));
        }
        if let Ok(mut f) = self.failed.lock() {
            if let Some(slot) = f.get_mut(i) {
                *slot = None;
            }
        }
        if let Ok(mut f) = self.force_next.lock() {
            if let Some(slot) = f.get_mut(i) {
                *slot = false;
            }
        }
        self.metrics.forget_list(&old.name);
        if let Some(list) = &old.path {
            // NAME.list, NAME.records, NAME.meta.json
            for p in [list.clone(), list.with_extension("records"), list.with_extension("meta.json")] {
                if let Err(e) = std::fs::remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %p.display(), error = %e, "could not remove the persisted copy of a member zone that left its catalog");
                    }
                }
            }
        }
        tracing::info!(target: "qalqan::audit", list = %old.name, generation = ?published_gen, "catalog member removed: no longer enforced");
        self.audit_event("list removed", serde_json::json!({"list": old.name, "generation": published_gen}));
        drop(guard);
        self.finish_build(replaced);
        published_gen
    }

    /// What the policy knows of `configs`, with the modes in force.
    fn infos_now(&self, configs: &[ListConfig]) -> Vec<crate::policy::ListInfo> {
        let mut infos = super::infos(configs);
        if let Ok(modes) = self.modes.lock() {
            for (info, mode) in infos.iter_mut().zip(modes.iter()) {
                info.shadow = *mode == crate::rules::ListMode::Shadow;
            }
        }
        infos
    }

    /// Applies `mode =` of a re-read config (SIGHUP): lists named in
    /// `modes` whose mode differs are switched and the current rules
    /// republished under a new generation (no list is re-read or
    /// recompiled, so cached answers are re-decided). Returns the lists
    /// switched. A list promoted to enforce gets its address rules (which
    /// shadow lists do not compile) at its next full load.
    pub fn set_modes(&self, modes: &[(String, crate::rules::ListMode)]) -> Vec<String> {
        let _update = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = Vec::new();
        if let Ok(mut now) = self.modes.lock() {
            for (name, mode) in modes {
                let Some(slot) = self.id_of(name).and_then(|id| now.get_mut(id.index())) else { continue };
                if *slot != *mode {
                    *slot = *mode;
                    changed.push((name.clone(), *mode));
                }
            }
        }
        if changed.is_empty() {
            return Vec::new();
        }
        let configs: Vec<ListConfig> = self.config_list();
        let generation = self.republish_lists(self.infos_now(&configs));
        for (name, mode) in &changed {
            let mode = if *mode == crate::rules::ListMode::Shadow { "shadow" } else { "enforce" };
            tracing::info!(target: "qalqan::audit", list = %name, mode, generation, "list mode changed");
            self.audit_event("mode changed", serde_json::json!({"list": name, "mode": mode, "generation": generation}));
        }
        changed.into_iter().map(|(n, _)| n).collect()
    }

    /// Starts writing audit events to `log` (once; later calls are
    /// ignored), beginning with a `started` line naming each list's version
    /// in force.
    pub fn set_audit(&self, log: Arc<crate::audit::AuditLog>) {
        if self.audit_log.set(Arc::clone(&log)).is_err() {
            return;
        }
        let snapshot = self.snapshot();
        let lists: Vec<serde_json::Value> = self
            .configs
            .iter()
            .zip(snapshot.iter())
            .map(|(c, s)| {
                serde_json::json!({
                    "list": c.load().name,
                    "version": s.as_ref().map_or("-", |s| s.version.as_str()),
                    "rules": s.as_ref().map_or(0, |s| s.rules),
                })
            })
            .collect();
        log.append("started", serde_json::json!({ "lists": lists }));
    }

    /// Appends an event to the audit log, when one is configured (the
    /// `qalqan::audit` log target says the same in the process log).
    pub fn audit_event(&self, event: &str, fields: serde_json::Value) {
        if let Some(log) = self.audit_log.get() {
            log.append(event, fields);
        }
    }

    fn audit(&self, cfg: &ListConfig, prev: Option<&ListState>, state: &ListState, forced: bool, kind: &'static str) {
        self.audit_event(
            "list updated",
            serde_json::json!({
                "list": cfg.name,
                "who": state.meta.who.to_string(),
                "old_version": prev.map_or("-", |p| p.version.as_str()),
                "new_version": state.version,
                "old_rules": prev.map_or(0, |p| p.rules),
                "new_rules": state.rules,
                "bad_lines": state.bad_lines,
                "forced": forced,
                "kind": kind,
            }),
        );
        tracing::info!(
            target: "qalqan::audit",
            list = %cfg.name,
            who = %state.meta.who,
            old_version = prev.map(|p| p.version.as_str()).unwrap_or("-"),
            new_version = %state.version,
            old_rules = prev.map(|p| p.rules).unwrap_or(0),
            new_rules = state.rules,
            bad_lines = state.bad_lines,
            forced,
            kind,
            "list updated"
        );
    }

    /// Swaps in `policy` and makes the new versions visible: states,
    /// metrics, persisted copies. Returns the policy it replaced.
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        policy: Policy,
        states: Vec<Option<ListState>>,
        report: &mut ReloadReport,
        to_persist: Vec<(ListId, Body)>,
        started: std::time::Instant,
        received: &[(ListId, std::time::Instant)],
        kind: &'static str,
    ) -> Arc<Policy> {
        let generation = policy.generation;
        let rules = policy.index.len() + policy.delta.as_ref().map_or(0, |d| d.added.len());
        let delta_size = policy.delta.as_ref().map_or(0, |d| d.size);
        let mut states = states;
        let activated = std::time::SystemTime::now();
        for (id, _) in received {
            if let Some(Some(s)) = states.get_mut(id.index()) {
                s.loaded_at = activated;
            }
        }
        let replaced = self.policy.swap(Arc::new(policy));
        // enforced from here on; what follows (metrics, persisting) is not waited for by queries
        let enforce_us = received.iter().map(|(_, at)| at.elapsed().as_micros() as u64).max().unwrap_or(0);
        self.metrics.policy_build.observe(started.elapsed().as_secs_f64());
        self.generation.store(generation, Ordering::Relaxed);
        for (id, at) in received {
            if let Some(cfg) = self.config(*id) {
                self.metrics.update_enforce.with_label_values(&[&cfg.name]).observe(at.elapsed().as_secs_f64());
                self.metrics.list_updates.with_label_values(&[&cfg.name, kind]).inc();
                self.metrics.confirm_list(&cfg.name);
            }
        }
        for ((_, cfg), state) in self.each().zip(&states) {
            let Some(state) = state else { continue };
            let m = &self.metrics;
            m.list_rules.with_label_values(&[&cfg.name]).set(i64::try_from(state.rules).unwrap_or(i64::MAX));
            let ts = state.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            m.list_last_success.with_label_values(&[&cfg.name]).set(i64::try_from(ts).unwrap_or(i64::MAX));
            m.set_list_version(&cfg.name, &state.version);
            if let Some(serial) = state.meta.serial {
                m.set_list_serial(&cfg.name, serial);
            }
        }
        for name in &report.changed {
            self.metrics.list_reloads.with_label_values(&[name, "success"]).inc();
        }
        self.metrics.policy_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        for (id, body) in to_persist {
            if let (Some(cfg), Some(Some(state))) = (self.config(id), states.get(id.index())) {
                match body {
                    // the journal is what a restart reads: `NAME.list` (for
                    // `qalqan check`/`export` and the block page's rows) is
                    // written behind, off the update
                    Body::Bytes(bytes) if cfg.origin == SourceKind::Push => self.persist_behind(&cfg, Body::Bytes(bytes)),
                    // a PATCH's bytes, made behind (the journal holds the PATCH)
                    Body::Render(r) if cfg.origin == SourceKind::Push => self.persist_behind(&cfg, Body::Render(r)),
                    Body::Bytes(bytes) => self.persist(&cfg, &bytes, &state.meta),
                    // a zone's text, rendered behind; it names its own
                    // version (its last line), so a crash between the two
                    // writes leaves a copy whose version is still right
                    Body::Render(r) => {
                        if let Err(e) = self.persist_meta(&cfg, &state.meta) {
                            tracing::warn!(list = %cfg.name, error = %e, "could not persist the list's metadata");
                        }
                        self.persist_behind(&cfg, Body::Render(r));
                    }
                }
            }
        }
        if let Ok(mut cur) = self.states.lock() {
            *cur = states;
        }
        tracing::info!(
            generation,
            rules,
            kind,
            delta_size,
            enforce_us,
            took_ms = started.elapsed().as_millis() as u64,
            took_us = started.elapsed().as_micros() as u64,
            "policy published"
        );
        report.generation = Some(generation);
        replaced
    }

    /// Builds every accepted version in full (see [`Lists::apply`]).
    fn apply_full(&self, batch: Vec<Incoming>) -> (ReloadReport, Option<Arc<Policy>>) {
        let mut report = ReloadReport::default();
        let mut states = self.snapshot();
        let mut to_persist: Vec<(ListId, Body)> = Vec::new();
        let configs: Vec<ListConfig> = self.config_list();
        let published = self.policy.load_full();
        let mut working: Option<Arc<crate::policy::Index>> = None;
        let mut new_codes: Vec<(usize, Option<Vec<u64>>)> = Vec::new();
        let mut received: Vec<(ListId, std::time::Instant)> = Vec::new();
        let started = std::time::Instant::now();
        let infos = self.infos_now(&configs);
        let has_shadow = crate::policy::any_shadow(&infos);
        // the policy over `index`, to compare with the guard
        let policy_over = |index: &Arc<crate::policy::Index>| Policy {
            index: Arc::clone(index),
            delta: None,
            lists: infos.clone(),
            generation: 0,
            has_shadow,
        };
        for mut inc in batch {
            let id = inc.list;
            let (Some(cfg), i) = (self.config(id), id.index()) else { continue };
            let prev = states.get(i).and_then(Clone::clone);
            // a full build parses (and persists) the bytes: render them now
            inc.materialize();
            if inc.bytes.len() as u64 > cfg.max_bytes {
                let e = LoadError::TooLarge { list: cfg.name.clone(), what: "source bytes", size: inc.bytes.len() as u64, limit: cfg.max_bytes };
                self.reject(&cfg, e, &mut report);
                continue;
            }
            let version = inc.version_id();
            let failed_before = self.failed.lock().ok().and_then(|f| f.get(i).cloned().flatten());
            let forced = inc.force
                || self.force_next.lock().ok().is_some_and(|f| f.get(i).copied().unwrap_or(false));
            let same_drops = self.dropped.lock().ok().is_some_and(|d| d.get(i).is_none_or(|l| *l == inc.drop));
            if prev.as_ref().is_some_and(|p| p.version == version) && same_drops {
                self.confirm_unchanged(&cfg.name, &mut report.unchanged);
                continue;
            }
            let guard = self.guard_for(&cfg, &inc);
            if let (Some(_), Some(held)) = (guard.as_ref(), self.held_as(i, &version)) {
                // the held version again (the next pull, a transfer retried):
                // nothing new to build, count or log
                match held.on_hit {
                    crate::rules::GuardOnHit::HoldAll => {
                        report.failed.push(LoadError::Held { list: cfg.name.clone(), version, names: held.names })
                    }
                    crate::rules::GuardOnHit::ApplyRest => self.confirm_unchanged(&cfg.name, &mut report.unchanged),
                }
                continue;
            }
            if let (false, Some((_, reason))) = (forced, failed_before.as_ref().filter(|(v, _)| *v == version)) {
                // refused again (not rebuilt, not counted twice): a caller
                // offering it must hear that it was not accepted
                let reason = format!("same content as the version rejected before ({reason})");
                report.failed.push(LoadError::Rejected { list: cfg.name.clone(), reason });
                continue;
            }
            let codes_up_to = if matches!(cfg.origin, SourceKind::File(_) | SourceKind::Http(_)) { self.diff_max_lines } else { 0 };
            let mut drop_lines = inc.drop.clone();
            let mut left_out: Vec<(u32, String)> = Vec::new();
            let mut guard_hits: Vec<super::guard::GuardHit> = Vec::new();
            let mut rounds = 0;
            let mut records = inc.records.as_ref();
            // built, gated and (for a guarded version) checked; with
            // `apply_rest` rebuilt without the lines that block a protected name
            let outcome = loop {
                let (base, delta) = match working.as_ref() {
                    Some(w) => (&**w, None),
                    None => (&*published.index, published.delta.as_deref()),
                };
                let result = build_with(&configs, base, delta, id, &inc.bytes, records, codes_up_to, &drop_lines)
                    .map_err(|source| LoadError::Compile { list: cfg.name.clone(), source })
                    .and_then(|built| gate(&cfg, prev.as_ref(), &built.stats, forced).map(|()| built));
                let built = match result {
                    Ok(b) => b,
                    Err(e) => break Err(Some(e)),
                };
                let super::Built { index, stats, addresses, codes } = built;
                let index = Arc::new(index);
                let Some(g) = guard.as_deref() else { break Ok((index, stats, addresses, codes)) };
                let candidate = policy_over(&index);
                let hits = match working.as_ref() {
                    Some(w) => g.newly_blocked(&policy_over(w), &candidate),
                    None => g.newly_blocked(&published, &candidate),
                };
                if hits.is_empty() {
                    break Ok((index, stats, addresses, codes));
                }
                let mut more = false;
                if g.on_hit == crate::rules::GuardOnHit::ApplyRest && rounds < MAX_GUARD_ROUNDS && records.is_some() {
                    // a zone transfer's rules are numbered by record: left-out
                    // lines must be lines of the zone text that is persisted
                    // (and read back at a restart), so build from the text
                    records = None;
                    more = true;
                } else if g.on_hit == crate::rules::GuardOnHit::ApplyRest && rounds < MAX_GUARD_ROUNDS {
                    for h in &hits {
                        let line = candidate.rule_line(h.hit.rule);
                        // a rule of another list (an allow rule removed) or
                        // without a line cannot be left out: the update is held whole
                        if h.hit.list != id || line == 0 {
                            more = false;
                            break;
                        }
                        if !drop_lines.contains(&line) {
                            drop_lines.push(line);
                            left_out.push((line, candidate.rule_text(h.hit.rule).to_owned()));
                            more = true;
                        }
                    }
                }
                for h in hits {
                    if !guard_hits.iter().any(|g| g.name == h.name) {
                        guard_hits.push(h);
                    }
                }
                if !more {
                    break Err(None);
                }
                rounds += 1;
            };
            if outcome.is_ok() || matches!(outcome, Err(Some(_))) {
                if let Ok(mut f) = self.failed.lock() {
                    if let Some(slot) = f.get_mut(i) {
                        *slot = outcome.as_ref().err().and_then(Option::as_ref).map(|e| (version.clone(), e.chain().to_string()));
                    }
                }
            }
            match outcome {
                Ok((index, stats, addrs, codes)) => {
                    if forced {
                        if let Ok(mut f) = self.force_next.lock() {
                            if let Some(slot) = f.get_mut(i) {
                                *slot = false;
                            }
                        }
                    }
                    // `apply_rest` left lines out: held until confirmed
                    let rest = (!left_out.is_empty()).then(|| self.hold(&cfg, &inc, &version, &guard_hits, left_out.clone()));
                    if (self.has_guard() && cfg.origin.is_remote() && inc.guard != GuardMode::Skip) || !drop_lines.is_empty() {
                        self.set_dropped(&cfg, i, drop_lines.clone(), rest);
                    }
                    let state = ListState::from_stats(&stats, addrs, version, inc.bytes.len(), inc.meta);
                    self.audit(&cfg, prev.as_ref(), &state, forced, "full");
                    new_codes.push((i, codes));
                    received.push((id, inc.received));
                    for e in state.errors.iter() {
                        tracing::warn!(list = %cfg.name, "skipped line: {e}");
                    }
                    if let Some(slot) = states.get_mut(i) {
                        *slot = Some(state);
                    }
                    if cfg.origin.is_remote() && !inc.bytes.is_empty() {
                        to_persist.push((id, Body::Bytes(inc.bytes)));
                    }
                    working = Some(index);
                    report.changed.push(cfg.name.clone());
                }
                Err(Some(e)) => self.reject(&cfg, e, &mut report),
                Err(None) => {
                    let held = self.hold(&cfg, &inc, &version, &guard_hits, Vec::new());
                    report.failed.push(LoadError::Held { list: cfg.name.clone(), version, names: held.names });
                }
            }
        }
        drop(published);
        let Some(index) = working else { return (report, None) };
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let policy = Policy { index, delta: None, has_shadow, lists: infos, generation };
        // the new base holds every list as it is now: no edits remain
        if let Ok(mut e) = self.edits.lock() {
            e.iter_mut().for_each(|slot| *slot = None);
        }
        if let Ok(mut c) = self.codes.lock() {
            for (i, codes) in new_codes {
                if let Some(slot) = c.get_mut(i) {
                    *slot = codes.map(Arc::new);
                }
            }
        }
        let replaced = self.publish(policy, states, &mut report, to_persist, started, &received, "full");
        (report, Some(replaced))
    }

    fn meta_path(&self, cfg: &ListConfig) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|d| d.join(format!("{}.meta.json", cfg.name)))
    }

    fn read_meta(&self, cfg: &ListConfig) -> Option<SourceMeta> {
        let bytes = files::read(&self.meta_path(cfg)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the accepted bytes and their metadata to the state directory
    /// (see [`files::write`]: 0600, no symlink followed, fsynced, renamed).
    fn persist(&self, cfg: &ListConfig, bytes: &[u8], meta: &SourceMeta) {
        let Some(dir) = &self.state_dir else { return };
        let list_path = dir.join(format!("{}.list", cfg.name));
        let r = files::write(&list_path, bytes).and_then(|()| self.persist_meta(cfg, meta));
        if let Err(e) = r {
            tracing::warn!(list = %cfg.name, dir = %dir.display(), error = %e, "could not persist the list");
        }
    }

    /// Writes `NAME.list` of `cfg` on the [`Behind`] thread (here, if it
    /// cannot be started).
    fn persist_behind(&self, cfg: &ListConfig, bytes: Body) {
        let Some(dir) = &self.state_dir else { return };
        let job = (dir.join(format!("{}.list", cfg.name)), bytes);
        let behind = self.behind.get_or_init(|| Behind::start(self.reload_nice));
        let sent = match behind {
            Some(b) => b.send(job),
            None => Err(job),
        };
        let Err((path, bytes)) = sent else { return };
        if let Err(e) = files::write(&path, &bytes.bytes()) {
            tracing::warn!(list = %cfg.name, path = %path.display(), error = %e, "could not persist the list copy");
        }
    }

    fn persist_meta(&self, cfg: &ListConfig, meta: &SourceMeta) -> std::io::Result<()> {
        match self.meta_path(cfg) {
            Some(mp) => files::write(&mp, &serde_json::to_vec_pretty(meta).unwrap_or_default()),
            None => Ok(()),
        }
    }

    fn journal_path(&self, cfg: &ListConfig) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|d| d.join(format!("{}.push.json", cfg.name)))
    }

    /// Reads back the persisted push of `cfg` and checks it again: the
    /// journal must parse, open with a PUT, chain its versions, and every
    /// signature must verify under the current [`SignaturePolicy`]. A copy
    /// from before journals (`NAME.list` + meta only) counts as one unsigned
    /// PUT. `Ok(None)`: nothing persisted.
    fn load_pushed(&self, cfg: &ListConfig, list_path: &Path) -> Result<Option<PushHead>, String> {
        let Some(jpath) = self.journal_path(cfg) else { return Ok(None) };
        let journal = match files::read(&jpath) {
            Ok(bytes) => serde_json::from_slice::<Journal>(&bytes).map_err(|e| format!("{}: not a push journal: {e}", jpath.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match files::read(list_path) {
                Ok(body) => {
                    let version = self.read_meta(cfg).and_then(|m| m.push_version).unwrap_or(0);
                    let put = PushEntry { method: PushMethod::Put, version, base_version: None, timestamp: None, signature: None, body: Arc::new(body) };
                    Journal { entries: vec![put] }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("{}: {e}", list_path.display())),
            },
            Err(e) => return Err(format!("{}: {e}", jpath.display())),
        };
        let mut journal = journal;
        if let Some(lpath) = self.push_log_path(cfg) {
            self.read_push_log(cfg, &lpath, &mut journal)?;
        }
        let body = journal.replay(&cfg.name, &self.signatures).map_err(|e| format!("{}: {e}", jpath.display()))?;
        // indexed for PATCHes once the list is published (`load_initial`)
        Ok(Some(PushHead { journal, body: PushBody::Bytes(Arc::new(body)) }))
    }

    fn push_log_path(&self, cfg: &ListConfig) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|d| d.join(format!("{}.push.log", cfg.name)))
    }

    /// Adds the PATCHes of `NAME.push.log` (one JSON [`PushEntry`] a line,
    /// appended since the PUT in `NAME.push.json`) to `journal`. A log whose
    /// first PATCH does not apply to the journal's last version is left
    /// from before that PUT (a crash between writing the PUT and removing
    /// the log): it is removed, not replayed. A last line without its
    /// newline is a torn append (a crash before its fsync, never
    /// acknowledged): it is cut off. Anything else that does not parse
    /// rejects the persisted push; signatures and the version chain are
    /// checked by the replay that follows.
    fn read_push_log(&self, cfg: &ListConfig, lpath: &Path, journal: &mut Journal) -> Result<(), String> {
        let text = match files::read(lpath) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", lpath.display())),
        };
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut entries = Vec::new();
        for (n, line) in text.get(..complete).unwrap_or(&[]).split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let e: PushEntry = serde_json::from_slice(line).map_err(|e| format!("{} line {}: not a push: {e}", lpath.display(), n + 1))?;
            entries.push(e);
        }
        if entries.first().is_some_and(|e| e.base_version != journal.version()) {
            tracing::warn!(list = %cfg.name, path = %lpath.display(), "push log left from before the last PUT: removed");
            return files::remove(lpath).map_err(|e| format!("{}: {e}", lpath.display()));
        }
        if complete < text.len() {
            tracing::warn!(list = %cfg.name, path = %lpath.display(), "torn last line of the push log (never acknowledged): cut off");
            files::write(lpath, text.get(..complete).unwrap_or(&[])).map_err(|e| format!("{}: {e}", lpath.display()))?;
        }
        journal.entries.extend(entries);
        Ok(())
    }

    /// Offers one push to push list `id`: checks its version against the
    /// version in force, applies a PATCH to the bytes in force, gates and
    /// publishes — all under the update lock, so two pushes never both pass
    /// the version check. A push whose result equals the list in force
    /// still advances the accepted version. The caller has checked the
    /// signature; the entry is persisted with it (journal, re-verified on load).
    pub fn offer_push(&self, id: ListId, entry: PushEntry, who: String) -> Result<ListState, PushRefused> {
        self.offer_push_received(id, entry, who, std::time::Instant::now())
    }

    /// [`Lists::offer_push`] of a push whose body was read at `received`
    /// (the start of `qalqan_update_enforce_seconds`: the wait for the
    /// build thread and the update lock counts).
    pub fn offer_push_received(&self, id: ListId, mut entry: PushEntry, who: String, received: std::time::Instant) -> Result<ListState, PushRefused> {
        let Some(cfg) = self.config(id) else {
            return Err(PushRefused::Patch("no such list".into()));
        };
        let guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let in_force = self.state(id);
        let line_fn = super::parse::line_parser(cfg.format);
        let mut edit = None;
        let current = in_force.as_ref().and_then(|s| s.meta.push_version).unwrap_or(0);
        if entry.version == 0 && entry.signature.is_none() {
            entry.version = current.saturating_add(1); // unsigned push without a version: the next one
        }
        if entry.version <= current {
            return Err(PushRefused::Stale { version: entry.version, current });
        }
        let head = self.pushed(id);
        // a PATCH's identity costs the PATCH, not the list (`chained_version`)
        let mut version = None;
        // the version's bytes, or (a PATCH over an indexed list) the indexed
        // version, whose bytes are made only when something needs them
        let (body, journal) = match entry.method {
            PushMethod::Put => (PushBody::Bytes(Arc::clone(&entry.body)), Journal { entries: vec![entry.clone()] }),
            PushMethod::Patch => {
                if let Some(base) = entry.base_version.filter(|b| *b != current) {
                    return Err(PushRefused::Base { base, current });
                }
                match head {
                    Some(h) => {
                        let limit = cfg.max_bytes.saturating_mul(2);
                        let size: u64 = h.journal.entries.iter().map(|e| e.body.len() as u64).sum::<u64>() + entry.body.len() as u64;
                        if size > limit {
                            return Err(PushRefused::JournalFull { limit });
                        }
                        entry.base_version = Some(current);
                        // the version in force, as its state has it
                        let from = in_force.as_ref().map_or_else(|| h.journal.content_id(), |s| s.version.clone());
                        version = Some(super::chained_version(&from, &entry.body));
                        let indexed = match &h.body {
                            PushBody::Indexed(p) => p.apply(&entry.body).map_err(PushRefused::Patch)?,
                            PushBody::Bytes(_) => None,
                        };
                        let body = match indexed {
                            // O(patch): the index finds the removed lines and their numbers
                            Some(a) => {
                                let removed: Vec<(u32, &str)> = a.removed.iter().map(|(n, t)| (*n, &**t)).collect();
                                edit = line_fn.and_then(|f| super::delta::patch_hunks(f, &cfg.source, from, a.from_lines, &removed, &a.appended));
                                PushBody::Indexed(a.next)
                            }
                            // a pass over the list (a body with CRs, an emptied list)
                            None => {
                                let (bytes, e) = super::delta::patch_edit(line_fn, &cfg.source, from, &h.body.bytes(), &entry.body)
                                    .map_err(PushRefused::Patch)?;
                                edit = e;
                                PushBody::Bytes(Arc::new(bytes))
                            }
                        };
                        let mut journal = h.journal;
                        journal.entries.push(entry.clone());
                        (body, journal)
                    }
                    None if in_force.is_none() && entry.base_version.is_none() => {
                        let bytes = super::push::apply_patch(b"", &entry.body).map_err(PushRefused::Patch)?;
                        let journal = Journal { entries: vec![entry.clone()] };
                        version = Some(journal.content_id());
                        (PushBody::Bytes(Arc::new(bytes)), journal)
                    }
                    None => return Err(PushRefused::NoBase),
                }
            }
            PushMethod::Post => return Err(PushRefused::Patch("POST does not carry a list".into())),
        };
        let meta = SourceMeta { push_version: Some(entry.version), who, ..Default::default() };
        let inc = match &body {
            PushBody::Bytes(bytes) => Incoming { edit, received, version, bytes: Arc::clone(bytes), ..Incoming::new(id, Vec::new(), meta.clone()) },
            PushBody::Indexed(p) => {
                let next = p.clone();
                Incoming {
                    edit,
                    received,
                    version,
                    len: usize::try_from(p.len()).ok(),
                    render: Some(Render::shared(move || next.bytes())),
                    ..Incoming::new(id, Vec::new(), meta.clone())
                }
            }
        };
        let (mut report, replaced) = self.apply_locked(vec![inc]);
        let result = match report.failed.pop() {
            Some(e @ LoadError::Held { .. }) => {
                // kept with the held update: a confirm makes it the push in force
                if let Ok(mut h) = self.held.lock() {
                    if let Some(Some(held)) = h.get_mut(id.index()) {
                        held.push = Some(PushHead { journal: journal.clone(), body: body.clone() });
                    }
                }
                Err(PushRefused::Load(e))
            }
            Some(e) => Err(PushRefused::Load(e)),
            None => {
                // accepted, or equal to the list in force: either way this
                // version is now the accepted one
                let mut state = None;
                if let Ok(mut states) = self.states.lock() {
                    if let Some(Some(s)) = states.get_mut(id.index()) {
                        s.meta = meta.clone();
                        state = Some(s.clone());
                    }
                }
                // indexed for the next PATCH (a PUT's lines: after the swap)
                let body = body.indexed();
                if let Ok(mut p) = self.pushed.lock() {
                    if let Some(slot) = p.get_mut(id.index()) {
                        *slot = Some(PushHead { journal: journal.clone(), body });
                    }
                }
                self.persist_journal(&cfg, &journal, &meta);
                state.ok_or_else(|| {
                    PushRefused::Load(LoadError::Rejected { list: cfg.name.clone(), reason: "compiling the policy failed".into() })
                })
            }
        };
        drop(guard);
        self.finish_build(replaced);
        result
    }

    /// Async wrapper: [`Lists::offer_push`] on a build thread ([`on_build_thread`]).
    pub async fn offer_push_async(self: &Arc<Self>, id: ListId, entry: PushEntry, who: String, received: std::time::Instant) -> Result<ListState, PushRefused> {
        let me = Arc::clone(self);
        let list = self.config(id).map(|c| c.name.clone()).unwrap_or_default();
        on_build_thread(self.reload_nice, move || me.offer_push_received(id, entry, who, received))
            .await
            .unwrap_or_else(|source| Err(PushRefused::Load(LoadError::BuildThread { list, source })))
    }

    /// Persists the journal in force: a PATCH over a persisted journal is
    /// appended to `NAME.push.log` (one line, one fsync: O(patch), not the
    /// PUT's body again); a PUT (or a journal not yet on disk) is written
    /// whole to `NAME.push.json`, and only then is the old log removed —
    /// a crash between the two leaves a log that [`Lists::read_push_log`]
    /// recognises as older than the PUT. Compacting the log into the
    /// journal would not shorten the replay (each PATCH keeps its own
    /// signature), so the log lasts until the next PUT; its size is bounded
    /// with the journal's (`PushRefused::JournalFull`).
    fn persist_journal(&self, cfg: &ListConfig, journal: &Journal, meta: &SourceMeta) {
        let (Some(path), Some(lpath)) = (self.journal_path(cfg), self.push_log_path(cfg)) else { return };
        let patch = journal.entries.last().filter(|e| e.method == PushMethod::Patch && journal.entries.len() > 1 && path.exists());
        let r = match patch {
            Some(e) => serde_json::to_vec(e).map_err(std::io::Error::other).and_then(|mut line| {
                line.push(b'\n');
                files::append(&lpath, &line)
            }),
            None => serde_json::to_vec(journal)
                .map_err(std::io::Error::other)
                .and_then(|bytes| files::write(&path, &bytes))
                .and_then(|()| files::remove(&lpath)),
        };
        let r = r.and_then(|()| self.persist_meta(cfg, meta));
        if let Err(e) = r {
            tracing::error!(list = %cfg.name, path = %path.display(), error = %e, "could not persist the push: it will not survive a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload's build runs on its own thread at the configured nice value;
    /// the caller's priority is left alone.
    #[tokio::test]
    async fn builds_run_on_a_thread_of_their_own_at_the_reload_nice_value() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let (name, nice) = on_build_thread(19, || {
            (std::thread::current().name().map(str::to_owned), rustix::process::getpriority_process(None).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("qalqan-build"));
        assert_eq!(nice, 19);
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }

    /// The policy a publish replaces is freed (by the reaper), also while a
    /// reader still held it at the swap; nothing of it is kept.
    #[test]
    fn a_replaced_policy_is_freed_once_its_last_reader_lets_go() {
        let toml = "[state]\ndir = \"/nonexistent\"\n[[lists]]\nname = \"pushed\"\nsource = \"push\"\nformat = \"domains\"\n";
        let config = crate::config::Config::from_toml_str(toml, "test.toml").unwrap();
        let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
        let lists = Lists::new(specs, Arc::new(Metrics::new().unwrap()), None);
        let offer = |body: &str| {
            let inc = Incoming { force: true, ..Incoming::new(ListId::from_raw(0), body.as_bytes().to_vec(), SourceMeta::default()) };
            lists.offer(inc).map(|s| s.rules).unwrap()
        };
        assert_eq!(offer("a.example\n"), 1);
        let reader = lists.policy.load_full(); // a query of generation 1, still running
        let gone = Arc::downgrade(&reader);
        assert_eq!(offer("a.example\nb.example\n"), 2);
        assert_eq!(lists.policy.load().index.len(), 2);
        assert!(gone.upgrade().is_some(), "freed while a reader held it");
        drop(reader);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while gone.upgrade().is_some() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(gone.upgrade().is_none(), "the replaced policy was never freed");
    }

    /// The after-build hook runs once per build, after the policy a publish
    /// replaced is freed; the reaper thread belongs to its `Lists` and is
    /// gone (joined, its queue handled) when the `Lists` is dropped.
    #[test]
    fn after_build_runs_per_build_and_the_reaper_stops_with_its_lists() {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn count() {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
        let toml = "[state]\ndir = \"/nonexistent\"\n[[lists]]\nname = \"pushed\"\nsource = \"push\"\nformat = \"domains\"\n";
        let config = crate::config::Config::from_toml_str(toml, "test.toml").unwrap();
        let specs = config.lists.iter().map(|l| (l.clone(), None)).collect();
        let lists = Lists::new(specs, Arc::new(Metrics::new().unwrap()), None).with_after_build(count);
        let offer = |body: &str| {
            let inc = Incoming { force: true, ..Incoming::new(ListId::from_raw(0), body.as_bytes().to_vec(), SourceMeta::default()) };
            lists.offer(inc).map(|s| s.rules).unwrap()
        };
        // replaces the empty policy: the hook runs on the reaper thread
        assert_eq!(offer("a.example\n"), 1);
        // a reader holds generation 1 past the drop of `lists`: the reaper
        // must not wait out RETIRE_WAIT for it
        let reader = lists.policy.load_full();
        assert_eq!(offer("a.example\nb.example\n"), 2);
        let started = std::time::Instant::now();
        drop(lists);
        assert!(started.elapsed() < RETIRE_WAIT / 2, "dropping the lists waited for a reader");
        assert_eq!(CALLS.load(Ordering::SeqCst), 2, "one hook run per build, all done when the lists are dropped");
        assert_eq!(reader.index.len(), 1, "the reader's policy stays usable");
    }

    /// A PATCH appends one line to `NAME.push.log` (the PUT's body in
    /// `NAME.push.json` is not rewritten); a restart replays the PUT and
    /// the PATCHes; a PUT starts over; a log left from before a PUT (a
    /// crash between the two writes) and a torn last line are not replayed.
    #[test]
    fn patches_are_appended_and_replayed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!("[state]\ndir = \"{}\"\n[[lists]]\nname = \"reg\"\nsource = \"push\"\nformat = \"domains\"\nmax_shrink = 1.0\n", dir.path().display());
        let config = crate::config::Config::from_toml_str(&toml, "test.toml").unwrap();
        let start = || {
            let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
            let lists = Lists::new(specs, Arc::new(Metrics::new().unwrap()), Some(dir.path().to_owned()));
            lists.load_initial().unwrap();
            lists
        };
        let id = ListId::from_raw(0);
        let push = |lists: &Lists, method, body: &str| {
            let e = PushEntry { method, version: 0, base_version: None, timestamp: None, signature: None, body: body.as_bytes().to_vec().into() };
            lists.offer_push(id, e, "test".into()).unwrap();
        };
        let blocked = |lists: &Lists, name: &str| {
            matches!(lists.policy.load().check(&crate::name::QName::parse(name).unwrap()), crate::policy::Verdict::Blocked(_))
        };
        let (jpath, lpath) = (dir.path().join("reg.push.json"), dir.path().join("reg.push.log"));
        let lists = start();
        push(&lists, PushMethod::Put, "a.test\nb.test\nc.test\n");
        let put_file = std::fs::read(&jpath).unwrap();
        assert!(!lpath.exists());
        push(&lists, PushMethod::Patch, "+d.test\n-a.test\n");
        push(&lists, PushMethod::Patch, "+e.test\n-b.test\n");
        assert_eq!(std::fs::read(&jpath).unwrap(), put_file, "a PATCH rewrote the PUT");
        assert_eq!(std::fs::read_to_string(&lpath).unwrap().lines().count(), 2);
        let body = lists.pushed(id).unwrap().body.bytes();
        let version = lists.state(id).unwrap().version;
        // the PATCHes went through the index, not a pass over the list
        assert!(matches!(lists.pushed(id).unwrap().body, PushBody::Indexed(_)));
        drop(lists);
        // NAME.list is written behind; dropping the lists waits for it
        assert_eq!(std::fs::read(dir.path().join("reg.list")).unwrap(), *body);

        let lists = start();
        assert_eq!(lists.pushed(id).unwrap().body.bytes(), body);
        assert_eq!(lists.state(id).unwrap().version, version, "a restart changed the version's identity");
        assert!(matches!(lists.pushed(id).unwrap().body, PushBody::Indexed(_)), "not indexed after a restart");
        assert_eq!(lists.pushed(id).unwrap().journal.version(), Some(3));
        assert!(!blocked(&lists, "a.test") && !blocked(&lists, "b.test"));
        assert!(blocked(&lists, "c.test") && blocked(&lists, "d.test") && blocked(&lists, "e.test"));
        // a torn append (no newline) is cut off, the rest replayed
        let old_log = std::fs::read(&lpath).unwrap();
        let mut torn = old_log.clone();
        torn.extend_from_slice(br#"{"method":"PATCH","version":9"#);
        std::fs::write(&lpath, &torn).unwrap();
        drop(lists);
        let lists = start();
        assert_eq!(lists.pushed(id).unwrap().body.bytes(), body);
        assert_eq!(std::fs::read(&lpath).unwrap(), old_log, "the torn line was not cut off");
        push(&lists, PushMethod::Patch, "+f.test\n");
        assert!(blocked(&lists, "f.test"));

        // a PUT starts over: the log is gone; an old log put back (as a crash
        // after the PUT's rename would leave it) is not replayed
        let old_log = std::fs::read(&lpath).unwrap();
        push(&lists, PushMethod::Put, "x.test\n");
        assert!(!lpath.exists());
        std::fs::write(&lpath, &old_log).unwrap();
        drop(lists);
        let lists = start();
        assert_eq!(&**lists.pushed(id).unwrap().body.bytes(), b"x.test\n");
        assert!(blocked(&lists, "x.test") && !blocked(&lists, "f.test") && !blocked(&lists, "d.test"));
        assert!(!lpath.exists(), "the stale log was not removed");
        // and a PATCH after that appends to a fresh log
        push(&lists, PushMethod::Patch, "+y.test\n");
        drop(lists);
        let lists = start();
        assert!(blocked(&lists, "x.test") && blocked(&lists, "y.test"));
    }

    /// Updates by delta (`lists/delta.rs`) against fresh builds.
    mod delta_property {
        use super::super::super::parse;
        use super::*;
        use crate::config::ListConfig;
        use crate::lists::push::{PushEntry, PushMethod};
        use crate::policy::index::ListInput;
        use crate::policy::{Index, Verdict};
        use crate::rules::ListKind;

        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn below(&mut self, n: usize) -> usize {
                (self.next() % n.max(1) as u64) as usize
            }
        }

        const POOL: &[&str] = &["a.test", "b.a.test", "c.b.a.test", "d.test", "e.d.test", "f.test", "g.f.test", "h.test", "x.h.test", "y.test"];

        /// A random line of `format`: names from a small pool, so that rules
        /// overlap (same name in several lists, on several lines, nested).
        fn line(rng: &mut Rng, format: &str) -> String {
            let n = POOL[rng.below(POOL.len())];
            match (format, rng.below(6)) {
                (_, 0) => "# note".into(),
                (_, 1) => "bad name!".into(),
                ("adblock", 2) => format!("@@||{n}^"),
                ("adblock", 3) => format!("||{n}^$important"),
                ("adblock", _) => format!("||{n}^"),
                ("hosts", _) => format!("0.0.0.0 {n} {}", POOL[rng.below(POOL.len())]),
                _ => n.to_owned(),
            }
        }

        /// Everything a query's answer and its explanation show.
        fn view(p: &Policy, name: &str) -> String {
            let q = crate::name::QName::parse(name).unwrap();
            match p.check(&q) {
                Verdict::Pass => "pass".into(),
                Verdict::Allowed(h) | Verdict::Blocked(h) => format!(
                    "{:?} list {} depth {} rule {} line {} answer {}",
                    std::mem::discriminant(&p.check(&q)),
                    h.list.index(),
                    h.depth,
                    p.rule_text(h.rule),
                    p.rule_line(h.rule),
                    p.answer(&h).as_str()
                ),
            }
        }

        fn fresh(configs: &[ListConfig], bodies: &[Vec<u8>]) -> Policy {
            let parsed: Vec<_> = configs.iter().zip(bodies).map(|(c, b)| parse::parse(c.format, &c.source, b)).collect();
            let inputs: Vec<ListInput<'_>> =
                configs.iter().zip(&parsed).map(|(c, p)| ListInput { allow: c.kind == ListKind::Allow, entries: &p.entries }).collect();
            crate::lists::policy_of(configs, Index::build(&inputs).unwrap(), 0)
        }

        /// The property: after any sequence of PATCHes (removing and adding
        /// lines of several lists) and file changes (lines inserted and removed
        /// anywhere), the published policy — a base with deltas layered over it,
        /// folded now and then — answers every name exactly as a fresh build of
        /// the current versions: verdict, list, depth, rule, line and answer.
        #[test]
        fn deltas_answer_as_a_fresh_build() {
            for (seed, share) in [(0x9e37_79b9_7f4a_7c15u64, 1e9), (0x1234_5678_9abc_def1, 0.3), (0xdead_beef_cafe_f00d, 0.05)] {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("f.txt");
                let toml = format!(
                    "[state]\ndir = \"{}\"\n[[lists]]\nname = \"p0\"\nsource = \"push\"\nformat = \"domains\"\nmax_bad_share = 1.0\nmax_shrink = 1.0\n\
                     [[lists]]\nname = \"p1\"\nsource = \"push\"\nformat = \"adblock\"\nmax_bad_share = 1.0\nmax_shrink = 1.0\n\
                     [[lists]]\nname = \"p2\"\nsource = \"push\"\nformat = \"hosts\"\nmax_bad_share = 1.0\nmax_shrink = 1.0\n\
                     [[lists]]\nname = \"f3\"\nsource = \"{}\"\nformat = \"domains\"\nkind = \"allow\"\nmax_bad_share = 1.0\nmax_shrink = 1.0\n",
                    dir.path().display(),
                    file.display()
                );
                let config = crate::config::Config::from_toml_str(&toml, "test.toml").unwrap();
                let configs: Vec<ListConfig> = config.lists.clone();
                let specs = config.lists.iter().map(|l| (l.clone(), config.list_path(l))).collect();
                let lists = Lists::new(specs, std::sync::Arc::new(crate::metrics::Metrics::new().unwrap()), Some(dir.path().to_owned())).with_delta(share, 1000);
                let mut rng = Rng(seed);
                let formats = ["domains", "adblock", "hosts", "domains"];
                let mut file_lines: Vec<String> = (0..20).map(|_| line(&mut rng, "domains")).collect();
                std::fs::write(&file, file_lines.join("\n") + "\n").unwrap();
                lists.load_initial().unwrap();
                for (i, f) in formats.iter().enumerate().take(3) {
                    let body: Vec<String> = (0..30).map(|_| line(&mut rng, f)).collect();
                    let put = PushEntry { method: PushMethod::Put, version: 0, base_version: None, timestamp: None, signature: None, body: (body.join("\n") + "\n").into_bytes().into() };
                    lists.offer_push(ListId::from_raw(i as u16), put, "test".into()).unwrap();
                }
                let queries: Vec<String> = POOL.iter().flat_map(|n| [n.to_string(), format!("z.{n}"), format!("q.z.{n}")]).chain(["miss.test".into()]).collect();
                for step in 0..150 {
                    let which = rng.below(4);
                    if which == 3 {
                        // removals, insertions, moved lines (the diff deletes and
                        // re-inserts them), now and then a third of the file rewritten
                        let rewrite = rng.below(10) == 0;
                        for _ in 0..=rng.below(if rewrite { file_lines.len().max(1) / 3 } else { 3 }) {
                            match rng.below(3) {
                                0 if !file_lines.is_empty() => {
                                    let at = rng.below(file_lines.len());
                                    file_lines.remove(at);
                                }
                                1 if file_lines.len() > 1 => {
                                    let moved = file_lines.remove(rng.below(file_lines.len()));
                                    let at = rng.below(file_lines.len() + 1);
                                    file_lines.insert(at, moved);
                                }
                                _ => {
                                    let at = rng.below(file_lines.len() + 1);
                                    file_lines.insert(at, line(&mut rng, "domains"));
                                }
                            }
                        }
                        std::fs::write(&file, file_lines.join("\n") + "\n").unwrap();
                        lists.reload_files(None);
                    } else {
                        let id = ListId::from_raw(which as u16);
                        let current = lists.pushed(id).unwrap().body.bytes();
                        let current: Vec<&str> = std::str::from_utf8(&current).unwrap().lines().collect();
                        let mut patch = String::new();
                        for _ in 0..=rng.below(3) {
                            if rng.below(2) == 0 && !current.is_empty() {
                                patch += &format!("-{}\n", current[rng.below(current.len())]);
                            } else {
                                patch += &format!("+{}\n", line(&mut rng, formats[which]));
                            }
                        }
                        let entry = PushEntry { method: PushMethod::Patch, version: 0, base_version: None, timestamp: None, signature: None, body: patch.into_bytes().into() };
                        // a shrink past the gate is refused alike either way; force keeps the test moving
                        lists.force_next(id);
                        lists.offer_push(id, entry, "test".into()).unwrap();
                    }
                    let bodies: Vec<Vec<u8>> = (0..3)
                        .map(|i| lists.pushed(ListId::from_raw(i)).unwrap().body.bytes().to_vec())
                        .chain([std::fs::read(&file).unwrap()])
                        .collect();
                    let want = fresh(&configs, &bodies);
                    let got = lists.policy.load();
                    for q in &queries {
                        assert_eq!(view(&got, q), view(&want, q), "seed {seed:x} step {step}: {q}");
                    }
                    for (i, b) in bodies.iter().enumerate() {
                        let st = lists.state(ListId::from_raw(i as u16)).unwrap();
                        let p = parse::parse(configs[i].format, &configs[i].source, b);
                        assert_eq!((st.rules, st.lines, st.bad_lines), (p.rules, p.lines, p.bad_lines), "seed {seed:x} step {step}: list {i} stats");
                    }
                }
                let m = lists_metrics(&lists);
                assert!(m.contains("kind=\"delta\""), "no update went by delta: {m}");
                if share < 1.0 {
                    assert!(m.contains("kind=\"full\""), "no delta was ever folded");
                }
            }
        }

        fn lists_metrics(lists: &Lists) -> String {
            lists.metrics().encode().lines().filter(|l| l.starts_with("qalqan_list_updates_total")).collect::<Vec<_>>().join("\n")
        }

    }
}