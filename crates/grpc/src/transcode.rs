//! The transcoding backend: a JSON-over-HTTP request finds its binding, becomes a gRPC call,
//! and the call's answer becomes JSON again.
//!
//! ```text
//! prepare: binding (404 with the closest, 405) ─▶ message from path, query, body (400 naming the
//!          field) ─▶ framed, metadata by allow-list, grpc-timeout
//! respond: head ─▶ unary: read to the status ─▶ JSON, or problem+json by the status table
//!                  server stream: NDJSON lines or SSE events as messages arrive; a failed status
//!                  ends the stream with an error object
//! ```
//!
//! Invariant: nothing is sent upstream for a request that does not fit the schema; a path no
//! binding takes is answered here (404), never forwarded.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame};
use prost_reflect::{DynamicMessage, FieldDescriptor, MessageDescriptor, MethodDescriptor};
use serde_json::json;

use bridgehead_http::body::{BoxError, ResponseBody};
use bridgehead_http::problem::{GatewayError, problem_json as problem};
use bridgehead_http::upstream_body::UpstreamBody;

use crate::binding::Found;
use crate::call::{self, AnswerError};
use crate::frame::{self, Decoder, FrameError};
use crate::mapping::{self, JsonOptions, RequestError};
use crate::service::{Loaded, Service};
use crate::status::Status;

pub use bridgehead_http::problem::FailedAfterSending;

/// `res`, marked [`FailedAfterSending`].
fn after_sending(mut res: Response<ResponseBody>) -> Response<ResponseBody> {
    res.extensions_mut().insert(FailedAfterSending);
    res
}

/// A transcoding route's backend.
pub struct Transcoder {
    pub service: Arc<Service>,
    pub opts: JsonOptions,
    /// Headers passed as metadata both ways (lower case).
    pub metadata: Vec<HeaderName>,
    /// `match.path_prefix`: where the bindings are mounted.
    pub prefix: Option<String>,
}

/// How a server-streaming answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Ndjson,
    Sse,
}

/// A request ready to send.
pub struct Prepared {
    /// `/package.Service/Method`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The service's and the method's names, for metrics labels.
    pub labels: (Arc<str>, Arc<str>),
    method: MethodDescriptor,
    response_body: Option<FieldDescriptor>,
    stream: Option<StreamFormat>,
    loaded: Arc<Loaded>,
}

/// Metadata every call carries when the request has it.
const ALWAYS: [&str; 3] = ["x-request-id", "x-consumer-id", "x-forwarded-for"];

impl Transcoder {
    /// The backend of a `grpc_transcode` route serving `service`.
    pub fn new(service: Arc<Service>, route: &bridgehead_config::Route) -> Self {
        let t = route.grpc_transcode.as_ref();
        Transcoder {
            service,
            opts: JsonOptions::of(t),
            metadata: t
                .map(|t| &t.metadata[..])
                .unwrap_or_default()
                .iter()
                .filter_map(|m| HeaderName::from_bytes(m.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
            prefix: route.matcher.path_prefix.clone(),
        }
    }

    /// The path the bindings see: the request path under the mount point.
    pub fn local_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        match &self.prefix {
            None => Some(path),
            Some(p) => {
                let p = p.trim_end_matches('/');
                let rest = path.strip_prefix(p)?;
                if rest.is_empty() {
                    Some("/")
                } else if rest.starts_with('/') {
                    Some(rest)
                } else {
                    None
                }
            }
        }
    }

    /// Whether a binding takes `path` (for a route without a path condition).
    pub fn takes(&self, path: &str) -> bool {
        self.service.current().is_some_and(|l| l.bindings.matches_path(path))
    }

    /// The request as a gRPC call, or the answer that refuses it.
    #[allow(clippy::too_many_arguments)]
    // Both sides are big and a refusal is answered at once: boxing would only add an allocation.
    #[allow(clippy::result_large_err)]
    pub fn prepare(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        timeout: Duration,
        request_id: &str,
    ) -> Result<Prepared, Response<Bytes>> {
        let Some(loaded) = self.service.current() else {
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:grpc-schema-unavailable",
                "Schema unavailable",
                &format!("the schema of gRPC service `{}` has not been loaded yet", self.service.name),
                request_id,
                json!({}),
            ));
        };
        let local = self.local_path(path).unwrap_or("");
        let found = if local.is_empty() { Found::NotFound } else { loaded.bindings.find(method, local) };
        let (binding, vars) = match found {
            Found::Binding(b, v) => (b, v),
            Found::MethodNotAllowed(allow) => {
                let e = GatewayError::MethodNotAllowed {
                    method: method.to_string(),
                    path: path.to_owned(),
                    allow,
                };
                return Err(e.to_response(request_id));
            }
            Found::NotFound => {
                let closest: Vec<String> =
                    loaded.bindings.nearest(local).into_iter().map(|b| self.mounted(&b)).collect();
                return Err(problem(
                    StatusCode::NOT_FOUND,
                    "urn:bridgehead:problem:grpc-no-binding",
                    "No such method",
                    &format!(
                        "no method of gRPC service `{}` is bound to {method} {path}; closest: {}",
                        self.service.name,
                        if closest.is_empty() { "none".to_owned() } else { closest.join(", ") }
                    ),
                    request_id,
                    json!({ "closest": closest }),
                ));
            }
        };
        let bad = |e: RequestError| {
            let field = match &e {
                RequestError::Field { path, .. } => Some(path.clone()),
                RequestError::Var { field, .. } => Some(field.clone()),
                RequestError::Query { param, .. } => Some(param.clone()),
                _ => None,
            };
            problem(
                StatusCode::BAD_REQUEST,
                "urn:bridgehead:problem:invalid-message",
                "Invalid request message",
                &format!("{e} (request message `{}`)", binding.method.input().full_name()),
                request_id,
                json!({ "field": field }),
            )
        };
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let mut framed = BytesMut::new();
        let total = body.len().saturating_mul(2).saturating_add(self.service.max_message);
        #[allow(clippy::result_large_err)]
        let mut put = |msg: DynamicMessage| -> Result<(), Response<Bytes>> {
            let bytes = prost::Message::encode_to_vec(&msg);
            if bytes.len() > self.service.max_message {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "urn:bridgehead:problem:grpc-message-too-large",
                    "Message too large",
                    &format!(
                        "the request message is {} bytes, over the limit of {} (grpc.services.{}.max_message_size)",
                        bytes.len(),
                        self.service.max_message,
                        self.service.name
                    ),
                    request_id,
                    json!({}),
                ));
            }
            // The call as a whole stays within what the body could fairly make (a client stream
            // of tiny messages with long path variables must not multiply the body).
            if framed.len() + bytes.len() + 5 > total {
                return Err(problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "urn:bridgehead:problem:grpc-message-too-large",
                    "Messages too large",
                    &format!("the request messages come to more than {total} bytes"),
                    request_id,
                    json!({}),
                ));
            }
            framed.extend_from_slice(&frame::encode(&bytes));
            Ok(())
        };
        if binding.method.is_client_streaming() {
            // NDJSON (or any JSON values one after another): one message each.
            for msg in mapping::stream_messages(binding, &vars, query, body, &self.opts) {
                let msg = msg.map_err(|(i, e)| {
                    let mut refused = bad(e);
                    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(refused.body()) {
                        v["message"] = json!(i);
                        v["detail"] =
                            json!(format!("message {i}: {}", v["detail"].as_str().unwrap_or_default()));
                        *refused.body_mut() = Bytes::from(v.to_string());
                    }
                    refused
                })?;
                put(msg)?;
            }
        } else {
            let msg = mapping::request_message(binding, &vars, query, body, content_type, &self.opts)
                .map_err(bad)?;
            put(msg)?;
        }
        // A streaming answer may run longer than one request: the deadline is the unary call's.
        let deadline = (!binding.method.is_server_streaming()).then_some(timeout);
        let mut out = call::request_headers(deadline);
        for (name, value) in headers {
            let n = name.as_str();
            if ALWAYS.contains(&n) || self.metadata.contains(name) {
                out.append(name.clone(), value.clone());
            }
        }
        let stream = binding.method.is_server_streaming().then(|| {
            let sse = headers
                .get_all(header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
            if sse { StreamFormat::Sse } else { StreamFormat::Ndjson }
        });
        Ok(Prepared {
            path: format!("/{}/{}", binding.method.parent_service().full_name(), binding.method.name()),
            headers: out,
            body: framed.freeze(),
            labels: binding.labels.clone(),
            method: binding.method.clone(),
            response_body: binding.response_body.clone(),
            stream,
            loaded: loaded.clone(),
        })
    }

    /// A binding's description with the mount point in front.
    fn mounted(&self, described: &str) -> String {
        match (&self.prefix, described.split_once(' ')) {
            (Some(p), Some((m, path))) => format!("{m} {}{path}", p.trim_end_matches('/')),
            _ => described.to_owned(),
        }
    }

    /// The client's answer to the call's answer.
    pub async fn respond(
        &self,
        p: Prepared,
        res: Response<UpstreamBody>,
        timeout: Duration,
        request_id: &str,
        code: &Arc<AtomicU32>,
    ) -> Response<ResponseBody> {
        // The status code (+ 1) for the caller's metrics, once known.
        let record = |c: u32| code.store(c.saturating_add(1), Relaxed);
        let upstream = &self.service.upstream.name;
        let broken = |e: &dyn std::fmt::Display| {
            // INTERNAL, for the metrics: the call's answer could not be read.
            record(13);
            tracing::warn!(request_id, upstream = %upstream, error = %e, "gRPC answer unreadable");
            let res = problem(
                StatusCode::BAD_GATEWAY,
                "urn:bridgehead:problem:upstream-failed",
                "Upstream failed",
                &format!("upstream `{upstream}` failed: {e}"),
                request_id,
                json!({}),
            )
            .map(ResponseBody::full);
            after_sending(res)
        };
        match call::check_head(&res) {
            // An HTTP answer without a gRPC status (a proxy in front of the server, a server
            // down): the status gRPC gives it, per the spec's HTTP to gRPC mapping.
            Err(AnswerError::NotGrpc(http)) => {
                let code = crate::status::from_http(http);
                record(code);
                let status = Status::new(
                    code,
                    format!("upstream `{upstream}` answered HTTP {http}, not a gRPC status"),
                );
                tracing::warn!(request_id, upstream = %upstream, http, "gRPC upstream answered without a gRPC status");
                return self.failed(&status, &HeaderMap::new(), request_id);
            }
            Err(e) => return broken(&e),
            Ok(()) => {}
        }
        if let Some(format) = p.stream {
            return self.stream(p, res, format, timeout, request_id, code).await;
        }
        let pool = p.loaded.schema.pool.clone();
        let finished = match tokio::time::timeout(
            timeout,
            call::finish(res, self.service.max_message, 1, &pool),
        )
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(AnswerError::Frame(FrameError::TooLarge { size, limit }))) => {
                return broken(&format!(
                    "a response message of {size} bytes is over the limit of {limit} (grpc.services.{}.max_message_size)",
                    self.service.name
                ));
            }
            Ok(Err(e)) => return broken(&e),
            Err(_) => {
                record(4);
                return self.timed_out(timeout, request_id);
            }
        };
        if finished.status.code != 0 {
            record(finished.status.code);
            let mut all = finished.head;
            all.extend(finished.trailers);
            return self.failed(&finished.status, &all, request_id);
        }
        let [message] = finished.messages.as_slice() else {
            return broken(&format!("a unary call answered {} messages", finished.messages.len()));
        };
        let msg = match DynamicMessage::decode(p.method.output(), message.as_ref()) {
            Ok(m) => m,
            Err(e) => return broken(&format!("the response message does not decode: {e}")),
        };
        let mut headers = self.metadata_out(&finished.head);
        headers.extend(self.metadata_out(&finished.trailers));
        let (ct, body) = match raw_body(&msg, p.response_body.as_ref()) {
            Some((ct, data)) => (ct, data),
            None => (
                "application/json".to_owned(),
                mapping::response_json(&msg, p.response_body.as_ref(), &self.opts),
            ),
        };
        if let Ok(v) = HeaderValue::from_str(if ct.is_empty() { "application/octet-stream" } else { &ct }) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        record(0);
        let mut out = Response::new(ResponseBody::full(body));
        *out.headers_mut() = headers;
        out
    }

    /// A server stream's answer: a failed trailers-only head as a problem, else the stream as
    /// NDJSON or SSE, written as its messages arrive. A stream of `google.api.HttpBody` is
    /// written raw instead: the first message's content type is the answer's (so the head waits
    /// for it, within `timeout`), and a stream that fails after it breaks off (the data cannot
    /// carry an error object).
    async fn stream(
        &self,
        p: Prepared,
        res: Response<UpstreamBody>,
        format: StreamFormat,
        timeout: Duration,
        request_id: &str,
        code: &Arc<AtomicU32>,
    ) -> Response<ResponseBody> {
        let pool = p.loaded.schema.pool.clone();
        let head_status = Status::from_headers(res.headers(), &pool);
        if let Some(s) = &head_status {
            code.store(s.code.saturating_add(1), Relaxed);
        }
        if let Some(status) = head_status.as_ref().filter(|s| s.code != 0) {
            return self.failed(status, res.headers(), request_id);
        }
        let raw = is_raw(&p.method, p.response_body.as_ref());
        let mut headers = self.metadata_out(res.headers());
        let (head, body) = res.into_parts();
        let mut stream = JsonStream {
            inner: body,
            decoder: Decoder::new(self.service.max_message),
            output: p.method.output(),
            response_body: p.response_body,
            opts: self.opts,
            format,
            pool,
            request_id: request_id.to_owned(),
            code: code.clone(),
            ready: VecDeque::new(),
            // A trailers-only OK answer is a stream without messages.
            done: head_status.is_some(),
            raw: raw.then(RawState::default),
        };
        let ct = if raw {
            match tokio::time::timeout(timeout, std::future::poll_fn(|cx| stream.prime(cx, true))).await {
                Ok(()) => {}
                Err(_) => {
                    code.store(4 + 1, Relaxed);
                    return self.timed_out(timeout, request_id);
                }
            }
            let state = stream.raw.as_mut().expect("a raw stream");
            if stream.ready.is_empty()
                && state.content_type.is_none()
                && let Some(status) = state.failed.take()
            {
                // Failed before its first message: the status's problem, as for a unary call.
                let mut all = head.headers;
                all.extend(std::mem::take(&mut state.trailers));
                return self.failed(&status, &all, request_id);
            }
            HeaderValue::from_str(state.content_type.as_deref().unwrap_or_default())
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"))
        } else {
            HeaderValue::from_static(match format {
                StreamFormat::Ndjson => "application/x-ndjson",
                StreamFormat::Sse => "text/event-stream",
            })
        };
        headers.insert(header::CONTENT_TYPE, ct);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let mut out = Response::new(ResponseBody::made(stream));
        *out.headers_mut() = headers;
        out
    }

    /// The answer when the call's answer did not come within `timeout` (after it was sent).
    fn timed_out(&self, timeout: Duration, request_id: &str) -> Response<ResponseBody> {
        let e = GatewayError::UpstreamTimeout {
            upstream: self.service.upstream.name.to_string(),
            timeout: humantime::format_duration(timeout).to_string(),
            key: "timeouts.request",
        };
        after_sending(e.to_response(request_id).map(ResponseBody::full))
    }

    /// A failed status as problem+json, with the allowed metadata.
    fn failed(&self, status: &Status, metadata: &HeaderMap, request_id: &str) -> Response<ResponseBody> {
        let mut res = status.to_response(request_id).map(ResponseBody::full);
        for (name, value) in self.metadata_out(metadata) {
            if let Some(name) = name {
                res.headers_mut().insert(name, value);
            }
        }
        res
    }

    /// The response metadata a client may see: the allow-list's.
    fn metadata_out(&self, h: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for name in &self.metadata {
            for v in h.get_all(name) {
                out.append(name.clone(), v.clone());
            }
        }
        out
    }
}

/// Whether a method's answer (or its `response_body` field) is a `google.api.HttpBody`.
pub(crate) fn is_raw(method: &MethodDescriptor, response_body: Option<&FieldDescriptor>) -> bool {
    match response_body {
        None => method.output().full_name() == mapping::HTTP_BODY,
        Some(f) => {
            !f.is_list()
                && matches!(f.kind(), prost_reflect::Kind::Message(m) if m.full_name() == mapping::HTTP_BODY)
        }
    }
}

/// The content type and data of an answer that is (or whose `response_body` field is) a
/// `google.api.HttpBody`.
fn raw_body(msg: &DynamicMessage, response_body: Option<&FieldDescriptor>) -> Option<(String, Bytes)> {
    match response_body {
        None => mapping::http_body(msg),
        Some(f) => msg.get_field(f).as_message().and_then(mapping::http_body),
    }
}

/// A raw (`google.api.HttpBody`) stream's own state.
#[derive(Default)]
struct RawState {
    /// The first message's content type.
    content_type: Option<String>,
    /// How the stream failed, once it has.
    failed: Option<Status>,
    /// The trailers of a stream that failed (their metadata goes with a problem answer).
    trailers: HeaderMap,
}

/// A server stream as NDJSON lines or SSE events, one per message as it arrives; a failed or
/// broken stream ends with an error object (`{"error": {…}}`, or an `error` event). A raw
/// stream is the messages' data one after another, and breaks off where it fails.
struct JsonStream {
    inner: UpstreamBody,
    decoder: Decoder,
    output: MessageDescriptor,
    response_body: Option<FieldDescriptor>,
    opts: JsonOptions,
    format: StreamFormat,
    pool: prost_reflect::DescriptorPool,
    request_id: String,
    /// The stream's status code (+ 1), for the caller's metrics.
    code: Arc<AtomicU32>,
    ready: VecDeque<Bytes>,
    done: bool,
    /// Set for a stream of `google.api.HttpBody`.
    raw: Option<RawState>,
}

impl JsonStream {
    fn line(&self, json: &[u8], error: bool) -> Bytes {
        let mut b = BytesMut::with_capacity(json.len() + 24);
        match self.format {
            StreamFormat::Ndjson if error => {
                b.extend_from_slice(b"{\"error\":");
                b.extend_from_slice(json);
                b.extend_from_slice(b"}\n");
            }
            StreamFormat::Ndjson => {
                b.extend_from_slice(json);
                b.extend_from_slice(b"\n");
            }
            StreamFormat::Sse => {
                if error {
                    b.extend_from_slice(b"event: error\n");
                }
                b.extend_from_slice(b"data: ");
                b.extend_from_slice(json);
                b.extend_from_slice(b"\n\n");
            }
        }
        b.freeze()
    }

    fn fail(&mut self, status: &Status) {
        self.code.store(status.code.saturating_add(1), Relaxed);
        if let Some(raw) = &mut self.raw {
            raw.failed = Some(status.clone());
            self.done = true;
            return;
        }
        let json = status.json(&self.request_id).to_string();
        let line = self.line(json.as_bytes(), true);
        self.ready.push_back(line);
        self.done = true;
    }

    fn drain(&mut self) {
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => match DynamicMessage::decode(self.output.clone(), m.as_ref()) {
                    Ok(msg) if self.raw.is_some() => {
                        let (ct, data) = raw_body(&msg, self.response_body.as_ref()).unwrap_or_default();
                        let raw = self.raw.as_mut().expect("a raw stream");
                        if raw.content_type.is_none() {
                            raw.content_type = Some(ct);
                        }
                        if !data.is_empty() {
                            self.ready.push_back(data);
                        }
                    }
                    Ok(msg) => {
                        let json = mapping::response_json(&msg, self.response_body.as_ref(), &self.opts);
                        let line = self.line(&json, false);
                        self.ready.push_back(line);
                    }
                    Err(e) => {
                        return self
                            .fail(&Status::new(13, format!("a response message does not decode: {e}")));
                    }
                },
                Ok(None) => return,
                Err(e) => return self.fail(&Status::new(13, e.to_string())),
            }
        }
    }
}

impl JsonStream {
    /// Reads one frame of the answer and turns it into output (or the stream's end).
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.decoder.push(&data);
                    self.drain();
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    let status = Status::from_headers(&trailers, &self.pool);
                    if let Some(raw) = &mut self.raw {
                        raw.trailers = trailers;
                    }
                    match status {
                        Some(s) if s.code == 0 => match self.decoder.finish() {
                            Ok(()) => {
                                self.code.store(1, Relaxed);
                                self.done = true;
                            }
                            Err(e) => self.fail(&Status::new(13, e.to_string())),
                        },
                        Some(s) => self.fail(&s),
                        None => self.fail(&Status::new(13, "the stream ended without a gRPC status")),
                    }
                }
            },
            Poll::Ready(Some(Err(_))) => self.fail(&Status::new(14, "the upstream stream broke off")),
            Poll::Ready(None) => self.fail(&Status::new(13, "the stream ended without a gRPC status")),
        }
        Poll::Ready(())
    }

    /// Reads until there is output or the stream has ended; for the `head` of a raw stream,
    /// until its first message (which names the content type, perhaps without data).
    fn prime(&mut self, cx: &mut Context<'_>, head: bool) -> Poll<()> {
        let named = |s: &Self| head && s.raw.as_ref().is_some_and(|r| r.content_type.is_some());
        while self.ready.is_empty() && !self.done && !named(self) {
            std::task::ready!(self.pump(cx));
        }
        Poll::Ready(())
    }
}

impl Body for JsonStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        std::task::ready!(this.prime(cx, false));
        if let Some(line) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(line))));
        }
        match this.raw.as_mut().and_then(|r| r.failed.take()) {
            // A raw stream cannot say it failed in its data: it breaks off.
            Some(status) => Poll::Ready(Some(Err(format!(
                "the raw stream failed: {} {}",
                crate::status::NAMES.get(status.code as usize).copied().unwrap_or("UNKNOWN"),
                status.message
            )
            .into()))),
            None => Poll::Ready(None),
        }
    }
}
