//! The recording of received requests: a ring buffer behind a briefly held mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use http::request::Parts;

use crate::body::ReceivedBody;

/// How much of a request body a recording keeps.
const RECORDED_BODY: usize = 64 * 1024;

/// A request as the mock received it, for assertions and `GET /__mock/requests`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, as received (percent-encoding kept), without the query.
    pub path: String,
    /// The query string without `?`, if there was one.
    pub query: Option<String>,
    /// Every header in the order received, names lowercase, values lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// Length of the whole body.
    pub body_len: u64,
    /// The first 64 KiB of the body, lossy UTF-8.
    pub body: String,
    /// When the request was recorded, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
}

impl RecordedRequest {
    fn new(parts: &Parts, body: &ReceivedBody) -> Self {
        let head = &body.head[..body.head.len().min(RECORDED_BODY)];
        RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body_len: body.len,
            body: String::from_utf8_lossy(head).into_owned(),
            time_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// The last `limit` requests, and a count of all of them.
#[derive(Debug)]
pub(crate) struct Recorder {
    ring: Mutex<VecDeque<RecordedRequest>>,
    limit: usize,
    total: AtomicU64,
}

impl Recorder {
    pub(crate) fn new(limit: usize) -> Self {
        Recorder {
            ring: Mutex::new(VecDeque::with_capacity(limit.min(4096))),
            limit,
            total: AtomicU64::new(0),
        }
    }

    /// Counts a request as it arrives.
    pub(crate) fn arrived(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request whose body has been read.
    pub(crate) fn record(&self, parts: &Parts, body: &ReceivedBody) {
        if self.limit == 0 {
            return;
        }
        // Built before taking the lock, so the lock covers only the push.
        let request = RecordedRequest::new(parts, body);
        let mut ring = self.lock();
        if ring.len() == self.limit {
            ring.pop_front();
        }
        ring.push_back(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the ring half-updated.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, body: &[u8]) -> (Parts, ReceivedBody) {
        let (parts, ()) =
            http::Request::post(path).header("x-a", "1").header("x-a", "2").body(()).unwrap().into_parts();
        let body = ReceivedBody { head: body.to_vec(), len: body.len() as u64 };
        (parts, body)
    }

    #[test]
    fn keeps_the_last_limit_requests() {
        let recorder = Recorder::new(3);
        for i in 0..5 {
            recorder.arrived();
            let (parts, body) = request(&format!("/r/{i}?n={i}"), b"");
            recorder.record(&parts, &body);
        }
        let paths: Vec<_> = recorder.snapshot().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/r/2", "/r/3", "/r/4"]);
        assert_eq!(recorder.total(), 5);
        recorder.clear();
        assert!(recorder.snapshot().is_empty());
        assert_eq!(recorder.total(), 5, "clear keeps the total");
    }

    #[test]
    fn records_shape_and_caps_the_body() {
        let recorder = Recorder::new(1);
        let (parts, mut body) = request("/p?q=1", &[b'a'; RECORDED_BODY + 10]);
        body.len = 10 * 1024 * 1024;
        recorder.record(&parts, &body);
        let [recorded] = &recorder.snapshot()[..] else { panic!("one request recorded") };
        assert_eq!(recorded.method, "POST");
        assert_eq!(recorded.path, "/p");
        assert_eq!(recorded.query.as_deref(), Some("q=1"));
        assert_eq!(recorded.headers, [("x-a".into(), "1".into()), ("x-a".into(), "2".into())]);
        assert_eq!(recorded.body_len, 10 * 1024 * 1024);
        assert_eq!(recorded.body.len(), RECORDED_BODY);
        assert!(recorded.time_unix_ms > 0);
    }

    #[test]
    fn limit_zero_records_nothing_but_counts() {
        let recorder = Recorder::new(0);
        recorder.arrived();
        let (parts, body) = request("/", b"");
        recorder.record(&parts, &body);
        assert!(recorder.snapshot().is_empty());
        assert_eq!(recorder.total(), 1);
    }
}
