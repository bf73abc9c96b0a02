//! Fault settings: what `--latency`, `--fail-*`, `--retry-after` and `--rate-limit` start with,
//! what `/__mock/faults` and [`MockServer::set_faults`](crate::MockServer::set_faults) replace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::MockBody;
use crate::options::{DEFAULT_FAIL_STATUS, InvalidOptions};
use crate::problem::{problem, problem_body};
use crate::ratelimit::{Quota, RateLimit};

/// The faults a mock injects; [`Default`] is none at all.
///
/// As JSON (`GET`/`PUT /__mock/faults`) every field is optional and an absent one takes its
/// default: `{"fail_rate":0.5,"fail_status":503,"retry_after":2,"fail_first":3,"latency":"100ms",
/// "rate_limit":"5/s"}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability, 0.0 to 1.0, that a request gets the injected failure; 0.0 is off.
    pub fail_rate: f64,
    /// Status of injected failures, 200 to 599; 503 by default.
    pub fail_status: u16,
    /// `Retry-After` seconds sent with injected failures; none by default.
    pub retry_after: Option<u64>,
    /// How many requests, counted from when these faults were set, get the injected failure
    /// before normal service; 0 is off.
    pub fail_first: u64,
    /// Delay added before every response; in JSON a duration string such as `"100ms"`.
    #[serde(with = "duration_text")]
    pub latency: Option<Duration>,
    /// The mock's own quota, e.g. `5/s`; over it requests get 429. Restarts when set.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_rate: 0.0,
            fail_status: DEFAULT_FAIL_STATUS,
            retry_after: None,
            fail_first: 0,
            latency: None,
            rate_limit: None,
        }
    }
}

impl Faults {
    /// Checks the values a type cannot: `fail_rate` in `0.0..=1.0`, `fail_status` in `200..=599`.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(InvalidOptions::FailRate(self.fail_rate));
        }
        if !(200..=599).contains(&self.fail_status) {
            return Err(InvalidOptions::FailStatus(self.fail_status));
        }
        Ok(())
    }
}

/// `Option<Duration>` as an optional humantime string, `"1s 500ms"`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.collect_str(&humantime::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        humantime::parse_duration(text.trim()).map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a duration, e.g. \"100ms\" or \"1s 500ms\""))
        })
    }
}

/// The faults in force, swapped whole: a request takes one snapshot and keeps it.
#[derive(Debug)]
pub(crate) struct FaultSwitch {
    active: RwLock<Arc<ActiveFaults>>,
}

impl FaultSwitch {
    /// `faults` must be valid ([`Faults::validate`]).
    pub(crate) fn new(faults: Faults) -> Self {
        FaultSwitch { active: RwLock::new(Arc::new(ActiveFaults::new(faults))) }
    }

    /// The faults in force, for one request: a read lock held for an `Arc` clone.
    pub(crate) fn load(&self) -> Arc<ActiveFaults> {
        Arc::clone(&self.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the faults; counting (`fail_first`, the quota window) starts over.
    pub(crate) fn set(&self, faults: Faults) -> Result<(), InvalidOptions> {
        faults.validate()?;
        // Built before taking the lock, so the lock covers only the swap.
        let active = Arc::new(ActiveFaults::new(faults));
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = active;
        Ok(())
    }
}

/// [`Faults`] ready to apply: the failure response rendered once, the counters live.
#[derive(Debug)]
pub(crate) struct ActiveFaults {
    pub(crate) faults: Faults,
    pub(crate) latency: Duration,
    pub(crate) quota: Option<Quota>,
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    fail_rate_body: Bytes,
    /// Of `faults.fail_first`, how many failures are still to come.
    fail_first_left: AtomicU64,
}

impl ActiveFaults {
    fn new(faults: Faults) -> Self {
        let status = StatusCode::from_u16(faults.fail_status).expect("validated fail_status");
        ActiveFaults {
            latency: faults.latency.unwrap_or_default(),
            quota: faults.rate_limit.map(Quota::new),
            status,
            retry_after: faults.retry_after.map(HeaderValue::from),
            fail_rate_body: problem_body(
                status,
                "injected failure",
                "bridgehead mock injected this failure (--fail-rate)",
            ),
            fail_first_left: AtomicU64::new(faults.fail_first),
            faults,
        }
    }

    /// The injected failure for this request, if it gets one: `fail_first` before `fail_rate`.
    pub(crate) fn failure(&self) -> Option<Response<MockBody>> {
        let body = if self.faults.fail_first > 0
            && let Ok(left) =
                self.fail_first_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            let total = self.faults.fail_first;
            let nth = total - left + 1;
            let detail = format!("bridgehead mock injected this failure (--fail-first: {nth} of {total})");
            problem_body(self.status, "injected failure", &detail)
        } else if self.faults.fail_rate > 0.0 && fastrand::f64() < self.faults.fail_rate {
            self.fail_rate_body.clone()
        } else {
            return None;
        };
        let mut response = problem(self.status, body);
        if let Some(retry_after) = &self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, retry_after.clone());
        }
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_and_absent_fields_take_defaults() {
        let none = serde_json::to_value(Faults::default()).unwrap();
        assert_eq!(
            none,
            json!({"fail_rate":0.0,"fail_status":503,"retry_after":null,"fail_first":0,"latency":null,
                   "rate_limit":null})
        );
        assert_eq!(serde_json::from_value::<Faults>(json!({})).unwrap(), Faults::default());
        let all = json!({"fail_rate":0.5,"fail_status":429,"retry_after":2,"fail_first":3,
                         "latency":"1s 500ms","rate_limit":"5/s"});
        let faults: Faults = serde_json::from_value(all.clone()).unwrap();
        assert_eq!(
            faults,
            Faults {
                fail_rate: 0.5,
                fail_status: 429,
                retry_after: Some(2),
                fail_first: 3,
                latency: Some(Duration::from_millis(1500)),
                rate_limit: Some("5/s".parse().unwrap()),
            }
        );
        assert_eq!(serde_json::to_value(&faults).unwrap(), all);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_strings() {
        for (body, needle) in [
            (json!({"fail_rates":0.5}), "unknown field `fail_rates`"),
            (json!({"latency":"soon"}), "\"soon\" is not a duration"),
            (json!({"latency":100}), "invalid type"),
            (json!({"rate_limit":"5/d"}), "e.g. 5/s"),
        ] {
            let err = serde_json::from_value::<Faults>(body.clone()).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn validates_rate_and_status() {
        assert_eq!(Faults::default().validate(), Ok(()));
        let rate = Faults { fail_rate: -0.1, ..Faults::default() };
        assert_eq!(rate.validate(), Err(InvalidOptions::FailRate(-0.1)));
        let status = Faults { fail_status: 600, ..Faults::default() };
        assert_eq!(status.validate(), Err(InvalidOptions::FailStatus(600)));
        let switch = FaultSwitch::new(Faults::default());
        assert!(switch.set(rate).is_err());
        assert_eq!(switch.load().faults, Faults::default(), "a refused set changes nothing");
    }

    #[test]
    fn fail_first_fails_exactly_n_then_serves_and_restarts_when_set() {
        let switch = FaultSwitch::new(Faults { fail_first: 2, retry_after: Some(7), ..Faults::default() });
        let active = switch.load();
        let first = active.failure().expect("first fails");
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(first.headers()[RETRY_AFTER], "7");
        assert!(active.failure().is_some());
        assert!((0..10).all(|_| active.failure().is_none()));

        switch.set(Faults { fail_first: 1, fail_status: 500, ..Faults::default() }).unwrap();
        let active = switch.load();
        let again = active.failure().expect("counting restarts");
        assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(again.headers().get(RETRY_AFTER).is_none());
        assert!(active.failure().is_none());
    }

    #[test]
    fn no_faults_never_fail() {
        let active = FaultSwitch::new(Faults::default()).load();
        assert!((0..100).all(|_| active.failure().is_none()));
        assert!(active.quota.is_none());
        assert!(active.latency.is_zero());
    }
}
