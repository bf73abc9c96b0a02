//! The HTTP/1.1 pool against a raw TCP origin that counts its connections and answers as each
//! test tells it to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bridgehead_config::{MapResolver, load_str};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{Carryover, Upstream};
use bridgehead_http::body::RequestBody;

/// How the origin answers each request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, `Content-Length: 2`, `ok`; the connection stays open.
    Ok,
    /// `200` with `Connection: close`, then closes.
    ConnectionClose,
    /// A head announcing 10 bytes, then 5 of them; the connection stays open.
    Partial,
    /// `ok` once the test says so (`Origin::close`), then closes.
    OkThenCloseWhenTold,
    /// `400` to a request without `Host`, `ok` otherwise.
    RequireHost,
    /// `200` with `Connection: close`, leaving the close to the client.
    ConnectionCloseLeftOpen,
}

struct Origin {
    url: String,
    accepted: Arc<AtomicUsize>,
    /// Connections the origin has closed.
    closed: Arc<AtomicUsize>,
    /// Tells an `OkThenCloseWhenTold` origin to close.
    close: Arc<tokio::sync::Notify>,
}

async fn origin(answer: Answer) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let (count, closes, told) = (accepted.clone(), closed.clone(), close.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            count.fetch_add(1, SeqCst);
            let (closes, told) = (closes.clone(), told.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head (the tests send no bodies).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end);
                    let reply: &[u8] = match answer {
                        Answer::RequireHost if !head.contains("\r\nhost:") => {
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
                        }
                        Answer::Ok | Answer::OkThenCloseWhenTold | Answer::RequireHost => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        }
                        Answer::ConnectionClose | Answer::ConnectionCloseLeftOpen => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        }
                        Answer::Partial => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
                    };
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                    if matches!(answer, Answer::OkThenCloseWhenTold | Answer::ConnectionCloseLeftOpen) {
                        told.notified().await;
                    }
                    if matches!(answer, Answer::ConnectionClose | Answer::OkThenCloseWhenTold) {
                        drop(sock);
                        closes.fetch_add(1, SeqCst);
                        return;
                    }
                }
            });
        }
    });
    Origin { url, accepted, closed, close }
}

fn upstream(url: &str, extra: &str) -> Upstream {
    let text = format!("upstreams:\n  u:\n    targets: [{{ url: \"{url}\" }}]\n{extra}");
    let loaded =
        load_str(&text, std::path::Path::new("t.yaml"), std::path::Path::new("."), &MapResolver::default())
            .unwrap();
    Upstream::new("u", &loaded.config.upstreams["u"], &Carryover::default())
}

fn get() -> Request<RequestBody> {
    Request::get("/x").header("host", "origin.test").body(RequestBody::Empty).unwrap()
}

/// Sends one GET and reads the whole body.
async fn fetch(up: &Upstream) -> Bytes {
    let res = up.transport.request(&up.targets[0], get()).await.expect("an answer");
    res.into_body().collect().await.expect("the whole body").to_bytes()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let o = origin(Answer::Ok).await;
    let up = upstream(&o.url, "");
    for _ in 0..20 {
        assert_eq!(fetch(&up).await, "ok");
    }
    assert_eq!(o.accepted.load(SeqCst), 1);
    assert_eq!(up.transport.idle_connections(&o.url), 1);
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_and_all_are_kept() {
    let o = origin(Answer::Ok).await;
    let up = upstream(&o.url, "");
    // Five answers held at once (bodies unread) need five connections.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(up.transport.request(&up.targets[0], get()).await.unwrap());
    }
    assert_eq!(o.accepted.load(SeqCst), 5);
    assert_eq!(up.transport.idle_connections(&o.url), 0);
    for res in held {
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(up.transport.idle_connections(&o.url), 5);
    for _ in 0..10 {
        fetch(&up).await;
    }
    assert_eq!(o.accepted.load(SeqCst), 5, "idle connections are reused");
}

#[tokio::test]
async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
    let o = origin(Answer::Partial).await;
    let up = upstream(&o.url, "");
    let res = up.transport.request(&up.targets[0], get()).await.unwrap();
    drop(res);
    assert_eq!(up.transport.idle_connections(&o.url), 0);
    let res = up.transport.request(&up.targets[0], get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(o.accepted.load(SeqCst), 2, "a half-read connection is never used again");
}

#[tokio::test]
async fn connection_close_is_honoured() {
    // The origin says `Connection: close` but leaves closing to the client: the connection
    // must not go back to the pool.
    let o = origin(Answer::ConnectionCloseLeftOpen).await;
    let up = upstream(&o.url, "");
    assert_eq!(fetch(&up).await, "ok");
    assert_eq!(up.transport.idle_connections(&o.url), 0, "a connection the target closes is not kept");
    assert_eq!(fetch(&up).await, "ok");
    assert_eq!(o.accepted.load(SeqCst), 2);
    // And closing it itself.
    let o = origin(Answer::ConnectionClose).await;
    let up = upstream(&o.url, "");
    for _ in 0..3 {
        assert_eq!(fetch(&up).await, "ok");
        assert_eq!(up.transport.idle_connections(&o.url), 0);
    }
    assert_eq!(o.accepted.load(SeqCst), 3);
}

#[tokio::test]
async fn requests_without_host_get_the_targets_authority() {
    // Health checks send none; HTTP/1.1 servers refuse a request without Host.
    let o = origin(Answer::RequireHost).await;
    let up = upstream(&o.url, "");
    let req = Request::get("/health").body(RequestBody::Empty).unwrap();
    let res = up.transport.request(&up.targets[0], req).await.unwrap_or_else(|_| panic!("an answer"));
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_connection_the_target_closed_while_idle_is_skipped() {
    let o = origin(Answer::OkThenCloseWhenTold).await;
    let up = upstream(&o.url, "");
    for n in 1..=3 {
        assert_eq!(fetch(&up).await, "ok");
        assert_eq!(o.accepted.load(SeqCst), n);
        assert_eq!(up.transport.idle_connections(&o.url), 1, "back in the pool");
        // Idle in the pool, the origin closes it. The next request notices when it takes the
        // connection, and opens another instead of failing on it.
        o.close.notify_one();
        eventually("the origin to close the connection", || o.closed.load(SeqCst) == n).await;
    }
    assert_eq!(fetch(&up).await, "ok");
    assert_eq!(o.accepted.load(SeqCst), 4);
}

#[tokio::test]
async fn idle_connections_past_pool_idle_are_closed() {
    let o = origin(Answer::Ok).await;
    let up = upstream(&o.url, "    timeouts: { pool_idle: 200ms }\n");
    fetch(&up).await;
    assert_eq!(up.transport.idle_connections(&o.url), 1);
    eventually("the reaper to close the idle connection", || up.transport.idle_connections(&o.url) == 0)
        .await;
    fetch(&up).await;
    assert_eq!(o.accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn a_target_that_refuses_connections_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let up = upstream(&url, "");
    let Err(err) = up.transport.request(&up.targets[0], get()).await else { panic!("an answer") };
    assert!(err.is_connect(), "{err}");
}

#[tokio::test]
async fn an_invalid_answer_is_an_exchange_error_not_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
        let _ = sock.write_all(b"NOT HTTP\r\n\r\n").await;
    });
    let up = upstream(&url, "");
    let Err(err) = up.transport.request(&up.targets[0], get()).await else { panic!("an answer") };
    assert!(!err.is_connect() && !err.is_client_body(), "{err}");
}

#[tokio::test]
async fn an_upgrade_takes_a_fresh_connection_and_leaves_the_pool_alone() {
    let o = origin(Answer::Ok).await;
    let up = upstream(&o.url, "");
    fetch(&up).await;
    assert_eq!(up.transport.idle_connections(&o.url), 1);
    let req = Request::get("/ws")
        .header("host", "origin.test")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(RequestBody::Empty)
        .unwrap();
    let res = up.transport.request(&up.targets[0], req).await.unwrap_or_else(|_| panic!("an answer"));
    assert_eq!(res.status(), 200);
    assert_eq!(up.transport.idle_connections(&o.url), 1, "the pooled connection is still there");
    assert_eq!(o.accepted.load(SeqCst), 2, "the upgrade went on a connection of its own");
}
