//! The local issuer's signing keys and revocations.
//!
//! Keys live in the state database (`bridgehead_oauth_keys`), so every node of a cluster signs and
//! verifies with the same set and a restart keeps them. At start, if no key is active, an ES256
//! key is generated and stored. A key is published in the JWKS from its creation, signs from its
//! `activate_at`, and disappears after its `retire_at`; the set is re-read every 10 s.
//!
//! Revoked token ids are kept in memory (read from the database with the keys) for the
//! `issuer: local` JWT authenticator. A revocation, here or on another node, moves the key set to
//! a new generation, which empties the authenticators' verified-token caches for this issuer.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bridgehead_auth::jwt::{self, Algorithm, KeySet, Policy, Signer};
use bridgehead_config::BuildError;
use bridgehead_state::{OAuthKeyRecord, Store};
use serde_json::{Value, json};

use bridgehead_auth::cache::{PublishedKeys, Versioned};
use bridgehead_http::clock::unix_now;

/// How often keys and revocations are re-read from the database.
const REFRESH: Duration = Duration::from_secs(10);

struct Signing {
    kid: String,
    signer: Signer,
}

/// The local issuer's keys.
pub struct LocalKeys {
    store: Store,
    signing: ArcSwapOption<Signing>,
    /// Published keys, for verification, with their generation.
    published: ArcSwap<Versioned>,
    jwks: ArcSwap<Value>,
    revoked: RwLock<HashSet<String>>,
    /// What the last refresh saw, to notice changes: (kids, revoked count).
    seen: std::sync::Mutex<(Vec<String>, usize)>,
}

impl LocalKeys {
    pub async fn start(store: Store) -> Result<Arc<Self>, BuildError> {
        let now = unix_now() as i64;
        let mut records = store
            .oauth_keys_all()
            .await
            .map_err(|e| BuildError::new("oauth_server", format!("cannot read signing keys: {e}")))?;
        if !records.iter().any(|r| r.activate_at <= now && r.retire_at.is_none_or(|t| t > now)) {
            let generated = jwt::keygen::generate(Algorithm::ES256)
                .map_err(|e| BuildError::new("oauth_server", format!("{e}")))?;
            let rec = OAuthKeyRecord {
                kid: generated.kid.clone(),
                alg: "ES256".into(),
                private_pem: generated.private_pem.clone(),
                public_jwk: generated.jwks["keys"][0].to_string(),
                created_at: now,
                activate_at: now,
                retire_at: None,
            };
            store
                .oauth_key_insert(&rec)
                .await
                .map_err(|e| BuildError::new("oauth_server", format!("cannot store a signing key: {e}")))?;
            tracing::info!(kid = %rec.kid, "generated the local issuer's first signing key");
            records = store
                .oauth_keys_all()
                .await
                .map_err(|e| BuildError::new("oauth_server", format!("cannot read signing keys: {e}")))?;
        }
        let keys = Arc::new(Self {
            store,
            signing: ArcSwapOption::empty(),
            published: ArcSwap::new(Versioned::new(KeySet::default())),
            jwks: ArcSwap::from_pointee(json!({"keys": []})),
            revoked: RwLock::new(HashSet::new()),
            seen: std::sync::Mutex::new((Vec::new(), 0)),
        });
        keys.apply(records).map_err(|e| BuildError::new("oauth_server", e))?;
        keys.refresh_revoked().await;
        let weak = Arc::downgrade(&keys);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(k) = weak.upgrade() else { break };
                match k.store.oauth_keys_all().await {
                    Ok(records) => {
                        if let Err(e) = k.apply(records) {
                            tracing::error!(error = %e, "the local issuer's keys in the state database are unusable; keeping the previous ones");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-read the local issuer's keys; keeping the previous ones");
                    }
                }
                k.refresh_revoked().await;
            }
        });
        Ok(keys)
    }

    /// Installs a key set read from the database.
    fn apply(&self, records: Vec<OAuthKeyRecord>) -> Result<(), String> {
        let now = unix_now() as i64;
        let live: Vec<&OAuthKeyRecord> =
            records.iter().filter(|r| r.retire_at.is_none_or(|t| t > now)).collect();
        let jwks = json!({"keys": live.iter().filter_map(|r| serde_json::from_str::<Value>(&r.public_jwk).ok()).collect::<Vec<_>>()});
        let (set, _) = KeySet::from_jwks(jwks.to_string().as_bytes()).map_err(|e| e.to_string())?;
        // The newest active key signs.
        let signer = live
            .iter()
            .filter(|r| r.activate_at <= now)
            .max_by_key(|r| (r.activate_at, r.created_at))
            .ok_or("no active signing key")?;
        let alg = jwt::parse_algorithm(&signer.alg)?;
        let current = self.signing.load();
        if current.as_ref().is_none_or(|c| c.kid != signer.kid) {
            let s = Signer::new(signer.private_pem.as_bytes(), alg, Some(&signer.kid), Some("at+jwt"))
                .map_err(|e| format!("signing key {}: {e}", signer.kid))?;
            self.signing.store(Some(Arc::new(Signing { kid: signer.kid.clone(), signer: s })));
        }
        let kids: Vec<String> = live.iter().map(|r| r.kid.clone()).collect();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 != kids {
            seen.0 = kids;
            self.published.store(Versioned::new(set));
            self.jwks.store(Arc::new(jwks));
        }
        Ok(())
    }

    async fn refresh_revoked(&self) {
        let Ok(jtis) = self.store.oauth_revoked_active(unix_now() as i64).await else { return };
        let n = jtis.len();
        *self.revoked.write().unwrap_or_else(std::sync::PoisonError::into_inner) = jtis.into_iter().collect();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.1 != n {
            seen.1 = n;
            self.bump();
        }
    }

    /// A new generation of the same keys: verified-token caches for this issuer start empty.
    fn bump(&self) {
        let keys = self.published.load().keys.clone();
        self.published.store(Versioned::new(keys));
    }

    /// Signs access-token claims with the active key.
    pub fn sign(&self, claims: &Value) -> Result<String, SignError> {
        let s = self.signing.load();
        let s = s.as_ref().ok_or(SignError::NoKey)?;
        s.signer.sign(claims).map_err(|e| SignError::Failed(e.to_string()))
    }

    /// Verifies one of this issuer's access tokens (signature, `typ`, `iss`, `exp`).
    pub fn verify(&self, token: &str, issuer: &str) -> Option<serde_json::Map<String, Value>> {
        let policy = Policy {
            algorithms: vec![Algorithm::ES256],
            issuer: Some(issuer.to_owned()),
            typ: Some("at+jwt".into()),
            leeway: 0,
            ..Policy::default()
        };
        jwt::verify(token, &self.published.load().keys, &policy, unix_now()).ok().map(|v| v.claims)
    }

    /// The published keys as a JWK Set.
    pub fn jwks(&self) -> Value {
        (**self.jwks.load()).clone()
    }

    /// The verification keys with their generation, for `jwt: { issuer: local }`.
    pub fn current(&self) -> Arc<Versioned> {
        self.published.load_full()
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(jti)
    }

    /// Records a revocation made on this node at once (other nodes see it within 10 s).
    pub fn revoked_locally(&self, jti: &str) {
        self.revoked.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(jti.to_owned());
        self.bump();
    }
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no active signing key")]
    NoKey,
    #[error("signing failed: {0}")]
    Failed(String),
}

impl PublishedKeys for LocalKeys {
    fn current(&self) -> Arc<Versioned> {
        LocalKeys::current(self)
    }

    fn is_revoked(&self, jti: &str) -> bool {
        LocalKeys::is_revoked(self, jti)
    }
}
