//! Responses counted by status class, for [`MockServer::status_counts`](crate::MockServer::status_counts).

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// How many responses of each status class the mock sent since start, `/__mock/*` excepted.
///
/// Counted as each response is produced, so a client that has seen a response sees it counted;
/// not reset by [`MockServer::clear`](crate::MockServer::clear).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    /// 1xx: WebSocket upgrades (`101`).
    pub informational: u64,
    /// 2xx.
    pub success: u64,
    /// 3xx.
    pub redirection: u64,
    /// 4xx, including `429` over `--rate-limit` and `400` for a bad `x-mock-*` header.
    pub client_error: u64,
    /// 5xx, including injected failures with a 5xx `--fail-status`.
    pub server_error: u64,
}

impl StatusCounts {
    /// All responses counted.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirection + self.client_error + self.server_error
    }
}

/// One counter per status class, 1xx to 5xx.
#[derive(Debug, Default)]
pub(crate) struct StatusCounter([AtomicU64; 5]);

impl StatusCounter {
    pub(crate) fn count(&self, status: StatusCode) {
        // StatusCode is 100..=999; 6xx to 9xx are not sent by the mock, and count as 5xx.
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatusCounts {
        let [informational, success, redirection, client_error, server_error] =
            self.0.each_ref().map(|n| n.load(Ordering::Relaxed));
        StatusCounts { informational, success, redirection, client_error, server_error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class() {
        let counter = StatusCounter::default();
        for code in [101, 200, 204, 302, 404, 429, 503, 500, 599] {
            counter.count(StatusCode::from_u16(code).unwrap());
        }
        let counts = counter.snapshot();
        assert_eq!(
            counts,
            StatusCounts { informational: 1, success: 2, redirection: 1, client_error: 2, server_error: 3 }
        );
        assert_eq!(counts.total(), 9);
    }
}
