//! Noticing that files changed: the directories that hold them are watched
//! (kubelet replaces mounted ConfigMaps and Secrets by swapping a `..data`
//! symlink, so watching the files themselves would see only the first
//! change), bursts of events are coalesced, and a slow periodic check covers
//! filesystems whose events do not arrive.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Wait after the first event of a burst before reporting it.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Check even without events this often.
pub const POLL: Duration = Duration::from_secs(60);

/// A stream of "something may have changed" for a set of paths.
pub struct Changes {
    events: mpsc::UnboundedReceiver<()>,
    poll: tokio::time::Interval,
    debounce: Duration,
    // Kept alive for as long as events are wanted.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Changes {
    /// Watches the directories of `paths` (a directory path is watched itself).
    pub fn watch(paths: &[&Path], debounce: Duration, poll: Duration) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let directories: BTreeSet<PathBuf> = paths
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.to_path_buf()
                } else {
                    match p.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                        _ => PathBuf::from("."),
                    }
                }
            })
            .collect();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut watcher| {
            for dir in &directories {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for file changes; checking every {poll:?} instead");
                None
            }
        };
        let mut poll = tokio::time::interval(poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        Self {
            events,
            poll,
            debounce,
            _watcher: watcher,
        }
    }

    /// Resolves when the files may have changed: after a burst of events has
    /// settled, or at the periodic check.
    pub async fn next(&mut self) {
        tokio::select! {
            Some(()) = self.events.recv() => {
                tokio::time::sleep(self.debounce).await;
                while self.events.try_recv().is_ok() {}
            }
            _ = self.poll.tick() => {}
        }
    }
}
