//! Validation and compilation of a profile, in one pass over its data.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;

use super::node::{self, Node, Position, Value};
use super::suggest::suggest;
use super::{
    Budget, Diagnostic, Diagnostics, Entry, Origin, Profile, ProfileData, Rule, RuleSource,
    SchedulingPolicy, Severity, VirtualNode,
};
use crate::budgets::{Limits, Quantity, Resource};
use crate::decision::{APPLIED_ANNOTATION, EXCLUDE_LABEL};
use crate::eci_annotations::{self, Finding};
use crate::labels::{self, Labels};
use crate::pod::Toleration;
use crate::selector::{Operator, Requirement, Selector};

/// Keys of Alibaba Cloud's eci-profile that configure the virtual node
/// itself; the webhook accepts and ignores them.
const VIRTUAL_NODE_KEYS: &[&str] = &[
    "enableClusterIp",
    "enableHybridMode",
    "enableLinuxArm64Node",
    "enableLogController",
    "enablePVCController",
    "enablePrivateZone",
    "enableReuseSSLKey",
    "featureGates",
    "resourceGroupId",
    "slsMachineGroup",
    "vpcId",
];

/// The keys of the profile ConfigMap the webhook reads.
const PROFILE_KEYS: &[&str] = &["selectors", "virtualNode", "vSwitchIds", "securityGroupId"];

/// The fields of a label selector.
const LABEL_SELECTOR_FIELDS: &[&str] = &["matchLabels", "matchExpressions"];

/// The result of [`compile`]: the profile when there were no errors, and every finding.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub profile: Option<Profile>,
    pub diagnostics: Diagnostics,
}

impl Compiled {
    /// The profile with its warnings, or the error listing every finding.
    pub fn into_result(self) -> Result<(Profile, Diagnostics), ProfileError> {
        match self.profile {
            Some(profile) => Ok((profile, self.diagnostics)),
            None => Err(ProfileError(self.diagnostics)),
        }
    }
}

/// A profile refused because of errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileError(pub Diagnostics);

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let errors: Vec<String> = self.0.errors().map(ToString::to_string).collect();
        write!(f, "invalid profile ({} error", errors.len())?;
        if errors.len() != 1 {
            f.write_str("s")?;
        }
        write!(f, "):\n{}", errors.join("\n"))
    }
}

impl std::error::Error for ProfileError {}

/// Validates `data` and, when it has no errors, compiles it into a [`Profile`].
pub fn compile(data: &ProfileData) -> Compiled {
    let mut checker = Checker::default();
    let mut rules = Vec::new();
    let mut virtual_node = VirtualNode::default();
    let mut cluster_annotations = Vec::new();

    for (key, entry) in &data.entries {
        checker.enter(key, entry);
        let text = entry.text.as_str();
        match key.as_str() {
            "selectors" => rules = checker.selectors(text),
            "virtualNode" => {
                if let Some(vn) = checker.virtual_node(text) {
                    virtual_node = vn;
                }
            }
            "vSwitchIds" => {
                if let Some(value) = checker.id_list(text, eci_annotations::VSWITCH) {
                    cluster_annotations.push((eci_annotations::VSWITCH.to_string(), value));
                }
            }
            "securityGroupId" => {
                if let Some(value) = checker.id_list(text, eci_annotations::SECURITY_GROUP) {
                    cluster_annotations.push((eci_annotations::SECURITY_GROUP.to_string(), value));
                }
            }
            k if VIRTUAL_NODE_KEYS.contains(&k) => checker.report(
                Severity::Info,
                "",
                Position::default(),
                "ignored by the webhook: it configures the virtual node, not pods",
            ),
            other => {
                let known: Vec<&str> = PROFILE_KEYS
                    .iter()
                    .chain(VIRTUAL_NODE_KEYS)
                    .copied()
                    .collect();
                checker.report_suggesting(
                    Severity::Warning,
                    "",
                    Position::default(),
                    "unknown key, ignored",
                    suggest(other, &known),
                )
            }
        }
    }
    // vSwitch before security group, whatever the key order.
    cluster_annotations.sort_by_key(|(k, _)| k != eci_annotations::VSWITCH);

    let diagnostics = Diagnostics(checker.diagnostics);
    if diagnostics.has_errors() {
        return Compiled {
            profile: None,
            diagnostics,
        };
    }
    Compiled {
        profile: Some(Profile::assemble(
            rules,
            virtual_node,
            cluster_annotations,
            data.digest(),
        )),
        diagnostics,
    }
}

/// Key/value pairs in profile order.
type Pairs = Vec<(String, String)>;
/// A string and where it stands.
type Located = (String, Position);

/// Walks the data, collecting findings.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) key: String,
    pub(super) key_position: Position,
    pub(super) origin: Option<Origin>,
    pub(super) selector: Option<String>,
}

impl Checker {
    fn enter(&mut self, key: &str, entry: &Entry) {
        self.key = key.to_string();
        self.key_position = entry.key_position;
        self.origin = Some(entry.origin.clone());
        self.selector = None;
    }

    /// Records a finding at `position` inside the current data value.
    pub(super) fn report(
        &mut self,
        severity: Severity,
        field: &str,
        position: Position,
        message: impl Into<String>,
    ) {
        self.report_suggesting(severity, field, position, message, None);
    }

    /// [`report`](Self::report), with the name probably meant.
    pub(super) fn report_suggesting(
        &mut self,
        severity: Severity,
        field: &str,
        position: Position,
        message: impl Into<String>,
        suggestion: Option<&str>,
    ) {
        let mut message = message.into();
        let inner = position.is_known();
        let (file, mapped) = match self.origin.as_ref().unwrap_or(&Origin::None) {
            Origin::None => (None, None),
            Origin::File(file) => (Some(file.clone()), inner.then_some(position)),
            Origin::Block {
                file,
                first_line,
                indent,
            } => (
                Some(file.clone()),
                inner.then(|| Position {
                    line: first_line + position.line - 1,
                    column: indent + position.column,
                }),
            ),
            Origin::Unmapped(file) => (Some(file.clone()), None),
        };
        // A finding about the value as a whole points at its key.
        let mapped = match mapped {
            None if !inner && self.key_position.is_known() => Some(self.key_position),
            mapped => mapped,
        };
        if inner && mapped.is_none() {
            let _ = write!(
                message,
                " (line {}, column {} of the {} value)",
                position.line, position.column, self.key
            );
        }
        let field = if field.is_empty() {
            self.key.clone()
        } else {
            format!("{}{}", self.key, field)
        };
        self.diagnostics.push(Diagnostic {
            severity,
            file,
            position: mapped,
            selector: self.selector.clone(),
            field,
            message,
            suggestion: suggestion.map(str::to_string),
        });
    }

    pub(super) fn error(&mut self, field: &str, node: &Node, message: impl Into<String>) {
        self.report(Severity::Error, field, node.position, message);
    }

    /// `what` about the unknown field `key`, with the `known` fields and the
    /// one probably meant.
    fn unknown_field(
        &mut self,
        severity: Severity,
        field: &str,
        key: &Node,
        what: &str,
        known: &[&str],
    ) {
        let name = key.as_str().unwrap_or_default();
        self.report_suggesting(
            severity,
            field,
            key.position,
            format!("{what} (known: {})", known.join(", ")),
            suggest(name, known),
        );
    }

    pub(super) fn warning(&mut self, field: &str, node: &Node, message: impl Into<String>) {
        self.report(Severity::Warning, field, node.position, message);
    }

    /// Parses a data value as YAML/JSON; `None` (reported) on a syntax error,
    /// `Some(None)` when empty.
    fn parse(&mut self, text: &str) -> Option<Option<Node>> {
        if text.trim().is_empty() {
            return Some(None);
        }
        // A data value is read by this program only: YAML 1.2.
        match node::parse(text, node::Booleans::Yaml12) {
            Ok(node) => Some(Some(node)),
            Err(e) => {
                self.report(Severity::Error, "", e.position, e.message);
                None
            }
        }
    }

    /// The entries of an object; anything else is reported as not `expected`.
    pub(super) fn object<'n>(
        &mut self,
        path: &str,
        node: &'n Node,
        expected: &str,
    ) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Mapping(fields) => Some(fields),
            other => {
                self.error(
                    path,
                    node,
                    format!("must be {expected}, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// The items of a list (`null` is an empty one); anything else is reported.
    pub(super) fn list<'n>(&mut self, path: &str, node: &'n Node, expected: &str) -> &'n [Node] {
        match &node.value {
            Value::Null => &[],
            Value::Sequence(items) => items,
            other => {
                self.error(
                    path,
                    node,
                    format!("must be {expected}, found {}", other.kind()),
                );
                &[]
            }
        }
    }

    /// Warns about every field of `entries` not in `known`.
    pub(super) fn unknown_fields(&mut self, path: &str, entries: &[(Node, Node)], known: &[&str]) {
        for (key, _) in entries {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => self.unknown_field(
                    Severity::Warning,
                    &format!("{path}.{k}"),
                    key,
                    "unknown field, ignored",
                    known,
                ),
                None => self.warning(path, key, "field names must be strings"),
            }
        }
    }

    fn selectors(&mut self, text: &str) -> Vec<Rule> {
        let Some(Some(root)) = self.parse(text) else {
            return Vec::new();
        };
        let items = self.list("", &root, "a list of selectors");
        let mut rules = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("[{index}]");
            self.selector = Some(format!("selectors[{index}]"));
            let Some(fields) = self.object(&path, item, "an object") else {
                continue;
            };
            let rule = self.rule(&path, item, fields, index);
            // Checked whether or not the rules have other errors.
            if let Some(name_node) = field(fields, "name")
                && let Some(name) = name_node.as_str().filter(|n| !n.trim().is_empty())
            {
                match names.get(name) {
                    Some(first) => self.error(
                        &format!("{path}.name"),
                        name_node,
                        format!("duplicate name (also selectors[{first}])"),
                    ),
                    None => {
                        names.insert(name.to_string(), index);
                    }
                }
            }
            rules.extend(rule);
        }
        self.selector = None;
        rules
    }

    fn rule(
        &mut self,
        path: &str,
        item: &Node,
        fields: &[(Node, Node)],
        position: usize,
    ) -> Option<Rule> {
        let errors_before = self.error_count();
        let name = match field(fields, "name") {
            None => {
                self.error(&format!("{path}.name"), item, "is required");
                None
            }
            Some(n) => match &n.value {
                Value::String(s) if s.trim().is_empty() => {
                    self.error(&format!("{path}.name"), n, "must not be empty");
                    None
                }
                Value::String(s) => {
                    self.selector = Some(s.clone());
                    self.rule_name(&format!("{path}.name"), n, s)
                        .then(|| s.clone())
                }
                other => {
                    self.error(
                        &format!("{path}.name"),
                        n,
                        format!("must be a string, found {}", other.kind()),
                    );
                    None
                }
            },
        };
        self.unknown_fields(
            path,
            fields,
            &[
                "name",
                "namespaceSelector",
                "objectSelector",
                "effect",
                "priority",
                "policy",
                "limits",
            ],
        );
        let policy = match field(fields, "policy") {
            None => SchedulingPolicy::default(),
            Some(n) => match &n.value {
                Value::String(s) => SchedulingPolicy::parse(s).unwrap_or_else(|| {
                    self.error(
                        &format!("{path}.policy"),
                        n,
                        format!("unknown policy {s:?} (expected virtualNodeOnly, normalNodePrefer, fair or normalNodeOnly)"),
                    );
                    SchedulingPolicy::default()
                }),
                other => {
                    self.error(&format!("{path}.policy"), n, format!("must be a string, found {}", other.kind()));
                    SchedulingPolicy::default()
                }
            },
        };
        let mut rule = self.rule_body(
            path,
            fields,
            ["namespaceSelector", "objectSelector"],
            RuleSource::ConfigMap(position),
        );
        if let Some(n) = field(fields, "limits").filter(|n| n.value != Value::Null) {
            let limits = self.limits(&format!("{path}.limits"), n);
            rule.budget = Some(Budget {
                limits,
                namespace: None,
            });
        }
        rule.name = name?;
        rule.policy = policy;
        if self.error_count() > errors_before {
            return None;
        }
        self.rule_warnings(path, item, field(fields, "policy"), &rule);
        Some(rule)
    }

    /// Checks a rule's name; `false` (reported) when it cannot be used.
    pub(super) fn rule_name(&mut self, path: &str, node: &Node, name: &str) -> bool {
        if name.contains(',') {
            self.error(
                path,
                node,
                "must not contain ',' (names are listed comma-separated in the eci-profile.io/selectors annotation)",
            );
            return false;
        }
        true
    }

    /// The fields both formats share: the two label selectors (spelled
    /// `selector_fields`), `effect` and `priority`; name and policy are left
    /// to the caller.
    pub(super) fn rule_body(
        &mut self,
        path: &str,
        fields: &[(Node, Node)],
        [namespace_field, object_field]: [&str; 2],
        source: RuleSource,
    ) -> Rule {
        let namespace_selector = field(fields, namespace_field)
            .and_then(|n| self.label_selector(&format!("{path}.{namespace_field}"), n));
        let object_selector = field(fields, object_field)
            .and_then(|n| self.label_selector(&format!("{path}.{object_field}"), n));
        let (annotations, labels) = match field(fields, "effect") {
            Some(n) => self.effect(&format!("{path}.effect"), n),
            None => (Vec::new(), Vec::new()),
        };
        let priority = match field(fields, "priority") {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => 0,
            Some(n) => match n.value {
                Value::Integer(p) if i32::try_from(p).is_ok() => p as i32,
                _ => {
                    self.error(
                        &format!("{path}.priority"),
                        n,
                        "must be a whole number (32-bit)",
                    );
                    0
                }
            },
        };
        Rule {
            name: String::new(),
            source,
            priority,
            policy: SchedulingPolicy::default(),
            budget: None,
            namespace_selector,
            object_selector,
            annotations,
            labels,
        }
    }

    /// A budget's limits: an object of quantities by ResourceQuota's names;
    /// other resources are accepted with a warning and not counted.
    pub(super) fn limits(&mut self, path: &str, node: &Node) -> Limits {
        let mut limits = Limits::default();
        let Some(entries) = self.object(path, node, "an object of quantities") else {
            return limits;
        };
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                self.error(path, key, "keys must be strings");
                continue;
            };
            let at = format!("{path}[{name:?}]");
            let text = match &value.value {
                Value::String(q) => q.clone(),
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                other => {
                    self.error(
                        &at,
                        value,
                        format!("must be a quantity, found {}", other.kind()),
                    );
                    continue;
                }
            };
            let Some(quantity) = Quantity::parse(&text).filter(|q| q.0 >= 0) else {
                self.error(
                    &at,
                    value,
                    format!("invalid quantity {text:?}: a number with an optional suffix, not negative (e.g. 40, 2.5, 500m, 64Gi)"),
                );
                continue;
            };
            let Some(resource) = Resource::parse(name) else {
                self.warning(
                    &at,
                    key,
                    "is not counted: budgets cap pods, requests.cpu (cpu) and requests.memory (memory)",
                );
                continue;
            };
            if limits.0.iter().any(|(r, _)| *r == resource) {
                self.error(
                    &at,
                    key,
                    format!(
                        "{resource} is given twice (cpu means requests.cpu, memory requests.memory)"
                    ),
                );
                continue;
            }
            limits.0.push((resource, quantity));
        }
        limits
    }

    /// Warnings about a valid rule that does less than it seems to.
    pub(super) fn rule_warnings(
        &mut self,
        path: &str,
        item: &Node,
        policy: Option<&Node>,
        rule: &Rule,
    ) {
        let selectors: Vec<&Selector> = rule
            .namespace_selector
            .iter()
            .chain(&rule.object_selector)
            .collect();
        if selectors.is_empty() {
            if rule.annotations.is_empty() && rule.labels.is_empty() {
                self.warning(path, item, "has no selector and no effect: it does nothing");
            }
            if let Some(n) = policy {
                self.warning(
                    &format!("{path}.policy"),
                    n,
                    "has no effect: a rule without selectors only adds its effects to pods sent to a virtual node",
                );
            }
            if rule.budget.is_some() {
                self.warning(
                    path,
                    item,
                    "its budget has no effect: a rule without selectors sends no pod to virtual nodes",
                );
            }
        } else if selectors.iter().all(|s| s.is_empty()) {
            self.warning(
                path,
                item,
                "its selectors are empty ({}): it selects every pod in every namespace that is not excluded",
            );
        }
        if rule.policy == SchedulingPolicy::NormalNodeOnly
            && !(rule.annotations.is_empty() && rule.labels.is_empty())
            && let Some(n) = policy
        {
            self.warning(
                &format!("{path}.effect"),
                n,
                "is never applied: policy normalNodeOnly leaves the pods it selects alone",
            );
        }
    }

    pub(super) fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// A `metav1.LabelSelector`; `None` when null or invalid.
    fn label_selector(&mut self, path: &str, node: &Node) -> Option<Selector> {
        if node.value == Value::Null {
            return None;
        }
        let fields = self.object(path, node, "a label selector object")?;
        let errors_before = self.error_count();
        let mut requirements = Vec::new();
        if let Some(n) = field(fields, "matchLabels") {
            let path = format!("{path}.matchLabels");
            for (key, value) in self.string_map(&path, n) {
                self.label_entry(&path, &key, &value);
                requirements.push(Requirement::new(key.0, Operator::In, vec![value.0]));
            }
        }
        if let Some(n) = field(fields, "matchExpressions") {
            let path = format!("{path}.matchExpressions");
            for (i, item) in self.list(&path, n, "a list").iter().enumerate() {
                if let Some(r) = self.requirement(&format!("{path}[{i}]"), item) {
                    requirements.push(r);
                }
            }
        }
        self.selector_fields(path, fields, requirements.is_empty());
        (self.error_count() == errors_before).then(|| Selector::new(requirements))
    }

    /// Reports a label selector's unknown fields: errors when without them
    /// the selector is `empty` (it would match everything by a typo),
    /// warnings otherwise. A selector written `{}` is left to the caller.
    fn selector_fields(&mut self, path: &str, fields: &[(Node, Node)], empty: bool) {
        let unknown = fields.iter().any(|(k, _)| {
            !k.as_str()
                .is_some_and(|k| LABEL_SELECTOR_FIELDS.contains(&k))
        });
        if !(empty && unknown) {
            self.unknown_fields(path, fields, LABEL_SELECTOR_FIELDS);
            return;
        }
        for (key, _) in fields {
            match key.as_str() {
                Some(k) if LABEL_SELECTOR_FIELDS.contains(&k) => {}
                Some(k) => self.unknown_field(
                    Severity::Error,
                    &format!("{path}.{k}"),
                    key,
                    "unknown field: without it the selector is empty and matches everything",
                    LABEL_SELECTOR_FIELDS,
                ),
                None => self.error(path, key, "field names must be strings"),
            }
        }
    }

    fn requirement(&mut self, path: &str, node: &Node) -> Option<Requirement> {
        let fields = self.object(path, node, "an object")?;
        self.unknown_fields(path, fields, &["key", "operator", "values"]);
        let key = match field(fields, "key") {
            Some(Node {
                value: Value::String(k),
                ..
            }) => {
                let key_node = field(fields, "key").unwrap_or(node);
                if let Err(why) = labels::check_key(k) {
                    self.error(
                        &format!("{path}.key"),
                        key_node,
                        format!("invalid label key {k:?}: {why}"),
                    );
                }
                Some(k.clone())
            }
            Some(n) => {
                self.error(&format!("{path}.key"), n, "must be a string");
                None
            }
            None => {
                self.error(&format!("{path}.key"), node, "is required");
                None
            }
        };
        let operator = match field(fields, "operator") {
            Some(
                n @ Node {
                    value: Value::String(op),
                    ..
                },
            ) => Operator::parse(op).or_else(|| {
                self.error(
                    &format!("{path}.operator"),
                    n,
                    format!("unknown operator {op:?} (expected In, NotIn, Exists or DoesNotExist)"),
                );
                None
            }),
            Some(n) => {
                self.error(&format!("{path}.operator"), n, "must be a string");
                None
            }
            None => {
                self.error(&format!("{path}.operator"), node, "is required");
                None
            }
        };
        let mut values = Vec::new();
        if let Some(n) = field(fields, "values") {
            for (i, item) in self
                .list(&format!("{path}.values"), n, "a list")
                .iter()
                .enumerate()
            {
                let vpath = format!("{path}.values[{i}]");
                match &item.value {
                    Value::String(v) => {
                        if let Err(why) = labels::check_label_value(v) {
                            self.error(&vpath, item, format!("invalid label value {v:?}: {why}"));
                        }
                        values.push(v.clone());
                    }
                    other => self.error(
                        &vpath,
                        item,
                        format!("must be a string, found {} (quote it)", other.kind()),
                    ),
                }
            }
        }
        let operator = operator?;
        match (operator.takes_values(), values.is_empty()) {
            (true, true) => self.error(
                &format!("{path}.values"),
                field(fields, "values").unwrap_or(node),
                format!("must be non-empty when the operator is {operator:?}"),
            ),
            (false, false) => self.error(
                &format!("{path}.values"),
                field(fields, "values").unwrap_or(node),
                format!("must be empty when the operator is {operator:?}"),
            ),
            _ => {}
        }
        Some(Requirement::new(key?, operator, values))
    }

    /// An object of strings; non-string values are reported and skipped.
    pub(super) fn string_map(&mut self, path: &str, node: &Node) -> Vec<(Located, Located)> {
        if node.value == Value::Null {
            return Vec::new();
        }
        let Some(entries) = self.object(path, node, "an object of strings") else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(k) = key.as_str() else {
                self.error(path, key, "keys must be strings");
                continue;
            };
            match &value.value {
                Value::String(v) => {
                    out.push(((k.to_string(), key.position), (v.clone(), value.position)))
                }
                other => self.error(
                    &format!("{path}[{k:?}]"),
                    value,
                    format!("must be a string, found {} (quote it)", other.kind()),
                ),
            }
        }
        out
    }

    /// Checks a label key and value.
    fn label_entry(&mut self, path: &str, key: &Located, value: &Located) {
        let field = format!("{path}[{:?}]", key.0);
        if let Err(why) = labels::check_key(&key.0) {
            self.report(
                Severity::Error,
                &field,
                key.1,
                format!("invalid label key: {why}"),
            );
        }
        if let Err(why) = labels::check_label_value(&value.0) {
            self.report(
                Severity::Error,
                &field,
                value.1,
                format!("invalid label value {:?}: {why}", value.0),
            );
        }
    }

    fn effect(&mut self, path: &str, node: &Node) -> (Pairs, Pairs) {
        if node.value == Value::Null {
            return (Vec::new(), Vec::new());
        }
        let Some(fields) = self.object(path, node, "an object") else {
            return (Vec::new(), Vec::new());
        };
        self.unknown_fields(path, fields, &["annotations", "labels"]);
        let mut annotations = Vec::new();
        if let Some(n) = field(fields, "annotations") {
            let path = format!("{path}.annotations");
            for (key, value) in self.string_map(&path, n) {
                self.annotation_entry(&path, &key, &value);
                annotations.push((key.0, value.0));
            }
        }
        let mut labels = Vec::new();
        if let Some(n) = field(fields, "labels") {
            let path = format!("{path}.labels");
            for (key, value) in self.string_map(&path, n) {
                self.label_entry(&path, &key, &value);
                if key.0 == EXCLUDE_LABEL {
                    self.report(
                        Severity::Error,
                        &format!("{path}[{:?}]", key.0),
                        key.1,
                        "is reserved: it excludes pods from eci-profile and cannot be set by a rule",
                    );
                }
                labels.push((key.0, value.0));
            }
        }
        (annotations, labels)
    }

    fn annotation_entry(&mut self, path: &str, key: &Located, value: &Located) {
        let field = format!("{path}[{:?}]", key.0);
        // The API server checks annotation keys with a lower-cased prefix.
        if let Err(why) = labels::check_key(&key.0.to_ascii_lowercase()) {
            self.report(
                Severity::Error,
                &field,
                key.1,
                format!("invalid annotation key: {why}"),
            );
            return;
        }
        if key.0 == APPLIED_ANNOTATION {
            self.report(
                Severity::Error,
                &field,
                key.1,
                "is reserved: eci-profile records the applied rules in it",
            );
            return;
        }
        match eci_annotations::check(&key.0, &value.0) {
            Finding::Valid | Finding::NotEci => {}
            Finding::Invalid(why) => self.report(
                Severity::Error,
                &field,
                value.1,
                format!("invalid value {:?}: {why}", value.0),
            ),
            Finding::SetByEci => self.report(
                Severity::Error,
                &field,
                key.1,
                "is set by ECI itself and must not be set by a profile",
            ),
            Finding::UnknownEci => self.report(
                Severity::Warning,
                &field,
                key.1,
                "is not a known ECI annotation (check the spelling); its value is not checked",
            ),
        }
    }

    fn virtual_node(&mut self, text: &str) -> Option<VirtualNode> {
        let root = self.parse(text)??;
        let fields = self.object("", &root, "an object")?;
        let errors_before = self.error_count();
        self.unknown_fields("", fields, &["nodeSelector", "tolerations"]);
        let mut node_selector = Labels::new();
        match field(fields, "nodeSelector") {
            Some(n) => {
                for (key, value) in self.string_map(".nodeSelector", n) {
                    self.label_entry(".nodeSelector", &key, &value);
                    node_selector.insert(key.0, value.0);
                }
                if node_selector.is_empty() && self.error_count() == errors_before {
                    self.error(
                        ".nodeSelector",
                        n,
                        "must have at least one label: it identifies virtual nodes",
                    );
                }
            }
            None => self.error(
                ".nodeSelector",
                &root,
                "is required: it identifies virtual nodes",
            ),
        }
        let mut tolerations = Vec::new();
        if let Some(n) = field(fields, "tolerations") {
            for (i, item) in self.list(".tolerations", n, "a list").iter().enumerate() {
                if let Some(t) = self.toleration(&format!(".tolerations[{i}]"), item) {
                    tolerations.push(t);
                }
            }
        }
        (self.error_count() == errors_before).then_some(VirtualNode {
            node_selector,
            tolerations,
        })
    }

    fn toleration(&mut self, path: &str, node: &Node) -> Option<Toleration> {
        let fields = self.object(path, node, "an object")?;
        self.unknown_fields(
            path,
            fields,
            &["key", "operator", "value", "effect", "tolerationSeconds"],
        );
        let mut text = |name: &str| -> Option<String> {
            let n = field(fields, name)?;
            match &n.value {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => {
                    self.error(
                        &format!("{path}.{name}"),
                        n,
                        format!("must be a string, found {}", other.kind()),
                    );
                    None
                }
            }
        };
        let mut t = Toleration {
            key: text("key"),
            operator: text("operator"),
            value: text("value"),
            effect: text("effect"),
            toleration_seconds: None,
        };
        let at = |name: &str| field(fields, name).unwrap_or(node);
        let key = t.key.clone().unwrap_or_default();
        if !key.is_empty()
            && let Err(why) = labels::check_key(&key)
        {
            self.error(
                &format!("{path}.key"),
                at("key"),
                format!("invalid key: {why}"),
            );
        }
        match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" => {
                if key.is_empty() {
                    self.error(
                        &format!("{path}.key"),
                        node,
                        "is required when the operator is Equal",
                    );
                }
                if let Err(why) = labels::check_label_value(t.value.as_deref().unwrap_or("")) {
                    self.error(
                        &format!("{path}.value"),
                        at("value"),
                        format!("invalid value: {why}"),
                    );
                }
            }
            "Exists" => {
                if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    self.error(
                        &format!("{path}.value"),
                        at("value"),
                        "must be empty when the operator is Exists",
                    );
                }
            }
            other => self.error(
                &format!("{path}.operator"),
                at("operator"),
                format!("unknown operator {other:?} (expected Equal or Exists)"),
            ),
        }
        let effect = t.effect.clone().unwrap_or_default();
        if !matches!(
            effect.as_str(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            self.error(
                &format!("{path}.effect"),
                at("effect"),
                format!(
                    "unknown effect {effect:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
                ),
            );
        }
        if let Some(n) = field(fields, "tolerationSeconds") {
            match n.value {
                Value::Integer(s) if i64::try_from(s).is_ok() && effect == "NoExecute" => {
                    t.toleration_seconds = Some(s as i64);
                }
                Value::Integer(_) => self.error(
                    &format!("{path}.tolerationSeconds"),
                    n,
                    "only applies to the NoExecute effect",
                ),
                _ => self.error(
                    &format!("{path}.tolerationSeconds"),
                    n,
                    "must be a whole number",
                ),
            }
        }
        Some(t)
    }

    /// A comma-separated ID list turned into an annotation value; `None` when empty or invalid.
    fn id_list(&mut self, text: &str, annotation: &str) -> Option<String> {
        let value: Vec<&str> = text.split(',').map(str::trim).collect();
        let value = value.join(",");
        if value.is_empty() {
            return None;
        }
        match eci_annotations::check(annotation, &value) {
            Finding::Invalid(why) => {
                self.report(
                    Severity::Error,
                    "",
                    Position::default(),
                    format!("invalid value {text:?}: {why}"),
                );
                None
            }
            _ => Some(value),
        }
    }
}

/// The names of the ConfigMap's rules in `data`, as written, whether or not
/// the rules are valid; none when `selectors` cannot be read.
pub(super) fn rule_names(data: &ProfileData) -> Vec<String> {
    let Some(entry) = data.entries.get("selectors") else {
        return Vec::new();
    };
    let Ok(root) = node::parse(&entry.text, node::Booleans::Yaml12) else {
        return Vec::new();
    };
    match &root.value {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|item| item.get("name")?.as_str())
            .filter(|name| !name.trim().is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of field `name` in a mapping.
pub(super) fn field<'n>(fields: &'n [(Node, Node)], name: &str) -> Option<&'n Node> {
    fields
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// The preferred node-affinity term that favours nodes without the virtual
/// node's labels.
pub(super) fn normal_node_preference(virtual_node: &VirtualNode) -> serde_json::Value {
    let expressions: Vec<serde_json::Value> = virtual_node
        .node_selector
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "operator": "NotIn", "values": [v]}))
        .collect();
    serde_json::json!({"weight": 100, "preference": {"matchExpressions": expressions}})
}
