//! The built-in authorization server: client credentials, RFC 9068 tokens trusted by
//! `jwt: { issuer: local }`, introspection, revocation, metadata, JWKS, persistence of keys and
//! revocations across restarts, and flood limiting.

use base64::Engine as _;
use bridgehead_mock::{MockOptions, MockServer};
use http::Request;
use serde_json::Value;

use crate::support::*;

const ISSUER: &str = "https://bridgehead.test";
const SECRET: &str = "svc-secret-0123456789abcdefghijklmnopqrstuvwxyz";

fn config(upstream: &str, state_dir: &std::path::Path, extra: &str) -> String {
    let digest = bridgehead_auth::apikey::sha256_hex(SECRET);
    let other = bridgehead_auth::apikey::sha256_hex("other-secret-0123456789");
    format!(
        "oauth_server:\n  issuer: {ISSUER}\n  access_token_ttl: 10m\n{extra}  clients:\n    - {{ client_id: svc, secret_sha256: \"{digest}\", grants: [client_credentials], scopes: [orders.read, orders.write] }}\n    - {{ client_id: other, secret_sha256: \"{other}\", grants: [client_credentials], scopes: [orders.read] }}\nauthenticators:\n  local:\n    jwt: {{ issuer: local }}\nupstreams:\n  u:\n    targets: [{{ url: \"{upstream}\" }}]\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: u, auth: [local], require_scopes: [orders.read] }}\nstate:\n  url: sqlite://{}/state.db\n",
        state_dir.display()
    )
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

async fn post_form(url: &str, auth: Option<&str>, body: &str) -> Got {
    let mut req = Request::post(url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(&client(), req.body(full(body.to_owned())).unwrap()).await
}

fn assert_oauth_error(got: &Got, status: u16, error: &str) {
    assert_eq!(got.status, status, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"], error);
    assert_eq!(got.header("cache-control"), "no-store");
}

fn decode(token: &str) -> (Value, Value) {
    let (h, c) = bridgehead_auth::jwt::decode_unverified(token).unwrap();
    (Value::Object(h), Value::Object(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_open_local_routes_until_revoked() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&m.url(), state.path(), "");
    let gw = Gateway::start(&cfg).await;
    let token_url = gw.url("/oauth2/token");

    // client_secret_basic
    let got =
        post_form(&token_url, Some(&basic("svc", SECRET)), "grant_type=client_credentials&scope=orders.read")
            .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("cache-control"), "no-store");
    let body = got.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "orders.read");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (header, claims) = decode(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    for k in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"] {
        assert!(claims.get(k).is_some(), "claim {k} missing: {claims}");
    }
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["client_id"], "svc");

    // client_secret_post, all of the client's scopes by default.
    let got = post_form(
        &token_url,
        None,
        &format!("grant_type=client_credentials&client_id=svc&client_secret={SECRET}"),
    )
    .await;
    assert_eq!(got.json()["scope"], "orders.read orders.write");

    // The token opens the protected route; the consumer is the client.
    let got = send(
        &client(),
        Request::get(gw.url("/api/orders"))
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["headers"]["x-consumer-id"], "svc");
    // A token without the route's scope: 403.
    let write_only = post_form(
        &token_url,
        Some(&basic("svc", SECRET)),
        "grant_type=client_credentials&scope=orders.write",
    )
    .await
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = send(
        &client(),
        Request::get(gw.url("/api/orders"))
            .header("authorization", format!("Bearer {write_only}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    got.assert_problem(403, "orders.read");

    // Metadata and JWKS.
    let meta = get(&gw.url("/.well-known/oauth-authorization-server")).await.json();
    assert_eq!(meta["issuer"], ISSUER);
    assert_eq!(meta["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.json();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert!(jwks["keys"][0].get("d").is_none(), "private key material published");

    // Introspection: the owner sees it, another client does not, garbage is inactive.
    let intro = gw.url("/oauth2/introspect");
    let got = post_form(&intro, Some(&basic("svc", SECRET)), &format!("token={token}")).await;
    assert_eq!(got.json()["active"], true);
    assert_eq!(got.json()["client_id"], "svc");
    let got =
        post_form(&intro, Some(&basic("other", "other-secret-0123456789")), &format!("token={token}")).await;
    assert_eq!(got.json(), serde_json::json!({"active": false}));
    let got = post_form(&intro, Some(&basic("svc", SECRET)), "token=not-a-token").await;
    assert_eq!(got.json(), serde_json::json!({"active": false}));
    assert_oauth_error(&post_form(&intro, None, &format!("token={token}")).await, 401, "invalid_client");

    // Revocation: another client cannot revoke it (200, no effect); the owner can.
    let revoke = gw.url("/oauth2/revoke");
    let got =
        post_form(&revoke, Some(&basic("other", "other-secret-0123456789")), &format!("token={token}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        post_form(&intro, Some(&basic("svc", SECRET)), &format!("token={token}")).await.json()["active"],
        true
    );
    let got = post_form(
        &revoke,
        Some(&basic("svc", SECRET)),
        &format!("token={token}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(post_form(&revoke, Some(&basic("svc", SECRET)), "token=unknown-token").await.status, 200);
    assert_eq!(
        post_form(&intro, Some(&basic("svc", SECRET)), &format!("token={token}")).await.json()["active"],
        false
    );
    let got = send(
        &client(),
        Request::get(gw.url("/api/orders"))
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.assert_problem(401, "revoked")["reason"], "revoked");
    gw.shutdown().await;

    // A restart keeps the keys (same kid) and the revocation.
    let gw = Gateway::start(&cfg).await;
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.json();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    let got = send(
        &client(),
        Request::get(gw.url("/api/orders"))
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    got.assert_problem(401, "revoked");
    let fresh =
        post_form(&gw.url("/oauth2/token"), Some(&basic("svc", SECRET)), "grant_type=client_credentials")
            .await
            .json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    let got = send(
        &client(),
        Request::get(gw.url("/api/orders"))
            .header("authorization", format!("Bearer {fresh}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refuses_bad_requests_with_rfc_6749_errors() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), state.path(), "  token_rate_per_ip: 1000\n")).await;
    let url = gw.url("/oauth2/token");
    let cc = "grant_type=client_credentials";
    let got = post_form(&url, Some(&basic("svc", "wrong")), cc).await;
    assert_oauth_error(&got, 401, "invalid_client");
    assert_eq!(got.header("www-authenticate"), "Basic realm=\"bridgehead\"");
    assert_oauth_error(&post_form(&url, Some(&basic("nobody", SECRET)), cc).await, 401, "invalid_client");
    assert_oauth_error(&post_form(&url, None, cc).await, 401, "invalid_client");
    assert_oauth_error(
        &post_form(&url, Some(&basic("svc", SECRET)), &format!("{cc}&client_id=svc&client_secret={SECRET}"))
            .await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &post_form(&url, Some(&basic("svc", SECRET)), "grant_type=password&username=a&password=b").await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &post_form(&url, Some(&basic("svc", SECRET)), "grant_type=urn:x").await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &post_form(&url, Some(&basic("svc", SECRET)), "scope=a").await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &post_form(
            &url,
            Some(&basic("other", "other-secret-0123456789")),
            &format!("{cc}&scope=orders.write"),
        )
        .await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &post_form(&url, Some(&basic("svc", SECRET)), &format!("{cc}&{cc}")).await,
        400,
        "invalid_request",
    );
    // Not a form body.
    let got = send(
        &client(),
        Request::post(&url)
            .header("content-type", "application/json")
            .header("authorization", basic("svc", SECRET))
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_oauth_error(&got, 400, "invalid_request");
    // Oversized body.
    let got = post_form(&url, Some(&basic("svc", SECRET)), &format!("{cc}&pad={}", "a".repeat(20_000))).await;
    assert_oauth_error(&got, 400, "invalid_request");
    // GET on the token endpoint.
    let got = get(&url).await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), "POST");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_flooding_is_rate_limited() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), state.path(), "  token_rate_per_ip: 5\n")).await;
    let url = gw.url("/oauth2/token");
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let got = post_form(&url, Some(&basic("svc", SECRET)), "grant_type=client_credentials").await;
        if got.status == 429 {
            assert_eq!(got.header("retry-after"), "1");
            assert_eq!(got.json()["error"], "slow_down");
        }
        statuses.push(got.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((10..=12).contains(&ok), "{statuses:?}");
    assert!(statuses.contains(&429));
    gw.shutdown().await;
}
