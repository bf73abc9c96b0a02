//! HTTP/2 toward upstreams (`protocol: h2c | h2 | auto`): multiplexing under a stream cap, the
//! client's host as `:authority`, trailers both ways, gRPC outcomes judged from the status in
//! the head or the trailers, and an upstream that resets streams or goes away mid-stream.
//! `nghttp` (Debian `nghttp2-client`) is the independent HTTP/2 client; those tests skip only
//! with BRIDGEHEAD_SKIP_NGHTTP=1.

use http::Request;
use http_body_util::BodyExt;

use crate::support::*;
use bridgehead_testkit::h2peer::H2Peer;

fn config(url: &str, upstream_extra: &str) -> String {
    format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{url}\" }}]\n    protocol: h2c\n    timeouts: {{ connect: 1s, request: 5s }}\n{upstream_extra}routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_gets_the_clients_host_as_authority_on_one_connection() {
    let peer = H2Peer::start().await;
    let gw = Gateway::start(&config(&peer.url(), "")).await;
    let c = client();
    let sends = (0..20).map(|i| {
        let req = Request::get(gw.url(&format!("/echo/{i}")))
            .header("host", "Api.Example.com:8443")
            .body(empty())
            .unwrap();
        send(&c, req)
    });
    for got in futures_util::future::join_all(sends).await {
        assert_eq!(got.status, 200);
        let echo = got.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["authority"], "api.example.com:8443", "the canonical client host, as over HTTP/1.1");
        assert_eq!(echo["host"], serde_json::Value::Null, "HTTP/2 carries the host in :authority only");
    }
    assert_eq!(peer.connections(), 1, "twenty requests share one connection");
    assert_eq!(gw.log_lines().last().unwrap()["upstream"], "u");
}

/// `workers: 2`: each worker keeps its own HTTP/2 connection to the target (its task runs on
/// the worker's runtime), requests on either worker go through, and the gateway drains and
/// stops with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_opens_its_own_h2_connection_and_all_drain() {
    let peer = H2Peer::start().await;
    let gw = Gateway::start(&format!("server:\n  workers: 2\n{}", config(&peer.url(), ""))).await;
    // A new client connection per request: the kernel spreads them over both workers.
    for i in 0..40 {
        let got = get(&gw.url(&format!("/echo/{i}"))).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["version"], "HTTP/2.0");
    }
    let metrics = gw.metrics().await;
    for worker in ["1", "2"] {
        let line = format!("bridgehead_connections_accepted_total{{worker=\"{worker}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&line) && !l.ends_with(" 0")), "{line}:\n{metrics}");
    }
    assert_eq!(peer.connections(), 2, "one HTTP/2 connection per worker");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_opens_another_up_to_max_connections() {
    let peer = H2Peer::start().await;
    let extra = "    http2: { max_concurrent_streams: 2, max_connections: 3 }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    let c = client();
    let holds: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let url = gw.url("/hold");
            tokio::spawn(async move { send(&c, Request::get(url).body(empty()).unwrap()).await.status })
        })
        .collect();
    eventually(10, "eight held requests", async || {
        peer.state.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 8
    })
    .await;
    assert_eq!(
        peer.connections(),
        3,
        "two streams per connection, at most three connections; the rest share"
    );
    peer.release();
    for h in holds {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways_and_te_trailers_is_kept() {
    let peer = H2Peer::start().await;
    let gw = Gateway::start(&config(&peer.url(), "")).await;
    let mut t = http::HeaderMap::new();
    t.insert("x-checksum", "abc".parse().unwrap());
    let body = full("payload").with_trailers(async move { Some(Ok(t)) }).boxed();
    let req = Request::post(gw.url("/echo")).header("te", "trailers").body(body).unwrap();
    let res = h2c_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(trailers["x-peer-trailer"], "done");
    assert_eq!(trailers["x-checksum"], "abc", "the request's trailers reached the upstream");
    let echo: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap();
    assert_eq!(echo["te"], "trailers");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["trailers"]["x-checksum"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_is_a_502_and_is_retried_when_allowed() {
    let peer = H2Peer::start().await;
    let extra = "    retry: { attempts: 2, backoff: 1ms, on: [reset] }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    let got = get(&gw.url("/reset")).await;
    got.assert_problem(502, "upstream `u` failed: the connection closed or the response was invalid");
    assert_eq!(peer.hits("/reset"), 2, "tried twice");
    let got = get(&gw.url("/reset-once")).await;
    assert_eq!(got.status, 200, "the retry succeeded");
    assert_eq!(peer.hits("/reset-once"), 2);
    let m = gw.metrics().await;
    assert!(m.contains("outcome=\"error\"} 3"), "three reset tries counted as errors:\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_stream_breaks_the_response_and_the_next_request_reconnects() {
    let peer = H2Peer::start().await;
    let gw = Gateway::start(&config(&peer.url(), "")).await;
    let res = client().request(Request::get(gw.url("/goaway")).body(empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200, "the head came before the GOAWAY");
    peer.goaway().await;
    assert!(
        res.into_body().collect().await.is_err(),
        "the body breaks off: the client must not see a complete response"
    );
    let got = get(&gw.url("/after")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/after");
    assert_eq!(peer.connections(), 2, "a new connection after the GOAWAY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_14_is_a_failure_retried_from_the_head_or_trailers_only() {
    let peer = H2Peer::start().await;
    let extra = "    retry: { attempts: 2, backoff: 1ms, on: [unavailable] }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    for path in ["/grpc/unavailable-once", "/grpc/trailers-once"] {
        let req = Request::post(gw.url(path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(&b"\0\0\0\0\0"[..]))
            .unwrap();
        let res = h2c_client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let trailers = res.into_body().collect().await.unwrap().trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0", "{path}: the retry's answer");
        assert_eq!(peer.hits(path), 2, "{path}: retried once");
    }
    let m = gw.metrics().await;
    assert!(m.contains("outcome=\"grpc_error\"} 2"), "both first tries counted as gRPC failures:\n{m}");
    assert!(m.contains("bridgehead_upstream_retries_total{upstream=\"u\",result=\"retried\"} 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_failure_in_trailers_after_data_reaches_the_breaker() {
    let peer = H2Peer::start().await;
    let extra = "    retry: { attempts: 2, backoff: 1ms, on: [unavailable] }\n    circuit_breaker: { min_requests: 2, failure_ratio: 0.5, window: 60s, open_for: 60s }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    let call = || {
        let req = Request::post(gw.url("/grpc/data-then-14"))
            .header("content-type", "application/grpc")
            .body(full(&b"\0\0\0\0\0"[..]))
            .unwrap();
        h2c_client().request(req)
    };
    for _ in 0..2 {
        let res = call().await.unwrap();
        assert_eq!(res.status(), 200);
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14", "passed on as the upstream sent it");
    }
    assert_eq!(peer.hits("/grpc/data-then-14"), 2, "a call whose data was on its way is not retried");
    let m = gw.metrics().await;
    assert!(m.contains("outcome=\"grpc_error\"} 2"), "{m}");
    let got = get(&gw.url("/grpc/other")).await;
    got.assert_problem(503, "circuit breaker is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_by_alpn_and_auto_falls_back_to_http1() {
    let h2 = H2Peer::start_tls(&[b"h2"]).await;
    let h1 = H2Peer::start_tls(&[b"http/1.1"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h2.pem"), h2.ca_pem.as_ref().unwrap()).unwrap();
    std::fs::write(dir.path().join("h1.pem"), h1.ca_pem.as_ref().unwrap()).unwrap();
    let d = dir.path().display();
    let cfg = format!(
        "upstreams:\n  h2:\n    targets: [{{ url: \"https://localhost:{}\" }}]\n    protocol: h2\n    tls: {{ ca: {d}/h2.pem }}\n  auto:\n    targets: [{{ url: \"https://localhost:{}\" }}]\n    protocol: auto\n    tls: {{ ca: {d}/h1.pem }}\n  strict:\n    targets: [{{ url: \"https://localhost:{}\" }}]\n    protocol: h2\n    tls: {{ ca: {d}/h1.pem }}\nroutes:\n  - {{ name: h2, match: {{ path_prefix: /h2 }}, upstream: h2 }}\n  - {{ name: auto, match: {{ path_prefix: /auto }}, upstream: auto }}\n  - {{ name: strict, match: {{ path_prefix: /strict }}, upstream: strict }}\n",
        h2.addr.port(),
        h1.addr.port(),
        h1.addr.port()
    );
    let gw = Gateway::start(&cfg).await;
    let got = get(&gw.url("/h2/x")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["version"], "HTTP/2.0");
    for _ in 0..2 {
        let got = get(&gw.url("/auto/x")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["version"], "HTTP/1.1", "the target chose http/1.1 in ALPN");
    }
    let got = get(&gw.url("/strict/x")).await;
    got.assert_problem(502, "could not connect to the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_through_the_gateway_to_an_h2c_upstream() {
    if std::env::var("BRIDGEHEAD_SKIP_NGHTTP").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_NGHTTP=1");
        return;
    }
    let peer = H2Peer::start().await;
    let gw = Gateway::start(&config(&peer.url(), "")).await;
    let url = gw.url("/echo");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("nghttp").args(["-v", "-H", "te: trailers", &url]).output()
    })
    .await
    .unwrap()
    .expect("nghttp (Debian nghttp2-client) must be installed; scripts/test installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nghttp failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(":status: 200"), "{text}");
    assert!(text.contains("x-peer-trailer: done"), "the upstream's trailers reach an HTTP/2 client:\n{text}");
    assert!(text.contains("\"version\":\"HTTP/2.0\""), "{text}");
    assert!(text.contains("\"te\":\"trailers\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_reach_grpc_clients_as_a_grpc_status() {
    let peer = H2Peer::start().await;
    let cfg = format!(
        "authenticators:\n  keys:\n    api_key:\n      keys: [{{ consumer: c, sha256: \"{}\" }}]\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\n    protocol: h2c\nroutes:\n  - {{ name: svc, match: {{ path_prefix: /pkg.Svc }}, upstream: u, auth: [keys] }}\n",
        "0".repeat(64),
        peer.url()
    );
    let gw = Gateway::start(&cfg).await;
    let call = |path: &str, content_type: &str| {
        let req = Request::post(gw.url(path))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(full(&b"\0\0\0\0\0"[..]))
            .unwrap();
        h2c_client().request(req)
    };
    for (path, code, message) in [
        ("/pkg.Svc/Get", "16", "no credentials"),
        ("/other.Svc/Get", "12", "no route matches POST /other.Svc/Get"),
        ("/pkg.Svc/%2e%2e%2f", "3", ""),
    ] {
        let res = call(path, "application/grpc+proto").await.unwrap();
        assert_eq!(res.status(), 200, "{path}: gRPC errors travel in a 200");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], code, "{path}");
        assert!(
            h["grpc-message"].to_str().unwrap().to_lowercase().contains(&message.to_lowercase()),
            "{path}: {h:?}"
        );
        assert!(h.contains_key("x-request-id"));
        let body = res.into_body().collect().await.unwrap();
        assert!(body.trailers().is_none() && body.to_bytes().is_empty(), "{path}: trailers-only");
    }
    // The log and the metrics keep the error's own status, not the 200 it travelled in.
    let logged = || gw.log_lines().iter().map(|l| l["status"].as_u64().unwrap()).collect::<Vec<_>>();
    eventually(10, "three log lines", async || logged().len() == 3).await;
    // Each line is written when its answer's body is dropped, which may finish out of order.
    let mut statuses = logged();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 401, 404]);
    // The same refusal to a plain HTTP client stays problem+json.
    let got = send(&client(), Request::post(gw.url("/pkg.Svc/Get")).body(empty()).unwrap()).await;
    got.assert_problem(401, "");
    assert_eq!(peer.hits("/pkg.Svc/Get"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_reached_nothing_and_a_grpc_call_is_tried_again() {
    let peer = H2Peer::start().await;
    let extra = "    retry: { attempts: 2, backoff: 1ms, on: [connect-error] }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    // A gRPC call is a POST: only what says nothing was done may send it again.
    let req = Request::post(gw.url("/refuse-once"))
        .header("content-type", "application/grpc")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap();
    let res = h2c_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(peer.hits("/refuse-once"), 2, "REFUSED_STREAM means unprocessed: tried again");
    let m = gw.metrics().await;
    assert!(m.contains("outcome=\"connect_error\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_answer_slow_to_its_first_message_streams_on_after_the_try_timeout() {
    let peer = H2Peer::start().await;
    let extra = "    retry: { attempts: 2, backoff: 1ms, per_try_timeout: 1s, on: [unavailable] }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    let req = Request::post(gw.url("/grpc/hold-first"))
        .header("content-type", "application/grpc")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap();
    // The head arrives although the first message does not come before the release.
    let res = tokio::time::timeout(std::time::Duration::from_secs(10), h2c_client().request(req))
        .await
        .expect("the head is passed on once the try's time for peeking is over")
        .unwrap();
    assert_eq!(res.status(), 200);
    peer.release();
    let body = res.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(peer.hits("/grpc/hold-first"), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_claiming_grpc_cannot_make_plain_answers_count_as_failures() {
    let m = bridgehead_mock::MockServer::start(bridgehead_mock::MockOptions::default()).await.unwrap();
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\n    retry: {{ attempts: 3, backoff: 1ms, on: [unavailable, reset] }}\n    passive_health: {{ consecutive_failures: 2 }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    for method in ["HEAD", "GET", "POST"] {
        let req = Request::builder()
            .method(method)
            .uri(gw.url("/x"))
            .header("content-type", "application/grpc")
            .body(empty())
            .unwrap();
        let got = send(&client(), req).await;
        assert_eq!(got.status, 200, "{method}: a plain answer passes as it is");
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("outcome=\"success\"} 3"), "{metrics}");
    assert!(!metrics.contains("grpc_error") && !metrics.contains("outcome=\"error\""), "{metrics}");
    assert_eq!(get(&gw.url("/y")).await.status, 200, "the target was not ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_breaks_toward_an_h2_upstream_is_the_clients_fault() {
    let peer = H2Peer::start().await;
    let extra = "    passive_health: { consecutive_failures: 1 }\n";
    let gw = Gateway::start(&config(&peer.url(), extra)).await;
    // Promise 100000 bytes, send 10, and go away.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    eventually(10, "the upstream saw the request", async || peer.hits("/upload") == 1).await;
    drop(s);
    eventually(10, "the request was logged", async || gw.log_lines().iter().any(|l| l["path"] == "/upload"))
        .await;
    let line = gw.log_lines().into_iter().find(|l| l["path"] == "/upload").unwrap();
    assert_eq!(line["status"], 400, "{line}");
    let m = gw.metrics().await;
    assert!(!m.contains("outcome=\"error\""), "not counted against the target:\n{m}");
    assert_eq!(get(&gw.url("/after")).await.status, 200, "the target was not ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_and_non_post_requests_are_plain_http_and_keyed_grpc_calls_are_refused() {
    let peer = H2Peer::start().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\n    protocol: h2c\nroutes:\n  - {{ name: keyed, match: {{ path_prefix: /keyed }}, upstream: u, strip_prefix: /keyed, idempotency: {{}} }}\n",
        peer.url()
    );
    let gw = Gateway::start(&cfg).await;
    // gRPC-Web carries its status in the body: a gateway error is problem+json for it.
    let req = Request::post(gw.url("/nowhere"))
        .header("content-type", "application/grpc-web+proto")
        .body(empty())
        .unwrap();
    send(&client(), req).await.assert_problem(404, "no route");
    let req =
        Request::get(gw.url("/nowhere")).header("content-type", "application/grpc").body(empty()).unwrap();
    send(&client(), req).await.assert_problem(404, "no route");
    // A keyed gRPC call on a route that stores answers: refused, as a gRPC status.
    let req = Request::post(gw.url("/keyed/Svc/Call"))
        .header("content-type", "application/grpc")
        .header("idempotency-key", "\"k-1\"")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap();
    let res = h2c_client().request(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    assert!(res.headers()["grpc-message"].to_str().unwrap().contains("not to gRPC calls"));
    // Without a key it passes, trailers and all.
    let req = Request::post(gw.url("/keyed/grpc/ok"))
        .header("content-type", "application/grpc")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap();
    let res = h2c_client().request(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().trailers().unwrap()["grpc-status"], "0");
    assert_eq!(peer.hits("/Svc/Call"), 0);
    assert_eq!(peer.hits("/grpc/ok"), 1);
}
