//! API keys in `bridgehead_api_keys` (migration 0002): created and revoked by the
//! `bridgehead apikey` command, loaded by the gateway's API key authenticators.
//!
//! A row holds the key's SHA-256 digest, never the key. Revoking sets `revoked_at` and keeps the
//! row, so the history stays listable and a revoked digest can never be inserted again (the
//! digest column is unique).
//!
//! Unlike the other tables, the two timestamps are Unix *seconds*, passed in by the caller: they
//! are only shown to people.

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, on_pool, read_pool};

/// One API key as recorded in `bridgehead_api_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's identifier (`key_…`), shown by `apikey list` and used by `apikey revoke`.
    pub id: String,
    /// The name of the config authenticator the key belongs to.
    pub authenticator: String,
    /// The consumer the key identifies.
    pub consumer: String,
    /// Lower-case hex SHA-256 of the key (64 digits).
    pub sha256: String,
    /// The scopes the key grants; none may be empty or contain whitespace (they are stored
    /// space-separated).
    pub scopes: Vec<String>,
    /// When the key was created, in Unix seconds.
    pub created_at: i64,
    /// When the key was revoked, in Unix seconds; `None` while it is active.
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Records a new API key. Fails with [`StateError::InvalidInput`] when the digest is not 64
    /// lower-case hex digits, the id is empty, or a scope is empty or contains whitespace, and
    /// with [`StateError::Query`] when the id or the digest is already recorded.
    pub async fn api_key_insert(&self, rec: &ApiKeyRecord) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO bridgehead_api_keys
             (id, authenticator, consumer, sha256, scopes, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let invalid = |reason: String| StateError::InvalidInput { op: "api_key_insert", reason };
        if rec.id.is_empty() {
            return Err(invalid("the key id is empty".to_owned()));
        }
        if rec.sha256.len() != 64 || !rec.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("the digest must be 64 lower-case hex digits".to_owned()));
        }
        if let Some(bad) = rec.scopes.iter().find(|s| s.is_empty() || s.chars().any(char::is_whitespace)) {
            return Err(invalid(format!("scope {bad:?} is empty or contains whitespace")));
        }
        let scopes = rec.scopes.join(" ");
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(&rec.id)
            .bind(&rec.authenticator)
            .bind(&rec.consumer)
            .bind(&rec.sha256)
            .bind(&scopes)
            .bind(rec.created_at)
            .bind(rec.revoked_at)
            .execute(pool)
            .await
            .map(drop))
        .map_err(StateError::query("api_key_insert"))
    }

    /// API keys, oldest first (then by id): those of `authenticator` or of all authenticators,
    /// with or without the revoked ones.
    pub async fn api_key_list(
        &self,
        authenticator: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyRecord>, StateError> {
        self.select_api_keys("api_key_list", authenticator, include_revoked).await
    }

    /// Marks the key `id` revoked at `now` (Unix seconds). `false` when there is no such
    /// key or it was already revoked (its first revocation time is kept).
    pub async fn api_key_revoke(&self, id: &str, now: i64) -> Result<bool, StateError> {
        const SQL: &str =
            "UPDATE bridgehead_api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(id).bind(now).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(StateError::query("api_key_revoke"))
    }

    /// The keys of `authenticator` that are not revoked: what the gateway loads.
    pub async fn api_keys_active(&self, authenticator: &str) -> Result<Vec<ApiKeyRecord>, StateError> {
        self.select_api_keys("api_keys_active", Some(authenticator), false).await
    }

    async fn select_api_keys(
        &self,
        op: &'static str,
        authenticator: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyRecord>, StateError> {
        // One fixed SQL text per combination (rather than `$1 IS NULL OR …`), so that PostgreSQL's
        // cached generic plan can use the authenticator index.
        let filter = match (authenticator.is_some(), include_revoked) {
            (true, true) => "WHERE authenticator = $1",
            (true, false) => "WHERE authenticator = $1 AND revoked_at IS NULL",
            (false, true) => "",
            (false, false) => "WHERE revoked_at IS NULL",
        };
        let sql = format!(
            "SELECT id, authenticator, consumer, sha256, scopes, created_at, revoked_at
             FROM bridgehead_api_keys {filter} ORDER BY created_at, id"
        );
        read_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            if let Some(authenticator) = authenticator {
                query = query.bind(authenticator);
            }
            query.fetch_all(pool).await.and_then(|rows| {
                rows.iter()
                    .map(|row| {
                        Ok(ApiKeyRecord {
                            id: row.try_get(0)?,
                            authenticator: row.try_get(1)?,
                            consumer: row.try_get(2)?,
                            sha256: row.try_get(3)?,
                            scopes: row.try_get::<&str, _>(4)?.split_whitespace().map(str::to_owned).collect(),
                            created_at: row.try_get(5)?,
                            revoked_at: row.try_get(6)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })
        })
        .map_err(StateError::query(op))
    }
}
