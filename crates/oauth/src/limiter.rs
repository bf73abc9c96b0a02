//! A small per-address token bucket for the token endpoint, so that flooding it from one address
//! cannot burn the CPU on signatures. Bounded: at most 10,000 addresses are tracked; when full,
//! idle entries are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const MAX_ENTRIES: usize = 10_000;

pub struct Limiter {
    rate: AtomicU32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(rate: u32) -> Self {
        Self { rate: AtomicU32::new(rate.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate.max(1), Ordering::Relaxed);
    }

    /// Takes one token for `ip`; false when its bucket (burst: twice the rate) is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let rate = f64::from(self.rate.load(Ordering::Relaxed));
        let burst = rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_ENTRIES && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_ENTRIES {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals() {
        let l = Limiter::new(5);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(ip)).count();
        assert!((10..=11).contains(&allowed), "{allowed}");
        assert!(l.allow("10.0.0.1".parse().unwrap()), "other addresses have their own bucket");
    }
}
