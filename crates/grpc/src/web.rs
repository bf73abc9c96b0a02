//! gRPC-Web (the protocol browsers speak, `PROTOCOL-WEB.md` of gRPC) translated to gRPC over
//! HTTP/2 and back, for routes that proxy a gRPC service.
//!
//! - Request: `application/grpc-web[+proto]` carries gRPC's length-prefixed messages as is;
//!   `application/grpc-web-text[+proto]` carries them base64-encoded. The body is decoded and
//!   sent as `application/grpc` with `te: trailers`.
//! - Response: the messages pass through; the trailers become one last frame (flag `0x80`)
//!   holding them as `name: value\r\n` lines, since HTTP/1.1 browsers cannot read trailers. In
//!   text mode each frame is base64-encoded whole, with its padding, as it arrives (clients
//!   decode padded chunks one after another). A stream that breaks off still ends with a
//!   trailer frame (UNAVAILABLE).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use http_body::{Body, Frame};

use bridgehead_http::body::BoxError;

/// Which gRPC-Web encoding a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Text,
}

/// The gRPC-Web mode of a request, from its content type (POST only, as gRPC).
pub fn mode(method: &http::Method, headers: &HeaderMap) -> Option<Mode> {
    if method != http::Method::POST {
        return None;
    }
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?.to_ascii_lowercase();
    let base = ct.split(';').next().unwrap_or("").trim();
    let (kind, _) = base.split_once('+').unwrap_or((base, ""));
    match kind {
        "application/grpc-web" => Some(Mode::Binary),
        "application/grpc-web-text" => Some(Mode::Text),
        _ => None,
    }
}

/// The request as gRPC: headers rewritten, the body decoded.
pub fn request(mode: Mode, headers: &mut HeaderMap, body: Bytes) -> Result<Bytes, String> {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.remove(header::CONTENT_LENGTH);
    headers.remove("x-grpc-web");
    match mode {
        Mode::Binary => Ok(body),
        Mode::Text => {
            // Concatenated base64 chunks, each possibly padded.
            let mut out = Vec::with_capacity(body.len() * 3 / 4);
            let text: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            for chunk in text.split_inclusive(|b| *b == b'=').filter(|c| !c.is_empty()) {
                let chunk: Vec<u8> = chunk.iter().copied().filter(|b| *b != b'=').collect();
                if chunk.is_empty() {
                    continue;
                }
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode_vec(&chunk, &mut out)
                    .map_err(|e| format!("the grpc-web-text body is not base64: {e}"))?;
            }
            Ok(Bytes::from(out))
        }
    }
}

/// The content type of the answer to a `mode` request.
pub fn content_type(mode: Mode) -> HeaderValue {
    match mode {
        Mode::Binary => HeaderValue::from_static("application/grpc-web+proto"),
        Mode::Text => HeaderValue::from_static("application/grpc-web-text+proto"),
    }
}

/// A gRPC answer's body as gRPC-Web.
pub struct WebBody<B> {
    inner: B,
    mode: Mode,
    done: bool,
    /// Where the call's status code (+ 1) goes, for the caller's metrics.
    code: Option<Arc<AtomicU32>>,
}

impl<B> WebBody<B> {
    pub fn new(inner: B, mode: Mode) -> Self {
        WebBody { inner, mode, done: false, code: None }
    }

    /// Records the status of the trailers it converts in `code` (+ 1).
    #[must_use]
    pub fn with_code(mut self, code: Option<Arc<AtomicU32>>) -> Self {
        self.code = code;
        self
    }

    /// `bytes` as they go out: as is, or base64 with its padding (each frame flushed whole, as
    /// PROTOCOL-WEB.md asks; clients decode padded chunks one after another).
    fn out(&self, bytes: &[u8]) -> Bytes {
        match self.mode {
            Mode::Binary => Bytes::copy_from_slice(bytes),
            Mode::Text => Bytes::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// The last frame: the trailers (or, for a stream that broke off, UNAVAILABLE).
    fn last(&mut self, trailers: &HeaderMap) -> Bytes {
        self.done = true;
        if let Some(c) = &self.code
            && let Some(code) = bridgehead_http::grpc::grpc_status(trailers)
        {
            c.store(code.saturating_add(1), Relaxed);
        }
        self.out(&trailer_frame(trailers))
    }
}

/// The trailer frame: flag 0x80, the length, then `name: value\r\n` lines.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut text = BytesMut::new();
    for (name, value) in trailers {
        text.put_slice(name.as_str().as_bytes());
        text.put_slice(b": ");
        text.put_slice(value.as_bytes());
        text.put_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(text.len() + 5);
    out.put_u8(0x80);
    out.put_u32(text.len() as u32);
    out.put_slice(&text);
    out.freeze()
}

impl<B> Body for WebBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_))) => {
                    // The upstream broke off: the browser still gets a status.
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", HeaderValue::from_static("14"));
                    t.insert("grpc-message", HeaderValue::from_static("the upstream stream broke off"));
                    return Poll::Ready(Some(Ok(Frame::data(this.last(&t)))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(this.out(&data))))),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return Poll::Ready(Some(Ok(Frame::data(this.last(&trailers)))));
                    }
                },
                // No trailers: the status was in the head (trailers-only).
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn modes_come_from_the_content_type() {
        let h = |ct: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            m
        };
        let post = http::Method::POST;
        assert_eq!(mode(&post, &h("application/grpc-web")), Some(Mode::Binary));
        assert_eq!(mode(&post, &h("application/grpc-web+proto")), Some(Mode::Binary));
        assert_eq!(mode(&post, &h("Application/GRPC-Web-Text+proto; charset=x")), Some(Mode::Text));
        assert_eq!(mode(&post, &h("application/grpc")), None);
        assert_eq!(mode(&http::Method::GET, &h("application/grpc-web")), None);
    }

    #[test]
    fn text_requests_decode_concatenated_padded_chunks() {
        let mut h = HeaderMap::new();
        let a = base64::engine::general_purpose::STANDARD.encode(b"\x00\x00\x00\x00\x01");
        let b = base64::engine::general_purpose::STANDARD.encode(b"x");
        let body = request(Mode::Text, &mut h, Bytes::from(format!("{a}{b}"))).unwrap();
        assert_eq!(&body[..], b"\x00\x00\x00\x00\x01x");
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert!(request(Mode::Text, &mut h, Bytes::from_static(b"!!!")).is_err());
    }

    #[tokio::test]
    async fn answers_end_with_a_trailer_frame_in_either_mode() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = || -> Vec<Result<Frame<Bytes>, std::convert::Infallible>> {
            vec![
                Ok(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x02hi"))),
                Ok(Frame::trailers(trailers.clone())),
            ]
        };
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames()));
        let out = WebBody::new(inner, Mode::Binary).collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"\x00\x00\x00\x00\x02hi\x80\x00\x00\x00\x10grpc-status: 0\r\n");
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames()));
        let text = WebBody::new(inner, Mode::Text).collect().await.unwrap().to_bytes();
        // Each frame is its own padded chunk: decoded one after another, as clients do.
        assert!(text.contains(&b'='));
        let decoded = request(Mode::Text, &mut HeaderMap::new(), text).unwrap();
        assert_eq!(decoded, out);
    }
}
