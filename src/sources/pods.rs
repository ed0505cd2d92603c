//! The pods sent to virtual nodes, as the cluster shows them: what the
//! budgets count and what the scale-in order annotates.
//!
//! Two watches, both filtered by the API server so that memory grows with
//! the pods sent to virtual nodes, not with the cluster:
//! - the virtual nodes: a metadata-only watch of Nodes by the virtual
//!   node's nodeSelector labels (restarted when the profile changes them);
//! - the sent pods: a watch of Pods by [`SENT_LABEL`], the label every pod
//!   the webhook sends to virtual nodes carries.
//!
//! Each version of a pod goes into the [`Ledger`], which counts it while it
//! is live and not bound, or bound to a virtual node.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;

use crate::budgets::ledger::Seen;
use crate::budgets::{Ledger, RESERVATION_ANNOTATION, requests};
use crate::decision::{APPLIED_ANNOTATION, SENT_LABEL};
use crate::labels::Labels;
use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::published::Published;

/// The annotation the ReplicaSet controller removes pods by, lowest first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How often the profile is looked at for a change of the virtual node's labels.
const PROFILE_RECHECK: Duration = Duration::from_secs(2);
/// Deletion-cost patches waiting at once; more wait for the pod's next event.
const PATCH_QUEUE: usize = 1024;

/// A pod, read for what counting needs (the rest of the object is skipped).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SentPod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: crate::pod::Spec,
    #[serde(default)]
    pub status: Status,
}

/// `status`: the phase only.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Status {
    pub phase: Option<String>,
}

impl kube::Resource for SentPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl SentPod {
    /// Neither terminal nor being deleted: what ResourceQuota counts.
    pub fn is_live(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && !matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// The pod as the ledger takes it (`None` without a uid or namespace).
    pub fn seen(&self) -> Option<Seen<'_>> {
        Some(Seen {
            uid: self.metadata.uid.as_deref()?,
            namespace: self.metadata.namespace.as_deref()?,
            node: self.spec.node_name.as_deref(),
            amounts: requests::of_spec(&self.spec),
            live: self.is_live(),
            reservation: self.annotation(RESERVATION_ANNOTATION),
        })
    }
}

/// The scale-in order: pods selected by a rule that bind to a virtual node
/// get this deletion cost, unless they have one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleIn {
    pub deletion_cost: i32,
}

/// Follows the virtual nodes and the sent pods into a [`Ledger`].
pub struct SentPodFollower {
    client: kube::Client,
    profile: Arc<Published<Profile>>,
    ledger: Arc<Mutex<Ledger>>,
    metrics: Arc<Metrics>,
    scale_in: Option<ScaleIn>,
    nodes_synced: Arc<AtomicBool>,
    synced: Arc<AtomicBool>,
}

impl SentPodFollower {
    /// A follower that sets `synced` once both watches have listed.
    pub fn new(
        client: kube::Client,
        profile: Arc<Published<Profile>>,
        ledger: Arc<Mutex<Ledger>>,
        metrics: Arc<Metrics>,
        scale_in: Option<ScaleIn>,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Self {
            client,
            profile,
            ledger,
            metrics,
            scale_in,
            nodes_synced: Arc::default(),
            synced,
        }
    }

    /// Follows both for ever; lost watches are retried with backoff.
    pub async fn follow(self) {
        let nodes = follow_virtual_nodes(
            self.client.clone(),
            self.profile.clone(),
            self.ledger.clone(),
            self.nodes_synced.clone(),
            self.metrics.clone(),
        );
        tokio::join!(nodes, self.follow_pods());
    }

    async fn follow_pods(&self) {
        // Pods are classified by the node they are bound to: wait for the nodes.
        while !self.nodes_synced.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let annotator = self
            .scale_in
            .map(|scale_in| Annotator::start(self.client.clone(), scale_in, self.metrics.clone()));
        let api: Api<SentPod> = Api::all(self.client.clone());
        let config = watcher::Config::default().labels(&format!("{SENT_LABEL}=true"));
        let stream = watcher::watcher(api, config).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            self.metrics.watch_event("sent-pods", &event);
            match event {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        listed.insert(uid.clone());
                    }
                    self.apply(&pod, annotator.as_ref());
                }
                Ok(Event::InitDone) => {
                    let mut ledger = self.lock();
                    ledger.retain(|uid| listed.contains(uid));
                    let (tracked, _) = ledger.len();
                    drop(ledger);
                    listed = HashSet::new();
                    if !self.synced.swap(true, Ordering::AcqRel) {
                        self.metrics.sent_pods_synced.set(1);
                        tracing::info!(pods = tracked, "pods sent to virtual nodes synced");
                    }
                }
                Ok(Event::Apply(pod)) => self.apply(&pod, annotator.as_ref()),
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.lock().forget(uid);
                    }
                    if let Some(annotator) = &annotator {
                        annotator.forget(&pod);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch of the pods sent to virtual nodes failed; retrying")
                }
            }
        }
    }

    fn apply(&self, pod: &SentPod, annotator: Option<&Annotator>) {
        let Some(seen) = pod.seen() else { return };
        let on_virtual_node = {
            let mut ledger = self.lock();
            ledger.observe(seen);
            seen.node.is_some_and(|node| ledger.is_virtual(node))
        };
        if let Some(annotator) = annotator {
            annotator.consider(pod, on_virtual_node);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The label selector of the virtual nodes.
fn node_selector(profile: &Profile) -> String {
    let labels: &Labels = &profile.virtual_node().node_selector;
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Follows the names of the nodes carrying the virtual node's labels into
/// `ledger`, watching again when the profile changes them.
async fn follow_virtual_nodes(
    client: kube::Client,
    profile: Arc<Published<Profile>>,
    ledger: Arc<Mutex<Ledger>>,
    synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    loop {
        let selector = node_selector(&profile.get());
        let config = watcher::Config::default().labels(&selector);
        let stream = watcher::watcher(api.clone(), config).default_backoff();
        futures_util::pin_mut!(stream);
        let mut nodes: HashSet<String> = HashSet::new();
        let mut listing: HashSet<String> = HashSet::new();
        let mut recheck = tokio::time::interval(PROFILE_RECHECK);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = recheck.tick() => {
                    if node_selector(&profile.get()) != selector {
                        tracing::info!("the virtual node's labels changed: watching nodes again");
                        break;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            metrics.watch_event("virtual-nodes", &event);
            let name = |meta: &PartialObjectMeta<Node>| meta.metadata.name.clone();
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(meta)) => listing.extend(name(&meta)),
                Ok(Event::InitDone) => {
                    nodes = std::mem::take(&mut listing);
                    if !synced.swap(true, Ordering::AcqRel) {
                        tracing::info!(nodes = nodes.len(), selector, "virtual nodes synced");
                    }
                }
                Ok(Event::Apply(meta)) => {
                    nodes.extend(name(&meta));
                }
                Ok(Event::Delete(meta)) => {
                    if let Some(name) = name(&meta) {
                        nodes.remove(&name);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch of the virtual nodes failed; retrying");
                    continue;
                }
            }
            if synced.load(Ordering::Acquire) {
                ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_virtual_nodes(nodes.clone());
            }
        }
    }
}

/// Adds the deletion cost to pods bound to virtual nodes, one patch at a
/// time, each pod once (again after a failure, at its next event).
struct Annotator {
    queue: tokio::sync::mpsc::Sender<Target>,
    /// Pods asked for and not yet seen with a cost, by uid.
    asked: Arc<Mutex<HashSet<String>>>,
}

/// A pod to annotate: namespace, name, uid, and the version it was seen at
/// (the patch applies only to that version: a cost set since is kept).
struct Target {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
}

impl Annotator {
    fn start(client: kube::Client, scale_in: ScaleIn, metrics: Arc<Metrics>) -> Self {
        let (queue, mut waiting) = tokio::sync::mpsc::channel::<Target>(PATCH_QUEUE);
        let asked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let done = asked.clone();
        tokio::spawn(async move {
            let cost = scale_in.deletion_cost.to_string();
            while let Some(target) = waiting.recv().await {
                let api: Api<SentPod> = Api::namespaced(client.clone(), &target.namespace);
                let patch = serde_json::json!({"metadata": {
                    "uid": target.uid,
                    "resourceVersion": target.resource_version,
                    "annotations": {DELETION_COST_ANNOTATION: cost},
                }});
                let result = api
                    .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                match &result {
                    Ok(_) => tracing::debug!(
                        namespace = target.namespace,
                        pod = target.name,
                        cost,
                        "deletion cost added"
                    ),
                    // Changed since (a cost set by the user, or any update):
                    // its next event decides again.
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(namespace = target.namespace, pod = target.name, error = %e, "cannot add the deletion cost")
                    }
                }
                metrics.deletion_cost_patch(match &result {
                    Ok(_) => "success",
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => "conflict",
                    Err(_) => "failure",
                });
                if result.is_err() {
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&target.uid);
                }
            }
        });
        Self { queue, asked }
    }

    /// Queues `pod` if a rule selected it, it is bound to a virtual node, it
    /// is live and has no deletion cost.
    fn consider(&self, pod: &SentPod, on_virtual_node: bool) {
        let meta = &pod.metadata;
        let (Some(namespace), Some(name), Some(uid), Some(version)) = (
            &meta.namespace,
            &meta.name,
            &meta.uid,
            &meta.resource_version,
        ) else {
            return;
        };
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if pod.annotation(DELETION_COST_ANNOTATION).is_some() {
            asked.remove(uid);
            return;
        }
        let wanted =
            on_virtual_node && pod.is_live() && pod.annotation(APPLIED_ANNOTATION).is_some();
        if !wanted || asked.contains(uid) {
            return;
        }
        let target = Target {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            resource_version: version.clone(),
        };
        if self.queue.try_send(target).is_ok() {
            asked.insert(uid.clone());
        }
    }

    fn forget(&self, pod: &SentPod) {
        if let Some(uid) = &pod.metadata.uid {
            self.asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }
}
