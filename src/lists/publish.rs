//! The published policy (`ArcSwap<Policy>`) and what is known of the version
//! of every list in force. Reloads build aside, gate, compile, then swap:
//! queries in flight finish on the policy they loaded, new ones see the new
//! one. A list's rules live only in the published index; a reload of one
//! list carries the others' rules over from it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::parse::ParseOutput;
use super::{compile, gate_errors, load_bytes, ListState, LoadError};
use crate::config::ListConfig;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// Share of rules a new version may lose before it is rejected.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;

/// Lists and the policy built from them.
pub struct Lists {
    configs: Vec<(ListConfig, PathBuf)>,
    states: Mutex<Vec<Option<ListState>>>,
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
            states: Mutex::new(vec![None; n]),
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

    /// The version in force of every list (None where a list never loaded).
    pub fn snapshot(&self) -> Vec<Option<ListState>> {
        self.states.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Loads every list; any failure is returned (we never start serving with
    /// a configured list missing). Blocking.
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

    fn reject(&self, cfg: &ListConfig, e: LoadError, report: &mut ReloadReport) {
        self.metrics.list_reloads.with_label_values(&[&cfg.name, "error"]).inc();
        tracing::warn!(list = %cfg.name, stage = e.stage(), error = %e, "list rejected; keeping last good version");
        report.failed.push(e);
    }

    /// Reload without the async lock (the caller serialises).
    pub fn reload_blocking(&self, which: Option<&[usize]>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut states = self.snapshot();
        let mut replaced: Vec<(usize, ParseOutput)> = Vec::new();
        for (i, (cfg, path)) in self.configs.iter().enumerate() {
            if which.is_some_and(|w| !w.contains(&i)) {
                continue;
            }
            let prev = states.get(i).and_then(Clone::clone);
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(source) => {
                    let e = LoadError::Source { list: cfg.name.clone(), path: path.display().to_string(), source };
                    self.reject(cfg, e, &mut report);
                    continue;
                }
            };
            let version = super::content_version(&bytes);
            let failed_before = self.failed.lock().ok().and_then(|f| f.get(i).cloned().flatten());
            if prev.as_ref().is_some_and(|p| p.version == version) || failed_before.as_deref() == Some(&version) {
                report.unchanged.push(cfg.name.clone());
                continue;
            }
            let result = gate_errors(cfg, load_bytes(cfg, &bytes)).and_then(|l| gate_shrink(cfg, prev.as_ref(), l));
            drop(bytes);
            if let Ok(mut f) = self.failed.lock() {
                if let Some(slot) = f.get_mut(i) {
                    *slot = if result.is_err() { Some(version) } else { None };
                }
            }
            match result {
                Ok(l) => {
                    let state = ListState::of(&l);
                    tracing::info!(
                        list = %cfg.name,
                        source = %cfg.source,
                        old_version = prev.as_ref().map(|p| p.version.as_str()).unwrap_or("-"),
                        new_version = %state.version,
                        old_rules = prev.as_ref().map(|p| p.rules).unwrap_or(0),
                        new_rules = state.rules,
                        bad_lines = state.bad_lines,
                        "list loaded"
                    );
                    for e in state.errors.iter() {
                        tracing::warn!(list = %cfg.name, "skipped line: {e}");
                    }
                    if let Some(slot) = states.get_mut(i) {
                        *slot = Some(state);
                    }
                    replaced.push((i, l.parsed));
                    report.changed.push(cfg.name.clone());
                }
                Err(e) => self.reject(cfg, e, &mut report),
            }
        }
        if replaced.is_empty() {
            return report;
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let started = std::time::Instant::now();
        let configs: Vec<ListConfig> = self.configs.iter().map(|(c, _)| c.clone()).collect();
        let old = self.policy.load_full();
        let refs: Vec<(usize, &ParseOutput)> = replaced.iter().map(|(i, p)| (*i, p)).collect();
        let compiled = compile(&configs, &old.index, &refs, generation);
        drop(refs);
        drop(replaced);
        drop(old);
        match compiled {
            Ok(policy) => {
                let rules = policy.index.len();
                for (i, state) in states.iter().enumerate() {
                    let (Some(state), Some((cfg, _))) = (state, self.configs.get(i)) else { continue };
                    let m = &self.metrics;
                    m.list_rules.with_label_values(&[&cfg.name]).set(i64::try_from(state.rules).unwrap_or(i64::MAX));
                    let ts = state.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    m.list_last_success.with_label_values(&[&cfg.name]).set(i64::try_from(ts).unwrap_or(i64::MAX));
                    m.set_list_version(&cfg.name, &state.version);
                }
                for name in &report.changed {
                    self.metrics.list_reloads.with_label_values(&[name, "success"]).inc();
                }
                self.policy.store(Arc::new(policy));
                self.generation.store(generation, Ordering::Relaxed);
                self.metrics.policy_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
                if let Ok(mut cur) = self.states.lock() {
                    *cur = states;
                }
                tracing::info!(generation, rules, took_ms = started.elapsed().as_millis() as u64, "policy published");
                report.generation = Some(generation);
            }
            Err(e) => {
                tracing::error!(error = %e, "compiling the policy failed; keeping the current one");
                for name in report.changed.drain(..) {
                    self.metrics.list_reloads.with_label_values(&[&name, "error"]).inc();
                }
            }
        }
        report
    }
}

fn gate_shrink(cfg: &ListConfig, prev: Option<&ListState>, l: super::LoadedList) -> Result<super::LoadedList, LoadError> {
    let Some(prev) = prev else { return Ok(l) };
    let old = prev.rules;
    let new = l.parsed.entries.len();
    if old > 0 && (new as f64) < (old as f64) * (1.0 - DEFAULT_MAX_SHRINK) {
        return Err(LoadError::Shrink { list: cfg.name.clone(), old, new, max_shrink: DEFAULT_MAX_SHRINK * 100.0 });
    }
    Ok(l)
}
