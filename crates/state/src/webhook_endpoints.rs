//! Outbound webhook endpoints in `bridgehead_webhook_endpoints` (migration 0006), and the
//! listing and redelivery of messages for the admin API.
//!
//! An endpoint added at run time is held here whole; one declared in the config has a row only
//! for its run-time state (disabled, and why), so disabling it (by hand, or because it answered
//! 410) holds across restarts and nodes. Secrets are stored as given: signing needs them in
//! clear (an HMAC key cannot be hashed), like the OAuth client's upstream secrets in the config.

use crate::StateError;
use crate::store::{Pools, Store, on_pool, read_pool};

/// One row of `bridgehead_webhook_endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub name: String,
    /// Declared in the config: only the state columns are used.
    pub declared: bool,
    pub url: Option<String>,
    /// JSON array of event patterns.
    pub events_json: Option<String>,
    /// JSON array of `{"secret": …, "expires_at": ms | null}`.
    pub secrets_json: Option<String>,
    pub allow_private_network: bool,
    pub disabled_at_ms: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A message as listed (its body left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub source: String,
    pub external_id: Option<String>,
    pub event_type: Option<String>,
    pub received_at_ms: i64,
}

/// Which messages [`Store::webhook_messages`] lists.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter<'a> {
    pub source: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Only messages with a delivery to this destination.
    pub destination: Option<&'a str>,
    /// Received at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Received before (Unix ms).
    pub until_ms: Option<i64>,
}

/// Which deliveries [`Store::webhook_redeliver`] makes again.
#[derive(Debug, Clone, Default)]
pub struct Redeliver<'a> {
    pub message_id: Option<&'a str>,
    pub destination: Option<&'a str>,
    /// Messages received at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Messages received before (Unix ms).
    pub until_ms: Option<i64>,
    /// Only deliveries that died (every attempt failed); otherwise delivered ones too.
    pub only_failed: bool,
}

type EndpointRow =
    (String, i64, Option<String>, Option<String>, Option<String>, i64, Option<i64>, Option<String>, i64, i64);

fn record(r: EndpointRow) -> EndpointRecord {
    EndpointRecord {
        name: r.0,
        declared: r.1 != 0,
        url: r.2,
        events_json: r.3,
        secrets_json: r.4,
        allow_private_network: r.5 != 0,
        disabled_at_ms: r.6,
        disabled_reason: r.7,
        created_at_ms: r.8,
        updated_at_ms: r.9,
    }
}

const ENDPOINT_COLUMNS: &str = "name, declared, url, events, secrets, allow_private_network, disabled_at, \
     disabled_reason, created_at, updated_at";

impl Store {
    /// Every endpoint row, by name.
    pub async fn webhook_endpoints(&self) -> Result<Vec<EndpointRecord>, StateError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM bridgehead_webhook_endpoints ORDER BY name");
        let rows: Vec<EndpointRow> = read_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await)
            .map_err(StateError::query("webhook_endpoints"))?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// Adds a run-time endpoint. False (nothing written) when a row of that name exists.
    pub async fn webhook_endpoint_add(
        &self,
        name: &str,
        url: &str,
        events_json: &str,
        secrets_json: &str,
        allow_private_network: bool,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "INSERT INTO bridgehead_webhook_endpoints
             (name, declared, url, events, secrets, allow_private_network, created_at, updated_at)
             VALUES ($1, 0, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO NOTHING";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(name)
            .bind(url)
            .bind(events_json)
            .bind(secrets_json)
            .bind(i64::from(allow_private_network))
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query("webhook_endpoint_add"))
    }

    /// Disables (`reason` given) or enables an endpoint. A `declared` (config) endpoint gets its
    /// state row on first use; a run-time one must exist. Enabling makes the deliveries waiting
    /// for it (`endpoint:<name>`) due now. False when there is no such endpoint.
    pub async fn webhook_endpoint_set_disabled(
        &self,
        name: &str,
        declared: bool,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const DECLARED: &str = "INSERT INTO bridgehead_webhook_endpoints
             (name, declared, disabled_at, disabled_reason, created_at, updated_at)
             VALUES ($1, 1, $2, $3, $4, $4)
             ON CONFLICT (name) DO UPDATE SET declared = 1, disabled_at = $2, disabled_reason = $3, updated_at = $4";
        const RUNTIME: &str = "UPDATE bridgehead_webhook_endpoints
             SET disabled_at = $2, disabled_reason = $3, updated_at = $4 WHERE name = $1 AND declared = 0";
        const DUE: &str = "UPDATE bridgehead_webhook_deliveries SET next_attempt_at = $2
             WHERE destination = $1 AND state = 'pending' AND next_attempt_at > $2";
        let at = reason.map(|_| now_ms);
        let sql = if declared { DECLARED } else { RUNTIME };
        let destination = format!("endpoint:{name}");
        on_pool!(self, pool => async {
            let found = sqlx::query(sql)
                .bind(name)
                .bind(at)
                .bind(reason)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
                >= 1;
            if found && reason.is_none() {
                sqlx::query(DUE).bind(&destination).bind(now_ms).execute(pool).await?;
            }
            Ok::<_, sqlx::Error>(found)
        }
        .await)
        .map_err(StateError::query("webhook_endpoint_set_disabled"))
    }

    /// Replaces a run-time endpoint's secrets, when they are still `before` (compare and set).
    /// False when there is no such run-time endpoint or its secrets changed meanwhile.
    pub async fn webhook_endpoint_set_secrets(
        &self,
        name: &str,
        secrets_json: &str,
        before: &str,
        now_ms: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_webhook_endpoints SET secrets = $2, updated_at = $3
             WHERE name = $1 AND declared = 0 AND secrets = $4";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(name)
            .bind(secrets_json)
            .bind(now_ms)
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query("webhook_endpoint_set_secrets"))
    }

    /// Removes an endpoint's row (the caller refuses an endpoint the config declares), and
    /// ends its pending deliveries (`dead`, "endpoint removed"), so that an endpoint added
    /// later under the same name never gets them. False when there is no such row.
    pub async fn webhook_endpoint_remove(&self, name: &str, now_ms: i64) -> Result<bool, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_webhook_endpoints WHERE name = $1";
        const END: &str = "UPDATE bridgehead_webhook_deliveries
             SET state = 'dead', last_error = 'endpoint removed', lease_owner = NULL, lease_until = 0, updated_at = $2
             WHERE destination = $1 AND state = 'pending'";
        let destination = format!("endpoint:{name}");
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(SQL).bind(name).execute(&mut *tx).await?.rows_affected() == 1;
            if found {
                sqlx::query(END).bind(&destination).bind(now_ms).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(found)
        }
        .await)
        .map_err(StateError::query("webhook_endpoint_remove"))
    }

    /// Messages newest first (by `received_at`, then `id`) matching `filter`, after the cursor
    /// `before` (the `(received_at_ms, id)` of the last one of the previous page), at most `limit`.
    pub async fn webhook_messages(
        &self,
        filter: &MessageFilter<'_>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, StateError> {
        const SQL: &str = "SELECT m.id, m.source, m.external_id, m.event_type, m.received_at
             FROM bridgehead_webhook_messages m
             WHERE (CAST($1 AS TEXT) IS NULL OR m.source = CAST($1 AS TEXT))
                 AND (CAST($2 AS TEXT) IS NULL OR m.event_type = CAST($2 AS TEXT))
                 AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM bridgehead_webhook_deliveries d
                     WHERE d.message_id = m.id AND d.destination = CAST($3 AS TEXT)))
                 AND m.received_at >= $4 AND m.received_at < $5
                 AND (m.received_at < $6 OR (m.received_at = $6 AND m.id < $7))
             ORDER BY m.received_at DESC, m.id DESC LIMIT $8";
        type Row = (String, String, Option<String>, Option<String>, i64);
        let (before_ms, before_id) = before.unwrap_or((i64::MAX, ""));
        let rows: Vec<Row> = read_pool!(self, pool => sqlx::query_as(SQL)
            .bind(filter.source)
            .bind(filter.event_type)
            .bind(filter.destination)
            .bind(filter.since_ms.unwrap_or(i64::MIN))
            .bind(filter.until_ms.unwrap_or(i64::MAX))
            .bind(before_ms)
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await)
        .map_err(StateError::query("webhook_messages"))?;
        Ok(rows
            .into_iter()
            .map(|(id, source, external_id, event_type, received_at_ms)| MessageRecord {
                id,
                source,
                external_id,
                event_type,
                received_at_ms,
            })
            .collect())
    }

    /// Makes deliveries again, due now, with a fresh attempt count: for each (message,
    /// destination) matching `which` whose latest delivery is finished (dead, or delivered
    /// unless `only_failed`), a new pending delivery (the old one stays, with its attempts).
    /// Returns how many.
    pub async fn webhook_redeliver(&self, which: &Redeliver<'_>, now_ms: i64) -> Result<u64, StateError> {
        const SQL: &str = "INSERT INTO bridgehead_webhook_deliveries
             (message_id, destination, state, attempts, next_attempt_at, ordering_key, updated_at)
             SELECT d.message_id, d.destination, 'pending', 0, $1, d.ordering_key, $1
             FROM bridgehead_webhook_deliveries d
             JOIN bridgehead_webhook_messages m ON m.id = d.message_id
             WHERE (CAST($2 AS TEXT) IS NULL OR d.message_id = CAST($2 AS TEXT))
                 AND (CAST($3 AS TEXT) IS NULL OR d.destination = CAST($3 AS TEXT))
                 AND m.received_at >= $4 AND m.received_at < $5
                 AND (d.state = 'dead' OR ($6 = 0 AND d.state = 'delivered'))
                 AND d.id = (SELECT MAX(x.id) FROM bridgehead_webhook_deliveries x
                     WHERE x.message_id = d.message_id AND x.destination = d.destination)
             ORDER BY d.id";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(now_ms)
            .bind(which.message_id)
            .bind(which.destination)
            .bind(which.since_ms.unwrap_or(i64::MIN))
            .bind(which.until_ms.unwrap_or(i64::MAX))
            .bind(i64::from(which.only_failed))
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StateError::query("webhook_redeliver"))
    }
}
