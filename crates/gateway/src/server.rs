//! The data-plane listener: accepts connections (bounded by `server.limits.max_connections`),
//! terminates TLS, serves HTTP/1.1 and HTTP/2 with hyper, and drains on shutdown.
//!
//! Connection-level limits (header read timeout, idle timeout, header buffer size) are read
//! from the config generation current when the connection is accepted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{self, ConnInfo};
use crate::runtime::Shared;
use bridgehead_http::metrics::WorkerLabels;

/// The data-plane workers. One listener is served on the caller's runtime. Several are served
/// one per thread, each thread with its own single-threaded runtime: a connection, the requests
/// on it and the upstream connections they open stay on one thread and one reactor, with no
/// work stealing and no cross-thread wake-up, and the kernel (`SO_REUSEPORT`) spreads incoming
/// connections over the listeners. `server.limits.max_connections` is shared by all workers.
pub struct DataPlane {
    /// The accept loop on the caller's runtime (one listener).
    local: Option<tokio::task::JoinHandle<GracefulShutdown>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// One message per worker thread: it drained after the stop, or it ended early (failed).
    ended: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// Worker threads heard from on `ended`.
    ended_count: usize,
    /// Lets drained worker threads end: their runtimes drive connections the other workers'
    /// requests may still use (HTTP/2 upstream connections are shared), so none ends before all
    /// have drained.
    release: watch::Sender<bool>,
}

impl DataPlane {
    /// Starts serving `listeners` (non-blocking) until `stop` flips to true.
    pub fn start(
        mut listeners: Vec<std::net::TcpListener>,
        shared: &Arc<Shared>,
        tls: &Arc<ArcSwapOption<TlsAcceptor>>,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let max_conns = shared.runtime.load().loaded.config.server.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max_conns));
        let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = watch::channel(false);
        let mut plane = Self { local: None, threads: Vec::new(), ended, ended_count: 0, release };
        if listeners.len() == 1 {
            let listener = TcpListener::from_std(listeners.remove(0))?;
            let task = serve(listener, shared.clone(), tls.clone(), stop.clone(), permits);
            plane.local = Some(tokio::spawn(task));
            return Ok(plane);
        }
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i + 1;
            let (shared, tls, stop, permits) = (shared.clone(), tls.clone(), stop.clone(), permits.clone());
            let mut release = release_rx.clone();
            let mut report = Report(Some(ended_tx.clone()));
            let thread = std::thread::Builder::new().name(format!("bridgehead-w{id}")).spawn(move || {
                bridgehead_http::worker::enter(id);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        return tracing::error!(worker = id, error = %e, "cannot start a worker's runtime");
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!(worker = id, error = %e, "cannot serve a listener"),
                    };
                    let graceful = serve(listener, shared.clone(), tls, stop, permits).await;
                    drain(graceful, &shared).await;
                    report.send();
                    let _ = release.wait_for(|r| *r).await;
                });
            })?;
            plane.threads.push(thread);
        }
        Ok(plane)
    }

    /// Completes when a worker thread ends before the stop (it failed); never with one
    /// listener.
    pub async fn failed(&mut self) {
        if self.threads.is_empty() || self.ended.recv().await.is_none() {
            return std::future::pending().await;
        }
        self.ended_count += 1;
    }

    /// After the stop: waits for every worker to drain (each bounded by
    /// `server.shutdown_grace`), then ends them.
    pub async fn drain(mut self, shared: &Shared) {
        if let Some(local) = self.local.take()
            && let Ok(graceful) = local.await
        {
            drain(graceful, shared).await;
        }
        while self.ended_count < self.threads.len() && self.ended.recv().await.is_some() {
            self.ended_count += 1;
        }
        let _ = self.release.send(true);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Tells the main thread a worker is done, once: explicitly when it drained, else when it is
/// dropped (the worker failed or panicked).
struct Report(Option<tokio::sync::mpsc::UnboundedSender<()>>);

impl Report {
    fn send(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.send();
    }
}

/// Lets in-flight requests finish for up to `server.shutdown_grace`.
async fn drain(graceful: GracefulShutdown, shared: &Shared) {
    let grace = shared.runtime.load().loaded.config.server.shutdown_grace.get();
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// Runs the accept loop until `shutdown` flips to true; returns the handle that drains the
/// open connections. `permits` bounds the open connections.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls_swap: Arc<ArcSwapOption<TlsAcceptor>>,
    mut shutdown: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let worker = u16::try_from(bridgehead_http::worker::current(usize::MAX).max(1)).unwrap_or(u16::MAX);
    let accepted = shared.metrics.connections.get_or_create(&WorkerLabels { worker }).clone();
    loop {
        // Accept, then wait for a permit: a worker waiting for a connection holds no permit, so
        // the limit is shared by the connections actually open on every worker (the kernel
        // picks the worker, whether or not it has a permit). At the limit each worker holds at
        // most one accepted connection until another one closes.
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        accepted.inc();
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let rt = shared.runtime.load();
        let limits = rt.loaded.config.server.limits.clone();
        drop(rt);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_buf = (limits.max_header_bytes.get() as usize).saturating_mul(2).max(16 * 1024);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout.get())
            .max_buf_size(header_buf)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(header_buf).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(None);
        let tls = tls_swap.load_full();
        let shared = shared.clone();
        let idle = limits.idle_timeout.get();
        match &tls {
            None => {
                let info = Arc::new(ConnInfo::new(client, false, None));
                let service = service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req));
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(IdleIo::new(stream, idle)), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = limits.header_timeout.get();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let client_cert = client_identity(stream.get_ref().1);
                    let info = Arc::new(ConnInfo::new(client, true, client_cert));
                    let service = service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req));
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(IdleIo::new(stream, idle)), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful
}

/// The identity in the client certificate the handshake verified, if one was presented.
fn client_identity(conn: &rustls::ServerConnection) -> Option<Arc<bridgehead_auth::cert::ClientIdentity>> {
    let leaf = conn.peer_certificates()?.first()?;
    match bridgehead_auth::cert::ClientIdentity::from_der(leaf.as_ref()) {
        Ok(id) => Some(Arc::new(id)),
        Err(e) => {
            tracing::warn!(error = %e, "a verified client certificate could not be parsed; treating the client as anonymous");
            None
        }
    }
}

/// An IO wrapper that fails reads with `TimedOut` once no bytes have moved in either
/// direction for `idle`. Progress only records a timestamp; the timer is re-armed lazily when
/// it fires, so the hot path does not touch the timer wheel.
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration) -> Self {
        Self { inner, idle, last: Instant::now(), deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn progressed(&mut self, n: usize) {
        if n > 0 {
            self.last = Instant::now();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                this.progressed(n);
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                match this.deadline.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        let due = this.last + this.idle;
                        if due <= Instant::now() {
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")));
                        }
                        this.deadline.as_mut().reset(due);
                    }
                }
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.progressed(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.progressed(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
