//! Traffic policies: inbound rate limits, idempotency keys, retries, circuit breakers, outbound
//! throttling and canary stickiness. Each is compiled once per config generation; the state that
//! must outlive a reload (breaker state, outbound pauses) lives with the upstream's targets.

pub mod breaker;
pub mod gcra;
pub mod idempotency;
pub mod outbound;
pub mod ratelimit;
pub mod retry;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bridgehead_config::RequestKey;
use http::HeaderMap;

/// The shared store (Redis) as the data path holds it.
pub type RedisHandle = std::sync::Arc<SharedRedis>;

/// A Redis connection that may not exist yet: when Redis is unreachable at start the gateway
/// starts anyway (policies apply `on_store_error`) and connects in the background.
pub struct SharedRedis {
    conn: arc_swap::ArcSwapOption<bridgehead_state::Redis>,
    pub health: StoreHealth,
}

impl SharedRedis {
    /// Connects to `url`. A malformed URL is an error; an unreachable server is logged and
    /// retried every second in the background.
    pub async fn start(url: &str) -> Result<RedisHandle, bridgehead_state::StateError> {
        let shared =
            std::sync::Arc::new(SharedRedis { conn: Default::default(), health: StoreHealth::default() });
        match bridgehead_state::Redis::connect(url).await {
            Ok(r) => shared.conn.store(Some(std::sync::Arc::new(r))),
            Err(e @ bridgehead_state::StateError::RedisInvalidUrl { .. }) => return Err(e),
            Err(e) => {
                shared.health.failed("startup", &e);
                let (url, weak) = (url.to_owned(), std::sync::Arc::downgrade(&shared));
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let Some(shared) = weak.upgrade() else { return };
                        if let Ok(r) = bridgehead_state::Redis::connect(&url).await {
                            shared.conn.store(Some(std::sync::Arc::new(r)));
                            shared.health.succeeded("startup");
                            return;
                        }
                    }
                });
            }
        }
        Ok(shared)
    }

    /// The connection, unless the store is known to be down (then calls are skipped for a
    /// moment so requests do not each wait for a timeout).
    pub fn get(&self) -> Option<std::sync::Arc<bridgehead_state::Redis>> {
        if !self.health.should_try() {
            return None;
        }
        self.conn.load_full()
    }

    /// The connection whatever its health: for writes that finish what a request started
    /// (storing an idempotent response), which are worth one attempt each.
    pub fn always(&self) -> Option<std::sync::Arc<bridgehead_state::Redis>> {
        self.conn.load_full()
    }
}

/// Microseconds on the tokio clock (so tests can pause time) since the first call.
pub fn clock_us() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now().saturating_duration_since(start).as_micros() as u64
}

/// Milliseconds since the Unix epoch, for records other nodes read.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What a request is, for the policies that key on it.
pub struct RequestFacts<'a> {
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
    pub consumer: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// The value of `key` for this request; empty when the request has none (anonymous,
    /// header or cookie absent), so such requests share one bucket.
    pub fn key(&self, key: &RequestKey) -> Cow<'_, [u8]> {
        match key {
            RequestKey::Consumer => Cow::Borrowed(self.consumer.unwrap_or_default().as_bytes()),
            RequestKey::Ip => Cow::Owned(match self.client {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                // An IPv6 client usually holds a whole /64: key on that, or one host could
                // rotate addresses past its limit.
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => v4.octets().to_vec(),
                    None => v6.octets()[..8].to_vec(),
                },
            }),
            RequestKey::Route => Cow::Borrowed(b""),
            RequestKey::Header(name) => {
                Cow::Borrowed(self.headers.get(name.as_str()).map_or(&b""[..], |v| v.as_bytes()))
            }
            RequestKey::Cookie(name) => Cow::Borrowed(cookie(self.headers, name).unwrap_or_default()),
        }
    }

    /// Whether the request has a value for `key` at all.
    pub fn has(&self, key: &RequestKey) -> bool {
        match key {
            RequestKey::Consumer => self.consumer.is_some(),
            RequestKey::Ip | RequestKey::Route => true,
            RequestKey::Header(name) => self.headers.contains_key(name.as_str()),
            RequestKey::Cookie(name) => cookie(self.headers, name).is_some(),
        }
    }
}

/// The value of cookie `name` (RFC 6265 §5.4 `Cookie` header), first occurrence.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

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

/// Health of the shared store (Redis) as the data path sees it: after a failure, calls are
/// skipped for a second so requests do not each wait for a timeout; the first failure and the
/// recovery are logged once per incident.
#[derive(Debug, Default)]
pub struct StoreHealth {
    down: AtomicBool,
    skip_until_us: AtomicU64,
}

/// How long calls to a failed shared store are skipped before the next attempt.
const STORE_RETRY_US: u64 = 1_000_000;

impl StoreHealth {
    /// Whether a call should be attempted now: always while up; while down, by one caller per
    /// second (the others skip at once instead of each waiting for a timeout).
    pub fn should_try(&self) -> bool {
        if !self.down.load(Relaxed) {
            return true;
        }
        let now = clock_us();
        let until = self.skip_until_us.load(Relaxed);
        now >= until
            && self.skip_until_us.compare_exchange(until, now + STORE_RETRY_US, Relaxed, Relaxed).is_ok()
    }

    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.skip_until_us.store(clock_us() + STORE_RETRY_US, Relaxed);
        if !self.down.swap(true, Relaxed) {
            tracing::error!(error = %error, "{what}: Redis is unreachable; policies apply their on_store_error setting until it is back");
        }
    }

    pub fn succeeded(&self, what: &str) {
        if self.down.load(Relaxed) && self.down.swap(false, Relaxed) {
            tracing::warn!("{what}: Redis is reachable again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.append("cookie", "a=1; cohort=beta ; b=2".parse().unwrap());
        let f = RequestFacts {
            headers: &headers,
            client: "::ffff:10.0.0.1".parse().unwrap(),
            consumer: Some("acme"),
        };
        assert_eq!(&*f.key(&RequestKey::Consumer), b"acme");
        assert_eq!(&*f.key(&RequestKey::Ip), &[10, 0, 0, 1]);
        assert_eq!(&*f.key(&RequestKey::Header("x-user".into())), b"alice");
        assert_eq!(&*f.key(&RequestKey::Cookie("cohort".into())), b"beta");
        assert!(!f.has(&RequestKey::Cookie("nope".into())));
        assert_eq!(&*f.key(&RequestKey::Cookie("nope".into())), b"");
    }

    const PINNED: u64 = 7_716_069_635_880_283_471;

    #[test]
    fn ipv6_clients_share_their_64() {
        let h = HeaderMap::new();
        let a = RequestFacts { headers: &h, client: "2001:db8:1:2::1".parse().unwrap(), consumer: None };
        let b = RequestFacts { headers: &h, client: "2001:db8:1:2:ffff::9".parse().unwrap(), consumer: None };
        let c = RequestFacts { headers: &h, client: "2001:db8:1:3::1".parse().unwrap(), consumer: None };
        assert_eq!(a.key(&RequestKey::Ip), b.key(&RequestKey::Ip));
        assert_ne!(a.key(&RequestKey::Ip), c.key(&RequestKey::Ip));
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_store_is_probed_by_one_caller_per_second() {
        let health = StoreHealth::default();
        assert!(health.should_try());
        health.failed("test", &"boom");
        assert!(!health.should_try() && !health.should_try());
        tokio::time::advance(std::time::Duration::from_millis(1001)).await;
        assert!(health.should_try(), "one probe after the pause");
        assert!(!health.should_try(), "and only one");
        health.succeeded("test");
        assert!(health.should_try() && health.should_try());
    }

    #[test]
    fn stable_hash_is_stable_and_separates_parts() {
        assert_eq!(stable_hash(&[b"alice", b"http://a"]), stable_hash(&[b"alice", b"http://a"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        // Pinned: the hash must not change between releases, or sticky users move to other targets.
        assert_eq!(stable_hash(&[b"alice", b"http://10.0.0.1:9000"]), PINNED);
    }
}
