//! Reload triggers: `notify` on the parent directory of every file list
//! (editors and `mv` deploys replace the inode, so a watch on the file itself
//! goes quiet), debounced; and SIGHUP (received by `main`, handed in as a
//! watch channel), which reloads every list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::publish::Lists;
use crate::rules::ListId;

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts the watcher task. Returns the task handle; it ends on `stop`.
/// `sighup` changes on every SIGHUP (`None`: no signals, e.g. in tests).
pub fn spawn(
    lists: Arc<Lists>,
    sighup: Option<tokio::sync::watch::Receiver<u64>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // our own reads of the file show up as Access events: ignore them
            if !matches!(ev.kind, notify::EventKind::Create(_) | notify::EventKind::Modify(_) | notify::EventKind::Remove(_)) {
                return;
            }
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })?;
    // (list, canonical parent dir, file name)
    let mut targets: Vec<(ListId, PathBuf, std::ffi::OsString)> = Vec::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, cfg) in lists.each() {
        let path = cfg.path.as_deref();
        if cfg.origin.is_remote() {
            continue; // their state-dir copies are written by us
        }
        let Some(path) = path else { continue };
        let Some(name) = path.file_name() else { continue };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let Ok(dir) = parent.canonicalize() else { continue };
        targets.push((i, dir.clone(), name.to_owned()));
        dirs.insert(dir);
    }
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let mut hup = sighup;
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropped (and stopped) when the task ends
        loop {
            let mut dirty: BTreeSet<ListId> = BTreeSet::new();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup(&mut hup) => {
                    reload_all(&lists, "SIGHUP: reloading every list").await;
                    continue;
                }
                ev = rx.recv() => {
                    let Some(p) = ev else { return };
                    mark(&targets, &p, &mut dirty);
                }
            }
            if dirty.is_empty() {
                continue;
            }
            // debounce: wait until the list files have been quiet for DEBOUNCE
            // (events for other files in the directory, such as logs, do not
            // extend the wait)
            // (a SIGHUP meanwhile ends the wait: the operator says the files are done)
            let mut deadline = tokio::time::Instant::now() + DEBOUNCE;
            let mut every = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = hangup(&mut hup) => {
                        every = true;
                        break;
                    }
                    ev = rx.recv() => match ev {
                        Some(p) => {
                            if mark(&targets, &p, &mut dirty) {
                                deadline = tokio::time::Instant::now() + DEBOUNCE;
                            }
                        }
                        None => return,
                    },
                }
            }
            if every {
                reload_all(&lists, "SIGHUP while list files were settling: reloading every list now").await;
                continue;
            }
            let which: Vec<ListId> = dirty.into_iter().collect();
            tracing::debug!(?which, "list files changed");
            lists.reload(Some(which)).await;
        }
    }))
}

/// The SIGHUP reload: every list, logged before and after.
async fn reload_all(lists: &Arc<Lists>, why: &'static str) {
    tracing::info!("{why}");
    let report = lists.reload(None).await;
    tracing::info!(changed = report.changed.len(), failed = report.failed.len(), "SIGHUP reload done");
}

/// The next SIGHUP (never, without a signal channel or once it closed).
async fn hangup(hup: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match hup.as_mut() {
        Some(h) => {
            if h.changed().await.is_err() {
                *hup = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Marks the lists whose file is `p`; returns whether any matched.
fn mark(targets: &[(ListId, PathBuf, std::ffi::OsString)], p: &Path, dirty: &mut BTreeSet<ListId>) -> bool {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else { return false };
    let mut hit = false;
    for (i, dir, file) in targets {
        if file == name && dir == parent {
            dirty.insert(*i);
            hit = true;
        }
    }
    hit
}
