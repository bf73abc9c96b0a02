//! `bridgehead probe` against real listeners: the gateway over HTTP and TLS (with and without
//! asking for a client certificate), certificates expired or for another host, a port that
//! refuses and a server that never completes a handshake.

use bridgehead_testkit::{Gateway, Peer};
use http::Response;
use serde_json::Value;

use crate::support::bridgehead_stdin;

/// Runs `bridgehead probe ARGS --output json`: (exit code, the report).
async fn probe(args: &[&str]) -> (i32, Value) {
    let mut all: Vec<String> =
        vec!["probe".into(), "--output".into(), "json".into(), "--timeout".into(), "2s".into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, out, err) = bridgehead_stdin(&refs, "");
        let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: stdout {out:?} stderr {err:?}"));
        (code, v)
    })
    .await
    .unwrap()
}

/// A peer that refuses with a Bearer challenge and states its limits the way many APIs do.
async fn challenging_peer() -> Peer {
    Peer::start(|req| {
        let origin = req.headers().get("origin").cloned().unwrap_or(http::HeaderValue::from_static("none"));
        Response::builder()
            .status(401)
            .header("access-control-allow-origin", origin)
            .header("strict-transport-security", "max-age=60; includeSubDomains")
            .header("www-authenticate", r#"Bearer realm="api", error="invalid_token""#)
            .header("www-authenticate", "Basic realm=\"legacy\"")
            .header("x-ratelimit-limit", "100")
            .header("x-ratelimit-remaining", "99")
            .header("content-type", "application/json")
            .body(bytes::Bytes::from_static(b"{\"error\":\"unauthorized\"}"))
            .unwrap()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_endpoint_behind_the_gateway_is_described() {
    let peer = challenging_peer().await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, rate_limit: {{ key: ip, rate: 50/s }} }}\n",
        peer.url("")
    ))
    .await;
    let (code, r) = probe(&[&gw.url("/v1/things?x=1"), "--origin", "https://app.example"]).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["dns"]["addresses"][0], "127.0.0.1");
    assert_eq!(r["tcp"][0]["outcome"], "connected");
    assert!(r.get("tls").is_none());
    assert_eq!(r["http"]["status"], 401);
    assert_eq!(r["http"]["version"], "HTTP/1.1");
    let schemes: Vec<&str> =
        r["auth"].as_array().unwrap().iter().map(|c| c["scheme"].as_str().unwrap()).collect();
    assert_eq!(schemes, ["Bearer", "Basic"]);
    assert_eq!(r["auth"][0]["params"][1], serde_json::json!(["error", "invalid_token"]));
    // The gateway's own IETF headers and the peer's X-RateLimit-* are both read.
    let shapes = r["limits"]["shapes"].as_array().unwrap();
    assert!(shapes.contains(&"ietf".into()) && shapes.contains(&"x-ratelimit".into()), "{r:#}");
    assert_eq!(r["hints"][0]["product"], "Bridgehead");
    // The Origin was sent, and the answer's behaviour read.
    let b = &r["behaviour"];
    assert_eq!(b["cors"]["allow_origin"], "https://app.example", "{b:#}");
    assert_eq!(b["hsts"], serde_json::json!({"max_age_s": 60, "include_subdomains": true, "preload": false}));
    assert_eq!(b["keep_alive"], true);
    assert!(r.get("failed").is_none());
}

#[tokio::test]
async fn a_refusing_port_fails_at_tcp_and_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (code, r) = probe(&[&format!("http://127.0.0.1:{port}/")]).await;
    assert_eq!(code, 1);
    assert_eq!(r["tcp"][0]["outcome"], "refused");
    assert_eq!(r["failed"]["step"], "tcp");
    assert!(r["failed"]["reason"].as_str().unwrap().contains("refused"), "{r:#}");
    let (code, r) = probe(&["ftp://127.0.0.1/"]).await;
    assert_eq!((code, r["failed"]["step"].as_str()), (1, Some("url")));
}

#[tokio::test]
async fn a_server_that_never_completes_the_handshake_times_out_at_tls() {
    // Accepts TCP and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let (code, r) = probe(&[&format!("https://localhost:{}/", addr.port())]).await;
    assert_eq!(code, 1);
    assert_eq!(r["failed"]["step"], "tls", "{r:#}");
    assert!(r["failed"]["reason"].as_str().unwrap().contains("no handshake within 2s"), "{r:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A CA, and a server certificate it signed for `names`, valid from `from` for `days`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes `ca.pem` and, signed by it, `NAME.pem`/`NAME.key` for `names`; expired when asked.
    fn issue(&self, name: &str, names: &[&str], expired: bool) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(self.path(&format!("{name}-ca.pem")), ca_cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// A gateway whose TLS listener serves `name`'s certificate (`extra`: more `server.tls`
    /// keys), proxying to `peer`.
    async fn gateway(&self, name: &str, extra: &str, peer: &Peer) -> Gateway {
        Gateway::start(&format!(
            "server:\n  tls: {{ cert: {}, key: {}{extra} }}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
            peer.url("")
        ))
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_described_with_its_chain_and_client_certificate_requests() {
    let peer = Peer::start(|_req| Response::new(bytes::Bytes::from_static(b"ok"))).await;
    let pki = Pki::new();
    pki.issue("server", &["localhost"], false);
    pki.issue("client", &["probe-client"], false);
    // No client certificate asked for; the chain verifies against the given CA.
    let gw = pki.gateway("server", "", &peer).await;
    let url = format!("https://localhost:{}/", gw.addr.port());
    let (code, r) = probe(&[&url, "--cacert", &pki.path("server-ca.pem")]).await;
    assert_eq!(code, 0, "{r:#}");
    let tls = &r["tls"];
    assert_eq!(tls["alpn"], "h2");
    assert_eq!(tls["verified"], true, "{tls:#}");
    assert_eq!(tls["client_cert_requested"], false);
    assert_eq!(tls["chain"][0]["subject"], "CN=localhost");
    assert_eq!(tls["chain"][0]["sans"], serde_json::json!(["localhost"]));
    assert!(tls["chain"][0]["days_left"].as_i64().unwrap() > 300);
    assert_eq!(r["http"]["version"], "HTTP/2.0");
    assert_eq!(r["http"]["status"], 200);
    // Trusting another CA: described, not verified, and still probed. (Not the system roots,
    // which a machine may not have: the reason would differ.)
    let (code, r) = probe(&[&url, "--cacert", &pki.path("client-ca.pem")]).await;
    assert_eq!(code, 0);
    assert_eq!(r["tls"]["verified"], false);
    assert!(r["tls"]["verify_error"].as_str().unwrap().contains("UnknownIssuer"), "{r:#}");
    gw.shutdown().await;

    // Optional client certificates: asked for; offered when given.
    let optional = format!(", client_ca: {}, client_auth: optional", pki.path("client-ca.pem"));
    let gw = pki.gateway("server", &optional, &peer).await;
    let url = format!("https://localhost:{}/", gw.addr.port());
    let (_, r) = probe(&[&url, "--cacert", &pki.path("server-ca.pem")]).await;
    assert_eq!(
        (r["tls"]["client_cert_requested"].as_bool(), r["tls"]["client_cert_sent"].as_bool()),
        (Some(true), Some(false))
    );
    let (code, r) = probe(&[
        &url,
        "--cacert",
        &pki.path("server-ca.pem"),
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ])
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["tls"]["client_cert_sent"], true);
    // A server whose chain does not verify is never offered the client certificate.
    let (code, r) = probe(&[
        &url,
        "--cacert",
        &pki.path("client-ca.pem"),
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ])
    .await;
    assert_eq!((code, r["failed"]["step"].as_str()), (1, Some("tls")), "{r:#}");
    assert!(
        r["failed"]["reason"].as_str().unwrap().contains("the client certificate is not offered"),
        "{r:#}"
    );
    gw.shutdown().await;

    // Required: without one the handshake fails, and the report says why.
    let required = format!(", client_ca: {}, client_auth: required", pki.path("client-ca.pem"));
    let gw = pki.gateway("server", &required, &peer).await;
    let url = format!("https://localhost:{}/", gw.addr.port());
    let (code, r) = probe(&[&url, "--cacert", &pki.path("server-ca.pem")]).await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["failed"]["step"], "tls", "{r:#}");
    assert!(r["failed"]["reason"].as_str().unwrap().contains("asked for a client certificate"), "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_wrong_host_certificates_are_named() {
    let peer = Peer::start(|_req| Response::new(bytes::Bytes::from_static(b"ok"))).await;
    let pki = Pki::new();
    pki.issue("old", &["localhost"], true);
    pki.issue("other", &["other.test"], false);
    for (name, want) in [("old", "certificate expired"), ("other", "not valid for name")] {
        let gw = pki.gateway(name, "", &peer).await;
        let url = format!("https://localhost:{}/", gw.addr.port());
        let (code, r) = probe(&[&url, "--cacert", &pki.path(&format!("{name}-ca.pem"))]).await;
        assert_eq!(code, 0, "{r:#}");
        assert_eq!(r["tls"]["verified"], false);
        assert!(r["tls"]["verify_error"].as_str().unwrap().contains(want), "{name}: {r:#}");
        if name == "old" {
            assert!(r["tls"]["chain"][0]["days_left"].as_i64().unwrap() < 0);
        }
        gw.shutdown().await;
    }
}
