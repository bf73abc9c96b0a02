//! The shipped Prometheus rules and Grafana dashboard against the real tools: `promtool` checks
//! and unit-tests the rules, and a real Prometheus scrapes a running gateway (driven through
//! every feature the dashboard shows) and evaluates every dashboard expression and alert rule.
//! A renamed metric or label breaks these tests, not a customer's dashboard.
//!
//! Skipped only with BRIDGEHEAD_SKIP_PROMETHEUS=1 (scripts/test installs Debian's `prometheus`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use http::Request;

use crate::support::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn skipped() -> bool {
    if std::env::var("BRIDGEHEAD_SKIP_PROMETHEUS").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_PROMETHEUS=1");
        return true;
    }
    false
}

fn promtool(args: &[&str]) -> (bool, String) {
    if Command::new("promtool").arg("--version").output().is_err() {
        panic!("no promtool (scripts/test installs prometheus; BRIDGEHEAD_SKIP_PROMETHEUS=1 skips)");
    }
    run(Command::new("promtool").args(args))
}

#[test]
fn the_alert_rules_pass_promtool_checks_and_unit_tests() {
    if skipped() {
        return;
    }
    let d = deploy().join("prometheus");
    let rules = d.join("rules/bridgehead.rules.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok && out.contains("SUCCESS: 10 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", d.join("tests/bridgehead.rules.test.yml").to_str().unwrap()]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["check", "config", d.join("prometheus.yml").to_str().unwrap()]);
    assert!(ok, "{out}");
    // Every alert of the rule file has a unit test that expects it to fire: an `alertname`
    // line followed by `exp_alerts:` and an expected alert's labels.
    let tests = std::fs::read_to_string(d.join("tests/bridgehead.rules.test.yml")).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let rule_text = std::fs::read_to_string(&rules).unwrap();
    for alert in rule_text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let fires = lines.windows(3).any(|w| {
            w[0] == format!("alertname: {alert}")
                && w[1] == "exp_alerts:"
                && w[2].starts_with("- exp_labels:")
        });
        assert!(fires, "no promtool test expects {alert} to fire");
    }
}

/// Every PromQL expression of the dashboard, with Grafana's variables replaced as "All" does.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("grafana/bridgehead.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let expr = expr
                        .replace("$__rate_interval", "1m")
                        .replace("$route", ".*")
                        .replace("$upstream", ".*");
                    out.push((p["title"].as_str().unwrap_or("?").to_owned(), expr));
                }
            }
            walk(&p["panels"], out);
        }
    }
    walk(&dash["panels"], &mut out);
    assert!(out.len() > 30, "{} expressions", out.len());
    out
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A Prometheus server in a temp dir, scraping `target` every second with the shipped rules.
struct Prometheus {
    _child: Killed,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = deploy().join("prometheus/rules/bridgehead.rules.yml").canonicalize().unwrap();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: bridgehead\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus: {e} (scripts/test installs it; BRIDGEHEAD_SKIP_PROMETHEUS=1 skips)")
            });
        Prometheus { _child: Killed(child), url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    async fn query(&self, expr: &str) -> serde_json::Value {
        let got = get(&format!("{}/api/v1/query?query={}", self.url, encode(expr))).await;
        assert_eq!(got.status, 200, "{expr}: {}", String::from_utf8_lossy(&got.body));
        got.json()["data"]["result"].clone()
    }
}

/// Whether an instant-query result holds a sample that is a number.
fn has_number(result: &serde_json::Value) -> bool {
    result
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| !v.is_nan()))
}

/// Where every metric is registered.
const METRICS_RS: &str = include_str!("../../../http/src/metrics.rs");

/// Metrics whose series need an event this test does not cause; their expressions are only
/// checked to name a metric the gateway registers (a family without series is not exported).
const NOT_DRIVEN: &[(&str, &str)] = &[
    ("bridgehead_rate_limit_store_errors", "needs Redis to fail mid-request"),
    ("bridgehead_webhook_dead_letters_dropped", "needs more than 50 refused webhooks a second"),
    ("bridgehead_grpc_requests", "needs a gRPC upstream (tests/it/grpc.rs checks its series)"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_and_alert_rule_evaluates_on_a_live_scrape() {
    if skipped() {
        return;
    }
    let mock = bridgehead_mock::MockServer::start(bridgehead_mock::MockOptions {
        fixed: vec![
            "/token=200:{\"access_token\":\"t-1\",\"token_type\":\"Bearer\",\"expires_in\":3600}"
                .parse()
                .unwrap(),
            "/jwks=200:{\"keys\":[]}".parse().unwrap(),
            "/health=200:{}".parse().unwrap(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let m = mock.url();
    // A CA file for the certificate-expiry series.
    let pki_dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Customer CA");
    let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
    let ca_path = pki_dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let api_key = bridgehead_auth::apikey::sha256_hex("partner-key-0123456789");
    let client_secret = bridgehead_auth::apikey::sha256_hex("client-secret-0123456789");
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = format!(
        r#"oauth_server:
  issuer: https://bridgehead.test
  clients:
    - {{ client_id: svc, secret_sha256: "{client_secret}", grants: [client_credentials], scopes: [orders.read] }}
authenticators:
  partners:
    api_key:
      keys: [{{ consumer: acme, sha256: "{api_key}" }}]
  idp:
    jwt: {{ jwks_url: "{m}/jwks", issuer: "https://idp.test", audiences: [orders-api] }}
upstreams:
  mock:
    targets: [{{ url: "{m}" }}]
    health_check: {{ path: /health, interval: 1s }}
    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 10, window: 30s, open_for: 10s }}
    rate_limit: {{ rate: 2/s, burst: 1, max_wait: 2s }}
    credentials:
      oauth2_client_credentials: {{ token_url: "{m}/token", client_id: gw, client_secret: s3cret, ca: "{ca}" }}
  gone:
    targets: [{{ url: "http://127.0.0.1:9" }}]
    retry: {{ attempts: 2, backoff: 10ms, on: [connect-error] }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: mock, auth: [partners, idp] }}
  - {{ name: limited, match: {{ path_prefix: /limited }}, upstream: mock, rate_limit: {{ key: ip, rate: 1/m, burst: 1 }} }}
  - {{ name: payments, match: {{ path_prefix: /payments }}, upstream: mock, idempotency: {{ ttl: 1h }} }}
  - {{ name: broken, match: {{ path_prefix: /broken }}, upstream: gone }}
webhooks:
  inbound:
    - {{ name: shop, path: /hooks/shop, verify: {{ scheme: standard, secret: "{whsec}" }}, forward: {{ upstream: mock, path: /internal/orders }} }}
  outbound:
    intake: /events
    auth: [partners]
    retry_schedule: [1s]
    endpoints:
      - {{ name: listener, url: "{m}/hook", events: ["order.*"], secret: "{whsec}", allow_private_network: true }}
telemetry:
  traces: {{ endpoint: "{m}", interval: 100ms }}
"#,
        ca = ca_path.display(),
    );
    let gw = Gateway::start(&config).await;
    let prom = Prometheus::start(gw.admin);
    eventually(60, "Prometheus scraped the gateway", async || {
        tokio::net::TcpStream::connect(prom.url.trim_start_matches("http://")).await.is_ok()
            && get(&format!("{}/-/ready", prom.url)).await.status == 200
            && has_number(&prom.query("up{job=\"bridgehead\"} == 1").await)
    })
    .await;

    // Traffic through every feature the dashboard shows.
    let key = |r: http::request::Builder| r.header("x-api-key", "partner-key-0123456789");
    for _ in 0..3 {
        let got = send(&client(), key(Request::get(gw.url("/orders/1"))).body(empty()).unwrap()).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    }
    get(&gw.url("/orders/1")).await.assert_problem(401, "no credentials");
    let bad = Request::get(gw.url("/orders/1")).header("authorization", "Bearer not.a.jwt").body(empty());
    // The identity provider's key set is empty: the JWT cannot be checked.
    assert_eq!(send(&client(), bad.unwrap()).await.status, 503);
    get(&gw.url("/limited")).await;
    get(&gw.url("/limited")).await.assert_problem(429, "rate limit");
    get(&gw.url("/broken")).await.assert_problem(502, "");
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    let pay = Request::post(gw.url("/payments")).header("idempotency-key", "k-1").body(full("{}"));
    assert_eq!(send(&client(), pay.unwrap()).await.status, 200);
    let token = Request::post(gw.url("/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full("grant_type=client_credentials&client_id=svc&client_secret=client-secret-0123456789"));
    assert_eq!(send(&client(), token.unwrap()).await.status, 200);
    let hook = Request::post(gw.url("/hooks/shop"))
        .header("content-type", "application/json")
        .header("webhook-id", "x")
        .body(full("{}"));
    assert_eq!(send(&client(), hook.unwrap()).await.status, 401);
    let signer = bridgehead_webhooks::signature::Signer::new(
        bridgehead_webhooks::signature::Scheme::Standard,
        vec![
            bridgehead_webhooks::signature::Key::parse(
                &bridgehead_webhooks::signature::Scheme::Standard,
                whsec,
            )
            .unwrap(),
        ],
    )
    .unwrap();
    let body = r#"{"type":"order.created","data":{"id":1}}"#;
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut req = Request::post(gw.url("/hooks/shop")).header("content-type", "application/json");
    for (k, v) in signer.sign("evt_1", ts, body.as_bytes()).unwrap() {
        req = req.header(k, v);
    }
    assert_eq!(send(&client(), req.body(full(body)).unwrap()).await.status, 202);
    let publish = |id: u32| {
        key(Request::post(gw.url("/events")))
            .header("content-type", "application/json")
            .body(full(format!(r#"{{"type":"order.created","data":{{"id":{id}}}}}"#)))
            .unwrap()
    };
    let delivered = |n: u32| {
        format!(
            "bridgehead_webhook_deliveries_total{{destination=\"endpoint:listener\",outcome=\"delivered\"}} {n}"
        )
    };
    assert_eq!(send(&client(), publish(2)).await.status, 202);
    eventually(20, "the published event delivered", async || gw.metrics().await.contains(&delivered(1)))
        .await;
    // A second one once Prometheus has the first: a histogram's quantile needs its buckets to
    // grow between two scrapes.
    eventually(20, "Prometheus scraped the first delivery", async || {
        has_number(&prom.query("bridgehead_webhook_attempt_duration_seconds_count").await)
    })
    .await;
    assert_eq!(send(&client(), publish(3)).await.status, 202);
    eventually(20, "the second event delivered", async || gw.metrics().await.contains(&delivered(2))).await;

    // Every dashboard expression returns a number from the live scrape (rates over the traffic
    // above once Prometheus has scraped it).
    let exprs = dashboard_expressions();
    let mut last = String::new();
    eventually(30, "every dashboard expression returns data (the missing ones are printed)", async || {
        let mut missing: Vec<String> = Vec::new();
        for (title, expr) in &exprs {
            if let Some((metric, why)) = NOT_DRIVEN.iter().find(|(m, _)| expr.contains(m)) {
                let registered = format!("\"{}\"", metric.trim_start_matches("bridgehead_"));
                assert!(
                    METRICS_RS.contains(&registered),
                    "{title}: {metric} is not a metric the gateway exports ({why})"
                );
                continue;
            }
            if !has_number(&prom.query(expr).await) {
                missing.push(format!("{title}: {expr}"));
            }
        }
        let now = missing.join("\n");
        if now != last {
            eprintln!("dashboard expressions without data yet:\n{now}");
            last = now;
        }
        missing.is_empty()
    })
    .await;

    // Every metric the dashboard and the rules name has series in the live scrape (an
    // expression ending in `or vector(0)` returns data without them).
    let rules_text = std::fs::read_to_string(deploy().join("prometheus/rules/bridgehead.rules.yml")).unwrap();
    let mut names: Vec<String> = Vec::new();
    for text in exprs.iter().map(|(_, e)| e.as_str()).chain([rules_text.as_str()]) {
        let mut rest = text;
        while let Some(at) = rest.find("bridgehead_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            rest = &rest[at + name.len()..];
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    for name in &names {
        if NOT_DRIVEN.iter().any(|(m, _)| name.starts_with(m)) {
            continue;
        }
        let got = prom.query(&format!("count({{__name__=\"{name}\"}})")).await;
        assert!(has_number(&got), "{name} has no series in the live scrape");
    }

    // The alert rules load and evaluate without error on the live data.
    let rules = get(&format!("{}/api/v1/rules", prom.url)).await.json();
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["rules"].as_array().unwrap().len(), 10, "{rules:#}");
    for r in group["rules"].as_array().unwrap() {
        assert_eq!(r["health"], "ok", "{r:#}");
    }
    gw.shutdown().await;
}
