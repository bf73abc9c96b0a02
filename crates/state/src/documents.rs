//! The last good copy of documents the gateway fetched from the network, in
//! `bridgehead_documents` (migration 0008): a gRPC service's reflected schema today. A copy is
//! replaced whole when a newer fetch succeeds, and read when the source cannot be reached, so
//! a restart in an air-gapped network still serves what was last seen.

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, now_ms, on_pool, read_pool};

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub body: Vec<u8>,
    /// When it was fetched, in Unix milliseconds.
    pub fetched_at_ms: i64,
}

impl Store {
    /// Keeps `body` as the last good copy of (`kind`, `name`), replacing any earlier one.
    pub async fn document_put(&self, kind: &str, name: &str, body: &[u8]) -> Result<(), StateError> {
        const SQL: &str =
            "INSERT INTO bridgehead_documents (kind, name, body, fetched_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at";
        let now = now_ms();
        on_pool!(self, pool => sqlx::query(SQL).bind(kind).bind(name).bind(body).bind(now).execute(pool).await.map(drop))
            .map_err(StateError::query("document_put"))
    }

    /// The last good copy of (`kind`, `name`), if one was kept.
    pub async fn document_get(&self, kind: &str, name: &str) -> Result<Option<Document>, StateError> {
        const SQL: &str = "SELECT body, fetched_at FROM bridgehead_documents WHERE kind = $1 AND name = $2";
        read_pool!(self, pool => {
            sqlx::query(SQL).bind(kind).bind(name).fetch_optional(pool).await.and_then(|row| {
                row.map(|r| Ok(Document { body: r.try_get(0)?, fetched_at_ms: r.try_get(1)? })).transpose()
            })
        })
        .map_err(StateError::query("document_get"))
    }
}
