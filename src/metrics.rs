//! Prometheus metrics, in OpenMetrics text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mutated`, `unchanged`, `skipped` or `error` (`/mutate`); `allowed`
    /// or `denied` (`/validate`).
    pub outcome: &'static str,
    /// The skip reason's code, or the error kind; empty otherwise. For
    /// `/validate`: `selector`, `profile` or `other`.
    pub reason: &'static str,
}

/// Labels of the reload counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `http_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `webhook` or `admin`.
    pub listener: &'static str,
    /// The HTTP status sent (`400`, `404`, `405`, `408`, `413`, `429`, `431`,
    /// `503`), or `none` when the connection was closed without an answer.
    pub status: &'static str,
    /// Why, in a word (`bad-request`, `too-large`, `header-timeout`, ...).
    pub reason: &'static str,
}

/// The `status` label of an HTTP status code.
pub fn status_label(code: u16) -> &'static str {
    match code {
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Labels of counters that only have a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Labels of `selector_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SelectorStateLabels {
    /// `applied` (its rule is in the profile in use: for an invalid one, its
    /// last good version), `invalid` (its latest version was refused) or
    /// `name-clash` (left out: a ConfigMap rule has its name).
    pub state: &'static str,
}

/// Labels of `profile_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileInfoLabels {
    /// The profile's digest, in hex.
    pub digest: String,
}

/// Labels of the budget gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// The rule whose budget it is.
    pub rule: String,
    pub namespace: String,
    /// `pods`, `requests.cpu` (cores) or `requests.memory` (bytes).
    pub resource: &'static str,
}

/// Labels of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    /// The git commit built, or `unknown`.
    pub revision: &'static str,
}

/// Labels of `rule_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// A rule of the profile in use (echo-truncated).
    pub rule: String,
    /// `mutated`, `unchanged` or `skipped`.
    pub outcome: &'static str,
}

/// Labels of the watch health metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `profile-configmap`, `selectors`, `namespaces`, `virtual-nodes` or `sent-pods`.
    pub watch: &'static str,
}

/// The outcomes `rule_decisions_total` counts.
const RULE_OUTCOMES: [&str; 3] = ["mutated", "unchanged", "skipped"];

/// A gauge of fractional values (CPU cores).
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// The `process_*` metrics, without the prefix (as every Prometheus client names them).
    process: Registry,
    pub build_info: Family<BuildLabels, Gauge>,
    pub rule_decisions: Family<RuleLabels, Counter>,
    /// The rules `rule_decisions` has series of.
    counted_rules: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub watch_last_event: Family<WatchLabels, FloatGauge>,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub profile_reloads: Family<ResultLabels, Counter>,
    pub profile_generation: Gauge,
    pub profile_selectors: Gauge,
    pub profile_info: Family<ProfileInfoLabels, Gauge>,
    pub profile_reload_failing: Gauge,
    pub certificate_reloads: Family<ResultLabels, Counter>,
    pub certificate_expiry: Gauge,
    pub http_refusals: Family<RefusalLabels, Counter>,
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    pub ca_bundle_updates: Family<ResultLabels, Counter>,
    pub buffered_request_bytes: Gauge,
    pub large_decisions_in_flight: Gauge,
    pub selector_objects: Family<SelectorStateLabels, Gauge>,
    pub selector_crd_installed: Gauge,
    pub budget_used: Family<BudgetLabels, FloatGauge>,
    pub budget_limit: Family<BudgetLabels, FloatGauge>,
    pub budgets_configured: Gauge,
    pub sent_pods_synced: Gauge,
    pub sent_pods_tracked: Gauge,
    pub budget_reservations: Gauge,
    pub deletion_cost_patches: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eci_profile");
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The version and git revision of this binary (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION,
                revision: crate::build_info::REVISION,
            })
            .set(1);
        let rule_decisions = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rule_decisions",
            "Pod admissions by rule of the profile in use and outcome: every rule applied (mutated, unchanged), or the rule whose policy or budget left the pod alone (skipped)",
            rule_decisions.clone(),
        );
        let watch_last_event = Family::<WatchLabels, FloatGauge>::default();
        registry.register(
            "watch_last_event_timestamp_seconds",
            "When a cluster watch last received an event (a change or a listing), in seconds since the Unix epoch",
            watch_last_event.clone(),
        );
        let watch_errors = Family::<WatchLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Errors of a cluster watch (each is retried with backoff, listing again when needed)",
            watch_errors.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReview requests answered, by outcome and reason",
            requests.clone(),
        );
        // 100 µs .. ~1.6 s
        let request_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "admission_request_duration_seconds",
            "Time to answer POST /mutate, from the first body byte read to the response",
            request_duration.clone(),
        );
        let profile_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "profile_reloads",
            "Attempts to load a new profile, by result",
            profile_reloads.clone(),
        );
        let profile_generation = Gauge::default();
        registry.register(
            "profile_generation",
            "How many profiles have been loaded since start",
            profile_generation.clone(),
        );
        let profile_selectors = Gauge::default();
        registry.register(
            "profile_selectors",
            "Selector rules in the profile in use",
            profile_selectors.clone(),
        );
        let profile_info = Family::<ProfileInfoLabels, Gauge>::default();
        registry.register(
            "profile_info",
            "The profile in use, by digest (always 1)",
            profile_info.clone(),
        );
        let profile_reload_failing = Gauge::default();
        registry.register(
            "profile_reload_failing",
            "1 while the profile's source holds a profile that was refused (the last good one is still in use), else 0",
            profile_reload_failing.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Attempts to load a new serving certificate, by result",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, in seconds since the Unix epoch",
            certificate_expiry.clone(),
        );
        let http_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "http_refusals",
            "Requests and connections refused at the HTTP level, by listener, status and reason",
            http_refusals.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the webhook port that failed, by reason",
            tls_handshake_failures.clone(),
        );
        let ca_bundle_updates = Family::<ResultLabels, Counter>::default();
        registry.register(
            "ca_bundle_updates",
            "Self-signed mode: this replica's CA added again to the webhook configuration's caBundle after it was found missing (success), or a check or update of it that failed (failure)",
            ca_bundle_updates.clone(),
        );
        let buffered_request_bytes = Gauge::default();
        registry.register(
            "buffered_request_bytes",
            "Bytes of request bodies held now (reserved from Content-Length, else as read), against --max-buffered-bytes",
            buffered_request_bytes.clone(),
        );
        let large_decisions_in_flight = Gauge::default();
        registry.register(
            "large_decisions_in_flight",
            "Large request bodies being read and decided now, against --max-large-decisions",
            large_decisions_in_flight.clone(),
        );
        let selector_objects = Family::<SelectorStateLabels, Gauge>::default();
        registry.register(
            "selector_objects",
            "Selector objects (eci.aliyun.com) by state: applied (in the profile in use, for an invalid one its last good version), invalid (latest version refused) or name-clash (left out)",
            selector_objects.clone(),
        );
        let selector_crd_installed = Gauge::default();
        registry.register(
            "selector_crd_installed",
            "1 while Selector objects (selectors.eci.aliyun.com) are served and watched, else 0",
            selector_crd_installed.clone(),
        );
        let budget_used = Family::<BudgetLabels, FloatGauge>::default();
        registry.register(
            "budget_used",
            "What a namespace holds on virtual nodes (pods counted and admissions reserved), per budget that governs it; for a budget of each selected namespace, only namespaces holding something",
            budget_used.clone(),
        );
        let budget_limit = Family::<BudgetLabels, FloatGauge>::default();
        registry.register(
            "budget_limit",
            "The limit of a budget in a namespace, next to budget_used",
            budget_limit.clone(),
        );
        let budgets_configured = Gauge::default();
        registry.register(
            "budgets_configured",
            "Rules with a budget in the profile in use",
            budgets_configured.clone(),
        );
        let sent_pods_synced = Gauge::default();
        registry.register(
            "sent_pods_synced",
            "1 once the watches of the virtual nodes and of the pods sent to them have listed, else 0 (budgets are not counted before)",
            sent_pods_synced.clone(),
        );
        let sent_pods_tracked = Gauge::default();
        registry.register(
            "sent_pods_tracked",
            "Live pods sent to virtual nodes held in memory, wherever bound",
            sent_pods_tracked.clone(),
        );
        let budget_reservations = Gauge::default();
        registry.register(
            "budget_reservations",
            "Admissions sent to a virtual node whose pod has not shown up in the watch yet",
            budget_reservations.clone(),
        );
        let deletion_cost_patches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "deletion_cost_patches",
            "Scale-in order: patches adding the pod deletion cost, by result (success, conflict: the pod changed first, failure)",
            deletion_cost_patches.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(process::Collector));
        Self {
            registry,
            process,
            build_info,
            rule_decisions,
            counted_rules: std::sync::Mutex::default(),
            watch_last_event,
            watch_errors,
            requests,
            request_duration,
            profile_reloads,
            profile_generation,
            profile_selectors,
            profile_info,
            profile_reload_failing,
            certificate_reloads,
            certificate_expiry,
            http_refusals,
            tls_handshake_failures,
            ca_bundle_updates,
            buffered_request_bytes,
            large_decisions_in_flight,
            selector_objects,
            selector_crd_installed,
            budget_used,
            budget_limit,
            budgets_configured,
            sent_pods_synced,
            sent_pods_tracked,
            budget_reservations,
            deletion_cost_patches,
        }
    }
}

impl Metrics {
    /// Counts an answered request.
    pub fn request(&self, outcome: &'static str, reason: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { outcome, reason })
            .inc();
    }

    /// Counts a request or connection refused at the HTTP level.
    pub fn refused(&self, listener: &'static str, status: &'static str, reason: &'static str) {
        self.http_refusals
            .get_or_create(&RefusalLabels {
                listener,
                status,
                reason,
            })
            .inc();
    }

    /// Counts a failed TLS handshake.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records that the profile's source holds a profile equal to the one in
    /// use, so no refused profile is pending (clears `profile_reload_failing`).
    pub fn profile_current(&self) {
        self.profile_reload_failing.set(0);
    }

    /// Records a profile load attempt; on success, the new profile's figures.
    /// A failure sets `profile_reload_failing` until the next success (or
    /// [`Metrics::profile_current`]).
    pub fn profile_loaded(&self, loaded: Option<(u64, usize)>) {
        let result = if loaded.is_some() {
            "success"
        } else {
            "failure"
        };
        self.profile_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.profile_reload_failing.set(i64::from(loaded.is_none()));
        if let Some((digest, selectors)) = loaded {
            self.profile_in_use(digest, selectors);
        }
    }

    /// Records the profile now in use (a new generation), whatever made it
    /// change; leaves `profile_reload_failing` alone.
    pub fn profile_in_use(&self, digest: u64, selectors: usize) {
        self.profile_generation.inc();
        self.profile_selectors.set(selectors as i64);
        self.profile_info.clear();
        self.profile_info
            .get_or_create(&ProfileInfoLabels {
                digest: format!("{digest:016x}"),
            })
            .set(1);
    }

    /// Records a certificate load attempt; on success, its expiry.
    pub fn certificate_loaded(&self, ok: bool, expiry: Option<i64>) {
        let result = if ok { "success" } else { "failure" };
        self.certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(expiry) = expiry.filter(|_| ok) {
            self.certificate_expiry.set(expiry);
        }
    }

    /// Counts an addition of this replica's CA to the caBundle.
    pub fn ca_bundle_updated(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.ca_bundle_updates
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records how many Selector objects are applied, invalid (latest
    /// version refused) and left out by a name clash.
    pub fn selector_states(&self, applied: usize, invalid: usize, clashing: usize) {
        for (state, count) in [
            ("applied", applied),
            ("invalid", invalid),
            ("name-clash", clashing),
        ] {
            self.selector_objects
                .get_or_create(&SelectorStateLabels { state })
                .set(count as i64);
        }
    }

    /// Records the budgets' usage (replacing what was recorded before, so
    /// that namespaces no longer holding anything are dropped).
    pub fn budgets(&self, usage: &[crate::budgets::Usage<'_>], configured: usize) {
        self.budget_used.clear();
        self.budget_limit.clear();
        self.budgets_configured.set(configured as i64);
        for row in usage {
            for &(resource, limit) in &row.limits.0 {
                let labels = BudgetLabels {
                    rule: crate::truncate::echo(row.rule).into_owned(),
                    namespace: row.namespace.clone(),
                    resource: resource.as_str(),
                };
                self.budget_used
                    .get_or_create(&labels)
                    .set(row.used.of(resource).as_f64());
                self.budget_limit.get_or_create(&labels).set(limit.as_f64());
            }
        }
    }

    /// Counts a deletion-cost patch.
    pub fn deletion_cost_patch(&self, result: &'static str) {
        self.deletion_cost_patches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a pod admission against the rules that decided it: every rule
    /// applied to a mutated or unchanged pod; for a skipped one, the rule
    /// whose policy (`normalNodeOnly`) or budget left it alone.
    pub fn rules_decided(&self, decision: &crate::decision::Decision<'_>) {
        let outcome = decision.outcome.as_str();
        use crate::decision::{Outcome, SkipReason};
        // Runs for every request: the rules are borrowed, and a rule's name
        // is copied into the set of counted rules only the first time.
        let deciding;
        let rules: &[&str] = match &decision.outcome {
            Outcome::Skipped(
                SkipReason::NormalNodeOnly(rule) | SkipReason::OverBudget { rule, .. },
            ) => {
                deciding = [rule.as_str()];
                &deciding
            }
            Outcome::Skipped(_) => return,
            _ => &decision.applied,
        };
        if rules.is_empty() {
            return;
        }
        let mut counted = self.counted_rules.lock().unwrap_or_else(|e| e.into_inner());
        for rule in rules {
            let rule = crate::truncate::echo(rule);
            self.rule_decisions
                .get_or_create(&RuleLabels {
                    rule: rule.to_string(),
                    outcome,
                })
                .inc();
            if !counted.contains(rule.as_ref()) {
                counted.insert(rule.into_owned());
            }
        }
    }

    /// Drops the `rule_decisions` series of rules not in `rules` (those of
    /// the profile in use), so that their number stays bounded by the profile.
    pub fn retain_rules<'r>(&self, rules: impl IntoIterator<Item = &'r str>) {
        let kept: std::collections::BTreeSet<String> = rules
            .into_iter()
            .map(|rule| crate::truncate::echo(rule).into_owned())
            .collect();
        let mut counted = self.counted_rules.lock().unwrap_or_else(|e| e.into_inner());
        counted.retain(|rule| {
            if kept.contains(rule) {
                return true;
            }
            for outcome in RULE_OUTCOMES {
                self.rule_decisions.remove(&RuleLabels {
                    rule: rule.clone(),
                    outcome,
                });
            }
            false
        });
    }

    /// Records an event of the cluster watch `watch`: its time, or an error
    /// (the error count is exported from the first event on, at 0).
    pub fn watch_event<T, E>(&self, watch: &'static str, event: &Result<T, E>) {
        let labels = WatchLabels { watch };
        match event {
            Ok(_) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.watch_last_event.get_or_create(&labels).set(now);
                // At 0 from the first event, so that the first error is an increase.
                let _ = self.watch_errors.get_or_create(&labels);
            }
            Err(_) => {
                self.watch_errors.get_or_create(&labels).inc();
            }
        }
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, ...), read from `/proc/self` at each
/// scrape; none where there is no `/proc` (other systems than Linux).
mod process {
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    /// Clock ticks per second of `/proc/self/stat` (`USER_HZ`: 100 on
    /// every architecture Linux exposes to user space this way).
    const TICKS_PER_SECOND: f64 = 100.0;

    #[derive(Debug)]
    pub struct Collector;

    impl prometheus_client::collector::Collector for Collector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let Some(figures) = Figures::read() else {
                return Ok(());
            };
            let cpu = ConstCounter::new(figures.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let gauges = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    figures.resident_bytes,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    figures.virtual_bytes,
                ),
                (
                    "process_open_fds",
                    "Number of open file descriptors",
                    figures.open_fds,
                ),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    figures.max_fds,
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds",
                    figures.start_time_seconds,
                ),
            ];
            for (name, help, value) in gauges {
                let Some(value) = value else { continue };
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
            Ok(())
        }
    }

    /// One reading of `/proc/self`.
    #[derive(Debug, PartialEq)]
    pub struct Figures {
        pub cpu_seconds: f64,
        pub resident_bytes: Option<f64>,
        pub virtual_bytes: Option<f64>,
        pub open_fds: Option<f64>,
        pub max_fds: Option<f64>,
        pub start_time_seconds: Option<f64>,
    }

    impl Figures {
        fn read() -> Option<Self> {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
            let system = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            let open_fds = std::fs::read_dir("/proc/self/fd")
                .ok()
                // The directory handle reading it is one of them.
                .map(|entries| entries.count().saturating_sub(1) as f64);
            let mut figures = Self::parse(&stat, &status, &limits, &system)?;
            figures.open_fds = open_fds;
            Some(figures)
        }

        /// The figures of `/proc/self/stat`, `/proc/self/status`,
        /// `/proc/self/limits` and `/proc/stat` (all but the open fds).
        pub fn parse(stat: &str, status: &str, limits: &str, system: &str) -> Option<Self> {
            // The command name, in parentheses, may hold spaces: fields
            // count from after its closing parenthesis (field 3, state).
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
            let (utime, stime) = (field(14)?, field(15)?);
            let boot_time = system
                .lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|t| t.trim().parse::<u64>().ok());
            let start_time_seconds = field(22)
                .zip(boot_time)
                .map(|(ticks, boot)| boot as f64 + ticks as f64 / TICKS_PER_SECOND);
            let resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<f64>().ok())
                .map(|kb| kb * 1024.0);
            let max_fds = limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|soft| soft.parse::<f64>().ok());
            Some(Self {
                cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
                resident_bytes,
                virtual_bytes: field(23).map(|b| b as f64),
                open_fds: None,
                max_fds,
                start_time_seconds,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_metrics() {
        let m = Metrics::default();
        m.request("skipped", "not-selected");
        m.profile_loaded(Some((0xabc, 4)));
        m.certificate_loaded(true, Some(1_900_000_000));
        let text = m.encode();
        assert!(
            text.contains(
                r#"eci_profile_admission_requests_total{outcome="skipped",reason="not-selected"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"eci_profile_profile_info{digest="0000000000000abc"} 1"#),
            "{text}"
        );
        assert!(text.contains("eci_profile_profile_selectors 4"), "{text}");
        assert!(
            text.contains("eci_profile_certificate_expiry_timestamp_seconds 1900000000"),
            "{text}"
        );
        assert!(
            text.contains("eci_profile_profile_reload_failing 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_failed_reload_stays_visible_until_the_source_is_good_again() {
        let m = Metrics::default();
        m.profile_loaded(Some((1, 1)));
        m.profile_loaded(None);
        assert!(m.encode().contains("eci_profile_profile_reload_failing 1"));
        m.profile_current();
        assert!(m.encode().contains("eci_profile_profile_reload_failing 0"));
        m.profile_loaded(None);
        m.profile_loaded(Some((2, 1)));
        assert!(m.encode().contains("eci_profile_profile_reload_failing 0"));
    }

    #[test]
    fn exports_build_and_process_metrics() {
        let text = Metrics::default().encode();
        let build = format!(
            r#"eci_profile_build_info{{version="{}",revision="{}"}} 1"#,
            crate::build_info::VERSION,
            crate::build_info::REVISION
        );
        assert!(text.contains(&build), "{text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.contains(&format!("\n{name}")), "{name}: {text}");
            }
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn reads_proc_figures() {
        let stat = "4242 (eci (pro) file) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 130 0 0 20 0 9 0 12345 104857600 2560 18446744073709551615";
        let status = "Name:\teci-profile\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let figures = process::Figures::parse(stat, status, limits, system).unwrap();
        assert_eq!(
            figures,
            process::Figures {
                cpu_seconds: 3.8,
                resident_bytes: Some(10_485_760.0),
                virtual_bytes: Some(104_857_600.0),
                open_fds: None,
                max_fds: Some(1_048_576.0),
                start_time_seconds: Some(1_700_000_123.45),
            }
        );
        assert_eq!(process::Figures::parse("garbage", "", "", ""), None);
    }

    #[test]
    fn rule_series_stay_bounded_by_the_profile() {
        let m = Metrics::default();
        // A family without series is not printed.
        let empty = m.encode();
        assert!(!empty.contains("eci_profile_rule_decisions"), "{empty}");
        let mut decision =
            crate::decision::Decision::skipped(crate::decision::SkipReason::NotSelected);
        decision.outcome = crate::decision::Outcome::Mutated;
        decision.applied = vec!["gpu", "batch"];
        m.rules_decided(&decision);
        m.rules_decided(&decision);
        decision.applied = vec!["batch"];
        m.rules_decided(&decision);
        let text = m.encode();
        assert!(
            text.contains(r#"eci_profile_rule_decisions_total{rule="batch",outcome="mutated"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"eci_profile_rule_decisions_total{rule="gpu",outcome="mutated"} 2"#),
            "{text}"
        );
        m.retain_rules(["batch"]);
        let text = m.encode();
        assert!(!text.contains(r#"rule="gpu""#), "{text}");
        assert!(text.contains(r#"rule="batch""#), "{text}");
        let skipped = crate::decision::Decision::skipped(crate::decision::SkipReason::OverBudget {
            rule: "batch".into(),
            namespace: "ns".into(),
            usage: "1/1 pods".into(),
        });
        m.rules_decided(&skipped);
        m.rules_decided(&crate::decision::Decision::skipped(
            crate::decision::SkipReason::NotSelected,
        ));
        let text = m.encode();
        assert!(
            text.contains(r#"eci_profile_rule_decisions_total{rule="batch",outcome="skipped"} 1"#),
            "{text}"
        );
        m.retain_rules([]);
        assert!(!m.encode().contains("eci_profile_rule_decisions_total{"));
    }

    #[test]
    fn records_watch_events_and_errors() {
        let m = Metrics::default();
        m.watch_event::<(), ()>("namespaces", &Ok(()));
        assert!(
            m.encode()
                .contains(r#"eci_profile_watch_errors_total{watch="namespaces"} 0"#)
        );
        m.watch_event::<(), ()>("namespaces", &Err(()));
        m.watch_event::<(), ()>("namespaces", &Err(()));
        let text = m.encode();
        assert!(
            text.contains(r#"eci_profile_watch_errors_total{watch="namespaces"} 2"#),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(
                    r#"eci_profile_watch_last_event_timestamp_seconds{watch="namespaces"} "#,
                )
            })
            .unwrap_or_else(|| panic!("{text}"));
        let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(seconds > 1.7e9, "{line}");
    }

    #[test]
    fn counts_refusals_and_handshake_failures() {
        let m = Metrics::default();
        m.refused("webhook", "413", "too-large");
        m.refused("webhook", "413", "too-large");
        m.handshake_failed("timeout");
        let text = m.encode();
        assert!(
            text.contains(
                r#"eci_profile_http_refusals_total{listener="webhook",status="413",reason="too-large"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"eci_profile_tls_handshake_failures_total{reason="timeout"} 1"#),
            "{text}"
        );
    }
}
