//! Every metric the gateway exports, defined in one place with its name, help and labels.
//! Code elsewhere records through these fields; `/metrics` encodes the registry.
//!
//! Metrics are process-wide: they survive config reloads.

use std::fmt::Write;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A shared string label value (route, upstream and target names) that clones without allocating.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// An HTTP method label.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MethodLabel(pub http::Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: Name,
    pub method: MethodLabel,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: Name,
    pub target: Name,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub upstream: Name,
    pub target: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Outcomes of a request to an upstream target (`outcome` label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub authenticator: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub authenticator: Name,
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenFetchLabels {
    pub upstream: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub route: Name,
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteResultLabels {
    pub route: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamResultLabels {
    pub upstream: Name,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// 1 to `server.workers` (one worker: 1).
    pub worker: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverResultLabels {
    pub receiver: Name,
    /// `accepted`, `duplicate`, `challenge`, or the refusal reason (`signature`, `schema`, …).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationOutcomeLabels {
    pub destination: Name,
    /// `delivered`, `retry` or `dead`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub route: Name,
    pub service: Name,
    pub method: Name,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The config key that names the file (`server.tls.cert`, `upstreams.billing.tls.ca`).
    pub key: String,
    /// `server` (presented to clients), `client` (presented to upstreams) or `ca` (trusted).
    pub kind: &'static str,
    /// The certificate's subject, RFC 4514, most specific first.
    pub subject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: Name,
}

pub mod outcome {
    /// A response arrived with a status below 500.
    pub const SUCCESS: &str = "success";
    /// A response arrived with a 5xx status.
    pub const HTTP_5XX: &str = "http_5xx";
    pub const CONNECT_ERROR: &str = "connect_error";
    pub const TIMEOUT: &str = "timeout";
    /// The connection failed after it was established (closed early, invalid response).
    pub const ERROR: &str = "error";
    /// A gRPC call failed with a status that blames the server (UNKNOWN, DEADLINE_EXCEEDED,
    /// INTERNAL, UNAVAILABLE, DATA_LOSS), or ended without a status.
    pub const GRPC_ERROR: &str = "grpc_error";
    /// The client went away before a streamed gRPC answer's status arrived.
    pub const CANCELLED: &str = "cancelled";
}

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// A source of the process's allocation count, set by a binary built with a counting allocator
/// (the `alloc-count` feature of the `bridgehead` crate, for `scripts/bench`). Set before the
/// first [`Metrics`] is made; it is then exported as `bridgehead_process_allocations_total`.
static ALLOCATIONS: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Exports `count` as `bridgehead_process_allocations_total` in every [`Metrics`] made from now.
pub fn count_allocations_with(count: fn() -> u64) {
    let _ = ALLOCATIONS.set(count);
}

/// The allocation count, read at scrape time.
#[derive(Debug)]
struct Allocations(fn() -> u64);

impl prometheus_client::encoding::EncodeMetric for Allocations {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&(self.0)(), None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub upstream_healthy: Family<TargetLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub access_log_dropped: Counter,
    pub auth_attempts: Family<AuthLabels, Counter>,
    pub auth_fetches: Family<FetchLabels, Counter>,
    pub upstream_token_fetches: Family<TokenFetchLabels, Counter>,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    pub rate_limit_store_errors: Family<RouteLabels, Counter>,
    pub idempotency: Family<RouteResultLabels, Counter>,
    pub upstream_retries: Family<UpstreamResultLabels, Counter>,
    pub circuit_breaker_state: Family<TargetLabels, Gauge>,
    pub upstream_throttled: Family<UpstreamResultLabels, Counter>,
    pub connections: Family<WorkerLabels, Counter>,
    pub webhook_received: Family<ReceiverResultLabels, Counter>,
    pub webhook_dead_letters_dropped: Family<RouteLabels, Counter>,
    pub webhook_deliveries: Family<DestinationOutcomeLabels, Counter>,
    pub webhook_backlog: Family<DestinationLabels, Gauge>,
    pub webhook_oldest_pending: Family<DestinationLabels, Gauge>,
    pub webhook_published: Family<ResultLabels, Counter>,
    pub webhook_attempt_duration: Family<DestinationLabels, Histogram, fn() -> Histogram>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    pub telemetry_spans: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bridgehead");
        if let Some(count) = ALLOCATIONS.get() {
            registry.register(
                "process_allocations",
                "Heap allocations made by the process (builds with the alloc-count feature only)",
                Allocations(*count),
            );
        }
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request received to response body finished",
            prometheus_client::registry::Unit::Seconds,
            http_duration.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstream targets, by outcome",
            upstream_requests.clone(),
        );
        let upstream_healthy = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "upstream_healthy",
            "1 when the target takes traffic (passes health checks and is not ejected), else 0",
            upstream_healthy.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reload attempts, by result (success, error)",
            config_reloads.clone(),
        );
        // Both results exist from the start so that rate() and alerts work before the first reload.
        for result in ["success", "error"] {
            config_reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because stdout could not keep up",
            access_log_dropped.clone(),
        );
        let auth_attempts = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_attempts",
            "Credentials checked, by authenticator and result (admitted, a refusal reason, or unavailable)",
            auth_attempts.clone(),
        );
        let auth_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "auth_fetches",
            "Fetches made by authenticators (jwks, introspection, apikeys), by result (success, error)",
            auth_fetches.clone(),
        );
        let upstream_token_fetches = Family::<TokenFetchLabels, Counter>::default();
        registry.register(
            "upstream_token_fetches",
            "OAuth 2.0 client-credentials token requests made for upstreams, by result (success, error)",
            upstream_token_fetches.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a route's rate-limit policy",
            rate_limited.clone(),
        );
        let rate_limit_store_errors = Family::<RouteLabels, Counter>::default();
        registry.register(
            "rate_limit_store_errors",
            "Rate-limit checks that could not reach Redis (then on_store_error applies)",
            rate_limit_store_errors.clone(),
        );
        let idempotency = Family::<RouteResultLabels, Counter>::default();
        registry.register(
            "idempotency_requests",
            "Requests with an Idempotency-Key, by result (started, replayed, in_flight, mismatch, released)",
            idempotency.clone(),
        );
        let upstream_retries = Family::<UpstreamResultLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Retries toward upstreams, by result (retried, budget_exhausted)",
            upstream_retries.clone(),
        );
        let circuit_breaker_state = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker of each target: 0 closed, 1 open, 2 half-open",
            circuit_breaker_state.clone(),
        );
        let upstream_throttled = Family::<UpstreamResultLabels, Counter>::default();
        registry.register(
            "upstream_throttled",
            "Requests the outbound throttle delayed (waited) or refused (refused)",
            upstream_throttled.clone(),
        );
        let connections = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "connections_accepted",
            "Client connections accepted on the data listener, by worker (how the kernel spreads them)",
            connections.clone(),
        );
        let webhook_received = Family::<ReceiverResultLabels, Counter>::default();
        registry.register(
            "webhook_received",
            "Webhook deliveries received, by receiver and result (accepted, duplicate, challenge, or the refusal reason)",
            webhook_received.clone(),
        );
        let webhook_dead_letters_dropped = Family::<RouteLabels, Counter>::default();
        registry.register(
            "webhook_dead_letters_dropped",
            "Refused webhook requests not kept as dead letters because more than 50 a second were refused (route: the receiver)",
            webhook_dead_letters_dropped.clone(),
        );
        let webhook_deliveries = Family::<DestinationOutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by destination and outcome (delivered, retry, dead)",
            webhook_deliveries.clone(),
        );
        let webhook_backlog = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "webhook_backlog",
            "Webhook deliveries pending, by destination (refreshed every few seconds)",
            webhook_backlog.clone(),
        );
        let webhook_oldest_pending = Family::<DestinationLabels, Gauge>::default();
        registry.register_with_unit(
            "webhook_oldest_pending_age",
            "Age of the oldest pending webhook message, by destination (refreshed every few seconds)",
            prometheus_client::registry::Unit::Seconds,
            webhook_oldest_pending.clone(),
        );
        let webhook_published = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_published",
            "Events published on the outbound webhook intake, by result (accepted, duplicate, or the refusal reason)",
            webhook_published.clone(),
        );
        let webhook_attempt_duration =
            Family::<DestinationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Time of one webhook delivery attempt, answer included, by destination",
            prometheus_client::registry::Unit::Seconds,
            webhook_attempt_duration.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls finished (proxied or transcoded), by route, service, method and status code name",
            grpc_requests.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "Expiry (notAfter, Unix time) of each certificate the gateway presents or trusts, by config key, kind (server, client, ca) and subject; set at start and at each reload",
            prometheus_client::registry::Unit::Seconds,
            certificate_expiry.clone(),
        );
        let telemetry_spans = Family::<ResultLabels, Counter>::default();
        registry.register(
            "telemetry_spans",
            "Trace spans, by result: exported, dropped_queue_full (the export queue was full), dropped_export_failed (the collector refused them or could not be reached)",
            telemetry_spans.clone(),
        );
        Self {
            registry,
            telemetry_spans,
            certificate_expiry,
            connections,
            grpc_requests,
            webhook_published,
            webhook_attempt_duration,
            webhook_received,
            webhook_dead_letters_dropped,
            webhook_deliveries,
            webhook_backlog,
            webhook_oldest_pending,
            rate_limited,
            rate_limit_store_errors,
            idempotency,
            upstream_retries,
            circuit_breaker_state,
            upstream_throttled,
            upstream_token_fetches,
            auth_attempts,
            auth_fetches,
            http_requests,
            http_duration,
            upstream_requests,
            upstream_healthy,
            config_reloads,
            access_log_dropped,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
