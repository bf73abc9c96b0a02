-- Schema version 6 (SQLite): outbound webhook endpoints, and ordering keys of deliveries.
-- Append-only: never edit this file once released; add 0007_*.sql here AND in ../postgres/.
-- Timestamps are Unix milliseconds (INTEGER, BIGINT in the PostgreSQL twin).

-- An endpoint of the outbound dispatcher. Endpoints added at run time (the admin API,
-- `bridgehead webhook endpoints add`) are held here whole (declared = 0). An endpoint declared
-- in the config (declared = 1) has a row only for its run-time state (disabled, by whom and
-- why): its url, events and secrets come from the config.
CREATE TABLE bridgehead_webhook_endpoints (
    name                  TEXT    PRIMARY KEY,
    declared              INTEGER NOT NULL,   -- 1: in the config; only the state columns count
    url                   TEXT,
    events                TEXT,               -- JSON array of patterns
    secrets               TEXT,               -- JSON array of {"secret": "whsec_…", "expires_at": ms|null}
    allow_private_network INTEGER NOT NULL DEFAULT 0,
    disabled_at           INTEGER,            -- null: enabled
    disabled_reason       TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
) STRICT;

-- Deliveries with the same (destination, ordering_key) go out one at a time, oldest first.
ALTER TABLE bridgehead_webhook_deliveries ADD COLUMN ordering_key TEXT;
CREATE INDEX bridgehead_webhook_deliveries_ordering
    ON bridgehead_webhook_deliveries (destination, ordering_key, state, id)
    WHERE ordering_key IS NOT NULL;
-- Messages listed newest first by source.
CREATE INDEX bridgehead_webhook_messages_received ON bridgehead_webhook_messages (received_at);
