//! The mock served for real on 127.0.0.1:0, driven by hyper clients.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bridgehead_mock::{Faults, InvalidOptions, MockOptions, MockServer, StatusCounts};
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

/// `PUT /__mock/faults` with `body`.
async fn put_faults(server: &MockServer, body: &str) -> Answer {
    let request =
        Request::put(format!("{}/__mock/faults", server.url())).body(full(body.to_owned())).unwrap();
    send(&http1(), request).await
}

/// The rate limit headers of an answer, in a fixed order.
fn quota_headers(answer: &Answer) -> [Option<&str>; 5] {
    ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit-policy", "ratelimit"]
        .map(|name| answer.header(name))
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

#[tokio::test]
async fn fail_first_fails_exactly_n_requests_then_serves() {
    let server = start(MockOptions {
        fail_first: 3,
        fail_status: 502,
        retry_after: Some(1),
        fixed: vec!["/health=200".parse().unwrap()],
        ..MockOptions::default()
    })
    .await;
    for (i, path) in ["/", "/health", "/orders"].into_iter().enumerate() {
        // Admin paths neither count towards fail_first nor fail.
        assert_eq!(get(&server, "/__mock/requests").await.status, StatusCode::OK);
        assert_eq!(get(&server, "/__mock/faults").await.status, StatusCode::OK);
        let answer = get(&server, path).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        let detail = format!("bridgehead mock injected this failure (--fail-first: {} of 3)", i + 1);
        assert_eq!(
            answer.json(),
            json!({"type": "about:blank", "title": "injected failure", "status": 502, "detail": detail})
        );
    }
    let client = http1();
    for path in ["/", "/health", "/", "/orders"] {
        let answer =
            send(&client, Request::get(format!("{}{path}", server.url())).body(empty()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.header("retry-after"), None);
    }
    assert_eq!(server.request_count(), 7);
    assert_eq!(server.requests().len(), 7, "failed requests are recorded");
    assert_eq!(
        server.status_counts(),
        StatusCounts { success: 4, server_error: 3, ..StatusCounts::default() }
    );
    assert_eq!(server.status_counts().total(), 7);
}

#[tokio::test]
async fn fail_first_is_exact_under_concurrency() {
    let server = start(MockOptions { fail_first: 5, ..MockOptions::default() }).await;
    let client = h2c();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (client, url) = (client.clone(), format!("{}/c/{i}", server.url()));
        requests.spawn(async move { send(&client, Request::get(url).body(empty()).unwrap()).await.status });
    }
    let statuses = requests.join_all().await;
    let failed = statuses.iter().filter(|&&s| s == StatusCode::SERVICE_UNAVAILABLE).count();
    let served = statuses.iter().filter(|&&s| s == StatusCode::OK).count();
    assert_eq!((failed, served), (5, 35));
    assert_eq!(
        server.status_counts(),
        StatusCounts { success: 35, server_error: 5, ..StatusCounts::default() }
    );
}

#[tokio::test]
async fn faults_are_shown_replaced_and_reset_at_run_time() {
    let server = start(MockOptions { fail_rate: 0.25, retry_after: Some(9), ..MockOptions::default() }).await;
    let none = json!({"fail_rate": 0.0, "fail_status": 503, "retry_after": null, "fail_first": 0,
                      "latency": null, "rate_limit": null});
    let shown = get(&server, "/__mock/faults").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.header("content-type"), Some("application/json"));
    assert_eq!(
        shown.json(),
        json!({"fail_rate": 0.25, "fail_status": 503, "retry_after": 9, "fail_first": 0,
                                    "latency": null, "rate_limit": null})
    );

    // The brief's example: every field, round-tripped by PUT and GET and the library.
    let all = json!({"fail_rate": 0.5, "fail_status": 503, "retry_after": 2, "fail_first": 3,
                     "latency": "100ms", "rate_limit": "5/s"});
    let put = put_faults(&server, &all.to_string()).await;
    assert_eq!((put.status, put.json()), (StatusCode::OK, all.clone()));
    assert_eq!(get(&server, "/__mock/faults").await.json(), all);
    assert_eq!(serde_json::to_value(server.faults()).unwrap(), all);

    // Absent fields are off; fail_first counts from the PUT, and again from the next PUT.
    let put = put_faults(&server, r#"{"fail_first": 2, "fail_status": 500, "retry_after": 4}"#).await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.json()["fail_rate"], 0.0);
    assert_eq!(put.json()["latency"], Value::Null);
    let statuses = |answers: Vec<Answer>| answers.iter().map(|a| a.status.as_u16()).collect::<Vec<_>>();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&server, "/").await);
    }
    assert_eq!(answers[0].header("retry-after"), Some("4"));
    assert_eq!(statuses(answers), [500, 500, 200, 200]);
    assert_eq!(put_faults(&server, r#"{"fail_first": 1}"#).await.status, StatusCode::OK);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(get(&server, "/").await);
    }
    assert_eq!(answers[0].header("retry-after"), None);
    assert_eq!(statuses(answers), [503, 200, 200]);

    // Latency, as a duration string.
    assert_eq!(put_faults(&server, r#"{"latency": "60ms"}"#).await.status, StatusCode::OK);
    let started = Instant::now();
    assert_eq!(get(&server, "/").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(60));
    let started = Instant::now();
    get(&server, "/__mock/faults").await;
    assert!(started.elapsed() < Duration::from_millis(60), "admin paths are not delayed");

    // DELETE: no faults at all, not the options'.
    let deleted =
        send(&http1(), Request::delete(format!("{}/__mock/faults", server.url())).body(empty()).unwrap())
            .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&server, "/__mock/faults").await.json(), none);
    assert_eq!(server.faults(), Faults::default());

    // The library, the same way.
    server.set_faults(Faults { fail_first: 1, fail_status: 429, ..Faults::default() }).unwrap();
    assert_eq!(get(&server, "/__mock/faults").await.json()["fail_first"], 1);
    assert_eq!(get(&server, "/").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(&server, "/").await.status, StatusCode::OK);
    let refused = server.set_faults(Faults { fail_rate: 2.0, ..Faults::default() });
    assert_eq!(refused, Err(InvalidOptions::FailRate(2.0)));
    assert_eq!(server.faults().fail_status, 429, "refused faults change nothing");
    server.clear_faults();
    assert_eq!(server.faults(), Faults::default());

    // Admin requests are not counted.
    assert_eq!(server.request_count(), 10);
}

#[tokio::test]
async fn bad_faults_are_refused_naming_the_field() {
    let server = start(MockOptions { fail_first: 1, ..MockOptions::default() }).await;
    for (body, field, detail) in [
        (r#"{"fail_rate": 1.5}"#, Some("fail_rate"), "fail_rate 1.5 is not between 0.0 and 1.0"),
        (
            r#"{"fail_rate": "half"}"#,
            Some("fail_rate"),
            "fail_rate: invalid type: string \"half\", expected f64",
        ),
        (
            r#"{"fail_status": 99}"#,
            Some("fail_status"),
            "fail_status 99 is not a status code between 200 and 599",
        ),
        (
            r#"{"retry_after": 2.5}"#,
            Some("retry_after"),
            "retry_after: invalid type: floating point `2.5`, expected u64",
        ),
        (
            r#"{"fail_first": -1}"#,
            Some("fail_first"),
            "fail_first: invalid value: integer `-1`, expected u64",
        ),
        (
            r#"{"latency": "soon"}"#,
            Some("latency"),
            "latency: \"soon\" is not a duration, e.g. \"100ms\" or \"1s 500ms\"",
        ),
        (
            r#"{"rate_limit": "5/d"}"#,
            Some("rate_limit"),
            "rate_limit: \"5/d\" is not a quota: expected N/s, N/m or N/h with N at least 1, e.g. 5/s",
        ),
        (r#"{"fail_frist": 3}"#, Some("fail_frist"), "fail_frist: unknown field `fail_frist`"),
        ("fail_first=3", None, "the body is not JSON"),
        ("[]", None, "the body must be a JSON object"),
        ("", None, "the body is empty"),
    ] {
        let answer = put_faults(&server, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        let problem = answer.json();
        assert_eq!(problem["title"], "invalid faults", "{body}");
        assert_eq!(problem["status"], 400);
        assert_eq!(problem.get("field").and_then(Value::as_str), field, "{body}: {problem}");
        let text = problem["detail"].as_str().unwrap();
        assert!(text.starts_with(detail), "{body}: {text:?} should start with {detail:?}");
    }
    // Nothing was replaced: the one failure of the options is still to come.
    assert_eq!(server.faults().fail_first, 1);
    assert_eq!(get(&server, "/").await.status, StatusCode::SERVICE_UNAVAILABLE);

    let client = http1();
    let post =
        send(&client, Request::post(format!("{}/__mock/faults", server.url())).body(empty()).unwrap()).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, PUT, DELETE"));
    let unknown = get(&server, "/__mock/fault").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["title"], "no such admin path");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn rate_limit_serves_the_quota_then_answers_429() {
    // An hour-long window, so the test cannot straddle two windows however slow it runs.
    let server =
        start(MockOptions { rate_limit: Some("3/h".parse().unwrap()), ..MockOptions::default() }).await;
    let client = http1();
    let mut answers = Vec::new();
    for i in 0..5 {
        answers.push(
            send(&client, Request::get(format!("{}/q/{i}", server.url())).body(empty()).unwrap()).await,
        );
    }
    let statuses: Vec<_> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let mut last_reset = u64::MAX;
    for (i, answer) in answers.iter().enumerate() {
        let [limit, remaining, reset, policy, state] = quota_headers(answer);
        let reset_secs: u64 = reset.unwrap().parse().unwrap();
        assert!((3590..=3600).contains(&reset_secs) && reset_secs <= last_reset, "{i}: {reset_secs}");
        last_reset = reset_secs;
        let left = 2usize.saturating_sub(i);
        assert_eq!(limit, Some("3"));
        assert_eq!(remaining, Some(left.to_string().as_str()), "{i}");
        assert_eq!(policy, Some("\"mock\";q=3;w=3600"));
        assert_eq!(state, Some(format!("\"mock\";r={left};t={reset_secs}").as_str()));
        if i < 3 {
            assert_eq!(answer.header("retry-after"), None);
            assert_eq!(answer.json()["path"], format!("/q/{i}"));
        } else {
            assert_eq!(answer.header("retry-after"), reset);
            assert_eq!(answer.header("content-type"), Some("application/problem+json"));
            let problem = answer.json();
            assert_eq!(problem["title"], "rate limited");
            assert_eq!(problem["status"], 429);
            let detail = format!("the quota of 3 requests per hour is used up; retry in {reset_secs}s");
            assert_eq!(problem["detail"], detail);
        }
    }
    // Admin paths are outside the quota; refused requests are recorded and counted.
    assert!(quota_headers(&get(&server, "/__mock/requests").await).iter().all(Option::is_none));
    assert_eq!(server.requests().len(), 5);
    assert_eq!(
        server.status_counts(),
        StatusCounts { success: 3, client_error: 2, ..StatusCounts::default() }
    );

    // A PUT starts a new quota, here per second: within a one-second window t is always 1.
    assert_eq!(put_faults(&server, r#"{"rate_limit": "3/s", "fail_first": 1}"#).await.status, StatusCode::OK);
    let first = get(&server, "/").await;
    // The quota comes first, and its headers go on injected failures too.
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        quota_headers(&first),
        [Some("3"), Some("2"), Some("1"), Some("\"mock\";q=3;w=1"), Some("\"mock\";r=2;t=1")]
    );
    // DELETE lifts the quota.
    send(&client, Request::delete(format!("{}/__mock/faults", server.url())).body(empty()).unwrap()).await;
    for _ in 0..5 {
        let answer = get(&server, "/").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(quota_headers(&answer).iter().all(Option::is_none));
    }
}

#[tokio::test]
async fn x_mock_retry_after_and_header_shape_the_echo() {
    let server = start(MockOptions::default()).await;
    let client = http1();
    let request = Request::get(format!("{}/one", server.url()))
        .header("x-mock-status", "503")
        .header("x-mock-retry-after", "2")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), Some("2"));
    assert_eq!(answer.json()["path"], "/one");

    let request = Request::get(format!("{}/two", server.url()))
        .header("x-mock-header", "Cache-Control: no-store")
        .header("x-mock-header", "x-trace: a")
        .header("x-mock-header", "x-trace: b")
        .header("x-mock-header", "content-type: application/vnd.test+json")
        .header("x-mock-header", "server: someone-else")
        .body(empty())
        .unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let traces: Vec<_> = answer.headers.get_all("x-trace").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(traces, ["a", "b"]);
    assert_eq!(answer.header("content-type"), Some("application/vnd.test+json"));
    assert_eq!(answer.header("server"), Some("someone-else"));
    assert_eq!(answer.header("retry-after"), None);
    assert_eq!(answer.json()["path"], "/two");

    for (header, value) in [
        ("x-mock-retry-after", "soon"),
        ("x-mock-retry-after", "-1"),
        ("x-mock-header", "no colon"),
        ("x-mock-header", "content-length: 1"),
        ("x-mock-header", "transfer-encoding: chunked"),
    ] {
        let request = Request::get(server.url()).header(header, value).body(empty()).unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{header}: {value}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        let problem = answer.json();
        assert_eq!(problem["title"], "invalid mock header");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(&format!("header {header} must be")),
            "{problem}"
        );
    }
}
