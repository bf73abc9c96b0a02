//! A response body from an upstream, as the proxy passes it on: possibly a first frame the
//! sender already read, what it holds of its connection (an HTTP/2 stream slot, or an HTTP/1.1
//! connection it drives and gives back to its pool when the body has been read to the end), and,
//! for a gRPC answer whose verdict waits for its trailers, what settles that verdict when they
//! arrive (or the stream breaks, or the client goes away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::{BoxError, RequestBody};
use crate::grpc::{grpc_failed, grpc_status};
use crate::metrics::outcome;

/// What settles a verdict that waits for the end of a stream: the `outcome` label, and
/// whether the target failed (`None`: not the target's doing, nothing to record).
pub trait Settle: Send + Sync {
    fn settle(self: Box<Self>, label: &'static str, failed: Option<bool>);
}

/// A stream slot on an HTTP/2 connection, held until the response body is over.
pub struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// Takes one slot of `streams`.
    pub fn take(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Relaxed);
        StreamSlot(streams.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A byte stream to an upstream: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync> Stream for T {}

/// The I/O of an HTTP/1.1 connection to an upstream.
pub type Http1Io = hyper_util::rt::TokioIo<Pin<Box<dyn Stream>>>;

/// An HTTP/1.1 connection to an upstream, driven by whoever uses it — the request that sends
/// on it, then its response body — rather than by a task of its own: no wake-up of another
/// task per request. Idle in its pool, nobody drives it; it is checked when taken.
pub struct Http1Conn {
    pub send: hyper::client::conn::http1::SendRequest<RequestBody>,
    pub conn: hyper::client::conn::http1::Connection<Http1Io, RequestBody>,
    /// The connection is over; it is never driven again.
    over: bool,
}

impl Http1Conn {
    pub fn new(
        send: hyper::client::conn::http1::SendRequest<RequestBody>,
        conn: hyper::client::conn::http1::Connection<Http1Io, RequestBody>,
    ) -> Self {
        Self { send, conn, over: false }
    }

    /// Drives the connection (reads, writes, keep-alive bookkeeping). Ready once it is over:
    /// closed by either side, failed, or not to be reused; from then on, at once.
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.over && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.over = true;
        }
        if self.over { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Drives the connection until it can take another request (`true`: both directions of
    /// the last exchange are done) or is over (`false`).
    pub fn poll_reusable(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.poll_conn(cx).is_ready() {
            return Poll::Ready(false);
        }
        self.send.poll_ready(cx).map(|r| r.is_ok())
    }

    /// Whether the connection can take another request now, without driving it.
    pub fn is_reusable(&self) -> bool {
        !self.over && self.send.is_ready()
    }
}

/// Where an HTTP/1.1 connection goes back once its response has been read to the end.
pub trait Release: Send + Sync {
    fn release(&self, conn: Box<Http1Conn>);
}

/// An HTTP/1.1 connection lent to one exchange (boxed once, when it is made: it moves from the
/// pool to the request to the body and back without being copied).
pub struct Http1Lease {
    pub conn: Box<Http1Conn>,
    pub pool: Arc<dyn Release>,
}

/// What the answer holds of its connection.
enum Hold {
    None,
    /// The HTTP/2 stream this answer holds on its connection, freed with the body.
    Stream {
        _slot: StreamSlot,
    },
    /// Driven while the body is read, given back at its end; dropped (so the connection
    /// closes) if the body is dropped before its end.
    Http1(Http1Lease),
}

/// A response body from an upstream: possibly a first frame already read, and, for a gRPC
/// answer whose verdict waits for its trailers, what settles it.
pub struct UpstreamBody {
    first: Option<Frame<Bytes>>,
    inner: Incoming,
    settle: Option<Box<dyn Settle>>,
    hold: Hold,
}

impl UpstreamBody {
    pub fn new(inner: Incoming) -> Self {
        Self { first: None, inner, settle: None, hold: Hold::None }
    }

    pub fn with_slot(mut self, slot: StreamSlot) -> Self {
        self.hold = Hold::Stream { _slot: slot };
        self
    }

    /// Holds an HTTP/1.1 connection until the body has been read to the end, then gives it
    /// back (at once if the body is empty) if it is done both ways.
    pub fn with_http1(mut self, lease: Http1Lease) -> Self {
        self.hold = Hold::Http1(lease);
        self.release_if_ended();
        self
    }

    fn release_if_ended(&mut self) {
        if self.first.is_none() && self.inner.is_end_stream() {
            self.release();
        }
    }

    fn release(&mut self) {
        // Only a connection done both ways goes back: one still writing the request body (the
        // target answered early) is dropped, which closes it.
        if let Hold::Http1(lease) = std::mem::replace(&mut self.hold, Hold::None)
            && lease.conn.is_reusable()
        {
            lease.pool.release(lease.conn);
        }
    }

    /// A first frame already read from `inner`, passed on before the rest.
    pub fn with_first(mut self, frame: Frame<Bytes>) -> Self {
        self.first = Some(frame);
        self
    }

    /// Reads the next frame of the inner body (before any is passed on).
    pub async fn next_frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| self.poll_inner(cx)).await
    }

    /// Drives the HTTP/1.1 connection this body holds, if any, then reads the inner body; gives
    /// the connection back when the body is over.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Hold::Http1(lease) = &mut self.hold
            && lease.conn.poll_conn(cx).is_ready()
        {
            // Over (the target closed it, or said `Connection: close`): what it read is in the
            // body's channel already; the connection is not reused.
            self.hold = Hold::None;
        }
        let polled = crate::body::poll_incoming(&mut self.inner, cx);
        match &polled {
            // Trailers end a chunked body.
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => self.release(),
            Poll::Ready(Some(Ok(_))) => self.release_if_ended(),
            _ => {}
        }
        polled
    }

    /// Leaves the verdict to `settle`, when the trailers arrive.
    pub fn settle_with(&mut self, settle: Box<dyn Settle>) {
        self.settle = Some(settle);
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
        let polled = this.poll_inner(cx);
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
        polled
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
