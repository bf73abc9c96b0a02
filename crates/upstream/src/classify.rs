//! Outcome classification: what an upstream's answer means for metrics (the `outcome` label),
//! the circuit breaker, passive health and the retry decision.
//!
//! - [`Classify::Http`] judges by the status of the response head: a 5xx (or a 101 nobody
//!   asked for) is a failure.
//! - [`Classify::Grpc`] also reads the gRPC status: from the response head when the answer is
//!   trailers-only, else from the trailers at the end of the stream. A gRPC failure travels in
//!   a `200 OK`, so judging by the head alone would count every failed call as a success.
//!   Statuses that blame the server (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE,
//!   DATA_LOSS) are failures; the others are the caller's business.
//!
//! A retry is only possible before anything reached the client. So when the request may be
//! retried, a gRPC answer without a status in its head is read up to its first frame: trailers
//! at once (a failed unary call) are judged before the answer is passed on; a data frame is
//! kept and passed on first. Otherwise the answer streams at once and is judged when its
//! trailers arrive ([`UpstreamBody`] settles the outcome then, or when the stream breaks).

use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Target, Upstream};
use crate::retry::Failure;
use bridgehead_http::body::RequestStats;
use bridgehead_http::grpc::{grpc_failed, grpc_status};
use bridgehead_http::metrics::{Metrics, Name, UpstreamLabels, outcome};
use bridgehead_http::problem::GatewayError;
use bridgehead_http::upstream_body::{Settle, UpstreamBody};

/// How an answer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classify {
    /// By the HTTP status of the response head.
    Http,
    /// By the gRPC status, from the head (trailers-only) or the trailers.
    Grpc,
}

impl Classify {
    /// gRPC for a request that says it is a gRPC call (`content-type: application/grpc`, or
    /// `application/grpc+proto` and the like; not gRPC-Web, whose status travels in the body),
    /// else HTTP.
    pub fn of_request(method: &http::Method, headers: &HeaderMap) -> Self {
        // gRPC calls are POSTs (gRPC over HTTP/2); anything else is not one, whatever it says.
        if method == http::Method::POST && is_grpc(headers) { Classify::Grpc } else { Classify::Http }
    }
}

/// Whether a header block says `content-type: application/grpc` (with an optional `+codec` or
/// parameters), the framing whose status comes in `grpc-status`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(http::header::CONTENT_TYPE) else { return false };
    let v = v.as_bytes();
    v.len() >= 16
        && v[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(v.get(16), None | Some(b'+' | b';'))
}

/// What one try came to.
pub(super) struct Judged {
    /// The `outcome` label and whether it counts as a failure; `None` while the answer streams
    /// and the trailers will tell.
    pub verdict: Option<(&'static str, bool)>,
    /// What `retry.on` may name about this try: the status of an answer, the gRPC status of
    /// a failed call, or how the exchange failed; `None` when nothing is known yet.
    pub failure: Option<Failure>,
    pub result: Result<Response<UpstreamBody>, GatewayError>,
    /// Whether the verdict is the target's to bear (breaker, passive health); false for a
    /// connect that another request made and that failed.
    pub blame: bool,
    /// What the transport said when the exchange failed (for a background caller's log; never
    /// shown to a client).
    pub cause: Option<String>,
}

impl Judged {
    pub fn failed(label: &'static str, failure: Failure, error: GatewayError) -> Self {
        Self {
            verdict: Some((label, true)),
            failure: Some(failure),
            result: Err(error),
            blame: true,
            cause: None,
        }
    }

    /// Attaches the target to an answer whose verdict waits for its trailers.
    pub fn with_target(
        mut self,
        upstream: &Arc<Upstream>,
        target: &Target,
        metrics: &Metrics,
        stats: Option<&Arc<RequestStats>>,
    ) -> Self {
        if self.verdict.is_none()
            && let Ok(res) = &mut self.result
            && let Some(index) = upstream.targets.iter().position(|t| std::ptr::eq(t, target))
        {
            res.body_mut().settle_with(Box::new(TrailerVerdict {
                upstream: upstream.clone(),
                target: index,
                counters: metrics.upstream_requests.clone(),
                stats: stats.cloned(),
            }));
        }
        self
    }
}

impl Classify {
    /// Judges a response head. With `peek` (the time left of the try), a gRPC answer without a
    /// status in its head is read up to its first frame, for at most that long: a call that
    /// sends nothing by then streams on and is judged by its trailers.
    pub(super) async fn judge(
        self,
        res: Response<UpstreamBody>,
        accept_switch: &(dyn Fn(&HeaderMap) -> bool + Sync),
        peek: Option<std::time::Duration>,
        upstream: &str,
    ) -> Judged {
        let status = res.status();
        if status == StatusCode::SWITCHING_PROTOCOLS && !accept_switch(res.headers()) {
            // A switch to a protocol nobody asked for is refused by the caller: the target's fault.
            return Judged {
                verdict: Some((outcome::ERROR, true)),
                failure: Some(Failure::Status(status)),
                result: Ok(res),
                blame: true,
                cause: None,
            };
        }
        if self == Classify::Http || status != StatusCode::OK {
            let failed = status.is_server_error();
            let label = if failed { outcome::HTTP_5XX } else { outcome::SUCCESS };
            return Judged {
                verdict: Some((label, failed)),
                failure: Some(Failure::Status(status)),
                result: Ok(res),
                blame: true,
                cause: None,
            };
        }
        // A status in the head (trailers-only) is the server's word, whatever its content type.
        if let Some(code) = grpc_status(res.headers()) {
            return Judged::grpc(code, res);
        }
        // Waiting for a status in trailers needs a gRPC answer: anything else (an HTTP error
        // page, a proxy in between) is judged by its HTTP status, so a client cannot make a
        // plain answer count as a failed call by what it claims to send.
        if !is_grpc(res.headers()) {
            return Judged {
                verdict: Some((outcome::SUCCESS, false)),
                failure: Some(Failure::Status(status)),
                result: Ok(res),
                blame: true,
                cause: None,
            };
        }
        let Some(patience) = peek else {
            return Judged { verdict: None, failure: None, result: Ok(res), blame: true, cause: None };
        };
        let (parts, mut body) = res.into_parts();
        let Ok(first) = tokio::time::timeout(patience, body.next_frame()).await else {
            return Judged {
                verdict: None,
                failure: None,
                result: Ok(Response::from_parts(parts, body)),
                blame: true,
                cause: None,
            };
        };
        match first {
            Some(Ok(frame)) => match frame.trailers_ref().and_then(grpc_status) {
                Some(code) => Judged::grpc(code, Response::from_parts(parts, body.with_first(frame))),
                None => {
                    let trailers = frame.is_trailers();
                    let res = Response::from_parts(parts, body.with_first(frame));
                    if trailers {
                        // Trailers without a status: the call failed (gRPC: INTERNAL).
                        return Judged {
                            verdict: Some((outcome::GRPC_ERROR, true)),
                            failure: Some(Failure::Grpc(13)),
                            result: Ok(res),
                            blame: true,
                            cause: None,
                        };
                    }
                    Judged { verdict: None, failure: None, result: Ok(res), blame: true, cause: None }
                }
            },
            Some(Err(_)) | None => Judged {
                verdict: Some((outcome::ERROR, true)),
                failure: Some(Failure::Reset),
                result: Err(GatewayError::UpstreamFailed {
                    upstream: upstream.to_owned(),
                    reason: "the response ended before its gRPC status arrived",
                }),
                blame: true,
                cause: None,
            },
        }
    }
}

impl Judged {
    fn grpc(code: u32, res: Response<UpstreamBody>) -> Self {
        let failed = grpc_failed(code);
        let label = if failed { outcome::GRPC_ERROR } else { outcome::SUCCESS };
        Self {
            verdict: Some((label, failed)),
            failure: (code != 0).then_some(Failure::Grpc(code)),
            result: Ok(res),
            blame: true,
            cause: None,
        }
    }
}

/// The bookkeeping of a verdict that waits for the trailers: the outcome counter of the target,
/// and its breaker and passive health.
struct TrailerVerdict {
    upstream: Arc<Upstream>,
    target: usize,
    counters: Family<UpstreamLabels, Counter>,
    /// The client's upload: a stream that broke because the client's body did (a cancelled
    /// client-streaming call) is the client's doing.
    stats: Option<Arc<RequestStats>>,
}

impl Settle for TrailerVerdict {
    fn settle(self: Box<Self>, label: &'static str, failed: Option<bool>) {
        let Some(target) = self.upstream.targets.get(self.target) else { return };
        let client_broke =
            self.stats.as_ref().is_some_and(|s| s.broken.load(std::sync::atomic::Ordering::Relaxed));
        let (label, failed) = if client_broke && label == outcome::ERROR {
            (outcome::CANCELLED, None)
        } else {
            (label, failed)
        };
        let labels = UpstreamLabels {
            upstream: Name(self.upstream.name.clone()),
            target: Name(target.url.clone()),
            outcome: label,
        };
        self.counters.get_or_create(&labels).inc();
        if let Some(failed) = failed {
            self.upstream.record_outcome(target, failed);
        }
    }
}
