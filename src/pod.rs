//! The parts of a Pod the decision reads, deserialised straight from the
//! admission request without a full typed round-trip.
//!
//! Fields that may be `null` on the wire are `Option`s; absent and `null`
//! mean the same to the decision (and to JSON Patch `add`).

use serde::{Deserialize, Serialize};

use crate::budgets::quantity::MaybeQuantity;

use crate::labels::Labels;

/// A pod, reduced to what deciding and patching need.
///
/// `metadata` and `spec` are required: kube-apiserver always sends both, and
/// a patch adds under them; a pod without one is not read.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    pub metadata: Metadata,
    pub spec: Spec,
}

/// `metadata` of a pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<Labels>,
    pub annotations: Option<Labels>,
    pub owner_references: Option<Vec<OwnerReference>>,
}

/// An owner reference; only the kind matters here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// `spec` of a pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub node_name: Option<String>,
    pub node_selector: Option<Labels>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    #[serde(rename = "hostNetwork")]
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub volumes: Option<Vec<Volume>>,
    pub containers: Option<Vec<Container>>,
    pub init_containers: Option<Vec<Container>>,
    /// The pod's overhead (RuntimeClass), counted with its requests.
    pub overhead: Option<Requests>,
}

/// A toleration, as in `core/v1`. Also the virtual node's tolerations in a profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Whether `self` and `other` have the same key, operator (absent means
    /// `Equal`), value and effect; `tolerationSeconds` is not compared.
    pub fn same_as(&self, other: &Toleration) -> bool {
        fn text(s: &Option<String>) -> &str {
            s.as_deref().unwrap_or("")
        }
        fn operator(t: &Toleration) -> &str {
            t.operator
                .as_deref()
                .filter(|o| !o.is_empty())
                .unwrap_or("Equal")
        }
        text(&self.key) == text(&other.key)
            && operator(self) == operator(other)
            && text(&self.value) == text(&other.value)
            && text(&self.effect) == text(&other.effect)
    }
}

/// `spec.affinity`: only node affinity's preferred terms are read; the rest is
/// never touched.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Affinity {
    pub node_affinity: Option<NodeAffinity>,
}

/// `spec.affinity.nodeAffinity`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeAffinity {
    pub preferred_during_scheduling_ignored_during_execution: Option<Vec<serde_json::Value>>,
}

/// A volume; only whether it is a `hostPath` matters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub host_path: Option<serde::de::IgnoredAny>,
}

/// A container or init container: its ports and what it requests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub ports: Option<Vec<ContainerPort>>,
    pub resources: Option<Resources>,
    /// `Always` on an init container makes it a sidecar.
    pub restart_policy: Option<String>,
}

/// A container's `resources`; only requests count.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub requests: Option<Requests>,
}

/// CPU and memory of a resource list (requests or overhead); a quantity
/// that cannot be read counts as none (the API server decodes quantities
/// before admission, so it only happens to hand-written input).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Requests {
    pub cpu: MaybeQuantity,
    pub memory: MaybeQuantity,
}

/// A container port.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i32,
    pub host_port: Option<i32>,
}

impl Pod {
    /// `name`, else `generateName*`, else `<unnamed>`: how logs and messages
    /// refer to the pod (as echoed: bounded in length).
    pub fn display_name(&self) -> String {
        match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(name), _) if !name.is_empty() => crate::truncate::echo(name).into_owned(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                format!("{}*", crate::truncate::echo(prefix))
            }
            _ => "<unnamed>".to_string(),
        }
    }

    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether annotation `key` is set.
    pub fn has_annotation(&self, key: &str) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(key))
    }

    /// Whether label `key` is set.
    pub fn has_label(&self, key: &str) -> bool {
        self.label(key).is_some()
    }

    /// The pod's nodeSelector entry for `key`, if set.
    pub fn node_selector(&self, key: &str) -> Option<&str> {
        self.spec
            .node_selector
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// Whether the pod already has a toleration equal to `toleration`.
    pub fn tolerates(&self, toleration: &Toleration) -> bool {
        self.spec
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.same_as(toleration))
    }

    /// Every container and init container.
    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .chain(self.spec.containers.iter().flatten())
    }

    /// The preferred node-affinity terms, if any.
    pub fn preferred_node_affinity(&self) -> Option<&[serde_json::Value]> {
        self.spec
            .affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .preferred_during_scheduling_ignored_during_execution
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_read_as_absent() {
        let pod: Pod = serde_json::from_str(
            r#"{"metadata":{"labels":null,"annotations":null},
                "spec":{"tolerations":null,"nodeSelector":null,"volumes":null,
                        "containers":[{"name":"c","ports":null}]}}"#,
        )
        .unwrap();
        assert!(pod.metadata.labels.is_none());
        assert!(pod.spec.tolerations.is_none());
        assert_eq!(pod.all_containers().count(), 1);
    }

    #[test]
    fn toleration_equality_defaults_operator_to_equal() {
        let a = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let b = Toleration {
            operator: Some("Equal".into()),
            toleration_seconds: Some(5),
            ..a.clone()
        };
        assert!(a.same_as(&b));
        let c = Toleration {
            effect: Some("NoExecute".into()),
            ..a.clone()
        };
        assert!(!a.same_as(&c));
        let d = Toleration {
            operator: Some("Exists".into()),
            ..a.clone()
        };
        assert!(!a.same_as(&d));
    }

    #[test]
    fn display_name_prefers_name_then_generate_name() {
        let mut pod = Pod::default();
        assert_eq!(pod.display_name(), "<unnamed>");
        pod.metadata.generate_name = Some("api-".into());
        assert_eq!(pod.display_name(), "api-*");
        pod.metadata.name = Some("api-0".into());
        assert_eq!(pod.display_name(), "api-0");
    }
}
