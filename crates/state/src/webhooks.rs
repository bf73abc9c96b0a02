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

use std::sync::Arc;

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, on_pool};

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
    /// Starts the committing task (on the calling runtime); it ends when every clone of the
    /// store is gone.
    fn start(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(AcceptJob, AcceptReply)>(ACCEPT_BATCH * 4);
        // The task holds the pools, not the queue: dropping the last store closes the channel.
        let pools_only = Store { accepts: Arc::default(), ..store };
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(ACCEPT_BATCH);
            while rx.recv_many(&mut batch, ACCEPT_BATCH).await > 0 {
                let (jobs, replies): (Vec<AcceptJob>, Vec<AcceptReply>) = batch.drain(..).unzip();
                match pools_only.webhook_accept_batch(&jobs).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    // One message the database refuses must not fail the others of its batch:
                    // each is committed alone, and only the failing ones fail.
                    Err(_) => {
                        for (job, reply) in jobs.iter().zip(replies) {
                            let one = pools_only
                                .webhook_accept_one(job)
                                .await
                                .map_err(|e| batch_failed(&e.to_string()));
                            let _ = reply.send(one);
                        }
                    }
                }
            }
        });
        Self(tx)
    }
}

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

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", crate::new_idempotency_owner())
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
                })
            }
        }
    };
}
impl_row_ext!(sqlx::sqlite::SqliteRow);
impl_row_ext!(sqlx::postgres::PgRow);

const DELIVERY_COLUMNS: &str =
    "id, message_id, destination, state, attempts, next_attempt_at, last_status, last_error";
const DEAD_LETTER_COLUMNS: &str =
    "id, source, reason, detail, headers, signatures, body, body_bytes, received_at, replayed_at, message_id";

impl Store {
    /// Stores `msg` with one pending delivery per destination, due at once, in one transaction
    /// committed durably (see the module docs) before this returns; or, when a message with the
    /// same `(source, external_id)` is stored and not yet purged, writes nothing and says which.
    ///
    /// **Group commit (SQLite):** concurrent calls are committed together, up to
    /// [`ACCEPT_BATCH`] in one transaction (one fsync, SQLite having one writer anyway): while
    /// one batch commits, the next gathers, so a busy receiver commits in large batches and an
    /// idle one commits each message at once, with no waiting window. Every caller hears only
    /// after its batch committed. When a batch fails, each of its messages is committed alone,
    /// so one the database refuses fails only its own caller. A call fails after
    /// [`ACCEPT_TIMEOUT`]. On PostgreSQL each call is its own transaction (the server groups
    /// concurrent commits itself).
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
        if matches!(self.pools, Pools::Postgres(_)) {
            // PostgreSQL commits concurrent transactions on parallel connections and groups their
            // WAL flushes itself: each accept is its own transaction.
            return self.webhook_accept_one(&job).await.map_err(StateError::query("webhook_accept"));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = {
            let mut slot = self.accepts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // (Re)started when missing, or when its task is gone (the runtime that ran it ended).
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

    /// Commits one job in a transaction of its own.
    async fn webhook_accept_one(&self, job: &AcceptJob) -> Result<Accepted, sqlx::Error> {
        self.webhook_accept_batch(std::slice::from_ref(job)).await.map(|mut a| a.remove(0))
    }

    /// Commits `jobs` in one transaction: `Ok` with one answer per job, in order.
    async fn webhook_accept_batch(&self, jobs: &[AcceptJob]) -> Result<Vec<Accepted>, sqlx::Error> {
        const INSERT: &str = "INSERT INTO bridgehead_webhook_messages
             (id, source, external_id, event_type, headers, body, received_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (source, external_id) DO NOTHING";
        const EXISTING: &str =
            "SELECT id FROM bridgehead_webhook_messages WHERE source = $1 AND external_id = $2";
        const DELIVERY: &str = "INSERT INTO bridgehead_webhook_deliveries
             (message_id, destination, state, attempts, next_attempt_at, updated_at, ordering_key)
             VALUES ($1, $2, 'pending', 0, $3, $3, $4)";
        macro_rules! batch {
            ($conn:expr) => {
                async {
                    let mut tx = sqlx::Connection::begin($conn).await?;
                    let mut out = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        let id = random_id("msg_");
                        let expires = job.now_ms.saturating_add(job.retention_ms.max(0));
                        let inserted = sqlx::query(INSERT)
                            .bind(&id)
                            .bind(&job.source)
                            .bind(&job.external_id)
                            .bind(&job.event_type)
                            .bind(&job.headers_json)
                            .bind(&job.body)
                            .bind(job.now_ms)
                            .bind(expires)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if inserted == 0 {
                            let existing: String = sqlx::query_scalar(EXISTING)
                                .bind(&job.source)
                                .bind(&job.external_id)
                                .fetch_one(&mut *tx)
                                .await?;
                            out.push(Accepted::Duplicate(existing));
                        } else {
                            for d in &job.destinations {
                                sqlx::query(DELIVERY)
                                    .bind(&id)
                                    .bind(d)
                                    .bind(job.now_ms)
                                    .bind(&job.ordering_key)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            out.push(Accepted::New(id));
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(out)
                }
                .await
            };
        }
        match &self.pools {
            Pools::Sqlite(pool) => {
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
        const MESSAGE: &str =
            "SELECT headers, body, received_at FROM bridgehead_webhook_messages WHERE id = $1";
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
        let mut out = Vec::with_capacity(claimed.len());
        for (id, message_id, destination, attempts) in claimed {
            let (headers_json, body, received_at_ms): (String, Vec<u8>, i64) = on_pool!(self, pool => {
                sqlx::query_as(MESSAGE).bind(&message_id).fetch_one(pool).await
            })
            .map_err(StateError::query(OP))?;
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
    pub async fn webhook_record_attempt(
        &self,
        delivery_id: i64,
        owner: &str,
        attempt: &AttemptRecord<'_>,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const OP: &str = "webhook_record_attempt";
        const UPDATE: &str = "UPDATE bridgehead_webhook_deliveries
             SET attempts = attempts + 1, state = $1, next_attempt_at = $2, lease_owner = NULL,
                 lease_until = 0, last_status = $3, last_error = $4, updated_at = $5
             WHERE id = $6 AND lease_owner = $7 AND state = 'pending'
             RETURNING attempts";
        const ATTEMPT: &str = "INSERT INTO bridgehead_webhook_attempts
             (delivery_id, attempt, at, status, latency_ms, error, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let (state, next) = match outcome {
            AttemptOutcome::Delivered => ("delivered", now_ms),
            AttemptOutcome::RetryAt(at) => ("pending", at),
            AttemptOutcome::Dead => ("dead", now_ms),
        };
        let status = attempt.status.map(i64::from);
        on_pool!(self, pool => {
            async {
                let mut tx = pool.begin().await?;
                let number: Option<i64> = sqlx::query_scalar(UPDATE)
                    .bind(state)
                    .bind(next)
                    .bind(status)
                    .bind(attempt.error)
                    .bind(now_ms)
                    .bind(delivery_id)
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(number) = number else {
                    tx.rollback().await?;
                    return Ok(false);
                };
                sqlx::query(ATTEMPT)
                    .bind(delivery_id)
                    .bind(number)
                    .bind(now_ms)
                    .bind(status)
                    .bind(attempt.latency_ms)
                    .bind(attempt.error)
                    .bind(attempt.response)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(true)
            }
            .await
        })
        .map_err(StateError::query(OP))
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
        on_pool!(self, pool => sqlx::query_scalar::<_, String>(SQL).fetch_all(pool).await)
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
        on_pool!(self, pool => {
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
            on_pool!(self, pool => sqlx::query_as(SQL).bind(delivery_id).fetch_all(pool).await)
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
        on_pool!(self, pool => sqlx::query_as::<_, (String, i64, i64)>(SQL).fetch_all(pool).await)
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
            "SELECT {DEAD_LETTER_COLUMNS} FROM bridgehead_webhook_dead_letters
             WHERE (CAST($1 AS TEXT) IS NULL OR source = CAST($1 AS TEXT))
                 AND (received_at < $2 OR (received_at = $2 AND id < $4))
             ORDER BY received_at DESC, id DESC LIMIT $3"
        );
        let (before_ms, before_id) = before.unwrap_or((i64::MAX, ""));
        on_pool!(self, pool => {
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
        on_pool!(self, pool => {
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
