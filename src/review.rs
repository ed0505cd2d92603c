//! AdmissionReview `admission.k8s.io/v1` in, AdmissionReview out: the one
//! code path from request bytes to response bytes, shared by the server and
//! `eci-profile check -o review`.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::budgets::Gate;
use crate::decision::{self, Decision, Exclusions, SkipReason};
use crate::namespaces::NamespaceLookup;
use crate::pod::Pod;
use crate::profile::Profile;
use crate::truncate;

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Everything a request is decided against.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub profile: &'a Profile,
    pub exclusions: &'a Exclusions,
    pub namespaces: &'a dyn NamespaceLookup,
    /// Where a pod sent to a virtual node takes its place in its budget.
    pub budgets: &'a dyn Gate,
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
    /// `request.uid` is longer than any uid kube-apiserver sends (its length).
    UidTooLong(usize),
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
            ReviewError::UidTooLong(len) => write!(
                f,
                "request.uid is {len} bytes long, over {}",
                truncate::LIMIT
            ),
        }
    }
}

impl std::error::Error for ReviewError {}

/// `request.kind`: borrowed from the body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// `request.resource`: borrowed from the body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GroupVersionResource<'a> {
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
}

/// `request.object`, read as a pod.
#[derive(Debug)]
pub enum Object {
    /// No object in the request.
    Absent,
    Pod(Box<Pod>),
    /// An object that is not a readable pod, and why.
    Unreadable(String),
}

/// The parts of `AdmissionReview.request` the webhook reads.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    pub uid: Cow<'a, str>,
    pub kind: GroupVersionKind<'a>,
    pub resource: GroupVersionResource<'a>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Cow<'a, str>,
    pub object: Object,
    pub dry_run: Option<bool>,
}

/// `request` as read from the body, with `object` read as `O`.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de> + Default")
)]
struct RequestIn<'a, O> {
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: GroupVersionKind<'a>,
    #[serde(borrow, default)]
    resource: GroupVersionResource<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    operation: Cow<'a, str>,
    #[serde(default)]
    object: O,
    #[serde(default)]
    dry_run: Option<bool>,
}

impl AdmissionRequest<'_> {
    /// The namespace a pod CREATE is decided in: the request's, else the pod's own.
    pub fn pod_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|ns| !ns.is_empty())
    }

    /// The request's uid (never empty once parsed).
    pub fn uid(&self) -> &str {
        &self.uid
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
#[serde(bound(deserialize = "O: Deserialize<'de> + Default"))]
struct ReviewIn<'a, O> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

/// Parses a request body.
///
/// Every well-formed request is read in one pass, its object read as a pod
/// on the way; only a body that fails that is read again, to tell a broken
/// body (an error) from an object that is not a readable pod (answered).
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest<'_>, ReviewError> {
    // JSON is UTF-8 (RFC 8259): checked once for the whole body rather than
    // string by string.
    let text = std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(echoed(e)))?;
    // The pod boxed as it is read: the envelope stays small to move around.
    if let Ok(review) = serde_json::from_str::<ReviewIn<Option<Box<Pod>>>>(text) {
        let (mut request, object) = checked(review)?;
        request.object = object.map_or(Object::Absent, Object::Pod);
        return Ok(request);
    }
    let (mut request, object) = parse_request_raw(body)?;
    request.object = match object {
        None => Object::Absent,
        Some(raw) => match serde_json::from_str::<Pod>(raw.get()) {
            Ok(pod) => Object::Pod(Box::new(pod)),
            Err(e) => Object::Unreadable(echoed(e)),
        },
    };
    Ok(request)
}

/// Parses a request body whose object is not a pod: the request (its
/// `object` left [`Object::Absent`]) and the object's JSON text, unread.
pub fn parse_request_raw(
    body: &[u8],
) -> Result<(AdmissionRequest<'_>, Option<&RawValue>), ReviewError> {
    let text = std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(echoed(e)))?;
    let review: ReviewIn<Option<&RawValue>> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ReviewError::NotAdmissionReview(echoed(e))
        } else {
            ReviewError::NotJson(echoed(e))
        }
    })?;
    checked(review)
}

/// An error message, which may quote the body (serde's do), as echoed.
fn echoed(e: impl fmt::Display) -> String {
    truncate::echo(&e.to_string()).into_owned()
}

/// Checks the envelope and the uid; returns the request (its object
/// [`Object::Absent`]) and the object as read.
fn checked<'a, O>(review: ReviewIn<'a, O>) -> Result<(AdmissionRequest<'a>, O), ReviewError> {
    if review.kind.as_deref() != Some(KIND) || review.api_version.as_deref() != Some(API_VERSION) {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind {}, apiVersion {}",
            echoed(format_args!("{:?}", review.kind.as_deref().unwrap_or(""))),
            echoed(format_args!(
                "{:?}",
                review.api_version.as_deref().unwrap_or("")
            ))
        )));
    }
    let request = review
        .request
        .ok_or_else(|| ReviewError::NotAdmissionReview("no request".into()))?;
    // kube-apiserver's uids are UUIDs; the response must repeat the uid
    // whole, so a longer one is refused rather than echoed.
    let uid = match request.uid {
        Some(uid) if uid.len() > truncate::LIMIT => {
            return Err(ReviewError::UidTooLong(uid.len()));
        }
        Some(uid) if !uid.is_empty() => uid,
        _ => return Err(ReviewError::MissingUid),
    };
    let parsed = AdmissionRequest {
        uid,
        kind: request.kind,
        resource: request.resource,
        sub_resource: request.sub_resource,
        name: request.name,
        namespace: request.namespace,
        operation: request.operation,
        object: Object::Absent,
        dry_run: request.dry_run,
    };
    Ok((parsed, request.object))
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

/// Decides a parsed request (taking its pod).
pub fn evaluate<'p>(request: &mut AdmissionRequest<'_>, context: Context<'p>) -> Evaluation<'p> {
    let namespace = request.namespace.as_deref().unwrap_or_default().to_string();
    if !request.is_pod_create() {
        return Evaluation {
            namespace,
            pod: None,
            decision: Decision::skipped(SkipReason::NotPodCreate),
        };
    }
    let pod = match std::mem::replace(&mut request.object, Object::Absent) {
        Object::Pod(pod) => *pod,
        Object::Unreadable(e) => {
            return unreadable(namespace, format!("the pod could not be read: {e}"));
        }
        Object::Absent => return unreadable(namespace, "the request has no object".into()),
    };
    let namespace = if namespace.is_empty() {
        pod.metadata.namespace.clone().unwrap_or_default()
    } else {
        namespace
    };
    let labels = context.namespaces.labels(&namespace);
    let decision = decision::decide_within(
        &pod,
        &namespace,
        labels.as_deref(),
        context.profile,
        context.exclusions,
        context.budgets,
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

/// The response body for `decision`: always allowed, warnings when any, and
/// the patch (base64, `patchType: JSONPatch`) only when there is one.
///
/// Written straight into one buffer (this runs for every request); the
/// bytes are those of serialising the AdmissionReview with serde.
pub fn render_response(uid: &str, decision: &Decision<'_>) -> Vec<u8> {
    let patch = (!decision.patch.is_empty()).then(|| {
        let mut json = Vec::with_capacity(160 * decision.patch.len());
        serde_json::to_writer(&mut json, &decision.patch).expect("writing to a Vec cannot fail");
        json
    });
    let capacity = 160
        + uid.len()
        + patch.as_ref().map_or(0, |p| p.len() * 4 / 3 + 4)
        + decision.warnings.iter().map(|w| w.len() + 3).sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    serde_json::to_writer(&mut out, uid).expect("writing to a Vec cannot fail");
    out.extend_from_slice(br#","allowed":true"#);
    if !decision.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        serde_json::to_writer(&mut out, &decision.warnings).expect("writing to a Vec cannot fail");
    }
    if let Some(patch) = patch {
        // The base64 alphabet needs no JSON escaping.
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = out.len();
        out.resize(
            start + base64::encoded_len(patch.len(), true).expect("small"),
            0,
        );
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&patch, &mut out[start..])
            .expect("sized above");
        out.truncate(start + written);
        out.push(b'"');
    }
    out.extend_from_slice(b"}}");
    out
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
    Ok(respond(parse_request(body)?, context))
}

/// The second half of [`review`], for callers that look at the request
/// first (the server fetches an unknown namespace's labels in between).
pub fn respond<'p>(mut request: AdmissionRequest<'_>, context: Context<'p>) -> Reviewed<'p> {
    let evaluation = evaluate(&mut request, context);
    let response = render_response(request.uid(), &evaluation.decision);
    Reviewed {
        uid: request.uid.into_owned(),
        operation: request.operation.into_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision_with(
        warnings: Vec<String>,
        annotations: &[(&'static str, &'static str)],
    ) -> Decision<'static> {
        let mut d = Decision::skipped(SkipReason::NotSelected);
        d.warnings = warnings;
        let mut patch = crate::patch::PatchBuilder::default();
        patch.add_to_object(
            &["metadata", "annotations"],
            true,
            annotations
                .iter()
                .map(|&(k, v)| (k, crate::patch::Value::Text(v.into()))),
        );
        d.patch = patch.build();
        d
    }

    /// Found by fuzzing: a pod without `metadata` was read as one with
    /// empty metadata, and answered with a patch adding under `/metadata`,
    /// which does not apply.
    #[test]
    fn a_pod_without_metadata_or_spec_is_not_read() {
        let fixture = include_str!("../tests/fixtures/admission/create-deployment-pod.json");
        let (profile, exclusions) = (Profile::embedded_default(), Exclusions::default());
        let namespaces = crate::namespaces::StaticNamespaces::default();
        let context = Context {
            profile: &profile,
            exclusions: &exclusions,
            namespaces: &namespaces,
            budgets: &crate::budgets::Unlimited,
        };
        for field in ["metadata", "spec"] {
            let mut request: serde_json::Value = serde_json::from_str(fixture).unwrap();
            let object = request["request"]["object"].as_object_mut().unwrap();
            let value = object.remove(field).unwrap();
            object.insert(format!("{field}."), value);
            let body = serde_json::to_vec(&request).unwrap();
            let reviewed = review(&body, context).unwrap();
            let response: serde_json::Value = serde_json::from_slice(&reviewed.response).unwrap();
            assert!(response["response"].get("patch").is_none(), "{response}");
            let warning = response["response"]["warnings"][0].as_str().unwrap();
            assert!(
                warning.starts_with(&format!(
                    "eci-profile: pod left unchanged: the pod could not be read: missing field `{field}`"
                )),
                "{response}"
            );
        }
    }

    #[test]
    fn response_without_patch_or_warnings() {
        let bytes = render_response("u-1", &decision_with(vec![], &[]));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true}}"#
        );
    }

    #[test]
    fn response_escapes_and_encodes() {
        let patch = json!([{"op": "add", "path": "/metadata/annotations/a~1b", "value": "x\"y"}]);
        let warnings = vec!["quote \" and \\ and é".to_string(), "second".to_string()];
        let bytes = render_response(
            "odd\"uid",
            &decision_with(warnings.clone(), &[("a/b", "x\"y")]),
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let b64 = value["response"]["patch"].as_str().unwrap();
        let decoded: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(decoded, patch);
        assert_eq!(
            value,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": "odd\"uid", "allowed": true, "warnings": warnings,
                "patchType": "JSONPatch", "patch": b64}})
        );
        // Key order as serde would write the struct.
        let text = String::from_utf8(bytes).unwrap();
        let order: Vec<usize> = [
            "\"uid\"",
            "\"allowed\"",
            "\"warnings\"",
            "\"patchType\"",
            "\"patch\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
