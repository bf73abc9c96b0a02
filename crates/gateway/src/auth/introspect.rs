//! The token introspection authenticator (RFC 7662): opaque tokens are checked by POSTing them to
//! the identity provider's introspection endpoint with Bridgehead's client credentials (HTTP
//! Basic, RFC 6749 §2.3.1). Answers are cached by the token's SHA-256 for at most `cache_ttl` and
//! never past the token's `exp`; inactive answers for at most 5 s.

use std::sync::Arc;

use bridgehead_config::BuildError;
use bridgehead_config::{IntrospectionAuth, LoadedConfig, Secret};
use http::HeaderName;
use http::request::Parts;

use super::{ClaimHeaders, Identity, Outcome, TokenSource, consumer_from_claims, scopes_from_claims};
use bridgehead_auth::cache::{TokenCache, digest};
use bridgehead_http::clock::unix_now;
use bridgehead_http::codec::form_encode;
use bridgehead_http::metrics::{FetchLabels, Metrics, Name};

const INACTIVE_CACHE_SECS: u64 = 5;
/// Most introspection calls in flight at once per authenticator; further tokens wait for a slot
/// (bounded by `timeout`), so a flood of random tokens cannot turn into a flood toward the IdP.
const MAX_IN_FLIGHT: usize = 32;

pub struct Introspection {
    url: String,
    client_id: String,
    client_secret: Secret,
    client: reqwest::Client,
    audiences: Vec<String>,
    cache: Option<TokenCache<Option<Identity>>>,
    cache_ttl: u64,
    token: TokenSource,
    consumer_claim: Option<String>,
    claim_headers: ClaimHeaders,
    fetches:
        prometheus_client::metrics::family::Family<FetchLabels, prometheus_client::metrics::counter::Counter>,
    slots: tokio::sync::Semaphore,
    timeout: std::time::Duration,
}

impl Introspection {
    pub fn build(
        cfg: &IntrospectionAuth,
        loaded: &LoadedConfig,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let ca = cfg.ca.as_ref().map(|p| loaded.resolve_path(p));
        Ok(Self {
            url: cfg.url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            client: bridgehead_upstream::fetch::client(ca.as_deref(), cfg.timeout.get())?,
            audiences: cfg.audiences.clone(),
            cache: TokenCache::new(cfg.token_cache),
            cache_ttl: cfg.cache_ttl.get().as_secs(),
            token: TokenSource::new(cfg.header.as_deref(), cfg.cookie.as_deref())?,
            consumer_claim: cfg.consumer_claim.clone(),
            claim_headers: ClaimHeaders::new(&cfg.claims_to_headers)?,
            fetches: metrics.auth_fetches.clone(),
            slots: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            timeout: cfg.timeout.get(),
        })
    }

    pub fn token_source(&self) -> &TokenSource {
        &self.token
    }

    pub fn identity_headers(&self) -> Vec<HeaderName> {
        self.claim_headers.names().cloned().collect()
    }

    pub async fn check(&self, name: &Arc<str>, parts: &Parts) -> Outcome {
        let token = match self.token.extract(parts) {
            Ok(Some(token)) => token,
            Ok(None) => return Outcome::Absent,
            Err(ambiguous) => return Outcome::Refused { reason: "malformed", detail: ambiguous.into() },
        };
        if token.len() > 16 * 1024 {
            return Outcome::Refused {
                reason: "too_large",
                detail: "the token is longer than 16 KiB".into(),
            };
        }
        let now = unix_now();
        let key = digest(token);
        if let Some(cache) = &self.cache
            && let Some(answer) = cache.get(&key, now, 0)
        {
            return match answer {
                Some(id) => Outcome::Admitted(id),
                None => inactive(),
            };
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(self.timeout, self.slots.acquire()).await else {
            self.count(name, "error");
            return Outcome::Unavailable("too many token introspections are in flight".into());
        };
        // Another request may have cached the answer while this one waited.
        if let Some(cache) = &self.cache
            && let Some(answer) = cache.get(&key, now, 0)
        {
            return match answer {
                Some(id) => Outcome::Admitted(id),
                None => inactive(),
            };
        }
        let answer = match self.introspect(token).await {
            Ok(a) => a,
            Err(e) => {
                self.count(name, "error");
                static FAILED: bridgehead_http::log_budget::LogBudget =
                    bridgehead_http::log_budget::LogBudget::new();
                if let Some(left_out) = FAILED.admit() {
                    tracing::warn!(authenticator = %name, error = %e, left_out, "token introspection failed");
                }
                // Details (addresses, TLS errors) go to the log, not to the client.
                return Outcome::Unavailable("the introspection endpoint could not be used".into());
            }
        };
        self.count(name, "success");
        if answer.get("active").and_then(serde_json::Value::as_bool) != Some(true) {
            if let Some(cache) = &self.cache {
                cache.insert(key, None, now + INACTIVE_CACHE_SECS.min(self.cache_ttl.max(1)), now, 0);
            }
            return inactive();
        }
        // RFC 7662 §2.2: a NumericDate; fractions are floored, anything else is ignored.
        let exp = answer
            .get("exp")
            .and_then(serde_json::Value::as_f64)
            .filter(|e| e.is_finite() && *e >= 0.0)
            .map(|e| e.floor() as u64);
        if exp.is_some_and(|exp| exp <= now) {
            return Outcome::Refused { reason: "expired", detail: "the token has expired".into() };
        }
        if !self.audiences.is_empty() {
            let ok = match answer.get("aud") {
                Some(serde_json::Value::String(a)) => self.audiences.contains(a),
                Some(serde_json::Value::Array(items)) => {
                    items.iter().filter_map(|i| i.as_str()).any(|a| self.audiences.iter().any(|x| x == a))
                }
                _ => false,
            };
            if !ok {
                return Outcome::Refused {
                    reason: "wrong_audience",
                    detail: format!("the token's audience is none of {}", self.audiences.join(", ")),
                };
            }
        }
        let Some(consumer) = consumer_from_claims(&answer, self.consumer_claim.as_deref()) else {
            return Outcome::Refused {
                reason: "missing_claim",
                detail: "the introspection answer names no consumer (`sub` or `client_id`)".into(),
            };
        };
        let identity = Identity::new(
            name.clone(),
            &consumer,
            scopes_from_claims(&answer).into(),
            self.claim_headers.values(&answer).into(),
        );
        if let Some(cache) = &self.cache {
            let until = (now + self.cache_ttl).min(exp.unwrap_or(u64::MAX));
            cache.insert(key, Some(identity.clone()), until, now, 0);
        }
        Outcome::Admitted(identity)
    }

    async fn introspect(&self, token: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let res = bridgehead_upstream::fetch::traced(self.client.post(&self.url))
            // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
            .basic_auth(form_encode(&self.client_id), Some(form_encode(self.client_secret.expose())))
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| bridgehead_upstream::fetch::describe(&e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("it answered {status}"));
        }
        let body = bridgehead_upstream::fetch::body(res).await.map_err(|e| e.to_string())?;
        match serde_json::from_slice(&body) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err("the answer is not a JSON object".into()),
        }
    }

    fn count(&self, name: &Arc<str>, result: &'static str) {
        self.fetches
            .get_or_create(&FetchLabels { authenticator: Name(name.clone()), kind: "introspection", result })
            .inc();
    }
}

fn inactive() -> Outcome {
    Outcome::Refused {
        reason: "inactive",
        detail: "the token is not active (expired, revoked or unknown to the identity provider)".into(),
    }
}
