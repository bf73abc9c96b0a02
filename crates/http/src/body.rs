//! Request and response bodies on the data path: streamed and counted; buffered only where a
//! policy needs the whole body (a retry resends it, an idempotency key fingerprints the request
//! and stores the response), and then only up to that policy's limit.
//!
//! [`RequestBody`] enforces `server.limits.max_body` while streaming (a body without
//! `Content-Length` is cut off at the limit, not read into memory first). [`ResponseBody`]
//! counts bytes sent to the client and runs the logging phase when it is dropped, which is when
//! the response is really over: completed, failed mid-stream, or abandoned by the client.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream_body::UpstreamBody;

/// Boxed error type of the bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Byte counts of a request body, shared between the body (moved into the upstream request)
/// and the logging phase.
#[derive(Default, Debug)]
pub struct RequestStats {
    pub bytes_in: AtomicU64,
    pub too_large: AtomicBool,
    /// The client's body failed while streaming (it went away or sent garbage): whatever error
    /// the upstream exchange reports then is the client's doing (HTTP/2 clients report it as a
    /// reset stream, not as a body error).
    pub broken: AtomicBool,
}

/// The body over the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Polls a hyper body, boxing its error: the one place both directions read from hyper.
pub(crate) fn poll_incoming(
    inner: &mut Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(inner).poll_frame(cx).map(|frame| frame.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
}

/// A request body sent upstream.
pub enum RequestBody {
    Empty,
    /// A body read whole beforehand, so it can be sent more than once.
    Full(Option<Bytes>),
    Stream {
        inner: Incoming,
        limit: u64,
        stats: Arc<RequestStats>,
    },
}

impl RequestBody {
    /// Streamed from the client (not read whole beforehand).
    pub fn is_stream(&self) -> bool {
        matches!(self, RequestBody::Stream { .. })
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum Collect<B = Incoming> {
    /// Longer than the limit, or the process-wide budget ran out; what was read so far and the
    /// rest of the body.
    TooLarge(Bytes, B),
    /// The body failed (the peer went away or sent garbage).
    Failed(BoxError),
}

/// `server.limits.max_buffered`: memory for bodies held whole, across all requests, counted in
/// KiB. A request holds its share ([`Held`]) until its response is over.
#[derive(Clone, Debug)]
pub struct BufferBudget(Arc<tokio::sync::Semaphore>);

/// Memory taken from the [`BufferBudget`] (one permit per KiB, merged into one); given back when
/// dropped.
#[derive(Debug, Default)]
pub struct Held(Option<tokio::sync::OwnedSemaphorePermit>);

impl Held {
    fn add(&mut self, p: tokio::sync::OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(held) => held.merge(p),
            None => self.0 = Some(p),
        }
    }

    /// KiB held.
    pub fn kib(&self) -> usize {
        self.0.as_ref().map_or(0, tokio::sync::OwnedSemaphorePermit::num_permits)
    }
}

impl BufferBudget {
    pub fn new(bytes: u64) -> Self {
        let kib = (bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize;
        Self(Arc::new(tokio::sync::Semaphore::new(kib)))
    }

    /// Makes `held` cover `total` bytes (rounded up to KiB), taking only what it lacks; false
    /// when the budget cannot (nothing more is taken then).
    pub fn cover(&self, total: u64, held: &mut Held) -> bool {
        let want = total.div_ceil(1024).min(u32::MAX as u64) as usize;
        let more = want.saturating_sub(held.kib());
        if more == 0 {
            return true;
        }
        match self.0.clone().try_acquire_many_owned(more as u32) {
            Ok(p) => {
                held.add(p);
                true
            }
            Err(_) => false,
        }
    }

    /// Like [`cover`](Self::cover), but waits up to `patience` for room.
    pub async fn cover_within(&self, total: u64, held: &mut Held, patience: std::time::Duration) -> bool {
        let want = total.div_ceil(1024).min(u32::MAX as u64) as usize;
        let more = want.saturating_sub(held.kib());
        if more == 0 {
            return true;
        }
        match tokio::time::timeout(patience, self.0.clone().acquire_many_owned(more as u32)).await {
            Ok(Ok(p)) => {
                held.add(p);
                true
            }
            _ => false,
        }
    }

    /// KiB free right now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

/// How a body being read whole is charged to the [`BufferBudget`].
pub enum Charge<'a> {
    /// Not charged (room was taken beforehand).
    No,
    /// Charged as it grows; refused at once when there is no room.
    Now(&'a BufferBudget, &'a mut Held),
    /// Charged as it grows, waiting up to a second for room (a response the upstream already
    /// sent, which would otherwise be stored without its body).
    Patiently(&'a BufferBudget, &'a mut Held),
}

/// Reads `body` whole if it fits in `limit` bytes and in the budget.
pub async fn collect<B>(mut body: B, limit: u64, mut charge: Charge<'_>) -> Result<Bytes, Collect<B>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Collect::Failed(e.into()))?;
        if let Ok(data) = frame.into_data() {
            let total = buf.len() as u64 + data.len() as u64;
            let fits = total <= limit
                && match &mut charge {
                    Charge::No => true,
                    Charge::Now(b, held) => b.cover(total, held),
                    Charge::Patiently(b, held) => {
                        b.cover_within(total, held, std::time::Duration::from_secs(1)).await
                    }
                };
            if !fits {
                buf.extend_from_slice(&data);
                return Err(Collect::TooLarge(buf.freeze(), body));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream { inner, limit, stats } => poll_incoming(inner, cx).map(|frame| {
                let frame = frame?;
                if frame.is_err() {
                    stats.broken.store(true, Relaxed);
                }
                if let Some(data) = frame.as_ref().ok().and_then(Frame::data_ref) {
                    let seen = stats.bytes_in.fetch_add(data.len() as u64, Relaxed) + data.len() as u64;
                    if seen > *limit {
                        stats.too_large.store(true, Relaxed);
                        return Some(Err(Box::new(BodyTooLarge(*limit)) as BoxError));
                    }
                }
                Some(frame)
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// What to do when a response is over; receives the bytes sent and whether the body ended cleanly.
pub trait OnFinish: Send + Sync + 'static {
    fn finish(&mut self, bytes_out: u64, completed: bool);
    /// A gRPC status passed in the body's trailers.
    fn grpc_status(&mut self, _code: u32) {}
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// A body the gateway makes as it goes (a transcoded stream).
    Made(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>),
}

/// A response body sent to the client.
pub struct ResponseBody {
    inner: Inner,
    bytes_out: u64,
    completed: bool,
    on_finish: Option<Box<dyn OnFinish>>,
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        Self { inner: Inner::Full(Some(bytes)), bytes_out: 0, completed: false, on_finish: None }
    }

    /// The whole body, when it was made whole (`full`) and not yet sent.
    pub fn whole(&self) -> Option<&Bytes> {
        match &self.inner {
            Inner::Full(b) => b.as_ref(),
            _ => None,
        }
    }

    /// No body at all: the head ends the stream (a gRPC trailers-only answer).
    pub fn empty() -> Self {
        Self { inner: Inner::Full(None), bytes_out: 0, completed: false, on_finish: None }
    }

    pub fn upstream(body: UpstreamBody) -> Self {
        Self { inner: Inner::Upstream(body), bytes_out: 0, completed: false, on_finish: None }
    }

    /// A body made as it is sent.
    pub fn made(body: impl Body<Data = Bytes, Error = BoxError> + Send + Sync + 'static) -> Self {
        Self { inner: Inner::Made(Box::pin(body)), bytes_out: 0, completed: false, on_finish: None }
    }

    /// `head`, already read from the upstream body, followed by the rest of it.
    pub fn prefixed(head: Bytes, rest: UpstreamBody) -> Self {
        Self::upstream(rest.with_first(Frame::data(head)))
    }

    /// Runs `f` when the body is dropped.
    pub fn on_finish(mut self, f: Box<dyn OnFinish>) -> Self {
        self.on_finish = Some(f);
        self
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut f) = self.on_finish.take() {
            let completed = self.completed || Body::is_end_stream(self);
            f.finish(self.bytes_out, completed);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(inner) => Pin::new(inner).poll_frame(cx),
            Inner::Made(inner) => inner.as_mut().poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes_out += d.len() as u64;
                } else if let Some(code) = frame.trailers_ref().and_then(crate::grpc::grpc_status)
                    && let Some(f) = this.on_finish.as_mut()
                {
                    f.grpc_status(code);
                }
            }
            Poll::Ready(None) => this.completed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(inner) => inner.is_end_stream(),
            Inner::Made(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(inner) => inner.size_hint(),
            Inner::Made(inner) => inner.size_hint(),
        }
    }
}
