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
    pub cases: Vec<CaseResult>,
}

/// The result of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub name: String,
    /// The resource decided (file and object, as `check` names it).
    pub resource: String,
    pub observed: Observed,
    /// Empty when the case passes.
    pub differences: Vec<Difference>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// (passed, failed) over all files.
pub fn counts(files: &[FileResult]) -> (usize, usize) {
    let all = files.iter().flat_map(|f| &f.cases);
    let passed = all.clone().filter(|c| c.passed()).count();
    (passed, all.count() - passed)
}

/// `PASS name` or `FAIL name` per case with the differences indented under
/// it, and a summary line.
pub fn table(files: &[FileResult]) -> String {
    let mut out = String::new();
    for file in files {
        let _ = writeln!(out, "{}", file.file);
        for case in &file.cases {
            let verdict = if case.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict} {}", case.name);
            for difference in &case.differences {
                let _ = writeln!(out, "         {difference}");
            }
        }
    }
    let (passed, failed) = counts(files);
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    out
}

/// The whole run as one JSON document.
pub fn json(files: &[FileResult]) -> Value {
    let (passed, failed) = counts(files);
    let files: Vec<Value> = files
        .iter()
        .map(|file| {
            let cases: Vec<Value> = file
                .cases
                .iter()
                .map(|case| {
                    let o = &case.observed;
                    json!({
                        "name": case.name,
                        "resource": case.resource,
                        "passed": case.passed(),
                        "got": {
                            "outcome": o.outcome,
                            "reason": (!o.reason.is_empty()).then_some(&o.reason),
                            "rules": o.rules,
                            "policy": o.policy,
                        },
                        "differences": case.differences.iter().map(|d| json!({
                            "field": d.field,
                            "expected": d.expected,
                            "got": d.got,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"file": file.file, "cases": cases})
        })
        .collect();
    json!({"passed": passed, "failed": failed, "files": files})
}

/// JUnit XML: a `testsuite` per test file, a `testcase` per case, and a
/// `failure` with the differences for each case that failed.
pub fn junit(files: &[FileResult]) -> String {
    let (passed, failed) = counts(files);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"eci-profile test\" tests=\"{}\" failures=\"{failed}\">",
        passed + failed
    );
    for file in files {
        let failures = file.cases.iter().filter(|c| !c.passed()).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
            escape(&file.file),
            file.cases.len()
        );
        for case in &file.cases {
            let open = format!(
                "    <testcase name=\"{}\" classname=\"{}\"",
                escape(&case.name),
                escape(&file.file)
            );
            if case.passed() {
                let _ = writeln!(out, "{open}/>");
                continue;
            }
            let lines: Vec<String> = case.differences.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(out, "{open}>");
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"expectation\">{}</failure>",
                escape(&lines[0]),
                escape(&format!("{}\n{}", case.resource, lines.join("\n")))
            );
            let _ = writeln!(out, "    </testcase>");
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
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
            observed: Observed {
                outcome: "skipped".into(),
                reason: "not-selected".into(),
                rules: Vec::new(),
                policy: None,
                pod: Value::Null,
            },
            differences,
        }
    }

    fn results() -> Vec<FileResult> {
        vec![FileResult {
            file: "tests/a.yaml".into(),
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
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"eci-profile test\" tests=\"2\" failures=\"1\">\n"));
        assert!(
            xml.contains(
                "<testsuite name=\"tests/a.yaml\" tests=\"2\" failures=\"1\" errors=\"0\">"
            )
        );
        assert!(xml.contains("<testcase name=\"passes\" classname=\"tests/a.yaml\"/>"));
        assert!(xml.contains(
            "<testcase name=\"fails &lt;here&gt; &amp; &quot;there&quot;\" classname=\"tests/a.yaml\">\n      <failure message=\"outcome: expected mutated, got skipped\" type=\"expectation\">pods.yaml: Pod default/api&#10;outcome: expected mutated, got skipped</failure>\n    </testcase>"
        ));
        assert!(xml.ends_with("</testsuites>\n"));
    }

    #[test]
    fn escape_replaces_what_xml_cannot_hold() {
        assert_eq!(escape("a'b\u{1}c\u{FFFF}"), "a&apos;b\u{FFFD}c\u{FFFD}");
        assert_eq!(escape("ok é 😀"), "ok é 😀");
    }
}
