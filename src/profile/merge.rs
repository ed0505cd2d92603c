//! One profile from two sources: the ConfigMap's rules and `Selector`
//! objects.
//!
//! - Rules are tried by priority (highest first); at equal priority the
//!   ConfigMap's rules come first, in ConfigMap order, then Selectors by
//!   name. Deterministic: never random, never by arrival.
//! - A name is one rule: a Selector named like a ConfigMap rule is left out
//!   (the ConfigMap, which also holds the virtual node, wins) and reported.
//! - Everything else of the profile (virtual node, cluster annotations)
//!   comes from the ConfigMap.

use std::collections::HashSet;

use super::compile::rule_names;
use super::{
    Compiled, Diagnostic, Diagnostics, Manifests, Profile, ProfileData, Rule, RuleSource, Severity,
    compile, compile_selector,
};

/// The profile in use and the Selectors left out of it.
#[derive(Clone, Debug)]
pub struct Merged {
    pub profile: Profile,
    /// Names of Selectors left out because a ConfigMap rule has that name.
    pub clashes: Vec<String>,
}

/// Merges `selectors` (each rule with the digest of its object) into the
/// ConfigMap's profile `configmap`. With no Selectors the result is
/// `configmap` itself, digest included.
pub fn merge<'a>(
    configmap: &Profile,
    selectors: impl IntoIterator<Item = (&'a Rule, u64)>,
) -> Merged {
    let own: Vec<&Rule> = configmap
        .rules()
        .filter(|r| r.source != RuleSource::Selector)
        .collect();
    let mut rules: Vec<Rule> = own.iter().map(|r| (*r).clone()).collect();
    let mut clashes = Vec::new();
    let mut digest_parts: Vec<Vec<u8>> = vec![configmap.digest().to_le_bytes().to_vec()];
    let mut selectors: Vec<(&Rule, u64)> = selectors.into_iter().collect();
    selectors.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for (rule, digest) in selectors {
        if configmap
            .rule(&rule.name)
            .is_some_and(|r| r.source != RuleSource::Selector)
        {
            clashes.push(rule.name.clone());
            continue;
        }
        digest_parts.push(rule.name.as_bytes().to_vec());
        digest_parts.push(digest.to_le_bytes().to_vec());
        let mut rule = rule.clone();
        rule.source = RuleSource::Selector;
        rules.push(rule);
    }
    let digest = if digest_parts.len() == 1 {
        configmap.digest()
    } else {
        crate::digest::fnv1a(digest_parts.iter().map(Vec::as_slice))
    };
    Merged {
        profile: Profile::assemble(
            rules,
            configmap.virtual_node.clone(),
            configmap.cluster_annotations.clone(),
            digest,
        ),
        clashes,
    }
}

/// Checks and compiles everything `manifests` hold into one profile, as
/// `validate` and `check` see it: strict, so a Selector with errors, two
/// Selectors of one name or a name clash with the ConfigMap refuse it.
/// Names are compared whether or not the rules have other errors.
pub fn compile_manifests(manifests: &Manifests) -> Compiled {
    let empty = ProfileData::default();
    let data = manifests.configmap.as_ref().unwrap_or(&empty);
    let base = compile(data);
    let configmap_names: HashSet<String> = match &base.profile {
        Some(profile) => profile.rules().map(|r| r.name.clone()).collect(),
        None => rule_names(data).into_iter().collect(),
    };
    let mut diagnostics = base.diagnostics.0;
    let mut selectors: Vec<(Rule, u64)> = Vec::new();
    let mut names = HashSet::new();
    for (node, origin) in &manifests.selectors {
        let compiled = compile_selector(node, origin);
        diagnostics.extend(compiled.diagnostics.0);
        let Some(name) = compiled.name.filter(|n| !n.is_empty()) else {
            continue;
        };
        let clash = if !names.insert(name.clone()) {
            Some(format!(
                "a second Selector named {:?}",
                crate::truncate::echo(&name)
            ))
        } else if configmap_names.contains(&name) {
            Some(clash_message(&name))
        } else {
            None
        };
        if let Some(message) = clash {
            let at = node
                .get("metadata")
                .and_then(|m| m.get("name"))
                .unwrap_or(node);
            diagnostics.push(Diagnostic {
                file: match origin {
                    super::Origin::File(file) => Some(file.clone()),
                    _ => None,
                },
                position: Some(at.position).filter(|p| p.is_known()),
                ..Diagnostic::new(Severity::Error, Some(&name), "metadata.name", message)
            });
            continue;
        }
        if let Some(rule) = compiled.rule {
            selectors.push((rule, compiled.digest));
        }
    }
    let diagnostics = Diagnostics(diagnostics);
    let profile = match base.profile {
        Some(profile) if !diagnostics.has_errors() => {
            Some(merge(&profile, selectors.iter().map(|(r, d)| (r, *d))).profile)
        }
        _ => None,
    };
    Compiled {
        profile,
        diagnostics,
    }
}

/// The message for a Selector left out by a name clash.
pub fn clash_message(name: &str) -> String {
    format!(
        "selector {:?} is also a rule of the profile ConfigMap: the ConfigMap's rule applies and this Selector is left out until one of them is renamed",
        crate::truncate::echo(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::node::{self, Booleans};
    use crate::profile::{Origin, ProfileData, SchedulingPolicy, compile, compile_selector};

    fn configmap(selectors: &str) -> Profile {
        compile(&ProfileData::from_map([(
            "selectors".into(),
            selectors.into(),
        )]))
        .profile
        .unwrap()
    }

    fn selector(name: &str, priority: i32, policy: &str) -> (Rule, u64) {
        let yaml = format!(
            "apiVersion: eci.aliyun.com/v1\nkind: Selector\nmetadata: {{name: {name}}}\nspec:\n  objectLabels: {{matchLabels: {{app: web}}}}\n  policy: {{{policy}: {{}}}}\n  priority: {priority}\n"
        );
        let c = compile_selector(
            &node::parse(&yaml, Booleans::Yaml11).unwrap(),
            &Origin::None,
        );
        (c.rule.unwrap(), c.digest)
    }

    #[test]
    fn order_is_priority_then_configmap_order_then_selector_name() {
        let base = configmap(
            r#"[{"name": "cm-b", "objectSelector": {"matchLabels": {"app": "web"}}, "priority": 1},
                {"name": "cm-a", "objectSelector": {"matchLabels": {"app": "web"}}, "priority": 1},
                {"name": "cm-low", "objectSelector": {"matchLabels": {"app": "web"}}}]"#,
        );
        let selectors = [
            selector("sel-z", 1, "fair"),
            selector("sel-a", 1, "fair"),
            selector("sel-top", 5, "normalNodeOnly"),
            selector("sel-0", 0, "fair"),
        ];
        let merged = merge(&base, selectors.iter().map(|(r, d)| (r, *d)));
        let names: Vec<&str> = merged
            .profile
            .selecting_rules()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "sel-top", "cm-b", "cm-a", "sel-a", "sel-z", "cm-low", "sel-0"
            ]
        );
        assert!(merged.clashes.is_empty());
        assert_eq!(
            merged.profile.selecting_rules()[0].policy,
            SchedulingPolicy::NormalNodeOnly
        );
        // Whatever order the Selectors arrive in.
        let reversed = merge(&base, selectors.iter().rev().map(|(r, d)| (r, *d)));
        assert_eq!(reversed.profile, merged.profile);
    }

    #[test]
    fn a_clashing_selector_is_left_out() {
        let base =
            configmap(r#"[{"name": "web", "objectSelector": {"matchLabels": {"app": "web"}}}]"#);
        let (rule, digest) = selector("web", 9, "fair");
        let merged = merge(&base, [(&rule, digest)]);
        assert_eq!(merged.clashes, ["web"]);
        assert_eq!(merged.profile, base);
        assert_eq!(merged.profile.rule_count(), 1);
    }

    #[test]
    fn digest_is_the_configmaps_without_selectors_and_changes_with_them() {
        let base = configmap("[]");
        assert_eq!(merge(&base, []).profile.digest(), base.digest());
        let (a, da) = selector("a", 0, "fair");
        let (b, db) = selector("a", 1, "fair");
        let with_a = merge(&base, [(&a, da)]).profile.digest();
        assert_ne!(with_a, base.digest());
        assert_ne!(with_a, merge(&base, [(&b, db)]).profile.digest());
        // Merging again onto a merged profile keeps only the ConfigMap's own rules.
        let merged = merge(&base, [(&a, da)]).profile;
        assert_eq!(merge(&merged, []).profile.rule_count(), 0);
    }
}
