//! Idempotency records in `bridgehead_idempotency` (migration 0004), for the gateway's
//! `Idempotency-Key` support (IETF draft "The Idempotency-Key HTTP Header Field"): the first
//! request with a key runs and its response is stored; a retry with the same key and the same
//! request gets that response again instead of running twice.
//!
//! A record is identified by `(scope, key)`: the scope is the caller's (e.g. route and consumer),
//! so two consumers never share a key. It holds the request's `fingerprint` (hex SHA-256 chosen by
//! the caller), so the same key with another request is refused rather than answered with the
//! wrong response, and the `owner` token of the begin that holds it
//! ([`new_idempotency_owner`]), so only that request can complete or release it.
//! [`crate::Redis`] implements the same contract for deployments that share Redis instead of
//! PostgreSQL.
//!
//! ## Design constraints
//!
//! - **One owner, even across nodes.** [`Store::idempotency_begin`] is one
//!   `INSERT … ON CONFLICT DO UPDATE … WHERE <takeover> RETURNING`: of any number of concurrent
//!   callers on any number of nodes, exactly one gets [`IdempotencyBegin::Started`] (the row is
//!   the lock; PostgreSQL re-checks the `WHERE` against the committed row, SQLite serialises
//!   writers). Only after a refusal does a second statement read the row to say what is there.
//! - **Leases, so a crash cannot block a key.** An in-flight record carries `locked_until`; once
//!   that has passed without [`Store::idempotency_complete`], the next begin takes the record
//!   over. A node that outlives its lease and completes late still succeeds if nobody took over
//!   (still its owner token, still in flight); the caller picks a lease longer than its upstream
//!   timeout.
//! - **Owner tokens, so a late request cannot touch its successor's record.** Each begin passes a
//!   fresh random `owner` ([`new_idempotency_owner`]), stored when the record is created or
//!   taken over (a takeover replaces it). [`Store::idempotency_complete`] and
//!   [`Store::idempotency_release`] match on `(scope, key, owner)` and in flight, never on the
//!   fingerprint alone: a request that outlived its lease and was taken over by another with the
//!   same fingerprint neither writes its response into the new record nor deletes it.
//! - **Time is the caller's** (`now_ms`, Unix milliseconds), like the rest of the store's
//!   millisecond columns: nodes sharing PostgreSQL are expected to run NTP. A record is live while
//!   `expires_at > now`. `ttl_ms` must be at least `lease_ms`, so an in-flight record never
//!   expires while its lease holds.
//! - **What a power loss can undo** (SQLite with `synchronous=NORMAL`, see the crate docs): the
//!   last commits before the loss, so a request completed just before it may run again on retry.
//!   The draft allows that (a key is a best effort, not a transaction); PostgreSQL deployments
//!   are not affected.

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, on_pool};

/// At most this many rows are deleted by one [`Store::idempotency_purge`], so a purge after a
/// long pause does not hold a write lock for long; the caller purges again while it returns this.
pub const IDEMPOTENCY_PURGE_BATCH: u64 = 10_000;

/// A fresh owner token for one `idempotency_begin` ([`Store::idempotency_begin`],
/// [`crate::Redis::idempotency_begin`]): 16 bytes from the operating system's random number
/// generator, as 32 lower-case hex digits. The caller keeps it for the request's
/// `idempotency_complete` or `idempotency_release`.
///
/// # Panics
///
/// If the operating system's random number generator fails, which it does not once the system
/// has booted.
pub fn new_idempotency_owner() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `idempotency_begin` ([`Store::idempotency_begin`], [`crate::Redis::idempotency_begin`])
/// found for a (scope, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: one was created, in flight, owned by the caller.
    Started,
    /// A record with the same fingerprint is still in flight (its lease has not run out).
    InFlight,
    /// A live record (in flight or completed) has another fingerprint.
    Mismatch,
    /// A completed record with the same fingerprint: the stored response bytes (opaque to this
    /// crate).
    Completed(Vec<u8>),
}

impl Store {
    /// Begins the request with `key` in `scope` at `now_ms` (Unix ms), atomically: creates the
    /// record, in flight for `owner` (a fresh [`new_idempotency_owner`] per request) with a lease
    /// until `now_ms + lease_ms` and expiring at `now_ms + ttl_ms`, when there is none, or when
    /// the existing one has expired (`expires_at <= now`) or is in flight with its lease run out
    /// (`locked_until <= now`), in which case `owner` replaces the previous one; otherwise
    /// reports what is there ([`IdempotencyBegin`]; `Mismatch` takes precedence over
    /// `InFlight`) and does not record `owner`. Of any number of concurrent callers on any node,
    /// exactly one gets [`IdempotencyBegin::Started`].
    ///
    /// Fails with [`StateError::InvalidInput`] unless `0 < lease_ms <= ttl_ms`, or when `owner` is
    /// empty.
    // Eight parameters: the record's identity, its owner, and the times, all from the caller.
    #[allow(clippy::too_many_arguments)]
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        owner: &str,
        lease_ms: i64,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<IdempotencyBegin, StateError> {
        const OP: &str = "idempotency_begin";
        const BEGIN: &str = "INSERT INTO bridgehead_idempotency
             (scope, key, fingerprint, owner, response, locked_until, expires_at, created_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7)
             ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                 owner = excluded.owner, response = NULL, locked_until = excluded.locked_until,
                 expires_at = excluded.expires_at, created_at = excluded.created_at
             WHERE bridgehead_idempotency.expires_at <= $7
                 OR (bridgehead_idempotency.response IS NULL
                     AND bridgehead_idempotency.locked_until <= $7)
             RETURNING created_at";
        const SELECT: &str = "SELECT fingerprint, response, locked_until, expires_at
             FROM bridgehead_idempotency WHERE scope = $1 AND key = $2";
        if lease_ms <= 0 || ttl_ms < lease_ms {
            return Err(StateError::InvalidInput {
                op: OP,
                reason: format!("need 0 < lease_ms <= ttl_ms, got lease_ms {lease_ms}, ttl_ms {ttl_ms}"),
            });
        }
        if owner.is_empty() {
            return Err(StateError::InvalidInput { op: OP, reason: "owner must not be empty".to_owned() });
        }
        let locked_until = now_ms.saturating_add(lease_ms);
        let expires_at = now_ms.saturating_add(ttl_ms);
        // A refused insert is explained by reading the row. It can only read as absent or as
        // ready for takeover if it changed between the two statements (released, purged, or
        // written by a node whose clock is behind ours), in which case the insert is tried again.
        let mut attempts = 3;
        loop {
            attempts -= 1;
            let started = on_pool!(self, pool => sqlx::query(BEGIN)
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(owner)
                .bind(locked_until)
                .bind(expires_at)
                .bind(now_ms)
                .fetch_optional(pool)
                .await
                .map(|row| row.is_some()))
            .map_err(StateError::query(OP))?;
            if started {
                return Ok(IdempotencyBegin::Started);
            }
            let found = on_pool!(self, pool => {
                let row = sqlx::query(SELECT).bind(scope).bind(key).fetch_optional(pool).await;
                row.and_then(|row| {
                    row.map(|row| {
                        Ok::<_, sqlx::Error>((
                            row.try_get::<String, _>(0)?,
                            row.try_get::<Option<Vec<u8>>, _>(1)?,
                            row.try_get::<i64, _>(2)?,
                            row.try_get::<i64, _>(3)?,
                        ))
                    })
                    .transpose()
                })
            })
            .map_err(StateError::query(OP))?;
            let Some((found_fingerprint, response, found_locked_until, found_expires_at)) = found else {
                if attempts > 0 {
                    continue;
                }
                // Deleted after every one of our inserts: someone keeps releasing the key; it is
                // busy, so report it as in flight rather than loop.
                return Ok(IdempotencyBegin::InFlight);
            };
            let takeover = found_expires_at <= now_ms || (response.is_none() && found_locked_until <= now_ms);
            if takeover && attempts > 0 {
                continue;
            }
            return Ok(if found_fingerprint != fingerprint {
                IdempotencyBegin::Mismatch
            } else if let Some(response) = response {
                IdempotencyBegin::Completed(response)
            } else {
                IdempotencyBegin::InFlight
            });
        }
    }

    /// Stores `response` for the caller's in-flight record (the one its begin with `owner`
    /// started) and makes it expire at `expires_at_ms` (Unix ms). `false` when the record is no
    /// longer the caller's in-flight one (taken over by another begin, already completed, or
    /// gone): the response was not stored.
    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        owner: &str,
        response: &[u8],
        expires_at_ms: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_idempotency SET response = $4, expires_at = $5
             WHERE scope = $1 AND key = $2 AND owner = $3 AND response IS NULL";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(scope)
            .bind(key)
            .bind(owner)
            .bind(response)
            .bind(expires_at_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query("idempotency_complete"))
    }

    /// Deletes the caller's in-flight record (the one its begin with `owner` started; its request
    /// failed in a way that must not be replayed), so the key can be used again. Does nothing
    /// when the record is completed, was taken over by another begin, or is gone.
    pub async fn idempotency_release(&self, scope: &str, key: &str, owner: &str) -> Result<(), StateError> {
        const SQL: &str = "DELETE FROM bridgehead_idempotency
             WHERE scope = $1 AND key = $2 AND owner = $3 AND response IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(scope).bind(key).bind(owner).execute(pool).await.map(drop))
            .map_err(StateError::query("idempotency_release"))
    }

    /// Deletes up to [`IDEMPOTENCY_PURGE_BATCH`] records that have expired at `now_ms`
    /// (`expires_at <= now`), except in-flight ones whose lease still holds; returns how many.
    pub async fn idempotency_purge(&self, now_ms: i64) -> Result<u64, StateError> {
        // A row-value `IN` over the primary key, the same text for both backends (PostgreSQL has
        // no `DELETE … LIMIT`; SQLite has it only when compiled with an option).
        const SQL: &str = "DELETE FROM bridgehead_idempotency WHERE (scope, key) IN (
                 SELECT scope, key FROM bridgehead_idempotency
                 WHERE expires_at <= $1 AND NOT (response IS NULL AND locked_until > $1)
                 LIMIT $2)";
        let batch = i64::try_from(IDEMPOTENCY_PURGE_BATCH).unwrap_or(i64::MAX);
        on_pool!(self, pool => sqlx::query(SQL).bind(now_ms).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("idempotency_purge"))
    }
}
