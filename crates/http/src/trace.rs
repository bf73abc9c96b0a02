//! Traces of requests: the W3C Trace Context headers (`traceparent`, `tracestate`), the
//! sampler, and the spans one request records.
//!
//! A [`Trace`] is made once per request when `telemetry.traces` is on (and never when it is
//! off: the data path holds an `Option` and does nothing else). It records finished spans in a
//! plain `Vec`, with times taken from one wall-clock anchor and the monotonic clock, and hands
//! them over to a [`SpanSink`] in one call when the request is over; the exporter
//! (`bridgehead-telemetry`) encodes and sends them off the request path.
//!
//! Written here rather than taken from the OpenTelemetry SDK: its spans cost an allocation per
//! attribute and a context object per span, its batch processor keeps the count of dropped
//! spans to itself, and its propagator parses future `traceparent` versions differently from
//! the specification's positional rule. What a gateway needs is small: ids, the two headers,
//! a ratio sampler, and records.
//!
//! Rules (W3C Trace Context, level 2):
//! - `traceparent` is lowercase hex: version, trace id (not all zero), parent id (not all
//!   zero), flags. Version `ff` is invalid; version `00` is exactly 55 characters; a higher
//!   version is read by position (and must be 55 characters or go on with `-`), then sent on
//!   as `00`. The sampled flag and the random-trace-id flag are kept, the other bits are sent
//!   as zero; a trace the gateway starts has a random id and says so.
//! - `tracestate` is read only with a valid `traceparent`. Repeated fields are one list
//!   joined with `,`; a list with more than 32 members, a duplicate key or a malformed member
//!   is dropped whole. It is sent on as received, trimmed to 512 characters by dropping whole
//!   members (those over 128 characters first, then from the right).
//! - An invalid `traceparent` starts a new trace.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A 16-byte trace id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..);
            if id != 0 {
                return TraceId(id.to_be_bytes());
            }
        }
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..);
            if id != 0 {
                return SpanId(id.to_be_bytes());
            }
        }
    }
}

/// Lowercase hex of `bytes` (at most 16) to `f`, without allocating.
fn write_hex(f: &mut std::fmt::Formatter<'_>, bytes: &[u8]) -> std::fmt::Result {
    let mut buf = [0u8; 32];
    let out = &mut buf[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).map_err(|_| std::fmt::Error)?;
    f.write_str(std::str::from_utf8(out).map_err(|_| std::fmt::Error)?)
}

/// Lowercase hex, 32 characters.
impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Lowercase hex, 16 characters.
impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex(f, &self.0)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Lowercase hex into `out` (uppercase is invalid in `traceparent`).
fn unhex(text: &[u8], out: &mut [u8]) -> bool {
    if text.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return false,
        }
    }
    true
}

/// The trace context a request came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    /// The caller says the trace id is random (level 2 flag `0x02`).
    pub random: bool,
    /// `tracestate`, checked and trimmed; `None` when absent or invalid.
    pub state: Option<HeaderValue>,
}

/// Reads the W3C trace context of a request; `None` when `traceparent` is absent or invalid.
pub fn parse(headers: &HeaderMap) -> Option<Parent> {
    let mut all = headers.get_all(&TRACEPARENT).iter();
    let value = all.next()?;
    if all.next().is_some() {
        // Two traceparents: no way to tell which one is meant.
        return None;
    }
    let (trace_id, span_id, flags) = traceparent(value.as_bytes())?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & SAMPLED != 0,
        random: flags & RANDOM != 0,
        state: tracestate(headers),
    })
}

/// The sampled flag of `traceparent`.
const SAMPLED: u8 = 0x01;
/// The random-trace-id flag (level 2).
const RANDOM: u8 = 0x02;

/// `traceparent`: trace id, parent id, flags.
fn traceparent(v: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    if v.len() < 55 {
        return None;
    }
    let mut version = [0u8; 1];
    if !unhex(&v[0..2], &mut version) || version[0] == 0xff || v[2] != b'-' {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may go on after a `-`.
    if v.len() > 55 && (version[0] == 0 || v[55] != b'-') {
        return None;
    }
    let (mut trace, mut span, mut flags) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    if !unhex(&v[3..35], &mut trace) || v[35] != b'-' || !unhex(&v[36..52], &mut span) || v[52] != b'-' {
        return None;
    }
    if !unhex(&v[53..55], &mut flags) || trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((TraceId(trace), SpanId(span), flags[0]))
}

/// The most members a `tracestate` list may have.
const MAX_MEMBERS: usize = 32;
/// What is sent on at most; longer lists lose whole members.
const MAX_STATE_LEN: usize = 512;

/// The longest `tracestate` read (32 members of a 256-character key and value, with room for
/// spaces): a longer one is invalid, and reading stops there.
const MAX_STATE_READ: usize = 20 * 1024;

/// `tracestate`, checked and trimmed; `None` when absent, empty or invalid. Reading stops at
/// the 33rd member or past [`MAX_STATE_READ`] bytes, whatever the header holds.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut members: Vec<&str> = Vec::with_capacity(4);
    let mut read = 0;
    for value in headers.get_all(&TRACESTATE) {
        read += value.len();
        if read > MAX_STATE_READ {
            return None;
        }
        let text = value.to_str().ok()?;
        for member in text.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            if members.len() == MAX_MEMBERS {
                return None;
            }
            let (key, val) = member.split_once('=')?;
            if !state_key(key)
                || !state_value(val)
                || members.iter().any(|m| m.split('=').next() == Some(key))
            {
                return None;
            }
            members.push(member);
        }
    }
    if members.is_empty() {
        return None;
    }
    let len = |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    if len(&members) > MAX_STATE_LEN {
        members.retain(|m| m.len() <= 128);
        while len(&members) > MAX_STATE_LEN {
            members.pop();
        }
    }
    HeaderValue::from_str(&members.join(",")).ok().filter(|_| !members.is_empty())
}

/// A `tracestate` key: `simple-key` or `tenant@system`, lowercase.
fn state_key(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit && b[0].is_ascii_digit()))
            && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c))
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

/// A `tracestate` value: printable ASCII but `,` and `=`, not ending in a space.
fn state_value(val: &str) -> bool {
    let b = val.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// The value of `traceparent` for a span: version 00, 55 characters, one allocation.
pub fn traceparent_value(trace_id: TraceId, span_id: SpanId, sampled: bool, random: bool) -> HeaderValue {
    let mut out = [b'-'; 55];
    out[..2].copy_from_slice(b"00");
    let flags = (u8::from(sampled) * SAMPLED) | (u8::from(random) * RANDOM);
    for (at, bytes) in [(3, &trace_id.0[..]), (36, &span_id.0[..]), (53, &[flags][..])] {
        hex::encode_to_slice(bytes, &mut out[at..at + 2 * bytes.len()]).expect("sized to fit");
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

/// Which requests are recorded.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// `sample_ratio` × 2⁶³.
    threshold: u64,
    /// A request with a trace context is recorded when its caller recorded it, whatever the
    /// ratio.
    parent_based: bool,
}

impl Sampler {
    pub fn new(ratio: f64, parent_based: bool) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Sampler { threshold: (ratio * (1u64 << 63) as f64) as u64, parent_based }
    }

    /// Whether a trace is recorded: the parent's decision when `parent_based`, else the ratio
    /// applied to the trace id (the same decision on every hop that uses this rule).
    pub fn sample(&self, trace_id: TraceId, parent: Option<&Parent>) -> bool {
        if let Some(p) = parent
            && self.parent_based
        {
            return p.sampled;
        }
        let low = u64::from_be_bytes(trace_id.0[8..16].try_into().expect("8 bytes"));
        (low >> 1) < self.threshold
    }
}

/// The kind of a span (OTLP `Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
}

/// A span's status (OTLP `Status.StatusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Unset = 0,
    Error = 2,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Shared(Arc<str>),
    /// A header's value (the request id): shared, written out as text.
    Header(HeaderValue),
    /// An address, written out as text when exported.
    Ip(std::net::IpAddr),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<Arc<str>> for Value {
    fn from(s: Arc<str>) -> Self {
        Value::Shared(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// `http.request.method`: one of the methods of RFC 9110 and PATCH, else `_OTHER` (so a
/// client cannot make up values).
pub fn method_value(m: &http::Method) -> Value {
    use http::Method as M;
    let known = [M::GET, M::HEAD, M::POST, M::PUT, M::DELETE, M::CONNECT, M::OPTIONS, M::TRACE, M::PATCH];
    Value::Str(Cow::Borrowed(if known.contains(m) {
        // The known methods' names are static strings already.
        match *m {
            M::GET => "GET",
            M::HEAD => "HEAD",
            M::POST => "POST",
            M::PUT => "PUT",
            M::DELETE => "DELETE",
            M::CONNECT => "CONNECT",
            M::OPTIONS => "OPTIONS",
            M::TRACE => "TRACE",
            _ => "PATCH",
        }
    } else {
        "_OTHER"
    }))
}

/// The most bytes of a string attribute made from what a client sent (a path): longer ones
/// are cut, so that a span stays small whatever the request.
pub const MAX_ATTRIBUTE: usize = 1024;

/// `s` cut to [`MAX_ATTRIBUTE`] bytes, at a character boundary.
pub fn bounded(mut s: String) -> String {
    if s.len() > MAX_ATTRIBUTE {
        let mut end = MAX_ATTRIBUTE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Attributes, keyed by their semantic-convention names.
pub type Attributes = Vec<(&'static str, Value)>;

/// A finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    /// Unix time in nanoseconds.
    pub start: u64,
    pub end: u64,
    pub status: Status,
    /// Why the status is an error, when it is.
    pub message: Option<String>,
    pub attributes: Attributes,
}

/// A trace's spans, handed over when its request is over.
#[derive(Debug)]
pub struct Finished {
    pub trace_id: TraceId,
    /// The caller's `tracestate`, recorded on the spans of this trace.
    pub state: Option<HeaderValue>,
    pub spans: Vec<SpanRecord>,
}

/// Where finished traces go: the exporter's queue. Never blocks; a full queue drops and
/// counts.
pub trait SpanSink: Send + Sync {
    fn submit(&self, trace: Finished);
}

/// What starts a trace: the sampler and where its spans go.
#[derive(Clone)]
pub struct Tracer {
    pub sampler: Sampler,
    pub sink: Arc<dyn SpanSink>,
}

impl Tracer {
    /// The trace of a request with these headers: its caller's, or a new one.
    pub fn start(&self, headers: &HeaderMap) -> Trace {
        let parent = parse(headers);
        let trace_id = parent.as_ref().map_or_else(TraceId::random, |p| p.trace_id);
        let sampled = self.sampler.sample(trace_id, parent.as_ref());
        Trace::new(trace_id, parent, sampled, Some(self.sink.clone()))
    }

    /// A new trace with no caller (a background task: a webhook delivery).
    pub fn root(&self) -> Trace {
        let trace_id = TraceId::random();
        let sampled = self.sampler.sample(trace_id, None);
        Trace::new(trace_id, None, sampled, Some(self.sink.clone()))
    }
}

/// The ids a request's trace passes on: what a fetch made on the request's behalf (a JWKS, an
/// introspection, an OAuth 2.0 token) sends as `traceparent`.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub trace_id: TraceId,
    /// The span a fetch made now is a child of: the request span, or the phase under way.
    pub span_id: SpanId,
    pub sampled: bool,
    pub random: bool,
}

tokio::task_local! {
    static CURRENT: std::cell::Cell<Context>;
}

/// Runs `f` with `ctx` as the current trace context (see [`current_traceparent`]).
pub async fn within<F: Future>(ctx: Context, f: F) -> F::Output {
    CURRENT.scope(std::cell::Cell::new(ctx), f).await
}

/// Makes `span` the parent of fetches from now on (a phase that may fetch: authenticate);
/// returns the span it replaced, to put back with [`set_current_span`] when the phase is over.
pub fn set_current_span(span: SpanId) -> Option<SpanId> {
    CURRENT
        .try_with(|c| {
            let mut ctx = c.get();
            let previous = ctx.span_id;
            ctx.span_id = span;
            c.set(ctx);
            previous
        })
        .ok()
}

/// `traceparent` for a request made on behalf of the current request, if it is traced.
pub fn current_traceparent() -> Option<HeaderValue> {
    CURRENT
        .try_with(|c| {
            let c = c.get();
            traceparent_value(c.trace_id, c.span_id, c.sampled, c.random)
        })
        .ok()
}

/// The trace of one request (or one background task): its ids, and its finished spans until
/// it is submitted.
pub struct Trace {
    pub trace_id: TraceId,
    /// The span of this request as a whole (the server span), parent of the others.
    pub span_id: SpanId,
    /// The caller's span, when it sent a trace context.
    pub parent: Option<SpanId>,
    pub sampled: bool,
    /// The trace id is random (the level 2 flag): true for a trace the gateway starts.
    pub random: bool,
    /// The caller's `tracestate`, sent on unchanged.
    pub state: Option<HeaderValue>,
    anchor: Instant,
    /// Unix nanoseconds at `anchor`.
    anchor_unix: u64,
    spans: Vec<SpanRecord>,
    sink: Option<Arc<dyn SpanSink>>,
}

impl Trace {
    fn new(
        trace_id: TraceId,
        parent: Option<Parent>,
        sampled: bool,
        sink: Option<Arc<dyn SpanSink>>,
    ) -> Self {
        let anchor_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let (parent, state, random) = match parent {
            Some(p) => (Some(p.span_id), p.state, p.random),
            None => (None, None, true),
        };
        Trace {
            trace_id,
            span_id: SpanId::random(),
            parent,
            sampled,
            random,
            state,
            anchor: Instant::now(),
            anchor_unix,
            spans: if sampled { Vec::with_capacity(8) } else { Vec::new() },
            sink: sink.filter(|_| sampled),
        }
    }

    /// A trace that continues a stored context (a webhook delivery of an event whose intake
    /// was traced): the stored span is the parent.
    pub fn continued(tracer: &Tracer, stored: &HeaderValue) -> Trace {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT.clone(), stored.clone());
        tracer.start(&headers)
    }

    /// The ids fetches made on this request's behalf pass on (its request span as parent).
    pub fn context(&self) -> Context {
        Context { trace_id: self.trace_id, span_id: self.span_id, sampled: self.sampled, random: self.random }
    }

    /// Adds an attribute to the last span recorded (learned after it ended: the wait before
    /// the next try).
    pub fn annotate_last(&mut self, key: &'static str, value: Value) {
        if let Some(s) = self.spans.last_mut() {
            s.attributes.push((key, value));
        }
    }

    /// Marks the last span recorded as failed, with `error.type` and a message.
    pub fn fail_last(&mut self, error_type: String, message: String) {
        if let Some(s) = self.spans.last_mut() {
            s.status = Status::Error;
            s.message = Some(message);
            s.attributes.push(("error.type", Value::from(error_type)));
        }
    }

    /// Now, in Unix nanoseconds on this trace's clock.
    pub fn now(&self) -> u64 {
        self.anchor_unix + self.anchor.elapsed().as_nanos() as u64
    }

    /// `traceparent` naming `span` of this trace as the parent.
    pub fn traceparent(&self, span: SpanId) -> HeaderValue {
        traceparent_value(self.trace_id, span, self.sampled, self.random)
    }

    /// Sets `traceparent` (for `span`) and the caller's `tracestate` on an outgoing request,
    /// replacing whatever the request carried.
    pub fn inject(&self, span: SpanId, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT.clone(), self.traceparent(span));
        match &self.state {
            Some(s) => headers.insert(TRACESTATE.clone(), s.clone()),
            None => headers.remove(&TRACESTATE),
        };
    }

    /// Records a finished child span of the request span, from `start` until now. A trace
    /// that is not sampled records nothing.
    pub fn record(&mut self, name: &'static str, kind: Kind, start: u64, attributes: Attributes) -> SpanId {
        self.record_as(SpanId::random(), name, kind, start, attributes)
    }

    /// [`Self::record`] for a span whose id went out already (in a `traceparent`).
    pub fn record_as(
        &mut self,
        span_id: SpanId,
        name: &'static str,
        kind: Kind,
        start: u64,
        attributes: Attributes,
    ) -> SpanId {
        if self.sampled {
            let end = self.now();
            self.spans.push(SpanRecord {
                span_id,
                parent: Some(self.span_id),
                name: Cow::Borrowed(name),
                kind,
                start,
                end,
                status: Status::Unset,
                message: None,
                attributes,
            });
        }
        span_id
    }

    /// Records a span made by the caller (with its own id, parent and times).
    pub fn push(&mut self, span: SpanRecord) {
        if self.sampled {
            self.spans.push(span);
        }
    }

    /// Ends the trace with its request span, from the trace's start until now, and hands
    /// every span to the sink.
    pub fn finish(mut self, name: Cow<'static, str>, kind: Kind, status: Status, attributes: Attributes) {
        let Some(sink) = self.sink.take() else { return };
        let end = self.now();
        self.spans.push(SpanRecord {
            span_id: self.span_id,
            parent: self.parent,
            name,
            kind,
            start: self.anchor_unix,
            end,
            status,
            message: None,
            attributes,
        });
        sink.submit(Finished { trace_id: self.trace_id, state: self.state, spans: self.spans });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse(&headers(&[("traceparent", TP)])).unwrap();
        assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.span_id.to_string(), "b7ad6b7169203331");
        assert!(p.sampled);
        assert_eq!(p.state, None);
        let unsampled = TP.replace("-01", "-00");
        assert!(!parse(&headers(&[("traceparent", &unsampled)])).unwrap().sampled);
        // Other flag bits are ignored.
        let flags = TP.replace("-01", "-ff");
        assert!(parse(&headers(&[("traceparent", &flags)])).unwrap().sampled);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let bad = [
            TP.to_uppercase(),
            TP.replacen("00-", "ff-", 1),
            TP.replace("0af7651916cd43dd8448eb211c80319c", "00000000000000000000000000000000"),
            TP.replace("b7ad6b7169203331", "0000000000000000"),
            format!("{TP}-extra"),
            TP[..54].to_owned(),
            TP.replace('-', "_"),
            TP.replacen("-01", "-0g", 1),
            format!(" {TP}"),
        ];
        for v in &bad {
            assert_eq!(parse(&headers(&[("traceparent", v)])), None, "{v}");
        }
        assert_eq!(parse(&headers(&[("traceparent", TP), ("traceparent", TP)])), None);
        assert_eq!(parse(&HeaderMap::new()), None);
    }

    #[test]
    fn later_versions_are_read_by_position() {
        let v = TP.replacen("00-", "cc-", 1);
        assert!(parse(&headers(&[("traceparent", &v)])).is_some());
        let longer = format!("{v}-what-comes-next");
        let p = parse(&headers(&[("traceparent", &longer)])).unwrap();
        assert_eq!(p.span_id.to_string(), "b7ad6b7169203331");
        let glued = format!("{v}x");
        assert_eq!(parse(&headers(&[("traceparent", &glued)])), None);
        // Sent on as version 00.
        assert_eq!(traceparent_value(p.trace_id, p.span_id, p.sampled, p.random), TP);
        // The random flag (level 2) is read and passed on; other bits are not.
        let random = parse(&headers(&[("traceparent", &TP.replace("-01", "-fb"))])).unwrap();
        assert!(random.sampled && random.random);
        assert_eq!(
            traceparent_value(random.trace_id, random.span_id, random.sampled, random.random),
            TP.replace("-01", "-03")
        );
    }

    #[test]
    fn tracestate_is_joined_checked_and_trimmed() {
        let p =
            parse(&headers(&[("traceparent", TP), ("tracestate", "a=1, b=2"), ("tracestate", "c@vendor=x")]))
                .unwrap();
        assert_eq!(p.state.unwrap(), "a=1,b=2,c@vendor=x");
        for bad in ["A=1", "a=1,a=2", "a", "a=1,=2", "a=x,y", "a=1 =", "a=b=c"] {
            let p = parse(&headers(&[("traceparent", TP), ("tracestate", bad)])).unwrap();
            assert_eq!(p.state, None, "{bad}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let p = parse(&headers(&[("traceparent", TP), ("tracestate", &many.join(","))])).unwrap();
        assert_eq!(p.state, None);
        // Over 512 characters: the long member goes first, then members from the right.
        let long = format!("big={}", "x".repeat(200));
        let mut list = vec!["first=1".to_owned(), long];
        list.extend((0..30).map(|i| format!("k{i}={}", "v".repeat(12))));
        let p = parse(&headers(&[("traceparent", TP), ("tracestate", &list.join(","))])).unwrap();
        let state = p.state.unwrap();
        let state = state.to_str().unwrap();
        assert!(state.len() <= 512 && state.starts_with("first=1,k0=") && !state.contains("big="), "{state}");
        // Without a valid traceparent it is not read.
        assert_eq!(parse(&headers(&[("tracestate", "a=1")])), None);
    }

    #[test]
    fn huge_tracestates_are_refused_without_reading_them_all() {
        // 20,000 distinct members: refused at the 33rd, not compared with each other.
        let many: Vec<String> = (0..20_000).map(|i| format!("k{i}=v")).collect();
        let p = parse(&headers(&[("traceparent", TP), ("tracestate", &many.join(","))])).unwrap();
        assert_eq!(p.state, None);
        // Over the length any valid list can have, across fields: refused.
        let long = format!("a={}", "x".repeat(250));
        let fields: Vec<(&'static str, &str)> = (0..90).map(|_| ("tracestate", long.as_str())).collect();
        let mut all = vec![("traceparent", TP)];
        all.extend(fields);
        assert_eq!(parse(&headers(&all)).unwrap().state, None);
        // Valid but for its length (empty members are allowed): refused for the length alone.
        let padded = format!("a=1{}", ",".repeat(25_000));
        assert_eq!(parse(&headers(&[("traceparent", TP), ("tracestate", &padded)])).unwrap().state, None);
        let thirty_one: Vec<String> = (0..31).map(|i| format!("k{i}=v")).collect();
        let p = parse(&headers(&[("traceparent", TP), ("tracestate", &thirty_one.join(", "))])).unwrap();
        assert_eq!(p.state.unwrap(), thirty_one.join(","));
        assert_eq!(bounded("é".repeat(600)).len(), 1024);
        assert_eq!(bounded("ab".to_owned()), "ab");
    }

    #[test]
    fn the_sampler_follows_the_parent_or_the_ratio() {
        let id = |low: u64| {
            let mut b = [1u8; 16];
            b[8..].copy_from_slice(&low.to_be_bytes());
            TraceId(b)
        };
        let all = Sampler::new(1.0, false);
        let none = Sampler::new(0.0, false);
        let half = Sampler::new(0.5, false);
        assert!(all.sample(id(u64::MAX), None));
        assert!(!none.sample(id(0), None));
        assert!(half.sample(id(u64::MAX / 2 - 10), None));
        assert!(!half.sample(id(u64::MAX / 2 + 10), None));
        let parent = |sampled| Parent {
            trace_id: id(u64::MAX),
            span_id: SpanId([1; 8]),
            sampled,
            random: false,
            state: None,
        };
        assert!(Sampler::new(0.0, true).sample(id(u64::MAX), Some(&parent(true))));
        assert!(!Sampler::new(1.0, true).sample(id(0), Some(&parent(false))));
        assert!(!Sampler::new(0.0, false).sample(id(0), Some(&parent(true))));
        // About the ratio over random ids.
        let hits = (0..10_000).filter(|_| Sampler::new(0.1, false).sample(TraceId::random(), None)).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }

    #[derive(Default)]
    struct Keep(std::sync::Mutex<Vec<Finished>>);

    impl SpanSink for Keep {
        fn submit(&self, trace: Finished) {
            self.0.lock().unwrap().push(trace);
        }
    }

    #[test]
    fn a_trace_continues_its_caller_and_records_its_spans() {
        let keep = Arc::new(Keep::default());
        let tracer = Tracer { sampler: Sampler::new(0.0, true), sink: keep.clone() };
        let mut trace = tracer.start(&headers(&[("traceparent", TP), ("tracestate", "a=1")]));
        assert_eq!(trace.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        let start = trace.now();
        let child = trace.record("authenticate", Kind::Internal, start, vec![("k", Value::Int(1))]);
        let mut out = HeaderMap::new();
        out.insert("tracestate", HeaderValue::from_static("evil=1"));
        trace.inject(child, &mut out);
        assert_eq!(out["traceparent"], format!("00-{}-{}-01", trace.trace_id, child));
        assert_eq!(out["tracestate"], "a=1");
        let span_id = trace.span_id;
        trace.finish("GET /x".into(), Kind::Server, Status::Unset, vec![]);
        let got = keep.0.lock().unwrap();
        let spans = &got[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].parent, Some(span_id));
        assert_eq!(spans[1].parent.unwrap().to_string(), "b7ad6b7169203331");
        assert!(spans[1].start <= spans[0].start && spans[0].end <= spans[1].end);
        drop(got);
        // Not sampled: nothing reaches the sink, the ids still propagate.
        let trace = tracer.start(&headers(&[("traceparent", &TP.replace("-01", "-00"))]));
        assert!(!trace.sampled);
        assert!(trace.traceparent(trace.span_id).to_str().unwrap().ends_with("-00"));
        trace.finish("GET /x".into(), Kind::Server, Status::Unset, vec![]);
        assert_eq!(keep.0.lock().unwrap().len(), 1);
    }
}
