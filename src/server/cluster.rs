//! Wiring the cluster sources into a server's [`State`]: each is spawned,
//! and readiness waits for its first sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::State;
use crate::sources::cluster::{self as sources, NamespaceCache, ProfileFollower};
use crate::sources::pods::{ScaleIn, SentPodFollower};
use crate::sources::selectors::{self, SelectorFollower};

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
        state.assembly.clone(),
        state.metrics.clone(),
        synced,
    );
    tokio::spawn(follower.follow())
}

/// Follows the cluster's Selector objects into `state`'s profile; `/readyz`
/// reports "selectors not synced" until they have been listed (or found not
/// served: the CRD is optional).
pub fn follow_selectors(
    state: &State,
    client: kube::Client,
    instance: Option<String>,
) -> tokio::task::JoinHandle<()> {
    follow_selectors_every(state, client, instance, selectors::RECHECK)
}

/// [`follow_selectors`], asking discovery again every `recheck` while
/// Selector objects are not served.
pub fn follow_selectors_every(
    state: &State,
    client: kube::Client,
    instance: Option<String>,
    recheck: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    state
        .readiness
        .require("selectors not synced", move || flag.load(Ordering::Acquire));
    let follower = SelectorFollower::new(
        client.clone(),
        sources::recorder(client, instance),
        state.assembly.clone(),
        state.metrics.clone(),
        synced,
        recheck,
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
    tokio::spawn(cache.follow(state.metrics.clone()))
}

/// Follows the virtual nodes and the pods sent to them into `state`'s
/// ledger (and, with `scale_in`, adds the deletion cost to pods bound to
/// virtual nodes); `/readyz` reports "pods on virtual nodes not counted
/// yet" until both have been listed, while the profile has budgets.
pub fn follow_sent_pods(
    state: &State,
    client: kube::Client,
    scale_in: Option<ScaleIn>,
) -> tokio::task::JoinHandle<()> {
    let synced = Arc::new(AtomicBool::new(false));
    let (flag, profile) = (synced.clone(), state.profile.clone());
    state
        .readiness
        .require("pods on virtual nodes not counted yet", move || {
            flag.load(Ordering::Acquire) || !profile.get().has_budgets()
        });
    let follower = SentPodFollower::new(
        client,
        state.profile.clone(),
        state.ledger.clone(),
        state.metrics.clone(),
        scale_in,
        synced,
    );
    tokio::spawn(follower.follow())
}
