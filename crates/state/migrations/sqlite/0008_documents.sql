-- Schema version 8 (SQLite): the last good copy of documents fetched from the network.
-- Append-only: never edit this file once released; add 0009_*.sql here AND in ../postgres/.
-- Timestamps are Unix milliseconds (INTEGER, BIGINT in the PostgreSQL twin).

-- A document the gateway fetched and must keep serving from when its source is unreachable,
-- across restarts: a gRPC service's reflected schema (kind 'grpc-schema', an encoded
-- FileDescriptorSet), later a SOAP service's WSDL.
CREATE TABLE bridgehead_documents (
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;
