//! A YAML/JSON value tree that remembers where each value stands in its
//! source text, so that validation can point at line and column.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column inside some text; `line == 0` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn is_known(self) -> bool {
        self.line > 0
    }
}

impl From<serde_saphyr::Location> for Position {
    fn from(location: serde_saphyr::Location) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
        }
    }
}

/// A value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub position: Position,
}

/// The shapes a YAML/JSON value can take.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i128),
    Float(f64),
    String(String),
    Sequence(Vec<Node>),
    /// Entries in source order; keys keep their own positions.
    Mapping(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) | Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "an object",
        }
    }
}

impl Node {
    /// The key's text when this node is used as a mapping key.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A syntax error in some text, with its position when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub position: Position,
}

/// Which plain scalars are booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Booleans {
    /// YAML 1.2's core schema: `true` and `false` only (also `True`, `TRUE`,
    /// `False`, `FALSE`); `y`, `yes`, `on`, ... are strings.
    Yaml12,
    /// YAML 1.1's as well (`y`, `yes`, `on`, `n`, `no`, `off` in any case):
    /// how kubectl reads a manifest.
    Yaml11,
}

/// Parses YAML or JSON text into a [`Node`] tree.
///
/// Text that starts like JSON (`[` or `{`) must be strict JSON, as Alibaba
/// Cloud's own eci-profile reads it; anything else is read as YAML 1.2,
/// with `booleans` deciding which plain scalars are booleans.
pub fn parse(text: &str, booleans: Booleans) -> Result<Node, SyntaxError> {
    let trimmed = text.trim_start();
    let looks_like_json = trimmed.starts_with('[') || trimmed.starts_with('{');
    if looks_like_json && let Err(e) = serde_json::from_str::<de::IgnoredAny>(text) {
        // serde_json reports "... at line L column C"; keep the message part only.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        return Err(SyntaxError {
            message: format!("invalid JSON: {message}"),
            position: Position {
                line: e.line() as u64,
                column: e.column() as u64,
            },
        });
    }
    let options = serde_saphyr::options! {
        strict_booleans: booleans == Booleans::Yaml12,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| SyntaxError {
        message: format!(
            "invalid YAML: {}",
            first_line(&e.without_snippet().to_string())
        ),
        position: e.location().map(Position::from).unwrap_or_default(),
    })
}

/// Parses YAML text of one or more documents (`---`), as kubectl reads a
/// manifest file: positions count from the start of `text`; empty documents
/// are left out. JSON text is one document.
pub fn parse_documents(text: &str, booleans: Booleans) -> Result<Vec<Node>, SyntaxError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        return parse(text, booleans).map(|node| vec![node]);
    }
    let options = serde_saphyr::options! {
        strict_booleans: booleans == Booleans::Yaml12,
    };
    let documents =
        serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|e| {
            SyntaxError {
                message: format!(
                    "invalid YAML: {}",
                    first_line(&e.without_snippet().to_string())
                ),
                position: e.location().map(Position::from).unwrap_or_default(),
            }
        })?;
    Ok(documents
        .into_iter()
        .filter(|d| d.value != Value::Null)
        .collect())
}

impl Node {
    /// A tree from JSON (an object from the API server), positions unknown.
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value as Json;
        let value = match value {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Value::Integer(i.into()),
                (None, Some(u)) => Value::Integer(u.into()),
                _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Sequence(items.iter().map(Node::from_json).collect()),
            Json::Object(entries) => Value::Mapping(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            Node::at_unknown(Value::String(k.clone())),
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node::at_unknown(value)
    }

    fn at_unknown(value: Value) -> Node {
        Node {
            value,
            position: Position::default(),
        }
    }

    /// The value as JSON (positions dropped); `None` for a key that is not a string.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as Json;
        Some(match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Integer(i) => match i64::try_from(*i) {
                Ok(i) => Json::from(i),
                Err(_) => Json::from(u64::try_from(*i).ok()?),
            },
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::String(s) => Json::String(s.clone()),
            Value::Sequence(items) => {
                Json::Array(items.iter().map(Node::to_json).collect::<Option<_>>()?)
            }
            Value::Mapping(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| Some((k.as_str()?.to_string(), v.to_json()?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }

    /// The value of field `name`, when this is a mapping that has it.
    pub fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The plain scalar at `position` in `text` when it spells a boolean of
/// YAML 1.1 only (`yes`, `on`, `n`, ...): where a [`Booleans::Yaml11`]
/// reading differs from YAML 1.2's, for messages.
pub fn yaml_1_1_only_boolean(text: &str, position: Position) -> Option<&str> {
    let line = text
        .lines()
        .nth(usize::try_from(position.line).ok()?.checked_sub(1)?)?;
    let start = line
        .char_indices()
        .nth(usize::try_from(position.column).ok()?.checked_sub(1)?)?
        .0;
    let word = line[start..]
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | '#'))
        .next()?;
    const YAML_1_1_ONLY: &[&str] = &["y", "yes", "on", "n", "no", "off"];
    YAML_1_1_ONLY
        .iter()
        .any(|b| word.eq_ignore_ascii_case(b))
        .then_some(word)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            position: spanned.referenced.into(),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Integer(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Mapping(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_positions_are_kept() {
        let node = parse(
            "[\n  {\"name\": \"a\",\n   \"priority\": 3}\n]",
            Booleans::Yaml12,
        )
        .unwrap();
        let Value::Sequence(items) = &node.value else {
            panic!("not a sequence: {node:?}")
        };
        let Value::Mapping(entries) = &items[0].value else {
            panic!("not a mapping")
        };
        let (key, value) = &entries[1];
        assert_eq!(key.as_str(), Some("priority"));
        assert_eq!(value.value, Value::Integer(3));
        assert_eq!(value.position.line, 3);
        assert!(value.position.column > 1);
    }

    #[test]
    fn yaml_is_accepted() {
        let node = parse(
            "- name: a\n  effect:\n    labels: {x: \"y\"}\n",
            Booleans::Yaml12,
        )
        .unwrap();
        assert!(matches!(node.value, Value::Sequence(ref v) if v.len() == 1));
    }

    #[test]
    fn strict_json_errors_have_positions() {
        let err = parse("[\n {\"name\": \"a\",}\n]", Booleans::Yaml12).unwrap_err();
        assert!(err.message.starts_with("invalid JSON"), "{err:?}");
        assert_eq!(err.position.line, 2);
    }

    #[test]
    fn yaml_errors_have_positions() {
        let err = parse("- name: a\n  effect: [unclosed\n", Booleans::Yaml12).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
        assert!(err.position.is_known(), "{err:?}");
    }
}
