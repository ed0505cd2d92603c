//! The server over real sockets: TLS (rustls) with a real HTTP client
//! (hyper, HTTP/1.1 and HTTP/2), certificate and profile rotation the way
//! kubelet does it, timeouts and graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{admission_fixture, fixture_namespaces};
use eci_profile::decision::Exclusions;
use eci_profile::profile::Profile;
use eci_profile::review::{self, Context};
use eci_profile::server::{Limits, Options, Server, State};
use eci_profile::{certs, tls};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
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
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            profile_file: None,
            client_ca: None,
            shutdown_delay: Duration::ZERO,
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
    let first_pair = new_pair();
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
        shutdown_grace: Duration::from_secs(5),
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
    let h = start(Setup {
        limits: Limits {
            max_body_bytes: 64 * 1024,
            ..Limits::default()
        },
        ..Setup::default()
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
            .post(h.webhook, "/validate", body.clone())
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::NOT_FOUND);
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
    let h = start(Setup {
        limits: Limits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            ..Limits::default()
        },
        ..Setup::default()
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
    let h = start(Setup {
        limits: Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Setup::default()
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
