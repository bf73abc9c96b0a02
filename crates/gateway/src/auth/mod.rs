//! The authenticate phase: who is calling, and may they use this route?
//!
//! Each configured authenticator is compiled once per config generation into an [`Authenticator`].
//! A route lists the ones it accepts ([`RouteAuth`]); they are tried in order and the first that
//! admits the request wins. An authenticator that finds no credential of its kind stays silent, so
//! the answer to a request without any credential is a plain 401 challenge, and the answer to a
//! bad credential names what was wrong with it (RFC 6750 `error_description`, problem `reason`).
//!
//! Invariants:
//! - Identity headers (`X-Consumer-Id`, certificate and claim headers) are removed from every
//!   request on an authenticated route before the gateway sets them, so a client can never
//!   forge them; `X-Consumer-Id` is removed on public routes too.
//! - Credentials are removed before proxying unless the route sets `forward_credentials`.
//! - No credential, token or secret is ever logged or echoed in a response.

mod apikey;
mod introspect;
pub(crate) mod jwt;
mod mtls;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::sync::Arc;

use bridgehead_config::{Authenticator as AuthConfig, BuildError, LoadedConfig};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;

use bridgehead_http::ConnInfo;
use bridgehead_http::metrics::{AuthLabels, Metrics, Name};
use bridgehead_http::problem::GatewayError;

pub use self::source::JwksSources;

/// The header that carries the authenticated consumer upstream.
pub static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");

/// Who the caller is, as established by one authenticator.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The authenticator that admitted the request.
    pub authenticator: Arc<str>,
    /// The consumer id: JWT `sub`/`client_id`, the API key's consumer, the certificate subject.
    pub consumer: Arc<str>,
    /// Granted scopes, for `require_scopes`.
    pub scopes: Arc<[String]>,
    /// Headers to send upstream besides `X-Consumer-Id` (claims, certificate subject and SANs).
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
    /// `consumer` as a header value, made once (cached identities reuse it).
    consumer_header: Option<HeaderValue>,
}

impl Identity {
    pub fn new(
        authenticator: Arc<str>,
        consumer: &str,
        scopes: Arc<[String]>,
        headers: Arc<[(HeaderName, HeaderValue)]>,
    ) -> Self {
        Self {
            authenticator,
            consumer: consumer.into(),
            scopes,
            headers,
            consumer_header: HeaderValue::from_str(consumer).ok(),
        }
    }
}

/// Why an authenticator did not admit a request.
#[derive(Debug)]
pub enum Outcome {
    /// The request carries no credential of this kind.
    Absent,
    Admitted(Identity),
    /// A credential was there and is not good; `reason` is a short stable code.
    Refused {
        reason: &'static str,
        detail: String,
    },
    /// The credential could not be checked (key set or introspection endpoint unavailable).
    Unavailable(String),
}

/// A compiled authenticator.
pub struct Authenticator {
    pub name: Arc<str>,
    kind: Kind,
    /// `bridgehead_auth_attempts_total{result="admitted"}` for this authenticator, looked up once.
    admitted: prometheus_client::metrics::counter::Counter,
    /// Identity headers this authenticator may set (removed from incoming requests).
    identity_headers: Vec<HeaderName>,
}

enum Kind {
    Jwt(jwt::Jwt),
    ApiKey(apikey::ApiKeys),
    Mtls(mtls::Mtls),
    Introspection(introspect::Introspection),
}

impl Authenticator {
    async fn check(&self, parts: &Parts, conn: &ConnInfo) -> Outcome {
        match &self.kind {
            Kind::Jwt(j) => j.check(&self.name, parts).await,
            Kind::ApiKey(k) => k.check(&self.name, parts),
            Kind::Mtls(m) => m.check(&self.name, conn),
            Kind::Introspection(i) => i.check(&self.name, parts).await,
        }
    }

    /// The `WWW-Authenticate` challenge for this kind of credential (RFC 9110 §11.6.1).
    fn challenge(&self, refusal: Option<(&'static str, &str)>) -> String {
        match &self.kind {
            Kind::Jwt(_) | Kind::Introspection(_) => {
                bearer_challenge(refusal.map(|(_, d)| ("invalid_token", d)))
            }
            Kind::ApiKey(k) => format!("ApiKey realm=\"bridgehead\", {}", k.location()),
            Kind::Mtls(_) => "Certificate realm=\"bridgehead\"".into(),
        }
    }

    /// Removes the credential this authenticator reads from the request.
    fn strip_credential(&self, parts: &mut Parts) {
        match &self.kind {
            Kind::Jwt(j) => j.token_source().strip(parts),
            Kind::Introspection(i) => i.token_source().strip(parts),
            Kind::ApiKey(k) => k.strip(parts),
            Kind::Mtls(_) => {}
        }
    }
}

/// RFC 6750 §3: `Bearer realm="bridgehead"`, with `error` and `error_description` when a token
/// was presented. The description is limited to characters RFC 6750 allows there.
pub fn bearer_challenge(error: Option<(&str, &str)>) -> String {
    match error {
        None => "Bearer realm=\"bridgehead\"".into(),
        Some((code, description)) => {
            let description: String = description
                .chars()
                .map(|c| if (' '..='~').contains(&c) && c != '"' && c != '\\' { c } else { '\'' })
                .collect();
            format!("Bearer realm=\"bridgehead\", error=\"{code}\", error_description=\"{description}\"")
        }
    }
}

/// All authenticators of one config generation, by name.
pub struct Authenticators {
    by_name: BTreeMap<String, Arc<Authenticator>>,
    /// `X-Consumer-Id` and every identity header any authenticator may set: removed from every
    /// incoming request, on public routes too, so no client can forge them toward any upstream.
    protected: Arc<[HeaderName]>,
}

impl Default for Authenticators {
    fn default() -> Self {
        Self { by_name: BTreeMap::new(), protected: Arc::new([X_CONSUMER_ID.clone()]) }
    }
}

/// Removes the protected identity headers, and any header that aliases one of them with `_` in
/// place of `-` (CGI-style servers would read `X_Consumer_Id` as `X-Consumer-Id`).
pub fn strip_identity(headers: &mut http::HeaderMap, protected: &[HeaderName]) {
    for h in protected {
        headers.remove(h);
    }
    if headers.keys().any(|k| k.as_str().contains('_')) {
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let k = k.as_str().as_bytes();
                k.contains(&b'_')
                    && protected.iter().any(|p| {
                        let p = p.as_str().as_bytes();
                        p.len() == k.len()
                            && p.iter().zip(k).all(|(a, b)| a == b || (*a == b'-' && *b == b'_'))
                    })
            })
            .cloned()
            .collect();
        for a in aliases {
            headers.remove(&a);
        }
    }
}

impl Authenticators {
    /// Compiles every authenticator. Key files and secrets are read here; JWKS URLs come from
    /// `sources`, which outlives config generations so a reload does not refetch them.
    pub fn build(
        loaded: &LoadedConfig,
        sources: &JwksSources,
        store: Option<&bridgehead_state::Store>,
        metrics: &Metrics,
        oauth: Option<&Arc<bridgehead_oauth::OAuthServer>>,
    ) -> Result<Self, BuildError> {
        let mut by_name = BTreeMap::new();
        for (name, cfg) in &loaded.config.authenticators {
            let base = format!("authenticators.{name}");
            let (kind, identity_headers) = match cfg {
                AuthConfig::Jwt(j) => {
                    let jwt = jwt::Jwt::build(name, j, loaded, sources, store, metrics, oauth)
                        .map_err(|e| e.under(&format!("{base}.jwt")))?;
                    let headers = jwt.identity_headers();
                    (Kind::Jwt(jwt), headers)
                }
                AuthConfig::ApiKey(k) => {
                    (Kind::ApiKey(apikey::ApiKeys::build(name, k, store, metrics)), Vec::new())
                }
                AuthConfig::Mtls(m) => {
                    let mtls = mtls::Mtls::build(m).map_err(|e| e.under(&format!("{base}.mtls")))?;
                    let headers = mtls.identity_headers();
                    (Kind::Mtls(mtls), headers)
                }
                AuthConfig::Introspection(i) => {
                    let intro = introspect::Introspection::build(i, loaded, metrics)
                        .map_err(|e| e.under(&format!("{base}.introspection")))?;
                    let headers = intro.identity_headers();
                    (Kind::Introspection(intro), headers)
                }
            };
            by_name.insert(
                name.clone(),
                Arc::new(Authenticator {
                    admitted: metrics
                        .auth_attempts
                        .get_or_create(&AuthLabels {
                            authenticator: Name(name.as_str().into()),
                            result: "admitted",
                        })
                        .clone(),
                    name: name.as_str().into(),
                    kind,
                    identity_headers,
                }),
            );
        }
        let mut protected = vec![X_CONSUMER_ID.clone()];
        for a in by_name.values() {
            for h in &a.identity_headers {
                if !protected.contains(h) {
                    protected.push(h.clone());
                }
            }
        }
        Ok(Self { by_name, protected: protected.into() })
    }

    /// The identity headers removed from every incoming request.
    pub fn protected(&self) -> &[HeaderName] {
        &self.protected
    }

    /// The compiled auth settings of one route.
    pub fn for_route(&self, route: &bridgehead_config::Route) -> Option<Arc<RouteAuth>> {
        self.for_names(&route.auth, &route.require_scopes, route.forward_credentials)
    }

    /// The auth settings of a built-in route: these authenticators, tried in order, and these
    /// scopes; `None` when `names` is empty.
    pub fn for_names(
        &self,
        names: &[String],
        require_scopes: &[String],
        forward_credentials: bool,
    ) -> Option<Arc<RouteAuth>> {
        if names.is_empty() {
            return None;
        }
        let authenticators: Vec<Arc<Authenticator>> =
            names.iter().filter_map(|n| self.by_name.get(n).cloned()).collect();
        Some(Arc::new(RouteAuth {
            authenticators,
            require_scopes: require_scopes.to_vec(),
            forward_credentials,
        }))
    }

    /// Waits until every JWKS that was never fetched has had its first fetch (or failed it), and
    /// every API key table kept in the state database has been read once.
    pub async fn ready(&self) {
        for a in self.by_name.values() {
            match &a.kind {
                Kind::Jwt(j) => j.ready().await,
                Kind::ApiKey(k) => k.ready().await,
                _ => {}
            }
        }
    }
}

/// Checks authenticator key material without starting anything: key and JWKS files parse, RSA
/// keys are long enough, HMAC secrets too, certificate patterns parse, CA bundles read. No
/// network access (JWKS URLs are fetched when the gateway starts).
pub fn preflight(loaded: &LoadedConfig) -> Result<(), BuildError> {
    use bridgehead_auth::jwt::{KeySet, parse_algorithm};
    for (name, cfg) in &loaded.config.authenticators {
        let base = format!("authenticators.{name}");
        match cfg {
            AuthConfig::Jwt(j) => {
                let base = format!("{base}.jwt");
                let read = |key: &str, p: &std::path::Path| {
                    let path = loaded.resolve_path(p);
                    std::fs::read(&path).map_err(|e| {
                        BuildError::new(
                            format!("{base}.{key}"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })
                };
                if let Some(p) = &j.public_key_file {
                    KeySet::from_pem(&read("public_key_file", p)?)
                        .map_err(|e| BuildError::new(format!("{base}.public_key_file"), e))?;
                }
                if let Some(p) = &j.jwks_file {
                    KeySet::from_jwks(&read("jwks_file", p)?)
                        .map_err(|e| BuildError::new(format!("{base}.jwks_file"), e))?;
                }
                if let Some(secret) = &j.secret {
                    let algs: Vec<_> = j.algorithms.iter().filter_map(|a| parse_algorithm(a).ok()).collect();
                    let algs =
                        if algs.is_empty() { vec![bridgehead_auth::jwt::Algorithm::HS256] } else { algs };
                    KeySet::from_secret(secret.expose().as_bytes(), &algs)
                        .map_err(|e| BuildError::new(format!("{base}.secret"), e))?;
                }
                if let Some(ca) = &j.ca {
                    bridgehead_upstream::fetch::client(
                        Some(&loaded.resolve_path(ca)),
                        std::time::Duration::from_secs(1),
                    )
                    .map_err(|e| e.under(&base))?;
                }
            }
            AuthConfig::Mtls(m) => {
                mtls::Mtls::build(m).map_err(|e| e.under(&format!("{base}.mtls")))?;
            }
            AuthConfig::Introspection(i) => {
                if let Some(ca) = &i.ca {
                    bridgehead_upstream::fetch::client(
                        Some(&loaded.resolve_path(ca)),
                        std::time::Duration::from_secs(1),
                    )
                    .map_err(|e| e.under(&format!("{base}.introspection")))?;
                }
            }
            AuthConfig::ApiKey(_) => {}
        }
    }
    Ok(())
}

/// What a route requires of its callers.
pub struct RouteAuth {
    authenticators: Vec<Arc<Authenticator>>,
    require_scopes: Vec<String>,
    forward_credentials: bool,
}

impl RouteAuth {
    /// The route's authenticators, in the order they are tried, and the scopes it requires.
    pub fn describe(&self) -> (Vec<&str>, &[String]) {
        (self.authenticators.iter().map(|a| &*a.name).collect(), &self.require_scopes)
    }

    /// Runs the route's authenticators in order; on success, checks scopes, strips credentials
    /// and sets the identity headers for the upstream. The caller has already removed the
    /// protected identity headers ([`strip_identity`]) and the hop-by-hop ones.
    pub async fn authenticate(
        &self,
        parts: &mut Parts,
        conn: &ConnInfo,
        metrics: &Metrics,
    ) -> Result<Identity, GatewayError> {
        let mut refused: Option<(&Authenticator, &'static str, String)> = None;
        let mut unavailable: Option<(&Authenticator, String)> = None;
        let mut admitted = None;
        for a in &self.authenticators {
            let outcome = a.check(parts, conn).await;
            let result = match &outcome {
                Outcome::Absent => continue,
                Outcome::Admitted(_) => {
                    a.admitted.inc();
                    ""
                }
                Outcome::Refused { reason, .. } => reason,
                Outcome::Unavailable(_) => "unavailable",
            };
            if !result.is_empty() {
                metrics
                    .auth_attempts
                    .get_or_create(&AuthLabels { authenticator: Name(a.name.clone()), result })
                    .inc();
            }
            match outcome {
                Outcome::Absent => {}
                Outcome::Admitted(id) => {
                    admitted = Some(id);
                    break;
                }
                Outcome::Refused { reason, detail } => {
                    refused.get_or_insert((a, reason, detail));
                }
                Outcome::Unavailable(detail) => {
                    unavailable.get_or_insert((a, detail));
                }
            }
        }
        let Some(identity) = admitted else {
            return Err(self.refusal(refused, unavailable));
        };
        let missing: Vec<&str> = self
            .require_scopes
            .iter()
            .filter(|s| !identity.scopes.iter().any(|g| g == *s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let bearer = self.authenticators.iter().any(|a| {
                a.name == identity.authenticator && matches!(a.kind, Kind::Jwt(_) | Kind::Introspection(_))
            });
            return Err(GatewayError::InsufficientScope {
                bearer,
                authenticator: identity.authenticator.to_string(),
                missing: missing.join(" "),
                required: self.require_scopes.join(" "),
            });
        }
        if !self.forward_credentials {
            for a in &self.authenticators {
                a.strip_credential(parts);
            }
        }
        let headers = &mut parts.headers;
        if let Some(v) = &identity.consumer_header {
            headers.insert(X_CONSUMER_ID.clone(), v.clone());
        }
        for (name, value) in identity.headers.iter() {
            headers.append(name.clone(), value.clone());
        }
        Ok(identity)
    }

    fn refusal(
        &self,
        refused: Option<(&Authenticator, &'static str, String)>,
        unavailable: Option<(&Authenticator, String)>,
    ) -> GatewayError {
        // A credential one authenticator cannot even parse (an opaque token to a JWT authenticator)
        // says nothing when another that could check it is unavailable: answer 503, not 401, so
        // the client does not throw away a good token.
        let format_only =
            refused.as_ref().is_some_and(|(_, r, _)| matches!(*r, "malformed" | "json_serialization"));
        if format_only && let Some((a, detail)) = unavailable {
            return GatewayError::AuthUnavailable { authenticator: a.name.to_string(), detail };
        }
        if let Some((a, reason, detail)) = refused {
            // The challenge for the refused credential first, then the other accepted kinds.
            let mut challenges = vec![a.challenge(Some((reason, &detail)))];
            for other in &self.authenticators {
                let c = other.challenge(None);
                if !std::ptr::eq(other.as_ref(), a) && !challenges.iter().any(|x| x.starts_with(&c)) {
                    challenges.push(c);
                }
            }
            return GatewayError::Unauthenticated {
                challenges,
                reason,
                detail: format!("authenticator `{}`: {detail}", a.name),
            };
        }
        if let Some((a, detail)) = unavailable {
            return GatewayError::AuthUnavailable { authenticator: a.name.to_string(), detail };
        }
        let mut challenges: Vec<String> = Vec::new();
        let mut expected: Vec<String> = Vec::new();
        for a in &self.authenticators {
            let c = a.challenge(None);
            if !challenges.contains(&c) {
                challenges.push(c);
            }
            expected.push(a.expects());
        }
        GatewayError::Unauthenticated {
            challenges,
            reason: "missing_credentials",
            detail: format!("no credentials: send {}", expected.join(", or ")),
        }
    }
}

impl Authenticator {
    /// Where this authenticator looks for a credential, for the "no credentials" detail.
    fn expects(&self) -> String {
        match &self.kind {
            Kind::Jwt(j) => j.token_source().describe("a JWT"),
            Kind::Introspection(i) => i.token_source().describe("an access token"),
            Kind::ApiKey(k) => format!("an API key in {}", k.describe()),
            Kind::Mtls(_) => "a client certificate".into(),
        }
    }
}

/// Where a bearer-style token is read from: `Authorization: Bearer` by default, or a configured
/// header, with a cookie as a further alternative.
#[derive(Debug, Clone)]
pub struct TokenSource {
    header: Option<HeaderName>,
    cookie: Option<String>,
}

impl TokenSource {
    pub fn new(header: Option<&str>, cookie: Option<&str>) -> Result<Self, BuildError> {
        let header = header
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| BuildError::new("header", format!("`{h}` is not a header name")))
            })
            .transpose()?;
        Ok(Self { header, cookie: cookie.map(str::to_owned) })
    }

    /// The token, `None` when the request carries none of this kind, or an error when the
    /// request is ambiguous (the header twice), which is refused rather than guessed at.
    pub fn extract<'a>(&self, parts: &'a Parts) -> Result<Option<&'a str>, &'static str> {
        let name = self.header.as_ref().unwrap_or(&header::AUTHORIZATION);
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(if self.header.is_none() {
                "the request has more than one Authorization header"
            } else {
                "the request has the token header more than once"
            });
        }
        let from_header = first.and_then(|v| v.to_str().ok()).and_then(|v| match bearer(v) {
            Some(token) => Some(token),
            // A configured header may carry the bare token.
            None if self.header.is_some() => Some(v.trim()),
            None => None,
        });
        if let Some(t) = from_header.filter(|t| !t.is_empty()) {
            return Ok(Some(t));
        }
        let Some(name) = self.cookie.as_deref() else { return Ok(None) };
        let mut found = cookies(parts).filter(|(k, _)| *k == name);
        let value = found.next().map(|(_, v)| v);
        if found.next().is_some() {
            return Err("the request has the token cookie more than once");
        }
        Ok(value.filter(|v| !v.is_empty()))
    }

    /// Removes the header and cookie this source reads: every `Authorization` value with the
    /// Bearer scheme (other schemes stay), or the configured header.
    pub fn strip(&self, parts: &mut Parts) {
        match &self.header {
            None => {
                let all: Vec<HeaderValue> =
                    parts.headers.get_all(header::AUTHORIZATION).iter().cloned().collect();
                if all.iter().any(|v| v.to_str().map_or(true, |v| bearer(v).is_some())) {
                    parts.headers.remove(header::AUTHORIZATION);
                    for v in all {
                        if v.to_str().is_ok_and(|s| bearer(s).is_none()) {
                            parts.headers.append(header::AUTHORIZATION, v);
                        }
                    }
                }
            }
            Some(name) => {
                parts.headers.remove(name);
            }
        }
        if let Some(name) = &self.cookie {
            strip_cookie(parts, name);
        }
    }

    pub fn describe(&self, what: &str) -> String {
        let mut s = match &self.header {
            None => format!("{what} as `Authorization: Bearer …`"),
            Some(h) => format!("{what} in the `{h}` header"),
        };
        if let Some(c) = &self.cookie {
            s.push_str(&format!(" or the `{c}` cookie"));
        }
        s
    }
}

/// The credentials of an `Authorization: Bearer …` value (scheme case-insensitive, any blank
/// after it), or `None` for another scheme.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
    value[..scheme_end].eq_ignore_ascii_case("bearer").then(|| value[scheme_end..].trim())
}

/// The `name=value` pairs of every `Cookie` header (RFC 6265 §5.4; HTTP/2 may split them).
fn cookies(parts: &Parts) -> impl Iterator<Item = (&str, &str)> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
}

/// Rewrites the `Cookie` header without the named cookie.
fn strip_cookie(parts: &mut Parts, name: &str) {
    if !cookies(parts).any(|(k, _)| k == name) {
        return;
    }
    let kept: Vec<String> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k.trim() != name))
        .map(str::to_owned)
        .collect();
    parts.headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        parts.headers.insert(header::COOKIE, v);
    }
}

/// Claims (or introspection fields) copied into upstream headers.
#[derive(Debug, Clone, Default)]
pub struct ClaimHeaders {
    map: Vec<(String, HeaderName)>,
}

impl ClaimHeaders {
    pub fn new(map: &BTreeMap<String, String>) -> Result<Self, BuildError> {
        let map = map
            .iter()
            .map(|(claim, h)| {
                HeaderName::from_bytes(h.as_bytes()).map(|n| (claim.clone(), n)).map_err(|_| {
                    BuildError::new(
                        format!("claims_to_headers.{claim}"),
                        format!("`{h}` is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { map })
    }

    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.map.iter().map(|(_, h)| h)
    }

    /// Header values for the claims present; values that cannot be header values are skipped.
    pub fn values(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (claim, name) in &self.map {
            let text = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Some(serde_json::Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                out.push((name.clone(), v));
            }
        }
        out
    }
}

/// The consumer id from claims: the configured claim, else `sub`, `client_id`, `azp`.
pub fn consumer_from_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    configured: Option<&str>,
) -> Option<String> {
    let one;
    let candidates: &[&str] = match configured {
        Some(c) => {
            one = [c];
            &one
        }
        None => &["sub", "client_id", "azp"],
    };
    candidates.iter().find_map(|c| match claims.get(*c) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Granted scopes: `scope` (space-separated string) or `scp` (array or string).
pub fn scopes_from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(serde_json::Value::String(s)) => out.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(serde_json::Value::Array(items)) => {
                out.extend(items.iter().filter_map(|i| i.as_str()).map(str::to_owned));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
