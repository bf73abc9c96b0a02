//! `bridgehead collection export` run by the real Newman (npm) against the demo gateway: every
//! request's tests pass, the local issuer's token is fetched by the collection's own script,
//! API keys come from the environment, and the gRPC and SOAP routes are called with example
//! bodies made from their schemas.
//!
//! Skipped only with BRIDGEHEAD_SKIP_NEWMAN=1 (scripts/test installs newman into target/npm and
//! sets BRIDGEHEAD_NEWMAN).

use std::process::Command;

use crate::support::*;

#[test]
fn the_exported_collection_runs_green_in_newman_against_the_demo() {
    if std::env::var("BRIDGEHEAD_SKIP_NEWMAN").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_NEWMAN=1");
        return;
    }
    let newman = std::env::var("BRIDGEHEAD_NEWMAN").expect(
        "BRIDGEHEAD_NEWMAN: scripts/test installs newman and sets it; BRIDGEHEAD_SKIP_NEWMAN=1 skips",
    );
    // Nothing listens on the webhook listener's port: deliveries are retried in the background.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let Demo { child, mut lines, gateway, admin, .. } = Demo::start(&nobody);
    // Keep reading the demo's output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});

    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo.yaml");
    let (code, out, err) =
        bridgehead(&["collection", "export", "-c", demo, "--base-url", &gateway, "--admin-url", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
    let collection: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        collection["info"]["schema"],
        "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    );
    let folder = |name: &str| -> serde_json::Value {
        collection["item"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no folder {name}"))
    };
    // The local issuer's client secret and the API key are variables, left empty.
    assert!(!out.contains("demo-client-secret") && !out.contains("demo-partner-key"));
    let vars = collection["variable"].as_array().unwrap();
    for v in ["clientSecret", "apiKey_partners"] {
        assert!(vars.iter().any(|x| x["key"] == v && x["value"] == ""), "{v}: {vars:?}");
    }
    assert_eq!(folder("secure-orders")["item"][0]["request"]["auth"]["type"], "bearer");
    assert_eq!(folder("inventory-soap")["item"].as_array().unwrap().len(), 3, "{out}");
    assert!(collection["item"].as_array().unwrap().iter().all(|f| f["name"] != "drones-grpc"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collection.json");
    std::fs::write(&file, &out).unwrap();
    let report = dir.path().join("report.json");
    let run = Command::new(&newman)
        .arg("run")
        .arg(&file)
        .args([
            "--env-var",
            "clientSecret=demo-client-secret",
            "--env-var",
            "apiKey_partners=demo-partner-key",
        ])
        .args(["--reporters", "cli,json", "--reporter-json-export"])
        .arg(&report)
        .args(["--timeout-request", "10000", "--color", "off"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let stats = &report["run"]["stats"];
    assert_eq!(stats["assertions"]["failed"], 0, "{said}");
    assert!(stats["requests"]["total"].as_u64().unwrap() >= 15, "{said}");
    let code_of = |name: &str| -> u64 {
        report["run"]["executions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["item"]["name"] == name)
            .and_then(|e| e["response"]["code"].as_u64())
            .unwrap_or_else(|| panic!("no execution of {name}:\n{said}"))
    };
    // The local issuer's token (fetched by the collection's script) opens the secured route,
    // and the API key from the environment the intake.
    assert_eq!(code_of("GET /secure/orders"), 200, "{said}");
    assert_eq!(code_of("POST /secure/orders"), 200, "{said}");
    assert_eq!(code_of("publish an event"), 202, "{said}");
    // Example bodies from the schemas: the SOAP inventory and the transcoded gRPC service.
    assert_eq!(code_of("GetStock"), 200, "{said}");
    assert_eq!(code_of("drone.v1.Telemetry.ListDrones"), 200, "{said}");
    assert_eq!(code_of("drone.v1.Telemetry.ListDrones_2"), 200, "{said}");
    // The service has no drone "1": NOT_FOUND from the service itself (GetStatus_2 posts a
    // generated body: a malformed one is a 400 before the call).
    assert_eq!(code_of("drone.v1.Telemetry.GetStatus"), 404, "{said}");
    assert_eq!(code_of("drone.v1.Telemetry.GetStatus_2"), 404, "{said}");
    let bad_bodies: Vec<&str> = report["run"]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["response"]["code"] == 400)
        .map(|e| e["item"]["name"].as_str().unwrap_or(""))
        .collect();
    assert!(bad_bodies.is_empty(), "refused as malformed: {bad_bodies:?}\n{said}");
    // Nothing but the unsigned webhook was refused for want of credentials.
    for e in report["run"]["executions"].as_array().unwrap() {
        let name = e["item"]["name"].as_str().unwrap_or("");
        if e["response"]["code"] == 401 {
            assert!(name.contains("unsigned"), "{name} got 401:\n{said}");
        }
    }
    // --safe-only keeps only requests that change nothing.
    let (code, out, err) = bridgehead(&[
        "collection",
        "export",
        "-c",
        demo,
        "--base-url",
        &gateway,
        "--admin-url",
        &admin,
        "--safe-only",
    ]);
    assert_eq!(code, 0, "{err}");
    let safe: serde_json::Value = serde_json::from_str(&out).unwrap();
    let methods: Vec<&str> = safe["item"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["item"].as_array().unwrap().iter())
        .map(|i| i["request"]["method"].as_str().unwrap())
        .collect();
    assert!(methods.len() >= 8 && methods.iter().all(|m| *m == "GET"), "{methods:?}");
    assert!(said.contains("a refusal is problem+json"), "{said}");
    drop(child);
}
