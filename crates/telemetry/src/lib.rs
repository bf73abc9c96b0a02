//! The trace exporter: finished traces from the data path wait in a bounded queue, and a
//! thread of its own batches them and sends them to an OpenTelemetry collector with OTLP, over
//! HTTP (`POST {endpoint}/v1/traces`, protobuf) or gRPC (`TraceService/Export`).
//!
//! ```text
//! request over ─▶ Trace::finish ─▶ Exporter::submit ─▶ the worker's shard ─▶ exporter thread, every `interval`
//!                  (one call,        (never blocks;     (≤ max_queue spans     (or at max_batch spans queued):
//!                   every span)       full: dropped,     in all shards)         every shard taken, encoded,
//!                                     counted)                                  sent in batches, 3 tries each
//! ```
//!
//! Nothing of the export runs on the request path: a request pays for its spans' records and
//! one push under its worker's own (uncontended) lock. It does not wake the exporter: the
//! thread takes the shards on its own schedule, every `interval`, and is woken only when
//! `max_batch` spans wait (the access log's writer works the same way). A wake-up per request
//! would cost two context switches per request on a busy core. The thread runs a
//! current-thread tokio runtime, so export requests go through the same upstream transport,
//! TLS and connection pool as proxied requests (a one-target upstream built from
//! `telemetry.traces`), without taking time from the data-plane workers. Spans the queue has no
//! room for, and spans of a batch the collector refused or could not take after three tries,
//! are counted in `bridgehead_telemetry_spans_total`. [`Exporter::flush`] sends what is queued,
//! for shutdown. The thread ends when the last handle is gone.
//!
//! The protobuf is written directly from the span records ([`otlp::encode_request`]), without
//! building the message types first: one buffer per batch, nothing allocated per attribute.

pub mod otlp;

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
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
use tokio::sync::{Notify, oneshot};

/// The gRPC method of an OTLP trace export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Tries per batch (the first and two retries).
const TRIES: u32 = 3;
/// The longest wait before a retry, whatever `Retry-After` asks.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;
/// Queue shards: one per data-plane worker (more workers share).
const SHARDS: usize = 16;

/// The exporter: the sink of every trace. The exporter thread holds it too, and ends when it
/// is the last holder.
pub struct Exporter {
    /// Finished traces, by the worker that finished them.
    shards: Box<[Mutex<Vec<Finished>>]>,
    /// Spans in the shards, at most `max_queue`.
    queued: AtomicUsize,
    max_queue: usize,
    max_batch: usize,
    /// Wakes the thread before its interval is over: a full batch waits, or a flush.
    wake: Notify,
    /// Flushes asked for: answered once everything queued before them is sent.
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
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
        let before = self.queued.fetch_add(n, Relaxed);
        if before + n > self.max_queue {
            self.queued.fetch_sub(n, Relaxed);
            self.counts.queue_full.inc_by(n as u64);
            return;
        }
        let shard = &self.shards[bridgehead_http::worker::current(SHARDS)];
        shard.lock().unwrap_or_else(PoisonError::into_inner).push(trace);
        if before < self.max_batch && before + n >= self.max_batch {
            self.wake.notify_one();
        }
    }
}

impl Exporter {
    fn new(traces: &Traces, counts: Counts) -> Self {
        Exporter {
            shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            queued: AtomicUsize::new(0),
            max_queue: traces.max_queue,
            max_batch: traces.max_batch,
            wake: Notify::new(),
            flushes: Mutex::new(Vec::new()),
            counts,
        }
    }

    /// Starts the exporter thread for `traces` (from `loaded`, for TLS files). Fails when the
    /// collector's TLS settings are unusable.
    pub fn start(traces: &Traces, loaded: &LoadedConfig, metrics: &Metrics) -> Result<Arc<Self>, BuildError> {
        let send = Send::build(traces, loaded)?;
        let exporter = Arc::new(Exporter::new(traces, Counts::new(metrics)));
        let batcher = Batcher {
            exporter: exporter.clone(),
            interval: traces.interval.get(),
            send,
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
        self.flushes.lock().unwrap_or_else(PoisonError::into_inner).push(tx);
        self.wake.notify_one();
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }

    /// Every trace in the shards, oldest shard content first.
    fn take_all(&self) -> Vec<Finished> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let mut taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            all.append(&mut taken);
        }
        let spans = all.iter().map(|t| t.spans.len()).sum();
        self.queued.fetch_sub(spans, Relaxed);
        all
    }
}

/// The exporter thread.
struct Batcher {
    exporter: Arc<Exporter>,
    interval: Duration,
    send: Send,
    /// The resource message, encoded once.
    resource: Vec<u8>,
}

impl Batcher {
    async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.exporter.wake.notified() => {}
            }
            // Flushes asked for before the shards are taken: what they wait for is in them.
            let flushes =
                std::mem::take(&mut *self.exporter.flushes.lock().unwrap_or_else(PoisonError::into_inner));
            let last = Arc::strong_count(&self.exporter) == 1;
            let mut all = self.exporter.take_all();
            while !all.is_empty() {
                let (now, rest) = split_batch(all, self.exporter.max_batch);
                all = rest;
                self.export(now).await;
            }
            for f in flushes {
                let _ = f.send(());
            }
            if last {
                // Nobody can submit any more: what was queued went out.
                return;
            }
        }
    }

    /// Sends one batch, with retries; counts its spans as exported or dropped.
    async fn export(&self, batch: Vec<Finished>) {
        let n = batch.iter().map(|t| t.spans.len()).sum();
        if n == 0 {
            return;
        }
        let body = otlp::encode_request(&self.resource, &batch);
        drop(batch);
        let body = match self.send.encode(body) {
            Ok(b) => b,
            Err(e) => {
                warn(&format!("could not compress an export: {e}"));
                self.exporter.counts.export_failed.inc_by(n as u64);
                return;
            }
        };
        let mut attempt = 1;
        loop {
            match self.send.once(body.clone()).await {
                Ok(rejected) => {
                    let rejected = rejected.min(n);
                    self.exporter.counts.exported.inc_by((n - rejected) as u64);
                    self.exporter.counts.export_failed.inc_by(rejected as u64);
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
                    self.exporter.counts.export_failed.inc_by(n as u64);
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
