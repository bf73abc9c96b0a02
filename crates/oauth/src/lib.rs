//! The built-in OAuth 2.0 authorization server (the local issuer), served on the data listener
//! when `oauth_server` is configured:
//!
//! - `POST /oauth2/token` — `client_credentials` (RFC 6749 §4.4), with `client_secret_basic` or
//!   `client_secret_post`; errors per §5.2; `Cache-Control: no-store`; rate limited per address.
//! - `POST /oauth2/introspect` (RFC 7662) and `POST /oauth2/revoke` (RFC 7009), for
//!   authenticated clients; a client sees and revokes only its own tokens.
//! - `GET /.well-known/oauth-authorization-server` (RFC 8414) and `GET /.well-known/jwks.json`.
//!
//! Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed ES256 with keys kept in the state
//! database ([`keys`]). Client secrets are stored as SHA-256 digests and compared in constant time.
//!
//! Invariant: an error answer never says which part of a client's credentials was wrong.

mod code;
pub mod keys;
mod limiter;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use bridgehead_config::{OAuthClient, OAuthServer as OAuthServerConfig};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

pub use self::keys::LocalKeys;
use bridgehead_http::clock::unix_now;

/// Largest form body accepted by the endpoints.
const MAX_FORM: usize = 16 * 1024;

/// A registered client.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    secret_sha256: Option<[u8; 32]>,
    public: bool,
    grants: Vec<String>,
    scopes: Vec<String>,
    redirect_uris: Vec<String>,
}

impl Client {
    fn from_config(c: &OAuthClient) -> Self {
        Self {
            id: c.client_id.clone(),
            secret_sha256: c
                .secret_sha256
                .as_deref()
                .and_then(|h| bridgehead_auth::apikey::parse_sha256_hex(h).ok()),
            public: c.public,
            grants: c.grants.clone(),
            scopes: c.scopes.clone(),
            redirect_uris: c.redirect_uris.clone(),
        }
    }
}

/// Settings that a reload may change.
struct Settings {
    issuer: String,
    audience: String,
    access_ttl: u64,
    refresh_ttl: u64,
    clients: HashMap<String, Client>,
    /// User name → argon2 PHC string.
    users: HashMap<String, String>,
}

/// The authorization server. One per process; a reload swaps its settings.
pub struct OAuthServer {
    settings: ArcSwap<Settings>,
    /// Clients registered at run time, re-read every 5 s.
    db_clients: ArcSwap<HashMap<String, Client>>,
    /// Verified access tokens, for introspection.
    verified: bridgehead_auth::cache::TokenCache<Arc<serde_json::Map<String, Value>>>,
    keys: Arc<LocalKeys>,
    store: bridgehead_state::Store,
    limiter: limiter::Limiter,
}

/// Paths this server answers.
pub fn is_oauth_path(path: &str) -> bool {
    path.starts_with("/oauth2/")
        || path == "/.well-known/oauth-authorization-server"
        || path == "/.well-known/jwks.json"
}

impl OAuthServer {
    /// Loads (or creates) the signing keys and starts the background refresh of keys and
    /// revocations.
    pub async fn start(
        cfg: &OAuthServerConfig,
        store: &bridgehead_state::Store,
    ) -> Result<Arc<Self>, bridgehead_config::BuildError> {
        let keys = LocalKeys::start(store.clone()).await?;
        let server = Arc::new(Self {
            settings: ArcSwap::from_pointee(settings(cfg)),
            db_clients: ArcSwap::from_pointee(HashMap::new()),
            verified: bridgehead_auth::cache::TokenCache::new(10_000).expect("a non-zero capacity"),
            keys,
            store: store.clone(),
            limiter: limiter::Limiter::new(cfg.token_rate_per_ip),
        });
        server.refresh_clients().await;
        // Run-time clients, and housekeeping of expired codes, refresh tokens and revocations.
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            let mut ticks: u64 = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let Some(s) = weak.upgrade() else { break };
                s.refresh_clients().await;
                ticks += 1;
                if ticks % 720 == 1 {
                    let now = unix_now() as i64;
                    let _ = s.store.oauth_purge_codes(now).await;
                    let _ = s.store.oauth_purge_refresh(now).await;
                    let _ = s.store.oauth_purge_revoked(now - 600).await;
                }
            }
        });
        Ok(server)
    }

    async fn refresh_clients(&self) {
        match self.store.oauth_clients_all().await {
            Ok(records) => {
                let map = records
                    .into_iter()
                    .map(|r| {
                        let c = Client {
                            id: r.client_id.clone(),
                            secret_sha256: r
                                .secret_sha256
                                .as_deref()
                                .and_then(|h| bridgehead_auth::apikey::parse_sha256_hex(h).ok()),
                            public: r.public,
                            grants: r.grants,
                            scopes: r.scopes,
                            redirect_uris: r.redirect_uris,
                        };
                        (r.client_id, c)
                    })
                    .collect();
                self.db_clients.store(Arc::new(map));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read OAuth clients from the state database; keeping the last ones");
            }
        }
    }

    /// Applies a reloaded config.
    pub fn reconfigure(&self, cfg: &OAuthServerConfig) {
        self.settings.store(Arc::new(settings(cfg)));
        self.limiter.set_rate(cfg.token_rate_per_ip);
    }

    pub fn keys(&self) -> &Arc<LocalKeys> {
        &self.keys
    }

    pub fn issuer(&self) -> String {
        self.settings.load().issuer.clone()
    }

    /// Serves one request to an OAuth path.
    pub async fn handle(&self, req: Request<hyper::body::Incoming>, client: IpAddr) -> Response<Bytes> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method.clone(), path.as_str()) {
            (Method::GET, "/.well-known/oauth-authorization-server") => self.metadata(),
            (Method::GET, "/oauth2/authorize") => match parse_pairs(req.uri().query().unwrap_or("")) {
                Ok(q) => self.authorize_get(&q),
                Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
            },
            (Method::POST, "/oauth2/authorize") => {
                let (parts, body) = req.into_parts();
                match read_form(&parts.headers, body).await {
                    Ok(f) => self.authorize_post(&f).await,
                    Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
                }
            }
            (_, "/oauth2/authorize") => method_not_allowed("GET, POST"),
            (Method::GET, "/.well-known/jwks.json") => json_response(
                StatusCode::OK,
                &self.keys.jwks(),
                &[(header::CACHE_CONTROL, "public, max-age=300")],
            ),
            (Method::POST, "/oauth2/token" | "/oauth2/introspect" | "/oauth2/revoke") => {
                if path == "/oauth2/token" && !self.limiter.allow(client) {
                    let mut res = oauth_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "slow_down",
                        "too many token requests from this address",
                    );
                    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return res;
                }
                let (parts, body) = req.into_parts();
                let form = match read_form(&parts.headers, body).await {
                    Ok(f) => f,
                    Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
                };
                match path.as_str() {
                    "/oauth2/token" => self.token(&parts.headers, &form).await,
                    "/oauth2/introspect" => self.introspect(&parts.headers, &form).await,
                    _ => self.revoke(&parts.headers, &form).await,
                }
            }
            (_, "/.well-known/oauth-authorization-server" | "/.well-known/jwks.json") => {
                method_not_allowed("GET")
            }
            (_, "/oauth2/token" | "/oauth2/introspect" | "/oauth2/revoke") => method_not_allowed("POST"),
            _ => oauth_error(
                StatusCode::NOT_FOUND,
                "invalid_request",
                "no such endpoint on this authorization server",
            ),
        }
    }

    fn metadata(&self) -> Response<Bytes> {
        let s = self.settings.load();
        let i = &s.issuer;
        let body = json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/oauth2/authorize"),
            "token_endpoint": format!("{i}/oauth2/token"),
            "introspection_endpoint": format!("{i}/oauth2/introspect"),
            "revocation_endpoint": format!("{i}/oauth2/revoke"),
            "jwks_uri": format!("{i}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "scopes_supported": scopes_supported(&s),
        });
        json_response(StatusCode::OK, &body, &[])
    }

    /// Authenticates the calling client (RFC 6749 §2.3.1): HTTP Basic or the form body, not both.
    fn authenticate(&self, headers: &http::HeaderMap, form: &Form) -> Result<Client, ClientAuthFailure> {
        let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
        let (id, secret, used_basic) = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(_), _, Some(_)) => return Err(ClientAuthFailure::TwoMethods),
            (Some(b), _, None) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|s| s.split_once(':').map(|(a, b)| (form_decode(a), form_decode(b))));
                match decoded {
                    Some((id, secret)) => (id, Some(secret), true),
                    None => return Err(ClientAuthFailure::Invalid { basic: true }),
                }
            }
            (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned), false),
            (None, None, _) => return Err(ClientAuthFailure::Invalid { basic: false }),
        };
        let Some(client) = self.client(&id) else {
            return Err(ClientAuthFailure::Invalid { basic: used_basic });
        };
        let ok = match (&client.secret_sha256, &secret) {
            (Some(expected), Some(given)) => {
                bool::from(expected.ct_eq(&bridgehead_auth::apikey::sha256(given)))
            }
            _ => false,
        };
        if !ok {
            return Err(ClientAuthFailure::Invalid { basic: used_basic });
        }
        Ok(client)
    }

    /// A client from the config, else one registered at run time (`bridgehead oauth client add`).
    fn client(&self, id: &str) -> Option<Client> {
        if let Some(c) = self.settings.load().clients.get(id) {
            return Some(c.clone());
        }
        self.db_clients.load().get(id).cloned()
    }

    /// Client authentication where public clients may also call: a public client names itself
    /// with `client_id` and no secret (RFC 6749 §3.2.1).
    fn authenticate_any(&self, headers: &http::HeaderMap, form: &Form) -> Result<Client, ClientAuthFailure> {
        let has_secret = form.get("client_secret").is_some() || headers.contains_key(header::AUTHORIZATION);
        if !has_secret && let Some(id) = form.get("client_id") {
            return match self.client(id) {
                Some(c) if c.public => Ok(c),
                _ => Err(ClientAuthFailure::Invalid { basic: false }),
            };
        }
        self.authenticate(headers, form)
    }

    async fn token(&self, headers: &http::HeaderMap, form: &Form) -> Response<Bytes> {
        let grant = match form.get("grant_type") {
            Some(g) => g.to_owned(),
            None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing grant_type"),
        };
        match grant.as_str() {
            "client_credentials" => {}
            "password" => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "the password grant is not supported (RFC 9700 §2.4)",
                );
            }
            "authorization_code" | "refresh_token" => {
                let client = match self.authenticate_any(headers, form) {
                    Ok(c) => c,
                    Err(failure) => return failure.response(),
                };
                return if grant == "authorization_code" {
                    self.grant_code(&client, form).await
                } else {
                    self.grant_refresh(&client, form).await
                };
            }
            _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unknown grant_type"),
        }
        let client = match self.authenticate(headers, form) {
            Ok(c) => c,
            Err(failure) => return failure.response(),
        };
        if !client.grants.iter().any(|g| g == "client_credentials") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "this client may not use client_credentials",
            );
        }
        let scope = match form.get("scope") {
            None => client.scopes.clone(),
            Some(requested) => {
                let requested: Vec<String> = requested.split_ascii_whitespace().map(str::to_owned).collect();
                if let Some(bad) = requested.iter().find(|r| !client.scopes.contains(r)) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("scope `{}` is not allowed for this client", clip(bad)),
                    );
                }
                requested
            }
        };
        // Client credentials: the client acts for itself, so it is the subject; no refresh token.
        self.issue(&client, &client.id, &scope, None, None).await
    }

    /// Verifies one of our access tokens; `None` when it is not active. A verified token's claims
    /// are cached (by its SHA-256, until its `exp`) for the current key-set generation, which a
    /// revocation ends; revocations are checked in memory (this node's at once, other nodes'
    /// within 10 s).
    async fn active_claims(&self, token: &str) -> Option<Arc<serde_json::Map<String, Value>>> {
        let generation = self.keys.current().generation;
        let now = unix_now();
        let key = bridgehead_auth::cache::digest(token);
        if let Some(claims) = self.verified.get(&key, now, generation) {
            return Some(claims);
        }
        let s = self.settings.load();
        let claims = Arc::new(self.keys.verify(token, &s.issuer)?);
        let jti = claims.get("jti").and_then(Value::as_str)?;
        if self.keys.is_revoked(jti) {
            return None;
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        self.verified.insert(key, claims.clone(), exp, now, generation);
        Some(claims)
    }

    async fn introspect(&self, headers: &http::HeaderMap, form: &Form) -> Response<Bytes> {
        let client = match self.authenticate(headers, form) {
            Ok(c) => c,
            Err(failure) => return failure.response(),
        };
        let inactive = || json_response(StatusCode::OK, &json!({"active": false}), &[]);
        let Some(token) = form.get("token") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing token");
        };
        let Some(claims) = self.active_claims(token).await else { return inactive() };
        // A client learns about its own tokens only.
        if claims.get("client_id").and_then(Value::as_str) != Some(client.id.as_str()) {
            return inactive();
        }
        let mut body = json!({"active": true, "token_type": "Bearer"});
        for k in ["scope", "client_id", "sub", "exp", "iat", "nbf", "aud", "iss", "jti"] {
            if let Some(v) = claims.get(k) {
                body[k] = v.clone();
            }
        }
        json_response(StatusCode::OK, &body, &[])
    }

    async fn revoke(&self, headers: &http::HeaderMap, form: &Form) -> Response<Bytes> {
        let client = match self.authenticate_any(headers, form) {
            Ok(c) => c,
            Err(failure) => return failure.response(),
        };
        let Some(token) = form.get("token") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing token");
        };
        if let Some(hint) = form.get("token_type_hint")
            && !matches!(hint, "access_token" | "refresh_token")
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_token_type",
                "token_type_hint must be access_token or refresh_token",
            );
        }
        // RFC 7009 §2.2: unknown tokens, and tokens of other clients, get 200 too.
        let s = self.settings.load();
        if let Some(claims) = self.keys.verify(token, &s.issuer)
            && claims.get("client_id").and_then(Value::as_str) == Some(client.id.as_str())
            && let Some(jti) = claims.get("jti").and_then(Value::as_str)
        {
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
            if let Err(e) = self.store.oauth_revoke_jti(jti, &client.id, exp).await {
                tracing::error!(error = %e, "cannot record a revocation");
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the revocation could not be stored",
                );
            }
            self.keys.revoked_locally(jti);
        } else if let Err(e) = self
            .store
            .oauth_refresh_revoke(&bridgehead_auth::apikey::sha256_hex(token), &client.id, unix_now() as i64)
            .await
        {
            tracing::error!(error = %e, "cannot record a revocation");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation could not be stored",
            );
        }
        let mut res = Response::new(Bytes::new());
        no_store(res.headers_mut());
        res
    }
}

fn settings(cfg: &OAuthServerConfig) -> Settings {
    Settings {
        issuer: cfg.issuer.clone(),
        audience: cfg.audience.clone().unwrap_or_else(|| cfg.issuer.clone()),
        access_ttl: cfg.access_token_ttl.get().as_secs(),
        refresh_ttl: cfg.refresh_token_ttl.get().as_secs(),
        users: cfg.users.iter().map(|u| (u.username.clone(), u.password_hash.expose().to_owned())).collect(),
        clients: cfg.clients.iter().map(|c| (c.client_id.clone(), Client::from_config(c))).collect(),
    }
}

fn scopes_supported(s: &Settings) -> Vec<String> {
    let mut all: Vec<String> = s.clients.values().flat_map(|c| c.scopes.iter().cloned()).collect();
    all.sort();
    all.dedup();
    all
}

/// A parsed `application/x-www-form-urlencoded` body. A parameter given twice is refused
/// (RFC 6749 §3.2: "parameters MUST NOT be included more than once").
pub struct Form(HashMap<String, String>);

impl Form {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

async fn read_form(headers: &http::HeaderMap, body: hyper::body::Incoming) -> Result<Form, String> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    {
        return Err("the body must be application/x-www-form-urlencoded".into());
    }
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = http_body_util::BodyExt::collect(limited)
        .await
        .map_err(|_| format!("the body is larger than {MAX_FORM} bytes or broken"))?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| "the body is not UTF-8".to_string())?;
    parse_pairs(text)
}

/// `a=b&c=d` pairs, each once.
fn parse_pairs(text: &str) -> Result<Form, String> {
    let mut map = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k);
        if map.insert(k.clone(), form_decode(v)).is_some() {
            return Err(format!("parameter `{}` is repeated", clip(&k)));
        }
    }
    Ok(Form(map))
}

/// Decodes one form component (`+` and `%XX`).
fn form_decode(s: &str) -> String {
    bridgehead_http::codec::percent_decode(s).into_owned()
}

fn clip(s: &str) -> String {
    bridgehead_http::codec::clip(s, 64)
}

/// A random identifier (`jti`): 16 random bytes, base64url.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn no_store(h: &mut http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_response(
    status: StatusCode,
    body: &Value,
    extra: &[(header::HeaderName, &'static str)],
) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(h);
    for (k, v) in extra {
        h.insert(k.clone(), HeaderValue::from_static(v));
    }
    res
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    json_response(status, &json!({"error": error, "error_description": description}), &[])
}

/// Why client authentication failed; the answer never says which credential part was wrong.
enum ClientAuthFailure {
    TwoMethods,
    Invalid { basic: bool },
}

impl ClientAuthFailure {
    fn response(self) -> Response<Bytes> {
        match self {
            Self::TwoMethods => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not two",
            ),
            Self::Invalid { basic } => invalid_client(basic),
        }
    }
}

fn invalid_client(basic: bool) -> Response<Bytes> {
    let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    if basic {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bridgehead\""));
    }
    res
}

fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut res = oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "method not allowed");
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}
