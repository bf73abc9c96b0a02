//! The outbound dispatcher (`webhooks.outbound`): events published on the intake path are
//! stored durably with one delivery per matching endpoint, then delivered by the worker
//! ([`crate::deliver`]), each attempt signed per Standard Webhooks.
//!
//! **Intake** (`POST {intake}`, behind `webhooks.outbound.auth`), in order (the first refusal
//! answers, as problem+json):
//!
//! 1. **content type** JSON → 415; **size** at most `max_body` → 413; **JSON** → 400;
//! 2. **shape**: an object with `type` (an event type), `data` (any JSON), and optionally `id`
//!    (the publisher's id: the same id from the same consumer is accepted once) and
//!    `ordering_key`; any other member, or a member of the wrong type, → 400 listing every
//!    error with its JSON pointer;
//! 3. **catalogue**: when `webhooks.event_types` lists types, a type it does not list → 400; a
//!    type with a schema checks `data` against it → 400 with every error (pointers under
//!    `/data`);
//! 4. **commit**: the message and one delivery per enabled endpoint whose `events` match, in
//!    one durable transaction (the store's group commit) → 202 `{"id": "msg_…", …}`; an `id`
//!    seen before → 200 with `Idempotent-Replayed: true` and the first message's id; a store
//!    that cannot commit → 503 (nothing acknowledged that was not committed).
//!
//! **What an endpoint gets:** `POST` to its URL with `Content-Type: application/json`, the body
//! `{"type": …, "timestamp": "<RFC 3339, when accepted>", "data": …}` (the same bytes on every
//! attempt), `webhook-id: msg_…` (stable across attempts and replays), a fresh
//! `webhook-timestamp` per attempt, and `webhook-signature` with one signature per active
//! secret (`v1,` for `whsec_` secrets, `v1a,` for `whsk_` Ed25519 keys).
//!
//! **Endpoints** come from the config (`endpoints:`) and from the state store (added at run
//! time by the admin API or `bridgehead webhook endpoints add`); the store also holds whether
//! an endpoint is disabled (by hand, or because it answered 410 Gone), for both kinds. Every
//! node reads the store's endpoints again every few seconds ([`Dispatcher::refresh`]), so a
//! change made on one node or by the command reaches the others. A disabled endpoint gets no
//! new deliveries and its pending ones wait until it is enabled again.
//!
//! Why by hand: the intake is a thin shell over the store's group commit and the receiver's
//! JSON Schema checks; no crate offers a Standard Webhooks dispatcher to embed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bridgehead_config::{self as model, BuildError, LoadedConfig};
use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{Metrics, ResultLabels};
use bridgehead_state::{Accepted, EndpointRecord, NewWebhookMessage, StateError, Store};
use bridgehead_upstream::{Carryover, Upstream};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::inbound::{Body, Refusal, json_response};
use crate::schema::{SchemaError, Schemas, compile_file};
use crate::signature::{Key, Scheme, Signer};

/// The prefix of the `source` of published messages: `outbound:<authenticator>:<consumer>`
/// (`outbound:` alone without auth).
pub const SOURCE_PREFIX: &str = "outbound:";
/// An event's `id`, `type` or `ordering_key` longer than this is refused.
pub const MAX_KEY: usize = 256;
/// How often [`Dispatcher::refresh`] is meant to run (the gateway's heartbeat does).
pub const REFRESH: Duration = Duration::from_secs(5);

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The `destination` of endpoint `name`'s deliveries.
pub fn destination(name: &str) -> String {
    format!("endpoint:{name}")
}

/// The endpoint a destination names, if it names one.
pub fn endpoint_of(destination: &str) -> Option<&str> {
    destination.strip_prefix("endpoint:")
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (`order.*`
/// matches `order.created` and `order.line.added`; `*` matches everything).
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A secret of a run-time endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub secret: String,
    /// When a rotation retires it (Unix ms); `None` while it is the current one.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// One endpoint as the dispatcher uses it.
pub struct Endpoint {
    pub name: Arc<str>,
    pub url: String,
    pub path: PathAndQuery,
    pub events: Vec<String>,
    /// Declared in the config (its settings are the config's).
    pub declared: bool,
    pub allow_private_network: bool,
    /// When and why it was disabled.
    pub disabled: Option<(i64, String)>,
    /// Active secrets (each delivery carries a signature per secret).
    pub secrets: usize,
    pub signer: Signer,
    pub upstream: Arc<Upstream>,
}

impl Endpoint {
    /// Whether events of type `t` go here (disabled or not).
    pub fn wants(&self, t: &str) -> bool {
        self.events.iter().any(|p| pattern_matches(p, t))
    }

    /// `endpoint:<name>`.
    pub fn destination(&self) -> String {
        destination(&self.name)
    }
}

/// A config endpoint, compiled.
struct Declared {
    name: Arc<str>,
    url: String,
    origin: String,
    path: PathAndQuery,
    events: Vec<String>,
    keys: Vec<Key>,
    allow_private_network: bool,
}

/// The compiled `webhooks.outbound`, with the endpoints in effect.
pub struct Dispatcher {
    /// The exact intake path.
    pub intake: String,
    pub retry_schedule: Vec<Duration>,
    pub max_body: u64,
    /// The longest one attempt may take.
    pub timeout: Duration,
    retention: Duration,
    breaker: model::CircuitBreaker,
    /// `None`: no catalogue, any type is published.
    event_types: Option<HashMap<String, Option<Validator>>>,
    declared: Vec<Declared>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// The rows the endpoints were last built from, and when.
    last: Mutex<(Vec<EndpointRecord>, i64)>,
    /// Whether the endpoints' state was read from the store (by this dispatcher or the one it
    /// replaced): until then the intake refuses and the endpoints get no deliveries.
    loaded: std::sync::atomic::AtomicBool,
    /// One refresh at a time: a slower one must not install an older snapshot.
    refreshing: tokio::sync::Mutex<()>,
    tls: rustls::ClientConfig,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("intake", &self.intake).finish_non_exhaustive()
    }
}

/// Parses the signing secrets of an endpoint (`whsec_…` or `whsk_…`).
fn signing_keys<'a>(secrets: impl Iterator<Item = &'a str>) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    for s in secrets {
        let key = Key::parse(&Scheme::Standard, s).map_err(|e| e.to_string())?;
        if matches!(key, Key::Ed25519Public(_)) {
            return Err("a whpk_ public key cannot sign: give the whsk_ secret key".into());
        }
        keys.push(key);
    }
    Signer::new(Scheme::Standard, keys.clone()).map_err(|e| e.to_string())?;
    Ok(keys)
}

impl Dispatcher {
    /// Compiles `webhooks.outbound` (none when absent): endpoint secrets, event type schemas.
    /// The endpoints start as the config declares them, with the run-time state `previous`
    /// last read from the store (a reload keeps it, and the breakers' state); call
    /// [`Dispatcher::refresh`] before serving.
    pub fn build(loaded: &LoadedConfig, previous: Option<&Dispatcher>) -> Result<Option<Self>, BuildError> {
        let Some(o) = &loaded.config.webhooks.outbound else { return Ok(None) };
        let base = "webhooks.outbound";
        let mut declared = Vec::new();
        for (i, e) in o.endpoints.iter().enumerate() {
            let ebase = format!("{base}.endpoints[{i}]");
            let (origin, path) = model::check_endpoint_url(&e.url, e.allow_private_network)
                .map_err(|m| BuildError::new(format!("{ebase}.url"), m))?;
            let (key, secrets): (String, Vec<&str>) = match &e.secret {
                Some(s) => (format!("{ebase}.secret"), vec![s.expose()]),
                None => (format!("{ebase}.secrets"), e.secrets.iter().map(model::Secret::expose).collect()),
            };
            let keys = signing_keys(secrets.into_iter()).map_err(|m| BuildError::new(key, m))?;
            declared.push(Declared {
                name: e.name.as_str().into(),
                url: e.url.clone(),
                origin: origin.to_string().trim_end_matches('/').to_owned(),
                path,
                events: e.events.clone(),
                keys,
                allow_private_network: e.allow_private_network,
            });
        }
        let types = &loaded.config.webhooks.event_types;
        let event_types = (!types.is_empty())
            .then(|| {
                types
                    .iter()
                    .map(|(name, t)| {
                        let schema = t
                            .schema
                            .as_ref()
                            .map(|p| compile_file(&loaded.resolve_path(p)))
                            .transpose()
                            .map_err(|m| BuildError::new(format!("webhooks.event_types.{name}.schema"), m))?;
                        Ok((name.clone(), schema))
                    })
                    .collect::<Result<HashMap<_, _>, BuildError>>()
            })
            .transpose()?;
        let d = Self {
            intake: o.intake.clone(),
            retry_schedule: o.retry_schedule.iter().map(|d| d.get()).collect(),
            max_body: o.max_body.get(),
            timeout: o.timeout.get(),
            retention: o.retention.get(),
            breaker: o.circuit_breaker.clone(),
            event_types,
            declared,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            last: Mutex::new((Vec::new(), 0)),
            loaded: std::sync::atomic::AtomicBool::new(
                previous.is_some_and(|p| p.loaded.load(std::sync::atomic::Ordering::Acquire)),
            ),
            refreshing: tokio::sync::Mutex::new(()),
            tls: previous.map_or_else(bridgehead_upstream::tls::system_roots_client, |p| p.tls.clone()),
        };
        let rows = previous.map(|p| lock(&p.last).0.clone()).unwrap_or_default();
        let carry = previous.map(Dispatcher::carryover).unwrap_or_default();
        d.assemble(rows, &carry, bridgehead_http::clock::unix_ms());
        Ok(Some(d))
    }

    /// Reads the endpoints of the store again and rebuilds the set when they changed (or a
    /// rotated secret's grace ended).
    pub async fn refresh(&self, store: &Store) -> Result<(), StateError> {
        let _one = self.refreshing.lock().await;
        let rows = store.webhook_endpoints().await?;
        let now = bridgehead_http::clock::unix_ms();
        let stale = {
            let last = lock(&self.last);
            last.0 != rows || expiry_between(&rows, last.1, now)
        };
        if stale {
            self.assemble(rows, &self.carryover(), now);
        }
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// For a publisher arriving before the endpoints were ever read: reads them now, unless a
    /// read is already running (then the publisher is refused at once rather than queued behind
    /// it: with the store down, each read waits for its timeout). Whether they are loaded.
    async fn refresh_unless_running(&self, store: &Store) -> bool {
        if self.refreshing.try_lock().is_err() {
            return self.loaded();
        }
        self.refresh(store).await.is_ok()
    }

    /// Whether the endpoints' state has been read from the store (see [`Dispatcher::refresh`]).
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    fn carryover(&self) -> Carryover {
        let current = self.endpoints.load();
        Carryover::from_upstreams(current.iter().map(|e| &e.upstream))
    }

    /// Builds the endpoint set from the config and `rows`.
    fn assemble(&self, rows: Vec<EndpointRecord>, carry: &Carryover, now: i64) {
        let mut out = Vec::new();
        for d in &self.declared {
            // Any row of the name holds its state (a run-time endpoint later declared in the
            // config has a row that is not marked declared until it is disabled again).
            let state = rows.iter().find(|r| *r.name == *d.name);
            out.push(Arc::new(Endpoint {
                name: d.name.clone(),
                url: d.url.clone(),
                path: d.path.clone(),
                events: d.events.clone(),
                declared: true,
                allow_private_network: d.allow_private_network,
                disabled: state.and_then(disabled_of),
                secrets: d.keys.len(),
                signer: Signer::new(Scheme::Standard, d.keys.clone()).expect("checked at build"),
                upstream: Arc::new(self.upstream(&d.name, &d.origin, carry, d.allow_private_network)),
            }));
        }
        for r in rows.iter().filter(|r| !r.declared) {
            if self.declared.iter().any(|d| *d.name == *r.name) {
                continue;
            }
            match self.runtime_endpoint(r, carry, now) {
                Ok(e) => out.push(Arc::new(e)),
                Err(why) => {
                    static BAD: LogBudget = LogBudget::new();
                    if let Some(left_out) = BAD.admit() {
                        tracing::warn!(endpoint = %r.name, why, left_out, "a stored webhook endpoint is not usable; it gets no deliveries");
                    }
                }
            }
        }
        self.endpoints.store(Arc::new(out));
        *lock(&self.last) = (rows, now);
    }

    fn runtime_endpoint(&self, r: &EndpointRecord, carry: &Carryover, now: i64) -> Result<Endpoint, String> {
        let url = r.url.as_deref().ok_or("no url")?;
        let (origin, path) = model::check_endpoint_url(url, r.allow_private_network)?;
        let events: Vec<String> = serde_json::from_str(r.events_json.as_deref().unwrap_or("[]"))
            .map_err(|e| format!("events: {e}"))?;
        let secrets: Vec<StoredSecret> = serde_json::from_str(r.secrets_json.as_deref().unwrap_or("[]"))
            .map_err(|e| format!("secrets: {e}"))?;
        let active: Vec<&str> = secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| s.secret.as_str())
            .collect();
        let keys = signing_keys(active.iter().copied())?;
        let origin = origin.to_string().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            name: r.name.as_str().into(),
            url: url.to_owned(),
            path,
            events,
            declared: false,
            allow_private_network: r.allow_private_network,
            disabled: disabled_of(r),
            secrets: keys.len(),
            signer: Signer::new(Scheme::Standard, keys).map_err(|e| e.to_string())?,
            upstream: Arc::new(self.upstream(&r.name, &origin, carry, r.allow_private_network)),
        })
    }

    fn upstream(&self, name: &str, origin: &str, carry: &Carryover, allow_private_network: bool) -> Upstream {
        Upstream::endpoint(
            &destination(name),
            origin,
            &self.breaker,
            self.timeout,
            self.tls.clone(),
            carry,
            !allow_private_network,
        )
    }

    /// The endpoints in effect, config ones first.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// One endpoint by name.
    pub fn endpoint(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.endpoints.load().iter().find(|e| *e.name == *name).cloned()
    }

    /// Whether the config declares an endpoint of this name.
    pub fn declares(&self, name: &str) -> bool {
        self.declared.iter().any(|d| *d.name == *name)
    }

    /// Handles one `POST` on the intake (see the module docs).
    pub async fn publish(&self, store: &Store, metrics: &Metrics, p: Publication<'_>) -> Response<Bytes> {
        let (result, res) = match self.check(p.headers, p.body) {
            Err(r) => (r.reason, r.response(p.request_id)),
            Ok(event) => {
                // The intake's trace context (when traces are on) is kept with the event: its
                // deliveries continue that trace.
                let context = p.trace_context.and_then(|v| v.to_str().ok());
                let headers_json = match context {
                    Some(tp) => serde_json::json!([["traceparent", tp]]).to_string(),
                    None => "[]".to_owned(),
                };
                self.commit(store, event, p.publisher, p.request_id, p.now_ms, &headers_json).await
            }
        };
        metrics.webhook_published.get_or_create(&ResultLabels { result }).inc();
        res
    }

    fn check(&self, headers: &HeaderMap, body: Body) -> Result<Event, Box<Refusal>> {
        let refuse =
            |status, reason, detail: String| Box::new(Refusal::new(status, reason, detail, Bytes::new()));
        let body = match body {
            Body::Whole(b) => b,
            Body::TooLarge => {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the event is larger than the intake's limit of {} bytes", self.max_body),
                ));
            }
        };
        let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))) {
            let got = if ctype.is_empty() { "none".to_owned() } else { format!("`{ctype}`") };
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!("Content-Type is {got}; the intake takes application/json"),
            ));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, "not_json", format!("the body is not JSON: {e}")))?;
        let event = shape(value).map_err(|errors| {
            let mut r = refuse(StatusCode::BAD_REQUEST, "invalid_event", invalid(&errors, "is not an event"));
            r.errors = errors;
            r
        })?;
        if let Some(types) = &self.event_types {
            let Some(schema) = types.get(&event.event_type) else {
                let mut known: Vec<&str> = types.keys().map(String::as_str).collect();
                known.sort_unstable();
                let mut r = refuse(
                    StatusCode::BAD_REQUEST,
                    "unknown_event_type",
                    format!("no event type `{}` is declared; known: {}", event.event_type, known.join(", ")),
                );
                r.members = vec![("known", json!(known))];
                return Err(r);
            };
            if let Some(v) = schema {
                let errors: Vec<SchemaError> = Schemas::One(v.clone())
                    .check(&event.data)
                    .into_iter()
                    .map(|e| SchemaError { pointer: format!("/data{}", e.pointer), ..e })
                    .collect();
                if !errors.is_empty() {
                    let detail = invalid(&errors, "does not match the schema of its type");
                    let mut r = refuse(StatusCode::BAD_REQUEST, "schema", detail);
                    r.errors = errors;
                    return Err(r);
                }
            }
        }
        Ok(event)
    }

    async fn commit(
        &self,
        store: &Store,
        event: Event,
        publisher: Option<&str>,
        request_id: &str,
        now_ms: i64,
        headers_json: &str,
    ) -> (&'static str, Response<Bytes>) {
        // Until the endpoints' state was read from the store once, a disabled endpoint would
        // look enabled: read it now, or refuse (nothing accepted).
        if !self.loaded() && !self.refresh_unless_running(store).await {
            return self.unavailable(request_id);
        }
        let endpoints = self.endpoints.load();
        let targets: Vec<&Arc<Endpoint>> =
            endpoints.iter().filter(|e| e.disabled.is_none() && e.wants(&event.event_type)).collect();
        let destinations: Vec<String> = targets.iter().map(|e| e.destination()).collect();
        let destinations: Vec<&str> = destinations.iter().map(String::as_str).collect();
        let timestamp = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)),
        );
        let payload =
            json!({ "type": event.event_type, "timestamp": timestamp.to_string(), "data": event.data });
        let body = payload.to_string();
        let source = format!("{SOURCE_PREFIX}{}", publisher.unwrap_or(""));
        // A key is the publisher's own: another publisher's failing event cannot hold it. The
        // key has no spaces, so the first one ends it.
        let ordering_key = event.ordering_key.as_deref().map(|k| format!("{k} {source}"));
        let msg = NewWebhookMessage {
            source: &source,
            external_id: event.id.as_deref(),
            event_type: Some(&event.event_type),
            headers_json,
            body: body.as_bytes(),
            retention_ms: i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX),
            ordering_key: ordering_key.as_deref(),
        };
        match store.webhook_accept(&msg, &destinations, now_ms).await {
            Ok(Accepted::New(id)) => {
                let names: Vec<&str> = targets.iter().map(|e| &*e.name).collect();
                let body = json!({ "id": id, "type": event.event_type, "endpoints": names }).to_string();
                ("accepted", json_response(StatusCode::ACCEPTED, body))
            }
            Ok(Accepted::Duplicate(id)) => {
                let body = json!({ "id": id, "type": event.event_type, "duplicate": true }).to_string();
                let mut res = json_response(StatusCode::OK, body);
                res.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                ("duplicate", res)
            }
            Err(e) => {
                static FAILED: LogBudget = LogBudget::new();
                if let Some(left_out) = FAILED.admit() {
                    tracing::error!(error = %e, left_out, "webhook intake could not store an event; the publisher was told to retry");
                }
                self.unavailable(request_id)
            }
        }
    }

    fn unavailable(&self, request_id: &str) -> (&'static str, Response<Bytes>) {
        let text = "the event could not be stored; nothing was accepted, publish it again later";
        ("store_unavailable", crate::inbound::store_unavailable(text, request_id))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn disabled_of(r: &EndpointRecord) -> Option<(i64, String)> {
    r.disabled_at_ms.map(|at| (at, r.disabled_reason.clone().unwrap_or_default()))
}

/// Whether a stored secret's grace ended in `(from, to]`.
fn expiry_between(rows: &[EndpointRecord], from: i64, to: i64) -> bool {
    rows.iter().filter_map(|r| r.secrets_json.as_deref()).any(|s| {
        serde_json::from_str::<Vec<StoredSecret>>(s)
            .unwrap_or_default()
            .iter()
            .any(|s| s.expires_at.is_some_and(|t| t > from && t <= to))
    })
}

fn invalid(errors: &[SchemaError], what: &str) -> String {
    format!("the body {what}: {} error{}", errors.len(), if errors.len() == 1 { "" } else { "s" })
}

/// One `POST` on the intake.
pub struct Publication<'a> {
    pub headers: &'a HeaderMap,
    pub body: Body,
    /// Who published: `<authenticator>:<consumer>` (`None` without auth). Ids and ordering
    /// keys are the publisher's own.
    pub publisher: Option<&'a str>,
    pub request_id: &'a str,
    /// Unix ms.
    pub now_ms: i64,
    /// The `traceparent` of the intake's span, when the request is traced (never the client's
    /// own: that is not the gateway's to keep).
    pub trace_context: Option<&'a HeaderValue>,
}

/// A published event, checked.
#[derive(Debug)]
struct Event {
    event_type: String,
    data: Value,
    id: Option<String>,
    ordering_key: Option<String>,
}

/// Step 2 of the module docs: every error, or the event.
fn shape(value: Value) -> Result<Event, Vec<SchemaError>> {
    let err = |pointer: &str, keyword: &str, message: String| SchemaError {
        pointer: pointer.into(),
        keyword: keyword.into(),
        message,
    };
    let Value::Object(mut map) = value else {
        return Err(vec![err("", "type", "an event is a JSON object".into())]);
    };
    let mut errors = Vec::new();
    let mut key = |name: &str, required: bool, errors: &mut Vec<SchemaError>| -> Option<String> {
        let pointer = format!("/{name}");
        match map.remove(name) {
            None if required => {
                errors.push(err("", "required", format!("`{name}` is missing")));
                None
            }
            None => None,
            Some(Value::String(s)) => match model::check_event_type(&s) {
                Ok(()) if s.len() <= MAX_KEY => Some(s),
                _ => {
                    errors.push(err(
                        &pointer,
                        "pattern",
                        format!("`{name}` must be 1 to {MAX_KEY} visible ASCII characters without spaces"),
                    ));
                    None
                }
            },
            Some(_) => {
                errors.push(err(&pointer, "type", format!("`{name}` must be a string")));
                None
            }
        }
    };
    let event_type = key("type", true, &mut errors);
    let id = key("id", false, &mut errors);
    let ordering_key = key("ordering_key", false, &mut errors);
    let data = map.remove("data");
    if data.is_none() {
        errors.push(err("", "required", "`data` is missing".into()));
    }
    for extra in map.keys() {
        errors.push(err(
            &format!("/{}", extra.replace('~', "~0").replace('/', "~1")),
            "additionalProperties",
            format!("`{extra}` is not a member of an event (type, data, id, ordering_key)"),
        ));
    }
    match (event_type, data) {
        (Some(event_type), Some(data)) if errors.is_empty() => {
            Ok(Event { event_type, data, id, ordering_key })
        }
        _ => Err(errors),
    }
}

/// Why an endpoint change was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("no endpoint is named `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StateError),
}

/// A run-time endpoint to add.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…` or `whsk_…`; absent: a new `whsec_` secret is made.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub allow_private_network: bool,
}

/// A new `whsec_` secret: 24 random bytes.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Adds a run-time endpoint; returns its secret (the one given, or a new one). `declared`:
/// the names the config declares (refused).
pub async fn add_endpoint(
    store: &Store,
    declared: &[&str],
    e: &NewEndpoint,
    now_ms: i64,
) -> Result<String, EndpointError> {
    let invalid = |field, message: String| EndpointError::Invalid { field, message };
    if !valid_name(&e.name) {
        return Err(invalid(
            "name",
            format!("`{}` is not a valid name (letters, digits, `-`, `_`, `.`; at most 64)", e.name),
        ));
    }
    model::check_endpoint_url(&e.url, e.allow_private_network).map_err(|m| invalid("url", m))?;
    if e.events.is_empty() {
        return Err(invalid("events", "lists no event type (`*` takes every type)".into()));
    }
    for p in &e.events {
        model::check_event_type(p).map_err(|m| invalid("events", m))?;
    }
    let secret = e.secret.clone().unwrap_or_else(new_secret);
    signing_keys(std::iter::once(secret.as_str())).map_err(|m| invalid("secret", m))?;
    if declared.contains(&e.name.as_str()) {
        return Err(EndpointError::Conflict(format!("`{}` is declared in the config", e.name)));
    }
    let secrets = serde_json::to_string(&[StoredSecret { secret: secret.clone(), expires_at: None }])
        .expect("serializable");
    let events = serde_json::to_string(&e.events).expect("serializable");
    if !store
        .webhook_endpoint_add(&e.name, &e.url, &events, &secrets, e.allow_private_network, now_ms)
        .await?
    {
        return Err(EndpointError::Conflict(format!("an endpoint named `{}` exists", e.name)));
    }
    Ok(secret)
}

/// Gives a run-time endpoint a new secret; the ones it had stay valid for `grace` (each
/// delivery is signed with all of them meanwhile). Returns the new secret.
pub async fn rotate_secret(
    store: &Store,
    name: &str,
    grace: Duration,
    now_ms: i64,
) -> Result<String, EndpointError> {
    let rows = store.webhook_endpoints().await?;
    let Some(row) = rows.iter().find(|r| r.name == name) else {
        return Err(EndpointError::NotFound(name.to_owned()));
    };
    if row.declared {
        return Err(EndpointError::Conflict(format!(
            "`{name}` is declared in the config: rotate its secret there (list the new and the old under `secrets`, then drop the old)"
        )));
    }
    let grace_ends = now_ms.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let mut secrets: Vec<StoredSecret> =
        serde_json::from_str(row.secrets_json.as_deref().unwrap_or("[]")).unwrap_or_default();
    secrets.retain(|s| s.expires_at.is_none_or(|t| t > now_ms));
    for s in &mut secrets {
        s.expires_at = Some(s.expires_at.map_or(grace_ends, |t| t.min(grace_ends)));
    }
    let secret = new_secret();
    secrets.insert(0, StoredSecret { secret: secret.clone(), expires_at: None });
    let json = serde_json::to_string(&secrets).expect("serializable");
    let before = row.secrets_json.as_deref().unwrap_or("[]");
    // Compare and set: of two rotations at once, the second is refused rather than losing the
    // first one's secret (already shown to whoever asked).
    if !store.webhook_endpoint_set_secrets(name, &json, before, now_ms).await? {
        return Err(EndpointError::Conflict(format!(
            "the secrets of `{name}` changed meanwhile (another rotation?): look, then rotate again"
        )));
    }
    Ok(secret)
}

/// Disables (with `reason`) or enables an endpoint, of the config (`declared`) or not.
pub async fn set_disabled(
    store: &Store,
    name: &str,
    declared: bool,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), EndpointError> {
    if store.webhook_endpoint_set_disabled(name, declared, reason, now_ms).await? {
        Ok(())
    } else {
        Err(EndpointError::NotFound(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, t, want) in [
            ("*", "order.created", true),
            ("order.*", "order.created", true),
            ("order.*", "order.line.added", true),
            ("order.*", "order", false),
            ("order.*", "orders.created", false),
            ("order.created", "order.created", true),
            ("order.created", "order.created.v2", false),
            ("*.created", "order.created", true),
            ("*.created", "order.updated", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-x-c", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
        ] {
            assert_eq!(pattern_matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn shapes() {
        let ok = shape(json!({"type": "order.created", "data": {"id": 1}, "id": "e1", "ordering_key": "o1"}))
            .unwrap();
        assert_eq!(
            (ok.event_type.as_str(), ok.id.as_deref(), ok.ordering_key.as_deref()),
            ("order.created", Some("e1"), Some("o1"))
        );
        let errors = shape(json!({"type": 3, "id": "has space", "extra": true, "a/b": 1})).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/type", "/id", "", "/a~1b", "/extra"], "{errors:?}");
        assert_eq!(shape(json!([1])).unwrap_err()[0].message, "an event is a JSON object");
        let long = "x".repeat(MAX_KEY + 1);
        assert_eq!(shape(json!({"type": long, "data": null})).unwrap_err()[0].pointer, "/type");
        // `data` may be any JSON, null included.
        assert!(shape(json!({"type": "t", "data": null})).is_ok());
    }

    #[test]
    fn new_secrets_sign() {
        let s = new_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 32, "{s}");
        assert!(signing_keys(std::iter::once(s.as_str())).is_ok());
        assert_ne!(new_secret(), s);
        let public = "whpk_".to_owned() + &"A".repeat(43) + "=";
        assert!(signing_keys(std::iter::once(public.as_str())).unwrap_err().contains("cannot sign"));
    }
}
