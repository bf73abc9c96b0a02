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
    /// `/__mock/requests` with a method other than GET or DELETE.
    #[error("/__mock/requests answers GET (list) and DELETE (clear)")]
    AdminMethod,
}

impl Rejection {
    fn status(&self) -> StatusCode {
        match self {
            Rejection::BadKnob { .. } | Rejection::MissingWebSocketKey => StatusCode::BAD_REQUEST,
            Rejection::AdminMethod => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Rejection::BadKnob { .. } => "invalid mock header",
            Rejection::MissingWebSocketKey => "invalid websocket upgrade",
            Rejection::AdminMethod => "method not allowed",
        }
    }

    pub(crate) fn into_response(self) -> Response<MockBody> {
        let status = self.status();
        let mut response = problem(status, problem_body(status, self.title(), &self.to_string()));
        if self == Rejection::AdminMethod {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, DELETE"));
        }
        response
    }
}

/// The JSON of a problem body.
pub(crate) fn problem_body(status: StatusCode, title: &str, detail: &str) -> Bytes {
    serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    })
    .to_string()
    .into()
}

/// A problem response with a body from [`problem_body`].
pub(crate) fn problem(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
