//! [`StateError`]: everything that can go wrong behind `state.url`.
//!
//! Invariant: no variant's `Display` or `Debug` carries a password from `state.url` or from the
//! Redis URL. URLs are stored redacted ([`crate::redact_url`]) and driver messages produced while
//! the URL is in play (parsing, connecting, migrating, and every Redis command) are kept as
//! scrubbed text instead of the driver's error value.

use std::path::PathBuf;

/// An error from the state store. Every one is an internal error for the gateway: a client never
/// sees its text, the log does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// `state.url` names no backend this crate knows.
    #[error("state.url must start with sqlite:// or postgres:// (or be sqlite::memory:), got {got:?}")]
    UnsupportedScheme {
        /// The URL as given, redacted.
        got: String,
    },

    /// `state.url` has a known scheme but cannot be used as written.
    #[error("state.url {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The SQLite file or one of its parent directories could not be created.
    #[error("cannot create {path:?} for state.url {url:?}: {source}")]
    CreateFile {
        /// The URL, redacted.
        url: String,
        /// The file or directory that could not be created.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The database could not be reached or refused the connection (refused, unknown host,
    /// authentication, unknown database, no answer within the connect timeout, …).
    #[error("cannot connect to state.url {url:?}: {reason}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// The driver's message, scrubbed of secrets.
        reason: String,
    },

    /// The schema migrations could not be applied, or the database was migrated by a newer
    /// Bridgehead than this one.
    #[error("cannot migrate the schema of state.url {url:?}: {reason}")]
    Migrate {
        /// The URL, redacted.
        url: String,
        /// The migrator's message, scrubbed of secrets.
        reason: String,
    },

    /// [`crate::Store::heartbeat`] for a node that has no row; register it again.
    #[error("node {node_id:?} is not registered (heartbeat before register_node, or its row was removed)")]
    UnknownNode {
        /// The node that sent the heartbeat.
        node_id: String,
    },

    /// A value passed to a [`crate::Store`] or [`crate::Redis`] method cannot be used as given.
    #[error("state store {op}: {reason}")]
    InvalidInput {
        /// The method, e.g. `"api_key_insert"`.
        op: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// No random bytes for a new identifier.
    #[error("cannot read random bytes from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),

    /// The Redis URL cannot be used as written (not `redis://host[:port][/db]`, or unparsable).
    #[error("Redis URL {url:?} is invalid: {reason}")]
    RedisInvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// [`crate::Redis::connect`] could not reach Redis, or Redis refused the connection (refused,
    /// unknown host, authentication, no answer within the connect timeout, …).
    #[error("cannot connect to Redis at {url:?}: {reason}")]
    RedisConnect {
        /// The URL, redacted.
        url: String,
        /// The driver's message, scrubbed of secrets.
        reason: String,
    },

    /// A command on a connected [`crate::Redis`] failed: Redis is unreachable (the connection is
    /// re-established in the background), did not answer within the response timeout, or gave an
    /// unexpected reply.
    #[error("Redis {op} on {url:?} failed: {reason}")]
    Redis {
        /// The [`crate::Redis`] method that failed, e.g. `"rate_limit"`.
        op: &'static str,
        /// The URL, redacted.
        url: String,
        /// The driver's message, scrubbed of secrets.
        reason: String,
    },

    /// A query on an open store failed.
    #[error("state store {op} failed: {source}")]
    Query {
        /// The [`crate::Store`] method that failed, e.g. `"meta_put"`.
        op: &'static str,
        /// The driver's error (it never contains the URL).
        #[source]
        source: sqlx::Error,
    },
}

impl StateError {
    /// Wraps a driver error for the [`crate::Store`] method `op`.
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
        move |source| StateError::Query { op, source }
    }
}
