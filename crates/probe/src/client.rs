//! The probe's HTTP client: connections to the one address that took the first one, over the
//! same TLS settings, each wait bounded, each body read up to a limit.
//!
//! The probe needs what a general HTTP client hides: HTTP/2 with prior knowledge on plain TCP
//! (h2c, for gRPC), HTTP/1.1 forced over TLS (a WebSocket upgrade), the trailers of an answer
//! (`grpc-status`), and the connection's own error when a request fails. So it drives hyper's
//! connection API directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net;

/// The HTTP version a request must go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// HTTP/2 when ALPN chooses it, else HTTP/1.1 (plain TCP is HTTP/1.1).
    Auto,
    /// HTTP/2: chosen by ALPN over TLS, with prior knowledge (h2c) on plain TCP.
    H2,
    /// HTTP/1.1, also over TLS.
    Http1,
}

/// An answer, read whole (up to the limit it was read with).
#[derive(Debug)]
pub struct Answer {
    pub version: http::Version,
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
    pub body: Bytes,
    /// The time to the answer's head.
    pub ms: f64,
}

impl Answer {
    /// A header's value, from the head or else the trailers.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .or_else(|| self.trailers.as_ref().and_then(|t| t.get(name)))
            .and_then(|v| v.to_str().ok())
    }

    /// The media type of the answer, lower case, without parameters.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// `HTTP/1.1 200, application/json`: how an answer is quoted as evidence.
    pub fn summary(&self) -> String {
        let ct = self.header("content-type").map(|c| format!(", {c}")).unwrap_or_default();
        format!("{:?} {}{ct}", self.version, self.status.as_u16())
    }
}

/// Where and how to connect: the address the first connection reached, and its TLS settings.
#[derive(Clone)]
pub struct Dialer {
    pub address: SocketAddr,
    /// The host name, for SNI.
    pub host: String,
    /// `host[:port]`, for `Host` and `:authority`.
    pub authority: String,
    /// TLS configs offering `h2` and `http/1.1`, and only `http/1.1`.
    pub tls: Option<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)>,
    pub timeout: Duration,
    /// The server speaks only HTTP/2 on plain TCP (h2c): `Auto` means HTTP/2 there.
    pub h2c_only: bool,
}

impl Dialer {
    pub fn new(
        address: SocketAddr,
        host: &str,
        authority: &str,
        tls: Option<&rustls::ClientConfig>,
        timeout: Duration,
    ) -> Dialer {
        let tls = tls.map(|c| {
            let mut h1 = c.clone();
            h1.alpn_protocols = vec![b"http/1.1".to_vec()];
            (Arc::new(c.clone()), Arc::new(h1))
        });
        Dialer {
            address,
            host: host.to_owned(),
            authority: authority.to_owned(),
            tls,
            timeout,
            h2c_only: false,
        }
    }

    /// The scheme requests go with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// A new connection speaking `want`.
    pub async fn open(&self, want: Want) -> Result<Conn, String> {
        let (attempt, tcp) = net::connect(self.address, self.timeout).await;
        let tcp = tcp.ok_or_else(|| {
            format!("no connection to {}: {}", self.address, attempt.error.unwrap_or(attempt.outcome.into()))
        })?;
        match &self.tls {
            None => {
                let h2 = want == Want::H2 || (want == Want::Auto && self.h2c_only);
                Conn::handshake(tcp, h2, self.timeout).await
            }
            Some((both, h1)) => {
                let config = if want == Want::Http1 { h1.clone() } else { both.clone() };
                let name = rustls_pki_types::ServerName::try_from(
                    self.host.trim_start_matches('[').trim_end_matches(']').to_owned(),
                )
                .map_err(|e| format!("`{}` is not a name TLS can check: {e}", self.host))?;
                let tls = tokio::time::timeout(
                    self.timeout,
                    tokio_rustls::TlsConnector::from(config).connect(name, tcp),
                )
                .await
                .map_err(|_| format!("no TLS handshake within {}", net::humantime(self.timeout)))?
                .map_err(|e| format!("the TLS handshake failed: {}", crate::chain(&e)))?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                if want == Want::H2 && !h2 {
                    return Err("the server did not choose HTTP/2 (ALPN h2) in the TLS handshake".into());
                }
                Conn::handshake(tls, h2, self.timeout).await
            }
        }
    }

    /// A request with the probe's usual headers; `target` is the path and query.
    pub fn request(&self, method: http::Method, target: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(format!("{}://{}{target}", self.scheme(), self.authority))
            .header(http::header::USER_AGENT, concat!("bridgehead-probe/", env!("CARGO_PKG_VERSION")))
    }

    /// One request on a new connection; the body is read up to `limit` bytes.
    pub async fn send(
        &self,
        want: Want,
        req: http::Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<Answer, String> {
        let mut conn = self.open(want).await?;
        conn.send(req, limit).await
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One open connection, for one request after another.
pub struct Conn {
    sender: Sender,
    driver: Option<tokio::task::JoinHandle<Result<(), hyper::Error>>>,
    authority: String,
    timeout: Duration,
}

impl Conn {
    /// Starts HTTP over `io`: HTTP/2 when `h2`, else HTTP/1.1.
    pub async fn handshake<IO>(io: IO, h2: bool, timeout: Duration) -> Result<Conn, String>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = TokioIo::new(io);
        let bounded =
            |what: &'static str| move |_| format!("no {what} handshake within {}", net::humantime(timeout));
        let (sender, driver) = if h2 {
            let (send, conn) = tokio::time::timeout(
                timeout,
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
            )
            .await
            .map_err(bounded("HTTP/2"))?
            .map_err(|e| format!("the HTTP/2 handshake failed: {}", crate::chain(&e)))?;
            (Sender::H2(send), tokio::spawn(conn))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("the HTTP/1.1 exchange failed: {}", crate::chain(&e)))?;
            (Sender::H1(send), tokio::spawn(conn.with_upgrades()))
        };
        Ok(Conn { sender, driver: Some(driver), authority: String::new(), timeout })
    }

    /// Sets the `Host` sent over HTTP/1.1 (HTTP/2 takes the URI's authority).
    pub fn with_authority(mut self, authority: &str) -> Conn {
        self.authority = authority.to_owned();
        self
    }

    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Sends `req` (an absolute URI) and reads the answer, its body up to `limit` bytes. When
    /// the request fails, the connection's own error is given: it says more.
    pub async fn send(&mut self, req: http::Request<Full<Bytes>>, limit: usize) -> Result<Answer, String> {
        let timeout = self.timeout;
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let authority =
            parts.uri.authority().map(ToString::to_string).unwrap_or_else(|| self.authority.clone());
        let res = match &mut self.sender {
            Sender::H1(s) => {
                parts.headers.entry(http::header::HOST).or_insert(
                    http::HeaderValue::from_str(&authority).map_err(|e| format!("bad authority: {e}"))?,
                );
                parts.uri = parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| "/".parse(), |p| p.as_str().parse())
                    .map_err(|e| format!("bad target: {e}"))?;
                let req = http::Request::from_parts(parts, body);
                tokio::time::timeout(timeout, async {
                    s.ready().await?;
                    s.send_request(req).await
                })
                .await
            }
            Sender::H2(s) => {
                parts.headers.remove(http::header::HOST);
                let req = http::Request::from_parts(parts, body);
                tokio::time::timeout(timeout, async {
                    s.ready().await?;
                    s.send_request(req).await
                })
                .await
            }
        };
        let res = match res {
            Err(_) => return Err(format!("no answer within {}", net::humantime(timeout))),
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(self.failed_because(e).await),
        };
        let ms = net::ms(started);
        let (parts, body) = res.into_parts();
        let mut data = bytes::BytesMut::new();
        let mut trailers = None;
        if parts.status != http::StatusCode::SWITCHING_PROTOCOLS {
            let mut body = body;
            // Read up to the limit, within the bound; an answer cut short is still an answer.
            let _ = tokio::time::timeout(timeout, async {
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    match frame.into_data() {
                        Ok(d) => {
                            let room = limit.saturating_sub(data.len());
                            data.extend_from_slice(&d[..d.len().min(room)]);
                            if data.len() >= limit {
                                break;
                            }
                        }
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    }
                }
            })
            .await;
        }
        Ok(Answer {
            version: parts.version,
            status: parts.status,
            headers: parts.headers,
            trailers,
            body: data.freeze(),
            ms,
        })
    }

    /// Why a request failed: the connection's own error says more than the request's
    /// (`operation was canceled`), so it is waited for, briefly.
    async fn failed_because(&mut self, e: hyper::Error) -> String {
        if let Some(driver) = self.driver.take()
            && let Ok(Ok(Err(c))) = tokio::time::timeout(Duration::from_secs(1), driver).await
        {
            return format!("the connection failed: {}", crate::chain(&c));
        }
        format!("the request failed: {}", crate::chain(&e))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}
