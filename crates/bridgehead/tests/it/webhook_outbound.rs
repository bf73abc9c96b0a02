//! The outbound dispatcher (`webhooks.outbound`), in process against recording endpoints:
//! publishing behind auth, every intake refusal, signed fan-out verified by our verifier and
//! by the official Python library, idempotent ids, in-order delivery per key, 410 disabling an
//! endpoint, the circuit breaker, the SSRF guard, run-time endpoints with secret rotation, and
//! replays.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bridgehead_webhooks::signature::{Key, Scheme, Verifier};
use bytes::Bytes;
use http::{Request, Response};

use crate::support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY: &str = "publisher-key-1";

/// A recording endpoint answering `status` (changeable).
struct Endpoint {
    peer: Peer,
    got: Arc<Mutex<Vec<Request<Bytes>>>>,
    status: Arc<AtomicU16>,
}

impl Endpoint {
    async fn start() -> Endpoint {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(204));
        let (g, s) = (got.clone(), status.clone());
        let peer = Peer::start(move |req| {
            g.lock().unwrap().push(req);
            let mut res = Response::new(Bytes::from_static(b"ok"));
            *res.status_mut() = http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
            res
        })
        .await;
        Endpoint { peer, got, status }
    }

    fn requests(&self) -> Vec<Request<Bytes>> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.requests().iter().map(|r| serde_json::from_slice(r.body()).unwrap()).collect()
    }
}

fn header<'a>(r: &'a Request<Bytes>, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

fn config(dir: &std::path::Path, endpoints: &str, extra: &str) -> String {
    let schema = dir.join("order-created.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"},"total":{"type":"number","minimum":0}}}"#,
    )
    .unwrap();
    format!(
        "authenticators:\n  publishers:\n    api_key:\n      header: X-API-Key\n      keys: [{{ consumer: shop, sha256: \"{}\" }}]\nwebhooks:\n  event_types:\n    order.created: {{ schema: {} }}\n    order.cancelled: {{}}\n    invoice.paid: {{}}\n  outbound:\n    intake: /events\n    auth: [publishers]\n    retry_schedule: [50ms, 50ms, 50ms]\n    max_body: 2KiB\n{extra}    endpoints:\n{endpoints}",
        bridgehead_auth::apikey::sha256_hex(KEY),
        schema.display()
    )
}

fn publish(gw: &Gateway, body: &str) -> Request<TestBody> {
    Request::post(gw.url("/events"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(full(body.to_owned()))
        .unwrap()
}

fn verifier(secrets: &[&str]) -> Verifier {
    let keys = secrets.iter().map(|s| Key::parse(&Scheme::Standard, s).unwrap()).collect();
    Verifier::new(Scheme::Standard, keys, std::time::Duration::from_secs(300)).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_signed_and_delivered_to_matching_endpoints_once() {
    let (orders, invoices) = (Endpoint::start().await, Endpoint::start().await);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = format!(
        "      - {{ name: orders, url: \"{}\", events: [\"order.*\"], secret: \"{SECRET}\", allow_private_network: true }}\n      - {{ name: invoices, url: \"{}\", events: [\"invoice.*\"], secret: \"{SECRET}\", allow_private_network: true }}\n",
        orders.peer.url("/hooks/in?src=bridgehead"),
        invoices.peer.url("/invoices")
    );
    let gw = Gateway::start(&config(dir.path(), &endpoints, "")).await;

    // No key: the intake is behind its authenticators.
    let mut req = publish(&gw, r#"{"type":"order.created","data":{"id":1}}"#);
    req.headers_mut().remove("x-api-key");
    send(&client(), req).await.assert_problem(401, "");

    let got = send(
        &client(),
        publish(&gw, r#"{"type":"order.created","data":{"id":42,"total":9.5},"id":"evt-1"}"#),
    )
    .await;
    assert_eq!(got.status, 202, "{:?}", got.body);
    let v = got.json();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "{v}");
    assert_eq!(v["endpoints"], serde_json::json!(["orders"]));

    eventually(10, "the orders endpoint got the event", async || orders.count() == 1).await;
    let r = &orders.requests()[0];
    assert_eq!((r.method().as_str(), r.uri().to_string().as_str()), ("POST", "/hooks/in?src=bridgehead"));
    assert_eq!(header(r, "webhook-id"), id);
    assert_eq!(header(r, "content-type"), "application/json");
    assert!(header(r, "user-agent").starts_with("Bridgehead-Webhooks/"));
    assert!(header(r, "webhook-signature").starts_with("v1,"));
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["data"], serde_json::json!({"id": 42, "total": 9.5}));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    let verified = verifier(&[SECRET]).verify(r.headers(), r.body(), now()).unwrap();
    assert_eq!(verified.id.as_deref(), Some(id.as_str()));

    // The official library verifies the delivery too.
    if let Some(python) = python() {
        let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers/standardwebhooks_peer.py");
        let payload = dir.path().join("delivered.json");
        std::fs::write(&payload, r.body()).unwrap();
        let headers = serde_json::json!({
            "webhook-id": header(r, "webhook-id"),
            "webhook-timestamp": header(r, "webhook-timestamp"),
            "webhook-signature": header(r, "webhook-signature"),
        });
        let out = std::process::Command::new(&python)
            .args([peer, "verify", SECRET, payload.to_str().unwrap(), &headers.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The same id from the same publisher: acknowledged, not stored or delivered again.
    let again =
        send(&client(), publish(&gw, r#"{"type":"order.created","data":{"id":42},"id":"evt-1"}"#)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.json()["id"], id.as_str());
    let other = send(&client(), publish(&gw, r#"{"type":"invoice.paid","data":{"n":1}}"#)).await;
    assert_eq!(other.json()["endpoints"], serde_json::json!(["invoices"]));
    eventually(10, "the invoice", async || invoices.count() == 1).await;
    assert_eq!(orders.count(), 1);
    assert_eq!(invoices.requests()[0].uri().path(), "/invoices");

    let metrics = gw.metrics().await;
    for line in [
        r#"bridgehead_webhook_published_total{result="accepted"} 2"#,
        r#"bridgehead_webhook_published_total{result="duplicate"} 1"#,
        r#"bridgehead_webhook_deliveries_total{destination="endpoint:orders",outcome="delivered"} 1"#,
        r#"bridgehead_webhook_attempt_duration_seconds_count{destination="endpoint:orders"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    // The admin API lists the message and shows its delivery.
    let list = get(&gw.admin_url("/admin/webhooks/messages?type=order.created")).await.json();
    assert_eq!(list["messages"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["messages"][0]["source"], "outbound:publishers:shop");
    let m = get(&gw.admin_url(&format!("/admin/webhooks/messages/{id}"))).await.json();
    assert_eq!(m["deliveries"][0]["destination"], "endpoint:orders");
    assert_eq!(m["deliveries"][0]["state"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_intake_refusal_has_its_status_and_problem() {
    let e = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = format!(
        "      - {{ name: all, url: \"{}\", events: [\"*\"], secret: \"{SECRET}\", allow_private_network: true }}\n",
        e.peer.url("/")
    );
    let gw = Gateway::start(&config(dir.path(), &endpoints, "")).await;
    let mut req = publish(&gw, r#"{"type":"order.created","data":{"id":1}}"#);
    req.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    send(&client(), req)
        .await
        .assert_problem(415, "Content-Type is `text/plain`; the intake takes application/json");
    let big = format!(r#"{{"type":"order.cancelled","data":"{}"}}"#, "a".repeat(3000));
    send(&client(), publish(&gw, &big))
        .await
        .assert_problem(413, "larger than the intake's limit of 2048 bytes");
    send(&client(), publish(&gw, "{nope")).await.assert_problem(400, "the body is not JSON");
    let got = send(&client(), publish(&gw, r#"{"type":7,"id":"has space","extra":1}"#)).await;
    let p = got.assert_problem(400, "the body is not an event: 4 errors");
    assert_eq!(p["type"], "urn:bridgehead:problem:webhook-invalid-event");
    let pointers: Vec<&str> =
        p["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/type", "/id", "", "/extra"], "{p}");
    let got = send(&client(), publish(&gw, r#"{"type":"order.shipped","data":{}}"#)).await;
    let p = got.assert_problem(
        400,
        "no event type `order.shipped` is declared; known: invoice.paid, order.cancelled, order.created",
    );
    assert_eq!(p["known"].as_array().unwrap().len(), 3);
    let got = send(&client(), publish(&gw, r#"{"type":"order.created","data":{"id":"x","total":-1}}"#)).await;
    let p = got.assert_problem(400, "does not match the schema of its type: 2 errors");
    let mut errors: Vec<(String, String)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pointer"].as_str().unwrap().to_owned(), e["keyword"].as_str().unwrap().to_owned()))
        .collect();
    errors.sort();
    assert_eq!(errors, [("/data/id".into(), "type".into()), ("/data/total".into(), "minimum".into())]);
    let metrics = gw.metrics().await;
    for reason in ["content_type", "too_large", "not_json", "invalid_event", "unknown_event_type", "schema"] {
        let line = format!(r#"bridgehead_webhook_published_total{{result="{reason}"}} 1"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert_eq!(e.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_holds_back_only_the_later_ones_of_its_ordering_key() {
    let e = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = format!(
        "      - {{ name: all, url: \"{}\", events: [\"*\"], secret: \"{SECRET}\", allow_private_network: true }}\n",
        e.peer.url("/")
    );
    let gw = Gateway::start(
        &config(dir.path(), &endpoints, "")
            .replace("retry_schedule: [50ms, 50ms, 50ms]", "retry_schedule: [300ms, 300ms, 300ms]"),
    )
    .await;
    // The endpoint fails until told otherwise: the first of key k waits for its retry.
    e.status.store(500, Ordering::SeqCst);
    let ev = |key: &str, n: u32| {
        format!(r#"{{"type":"order.cancelled","data":{{"n":{n}}},"ordering_key":"{key}"}}"#)
    };
    assert_eq!(send(&client(), publish(&gw, &ev("k", 1))).await.status, 202);
    eventually(10, "the first attempt of k/1", async || e.count() == 1).await;
    assert_eq!(send(&client(), publish(&gw, &ev("k", 2))).await.status, 202);
    assert_eq!(send(&client(), publish(&gw, &ev("other", 3))).await.status, 202);
    // The other key is not held back (its attempt fails too, but it is made).
    eventually(10, "the other key's attempt", async || e.bodies().iter().any(|b| b["data"]["n"] == 3)).await;
    assert!(!e.bodies().iter().any(|b| b["data"]["n"] == 2), "k/2 went before k/1 was delivered");
    e.status.store(200, Ordering::SeqCst);
    eventually(10, "k/2 delivered", async || {
        e.requests().last().is_some_and(|_| e.bodies().iter().any(|b| b["data"]["n"] == 2))
    })
    .await;
    // In the order of their key: every attempt of k/1 before the first of k/2.
    let ns: Vec<u64> =
        e.bodies().iter().filter_map(|b| b["data"]["n"].as_u64()).filter(|n| *n != 3).collect();
    let first_2 = ns.iter().position(|n| *n == 2).unwrap();
    assert!(ns[..first_2].iter().all(|n| *n == 1) && ns[first_2..].iter().all(|n| *n == 2), "{ns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_410_is_disabled_until_enabled_again() {
    let e = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = format!(
        "      - {{ name: gone, url: \"{}\", events: [\"*\"], secret: \"{SECRET}\", allow_private_network: true }}\n",
        e.peer.url("/")
    );
    let gw = Gateway::start(&config(dir.path(), &endpoints, "")).await;
    e.status.store(410, Ordering::SeqCst);
    let got = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{"n":1}}"#)).await;
    let id = got.json()["id"].as_str().unwrap().to_owned();
    let admin = |p: &str| gw.admin_url(p);
    eventually(10, "disabled", async || {
        get(&admin("/admin/webhooks/endpoints/gone")).await.json()["enabled"] == false
    })
    .await;
    let v = get(&admin("/admin/webhooks/endpoints/gone")).await.json();
    assert_eq!(v["disabled_reason"], "answered 410 Gone", "{v}");
    assert_eq!(e.count(), 1, "no attempt after the 410");
    // New events skip a disabled endpoint.
    let later = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{"n":2}}"#)).await;
    assert_eq!(later.json()["endpoints"], serde_json::json!([]));
    // Enabled again (the endpoint is back): the waiting delivery goes out.
    e.status.store(200, Ordering::SeqCst);
    let res =
        send(&client(), Request::post(admin("/admin/webhooks/endpoints/gone/enable")).body(empty()).unwrap())
            .await;
    assert_eq!((res.status, res.json()["enabled"].clone()), (200, serde_json::json!(true)));
    eventually(10, "delivered after enable", async || {
        get(&admin(&format!("/admin/webhooks/messages/{id}"))).await.json()["deliveries"][0]["state"]
            == "delivered"
    })
    .await;
    // Disabling names an unknown endpoint precisely.
    let res = send(
        &client(),
        Request::post(admin("/admin/webhooks/endpoints/nope/disable")).body(empty()).unwrap(),
    )
    .await;
    res.assert_problem(404, "no endpoint is named `nope`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_holds_deliveries_without_spending_their_attempts() {
    let e = Endpoint::start().await;
    e.status.store(500, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = format!(
        "      - {{ name: down, url: \"{}\", events: [\"*\"], secret: \"{SECRET}\", allow_private_network: true }}\n",
        e.peer.url("/")
    );
    let breaker = "    circuit_breaker: { min_requests: 2, failure_ratio: 0.5, open_for: 1h }\n";
    let gw = Gateway::start(&config(dir.path(), &endpoints, breaker)).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let got =
            send(&client(), publish(&gw, &format!(r#"{{"type":"order.cancelled","data":{{"n":{n}}}}}"#)))
                .await;
        ids.push(got.json()["id"].as_str().unwrap().to_owned());
    }
    eventually(10, "the breaker opened", async || {
        get(&gw.admin_url("/admin/webhooks/endpoints/down")).await.json()["accepting"] == false
    })
    .await;
    let tried = e.count();
    assert!(tried >= 2, "{tried}");
    // Every delivery is still pending, and none used up its schedule (4 attempts each).
    let s = bridgehead_state::Store::open(&format!("sqlite://{}/state.db", gw.dir.path().display()))
        .await
        .unwrap();
    for id in &ids {
        let d = &s.webhook_deliveries(id).await.unwrap()[0];
        assert_eq!(d.state, "pending", "{d:?}");
    }
    let attempts: i64 = {
        let mut n = 0;
        for id in &ids {
            n += s.webhook_deliveries(id).await.unwrap()[0].attempts;
        }
        n
    };
    assert_eq!(attempts as usize, tried, "attempts are counted only when made");
    assert!(tried < 16, "{tried} attempts: the breaker did not hold them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_internal_addresses_after_dns() {
    let e = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    // `localhost` passes the config check (a name), and resolves to loopback: refused on connect.
    let url = format!("http://localhost:{}/", e.peer.addr.port());
    let endpoints =
        format!("      - {{ name: inside, url: \"{url}\", events: [\"*\"], secret: \"{SECRET}\" }}\n");
    let gw = Gateway::start(&config(dir.path(), &endpoints, "")).await;
    let got = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{}}"#)).await;
    let id = got.json()["id"].as_str().unwrap().to_owned();
    eventually(10, "an attempt failed", async || {
        get(&gw.admin_url(&format!("/admin/webhooks/messages/{id}"))).await.json()["deliveries"][0]["attempts"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let m = get(&gw.admin_url(&format!("/admin/webhooks/messages/{id}"))).await.json();
    let error = m["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("localhost resolves only to refused addresses") && error.contains("loopback"),
        "{error}"
    );
    assert!(error.contains("allow_private_network: true"), "{error}");
    assert_eq!(e.count(), 0, "nothing reached the internal address");

    // An internal IP literal is refused by the config check already.
    let path = dir.path().join("literal.yaml");
    let literal = format!(
        "      - {{ name: meta, url: \"http://169.254.169.254/latest\", events: [\"*\"], secret: \"{SECRET}\" }}\n"
    );
    std::fs::write(&path, config(dir.path(), &literal, "")).unwrap();
    let err = bridgehead_config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("webhooks.outbound.endpoints[0].url") && err.contains("link-local and cloud metadata"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_endpoints_rotate_secrets_and_replay() {
    let e = Endpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(dir.path(), "      []\n", "")).await;
    let admin = |p: &str| gw.admin_url(p);
    let post = |p: &str, body: &str| {
        Request::post(admin(p))
            .header("content-type", "application/json")
            .body(full(body.to_owned()))
            .unwrap()
    };
    // Refusals first: a bad URL, an internal address, a duplicate name.
    let res = send(
        &client(),
        post("/admin/webhooks/endpoints", r#"{"name":"crm","url":"ftp://x","events":["*"]}"#),
    )
    .await;
    res.assert_problem(400, "url: `ftp://x` must start with http:// or https://");
    let internal = format!(r#"{{"name":"crm","url":"{}","events":["*"]}}"#, e.peer.url("/crm"));
    send(&client(), post("/admin/webhooks/endpoints", &internal)).await.assert_problem(400, "loopback");
    let body = format!(
        r#"{{"name":"crm","url":"{}","events":["order.*"],"allow_private_network":true}}"#,
        e.peer.url("/crm")
    );
    let res = send(&client(), post("/admin/webhooks/endpoints", &body)).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    let first = res.json()["secret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_"));
    send(&client(), post("/admin/webhooks/endpoints", &body))
        .await
        .assert_problem(409, "an endpoint named `crm` exists");
    let list = get(&admin("/admin/webhooks/endpoints")).await.json();
    assert_eq!(list["endpoints"][0]["name"], "crm");
    assert!(list["endpoints"][0].get("secret").is_none(), "secrets are never listed: {list}");

    let got = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{"n":1}}"#)).await;
    assert_eq!(got.json()["endpoints"], serde_json::json!(["crm"]));
    eventually(10, "delivered with the first secret", async || e.count() == 1).await;
    verifier(&[&first]).verify(e.requests()[0].headers(), e.requests()[0].body(), now()).unwrap();

    // Rotation: both secrets sign during the grace.
    let res = send(&client(), post("/admin/webhooks/endpoints/crm/rotate-secret", r#"{"grace":"1h"}"#)).await;
    assert_eq!(res.status, 200);
    let second = res.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(res.json()["secrets"], 2);
    let got = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{"n":2}}"#)).await;
    let id2 = got.json()["id"].as_str().unwrap().to_owned();
    eventually(10, "the second event", async || e.count() == 2).await;
    let r = &e.requests()[1];
    assert_eq!(header(r, "webhook-signature").split(' ').count(), 2, "{}", header(r, "webhook-signature"));
    verifier(&[&first]).verify(r.headers(), r.body(), now()).unwrap();
    verifier(&[&second]).verify(r.headers(), r.body(), now()).unwrap();

    // Replays: one message again (same webhook-id), then every delivered one of the endpoint.
    let res = send(&client(), post(&format!("/admin/webhooks/messages/{id2}/replay"), "")).await;
    assert_eq!(res.json()["redelivered"], 1);
    eventually(10, "replayed", async || e.count() == 3).await;
    assert_eq!(header(&e.requests()[2], "webhook-id"), id2);
    let res =
        send(&client(), post("/admin/webhooks/endpoints/crm/replay", r#"{"all":true,"since":0}"#)).await;
    assert_eq!(res.json()["redelivered"], 2);
    eventually(10, "both replayed", async || e.count() == 5).await;
    let res = send(&client(), post("/admin/webhooks/endpoints/crm/replay", r#"{"since":"yesterday"}"#)).await;
    res.assert_problem(400, "since must be Unix milliseconds or RFC 3339");
    // Nothing failed: a failed-only replay finds nothing.
    let res = send(&client(), post("/admin/webhooks/endpoints/crm/replay", "")).await;
    assert_eq!(res.json()["redelivered"], 0);

    let res =
        send(&client(), Request::delete(admin("/admin/webhooks/endpoints/crm")).body(empty()).unwrap()).await;
    assert_eq!(res.status, 204);
    let got = send(&client(), publish(&gw, r#"{"type":"order.cancelled","data":{"n":3}}"#)).await;
    assert_eq!(got.json()["endpoints"], serde_json::json!([]));
}
