//! Bridgehead's durable and shared state: one storage interface, [`Store`], behind `state.url`,
//! and [`Redis`] for the per-request state that gateway nodes share through Redis.
//!
//! A single node keeps its state in an embedded SQLite file (`sqlite://PATH`, by default
//! `sqlite://bridgehead.db`, nothing to install); several nodes point `state.url` at one
//! PostgreSQL database (`postgres://…`) and stay stateless themselves. Everything above this crate
//! talks to [`Store`] and does not know which backend is behind it. Today the store holds the
//! cluster identity, the node registry, API keys (their digests), the state of the built-in
//! OAuth 2.0 authorization server (signing keys, revoked tokens, codes, refresh tokens, clients)
//! idempotency records (`Idempotency-Key`, [`IdempotencyBegin`], each held by the owner token
//! of one request, [`new_idempotency_owner`]), and the webhook receiver's messages, deliveries,
//! attempts and dead letters (module `webhooks`, [`Store::webhook_accept`]).
//!
//! [`Redis`] (module `redis`) is the other place state is shared: GCRA rate-limit buckets
//! ([`Redis::rate_limit`], on Redis' clock) and idempotency records with the same contract as the
//! store's, for deployments that run Redis for that traffic rather than put every request through
//! the SQL database. Each operation is one atomic Lua script; the connection fails fast while
//! Redis is down and reconnects by itself. Its module docs hold its design constraints and the
//! GCRA arithmetic.
//!
//! ## Design constraints
//!
//! - **What survives a crash.** Every [`Store`] write is a single statement in its own
//!   transaction, so after any crash a row holds either its old or its new value, never a mix.
//!   - *SQLite* runs with `journal_mode=WAL` and `synchronous=NORMAL`. A commit appends to the
//!     `-wal` file without fsync; the WAL is fsync'd when it is checkpointed into the database
//!     file (automatically once it passes ~1000 pages, and when the last connection closes). So a
//!     committed write survives the *process* dying, even by `kill -9` (its bytes are already in
//!     the OS page cache), but a power loss or kernel crash may lose the last transactions
//!     committed since the previous checkpoint. It never corrupts the database. A future table
//!     that cannot afford that loss must say so and commit with `synchronous=FULL`.
//!   - *PostgreSQL*: durability is the server's; with its default `synchronous_commit=on` a
//!     commit returns only after its WAL record is fsync'd.
//! - **Versioning.** The schema is versioned by migrations: SQL files
//!   `migrations/{sqlite,postgres}/NNNN_name.sql` in this crate, embedded in the binary with
//!   `sqlx::migrate!` and applied in order by [`Store::open`] before it returns, each in one
//!   transaction together with its row in sqlx's bookkeeping table `_sqlx_migrations` (version,
//!   checksum, success). [`Store::schema_version`] reads the highest applied version;
//!   [`SCHEMA_VERSION`] is the highest this build knows.
//!   - Migrations are append-only: an applied migration is never edited (`open` refuses a
//!     database whose applied migration has a different checksum) nor removed.
//!   - Every change gets a migration with the same number in both directories, so a version means
//!     the same tables on both backends (a unit test checks the numbers match).
//!   - A build refuses to open a database migrated by a newer build (a migration it does not
//!     know), rather than run against a schema it does not understand. So schema changes ship
//!     additive and a rollback means restoring a backup or running the newer build.
//!   - Concurrent `open`s: on PostgreSQL sqlx holds an advisory lock while migrating, so nodes
//!     starting together apply each migration once. SQLite has no such lock; a migration that
//!     fails because a concurrent opener applied it first (its transaction rolled back) is
//!     attempted again, up to once per migration plus one (each lost race means another opener
//!     made progress).
//! - **Time.** Timestamps are integer Unix milliseconds (`INTEGER` in SQLite, `BIGINT` in
//!   PostgreSQL, so the two schemas stay parallel), taken from the writing node's clock: nodes
//!   sharing PostgreSQL are expected to run NTP. The exceptions are `bridgehead_api_keys`, whose
//!   `created_at`/`revoked_at` are Unix seconds passed in by the caller (they are only shown to
//!   people), and the `bridgehead_oauth_*` tables, whose timestamps are all Unix seconds passed
//!   in by the caller (they are compared with JWT `exp`/`iat`, which are seconds).
//!   `bridgehead_idempotency` is in milliseconds, but passed in by the caller (`now_ms`), so one
//!   request's decisions use one instant.
//! - **Connections.** Pools are bounded (8 SQLite, 10 PostgreSQL connections per node).
//!   [`Store::open`] gives up on PostgreSQL after [`CONNECT_TIMEOUT`] (5 s) without an answer and
//!   fails at once on a refused connection; a query waits at most as long for a free connection.
//!   SQLite connections wait up to 5 s (`busy_timeout`) for another writer and enforce foreign
//!   keys; opening a SQLite file that another opener is switching to WAL is retried for up to 5 s.
//! - **Secrets.** No error message or log line carries the password from `state.url` or from the
//!   Redis URL ([`redact_url`]). A SQLite file is created with mode 0600 and missing parent directories
//!   with 0700: it holds the OAuth issuer's private signing keys (the one secret stored as is;
//!   codes, tokens and client secrets are stored as SHA-256 digests).
//! - **Where tables live.** PostgreSQL tables are created in the connection's default schema
//!   (`public` unless the URL's `options=-c search_path=…` says otherwise); every table name
//!   starts with `bridgehead_` so a shared database stays legible.
//!
//! ## Table layout (schema version 5)
//!
//! | table | column | SQLite / PostgreSQL type | meaning |
//! |---|---|---|---|
//! | `bridgehead_meta` | `key` | `TEXT` primary key | name of a small fact, e.g. `cluster_id` |
//! | | `value` | `TEXT NOT NULL` | its value |
//! | | `updated_at` | `INTEGER` / `BIGINT NOT NULL` | last write, Unix ms |
//! | `bridgehead_nodes` | `node_id` | `TEXT` primary key | a gateway node's identifier |
//! | | `version` | `TEXT NOT NULL` | the Bridgehead version it runs |
//! | | `started_at` | `INTEGER` / `BIGINT NOT NULL` | its last [`Store::register_node`], Unix ms |
//! | | `last_seen_at` | `INTEGER` / `BIGINT NOT NULL` | its last registration or [`Store::heartbeat`], Unix ms |
//! | `bridgehead_api_keys` (v2) | `id` | `TEXT` primary key | the key's identifier, `key_…` |
//! | | `authenticator` | `TEXT NOT NULL`, indexed | the config authenticator it belongs to |
//! | | `consumer` | `TEXT NOT NULL` | the consumer it identifies |
//! | | `sha256` | `TEXT NOT NULL UNIQUE` | lower-case hex SHA-256 of the key; the key itself is never stored |
//! | | `scopes` | `TEXT NOT NULL DEFAULT ''` | granted scopes, space-separated |
//! | | `created_at` | `INTEGER` / `BIGINT NOT NULL` | creation, Unix **seconds** |
//! | | `revoked_at` | `INTEGER` / `BIGINT`, null while active | [`Store::api_key_revoke`], Unix **seconds** |
//! | `bridgehead_oauth_keys` (v3) | `kid` | `TEXT` primary key | signing key id of the local issuer |
//! | | `alg` | `TEXT NOT NULL` | the JWS algorithm it is pinned to |
//! | | `private_pem` | `TEXT NOT NULL` | the private key, PEM (secret, stored as is) |
//! | | `public_jwk` | `TEXT NOT NULL` | the public key as a JWK, JSON text |
//! | | `created_at` | `INTEGER` / `BIGINT NOT NULL` | creation, Unix **seconds**; published from then |
//! | | `activate_at` | `INTEGER` / `BIGINT NOT NULL` | signs from then, Unix **seconds** |
//! | | `retire_at` | `INTEGER` / `BIGINT`, null while not scheduled | neither used nor published from then ([`Store::oauth_key_retire`]), Unix **seconds** |
//! | `bridgehead_oauth_revoked` (v3) | `jti` | `TEXT` primary key | a revoked access token's `jti` |
//! | | `client_id` | `TEXT NOT NULL` | the client it was issued to |
//! | | `expires_at` | `INTEGER` / `BIGINT NOT NULL`, indexed | the token's `exp`, Unix **seconds**; purged after |
//! | `bridgehead_oauth_codes` (v3) | `code_hash` | `TEXT` primary key | lower-case hex SHA-256 of the authorization code |
//! | | `client_id` | `TEXT NOT NULL` | the client it was issued to |
//! | | `redirect_uri` | `TEXT NOT NULL` | the authorization request's redirect URI |
//! | | `code_challenge` | `TEXT NOT NULL` | the PKCE challenge |
//! | | `scope` | `TEXT NOT NULL` | granted scopes, space-separated |
//! | | `subject` | `TEXT NOT NULL` | the resource owner |
//! | | `expires_at` | `INTEGER` / `BIGINT NOT NULL` | expiry, Unix **seconds** |
//! | | `used_at` | `INTEGER` / `BIGINT`, null until redeemed | [`Store::oauth_code_redeem`], Unix **seconds** |
//! | | `family_id` | `TEXT`, null unless a refresh token was issued | refresh family created on redemption |
//! | | `access_jtis` | `TEXT NOT NULL DEFAULT ''` | jtis of the access tokens issued from it, space-separated |
//! | `bridgehead_oauth_refresh` (v3) | `token_hash` | `TEXT` primary key | lower-case hex SHA-256 of the refresh token |
//! | | `family_id` | `TEXT NOT NULL`, indexed | shared by every token rotated from one authorization |
//! | | `client_id` | `TEXT NOT NULL` | the client it was issued to |
//! | | `subject` | `TEXT NOT NULL` | the resource owner |
//! | | `scope` | `TEXT NOT NULL` | granted scopes, space-separated |
//! | | `expires_at` | `INTEGER` / `BIGINT NOT NULL` | expiry, Unix **seconds** |
//! | | `rotated_at` | `INTEGER` / `BIGINT`, null until rotated | [`Store::oauth_refresh_rotate`], Unix **seconds** |
//! | | `revoked_at` | `INTEGER` / `BIGINT`, null unless revoked | revocation of it or its family, Unix **seconds** |
//! | `bridgehead_oauth_clients` (v3) | `client_id` | `TEXT` primary key | a client registered at run time |
//! | | `secret_sha256` | `TEXT`, null for public clients | lower-case hex SHA-256 of the client secret |
//! | | `public` | `INTEGER` 0/1 / `BOOLEAN NOT NULL` | whether it is a public client |
//! | | `grants` | `TEXT NOT NULL` | allowed grant types, space-separated |
//! | | `scopes` | `TEXT NOT NULL` | allowed scopes, space-separated |
//! | | `redirect_uris` | `TEXT NOT NULL` | registered redirect URIs, space-separated |
//! | | `created_at` | `INTEGER` / `BIGINT NOT NULL` | registration, Unix **seconds** |
//! | `bridgehead_idempotency` (v4) | `scope` | `TEXT`, primary key with `key` | the caller's namespace for keys, e.g. route and consumer |
//! | | `key` | `TEXT`, primary key with `scope` | the request's `Idempotency-Key` |
//! | | `fingerprint` | `TEXT NOT NULL` | lower-case hex SHA-256 of the request, chosen by the caller |
//! | | `owner` | `TEXT NOT NULL` | random token of the [`Store::idempotency_begin`] that created or last took over the record ([`new_idempotency_owner`]); complete and release match on it |
//! | | `response` | `BLOB` / `BYTEA`, null while in flight | the stored response, opaque to this crate ([`Store::idempotency_complete`]) |
//! | | `locked_until` | `INTEGER` / `BIGINT NOT NULL` | lease of the in-flight request, Unix ms; taken over after |
//! | | `expires_at` | `INTEGER` / `BIGINT NOT NULL`, indexed | the record is live before, Unix ms; purged after ([`Store::idempotency_purge`]) |
//! | | `created_at` | `INTEGER` / `BIGINT NOT NULL` | its last [`Store::idempotency_begin`] that started it, Unix ms |
//! | `bridgehead_webhook_messages` (v5) | `id` | `TEXT` primary key | `msg_` + 32 hex digits |
//! | | `source` | `TEXT NOT NULL` | `inbound:<receiver name>` |
//! | | `external_id` | `TEXT`, unique with `source` | the sender's message id (replay protection) |
//! | | `event_type` | `TEXT` | the event's type, when known |
//! | | `headers` | `TEXT NOT NULL` | headers to pass on, JSON `[[name, value], …]`, secrets redacted |
//! | | `body` | `BLOB` / `BYTEA NOT NULL` | the raw body as received |
//! | | `received_at` | `INTEGER` / `BIGINT NOT NULL` | Unix ms |
//! | | `expires_at` | `INTEGER` / `BIGINT NOT NULL`, indexed | end of the retention; purged after once delivered |
//! | `bridgehead_webhook_deliveries` (v5) | `id` | `INTEGER` autoincrement / `BIGSERIAL` primary key | |
//! | | `message_id` | `TEXT NOT NULL`, references the message (cascade) | |
//! | | `destination` | `TEXT NOT NULL` | `forward:<receiver name>` |
//! | | `state` | `TEXT NOT NULL` | `pending`, `delivered` or `dead` |
//! | | `attempts` | `INTEGER` / `BIGINT NOT NULL` | attempts made |
//! | | `next_attempt_at` | `INTEGER` / `BIGINT NOT NULL`, indexed with `destination` while pending (v7) | due from, Unix ms |
//! | | `lease_owner`, `lease_until` | `TEXT`, `INTEGER` / `BIGINT` | the worker holding it, until (Unix ms) |
//! | | `last_status`, `last_error` | `INTEGER` / `BIGINT`, `TEXT` | the last attempt's answer or error |
//! | | `updated_at` | `INTEGER` / `BIGINT NOT NULL` | Unix ms |
//! | `bridgehead_webhook_attempts` (v5) | `delivery_id`, `attempt` | primary key; the delivery cascades | |
//! | | `at`, `status`, `latency_ms`, `error`, `response` | | when, the status (null without a response), how long, why it failed, the first KiB of the answer |
//! | `bridgehead_webhook_dead_letters` (v5) | `id` | `TEXT` primary key | `dlq_` + 32 hex digits |
//! | | `source`, `reason`, `detail` | `TEXT NOT NULL` | the receiver, a short reason label, what the sender was told |
//! | | `headers`, `body` | `TEXT`, `BLOB` / `BYTEA NOT NULL` | the request (secrets redacted) |
//! | | `signatures` | `TEXT NOT NULL` | the signature headers as received, only for a replay to verify them again; never shown |
//! | | `received_at`, `replayed_at`, `message_id` | | Unix ms; the replay, and the message it created |
//! | `bridgehead_webhook_endpoints` (v6) | `name` | `TEXT` primary key | an outbound endpoint |
//! | | `declared` | `INTEGER` / `BIGINT NOT NULL` | 1: declared in the config (only the state columns count) |
//! | | `url`, `events`, `secrets`, `allow_private_network` | | a run-time endpoint's settings (`events` and `secrets` are JSON) |
//! | | `disabled_at`, `disabled_reason` | | set while disabled |
//! | | `created_at`, `updated_at` | | Unix ms |
//! | `bridgehead_webhook_deliveries` (v6) | `ordering_key` | `TEXT`, indexed with `destination`, `state`, `id` | deliveries of one key go out in order |
//! | `bridgehead_documents` (v8) | `kind`, `name` | primary key | what the copy is (`grpc-schema`) and whose (the service) |
//! | | `body`, `fetched_at` | `BLOB` / `BYTEA NOT NULL`, Unix ms | the last good copy, and when it was fetched |
//! | `_sqlx_migrations` | | owned by sqlx | applied migrations: version, description, checksum, success, time |
//!
//! SQLite tables are `STRICT`, so a column holds only its declared type, as in PostgreSQL.
//!
//! ## Why an enum of native pools rather than `sqlx::Any`
//!
//! [`Store`] holds either a `SqlitePool` or a `PgPool`, and each method runs its query on
//! whichever it has (the private `on_pool!` macro expands the body once per backend). `Any` would
//! save that match but not the per-backend migrations, and it maps every value through a
//! lowest-common-denominator type set with drivers installed at run time. The coming features
//! want backend-specific SQL where the dialects part ways (`FOR UPDATE SKIP LOCKED` for a webhook
//! queue on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), which the enum allows in one method. Where
//! they agree (`$N` placeholders, `INSERT … ON CONFLICT`, `UPDATE … RETURNING` since SQLite
//! 3.35; sqlx bundles a newer one), one SQL text serves both. Queries are checked at run time
//! (`sqlx::query`, never the `query!` macros): no database exists at build time, and the tests
//! run every query on both backends instead.
//!
//! ## Testing
//!
//! With the `testing` feature, `testing::TestPostgres` starts a throwaway PostgreSQL server for a
//! test, so PostgreSQL paths are tested as routinely as SQLite ones, and `testing::TestRedis` a
//! throwaway `redis-server` that a test can kill and restart.

mod api_keys;
mod documents;
mod error;
mod idempotency;
mod oauth;
mod redact;
mod redis;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod webhook_endpoints;
mod webhooks;

// `crate::` because the `redis` crate has the same name as the module.
pub use crate::redis::{
    RATE_LIMIT_MAX_BUCKETS, RATE_LIMIT_MAX_WINDOW_US, REDIS_CONNECT_TIMEOUT, REDIS_RESPONSE_TIMEOUT,
    RateDecision, Redis,
};
pub use api_keys::ApiKeyRecord;
pub use documents::Document;
pub use error::StateError;
pub use idempotency::{IDEMPOTENCY_PURGE_BATCH, IdempotencyBegin, new_idempotency_owner};
pub use oauth::{
    CodeRedemption, OAUTH_PURGE_GRACE_SECS, OAuthClientRecord, OAuthCodeRecord, OAuthKeyRecord,
    OAuthRefreshRecord, RefreshRotation,
};
pub use redact::redact_url;
pub use store::{Backend, CONNECT_TIMEOUT, NodeRecord, SCHEMA_VERSION, Store};
pub use webhook_endpoints::{EndpointRecord, MessageFilter, MessageRecord, Redeliver};
pub use webhooks::{
    Accepted, AttemptOutcome, AttemptRecord, AttemptRow, ClaimedDelivery, DeadLetter, DeliveryRecord,
    NewDeadLetter, NewWebhookMessage, WEBHOOK_PURGE_BATCH,
};
