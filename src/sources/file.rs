//! Profiles and namespaces from the local filesystem: a ConfigMap manifest
//! (YAML or JSON) or a directory with one file per key (a mounted ConfigMap).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::watch::{self, Changes};
use crate::digest;
use crate::metrics::Metrics;
use crate::namespaces::StaticNamespaces;
use crate::profile::{
    self, Diagnostic, Diagnostics, Entry, Manifests, Origin, Profile, ProfileData, Severity,
};
use crate::published::Published;

/// What a profile path held when read, as bytes, before any parsing.
enum Raw {
    /// A ConfigMap manifest file.
    Manifest(Vec<u8>),
    /// A mounted ConfigMap: (key, file, bytes) per key, by key.
    Directory(Vec<(String, String, Vec<u8>)>),
}

impl Raw {
    /// A digest of everything read (keys and bytes), to tell contents apart.
    fn digest(&self) -> u64 {
        match self {
            Raw::Manifest(bytes) => digest::fnv1a([bytes.as_slice()]),
            Raw::Directory(files) => digest::fnv1a(
                files
                    .iter()
                    .flat_map(|(key, _, bytes)| [key.as_bytes(), bytes.as_slice()]),
            ),
        }
    }

    /// The manifests read, with informations about what was left out.
    fn into_manifests(self, path: &Path) -> Result<(Manifests, Diagnostics), Diagnostics> {
        let name = path.display().to_string();
        match self {
            Raw::Manifest(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| read_error(&name, String::new(), NOT_UTF8.into()))?;
                Manifests::read(&name, &text)
            }
            Raw::Directory(files) => {
                let mut data = ProfileData::default();
                for (key, file_name, bytes) in files {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| read_error(&file_name, key.clone(), NOT_UTF8.into()))?;
                    data.entries.insert(
                        key,
                        Entry {
                            text,
                            origin: Origin::File(file_name),
                            key_position: Default::default(),
                        },
                    );
                }
                let manifests = Manifests {
                    configmap: Some(data),
                    selectors: Vec::new(),
                };
                Ok((manifests, Diagnostics::default()))
            }
        }
    }
}

const NOT_UTF8: &str = "cannot read: stream did not contain valid UTF-8";

fn read_error(file: &str, field: String, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        severity: Severity::Error,
        file: Some(file.to_string()),
        position: None,
        selector: None,
        field,
        message,
    }])
}

/// Reads the bytes of a ConfigMap manifest file or of a mounted directory's keys.
fn read_raw(path: &Path) -> Result<Raw, Diagnostics> {
    let name = path.display().to_string();
    let io_error = |what: String| read_error(&name, String::new(), what);
    let metadata = fs::metadata(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
    if !metadata.is_dir() {
        let bytes = fs::read(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
        return Ok(Raw::Manifest(bytes));
    }
    let mut files = Vec::new();
    let entries = fs::read_dir(path).map_err(|e| io_error(format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("cannot list: {e}")))?;
        let key = entry.file_name().to_string_lossy().into_owned();
        // `..data`, `..2024_01_01...` are kubelet's; dotfiles are not keys.
        if key.starts_with('.') {
            continue;
        }
        let file = entry.path();
        // Keys are symlinks into `..data`: follow them.
        if !fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let file_name = file.display().to_string();
        let bytes = fs::read(&file)
            .map_err(|e| read_error(&file_name, key.clone(), format!("cannot read: {e}")))?;
        files.push((key, file_name, bytes));
    }
    files.sort();
    Ok(Raw::Directory(files))
}

/// Reads a profile from a manifest file (a ConfigMap, Selector objects, or
/// both) or a mounted ConfigMap directory; with informations about objects
/// of other kinds left out.
pub fn read_profile(path: &Path) -> Result<(Manifests, Diagnostics), Diagnostics> {
    read_raw(path)?.into_manifests(path)
}

/// Reads Namespace manifests (for `--namespaces-file`).
pub fn read_namespaces(path: &Path) -> Result<StaticNamespaces, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    StaticNamespaces::from_manifests(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and compiles a profile file; errors are the findings, as text.
pub fn load_profile(path: &Path) -> Result<(Profile, Diagnostics), String> {
    let (manifests, _) = read_profile(path).map_err(|d| d.to_string())?;
    profile::compile_manifests(&manifests)
        .into_result()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The profile file (or mounted directory) a server follows: each change
/// of its content is read once, whatever the events that led to it.
pub struct ProfileFile {
    path: PathBuf,
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
    /// The digest of the content last tried (or of the last read error).
    tried: Option<u64>,
}

impl ProfileFile {
    /// Follows `path`, whose profile `published` already holds.
    pub fn new(path: PathBuf, published: Arc<Published<Profile>>, metrics: Arc<Metrics>) -> Self {
        Self {
            path,
            published,
            metrics,
            tried: None,
        }
    }

    /// Re-reads the profile. Content already tried is skipped, so a profile
    /// that stays invalid is reported (logged, counted) once; a valid new one
    /// is published; content equal to the profile in use clears
    /// `profile_reload_failing`. An invalid one never replaces the last good one.
    pub fn reload(&mut self) {
        let path = self.path.as_path();
        let raw = read_raw(path);
        // A read error counts as content too: the same error is reported once.
        let digest = match &raw {
            Ok(raw) => raw.digest(),
            Err(diagnostics) => digest::fnv1a([diagnostics.to_string().as_bytes()]),
        };
        if self.tried == Some(digest) {
            return;
        }
        self.tried = Some(digest);
        let manifests = match raw.and_then(|raw| raw.into_manifests(path)) {
            Ok((manifests, _)) => manifests,
            Err(diagnostics) => {
                self.metrics.profile_loaded(None);
                tracing::error!(path = %path.display(), error = %diagnostics, "cannot read the profile; keeping the last good one");
                return;
            }
        };
        match profile::compile_manifests(&manifests).into_result() {
            Ok((profile, _)) if profile.digest() == self.published.get().digest() => {
                self.metrics.profile_current();
            }
            Ok((profile, diagnostics)) => {
                for d in diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Warning)
                {
                    tracing::warn!(path = %path.display(), "{d}");
                }
                super::publish(
                    &self.published,
                    &self.metrics,
                    profile,
                    &path.display().to_string(),
                );
            }
            Err(e) => {
                self.metrics.profile_loaded(None);
                tracing::error!(path = %path.display(), error = %e, "profile rejected; keeping the last good one");
            }
        }
    }
}

/// Follows the profile file (or mounted directory) at `path` for ever: only
/// events on its own files count (see [`watch`]), and see
/// [`ProfileFile::reload`] for what each change does. The watch is set up
/// before this returns, so no change made after it is missed.
pub fn follow_profile(
    path: PathBuf,
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut changes = Changes::watch(&[&path], watch::DEBOUNCE, watch::POLL);
    let mut file = ProfileFile::new(path, published, metrics);
    async move {
        loop {
            changes.next().await;
            file.reload();
        }
    }
}
