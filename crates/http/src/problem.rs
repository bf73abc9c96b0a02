//! Errors the gateway itself answers with, classified once and rendered once as RFC 9457
//! `application/problem+json`.
//!
//! Every variant is declared data: its status, its problem `type`, its `title`, and a `detail`
//! that says what was wrong and where. Details never include upstream error internals, secrets
//! or stack traces; those go to the log with the request id.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// Why the gateway refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the request's host, path and headers.
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    /// A route matches the path but not the method.
    #[error("{method} is not allowed on {path}; allowed: {allow}")]
    MethodNotAllowed { method: String, path: String, allow: String },
    /// The request is malformed (bad Host, bad URI form, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// The request path has no canonical form: an invalid or control-character escape, a
    /// backslash, an escaped slash under `reject`, or `..` above the root.
    #[error(transparent)]
    InvalidPath(#[from] bridgehead_config::canonical::PathError),
    /// The declared or streamed body is larger than `server.limits.max_body`.
    #[error("request body exceeds the limit of {limit} bytes (server.limits.max_body)")]
    BodyTooLarge { limit: u64 },
    /// A request with an idempotency key has a body over the route's `max_request_body`.
    #[error(
        "request body exceeds {limit} bytes, the most a request with an Idempotency-Key may send on this route (routes[].idempotency.max_request_body)"
    )]
    IdempotencyBodyTooLarge { limit: u64 },
    /// The request head is larger than `server.limits.max_header_bytes`.
    #[error("request headers total {size} bytes, over the limit of {limit} (server.limits.max_header_bytes)")]
    HeadersTooLarge { size: usize, limit: u64 },
    /// Every target of the upstream is unhealthy or ejected.
    #[error("no healthy target in upstream `{upstream}`")]
    NoHealthyTarget { upstream: String },
    /// Connecting to the target failed, or it closed the connection or sent an invalid response.
    #[error("upstream `{upstream}` failed: {reason}")]
    UpstreamFailed { upstream: String, reason: &'static str },
    /// No authenticator of the route admitted the request (RFC 6750 §3.1 `invalid_token`, or no
    /// credentials at all). `challenges` become `WWW-Authenticate` fields.
    #[error("{detail}")]
    Unauthenticated { challenges: Vec<String>, reason: &'static str, detail: String },
    /// The caller is authenticated but lacks scopes the route requires (RFC 6750 `insufficient_scope`).
    #[error("missing scope: {missing} (the route requires {required})")]
    InsufficientScope { bearer: bool, authenticator: String, missing: String, required: String },
    /// A credential could not be checked: no key set yet, or the introspection endpoint failed.
    #[error("authenticator `{authenticator}` cannot check credentials right now: {detail}")]
    AuthUnavailable { authenticator: String, detail: String },
    /// The upstream's credential (an OAuth 2.0 token) could not be obtained; details are logged.
    #[error(
        "no credential for upstream `{upstream}`: its token endpoint could not provide one (details in the gateway log)"
    )]
    UpstreamCredentials { upstream: String },
    /// The target did not answer within `upstreams.*.timeouts.request`.
    #[error("upstream `{upstream}` did not answer within {timeout} (upstreams.{upstream}.{key})")]
    UpstreamTimeout { upstream: String, timeout: String, key: &'static str },
    /// A rate-limit policy of the route refused the request; `headers` are its rate-limit headers.
    #[error("rate limit `{policy}` ({rate}) exceeded; retry after {retry_after} s")]
    QuotaExceeded { policy: String, rate: String, retry_after: u64, headers: Box<http::HeaderMap> },
    /// A `closed` rate-limit policy could not reach its shared store.
    #[error(
        "the rate limits of route `{route}` cannot be checked right now (their shared store is unreachable)"
    )]
    RateLimitUnavailable { route: String },
    /// The route requires an `Idempotency-Key` and the request has none.
    #[error("this route requires an Idempotency-Key header on this method")]
    IdempotencyKeyMissing,
    /// The `Idempotency-Key` header is malformed.
    #[error("{0}")]
    IdempotencyKeyMalformed(String),
    /// A gRPC call on a route whose idempotency policy would have to store its answer.
    #[error(
        "idempotency keys apply to HTTP requests, not to gRPC calls: a call's status travels in trailers, which stored answers do not keep"
    )]
    IdempotencyUnsupported,
    /// A request with the same key is still being processed.
    #[error("a request with this Idempotency-Key is still being processed; retry after it completes")]
    IdempotencyInFlight,
    /// The key was used before with another method, path or body.
    #[error(
        "this Idempotency-Key was already used for a different request (method, path or body); use a new key"
    )]
    IdempotencyMismatch,
    /// The idempotency store is unreachable; the request was not sent.
    #[error("idempotency records of route `{route}` cannot be read right now; the request was not sent")]
    IdempotencyUnavailable { route: String },
    /// Every available target's circuit breaker is open.
    #[error(
        "the circuit breaker is open for every target of upstream `{upstream}`; retry after {retry_after} s"
    )]
    CircuitOpen { upstream: String, retry_after: u64 },
    /// `server.limits.max_buffered` is used up by bodies other requests hold.
    #[error(
        "the gateway is holding as many request and response bodies as it may (server.limits.max_buffered); retry shortly"
    )]
    Busy,
    /// The outbound throttle refused to queue the request.
    #[error("requests to upstream `{upstream}` are throttled: {reason}")]
    UpstreamRateLimited { upstream: String, reason: &'static str, retry_after: Option<u64> },
}

/// Marks an answer the gateway made because a call to an upstream failed after it was sent
/// (the answer could not be read, or did not come in time): the upstream may have acted, so an
/// idempotency key must not be run again.
#[derive(Debug, Clone, Copy)]
pub struct FailedAfterSending;

/// The static description of a problem type.
pub struct ProblemKind {
    pub status: StatusCode,
    pub type_uri: &'static str,
    pub title: &'static str,
}

const fn kind(status: StatusCode, type_uri: &'static str, title: &'static str) -> ProblemKind {
    ProblemKind { status, type_uri, title }
}

impl GatewayError {
    /// Status, type and title of this error.
    pub fn kind(&self) -> ProblemKind {
        use GatewayError::*;
        match self {
            NoRoute { .. } => kind(StatusCode::NOT_FOUND, "urn:bridgehead:problem:no-route", "No route"),
            MethodNotAllowed { .. } => kind(
                StatusCode::METHOD_NOT_ALLOWED,
                "urn:bridgehead:problem:method-not-allowed",
                "Method not allowed",
            ),
            BadRequest(_) => {
                kind(StatusCode::BAD_REQUEST, "urn:bridgehead:problem:bad-request", "Bad request")
            }
            InvalidPath(_) => {
                kind(StatusCode::BAD_REQUEST, "urn:bridgehead:problem:invalid-path", "Invalid request path")
            }
            BodyTooLarge { .. } => kind(
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:bridgehead:problem:body-too-large",
                "Request body too large",
            ),
            IdempotencyBodyTooLarge { .. } => kind(
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:bridgehead:problem:body-too-large",
                "Request body too large",
            ),
            HeadersTooLarge { .. } => kind(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "urn:bridgehead:problem:headers-too-large",
                "Request headers too large",
            ),
            NoHealthyTarget { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:no-healthy-target",
                "No healthy target",
            ),
            UpstreamFailed { .. } => {
                kind(StatusCode::BAD_GATEWAY, "urn:bridgehead:problem:upstream-failed", "Upstream failed")
            }
            Unauthenticated { .. } => {
                kind(StatusCode::UNAUTHORIZED, "urn:bridgehead:problem:unauthenticated", "Unauthenticated")
            }
            InsufficientScope { .. } => {
                kind(StatusCode::FORBIDDEN, "urn:bridgehead:problem:insufficient-scope", "Insufficient scope")
            }
            AuthUnavailable { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:auth-unavailable",
                "Authentication unavailable",
            ),
            UpstreamCredentials { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:upstream-credentials",
                "Upstream credentials unavailable",
            ),
            UpstreamTimeout { .. } => kind(
                StatusCode::GATEWAY_TIMEOUT,
                "urn:bridgehead:problem:upstream-timeout",
                "Upstream timeout",
            ),
            QuotaExceeded { .. } => kind(
                StatusCode::TOO_MANY_REQUESTS,
                "https://iana.org/assignments/http-problem-types#quota-exceeded",
                "Quota exceeded",
            ),
            RateLimitUnavailable { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:rate-limit-unavailable",
                "Rate limit unavailable",
            ),
            IdempotencyKeyMissing => kind(
                StatusCode::BAD_REQUEST,
                "urn:bridgehead:problem:idempotency-key-missing",
                "Idempotency-Key missing",
            ),
            IdempotencyKeyMalformed(_) => kind(
                StatusCode::BAD_REQUEST,
                "urn:bridgehead:problem:idempotency-key-malformed",
                "Idempotency-Key malformed",
            ),
            IdempotencyUnsupported => kind(
                StatusCode::BAD_REQUEST,
                "urn:bridgehead:problem:idempotency-unsupported",
                "Idempotency unsupported",
            ),
            IdempotencyInFlight => kind(
                StatusCode::CONFLICT,
                "urn:bridgehead:problem:idempotency-in-flight",
                "Request in flight",
            ),
            IdempotencyMismatch => kind(
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:bridgehead:problem:idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            IdempotencyUnavailable { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:idempotency-unavailable",
                "Idempotency unavailable",
            ),
            Busy => kind(StatusCode::SERVICE_UNAVAILABLE, "urn:bridgehead:problem:busy", "Busy"),
            CircuitOpen { .. } => {
                kind(StatusCode::SERVICE_UNAVAILABLE, "urn:bridgehead:problem:circuit-open", "Circuit open")
            }
            UpstreamRateLimited { .. } => kind(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:upstream-rate-limited",
                "Upstream rate limited",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    /// Renders the RFC 9457 body and the headers that go with it.
    pub fn to_response(&self, request_id: &str) -> http::Response<Bytes> {
        let k = self.kind();
        let extra: &[(&str, &str)] = match self {
            GatewayError::Unauthenticated { reason, .. } => &[("reason", reason)],
            GatewayError::InsufficientScope { .. } => &[("reason", "insufficient_scope")],
            GatewayError::QuotaExceeded { policy, .. } => &[("policy", policy.as_str())],
            GatewayError::CircuitOpen { upstream, .. }
            | GatewayError::UpstreamRateLimited { upstream, .. } => &[("upstream", upstream.as_str())],
            _ => &[],
        };
        let mut res = problem_with_members(&k, &self.to_string(), request_id, extra);
        let h = res.headers_mut();
        match self {
            GatewayError::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    h.insert(header::ALLOW, v);
                }
            }
            GatewayError::Unauthenticated { challenges, .. } => {
                for c in challenges {
                    if let Ok(v) = HeaderValue::from_str(c) {
                        h.append(header::WWW_AUTHENTICATE, v);
                    }
                }
            }
            GatewayError::InsufficientScope { required, bearer: true, .. } => {
                let c = format!(
                    "Bearer realm=\"bridgehead\", error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"{required}\""
                );
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            GatewayError::QuotaExceeded { retry_after, headers, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                for (name, value) in headers.iter() {
                    h.insert(name, value.clone());
                }
            }
            GatewayError::UpstreamRateLimited { retry_after: Some(secs), .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            GatewayError::CircuitOpen { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            GatewayError::IdempotencyInFlight | GatewayError::Busy => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// gRPC status codes the gateway answers with.
pub mod grpc_code {
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const ABORTED: u32 = 10;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

impl GatewayError {
    /// The gRPC status of this error. The base is the gRPC spec's mapping of HTTP statuses
    /// (`doc/http-grpc-status-mapping.md`: 400 INTERNAL, 401 UNAUTHENTICATED, 403
    /// PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN),
    /// made precise where the gateway knows more: a quota or a size limit is
    /// RESOURCE_EXHAUSTED, a timeout DEADLINE_EXCEEDED, a bad path or key INVALID_ARGUMENT, a
    /// method a route does not take UNIMPLEMENTED, a key in use ABORTED.
    pub fn grpc_code(&self) -> u32 {
        use GatewayError::*;
        use grpc_code::*;
        match self {
            QuotaExceeded { .. }
            | BodyTooLarge { .. }
            | IdempotencyBodyTooLarge { .. }
            | HeadersTooLarge { .. } => RESOURCE_EXHAUSTED,
            UpstreamTimeout { .. } => DEADLINE_EXCEEDED,
            InvalidPath(_)
            | IdempotencyKeyMissing
            | IdempotencyKeyMalformed(_)
            | IdempotencyMismatch
            | IdempotencyUnsupported => INVALID_ARGUMENT,
            MethodNotAllowed { .. } => UNIMPLEMENTED,
            IdempotencyInFlight => ABORTED,
            _ => match self.status().as_u16() {
                400 => INTERNAL,
                401 => UNAUTHENTICATED,
                403 => PERMISSION_DENIED,
                404 => UNIMPLEMENTED,
                429 | 502 | 503 | 504 => UNAVAILABLE,
                _ => UNKNOWN,
            },
        }
    }

    /// Renders this error for a gRPC client: a trailers-only answer (HTTP 200, no body) whose
    /// `grpc-status` and `grpc-message` say what went wrong; the headers of the problem form
    /// that a client acts on (`Retry-After`, `WWW-Authenticate`, rate-limit fields) come along.
    pub fn to_grpc_response(&self, request_id: &str) -> http::Response<()> {
        let (mut parts, _) = self.to_response(request_id).into_parts();
        parts.status = StatusCode::OK;
        let h = &mut parts.headers;
        h.remove(header::CACHE_CONTROL);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(self.grpc_code()));
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&self.to_string())) {
            h.insert("grpc-message", v);
        }
        // When to come back, for gRPC clients too: a `google.rpc.RetryInfo` detail.
        let retry_after = h.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(secs) = retry_after {
            let status = retry_status(self.grpc_code(), &self.to_string(), secs);
            use base64::Engine as _;
            let bin = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status);
            if let Ok(v) = HeaderValue::from_str(&bin) {
                h.insert("grpc-status-details-bin", v);
            }
        }
        http::Response::from_parts(parts, ())
    }
}

/// An encoded `google.rpc.Status { code, message, details: [RetryInfo { retry_delay: secs }] }`,
/// written by hand: the message is fixed and tiny, and this crate carries no protobuf runtime.
fn retry_status(code: u32, message: &str, secs: u64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut duration = vec![0x08];
    varint(&mut duration, secs);
    let mut retry_info = Vec::new();
    field(&mut retry_info, 0x0a, &duration);
    let mut any = Vec::new();
    field(&mut any, 0x0a, b"type.googleapis.com/google.rpc.RetryInfo");
    field(&mut any, 0x12, &retry_info);
    let mut status = vec![0x08];
    varint(&mut status, u64::from(code));
    field(&mut status, 0x12, message.as_bytes());
    field(&mut status, 0x1a, &any);
    status
}

/// `grpc-message` encoding (gRPC over HTTP/2): bytes outside printable ASCII, and `%`, are
/// percent-encoded.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A problem response with a fresh request id (also in `X-Request-Id`), for answers made outside
/// the proxy lifecycle, such as the admin plane's.
pub fn standalone_problem(k: &ProblemKind, detail: &str) -> http::Response<Bytes> {
    let id = crate::headers::new_request_id();
    let mut res = problem_response(k, detail, id.to_str().unwrap_or_default());
    res.headers_mut().insert(crate::headers::X_REQUEST_ID.clone(), id);
    res
}

/// Builds a problem+json response.
pub fn problem_response(k: &ProblemKind, detail: &str, request_id: &str) -> http::Response<Bytes> {
    problem_with_members(k, detail, request_id, &[])
}

/// A problem+json response whose type and title are made at run time, with extension members
/// of any JSON shape (a gRPC status's `details`, the closest bindings): the one writer of
/// problem bodies, which every other form goes through.
pub fn problem_json(
    status: StatusCode,
    type_uri: &str,
    title: &str,
    detail: &str,
    request_id: &str,
    members: serde_json::Value,
) -> http::Response<Bytes> {
    let mut body = serde_json::json!({
        "type": type_uri,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    if let (Some(b), serde_json::Value::Object(m)) = (body.as_object_mut(), members) {
        b.extend(m);
    }
    let mut res = http::Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A problem+json response with extension members, such as `reason`, a short stable code for
/// machines (`expired`, `bad_signature`, `missing_credentials`, …), or the refusing `policy`.
fn problem_with_members(
    k: &ProblemKind,
    detail: &str,
    request_id: &str,
    members: &[(&str, &str)],
) -> http::Response<Bytes> {
    let members: serde_json::Map<String, serde_json::Value> =
        members.iter().map(|(n, v)| ((*n).to_owned(), serde_json::Value::String((*v).into()))).collect();
    problem_json(k.status, k.type_uri, k.title, detail, request_id, serde_json::Value::Object(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant.
    fn all_errors() -> Vec<GatewayError> {
        vec![
            GatewayError::NoRoute { method: "GET".into(), path: "/x".into() },
            GatewayError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/x".into(),
                allow: "GET, POST".into(),
            },
            GatewayError::BadRequest("bad Host header".into()),
            GatewayError::BodyTooLarge { limit: 10 },
            GatewayError::HeadersTooLarge { size: 100, limit: 10 },
            GatewayError::NoHealthyTarget { upstream: "u".into() },
            GatewayError::UpstreamFailed { upstream: "u".into(), reason: "connection refused" },
            GatewayError::UpstreamTimeout {
                upstream: "u".into(),
                timeout: "1s".into(),
                key: "timeouts.request",
            },
            GatewayError::Unauthenticated {
                challenges: vec!["Bearer realm=\"bridgehead\"".into(), "ApiKey realm=\"bridgehead\"".into()],
                reason: "missing_credentials",
                detail: "no credentials".into(),
            },
            GatewayError::InsufficientScope {
                bearer: true,
                authenticator: "a".into(),
                missing: "orders.write".into(),
                required: "orders.read orders.write".into(),
            },
            GatewayError::AuthUnavailable { authenticator: "a".into(), detail: "no keys".into() },
            GatewayError::UpstreamCredentials { upstream: "u".into() },
            GatewayError::QuotaExceeded {
                policy: "hourly".into(),
                rate: "3/3600s".into(),
                retry_after: 1200,
                headers: Box::default(),
            },
            GatewayError::RateLimitUnavailable { route: "r".into() },
            GatewayError::IdempotencyKeyMissing,
            GatewayError::IdempotencyKeyMalformed("bad".into()),
            GatewayError::IdempotencyInFlight,
            GatewayError::IdempotencyMismatch,
            GatewayError::IdempotencyUnavailable { route: "r".into() },
            GatewayError::IdempotencyBodyTooLarge { limit: 16 },
            GatewayError::Busy,
            GatewayError::CircuitOpen { upstream: "u".into(), retry_after: 9 },
            GatewayError::UpstreamRateLimited {
                upstream: "u".into(),
                reason: "queue full",
                retry_after: Some(3),
            },
            GatewayError::InvalidPath(bridgehead_config::canonical::PathError::AboveRoot),
            GatewayError::IdempotencyUnsupported,
        ]
    }

    #[test]
    fn every_error_renders_a_grpc_status_for_grpc_clients() {
        use grpc_code::*;
        let codes = [
            UNIMPLEMENTED,
            UNIMPLEMENTED,
            INTERNAL,
            RESOURCE_EXHAUSTED,
            RESOURCE_EXHAUSTED,
            UNAVAILABLE,
            UNAVAILABLE,
            DEADLINE_EXCEEDED,
            UNAUTHENTICATED,
            PERMISSION_DENIED,
            UNAVAILABLE,
            UNAVAILABLE,
            RESOURCE_EXHAUSTED,
            UNAVAILABLE,
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
            ABORTED,
            INVALID_ARGUMENT,
            UNAVAILABLE,
            RESOURCE_EXHAUSTED,
            UNAVAILABLE,
            UNAVAILABLE,
            UNAVAILABLE,
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ];
        let errors = all_errors();
        assert_eq!(errors.len(), codes.len());
        for (e, code) in errors.iter().zip(codes) {
            let res = e.to_grpc_response("rid-1");
            assert_eq!(res.status(), StatusCode::OK, "{e:?}: gRPC errors travel in a 200");
            let h = res.headers();
            assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
            assert_eq!(h["grpc-status"], code.to_string().as_str(), "{e:?}");
            let message = h["grpc-message"].to_str().unwrap();
            assert!(!message.is_empty() && !message.contains('\n'), "{e:?}");
            assert!(h.get(header::CACHE_CONTROL).is_none());
        }
        let quota = &errors[12];
        assert_eq!(quota.to_grpc_response("r").headers()[header::RETRY_AFTER], "1200");
        // google.rpc.Status { code: 8, message, details: [RetryInfo { retry_delay: 1200s }] }
        use base64::Engine as _;
        let bin =
            quota.to_grpc_response("r").headers()["grpc-status-details-bin"].to_str().unwrap().to_owned();
        let status = base64::engine::general_purpose::STANDARD_NO_PAD.decode(bin).unwrap();
        assert_eq!(&status[..2], &[0x08, 8]);
        let tail: &[u8] = &[0x12, 0x05, 0x0a, 0x03, 0x08, 0xb0, 0x09];
        assert!(status.ends_with(tail), "{status:?}");
        assert!(status.windows(40).any(|w| w == b"type.googleapis.com/google.rpc.RetryInfo"));
        assert_eq!(grpc_message("50% über"), "50%25 %C3%BCber");
    }

    #[test]
    fn every_error_renders_a_complete_problem() {
        let errors = all_errors();
        let statuses = [
            404, 405, 400, 413, 431, 503, 502, 504, 401, 403, 503, 503, 429, 503, 400, 400, 409, 422, 503,
            413, 503, 503, 503, 400, 400,
        ];
        assert_eq!(errors.len(), statuses.len());
        for (e, status) in errors.iter().zip(statuses) {
            let res = e.to_response("rid-1");
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
            let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
            for key in ["type", "title", "status", "detail", "request_id"] {
                assert!(v.get(key).is_some(), "{e:?} lacks {key}");
            }
            assert_eq!(v["status"], status);
            assert_eq!(v["request_id"], "rid-1");
        }
        let res = errors[1].to_response("r");
        assert_eq!(res.headers()[header::ALLOW], "GET, POST");
        let res = errors[8].to_response("r");
        let challenges: Vec<_> = res.headers().get_all(header::WWW_AUTHENTICATE).iter().collect();
        assert_eq!(challenges.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["reason"], "missing_credentials");
        let retry_after =
            |i: usize| errors[i].to_response("r").headers()[header::RETRY_AFTER].to_str().unwrap().to_owned();
        assert_eq!(
            (retry_after(12), retry_after(16), retry_after(20), retry_after(21), retry_after(22)),
            ("1200".into(), "1".into(), "1".into(), "9".into(), "3".into())
        );
        let v: serde_json::Value = serde_json::from_slice(errors[12].to_response("r").body()).unwrap();
        assert_eq!(v["policy"], "hourly");
        let res = errors[9].to_response("r");
        let c = res.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"orders.read orders.write\""),
            "{c}"
        );
    }
}
