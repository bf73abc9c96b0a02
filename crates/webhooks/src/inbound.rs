//! A webhook receiver (`webhooks.inbound[]`): one path, one provider.
//!
//! A delivery goes through, in order (the first refusal answers):
//!
//! 1. **content type**: JSON (`application/json`, `…+json`); Slack may also send a form
//!    (`application/x-www-form-urlencoded`, slash commands) → 415;
//! 2. **size**: at most `max_body` → 413;
//! 3. **signature** over the raw bytes ([`crate::signature`]) → 401 naming the header and the
//!    reason;
//! 4. **JSON**: the body parses → 400 with the parser's line and column;
//! 5. **schema**: every error, each with its JSON pointer, keyword and message → 400;
//! 6. **replay**: a message id already stored → 200 with `Idempotent-Replayed: true`, nothing
//!    stored or forwarded again;
//! 7. **commit**: the message and its forward delivery in one durable transaction
//!    ([`bridgehead_state::Store::webhook_accept`]) → 202 with the message id; a store that
//!    cannot commit → 503 (nothing acknowledged that was not committed).
//!
//! Every refusal (1–5) is kept as a dead letter: the reason, what the sender was told, the
//! headers (signatures, cookies and credentials redacted) and the raw body (not for 413: a body
//! over the limit is not read). At most 50 are written a second per receiver, so a flood of
//! forged requests cannot fill the database; the rest are counted in
//! `bridgehead_webhook_dead_letters_dropped_total`. Slack's `url_verification` challenge is
//! answered after the signature check, and neither stored nor forwarded.

use std::sync::Arc;
use std::time::Duration;

use bridgehead_config::{self as model, BuildError, LoadedConfig};
use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{Metrics, Name, ReceiverResultLabels, RouteLabels};
use bridgehead_state::{Accepted, NewDeadLetter, NewWebhookMessage, Store};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::schema::{SchemaError, Schemas, compile_file};
use crate::signature::{Algorithm, Encoding, HmacScheme, Key, Scheme, Template, Verified, Verifier};

/// A sender's message id longer than this is refused (it is stored and indexed).
pub const MAX_MESSAGE_ID: usize = 512;

/// Dead letters written per second and receiver for refusals after the signature check (the
/// provider's own mistakes); refusals past it are only counted.
const DEAD_LETTERS_PER_SECOND: u32 = 50;

/// Dead letters written per second and receiver for refusals before the signature is checked
/// (wrong content type, too large, bad signature: anyone can send those), with at most
/// [`UNVERIFIED_BODY_KEPT`] of the body and [`UNVERIFIED_HEADERS_KEPT`] of headers each, so a
/// flood of forged requests adds at most about 50 KiB a second per receiver.
const UNVERIFIED_DEAD_LETTERS_PER_SECOND: u32 = 5;
/// See [`UNVERIFIED_DEAD_LETTERS_PER_SECOND`].
pub const UNVERIFIED_BODY_KEPT: usize = 4096;
/// See [`UNVERIFIED_DEAD_LETTERS_PER_SECOND`].
pub const UNVERIFIED_HEADERS_KEPT: usize = 4096;

/// What `Idempotent-Replayed` is called.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Where a message's id comes from.
#[derive(Debug, Clone)]
enum IdSource {
    /// What the signature scheme says (`webhook-id`, `X-GitHub-Delivery`, the hmac id header).
    Signed,
    Header(HeaderName),
    Pointer(String),
}

/// Where accepted messages go.
#[derive(Debug, Clone)]
pub struct Forward {
    pub upstream: String,
    pub path: http::uri::PathAndQuery,
}

/// The body of a delivery, as read by the caller.
pub enum Body {
    Whole(Bytes),
    /// Longer than `max_body`; not read further.
    TooLarge,
}

/// One compiled receiver.
pub struct Receiver {
    pub name: Arc<str>,
    /// `POST` is answered here.
    pub path: String,
    /// `inbound:<name>`: the source of its messages and dead letters.
    pub source: String,
    /// `forward:<name>`: the destination of its deliveries.
    pub destination: String,
    pub forward: Forward,
    pub retry_schedule: Vec<Duration>,
    pub max_body: u64,
    verifier: Verifier,
    schemas: Option<Schemas>,
    id: IdSource,
    /// Headers never stored as sent nor forwarded: the signature headers.
    signature_headers: Vec<HeaderName>,
    retention: Duration,
    dead_letters: LogBudget,
    unverified_dead_letters: LogBudget,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("name", &self.name).field("path", &self.path).finish_non_exhaustive()
    }
}

/// The `destination` of receiver `name`'s deliveries.
pub fn destination(name: &str) -> String {
    format!("forward:{name}")
}

impl Receiver {
    /// Compiles `webhooks.inbound[index]`: its secrets, signature settings and schema files.
    pub fn build(
        index: usize,
        cfg: &model::InboundWebhook,
        loaded: &LoadedConfig,
    ) -> Result<Self, BuildError> {
        let base = format!("webhooks.inbound[{index}]");
        let key = |k: &str| format!("{base}.{k}");
        let v = &cfg.verify;
        let header = |k: &str, h: &str| header_name(key(k), h);
        let scheme = scheme_of(v, &key("verify"))?;
        let secrets: Vec<(String, &str)> = match &v.secret {
            Some(s) => vec![(key("verify.secret"), s.expose())],
            None => v
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| (key(&format!("verify.secrets[{i}]")), s.expose()))
                .collect(),
        };
        let keys = secrets
            .iter()
            .map(|(k, s)| Key::parse(&scheme, s).map_err(|e| BuildError::new(k.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let signature_headers = scheme.signature_headers();
        let verifier =
            Verifier::new(scheme, keys, v.tolerance.get()).map_err(|e| BuildError::new(key("verify"), e))?;
        let schemas = match (&cfg.schema, &cfg.schemas) {
            (Some(file), _) => Some(Schemas::One(
                compile_file(&loaded.resolve_path(file)).map_err(|e| BuildError::new(key("schema"), e))?,
            )),
            (None, Some(by)) => {
                let types = by
                    .types
                    .iter()
                    .map(|(t, file)| {
                        compile_file(&loaded.resolve_path(file))
                            .map(|v| (t.clone(), v))
                            .map_err(|e| BuildError::new(key(&format!("schemas.types.{t}")), e))
                    })
                    .collect::<Result<_, _>>()?;
                Some(Schemas::ByType {
                    pointer: by.pointer.clone(),
                    types,
                    accept_unknown: by.unknown == model::UnknownEventType::Accept,
                })
            }
            (None, None) => None,
        };
        let id = match &cfg.id {
            Some(model::WebhookMessageId { header: Some(h), .. }) => {
                IdSource::Header(header("id.header", h)?)
            }
            Some(model::WebhookMessageId { pointer: Some(p), .. }) => IdSource::Pointer(p.clone()),
            _ => match v.scheme {
                model::WebhookScheme::Stripe => IdSource::Pointer("/id".into()),
                model::WebhookScheme::Slack => IdSource::Pointer("/event_id".into()),
                _ => IdSource::Signed,
            },
        };
        let path = cfg.forward.path.parse().map_err(|_| {
            BuildError::new(key("forward.path"), format!("`{}` is not a path", cfg.forward.path))
        })?;
        Ok(Self {
            name: cfg.name.as_str().into(),
            path: cfg.path.clone(),
            source: format!("inbound:{}", cfg.name),
            destination: destination(&cfg.name),
            forward: Forward { upstream: cfg.forward.upstream.clone(), path },
            retry_schedule: cfg.retry_schedule.iter().map(|d| d.get()).collect(),
            max_body: cfg.max_body.get(),
            verifier,
            schemas,
            id,
            signature_headers,
            retention: cfg.retention.get(),
            dead_letters: LogBudget::per_second(DEAD_LETTERS_PER_SECOND),
            unverified_dead_letters: LogBudget::per_second(UNVERIFIED_DEAD_LETTERS_PER_SECOND),
        })
    }

    /// Every receiver of `loaded` (`webhooks.inbound`), in config order.
    pub fn build_all(loaded: &LoadedConfig) -> Result<Vec<Receiver>, BuildError> {
        loaded.config.webhooks.inbound.iter().enumerate().map(|(i, w)| Self::build(i, w, loaded)).collect()
    }

    /// This receiver's signature headers (redacted when stored, never forwarded).
    pub fn signature_headers(&self) -> &[HeaderName] {
        &self.signature_headers
    }

    /// Handles one `POST` (see the module docs); `now_ms` is Unix ms.
    pub async fn receive(
        &self,
        store: &Store,
        metrics: &Metrics,
        headers: &HeaderMap,
        body: Body,
        request_id: &str,
        now_ms: i64,
    ) -> Response<Bytes> {
        let (result, res) = match self.check(headers, body, now_ms / 1000, true) {
            Err(refusal) => {
                self.dead_letter(store, metrics, headers, &refusal, now_ms).await;
                (refusal.reason, refusal.response(request_id))
            }
            Ok(Checked::Challenge(challenge)) => {
                let body = json!({ "challenge": challenge }).to_string();
                ("challenge", json_response(StatusCode::OK, body))
            }
            Ok(Checked::Valid(valid)) => self.commit(store, headers, &valid, request_id, now_ms).await,
        };
        metrics
            .webhook_received
            .get_or_create(&ReceiverResultLabels { receiver: Name(self.name.clone()), result })
            .inc();
        res
    }

    /// Steps 1–5 of the module docs, then the message id. Without `verify` (a replay told to skip
    /// the signature) the message id comes from the scheme's id header as sent.
    fn check(
        &self,
        headers: &HeaderMap,
        body: Body,
        now: i64,
        verify: bool,
    ) -> Result<Checked, Box<Refusal>> {
        let slack = matches!(self.verifier.scheme, Scheme::Slack);
        let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let form = media == "application/x-www-form-urlencoded";
        let json_type =
            media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"));
        let body = match body {
            Body::Whole(b) => b,
            Body::TooLarge => {
                let mut r = Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is larger than this receiver's limit of {} bytes", self.max_body),
                    Bytes::new(),
                );
                r.body_len = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(self.max_body + 1);
                return Err(Box::new(r));
            }
        };
        if !(json_type || (slack && form && self.schemas.is_none())) {
            let accepted = if slack && self.schemas.is_none() {
                "application/json or application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            let got = if ctype.is_empty() { "none".to_owned() } else { format!("`{ctype}`") };
            return Err(Box::new(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!("Content-Type is {got}; this receiver takes {accepted}"),
                body,
            )));
        }
        let verified: Verified = match self.verifier.verify(headers, &body, now) {
            Ok(v) => v,
            Err(_) if !verify => Verified { id: self.unsigned_id(headers), timestamp: None, key: 0 },
            Err(e) => {
                let mut r = Refusal::new(StatusCode::UNAUTHORIZED, "signature", e.to_string(), body);
                r.members = vec![("header", json!(e.header.as_str())), ("reason", json!(e.reason.label()))];
                return Err(Box::new(r));
            }
        };
        let payload: Option<Value> = if form {
            None
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(Box::new(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "not_json",
                        format!("the body is not JSON: {e}"),
                        body,
                    )));
                }
            }
        };
        if slack
            && let Some(p) = &payload
            && p.get("type").and_then(Value::as_str) == Some("url_verification")
        {
            let challenge = p.get("challenge").and_then(Value::as_str).unwrap_or_default().to_owned();
            return Ok(Checked::Challenge(challenge));
        }
        if let (Some(schemas), Some(p)) = (&self.schemas, &payload) {
            let errors = schemas.check(p);
            if !errors.is_empty() {
                let detail = format!(
                    "the payload does not match the receiver's schema: {} error{}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
                let mut r = Refusal::new(StatusCode::BAD_REQUEST, "schema", detail, body);
                r.errors = errors;
                return Err(Box::new(r));
            }
        }
        let external_id = match &self.id {
            IdSource::Signed => verified.id,
            IdSource::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned),
            IdSource::Pointer(ptr) => payload.as_ref().and_then(|p| p.pointer(ptr)).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        };
        // An empty id is no id: it must not make every later message a "duplicate".
        let external_id = external_id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty());
        if let Some(id) = &external_id
            && id.len() > MAX_MESSAGE_ID
        {
            return Err(Box::new(Refusal::new(
                StatusCode::BAD_REQUEST,
                "message_id",
                format!("the message id is {} bytes long; at most {MAX_MESSAGE_ID} are accepted", id.len()),
                body,
            )));
        }
        let event_type = payload.as_ref().and_then(|p| match &self.schemas {
            Some(s @ Schemas::ByType { .. }) => s.event_type(p),
            _ => p.get("type").and_then(Value::as_str).map(str::to_owned),
        });
        Ok(Checked::Valid(Valid { body, external_id, event_type }))
    }

    /// The id header of the scheme, unverified (for a replay that skips the signature).
    fn unsigned_id(&self, headers: &HeaderMap) -> Option<String> {
        let name = match &self.verifier.scheme {
            Scheme::Standard => crate::signature::names::WEBHOOK_ID,
            Scheme::Github => crate::signature::names::GITHUB_DELIVERY,
            Scheme::Hmac(h) => h.id_header.clone()?,
            Scheme::Stripe | Scheme::Slack => return None,
        };
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// Step 7's transaction: the message and its delivery.
    async fn store_message(
        &self,
        store: &Store,
        headers: &HeaderMap,
        valid: &Valid,
        now_ms: i64,
    ) -> Result<Accepted, bridgehead_state::StateError> {
        let headers_json = self.stored_headers(headers);
        let msg = NewWebhookMessage {
            source: &self.source,
            external_id: valid.external_id.as_deref(),
            event_type: valid.event_type.as_deref(),
            headers_json: &headers_json,
            body: &valid.body,
            retention_ms: i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX),
            ordering_key: None,
        };
        store.webhook_accept(&msg, &[self.destination.as_str()], now_ms).await
    }

    /// Steps 6 and 7: stores the message (or finds it a replay) and answers.
    async fn commit(
        &self,
        store: &Store,
        headers: &HeaderMap,
        valid: &Valid,
        request_id: &str,
        now_ms: i64,
    ) -> (&'static str, Response<Bytes>) {
        match self.store_message(store, headers, valid, now_ms).await {
            Ok(Accepted::New(id)) => {
                let body = json!({ "status": "accepted", "message_id": id }).to_string();
                ("accepted", json_response(StatusCode::ACCEPTED, body))
            }
            Ok(Accepted::Duplicate(id)) => {
                let body = json!({ "status": "duplicate", "message_id": id }).to_string();
                let mut res = json_response(StatusCode::OK, body);
                res.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                ("duplicate", res)
            }
            Err(e) => {
                static FAILED: LogBudget = LogBudget::new();
                if let Some(left_out) = FAILED.admit() {
                    tracing::error!(receiver = %self.name, error = %e, left_out, "webhook store failed; the sender was told to retry");
                }
                let text = "the webhook could not be stored; nothing was accepted, send it again later";
                ("store_unavailable", store_unavailable(text, request_id))
            }
        }
    }

    async fn dead_letter(
        &self,
        store: &Store,
        metrics: &Metrics,
        headers: &HeaderMap,
        r: &Refusal,
        now_ms: i64,
    ) {
        let unverified = matches!(r.reason, "content_type" | "too_large" | "signature");
        let budget = if unverified { &self.unverified_dead_letters } else { &self.dead_letters };
        if budget.admit().is_none() {
            metrics
                .webhook_dead_letters_dropped
                .get_or_create(&RouteLabels { route: Name(self.name.clone()) })
                .inc();
            return;
        }
        let mut detail = r.detail.clone();
        if !r.errors.is_empty() {
            detail =
                serde_json::to_string(&json!({ "detail": r.detail, "errors": r.errors })).unwrap_or(detail);
        }
        let mut headers_json = self.stored_headers(headers);
        let mut signatures_json = self.signatures(headers);
        let mut body: &[u8] = &r.body;
        if unverified && detail.len() > 1024 {
            // The detail may quote a header the sender chose (a content type, a malformed
            // signature): kept short like the rest.
            let cut = (0..=1024).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        if unverified {
            body = &body[..body.len().min(UNVERIFIED_BODY_KEPT)];
            if headers_json.len() + signatures_json.len() > UNVERIFIED_HEADERS_KEPT {
                headers_json = r#"[["(headers)","not kept: larger than 4 KiB"]]"#.into();
                signatures_json = "[]".into();
            }
        }
        let dl = NewDeadLetter {
            source: &self.source,
            reason: r.reason,
            detail: &detail,
            headers_json: &headers_json,
            signatures_json: &signatures_json,
            body,
            body_bytes: i64::try_from(r.body_len).unwrap_or(i64::MAX),
        };
        if let Err(e) = store.webhook_dead_letter_add(&dl, now_ms).await {
            static FAILED: LogBudget = LogBudget::new();
            if let Some(left_out) = FAILED.admit() {
                tracing::warn!(receiver = %self.name, error = %e, left_out, "a refused webhook could not be kept as a dead letter");
            }
        }
    }

    /// The signature headers as received, `[[name, value], …]` JSON: kept with a dead letter
    /// only so that a replay can verify them again.
    fn signatures(&self, headers: &HeaderMap) -> String {
        let pairs: Vec<(&str, String)> = self
            .signature_headers
            .iter()
            .flat_map(|n| {
                headers
                    .get_all(n)
                    .iter()
                    .map(move |v| (n.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            })
            .collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
    }

    /// Replays a dead letter of this receiver, once whatever refused it is fixed: its stored
    /// request goes through the same checks (the signature's timestamp is held to the tolerance
    /// at the time it was received, not now), and is committed for delivery when it passes.
    /// With `skip_signature` the signature is not checked (the caller logs that). A request that
    /// is refused again is not kept as another dead letter.
    pub async fn replay(
        &self,
        store: &Store,
        dl: &bridgehead_state::DeadLetter,
        skip_signature: bool,
        now_ms: i64,
    ) -> Result<Replayed, ReplayError> {
        if dl.source != self.source {
            return Err(ReplayError::Refused {
                reason: "receiver",
                detail: format!("the dead letter came to `{}`, not to `{}`", dl.source, self.source),
            });
        }
        if dl.replayed_at_ms.is_some() {
            return Err(ReplayError::Refused {
                reason: "already_replayed",
                detail: match &dl.message_id {
                    Some(m) => format!("it was replayed already, into {m}"),
                    None => "a replay of it is in progress".into(),
                },
            });
        }
        if dl.reason == "too_large" || (dl.body.len() as i64) < dl.body_bytes {
            return Err(ReplayError::Refused {
                reason: "body_not_kept",
                detail: format!(
                    "only {} of its {} body bytes were kept (a request refused before its signature was checked keeps at most {UNVERIFIED_BODY_KEPT}); ask the sender to send it again",
                    dl.body.len(),
                    dl.body_bytes
                ),
            });
        }
        let mut headers = HeaderMap::new();
        let mut pairs: Vec<(String, String)> = serde_json::from_str(&dl.headers_json).unwrap_or_default();
        pairs.retain(|(n, _)| !self.signature_headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(n)));
        pairs.extend(serde_json::from_str::<Vec<(String, String)>>(&dl.signatures_json).unwrap_or_default());
        for (n, v) in pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(n), HeaderValue::try_from(v)) {
                headers.append(n, v);
            }
        }
        // The receiver's limit as it is now (it may have been lowered since): the same check as
        // a delivery gets.
        let body = if dl.body.len() as u64 > self.max_body {
            Body::TooLarge
        } else {
            Body::Whole(Bytes::from(dl.body.clone()))
        };
        let checked = self
            .check(&headers, body, dl.received_at_ms / 1000, !skip_signature)
            .map_err(|r| ReplayError::Refused { reason: r.reason, detail: r.detail })?;
        let Checked::Valid(valid) = checked else {
            return Err(ReplayError::Refused {
                reason: "challenge",
                detail: "a url_verification challenge is not a message".into(),
            });
        };
        // Taken first, atomically: two replays at once (the API and the command, a retry after a
        // 503) store one message, not two.
        match store.webhook_dead_letter_take_for_replay(&dl.id, now_ms).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ReplayError::Refused {
                    reason: "already_replayed",
                    detail: "it was replayed already, or a replay of it is in progress".into(),
                });
            }
            Err(e) => return Err(ReplayError::Store(e.to_string())),
        }
        let accepted = match self.store_message(store, &headers, &valid, now_ms).await {
            Ok(a) => a,
            Err(e) => {
                let _ = store.webhook_dead_letter_give_back(&dl.id).await;
                return Err(ReplayError::Store(e.to_string()));
            }
        };
        let (id, replayed) = match accepted {
            Accepted::New(id) => (id.clone(), Replayed::Accepted(id)),
            Accepted::Duplicate(id) => (id.clone(), Replayed::Duplicate(id)),
        };
        store
            .webhook_dead_letter_replayed(&dl.id, &id, now_ms)
            .await
            .map_err(|e| ReplayError::Store(e.to_string()))?;
        Ok(replayed)
    }

    /// The headers kept with a message or dead letter, as `[[name, value], …]` JSON: every
    /// end-to-end header but credentials and cookies, signature headers redacted.
    pub fn stored_headers(&self, headers: &HeaderMap) -> String {
        let pairs: Vec<(&str, String)> = headers
            .iter()
            .filter(|(n, _)| {
                !DROPPED.contains(&n.as_str()) && !DROPPED_PREFIXES.iter().any(|p| n.as_str().starts_with(p))
            })
            .map(|(n, v)| {
                let value = if self.signature_headers.contains(n) {
                    "[redacted]".to_owned()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (n.as_str(), value)
            })
            .collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
    }
}

/// A header name from the config, or an error at `key`.
fn header_name(key: String, h: &str) -> Result<HeaderName, BuildError> {
    HeaderName::try_from(h).map_err(|_| BuildError::new(key, format!("`{h}` is not a header name")))
}

/// The signature scheme `verify` (at key `base`) describes.
fn scheme_of(v: &model::WebhookVerify, base: &str) -> Result<Scheme, BuildError> {
    let key = |k: &str| format!("{base}.{k}");
    Ok(match v.scheme {
        model::WebhookScheme::Standard => Scheme::Standard,
        model::WebhookScheme::Stripe => Scheme::Stripe,
        model::WebhookScheme::Github => Scheme::Github,
        model::WebhookScheme::Slack => Scheme::Slack,
        model::WebhookScheme::Hmac => {
            let header = |k: &str, h: &str| header_name(key(k), h);
            let h = HmacScheme {
                header: header("header", v.header.as_deref().unwrap_or_default())?,
                prefix: v.prefix.clone(),
                algorithm: match v.algorithm {
                    model::HmacAlgorithm::Sha256 => Algorithm::Sha256,
                    model::HmacAlgorithm::Sha512 => Algorithm::Sha512,
                },
                encoding: match v.encoding {
                    model::SignatureEncoding::Hex => Encoding::Hex,
                    model::SignatureEncoding::Base64 => Encoding::Base64,
                },
                content: Template::parse(&v.content).map_err(|e| BuildError::new(key("content"), e))?,
                timestamp_header: v
                    .timestamp_header
                    .as_deref()
                    .map(|h| header("timestamp_header", h))
                    .transpose()?,
                id_header: v.id_header.as_deref().map(|h| header("id_header", h)).transpose()?,
            };
            h.check().map_err(|e| BuildError::new(base, e))?;
            Scheme::Hmac(Box::new(h))
        }
    })
}

/// Never stored nor forwarded: connection-level headers, framing, credentials of other kinds,
/// and headers only the gateway may set toward an upstream (a sender's `X-Forwarded-For` or
/// `X-Bridgehead-*` would be believed by the destination).
const DROPPED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "cookie",
    "expect",
    "x-api-key",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "via",
];

/// Header name prefixes never stored nor forwarded (see [`DROPPED`]); the gateway sets its own
/// `X-Forwarded-For` and `X-Forwarded-Proto` before the receiver stores the headers.
const DROPPED_PREFIXES: &[&str] = &["proxy-", "x-bridgehead-"];

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Stored as this message, to be delivered.
    Accepted(String),
    /// Its message id was already stored (this message): nothing new.
    Duplicate(String),
}

/// Why a replay did not store anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The stored request is still refused: the reason label and what is wrong.
    #[error("still refused ({reason}): {detail}")]
    Refused { reason: &'static str, detail: String },
    #[error("the state store failed: {0}")]
    Store(String),
}

/// A delivery that passed every check, ready to store.
struct Valid {
    body: Bytes,
    /// The sender's message id (replay protection), when it has a non-empty one.
    external_id: Option<String>,
    event_type: Option<String>,
}

enum Checked {
    Valid(Valid),
    Challenge(String),
}

/// A refused delivery: what the sender is told and what the dead letter keeps.
pub(crate) struct Refusal {
    status: StatusCode,
    pub(crate) reason: &'static str,
    detail: String,
    body: Bytes,
    /// The body's length as received (more than `body` holds when it was not read).
    body_len: u64,
    pub(crate) errors: Vec<SchemaError>,
    pub(crate) members: Vec<(&'static str, Value)>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: &'static str, detail: String, body: Bytes) -> Self {
        let body_len = body.len() as u64;
        Self { status, reason, detail, body, body_len, errors: Vec::new(), members: Vec::new() }
    }

    pub(crate) fn response(&self, request_id: &str) -> Response<Bytes> {
        let (type_uri, title) = match self.reason {
            "signature" => ("urn:bridgehead:problem:webhook-signature", "Webhook signature not valid"),
            "schema" => {
                ("urn:bridgehead:problem:webhook-schema", "Webhook payload does not match its schema")
            }
            "not_json" => ("urn:bridgehead:problem:webhook-not-json", "Webhook payload is not JSON"),
            "content_type" => {
                ("urn:bridgehead:problem:webhook-content-type", "Unsupported webhook content type")
            }
            "too_large" => ("urn:bridgehead:problem:body-too-large", "Request body too large"),
            "message_id" => ("urn:bridgehead:problem:webhook-message-id", "Webhook message id not usable"),
            "invalid_event" => ("urn:bridgehead:problem:webhook-invalid-event", "Not a publishable event"),
            "unknown_event_type" => {
                ("urn:bridgehead:problem:webhook-unknown-event-type", "Event type not declared")
            }
            _ => ("urn:bridgehead:problem:webhook-store-unavailable", "Webhook store unavailable"),
        };
        let mut body = json!({
            "type": type_uri,
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "request_id": request_id,
        });
        for (k, v) in &self.members {
            body[*k] = v.clone();
        }
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = self.status;
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// The 503 of a store that could not commit: nothing was accepted; `Retry-After: 5`.
pub(crate) fn store_unavailable(detail: &str, request_id: &str) -> Response<Bytes> {
    let r = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail.into(), Bytes::new());
    let mut res = r.response(request_id);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
