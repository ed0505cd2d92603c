//! `eci-profile serve`: the webhook server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::{NamespaceLookup, StaticNamespaces};
use eci_profile::profile::{self, Profile, Severity};
use eci_profile::server::webhook::parse_go_duration;
use eci_profile::server::{self, Limits, Server, State};
use eci_profile::sources::cluster::NamespaceCache;
use eci_profile::sources::file::{load_profile, read_namespaces};
use eci_profile::sources::pods::ScaleIn;
use eci_profile::{bootstrap, certs, tls};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};

use super::logging::{self, LogFormat};

/// Where a first `serve` without certificate files writes a development pair.
const DEFAULT_CERT_DIR: &str = "certs";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener
    #[arg(long, env = "ECI_PROFILE_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/healthz, /readyz, /metrics)
    #[arg(
        long,
        env = "ECI_PROFILE_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    admin_listen: SocketAddr,
    /// Serving certificate (PEM chain) [default: certs/tls.crt, generated with the key on first start when both are missing]
    #[arg(
        long,
        env = "ECI_PROFILE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// Serving certificate's private key (PEM) [default: certs/tls.key]
    #[arg(
        long,
        env = "ECI_PROFILE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM)
    #[arg(long, env = "ECI_PROFILE_CLIENT_CA", value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Profile manifest (the ConfigMap and/or Selector objects) or mounted ConfigMap directory, followed for changes [default: the embedded default profile]
    #[arg(long, env = "ECI_PROFILE_PROFILE_FILE", value_name = "PATH")]
    profile_file: Option<PathBuf>,
    /// Profile ConfigMap to watch in the cluster [default: kube-system/eci-profile when in a cluster or given --kubeconfig]
    #[arg(long, env = "ECI_PROFILE_PROFILE_CONFIGMAP", value_name = "NAMESPACE/NAME", conflicts_with = "profile_file", value_parser = namespaced_name)]
    profile_configmap: Option<(String, String)>,
    /// Kubeconfig to reach the cluster with [default: in-cluster service account]
    #[arg(long, env = "ECI_PROFILE_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Self-signed bootstrap: generate a CA and serving pair at start (into the
    /// --tls-cert/--tls-key paths) and add the CA to the caBundle of the
    /// MutatingWebhookConfiguration of this name (and of the ValidatingWebhookConfiguration, if any)
    #[arg(long, env = "ECI_PROFILE_WEBHOOK_CONFIG", value_name = "NAME")]
    webhook_config: Option<String>,
    /// The Service the API server calls, for the bootstrap certificate's DNS names
    #[arg(long, env = "ECI_PROFILE_WEBHOOK_SERVICE", value_name = "NAMESPACE/NAME", default_value = "eci-profile-system/eci-profile", value_parser = namespaced_name)]
    webhook_service: (String, String),
    /// This replica's name, reported in Events (set from the downward API)
    #[arg(long, env = "ECI_PROFILE_POD_NAME", value_name = "NAME")]
    pod_name: Option<String>,
    /// Namespace manifests giving namespace labels [default in a cluster: watched]
    #[arg(long, env = "ECI_PROFILE_NAMESPACES_FILE", value_name = "FILE")]
    namespaces_file: Option<PathBuf>,
    /// Also leave pods in this namespace alone (repeatable; comma-separated in the environment)
    #[arg(
        long = "exclude-namespace",
        env = "ECI_PROFILE_EXCLUDE_NAMESPACE",
        value_name = "NS",
        value_delimiter = ','
    )]
    exclude_namespaces: Vec<String>,
    /// Largest accepted request body, in bytes
    #[arg(long, env = "ECI_PROFILE_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Request body bytes held at once by all requests together; a quarter is kept for bodies up to --large-body-bytes, and a request that does not fit gets 503
    #[arg(long, env = "ECI_PROFILE_MAX_BUFFERED_BYTES", default_value_t = Limits::default().max_buffered_bytes)]
    max_buffered_bytes: usize,
    /// Bodies over this size are large: held within three quarters of --max-buffered-bytes and decided off the request workers
    #[arg(long, env = "ECI_PROFILE_LARGE_BODY_BYTES", default_value_t = Limits::default().large_body_bytes)]
    large_body_bytes: usize,
    /// Large bodies decided at once; others wait up to 1 s, then get 503
    #[arg(long, env = "ECI_PROFILE_MAX_LARGE_DECISIONS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    max_large_decisions: u16,
    /// Upper bound to receive and answer a request (the API server's ?timeout= may lower it)
    #[arg(long, env = "ECI_PROFILE_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    request_timeout: Duration,
    /// Time a client has to send request headers, from their first byte
    #[arg(long, env = "ECI_PROFILE_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = duration)]
    header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request (HTTP/2: with no stream in flight)
    #[arg(long, env = "ECI_PROFILE_IDLE_TIMEOUT", default_value = "120s", value_parser = duration)]
    idle_timeout: Duration,
    /// Open webhook connections beyond this are closed as soon as accepted
    #[arg(long, env = "ECI_PROFILE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// On SIGTERM: time still served while /readyz answers 503
    #[arg(long, env = "ECI_PROFILE_SHUTDOWN_DELAY", default_value = "2s", value_parser = duration)]
    shutdown_delay: Duration,
    /// Then: time in-flight requests get to finish
    #[arg(long, env = "ECI_PROFILE_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Scale-in order: pods a rule sent that bind to a virtual node get the pod deletion cost --pod-deletion-cost, so that ReplicaSets remove them first (needs `patch` on pods: the chart's scaleInOrder.enabled, or the kustomize component scale-in-order)
    #[arg(long, env = "ECI_PROFILE_SCALE_IN_ORDER")]
    scale_in_order: bool,
    /// With --scale-in-order: the deletion cost given (pods without one count as 0; lower goes first)
    #[arg(long, env = "ECI_PROFILE_POD_DELETION_COST", default_value_t = -1000, allow_negative_numbers = true)]
    pod_deletion_cost: i32,
    /// Log format: text, or json (one flat JSON object a line)
    #[arg(long, env = "ECI_PROFILE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// What to log: a level (trace, debug, info, warn, error, off) or a filter such as info,eci_profile=debug; when given it wins over RUST_LOG, which applies otherwise [default: info]
    #[arg(long, env = "ECI_PROFILE_LOG_LEVEL", value_name = "LEVEL|FILTER")]
    log_level: Option<String>,
}

pub(super) fn namespaced_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

pub(super) fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 10s, 500ms or 1m30s"))
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    logging::init(args.log_format, logging::filter(args.log_level.as_deref())?);
    tls::install_default_provider();
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_buffered_bytes: args.max_buffered_bytes,
        large_body_bytes: args.large_body_bytes,
        max_large_decisions: args.max_large_decisions.into(),
        request_timeout: args.request_timeout,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        ..Limits::default()
    };
    if limits.max_body_bytes > limits.large_bodies_share() {
        return Err(format!(
            "--max-buffered-bytes {} cannot hold a body of --max-body-bytes {}: large bodies may use three quarters of it",
            limits.max_buffered_bytes, limits.max_body_bytes
        ));
    }

    let in_cluster = args.kubeconfig.is_some()
        || args.profile_configmap.is_some()
        || args.webhook_config.is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let configmap = match (&args.profile_file, &args.profile_configmap) {
        (None, Some(cm)) => Some(cm.clone()),
        (None, None) if in_cluster => {
            let (ns, name) = profile::DEFAULT_CONFIGMAP;
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    };
    let (profile, profile_source) = match &configmap {
        // Served once the ConfigMap has synced (readiness waits for it).
        Some((ns, name)) => (Profile::empty(), format!("configmap {ns}/{name}")),
        None => initial_profile(args.profile_file.as_deref())
            .map_err(|e| format!("{e} (--profile-file)"))?,
    };
    let (tls_cert, tls_key) = match &args.webhook_config {
        // Generated below, once the cluster can be reached.
        Some(_) => (
            args.tls_cert
                .clone()
                .unwrap_or_else(|| Path::new(DEFAULT_CERT_DIR).join(certs::CERT_FILE)),
            args.tls_key
                .clone()
                .unwrap_or_else(|| Path::new(DEFAULT_CERT_DIR).join(certs::KEY_FILE)),
        ),
        None => certificate_paths(&args)?,
    };
    let exclusions = Exclusions::with_namespaces(args.exclude_namespaces.iter().cloned());
    server::budget::tune_allocator(&limits);
    let options = server::Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_cert,
        tls_key,
        client_ca: args.client_ca.clone(),
        profile_file: args.profile_file.clone(),
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        // Handlers first: a SIGTERM right after start must drain, not kill.
        let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        let client = match in_cluster {
            true => Some(kube_client(args.kubeconfig.as_deref(), None).await?),
            false => None,
        };
        let mut own_ca = None;
        if let (Some(name), Some(client)) = (&args.webhook_config, &client) {
            let (namespace, service) = &args.webhook_service;
            let generated = certs::generate(&bootstrap::service_dns_names(namespace, service), &[])
                .map_err(|e| format!("cannot generate a certificate: {e}"))?;
            certs::write_to(&options.tls_cert, &options.tls_key, &generated)
                .map_err(|e| format!("cannot write the bootstrap certificate: {e}"))?;
            bootstrap::install_ca::<MutatingWebhookConfiguration>(
                client.clone(),
                name,
                &generated.ca_pem,
            )
            .await
            .map_err(|e| {
                format!("cannot add the CA to MutatingWebhookConfiguration {name}: {e}")
            })?;
            // The validating configuration is optional (the chart can leave it out).
            let validating = match bootstrap::install_ca::<ValidatingWebhookConfiguration>(
                client.clone(),
                name,
                &generated.ca_pem,
            )
            .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(webhook_config = %name, error = %e, "cannot add the CA to the ValidatingWebhookConfiguration: Selectors and the profile are not checked when applied");
                    false
                }
            };
            own_ca = Some((client.clone(), name.clone(), generated.ca_pem, validating));
        }
        let (namespaces, namespace_cache): (Arc<dyn NamespaceLookup>, _) =
            match (&args.namespaces_file, &client) {
                (Some(path), _) => (
                    Arc::new(read_namespaces(path).map_err(|e| format!("{e} (--namespaces-file)"))?),
                    None,
                ),
                (None, Some(client)) => {
                    let cache = Arc::new(NamespaceCache::new(client.clone()));
                    (cache.clone(), Some(cache))
                }
                (None, None) => (Arc::new(StaticNamespaces::default()), None),
            };
        tracing::info!(
            profile = %profile_source,
            digest = %format_args!("{:016x}", profile.digest()),
            selectors = profile.rule_count(),
            excluded = ?exclusions.namespaces().collect::<Vec<_>>(),
            "starting"
        );
        let mut state = State::new(profile, namespaces, exclusions, limits);
        if let Some(configmap) = &configmap {
            state.profile_configmap = configmap.clone();
        }
        let state = Arc::new(state);
        if let Some((client, name, ca, validating)) = own_ca {
            let metrics = state.metrics.clone();
            if validating {
                tokio::spawn(bootstrap::keep_ca::<ValidatingWebhookConfiguration>(
                    client.clone(),
                    name.clone(),
                    ca.clone(),
                    metrics.clone(),
                    bootstrap::RECHECK,
                ));
            }
            tokio::spawn(bootstrap::keep_ca::<MutatingWebhookConfiguration>(
                client,
                name,
                ca,
                metrics,
                bootstrap::RECHECK,
            ));
        }
        if let Some(cache) = namespace_cache {
            server::cluster::follow_namespaces(&state, cache);
        }
        if let (Some((ns, name)), Some(client)) = (&configmap, &client) {
            server::cluster::follow_profile_configmap(
                &state,
                client.clone(),
                ns,
                name,
                args.pod_name.clone(),
            );
            server::cluster::follow_selectors(&state, client.clone(), args.pod_name.clone());
        }
        if let Some(client) = client {
            let scale_in = args.scale_in_order.then_some(ScaleIn {
                deletion_cost: args.pod_deletion_cost,
            });
            server::cluster::follow_sent_pods(&state, client, scale_in);
        }
        let server = Server::bind(options, state)
            .await
            .map_err(|e| e.to_string())?;
        server.run(shutdown).await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A client from `kubeconfig` (its `context`, else its current context),
/// else in-cluster configuration (or the usual kubeconfig).
pub(super) async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, String> {
    client_of(kube_config(kubeconfig, context).await?)
}

/// The configuration [`kube_client`] makes its client from.
pub(super) async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, String> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e} (--kubeconfig)", path.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: context.map(str::to_string),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| format!("{}: {e} (--kubeconfig)", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?,
    })
}

/// A client from `config`.
pub(super) fn client_of(config: kube::Config) -> Result<kube::Client, String> {
    kube::Client::try_from(config).map_err(|e| format!("cannot create the Kubernetes client: {e}"))
}

/// The profile to start with; a profile file with errors stops the start.
fn initial_profile(path: Option<&Path>) -> Result<(Profile, String), String> {
    let Some(path) = path else {
        return Ok((Profile::embedded_default(), "embedded default".to_string()));
    };
    let (profile, diagnostics) = load_profile(path)?;
    for d in diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
    {
        tracing::warn!("{d}");
    }
    Ok((profile, path.display().to_string()))
}

/// The certificate files; with no flags and no files, a development pair
/// is generated into `certs/`.
fn certificate_paths(args: &ServeArgs) -> Result<(PathBuf, PathBuf), String> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok((cert.clone(), key.clone()));
    }
    let dir = Path::new(DEFAULT_CERT_DIR);
    let (cert, key) = (dir.join(certs::CERT_FILE), dir.join(certs::KEY_FILE));
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => {
            let generated = certs::generate(
                &["localhost".into()],
                &["127.0.0.1".parse().expect("an IP")],
            )
            .map_err(|e| format!("cannot generate a certificate: {e}"))?;
            let ca = certs::write(dir, &generated)
                .map_err(|e| format!("cannot write certificates into {}: {e}", dir.display()))?;
            tracing::info!(ca = %ca.display(), "generated a development CA and serving certificate (localhost, 127.0.0.1)");
            eprintln!(
                "eci-profile: generated {} and {}; use {} as caBundle (base64 -w0 {})",
                cert.display(),
                key.display(),
                ca.display(),
                ca.display()
            );
        }
        _ => {
            return Err(format!(
                "only one of {} and {} exists: give both with --tls-cert and --tls-key, or remove the other",
                cert.display(),
                key.display()
            ));
        }
    }
    Ok((cert, key))
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
