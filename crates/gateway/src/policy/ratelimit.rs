//! Inbound rate limits of a route: several GCRA policies, each keyed on something about the
//! request, counted in this process or (with `state.redis`) in Redis, shared by every node.
//!
//! Every response of a limited route carries the IETF draft headers (`RateLimit-Policy`,
//! `RateLimit`) and the legacy `X-RateLimit-*` trio; a refusal is 429 `quota-exceeded` with
//! `Retry-After`, naming the policy that refused.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use bridgehead_config::{OnStoreError, RateLimitHeaders, RateLimitPolicy, RequestKey};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;

use super::{RedisHandle, RequestFacts, SharedRedis};
use bridgehead_http::clock::clock_us;
use bridgehead_http::metrics::{Metrics, Name, RateLimitLabels};
use bridgehead_http::problem::GatewayError;
use bridgehead_upstream::gcra::{Decision, Gcra};

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

const SHARDS: usize = 16;
/// Buckets kept per policy and shard; full buckets are forgotten first when a shard is full.
const KEYS_PER_SHARD: usize = 65_536;

/// In-process buckets of one policy: TAT by hashed key.
struct LocalBuckets {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<u64, u64>>>,
}

impl LocalBuckets {
    fn new() -> Self {
        Self { hasher: Default::default(), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn check(&self, gcra: &Gcra, key: &[u8], now: u64) -> Decision {
        let h = self.hasher.hash_one(key);
        let mut shard =
            self.shards[(h as usize) % SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shard.len() >= KEYS_PER_SHARD && !shard.contains_key(&h) {
            // A bucket whose TAT has passed is full again: forgetting it changes nothing.
            shard.retain(|_, tat| *tat > now);
            if shard.len() > KEYS_PER_SHARD * 7 / 8 {
                // Still nearly full (a flood of distinct keys): drop an eighth at once, so the
                // next new keys do not each pay for a scan. Those keys start with a full burst.
                let drop: Vec<u64> = shard.keys().take(KEYS_PER_SHARD / 8).copied().collect();
                for k in drop {
                    shard.remove(&k);
                }
            }
        }
        let tat = shard.entry(h).or_insert(0);
        gcra.check(tat, now)
    }

    /// Gives back the slot an admitted request took, when another policy refused it.
    fn refund(&self, gcra: &Gcra, key: &[u8]) {
        let h = self.hasher.hash_one(key);
        let mut shard =
            self.shards[(h as usize) % SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tat) = shard.get_mut(&h) {
            *tat = tat.saturating_sub(gcra.interval_us);
        }
    }
}

/// One compiled policy.
struct Policy {
    name: String,
    key: RequestKey,
    gcra: Gcra,
    quota: u64,
    window_secs: u64,
    on_store_error: OnStoreError,
    local: Arc<LocalBuckets>,
    /// The Redis key prefix: `{route}:{policy}:`.
    prefix: String,
    refused: Counter,
}

/// The rate limits of one route.
pub struct RouteLimits {
    policies: Vec<Policy>,
    headers: RateLimitHeaders,
    /// `RateLimit-Policy`, the same on every response.
    policy_header: Option<HeaderValue>,
    redis: Option<RedisHandle>,
    store_errors: Counter,
    route: Arc<str>,
}

/// What the limits said about one admitted request: headers for its response.
pub type Admitted = HeaderMap;

impl RouteLimits {
    pub fn new(
        route: &Arc<str>,
        policies: &[RateLimitPolicy],
        headers: &RateLimitHeaders,
        redis: Option<RedisHandle>,
        metrics: &Metrics,
        previous: Option<&RouteLimits>,
    ) -> Self {
        let policies: Vec<Policy> = policies
            .iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_else(|| "default".into());
                let gcra = Gcra::new(p.rate.interval_us(), p.burst.unwrap_or(p.rate.count));
                // A reload keeps the buckets of a policy whose name and arithmetic did not change.
                let local = previous
                    .and_then(|prev| {
                        prev.policies.iter().find(|q| q.name == name && q.gcra == gcra && q.key == p.key)
                    })
                    .map_or_else(|| Arc::new(LocalBuckets::new()), |q| q.local.clone());
                Policy {
                    gcra,
                    quota: p.rate.count,
                    window_secs: p.rate.window_secs(),
                    key: p.key.clone(),
                    on_store_error: p.on_store_error,
                    local,
                    prefix: format!("{route}:{name}:"),
                    refused: metrics
                        .rate_limited
                        .get_or_create(&RateLimitLabels { route: Name(route.clone()), policy: name.clone() })
                        .clone(),
                    name,
                }
            })
            .collect();
        let policy_header = headers.ietf.then(|| {
            let v: Vec<String> = policies
                .iter()
                .map(|p| format!("\"{}\";q={};w={}", p.name, p.quota, p.window_secs))
                .collect();
            HeaderValue::from_str(&v.join(", ")).expect("validated policy names")
        });
        Self {
            policies,
            headers: headers.clone(),
            policy_header,
            redis,
            store_errors: metrics
                .rate_limit_store_errors
                .get_or_create(&bridgehead_http::metrics::RouteLabels { route: Name(route.clone()) })
                .clone(),
            route: route.clone(),
        }
    }

    /// Checks every policy; all must admit. Returns the headers for the response, or the 429
    /// (or, for a `closed` policy whose store is down, 503) with its headers.
    pub async fn check(&self, facts: &RequestFacts<'_>) -> Result<Admitted, GatewayError> {
        let decisions = match &self.redis {
            None => self.local(facts),
            Some(redis) => match self.shared(redis, facts).await {
                Some(d) => d,
                // The store is down: a `closed` policy refuses; the `open` ones admit, and the
                // response carries no rate-limit headers (nothing is known).
                None if self.policies.iter().any(|p| p.on_store_error == OnStoreError::Closed) => {
                    return Err(GatewayError::RateLimitUnavailable { route: self.route.to_string() });
                }
                None => Vec::new(),
            },
        };
        let headers = self.render(&decisions);
        // Of several refusing policies, the one that asks the client to wait longest.
        if let Some((i, d)) =
            decisions.iter().filter(|(_, d)| !d.allowed).max_by_key(|(_, d)| d.retry_after_us)
        {
            let p = &self.policies[*i];
            p.refused.inc();
            return Err(GatewayError::QuotaExceeded {
                policy: p.name.clone(),
                rate: format!("{}/{}s", p.quota, p.window_secs),
                retry_after: d.retry_after_us.div_ceil(1_000_000).max(1),
                headers: Box::new(headers),
            });
        }
        Ok(headers)
    }

    /// In process: policies in order, stopping at the first refusal; the ones that admitted the
    /// refused request give their slot back, and later ones are not charged.
    fn local(&self, facts: &RequestFacts<'_>) -> Vec<(usize, Decision)> {
        let now = clock_us();
        let mut decisions: Vec<(usize, Decision)> = Vec::with_capacity(self.policies.len());
        for (i, p) in self.policies.iter().enumerate() {
            let decision = p.local.check(&p.gcra, &facts.key(&p.key), now);
            decisions.push((i, decision));
            if !decision.allowed {
                for (j, _) in decisions.iter().filter(|(_, d)| d.allowed) {
                    let q = &self.policies[*j];
                    q.local.refund(&q.gcra, &facts.key(&q.key));
                }
                break;
            }
        }
        decisions
    }

    /// In Redis: every policy in one atomic script, which charges all buckets or none.
    async fn shared(&self, shared: &SharedRedis, facts: &RequestFacts<'_>) -> Option<Vec<(usize, Decision)>> {
        let health = &shared.health;
        let Some(redis) = shared.get() else {
            self.store_errors.inc();
            return None;
        };
        let keys: Vec<String> =
            self.policies.iter().map(|p| format!("{}{}", p.prefix, key_text(&facts.key(&p.key)))).collect();
        let buckets: Vec<(&str, u64, u64)> = self
            .policies
            .iter()
            .zip(&keys)
            .map(|(p, k)| (k.as_str(), p.gcra.interval_us, p.gcra.burst))
            .collect();
        // One policy: the single-bucket script, which is cheaper to run.
        let result = match buckets[..] {
            [(key, interval, burst)] => redis.rate_limit(key, interval, burst).await.map(|d| vec![d]),
            _ => redis.rate_limit_all(&buckets).await,
        };
        match result {
            Ok(ds) => {
                health.succeeded("rate limits");
                Some(
                    ds.into_iter()
                        .map(|d| Decision {
                            allowed: d.allowed,
                            remaining: d.remaining,
                            reset_us: d.reset_us,
                            retry_after_us: d.retry_after_us,
                        })
                        .enumerate()
                        .collect(),
                )
            }
            Err(e) => {
                self.store_errors.inc();
                health.failed("rate limits", &e);
                None
            }
        }
    }

    fn render(&self, decisions: &[(usize, Decision)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        if decisions.is_empty() {
            return h;
        }
        if let Some(v) = &self.policy_header {
            h.insert(RATELIMIT_POLICY.clone(), v.clone());
            let items: Vec<String> = decisions
                .iter()
                .map(|(i, d)| {
                    format!("\"{}\";r={};t={}", self.policies[*i].name, d.remaining, secs(d.reset_us))
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&items.join(", ")) {
                h.insert(RATELIMIT.clone(), v);
            }
        }
        if self.headers.legacy {
            // The legacy trio describes one policy: the one closest to refusing.
            let (i, d) = decisions
                .iter()
                .min_by_key(|(i, d)| (d.allowed, d.remaining, u64::MAX - self.policies[*i].window_secs))
                .expect("not empty");
            // The bucket's capacity: what `Remaining` counts down from.
            h.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(self.policies[*i].gcra.burst));
            h.insert(X_RATELIMIT_REMAINING.clone(), HeaderValue::from(d.remaining));
            h.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(secs(d.reset_us)));
        }
        h
    }
}

/// Whole seconds, rounded up.
fn secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// A request key as Redis key text: short printable values as they are (readable with
/// `redis-cli`), anything else as `#` and its SHA-256 (a raw value never contains `#`, so the
/// two forms cannot meet).
fn key_text(key: &[u8]) -> String {
    if key.len() <= 64 && key.iter().all(|b| b.is_ascii_graphic() && *b != b'#') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
        let digest = digest.as_ref();
        let mut s = String::from("#");
        for b in &digest[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgehead_config::Rate;

    fn policy(name: Option<&str>, key: RequestKey, rate: Rate, burst: Option<u64>) -> RateLimitPolicy {
        RateLimitPolicy { name: name.map(Into::into), key, rate, burst, on_store_error: OnStoreError::Open }
    }

    fn facts(headers: &HeaderMap) -> RequestFacts<'_> {
        RequestFacts { headers, client: "127.0.0.1".parse().unwrap(), consumer: Some("acme") }
    }

    #[tokio::test(start_paused = true)]
    async fn headers_and_refusal() {
        let m = Metrics::default();
        let limits = RouteLimits::new(
            &Arc::from("r"),
            &[policy(None, RequestKey::Consumer, Rate::per_second(2), None)],
            &RateLimitHeaders::default(),
            None,
            &m,
            None,
        );
        let h = HeaderMap::new();
        let first = limits.check(&facts(&h)).await.unwrap();
        assert_eq!(first["ratelimit-policy"], "\"default\";q=2;w=1");
        assert_eq!(first["ratelimit"], "\"default\";r=1;t=1");
        assert_eq!(first["x-ratelimit-limit"], "2");
        assert_eq!(first["x-ratelimit-remaining"], "1");
        assert_eq!(first["x-ratelimit-reset"], "1");
        limits.check(&facts(&h)).await.unwrap();
        match limits.check(&facts(&h)).await {
            Err(GatewayError::QuotaExceeded { policy, retry_after, headers, .. }) => {
                assert_eq!((policy.as_str(), retry_after), ("default", 1));
                assert_eq!(headers["ratelimit"], "\"default\";r=0;t=1");
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert!(limits.check(&facts(&h)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn several_policies_all_must_admit_and_legacy_shows_the_tightest() {
        let m = Metrics::default();
        let limits = RouteLimits::new(
            &Arc::from("r"),
            &[
                policy(Some("burst"), RequestKey::Ip, Rate::per_second(100), Some(200)),
                policy(Some("hourly"), RequestKey::Route, "3/h".parse().unwrap(), None),
            ],
            &RateLimitHeaders { ietf: true, legacy: true },
            None,
            &m,
            None,
        );
        let h = HeaderMap::new();
        let ok = limits.check(&facts(&h)).await.unwrap();
        assert_eq!(ok["ratelimit-policy"], "\"burst\";q=100;w=1, \"hourly\";q=3;w=3600");
        assert_eq!(ok["ratelimit"], "\"burst\";r=199;t=1, \"hourly\";r=2;t=1200");
        assert_eq!(ok["x-ratelimit-limit"], "3");
        limits.check(&facts(&h)).await.unwrap();
        limits.check(&facts(&h)).await.unwrap();
        let Err(GatewayError::QuotaExceeded { policy, retry_after, .. }) = limits.check(&facts(&h)).await
        else {
            panic!()
        };
        assert_eq!((policy.as_str(), retry_after), ("hourly", 1200));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_buckets_and_families_can_be_off() {
        let m = Metrics::default();
        let limits = RouteLimits::new(
            &Arc::from("r"),
            &[policy(None, RequestKey::Header("x-tenant".into()), Rate::per_second(1), None)],
            &RateLimitHeaders { ietf: false, legacy: true },
            None,
            &m,
            None,
        );
        let mut a = HeaderMap::new();
        a.insert("x-tenant", "a".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("x-tenant", "b".parse().unwrap());
        let ok = limits.check(&facts(&a)).await.unwrap();
        assert!(!ok.contains_key("ratelimit") && !ok.contains_key("ratelimit-policy"));
        assert!(limits.check(&facts(&a)).await.is_err());
        assert!(limits.check(&facts(&b)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_by_one_policy_spends_nothing_of_the_others_and_reloads_keep_buckets() {
        let m = Metrics::default();
        let policies = [
            policy(Some("wide"), RequestKey::Route, "10/h".parse().unwrap(), None),
            policy(Some("narrow"), RequestKey::Route, "1/h".parse().unwrap(), None),
        ];
        let limits =
            RouteLimits::new(&Arc::from("r"), &policies, &RateLimitHeaders::default(), None, &m, None);
        let h = HeaderMap::new();
        limits.check(&facts(&h)).await.unwrap();
        for _ in 0..5 {
            assert!(limits.check(&facts(&h)).await.is_err());
        }
        // Only the admitted request counted against `wide`.
        let again = RouteLimits::new(
            &Arc::from("r"),
            &policies[..1],
            &RateLimitHeaders::default(),
            None,
            &m,
            Some(&limits),
        );
        assert_eq!(again.check(&facts(&h)).await.unwrap()["ratelimit"], "\"wide\";r=8;t=720");
        // Refused by the first policy: the later one is not charged at all.
        let reversed = [policies[1].clone(), policies[0].clone()];
        let rev = RouteLimits::new(&Arc::from("r2"), &reversed, &RateLimitHeaders::default(), None, &m, None);
        rev.check(&facts(&h)).await.unwrap();
        for _ in 0..5 {
            assert!(rev.check(&facts(&h)).await.is_err());
        }
        let wide_only = RouteLimits::new(
            &Arc::from("r2"),
            &reversed[1..],
            &RateLimitHeaders::default(),
            None,
            &m,
            Some(&rev),
        );
        assert_eq!(wide_only.check(&facts(&h)).await.unwrap()["ratelimit"], "\"wide\";r=8;t=720");
        // A changed rate starts fresh buckets.
        let changed = [policy(Some("wide"), RequestKey::Route, "20/h".parse().unwrap(), None)];
        let fresh =
            RouteLimits::new(&Arc::from("r"), &changed, &RateLimitHeaders::default(), None, &m, Some(&again));
        assert_eq!(fresh.check(&facts(&h)).await.unwrap()["ratelimit"], "\"wide\";r=19;t=180");
    }

    #[test]
    fn redis_key_text() {
        assert_eq!(key_text(b"acme"), "acme");
        assert_eq!(key_text(&[10, 0, 0, 1]).len(), 33);
        assert!(key_text(b"a b").starts_with('#'));
        assert!(key_text(b"#0123").starts_with("#") && key_text(b"#0123").len() == 33);
    }
}
