//! One-time reads of a cluster, for `diff`: the profile in force (the
//! ConfigMap and the Selector objects) and the workloads, pods and
//! namespaces, each kind listed in pages. Read-only: `get` on the ConfigMap,
//! `get` on the `eci.aliyun.com` group, `list` on everything else.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ReplicationController};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use crate::profile::node::Node;
use crate::profile::selector_object::{GROUP, KIND};
use crate::profile::{Manifests, Origin, ProfileData, compile_selector};

/// Objects asked for in one page.
pub const PAGE: u32 = 500;

/// The profile in force: the ConfigMap `namespace/name` (none when absent)
/// and every Selector object that compiles (when their CRD is installed).
/// Selectors that do not compile are left out, as the webhook leaves them
/// out, each with a note.
pub async fn profile_in_force(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(Manifests, Vec<String>), String> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let configmap = configmaps
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{name}: {e}"))?;
    let mut notes = Vec::new();
    if configmap.is_none() {
        notes.push(format!(
            "ConfigMap {namespace}/{name} is absent: the profile in force has no ConfigMap rules"
        ));
    }
    let mut manifests = Manifests {
        configmap: configmap.map(|cm| ProfileData::from_map(cm.data.unwrap_or_default())),
        selectors: Vec::new(),
    };
    let version = super::selectors::served_version(client)
        .await
        .map_err(|e| format!("cannot ask for the {GROUP} API group: {e}"))?;
    let Some(version) = version else {
        return Ok((manifests, notes));
    };
    let resource = ApiResource {
        group: GROUP.into(),
        version: version.clone(),
        api_version: format!("{GROUP}/{version}"),
        kind: KIND.into(),
        plural: super::selectors::PLURAL.into(),
    };
    let mut objects = Vec::new();
    list(client, &resource, |object| objects.push(object)).await?;
    for object in objects {
        let node = Node::from_json(&object);
        let compiled = compile_selector(&node, &Origin::None);
        if compiled.rule.is_some() {
            manifests.selectors.push((node, Origin::None));
        } else {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let errors: Vec<String> = compiled
                .diagnostics
                .errors()
                .map(ToString::to_string)
                .collect();
            notes.push(format!(
                "Selector {} does not compile and is left out (the webhook applies its last good version, if it saw one): {}",
                crate::truncate::echo(name),
                errors.join("; ")
            ));
        }
    }
    Ok((manifests, notes))
}

/// What [`inventory`] read: the objects kept, and how many were left out
/// because their controller had been listed before them.
#[derive(Debug, Default)]
pub struct Listed {
    pub objects: Vec<Value>,
    pub owned: usize,
}

/// Every Namespace, Pod and workload of the cluster (the kinds of
/// [`crate::workloads::KINDS`]), each with its `kind`. Controllers are
/// listed before what they own, and an object whose controller was listed
/// is dropped as its page arrives: a Deployment's ReplicaSets (up to
/// `revisionHistoryLimit` of them) and their pods are never held, so memory
/// follows the number of workloads, not of pods.
pub async fn inventory(client: &kube::Client) -> Result<Listed, String> {
    let mut listed = Listed::default();
    let mut uids = HashSet::new();
    for resource in &inventory_resources() {
        list(client, resource, |object| {
            if let Some(uid) = object["metadata"]["uid"].as_str() {
                uids.insert(uid.to_string());
            }
            let owner_listed = object["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|owner| owner["controller"] == true)
                .filter_map(|owner| owner["uid"].as_str())
                .any(|uid| uids.contains(uid));
            if owner_listed {
                listed.owned += 1;
            } else {
                listed.objects.push(object);
            }
        })
        .await?;
    }
    Ok(listed)
}

/// What [`inventory`] lists, owners before what they own.
fn inventory_resources() -> [ApiResource; 9] {
    [
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<ReplicationController>(&()),
        ApiResource::erase::<ReplicaSet>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<Pod>(&()),
    ]
}

/// The resources [`inventory`] lists, as RBAC names them (`pods`,
/// `deployments.apps`), for the documented ClusterRole and its test.
pub fn inventory_resource_names() -> Vec<String> {
    inventory_resources().iter().map(plural_name).collect()
}

/// Lists every object of `resource`, in every namespace, page by page,
/// giving each to `each` with its `apiVersion` and `kind` (list items lack
/// them).
async fn list(
    client: &kube::Client,
    resource: &ApiResource,
    mut each: impl FnMut(Value),
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| format!("cannot list {}: {e}", plural_name(resource)))?;
        for mut object in page.items {
            object.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            each(serde_json::to_value(object).expect("an object is JSON"));
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// `deployments.apps`, `pods`: how RBAC and kubectl name a resource.
fn plural_name(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}
