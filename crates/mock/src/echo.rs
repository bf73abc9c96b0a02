//! The echo response: the request described back as JSON, or N bytes of `x` when asked.

use std::borrow::Cow;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use serde::ser::{SerializeMap, Serializer};

use crate::body::{MockBody, ReceivedBody};
use crate::knobs::Knobs;

/// How much of a request body the echo keeps; the rest is only counted.
pub(crate) const ECHO_BODY: usize = 1024 * 1024;

/// The echo JSON, serialized straight from the request without copying it.
#[derive(serde::Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: EchoHeaders<'a>,
    body: Cow<'a, str>,
    body_len: u64,
    body_truncated: bool,
}

/// Headers as a JSON object: a repeated header becomes an array of its values, in order.
struct EchoHeaders<'a>(&'a HeaderMap);

impl serde::Serialize for EchoHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let values = self.0.get_all(name);
            let mut iter = values.iter();
            match (iter.next(), iter.next()) {
                (Some(only), None) => map.serialize_entry(name.as_str(), &lossy(only))?,
                _ => {
                    let all: Vec<_> = values.iter().map(lossy).collect();
                    map.serialize_entry(name.as_str(), &all)?;
                }
            }
        }
        map.end()
    }
}

fn lossy(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// The echo response to a request whose body has been read.
pub(crate) fn respond(parts: &Parts, body: &ReceivedBody, knobs: Knobs) -> Response<MockBody> {
    let (content_type, body) = match knobs.body_size {
        Some(len) => ("application/octet-stream", MockBody::fill(len)),
        None => {
            let echo = Echo {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: EchoHeaders(&parts.headers),
                body: String::from_utf8_lossy(&body.head),
                body_len: body.len,
                body_truncated: body.len > body.head.len() as u64,
            };
            let json = serde_json::to_vec(&echo).expect("echo JSON has string keys only");
            ("application/json", MockBody::full(json))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = knobs.status.unwrap_or(StatusCode::OK);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    knobs.add_headers(response.headers_mut());
    response
}
