//! Minimal, add-only JSON Patches (RFC 6902).
//!
//! Paths are written from tokens, so `/` and `~` in keys are escaped as `~1`
//! and `~0`. A missing parent is added (as `{}` or `[]`) before its first
//! child; nothing is ever replaced or removed. Operations borrow their keys
//! and values (from the profile), so building a patch copies nothing: it is
//! written out once, straight into the response.

use std::borrow::Cow;
use std::fmt;

use serde::ser::{Serialize, SerializeMap as _, SerializeSeq as _, Serializer};

/// A patch of `add` operations, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch<'p> {
    operations: Vec<Add<'p>>,
}

/// One `add` operation: `value` at `parent` + `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct Add<'p> {
    parent: &'static [&'static str],
    /// The last token: an object key, `-` to append, `None` for `parent` itself.
    key: Option<&'p str>,
    value: Value<'p>,
}

/// The value an operation adds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'p> {
    /// `{}`, a missing parent object.
    EmptyObject,
    /// `[]`, a missing parent array.
    EmptyArray,
    Text(Cow<'p, str>),
    Json(&'p serde_json::Value),
}

impl<'p> Patch<'p> {
    /// The operations, in order.
    pub fn operations(&self) -> &[Add<'p>] {
        &self.operations
    }

    /// Whether the patch has no operation.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// The patch as a [`json_patch::Patch`], to apply it to a document.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        serde_json::to_value(self)
            .and_then(serde_json::from_value)
            .expect("an add-only patch is a JSON Patch")
    }
}

impl Add<'_> {
    /// The JSON Pointer the value is added at.
    pub fn path(&self) -> impl fmt::Display + '_ {
        Path(self)
    }

    /// The value added.
    pub fn value(&self) -> &Value<'_> {
        &self.value
    }

    /// The tokens of the path before the last one (unescaped).
    pub fn parent(&self) -> &'static [&'static str] {
        self.parent
    }

    /// The last token of the path (unescaped): an object key, `-` to
    /// append; `None` when the operation adds [`parent`](Self::parent) itself.
    pub fn key(&self) -> Option<&str> {
        self.key
    }
}

struct Path<'a, 'p>(&'a Add<'p>);

impl fmt::Display for Path<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for token in self.0.parent.iter().copied().chain(self.0.key) {
            f.write_str("/")?;
            let mut rest = token;
            while let Some(at) = rest.find(['~', '/']) {
                f.write_str(&rest[..at])?;
                f.write_str(if rest.as_bytes()[at] == b'~' {
                    "~0"
                } else {
                    "~1"
                })?;
                rest = &rest[at + 1..];
            }
            f.write_str(rest)?;
        }
        Ok(())
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl Serialize for Patch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.operations.len()))?;
        for operation in &self.operations {
            seq.serialize_element(operation)?;
        }
        seq.end()
    }
}

impl Serialize for Add<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct PathString<'a, 'p>(&'a Add<'p>);
        impl Serialize for PathString<'_, '_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&Path(self.0))
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("op", "add")?;
        map.serialize_entry("path", &PathString(self))?;
        map.serialize_entry("value", &self.value)?;
        map.end()
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::EmptyObject => serializer.serialize_map(Some(0))?.end(),
            Value::EmptyArray => serializer.serialize_seq(Some(0))?.end(),
            Value::Text(text) => serializer.serialize_str(text),
            Value::Json(value) => value.serialize(serializer),
        }
    }
}

/// Accumulates `add` operations.
#[derive(Debug, Default)]
pub struct PatchBuilder<'p> {
    operations: Vec<Add<'p>>,
}

impl<'p> PatchBuilder<'p> {
    /// Adds `entries` to the object at `parent`, creating it first when `exists` is false.
    pub fn add_to_object(
        &mut self,
        parent: &'static [&'static str],
        exists: bool,
        entries: impl IntoIterator<Item = (&'p str, Value<'p>)>,
    ) {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return;
        }
        self.ensure(parent, exists, Value::EmptyObject);
        for (key, value) in entries {
            self.add(parent, Some(key), value);
        }
    }

    /// Appends `items` to the array at `parent`, creating it first when `exists` is false.
    pub fn append_to_array(
        &mut self,
        parent: &'static [&'static str],
        exists: bool,
        items: impl IntoIterator<Item = Value<'p>>,
    ) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        self.ensure(parent, exists, Value::EmptyArray);
        for item in items {
            self.add(parent, Some("-"), item);
        }
    }

    /// Adds an empty object at `path` unless `exists`.
    pub fn ensure_object(&mut self, path: &'static [&'static str], exists: bool) {
        self.ensure(path, exists, Value::EmptyObject);
    }

    fn ensure(&mut self, path: &'static [&'static str], exists: bool, empty: Value<'p>) {
        if !exists {
            self.add(path, None, empty);
        }
    }

    fn add(&mut self, parent: &'static [&'static str], key: Option<&'p str>, value: Value<'p>) {
        self.operations.push(Add { parent, key, value });
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The patch.
    pub fn build(self) -> Patch<'p> {
        Patch {
            operations: self.operations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_keys_and_adds_parents_first() {
        let toleration = json!({"key": "k"});
        let mut b = PatchBuilder::default();
        b.add_to_object(
            &["metadata", "annotations"],
            false,
            [("k8s.aliyun.com/a~b", Value::Text("x\"y".into()))],
        );
        b.append_to_array(&["spec", "tolerations"], true, [Value::Json(&toleration)]);
        b.ensure_object(&["spec", "affinity"], false);
        let patch = b.build();
        let expected = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/k8s.aliyun.com~1a~0b", "value": "x\"y"},
            {"op": "add", "path": "/spec/tolerations/-", "value": {"key": "k"}},
            {"op": "add", "path": "/spec/affinity", "value": {}},
        ]);
        assert_eq!(serde_json::to_value(&patch).unwrap(), expected);
        // The same bytes json_patch writes, key order included.
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            serde_json::to_string(&patch.to_json_patch()).unwrap()
        );
        assert_eq!(
            patch.operations()[1].path().to_string(),
            "/metadata/annotations/k8s.aliyun.com~1a~0b"
        );
        assert_eq!(patch.operations()[1].value().to_string(), r#""x\"y""#);
    }

    #[test]
    fn escapes_every_occurrence() {
        let mut b = PatchBuilder::default();
        b.add_to_object(&["m"], true, [("~/~~//x", Value::EmptyArray)]);
        let patch = b.build();
        assert_eq!(patch.operations()[0].path().to_string(), "/m/~0~1~0~0~1~1x");
        let mut doc = json!({"m": {}});
        json_patch::patch(&mut doc, &patch.to_json_patch()).unwrap();
        assert_eq!(doc, json!({"m": {"~/~~//x": []}}));
    }

    #[test]
    fn nothing_to_add_adds_no_parent() {
        let mut b = PatchBuilder::default();
        b.add_to_object(&["metadata", "labels"], false, []);
        b.append_to_array(&["spec", "tolerations"], false, []);
        assert!(b.is_empty());
        assert!(b.build().is_empty());
    }
}
