//! Credentials toward upstreams (static headers and OAuth 2.0 client credentials against a token
//! server that counts, expires and fails), TLS toward upstreams (custom CA, client certificate,
//! SNI override), and `bridgehead token`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bridgehead_mock::{MockOptions, MockServer};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::support::*;

fn upstream_config(upstream: &str, extra: &str) -> String {
    format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{upstream}\" }}]\n{extra}routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_credentials_replace_what_the_client_sent() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let cases = [
        ("    credentials: { bearer: { token: s3cr3t-token } }\n", "authorization", "Bearer s3cr3t-token"),
        ("    credentials: { api_key: { header: X-Api-Key, value: k-123 } }\n", "x-api-key", "k-123"),
        // base64("svc:pa:ss") — the password may contain `:`.
        (
            "    credentials: { basic: { username: svc, password: \"pa:ss\" } }\n",
            "authorization",
            "Basic c3ZjOnBhOnNz",
        ),
    ];
    for (creds, header, value) in cases {
        let gw = Gateway::start(&upstream_config(&m.url(), creds)).await;
        let got = send(
            &client(),
            Request::get(gw.url("/x")).header(header, "from-the-client").body(empty()).unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["headers"][header], value, "{creds}");
        // Never in /admin/config.
        let cfg = get(&gw.admin_url("/admin/config")).await;
        assert!(!String::from_utf8_lossy(&cfg.body).contains(value.trim_start_matches("Bearer ")));
        gw.shutdown().await;
    }
}

/// A token endpoint: issues `tok-N`, counts requests, checks client authentication, and can be
/// told to fail.
struct TokenServer {
    peer: Peer,
    issued: Arc<AtomicU32>,
    /// 0: answer; otherwise answer this status (with `Retry-After: 1` for 429).
    fail: Arc<AtomicU32>,
}

impl TokenServer {
    async fn start(expires_in: u64) -> Self {
        let issued = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(AtomicU32::new(0));
        let (i, f) = (issued.clone(), fail.clone());
        let peer = Peer::start(move |req| {
            let form = String::from_utf8_lossy(req.body()).into_owned();
            let basic = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
            // RFC 6749 §2.3.1: the secret is form-encoded (`+` becomes `%2B`) before Basic encoding.
            let good_basic = basic.as_deref() == Some("Basic YnJpZGdlaGVhZDpzM2NyZXQlMkI=");
            let good_post = form.contains("client_id=bridgehead") && form.contains("client_secret=s3cret%2B");
            match f.load(Ordering::SeqCst) {
                0 => {}
                429 => {
                    return Response::builder()
                        .status(429)
                        .header("retry-after", "1")
                        .body(Bytes::from_static(b"{\"error\":\"slow_down\"}"))
                        .unwrap();
                }
                status => return json_response(status as u16, &json!({"error": "temporarily_unavailable"})),
            }
            if !form.contains("grant_type=client_credentials") {
                return json_response(400, &json!({"error": "unsupported_grant_type"}));
            }
            if !(good_basic || good_post) {
                return json_response(401, &json!({"error": "invalid_client", "error_description": "bad credentials"}));
            }
            let n = i.fetch_add(1, Ordering::SeqCst) + 1;
            json_response(200, &json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": expires_in, "scope": "orders.read"}))
        })
        .await;
        Self { peer, issued, fail }
    }

    fn credentials(&self, extra: &str) -> String {
        format!(
            "    credentials:\n      oauth2_client_credentials: {{ token_url: \"{}\", client_id: bridgehead, client_secret: \"s3cret+\", scope: orders.read{extra} }}\n",
            self.peer.url("/oauth/token")
        )
    }

    fn issued(&self) -> u32 {
        self.issued.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_once_shared_and_refreshed_before_expiry() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let ts = TokenServer::start(2).await;
    let gw = Gateway::start(&upstream_config(&m.url(), &ts.credentials(""))).await;
    let c = client();
    // 20 concurrent first requests share one token request.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, url) = (c.clone(), gw.url("/x"));
        tasks.push(tokio::spawn(async move { send(&c, Request::get(url).body(empty()).unwrap()).await }));
    }
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["headers"]["authorization"], "Bearer tok-1");
    }
    assert_eq!(ts.issued(), 1);
    // At 80% of its 2 s lifetime a new token is fetched in the background.
    let url = gw.url("/x");
    eventually(10, "refreshed token in use", async || {
        get(&url).await.json()["headers"]["authorization"] == "Bearer tok-2"
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("bridgehead_upstream_token_fetches_total{upstream=\"u\",result=\"success\"}"),
        "{metrics}"
    );
    // No token value in the gateway's logs.
    let logs = gw.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("tok-1"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_from_the_upstream_gets_one_fresh_token_and_one_retry() {
    let ts = TokenServer::start(3600).await;
    // The upstream accepts only tokens issued after the first one (tok-1 is "revoked").
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let upstream = Peer::start(move |req| {
        h.fetch_add(1, Ordering::SeqCst);
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if auth == "Bearer tok-1" {
            json_response(401, &json!({"error": "invalid_token"}))
        } else {
            json_response(200, &json!({"auth": auth}))
        }
    })
    .await;
    let gw =
        Gateway::start(&upstream_config(&upstream.url(""), &ts.credentials(", auth_method: post"))).await;
    let got = get(&gw.url("/orders")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["auth"], "Bearer tok-2");
    assert_eq!((ts.issued(), hits.load(Ordering::SeqCst)), (2, 2));
    // Later requests use the fresh token straight away.
    let got = send(&client(), Request::post(gw.url("/orders")).body(full("{}")).unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!((ts.issued(), hits.load(Ordering::SeqCst)), (2, 3));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_failures_give_503_and_back_off() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let ts = TokenServer::start(3600).await;
    ts.fail.store(503, Ordering::SeqCst);
    let gw = Gateway::start(&upstream_config(&m.url(), &ts.credentials(""))).await;
    let got = get(&gw.url("/x")).await;
    let p = got.assert_problem(503, "no credential for upstream `u`");
    assert_eq!(p["type"], "urn:bridgehead:problem:upstream-credentials");
    assert!(!p["detail"].as_str().unwrap().contains("temporarily_unavailable"), "endpoint internals leaked");
    let asked = ts.peer.hits();
    // Within the backoff, further requests do not hit the token endpoint again.
    for _ in 0..5 {
        get(&gw.url("/x")).await.assert_problem(503, "no credential");
    }
    assert_eq!(ts.peer.hits(), asked, "backoff honoured");
    // The endpoint recovers: after the backoff a token is fetched and requests pass.
    ts.fail.store(0, Ordering::SeqCst);
    let url = gw.url("/x");
    eventually(10, "token after recovery", async || get(&url).await.status == 200).await;
    gw.shutdown().await;

    // 429 with Retry-After, and wrong client credentials.
    let ts = TokenServer::start(3600).await;
    ts.fail.store(429, Ordering::SeqCst);
    let gw = Gateway::start(&upstream_config(&m.url(), &ts.credentials(""))).await;
    get(&gw.url("/x")).await.assert_problem(503, "no credential");
    assert_eq!(ts.peer.hits(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_fetches_decodes_and_explains_errors() {
    let ts = TokenServer::start(3600).await;
    let url = ts.peer.url("/oauth/token");
    let run = move |secret: &str, extra: &[&str]| {
        let mut args = vec![
            "token",
            "--token-url",
            &url,
            "--client-id",
            "bridgehead",
            "--client-secret-env",
            "BH_TEST_SECRET",
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(BIN).args(&args).env("BH_TEST_SECRET", secret).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let ok = run("s3cret+", &["--scope", "orders.read"]);
        let post = run("s3cret+", &["--auth-method", "post"]);
        let bad = run("wrong", &[]);
        (ok, post, bad)
    })
    .await
    .map(|(ok, post, bad)| {
        assert_eq!(post.0, 0, "{}", post.2);
        assert_eq!(bad.0, 1);
        assert!(
            bad.2.contains("answered 401 `invalid_client`: the client id or secret is wrong"),
            "{}",
            bad.2
        );
        assert!(bad.2.contains("(it says: bad credentials)"), "{}", bad.2);
        ok
    })
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "tok-1\n", "the token alone on stdout");
    assert!(err.contains("expires in 1h"), "{err}");
    // A missing variable is a usage problem explained in words.
    let out = std::process::Command::new(BIN)
        .args([
            "token",
            "--token-url",
            "http://127.0.0.1:9/x",
            "--client-id",
            "a",
            "--client-secret-env",
            "BH_SURELY_UNSET_VAR",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BH_SURELY_UNSET_VAR is not set"));
}

/// An HTTPS upstream that requires a client certificate from `ca` and echoes what it saw.
async fn tls_upstream(
    server_cert: rcgen::Certificate,
    server_key: rcgen::KeyPair,
    client_ca: &rcgen::Certificate,
) -> std::net::SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { break };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = json!({"path": req.uri().path(), "tls": true}).to_string();
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_with_a_private_ca_a_client_certificate_and_sni_override() {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    // The server certificate names api.customer.internal, not the IP the target uses.
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["api.customer.internal".into()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "bridgehead");
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
    let addr = tls_upstream(server_cert, server_key, ca.as_ref()).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
    let d = dir.path().display();
    let target = format!("https://127.0.0.1:{}", addr.port());
    let tls = format!(
        "    tls: {{ ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key, server_name: api.customer.internal }}\n"
    );
    let gw = Gateway::start(&upstream_config(&target, &tls)).await;
    let got = get(&gw.url("/secure")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["tls"], true);
    gw.shutdown().await;

    // Without the client certificate the upstream refuses the handshake: 502.
    let tls = format!("    tls: {{ ca: {d}/ca.pem, server_name: api.customer.internal }}\n");
    let gw = Gateway::start(&upstream_config(&target, &tls)).await;
    get(&gw.url("/secure")).await.assert_problem(502, "upstream `u` failed");
    gw.shutdown().await;

    // Without the SNI override the certificate does not match the IP: 502.
    let tls = format!("    tls: {{ ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key }}\n");
    let gw = Gateway::start(&upstream_config(&target, &tls)).await;
    get(&gw.url("/secure")).await.assert_problem(502, "upstream `u` failed");
    gw.shutdown().await;

    // A missing file is a config error naming the key.
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, upstream_config(&target, &format!("    tls: {{ ca: {d}/nope.pem }}\n"))).unwrap();
    let (code, out, _) = bridgehead(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("upstreams.u.tls.ca: cannot read certificates"), "{out}");
}
