//! Namespace labels, as `namespaceSelector` needs them.
//!
//! The request path asks a [`NamespaceLookup`]; offline it is a
//! [`StaticNamespaces`] read from Namespace manifests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::labels::Labels;

/// Where the request path gets a namespace's labels from.
pub trait NamespaceLookup: Send + Sync {
    /// The labels of `namespace`, or `None` when unknown.
    fn labels(&self, namespace: &str) -> Option<Arc<Labels>>;

    /// Tries, once, to learn the labels of a namespace [`labels`](Self::labels)
    /// does not know (one created a moment ago). The default knows no more.
    fn fetch<'a>(&'a self, _namespace: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(std::future::ready(()))
    }
}

/// A fixed set of namespaces, e.g. from `--namespaces-file`.
#[derive(Clone, Debug, Default)]
pub struct StaticNamespaces {
    namespaces: HashMap<String, Arc<Labels>>,
}

impl NamespaceLookup for StaticNamespaces {
    fn labels(&self, namespace: &str) -> Option<Arc<Labels>> {
        self.namespaces.get(namespace).cloned()
    }
}

impl StaticNamespaces {
    /// Namespaces from `(name, labels)` pairs.
    pub fn new(namespaces: impl IntoIterator<Item = (String, Labels)>) -> Self {
        Self {
            namespaces: namespaces
                .into_iter()
                .map(|(name, labels)| (name, Arc::new(labels)))
                .collect(),
        }
    }

    /// Reads Namespace manifests: YAML or JSON, several documents, `kind:
    /// Namespace` or a `List`/`NamespaceList` of them (as `kubectl get ns -o yaml`
    /// prints). Only names and labels are kept.
    pub fn from_manifests(text: &str) -> Result<Self, String> {
        let documents: Vec<Document> = if text.trim_start().starts_with('{') {
            vec![serde_json::from_str(text).map_err(|e| e.to_string())?]
        } else {
            let options = serde_saphyr::options! {
                budget: crate::workloads::inventory_budget(text.len()),
            };
            serde_saphyr::from_multiple_with_options(text, options)
                .map_err(|e| e.without_snippet().to_string())?
        };
        let mut namespaces = HashMap::new();
        for document in documents {
            match document.kind.as_deref() {
                Some("Namespace") => {
                    let (name, labels) = namespace(document)?;
                    namespaces.insert(name, Arc::new(labels));
                }
                Some("List" | "NamespaceList") => {
                    for item in document.items.into_iter().flatten() {
                        if item.kind.as_deref() != Some("Namespace") {
                            return Err("a list item is not a Namespace".into());
                        }
                        let (name, labels) = namespace(item)?;
                        namespaces.insert(name, Arc::new(labels));
                    }
                }
                None if document.is_empty() => {}
                other => {
                    return Err(format!(
                        "expected Namespace manifests, found kind {}",
                        crate::truncate::echo(other.unwrap_or("<none>"))
                    ));
                }
            }
        }
        Ok(Self { namespaces })
    }

    /// Adds (or replaces) the namespace of a Namespace object.
    pub fn insert_object(&mut self, object: &Value) -> Result<(), String> {
        let document: Document = serde_json::from_value(object.clone())
            .map_err(|e| format!("a Namespace cannot be read: {e}"))?;
        let (name, labels) = namespace(document)?;
        self.namespaces.insert(name, Arc::new(labels));
        Ok(())
    }

    /// Adds (or replaces) the namespaces of `other`.
    pub fn extend(&mut self, other: StaticNamespaces) {
        self.namespaces.extend(other.namespaces);
    }

    /// Number of namespaces known.
    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    /// Whether no namespace is known.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

/// A Namespace manifest, or a list of them, reduced to names and labels.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Document {
    kind: Option<String>,
    metadata: Option<Metadata>,
    items: Option<Vec<Document>>,
}

impl Document {
    /// An empty document (e.g. after a trailing `---`).
    fn is_empty(&self) -> bool {
        self.kind.is_none() && self.metadata.is_none() && self.items.is_none()
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Metadata {
    name: Option<String>,
    labels: Option<BTreeMap<String, Value>>,
}

fn namespace(document: Document) -> Result<(String, Labels), String> {
    let metadata = document.metadata.unwrap_or_default();
    let name = metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or("a Namespace has no metadata.name")?;
    let mut labels = Labels::new();
    for (key, value) in metadata.labels.unwrap_or_default() {
        match value {
            Value::String(value) => {
                labels.insert(key, value);
            }
            other => {
                let (name, key) = (crate::truncate::echo(&name), crate::truncate::echo(&key));
                let why = if other.is_boolean() {
                    " (a manifest is read as kubectl reads it, YAML 1.1: yes, no, on, off are booleans)"
                } else {
                    ""
                };
                return Err(format!(
                    "namespace {name}: label {key} is not a string{why}: quote it"
                ));
            }
        }
    }
    Ok((name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_documents() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- kind: Namespace\n  metadata:\n    name: a\n    labels:\n      eci: \"true\"\n---\nkind: Namespace\nmetadata:\n  name: b\n";
        let ns = StaticNamespaces::from_manifests(text).unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(
            ns.labels("a").unwrap().get("eci").map(String::as_str),
            Some("true")
        );
        assert!(ns.labels("b").unwrap().is_empty());
        assert!(ns.labels("c").is_none());
    }

    #[test]
    fn rejects_other_kinds_and_non_string_labels() {
        assert!(StaticNamespaces::from_manifests("kind: Pod\n").is_err());
        let err = StaticNamespaces::from_manifests(
            "kind: Namespace\nmetadata:\n  name: a\n  labels:\n    eci: true\n",
        )
        .unwrap_err();
        assert!(err.contains("not a string"), "{err}");
    }

    #[test]
    fn yaml_1_1_booleans_in_labels_are_named() {
        let manifest = |value: &str| {
            format!("kind: Namespace\nmetadata:\n  name: a\n  labels:\n    eci: {value}\n")
        };
        let err = StaticNamespaces::from_manifests(&manifest("yes")).unwrap_err();
        assert!(
            err.contains("YAML 1.1") && err.ends_with("quote it"),
            "{err}"
        );
        let ns = StaticNamespaces::from_manifests(&manifest("'yes'")).unwrap();
        assert_eq!(ns.labels("a").unwrap()["eci"], "yes");
    }
}
