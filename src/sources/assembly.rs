//! The profile in use, assembled from the cluster's two rule sources: the
//! profile ConfigMap (compiled on its own, with the virtual node) and the
//! Selector objects' rules. Either source changing publishes a new merged
//! profile (see [`profile::merge`] for the order and name clashes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;
use crate::profile::{self, Profile, Rule};
use crate::published::Published;

/// The rules of the Selector objects in use, by name, each with the digest
/// of the object version it was compiled from.
pub type SelectorRules = BTreeMap<String, (Rule, u64)>;

/// Merges the sources' latest good parts and publishes the result.
pub struct Assembly {
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
    parts: Mutex<Parts>,
}

struct Parts {
    /// The ConfigMap's profile, without Selectors.
    configmap: Arc<Profile>,
    selectors: Arc<SelectorRules>,
    /// Selectors left out by the last merge.
    clashes: Vec<String>,
    /// Selectors whose latest version was refused.
    invalid: usize,
}

impl Assembly {
    /// Starts from the profile `published` holds, as the ConfigMap's, and no Selectors.
    pub fn new(published: Arc<Published<Profile>>, metrics: Arc<Metrics>) -> Self {
        let configmap = published.get();
        Self {
            published,
            metrics,
            parts: Mutex::new(Parts {
                configmap,
                selectors: Arc::default(),
                clashes: Vec::new(),
                invalid: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ConfigMap's profile in use (its digest is the ConfigMap data's).
    pub fn configmap(&self) -> Arc<Profile> {
        self.lock().configmap.clone()
    }

    /// The profile actually in use.
    pub fn published(&self) -> &Arc<Published<Profile>> {
        &self.published
    }

    /// Selectors left out because a ConfigMap rule has their name.
    pub fn clashes(&self) -> Vec<String> {
        self.lock().clashes.clone()
    }

    /// Puts a new ConfigMap profile in use (a successful load of the
    /// ConfigMap); `source` names it in logs.
    pub fn set_configmap(&self, profile: Profile, source: &str) {
        let mut parts = self.lock();
        parts.configmap = Arc::new(profile);
        let (digest, rules) = self.republish(&mut parts);
        // The ConfigMap's own load succeeded: this clears profile_reload_failing.
        self.metrics.profile_loaded(Some((digest, rules)));
        super::log_loaded(source, digest, rules);
    }

    /// Puts a new set of Selector rules in use; `invalid` Selectors (whose
    /// latest version was refused) are counted.
    pub fn set_selectors(&self, selectors: SelectorRules, invalid: usize) {
        let mut parts = self.lock();
        parts.selectors = Arc::new(selectors);
        parts.invalid = invalid;
        let before = self.published.get().digest();
        let (digest, rules) = self.republish(&mut parts);
        if digest != before {
            self.metrics.profile_in_use(digest, rules);
            super::log_loaded("selectors", digest, rules);
        }
    }

    /// Merges the parts and publishes the result; returns its digest and rule count.
    fn republish(&self, parts: &mut Parts) -> (u64, usize) {
        let merged = profile::merge(
            &parts.configmap,
            parts
                .selectors
                .values()
                .map(|(rule, digest)| (rule, *digest)),
        );
        for name in merged.clashes.iter().filter(|n| !parts.clashes.contains(n)) {
            tracing::warn!("{}", profile::clash_message(name));
        }
        parts.clashes = merged.clashes;
        let clashing = parts.clashes.len();
        self.metrics
            .selector_states(parts.selectors.len() - clashing, parts.invalid, clashing);
        let (digest, rules) = (merged.profile.digest(), merged.profile.rule_count());
        if digest != self.published.get().digest() {
            self.published.publish(merged.profile);
        }
        (digest, rules)
    }
}
