//! The access log to a file, end to end: `bridgehead serve` appends one JSON line per request,
//! and reopens the file on SIGUSR1 after logrotate moved it away.

use bridgehead_mock::{MockOptions, MockServer};

use crate::support::*;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[tokio::test]
async fn lines_go_to_the_file_which_sigusr1_reopens_after_rotation() {
    let m = MockServer::start(MockOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "state:\n  url: sqlite://STATE_DB\nupstreams:\n  u:\n    targets: [{{ url: \"{}\" }}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        m.url()
    );
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    // A relative path is read from the config file's directory.
    let node = Node::start_with(dir.path(), "n", "  access_log: { output: logs/access.log }\n", &cfg);
    let path = dir.path().join("logs/access.log");
    assert_eq!(get(&node.url("/first")).await.status, 200);
    eventually(10, "the first line in the file", async || lines(&path).iter().any(|l| l["path"] == "/first"))
        .await;

    // logrotate: move the file away, then SIGUSR1.
    let rotated = dir.path().join("logs/access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let pid = node.child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    eventually(10, "the file to be created again", async || path.exists()).await;
    assert_eq!(get(&node.url("/second")).await.status, 200);
    eventually(10, "the second line in the new file", async || {
        lines(&path).iter().any(|l| l["path"] == "/second")
    })
    .await;
    let old = lines(&rotated);
    assert!(
        old.iter().any(|l| l["path"] == "/first") && !old.iter().any(|l| l["path"] == "/second"),
        "{old:?}"
    );
    assert!(!lines(&path).iter().any(|l| l["path"] == "/first"));
    let log = node.stop();
    assert!(log.contains("reopening the access log"), "{log}");
}

#[test]
fn a_missing_directory_is_refused_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("b.yaml");
    std::fs::write(&cfg, "server:\n  access_log: { output: nowhere/access.log }\n").unwrap();
    let (code, out, err) = bridgehead(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("server.access_log.output") && all.contains("does not exist"), "{all}");
}

#[test]
fn serve_refuses_a_missing_directory_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("b.yaml");
    std::fs::write(&cfg, "server:\n  listen: 127.0.0.1:0\n  access_log: { output: nowhere/access.log }\nadmin:\n  listen: 127.0.0.1:0\n").unwrap();
    let (code, out, err) = bridgehead(&["serve", "--no-watch", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("server.access_log.output") && err.contains("does not exist"), "{err}");
}
