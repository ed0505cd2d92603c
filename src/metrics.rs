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
    /// `mutated`, `unchanged`, `skipped` or `error`.
    pub outcome: &'static str,
    /// The skip reason's code, or the error kind; empty otherwise.
    pub reason: &'static str,
}

/// Labels of the reload counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `profile_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileInfoLabels {
    /// The profile's digest, in hex.
    pub digest: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub profile_reloads: Family<ResultLabels, Counter>,
    pub profile_generation: Gauge,
    pub profile_selectors: Gauge,
    pub profile_info: Family<ProfileInfoLabels, Gauge>,
    pub certificate_reloads: Family<ResultLabels, Counter>,
    pub certificate_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eci_profile");
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
        Self {
            registry,
            requests,
            request_duration,
            profile_reloads,
            profile_generation,
            profile_selectors,
            profile_info,
            certificate_reloads,
            certificate_expiry,
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

    /// Records a profile load attempt; on success, the new profile's figures.
    pub fn profile_loaded(&self, loaded: Option<(u64, usize)>) {
        let result = if loaded.is_some() {
            "success"
        } else {
            "failure"
        };
        self.profile_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some((digest, selectors)) = loaded {
            self.profile_generation.inc();
            self.profile_selectors.set(selectors as i64);
            self.profile_info.clear();
            self.profile_info
                .get_or_create(&ProfileInfoLabels {
                    digest: format!("{digest:016x}"),
                })
                .set(1);
        }
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

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
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
        assert!(text.ends_with("# EOF\n"));
    }
}
