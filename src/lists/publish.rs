//! The published policy (`ArcSwap<Policy>`) and the last good version of
//! every list. Reloads build aside, gate, compile, then swap: queries in
//! flight finish on the policy they loaded, new ones see the new one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{compile, gate_errors, load_bytes, LoadError, LoadedList};
use crate::config::ListConfig;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// Share of rules a new version may lose before it is rejected.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;

/// Lists and the policy built from them.
pub struct Lists {
    configs: Vec<(ListConfig, PathBuf)>,
    current: Mutex<Vec<Option<Arc<LoadedList>>>>,
    /// Content version of the last rejected source of each list: not retried.
    failed: Mutex<Vec<Option<String>>>,
    pub policy: Arc<ArcSwap<Policy>>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
    /// One reload at a time.
    reload_lock: tokio::sync::Mutex<()>,
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
    pub fn new(configs: Vec<(ListConfig, PathBuf)>, metrics: Arc<Metrics>) -> Self {
        let n = configs.len();
        Self {
            configs,
            current: Mutex::new(vec![None; n]),
            failed: Mutex::new(vec![None; n]),
            policy: Arc::new(ArcSwap::from_pointee(Policy::empty())),
            generation: AtomicU64::new(0),
            metrics,
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn configs(&self) -> &[(ListConfig, PathBuf)] {
        &self.configs
    }

    /// The loaded lists (None where a list never loaded).
    pub fn snapshot(&self) -> Vec<Option<Arc<LoadedList>>> {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Loads every list; any failure is returned (we never start serving with
    /// a configured list missing). Blocking: call from `spawn_blocking` or
    /// before the runtime serves.
    pub fn load_initial(&self) -> Result<(), Vec<LoadError>> {
        let report = self.reload_blocking(None);
        if report.failed.is_empty() {
            Ok(())
        } else {
            Err(report.failed)
        }
    }

    /// Reloads the lists at `which` (indices into the config; None = all).
    pub async fn reload(self: &Arc<Self>, which: Option<Vec<usize>>) -> ReloadReport {
        let _guard = self.reload_lock.lock().await;
        let me = Arc::clone(self);
        match tokio::task::spawn_blocking(move || me.reload_blocking(which.as_deref())).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reload task failed; keeping the current policy");
                ReloadReport::default()
            }
        }
    }

    /// Reload without the async lock (the caller serialises).
    pub fn reload_blocking(&self, which: Option<&[usize]>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let old = self.snapshot();
        let mut next = old.clone();
        for (i, (cfg, path)) in self.configs.iter().enumerate() {
            if which.is_some_and(|w| !w.contains(&i)) {
                continue;
            }
            let prev = old.get(i).and_then(Clone::clone);
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(source) => {
                    let e = LoadError::Source { list: cfg.name.clone(), path: path.display().to_string(), source };
                    self.metrics.list_reloads.with_label_values(&[&cfg.name, "error"]).inc();
                    tracing::warn!(list = %cfg.name, error = %e, "list rejected; keeping last good version");
                    report.failed.push(e);
                    continue;
                }
            };
            let version = super::content_version(&bytes);
            let failed_before = self.failed.lock().ok().and_then(|f| f.get(i).cloned().flatten());
            if prev.as_ref().is_some_and(|p| p.version == version) || failed_before.as_deref() == Some(&version) {
                // same content as in force, or as already rejected: nothing to do
                report.unchanged.push(cfg.name.clone());
                continue;
            }
            let result = gate_errors(cfg, load_bytes(cfg, &bytes)).and_then(|l| gate_shrink(cfg, prev.as_deref(), l));
            if let Ok(mut f) = self.failed.lock() {
                if let Some(slot) = f.get_mut(i) {
                    *slot = if result.is_err() { Some(version) } else { None };
                }
            }
            match result {
                Ok(l) => {
                    let old_rules = prev.as_ref().map(|p| p.parsed.entries.len()).unwrap_or(0);
                    tracing::info!(
                        list = %cfg.name,
                        source = %cfg.source,
                        version = %l.version,
                        old_rules,
                        new_rules = l.parsed.entries.len(),
                        bad_lines = l.parsed.bad_lines,
                        "list loaded"
                    );
                    for e in l.parsed.errors.iter().take(5) {
                        tracing::warn!(list = %cfg.name, "skipped line: {e}");
                    }
                    self.metrics.list_reloads.with_label_values(&[&cfg.name, "success"]).inc();
                    if let Some(slot) = next.get_mut(i) {
                        *slot = Some(Arc::new(l));
                    }
                    report.changed.push(cfg.name.clone());
                }
                Err(e) => {
                    self.metrics.list_reloads.with_label_values(&[&cfg.name, "error"]).inc();
                    tracing::warn!(list = %cfg.name, error = %e, "list rejected; keeping last good version");
                    report.failed.push(e);
                }
            }
        }
        if report.changed.is_empty() {
            return report;
        }
        let loaded: Vec<&LoadedList> = next.iter().filter_map(|l| l.as_deref()).collect();
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let started = std::time::Instant::now();
        match compile(&loaded, generation) {
            Ok(policy) => {
                let rules = policy.index.len();
                // lists missing from `next` were never loaded: the policy uses positions in
                // `loaded`, so map names back for metrics only.
                for l in &loaded {
                    self.metrics.list_rules.with_label_values(&[&l.config.name]).set(l.parsed.entries.len() as i64);
                    let ts = l.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    self.metrics.list_last_success.with_label_values(&[&l.config.name]).set(ts as i64);
                }
                self.policy.store(Arc::new(policy));
                self.generation.store(generation, Ordering::Relaxed);
                self.metrics.policy_generation.set(generation as i64);
                if let Ok(mut cur) = self.current.lock() {
                    *cur = next;
                }
                tracing::info!(generation, rules, took_ms = started.elapsed().as_millis() as u64, "policy published");
                report.generation = Some(generation);
            }
            Err(e) => {
                tracing::error!(error = %e, "compiling the policy failed; keeping the current one");
            }
        }
        report
    }
}

fn gate_shrink(cfg: &ListConfig, prev: Option<&LoadedList>, l: LoadedList) -> Result<LoadedList, LoadError> {
    let Some(prev) = prev else { return Ok(l) };
    let old = prev.parsed.entries.len();
    let new = l.parsed.entries.len();
    if old > 0 && (new as f64) < (old as f64) * (1.0 - DEFAULT_MAX_SHRINK) {
        return Err(LoadError::Shrink { list: cfg.name.clone(), old, new, max_shrink: DEFAULT_MAX_SHRINK * 100.0 });
    }
    Ok(l)
}
