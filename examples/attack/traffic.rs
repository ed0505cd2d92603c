//! Ordinary and hostile traffic against a running webhook, over TLS on
//! loopback: shared by `examples/attack` (the load generator that prints
//! latencies) and `tests/budget.rs` (which asserts on them).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A webhook listener and the CA its certificate is signed by.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: TlsConnector,
}

impl Target {
    /// `addr`, trusting `ca_pem`; HTTP/1.1 only, as kube-apiserver speaks it.
    pub fn new(addr: SocketAddr, ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("a PEM certificate"))
            .expect("a CA certificate");
        let mut config = rustls::ClientConfig::builder_with_provider(eci_profile::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A TLS connection, by IP address (no SNI, as kube-apiserver).
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        self.tls.connect(name, tcp).await
    }

    /// A kept-alive HTTP/1.1 connection for ordinary requests.
    pub async fn ordinary(&self) -> std::io::Result<Ordinary> {
        let stream = self.connect().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Ordinary { sender })
    }

    /// Sends the headers of a POST declaring `body.len()` bytes and all of
    /// the body but its last byte, then waits up to `hold` for an answer:
    /// the cheapest way to make a server hold a whole body.
    pub async fn withhold_last_byte(&self, body: Bytes, hold: Duration) -> Held {
        let started = Instant::now();
        let stream = match self.connect().await {
            Ok(stream) => stream,
            Err(e) => return Held::Failed(e.to_string()),
        };
        let (mut reader, mut writer) = tokio::io::split(stream);
        let head = format!(
            "POST /mutate?timeout=30s HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let sending = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&body[..body.len() - 1]).await?;
            writer.flush().await?;
            // Keeps the connection (and the request) open until dropped.
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        });
        let answer = tokio::time::timeout(hold, async {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(status) = status_of(&head) {
                    return Ok(Some(status));
                }
            }
        })
        .await;
        sending.abort();
        match answer {
            Err(_) => Held::Open,
            Ok(Ok(Some(status))) => Held::Answered {
                status,
                after: started.elapsed(),
            },
            Ok(Ok(None)) => Held::Failed("closed without an answer".into()),
            Ok(Err(e)) => Held::Failed(e.to_string()),
        }
    }
}

/// What a client withholding its last byte got.
#[derive(Debug)]
pub enum Held {
    /// An answer came, this long after connecting.
    Answered { status: u16, after: Duration },
    /// No answer while it held the request open.
    Open,
    /// The connection failed without an answer.
    Failed(String),
}

/// The status of an HTTP/1.1 response whose head is in `head`, once complete.
fn status_of(head: &[u8]) -> Option<u16> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// A kept-alive connection sending whole requests.
pub struct Ordinary {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// An answer and how long it took.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub took: Duration,
}

impl Ordinary {
    /// Whether the connection can take another request (the server has not
    /// closed it, e.g. after an answer that said `Connection: close`).
    pub async fn usable(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// POSTs `body` to `/mutate` and reads the whole answer.
    pub async fn post(&mut self, body: Bytes) -> Result<Answer, String> {
        let started = Instant::now();
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = Request::post("/mutate?timeout=10s")
            .header("host", "webhook")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a request");
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            took: started.elapsed(),
        })
    }
}

/// `review` (an AdmissionReview request) with `count` more labels on its
/// pod: `k0000000: ""` and so on, about 14 bytes each.
pub fn with_labels(review: &[u8], count: usize) -> Bytes {
    let mut review: Value = serde_json::from_slice(review).expect("an AdmissionReview");
    let labels = review["request"]["object"]["metadata"]["labels"]
        .as_object_mut()
        .expect("a pod with labels");
    for i in 0..count {
        labels.insert(format!("{i:05x}"), Value::String(String::new()));
    }
    Bytes::from(serde_json::to_vec(&review).expect("JSON"))
}

/// The `q` quantile (0..=1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Peak and current resident memory of process `pid`, in KiB (`VmHWM`, `VmRSS`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// `eci-profile serve` in a child process, on loopback, with a generated
/// certificate, the fixtures' namespaces and the embedded profile.
pub struct Server {
    child: std::process::Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub ca_pem: String,
    /// The server's log lines (JSON).
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin serve` with `args` added and waits until it serves.
    pub fn start(bin: &std::path::Path, args: &[&str]) -> Self {
        use std::io::{BufRead as _, BufReader};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pair = eci_profile::certs::generate(&[], &["127.0.0.1".parse().expect("an IP")])
            .expect("a certificate");
        eci_profile::certs::write(dir.path(), &pair).expect("certificate files");
        let namespaces = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/namespaces.yaml"
        );
        let mut child = std::process::Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--namespaces-file", namespaces, "--shutdown-delay", "0s"])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serving = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|line| {
                log.lock().unwrap().push(line.clone());
                line.contains("\"serving\"")
            })
            .unwrap_or_else(|| panic!("the server did not start: {:?}", log.lock().unwrap()));
        // Keeps reading the log, so that the server never blocks writing it.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let serving: Value = serde_json::from_str(&serving).expect("a JSON log line");
        let addr = |field: &str| {
            serving[field]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("a listening address")
        };
        Self {
            webhook: addr("webhook"),
            admin: addr("admin"),
            child,
            ca_pem: pair.ca_pem,
            log,
            _dir: dir,
        }
    }

    pub fn target(&self) -> Target {
        Target::new(self.webhook, &self.ca_pem)
    }

    /// `VmHWM` and `VmRSS`, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.child.id()).expect("the server runs")
    }

    /// The admin listener's `/metrics`.
    pub fn metrics(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(self.admin).expect("the admin listener");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nhost: admin\r\n\r\n")
            .expect("a request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("an answer");
        text
    }

    /// A metric's value (summed over its series matching `labels`, e.g.
    /// `reason="body-budget"`), 0 when absent.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What runs next to the ordinary requests.
#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// Nothing.
    None,
    /// `connections` clients each declare a `size`-byte body and send all
    /// of it but its last byte, then hold the request open.
    HeldBodies { connections: usize, size: usize },
    /// `clients` clients each send, over and over, the ordinary review with
    /// `labels` more labels.
    Labels { clients: usize, labels: usize },
}

/// One ordinary request's fate.
pub struct Outcome {
    pub status: Option<u16>,
    pub took: Duration,
    /// The answer was the expected AdmissionReview.
    pub correct: bool,
    pub error: Option<String>,
}

/// What a run saw.
pub struct Report {
    pub ordinary: Vec<Outcome>,
    pub held: Vec<Held>,
    /// Statuses the label clients got (0: no answer).
    pub heavy: Vec<u16>,
    /// Peak resident memory of the server (`VmHWM`), in KiB.
    pub peak_kib: u64,
}

impl Report {
    /// Ordinary requests answered 200 with the expected review.
    pub fn ordinary_ok(&self) -> usize {
        self.ordinary.iter().filter(|o| o.correct).count()
    }

    /// The `q` quantile of the ordinary requests' latencies.
    pub fn ordinary_quantile(&self, q: f64) -> Duration {
        let mut took: Vec<Duration> = self.ordinary.iter().map(|o| o.took).collect();
        quantile(&mut took, q)
    }
}

/// Runs `attack` and, next to it, `connections` kept-alive clients sending
/// `body` one request after another (pausing `pause` between two) for
/// `duration`; each answer is checked against `expected`.
pub async fn run(
    server: &Server,
    attack: Attack,
    body: Bytes,
    expected: Bytes,
    connections: usize,
    pause: Duration,
    duration: Duration,
) -> Report {
    let target = server.target();
    let until = Instant::now() + duration;
    let attacker = target.clone();
    let mut held = Vec::new();
    let mut heavy = Vec::new();
    match attack {
        Attack::None => {}
        Attack::HeldBodies { connections, size } => {
            let large = Bytes::from(vec![b' '; size]);
            for _ in 0..connections {
                let (target, large) = (attacker.clone(), large.clone());
                held.push(tokio::spawn(async move {
                    target.withhold_last_byte(large, duration).await
                }));
            }
        }
        Attack::Labels { clients, labels } => {
            let large = with_labels(&body, labels);
            for _ in 0..clients {
                let (target, large) = (attacker.clone(), large.clone());
                heavy.push(tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    while Instant::now() < until {
                        let Ok(mut connection) = target.ordinary().await else {
                            statuses.push(0);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        // A connection closed after an answer is dialled again.
                        while Instant::now() < until && connection.usable().await {
                            match connection.post(large.clone()).await {
                                Ok(answer) => statuses.push(answer.status),
                                Err(_) => {
                                    statuses.push(0);
                                    break;
                                }
                            }
                        }
                    }
                    statuses
                }));
            }
        }
    }
    // On their own thread and runtime, as the API server would be on its own
    // machine: their latencies are the server's, not the attackers' queue's.
    let ordinary = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let clients: Vec<_> = (0..connections)
                .map(|_| {
                    let client = ordinary_client(
                        target.clone(),
                        body.clone(),
                        expected.clone(),
                        pause,
                        until,
                    );
                    tokio::spawn(client)
                })
                .collect();
            let mut outcomes = Vec::new();
            for client in clients {
                outcomes.extend(client.await.expect("an ordinary client"));
            }
            outcomes
        })
    });
    let ordinary = tokio::task::spawn_blocking(move || ordinary.join().expect("ordinary clients"))
        .await
        .expect("ordinary clients");
    let peak_kib = server.memory_kib().0;
    let mut held_outcomes = Vec::new();
    for h in held {
        held_outcomes.push(h.await.expect("a held request"));
    }
    let mut statuses = Vec::new();
    for h in heavy {
        statuses.extend(h.await.expect("a label client"));
    }
    Report {
        ordinary,
        held: held_outcomes,
        heavy: statuses,
        peak_kib,
    }
}

/// One kept-alive client sending `body` until `until`, pausing `pause`
/// between two requests; reconnects after a failure.
async fn ordinary_client(
    target: Target,
    body: Bytes,
    expected: Bytes,
    pause: Duration,
    until: Instant,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut connection = None;
    while Instant::now() < until {
        let started = Instant::now();
        if connection.is_none() {
            match target.ordinary().await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    outcomes.push(Outcome {
                        status: None,
                        took: started.elapsed(),
                        correct: false,
                        error: Some(format!("connect: {e}")),
                    });
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let answer = connection
            .as_mut()
            .expect("connected")
            .post(body.clone())
            .await;
        outcomes.push(match answer {
            Ok(answer) => Outcome {
                status: Some(answer.status),
                took: started.elapsed(),
                correct: answer.status == 200 && answer.body == expected,
                error: None,
            },
            Err(e) => {
                connection = None;
                Outcome {
                    status: None,
                    took: started.elapsed(),
                    correct: false,
                    error: Some(e),
                }
            }
        });
        tokio::time::sleep(pause).await;
    }
    outcomes
}
