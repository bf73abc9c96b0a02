//! [`Store`]: the one handle on durable state, and how it opens each backend.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};

use crate::StateError;
use crate::redact::{Secrets, redact_url};

/// The schema version this build creates: the highest migration number, the same for both
/// backends (a unit test holds the migration directories to that).
pub const SCHEMA_VERSION: i64 = 8;

/// How long [`Store::open`] waits for the database to answer, and a query for a free connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite statement waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pool bounds. SQLite serializes writers anyway; PostgreSQL connections are a shared, counted
/// resource on the server, so each node keeps a modest pool.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// How often SQLite migrations are attempted when concurrent openers of the same file apply them
/// first (see "Versioning" in the crate docs). Every lost race means another opener applied a
/// migration, so one attempt per migration plus one always suffices.
fn sqlite_migrate_attempts() -> u32 {
    u32::try_from(SQLITE_MIGRATOR.migrations.len()).unwrap_or(u32::MAX - 1) + 1
}

/// Meta key of the cluster identifier.
const CLUSTER_ID_KEY: &str = "cluster_id";

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An embedded SQLite file (or `sqlite::memory:`), for a single node.
    Sqlite,
    /// A PostgreSQL database shared by several nodes.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// One gateway node as recorded in `bridgehead_nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's identifier, as passed to [`Store::register_node`].
    pub node_id: String,
    /// The Bridgehead version the node runs.
    pub version: String,
    /// When the node last registered, in Unix milliseconds of that node's clock.
    pub started_at_ms: i64,
    /// When the node last registered or sent a heartbeat, in Unix milliseconds of its clock.
    pub last_seen_at_ms: i64,
}

/// The handle on durable state. Cloning is cheap (the pools are reference-counted), so every
/// subsystem keeps its own clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pools: Pools,
    /// `state.url` with its password replaced, for messages.
    pub(crate) redacted_url: Arc<str>,
    /// The queue of webhook accepts committed together (group commit), started with the first.
    pub(crate) accepts: Arc<std::sync::Mutex<Option<crate::webhooks::AcceptQueue>>>,
    /// The queue of webhook attempt records committed together, started with the first.
    pub(crate) records: Arc<std::sync::Mutex<Option<crate::webhooks::RecordQueue>>>,
    /// Taken around every statement or transaction on SQLite (`on_pool!`, and the webhook
    /// queue's batches), in turn: SQLite has one writer, and a writer that finds the database
    /// locked sleeps in its busy handler (1, 2, 5, 10 … 100 ms) while others keep taking the
    /// lock; a fair lock in the process hands it over without sleeping, so no writer of this
    /// process starves (before it, a steady webhook intake held delivery seconds behind).
    /// Other processes on the same file still meet the busy handler. Never taken twice: no
    /// `on_pool!` body calls the store again.
    pub(crate) writer: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's native pool. The body is expanded once per
/// backend, so one SQL text serves both where the dialects agree (`$N` placeholders,
/// `ON CONFLICT`); a method that needs different SQL matches on `self.pools` itself.
/// `on_pool!` for statements that only read: no turn (SQLite's readers never wait for its
/// writer in WAL mode, and a long read, the backlog gauge's, must not hold every writer up).
macro_rules! read_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pools {
            Pools::Sqlite($pool) => $body,
            Pools::Postgres($pool) => $body,
        }
    };
}
pub(crate) use read_pool;

macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pools {
            // Every SQLite statement (or transaction) of the store takes its turn: see
            // `Store::writer`.
            Pools::Sqlite($pool) => {
                let _turn = $store.writer.lock().await;
                $body
            }
            Pools::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Opens the store behind `state.url`, creating a SQLite file (and its parent directories)
    /// if needed, and applies the schema migrations this build knows before it returns.
    ///
    /// Accepts `sqlite://PATH` (relative to the working directory; `sqlite:///abs/path` for an
    /// absolute one), `sqlite::memory:` (tests: gone when the store is closed), and
    /// `postgres://…` / `postgresql://…`. Fails within [`CONNECT_TIMEOUT`] when the database does
    /// not answer; a refused connection fails at once rather than being retried, so a caller that
    /// wants to wait for a database that is still starting retries `open` itself.
    pub async fn open(url: &str) -> Result<Store, StateError> {
        let redacted = redact_url(url);
        let secrets = Secrets::of(url);
        let pools = if url == "sqlite::memory:" || url.starts_with("sqlite://") {
            Pools::Sqlite(open_sqlite(url, &redacted, &secrets).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pools::Postgres(open_postgres(url, &redacted, &secrets).await?)
        } else {
            return Err(StateError::UnsupportedScheme { got: redacted });
        };
        let store = Store {
            pools,
            redacted_url: redacted.into(),
            accepts: Arc::default(),
            records: Arc::default(),
            writer: Arc::default(),
        };
        tracing::info!(
            backend = %store.backend(),
            url = %store.redacted_url,
            schema_version = SCHEMA_VERSION,
            "state store opened"
        );
        Ok(store)
    }

    /// Which database is behind this store.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// `state.url` with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.redacted_url.to_string()
    }

    /// Runs `SELECT 1`: the readiness check that the database still answers.
    pub async fn ping(&self) -> Result<(), StateError> {
        read_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
            .map_err(StateError::query("ping"))
    }

    /// The highest migration version applied to the database (normally [`SCHEMA_VERSION`]).
    pub async fn schema_version(&self) -> Result<i64, StateError> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        read_pool!(self, pool => sqlx::query_scalar::<_, i64>(SQL).fetch_one(pool).await)
            .map_err(StateError::query("schema_version"))
    }

    /// The value of a `bridgehead_meta` key, if set.
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        const SQL: &str = "SELECT value FROM bridgehead_meta WHERE key = $1";
        read_pool!(self, pool => sqlx::query_scalar::<_, String>(SQL).bind(key).fetch_optional(pool).await)
            .map_err(StateError::query("meta_get"))
    }

    /// Sets a `bridgehead_meta` key, replacing any previous value.
    pub async fn meta_put(&self, key: &str, value: &str) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO bridgehead_meta (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(SQL).bind(key).bind(value).bind(now).execute(pool).await.map(drop))
            .map_err(StateError::query("meta_put"))
    }

    /// The cluster's identifier: 32 lowercase hex digits (128 random bits), created by the first
    /// node that asks and never changed after. Race-safe: every node inserts its own candidate
    /// with `ON CONFLICT DO NOTHING` and then reads back whichever one won, so nodes starting at
    /// the same time agree.
    pub async fn cluster_id(&self) -> Result<String, StateError> {
        const SQL: &str = "INSERT INTO bridgehead_meta (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING";
        if let Some(id) = self.meta_get(CLUSTER_ID_KEY).await? {
            return Ok(id);
        }
        let candidate = random_hex_128()?;
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(SQL).bind(CLUSTER_ID_KEY).bind(&candidate).bind(now).execute(pool).await.map(drop))
            .map_err(StateError::query("cluster_id"))?;
        self.meta_get(CLUSTER_ID_KEY)
            .await?
            // Only possible if someone deleted the row between our insert and this read.
            .ok_or(StateError::Query { op: "cluster_id", source: sqlx::Error::RowNotFound })
    }

    /// Records that `node_id` (re)started running `version`: sets both `started_at` and
    /// `last_seen_at` to now, creating the row or replacing the previous run's.
    pub async fn register_node(&self, node_id: &str, version: &str) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO bridgehead_nodes (node_id, version, started_at, last_seen_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (node_id) DO UPDATE SET version = excluded.version,
                 started_at = excluded.started_at, last_seen_at = excluded.last_seen_at";
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(SQL).bind(node_id).bind(version).bind(now).bind(now).execute(pool).await.map(drop))
            .map_err(StateError::query("register_node"))
    }

    /// Sets `last_seen_at` of a registered node to now. Fails with
    /// [`StateError::UnknownNode`] if the node has no row, so the caller registers again.
    pub async fn heartbeat(&self, node_id: &str) -> Result<(), StateError> {
        const SQL: &str = "UPDATE bridgehead_nodes SET last_seen_at = $1 WHERE node_id = $2";
        let now = now_ms();
        let updated = on_pool!(self, pool => sqlx::query(SQL).bind(now).bind(node_id).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("heartbeat"))?;
        if updated == 0 {
            return Err(StateError::UnknownNode { node_id: node_id.to_owned() });
        }
        Ok(())
    }

    /// Every registered node, ordered by `node_id`.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StateError> {
        const SQL: &str = "SELECT node_id, version, started_at, last_seen_at
             FROM bridgehead_nodes ORDER BY node_id";
        read_pool!(self, pool => {
            let rows = sqlx::query(SQL).fetch_all(pool).await;
            rows.and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(NodeRecord {
                            node_id: row.try_get(0)?,
                            version: row.try_get(1)?,
                            started_at_ms: row.try_get(2)?,
                            last_seen_at_ms: row.try_get(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(StateError::query("nodes"))
    }

    /// Closes every connection of this store and its clones; later calls fail. For SQLite this
    /// also checkpoints the WAL into the database file (when the last connection closes).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).field("url", &self.redacted_url).finish()
    }
}

async fn open_sqlite(url: &str, redacted: &str, secrets: &Secrets) -> Result<SqlitePool, StateError> {
    let invalid = |reason: String| StateError::InvalidUrl { url: redacted.to_owned(), reason };
    let options = SqliteConnectOptions::from_str(url).map_err(|e| invalid(secrets.scrub(&e.to_string())))?;
    let (database, query) = url
        .trim_start_matches("sqlite://")
        .split_once('?')
        .unwrap_or((url.trim_start_matches("sqlite://"), ""));
    let in_memory =
        url == "sqlite::memory:" || database == ":memory:" || query.split('&').any(|p| p == "mode=memory");
    if !in_memory {
        if database.is_empty() {
            return Err(invalid(
                "it names no file; use sqlite://PATH, e.g. sqlite://bridgehead.db".to_owned(),
            ));
        }
        create_private_file(options.get_filename()).map_err(|(path, source)| StateError::CreateFile {
            url: redacted.to_owned(),
            path,
            source,
        })?;
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        // 16 MiB of page cache per connection (SQLite's default is 2 MiB): a busy webhook queue
        // otherwise reads its index pages back from the OS on every commit.
        .pragma("cache_size", "-16384")
        .foreign_keys(true);
    let mut pool_options =
        SqlitePoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS).acquire_timeout(CONNECT_TIMEOUT);
    if in_memory {
        // The database lives only as long as one of its connections does.
        pool_options = pool_options.min_connections(1).idle_timeout(None).max_lifetime(None);
    }
    let pool = connect_sqlite(pool_options, options).await.map_err(|e| StateError::Connect {
        url: redacted.to_owned(),
        reason: secrets.scrub(&e.to_string()),
    })?;

    // Several processes opening a fresh file at once may race to apply the same migration (SQLite
    // has no lock sqlx can take); the loser's transaction fails and rolls back, and a new attempt
    // finds the migration applied.
    let mut attempt = 1;
    loop {
        match SQLITE_MIGRATOR.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                if attempt < sqlite_migrate_attempts() =>
            {
                attempt += 1;
            }
            Err(e) => {
                pool.close().await;
                return Err(migrate_error(e, redacted, secrets));
            }
        }
    }
}

/// Connects the pool, retrying while SQLite answers "busy" for up to [`CONNECT_TIMEOUT`].
///
/// A connection's first statements set `journal_mode=WAL`. While another connection is switching
/// a fresh file to WAL, SQLite may refuse with `SQLITE_BUSY` at once instead of waiting out the
/// busy timeout (it does not wait where waiting could deadlock), so openers racing on a new file
/// back off and try again here.
async fn connect_sqlite(
    pool_options: SqlitePoolOptions,
    options: SqliteConnectOptions,
) -> Result<SqlitePool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut backoff = Duration::from_millis(2);
    loop {
        match pool_options.clone().connect_with(options.clone()).await {
            Err(sqlx::Error::Database(e))
                if is_sqlite_busy(e.code().as_deref())
                    && tokio::time::Instant::now() + backoff < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Whether a SQLite extended result code is one of the `SQLITE_BUSY` family (5, 261, 517, …).
fn is_sqlite_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5)
}

async fn open_postgres(url: &str, redacted: &str, secrets: &Secrets) -> Result<PgPool, StateError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StateError::InvalidUrl {
        url: redacted.to_owned(),
        reason: secrets.scrub(&e.to_string()),
    })?;
    let options = if options.get_application_name().is_none() {
        options.application_name("bridgehead")
    } else {
        options
    };
    let connect_error = |reason: String| StateError::Connect { url: redacted.to_owned(), reason };
    // Connect once directly rather than through the pool: the pool retries a refused connection
    // until its timeout and then reports only "pool timed out", losing the reason.
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(e)) => return Err(connect_error(secrets.scrub(&e.to_string()))),
        Err(_) => {
            return Err(connect_error(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())));
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options);
    // sqlx holds a PostgreSQL advisory lock while migrating, so nodes starting together apply
    // each migration once. (Migrating through the pool rather than the probe connection keeps
    // `open`'s future `Send`.)
    if let Err(e) = POSTGRES_MIGRATOR.run(&pool).await {
        pool.close().await;
        return Err(migrate_error(e, redacted, secrets));
    }
    Ok(pool)
}

fn migrate_error(e: MigrateError, redacted: &str, secrets: &Secrets) -> StateError {
    let reason = match e {
        MigrateError::VersionMissing(version) => format!(
            "the database has migration {version}, which this build does not know (it knows up to \
             {SCHEMA_VERSION}): it was migrated by a newer Bridgehead; run that version or restore \
             a backup"
        ),
        other => secrets.scrub(&other.to_string()),
    };
    StateError::Migrate { url: redacted.to_owned(), reason }
}

/// Creates `path`'s missing parent directories (mode 0700) and the file itself (mode 0600) if it
/// does not exist yet, so that state, which holds the OAuth issuer's signing keys, is private to
/// the gateway's user. SQLite gives the `-wal` and `-shm` files the database file's permissions.
fn create_private_file(path: &Path) -> Result<(), (std::path::PathBuf, io::Error)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| (parent.to_path_buf(), e))?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err((path.to_path_buf(), e)),
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// 128 bits from the operating system's CSPRNG as 32 lowercase hex digits.
fn random_hex_128() -> Result<String, StateError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StateError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations_up_to_schema_version() {
        let versions = |m: &Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&SQLITE_MIGRATOR), versions(&POSTGRES_MIGRATOR));
        assert_eq!(versions(&SQLITE_MIGRATOR).last(), Some(&SCHEMA_VERSION));
    }

    #[test]
    fn random_ids_are_128_bit_hex_and_differ() {
        let (a, b) = (random_hex_128().unwrap(), random_hex_128().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    /// The per-connection settings promised in the crate docs, read back from a pooled connection.
    #[tokio::test]
    async fn sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        let Pools::Sqlite(pool) = &store.pools else { unreachable!() };
        let mut conn = pool.acquire().await.unwrap();
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("synchronous", "1"), // NORMAL
            ("busy_timeout", "5000"),
            ("foreign_keys", "1"),
        ] {
            let value: String =
                sqlx::query_scalar(&format!("SELECT CAST((SELECT * FROM pragma_{pragma}) AS TEXT)"))
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
        drop(conn);
        store.close().await;
    }
}
