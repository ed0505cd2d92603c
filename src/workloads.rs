//! Workloads and the pods they create: the pod a Deployment, StatefulSet,
//! DaemonSet, Job, CronJob, ReplicaSet or ReplicationController would create
//! from its template, and which objects of an inventory (`kubectl get -A -o
//! yaml`, or lists read from a cluster) are judged.
//!
//! A pod made from a template is what the controller sends to the API
//! server, less what it adds at creation and that the template does not
//! hold: labels such as `pod-template-hash` (Deployment),
//! `controller-revision-hash`, `statefulset.kubernetes.io/pod-name` and
//! `apps.kubernetes.io/pod-index` (StatefulSet), `pod-template-generation`
//! (DaemonSet). The labels a Job's pods get are added (the Job's name and
//! uid); a CronJob's next Job name is unknown, so its last one stands in.
//! Rules selecting on those are approximated.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::namespaces::StaticNamespaces;

/// Workload kinds with a pod template, and the apiVersion and kind of the
/// owner of the pods they create.
pub const KINDS: &[(&str, (&str, &str))] = &[
    ("Deployment", ("apps/v1", "ReplicaSet")),
    ("ReplicaSet", ("apps/v1", "ReplicaSet")),
    ("StatefulSet", ("apps/v1", "StatefulSet")),
    ("DaemonSet", ("apps/v1", "DaemonSet")),
    ("Job", ("batch/v1", "Job")),
    ("CronJob", ("batch/v1", "Job")),
    ("ReplicationController", ("v1", "ReplicationController")),
];

/// Whether `kind` is one of [`KINDS`].
pub fn is_workload(kind: &str) -> bool {
    KINDS.iter().any(|(k, _)| *k == kind)
}

/// The pod the controller of `workload` would create from its template
/// (with `generateName` and the controller's owner reference); `None` when
/// it is not a workload kind or has no template.
pub fn pod_from_template(workload: &Value) -> Option<Value> {
    let kind = workload["kind"].as_str()?;
    let (_, (owner_api_version, owner_kind)) = KINDS.iter().find(|(k, _)| *k == kind)?;
    let template = if kind == "CronJob" {
        workload.pointer("/spec/jobTemplate/spec/template")?
    } else {
        workload.pointer("/spec/template")?
    };
    let name = workload["metadata"]["name"].as_str().unwrap_or("workload");
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let metadata_map = metadata.as_object_mut()?;
    metadata_map.insert("generateName".into(), format!("{name}-").into());
    if matches!(kind, "Job" | "CronJob") {
        add_job_labels(workload, metadata_map);
    }
    metadata_map.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": owner_api_version, "kind": owner_kind, "name": name, "controller": true}]),
    );
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// Adds the labels the API server gives a Job's pod template (unless the
/// Job picks its own selector): the Job's name and, when known, its uid. A
/// CronJob's Jobs are named after the schedule time in minutes; the last
/// one (`status.lastScheduleTime`), else 0, stands in for it.
fn add_job_labels(workload: &Value, metadata: &mut serde_json::Map<String, Value>) {
    if workload.pointer("/spec/manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    let name = workload["metadata"]["name"].as_str().unwrap_or("job");
    let (job_name, uid) = if workload["kind"] == "CronJob" {
        let minutes = workload
            .pointer("/status/lastScheduleTime")
            .and_then(Value::as_str)
            .and_then(unix_minutes)
            .unwrap_or(0);
        (format!("{name}-{minutes}"), None)
    } else {
        (name.to_string(), workload["metadata"]["uid"].as_str())
    };
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(labels) = labels else { return };
    let mut add = |key: &str, value: &str| {
        labels
            .entry(key)
            .or_insert_with(|| Value::String(value.to_string()));
    };
    add("batch.kubernetes.io/job-name", &job_name);
    add("job-name", &job_name);
    if let Some(uid) = uid {
        add("batch.kubernetes.io/controller-uid", uid);
        add("controller-uid", uid);
    }
}

/// Minutes since the Unix epoch of an RFC 3339 UTC time (`2026-11-30T02:00:00Z`).
fn unix_minutes(time: &str) -> Option<i64> {
    let (date, clock) = time.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, d) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<f64>());
    let (hh, mm) = (clock.next()?.ok()? as i64, clock.next()?.ok()? as i64);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 1440 + hh * 60 + mm)
}

/// Reads objects from the text of a file: one JSON document, or YAML of one
/// or more documents (`---`; JSON that does not parse is read as YAML, for
/// its message). Made for inventories: the parser's node,
/// event and document limits grow with the size of the text (a 10 MB
/// `kubectl get -A -o yaml` holds about a million nodes), while its limits
/// on aliases, anchors and nesting stay, so that a small file cannot expand
/// into a large one. Empty documents are left out.
pub fn parse_objects(text: &str) -> Result<Vec<Value>, String> {
    if text.trim_start().starts_with('{')
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        return Ok(vec![value]);
    }
    let options = serde_saphyr::options! {
        budget: inventory_budget(text.len()),
    };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| format!("not YAML or JSON: {}", e.without_snippet()))?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// The parser's limits for an inventory of `len` bytes: the defaults, or
/// more nodes, events and documents than `len` bytes of YAML can hold.
pub fn inventory_budget(len: usize) -> Option<serde_saphyr::Budget> {
    let defaults = serde_saphyr::Budget::default();
    serde_saphyr::budget! {
        max_nodes: defaults.max_nodes.max(len),
        max_events: defaults.max_events.max(len.saturating_mul(2)),
        max_documents: defaults.max_documents.max(len / 4),
    }
}

/// One workload judged: where it is and the pod it would create.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The pod to judge: the template's pod, or the pod itself as it would
    /// be created again (without its node and status).
    pub pod: Value,
}

/// What an inventory holds, sorted out.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Workloads and bare pods, in the order read.
    pub workloads: Vec<Workload>,
    /// The Namespace objects' labels.
    pub namespaces: StaticNamespaces,
    /// Objects left out because their controller is in the inventory (the
    /// pods of a ReplicaSet, the ReplicaSets of a Deployment, the Jobs of a
    /// CronJob): the controller is judged instead.
    pub owned: usize,
    /// Pods left out because they have finished (Succeeded or Failed).
    pub finished: usize,
    /// Objects of other kinds, left out, by kind.
    pub other_kinds: BTreeMap<String, usize>,
}

impl Inventory {
    /// Sorts `objects` (and the items of Lists among them) out: a workload
    /// or a pod is judged unless its controller is among `objects` or, for
    /// a pod, it has finished. An object without a namespace is in
    /// `default`.
    pub fn from_objects(objects: Vec<Value>) -> Result<Self, String> {
        let flat = flatten_lists(objects);
        let mut uids = HashSet::new();
        let mut names = HashSet::new();
        for object in &flat {
            if let Some(uid) = object["metadata"]["uid"].as_str() {
                uids.insert(uid.to_string());
            }
            names.insert(identity(object));
        }
        let mut inventory = Inventory::default();
        for object in flat {
            let kind = object["kind"].as_str().unwrap_or_default();
            if kind == "Namespace" {
                inventory.namespaces.insert_object(&object)?;
                continue;
            }
            if kind != "Pod" && !is_workload(kind) {
                *inventory
                    .other_kinds
                    .entry(if kind.is_empty() { "(none)" } else { kind }.to_string())
                    .or_default() += 1;
                continue;
            }
            if controlled_from_inside(&object, &uids, &names) {
                inventory.owned += 1;
                continue;
            }
            let phase = object.pointer("/status/phase").and_then(Value::as_str);
            if kind == "Pod" && matches!(phase, Some("Succeeded" | "Failed")) {
                inventory.finished += 1;
                continue;
            }
            let (kind, namespace, name) = identity(&object);
            let pod = if kind == "Pod" {
                as_created(object)
            } else {
                pod_from_template(&object)
                    .ok_or_else(|| format!("{kind} {namespace}/{name} has no pod template"))?
            };
            inventory.workloads.push(Workload {
                kind,
                namespace,
                name,
                pod,
            });
        }
        Ok(inventory)
    }
}

/// A running pod as it would be created again: without the node the
/// scheduler bound it to (`spec.nodeName`) and without its status. What the
/// webhook added when it was created stays: it cannot be told apart.
fn as_created(mut pod: Value) -> Value {
    if let Some(map) = pod.as_object_mut() {
        map.remove("status");
        if let Some(spec) = map.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("nodeName");
        }
    }
    pod
}

/// The objects, with each List (`kind: List`, or any `...List` kind with
/// `items`) replaced by its items.
pub fn flatten_lists(objects: Vec<Value>) -> Vec<Value> {
    let mut flat = Vec::with_capacity(objects.len());
    for object in objects {
        flatten(object, &mut flat);
    }
    flat
}

/// Adds `object` to `flat`, or the items of a List (`kind: List`, or any
/// `...List` kind with `items`), whose items without a kind take it from
/// the List's (`DeploymentList` → `Deployment`).
fn flatten(object: Value, flat: &mut Vec<Value>) {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let Some(item_kind) = kind.strip_suffix("List") else {
        flat.push(object);
        return;
    };
    let Value::Object(mut list) = object else {
        return;
    };
    let Some(Value::Array(items)) = list.remove("items") else {
        return;
    };
    for mut item in items {
        if !item_kind.is_empty()
            && item.get("kind").is_none()
            && let Some(map) = item.as_object_mut()
        {
            map.insert("kind".into(), item_kind.into());
        }
        flatten(item, flat);
    }
}

/// Kind, namespace (`default` when none) and name of an object.
fn identity(object: &Value) -> (String, String, String) {
    let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string();
    (
        field(&object["kind"]),
        namespace,
        field(&object["metadata"]["name"]),
    )
}

/// Whether the controller of `object` (its owner reference with
/// `controller: true`) is among the objects: by uid, else by kind and name
/// in the object's namespace.
fn controlled_from_inside(
    object: &Value,
    uids: &HashSet<String>,
    names: &HashSet<(String, String, String)>,
) -> bool {
    let Some(owners) = object["metadata"]["ownerReferences"].as_array() else {
        return false;
    };
    let Some(controller) = owners.iter().find(|o| o["controller"] == true) else {
        return false;
    };
    if let Some(uid) = controller["uid"].as_str()
        && uids.contains(uid)
    {
        return true;
    }
    let (_, namespace, _) = identity(object);
    let owner = (
        controller["kind"].as_str().unwrap_or_default().to_string(),
        namespace,
        controller["name"].as_str().unwrap_or_default().to_string(),
    );
    names.contains(&owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, uid: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": "shop", "uid": uid},
               "spec": {"template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    fn owned(kind: &str, name: &str, owner_kind: &str, owner: &str, uid: Option<&str>) -> Value {
        let mut reference =
            json!({"apiVersion": "apps/v1", "kind": owner_kind, "name": owner, "controller": true});
        if let Some(uid) = uid {
            reference["uid"] = uid.into();
        }
        json!({"apiVersion": "apps/v1", "kind": kind,
               "metadata": {"name": name, "namespace": "shop", "ownerReferences": [reference]},
               "spec": {"template": {"spec": {"containers": []}}, "containers": []}})
    }

    #[test]
    fn a_template_becomes_the_pod_its_controller_creates() {
        let pod = pod_from_template(&deployment("web", "u1")).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx");

        let cronjob = json!({"kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}}});
        let pod = pod_from_template(&cronjob).unwrap();
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");

        assert_eq!(pod_from_template(&json!({"kind": "Service"})), None);
        assert_eq!(
            pod_from_template(&json!({"kind": "Deployment", "spec": {}})),
            None
        );
    }

    #[test]
    fn job_pods_get_the_labels_the_api_server_gives_their_template() {
        let job = json!({"kind": "Job", "metadata": {"name": "report", "uid": "u-1"},
                         "spec": {"template": {"metadata": {"labels": {"job-name": "mine"}}, "spec": {}}}});
        let labels = &pod_from_template(&job).unwrap()["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "report");
        assert_eq!(
            labels["job-name"], "mine",
            "a label the template has is kept"
        );
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(labels["controller-uid"], "u-1");

        let manual = json!({"kind": "Job", "metadata": {"name": "report"},
                            "spec": {"manualSelector": true, "template": {"spec": {}}}});
        assert_eq!(
            pod_from_template(&manual).unwrap()["metadata"].get("labels"),
            None
        );

        // 2026-11-30T02:00:00Z is 29,933,400 minutes after the epoch (as the
        // CronJob controller names the Job).
        let cronjob = json!({"kind": "CronJob", "metadata": {"name": "nightly"},
                             "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}},
                             "status": {"lastScheduleTime": "2026-11-30T02:00:00Z"}});
        let labels = &pod_from_template(&cronjob).unwrap()["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "nightly-29933400");
        assert_eq!(labels.get("controller-uid"), None);
        assert_eq!(unix_minutes("1970-01-01T00:01:00Z"), Some(1));
        assert_eq!(unix_minutes("2000-03-01T00:00:00Z"), Some(15_864_480));
    }

    #[test]
    fn objects_whose_controller_is_listed_are_left_to_it() {
        // A ReplicaSet of the Deployment, by uid, and a pod of that ReplicaSet, by name.
        let mut replica_set = owned("ReplicaSet", "web-5d8f", "Deployment", "web", Some("u1"));
        replica_set["metadata"]["uid"] = "u2".into();
        let items = vec![
            deployment("web", "u1"),
            replica_set,
            owned("Pod", "web-5d8f-abcde", "ReplicaSet", "web-5d8f", None),
            // A ReplicaSet whose Deployment is not in the inventory is judged.
            owned("ReplicaSet", "api-7c9", "Deployment", "api", Some("u9")),
            // A pod owned by a controller of another kind (not listed) is
            // judged, as created again: without its node and status.
            {
                let mut pod = owned("Pod", "db-0", "Cluster", "db", Some("u8"));
                pod["spec"]["nodeName"] = "node-a".into();
                pod["status"] = json!({"phase": "Running"});
                pod
            },
            json!({"kind": "Pod", "metadata": {"name": "done", "namespace": "shop"}, "status": {"phase": "Succeeded"}}),
            json!({"kind": "Service", "metadata": {"name": "web"}}),
            json!({"kind": "Namespace", "metadata": {"name": "shop", "labels": {"eci": "true"}}}),
        ];
        let objects = vec![json!({"apiVersion": "v1", "kind": "List", "items": items})];
        let inventory = Inventory::from_objects(objects).unwrap();
        let judged: Vec<(&str, &str, &str)> = inventory
            .workloads
            .iter()
            .map(|w| (w.kind.as_str(), w.namespace.as_str(), w.name.as_str()))
            .collect();
        assert_eq!(
            judged,
            [
                ("Deployment", "shop", "web"),
                ("ReplicaSet", "shop", "api-7c9"),
                ("Pod", "shop", "db-0"),
            ]
        );
        assert_eq!(inventory.workloads[2].pod["spec"].get("nodeName"), None);
        assert_eq!(inventory.workloads[2].pod.get("status"), None);
        assert_eq!(inventory.owned, 2);
        assert_eq!(inventory.finished, 1);
        assert_eq!(
            inventory.other_kinds,
            BTreeMap::from([("Service".into(), 1)])
        );
        use crate::namespaces::NamespaceLookup as _;
        assert_eq!(inventory.namespaces.labels("shop").unwrap()["eci"], "true");
    }

    #[test]
    fn typed_list_items_take_their_kind_from_the_list() {
        let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
                          "items": [{"metadata": {"name": "web", "namespace": "a"},
                                     "spec": {"template": {"spec": {}}}}]});
        let inventory = Inventory::from_objects(vec![list]).unwrap();
        assert_eq!(inventory.workloads[0].kind, "Deployment");
        assert_eq!(inventory.workloads[0].pod["kind"], "Pod");
    }

    #[test]
    fn a_workload_without_template_is_an_error_naming_it() {
        let error = Inventory::from_objects(vec![
            json!({"kind": "StatefulSet", "metadata": {"name": "db", "namespace": "a"}, "spec": {}}),
        ])
        .unwrap_err();
        assert_eq!(error, "StatefulSet a/db has no pod template");
    }

    #[test]
    fn inventories_beyond_the_default_node_budget_are_read() {
        // 30,000 items of 10 nodes each: over the parser's default 250,000 nodes.
        let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for i in 0..30_000 {
            text.push_str(&format!(
                "- kind: Pod\n  metadata:\n    name: p{i}\n    namespace: a\n    labels: {{app: x, tier: y}}\n  spec: {{containers: []}}\n"
            ));
        }
        assert!(serde_saphyr::from_str::<Value>(&text).is_err());
        let objects = parse_objects(&text).unwrap();
        assert_eq!(objects[0]["items"].as_array().unwrap().len(), 30_000);
    }

    #[test]
    fn alias_expansion_is_still_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let previous = (b'a' + level - 1) as char;
            let this = (b'a' + level) as char;
            text.push_str(&format!(
                "{this}: &{this} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
            ));
        }
        let error = parse_objects(&text).unwrap_err();
        assert!(
            error.contains("budget") || error.contains("alias"),
            "{error}"
        );
    }
}
