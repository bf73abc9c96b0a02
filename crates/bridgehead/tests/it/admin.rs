//! The admin plane and the state store behind the running app.

use bridgehead_mock::{MockOptions, MockServer};
use http::Request;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_config() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let gw = Gateway::start(&simple_config(&m.url())).await;
    assert_eq!(get(&gw.admin_url("/healthz")).await.json()["status"], "ok");
    let ready = get(&gw.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["generation"], 1);
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    let metrics = get(&gw.admin_url("/metrics")).await;
    assert!(metrics.header("content-type").starts_with("application/openmetrics-text"));
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "bridgehead_http_requests_total{route=\"all\",method=\"GET\",status=\"200\"} 1",
        "bridgehead_http_request_duration_seconds_bucket",
        "bridgehead_upstream_requests_total{upstream=\"u\"",
        "bridgehead_upstream_healthy{upstream=\"u\"",
        "# TYPE bridgehead_config_reloads counter",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    let cfg = get(&gw.admin_url("/admin/config")).await.json();
    assert_eq!(cfg["config"]["routes"][0]["name"], "all");
    assert_eq!(cfg["config"]["server"]["limits"]["max_body"], "10MiB");
    get(&gw.admin_url("/nope")).await.assert_problem(404, "no endpoint GET /nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_metrics_and_admin_and_is_redacted() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    // The token comes from a file next to the config, as a deployment would do it.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "admin-token-0123456789\n").unwrap();
    let cfg = format!("admin:\n  token: ${{file:{}}}\n{}", token_file.display(), simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    let c = client();
    for path in ["/metrics", "/admin/config", "/admin/upstreams"] {
        let got = send(&c, Request::get(gw.admin_url(path)).body(empty()).unwrap()).await;
        got.assert_problem(401, "missing Authorization");
        assert_eq!(got.header("www-authenticate"), "Bearer realm=\"bridgehead-admin\"");
        let got = send(
            &c,
            Request::get(gw.admin_url(path))
                .header("authorization", "Bearer wrong-token-000000000")
                .body(empty())
                .unwrap(),
        )
        .await;
        got.assert_problem(401, "does not match");
    }
    let ok = send(
        &c,
        Request::get(gw.admin_url("/admin/config"))
            .header("authorization", "Bearer admin-token-0123456789")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let text = String::from_utf8_lossy(&ok.body);
    assert!(!text.contains("admin-token-0123456789"), "token leaked: {text}");
    assert!(text.contains("${file:"), "reference shown instead: {text}");
    // Health endpoints stay open for load balancers.
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_on_postgresql_state() {
    let Some(pg) = bridgehead_state::testing::TestPostgres::start().expect("PostgreSQL for tests") else {
        eprintln!("skipped: BRIDGEHEAD_SKIP_POSTGRES=1");
        return;
    };
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let cfg = format!("state:\n  url: {}\n{}", pg.url(), simple_config(&m.url()));
    let gw = Gateway::start(&cfg).await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let store = bridgehead_state::Store::open(&pg.url()).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1, "the gateway registered itself");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_listed_in_the_order_they_are_tried_with_the_builtin_ones_first() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let cfg = format!(
        "oauth_server: {{ issuer: \"https://gw.example\" }}\nauthenticators:\n  local:\n    jwt: {{ issuer: local }}\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n  - {{ name: orders, match: {{ path_prefix: /orders, methods: [GET] }}, upstream: u, auth: [local], require_scopes: [orders.read], strip_prefix: /orders }}\n",
        m.url()
    );
    let gw = Gateway::start(&cfg).await;
    let got = get(&gw.admin_url("/admin/routes")).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["generation"], 1);
    let routes = v["routes"].as_array().unwrap();
    let names: Vec<_> =
        routes.iter().map(|r| (r["name"].as_str().unwrap(), r["backend"].as_str().unwrap())).collect();
    assert_eq!(
        names,
        [
            ("(oauth)", "oauth"),
            ("(oauth)", "oauth"),
            ("(oauth)", "oauth"),
            ("orders", "proxy"),
            ("all", "proxy")
        ]
    );
    assert_eq!(routes[0]["match"]["path_prefix"], "/oauth2");
    assert_eq!(routes[0]["builtin"], true);
    assert_eq!(routes[1]["match"]["path"], "/.well-known/oauth-authorization-server");
    let orders = &routes[3];
    assert_eq!(orders["order"], 4);
    assert_eq!(orders["builtin"], false);
    assert_eq!(orders["upstream"], "u");
    assert_eq!(orders["auth"], serde_json::json!(["local"]));
    assert_eq!(orders["require_scopes"], serde_json::json!(["orders.read"]));
    assert_eq!(orders["strip_prefix"], "/orders");
    assert_eq!(orders["match"]["methods"], serde_json::json!(["GET"]));
    assert_eq!(routes[0]["upstream"], serde_json::Value::Null);
    // The built-in route answers before the catch-all, on any host.
    let got = send(
        &client(),
        Request::get(gw.url("/.well-known/jwks.json")).header("host", "other.example").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.json()["keys"].is_array());
    assert_eq!(gw.log_lines().last().unwrap()["route"], "(oauth)");
}
