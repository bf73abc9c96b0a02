//! The shared store (Redis) as the data path holds it: a connection that may not exist yet, and
//! its health as callers see it, so an outage is logged once and never stalls requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bridgehead_http::clock::clock_us;

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
}
