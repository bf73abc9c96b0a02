//! The one clock module. Two kinds of time, for two purposes:
//!
//! - **monotonic** ([`clock_ms`], [`clock_us`]): the tokio clock since the first call, for
//!   durations inside this process (breakers, ejection, buckets, throttles); tests pause and
//!   advance it with `tokio::time::pause`;
//! - **wall** ([`unix_now`], [`unix_ms`]): seconds or milliseconds since the Unix epoch, for
//!   what other nodes and other programs read (token `exp`, stored records).

use std::sync::OnceLock;

/// The instant the monotonic clock counts from.
fn start() -> tokio::time::Instant {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    *START.get_or_init(tokio::time::Instant::now)
}

/// Milliseconds on the tokio clock since the first call.
pub fn clock_ms() -> u64 {
    tokio::time::Instant::now().saturating_duration_since(start()).as_millis() as u64
}

/// Microseconds on the tokio clock since the first call.
pub fn clock_us() -> u64 {
    tokio::time::Instant::now().saturating_duration_since(start()).as_micros() as u64
}

/// The wall clock, for dates people and other programs read (the access log's `time`, an
/// HTTP-date in `Retry-After`).
pub fn wall() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    wall().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch, for records other nodes read.
pub fn unix_ms() -> i64 {
    wall().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_clock_follows_tokio_time() {
        let (ms, us) = (clock_ms(), clock_us());
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        assert_eq!(clock_ms() - ms, 1500);
        assert_eq!(clock_us() - us, 1_500_000);
        assert!(unix_now() > 1_700_000_000 && unix_ms() / 1000 >= unix_now() as i64 - 1);
    }
}
