//! The OTLP messages an export needs, with the field numbers of
//! `opentelemetry/proto/{collector/trace/v1/trace_service,trace/v1/trace,common/v1/common,resource/v1/resource}.proto`.
//!
//! Declared here with prost's derive rather than taken from `opentelemetry-proto`: that crate's
//! trace types compile the OpenTelemetry SDK with them, for a dozen messages of which an
//! exporter writes a subset. Fields the gateway never sets (events, links, dropped counts) are
//! left out; protobuf readers skip nothing they expect, since absent fields are their default.

use bridgehead_http::trace::{Finished, SpanRecord, Value};

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

pub fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Shared(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(n) => any_value::Value::IntValue(*n),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

fn string(key: &str, value: &str) -> KeyValue {
    key_value(key, &Value::from(value.to_owned()))
}

/// The resource every span comes from: this gateway.
pub fn resource() -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut attributes = vec![
        string("service.name", "bridgehead"),
        string("service.version", env!("CARGO_PKG_VERSION")),
        string("telemetry.sdk.name", "bridgehead"),
        string("telemetry.sdk.language", "rust"),
        string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    if !host.trim().is_empty() {
        attributes.push(string("host.name", host.trim()));
    }
    Resource { attributes }
}

/// One span as OTLP. `local` lists the span ids recorded in this trace, to tell a local
/// parent from the caller's.
fn span(trace: &Finished, s: &SpanRecord) -> Span {
    let remote = s.parent.is_some_and(|p| !trace.spans.iter().any(|o| o.span_id == p));
    Span {
        trace_id: trace.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: trace.state.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name.to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end.max(s.start),
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: (s.status as i32 != 0 || s.message.is_some())
            .then(|| Status { message: s.message.clone().unwrap_or_default(), code: s.status as i32 }),
        flags: SAMPLED | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 },
    }
}

/// An export request for the spans of `traces`.
pub fn request(resource: &Resource, traces: &[Finished]) -> ExportTraceServiceRequest {
    let spans = traces.iter().flat_map(|t| t.spans.iter().map(move |s| span(t, s))).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bridgehead".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
}
