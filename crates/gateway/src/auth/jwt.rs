//! The JWT authenticator: token extraction, the verified-token cache, verification against the
//! authenticator's key source (RFC 8725 rules live in `bridgehead_auth::jwt`), claim matchers and
//! the identity sent upstream.

use std::sync::Arc;

use bridgehead_auth::jwt::{self, ASYMMETRIC, Algorithm, HMAC, KeySet, Policy, Rejection, Verified};
use bridgehead_config::BuildError;
use bridgehead_config::{JwtAuth, LoadedConfig};
use http::HeaderName;
use http::request::Parts;

use super::source::{FileSource, JwksSources, KeySource, UrlKey};
use super::{ClaimHeaders, Identity, Outcome, TokenSource, consumer_from_claims, scopes_from_claims};
use bridgehead_auth::cache::{TokenCache, digest};
use bridgehead_http::metrics::Metrics;

/// Entries for tokens without `exp` (allowed only with `require_exp: false`) live this long.
const NO_EXP_CACHE_SECS: u64 = 60;

pub struct Jwt {
    keys: KeySource,
    policy: Policy,
    cache: Option<TokenCache<Identity>>,
    token: TokenSource,
    consumer_claim: Option<String>,
    claims: Vec<(String, Vec<String>)>,
    claim_headers: ClaimHeaders,
}

impl Jwt {
    /// Compiles the authenticator. Errors start with the key they concern.
    pub fn build(
        name: &str,
        cfg: &JwtAuth,
        loaded: &LoadedConfig,
        sources: &JwksSources,
        store: Option<&bridgehead_state::Store>,
        metrics: &Metrics,
        oauth: Option<&Arc<bridgehead_oauth::OAuthServer>>,
    ) -> Result<Self, BuildError> {
        if cfg.issuer.as_deref() == Some("local") {
            return Self::local(cfg, oauth);
        }
        let algorithms: Vec<Algorithm> = if cfg.algorithms.is_empty() {
            match &cfg.secret {
                // The HS algorithms the secret is long enough for (RFC 7518 §3.2).
                Some(secret) => {
                    let len = secret.expose().len();
                    HMAC.iter().zip([32, 48, 64]).filter(|(_, min)| len >= *min).map(|(a, _)| *a).collect()
                }
                None => ASYMMETRIC.to_vec(),
            }
        } else {
            cfg.algorithms
                .iter()
                .map(|a| jwt::parse_algorithm(a).map_err(|e| BuildError::new("algorithms", e)))
                .collect::<Result<_, _>>()?
        };
        let keys = if let Some(url) = &cfg.jwks_url {
            let key = UrlKey {
                url: url.clone(),
                ca: cfg.ca.as_ref().map(|p| loaded.resolve_path(p)),
                refresh: cfg.refresh.get(),
                min_refresh: cfg.min_refresh_interval.get(),
                timeout: cfg.fetch_timeout.get(),
            };
            KeySource::Url(sources.get_or_start(name, key, store, &metrics.auth_fetches)?)
        } else if let Some(path) = &cfg.jwks_file {
            KeySource::File(FileSource::start(name, loaded.resolve_path(path))?)
        } else if let Some(path) = &cfg.public_key_file {
            let path = loaded.resolve_path(path);
            let pem = std::fs::read(&path).map_err(|e| {
                BuildError::new("public_key_file", format!("cannot read {}: {e}", path.display()))
            })?;
            KeySource::fixed(
                KeySet::from_pem(&pem)
                    .map_err(|e| BuildError::new("public_key_file", format!("{}: {e}", path.display())))?,
            )
        } else if let Some(secret) = &cfg.secret {
            KeySource::fixed(
                KeySet::from_secret(secret.expose().as_bytes(), &algorithms)
                    .map_err(|e| BuildError::new("secret", e))?,
            )
        } else {
            return Err(BuildError::new("", "needs a key source"));
        };
        let policy = Policy {
            algorithms,
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            leeway: cfg.leeway.get().as_secs(),
            require_exp: cfg.require_exp,
            typ: cfg.typ.clone(),
            max_token_bytes: usize::try_from(cfg.max_token_size.get()).unwrap_or(usize::MAX),
            signature_only: false,
        };
        Self::assemble(keys, policy, cfg)
    }

    /// `issuer: local`: the built-in authorization server's keys and issuer, RFC 9068 `typ`.
    fn local(cfg: &JwtAuth, oauth: Option<&Arc<bridgehead_oauth::OAuthServer>>) -> Result<Self, BuildError> {
        let oauth = oauth.ok_or_else(|| BuildError::new("issuer", "`local` needs oauth_server"))?;
        let policy = Policy {
            algorithms: vec![Algorithm::ES256],
            issuer: Some(oauth.issuer()),
            audiences: cfg.audiences.clone(),
            leeway: cfg.leeway.get().as_secs(),
            require_exp: true,
            typ: Some(cfg.typ.clone().unwrap_or_else(|| "at+jwt".into())),
            max_token_bytes: usize::try_from(cfg.max_token_size.get()).unwrap_or(usize::MAX),
            signature_only: false,
        };
        Self::assemble(KeySource::Local(oauth.keys().clone()), policy, cfg)
    }

    /// The parts every JWT authenticator has, whatever its key source.
    fn assemble(keys: KeySource, policy: Policy, cfg: &JwtAuth) -> Result<Self, BuildError> {
        Ok(Self {
            keys,
            policy,
            cache: TokenCache::new(cfg.token_cache),
            token: TokenSource::new(cfg.header.as_deref(), cfg.cookie.as_deref())?,
            consumer_claim: cfg.consumer_claim.clone(),
            claims: cfg.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            claim_headers: ClaimHeaders::new(&cfg.claims_to_headers)?,
        })
    }

    pub fn token_source(&self) -> &TokenSource {
        &self.token
    }

    pub fn identity_headers(&self) -> Vec<HeaderName> {
        self.claim_headers.names().cloned().collect()
    }

    pub async fn ready(&self) {
        self.keys.ready().await;
    }

    pub async fn check(&self, name: &Arc<str>, parts: &Parts) -> Outcome {
        let token = match self.token.extract(parts) {
            Ok(Some(token)) => token,
            Ok(None) => return Outcome::Absent,
            Err(ambiguous) => return Outcome::Refused { reason: "malformed", detail: ambiguous.into() },
        };
        let now = bridgehead_http::clock::unix_now();
        let Some(mut keys) = self.keys.current() else {
            return Outcome::Unavailable(self.keys.unavailable_reason());
        };
        let key = self.cache.as_ref().map(|_| digest(token));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(id) = cache.get(key, now, keys.generation)
        {
            return Outcome::Admitted(id);
        }
        let mut result = jwt::verify(token, &keys.keys, &self.policy, now);
        if matches!(result, Err(Rejection::UnknownKid(_))) {
            self.keys.refresh_for_unknown_kid().await;
            if let Some(newer) = self.keys.current()
                && newer.generation != keys.generation
            {
                keys = newer;
                result = jwt::verify(token, &keys.keys, &self.policy, now);
            }
        }
        let verified = match result {
            Ok(v) => v,
            Err(r) => return Outcome::Refused { reason: r.code(), detail: r.to_string() },
        };
        if let KeySource::Local(local) = &self.keys
            && verified.claims.get("jti").and_then(|j| j.as_str()).is_none_or(|jti| local.is_revoked(jti))
        {
            return Outcome::Refused { reason: "revoked", detail: "the token has been revoked".into() };
        }
        let identity = match self.identity(name, &verified) {
            Ok(id) => id,
            Err(refusal) => return refusal,
        };
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            let expires = verified.exp.unwrap_or(now + NO_EXP_CACHE_SECS);
            cache.insert(key, identity.clone(), expires, now, keys.generation);
        }
        Outcome::Admitted(identity)
    }

    fn identity(&self, name: &Arc<str>, v: &Verified) -> Result<Identity, Outcome> {
        for (claim, accepted) in &self.claims {
            if !claim_matches(v.claims.get(claim), accepted) {
                return Err(Outcome::Refused {
                    reason: "claim_mismatch",
                    detail: format!("claim `{claim}` does not hold an accepted value"),
                });
            }
        }
        let consumer = consumer_from_claims(&v.claims, self.consumer_claim.as_deref()).ok_or_else(|| {
            Outcome::Refused {
                reason: "missing_claim",
                detail: match &self.consumer_claim {
                    Some(c) => format!("the token has no `{c}` claim to name the consumer"),
                    None => "the token has none of `sub`, `client_id`, `azp` to name the consumer".into(),
                },
            }
        })?;
        Ok(Identity::new(
            name.clone(),
            &consumer,
            scopes_from_claims(&v.claims).into(),
            self.claim_headers.values(&v.claims).into(),
        ))
    }
}

/// A string claim equals one of `accepted`; an array claim contains one of them.
fn claim_matches(value: Option<&serde_json::Value>, accepted: &[String]) -> bool {
    match value {
        Some(serde_json::Value::String(s)) => accepted.iter().any(|a| a == s),
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|i| i.as_str()).any(|s| accepted.iter().any(|a| a == s))
        }
        Some(serde_json::Value::Bool(b)) => accepted.iter().any(|a| a == if *b { "true" } else { "false" }),
        Some(serde_json::Value::Number(n)) => accepted.iter().any(|a| *a == n.to_string()),
        _ => false,
    }
}
