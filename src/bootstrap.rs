//! Self-signed bootstrap: with no cert-manager, each replica generates its
//! own CA and serving pair at start and adds the CA to the `caBundle` of its
//! MutatingWebhookConfiguration.
//!
//! The bundle is merged, not replaced, so that every running replica stays
//! trusted (two replicas, or old and new during a rollout); it keeps the
//! [`KEEP_CAS`] most recent CAs. Updates carry the resourceVersion read and
//! are retried on conflict.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;

/// How many CAs a bundle keeps (newest last).
pub const KEEP_CAS: usize = 4;
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

/// `bundle` with `ca_pem` added last (once), keeping the newest [`KEEP_CAS`] certificates.
pub fn merge_bundle(bundle: &str, ca_pem: &str) -> String {
    let ca = ca_pem.trim();
    let mut certificates: Vec<&str> = split_pem(bundle).into_iter().filter(|c| *c != ca).collect();
    certificates.push(ca);
    let skip = certificates.len().saturating_sub(KEEP_CAS);
    let mut merged = certificates[skip..].join("\n");
    merged.push('\n');
    merged
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

/// Adds `ca_pem` to the caBundle of every webhook of the configuration `name`.
pub async fn install_ca(client: kube::Client, name: &str, ca_pem: &str) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut config = api.get(name).await?;
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            let current = webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default();
            let merged = merge_bundle(&current, ca_pem);
            if merged != current {
                webhook.client_config.ca_bundle = Some(ByteString(merged.into_bytes()));
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(
                    webhook_config = name,
                    "caBundle updated with this replica's CA"
                );
                return Ok(());
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
        for n in 2..=6 {
            bundle = merge_bundle(&bundle, &cert(n));
        }
        assert_eq!(split_pem(&bundle), [cert(3), cert(4), cert(5), cert(6)]);
        // Re-adding an old CA moves it last.
        let again = merge_bundle(&bundle, &cert(4));
        assert_eq!(split_pem(&again), [cert(3), cert(5), cert(6), cert(4)]);
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
