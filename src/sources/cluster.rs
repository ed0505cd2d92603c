//! The cluster as a source, through kube-rs: the profile ConfigMap (one
//! object, watched by name, so RBAC can be limited to it) and namespace
//! labels (a metadata-only watch of Namespaces, kept in memory), so that
//! nothing on the request path waits for the API server but a first look
//! at a namespace created a moment ago.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WatchEvent};

use super::assembly::Assembly;
use crate::labels::Labels;
use crate::metrics::Metrics;
use crate::namespaces::NamespaceLookup;
use crate::profile::{self, Profile, ProfileData, Severity};

/// How long the request path waits for an unknown namespace.
pub const NAMESPACE_FETCH_TIMEOUT: Duration = Duration::from_millis(500);
/// The `reportingController` of the Events this process emits.
pub const REPORTING_CONTROLLER: &str = "eci-profile";

/// Namespace labels from a metadata-only watch of Namespaces.
pub struct NamespaceCache {
    api: Api<PartialObjectMeta<Namespace>>,
    labels: RwLock<HashMap<String, Arc<Labels>>>,
    /// Namespaces already fetched on a miss (each is asked for once).
    fetched: Mutex<HashSet<String>>,
    synced: AtomicBool,
}

impl NamespaceCache {
    /// An empty cache reading namespaces' metadata through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
            labels: RwLock::default(),
            fetched: Mutex::default(),
            synced: AtomicBool::new(false),
        }
    }

    /// Whether the first list has been received.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Number of namespaces known.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no namespace is known.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Labels>>> {
        self.labels.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Labels>>> {
        self.labels.write().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, meta: &PartialObjectMeta<Namespace>) {
        if let Some(name) = &meta.metadata.name {
            let labels: Labels = meta
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            self.write().insert(name.clone(), Arc::new(labels));
        }
    }

    /// Follows the namespaces for ever; lost watches are retried with backoff.
    pub async fn follow(self: Arc<Self>, metrics: Arc<Metrics>) {
        let stream =
            watcher::watcher(self.api.clone(), watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listing: HashMap<String, Arc<Labels>> = HashMap::new();
        while let Some(event) = stream.next().await {
            metrics.watch_event("namespaces", &event);
            match event {
                Ok(WatchEvent::Init) => listing.clear(),
                Ok(WatchEvent::InitApply(meta)) => {
                    if let Some(name) = meta.metadata.name {
                        let labels: Labels = meta
                            .metadata
                            .labels
                            .unwrap_or_default()
                            .into_iter()
                            .collect();
                        listing.insert(name, Arc::new(labels));
                    }
                }
                Ok(WatchEvent::InitDone) => {
                    let count = listing.len();
                    *self.write() = std::mem::take(&mut listing);
                    if !self.synced.swap(true, Ordering::AcqRel) {
                        tracing::info!(namespaces = count, "namespace labels synced");
                    }
                }
                Ok(WatchEvent::Apply(meta)) => self.insert(&meta),
                Ok(WatchEvent::Delete(meta)) => {
                    if let Some(name) = &meta.metadata.name {
                        self.write().remove(name);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "namespace watch failed; retrying, the cached labels keep serving")
                }
            }
        }
    }
}

impl NamespaceLookup for NamespaceCache {
    fn labels(&self, namespace: &str) -> Option<Arc<Labels>> {
        self.read().get(namespace).cloned()
    }

    fn fetch<'a>(&'a self, namespace: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let first = self
                .fetched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(namespace.to_string());
            if !first {
                return;
            }
            match tokio::time::timeout(NAMESPACE_FETCH_TIMEOUT, self.api.get_opt(namespace)).await {
                Ok(Ok(Some(meta))) => {
                    tracing::debug!(namespace, "namespace fetched");
                    self.insert(&meta);
                }
                Ok(Ok(None)) => tracing::debug!(namespace, "namespace not found"),
                Ok(Err(e)) => tracing::warn!(namespace, error = %e, "cannot fetch namespace"),
                Err(_) => tracing::warn!(namespace, "fetching the namespace timed out"),
            }
        })
    }
}

/// The Event recorder of this process; `instance` names the replica.
pub fn recorder(client: kube::Client, instance: Option<String>) -> Recorder {
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER.into(),
        instance,
    };
    Recorder::new(client, reporter)
}

/// Follows the profile ConfigMap `namespace/name` for ever and publishes each
/// valid version; see [`ProfileFollower::handle`] for what each change does.
pub struct ProfileFollower {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    recorder: Recorder,
    assembly: Arc<Assembly>,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    /// The last resourceVersion an Event was emitted for.
    reported: Option<String>,
    /// The digest of the data last tried, so that data that stays invalid
    /// is logged and counted once.
    tried: Option<u64>,
}

impl ProfileFollower {
    /// A follower of `namespace/name`, feeding `assembly`; `instance` names
    /// this replica in Events.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        instance: Option<String>,
        assembly: Arc<Assembly>,
        metrics: Arc<Metrics>,
        synced: Arc<AtomicBool>,
    ) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.into(),
            name: name.into(),
            recorder: recorder(client, instance),
            assembly,
            metrics,
            synced,
            reported: None,
            tried: None,
        }
    }

    /// Watches the one ConfigMap (field selector `metadata.name`) for ever;
    /// lost watches are retried with backoff and the last good profile keeps serving.
    pub async fn follow(mut self) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let stream = watcher::watcher(self.api.clone(), config).default_backoff();
        futures_util::pin_mut!(stream);
        let mut seen_in_listing = false;
        while let Some(event) = stream.next().await {
            self.metrics.watch_event("profile-configmap", &event);
            match event {
                Ok(WatchEvent::Init) => seen_in_listing = false,
                Ok(WatchEvent::InitApply(cm)) => {
                    seen_in_listing = true;
                    self.handle(Some(&cm)).await;
                }
                Ok(WatchEvent::InitDone) => {
                    if !seen_in_listing {
                        self.handle(None).await;
                    }
                    if !self.synced.swap(true, Ordering::AcqRel) {
                        tracing::info!(configmap = %format_args!("{}/{}", self.namespace, self.name), "profile synced");
                    }
                }
                Ok(WatchEvent::Apply(cm)) => self.handle(Some(&cm)).await,
                Ok(WatchEvent::Delete(_)) => self.handle(None).await,
                Err(e) => {
                    tracing::warn!(error = %e, "profile watch failed; retrying, the last good profile keeps serving")
                }
            }
        }
    }

    /// One version of the ConfigMap (`None`: it does not exist). A valid new
    /// profile is published and reported with a Normal `ProfileLoaded` Event
    /// (once per resourceVersion); an invalid one is reported with a Warning
    /// `InvalidProfile` Event (logged and counted once per content) and the
    /// last good profile stays; no ConfigMap means no selectors.
    /// `profile_reload_failing` stays 1 for as long as the ConfigMap holds a
    /// refused profile, and is cleared when it holds the profile in use again.
    pub async fn handle(&mut self, configmap: Option<&ConfigMap>) {
        let Some(cm) = configmap else {
            self.tried = None;
            let empty = Profile::empty();
            if self.assembly.configmap().digest() != empty.digest() {
                tracing::warn!(configmap = %format_args!("{}/{}", self.namespace, self.name), "profile ConfigMap absent: no selectors");
                self.publish(empty);
            } else {
                self.metrics.profile_current();
            }
            return;
        };
        let data = ProfileData::from_map(cm.data.clone().unwrap_or_default());
        let digest = data.digest();
        let version = cm.metadata.resource_version.clone();
        let fresh = version.is_none() || version != self.reported;
        let tried = self.tried.replace(digest) == Some(digest);
        if digest == self.assembly.configmap().digest() {
            self.metrics.profile_current();
            if !fresh {
                return;
            }
        }
        match profile::compile(&data).into_result() {
            Ok((new, diagnostics)) => {
                for d in diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Warning)
                {
                    tracing::warn!("{d}");
                }
                let selectors = new.rule_count();
                if digest != self.assembly.configmap().digest() {
                    self.publish(new);
                }
                if fresh {
                    self.event(
                        cm,
                        EventType::Normal,
                        "ProfileLoaded",
                        format!("profile loaded: {selectors} selectors"),
                    )
                    .await;
                }
            }
            Err(e) => {
                if !tried {
                    self.metrics.profile_loaded(None);
                    tracing::error!(error = %e, "profile rejected; keeping the last good one");
                }
                if fresh {
                    self.event(cm, EventType::Warning, "InvalidProfile", e.to_string())
                        .await;
                }
            }
        }
        self.reported = version;
    }

    /// Puts a compiled profile in use.
    fn publish(&self, profile: Profile) {
        let source = format!("configmap {}/{}", self.namespace, self.name);
        self.assembly.set_configmap(profile, &source);
    }

    async fn event(&self, cm: &ConfigMap, type_: EventType, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            namespace: cm
                .metadata
                .namespace
                .clone()
                .or_else(|| Some(self.namespace.clone())),
            name: cm.metadata.name.clone(),
            uid: cm.metadata.uid.clone(),
            resource_version: cm.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_,
            reason: reason.into(),
            // An Event's note is limited to 1 kB.
            note: Some(crate::truncate::truncate(&note, 1024).into_owned()),
            action: "LoadProfile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason, "cannot emit the Event");
        }
    }
}
