//! The delivery worker: sends stored webhook messages to their destinations, at least once.
//!
//! Each node runs one. It claims due deliveries from the state store in batches (a lease of
//! [`LEASE`]; PostgreSQL nodes claim disjoint rows), sends each through the destination's
//! upstream (its targets, TLS, credentials, health and breaker; never its own retries: the
//! receiver's `retry_schedule` is the retry policy), records the attempt, and schedules the next
//! one or declares the delivery dead. It wakes when a receiver commits a message, and polls
//! every [`POLL`] otherwise, so deliveries a dead node held (its lease ran out) or that are due
//! for a retry are picked up.
//!
//! - **Outcome:** a 2xx answer delivers; anything else (another status, no healthy target, a
//!   connect error, a timeout) is a failed attempt. After attempt *n* the next is due after the
//!   *n*-th wait of the schedule, ±20% jitter, or the answer's `Retry-After` (seconds, on 429 and
//!   503) when that is longer; after the last wait the delivery is dead.
//! - **One attempt fits in a lease:** an attempt is cut at [`ATTEMPT_TIMEOUT`], so a live worker
//!   never loses its lease mid-attempt to another node (which would deliver twice).
//! - **What the destination gets:** `POST` to the receiver's `forward.path` with the body as
//!   received, the headers the sender sent (but the signature headers, credentials, cookies and
//!   connection headers), `X-Bridgehead-Webhook: <receiver>` and
//!   `X-Bridgehead-Message-Id: msg_…` (the same on every attempt, so the destination can
//!   deduplicate).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{DestinationLabels, DestinationOutcomeLabels, Metrics, Name};
use bridgehead_state::{AttemptOutcome, AttemptRecord, ClaimedDelivery, Store};
use bridgehead_upstream::Upstream;
use bridgehead_upstream::classify::Classify;
use bridgehead_upstream::send::{Outgoing, Payload, Sender};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;

/// How long a claimed delivery is held: a node that dies holding one loses it after this.
pub const LEASE: Duration = Duration::from_secs(30);
/// The longest one attempt may take (inside [`LEASE`]).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(25);
/// How often the store is asked for due deliveries when nothing woke the worker.
pub const POLL: Duration = Duration::from_secs(1);
/// Deliveries claimed (and sent concurrently) at once.
pub const BATCH: i64 = 32;
/// How much of an answer's body is kept with the attempt.
pub const RESPONSE_KEPT: usize = 1024;

const X_BRIDGEHEAD_WEBHOOK: HeaderName = HeaderName::from_static("x-bridgehead-webhook");
const X_BRIDGEHEAD_MESSAGE_ID: HeaderName = HeaderName::from_static("x-bridgehead-message-id");

/// Where a destination's deliveries go, from the running config.
pub struct Route {
    /// The receiver's name.
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub path: http::uri::PathAndQuery,
    pub retry_schedule: Vec<Duration>,
    /// Stored headers never sent on (the receiver's signature headers).
    pub drop_headers: Vec<HeaderName>,
}

/// What the worker needs from the gateway.
pub trait Env: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// The route of a destination in the running config, if it still has one.
    fn route(&self, destination: &str) -> Option<Route>;
}

/// Runs the worker until `stop` flips to true. `owner` names this node in leases.
pub async fn run(
    env: Arc<dyn Env>,
    store: Store,
    owner: String,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut gauges: BTreeSet<String> = BTreeSet::new();
    let mut last_gauges = tokio::time::Instant::now() - Duration::from_secs(60);
    // The earliest retry this worker scheduled (Unix ms): it sleeps no longer than that.
    let mut next_retry: Option<i64> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if last_gauges.elapsed() >= Duration::from_secs(5) {
            last_gauges = tokio::time::Instant::now();
            refresh_gauges(env.as_ref(), &store, &mut gauges).await;
        }
        let now = bridgehead_http::clock::unix_ms();
        let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let claimed = match store.webhook_claim(&owner, now, lease_ms, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                static FAILED: LogBudget = LogBudget::new();
                if let Some(left_out) = FAILED.admit() {
                    tracing::warn!(error = %e, left_out, "webhook deliveries could not be claimed");
                }
                Vec::new()
            }
        };
        if claimed.is_empty() {
            let until_retry = next_retry
                .filter(|&t| t > now)
                .map_or(POLL, |t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)).min(POLL));
            next_retry = next_retry.filter(|&t| t > now);
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(until_retry) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let attempts = claimed.into_iter().map(|c| attempt(env.as_ref(), &store, &owner, c));
        for retry_at in futures_util::future::join_all(attempts).await.into_iter().flatten() {
            next_retry = Some(next_retry.map_or(retry_at, |t| t.min(retry_at)));
        }
    }
}

/// Sets the backlog gauges from the store (and back to 0 for destinations that emptied).
async fn refresh_gauges(env: &dyn Env, store: &Store, seen: &mut BTreeSet<String>) {
    let Ok(backlog) = store.webhook_backlog().await else { return };
    let now = bridgehead_http::clock::unix_ms();
    let m = env.metrics();
    let mut current = BTreeSet::new();
    for (destination, count, oldest) in backlog {
        let labels = DestinationLabels { destination: Name(destination.as_str().into()) };
        m.webhook_backlog.get_or_create(&labels).set(count);
        m.webhook_oldest_pending.get_or_create(&labels).set(now.saturating_sub(oldest) / 1000);
        current.insert(destination);
    }
    for gone in seen.difference(&current) {
        let labels = DestinationLabels { destination: Name(gone.as_str().into()) };
        m.webhook_backlog.get_or_create(&labels).set(0);
        m.webhook_oldest_pending.get_or_create(&labels).set(0);
    }
    *seen = current;
}

/// One attempt of one claimed delivery, recorded; returns when the next one is due, if any.
async fn attempt(env: &dyn Env, store: &Store, owner: &str, c: ClaimedDelivery) -> Option<i64> {
    let started = tokio::time::Instant::now();
    let (status, error, response, retry_after, schedule) = match env.route(&c.destination) {
        None => (
            None,
            Some("no receiver of that name in the running config".to_owned()),
            None,
            None,
            vec![Duration::from_secs(300); usize::try_from(c.attempts + 1).unwrap_or(usize::MAX)],
        ),
        Some(route) => {
            let (status, error, response, retry_after) = send(env, &route, &c).await;
            (status, error, response, retry_after, route.retry_schedule)
        }
    };
    let now = bridgehead_http::clock::unix_ms();
    let delivered = status.is_some_and(|s| s.is_success());
    let made = usize::try_from(c.attempts).unwrap_or(usize::MAX);
    let outcome = if delivered {
        AttemptOutcome::Delivered
    } else if let Some(wait) = schedule.get(made) {
        let jittered = wait.mul_f64(0.8 + fastrand::f64() * 0.4);
        let wait = retry_after.map_or(jittered, |r| r.max(jittered));
        AttemptOutcome::RetryAt(now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
    } else {
        AttemptOutcome::Dead
    };
    let record = AttemptRecord {
        status: status.map(|s| s.as_u16()),
        latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        error: error.as_deref(),
        response: response.as_deref(),
    };
    let label = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::RetryAt(_) => "retry",
        AttemptOutcome::Dead => "dead",
    };
    let retry_at = match outcome {
        AttemptOutcome::RetryAt(t) => Some(t),
        _ => None,
    };
    match store.webhook_record_attempt(c.id, owner, &record, outcome, now).await {
        Ok(true) => {
            let labels =
                DestinationOutcomeLabels { destination: Name(c.destination.as_str().into()), outcome: label };
            env.metrics().webhook_deliveries.get_or_create(&labels).inc();
            if outcome == AttemptOutcome::Dead {
                tracing::warn!(destination = %c.destination, message_id = %c.message_id, attempts = c.attempts + 1, "webhook delivery dead: no attempt left");
            }
        }
        // Another node took the delivery over (this attempt outlived the lease): its outcome
        // stands.
        Ok(false) => {}
        Err(e) => {
            static FAILED: LogBudget = LogBudget::new();
            if let Some(left_out) = FAILED.admit() {
                tracing::warn!(error = %e, left_out, "a webhook attempt could not be recorded; it will be made again");
            }
        }
    }
    retry_at
}

/// The attempt on the wire: status, error, the start of the answer, and its `Retry-After`.
async fn send(
    env: &dyn Env,
    route: &Route,
    c: &ClaimedDelivery,
) -> (Option<StatusCode>, Option<String>, Option<Vec<u8>>, Option<Duration>) {
    let mut headers = HeaderMap::new();
    let pairs: Vec<(String, String)> = serde_json::from_str(&c.headers_json).unwrap_or_default();
    for (name, value) in pairs {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) else {
            continue;
        };
        if !route.drop_headers.contains(&name) {
            headers.append(name, value);
        }
    }
    if let Ok(v) = HeaderValue::try_from(route.name.as_ref()) {
        headers.insert(X_BRIDGEHEAD_WEBHOOK, v);
    }
    if let Ok(v) = HeaderValue::try_from(c.message_id.as_str()) {
        headers.insert(X_BRIDGEHEAD_MESSAGE_ID, v);
    }
    let out = Outgoing {
        method: Method::POST,
        path_and_query: route.path.clone(),
        headers,
        body: Payload::Replayable(Bytes::copy_from_slice(&c.body)),
    };
    let accept_switch = |_: &HeaderMap| false;
    let sender = Sender {
        upstream: &route.upstream,
        metrics: env.metrics(),
        sticky: None,
        retry: None,
        idempotent: true,
        classify: Classify::Http,
        accept_switch: &accept_switch,
        stats: None,
        max_body: u64::MAX,
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, sender.send(out, &mut ())).await {
        Err(_) => (None, Some(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())), None, None),
        Ok(Err(e)) => (None, Some(e.to_string()), None, None),
        Ok(Ok(res)) => {
            let status = res.status();
            let retry_after =
                matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                    .then(|| res.headers().get(http::header::RETRY_AFTER))
                    .flatten()
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
            let mut body = res.into_body();
            let mut kept = Vec::new();
            while kept.len() < RESPONSE_KEPT {
                match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            kept.extend_from_slice(&data[..data.len().min(RESPONSE_KEPT - kept.len())]);
                        }
                    }
                    _ => break,
                }
            }
            let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
            (Some(status), error, Some(kept), retry_after)
        }
    }
}
