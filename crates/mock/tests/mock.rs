//! The mock served for real on 127.0.0.1:0, driven by hyper clients.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bridgehead_mock::{MockOptions, MockServer};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestBody = BoxBody<Bytes, Infallible>;

async fn start(opts: MockOptions) -> MockServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::serve(listener, opts)
}

fn http1() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

fn empty() -> TestBody {
    Empty::new().boxed()
}

fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).boxed()
}

/// `len` bytes of `y`, produced 64 KiB at a time, with no length announced.
struct Upload {
    remaining: u64,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 64 * 1024] = [b'y'; 64 * 1024];
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(client: &Client<HttpConnector, TestBody>, request: Request<TestBody>) -> Answer {
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(server: &MockServer, path: &str) -> Answer {
    let request = Request::get(format!("{}{path}", server.url())).body(empty()).unwrap();
    send(&http1(), request).await
}

#[tokio::test]
async fn echoes_method_path_query_headers_and_body() {
    let server = start(MockOptions::default()).await;
    let request = Request::post(format!("{}/orders/7?expand=items&x=%20", server.url()))
        .header("X-Repeated", "one")
        .header("x-repeated", "two")
        .header("x-single", "  spaced value")
        .body(full("hello"))
        .unwrap();
    let answer = send(&http1(), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("server"), Some("bridgehead-mock"));
    let echo = answer.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["query"], "expand=items&x=%20");
    assert_eq!(echo["headers"]["x-repeated"], json!(["one", "two"]));
    assert_eq!(echo["headers"]["x-single"], "spaced value");
    assert_eq!(echo["headers"]["content-length"], "5");
    assert_eq!(echo["body"], "hello");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body_truncated"], false);
    let keys: Vec<_> = echo.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 7, "method path query headers body body_len body_truncated: {keys:?}");

    let echo = get(&server, "/").await.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["query"], Value::Null);
    assert_eq!(echo["body"], "");
}

#[tokio::test]
async fn fixed_routes_answer_exact_then_longest_prefix() {
    let server = start(MockOptions {
        fixed: [
            "/health=200",
            "/orders/*=404:{\"error\":\"no such order\"}",
            "/orders/7=200:{\"id\":7}",
            "/text/*=503:down for maintenance",
        ]
        .iter()
        .map(|spec| spec.parse().unwrap())
        .collect(),
        ..MockOptions::default()
    })
    .await;

    let health = get(&server, "/health").await;
    assert_eq!((health.status, &health.body[..]), (StatusCode::OK, &b""[..]));
    // A query does not change the path matched.
    let seven = get(&server, "/orders/7?x=1").await;
    assert_eq!(seven.status, StatusCode::OK);
    assert_eq!(seven.header("content-type"), Some("application/json"));
    assert_eq!(seven.json(), json!({"id": 7}));
    let eight = get(&server, "/orders/8").await;
    assert_eq!(eight.status, StatusCode::NOT_FOUND);
    assert_eq!(eight.json(), json!({"error": "no such order"}));
    let text = get(&server, "/text/a/b").await;
    assert_eq!(text.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(text.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(&text.body[..], b"down for maintenance");
    assert_eq!(text.header("server"), Some("bridgehead-mock"));
    // Not covered: echo; "/orders" is not under the prefix "/orders/".
    assert_eq!(get(&server, "/orders").await.json()["path"], "/orders");
}

#[tokio::test]
async fn fail_rate_one_always_fails_with_problem_and_retry_after() {
    let server = start(MockOptions {
        fail_rate: 1.0,
        fail_status: 429,
        retry_after: Some(2),
        fixed: vec!["/health=200".parse().unwrap()],
        ..MockOptions::default()
    })
    .await;
    for path in ["/", "/health", "/anything?x=1"] {
        let answer = get(&server, path).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(answer.header("retry-after"), Some("2"));
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        assert_eq!(
            answer.json(),
            json!({
                "type": "about:blank",
                "title": "injected failure",
                "status": 429,
                "detail": "bridgehead mock injected this failure (--fail-rate)",
            })
        );
    }
    // The recording is exempt from failures, and failed requests are recorded.
    let listed = get(&server, "/__mock/requests").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json().as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn fail_rate_zero_never_fails_and_no_retry_after_by_default() {
    let server = start(MockOptions::default()).await;
    let client = http1();
    for _ in 0..100 {
        let request = Request::get(server.url()).body(empty()).unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let failing = start(MockOptions { fail_rate: 1.0, ..MockOptions::default() }).await;
    let answer = get(&failing, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), None);
}

#[tokio::test]
async fn start_refuses_invalid_options() {
    let error =
        MockServer::start(MockOptions { fail_rate: 1.5, ..MockOptions::default() }).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("fail_rate 1.5"), "{error}");

    let server = MockServer::start(MockOptions::default()).await.unwrap();
    assert!(server.addr().ip().is_loopback());
    assert_ne!(server.addr().port(), 0);
    assert_eq!(server.url(), format!("http://{}", server.addr()));
}

#[tokio::test]
async fn records_requests_in_a_ring_and_clears() {
    let server = start(MockOptions { record_limit: 3, ..MockOptions::default() }).await;
    let client = http1();
    for i in 0..5 {
        let request = Request::put(format!("{}/item/{i}?v={i}", server.url()))
            .header("x-test", i.to_string())
            .body(full(format!("body {i}")))
            .unwrap();
        assert_eq!(send(&client, request).await.status, StatusCode::OK);
    }
    assert_eq!(server.request_count(), 5);
    let recorded = server.requests();
    let paths: Vec<_> = recorded.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/item/2", "/item/3", "/item/4"]);
    let last = &recorded[2];
    assert_eq!(last.method, "PUT");
    assert_eq!(last.query.as_deref(), Some("v=4"));
    assert!(last.headers.contains(&("x-test".into(), "4".into())));
    assert_eq!((last.body.as_str(), last.body_len), ("body 4", 6));

    // GET /__mock/requests lists the same, and is neither recorded nor counted.
    let listed = get(&server, "/__mock/requests").await;
    assert_eq!(listed.header("content-type"), Some("application/json"));
    assert_eq!(listed.json(), serde_json::to_value(&recorded).unwrap());
    assert_eq!(server.request_count(), 5);

    let wrong =
        send(&client, Request::post(format!("{}/__mock/requests", server.url())).body(empty()).unwrap())
            .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("GET, DELETE"));

    let cleared =
        send(&client, Request::delete(format!("{}/__mock/requests", server.url())).body(empty()).unwrap())
            .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(server.requests().is_empty());
    assert_eq!(get(&server, "/__mock/requests").await.json(), json!([]));

    get(&server, "/again").await;
    assert_eq!(server.requests().len(), 1);
    server.clear();
    assert!(server.requests().is_empty());
    assert_eq!(server.request_count(), 6, "clearing keeps the count");
}

#[tokio::test]
async fn counts_a_large_streamed_upload_and_keeps_only_the_head() {
    const LEN: u64 = 20 * 1024 * 1024;
    let server = start(MockOptions::default()).await;
    for client in [http1(), h2c()] {
        let request = Request::post(format!("{}/upload", server.url()))
            .body(Upload { remaining: LEN }.boxed())
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::OK);
        let echo = answer.json();
        assert_eq!(echo["body_len"], LEN);
        assert_eq!(echo["body_truncated"], true);
        assert_eq!(echo["body"].as_str().unwrap().len(), 1024 * 1024);
    }
    let recorded = server.requests();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.body_len == LEN && r.body.len() == 64 * 1024));
}

#[tokio::test]
async fn x_mock_status_and_body_size_shape_the_echo() {
    let server = start(MockOptions::default()).await;
    let client = http1();
    let request = Request::get(format!("{}/missing", server.url()))
        .header("x-mock-status", "404")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["path"], "/missing");

    const LEN: u64 = 5 * 1024 * 1024 + 3;
    let request = Request::get(format!("{}/download", server.url()))
        .header("x-mock-body-size", LEN.to_string())
        .header("x-mock-status", "206")
        .body(empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-length"], LEN.to_string().as_str());
    // Counted frame by frame, as a client with bounded memory would.
    let mut body = response.into_body();
    let (mut total, mut frames) = (0u64, 0);
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data.iter().all(|&b| b == b'x'));
        total += data.len() as u64;
        frames += 1;
    }
    assert_eq!(total, LEN);
    assert!(frames > 1, "streamed in chunks");

    for (header, value) in [("x-mock-status", "1000"), ("x-mock-body-size", "lots")] {
        let request = Request::get(server.url()).header(header, value).body(empty()).unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{header}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        assert!(answer.json()["detail"].as_str().unwrap().contains(header), "{header}");
    }
}

#[tokio::test]
async fn latency_delays_the_response() {
    let server =
        start(MockOptions { latency: Some(Duration::from_millis(40)), ..MockOptions::default() }).await;
    let started = Instant::now();
    let request = Request::get(server.url()).header("x-mock-latency", "30ms").body(empty()).unwrap();
    assert_eq!(send(&http1(), request).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(70));
}

#[tokio::test]
async fn websocket_upgrade_answers_101_and_echoes_bytes() {
    let server = start(MockOptions::default()).await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = Request::get("/chat")
        .header("host", server.addr().to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers();
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["connection"], "Upgrade");
    assert_eq!(
        headers["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" // RFC 6455 section 1.3
    );
    assert_eq!(headers["server"], "bridgehead-mock");

    let mut upgraded = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let message = b"\x81\x05hello, raw bytes come back as they went";
    upgraded.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    upgraded.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, message);
    // Our EOF ends the echo, which closes its side.
    upgraded.shutdown().await.unwrap();
    let mut rest = Vec::new();
    upgraded.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(server.requests()[0].path, "/chat");
}

#[tokio::test]
async fn websocket_upgrade_without_key_is_refused() {
    let server = start(MockOptions::default()).await;
    let request = Request::get(server.url())
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    let answer = send(&http1(), request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["title"], "invalid websocket upgrade");
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let server = start(MockOptions::default()).await;
    let client = h2c();
    for i in 0..3 {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/h2/{i}?q=1", server.url()))
            .header("x-h2", "yes")
            .body(full("over h2"))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.version, Version::HTTP_2);
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("server"), Some("bridgehead-mock"));
        let echo = answer.json();
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(echo["headers"]["x-h2"], "yes");
        assert_eq!(echo["body"], "over h2");
    }
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let server = start(MockOptions::default()).await;
    let addr = server.addr();
    assert_eq!(get(&server, "/").await.status, StatusCode::OK);
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
