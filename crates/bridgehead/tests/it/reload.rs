//! Hot reload: atomic swap, refusal of bad configs, file watching, in-flight requests.

use bridgehead_mock::{MockOptions, MockServer};
use http::Request;

use crate::support::*;

fn two_routes(upstream: &str) -> String {
    format!(
        "{}  - {{ name: extra, match: {{ path_prefix: /extra }}, upstream: u, strip_prefix: /extra }}\n",
        simple_config(upstream).replace("path_prefix: / }", "path_prefix: /main }")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_and_refuses_invalid_configs() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let first = simple_config(&m.url()).replace("path_prefix: / }", "path_prefix: /main }");
    let gw = Gateway::start(&first).await;
    assert_eq!(get(&gw.url("/extra/x")).await.status, 404);
    let state_line = format!("\nstate:\n  url: sqlite://{}/state.db\n", gw.dir.path().display());
    std::fs::write(&gw.config_path, format!("{}{state_line}", two_routes(&m.url()))).unwrap();
    assert_eq!(gw.reloader.reload().await.unwrap(), 2);
    let got = get(&gw.url("/extra/x")).await;
    assert_eq!(got.json()["path"], "/x");

    // A broken config is refused; the running one keeps serving.
    std::fs::write(&gw.config_path, "routes:\n  - name: broken\n    upstream: nowhere\n").unwrap();
    let err = gw.reloader.reload().await.unwrap_err().to_string();
    assert!(err.contains("routes[0]: missing field `match`"), "{err}");
    assert_eq!(get(&gw.url("/extra/x")).await.status, 200);
    // The admin endpoint reports the same, as a problem.
    let got = send(&client(), Request::post(gw.admin_url("/admin/reload")).body(empty()).unwrap()).await;
    got.assert_problem(422, "bridgehead.yaml:2:5: routes[0]: missing field `match`");
    let text = gw.metrics().await;
    assert!(text.contains("bridgehead_config_reloads_total{result=\"success\"} 1"), "{text}");
    assert!(text.contains("bridgehead_config_reloads_total{result=\"error\"} 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_old_config() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let gw = Gateway::start(&two_routes(&m.url())).await;
    let url = gw.url("/extra/slow");
    let slow = tokio::spawn(async move {
        send(&client(), Request::get(url).header("x-mock-latency", "400ms").body(empty()).unwrap()).await
    });
    eventually(5, "slow request reached the upstream", async || m.request_count() == 1).await;
    let state_line = format!("\nstate:\n  url: sqlite://{}/state.db\n", gw.dir.path().display());
    let only_main = simple_config(&m.url()).replace("path_prefix: / }", "path_prefix: /main }");
    std::fs::write(&gw.config_path, format!("{only_main}{state_line}")).unwrap();
    gw.reloader.reload().await.unwrap();
    assert_eq!(get(&gw.url("/extra/x")).await.status, 404, "new requests see the new config");
    let got = slow.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/slow", "the old route's strip_prefix still applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_reload_by_themselves() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let first = simple_config(&m.url()).replace("path_prefix: / }", "path_prefix: /main }");
    let gw = Gateway::start_with(&first, true).await;
    let state_line = format!("\nstate:\n  url: sqlite://{}/state.db\n", gw.dir.path().display());
    std::fs::write(&gw.config_path, format!("{}{state_line}", two_routes(&m.url()))).unwrap();
    eventually(10, "the new route after a file change", async || {
        get(&gw.url("/extra/x")).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_binary_and_sigusr1_with_stdout_is_harmless() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routes = |extra: &str| {
        format!(
            "state:\n  url: sqlite://STATE_DB\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: a, match: {{ path_prefix: /a }}, upstream: u }}\n{extra}",
            m.url()
        )
    };
    let node = Node::start(dir.path(), "n", &routes(""));
    assert_eq!(get(&node.url("/b")).await.status, 404);
    let pid = node.child.0.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    };
    // SIGUSR1 with the access log on stdout: ignored, the process lives on.
    signal("-USR1");
    // The same file as Node::start wrote, with a second route.
    let cfg = dir.path().join("n.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}  - {{ name: b, match: {{ path_prefix: /b }}, upstream: u }}\n"))
        .unwrap();
    signal("-HUP");
    eventually(10, "the reloaded route", async || get(&node.url("/b")).await.status == 200).await;
    assert_eq!(get(&node.url("/a")).await.status, 200);
    let log = node.stop();
    assert!(log.contains("SIGUSR1 ignored"), "{log}");
}
