//! The kustomize install in another namespace: a user's kustomization with
//! `namespace:` and the transformers of manifests/namespace/ (one folder per
//! overlay) renders the install with every reference to its namespace
//! following, the profile's and the Events Roles staying where they grant,
//! and nothing else changed. And the namespace's Pod Security Admission
//! labels, which the webhook's pod meets.

mod common;

use std::collections::BTreeMap;

use common::manifests::*;
use serde_json::{Value, json};

/// The namespace a user installs into in these tests.
const MOVED: &str = "platform-eci";

/// Every component, so that each one's references are checked.
const COMPONENTS: &[&str] = &[
    "components/network-policy",
    "components/monitoring",
    "components/client-auth",
    "components/scale-in-order",
];

/// The base and each overlay, with the transformers shipped for it.
const INSTALLS: &[(&str, &str)] = &[
    ("base", "namespace/base"),
    ("overlays/cert-manager", "namespace/cert-manager"),
    ("overlays/self-signed", "namespace/self-signed"),
];

fn moved(overlay: &str, transformers: &str) -> Vec<Value> {
    kustomize_user(overlay, COMPONENTS, Some(MOVED), &[transformers])
        .unwrap_or_else(|e| panic!("{overlay} into {MOVED}: {e}"))
}

fn by_kind_and_name(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let keyed: BTreeMap<_, _> = objects
        .iter()
        .map(|o| {
            let key = format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]);
            (key, o.clone())
        })
        .collect();
    assert_eq!(keyed.len(), objects.len(), "kind and name identify objects");
    keyed
}

fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

/// Moving the install is renaming its namespace wherever it is written, and
/// nothing more: the moved render is the default one with every
/// `eci-profile-system` replaced (objects in other namespaces included).
#[test]
fn moving_the_install_renames_its_namespace_and_changes_nothing_else() {
    for (overlay, transformers) in INSTALLS {
        let default = kustomize_with(overlay, COMPONENTS);
        let default_text = serde_json::to_string(&default).unwrap();
        assert!(default_text.contains(NAMESPACE), "{overlay}");
        let moved = moved(overlay, transformers);
        let moved_text = serde_json::to_string(&moved).unwrap();
        assert!(
            !moved_text.contains(NAMESPACE),
            "{overlay}: {NAMESPACE} is left in {}",
            moved
                .iter()
                .filter(|o| o.to_string().contains(NAMESPACE))
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let expected: Vec<Value> =
            serde_json::from_str(&default_text.replace(NAMESPACE, MOVED)).unwrap();
        let expected = by_kind_and_name(expected);
        let moved = by_kind_and_name(moved);
        assert_eq!(
            expected.keys().collect::<Vec<_>>(),
            moved.keys().collect::<Vec<_>>(),
            "{overlay}: same objects"
        );
        for (key, object) in &expected {
            assert_eq!(&moved[key], object, "{overlay}: {key}");
        }
    }
}

/// Each reference, one by one: where the objects are, what names their
/// namespace, and that the Roles granting elsewhere stay there.
#[test]
fn every_reference_names_the_new_namespace() {
    for (overlay, transformers) in INSTALLS {
        let objects = moved(overlay, transformers);
        let cert_manager = overlay.ends_with("cert-manager");
        let self_signed = overlay.ends_with("self-signed");

        // Where each object is.
        let cluster_scoped = [
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ];
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            let namespace = &object["metadata"]["namespace"];
            let expected = match (kind, name) {
                _ if cluster_scoped.contains(&kind) => Value::Null,
                ("Role" | "RoleBinding", "eci-profile") => json!("kube-system"),
                ("Role" | "RoleBinding", "eci-profile-events") => json!("default"),
                _ => json!(MOVED),
            };
            assert_eq!(namespace, &expected, "{overlay}: {kind}/{name}");
        }
        let namespace = find(&objects, "Namespace", MOVED);
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{overlay}"
        );

        // The webhook configurations call the Service in its namespace, and
        // pods there are left alone.
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let configuration = find(&objects, kind, "eci-profile");
            for webhook in configuration["webhooks"].as_array().unwrap() {
                assert_eq!(
                    webhook["clientConfig"]["service"]["namespace"], MOVED,
                    "{overlay}: {kind} {}",
                    webhook["name"]
                );
            }
            let inject =
                &configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
            if cert_manager {
                assert_eq!(inject, &json!(format!("{MOVED}/eci-profile-serving")));
            } else {
                assert!(inject.is_null(), "{overlay}: {kind}: {inject}");
            }
        }
        let mutating = find(&objects, "MutatingWebhookConfiguration", "eci-profile");
        assert_eq!(
            mutating["webhooks"][0]["namespaceSelector"]["matchExpressions"],
            json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": ["kube-system", "kube-public", "kube-node-lease", MOVED]}]),
            "{overlay}"
        );
        // The profile stays in kube-system: the validating webhook still
        // checks ConfigMaps there.
        let validating = find(&objects, "ValidatingWebhookConfiguration", "eci-profile");
        assert_eq!(
            validating["webhooks"][1]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"]),
            "{overlay}"
        );

        // The server's own settings.
        let deployment = find(&objects, "Deployment", "eci-profile");
        assert_eq!(
            env(deployment, "ECI_PROFILE_EXCLUDE_NAMESPACE"),
            Some(&json!(MOVED)),
            "{overlay}"
        );
        assert_eq!(
            env(deployment, "ECI_PROFILE_PROFILE_CONFIGMAP"),
            Some(&json!("kube-system/eci-profile")),
            "{overlay}"
        );
        let webhook_service = env(deployment, "ECI_PROFILE_WEBHOOK_SERVICE");
        if self_signed {
            assert_eq!(
                webhook_service,
                Some(&json!(format!("{MOVED}/eci-profile"))),
                "{overlay}"
            );
        } else {
            assert_eq!(webhook_service, None, "{overlay}");
        }

        // The bindings grant to the ServiceAccount in its namespace (the
        // scale-in order's and the self-signed one's included).
        let bindings: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
            .collect();
        assert_eq!(bindings.len(), if self_signed { 5 } else { 4 }, "{overlay}");
        for binding in bindings {
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": "eci-profile", "namespace": MOVED}]),
                "{overlay}: {}/{}",
                binding["kind"],
                binding["metadata"]["name"]
            );
        }

        // The serving certificate is for the Service's name there.
        if cert_manager {
            let certificate = find(&objects, "Certificate", "eci-profile-serving");
            assert_eq!(
                certificate["spec"]["dnsNames"],
                json!([
                    format!("eci-profile.{MOVED}.svc"),
                    format!("eci-profile.{MOVED}.svc.cluster.local")
                ]),
                "{overlay}"
            );
            assert_eq!(
                certificate["spec"]["issuerRef"]["name"],
                "eci-profile-selfsigned"
            );
        }

        // The alert on the Deployment's replicas looks in its namespace.
        let rule = find(&objects, "PrometheusRule", "eci-profile");
        let replicas = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == "EciProfileReplicasUnavailable")
            .unwrap();
        assert_eq!(
            replicas["expr"],
            format!(
                "kube_deployment_status_replicas_available{{namespace=\"{MOVED}\", deployment=\"eci-profile\"}} \
                 < kube_deployment_spec_replicas{{namespace=\"{MOVED}\", deployment=\"eci-profile\"}}"
            ),
            "{overlay}"
        );
        let description = replicas["annotations"]["description"].as_str().unwrap();
        assert!(
            description.ends_with(&format!(
                "See kubectl -n {MOVED} describe deployment eci-profile."
            )),
            "{overlay}: {description}"
        );
        // The NetworkPolicy and ServiceMonitor select the pods beside them.
        for kind in ["NetworkPolicy", "ServiceMonitor", "Service"] {
            assert_eq!(
                find(&objects, kind, "eci-profile")["metadata"]["namespace"],
                MOVED,
                "{overlay}: {kind}"
            );
        }
    }
}

/// Without `namespace:` the transformers find the install where it is and
/// leave every object as it was.
#[test]
fn without_a_namespace_the_transformers_change_nothing() {
    for (overlay, transformers) in INSTALLS {
        let default = kustomize_with(overlay, COMPONENTS);
        let transformed = kustomize_user(overlay, COMPONENTS, None, &[transformers]).unwrap();
        assert_eq!(
            by_kind_and_name(transformed),
            by_kind_and_name(default.clone()),
            "{overlay}"
        );
        assert_eq!(
            find(&default, "Deployment", "eci-profile")["metadata"]["namespace"],
            NAMESPACE
        );
    }
}

/// The transformers of one certificate mode over the other are refused,
/// naming what they miss, rather than leaving a reference behind.
#[test]
fn the_transformers_of_another_overlay_are_refused() {
    for (overlay, transformers, missing) in [
        (
            "overlays/self-signed",
            "namespace/cert-manager",
            "cert-manager.io/inject-ca-from",
        ),
        (
            "base",
            "namespace/cert-manager",
            "cert-manager.io/inject-ca-from",
        ),
        (
            "overlays/cert-manager",
            "namespace/self-signed",
            "ECI_PROFILE_WEBHOOK_SERVICE",
        ),
        (
            "base",
            "namespace/self-signed",
            "ECI_PROFILE_WEBHOOK_SERVICE",
        ),
    ] {
        let error = kustomize_user(overlay, &[], Some(MOVED), &[transformers])
            .expect_err(&format!("{transformers} over {overlay}"));
        assert!(
            error.contains("unable to find field") && error.contains(missing),
            "{transformers} over {overlay}: {error}"
        );
    }
}

/// Volume types the restricted Pod Security Standard allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the baseline (and so restricted) Pod Security Standard allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// What in a pod spec breaks the restricted Pod Security Standard (latest),
/// as Pod Security Admission checks it: the baseline controls and the
/// restricted ones.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let pod_security = &pod["securityContext"];
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[field] == true {
            found.push(format!("{field}: true"));
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let types: Vec<&String> = volume
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        if types
            .iter()
            .any(|t| !RESTRICTED_VOLUMES.contains(&t.as_str()))
        {
            found.push(format!("volume {}: {types:?}", volume["name"]));
        }
    }
    for sysctl in pod_security["sysctls"].as_array().into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl["name"].as_str().unwrap_or("")) {
            found.push(format!("sysctl {}", sysctl["name"]));
        }
    }
    let seccomp_ok = |context: &Value| {
        matches!(
            context["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| pod[*list].as_array().into_iter().flatten())
        .collect();
    if containers.is_empty() {
        found.push("no containers".into());
    }
    for context in
        std::iter::once(pod_security).chain(containers.iter().map(|c| &c["securityContext"]))
    {
        if context["runAsUser"] == 0 {
            found.push("runAsUser: 0".into());
        }
        if context["seccompProfile"]["type"] == "Unconfined" {
            found.push("seccompProfile Unconfined".into());
        }
        if let Some(apparmor) = context["appArmorProfile"]["type"].as_str()
            && !matches!(apparmor, "RuntimeDefault" | "Localhost")
        {
            found.push(format!("appArmorProfile {apparmor}"));
        }
        let selinux = &context["seLinuxOptions"];
        if !selinux["user"].is_null() || !selinux["role"].is_null() {
            found.push("seLinuxOptions user or role".into());
        }
        if let Some(t) = selinux["type"].as_str()
            && ![
                "",
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .contains(&t)
        {
            found.push(format!("seLinuxOptions type {t}"));
        }
    }
    for container in containers {
        let name = &container["name"];
        let context = &container["securityContext"];
        if context["privileged"] == true {
            found.push(format!("{name}: privileged"));
        }
        if context["allowPrivilegeEscalation"] != false {
            found.push(format!("{name}: allowPrivilegeEscalation not false"));
        }
        let non_root = match &context["runAsNonRoot"] {
            Value::Bool(set) => *set,
            _ => pod_security["runAsNonRoot"] == true,
        };
        if !non_root {
            found.push(format!("{name}: runAsNonRoot not true"));
        }
        // Set on the container, or left to the pod's.
        let seccomp = if context["seccompProfile"].is_null() {
            seccomp_ok(pod_security)
        } else {
            seccomp_ok(context)
        };
        if !seccomp {
            found.push(format!(
                "{name}: seccompProfile not RuntimeDefault or Localhost"
            ));
        }
        let capabilities = &context["capabilities"];
        if !capabilities["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("ALL")))
        {
            found.push(format!("{name}: capabilities do not drop ALL"));
        }
        for added in capabilities["add"].as_array().into_iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                found.push(format!("{name}: adds capability {added}"));
            }
        }
        if let Some(mount) = context["procMount"].as_str()
            && mount != "Default"
        {
            found.push(format!("{name}: procMount {mount}"));
        }
        for port in container["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_u64().is_some_and(|p| p != 0) {
                found.push(format!("{name}: hostPort {}", port["hostPort"]));
            }
        }
    }
    found
}

/// Every kustomize install: the base and each overlay, alone, with each
/// component, with all of them, and moved to another namespace.
fn every_kustomize_install() -> Vec<(String, Vec<Value>)> {
    // About twenty kubectl runs, in parallel.
    std::thread::scope(|scope| {
        let mut renders = Vec::new();
        for (overlay, transformers) in INSTALLS {
            renders.push((overlay.to_string(), scope.spawn(|| kustomize(overlay))));
            for component in COMPONENTS {
                renders.push((
                    format!("{overlay} + {component}"),
                    scope.spawn(|| kustomize_with(overlay, &[component])),
                ));
            }
            renders.push((
                format!("{overlay} + all"),
                scope.spawn(|| kustomize_with(overlay, COMPONENTS)),
            ));
            renders.push((
                format!("{overlay} + all in {MOVED}"),
                scope.spawn(|| moved(overlay, transformers)),
            ));
        }
        renders
            .into_iter()
            .map(|(install, render)| (install, render.join().unwrap()))
            .collect()
    })
}

/// The install's namespace enforces the restricted Pod Security Standard
/// (and audits and warns against it), and the webhook's pod meets it, so
/// that the API server admits it there.
#[test]
fn the_namespace_enforces_the_restricted_pod_security_standard_which_the_pod_meets() {
    for (install, objects) in every_kustomize_install() {
        let namespaces: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .collect();
        assert_eq!(namespaces.len(), 1, "{install}");
        let labels = &namespaces[0]["metadata"]["labels"];
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels[format!("pod-security.kubernetes.io/{mode}")],
                "restricted",
                "{install}: {mode}"
            );
            assert_eq!(
                labels[format!("pod-security.kubernetes.io/{mode}-version")],
                "latest",
                "{install}: {mode}"
            );
        }
        let deployment = find(&objects, "Deployment", "eci-profile");
        assert_eq!(
            deployment["metadata"]["namespace"], namespaces[0]["metadata"]["name"],
            "{install}"
        );
        let violations = restricted_violations(&deployment["spec"]["template"]["spec"]);
        assert!(violations.is_empty(), "{install}: {violations:?}");
    }
}

/// A change to a pod spec.
type Breakage = fn(&mut Value);

/// The check finds what the restricted standard refuses.
#[test]
fn the_restricted_check_finds_violations() {
    let objects = kustomize("overlays/self-signed");
    let pod = &find(&objects, "Deployment", "eci-profile")["spec"]["template"]["spec"];
    assert_eq!(restricted_violations(pod), Vec::<String>::new());
    let broken: [(&str, Breakage); 9] = [
        ("hostNetwork", |p| p["hostNetwork"] = json!(true)),
        ("volume", |p| {
            p["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "host", "hostPath": {"path": "/"}}))
        }),
        ("runAsNonRoot", |p| {
            p["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
        }),
        ("runAsUser", |p| {
            p["containers"][0]["securityContext"]["runAsUser"] = json!(0)
        }),
        ("allowPrivilegeEscalation", |p| {
            p["containers"][0]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        }),
        ("drop ALL", |p| {
            p["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})
        }),
        ("adds capability", |p| {
            p["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
        }),
        ("seccompProfile", |p| {
            p["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
        }),
        ("hostPort", |p| {
            p["containers"][0]["ports"][0]["hostPort"] = json!(8443)
        }),
    ];
    for (what, break_it) in broken {
        let mut pod = pod.clone();
        break_it(&mut pod);
        let violations = restricted_violations(&pod);
        assert!(
            violations.iter().any(|v| v.contains(what)),
            "{what}: {violations:?}"
        );
    }
}
