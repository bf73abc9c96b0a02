//! Crash safety of webhook receivers, end to end: the `bridgehead` binary is killed with
//! SIGKILL while deliveries are coming in and being forwarded, restarted on the same SQLite
//! file, three times over; every delivery it answered 202 reaches the upstream at least once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridgehead_mock::{MockOptions, MockServer};
use bridgehead_webhooks::signature::{Key, Scheme, Signer};

use crate::support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    // A slow upstream keeps deliveries in flight when the gateway dies.
    let m =
        MockServer::start(MockOptions { latency: Some(Duration::from_millis(40)), ..MockOptions::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state:\n  url: sqlite://STATE_DB\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\n    timeouts: {{ connect: 1s, request: 5s }}\nwebhooks:\n  inbound:\n    - name: shop\n      path: /hooks/shop\n      verify: {{ scheme: standard, secret: \"{SECRET}\" }}\n      forward: {{ upstream: u, path: /events }}\n      retry_schedule: [100ms, 100ms, 100ms, 100ms, 100ms]\n",
        m.url()
    );
    let signer = Arc::new(
        Signer::new(Scheme::Standard, vec![Key::parse(&Scheme::Standard, SECRET).unwrap()]).unwrap(),
    );
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    for round in 0..3 {
        let mut node = Node::start(dir.path(), "crash", &yaml);
        let url = node.url("/hooks/shop");
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked.lock().unwrap().len();
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (url, stop, acked, next, signer) =
                    (url.clone(), stop.clone(), acked.clone(), next.clone(), signer.clone());
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(SeqCst) {
                        let id = format!("evt_{}", next.fetch_add(1, SeqCst));
                        let body = format!(r#"{{"type":"order.created","id":"{id}"}}"#);
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        let mut req = http::Request::post(&url).header("content-type", "application/json");
                        for (k, v) in signer.sign(&id, now, body.as_bytes()).unwrap() {
                            req = req.header(k, v);
                        }
                        match c.request(req.body(full(body)).unwrap()).await {
                            Ok(res) if res.status() == 202 => {
                                acked.lock().unwrap().insert(id);
                            }
                            // The gateway died mid-request: not acknowledged, may or may not
                            // be delivered.
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        eventually(30, "some deliveries acknowledged", async || acked.lock().unwrap().len() >= before + 40)
            .await;
        // Deliveries are being forwarded right now (40 ms each at the upstream).
        node.child.0.kill().unwrap();
        node.child.0.wait().unwrap();
        stop.store(true, SeqCst);
        for s in senders {
            s.await.unwrap();
        }
        eprintln!(
            "round {round}: {} acknowledged so far, {} reached the upstream",
            acked.lock().unwrap().len(),
            m.request_count()
        );
    }
    // Restarted once more: it takes back what the killed runs held and delivers the rest.
    let node = Node::start(dir.path(), "crash", &yaml);
    let acked = acked.lock().unwrap().clone();
    let received = || -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for r in m.requests() {
            if let Some((_, id)) = r.headers.iter().find(|(k, _)| k == "webhook-id") {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
        seen
    };
    // Sooner than the 30 s lease: what the killed runs held is taken back at start.
    eventually(20, "every acknowledged delivery reached the upstream", async || {
        let seen = received();
        acked.iter().all(|id| seen.contains_key(id))
    })
    .await;
    let seen = received();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{} acknowledged, all delivered; {} delivered twice or more (at least once, as promised); {} delivered without a 202 (the gateway died before answering)",
        acked.len(),
        duplicates,
        seen.keys().filter(|id| !acked.contains(*id)).count()
    );
    drop(node);
}

/// Two gateway nodes on one PostgreSQL database: deliveries sent to either are forwarded once
/// each (the nodes claim disjoint rows), and a replayed id is refused across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgresql_deliver_each_message_once() {
    let Some(pg) = bridgehead_state::testing::TestPostgres::start().expect("PostgreSQL for tests") else {
        eprintln!("skipped: BRIDGEHEAD_SKIP_POSTGRES=1");
        return;
    };
    let m =
        MockServer::start(MockOptions { latency: Some(Duration::from_millis(5)), ..MockOptions::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state:\n  url: {}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nwebhooks:\n  inbound:\n    - name: shop\n      path: /hooks/shop\n      verify: {{ scheme: standard, secret: \"{SECRET}\" }}\n      forward: {{ upstream: u, path: /events }}\n",
        pg.url(),
        m.url()
    );
    let a = Node::start(dir.path(), "a", &yaml);
    let b = Node::start(dir.path(), "b", &yaml);
    let signer = Signer::new(Scheme::Standard, vec![Key::parse(&Scheme::Standard, SECRET).unwrap()]).unwrap();
    let c = client();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let post = |node: &Node, id: &str| {
        let body = format!(r#"{{"type":"t","id":"{id}"}}"#);
        let mut req = http::Request::post(node.url("/hooks/shop")).header("content-type", "application/json");
        for (k, v) in signer.sign(id, now, body.as_bytes()).unwrap() {
            req = req.header(k, v);
        }
        send(&c, req.body(full(body)).unwrap())
    };
    for i in 0..60 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(post(node, &format!("evt_{i}")).await.status, 202);
    }
    // The same ids through the other node: replays, across nodes.
    for i in 0..4 {
        let node = if i % 2 == 0 { &b } else { &a };
        let got = post(node, &format!("evt_{i}")).await;
        assert_eq!((got.status, got.header("idempotent-replayed")), (200, "true"));
    }
    eventually(20, "sixty deliveries", async || m.request_count() >= 60).await;
    let store = bridgehead_state::Store::open(&pg.url()).await.unwrap();
    eventually(10, "nothing pending", async || store.webhook_backlog().await.unwrap().is_empty()).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in m.requests() {
        let id = r.headers.iter().find(|(k, _)| k == "webhook-id").unwrap().1.clone();
        *per_id.entry(id).or_default() += 1;
    }
    assert_eq!(per_id.len(), 60);
    assert!(per_id.values().all(|&n| n == 1), "a message was delivered twice: {per_id:?}");
    // Both nodes delivered their share.
    let mut total = 0;
    for node in [&a, &b] {
        let metrics = get(&format!("http://{}/metrics", node.admin)).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let line = r#"bridgehead_webhook_deliveries_total{destination="forward:shop",outcome="delivered"} "#;
        let n: u64 = text.lines().find_map(|l| l.strip_prefix(line)).map_or(0, |v| v.trim().parse().unwrap());
        assert!(n > 0, "a node delivered nothing:\n{text}");
        total += n;
    }
    assert_eq!(total, 60);
    drop((a, b));
}
