//! The built-in authorization server: client credentials, RFC 9068 tokens trusted by
//! `jwt: { issuer: local }`, introspection, revocation, metadata, JWKS, persistence of keys and
//! revocations across restarts, and flood limiting.

use base64::Engine as _;
use bridgehead_mock::{MockOptions, MockServer};
use http::Request;
use serde_json::Value;

use crate::support::*;

pub(crate) const ISSUER: &str = "https://bridgehead.test";
pub(crate) const SECRET: &str = "svc-secret-0123456789abcdefghijklmnopqrstuvwxyz";

pub(crate) fn config(upstream: &str, state_dir: &std::path::Path, extra: &str) -> String {
    let digest = bridgehead_auth::apikey::sha256_hex(SECRET);
    let other = bridgehead_auth::apikey::sha256_hex("other-secret-0123456789");
    format!(
        "oauth_server:\n  issuer: {ISSUER}\n  access_token_ttl: 10m\n{extra}  clients:\n    - {{ client_id: svc, secret_sha256: \"{digest}\", grants: [client_credentials], scopes: [orders.read, orders.write] }}\n    - {{ client_id: other, secret_sha256: \"{other}\", grants: [client_credentials], scopes: [orders.read] }}\nauthenticators:\n  local:\n    jwt: {{ issuer: local }}\nupstreams:\n  u:\n    targets: [{{ url: \"{upstream}\" }}]\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: u, auth: [local], require_scopes: [orders.read] }}\nstate:\n  url: sqlite://{}/state.db\n",
        state_dir.display()
    )
}

pub(crate) fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

pub(crate) async fn post_form(url: &str, auth: Option<&str>, body: &str) -> Got {
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

const REDIRECT: &str = "http://127.0.0.1:5173/cb";

fn code_flow_config(upstream: &str, state_dir: &std::path::Path) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"field-salt-0123").unwrap();
    let hash = argon2::Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
    config(
        upstream,
        state_dir,
        &format!(
            "  users:\n    - {{ username: fde, password_hash: \"{hash}\" }}\n  clients:\n    - {{ client_id: console, public: true, grants: [authorization_code, refresh_token], scopes: [orders.read], redirect_uris: [\"{REDIRECT}\"] }}\n"
        ),
    )
    .replacen("  clients:\n    - { client_id: svc", "    - { client_id: svc", 1)
}

fn pkce() -> (String, String) {
    let verifier = format!("{}{}", bridgehead_auth::apikey::generate(), "-._~verifier");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

fn authz_query(challenge: &str, redirect: &str, extra: &str) -> String {
    format!(
        "response_type=code&client_id=console&redirect_uri={}&scope=orders.read&state=st-42&code_challenge={challenge}&code_challenge_method=S256{extra}",
        bridgehead_http::codec::form_encode(redirect)
    )
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let q = location.split_once('?')?.1;
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| v.replace("%3A", ":").replace("%2F", "/").replace('+', " "))
    })
}

/// Logs in as `fde` through the form; returns the redirect's Location.
async fn login(gw: &Gateway, challenge: &str, password: &str, decision: &str) -> Got {
    post_form(
        &gw.url("/oauth2/authorize"),
        None,
        &format!(
            "{}&username=fde&password={}&decision={decision}",
            authz_query(challenge, REDIRECT, ""),
            password.replace(' ', "+")
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_and_refresh_rotation() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&code_flow_config(&m.url(), state.path())).await;
    let (verifier, challenge) = pkce();

    // The login and consent page: no framing, no caching.
    let page = get(&gw.url(&format!("/oauth2/authorize?{}", authz_query(&challenge, REDIRECT, "")))).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert!(page.header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(String::from_utf8_lossy(&page.body).contains("name=\"code_challenge\""));

    // Wrong password: the page again, no code.
    let got = login(&gw, &challenge, "wrong", "approve").await;
    assert_eq!(got.status, 200);
    assert!(String::from_utf8_lossy(&got.body).contains("Wrong user name or password"));
    // Deny: access_denied at the redirect URI, with state and iss.
    let got = login(&gw, &challenge, "correct horse", "deny").await;
    assert_eq!(got.status, 303);
    let loc = got.header("location").to_owned();
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-42"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));

    // Approve: a code, the state and iss.
    let got = login(&gw, &challenge, "correct horse", "approve").await;
    assert_eq!(got.status, 303, "{}", String::from_utf8_lossy(&got.body));
    let loc = got.header("location").to_owned();
    assert!(loc.starts_with(&format!("{REDIRECT}?code=")), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-42"));
    let code = query_param(&loc, "code").unwrap();

    let token_url = gw.url("/oauth2/token");
    let redeem = |code: String, verifier: String| {
        let url = token_url.clone();
        async move {
            post_form(
                &url,
                None,
                &format!("grant_type=authorization_code&client_id=console&code={code}&redirect_uri={}&code_verifier={verifier}", bridgehead_http::codec::form_encode(REDIRECT)),
            )
            .await
        }
    };
    // A wrong verifier burns nothing for an attacker: refused.
    assert_oauth_error(
        &redeem(code.clone(), format!("{}x", &verifier[..verifier.len() - 1])).await,
        400,
        "invalid_grant",
    );
    // The code was consumed by that attempt (single use); start again.
    let got = login(&gw, &challenge, "correct horse", "approve").await;
    let code = query_param(got.header("location"), "code").unwrap();
    let got = redeem(code.clone(), verifier.clone()).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let body = got.json();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let (_, claims) = decode(&access);
    assert_eq!(claims["sub"], "fde");
    assert_eq!(claims["client_id"], "console");
    let api = |token: String| {
        let url = gw.url("/api/orders");
        async move {
            send(
                &client(),
                Request::get(url).header("authorization", format!("Bearer {token}")).body(empty()).unwrap(),
            )
            .await
        }
    };
    assert_eq!(api(access.clone()).await.json()["headers"]["x-consumer-id"], "fde");

    // Refresh rotates: a new pair, and the old refresh token is spent.
    let refresh_with = |t: String| {
        let url = token_url.clone();
        async move {
            post_form(&url, None, &format!("grant_type=refresh_token&client_id=console&refresh_token={t}"))
                .await
        }
    };
    let got = refresh_with(refresh.clone()).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let refresh2 = got.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    // Reusing the rotated token revokes the whole family: the new one stops working too.
    assert_oauth_error(&refresh_with(refresh.clone()).await, 400, "invalid_grant");
    assert_oauth_error(&refresh_with(refresh2).await, 400, "invalid_grant");

    // Replaying the code: refused, and the access token issued for it is revoked.
    assert_oauth_error(&redeem(code, verifier.clone()).await, 400, "invalid_grant");
    api(access).await.assert_problem(401, "revoked");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_checked_before_anything_is_redirected() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&code_flow_config(&m.url(), state.path())).await;
    let (_, challenge) = pkce();
    let authorize = |q: String| {
        let url = gw.url(&format!("/oauth2/authorize?{q}"));
        async move { get(&url).await }
    };
    // A redirect URI differing by one character: an error page, never a redirect.
    let got = authorize(authz_query(&challenge, "http://127.0.0.1:5173/cc", "")).await;
    assert_eq!(got.status, 400);
    assert!(got.header("location").is_empty());
    // Unknown client.
    let got =
        authorize(authz_query(&challenge, REDIRECT, "").replace("client_id=console", "client_id=nobody"))
            .await;
    assert_eq!(got.status, 400);
    // Errors after the redirect URI is known go back to it, with state and iss.
    for (q, error) in [
        (
            authz_query(&challenge, REDIRECT, "")
                .replace("code_challenge_method=S256", "code_challenge_method=plain"),
            "invalid_request",
        ),
        (authz_query("", REDIRECT, "").replace("code_challenge=&", ""), "invalid_request"),
        (
            authz_query(&challenge, REDIRECT, "").replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (authz_query(&challenge, REDIRECT, "").replace("scope=orders.read", "scope=admin"), "invalid_scope"),
    ] {
        let got = authorize(q).await;
        assert_eq!(got.status, 303, "{error}");
        let loc = got.header("location");
        assert_eq!(query_param(loc, "error").as_deref(), Some(error), "{loc}");
        assert_eq!(query_param(loc, "state").as_deref(), Some("st-42"));
    }
    // A verifier for a code that does not exist.
    let got = post_form(&gw.url("/oauth2/token"), None, &format!("grant_type=authorization_code&client_id=console&code=nope&redirect_uri={REDIRECT}&code_verifier={}", "a".repeat(50))).await;
    assert_oauth_error(&got, 400, "invalid_grant");
    // Verifier too short.
    let got = post_form(&gw.url("/oauth2/token"), None, &format!("grant_type=authorization_code&client_id=console&code=nope&redirect_uri={REDIRECT}&code_verifier=short")).await;
    assert_oauth_error(&got, 400, "invalid_grant");
    // A public client cannot use client_credentials, and cannot pretend to be confidential.
    let got =
        post_form(&gw.url("/oauth2/token"), None, "grant_type=client_credentials&client_id=console").await;
    assert_oauth_error(&got, 401, "invalid_client");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_clients_and_key_rotation_from_the_command_line() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), state.path(), "")).await;
    let cfg = gw.config_path.to_str().unwrap().to_owned();
    let cli = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bridgehead(&args)
        })
        .await
        .unwrap()
    };
    let s = |v: &[&str]| v.iter().map(std::string::ToString::to_string).collect::<Vec<_>>();

    // A client added at run time: its secret is printed once and works within seconds.
    let (code, secret, err) = cli(s(&[
        "oauth",
        "client",
        "add",
        "-c",
        &cfg,
        "--id",
        "dash",
        "--grant",
        "client_credentials",
        "--scope",
        "orders.read",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let secret = secret.trim().to_owned();
    let url = gw.url("/oauth2/token");
    let auth = basic("dash", &secret);
    eventually(15, "run-time client accepted", async || {
        post_form(&url, Some(&auth), "grant_type=client_credentials").await.status == 200
    })
    .await;
    let (code, out, _) = cli(s(&["oauth", "client", "list", "-c", &cfg])).await;
    assert_eq!(code, 0);
    assert!(out.contains("dash") && out.contains("confidential"), "{out}");
    assert!(!out.contains(&secret), "secret listed");
    let (code, _, err) =
        cli(s(&["oauth", "client", "add", "-c", &cfg, "--id", "svc", "--grant", "client_credentials"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("already declared in the config"), "{err}");

    // Rotation: the new key is published and signs; tokens of the old key stay valid.
    let old_token = post_form(&url, Some(&basic("svc", SECRET)), "grant_type=client_credentials")
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = decode(&old_token).0["kid"].clone();
    let (code, out, err) = cli(s(&["keys", "rotate", "-c", &cfg, "--publish-ahead", "0s"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retires at"), "{out}");
    let jwks_url = gw.url("/.well-known/jwks.json");
    eventually(20, "two keys published", async || {
        get(&jwks_url).await.json()["keys"].as_array().unwrap().len() == 2
    })
    .await;
    let auth = basic("svc", SECRET);
    eventually(20, "the new key signs", async || {
        let t = post_form(&url, Some(&auth), "grant_type=client_credentials").await.json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        decode(&t).0["kid"] != old_kid
    })
    .await;
    let got = send(
        &client(),
        Request::get(gw.url("/api/x"))
            .header("authorization", format!("Bearer {old_token}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "a token of the retiring key still works");

    // Removal.
    let (code, _, _) = cli(s(&["oauth", "client", "remove", "-c", &cfg, "dash"])).await;
    assert_eq!(code, 0);
    let auth = basic("dash", &secret);
    eventually(15, "removed client refused", async || {
        post_form(&url, Some(&auth), "grant_type=client_credentials").await.status == 401
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_drives_every_flow() {
    let Some(python) = python() else { return };
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&code_flow_config(&m.url(), state.path())).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers/authlib_client.py");
    let base = format!("http://{}", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([script, &base, "svc", SECRET, "console", REDIRECT, "fde", "correct horse"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "authlib client failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["metadata_grants"],
        serde_json::json!(["client_credentials", "authorization_code", "refresh_token"])
    );
    assert_eq!(v["cc_basic"]["token_type"], "Bearer");
    assert_eq!(v["cc_basic"]["scope"], "orders.read");
    assert_eq!(v["cc_post_scope"], "orders.read orders.write");
    assert_eq!(v["introspect_active"], true);
    assert_eq!(v["introspect_after_revoke"], serde_json::json!({"active": false}));
    assert_eq!(v["redirect_status"], 303);
    assert_eq!(v["state_round_trip"], true);
    assert_eq!(v["iss"], ISSUER);
    assert_eq!(v["code_token_has_refresh"], true);
    assert_eq!(v["rotated"], true);
    assert_eq!(v["reuse"], serde_json::json!({"status": 400, "error": "invalid_grant"}));
    assert_eq!(v["family_revoked"], "invalid_grant");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_registers_lists_and_removes_clients() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), state.path(), "")).await;
    let api = gw.admin_url("/admin/oauth/clients");
    let post_json = |body: &'static str| {
        let url = api.clone();
        async move {
            send(
                &client(),
                Request::post(url).header("content-type", "application/json").body(full(body)).unwrap(),
            )
            .await
        }
    };
    let got =
        post_json(r#"{"client_id":"ops","grants":["client_credentials"],"scopes":["orders.read"]}"#).await;
    assert_eq!(got.status, 201, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("cache-control"), "no-store");
    let secret = got.json()["client_secret"].as_str().unwrap().to_owned();
    let url = gw.url("/oauth2/token");
    let auth = basic("ops", &secret);
    eventually(15, "admin-registered client accepted", async || {
        post_form(&url, Some(&auth), "grant_type=client_credentials").await.status == 200
    })
    .await;
    let list = get(&api).await.json();
    assert_eq!(list[0]["client_id"], "ops");
    assert!(!list.to_string().contains(&secret));
    // Refusals, as problems.
    post_json(r#"{"client_id":"ops","grants":["client_credentials"]}"#)
        .await
        .assert_problem(409, "already exists");
    post_json(r#"{"client_id":"svc","grants":["client_credentials"]}"#)
        .await
        .assert_problem(409, "already exists");
    post_json(r#"{"client_id":"x","grants":["implicit"]}"#)
        .await
        .assert_problem(400, "/grants/0: `implicit` is not supported");
    post_json(r#"{"client_id":"x","public":true,"grants":["authorization_code"]}"#)
        .await
        .assert_problem(400, "/redirect_uris");
    post_json(r#"{"client_id":"x","grants":[],"extra":1}"#)
        .await
        .assert_problem(400, "unknown field `extra`");
    post_json("not json").await.assert_problem(400, "must be a JSON client");
    // Removal.
    let del = |id: &'static str| {
        let url = format!("{api}/{id}");
        async move { send(&client(), Request::delete(url).body(empty()).unwrap()).await }
    };
    assert_eq!(del("ops").await.status, 204);
    del("ops").await.assert_problem(404, "no run-time client `ops`");
    gw.shutdown().await;
}

/// The Rust `oauth2` crate as an independent client: client credentials, and the authorization
/// code with PKCE (the login form filled like a browser would) followed by a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth2_crate_as_a_client() {
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
        TokenResponse, TokenUrl,
    };
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&code_flow_config(&m.url(), state.path())).await;
    // oauth2's HTTP requests sent with the test client.
    let http = |req: oauth2::HttpRequest| async move {
        let (parts, body) = req.into_parts();
        let got = send(&client(), Request::from_parts(parts, full(body))).await;
        let mut res = http::Response::new(got.body.to_vec());
        *res.status_mut() = http::StatusCode::from_u16(got.status).unwrap();
        *res.headers_mut() = got.headers;
        Ok::<_, std::io::Error>(res)
    };
    let token_url = TokenUrl::new(gw.url("/oauth2/token")).unwrap();

    let svc = BasicClient::new(ClientId::new("svc".into()))
        .set_client_secret(ClientSecret::new(SECRET.into()))
        .set_token_uri(token_url.clone());
    let token = svc
        .exchange_client_credentials()
        .add_scope(Scope::new("orders.read".into()))
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(token.scopes().unwrap()[0].as_str(), "orders.read");
    let (_, claims) = decode(token.access_token().secret());
    assert_eq!(claims["client_id"], "svc");
    // A wrong secret is a typed invalid_client error.
    let bad = BasicClient::new(ClientId::new("svc".into()))
        .set_client_secret(ClientSecret::new("wrong".into()))
        .set_token_uri(token_url.clone());
    let err = bad.exchange_client_credentials().request_async(&http).await.unwrap_err();
    assert!(format!("{err:?}").contains("error: invalid_client"), "{err:?}");

    let console = BasicClient::new(ClientId::new("console".into()))
        .set_auth_uri(AuthUrl::new(gw.url("/oauth2/authorize")).unwrap())
        .set_token_uri(token_url)
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf) = console
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("orders.read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let page = get(auth_url.as_str()).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body).into_owned();
    let mut form: Vec<String> = html
        .split("<input type=hidden name=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once("\" value=\"")?;
            let value = rest.split_once('"')?.0.replace("&amp;", "&").replace("&quot;", "\"");
            Some(format!("{name}={}", bridgehead_http::codec::form_encode(&value)))
        })
        .collect();
    form.extend(["username=fde".into(), "password=correct+horse".into(), "decision=approve".into()]);
    let got = post_form(&gw.url("/oauth2/authorize"), None, &form.join("&")).await;
    assert_eq!(got.status, 303);
    let location = url::Url::parse(got.header("location")).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], *csrf.secret());
    let token = console
        .exchange_code(AuthorizationCode::new(params["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let refresh = token.refresh_token().unwrap().clone();
    let refreshed = console.exchange_refresh_token(&refresh).request_async(&http).await.unwrap();
    assert_ne!(refreshed.refresh_token().unwrap().secret(), refresh.secret());
    let (_, claims) = decode(refreshed.access_token().secret());
    assert_eq!(claims["sub"], "fde");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_is_refused() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&code_flow_config(&m.url(), state.path())).await;
    // A code issued 61 s ago (codes live 60 s), written where the server keeps them.
    let store = bridgehead_state::Store::open(&format!("sqlite://{}/state.db", state.path().display()))
        .await
        .unwrap();
    let (verifier, challenge) = pkce();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    store
        .oauth_code_insert(&bridgehead_state::OAuthCodeRecord {
            code_hash: bridgehead_auth::apikey::sha256_hex("an-old-code"),
            client_id: "console".into(),
            redirect_uri: REDIRECT.into(),
            code_challenge: challenge,
            scope: vec!["orders.read".into()],
            subject: "fde".into(),
            expires_at: now - 1,
            used_at: None,
            family_id: None,
            access_jtis: vec![],
        })
        .await
        .unwrap();
    let got = post_form(
        &gw.url("/oauth2/token"),
        None,
        &format!(
            "grant_type=authorization_code&client_id=console&code=an-old-code&redirect_uri={}&code_verifier={verifier}",
            bridgehead_http::codec::form_encode(REDIRECT)
        ),
    )
    .await;
    assert_oauth_error(&got, 400, "invalid_grant");
    assert_eq!(got.json()["error_description"], "the code has expired");
    store.close().await;
    gw.shutdown().await;
}
