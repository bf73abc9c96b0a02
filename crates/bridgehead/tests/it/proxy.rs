//! The data path: routing, headers, limits, upstream failures, streaming, upgrades.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bridgehead_mock::{MockOptions, MockServer};
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

async fn mock() -> MockServer {
    MockServer::start(MockOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_forwarding_headers_and_request_id() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    let req = Request::get(gw.url("/orders/7?expand=items"))
        .header("x-request-id", "client-id-1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-request-id"), "client-id-1");
    assert_eq!(got.header("via"), "1.1 bridgehead");
    let echo = got.json();
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["query"], "expand=items");
    let h = &echo["headers"];
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["host"], gw.addr.to_string());
    assert_eq!(h["x-end-to-end"], "kept");
    for hop in ["x-hop", "keep-alive"] {
        assert!(h.get(hop).is_none(), "{hop} reached the upstream: {h}");
    }
    let logs = gw.log_lines();
    let line = logs.last().unwrap();
    assert_eq!(line["request_id"], "client-id-1");
    assert_eq!(line["route"], "all");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "u");
    assert_eq!(line["target"], m.url());
    assert_eq!(line["path"], "/orders/7");
    assert_eq!(line["completed"], true);
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    for key in ["time", "method", "duration_ms", "bytes_in", "client"] {
        assert!(line.get(key).is_some(), "log lacks {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_when_missing_or_unsafe() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    for sent in [None, Some("has spaces"), Some("<script>")] {
        let mut req = Request::get(gw.url("/")).body(empty()).unwrap();
        if let Some(v) = sent {
            req.headers_mut().insert("x-request-id", v.parse().unwrap());
        }
        let got = send(&client(), req).await;
        let id = got.header("x-request-id").to_owned();
        assert_eq!(id.len(), 32, "{sent:?}");
        assert_eq!(got.json()["headers"]["x-request-id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_strip_prefix_templates_404_and_405() {
    let m = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: orders, match: {{ path_prefix: /api/orders, methods: [GET, POST] }}, upstream: u, strip_prefix: /api }}\n  - {{ name: one, match: {{ path: \"/api/orders/{{id}}\", methods: [GET] }}, upstream: u }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    let got = get(&gw.url("/api/orders/7/items")).await;
    assert_eq!(got.json()["path"], "/orders/7/items");
    let got = get(&gw.url("/api/orders/7")).await;
    assert_eq!(got.json()["path"], "/api/orders/7", "template route has no strip_prefix");
    assert_eq!(gw.log_lines().last().unwrap()["route"], "one");
    let got = get(&gw.url("/api/ordersx")).await;
    got.assert_problem(404, "no route matches GET /api/ordersx");
    let got = send(&client(), Request::delete(gw.url("/api/orders/7")).body(empty()).unwrap()).await;
    got.assert_problem(405, "DELETE is not allowed on /api/orders/7");
    assert_eq!(got.header("allow"), "GET, POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let m = mock().await;
    let cfg = format!("server:\n  limits: {{ max_body: 1KiB }}\n{}", simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    // Declared length: refused before anything reaches the upstream.
    let got = send(&client(), Request::post(gw.url("/")).body(full(vec![b'x'; 2048])).unwrap()).await;
    got.assert_problem(413, "exceeds the limit of 1024 bytes");
    assert_eq!(m.request_count(), 0);
    // Streamed without a length: cut off at the limit.
    let body = http_body_util::BodyExt::boxed(ZeroBody { remaining: 64 * 1024 });
    let got = send(&client(), Request::post(gw.url("/")).body(body).unwrap()).await;
    got.assert_problem(413, "exceeds the limit of 1024 bytes");
    // At the limit is fine.
    let got = send(&client(), Request::post(gw.url("/")).body(full(vec![b'x'; 1024])).unwrap()).await;
    assert_eq!(got.json()["body_len"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let m = mock().await;
    let cfg = format!("server:\n  limits: {{ max_header_bytes: 1KiB }}\n{}", simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    let req = Request::get(gw.url("/")).header("x-big", "a".repeat(1500)).body(empty()).unwrap();
    let got = send(&client(), req).await;
    got.assert_problem(431, "over the limit of 1024");
    // Far over: refused while reading the head, connection closed; the gateway stays up.
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n", "a".repeat(200_000));
    let answer = raw(gw.addr, head.as_bytes()).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_host_and_request_targets_get_400() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    let cases: &[(&str, &str)] = &[
        ("GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n", "invalid Host header"),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "missing Host header"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", "more than one Host header"),
        ("GET / HTTP/1.1\r\nHost: user@evil\r\nConnection: close\r\n\r\n", "invalid Host header"),
        (
            "GET ftp://example.com/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "scheme `ftp` is not supported",
        ),
    ];
    for (req, detail) in cases {
        let answer = raw(gw.addr, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{req:?} → {answer:?}");
        assert!(
            answer.contains("application/problem+json") && answer.contains(detail),
            "{req:?} → {answer:?}"
        );
    }
    // Absolute-form wins over Host (RFC 9112 §3.2.2) and is proxied.
    let answer =
        raw(gw.addr, b"GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
            .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.contains("\"path\":\"/abs\"") && answer.contains("\"x-forwarded-host\":\"example.com\""),
        "{answer}"
    );
    // HTTP/1.0 without Host is allowed.
    let answer = raw(gw.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer:?}");
    // `Connection` naming `Host` removes nothing that matters: the upstream still sees the host
    // the gateway routed on, never the target's address.
    let answer =
        raw(gw.addr, b"GET /conn HTTP/1.1\r\nHost: api.example\r\nConnection: host, close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.contains("\"host\":\"api.example\"")
            && answer.contains("\"x-forwarded-host\":\"api.example\""),
        "{answer}"
    );
    assert_eq!(m.request_count(), 3);
}

/// An upstream that answers a POST at once (401, before reading its body), then reads the
/// body; counts its connections and the body bytes it read.
async fn early_answer_peer(accepted: Arc<AtomicUsize>, body_read: Arc<AtomicUsize>) -> String {
    tcp_peer(move |mut s| {
        accepted.fetch_add(1, SeqCst);
        let body_read = body_read.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                buf.drain(..end);
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let reply: &[u8] = if head.starts_with("post") {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                if s.write_all(reply).await.is_err() {
                    return;
                }
                // Then the body, as it comes.
                let mut left = len;
                while left > 0 {
                    if buf.is_empty() {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let take = left.min(buf.len());
                    buf.drain(..take);
                    left -= take;
                    body_read.fetch_add(take, SeqCst);
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_upload_answered_early_keeps_flowing_and_its_connection_is_reused_once_done() {
    let (accepted, body_read) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peer = early_answer_peer(accepted.clone(), body_read.clone()).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{peer}\" }}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n"
    ))
    .await;
    // A streamed upload: part of the body, the early answer, then the rest.
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    c.write_all(&[b'a'; 10_000]).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut b).await.unwrap();
        assert!(n > 0, "the gateway closed before answering");
        head.extend_from_slice(&b[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&head));
    // The rest of the upload still reaches the upstream, though nobody reads the (empty)
    // answer's body any more.
    c.write_all(&[b'a'; 90_000]).await.unwrap();
    eventually(10, "the whole upload at the upstream", async || body_read.load(SeqCst) == 100_000).await;
    // Done both ways, the connection went back to the pool: the next request reuses it.
    let answer = raw(gw.addr, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
    assert_eq!(accepted.load(SeqCst), 1);
}

/// A TCP server that answers each connection with `f`.
async fn tcp_peer<F, Fut>(f: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(f(s));
        }
    });
    url
}

async fn read_head(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&b[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_504_and_the_gateway_keeps_serving() {
    let m = mock().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let hanging = tcp_peer(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let garbage = tcp_peer(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"this is not http\r\n\r\n").await;
    })
    .await;
    let mid_body = tcp_peer(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part").await;
    })
    .await;
    let up = |name: &str, url: &str| {
        format!(
            "  {name}:\n    targets: [{{ url: \"{url}\" }}]\n    timeouts: {{ connect: 1s, request: 300ms }}\n    passive_health: {{ consecutive_failures: 0 }}\n"
        )
    };
    let cfg = format!(
        "upstreams:\n{}{}{}{}{}routes:\n  - {{ name: ok, match: {{ path_prefix: /ok }}, upstream: ok }}\n  - {{ name: refused, match: {{ path_prefix: /refused }}, upstream: refused }}\n  - {{ name: hanging, match: {{ path_prefix: /hanging }}, upstream: hanging }}\n  - {{ name: garbage, match: {{ path_prefix: /garbage }}, upstream: garbage }}\n  - {{ name: mid, match: {{ path_prefix: /mid }}, upstream: mid }}\n",
        up("ok", &m.url()),
        up("refused", &refused),
        up("hanging", &hanging),
        up("garbage", &garbage),
        up("mid", &mid_body),
    );
    let gw = Gateway::start(&cfg).await;
    get(&gw.url("/refused")).await.assert_problem(502, "upstream `refused` failed: could not connect");
    get(&gw.url("/hanging")).await.assert_problem(504, "did not answer within 300ms");
    get(&gw.url("/garbage")).await.assert_problem(502, "upstream `garbage` failed");
    // Closed mid-body: the gateway aborts the client connection too, so the client sees an
    // error (before or after the head, depending on what was flushed), never a clean short body.
    match client().request(Request::get(gw.url("/mid")).body(empty()).unwrap()).await {
        Ok(res) => {
            assert_eq!(res.status(), 200);
            assert!(
                res.into_body().collect().await.is_err(),
                "truncated body must be an error, not a clean end"
            );
        }
        Err(e) => assert!(
            e.to_string().contains("SendRequest") || format!("{e:?}").contains("IncompleteMessage"),
            "{e:?}"
        ),
    }
    eventually(5, "log of the truncated response", async || {
        gw.log_lines().iter().any(|l| l["route"] == "mid" && l["completed"] == false)
    })
    .await;
    assert_eq!(get(&gw.url("/ok")).await.status, 200);
    let metrics = get(&gw.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for want in [
        "outcome=\"connect_error\"",
        "outcome=\"timeout\"",
        "outcome=\"error\"",
        "route=\"refused\",method=\"GET\",status=\"502\"",
        "route=\"hanging\",method=\"GET\",status=\"504\"",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_targets_give_503_and_readyz_fails() {
    let m = MockServer::start(MockOptions {
        fixed: vec!["/health=503".parse().unwrap()],
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\n    health_check: {{ path: /health, interval: 50ms, unhealthy_after: 1, healthy_after: 1 }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    eventually(10, "503 once the check fails", async || get(&gw.url("/x")).await.status == 503).await;
    get(&gw.url("/x")).await.assert_problem(503, "no healthy target in upstream `u`");
    get(&gw.admin_url("/readyz")).await.assert_problem(503, "no healthy target in upstream(s): u");
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(ups["upstreams"]["u"]["targets"][0]["healthy"], false);
    let metrics = get(&gw.admin_url("/metrics")).await;
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains(&format!("bridgehead_upstream_healthy{{upstream=\"u\",target=\"{}\"}} 0", m.url()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_moves_traffic_to_the_healthy_target() {
    let m = mock().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{refused}\" }}, {{ url: \"{}\" }}]\n    passive_health: {{ consecutive_failures: 1, eject_for: 1h }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&gw.url("/")).await.status);
    }
    // At most the first request hits the dead target; after that it is ejected.
    assert!(statuses[1..].iter().all(|s| *s == 200), "{statuses:?}");
    let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
    assert_eq!(ups["upstreams"]["u"]["targets"][0]["ejected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_through_the_proxy_is_exact() {
    let main = mock().await;
    let canary = mock().await;
    let cfg = format!(
        "upstreams:\n  u:\n    targets: [{{ url: \"{}\", weight: 9 }}, {{ url: \"{}\", weight: 1 }}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        main.url(),
        canary.url()
    );
    let gw = Gateway::start(&cfg).await;
    let c = client();
    for _ in 0..1000 {
        assert_eq!(send(&c, Request::get(gw.url("/")).body(empty()).unwrap()).await.status, 200);
    }
    assert_eq!(canary.request_count(), 100);
    assert_eq!(main.request_count(), 900);
    let text = gw.metrics().await;
    assert!(
        text.contains(&format!(
            "bridgehead_upstream_requests_total{{upstream=\"u\",target=\"{}\",outcome=\"success\"}} 100",
            canary.url()
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_others_still_served() {
    let m = mock().await;
    let cfg = format!("server:\n  limits: {{ header_timeout: 300ms }}\n{}", simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "slowloris connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let m = mock().await;
    let cfg = format!("server:\n  limits: {{ idle_timeout: 300ms }}\n{}", simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "idle connection was not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_bounded_memory() {
    let m = mock().await;
    let cfg = format!(
        "server:\n  limits: {{ max_body: 2GiB }}\n{}",
        simple_config(&m.url()).replace("request: 2s", "request: 120s")
    );
    let gw = Gateway::start(&cfg).await;
    let before = rss_kib();
    const GIB: u64 = 1 << 30;
    let body = http_body_util::BodyExt::boxed(ZeroBody { remaining: GIB });
    let got = send(&client(), Request::post(gw.url("/upload")).body(body).unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body_len"], GIB);
    let grew_mib = hwm_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 256, "peak memory grew by {grew_mib} MiB while streaming 1 GiB");
    assert_eq!(gw.log_lines().last().unwrap()["bytes_in"], GIB);
    // And a large download streams back.
    let req = Request::get(gw.url("/download"))
        .header("x-mock-body-size", (64u64 << 20).to_string())
        .body(empty())
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.body.len(), 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping-through-the-tunnel").await.unwrap();
    let mut echo = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping-through-the-tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    let got = send(&h2c_client(), Request::post(gw.url("/h2")).body(full("over h2")).unwrap()).await;
    assert_eq!(got.status, 200);
    let echo = got.json();
    assert_eq!(echo["body"], "over h2");
    assert_eq!(echo["headers"]["host"], gw.addr.to_string());
    assert_eq!(gw.log_lines().last().unwrap()["protocol"], "HTTP/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let m = mock().await;
    let mut gw = Gateway::start(&simple_config(&m.url())).await;
    let url = gw.url("/slow");
    let slow = tokio::spawn(async move {
        send(&client(), Request::get(url).header("x-mock-latency", "500ms").body(empty()).unwrap()).await
    });
    eventually(5, "slow request reached the upstream", async || m.request_count() == 1).await;
    gw.begin_shutdown();
    let got = slow.await.unwrap();
    assert_eq!(got.status, 200, "in-flight request must finish during the grace period");
    gw.finished().await;
    assert!(TcpStream::connect(gw.addr).await.is_err(), "listener still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_access_log() {
    let m = mock().await;
    let gw = Gateway::start(&simple_config(&m.url())).await;
    let req = Request::get(gw.url("/private?api_key=query-secret-123"))
        .header("authorization", "Bearer token-secret-456")
        .header("cookie", "session=cookie-secret-789")
        .header("x-api-key", "header-secret-000")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    let logs = gw.logs.lock().unwrap().join("\n");
    assert!(!logs.is_empty());
    for secret in ["query-secret-123", "token-secret-456", "cookie-secret-789", "header-secret-000"] {
        assert!(!logs.contains(secret), "{secret} in access log: {logs}");
    }
}
