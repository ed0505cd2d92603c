//! Selector objects (`selectors.eci.aliyun.com`) from the cluster: found by
//! discovery, watched, each version compiled once when it arrives, and fed
//! to the [`Assembly`] as one more rule source.
//!
//! - The CRD is optional: without it the ConfigMap alone applies, with one
//!   warning; discovery is asked again every [`RECHECK`], so installing the
//!   CRD later starts the watch without a restart (and deleting it stops it).
//! - A Selector that does not compile is refused with a Warning Event
//!   `InvalidSelector` (the messages of `validate`) and counted; its last
//!   good version, if any, keeps applying until it is fixed or deleted.
//! - A Selector named like a ConfigMap rule is left out, with the same Event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher::{self, Event as WatchEvent};

use super::assembly::{Assembly, SelectorRules};
use crate::metrics::Metrics;
use crate::profile::node::Node;
use crate::profile::selector_object::{GROUP, KIND, VERSIONS};
use crate::profile::{self, Origin, Rule, Severity, compile_selector};

/// How often discovery is asked again while Selector objects are not served.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Wait before asking discovery again after it failed.
const RETRY: Duration = Duration::from_secs(2);

/// The plural resource name.
pub(crate) const PLURAL: &str = "selectors";

/// Follows the cluster's Selector objects into an [`Assembly`].
pub struct SelectorFollower {
    client: kube::Client,
    recorder: Recorder,
    assembly: Arc<Assembly>,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    recheck: Duration,
    objects: BTreeMap<String, Tracked>,
    /// Whether `objects` changed what applies since it was last given to
    /// the assembly (true at start: the first sync is always published).
    changed: bool,
}

/// What is known of one Selector object.
#[derive(Default)]
struct Tracked {
    /// The last version that compiled, and its digest: what applies.
    good: Option<(Rule, u64)>,
    /// The digest of the version last seen.
    seen: Option<u64>,
    /// Whether the version last seen was refused.
    invalid: bool,
    /// The resourceVersion last reported with an Event, and for what.
    reported: Option<(String, &'static str)>,
    /// The object's reference, for Events.
    reference: ObjectReference,
}

/// Why the watch ended.
enum Ended {
    /// The resource is no longer served (the CRD was deleted).
    Gone,
}

impl SelectorFollower {
    /// A follower feeding `assembly`; `synced` is set once the Selectors
    /// have been listed, or found not served.
    pub fn new(
        client: kube::Client,
        recorder: Recorder,
        assembly: Arc<Assembly>,
        metrics: Arc<Metrics>,
        synced: Arc<AtomicBool>,
        recheck: Duration,
    ) -> Self {
        Self {
            client,
            recorder,
            assembly,
            metrics,
            synced,
            recheck,
            objects: BTreeMap::new(),
            changed: true,
        }
    }

    /// Follows the Selector objects for ever.
    pub async fn follow(mut self) {
        let mut absent_reported = false;
        let mut failure_reported: Option<String> = None;
        loop {
            match served_version(&self.client).await {
                Ok(Some(version)) => {
                    failure_reported = None;
                    tracing::info!(
                        resource = %format_args!("{PLURAL}.{GROUP}/{version}"),
                        "watching Selector objects"
                    );
                    absent_reported = false;
                    let Ended::Gone = self.watch(&version).await;
                    self.metrics.selector_crd_installed.set(0);
                    tracing::warn!(
                        "Selector objects are no longer served (CRD {PLURAL}.{GROUP} deleted?): their rules no longer apply"
                    );
                    self.forget_all();
                }
                Ok(None) => {
                    if !absent_reported {
                        tracing::warn!(
                            "CRD {PLURAL}.{GROUP} is not installed: the profile ConfigMap alone applies (checked again every {}s)",
                            self.recheck.as_secs()
                        );
                        absent_reported = true;
                    }
                    self.forget_all();
                    self.set_synced();
                }
                Err(e) => {
                    // The API server cannot be asked: as for the ConfigMap,
                    // not synced yet (the Selectors known keep applying), and
                    // asked again soon.
                    let text = e.to_string();
                    if failure_reported.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "cannot discover Selector objects; retrying");
                        failure_reported = Some(text);
                    }
                    tokio::time::sleep(RETRY.min(self.recheck)).await;
                    continue;
                }
            }
            tokio::time::sleep(self.recheck).await;
        }
    }

    fn set_synced(&self) {
        if !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!(selectors = self.objects.len(), "Selector objects synced");
        }
    }

    /// Watches the Selectors of `version` until they are no longer served.
    async fn watch(&mut self, version: &str) -> Ended {
        let resource = ApiResource {
            group: GROUP.into(),
            version: version.into(),
            api_version: format!("{GROUP}/{version}"),
            kind: KIND.into(),
            plural: PLURAL.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listed = BTreeSet::new();
        while let Some(event) = stream.next().await {
            self.metrics.watch_event("selectors", &event);
            match event {
                Ok(WatchEvent::Init) => listed.clear(),
                Ok(WatchEvent::InitApply(object)) => {
                    if let Some(name) = self.apply(&object).await {
                        listed.insert(name);
                    }
                }
                Ok(WatchEvent::InitDone) => {
                    // Deleted while no watch was open.
                    let before = self.objects.len();
                    self.objects.retain(|name, _| listed.contains(name));
                    self.changed |= self.objects.len() != before;
                    self.publish().await;
                    self.metrics.selector_crd_installed.set(1);
                    self.set_synced();
                }
                Ok(WatchEvent::Apply(object)) => {
                    self.apply(&object).await;
                    self.publish().await;
                }
                Ok(WatchEvent::Delete(object)) => {
                    if let Some(name) = &object.metadata.name {
                        self.changed |= self.objects.remove(name).is_some();
                        tracing::info!(selector = %name, "Selector deleted");
                    }
                    self.publish().await;
                }
                Err(e) if is_status(&e, 404) => return Ended::Gone,
                Err(e) if is_status(&e, 403) => {
                    // Not allowed to list them (RBAC of an older install):
                    // serving the ConfigMap's rules beats never being ready,
                    // and the gauge says they are not watched.
                    self.metrics.selector_crd_installed.set(0);
                    tracing::error!(error = %e, "cannot list Selector objects: the profile ConfigMap alone applies until this is allowed (get, list and watch on selectors.eci.aliyun.com)");
                    self.set_synced();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Selector watch failed; retrying, the Selectors known keep applying")
                }
            }
        }
        Ended::Gone
    }

    /// Compiles a version of a Selector; returns its name.
    async fn apply(&mut self, object: &DynamicObject) -> Option<String> {
        let name = object.metadata.name.clone()?;
        let json = serde_json::to_value(object).ok()?;
        let compiled = compile_selector(&Node::from_json(&json), &Origin::None);
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        let tracked = self.objects.entry(name.clone()).or_default();
        tracked.reference = ObjectReference {
            api_version: object.types.as_ref().map(|t| t.api_version.clone()),
            kind: Some(KIND.into()),
            name: Some(name.clone()),
            uid: object.metadata.uid.clone(),
            resource_version: object.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        if tracked.seen == Some(compiled.digest) {
            return Some(name);
        }
        tracked.seen = Some(compiled.digest);
        self.changed = true;
        for d in compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            tracing::warn!("{d}");
        }
        match compiled.rule {
            Some(rule) => {
                if tracked.invalid {
                    tracing::info!(selector = %name, "Selector fixed");
                }
                tracked.invalid = false;
                tracked.good = Some((rule, compiled.digest));
            }
            None => {
                tracked.invalid = true;
                let errors: Vec<String> = compiled
                    .diagnostics
                    .errors()
                    .map(ToString::to_string)
                    .collect();
                let keeps = if tracked.good.is_some() {
                    "its last good version keeps applying"
                } else {
                    "it does not apply"
                };
                tracing::error!(selector = %name, errors = %errors.join("; "), "Selector refused: {keeps}");
                let note = format!("Selector refused, {keeps}:\n{}", errors.join("\n"));
                self.report(&name, &version, "invalid", note).await;
            }
        }
        Some(name)
    }

    /// Emits a Warning `InvalidSelector` Event about `name`, once per
    /// resourceVersion and cause.
    async fn report(&mut self, name: &str, version: &str, cause: &'static str, note: String) {
        let Some(tracked) = self.objects.get_mut(name) else {
            return;
        };
        let key = (version.to_string(), cause);
        if tracked.reported.as_ref() == Some(&key) {
            return;
        }
        tracked.reported = Some(key);
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidSelector".into(),
            // An Event's note is limited to 1 kB.
            note: Some(crate::truncate::truncate(&note, 1024).into_owned()),
            action: "LoadSelector".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &tracked.reference).await {
            tracing::warn!(error = %e, selector = %name, "cannot emit the Event");
        }
    }

    /// Gives the good versions to the assembly when they changed (an event
    /// that changed nothing merges nothing), then reports name clashes.
    async fn publish(&mut self) {
        if self.changed {
            let rules: SelectorRules = self
                .objects
                .iter()
                .filter_map(|(name, t)| Some((name.clone(), t.good.clone()?)))
                .collect();
            let invalid = self.objects.values().filter(|t| t.invalid).count();
            self.assembly.set_selectors(rules, invalid);
            self.changed = false;
        }
        for name in self.assembly.clashes() {
            let version = self
                .objects
                .get(&name)
                .and_then(|t| t.reference.resource_version.clone())
                .unwrap_or_default();
            self.report(&name, &version, "clash", profile::clash_message(&name))
                .await;
        }
    }

    /// Drops every Selector (their resource is not served); nothing to do
    /// when there were none and the assembly already knows it.
    fn forget_all(&mut self) {
        self.changed |= !self.objects.is_empty();
        self.objects.clear();
        if self.changed {
            self.assembly.set_selectors(SelectorRules::new(), 0);
            self.changed = false;
        }
    }
}

/// The version of Selector objects to watch: the first of [`VERSIONS`] the
/// API server serves; `None` when the group is not served.
pub(crate) async fn served_version(client: &kube::Client) -> Result<Option<String>, kube::Error> {
    let request = axum::http::Request::get(format!("/apis/{GROUP}"))
        .body(Vec::new())
        .expect("a valid request");
    match client.request::<APIGroup>(request).await {
        Ok(group) => Ok(VERSIONS
            .iter()
            .find(|v| group.versions.iter().any(|served| served.version == **v))
            .map(|v| v.to_string())),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a watch error is the API server's answer `code`.
fn is_status(error: &watcher::Error, code: u16) -> bool {
    let api_error = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        _ => return false,
    };
    matches!(api_error, kube::Error::Api(status) if status.code == code)
}
