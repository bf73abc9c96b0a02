//! End-to-end: `bridgehead webhook sign | verify` with published vectors, and interop both ways
//! with the official Standard Webhooks Python library (skipped only with BRIDGEHEAD_SKIP_PYTHON=1).

use crate::support::*;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn payload(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("payload.json");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn sign_prints_the_published_standard_webhooks_vector() {
    let dir = tempfile::tempdir().unwrap();
    let body = payload(dir.path(), r#"{"test": 2432232314}"#);
    let (code, out, err) = bridgehead(&[
        "webhook",
        "sign",
        "--scheme",
        "standard",
        "--secret",
        SW_SECRET,
        "--id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "--timestamp",
        "1614265330",
        "--payload",
        &body,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\nwebhook-timestamp: 1614265330\nwebhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n"
    );
}

#[test]
fn verify_says_valid_or_why_not_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let body = payload(dir.path(), "Hello, World!");
    let sig = "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let run = |extra: &[&str]| {
        let mut args =
            vec!["webhook", "verify", "--scheme", "github", "--secret-env", "GH_SECRET", "--payload", &body];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(BIN)
            .args(&args)
            .env("GH_SECRET", "It's a Secret to Everybody")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["-H", sig]);
    assert_eq!((code, out.as_str()), (0, "valid: secret #1\n"));
    let (code, out, _) = run(&["-H", &sig.replace("757107", "757108")]);
    assert_eq!(
        (code, out.as_str()),
        (1, "invalid: x-hub-signature-256: no signature matches a configured secret\n")
    );
    let (code, out, _) = run(&["--output", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"valid": false, "header": "x-hub-signature-256", "reason": "missing", "detail": "missing"})
    );
    // Usage errors exit 2 and never echo the secret.
    let (code, _, err) = run(&["-H", "no colon here"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected \"Name: value\""), "{err}");
    let (code, _, err) = bridgehead(&[
        "webhook",
        "verify",
        "--scheme",
        "standard",
        "--secret",
        "whsec_***",
        "--payload",
        &body,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--secret #1: a whsec_ secret is not valid base64") && !err.contains("***"),
        "{err}"
    );
    let (code, _, err) =
        bridgehead(&["webhook", "verify", "--scheme", "sha1", "--secret", "x", "--payload", &body]);
    assert_eq!(code, 2);
    assert!(err.contains("use standard, stripe, github, slack or hmac"), "{err}");
}

#[test]
fn slack_and_stripe_timestamps_follow_now_and_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let body = payload(dir.path(), r#"{"id":"evt_1","type":"charge.succeeded"}"#);
    let sig =
        "Stripe-Signature: t=1700000000,v1=c0475716eb2200f1fe97fcf35a3c05d1fd4f8ba9a07a596730c8d18bb87c0672";
    let verify = |now: &str, tolerance: &str| {
        bridgehead(&[
            "webhook",
            "verify",
            "--scheme",
            "stripe",
            "--secret",
            "whsec_test_secret",
            "-H",
            sig,
            "--payload",
            &body,
            "--now",
            now,
            "--tolerance",
            tolerance,
        ])
    };
    assert_eq!(verify("1700000100", "5m").0, 0);
    let (code, out, _) = verify("1700000400", "5m");
    assert_eq!(
        (code, out.as_str()),
        (1, "invalid: stripe-signature: timestamp expired: 400 s old, the tolerance is 300 s\n")
    );
    assert_eq!(verify("1700000400", "10m").0, 0);
    // Without --now the check runs against the clock: a 2023 timestamp is long expired.
    let (code, out, _) = bridgehead(&[
        "webhook",
        "verify",
        "--scheme",
        "stripe",
        "--secret",
        "whsec_test_secret",
        "-H",
        sig,
        "--payload",
        &body,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("timestamp expired"), "{out}");
}

#[test]
fn hmac_scheme_from_the_command_line_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let body = payload(dir.path(), r#"{"a":1}"#);
    let scheme = [
        "--scheme",
        "hmac",
        "--secret",
        "custom-secret",
        "--signature-header",
        "X-Signature",
        "--algorithm",
        "sha512",
        "--encoding",
        "base64",
        "--content",
        "{id}:{timestamp}:{body}",
        "--timestamp-header",
        "X-Timestamp",
        "--id-header",
        "X-Id",
        "--payload",
        &body,
    ];
    let mut args = vec!["webhook", "sign", "--id", "msg-7", "--timestamp", "1700000000", "--output", "json"];
    args.extend_from_slice(&scheme);
    let (code, out, err) = bridgehead(&args);
    assert_eq!(code, 0, "{err}");
    let headers: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        headers["x-signature"],
        "CepHhGkLOHCnj1Rlz3OZMUgS3PuMMyYP4pxUS/D6Si0Rwx52IKmQZDoTkmzHSIB1jE6li+qSWT+4i90/x04Q3w=="
    );
    let mut args = vec!["webhook", "verify", "--now", "1700000000"];
    args.extend_from_slice(&scheme);
    let hs: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {}", v.as_str().unwrap())).collect();
    for h in &hs {
        args.extend_from_slice(&["-H", h]);
    }
    let (code, out, _) = bridgehead(&args);
    assert_eq!((code, out.as_str()), (0, "valid: secret #1 id=msg-7 timestamp=1700000000\n"));
    let (code, _, err) = bridgehead(&[
        "webhook",
        "sign",
        "--scheme",
        "hmac",
        "--secret",
        "s",
        "--content",
        "{timestamp}.{body}",
        "--id",
        "m",
        "--payload",
        &body,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("content signs {timestamp}: set timestamp_header"), "{err}");
}

/// The official library verifies what we sign, and we verify what it signs.
#[test]
fn standard_webhooks_python_library_interoperates_both_ways() {
    let Some(python) = python() else { return };
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers/standardwebhooks_peer.py");
    let dir = tempfile::tempdir().unwrap();
    let body = payload(dir.path(), r#"{"type":"order.created","data":{"id":42,"note":"ünïcode"}}"#);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let secret = "whsec_c2VjcmV0LWZvci1pbnRlcm9wLXRlc3Rz";

    // Theirs → ours.
    let out = std::process::Command::new(&python)
        .args([peer, "sign", secret, "msg_interop_1", &now, &body])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sig = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (code, out, err) = bridgehead(&[
        "webhook",
        "verify",
        "--scheme",
        "standard",
        "--secret",
        secret,
        "--payload",
        &body,
        "-H",
        "webhook-id: msg_interop_1",
        "-H",
        &format!("webhook-timestamp: {now}"),
        "-H",
        &format!("webhook-signature: {sig}"),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Ours → theirs.
    let (code, out, err) = bridgehead(&[
        "webhook",
        "sign",
        "--scheme",
        "standard",
        "--secret",
        secret,
        "--id",
        "msg_interop_2",
        "--payload",
        &body,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let run = |headers: &str| {
        let out = std::process::Command::new(&python)
            .args([peer, "verify", secret, &body, headers])
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(run(out.trim()), (0, "valid\n".to_owned()));
    // And it refuses what it should: a tampered signature.
    let mut tampered: serde_json::Value = serde_json::from_str(&out).unwrap();
    tampered["webhook-id"] = "msg_other".into();
    assert_eq!(run(&tampered.to_string()).0, 1);
}

/// `config check` builds the receivers: a schema file that is missing or not a schema, and a
/// secret that is not a `whsec_` key, fail with their keys.
#[test]
fn config_check_reads_receiver_secrets_and_schema_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hooks.yaml");
    let write = |schema: &str, secret: &str| {
        std::fs::write(
            &cfg,
            format!(
                "upstreams:\n  u:\n    targets: [{{ url: \"http://127.0.0.1:9\" }}]\nwebhooks:\n  inbound:\n    - name: shop\n      path: /hooks/shop\n      verify: {{ scheme: standard, secret: \"{secret}\" }}\n      schema: {schema}\n      forward: {{ upstream: u, path: /x }}\n"
            ),
        )
        .unwrap();
    };
    std::fs::write(dir.path().join("ok.json"), r#"{"type":"object"}"#).unwrap();
    std::fs::write(dir.path().join("bad.json"), r#"{"type":12}"#).unwrap();
    write("ok.json", SW_SECRET);
    let (code, out, err) = bridgehead(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    write("missing.json", SW_SECRET);
    let (code, out, _) = bridgehead(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("webhooks.inbound[0].schema: cannot read"), "{out}");
    write("bad.json", SW_SECRET);
    let (_, out, _) = bridgehead(&["config", "check", cfg.to_str().unwrap()]);
    assert!(
        out.contains("webhooks.inbound[0].schema:") && out.contains("is not a valid JSON Schema"),
        "{out}"
    );
    write("ok.json", "whsec_***");
    let (code, out, _) = bridgehead(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("webhooks.inbound[0].verify.secret: a whsec_ secret is not valid base64"), "{out}");
    assert!(!out.contains("***"), "{out}");
}

/// `webhook dlq list | show | replay` against the state of a running gateway: a delivery refused
/// by the schema is listed and shown; once the schema is relaxed in the config file, `replay`
/// stores it and the running gateway forwards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_list_show_and_replay_into_a_running_gateway() {
    use bridgehead_mock::{MockOptions, MockServer};
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("s.json");
    std::fs::write(&schema, r#"{"type":"object","required":["amount"]}"#).unwrap();
    let yaml = format!(
        "state:\n  url: sqlite://STATE_DB\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nwebhooks:\n  inbound:\n    - name: shop\n      path: /hooks/shop\n      verify: {{ scheme: github, secret: gh-secret }}\n      schema: {}\n      forward: {{ upstream: u, path: /events }}\n",
        m.url(),
        schema.display()
    );
    let node = Node::start(dir.path(), "gw", &yaml);
    let cfg = dir.path().join("gw.yaml");
    let cfg = cfg.to_str().unwrap();
    let body = r#"{"type":"order.created"}"#;
    let signer = bridgehead_webhooks::signature::Signer::new(
        bridgehead_webhooks::signature::Scheme::Github,
        vec![bridgehead_webhooks::signature::Key::Hmac(b"gh-secret".to_vec())],
    )
    .unwrap();
    let mut req = http::Request::post(node.url("/hooks/shop")).header("content-type", "application/json");
    for (k, v) in signer.sign("delivery-1", 0, body.as_bytes()).unwrap() {
        req = req.header(k, v);
    }
    let got = send(&client(), req.body(full(body)).unwrap()).await;
    got.assert_problem(400, "does not match the receiver's schema: 1 error");

    let (code, out, err) = bridgehead(&["webhook", "dlq", "list", "-c", cfg, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!((list[0]["receiver"].as_str(), list[0]["reason"].as_str()), (Some("shop"), Some("schema")));
    assert_eq!(list[0]["errors"][0]["keyword"], "required");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = bridgehead(&["webhook", "dlq", "list", "-c", cfg]);
    assert_eq!(code, 0);
    assert!(out.lines().nth(1).unwrap().starts_with(&id), "{out}");
    let (code, out, _) = bridgehead(&["webhook", "dlq", "show", &id, "-c", cfg, "--output", "json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["body"], body);
    assert!(!out.contains("sha256="), "the signature is never shown: {out}");
    let (code, _, err) = bridgehead(&["webhook", "dlq", "show", "dlq_none", "-c", cfg]);
    assert_eq!((code, err.trim()), (1, "no dead letter dlq_none"));

    // Still refused with the same schema; accepted once it is relaxed.
    let (code, out, _) = bridgehead(&["webhook", "dlq", "replay", &id, "-c", cfg]);
    assert_eq!(code, 1);
    assert!(out.starts_with("refused (schema): the payload does not match"), "{out}");
    std::fs::write(&schema, r#"{"type":"object","required":["type"]}"#).unwrap();
    // The receiver's limit as it is now: lowered under the body's size, the replay is refused.
    let smaller = dir.path().join("smaller.yaml");
    std::fs::write(&smaller, std::fs::read_to_string(cfg).unwrap() + "      max_body: 16B\n").unwrap();
    let (code, out, _) = bridgehead(&["webhook", "dlq", "replay", &id, "-c", smaller.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.starts_with("refused (too_large)"), "{out}");
    let (code, out, err) = bridgehead(&["webhook", "dlq", "replay", &id, "-c", cfg, "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let replayed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replayed["status"], "accepted");
    // The running gateway finds it in the store and forwards it.
    eventually(10, "the replayed delivery reaches the upstream", async || m.request_count() == 1).await;
    assert_eq!(m.requests()[0].body, body);
    drop(node);
}

/// `webhook listen` verifies and prints what `webhook send` sends: valid with the right secret
/// (send exits 0 on the 200), invalid with another (send exits 1 on the 401).
#[test]
fn send_to_listen_verifies_and_prints() {
    use std::io::BufRead as _;
    let mut listen = Killed(
        std::process::Command::new(BIN)
            .args(["webhook", "listen", "--port", "0", "--scheme", "standard", "--secret-env", "WHSEC"])
            .env("WHSEC", SW_SECRET)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(listen.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("listening on ").expect(&first).to_owned();
    let send = |secret: &str, extra: &[&str]| {
        let mut args = vec![
            "webhook",
            "send",
            url.as_str(),
            "--secret-env",
            "S",
            "--event",
            "order.created",
            "--id",
            "msg_cli_1",
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(BIN).args(&args).env("S", secret).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = send(SW_SECRET, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("sent msg_cli_1 (standard scheme)\nHTTP 200 OK"), "{out}");
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let end = line == "}";
        printed.push_str(&line);
        printed.push('\n');
        if end {
            break;
        }
    }
    assert!(printed.contains("valid: secret #1 id=msg_cli_1"), "{printed}");
    assert!(printed.contains("\"type\": \"order.created\""), "{printed}");
    let (code, out) = send("whsec_b3RoZXItc2VjcmV0", &["--output", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 401);
    assert!(v["sent_headers"]["webhook-signature"].as_str().unwrap().starts_with("v1,"));
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("invalid:") {
            break;
        }
    }
    assert!(
        printed.contains("invalid: webhook-signature: no signature matches a configured secret"),
        "{printed}"
    );
    // Nobody listening: a failure, with the reason.
    drop(listen);
    let (code, out) = send(SW_SECRET, &[]);
    assert_eq!(code, 1);
    assert!(out.starts_with("failed: "), "{out}");
}

/// `webhook endpoints`: add (a new secret), list, disable and enable (config endpoints too),
/// rotate, remove; refusals with the reason and exit 2.
#[test]
fn endpoints_commands_manage_run_time_and_config_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridgehead.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state: {{ url: \"sqlite://{}/state.db\" }}\nwebhooks:\n  outbound:\n    intake: /events\n    endpoints:\n      - {{ name: dash, url: \"https://dash.example/hook\", events: [\"*\"], secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let (code, out, err) = bridgehead(&[
        "webhook",
        "endpoints",
        "add",
        "crm",
        "-c",
        c,
        "--url",
        "https://crm.example/in",
        "--event",
        "order.*",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = added["secret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("whsec_"), "{added}");

    let (code, out, err) =
        bridgehead(&["webhook", "endpoints", "disable", "dash", "-c", c, "--reason", "maintenance"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = bridgehead(&["webhook", "endpoints", "list", "-c", c, "--output", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by = |n: &str| list.as_array().unwrap().iter().find(|e| e["name"] == n).unwrap().clone();
    assert_eq!(
        (by("dash")["enabled"].clone(), by("dash")["disabled_reason"].clone()),
        (false.into(), "maintenance".into())
    );
    assert_eq!((by("crm")["declared"].clone(), by("crm")["secrets"].clone()), (false.into(), 1.into()));
    assert!(!out.contains(&first), "secrets are never listed");
    let (_, text, _) = bridgehead(&["webhook", "endpoints", "list", "-c", c]);
    assert!(
        text.contains("dash") && text.contains("config") && text.contains("disabled: maintenance"),
        "{text}"
    );
    assert_eq!(bridgehead(&["webhook", "endpoints", "enable", "dash", "-c", c]).0, 0);

    let (code, second, _) =
        bridgehead(&["webhook", "endpoints", "rotate-secret", "crm", "-c", c, "--grace", "1h"]);
    assert_eq!(code, 0);
    assert_ne!(second.trim(), first);
    let (_, out, _) = bridgehead(&["webhook", "endpoints", "list", "-c", c, "--output", "json"]);
    assert!(out.contains(r#""name":"crm""#) && out.contains(r#""secrets":2"#), "{out}");

    // Refusals: a config endpoint's secret, a name taken by the config, an unknown name, an
    // internal address.
    let (code, _, err) = bridgehead(&["webhook", "endpoints", "rotate-secret", "dash", "-c", c]);
    assert_eq!(code, 2);
    assert!(err.contains("`dash` is declared in the config: rotate its secret there"), "{err}");
    let (code, _, err) = bridgehead(&[
        "webhook",
        "endpoints",
        "add",
        "dash",
        "-c",
        c,
        "--url",
        "https://x.example/",
        "--event",
        "*",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("`dash` is declared in the config"), "{err}");
    let (code, _, err) = bridgehead(&["webhook", "endpoints", "disable", "nope", "-c", c]);
    assert_eq!(code, 2);
    assert!(err.contains("no endpoint is named `nope`"), "{err}");
    let (code, _, err) = bridgehead(&[
        "webhook",
        "endpoints",
        "add",
        "in",
        "-c",
        c,
        "--url",
        "http://10.0.0.8/",
        "--event",
        "*",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("private (10.0.0.0/8)") && err.contains("allow_private_network"), "{err}");
    assert_eq!(bridgehead(&["webhook", "endpoints", "remove", "crm", "-c", c]).0, 0);
    let (code, _, err) = bridgehead(&["webhook", "endpoints", "remove", "dash", "-c", c]);
    assert_eq!(code, 2);
    assert!(err.contains("remove it there"), "{err}");
}
