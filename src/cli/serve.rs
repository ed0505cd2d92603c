//! `eci-profile serve`: the webhook server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use eci_profile::decision::Exclusions;
use eci_profile::namespaces::{NamespaceLookup, StaticNamespaces};
use eci_profile::profile::{Profile, Severity};
use eci_profile::server::webhook::parse_go_duration;
use eci_profile::server::{self, Limits, Server, State};
use eci_profile::sources::file::{load_profile, read_namespaces};
use eci_profile::{certs, tls};

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
    /// Profile ConfigMap manifest or mounted directory, followed for changes [default: the embedded default profile]
    #[arg(long, env = "ECI_PROFILE_PROFILE_FILE", value_name = "PATH")]
    profile_file: Option<PathBuf>,
    /// Namespace manifests giving namespace labels
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
    /// Upper bound to receive and answer a request (the API server's ?timeout= may lower it)
    #[arg(long, env = "ECI_PROFILE_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    request_timeout: Duration,
    /// Time a client has to send request headers
    #[arg(long, env = "ECI_PROFILE_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = duration)]
    header_read_timeout: Duration,
    /// On SIGTERM: time still served while /readyz answers 503
    #[arg(long, env = "ECI_PROFILE_SHUTDOWN_DELAY", default_value = "2s", value_parser = duration)]
    shutdown_delay: Duration,
    /// Then: time in-flight requests get to finish
    #[arg(long, env = "ECI_PROFILE_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Log format
    #[arg(long, env = "ECI_PROFILE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 10s, 500ms or 1m30s"))
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    init_logging(args.log_format);
    tls::install_default_provider();

    let (profile, profile_source) = initial_profile(args.profile_file.as_deref())?;
    let namespaces: Arc<dyn NamespaceLookup> = match &args.namespaces_file {
        Some(path) => Arc::new(read_namespaces(path)?),
        None => Arc::new(StaticNamespaces::default()),
    };
    let (tls_cert, tls_key) = certificate_paths(&args)?;
    let exclusions = Exclusions::with_namespaces(args.exclude_namespaces.iter().cloned());
    tracing::info!(
        profile = %profile_source,
        digest = %format_args!("{:016x}", profile.digest()),
        selectors = profile.rule_count(),
        excluded = ?exclusions.namespaces().collect::<Vec<_>>(),
        "profile loaded"
    );
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        header_read_timeout: args.header_read_timeout,
        ..Limits::default()
    };
    let state = Arc::new(State::new(profile, namespaces, exclusions, limits));
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
        let server = Server::bind(options, state)
            .await
            .map_err(|e| e.to_string())?;
        server.run(shutdown).await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
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
