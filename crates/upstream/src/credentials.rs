//! Credentials toward an upstream: a fixed header (bearer, API key, Basic), or an OAuth 2.0
//! client-credentials token (RFC 6749 §4.4) that is fetched, cached, refreshed in the background
//! at 80% of its lifetime, shared by all concurrent requests (one fetch at a time), backed off on
//! 429/5xx from the token endpoint, and replaced once when the upstream answers 401.
//!
//! Token values and secrets are never logged; errors name the endpoint's status and OAuth error
//! code only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bridgehead_config::{
    BuildError, ClientAuthMethod, Credentials as CredentialsConfig, LoadedConfig, OAuth2ClientCredentials,
    Secret,
};
use bridgehead_http::codec::{clip, form_encode};
use http::header::{self, HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

use super::Carryover;
use bridgehead_http::metrics::{Metrics, Name, TokenFetchLabels};

/// Share of a token's lifetime after which a new one is fetched in the background.
const REFRESH_AT: f64 = 0.8;
/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Longest wait between token requests after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A compiled upstream credential.
pub enum Credentials {
    /// A fixed header: `Authorization: Bearer …`, `Authorization: Basic …`, or an API key header.
    Static(HeaderName, HeaderValue),
    OAuth2(Arc<TokenProvider>),
}

impl Credentials {
    pub fn build(
        base: &str,
        upstream: &str,
        cfg: &CredentialsConfig,
        carry: &Carryover,
        loaded: &LoadedConfig,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let sensitive = |mut v: HeaderValue| {
            v.set_sensitive(true);
            v
        };
        Ok(match cfg {
            CredentialsConfig::Bearer(b) => Self::Static(
                header::AUTHORIZATION,
                sensitive(HeaderValue::from_str(&format!("Bearer {}", b.token.expose())).map_err(|_| {
                    BuildError::new(format!("{base}.bearer.token"), "not a valid header value")
                })?),
            ),
            CredentialsConfig::ApiKey(k) => Self::Static(
                HeaderName::from_bytes(k.header.as_bytes()).map_err(|_| {
                    BuildError::new(
                        format!("{base}.api_key.header"),
                        format!("`{}` is not a header name", k.header),
                    )
                })?,
                sensitive(HeaderValue::from_str(k.value.expose()).map_err(|_| {
                    BuildError::new(format!("{base}.api_key.value"), "not a valid header value")
                })?),
            ),
            CredentialsConfig::Basic(b) => {
                let raw = format!("{}:{}", b.username, b.password.expose());
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw));
                Self::Static(
                    header::AUTHORIZATION,
                    sensitive(
                        HeaderValue::from_str(&value)
                            .map_err(|_| BuildError::new(format!("{base}.basic"), "not encodable"))?,
                    ),
                )
            }
            CredentialsConfig::Oauth2ClientCredentials(o) => {
                let fingerprint = fingerprint(o);
                match carry.tokens.get(upstream) {
                    Some(p) if p.fingerprint == fingerprint => Self::OAuth2(p.clone()),
                    _ => {
                        let ca = o.ca.as_ref().map(|p| loaded.resolve_path(p));
                        let client = crate::fetch::client(ca.as_deref(), o.timeout.get())
                            .map_err(|e| e.under(&format!("{base}.oauth2_client_credentials")))?;
                        Self::OAuth2(Arc::new(TokenProvider {
                            request: TokenRequest::from_config(o),
                            client,
                            fingerprint,
                            upstream: upstream.into(),
                            state: Mutex::new(State::default()),
                            fetching: tokio::sync::Mutex::new(()),
                            fetches: metrics.upstream_token_fetches.clone(),
                        }))
                    }
                }
            }
        })
    }

    /// Adds the credential to an outgoing request, replacing any value the client sent.
    /// Returns the token used, for [`TokenProvider::rejected`] on a 401.
    pub async fn apply(&self, headers: &mut http::HeaderMap) -> Result<Option<HeaderValue>, CredentialError> {
        match self {
            Self::Static(name, value) => {
                headers.insert(name.clone(), value.clone());
                Ok(None)
            }
            Self::OAuth2(p) => {
                // Boxed: a fetch's machinery would otherwise weigh on every request's future.
                let value = Box::pin(p.token()).await?;
                headers.insert(header::AUTHORIZATION, value.clone());
                Ok(Some(value))
            }
        }
    }
}

/// Everything that makes two providers interchangeable across a reload (secrets included, so a
/// rotated secret gets a fresh token).
fn fingerprint(o: &OAuth2ClientCredentials) -> String {
    format!(
        "{}\n{}\n{}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        o.token_url,
        o.client_id,
        o.client_secret.expose(),
        o.scope,
        o.audience,
        o.auth_method,
        o.timeout,
        o.ca
    )
}

/// Why no credential could be added.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// A client-credentials token request, as `curl -d grant_type=client_credentials …` would send it.
#[derive(Clone)]
pub struct TokenRequest {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub auth_method: ClientAuthMethod,
}

impl TokenRequest {
    pub fn from_config(o: &OAuth2ClientCredentials) -> Self {
        Self {
            token_url: o.token_url.clone(),
            client_id: o.client_id.clone(),
            client_secret: o.client_secret.clone(),
            scope: o.scope.clone(),
            audience: o.audience.clone(),
            auth_method: o.auth_method,
        }
    }

    /// Sends the request once.
    pub async fn send(&self, client: &reqwest::Client) -> Result<TokenResponse, TokenError> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        if let Some(a) = &self.audience {
            form.push(("audience", a));
        }
        let mut req =
            crate::fetch::traced(client.post(&self.token_url).header(header::ACCEPT, "application/json"));
        match self.auth_method {
            ClientAuthMethod::Basic => {
                req = req
                    .basic_auth(form_encode(&self.client_id), Some(form_encode(self.client_secret.expose())));
            }
            ClientAuthMethod::Post => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose()));
            }
        }
        let res =
            req.form(&form).send().await.map_err(|e| TokenError::Network(crate::fetch::describe(&e)))?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = crate::fetch::body(res).await.map_err(|e| TokenError::Network(e.to_string()))?;
        let json: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let field =
                |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(|v| v.as_str()).map(|s| clip(s, 200));
            return Err(TokenError::Refused {
                status: status.as_u16(),
                error: field("error"),
                description: field("error_description"),
                retry_after,
            });
        }
        let json = json.ok_or_else(|| TokenError::BadAnswer("the answer is not a JSON object".into()))?;
        let access_token = json
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::BadAnswer("the answer has no `access_token`".into()))?
            .to_owned();
        let token_type = json.get("token_type").and_then(|v| v.as_str()).unwrap_or("Bearer");
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::BadAnswer(format!(
                "the token type is `{}`, not Bearer",
                clip(token_type, 40)
            )));
        }
        let expires_in = json.get("expires_in").and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
        Ok(TokenResponse {
            access_token,
            expires_in: expires_in.filter(|e| e.is_finite() && *e > 0.0).map(Duration::from_secs_f64),
            scope: json.get("scope").and_then(|v| v.as_str()).map(str::to_owned),
        })
    }
}

/// A token endpoint's answer.
#[derive(Debug)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

/// Why a token request failed, in words a field engineer can act on.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token endpoint could not be reached: {0}")]
    Network(String),
    #[error("{}", refused_message(*status, error.as_deref(), description.as_deref()))]
    Refused { status: u16, error: Option<String>, description: Option<String>, retry_after: Option<Duration> },
    #[error("the token endpoint answered, but not with a usable token: {0}")]
    BadAnswer(String),
}

fn refused_message(status: u16, error: Option<&str>, description: Option<&str>) -> String {
    let hint = match error {
        Some("invalid_client") => {
            "the client id or secret is wrong, or this client may not authenticate this way (try the other auth method: HTTP Basic or form post)"
        }
        Some("unauthorized_client") => "this client is not allowed to use the client_credentials grant",
        Some("invalid_scope") => "a requested scope is unknown or not allowed for this client",
        Some("invalid_grant") => "the grant was refused",
        Some("unsupported_grant_type") => "the endpoint does not support client_credentials",
        Some("invalid_request") => {
            "the request is missing or repeats a parameter the endpoint needs (audience? scope?)"
        }
        _ if status == 429 => "the endpoint is rate limiting this client",
        _ if status >= 500 => "the endpoint failed on its side",
        _ if status == 404 || status == 405 => "this URL is not a token endpoint",
        _ => "the endpoint refused the request",
    };
    let mut s = format!("the token endpoint answered {status}");
    if let Some(e) = error {
        s.push_str(&format!(" `{e}`"));
    }
    s.push_str(&format!(": {hint}"));
    if let Some(d) = description {
        s.push_str(&format!(" (it says: {d})"));
    }
    s
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// No token request before this instant (after failures).
    backoff_until: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
}

#[derive(Clone)]
struct Cached {
    value: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The cached client-credentials token of one upstream.
pub struct TokenProvider {
    request: TokenRequest,
    client: reqwest::Client,
    fingerprint: String,
    upstream: Arc<str>,
    state: Mutex<State>,
    /// One token request at a time.
    fetching: tokio::sync::Mutex<()>,
    fetches: Family<TokenFetchLabels, Counter>,
}

impl TokenProvider {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current token as an `Authorization` value, fetching one if needed.
    pub async fn token(self: &Arc<Self>) -> Result<HeaderValue, CredentialError> {
        let now = Instant::now();
        if let Some(c) = self.lock().token.clone()
            && now < c.expires_at
        {
            if now >= c.refresh_at {
                // Still valid: answer with it and refresh in the background.
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(_guard) = me.fetching.try_lock() {
                        me.fetch_locked().await;
                    }
                });
            }
            return Ok(c.value);
        }
        let _guard = self.fetching.lock().await;
        // Someone else may have fetched while this request waited.
        if let Some(c) = self.lock().token.clone()
            && Instant::now() < c.expires_at
        {
            return Ok(c.value);
        }
        self.fetch_locked().await;
        let st = self.lock();
        match &st.token {
            Some(c) if Instant::now() < c.expires_at => Ok(c.value.clone()),
            _ => Err(CredentialError(format!(
                "no token for upstream `{}`: {}",
                self.upstream,
                st.last_error.as_deref().unwrap_or("the token endpoint has not answered yet")
            ))),
        }
    }

    /// The upstream refused `used` (401): forget it so the next call fetches a new token. Does
    /// nothing when the token has already been replaced.
    pub fn rejected(&self, used: &HeaderValue) {
        let mut st = self.lock();
        if st.token.as_ref().is_some_and(|c| c.value == *used) {
            st.token = None;
            st.backoff_until = None;
        }
    }

    /// Fetches a token; the caller holds `fetching`. Honours the backoff.
    async fn fetch_locked(&self) {
        if self.lock().backoff_until.is_some_and(|b| Instant::now() < b) {
            return;
        }
        let started = Instant::now();
        let result = self.request.send(&self.client).await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.fetches
            .get_or_create(&TokenFetchLabels { upstream: Name(self.upstream.clone()), result: label })
            .inc();
        let mut st = self.lock();
        match result {
            Ok(t) => {
                let lifetime = t.expires_in.unwrap_or(DEFAULT_LIFETIME);
                let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", t.access_token)) else {
                    st.last_error = Some("the access token is not a valid header value".into());
                    return;
                };
                value.set_sensitive(true);
                st.token = Some(Cached {
                    value,
                    refresh_at: started + lifetime.mul_f64(REFRESH_AT),
                    expires_at: started + lifetime,
                });
                st.failures = 0;
                st.backoff_until = None;
                st.last_error = None;
                tracing::debug!(upstream = %self.upstream, lifetime_s = lifetime.as_secs(), "upstream token fetched");
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                let exp = Duration::from_secs(1u64 << st.failures.min(6).saturating_sub(1)).min(MAX_BACKOFF);
                let wait = match &e {
                    TokenError::Refused { retry_after: Some(r), .. } => (*r).min(MAX_BACKOFF * 5),
                    _ => exp,
                };
                st.backoff_until = Some(Instant::now() + wait);
                tracing::warn!(
                    upstream = %self.upstream, error = %e, retry_in_s = wait.as_secs(),
                    serving = if st.token.is_some() { "the cached token" } else { "nothing" },
                    "upstream token request failed"
                );
                st.last_error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_explained() {
        let m = refused_message(401, Some("invalid_client"), Some("bad secret"));
        assert!(
            m.starts_with(
                "the token endpoint answered 401 `invalid_client`: the client id or secret is wrong"
            ),
            "{m}"
        );
        assert!(m.ends_with("(it says: bad secret)"));
        assert!(refused_message(429, None, None).contains("rate limiting"));
        assert!(refused_message(503, None, None).contains("failed on its side"));
    }
}
