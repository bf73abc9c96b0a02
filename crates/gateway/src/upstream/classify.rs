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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::transport::StreamSlot;
use super::{Target, Upstream};
use crate::metrics::{Metrics, Name, UpstreamLabels, outcome};
use crate::policy::retry::Failure;
use crate::problem::GatewayError;
use crate::proxy::body::BoxError;

/// How an answer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classify {
    /// By the HTTP status of the response head.
    Http,
    /// By the gRPC status, from the head (trailers-only) or the trailers.
    Grpc,
}

impl Classify {
    /// gRPC for a request that says it is one (`content-type: application/grpc…`), else HTTP.
    pub fn of_request(headers: &HeaderMap) -> Self {
        let grpc = headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes().len() >= 16 && v.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
        });
        if grpc { Classify::Grpc } else { Classify::Http }
    }
}

/// The gRPC status of a header or trailer block (`grpc-status`), if it has one.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Whether a gRPC status blames the server: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
pub fn grpc_failed(code: u32) -> bool {
    matches!(code, 2 | 4 | 13 | 14 | 15)
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
}

impl Judged {
    pub fn failed(label: &'static str, failure: Failure, error: GatewayError) -> Self {
        Self { verdict: Some((label, true)), failure: Some(failure), result: Err(error) }
    }

    /// Attaches the target to an answer whose verdict waits for its trailers.
    pub fn with_target(mut self, upstream: &Arc<Upstream>, target: &Target, metrics: &Metrics) -> Self {
        if self.verdict.is_none()
            && let Ok(res) = &mut self.result
            && let Some(index) = upstream.targets.iter().position(|t| std::ptr::eq(t, target))
        {
            res.body_mut().settle = Some(Settle {
                upstream: upstream.clone(),
                target: index,
                counters: metrics.upstream_requests.clone(),
            });
        }
        self
    }
}

impl Classify {
    /// Judges a response head (reading up to the first frame of a gRPC answer when `peek`).
    pub(super) async fn judge(
        self,
        res: Response<UpstreamBody>,
        accept_switch: &(dyn Fn(&HeaderMap) -> bool + Sync),
        peek: bool,
        upstream: &str,
    ) -> Judged {
        let status = res.status();
        if status == StatusCode::SWITCHING_PROTOCOLS && !accept_switch(res.headers()) {
            // A switch to a protocol nobody asked for is refused by the caller: the target's fault.
            return Judged {
                verdict: Some((outcome::ERROR, true)),
                failure: Some(Failure::Status(status)),
                result: Ok(res),
            };
        }
        if self == Classify::Http || status != StatusCode::OK {
            let failed = status.is_server_error();
            let label = if failed { outcome::HTTP_5XX } else { outcome::SUCCESS };
            return Judged {
                verdict: Some((label, failed)),
                failure: Some(Failure::Status(status)),
                result: Ok(res),
            };
        }
        if let Some(code) = grpc_status(res.headers()) {
            return Judged::grpc(code, res);
        }
        if !peek {
            return Judged { verdict: None, failure: None, result: Ok(res) };
        }
        let (parts, mut body) = res.into_parts();
        match std::future::poll_fn(|cx| Pin::new(&mut body.inner).poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.trailers_ref().and_then(grpc_status) {
                Some(code) => {
                    body.first = Some(frame);
                    Judged::grpc(code, Response::from_parts(parts, body))
                }
                None => {
                    let trailers = frame.is_trailers();
                    body.first = Some(frame);
                    let res = Response::from_parts(parts, body);
                    if trailers {
                        // Trailers without a status: the call failed (gRPC: INTERNAL).
                        return Judged {
                            verdict: Some((outcome::GRPC_ERROR, true)),
                            failure: Some(Failure::Grpc(13)),
                            result: Ok(res),
                        };
                    }
                    Judged { verdict: None, failure: None, result: Ok(res) }
                }
            },
            Some(Err(_)) | None => Judged {
                verdict: Some((outcome::ERROR, true)),
                failure: Some(Failure::Reset),
                result: Err(GatewayError::UpstreamFailed {
                    upstream: upstream.to_owned(),
                    reason: "the response ended before its gRPC status arrived",
                }),
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
        }
    }
}

/// A response body from an upstream: possibly a first frame already read, and, for a gRPC
/// answer whose verdict waits for its trailers, what settles it.
pub struct UpstreamBody {
    first: Option<Frame<Bytes>>,
    inner: Incoming,
    settle: Option<Settle>,
    /// The HTTP/2 stream this answer holds on its connection, freed with the body.
    _slot: Option<StreamSlot>,
}

/// The bookkeeping of a verdict that waits for the end of the stream.
struct Settle {
    upstream: Arc<Upstream>,
    target: usize,
    counters: Family<UpstreamLabels, Counter>,
}

impl Settle {
    fn settle(self, label: &'static str, failed: Option<bool>) {
        let Some(target) = self.upstream.targets.get(self.target) else { return };
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

impl UpstreamBody {
    pub fn new(inner: Incoming) -> Self {
        Self { first: None, inner, settle: None, _slot: None }
    }

    pub fn with_slot(mut self, slot: StreamSlot) -> Self {
        self._slot = Some(slot);
        self
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The client went away before the trailers: not the target's doing.
        if let Some(s) = self.settle.take() {
            s.settle(outcome::CANCELLED, None);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.settle.is_some() {
            let verdict = match &polled {
                Poll::Ready(Some(Ok(f))) => f.trailers_ref().map(|t| match grpc_status(t) {
                    Some(code) if grpc_failed(code) => (outcome::GRPC_ERROR, true),
                    Some(_) => (outcome::SUCCESS, false),
                    None => (outcome::GRPC_ERROR, true),
                }),
                Poll::Ready(Some(Err(_))) => Some((outcome::ERROR, true)),
                // The stream ended without trailers: no gRPC status (gRPC: INTERNAL).
                Poll::Ready(None) => Some((outcome::GRPC_ERROR, true)),
                Poll::Pending => None,
            };
            if let Some((label, failed)) = verdict
                && let Some(s) = this.settle.take()
            {
                s.settle(label, Some(failed));
            }
        }
        polled.map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let n = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |b| b.len() as u64);
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + n);
        if let Some(u) = inner.upper() {
            h.set_upper(u + n);
        }
        h
    }
}
