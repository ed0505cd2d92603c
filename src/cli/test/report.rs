//! The results of a test run as a table, a JSON document or JUnit XML.
//! Pure: results in, text out.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::expectations::{Difference, Observed};

/// The results of one test file.
#[derive(Clone, Debug)]
pub struct FileResult {
    /// The test file, as named on the command line (or found in a directory).
    pub file: String,
    /// Why no case of the file could run (it cannot be read, its profile
    /// does not compile...).
    pub error: Option<String>,
    pub cases: Vec<CaseResult>,
}

/// The result of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: String,
    /// The resource decided (file and object, as `check` names it).
    pub resource: String,
    /// What was decided, or why nothing could be.
    pub outcome: Result<Observed, String>,
    /// Empty when the case passes.
    pub differences: Vec<Difference>,
    /// How long the case took, for JUnit.
    pub seconds: f64,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok() && self.differences.is_empty()
    }
}

/// The cases that passed, failed, and the errors (cases, and files whose
/// cases could not run), over all files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
}

impl Counts {
    pub fn of(files: &[FileResult]) -> Self {
        let mut counts = Counts {
            passed: 0,
            failed: 0,
            errors: files.iter().filter(|f| f.error.is_some()).count(),
        };
        for case in files.iter().flat_map(|f| &f.cases) {
            match &case.outcome {
                Err(_) => counts.errors += 1,
                Ok(_) if case.passed() => counts.passed += 1,
                Ok(_) => counts.failed += 1,
            }
        }
        counts
    }

    /// Whether every case ran and passed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.errors == 0
    }

    /// "7 passed, 1 failed" (and ", 2 errors" when any).
    fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        match self.errors {
            0 => {}
            1 => line.push_str(", 1 error"),
            n => {
                let _ = write!(line, ", {n} errors");
            }
        }
        line
    }
}

/// `PASS name`, `FAIL name` or `ERROR name` per case with the differences
/// (or the error) indented under it, and a summary line.
pub fn table(files: &[FileResult]) -> String {
    let mut out = String::new();
    for file in files {
        let _ = writeln!(out, "{}", file.file);
        if let Some(error) = &file.error {
            let _ = writeln!(out, "  ERROR {error}");
        }
        for case in &file.cases {
            match &case.outcome {
                Err(error) => {
                    let _ = writeln!(out, "  ERROR {}\n         {error}", case.name);
                }
                Ok(_) => {
                    let verdict = if case.passed() { "PASS" } else { "FAIL" };
                    let _ = writeln!(out, "  {verdict} {}", case.name);
                }
            }
            for difference in &case.differences {
                let _ = writeln!(out, "         {difference}");
            }
        }
    }
    let _ = writeln!(out, "{}", Counts::of(files).line());
    out
}

/// The whole run as one JSON document.
pub fn json(files: &[FileResult]) -> Value {
    let counts = Counts::of(files);
    let files: Vec<Value> = files
        .iter()
        .map(|file| {
            let cases: Vec<Value> = file
                .cases
                .iter()
                .map(|case| {
                    let got = match &case.outcome {
                        Ok(o) => json!({
                            "outcome": o.outcome,
                            "reason": (!o.reason.is_empty()).then_some(&o.reason),
                            "rules": o.rules,
                            "policy": o.policy,
                        }),
                        Err(_) => Value::Null,
                    };
                    json!({
                        "name": case.name,
                        "resource": case.resource,
                        "passed": case.passed(),
                        "error": case.outcome.as_ref().err(),
                        "got": got,
                        "differences": case.differences.iter().map(|d| json!({
                            "field": d.field,
                            "expected": d.expected,
                            "got": d.got,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"file": file.file, "error": file.error, "cases": cases})
        })
        .collect();
    json!({"passed": counts.passed, "failed": counts.failed, "errors": counts.errors, "files": files})
}

/// JUnit XML: a `testsuite` per test file, a `testcase` per case (with
/// its `time`), a `failure` with the differences for each case that failed
/// and an `error` for each that could not run; a file whose cases could not
/// run is a suite with one `testcase` holding the `error`.
pub fn junit(files: &[FileResult]) -> String {
    let counts = Counts::of(files);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"eci-profile test\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        counts.passed + counts.failed + counts.errors,
        counts.failed,
        counts.errors
    );
    for file in files {
        let file_counts = Counts::of(std::slice::from_ref(file));
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
            escape(&file.file),
            file_counts.passed + file_counts.failed + file_counts.errors,
            file_counts.failed,
            file_counts.errors
        );
        let classname = escape(&file.file);
        if let Some(error) = &file.error {
            let _ = writeln!(
                out,
                "    <testcase name=\"(test file)\" classname=\"{classname}\">\n      <error message=\"{}\" type=\"error\">{}</error>\n    </testcase>",
                escape(first_line(error)),
                escape(error)
            );
        }
        for case in &file.cases {
            let open = format!(
                "    <testcase name=\"{}\" classname=\"{classname}\" time=\"{:.3}\"",
                escape(&case.name),
                case.seconds
            );
            if case.passed() {
                let _ = writeln!(out, "{open}/>");
                continue;
            }
            let _ = writeln!(out, "{open}>");
            match &case.outcome {
                Err(error) => {
                    let _ = writeln!(
                        out,
                        "      <error message=\"{}\" type=\"error\">{}</error>",
                        escape(first_line(error)),
                        escape(error)
                    );
                }
                Ok(_) => {
                    let lines: Vec<String> =
                        case.differences.iter().map(|d| d.to_string()).collect();
                    let _ = writeln!(
                        out,
                        "      <failure message=\"{}\" type=\"expectation\">{}</failure>",
                        escape(&lines[0]),
                        escape(&format!("{}\n{}", case.resource, lines.join("\n")))
                    );
                }
            }
            let _ = writeln!(out, "    </testcase>");
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Text as XML character data or an attribute value (quoted with `"`):
/// markup characters escaped, and characters XML 1.0 forbids replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Kept in attributes as characters, not normalised to spaces.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Whether XML 1.0 allows `c` in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, differences: Vec<Difference>) -> CaseResult {
        CaseResult {
            name: name.into(),
            resource: "pods.yaml: Pod default/api".into(),
            outcome: Ok(Observed {
                outcome: "skipped".into(),
                reason: "not-selected".into(),
                rules: Vec::new(),
                policy: None,
                pod: Value::Null,
            }),
            differences,
            seconds: 0.0012,
        }
    }

    fn results() -> Vec<FileResult> {
        vec![FileResult {
            file: "tests/a.yaml".into(),
            error: None,
            cases: vec![
                case("passes", Vec::new()),
                case(
                    "fails <here> & \"there\"",
                    vec![Difference {
                        field: "outcome".into(),
                        expected: "mutated".into(),
                        got: "skipped".into(),
                    }],
                ),
            ],
        }]
    }

    #[test]
    fn table_marks_each_case_and_indents_differences() {
        assert_eq!(
            table(&results()),
            "tests/a.yaml\n  PASS passes\n  FAIL fails <here> & \"there\"\n         outcome: expected mutated, got skipped\n1 passed, 1 failed\n"
        );
    }

    /// The results with a case that could not run and a file that could not be read.
    fn with_errors() -> Vec<FileResult> {
        let mut files = results();
        files[0].cases.push(CaseResult {
            outcome: Err("tests/a.yaml: case 3 (gone): missing.yaml: cannot read".into()),
            ..case("gone", Vec::new())
        });
        files.push(FileResult {
            file: "tests/b.yaml".into(),
            error: Some("tests/b.yaml: line 3 column 1: unknown field `case`".into()),
            cases: Vec::new(),
        });
        files
    }

    #[test]
    fn errors_are_shown_counted_and_reported_to_junit() {
        let files = with_errors();
        let text = table(&files);
        assert!(
            text.contains(
                "  ERROR gone\n         tests/a.yaml: case 3 (gone): missing.yaml: cannot read\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tests/b.yaml\n  ERROR tests/b.yaml: line 3 column 1: unknown field `case`\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("1 passed, 1 failed, 2 errors\n"), "{text}");
        assert!(!Counts::of(&files).all_passed());

        let doc = json(&files);
        assert_eq!(doc["errors"], 2);
        assert_eq!(doc["files"][0]["cases"][2]["passed"], false);
        assert_eq!(doc["files"][0]["cases"][2]["got"], Value::Null);
        assert!(
            doc["files"][1]["error"]
                .as_str()
                .unwrap()
                .contains("unknown field")
        );

        let xml = junit(&files);
        assert!(
            xml.contains(
                "<testsuites name=\"eci-profile test\" tests=\"4\" failures=\"1\" errors=\"2\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testsuite name=\"tests/a.yaml\" tests=\"3\" failures=\"1\" errors=\"1\">"
            ),
            "{xml}"
        );
        assert!(xml.contains("<testcase name=\"gone\" classname=\"tests/a.yaml\" time=\"0.001\">\n      <error message=\"tests/a.yaml: case 3 (gone): missing.yaml: cannot read\" type=\"error\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"tests/b.yaml\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase name=\"(test file)\" classname=\"tests/b.yaml\">\n      <error message=\"tests/b.yaml: line 3 column 1: unknown field `case`\""), "{xml}");
    }

    #[test]
    fn json_counts_and_lists_differences() {
        let doc = json(&results());
        assert_eq!(doc["passed"], 1);
        assert_eq!(doc["failed"], 1);
        let cases = &doc["files"][0]["cases"];
        assert_eq!(cases[0]["passed"], true);
        assert_eq!(cases[1]["got"]["reason"], "not-selected");
        assert_eq!(cases[1]["got"]["policy"], Value::Null);
        assert_eq!(cases[1]["differences"][0]["expected"], "mutated");
    }

    #[test]
    fn junit_escapes_names_and_messages() {
        let xml = junit(&results());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"eci-profile test\" tests=\"2\" failures=\"1\" errors=\"0\">\n"));
        assert!(
            xml.contains(
                "<testsuite name=\"tests/a.yaml\" tests=\"2\" failures=\"1\" errors=\"0\">"
            )
        );
        assert!(
            xml.contains("<testcase name=\"passes\" classname=\"tests/a.yaml\" time=\"0.001\"/>")
        );
        assert!(xml.contains(
            "<testcase name=\"fails &lt;here&gt; &amp; &quot;there&quot;\" classname=\"tests/a.yaml\" time=\"0.001\">\n      <failure message=\"outcome: expected mutated, got skipped\" type=\"expectation\">pods.yaml: Pod default/api&#10;outcome: expected mutated, got skipped</failure>\n    </testcase>"
        ));
        assert!(xml.ends_with("</testsuites>\n"));
    }

    #[test]
    fn escape_replaces_what_xml_cannot_hold() {
        assert_eq!(escape("a'b\u{1}c\u{FFFF}"), "a&apos;b\u{FFFD}c\u{FFFD}");
        assert_eq!(escape("ok é 😀"), "ok é 😀");
    }
}
