//! SOAP services as JSON: a real spyne server (SOAP 1.1 and 1.2, WS-Security) behind `soap`
//! routes, answers compared with what the independent client zeep gets; WSDL fixtures (rpc/literal)
//! against a recording peer; the WSDL kept in the state store; `bridgehead soap`; config errors.

use bridgehead_testkit::{Gateway, Got, Peer, client, full, get, send};
use http::{Request, Response};
use serde_json::{Value, json};

use crate::support::{bridgehead, python, python_peer};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../soap/tests/fixtures");

/// POST `body` to the gateway's `path`.
async fn call(gw: &Gateway, path: &str, body: Value) -> Got {
    let req = Request::post(gw.url(path))
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    send(&client(), req).await
}

/// What zeep gets for the same call: `{"result": …}` or `{"fault": …}`.
async fn zeep(args: Vec<String>) -> Value {
    let python = python().expect("python peers");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers/zeep_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).args(args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "zeep: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Decimals compare as numbers: zeep gives them as strings ("21.00"), the gateway as numbers.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Number(a), Value::String(b)) => b.parse::<f64>().is_ok_and(|b| a.as_f64() == Some(b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        (a, b) => a == b,
    }
}

fn config(port: u16, extra_service: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  billing:
    targets: [{{ url: "http://127.0.0.1:{port}" }}]
soap:
  services:
    billing:
      upstream: billing
      wsdl: "http://127.0.0.1:{port}/?wsdl"
{extra_service}
routes:
  - {{ name: billing, match: {{ path_prefix: /billing }}, soap: {{ service: billing }} }}
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spyne_service_answers_as_json_what_zeep_gets_as_objects() {
    let Some((_spyne, port)) = python_peer("spyne_server.py", &[]).await else { return };
    let gw = Gateway::start(&config(port, "", "")).await;
    let wsdl = format!("http://127.0.0.1:{port}/?wsdl");
    let address = gw.url("/unused");

    // GetInvoice: the same invoice as zeep reads.
    let got = call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-1"})).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), "application/json");
    let ours = got.json();
    let theirs = zeep(vec![wsdl.clone(), "GetInvoice".into(), r#"{"invoice_id": "inv-1"}"#.into()]).await;
    assert!(same(&ours, &theirs["result"]), "ours {ours:#}\nzeep {theirs:#}");
    assert_eq!(ours["total"], 21);
    assert_eq!(ours["lines"]["Line"][0]["price"], 4.5);
    // The SOAPAction the WSDL names went with it.
    let last = call(&gw, "/billing/LastRequest", json!({})).await.json();
    let last: Value = serde_json::from_str(last.as_str().unwrap()).unwrap();
    assert_eq!(last["soapaction"], "\"GetInvoice\"");
    assert!(last["content_type"].as_str().unwrap().starts_with("text/xml"));

    // ListInvoices with an enum filter: the wrapper's one child, its array as zeep's list.
    let got = call(&gw, "/billing/ListInvoices", json!({"status": "paid"})).await;
    assert_eq!(got.status, 200);
    let theirs = zeep(vec![wsdl.clone(), "ListInvoices".into(), r#"{"status": "paid"}"#.into()]).await;
    assert!(same(&got.json()["Invoice"], &theirs["result"]), "{:#}\n{theirs:#}", got.json());

    // CreateInvoice: nested types, an array, a date; then read back.
    let created = call(
        &gw,
        "/billing/CreateInvoice",
        json!({"customer": {"name": "Alan", "email": "alan@example.com"}, "lines": {"Line": [{"sku": "s-9", "quantity": 3, "price": "2.50"}]}, "due": "2024-07-01"}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let c = created.json();
    assert_eq!(
        (c["id"].as_str(), c["total"].as_f64(), c["due"].as_str()),
        (Some("inv-3"), Some(7.5), Some("2024-07-01")),
        "{c:#}"
    );
    let again = call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-3"})).await.json();
    assert_eq!(again["customer"]["name"], "Alan");

    // Faults: the caller's is 422, the service's 502, with the fault's parts.
    let got = call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-404"})).await;
    let p = got.assert_problem(422, "no invoice inv-404");
    assert_eq!(p["type"], "urn:bridgehead:problem:soap-fault");
    assert_eq!(p["faultcode"], "soap11env:Client.NotFound");
    assert_eq!(p["fault_detail"], json!({"NotFound": {"invoice_id": "inv-404"}}));
    let theirs = zeep(vec![wsdl.clone(), "GetInvoice".into(), r#"{"invoice_id": "inv-404"}"#.into()]).await;
    assert_eq!(theirs["fault"]["code"], p["faultcode"]);
    assert_eq!(theirs["fault"]["message"], p["faultstring"]);
    let got = call(&gw, "/billing/Fail", json!({"reason": "disk full"})).await;
    let p = got.assert_problem(502, "disk full");
    assert_eq!(p["faultcode"], "soap11env:Server");

    // Refused before the service: the field, the type expected; the service saw nothing.
    let got = call(&gw, "/billing/CreateInvoice", json!({"customer": {"name": "A"}, "lines": {"Line": [{"sku": "x", "quantity": "many", "price": "1"}]}})).await;
    let p = got.assert_problem(400, "/lines/Line/0/quantity");
    assert_eq!(
        (p["pointer"].as_str(), p["expected"].as_str()),
        (Some("/lines/Line/0/quantity"), Some("xs:integer"))
    );
    call(&gw, "/billing/ListInvoices", json!({"status": "lost"}))
        .await
        .assert_problem(400, "`lost` is not one of draft, sent, paid");
    call(&gw, "/billing/GetInvoice", json!({"invoice": "inv-1"}))
        .await
        .assert_problem(400, "unknown field `invoice`");
    let bad = Request::post(gw.url("/billing/GetInvoice")).body(full("{not json")).unwrap();
    send(&client(), bad).await.assert_problem(400, "the body is not JSON");
    let last = call(&gw, "/billing/LastRequest", json!({})).await.json();
    let last: Value = serde_json::from_str(last.as_str().unwrap()).unwrap();
    assert_eq!(last["soapaction"], "\"Fail\"", "the refused requests never reached the service");

    // Unknown operations are listed; operations take POST.
    let p = call(&gw, "/billing/Nope", json!({})).await.assert_problem(404, "has no operation `Nope`");
    assert_eq!(
        p["operations"],
        json!(["GetInvoice", "ListInvoices", "CreateInvoice", "Fail", "LastRequest"])
    );
    let got = get(&gw.url("/billing/GetInvoice")).await;
    got.assert_problem(405, "use POST");
    assert_eq!(got.header("allow"), "POST");

    // The OpenAPI document of the facade, checked by an independent validator.
    let doc = get(&gw.url("/billing/openapi.json")).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/billing/CreateInvoice"]["post"].is_object());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    let check = std::process::Command::new(python().unwrap())
        .args(["-c", "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    drop(address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_12_with_a_ws_security_digest_reaches_a_service_that_checks_it() {
    let Some((_spyne, port)) =
        python_peer("spyne_server.py", &["--soap", "12", "--username", "svc", "--password", "s3cret"]).await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret").unwrap();
    for (digest, password) in [(true, "s3cret"), (false, "s3cret"), (true, "wrong")] {
        std::fs::write(&pw, password).unwrap();
        let security = format!(
            "      ws_security: {{ username: svc, password: \"${{file:{}}}\", digest: {digest} }}",
            pw.display()
        );
        let gw = Gateway::start(&config(port, &security, "")).await;
        let got = call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-2"})).await;
        if password == "wrong" {
            let p = got.assert_problem(422, "");
            assert_eq!(p["code"], "soap12env:Sender", "{p:#}");
            assert!(p["subcodes"].to_string().contains("Authentication"), "{p:#}");
            continue;
        }
        assert_eq!(got.status, 200, "digest {digest}: {}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.json()["customer"]["name"], "Grace Hopper");
        assert_eq!(got.json()["note"], Value::Null);
        let last = call(&gw, "/billing/LastRequest", json!({})).await.json();
        let last: Value = serde_json::from_str(last.as_str().unwrap()).unwrap();
        assert_eq!(last["content_type"], "application/soap+xml; charset=utf-8; action=\"GetInvoice\"");
        let envelope = last["envelope"].as_str().unwrap_or("");
        assert!(
            envelope.is_empty() || !envelope.contains("s3cret") || !digest,
            "a digest never carries the password"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_wsdl_is_kept_and_serves_when_its_url_is_gone() {
    let state = tempfile::tempdir().unwrap();
    let store = format!("state:\n  url: sqlite://{}/state.db\n", state.path().display());
    let port = {
        let Some((_spyne, port)) = python_peer("spyne_server.py", &[]).await else { return };
        let gw = Gateway::start(&config(port, "", &store)).await;
        assert_eq!(call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-1"})).await.status, 200);
        gw.shutdown().await;
        port
    };
    // The server is gone: the stored copy serves the facade; calls fail as the upstream does.
    let gw = Gateway::start(&config(port, "", &store)).await;
    let doc = get(&gw.url("/billing/openapi.json")).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/billing/GetInvoice"].is_object());
    let got = call(&gw, "/billing/GetInvoice", json!({"invoice_id": "inv-1"})).await;
    assert_eq!(got.status, 502, "{}", String::from_utf8_lossy(&got.body));
    gw.shutdown().await;
    // Without a copy, the start fails naming the service.
    let err = Gateway::start_error(&config(port, "", "")).await;
    assert!(
        err.contains("soap.services.billing.wsdl") && err.contains("no WSDL for SOAP service `billing`"),
        "{err}"
    );
}

/// A peer that answers every POST with `answer` and keeps the requests' bodies.
async fn recording_peer(
    answer: &'static str,
    status: u16,
) -> (Peer, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let peer = Peer::start(move |req| {
        let body = req.body().clone();
        kept.lock().unwrap().push(format!(
            "{}\n{}",
            req.headers().get("soapaction").and_then(|v| v.to_str().ok()).unwrap_or(""),
            String::from_utf8_lossy(&body)
        ));
        Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(bytes::Bytes::from_static(answer.as_bytes()))
            .unwrap()
    })
    .await;
    (peer, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_literal_wraps_parameters_in_the_body_namespace_and_reads_the_parts_back() {
    let (peer, seen) = recording_peer(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r:PriceResponse xmlns:r="urn:bridgehead:test:calc:rpc"><total>12.50</total><accepted>true</accepted></r:PriceResponse></s:Body></s:Envelope>"#,
        200,
    )
    .await;
    let yaml = format!(
        "upstreams:\n  calc:\n    targets: [{{ url: \"{}\" }}]\nsoap:\n  services:\n    calc:\n      upstream: calc\n      wsdl: {FIXTURES}/rpc-literal.wsdl\nroutes:\n  - {{ name: calc, match: {{ path_prefix: /calc }}, soap: {{ service: calc }} }}\n",
        peer.url("")
    );
    let gw = Gateway::start(&yaml).await;
    let got = call(&gw, "/calc/Price", json!({"symbol": "ACME", "quantity": 5, "unitPrice": 2.5, "discounted": false, "settle": "2024-05-01"})).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json(), json!({"total": 12.5, "accepted": true}));
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    let (action, body) = sent.split_once('\n').unwrap();
    assert_eq!(action, "\"urn:bridgehead:test:calc#Price\"");
    let doc = roxmltree::Document::parse(body).unwrap();
    let wrapper =
        doc.descendants().find(|n| n.has_tag_name(("urn:bridgehead:test:calc:rpc", "Price"))).expect(body);
    let parts: Vec<(Option<&str>, &str, Option<&str>)> = wrapper
        .children()
        .filter(roxmltree::Node::is_element)
        .map(|c| (c.tag_name().namespace(), c.tag_name().name(), c.text()))
        .collect();
    assert_eq!(
        parts,
        [
            (None, "symbol", Some("ACME")),
            (None, "quantity", Some("5")),
            (None, "unitPrice", Some("2.5")),
            (None, "discounted", Some("false")),
            (None, "settle", Some("2024-05-01"))
        ]
    );
    // A missing parameter is refused before the peer; an answer that is not SOAP is a 502.
    let before = seen.lock().unwrap().len();
    call(&gw, "/calc/Add", json!({"a": 1})).await.assert_problem(400, "/b: missing");
    assert_eq!(seen.lock().unwrap().len(), before);
    let (html, _) = recording_peer("<html>maintenance</html>", 503).await;
    let yaml = yaml.replace(&peer.url(""), &html.url(""));
    let gw = Gateway::start(&yaml).await;
    call(&gw, "/calc/Add", json!({"a": 1, "b": 2}))
        .await
        .assert_problem(502, "HTTP 503: the answer is not a SOAP envelope");
}

#[tokio::test]
async fn soap_config_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: String| {
        let file = dir.path().join("bridgehead.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (code, out, err) = bridgehead(&["config", "check", file.to_str().unwrap()]);
        (code, (), format!("{out}{err}"))
    };
    let base = "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:9\" }]\n";
    let (code, _, err) = check(format!(
        "{base}soap:\n  services:\n    s:\n      upstream: u\n      wsdl: {FIXTURES}/rpc-literal.wsdl\nroutes:\n  - {{ name: a, match: {{ path: /x }}, soap: {{ service: s }} }}\n  - {{ name: b, match: {{ path_prefix: /y }}, soap: {{ service: nope }}, upstream: u }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("routes[0].match: a soap route needs path_prefix"), "{err}");
    assert!(err.contains("routes[1].soap.service: unknown SOAP service `nope`"), "{err}");
    assert!(
        err.contains("routes[1].upstream: a soap route takes its upstream from the SOAP service"),
        "{err}"
    );
    let (code, _, err) = check(format!(
        "{base}soap:\n  services:\n    s:\n      upstream: u\n      wsdl: {FIXTURES}/rpc-encoded.wsdl\nroutes:\n  - {{ name: a, match: {{ path_prefix: /x }}, soap: {{ service: s }} }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("soap.services.s.wsdl") && err.contains("uses SOAP encoding"), "{err}");
    let (code, _, err) = check(format!(
        "{base}soap:\n  services:\n    s:\n      upstream: u\n      wsdl: {FIXTURES}/rpc-literal.wsdl\n      safe_operations: [Add, Nope]\nroutes:\n  - {{ name: a, match: {{ path_prefix: /x }}, soap: {{ service: s }} }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("safe_operations: no operation `Nope`"), "{err}");
    let (code, _, err) = check(format!(
        "{base}soap:\n  services:\n    s:\n      upstream: u\n      wsdl: {FIXTURES}/missing.wsdl\nroutes:\n  - {{ name: a, match: {{ path_prefix: /x }}, soap: {{ service: s }} }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("missing.wsdl"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soap_command_describes_calls_and_writes_openapi() {
    let Some((_spyne, port)) = python_peer("spyne_server.py", &[]).await else { return };
    let wsdl = format!("http://127.0.0.1:{port}/?wsdl");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || bridgehead(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (code, out, err) = run(vec!["soap".into(), "describe".into(), wsdl.clone()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GetInvoice  (SOAPAction \"GetInvoice\")"), "{out}");
    let (code, out, err) = run(vec![
        "soap".into(),
        "call".into(),
        wsdl.clone(),
        "GetInvoice".into(),
        "-d".into(),
        r#"{"invoice_id":"inv-2"}"#.into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 9.9);
    let (code, out, _) = run(vec![
        "soap".into(),
        "call".into(),
        wsdl.clone(),
        "GetInvoice".into(),
        "-d".into(),
        r#"{"invoice_id":"x"}"#.into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["faultcode"], "soap11env:Client.NotFound");
    let (code, out, err) = run(vec![
        "soap".into(),
        "openapi".into(),
        format!("{FIXTURES}/imported/service.wsdl"),
        "--prefix".into(),
        "/catalog".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert!(doc["paths"]["/catalog/GetProduct"]["post"].is_object(), "{doc:#}");
    let (code, _, err) =
        run(vec!["soap".into(), "describe".into(), format!("{FIXTURES}/nope.wsdl")]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("nope.wsdl"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soap_route_takes_auth_rate_limits_idempotency_and_retries_only_safe_operations() {
    // A service whose first answer to each operation is a 503.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let kept = seen.clone();
    let peer = Peer::start(move |req| {
        let body = String::from_utf8_lossy(req.body()).into_owned();
        let op = if body.contains(":Add") { "Add" } else { "Price" };
        let mut seen = kept.lock().unwrap();
        let first = !seen.iter().any(|s| s == op);
        seen.push(op.to_owned());
        if first {
            return Response::builder().status(503).body(bytes::Bytes::from_static(b"busy")).unwrap();
        }
        let answer = if op == "Add" {
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r:AddResponse xmlns:r="urn:bridgehead:test:calc:rpc"><sum>3</sum></r:AddResponse></s:Body></s:Envelope>"#
        } else {
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r:PriceResponse xmlns:r="urn:bridgehead:test:calc:rpc"><total>1</total><accepted>true</accepted></r:PriceResponse></s:Body></s:Envelope>"#
        };
        Response::builder().status(200).header("content-type", "text/xml").body(bytes::Bytes::from_static(answer.as_bytes())).unwrap()
    })
    .await;
    let sha = bridgehead_auth::apikey::sha256_hex("k-1");
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"authenticators:
  keys:
    api_key: {{ keys: [{{ consumer: acme, sha256: "{sha}" }}] }}
upstreams:
  calc:
    targets: [{{ url: "{}" }}]
    retry: {{ attempts: 3, backoff: 10ms }}
soap:
  services:
    calc:
      upstream: calc
      wsdl: {FIXTURES}/rpc-literal.wsdl
      safe_operations: [Price]
routes:
  - name: calc
    match: {{ path_prefix: /calc }}
    soap: {{ service: calc }}
    auth: [keys]
    idempotency: {{ ttl: 1h }}
    rate_limit: {{ key: consumer, rate: 4/m }}
state:
  url: sqlite://{}/state.db
"#,
        peer.url(""),
        state.path().display()
    );
    let gw = Gateway::start(&yaml).await;
    let post = |op: &str, body: Value, key: Option<&str>| {
        let mut r = Request::post(gw.url(&format!("/calc/{op}"))).header("x-api-key", "k-1");
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.body(full(body.to_string())).unwrap()
    };
    // Auth first: no key, 401, and nothing sent.
    let anon = Request::post(gw.url("/calc/Add")).body(full("{}")).unwrap();
    assert_eq!(send(&client(), anon).await.status, 401);
    assert!(seen.lock().unwrap().is_empty());
    // A safe operation is retried past the 503; an unsafe one is not.
    let price =
        json!({"symbol": "A", "quantity": 1, "unitPrice": 1, "discounted": false, "settle": "2024-01-01"});
    let got = send(&client(), post("Price", price, None)).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let got = send(&client(), post("Add", json!({"a": 1, "b": 2}), Some("add-1"))).await;
    let p = got.assert_problem(502, "HTTP 503");
    assert_eq!(p["upstream_status"], 503);
    assert_eq!(seen.lock().unwrap().as_slice(), ["Price", "Price", "Add"]);
    // A 503 means the service did nothing: the key is free, and the same request goes again.
    let again = send(&client(), post("Add", json!({"a": 1, "b": 2}), Some("add-1"))).await;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
    assert_eq!(again.json(), json!(3));
    assert_eq!(seen.lock().unwrap().len(), 4);
    // Now answered, the key replays without calling again.
    let replay = send(&client(), post("Add", json!({"a": 1, "b": 2}), Some("add-1"))).await;
    assert_eq!(replay.header("idempotent-replayed"), "true");
    assert_eq!(seen.lock().unwrap().len(), 4);
    // The rate limit (4 a minute for the consumer) applies like on any route.
    let got = send(&client(), post("Add", json!({"a": 1, "b": 2}), None)).await;
    assert_eq!(got.status, 429, "{}", String::from_utf8_lossy(&got.body));
}
