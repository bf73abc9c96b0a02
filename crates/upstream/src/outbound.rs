//! Outbound throttling: what Bridgehead sends to one upstream with `upstreams.*.rate_limit`.
//!
//! Two things make a request wait before it is sent:
//! - The GCRA bucket. Each request reserves the next free slot (so waiting requests go in arrival
//!   order) and sleeps until it; with `state.redis` the bucket is shared by every node and a
//!   refused request sleeps for the `retry_after` Redis gave and asks again.
//! - Pauses the upstream asked for: a 429 or 503 with `Retry-After`, `X-RateLimit-Remaining: 0`
//!   with `X-RateLimit-Reset`, or an IETF `RateLimit` item with `r=0`. Sending stops until the
//!   indicated time (at most [`MAX_PAUSE`]). Only with a configured limit: without one, one
//!   client's exhausted quota must not stop everybody.
//!
//! A request waits at most `max_wait` and at most `queue` requests wait at once; beyond either it
//! gets 503 `upstream-rate-limited` at once, with `Retry-After` when the wait is known. Without a
//! `rate_limit` the throttle costs two atomic loads per request.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bridgehead_config::UpstreamRateLimit;
use http::{HeaderMap, StatusCode};

use super::gcra::Gcra;
use crate::redis::RedisHandle;
use bridgehead_http::clock::clock_us;
use bridgehead_http::problem::GatewayError;

/// The longest pause an upstream's headers can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);
/// `max_wait` and `queue` when no rate limit is configured (pauses only).
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_QUEUE: usize = 1000;

/// Throttle state that outlives a config reload.
#[derive(Debug, Default)]
pub struct ThrottleState {
    tat: Mutex<u64>,
    paused_until_us: AtomicU64,
    waiting: AtomicUsize,
}

/// The throttle of one upstream.
pub struct Throttle {
    upstream: Arc<str>,
    gcra: Option<Gcra>,
    max_wait: Duration,
    queue: usize,
    redis: Option<RedisHandle>,
    pub state: Arc<ThrottleState>,
}

/// Decrements the waiting count when a request stops waiting.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Throttle {
    pub fn new(
        upstream: &Arc<str>,
        cfg: Option<&UpstreamRateLimit>,
        redis: Option<RedisHandle>,
        state: Arc<ThrottleState>,
    ) -> Self {
        Self {
            upstream: upstream.clone(),
            gcra: cfg.map(|c| Gcra::new(c.rate.interval_us(), c.burst)),
            max_wait: cfg.map_or(DEFAULT_MAX_WAIT, |c| c.max_wait.get()),
            queue: cfg.map_or(DEFAULT_QUEUE, |c| c.queue),
            redis: if cfg.is_some() { redis } else { None },
            state,
        }
    }

    /// The 503; `ready_at` (clock µs) becomes its `Retry-After` when known.
    fn refuse(&self, why: &'static str, ready_at: Option<u64>) -> GatewayError {
        GatewayError::UpstreamRateLimited {
            upstream: self.upstream.to_string(),
            reason: why,
            retry_after: ready_at.map(|at| at.saturating_sub(clock_us()).div_ceil(1_000_000).max(1)),
        }
    }

    /// Waits for this request's turn; says whether it had to wait. Fast path (no limit, no
    /// pause): two atomic loads.
    pub async fn acquire(&self) -> Result<bool, GatewayError> {
        let start = clock_us();
        let paused = self.state.paused_until_us.load(Relaxed);
        if self.gcra.is_none() && paused <= start {
            return Ok(false);
        }
        // Boxed: the waiting (and Redis) machinery would otherwise weigh on every request's
        // future, throttled or not.
        Box::pin(self.wait_turn(start)).await
    }

    /// The slow path of [`Throttle::acquire`]: a limit, or a pause.
    async fn wait_turn(&self, start: u64) -> Result<bool, GatewayError> {
        let max_wait_us = self.max_wait.as_micros() as u64;
        let deadline = start + max_wait_us;
        if self.state.waiting.fetch_add(1, Relaxed) >= self.queue {
            self.state.waiting.fetch_sub(1, Relaxed);
            return Err(self.refuse("too many requests are already waiting to be sent", None));
        }
        let _waiting = Waiting(&self.state.waiting);
        let mut slept = false;
        loop {
            let now = clock_us();
            let paused = self.state.paused_until_us.load(Relaxed);
            let mut at = now.max(paused);
            if at > deadline {
                return Err(self.refuse(
                    "the upstream asked Bridgehead to pause sending for longer than max_wait",
                    Some(paused),
                ));
            }
            if let Some(gcra) = &self.gcra {
                at = self.reserve(gcra, at, deadline, &mut slept).await?;
            }
            let now = clock_us();
            if at > now {
                tokio::time::sleep(Duration::from_micros(at - now)).await;
                slept = true;
            }
            // A pause that began while we waited applies to us too.
            if self.state.paused_until_us.load(Relaxed) <= clock_us() {
                return Ok(slept);
            }
        }
    }

    /// The time from which this request may be sent, with its slot taken.
    async fn reserve(
        &self,
        gcra: &Gcra,
        from: u64,
        deadline: u64,
        slept: &mut bool,
    ) -> Result<u64, GatewayError> {
        if let Some(shared) = &self.redis
            && let Some(redis) = shared.get()
        {
            let health = &shared.health;
            let key = format!("upstream:{}", self.upstream);
            let mut at = from;
            loop {
                match redis.rate_limit(&key, gcra.interval_us, gcra.burst).await {
                    Ok(d) if d.allowed => {
                        health.succeeded("outbound rate limit");
                        return Ok(at);
                    }
                    Ok(d) => {
                        health.succeeded("outbound rate limit");
                        let next = clock_us().max(at) + d.retry_after_us;
                        if next > deadline {
                            return Err(self.refuse(
                                "the outbound rate limit would make it wait longer than max_wait",
                                Some(next),
                            ));
                        }
                        tokio::time::sleep(Duration::from_micros(next.saturating_sub(clock_us()))).await;
                        *slept = true;
                        at = next;
                    }
                    Err(e) => {
                        // Fall back to this node's own bucket while Redis is away.
                        health.failed("outbound rate limit", &e);
                        break;
                    }
                }
            }
        }
        let mut tat = self.state.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let limit = gcra.burst * gcra.interval_us;
        let next = (*tat).max(from) + gcra.interval_us;
        // The slot is `next - limit`: the earliest time the bucket has room for this request.
        let slot = next.saturating_sub(limit).max(from);
        if slot > deadline {
            return Err(
                self.refuse("the outbound rate limit would make it wait longer than max_wait", Some(slot))
            );
        }
        *tat = next;
        Ok(slot)
    }

    /// Reads an upstream answer for a request to pause: 429/503 with `Retry-After`,
    /// `X-RateLimit-Remaining: 0` (with `X-RateLimit-Reset`), or a `RateLimit` item with `r=0`.
    ///
    /// Only with a configured `rate_limit`: the gateway then owns the pace toward this upstream.
    /// Without one, an answer meant for one client's own quota must not stop everybody.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        if self.gcra.is_none() {
            return;
        }
        let Some(pause) = pause_from(status, headers) else { return };
        let until = clock_us() + pause.min(MAX_PAUSE).as_micros() as u64;
        if self.state.paused_until_us.fetch_max(until, Relaxed) < until {
            tracing::info!(upstream = %self.upstream, pause_ms = pause.as_millis() as u64, "upstream asked to pause sending");
        }
    }

    /// Microseconds until sending resumes (0 when not paused), for `/admin/upstreams`.
    pub fn paused_for_us(&self) -> u64 {
        self.state.paused_until_us.load(Relaxed).saturating_sub(clock_us())
    }
}

/// The pause an upstream's answer asks for, if any.
pub fn pause_from(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
        && let Some(d) = super::retry::parse_retry_after(headers)
    {
        return Some(d);
    }
    let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if num("x-ratelimit-remaining") == Some(0) {
        // Reset is delta seconds, or (as GitHub sends it) a Unix time.
        let reset = num("x-ratelimit-reset").unwrap_or(1);
        let now = bridgehead_http::clock::unix_now();
        let secs = if reset > 1_000_000_000 { reset.saturating_sub(now) } else { reset };
        return Some(Duration::from_secs(secs.max(1)));
    }
    // IETF draft: `RateLimit: "policy";r=0;t=30` — any item with r=0 pauses for its t.
    let v = headers.get("ratelimit")?.to_str().ok()?;
    v.split(',')
        .filter_map(|item| {
            let mut r = None;
            let mut t = None;
            for param in item.split(';').skip(1) {
                match param.trim().split_once('=') {
                    Some(("r", n)) => r = n.trim().parse::<u64>().ok(),
                    Some(("t", n)) => t = n.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            (r == Some(0)).then(|| Duration::from_secs(t.unwrap_or(1).max(1)))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgehead_config::{HumanDuration, Rate};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn pauses_from_upstream_signals() {
        let ra = headers(&[("retry-after", "3")]);
        assert_eq!(pause_from(StatusCode::TOO_MANY_REQUESTS, &ra), Some(Duration::from_secs(3)));
        assert_eq!(pause_from(StatusCode::SERVICE_UNAVAILABLE, &ra), Some(Duration::from_secs(3)));
        assert_eq!(pause_from(StatusCode::OK, &ra), None);
        let x = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "7")]);
        assert_eq!(pause_from(StatusCode::OK, &x), Some(Duration::from_secs(7)));
        let x = headers(&[("x-ratelimit-remaining", "4"), ("x-ratelimit-reset", "7")]);
        assert_eq!(pause_from(StatusCode::OK, &x), None);
        let d = headers(&[("ratelimit", "\"a\";r=5;t=1, \"b\";r=0;t=12")]);
        assert_eq!(pause_from(StatusCode::OK, &d), Some(Duration::from_secs(12)));
        let d = headers(&[("ratelimit", "\"a\";r=5;t=1")]);
        assert_eq!(pause_from(StatusCode::OK, &d), None);
    }

    fn throttle(rate: &str, burst: u64, max_wait: u64, queue: usize) -> Throttle {
        let cfg = UpstreamRateLimit {
            rate: rate.parse::<Rate>().unwrap(),
            burst,
            max_wait: HumanDuration::millis(max_wait),
            queue,
        };
        Throttle::new(&Arc::from("u"), Some(&cfg), None, Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_at_the_rate_and_refuses_past_max_wait() {
        let t = throttle("10/s", 1, 250, 100);
        let start = tokio::time::Instant::now();
        t.acquire().await.unwrap();
        t.acquire().await.unwrap();
        t.acquire().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        // Three slots ahead would be 300 ms > 250 ms when the queue is already two deep.
        let t = Arc::new(throttle("10/s", 1, 250, 100));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn({
                    let t = t.clone();
                    async move { t.acquire().await }
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        let err = results.into_iter().find_map(Result::err).unwrap();
        assert!(err.to_string().contains("longer than max_wait"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_is_bounded() {
        let t = Arc::new(throttle("1/s", 1, 10_000, 2));
        t.acquire().await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn({
                    let t = t.clone();
                    async move { t.acquire().await }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let err = t.acquire().await.unwrap_err();
        assert!(err.to_string().contains("already waiting"), "{err}");
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_pause_holds_requests_back() {
        // Without a configured limit, upstream signals change nothing.
        let free = Throttle::new(&Arc::from("u"), None, None, Arc::default());
        free.observe(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "2")]));
        assert_eq!(free.paused_for_us(), 0);
        let t = throttle("1000/s", 100, 5_000, 100);
        t.observe(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "2")]));
        assert!(t.paused_for_us() > 1_900_000);
        let start = tokio::time::Instant::now();
        t.acquire().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // A pause longer than max_wait is refused at once, with the pause as Retry-After.
        t.observe(StatusCode::SERVICE_UNAVAILABLE, &headers(&[("retry-after", "30")]));
        let err = t.acquire().await.unwrap_err();
        assert!(matches!(err, GatewayError::UpstreamRateLimited { retry_after: Some(30), .. }), "{err:?}");
    }
}
