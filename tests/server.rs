//! The server over real sockets: TLS (rustls) with a real HTTP client
//! (hyper, HTTP/1.1 and HTTP/2), certificate and profile rotation the way
//! kubelet does it, timeouts and graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{admission_fixture, fixture_namespaces, serve_command, serving_addresses};
use eci_profile::decision::Exclusions;
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use eci_profile::server::{Limits, Options, Server, State};
use eci_profile::{certs, tls};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// ---------- set-up ----------

/// Publishes `files` into `dir` the way kubelet updates a mounted volume:
/// a new `..<version>` directory, an atomic swap of the `..data` symlink,
/// and user-visible names that are symlinks through `..data`.
fn kubelet_publish(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    for (name, contents) in files {
        std::fs::write(versioned.join(name), contents).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let visible = dir.join(name);
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &visible).unwrap();
        }
    }
}

fn new_pair() -> certs::Generated {
    certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap()
}

fn publish_pair(dir: &Path, version: &str, pair: &certs::Generated) {
    kubelet_publish(
        dir,
        version,
        &[
            ("ca.crt", pair.ca_pem.as_bytes()),
            ("tls.crt", pair.cert_pem.as_bytes()),
            ("tls.key", pair.key_pem.as_bytes()),
        ],
    );
}

struct Setup {
    limits: Limits,
    profile_file: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
    /// The serving pair [default: a new one].
    pair: Option<certs::Generated>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            profile_file: None,
            client_ca: None,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(5),
            pair: None,
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    cert_dir: PathBuf,
    first_pair: certs::Generated,
    webhook: SocketAddr,
    admin: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(setup: Setup) -> Harness {
    tls::install_default_provider();
    // Server logs show up with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("eci_profile=debug")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let first_pair = setup.pair.unwrap_or_else(new_pair);
    publish_pair(&cert_dir, "v1", &first_pair);
    let profile = match &setup.profile_file {
        Some(path) => eci_profile::sources::file::load_profile(path).unwrap().0,
        None => Profile::embedded_default(),
    };
    let state = Arc::new(State::new(
        profile,
        Arc::new(fixture_namespaces()),
        Exclusions::default(),
        setup.limits,
    ));
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: cert_dir.join("tls.crt"),
        tls_key: cert_dir.join("tls.key"),
        client_ca: setup.client_ca,
        profile_file: setup.profile_file,
        shutdown_delay: setup.shutdown_delay,
        shutdown_grace: setup.shutdown_grace,
    };
    let server = Server::bind(options, state.clone()).await.unwrap();
    let (webhook, admin) = (server.webhook_addr(), server.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Harness {
        _dir: dir,
        cert_dir,
        first_pair,
        webhook,
        admin,
        state,
        stop: Some(stop),
        task,
    }
}

/// A server with these limits, otherwise as [`Setup::default`].
async fn start_limited(limits: Limits) -> Harness {
    start(Setup {
        limits,
        ..Setup::default()
    })
    .await
}

impl Harness {
    fn client(&self, http2: bool) -> Client {
        Client::new(&[&self.first_pair.ca_pem], http2, None)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        http_get(self.admin, path).await
    }
}

/// `GET path` over plain HTTP/1.1 (the admin listener).
async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

// ---------- a real client ----------

struct Client {
    config: Arc<rustls::ClientConfig>,
    http2: bool,
}

struct Answer {
    status: StatusCode,
    body: Bytes,
    alpn: Option<Vec<u8>>,
    server_cert: Vec<u8>,
}

impl Client {
    fn new(ca_pems: &[&str], http2: bool, client_cert: Option<(&str, &str)>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for pem in ca_pems {
            roots
                .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                .unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        // Every connection makes a full handshake (and so sees the current certificate).
        config.resumption = rustls::client::Resumption::disabled();
        // kube-apiserver offers only http/1.1.
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Self {
            config: Arc::new(config),
            http2,
        }
    }

    /// Connects by IP address: rustls then sends no SNI, as kube-apiserver does.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }

    /// An HTTP/1.1 connection over TLS, kept open for several requests.
    async fn http1(
        &self,
        addr: SocketAddr,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let stream = self.connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn post(&self, addr: SocketAddr, path: &str, body: Vec<u8>) -> std::io::Result<Answer> {
        let stream = self.connect(addr).await?;
        let (_, connection) = stream.get_ref();
        let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
        let server_cert = connection.peer_certificates().unwrap()[0].to_vec();
        let request = Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = if self.http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        .map_err(std::io::Error::other)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            alpn,
            server_cert,
        })
    }
}

fn expected_response(state: &State, body: &[u8]) -> Vec<u8> {
    let profile = state.profile.get();
    let namespaces = fixture_namespaces();
    let context = Context {
        profile: &profile,
        exclusions: &Exclusions::default(),
        namespaces: &namespaces,
        budgets: &eci_profile::budgets::Unlimited,
    };
    review::review(body, context).unwrap().response
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Polls `condition` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_http1_and_http2() {
    let h = start_limited(Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    })
    .await;
    for (http2, protocol) in [(false, b"http/1.1".as_slice()), (true, b"h2".as_slice())] {
        let client = h.client(http2);
        // Mutated: exactly what `check -o review` prints.
        let body = admission_fixture("create-deployment-pod");
        let a = client
            .post(h.webhook, "/mutate?timeout=5s", body.clone())
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.alpn.as_deref(), Some(protocol));
        assert_eq!(a.body.to_vec(), expected_response(&h.state, &body));
        assert_eq!(json(&a.body)["response"]["patchType"], "JSONPatch");
        // Skipped: allowed, no patch.
        let a = client
            .post(h.webhook, "/mutate", admission_fixture("create-bare-pod"))
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(json(&a.body)["response"]["allowed"], true);
        assert!(json(&a.body)["response"].get("patch").is_none());
        // Unchanged: the patched pod again.
        let mut request = json(&body);
        let patch: json_patch::Patch = {
            use base64::Engine as _;
            let first = client
                .post(h.webhook, "/mutate", body.clone())
                .await
                .unwrap();
            let b64 = json(&first.body)["response"]["patch"]
                .as_str()
                .unwrap()
                .to_string();
            serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        };
        json_patch::patch(&mut request["request"]["object"], &patch).unwrap();
        let a = client
            .post(h.webhook, "/mutate", serde_json::to_vec(&request).unwrap())
            .await
            .unwrap();
        assert!(
            json(&a.body)["response"].get("patch").is_none(),
            "unchanged"
        );
        // Malformed: 400 with a short message.
        let a = client
            .post(h.webhook, "/mutate", b"{\"kind\":".to_vec())
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&a.body).contains("not JSON"));
        let a = client
            .post(
                h.webhook,
                "/mutate",
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{}}"#
                    .to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(String::from_utf8_lossy(&a.body), "request.uid is missing\n");
        if http2 {
            // Oversize: the 139 KB large-pod request against a 64 KiB limit.
            let a = client
                .post(h.webhook, "/mutate", admission_fixture("create-large-pod"))
                .await
                .unwrap();
            assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        } else {
            // HTTP/1.1: refused on its Content-Length, before any body byte is read
            // (a client still writing the body would see the connection close).
            let mut stream = client.connect(h.webhook).await.unwrap();
            stream
                .write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
                .await
                .unwrap();
            let mut head = vec![0u8; 64];
            let n = stream.read(&mut head).await.unwrap();
            assert!(
                head[..n].starts_with(b"HTTP/1.1 413"),
                "{}",
                String::from_utf8_lossy(&head[..n])
            );
        }
        // Unknown path.
        let a = client
            .post(h.webhook, "/convert", body.clone())
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        // The validating endpoint, on the same listener and protocols: a pod
        // is none of its business, and is allowed at once.
        let a = client
            .post(h.webhook, "/validate", body.clone())
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
        let review: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(review["response"]["allowed"], true, "{review}");
    }
    let (status, metrics) = h.admin_get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(r#"eci_profile_admission_requests_total{outcome="mutated",reason=""} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"eci_profile_admission_requests_total{outcome="error",reason="too-large"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"eci_profile_admission_requests_total{outcome="skipped",reason="not-selected"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("eci_profile_certificate_expiry_timestamp_seconds "),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_serves_many_requests() {
    let h = start(Setup::default()).await;
    let client = h.client(false);
    let mut sender = client.http1(h.webhook).await;
    for _ in 0..20 {
        sender.ready().await.expect("the connection stays open");
        let request = Request::post("/mutate?timeout=5s")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(admission_fixture(
                "create-deployment-pod",
            ))))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_wait_the_idle_timeout_not_the_header_timeout() {
    let h = start_limited(Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..Limits::default()
    })
    .await;
    let client = h.client(false);
    let mut sender = client.http1(h.webhook).await;
    let call = |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        let request = Request::post("/mutate?timeout=5s")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(admission_fixture(
                "create-deployment-pod",
            ))))
            .unwrap();
        sender.send_request(request)
    };
    for _ in 0..2 {
        let response = call(&mut sender)
            .await
            .expect("the connection is still open");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        // Idle for longer than the header-read timeout.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(!sender.is_closed());
    // Past the idle timeout, the server closes the connection.
    assert!(eventually(Duration::from_secs(5), || async { sender.is_closed() }).await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_gets_405_and_plain_http_gets_nothing() {
    let h = start(Setup::default()).await;
    let client = h.client(false);
    let mut sender = client.http1(h.webhook).await;
    let request = Request::get("/mutate")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        sender.send_request(request).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    let mut tcp = TcpStream::connect(h.webhook).await.unwrap();
    tcp.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buffer)).await;
    assert!(
        !buffer.starts_with(b"HTTP/"),
        "served without TLS: {:?}",
        String::from_utf8_lossy(&buffer)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let h = start_limited(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let client = h.client(false);
    // Headers that never finish: the connection is closed.
    let mut stream = client.connect(h.webhook).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "connection still open after 5 s");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A body that never arrives: the API server's ?timeout= bounds the wait.
    let mut stream = client.connect(h.webhook).await.unwrap();
    stream
        .write_all(b"POST /mutate?timeout=500ms HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"kind\"")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("answered in time")
        .unwrap();
    let head = String::from_utf8_lossy(&buffer[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_configured() {
    tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    // A client CA and a client certificate signed by it.
    let client_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client CA");
    let client_ca = rcgen::CertifiedIssuer::self_signed(ca_params, client_ca_key).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["kube-apiserver".to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &client_ca).unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, client_ca.pem()).unwrap();

    let h = start(Setup {
        client_ca: Some(ca_path),
        ..Setup::default()
    })
    .await;
    let anonymous = h.client(false);
    assert!(
        anonymous
            .post(h.webhook, "/mutate", admission_fixture("create-bare-pod"))
            .await
            .is_err(),
        "a client without certificate must be refused"
    );
    let authenticated = Client::new(
        &[&h.first_pair.ca_pem],
        false,
        Some((&leaf_cert.pem(), &leaf_key.serialize_pem())),
    );
    let a = authenticated
        .post(h.webhook, "/mutate", admission_fixture("create-bare-pod"))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_by_symlink_swap_loses_no_request() {
    let h = start(Setup::default()).await;
    let second = new_pair();
    // The client trusts both CAs, as the API server's caBundle does during a rotation.
    let client = Arc::new(Client::new(
        &[&h.first_pair.ca_pem, &second.ca_pem],
        false,
        None,
    ));
    let first_der = CertificateDer::from_pem_slice(h.first_pair.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let second_der = CertificateDer::from_pem_slice(second.cert_pem.as_bytes())
        .unwrap()
        .to_vec();

    // Requests flow on new connections the whole time.
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (flow_stop, mut flow_stopped) = oneshot::channel::<()>();
    let flow = {
        let (client, sent, failed, addr) =
            (client.clone(), sent.clone(), failed.clone(), h.webhook);
        tokio::spawn(async move {
            loop {
                if flow_stopped.try_recv().is_ok() {
                    break;
                }
                match client
                    .post(addr, "/mutate", admission_fixture("create-deployment-pod"))
                    .await
                {
                    Ok(a) if a.status == StatusCode::OK => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let served = |expected: Vec<u8>| {
        let client = client.clone();
        let addr = h.webhook;
        move || {
            let (client, expected) = (client.clone(), expected.clone());
            async move {
                client
                    .post(addr, "/mutate", admission_fixture("create-bare-pod"))
                    .await
                    .is_ok_and(|a| a.server_cert == expected)
            }
        }
    };
    assert!(served(first_der.clone())().await);
    publish_pair(&h.cert_dir, "v2", &second);
    assert!(
        eventually(Duration::from_secs(10), served(second_der.clone())).await,
        "the new certificate is served within seconds"
    );
    // A broken pair (key of another certificate) is refused; the second stays.
    let third = new_pair();
    kubelet_publish(
        &h.cert_dir,
        "v3",
        &[
            ("ca.crt", third.ca_pem.as_bytes()),
            ("tls.crt", third.cert_pem.as_bytes()),
            ("tls.key", second.key_pem.as_bytes()),
        ],
    );
    let admin = h.admin;
    let refused = eventually(Duration::from_secs(10), || async move {
        http_get(admin, "/metrics")
            .await
            .1
            .contains(r#"eci_profile_certificate_reloads_total{result="failure"} 1"#)
    })
    .await;
    assert!(refused, "the broken pair is refused");
    assert!(
        served(second_der)().await,
        "the last good certificate stays in use"
    );

    let _ = flow_stop.send(());
    flow.await.unwrap();
    assert!(
        sent.load(Ordering::SeqCst) > 5,
        "requests flowed during the rotation"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_reload_from_a_mounted_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("profile");
    std::fs::create_dir_all(&mount).unwrap();
    let none = br#"[{"name": "nobody", "objectSelector": {"matchLabels": {"never": "true"}}}]"#;
    kubelet_publish(&mount, "v1", &[("selectors", none), ("vpcId", b"vpc-1")]);
    let h = start(Setup {
        profile_file: Some(mount.clone()),
        ..Setup::default()
    })
    .await;
    let client = Arc::new(h.client(false));
    let rules_for_bare_pod = {
        let client = client.clone();
        let addr = h.webhook;
        move || {
            let client = client.clone();
            async move {
                let a = client
                    .post(addr, "/mutate", admission_fixture("create-bare-pod"))
                    .await
                    .unwrap();
                let response = json(&a.body)["response"].clone();
                response.get("patch").and_then(Value::as_str).map(|p| {
                    use base64::Engine as _;
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(p).unwrap())
                        .unwrap()
                })
            }
        }
    };
    assert_eq!(rules_for_bare_pod().await, None, "v1 selects nothing");

    let bare = br#"[{"name": "bare-pods", "objectSelector": {"matchLabels": {"run": "bare"}}}]"#;
    kubelet_publish(&mount, "v2", &[("selectors", bare), ("vpcId", b"vpc-1")]);
    let check = rules_for_bare_pod.clone();
    assert!(
        eventually(Duration::from_secs(10), move || {
            let check = check.clone();
            async move { check().await.is_some_and(|p| p.contains("bare-pods")) }
        })
        .await,
        "the new profile applies to the next requests"
    );
    // An invalid profile is rejected: the last good one stays.
    kubelet_publish(
        &mount,
        "v3",
        &[
            (
                "selectors",
                b"[{\"name\": \"broken\", \"policy\": \"sometimes\"}]",
            ),
            ("vpcId", b"vpc-1"),
        ],
    );
    let state = h.state.clone();
    assert!(
        eventually(Duration::from_secs(10), move || {
            let state = state.clone();
            async move {
                state
                    .metrics
                    .encode()
                    .contains(r#"eci_profile_profile_reloads_total{result="failure"} 1"#)
            }
        })
        .await,
        "the invalid profile is refused"
    );
    assert!(
        rules_for_bare_pod()
            .await
            .is_some_and(|p| p.contains("bare-pods"))
    );
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        metrics.contains("eci_profile_profile_generation 2"),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_graceful_shutdown() {
    let h = start(Setup {
        shutdown_delay: Duration::from_millis(1500),
        ..Setup::default()
    })
    .await;
    assert_eq!(
        h.admin_get("/healthz").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(
        h.admin_get("/readyz").await,
        (StatusCode::OK, "ready\n".to_string())
    );
    let client = h.client(false);
    let (webhook, admin) = (h.webhook, h.admin);
    let Harness {
        stop, task, _dir, ..
    } = h;
    let _ = stop.unwrap().send(());
    // During the delay: not ready, but still answering.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        http_get(admin, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_string()
        )
    );
    let a = client
        .post(
            webhook,
            "/mutate",
            admission_fixture("create-deployment-pod"),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    // Then it stops by itself and the port is closed.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(webhook).await.is_err());
}

// ---------- drain, HTTP/2 and admin timeouts, hostile clients ----------

/// What the clients of a rolling restart saw.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    failed: AtomicUsize,
    redials: AtomicUsize,
    /// Requests not written before their connection closed, or HTTP/2
    /// streams refused unprocessed by a GOAWAY: sent again.
    retried: AtomicUsize,
}

/// Whether `error` is an HTTP/2 stream the server refused, unprocessed, by
/// GOAWAY (its id above the GOAWAY's last stream id) or REFUSED_STREAM.
fn refused_by_goaway(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)
                    || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = e.source();
    }
    false
}

/// One client of the webhook's Service, as kube-apiserver is: it keeps a
/// connection, sends requests on it (back to back, or `think` apart), and
/// dials the Service again (whichever replica `endpoints` names) when the
/// server said `Connection: close`, sent GOAWAY, or closed the connection
/// while it was idle. A request written and not answered is a lost admission.
async fn service_client(
    client: Arc<Client>,
    endpoints: tokio::sync::watch::Receiver<SocketAddr>,
    think: Duration,
    running: Arc<std::sync::atomic::AtomicBool>,
    tally: Arc<Tally>,
) {
    let body = Bytes::from(admission_fixture("create-deployment-pod"));
    let request = || {
        Request::post("/mutate?timeout=5s")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()
    };
    while running.load(Ordering::Relaxed) {
        let addr = *endpoints.borrow();
        let Ok(stream) = client.connect(addr).await else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tally.redials.fetch_add(1, Ordering::Relaxed);
        let Some(mut sender) = Sender::handshake(stream, client.http2).await else {
            continue;
        };
        // Closed by the server while idle, or after a GOAWAY (no new stream
        // may be opened), before we wrote: dial again.
        while running.load(Ordering::Relaxed) && sender.ready().await {
            if !tally.answered(sender.send(request()).await).await {
                break;
            }
            tokio::time::sleep(think).await;
        }
    }
}

/// What a client gets back for a request it tried to send.
type Sent =
    Result<hyper::Response<Incoming>, hyper::client::conn::TrySendError<Request<Full<Bytes>>>>;

/// A client connection, either protocol.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn handshake(stream: TlsStream<TcpStream>, http2: bool) -> Option<Self> {
        let io = TokioIo::new(stream);
        if http2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .ok()?;
            tokio::spawn(conn);
            Some(Sender::Http2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            Some(Sender::Http1(sender))
        }
    }

    async fn ready(&mut self) -> bool {
        match self {
            Sender::Http1(s) => s.ready().await.is_ok(),
            Sender::Http2(s) => s.ready().await.is_ok(),
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Sent {
        match self {
            Sender::Http1(s) => s.try_send_request(request).await,
            Sender::Http2(s) => s.try_send_request(request).await,
        }
    }
}

impl Tally {
    /// Counts what `sent` came to; whether its connection may be used again.
    async fn answered(&self, sent: Sent) -> bool {
        let response = match sent {
            Ok(response) => response,
            Err(mut e) => {
                // Never written (the connection closed first), or a stream
                // refused unprocessed by GOAWAY (RFC 9113 section 8.7):
                // clients send it again, on a new connection. Anything else
                // is a lost admission.
                if e.take_message().is_some() || refused_by_goaway(e.error()) {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("lost: {:?}", e.error());
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
                return false;
            }
        };
        let close = response
            .headers()
            .get("connection")
            .is_some_and(|v| v == "close");
        let ok = response.status() == StatusCode::OK;
        match response.into_body().collect().await.map(|b| b.to_bytes()) {
            Ok(body) if ok && json(&body)["response"]["allowed"] == true => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                !close
            }
            other => {
                eprintln!("failed: status {ok}, {other:?}");
                self.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A `serve` process, as a replica of the Deployment.
struct Replica {
    process: std::process::Child,
    webhook: SocketAddr,
}

impl Replica {
    /// Starts `serve` with the pair in `certs` and waits until it serves.
    fn start(certs: &Path, delay: Duration, grace: Duration) -> Self {
        use std::io::{BufRead as _, BufReader};
        let mut process = serve_command(&certs.join("tls.crt"), &certs.join("tls.key"))
            .args(["--shutdown-delay", &format!("{}ms", delay.as_millis())])
            .args(["--shutdown-grace", &format!("{}ms", grace.as_millis())])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
        let (webhook, _) = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| serving_addresses(&line))
            .expect("the replica serves");
        // Keep reading, so that logging never blocks the replica.
        std::thread::spawn(move || lines.for_each(drop));
        Self { process, webhook }
    }

    /// Sends SIGTERM, as kubelet does.
    fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exited(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.process.kill();
                panic!("still running {limit:?} after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Rolling restarts under load, with `serve` processes: a new replica
/// starts, the old one gets SIGTERM and leaves the endpoints a moment later
/// (the endpoints controller lags kubelet), while clients keep sending on
/// kept-alive connections. No request may be lost, and each old replica must
/// exit 0 within its shutdown delay plus grace. `ROLLING_RESTARTS` sets how
/// many (default 3).
async fn rolling_restarts_lose_no_request(http2: bool) {
    let restarts: usize = std::env::var("ROLLING_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (delay, grace) = (Duration::from_millis(400), Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let pair = new_pair();
    certs::write_to(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &pair,
    )
    .unwrap();
    let client = Arc::new(Client::new(&[&pair.ca_pem], http2, None));
    let mut current = Replica::start(dir.path(), delay, grace);
    let (endpoints, following) = tokio::sync::watch::channel(current.webhook);
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = [0, 0, 0, 3, 15]
        .into_iter()
        .map(|think_ms| {
            tokio::spawn(service_client(
                client.clone(),
                following.clone(),
                Duration::from_millis(think_ms),
                running.clone(),
                tally.clone(),
            ))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = Replica::start(dir.path(), delay, grace);
        let terminated = Instant::now();
        current.terminate();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = endpoints.send(next.webhook);
        let status = current.exited(delay + grace + Duration::from_secs(5)).await;
        assert!(status.success(), "{status:?}");
        slowest = slowest.max(terminated.elapsed());
        current = next;
    }
    running.store(false, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    current.terminate();
    assert!(
        current
            .exited(delay + grace + Duration::from_secs(5))
            .await
            .success()
    );
    let (answered, failed) = (
        tally.answered.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "{restarts} rolling restarts ({}): {answered} answered, {failed} lost, \
         {} sent again (never written, or refused unprocessed by GOAWAY), {} connections; \
         slowest exit {slowest:?} after SIGTERM",
        if http2 { "HTTP/2" } else { "HTTP/1.1" },
        tally.retried.load(Ordering::Relaxed),
        tally.redials.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "requests lost across {restarts} restarts");
    assert!(slowest < delay + grace, "exited {slowest:?} after SIGTERM");
    assert!(answered > 10 * restarts, "too little traffic: {answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_lose_no_http1_request() {
    rolling_restarts_lose_no_request(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_lose_no_http2_request() {
    rolling_restarts_lose_no_request(true).await;
}

/// Reads `stream` until the server closes it; how long that took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut sink = vec![0u8; 16 * 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {limit:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_time_out_like_http1() {
    let h = start_limited(Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(800),
        ..Limits::default()
    })
    .await;
    let client = h.client(true);
    // No preface after the handshake: closed at the header-read timeout.
    let mut silent = client.connect(h.webhook).await.unwrap();
    assert_eq!(silent.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    closed_within(&mut silent, Duration::from_secs(3)).await;
    // A connection that made a request, then stays idle (PINGs do not count):
    // closed gracefully after the idle timeout.
    let stream = client.connect(h.webhook).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::post("/mutate")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(admission_fixture("create-bare-pod"))))
        .unwrap();
    assert_eq!(
        sender.send_request(request).await.unwrap().status(),
        StatusCode::OK
    );
    let idle_from = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed after the idle timeout")
        .unwrap()
        .unwrap();
    assert!(idle_from.elapsed() >= Duration::from_millis(800));
    let (_, metrics) = h.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            r#"eci_profile_http_refusals_total{listener="webhook",status="none",reason="header-timeout"} 1"#
        ),
        "{metrics}"
    );
    h.shutdown().await;
}

/// An HTTP/2 frame header: length, type, flags, stream.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_peers_that_stop_answering_pings_are_dropped() {
    let h = start_limited(Limits {
        request_timeout: Duration::from_secs(60),
        http2_ping: (Duration::from_millis(200), Duration::from_millis(300)),
        ..Limits::default()
    })
    .await;
    let mut stream = h.client(true).connect(h.webhook).await.unwrap();
    // Preface, SETTINGS, and a request whose body never comes (a stream in
    // flight, so no idle timeout); then never a PING acknowledgement.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[]));
    // HPACK: :method POST (3), :scheme https (7), :path /mutate (literal, name 4),
    // :authority x (literal, name 1).
    let mut block = vec![0x83, 0x87, 0x04, 7];
    block.extend(b"/mutate");
    block.extend([0x01, 1, b'x']);
    hello.extend(h2_frame(0x1, 0x4, 1, &block));
    stream.write_all(&hello).await.unwrap();
    stream.flush().await.unwrap();
    let took = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_bounded() {
    let h = start(Setup::default()).await;
    let stream = h.client(true).connect(h.webhook).await.unwrap();
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // The server's SETTINGS arrive with the first exchange.
    let request = hyper::Request::get("https://127.0.0.1/healthz")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap();
    assert_eq!(
        client.current_max_send_streams(),
        eci_profile::server::listener::HTTP2_MAX_STREAMS as usize
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_has_timeouts_and_a_bounded_drain() {
    let h = start_limited(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    // A half-sent request is cut off at the header-read timeout.
    let mut half = TcpStream::connect(h.admin).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_within(&mut half, Duration::from_secs(3)).await;
    h.shutdown().await;

    // With timeouts longer than the grace period, the drain still ends.
    let h = start(Setup {
        limits: Limits {
            header_read_timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        shutdown_delay: Duration::from_millis(100),
        shutdown_grace: Duration::from_millis(500),
        ..Setup::default()
    })
    .await;
    let mut half = TcpStream::connect(h.admin).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // And a kept-alive scrape connection that is told to close while draining.
    let stream = TcpStream::connect(h.admin).await.unwrap();
    let (mut scrape, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let Harness {
        stop, task, _dir, ..
    } = h;
    let _ = stop.unwrap().send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let request = Request::get("/readyz")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = scrape.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["connection"], "close");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the drain is bounded by the grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    closed_within(&mut half, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_gets_its_413_while_still_being_sent() {
    let h = start_limited(Limits {
        max_body_bytes: 1024 * 1024,
        ..Limits::default()
    })
    .await;
    // 6 MiB: more than the socket buffers take at first, so the client is
    // still sending when the answer comes, as kube-apiserver's client would
    // be; and less than the server drains while it lingers, so the client
    // always gets to read the answer (beyond, the close resets the
    // connection: a client sending that much more than it was allowed
    // loses the answer, as with Go's net/http).
    let size = eci_profile::server::timeouts::LINGER_BYTES - (2 << 20);
    let big = Bytes::from(vec![b' '; size]);
    for declared in [true, false] {
        let stream = h.client(false).connect(h.webhook).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = if declared {
            let request = Request::post("/mutate")
                .header("host", "127.0.0.1")
                .body(Full::new(big.clone()))
                .unwrap();
            sender.send_request(request).await
        } else {
            // Chunked: no Content-Length, refused once 1 MiB has been read.
            let chunks = futures_util::stream::iter(
                big.chunks(64 * 1024)
                    .map(|c| {
                        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::copy_from_slice(c)))
                    })
                    .collect::<Vec<_>>(),
            );
            let request = Request::post("/mutate")
                .header("host", "127.0.0.1")
                .body(http_body_util::StreamBody::new(chunks))
                .unwrap();
            let (mut chunked, conn) = hyper::client::conn::http1::handshake(TokioIo::new(
                h.client(false).connect(h.webhook).await.unwrap(),
            ))
            .await
            .unwrap();
            tokio::spawn(conn);
            chunked.send_request(request).await
        };
        let response = response.unwrap_or_else(|e| panic!("declared={declared}: {e:?}"));
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["connection"], "close");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failed_handshakes_are_counted() {
    let h = start_limited(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let client = h.client(false);
    // Plain HTTP on the TLS port: a failed handshake.
    let mut plain = TcpStream::connect(h.webhook).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut plain, Duration::from_secs(3)).await;
    drop(plain);
    // 404 and 405 on both ports.
    let a = client
        .post(h.webhook, "/nowhere", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let (status, _) = h.admin_get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut sender = client.http1(h.webhook).await;
    let request = Request::get("/mutate")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    drop(sender);
    let mut admin = TcpStream::connect(h.admin).await.unwrap();
    admin
        .write_all(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    admin.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Not HTTP, and a request head over 64 KiB: hyper answers 400 and 431.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    for (sent, status) in [
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), "400"),
        (huge.into_bytes(), "431"),
    ] {
        let mut stream = client.connect(h.webhook).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let head = String::from_utf8_lossy(&answer);
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
    }
    // Over the connection bound: closed at once.
    let first = client.connect(h.webhook).await.unwrap();
    let second = client.connect(h.webhook).await.unwrap();
    let mut third = TcpStream::connect(h.webhook).await.unwrap();
    closed_within(&mut third, Duration::from_secs(3)).await;
    drop((first, second));
    let (_, metrics) = h.admin_get("/metrics").await;
    for line in [
        r#"eci_profile_tls_handshake_failures_total{reason="protocol"} 1"#,
        r#"eci_profile_http_refusals_total{listener="webhook",status="404",reason="not-found"} 1"#,
        r#"eci_profile_http_refusals_total{listener="admin",status="404",reason="not-found"} 1"#,
        r#"eci_profile_http_refusals_total{listener="webhook",status="405",reason="method-not-allowed"} 1"#,
        r#"eci_profile_http_refusals_total{listener="admin",status="405",reason="method-not-allowed"} 1"#,
        r#"eci_profile_http_refusals_total{listener="webhook",status="400",reason="malformed-http"} 1"#,
        r#"eci_profile_http_refusals_total{listener="webhook",status="431",reason="headers-too-large"} 1"#,
        r#"eci_profile_http_refusals_total{listener="webhook",status="none",reason="too-many-connections"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    h.shutdown().await;
}
