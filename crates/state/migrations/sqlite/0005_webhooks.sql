-- Schema version 5 (SQLite): webhook messages, their deliveries and attempts, and dead letters.
-- Append-only: never edit this file once released; add 0006_*.sql here AND in ../postgres/.
-- Timestamps are Unix milliseconds (INTEGER, BIGINT in the PostgreSQL twin).

-- A message accepted by a webhook receiver (source 'inbound:<name>'), committed before the
-- sender heard 2xx. external_id is the sender's message id: a second message with the same
-- (source, external_id) is a replay and is not stored again, until expires_at (the retention).
CREATE TABLE bridgehead_webhook_messages (
    id          TEXT    PRIMARY KEY, -- msg_ + 32 hex digits
    source      TEXT    NOT NULL,
    external_id TEXT,
    event_type  TEXT,
    headers     TEXT    NOT NULL,    -- JSON array of [name, value] pairs, secrets redacted
    body        BLOB    NOT NULL,    -- the raw bytes as received
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX bridgehead_webhook_messages_external
    ON bridgehead_webhook_messages (source, external_id);
CREATE INDEX bridgehead_webhook_messages_expires_at ON bridgehead_webhook_messages (expires_at);

-- One delivery of a message to one destination ('forward:<inbound name>'), written in the same
-- transaction as its message (an outbox). A worker claims a due delivery with a lease
-- (lease_owner, lease_until); a lease that runs out (its node died) is claimed again.
CREATE TABLE bridgehead_webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL REFERENCES bridgehead_webhook_messages (id) ON DELETE CASCADE,
    destination     TEXT    NOT NULL,
    state           TEXT    NOT NULL, -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX bridgehead_webhook_deliveries_due ON bridgehead_webhook_deliveries (state, next_attempt_at);
CREATE INDEX bridgehead_webhook_deliveries_message ON bridgehead_webhook_deliveries (message_id);
-- A node claims per destination (the receivers of its config).
CREATE INDEX bridgehead_webhook_deliveries_claim
    ON bridgehead_webhook_deliveries (destination, state, next_attempt_at);

-- Every attempt of a delivery: what the destination answered, or why nothing came back.
CREATE TABLE bridgehead_webhook_attempts (
    delivery_id INTEGER NOT NULL REFERENCES bridgehead_webhook_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,          -- NULL when no response came
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    response    BLOB,             -- the first KiB of the response body
    PRIMARY KEY (delivery_id, attempt)
) STRICT;

-- A request a receiver refused, kept to be looked at and replayed once fixed.
CREATE TABLE bridgehead_webhook_dead_letters (
    id          TEXT    PRIMARY KEY, -- dlq_ + 32 hex digits
    source      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,    -- a short label: signature, schema, not_json, ...
    detail      TEXT    NOT NULL,    -- what was wrong, as the sender was told
    headers     TEXT    NOT NULL,    -- JSON array of [name, value] pairs, secrets redacted
    signatures  TEXT    NOT NULL,    -- the signature headers as received, JSON like headers: only
                                     -- for a replay to verify them again; never shown
    body        BLOB    NOT NULL,
    body_bytes  INTEGER NOT NULL,    -- the body's length as received; more than body holds when it was cut
    received_at INTEGER NOT NULL,
    replayed_at INTEGER,
    message_id  TEXT                 -- the message its replay created
) STRICT;
CREATE INDEX bridgehead_webhook_dead_letters_received ON bridgehead_webhook_dead_letters (received_at);
