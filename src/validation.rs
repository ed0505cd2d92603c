//! `POST /validate`: Selector objects and the profile ConfigMap checked when
//! they are applied, with the messages of `eci-profile validate`. Errors
//! deny the request; warnings come back as admission warnings, which
//! `kubectl apply` prints. Every other object is allowed at once. Pure: the
//! profile in use is passed in.

use serde_json::value::RawValue;

use crate::profile::node::Node;
use crate::profile::selector_object::{GROUP, KIND};
use crate::profile::{
    self, Diagnostic, Diagnostics, Origin, Profile, ProfileData, RuleSource, Severity,
};
use crate::review::{self, AdmissionRequest, ReviewError};
use crate::truncate::{echo, truncate};

/// At most this many warnings are returned (the API server keeps 4 KiB of them).
const MAX_WARNINGS: usize = 16;
/// A warning's length limit (the API server truncates longer ones).
const WARNING_LIMIT: usize = 256;
/// A denial message's length limit.
const MESSAGE_LIMIT: usize = 4096;

/// What `/validate` checks against.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The profile ConfigMap's namespace and name.
    pub configmap: (&'a str, &'a str),
    /// The profile in use (its ConfigMap rules and Selectors), for name clashes.
    pub profile: &'a Profile,
}

/// What was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Selector,
    /// The profile ConfigMap.
    Profile,
    /// Anything else (another ConfigMap, a DELETE): allowed unchecked.
    Other,
}

impl Subject {
    /// `selector`, `profile` or `other`, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Selector => "selector",
            Subject::Profile => "profile",
            Subject::Other => "other",
        }
    }
}

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub subject: Subject,
    /// The object's name, when known.
    pub name: String,
    /// `None`: allowed; else why it is denied.
    pub denial: Option<String>,
    pub warnings: Vec<String>,
}

/// The whole path: request body → verdict and response body.
pub fn review(body: &[u8], context: Context<'_>) -> Result<(Verdict, Vec<u8>), ReviewError> {
    let (request, object) = review::parse_request_raw(body)?;
    let verdict = judge(&request, object, context);
    let response = render_response(request.uid(), &verdict);
    Ok((verdict, response))
}

/// Checks the object of a CREATE or UPDATE of a Selector or of the profile ConfigMap.
pub fn judge(
    request: &AdmissionRequest<'_>,
    object: Option<&RawValue>,
    context: Context<'_>,
) -> Verdict {
    let mut verdict = Verdict {
        subject: Subject::Other,
        name: request.name.as_deref().unwrap_or("").to_string(),
        denial: None,
        warnings: Vec::new(),
    };
    if !matches!(request.operation.as_ref(), "CREATE" | "UPDATE")
        || !request.sub_resource.as_deref().unwrap_or("").is_empty()
    {
        return verdict;
    }
    let kind = &request.kind;
    let is_selector = kind.group == GROUP && kind.kind == KIND;
    let is_configmap = kind.group.is_empty() && kind.kind == "ConfigMap";
    if !is_selector && !is_configmap {
        return verdict;
    }
    let Some(json) =
        object.and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
    else {
        if is_selector {
            verdict.subject = Subject::Selector;
            verdict.denial = Some("the request has no readable object".into());
        }
        return verdict;
    };
    if verdict.name.is_empty() {
        verdict.name = json["metadata"]["name"].as_str().unwrap_or("").to_string();
    }
    if is_selector {
        verdict.subject = Subject::Selector;
        let compiled = profile::compile_selector(&Node::from_json(&json), &Origin::None);
        let mut diagnostics = compiled.diagnostics;
        if let Some(name) = &compiled.name
            && context
                .profile
                .rule(name)
                .is_some_and(|r| r.source != RuleSource::Selector)
        {
            diagnostics.0.push(Diagnostic::new(
                Severity::Error,
                Some(name),
                "metadata.name",
                profile::clash_message(name),
            ));
        }
        conclude(&mut verdict, "Selector", &diagnostics);
        return verdict;
    }
    let (namespace, name) = context.configmap;
    let object_namespace = request
        .namespace
        .as_deref()
        .or_else(|| json["metadata"]["namespace"].as_str())
        .unwrap_or("");
    if object_namespace != namespace || verdict.name != name {
        return verdict;
    }
    verdict.subject = Subject::Profile;
    let data = json["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()));
    let compiled = profile::compile(&ProfileData::from_map(data));
    let mut diagnostics = compiled.diagnostics;
    if let Some(new) = &compiled.profile {
        for rule in new.rules() {
            if context
                .profile
                .rule(&rule.name)
                .is_some_and(|r| r.source == RuleSource::Selector)
            {
                diagnostics.0.push(Diagnostic::new(
                    Severity::Warning,
                    Some(&rule.name),
                    "name",
                    format!(
                        "a Selector object has this name: it will be left out while this rule has it ({})",
                        profile::clash_message(&rule.name)
                    ),
                ));
            }
        }
    }
    conclude(&mut verdict, "profile", &diagnostics);
    verdict
}

/// Denies on errors (listing them), and turns warnings into admission warnings.
fn conclude(verdict: &mut Verdict, what: &str, diagnostics: &Diagnostics) {
    let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        let message = format!(
            "invalid {what} {} ({} error{}):\n{}",
            echo(&format!("{:?}", verdict.name)),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        );
        verdict.denial = Some(truncate(&message, MESSAGE_LIMIT).into_owned());
    }
    verdict.warnings = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .take(MAX_WARNINGS)
        .map(|d| {
            let text = d.to_string();
            let text = text.strip_prefix("warning: ").unwrap_or(&text);
            truncate(&format!("eci-profile: {text}"), WARNING_LIMIT).into_owned()
        })
        .collect();
}

/// The AdmissionReview response for `verdict`.
pub fn render_response(uid: &str, verdict: &Verdict) -> Vec<u8> {
    let mut response = serde_json::json!({"uid": uid, "allowed": verdict.denial.is_none()});
    if let Some(message) = &verdict.denial {
        response["status"] = serde_json::json!({
            "code": 422, "reason": "Invalid", "message": message,
        });
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = serde_json::json!(verdict.warnings);
    }
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .expect("JSON serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn request(kind: (&str, &str, &str), namespace: Option<&str>, object: Value) -> Vec<u8> {
        let (group, version, kind) = kind;
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": "CREATE", "namespace": namespace,
                "name": object["metadata"]["name"],
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": "x"},
                "object": object,
            }
        }))
        .unwrap()
    }

    fn selector(spec: Value) -> Vec<u8> {
        request(
            ("eci.aliyun.com", "v1", "Selector"),
            None,
            json!({"apiVersion": "eci.aliyun.com/v1", "kind": "Selector", "metadata": {"name": "web"}, "spec": spec}),
        )
    }

    fn configmap(namespace: &str, name: &str, selectors: &str) -> Vec<u8> {
        request(
            ("", "v1", "ConfigMap"),
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "namespace": namespace},
                   "data": {"selectors": selectors}}),
        )
    }

    fn judge_with(profile: &Profile, body: &[u8]) -> (Verdict, Value) {
        let context = Context {
            configmap: ("kube-system", "eci-profile"),
            profile,
        };
        let (verdict, response) = review(body, context).unwrap();
        (verdict, serde_json::from_slice(&response).unwrap())
    }

    #[test]
    fn a_valid_selector_is_allowed_with_its_warnings() {
        let (verdict, response) = judge_with(
            &Profile::empty(),
            &selector(json!({"objectLabels": {"matchLabels": {"app": "web"}},
                             "policy": {"normalNodePrefer": {"cpuRatio": 2}}})),
        );
        assert_eq!(verdict.subject, Subject::Selector);
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["response"]["uid"], "u-1");
        let warnings = response["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].as_str().unwrap().starts_with("eci-profile: selector \"web\": spec.policy.normalNodePrefer.cpuRatio: is accepted and ignored"),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_invalid_selector_is_denied_with_every_error() {
        let (verdict, response) = judge_with(
            &Profile::empty(),
            &selector(
                json!({"objectLabels": {"matchExpressions": [{"key": "app", "operator": "Within"}]},
                             "effect": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": -1000}}}),
            ),
        );
        assert!(verdict.denial.is_some());
        let r = &response["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid Selector \"web\" (2 errors):\n"),
            "{message}"
        );
        assert!(message.contains("error: selector \"web\": spec.objectLabels.matchExpressions[0].operator: unknown operator \"Within\""), "{message}");
        assert!(
            message.contains("must be a string, found a number (quote it)"),
            "{message}"
        );
    }

    #[test]
    fn a_selector_named_like_a_configmap_rule_is_denied() {
        let profile = crate::profile::compile(&ProfileData::from_map([(
            "selectors".to_string(),
            r#"[{"name": "web", "objectSelector": {}}]"#.to_string(),
        )]))
        .profile
        .unwrap();
        let (_, response) = judge_with(&profile, &selector(json!({"objectLabels": {}})));
        let message = response["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("is also a rule of the profile ConfigMap"),
            "{message}"
        );
    }

    #[test]
    fn the_profile_configmap_is_checked_and_others_are_not() {
        let bad = r#"[{"name": "x", "policy": "sometimes", "objectSelector": {}}]"#;
        let (verdict, response) = judge_with(
            &Profile::empty(),
            &configmap("kube-system", "eci-profile", bad),
        );
        assert_eq!(verdict.subject, Subject::Profile);
        let message = response["response"]["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid profile \"eci-profile\" (1 error):\nerror: selector \"x\": selectors[0].policy: unknown policy \"sometimes\""), "{message}");
        for (namespace, name) in [("kube-system", "other"), ("default", "eci-profile")] {
            let (verdict, response) =
                judge_with(&Profile::empty(), &configmap(namespace, name, bad));
            assert_eq!(verdict.subject, Subject::Other);
            assert_eq!(response["response"], json!({"uid": "u-1", "allowed": true}));
        }
    }

    #[test]
    fn a_configmap_rule_named_like_a_selector_warns() {
        let base = Profile::empty();
        let node = crate::profile::node::parse(
            "apiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata: {name: web}\nspec: {objectLabels: {}}\n",
            crate::profile::node::Booleans::Yaml11,
        )
        .unwrap();
        let compiled = profile::compile_selector(&node, &Origin::None);
        let merged =
            profile::merge(&base, [(compiled.rule.as_ref().unwrap(), compiled.digest)]).profile;
        let (verdict, response) = judge_with(
            &merged,
            &configmap(
                "kube-system",
                "eci-profile",
                r#"[{"name": "web", "objectSelector": {}}]"#,
            ),
        );
        assert!(verdict.denial.is_none());
        let warnings = response["response"]["warnings"].as_array().unwrap();
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .unwrap()
                .contains("a Selector object has this name")),
            "{warnings:?}"
        );
    }

    #[test]
    fn deletes_and_other_kinds_are_allowed_unchecked() {
        let mut body: Value = serde_json::from_slice(&selector(json!({"policy": {}}))).unwrap();
        body["request"]["operation"] = json!("DELETE");
        let (verdict, response) =
            judge_with(&Profile::empty(), &serde_json::to_vec(&body).unwrap());
        assert_eq!((verdict.subject, verdict.denial), (Subject::Other, None));
        assert_eq!(response["response"]["allowed"], true);
        let pod = request(
            ("", "v1", "Pod"),
            Some("default"),
            json!({"metadata": {"name": "p"}}),
        );
        assert_eq!(
            judge_with(&Profile::empty(), &pod).0.subject,
            Subject::Other
        );
    }

    #[test]
    fn a_broken_body_is_an_error_not_a_verdict() {
        let context = Context {
            configmap: ("kube-system", "eci-profile"),
            profile: &Profile::empty(),
        };
        assert!(review(b"{", context).is_err());
        assert!(
            review(
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
                context
            )
            .is_err()
        );
    }
}
