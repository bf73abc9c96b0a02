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
    let (code, r) = probe(&[&url, "--cacert", &pki.path("server-ca.pem"), "--bearer", "opaque-token"]).await;
    assert_eq!(code, 0, "{r:#}");
    // A verified chain: the token is tried, on a connection whose chain must verify again.
    assert_eq!(r["bearer"]["status_with_token"], 200, "{r:#}");
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
    let (code, r) = probe(&[&url, "--cacert", &pki.path("client-ca.pem"), "--bearer", "opaque-token"]).await;
    assert_eq!(code, 0);
    assert_eq!(r["tls"]["verified"], false);
    assert!(r["bearer"]["not_sent"].as_str().unwrap().contains("did not verify"), "{r:#}");
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
    let yaml = suggestion_checks(&r).await;
    assert!(
        yaml.contains(&format!("cert: \"{}\"", pki.path("client.pem"))) && yaml.contains("protocol: auto"),
        "{yaml}"
    );
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

/// Checks the report's suggested config with `bridgehead config check`, with the environment
/// variables it names set; returns the fragment.
async fn suggestion_checks(r: &Value) -> String {
    let yaml = r["suggested_config"].as_str().unwrap_or_else(|| panic!("no suggestion: {r:#}")).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridgehead.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let vars: Vec<String> = yaml
        .lines()
        .find_map(|l| l.strip_prefix("# Set first: "))
        .map(|v| v.split(", ").map(str::to_owned).collect())
        .unwrap_or_default();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(crate::support::BIN);
        cmd.args(["config", "check", file.to_str().unwrap()]);
        for v in vars {
            cmd.env(v, "x");
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{yaml}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml
}

/// The findings of a report, by protocol.
fn found<'a>(r: &'a Value, protocol: &str) -> Option<&'a Value> {
    r["protocols"]["found"].as_array().unwrap().iter().find(|f| f["protocol"] == protocol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_servers_are_found_with_their_reflected_services_over_h2c() {
    let server = crate::grpc::DemoServer::start(true).await;
    // The server speaks only HTTP/2: the GET is asked again with prior knowledge.
    let (code, r) = probe(&[&format!("http://{}/", server.addr), "--samples", "5"]).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["http"]["version"], "HTTP/2.0");
    let g = found(&r, "grpc").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(g["version"], "v1");
    assert!(g["services"].as_array().unwrap().contains(&"drone.v1.Telemetry".into()), "{g:#}");
    assert!(g["evidence"].as_str().unwrap().contains("grpc-status 0"), "{g:#}");
    assert_eq!(r["latency"]["samples"], 5, "{r:#}");
    assert!(r["latency"]["p50_ms"].as_f64().unwrap() <= r["latency"]["p99_ms"].as_f64().unwrap());
    let yaml = suggestion_checks(&r).await;
    assert!(yaml.contains("protocol: h2c") && yaml.contains("descriptors: { reflection: true }"), "{yaml}");
    assert!(yaml.contains("grpc_service: drone.v1.Telemetry"), "{yaml}");

    let bare = crate::grpc::DemoServer::start(false).await;
    let (code, r) = probe(&[&format!("http://{}/", bare.addr)]).await;
    assert_eq!(code, 0, "{r:#}");
    let g = found(&r, "grpc").unwrap_or_else(|| panic!("{r:#}"));
    assert!(g.get("services").is_none() && g.get("version").is_none(), "{g:#}");
    assert!(g["evidence"].as_str().unwrap().contains("no reflection listing"), "{g:#}");
    let tried: Vec<&str> =
        r["protocols"]["tried"].as_array().unwrap().iter().map(|t| t["probe"].as_str().unwrap()).collect();
    assert!(tried.iter().any(|t| t.starts_with("gRPC reflection v1:")), "{tried:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoding_gateway_shows_json_grpc_and_grpc_web() {
    let server = crate::grpc::DemoServer::start(true).await;
    let gw = Gateway::start(&crate::grpc::config(server.addr, "{ reflection: true }", "")).await;
    let (code, r) = probe(&[&gw.url("/rest/v1/drones/d-1")]).await;
    assert_eq!(code, 0, "{r:#}");
    assert!(found(&r, "json").is_some(), "{r:#}");
    // The gateway answers any gRPC call, in gRPC; reflection is not routed here.
    let g = found(&r, "grpc").unwrap_or_else(|| panic!("{r:#}"));
    assert!(g["evidence"].as_str().unwrap().contains("no reflection listing"), "{g:#}");
    for p in ["graphql", "websocket", "soap", "openapi"] {
        assert!(found(&r, p).is_none(), "{p}: {r:#}");
    }

    // A URL naming a gRPC method: gRPC-Web is asked for a method the service does not have.
    let (code, r) = probe(&[&gw.url("/drone.v1.Telemetry/GetStatus")]).await;
    assert_eq!(code, 0, "{r:#}");
    let w = found(&r, "grpc-web").unwrap_or_else(|| panic!("{r:#}"));
    let e = w["evidence"].as_str().unwrap();
    assert!(e.contains("/drone.v1.Telemetry/BridgeheadProbe") && e.contains("grpc-status 12"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_websocket_and_a_yaml_openapi_document_are_found() {
    use base64::Engine as _;
    let peer = Peer::start(|req| {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let ok = |ct: &str, body: String| {
            Response::builder().status(200).header("content-type", ct).body(bytes::Bytes::from(body)).unwrap()
        };
        match path.as_str() {
            "/graphql" if query.contains("__schema") => ok(
                "application/json",
                r#"{"data":{"__schema":{"queryType":{"name":"Query"},"types":[{"name":"Query"},{"name":"Order"}]}}}"#.into(),
            ),
            "/api/openapi.yaml" => ok("application/yaml", "openapi: 3.0.3\ninfo:\n  title: Orders\npaths:\n  /orders:\n    get: {}\n".into()),
            "/live" if req.headers().get("upgrade").is_some() => {
                let key = req.headers()["sec-websocket-key"].to_str().unwrap().to_owned();
                let mut h = sha1_smol::Sha1::new();
                h.update(key.as_bytes());
                h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
                let accept = base64::engine::general_purpose::STANDARD.encode(h.digest().bytes());
                Response::builder()
                    .status(101)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", accept)
                    .body(bytes::Bytes::new())
                    .unwrap()
            }
            _ => Response::builder().status(404).body(bytes::Bytes::new()).unwrap(),
        }
    })
    .await;
    let (code, r) = probe(&[&peer.url("/api/live")]).await;
    assert_eq!(code, 0, "{r:#}");
    let g = found(&r, "graphql").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(g["url"], peer.url("/graphql"));
    assert_eq!(g["operations"], serde_json::json!(["Query"]));
    assert!(g["evidence"].as_str().unwrap().contains("2 types"));
    let o = found(&r, "openapi").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!((o["title"].as_str(), o["version"].as_str()), (Some("Orders"), Some("3.0.3")), "{o:#}");
    assert!(found(&r, "websocket").is_none(), "{r:#}");
    let (_, r) = probe(&[&peer.url("/live")]).await;
    let w = found(&r, "websocket").unwrap_or_else(|| panic!("{r:#}"));
    assert!(w["evidence"].as_str().unwrap().contains("101, Sec-WebSocket-Accept right"), "{w:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_metadata_is_read_and_a_bearer_token_checked_and_tried() {
    use crate::oauth::{ISSUER, SECRET, basic, config, post_form};
    let m = bridgehead_mock::MockServer::start(bridgehead_mock::MockOptions::default()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&m.url(), state.path(), "")).await;
    let got =
        post_form(&gw.url("/oauth2/token"), Some(&basic("svc", SECRET)), "grant_type=client_credentials")
            .await;
    let token = got.json()["access_token"].as_str().unwrap().to_owned();

    let (code, r) = probe(&[&gw.url("/api/orders"), "--bearer", &token]).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["http"]["status"], 401);
    let o = &r["oauth"];
    assert_eq!(o["url"], gw.url("/.well-known/oauth-authorization-server"), "{o:#}");
    assert_eq!(o["issuer"], ISSUER);
    assert_eq!(o["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(o["pkce_methods"], serde_json::json!(["S256"]));
    assert!(o.get("warnings").is_none(), "{o:#}");
    let b = &r["bearer"];
    assert_eq!(b["format"], "jwt");
    assert_eq!(b["claims"]["iss"], ISSUER);
    assert!(b.get("problems").is_none(), "{b:#}");
    // Over http:// the token is checked, not sent (it would travel in clear text).
    assert!(b.get("status_with_token").is_none(), "{b:#}");
    assert!(b["not_sent"].as_str().unwrap().contains("clear text"), "{b:#}");
    let yaml = suggestion_checks(&r).await;
    assert!(yaml.contains(&format!("token_url: \"{ISSUER}/oauth2/token\"")), "{yaml}");
    // The token is never echoed.
    assert!(!r.to_string().contains(&token));

    let (code, r) = probe(&[&gw.url("/api/orders"), "--bearer", "not-a-jwt"]).await;
    assert_eq!(code, 0);
    assert_eq!(r["bearer"]["format"], "opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spyne_soap_service_is_found_by_its_wsdl_and_its_fault() {
    for (soap, version, code) in [("11", "1.1", "Client"), ("12", "1.2", "Sender")] {
        let Some((_server, port)) = crate::support::python_peer("spyne_server.py", &["--soap", soap]).await
        else {
            return;
        };
        let url = format!("http://127.0.0.1:{port}/");
        let (exit, r) = probe(&[&url, "--post"]).await;
        assert_eq!(exit, 0, "{r:#}");
        let s = found(&r, "soap").unwrap_or_else(|| panic!("{r:#}"));
        assert_eq!(s["url"], format!("{url}?wsdl"));
        assert_eq!(s["version"], version, "{s:#}");
        assert_eq!(s["services"], serde_json::json!(["Billing"]));
        let ops = s["operations"].as_array().unwrap();
        assert!(ops.contains(&"GetInvoice".into()) && ops.contains(&"CreateInvoice".into()), "{s:#}");
        let e = s["evidence"].as_str().unwrap();
        // The fault to the envelope naming no operation (spyne's SOAP 1.2 side crashes on it, so
        // there the GET's own 405 fault is the evidence).
        assert!(e.contains("a WSDL 1.1 document") && e.contains(&format!("soap{soap}env:{code}")), "{e}");
        // One SOAP finding, with the GET's own fault folded in.
        let n =
            r["protocols"]["found"].as_array().unwrap().iter().filter(|f| f["protocol"] == "soap").count();
        assert_eq!(n, 1, "{r:#}");
        // --post sent {} as JSON; the outcome is listed.
        let tried = r["protocols"]["tried"].as_array().unwrap();
        let post = tried.iter().find(|t| t["probe"].as_str().unwrap().starts_with("POST / with {}")).unwrap();
        assert!(post["outcome"].as_str().unwrap().contains("SOAP fault"), "{post:#}");
        // The suggestion exposes it as JSON, and the config it makes is accepted.
        let yaml = suggestion_checks(&r).await;
        assert!(
            yaml.contains(&format!("wsdl: \"{url}?wsdl\""))
                && yaml.contains("soap: { service: api-127-0-0-1 }"),
            "{yaml}"
        );
    }
}

/// A DNS server on a free UDP port: `www.probe.test` is a CNAME of `edge.probe.test`, which has
/// 127.0.0.1; every other name does not exist. Written by hand: a test needs no more.
async fn dns_server() -> std::net::SocketAddr {
    fn name(n: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for label in n.split('.') {
            b.push(u8::try_from(label.len()).unwrap());
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b
    }
    fn record(owner: &[u8], kind: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        r.extend_from_slice(data);
        r
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let q = &buf[..n];
            // The question: labels from byte 12 to the zero, then type and class.
            let mut i = 12;
            let mut labels = Vec::new();
            while q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..=i + len]).to_ascii_lowercase());
                i += len + 1;
            }
            let question = &q[12..i + 5];
            let kind = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let mut answers = Vec::new();
            let known = labels.join(".") == "www.probe.test";
            if known {
                answers.push(record(&[0xc0, 12], 5, 300, &name("edge.probe.test")));
                if kind == 1 {
                    answers.push(record(&name("edge.probe.test"), 1, 60, &[127, 0, 0, 1]));
                }
            }
            let mut res = q[..2].to_vec();
            res.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }, 0, 1]);
            res.extend_from_slice(&u16::try_from(answers.len()).unwrap().to_be_bytes());
            res.extend_from_slice(&[0, 0, 0, 0]);
            res.extend_from_slice(question);
            for a in answers {
                res.extend(a);
            }
            let _ = socket.send_to(&res, from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_servers_are_asked_in_turn_and_the_cname_chain_and_ttls_shown() {
    let peer = Peer::start(|_req| Response::new(bytes::Bytes::from_static(b"ok"))).await;
    let gw = Gateway::start(&bridgehead_testkit::simple_config(&peer.url(""))).await;
    let live = dns_server().await;
    // A server that never answers: bound, silent.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dead = silent.local_addr().unwrap().to_string();
    let url = format!("http://www.probe.test:{}/", gw.addr.port());
    let (code, r) = probe(&[&url, "--dns-server", &dead, "--dns-server", &live.to_string()]).await;
    assert_eq!(code, 0, "{r:#}");
    let d = &r["dns"];
    assert_eq!(d["source"], "dns");
    assert_eq!(d["addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(d["cname_chain"], serde_json::json!(["www.probe.test", "edge.probe.test"]));
    assert_eq!(d["answered_by"], live.to_string());
    assert_eq!(d["servers"][0]["outcome"], "timeout", "{d:#}");
    assert_eq!(d["servers"][1]["outcome"], "answered", "{d:#}");
    let ttls: Vec<(&str, u64)> = d["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["type"].as_str().unwrap(), x["ttl"].as_u64().unwrap()))
        .collect();
    assert_eq!(ttls, [("CNAME", 300), ("A", 60)]);
    assert_eq!(r["http"]["status"], 200);

    // A name that does not exist fails at DNS, and says who said so.
    let (code, r) =
        probe(&[&format!("http://gone.probe.test:{}/", gw.addr.port()), "--dns-server", &live.to_string()])
            .await;
    assert_eq!(code, 1);
    assert_eq!(r["failed"]["step"], "dns");
    let reason = r["failed"]["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("{live} says the name does not exist (NXDOMAIN)")), "{reason}");
    drop(silent);
}
