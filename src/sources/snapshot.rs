//! One-time reads of a cluster, for `diff`: the profile in force (the
//! ConfigMap and the Selector objects) and the workloads, pods and
//! namespaces, each kind listed in pages. Read-only: `get` on the ConfigMap,
//! `get` on the `eci.aliyun.com` group, `list` on everything else.

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
    for object in list(client, &resource).await? {
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

/// Every Namespace, Pod and workload of the cluster (the kinds of
/// [`crate::workloads::KINDS`]), each with its `kind`.
pub async fn inventory(client: &kube::Client) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for resource in &inventory_resources() {
        objects.extend(list(client, resource).await?);
    }
    Ok(objects)
}

/// What [`inventory`] lists.
fn inventory_resources() -> [ApiResource; 9] {
    [
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<ReplicaSet>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<ReplicationController>(&()),
    ]
}

/// The resources [`inventory`] lists, as RBAC names them (`pods`,
/// `deployments.apps`), for the documented ClusterRole and its test.
pub fn inventory_resource_names() -> Vec<String> {
    inventory_resources().iter().map(plural_name).collect()
}

/// Lists every object of `resource`, in every namespace, page by page;
/// each object gets its `apiVersion` and `kind` (list items lack them).
async fn list(client: &kube::Client, resource: &ApiResource) -> Result<Vec<Value>, String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut objects = Vec::new();
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
            objects.push(serde_json::to_value(object).expect("an object is JSON"));
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(objects),
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
