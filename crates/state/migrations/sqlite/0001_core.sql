-- Schema version 1 (SQLite): what the gateway core needs.
-- Append-only: never edit this file once released; add 0002_*.sql here AND in ../postgres/.
-- Timestamps are Unix milliseconds (INTEGER), like the BIGINT columns of the PostgreSQL twin.

-- Small key/value facts about the deployment, e.g. `cluster_id`.
CREATE TABLE bridgehead_meta (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- One row per gateway node: written by `register_node` at start, refreshed by `heartbeat`.
CREATE TABLE bridgehead_nodes (
    node_id      TEXT    NOT NULL PRIMARY KEY,
    version      TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
) STRICT;
