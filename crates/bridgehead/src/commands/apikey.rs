//! `bridgehead apikey create|list|revoke`: API keys kept in the state database (`state.url` of
//! the config), for authenticators of kind `api_key` that read keys from state.
//!
//! A key is printed once, by `create`, and never again: the database holds only its SHA-256
//! digest, and `list` shows no more of a digest than its first 8 hex digits in text mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use bridgehead_auth::apikey;
use bridgehead_state::{ApiKeyRecord, Store};

use super::Output;

/// The longest consumer id `create` accepts, in characters.
const MAX_CONSUMER_CHARS: usize = 128;

/// How many hex digits of a digest `list` shows in text mode.
const DIGEST_PREFIX: usize = 8;

#[derive(clap::Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key and print it once; only its SHA-256 digest is stored.
    ///
    /// Example: bridgehead apikey create --authenticator partners --consumer acme --scope orders.read
    Create(CreateArgs),
    /// List API keys (the active ones unless --all), never the keys themselves.
    ///
    /// Example: bridgehead apikey list --authenticator partners --all
    List(ListArgs),
    /// Revoke an API key: exit 0 when revoked, 1 when there is no active key with that id.
    ///
    /// Example: bridgehead apikey revoke key_4q7mz2xkd3ab
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Clone)]
pub struct ConfigArg {
    /// Config file; its `state.url` names the database.
    #[arg(short, long, default_value = "bridgehead.yaml")]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The api_key authenticator the key belongs to (letters, digits, `_`, `.`, `-`).
    #[arg(long, value_name = "NAME")]
    authenticator: String,
    /// The consumer the key identifies (at most 128 characters, no control characters).
    #[arg(long, value_name = "ID")]
    consumer: String,
    /// A scope the key grants; repeat for several.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// `text` (the key alone on stdout) or `json` (`{"id","key","authenticator","consumer","scopes"}`).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only the keys of this authenticator.
    #[arg(long, value_name = "NAME")]
    authenticator: Option<String>,
    /// Include revoked keys.
    #[arg(long)]
    all: bool,
    /// `text` (a table) or `json` (an array, with full digests).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The key's id, as printed by `create` and `list` (`key_…`).
    id: String,
}

pub fn run(cmd: ApikeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApikeyCommand::Create(args) => create(args),
        ApikeyCommand::List(args) => list(args),
        ApikeyCommand::Revoke(args) => revoke(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    check_authenticator(&args.authenticator)?;
    check_consumer(&args.consumer)?;
    let loaded = bridgehead_config::load(&args.config.config).map_err(|d| anyhow!("{d}"))?;
    match loaded.config.authenticators.get(&args.authenticator) {
        Some(bridgehead_config::Authenticator::ApiKey(k)) if k.from_state => {}
        Some(bridgehead_config::Authenticator::ApiKey(_)) => bail!(
            "authenticator {:?} does not read keys from the state database: set `from_state: true` on it",
            args.authenticator
        ),
        Some(_) => bail!("authenticator {:?} is not of kind api_key", args.authenticator),
        None => {
            let known: Vec<&str> = loaded
                .config
                .authenticators
                .iter()
                .filter(|(_, a)| matches!(a, bridgehead_config::Authenticator::ApiKey(_)))
                .map(|(n, _)| n.as_str())
                .collect();
            bail!(
                "no authenticator {:?} in {} (api_key authenticators: {})",
                args.authenticator,
                args.config.config.display(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        }
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in args.scopes {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--scope must be non-empty without spaces or control characters, got {scope:?}");
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }

    let key = apikey::generate();
    let rec = ApiKeyRecord {
        id: apikey::generate_id(),
        authenticator: args.authenticator,
        consumer: args.consumer,
        sha256: apikey::sha256_hex(&key),
        scopes,
        created_at: now(),
        revoked_at: None,
    };
    with_store(args.config, async |store| Ok(store.api_key_insert(&rec).await?))?;

    match args.output {
        Output::Text => println!("{key}"),
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "id": rec.id,
                "key": key,
                "authenticator": rec.authenticator,
                "consumer": rec.consumer,
                "scopes": rec.scopes,
            })
        ),
    }
    eprintln!(
        "created API key {} for consumer {:?} of authenticator {}; store it now: it cannot be shown again",
        rec.id, rec.consumer, rec.authenticator
    );
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let keys = with_store(args.config, async |store| {
        Ok(store.api_key_list(args.authenticator.as_deref(), args.all).await?)
    })?;
    match args.output {
        Output::Json => {
            let keys: Vec<_> = keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "id": k.id,
                        "authenticator": k.authenticator,
                        "consumer": k.consumer,
                        "scopes": k.scopes,
                        "sha256": k.sha256,
                        "created_at": rfc3339(k.created_at),
                        "revoked_at": k.revoked_at.map(rfc3339),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(keys));
        }
        Output::Text if keys.is_empty() => {
            eprintln!("no {}API keys", if args.all { "" } else { "active " });
        }
        Output::Text => print!("{}", table(&keys)),
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let id = args.id;
    if with_store(args.config, async |store| Ok(store.api_key_revoke(&id, now()).await?))? {
        println!("revoked {id}");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("no active key with id {id:?}")
    }
}

/// Loads the config, opens its state store on a current-thread runtime, runs `f`, and closes the
/// store (which checkpoints a SQLite WAL) whatever `f` returned.
/// Loads the config, opens its state database, runs `f`, and closes the database.
pub(super) fn with_store<T>(
    config: ConfigArg,
    f: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let loaded = bridgehead_config::load(&config.config).map_err(|d| anyhow!("{d}"))?;
    super::runtime(Some(1))?.block_on(async {
        let store = Store::open(&loaded.config.state.url).await?;
        let result = f(&store).await;
        store.close().await;
        result
    })
}

fn check_authenticator(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("--authenticator must be a name of letters, digits, '_', '.' and '-', got {name:?}");
    }
    Ok(())
}

fn check_consumer(consumer: &str) -> anyhow::Result<()> {
    let chars = consumer.chars().count();
    if chars == 0 {
        bail!("--consumer must not be empty");
    }
    if chars > MAX_CONSUMER_CHARS {
        bail!("--consumer must be at most {MAX_CONSUMER_CHARS} characters, got {chars}");
    }
    if consumer.chars().any(char::is_control) {
        bail!("--consumer must not contain control characters, got {consumer:?}");
    }
    Ok(())
}

/// The table `list` prints: one line per key, columns padded to their widest cell.
fn table(keys: &[ApiKeyRecord]) -> String {
    let header =
        ["ID", "AUTHENTICATOR", "CONSUMER", "SCOPES", "SHA256", "CREATED", "REVOKED"].map(String::from);
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                printable(&k.id),
                printable(&k.authenticator),
                printable(&k.consumer),
                if k.scopes.is_empty() { "-".to_owned() } else { printable(&k.scopes.join(",")) },
                format!("{}…", k.sha256.get(..DIGEST_PREFIX).unwrap_or_default()),
                rfc3339(k.created_at),
                k.revoked_at.map_or_else(|| "-".to_owned(), rfc3339),
            ]
        })
        .collect();
    let mut widths = [0; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `s` with control characters replaced, so that a row edited outside the CLI cannot garble the
/// terminal.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// Unix seconds as RFC 3339 UTC, e.g. `2025-06-01T12:00:00Z`.
fn rfc3339(unix_seconds: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, in Unix seconds.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_consumers_are_checked() {
        for ok in ["partners", "a", "A-b_c.9"] {
            check_authenticator(ok).unwrap();
        }
        for bad in ["", "has space", "ü", "a/b", "a:b"] {
            let err = check_authenticator(bad).unwrap_err().to_string();
            assert!(err.starts_with("--authenticator must be a name of letters"), "{bad:?}: {err}");
        }
        check_consumer("acme GmbH ✓").unwrap();
        check_consumer(&"ü".repeat(128)).unwrap();
        assert_eq!(check_consumer("").unwrap_err().to_string(), "--consumer must not be empty");
        assert_eq!(
            check_consumer(&"x".repeat(129)).unwrap_err().to_string(),
            "--consumer must be at most 128 characters, got 129"
        );
        assert_eq!(
            check_consumer("a\nb").unwrap_err().to_string(),
            "--consumer must not contain control characters, got \"a\\nb\""
        );
    }

    #[test]
    fn table_pads_columns_and_shows_8_digest_digits() {
        let key = |id: &str, consumer: &str, revoked_at| ApiKeyRecord {
            id: id.into(),
            authenticator: "partners".into(),
            consumer: consumer.into(),
            sha256: "0123456789abcdef".repeat(4),
            scopes: vec!["a".into(), "b".into()],
            created_at: 1_750_000_000,
            revoked_at,
        };
        let text = table(&[key("key_1", "acme", None), key("key_22", "glo\tbex", Some(1_750_000_060))]);
        assert_eq!(
            text,
            "ID      AUTHENTICATOR  CONSUMER  SCOPES  SHA256     CREATED               REVOKED\n\
             key_1   partners       acme      a,b     01234567…  2025-06-15T15:06:40Z  -\n\
             key_22  partners       glo\u{fffd}bex   a,b     01234567…  2025-06-15T15:06:40Z  2025-06-15T15:07:40Z\n"
        );
    }
}
