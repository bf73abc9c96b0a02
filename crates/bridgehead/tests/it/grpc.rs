//! gRPC: transcoding JSON over HTTP to the demo drone-telemetry server (tonic) with its schema
//! from reflection, `.proto` files or a descriptor set; gRPC proxied as is.

use std::net::SocketAddr;

use bridgehead_grpc::demo;
use bridgehead_testkit::{Gateway, Got, client, empty, full, get, send};
use http::Request;
use serde_json::{Value, json};

/// The demo server on a free port; stops when dropped.
pub struct DemoServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DemoServer {
    pub async fn start(reflection: bool) -> DemoServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(demo::serve(listener, demo::Options { reflection }, async {
            let _ = rx.await;
        }));
        DemoServer { addr, stop: Some(tx) }
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A gateway with the demo server as `telemetry`, transcoded under `/rest` and at its own
/// paths on host `api.test`, and proxied as gRPC.
pub(crate) fn config(addr: SocketAddr, descriptors: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  drones:
    targets: [{{ url: "http://{addr}" }}]
    protocol: h2c
grpc:
  services:
    telemetry:
      upstream: drones
      descriptors: {descriptors}
routes:
  - name: rest
    match: {{ path_prefix: /rest }}
    grpc_transcode: {{ service: telemetry, metadata: [x-tenant] }}
  - name: own-paths
    match: {{ host: api.test }}
    grpc_transcode: {{ service: telemetry }}
  - name: grpc
    match: {{ grpc_service: drone.v1.Telemetry }}
    upstream: drones
{extra}"#
    )
}

async fn call(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Got {
    let b = match body {
        Some(v) => full(v.to_string()),
        None => empty(),
    };
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("content-type", "application/json")
        .body(b)
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn reflection_gives_a_json_api_for_every_method() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;

    // An annotated GET with a path variable: int64 as a string, enums by name, timestamps.
    let got = call(&gw, "GET", "/rest/v1/drones/d-1", None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), "application/json");
    let d = got.json();
    assert_eq!(d["droneId"], "d-1");
    assert_eq!(d["mode"], "HOVER");
    assert_eq!(d["flightSeconds"], "9007199254740993");
    assert_eq!(d["updatedAt"], "2026-12-01T00:00:00Z");
    assert_eq!(d["position"]["altitudeM"], 120.5);

    // Query parameters: an enum by name, a repeated field.
    let got = call(&gw, "GET", "/rest/v1/drones?mode=IDLE&tags=south", None).await;
    assert_eq!(
        got.json(),
        json!({"drones": [{"droneId": "d-2", "mode": "IDLE", "battery": 1.0, "flightSeconds": "9007199254740993", "updatedAt": "2026-12-01T00:00:00Z", "position": {"droneId": "d-2", "lat": 52.52, "lon": 13.405, "altitudeM": 120.5, "seq": 1}, "tags": ["south"]}]})
    );

    // A custom verb with body "*", a oneof with a Duration; and its additional binding.
    let got = call(&gw, "POST", "/rest/v1/drones/d-1:command", Some(json!({"hoverFor": "30s"}))).await;
    assert_eq!(got.json(), json!({"droneId": "d-1", "accepted": "hover for 30s"}));
    let got = call(&gw, "POST", "/rest/v1/commands/d-2", Some(json!({"landAt": "pad 4"}))).await;
    assert_eq!(got.json()["accepted"], "land at pad 4");

    // An unannotated method on its synthesized binding.
    let got = call(&gw, "POST", "/rest/drone.v1.Telemetry/GetStatus", Some(json!({"droneId": "d-2"}))).await;
    assert_eq!(got.json()["mode"], "IDLE");

    // The same bindings at their own paths on the route without a path.
    let req = Request::get(gw.url("/v1/drones/d-1")).header("host", "api.test").body(empty()).unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["droneId"], "d-1");

    // A raw body (google.api.HttpBody).
    let got = call(&gw, "GET", "/rest/v1/drones/d-1/export", None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "text/csv");
    assert!(String::from_utf8_lossy(&got.body).starts_with("drone_id,lat,lon,altitude_m\nd-1,"));

    // The admin API lists the service and its bindings.
    let admin = get(&gw.admin_url("/admin/grpc")).await;
    assert_eq!(admin.status, 200, "{}", String::from_utf8_lossy(&admin.body));
    let svc = &admin.json()["services"][0];
    assert_eq!(svc["name"], "telemetry");
    assert_eq!(svc["origin"], "reflection");
    assert!(svc["bindings"].as_array().unwrap().iter().any(|b| b == "GET /v1/drones/{drone_id}"), "{svc}");
}

#[tokio::test]
async fn requests_that_do_not_fit_the_schema_are_refused_before_the_upstream() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;

    let got = call(&gw, "GET", "/rest/v1/drone/d-1", None).await;
    let p = got.assert_problem(404, "GET /rest/v1/drones/{drone_id}");
    assert!(p["closest"].as_array().unwrap().contains(&json!("GET /rest/v1/drones/{drone_id}")), "{p}");
    assert_eq!(p["type"], "urn:bridgehead:problem:grpc-no-binding");
    let got = call(&gw, "POST", "/rest/drone.v1.Telemetry/GetStatu", Some(json!({}))).await;
    got.assert_problem(404, "POST /rest/drone.v1.Telemetry/GetStatus");

    let got = call(&gw, "DELETE", "/rest/v1/drones/d-1", None).await;
    got.assert_problem(405, "allowed: GET, PATCH");
    assert_eq!(got.header("allow"), "GET, PATCH");

    let got = call(&gw, "POST", "/rest/v1/drones/d-1:command", Some(json!({"hoverFor": 30}))).await;
    let p = got.assert_problem(400, "field `hoverFor`");
    assert_eq!(p["field"], "hoverFor");
    let got = call(&gw, "GET", "/rest/v1/drones?page_size=lots", None).await;
    got.assert_problem(400, "field `page_size`: invalid digit");
    let got = call(&gw, "GET", "/rest/v1/drones?speed=3", None).await;
    got.assert_problem(
        400,
        "query parameter `speed`: `speed` is not a field of `drone.v1.ListDronesRequest`",
    );
    let got =
        call(&gw, "POST", "/rest/v1/drones/d-1:command", Some(json!({"landAt": "x", "teleport": true})))
            .await;
    got.assert_problem(400, "teleport");
    let req = Request::post(gw.url("/rest/v1/commands/d-1")).body(full("{not json")).unwrap();
    send(&client(), req).await.assert_problem(400, "not valid JSON");
    let got = call(&gw, "GET", "/rest/v1/drones/%FF", None).await;
    got.assert_problem(400, "path variable `drone_id`");
}

#[tokio::test]
async fn grpc_statuses_become_problems_with_their_details() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let fail = "/rest/drone.v1.Telemetry/Fail";
    for (code, status) in [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ] {
        let got = call(&gw, "POST", fail, Some(json!({"code": code, "message": "it failed: 100%"}))).await;
        let p = got.assert_problem(status, "it failed: 100%");
        assert_eq!(p["grpc_status"], code);
        assert_eq!(p["grpc_code"], bridgehead_grpc::status::name(code));
    }
    let got =
        call(&gw, "POST", fail, Some(json!({"code": 8, "message": "slow down", "details": true}))).await;
    let p = got.assert_problem(429, "slow down");
    assert_eq!(got.header("retry-after"), "2");
    assert_eq!(
        p["details"],
        json!([
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "drone_id", "description": "unknown drone"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
        ])
    );
    // The server's own validation, with its BadRequest detail.
    let got = call(&gw, "GET", "/rest/v1/drones/nope", None).await;
    got.assert_problem(404, "no drone `nope`");
    let m = gw.metrics().await;
    for line in [
        r#"bridgehead_grpc_requests_total{route="rest",service="drone.v1.Telemetry",method="Fail",code="NOT_FOUND"} 1"#,
        r#"bridgehead_grpc_requests_total{route="rest",service="drone.v1.Telemetry",method="Fail",code="RESOURCE_EXHAUSTED"} 2"#,
        r#"bridgehead_grpc_requests_total{route="rest",service="drone.v1.Telemetry",method="GetStatus",code="NOT_FOUND"} 1"#,
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}

#[tokio::test]
async fn server_streams_arrive_as_ndjson_or_sse_and_failures_end_them() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let got = call(&gw, "GET", "/rest/v1/drones/d-1/positions?count=3", None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "application/x-ndjson");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&got.body).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    let ok = r#"bridgehead_grpc_requests_total{route="rest",service="drone.v1.Telemetry",method="StreamPositions",code="OK"} 1"#;
    assert!(gw.metrics().await.contains(ok));

    let req = Request::get(gw.url("/rest/v1/drones/d-1/positions?count=5&fail_after=2"))
        .header("accept", "text/event-stream")
        .body(empty())
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.header("content-type"), "text/event-stream");
    let text = String::from_utf8_lossy(&got.body).into_owned();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(events[0].starts_with("data: {"), "{text}");
    assert!(events[2].starts_with("event: error\ndata: "), "{text}");
    let err: Value = serde_json::from_str(events[2].trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(err["grpc_code"], "UNAVAILABLE");
    assert_eq!(err["detail"], "link to the drone lost");

    // Client streaming and bidi take NDJSON bodies.
    let lines = "{\"droneId\": \"d-1\", \"seq\": 1}\n\n{\"droneId\": \"d-2\", \"seq\": 2}\n";
    let req = Request::post(gw.url("/rest/drone.v1.Telemetry/UploadPositions")).body(full(lines)).unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.json(), json!({"count": 2, "drones": ["d-1", "d-2"]}));
    let req = Request::post(gw.url("/rest/drone.v1.Telemetry/Chat")).body(full(lines)).unwrap();
    let got = send(&client(), req).await;
    let seqs: Vec<u64> = String::from_utf8_lossy(&got.body)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1001, 1002]);
    let req =
        Request::post(gw.url("/rest/drone.v1.Telemetry/Chat")).body(full("{\"seq\": \"x\"}\n")).unwrap();
    let p = send(&client(), req).await.assert_problem(400, "message 1: field `seq`");
    assert_eq!((p["message"].clone(), p["field"].clone()), (json!(1), json!("seq")));
}

#[tokio::test]
async fn a_stream_of_http_bodies_is_written_raw_and_breaks_off_where_it_fails() {
    use http_body_util::BodyExt as _;
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let got = call(&gw, "GET", "/rest/v1/drones/d-1/track?count=2", None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), "text/csv");
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        "seq,lat,lon,altitude_m\n1,52.52100,13.40500,120.5\n2,52.52200,13.40500,120.5\n"
    );
    // Failed before any data: a problem, as for a unary call.
    let got = call(&gw, "GET", "/rest/v1/drones/d-9/track", None).await;
    let p = got.assert_problem(404, "no drone `d-9`");
    assert_eq!(p["grpc_code"], "NOT_FOUND");

    // Failed after some: the data so far, then the body breaks off (no error object can be
    // told apart from CSV), and the call counts as the status it ended with. (Paced, so that
    // the head and the first rows are written before the failure comes.)
    let req = Request::get(gw.url("/rest/v1/drones/d-1/track?count=5&fail_after=2&interval_ms=20"))
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut seen = Vec::new();
    let broke = loop {
        match body.frame().await {
            Some(Ok(f)) => seen.extend_from_slice(&f.into_data().unwrap_or_default()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(broke, "the body ended cleanly: {}", String::from_utf8_lossy(&seen));
    assert_eq!(String::from_utf8_lossy(&seen).lines().count(), 3, "{}", String::from_utf8_lossy(&seen));
    let failed = r#"bridgehead_grpc_requests_total{route="rest",service="drone.v1.Telemetry",method="ExportTrack",code="UNAVAILABLE"} 1"#;
    // Counted when the gateway has finished the request, which may be just after the client
    // has seen the body break off.
    bridgehead_testkit::eventually(5, "the failed call counted", async || {
        gw.metrics().await.contains(failed)
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_on_a_transcoding_route_replay_without_calling_again() {
    let server = DemoServer::start(true).await;
    let yaml = config(server.addr, "{ reflection: true }", "").replace(
        "grpc_transcode: { service: telemetry, metadata: [x-tenant] }",
        "grpc_transcode: { service: telemetry }\n    idempotency: { ttl: 1h }",
    );
    let gw = Gateway::start(&yaml).await;
    let keyed = |method: &str, path: &str, key: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("idempotency-key", format!("\"{key}\""))
            .body(full(body.to_owned()))
            .unwrap()
    };
    let c = client();
    let first = send(&c, keyed("PATCH", "/rest/v1/drones/d-1", "k1", r#"{"battery": 0.5}"#)).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.json()["battery"], 0.5);
    // Changed since, without a key.
    let later = call(&gw, "PATCH", "/rest/v1/drones/d-1", Some(json!({"battery": 0.3}))).await;
    assert_eq!(later.json()["battery"], 0.3);
    // The repeat gets the stored answer; the server is not asked (the battery stays at 0.3).
    let again = send(&c, keyed("PATCH", "/rest/v1/drones/d-1", "k1", r#"{"battery": 0.5}"#)).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (200, "true"));
    assert_eq!(again.body, first.body);
    assert_eq!(call(&gw, "GET", "/rest/v1/drones/d-1", None).await.json()["battery"], 0.3);
    // The same key for another request is refused.
    let other = send(&c, keyed("PATCH", "/rest/v1/drones/d-1", "k1", r#"{"battery": 0.9}"#)).await;
    other.assert_problem(422, "Idempotency-Key");
    // A request refused before the upstream frees its key: fixed, it runs.
    let bad = send(&c, keyed("POST", "/rest/v1/drones/d-1:command", "k2", r#"{"landAt": 7}"#)).await;
    bad.assert_problem(400, "landAt");
    // (The key is freed in the background: until then the request finds it in flight, 409.)
    let mut good = None;
    bridgehead_testkit::eventually(5, "the key freed", async || {
        let got = send(&c, keyed("POST", "/rest/v1/drones/d-1:command", "k2", r#"{"landAt": "pad"}"#)).await;
        let done = got.status != 409;
        good = Some(got);
        done
    })
    .await;
    let good = good.unwrap();
    assert_eq!(good.json(), json!({"droneId": "d-1", "accepted": "land at pad"}));
    assert_eq!(good.header("idempotent-replayed"), "");
}

#[tokio::test]
async fn protos_and_descriptor_sets_serve_the_same_bindings() {
    let server = DemoServer::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proto/drone/v1")).unwrap();
    std::fs::write(dir.path().join("proto/drone/v1/telemetry.proto"), demo::PROTO).unwrap();
    let protos = format!(
        "{{ protos: [drone/v1/telemetry.proto], include: [{}] }}",
        dir.path().join("proto").display()
    );
    let gw = Gateway::start(&config(server.addr, &protos, "")).await;
    let got = call(&gw, "GET", "/rest/v1/drones/d-2", None).await;
    assert_eq!(got.json()["mode"], "IDLE");
    drop(gw);

    std::fs::write(dir.path().join("telemetry.pb"), demo::DESCRIPTORS).unwrap();
    let set = format!("{{ descriptor_set: {} }}", dir.path().join("telemetry.pb").display());
    let gw = Gateway::start(&config(server.addr, &set, "")).await;
    let got = call(&gw, "GET", "/rest/v1/drones/d-1", None).await;
    assert_eq!(got.json()["mode"], "HOVER");
}

/// Runs the binary off the runtime's threads (the demo server and the gateway run on them).
async fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::bridgehead_stdin(&refs, &stdin)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_command_lists_describes_calls_and_exports_like_grpcurl() {
    let server = DemoServer::start(true).await;
    let addr = server.addr.to_string();
    let (code, out, err) = cli(&["grpc", "list", "--plaintext", &addr], "").await;
    assert_eq!((code, out.as_str()), (0, "drone.v1.Telemetry\n"), "{err}");
    let (code, out, _) = cli(&["grpc", "list", "--plaintext", &addr, "drone.v1.Telemetry"], "").await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "drone.v1.Telemetry.StreamPositions"), "{out}");
    let (code, out, _) = cli(&["grpc", "describe", "--plaintext", &addr, "drone.v1.Position"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("drone.v1.Position is a message:\nmessage Position {\n  string drone_id = 1;"),
        "{out}"
    );

    let (code, out, err) = cli(
        &[
            "grpc",
            "call",
            "--plaintext",
            &addr,
            "drone.v1.Telemetry/GetStatus",
            "-d",
            r#"{"droneId": "d-2"}"#,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "IDLE");
    // Server streaming prints one JSON value per message.
    let (code, out, _) = cli(
        &[
            "grpc",
            "call",
            "--plaintext",
            &addr,
            "drone.v1.Telemetry/StreamPositions",
            "-d",
            r#"{"droneId": "d-1", "count": 2}"#,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::Deserializer::from_str(&out).into_iter::<Value>().count(), 2);
    // Client streaming from stdin NDJSON.
    let (code, out, _) = cli(
        &["grpc", "call", "--plaintext", &addr, "drone.v1.Telemetry/UploadPositions", "-d", "@"],
        "{\"droneId\": \"a\"}\n{\"droneId\": \"b\"}\n{\"droneId\": \"a\"}\n",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"count": 3, "drones": ["a", "b"]}));
    // A failed status: grpcurl's exit code (64 + code) and the status on stderr.
    let (code, _, err) = cli(
        &["grpc", "call", "--plaintext", &addr, "drone.v1.Telemetry/GetStatus", "-d", r#"{"droneId": "zz"}"#],
        "",
    )
    .await;
    assert_eq!(code, 64 + 5, "{err}");
    assert!(err.contains("Code: NOT_FOUND") && err.contains("no drone `zz`"), "{err}");
    // Mistakes say what is wrong.
    let (code, _, err) =
        cli(&["grpc", "call", "--plaintext", &addr, "drone.v1.Telemetry/Nope", "-d", "{}"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("has no method `Nope`"), "{err}");
    let (code, _, err) = cli(
        &["grpc", "call", "--plaintext", &addr, "drone.v1.Telemetry/GetStatus", "-d", r#"{"droneId": 5}"#],
        "",
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("droneId"), "{err}");

    // Export, then call with the exported files instead of reflection.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("schema");
    let (code, _, err) =
        cli(&["grpc", "export", "--plaintext", &addr, "--out", out_dir.to_str().unwrap()], "").await;
    assert_eq!(code, 0, "{err}");
    let proto = out_dir.join("demo/drone/v1/telemetry.proto");
    assert!(proto.exists(), "{err}");
    let set = out_dir.join("descriptors.pb");
    let plain = DemoServer::start(false).await;
    let plain_addr = plain.addr.to_string();
    for source in [
        vec!["--protoset", set.to_str().unwrap()],
        vec!["--proto", "demo/drone/v1/telemetry.proto", "--import-path", out_dir.to_str().unwrap()],
    ] {
        let mut args = vec!["grpc", "call", "--plaintext", &plain_addr];
        args.extend(source);
        args.extend(["drone.v1.Telemetry/GetStatus", "-d", r#"{"droneId": "d-1"}"#]);
        let (code, out, err) = cli(&args, "").await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["mode"], "HOVER");
    }
    // Without reflection and without files: a clear error.
    let (code, _, err) = cli(&["grpc", "list", "--plaintext", &plain_addr], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("does not offer reflection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_proxied_as_is_through_a_grpc_service_route() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("telemetry.pb");
    std::fs::write(&set, demo::DESCRIPTORS).unwrap();
    let addr = gw.addr.to_string();
    let call = |method: &'static str, data: &'static str| {
        let (addr, set) = (addr.clone(), set.clone());
        async move {
            cli(
                &[
                    "grpc",
                    "call",
                    "--plaintext",
                    &addr,
                    "--protoset",
                    set.to_str().unwrap(),
                    method,
                    "-d",
                    data,
                ],
                "",
            )
            .await
        }
    };
    let (code, out, err) = call("drone.v1.Telemetry/GetStatus", r#"{"droneId": "d-1"}"#).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["droneId"], "d-1");
    // Every streaming shape, trailers and statuses pass through.
    let (code, out, _) =
        call("drone.v1.Telemetry/StreamPositions", r#"{"droneId": "d-1", "count": 3}"#).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::Deserializer::from_str(&out).into_iter::<Value>().count(), 3);
    let (code, out, _) = call("drone.v1.Telemetry/Chat", "{\"seq\": 1}\n{\"seq\": 2}").await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::Deserializer::from_str(&out).into_iter::<Value>().count(), 2);
    let (code, _, err) =
        call("drone.v1.Telemetry/Fail", r#"{"code": 7, "message": "no", "details": true}"#).await;
    assert_eq!(code, 64 + 7, "{err}");
    assert!(err.contains("google.rpc.BadRequest"), "{err}");
    // Counted when the gateway's side of each call is over, which may follow the client's exit.
    for line in [
        r#"bridgehead_grpc_requests_total{route="grpc",service="drone.v1.Telemetry",method="Fail",code="PERMISSION_DENIED"} 1"#,
        r#"bridgehead_grpc_requests_total{route="grpc",service="drone.v1.Telemetry",method="StreamPositions",code="OK"} 1"#,
        r#"bridgehead_grpc_requests_total{route="grpc",service="drone.v1.Telemetry",method="Chat",code="OK"} 1"#,
    ] {
        bridgehead_testkit::eventually(5, line, async || gw.metrics().await.contains(line)).await;
    }
    // A method outside the route's service has no route: a gRPC status, not an HTTP page.
    let (code, _, err) = cli(&["grpc", "list", "--plaintext", &addr, "--max-time", "5"], "").await;
    assert_eq!(code, 1, "{err}");
}

/// `protoc` (Debian protobuf-compiler, with libprotobuf-dev's well-known types), from
/// `scripts/test`; `None` only when BRIDGEHEAD_SKIP_PROTOC=1 says to skip.
fn protoc() -> Option<&'static str> {
    if std::env::var("BRIDGEHEAD_SKIP_PROTOC").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_PROTOC=1");
        return None;
    }
    assert!(
        std::process::Command::new("protoc").arg("--version").output().is_ok_and(|o| o.status.success()),
        "no protoc: run scripts/test (it installs protobuf-compiler), or set BRIDGEHEAD_SKIP_PROTOC=1 to skip"
    );
    Some("protoc")
}

const INVENTORY: &str = r#"syntax = "proto3";
package inventory.v1;
import "google/api/annotations.proto";
service Inventory {
  rpc GetItem(GetItemRequest) returns (Item) { option (google.api.http) = { get: "/v1/items/{sku}" }; }
  rpc ListItems(ListItemsRequest) returns (stream Item) { option (google.api.http) = { get: "/v1/items" }; }
}
message GetItemRequest { string sku = 1; }
message Money { int64 units = 1; string currency = 2; }
message Item { string sku = 1; string name = 2; int64 quantity = 3; Money price = 4; }
message ListItemsRequest { int64 min_quantity = 1; }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_server_is_transcoded_from_v1alpha_reflection_and_a_protoc_descriptor_set() {
    if crate::support::python().is_none() {
        return;
    }
    let Some(protoc) = protoc() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.proto"), INVENTORY).unwrap();
    let set = dir.path().join("inventory.pb");
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../grpc/proto");
    let out = std::process::Command::new(protoc)
        .arg("--include_imports")
        .arg(format!("-I{}", dir.path().display()))
        .arg(format!("-I{bundled}"))
        .arg(format!("-o{}", set.display()))
        .arg("inventory.proto")
        .output()
        .unwrap();
    assert!(out.status.success(), "protoc: {}", String::from_utf8_lossy(&out.stderr));

    let Some((_server, port)) =
        crate::support::python_peer("grpcio_server.py", &[set.to_str().unwrap()]).await
    else {
        return;
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    for descriptors in ["{ reflection: true }".to_owned(), format!("{{ descriptor_set: {} }}", set.display())]
    {
        let yaml = format!(
            r#"
upstreams:
  shop:
    targets: [{{ url: "http://{addr}" }}]
    protocol: h2c
grpc:
  services:
    inventory:
      upstream: shop
      descriptors: {descriptors}
routes:
  - name: shop
    match: {{ path_prefix: /shop }}
    grpc_transcode: {{ service: inventory }}
"#
        );
        let gw = Gateway::start(&yaml).await;
        let got = call(&gw, "GET", "/shop/v1/items/sku-1", None).await;
        assert_eq!(got.status, 200, "{descriptors}: {}", String::from_utf8_lossy(&got.body));
        assert_eq!(
            got.json(),
            json!({"sku": "sku-1", "name": "rotor", "quantity": "12", "price": {"units": "4", "currency": "EUR"}})
        );
        let got = call(&gw, "GET", "/shop/v1/items/sku-9", None).await;
        let p = got.assert_problem(404, "no item sku-9");
        assert_eq!(p["grpc_code"], "NOT_FOUND");
        let got = call(&gw, "GET", "/shop/v1/items?min_quantity=5", None).await;
        let lines: Vec<Value> =
            String::from_utf8_lossy(&got.body).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{descriptors}");
        assert_eq!(lines[0]["sku"], "sku-1");
        let admin = get(&gw.admin_url("/admin/grpc")).await.json();
        let origin = if descriptors.contains("reflection") { "reflection" } else { "descriptor_set" };
        assert_eq!(admin["services"][0]["origin"], origin);
    }
}

#[tokio::test]
async fn a_reflected_schema_is_kept_and_serves_when_the_server_cannot_be_asked() {
    let state = tempfile::tempdir().unwrap();
    let with_state = |addr: SocketAddr| {
        format!(
            "{}state:\n  url: sqlite://{}/state.db\n",
            config(addr, "{ reflection: true }", ""),
            state.path().display()
        )
    };
    let server = DemoServer::start(true).await;
    let addr = server.addr;
    let gw = Gateway::start(&with_state(addr)).await;
    assert_eq!(call(&gw, "GET", "/rest/v1/drones/d-1", None).await.status, 200);
    // Asked again: nothing changed.
    let r =
        send(&client(), Request::post(gw.admin_url("/admin/grpc/telemetry/refresh")).body(empty()).unwrap())
            .await;
    assert_eq!(r.json(), json!({"status": "unchanged"}));
    gw.shutdown().await;
    drop(server);

    // The server is gone: a restart serves the stored schema, and a refresh says why it failed.
    let gw = Gateway::start(&with_state(addr)).await;
    let admin = get(&gw.admin_url("/admin/grpc")).await.json();
    assert_eq!(admin["services"][0]["origin"], "stored");
    let got = call(&gw, "GET", "/rest/v1/drone/d-1", None).await;
    got.assert_problem(404, "GET /rest/v1/drones/{drone_id}");
    let got = call(&gw, "GET", "/rest/v1/drones/d-1", None).await;
    assert_eq!(got.status, 502, "{}", String::from_utf8_lossy(&got.body));
    let r =
        send(&client(), Request::post(gw.admin_url("/admin/grpc/telemetry/refresh")).body(empty()).unwrap())
            .await;
    r.assert_problem(502, "gRPC service `telemetry`: reflection call failed");
    let r =
        send(&client(), Request::post(gw.admin_url("/admin/grpc/nope/refresh")).body(empty()).unwrap()).await;
    r.assert_problem(404, "no gRPC service `nope`");
    gw.shutdown().await;

    // Without a stored copy, a server that cannot be asked fails the start, naming the service.
    let plain = DemoServer::start(false).await;
    let err = Gateway::start_error(&config(plain.addr, "{ reflection: true }", "")).await;
    assert!(
        err.contains("grpc.services.telemetry.descriptors.reflection")
            && err.contains("no schema for gRPC service `telemetry`: the server does not offer reflection"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refresh_picks_up_a_changed_schema_and_names_what_broke() {
    // A server whose reflection serves a schema with fewer methods than the demo has.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first =
        tokio::spawn(demo::serve(listener, demo::Options { reflection: true }, std::future::pending()));
    let gw = Gateway::start(&config(addr, "{ reflection: true }", "")).await;
    assert_eq!(call(&gw, "GET", "/rest/v1/drones/d-1", None).await.status, 200);
    // The same address now serves another schema (the Python peer's would do; a smaller one
    // is served here by a reflection over a reduced copy of the demo's).
    first.abort();
    let _ = first.await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(demo::serve_with(
        listener,
        demo::Options { reflection: true },
        reduced_schema(),
        std::future::pending(),
    ));
    let r =
        send(&client(), Request::post(gw.admin_url("/admin/grpc/telemetry/refresh")).body(empty()).unwrap())
            .await;
    let v = r.json();
    assert_eq!(v["status"], "updated", "{v}");
    assert!(
        v["broken"].as_array().unwrap().iter().any(|b| b == "drone.v1.Telemetry.Sleep was removed"),
        "{v}"
    );
    let got = call(&gw, "POST", "/rest/drone.v1.Telemetry/Sleep", Some(json!({}))).await;
    got.assert_problem(
        404,
        "no method of gRPC service `telemetry` is bound to POST /rest/drone.v1.Telemetry/Sleep",
    );
}

/// The demo schema without its `Sleep` method.
fn reduced_schema() -> Vec<u8> {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(demo::DESCRIPTORS).unwrap();
    for f in &mut set.file {
        for s in &mut f.service {
            s.method.retain(|m| m.name() != "Sleep");
        }
    }
    set.encode_to_vec()
}

#[tokio::test]
async fn a_patch_fills_the_update_mask_from_the_body_and_deadlines_hold() {
    let server = DemoServer::start(true).await;
    let extra = "";
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", extra)).await;
    // Only the fields sent change: the mask is the body's keys.
    let got =
        call(&gw, "PATCH", "/rest/v1/drones/d-1", Some(json!({"battery": 0.5, "tags": ["patched"]}))).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let d = got.json();
    assert_eq!(
        (d["battery"].clone(), d["tags"].clone(), d["mode"].clone()),
        (json!(0.5), json!(["patched"]), json!("HOVER"))
    );
    // Nested fields are named down to the field sent: the server sees `position.lat`.
    let got = call(&gw, "PATCH", "/rest/v1/drones/d-1", Some(json!({"position": {"lat": 1.0}}))).await;
    got.assert_problem(400, "`position.lat` cannot be updated");
    // A mask given in the query wins.
    let got = call(
        &gw,
        "PATCH",
        "/rest/v1/drones/d-1?update_mask=mode",
        Some(json!({"battery": 0.1, "mode": "LANDING"})),
    )
    .await;
    let d = got.json();
    assert_eq!((d["battery"].clone(), d["mode"].clone()), (json!(0.5), json!("LANDING")));
    gw.shutdown().await;

    // The upstream's request timeout is the call's deadline.
    let yaml = config(server.addr, "{ reflection: true }", "")
        .replace("protocol: h2c", "protocol: h2c\n    timeouts: { request: 300ms }");
    let gw = Gateway::start(&yaml).await;
    let got = call(&gw, "POST", "/rest/drone.v1.Telemetry/Sleep", Some(json!({"duration": "5s"}))).await;
    assert_eq!(got.status, 504, "{}", String::from_utf8_lossy(&got.body));
    let got = call(&gw, "POST", "/rest/drone.v1.Telemetry/Sleep", Some(json!({"duration": "0.01s"}))).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_path_takes_its_bindings_but_never_a_grpc_call() {
    let server = DemoServer::start(true).await;
    let yaml = format!(
        r#"
upstreams:
  drones:
    targets: [{{ url: "http://{addr}" }}]
    protocol: h2c
  other:
    targets: [{{ url: "http://{addr}" }}]
    protocol: h2c
grpc:
  services:
    telemetry:
      upstream: drones
      descriptors: {{ reflection: true }}
      services: [drone.v1.Telemetry]
routes:
  - name: json
    match: {{}}
    grpc_transcode: {{ service: telemetry }}
  - name: grpc
    match: {{ grpc_service: drone.v1.Telemetry }}
    upstream: drones
  - name: v1
    match: {{ path_prefix: /v1/drones/d-2 }}
    upstream: other
"#,
        addr = server.addr
    );
    let gw = Gateway::start(&yaml).await;
    // JSON on a binding's path is transcoded.
    let got = call(&gw, "GET", "/v1/drones/d-1", None).await;
    assert_eq!(got.json()["droneId"], "d-1");
    // A route with a path prefix ranks first: its paths are not the bindings'.
    let got = call(&gw, "GET", "/v1/drones/d-2", None).await;
    assert_ne!(got.header("content-type"), "application/json", "{}", String::from_utf8_lossy(&got.body));
    // A path no binding takes is not this route's.
    call(&gw, "GET", "/v2/anything", None).await.assert_problem(404, "no route matches GET /v2/anything");
    // A gRPC call goes to the gRPC route, though the JSON route has a binding on its path.
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("t.pb");
    std::fs::write(&set, demo::DESCRIPTORS).unwrap();
    let addr = gw.addr.to_string();
    let (code, out, err) = cli(
        &[
            "grpc",
            "call",
            "--plaintext",
            &addr,
            "--protoset",
            set.to_str().unwrap(),
            "drone.v1.Telemetry/GetStatus",
            "-d",
            r#"{"droneId": "d-1"}"#,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["droneId"], "d-1");
    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let order: Vec<&str> =
        routes["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["grpc", "v1", "json"], "longer prefixes first, the bindings-only route last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_writes_only_below_its_directory() {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(demo::DESCRIPTORS).unwrap();
    for f in &mut set.file {
        if f.name() == "demo/drone/v1/telemetry.proto" {
            f.name = Some("../../escaped.proto".into());
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(demo::serve_with(
        listener,
        demo::Options { reflection: true },
        set.encode_to_vec(),
        std::future::pending(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b");
    let (code, _, err) =
        cli(&["grpc", "export", "--plaintext", &addr, "--out", out.to_str().unwrap()], "").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`../../escaped.proto`, which is not a relative path without `..`"), "{err}");
    assert!(!dir.path().join("escaped.proto").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_transcoded_routes_and_validates() {
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let doc = get(&gw.admin_url("/admin/grpc/telemetry/openapi.json")).await;
    assert_eq!(doc.status, 200, "{}", String::from_utf8_lossy(&doc.body));
    let v = doc.json();
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/rest/v1/drones/{drone_id}"]["get"].is_object(), "mounted at the route's prefix");
    let own = get(&gw.admin_url("/admin/grpc/telemetry/openapi.json?route=own-paths")).await.json();
    assert!(own["paths"]["/v1/drones/{drone_id}"]["get"].is_object());
    get(&gw.admin_url("/admin/grpc/telemetry/openapi.json?route=nope"))
        .await
        .assert_problem(404, "no grpc_transcode route `nope`");
    get(&gw.admin_url("/admin/grpc/nope/openapi.json")).await.assert_problem(404, "no gRPC service `nope`");

    // The command gives the same document from the config (its server's reflection).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridgehead.yaml");
    std::fs::write(&cfg, config(server.addr, "{ reflection: true }", "")).unwrap();
    let (code, out, err) = cli(&["grpc", "openapi", "telemetry", "-c", cfg.to_str().unwrap()], "").await;
    assert_eq!(code, 0, "{err}");
    let from_cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(from_cli["paths"], v["paths"]);

    // An independent validator agrees it is OpenAPI 3.1.
    let Some(python) = crate::support::python() else { return };
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    let check = std::process::Command::new(python)
        .args(["-c", "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// The frames of a gRPC-Web answer: (flag, payload).
fn web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "a cut-off frame");
    out
}

#[tokio::test]
async fn grpc_web_calls_from_browsers_are_translated_to_grpc() {
    use base64::Engine as _;
    use demo::generated::drone::v1::{DroneStatus, GetStatusRequest};
    use prost::Message as _;
    let server = DemoServer::start(true).await;
    let gw = Gateway::start(&config(server.addr, "{ reflection: true }", "")).await;
    let framed = |id: &str| {
        let msg = GetStatusRequest { drone_id: id.into() }.encode_to_vec();
        let mut b = vec![0u8];
        b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        b.extend_from_slice(&msg);
        b
    };
    let web = |ct: &'static str, body: Vec<u8>| {
        Request::post(gw.url("/drone.v1.Telemetry/GetStatus"))
            .header("content-type", ct)
            .header("x-grpc-web", "1")
            .body(full(body))
            .unwrap()
    };
    // Binary, over HTTP/1.1: the message, then the trailers as the last frame.
    let got = send(&client(), web("application/grpc-web+proto", framed("d-1"))).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "application/grpc-web+proto");
    let frames = web_frames(&got.body);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(DroneStatus::decode(&frames[0].1[..]).unwrap().drone_id, "d-1");
    assert_eq!(frames[1].0, 0x80);
    assert!(String::from_utf8_lossy(&frames[1].1).contains("grpc-status: 0\r\n"));

    // Text: base64 both ways; a failed status arrives in the trailer frame.
    let b64 = base64::engine::general_purpose::STANDARD;
    let got =
        send(&client(), web("application/grpc-web-text", b64.encode(framed("nope")).into_bytes())).await;
    assert_eq!(got.header("content-type"), "application/grpc-web-text+proto");
    // The server answered trailers-only: gRPC-Web allows the status in the head.
    assert!(got.body.is_empty());
    assert_eq!(got.header("grpc-status"), "5");
    assert!(got.header("grpc-message").starts_with("no%20drone"), "{:?}", got.headers);
    // A stream's failure after messages arrives in the trailer frame.
    let req = demo::generated::drone::v1::StreamPositionsRequest {
        drone_id: "d-1".into(),
        count: 3,
        fail_after: 1,
        interval_ms: 0,
    };
    let msg = req.encode_to_vec();
    let mut framed_stream = vec![0u8];
    framed_stream.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed_stream.extend_from_slice(&msg);
    let req = Request::post(gw.url("/drone.v1.Telemetry/StreamPositions"))
        .header("content-type", "application/grpc-web-text")
        .body(full(b64.encode(framed_stream)))
        .unwrap();
    let got = send(&client(), req).await;
    let raw = bridgehead_grpc::web::request(
        bridgehead_grpc::web::Mode::Text,
        &mut http::HeaderMap::new(),
        got.body.clone(),
    )
    .unwrap()
    .to_vec();
    let frames = web_frames(&raw);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let trailers = String::from_utf8_lossy(&frames[1].1).into_owned();
    assert!(trailers.contains("grpc-status: 14\r\n"), "{trailers}");

    // Malformed text is refused, as a gRPC-Web status.
    let got = send(&client(), web("application/grpc-web-text", b"!!!".to_vec())).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "application/grpc-web-text+proto");
    assert_eq!(got.header("grpc-status"), "13");
    assert!(got.header("grpc-message").contains("not base64"), "{:?}", got.headers);
    // gRPC-Web calls are counted with the status of their trailer frame.
    let line = r#"bridgehead_grpc_requests_total{route="grpc",service="drone.v1.Telemetry",method="GetStatus",code="OK"} 1"#;
    bridgehead_testkit::eventually(5, line, async || gw.metrics().await.contains(line)).await;
    let line = r#"bridgehead_grpc_requests_total{route="grpc",service="drone.v1.Telemetry",method="StreamPositions",code="UNAVAILABLE"} 1"#;
    bridgehead_testkit::eventually(5, line, async || gw.metrics().await.contains(line)).await;

    // A gRPC call on a transcoding route's path, with no gRPC route for it: UNIMPLEMENTED, as gRPC.
    let req = Request::post(gw.url("/rest/v1/drones/d-1"))
        .header("content-type", "application/grpc")
        .body(full(framed("d-1")))
        .unwrap();
    let got = send(&bridgehead_testkit::h2c_client(), req).await;
    assert_eq!((got.status, got.header("grpc-status")), (200, "12"), "{:?}", got.headers);
}

#[tokio::test]
async fn messages_over_max_message_size_are_refused_both_ways() {
    let server = DemoServer::start(true).await;
    let yaml = config(server.addr, "{ reflection: true }\n      max_message_size: 1KiB", "");
    let gw = Gateway::start(&yaml).await;
    // A request message over the limit: 413, nothing sent.
    let big = "t".repeat(2000);
    let got = call(&gw, "PATCH", "/rest/v1/drones/d-1", Some(json!({"tags": [big]}))).await;
    got.assert_problem(413, "over the limit of 1024 (grpc.services.telemetry.max_message_size)");
    // A request under the limit whose answer is over it: 502, naming the limit.
    let tags = "t".repeat(960);
    let got = call(&gw, "PATCH", "/rest/v1/drones/d-1", Some(json!({"tags": [tags]}))).await;
    got.assert_problem(502, "a response message of");
    assert!(String::from_utf8_lossy(&got.body).contains("max_message_size"));
}

#[tokio::test]
async fn a_proxied_calls_grpc_timeout_is_capped_by_the_upstream_timeout() {
    let peer = bridgehead_testkit::h2peer::H2Peer::start().await;
    let yaml = format!(
        r#"
upstreams:
  peer:
    targets: [{{ url: "{}" }}]
    protocol: h2c
    timeouts: {{ request: 2s }}
routes:
  - name: grpc
    match: {{ grpc_service: echo.v1.Echo }}
    upstream: peer
"#,
        peer.url()
    );
    let gw = Gateway::start(&yaml).await;
    let echo = async |timeout: Option<&str>| {
        let mut req = Request::post(gw.url("/echo.v1.Echo/Say")).header("content-type", "application/grpc");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        let got =
            send(&bridgehead_testkit::h2c_client(), req.body(full(&b"\x00\x00\x00\x00\x00"[..])).unwrap())
                .await;
        got.json()["grpc_timeout"].clone()
    };
    assert_eq!(echo(Some("10S")).await, json!("2000m"), "capped at timeouts.request");
    assert_eq!(echo(Some("500m")).await, json!("500m"), "a shorter deadline is kept");
    assert_eq!(echo(Some("bogus")).await, json!("2000m"), "a malformed one is replaced");
    assert_eq!(echo(None).await, Value::Null, "no deadline is added");
}

/// A TCP relay whose connections can all be cut at once: an upstream that dies.
struct Relay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let held = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                held.lock().unwrap().push(conn);
            }
        });
        Relay { addr, task, conns }
    }

    /// Closes every connection and stops accepting.
    fn cut(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_the_stream_with_an_error() {
    use http_body_util::BodyExt as _;
    let server = DemoServer::start(true).await;
    let relay = Relay::start(server.addr).await;
    let gw = Gateway::start(&config(relay.addr, "{ reflection: true }", "")).await;
    let req =
        Request::get(gw.url("/rest/v1/drones/d-1/positions?count=50&interval_ms=50")).body(empty()).unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    // The first position arrives, then the upstream dies.
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    let line: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["seq"], 1);
    relay.cut();
    let rest = body.collect().await.unwrap().to_bytes();
    let last = String::from_utf8_lossy(&rest).lines().last().unwrap_or_default().to_owned();
    let err: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    assert_eq!(err["error"]["grpc_code"], "UNAVAILABLE", "{err}");
    assert_eq!(err["error"]["detail"], "the upstream stream broke off");
    assert!(String::from_utf8_lossy(&rest).lines().count() < 50, "the stream ended early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_grpc_call_gets_resource_exhausted_with_retry_info() {
    let server = DemoServer::start(true).await;
    let extra = "    rate_limit: { key: ip, rate: 1/m, burst: 1 }\n";
    let yaml = config(server.addr, "{ reflection: true }", "").replace(
        "    match: { grpc_service: drone.v1.Telemetry }\n    upstream: drones\n",
        &format!("    match: {{ grpc_service: drone.v1.Telemetry }}\n    upstream: drones\n{extra}"),
    );
    assert!(yaml.contains("rate: 1/m"));
    let gw = Gateway::start(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("t.pb");
    std::fs::write(&set, demo::DESCRIPTORS).unwrap();
    let addr = gw.addr.to_string();
    let args = [
        "grpc",
        "call",
        "--plaintext",
        &addr,
        "--protoset",
        set.to_str().unwrap(),
        "drone.v1.Telemetry/GetStatus",
        "-d",
        r#"{"droneId": "d-1"}"#,
    ];
    let (code, _, err) = cli(&args, "").await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&args, "").await;
    assert_eq!(code, 64 + 8, "{err}");
    assert!(err.contains("Code: RESOURCE_EXHAUSTED"), "{err}");
    assert!(err.contains("type.googleapis.com/google.rpc.RetryInfo") && err.contains("retryDelay"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_a_tls_upstream_that_requires_a_client_certificate() {
    // Gateway A: a TLS listener that requires a client certificate, proxying gRPC to the demo.
    let server = DemoServer::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert =
        rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&server_key, &ca).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert =
        rcgen::CertificateParams::new(vec!["gateway-b".into()]).unwrap().signed_by(&client_key, &ca).unwrap();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client_cert.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let a = Gateway::start(&format!(
        r#"
server:
  tls: {{ cert: {d}/server.pem, key: {d}/server.key, client_ca: {d}/ca.pem, client_auth: required }}
upstreams:
  drones:
    targets: [{{ url: "http://{}" }}]
    protocol: h2c
routes:
  - name: grpc
    match: {{ grpc_service: drone.v1.Telemetry }}
    upstream: drones
  - name: reflection
    match: {{ grpc_service: grpc.reflection.v1.ServerReflection }}
    upstream: drones
"#,
        server.addr
    ))
    .await;
    // Gateway B: JSON transcoded to gRPC over TLS with its client certificate, the schema from
    // reflection through A.
    let b_yaml = |tls: &str| {
        format!(
            r#"
upstreams:
  secure:
    targets: [{{ url: "https://localhost:{port}" }}]
    protocol: h2
    tls: {tls}
grpc:
  services:
    telemetry:
      upstream: secure
      descriptors: {{ reflection: true }}
routes:
  - name: rest
    match: {{ path_prefix: /rest }}
    grpc_transcode: {{ service: telemetry }}
"#,
            port = a.addr.port()
        )
    };
    let b =
        Gateway::start(&b_yaml(&format!("{{ ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client.key }}")))
            .await;
    let got = call(&b, "GET", "/rest/v1/drones/d-1", None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["droneId"], "d-1");
    // The CLI over TLS with the same certificate.
    let addr = format!("localhost:{}", a.addr.port());
    let (ca_pem, cert, key) = (format!("{d}/ca.pem"), format!("{d}/client.pem"), format!("{d}/client.key"));
    let (code, out, err) = cli(
        &[
            "grpc",
            "call",
            &addr,
            "--cacert",
            &ca_pem,
            "--cert",
            &cert,
            "--key",
            &key,
            "drone.v1.Telemetry/GetStatus",
            "-d",
            r#"{"droneId": "d-2"}"#,
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["mode"], "IDLE");
    // Without the client certificate, the handshake is refused: no schema, a clear start error.
    let err = Gateway::start_error(&b_yaml(&format!("{{ ca: {d}/ca.pem }}"))).await;
    assert!(err.contains("no schema for gRPC service `telemetry`"), "{err}");
}

#[tokio::test]
async fn an_upstream_answer_without_a_grpc_status_maps_as_the_grpc_spec_says() {
    // An HTTP/2 server that answers JSON, not gRPC.
    let peer = bridgehead_testkit::h2peer::H2Peer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.pb"), demo::DESCRIPTORS).unwrap();
    let yaml = format!(
        r#"
upstreams:
  peer:
    targets: [{{ url: "{}" }}]
    protocol: h2c
grpc:
  services:
    telemetry:
      upstream: peer
      descriptors: {{ descriptor_set: {}/t.pb }}
routes:
  - name: rest
    match: {{ path_prefix: /rest }}
    grpc_transcode: {{ service: telemetry }}
"#,
        peer.url(),
        dir.path().display()
    );
    let gw = Gateway::start(&yaml).await;
    let got = call(&gw, "GET", "/rest/v1/drones/d-1", None).await;
    let p = got.assert_problem(500, "answered HTTP 200, not a gRPC status");
    assert_eq!(p["grpc_code"], "UNKNOWN");
}
