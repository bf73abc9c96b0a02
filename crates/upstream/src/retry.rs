//! Retries toward an upstream: which failures are retried, how long to wait (exponential backoff
//! with full jitter, or the upstream's `Retry-After`), and the budget that keeps retries from
//! multiplying an outage.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bridgehead_config::{Retry as Config, RetryOn};
use http::{HeaderMap, Method, StatusCode};

use bridgehead_http::clock::clock_us;

/// Why a try failed, in the vocabulary of `retry.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Reset,
    Status(StatusCode),
    /// A gRPC call failed with this status.
    Grpc(u32),
}

/// A compiled retry policy of one upstream.
#[derive(Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
    pub max_body: u64,
    budget: Budget,
}

impl RetryPolicy {
    pub fn new(cfg: &Config) -> Self {
        Self {
            attempts: cfg.attempts,
            backoff: cfg.backoff.get(),
            max_backoff: cfg.max_backoff.get(),
            on: cfg.on.clone(),
            per_try_timeout: cfg.per_try_timeout.map(bridgehead_config::HumanDuration::get),
            max_body: cfg.max_body.get(),
            budget: Budget::new(cfg.budget_window.get(), cfg.budget_ratio, cfg.min_retries),
        }
    }

    /// Whether a request may be retried at all: an idempotent method (RFC 9110 §9.2.2), or a
    /// request carrying an `Idempotency-Key` (the upstream or the gateway deduplicates it).
    pub fn request_is_retryable(method: &Method, has_idempotency_key: bool) -> bool {
        has_idempotency_key
            || matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
            )
    }

    /// Whether this failure is one `retry.on` names.
    pub fn retries_on(&self, failure: Failure) -> bool {
        self.on.iter().any(|on| match (on, failure) {
            (RetryOn::ConnectError, Failure::Connect) => true,
            (RetryOn::Timeout, Failure::Timeout) => true,
            (RetryOn::Reset, Failure::Reset) => true,
            (RetryOn::Status(s), Failure::Status(got)) => *s == got.as_u16(),
            (RetryOn::Grpc(want), Failure::Grpc(got)) => *want == got,
            _ => false,
        })
    }

    /// Counts one request (its first try) toward the budget.
    pub fn count_request(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn take_retry(&self) -> bool {
        self.budget.withdraw()
    }

    /// The wait before retry number `retry` (1 for the first retry): a uniform draw between 0
    /// and `backoff × 2^(retry-1)`, capped at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }

    /// The wait before retrying an answer: the upstream's `Retry-After` when it is one we
    /// honour (at most `max_backoff`), else the backoff for retry number `retry`; `None` when the
    /// upstream asked for longer, so its answer is passed on instead.
    pub fn wait_after(&self, headers: &HeaderMap, retry: u32) -> Option<Duration> {
        match parse_retry_after(headers) {
            None => Some(self.backoff(retry)),
            Some(d) if d <= self.max_backoff => Some(d),
            Some(_) => None,
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3), as a wait from now.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(v)?;
    Some(at.duration_since(bridgehead_http::clock::wall()).unwrap_or(Duration::ZERO))
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(&imf_to_rfc3339(v)?).ok()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → `1994-11-06 08:49:37` (IMF-fixdate only, the form
/// RFC 9110 requires senders to use).
fn imf_to_rfc3339(v: &str) -> Option<String> {
    let mut it = v.split_ascii_whitespace();
    let _day = it.next()?;
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = it.next()?.parse().ok()?;
    let time = it.next()?;
    (it.next()? == "GMT").then(|| format!("{year:04}-{month:02}-{day:02} {time}"))
}

const SLOTS: usize = 10;

/// The retry budget: retries in the sliding window may be at most `ratio` × requests in the
/// window, plus `min_retries`. Ten slots of atomics, no lock.
#[derive(Debug)]
struct Budget {
    slot_us: u64,
    ratio: f64,
    min_retries: u32,
    slots: [(AtomicU64, AtomicU32, AtomicU32); SLOTS],
}

impl Budget {
    fn new(window: Duration, ratio: f64, min_retries: u32) -> Self {
        Self {
            slot_us: (window.as_micros() as u64 / SLOTS as u64).max(1),
            ratio,
            min_retries,
            slots: Default::default(),
        }
    }

    fn slot(&self, now: u64) -> &(AtomicU64, AtomicU32, AtomicU32) {
        let epoch = now / self.slot_us + 1;
        let s = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = s.0.load(Relaxed);
        if seen != epoch && s.0.compare_exchange(seen, epoch, Relaxed, Relaxed).is_ok() {
            s.1.store(0, Relaxed);
            s.2.store(0, Relaxed);
        }
        s
    }

    fn totals(&self, now: u64) -> (u64, u64) {
        let epoch = now / self.slot_us + 1;
        let live = epoch.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| (live..=epoch).contains(&s.0.load(Relaxed)))
            .fold((0, 0), |(r, t), s| (r + u64::from(s.1.load(Relaxed)), t + u64::from(s.2.load(Relaxed))))
    }

    fn deposit(&self) {
        self.slot(clock_us()).1.fetch_add(1, Relaxed);
    }

    fn withdraw(&self) -> bool {
        let now = clock_us();
        let (requests, retries) = self.totals(now);
        if (retries + 1) as f64 > self.ratio * requests as f64 + f64::from(self.min_retries) {
            return false;
        }
        self.slot(now).2.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgehead_config::HumanDuration;

    fn policy(ratio: f64, min_retries: u32) -> RetryPolicy {
        RetryPolicy::new(&Config {
            budget_ratio: ratio,
            min_retries,
            backoff: HumanDuration::millis(100),
            max_backoff: HumanDuration::secs(1),
            ..Config::default()
        })
    }

    #[test]
    fn which_requests_and_failures_are_retried() {
        assert!(RetryPolicy::request_is_retryable(&Method::GET, false));
        assert!(RetryPolicy::request_is_retryable(&Method::PUT, false));
        assert!(!RetryPolicy::request_is_retryable(&Method::POST, false));
        assert!(RetryPolicy::request_is_retryable(&Method::POST, true));
        let p = policy(0.2, 0);
        assert!(p.retries_on(Failure::Connect));
        assert!(p.retries_on(Failure::Status(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!p.retries_on(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!p.retries_on(Failure::Timeout));
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = policy(0.2, 0);
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
        // Full jitter: the draws spread over the whole range.
        let draws: Vec<Duration> = (0..200).map(|_| p.backoff(4)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(600)));
    }

    #[test]
    fn retry_after_forms() {
        let p = policy(0.2, 0);
        let mut h = HeaderMap::new();
        assert!(p.wait_after(&h, 1).is_some_and(|d| d <= Duration::from_millis(100)));
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(p.wait_after(&h, 1), Some(Duration::from_secs(1)));
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(p.wait_after(&h, 1), None);
        h.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(p.wait_after(&h, 1), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert!(p.wait_after(&h, 1).is_some_and(|d| d <= Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_at_the_ratio() {
        let p = policy(0.2, 0);
        for _ in 0..100 {
            p.count_request();
        }
        let granted = (0..100).filter(|_| p.take_retry()).count();
        assert_eq!(granted, 20);
        // The window slides: a window later the old requests and retries are gone.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!p.take_retry());
        let floor = policy(0.2, 3);
        assert_eq!((0..10).filter(|_| floor.take_retry()).count(), 3);
    }
}
