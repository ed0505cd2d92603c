//! What the fuzz targets check: a request body goes through the server's
//! own path (`review::parse_request`, then `review::respond`), and the answer
//! must be an AdmissionReview for the same uid whose patch applies to the
//! pod and leaves nothing to add when the pod is decided again.

use std::path::Path;
use std::sync::LazyLock;

use base64::Engine as _;
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::profile::{self, Diagnostics, Profile, ProfileData};
use eci_profile::review::{self, Context};
use serde_json::Value;

/// The longest a message echoing input may be (400 bodies, one warning).
const ECHO_BOUND: usize = 1024;
/// kube-apiserver keeps 4096 characters of warnings before it cuts them.
const WARNINGS_BOUND: usize = 4096;

fn repository(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

/// The example profile (`manifests/examples/eci-profile.yaml`), compiled.
pub static EXAMPLE_PROFILE: LazyLock<Profile> = LazyLock::new(|| {
    let path = repository("manifests/examples/eci-profile.yaml");
    let text = std::fs::read_to_string(&path).expect("the example profile");
    let data = ProfileData::from_manifest(&path, &text).expect("a ConfigMap");
    profile::compile(&data).into_result().expect("valid").0
});

/// The namespaces the fixtures were captured in (`tests/fixtures/namespaces.yaml`).
pub static NAMESPACES: LazyLock<StaticNamespaces> = LazyLock::new(|| {
    let text = std::fs::read_to_string(repository("tests/fixtures/namespaces.yaml"))
        .expect("the fixture namespaces");
    StaticNamespaces::from_manifests(&text).expect("valid namespaces")
});

/// The default exclusions, as `serve` has them.
pub static EXCLUSIONS: LazyLock<Exclusions> = LazyLock::new(Exclusions::default);

/// The captured requests of `tests/fixtures/admission/` up to 16 KiB.
pub static FIXTURE_REQUESTS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let dir = repository("tests/fixtures/admission");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("the fixtures")
        .map(|e| e.expect("a fixture").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("a fixture"))
        .filter(|body| body.len() <= 16 << 10)
        .collect()
});

/// The context of the example profile and the fixture namespaces.
pub fn example_context() -> Context<'static> {
    Context {
        profile: &EXAMPLE_PROFILE,
        exclusions: &EXCLUSIONS,
        namespaces: &*NAMESPACES,
        budgets: &eci_profile::budgets::Unlimited,
    }
}

/// Answers `body` as the server does and checks the answer (panics on a
/// violation). A body that is not a request must get an error, bounded.
pub fn check_review(body: &[u8], context: Context<'_>) {
    let patched = match answer_and_check(body, context) {
        Some(patched) => patched,
        None => return,
    };
    // Deciding again on the patched pod adds nothing.
    if let Some(again) = answer(&patched, context) {
        assert!(
            again.get("patch").is_none(),
            "not idempotent: a second patch {} after the first",
            decoded_patch(&again)
        );
    }
}

/// `/validate` on `body`: an error or an AdmissionReview for the same uid,
/// allowed or denied with a bounded message, never a panic.
pub fn check_validation(body: &[u8], profile: &eci_profile::profile::Profile) {
    let context = eci_profile::validation::Context {
        configmap: ("kube-system", "eci-profile"),
        profile,
    };
    let Ok((verdict, response)) = eci_profile::validation::review(body, context) else {
        return;
    };
    let response: Value = serde_json::from_slice(&response).expect("the response is JSON");
    assert_eq!(
        response["response"]["allowed"].as_bool(),
        Some(verdict.denial.is_none())
    );
    if let Some(message) = &verdict.denial {
        assert!(message.len() <= 4096, "a denial of {} bytes", message.len());
    }
    for warning in &verdict.warnings {
        assert!(warning.len() <= 256, "a warning of {} bytes", warning.len());
    }
}

/// The `response` of an answer to `body`, checked; `None` when refused.
fn answer(body: &[u8], context: Context<'_>) -> Option<Value> {
    let request = match review::parse_request(body) {
        Ok(request) => request,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.len() <= ECHO_BOUND,
                "a 400 body of {} bytes",
                message.len()
            );
            return None;
        }
    };
    let uid = request.uid().to_string();
    let reviewed = review::respond(request, context);
    let review: Value = serde_json::from_slice(&reviewed.response).expect("the answer is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review["response"].clone();
    assert_eq!(response["uid"].as_str(), Some(uid.as_str()), "uid echoed");
    assert_eq!(response["allowed"], true);
    if let Some(warnings) = response.get("warnings") {
        let warnings = warnings.as_array().expect("warnings are a list");
        let mut total = 0;
        for w in warnings {
            let w = w.as_str().expect("a warning is a string");
            assert!(w.len() <= ECHO_BOUND, "a warning of {} bytes", w.len());
            total += w.chars().count();
        }
        assert!(total <= WARNINGS_BOUND, "{total} characters of warnings");
    }
    match response.get("patch") {
        Some(_) => assert_eq!(response["patchType"], "JSONPatch"),
        None => assert!(response.get("patchType").is_none()),
    }
    Some(response)
}

/// Answers `body`; when there is a patch and the pod has a `spec`, applies
/// it to `request.object` and returns the request with the patched pod.
fn answer_and_check(body: &[u8], context: Context<'_>) -> Option<Vec<u8>> {
    let response = answer(body, context)?;
    response.get("patch")?;
    let patch: json_patch::Patch =
        serde_json::from_value(decoded_patch(&response)).expect("the patch is a JSON Patch");
    // The request as JSON: a body the reader takes may still hold a number
    // serde_json's `Value` refuses (`1e999` in a field nobody reads).
    let mut review: Value = serde_json::from_slice(body).ok()?;
    let object = review.pointer_mut("/request/object")?;
    if !object.get("spec").is_some_and(Value::is_object) {
        return None;
    }
    json_patch::patch(object, &patch).unwrap_or_else(|e| {
        panic!(
            "the patch does not apply: {e}\npatch: {}",
            serde_json::to_string(&patch).unwrap()
        )
    });
    Some(serde_json::to_vec(&review).expect("serialises"))
}

fn decoded_patch(response: &Value) -> Value {
    let text = response["patch"].as_str().expect("the patch is a string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("the patch is base64");
    serde_json::from_slice(&bytes).expect("the patch is JSON")
}

/// Checks that every finding about a profile is shown bounded.
pub fn check_diagnostics(diagnostics: &Diagnostics) {
    for d in diagnostics.iter() {
        let shown = d.to_string();
        assert!(
            shown.len() <= 2 * ECHO_BOUND,
            "a diagnostic of {} bytes",
            shown.len()
        );
    }
}
