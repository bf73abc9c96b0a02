-- Schema version 3 (PostgreSQL): state of the built-in OAuth 2.0 authorization server.
-- Append-only: never edit this file once released; add 0004_*.sql here AND in ../sqlite/.
-- Like 0002, every timestamp here is Unix SECONDS (BIGINT, INTEGER in the SQLite twin):
-- they are compared with JWT `exp`/`iat` claims, which are seconds too.
-- Lists (scopes, grants, redirect URIs, jtis) are stored space-separated.

-- Signing keys of the local issuer. A key is published in the JWKS from created_at, signs from
-- activate_at, and is neither used nor published from retire_at on.
CREATE TABLE bridgehead_oauth_keys (
    kid         TEXT   NOT NULL PRIMARY KEY,
    alg         TEXT   NOT NULL,
    private_pem TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL, -- JSON text
    created_at  BIGINT NOT NULL,
    activate_at BIGINT NOT NULL,
    retire_at   BIGINT
);

-- Revoked access tokens, by `jti`, kept until the token would have expired anyway.
CREATE TABLE bridgehead_oauth_revoked (
    jti        TEXT   NOT NULL PRIMARY KEY,
    client_id  TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Nodes load the revocations that have not expired; the purge deletes the rest.
CREATE INDEX bridgehead_oauth_revoked_expires_at ON bridgehead_oauth_revoked (expires_at);

-- Authorization codes, by lower-case hex SHA-256 of the code (the code itself is never stored).
-- A redeemed code keeps its row (used_at set) until the purge, so a replay is recognised and
-- what was issued from it (family_id, access_jtis) can be revoked.
CREATE TABLE bridgehead_oauth_codes (
    code_hash      TEXT   NOT NULL PRIMARY KEY,
    client_id      TEXT   NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    code_challenge TEXT   NOT NULL,
    scope          TEXT   NOT NULL, -- space-separated
    subject        TEXT   NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    family_id      TEXT,
    access_jtis    TEXT   NOT NULL DEFAULT '' -- space-separated
);

-- Refresh tokens, by lower-case hex SHA-256 of the token. Every rotation adds a row to the
-- token's family and marks the old one rotated; reusing a rotated token revokes the family.
CREATE TABLE bridgehead_oauth_refresh (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    family_id  TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    scope      TEXT   NOT NULL, -- space-separated
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT
);

-- Revoking a family, and checking whether a family is revoked, go by family_id.
CREATE INDEX bridgehead_oauth_refresh_family_id ON bridgehead_oauth_refresh (family_id);

-- OAuth clients registered at run time (clients from the config file are not stored here).
CREATE TABLE bridgehead_oauth_clients (
    client_id     TEXT    NOT NULL PRIMARY KEY,
    secret_sha256 TEXT, -- lower-case hex SHA-256 of the secret; NULL for public clients
    public        BOOLEAN NOT NULL,
    grants        TEXT    NOT NULL, -- space-separated
    scopes        TEXT    NOT NULL, -- space-separated
    redirect_uris TEXT    NOT NULL, -- space-separated
    created_at    BIGINT  NOT NULL
);
