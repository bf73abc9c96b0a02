//! Two `bridgehead serve` processes sharing one real Redis: a shared rate limit under concurrent
//! load, idempotency keys across nodes, and Redis dying mid-test (fail open and closed).

use bridgehead_mock::{MockOptions, MockServer};
use bridgehead_state::testing::TestRedis;
use http::Request;

use crate::support::*;

fn config(redis: &str, mock: &str) -> String {
    format!(
        "state:\n  url: sqlite://STATE_DB\n  redis: \"{redis}\"\nupstreams:\n  u:\n    targets: [{{ url: \"{mock}\" }}]\nroutes:\n  - {{ name: shared, match: {{ path_prefix: /shared }}, upstream: u, rate_limit: {{ key: route, rate: 20/h }} }}\n  - {{ name: closed, match: {{ path_prefix: /closed }}, upstream: u, rate_limit: {{ key: ip, rate: 1000/h, on_store_error: closed }} }}\n  - {{ name: idem, match: {{ path_prefix: /idem }}, upstream: u, idempotency: {{}} }}\n  - {{ name: multi, match: {{ path_prefix: /multi }}, upstream: u, rate_limit: [{{ name: wide, key: route, rate: 10/h }}, {{ name: narrow, key: route, rate: 1/h }}] }}\n"
    )
}

async fn metric(node: &Node, prefix: &str) -> u64 {
    let text = get(&format!("http://{}/metrics", node.admin)).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_limits_and_keys_and_survive_redis_dying() {
    let Some(mut redis) = TestRedis::start().unwrap() else {
        eprintln!("skipped: BRIDGEHEAD_SKIP_REDIS=1");
        return;
    };
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&redis.url(), &m.url());
    let a = Node::start(dir.path(), "a", &cfg);
    let b = Node::start(dir.path(), "b", &cfg);

    // 80 concurrent requests, half to each node: together they admit exactly the burst (20).
    let tasks: Vec<_> = (0..80)
        .map(|i| {
            let url = if i % 2 == 0 { a.url("/shared") } else { b.url("/shared") };
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let got = t.await.unwrap();
        match got.status {
            200 => ok += 1,
            429 => {
                got.assert_problem(429, "rate limit `default` (20/3600s) exceeded");
                limited += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, limited), (20, 60));
    assert_eq!(m.request_count(), 20);

    // An idempotency key used on one node replays on the other.
    let post = |url: String| {
        Request::post(url).header("idempotency-key", "order-1").body(full("{\"sku\":1}")).unwrap()
    };
    let first = send(&client(), post(a.url("/idem"))).await;
    assert_eq!(first.status, 200);
    let replay = send(&client(), post(b.url("/idem"))).await;
    assert_eq!((replay.status, replay.header("idempotent-replayed")), (200, "true"));
    assert_eq!(replay.body, first.body);
    assert_eq!(m.request_count(), 21);

    // Several policies are checked in one script: a request the narrow one refuses costs the
    // wide one nothing, on either node.
    assert_eq!(get(&a.url("/multi")).await.status, 200);
    for node in [&a, &b, &a, &b] {
        let got = get(&node.url("/multi")).await;
        assert_eq!(got.assert_problem(429, "rate limit `narrow`")["policy"], "narrow");
        assert!(got.header("ratelimit").starts_with("\"wide\";r=8;"), "{}", got.header("ratelimit"));
    }
    assert_eq!(m.request_count(), 22);

    // Redis dies. The fail-open route admits (its quota is spent, yet 200), the fail-closed
    // route refuses with 503, and idempotency refuses rather than risk a double send.
    redis.kill();
    for _ in 0..5 {
        assert_eq!(get(&a.url("/shared")).await.status, 200);
    }
    let got = get(&a.url("/closed")).await;
    let p = got.assert_problem(503, "rate limits of route `closed` cannot be checked right now");
    assert_eq!(p["type"], "urn:bridgehead:problem:rate-limit-unavailable");
    let got = send(
        &client(),
        Request::post(a.url("/idem")).header("idempotency-key", "order-2").body(full("{}")).unwrap(),
    )
    .await;
    assert_eq!(
        got.assert_problem(503, "the request was not sent")["type"],
        "urn:bridgehead:problem:idempotency-unavailable"
    );
    assert_eq!(m.request_count(), 27, "only the fail-open requests reached the upstream");
    assert!(metric(&a, "bridgehead_rate_limit_store_errors_total").await >= 6);

    // Redis is back (empty): limits are enforced again once the node reconnects.
    redis.restart().unwrap();
    eventually(15, "fail-closed route admits again", async || get(&a.url("/closed")).await.status == 200)
        .await;
    let log = a.stop();
    let _ = b.stop();
    let down = log.matches("Redis is unreachable; policies apply").count();
    assert_eq!(down, 1, "logged once per incident:\n{log}");
    assert!(log.contains("Redis is reachable again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_redis_is_down_and_connects_later() {
    let Some(mut redis) = TestRedis::start().unwrap() else {
        eprintln!("skipped: BRIDGEHEAD_SKIP_REDIS=1");
        return;
    };
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    redis.kill();
    let a = Node::start(dir.path(), "a", &config(&redis.url(), &m.url()));
    assert_eq!(get(&a.url("/shared")).await.status, 200, "fail open while Redis was never reached");
    assert_eq!(get(&a.url("/closed")).await.status, 503);
    redis.restart().unwrap();
    eventually(15, "connected", async || get(&a.url("/closed")).await.status == 200).await;
    let got = get(&a.url("/shared")).await;
    assert_eq!(got.header("ratelimit-policy"), "\"default\";q=20;w=3600");
}
