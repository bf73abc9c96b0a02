//! The `Store` contract, run against both backends: every check in `checks` runs once on a fresh
//! SQLite file (`sqlite::…` tests) and once on a fresh throwaway PostgreSQL server
//! (`postgres::…` tests, which need PostgreSQL installed or `BRIDGEHEAD_SKIP_POSTGRES=1`).
//! Backend-specific behaviour (files, pragmas, connection errors) has its own tests below.

#[macro_use]
mod common;

use bridgehead_state::{ApiKeyRecord, Backend, SCHEMA_VERSION, StateError, Store};

each_backend!(
    open_migrates_once_and_reopens,
    documents_keep_the_last_good_copy,
    meta_get_put_upsert,
    cluster_id_is_created_once_under_concurrency_and_survives_reopen,
    nodes_register_heartbeat_list,
    api_keys_insert_list_revoke,
    api_key_insert_refuses_bad_records_and_duplicates,
);

/// Backend-independent checks; `url` names a fresh, empty database.
mod checks {
    use super::*;

    pub async fn documents_keep_the_last_good_copy(url: &str, _backend: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.document_get("grpc-schema", "telemetry").await.unwrap(), None);
        store.document_put("grpc-schema", "telemetry", b"\x0a\x00first").await.unwrap();
        store.document_put("grpc-schema", "other", b"x").await.unwrap();
        store.document_put("grpc-schema", "telemetry", b"second").await.unwrap();
        let doc = store.document_get("grpc-schema", "telemetry").await.unwrap().unwrap();
        assert_eq!(doc.body, b"second");
        assert!(doc.fetched_at_ms > 0);
        assert_eq!(store.document_get("wsdl", "telemetry").await.unwrap(), None);
        store.close().await;
    }

    pub async fn open_migrates_once_and_reopens(url: &str, backend: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.backend(), backend);
        assert_eq!(store.redacted_url(), url); // no password to hide
        store.ping().await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        store.meta_put("survives", "reopen").await.unwrap();
        store.close().await;
        assert!(store.ping().await.is_err(), "a closed store must not answer");

        // Opening again finds the migrations applied and the data in place.
        let again = Store::open(url).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
        assert_eq!(again.meta_get("survives").await.unwrap().as_deref(), Some("reopen"));
        again.close().await;
    }

    pub async fn meta_get_put_upsert(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.meta_get("colour").await.unwrap(), None);
        store.meta_put("colour", "blue").await.unwrap();
        assert_eq!(store.meta_get("colour").await.unwrap().as_deref(), Some("blue"));
        store.meta_put("colour", "grün ✓").await.unwrap();
        assert_eq!(store.meta_get("colour").await.unwrap().as_deref(), Some("grün ✓"));
        store.meta_put("empty", "").await.unwrap();
        assert_eq!(store.meta_get("empty").await.unwrap().as_deref(), Some(""));
        // Keys are exact: no case folding, no prefix match.
        assert_eq!(store.meta_get("Colour").await.unwrap(), None);
        assert_eq!(store.meta_get("colou").await.unwrap(), None);
        // A clone shares the pool.
        let clone = store.clone();
        assert_eq!(clone.meta_get("colour").await.unwrap().as_deref(), Some("grün ✓"));
        store.close().await;
    }

    pub async fn cluster_id_is_created_once_under_concurrency_and_survives_reopen(url: &str, _: Backend) {
        // Ten "nodes" open the fresh database at once (racing the migrations too), then all ask
        // for the cluster id at once.
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let url = url.to_owned();
            opens.spawn(async move { Store::open(&url).await });
        }
        let stores: Vec<Store> = opens.join_all().await.into_iter().map(Result::unwrap).collect();
        let mut asks = tokio::task::JoinSet::new();
        for store in &stores {
            let store = store.clone();
            asks.spawn(async move { store.cluster_id().await });
        }
        let ids: Vec<String> = asks.join_all().await.into_iter().map(Result::unwrap).collect();
        let id = ids[0].clone();
        assert!(ids.iter().all(|other| *other == id), "nodes disagree: {ids:?}");
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        assert_eq!(stores[0].meta_get("cluster_id").await.unwrap(), Some(id.clone()));
        for store in &stores {
            store.close().await;
        }

        let reopened = Store::open(url).await.unwrap();
        assert_eq!(reopened.cluster_id().await.unwrap(), id);
        reopened.close().await;
    }

    pub async fn nodes_register_heartbeat_list(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.nodes().await.unwrap(), vec![]);

        store.register_node("node-b", "0.1.0").await.unwrap();
        store.register_node("node-a", "0.1.0").await.unwrap();
        let nodes = store.nodes().await.unwrap();
        let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["node-a", "node-b"]);
        let a = nodes[0].clone();
        assert_eq!(a.version, "0.1.0");
        assert_eq!(a.started_at_ms, a.last_seen_at_ms);
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((now_ms - 60_000..=now_ms).contains(&a.started_at_ms), "{a:?} vs {now_ms}");

        store.heartbeat("node-a").await.unwrap();
        let a2 = store.nodes().await.unwrap().remove(0);
        assert_eq!(a2.started_at_ms, a.started_at_ms, "a heartbeat keeps started_at");
        assert!(a2.last_seen_at_ms >= a.last_seen_at_ms);

        // Re-registering (a restart, maybe an upgrade) replaces version and started_at.
        store.register_node("node-a", "0.2.0").await.unwrap();
        let a3 = store.nodes().await.unwrap().remove(0);
        assert_eq!(a3.version, "0.2.0");
        assert!(a3.started_at_ms >= a.started_at_ms);
        assert_eq!(a3.started_at_ms, a3.last_seen_at_ms);
        assert_eq!(store.nodes().await.unwrap().len(), 2);

        let err = store.heartbeat("node-z").await.unwrap_err();
        assert!(matches!(err, StateError::UnknownNode { ref node_id } if node_id == "node-z"), "{err:?}");
        assert!(err.to_string().contains("\"node-z\" is not registered"), "{err}");
        store.close().await;
    }

    fn key(id: &str, authenticator: &str, digit: char, created_at: i64) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.to_owned(),
            authenticator: authenticator.to_owned(),
            consumer: format!("consumer of {id}"),
            sha256: digit.to_string().repeat(64),
            scopes: vec!["orders:read".to_owned(), "orders:write".to_owned()],
            created_at,
            revoked_at: None,
        }
    }

    pub async fn api_keys_insert_list_revoke(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.api_key_list(None, true).await.unwrap(), vec![]);
        assert_eq!(store.api_keys_active("partners").await.unwrap(), vec![]);

        let a = key("key_a", "partners", 'a', 2_000);
        let b = ApiKeyRecord { scopes: vec![], ..key("key_b", "partners", 'b', 1_000) };
        let c = ApiKeyRecord { consumer: "grün ✓".to_owned(), ..key("key_c", "internal", 'c', 3_000) };
        for rec in [&a, &b, &c] {
            store.api_key_insert(rec).await.unwrap();
        }
        // Oldest first; records read back field for field (no scopes reads back as no scopes).
        assert_eq!(store.api_key_list(None, false).await.unwrap(), [b.clone(), a.clone(), c.clone()]);
        assert_eq!(store.api_key_list(Some("partners"), false).await.unwrap(), [b.clone(), a.clone()]);
        assert_eq!(store.api_key_list(Some("internal"), true).await.unwrap(), std::slice::from_ref(&c));
        assert_eq!(store.api_key_list(Some("Partners"), true).await.unwrap(), [], "names are exact");
        assert_eq!(store.api_keys_active("partners").await.unwrap(), [b.clone(), a.clone()]);

        assert!(store.api_key_revoke("key_a", 5_000).await.unwrap());
        assert!(!store.api_key_revoke("key_a", 6_000).await.unwrap(), "already revoked");
        assert!(!store.api_key_revoke("key_zzz", 6_000).await.unwrap(), "unknown");
        let revoked_a = ApiKeyRecord { revoked_at: Some(5_000), ..a.clone() };
        assert_eq!(store.api_keys_active("partners").await.unwrap(), std::slice::from_ref(&b));
        assert_eq!(store.api_key_list(None, false).await.unwrap(), [b.clone(), c.clone()]);
        assert_eq!(store.api_key_list(None, true).await.unwrap(), [b.clone(), revoked_a.clone(), c.clone()]);
        assert_eq!(store.api_key_list(Some("partners"), true).await.unwrap(), [b.clone(), revoked_a.clone()]);
        store.close().await;

        // Durable across a reopen.
        let again = Store::open(url).await.unwrap();
        assert_eq!(again.api_key_list(None, true).await.unwrap(), [b, revoked_a, c]);
        again.close().await;
    }

    pub async fn api_key_insert_refuses_bad_records_and_duplicates(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let good = key("key_a", "partners", 'a', 1_000);
        let cases = [
            (ApiKeyRecord { id: String::new(), ..good.clone() }, "the key id is empty"),
            (ApiKeyRecord { sha256: "A".repeat(64), ..good.clone() }, "64 lower-case hex digits"),
            (ApiKeyRecord { sha256: "a".repeat(63), ..good.clone() }, "64 lower-case hex digits"),
            (ApiKeyRecord { scopes: vec!["a b".to_owned()], ..good.clone() }, "scope \"a b\" is empty"),
            (ApiKeyRecord { scopes: vec![String::new()], ..good.clone() }, "scope \"\" is empty"),
        ];
        for (rec, expected) in cases {
            let err = store.api_key_insert(&rec).await.unwrap_err();
            assert!(matches!(err, StateError::InvalidInput { op: "api_key_insert", .. }), "{err:?}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert_eq!(store.api_key_list(None, true).await.unwrap(), []);

        store.api_key_insert(&good).await.unwrap();
        let same_id = key("key_a", "partners", 'b', 1_000);
        let same_digest = key("key_b", "other", 'a', 1_000);
        for rec in [same_id, same_digest] {
            let err = store.api_key_insert(&rec).await.unwrap_err();
            assert!(matches!(err, StateError::Query { op: "api_key_insert", .. }), "{err:?}");
        }
        assert_eq!(store.api_key_list(None, true).await.unwrap(), [good]);
        store.close().await;
    }
}

#[tokio::test]
async fn sqlite_open_creates_private_file_and_parents_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/state.db");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    assert!(path.is_file());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("deep/er")), 0o700);

    // WAL is a property of the file: a fresh connection that sets nothing sees it.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(journal_mode, "wal");
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn sqlite_relative_path_is_relative_to_the_working_directory() {
    // Reach a temp dir in /tmp through `..` from the working directory, so the path is relative
    // without the test creating files in the source tree or changing the process's cwd.
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = format!("{up}{}", dir.path().strip_prefix("/").unwrap().display());
    assert!(!relative.starts_with('/'));
    let store = Store::open(&format!("sqlite://{relative}/state.db")).await.unwrap();
    assert!(dir.path().join("state.db").is_file());
    store.close().await;
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", dir.path().display());
    Store::open(&url).await.unwrap().close().await;
    // Pretend a newer Bridgehead applied migration 9999.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StateError::Migrate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("has migration 9999, which this build does not know"), "{text}");
    assert!(text.contains("migrated by a newer Bridgehead"), "{text}");
}

#[tokio::test]
async fn sqlite_memory_is_shared_by_the_pool() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store.meta_put("k", "v").await.unwrap();
    // Several queries at once use several connections; all see the same database.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        reads.spawn(async move { store.meta_get("k").await });
    }
    for value in reads.join_all().await {
        assert_eq!(value.unwrap().as_deref(), Some("v"));
    }
    // Two memory stores are two databases.
    let other = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(other.meta_get("k").await.unwrap(), None);
    store.close().await;
    other.close().await;
}

#[tokio::test]
async fn bad_urls_get_precise_errors_without_passwords() {
    let cases = [
        // (url, text the error must contain)
        ("ftp://u:s3cret@host/x", "state.url must start with sqlite:// or postgres://"),
        ("ftp://u:s3cret@host/x", "got \"ftp://u:***@host/x\""),
        ("mysql://root:s3cret@db/gw", "got \"mysql://root:***@db/gw\""),
        ("", "got \"\""),
        ("bridgehead.db", "got \"bridgehead.db\""),
        ("host=db password=s3cret", "got \"host=db password=***\""),
        ("sqlite://", "names no file; use sqlite://PATH"),
        ("sqlite://x.db?mode=bogus", "unknown value \"bogus\" for `mode`"),
        ("postgres://u:s3cret@db:notaport/gw", "state.url \"postgres://u:***@db:notaport/gw\" is invalid"),
    ];
    for (url, expected) in cases {
        let err = Store::open(url).await.expect_err(url);
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        assert!(text.contains(expected), "{url:?}: {text:?} lacks {expected:?}");
        assert!(!text.contains("s3cret") && !debug.contains("s3cret"), "{url:?} leaks: {debug}");
    }
}

#[tokio::test]
async fn unreachable_postgres_fails_at_once_naming_the_url_without_its_password() {
    // Port 1 (tcpmux) has no listener, so the connection is refused.
    let started = std::time::Instant::now();
    let err = Store::open("postgres://u:s3cret@127.0.0.1:1/db").await.unwrap_err();
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(matches!(err, StateError::Connect { .. }), "{debug}");
    assert!(text.starts_with("cannot connect to state.url \"postgres://u:***@127.0.0.1:1/db\": "), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("s3cret") && !debug.contains("s3cret"), "{debug}");
    assert!(started.elapsed() < bridgehead_state::CONNECT_TIMEOUT, "a refusal is not retried");
}

#[tokio::test]
async fn silent_postgres_fails_after_the_connect_timeout() {
    // A listener that never answers: the TCP handshake completes, the startup message is never
    // answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("postgres://u:s3cret@{}/db", listener.local_addr().unwrap());
    let err = Store::open(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(text.ends_with(": no answer within 5s"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_from_a_live_server_are_precise_and_redacted() {
    let Some(pg) = common::start_postgres() else { return };
    // Trust authentication ignores the password, so the server is reached and answers that the
    // database is missing.
    let url = format!("postgres://bridgehead:s3cret@127.0.0.1:{}/nope", pg.port());
    let err = Store::open(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("database \"nope\" does not exist"), "{text}");
    assert!(text.contains("postgres://bridgehead:***@127.0.0.1:"), "{text}");
    assert!(!text.contains("s3cret") && !format!("{err:?}").contains("s3cret"), "{err:?}");

    // The postgresql:// spelling works too, and the store reports its URL redacted.
    let url = format!("postgresql://bridgehead:s3cret@127.0.0.1:{}/postgres", pg.port());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    assert!(!store.redacted_url().contains("s3cret"));
    assert!(!format!("{store:?}").contains("s3cret"));
    store.close().await;
}
