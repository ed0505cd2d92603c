//! The profile: the ConfigMap's data, validated and compiled once into an
//! immutable [`Profile`] that deciding reads on every request.
//!
//! - [`ProfileData`] is the raw data (key → text), from a manifest
//!   ([`ProfileData::from_manifest`]), a mounted directory or the cluster.
//! - [`compile`] validates it and, when it has no errors, builds the
//!   [`Profile`]; the same [`Diagnostics`] serve `validate`, `check` and the server.

mod compile;
pub mod convert;
mod diagnostic;
mod index;
mod manifest;
mod merge;
pub mod node;
pub mod selector_object;
mod suggest;

use std::collections::BTreeMap;
use std::fmt;

pub use compile::{Compiled, ProfileError, compile};
pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use index::RuleIndex;
pub use manifest::Manifests;
pub use merge::{Merged, clash_message, compile_manifests, merge};
pub use selector_object::{CompiledSelector, compile_selector};

use crate::labels::Labels;
use crate::pod::Toleration;
use crate::selector::Selector;

/// The profile ConfigMap's default namespace and name (Alibaba Cloud's).
pub const DEFAULT_CONFIGMAP: (&str, &str) = ("kube-system", "eci-profile");

/// The default profile embedded in the binary: the historical ACK opt-in
/// labels (`alibabacloud.com/eci: "true"` or `eci: "true"`, on the pod or on
/// its namespace), sending pods to the self-managed VNode.
pub const EMBEDDED_DEFAULT: &str = include_str!("default-profile.yaml");

/// How the first selecting rule wants the pod scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedulingPolicy {
    /// Only on virtual nodes: nodeSelector and tolerations are added.
    #[default]
    VirtualNodeOnly,
    /// Real nodes first, virtual nodes as overflow: tolerations and a
    /// preferred node-affinity term against the virtual node's labels.
    NormalNodePrefer,
    /// Either: tolerations only.
    Fair,
    /// Not on virtual nodes: the pod is left alone, and lower-priority rules
    /// cannot send it there (an exception carved out of a broader rule).
    NormalNodeOnly,
}

impl SchedulingPolicy {
    /// Parses the policy as spelled in a profile.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "virtualNodeOnly" => Some(Self::VirtualNodeOnly),
            "normalNodePrefer" => Some(Self::NormalNodePrefer),
            "fair" => Some(Self::Fair),
            "normalNodeOnly" => Some(Self::NormalNodeOnly),
            _ => None,
        }
    }

    /// The policy as spelled in a profile.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VirtualNodeOnly => "virtualNodeOnly",
            Self::NormalNodePrefer => "normalNodePrefer",
            Self::Fair => "fair",
            Self::NormalNodeOnly => "normalNodeOnly",
        }
    }
}

impl fmt::Display for SchedulingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule comes from; rules of equal priority are tried ConfigMap
/// rules first, in ConfigMap order, then Selector objects by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleSource {
    /// The profile ConfigMap's `selectors`, at this position.
    ConfigMap(usize),
    /// A `Selector` object (`eci.aliyun.com`), named as the rule.
    Selector,
}

/// A rule's cap on what namespaces may hold on virtual nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limits: crate::budgets::Limits,
    /// `Some`: that one namespace (a Selector's `namespaceResourceLimit`);
    /// `None`: each namespace the rule selects (a ConfigMap rule's `limits`).
    pub namespace: Option<String>,
}

/// One compiled selector rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub source: RuleSource,
    pub priority: i32,
    pub policy: SchedulingPolicy,
    /// A ConfigMap rule's `limits`, or a Selector's `namespaceResourceLimit`
    /// (whose pods are scheduled as `virtualNodeOnly`).
    pub budget: Option<Budget>,
    pub namespace_selector: Option<Selector>,
    pub object_selector: Option<Selector>,
    /// Annotations to add, in profile order.
    pub annotations: Vec<(String, String)>,
    /// Labels to add, in profile order.
    pub labels: Vec<(String, String)>,
}

impl Rule {
    /// Whether the rule has a selector; one without applies its effects to
    /// every pod sent to a virtual node.
    pub fn has_selector(&self) -> bool {
        self.namespace_selector.is_some() || self.object_selector.is_some()
    }

    /// The order rules are tried in: priority (descending), then source.
    fn order(&self) -> (std::cmp::Reverse<i32>, RuleSource, &str) {
        (std::cmp::Reverse(self.priority), self.source, &self.name)
    }
}

/// Where pods go: the virtual node's labels and taints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualNode {
    /// Never empty.
    pub node_selector: Labels,
    pub tolerations: Vec<Toleration>,
}

impl Default for VirtualNode {
    /// The VNode of self-managed clusters: label and taint `k8s.aliyun.com/vnode=true`.
    fn default() -> Self {
        const KEY: &str = "k8s.aliyun.com/vnode";
        Self {
            node_selector: Labels::from([(KEY.to_string(), "true".to_string())]),
            tolerations: vec![Toleration {
                key: Some(KEY.into()),
                operator: Some("Equal".into()),
                value: Some("true".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }],
        }
    }
}

/// A compiled, immutable profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Rules with a selector, by priority (descending) then position.
    pub(crate) selecting: Vec<Rule>,
    /// `selecting`, indexed by the labels the rules require.
    pub(crate) index: RuleIndex,
    /// Rules without a selector, by priority (descending) then position.
    pub(crate) effect_only: Vec<Rule>,
    pub(crate) virtual_node: VirtualNode,
    /// The virtual node's tolerations as JSON, ready for a patch.
    pub(crate) toleration_values: Vec<serde_json::Value>,
    /// See [`Profile::normal_node_preference`].
    pub(crate) normal_node_preference: serde_json::Value,
    /// Annotations every pod sent to a virtual node gets (from `vSwitchIds`, `securityGroupId`).
    pub(crate) cluster_annotations: Vec<(String, String)>,
    /// Whether a rule's effect labels can change what an objectSelector sees.
    pub(crate) effects_feed_selection: bool,
    pub(crate) digest: u64,
}

impl Profile {
    /// A profile of `rules` (valid ones), tried by priority, then source.
    pub(crate) fn assemble(
        mut rules: Vec<Rule>,
        virtual_node: VirtualNode,
        cluster_annotations: Vec<(String, String)>,
        digest: u64,
    ) -> Self {
        rules.sort_by(|a, b| a.order().cmp(&b.order()));
        let (selecting, effect_only): (Vec<Rule>, Vec<Rule>) =
            rules.into_iter().partition(Rule::has_selector);
        let selected_keys: std::collections::HashSet<&str> = selecting
            .iter()
            .flat_map(|r| r.object_selector.iter().flat_map(|s| s.requirements()))
            .map(|req| req.key.as_str())
            .collect();
        let effects_feed_selection = selecting
            .iter()
            .chain(&effect_only)
            .flat_map(|rule| &rule.labels)
            .any(|(key, _)| selected_keys.contains(key.as_str()));
        Profile {
            index: RuleIndex::new(&selecting),
            toleration_values: virtual_node
                .tolerations
                .iter()
                .map(|t| serde_json::to_value(t).expect("a toleration serialises"))
                .collect(),
            normal_node_preference: compile::normal_node_preference(&virtual_node),
            selecting,
            effect_only,
            virtual_node,
            cluster_annotations,
            effects_feed_selection,
            digest,
        }
    }

    /// Every rule, in the order [`selecting_rules`](Self::selecting_rules)
    /// then [`effect_only_rules`](Self::effect_only_rules).
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.selecting.iter().chain(&self.effect_only)
    }

    /// The rule named `name` (names are unique in a profile), if any.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules().find(|r| r.name == name)
    }

    /// The embedded default profile.
    pub fn embedded_default() -> Self {
        ProfileData::from_manifest("<embedded default profile>", EMBEDDED_DEFAULT)
            .ok()
            .and_then(|data| compile(&data).profile)
            .expect("the embedded default profile is valid")
    }

    /// A profile with no selectors and the default virtual node.
    pub fn empty() -> Self {
        compile(&ProfileData::default())
            .profile
            .expect("empty data is a valid profile")
    }

    /// Rules with a selector, in the order they are tried.
    pub fn selecting_rules(&self) -> &[Rule] {
        &self.selecting
    }

    /// The index of [`selecting_rules`](Self::selecting_rules).
    pub fn rule_index(&self) -> &RuleIndex {
        &self.index
    }

    /// Rules without a selector, in the order their effects apply.
    pub fn effect_only_rules(&self) -> &[Rule] {
        &self.effect_only
    }

    /// The rules with a budget, in order.
    pub fn budgets(&self) -> impl Iterator<Item = (&Rule, &Budget)> {
        self.selecting_rules()
            .iter()
            .filter_map(|rule| Some((rule, rule.budget.as_ref()?)))
    }

    /// Whether any rule has a budget.
    pub fn has_budgets(&self) -> bool {
        self.budgets().next().is_some()
    }

    /// The scheduling target.
    pub fn virtual_node(&self) -> &VirtualNode {
        &self.virtual_node
    }

    /// The preferred node-affinity term of policy `normal-node-prefer`: it
    /// favours nodes without the virtual node's labels, so real nodes come
    /// first and virtual nodes take the overflow.
    pub fn normal_node_preference(&self) -> &serde_json::Value {
        &self.normal_node_preference
    }

    /// Annotations from `vSwitchIds` and `securityGroupId`.
    pub fn cluster_annotations(&self) -> &[(String, String)] {
        &self.cluster_annotations
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.selecting.len() + self.effect_only.len()
    }

    /// A stable 64-bit FNV-1a digest of the data the profile was compiled from.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// Where a data value's text stands, to turn positions inside the value
/// into positions in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Not from a file (e.g. the cluster).
    None,
    /// The value is the whole content of this file (a mounted ConfigMap key).
    File(String),
    /// A YAML literal block (`|`) in this file: line 1 of the value is
    /// `first_line`, indented by `indent` columns.
    Block {
        file: String,
        first_line: u64,
        indent: u64,
    },
    /// Somewhere in this file, where positions inside the value cannot be mapped.
    Unmapped(String),
}

/// One data value of the profile ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub text: String,
    pub origin: Origin,
    /// Where the key stands in its manifest, when known.
    pub key_position: node::Position,
}

/// The profile ConfigMap's `data`, not yet validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileData {
    pub entries: BTreeMap<String, Entry>,
}

impl ProfileData {
    /// A stable 64-bit FNV-1a digest of the keys and texts, the same across
    /// processes and versions (it identifies a profile in metrics and logs).
    pub fn digest(&self) -> u64 {
        crate::digest::fnv1a(
            self.entries
                .iter()
                .flat_map(|(key, entry)| [key.as_bytes(), entry.text.as_bytes()]),
        )
    }

    /// Data from plain strings (the cluster's ConfigMap), with no file origin.
    pub fn from_map(data: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            entries: data
                .into_iter()
                .map(|(key, text)| {
                    (
                        key,
                        Entry {
                            text,
                            origin: Origin::None,
                            key_position: node::Position::default(),
                        },
                    )
                })
                .collect(),
        }
    }
}
