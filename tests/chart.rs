//! The Helm chart on its own: values.schema.json, names and labels that
//! follow the release, the standard options, the PodDisruptionBudget, the
//! checks before installing, NOTES.txt, the `helm test` hook, the generated
//! README and upgrades from the previous chart version. Rendered with Helm's
//! own SDK (tests/support/render_chart.py), as `helm install` would.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::manifests::*;
use serde_json::{Value, json};

const CHART: &str = "manifests/helm/eci-profile";

/// render_chart.py of `chart` with `values` into `namespace`, more flags
/// after; the objects, or Helm's error.
fn render_chart(
    chart: &Path,
    values: &Value,
    namespace: &str,
    flags: &[&str],
) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(root().join("tests/support/render_chart.py"))
        .arg(chart)
        .arg(values.to_string())
        .arg(namespace)
        .args(flags)
        .env("PYTHONPATH", tools())
        .output()
        .expect("runs python3");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn render(values: Value, namespace: &str, flags: &[&str]) -> Result<Vec<Value>, String> {
    render_chart(&root().join(CHART), &values, namespace, flags).map(|yaml| documents(&yaml))
}

fn rendered(values: Value, namespace: &str, flags: &[&str]) -> Vec<Value> {
    render(values, namespace, flags).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(values: Value, namespace: &str, flags: &[&str]) -> String {
    match render(values.clone(), namespace, flags) {
        Ok(_) => panic!("{values} in {namespace} {flags:?} rendered"),
        Err(e) => e,
    }
}

fn notes(values: Value, namespace: &str, flags: &[&str]) -> String {
    let mut flags = flags.to_vec();
    flags.push("--notes");
    render_chart(&root().join(CHART), &values, namespace, &flags).unwrap_or_else(|e| panic!("{e}"))
}

fn lint(values: &Value) -> Value {
    serde_json::from_str(&run(Command::new("python3")
        .arg(root().join("tests/support/lint_chart.py"))
        .arg(root().join(CHART))
        .arg(values.to_string())
        .env("PYTHONPATH", tools())))
    .unwrap()
}

fn chart_version(chart_yaml: &str) -> String {
    chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .expect("Chart.yaml has a version")
        .trim()
        .to_string()
}

fn deployment(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment")
}

fn container(objects: &[Value]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(objects: &'a [Value], name: &str) -> Option<&'a str> {
    container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap())
}

/// Whether `selector` (matchLabels) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

#[test]
fn the_schema_refuses_wrong_values_at_install_and_lint() {
    rendered(json!({}), NAMESPACE, &[]);
    assert_eq!(lint(&json!({}))["errors"], json!([]));
    for (values, message) in [
        (
            json!({"replicaCount": "two"}),
            "at '/replicaCount': got string, want integer",
        ),
        (
            json!({"webhook": {"failurePolicy": "Ignored"}}),
            "at '/webhook/failurePolicy': value must be one of 'Ignore', 'Fail'",
        ),
        (
            json!({"replicas": 2}),
            "additional properties 'replicas' not allowed",
        ),
        (
            json!({"image": {"name": "x"}}),
            "additional properties 'name' not allowed",
        ),
        (
            json!({"logFormat": "yaml"}),
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        (
            json!({"webhook": {"timeoutSeconds": 31}}),
            "at '/webhook/timeoutSeconds'",
        ),
        (json!({"image": {"digest": "latest"}}), "at '/image/digest'"),
        (
            json!({"podDisruptionBudget": {"maxUnavailable": "half"}}),
            "at '/podDisruptionBudget/maxUnavailable'",
        ),
        (
            json!({"extraEnv": [{"value": "x"}]}),
            "at '/extraEnv/0': missing property 'name'",
        ),
    ] {
        let error = refused(values.clone(), NAMESPACE, &[]);
        assert!(error.contains(message), "{values}: {error}");
        let report = lint(&values);
        let errors = report["errors"].to_string();
        assert!(errors.contains(message), "lint {values}: {report:#}");
    }
}

/// Every value is described in values.yaml and typed in values.schema.json,
/// and README.md's table is what tests/support/chart_readme.py makes of them.
#[test]
fn the_readme_lists_every_value_as_generated() {
    let generated = run(Command::new("python3")
        .arg(root().join("tests/support/chart_readme.py"))
        .arg(root().join(CHART))
        .env("PYTHONPATH", tools()));
    let committed = std::fs::read_to_string(root().join(CHART).join("README.md")).unwrap();
    assert!(
        generated == committed,
        "README.md is stale: run python3 tests/support/chart_readme.py {CHART} --write"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for value in [
        "replicaCount",
        "priorityClassName",
        "nodeSelector",
        "extraArgs",
    ] {
        assert!(schema["properties"][value].is_object(), "{value}");
        assert!(committed.contains(&format!("| `{value}` |")), "{value}");
    }
    assert!(
        committed
            .contains("| `webhook.failurePolicy` | `\"Ignore\"` \\| `\"Fail\"` | `\"Ignore\"` |")
    );
}

/// Strings equal to "eci-profile" in the objects a release named otherwise
/// renders: each must be the application's name, not an object's.
fn leftover_names(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s)
            if s == "eci-profile"
                || s.ends_with("/eci-profile")
                || s.starts_with("eci-profile-") =>
        {
            out.insert(format!("{path} = {s}"));
        }
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| leftover_names(v, &format!("{path}.{k}"), out)),
        Value::Array(items) => items
            .iter()
            .for_each(|v| leftover_names(v, &format!("{path}[]"), out)),
        _ => {}
    }
}

#[test]
fn names_and_labels_follow_the_release() {
    for mode in ["cert-manager", "self-signed"] {
        let values = json!({"certificate": {"mode": mode}, "scaleInOrder": {"enabled": true},
            "serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}});
        let objects = rendered(values, "eci-batch", &["--release", "batch"]);
        let mut leftovers = BTreeSet::new();
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            if kind != "CustomResourceDefinition" {
                assert!(
                    name.starts_with("batch-eci-profile"),
                    "{mode}: {kind}/{name}"
                );
            }
            let labels = &object["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/instance"], "batch",
                "{kind}/{name}"
            );
            assert_eq!(
                labels["app.kubernetes.io/version"],
                env!("CARGO_PKG_VERSION"),
                "{kind}/{name}"
            );
            assert_eq!(
                labels["app.kubernetes.io/managed-by"], "Helm",
                "{kind}/{name}"
            );
            assert_eq!(
                labels["helm.sh/chart"], "eci-profile-0.2.0",
                "{kind}/{name}"
            );
            assert_eq!(
                labels["app.kubernetes.io/name"], "eci-profile",
                "{kind}/{name}"
            );
            let mut found = BTreeSet::new();
            leftover_names(object, kind, &mut found);
            leftovers.extend(found);
        }
        // What stays: the application's name in labels, its container, and the profile ConfigMap.
        let allowed = |l: &str| {
            l.contains(".labels.app.kubernetes.io/name =")
                || l.contains(".labels.app.kubernetes.io/part-of =")
                || l.contains(".labels.helm.sh/chart = eci-profile-0.2.0")
                || l.contains(".matchLabels.app.kubernetes.io/name =")
                || l.contains(".selector.app.kubernetes.io/name =")
                || l == "Deployment.spec.template.spec.containers[].name = eci-profile"
                || l == "Deployment.spec.template.spec.containers[].env[].value = kube-system/eci-profile"
                || l == "Role.rules[].resourceNames[] = eci-profile"
                || l == "PrometheusRule.spec.groups[].name = eci-profile"
        };
        let unexpected: Vec<_> = leftovers.iter().filter(|l| !allowed(l)).collect();
        assert!(
            unexpected.is_empty(),
            "{mode}: names not following the release: {unexpected:#?}"
        );

        let service = find(&objects, "Service", "batch-eci-profile");
        let webhook = &find(
            &objects,
            "MutatingWebhookConfiguration",
            "batch-eci-profile",
        )["webhooks"][0];
        assert_eq!(webhook["name"], "pods.batch-eci-profile.eci-profile.io");
        assert_eq!(
            webhook["clientConfig"]["service"]["name"],
            "batch-eci-profile"
        );
        assert_eq!(webhook["clientConfig"]["service"]["namespace"], "eci-batch");
        let pod_labels = &deployment(&objects)["spec"]["template"]["metadata"]["labels"];
        assert!(selects(&service["spec"]["selector"], pod_labels));
        let alerts = find(&objects, "PrometheusRule", "batch-eci-profile").to_string();
        assert!(
            alerts.contains(r#"name=\"pods.batch-eci-profile.eci-profile.io\""#),
            "{mode}"
        );
        assert!(
            alerts.contains(r#"deployment=\"batch-eci-profile\""#),
            "{mode}"
        );
        if mode == "self-signed" {
            assert_eq!(
                env(&objects, "ECI_PROFILE_WEBHOOK_CONFIG"),
                Some("batch-eci-profile")
            );
            assert_eq!(
                env(&objects, "ECI_PROFILE_WEBHOOK_SERVICE"),
                Some("eci-batch/batch-eci-profile")
            );
            let role = find(&objects, "ClusterRole", "batch-eci-profile-webhook-config");
            assert_eq!(
                role["rules"][0]["resourceNames"],
                json!(["batch-eci-profile"])
            );
        } else {
            let config = find(
                &objects,
                "MutatingWebhookConfiguration",
                "batch-eci-profile",
            );
            assert_eq!(
                config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "eci-batch/batch-eci-profile-serving"
            );
            let cert = find(&objects, "Certificate", "batch-eci-profile-serving");
            assert_eq!(
                cert["spec"]["dnsNames"][0],
                "batch-eci-profile.eci-batch.svc"
            );
            assert_eq!(cert["spec"]["secretName"], "batch-eci-profile-tls");
            assert_eq!(
                cert["spec"]["issuerRef"]["name"],
                "batch-eci-profile-selfsigned"
            );
        }
    }
    // fullnameOverride names everything.
    let objects = rendered(
        json!({"fullnameOverride": "vk-webhook"}),
        "eci-batch",
        &["--release", "batch"],
    );
    assert!(kinds(&objects).contains(&"MutatingWebhookConfiguration/vk-webhook".to_string()));
    assert!(kinds(&objects).contains(&"Deployment/vk-webhook".to_string()));
}

#[test]
fn two_releases_coexist() {
    let key = |o: &Value| {
        format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap()
        )
    };
    let first = rendered(json!({}), NAMESPACE, &[]);
    let second = rendered(
        json!({"crds": {"install": false}}),
        "eci-batch",
        &["--release", "batch"],
    );
    let first_keys: BTreeSet<String> = first.iter().map(key).collect();
    let clashes: Vec<String> = second
        .iter()
        .map(key)
        .filter(|k| first_keys.contains(k))
        .collect();
    assert!(clashes.is_empty(), "{clashes:?}");
    // Two releases in one namespace select only their own pods.
    let a = rendered(
        json!({"crds": {"install": false}}),
        "shared",
        &["--release", "a"],
    );
    let b = rendered(
        json!({"crds": {"install": false}}),
        "shared",
        &["--release", "b"],
    );
    let a_keys: BTreeSet<String> = a.iter().map(key).collect();
    assert!(b.iter().map(key).all(|k| !a_keys.contains(&k)));
    let labels = |o: &[Value]| deployment(o)["spec"]["template"]["metadata"]["labels"].clone();
    let selector = |o: &[Value]| deployment(o)["spec"]["selector"]["matchLabels"].clone();
    assert!(selects(&selector(&a), &labels(&a)));
    assert!(!selects(&selector(&a), &labels(&b)));
    assert!(!selects(&selector(&b), &labels(&a)));
    for objects in [&a, &b] {
        let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(service["spec"]["selector"], selector(objects));
    }
}

#[test]
fn standard_options_reach_the_objects() {
    let objects = rendered(
        json!({
            "image": {"registry": "registry.example.com", "repository": "mirror/eci-profile", "tag": "9.9.9"},
            "imagePullSecrets": [{"name": "pull"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
            "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "eci-profile"}}}],
            "podAnnotations": {"example.com/scrape": "true"},
            "podLabels": {"team": "platform", "app.kubernetes.io/name": "overridden"},
            "extraArgs": ["--max-connections=64"],
            "extraEnv": [{"name": "ECI_PROFILE_IDLE_TIMEOUT", "value": "60s"}],
            "logLevel": "debug,kube=info",
            "logFormat": "text",
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn"}},
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "priorityClassName": "system-cluster-critical",
            "webhook": {
                "namespaceSelector": {"matchLabels": {"eci": "allowed"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["system"]}]},
                "objectSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                "matchConditions": [{"name": "not-static", "expression": "!has(object.metadata.annotations)"}],
                "timeoutSeconds": 7,
                "failurePolicy": "Fail",
            },
            "serviceMonitor": {"enabled": true, "namespace": "monitoring", "interval": "15s",
                "relabelings": [{"action": "labeldrop", "regex": "pod"}],
                "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}]},
        }),
        NAMESPACE,
        &[],
    );
    let pod = &deployment(&objects)["spec"]["template"];
    let spec = &pod["spec"];
    let c = container(&objects);
    assert_eq!(c["image"], "registry.example.com/mirror/eci-profile:9.9.9");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "pull"}]));
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert!(spec["affinity"]["podAntiAffinity"].is_null(), "replaced");
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "pool"
    );
    assert_eq!(
        spec["topologySpreadConstraints"].as_array().unwrap().len(),
        1
    );
    assert_eq!(spec["topologySpreadConstraints"][0]["maxSkew"], 2);
    assert_eq!(pod["metadata"]["annotations"]["example.com/scrape"], "true");
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    // The chart's own labels win: the selector still selects the pods.
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "eci-profile"
    );
    assert!(selects(
        &deployment(&objects)["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(c["args"], json!(["serve", "--max-connections=64"]));
    assert_eq!(env(&objects, "ECI_PROFILE_IDLE_TIMEOUT"), Some("60s"));
    assert_eq!(
        env(&objects, "ECI_PROFILE_LOG_LEVEL"),
        Some("debug,kube=info")
    );
    assert_eq!(env(&objects, "ECI_PROFILE_LOG_FORMAT"), Some("text"));
    assert_eq!(
        c["resources"],
        // Helm merges maps with the defaults: the memory limit stays.
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}})
    );
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    let account = find(&objects, "ServiceAccount", "eci-profile");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn"
    );
    let webhook = &find(&objects, "MutatingWebhookConfiguration", "eci-profile")["webhooks"][0];
    assert_eq!(
        webhook["namespaceSelector"]["matchLabels"],
        json!({"eci": "allowed"})
    );
    let expressions = webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert_eq!(
        expressions[0]["key"], "kubernetes.io/metadata.name",
        "the exclusions stay"
    );
    assert_eq!(expressions[1]["key"], "tier");
    let expressions = webhook["objectSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert_eq!(
        expressions[0]["key"], "eci-profile.io/exclude",
        "the opt-out stays"
    );
    assert_eq!(expressions[1], json!({"key": "app", "operator": "Exists"}));
    assert_eq!(webhook["matchConditions"][0]["name"], "not-static");
    assert_eq!(webhook["timeoutSeconds"], 7);
    assert_eq!(webhook["failurePolicy"], "Fail");
    let monitor = find(&objects, "ServiceMonitor", "eci-profile");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [NAMESPACE]})
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["relabelings"][0]["action"], "labeldrop");
    assert_eq!(endpoint["metricRelabelings"][0]["regex"], "go_.*");

    // Defaults: the tag is the appVersion, a digest replaces it, no log level (info),
    // no priority class, the ServiceMonitor beside the Service.
    let objects = rendered(json!({"serviceMonitor": {"enabled": true}}), NAMESPACE, &[]);
    assert_eq!(
        container(&objects)["image"],
        concat!(
            "ghcr.io/eci-profile/eci-profile:",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(env(&objects, "ECI_PROFILE_LOG_LEVEL"), None);
    assert!(deployment(&objects)["spec"]["template"]["spec"]["priorityClassName"].is_null());
    let monitor = find(&objects, "ServiceMonitor", "eci-profile");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE);
    assert!(monitor["spec"]["namespaceSelector"].is_null());
    let digest = format!("sha256:{}", "a".repeat(64));
    let objects = rendered(json!({"image": {"digest": digest}}), NAMESPACE, &[]);
    assert_eq!(
        container(&objects)["image"],
        format!("ghcr.io/eci-profile/eci-profile@{digest}")
    );
}

#[test]
fn a_disruption_budget_only_with_more_than_one_replica() {
    let objects = rendered(json!({"replicaCount": 1}), NAMESPACE, &[]);
    assert!(!objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    for (values, min, max) in [
        (json!({}), json!(1), json!(null)),
        (
            json!({"replicaCount": 3, "podDisruptionBudget": {"minAvailable": 2}}),
            json!(2),
            json!(null),
        ),
        (
            json!({"podDisruptionBudget": {"maxUnavailable": 1}}),
            json!(null),
            json!(1),
        ),
        (
            json!({"podDisruptionBudget": {"maxUnavailable": "50%"}}),
            json!(null),
            json!("50%"),
        ),
    ] {
        let objects = rendered(values.clone(), NAMESPACE, &[]);
        let pdb = find(&objects, "PodDisruptionBudget", "eci-profile");
        assert_eq!(pdb["spec"]["minAvailable"], min, "{values}");
        assert_eq!(pdb["spec"]["maxUnavailable"], max, "{values}");
        assert_eq!(
            pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow",
            "{values}"
        );
        assert_eq!(
            pdb["spec"]["selector"],
            deployment(&objects)["spec"]["selector"],
            "{values}"
        );
    }
    // Kubernetes 1.25 and 1.26 lack unhealthyPodEvictionPolicy.
    let objects = rendered(json!({}), NAMESPACE, &["--kube-version", "v1.26.3"]);
    let pdb = find(&objects, "PodDisruptionBudget", "eci-profile");
    assert!(pdb["spec"].get("unhealthyPodEvictionPolicy").is_none());
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn installing_into_default_is_refused_and_warned_about() {
    let error = refused(json!({}), "default", &[]);
    assert!(
        error.contains("does not install into the namespace default"),
        "{error}"
    );
    assert!(error.contains("--namespace eci-profile-system"), "{error}");
    // A release already there upgrades, with a warning.
    rendered(json!({}), "default", &["--upgrade"]);
    assert!(
        notes(json!({}), "default", &["--upgrade"])
            .starts_with("WARNING: eci-profile runs in the namespace default")
    );
    assert!(!notes(json!({}), NAMESPACE, &[]).contains("WARNING"));
}

#[test]
fn the_crds_it_uses_must_be_served() {
    let none = ["--no-api-versions"];
    let error = refused(json!({}), NAMESPACE, &none);
    assert!(
        error.contains("certificate.mode cert-manager needs cert-manager"),
        "{error}"
    );
    assert!(error.contains("certificate.mode=self-signed"), "{error}");
    assert!(!error.contains("no matches for kind"), "{error}");
    rendered(
        json!({"certificate": {"mode": "self-signed"}}),
        NAMESPACE,
        &none,
    );
    rendered(
        json!({}),
        NAMESPACE,
        &["--api-versions", "cert-manager.io/v1"],
    );
    for monitoring in [
        json!({"serviceMonitor": {"enabled": true}}),
        json!({"prometheusRule": {"enabled": true}}),
    ] {
        let error = refused(
            monitoring.clone(),
            NAMESPACE,
            &["--api-versions", "cert-manager.io/v1"],
        );
        assert!(
            error.contains("need the Prometheus Operator's CRDs"),
            "{monitoring}: {error}"
        );
        let error = refused(
            monitoring.clone(),
            NAMESPACE,
            &["--upgrade", "--api-versions", "cert-manager.io/v1"],
        );
        assert!(
            error.contains("need the Prometheus Operator's CRDs"),
            "{monitoring}: {error}"
        );
        rendered(monitoring, NAMESPACE, &[]);
    }
}

#[test]
fn notes_say_what_was_installed_and_how_to_check_it() {
    let text = notes(json!({}), NAMESPACE, &[]);
    for expected in [
        concat!(
            "eci-profile ",
            env!("CARGO_PKG_VERSION"),
            " is installed as eci-profile in eci-profile-system"
        ),
        "MutatingWebhookConfiguration eci-profile",
        "with a PodDisruptionBudget",
        "kube-system, kube-public, kube-node-lease, eci-profile-system",
        "kubectl -n eci-profile-system rollout status deployment/eci-profile",
        "--dry-run=server",
        "eci-profile check --profile profile.yaml pod.yaml",
        "helm test eci-profile -n eci-profile-system",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    let text = notes(
        json!({"replicaCount": 1, "certificate": {"mode": "self-signed"}}),
        "eci-batch",
        &["--release", "batch"],
    );
    assert!(
        text.contains("Deployment batch-eci-profile (1 replicas), Service"),
        "{text}"
    );
    assert!(text.contains("self-signed"), "{text}");
}

#[test]
fn the_helm_test_dry_runs_a_pod_through_the_webhook() {
    let install = rendered(json!({}), NAMESPACE, &[]);
    assert!(
        install
            .iter()
            .all(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_null())
    );
    let objects = rendered(json!({}), NAMESPACE, &["--tests"]);
    let hooks: Vec<&Value> = objects
        .iter()
        .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .collect();
    assert_eq!(
        hooks
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Namespace", "ServiceAccount", "Role", "RoleBinding", "Pod"]
    );
    for hook in &hooks {
        assert_eq!(
            hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
    }
    let namespace = find(&objects, "Namespace", "eci-profile-test");
    assert_eq!(
        namespace["metadata"]["labels"]["alibabacloud.com/eci"],
        "true"
    );
    let role = find(&objects, "Role", "eci-profile-test");
    assert_eq!(role["metadata"]["namespace"], "eci-profile-test");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}])
    );
    let binding = find(&objects, "RoleBinding", "eci-profile-test");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "eci-profile-test", "namespace": NAMESPACE}])
    );
    let pod = find(&objects, "Pod", "eci-profile-test");
    assert_eq!(pod["metadata"]["namespace"], NAMESPACE);
    assert_eq!(pod["metadata"]["labels"]["eci-profile.io/exclude"], "true");
    assert_eq!(pod["spec"]["serviceAccountName"], "eci-profile-test");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let kubectl = &pod["spec"]["containers"][0];
    assert_eq!(kubectl["image"], "registry.k8s.io/kubectl:v1.33.0");
    assert_eq!(kubectl["command"], json!(["kubectl"]));
    assert_eq!(kubectl["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        kubectl["args"],
        json!([
            "run",
            "eci-profile-check",
            "--namespace=eci-profile-test",
            concat!(
                "--image=ghcr.io/eci-profile/eci-profile:",
                env!("CARGO_PKG_VERSION")
            ),
            "--restart=Never",
            "--labels=alibabacloud.com/eci=true",
            "--dry-run=server",
            "--allow-missing-template-keys=false",
            r#"--output=jsonpath=eci-profile selected the pod by {.metadata.annotations.eci-profile\.io/selectors}{"\n"}"#,
        ])
    );
    // Its labels and image are values (maps merge with the defaults).
    let digest = format!("sha256:{}", "b".repeat(64));
    let objects = rendered(
        json!({"test": {"podLabels": {"eci": "true", "team": "a"}, "namespaceLabels": {}, "image": {"digest": digest}}}),
        NAMESPACE,
        &["--tests"],
    );
    let kubectl = &find(&objects, "Pod", "eci-profile-test")["spec"]["containers"][0];
    assert_eq!(
        kubectl["image"],
        format!("registry.k8s.io/kubectl@{digest}")
    );
    assert!(
        kubectl["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--labels=alibabacloud.com/eci=true,eci=true,team=a"))
    );
}

/// The chart as the newest commit with another chart version than the
/// working tree's left it (the last state of the previous version),
/// extracted into a temporary directory.
fn previous_chart() -> (tempfile::TempDir, PathBuf, String) {
    let current =
        chart_version(&std::fs::read_to_string(root().join(CHART).join("Chart.yaml")).unwrap());
    let chart_yaml = format!("{CHART}/Chart.yaml");
    let log =
        run(Command::new("git")
            .current_dir(root())
            .args(["log", "--format=%H", "--", CHART]));
    let (commit, version) = log
        .lines()
        .find_map(|commit| {
            let text = run(Command::new("git")
                .current_dir(root())
                .args(["show", &format!("{commit}:{chart_yaml}")]));
            let version = chart_version(&text);
            (version != current).then(|| (commit.to_string(), version))
        })
        .unwrap_or_else(|| {
            panic!("no commit with a chart version other than {current} (a shallow clone?)")
        });
    let dir = tempfile::Builder::new()
        .prefix("previous-chart-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let archive = Command::new("git")
        .current_dir(root())
        .args(["archive", "--format=tar", &commit, CHART])
        .output()
        .unwrap();
    assert!(archive.status.success());
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    tar.stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(tar.wait().unwrap().success());
    let path = dir.path().join(CHART);
    (dir, path, version)
}

/// `helm upgrade` from the previous chart version with its defaults keeps
/// every object's name and the selectors (the Deployment's is immutable; a
/// changed Service selector would leave the webhook without endpoints until
/// the new pods are ready).
#[test]
fn upgrading_from_the_previous_version_keeps_names_and_selectors() {
    let (_dir, previous, version) = previous_chart();
    assert_ne!(version, "0.2.0");
    for values in [
        json!({}),
        json!({"certificate": {"mode": "self-signed"}}),
        json!({"replicaCount": 3}),
    ] {
        let old = documents(&render_chart(&previous, &values, NAMESPACE, &[]).unwrap());
        let mut upgrade = values.clone();
        // 0.1.0 asked for system-cluster-critical (not a selector: mutable).
        upgrade["priorityClassName"] = json!("system-cluster-critical");
        let new = rendered(upgrade, NAMESPACE, &["--upgrade"]);
        let old_kinds = kinds(&old);
        let new_kinds = kinds(&new);
        for kind in &old_kinds {
            assert!(new_kinds.contains(kind), "{values}: {kind} renamed or gone");
        }
        for (kind, field) in [
            ("Deployment", "/spec/selector"),
            ("Service", "/spec/selector"),
            ("PodDisruptionBudget", "/spec/selector"),
            ("NetworkPolicy", "/spec/podSelector"),
        ] {
            let before = find(&old, kind, "eci-profile").pointer(field).unwrap();
            let after = find(&new, kind, "eci-profile").pointer(field).unwrap();
            assert_eq!(before, after, "{values}: {kind} {field}");
        }
        let template =
            |o: &[Value]| deployment(o)["spec"]["template"]["metadata"]["labels"].clone();
        let selector = &deployment(&new)["spec"]["selector"]["matchLabels"];
        assert!(
            selects(selector, &template(&old)),
            "{values}: the new selector still selects the old pods"
        );
        assert!(selects(selector, &template(&new)), "{values}");
    }
}

/// The optional Grafana dashboard: the ConfigMap holds the dashboard of
/// `manifests/dashboards/` (the chart's copy is the same file), labelled for
/// Grafana's sidecar, and is not installed by default.
#[test]
fn the_grafana_dashboard_is_an_optional_configmap_for_the_sidecar() {
    let shipped =
        std::fs::read_to_string(root().join("manifests/dashboards/eci-profile.json")).unwrap();
    let copy =
        std::fs::read_to_string(root().join(CHART).join("dashboards/eci-profile.json")).unwrap();
    assert_eq!(
        copy, shipped,
        "the chart's dashboard is manifests/dashboards/eci-profile.json"
    );
    assert!(helm(json!({})).iter().all(|o| {
        !o["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-dashboard")
    }));
    let objects = helm(
        json!({"grafanaDashboard": {"enabled": true, "namespace": "monitoring",
                                                    "annotations": {"grafana_folder": "Platform"}}}),
    );
    let configmap = find(&objects, "ConfigMap", "eci-profile-dashboard");
    assert_eq!(configmap["metadata"]["namespace"], "monitoring");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        configmap["metadata"]["annotations"]["grafana_folder"],
        "Platform"
    );
    let dashboard: Value =
        serde_json::from_str(configmap["data"]["eci-profile.json"].as_str().unwrap()).unwrap();
    let expected: Value = serde_json::from_str(&shipped).unwrap();
    assert_eq!(dashboard, expected);
}
