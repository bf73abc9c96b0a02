//! End-to-end: `bridgehead apikey create|list|revoke` against a SQLite state file in a temp dir.

use std::path::PathBuf;

use bridgehead_state::Store;

use crate::support::bridgehead;

/// A temp dir holding `bridgehead.yaml` whose state is `state.db` beside it (absolute URL).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        std::fs::write(
            setup.config(),
            format!(
                "state: {{ url: \"{}\" }}\nauthenticators:\n  partners:\n    api_key: {{ from_state: true }}\n  internal:\n    api_key: {{ from_state: true }}\n  p:\n    api_key: {{ from_state: true }}\n  fixed:\n    api_key: {{ keys: [{{ consumer: c, sha256: \"{}\" }}] }}\n",
                setup.url(),
                "0".repeat(64)
            ),
        )
        .unwrap();
        setup
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("bridgehead.yaml")
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("state.db").display())
    }

    /// Runs `bridgehead apikey <args> -c <config>`.
    fn apikey(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config();
        let mut all = vec!["apikey"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-c", config.to_str().unwrap()]);
        bridgehead(&all)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_utc(s: &str) -> bool {
    s.len() == 20
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn create_list_revoke_round_trip() {
    let s = Setup::new();

    // create: the key alone on stdout, the id and the warning on stderr.
    let (code, out, err) = s.apikey(&[
        "create",
        "--authenticator",
        "partners",
        "--consumer",
        "acme",
        "--scope",
        "orders.read",
        "--scope",
        "orders.write",
    ]);
    assert_eq!(code, 0, "{err}");
    let key = out.strip_suffix('\n').unwrap();
    assert!(!key.contains('\n'), "one line only: {out:?}");
    assert!(key.starts_with("bh_") && key.len() == 46, "{key}");
    assert!(err.contains("store it now: it cannot be shown again"), "{err}");
    let id = err.split_whitespace().find(|w| w.starts_with("key_")).unwrap().to_owned();
    assert_eq!(id.len(), 16, "{err}");
    assert!(!err.contains(key), "the key is printed once, on stdout");

    // The database holds the key's digest, never the key.
    let store = Store::open(&s.url()).await.unwrap();
    let recs = store.api_key_list(None, true).await.unwrap();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.id, id);
    assert_eq!(rec.sha256, bridgehead_auth::apikey::sha256_hex(key));
    assert_eq!((rec.authenticator.as_str(), rec.consumer.as_str()), ("partners", "acme"));
    assert_eq!(rec.scopes, ["orders.read", "orders.write"]);
    assert_eq!(rec.revoked_at, None);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - 60..=now).contains(&rec.created_at), "{} vs {now}", rec.created_at);
    store.close().await;

    // list: a table with the id, the first 8 digest digits and no more.
    let (code, out, err) = s.apikey(&["list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "AUTHENTICATOR", "CONSUMER", "SCOPES", "SHA256", "CREATED", "REVOKED"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..4], [id.as_str(), "partners", "acme", "orders.read,orders.write"]);
    assert_eq!(row[4], format!("{}…", &rec.sha256[..8]));
    assert!(is_rfc3339_utc(row[5]), "{}", row[5]);
    assert_eq!(row[6], "-");
    assert!(!out.contains(&rec.sha256[..9]) && !out.contains(key), "{out}");

    // list --output json: full records.
    let (code, out, _) = s.apikey(&["list", "--output", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["sha256"], rec.sha256.as_str());
    assert_eq!(v[0]["scopes"], serde_json::json!(["orders.read", "orders.write"]));
    assert!(is_rfc3339_utc(v[0]["created_at"].as_str().unwrap()), "{out}");
    assert_eq!(v[0]["revoked_at"], serde_json::Value::Null);

    // revoke, then it is gone from the default list and shown revoked with --all.
    let (code, out, err) = s.apikey(&["revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("revoked {id}\n"));
    let (code, out, err) = s.apikey(&["list"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("no active API keys"), "{err}");
    let (code, out, _) = s.apikey(&["list", "--all"]);
    assert_eq!(code, 0);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], id);
    assert!(is_rfc3339_utc(row[6]), "{out}");

    // Revoking again, or an unknown id, fails.
    for unknown in [id.as_str(), "key_nope"] {
        let (code, out, err) = s.apikey(&["revoke", unknown]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(&format!("no active key with id \"{unknown}\"")), "{err}");
    }
}

#[test]
fn create_json_and_list_filter_by_authenticator() {
    let s = Setup::new();
    let (code, out, err) =
        s.apikey(&["create", "--authenticator", "internal", "--consumer", "svc-9", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["key"].as_str().unwrap().starts_with("bh_"), "{out}");
    assert!(v["id"].as_str().unwrap().starts_with("key_"), "{out}");
    assert_eq!(v["authenticator"], "internal");
    assert_eq!(v["consumer"], "svc-9");
    assert_eq!(v["scopes"], serde_json::json!([]));
    let (code, _, err) = s.apikey(&["create", "--authenticator", "partners", "--consumer", "acme"]);
    assert_eq!(code, 0, "{err}");

    let (_, out, _) = s.apikey(&["list", "--authenticator", "internal", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let consumers: Vec<&str> =
        v.as_array().unwrap().iter().map(|k| k["consumer"].as_str().unwrap()).collect();
    assert_eq!(consumers, ["svc-9"]);
    let (_, out, _) = s.apikey(&["list"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out, err) = s.apikey(&["list", "--authenticator", "nobody"]);
    assert_eq!(out, "", "{err}");
}

#[test]
fn bad_input_exits_1_with_a_message_and_stores_nothing() {
    let s = Setup::new();
    let long = "x".repeat(129);
    let cases: [(&[&str], &str); 8] = [
        (&["--authenticator", "partners", "--consumer", ""], "--consumer must not be empty"),
        (
            &["--authenticator", "partners", "--consumer", &long],
            "--consumer must be at most 128 characters, got 129",
        ),
        (
            &["--authenticator", "partners", "--consumer", "a\nb"],
            "--consumer must not contain control characters",
        ),
        (&["--authenticator", "bad name", "--consumer", "acme"], "--authenticator must be a name of letters"),
        (&["--authenticator", "", "--consumer", "acme"], "--authenticator must be a name of letters"),
        (&["--authenticator", "p", "--consumer", "acme", "--scope", "a b"], "--scope must be non-empty"),
        (&["--authenticator", "nobody", "--consumer", "acme"], "no authenticator \"nobody\""),
        (&["--authenticator", "fixed", "--consumer", "acme"], "set `from_state: true`"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let (code, out, err) = s.apikey(&all);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
    }
    // Validation runs before the database is opened.
    assert!(!s.dir.path().join("state.db").exists());

    // A missing option is a usage error (2); a config that cannot be read is an error (1).
    let (code, _, _) = s.apikey(&["create", "--consumer", "acme"]);
    assert_eq!(code, 2);
    let missing = s.dir.path().join("missing.yaml");
    let (code, _, err) = bridgehead(&["apikey", "list", "-c", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}: cannot read", missing.display())), "{err}");
}

#[test]
fn help_has_examples() {
    for sub in ["create", "list", "revoke"] {
        let (code, out, _) = bridgehead(&["apikey", sub, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains(&format!("Example: bridgehead apikey {sub}")), "{out}");
        assert!(out.contains("-c, --config <CONFIG>"), "{out}");
    }
}
