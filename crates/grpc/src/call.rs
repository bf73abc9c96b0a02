//! One gRPC call over an upstream's sender: the request framed, the answer judged as gRPC,
//! and, for a caller that wants it whole, the messages and status read to the end.
//!
//! The gateway's transcoder, the reflection client and `bridgehead grpc` all call through here,
//! so retries, breakers, credentials and the upstream's TLS apply alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response};
use http_body_util::BodyExt as _;
use prost_reflect::DescriptorPool;

use bridgehead_http::metrics::Metrics;
use bridgehead_http::problem::GatewayError;
use bridgehead_http::upstream_body::UpstreamBody;
use bridgehead_upstream::Upstream;
use bridgehead_upstream::classify::Classify;
use bridgehead_upstream::send::{Observer, Outgoing, Payload, Sender};

use crate::frame::{Decoder, FrameError};
use crate::status::Status;

/// The headers of a gRPC request: content type, `te: trailers`, and `grpc-timeout`.
pub fn request_headers(timeout: Option<Duration>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(t) = timeout {
        h.insert("grpc-timeout", grpc_timeout(t));
    }
    h
}

/// `grpc-timeout` for a duration: milliseconds (at most 8 digits, as the spec allows), or
/// seconds beyond that.
pub fn grpc_timeout(t: Duration) -> HeaderValue {
    let ms = t.as_millis().max(1);
    let text = if ms < 100_000_000 { format!("{ms}m") } else { format!("{}S", t.as_secs().min(99_999_999)) };
    HeaderValue::from_str(&text).expect("digits and a unit")
}

/// A `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most 8 digits, then one of `H M S m u
/// n`); `None` when malformed.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Sends one call (`/{service}/{method}`, `body` already framed).
pub async fn send(
    upstream: &Arc<Upstream>,
    metrics: &Metrics,
    path: &str,
    headers: HeaderMap,
    body: Bytes,
    observer: &mut dyn Observer,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let out = Outgoing {
        method: Method::POST,
        path_and_query: PathAndQuery::try_from(path)
            .map_err(|_| GatewayError::BadRequest(format!("`{path}` is not a gRPC method path")))?,
        headers,
        body: Payload::Replayable(body),
    };
    let accept_switch = |_: &HeaderMap| false;
    let sender = Sender {
        upstream,
        metrics,
        sticky: None,
        retry: upstream.retry.as_ref(),
        idempotent: false,
        classify: Classify::Grpc,
        accept_switch: &accept_switch,
        stats: None,
        max_body: u64::MAX,
    };
    sender.send(out, observer).await
}

/// Why an answer is not a gRPC answer the gateway can read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the server answered HTTP {0}, not a gRPC status")]
    NotGrpc(u16),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the answer broke off before its status arrived")]
    Broken,
    #[error("a unary call answered more than one message")]
    TooMany,
}

/// A call read to its end.
#[derive(Debug)]
pub struct Finished {
    /// The response head's headers (metadata).
    pub head: HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: HeaderMap,
    pub status: Status,
}

/// Whether an answer's head is a gRPC answer (HTTP 200 with a gRPC content type).
pub fn check_head(res: &Response<UpstreamBody>) -> Result<(), AnswerError> {
    if res.status() != http::StatusCode::OK
        || !res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        // A trailers-only answer may carry a status with another HTTP status; the status wins.
        if bridgehead_http::grpc::grpc_status(res.headers()).is_none() {
            return Err(AnswerError::NotGrpc(res.status().as_u16()));
        }
    }
    Ok(())
}

/// Reads an answer to its end: every message (each at most `limit` bytes, at most `most` of
/// them) and the status.
pub async fn finish(
    res: Response<UpstreamBody>,
    limit: usize,
    most: usize,
    pool: &DescriptorPool,
) -> Result<Finished, AnswerError> {
    check_head(&res)?;
    let (parts, mut body) = res.into_parts();
    if let Some(status) = Status::from_headers(&parts.headers, pool) {
        return Ok(Finished {
            head: parts.headers.clone(),
            messages: Vec::new(),
            trailers: parts.headers,
            status,
        });
    }
    let mut decoder = Decoder::new(limit);
    let mut messages = Vec::new();
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| AnswerError::Broken)?;
        match frame.into_data() {
            Ok(data) => {
                decoder.push(&data);
                while let Some(m) = decoder.next_message()? {
                    if messages.len() == most {
                        return Err(AnswerError::TooMany);
                    }
                    messages.push(m);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = t;
                }
            }
        }
    }
    decoder.finish()?;
    let status = Status::from_headers(&trailers, pool).ok_or(AnswerError::Broken)?;
    Ok(Finished { head: parts.headers, messages, trailers, status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_parse_by_unit() {
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [&b""[..], b"S", b"123456789S", b"1x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_uses_milliseconds_then_seconds() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
