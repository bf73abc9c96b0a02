//! The server: an accept loop in a background task, and the handle that owns it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::counts::StatusCounts;
use crate::faults::Faults;
use crate::options::{InvalidOptions, MockOptions};
use crate::record::RecordedRequest;
use crate::service::{self, Shared};

/// A running mock upstream. Dropping it stops it, like [`MockServer::shutdown`] without waiting.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Binds `(opts.bind, opts.port)` and starts serving in a background task.
    ///
    /// Invalid options (see [`MockOptions::validate`]) are an [`io::ErrorKind::InvalidInput`].
    pub async fn start(opts: MockOptions) -> io::Result<MockServer> {
        opts.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind((opts.bind, opts.port)).await?;
        Ok(Self::serve(listener, opts))
    }

    /// Serves on an already-bound listener, in a background task; `opts.bind` and `opts.port`
    /// are ignored.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or if `opts` is invalid (see [`MockOptions::validate`]).
    pub fn serve(listener: TcpListener, opts: MockOptions) -> MockServer {
        if let Err(error) = opts.validate() {
            panic!("invalid MockOptions: {error}");
        }
        let addr = listener.local_addr().expect("a bound listener has a local address");
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(&opts, stopped.clone()));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        MockServer { addr, shared, stop, task }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the recorded requests, oldest first (at most `record_limit`).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.snapshot()
    }

    /// How many requests arrived since start, `/__mock/*` excepted; not capped by
    /// `record_limit` and not reset by [`clear`](Self::clear).
    pub fn request_count(&self) -> u64 {
        self.shared.recorder.total()
    }

    /// How many responses of each status class were sent since start, `/__mock/*` excepted;
    /// not reset by [`clear`](Self::clear).
    pub fn status_counts(&self) -> StatusCounts {
        self.shared.statuses.snapshot()
    }

    /// The faults in force: those of the options, or the last [`set_faults`](Self::set_faults)
    /// or `PUT /__mock/faults`.
    pub fn faults(&self) -> Faults {
        self.shared.faults.load().faults.clone()
    }

    /// Replaces the faults for the requests that arrive from now on, like `PUT /__mock/faults`;
    /// `fail_first` and the `rate_limit` window count afresh. Invalid faults (see
    /// [`Faults::validate`]) change nothing.
    pub fn set_faults(&self, faults: Faults) -> Result<(), InvalidOptions> {
        self.shared.faults.set(faults)
    }

    /// Removes every fault, like `DELETE /__mock/faults`.
    pub fn clear_faults(&self) {
        self.shared.faults.set(Faults::default()).expect("no faults are valid faults");
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.recorder.clear();
    }

    /// Stops accepting, closes open connections and upgraded tunnels, and waits for the
    /// accept task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection; dropping
        // `stop` ends the upgraded tunnels.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Owning the connections here means ending this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(
                        Arc::clone(&builder),
                        Arc::clone(&shared),
                        stream,
                    ));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "mock accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    stream: TcpStream,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| service::handle(Arc::clone(&shared), request));
    if let Err(error) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
        tracing::debug!(%error, "mock connection ended with an error");
    }
}
