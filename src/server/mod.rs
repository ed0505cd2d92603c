//! The HTTPS webhook server and its plain-HTTP admin listener.
//!
//! - [`webhook::router`]: `POST /mutate`, AdmissionReview in and out.
//! - [`admin::router`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`Server`]: binds both, serves the webhook over TLS only, follows the
//!   certificate and profile files, and drains on shutdown.

pub mod admin;
pub mod budget;
pub mod cluster;
pub mod listener;
pub mod timeouts;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;

use self::listener::{Listener, Stage};
use crate::budgets::Ledger;
use crate::decision::Exclusions;
use crate::metrics::Metrics;
use crate::namespaces::NamespaceLookup;
use crate::profile::Profile;
use crate::published::Published;
use crate::sources::assembly::Assembly;
use crate::sources::watch::{self, Changes};
use crate::tls::{self, CertificateStore, Reload};

/// Limits that protect the server from slow or large requests.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Request body bytes held at once, by all requests together (see
    /// [`budget`]); a quarter is kept for bodies up to `large_body_bytes`.
    pub max_buffered_bytes: usize,
    /// Bodies over this size are large: held within three quarters of
    /// `max_buffered_bytes` and decided on threads of their own.
    pub large_body_bytes: usize,
    /// Large bodies decided at once.
    pub max_large_decisions: usize,
    /// Upper bound for reading a request body and answering it (the API
    /// server's `?timeout=` lowers it further).
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers, from its first byte
    /// (or from the handshake, on a new connection).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open between requests (HTTP/2: with no
    /// stream in flight): longer than kube-apiserver keeps idle connections
    /// (90 s), so that it is the one to close them.
    pub idle_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Open webhook connections beyond this are closed as soon as accepted.
    pub max_connections: usize,
    /// HTTP/2: how often the peer is PINGed, and how long its answer may
    /// take before the connection is closed as dead.
    pub http2_ping: (Duration, Duration),
}

impl Limits {
    /// What large bodies may hold together: `max_buffered_bytes` less the
    /// quarter kept for small ones.
    pub fn large_bodies_share(&self) -> usize {
        self.max_buffered_bytes - self.max_buffered_bytes / 4
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_buffered_bytes: 32 * 1024 * 1024,
            large_body_bytes: 64 * 1024,
            max_large_decisions: 1,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 512,
            http2_ping: (Duration::from_secs(30), Duration::from_secs(10)),
        }
    }
}

/// Open connections the admin listener (probes, metrics scrapes) accepts.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A condition readiness waits for, with what to say while it is false.
type Condition = (&'static str, Box<dyn Fn() -> bool + Send + Sync>);

/// What `/readyz` reports on: the listener serves its certificate, every
/// source has synced, and the server is not shutting down.
#[derive(Default)]
pub struct Readiness {
    conditions: RwLock<Vec<Condition>>,
    certificate_served: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Adds a condition; `waiting` is reported while it is false (e.g. "profile not synced").
    pub fn require(
        &self,
        waiting: &'static str,
        condition: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        self.conditions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((waiting, Box::new(condition)));
    }

    /// Marks the webhook listener as serving its certificate.
    pub fn set_certificate_served(&self) {
        self.certificate_served.store(true, Ordering::Release);
    }

    /// Marks the server as shutting down.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else what is missing.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        let conditions = self.conditions.read().unwrap_or_else(|e| e.into_inner());
        if let Some((waiting, _)) = conditions.iter().find(|(_, holds)| !holds()) {
            return Err(waiting);
        }
        if !self.certificate_served.load(Ordering::Acquire) {
            return Err("the webhook listener is not serving yet");
        }
        Ok(())
    }
}

/// Everything the request path reads, shared by every connection.
pub struct State {
    pub profile: Arc<Published<Profile>>,
    /// Where the cluster's sources put their parts of `profile`.
    pub assembly: Arc<Assembly>,
    pub namespaces: Arc<dyn NamespaceLookup>,
    pub exclusions: Exclusions,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub limits: Limits,
    /// The profile ConfigMap's namespace and name, which `/validate` checks.
    pub profile_configmap: (String, String),
    /// What each namespace holds on virtual nodes, against the budgets.
    pub ledger: Arc<Mutex<Ledger>>,
}

impl State {
    /// State serving `profile` (sources that must sync first add readiness conditions).
    pub fn new(
        profile: Profile,
        namespaces: Arc<dyn NamespaceLookup>,
        exclusions: Exclusions,
        limits: Limits,
    ) -> Self {
        let metrics = Metrics::default();
        metrics.profile_loaded(Some((profile.digest(), profile.rule_count())));
        let readiness = Readiness::default();
        let profile = Arc::new(Published::new(profile));
        let metrics = Arc::new(metrics);
        Self {
            assembly: Arc::new(Assembly::new(profile.clone(), metrics.clone())),
            profile,
            namespaces,
            exclusions,
            metrics,
            readiness,
            limits,
            profile_configmap: (
                crate::profile::DEFAULT_CONFIGMAP.0.to_string(),
                crate::profile::DEFAULT_CONFIGMAP.1.to_string(),
            ),
            ledger: Arc::default(),
        }
    }
}

impl State {
    /// Puts the budgets' usage into the metrics (at each scrape: the
    /// namespaces holding something change with every pod).
    pub fn record_budgets(&self) {
        let profile = self.profile.get();
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let usage = crate::budgets::usage(&profile, &ledger, |rule, namespace| {
            let labels = self.namespaces.labels(namespace);
            crate::decision::selects_namespace(
                rule,
                crate::selector::NamespaceLabels {
                    name: namespace,
                    labels: labels.as_deref(),
                },
            )
        });
        let (tracked, reservations) = ledger.len();
        drop(ledger);
        self.metrics.budgets(&usage, profile.budgets().count());
        self.metrics.sent_pods_tracked.set(tracked as i64);
        self.metrics.budget_reservations.set(reservations as i64);
    }
}

/// How the server starts and stops.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// A profile file or directory to follow; `None` keeps the profile the state started with.
    pub profile_file: Option<PathBuf>,
    /// After shutdown is asked: time still served while readiness reports 503,
    /// so that endpoints stop sending traffic.
    pub shutdown_delay: Duration,
    /// After that: time in-flight requests get to finish.
    pub shutdown_grace: Duration,
}

/// A bound server, not yet serving.
pub struct Server {
    options: Options,
    state: Arc<State>,
    certificates: Arc<CertificateStore>,
    tls: Arc<rustls::ServerConfig>,
    webhook: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Loads the certificate and binds both listeners.
    pub async fn bind(options: Options, state: Arc<State>) -> anyhow::Result<Self> {
        let certificates = Arc::new(
            CertificateStore::open(&options.tls_cert, &options.tls_key)
                .map_err(|e| anyhow::anyhow!("{e} (--tls-cert, --tls-key)"))?,
        );
        state
            .metrics
            .certificate_loaded(true, certificates.expiry());
        let tls = Arc::new(tls::server_config(
            certificates.clone(),
            options.client_ca.as_deref(),
        )?);
        let webhook = TcpListener::bind(options.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (--listen)", options.listen))?;
        let admin = TcpListener::bind(options.admin_listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (--admin-listen)",
                options.admin_listen
            )
        })?;
        Ok(Self {
            options,
            state,
            certificates,
            tls,
            webhook,
            admin,
        })
    }

    /// Where the webhook listens (HTTPS).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook.local_addr().expect("bound")
    }

    /// Where the admin listener listens (HTTP).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound")
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503 and
    /// every connection is told to close after its current response (see
    /// [`Stage`]); both listeners keep answering for the shutdown delay, then
    /// stop accepting, and in-flight requests get the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            options,
            state,
            certificates,
            tls,
            webhook,
            admin,
        } = self;
        let mut background = tokio::task::JoinSet::new();
        background.spawn(follow_certificates(certificates, state.metrics.clone()));
        if let Some(path) = options.profile_file.clone() {
            background.spawn(crate::sources::file::follow_profile(
                path,
                state.profile.clone(),
                state.metrics.clone(),
            ));
        }

        let (webhook_addr, admin_addr) = (webhook.local_addr()?, admin.local_addr()?);
        let (stage, following) = tokio::sync::watch::channel(Stage::Serving);
        let webhook = Listener {
            name: "webhook",
            tcp: webhook,
            tls: Some(tls),
            max_connections: state.limits.max_connections,
        };
        let admin = Listener {
            name: "admin",
            tcp: admin,
            tls: None,
            max_connections: ADMIN_MAX_CONNECTIONS,
        };
        let serve = |listener, router| {
            tokio::spawn(listener::serve(
                listener,
                router,
                state.limits,
                state.metrics.clone(),
                following.clone(),
                options.shutdown_grace,
            ))
        };
        let webhook_task = serve(webhook, webhook::router(state.clone()));
        let admin_task = serve(admin, admin::router(state.clone()));
        state.readiness.set_certificate_served();
        tracing::info!(webhook = %webhook_addr, admin = %admin_addr, "serving");

        shutdown.await;
        state.readiness.set_draining();
        let _ = stage.send(Stage::Draining);
        tracing::info!(
            delay = ?options.shutdown_delay,
            "shutting down: readiness is now 503, connections are told to close"
        );
        tokio::time::sleep(options.shutdown_delay).await;
        let _ = stage.send(Stage::Closing);
        let (webhook_ended, admin_ended) = tokio::join!(webhook_task, admin_task);
        webhook_ended?;
        admin_ended?;
        background.abort_all();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Re-reads the certificate files whenever they may have changed (the watch
/// is set up before this returns, so no change made after it is missed).
fn follow_certificates(
    store: Arc<CertificateStore>,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl Future<Output = ()> + Send + 'static {
    let [cert, key] = store.paths();
    let mut changes = Changes::watch(&[cert, key], watch::DEBOUNCE, watch::POLL);
    async move {
        loop {
            changes.next().await;
            match store.reload() {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Replaced) => {
                    metrics.certificate_loaded(true, store.expiry());
                    tracing::info!(expiry = store.expiry(), "serving certificate replaced");
                }
                Err(e) => {
                    metrics.certificate_loaded(false, None);
                    tracing::error!(error = %e, "new certificate refused; the current one stays in use");
                }
            }
        }
    }
}
