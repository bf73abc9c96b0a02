//! RFC 9457 problem responses: the mock's rejections, declared as data and rendered here only.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::MockBody;

/// Content type of every problem body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A request the mock refuses to serve as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// An `x-mock-*` header whose value does not parse.
    #[error("header {header} must be {expected}")]
    BadKnob { header: &'static str, expected: &'static str },
    /// A WebSocket upgrade without `Sec-WebSocket-Key`.
    #[error("a websocket upgrade needs a Sec-WebSocket-Key header")]
    MissingWebSocketKey,
    /// An admin path with a method it does not answer.
    #[error("{path} answers {methods}")]
    AdminMethod {
        path: &'static str,
        /// What the path answers, in prose.
        methods: &'static str,
        /// The `Allow` header.
        allow: &'static str,
    },
    /// A path under `/__mock/` that is not an admin path.
    #[error("no admin path {0:?}; there are /__mock/requests and /__mock/faults")]
    NoSuchAdminPath(String),
    /// A `PUT /__mock/faults` body that does not parse or holds a bad value; `field` names the
    /// culprit when one field is.
    #[error("{detail}")]
    BadFaults { field: Option<String>, detail: String },
    /// Over the `--rate-limit` quota.
    #[error("the quota of {limit} requests per {window} is used up; retry in {retry_after}s")]
    RateLimited { limit: u32, window: &'static str, retry_after: u64 },
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::BadKnob { .. } | Rejection::MissingWebSocketKey | Rejection::BadFaults { .. } => {
                StatusCode::BAD_REQUEST
            }
            Rejection::AdminMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::NoSuchAdminPath(_) => StatusCode::NOT_FOUND,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Rejection::BadKnob { .. } => "invalid mock header",
            Rejection::MissingWebSocketKey => "invalid websocket upgrade",
            Rejection::AdminMethod { .. } => "method not allowed",
            Rejection::NoSuchAdminPath(_) => "no such admin path",
            Rejection::BadFaults { .. } => "invalid faults",
            Rejection::RateLimited { .. } => "rate limited",
        }
    }

    pub(crate) fn into_response(self) -> Response<MockBody> {
        let status = self.status();
        let mut body = problem_json(status, self.title(), &self.to_string());
        if let Rejection::BadFaults { field: Some(field), .. } = &self {
            // An RFC 9457 extension member, so a test need not parse the detail.
            body["field"] = field.as_str().into();
        }
        let mut response = problem(status, body.to_string().into());
        if let Rejection::AdminMethod { allow, .. } = self {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

fn problem_json(status: StatusCode, title: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    })
}

/// The JSON of a problem body.
pub(crate) fn problem_body(status: StatusCode, title: &str, detail: &str) -> Bytes {
    problem_json(status, title, detail).to_string().into()
}

/// A problem response with a body from [`problem_body`].
pub(crate) fn problem(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
