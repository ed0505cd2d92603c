//! Noticing that files changed: the directories that hold them are watched
//! (kubelet replaces mounted ConfigMaps and Secrets by swapping a `..data`
//! symlink, so watching the files themselves would see only the first
//! change), only events on the followed files count, bursts of events are
//! coalesced, and a slow periodic check covers filesystems whose events do
//! not arrive.
//!
//! A directory's watch dies with the directory, so the nearest existing
//! parent of each watched directory is watched too: when the directory is
//! removed or created again, its watch is set up again at once (and, while
//! it is missing, tried again every [`REARM`]).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// Wait after the first event of a burst before reporting it.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Check even without events this often.
pub const POLL: Duration = Duration::from_secs(60);
/// While a watched directory is missing (or cannot be watched), try to watch
/// it again this often.
pub const REARM: Duration = Duration::from_millis(500);

/// A directory whose entries are followed, and which of them count.
#[derive(Debug)]
struct Target {
    dir: PathBuf,
    /// The file names that count; `None`: every key of a mounted ConfigMap
    /// (every name not starting with `.`).
    names: Option<BTreeSet<std::ffi::OsString>>,
}

impl Target {
    /// Whether an entry of the directory named `name` is one of the followed
    /// files, or kubelet's (`..data`, `..data_tmp`, `..<timestamp>`).
    fn follows(&self, name: &OsStr) -> bool {
        let text = name.to_string_lossy();
        if text.starts_with("..") {
            return true;
        }
        match &self.names {
            Some(names) => names.contains(name),
            None => !text.starts_with('.'),
        }
    }
}

/// What the watcher's thread tells the follower.
struct Signals {
    targets: Vec<Target>,
    /// A followed file may have changed.
    changed: AtomicBool,
    /// A watched directory, or one of its parents, was created, removed or renamed.
    rearm: AtomicBool,
    wake: Notify,
}

impl Signals {
    fn event(&self, event: &notify::Event) {
        if event.kind.is_access() {
            return;
        }
        let (mut changed, mut rearm) = (false, false);
        for path in &event.paths {
            for target in &self.targets {
                if target.dir.starts_with(path) {
                    // The directory itself, or a parent of it.
                    rearm = true;
                } else if path.parent() == Some(target.dir.as_path())
                    && path.file_name().is_some_and(|name| target.follows(name))
                {
                    changed = true;
                }
            }
        }
        if rearm {
            self.rearm.store(true, Ordering::Release);
        }
        if changed || rearm {
            self.changed.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }
}

/// A stream of "something may have changed" for a set of paths.
pub struct Changes {
    signals: Arc<Signals>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The directories watched now.
    watched: BTreeSet<PathBuf>,
    poll: tokio::time::Interval,
    debounce: Duration,
}

impl Changes {
    /// Watches the directories of `paths` for changes of those files (a
    /// directory path is a mounted ConfigMap: every key in it is followed).
    pub fn watch(paths: &[&Path], debounce: Duration, poll: Duration) -> Self {
        let mut targets: Vec<Target> = Vec::new();
        for path in paths {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            let (dir, name) = if path.is_dir() {
                (path, None)
            } else {
                match (path.parent(), path.file_name()) {
                    (Some(parent), Some(name)) => (parent.to_path_buf(), Some(name.to_owned())),
                    _ => (path, None),
                }
            };
            match targets.iter_mut().find(|t| t.dir == dir) {
                Some(target) => match (&mut target.names, name) {
                    (Some(names), Some(name)) => {
                        names.insert(name);
                    }
                    (names, _) => *names = None,
                },
                None => targets.push(Target {
                    dir,
                    names: name.map(|n| BTreeSet::from([n])),
                }),
            }
        }
        let signals = Arc::new(Signals {
            targets,
            changed: AtomicBool::new(false),
            rearm: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let handler = signals.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                handler.event(&event);
            }
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
        let mut changes = Self {
            signals,
            watcher,
            watched: BTreeSet::new(),
            poll,
            debounce,
        };
        changes.rearm(true);
        let missing: Vec<PathBuf> = changes
            .wanted()
            .difference(&changes.watched)
            .cloned()
            .collect();
        if changes.watcher.is_some() && !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "cannot watch for file changes; trying again every {REARM:?}"
            );
        }
        changes
    }

    /// Resolves when the files may have changed: after a burst of events on
    /// them has settled, when a watched directory came back, or at the
    /// periodic check.
    pub async fn next(&mut self) {
        loop {
            let incomplete = self.watcher.is_some() && self.wanted() != self.watched;
            tokio::select! {
                _ = self.signals.wake.notified() => {}
                _ = self.poll.tick() => {
                    self.rearm(false);
                    return;
                }
                _ = tokio::time::sleep(REARM), if incomplete => {
                    if self.rearm(false) {
                        return;
                    }
                    continue;
                }
            }
            if !self.signals.changed.load(Ordering::Acquire) {
                continue;
            }
            tokio::time::sleep(self.debounce).await;
            self.signals.changed.store(false, Ordering::Release);
            if self.signals.rearm.swap(false, Ordering::AcqRel) {
                self.rearm(true);
            }
            return;
        }
    }

    /// The directories to watch: each followed directory that exists, and
    /// the nearest existing parent of each.
    fn wanted(&self) -> BTreeSet<PathBuf> {
        let mut wanted = BTreeSet::new();
        for target in &self.signals.targets {
            if target.dir.is_dir() {
                wanted.insert(target.dir.clone());
            }
            if let Some(parent) = target.dir.ancestors().skip(1).find(|a| a.is_dir()) {
                wanted.insert(parent.to_path_buf());
            }
        }
        wanted
    }

    /// Watches the wanted directories; `afresh`: all of them again (a
    /// directory created again has a new inode, so its old watch is gone even
    /// though the path is the same), else only those not watched yet. Whether
    /// a directory is watched that was not before.
    fn rearm(&mut self, afresh: bool) -> bool {
        let wanted = self.wanted();
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let stale: Vec<PathBuf> = match afresh {
            true => std::mem::take(&mut self.watched).into_iter().collect(),
            false => self.watched.difference(&wanted).cloned().collect(),
        };
        for dir in stale {
            self.watched.remove(&dir);
            // Already gone when the directory was removed: nothing to undo.
            let _ = watcher.unwatch(&dir);
        }
        let mut added = false;
        for dir in wanted
            .difference(&self.watched)
            .cloned()
            .collect::<Vec<_>>()
        {
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    added = true;
                    self.watched.insert(dir);
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch yet");
                }
            }
        }
        tracing::debug!(watched = ?self.watched.iter().collect::<Vec<_>>(), afresh, "watching");
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &str, names: Option<&[&str]>) -> Target {
        Target {
            dir: PathBuf::from(dir),
            names: names.map(|n| n.iter().map(Into::into).collect()),
        }
    }

    fn signals(targets: Vec<Target>) -> Signals {
        Signals {
            targets,
            changed: AtomicBool::new(false),
            rearm: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn event(kind: notify::EventKind, paths: &[&str]) -> notify::Event {
        paths
            .iter()
            .fold(notify::Event::new(kind), |e, p| e.add_path(p.into()))
    }

    fn outcome(s: &Signals) -> (bool, bool) {
        (
            s.changed.swap(false, Ordering::AcqRel),
            s.rearm.swap(false, Ordering::AcqRel),
        )
    }

    #[test]
    fn a_profile_file_follows_its_own_name_and_kubelets_swap_only() {
        use notify::EventKind::{Any, Create, Remove};
        use notify::event::{CreateKind, RemoveKind};
        let s = signals(vec![target("/etc/p", Some(&["profile.yaml"]))]);
        s.event(&event(Any, &["/etc/p/server.log"]));
        assert_eq!(outcome(&s), (false, false), "a neighbour");
        s.event(&event(Any, &["/etc/p/.profile.yaml.swp"]));
        assert_eq!(outcome(&s), (false, false), "an editor's dotfile");
        s.event(&event(Any, &["/etc/p/profile.yaml"]));
        assert_eq!(outcome(&s), (true, false));
        s.event(&event(Any, &["/etc/p/..data_tmp", "/etc/p/..data"]));
        assert_eq!(outcome(&s), (true, false), "kubelet's swap");
        s.event(&event(Any, &["/etc/other/profile.yaml"]));
        assert_eq!(outcome(&s), (false, false), "same name elsewhere");
        s.event(&event(Remove(RemoveKind::Folder), &["/etc/p"]));
        assert_eq!(outcome(&s), (true, true), "the directory went away");
        s.event(&event(Create(CreateKind::Folder), &["/etc"]));
        assert_eq!(outcome(&s), (true, true), "a parent came back");
        s.event(&event(Create(CreateKind::Folder), &["/etc/q"]));
        assert_eq!(outcome(&s), (false, false), "a sibling directory");
        s.event(&event(
            notify::EventKind::Access(notify::event::AccessKind::Any),
            &["/etc/p/profile.yaml"],
        ));
        assert_eq!(outcome(&s), (false, false), "reads do not count");
    }

    #[test]
    fn a_mounted_configmap_follows_its_keys() {
        let s = signals(vec![target("/etc/p", None)]);
        s.event(&event(notify::EventKind::Any, &["/etc/p/selectors"]));
        assert_eq!(outcome(&s), (true, false));
        s.event(&event(
            notify::EventKind::Any,
            &["/etc/p/..2026_11_30_12_00_00.1"],
        ));
        assert_eq!(outcome(&s), (true, false));
        s.event(&event(notify::EventKind::Any, &["/etc/p/.hidden"]));
        assert_eq!(outcome(&s), (false, false), "not a key");
        s.event(&event(notify::EventKind::Any, &["/etc/selectors"]));
        assert_eq!(outcome(&s), (false, false), "in the parent");
    }
}
