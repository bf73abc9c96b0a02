//! The mock's own quota: `--rate-limit N/s`, a fixed window counted per server.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

/// A quota of `limit` requests per fixed `window`, written `N/s`, `N/m` or `N/h` (e.g. `5/s`).
///
/// A window starts with the first request after the previous one ended; requests within the
/// quota are served as usual, the rest get `429` with `Retry-After` until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: NonZeroU32,
    /// The window length.
    pub window: RateWindow,
}

/// The window of a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateWindow {
    /// One second, `/s`.
    Second,
    /// One minute, `/m`.
    Minute,
    /// One hour, `/h`.
    Hour,
}

impl RateWindow {
    /// The window length in seconds: 1, 60 or 3600.
    pub fn seconds(self) -> u64 {
        match self {
            RateWindow::Second => 1,
            RateWindow::Minute => 60,
            RateWindow::Hour => 3600,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RateWindow::Second => "second",
            RateWindow::Minute => "minute",
            RateWindow::Hour => "hour",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            RateWindow::Second => "s",
            RateWindow::Minute => "m",
            RateWindow::Hour => "h",
        }
    }
}

/// Why a `N/s` quota was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?} is not a quota: expected N/s, N/m or N/h with N at least 1, e.g. 5/s")]
pub struct RateLimitError {
    /// The refused text.
    pub spec: String,
}

impl FromStr for RateLimit {
    type Err = RateLimitError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let refused = || RateLimitError { spec: spec.into() };
        let (limit, window) = spec.trim().split_once('/').ok_or_else(refused)?;
        // `u32::from_str` would take "+5"; a quota is digits only.
        let limit = limit.trim();
        if limit.is_empty() || !limit.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refused());
        }
        let limit = limit.parse::<NonZeroU32>().map_err(|_| refused())?;
        let window = match window.trim() {
            "s" => RateWindow::Second,
            "m" => RateWindow::Minute,
            "h" => RateWindow::Hour,
            _ => return Err(refused()),
        };
        Ok(RateLimit { limit, window })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, self.window.suffix())
    }
}

impl serde::Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(deserializer)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A [`RateLimit`] being counted. Only servers with a quota have one, so the mutex is no cost
/// to the others; it is held for a comparison and an increment.
#[derive(Debug)]
pub(crate) struct Quota {
    limit: u32,
    window: Duration,
    name: &'static str,
    /// `RateLimit-Policy`, the same for every response.
    policy: HeaderValue,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the current window started; `None` before the first request.
    start: Option<Instant>,
    used: u32,
}

/// What the quota said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether the request is within the quota.
    pub(crate) allowed: bool,
    pub(crate) limit: u32,
    /// Requests left in the window after this one.
    pub(crate) remaining: u32,
    /// Whole seconds until the window ends, rounded up: at least 1.
    pub(crate) reset: u64,
}

impl Quota {
    pub(crate) fn new(rate: RateLimit) -> Self {
        let policy = format!("\"mock\";q={};w={}", rate.limit, rate.window.seconds());
        Quota {
            limit: rate.limit.get(),
            window: Duration::from_secs(rate.window.seconds()),
            name: rate.window.name(),
            policy: HeaderValue::try_from(policy).expect("digits and quotes are a valid header value"),
            state: Mutex::default(),
        }
    }

    /// The window in words, for messages: `second`, `minute` or `hour`.
    pub(crate) fn window_name(&self) -> &'static str {
        self.name
    }

    /// Counts a request arriving at `now` against the window `now` falls in.
    pub(crate) fn take(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let start = match state.start {
            Some(start) if now.saturating_duration_since(start) < self.window => start,
            _ => {
                *state = Window { start: Some(now), used: 0 };
                now
            }
        };
        let allowed = state.used < self.limit;
        if allowed {
            state.used += 1;
        }
        let remaining = self.limit - state.used;
        drop(state);
        let left = (start + self.window).saturating_duration_since(now);
        let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Verdict { allowed, limit: self.limit, remaining, reset: reset.max(1) }
    }

    /// Adds the quota headers of `verdict` to a response, and `Retry-After` when it was refused.
    pub(crate) fn headers(&self, verdict: Verdict, headers: &mut HeaderMap) {
        let Verdict { allowed, limit, remaining, reset } = verdict;
        headers.insert(X_LIMIT, limit.into());
        headers.insert(X_REMAINING, remaining.into());
        headers.insert(X_RESET, reset.into());
        headers.insert(POLICY, self.policy.clone());
        let state = format!("\"mock\";r={remaining};t={reset}");
        headers.insert(RATELIMIT, HeaderValue::try_from(state).expect("digits are a valid header value"));
        if !allowed {
            headers.insert(RETRY_AFTER, reset.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(spec: &str) -> Quota {
        Quota::new(spec.parse().unwrap())
    }

    #[test]
    fn parses_and_prints_quotas() {
        for (spec, limit, window, printed) in [
            ("5/s", 5, RateWindow::Second, "5/s"),
            (" 100 / m ", 100, RateWindow::Minute, "100/m"),
            ("1/h", 1, RateWindow::Hour, "1/h"),
        ] {
            let rate: RateLimit = spec.parse().unwrap();
            assert_eq!((rate.limit.get(), rate.window), (limit, window), "{spec}");
            assert_eq!(rate.to_string(), printed);
            assert_eq!(serde_json::to_value(rate).unwrap(), printed);
            assert_eq!(serde_json::from_value::<RateLimit>(printed.into()).unwrap(), rate);
        }
        for spec in ["", "5", "0/s", "-1/s", "+5/s", "5/d", "5/sec", "/s", "x/s", "99999999999/s"] {
            let err = spec.parse::<RateLimit>().unwrap_err();
            assert_eq!(err, RateLimitError { spec: spec.into() });
            assert!(err.to_string().contains("e.g. 5/s"), "{err}");
        }
        assert!(serde_json::from_value::<RateLimit>(5.into()).is_err());
    }

    #[test]
    fn allows_the_quota_then_refuses_until_the_window_ends() {
        let quota = quota("3/s");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let verdicts: Vec<_> = [0, 10, 20, 30, 999].into_iter().map(|ms| quota.take(at(ms))).collect();
        let seen: Vec<_> = verdicts.iter().map(|v| (v.allowed, v.remaining, v.reset)).collect();
        assert_eq!(seen, [(true, 2, 1), (true, 1, 1), (true, 0, 1), (false, 0, 1), (false, 0, 1)]);
        // The next window starts with the first request after the last one ended.
        let next = quota.take(at(1000));
        assert_eq!((next.allowed, next.remaining, next.reset), (true, 2, 1));
        let later = quota.take(at(1700));
        assert_eq!((later.allowed, later.remaining, later.reset), (true, 1, 1));
        let fresh = quota.take(at(5000));
        assert_eq!((fresh.allowed, fresh.remaining), (true, 2));
    }

    #[test]
    fn reset_counts_whole_seconds_left_rounded_up() {
        let quota = quota("2/m");
        let t0 = Instant::now();
        assert_eq!(quota.take(t0).reset, 60);
        assert_eq!(quota.take(t0 + Duration::from_millis(1500)).reset, 59);
        let refused = quota.take(t0 + Duration::from_secs(59));
        assert_eq!((refused.allowed, refused.reset), (false, 1));
    }

    #[test]
    fn writes_draft_and_x_headers() {
        let quota = quota("3/m");
        let t0 = Instant::now();
        let mut headers = HeaderMap::new();
        quota.headers(quota.take(t0), &mut headers);
        let get = |headers: &HeaderMap, name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get(&headers, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(get(&headers, "x-ratelimit-remaining").as_deref(), Some("2"));
        assert_eq!(get(&headers, "x-ratelimit-reset").as_deref(), Some("60"));
        assert_eq!(get(&headers, "ratelimit-policy").as_deref(), Some("\"mock\";q=3;w=60"));
        assert_eq!(get(&headers, "ratelimit").as_deref(), Some("\"mock\";r=2;t=60"));
        assert_eq!(get(&headers, "retry-after"), None);

        quota.take(t0);
        quota.take(t0);
        let mut headers = HeaderMap::new();
        quota.headers(quota.take(t0 + Duration::from_secs(20)), &mut headers);
        assert_eq!(get(&headers, "x-ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(get(&headers, "ratelimit").as_deref(), Some("\"mock\";r=0;t=40"));
        assert_eq!(get(&headers, "retry-after").as_deref(), Some("40"));
    }
}
