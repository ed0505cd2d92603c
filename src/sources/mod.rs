//! Where profiles and namespace labels come from, outside the pure core.

pub mod assembly;
pub mod cluster;
pub mod file;
pub mod pods;
pub mod selectors;
pub mod snapshot;
pub mod watch;

use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::published::Published;

/// Puts a newly compiled profile in use for the next requests, counts it,
/// and logs it; `source` names where it came from.
pub fn publish(published: &Published<Profile>, metrics: &Metrics, profile: Profile, source: &str) {
    let (digest, rules) = (profile.digest(), profile.rule_count());
    published.publish(profile);
    metrics.profile_loaded(Some((digest, rules)));
    log_loaded(source, digest, rules);
}

/// The log line of a profile put in use.
fn log_loaded(source: &str, digest: u64, rules: usize) {
    tracing::info!(source, digest = %format_args!("{digest:016x}"), selectors = rules, "profile loaded");
}
