//! The response body type, and bounded reading of request bodies.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

const FILL_CHUNK: usize = 64 * 1024;
static FILL: [u8; FILL_CHUNK] = [b'x'; FILL_CHUNK];

/// Every response the mock sends: a body already in memory, or `N` bytes of `x` produced chunk
/// by chunk from one static buffer (so a multi-gigabyte download allocates nothing).
#[derive(Debug)]
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Fill { remaining: u64 },
}

impl MockBody {
    pub(crate) fn empty() -> Self {
        MockBody::Full(None)
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        MockBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub(crate) fn fill(len: u64) -> Self {
        MockBody::Fill { remaining: len }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            MockBody::Full(bytes) => bytes.take(),
            MockBody::Fill { remaining } if *remaining == 0 => None,
            MockBody::Fill { remaining } => {
                let n = (*remaining).min(FILL_CHUNK as u64) as usize;
                *remaining -= n as u64;
                Some(Bytes::from_static(&FILL[..n]))
            }
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Fill { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(match self {
            MockBody::Full(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
            MockBody::Fill { remaining } => *remaining,
        })
    }
}

/// A request body after reading: its full length, and its first bytes.
#[derive(Debug, Default)]
pub(crate) struct ReceivedBody {
    /// The first bytes of the body, at most the cap given to [`read_bounded`].
    pub(crate) head: Vec<u8>,
    /// The length of the whole body.
    pub(crate) len: u64,
}

/// Reads `body` to its end, keeping at most `cap` bytes and counting the rest.
pub(crate) async fn read_bounded<B>(mut body: B, cap: usize) -> Result<ReceivedBody, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut received = ReceivedBody::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        received.len += data.len() as u64;
        let room = cap - received.head.len();
        if room > 0 {
            received.head.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_streams_exactly_n_bytes_in_chunks() {
        for len in [0, 1, FILL_CHUNK as u64, 3 * FILL_CHUNK as u64 + 7] {
            let mut body = MockBody::fill(len);
            assert_eq!(body.size_hint().exact(), Some(len));
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(!data.is_empty() && data.len() <= FILL_CHUNK);
                assert!(data.iter().all(|&b| b == b'x'));
                total += data.len() as u64;
            }
            assert_eq!(total, len);
            assert!(body.is_end_stream());
        }
    }

    #[tokio::test]
    async fn read_bounded_counts_everything_and_keeps_the_head() {
        let received = read_bounded(MockBody::fill(200_000), 1000).await.unwrap();
        assert_eq!(received.len, 200_000);
        assert_eq!(received.head.len(), 1000);
        let received = read_bounded(MockBody::full("short"), 1000).await.unwrap();
        assert_eq!((received.len, &received.head[..]), (5, &b"short"[..]));
    }
}
