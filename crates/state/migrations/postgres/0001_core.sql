-- Schema version 1 (PostgreSQL): what the gateway core needs.
-- Append-only: never edit this file once released; add 0002_*.sql here AND in ../sqlite/.
-- Timestamps are Unix milliseconds (BIGINT), like the INTEGER columns of the SQLite twin.

-- Small key/value facts about the deployment, e.g. `cluster_id`.
CREATE TABLE bridgehead_meta (
    key        TEXT   NOT NULL PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per gateway node: written by `register_node` at start, refreshed by `heartbeat`.
CREATE TABLE bridgehead_nodes (
    node_id      TEXT   NOT NULL PRIMARY KEY,
    version      TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
