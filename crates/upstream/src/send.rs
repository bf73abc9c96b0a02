//! The sender: one request to an upstream, try after try, until an answer is good enough to
//! pass on or no try is left.
//!
//! ```text
//! ┌─ per try ─────────────────────────────────────────────────────────────────────────┐
//! │ throttle ─▶ pick ─▶ prepare ─▶ exchange ─▶ judge ─▶ decide: done, fresh token, retry │
//! └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - **throttle**: the upstream's outbound queue (`Throttle::acquire`);
//! - **pick**: a target (sticky on the first try, then by `load_balancing`; open breakers
//!   skipped);
//! - **prepare**: the request of this try: the target's URI, the headers, the credential;
//! - **exchange**: the request on the wire, within the per-try timeout inside the request
//!   deadline;
//! - **judge**: the [`Classify`] rule turns the answer into an outcome: the `outcome` metric
//!   label, breaker and passive-health bookkeeping, and a retry [`Failure`];
//! - **decide**: a 401 to an OAuth 2.0 token gets one more try with a fresh token (not counted
//!   as a retry); a failure `retry.on` names is retried after the backoff (or the upstream's
//!   `Retry-After`) while tries, time and the retry budget last.
//!
//! The sender knows no route and no client connection: the proxy calls it with a request it
//! has filtered, a background task (a webhook delivery) with one it made. What the caller wants
//! to hear of each try (the target, for its log; the moment the request leaves, for an
//! idempotency claim) it hears through [`Observer`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use tokio::time::Instant;

use super::classify::{Classify, Judged};
use super::{InFlight, NoTarget, Target, Upstream};
use crate::retry::{Failure, RetryPolicy};
use bridgehead_http::body::{RequestBody, RequestStats};
use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{Metrics, Name, UpstreamLabels, UpstreamResultLabels, outcome};
use bridgehead_http::problem::GatewayError;
use bridgehead_http::upstream_body::UpstreamBody;

/// A request for the sender: everything but the target.
pub struct Outgoing {
    pub method: Method,
    /// Path and query as the upstream should see them (after `strip_prefix`).
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Payload,
}

/// The body of an [`Outgoing`] request.
pub enum Payload {
    /// Read whole beforehand: every try sends it again.
    Replayable(Bytes),
    /// Streamed from the client: sent once, so such a request is never retried.
    Stream(RequestBody),
}

/// What the caller hears of the tries.
pub trait Observer: Send {
    /// A target was picked for a try; `in_flight` counts the request on it until dropped.
    fn target(&mut self, _url: &Arc<str>, _in_flight: InFlight) {}
    /// The try failed and another follows after `wait`: the previous target is no longer in
    /// use.
    fn retrying(&mut self, _wait: Duration) {}
    /// The request is about to leave: from here on the upstream may act on it.
    fn sending(&mut self) {}
    /// The try failed in the transport (connect, reset), with what the transport said: for a
    /// background caller's own log (a webhook attempt's), never for a client.
    fn transport_failed(&mut self, _cause: &str) {}
    /// A try is about to go to `target` of `upstream`: the observer may add to its headers (a
    /// trace context). `attempt` counts from 1, fresh-token tries included.
    fn try_started(
        &mut self,
        _req: &mut Request<RequestBody>,
        _upstream: &Arc<str>,
        _target: &Arc<str>,
        _attempt: u32,
    ) {
    }
    /// The try is over.
    fn try_ended(&mut self, _end: &TryEnd<'_>) {}
}

/// What a try came to, for an observer.
pub struct TryEnd<'a> {
    /// The `outcome` label (`success`, `http_5xx`, `timeout` …); `None` while a gRPC answer
    /// streams and its trailers will tell.
    pub outcome: Option<&'static str>,
    /// The answer's status, when one came.
    pub status: Option<StatusCode>,
    /// The gateway's error, when no answer came.
    pub error: Option<&'a GatewayError>,
    /// The outcome counts as a failure (a gRPC status in an HTTP 200 included).
    pub failed: bool,
}

/// An observer that hears nothing.
impl Observer for () {}

/// How one request is sent.
pub struct Sender<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub metrics: &'a Metrics,
    /// The sticky key of the first try, if the upstream has one and the request carries it.
    pub sticky: Option<&'a [u8]>,
    /// The retry policy, if the request may be sent more than once (idempotent or a gRPC
    /// call, with a replayable body).
    pub retry: Option<&'a RetryPolicy>,
    /// The request is idempotent (or carries an idempotency key): any failure `retry.on`
    /// names may be retried. Otherwise (a gRPC call) only a connect error, where nothing
    /// reached the target, and a gRPC status, where the server said how the call ended.
    pub idempotent: bool,
    pub classify: Classify,
    /// Whether a 101 answer switches to a protocol the caller asked for; any other 101 is the
    /// target's fault.
    pub accept_switch: &'a (dyn Fn(&HeaderMap) -> bool + Sync),
    /// The request body's counters (a streamed body over its limit fails the exchange; that is
    /// the client's doing, not the target's).
    pub stats: Option<&'a Arc<RequestStats>>,
    /// `server.limits.max_body`, for the error when `stats` says the body was too large.
    pub max_body: u64,
}

/// The state of one request's tries.
struct Tries<'a> {
    s: &'a Sender<'a>,
    out: Outgoing,
    /// Tries made so far, fresh-token tries included.
    tries: u32,
    /// Tries made with a fresh token after a 401, which `retry.attempts` does not count.
    fresh_tries: u32,
    deadline: Option<Instant>,
    /// One more try with a fresh token is still allowed.
    fresh_token: bool,
}

/// One try, prepared.
struct Prepared {
    req: Request<RequestBody>,
    /// The OAuth 2.0 token sent, if the upstream has one.
    token: Option<HeaderValue>,
    timeout: Duration,
    timeout_key: &'static str,
}

/// What to do after a try.
enum Next {
    /// Pass the answer (or the error) on.
    Done,
    /// Try again, after this wait.
    Again(Option<Duration>),
}

impl Sender<'_> {
    /// Sends `out`, retrying as the upstream's policy allows.
    pub async fn send(
        &self,
        out: Outgoing,
        observer: &mut dyn Observer,
    ) -> Result<Response<UpstreamBody>, GatewayError> {
        let fresh_token = self.upstream.oauth2().is_some() && matches!(out.body, Payload::Replayable(_));
        let mut tries = Tries { s: self, out, tries: 0, fresh_tries: 0, deadline: None, fresh_token };
        loop {
            let target = tries.throttle_and_pick(observer).await?;
            let mut prepared = tries.prepare(target).await?;
            let token = prepared.token.clone();
            observer.try_started(&mut prepared.req, &self.upstream.name, &target.url, tries.tries);
            observer.sending();
            let judged = match tries.exchange(target, prepared).await {
                Ok(judged) => judged,
                Err(e) => {
                    observer.try_ended(&TryEnd {
                        outcome: None,
                        status: None,
                        error: Some(&e),
                        failed: true,
                    });
                    return Err(e);
                }
            };
            if let Some(cause) = &judged.cause {
                observer.transport_failed(cause);
            }
            // The try ends here: a fresh token fetched by `decide` is not its time.
            observer.try_ended(&TryEnd {
                outcome: judged.verdict.map(|(label, _)| label),
                status: judged.result.as_ref().ok().map(Response::status),
                error: judged.result.as_ref().err(),
                failed: judged.verdict.is_some_and(|(_, failed)| failed),
            });
            match tries.decide(&judged, token.as_ref()).await {
                Next::Done => return judged.result,
                Next::Again(wait) => {
                    // The answer is dropped first: its connection goes back to the pool.
                    drop(judged);
                    observer.retrying(wait.unwrap_or_default());
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    fn timeout_error(&self, timeout: String, key: &'static str) -> GatewayError {
        GatewayError::UpstreamTimeout { upstream: self.upstream.name.to_string(), timeout, key }
    }

    fn count(&self, target: &Target, label: &'static str) {
        if label == outcome::SUCCESS {
            target.success.inc();
            return;
        }
        let labels = UpstreamLabels {
            upstream: Name(self.upstream.name.clone()),
            target: Name(target.url.clone()),
            outcome: label,
        };
        self.metrics.upstream_requests.get_or_create(&labels).inc();
    }
}

impl<'a> Tries<'a> {
    /// The number of this try in the count of `retry.attempts` (1 for the first).
    fn attempt(&self) -> u32 {
        self.tries - self.fresh_tries
    }

    /// throttle, then pick: waits for the outbound throttle and picks a target. Starts the
    /// request deadline on the first try (`timeouts.request` covers all tries, not the
    /// throttle's queue before the first).
    async fn throttle_and_pick(&mut self, observer: &mut dyn Observer) -> Result<&'a Target, GatewayError> {
        let up: &'a Upstream = self.s.upstream;
        self.tries += 1;
        let throttled = up.throttle.acquire().await;
        if !matches!(throttled, Ok(false)) {
            let result = if throttled.is_ok() { "waited" } else { "refused" };
            self.s
                .metrics
                .upstream_throttled
                .get_or_create(&UpstreamResultLabels { upstream: Name(up.name.clone()), result })
                .inc();
        }
        throttled?;
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + up.timeouts.request.get());
        if self.attempt() > 1 && Instant::now() >= deadline {
            // A retry's wait in the queue used up the deadline: no target was tried, so none
            // is blamed.
            return Err(self.s.timeout_error(up.timeouts.request.to_string(), "timeouts.request"));
        }
        let sticky = self.s.sticky.filter(|_| self.attempt() == 1);
        let target = up.pick(sticky).map_err(|e| match e {
            NoTarget::Unhealthy => GatewayError::NoHealthyTarget { upstream: up.name.to_string() },
            NoTarget::CircuitOpen(retry_after) => {
                GatewayError::CircuitOpen { upstream: up.name.to_string(), retry_after }
            }
        })?;
        observer.target(&target.url, target.start_request());
        Ok(target)
    }

    /// Whether this try is the last one: no retry and no fresh-token try can follow.
    fn last(&self) -> bool {
        self.s.retry.is_none_or(|r| self.attempt() >= r.attempts) && !self.fresh_token
    }

    /// prepare: the request of this try, with the target's URI, the headers (moved on the last
    /// try, copied before), the Host when the client sent none, and the upstream's credential.
    async fn prepare(&mut self, target: &Target) -> Result<Prepared, GatewayError> {
        let up = &**self.s.upstream;
        let last = self.last();
        let body = match &mut self.out.body {
            Payload::Replayable(b) if b.is_empty() => RequestBody::Empty,
            Payload::Replayable(b) => RequestBody::Full(Some(b.clone())),
            Payload::Stream(s) => std::mem::replace(s, RequestBody::Empty),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.out.method.clone();
        // Origin form: the transport adds the scheme and authority where the protocol wants
        // them (HTTP/2).
        *req.uri_mut() = Uri::from(self.out.path_and_query.clone());
        *req.headers_mut() =
            if last { std::mem::take(&mut self.out.headers) } else { self.out.headers.clone() };
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        // The upstream's own credential replaces whatever the client sent in that header.
        let mut token = None;
        if let Some(credentials) = &up.credentials {
            token = credentials.apply(req.headers_mut()).await.map_err(|e| {
                static NO_CREDENTIAL: LogBudget = LogBudget::new();
                if let Some(left_out) = NO_CREDENTIAL.admit() {
                    tracing::warn!(upstream = %up.name, error = %e, left_out, "no credential for the upstream");
                }
                GatewayError::UpstreamCredentials { upstream: up.name.to_string() }
            })?;
        }
        let remaining =
            self.deadline.expect("set by throttle_and_pick").saturating_duration_since(Instant::now());
        let (timeout, timeout_key) = match self.s.retry.and_then(|r| r.per_try_timeout) {
            Some(t) if t < remaining => (t, "retry.per_try_timeout"),
            _ => (remaining, "timeouts.request"),
        };
        Ok(Prepared { req, token, timeout, timeout_key })
    }

    /// exchange, then judge: sends the try and classifies what came back. Errors that are the
    /// client's (its body too large or broken) end the tries at once.
    async fn exchange(&self, target: &Target, p: Prepared) -> Result<Judged, GatewayError> {
        let s = self.s;
        let up = &**s.upstream;
        let try_deadline = Instant::now() + p.timeout;
        let result = tokio::time::timeout(p.timeout, up.transport.request(target, p.req)).await;
        let judged = match result {
            Err(_) => {
                let timeout = match p.timeout_key {
                    "timeouts.request" => up.timeouts.request.to_string(),
                    _ => humantime::format_duration(p.timeout).to_string(),
                };
                Judged::failed(outcome::TIMEOUT, Failure::Timeout, s.timeout_error(timeout, p.timeout_key))
            }
            Ok(Err(e)) => {
                if s.stats.is_some_and(|st| st.too_large.load(Relaxed)) {
                    return Err(GatewayError::BodyTooLarge { limit: s.max_body });
                }
                if e.is_client_body() || s.stats.is_some_and(|st| st.broken.load(Relaxed)) {
                    // The client's body failed (it went away or sent garbage): not the upstream's fault.
                    return Err(GatewayError::BadRequest(
                        "the request body ended before it was complete".into(),
                    ));
                }
                let (label, failure, reason) = if e.is_connect() {
                    (outcome::CONNECT_ERROR, Failure::Connect, "could not connect to the target")
                } else {
                    (
                        outcome::ERROR,
                        Failure::Reset,
                        "the connection closed or the response was invalid before a complete response head arrived",
                    )
                };
                tracing::debug!(upstream = %up.name, target = %target.url, error = %e, "upstream request failed");
                let error = GatewayError::UpstreamFailed { upstream: up.name.to_string(), reason };
                let mut judged = Judged::failed(label, failure, error);
                // A connect another request made failed: that one already counted against the
                // target.
                judged.blame = !e.is_shared_connect();
                judged.cause = Some(e.to_string());
                judged
            }
            Ok(Ok(res)) => {
                up.throttle.observe(res.status(), res.headers());
                // Only a request that another try may follow waits for a gRPC answer's first
                // frame, and no longer than the try may take.
                let another = s.retry.is_some_and(|r| self.attempt() < r.attempts);
                let peek = another.then(|| try_deadline.saturating_duration_since(Instant::now()));
                s.classify.judge(res, s.accept_switch, peek, &up.name).await
            }
        };
        if let Some((label, failed)) = judged.verdict {
            s.count(target, label);
            if judged.blame {
                up.record_outcome(target, failed);
            }
        }
        Ok(judged.with_target(s.upstream, target, s.metrics, s.stats))
    }

    /// decide: pass the answer on, try again with a fresh token, or retry.
    async fn decide(&mut self, judged: &Judged, token: Option<&HeaderValue>) -> Next {
        let s = self.s;
        // A token the upstream refuses may have been revoked or expired early: fetch a new one
        // and send again, once. This try does not count toward `retry.attempts`.
        if let (Some(tokens), Some(used), Ok(res)) = (s.upstream.oauth2(), token, &judged.result)
            && res.status() == StatusCode::UNAUTHORIZED
            && self.fresh_token
        {
            self.fresh_token = false;
            tokens.rejected(used);
            if Box::pin(tokens.token()).await.is_ok_and(|fresh| fresh != *used) {
                self.fresh_tries += 1;
                return Next::Again(None);
            }
        }
        // Retry with backoff (or the upstream's Retry-After) while tries, time and budget last.
        if let Some(r) = s.retry
            && self.attempt() < r.attempts
            && judged.failure.is_some_and(|f| {
                r.retries_on(f) && (s.idempotent || matches!(f, Failure::Connect | Failure::Grpc(_)))
            })
        {
            let wait = match &judged.result {
                Ok(res) => r.wait_after(res.headers(), self.attempt()),
                Err(_) => Some(r.backoff(self.attempt())),
            };
            let deadline = self.deadline.expect("set by throttle_and_pick");
            if let Some(wait) = wait
                && Instant::now() + wait < deadline
            {
                let retried = r.take_retry();
                let result = if retried { "retried" } else { "budget_exhausted" };
                s.metrics
                    .upstream_retries
                    .get_or_create(&UpstreamResultLabels { upstream: Name(s.upstream.name.clone()), result })
                    .inc();
                if retried {
                    return Next::Again(Some(wait));
                }
            }
        }
        Next::Done
    }
}

#[cfg(test)]
mod tests;
