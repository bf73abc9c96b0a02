//! The trace exporter: finished traces from the data path go into a bounded queue, and a
//! thread of its own batches them and sends them to an OpenTelemetry collector with OTLP, over
//! HTTP (`POST {endpoint}/v1/traces`, protobuf) or gRPC (`TraceService/Export`).
//!
//! ```text
//! request over ─▶ Trace::finish ─▶ Exporter::submit ─▶ queue (≤ max_queue spans) ─▶ exporter thread
//!                  (one call,        (never blocks;                                   batch: max_batch spans
//!                   every span)       full: dropped, counted)                         or every `interval`
//!                                                                                     ─▶ OTLP request, 3 tries
//! ```
//!
//! Nothing of the export runs on the request path: a request pays for its spans' records and
//! one channel send. The thread runs a current-thread tokio runtime, so the export requests
//! go through the same upstream transport, TLS and connection pool as proxied requests do (a
//! one-target upstream built from `telemetry.traces`), without taking time from the data-plane
//! workers. Spans the queue has no room for, and spans of a batch the collector refused or
//! could not take after three tries, are counted in `bridgehead_telemetry_spans_total`.
//! [`Exporter::flush`] sends what is queued, for shutdown.
//!
//! The messages are in [`otlp`].

pub mod otlp;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bridgehead_config::{
    BuildError, Http2Settings, HumanDuration, LoadBalancing, LoadedConfig, OtlpCompression, OtlpProtocol,
    PassiveHealth, Target, Traces, Upstream as UpstreamConfig, UpstreamProtocol, UpstreamTimeouts,
};
use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{Metrics, ResultLabels};
use bridgehead_http::trace::{Finished, Sampler, SpanSink, Tracer};
use bridgehead_upstream::classify::Classify;
use bridgehead_upstream::send::{Outgoing, Payload, Sender};
use bridgehead_upstream::{Carryover, Upstream};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http_body_util::BodyExt as _;
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

/// The gRPC method of an OTLP trace export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Tries per batch (the first and two retries).
const TRIES: u32 = 3;
/// The longest wait before a retry, whatever `Retry-After` asks.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// What the queue carries.
enum Msg {
    Trace(Finished),
    /// Send everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// The exporter: the sink of every trace, and the handle of its thread.
pub struct Exporter {
    tx: mpsc::UnboundedSender<Msg>,
    /// Spans in the queue, at most `max_queue`.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    counts: Counts,
}

/// `bridgehead_telemetry_spans_total`, by result.
#[derive(Clone)]
struct Counts {
    exported: Counter,
    queue_full: Counter,
    export_failed: Counter,
}

impl Counts {
    /// The counters, each at 0 from the start.
    fn new(metrics: &Metrics) -> Self {
        let get = |result| metrics.telemetry_spans.get_or_create(&ResultLabels { result }).clone();
        Counts {
            exported: get("exported"),
            queue_full: get("dropped_queue_full"),
            export_failed: get("dropped_export_failed"),
        }
    }
}

impl SpanSink for Exporter {
    fn submit(&self, trace: Finished) {
        let n = trace.spans.len();
        if self.queued.fetch_add(n, Relaxed) + n > self.max_queue {
            self.queued.fetch_sub(n, Relaxed);
            self.counts.queue_full.inc_by(n as u64);
            return;
        }
        if self.tx.send(Msg::Trace(trace)).is_err() {
            self.queued.fetch_sub(n, Relaxed);
            self.counts.queue_full.inc_by(n as u64);
        }
    }
}

impl Exporter {
    /// Starts the exporter thread for `traces` (from `loaded`, for TLS files). Fails when the
    /// collector's TLS settings are unusable.
    pub fn start(traces: &Traces, loaded: &LoadedConfig, metrics: &Metrics) -> Result<Arc<Self>, BuildError> {
        let counts = Counts::new(metrics);
        let send = Send::build(traces, loaded)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Arc::new(Exporter {
            tx,
            queued: queued.clone(),
            max_queue: traces.max_queue,
            counts: counts.clone(),
        });
        let batcher = Batcher {
            rx,
            queued,
            max_batch: traces.max_batch,
            interval: traces.interval.get(),
            send,
            counts,
            resource: otlp::resource(),
        };
        std::thread::Builder::new()
            .name("bridgehead-telemetry".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                match rt {
                    Ok(rt) => rt.block_on(batcher.run()),
                    Err(e) => {
                        tracing::error!(error = %e, "the trace exporter could not start; no traces are sent");
                    }
                }
            })
            .map_err(|e| {
                BuildError::new("telemetry.traces", format!("cannot start the exporter thread: {e}"))
            })?;
        Ok(exporter)
    }

    /// A tracer that sends to this exporter, sampling as `traces` says.
    pub fn tracer(self: &Arc<Self>, traces: &Traces) -> Tracer {
        Tracer { sampler: Sampler::new(traces.sample_ratio, traces.parent_based), sink: self.clone() }
    }

    /// Sends everything queued now, waiting at most `within`; whether it all went out in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }
}

/// The exporter thread's side of the queue.
struct Batcher {
    rx: mpsc::UnboundedReceiver<Msg>,
    queued: Arc<AtomicUsize>,
    max_batch: usize,
    interval: Duration,
    send: Send,
    counts: Counts,
    resource: otlp::Resource,
}

impl Batcher {
    async fn run(mut self) {
        let mut batch: Vec<Finished> = Vec::new();
        let mut spans = 0;
        // When the batch under way goes whether it is full or not: `interval` after its first
        // trace was taken.
        let mut deadline = None;
        loop {
            let msg = match deadline {
                None => match self.rx.recv().await {
                    Some(msg) => msg,
                    None => return,
                },
                Some(at) => match tokio::time::timeout_at(at, self.rx.recv()).await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return self.send_all(&mut batch).await,
                    Err(_) => {
                        self.send_all(&mut batch).await;
                        (spans, deadline) = (0, None);
                        continue;
                    }
                },
            };
            match msg {
                Msg::Trace(t) => {
                    self.queued.fetch_sub(t.spans.len(), Relaxed);
                    spans += t.spans.len();
                    batch.push(t);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.interval);
                    // Full batches go now; the rest waits for the interval.
                    while spans >= self.max_batch {
                        let (now, rest) = split_batch(std::mem::take(&mut batch), self.max_batch);
                        batch = rest;
                        spans = batch.iter().map(|t| t.spans.len()).sum();
                        self.export(now).await;
                    }
                    if batch.is_empty() {
                        deadline = None;
                    }
                }
                Msg::Flush(reply) => {
                    // The queue keeps order: everything submitted before the flush is in the
                    // batch now.
                    self.send_all(&mut batch).await;
                    (spans, deadline) = (0, None);
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Sends every trace of `batch`, in batches of at most `max_batch` spans.
    async fn send_all(&self, batch: &mut Vec<Finished>) {
        while !batch.is_empty() {
            let (now, rest) = split_batch(std::mem::take(batch), self.max_batch);
            *batch = rest;
            self.export(now).await;
        }
    }

    /// Sends one batch, with retries; counts its spans as exported or dropped.
    async fn export(&self, batch: Vec<Finished>) {
        let n = batch.iter().map(|t| t.spans.len()).sum();
        if n == 0 {
            return;
        }
        let body = otlp::request(&self.resource, &batch).encode_to_vec();
        drop(batch);
        let body = match self.send.encode(body) {
            Ok(b) => b,
            Err(e) => {
                warn(&format!("could not compress an export: {e}"));
                self.counts.export_failed.inc_by(n as u64);
                return;
            }
        };
        let mut attempt = 1;
        loop {
            match self.send.once(body.clone()).await {
                Ok(rejected) => {
                    let rejected = rejected.min(n);
                    self.counts.exported.inc_by((n - rejected) as u64);
                    self.counts.export_failed.inc_by(rejected as u64);
                    return;
                }
                Err(Failed { retry: Some(wait), reason }) if attempt < TRIES => {
                    tracing::debug!(reason, attempt, "trace export failed; trying again");
                    // 400 ms, then 800 ms, each ±50% so that gateways do not retry in step.
                    let backoff = Duration::from_millis(200 << attempt).mul_f64(0.5 + fastrand::f64());
                    tokio::time::sleep(wait.unwrap_or(backoff).min(MAX_BACKOFF)).await;
                    attempt += 1;
                }
                Err(Failed { reason, .. }) => {
                    warn(&reason);
                    self.counts.export_failed.inc_by(n as u64);
                    return;
                }
            }
        }
    }
}

fn warn(reason: &str) {
    static FAILED: LogBudget = LogBudget::new();
    if let Some(left_out) = FAILED.admit() {
        tracing::warn!(reason, left_out, "trace export failed; its spans are dropped");
    }
}

/// The first traces of `batch` up to `max` spans (at least one trace), and the rest.
fn split_batch(mut batch: Vec<Finished>, max: usize) -> (Vec<Finished>, Vec<Finished>) {
    let mut spans = 0;
    let mut cut = 0;
    for t in &batch {
        if cut > 0 && spans + t.spans.len() > max {
            break;
        }
        spans += t.spans.len();
        cut += 1;
    }
    let rest = batch.split_off(cut);
    (batch, rest)
}

/// Why an export failed, and whether (and when) to try again.
struct Failed {
    /// `Some` when another try may succeed, with the collector's `Retry-After` if it sent one.
    retry: Option<Option<Duration>>,
    reason: String,
}

/// How export requests are made: the collector as a one-target upstream.
struct Send {
    upstream: Arc<Upstream>,
    /// The private metrics of that upstream (its failures are counted as spans dropped, not
    /// as a proxied upstream's).
    metrics: Metrics,
    protocol: OtlpProtocol,
    path: PathAndQuery,
    headers: HeaderMap,
    gzip: bool,
    /// `telemetry.traces.timeout`, for the answer's body as for its head.
    timeout: Duration,
}

impl Send {
    fn build(t: &Traces, loaded: &LoadedConfig) -> Result<Send, BuildError> {
        let key = "telemetry.traces";
        let uri = bridgehead_config::check_collector_url(&t.endpoint, t.protocol)
            .map_err(|e| BuildError::new(format!("{key}.endpoint"), e))?;
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().map(http::uri::Authority::as_str).unwrap_or_default();
        let url = format!("{}://{authority}", if https { "https" } else { "http" });
        let (protocol, path) = match t.protocol {
            OtlpProtocol::HttpProtobuf => {
                let prefix = uri.path().trim_end_matches('/');
                (
                    if https { UpstreamProtocol::Auto } else { UpstreamProtocol::Http1 },
                    format!("{prefix}/v1/traces"),
                )
            }
            OtlpProtocol::Grpc => {
                (if https { UpstreamProtocol::H2 } else { UpstreamProtocol::H2c }, GRPC_EXPORT.to_owned())
            }
        };
        let path = PathAndQuery::try_from(path)
            .map_err(|e| BuildError::new(format!("{key}.endpoint"), format!("not a usable path: {e}")))?;
        let cfg = UpstreamConfig {
            targets: vec![Target { url, weight: 1 }],
            load_balancing: LoadBalancing::RoundRobin,
            protocol,
            timeouts: UpstreamTimeouts {
                connect: HumanDuration(t.timeout.get().min(Duration::from_secs(5))),
                request: t.timeout,
                ..UpstreamTimeouts::default()
            },
            // The exporter's own retries decide; a refused batch must not eject the only target.
            passive_health: PassiveHealth { consecutive_failures: 0, ..PassiveHealth::default() },
            tls: t.tls.clone(),
            http2: Http2Settings::default(),
            health_check: None,
            credentials: None,
            retry: None,
            circuit_breaker: None,
            rate_limit: None,
            sticky: None,
        };
        let metrics = Metrics::default();
        let upstream = Upstream::build("telemetry", &cfg, &Carryover::default(), loaded, &metrics, None)
            .map_err(|e| BuildError::new(e.key.replacen("upstreams.telemetry", key, 1), e.reason))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &t.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::new(format!("{key}.headers.{name}"), "is not a valid header name")
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                BuildError::new(
                    format!("{key}.headers.{name}"),
                    "has a value that is not a valid header value",
                )
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let gzip = t.compression == OtlpCompression::Gzip;
        match t.protocol {
            OtlpProtocol::HttpProtobuf => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
                if gzip {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
            }
            OtlpProtocol::Grpc => {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                if gzip {
                    headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
                }
                let timeout = format!("{}m", t.timeout.get().as_millis().clamp(1, 99_999_999));
                headers.insert("grpc-timeout", HeaderValue::from_str(&timeout).expect("digits"));
            }
        }
        Ok(Send {
            upstream: Arc::new(upstream),
            metrics,
            protocol: t.protocol,
            path,
            headers,
            gzip,
            timeout: t.timeout.get(),
        })
    }

    /// The request body: the message, compressed if asked, framed for gRPC.
    fn encode(&self, message: Vec<u8>) -> std::io::Result<Bytes> {
        let message = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&message)?;
            gz.finish()?
        } else {
            message
        };
        Ok(match self.protocol {
            OtlpProtocol::HttpProtobuf => Bytes::from(message),
            OtlpProtocol::Grpc => {
                let mut framed = Vec::with_capacity(message.len() + 5);
                framed.push(u8::from(self.gzip));
                framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                framed.extend_from_slice(&message);
                Bytes::from(framed)
            }
        })
    }

    /// One export request; the number of spans the collector says it rejected.
    async fn once(&self, body: Bytes) -> Result<usize, Failed> {
        let out = Outgoing {
            method: http::Method::POST,
            path_and_query: self.path.clone(),
            headers: self.headers.clone(),
            body: Payload::Replayable(body),
        };
        let no_switch = |_: &HeaderMap| false;
        let sender = Sender {
            upstream: &self.upstream,
            metrics: &self.metrics,
            sticky: None,
            retry: None,
            idempotent: true,
            classify: Classify::Http,
            accept_switch: &no_switch,
            stats: None,
            max_body: u64::MAX,
        };
        // One deadline for the answer's head and body.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let res = sender.send(out, &mut ()).await.map_err(|e| Failed {
            retry: Some(None),
            reason: format!("the collector could not be reached: {e}"),
        })?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let grpc_head = bridgehead_http::grpc::grpc_status(res.headers());
        // The answer's body (and a gRPC answer's trailers) within the export's timeout too: a
        // collector that sends a head and stalls must not hold the exporter.
        let read = http_body_util::Limited::new(res.into_body(), MAX_ANSWER).collect();
        let (data, trailers) = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(c)) => {
                let trailers = c.trailers().cloned();
                (c.to_bytes(), trailers)
            }
            // An HTTP collector that took the batch and said much more about it than an
            // export answer holds: taken.
            Ok(Err(_)) if self.protocol == OtlpProtocol::HttpProtobuf && status.is_success() => return Ok(0),
            Ok(Err(_)) => {
                return Err(Failed {
                    retry: Some(None),
                    reason: "the collector's answer broke off".to_owned(),
                });
            }
            Err(_) => {
                return Err(Failed {
                    retry: Some(None),
                    reason: "the collector's answer did not end within telemetry.traces.timeout".to_owned(),
                });
            }
        };
        match self.protocol {
            OtlpProtocol::HttpProtobuf => {
                if status.is_success() {
                    return Ok(rejected(&data));
                }
                let retry = matches!(status.as_u16(), 429 | 502 | 503 | 504).then_some(retry_after);
                Err(Failed { retry, reason: format!("the collector answered HTTP {}", status.as_u16()) })
            }
            OtlpProtocol::Grpc => {
                let code = trailers.as_ref().and_then(bridgehead_http::grpc::grpc_status).or(grpc_head);
                match code {
                    Some(0) => Ok(data.get(5..).map_or(0, rejected)),
                    // What OTLP says may succeed later: CANCELLED, DEADLINE_EXCEEDED, ABORTED,
                    // OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS. RESOURCE_EXHAUSTED only with retry
                    // information, which this exporter does not read: not retried.
                    Some(c @ (1 | 4 | 10 | 11 | 14 | 15)) => Err(Failed {
                        retry: Some(None),
                        reason: format!("the collector answered gRPC status {c}"),
                    }),
                    Some(c) => {
                        Err(Failed { retry: None, reason: format!("the collector answered gRPC status {c}") })
                    }
                    // A proxy in front of the collector, overloaded or restarting.
                    None => Err(Failed {
                        retry: matches!(status.as_u16(), 429 | 502 | 503 | 504).then_some(retry_after),
                        reason: format!(
                            "the collector answered HTTP {} without a gRPC status",
                            status.as_u16()
                        ),
                    }),
                }
            }
        }
    }
}

/// The spans a collector's answer says it rejected (a partial success).
fn rejected(answer: &[u8]) -> usize {
    otlp::ExportTraceServiceResponse::decode(answer).ok().and_then(|r| r.partial_success).map_or(0, |p| {
        if p.rejected_spans > 0 {
            warn(&format!("the collector rejected {} spans: {}", p.rejected_spans, p.error_message));
        }
        p.rejected_spans.max(0) as usize
    })
}

#[cfg(test)]
mod tests;
