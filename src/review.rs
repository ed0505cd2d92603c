//! AdmissionReview `admission.k8s.io/v1` in, AdmissionReview out: the one
//! code path from request bytes to response bytes, shared by the server and
//! `eci-profile check -o review`.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::decision::{self, Decision, Exclusions, SkipReason};
use crate::namespaces::NamespaceLookup;
use crate::pod::Pod;
use crate::profile::Profile;

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Everything a request is decided against.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub profile: &'a Profile,
    pub exclusions: &'a Exclusions,
    pub namespaces: &'a dyn NamespaceLookup,
}

/// Why a body is not a usable AdmissionReview request (answered with HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewError {
    /// The body is not JSON.
    NotJson(String),
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview with a request.
    NotAdmissionReview(String),
    /// `request.uid` is missing or empty.
    MissingUid,
}

impl fmt::Display for ReviewError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ReviewError::NotJson(e) => write!(f, "request body is not JSON: {e}"),
            ReviewError::NotAdmissionReview(e) => {
                write!(
                    f,
                    "request body is not an {API_VERSION} {KIND} request: {e}"
                )
            }
            ReviewError::MissingUid => f.write_str("request.uid is missing"),
        }
    }
}

impl std::error::Error for ReviewError {}

/// A group/version/kind or group/version/resource as in the request.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// `request.resource`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupVersionResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// The parts of `AdmissionReview.request` the webhook reads; `object` is
/// kept raw and only parsed for pod CREATEs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest<'_> {
    /// The namespace a pod CREATE is decided in: the request's, else the pod's own.
    pub fn pod_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|ns| !ns.is_empty())
    }

    /// The request's uid (never empty once parsed).
    pub fn uid(&self) -> &str {
        self.uid.as_deref().unwrap_or_default()
    }

    /// Step 1: only a CREATE of a core Pod, with no subresource, is considered.
    pub fn is_pod_create(&self) -> bool {
        self.operation == "CREATE"
            && self.kind.group.is_empty()
            && self.kind.kind == "Pod"
            && self.resource.resource == "pods"
            && self.sub_resource.as_deref().unwrap_or("").is_empty()
    }
}

#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<AdmissionRequest<'a>>,
}

/// Parses a request body.
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest<'_>, ReviewError> {
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ReviewError::NotAdmissionReview(e.to_string())
        } else {
            ReviewError::NotJson(e.to_string())
        }
    })?;
    if review.kind.as_deref() != Some(KIND) || review.api_version.as_deref() != Some(API_VERSION) {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind {:?}, apiVersion {:?}",
            review.kind.as_deref().unwrap_or(""),
            review.api_version.as_deref().unwrap_or("")
        )));
    }
    let request = review
        .request
        .ok_or_else(|| ReviewError::NotAdmissionReview("no request".into()))?;
    if request.uid.as_deref().is_none_or(str::is_empty) {
        return Err(ReviewError::MissingUid);
    }
    Ok(request)
}

/// A decided request: the pod as read and the decision.
#[derive(Debug)]
pub struct Evaluation<'p> {
    /// The namespace the pod is created in.
    pub namespace: String,
    /// The pod, when the request is a pod CREATE that could be read.
    pub pod: Option<Pod>,
    pub decision: Decision<'p>,
}

/// Decides a parsed request.
pub fn evaluate<'p>(request: &AdmissionRequest<'_>, context: Context<'p>) -> Evaluation<'p> {
    let namespace = request.namespace.clone().unwrap_or_default();
    if !request.is_pod_create() {
        return Evaluation {
            namespace,
            pod: None,
            decision: Decision::skipped(SkipReason::NotPodCreate),
        };
    }
    let pod = match request
        .object
        .map(|raw| serde_json::from_str::<Pod>(raw.get()))
    {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => return unreadable(namespace, format!("the pod could not be read: {e}")),
        None => return unreadable(namespace, "the request has no object".into()),
    };
    let namespace = if namespace.is_empty() {
        pod.metadata.namespace.clone().unwrap_or_default()
    } else {
        namespace
    };
    let labels = context.namespaces.labels(&namespace);
    let decision = decision::decide(
        &pod,
        &namespace,
        labels.as_deref(),
        context.profile,
        context.exclusions,
    );
    Evaluation {
        namespace,
        pod: Some(pod),
        decision,
    }
}

fn unreadable<'p>(namespace: String, why: String) -> Evaluation<'p> {
    let mut decision = Decision::skipped(SkipReason::UnreadableObject(why.clone()));
    decision
        .warnings
        .push(format!("eci-profile: pod left unchanged: {why}"));
    Evaluation {
        namespace,
        pod: None,
        decision,
    }
}

#[derive(Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// The response body for `decision`: always allowed, warnings when any, and
/// the patch (base64, `patchType: JSONPatch`) only when there is one.
pub fn render_response(uid: &str, decision: &Decision<'_>) -> Vec<u8> {
    let patch = (!decision.patch.0.is_empty()).then(|| {
        let json = serde_json::to_vec(&decision.patch).expect("a patch serialises");
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let review = ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response: ResponseOut {
            uid,
            allowed: true,
            warnings: &decision.warnings,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
        },
    };
    serde_json::to_vec(&review).expect("a review serialises")
}

/// A request answered: what it was, what was decided, and the response body.
#[derive(Debug)]
pub struct Reviewed<'p> {
    pub uid: String,
    pub operation: String,
    pub evaluation: Evaluation<'p>,
    pub response: Vec<u8>,
}

/// The whole path: request body → decision and response body.
pub fn review<'p>(body: &[u8], context: Context<'p>) -> Result<Reviewed<'p>, ReviewError> {
    Ok(respond(&parse_request(body)?, context))
}

/// The second half of [`review`], for callers that look at the request
/// first (the server fetches an unknown namespace's labels in between).
pub fn respond<'p>(request: &AdmissionRequest<'_>, context: Context<'p>) -> Reviewed<'p> {
    let evaluation = evaluate(request, context);
    let response = render_response(request.uid(), &evaluation.decision);
    Reviewed {
        uid: request.uid().to_string(),
        operation: request.operation.clone(),
        evaluation,
        response,
    }
}

/// An AdmissionReview request body for creating `pod` in `namespace`, shaped
/// as kube-apiserver sends it (for `check` on Pod manifests, tests and benchmarks).
pub fn pod_create_request(pod: &serde_json::Value, namespace: &str, uid: &str) -> Vec<u8> {
    let mut object = pod.clone();
    if let Some(metadata) = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| serde_json::json!({})))
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.insert("namespace".into(), namespace.into());
    }
    let gvk = serde_json::json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = serde_json::json!({"group": "", "version": "v1", "resource": "pods"});
    let mut request = serde_json::json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "eci-profile-check"},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    });
    if let Some(name) = pod
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
    {
        request["name"] = name.into();
    }
    serde_json::to_vec(&serde_json::json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "request": request,
    }))
    .expect("a review serialises")
}
