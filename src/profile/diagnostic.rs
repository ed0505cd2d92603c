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
        }
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
        f.write_str(&truncate(&self.message, MESSAGE_LIMIT))
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
