//! The OTLP messages an export needs, with the field numbers of
//! `opentelemetry/proto/{collector/trace/v1/trace_service,trace/v1/trace,common/v1/common,resource/v1/resource}.proto`.
//!
//! Exports are written straight from the span records ([`encode_request`]): a hand-written
//! protobuf writer, because building the message types first (as prost would encode them) cost
//! two allocations per attribute and most of the exporter's time. The message types below,
//! declared with prost's derive rather than taken from `opentelemetry-proto` (whose trace types
//! compile the OpenTelemetry SDK with them), read a collector's answer and check the writer in
//! the tests. Fields the gateway never sets (events, links, dropped counts) are left out.

use std::io::Write as _;

use bridgehead_http::trace::{self, Finished, SpanRecord, Value};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportTracePartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTracePartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

/// `SpanFlags`: the W3C flags (sampled) and "whether the parent is remote is known" (bit 8),
/// with "the parent is remote" (bit 9).
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

// The protobuf wire format, written directly: varints, fixed-width numbers, and
// length-delimited fields whose length is put in front once their content is written.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire_type)));
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A message field: its content written by `f`, then its length put in front of it.
fn nested(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, 2);
    let at = out.len();
    f(out);
    let mut prefix = [0u8; 10];
    let mut n = out.len() - at;
    let mut i = 0;
    while n >= 0x80 {
        prefix[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    prefix[i] = n as u8;
    out.splice(at..at, prefix[..=i].iter().copied());
}

/// How many bytes `v` takes as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string = 1 | bool = 2 | int64 = 3 }`.
/// Both lengths are known before anything is written: no moving bytes afterwards.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &Value) {
    enum Payload<'a> {
        Text(&'a [u8]),
        Number(u64),
    }
    let mut ip = [0u8; 48];
    let (any_field, payload) = match v {
        Value::Str(s) => (1, Payload::Text(s.as_bytes())),
        Value::Shared(s) => (1, Payload::Text(s.as_bytes())),
        Value::Header(h) => (1, Payload::Text(h.to_str().unwrap_or_default().as_bytes())),
        Value::Ip(addr) => {
            let mut cursor = std::io::Cursor::new(&mut ip[..]);
            let _ = write!(cursor, "{addr}");
            let n = cursor.position() as usize;
            (1, Payload::Text(&ip[..n]))
        }
        Value::Bool(b) => (2, Payload::Number(u64::from(*b))),
        Value::Int(n) => (3, Payload::Number(*n as u64)),
    };
    let any_len = 1 + match payload {
        Payload::Text(t) => varint_len(t.len() as u64) + t.len(),
        Payload::Number(n) => varint_len(n),
    };
    let kv_len = 1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(any_len as u64) + any_len;
    key(out, field, 2);
    varint(out, kv_len as u64);
    bytes(out, 1, k.as_bytes());
    key(out, 2, 2);
    varint(out, any_len as u64);
    match payload {
        Payload::Text(t) => bytes(out, any_field, t),
        Payload::Number(n) => {
            key(out, any_field, 0);
            varint(out, n);
        }
    }
}

/// The resource every span comes from, this gateway: the content of a `Resource` message.
pub fn resource() -> Vec<u8> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut out = Vec::new();
    let mut attribute = |k: &str, v: &str| key_value(&mut out, 1, k, &Value::from(v.to_owned()));
    attribute("service.name", "bridgehead");
    attribute("service.version", env!("CARGO_PKG_VERSION"));
    attribute("telemetry.sdk.name", "bridgehead");
    attribute("telemetry.sdk.language", "rust");
    attribute("telemetry.sdk.version", env!("CARGO_PKG_VERSION"));
    if !host.trim().is_empty() {
        attribute("host.name", host.trim());
    }
    out
}

/// One span (`Span` message content).
fn span(out: &mut Vec<u8>, trace: &Finished, s: &SpanRecord) {
    let remote = s.parent.is_some_and(|p| !trace.spans.iter().any(|o| o.span_id == p));
    bytes(out, 1, &trace.trace_id.0);
    bytes(out, 2, &s.span_id.0);
    if let Some(state) = trace.state.as_ref().and_then(|v| v.to_str().ok()) {
        bytes(out, 3, state.as_bytes());
    }
    if let Some(p) = s.parent {
        bytes(out, 4, &p.0);
    }
    bytes(out, 5, s.name.as_bytes());
    key(out, 6, 0);
    varint(out, s.kind as u64);
    fixed64(out, 7, s.start);
    fixed64(out, 8, s.end.max(s.start));
    for (k, v) in &s.attributes {
        key_value(out, 9, k, v);
    }
    if s.status != trace::Status::Unset || s.message.is_some() {
        nested(out, 15, |out| {
            if let Some(m) = &s.message {
                bytes(out, 2, m.as_bytes());
            }
            key(out, 3, 0);
            varint(out, s.status as u64);
        });
    }
    fixed32(out, 16, SAMPLED | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 });
}

/// An `ExportTraceServiceRequest` for the spans of `traces`, from `resource` (see
/// [`resource`]), written straight into one buffer.
pub fn encode_request(resource: &[u8], traces: &[Finished]) -> Vec<u8> {
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let mut out = Vec::with_capacity(resource.len() + 64 + spans * 640);
    nested(&mut out, 1, |out| {
        bytes(out, 1, resource);
        nested(out, 2, |out| {
            nested(out, 1, |out| {
                bytes(out, 1, b"bridgehead");
                bytes(out, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            // Each span is written to a scratch buffer, then copied after its length.
            let mut scratch = Vec::with_capacity(2048);
            for t in traces {
                for s in &t.spans {
                    scratch.clear();
                    span(&mut scratch, t, s);
                    bytes(out, 2, &scratch);
                }
            }
        });
    });
    out
}
