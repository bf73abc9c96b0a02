//! A circuit breaker per upstream target.
//!
//! ```text
//!            failures/requests > failure_ratio           open_for elapsed
//!  Closed ─────── with ≥ min_requests in window ──▶ Open ─────────────────▶ HalfOpen
//!    ▲                                               ▲                        │
//!    └──────── half_open_probes probes succeed ──────┼──── a probe fails ─────┘
//! ```
//!
//! Closed counts requests and failures in a sliding window of ten buckets. Open refuses every
//! request. Half-open lets `half_open_probes` requests through; if they all succeed the breaker
//! closes with an empty window, and the first failure opens it again. Every function takes the
//! time as an argument, so tests drive transitions with a controlled clock. The state lives with
//! the target, so a config reload keeps it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use bridgehead_config::CircuitBreaker as Config;

const BUCKETS: usize = 10;

/// The state of a breaker, as shown in metrics (`0`, `1`, `2`) and `/admin/upstreams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    epoch: u64,
    requests: u32,
    failures: u32,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: [Bucket; BUCKETS],
    opened_at: u64,
    half_open_since: u64,
    probes_out: u32,
    probe_successes: u32,
}

/// One target's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    /// A `State` as u8, readable without the lock.
    state: AtomicU8,
    inner: Mutex<Inner>,
}

/// A change of state, for logs and metrics.
pub type Transition = (State, State);

impl Breaker {
    fn load(&self) -> State {
        match self.state.load(Relaxed) {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    fn set(&self, s: State) {
        self.state.store(s as u8, Relaxed);
    }

    /// The state at `now_ms`: an open breaker whose `open_for` has passed reads as half-open.
    pub fn state(&self, cfg: &Config, now_ms: u64) -> State {
        match self.load() {
            State::Open => {
                let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if now_ms >= inner.opened_at + cfg.open_for.get().as_millis() as u64 {
                    State::HalfOpen
                } else {
                    State::Open
                }
            }
            s => s,
        }
    }

    /// Milliseconds until an open breaker lets probes through (0 when not open).
    pub fn reopens_in_ms(&self, cfg: &Config, now_ms: u64) -> u64 {
        if self.load() != State::Open {
            return 0;
        }
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (inner.opened_at + cfg.open_for.get().as_millis() as u64).saturating_sub(now_ms)
    }

    /// Whether the target may be picked now (no side effect). Closed: always.
    pub fn available(&self, cfg: &Config, now_ms: u64) -> bool {
        match self.load() {
            State::Closed => true,
            _ => {
                let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                self.admits(&inner, cfg, now_ms)
            }
        }
    }

    fn admits(&self, inner: &Inner, cfg: &Config, now_ms: u64) -> bool {
        match self.load() {
            State::Closed => true,
            State::Open => now_ms >= inner.opened_at + cfg.open_for.get().as_millis() as u64,
            State::HalfOpen => {
                inner.probes_out < cfg.half_open_probes
                    // A probe whose result never came (the client went away) does not block forever.
                    || now_ms >= inner.half_open_since + cfg.open_for.get().as_millis() as u64
            }
        }
    }

    /// Takes a request slot: always when closed; one of the probe slots when half-open.
    /// Returns whether the request may go, and a transition (open → half-open) if one happened.
    pub fn acquire(&self, cfg: &Config, now_ms: u64) -> (bool, Option<Transition>) {
        if self.load() == State::Closed {
            return (true, None);
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.admits(&inner, cfg, now_ms) {
            return (false, None);
        }
        let mut transition = None;
        let open_for = cfg.open_for.get().as_millis() as u64;
        match self.load() {
            State::Open => {
                self.set(State::HalfOpen);
                inner.half_open_since = now_ms;
                inner.probes_out = 0;
                inner.probe_successes = 0;
                transition = Some((State::Open, State::HalfOpen));
            }
            State::HalfOpen if now_ms >= inner.half_open_since + open_for => {
                // Lost probes: start a fresh round.
                inner.half_open_since = now_ms;
                inner.probes_out = 0;
                inner.probe_successes = 0;
            }
            _ => {}
        }
        if self.load() == State::HalfOpen {
            inner.probes_out += 1;
        }
        (true, transition)
    }

    /// Records the outcome of a request that `acquire` let through.
    pub fn record(&self, cfg: &Config, failed: bool, now_ms: u64) -> Option<Transition> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.load() {
            State::Closed => {
                let span = (cfg.window.get().as_millis() as u64 / BUCKETS as u64).max(1);
                let epoch = now_ms / span;
                let b = &mut inner.buckets[(epoch % BUCKETS as u64) as usize];
                if b.epoch != epoch {
                    *b = Bucket { epoch, requests: 0, failures: 0 };
                }
                b.requests += 1;
                b.failures += u32::from(failed);
                if !failed {
                    return None;
                }
                let live = epoch.saturating_sub(BUCKETS as u64 - 1);
                let (requests, failures) = inner
                    .buckets
                    .iter()
                    .filter(|b| b.epoch >= live && b.epoch <= epoch)
                    .fold((0u64, 0u64), |(r, f), b| (r + u64::from(b.requests), f + u64::from(b.failures)));
                if requests >= u64::from(cfg.min_requests)
                    && failures as f64 > cfg.failure_ratio * requests as f64
                {
                    inner.opened_at = now_ms;
                    self.set(State::Open);
                    return Some((State::Closed, State::Open));
                }
                None
            }
            State::HalfOpen if failed => {
                inner.opened_at = now_ms;
                self.set(State::Open);
                Some((State::HalfOpen, State::Open))
            }
            State::HalfOpen => {
                inner.probe_successes += 1;
                if inner.probe_successes >= cfg.half_open_probes {
                    inner.buckets = Default::default();
                    self.set(State::Closed);
                    return Some((State::HalfOpen, State::Closed));
                }
                None
            }
            // A request that started before the breaker opened: its result changes nothing.
            State::Open => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgehead_config::HumanDuration;

    fn cfg() -> Config {
        Config {
            failure_ratio: 0.5,
            min_requests: 4,
            window: HumanDuration::secs(10),
            open_for: HumanDuration::secs(5),
            half_open_probes: 2,
        }
    }

    #[test]
    fn opens_on_ratio_with_enough_requests_then_half_opens_and_closes() {
        let (c, b) = (cfg(), Breaker::default());
        // Three failures out of three: not enough requests yet.
        for t in 0..3 {
            assert_eq!(b.acquire(&c, t), (true, None));
            assert_eq!(b.record(&c, true, t), None);
        }
        assert_eq!(b.state(&c, 3), State::Closed);
        // The fourth request makes 4/4 > 0.5.
        b.acquire(&c, 4);
        assert_eq!(b.record(&c, true, 4), Some((State::Closed, State::Open)));
        assert_eq!(b.state(&c, 5), State::Open);
        assert!(!b.available(&c, 5));
        assert_eq!(b.acquire(&c, 4_999), (false, None));
        // After open_for: half-open, two probes allowed, a third is not.
        assert_eq!(b.state(&c, 5_004), State::HalfOpen);
        assert_eq!(b.acquire(&c, 5_004), (true, Some((State::Open, State::HalfOpen))));
        assert_eq!(b.acquire(&c, 5_005), (true, None));
        assert_eq!(b.acquire(&c, 5_006), (false, None));
        assert_eq!(b.record(&c, false, 5_010), None);
        assert_eq!(b.record(&c, false, 5_011), Some((State::HalfOpen, State::Closed)));
        assert_eq!(b.state(&c, 5_012), State::Closed);
        // The window starts empty again: one failure does not reopen.
        assert_eq!(b.record(&c, true, 5_013), None);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let (c, b) = (cfg(), Breaker::default());
        for t in 0..4 {
            b.record(&c, true, t);
        }
        assert_eq!(b.state(&c, 10), State::Open);
        b.acquire(&c, 6_000);
        assert_eq!(b.record(&c, true, 6_001), Some((State::HalfOpen, State::Open)));
        assert_eq!(b.acquire(&c, 6_002), (false, None));
        assert_eq!(b.state(&c, 11_001), State::HalfOpen);
    }

    #[test]
    fn ratio_must_be_exceeded_and_old_buckets_expire() {
        let (c, b) = (cfg(), Breaker::default());
        // 2 failures of 4 is exactly 0.5: not over the ratio.
        for (t, failed) in [(0, false), (1, true), (2, false), (3, true)] {
            assert_eq!(b.record(&c, failed, t), None);
        }
        // Failures a whole window later do not add to the old ones.
        for t in [20_000, 20_001, 20_002] {
            assert_eq!(b.record(&c, true, t), None);
        }
        assert_eq!(b.record(&c, true, 20_003), Some((State::Closed, State::Open)));
    }

    #[test]
    fn lost_probes_do_not_block_forever() {
        let (c, b) = (cfg(), Breaker::default());
        for t in 0..4 {
            b.record(&c, true, t);
        }
        assert!(b.acquire(&c, 5_003).0);
        assert!(b.acquire(&c, 5_003).0);
        assert!(!b.acquire(&c, 6_000).0);
        // Neither probe reported back within open_for: a new round of probes starts.
        assert!(b.acquire(&c, 10_003).0);
    }
}
