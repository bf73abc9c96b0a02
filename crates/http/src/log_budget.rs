//! A budget for log lines written per request: at most so many a second, so that an outage
//! that fails every request (an upstream down, a store unreachable) does not also write a line
//! to stderr per request — a synchronous write each, slowing the gateway when it is already in
//! trouble, and burying the first lines that say what went wrong. The next line written says
//! how many were left out since the one before it; the metrics count every failure
//! regardless.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::clock::clock_ms;

/// Lines a call site may write per second.
pub const LINES_PER_SECOND: u32 = 10;

/// The budget of one call site: `static FAILED: LogBudget = LogBudget::new();`. One budget
/// for the site, whatever upstream or route the line is about.
pub struct LogBudget {
    /// The current second (high 32 bits) and the lines written in it (low 32 bits), changed
    /// together; seconds only move forward.
    state: AtomicU64,
    suppressed: AtomicU64,
    /// Admitted per second.
    limit: u32,
}

impl LogBudget {
    pub const fn new() -> Self {
        Self::per_second(LINES_PER_SECOND)
    }

    /// A budget of `limit` a second (also for things other than log lines, such as dead letters
    /// written for refused requests).
    pub const fn per_second(limit: u32) -> Self {
        Self { state: AtomicU64::new(0), suppressed: AtomicU64::new(0), limit }
    }

    /// `Some(lines left out since the last one written)` when a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        let now = clock_ms() / 1000;
        let mut cur = self.state.load(Relaxed);
        loop {
            let (second, used) = (cur >> 32, cur & 0xffff_ffff);
            let (second, used) = if now > second { (now, 0) } else { (second, used) };
            if used >= u64::from(self.limit) {
                self.suppressed.fetch_add(1, Relaxed);
                return None;
            }
            match self.state.compare_exchange_weak(cur, (second << 32) | (used + 1), Relaxed, Relaxed) {
                Ok(_) => return Some(self.suppressed.swap(0, Relaxed)),
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ten_lines_a_second_then_the_count_of_those_left_out() {
        let b = LogBudget::new();
        let admitted = (0..1000).filter(|_| b.admit().is_some()).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Some(990), "the first line of the next second counts the rest");
        assert_eq!(b.admit(), Some(0));
    }
}
