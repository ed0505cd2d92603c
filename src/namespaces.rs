//! Namespace labels, as `namespaceSelector` needs them.
//!
//! The request path asks a [`NamespaceLookup`]; offline it is a
//! [`StaticNamespaces`] read from Namespace manifests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    /// Namespace` or a `List`/`NamespaceList` of them (as `kubectl get ns -o yaml` prints).
    pub fn from_manifests(text: &str) -> Result<Self, String> {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| e.without_snippet().to_string())?;
        let mut namespaces = HashMap::new();
        for document in documents.iter().filter(|d| !d.is_null()) {
            match document.get("kind").and_then(Value::as_str) {
                Some("Namespace") => {
                    let (name, labels) = namespace(document)?;
                    namespaces.insert(name, Arc::new(labels));
                }
                Some("List" | "NamespaceList") => {
                    for item in document
                        .get("items")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let (name, labels) = namespace(item)?;
                        namespaces.insert(name, Arc::new(labels));
                    }
                }
                other => {
                    return Err(format!(
                        "expected Namespace manifests, found kind {}",
                        other.unwrap_or("<none>")
                    ));
                }
            }
        }
        Ok(Self { namespaces })
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

fn namespace(document: &Value) -> Result<(String, Labels), String> {
    if document.get("kind").and_then(Value::as_str) != Some("Namespace") {
        return Err("a list item is not a Namespace".into());
    }
    let metadata = document.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("a Namespace has no metadata.name")?;
    let mut labels = Labels::new();
    if let Some(map) = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (key, value) in map {
            let value = value.as_str().ok_or_else(|| {
                format!("namespace {name}: label {key} is not a string (quote it)")
            })?;
            labels.insert(key.clone(), value.to_string());
        }
    }
    Ok((name.to_string(), labels))
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
}
