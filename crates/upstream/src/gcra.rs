//! The generic cell rate algorithm: a token bucket kept as one number per key.
//!
//! A bucket holds `burst` requests and refills one every `interval` microseconds. Instead of a
//! token count it stores the *theoretical arrival time* (TAT): the instant at which the bucket
//! would be full again. A request is admitted when, after adding one interval to the TAT, the TAT
//! is at most `burst` intervals ahead of now. Over any span of time `t`, at most
//! `burst + t / interval` requests are admitted (the property test checks exactly that).
//!
//! The same arithmetic runs in a Redis script for limits shared by several nodes
//! (`bridgehead_state::redis`), so a policy means the same thing in both places.

/// A bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds per request at the sustained rate (at least 1).
    pub interval_us: u64,
    /// Requests admitted at once from a full bucket (at least 1).
    pub burst: u64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still be admitted right now.
    pub remaining: u64,
    /// Microseconds until the bucket is full again.
    pub reset_us: u64,
    /// When refused: microseconds until one request would be admitted.
    pub retry_after_us: u64,
}

impl Gcra {
    pub fn new(interval_us: u64, burst: u64) -> Self {
        Self { interval_us: interval_us.max(1), burst: burst.max(1) }
    }

    /// Checks one request at `now_us` against the bucket whose TAT is `tat` (0 for a new
    /// bucket), and advances `tat` when the request is admitted.
    pub fn check(&self, tat: &mut u64, now_us: u64) -> Decision {
        let limit = self.burst.saturating_mul(self.interval_us);
        let base = (*tat).max(now_us);
        let next = base.saturating_add(self.interval_us);
        if next - now_us > limit {
            return Decision {
                allowed: false,
                remaining: 0,
                reset_us: base - now_us,
                retry_after_us: (next - limit - now_us).max(1),
            };
        }
        *tat = next;
        Decision {
            allowed: true,
            remaining: (limit - (next - now_us)) / self.interval_us,
            reset_us: next - now_us,
            retry_after_us: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admits_the_burst_then_one_per_interval() {
        let g = Gcra::new(1_000, 3);
        let mut tat = 0;
        let now = 1_000_000;
        let d: Vec<Decision> = (0..4).map(|_| g.check(&mut tat, now)).collect();
        assert_eq!(d.iter().map(|d| d.allowed).collect::<Vec<_>>(), [true, true, true, false]);
        assert_eq!(d.iter().map(|d| d.remaining).collect::<Vec<_>>(), [2, 1, 0, 0]);
        assert_eq!(d[2].reset_us, 3_000);
        assert_eq!(d[3].retry_after_us, 1_000);
        // One interval later exactly one more fits.
        assert!(g.check(&mut tat, now + 1_000).allowed);
        assert!(!g.check(&mut tat, now + 1_000).allowed);
        // After a quiet period the whole burst is back.
        assert_eq!(g.check(&mut tat, now + 10_000).remaining, 2);
    }

    #[test]
    fn retry_after_is_exactly_when_the_next_request_fits() {
        let g = Gcra::new(7_000, 2);
        let mut tat = 0;
        let now = 50;
        while g.check(&mut tat, now).allowed {}
        let d = g.check(&mut tat, now);
        assert!(!g.check(&mut tat, now + d.retry_after_us - 1).allowed);
        assert!(g.check(&mut tat, now + d.retry_after_us).allowed);
    }

    proptest! {
        /// Over any run of requests at arbitrary times, the admitted count in every span
        /// [a, b] never exceeds burst + (b - a) / interval.
        #[test]
        fn never_admits_more_than_rate_times_time_plus_burst(
            interval in 1u64..5_000,
            burst in 1u64..20,
            gaps in proptest::collection::vec(0u64..3_000, 1..300),
        ) {
            let g = Gcra::new(interval, burst);
            let mut tat = 0;
            let mut now = 1_000_000u64;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                let d = g.check(&mut tat, now);
                if d.allowed {
                    admitted.push(now);
                }
                prop_assert!(d.remaining < burst);
                prop_assert!(d.allowed || d.retry_after_us >= 1);
            }
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let span = admitted[j] - admitted[i];
                    let count = (j - i + 1) as u64;
                    prop_assert!(count <= burst + span / interval, "{count} in {span}us");
                }
            }
        }

        /// Requests spaced at least one interval apart are always admitted.
        #[test]
        fn admits_everything_at_or_under_the_rate(interval in 1u64..5_000, burst in 1u64..20, n in 1usize..200) {
            let g = Gcra::new(interval, burst);
            let mut tat = 0;
            for i in 0..n as u64 {
                prop_assert!(g.check(&mut tat, 1_000 + i * interval).allowed);
            }
        }
    }
}
