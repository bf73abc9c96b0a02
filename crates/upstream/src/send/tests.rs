//! The sender on its own, as a background task uses it: no route, no client connection, the
//! `()` observer.

use std::sync::Arc;

use bridgehead_config::{MapResolver, load_str};
use bridgehead_http::metrics::Metrics;
use bridgehead_mock::{MockOptions, MockServer};
use http::{HeaderMap, Method, StatusCode};

use super::*;
use crate::Carryover;
use crate::classify::Classify;

fn upstream(yaml: &str) -> Arc<Upstream> {
    let text = format!("upstreams:\n  u:\n{yaml}");
    let loaded =
        load_str(&text, std::path::Path::new("t.yaml"), std::path::Path::new("."), &MapResolver::default())
            .unwrap();
    Arc::new(Upstream::new("u", &loaded.config.upstreams["u"], &Carryover::default()))
}

fn outgoing(method: Method, body: &'static [u8]) -> Outgoing {
    Outgoing {
        method,
        path_and_query: http::uri::PathAndQuery::from_static("/deliveries/1"),
        headers: HeaderMap::new(),
        body: Payload::Replayable(bytes::Bytes::from_static(body)),
    }
}

fn no_switch(_: &HeaderMap) -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_send_retries_and_returns_the_answer() {
    let mock = MockServer::start(MockOptions { fail_first: 2, fail_status: 503, ..MockOptions::default() })
        .await
        .unwrap();
    let up = upstream(&format!(
        "    targets: [{{ url: \"{}\" }}]\n    retry: {{ attempts: 3, backoff: 1ms, on: [503] }}\n",
        mock.url()
    ));
    let metrics = Metrics::default();
    let retry = up.retry.as_ref();
    let sender = Sender {
        upstream: &up,
        metrics: &metrics,
        sticky: None,
        retry,
        idempotent: true,
        classify: Classify::Http,
        accept_switch: &no_switch,
        stats: None,
        max_body: 1 << 20,
    };
    let res = sender.send(outgoing(Method::PUT, b"{\"id\":1}"), &mut ()).await.expect("an answer");
    assert_eq!(res.status(), StatusCode::OK, "the third try succeeds");
    let text = metrics.encode();
    assert!(text.contains("outcome=\"http_5xx\"} 2"), "{text}");
    assert!(text.contains("result=\"retried\"} 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_send_to_nothing_is_a_typed_error() {
    // A port nothing listens on: bound and dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let up = upstream(&format!("    targets: [{{ url: \"http://127.0.0.1:{port}\" }}]\n"));
    let metrics = Metrics::default();
    let sender = Sender {
        upstream: &up,
        metrics: &metrics,
        sticky: None,
        retry: None,
        idempotent: false,
        classify: Classify::Http,
        accept_switch: &no_switch,
        stats: None,
        max_body: 1 << 20,
    };
    let Err(err) = sender.send(outgoing(Method::POST, b"{}"), &mut ()).await else {
        panic!("nothing listens there")
    };
    assert!(
        matches!(err, GatewayError::UpstreamFailed { reason: "could not connect to the target", .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}
