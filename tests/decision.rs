//! The decision, rule by rule (steps 2–9 of the specification), on pods as
//! the API server sends them. Every case also checks idempotence and that the
//! patched pod is still a valid Pod (see `common::decide`).

mod common;

use common::{decide, decide_excluding, labels, pod_with_labels, profile, profile_with};
use eci_profile::decision::{Exclusions, Outcome, SkipReason};
use eci_profile::profile::SchedulingPolicy;
use serde_json::{Value, json};

const OPT_IN: &str = r#"[{"name": "opt-in", "objectSelector": {"matchLabels": {"eci": "true"}}}]"#;

fn vnode_toleration() -> Value {
    json!({"key": "k8s.aliyun.com/vnode", "operator": "Equal", "value": "true", "effect": "NoSchedule"})
}

fn paths(patch: &Value) -> Vec<String> {
    patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            assert_eq!(op["op"], "add", "only add operations: {op}");
            op["path"].as_str().unwrap().to_string()
        })
        .collect()
}

// Step 2: exclusions.

#[test]
fn excluded_namespaces_are_left_alone() {
    let p = profile(OPT_IN);
    let pod = pod_with_labels(&[("eci", "true")]);
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        let out = decide(&pod, ns, None, &p);
        assert_eq!(
            out.outcome,
            Outcome::Skipped(SkipReason::ExcludedNamespace(ns.into()))
        );
        assert_eq!(out.patch, json!([]));
    }
    let extra = Exclusions::with_namespaces(["platform"]);
    let out = decide_excluding(&pod, "platform", None, &p, &extra);
    assert_eq!(out.outcome.as_str(), "skipped");
    assert_eq!(decide(&pod, "platform", None, &p).outcome, Outcome::Mutated);
}

#[test]
fn exclude_label_opts_a_pod_out() {
    let p = profile(OPT_IN);
    let out = decide(
        &pod_with_labels(&[("eci", "true"), ("eci-profile.io/exclude", "true")]),
        "default",
        None,
        &p,
    );
    assert_eq!(out.outcome, Outcome::Skipped(SkipReason::ExcludedByLabel));
    // Only "true" excludes.
    let out = decide(
        &pod_with_labels(&[("eci", "true"), ("eci-profile.io/exclude", "false")]),
        "default",
        None,
        &p,
    );
    assert_eq!(out.outcome, Outcome::Mutated);
}

// Step 3: selection.

#[test]
fn both_selectors_must_match() {
    let p = profile(
        r#"[{"name": "both",
             "namespaceSelector": {"matchLabels": {"team": "batch"}},
             "objectSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}}]"#,
    );
    let batch = labels(&[("team", "batch")]);
    let other = labels(&[("team", "web")]);
    assert_eq!(
        decide(&pod_with_labels(&[("app", "a")]), "ns", Some(&batch), &p).outcome,
        Outcome::Mutated
    );
    assert_eq!(
        decide(&pod_with_labels(&[("app", "c")]), "ns", Some(&batch), &p).outcome,
        Outcome::Skipped(SkipReason::NotSelected)
    );
    assert_eq!(
        decide(&pod_with_labels(&[("app", "a")]), "ns", Some(&other), &p).outcome,
        Outcome::Skipped(SkipReason::NotSelected)
    );
}

#[test]
fn priority_orders_rules_then_position() {
    let p = profile(
        r#"[
          {"name": "low", "objectSelector": {"matchLabels": {"eci": "true"}}, "policy": "fair",
           "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "1-2Gi"}}},
          {"name": "same-as-low", "objectSelector": {}, "policy": "fair"},
          {"name": "high", "priority": 5, "objectSelector": {"matchLabels": {"eci": "true"}},
           "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}}}
        ]"#,
    );
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(out.applied, ["high", "low", "same-as-low"]);
    // The first selecting rule's policy and the earlier rule's effect win.
    assert_eq!(out.policy, Some(SchedulingPolicy::VirtualNodeOnly));
    assert_eq!(
        out.patched["metadata"]["annotations"]["k8s.aliyun.com/eci-use-specs"],
        "2-4Gi"
    );
    assert_eq!(
        out.patched["metadata"]["annotations"]["eci-profile.io/selectors"],
        "high,low,same-as-low"
    );
}

#[test]
fn unknown_namespace_has_only_its_name_label() {
    let p = profile(
        r#"[
          {"name": "by-name", "namespaceSelector": {"matchExpressions": [
              {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}]}},
          {"name": "by-label", "namespaceSelector": {"matchLabels": {"eci": "true"}}},
          {"name": "everything", "namespaceSelector": {}}
        ]"#,
    );
    let pod = pod_with_labels(&[]);
    let out = decide(&pod, "team-a", None, &p);
    assert_eq!(out.applied, ["by-name", "everything"]);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("labels of namespace team-a are unknown"),
        "{:?}",
        out.warnings
    );
    assert!(out.warnings[0].contains("by-label"), "{:?}", out.warnings);
    // Known labels: evaluated normally, no warning.
    let known = labels(&[("eci", "true")]);
    let out = decide(&pod, "team-b", Some(&known), &p);
    assert_eq!(out.applied, ["by-label", "everything"]);
    assert!(out.warnings.is_empty());
}

#[test]
fn not_in_matches_a_missing_label() {
    let p = profile(
        r#"[{"name": "not-gpu", "objectSelector": {"matchExpressions": [
            {"key": "gpu", "operator": "NotIn", "values": ["true"]},
            {"key": "app", "operator": "Exists"}]}}]"#,
    );
    assert_eq!(
        decide(&pod_with_labels(&[("app", "x")]), "d", None, &p).outcome,
        Outcome::Mutated
    );
    assert_eq!(
        decide(
            &pod_with_labels(&[("app", "x"), ("gpu", "true")]),
            "d",
            None,
            &p
        )
        .outcome,
        Outcome::Skipped(SkipReason::NotSelected)
    );
}

// Step 4: targeting by hand.

#[test]
fn pod_scheduled_by_hand_gets_tolerations_only() {
    let p = profile(OPT_IN);
    let mut pod = pod_with_labels(&[]);
    pod["spec"]["nodeSelector"] = json!({"k8s.aliyun.com/vnode": "true"});
    let out = decide(&pod, "default", None, &p);
    assert_eq!(out.outcome, Outcome::Mutated);
    assert_eq!(out.policy, None);
    assert_eq!(
        paths(&out.patch),
        [
            "/metadata/labels/eci-profile.io~1virtual-node",
            "/spec/tolerations/-"
        ]
    );
    assert_eq!(out.patch[1]["value"], vnode_toleration());
    // Sent to a virtual node: labelled so (what budgets and the scale-in order watch).
    assert_eq!(
        out.patched["metadata"]["labels"]["eci-profile.io/virtual-node"],
        "true"
    );
    // No rule applied: no record annotation.
    assert!(out.patched["metadata"].get("annotations").is_none());
}

#[test]
fn pod_scheduled_by_hand_gets_effect_only_rules_and_cluster_defaults() {
    let p = profile_with(&[
        (
            "selectors",
            r#"[{"name": "cache", "effect": {"annotations": {"k8s.aliyun.com/eci-auto-imc": "true"}}}]"#,
        ),
        ("vSwitchIds", "vsw-a1, vsw-b2"),
    ]);
    let mut pod = pod_with_labels(&[]);
    pod["spec"]["nodeSelector"] = json!({"k8s.aliyun.com/vnode": "true"});
    let out = decide(&pod, "default", None, &p);
    let annotations = &out.patched["metadata"]["annotations"];
    assert_eq!(annotations["k8s.aliyun.com/eci-auto-imc"], "true");
    assert_eq!(annotations["k8s.aliyun.com/eci-vswitch"], "vsw-a1,vsw-b2");
    assert_eq!(annotations["eci-profile.io/selectors"], "cache");
}

#[test]
fn effect_only_rules_do_not_target_pods() {
    let p = profile(
        r#"[{"name": "cache", "effect": {"annotations": {"k8s.aliyun.com/eci-auto-imc": "true"}}}]"#,
    );
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(out.outcome, Outcome::Skipped(SkipReason::NotSelected));
}

// Step 5: pods that cannot run on ECI, or whose placement is already chosen.

fn assert_skipped_with_warning(pod: Value, code: &str) {
    let p = profile(OPT_IN);
    let out = decide(&pod, "default", None, &p);
    match &out.outcome {
        Outcome::Skipped(reason) => assert_eq!(reason.code(), code, "{reason}"),
        other => panic!("expected skipped ({code}), got {other:?}"),
    }
    assert_eq!(out.patch, json!([]));
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].starts_with("eci-profile: pod not sent to a virtual node (rule opt-in): ")
    );
}

#[test]
fn incompatible_pods_are_left_alone_with_a_warning() {
    let base = pod_with_labels(&[("eci", "true")]);
    let with = |pointer: &str, value: Value| {
        let mut pod = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        pod.pointer_mut(parent).unwrap()[key] = value;
        pod
    };
    assert_skipped_with_warning(
        with(
            "/metadata/ownerReferences",
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u"}]),
        ),
        "daemonset",
    );
    assert_skipped_with_warning(
        with(
            "/metadata/annotations",
            json!({"kubernetes.io/config.mirror": "abc"}),
        ),
        "mirror-pod",
    );
    assert_skipped_with_warning(with("/spec/hostNetwork", json!(true)), "host-network");
    assert_skipped_with_warning(with("/spec/hostPID", json!(true)), "host-pid");
    assert_skipped_with_warning(with("/spec/hostIPC", json!(true)), "host-ipc");
    assert_skipped_with_warning(
        with(
            "/spec/volumes",
            json!([{"name": "proc", "hostPath": {"path": "/proc"}}]),
        ),
        "host-path",
    );
    assert_skipped_with_warning(
        with(
            "/spec/initContainers",
            json!([{"name": "init", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}]),
        ),
        "host-port",
    );
    assert_skipped_with_warning(with("/spec/nodeName", json!("node-a")), "node-name");
    assert_skipped_with_warning(
        with(
            "/spec/nodeSelector",
            json!({"k8s.aliyun.com/vnode": "false"}),
        ),
        "node-selector-conflict",
    );
}

#[test]
fn compatible_details_do_not_block() {
    let p = profile(OPT_IN);
    let mut pod = pod_with_labels(&[("eci", "true")]);
    pod["spec"]["hostNetwork"] = json!(false);
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 0}]);
    pod["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    pod["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]);
    assert_eq!(decide(&pod, "default", None, &p).outcome, Outcome::Mutated);
}

#[test]
fn untargeted_incompatible_pods_get_no_warning() {
    let p = profile(OPT_IN);
    let mut pod = pod_with_labels(&[]);
    pod["spec"]["hostNetwork"] = json!(true);
    let out = decide(&pod, "default", None, &p);
    assert_eq!(out.outcome, Outcome::Skipped(SkipReason::NotSelected));
    assert!(out.warnings.is_empty());
}

// Step 6: scheduling policies.

#[test]
fn virtual_node_only_adds_node_selector_and_tolerations() {
    let p = profile(OPT_IN);
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(
        paths(&out.patch),
        [
            "/metadata/annotations",
            "/metadata/annotations/eci-profile.io~1selectors",
            "/metadata/labels/eci-profile.io~1virtual-node",
            "/spec/nodeSelector",
            "/spec/nodeSelector/k8s.aliyun.com~1vnode",
            "/spec/tolerations/-",
        ]
    );
    assert_eq!(
        out.patched["spec"]["nodeSelector"],
        json!({"k8s.aliyun.com/vnode": "true"})
    );
    let tolerations = out.patched["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(tolerations.len(), 2, "the default toleration is kept");
    assert_eq!(tolerations[1], vnode_toleration());
}

#[test]
fn fair_adds_tolerations_only() {
    let p = profile(
        r#"[{"name": "fair", "policy": "fair", "objectSelector": {"matchLabels": {"eci": "true"}}}]"#,
    );
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(out.policy, Some(SchedulingPolicy::Fair));
    assert!(out.patched["spec"].get("nodeSelector").is_none());
    assert_eq!(out.patched["spec"]["tolerations"][1], vnode_toleration());
}

#[test]
fn normal_node_prefer_adds_a_preferred_anti_virtual_node_term() {
    let p = profile(
        r#"[{"name": "overflow", "policy": "normalNodePrefer", "objectSelector": {"matchLabels": {"eci": "true"}}}]"#,
    );
    let term = json!({"weight": 100, "preference": {"matchExpressions": [
        {"key": "k8s.aliyun.com/vnode", "operator": "NotIn", "values": ["true"]}]}});
    // No affinity at all: every level is added, parents first.
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert!(out.patched["spec"].get("nodeSelector").is_none());
    assert_eq!(
        paths(&out.patch)[3..],
        [
            "/spec/tolerations/-",
            "/spec/affinity",
            "/spec/affinity/nodeAffinity",
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/-",
        ]
    );
    assert_eq!(
        out.patched["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
        json!([term])
    );
    // Existing affinity is merged into, never replaced.
    let mut pod = pod_with_labels(&[("eci", "true")]);
    let required = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]});
    let existing = json!({"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}});
    pod["spec"]["affinity"] = json!({
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": required,
            "preferredDuringSchedulingIgnoredDuringExecution": [existing]
        }
    });
    let out = decide(&pod, "default", None, &p);
    let node_affinity = &out.patched["spec"]["affinity"]["nodeAffinity"];
    assert_eq!(
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"],
        required
    );
    assert_eq!(
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"],
        json!([existing, term])
    );
    assert_eq!(
        out.patched["spec"]["affinity"]["podAntiAffinity"],
        pod["spec"]["affinity"]["podAntiAffinity"]
    );
}

#[test]
fn existing_tolerations_are_not_duplicated() {
    let p = profile(OPT_IN);
    let mut pod = pod_with_labels(&[("eci", "true")]);
    // Same toleration with the operator left out (means Equal).
    pod["spec"]["tolerations"] =
        json!([{"key": "k8s.aliyun.com/vnode", "value": "true", "effect": "NoSchedule"}]);
    let out = decide(&pod, "default", None, &p);
    assert!(
        !paths(&out.patch)
            .iter()
            .any(|p| p.starts_with("/spec/tolerations"))
    );
    // A different effect is a different toleration.
    pod["spec"]["tolerations"][0]["effect"] = json!("NoExecute");
    let out = decide(&pod, "default", None, &p);
    assert!(paths(&out.patch).contains(&"/spec/tolerations/-".to_string()));
}

#[test]
fn pod_without_tolerations_or_node_selector_gets_parents() {
    let p = profile(OPT_IN);
    let pod = json!({"metadata": {"labels": {"eci": "true"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let out = decide(&pod, "default", None, &p);
    assert!(paths(&out.patch).contains(&"/spec/tolerations".to_string()));
    assert_eq!(
        out.patched["spec"]["tolerations"],
        json!([vnode_toleration()])
    );
}

#[test]
fn custom_virtual_node_for_ack_virtual_kubelet() {
    let p = profile_with(&[
        ("selectors", OPT_IN),
        (
            "virtualNode",
            "nodeSelector:\n  type: virtual-kubelet\ntolerations:\n- key: virtual-kubelet.io/provider\n  operator: Equal\n  value: alibabacloud\n  effect: NoSchedule\n",
        ),
    ]);
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(
        out.patched["spec"]["nodeSelector"],
        json!({"type": "virtual-kubelet"})
    );
    assert_eq!(
        out.patched["spec"]["tolerations"][1],
        json!({"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud", "effect": "NoSchedule"})
    );
}

// Step 7: effects.

#[test]
fn effects_never_overwrite_and_earlier_rules_win() {
    let p = profile_with(&[
        (
            "selectors",
            r#"[
              {"name": "first", "objectSelector": {"matchLabels": {"eci": "true"}},
               "effect": {"annotations": {"example.com/a": "first", "example.com/owner": "rule"},
                          "labels": {"pool": "first"}}},
              {"name": "second", "objectSelector": {"matchLabels": {"eci": "true"}},
               "effect": {"annotations": {"example.com/a": "second", "example.com/b": "second"},
                          "labels": {"pool": "second", "tier": "second"}}},
              {"name": "everyone", "effect": {"annotations": {"example.com/b": "everyone", "example.com/c": "everyone"}}}
            ]"#,
        ),
        ("securityGroupId", "sg-abc"),
    ]);
    let mut pod = pod_with_labels(&[("eci", "true"), ("tier", "mine")]);
    pod["metadata"]["annotations"] =
        json!({"example.com/owner": "alice", "k8s.aliyun.com/eci-security-group": "sg-mine"});
    let out = decide(&pod, "default", None, &p);
    let annotations = &out.patched["metadata"]["annotations"];
    assert_eq!(annotations["example.com/owner"], "alice");
    assert_eq!(annotations["example.com/a"], "first");
    assert_eq!(annotations["example.com/b"], "second");
    assert_eq!(annotations["example.com/c"], "everyone");
    assert_eq!(annotations["k8s.aliyun.com/eci-security-group"], "sg-mine");
    assert_eq!(
        annotations["eci-profile.io/selectors"],
        "first,second,everyone"
    );
    let labels = &out.patched["metadata"]["labels"];
    assert_eq!(labels["pool"], "first");
    assert_eq!(labels["tier"], "mine");
    // The annotations map existed: no parent added.
    assert!(!paths(&out.patch).contains(&"/metadata/annotations".to_string()));
}

#[test]
fn effect_labels_that_select_more_rules_settle_in_one_call() {
    let p = profile(
        r#"[
          {"name": "opt-in", "objectSelector": {"matchLabels": {"eci": "true"}},
           "effect": {"labels": {"pool": "spot"}}},
          {"name": "spot", "objectSelector": {"matchLabels": {"pool": "spot"}},
           "effect": {"annotations": {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}}}
        ]"#,
    );
    // `decide` also checks that a second call adds nothing.
    let out = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    assert_eq!(out.applied, ["opt-in", "spot"]);
    assert_eq!(
        out.patched["metadata"]["annotations"]["k8s.aliyun.com/eci-spot-strategy"],
        "SpotAsPriceGo"
    );
}

// Step 8: the record of applied rules.

#[test]
fn record_annotation_is_kept_when_present() {
    let p = profile(OPT_IN);
    let mut pod = pod_with_labels(&[("eci", "true")]);
    pod["metadata"]["annotations"] = json!({"eci-profile.io/selectors": "set-by-someone"});
    let out = decide(&pod, "default", None, &p);
    assert_eq!(
        out.patched["metadata"]["annotations"]["eci-profile.io/selectors"],
        "set-by-someone"
    );
}

#[test]
fn complete_pod_is_unchanged() {
    let p = profile(OPT_IN);
    let first = decide(&pod_with_labels(&[("eci", "true")]), "default", None, &p);
    let again = decide(&first.patched, "default", None, &p);
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert_eq!(again.patch, json!([]));
    assert_eq!(again.applied, ["opt-in"]);
}

#[test]
fn effect_labels_that_flip_selection_still_settle() {
    // Found by the property test: r2 (no selector) labels eci=false, which
    // makes r1 select the pod; r1 would label eci=a, which unselects it.
    // Labels accumulate and keep their first value, so the result is stable.
    let p = profile(
        r#"[
          {"name": "r1", "objectSelector": {"matchLabels": {"eci": "false"}},
           "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}, "labels": {"eci": "a"}}},
          {"name": "r2", "effect": {"labels": {"eci": "false"}}},
          {"name": "r3", "objectSelector": {}}
        ]"#,
    );
    let out = decide(&pod_with_labels(&[]), "default", None, &p);
    assert_eq!(out.applied, ["r1", "r3", "r2"]);
    assert_eq!(out.patched["metadata"]["labels"]["eci"], "false");
    assert_eq!(
        out.patched["metadata"]["annotations"]["k8s.aliyun.com/eci-use-specs"],
        "2-4Gi"
    );
}

// Policy normalNodeOnly: an exception carved out of a broader rule.

const TEAM_WITH_EXCEPTION: &str = r#"[
  {"name": "team", "namespaceSelector": {"matchLabels": {"team": "batch"}},
   "effect": {"labels": {"sent": "yes"}}},
  {"name": "stay-home", "priority": 10, "policy": "normalNodeOnly",
   "objectSelector": {"matchLabels": {"app": "db"}}},
  {"name": "everyone", "effect": {"annotations": {"k8s.aliyun.com/eci-use-specs": "2-4Gi"}}}
]"#;

#[test]
fn normal_node_only_keeps_a_pod_of_a_selected_namespace_off_virtual_nodes() {
    let p = profile(TEAM_WITH_EXCEPTION);
    let batch = labels(&[("team", "batch")]);
    let db = decide(&pod_with_labels(&[("app", "db")]), "jobs", Some(&batch), &p);
    assert_eq!(
        db.outcome,
        Outcome::Skipped(SkipReason::NormalNodeOnly("stay-home".into()))
    );
    assert_eq!(db.patch, json!([]), "no toleration, nodeSelector or effect");
    assert_eq!(db.policy, Some(SchedulingPolicy::NormalNodeOnly));
    // The namespace's other pods still go, with every effect.
    let web = decide(
        &pod_with_labels(&[("app", "web")]),
        "jobs",
        Some(&batch),
        &p,
    );
    assert_eq!(web.outcome, Outcome::Mutated);
    assert_eq!(web.applied, ["team", "everyone"]);
    assert_eq!(web.patched["metadata"]["labels"]["sent"], "yes");
    assert_eq!(
        web.patched["spec"]["nodeSelector"]["k8s.aliyun.com/vnode"],
        "true"
    );
}

#[test]
fn normal_node_only_below_a_selecting_rule_changes_nothing_for_it() {
    // Priority decides: a higher rule that selects the pod wins, and the
    // normalNodeOnly rule only stops the rules below it.
    let p = profile(
        r#"[
  {"name": "first", "priority": 5, "policy": "fair", "objectSelector": {"matchLabels": {"app": "db"}},
   "effect": {"labels": {"first": "yes"}}},
  {"name": "stay-home", "policy": "normalNodeOnly", "objectSelector": {"matchLabels": {"app": "db"}}},
  {"name": "below", "priority": -1, "objectSelector": {"matchLabels": {"app": "db"}},
   "effect": {"labels": {"below": "yes"}}}
]"#,
    );
    let out = decide(&pod_with_labels(&[("app", "db")]), "default", None, &p);
    assert_eq!(out.outcome, Outcome::Mutated);
    assert_eq!(out.applied, ["first"]);
    assert_eq!(out.policy, Some(SchedulingPolicy::Fair));
    assert!(out.patched["metadata"]["labels"].get("below").is_none());
    assert!(
        out.patched["spec"].get("nodeSelector").is_none(),
        "fair: tolerations only"
    );
}

#[test]
fn normal_node_only_on_a_pod_placed_on_a_virtual_node_by_hand_warns() {
    let p = profile(
        r#"[{"name": "stay-home", "policy": "normalNodeOnly", "objectSelector": {"matchLabels": {"app": "db"}}}]"#,
    );
    let mut pod = pod_with_labels(&[("app", "db")]);
    pod["spec"]["nodeSelector"] = json!({"k8s.aliyun.com/vnode": "true"});
    let out = decide(&pod, "default", None, &p);
    assert_eq!(
        out.outcome,
        Outcome::Skipped(SkipReason::NormalNodeOnly("stay-home".into()))
    );
    assert_eq!(out.patch, json!([]));
    assert!(
        out.warnings[0].contains("its nodeSelector asks for a virtual node"),
        "{:?}",
        out.warnings
    );
}

// Budgets: the first selecting rule's, taken at admission.

fn decide_within(
    pod: &Value,
    namespace: &str,
    profile: &eci_profile::profile::Profile,
    gate: &dyn eci_profile::budgets::Gate,
) -> eci_profile::decision::Outcome {
    let pod: eci_profile::pod::Pod = serde_json::from_value(pod.clone()).unwrap();
    eci_profile::decision::decide_within(
        &pod,
        namespace,
        None,
        profile,
        &Exclusions::default(),
        gate,
    )
    .outcome
}

fn with_requests(mut pod: Value, cpu: &str) -> Value {
    pod["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu, "memory": "1Gi"}});
    pod
}

#[test]
fn a_burst_of_100_admissions_against_a_budget_of_40_sends_exactly_40() {
    use eci_profile::budgets::{Ledger, Reserving};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    let p = profile(
        r#"[{"name": "team", "objectSelector": {"matchLabels": {"eci": "true"}}, "policy": "fair",
             "limits": {"pods": 40, "cpu": "64"}}]"#,
    );
    let ledger = Mutex::new(Ledger::default());
    let now = Instant::now();
    let expires = now + Duration::from_secs(30);
    let pod = with_requests(pod_with_labels(&[("eci", "true")]), "1");
    let outcomes: Vec<eci_profile::decision::Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (p, ledger, pod) = (&p, &ledger, &pod);
                scope.spawn(move || {
                    let id = format!("request-{i}");
                    let gate = Reserving {
                        ledger,
                        id: &id,
                        now,
                        expires,
                    };
                    decide_within(pod, "team-a", p, &gate)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sent = outcomes.iter().filter(|o| **o == Outcome::Mutated).count();
    assert_eq!(sent, 40);
    let over: Vec<_> = outcomes
        .iter()
        .filter(|o| o.reason() == "over-budget")
        .collect();
    assert_eq!(over.len(), 60);
    assert_eq!(
        over[0],
        &Outcome::Skipped(SkipReason::OverBudget {
            rule: "team".into(),
            namespace: "team-a".into(),
            usage: "40/40 pods".into(),
        })
    );
    // Another namespace has a budget of its own.
    let gate = Reserving {
        ledger: &ledger,
        id: "other-1",
        now,
        expires,
    };
    assert_eq!(decide_within(&pod, "team-b", &p, &gate), Outcome::Mutated);
    // CPU: a pod that would take the namespace over 64 cores.
    let ledger = Mutex::new(Ledger::default());
    let big = with_requests(pod_with_labels(&[("eci", "true")]), "40");
    for (i, expected) in [(0, "mutated"), (1, "skipped")] {
        let id = format!("big-{i}");
        let gate = Reserving {
            ledger: &ledger,
            id: &id,
            now,
            expires,
        };
        assert_eq!(decide_within(&big, "team-a", &p, &gate).as_str(), expected);
    }
}

#[test]
fn the_first_selecting_rules_budget_governs() {
    use eci_profile::budgets::{Ledger, Reserving};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    let p = profile(
        r#"[{"name": "strict", "priority": 1, "objectSelector": {"matchLabels": {"tier": "batch"}}, "limits": {"pods": 1}},
            {"name": "loose", "objectSelector": {"matchLabels": {"eci": "true"}}, "limits": {"pods": 100}}]"#,
    );
    let ledger = Mutex::new(Ledger::default());
    let now = Instant::now();
    let expires = now + Duration::from_secs(30);
    let batch = pod_with_labels(&[("eci", "true"), ("tier", "batch")]);
    let web = pod_with_labels(&[("eci", "true")]);
    let admit = |pod: &Value, id: &str| {
        let gate = Reserving {
            ledger: &ledger,
            id,
            now,
            expires,
        };
        decide_within(pod, "ns", &p, &gate)
    };
    assert_eq!(admit(&batch, "1"), Outcome::Mutated);
    assert_eq!(admit(&batch, "2").reason(), "over-budget", "strict: 1 pod");
    // The namespace's usage is shared: loose counts the batch pod too.
    assert_eq!(admit(&web, "3"), Outcome::Mutated);
    // The same request admitted again (reinvocation) keeps its one place.
    assert_eq!(admit(&batch, "1"), Outcome::Mutated);
    // Without a gate, no budget is enforced.
    assert_eq!(decide(&batch, "ns", None, &p).outcome, Outcome::Mutated);
}
