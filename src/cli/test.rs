//! `eci-profile test DIR...`: runs the cases of ProfileTest files through
//! the same path as `check` and compares each decision with what the case
//! expects.

mod expectations;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use eci_profile::budgets::Checking;
use eci_profile::decision::Exclusions;
use eci_profile::labels::Labels;
use eci_profile::namespaces::{NamespaceLookup, StaticNamespaces};
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use eci_profile::sources::file::read_namespaces;
use eci_profile::workloads;
use serde::Deserialize;
use serde_json::Value;

use super::check::{self, Documents};
use expectations::{Expectation, Observed};
use report::{CaseResult, FileResult};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// What to print
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write the results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// ProfileTest files, or directories searched (recursively) for them
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// PASS or FAIL per case, with what differed
    Table,
    /// One JSON document
    Json,
}

const API_VERSION: &str = "eci-profile.io/v1alpha1";
const KIND: &str = "ProfileTest";

/// A test file: a profile, the namespaces, and cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileTest {
    api_version: String,
    kind: String,
    /// Profile files (ConfigMap and/or Selector manifests, or mounted
    /// directories) [default: the embedded default profile].
    #[serde(default)]
    profile: Paths,
    /// Namespace manifests giving namespace labels.
    #[serde(default)]
    namespaces: Paths,
    /// What each namespace holds on virtual nodes (as `check --usage-file`).
    usage: Option<PathBuf>,
    /// Namespaces left alone besides kube-system, kube-public and kube-node-lease.
    #[serde(default)]
    exclude_namespaces: Vec<String>,
    cases: Vec<TestCase>,
}

/// One path or a list of paths, relative to the test file.
#[derive(Debug, Default)]
enum Paths {
    #[default]
    None,
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Paths;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<Paths, E> {
                Ok(Paths::One(path.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Paths, A::Error> {
                let mut paths = Vec::new();
                while let Some(path) = seq.next_element()? {
                    paths.push(path);
                }
                Ok(Paths::Many(paths))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Paths {
    fn list(&self) -> &[PathBuf] {
        match self {
            Paths::None => &[],
            Paths::One(path) => std::slice::from_ref(path),
            Paths::Many(paths) => paths,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    /// A pod, workload or AdmissionReview file.
    resource: Option<PathBuf>,
    /// Which object of `resource` when it holds several.
    select: Option<Select>,
    /// The object itself, instead of `resource`.
    object: Option<Value>,
    /// The namespace to create it in [default: its own, else default].
    namespace: Option<String>,
    expect: Expectation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Select {
    kind: Option<String>,
    name: Option<String>,
}

pub fn run(args: TestArgs) -> Result<ExitCode, String> {
    let mut files = Vec::new();
    for path in &args.paths {
        find_test_files(path, true, &mut files)?;
    }
    let results: Vec<FileResult> = files
        .iter()
        .map(|(path, test)| match test {
            Ok(test) => run_file(path, test),
            Err(error) => {
                eprintln!("eci-profile: {error}");
                FileResult {
                    file: path.display().to_string(),
                    error: Some(error.clone()),
                    cases: Vec::new(),
                }
            }
        })
        .collect();
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&results))
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    let text = match args.output {
        Output::Table => report::table(&results),
        Output::Json => {
            serde_json::to_string_pretty(&report::json(&results)).expect("JSON serialises") + "\n"
        }
    };
    super::print(&text)?;
    Ok(if report::Counts::of(&results).all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::FAILURE)
    })
}

/// Reads `path` as a test file, or the test files under a directory (by
/// name; `.yaml`, `.yml` and `.json` files of another kind are left out).
/// A file named on the command line must be a ProfileTest. A test file that
/// cannot be read is kept with its error; a path that does not exist, or a
/// directory holding no test file, is an error.
fn find_test_files(
    path: &Path,
    named: bool,
    out: &mut Vec<(PathBuf, Result<ProfileTest, String>)>,
) -> Result<(), String> {
    let name = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    if metadata.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| format!("{name}: cannot list: {e}"))?;
        entries.sort();
        let before = out.len();
        for entry in entries {
            let manifest = entry
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if entry.is_dir() || manifest {
                find_test_files(&entry, false, out)?;
            }
        }
        if named && out.len() == before {
            return Err(format!("{name}: no {KIND} files"));
        }
        return Ok(());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            out.push((path.to_path_buf(), Err(format!("{name}: cannot read: {e}"))));
            return Ok(());
        }
    };
    if !named {
        let kind = serde_saphyr::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_string));
        if kind.as_deref() != Some(KIND) {
            return Ok(());
        }
    }
    out.push((
        path.to_path_buf(),
        parse_test_file(&name.to_string(), &text),
    ));
    Ok(())
}

/// Reads a test file's text; `name` names it in errors.
fn parse_test_file(name: &str, text: &str) -> Result<ProfileTest, String> {
    let test: ProfileTest =
        serde_saphyr::from_str(text).map_err(|e| format!("{name}: {}", e.without_snippet()))?;
    if test.api_version != API_VERSION || test.kind != KIND {
        return Err(format!(
            "{name}: not a {KIND}: apiVersion {API_VERSION} and kind {KIND} expected, found {} and {}",
            test.api_version, test.kind
        ));
    }
    if test.cases.is_empty() {
        return Err(format!("{name}: no cases"));
    }
    for (i, case) in test.cases.iter().enumerate() {
        let what = format!("{name}: case {} ({})", i + 1, case.name);
        match (&case.resource, &case.object) {
            (None, None) => return Err(format!("{what}: give resource or object")),
            (Some(_), Some(_)) => return Err(format!("{what}: give resource or object, not both")),
            (None, Some(_)) if case.select.is_some() => {
                return Err(format!("{what}: select is for a resource file"));
            }
            _ => {}
        }
    }
    Ok(test)
}

/// Runs every case of one test file; what keeps them all from running is
/// the file's error, what keeps one from running is the case's.
fn run_file(path: &Path, test: &ProfileTest) -> FileResult {
    let file = path.display().to_string();
    match run_cases(&file, path, test) {
        Ok(cases) => FileResult {
            file,
            error: None,
            cases,
        },
        Err(error) => {
            eprintln!("eci-profile: {error}");
            FileResult {
                file,
                error: Some(error),
                cases: Vec::new(),
            }
        }
    }
}

/// The cases of one test file, after what they share (the profile, the
/// namespaces, the usage) has been read.
fn run_cases(file: &str, path: &Path, test: &ProfileTest) -> Result<Vec<CaseResult>, String> {
    let base = path.parent().unwrap_or(Path::new("."));
    let profile = load_profile(file, base, test.profile.list())?;
    let namespaces = NamespaceFiles(
        test.namespaces
            .list()
            .iter()
            .map(|path| read_namespaces(&base.join(path)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{file}: namespaces: {e}"))?,
    );
    let usage = check::usage(test.usage.as_ref().map(|path| base.join(path)).as_deref())
        .map_err(|e| format!("{file}: usage: {e}"))?;
    let exclusions = Exclusions::with_namespaces(test.exclude_namespaces.iter().cloned());
    let context = Context {
        profile: &profile,
        exclusions: &exclusions,
        namespaces: &namespaces,
        budgets: &Checking(&usage),
    };
    let mut cases = Vec::new();
    for (i, case) in test.cases.iter().enumerate() {
        let what = format!("{file}: case {} ({})", i + 1, case.name);
        let started = Instant::now();
        let (resource, outcome) = match run_case(&what, base, case, context) {
            Ok((resource, observed)) => (resource, Ok(observed)),
            Err(error) => {
                eprintln!("eci-profile: {error}");
                (String::new(), Err(error))
            }
        };
        let differences = match &outcome {
            Ok(observed) => expectations::compare(&case.expect, observed),
            Err(_) => Vec::new(),
        };
        cases.push(CaseResult {
            name: case.name.clone(),
            resource,
            outcome,
            differences,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(cases)
}

/// Decides one case: the resource decided (as `check` names it) and what
/// was decided.
fn run_case(
    what: &str,
    base: &Path,
    case: &TestCase,
    context: Context<'_>,
) -> Result<(String, Observed), String> {
    let request = request_of(what, base, case)?;
    let reviewed = review::review(&request.body, context).map_err(|e| format!("{what}: {e}"))?;
    let decision = &reviewed.evaluation.decision;
    let mut pod = check::request_object(&request.body);
    json_patch::patch(&mut pod, &decision.patch.to_json_patch())
        .map_err(|e| format!("{what}: the patch does not apply: {e}"))?;
    let observed = Observed {
        outcome: decision.outcome.as_str().to_string(),
        reason: decision.outcome.reason().to_string(),
        rules: decision.applied.iter().map(|r| r.to_string()).collect(),
        policy: decision.policy.map(|p| p.as_str().to_string()),
        pod,
    };
    Ok((request.label, observed))
}

/// The profile of the files given (one ConfigMap at most, any number of
/// Selector objects), or the embedded default without any.
fn load_profile(test_file: &str, base: &Path, paths: &[PathBuf]) -> Result<Profile, String> {
    if paths.is_empty() {
        return super::load_profile(None);
    }
    let files: Vec<PathBuf> = paths.iter().map(|path| base.join(path)).collect();
    let manifests = super::read_profile_files(&files).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("{test_file}: profile: {}", errors.join("\n"))
    })?;
    super::compile(&manifests, &format!("{test_file}: profile"))
}

/// The request a case decides: its object, or the one object of its
/// resource file that `select` names.
fn request_of(what: &str, base: &Path, case: &TestCase) -> Result<check::Case, String> {
    let (name, documents, yaml) = match (&case.resource, &case.object) {
        (Some(resource), _) => {
            let path = base.join(resource);
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{what}: {name}: cannot read: {e}"))?;
            match check::documents(&name, &text).map_err(|e| format!("{what}: {e}"))? {
                Documents::Review(text) => {
                    if case.select.is_some() {
                        return Err(format!("{what}: {name} is one AdmissionReview: no select"));
                    }
                    return Ok(check::Case {
                        label: name,
                        body: text.into_bytes(),
                        yaml: false,
                    });
                }
                Documents::Objects { documents, yaml } => (name, documents, yaml),
            }
        }
        (None, Some(object)) => (what.to_string(), vec![object.clone()], true),
        (None, None) => return Err(format!("{what}: give resource or object")),
    };
    // A `kubectl get -o yaml` export is one List: its items are chosen from.
    let chosen: Vec<Value> = workloads::flatten_lists(documents)
        .into_iter()
        .filter(|d| selects(case.select.as_ref(), d))
        .collect();
    let [document] = <[Value; 1]>::try_from(chosen).map_err(|chosen| {
        format!(
            "{what}: {name}: {} objects match; name one with select: {{kind, name}}",
            chosen.len()
        )
    })?;
    let mut requests = Vec::new();
    check::add_document(
        &name,
        document,
        case.namespace.as_deref(),
        yaml,
        &mut requests,
    )
    .map_err(|e| format!("{what}: {e}"))?;
    let count = requests.len();
    requests.pop().filter(|_| count == 1).ok_or_else(|| {
        format!("{what}: {name}: {count} pods to decide; a case decides one pod, workload or AdmissionReview")
    })
}

/// The namespaces of several files; the last file that knows one wins.
struct NamespaceFiles(Vec<StaticNamespaces>);

impl NamespaceLookup for NamespaceFiles {
    fn labels(&self, namespace: &str) -> Option<Arc<Labels>> {
        self.0.iter().rev().find_map(|file| file.labels(namespace))
    }
}

/// Whether `select` (if any) names `document`.
fn selects(select: Option<&Select>, document: &Value) -> bool {
    let Some(select) = select else { return true };
    let matches = |wanted: &Option<String>, got: Option<&str>| {
        wanted.as_deref().is_none_or(|w| Some(w) == got)
    };
    matches(&select.kind, document["kind"].as_str())
        && matches(&select.name, document["metadata"]["name"].as_str())
}
