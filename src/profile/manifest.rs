//! Reading the profile out of a ConfigMap manifest (YAML or JSON, as
//! `kubectl apply` takes it).

use super::node::{self, Node, Position, Value};
use super::{Diagnostic, Diagnostics, Entry, Origin, ProfileData, Severity};

/// A finding about `file` at `position`.
fn finding(
    severity: Severity,
    file: &str,
    position: Position,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        file: Some(file.to_string()),
        position: Some(position),
        ..Diagnostic::new(severity, None, field, message)
    }
}

/// A profile as manifest files hold it: the profile ConfigMap's data and
/// `Selector` objects, in any number of documents (`---`) and `kind: List`s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifests {
    /// The ConfigMap's data; `None` without a ConfigMap.
    pub configmap: Option<ProfileData>,
    /// Selector objects, each with where its positions are.
    pub selectors: Vec<(Node, Origin)>,
}

impl Manifests {
    /// Reads every ConfigMap and Selector of a manifest file; `file` names it
    /// in messages. Objects of other kinds (a Deployment next to its
    /// Selector) are left out with an information.
    pub fn read(file: &str, text: &str) -> Result<(Self, Diagnostics), Diagnostics> {
        // Read as kubectl reads it (YAML 1.1 booleans), so that what passes
        // here also applies.
        let documents = node::parse_documents(text, node::Booleans::Yaml11)
            .map_err(|e| syntax_error(file, e))?;
        let mut objects = Vec::new();
        for document in documents {
            match (
                document.get("kind").and_then(Node::as_str),
                document.get("items"),
            ) {
                (Some(kind), Some(items)) if kind.ends_with("List") => {
                    if let Value::Sequence(items) = &items.value {
                        objects.extend(items.iter().cloned());
                    }
                }
                _ => objects.push(document),
            }
        }
        let mut manifests = Manifests::default();
        let (mut errors, mut notes) = (Vec::new(), Vec::new());
        let mut others = Vec::new();
        for object in objects {
            if super::selector_object::is_selector(&object) {
                manifests
                    .selectors
                    .push((object, Origin::File(file.to_string())));
                continue;
            }
            match object.get("kind").and_then(Node::as_str) {
                Some("ConfigMap") if manifests.configmap.is_some() => errors.push(finding(
                    Severity::Error,
                    file,
                    object.position,
                    "",
                    "a second ConfigMap: a profile is one ConfigMap (and any number of Selectors)"
                        .into(),
                )),
                Some("ConfigMap") => match ProfileData::from_configmap(file, text, &object) {
                    Ok(data) => manifests.configmap = Some(data),
                    Err(d) => errors.extend(d.0),
                },
                kind => others.push((object.position, kind.unwrap_or("").to_string())),
            }
        }
        let found_any = manifests.configmap.is_some() || !manifests.selectors.is_empty();
        for (position, kind) in others {
            if found_any {
                notes.push(finding(
                    Severity::Info,
                    file,
                    position,
                    "kind",
                    format!("{} ignored: not a profile object", echo_kind(&kind)),
                ));
            } else {
                errors.push(finding(
                    Severity::Error,
                    file,
                    position,
                    "kind",
                    format!(
                        "expected a ConfigMap or eci.aliyun.com Selector manifest, found {}",
                        echo_kind(&kind)
                    ),
                ));
            }
        }
        if !found_any && errors.is_empty() {
            errors.push(finding(
                Severity::Error,
                file,
                Position::default(),
                "",
                "no ConfigMap or Selector in the file".into(),
            ));
        }
        if errors.is_empty() {
            Ok((manifests, Diagnostics(notes)))
        } else {
            Err(Diagnostics(errors))
        }
    }
}

/// A manifest that is not YAML or JSON.
fn syntax_error(file: &str, e: node::SyntaxError) -> Diagnostics {
    Diagnostics(vec![finding(
        Severity::Error,
        file,
        e.position,
        "",
        e.message,
    )])
}

fn echo_kind(kind: &str) -> String {
    if kind.is_empty() {
        "an object without kind".into()
    } else {
        format!("kind {}", crate::truncate::echo(kind))
    }
}

impl ProfileData {
    /// Reads the `data` of a ConfigMap manifest; `file` names it in messages.
    pub fn from_manifest(file: &str, manifest: &str) -> Result<Self, Diagnostics> {
        let root =
            node::parse(manifest, node::Booleans::Yaml11).map_err(|e| syntax_error(file, e))?;
        Self::from_configmap(file, manifest, &root)
    }

    /// Reads the `data` of the ConfigMap `root`, parsed from `manifest`.
    fn from_configmap(file: &str, manifest: &str, root: &Node) -> Result<Self, Diagnostics> {
        let error = |position: Position, field: &str, message: String| {
            Diagnostics(vec![finding(
                Severity::Error,
                file,
                position,
                field,
                message,
            )])
        };
        let Value::Mapping(fields) = &root.value else {
            return Err(error(
                root.position,
                "",
                format!("expected a ConfigMap manifest, found {}", root.value.kind()),
            ));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v)
        };
        match field("kind").map(|k| &k.value) {
            Some(Value::String(kind)) if kind == "ConfigMap" => {}
            Some(other) => {
                let kind = match other {
                    Value::String(s) => s.clone(),
                    v => v.kind().to_string(),
                };
                return Err(error(
                    root.position,
                    "kind",
                    format!("expected kind ConfigMap, found {kind}"),
                ));
            }
            None => {
                return Err(error(
                    root.position,
                    "kind",
                    "expected a ConfigMap manifest (kind: ConfigMap)".into(),
                ));
            }
        }
        let mut data = ProfileData::default();
        let Some(data_node) = field("data") else {
            return Ok(data);
        };
        let entries = match &data_node.value {
            Value::Null => return Ok(data),
            Value::Mapping(entries) => entries,
            other => {
                return Err(error(
                    data_node.position,
                    "data",
                    format!("must be an object of strings, found {}", other.kind()),
                ));
            }
        };
        let mut errors = Vec::new();
        for (key, value) in entries {
            let key_node = key;
            let Some(key) = key_node.as_str() else {
                errors.extend(error(key_node.position, "data", "keys must be strings".into()).0);
                continue;
            };
            let text = match &value.value {
                Value::String(s) => s.clone(),
                // Go decodes a null into a string field as "".
                Value::Null => String::new(),
                Value::Bool(_)
                    if let Some(word) = node::yaml_1_1_only_boolean(manifest, value.position) =>
                {
                    errors.extend(
                        error(
                            value.position,
                            key,
                            format!(
                                "must be a string, found {word:?}, a YAML 1.1 boolean as kubectl reads it: quote it"
                            ),
                        )
                        .0,
                    );
                    continue;
                }
                other => {
                    errors.extend(
                        error(
                            value.position,
                            key,
                            format!(
                                "must be a string, found {}: ConfigMap data holds strings only (quote the value)",
                                other.kind()
                            ),
                        )
                        .0,
                    );
                    continue;
                }
            };
            let origin = origin_of(file, manifest, value);
            let key_position = key_node.position;
            data.entries.insert(
                key.to_string(),
                Entry {
                    text,
                    origin,
                    key_position,
                },
            );
        }
        if errors.is_empty() {
            Ok(data)
        } else {
            Err(Diagnostics(errors))
        }
    }
}

/// Where a data value stands in the manifest: a literal block (`|`, `|-`,
/// `|+`) can be mapped line by line; anything else cannot.
///
/// The parser places a block scalar at its first character of content; the
/// header (`key: |`) is on the nearest non-blank line above.
fn origin_of(file: &str, manifest: &str, value: &Node) -> Origin {
    let unmapped = Origin::Unmapped(file.to_string());
    let Some(content_index) = (value.position.line as usize).checked_sub(1) else {
        return unmapped;
    };
    let lines: Vec<&str> = manifest.lines().take(content_index).collect();
    let Some(header_index) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
        return unmapped;
    };
    let header = lines[header_index];
    let header = header.split(" #").next().unwrap_or(header).trim_end();
    if !(header.ends_with(" |") || header.ends_with(" |-") || header.ends_with(" |+")) {
        return unmapped;
    }
    Origin::Block {
        file: file.to_string(),
        first_line: header_index as u64 + 2,
        indent: value.position.column - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_and_maps_literal_blocks() {
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\ndata:\n  vpcId: vpc-1\n  selectors: |\n    [\n      {\"name\": \"a\"}\n    ]\n";
        let data = ProfileData::from_manifest("p.yaml", manifest).unwrap();
        assert_eq!(data.entries["vpcId"].text, "vpc-1");
        assert_eq!(
            data.entries["vpcId"].origin,
            Origin::Unmapped("p.yaml".into())
        );
        let selectors = &data.entries["selectors"];
        assert!(selectors.text.starts_with("[\n"));
        assert_eq!(
            selectors.origin,
            Origin::Block {
                file: "p.yaml".into(),
                first_line: 8,
                indent: 4
            }
        );
    }

    #[test]
    fn json_manifests_are_read() {
        let manifest = r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"selectors":"[]"}}"#;
        let data = ProfileData::from_manifest("p.json", manifest).unwrap();
        assert_eq!(data.entries["selectors"].text, "[]");
    }

    #[test]
    fn wrong_kind_and_non_string_values_are_errors() {
        let err = ProfileData::from_manifest("p.yaml", "kind: Secret\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected kind ConfigMap, found Secret"),
            "{err}"
        );
        let err = ProfileData::from_manifest(
            "p.yaml",
            "kind: ConfigMap\ndata:\n  enableClusterIp: true\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("p.yaml:3:20: error: enableClusterIp: must be a string"),
            "{text}"
        );
    }
}
