//! Findings about a profile: errors (the profile is refused), warnings and
//! information, each naming the selector and field, and where possible the
//! file, line and column.

use std::fmt;

use super::node::Position;
use crate::truncate::{self, echo, truncate};

/// How much of a message is shown: its own words and a value echoed whole.
const MESSAGE_LIMIT: usize = 2 * truncate::LIMIT;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The profile is refused.
    Error,
    /// Probably a mistake; the profile is still used.
    Warning,
    /// Worth knowing; nothing is wrong.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One finding about a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file the finding is in, when the profile came from a file.
    pub file: Option<String>,
    /// Line and column in `file`, when known.
    pub position: Option<Position>,
    /// The selector's name (or `selectors[i]` when it has none).
    pub selector: Option<String>,
    /// The field, as a path from the ConfigMap's data key, e.g. `selectors[0].effect.labels`.
    pub field: String,
    pub message: String,
    /// The key or field of the format probably meant instead of a misspelt
    /// one; shown after the message as `; did you mean "NAME"?`.
    pub suggestion: Option<String>,
}

impl Diagnostic {
    /// A finding about rule `selector` (when about one) and `field`, with no
    /// file or position.
    pub fn new(severity: Severity, selector: Option<&str>, field: &str, message: String) -> Self {
        Diagnostic {
            severity,
            file: None,
            position: None,
            selector: selector.map(str::to_string),
            field: field.to_string(),
            message,
            suggestion: None,
        }
    }

    /// The message with its suggestion, if any.
    pub fn full_message(&self) -> String {
        let message = truncate(&self.message, MESSAGE_LIMIT);
        match &self.suggestion {
            Some(name) => format!("{message}; did you mean {name:?}?"),
            None => message.into_owned(),
        }
    }

    /// The finding as a JSON object: `file`, `line`, `column`, `severity`,
    /// `rule`, `field`, `message` (`null` when unknown) and `suggestion`
    /// when there is one.
    pub fn to_json(&self) -> serde_json::Value {
        let position = self.position.filter(|p| p.is_known());
        let mut json = serde_json::json!({
            "file": self.file,
            "line": position.map(|p| p.line),
            "column": position.map(|p| p.column),
            "severity": self.severity.to_string(),
            "rule": self.selector,
            "field": self.field,
            "message": self.full_message(),
        });
        if let Some(name) = &self.suggestion {
            json["suggestion"] = name.as_str().into();
        }
        json
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
            if let Some(p) = self.position.filter(|p| p.is_known()) {
                write!(f, "{}:{}:", p.line, p.column)?;
            }
            f.write_str(" ")?;
        }
        write!(f, "{}: ", self.severity)?;
        // Names, keys and values come from the profile: echoed bounded.
        if let Some(selector) = &self.selector {
            write!(f, "selector {}: ", echo(&format!("{selector:?}")))?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", echo(&self.field))?;
        }
        f.write_str(&self.full_message())
    }
}

/// The findings of one compilation, in the order they were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Every finding.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suggestion_ends_the_message() {
        let d = Diagnostic {
            suggestion: Some("matchLabels".into()),
            ..Diagnostic::new(
                Severity::Warning,
                Some("r"),
                "selectors[0].x",
                "unknown field, ignored (line 1, column 2 of the selectors value)".into(),
            )
        };
        assert_eq!(
            d.to_string(),
            "warning: selector \"r\": selectors[0].x: unknown field, ignored (line 1, column 2 of the selectors value); did you mean \"matchLabels\"?"
        );
        let plain = Diagnostic::new(Severity::Error, None, "", "ends \"with a quote\"?".into());
        assert_eq!(plain.to_string(), "error: ends \"with a quote\"?");
    }

    #[test]
    fn json_has_every_field() {
        let d = Diagnostic {
            file: Some("p.yaml".into()),
            position: Some(Position { line: 3, column: 7 }),
            suggestion: Some("matchLabels".into()),
            ..Diagnostic::new(
                Severity::Error,
                Some("web"),
                "selectors[0].objectSelector.matchLabel",
                "unknown field".into(),
            )
        };
        assert_eq!(
            d.to_json(),
            serde_json::json!({
                "file": "p.yaml", "line": 3, "column": 7, "severity": "error", "rule": "web",
                "field": "selectors[0].objectSelector.matchLabel",
                "message": "unknown field; did you mean \"matchLabels\"?",
                "suggestion": "matchLabels",
            })
        );
        let bare = Diagnostic::new(Severity::Warning, None, "", "m".into()).to_json();
        assert_eq!(bare["line"], serde_json::Value::Null);
        assert_eq!(bare["rule"], serde_json::Value::Null);
        assert!(bare.get("suggestion").is_none());
    }
}
