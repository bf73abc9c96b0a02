//! Webhook receivers (`webhooks.inbound`), in process against the mock upstream: a verified
//! delivery is stored and forwarded once; replays are acknowledged and not forwarded; every
//! refusal answers with its status and problem body and is kept as a dead letter; a target
//! that fails is retried on the schedule until it answers, or the delivery dies.

use bridgehead_mock::{MockOptions, MockServer};
use bridgehead_state::Store;
use bridgehead_webhooks::signature::{Key, Scheme, Signer};
use http::Request;

use crate::support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(upstream: &str, dir: &std::path::Path, extra: &str) -> String {
    let schema = dir.join("order.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["type","data"],"properties":{"type":{"type":"string"},"data":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"},"total":{"type":"number","minimum":0}}}}}"#,
    )
    .unwrap();
    format!(
        "upstreams:\n  orders:\n    targets: [{{ url: \"{upstream}\" }}]\n    timeouts: {{ connect: 1s, request: 2s }}\nwebhooks:\n  inbound:\n    - name: shop\n      path: /hooks/shop\n      verify: {{ scheme: standard, secret: \"{SECRET}\" }}\n      schema: {}\n      forward: {{ upstream: orders, path: /internal/events }}\n      retry_schedule: [50ms, 50ms]\n      max_body: 4KiB\n{extra}",
        schema.display()
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A request to `url` signed as Standard Webhooks would, with `id` at `ts`.
fn signed(url: &str, id: &str, ts: i64, body: &str) -> Request<TestBody> {
    let signer = Signer::new(Scheme::Standard, vec![Key::parse(&Scheme::Standard, SECRET).unwrap()]).unwrap();
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in signer.sign(id, ts, body.as_bytes()).unwrap() {
        req = req.header(k, v);
    }
    req.body(full(body.to_owned())).unwrap()
}

async fn store(gw: &Gateway) -> Store {
    Store::open(&format!("sqlite://{}/state.db", gw.dir.path().display())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_delivery_is_stored_then_forwarded_once() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), dir.path(), "")).await;
    let body = r#"{"type":"order.created","data":{"id":42,"total":9.5}}"#;
    let got = send(&client(), signed(&gw.url("/hooks/shop"), "msg_1", now(), body)).await;
    assert_eq!(got.status, 202, "{:?}", got.body);
    let message_id = got.json()["message_id"].as_str().unwrap().to_owned();
    assert!(message_id.starts_with("msg_"));

    eventually(10, "the upstream got the event", async || m.request_count() == 1).await;
    let r = &m.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/internal/events"));
    assert_eq!(r.body, body, "the raw bytes, as received");
    let h = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(h("x-bridgehead-webhook"), Some("shop"));
    assert_eq!(h("x-bridgehead-message-id"), Some(message_id.as_str()));
    assert_eq!(h("content-type"), Some("application/json"));
    assert_eq!(h("webhook-id"), Some("msg_1"));
    assert_eq!(h("webhook-signature"), None, "signatures are not passed on");

    // The same webhook-id again: acknowledged, not stored or forwarded again.
    let again = send(&client(), signed(&gw.url("/hooks/shop"), "msg_1", now(), body)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.json()["message_id"], message_id.as_str());
    // A new message after it arrives; the replay never does.
    let got = send(&client(), signed(&gw.url("/hooks/shop"), "msg_2", now(), body)).await;
    assert_eq!(got.status, 202);
    eventually(10, "the second event", async || m.request_count() == 2).await;
    assert_eq!(
        m.requests()
            .iter()
            .filter(|r| r.headers.iter().any(|(k, v)| k == "webhook-id" && v == "msg_1"))
            .count(),
        1
    );

    let s = store(&gw).await;
    let d = &s.webhook_deliveries(&message_id).await.unwrap()[0];
    assert_eq!((d.state.as_str(), d.attempts, d.last_status), ("delivered", 1, Some(200)));
    let metrics = gw.metrics().await;
    for line in [
        r#"bridgehead_webhook_received_total{receiver="shop",result="accepted"} 2"#,
        r#"bridgehead_webhook_received_total{receiver="shop",result="duplicate"} 1"#,
        r#"bridgehead_webhook_deliveries_total{destination="forward:shop",outcome="delivered"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_problem_and_dead_letter() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), dir.path(), "")).await;
    let url = gw.url("/hooks/shop");
    let good = r#"{"type":"order.created","data":{"id":42}}"#;

    // Signature: tampered body, expired timestamp, missing header.
    let mut req = signed(&url, "m1", now(), good);
    *req.body_mut() = full(r#"{"type":"order.created","data":{"id":43}}"#);
    let got = send(&client(), req).await;
    let p = got.assert_problem(401, "webhook-signature: no signature matches a configured secret");
    assert_eq!(
        (p["type"].as_str(), p["header"].as_str(), p["reason"].as_str()),
        (Some("urn:bridgehead:problem:webhook-signature"), Some("webhook-signature"), Some("no_match"))
    );
    let got = send(&client(), signed(&url, "m2", now() - 3600, good)).await;
    let p = got.assert_problem(401, "webhook-timestamp: timestamp expired");
    assert_eq!(p["reason"], "expired");
    let mut req = signed(&url, "m3", now(), good);
    req.headers_mut().remove("webhook-signature");
    send(&client(), req).await.assert_problem(401, "webhook-signature: missing");

    // Content type, size, JSON, schema.
    let mut req = signed(&url, "m4", now(), good);
    req.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    send(&client(), req)
        .await
        .assert_problem(415, "Content-Type is `text/plain`; this receiver takes application/json");
    let big = format!(r#"{{"type":"x","data":{{"id":1,"pad":"{}"}}}}"#, "a".repeat(5000));
    send(&client(), signed(&url, "m5", now(), &big))
        .await
        .assert_problem(413, "larger than this receiver's limit of 4096 bytes");
    send(&client(), signed(&url, "m6", now(), "{not json"))
        .await
        .assert_problem(400, "the body is not JSON: key must be a string at line 1 column 2");
    let got = send(&client(), signed(&url, "m7", now(), r#"{"data":{"id":"x","total":-1}}"#)).await;
    let p = got.assert_problem(400, "does not match the receiver's schema: 3 errors");
    let mut errors: Vec<(String, String)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pointer"].as_str().unwrap().to_owned(), e["keyword"].as_str().unwrap().to_owned()))
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("".into(), "required".into()),
            ("/data/id".into(), "type".into()),
            ("/data/total".into(), "minimum".into())
        ]
    );
    assert!(p["errors"][0]["message"].is_string());

    // Nothing reached the upstream; every refusal is a dead letter, signatures redacted.
    let s = store(&gw).await;
    let dls = s.webhook_dead_letters(Some("inbound:shop"), None, 50).await.unwrap();
    let mut reasons: Vec<&str> = dls.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["content_type", "not_json", "schema", "signature", "signature", "signature", "too_large"]
    );
    for d in &dls {
        assert!(!d.headers_json.contains("v1,"), "signature kept: {}", d.headers_json);
    }
    let listed = dls.iter().find(|d| d.reason == "schema").unwrap();
    let schema_dl = s.webhook_dead_letter(&listed.id).await.unwrap().unwrap();
    assert_eq!(schema_dl.body, br#"{"data":{"id":"x","total":-1}}"#);
    assert_eq!(
        (listed.body.len(), listed.body_kept_bytes),
        (0, schema_dl.body.len() as i64),
        "listed without it"
    );
    assert!(schema_dl.detail.contains("/data/total"), "{}", schema_dl.detail);
    assert!(
        schema_dl.headers_json.contains(r#"["webhook-signature","[redacted]"]"#),
        "{}",
        schema_dl.headers_json
    );
    assert_eq!(dls.iter().find(|d| d.reason == "too_large").unwrap().body_kept_bytes, 0);
    assert_eq!(m.request_count(), 0);

    // Other methods are not the receiver's: with no other route, 405 naming POST.
    let got = send(&client(), Request::get(&url).body(empty()).unwrap()).await;
    let p = got.assert_problem(405, "GET");
    assert!(got.header("allow").contains("POST"), "{p}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"bridgehead_webhook_received_total{receiver="shop",result="signature"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_retried_on_the_schedule_then_the_delivery_dies() {
    // Two failures, then service: delivered on the third attempt.
    let m = MockServer::start(MockOptions { fail_first: 2, fail_status: 503, ..MockOptions::default() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), dir.path(), "")).await;
    let body = r#"{"type":"order.created","data":{"id":1}}"#;
    let got = send(&client(), signed(&gw.url("/hooks/shop"), "r1", now(), body)).await;
    assert_eq!(got.status, 202);
    let id = got.json()["message_id"].as_str().unwrap().to_owned();
    let s = store(&gw).await;
    eventually(10, "delivered on the third attempt", async || {
        s.webhook_deliveries(&id).await.unwrap()[0].state == "delivered"
    })
    .await;
    let d = &s.webhook_deliveries(&id).await.unwrap()[0];
    assert_eq!((d.attempts, d.last_status), (3, Some(200)));
    assert_eq!(m.request_count(), 3);

    // Always failing: two retries on the schedule, then dead.
    m.set_faults(bridgehead_mock::Faults { fail_rate: 1.0, fail_status: 500, ..Default::default() }).unwrap();
    let got = send(&client(), signed(&gw.url("/hooks/shop"), "r2", now(), body)).await;
    let id = got.json()["message_id"].as_str().unwrap().to_owned();
    eventually(10, "dead after the schedule", async || {
        s.webhook_deliveries(&id).await.unwrap()[0].state == "dead"
    })
    .await;
    let d = &s.webhook_deliveries(&id).await.unwrap()[0];
    assert_eq!((d.attempts, d.last_status, d.last_error.as_deref()), (3, Some(500), Some("HTTP 500")));
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains(r#"bridgehead_webhook_deliveries_total{destination="forward:shop",outcome="dead"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"bridgehead_webhook_deliveries_total{destination="forward:shop",outcome="retry"} 4"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_url_verification_is_answered_and_not_forwarded() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();

    let yaml = format!(
        "upstreams:\n  orders:\n    targets: [{{ url: \"{}\" }}]\nwebhooks:\n  inbound:\n    - name: slack\n      path: /hooks/slack\n      verify: {{ scheme: slack, secret: slack-signing-secret }}\n      forward: {{ upstream: orders, path: /slack }}\n",
        m.url()
    );
    let gw = Gateway::start(&yaml).await;
    let signer =
        Signer::new(Scheme::Slack, vec![Key::parse(&Scheme::Slack, "slack-signing-secret").unwrap()])
            .unwrap();
    let post = |body: &'static str, ctype: &'static str| {
        let mut req = Request::post(gw.url("/hooks/slack")).header("content-type", ctype);
        for (k, v) in signer.sign("x", now(), body.as_bytes()).unwrap() {
            req = req.header(k, v);
        }
        req.body(full(body)).unwrap()
    };
    let got = send(&client(), post(r#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","token":"t"}"#, "application/json")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json(),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    // An event is stored and forwarded, deduplicated by its event_id; a slash command arrives
    // as a form.
    let ev = r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#;
    assert_eq!(send(&client(), post(ev, "application/json")).await.status, 202);
    assert_eq!(send(&client(), post(ev, "application/json")).await.status, 200);
    assert_eq!(
        send(&client(), post("command=%2Fdeploy&text=now", "application/x-www-form-urlencoded")).await.status,
        202
    );
    eventually(10, "two forwarded", async || m.request_count() == 2).await;
    assert!(m.requests().iter().all(|r| r.path == "/slack"));
}

/// What the destination reads as the gateway's word is the gateway's: a sender cannot pass on
/// identity headers, forwarding headers, credentials or headers named in `Connection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_cleaned_like_a_proxy_route() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), dir.path(), "")).await;
    let mut req = signed(&gw.url("/hooks/shop"), "h1", now(), r#"{"type":"t","data":{"id":1}}"#);
    for (k, v) in [
        ("x-consumer-id", "admin"),
        ("x-forwarded-for", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9"),
        ("x-bridgehead-message-id", "msg_forged"),
        ("authorization", "Bearer secret-token"),
        ("x-api-key", "secret-key"),
        ("connection", "x-named-hop"),
        ("x-named-hop", "1"),
        ("x-github-event", "kept"),
    ] {
        req.headers_mut().insert(http::HeaderName::from_static(k), v.parse().unwrap());
    }
    assert_eq!(send(&client(), req).await.status, 202);
    eventually(10, "forwarded", async || m.request_count() == 1).await;
    let r = &m.requests()[0];
    let h = |n: &str| r.headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    for gone in ["x-consumer-id", "forwarded", "authorization", "x-api-key", "x-named-hop"] {
        assert!(h(gone).is_empty(), "{gone} reached the destination: {:?}", r.headers);
    }
    assert_eq!(h("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(h("x-forwarded-proto"), ["http"]);
    assert_ne!(h("x-bridgehead-message-id"), ["msg_forged"]);
    assert_eq!(h("x-github-event"), ["kept"]);
    // And none of it is stored.
    let s = store(&gw).await;
    let id = h("x-bridgehead-message-id")[0].to_owned();
    assert_eq!(s.webhook_deliveries(&id).await.unwrap()[0].state, "delivered");
}

/// Dead letters are replayed once the config is fixed: a schema refusal after the schema is
/// relaxed, a signature refusal after the secret is corrected (checked as of when it came),
/// a forged one only when told to skip the signature; a request refused before its signature
/// was checked keeps only the start of a large body, and cannot be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_replayed_through_the_admin_api_once_fixed() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "whsec_d3JvbmctYnV0LXZhbGlkLWJhc2U2NA==";
    let gw = Gateway::start(
        &config(&m.url(), dir.path(), "").replace(SECRET, wrong).replace("max_body: 4KiB", "max_body: 64KiB"),
    )
    .await;
    let url = gw.url("/hooks/shop");
    // Refused for the signature (the gateway has the wrong secret), then for the schema.
    let good = r#"{"type":"order.created","data":{"id":7}}"#;
    send(&client(), signed(&url, "s1", now(), good)).await.assert_problem(401, "no signature matches");
    let forged = Request::post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "f1")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", "v1,AAAA")
        .body(full(good))
        .unwrap();
    send(&client(), forged).await.assert_problem(401, "no signature matches");
    let big = format!(r#"{{"type":"x","data":{{"id":1,"pad":"{}"}}}}"#, "a".repeat(6000));
    let mut req = signed(&url, "b1", now(), &big);
    req.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    send(&client(), req).await.assert_problem(415, "Content-Type");

    let s = store(&gw).await;
    let dls = s.webhook_dead_letters(None, None, 10).await.unwrap();
    let by = |want: &str| {
        dls.iter()
            .find(|d| {
                serde_json::from_str::<Vec<(String, String)>>(&d.headers_json)
                    .unwrap()
                    .iter()
                    .any(|(k, v)| k == "webhook-id" && v == want)
            })
            .unwrap()
            .id
            .clone()
    };
    let (s1, f1, b1) = (by("s1"), by("f1"), by("b1"));
    let admin = |path: &str| gw.admin_url(path);
    // The listing and one letter, never the signature.
    let list = get(&admin("/admin/webhooks/dead-letters?receiver=shop")).await.json();
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 3);
    // Paged two by two: the cursor brings the third, none twice.
    let page1 = get(&admin("/admin/webhooks/dead-letters?limit=2")).await.json();
    let cursor = page1["next_before"].as_str().unwrap().to_owned();
    let page2 = get(&admin(&format!("/admin/webhooks/dead-letters?limit=2&before={cursor}"))).await.json();
    assert_eq!(page2["dead_letters"].as_array().unwrap().len(), 1);
    assert_ne!(page2["dead_letters"][0]["id"], page1["dead_letters"][0]["id"]);
    assert_ne!(page2["dead_letters"][0]["id"], page1["dead_letters"][1]["id"]);
    get(&admin("/admin/webhooks/dead-letters?before=yesterday")).await.assert_problem(400, "next_before");
    get(&admin("/admin/webhooks/dead-letters?limit=0")).await.assert_problem(400, "limit must be 1 to 500");
    let one = get(&admin(&format!("/admin/webhooks/dead-letters/{s1}"))).await.json();
    assert_eq!((one["reason"].as_str(), one["body"].as_str()), (Some("signature"), Some(good)));
    assert!(!one.to_string().contains("v1,"), "{one}");
    let replay = |id: String, body: &'static str| {
        let url = admin(&format!("/admin/webhooks/dead-letters/{id}/replay"));
        async move { send(&client(), Request::post(url).body(full(body)).unwrap()).await }
    };
    // Still the wrong secret: refused again, 409 with the reason.
    replay(s1.clone(), "").await.assert_problem(409, "still refused (signature)");

    // The secret fixed by a reload: the replay verifies, as of when the request came.
    std::fs::write(&gw.config_path, std::fs::read_to_string(&gw.config_path).unwrap().replace(wrong, SECRET))
        .unwrap();
    gw.reloader.reload().await.unwrap();
    let got = replay(s1.clone(), "").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.json()["status"], "accepted");
    eventually(10, "the replayed event is forwarded", async || m.request_count() == 1).await;
    assert_eq!(m.requests()[0].body, good);
    // Replaying it again is refused: it was replayed already.
    replay(s1.clone(), "")
        .await
        .assert_problem(409, "still refused (already_replayed): it was replayed already, into msg_");
    let one = get(&admin(&format!("/admin/webhooks/dead-letters/{s1}"))).await.json();
    assert!(
        one["replayed_at_ms"].is_i64() && one["message_id"].as_str().unwrap().starts_with("msg_"),
        "{one}"
    );

    // A forged signature stays refused unless the operator says to skip it.
    replay(f1.clone(), "").await.assert_problem(409, "still refused (signature)");
    let got = replay(f1.clone(), r#"{"skip_signature": true}"#).await;
    assert_eq!(got.json()["status"], "accepted");
    // Refused before its signature was checked: only 4 KiB kept, so it cannot be replayed.
    let one = get(&admin(&format!("/admin/webhooks/dead-letters/{b1}"))).await.json();
    assert_eq!(
        (one["body_bytes"].as_i64(), one["body_kept_bytes"].as_i64()),
        (Some(big.len() as i64), Some(4096))
    );
    replay(b1, r#"{"skip_signature": true}"#).await.assert_problem(409, "still refused (body_not_kept)");
    replay("dlq_missing".into(), "").await.assert_problem(404, "no dead letter `dlq_missing`");
    replay(f1, r#"{"skip": 1}"#).await.assert_problem(400, "skip_signature");
    // The message view: its deliveries with the attempt log.
    let msg = one_message(&gw, &m).await;
    assert_eq!(msg["deliveries"][0]["state"], "delivered");
    assert_eq!(msg["deliveries"][0]["attempt_log"][0]["status"], 200);
}

async fn one_message(gw: &Gateway, m: &MockServer) -> serde_json::Value {
    let id = m.requests()[0].headers.iter().find(|(k, _)| k == "x-bridgehead-message-id").unwrap().1.clone();
    eventually(10, "the delivery recorded", async || {
        get(&gw.admin_url(&format!("/admin/webhooks/messages/{id}"))).await.json()["deliveries"][0]["state"]
            == "delivered"
    })
    .await;
    get(&gw.admin_url(&format!("/admin/webhooks/messages/{id}"))).await.json()
}
