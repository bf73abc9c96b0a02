//! OpenTelemetry traces (`telemetry.traces`), exported to an OTLP receiver the tests start
//! (`peers/otlp_receiver.py`: Python, decoding with the official protobuf definitions of
//! PyPI `opentelemetry-proto`): the span tree of a request and its attributes, the parent from
//! an incoming `traceparent`, propagation to the upstream, retries as separate client spans,
//! webhook deliveries continuing their event's trace, OTLP over HTTP (gzip) and gRPC, sampling,
//! a collector that refuses a batch, the flush at shutdown, and traces off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use serde_json::Value;

use crate::support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const KEY: &str = "publisher-key-1";

/// The OTLP receiver.
struct Receiver {
    _child: Killed,
    port: u16,
}

impl Receiver {
    async fn start() -> Option<Receiver> {
        let (child, port) = python_peer("otlp_receiver.py", &[]).await?;
        Some(Receiver { _child: child, port })
    }

    /// Its OTLP/HTTP base URL.
    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its OTLP/gRPC URL.
    async fn grpc(&self) -> String {
        let info = get(&format!("{}/info", self.http())).await.json();
        format!("http://127.0.0.1:{}", info["grpc_port"])
    }

    /// The spans received once there are at least `min`, and the exports they came in.
    async fn spans(&self, min: usize) -> (Vec<Value>, Vec<Value>) {
        self.spans_within(min, 20).await
    }

    /// [`Self::spans`], failing unless they came within `secs`.
    async fn spans_within(&self, min: usize, secs: u64) -> (Vec<Value>, Vec<Value>) {
        let got = get(&format!("{}/spans?min={min}&wait={secs}", self.http())).await.json();
        let spans = got["spans"].as_array().unwrap().clone();
        assert!(spans.len() >= min, "{min} spans expected, got {}: {spans:#?}", spans.len());
        (spans, got["exports"].as_array().unwrap().clone())
    }
}

/// An upstream that records every request and answers each with the next status of `statuses`
/// (200 when they are used up).
struct Upstream {
    peer: Peer,
    got: Arc<Mutex<Vec<Request<Bytes>>>>,
}

impl Upstream {
    async fn start(statuses: &[u16]) -> Upstream {
        let got = Arc::new(Mutex::new(Vec::new()));
        let statuses = statuses.to_vec();
        let n = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        let peer = Peer::start(move |req| {
            g.lock().unwrap().push(req);
            let status = statuses.get(n.fetch_add(1, Ordering::SeqCst)).copied().unwrap_or(200);
            let mut res = Response::new(Bytes::from_static(b"{}"));
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            res
        })
        .await;
        Upstream { peer, got }
    }

    /// The `traceparent` of each request, split: (trace id, parent id, flags).
    fn traceparents(&self) -> Vec<(String, String, String)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let tp = r.headers().get("traceparent").expect("a traceparent").to_str().unwrap();
                let parts: Vec<&str> = tp.split('-').collect();
                assert_eq!((parts.len(), parts[0]), (4, "00"), "{tp}");
                (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
            })
            .collect()
    }

    fn header(&self, i: usize, name: &str) -> Option<String> {
        self.got.lock().unwrap()[i].headers().get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

fn traces(endpoint: &str, extra: &str) -> String {
    format!("telemetry:\n  traces:\n    endpoint: \"{endpoint}\"\n    interval: 50ms\n{extra}")
}

fn api(upstream: &Upstream, telemetry: &str) -> String {
    format!(
        "authenticators:\n  keys:\n    api_key:\n      header: X-API-Key\n      keys: [{{ consumer: shop, sha256: \"{}\" }}]\nupstreams:\n  api:\n    targets: [{{ url: \"{}\" }}]\n    retry: {{ attempts: 2, backoff: 5ms, on: [503] }}\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: api, auth: [keys], rate_limit: {{ key: consumer, rate: 100/s }} }}\n  - {{ name: open, match: {{ path_prefix: /open }}, upstream: api }}\n{telemetry}",
        bridgehead_auth::apikey::sha256_hex(KEY),
        upstream.peer.url("")
    )
}

fn request(gw: &Gateway, path: &str, traceparent: Option<&str>) -> Request<TestBody> {
    let mut req =
        Request::get(gw.url(path)).header("x-api-key", KEY).header("tracestate", "vendor=abc,other=1");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.body(empty()).unwrap()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span named {name}: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_span_tree_under_its_callers_span_and_its_tries_carry_it_upstream() {
    let Some(rx) = Receiver::start().await else { return };
    let upstream = Upstream::start(&[503]).await;
    let telemetry =
        traces(&rx.http(), "    compression: gzip\n    headers: { x-collector-key: \"c0llect\" }\n");
    let gw = Gateway::start(&api(&upstream, &telemetry)).await;

    let got =
        send(&client(), request(&gw, "/api/orders/7?secret=q", Some(&format!("00-{TRACE}-{PARENT}-01"))))
            .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let request_id = got.header("x-request-id").to_owned();

    // Two tries (a 503, then a 200), each with its own span as the parent the upstream sees,
    // the caller's trace id and tracestate.
    let tps = upstream.traceparents();
    assert_eq!(tps.len(), 2);
    for (trace, _, flags) in &tps {
        assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    }
    assert_ne!(tps[0].1, tps[1].1);
    assert_eq!(upstream.header(1, "tracestate").as_deref(), Some("vendor=abc,other=1"));

    let (spans, exports) = rx.spans(5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    assert!(spans.iter().all(|s| s["trace_id"] == TRACE && s["trace_state"] == "vendor=abc,other=1"));
    let server = one(&spans, "GET api");
    assert_eq!(server["kind"], "SPAN_KIND_SERVER");
    assert_eq!(server["parent_span_id"], PARENT);
    assert_eq!(server["flags"].as_u64().unwrap() & 0x301, 0x301, "sampled, parent remote");
    assert_eq!(server["status"], "STATUS_CODE_UNSET");
    let a = &server["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/api/orders/7", "no query in a span");
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["network.protocol.version"], "1.1");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["bridgehead.request_id"], request_id.as_str());
    assert_eq!(a["bridgehead.route"], "api");
    assert_eq!(a["bridgehead.consumer"], "shop");
    assert_eq!(a["bridgehead.upstream"], "api");
    assert_eq!(server["resource"]["service.name"], "bridgehead");
    let server_id = server["span_id"].as_str().unwrap();

    let auth = one(&spans, "authenticate");
    assert_eq!(
        (auth["kind"].as_str(), auth["attributes"]["bridgehead.authenticator"].as_str()),
        (Some("SPAN_KIND_INTERNAL"), Some("keys"))
    );
    let limit = one(&spans, "rate_limit");
    let tries = named(&spans, "GET");
    assert_eq!(tries.len(), 2, "{spans:#?}");
    let (first, second) =
        if tries[0]["span_id"] == tps[0].1 { (tries[0], tries[1]) } else { (tries[1], tries[0]) };
    assert_eq!(first["span_id"], tps[0].1, "the first try's span is the parent the upstream saw");
    assert_eq!(second["span_id"], tps[1].1);
    assert_eq!(first["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(first["status"], "STATUS_CODE_ERROR");
    assert_eq!(first["attributes"]["http.response.status_code"], 503);
    assert_eq!(first["attributes"]["error.type"], "503");
    assert_eq!(first["attributes"]["bridgehead.outcome"], "http_5xx");
    assert!(first["attributes"]["bridgehead.retry.backoff_ms"].is_i64(), "{first}");
    assert!(second["attributes"].get("bridgehead.retry.backoff_ms").is_none());
    assert_eq!(first["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(first["attributes"]["url.full"], upstream.peer.url("/api/orders/7"));
    assert!(first["attributes"].get("http.request.resend_count").is_none());
    assert_eq!(second["status"], "STATUS_CODE_UNSET");
    assert_eq!(second["attributes"]["http.request.resend_count"], 1);
    assert_eq!(second["attributes"]["http.response.status_code"], 200);
    // Every child hangs under the server span, within its time.
    let (start, end) = (server["start"].as_u64().unwrap(), server["end"].as_u64().unwrap());
    for child in [auth, limit, first, second] {
        assert_eq!(child["parent_span_id"], server_id, "{child}");
        assert_eq!(child["flags"].as_u64().unwrap() & 0x300, 0x100, "a local parent: {child}");
        assert!(
            start <= child["start"].as_u64().unwrap() && child["end"].as_u64().unwrap() <= end,
            "{child}"
        );
    }
    assert!(first["end"].as_u64().unwrap() <= second["start"].as_u64().unwrap());

    // Gzip, with the configured header; the access log names the trace and the span.
    assert!(exports.iter().all(|e| e["transport"] == "http" && e["encoding"] == "gzip"), "{exports:?}");
    assert_eq!(exports[0]["headers"]["x-collector-key"], "c0llect");
    assert_eq!(exports[0]["headers"]["content-type"], "application/x-protobuf");
    let line = gw.log_lines().pop().unwrap();
    assert_eq!((line["trace_id"].as_str(), line["span_id"].as_str()), (Some(TRACE), Some(server_id)));
    eventually(10, "exported spans counted", async || {
        gw.metrics().await.contains("bridgehead_telemetry_spans_total{result=\"exported\"} 5")
    })
    .await;

    // A refused request is a failed span tree too: the server span carries the 401.
    let mut req = request(&gw, "/api/orders/8", None);
    req.headers_mut().remove("x-api-key");
    send(&client(), req).await.assert_problem(401, "");
    let (spans, _) = rx.spans(7).await;
    let refused = spans
        .iter()
        .find(|s| s["name"] == "GET api" && s["attributes"]["http.response.status_code"] == 401)
        .unwrap();
    assert_eq!(refused["status"], "STATUS_CODE_UNSET", "a 4xx is the client's, not the server's error");
    assert_eq!(refused["parent_span_id"], "");
    let auth =
        spans.iter().find(|s| s["name"] == "authenticate" && s["trace_id"] == refused["trace_id"]).unwrap();
    assert_eq!(auth["status"], "STATUS_CODE_ERROR");
    assert_eq!(auth["attributes"]["error.type"], "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_sampling_and_the_context_passed_on_unrecorded() {
    let Some(rx) = Receiver::start().await else { return };
    let upstream = Upstream::start(&[]).await;
    let telemetry = traces(&rx.grpc().await, "    protocol: grpc\n    sample_ratio: 0.0\n");
    let gw = Gateway::start(&api(&upstream, &telemetry)).await;

    // No caller context and a ratio of 0: not recorded, but a new trace id goes upstream,
    // flagged unsampled, and into the access log.
    assert_eq!(send(&client(), request(&gw, "/open/a", None)).await.status, 200);
    // An unsampled caller: its trace id goes on, still unsampled.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    assert_eq!(send(&client(), request(&gw, "/open/b", Some(&unsampled))).await.status, 200);
    // An invalid traceparent (uppercase hex) starts a new trace.
    let invalid = format!("00-{}-{PARENT}-01", TRACE.to_uppercase());
    assert_eq!(send(&client(), request(&gw, "/open/c", Some(&invalid))).await.status, 200);
    // A sampled caller: recorded, whatever the ratio (parent_based).
    let sampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let sampled = format!("00-{sampled_trace}-b7ad6b7169203331-01");
    assert_eq!(send(&client(), request(&gw, "/open/d", Some(&sampled))).await.status, 200);

    let tps = upstream.traceparents();
    // A trace the gateway starts says its id is random (the level 2 flag), unsampled.
    assert_eq!(tps[0].2, "02");
    assert_ne!(tps[0].0, TRACE);
    assert_eq!((tps[1].0.as_str(), tps[1].2.as_str()), (TRACE, "00"));
    assert_ne!(tps[1].1, PARENT, "the gateway's own span is the parent");
    assert_ne!(tps[2].0, TRACE.to_lowercase());
    assert_eq!(tps[2].2, "02");
    assert_eq!((tps[3].0.as_str(), tps[3].2.as_str()), (sampled_trace, "01"));
    let lines = gw.log_lines();
    assert_eq!(lines[0]["trace_id"], tps[0].0.as_str());
    assert_eq!(lines[1]["trace_id"], TRACE);
    // The invalid context's tracestate is not passed on.
    assert_eq!(upstream.header(2, "tracestate"), None);

    // Only the sampled request's spans came, over gRPC (earlier ones would have come first).
    let (spans, exports) = rx.spans(2).await;
    assert!(spans.iter().all(|s| s["trace_id"] == sampled_trace), "{spans:#?}");
    assert_eq!(one(&spans, "GET open")["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(one(&spans, "GET")["span_id"], tps[3].1.as_str());
    assert!(exports.iter().all(|e| e["transport"] == "grpc"), "{exports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_export_is_retried_then_dropped_and_the_last_spans_are_flushed_at_shutdown() {
    let Some(rx) = Receiver::start().await else { return };
    let upstream = Upstream::start(&[]).await;
    // A batch goes when it holds 3 spans, or after 5 s, or at shutdown.
    let telemetry = format!(
        "telemetry:\n  traces:\n    endpoint: \"{}\"\n    interval: 5s\n    max_batch: 3\n",
        rx.http()
    );
    let mut gw = Gateway::start(&api(&upstream, &telemetry)).await;
    let fail = |count: u32| {
        let url = format!("{}/fail?count={count}&status=503", rx.http());
        async move { assert_eq!(send(&client(), Request::post(url).body(empty()).unwrap()).await.status, 204) }
    };
    // The collector answers the first export 503: it is sent again.
    fail(1).await;
    assert_eq!(send(&client(), request(&gw, "/api/1", None)).await.status, 200);
    let (spans, exports) = rx.spans(4).await;
    assert_eq!(spans.len(), 4);
    assert_eq!(exports[0]["refused"], 503, "{exports:?}");
    assert_eq!(exports[1]["transport"], "http", "{exports:?}");
    // Three 503s: the batch is given up after its third try, and counted.
    fail(3).await;
    assert_eq!(send(&client(), request(&gw, "/api/2", None)).await.status, 200);
    eventually(10, "the dropped batch counted", async || {
        gw.metrics().await.contains("bridgehead_telemetry_spans_total{result=\"dropped_export_failed\"} 4")
    })
    .await;
    let (_, exports) = rx.spans(4).await;
    assert_eq!(exports.iter().filter(|e| e["refused"] == 503).count(), 4, "{exports:?}");
    // The next request's 2 spans wait for the interval: stopping the gateway sends them at once.
    let traced = request(&gw, "/open/3", Some(&format!("00-{TRACE}-{PARENT}-01")));
    assert_eq!(send(&client(), traced).await.status, 200);
    gw.begin_shutdown();
    gw.finished().await;
    let (spans, _) = rx.spans_within(6, 3).await;
    assert_eq!(spans.iter().filter(|s| s["trace_id"] == TRACE).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_made_for_a_request_carry_its_context() {
    let Some(rx) = Receiver::start().await else { return };
    let seen = Arc::new(Mutex::new(Vec::<(String, Option<String>)>::new()));
    let s = seen.clone();
    // The identity provider: introspection and the token endpoint, recording traceparents.
    let idp = Peer::start(move |req| {
        let tp = req.headers().get("traceparent").map(|v| v.to_str().unwrap().to_owned());
        s.lock().unwrap().push((req.uri().path().to_owned(), tp));
        if req.uri().path() == "/token" {
            return json_response(
                200,
                &serde_json::json!({"access_token": "up-token", "token_type": "Bearer", "expires_in": 3600}),
            );
        }
        json_response(200, &serde_json::json!({"active": true, "sub": "svc-1", "exp": 4_102_444_800u64}))
    })
    .await;
    let upstream = Upstream::start(&[]).await;
    let config = format!(
        "authenticators:\n  idp:\n    introspection: {{ url: \"{}\", client_id: gw, client_secret: s3cret }}\nupstreams:\n  api:\n    targets: [{{ url: \"{}\" }}]\n    credentials:\n      oauth2_client_credentials: {{ token_url: \"{}\", client_id: gw, client_secret: s3cret }}\nroutes:\n  - {{ name: api, match: {{ path_prefix: / }}, upstream: api, auth: [idp] }}\n{}",
        idp.url("/introspect"),
        upstream.peer.url(""),
        idp.url("/token"),
        traces(&rx.http(), "")
    );
    let gw = Gateway::start(&config).await;
    let req = Request::get(gw.url("/x"))
        .header("authorization", "Bearer opaque-1")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    assert_eq!(upstream.header(0, "authorization").as_deref(), Some("Bearer up-token"));
    let (spans, _) = rx.spans(3).await;
    let server = one(&spans, "GET api");
    let auth = one(&spans, "authenticate");
    let seen = seen.lock().unwrap().clone();
    let parent_of = |path: &str| {
        let (_, tp) = seen.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("no {path}: {seen:?}"));
        let tp = tp.clone().unwrap_or_else(|| panic!("{path} without a traceparent"));
        let parts: Vec<String> = tp.split('-').map(str::to_owned).collect();
        assert_eq!(parts[1], TRACE, "{tp}");
        parts[2].clone()
    };
    // The introspection is a child of the authenticate span, the token fetch of the request's.
    assert_eq!(parent_of("/introspect"), auth["span_id"].as_str().unwrap());
    assert_eq!(parent_of("/token"), server["span_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_continue_the_trace_their_event_was_published_in() {
    let Some(rx) = Receiver::start().await else { return };
    let endpoint = Upstream::start(&[]).await;
    let config = format!(
        "authenticators:\n  publishers:\n    api_key:\n      header: X-API-Key\n      keys: [{{ consumer: shop, sha256: \"{}\" }}]\nwebhooks:\n  event_types:\n    order.created: {{}}\n  outbound:\n    intake: /events\n    auth: [publishers]\n    endpoints:\n      - {{ name: orders, url: \"{}\", events: [\"order.*\"], secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", allow_private_network: true }}\n{}",
        bridgehead_auth::apikey::sha256_hex(KEY),
        endpoint.peer.url("/hooks"),
        traces(&rx.http(), "")
    );
    let gw = Gateway::start(&config).await;
    let publish = Request::post(gw.url("/events"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(full(r#"{"type":"order.created","data":{"id":1}}"#))
        .unwrap();
    assert_eq!(send(&client(), publish).await.status, 202);
    // Server span, authenticate, the publish span, then the delivery.
    let (spans, _) = rx.spans(4).await;
    assert!(spans.iter().all(|s| s["trace_id"] == TRACE), "{spans:#?}");
    let published = one(&spans, "webhook.publish");
    assert_eq!(published["kind"], "SPAN_KIND_PRODUCER");
    assert_eq!(published["attributes"]["http.response.status_code"], 202);
    let delivery = spans.iter().find(|s| s["name"].as_str().unwrap().starts_with("send ")).unwrap();
    assert_eq!(delivery["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(delivery["parent_span_id"], published["span_id"], "{spans:#?}");
    assert_eq!(delivery["attributes"]["messaging.system"], "bridgehead");
    assert_eq!(delivery["attributes"]["http.response.status_code"], 200);
    assert_eq!(delivery["attributes"]["bridgehead.webhook.attempt"], 1);
    let tps = endpoint.traceparents();
    assert_eq!((tps[0].0.as_str(), tps[0].1.as_str()), (TRACE, delivery["span_id"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_a_client_that_leaves_are_in_the_trace() {
    let Some(rx) = Receiver::start().await else { return };
    let m = bridgehead_mock::MockServer::start(bridgehead_mock::MockOptions::default()).await.unwrap();
    let config = format!(
        "upstreams:\n  m:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: pay, match: {{ path_prefix: /pay }}, upstream: m, idempotency: {{ ttl: 1h }} }}\n{}",
        m.url(),
        traces(&rx.http(), "")
    );
    let gw = Gateway::start(&config).await;
    let post = Request::post(gw.url("/pay"))
        .header("idempotency-key", "k-1")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(full("{}"))
        .unwrap();
    assert_eq!(send(&client(), post).await.status, 200);
    let (spans, _) = rx.spans(4).await;
    assert_eq!(one(&spans, "idempotency")["attributes"]["bridgehead.idempotency.result"], "started");
    let store = one(&spans, "idempotency.store");
    assert_eq!(store["parent_span_id"], one(&spans, "POST pay")["span_id"]);

    // A client that gives up while the upstream is slow: the request and its try end as
    // cancelled, with the try the upstream was told is its parent.
    let slow = Request::get(gw.url("/pay/slow"))
        .header("x-mock-latency", "3s")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(empty())
        .unwrap();
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(300), send(&client(), slow)).await;
    assert!(gave_up.is_err(), "the mock answered within its latency");
    let (spans, _) = rx.spans(6).await;
    let server = spans.iter().find(|s| s["name"] == "GET pay").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server["status"], "STATUS_CODE_ERROR");
    assert_eq!(server["attributes"]["error.type"], "cancelled");
    assert!(server["attributes"].get("http.response.status_code").is_none());
    let tried = one(&spans, "GET");
    assert_eq!(tried["parent_span_id"], server["span_id"]);
    assert_eq!(tried["attributes"]["bridgehead.outcome"], "cancelled");
    assert_eq!(tried["status"], "STATUS_CODE_ERROR");
}

#[tokio::test]
async fn with_traces_off_a_callers_context_passes_through_untouched() {
    let upstream = Upstream::start(&[]).await;
    let gw = Gateway::start(&api(&upstream, "")).await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    assert_eq!(send(&client(), request(&gw, "/open/x", Some(&tp))).await.status, 200);
    assert_eq!(upstream.header(0, "traceparent"), Some(tp));
    assert_eq!(upstream.header(0, "tracestate").as_deref(), Some("vendor=abc,other=1"));
    assert!(gw.log_lines()[0].get("trace_id").is_none());
    assert!(!gw.metrics().await.contains("bridgehead_telemetry_spans_total{"));
}

#[tokio::test]
async fn telemetry_settings_are_checked_with_precise_errors() {
    let cases = [
        ("endpoint: \"ftp://collector\"", "telemetry.traces.endpoint", "must start with http:// or https://"),
        (
            "endpoint: \"http://user:pw@collector:4318\"",
            "telemetry.traces.endpoint",
            "credentials in the URL",
        ),
        ("endpoint: \"http://c:4317/v1\"\n    protocol: grpc", "telemetry.traces.endpoint", "has no path"),
        (
            "endpoint: \"http://c:4318\"\n    sample_ratio: 1.5",
            "telemetry.traces.sample_ratio",
            "not between 0.0 and 1.0",
        ),
        (
            "endpoint: \"http://c:4318\"\n    headers: { \"bad name\": x }",
            "telemetry.traces.headers.bad name",
            "not a valid header name",
        ),
        (
            "endpoint: \"http://c:4318\"\n    headers: { content-type: x }",
            "telemetry.traces.headers.content-type",
            "set by the exporter",
        ),
        (
            "endpoint: \"http://c:4318\"\n    max_batch: 5000",
            "telemetry.traces.max_batch",
            "between 1 and max_queue",
        ),
        (
            "endpoint: \"http://c:4318\"\n    protocol: http/json",
            "telemetry.traces.protocol",
            "unknown variant",
        ),
        ("endpoint: \"http://c:4318\"\n    tls: { ca: ca.pem }", "telemetry.traces.tls", "https:// endpoint"),
        ("endpoint: \"http://c:4318\"\n    interval: 10s", "telemetry.traces.interval", "at most 5s"),
        ("endpoint: \"http://c:4318\"\n    timeout: 0s", "telemetry.traces.timeout", "greater than 0"),
    ];
    for (traces, key, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridgehead.yaml");
        std::fs::write(&path, format!("telemetry:\n  traces:\n    {traces}\n")).unwrap();
        let (code, out, err) = bridgehead(&["config", "check", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{traces}: {out}{err}");
        let said = format!("{out}{err}");
        assert!(said.contains(key) && said.contains(message), "{traces}: {said}");
    }
}
