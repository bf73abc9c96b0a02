-- Schema version 8 (PostgreSQL): the last good copy of documents fetched from the network.
-- Append-only: never edit this file once released; add 0009_*.sql here AND in ../sqlite/.
-- Timestamps are Unix milliseconds.

-- A document the gateway fetched and must keep serving from when its source is unreachable,
-- across restarts: a gRPC service's reflected schema (kind 'grpc-schema', an encoded
-- FileDescriptorSet), later a SOAP service's WSDL.
CREATE TABLE bridgehead_documents (
    kind       TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    body       BYTEA  NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
