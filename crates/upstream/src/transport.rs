//! The wire toward an upstream's targets: HTTP/1.1 through a pooled client, or HTTP/2 through
//! multiplexed connections of our own (`upstreams.*.protocol`).
//!
//! HTTP/2 connections are made here, on hyper's `client::conn::http2`, rather than by the
//! pooled client, for two reasons: the client would put every request to a target on one
//! connection whatever its stream count (`http2.max_concurrent_streams` opens another), and it
//! takes `:authority` from the URI it connects to, where the upstream must see the client's
//! host, as `Host` says over HTTP/1.1. Per target there are at most `http2.max_connections`;
//! a request takes the least busy one under the stream cap, else opens one (one connect at a
//! time per target), else shares the least busy. A stream counts against its connection until
//! its response body is over or dropped.
//!
//! `auto` over TLS offers `h2` and `http/1.1` in ALPN; a target that picks `http/1.1` is
//! remembered as such (until the next reload) and served by the pooled HTTP/1.1 client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridgehead_config::{Http2Settings, UpstreamProtocol};
use http::header;
use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Target;
use bridgehead_http::body::{BoxError, RequestBody};
use bridgehead_http::upstream_body::{StreamSlot, UpstreamBody};

/// Why a request could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made (TCP, TLS, or a target that refused HTTP/2 in ALPN).
    #[error("could not connect: {0}")]
    Connect(BoxError),
    /// The connect this request waited for, made by another request, failed.
    #[error("the connection attempt made meanwhile failed")]
    ConnectShared,
    /// The HTTP/2 exchange failed: a reset stream, a GOAWAY, a broken connection, or the
    /// client's body.
    #[error(transparent)]
    Http2(#[from] hyper::Error),
    /// The pooled HTTP/1.1 exchange failed.
    #[error(transparent)]
    Http1(#[from] hyper_util::client::legacy::Error),
}

impl TransportError {
    /// Nothing reached the target: the connection could not be made, or (HTTP/2) the request
    /// was never sent on a connection that closed meanwhile, or the target refused the stream
    /// unprocessed (`REFUSED_STREAM`, RFC 9113 §8.7), as it does for streams past a GOAWAY.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) | Self::ConnectShared => true,
            Self::Http1(e) => e.is_connect(),
            Self::Http2(e) => {
                use std::error::Error as _;
                e.is_canceled()
                    || e.source().and_then(|s| s.downcast_ref::<h2::Error>()).is_some_and(|h| {
                        h.is_reset() && h.is_remote() && h.reason() == Some(h2::Reason::REFUSED_STREAM)
                    })
            }
        }
    }

    /// The connect failed for another request this one waited for (already counted there).
    pub fn is_shared_connect(&self) -> bool {
        matches!(self, Self::ConnectShared)
    }

    /// The client's request body failed (it went away or sent garbage): not the target's fault.
    pub fn is_client_body(&self) -> bool {
        use std::error::Error as _;
        match self {
            Self::Connect(_) | Self::ConnectShared => false,
            Self::Http2(e) => e.is_user(),
            Self::Http1(e) => {
                e.source().and_then(|s| s.downcast_ref::<hyper::Error>()).is_some_and(hyper::Error::is_user)
            }
        }
    }
}

/// How requests reach an upstream's targets.
#[derive(Clone)]
pub struct Transport {
    protocol: UpstreamProtocol,
    http1: super::UpstreamClient,
    http2: Option<Arc<Http2Pool>>,
}

impl Transport {
    pub fn new(
        protocol: UpstreamProtocol,
        http1: super::UpstreamClient,
        http2: Option<Arc<Http2Pool>>,
    ) -> Self {
        Self { protocol, http1, http2 }
    }

    /// Exchanges one request with `target`. The request's URI carries the target's scheme and
    /// authority; its `Host` header (if any) is the authority the upstream should see.
    pub async fn request(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, TransportError> {
        let http2 = match (&self.http2, self.protocol) {
            (Some(pool), UpstreamProtocol::H2c | UpstreamProtocol::H2) => Some(pool),
            (Some(pool), UpstreamProtocol::Auto) if target.scheme == http::uri::Scheme::HTTPS => Some(pool),
            _ => None,
        };
        if let Some(pool) = http2
            && let Some(lease) = pool.lease(target, self.protocol == UpstreamProtocol::Auto).await?
        {
            return lease.send(target, req).await;
        }
        Ok(self.http1.request(req).await?.map(UpstreamBody::new))
    }
}

/// HTTP/2 connections to the targets of one upstream.
pub struct Http2Pool {
    settings: Http2Settings,
    connect_timeout: Duration,
    /// With ALPN `h2` (and `http/1.1` for `auto`); `None` for h2c.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The SNI override (`tls.server_name`).
    server_name: Option<ServerName<'static>>,
    targets: Mutex<HashMap<String, Arc<TargetConns>>>,
}

/// The connections to one target.
#[derive(Default)]
struct TargetConns {
    conns: Mutex<Vec<Conn>>,
    /// One connect at a time per target.
    connecting: tokio::sync::Mutex<()>,
    /// With `auto`: the target picked HTTP/1.1 in ALPN.
    http1_only: AtomicBool,
    /// When the last connection attempt failed: requests that waited for it fail at once
    /// rather than each spending a connect timeout on a target that is down.
    failed_at: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Conn {
    send: SendRequest<RequestBody>,
    streams: Arc<AtomicUsize>,
}

/// A connection picked for one request.
struct Lease {
    send: SendRequest<RequestBody>,
    slot: StreamSlot,
}

impl Lease {
    fn of(conn: &Conn) -> Self {
        Lease { send: conn.send.clone(), slot: StreamSlot::take(&conn.streams) }
    }

    /// Sends on the lease's connection. `:authority` is the `Host` the request carries (the
    /// client's host), else the target's.
    async fn send(
        mut self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, TransportError> {
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| target.authority.clone());
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.authority = Some(authority);
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        *req.version_mut() = http::Version::HTTP_2;
        let res = self.send.send_request(req).await?;
        Ok(res.map(|b| UpstreamBody::new(b).with_slot(self.slot)))
    }
}

impl Http2Pool {
    pub fn new(
        settings: Http2Settings,
        connect_timeout: Duration,
        tls: Option<rustls::ClientConfig>,
        server_name: Option<&str>,
        auto: bool,
    ) -> Self {
        let tls = tls.map(|mut c| {
            c.alpn_protocols =
                if auto { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"h2".to_vec()] };
            Arc::new(c)
        });
        Self {
            settings,
            connect_timeout,
            tls,
            server_name: server_name.and_then(|n| ServerName::try_from(n.to_owned()).ok()),
            targets: Mutex::new(HashMap::new()),
        }
    }

    fn conns(&self, target: &Target) -> Arc<TargetConns> {
        let mut targets = self.targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        targets.entry(target.url.to_string()).or_default().clone()
    }

    /// A connection with room for one more stream; `None` when an `auto` target speaks only
    /// HTTP/1.1.
    async fn lease(&self, target: &Target, auto: bool) -> Result<Option<Lease>, TransportError> {
        let t = self.conns(target);
        if t.http1_only.load(Relaxed) {
            return Ok(None);
        }
        if let Some(lease) = self.pick(&t, false) {
            return Ok(Some(lease));
        }
        let waited_from = Instant::now();
        let _connecting = t.connecting.lock().await;
        // Another request may have connected, learned the target speaks HTTP/1.1, or failed to
        // connect while this one waited: use what it found instead of trying again.
        if t.http1_only.load(Relaxed) {
            return Ok(None);
        }
        if let Some(lease) = self.pick(&t, false) {
            return Ok(Some(lease));
        }
        if t.failed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at >= waited_from)
        {
            // Share a full connection if there is one; else the target is unreachable now.
            return self.pick(&t, true).map(Some).ok_or(TransportError::ConnectShared);
        }
        if t.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
            >= self.settings.max_connections as usize
            && let Some(lease) = self.pick(&t, true)
        {
            return Ok(Some(lease));
        }
        let send = match self.connect(target, auto).await {
            Ok(Some(send)) => send,
            Ok(None) => {
                t.http1_only.store(true, Relaxed);
                tracing::info!(target = %target.url, "target chose HTTP/1.1 in ALPN");
                return Ok(None);
            }
            Err(e) => {
                *t.failed_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                return Err(e);
            }
        };
        let conn = Conn { send, streams: Arc::new(AtomicUsize::new(0)) };
        let lease = Lease::of(&conn);
        t.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        Ok(Some(lease))
    }

    /// The least busy open connection; under the stream cap unless `any`.
    fn pick(&self, t: &TargetConns, any: bool) -> Option<Lease> {
        let mut conns = t.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.retain(|c| !c.send.is_closed());
        let cap = self.settings.max_concurrent_streams as usize;
        conns
            .iter()
            .filter(|c| c.send.is_ready() && (any || c.streams.load(Relaxed) < cap))
            .min_by_key(|c| c.streams.load(Relaxed))
            .map(Lease::of)
    }

    /// Opens a connection: TCP (within `timeouts.connect`), TLS with ALPN where the target is
    /// `https://`, then the HTTP/2 handshake. `None`: an `auto` target picked HTTP/1.1.
    async fn connect(
        &self,
        target: &Target,
        auto: bool,
    ) -> Result<Option<SendRequest<RequestBody>>, TransportError> {
        let connect_error = |e: BoxError| TransportError::Connect(e);
        let host = target.authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = target.authority.port_u16().unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else { return self.handshake(tcp).await.map(Some) };
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host).map_err(|e| connect_error(e.into()))?,
        };
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| connect_error("the TLS handshake timed out".into()))?
            .map_err(|e| connect_error(e.into()))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => self.handshake(stream).await.map(Some),
            _ if auto => Ok(None),
            _ => Err(connect_error("the target did not agree to HTTP/2 (`h2`) in ALPN".into())),
        }
    }

    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<RequestBody>, TransportError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let s = &self.settings;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(s.initial_stream_window.get() as u32)
            .initial_connection_window_size(s.initial_connection_window.get() as u32)
            .max_frame_size(s.max_frame_size.get() as u32)
            .keep_alive_interval(s.keep_alive_interval.get())
            .keep_alive_timeout(s.keep_alive_timeout.get())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| TransportError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed");
            }
        });
        Ok(send)
    }
}
