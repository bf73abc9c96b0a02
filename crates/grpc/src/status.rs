//! gRPC status for HTTP clients: the code's name, its HTTP status (the table grpc-gateway and
//! Google APIs use), and the problem+json body that carries the code, the message and the
//! decoded `google.rpc.Status` details of `grpc-status-details-bin`.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};

use crate::bundled;

/// The canonical code names, by number.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A code's name; `UNKNOWN` for a number outside the table.
pub fn name(code: u32) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: u32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 => StatusCode::from_u16(499).expect("499 is a valid status"),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC status of an HTTP answer that carries none (`doc/http-grpc-status-mapping.md`):
/// 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429, 502, 503
/// and 504 UNAVAILABLE, anything else UNKNOWN.
pub fn from_http(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `google.rpc.Status`, as it travels in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// The status of a finished call.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u32,
    pub message: String,
    /// Each detail as JSON (`{"@type": …, fields…}`), decoded with the service's schema or
    /// the bundled `google.rpc` types; an unknown type keeps its bytes as base64 `value`.
    pub details: Vec<Value>,
    /// `RetryInfo.retry_delay`, in whole seconds (rounded up), for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Status {
    /// The status in a header block (trailers, or a trailers-only head), if it has one.
    pub fn from_headers(h: &HeaderMap, pool: &DescriptorPool) -> Option<Status> {
        let code = bridgehead_http::grpc::grpc_status(h)?;
        // A message that does not decode is kept as sent, never dropped.
        let message = h
            .get("grpc-message")
            .map(|v| {
                let raw = String::from_utf8_lossy(v.as_bytes());
                crate::template::percent_decode(&raw, false).unwrap_or_else(|| raw.into_owned())
            })
            .unwrap_or_default();
        let mut s = Status { code, message, details: Vec::new(), retry_after: None };
        if let Some(bin) = h.get("grpc-status-details-bin")
            && let Some(bytes) = decode_bin(bin.as_bytes())
            && let Ok(rpc) = RpcStatus::decode(bytes.as_slice())
        {
            for any in rpc.details {
                if any.type_url.ends_with("/google.rpc.RetryInfo")
                    && let Some(d) = retry_delay(&any.value)
                {
                    s.retry_after = Some(d);
                }
                s.details.push(detail_json(&any, pool));
            }
        }
        Some(s)
    }

    /// A status the gateway makes itself (a broken stream, an unreadable answer).
    pub fn new(code: u32, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), details: Vec::new(), retry_after: None }
    }

    /// The JSON of this status: for a problem body, and as the last line of a broken stream.
    pub fn json(&self, request_id: &str) -> Value {
        serde_json::from_slice(self.to_response(request_id).body()).unwrap_or(Value::Null)
    }

    /// The problem+json answer for this status.
    pub fn to_response(&self, request_id: &str) -> http::Response<Bytes> {
        let detail = if self.message.is_empty() {
            format!("the gRPC call ended with {}", name(self.code))
        } else {
            self.message.clone()
        };
        let members = json!({
            "grpc_code": name(self.code),
            "grpc_status": self.code,
            "grpc_message": self.message,
            "details": self.details,
        });
        let mut res = bridgehead_http::problem::problem_json(
            http_status(self.code),
            "urn:bridgehead:problem:grpc-status",
            &format!("gRPC {}", name(self.code)),
            &detail,
            request_id,
            members,
        );
        if let Some(secs) = self.retry_after.filter(|_| matches!(self.code, 8 | 14)) {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// `-bin` metadata is base64, padded or not.
pub fn decode_bin(v: &[u8]) -> Option<Vec<u8>> {
    let e = base64::engine::general_purpose::STANDARD_NO_PAD;
    let trimmed: Vec<u8> = v.iter().copied().filter(|b| *b != b'=').collect();
    e.decode(trimmed).ok()
}

/// One detail as JSON.
fn detail_json(any: &prost_types::Any, pool: &DescriptorPool) -> Value {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool.get_message_by_name(type_name).or_else(|| bundled::pool().get_message_by_name(type_name));
    let decoded = desc.and_then(|d| DynamicMessage::decode(d, any.value.as_slice()).ok());
    let json = decoded.and_then(|m| {
        let opts = prost_reflect::SerializeOptions::new();
        let mut out = Vec::new();
        m.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts).ok()?;
        serde_json::from_slice::<Value>(&out).ok()
    });
    match json {
        Some(Value::Object(mut fields)) => {
            let mut v = serde_json::Map::new();
            v.insert("@type".into(), Value::String(any.type_url.clone()));
            v.append(&mut fields);
            Value::Object(v)
        }
        // A well-known type with a scalar JSON form, or an unknown type.
        Some(other) => json!({ "@type": any.type_url, "value": other }),
        None => json!({
            "@type": any.type_url,
            "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
        }),
    }
}

/// `RetryInfo.retry_delay` in whole seconds, rounded up.
fn retry_delay(value: &[u8]) -> Option<u64> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<prost_types::Duration>,
    }
    let d = RetryInfo::decode(value).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    Some(secs + u64::from(d.nanos > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_without_a_status_map_as_the_grpc_spec_says() {
        let got: Vec<u32> =
            [400, 401, 403, 404, 429, 502, 503, 504, 500, 418].iter().map(|s| from_http(*s)).collect();
        assert_eq!(got, [13, 16, 7, 12, 14, 14, 14, 14, 2, 2]);
    }

    #[test]
    fn every_code_maps_to_its_http_status() {
        let want = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];
        for (code, status) in want.iter().enumerate() {
            assert_eq!(http_status(code as u32).as_u16(), *status, "{}", name(code as u32));
        }
        assert_eq!(http_status(99).as_u16(), 500);
        assert_eq!(name(99), "UNKNOWN");
    }

    #[test]
    fn details_are_decoded_to_json_with_their_type() {
        let bad = bundled::pool().get_message_by_name("google.rpc.BadRequest").unwrap();
        let detail = crate::mapping::from_json(
            &bad,
            json!({"fieldViolations": [{"field": "id", "description": "must not be empty"}]}),
            &crate::mapping::JsonOptions::default(),
        )
        .unwrap();
        let retry = prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: vec![0x0a, 0x04, 0x08, 0x02, 0x10, 0x01],
        };
        let rpc = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![
                prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                    value: detail.encode_to_vec(),
                },
                retry,
                prost_types::Any { type_url: "type.googleapis.com/acme.Secret".into(), value: vec![1, 2] },
            ],
        };
        let bin = base64::engine::general_purpose::STANDARD_NO_PAD.encode(rpc.encode_to_vec());
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("8"));
        h.insert("grpc-message", HeaderValue::from_static("slow%20down"));
        h.insert("grpc-status-details-bin", HeaderValue::from_str(&bin).unwrap());
        let s = Status::from_headers(&h, bundled::pool()).unwrap();
        assert_eq!(s.message, "slow down");
        assert_eq!(s.retry_after, Some(3));
        assert_eq!(
            s.details,
            [
                json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "id", "description": "must not be empty"}]}),
                json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.000000001s"}),
                json!({"@type": "type.googleapis.com/acme.Secret", "value": "AQI="}),
            ]
        );
        let res = s.to_response("rid");
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        let body: Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["grpc_code"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["detail"], "slow down");
        assert_eq!(body["request_id"], "rid");
    }
}
