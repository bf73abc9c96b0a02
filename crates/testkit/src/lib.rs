//! What every crate's integration tests share: the real gateway started on 127.0.0.1:0
//! ([`Gateway`]), clients that speak HTTP/1.1, h2c and raw bytes, peers (a tiny HTTP server for
//! identity-provider roles, a throwaway nginx, an HTTP/2 upstream that misbehaves at the frame
//! level in [`h2peer`]), and [`eventually`], the one way a test waits for a condition.
//!
//! Tests that need an outside program skip only when an environment variable says so
//! (`BRIDGEHEAD_SKIP_NGINX=1`, …), never silently.

pub mod h2peer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bridgehead_gateway::access_log::Sink;
use bridgehead_gateway::reload::Reloader;
use bridgehead_gateway::{App, AppOptions, Listeners};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub reloader: Reloader,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway with `yaml` (a state.url into a temp dir is added when absent).
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with(yaml, false).await
    }

    /// The config written to a temp dir (with a state file there unless it names one), loaded.
    fn config(yaml: &str) -> (tempfile::TempDir, PathBuf, bridgehead_config::LoadedConfig) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = yaml.to_owned();
        if !text.contains("\nstate:") && !text.starts_with("state:") {
            text.push_str(&format!("\nstate:\n  url: sqlite://{}/state.db\n", dir.path().display()));
        }
        let config_path = dir.path().join("bridgehead.yaml");
        std::fs::write(&config_path, &text).unwrap();
        let loaded = bridgehead_config::load(&config_path)
            .unwrap_or_else(|d| panic!("test config invalid:\n{d}\n{text}"));
        (dir, config_path, loaded)
    }

    pub async fn start_with(yaml: &str, watch_config: bool) -> Gateway {
        let (dir, config_path, loaded) = Self::config(yaml);
        let logs = Arc::new(Mutex::new(Vec::new()));
        let opts = AppOptions {
            config_path: Some(config_path.clone()),
            access_log: Sink::Memory(logs.clone()),
            watch_config,
            sighup: false,
        };
        // `server.workers` unset means one worker here, whatever the machine's CPUs.
        let listeners = Listeners::ephemeral(loaded.config.server.workers.unwrap_or(1)).unwrap();
        let app = App::build(loaded, listeners, opts).await.unwrap();
        let (addr, admin, reloader) = (app.data_addr(), app.admin_addr(), app.reloader());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Gateway { addr, admin, logs, reloader, config_path, dir, stop: Some(tx), task: Some(task) }
    }

    /// Builds a gateway that must fail to start; returns the error it gave.
    pub async fn start_error(yaml: &str) -> String {
        let (_dir, config_path, loaded) = Self::config(yaml);
        let opts = AppOptions {
            config_path: Some(config_path),
            access_log: Sink::Memory(Arc::default()),
            watch_config: false,
            sighup: false,
        };
        let listeners = Listeners::ephemeral(1).unwrap();
        match App::build(loaded, listeners, opts).await {
            Ok(_) => panic!("the gateway started:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        String::from_utf8_lossy(&get(&self.admin_url("/metrics")).await.body).into_owned()
    }

    /// Signals shutdown and waits until the app has drained.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.finished().await;
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn finished(&mut self) {
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t).await.expect("gateway stops").unwrap();
        }
    }

    /// Access log lines written so far, parsed.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A config with one upstream `u` at `upstream` and one catch-all route `all`.
pub fn simple_config(upstream: &str) -> String {
    format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{upstream}\" }}]\n    timeouts: {{ connect: 1s, request: 2s }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n"
    )
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

/// A response with its body collected.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with `status`, and a detail containing `detail`.
    pub fn assert_problem(&self, status: u16, detail: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), "application/problem+json");
        let p = self.json();
        assert_eq!(p["status"], status);
        for key in ["type", "title", "detail", "request_id"] {
            assert!(p[key].is_string(), "problem lacks {key}: {p}");
        }
        assert!(p["detail"].as_str().unwrap().contains(detail), "detail {:?} lacks {detail:?}", p["detail"]);
        assert_eq!(p["request_id"], self.header("x-request-id"));
        p
    }
}

pub async fn send(c: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Got {
    let res: Response<hyper::body::Incoming> = c.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got { status: parts.status.as_u16(), headers: parts.headers, body }
}

pub async fn get(url: &str) -> Got {
    send(&client(), Request::get(url).body(empty()).unwrap()).await
}

/// Sends raw bytes and reads until the server closes (or 10 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` every 20 ms until it returns true, failing after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request body of `len` zero bytes in 64 KiB chunks, never held in memory at once.
pub struct ZeroBody {
    pub remaining: u64,
}

static ZEROS: [u8; 65536] = [0; 65536];

impl Body for ZeroBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZEROS.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n as usize])))))
    }
}

/// A `VmRSS`/`VmHWM`-style field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Peak resident memory of this process in KiB.
pub fn hwm_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// A tiny HTTP server for identity-provider roles, answering with `handler`.
pub struct Peer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Peer {
    pub async fn start<F>(handler: F) -> Peer
    where
        F: Fn(Request<Bytes>) -> Response<Bytes> + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let handler = handler.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            let res = handler(Request::from_parts(parts, body));
                            Ok::<_, Infallible>(res.map(Full::new))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Peer { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub fn json_response(status: u16, v: &serde_json::Value) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(v.to_string()))
        .unwrap()
}

/// Reads JSON log lines until one has `msg` as its message; returns that line.
pub fn wait_log(lines: &mut impl Iterator<Item = std::io::Result<String>>, msg: &str) -> serde_json::Value {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["fields"]["message"] == msg
        {
            return v;
        }
    }
    panic!("process ended before logging {msg:?}");
}

/// A child process killed when dropped.
pub struct Killed(pub std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends signal `sig` to `child`.
pub fn signal(child: &std::process::Child, sig: i32) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Skips the tests that need nginx when set to 1.
pub const NGINX_SKIP_ENV: &str = "BRIDGEHEAD_SKIP_NGINX";

/// A throwaway nginx (Debian's `nginx` package) on a free port in a temp dir, in the foreground
/// and without a master process, killed when dropped. `server` is the body of its one `server`
/// block (`listen` is added).
pub struct TestNginx {
    pub addr: SocketAddr,
    child: Killed,
    _dir: tempfile::TempDir,
}

impl TestNginx {
    /// `None` only when `BRIDGEHEAD_SKIP_NGINX=1`; a missing nginx otherwise fails the test with
    /// what to install, so tests never skip silently.
    pub fn start(server: &str) -> Option<TestNginx> {
        if std::env::var(NGINX_SKIP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("skipped: {NGINX_SKIP_ENV}=1");
            return None;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin = std::env::split_paths(&path)
            .map(|d| d.join("nginx"))
            .chain(["/usr/sbin/nginx".into(), "/usr/local/sbin/nginx".into()])
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("nginx is not installed: apt-get install nginx (scripts/test does), or set {NGINX_SKIP_ENV}=1 to skip these tests")
            });
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let d = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 128; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 default_type text/plain;\n  server {{\n    listen 127.0.0.1:{port};\n{server}\n  }}\n}}\n"
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let mut child = Killed(
                std::process::Command::new(&bin)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-c")
                    .arg(dir.path().join("nginx.conf"))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display())),
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.0.try_wait().unwrap() {
                    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break; // another process took the port: try a new one
                    }
                    panic!("nginx exited ({status}): {log}");
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Some(TestNginx { addr, child, _dir: dir });
                }
                assert!(std::time::Instant::now() < deadline, "nginx did not listen on {addr} within 10 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("nginx found no free port in 5 attempts");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether nginx is still running.
    pub fn running(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }
}

/// A raw HTTP/1.1 response: status code, head (lower-cased) and body.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn parse(text: &str) -> RawResponse {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        RawResponse { status, head: head.to_ascii_lowercase(), body: body.to_owned() }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one raw request (`Connection: close` is the caller's) and parses the answer.
pub async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    RawResponse::parse(&raw(addr, request.as_bytes()).await)
}
