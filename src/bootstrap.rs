//! Self-signed bootstrap: with no cert-manager, each replica generates its
//! own CA and serving pair at start and adds the CA to the `caBundle` of its
//! MutatingWebhookConfiguration (and of its ValidatingWebhookConfiguration,
//! when installed: both are [`WebhookConfiguration`]s).
//!
//! The bundle is merged, not replaced, so that every running replica stays
//! trusted (two replicas, or old and new during a rollout); it keeps the
//! [`KEEP_CAS`] most recently added CAs. Updates carry the resourceVersion
//! read and are retried on conflict.
//!
//! Restarts of other replicas can push a running replica's CA out of the
//! bundle, so each replica keeps its own CA there for as long as it runs
//! ([`keep_ca`]): it watches that one configuration and adds its CA again
//! whenever it is missing, and checks every [`RECHECK`] as well.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::PostParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Resource};

use crate::metrics::Metrics;

/// How many CAs a bundle keeps (the most recently added last). More than the
/// replicas that run at once during a rollout (2 + 1 surge in the shipped
/// manifests), so that replicas starting one after another push out only the
/// CAs of replicas that are gone; a running replica whose CA was pushed out
/// anyway adds it again within seconds ([`keep_ca`]). With more replicas
/// running at once than this, they would push each other out in turn (at
/// most once per [`READD_INTERVAL`] each).
pub const KEEP_CAS: usize = 8;
/// How often a replica checks its CA is in the bundle, watch or no watch.
pub const RECHECK: Duration = Duration::from_secs(300);
/// Least time between two additions of its CA by one replica.
pub const READD_INTERVAL: Duration = Duration::from_secs(10);
/// Wait before trying again after a failed check or update.
const RETRY: Duration = Duration::from_secs(10);
const ATTEMPTS: usize = 5;

/// The service DNS names a serving certificate needs for `namespace/name`.
pub fn service_dns_names(namespace: &str, name: &str) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// `bundle` with `ca_pem` in it: unchanged when it already is, else with it
/// added last, keeping the newest [`KEEP_CAS`] certificates. (A CA already
/// there keeps its place, so that replicas never write to move themselves.)
pub fn merge_bundle(bundle: &str, ca_pem: &str) -> String {
    let ca = ca_pem.trim();
    let mut certificates = split_pem(bundle);
    if certificates.contains(&ca) {
        return bundle.to_string();
    }
    certificates.push(ca);
    let skip = certificates.len().saturating_sub(KEEP_CAS);
    let mut merged = certificates[skip..].join("\n");
    merged.push('\n');
    merged
}

/// A mutating or validating webhook configuration: a list of webhooks, each
/// with a client configuration whose caBundle is kept.
pub trait WebhookConfiguration:
    Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Every webhook's client configuration.
    fn client_configs(&self) -> Vec<&WebhookClientConfig>;
    /// Every webhook's client configuration, to change.
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

/// Whether every webhook of `config` trusts `ca_pem`.
pub fn trusts(config: &impl WebhookConfiguration, ca_pem: &str) -> bool {
    let ca = ca_pem.trim();
    config
        .client_configs()
        .into_iter()
        .all(|client| split_pem(&bundle_of(client)).contains(&ca))
}

/// A webhook's caBundle, as text (empty when it has none).
fn bundle_of(client: &WebhookClientConfig) -> String {
    client
        .ca_bundle
        .as_ref()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

fn split_pem(bundle: &str) -> Vec<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(rest[start..stop].trim());
        rest = &rest[stop..];
    }
    out
}

/// Adds `ca_pem` to the caBundle of every webhook of the configuration `name` (of kind `K`).
pub async fn install_ca<K: WebhookConfiguration>(
    client: kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    ensure_ca(&Api::<K>::all(client), name, ca_pem)
        .await
        .map(|_| ())
}

/// Reads the configuration `name` (get) and, when a webhook's caBundle lacks
/// `ca_pem`, writes it back with it (update); whether it wrote.
async fn ensure_ca<K: WebhookConfiguration>(
    api: &Api<K>,
    name: &str,
    ca_pem: &str,
) -> Result<bool, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut config = api.get(name).await?;
        let mut changed = false;
        for client in config.client_configs_mut() {
            let current = bundle_of(client);
            let merged = merge_bundle(&current, ca_pem);
            if merged != current {
                client.ca_bundle = Some(ByteString(merged.into_bytes()));
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(
                    webhook_config = name,
                    "caBundle updated with this replica's CA"
                );
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                tracing::debug!(
                    webhook_config = name,
                    "caBundle update conflicted; retrying"
                );
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Keeps `ca_pem` in the caBundle of the configuration `name` for ever: a
/// watch of that one object (field selector `metadata.name`, retried with
/// backoff) adds it again whenever an event shows it missing, and it is
/// checked every `recheck` ([`RECHECK`]) as well. Each addition is counted
/// in `ca_bundle_updates_total`, by result.
pub async fn keep_ca<K: WebhookConfiguration>(
    client: kube::Client,
    name: String,
    ca_pem: String,
    metrics: Arc<Metrics>,
    recheck: Duration,
) {
    let api: Api<K> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api.clone(), config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut check = tokio::time::interval(recheck);
    check.reset();
    let mut last_added: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(WatchEvent::Apply(config) | WatchEvent::InitApply(config))) => {
                    if trusts(&config, &ca_pem) {
                        continue;
                    }
                    tracing::warn!(webhook_config = %name, "this replica's CA is missing from the caBundle; adding it again");
                }
                Some(Ok(WatchEvent::Delete(_))) => {
                    tracing::warn!(webhook_config = %name, "the webhook configuration was deleted");
                    continue;
                }
                Some(Ok(WatchEvent::Init | WatchEvent::InitDone)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(webhook_config = %name, error = %e, "webhook configuration watch failed; retrying");
                    continue;
                }
                None => return,
            },
            _ = check.tick() => {}
        }
        if let Some(at) = last_added {
            tokio::time::sleep_until(at + READD_INTERVAL).await;
        }
        match ensure_ca(&api, &name, &ca_pem).await {
            Ok(false) => {}
            Ok(true) => {
                last_added = Some(tokio::time::Instant::now());
                metrics.ca_bundle_updated(true);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                // Uninstalled, or not created yet: a watch event brings it back.
                tracing::warn!(webhook_config = %name, "the webhook configuration does not exist");
            }
            Err(e) => {
                metrics.ca_bundle_updated(false);
                tracing::error!(webhook_config = %name, error = %e, "cannot add this replica's CA to the caBundle; trying again in {RETRY:?}");
                check.reset_after(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: usize) -> String {
        format!("-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----")
    }

    #[test]
    fn merging_adds_once_and_keeps_the_newest() {
        let one = merge_bundle("", &cert(1));
        assert_eq!(one, format!("{}\n", cert(1)));
        assert_eq!(merge_bundle(&one, &cert(1)), one, "idempotent");
        let mut bundle = one;
        for n in 2..=KEEP_CAS + 2 {
            bundle = merge_bundle(&bundle, &cert(n));
        }
        let newest: Vec<String> = (3..=KEEP_CAS + 2).map(cert).collect();
        assert_eq!(split_pem(&bundle), newest);
        // A CA already there keeps its place: nothing to write.
        assert_eq!(merge_bundle(&bundle, &cert(4)), bundle);
        // One pushed out comes back last, pushing out the oldest.
        let again = merge_bundle(&bundle, &cert(1));
        assert_eq!(split_pem(&again)[..KEEP_CAS - 1], newest[1..]);
        assert_eq!(split_pem(&again)[KEEP_CAS - 1], cert(1));
    }

    #[test]
    fn dns_names_of_a_service() {
        assert_eq!(
            service_dns_names("eci-profile-system", "eci-profile"),
            [
                "eci-profile",
                "eci-profile.eci-profile-system",
                "eci-profile.eci-profile-system.svc",
                "eci-profile.eci-profile-system.svc.cluster.local"
            ]
        );
    }
}
