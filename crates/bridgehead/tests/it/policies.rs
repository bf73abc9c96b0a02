//! Traffic policies through the running gateway: rate limits, idempotency keys, retries,
//! circuit breakers, outbound throttling and canary stickiness, against the mock upstream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bridgehead_mock::{Faults, MockOptions, MockServer};
use http::Request;

use crate::support::*;

async fn mock() -> MockServer {
    MockServer::start(MockOptions::default()).await.unwrap()
}

fn post(url: String, key: Option<&str>, body: &str) -> Request<TestBody> {
    let mut b = Request::post(url).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(full(body.to_owned())).unwrap()
}

fn upstream(url: &str, extra: &str) -> String {
    format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{url}\" }}]\n    timeouts: {{ connect: 1s, request: 5s }}\n{extra}"
    )
}

const KEYS: &str = "authenticators:\n  keys:\n    api_key:\n      keys:\n        - { consumer: acme, sha256: \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\" }\n        - { consumer: globex, sha256: \"35224d0d3465d74e855f8d69a136e79c744ea35a675d3393360a327cbf6359a2\" }\n";
// sha256("secret") and sha256("secret2")

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_headers_then_429_per_key() {
    let m = mock().await;
    let cfg = format!(
        "{KEYS}{}routes:\n  - {{ name: limited, match: {{ path_prefix: /l }}, upstream: u, auth: [keys], rate_limit: {{ key: consumer, rate: 3/h }} }}\n  - {{ name: quiet, match: {{ path_prefix: /q }}, upstream: u, rate_limit: {{ key: ip, rate: 5/h }}, rate_limit_headers: {{ ietf: false, legacy: false }} }}\n  - {{ name: two, match: {{ path_prefix: /t }}, upstream: u, rate_limit: [{{ name: per-second, key: ip, rate: 100/s }}, {{ name: hourly, key: route, rate: 2/h }}] }}\n",
        upstream(&m.url(), "")
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    let call =
        |key: &'static str| Request::get(gw.url("/l/x")).header("x-api-key", key).body(empty()).unwrap();
    for remaining in [2, 1, 0] {
        let got = send(&c, call("secret")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("ratelimit-policy"), "\"default\";q=3;w=3600");
        assert_eq!(
            got.header("ratelimit"),
            format!("\"default\";r={remaining};t={}", 1200 * (3 - remaining))
        );
        assert_eq!(got.header("x-ratelimit-limit"), "3");
        assert_eq!(got.header("x-ratelimit-remaining"), remaining.to_string());
    }
    let got = send(&c, call("secret")).await;
    let p = got.assert_problem(429, "rate limit `default` (3/3600s) exceeded; retry after 1200 s");
    assert_eq!(p["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded");
    assert_eq!(p["policy"], "default");
    assert_eq!(got.header("retry-after"), "1200");
    assert_eq!(got.header("ratelimit"), "\"default\";r=0;t=3600");
    assert_eq!(got.header("x-ratelimit-remaining"), "0");
    // Another consumer has its own bucket.
    assert_eq!(send(&c, call("secret2")).await.status, 200);
    // An unauthenticated request is refused by auth before it can spend anyone's quota.
    assert_eq!(send(&c, Request::get(gw.url("/l/x")).body(empty()).unwrap()).await.status, 401);
    assert_eq!(m.request_count(), 4);

    // Header families switched off.
    let got = get(&gw.url("/q")).await;
    assert_eq!(got.status, 200);
    for h in ["ratelimit", "ratelimit-policy", "x-ratelimit-limit"] {
        assert!(got.headers.get(h).is_none(), "{h} present");
    }

    // Several policies: both reported, the one that refuses is named.
    let got = get(&gw.url("/t")).await;
    assert_eq!(got.header("ratelimit-policy"), "\"per-second\";q=100;w=1, \"hourly\";q=2;w=3600");
    assert_eq!(got.header("x-ratelimit-limit"), "2", "legacy headers describe the tightest policy");
    get(&gw.url("/t")).await;
    let got = get(&gw.url("/t")).await;
    assert_eq!(got.assert_problem(429, "rate limit `hourly`")["policy"], "hourly");

    let text = gw.metrics().await;
    assert!(text.contains("bridgehead_rate_limited_total{route=\"limited\",policy=\"default\"} 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_replays_and_refuses_misuse() {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let peer = Peer::start(move |req| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut res =
            json_response(201, &serde_json::json!({"order": n, "body": String::from_utf8_lossy(req.body())}));
        res.headers_mut().insert("set-cookie", "s=1".parse().unwrap());
        res
    })
    .await;
    let cfg = format!(
        "{KEYS}{}routes:\n  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: u, auth: [keys], idempotency: {{ ttl: 1h }} }}\n  - {{ name: strict, match: {{ path_prefix: /strict }}, upstream: u, idempotency: {{ required: true, max_request_body: 16 }} }}\n",
        upstream(&peer.url(""), "")
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    let authed = |key: Option<&str>, api: &str, body: &str| {
        let mut r = post(gw.url("/orders"), key, body);
        r.headers_mut().insert("x-api-key", api.parse().unwrap());
        r
    };
    let first = send(&c, authed(Some("k-1"), "secret", "{\"sku\":1}")).await;
    assert_eq!(first.status, 201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = send(&c, authed(Some("\"k-1\""), "secret", "{\"sku\":1}")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("set-cookie"), "s=1");
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(peer.hits(), 1, "the replay did not reach the upstream");

    // Same key, other payload: 422. Same key, other consumer: a separate record.
    let got = send(&c, authed(Some("k-1"), "secret", "{\"sku\":2}")).await;
    let p = got.assert_problem(422, "already used for a different request");
    assert_eq!(p["type"], "urn:bridgehead:problem:idempotency-key-reused");
    assert_eq!(send(&c, authed(Some("k-1"), "secret2", "{\"sku\":1}")).await.status, 201);
    assert_eq!(peer.hits(), 2);
    // No key on a route that does not require one: runs every time.
    send(&c, authed(None, "secret", "{}")).await;
    send(&c, authed(None, "secret", "{}")).await;
    assert_eq!(peer.hits(), 4);

    // Malformed, missing where required, too large.
    for (key, detail) in
        [("a b", "without spaces or quotes"), ("\"open", "no closing one"), ("\"\"", "1 to 255 characters")]
    {
        let got = send(&c, authed(Some(key), "secret", "{}")).await;
        assert_eq!(
            got.assert_problem(400, detail)["type"],
            "urn:bridgehead:problem:idempotency-key-malformed"
        );
    }
    let got = send(&c, post(gw.url("/strict"), None, "{}")).await;
    assert_eq!(
        got.assert_problem(400, "requires an Idempotency-Key")["type"],
        "urn:bridgehead:problem:idempotency-key-missing"
    );
    let got = send(&c, post(gw.url("/strict"), Some("big"), &"x".repeat(17))).await;
    got.assert_problem(413, "routes[].idempotency.max_request_body");
    // GET is not covered by the default methods: the key is ignored.
    let got = send(&c, Request::get(gw.url("/strict")).body(empty()).unwrap()).await;
    assert_eq!(got.status, 201);
    assert_eq!(peer.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundreds_free_the_key_for_a_retry() {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let peer = Peer::start(move |_| {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            json_response(503, &serde_json::json!({"error": "busy"}))
        } else {
            json_response(201, &serde_json::json!({"ok": true}))
        }
    })
    .await;
    let cfg = format!(
        "{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, idempotency: {{}} }}\n",
        upstream(&peer.url(""), "")
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    assert_eq!(send(&c, post(gw.url("/pay"), Some("p-1"), "{}")).await.status, 503);
    // The release is asynchronous; the next attempt runs once it is done.
    eventually(5, "key released", async || {
        let got = send(&c, post(gw.url("/pay"), Some("p-1"), "{}")).await;
        got.status == 201
    })
    .await;
    let replay = send(&c, post(gw.url("/pay"), Some("p-1"), "{}")).await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, "true"));
    assert_eq!(peer.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_reach_the_upstream_once() {
    let m = mock().await;
    let cfg = format!(
        "{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, idempotency: {{}} }}\n",
        upstream(&m.url(), "")
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/orders"));
            tokio::spawn(async move {
                let mut r = post(url, Some("same-key"), "{\"sku\":9}");
                r.headers_mut().insert("x-mock-latency", "300ms".parse().unwrap());
                send(&c, r).await
            })
        })
        .collect();
    let mut statuses: HashMap<(u16, bool), usize> = HashMap::new();
    for t in tasks {
        let got = t.await.unwrap();
        if got.status == 409 {
            assert_eq!(got.json()["type"], "urn:bridgehead:problem:idempotency-in-flight");
            assert_eq!(got.header("retry-after"), "1");
        }
        *statuses.entry((got.status, got.headers.contains_key("idempotent-replayed"))).or_default() += 1;
    }
    assert_eq!(m.request_count(), 1, "exactly one request reached the upstream: {statuses:?}");
    assert_eq!(statuses.get(&(200, false)), Some(&1), "{statuses:?}");
    let others: usize =
        statuses.iter().filter(|((s, r), _)| *s == 409 || (*s == 200 && *r)).map(|(_, n)| n).sum();
    assert_eq!(others, 19, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_idempotent_requests_with_backoff_within_the_budget() {
    let m = mock().await;
    let cfg = format!(
        "{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
        upstream(
            &m.url(),
            "    retry: { attempts: 3, backoff: 10ms, max_backoff: 50ms, on: [connect-error, 503], min_retries: 100 }\n    passive_health: { consecutive_failures: 0 }\n"
        )
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    // Two failures, then success: a GET gets through on its third try.
    m.set_faults(Faults { fail_first: 2, fail_status: 503, ..Faults::default() }).unwrap();
    let got = get(&gw.url("/a")).await;
    assert_eq!(got.status, 200);
    assert_eq!(m.request_count(), 3);
    // Three failures exhaust three tries; the last answer goes to the client.
    m.set_faults(Faults { fail_first: 3, fail_status: 503, ..Faults::default() }).unwrap();
    assert_eq!(get(&gw.url("/a")).await.status, 503);
    assert_eq!(m.request_count(), 6);
    // A POST is not retried, unless it carries an Idempotency-Key.
    m.set_faults(Faults { fail_first: 1, fail_status: 503, ..Faults::default() }).unwrap();
    assert_eq!(send(&c, post(gw.url("/a"), None, "{}")).await.status, 503);
    assert_eq!(m.request_count(), 7);
    m.set_faults(Faults { fail_first: 1, fail_status: 503, ..Faults::default() }).unwrap();
    let got = send(&c, post(gw.url("/a"), Some("k"), "{\"a\":1}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body"], "{\"a\":1}", "the retried request was resent with its body");
    assert_eq!(m.request_count(), 9);
    // A status not in `on` is not retried.
    m.set_faults(Faults { fail_first: 1, fail_status: 500, ..Faults::default() }).unwrap();
    assert_eq!(get(&gw.url("/a")).await.status, 500);
    assert_eq!(m.request_count(), 10);
    // A Retry-After longer than max_backoff is passed on rather than waited for.
    m.set_faults(Faults { fail_first: 1, fail_status: 503, retry_after: Some(5), ..Faults::default() })
        .unwrap();
    let got = get(&gw.url("/a")).await;
    assert_eq!((got.status, got.header("retry-after")), (503, "5"));
    assert_eq!(m.request_count(), 11);

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("bridgehead_upstream_retries_total{upstream=\"u\",result=\"retried\"} 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_stops_retries_from_multiplying_an_outage() {
    let m = mock().await;
    let cfg = format!(
        "{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
        upstream(
            &m.url(),
            "    retry: { attempts: 3, backoff: 1ms, max_backoff: 2ms, on: [503], budget_ratio: 0.2, min_retries: 0, budget_window: 1m }\n    passive_health: { consecutive_failures: 0 }\n"
        )
    );
    let gw = Gateway::start(&cfg).await;
    m.set_faults(Faults { fail_rate: 1.0, fail_status: 503, ..Faults::default() }).unwrap();
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/a")).await.status, 503);
    }
    // 20 requests allow at most 20% retries: 4, not the 40 that three tries each would make.
    let sent = m.request_count();
    assert!((20..=24).contains(&sent), "{sent} upstream requests");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("result=\"budget_exhausted\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_retried_on_another_target() {
    let m = mock().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"http://{dead}\" }}, {{ url: \"{}\" }}]\n    retry: {{ attempts: 2, backoff: 1ms, max_backoff: 5ms, budget_ratio: 1.0 }}\n    passive_health: {{ consecutive_failures: 0 }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    for _ in 0..10 {
        let got = get(&gw.url("/a")).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    }
    assert_eq!(m.request_count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_fails_over_and_recovers() {
    let bad = mock().await;
    let good = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}, {{ url: \"{}\" }}]\n    passive_health: {{ consecutive_failures: 0 }}\n    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 4, window: 10s, open_for: 300ms, half_open_probes: 2 }}\n  solo:\n    targets: [{{ url: \"{}\" }}]\n    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 2, window: 10s, open_for: 1h }}\n    passive_health: {{ consecutive_failures: 0 }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: u }}\n  - {{ name: s, match: {{ path_prefix: /s }}, upstream: solo }}\n",
        bad.url(),
        good.url(),
        bad.url()
    );
    let gw = Gateway::start(&cfg).await;
    bad.set_faults(Faults { fail_rate: 1.0, fail_status: 503, ..Faults::default() }).unwrap();
    // Round robin: every other request fails until the bad target's breaker opens.
    for _ in 0..8 {
        get(&gw.url("/r")).await;
    }
    let bad_before = bad.request_count();
    assert_eq!(bad_before, 4, "the breaker opened after 4 requests in the window");
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/r")).await.status, 200, "traffic fails over to the healthy target");
    }
    assert_eq!(bad.request_count(), bad_before);
    let admin = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(admin["upstreams"]["u"]["targets"][0]["circuit"], "open");
    assert_eq!(admin["upstreams"]["u"]["targets"][1]["circuit"], "closed");
    let metrics = gw.metrics().await;
    let open = format!("bridgehead_circuit_breaker_state{{upstream=\"u\",target=\"{}\"}} 1", bad.url());
    assert!(metrics.contains(&open), "{metrics}");

    // The target recovers: after open_for, probes go through and close the breaker.
    bad.clear_faults();
    eventually(10, "breaker closed again", async || {
        get(&gw.url("/r")).await;
        get(&gw.admin_url("/admin/upstreams")).await.json()["upstreams"]["u"]["targets"][0]["circuit"]
            == "closed"
    })
    .await;

    // A single target with an open breaker: 503 circuit-open at once, naming the upstream.
    bad.set_faults(Faults { fail_rate: 1.0, fail_status: 502, ..Faults::default() }).unwrap();
    get(&gw.url("/s")).await;
    get(&gw.url("/s")).await;
    let count = bad.request_count();
    let got = get(&gw.url("/s")).await;
    let p = got.assert_problem(503, "circuit breaker is open for every target of upstream `solo`");
    assert_eq!(p["type"], "urn:bridgehead:problem:circuit-open");
    assert_eq!(p["upstream"], "solo");
    assert!(got.header("retry-after").parse::<u64>().unwrap() > 3000);
    assert_eq!(bad.request_count(), count, "an open breaker sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_rate_limit_queues_and_pauses_on_upstream_signals() {
    let m = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{0}\" }}]\n    rate_limit: {{ rate: 10/s, burst: 1, max_wait: 150ms }}\n  v:\n    targets: [{{ url: \"{0}\" }}]\n    rate_limit: {{ rate: 1000/s, burst: 100 }}\n  free:\n    targets: [{{ url: \"{0}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: u }}\n  - {{ name: p, match: {{ path_prefix: /p }}, upstream: v }}\n  - {{ name: f, match: {{ path_prefix: /f }}, upstream: free }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    // Five at once at 10/s with burst 1: slots at 0, 100 and 200 ms; 200 ms is past max_wait.
    let tasks: Vec<_> = (0..5).map(|_| tokio::spawn(get_owned(gw.url("/r")))).collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        if got.status == 503 {
            let p = got.assert_problem(503, "requests to upstream `u` are throttled");
            assert_eq!(p["type"], "urn:bridgehead:problem:upstream-rate-limited");
        }
        statuses.push(got.status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503, 503]);
    assert_eq!(m.request_count(), 2);

    // The upstream answers 429 with Retry-After: 30; sending to it pauses (longer than the
    // default max_wait, so the next request is refused at once without reaching it).
    let r = Request::get(gw.url("/p"))
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "30")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), r).await.status, 429);
    let before = m.request_count();
    let got = get(&gw.url("/p")).await;
    got.assert_problem(503, "pause sending for longer than max_wait");
    let retry_after: u64 = got.header("retry-after").parse().unwrap();
    assert!((28..=30).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(m.request_count(), before);
    // An upstream without `rate_limit` is never paused by what one answer says.
    let r = Request::get(gw.url("/f"))
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "30")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), r).await.status, 429);
    assert_eq!(get(&gw.url("/f")).await.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("bridgehead_upstream_throttled_total{upstream=\"u\",result=\"refused\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bridgehead_upstream_throttled_total{upstream=\"u\",result=\"waited\"} 1"),
        "{metrics}"
    );
    let admin = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert!(admin["upstreams"]["v"]["paused_ms"].as_u64().unwrap() > 20_000, "{admin}");
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_rate_limit_headers_pause_sending() {
    let m = mock().await;
    let cfg = format!(
        "upstreams:\n  v:\n    targets: [{{ url: \"{0}\" }}]\n    rate_limit: {{ rate: 1000/s, burst: 100 }}\n  w:\n    targets: [{{ url: \"{0}\" }}]\n    rate_limit: {{ rate: 1000/s, burst: 100 }}\nroutes:\n  - {{ name: p, match: {{ path_prefix: /p }}, upstream: v }}\n  - {{ name: q, match: {{ path_prefix: /q }}, upstream: w }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    // `X-RateLimit-Remaining: 0` on a success pauses for its reset; so does `RateLimit: …;r=0`.
    for (path, name, value) in [("/p", "x-ratelimit-remaining", "0"), ("/q", "ratelimit", "\"q\";r=0;t=40")] {
        let mut r = Request::get(gw.url(path)).header("x-mock-header", format!("{name}: {value}"));
        if name == "x-ratelimit-remaining" {
            r = r.header("x-mock-header", "x-ratelimit-reset: 40");
        }
        assert_eq!(send(&client(), r.body(empty()).unwrap()).await.status, 200);
        get(&gw.url(path)).await.assert_problem(503, "pause sending");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_cohorts_stick_to_one_target() {
    let stable = mock().await;
    let canary = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\", weight: 3 }}, {{ url: \"{}\", weight: 1 }}]\n    sticky: 'header:x-user'\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
        stable.url(),
        canary.url()
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    let mut by_user: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..4 {
        for u in 0..40 {
            let user = format!("user-{u}");
            let req = Request::get(gw.url("/x"))
                .header("x-user", &user)
                .header("x-request-id", format!("r{round}-{u}"))
                .body(empty())
                .unwrap();
            assert_eq!(send(&c, req).await.status, 200);
        }
    }
    // A request is logged when the gateway has finished it, which may be just after the client
    // has its answer.
    eventually(5, "every request logged", async || gw.log_lines().len() == 160).await;
    for line in gw.log_lines() {
        let id = line["request_id"].as_str().unwrap();
        let user = format!("user-{}", id.split('-').nth(1).unwrap());
        by_user.entry(user).or_default().insert(line["target"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_user.len(), 40);
    for (user, targets) in &by_user {
        assert_eq!(targets.len(), 1, "{user} bounced between {targets:?}");
    }
    let on_canary = by_user.values().filter(|t| t.contains(&canary.url())).count();
    assert!((3..=20).contains(&on_canary), "{on_canary} of 40 users on the 1/4 canary");
    assert_eq!(canary.request_count() as usize, on_canary * 4);
    let metrics = gw.metrics().await;
    let series = format!(
        "bridgehead_upstream_requests_total{{upstream=\"u\",target=\"{}\",outcome=\"success\"}} {}",
        canary.url(),
        on_canary * 4
    );
    assert!(metrics.contains(&series), "{metrics}");
    // Requests without the header are spread by round robin.
    let before = canary.request_count();
    for _ in 0..8 {
        get(&gw.url("/y")).await;
    }
    assert_eq!(canary.request_count() - before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_what_the_upstream_may_have_acted_on() {
    let m = mock().await;
    let cfg = format!(
        "{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, idempotency: {{ max_response_body: 64 }} }}\n",
        upstream(&m.url(), "")
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();

    // A response too large to store: the client gets it whole; a repeat gets status and headers
    // with an empty body, and the upstream is not called again.
    let mut big = post(gw.url("/big"), Some("big-1"), "{}");
    big.headers_mut().insert("x-mock-body-size", "1000".parse().unwrap());
    let first = send(&c, big).await;
    assert_eq!((first.status, first.body.len()), (200, 1000));
    let mut again = post(gw.url("/big"), Some("big-1"), "{}");
    again.headers_mut().insert("x-mock-body-size", "1000".parse().unwrap());
    let again = send(&c, again).await;
    assert_eq!((again.status, again.body.len()), (200, 0));
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.header("idempotent-body-omitted"), "true");
    assert_eq!(m.request_count(), 1);

    // 408 and 429 from the upstream are not stored: the next try with the key reaches it again.
    let mut timeout = post(gw.url("/pay"), Some("p-408"), "{}");
    timeout.headers_mut().insert("x-mock-status", "408".parse().unwrap());
    assert_eq!(send(&c, timeout).await.status, 408);
    eventually(5, "408 not stored", async || {
        send(&c, post(gw.url("/pay"), Some("p-408"), "{}")).await.status == 200
    })
    .await;
    let mut limited = post(gw.url("/pay"), Some("p-429"), "{}");
    limited.headers_mut().insert("x-mock-status", "429".parse().unwrap());
    assert_eq!(send(&c, limited).await.status, 429);
    eventually(5, "429 not stored", async || {
        send(&c, post(gw.url("/pay"), Some("p-429"), "{}")).await.status == 200
    })
    .await;
    assert_eq!(m.request_count(), 5);

    // The client goes away after the request reached the upstream: the key stays claimed (a
    // repeat gets 409), because the upstream may have acted.
    let slow = {
        let mut r = post(gw.url("/slow"), Some("gone-1"), "{}");
        r.headers_mut().insert("x-mock-latency", "2s".parse().unwrap());
        tokio::spawn({
            let c = c.clone();
            async move { send(&c, r).await }
        })
    };
    eventually(5, "the slow request reached the upstream", async || m.request_count() == 6).await;
    slow.abort();
    let _ = slow.await;
    let got = send(&c, post(gw.url("/slow"), Some("gone-1"), "{}")).await;
    got.assert_problem(409, "still being processed");
    // Still claimed once the gateway has dropped the abandoned request (no release was spawned).
    eventually(5, "the abandoned request is gone", async || {
        get(&gw.admin_url("/admin/upstreams")).await.json()["upstreams"]["u"]["targets"][0]["in_flight"] == 0
    })
    .await;
    assert_eq!(get(&gw.url("/other")).await.status, 200);
    let got = send(&c, post(gw.url("/slow"), Some("gone-1"), "{}")).await;
    got.assert_problem(409, "still being processed");
    assert_eq!(m.request_count(), 7);
    let metrics = gw.metrics().await;
    // Freed twice (the 408 and the 429), not by the abandoned request.
    assert!(
        metrics.contains("bridgehead_idempotency_requests_total{route=\"r\",result=\"released\"} 2\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_are_bounded_process_wide() {
    let m = mock().await;
    let cfg = format!(
        "server:\n  limits: {{ max_buffered: 16KiB }}\n{}routes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: u, idempotency: {{ max_request_body: 8KiB, max_response_body: 16KiB }} }}\n  - {{ name: g, match: {{ path_prefix: /g }}, upstream: u }}\n",
        upstream(
            &m.url(),
            "    retry: { attempts: 2, backoff: 1ms, max_backoff: 2ms, min_retries: 10, max_body: 8KiB }\n    passive_health: { consecutive_failures: 0 }\n"
        )
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    let body = "x".repeat(7 * 1024);
    // Two slow keyed requests hold 14 KiB of the 16 KiB while the upstream takes its time.
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let mut r = post(gw.url("/r"), Some(&format!("slow-{i}")), &body);
            r.headers_mut().insert("x-mock-latency", "1s".parse().unwrap());
            tokio::spawn({
                let c = c.clone();
                async move { send(&c, r).await }
            })
        })
        .collect();
    eventually(5, "both slow requests reached the upstream", async || m.request_count() == 2).await;
    // A third keyed request does not fit: 503 busy, nothing claimed or sent.
    let got = send(&c, post(gw.url("/r"), Some("third"), &body)).await;
    let p = got.assert_problem(503, "server.limits.max_buffered");
    assert_eq!((p["type"].as_str(), got.header("retry-after")), (Some("urn:bridgehead:problem:busy"), "1"));
    // A retryable PUT that does not fit streams instead, and so is not retried.
    m.set_faults(Faults { fail_first: 1, fail_status: 503, ..Faults::default() }).unwrap();
    assert_eq!(send(&c, Request::put(gw.url("/g")).body(full(body.clone())).unwrap()).await.status, 503);
    assert_eq!(m.request_count(), 3);
    for t in slow {
        assert_eq!(t.await.unwrap().status, 200);
    }
    // The room is given back: the third key now runs, and the PUT is buffered and retried.
    assert_eq!(send(&c, post(gw.url("/r"), Some("third"), &body)).await.status, 200);
    m.set_faults(Faults { fail_first: 1, fail_status: 503, ..Faults::default() }).unwrap();
    assert_eq!(send(&c, Request::put(gw.url("/g")).body(full(body.clone())).unwrap()).await.status, 200);
    assert_eq!(m.request_count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_run_inside_the_request_deadline() {
    let m = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{0}\" }}]\n    timeouts: {{ connect: 1s, request: 5s }}\n    retry: {{ attempts: 3, backoff: 1ms, max_backoff: 2ms, on: [timeout], per_try_timeout: 100ms, min_retries: 10 }}\n    passive_health: {{ consecutive_failures: 0 }}\n  short:\n    targets: [{{ url: \"{0}\" }}]\n    timeouts: {{ connect: 1s, request: 250ms }}\n    retry: {{ attempts: 10, backoff: 1ms, max_backoff: 2ms, on: [timeout], per_try_timeout: 100ms, min_retries: 10 }}\n    passive_health: {{ consecutive_failures: 0 }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: u }}\n  - {{ name: s, match: {{ path_prefix: /s }}, upstream: short }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    let slow = |path: &str| Request::get(gw.url(path)).header("x-mock-latency", "1s").body(empty()).unwrap();
    // Three tries of 100 ms each, then the last answer: 504 naming the per-try timeout.
    let got = send(&client(), slow("/r")).await;
    let p = got.assert_problem(504, "did not answer within 100ms (upstreams.u.retry.per_try_timeout)");
    assert_eq!(p["type"], "urn:bridgehead:problem:upstream-timeout");
    assert_eq!(m.request_count(), 3);
    // The request deadline (250 ms) cuts the tries short: at most three start, and the 504
    // names the deadline.
    let started = std::time::Instant::now();
    let got = send(&client(), slow("/s")).await;
    got.assert_problem(504, "(upstreams.short.timeouts.request)");
    assert!(started.elapsed() < std::time::Duration::from_millis(900), "{:?}", started.elapsed());
    let tries = m.request_count() - 3;
    assert!((2..=3).contains(&tries), "{tries} tries");
}
