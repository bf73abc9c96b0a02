//! Webhook messages, deliveries, attempts and dead letters (migration 0005), for the webhook
//! receiver and its delivery worker.
//!
//! ## Design constraints
//!
//! - **Nothing acknowledged that was not committed.** [`Store::webhook_accept`] writes the
//!   message and one delivery row per destination in one transaction (an outbox: no moment where
//!   a stored message has no delivery), and returns only after the commit. On SQLite that commit
//!   runs with `synchronous=FULL` (fsync before it returns), unlike the store's other writes
//!   (`NORMAL`, see the crate docs), so an accepted webhook survives a power loss too.
//! - **Replays are refused by the database.** `(source, external_id)` is unique: of two
//!   concurrent deliveries of the same message id, on any nodes, one is stored and the other
//!   gets [`Accepted::Duplicate`]. The id is remembered until the message's `expires_at`.
//! - **Leases, so a crash loses nothing and a live worker is not doubled.** A worker claims due
//!   deliveries with [`Store::webhook_claim`], which sets `lease_owner` and `lease_until` in one
//!   statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so nodes claim disjoint rows; SQLite
//!   serialises writers). A claim whose lease ran out (its node died) is claimed again: every
//!   accepted message is delivered at least once. [`Store::webhook_record_attempt`] acts only
//!   for the lease's owner, so a worker that outlived its lease cannot overwrite the outcome of
//!   the one that took over.
//! - **Time is the caller's** (`now_ms`, Unix milliseconds), as elsewhere in the store.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, on_pool, read_pool};

/// At most this many messages are committed in one transaction by [`Store::webhook_accept`].
pub const ACCEPT_BATCH: usize = 256;

/// The longest [`Store::webhook_accept`] waits for its commit.
pub const ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One [`Store::webhook_accept`] call, queued for its batch.
pub(crate) struct AcceptJob {
    source: String,
    external_id: Option<String>,
    event_type: Option<String>,
    headers_json: String,
    body: Vec<u8>,
    retention_ms: i64,
    destinations: Vec<String>,
    ordering_key: Option<String>,
    now_ms: i64,
}

type AcceptReply = tokio::sync::oneshot::Sender<Result<Accepted, StateError>>;

/// The queue in front of the task that commits accepts in batches.
pub(crate) struct AcceptQueue(tokio::sync::mpsc::Sender<(AcceptJob, AcceptReply)>);

impl AcceptQueue {
    /// Starts the committing loop (on a thread of its own, see `committer`); it ends when every
    /// clone of the store is gone.
    fn start(store: Store) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<(AcceptJob, AcceptReply)>(ACCEPT_BATCH * 4);
        // The loop holds the pools, not the queue: dropping the last store closes the channel.
        let pools_only = Store { accepts: Arc::default(), records: Arc::default(), ..store };
        committer("bridgehead-accepts", move || async move {
            let pools = &pools_only;
            run_batches(rx, ACCEPT_BATCH, "webhook_accept", async |jobs: &[AcceptJob]| {
                pools.webhook_accept_batch(jobs).await
            })
            .await;
        });
        Self(tx)
    }
}

/// The loop of a batching queue: takes what is queued (up to `max`, leaving out jobs whose
/// caller gave up waiting), runs `batch` on it, and answers each job. When the database refused
/// the batch for something one row can cause (a constraint, a value), each job is run alone so
/// that only the failing ones fail; any other error (the database unreachable) fails them all
/// at once rather than one by one, each after its own timeout.
async fn run_batches<J, A: Clone>(
    mut rx: tokio::sync::mpsc::Receiver<(J, tokio::sync::oneshot::Sender<Result<A, StateError>>)>,
    max: usize,
    op: &'static str,
    batch: impl AsyncFn(&[J]) -> Result<Vec<A>, sqlx::Error>,
) {
    let mut queued = Vec::with_capacity(max);
    while rx.recv_many(&mut queued, max).await > 0 {
        queued.retain(|(_, reply)| !reply.is_closed());
        if queued.is_empty() {
            continue;
        }
        let (jobs, replies): (Vec<J>, Vec<_>) = queued.drain(..).unzip();
        match batch(&jobs).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(sqlx::Error::Database(_)) if jobs.len() > 1 => {
                for (job, reply) in jobs.iter().zip(replies) {
                    let one = batch(std::slice::from_ref(job))
                        .await
                        .map(|mut a| a.remove(0))
                        .map_err(StateError::query(op));
                    let _ = reply.send(one);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for reply in replies {
                    let _ =
                        reply.send(Err(StateError::Query { op, source: sqlx::Error::Protocol(why.clone()) }));
                }
            }
        }
    }
}

/// Runs a batch-committing loop on a thread of its own (a single-threaded runtime), not on
/// the runtime of whoever called first: each batch is several round trips to the database, and
/// on a gateway worker's runtime every one of them would wait its turn behind the requests that
/// worker serves, and the loop would end with that runtime.
/// The thread ends with the loop, when every sender is gone. When no thread can be started,
/// the queue is closed at once: its callers fail (nothing is acknowledged), and the next call
/// tries again.
fn committer<F: std::future::Future<Output = ()>>(name: &str, task: impl FnOnce() -> F + Send + 'static) {
    let started = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(task()),
            Err(e) => tracing::error!(error = %e, "no runtime for the webhook commits"),
        }
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "no thread for the webhook commits");
    }
}

/// One [`Store::webhook_record_attempt`] call, queued for its batch.
pub(crate) struct RecordJob {
    delivery_id: i64,
    owner: String,
    status: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
    response: Option<Vec<u8>>,
    state: &'static str,
    next_ms: i64,
    now_ms: i64,
}

type RecordReply = tokio::sync::oneshot::Sender<Result<bool, StateError>>;

/// The queue in front of the task that records attempts in batches.
pub(crate) struct RecordQueue(tokio::sync::mpsc::Sender<(RecordJob, RecordReply)>);

impl RecordQueue {
    fn start(store: Store) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<(RecordJob, RecordReply)>(RECORD_BATCH * 4);
        let pools_only = Store { accepts: Arc::default(), records: Arc::default(), ..store };
        committer("bridgehead-records", move || async move {
            let pools = &pools_only;
            run_batches(rx, RECORD_BATCH, "webhook_record_attempt", async |jobs: &[RecordJob]| {
                pools.webhook_record_batches(jobs).await
            })
            .await;
        });
        Self(tx)
    }
}

/// At most this many attempts are recorded in one transaction.
pub const RECORD_BATCH: usize = 128;

fn batch_failed(why: &str) -> StateError {
    StateError::Query { op: "webhook_accept", source: sqlx::Error::Protocol(why.to_owned()) }
}

/// At most this many rows are deleted by one purge statement (see [`Store::webhook_purge`]).
pub const WEBHOOK_PURGE_BATCH: i64 = 5_000;

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewWebhookMessage<'a> {
    /// `inbound:<receiver name>`.
    pub source: &'a str,
    /// The sender's message id, when it has one: the replay-protection key.
    pub external_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// The headers to pass on, as `[[name, value], …]` JSON (secrets already redacted).
    pub headers_json: &'a str,
    pub body: &'a [u8],
    /// How long the message (and its id, for replay protection) is kept, in ms.
    pub retention_ms: i64,
    /// Deliveries with the same key (to the same destination) go out one at a time, in order.
    pub ordering_key: Option<&'a str>,
}

/// What [`Store::webhook_accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored with this id, its deliveries pending.
    New(String),
    /// A message with the same `(source, external_id)` is already stored (this id): nothing
    /// was written.
    Duplicate(String),
}

/// A delivery claimed by a worker, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub message_id: String,
    pub destination: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub headers_json: String,
    pub body: Vec<u8>,
    pub received_at_ms: i64,
}

/// One attempt's result, for [`Store::webhook_record_attempt`].
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// The response status, if one came.
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// Why it failed, when it did.
    pub error: Option<&'a str>,
    /// The first KiB of the response body.
    pub response: Option<&'a [u8]>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// No more tries: the delivery is dead.
    Dead,
}

/// A delivery's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub message_id: String,
    pub destination: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// A refused request, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub source: String,
    pub reason: String,
    pub detail: String,
    pub headers_json: String,
    /// The signature headers as received (`[[name, value], …]` JSON), for a replay to verify
    /// them again. Never to be shown.
    pub signatures_json: String,
    /// The body kept: all of it, or its start when [`DeadLetter::body_bytes`] is larger.
    pub body: Vec<u8>,
    /// The body's length as received.
    pub body_bytes: i64,
    pub received_at_ms: i64,
    pub replayed_at_ms: Option<i64>,
    pub message_id: Option<String>,
    /// How much of the body is kept (`body` is empty in a listing, which does not read it).
    pub body_kept_bytes: i64,
}

/// A refused request to keep, for [`Store::webhook_dead_letter_add`].
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub source: &'a str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub headers_json: &'a str,
    /// The signature headers as received, `[[name, value], …]` JSON (see [`DeadLetter`]).
    pub signatures_json: &'a str,
    /// What is kept of the body (maybe only its start).
    pub body: &'a [u8],
    /// The body's length as received.
    pub body_bytes: i64,
}

/// One attempt of a delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub at_ms: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response: Option<Vec<u8>>,
}

/// At most this many rows go in one multi-row `INSERT` (well under both backends' parameter
/// limits). Such statements have one SQL text per row count: they are not kept prepared.
const ROWS_PER_STATEMENT: usize = 1000;

/// `head` + `row` repeated `rows` times (comma-separated) + `tail`, where each `?` of `row` is
/// a parameter: `?` as is on SQLite (anonymous parameters: binding `$N` names makes SQLite look
/// each name up in a list, quadratic in a statement of thousands), `$1`, `$2`, … numbered on
/// PostgreSQL.
fn rows_sql(head: &str, row: &str, rows: usize, tail: &str, numbered: bool) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (row.len() * 2 + 2));
    sql.push_str(head);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        if !numbered {
            sql.push_str(row);
            continue;
        }
        for part in row.split_inclusive('?') {
            match part.strip_suffix('?') {
                Some(text) => {
                    n += 1;
                    let _ = write!(sql, "{text}${n}");
                }
                None => sql.push_str(part),
            }
        }
    }
    sql.push_str(tail);
    sql
}

/// `prefix` + 32 hex digits: 12 of the Unix time in ms, then 20 random ones. Time first, so ids
/// made one after the other sort together and go in at the end of the primary-key index
/// instead of at random places all over it (a busy queue otherwise reads and rewrites pages
/// across the whole index on every commit); 80 random bits keep them unguessable and unique.
fn random_id(prefix: &str) -> String {
    let ms = u64::try_from(bridgehead_clock_ms()).unwrap_or(0) & 0xffff_ffff_ffff;
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).expect("the system random number generator failed");
    let mut out = format!("{prefix}{ms:012x}");
    for b in bytes {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn bridgehead_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads rows of either backend the same way.
trait RowExt {
    fn delivery(&self) -> Result<DeliveryRecord, sqlx::Error>;
    fn dead_letter(&self) -> Result<DeadLetter, sqlx::Error>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn delivery(&self) -> Result<DeliveryRecord, sqlx::Error> {
                Ok(DeliveryRecord {
                    id: self.try_get(0)?,
                    message_id: self.try_get(1)?,
                    destination: self.try_get(2)?,
                    state: self.try_get(3)?,
                    attempts: self.try_get(4)?,
                    next_attempt_at_ms: self.try_get(5)?,
                    last_status: self.try_get(6)?,
                    last_error: self.try_get(7)?,
                })
            }

            fn dead_letter(&self) -> Result<DeadLetter, sqlx::Error> {
                Ok(DeadLetter {
                    id: self.try_get(0)?,
                    source: self.try_get(1)?,
                    reason: self.try_get(2)?,
                    detail: self.try_get(3)?,
                    headers_json: self.try_get(4)?,
                    signatures_json: self.try_get(5)?,
                    body: self.try_get(6)?,
                    body_bytes: self.try_get(7)?,
                    received_at_ms: self.try_get(8)?,
                    replayed_at_ms: self.try_get(9)?,
                    message_id: self.try_get(10)?,
                    body_kept_bytes: self.try_get(11)?,
                })
            }
        }
    };
}
impl_row_ext!(sqlx::sqlite::SqliteRow);
impl_row_ext!(sqlx::postgres::PgRow);

const DELIVERY_COLUMNS: &str =
    "id, message_id, destination, state, attempts, next_attempt_at, last_status, last_error";
const DEAD_LETTER_COLUMNS: &str = "id, source, reason, detail, headers, signatures, body, body_bytes, received_at, \
     replayed_at, message_id, CAST(length(body) AS BIGINT)";
/// The same, but an empty body: a listing shows no bodies and does not read them.
const DEAD_LETTER_LIST_COLUMNS: &str = "id, source, reason, detail, headers, signatures, substr(body, 1, 0), body_bytes, \
     received_at, replayed_at, message_id, CAST(length(body) AS BIGINT)";

impl Store {
    /// Stores `msg` with one pending delivery per destination, due at once, in one transaction
    /// committed durably (see the module docs) before this returns; or, when a message with the
    /// same `(source, external_id)` is stored and not yet purged, writes nothing and says which.
    ///
    /// **Group commit:** concurrent calls on this node are committed together, up to
    /// [`ACCEPT_BATCH`] in one transaction of a few multi-row statements (one fsync): while
    /// one batch commits, the next gathers, so a busy receiver commits in large batches and an
    /// idle one commits each message at once, with no waiting window. Every caller hears only
    /// after its batch committed. When a batch fails, each of its messages is committed alone,
    /// so one the database refuses fails only its own caller. A call fails after
    /// [`ACCEPT_TIMEOUT`]. The same on PostgreSQL, where a transaction per message was about
    /// 4,000 accepts/s on the bench machine; several nodes each commit their own batches.
    pub async fn webhook_accept(
        &self,
        msg: &NewWebhookMessage<'_>,
        destinations: &[&str],
        now_ms: i64,
    ) -> Result<Accepted, StateError> {
        let job = AcceptJob {
            source: msg.source.to_owned(),
            external_id: msg.external_id.map(str::to_owned),
            event_type: msg.event_type.map(str::to_owned),
            headers_json: msg.headers_json.to_owned(),
            body: msg.body.to_vec(),
            retention_ms: msg.retention_ms,
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            ordering_key: msg.ordering_key.map(str::to_owned),
            now_ms,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = {
            let mut slot = self.accepts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // (Re)started when missing, or when its loop is gone (its thread could not start).
            if slot.as_ref().is_none_or(|q| q.0.is_closed()) {
                *slot = Some(AcceptQueue::start(self.clone()));
            }
            slot.as_ref().map(|q| q.0.clone()).expect("just set")
        };
        let wait = async {
            queue.send((job, reply)).await.map_err(|_| batch_failed("the accept queue stopped"))?;
            answer.await.unwrap_or_else(|_| Err(batch_failed("the accept queue stopped")))
        };
        // A database that does not answer (SQLite waits up to its busy timeout per statement)
        // fails the caller, who tells the sender to retry, rather than holding it.
        tokio::time::timeout(ACCEPT_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(batch_failed("the state database did not commit within 10 s")))
    }

    /// Commits `jobs` in one transaction: `Ok` with one answer per job, in order. The messages
    /// go in with one multi-row statement (the ones inserted come back by `RETURNING`), their
    /// deliveries with another (in chunks of [`ROWS_PER_STATEMENT`]): a batch costs a handful of
    /// statements, not two per message (each statement is a round trip to SQLite's thread).
    async fn webhook_accept_batch(&self, jobs: &[AcceptJob]) -> Result<Vec<Accepted>, sqlx::Error> {
        const EXISTING: &str =
            "SELECT id FROM bridgehead_webhook_messages WHERE source = $1 AND external_id = $2";
        let ids: Vec<String> = jobs.iter().map(|_| random_id("msg_")).collect();
        let numbered = matches!(self.pools, Pools::Postgres(_));
        let messages_sql = rows_sql(
            "INSERT INTO bridgehead_webhook_messages
             (id, source, external_id, event_type, headers, body, received_at, expires_at) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?)",
            jobs.len(),
            " ON CONFLICT (source, external_id) DO NOTHING RETURNING id",
            numbered,
        );
        // (job, destination) of every delivery, written once the inserted messages are known.
        macro_rules! batch {
            ($conn:expr) => {
                async {
                    let mut tx = sqlx::Connection::begin($conn).await?;
                    let mut q = sqlx::query_scalar::<_, String>(&messages_sql).persistent(false);
                    // Rows in the order of their unique key (stable: of two jobs with one key the
                    // first still wins): two nodes' batches with the same keys then lock them in
                    // the same order on PostgreSQL, where opposite orders would deadlock.
                    let mut order: Vec<usize> = (0..jobs.len()).collect();
                    order.sort_by(|&a, &b| {
                        (&jobs[a].source, &jobs[a].external_id).cmp(&(&jobs[b].source, &jobs[b].external_id))
                    });
                    for (job, id) in order.iter().map(|&i| (&jobs[i], &ids[i])) {
                        let expires = job.now_ms.saturating_add(job.retention_ms.max(0));
                        q = q
                            .bind(id)
                            .bind(&job.source)
                            .bind(&job.external_id)
                            .bind(&job.event_type)
                            .bind(&job.headers_json)
                            .bind(&job.body)
                            .bind(job.now_ms)
                            .bind(expires);
                    }
                    let inserted: std::collections::HashSet<String> =
                        q.fetch_all(&mut *tx).await?.into_iter().collect();
                    let mut out = Vec::with_capacity(jobs.len());
                    let mut deliveries: Vec<(&str, &AcceptJob, &str)> = Vec::new();
                    for (job, id) in jobs.iter().zip(&ids) {
                        if inserted.contains(id) {
                            deliveries.extend(job.destinations.iter().map(|d| (id.as_str(), job, d.as_str())));
                            out.push(Accepted::New(id.clone()));
                        } else {
                            let existing: String = sqlx::query_scalar(EXISTING)
                                .bind(&job.source)
                                .bind(&job.external_id)
                                .fetch_one(&mut *tx)
                                .await?;
                            out.push(Accepted::Duplicate(existing));
                        }
                    }
                    for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
                        let sql = rows_sql(
                            "INSERT INTO bridgehead_webhook_deliveries
                             (message_id, destination, state, attempts, next_attempt_at, updated_at, ordering_key) VALUES ",
                            "(?, ?, 'pending', 0, ?, ?, ?)",
                            chunk.len(),
                            "",
                            numbered,
                        );
                        let mut q = sqlx::query(&sql).persistent(false);
                        for (id, job, d) in chunk {
                            q = q.bind(*id).bind(*d).bind(job.now_ms).bind(job.now_ms).bind(&job.ordering_key);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(out)
                }
                .await
            };
        }
        match &self.pools {
            Pools::Sqlite(pool) => {
                let _turn = self.writer.lock().await;
                let mut conn = pool.acquire().await?;
                // An fsync before the commit returns, for this transaction only.
                sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                let result = batch!(&mut *conn);
                // Back to the pool's setting (on failure the connection keeps FULL: slower, never
                // less safe).
                let _ = sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await;
                result
            }
            Pools::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                batch!(&mut *conn)
            }
        }
    }

    /// Claims up to `limit` deliveries to `destination` that are due (`next_attempt_at <= now`)
    /// and not leased (or whose lease ran out), for `owner` until `now_ms + lease_ms`, oldest due
    /// first, with their messages. A delivery with an ordering key waits while an earlier
    /// delivery with the same key to the same destination is pending (being tried, or waiting
    /// for its retry): a failing message holds back the later ones of its key, and only those.
    /// Concurrent claimers on any node get disjoint deliveries. A
    /// node claims only the destinations its config knows, so nodes running different configs
    /// (a rolling change) leave each other's deliveries alone.
    pub async fn webhook_claim(
        &self,
        owner: &str,
        destination: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StateError> {
        const OP: &str = "webhook_claim";
        // The inner SELECT picks; PostgreSQL skips rows another claimer holds locked.
        let sql = |lock: &str| {
            format!(
                "UPDATE bridgehead_webhook_deliveries SET lease_owner = $1, lease_until = $2
                 WHERE id IN (SELECT d.id FROM bridgehead_webhook_deliveries d
                     WHERE d.state = 'pending' AND d.destination = $5 AND d.next_attempt_at <= $3
                         AND d.lease_until <= $3
                         AND (d.ordering_key IS NULL OR NOT EXISTS (
                             SELECT 1 FROM bridgehead_webhook_deliveries e
                             WHERE e.destination = d.destination AND e.ordering_key = d.ordering_key
                                 AND e.state = 'pending' AND (e.id < d.id OR e.lease_until > $3)))
                     ORDER BY d.next_attempt_at, d.id LIMIT $4 {lock})
                 RETURNING id, message_id, destination, attempts"
            )
        };
        const MESSAGES: &str =
            "SELECT id, headers, body, received_at FROM bridgehead_webhook_messages WHERE id IN (";
        let until = now_ms.saturating_add(lease_ms);
        let sql = sql(match self.pools {
            Pools::Sqlite(_) => "",
            Pools::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        });
        let claimed: Vec<(i64, String, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(owner)
                .bind(until)
                .bind(now_ms)
                .bind(limit)
                .bind(destination)
                .fetch_all(pool)
                .await
        })
        .map_err(StateError::query(OP))?;
        // The messages of the claimed deliveries, in one query.
        let mut wanted: Vec<&str> = claimed.iter().map(|c| c.1.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut messages: HashMap<String, (String, Vec<u8>, i64)> = HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            let sql = rows_sql(MESSAGES, "?", chunk.len(), ")", matches!(self.pools, Pools::Postgres(_)));
            let rows: Vec<(String, String, Vec<u8>, i64)> = read_pool!(self, pool => {
                let mut q = sqlx::query_as(&sql).persistent(false);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(pool).await
            })
            .map_err(StateError::query(OP))?;
            messages.extend(rows.into_iter().map(|(id, h, b, r)| (id, (h, b, r))));
        }
        let mut out = Vec::with_capacity(claimed.len());
        for (id, message_id, destination, attempts) in claimed {
            // A delivery's message goes only with it (cascade): always there.
            let Some((headers_json, body, received_at_ms)) = messages.get(&message_id).cloned() else {
                continue;
            };
            out.push(ClaimedDelivery {
                id,
                message_id,
                destination,
                attempts,
                headers_json,
                body,
                received_at_ms,
            });
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    /// Records attempt number `attempts + 1` of a delivery claimed by `owner`, and what follows
    /// ([`AttemptOutcome`]), releasing the lease, in one transaction. Returns false (and writes
    /// nothing) when `owner` no longer holds the lease: another worker took the delivery over.
    ///
    /// Concurrent calls are recorded together (up to [`RECORD_BATCH`] in one transaction of a
    /// few statements), as accepts are.
    pub async fn webhook_record_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &AttemptRecord<'_>,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        let (state, next_ms) = match outcome {
            AttemptOutcome::Delivered => ("delivered", now_ms),
            AttemptOutcome::RetryAt(at) => ("pending", at),
            AttemptOutcome::Dead => ("dead", now_ms),
        };
        let job = RecordJob {
            delivery_id,
            owner: owner.to_owned(),
            status: attempt.status.map(i64::from),
            latency_ms: attempt.latency_ms,
            error: attempt.error.map(str::to_owned),
            response: attempt.response.map(<[u8]>::to_vec),
            state,
            next_ms,
            now_ms,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = {
            let mut slot = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.as_ref().is_none_or(|q| q.0.is_closed()) {
                *slot = Some(RecordQueue::start(self.clone()));
            }
            slot.as_ref().map(|q| q.0.clone()).expect("just set")
        };
        let failed = || StateError::Query {
            op: "webhook_record_attempt",
            source: sqlx::Error::Protocol("the record queue stopped".into()),
        };
        let wait = async {
            queue.send((job, reply)).await.map_err(|_| failed())?;
            answer.await.unwrap_or_else(|_| Err(failed()))
        };
        // Bounded like an accept: an attempt not recorded is made again once its lease runs out.
        tokio::time::timeout(ACCEPT_TIMEOUT, wait).await.unwrap_or_else(|_| {
            Err(StateError::Query {
                op: "webhook_record_attempt",
                source: sqlx::Error::Protocol("the state database did not record within 10 s".into()),
            })
        })
    }

    /// Records `jobs` in transactions of [`Store::webhook_record_batch`], each with distinct
    /// delivery ids (two records of one delivery, a stale attempt's and its successor's, would
    /// both match its one updated row): the first record of each delivery, then the rest.
    async fn webhook_record_batches(&self, jobs: &[RecordJob]) -> Result<Vec<bool>, sqlx::Error> {
        let mut seen = std::collections::HashSet::with_capacity(jobs.len());
        if jobs.iter().all(|j| seen.insert(j.delivery_id)) {
            return self.webhook_record_batch(jobs).await;
        }
        let mut answers = vec![false; jobs.len()];
        let mut left: Vec<usize> = (0..jobs.len()).collect();
        while !left.is_empty() {
            let mut ids = std::collections::HashSet::new();
            let (now, later): (Vec<usize>, Vec<usize>) =
                left.iter().partition(|&&i| ids.insert(jobs[i].delivery_id));
            let round: Vec<&RecordJob> = now.iter().map(|&i| &jobs[i]).collect();
            let got = self.webhook_record_batch_of(&round).await?;
            for (i, a) in now.into_iter().zip(got) {
                answers[i] = a;
            }
            left = later;
        }
        Ok(answers)
    }

    async fn webhook_record_batch(&self, jobs: &[RecordJob]) -> Result<Vec<bool>, sqlx::Error> {
        let all: Vec<&RecordJob> = jobs.iter().collect();
        self.webhook_record_batch_of(&all).await
    }

    /// Records `jobs` in one transaction: one `UPDATE … FROM (VALUES …)` for the deliveries
    /// (only those still leased by their job's owner), one multi-row `INSERT` for their
    /// attempts. `Ok` with one answer per job, in order.
    async fn webhook_record_batch_of(&self, jobs: &[&RecordJob]) -> Result<Vec<bool>, sqlx::Error> {
        let numbered = matches!(self.pools, Pools::Postgres(_));
        let update = rows_sql(
            "WITH v (id, owner, state, next_at, status, error, now) AS (VALUES ",
            "(?, ?, ?, ?, ?, ?, ?)",
            jobs.len(),
            ") UPDATE bridgehead_webhook_deliveries
             SET attempts = attempts + 1, state = v.state, next_attempt_at = v.next_at,
                 lease_owner = NULL, lease_until = 0, last_status = v.status, last_error = v.error,
                 updated_at = v.now
             FROM v WHERE bridgehead_webhook_deliveries.id = v.id
                 AND bridgehead_webhook_deliveries.lease_owner = v.owner
                 AND bridgehead_webhook_deliveries.state = 'pending'
             RETURNING bridgehead_webhook_deliveries.id, bridgehead_webhook_deliveries.attempts",
            numbered,
        );
        macro_rules! batch {
            ($pool:expr) => {
                async {
                    let mut tx = $pool.begin().await?;
                    let mut q = sqlx::query_as::<_, (i64, i64)>(&update).persistent(false);
                    for j in jobs {
                        q = q
                            .bind(j.delivery_id)
                            .bind(&j.owner)
                            .bind(j.state)
                            .bind(j.next_ms)
                            .bind(j.status)
                            .bind(&j.error)
                            .bind(j.now_ms);
                    }
                    let numbers: HashMap<i64, i64> = q.fetch_all(&mut *tx).await?.into_iter().collect();
                    let recorded: Vec<&RecordJob> =
                        jobs.iter().copied().filter(|j| numbers.contains_key(&j.delivery_id)).collect();
                    if !recorded.is_empty() {
                        let sql = rows_sql(
                            "INSERT INTO bridgehead_webhook_attempts
                             (delivery_id, attempt, at, status, latency_ms, error, response) VALUES ",
                            "(?, ?, ?, ?, ?, ?, ?)",
                            recorded.len(),
                            "",
                            numbered,
                        );
                        let mut q = sqlx::query(&sql).persistent(false);
                        for j in &recorded {
                            q = q
                                .bind(j.delivery_id)
                                .bind(numbers[&j.delivery_id])
                                .bind(j.now_ms)
                                .bind(j.status)
                                .bind(j.latency_ms)
                                .bind(&j.error)
                                .bind(&j.response);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(jobs.iter().map(|j| numbers.contains_key(&j.delivery_id)).collect())
                }
                .await
            };
        }
        match &self.pools {
            Pools::Sqlite(pool) => {
                let _turn = self.writer.lock().await;
                batch!(pool)
            }
            Pools::Postgres(pool) => batch!(pool),
        }
    }

    /// Gives back a delivery claimed by `owner` without an attempt (its destination's breaker
    /// was open), due again at `next_attempt_at_ms`. False when `owner` no longer holds it.
    pub async fn webhook_release(
        &self,
        delivery_id: i64,
        owner: &str,
        next_attempt_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_webhook_deliveries
             SET lease_owner = NULL, lease_until = 0, next_attempt_at = $1, updated_at = $2
             WHERE id = $3 AND lease_owner = $4 AND state = 'pending'";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(next_attempt_at_ms)
            .bind(now_ms)
            .bind(delivery_id)
            .bind(owner)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query("webhook_release"))
    }

    /// Every owner holding a lease on a pending delivery (for a node to find the leases its
    /// previous run held when it died).
    pub async fn webhook_lease_owners(&self) -> Result<Vec<String>, StateError> {
        const SQL: &str = "SELECT DISTINCT lease_owner FROM bridgehead_webhook_deliveries
             WHERE state = 'pending' AND lease_owner IS NOT NULL ORDER BY lease_owner";
        read_pool!(self, pool => sqlx::query_scalar::<_, String>(SQL).fetch_all(pool).await)
            .map_err(StateError::query("webhook_lease_owners"))
    }

    /// Releases every lease `owner` holds (its process is known to be gone), so its deliveries
    /// are claimed at once rather than when the leases run out. Returns how many.
    pub async fn webhook_release_leases(&self, owner: &str) -> Result<u64, StateError> {
        const SQL: &str = "UPDATE bridgehead_webhook_deliveries SET lease_owner = NULL, lease_until = 0
             WHERE lease_owner = $1 AND state = 'pending'";
        on_pool!(self, pool => sqlx::query(SQL).bind(owner).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("webhook_release_leases"))
    }

    /// The deliveries of a message, by id.
    pub async fn webhook_deliveries(&self, message_id: &str) -> Result<Vec<DeliveryRecord>, StateError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM bridgehead_webhook_deliveries WHERE message_id = $1 ORDER BY id"
        );
        read_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(message_id).fetch_all(pool).await;
            rows.and_then(|rows| rows.iter().map(RowExt::delivery).collect::<Result<Vec<_>, _>>())
        })
        .map_err(StateError::query("webhook_deliveries"))
    }

    /// The attempts of a delivery, in order.
    pub async fn webhook_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRow>, StateError> {
        const SQL: &str = "SELECT attempt, at, status, latency_ms, error, response
             FROM bridgehead_webhook_attempts WHERE delivery_id = $1 ORDER BY attempt";
        type Row = (i64, i64, Option<i64>, i64, Option<String>, Option<Vec<u8>>);
        let rows: Vec<Row> =
            read_pool!(self, pool => sqlx::query_as(SQL).bind(delivery_id).fetch_all(pool).await)
                .map_err(StateError::query("webhook_attempts"))?;
        Ok(rows
            .into_iter()
            .map(|(attempt, at_ms, status, latency_ms, error, response)| AttemptRow {
                attempt,
                at_ms,
                status,
                latency_ms,
                error,
                response,
            })
            .collect())
    }

    /// Pending deliveries per destination: how many, and the oldest message's `received_at`.
    pub async fn webhook_backlog(&self) -> Result<Vec<(String, i64, i64)>, StateError> {
        const SQL: &str = "SELECT d.destination, COUNT(*), MIN(m.received_at)
             FROM bridgehead_webhook_deliveries d
             JOIN bridgehead_webhook_messages m ON m.id = d.message_id
             WHERE d.state = 'pending' GROUP BY d.destination ORDER BY d.destination";
        read_pool!(self, pool => sqlx::query_as::<_, (String, i64, i64)>(SQL).fetch_all(pool).await)
            .map_err(StateError::query("webhook_backlog"))
    }

    /// Keeps a refused request; returns its id (`dlq_…`).
    pub async fn webhook_dead_letter_add(
        &self,
        dl: &NewDeadLetter<'_>,
        now_ms: i64,
    ) -> Result<String, StateError> {
        const SQL: &str = "INSERT INTO bridgehead_webhook_dead_letters
             (id, source, reason, detail, headers, signatures, body, body_bytes, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let id = random_id("dlq_");
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&id)
                .bind(dl.source)
                .bind(dl.reason)
                .bind(dl.detail)
                .bind(dl.headers_json)
                .bind(dl.signatures_json)
                .bind(dl.body)
                .bind(dl.body_bytes)
                .bind(now_ms)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(StateError::query("webhook_dead_letter_add"))?;
        Ok(id)
    }

    /// Dead letters, newest first (by `received_at`, then `id`): of `source` when given, after
    /// the cursor `before` (the `(received_at_ms, id)` of the last one of the previous page)
    /// when given, at most `limit`.
    pub async fn webhook_dead_letters(
        &self,
        source: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StateError> {
        let sql = format!(
            "SELECT {DEAD_LETTER_LIST_COLUMNS} FROM bridgehead_webhook_dead_letters
             WHERE (CAST($1 AS TEXT) IS NULL OR source = CAST($1 AS TEXT))
                 AND (received_at < $2 OR (received_at = $2 AND id < $4))
             ORDER BY received_at DESC, id DESC LIMIT $3"
        );
        let (before_ms, before_id) = before.unwrap_or((i64::MAX, ""));
        read_pool!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(source)
                .bind(before_ms)
                .bind(limit)
                .bind(before_id)
                .fetch_all(pool)
                .await;
            rows.and_then(|rows| rows.iter().map(RowExt::dead_letter).collect::<Result<Vec<_>, _>>())
        })
        .map_err(StateError::query("webhook_dead_letters"))
    }

    /// One dead letter.
    pub async fn webhook_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StateError> {
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM bridgehead_webhook_dead_letters WHERE id = $1");
        read_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await;
            row.and_then(|row| row.as_ref().map(RowExt::dead_letter).transpose())
        })
        .map_err(StateError::query("webhook_dead_letter"))
    }

    /// Takes a dead letter for a replay: sets `replayed_at` when it is not set yet, atomically.
    /// False when it was replayed (or is being replayed) already.
    pub async fn webhook_dead_letter_take_for_replay(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_webhook_dead_letters SET replayed_at = $1 WHERE id = $2 AND replayed_at IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(now_ms).bind(id).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(StateError::query("webhook_dead_letter_take_for_replay"))
    }

    /// Gives back a dead letter taken for a replay that stored nothing.
    pub async fn webhook_dead_letter_give_back(&self, id: &str) -> Result<(), StateError> {
        const SQL: &str = "UPDATE bridgehead_webhook_dead_letters SET replayed_at = NULL WHERE id = $1 AND message_id IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(drop))
            .map_err(StateError::query("webhook_dead_letter_give_back"))
    }

    /// Marks a dead letter replayed into `message_id`.
    pub async fn webhook_dead_letter_replayed(
        &self,
        id: &str,
        message_id: &str,
        now_ms: i64,
    ) -> Result<(), StateError> {
        const SQL: &str =
            "UPDATE bridgehead_webhook_dead_letters SET replayed_at = $1, message_id = $2 WHERE id = $3";
        on_pool!(self, pool => sqlx::query(SQL).bind(now_ms).bind(message_id).bind(id).execute(pool).await.map(drop))
            .map_err(StateError::query("webhook_dead_letter_replayed"))
    }

    /// Deletes messages past their retention whose deliveries are all finished (with their
    /// deliveries and attempts), and dead letters received before `dead_letters_before_ms`; at
    /// most [`WEBHOOK_PURGE_BATCH`] of each per call. Returns how many rows went.
    pub async fn webhook_purge(&self, now_ms: i64, dead_letters_before_ms: i64) -> Result<u64, StateError> {
        const MESSAGES: &str = "DELETE FROM bridgehead_webhook_messages WHERE id IN (
             SELECT m.id FROM bridgehead_webhook_messages m WHERE m.expires_at <= $1
             AND NOT EXISTS (SELECT 1 FROM bridgehead_webhook_deliveries d
                 WHERE d.message_id = m.id AND d.state = 'pending')
             LIMIT $2)";
        const DEAD: &str = "DELETE FROM bridgehead_webhook_dead_letters WHERE id IN (
             SELECT id FROM bridgehead_webhook_dead_letters WHERE received_at < $1 LIMIT $2)";
        on_pool!(self, pool => {
            async {
                let a = sqlx::query(MESSAGES).bind(now_ms).bind(WEBHOOK_PURGE_BATCH).execute(pool).await?.rows_affected();
                let b = sqlx::query(DEAD)
                    .bind(dead_letters_before_ms)
                    .bind(WEBHOOK_PURGE_BATCH)
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok::<_, sqlx::Error>(a + b)
            }
            .await
        })
        .map_err(StateError::query("webhook_purge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        let head = "INSERT INTO t (a, b, c) VALUES ";
        assert_eq!(
            rows_sql(head, "(?, 'x', ?)", 2, " RETURNING a", false),
            format!("{head}(?, 'x', ?), (?, 'x', ?) RETURNING a")
        );
        assert_eq!(rows_sql(head, "(?, 'x', ?)", 2, "", true), format!("{head}($1, 'x', $2), ($3, 'x', $4)"));
        assert_eq!(rows_sql("IN (", "?", 3, ")", true), "IN ($1, $2, $3)");
    }

    #[test]
    fn ids_sort_by_time_and_differ() {
        let a = random_id("msg_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = random_id("msg_");
        assert_eq!((a.len(), b.len()), (36, 36));
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "{a} then {b}");
        let same_ms: std::collections::HashSet<String> = (0..1000).map(|_| random_id("msg_")).collect();
        assert_eq!(same_ms.len(), 1000);
    }
}
