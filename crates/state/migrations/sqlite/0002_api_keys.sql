-- Schema version 2 (SQLite): API keys created with `bridgehead apikey create`.
-- Append-only: never edit this file once released; add 0003_*.sql here AND in ../postgres/.
-- Unlike 0001, the timestamps here are Unix SECONDS (INTEGER, BIGINT in the PostgreSQL twin).

-- One row per key. The key itself is never stored, only the lower-case hex SHA-256 of its bytes.
-- A revoked key keeps its row (revoked_at set) so that `apikey list --all` can show it.
CREATE TABLE bridgehead_api_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    authenticator TEXT    NOT NULL,
    consumer      TEXT    NOT NULL,
    sha256        TEXT    NOT NULL UNIQUE,
    scopes        TEXT    NOT NULL DEFAULT '', -- space-separated
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) STRICT;

-- The gateway loads the active keys of one authenticator at a time.
CREATE INDEX bridgehead_api_keys_authenticator ON bridgehead_api_keys (authenticator);
