//! State of the built-in OAuth 2.0 authorization server (migration 0003): the local issuer's
//! signing keys (`bridgehead_oauth_keys`), revoked access tokens (`bridgehead_oauth_revoked`),
//! authorization codes (`bridgehead_oauth_codes`), refresh tokens (`bridgehead_oauth_refresh`)
//! and clients registered at run time (`bridgehead_oauth_clients`). Clients from the config file
//! are not stored here.
//!
//! ## Design constraints
//!
//! - **One use, even across nodes.** [`Store::oauth_code_redeem`] and
//!   [`Store::oauth_refresh_rotate`] are each one conditional `UPDATE … RETURNING`: of any number
//!   of concurrent callers on any number of nodes, exactly one gets the code or the rotation (the
//!   row's `used_at`/`rotated_at` is the lock). Only after a refusal does a second statement read
//!   the row to say why, so the answer to a loser may describe a slightly later state (a code
//!   purged in between reads as [`CodeRedemption::Unknown`]), never a second success.
//! - **Refresh token families (RFC 9700 §4.14.2).** Every refresh token issued from one
//!   authorization carries the same `family_id`; a rotation marks the presented token rotated and
//!   the caller inserts its successor in the same family. Presenting a rotated token again is
//!   [`RefreshRotation::Reused`], on which the caller revokes the family. A family with any
//!   revoked member no longer rotates at all, which closes a race: a successor inserted just
//!   after the family was revoked (its rotation won before the reuse was seen) is not revoked by
//!   that `UPDATE`, but it can never be rotated either.
//! - **Digests, not secrets.** Codes and refresh tokens are stored as lower-case hex SHA-256 of
//!   the value and client secrets as the SHA-256 of the secret, so a copy of the database cannot
//!   redeem or refresh anything. (A bare SHA-256 suits random, high-entropy secrets only, which
//!   is what the server generates; it is not a password hash.) The exception is the signing keys:
//!   `private_pem` is stored as is, because every node must sign with it. The SQLite file is
//!   created with mode 0600; on PostgreSQL, access to the database is access to the keys.
//!   [`OAuthKeyRecord`]'s `Debug` leaves the PEM out.
//! - **Time.** Every timestamp here is Unix *seconds*, passed in by the caller (`now`), like
//!   `bridgehead_api_keys`: they are compared with JWT `exp`/`iat`, which are seconds. A code or
//!   token is valid while `expires_at > now`, so it has expired at `expires_at` itself.
//! - **Purges keep a day of history.** [`Store::oauth_purge_codes`] and
//!   [`Store::oauth_purge_refresh`] delete rows that expired more than [`OAUTH_PURGE_GRACE_SECS`]
//!   ago, so a replay shortly after expiry is still recognised as a replay (and the tokens issued
//!   from the code can still be revoked) rather than read as an unknown value.
//! - **What a power loss can undo** (SQLite with `synchronous=NORMAL`, see the crate docs): the
//!   last commits before the loss. For these tables that means a redeemed code or a rotated
//!   refresh token could be accepted once more, and a revoked access token honoured until its
//!   expiry; a signing key generated just before the loss is gone, so tokens it signed stop
//!   verifying (this fails closed). All of these are bounded by short lifetimes and need the
//!   machine, not just the process, to die; PostgreSQL deployments are not affected.
//!
//! Lists (scopes, grants, redirect URIs, jtis) are stored space-separated, so no element may be
//! empty or contain whitespace; the insert methods refuse such records with
//! [`StateError::InvalidInput`].

use std::fmt;

use sqlx::Row;

use crate::StateError;
use crate::store::{Pools, Store, on_pool, read_pool};

/// How long after their expiry [`Store::oauth_purge_codes`] and [`Store::oauth_purge_refresh`]
/// keep codes and refresh tokens: one day, in seconds.
pub const OAUTH_PURGE_GRACE_SECS: i64 = 86_400;

/// A signing key of the local issuer, as recorded in `bridgehead_oauth_keys`.
///
/// A key is published (in the issuer's JWKS) from when it is inserted, signs new tokens from
/// `activate_at`, and is neither used nor published from `retire_at` on.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthKeyRecord {
    /// The key id (`kid` header and JWK member).
    pub kid: String,
    /// The JWS algorithm the key is pinned to, e.g. `"ES256"`.
    pub alg: String,
    /// The private key, PEM. Secret: never logged (this type's `Debug` leaves it out).
    pub private_pem: String,
    /// The public key as a JWK, JSON text.
    pub public_jwk: String,
    /// When the key was created, Unix seconds.
    pub created_at: i64,
    /// When the key starts signing, Unix seconds; before that it is only published.
    pub activate_at: i64,
    /// When the key stops being used and published, Unix seconds; `None` while not scheduled.
    pub retire_at: Option<i64>,
}

impl fmt::Debug for OAuthKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pem", &"<redacted>")
            .field("public_jwk", &self.public_jwk)
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

/// An authorization code as recorded in `bridgehead_oauth_codes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthCodeRecord {
    /// Lower-case hex SHA-256 of the code (64 digits); the code itself is never stored.
    pub code_hash: String,
    /// The client the code was issued to.
    pub client_id: String,
    /// The `redirect_uri` of the authorization request, which the token request must repeat.
    pub redirect_uri: String,
    /// The PKCE `code_challenge` (RFC 7636) the `code_verifier` must match.
    pub code_challenge: String,
    /// The granted scopes (stored space-separated in `scope`).
    pub scope: Vec<String>,
    /// The resource owner the code stands for (the token's `sub`).
    pub subject: String,
    /// When the code expires, Unix seconds (it is valid while `expires_at > now`).
    pub expires_at: i64,
    /// When the code was redeemed, Unix seconds; `None` until then.
    pub used_at: Option<i64>,
    /// The refresh token family created when the code was redeemed, if any
    /// ([`Store::oauth_code_attach`]).
    pub family_id: Option<String>,
    /// The `jti`s of the access tokens issued from the code ([`Store::oauth_code_attach`]).
    pub access_jtis: Vec<String>,
}

/// What [`Store::oauth_code_redeem`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// This call redeemed the code (`used_at` is now set); no other call ever gets this for it.
    Redeemed(OAuthCodeRecord),
    /// The code was redeemed before: a replay. The record says what was issued from it, to be
    /// revoked (RFC 6749 §4.1.2).
    AlreadyUsed(OAuthCodeRecord),
    /// The code was never redeemed and has expired.
    Expired,
    /// No such code (never issued, or purged).
    Unknown,
}

/// A refresh token as recorded in `bridgehead_oauth_refresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthRefreshRecord {
    /// Lower-case hex SHA-256 of the token (64 digits); the token itself is never stored.
    pub token_hash: String,
    /// The family: every token descending by rotation from one authorization shares it.
    pub family_id: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The resource owner (the tokens' `sub`).
    pub subject: String,
    /// The granted scopes (stored space-separated in `scope`).
    pub scope: Vec<String>,
    /// When the token expires, Unix seconds (it is valid while `expires_at > now`).
    pub expires_at: i64,
    /// When the token was exchanged for its successor, Unix seconds; `None` until then.
    pub rotated_at: Option<i64>,
    /// When the token was revoked, Unix seconds; `None` unless revoked.
    pub revoked_at: Option<i64>,
}

/// What [`Store::oauth_refresh_rotate`] found. The refusals are checked in the order of the
/// variants, so e.g. a rotated token presented by another client is `WrongClient`, not `Reused`
/// (another client cannot get someone else's family revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    /// This call rotated the token (`rotated_at` is now set); the caller issues and inserts its
    /// successor in the same family. No other call ever gets this for the same token.
    Rotated(OAuthRefreshRecord),
    /// The token was rotated before: it was copied. The caller revokes the whole family
    /// ([`Store::oauth_refresh_revoke_family`], RFC 9700 §4.14.2).
    Reused {
        /// The token's family.
        family_id: String,
    },
    /// The token, or another member of its family, was revoked.
    Revoked,
    /// The token was never rotated and has expired.
    Expired,
    /// The token belongs to another client.
    WrongClient,
    /// No such token (never issued, or purged).
    Unknown,
}

/// An OAuth client registered at run time, as recorded in `bridgehead_oauth_clients`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    /// The client's identifier.
    pub client_id: String,
    /// Lower-case hex SHA-256 of the client secret (64 digits); `None` exactly for public
    /// clients.
    pub secret_sha256: Option<String>,
    /// Whether the client is public (cannot keep a secret; RFC 6749 §2.1).
    pub public: bool,
    /// The grant types it may use, e.g. `authorization_code`, `refresh_token`.
    pub grants: Vec<String>,
    /// The scopes it may be granted.
    pub scopes: Vec<String>,
    /// Its registered redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
    /// When it was registered, Unix seconds.
    pub created_at: i64,
}

/// The columns of `bridgehead_oauth_codes`, in the order `code_from_row!` reads them.
const CODE_COLUMNS: &str = "code_hash, client_id, redirect_uri, code_challenge, scope, subject, \
     expires_at, used_at, family_id, access_jtis";

/// The columns of `bridgehead_oauth_refresh`, in the order `refresh_from_row!` reads them.
const REFRESH_COLUMNS: &str =
    "token_hash, family_id, client_id, subject, scope, expires_at, rotated_at, revoked_at";

/// Reads an [`OAuthCodeRecord`] from a row of [`CODE_COLUMNS`]. A macro rather than a function
/// because the row type differs per backend (see `on_pool!`).
macro_rules! code_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(OAuthCodeRecord {
            code_hash: row.try_get(0)?,
            client_id: row.try_get(1)?,
            redirect_uri: row.try_get(2)?,
            code_challenge: row.try_get(3)?,
            scope: split_list(row.try_get(4)?),
            subject: row.try_get(5)?,
            expires_at: row.try_get(6)?,
            used_at: row.try_get(7)?,
            family_id: row.try_get(8)?,
            access_jtis: split_list(row.try_get(9)?),
        })
    }};
}

/// Reads an [`OAuthRefreshRecord`] from a row of [`REFRESH_COLUMNS`].
macro_rules! refresh_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, sqlx::Error>(OAuthRefreshRecord {
            token_hash: row.try_get(0)?,
            family_id: row.try_get(1)?,
            client_id: row.try_get(2)?,
            subject: row.try_get(3)?,
            scope: split_list(row.try_get(4)?),
            expires_at: row.try_get(5)?,
            rotated_at: row.try_get(6)?,
            revoked_at: row.try_get(7)?,
        })
    }};
}

impl Store {
    // ----- signing keys -----

    /// Records a new signing key. Fails with [`StateError::InvalidInput`] when the kid, alg, PEM
    /// or JWK is empty or the kid is already recorded.
    pub async fn oauth_key_insert(&self, rec: &OAuthKeyRecord) -> Result<(), StateError> {
        const OP: &str = "oauth_key_insert";
        const SQL: &str = "INSERT INTO bridgehead_oauth_keys
             (kid, alg, private_pem, public_jwk, created_at, activate_at, retire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kid) DO NOTHING";
        for (what, value) in [
            ("kid", &rec.kid),
            ("alg", &rec.alg),
            ("private_pem", &rec.private_pem),
            ("public_jwk", &rec.public_jwk),
        ] {
            if value.is_empty() {
                return Err(invalid(OP, format!("the {what} is empty")));
            }
        }
        let inserted = on_pool!(self, pool => sqlx::query(SQL)
            .bind(&rec.kid)
            .bind(&rec.alg)
            .bind(&rec.private_pem)
            .bind(&rec.public_jwk)
            .bind(rec.created_at)
            .bind(rec.activate_at)
            .bind(rec.retire_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query(OP))?;
        if !inserted {
            return Err(invalid(OP, format!("a key with kid {:?} already exists", rec.kid)));
        }
        Ok(())
    }

    /// Every signing key, retired ones included, oldest first (then by kid). The caller picks
    /// what to publish (`retire_at` not reached) and what to sign with (also `activate_at`
    /// reached).
    pub async fn oauth_keys_all(&self) -> Result<Vec<OAuthKeyRecord>, StateError> {
        const SQL: &str = "SELECT kid, alg, private_pem, public_jwk, created_at, activate_at, retire_at
             FROM bridgehead_oauth_keys ORDER BY created_at, kid";
        read_pool!(self, pool => sqlx::query(SQL).fetch_all(pool).await.and_then(|rows| {
            rows.iter()
                .map(|row| {
                    Ok(OAuthKeyRecord {
                        kid: row.try_get(0)?,
                        alg: row.try_get(1)?,
                        private_pem: row.try_get(2)?,
                        public_jwk: row.try_get(3)?,
                        created_at: row.try_get(4)?,
                        activate_at: row.try_get(5)?,
                        retire_at: row.try_get(6)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }))
        .map_err(StateError::query("oauth_keys_all"))
    }

    /// Schedules the key `kid` to retire at `at` (Unix seconds; now, or later to let tokens it
    /// signed run out). A retirement is only ever brought forward, never postponed: `false`
    /// when there is no such key or it already retires at or before `at`.
    pub async fn oauth_key_retire(&self, kid: &str, at: i64) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_oauth_keys SET retire_at = $2
             WHERE kid = $1 AND (retire_at IS NULL OR retire_at > $2)";
        on_pool!(self, pool => sqlx::query(SQL).bind(kid).bind(at).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(StateError::query("oauth_key_retire"))
    }

    /// Deletes the keys that retired before `before` (Unix seconds); returns how many.
    pub async fn oauth_keys_delete_retired(&self, before: i64) -> Result<u64, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_oauth_keys WHERE retire_at IS NOT NULL AND retire_at < $1";
        on_pool!(self, pool => sqlx::query(SQL).bind(before).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("oauth_keys_delete_retired"))
    }

    // ----- revoked access tokens -----

    /// Records that the access token `jti` of `client_id`, valid until `expires_at` (Unix
    /// seconds), is revoked. Idempotent: revoking it again changes nothing (the first record is
    /// kept).
    pub async fn oauth_revoke_jti(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
    ) -> Result<(), StateError> {
        const SQL: &str = "INSERT INTO bridgehead_oauth_revoked (jti, client_id, expires_at)
             VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING";
        if jti.is_empty() {
            return Err(invalid("oauth_revoke_jti", "the jti is empty".to_owned()));
        }
        on_pool!(self, pool => sqlx::query(SQL).bind(jti).bind(client_id).bind(expires_at).execute(pool).await.map(drop))
            .map_err(StateError::query("oauth_revoke_jti"))
    }

    /// Whether the access token `jti` is recorded as revoked (until it is purged).
    pub async fn oauth_is_revoked(&self, jti: &str) -> Result<bool, StateError> {
        const SQL: &str = "SELECT jti FROM bridgehead_oauth_revoked WHERE jti = $1";
        read_pool!(self, pool => sqlx::query(SQL).bind(jti).fetch_optional(pool).await.map(|row| row.is_some()))
            .map_err(StateError::query("oauth_is_revoked"))
    }

    /// The revoked jtis whose tokens have not expired at `now` (`expires_at > now`, Unix
    /// seconds), ordered by jti: what a node keeps in memory. A verifier that accepts tokens a
    /// little past `exp` (clock-skew leeway) passes `now` minus that leeway.
    pub async fn oauth_revoked_active(&self, now: i64) -> Result<Vec<String>, StateError> {
        const SQL: &str = "SELECT jti FROM bridgehead_oauth_revoked WHERE expires_at > $1 ORDER BY jti";
        read_pool!(self, pool => sqlx::query_scalar::<_, String>(SQL).bind(now).fetch_all(pool).await)
            .map_err(StateError::query("oauth_revoked_active"))
    }

    /// Deletes the revocations of tokens expired at `now` (`expires_at <= now`, Unix seconds:
    /// the complement of [`Store::oauth_revoked_active`]; pass `now` minus the verifiers'
    /// leeway); returns how many.
    pub async fn oauth_purge_revoked(&self, now: i64) -> Result<u64, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_oauth_revoked WHERE expires_at <= $1";
        on_pool!(self, pool => sqlx::query(SQL).bind(now).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("oauth_purge_revoked"))
    }

    // ----- authorization codes -----

    /// Records a new authorization code (normally with `used_at: None`, no family and no jtis).
    /// Fails with [`StateError::InvalidInput`] when the digest is not 64 lower-case hex digits
    /// or a scope or jti is empty or contains whitespace, and with [`StateError::Query`] when the
    /// digest is already recorded.
    pub async fn oauth_code_insert(&self, rec: &OAuthCodeRecord) -> Result<(), StateError> {
        const OP: &str = "oauth_code_insert";
        let sql = format!(
            "INSERT INTO bridgehead_oauth_codes ({CODE_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        check_sha256(OP, "code digest", &rec.code_hash)?;
        check_list(OP, "scope", &rec.scope)?;
        check_list(OP, "jti", &rec.access_jtis)?;
        let (scope, access_jtis) = (rec.scope.join(" "), rec.access_jtis.join(" "));
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(&rec.code_hash)
            .bind(&rec.client_id)
            .bind(&rec.redirect_uri)
            .bind(&rec.code_challenge)
            .bind(&scope)
            .bind(&rec.subject)
            .bind(rec.expires_at)
            .bind(rec.used_at)
            .bind(&rec.family_id)
            .bind(&access_jtis)
            .execute(pool)
            .await
            .map(drop))
        .map_err(StateError::query(OP))
    }

    /// Redeems the code whose digest is `code_hash` at `now` (Unix seconds), atomically: of any
    /// number of concurrent callers, on any node, exactly one gets
    /// [`CodeRedemption::Redeemed`]; see [`CodeRedemption`] for the others.
    ///
    /// The caller then checks the record's client, redirect URI and PKCE challenge against the
    /// token request, and records what it issues with [`Store::oauth_code_attach`]. A replay
    /// racing that attach sees the code without it.
    pub async fn oauth_code_redeem(&self, code_hash: &str, now: i64) -> Result<CodeRedemption, StateError> {
        const OP: &str = "oauth_code_redeem";
        let redeem = format!(
            "UPDATE bridgehead_oauth_codes SET used_at = $2
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING {CODE_COLUMNS}"
        );
        let select = format!("SELECT {CODE_COLUMNS} FROM bridgehead_oauth_codes WHERE code_hash = $1");
        // A refused UPDATE is explained by reading the row. It can only read as still redeemable
        // if it was inserted between the two statements, in which case the UPDATE is tried once
        // more.
        for _ in 0..2 {
            let redeemed = on_pool!(self, pool => {
                let row = sqlx::query(&redeem).bind(code_hash).bind(now).fetch_optional(pool).await;
                row.and_then(|row| row.map(|row| code_from_row!(&row)).transpose())
            })
            .map_err(StateError::query(OP))?;
            if let Some(rec) = redeemed {
                return Ok(CodeRedemption::Redeemed(rec));
            }
            let current = on_pool!(self, pool => {
                let row = sqlx::query(&select).bind(code_hash).fetch_optional(pool).await;
                row.and_then(|row| row.map(|row| code_from_row!(&row)).transpose())
            })
            .map_err(StateError::query(OP))?;
            match current {
                None => return Ok(CodeRedemption::Unknown),
                Some(rec) if rec.used_at.is_some() => return Ok(CodeRedemption::AlreadyUsed(rec)),
                Some(rec) if rec.expires_at <= now => return Ok(CodeRedemption::Expired),
                Some(_) => {}
            }
        }
        Ok(CodeRedemption::Unknown)
    }

    /// Records what was issued from the redeemed code `code_hash`: the refresh token family, if
    /// one was created (an earlier family is kept when this is `None`), and one more access token
    /// jti. `false` when there is no such code or it was not redeemed. Fails with
    /// [`StateError::InvalidInput`] when the jti is empty or contains whitespace.
    pub async fn oauth_code_attach(
        &self,
        code_hash: &str,
        family_id: Option<&str>,
        access_jti: &str,
    ) -> Result<bool, StateError> {
        const OP: &str = "oauth_code_attach";
        const SQL: &str = "UPDATE bridgehead_oauth_codes
             SET family_id = COALESCE($2, family_id),
                 access_jtis = CASE WHEN access_jtis = '' THEN $3 ELSE access_jtis || ' ' || $3 END
             WHERE code_hash = $1 AND used_at IS NOT NULL";
        check_list(OP, "jti", std::slice::from_ref(&access_jti))?;
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(code_hash)
            .bind(family_id)
            .bind(access_jti)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query(OP))
    }

    /// Deletes the codes that expired more than [`OAUTH_PURGE_GRACE_SECS`] before `now` (Unix
    /// seconds), redeemed or not; returns how many.
    pub async fn oauth_purge_codes(&self, now: i64) -> Result<u64, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_oauth_codes WHERE expires_at < $1";
        let cutoff = now.saturating_sub(OAUTH_PURGE_GRACE_SECS);
        on_pool!(self, pool => sqlx::query(SQL).bind(cutoff).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("oauth_purge_codes"))
    }

    // ----- refresh tokens -----

    /// Records a new refresh token (normally with `rotated_at` and `revoked_at` `None`). Fails
    /// with [`StateError::InvalidInput`] when the digest is not 64 lower-case hex digits, the
    /// family id is empty, or a scope is empty or contains whitespace, and with
    /// [`StateError::Query`] when the digest is already recorded.
    pub async fn oauth_refresh_insert(&self, rec: &OAuthRefreshRecord) -> Result<(), StateError> {
        const OP: &str = "oauth_refresh_insert";
        let sql = format!(
            "INSERT INTO bridgehead_oauth_refresh ({REFRESH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        check_sha256(OP, "token digest", &rec.token_hash)?;
        if rec.family_id.is_empty() {
            return Err(invalid(OP, "the family id is empty".to_owned()));
        }
        check_list(OP, "scope", &rec.scope)?;
        let scope = rec.scope.join(" ");
        on_pool!(self, pool => sqlx::query(&sql)
            .bind(&rec.token_hash)
            .bind(&rec.family_id)
            .bind(&rec.client_id)
            .bind(&rec.subject)
            .bind(&scope)
            .bind(rec.expires_at)
            .bind(rec.rotated_at)
            .bind(rec.revoked_at)
            .execute(pool)
            .await
            .map(drop))
        .map_err(StateError::query(OP))
    }

    /// Exchanges the refresh token whose digest is `token_hash`, presented by `client_id` at
    /// `now` (Unix seconds), atomically: of any number of concurrent callers, on any node,
    /// exactly one gets [`RefreshRotation::Rotated`]; see [`RefreshRotation`] for the others.
    /// A token whose family has a revoked member is [`RefreshRotation::Revoked`] (see the module
    /// docs).
    pub async fn oauth_refresh_rotate(
        &self,
        token_hash: &str,
        client_id: &str,
        now: i64,
    ) -> Result<RefreshRotation, StateError> {
        const OP: &str = "oauth_refresh_rotate";
        let rotate = format!(
            "UPDATE bridgehead_oauth_refresh SET rotated_at = $3
             WHERE token_hash = $1 AND client_id = $2
               AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > $3
               AND NOT EXISTS (SELECT 1 FROM bridgehead_oauth_refresh AS member
                   WHERE member.family_id = bridgehead_oauth_refresh.family_id
                     AND member.revoked_at IS NOT NULL)
             RETURNING {REFRESH_COLUMNS}"
        );
        const SELECT: &str = "SELECT token.client_id, token.family_id, token.expires_at,
                 token.rotated_at, token.revoked_at,
                 (SELECT MIN(member.revoked_at) FROM bridgehead_oauth_refresh AS member
                  WHERE member.family_id = token.family_id)
             FROM bridgehead_oauth_refresh AS token WHERE token.token_hash = $1";
        type State = (String, String, i64, Option<i64>, Option<i64>, Option<i64>);
        // As in `oauth_code_redeem`: only a row inserted between the two statements reads as
        // still rotatable, and then the UPDATE is tried once more.
        for _ in 0..2 {
            let rotated = on_pool!(self, pool => {
                let row = sqlx::query(&rotate).bind(token_hash).bind(client_id).bind(now).fetch_optional(pool).await;
                row.and_then(|row| row.map(|row| refresh_from_row!(&row)).transpose())
            })
            .map_err(StateError::query(OP))?;
            if let Some(rec) = rotated {
                return Ok(RefreshRotation::Rotated(rec));
            }
            let state = on_pool!(self, pool => sqlx::query_as::<_, State>(SELECT).bind(token_hash).fetch_optional(pool).await)
                .map_err(StateError::query(OP))?;
            let Some((owner, family_id, expires_at, rotated_at, revoked_at, family_revoked_at)) = state
            else {
                return Ok(RefreshRotation::Unknown);
            };
            if owner != client_id {
                return Ok(RefreshRotation::WrongClient);
            }
            if revoked_at.is_some() || family_revoked_at.is_some() {
                return Ok(RefreshRotation::Revoked);
            }
            if rotated_at.is_some() {
                return Ok(RefreshRotation::Reused { family_id });
            }
            if expires_at <= now {
                return Ok(RefreshRotation::Expired);
            }
        }
        Ok(RefreshRotation::Unknown)
    }

    /// Revokes every token of the family `family_id` at `now` (Unix seconds): after a reuse,
    /// or when the grant is withdrawn. Returns how many tokens were not revoked before.
    pub async fn oauth_refresh_revoke_family(&self, family_id: &str, now: i64) -> Result<u64, StateError> {
        const SQL: &str = "UPDATE bridgehead_oauth_refresh SET revoked_at = $2
             WHERE family_id = $1 AND revoked_at IS NULL";
        on_pool!(self, pool => sqlx::query(SQL).bind(family_id).bind(now).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("oauth_refresh_revoke_family"))
    }

    /// Revokes the refresh token `token_hash` at `now` (Unix seconds) if it belongs to
    /// `client_id` (RFC 7009 §2.1); this also stops its family from rotating. `false` when there
    /// is no such token of that client or it was already revoked.
    pub async fn oauth_refresh_revoke(
        &self,
        token_hash: &str,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StateError> {
        const SQL: &str = "UPDATE bridgehead_oauth_refresh SET revoked_at = $3
             WHERE token_hash = $1 AND client_id = $2 AND revoked_at IS NULL";
        on_pool!(self, pool => sqlx::query(SQL)
            .bind(token_hash)
            .bind(client_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query("oauth_refresh_revoke"))
    }

    /// Deletes the refresh tokens that expired more than [`OAUTH_PURGE_GRACE_SECS`] before `now`
    /// (Unix seconds), whatever their state; returns how many.
    pub async fn oauth_purge_refresh(&self, now: i64) -> Result<u64, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_oauth_refresh WHERE expires_at < $1";
        let cutoff = now.saturating_sub(OAUTH_PURGE_GRACE_SECS);
        on_pool!(self, pool => sqlx::query(SQL).bind(cutoff).execute(pool).await.map(|r| r.rows_affected()))
            .map_err(StateError::query("oauth_purge_refresh"))
    }

    // ----- clients -----

    /// Registers a client. Fails with [`StateError::InvalidInput`] when the client id is empty
    /// or already registered, the secret digest is present for a public client, missing for a
    /// confidential one or not 64 lower-case hex digits, or a grant, scope or redirect URI is
    /// empty or contains whitespace.
    pub async fn oauth_client_insert(&self, rec: &OAuthClientRecord) -> Result<(), StateError> {
        const OP: &str = "oauth_client_insert";
        const SQL: &str = "INSERT INTO bridgehead_oauth_clients
             (client_id, secret_sha256, public, grants, scopes, redirect_uris, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (client_id) DO NOTHING";
        if rec.client_id.is_empty() {
            return Err(invalid(OP, "the client id is empty".to_owned()));
        }
        match (&rec.secret_sha256, rec.public) {
            (Some(_), true) => {
                return Err(invalid(OP, format!("public client {:?} has a secret", rec.client_id)));
            }
            (None, false) => {
                return Err(invalid(OP, format!("confidential client {:?} has no secret", rec.client_id)));
            }
            (Some(digest), false) => check_sha256(OP, "secret digest", digest)?,
            (None, true) => {}
        }
        check_list(OP, "grant", &rec.grants)?;
        check_list(OP, "scope", &rec.scopes)?;
        check_list(OP, "redirect URI", &rec.redirect_uris)?;
        let (grants, scopes, redirect_uris) =
            (rec.grants.join(" "), rec.scopes.join(" "), rec.redirect_uris.join(" "));
        let inserted = on_pool!(self, pool => sqlx::query(SQL)
            .bind(&rec.client_id)
            .bind(&rec.secret_sha256)
            .bind(rec.public)
            .bind(&grants)
            .bind(&scopes)
            .bind(&redirect_uris)
            .bind(rec.created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(StateError::query(OP))?;
        if !inserted {
            return Err(invalid(OP, format!("a client with id {:?} already exists", rec.client_id)));
        }
        Ok(())
    }

    /// Every client registered at run time, oldest first (then by id).
    pub async fn oauth_clients_all(&self) -> Result<Vec<OAuthClientRecord>, StateError> {
        const SQL: &str = "SELECT client_id, secret_sha256, public, grants, scopes, redirect_uris, created_at
             FROM bridgehead_oauth_clients ORDER BY created_at, client_id";
        read_pool!(self, pool => sqlx::query(SQL).fetch_all(pool).await.and_then(|rows| {
            rows.iter()
                .map(|row| {
                    Ok(OAuthClientRecord {
                        client_id: row.try_get(0)?,
                        secret_sha256: row.try_get(1)?,
                        public: row.try_get(2)?,
                        grants: split_list(row.try_get(3)?),
                        scopes: split_list(row.try_get(4)?),
                        redirect_uris: split_list(row.try_get(5)?),
                        created_at: row.try_get(6)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }))
        .map_err(StateError::query("oauth_clients_all"))
    }

    /// Deletes the client `client_id`. `false` when there is no such client. Its codes and
    /// tokens are not touched: they are refused once the client is unknown, and purged in time.
    pub async fn oauth_client_delete(&self, client_id: &str) -> Result<bool, StateError> {
        const SQL: &str = "DELETE FROM bridgehead_oauth_clients WHERE client_id = $1";
        on_pool!(self, pool => sqlx::query(SQL).bind(client_id).execute(pool).await.map(|r| r.rows_affected() == 1))
            .map_err(StateError::query("oauth_client_delete"))
    }
}

fn invalid(op: &'static str, reason: String) -> StateError {
    StateError::InvalidInput { op, reason }
}

/// Refuses a digest that is not 64 lower-case hex digits (it would never match a lookup).
fn check_sha256(op: &'static str, what: &str, digest: &str) -> Result<(), StateError> {
    if digest.len() != 64 || !digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid(op, format!("the {what} must be 64 lower-case hex digits")));
    }
    Ok(())
}

/// Refuses a list element that would not survive being stored space-separated.
fn check_list<S: AsRef<str>>(op: &'static str, what: &str, items: &[S]) -> Result<(), StateError> {
    match items.iter().map(AsRef::as_ref).find(|s| s.is_empty() || s.chars().any(char::is_whitespace)) {
        Some(bad) => Err(invalid(op, format!("{what} {bad:?} is empty or contains whitespace"))),
        None => Ok(()),
    }
}

fn split_list(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}
