//! A `soap` route: `POST {prefix}/{Operation}` with JSON becomes a SOAP call to the service's
//! upstream, and its answer JSON again; `GET {prefix}/openapi.json` describes the operations.
//!
//! ```text
//! prepare: operation (404 listing them, 405) ─▶ JSON (400) ─▶ envelope by the XSD (400 naming
//!          the field and the type) ─▶ SOAPAction / content type, UsernameToken
//! respond: the answer read whole (502 past max_response_size) ─▶ output JSON (200), a fault as
//!          problem+json (Client/Sender 422, Server/Receiver 502), anything else 502
//! ```
//!
//! Invariant: nothing is sent upstream for a request that does not fit the schema.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use bridgehead_http::body::ResponseBody;
use bridgehead_http::metrics::Metrics;
use bridgehead_http::problem::{FailedAfterSending, GatewayError, problem_json as problem};
use bridgehead_http::upstream_body::UpstreamBody;
use bridgehead_upstream::classify::Classify;
use bridgehead_upstream::send::{Observer, Outgoing, Payload, Sender};

use crate::envelope::{self, Answer, Fault};
use crate::service::{Loaded, Service};
use crate::wsdl::{Operation, SoapVersion};

/// A SOAP route's backend.
pub struct SoapRoute {
    pub service: Arc<Service>,
    /// `match.path_prefix`, without a trailing `/`.
    pub prefix: String,
    /// The OpenAPI document, made once per loaded WSDL (keyed by its address).
    openapi: std::sync::Mutex<Option<(usize, Bytes)>>,
}

impl SoapRoute {
    pub fn new(service: Arc<Service>, prefix: &str) -> SoapRoute {
        SoapRoute { service, prefix: prefix.trim_end_matches('/').to_owned(), openapi: Default::default() }
    }

    /// The OpenAPI document of `loaded`, made on first use.
    fn openapi(&self, loaded: &Arc<Loaded>) -> Bytes {
        let key = Arc::as_ptr(loaded) as usize;
        let mut cached = self.openapi.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((k, doc)) = cached.as_ref()
            && *k == key
        {
            return doc.clone();
        }
        let doc = crate::openapi::document(&loaded.port, &loaded.mapper, &self.prefix, &self.service.name);
        let doc = Bytes::from(doc.to_string());
        *cached = Some((key, doc.clone()));
        doc
    }
}

/// What a request asks for.
pub enum Step {
    /// Answered here (the OpenAPI document, or a refusal: nothing was sent).
    Answer(Response<Bytes>),
    /// A call to make.
    Call(Prepared),
}

/// A call ready to send.
pub struct Prepared {
    pub operation: Arc<Operation>,
    pub path: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The operation is marked safe: it may be retried.
    pub idempotent: bool,
    loaded: Arc<Loaded>,
}

const TYPE_OPERATION: &str = "urn:bridgehead:problem:soap-operation";
const TYPE_REQUEST: &str = "urn:bridgehead:problem:soap-request";
const TYPE_FAULT: &str = "urn:bridgehead:problem:soap-fault";
const TYPE_ANSWER: &str = "urn:bridgehead:problem:soap-answer";

fn allow(mut res: Response<Bytes>, methods: &'static str) -> Response<Bytes> {
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static(methods));
    res
}

impl SoapRoute {
    /// Reads the request: which operation, and the envelope for its JSON.
    pub fn prepare(&self, method: &Method, path: &str, body: &[u8], request_id: &str) -> Step {
        let Some(loaded) = self.service.current() else {
            return Step::Answer(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:no-healthy-upstream",
                "Service unavailable",
                &format!("the WSDL of SOAP service `{}` is not loaded yet", self.service.name),
                request_id,
                json!({}),
            ));
        };
        let rest = path.strip_prefix(&self.prefix).unwrap_or(path).trim_start_matches('/');
        let names = || loaded.port.operations.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
        if rest == "openapi.json" {
            if *method != Method::GET && *method != Method::HEAD {
                return Step::Answer(allow(method_not_allowed(method, "GET", request_id), "GET, HEAD"));
            }
            let mut res = Response::new(self.openapi(&loaded));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Step::Answer(res);
        }
        let Some(op) = loaded.port.operation(rest).cloned() else {
            return Step::Answer(problem(
                StatusCode::NOT_FOUND,
                TYPE_OPERATION,
                "No such operation",
                &format!(
                    "SOAP service `{}` has no operation `{rest}`; its operations: {} (POST {}/{{Operation}})",
                    self.service.name,
                    names().join(", "),
                    self.prefix
                ),
                request_id,
                json!({ "operations": names() }),
            ));
        };
        if *method != Method::POST {
            return Step::Answer(allow(method_not_allowed(method, "POST", request_id), "POST"));
        }
        let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Step::Answer(problem(
                        StatusCode::BAD_REQUEST,
                        "urn:bridgehead:problem:bad-request",
                        "Bad request",
                        &format!("the body is not JSON: {e}"),
                        request_id,
                        json!({}),
                    ));
                }
            }
        };
        let header = self.service.security.as_ref().map(|t| {
            let mut nonce = [0u8; 16];
            let _ = getrandom::fill(&mut nonce);
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            t.header(op.version, &nonce, &envelope::timestamp(now))
        });
        let text = match envelope::request(&loaded.mapper, &op, &input, header.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                let mut members = json!({ "pointer": e.pointer, "operation": op.name });
                if let Some(x) = &e.expected {
                    members["expected"] = json!(x);
                }
                return Step::Answer(problem(
                    StatusCode::BAD_REQUEST,
                    TYPE_REQUEST,
                    "The JSON does not fit the operation's input",
                    &format!("{}: {}", e.pointer, e.message),
                    request_id,
                    members,
                ));
            }
        };
        let mut headers = HeaderMap::new();
        let ct = HeaderValue::from_str(&op.version.content_type(&op.action))
            .unwrap_or(HeaderValue::from_static("text/xml; charset=utf-8"));
        headers.insert(header::CONTENT_TYPE, ct);
        if op.version == SoapVersion::V11
            && let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", op.action.replace('"', "")))
        {
            headers.insert("soapaction", v);
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/xml, application/soap+xml"));
        let path =
            PathAndQuery::try_from(loaded.path.as_str()).unwrap_or_else(|_| PathAndQuery::from_static("/"));
        Step::Call(Prepared {
            idempotent: self.service.safe.iter().any(|s| *s == op.name),
            operation: op,
            path,
            headers,
            body: Bytes::from(text),
            loaded,
        })
    }

    /// The answer to a call: the output as JSON, a fault as a problem, or 502.
    pub async fn respond(
        &self,
        p: &Prepared,
        res: Response<UpstreamBody>,
        request_id: &str,
    ) -> Response<ResponseBody> {
        let status = res.status();
        // Whether the service may have acted: it answered 2xx (or 500, as SOAP 1.1 faults
        // come), or a gateway in front timed out. A 429, 503 or 401 from a proxy in front did
        // nothing, and leaves an idempotency key free.
        let acted = status.is_success()
            || status == StatusCode::INTERNAL_SERVER_ERROR
            || status == StatusCode::GATEWAY_TIMEOUT;
        let broken = |detail: String| {
            let members = json!({ "operation": p.operation.name, "upstream_status": status.as_u16() });
            let res = problem(
                StatusCode::BAD_GATEWAY,
                TYPE_ANSWER,
                "Bad SOAP answer",
                &detail,
                request_id,
                members,
            );
            let mut res = res.map(ResponseBody::full);
            if acted {
                res.extensions_mut().insert(FailedAfterSending);
            }
            res
        };
        let limit = self.service.max_response;
        let body = match http_body_util::Limited::new(res.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return broken(format!("the answer is larger than max_response_size ({limit} bytes)"));
            }
            Err(e) => return broken(format!("the answer broke off: {e}")),
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return broken(format!("HTTP {}: the answer is not UTF-8 text", status.as_u16()));
        };
        match envelope::response(&p.loaded.mapper, &p.operation, text) {
            Ok(Answer::Output(v)) if status.is_success() => {
                let mut res = Response::new(ResponseBody::full(Bytes::from(v.to_string())));
                res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                res
            }
            Ok(Answer::Output(_)) => {
                broken(format!("HTTP {} with an answer that is not a fault", status.as_u16()))
            }
            Ok(Answer::Fault(f)) => fault(&f, &p.operation.name, request_id).map(ResponseBody::full),
            Err(e) => broken(format!("HTTP {}: {e}", status.as_u16())),
        }
    }
}

fn method_not_allowed(method: &Method, allowed: &str, request_id: &str) -> Response<Bytes> {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "urn:bridgehead:problem:method-not-allowed",
        "Method not allowed",
        &format!("{method} is not allowed here; use {allowed}"),
        request_id,
        json!({}),
    )
}

/// A fault as problem+json: the caller's (Client, Sender) 422, the service's 502.
fn fault(f: &Fault, operation: &str, request_id: &str) -> Response<Bytes> {
    let status = if f.is_client() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_GATEWAY };
    let members = match f.version {
        SoapVersion::V11 => json!({
            "operation": operation,
            "faultcode": f.code,
            "faultstring": f.reason,
            "faultactor": f.actor,
            "fault_detail": f.detail,
        }),
        SoapVersion::V12 => json!({
            "operation": operation,
            "code": f.code,
            "subcodes": f.subcodes,
            "reason": f.reason,
            "role": f.actor,
            "fault_detail": f.detail,
        }),
    };
    let detail = if f.reason.is_empty() { format!("SOAP fault {}", f.code) } else { f.reason.clone() };
    problem(status, TYPE_FAULT, "SOAP fault", &detail, request_id, members)
}

/// Sends a prepared call over the upstream's sender: its targets, TLS, credentials, breakers,
/// and retries for a safe operation.
pub async fn send(
    upstream: &Arc<bridgehead_upstream::Upstream>,
    metrics: &Metrics,
    p: &Prepared,
    headers: HeaderMap,
    observer: &mut dyn Observer,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let out = Outgoing {
        method: Method::POST,
        path_and_query: p.path.clone(),
        headers,
        body: Payload::Replayable(p.body.clone()),
    };
    let accept_switch = |_: &HeaderMap| false;
    let sender = Sender {
        upstream,
        metrics,
        sticky: None,
        retry: if p.idempotent { upstream.retry.as_ref() } else { None },
        idempotent: p.idempotent,
        classify: Classify::Http,
        accept_switch: &accept_switch,
        stats: None,
        max_body: u64::MAX,
    };
    sender.send(out, observer).await
}
