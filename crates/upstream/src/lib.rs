//! Upstreams: their targets, target selection, passive ejection, the transport (HTTP/1.1 pool
//! or HTTP/2 connections), and the sender that tries a request until it has an answer to pass
//! on ([`send`]), with retries ([`retry`]), circuit breakers ([`breaker`]), the outbound
//! throttle ([`outbound`]) and upstream credentials ([`credentials`]).
//!
//! Invariant: nothing here knows routes or client connections; the gateway's pipeline calls
//! the sender with a request it has filtered, a background task with one it made.
//!
//! Target health lives in [`TargetState`], shared by every config generation that names the
//! same upstream and URL, so a reload neither forgets that a target is down nor drops pooled
//! connections (the client is reused too when its settings did not change).
//!
//! Selection is lock-free. Weighted round robin walks a precomputed "wheel" (the smooth
//! weighted round-robin sequence, as in nginx) with one atomic counter, so a 99/1 split sends
//! exactly one request in a hundred to the canary. Least-requests draws two targets from the
//! wheel at random (so by weight) and takes the one with fewer requests in flight per unit of
//! weight. Unavailable targets (failed active checks, or passively ejected) are skipped.

pub mod breaker;
pub mod classify;
pub mod credentials;
pub mod fetch;
pub mod gcra;
pub mod health;
pub mod outbound;
pub mod redis;
pub mod retry;
pub mod send;
pub mod tls;
pub mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use bridgehead_config::{
    HealthCheck, LoadBalancing, PassiveHealth, Upstream as UpstreamConfig, UpstreamProtocol, UpstreamTimeouts,
};

use prometheus_client::metrics::counter::Counter;

use bridgehead_config::{BuildError, CircuitBreaker as CircuitBreakerConfig, RequestKey};
use prometheus_client::metrics::gauge::Gauge;

use crate::breaker::{Breaker, State as BreakerState};
use crate::outbound::{Throttle, ThrottleState};
use crate::redis::RedisHandle;
use crate::retry::RetryPolicy;
use bridgehead_http::metrics::{Metrics, Name, TargetLabels, UpstreamLabels, outcome};

pub use bridgehead_http::clock::clock_ms;

/// 64-bit FNV-1a with a final mix: stable across processes and nodes (unlike `RandomState`),
/// so every node hashes a sticky key to the same target.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Health of one target, kept across config reloads.
#[derive(Debug)]
pub struct TargetState {
    /// Result of active health checks; true until a check says otherwise.
    healthy: AtomicBool,
    check_passes: AtomicU32,
    check_failures: AtomicU32,
    /// Passive ejection: out of rotation until this `clock_ms` instant.
    ejected_until: AtomicU64,
    consecutive_failures: AtomicU32,
    in_flight: AtomicUsize,
    /// Used only when the upstream has a `circuit_breaker`.
    pub breaker: Breaker,
}

impl Default for TargetState {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            check_passes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            breaker: Breaker::default(),
        }
    }
}

/// One target of an upstream.
#[derive(Debug)]
pub struct Target {
    /// The URL as configured; the `target` metric label.
    pub url: Arc<str>,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub weight: u32,
    pub state: Arc<TargetState>,
    /// This target's `outcome="success"` series, looked up once (the common case).
    pub success: Counter,
    /// The connections to this target (of the upstream's transport).
    pub conns: Arc<transport::TargetConns>,
    /// `Host` for a request that carries none: the target's authority.
    pub host: http::HeaderValue,
    /// This target's `bridgehead_circuit_breaker_state` series.
    breaker_gauge: Gauge,
}

impl Target {
    /// Whether the target may take traffic now.
    pub fn available(&self, now_ms: u64) -> bool {
        self.state.healthy.load(Relaxed) && self.state.ejected_until.load(Relaxed) <= now_ms
    }

    pub fn healthy_by_checks(&self) -> bool {
        self.state.healthy.load(Relaxed)
    }

    pub fn ejected(&self, now_ms: u64) -> bool {
        self.state.ejected_until.load(Relaxed) > now_ms
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Relaxed);
        InFlight(self.state.clone())
    }
}

/// Decrements a target's in-flight count when dropped.
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A compiled upstream.
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    /// Indices into `targets`, in smooth weighted round-robin order.
    wheel: Vec<u32>,
    next: AtomicUsize,
    balancing: LoadBalancing,
    /// HTTP/1.1 or HTTP/2 toward the targets.
    pub transport: transport::Transport,
    client_key: Option<String>,
    /// The credential added to every forwarded request.
    pub credentials: Option<credentials::Credentials>,
    pub timeouts: UpstreamTimeouts,
    pub passive: PassiveHealth,
    pub health_check: Option<HealthCheck>,
    pub breaker: Option<CircuitBreakerConfig>,
    pub retry: Option<RetryPolicy>,
    pub throttle: Throttle,
    pub sticky: Option<RequestKey>,
}

/// Why no target could be picked.
pub enum NoTarget {
    /// Every target is unhealthy, ejected or drained.
    Unhealthy,
    /// Some targets are healthy but their circuit breakers are open; the soonest reopens in
    /// this many seconds.
    CircuitOpen(u64),
}

/// What a previous config generation had, for reuse by the next one.
#[derive(Default)]
pub struct Carryover {
    states: HashMap<(String, String), Arc<TargetState>>,
    clients: HashMap<String, (Option<String>, transport::Transport)>,
    /// OAuth 2.0 token providers by upstream name, with the settings they were made for, so a
    /// reload keeps a cached token.
    pub(crate) tokens: HashMap<String, Arc<credentials::TokenProvider>>,
    /// Outbound throttle state (pauses, the bucket) by upstream name.
    throttles: HashMap<String, Arc<ThrottleState>>,
}

impl Carryover {
    pub fn from_upstreams<'a>(upstreams: impl Iterator<Item = &'a Arc<Upstream>>) -> Self {
        let mut c = Carryover::default();
        for u in upstreams {
            for t in &u.targets {
                c.states.insert((u.name.to_string(), t.url.to_string()), t.state.clone());
            }
            c.clients.insert(u.name.to_string(), (u.client_key.clone(), u.transport.clone()));
            c.throttles.insert(u.name.to_string(), u.throttle.state.clone());
            if let Some(credentials::Credentials::OAuth2(p)) = &u.credentials {
                c.tokens.insert(u.name.to_string(), p.clone());
            }
        }
        c
    }
}

/// What decides whether a transport (its pooled connections) can be reused; `None` (never
/// reused) when the upstream has TLS settings, whose files may have changed.
fn client_key(cfg: &UpstreamConfig) -> Option<String> {
    let t = &cfg.timeouts;
    cfg.tls.is_none().then(|| format!("{:?}/{:?}/{:?}/{:?}", t.connect, t.pool_idle, cfg.protocol, cfg.http2))
}

fn new_transport(cfg: &UpstreamConfig, tls: rustls::ClientConfig, public_only: bool) -> transport::Transport {
    let server_name = cfg.tls.as_ref().and_then(|t| t.server_name.as_deref());
    let http2 = (cfg.protocol != UpstreamProtocol::Http1).then(|| {
        let tls = cfg.targets.iter().any(|t| t.url.starts_with("https://")).then(|| tls.clone());
        let auto = cfg.protocol == UpstreamProtocol::Auto;
        transport::Http2Pool::new(cfg.http2.clone(), cfg.timeouts.connect.get(), tls, server_name, auto)
    });
    transport::Transport::new(
        cfg.protocol,
        cfg.timeouts.connect.get(),
        cfg.timeouts.pool_idle.get(),
        tls,
        server_name,
        http2,
        public_only,
    )
}

impl Upstream {
    /// Compiles a plain-HTTP upstream without credentials (for tests).
    pub fn new(name: &str, cfg: &UpstreamConfig, carry: &Carryover) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Self::with_parts(name, cfg, carry, tls, None, None, false)
    }

    /// Compiles an upstream with its TLS settings and credentials.
    pub fn build(
        name: &str,
        cfg: &UpstreamConfig,
        carry: &Carryover,
        loaded: &bridgehead_config::LoadedConfig,
        metrics: &Metrics,
        redis: Option<&RedisHandle>,
    ) -> Result<Self, BuildError> {
        let base = format!("upstreams.{name}");
        let tls = tls::client_config(&base, cfg.tls.as_ref(), loaded)?;
        let credentials = cfg
            .credentials
            .as_ref()
            .map(|c| {
                credentials::Credentials::build(
                    &format!("{base}.credentials"),
                    name,
                    c,
                    carry,
                    loaded,
                    metrics,
                )
            })
            .transpose()?;
        Ok(Self::with_parts(name, cfg, carry, tls, credentials, redis, false))
    }

    fn with_parts(
        name: &str,
        cfg: &UpstreamConfig,
        carry: &Carryover,
        tls: rustls::ClientConfig,
        credentials: Option<credentials::Credentials>,
        redis: Option<&RedisHandle>,
        public_only: bool,
    ) -> Self {
        // The guard is part of the transport: a transport is reused only with the same one.
        let key = client_key(cfg).map(|k| format!("{k}/{public_only}"));
        let transport = match carry.clients.get(name) {
            Some((Some(k), c)) if key.as_ref() == Some(k) => c.clone(),
            _ => new_transport(cfg, tls, public_only),
        };
        let targets: Vec<Target> = cfg
            .targets
            .iter()
            .filter_map(|t| {
                let uri = bridgehead_config::check_target_url(&t.url).ok()?;
                let parts = uri.into_parts();
                let authority = parts.authority?;
                Some(Target {
                    url: t.url.as_str().into(),
                    scheme: parts.scheme?,
                    host: http::HeaderValue::from_str(authority.as_str()).ok()?,
                    authority,
                    conns: transport.conns(&t.url),
                    weight: t.weight,
                    state: carry.states.get(&(name.to_owned(), t.url.clone())).cloned().unwrap_or_default(),
                    success: Counter::default(),
                    breaker_gauge: Gauge::default(),
                })
            })
            .collect();
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let name: Arc<str> = name.into();
        let throttle = Throttle::new(
            &name,
            cfg.rate_limit.as_ref(),
            redis.cloned(),
            carry.throttles.get(name.as_ref()).cloned().unwrap_or_default(),
        );
        Self {
            throttle,
            breaker: cfg.circuit_breaker.clone(),
            retry: cfg.retry.as_ref().map(RetryPolicy::new),
            sticky: cfg.sticky.clone(),
            name,
            wheel: wheel(&weights),
            targets,
            next: AtomicUsize::new(0),
            balancing: cfg.load_balancing,
            transport,
            client_key: key,
            credentials,
            timeouts: cfg.timeouts.clone(),
            passive: cfg.passive_health.clone(),
            health_check: cfg.health_check.clone(),
        }
    }

    /// Binds each target's success counter to the registry's series.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        for t in &mut self.targets {
            let labels = UpstreamLabels {
                upstream: Name(self.name.clone()),
                target: Name(t.url.clone()),
                outcome: outcome::SUCCESS,
            };
            t.success = metrics.upstream_requests.get_or_create(&labels).clone();
            if let Some(cfg) = &self.breaker {
                let labels = TargetLabels { upstream: Name(self.name.clone()), target: Name(t.url.clone()) };
                t.breaker_gauge = metrics.circuit_breaker_state.get_or_create(&labels).clone();
                t.breaker_gauge.set(t.state.breaker.state(cfg, clock_ms()) as i64);
            }
        }
        self
    }

    /// Whether `target` may be picked now: healthy, not ejected, breaker not open.
    fn pickable(&self, t: &Target, now: u64) -> bool {
        t.available(now) && self.breaker.as_ref().is_none_or(|b| t.state.breaker.available(b, now))
    }

    /// Picks a target: by the sticky key when the upstream has one and the request carries it,
    /// else by `load_balancing`. Takes a probe slot of a half-open breaker.
    pub fn pick(&self, sticky: Option<&[u8]>) -> Result<&Target, NoTarget> {
        let now = clock_ms();
        for _ in 0..3 {
            let chosen = match sticky {
                Some(key) => self.rendezvous(key, now),
                None => self.select_with(now),
            };
            let Some(t) = chosen else { break };
            let Some(cfg) = &self.breaker else { return Ok(t) };
            let (ok, transition) = t.state.breaker.acquire(cfg, now);
            if let Some(tr) = transition {
                self.breaker_changed(t, tr);
            }
            if ok {
                return Ok(t);
            }
            // Another request took the last probe slot in between: pick again.
        }
        match &self.breaker {
            Some(cfg) => {
                let soonest = self
                    .targets
                    .iter()
                    .filter(|t| t.weight > 0 && t.available(now) && !t.state.breaker.available(cfg, now))
                    .map(|t| t.state.breaker.reopens_in_ms(cfg, now).div_ceil(1000).max(1))
                    .min();
                match soonest {
                    Some(secs) => Err(NoTarget::CircuitOpen(secs)),
                    None => Err(NoTarget::Unhealthy),
                }
            }
            None => Err(NoTarget::Unhealthy),
        }
    }

    /// Weighted rendezvous hashing: each available target scores `-weight / ln(u)` with `u` a
    /// uniform draw from hash(key, target); the highest wins. A key keeps its target while that
    /// target is available, and only the keys of a target that goes away move.
    fn rendezvous(&self, key: &[u8], now: u64) -> Option<&Target> {
        self.targets
            .iter()
            .filter(|t| t.weight > 0 && self.pickable(t, now))
            .map(|t| {
                let h = crate::stable_hash(&[key, t.url.as_bytes()]);
                // (h >> 11) + 1 over 2^53: uniform in (0, 1].
                let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
                let score = -f64::from(t.weight) / u.ln().min(-f64::MIN_POSITIVE);
                (t, score)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t)
    }

    fn breaker_changed(&self, t: &Target, (from, to): crate::breaker::Transition) {
        t.breaker_gauge.set(to as i64);
        match to {
            BreakerState::Open => {
                tracing::warn!(upstream = %self.name, target = %t.url, from = from.as_str(), "circuit breaker opened");
            }
            _ => {
                tracing::info!(upstream = %self.name, target = %t.url, from = from.as_str(), to = to.as_str(), "circuit breaker changed state");
            }
        }
    }

    /// The breaker state of a target, for `/admin/upstreams`.
    pub fn breaker_state(&self, t: &Target) -> Option<BreakerState> {
        self.breaker.as_ref().map(|cfg| t.state.breaker.state(cfg, clock_ms()))
    }

    /// Picks a target for the next request, or `None` when none is available.
    pub fn select(&self) -> Option<&Target> {
        self.select_with(clock_ms())
    }

    fn select_with(&self, now: u64) -> Option<&Target> {
        if self.wheel.is_empty() {
            return None;
        }
        let len = self.wheel.len();
        let start = match self.balancing {
            LoadBalancing::RoundRobin => self.next.fetch_add(1, Relaxed),
            LoadBalancing::LeastRequests => {
                let a = &self.targets[self.wheel[fastrand::usize(..len)] as usize];
                let b = &self.targets[self.wheel[fastrand::usize(..len)] as usize];
                let load = |t: &Target| (t.in_flight() as u64 * 10_000) / u64::from(t.weight.max(1));
                match (self.pickable(a, now), self.pickable(b, now)) {
                    (true, true) => return Some(if load(b) < load(a) { b } else { a }),
                    (true, false) => return Some(a),
                    (false, true) => return Some(b),
                    (false, false) => fastrand::usize(..len),
                }
            }
        };
        (0..len)
            .map(|i| &self.targets[self.wheel[(start + i) % len] as usize])
            .find(|t| self.pickable(t, now))
    }

    /// The upstream's OAuth 2.0 token provider, when its credential is one.
    pub fn oauth2(&self) -> Option<&Arc<credentials::TokenProvider>> {
        match &self.credentials {
            Some(credentials::Credentials::OAuth2(tokens)) => Some(tokens),
            _ => None,
        }
    }

    /// Whether a request could go now: a target is available and its breaker (if any) is not
    /// open (no side effect; a half-open breaker with a free probe slot counts).
    pub fn accepting(&self) -> bool {
        let now = clock_ms();
        self.targets.iter().any(|t| t.weight > 0 && self.pickable(t, now))
    }

    /// Compiles the upstream of an outbound webhook endpoint: one target (`origin`, scheme and
    /// authority), HTTP/1.1, `tls` (the system roots), the dispatcher's circuit breaker, no
    /// passive ejection (the breaker judges the endpoint), `timeout` for the answer's head. With
    /// `public_only`, connections go only to public addresses ([`bridgehead_config::netguard`]),
    /// judged after DNS on every connect. `carry` keeps the breaker's state and the pooled
    /// connections across rebuilds while the settings are the same.
    pub fn endpoint(
        name: &str,
        origin: &str,
        breaker: &CircuitBreakerConfig,
        timeout: std::time::Duration,
        tls: rustls::ClientConfig,
        carry: &Carryover,
        public_only: bool,
    ) -> Self {
        let cfg = UpstreamConfig {
            targets: vec![bridgehead_config::Target { url: origin.to_owned(), weight: 1 }],
            load_balancing: LoadBalancing::RoundRobin,
            protocol: UpstreamProtocol::Http1,
            http2: bridgehead_config::Http2Settings::default(),
            timeouts: UpstreamTimeouts {
                connect: bridgehead_config::HumanDuration::secs(5),
                request: bridgehead_config::HumanDuration(timeout),
                ..UpstreamTimeouts::default()
            },
            health_check: None,
            passive_health: PassiveHealth { consecutive_failures: 0, ..PassiveHealth::default() },
            tls: None,
            credentials: None,
            retry: None,
            circuit_breaker: Some(breaker.clone()),
            rate_limit: None,
            sticky: None,
        };
        Self::with_parts(name, &cfg, carry, tls, None, None, public_only)
    }

    /// Whether at least one target may take traffic now.
    pub fn any_available(&self) -> bool {
        let now = clock_ms();
        self.targets.iter().any(|t| t.weight > 0 && t.available(now))
    }

    /// Records the outcome of a proxied request for passive ejection. `failed` means a connect
    /// error, a timeout or a 5xx answer.
    pub fn record_outcome(&self, target: &Target, failed: bool) {
        if let Some(cfg) = &self.breaker
            && let Some(tr) = target.state.breaker.record(cfg, failed, clock_ms())
        {
            self.breaker_changed(target, tr);
        }
        let s = &target.state;
        if !failed {
            if s.consecutive_failures.load(Relaxed) != 0 {
                s.consecutive_failures.store(0, Relaxed);
            }
            return;
        }
        let threshold = self.passive.consecutive_failures;
        if threshold == 0 {
            return;
        }
        let n = s.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= threshold {
            s.consecutive_failures.store(0, Relaxed);
            let until = clock_ms() + self.passive.eject_for.get().as_millis() as u64;
            s.ejected_until.store(until, Relaxed);
            tracing::warn!(
                upstream = %self.name, target = %target.url, failures = n,
                eject_for = %self.passive.eject_for, "target ejected after consecutive failures"
            );
        }
    }
}

/// The smooth weighted round-robin sequence over `weights` (reduced by their gcd).
fn wheel(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let w: Vec<i64> = weights.iter().map(|x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hash_tests {
    use super::stable_hash;

    const PINNED: u64 = 7_716_069_635_880_283_471;

    #[test]
    fn stable_hash_is_stable_and_separates_parts() {
        assert_eq!(stable_hash(&[b"alice", b"http://a"]), stable_hash(&[b"alice", b"http://a"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        // Pinned: the hash must not change between releases, or sticky users move to other targets.
        assert_eq!(stable_hash(&[b"alice", b"http://10.0.0.1:9000"]), PINNED);
    }
}
