//! Idempotency keys (IETF httpapi Idempotency-Key draft) on a route.
//!
//! The first request with a key claims it: a record holding the request's fingerprint (SHA-256
//! of method, path, query and body) is created in flight, scoped to the route and the consumer.
//! When the response arrives, its status, headers and body (up to `max_response_body`) are stored
//! and replayed to every later request with the same key and fingerprint, marked
//! `Idempotent-Replayed: true`, without touching the upstream. While the first is in flight a
//! repeat gets 409; a repeat with another payload gets 422. A 5xx answer (unless
//! `store_server_errors`), a 408 or 429, a gateway error, or the client going away before the
//! request was sent frees the key instead, so the client can try again. Once the request was
//! sent, the upstream may have acted: a client going away leaves the record in flight until its
//! lease ends, and a response too large to store is stored as status and headers only.
//!
//! Records live in the state database, or in Redis with `state.redis`; an unreachable store
//! answers 503 rather than risk running a request twice. An in-flight record holds a lease as
//! long as the request may take (every try's queue wait, the deadline, a token fetch), so a node
//! that dies mid-request does not block the key for the whole `ttl`; a random owner token per
//! claim keeps a request that outlived its lease from touching the record another one took over.

use std::sync::Arc;
use std::time::Duration;

use bridgehead_config::Idempotency as Config;
use bridgehead_state::{IdempotencyBegin, Store};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::RedisHandle;
use bridgehead_http::clock::unix_ms;
use bridgehead_http::problem::GatewayError;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub static IDEMPOTENT_BODY_OMITTED: HeaderName = HeaderName::from_static("idempotent-body-omitted");

/// Longest key accepted.
const MAX_KEY: usize = 255;

/// Where records are kept.
#[derive(Clone)]
pub enum Backend {
    Store(Store),
    Redis(RedisHandle),
}

/// The idempotency settings of one route.
pub struct IdempotencyPolicy {
    route: Arc<str>,
    pub required: bool,
    methods: Vec<Method>,
    pub max_request_body: u64,
    pub max_response_body: u64,
    pub store_server_errors: bool,
    ttl: Duration,
    lease: Duration,
    backend: Backend,
}

/// What `begin` found.
pub enum Begin {
    /// The request runs; the claim must be completed or released.
    Run(Claim),
    /// The stored response, ready to send.
    Replay(http::Response<Bytes>),
}

impl IdempotencyPolicy {
    /// `lease`: how long the upstream may take for this request, all tries included.
    pub fn new(route: &Arc<str>, cfg: &Config, lease: Duration, backend: Backend) -> Self {
        Self {
            route: route.clone(),
            required: cfg.required,
            methods: cfg.methods.iter().filter_map(|m| m.parse().ok()).collect(),
            max_request_body: cfg.max_request_body.get(),
            max_response_body: cfg.max_response_body.get(),
            store_server_errors: cfg.store_server_errors,
            ttl: cfg.ttl.get(),
            // A margin for the time between the claim and the first byte sent, and for clocks.
            // The lease never outlives the record itself.
            lease: (lease + Duration::from_secs(5)).min(cfg.ttl.get()),
            backend,
        }
    }

    /// Whether an answer with `status` is stored for replay: not a 5xx (unless
    /// `store_server_errors`), nor 408 or 429, which tell the client to try again later.
    pub fn stores(&self, status: StatusCode) -> bool {
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
            return false;
        }
        !status.is_server_error() || self.store_server_errors
    }

    /// Whether requests with this method take part.
    pub fn applies_to(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The request's key, if it has one; 400 when it is malformed or repeated, or missing
    /// while `required`.
    pub fn key(&self, headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
        let key = parse_key(headers)?;
        if key.is_none() && self.required {
            return Err(GatewayError::IdempotencyKeyMissing);
        }
        Ok(key)
    }

    /// Claims `key` for this request, or finds what an earlier request left.
    pub async fn begin(
        &self,
        consumer: Option<&str>,
        key: String,
        fingerprint: String,
    ) -> Result<Begin, GatewayError> {
        // Self-delimiting (the consumer's length first), so no consumer id or key can make two
        // scopes meet: `r:0:` is anonymous, `r:4:acme` is consumer `acme`.
        let consumer = consumer.unwrap_or("");
        let scope = format!("{}:{}:{consumer}", self.route, consumer.len());
        // Only this request may complete or release what it claims, even after a takeover.
        let owner = bridgehead_state::new_idempotency_owner();
        let unavailable = || GatewayError::IdempotencyUnavailable { route: self.route.to_string() };
        let found = match &self.backend {
            Backend::Store(store) => store
                .idempotency_begin(
                    &scope,
                    &key,
                    &fingerprint,
                    &owner,
                    self.lease.as_millis() as i64,
                    self.ttl.as_millis() as i64,
                    unix_ms(),
                )
                .await
                .map_err(|e| {
                    static FAILED: bridgehead_http::log_budget::LogBudget =
                        bridgehead_http::log_budget::LogBudget::new();
                    if let Some(left_out) = FAILED.admit() {
                        tracing::error!(route = %self.route, error = %e, left_out, "idempotency store failed");
                    }
                    unavailable()
                })?,
            Backend::Redis(shared) => {
                let health = &shared.health;
                // Failures are logged once per incident by `health`.
                let Some(redis) = shared.get() else {
                    return Err(unavailable());
                };
                let r = redis
                    .idempotency_begin(&scope, &key, &fingerprint, &owner, self.lease.as_millis() as u64)
                    .await;
                match r {
                    Ok(found) => {
                        health.succeeded("idempotency");
                        found
                    }
                    Err(e) => {
                        health.failed("idempotency", &e);
                        return Err(unavailable());
                    }
                }
            }
        };
        match found {
            IdempotencyBegin::Started => Ok(Begin::Run(Claim {
                backend: self.backend.clone(),
                scope,
                key,
                owner,
                ttl: self.ttl,
                open: true,
                sent: false,
            })),
            IdempotencyBegin::InFlight => Err(GatewayError::IdempotencyInFlight),
            IdempotencyBegin::Mismatch => Err(GatewayError::IdempotencyMismatch),
            IdempotencyBegin::Completed(bytes) => match decode(&bytes) {
                Some(mut res) => {
                    res.headers_mut().insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
                    Ok(Begin::Replay(res))
                }
                None => {
                    tracing::error!(route = %self.route, "a stored idempotent response could not be decoded");
                    Err(unavailable())
                }
            },
        }
    }
}

/// The key of a request: one `Idempotency-Key` field holding an RFC 8941 string
/// (`"8e03978e-…"`, as the draft specifies) or, as many clients send it, the bare value.
/// 1 to 255 printable ASCII characters.
pub fn parse_key(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let mut all = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(v) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(GatewayError::IdempotencyKeyMalformed("more than one Idempotency-Key header".into()));
    }
    let raw = v
        .to_str()
        .map_err(|_| GatewayError::IdempotencyKeyMalformed("Idempotency-Key must be printable ASCII".into()))?
        .trim();
    let key = if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or_else(|| {
            GatewayError::IdempotencyKeyMalformed(
                "Idempotency-Key has an opening quote but no closing one".into(),
            )
        })?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => out.push(e),
                    _ => {
                        return Err(GatewayError::IdempotencyKeyMalformed(
                            "Idempotency-Key has an invalid escape (only \\\" and \\\\ are allowed)".into(),
                        ));
                    }
                },
                '"' => {
                    return Err(GatewayError::IdempotencyKeyMalformed(
                        "Idempotency-Key has an unescaped quote inside the string".into(),
                    ));
                }
                c => out.push(c),
            }
        }
        out
    } else {
        if raw.bytes().any(|b| b == b'"' || b == b' ' || b == b'\t') {
            return Err(GatewayError::IdempotencyKeyMalformed(
                "Idempotency-Key must be a quoted string or a value without spaces or quotes".into(),
            ));
        }
        raw.to_owned()
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(GatewayError::IdempotencyKeyMalformed(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} characters, got {}",
            key.len()
        )));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(GatewayError::IdempotencyKeyMalformed("Idempotency-Key must be printable ASCII".into()));
    }
    Ok(Some(key))
}

/// Hex SHA-256 over method, path with query, and body, each length-prefixed.
pub fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut buf = Vec::with_capacity(body.len() + path_and_query.len() + 32);
    for part in [method.as_str().as_bytes(), path_and_query.as_bytes(), body] {
        buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
        buf.extend_from_slice(part);
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &buf);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A claimed key: completed with the response, or released. Dropped unfinished before the
/// request was sent (the client went away while it waited), the key is released; dropped after,
/// the upstream may have acted, so the record stays in flight until its lease ends and repeats
/// get 409 meanwhile rather than a second execution.
pub struct Claim {
    backend: Backend,
    scope: String,
    key: String,
    owner: String,
    ttl: Duration,
    open: bool,
    sent: bool,
}

impl Claim {
    /// Marks that the request is about to reach the upstream.
    pub fn sent(&mut self) {
        self.sent = true;
    }

    /// Stores the response for replay.
    pub async fn complete(self, status: StatusCode, headers: &HeaderMap, body: &Bytes) {
        self.store(encode(status, headers, body)).await;
    }

    /// Stores status and headers of a response whose body could not be kept (too large, or it
    /// broke off): repeats get them with an empty body and `Idempotent-Body-Omitted: true`.
    pub async fn complete_without_body(self, status: StatusCode, headers: &HeaderMap) {
        let mut headers = headers.clone();
        // Headers that describe the absent body would mislead.
        for name in [
            "content-length",
            "content-encoding",
            "content-range",
            "etag",
            "digest",
            "content-digest",
            "repr-digest",
            "content-md5",
        ] {
            headers.remove(name);
        }
        headers.insert(IDEMPOTENT_BODY_OMITTED.clone(), HeaderValue::from_static("true"));
        self.store(encode(status, &headers, &Bytes::new())).await;
    }

    async fn store(mut self, bytes: Vec<u8>) {
        self.open = false;
        let done = match &self.backend {
            Backend::Store(store) => store
                .idempotency_complete(
                    &self.scope,
                    &self.key,
                    &self.owner,
                    &bytes,
                    unix_ms() + self.ttl.as_millis() as i64,
                )
                .await
                .map_err(|e| e.to_string()),
            Backend::Redis(shared) => match shared.always() {
                Some(redis) => redis
                    .idempotency_complete(
                        &self.scope,
                        &self.key,
                        &self.owner,
                        &bytes,
                        self.ttl.as_millis() as u64,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("Redis is unreachable".into()),
            },
        };
        match done {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(scope = %self.scope, "idempotency record was taken over before the response arrived (the request outlived its lease)");
            }
            Err(e) => {
                tracing::error!(scope = %self.scope, error = %e, "idempotency response could not be stored; the key frees when its lease ends");
            }
        }
    }

    /// Frees the key so the request can be made again.
    pub fn release(mut self) {
        self.open = false;
        spawn_release(self.backend.clone(), self.scope.clone(), self.key.clone(), self.owner.clone());
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.open && !self.sent {
            spawn_release(
                self.backend.clone(),
                std::mem::take(&mut self.scope),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.owner),
            );
        }
    }
}

fn spawn_release(backend: Backend, scope: String, key: String, owner: String) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    handle.spawn(async move {
        let r = match &backend {
            Backend::Store(store) => store.idempotency_release(&scope, &key, &owner).await.map_err(|e| e.to_string()),
            Backend::Redis(shared) => match shared.always() {
                Some(redis) => redis.idempotency_release(&scope, &key, &owner).await.map_err(|e| e.to_string()),
                None => Err("Redis is unreachable".into()),
            },
        };
        if let Err(e) = r {
            tracing::warn!(scope = %scope, error = %e, "idempotency key could not be freed; it frees when its lease ends");
        }
    });
}

/// Response headers never stored: hop-by-hop fields and per-request ones.
fn stored(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "x-request-id"
            | "content-length"
            | "ratelimit"
            | "ratelimit-policy"
            | "x-ratelimit-limit"
            | "x-ratelimit-remaining"
            | "x-ratelimit-reset"
    )
}

/// Version 1: `1`, status (u16), header count (u16), then per header name length (u16), name,
/// value length (u32), value; then the body.
fn encode(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let kept: Vec<(&HeaderName, &HeaderValue)> = headers.iter().filter(|(n, _)| stored(n)).collect();
    let mut b = BytesMut::with_capacity(body.len() + 64 * kept.len() + 8);
    b.put_u8(1);
    b.put_u16(status.as_u16());
    b.put_u16(kept.len() as u16);
    for (name, value) in kept {
        b.put_u16(name.as_str().len() as u16);
        b.put_slice(name.as_str().as_bytes());
        b.put_u32(value.len() as u32);
        b.put_slice(value.as_bytes());
    }
    b.put_slice(body);
    b.to_vec()
}

fn decode(mut b: &[u8]) -> Option<http::Response<Bytes>> {
    if b.remaining() < 5 || b.get_u8() != 1 {
        return None;
    }
    let status = StatusCode::from_u16(b.get_u16()).ok()?;
    let n = b.get_u16();
    let mut headers = HeaderMap::with_capacity(n as usize);
    for _ in 0..n {
        if b.remaining() < 2 {
            return None;
        }
        let len = b.get_u16() as usize;
        if b.remaining() < len + 4 {
            return None;
        }
        let name = HeaderName::from_bytes(&b[..len]).ok()?;
        b.advance(len);
        let len = b.get_u32() as usize;
        if b.remaining() < len {
            return None;
        }
        let value = HeaderValue::from_bytes(&b[..len]).ok()?;
        b.advance(len);
        headers.append(name, value);
    }
    let mut res = http::Response::new(Bytes::copy_from_slice(b));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &str) -> Result<Option<String>, GatewayError> {
        let mut h = HeaderMap::new();
        h.insert("idempotency-key", HeaderValue::from_str(v).unwrap());
        parse_key(&h)
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(key("\"8e03978e-40d5\"").unwrap().as_deref(), Some("8e03978e-40d5"));
        assert_eq!(key("abc-123").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(key(r#""a\"b""#).unwrap().as_deref(), Some("a\"b"));
        for bad in ["\"\"", "\"open", "a b", &"k".repeat(256), r#""a\nb""#, r#""a"b""#] {
            assert!(matches!(key(bad), Err(GatewayError::IdempotencyKeyMalformed(_))), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.append("idempotency-key", "a".parse().unwrap());
        h.append("idempotency-key", "b".parse().unwrap());
        assert!(parse_key(&h).is_err());
    }

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let f = fingerprint(&Method::POST, "/orders?x=1", b"{}");
        assert_eq!(f, fingerprint(&Method::POST, "/orders?x=1", b"{}"));
        assert_ne!(f, fingerprint(&Method::PATCH, "/orders?x=1", b"{}"));
        assert_ne!(f, fingerprint(&Method::POST, "/orders?x=2", b"{}"));
        assert_ne!(f, fingerprint(&Method::POST, "/orders?x=1", b"{ }"));
        // Length prefixes: moving bytes between parts changes the fingerprint.
        assert_ne!(fingerprint(&Method::POST, "/a", b"b"), fingerprint(&Method::POST, "/ab", b""));
    }

    #[test]
    fn responses_round_trip_without_per_request_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", "b=2".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        h.insert("connection", "close".parse().unwrap());
        let bytes = encode(StatusCode::CREATED, &h, &Bytes::from_static(b"{\"id\":7}"));
        let res = decode(&bytes).unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.body().as_ref(), b"{\"id\":7}");
        assert_eq!(res.headers().get_all("set-cookie").iter().count(), 2);
        assert!(!res.headers().contains_key("x-request-id") && !res.headers().contains_key("connection"));
        assert!(decode(&bytes[..12]).is_none(), "a cut header list is refused");
        assert!(decode(b"").is_none());
        assert!(decode(&[2, 0, 200, 0, 0]).is_none());
    }
}
