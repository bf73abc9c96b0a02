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
//!   503) when that is longer (but never longer than the schedule's longest wait); after the
//!   last wait the delivery is dead.
//! - **A restarted node takes back its own (SQLite):** at start, the leases held by earlier runs
//!   on this host whose process is gone are released, so their deliveries go out at once. On
//!   PostgreSQL they run out (nodes may be on other hosts).
//! - **One attempt fits in a lease:** an attempt, the answer's body included, is cut at
//!   [`ATTEMPT_TIMEOUT`] (20 s of the 30 s lease), so a live worker records it before another
//!   node may claim the delivery (which would deliver twice).
//! - **Fair:** at most [`MAX_IN_FLIGHT`] attempts run at once, each destination at most its
//!   share (64 divided by the destinations of the config, at least 8), refilled in batches as
//!   attempts end, each pass starting at another destination: a destination that hangs holds
//!   only its share.
//! - **Only known destinations:** a node claims deliveries of the receivers in its running
//!   config, so nodes on different configs (a rolling change, a receiver renamed or removed)
//!   leave each other's deliveries alone; those of a removed receiver wait, pending, until it
//!   comes back.
//! - **What the destination gets:** `POST` to the receiver's `forward.path` with the body as
//!   received, the headers the sender sent (but the signature headers, credentials, cookies and
//!   connection headers), `X-Bridgehead-Webhook: <receiver>` and
//!   `X-Bridgehead-Message-Id: msg_…` (the same on every attempt, so the destination can
//!   deduplicate).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{DestinationLabels, DestinationOutcomeLabels, Metrics, Name};
use bridgehead_http::trace::{Attributes, Kind, Status, Trace, Tracer, Value};
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
/// The longest one attempt may take, the answer's body included: well inside [`LEASE`], so a
/// live worker records its attempt before anyone else may claim the delivery.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the store is asked for due deliveries when nothing woke the worker.
pub const POLL: Duration = Duration::from_secs(1);
/// Attempts in flight at once on a node. Each destination gets a fair share (the slots divided
/// by the destinations of the config, at least [`MIN_IN_FLIGHT_PER_DESTINATION`]), so a
/// destination that hangs does not hold up the others.
pub const MAX_IN_FLIGHT: usize = 64;
/// See [`MAX_IN_FLIGHT`].
pub const MIN_IN_FLIGHT_PER_DESTINATION: usize = 8;
/// When a delivery to an endpoint that answered 410 is tried again, unless the endpoint is
/// enabled before (which makes it due at once).
const GONE_WAIT: Duration = Duration::from_secs(3600);
/// How much of an answer's body is kept with the attempt.
pub const RESPONSE_KEPT: usize = 1024;

const USER_AGENT: &str = concat!("Bridgehead-Webhooks/", env!("CARGO_PKG_VERSION"));
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
    /// The longest one attempt may take (at most [`ATTEMPT_TIMEOUT`]).
    pub timeout: Duration,
    /// Set for an outbound endpoint: each attempt is signed, and a 410 disables it.
    pub endpoint: Option<EndpointRoute>,
}

/// What a delivery to an outbound endpoint adds.
pub struct EndpointRoute {
    pub signer: crate::signature::Signer,
    /// Declared in the config (its disabled state is a row of its own in the store).
    pub declared: bool,
}

/// What the worker needs from the gateway.
pub trait Env: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// The route of a destination in the running config, if it still has one.
    fn route(&self, destination: &str) -> Option<Route>;
    /// Every destination of the running config this node claims now: the receivers' forwards,
    /// and the enabled endpoints whose breaker is not open.
    fn destinations(&self) -> Vec<String>;
    /// An endpoint was disabled (it answered 410): read the endpoints again.
    fn endpoints_changed(&self) {}
    /// Starts the trace of a delivery attempt, when traces are on.
    fn tracer(&self) -> Option<Tracer> {
        None
    }
}

/// Runs the worker until `stop` flips to true, then lets the attempts in flight finish (each
/// bounded by [`ATTEMPT_TIMEOUT`]). `owner` names this node (`<host>-<pid>`); each claim's
/// leases carry `<owner>:<n>`, a token of that claim alone.
pub async fn run(
    env: Arc<dyn Env>,
    store: Store,
    owner: String,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    take_back_leases_of_dead_runs(&store, &owner).await;
    let owner: Arc<str> = owner.into();
    let mut claims: u64 = 0;
    let mut gauges: BTreeSet<String> = BTreeSet::new();
    let mut last_gauges = tokio::time::Instant::now() - Duration::from_secs(60);
    let mut tasks: tokio::task::JoinSet<(String, Option<i64>)> = tokio::task::JoinSet::new();
    let mut flight = InFlight::default();
    while !*stop.borrow() {
        while let Some(result) = tasks.try_join_next() {
            flight.finished(result);
        }
        if last_gauges.elapsed() >= Duration::from_secs(5) {
            last_gauges = tokio::time::Instant::now();
            refresh_gauges(env.as_ref(), &store, &mut gauges).await;
        }
        let now = bridgehead_http::clock::unix_ms();
        let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let mut claimed_any = false;
        // A different destination goes first on every pass, so freed slots do not always go to
        // the first ones in the config.
        let mut destinations = env.destinations();
        if !destinations.is_empty() {
            let first = usize::try_from(claims % destinations.len() as u64).unwrap_or(0);
            destinations.rotate_left(first);
        }
        // Each destination's fair share of the slots, never fewer than the floor.
        let share = (MAX_IN_FLIGHT / destinations.len().max(1)).max(MIN_IN_FLIGHT_PER_DESTINATION);
        for destination in destinations {
            let in_flight = flight.busy.get(&destination).copied().unwrap_or(0);
            let room = MAX_IN_FLIGHT.saturating_sub(tasks.len()).min(share.saturating_sub(in_flight));
            // Claims come in batches: a destination still busy waits until a quarter of its
            // share is free, rather than claiming (one write) per finished attempt.
            if room == 0 || (in_flight > 0 && room < (share / 4).max(1)) {
                continue;
            }
            let limit = i64::try_from(room).unwrap_or(1);
            // Every claim has a token of its own (the fencing token of its leases): an attempt
            // that outlived its lease cannot record over the claim that took it over, even one
            // made by this same node.
            claims += 1;
            let token: Arc<str> = format!("{owner}:{claims}").into();
            let claimed = match store.webhook_claim(&token, &destination, now, lease_ms, limit).await {
                Ok(c) => c,
                Err(e) => {
                    static FAILED: LogBudget = LogBudget::new();
                    if let Some(left_out) = FAILED.admit() {
                        tracing::warn!(error = %e, left_out, "webhook deliveries could not be claimed");
                    }
                    break;
                }
            };
            for c in claimed {
                claimed_any = true;
                *flight.busy.entry(destination.clone()).or_default() += 1;
                let (env, store, owner, destination) =
                    (env.clone(), store.clone(), token.clone(), destination.clone());
                tasks.spawn(async move { (destination, attempt(env.as_ref(), &store, &owner, c).await) });
            }
        }
        if claimed_any {
            // More may be due: claim again while there is room.
            continue;
        }
        flight.next_retry = flight.next_retry.filter(|&t| t > now);
        let until_retry = flight
            .next_retry
            .map_or(POLL, |t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)).min(POLL));
        tokio::select! {
            Some(result) = tasks.join_next(), if !tasks.is_empty() => flight.finished(result),
            () = wake.notified() => {}
            () = tokio::time::sleep(until_retry) => {}
            _ = stop.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// What the attempts in flight hold.
#[derive(Default)]
struct InFlight {
    /// Attempts running, per destination.
    busy: HashMap<String, usize>,
    /// The earliest retry the worker scheduled (Unix ms): it sleeps no longer than that.
    next_retry: Option<i64>,
}

impl InFlight {
    /// An attempt ended: its destination's slot is free, and its retry (if any) is noted.
    fn finished(&mut self, result: Result<(String, Option<i64>), tokio::task::JoinError>) {
        let Ok((destination, retry_at)) = result else { return };
        if let Some(n) = self.busy.get_mut(&destination) {
            *n = n.saturating_sub(1);
        }
        if let Some(t) = retry_at {
            self.next_retry = Some(self.next_retry.map_or(t, |n| n.min(t)));
        }
    }
}

/// Releases the leases held by earlier runs of a gateway on this host whose process is gone (a
/// `kill -9`, a crash), so a restarted node delivers their messages at once instead of after the
/// leases run out. Owners are `<host>-<pid>`; one is taken for dead when no process has its pid
/// here (a reused pid keeps its leases until they run out, as a node on another host does).
async fn take_back_leases_of_dead_runs(store: &Store, owner: &str) {
    // Only for a SQLite file, which the nodes of one host share. On PostgreSQL, nodes on other
    // hosts, or in other PID namespaces with the same host name (containers), are not visible
    // in /proc: their leases run out instead.
    if store.backend() != bridgehead_state::Backend::Sqlite {
        return;
    }
    let Some((host, _)) = owner.rsplit_once('-') else { return };
    let Ok(owners) = store.webhook_lease_owners().await else { return };
    for other in owners {
        // Lease tokens are `<host>-<pid>:<claim>`.
        let node = other.split(':').next().unwrap_or_default();
        let Some((other_host, pid)) = node.rsplit_once('-') else { continue };
        if other_host != host || pid.parse::<u32>().is_err() {
            continue;
        }
        // This node's own name from an earlier run (a container whose gateway is always PID 1):
        // nothing of this run is claimed yet, so those leases are the earlier run's.
        if node != owner && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match store.webhook_release_leases(&other).await {
            Ok(n) if n > 0 => {
                tracing::info!(previous = %other, deliveries = n, "took back webhook deliveries an earlier run held");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not release an earlier run's webhook leases"),
        }
    }
}

/// Sets the backlog gauges from the store, and to 0 for destinations that emptied and for every
/// configured one with nothing pending (so that dashboards and alerts see them from the start).
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
    seen.extend(env.destinations());
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
    let now_of = bridgehead_http::clock::unix_ms;
    // Set when an endpoint answered 410 (whether the config declares it): disabled once the
    // attempt is recorded.
    let mut gone_endpoint: Option<bool> = None;
    let after = |wait: Duration| now_of().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    let (status, error, response, outcome) = match env.route(&c.destination) {
        // A reload removed the receiver after this delivery was claimed: it waits for it to
        // come back (this node no longer claims its deliveries), never dies of it.
        None => {
            let error = Some("no receiver of that name in the running config".to_owned());
            (None, error, None, AttemptOutcome::RetryAt(after(Duration::from_secs(60))))
        }
        Some(route) => {
            let limit = route.timeout.min(ATTEMPT_TIMEOUT);
            let sent = match tokio::time::timeout(limit, send(env, &route, &c)).await {
                // Only an endpoint's deliveries wait out an open breaker; a receiver's forward
                // spends the attempt, as it always did.
                Ok(Sent::NotSent(wait)) if route.endpoint.is_some() => {
                    // The endpoint's breaker is open: no attempt was made, none is counted.
                    let _ = store.webhook_release(c.id, owner, after(wait), now_of()).await;
                    return Some(after(wait));
                }
                Ok(Sent::NotSent(wait)) => (
                    None,
                    Some(format!("the circuit breaker of upstream `{}` is open", route.upstream.name)),
                    None,
                    Some(wait),
                ),
                Ok(Sent::Tried(t)) => t,
                Err(_) => {
                    (None, Some(format!("no complete answer within {}s", limit.as_secs_f32())), None, None)
                }
            };
            let (status, error, response, retry_after) = sent;
            gone_endpoint = (status == Some(StatusCode::GONE))
                .then_some(route.endpoint.as_ref())
                .flatten()
                .map(|e| e.declared);
            let made = usize::try_from(c.attempts).unwrap_or(usize::MAX);
            let outcome = if status.is_some_and(|s| s.is_success()) {
                AttemptOutcome::Delivered
            } else if gone_endpoint.is_some() {
                // It waits for the endpoint to be enabled again (which makes it due at once),
                // whatever attempts the schedule has left.
                AttemptOutcome::RetryAt(after(GONE_WAIT))
            } else if let Some(wait) = route.retry_schedule.get(made) {
                let jittered = wait.mul_f64(0.8 + fastrand::f64() * 0.4);
                // A Retry-After longer than the schedule's longest wait is not believed further.
                let longest = route.retry_schedule.iter().max().copied().unwrap_or(*wait);
                let wait = retry_after.map_or(jittered, |r| r.min(longest).max(jittered));
                AttemptOutcome::RetryAt(after(wait))
            } else {
                AttemptOutcome::Dead
            };
            (status, error, response, outcome)
        }
    };
    let now = now_of();
    let labels = DestinationLabels { destination: Name(c.destination.as_str().into()) };
    env.metrics().webhook_attempt_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
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
    let recorded = store.webhook_record_attempt(c.id, owner, &record, outcome, now).await;
    // After the record: an operator who enables the endpoint from here on makes this delivery
    // due at once.
    if let Some(declared) = gone_endpoint
        && let Some(name) = crate::outbound::endpoint_of(&c.destination)
    {
        gone(env, store, name, declared).await;
    }
    match recorded {
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

/// An endpoint answered 410 Gone: it is disabled (its pending deliveries wait until someone
/// enables it again).
async fn gone(env: &dyn Env, store: &Store, endpoint: &str, declared: bool) {
    let now = bridgehead_http::clock::unix_ms();
    match store.webhook_endpoint_set_disabled(endpoint, declared, Some("answered 410 Gone"), now).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::warn!(endpoint, "webhook endpoint answered 410 Gone: disabled until enabled again");
            env.endpoints_changed();
        }
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "could not disable a webhook endpoint that answered 410");
        }
    }
}

/// Keeps what the transport said when an attempt failed.
struct Cause(Option<String>);

impl bridgehead_upstream::send::Observer for Cause {
    fn transport_failed(&mut self, cause: &str) {
        self.0 = Some(cause.to_owned());
    }
}

/// What [`send`] did.
enum Sent {
    /// Nothing went out (the breaker is open); try again after this.
    NotSent(Duration),
    /// Status, error, the start of the answer, and its `Retry-After`.
    Tried((Option<StatusCode>, Option<String>, Option<Vec<u8>>, Option<Duration>)),
}

/// The attempt on the wire.
async fn send(env: &dyn Env, route: &Route, c: &ClaimedDelivery) -> Sent {
    let tracer = env.tracer();
    // The headers kept with the message, read once: a receiver's forward sends them on, and a
    // traced attempt continues the trace context kept among them.
    let stored: Vec<(String, String)> = if route.endpoint.is_none() || tracer.is_some() {
        serde_json::from_str(&c.headers_json).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut headers = HeaderMap::new();
    if let Some(e) = &route.endpoint {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let now = bridgehead_http::clock::unix_ms() / 1000;
        match e.signer.sign(&c.message_id, now, &c.body) {
            Ok(signed) => headers.extend(signed),
            Err(err) => return Sent::Tried((None, Some(err.to_string()), None, None)),
        }
    } else {
        for (name, value) in &stored {
            let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            else {
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
    }
    // Each attempt is a span: of the trace the event was accepted in when it kept one (an
    // intake or a receiver that traced it, or the sender's own context), else of a new trace.
    let trace = tracer.map(|t| {
        let context = stored.iter().find(|(n, _)| n.eq_ignore_ascii_case("traceparent"));
        match context.and_then(|(_, v)| HeaderValue::try_from(v.as_str()).ok()) {
            Some(v) => Trace::continued(&t, &v),
            None => t.root(),
        }
    });
    if let Some(t) = &trace {
        t.inject(t.span_id, &mut headers);
    }
    let sent = send_traced(env, route, c, headers).await;
    if let Some(t) = trace {
        end_trace(t, route, c, &sent);
    }
    sent
}

/// A delivery attempt's span: a messaging `send` to the destination, over HTTP.
fn end_trace(trace: Trace, route: &Route, c: &ClaimedDelivery, sent: &Sent) {
    let mut attributes: Attributes = vec![
        ("messaging.system", Value::from("bridgehead")),
        ("messaging.operation.type", Value::from("send")),
        ("messaging.destination.name", Value::from(c.destination.clone())),
        ("messaging.message.id", Value::from(c.message_id.clone())),
        ("bridgehead.webhook.attempt", Value::Int(c.attempts + 1)),
        ("http.request.method", Value::from("POST")),
        ("bridgehead.upstream", Value::Shared(route.upstream.name.clone())),
    ];
    let mut status = Status::Unset;
    match sent {
        Sent::NotSent(_) => {
            attributes.push(("error.type", Value::from("circuit_open")));
            status = Status::Error;
        }
        Sent::Tried((code, error, _, _)) => {
            if let Some(code) = code {
                attributes.push(("http.response.status_code", Value::Int(i64::from(code.as_u16()))));
            }
            if error.is_some() {
                let kind = code.map_or_else(|| "transport".to_owned(), |s| s.as_u16().to_string());
                attributes.push(("error.type", Value::from(kind)));
                status = Status::Error;
            }
        }
    }
    trace.finish(format!("send {}", c.destination).into(), Kind::Client, status, attributes);
}

/// The attempt on the wire, with its headers made.
async fn send_traced(env: &dyn Env, route: &Route, c: &ClaimedDelivery, headers: HeaderMap) -> Sent {
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
    let mut cause = Cause(None);
    match sender.send(out, &mut cause).await {
        Err(bridgehead_http::problem::GatewayError::CircuitOpen { retry_after, .. }) => {
            Sent::NotSent(Duration::from_secs(retry_after.max(1)))
        }
        // The attempt log keeps what the transport said (an operator reads it; no client does).
        Err(e) => Sent::Tried((
            None,
            Some(cause.0.map_or_else(|| e.to_string(), |c| format!("{e}: {c}"))),
            None,
            None,
        )),
        Ok(res) => {
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
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            kept.extend_from_slice(&data[..data.len().min(RESPONSE_KEPT - kept.len())]);
                        }
                    }
                    _ => break,
                }
            }
            let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
            Sent::Tried((Some(status), error, Some(kept), retry_after))
        }
    }
}
