//! Edge authentication through the running gateway: JWT (key file, JWKS URL with rotation and an
//! unreachable identity provider), API keys, client certificates, token introspection, scopes,
//! identity headers and credential stripping.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bridgehead_auth::jwt::{Algorithm, keygen};
use bridgehead_mock::{MockOptions, MockServer};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::support::*;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A signing key with its kid, as an identity provider would hold it.
struct Idp {
    key: keygen::Generated,
    alg: Algorithm,
}

impl Idp {
    fn new(alg: Algorithm) -> Self {
        Self { key: keygen::generate(alg).unwrap(), alg }
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        bridgehead_auth::jwt::sign(
            &claims,
            self.key.private_pem.as_bytes(),
            self.alg,
            Some(&self.key.kid),
            None,
        )
        .unwrap()
    }

    /// A token with the usual claims, overridden by `extra`.
    fn token(&self, extra: serde_json::Value) -> String {
        let mut claims = json!({
            "iss": "https://idp.test", "aud": "orders-api", "sub": "user-7",
            "exp": now() + 600, "iat": now(), "scope": "orders.read profile",
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        self.sign(claims)
    }

    fn jwk(&self) -> serde_json::Value {
        self.key.jwks["keys"][0].clone()
    }
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn call(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(empty()).unwrap()).await
}

async fn bearer(url: &str, token: &str) -> Got {
    call(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Asserts a 401 whose RFC 6750 challenge and problem body carry `reason`.
fn assert_refused(got: &Got, reason: &str) {
    let p = got.assert_problem(401, "");
    assert_eq!(p["reason"], reason, "{p}");
    assert_eq!(p["type"], "urn:bridgehead:problem:unauthenticated");
    let challenge = got.header("www-authenticate");
    assert!(challenge.starts_with("Bearer realm=\"bridgehead\", error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("error_description=\""), "{challenge}");
}

fn jwt_config(upstream: &str, authenticator: &str, extra_route: &str) -> String {
    format!(
        "authenticators:\n{authenticator}\nupstreams:\n  u:\n    targets: [{{ url: \"{upstream}\" }}]\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: u, auth: [idp]{extra_route} }}\n  - {{ name: public, match: {{ path_prefix: /public }}, upstream: u }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_a_public_key_file_admits_good_tokens_and_refuses_the_negative_matrix() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let idp = Idp::new(Algorithm::ES256);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, &idp.key.public_pem).unwrap();
    let auth = format!(
        "  idp:\n    jwt: {{ public_key_file: {}, issuer: \"https://idp.test\", audiences: [orders-api], algorithms: [ES256], leeway: 5s, claims_to_headers: {{ scope: X-Scopes }} }}",
        pem.display()
    );
    let gw = Gateway::start(&jwt_config(&m.url(), &auth, ", require_scopes: [orders.read]")).await;
    let url = gw.url("/api/orders");

    // No credentials: a bare challenge, no error code (RFC 6750 §3.1).
    let got = call(&url, &[]).await;
    let p = got.assert_problem(401, "no credentials");
    assert_eq!(p["reason"], "missing_credentials");
    assert_eq!(got.header("www-authenticate"), "Bearer realm=\"bridgehead\"");

    // A good token: admitted, identity upstream, credential stripped, forged identity replaced.
    let good = idp.token(json!({}));
    let got = call(
        &url,
        &[("authorization", &format!("Bearer {good}")), ("x-consumer-id", "admin"), ("x-scopes", "all")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let echo = got.json();
    assert_eq!(echo["headers"]["x-consumer-id"], "user-7");
    assert_eq!(echo["headers"]["x-scopes"], "orders.read profile");
    assert!(echo["headers"].get("authorization").is_none(), "credential forwarded: {echo}");
    // Repeated: served from the verified-token cache, same answer.
    assert_eq!(bearer(&url, &good).await.status, 200);

    // Missing scope → 403 insufficient_scope.
    let got = bearer(&url, &idp.token(json!({"scope": "profile"}))).await;
    let p = got.assert_problem(403, "orders.read");
    assert_eq!(p["reason"], "insufficient_scope");
    assert!(got.header("www-authenticate").contains("error=\"insufficient_scope\""));
    // `scp` as an array counts too.
    let got = bearer(&url, &idp.token(json!({"scope": null, "scp": ["orders.read"]}))).await;
    assert_eq!(got.status, 200);

    // The negative matrix, each refused with its reason.
    let [h, c, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let other = Idp::new(Algorithm::ES256);
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let none_header_caps = b64(br#"{"alg":"NoNe"}"#);
    let payload = b64(json!({"iss":"https://idp.test","aud":"orders-api","sub":"x","exp":now()+600})
        .to_string()
        .as_bytes());
    let embedded = {
        let header = json!({"alg":"ES256","kid":other.key.kid,"jwk":other.jwk()});
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), payload);
        let sig = bridgehead_auth::jwt::sign(
            &json!({"x":1}),
            other.key.private_pem.as_bytes(),
            Algorithm::ES256,
            None,
            None,
        )
        .unwrap();
        // Signature over another input: the point is that the embedded key is refused first.
        format!("{signing_input}.{}", sig.rsplit('.').next().unwrap())
    };
    let tampered_claims = b64(
        json!({"iss":"https://idp.test","aud":"orders-api","sub":"admin","exp":now()+600,"scope":"orders.read"})
            .to_string()
            .as_bytes(),
    );
    let cases: Vec<(String, &str)> = vec![
        (format!("{none_header}.{payload}."), "alg_none"),
        (format!("{none_header_caps}.{payload}."), "alg_none"),
        (idp.token(json!({"exp": now() - 3600})), "expired"),
        (idp.token(json!({"nbf": now() + 3600})), "not_yet_valid"),
        (idp.token(json!({"iss": "https://evil.test"})), "wrong_issuer"),
        (idp.token(json!({"aud": "other-api"})), "wrong_audience"),
        (idp.token(json!({"exp": null})), "missing_claim"),
        // A PEM key has no kid, so a token naming another kid is checked against it and fails.
        (other.token(json!({})), "bad_signature"),
        // RS/HS confusion: the public key used as an HMAC secret.
        (
            bridgehead_auth::jwt::sign(
                &json!({"iss":"https://idp.test","aud":"orders-api","sub":"x","exp":now()+600}),
                idp.key.public_pem.as_bytes(),
                Algorithm::HS256,
                Some(&idp.key.kid),
                None,
            )
            .unwrap(),
            "alg_not_allowed",
        ),
        (embedded, "embedded_key"),
        (format!("{h}.{tampered_claims}.{s}"), "bad_signature"),
        // 40 characters decode to 30 bytes: valid base64url, too short for an ES256 signature.
        (format!("{h}.{c}.{}", &s[..40]), "bad_signature"),
        (format!("{h}.{c}+/.{s}"), "malformed"),
        (format!("{h}.{c}.{s}.{s}"), "malformed"),
        (format!("{h}.{}", "A".repeat(20_000)), "too_large"),
        (
            format!(r#"{{"payload":"{c}","signatures":[{{"protected":"{h}","signature":"{s}"}}]}}"#),
            "json_serialization",
        ),
    ];
    for (token, reason) in &cases {
        let got = bearer(&url, token).await;
        assert_refused(&got, reason);
        assert!(!String::from_utf8_lossy(&got.body).contains(token.as_str()), "token echoed");
    }
    let metrics = get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("bridgehead_auth_attempts_total{authenticator=\"idp\",result=\"admitted\"}"),
        "{text}"
    );
    assert!(
        text.contains("bridgehead_auth_attempts_total{authenticator=\"idp\",result=\"expired\"} 1"),
        "{text}"
    );

    // Public routes stay public, and forged identity headers (any authenticator's) never reach
    // the upstream, nor do their underscore aliases.
    let got = call(
        &gw.url("/public/x"),
        &[("x-consumer-id", "admin"), ("x-scopes", "all"), ("x_consumer_id", "admin")],
    )
    .await;
    assert_eq!(got.status, 200);
    let headers = &got.json()["headers"];
    for h in ["x-consumer-id", "x-scopes", "x_consumer_id"] {
        assert!(headers.get(h).is_none(), "{h} forwarded: {headers}");
    }
    // `Connection` cannot remove the identity the gateway sets.
    let got = call(
        &url,
        &[
            ("authorization", &format!("Bearer {good}")),
            ("connection", "x-consumer-id, x-scopes"),
            ("x_consumer_id", "admin"),
        ],
    )
    .await;
    let headers = &got.json()["headers"];
    assert_eq!(headers["x-consumer-id"], "user-7");
    assert_eq!(headers["x-scopes"], "orders.read profile");
    assert!(headers.get("x_consumer_id").is_none());
    // Two Authorization headers are ambiguous: refused, not guessed at.
    let got =
        call(&url, &[("authorization", "Basic dXNlcjpwdw=="), ("authorization", &format!("Bearer {good}"))])
            .await;
    let p = got.assert_problem(401, "more than one Authorization header");
    assert_eq!(p["reason"], "malformed");
    // The access log names the consumer and never the token.
    let lines = gw.log_lines();
    assert!(lines.iter().any(|l| l["consumer"] == "user-7"));
    let all = gw.logs.lock().unwrap().join("\n");
    assert!(!all.contains(&good[..40]), "token in the access log");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_a_cookie_or_header_with_forwarding_and_claim_matchers() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let secret = "0123456789abcdef0123456789abcdef-extra";
    let auth = format!(
        "  idp:\n    jwt: {{ secret: \"{secret}\", algorithms: [HS256], issuer: \"https://idp.test\", cookie: session, claims: {{ tenant: [acme, globex] }}, consumer_claim: email }}"
    );
    let gw = Gateway::start(&jwt_config(&m.url(), &auth, ", forward_credentials: true")).await;
    let url = gw.url("/api/x");
    let sign = |claims: serde_json::Value| {
        bridgehead_auth::jwt::sign(&claims, secret.as_bytes(), Algorithm::HS256, None, None).unwrap()
    };
    let base =
        json!({"iss": "https://idp.test", "exp": now() + 60, "tenant": "acme", "email": "a@acme.example"});
    let token = sign(base.clone());
    let got = call(&url, &[("cookie", &format!("theme=dark; session={token}"))]).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let echo = got.json();
    assert_eq!(echo["headers"]["x-consumer-id"], "a@acme.example");
    assert!(echo["headers"]["cookie"].as_str().unwrap().contains("session="), "forward_credentials keeps it");
    // Authorization: Bearer still works alongside the cookie.
    assert_eq!(bearer(&url, &token).await.status, 200);
    // A claim matcher that fails.
    let mut wrong = base.clone();
    wrong["tenant"] = json!("initech");
    assert_refused(&bearer(&url, &sign(wrong)).await, "claim_mismatch");
    // HS256 signed with another secret.
    let forged = bridgehead_auth::jwt::sign(
        &base,
        b"another-secret-that-is-long-enough!!",
        Algorithm::HS256,
        None,
        None,
    )
    .unwrap();
    assert_refused(&bearer(&url, &forged).await, "bad_signature");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_rotation_and_an_unreachable_identity_provider() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let a = Idp::new(Algorithm::ES256);
    let b = Idp::new(Algorithm::RS256);
    // What the identity provider serves: a key set, or an outage (None).
    let served: Arc<Mutex<Option<serde_json::Value>>> =
        Arc::new(Mutex::new(Some(json!({"keys": [a.jwk()]}))));
    let s = served.clone();
    let idp = Peer::start(move |_req| match s.lock().unwrap().clone() {
        Some(jwks) => json_response(200, &jwks),
        None => json_response(503, &json!({"error": "down"})),
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let auth = format!(
        "  idp:\n    jwt: {{ jwks_url: \"{}\", issuer: \"https://idp.test\", audiences: [orders-api], min_refresh_interval: 50ms, refresh: 1h }}",
        idp.url("/.well-known/jwks.json")
    );
    let config = format!(
        "{}state:\n  url: sqlite://{}/state.db\n",
        jwt_config(&m.url(), &auth, ""),
        state.path().display()
    );
    let gw = Gateway::start(&config).await;
    let url = gw.url("/api/orders");
    assert_eq!(idp.hits(), 1, "fetched once at start");
    assert_eq!(bearer(&url, &a.token(json!({}))).await.status, 200);

    // Rotation: B appears and A is removed. A token from B names an unknown kid → one refetch.
    *served.lock().unwrap() = Some(json!({"keys": [b.jwk()]}));
    tokio::time::sleep(std::time::Duration::from_millis(60)).await; // past min_refresh_interval
    let got = bearer(&url, &b.token(json!({}))).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(idp.hits(), 2);
    // A is gone: its tokens are refused even though one was cached before.
    assert_refused(&bearer(&url, &a.token(json!({}))).await, "unknown_kid");

    // A reload with the same settings keeps the fetched set: no refetch.
    let before = idp.hits();
    gw.reloader.reload().await.unwrap();
    assert_eq!(idp.hits(), before);
    assert_eq!(bearer(&url, &b.token(json!({}))).await.status, 200);

    // The identity provider goes down: the last good set keeps serving, failures are counted.
    *served.lock().unwrap() = None;
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let c = Idp::new(Algorithm::ES256);
    assert_refused(&bearer(&url, &c.token(json!({}))).await, "unknown_kid"); // triggers a failing fetch
    assert_eq!(bearer(&url, &b.token(json!({}))).await.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "bridgehead_auth_fetches_total{authenticator=\"idp\",kind=\"jwks\",result=\"error\"} 1"
        ),
        "{metrics}"
    );
    gw.shutdown().await;

    // A restart while the provider is still down: the set saved in the state database serves.
    let gw = Gateway::start(&config).await;
    assert_eq!(bearer(&gw.url("/api/orders"), &b.token(json!({}))).await.status, 200);
    gw.shutdown().await;

    // A fresh state database and no provider: nothing to verify with → 503, not a crash.
    let fresh = config.replace(
        &state.path().display().to_string(),
        &tempfile::tempdir().unwrap().keep().display().to_string(),
    );
    let gw = Gateway::start(&fresh).await;
    let got = bearer(&gw.url("/api/orders"), &b.token(json!({}))).await;
    got.assert_problem(503, "no key set has been fetched");
    // The provider comes back: the background retry picks the keys up.
    *served.lock().unwrap() = Some(json!({"keys": [b.jwk()]}));
    let url = gw.url("/api/orders");
    let token = b.token(json!({}));
    eventually(10, "keys fetched after the provider returns", async || {
        bearer(&url, &token).await.status == 200
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_is_reloaded_when_it_changes() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let a = Idp::new(Algorithm::EdDSA);
    let b = Idp::new(Algorithm::ES384);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, json!({"keys": [a.jwk()]}).to_string()).unwrap();
    let auth = format!("  idp:\n    jwt: {{ jwks_file: {}, audiences: [orders-api] }}", file.display());
    let gw = Gateway::start(&jwt_config(&m.url(), &auth, "")).await;
    let url = gw.url("/api/x");
    assert_eq!(bearer(&url, &a.token(json!({}))).await.status, 200);
    assert_refused(&bearer(&url, &b.token(json!({}))).await, "unknown_kid");
    std::fs::write(&file, json!({"keys": [b.jwk()]}).to_string()).unwrap();
    let token = b.token(json!({}));
    eventually(10, "jwks_file re-read", async || bearer(&url, &token).await.status == 200).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_in_header_or_query_with_scopes() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let key = "bh_partner-acme-key-0001";
    let digest = bridgehead_auth::apikey::sha256_hex(key);
    let config = format!(
        "authenticators:\n  partners:\n    api_key:\n      header: X-API-Key\n      query: api_key\n      keys:\n        - {{ consumer: acme, sha256: \"{digest}\", scopes: [orders.read] }}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: read, match: {{ path_prefix: /read }}, upstream: u, auth: [partners], require_scopes: [orders.read] }}\n  - {{ name: write, match: {{ path_prefix: /write }}, upstream: u, auth: [partners], require_scopes: [orders.write] }}\n",
        m.url()
    );
    let gw = Gateway::start(&config).await;
    let got = call(&gw.url("/read/1"), &[("x-api-key", key)]).await;
    assert_eq!(got.status, 200);
    let echo = got.json();
    assert_eq!(echo["headers"]["x-consumer-id"], "acme");
    assert!(echo["headers"].get("x-api-key").is_none(), "key forwarded");
    // From the query string: the parameter is removed, the rest of the query kept.
    let got = call(&gw.url(&format!("/read/1?page=2&api_key={key}&sort=asc")), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["query"], "page=2&sort=asc");
    // A percent-encoded parameter name is the same parameter: checked, then removed.
    let got = call(&gw.url(&format!("/read/1?api%5Fkey={key}&x=1")), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["query"], "x=1");
    // The key twice is ambiguous.
    let got = call(&gw.url(&format!("/read/1?api_key={key}&api_key=other")), &[]).await;
    assert_eq!(got.assert_problem(401, "more than once")["reason"], "malformed");
    // Wrong key.
    let got = call(&gw.url("/read/1"), &[("x-api-key", "bh_wrong")]).await;
    let p = got.assert_problem(401, "not valid");
    assert_eq!(p["reason"], "unknown_key");
    assert_eq!(got.header("www-authenticate"), "ApiKey realm=\"bridgehead\", header=\"X-API-Key\"");
    // Missing key.
    let got = call(&gw.url("/read/1"), &[]).await;
    let p = got.assert_problem(401, "X-API-Key");
    assert_eq!(p["reason"], "missing_credentials");
    // Scope the key lacks.
    call(&gw.url("/write/1"), &[("x-api-key", key)]).await.assert_problem(403, "orders.write");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_from_the_state_database_follow_create_and_revoke() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", state.path().display());
    let config = format!(
        "authenticators:\n  partners:\n    api_key: {{ from_state: true, refresh: 50ms }}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, auth: [partners] }}\nstate:\n  url: {url}\n",
        m.url()
    );
    let gw = Gateway::start(&config).await;
    let store = bridgehead_state::Store::open(&url).await.unwrap();
    let key = bridgehead_auth::apikey::generate();
    let rec = bridgehead_state::ApiKeyRecord {
        id: "key_test1".into(),
        authenticator: "partners".into(),
        consumer: "globex".into(),
        sha256: bridgehead_auth::apikey::sha256_hex(&key),
        scopes: vec![],
        created_at: now() as i64,
        revoked_at: None,
    };
    store.api_key_insert(&rec).await.unwrap();
    let u = gw.url("/x");
    eventually(10, "stored key accepted", async || call(&u, &[("x-api-key", &key)]).await.status == 200)
        .await;
    assert_eq!(call(&u, &[("x-api-key", &key)]).await.json()["headers"]["x-consumer-id"], "globex");
    assert!(store.api_key_revoke("key_test1", now() as i64).await.unwrap());
    eventually(10, "revoked key refused", async || call(&u, &[("x-api-key", &key)]).await.status == 401)
        .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_admits_active_tokens_caches_and_reports_outages() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let u2 = up.clone();
    let exp = now() + 600;
    let idp = Peer::start(move |req| {
        if !u2.load(Ordering::SeqCst) {
            return json_response(503, &json!({}));
        }
        // Client authentication: HTTP Basic with the configured credentials.
        use base64::Engine;
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bridgehead:intro-secret"));
        if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return json_response(401, &json!({"error": "invalid_client"}));
        }
        let form = String::from_utf8_lossy(req.body()).into_owned();
        if form.contains("token=opaque-good") && form.contains("token_type_hint=access_token") {
            json_response(200, &json!({"active": true, "sub": "svc-9", "scope": "orders.read", "exp": exp, "aud": "orders-api", "tenant": "acme"}))
        } else {
            json_response(200, &json!({"active": false}))
        }
    })
    .await;
    let auth = format!(
        "  idp:\n    introspection: {{ url: \"{}\", client_id: bridgehead, client_secret: intro-secret, audiences: [orders-api], claims_to_headers: {{ tenant: X-Tenant }} }}",
        idp.url("/introspect")
    );
    let gw = Gateway::start(&jwt_config(&m.url(), &auth, ", require_scopes: [orders.read]")).await;
    let url = gw.url("/api/x");
    let got = bearer(&url, "opaque-good").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["headers"]["x-consumer-id"], "svc-9");
    assert_eq!(got.json()["headers"]["x-tenant"], "acme");
    assert_eq!(bearer(&url, "opaque-good").await.status, 200);
    assert_eq!(idp.hits(), 1, "second answer from the cache");
    assert_refused(&bearer(&url, "opaque-bad").await, "inactive");
    up.store(false, Ordering::SeqCst);
    bearer(&url, "opaque-other").await.assert_problem(503, "introspection endpoint");
    // Cached answers keep working while the endpoint is down.
    assert_eq!(bearer(&url, "opaque-good").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_listed_authenticator_admits() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let idp = Idp::new(Algorithm::ES256);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, &idp.key.public_pem).unwrap();
    let key = "partner-key-xyz";
    let config = format!(
        "authenticators:\n  idp:\n    jwt: {{ public_key_file: {} }}\n  partners:\n    api_key:\n      keys: [{{ consumer: acme, sha256: \"{}\" }}]\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, auth: [idp, partners] }}\n",
        pem.display(),
        bridgehead_auth::apikey::sha256_hex(key),
        m.url()
    );
    let gw = Gateway::start(&config).await;
    let url = gw.url("/x");
    assert_eq!(bearer(&url, &idp.token(json!({}))).await.json()["headers"]["x-consumer-id"], "user-7");
    assert_eq!(call(&url, &[("x-api-key", key)]).await.json()["headers"]["x-consumer-id"], "acme");
    // Nothing: both challenges offered.
    let got = call(&url, &[]).await;
    got.assert_problem(401, "no credentials");
    let challenges: Vec<&str> =
        got.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"bridgehead\"", "ApiKey realm=\"bridgehead\", header=\"X-API-Key\""]
    );
    // A bad token with a good key: the key admits.
    let got = call(&url, &[("authorization", "Bearer not.a.jwt"), ("x-api-key", key)]).await;
    assert_eq!(got.status, 200);
    gw.shutdown().await;
}

/// A CA, a server certificate for `localhost`, and client certificates it signs.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Field CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let server =
            rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir, ca }
    }

    fn client(&self, cn: &str, san: &str) -> (rustls_pki_types::CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![san.to_owned()]).unwrap();
        // DER order is least specific first; RFC 4514 prints it reversed.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.der().clone(), key)
    }

    fn tls_config(&self, client_auth: &str) -> String {
        let d = self.dir.path().display();
        format!(
            "server:\n  tls: {{ cert: {d}/server.pem, key: {d}/server.key, client_ca: {d}/ca.pem, client_auth: {client_auth} }}\n"
        )
    }

    /// GET over HTTPS, optionally with a client certificate.
    async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        client: Option<(rustls_pki_types::CertificateDer<'static>, &rcgen::KeyPair)>,
    ) -> Result<Got, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert],
                    rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send_req, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let res = send_req
            .send_request(Request::get(path).header("host", "localhost").body(empty()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Got { status: parts.status.as_u16(), headers: parts.headers, body })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported_for_every_certificate_file_and_follows_reloads() {
    let pki = Pki::new();
    let d = pki.dir.path().display();
    // A client certificate for the upstream with a known notAfter.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "gateway-client");
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let client = params.signed_by(&key, &pki.ca).unwrap();
    std::fs::write(pki.dir.path().join("client.pem"), client.pem()).unwrap();
    std::fs::write(pki.dir.path().join("client.key"), key.serialize_pem()).unwrap();
    let upstream = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"https://127.0.0.1:9\" }}]\n    tls: {{ ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n"
    );
    let gw = Gateway::start(&format!("{}{upstream}", pki.tls_config("optional"))).await;
    let metrics = gw.metrics().await;
    let series = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| l.starts_with("bridgehead_tls_certificate_expiry_timestamp_seconds{"))
            .map(str::to_owned)
            .collect()
    };
    let got = series(&metrics);
    // rcgen's default notAfter is 4096-01-01.
    for want in [
        "{key=\"server.tls.cert\",kind=\"server\",subject=\"CN=rcgen self signed cert\"} 67090118400",
        "{key=\"server.tls.client_ca\",kind=\"ca\",subject=\"CN=Field CA\"} 67090118400",
        "{key=\"upstreams.u.tls.ca\",kind=\"ca\",subject=\"CN=Field CA\"} 67090118400",
        "{key=\"upstreams.u.tls.cert\",kind=\"client\",subject=\"CN=gateway-client\"} 1936742400",
    ] {
        assert!(got.iter().any(|l| l.ends_with(&want)), "{want} missing from:\n{}", got.join("\n"));
    }
    assert_eq!(got.len(), 4, "{}", got.join("\n"));
    // A reload that drops the listener's TLS and the upstream's client certificate drops their series.
    std::fs::write(
        &gw.config_path,
        format!(
            "state:\n  url: sqlite://{}/state.db\n{}",
            gw.dir.path().display(),
            upstream.replace(&format!(", cert: {d}/client.pem, key: {d}/client.key"), "")
        ),
    )
    .unwrap();
    gw.reloader.reload().await.unwrap();
    let got = series(&gw.metrics().await);
    assert_eq!(got.len(), 1, "{}", got.join("\n"));
    assert!(got[0].contains("key=\"upstreams.u.tls.ca\""), "{}", got[0]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_checks_certificate_subjects_and_passes_them_upstream() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let pki = Pki::new();
    let config = format!(
        "{}authenticators:\n  laptops:\n    mtls: {{ subjects: [\"CN=laptop-*\", \"URI:spiffe://acme/ci/*\"] }}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: field, match: {{ path_prefix: /field }}, upstream: u, auth: [laptops] }}\n  - {{ name: open, match: {{ path_prefix: /open }}, upstream: u }}\n",
        pki.tls_config("optional"),
        m.url()
    );
    let gw = Gateway::start(&config).await;
    let (laptop, laptop_key) = pki.client("laptop-7", "laptop-7.field.acme.example");
    let got = pki.get(gw.addr, "/field/sync", Some((laptop, &laptop_key))).await.unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let echo = got.json();
    assert_eq!(echo["headers"]["x-consumer-id"], "laptop-7");
    assert_eq!(echo["headers"]["x-client-cert-subject"], "CN=laptop-7,O=Acme");
    assert_eq!(echo["headers"]["x-client-cert-san"], "DNS:laptop-7.field.acme.example");
    // A certificate from the right CA with a subject outside the patterns.
    let (desktop, desktop_key) = pki.client("desktop-laptop-1", "desktop.acme.example");
    let got = pki.get(gw.addr, "/field/sync", Some((desktop, &desktop_key))).await.unwrap();
    let p = got.assert_problem(401, "matches none of the allowed subjects");
    assert_eq!(p["reason"], "certificate_not_allowed");
    // No certificate: allowed by `optional` on the listener, refused by the route.
    let got = pki.get(gw.addr, "/field/sync", None).await.unwrap();
    let p = got.assert_problem(401, "client certificate");
    assert_eq!(p["reason"], "missing_credentials");
    assert_eq!(pki.get(gw.addr, "/open/x", None).await.unwrap().status, 200);
    // A certificate from another CA fails the handshake.
    let stranger = Pki::new();
    let (c, k) = stranger.client("laptop-9", "laptop-9.example");
    assert!(pki.get(gw.addr, "/open/x", Some((c, &k))).await.is_err());
    gw.shutdown().await;

    // `required`: no certificate, no connection.
    let config = config.replace("client_auth: optional", "client_auth: required");
    let gw = Gateway::start(&config).await;
    assert!(pki.get(gw.addr, "/open/x", None).await.is_err());
    let (laptop, laptop_key) = pki.client("laptop-8", "laptop-8.example");
    assert_eq!(pki.get(gw.addr, "/open/x", Some((laptop, &laptop_key))).await.unwrap().status, 200);
    gw.shutdown().await;
}
