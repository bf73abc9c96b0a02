//! The wire toward an upstream's targets: HTTP/1.1 or HTTP/2 (`upstreams.*.protocol`), on
//! connections made here, on hyper's `client::conn` handshakes.
//!
//! **HTTP/1.1.** Each target keeps a LIFO list of idle connections per data-plane worker (a
//! connection is driven by the reactor of the worker that opened it). A request takes the most
//! recently used one and drives it from its own task: the connection ([`Http1Conn`]) has no
//! task of its own, so a request costs no wake-up of another task, no channel hand-off to it,
//! and nothing spawned to return the connection. The response body drives it while it is read
//! and gives it back at its end if it is done both ways (a body dropped before its end, or a
//! request body still being written, drops the connection, which then closes). Per request
//! there are two short uncontended locks (take, give back), no URI rewritten into a pool key and
//! no boxed future — what hyper-util's pooled client costs, measured in `bench/`. Two
//! exceptions get a task: a request whose body streams from the client (its connection is
//! driven by a task for the exchange, so the upload flows whether or not the answer is read,
//! then given back), and a request that offers a protocol upgrade (a fresh connection, handed to
//! a task that can complete the upgrade, never reused). Idle, nobody drives a connection: it is checked
//! when taken (closed meanwhile → skipped; a request it could not take, nothing written, goes to
//! the next one), and a reaper task closes those the target closed and those idle for longer
//! than `timeouts.pool_idle`. At most [`MAX_IDLE`] idle connections are kept per target and worker.
//!
//! **HTTP/2** connections are made here too rather than by a pooled client, for two reasons:
//! the client would put every request to a target on one connection whatever its stream count
//! (`http2.max_concurrent_streams` opens another), and it takes `:authority` from the URI it
//! connects to, where the upstream must see the client's host, as `Host` says over HTTP/1.1.
//! Per target and worker there are at most `http2.max_connections`; a request takes the least
//! busy one under the stream cap, else opens one (one connect at a time per target), else shares
//! the least busy. A stream counts against its connection until its response body is over or
//! dropped.
//!
//! `auto` over TLS offers `h2` and `http/1.1` in ALPN; a target that picks `http/1.1` is
//! remembered as such (until the next reload) and served over HTTP/1.1.
//!
//! Each [`Target`] holds its [`TargetConns`], looked up once when the upstream is compiled, so
//! no request hashes a target's name.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use bridgehead_config::{Http2Settings, UpstreamProtocol};
use http::header;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::client::conn::http1;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Target;
use bridgehead_http::body::{BoxError, RequestBody};
use bridgehead_http::clock::clock_ms;
use bridgehead_http::upstream_body::{Http1Conn, Http1Lease, Release, StreamSlot, UpstreamBody};

/// Idle HTTP/1.1 connections kept per target and worker; one given back past this closes the oldest.
pub const MAX_IDLE: usize = 1024;

/// Why a request could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made (TCP, TLS, or a target that refused HTTP/2 in ALPN).
    #[error("could not connect: {0}")]
    Connect(BoxError),
    /// The connect this request waited for, made by another request, failed.
    #[error("the connection attempt made meanwhile failed")]
    ConnectShared,
    /// The HTTP/1.1 connection ended before the request was answered.
    #[error("the connection closed before a response arrived")]
    Closed,
    /// The exchange failed: a reset stream, a GOAWAY, a broken connection, an invalid
    /// response, or the client's body.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl TransportError {
    /// Nothing reached the target: the connection could not be made, or the request was never
    /// sent on a connection that closed meanwhile, or (HTTP/2) the target refused the stream
    /// unprocessed (`REFUSED_STREAM`, RFC 9113 §8.7), as it does for streams past a GOAWAY.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) | Self::ConnectShared => true,
            Self::Closed => false,
            Self::Exchange(e) => {
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
        match self {
            Self::Connect(_) | Self::ConnectShared | Self::Closed => false,
            Self::Exchange(e) => e.is_user(),
        }
    }
}

/// How requests reach an upstream's targets. Cheap to clone; clones share their connections.
#[derive(Clone)]
pub struct Transport(Arc<Shared>);

struct Shared {
    protocol: UpstreamProtocol,
    connect: Connector,
    /// TLS for HTTP/1.1, with ALPN `http/1.1`.
    tls: Arc<rustls::ClientConfig>,
    idle_timeout: Duration,
    http2: Option<Http2Pool>,
    targets: Mutex<HashMap<String, Arc<TargetConns>>>,
    /// The idle reaper runs (started with the first HTTP/1.1 connection).
    reaping: AtomicBool,
}

/// How a connection is made: TCP within `timeouts.connect`, then TLS for `https://` targets.
struct Connector {
    timeout: Duration,
    /// Refuse addresses in internal ranges ([`bridgehead_config::netguard`]): the SSRF guard of
    /// webhook endpoints.
    public_only: bool,
    /// The SNI override (`tls.server_name`).
    server_name: Option<ServerName<'static>>,
}

/// The connections to one target.
pub struct TargetConns {
    /// Idle HTTP/1.1 connections per worker ([`bridgehead_http::worker`]), the most recently
    /// used last: a connection is driven by the reactor of the worker that opened it, so it goes
    /// back to that worker's list and is taken from there.
    idle: Box<[Mutex<Vec<Idle>>]>,
    idle_timeout_ms: u64,
    /// HTTP/2 connections per worker, for the same reason: a connection's task runs on the
    /// runtime that opened it, and its streams wake that runtime.
    h2: Box<[H2Conns]>,
}

struct Idle {
    conn: Box<Http1Conn>,
    since_ms: u64,
}

/// The HTTP/2 connections to one target.
#[derive(Default)]
struct H2Conns {
    conns: Mutex<Vec<Conn>>,
    /// One connect at a time per target.
    connecting: tokio::sync::Mutex<()>,
    /// With `auto`: the target picked HTTP/1.1 in ALPN.
    http1_only: AtomicBool,
    /// When the last connection attempt failed: requests that waited for it fail at once
    /// rather than each spending a connect timeout on a target that is down.
    failed_at: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TargetConns {
    /// The most recently used idle connection younger than `pool_idle`; older ones are
    /// dropped (closed).
    fn checkout(&self) -> Option<Box<Http1Conn>> {
        let mut idle = lock(self.own());
        let i = idle.pop()?;
        if clock_ms().saturating_sub(i.since_ms) >= self.idle_timeout_ms {
            // Everything below is older still.
            idle.clear();
            return None;
        }
        Some(i.conn)
    }

    /// Closes idle connections past `pool_idle`, and those the target closed (driving each
    /// once, from the reaper's task, notices that).
    fn reap(&self, cx: &mut std::task::Context<'_>) {
        let now = clock_ms();
        // Under the lock: a poll of an idle connection is one read that would block, so the
        // lock is held for microseconds per connection, once a period; taking the list out
        // instead would send every request of that moment to a fresh connect.
        for list in &self.idle {
            lock(list).retain_mut(|i| {
                now.saturating_sub(i.since_ms) < self.idle_timeout_ms && i.conn.poll_conn(cx).is_pending()
            });
        }
    }

    fn idle_count(&self) -> usize {
        self.idle.iter().map(|list| lock(list).len()).sum()
    }

    /// The calling worker's idle list.
    fn own(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[bridgehead_http::worker::current(self.idle.len())]
    }

    /// The calling worker's HTTP/2 connections.
    fn own_h2(&self) -> &H2Conns {
        &self.h2[bridgehead_http::worker::current(self.h2.len())]
    }
}

impl std::fmt::Debug for TargetConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConns").field("idle", &self.idle_count()).finish_non_exhaustive()
    }
}

impl Release for TargetConns {
    fn release(&self, conn: Box<Http1Conn>) {
        let mut idle = lock(self.own());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle { conn, since_ms: clock_ms() });
    }
}

impl Transport {
    pub fn new(
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: rustls::ClientConfig,
        server_name: Option<&str>,
        http2: Option<Http2Pool>,
        public_only: bool,
    ) -> Self {
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self(Arc::new(Shared {
            protocol,
            connect: Connector::new(connect_timeout, server_name, public_only),
            tls: Arc::new(tls),
            idle_timeout,
            http2,
            targets: Mutex::new(HashMap::new()),
            reaping: AtomicBool::new(false),
        }))
    }

    /// The connections to the target at `url` (shared by every generation using this
    /// transport).
    pub fn conns(&self, url: &str) -> Arc<TargetConns> {
        lock(&self.0.targets)
            .entry(url.to_owned())
            .or_insert_with(|| {
                Arc::new(TargetConns {
                    idle: (0..bridgehead_http::worker::slots()).map(|_| Mutex::new(Vec::new())).collect(),
                    idle_timeout_ms: self.0.idle_timeout.as_millis() as u64,
                    h2: (0..bridgehead_http::worker::slots()).map(|_| H2Conns::default()).collect(),
                })
            })
            .clone()
    }

    /// Idle HTTP/1.1 connections to the target at `url` (for tests and the admin view).
    pub fn idle_connections(&self, url: &str) -> usize {
        lock(&self.0.targets).get(url).map_or(0, |t| t.idle_count())
    }

    /// Exchanges one request with `target`. The request's URI is its path and query (an
    /// absolute URI is reduced to them); its `Host` header (if any) is the authority the
    /// upstream should see.
    pub async fn request(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, TransportError> {
        let s = &*self.0;
        let http2 = match (&s.http2, s.protocol) {
            (Some(pool), UpstreamProtocol::H2c | UpstreamProtocol::H2) => Some(pool),
            (Some(pool), UpstreamProtocol::Auto) if target.scheme == Scheme::HTTPS => Some(pool),
            _ => None,
        };
        if let Some(pool) = http2
            && let Some(lease) =
                pool.lease(target.conns.own_h2(), target, s.protocol == UpstreamProtocol::Auto).await?
        {
            return lease.send(target, req).await;
        }
        self.http1(target, req).await
    }

    async fn http1(
        &self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, TransportError> {
        let conns = &target.conns;
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let pq = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
        }
        *req.version_mut() = http::Version::HTTP_11;
        // HTTP/1.1 requires Host (RFC 9112 §3.2); the proxy always sets it, a health check not.
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, target.host.clone());
        }
        // An upgrade takes its connection for good: a fresh one, never one from the pool (no
        // keep-alive race to lose).
        if req.headers().contains_key(header::UPGRADE) {
            let conn = Box::pin(self.connect_http1(target)).await?;
            return Box::pin(upgrade_exchange(conn, req)).await;
        }
        let streaming = req.body().is_stream();
        loop {
            let (conn, reused) = match conns.checkout() {
                Some(mut conn) => {
                    if !self.ready(&mut conn).await {
                        continue;
                    }
                    (conn, true)
                }
                None => (Box::pin(self.connect_http1(target)).await?, false),
            };
            let result = if streaming {
                Box::pin(driven_exchange(conn, req, conns.clone()))
                    .await
                    .map(|res| res.map(UpstreamBody::new))
            } else {
                exchange(conn, req).await.map(|(res, conn)| {
                    let pool: Arc<dyn Release> = conns.clone();
                    res.map(|b| UpstreamBody::new(b).with_http1(Http1Lease { conn, pool }))
                })
            };
            match result {
                Ok(res) => return Ok(res),
                // Nothing was written: the connection closed meanwhile. The next one takes it;
                // on a fresh connection, nothing reached the target.
                Err((e, Some(r))) => {
                    if !reused {
                        return Err(TransportError::Connect(Box::new(e)));
                    }
                    req = r;
                }
                Err((e, None)) => return Err(e),
            }
        }
    }

    /// Whether an idle connection can take a request: driven until it says so (at once,
    /// normally), or found closed, or not within the connect timeout (its previous exchange is
    /// still finishing).
    async fn ready(&self, conn: &mut Http1Conn) -> bool {
        let mut wait = pin!(poll_fn(|cx| conn.poll_reusable(cx)));
        // The first poll answers almost always; only a wait needs a timer.
        match poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await {
            Poll::Ready(ready) => ready,
            Poll::Pending => tokio::time::timeout(self.0.connect.timeout, wait).await.unwrap_or(false),
        }
    }

    /// Opens an HTTP/1.1 connection to `target`.
    async fn connect_http1(&self, target: &Target) -> Result<Box<Http1Conn>, TransportError> {
        self.start_reaper();
        let c = &self.0.connect;
        let tcp = c.tcp(target).await?;
        if target.scheme != Scheme::HTTPS {
            return http1_handshake(Box::pin(tcp)).await;
        }
        http1_handshake(Box::pin(c.tls(&self.0.tls, target, tcp).await?)).await
    }

    /// Starts the task that closes idle HTTP/1.1 connections past `pool_idle` (once; it ends
    /// when the transport is dropped).
    fn start_reaper(&self) {
        if self.0.reaping.swap(true, Relaxed) {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(&self.0);
        let period = (self.0.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                let targets: Vec<Arc<TargetConns>> = lock(&shared.targets).values().cloned().collect();
                poll_fn(|cx| {
                    for t in &targets {
                        t.reap(cx);
                    }
                    Poll::Ready(())
                })
                .await;
            }
        });
    }
}

async fn http1_handshake(
    io: std::pin::Pin<Box<dyn bridgehead_http::upstream_body::Stream>>,
) -> Result<Box<Http1Conn>, TransportError> {
    let (send, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| TransportError::Connect(e.into()))?;
    Ok(Box::new(Http1Conn::new(send, conn)))
}

/// Sends `req` on `conn`, driving the connection from this task until the response head
/// arrives; the connection comes back with the answer. On failure, the request comes back if
/// nothing of it was written.
async fn exchange(
    mut conn: Box<Http1Conn>,
    req: Request<RequestBody>,
) -> Result<(Response<hyper::body::Incoming>, Box<Http1Conn>), (TransportError, Option<Request<RequestBody>>)>
{
    let mut sent = pin!(conn.send.try_send_request(req));
    let answer = poll_fn(|cx| {
        if let Poll::Ready(r) = sent.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        match conn.poll_conn(cx) {
            Poll::Pending => Poll::Pending,
            // Over: the answer may have come with the end (a 101), else it never will.
            Poll::Ready(()) => Poll::Ready(match sent.as_mut().poll(cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            }),
        }
    })
    .await;
    match answer {
        Some(Ok(res)) => Ok((res, conn)),
        Some(Err(e)) => Err(unsent(e)),
        None => {
            // Dropping the connection fails the request it holds (hyper's "dispatch gone", which
            // is not the client's doing), and hands it back if none of it was written.
            drop(conn);
            let unwritten = match poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx))).await {
                Poll::Ready(Err(mut e)) => e.take_message(),
                _ => None,
            };
            Err((TransportError::Closed, unwritten))
        }
    }
}

/// Sends a request whose body streams from the client. Its connection gets a task of its own
/// for the exchange, so the body keeps flowing whether or not the response is being read (an
/// upstream may answer while it reads); the task gives the connection back once it is done both
/// ways, or drops it.
async fn driven_exchange(
    mut conn: Box<Http1Conn>,
    req: Request<RequestBody>,
    pool: Arc<TargetConns>,
) -> Result<Response<hyper::body::Incoming>, (TransportError, Option<Request<RequestBody>>)> {
    let sent = conn.send.try_send_request(req);
    tokio::spawn(async move {
        if poll_fn(|cx| conn.poll_reusable(cx)).await {
            pool.release(conn);
        }
    });
    sent.await.map_err(unsent)
}

/// A failed send as the transport reports it: the error, and the request if none of it was
/// written.
fn unsent(
    mut e: hyper::client::conn::TrySendError<Request<RequestBody>>,
) -> (TransportError, Option<Request<RequestBody>>) {
    let req = e.take_message();
    (TransportError::Exchange(e.into_error()), req)
}

/// Sends a request that offers a protocol upgrade: its connection goes to a task that can
/// complete the upgrade (hyper hands the I/O to the upgraded protocol from there) and is never
/// reused.
async fn upgrade_exchange(
    conn: Box<Http1Conn>,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, TransportError> {
    let Http1Conn { mut send, conn, .. } = *conn;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection closed");
        }
    });
    Ok(send.send_request(req).await?.map(UpstreamBody::new))
}

/// The target's host as DNS and SNI want it: an IPv6 literal without its brackets.
fn bare_host(target: &Target) -> &str {
    target.authority.host().trim_start_matches('[').trim_end_matches(']')
}

/// The addresses of `addrs` outside every internal range; an error naming the refused ones when
/// none is left.
fn public_addresses(
    host: &str,
    addrs: Vec<std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, TransportError> {
    let (public, refused): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| bridgehead_config::netguard::internal_range(a.ip()).is_none());
    if public.is_empty() && !refused.is_empty() {
        let listed: Vec<String> = refused
            .iter()
            .map(|a| {
                format!(
                    "{} ({})",
                    a.ip(),
                    bridgehead_config::netguard::internal_range(a.ip()).unwrap_or_default()
                )
            })
            .collect();
        return Err(TransportError::Connect(
            format!(
                "{host} resolves only to refused addresses: {}; the endpoint needs allow_private_network: true to reach them",
                listed.join(", ")
            )
            .into(),
        ));
    }
    Ok(public)
}

impl Connector {
    fn new(timeout: Duration, server_name: Option<&str>, public_only: bool) -> Self {
        Self {
            timeout,
            public_only,
            server_name: server_name.and_then(|n| ServerName::try_from(n.to_owned()).ok()),
        }
    }

    /// TCP to the target's host and port, DNS included, within the connect timeout: each
    /// address the name resolves to gets an equal share of what is left, so one that does not
    /// answer (a blackholed AAAA) leaves time for the next. `TCP_NODELAY`, and keep-alive probes
    /// after 60 s idle.
    async fn tcp(&self, target: &Target) -> Result<TcpStream, TransportError> {
        let host = bare_host(target);
        let port =
            target.authority.port_u16().unwrap_or(if target.scheme == Scheme::HTTPS { 443 } else { 80 });
        let deadline = Instant::now() + self.timeout;
        let addrs: Vec<std::net::SocketAddr> =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| TransportError::Connect(format!("resolving {host} timed out").into()))?
                .map_err(|e| TransportError::Connect(format!("resolving {host}: {e}").into()))?
                .collect();
        // The guard judges the addresses DNS gave, and the connection goes to one it passed: a
        // name that resolves elsewhere the next time is judged again on that connect.
        let addrs = if self.public_only { public_addresses(host, addrs)? } else { addrs };
        let mut last: BoxError = format!("{host} resolved to no address").into();
        let mut tcp = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = format!("{addr}: {e}").into(),
                Err(_) => last = format!("{addr}: timed out").into(),
            }
        }
        let tcp = tcp.ok_or(TransportError::Connect(last))?;
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        Ok(tcp)
    }

    /// TLS over `tcp` with `config`, within the connect timeout; SNI is `tls.server_name` or the
    /// target's host.
    async fn tls(
        &self,
        config: &Arc<rustls::ClientConfig>,
        target: &Target,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let connect_error = |e: BoxError| TransportError::Connect(e);
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                ServerName::try_from(bare_host(target).to_owned()).map_err(|e| connect_error(e.into()))?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| connect_error("the TLS handshake timed out".into()))?
            .map_err(|e| connect_error(e.into()))
    }
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
        parts.scheme = Some(target.scheme.clone());
        parts.authority = Some(authority);
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        *req.version_mut() = http::Version::HTTP_2;
        let res = self.send.send_request(req).await?;
        Ok(res.map(|b| UpstreamBody::new(b).with_slot(self.slot)))
    }
}

/// HTTP/2 connections to the targets of one upstream.
pub struct Http2Pool {
    settings: Http2Settings,
    /// With ALPN `h2` (and `http/1.1` for `auto`); `None` for h2c.
    tls: Option<Arc<rustls::ClientConfig>>,
    connect: Connector,
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
        Self { settings, tls, connect: Connector::new(connect_timeout, server_name, false) }
    }

    /// A connection with room for one more stream; `None` when an `auto` target speaks only
    /// HTTP/1.1.
    async fn lease(&self, t: &H2Conns, target: &Target, auto: bool) -> Result<Option<Lease>, TransportError> {
        if t.http1_only.load(Relaxed) {
            return Ok(None);
        }
        if let Some(lease) = self.pick(t, false) {
            return Ok(Some(lease));
        }
        let waited_from = Instant::now();
        let _connecting = t.connecting.lock().await;
        // Another request may have connected, learned the target speaks HTTP/1.1, or failed to
        // connect while this one waited: use what it found instead of trying again.
        if t.http1_only.load(Relaxed) {
            return Ok(None);
        }
        if let Some(lease) = self.pick(t, false) {
            return Ok(Some(lease));
        }
        if lock(&t.failed_at).is_some_and(|at| at >= waited_from) {
            // Share a full connection if there is one; else the target is unreachable now.
            return self.pick(t, true).map(Some).ok_or(TransportError::ConnectShared);
        }
        if lock(&t.conns).len() >= self.settings.max_connections as usize
            && let Some(lease) = self.pick(t, true)
        {
            return Ok(Some(lease));
        }
        let send = match Box::pin(self.connect(target, auto)).await {
            Ok(Some(send)) => send,
            Ok(None) => {
                t.http1_only.store(true, Relaxed);
                tracing::info!(target = %target.url, "target chose HTTP/1.1 in ALPN");
                return Ok(None);
            }
            Err(e) => {
                *lock(&t.failed_at) = Some(Instant::now());
                return Err(e);
            }
        };
        let conn = Conn { send, streams: Arc::new(AtomicUsize::new(0)) };
        let lease = Lease::of(&conn);
        lock(&t.conns).push(conn);
        Ok(Some(lease))
    }

    /// The least busy open connection; under the stream cap unless `any`.
    fn pick(&self, t: &H2Conns, any: bool) -> Option<Lease> {
        let mut conns = lock(&t.conns);
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
        let tcp = self.connect.tcp(target).await?;
        let Some(tls) = &self.tls else { return self.handshake(tcp).await.map(Some) };
        let stream = self.connect.tls(tls, target, tcp).await?;
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => self.handshake(stream).await.map(Some),
            _ if auto => Ok(None),
            _ => Err(TransportError::Connect("the target did not agree to HTTP/2 (`h2`) in ALPN".into())),
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

#[cfg(test)]
mod tests;
