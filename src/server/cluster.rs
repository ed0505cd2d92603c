//! Wiring the cluster sources into a server's [`State`]: each is spawned,
//! and readiness waits for its first sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::State;
use crate::sources::cluster::{NamespaceCache, ProfileFollower};

/// Follows the profile ConfigMap `namespace/name` into `state`; `/readyz`
/// reports "profile not synced" until it has been read (or found absent).
pub fn follow_profile_configmap(
    state: &State,
    client: kube::Client,
    namespace: &str,
    name: &str,
    instance: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    state
        .readiness
        .require("profile not synced", move || flag.load(Ordering::Acquire));
    let follower = ProfileFollower::new(
        client,
        namespace,
        name,
        instance,
        state.profile.clone(),
        state.metrics.clone(),
        synced,
    );
    tokio::spawn(follower.follow())
}

/// Follows the namespaces into `cache` (which `state` must look labels up
/// in); `/readyz` reports "namespace labels not synced" until the first list.
pub fn follow_namespaces(state: &State, cache: Arc<NamespaceCache>) -> tokio::task::JoinHandle<()> {
    let synced = cache.clone();
    state
        .readiness
        .require("namespace labels not synced", move || synced.is_synced());
    tokio::spawn(cache.follow())
}
