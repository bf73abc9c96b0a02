//! Edge security against a real upstream: every spelling of a protected path and host is
//! refused or authenticated, never served past the gateway; upgrades only by allow-list.
//!
//! The upstream is a stock nginx (Debian's package, started on a free port) whose
//! `location /secure` serves a secret, as nginx users write it: nginx decodes, merges slashes
//! and removes dot segments before matching, so any spelling the gateway routes differently is
//! a bypass. Set BRIDGEHEAD_SKIP_NGINX=1 to skip these tests.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const KEY: &str = "bh_edge-test-key-0001";

/// nginx: a secret under the string prefix `/secure`, public pages elsewhere. Each answer says
/// what nginx received.
const SITE: &str = r#"    location /secure { return 200 "SECRET host=$http_host uri=$request_uri\n"; }
    location / { return 200 "public host=$http_host uri=$request_uri\n"; }"#;

fn config(upstream: &str, routes: &str) -> String {
    let digest = bridgehead_auth::apikey::sha256_hex(KEY);
    format!(
        "authenticators:\n  partners:\n    api_key:\n      header: X-API-Key\n      keys: [{{ consumer: acme, sha256: \"{digest}\" }}]\n\
         upstreams:\n  site:\n    targets: [{{ url: \"{upstream}\" }}]\n    timeouts: {{ connect: 1s, request: 5s }}\nroutes:\n{routes}"
    )
}

const PUBLIC: &str = "  - { name: public, match: { path_prefix: / }, upstream: site }\n";

const SECURE_AND_PUBLIC: &str = "  - { name: secure, match: { path_prefix: /secure }, upstream: site, auth: [partners] }\n  - { name: public, match: { path_prefix: / }, upstream: site }\n";

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

/// The spellings that reached nginx's secret through the public route before normalization.
const BYPASSES: &[&str] = &[
    "//secure/x",
    "///secure/x",
    "/./secure/x",
    "/pub/../secure/x",
    "/%20/../secure/x",
    "/%73ecure/x",
    "/%2e/secure/x",
    "/pub/%2e%2e/secure/x",
    "/%2fsecure/x",
    "/%2Fsecure/x",
    "/secure%2fx",
    "/x/..%2fsecure/x",
    "/secure\\x",
    // Path parameters: nginx's string prefix takes them, servlet containers strip them.
    "/secure;jsessionid=1/x",
];

/// The ones that were refused before, and must stay so.
const REFUSED: &[&str] = &["/.%2e/secure/x", "/%2E%2E/secure/x", "/secure%00/x", "/;x/secure/x"];

#[tokio::test]
async fn no_spelling_of_a_protected_path_reaches_the_secret() {
    let Some(mut nginx) = TestNginx::start(SITE) else { return };
    // The premise: nginx alone serves the secret for each bypass spelling.
    for path in BYPASSES {
        let direct = raw_request(nginx.addr, &get(path, "x", "")).await;
        assert!(direct.body.starts_with("SECRET"), "nginx alone should serve {path}: {}", direct.body);
    }
    let gw = Gateway::start(&config(&nginx.url(), SECURE_AND_PUBLIC)).await;
    let mut failures = Vec::new();
    for path in BYPASSES.iter().chain(REFUSED) {
        let res = raw_request(gw.addr, &get(path, "x", "")).await;
        let verdict = match res.status {
            401 if res.json()["reason"] == "missing_credentials" => "ok",
            400 if res.json()["type"] == "urn:bridgehead:problem:invalid-path" => "ok",
            _ => "bypass",
        };
        if verdict != "ok" || res.body.contains("SECRET") {
            failures.push(format!("{path}: {} {}", res.status, res.body.trim()));
        }
    }
    assert!(failures.is_empty(), "served without a key:\n{}", failures.join("\n"));

    // With the key, every accepted spelling reaches the secret in its canonical form.
    let key = format!("X-API-Key: {KEY}\r\n");
    for (path, canonical) in [
        ("/secure/x", "/secure/x"),
        ("//secure/x", "/secure/x"),
        ("/pub/../secure/x", "/secure/x"),
        ("/%73ecure/x?q=%2e%2E", "/secure/x?q=%2e%2E"),
        ("/secure/a%3fb", "/secure/a%3Fb"),
        ("/secure;jsessionid=1/x", "/secure;jsessionid=1/x"),
    ] {
        let res = raw_request(gw.addr, &get(path, "x", &key)).await;
        assert_eq!(res.status, 200, "{path}: {}", res.body);
        assert_eq!(res.body.trim(), format!("SECRET host=x uri={canonical}"), "{path}");
    }
    // The access log records the canonical path (a refused one as sent, to show the attempt).
    let logged: Vec<String> = gw
        .log_lines()
        .iter()
        .filter(|l| l["status"] != 400)
        .filter_map(|l| l["path"].as_str().map(str::to_owned))
        .collect();
    assert!(logged.contains(&"/secure/x".to_owned()), "{logged:?}");
    assert!(
        !logged.iter().any(|p| p.contains("%73") || p.contains("..") || p.starts_with("//")),
        "{logged:?}"
    );
    assert!(nginx.running(), "the upstream stayed up");
}

/// HTTP/2 carries the path in `:path`: the same spellings, the same answers.
#[tokio::test]
async fn http2_spellings_are_refused_alike() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let gw = Gateway::start(&config(&nginx.url(), SECURE_AND_PUBLIC)).await;
    let c = h2c_client();
    let mut failures = Vec::new();
    let mut unsendable = Vec::new();
    for path in BYPASSES.iter().chain(REFUSED) {
        let Ok(uri) = format!("http://{}{path}", gw.addr).parse::<http::Uri>() else {
            unsendable.push(*path);
            continue;
        };
        let got = send(&c, http::Request::get(uri).body(empty()).unwrap()).await;
        let ok = match got.status {
            401 => got.json()["reason"] == "missing_credentials",
            400 => got.json()["type"] == "urn:bridgehead:problem:invalid-path",
            _ => false,
        };
        if !ok {
            failures.push(format!("{path}: {} {}", got.status, String::from_utf8_lossy(&got.body)));
        }
    }
    assert!(failures.is_empty(), "over HTTP/2:\n{}", failures.join("\n"));
    // The client library refuses to send these; HTTP/1.1 covers them above.
    assert_eq!(unsendable, Vec::<&str>::new(), "paths the HTTP/2 client cannot send");
    let uri: http::Uri = format!("http://{}//secure/./x", gw.addr).parse().unwrap();
    let req = http::Request::get(uri).header("x-api-key", KEY).body(empty()).unwrap();
    let got = send(&c, req).await;
    assert_eq!(String::from_utf8_lossy(&got.body).trim(), format!("SECRET host={} uri=/secure/x", gw.addr));
}

/// `;` parameters: routed without them, forwarded with them; `strip_prefix` takes the prefix's
/// segments, parameters and all.
#[tokio::test]
async fn path_parameters_are_routed_without_and_forwarded_with() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let routes = format!(
        "  - {{ name: api, match: {{ path_prefix: /api }}, upstream: site, strip_prefix: /api }}\n{SECURE_AND_PUBLIC}"
    );
    let gw = Gateway::start(&config(&nginx.url(), &routes)).await;
    let res = raw_request(gw.addr, &get("/api;v=2/orders;x/7?q=1", "x", "")).await;
    assert_eq!(res.body.trim(), "public host=x uri=/orders;x/7?q=1");
    let res = raw_request(gw.addr, &get("/api/orders", "x", "")).await;
    assert_eq!(res.body.trim(), "public host=x uri=/orders");
    let res = raw_request(gw.addr, &get("/secure;v=2/x", "x", "")).await;
    assert_eq!(res.status, 401, "{}", res.body);
    let res = raw_request(gw.addr, &get("/users/;x/secrets", "x", "")).await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert!(res.json()["detail"].as_str().unwrap().contains("segment `;x` has parameters but no name"));
    // Tomcat's URL rewriting: a last segment of parameters only.
    let res = raw_request(gw.addr, &get("/secure/;jsessionid=1", "x", "")).await;
    assert_eq!(res.status, 401, "{}", res.body);
    let res = raw_request(gw.addr, &get("/pub/;jsessionid=1", "x", "")).await;
    assert_eq!(res.body.trim(), "public host=x uri=/pub/;jsessionid=1");
}

/// A path with parameters is routed both ways: without them (a servlet container's reading)
/// and as sent (everyone else's). A protected route met either way authenticates the request.
#[tokio::test]
async fn path_parameters_cannot_turn_a_protected_reading_public() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let digest = bridgehead_auth::apikey::sha256_hex(KEY);
    let yaml = format!(
        "authenticators:\n  partners:\n    api_key:\n      header: X-API-Key\n      keys: [{{ consumer: acme, sha256: \"{digest}\" }}]\n  ops:\n    api_key:\n      header: X-Ops-Key\n      keys: [{{ consumer: ops, sha256: \"{digest}\" }}]\n\
         upstreams:\n  site:\n    targets: [{{ url: \"{}\" }}]\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: site, auth: [ops] }}\n  - {{ name: health, match: {{ path: /health }}, upstream: site }}\n  - {{ name: a, match: {{ path_prefix: /a }}, upstream: site, auth: [partners] }}\n  - {{ name: v1, match: {{ host: api.example.com }}, upstream: site, strip_prefix: /v1 }}\n",
        nginx.url()
    );
    let gw = Gateway::start(&yaml).await;
    // Deny by default: `/health;x` is `/health` only to a servlet container; nginx's `location /`
    // (and the catch-all route) take it as sent, so it needs the catch-all's key.
    let res = raw_request(gw.addr, &get("/health;x", "x", "")).await;
    assert_eq!(res.status, 401, "{}", res.body);
    let res = raw_request(gw.addr, &get("/health", "x", "")).await;
    assert_eq!(res.body.trim(), "public host=x uri=/health");
    let res = raw_request(gw.addr, &get("/health;x", "x", &format!("X-Ops-Key: {KEY}\r\n"))).await;
    assert_eq!(res.body.trim(), "public host=x uri=/health;x");
    // Two protected routes, one per reading: ambiguous.
    let res = raw_request(gw.addr, &get("/a;x", "x", "")).await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert!(
        res.json()["detail"]
            .as_str()
            .unwrap()
            .contains("matches route `a` without its `;` parameters and route `all` with them")
    );
    // `strip_prefix` applies only where the path without parameters starts with it.
    let res = raw_request(gw.addr, &get("/other;p/b", "api.example.com", "")).await;
    assert_eq!(res.body.trim(), "public host=api.example.com uri=/other;p/b");
    let res = raw_request(gw.addr, &get("/v1;p/b", "api.example.com", "")).await;
    assert_eq!(res.body.trim(), "public host=api.example.com uri=/b");
}

#[tokio::test]
async fn invalid_paths_get_a_problem_naming_the_offending_part() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let gw = Gateway::start(&config(&nginx.url(), SECURE_AND_PUBLIC)).await;
    for (path, detail) in [
        ("/secure%2fx", "escaped slash `%2f` at byte 7"),
        ("/a/%zz", "invalid percent-escape `%zz` at byte 3"),
        ("/a%0d%0aX-Injected:%201", "control character (`%0D`) at byte 2"),
        ("/../etc/passwd", "climbs above the root"),
        ("/pub/..;/secure/x", "dot segment with parameters"),
        ("/secure\\x", "backslash at byte 7"),
    ] {
        let res = raw_request(gw.addr, &get(path, "x", "")).await;
        assert_eq!(res.status, 400, "{path}: {}", res.body);
        assert!(res.head.contains("content-type: application/problem+json"), "{path}");
        let p = res.json();
        assert_eq!(p["type"], "urn:bridgehead:problem:invalid-path", "{path}");
        assert_eq!(p["title"], "Invalid request path");
        assert!(p["detail"].as_str().unwrap().contains(detail), "{path}: {}", p["detail"]);
    }
}

#[tokio::test]
async fn escaped_slash_policies_against_nginx() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    // `decode`: `%2F` is a separator, so `/x/..%2fsecure/x` is `/secure/x` and needs the key.
    let yaml = format!(
        "server:\n  path_normalization: {{ escaped_slashes: decode }}\n{}",
        config(&nginx.url(), SECURE_AND_PUBLIC)
    );
    let gw = Gateway::start(&yaml).await;
    for path in ["/x/..%2fsecure/x", "/%2fsecure/x", "/secure%2Fx"] {
        let res = raw_request(gw.addr, &get(path, "x", "")).await;
        assert_eq!(res.status, 401, "{path}: {}", res.body);
    }
    let res = raw_request(gw.addr, &get("/secure%2Fx", "x", &format!("X-API-Key: {KEY}\r\n"))).await;
    assert_eq!(res.body.trim(), "SECRET host=x uri=/secure/x");
    gw.shutdown().await;

    // `keep`: forwarded encoded, routed as part of a segment.
    let yaml = format!(
        "server:\n  path_normalization: {{ escaped_slashes: keep }}\n{}",
        config(&nginx.url(), SECURE_AND_PUBLIC)
    );
    let gw = Gateway::start(&yaml).await;
    let res = raw_request(gw.addr, &get("/pub%2fx", "x", "")).await;
    assert_eq!(res.body.trim(), "public host=x uri=/pub%2Fx");
}

#[tokio::test]
async fn host_routes_win_over_host_less_ones_in_every_spelling() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let routes = "  - { name: admin, match: { host: admin.example.com }, upstream: site, auth: [partners] }\n  - { name: public, match: { path_prefix: / }, upstream: site }\n";
    let gw = Gateway::start(&config(&nginx.url(), routes)).await;
    let mut failures = Vec::new();
    let requests = [
        ("Host", get("/x", "admin.example.com", "")),
        ("upper case", get("/x", "ADMIN.Example.COM", "")),
        ("trailing dot", get("/x", "admin.example.com.", "")),
        ("explicit port", get("/x", "admin.example.com:8080", "")),
        ("all at once", get("/x", "Admin.Example.Com.:80", "")),
        ("absolute-form", get("http://admin.example.com/x", "public.example.com", "")),
        ("absolute-form, upper case", get("http://ADMIN.EXAMPLE.COM./x", "public.example.com", "")),
        ("path spelling", get("//x/../y", "admin.example.com", "")),
    ];
    for (name, request) in &requests {
        let res = raw_request(gw.addr, request).await;
        if res.status != 401 || res.json()["reason"] != "missing_credentials" {
            failures.push(format!("{name}: {} {}", res.status, res.body.trim()));
        }
    }
    assert!(failures.is_empty(), "host route bypassed:\n{}", failures.join("\n"));
    // Other hosts take the public route.
    let res = raw_request(gw.addr, &get("/x", "www.example.com", "")).await;
    assert_eq!(res.body.trim(), "public host=www.example.com uri=/x");
    // With the key, the upstream sees the canonical host, port kept.
    let key = format!("X-API-Key: {KEY}\r\n");
    let res = raw_request(gw.addr, &get("/x", "ADMIN.example.com.:8080", &key)).await;
    assert_eq!(res.body.trim(), "public host=admin.example.com:8080 uri=/x");
    let res = raw_request(gw.addr, &get("http://Admin.Example.Com/x", "evil.example.com", &key)).await;
    assert_eq!(res.body.trim(), "public host=admin.example.com uri=/x");
    // Hosts that are no host name: 400 naming the problem.
    for (host, detail) in [
        ("admin.example.com..", "empty label"),
        ("admin..example.com", "empty label"),
        ("exa$mple.com", "contains '$'"),
    ] {
        let res = raw_request(gw.addr, &get("/x", host, "")).await;
        assert_eq!(res.status, 400, "{host}: {}", res.body);
        let p = res.json();
        assert_eq!(p["type"], "urn:bridgehead:problem:bad-request");
        let d = p["detail"].as_str().unwrap();
        assert!(d.contains("invalid host in the Host header") && d.contains(detail), "{host}: {d}");
    }
}

/// What a raw upstream does with a request.
#[derive(Clone, Copy)]
enum Answer {
    /// 101 with `Upgrade: h2c` to every request, then echo.
    AlwaysSwitch,
    /// 101 to the protocol in the request's `Upgrade` (then echo), 200 without one.
    SwitchWhenAsked,
}

/// A raw HTTP/1.1 upstream that records every request head it reads.
struct RawUpstream {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start(answer: Answer) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, answer, recorded.clone()));
            }
        });
        RawUpstream { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, answer: Answer, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end + 4);
        heads.lock().unwrap().push(head.clone());
        let asked = head.lines().find_map(|l| l.strip_prefix("upgrade:")).map(|v| v.trim().to_owned());
        let switch_to = match (answer, asked) {
            (Answer::AlwaysSwitch, _) => Some("h2c".to_owned()),
            (Answer::SwitchWhenAsked, asked) => asked,
        };
        match switch_to {
            Some(protocol) => {
                let res = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
                );
                if stream.write_all(res.as_bytes()).await.is_err() {
                    return;
                }
                // Whatever arrives through the tunnel is recorded and echoed.
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            heads
                                .lock()
                                .unwrap()
                                .push(format!("tunnel: {}", String::from_utf8_lossy(&chunk[..n])));
                            let _ = stream.write_all(&chunk[..n]).await;
                        }
                    }
                }
            }
            None => {
                let res = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nplain\n";
                if stream.write_all(res.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

const H2C_UPGRADE: &str = "GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";

#[tokio::test]
async fn h2c_upgrades_are_served_as_plain_http() {
    let up = RawUpstream::start(Answer::SwitchWhenAsked).await;
    let gw = Gateway::start(&config(&up.url(), PUBLIC)).await;
    // The upgrade is dropped: the upstream answers the request as plain HTTP/1.1, and the
    // client's connection stays HTTP (a second request gets its own answer).
    let out = raw(
        gw.addr,
        format!("{H2C_UPGRADE}GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(!out.contains(" 101 "), "{out}");
    let heads = up.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        assert!(!head.contains("upgrade") && !head.contains("http2-settings"), "forwarded: {head}");
    }
}

#[tokio::test]
async fn a_101_nobody_asked_for_is_a_502_not_a_tunnel() {
    let up = RawUpstream::start(Answer::AlwaysSwitch).await;
    let gw = Gateway::start(&config(&up.url(), PUBLIC)).await;
    // An h2c upgrade (dropped), a plain request, and a WebSocket upgrade answered with another
    // protocol: the upstream's 101 gets a 502 each time.
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (name, request) in [
        ("h2c", H2C_UPGRADE.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")),
        ("plain", get("/x", "x", "")),
        ("websocket", get("/x", "x", ws)),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        // What a client sends once it believes the switch happened must not reach the upstream.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let res = RawResponse::parse(&String::from_utf8_lossy(&out));
        assert_eq!(res.status, 502, "{name}: {}", res.body);
        let p = res.json();
        assert_eq!(p["type"], "urn:bridgehead:problem:upstream-failed", "{name}");
        assert!(
            p["detail"].as_str().unwrap().contains("switched protocols (101)"),
            "{name}: {}",
            p["detail"]
        );
    }
    // Each counts against the target, as an error (passive health and the breaker see it too).
    let metrics = gw.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("bridgehead_upstream_requests_total{") && l.contains("outcome=\"error\""))
        .unwrap_or_else(|| panic!("no error outcome counted:\n{metrics}"));
    assert!(line.ends_with(" 3"), "{line}");
    // A route that allows no upgrade: the WebSocket offer is dropped, and the 101 is refused.
    gw.shutdown().await;
    let routes = "  - { name: public, match: { path_prefix: / }, upstream: site, upgrades: [] }\n";
    let gw = Gateway::start(&config(&up.url(), routes)).await;
    let res = raw_request(gw.addr, &get("/x", "x", ws)).await;
    assert_eq!(res.status, 502, "{}", res.body);
    assert!(res.json()["detail"].as_str().unwrap().contains("switched protocols (101)"));
    let heads = up.heads();
    assert_eq!(heads.len(), 4, "{heads:?}");
    assert!(!heads[3].contains("upgrade"), "forwarded: {}", heads[3]);
    assert!(!heads.iter().any(|h| h.starts_with("tunnel:") || h.contains("http2-settings")), "{heads:?}");
}

#[tokio::test]
async fn websocket_to_an_upstream_that_answers_200_is_relayed_without_a_tunnel() {
    let Some(nginx) = TestNginx::start(SITE) else { return };
    let gw = Gateway::start(&config(&nginx.url(), PUBLIC)).await;
    let ws = "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let out =
        raw(gw.addr, format!("{ws}GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("public host=x uri=/chat") && out.contains("public host=x uri=/after"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("upgrade: websocket"), "{out}");
}

#[tokio::test]
async fn other_protocols_are_tunnelled_only_where_a_route_allows_them() {
    let up = RawUpstream::start(Answer::SwitchWhenAsked).await;
    let routes = "  - { name: foo, match: { path_prefix: /foo }, upstream: site, upgrades: [websocket, foo] }\n  - { name: public, match: { path_prefix: / }, upstream: site }\n";
    let gw = Gateway::start(&config(&up.url(), routes)).await;
    let offer = "Connection: Upgrade\r\nUpgrade: foo/2\r\n";
    // Allowed: a tunnel, bytes both ways.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("GET /foo HTTP/1.1\r\nHost: x\r\n{offer}\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101") && head.contains("upgrade: foo/2"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    // Elsewhere the same offer is dropped and served as plain HTTP.
    let res = raw_request(gw.addr, &get("/other", "x", offer)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "plain\n"));
    let heads = up.heads();
    let other = heads.iter().find(|h| h.starts_with("get /other")).unwrap();
    assert!(!other.contains("upgrade"), "{other}");
}

#[test]
fn config_check_warns_of_a_protected_prefix_beside_a_public_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.yaml");
    std::fs::write(&file, config("http://127.0.0.1:9", SECURE_AND_PUBLIC)).unwrap();
    let (code, out, _) = bridgehead(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("routes[0].match.path_prefix: warning: `/secure` is protected, but `/securex` takes public route `public`"),
        "{out}"
    );
    let (code, out, _) = bridgehead(&["config", "check", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["warnings"][0].as_str().unwrap().contains("nginx `location /secure/`"), "{v}");
}
