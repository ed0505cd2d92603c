//! Profiles and namespaces from the local filesystem: a ConfigMap manifest
//! (YAML or JSON) or a directory with one file per key (a mounted ConfigMap).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::watch::{self, Changes};
use crate::metrics::Metrics;
use crate::namespaces::StaticNamespaces;
use crate::profile::{
    self, Diagnostic, Diagnostics, Entry, Origin, Profile, ProfileData, Severity,
};
use crate::published::Published;

/// Reads profile data from a ConfigMap manifest file or a mounted directory.
pub fn read_profile(path: &Path) -> Result<ProfileData, Diagnostics> {
    let name = path.display().to_string();
    let io_error = |what: String| {
        Diagnostics(vec![Diagnostic {
            severity: Severity::Error,
            file: Some(name.clone()),
            position: None,
            selector: None,
            field: String::new(),
            message: what,
        }])
    };
    let metadata = fs::metadata(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
    if !metadata.is_dir() {
        let text = fs::read_to_string(path).map_err(|e| io_error(format!("cannot read: {e}")))?;
        return ProfileData::from_manifest(&name, &text);
    }
    let mut data = ProfileData::default();
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
        let text = fs::read_to_string(&file).map_err(|e| {
            Diagnostics(vec![Diagnostic {
                severity: Severity::Error,
                file: Some(file_name.clone()),
                position: None,
                selector: None,
                field: key.clone(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        data.entries.insert(
            key,
            Entry {
                text,
                origin: Origin::File(file_name),
                key_position: Default::default(),
            },
        );
    }
    Ok(data)
}

/// Reads Namespace manifests (for `--namespaces-file`).
pub fn read_namespaces(path: &Path) -> Result<StaticNamespaces, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    StaticNamespaces::from_manifests(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and compiles a profile file; errors are the findings, as text.
pub fn load_profile(path: &Path) -> Result<(Profile, Diagnostics), String> {
    let data = read_profile(path).map_err(|d| d.to_string())?;
    profile::compile(&data)
        .into_result()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Re-reads the profile at `path` and publishes it when it changed and is
/// valid; an invalid one is logged and the last good profile stays.
pub fn reload_profile(path: &Path, published: &Published<Profile>, metrics: &Metrics) {
    let data = match read_profile(path) {
        Ok(data) => data,
        Err(diagnostics) => {
            metrics.profile_loaded(None);
            tracing::error!(path = %path.display(), error = %diagnostics, "cannot read the profile; keeping the last good one");
            return;
        }
    };
    if data.digest() == published.get().digest() {
        return;
    }
    match profile::compile(&data).into_result() {
        Ok((profile, diagnostics)) => {
            for d in diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
            {
                tracing::warn!(path = %path.display(), "{d}");
            }
            super::publish(published, metrics, profile, &path.display().to_string());
        }
        Err(e) => {
            metrics.profile_loaded(None);
            tracing::error!(path = %path.display(), error = %e, "profile rejected; keeping the last good one");
        }
    }
}

/// Follows the profile file (or mounted directory) at `path` for ever.
pub async fn follow_profile(
    path: PathBuf,
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
) {
    let mut changes = Changes::watch(&[&path], watch::DEBOUNCE, watch::POLL);
    loop {
        changes.next().await;
        reload_profile(&path, &published, &metrics);
    }
}
