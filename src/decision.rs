//! The decision: given a pod being created, its namespace's labels and the
//! profile, which rules select it, whether it may go to a virtual node, and
//! the patch that sends it there. Pure: no I/O, no clock, no globals.
//!
//! The numbered steps below follow the product's specification.

use std::collections::BTreeSet;
use std::fmt;

use crate::budgets::{Gate, Unlimited};
use crate::labels::{Labels, NAMESPACE_NAME_LABEL};
use crate::patch::{self, Patch, PatchBuilder};
use crate::pod::Pod;
use crate::profile::{Profile, Rule, SchedulingPolicy};
use crate::selector::{LabelSource, NamespaceLabels};
use crate::truncate::echo;

/// The annotation listing the rules applied to a pod.
pub const APPLIED_ANNOTATION: &str = "eci-profile.io/selectors";
/// The label on every pod sent to virtual nodes, `"true"`: what the budget
/// counting and the scale-in order watch (server-side filtered).
pub const SENT_LABEL: &str = "eci-profile.io/virtual-node";
/// The pod label that opts a pod out: `eci-profile.io/exclude: "true"`.
pub const EXCLUDE_LABEL: &str = "eci-profile.io/exclude";
/// Namespaces excluded unless configured otherwise.
pub const DEFAULT_EXCLUDED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// Namespaces whose pods are never touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusions {
    namespaces: BTreeSet<String>,
}

impl Default for Exclusions {
    fn default() -> Self {
        Self::with_namespaces(std::iter::empty::<String>())
    }
}

impl Exclusions {
    /// The default exclusions plus `extra` namespaces.
    pub fn with_namespaces(extra: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut namespaces: BTreeSet<String> = DEFAULT_EXCLUDED_NAMESPACES
            .iter()
            .map(|ns| ns.to_string())
            .collect();
        namespaces.extend(extra.into_iter().map(Into::into));
        Self { namespaces }
    }

    /// Whether pods in `namespace` are left alone.
    pub fn excludes(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// The excluded namespaces, sorted.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(String::as_str)
    }
}

/// What the webhook does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod is patched.
    Mutated,
    /// The pod is sent to a virtual node but already has everything.
    Unchanged,
    /// The pod is left alone, for this reason.
    Skipped(SkipReason),
}

impl Outcome {
    /// `mutated`, `unchanged` or `skipped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped(_) => "skipped",
        }
    }

    /// The skip reason's code; empty unless skipped.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Skipped(reason) => reason.code(),
            _ => "",
        }
    }
}

/// Why a pod is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a CREATE of a core Pod (or a subresource).
    NotPodCreate,
    /// The pod in the request could not be read.
    UnreadableObject(String),
    ExcludedNamespace(String),
    ExcludedByLabel,
    /// No rule selects the pod and it was not scheduled to a virtual node by hand.
    NotSelected,
    DaemonSet(String),
    MirrorPod,
    HostNetwork,
    HostPid,
    HostIpc,
    HostPath {
        volume: String,
    },
    HostPort {
        container: String,
        port: i32,
    },
    NodeName(String),
    NodeSelectorConflict {
        key: String,
        value: String,
        wanted: String,
    },
    /// The first rule that selects the pod has policy `normalNodeOnly`.
    NormalNodeOnly(String),
    /// The pod does not fit the budget of the first rule that selects it.
    OverBudget {
        rule: String,
        namespace: String,
        /// What is used and the limit, e.g. `40/40 pods`.
        usage: String,
    },
}

impl SkipReason {
    /// A short stable code, for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotPodCreate => "not-pod-create",
            SkipReason::UnreadableObject(_) => "unreadable-object",
            SkipReason::ExcludedNamespace(_) => "excluded-namespace",
            SkipReason::ExcludedByLabel => "excluded-label",
            SkipReason::NotSelected => "not-selected",
            SkipReason::DaemonSet(_) => "daemonset",
            SkipReason::MirrorPod => "mirror-pod",
            SkipReason::HostNetwork => "host-network",
            SkipReason::HostPid => "host-pid",
            SkipReason::HostIpc => "host-ipc",
            SkipReason::HostPath { .. } => "host-path",
            SkipReason::HostPort { .. } => "host-port",
            SkipReason::NodeName(_) => "node-name",
            SkipReason::NodeSelectorConflict { .. } => "node-selector-conflict",
            SkipReason::NormalNodeOnly(_) => "normal-node-only",
            SkipReason::OverBudget { .. } => "over-budget",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SkipReason::NotPodCreate => f.write_str("not the creation of a pod"),
            SkipReason::UnreadableObject(why) => f.write_str(why),
            SkipReason::ExcludedNamespace(ns) => write!(f, "namespace {} is excluded", echo(ns)),
            SkipReason::ExcludedByLabel => write!(f, "the pod is labelled {EXCLUDE_LABEL}=true"),
            SkipReason::NotSelected => f.write_str("no rule selects the pod"),
            SkipReason::DaemonSet(name) => write!(f, "it is owned by DaemonSet {}", echo(name)),
            SkipReason::MirrorPod => f.write_str("it is a mirror (static) pod"),
            SkipReason::HostNetwork => f.write_str("it uses hostNetwork"),
            SkipReason::HostPid => f.write_str("it uses hostPID"),
            SkipReason::HostIpc => f.write_str("it uses hostIPC"),
            SkipReason::HostPath { volume } => write!(f, "volume {} is a hostPath", echo(volume)),
            SkipReason::HostPort { container, port } => {
                write!(f, "container {} uses hostPort {port}", echo(container))
            }
            SkipReason::NodeName(node) => {
                write!(f, "spec.nodeName is already set ({})", echo(node))
            }
            SkipReason::NodeSelectorConflict { key, value, wanted } => write!(
                f,
                "its nodeSelector {}={} differs from the virtual node's {key}={wanted}",
                echo(key),
                echo(value)
            ),
            SkipReason::NormalNodeOnly(rule) => write!(
                f,
                "rule {} (policy normalNodeOnly) keeps it off virtual nodes",
                echo(rule)
            ),
            SkipReason::OverBudget {
                rule,
                namespace,
                usage,
            } => write!(
                f,
                "budget of rule {} in namespace {}: {usage}",
                echo(rule),
                echo(namespace)
            ),
        }
    }
}

/// Why a pod is sent to a virtual node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// At least one rule selects it.
    Rules,
    /// It already carries the virtual node's nodeSelector.
    ByHand,
}

/// The full account of one decision.
#[derive(Clone, Debug)]
pub struct Decision<'p> {
    pub outcome: Outcome,
    /// Why the pod is sent to a virtual node, if it is meant to be.
    pub target: Option<Target>,
    /// The selecting rules, in order.
    pub selected: Vec<&'p Rule>,
    /// The rules recorded in [`APPLIED_ANNOTATION`]: selecting, then effect-only.
    pub applied: Vec<&'p str>,
    /// The scheduling policy used (the first selecting rule's); `None` by hand or when skipped.
    pub policy: Option<SchedulingPolicy>,
    /// Messages for the user (returned as admission warnings).
    pub warnings: Vec<String>,
    pub patch: Patch<'p>,
}

impl Decision<'_> {
    /// A decision that leaves the object alone.
    pub fn skipped(reason: SkipReason) -> Self {
        Decision {
            outcome: Outcome::Skipped(reason),
            target: None,
            selected: Vec::new(),
            applied: Vec::new(),
            policy: None,
            warnings: Vec::new(),
            patch: Patch::default(),
        }
    }
}

/// Decides what to do with `pod`, being created in `namespace`, whose labels
/// are `namespace_labels` (`None` when unknown), with no budget enforced.
pub fn decide<'p>(
    pod: &Pod,
    namespace: &str,
    namespace_labels: Option<&Labels>,
    profile: &'p Profile,
    exclusions: &Exclusions,
) -> Decision<'p> {
    decide_within(
        pod,
        namespace,
        namespace_labels,
        profile,
        exclusions,
        &Unlimited,
    )
}

/// [`decide`], a pod sent to a virtual node taking its place in the budget
/// of the first rule that selects it through `budgets`.
pub fn decide_within<'p>(
    pod: &Pod,
    namespace: &str,
    namespace_labels: Option<&Labels>,
    profile: &'p Profile,
    exclusions: &Exclusions,
    budgets: &dyn Gate,
) -> Decision<'p> {
    // 2. Exclusions.
    if exclusions.excludes(namespace) {
        return Decision::skipped(SkipReason::ExcludedNamespace(namespace.to_string()));
    }
    if pod.label(EXCLUDE_LABEL) == Some("true") {
        return Decision::skipped(SkipReason::ExcludedByLabel);
    }

    // 3. Selection.
    let namespace = NamespaceLabels {
        name: namespace,
        labels: namespace_labels,
    };
    let virtual_node = profile.virtual_node();
    let by_hand = virtual_node
        .node_selector
        .iter()
        .all(|(k, v)| pod.node_selector(k) == Some(v));
    // Labels that effects add count for objectSelectors, as they will when the
    // API server calls again with the patched pod: they accumulate (a label,
    // once added, keeps its value) until the selection adds no new label key,
    // so this ends, and a second call finds nothing to add.
    let mut added: Vec<(&'p str, &'p str)> = Vec::new();
    let mut candidates = Vec::new();
    let mut selection = select(
        profile,
        &PodLabels { pod, extra: &added },
        namespace,
        &mut candidates,
    );
    loop {
        if selection.rules.is_empty() && !by_hand {
            break;
        }
        let before = added.len();
        add_labels(&mut added, pod, &selection.rules, profile);
        if !profile.effects_feed_selection || added.len() == before {
            break;
        }
        selection = select(
            profile,
            &PodLabels { pod, extra: &added },
            namespace,
            &mut candidates,
        );
    }
    let mut warnings = Vec::new();
    if !selection.unknown_namespace.is_empty() {
        warnings.push(format!(
            "eci-profile: labels of namespace {} are unknown; namespaceSelector of rule(s) {} not matched",
            echo(namespace.name),
            echo(&selection.unknown_namespace.join(","))
        ));
    }

    // 4. Targeting: a normalNodeOnly rule ahead of every other selecting
    // rule keeps the pod off virtual nodes, whatever follows it.
    let target = if !selection.rules.is_empty() {
        Target::Rules
    } else if let Some(rule) = selection.kept_off {
        if by_hand {
            warnings.push(format!(
                "eci-profile: rule {} (policy normalNodeOnly) selects the pod, but its nodeSelector asks for a virtual node",
                echo(&rule.name)
            ));
        }
        let mut decision = Decision::skipped(SkipReason::NormalNodeOnly(rule.name.clone()));
        decision.selected = vec![rule];
        decision.policy = Some(SchedulingPolicy::NormalNodeOnly);
        decision.warnings = warnings;
        return decision;
    } else if by_hand {
        Target::ByHand
    } else {
        let mut decision = Decision::skipped(SkipReason::NotSelected);
        decision.warnings = warnings;
        return decision;
    };
    let selected = selection.rules;

    // 5. Pods that cannot run on a virtual node, or whose placement the user already chose.
    if let Some(reason) = incompatibility(pod, profile) {
        warnings.push(format!(
            "eci-profile: pod not sent to a virtual node{}: {reason}",
            match selected.first() {
                Some(rule) => format!(" (rule {})", echo(&rule.name)),
                None => String::new(),
            }
        ));
        let mut decision = Decision::skipped(reason);
        decision.target = Some(target);
        decision.selected = selected;
        decision.warnings = warnings;
        return decision;
    }

    // 5b. The budget of the first selecting rule, for this namespace: the
    // last check, since a pod that fits takes its place.
    let budget = selected.first().and_then(|rule| {
        let budget = rule.budget.as_ref()?;
        let applies = budget
            .namespace
            .as_deref()
            .is_none_or(|ns| ns == namespace.name);
        applies.then_some((rule, budget))
    });
    let mut reserved = None;
    if let Some((rule, budget)) = budget {
        match budgets.admit(
            &budget.limits,
            namespace.name,
            &crate::budgets::requests::of_spec(&pod.spec),
        ) {
            Ok(()) => reserved = budgets.reservation(),
            Err(over) => {
                return over_budget(rule, namespace.name, over, target, selected, warnings);
            }
        }
    }

    let mut patch = PatchBuilder::default();

    // 7–8. Effects, then the record of applied rules.
    let effect_rules = || selected.iter().copied().chain(profile.effect_only_rules());
    let applied: Vec<&'p str> = effect_rules().map(|r| r.name.as_str()).collect();
    let mut annotations: Vec<(&'p str, patch::Value<'p>)> = Vec::new();
    let mut annotate = |key: &'p str, value: patch::Value<'p>| {
        if !pod.has_annotation(key) && !annotations.iter().any(|(k, _)| *k == key) {
            annotations.push((key, value));
        }
    };
    for (key, value) in effect_rules()
        .flat_map(|r| &r.annotations)
        .chain(profile.cluster_annotations())
    {
        annotate(key, patch::Value::Text(value.as_str().into()));
    }
    if !applied.is_empty() {
        annotate(
            APPLIED_ANNOTATION,
            patch::Value::Text(applied.join(",").into()),
        );
    }
    if let Some(id) = reserved {
        annotate(
            crate::budgets::RESERVATION_ANNOTATION,
            patch::Value::Text(id.to_string().into()),
        );
    }
    patch.add_to_object(
        &["metadata", "annotations"],
        pod.metadata.annotations.is_some(),
        annotations,
    );
    patch.add_to_object(
        &["metadata", "labels"],
        pod.metadata.labels.is_some(),
        added
            .into_iter()
            .chain((pod.label(SENT_LABEL).is_none()).then_some((SENT_LABEL, "true")))
            .map(|(k, v)| (k, patch::Value::Text(v.into()))),
    );

    // 6. Scheduling, by the first selecting rule's policy; by hand, tolerations only.
    let policy = selected.first().map(|r| r.policy);
    if policy == Some(SchedulingPolicy::VirtualNodeOnly) {
        patch.add_to_object(
            &["spec", "nodeSelector"],
            pod.spec.node_selector.is_some(),
            virtual_node
                .node_selector
                .iter()
                .filter(|(k, _)| pod.node_selector(k).is_none())
                .map(|(k, v)| (k.as_str(), patch::Value::Text(v.as_str().into()))),
        );
    }
    patch.append_to_array(
        &["spec", "tolerations"],
        pod.spec.tolerations.is_some(),
        virtual_node
            .tolerations
            .iter()
            .zip(&profile.toleration_values)
            .filter(|(t, _)| !pod.tolerates(t))
            .map(|(_, value)| patch::Value::Json(value)),
    );
    if policy == Some(SchedulingPolicy::NormalNodePrefer) {
        prefer_normal_nodes(&mut patch, pod, profile);
    }

    let outcome = if patch.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Mutated
    };
    Decision {
        outcome,
        target: Some(target),
        selected,
        applied,
        policy,
        warnings,
        patch: patch.build(),
    }
}

/// A pod that does not fit the budget of `rule`: left unchanged, with a warning.
fn over_budget<'p>(
    rule: &'p Rule,
    namespace: &str,
    over: crate::budgets::Over,
    target: Target,
    selected: Vec<&'p Rule>,
    mut warnings: Vec<String>,
) -> Decision<'p> {
    let reason = SkipReason::OverBudget {
        rule: rule.name.clone(),
        namespace: namespace.to_string(),
        usage: over.to_string(),
    };
    warnings.push(format!(
        "eci-profile: pod not sent to a virtual node: {reason}"
    ));
    let mut decision = Decision::skipped(reason);
    decision.target = Some(target);
    decision.selected = selected;
    decision.warnings = warnings;
    decision
}

fn prefer_normal_nodes<'p>(patch: &mut PatchBuilder<'p>, pod: &Pod, profile: &'p Profile) {
    let term = profile.normal_node_preference();
    if pod
        .preferred_node_affinity()
        .is_some_and(|terms| terms.contains(term))
    {
        return;
    }
    let affinity = pod.spec.affinity.as_ref();
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    patch.ensure_object(&["spec", "affinity"], affinity.is_some());
    patch.ensure_object(
        &["spec", "affinity", "nodeAffinity"],
        node_affinity.is_some(),
    );
    patch.append_to_array(
        &[
            "spec",
            "affinity",
            "nodeAffinity",
            "preferredDuringSchedulingIgnoredDuringExecution",
        ],
        pod.preferred_node_affinity().is_some(),
        [patch::Value::Json(term)],
    );
}

/// The first reason, if any, why a targeted pod must be left alone.
fn incompatibility(pod: &Pod, profile: &Profile) -> Option<SkipReason> {
    if let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "DaemonSet")
    {
        return Some(SkipReason::DaemonSet(owner.name.clone()));
    }
    if pod.has_annotation("kubernetes.io/config.mirror") {
        return Some(SkipReason::MirrorPod);
    }
    let spec = &pod.spec;
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    if spec.host_pid == Some(true) {
        return Some(SkipReason::HostPid);
    }
    if spec.host_ipc == Some(true) {
        return Some(SkipReason::HostIpc);
    }
    if let Some(volume) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.is_some())
    {
        return Some(SkipReason::HostPath {
            volume: volume.name.clone(),
        });
    }
    for container in pod.all_containers() {
        if let Some(port) = container
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.host_port.filter(|&hp| hp != 0))
        {
            return Some(SkipReason::HostPort {
                container: container.name.clone(),
                port,
            });
        }
    }
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(SkipReason::NodeName(node.clone()));
    }
    for (key, wanted) in &profile.virtual_node().node_selector {
        if let Some(value) = pod.node_selector(key).filter(|v| v != wanted) {
            return Some(SkipReason::NodeSelectorConflict {
                key: key.clone(),
                value: value.to_string(),
                wanted: wanted.clone(),
            });
        }
    }
    None
}

/// Whether `rule`'s namespaceSelector, if any, matches `namespace` (whose
/// labels, when unknown, match only a selector on its name).
pub fn selects_namespace(rule: &Rule, namespace: NamespaceLabels<'_>) -> bool {
    match &rule.namespace_selector {
        None => true,
        Some(s) if namespace.labels.is_some() || s.uses_only_key(NAMESPACE_NAME_LABEL) => {
            s.matches(&namespace)
        }
        Some(_) => false,
    }
}

/// The rules that select a pod, and those that might have but for unknown namespace labels.
struct Selection<'p> {
    /// Up to the first `normalNodeOnly` rule, excluded.
    rules: Vec<&'p Rule>,
    /// The first selecting `normalNodeOnly` rule: no rule after it counts.
    kept_off: Option<&'p Rule>,
    unknown_namespace: Vec<&'p str>,
}

fn select<'p>(
    profile: &'p Profile,
    pod_labels: &PodLabels<'_>,
    namespace: NamespaceLabels<'_>,
    candidates: &mut Vec<u32>,
) -> Selection<'p> {
    let mut selection = Selection {
        rules: Vec::new(),
        kept_off: None,
        unknown_namespace: Vec::new(),
    };
    profile.rule_index().candidates(
        pod_labels.iter(),
        namespace_label_pairs(namespace),
        namespace.labels.is_none(),
        candidates,
    );
    let rules = profile.selecting_rules();
    for rule in candidates.iter().map(|&i| &rules[i as usize]) {
        if !rule
            .object_selector
            .as_ref()
            .is_none_or(|s| s.matches(pod_labels))
        {
            continue;
        }
        let namespace_matches = match &rule.namespace_selector {
            Some(s) if namespace.labels.is_none() && !s.uses_only_key(NAMESPACE_NAME_LABEL) => {
                selection.unknown_namespace.push(&rule.name);
                false
            }
            _ => selects_namespace(rule, namespace),
        };
        if !namespace_matches {
            continue;
        }
        if rule.policy == SchedulingPolicy::NormalNodeOnly {
            selection.kept_off = Some(rule);
            break;
        }
        selection.rules.push(rule);
    }
    selection
}

/// A namespace's labels as pairs, its name label always included.
fn namespace_label_pairs<'a>(
    namespace: NamespaceLabels<'a>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    namespace
        .labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != NAMESPACE_NAME_LABEL)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([(NAMESPACE_NAME_LABEL, namespace.name)])
}

/// Adds to `added` the labels the effects of `selected` and the effect-only
/// rules give `pod`: none it (or `added`) already has, the first rule winning.
fn add_labels<'p>(
    added: &mut Vec<(&'p str, &'p str)>,
    pod: &Pod,
    selected: &[&'p Rule],
    profile: &'p Profile,
) {
    for (key, value) in selected
        .iter()
        .copied()
        .chain(profile.effect_only_rules())
        .flat_map(|r| &r.labels)
    {
        if !pod.has_label(key) && !added.iter().any(|(k, _)| k == key) {
            added.push((key, value));
        }
    }
}

/// A pod's labels, plus labels that effects would add.
struct PodLabels<'a> {
    pod: &'a Pod,
    extra: &'a [(&'a str, &'a str)],
}

impl<'a> PodLabels<'a> {
    /// Every label: the pod's, then the added ones it does not have.
    fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let pod = self.pod;
        pod.metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.extra
                    .iter()
                    .copied()
                    .filter(move |(k, _)| !pod.has_label(k)),
            )
    }
}

impl LabelSource for PodLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.pod
            .label(key)
            .or_else(|| self.extra.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
    }
}
