-- Schema version 4 (SQLite): idempotency records (IETF draft "The Idempotency-Key HTTP Header
-- Field"). Append-only: never edit this file once released; add 0005_*.sql here AND in
-- ../postgres/. Timestamps are Unix milliseconds (INTEGER, BIGINT in the PostgreSQL twin).

-- One row per (scope, key): the first request with that key, in flight (response NULL) or
-- completed (response set), until expires_at. A live record is never replaced; an expired one,
-- or an in-flight one whose lease (locked_until) ran out because its node died, is taken over
-- by the next request with the key. The request that holds the record is named by owner, a
-- random token of its begin: complete and release act only for that owner, so a request that
-- outlived its lease cannot complete or release the record of the request that took it over.
CREATE TABLE bridgehead_idempotency (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL, -- lower-case hex SHA-256 of the request, chosen by the caller
    owner        TEXT    NOT NULL, -- random token of the begin that created or took over the record
    response     BLOB,             -- the stored response, opaque here; NULL while in flight
    locked_until INTEGER NOT NULL, -- lease of the in-flight request
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

-- The purge deletes by expires_at.
CREATE INDEX bridgehead_idempotency_expires_at ON bridgehead_idempotency (expires_at);
