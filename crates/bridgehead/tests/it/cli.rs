//! End-to-end: the built `bridgehead` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bridgehead_mock::{MockOptions, MockServer};
use http::Request;

use crate::support::*;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn config_check_reports_file_line_col_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "admin:\n  listen: 0.0.0.0:9901\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: nope\n").unwrap();
    let (code, out, _) = bridgehead(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let name = bad.display().to_string();
    assert!(
        lines[0].starts_with(&format!("{name}:2:3: admin.listen: 0.0.0.0:9901 is not a loopback address")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("{name}:6:5: routes[0].upstream: unknown upstream `nope`")),
        "{out}"
    );
    let (code, out, _) = bridgehead(&["config", "check", "--output", "json", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);
    // Missing env reference names the key, never a value.
    std::fs::write(&bad, "admin:\n  token: ${env:BRIDGEHEAD_TEST_SURELY_UNSET}\n").unwrap();
    let (code, out, _) = bridgehead(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains(":2:10: admin.token: environment variable BRIDGEHEAD_TEST_SURELY_UNSET is not set"),
        "{out}"
    );
    // TLS files are checked too.
    std::fs::write(&bad, "server:\n  tls: { cert: missing.pem, key: missing.key }\n").unwrap();
    let (code, out, _) = bridgehead(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("server.tls.cert: cannot read certificates"), "{out}");
    let (code, _, err) = bridgehead(&["config", "check"]);
    assert_eq!(code, 2, "usage error: {err}");
}

#[test]
fn examples_and_starter_pass_config_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, out, err) = bridgehead(&["config", "check", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(!out.contains("warning:"), "examples model good configs: {out}");
            checked += 1;
        }
    }
    assert!(checked >= 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridgehead.yaml");
    let (code, _, _) = bridgehead(&["init", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, out, _) = bridgehead(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = bridgehead(&["init", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"));
}

#[test]
fn schema_and_docs_come_from_the_types() {
    let (code, out, _) = bridgehead(&["config", "schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(schema["properties"]["routes"].is_object());
    let (code, out, _) = bridgehead(&["config", "docs"]);
    assert_eq!(code, 0);
    assert_eq!(out, std::fs::read_to_string(repo().join("docs/config.md")).unwrap());
    let (code, out, _) = bridgehead(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["serve", "demo", "init", "config", "mock"] {
        assert!(out.contains(cmd), "{out}");
    }
}

/// Reads stderr JSON log lines until one has `message == msg`; returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reloads_on_sighup_and_drains_on_sigterm() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridgehead.yaml");
    let base = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nstate:\n  url: sqlite://{}/state.db\n{}",
        dir.path().display(),
        simple_config(&m.url()).replace("path_prefix: / }", "path_prefix: /main }")
    );
    std::fs::write(&cfg, &base).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--no-watch", "-c", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let listening = wait_log(&mut lines, "listening");
    let addr: std::net::SocketAddr = listening["fields"]["data"].as_str().unwrap().parse().unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    let req = Request::get(url("/main/a?token=query-secret-1"))
        .header("authorization", "Bearer header-secret-2")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);
    assert_eq!(get(&url("/new")).await.status, 404);

    std::fs::write(&cfg, format!("{base}  - {{ name: new, match: {{ path_prefix: /new }}, upstream: u }}\n"))
        .unwrap();
    signal(&child.0, 1);
    wait_log(&mut lines, "config reloaded");
    assert_eq!(get(&url("/new")).await.status, 200);

    // SIGTERM with a request in flight: it completes, then the process exits 0.
    let slow_url = url("/main/slow");
    let slow = tokio::spawn(async move {
        send(&client(), Request::get(slow_url).header("x-mock-latency", "500ms").body(empty()).unwrap()).await
    });
    eventually(5, "slow request reached the upstream", async || m.request_count() == 3).await;
    signal(&child.0, 15);
    assert_eq!(slow.await.unwrap().status, 200);
    let mut status = None;
    for _ in 0..500 {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(status.expect("exits after SIGTERM").success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    let access: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(access.len(), 4, "{stdout}");
    assert!(!stdout.contains("query-secret-1") && !stdout.contains("header-secret-2"), "{stdout}");
}

#[test]
fn mock_command_serves_and_reports_its_address() {
    let child = Command::new(BIN)
        .args(["mock", "--port", "0", "--fixed", "/health=200"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("mock listening on http://127.0.0.1:"), "{line}");
    let (code, _, err) = bridgehead(&["mock", "--fail-rate", "1.5"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_and_its_tour_works() {
    // The tour's `webhook listen`, on a free port the demo's endpoint is then pointed at.
    let listener = Command::new(BIN)
        .args(["webhook", "listen", "--port", "0", "--scheme", "standard", "--secret-env", "WHSEC"])
        .env("WHSEC", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listener = Killed(listener);
    let (heard, printed) = std::sync::mpsc::channel::<String>();
    let out = BufReader::new(listener.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if heard.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &dyn Fn(&str) -> bool| -> String {
        loop {
            let line =
                printed.recv_timeout(std::time::Duration::from_secs(10)).expect("the listener printed it");
            if want(&line) {
                return line;
            }
        }
    };
    let listening = wait_for(&|l| l.starts_with("listening on http://"));
    let listener_port = listening.rsplit(':').next().unwrap().trim().to_owned();
    let Demo { child: _demo, mut lines, gateway, admin, mock } = Demo::start(&listener_port);
    // The printed sign command works as printed, and its token opens the protected route.
    let mut sign = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("TOKEN=$(") {
            sign = line.trim().trim_start_matches("TOKEN=$(").trim_end_matches('\\').to_owned();
        } else if !sign.is_empty() {
            sign.push_str(line.trim().trim_end_matches(')'));
            break;
        }
    }
    // The policy tour: a 429 with its headers, an idempotent replay, a retried flaky call.
    for _ in 0..3 {
        assert_eq!(get(&format!("{gateway}/limited")).await.status, 200);
    }
    let got = get(&format!("{gateway}/limited")).await;
    got.assert_problem(429, "rate limit `default`");
    assert!(!got.header("retry-after").is_empty() && !got.header("ratelimit").is_empty());
    let pay = |amount: u32| {
        Request::post(format!("{gateway}/payments"))
            .header("idempotency-key", "pay-1")
            .body(full(format!("{{\"amount\":{amount}}}")))
            .unwrap()
    };
    assert_eq!(send(&client(), pay(5)).await.status, 200);
    assert_eq!(send(&client(), pay(5)).await.header("idempotent-replayed"), "true");
    send(&client(), pay(6)).await.assert_problem(422, "already used");
    let faults = Request::put(format!("{mock}/__mock/faults"))
        .body(full("{\"fail_first\":2,\"fail_status\":503}"))
        .unwrap();
    assert_eq!(send(&client(), faults).await.status, 200);
    assert_eq!(get(&format!("{gateway}/flaky/orders")).await.status, 200);

    // gRPC as JSON, its schema from the demo server's reflection; and `grpc call` through the
    // gateway.
    let got = get(&format!("{gateway}/drones/v1/drones/d-1")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["mode"], "HOVER");
    get(&format!("{gateway}/drones/v1/drone/d-1")).await.assert_problem(404, "closest");
    let gw_addr = gateway.trim_start_matches("http://").to_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        bridgehead(&[
            "grpc",
            "call",
            "--plaintext",
            &gw_addr,
            "drone.v1.Telemetry/GetStatus",
            "-d",
            r#"{"droneId":"d-2"}"#,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["mode"], "IDLE");

    // SOAP as JSON: the mock's inventory behind the inventory-soap route.
    let soap = |op: &str, body: &str| {
        Request::post(format!("{gateway}/inventory/{op}")).body(full(body.to_owned())).unwrap()
    };
    let got = send(&client(), soap("GetStock", r#"{"sku":"A-1"}"#)).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["quantity"], 42);
    let p = send(&client(), soap("Reserve", r#"{"sku":"B-7","quantity":9}"#))
        .await
        .assert_problem(422, "only 3 of B-7");
    assert_eq!(p["fault_detail"]["InsufficientStock"]["available"], "3");
    send(&client(), soap("GetStock", r#"{"sku":7}"#)).await.assert_problem(400, "/sku: expected xs:string");

    // The tour's probe of the gateway's own secured route.
    let url = format!("{gateway}/secure/orders");
    let (code, out, err) =
        tokio::task::spawn_blocking(move || bridgehead(&["probe", &url, "--output", "json"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["auth"][0]["scheme"], "Bearer", "{r:#}");
    assert!(r["oauth"]["token_endpoint"].as_str().unwrap().ends_with("/oauth2/token"), "{r:#}");
    let found: Vec<&str> =
        r["protocols"]["found"].as_array().unwrap().iter().map(|f| f["protocol"].as_str().unwrap()).collect();
    assert!(found.contains(&"grpc"), "{found:?}");

    // The webhook tour: a malformed event is refused with every schema error and kept as a
    // dead letter; a good one is stored and forwarded once, its repeat acknowledged.
    let signer = bridgehead_webhooks::signature::Signer::new(
        bridgehead_webhooks::signature::Scheme::Standard,
        vec![
            bridgehead_webhooks::signature::Key::parse(
                &bridgehead_webhooks::signature::Scheme::Standard,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .unwrap(),
        ],
    )
    .unwrap();
    let hook = |id: &str, body: &'static str| {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut req =
            Request::post(format!("{gateway}/hooks/shop")).header("content-type", "application/json");
        for (k, v) in signer.sign(id, ts, body.as_bytes()).unwrap() {
            req = req.header(k, v);
        }
        req.body(full(body)).unwrap()
    };
    let bad =
        send(&client(), hook("evt_bad", r#"{"type":"order.created","data":{"id":"forty-two","total":-1}}"#))
            .await;
    let p = bad.assert_problem(400, "does not match the receiver's schema: 2 errors");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2);
    let dls = get(&format!("{admin}/admin/webhooks/dead-letters")).await.json();
    assert_eq!(dls["dead_letters"][0]["reason"], "schema");
    let good = r#"{"type":"order.created","data":{"id":42,"total":9.5}}"#;
    assert_eq!(send(&client(), hook("evt_1", good)).await.status, 202);
    assert_eq!(send(&client(), hook("evt_1", good)).await.header("idempotent-replayed"), "true");
    eventually(10, "the event forwarded to the mock", async || {
        get(&format!("{mock}/__mock/requests"))
            .await
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/internal/orders")
    })
    .await;

    // The dead letter's replay is refused again (its payload still fails the schema).
    let dlq = dls["dead_letters"][0]["id"].as_str().unwrap().to_owned();
    let replay = send(
        &client(),
        Request::post(format!("{admin}/admin/webhooks/dead-letters/{dlq}/replay")).body(empty()).unwrap(),
    )
    .await;
    replay.assert_problem(409, "still refused (schema)");

    // Sending: a published event reaches `webhook listen`, which verifies its signature; a
    // replay of it arrives again under the same webhook-id.
    let publish = Request::post(format!("{gateway}/events"))
        .header("x-api-key", "demo-partner-key")
        .header("content-type", "application/json")
        .body(full(r#"{"type":"order.created","data":{"id":42,"total":9.5},"id":"order-42"}"#))
        .unwrap();
    let got = send(&client(), publish).await;
    assert_eq!(got.status, 202, "{}", String::from_utf8_lossy(&got.body));
    let msg = got.json()["id"].as_str().unwrap().to_owned();
    let valid = format!("valid: secret #1 id={msg}");
    wait_for(&|l| l == valid);
    // The listener may print before the gateway has recorded the delivery as done; a replay
    // redelivers only finished deliveries.
    eventually(10, "the delivery replayed", async || {
        let replay = send(
            &client(),
            Request::post(format!("{admin}/admin/webhooks/messages/{msg}/replay")).body(empty()).unwrap(),
        )
        .await;
        replay.json()["redelivered"] == 1
    })
    .await;
    wait_for(&|l| l == valid);

    let out = Command::new("sh").args(["-c", &sign]).output().unwrap();
    assert!(out.status.success(), "{sign}: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let secure = format!("{gateway}/secure/orders");
    let got = get(&secure).await;
    got.assert_problem(401, "no credentials");
    let got = send(
        &client(),
        Request::get(&secure).header("authorization", format!("Bearer {token}")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["headers"]["x-consumer-id"], "fde");
    let got =
        send(&client(), Request::get(&secure).header("x-api-key", "demo-partner-key").body(empty()).unwrap())
            .await;
    assert_eq!(got.json()["headers"]["x-consumer-id"], "acme");
    // The local issuer's printed command fetches a token that opens the same route.
    let mut fetch = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("LOCAL=$(") {
            fetch = line.trim().trim_start_matches("LOCAL=$(").trim_end_matches('\\').to_owned();
        } else if !fetch.is_empty() {
            fetch.push_str(line.trim().trim_end_matches(')'));
            break;
        }
    }
    let out = Command::new("sh").args(["-c", &fetch]).output().unwrap();
    assert!(out.status.success(), "{fetch}: {}", String::from_utf8_lossy(&out.stderr));
    let local = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let got = send(
        &client(),
        Request::get(&secure).header("authorization", format!("Bearer {local}")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["headers"]["x-consumer-id"], "demo-client");
    let got = get(&format!("{gateway}/api/orders/42")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/orders/42");
    get(&format!("{gateway}/nowhere")).await.assert_problem(404, "no route matches GET /nowhere");
    let got =
        send(&client(), Request::patch(format!("{gateway}/api/orders/42")).body(empty()).unwrap()).await;
    got.assert_problem(405, "PATCH is not allowed");
    eventually(10, "demo ready", async || get(&format!("{admin}/readyz")).await.status == 200).await;
    let recorded = get(&format!("{mock}/__mock/requests")).await.json();
    assert!(recorded.as_array().unwrap().iter().any(|r| r["path"] == "/orders/42"), "{recorded}");
}

/// `workers` unset follows the CPUs the process may use: under a one-CPU affinity mask
/// (`taskset`, util-linux) the gateway runs one worker, and serves.
#[test]
fn workers_unset_follow_the_cpu_affinity_mask() {
    let dir = tempfile::tempdir().unwrap();
    let m = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", m.local_addr().unwrap());
    drop(m);
    let cfg = dir.path().join("one-cpu.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nstate:\n  url: sqlite://{}/one.db\n{}",
        dir.path().display(),
        simple_config(&upstream)
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = Killed(
        std::process::Command::new("taskset")
            .args(["-c", "0", BIN, "serve", "--no-watch", "-c", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("taskset (util-linux) runs the binary"),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let runtime = wait_log(&mut stderr, "data-plane workers");
    assert_eq!(runtime["fields"]["workers"], 1, "{runtime}");
    let listening = wait_log(&mut stderr, "listening");
    assert!(listening["fields"]["data"].is_string());
    wait_log(&mut stderr, "gateway ready");
    assert_eq!(worker_threads(child.0.id()), 0, "one worker serves on the main thread");
}

/// The data-plane worker threads of process `pid` (named `bridgehead-wN`).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).unwrap_or_default();
            comm.starts_with("bridgehead-w")
        })
        .count()
}

/// `workers: 2`: two threads, each with its own runtime and `SO_REUSEPORT` listener on the one
/// port; the kernel spreads connections over both; SIGTERM drains the requests in flight on
/// every worker, then the process exits 0. A second gateway on the same port is refused rather
/// than joining the first one's listeners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_workers_share_the_port_and_drain_together() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(
        dir.path(),
        "workers",
        "  workers: 2\n",
        &format!("state:\n  url: sqlite://STATE_DB\n{}", simple_config(&m.url())),
    );
    wait_log(&mut node.stderr, "gateway ready");
    // A thread names itself once it runs.
    let pid = node.child.0.id();
    eventually(5, "two worker threads", async || worker_threads(pid) == 2).await;

    // A new connection per request.
    for i in 0..40 {
        assert_eq!(get(&node.url(&format!("/r{i}"))).await.status, 200);
    }
    let metrics = get(&format!("http://{}/metrics", node.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    for worker in ["1", "2"] {
        let line = format!("bridgehead_connections_accepted_total{{worker=\"{worker}\"}}");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("{line} missing:\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n > 0, "worker {worker} got no connection of 40:\n{metrics}");
    }

    // The same address again: refused, naming the key.
    let cfg = dir.path().join("second.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: {}\n  workers: 2\nadmin:\n  listen: 127.0.0.1:0\nstate:\n  url: sqlite://{}/second.db\n{}",
            node.addr,
            dir.path().display(),
            simple_config(&m.url())
        ),
    )
    .unwrap();
    let (code, _, err) = bridgehead(&["serve", "--no-watch", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {} (server.listen)", node.addr)), "{err}");
    assert!(err.contains("Address already in use"), "{err}");

    // Slow requests in flight on both workers (16 connections), then SIGTERM: all complete.
    let slow: Vec<_> = (0..16)
        .map(|i| {
            let url = node.url(&format!("/slow{i}"));
            tokio::spawn(async move {
                send(&client(), Request::get(url).header("x-mock-latency", "500ms").body(empty()).unwrap())
                    .await
            })
        })
        .collect();
    eventually(5, "slow requests reached the upstream", async || m.request_count() == 56).await;
    signal(&node.child.0, 15);
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
    let status = tokio::task::spawn_blocking(move || node.child.0.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn version_completions_and_the_man_page_come_from_the_binary() {
    let (code, out, err) = bridgehead(&["version", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(!v["commit"].as_str().unwrap().is_empty());
    assert!(v["target"].as_str().unwrap().contains("linux"), "{v:#}");
    assert!(v["rustc"].as_str().unwrap().starts_with("rustc "), "{v:#}");
    assert_eq!(v["static_binary"], false, "a test build links dynamically");
    let (code, out, _) = bridgehead(&["version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("bridgehead {} (", env!("CARGO_PKG_VERSION"))), "{out}");

    for (shell, marker) in
        [("bash", "_bridgehead()"), ("zsh", "#compdef bridgehead"), ("fish", "complete -c bridgehead")]
    {
        let (code, out, err) = bridgehead(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker) && out.contains("probe") && out.contains("soap"), "{shell}: {out}");
    }
    let (code, _, err) = bridgehead(&["completions", "tcsh"]);
    assert_eq!(code, 2, "a shell clap_complete does not know is a usage error");
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    let (code, out, _) = bridgehead(&["manpage"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie \\n(.g .ds Aq") || out.contains(".TH bridgehead"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(out.contains("bridgehead\\-serve") || out.contains("serve"), "the subcommands are listed");
}

#[test]
fn logs_are_json_through_a_pipe_and_text_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("b.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\nstate:\n  url: sqlite://{}/s.db\nupstreams:\n  u:\n    targets: [{{ url: \"http://127.0.0.1:9\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: u }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for (format, json) in [(None, true), (Some("text"), false), (Some("json"), true)] {
        let mut cmd = Command::new(BIN);
        if let Some(f) = format {
            cmd.args(["--log-format", f]);
        }
        let mut child = crate::support::Killed(
            cmd.args(["serve", "--no-watch", "-c", cfg.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&first).is_ok(), json, "{format:?}: {first}");
        if !json {
            assert!(first.contains(" INFO ") && first.contains("data-plane workers"), "{first}");
        }
    }
}

/// The static build of `scripts/build-static` (its path in `BRIDGEHEAD_STATIC_BINARY`, which
/// `scripts/test` sets); `None` only when `BRIDGEHEAD_SKIP_STATIC=1` says to skip.
fn static_binary() -> Option<String> {
    if std::env::var("BRIDGEHEAD_SKIP_STATIC").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_STATIC=1");
        return None;
    }
    let bin = std::env::var("BRIDGEHEAD_STATIC_BINARY").unwrap_or_else(|_| {
        panic!("set BRIDGEHEAD_STATIC_BINARY to the path scripts/build-static prints (scripts/test does), or BRIDGEHEAD_SKIP_STATIC=1")
    });
    assert!(Path::new(&bin).exists(), "{bin} does not exist");
    Some(bin)
}

#[test]
fn the_static_binary_needs_no_shared_library_and_runs_alone() {
    let Some(bin) = static_binary() else { return };
    // No program interpreter and no shared library: the kernel runs it as is.
    let elf = Command::new("readelf").args(["-lW", "-dW", &bin]).output().unwrap();
    let elf = String::from_utf8_lossy(&elf.stdout);
    assert!(!elf.contains("INTERP") && !elf.contains("(NEEDED)"), "{elf}");
    // ldd agrees, in either of its words for a static binary.
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
    assert!(said.contains("statically linked") || said.contains("not a dynamic executable"), "{said}");
    // Copied alone into an empty directory, with an empty environment, it runs and says what it is.
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("bridgehead");
    std::fs::copy(&bin, &alone).unwrap();
    let alone_run = |args: &[&str]| run(Command::new(&alone).args(args).env_clear().current_dir(dir.path()));
    let (ok, out) = alone_run(&["version", "--output", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["static_binary"].as_bool(), v["profile"].as_str()), (Some(true), Some("release")), "{v:#}");
    assert_eq!(v["target"], "x86_64-unknown-linux-gnu");
    std::fs::write(dir.path().join("b.yaml"), "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:9\" }]\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: u }\n").unwrap();
    let (ok, out) = alone_run(&["config", "check", "b.yaml"]);
    assert!(ok, "{out}");
}

#[test]
fn the_systemd_unit_verifies_clean() {
    if std::env::var("BRIDGEHEAD_SKIP_SYSTEMD").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_SYSTEMD=1");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/bridgehead.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/bridgehead serve"), "{unit}");
    // The unit names the installed binary; here, the one just built (systemd-analyze checks it
    // exists and is executable).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridgehead.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/bridgehead", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", file.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e} (scripts/test installs systemd; BRIDGEHEAD_SKIP_SYSTEMD=1 skips)")
        });
    // Unknown keys and bad values are only warnings: stderr must be empty too.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn the_kubernetes_manifests_lint_and_validate_against_the_kubernetes_schemas() {
    let Some(python) = crate::support::python() else { return };
    let manifest = repo().join("deploy/kubernetes/bridgehead.yaml");
    let lint = Command::new(&python)
        .args(["-m", "yamllint", "-c"])
        .arg(repo().join("deploy/.yamllint"))
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    // Against the Kubernetes API schemas, offline (the ServiceMonitor, a custom resource, has
    // none there: it is only warned about).
    let validator = Path::new(&python).with_file_name("kubernetes-validate");
    let validate = |file: &Path| {
        let out = Command::new(&validator).arg("--strict").arg(file).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = validate(&manifest);
    assert!(ok, "{said}");
    assert_eq!(said.matches("passed for resource").count(), 5, "{said}");
    // The check can fail: a wrong type is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&manifest).unwrap().replace("replicas: 2", "replicas: two"),
    )
    .unwrap();
    let (ok, said) = validate(&broken);
    assert!(!ok && said.contains("replicas"), "{said}");
    // The config in the ConfigMap is one bridgehead accepts.
    configmap_config_is_accepted(&python, &manifest, &dir.path().join("bridgehead.yaml"));
}

/// Checks with `config check` the config in the first ConfigMap of the manifests in `file`,
/// written to `cfg`.
fn configmap_config_is_accepted(python: &str, file: &Path, cfg: &Path) {
    let extract = "import sys, yaml\nprint(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d['kind'] == 'ConfigMap')['data']['bridgehead.yaml'])";
    let out = Command::new(python).args(["-c", extract]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(cfg, &out.stdout).unwrap();
    let check = Command::new(BIN)
        .args(["config", "check"])
        .arg(cfg)
        .env("ADMIN_TOKEN", "a-token-of-32-characters-or-so..")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&check.stdout));
}

#[test]
fn the_helm_chart_lints_renders_and_validates_and_its_config_is_accepted() {
    if std::env::var("BRIDGEHEAD_SKIP_HELM").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_HELM=1");
        return;
    }
    let helm = std::env::var("BRIDGEHEAD_HELM")
        .expect("BRIDGEHEAD_HELM: scripts/test sets it (scripts/fetch-helm); BRIDGEHEAD_SKIP_HELM=1 skips");
    let Some(python) = crate::support::python() else { return };
    let chart = repo().join("deploy/helm/bridgehead");
    let enabled = chart.join("ci/enabled-values.yaml");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(&helm).args(args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "helm {args:?}: {text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[&os("lint"), &os("--strict"), chart.as_os_str()]);
    run(&[&os("lint"), &os("--strict"), chart.as_os_str(), &os("-f"), enabled.as_os_str()]);
    let dir = tempfile::tempdir().unwrap();
    let validator = Path::new(&python).with_file_name("kubernetes-validate");
    for (name, extra) in [("default", None), ("enabled", Some(&enabled))] {
        let mut args = vec![
            os("template"),
            os("bridgehead"),
            chart.clone().into_os_string(),
            os("--namespace"),
            os("bh"),
        ];
        if let Some(v) = extra {
            args.extend([os("-f"), v.clone().into_os_string()]);
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        let rendered = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&rendered, run(&refs)).unwrap();
        let lint = Command::new(&python)
            .args(["-m", "yamllint", "--strict", "-c"])
            .arg(repo().join("deploy/.yamllint"))
            .arg(&rendered)
            .output()
            .unwrap();
        assert!(lint.status.success(), "{name}: {}", String::from_utf8_lossy(&lint.stdout));
        let out = Command::new(&validator).arg("--strict").arg(&rendered).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stdout));
        let text = std::fs::read_to_string(&rendered).unwrap();
        for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"] {
            assert!(text.contains(&format!("kind: {kind}\n")), "{name}: no {kind}");
        }
        assert_eq!(text.contains("kind: ServiceMonitor\n"), extra.is_some(), "{name}");
        assert_eq!(text.contains("kind: NetworkPolicy\n"), extra.is_some(), "{name}");
        // The rendered config is one bridgehead accepts.
        configmap_config_is_accepted(&python, &rendered, &dir.path().join(format!("{name}-bridgehead.yaml")));
    }
    // The chart refuses an admin listener on loopback (the probes could not reach it).
    let out = Command::new(&helm)
        .arg("template")
        .arg(&chart)
        .args(["--set", "config.admin.listen=127.0.0.1:9901"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
