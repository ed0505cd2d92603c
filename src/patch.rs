//! Building minimal, add-only JSON Patches (RFC 6902).
//!
//! Paths are built from tokens, so `/` and `~` in keys are escaped as `~1`
//! and `~0`. A missing parent is added (as `{}` or `[]`) before its first
//! child; nothing is ever replaced or removed.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

/// Accumulates `add` operations.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// Adds `entries` to the object at `parent`, creating it first when `exists` is false.
    pub fn add_to_object<'k>(
        &mut self,
        parent: &[&str],
        exists: bool,
        entries: impl IntoIterator<Item = (&'k str, Value)>,
    ) {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return;
        }
        self.ensure(parent, exists, || Value::Object(Default::default()));
        for (key, value) in entries {
            let path = PointerBuf::from_tokens(parent.iter().copied().chain([key]));
            self.add(path, value);
        }
    }

    /// Appends `items` to the array at `parent`, creating it first when `exists` is false.
    pub fn append_to_array(
        &mut self,
        parent: &[&str],
        exists: bool,
        items: impl IntoIterator<Item = Value>,
    ) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        self.ensure(parent, exists, || Value::Array(Vec::new()));
        for item in items {
            let path = PointerBuf::from_tokens(parent.iter().copied().chain(["-"]));
            self.add(path, item);
        }
    }

    /// Adds an empty object at `path` unless `exists`.
    pub fn ensure_object(&mut self, path: &[&str], exists: bool) {
        self.ensure(path, exists, || Value::Object(Default::default()));
    }

    fn ensure(&mut self, path: &[&str], exists: bool, empty: impl FnOnce() -> Value) {
        if !exists {
            self.add(PointerBuf::from_tokens(path.iter().copied()), empty());
        }
    }

    fn add(&mut self, path: PointerBuf, value: Value) {
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The patch.
    pub fn build(self) -> Patch {
        Patch(self.ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_keys_and_adds_parents_first() {
        let mut b = PatchBuilder::default();
        b.add_to_object(
            &["metadata", "annotations"],
            false,
            [("k8s.aliyun.com/a~b", json!("x"))],
        );
        b.append_to_array(&["spec", "tolerations"], true, [json!({"key": "k"})]);
        let patch = serde_json::to_value(b.build()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/k8s.aliyun.com~1a~0b", "value": "x"},
                {"op": "add", "path": "/spec/tolerations/-", "value": {"key": "k"}},
            ])
        );
    }

    #[test]
    fn nothing_to_add_adds_no_parent() {
        let mut b = PatchBuilder::default();
        b.add_to_object(&["metadata", "labels"], false, []);
        b.append_to_array(&["spec", "tolerations"], false, []);
        assert!(b.is_empty());
    }
}
