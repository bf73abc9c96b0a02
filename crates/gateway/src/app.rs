//! The composition root: wires the state store, the config runtime, the data and admin
//! listeners, reload and shutdown. Listeners are bound by the caller, so tests start the whole
//! gateway on `127.0.0.1:0`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bridgehead_config::{BuildError, LoadedConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::access_log::{AccessLog, Sink};
use crate::reload::Reloader;
use crate::runtime::{Runtime, Shared};
use bridgehead_http::metrics::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is valid but a part could not be built from it.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Redis (`state.redis`) is unusable.
    #[error("state.redis: {0}")]
    Redis(bridgehead_state::StateError),
    #[error("state store: {0}")]
    State(#[from] bridgehead_state::StateError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Already-bound listeners. More than one data listener means one data-plane worker per
/// listener, each on its own single-threaded runtime and thread (see [`App::run`]).
pub struct Listeners {
    /// One per worker: `SO_REUSEPORT` sockets on the same address when there are several.
    pub data: Vec<std::net::TcpListener>,
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses in the config: [`workers`] data listeners.
    pub fn bind(config: &bridgehead_config::Config) -> std::io::Result<Self> {
        let named = |key: &'static str, addr: SocketAddr| {
            move |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}"))
            }
        };
        let listen = config.server.listen;
        Ok(Self {
            data: bind_data(listen, workers(config)).map_err(named("server.listen", listen))?,
            admin: std::net::TcpListener::bind(config.admin.listen)
                .map_err(named("admin.listen", config.admin.listen))?,
        })
    }

    /// Binds on 127.0.0.1 with ports chosen by the OS: `workers` data listeners (at least one)
    /// and the admin listener.
    pub fn ephemeral(workers: usize) -> std::io::Result<Self> {
        Ok(Self {
            data: bind_data(SocketAddr::from(([127, 0, 0, 1], 0)), workers)?,
            admin: std::net::TcpListener::bind("127.0.0.1:0")?,
        })
    }
}

/// The data-plane workers `config` asks for: `server.workers`, or one per CPU this process may
/// run on (its affinity mask and cgroup CPU quota, as `std::thread::available_parallelism`
/// reads them, not the machine's core count).
pub fn workers(config: &bridgehead_config::Config) -> usize {
    config
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
        .max(1)
}

/// `n` listeners on `addr`: one plain socket, or `n` with `SO_REUSEPORT`, among which the
/// kernel spreads incoming connections. With port 0 the first socket's port is shared.
///
/// `SO_REUSEPORT` would also let another process of the same user join the group unnoticed (a
/// second gateway started by mistake would take half of the connections), so the address is
/// first bound without it, which fails when anything listens there already.
fn bind_data(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    if n <= 1 {
        return Ok(vec![std::net::TcpListener::bind(addr)?]);
    }
    let socket = || {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        Ok::<_, std::io::Error>(s)
    };
    if addr.port() != 0 {
        socket()?.bind(&addr.into())?;
    }
    let mut addr = addr;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = socket()?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        if let Some(bound) = s.local_addr()?.as_socket() {
            addr = bound;
        }
        out.push(s.into());
    }
    Ok(out)
}

/// How the app is run.
pub struct AppOptions {
    /// The config file, for reloads; `None` disables reload.
    pub config_path: Option<PathBuf>,
    pub access_log: Sink,
    /// Reload when the config file changes.
    pub watch_config: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self { config_path: None, access_log: Sink::Stdout, watch_config: false, sighup: false }
    }
}

/// A built gateway, ready to run.
pub struct App {
    shared: Arc<Shared>,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    reloader: Reloader,
    /// Non-blocking, registered with a runtime only where they are served (one per worker).
    data: Vec<std::net::TcpListener>,
    admin: TcpListener,
    opts: AppOptions,
    node_id: String,
    /// The config file's bytes when it was loaded, to notice changes made before watching starts.
    loaded_bytes: Option<Vec<u8>>,
    /// SIGUSR1, registered when the app is built (with `sighup`), so a logrotate signal during a
    /// slow start does not end the process.
    usr1: Option<tokio::signal::unix::Signal>,
    /// SIGHUP, the same way.
    hup: Option<tokio::signal::unix::Signal>,
}

/// Checks what validation cannot see without touching the outside: TLS files (listener and
/// upstreams) and authenticator key files. Used by `serve` before binding and by `config check`.
pub fn preflight(loaded: &LoadedConfig) -> Result<(), BuildError> {
    crate::tls::acceptor(loaded)?;
    if let Some(file) = loaded.config.server.access_log.file() {
        let path = loaded.resolve_path(file);
        let key = "server.access_log.output";
        if path.is_dir() {
            return Err(BuildError::new(key, format!("{} is a directory", path.display())));
        }
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) if !dir.is_dir() => {
                return Err(BuildError::new(key, format!("directory {} does not exist", dir.display())));
            }
            _ => {}
        }
    }
    for (name, u) in &loaded.config.upstreams {
        if u.tls.is_some() {
            bridgehead_upstream::tls::client_config(&format!("upstreams.{name}"), u.tls.as_ref(), loaded)?;
        }
    }
    bridgehead_webhooks::inbound::Receiver::build_all(loaded)?;
    bridgehead_webhooks::outbound::Dispatcher::build(loaded, None)?;
    bridgehead_grpc::service::preflight(loaded)?;
    bridgehead_soap::service::preflight(loaded)?;
    crate::auth::preflight(loaded)
}

impl App {
    /// Opens the state store (running migrations), compiles the config and takes the listeners.
    pub async fn build(
        loaded: LoadedConfig,
        listeners: Listeners,
        opts: AppOptions,
    ) -> Result<Self, AppError> {
        let loaded_bytes = opts.config_path.as_ref().and_then(|p| std::fs::read(p).ok());
        // Before anything slow (migrations, key fetches): from here on SIGHUP and SIGUSR1 are
        // caught (their default action would end the process).
        let catch = |kind, what: &str| {
            opts.sighup
                .then(|| tokio::signal::unix::signal(kind))
                .and_then(|s| s.map_err(|e| tracing::warn!(error = %e, "cannot catch {what}")).ok())
        };
        let hup = catch(tokio::signal::unix::SignalKind::hangup(), "SIGHUP; reload with POST /admin/reload");
        let usr1 = catch(
            tokio::signal::unix::SignalKind::user_defined1(),
            "SIGUSR1; the access log file will not be reopened",
        );
        let tls = crate::tls::acceptor(&loaded)?;
        // Before anything keeps per-worker state (the upstream connection pools).
        bridgehead_http::worker::set_workers(listeners.data.len());
        let store = bridgehead_state::Store::open(&loaded.config.state.url).await?;
        let node_id = format!("{}-{}", hostname(), std::process::id());
        store.register_node(&node_id, env!("CARGO_PKG_VERSION")).await?;
        let metrics = Metrics::default();
        let oauth = match &loaded.config.oauth_server {
            Some(cfg) => Some(bridgehead_oauth::OAuthServer::start(cfg, &store).await?),
            None => None,
        };
        let redis = match &loaded.config.state.redis {
            Some(url) => {
                Some(crate::policy::SharedRedis::start(url.expose()).await.map_err(AppError::Redis)?)
            }
            None => None,
        };
        let max_buffered = loaded.config.server.limits.max_buffered.get();
        // `server.access_log.output` names a file: it replaces stdout (never a sink a test chose).
        let sink = match (&opts.access_log, loaded.config.server.access_log.file()) {
            (Sink::Stdout, Some(file)) => Sink::File(loaded.resolve_path(file)),
            (sink, _) => sink.clone(),
        };
        let access_log = AccessLog::new(sink)
            .map_err(|e| AppError::Build(BuildError::new("server.access_log.output", e)))?;
        let exporter = match &loaded.config.telemetry.traces {
            Some(t) => Some(bridgehead_telemetry::Exporter::start(t, &loaded, &metrics)?),
            None => None,
        };
        let runtime = Runtime::build(loaded, None, &metrics, Some(&store), oauth.as_ref(), redis.as_ref())?
            .traced(exporter.as_ref());
        runtime.auth.ready().await;
        runtime.refresh_endpoints(Some(&store)).await;
        runtime.grpc_ready(&metrics, Some(&store)).await?;
        crate::certs::export(&runtime.loaded, &metrics);
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            access_log,
            store: Some(store),
            oauth: ArcSwapOption::new(oauth),
            redis,
            buffers: bridgehead_http::body::BufferBudget::new(max_buffered),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
            endpoints_changed: Arc::new(tokio::sync::Notify::new()),
            exporter,
        });
        let tls = Arc::new(ArcSwapOption::new(tls.map(Arc::new)));
        let reloader = Reloader::new(shared.clone(), tls.clone(), opts.config_path.clone());
        for l in &listeners.data {
            l.set_nonblocking(true)?;
        }
        listeners.admin.set_nonblocking(true)?;
        Ok(Self {
            data: listeners.data,
            admin: TcpListener::from_std(listeners.admin)?,
            shared,
            tls,
            reloader,
            opts,
            node_id,
            loaded_bytes,
            usr1,
            hup,
        })
    }

    pub fn data_addr(&self) -> SocketAddr {
        self.data[0].local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }

    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish for up to `server.shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
        let App { shared, tls, reloader, data, admin, opts, node_id, loaded_bytes, usr1, hup } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(hup) = hup {
            reloader.watch_sighup(hup);
        }
        if let Some(usr1) = usr1 {
            watch_sigusr1(shared.clone(), usr1);
        }
        let _watcher = if opts.watch_config {
            reloader.watch_file(loaded_bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP instead");
                None
            })
        } else {
            None
        };
        let heartbeat = shared.store.clone().map(|store| {
            let node_id = node_id.clone();
            let shared_for_purge = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat(&node_id).await {
                        tracing::warn!(error = %e, "state store heartbeat failed");
                    }
                    // Expired idempotency records and webhook messages, once a minute.
                    if n.is_multiple_of(6) {
                        purge_webhooks(&store, &shared_for_purge).await;
                        // Up to ten batches a minute: a backlog drains without one long
                        // transaction holding the database.
                        for _ in 0..10 {
                            match store.idempotency_purge(bridgehead_http::clock::unix_ms()).await {
                                Ok(purged) if purged < bridgehead_state::IDEMPOTENCY_PURGE_BATCH => break,
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "purging idempotency records failed");
                                    break;
                                }
                            }
                        }
                    }
                    n += 1;
                }
            })
        });
        let admin_router = crate::admin::router(shared.clone(), reloader.clone());
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(async move {
            let _ = axum::serve(admin, admin_router)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let mut data_plane = crate::server::DataPlane::start(data, &shared, &tls, &stop_rx)?;
        // After everything that can fail to start: nothing to stop on an early return.
        let webhook_worker = shared.store.clone().map(|store| {
            let env: Arc<dyn bridgehead_webhooks::deliver::Env> = Arc::new(WebhookEnv(shared.clone()));
            tokio::spawn(bridgehead_webhooks::deliver::run(
                env,
                store,
                node_id.clone(),
                shared.webhook_wake.clone(),
                stop_rx.clone(),
            ))
        });
        let endpoint_refresher = tokio::spawn(refresh_endpoints(shared.clone()));
        let schema_refresher = tokio::spawn(refresh_grpc_schemas(shared.clone()));
        tracing::info!(generation = shared.runtime.load().generation, "gateway ready");

        let failed = tokio::select! {
            () = shutdown => false,
            () = data_plane.failed() => {
                tracing::error!("a data-plane worker ended; shutting down");
                true
            }
        };
        let grace = shared.runtime.load().loaded.config.server.shutdown_grace.get();
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        data_plane.drain(&shared).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        // The delivery worker stops claiming at once and lets its attempts in flight finish
        // (each within 20 s); one cut short is sent again once its lease runs out.
        if let Some(mut w) = webhook_worker
            && tokio::time::timeout(Duration::from_secs(5), &mut w).await.is_err()
        {
            w.abort();
        }
        // The access log's last lines (it hands buffers to its writer every 100 ms).
        shared.access_log.flush();
        // The spans of the last requests, within 5 s.
        if let Some(e) = &shared.exporter
            && !e.flush(Duration::from_secs(5)).await
        {
            tracing::warn!("the trace exporter did not send every span within 5 s; the rest are lost");
        }
        if let Some(h) = heartbeat {
            h.abort();
        }
        endpoint_refresher.abort();
        schema_refresher.abort();
        if let Some(store) = &shared.store {
            store.close().await;
        }
        if failed {
            return Err(AppError::Io(std::io::Error::other("a data-plane worker ended unexpectedly")));
        }
        Ok(())
    }
}

/// What the webhook delivery worker reads from the running config.
struct WebhookEnv(Arc<Shared>);

impl bridgehead_webhooks::deliver::Env for WebhookEnv {
    fn metrics(&self) -> &bridgehead_http::metrics::Metrics {
        &self.0.metrics
    }

    fn tracer(&self) -> Option<bridgehead_http::trace::Tracer> {
        self.0.runtime.load().tracer.clone()
    }

    fn destinations(&self) -> Vec<String> {
        let rt = self.0.runtime.load();
        let mut all: Vec<String> = rt.receivers.iter().map(|r| r.destination.clone()).collect();
        // Until the endpoints' state was read once, none is known to be enabled.
        if let Some(d) = rt.dispatcher.as_ref().filter(|d| d.loaded()) {
            // A disabled endpoint's deliveries wait; so do those of an endpoint whose breaker is
            // open (no attempt is spent on it until it may be probed).
            all.extend(
                d.endpoints()
                    .iter()
                    .filter(|e| e.disabled.is_none() && e.upstream.accepting())
                    .map(|e| e.destination()),
            );
        }
        all
    }

    fn route(&self, destination: &str) -> Option<bridgehead_webhooks::deliver::Route> {
        let rt = self.0.runtime.load();
        if let Some(name) = bridgehead_webhooks::outbound::endpoint_of(destination) {
            let d = rt.dispatcher.as_ref()?;
            let e = d.endpoint(name)?;
            return Some(bridgehead_webhooks::deliver::Route {
                name: destination.into(),
                upstream: e.upstream.clone(),
                path: e.path.clone(),
                retry_schedule: d.retry_schedule.clone(),
                drop_headers: Vec::new(),
                timeout: d.timeout,
                endpoint: Some(bridgehead_webhooks::deliver::EndpointRoute {
                    signer: e.signer.clone(),
                    declared: e.declared,
                }),
            });
        }
        let r = rt.receivers.iter().find(|r| r.destination == destination)?;
        Some(bridgehead_webhooks::deliver::Route {
            name: r.name.clone(),
            upstream: rt.upstreams.get(&r.forward.upstream)?.clone(),
            path: r.forward.path.clone(),
            retry_schedule: r.retry_schedule.clone(),
            drop_headers: r.signature_headers().to_vec(),
            timeout: bridgehead_webhooks::deliver::ATTEMPT_TIMEOUT,
            endpoint: None,
        })
    }

    fn endpoints_changed(&self) {
        self.0.endpoints_changed.notify_one();
    }
}

/// Asks each reflected gRPC service's server again when its `refresh` interval has passed; a
/// failure is logged and the schema serving stays.
async fn refresh_grpc_schemas(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rt = shared.runtime.load_full();
        // Each on its own task: a slow server does not hold the others' refreshes up.
        for svc in rt.grpc.values().filter(|s| !s.refreshing() && s.take_due()) {
            let (svc, shared) = (svc.clone(), shared.clone());
            tokio::spawn(async move {
                if let Err(e) = svc.refresh(&shared.metrics, shared.store.as_ref()).await {
                    tracing::warn!(service = %svc.name, error = %e, "gRPC reflection refresh failed; the schema serving stays");
                }
            });
        }
    }
}

/// Reads the webhook endpoints from the store every few seconds, and at once when asked
/// (`Shared::endpoints_changed`), so changes made on another node or by the command arrive.
async fn refresh_endpoints(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(bridgehead_webhooks::outbound::REFRESH) => {}
            () = shared.endpoints_changed.notified() => {}
        }
        let rt = shared.runtime.load_full();
        rt.refresh_endpoints(shared.store.as_ref()).await;
        // Deliveries of an endpoint enabled again (or added) may be waiting.
        shared.webhook_wake.notify_one();
    }
}

/// Webhook messages past their retention (once delivered) and dead letters older than the
/// longest retention of the running config.
async fn purge_webhooks(store: &bridgehead_state::Store, shared: &Shared) {
    let retention = shared
        .runtime
        .load()
        .loaded
        .config
        .webhooks
        .inbound
        .iter()
        .map(|w| w.retention.get())
        .max()
        .unwrap_or(Duration::from_secs(7 * 86_400));
    let now = bridgehead_http::clock::unix_ms();
    let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    for _ in 0..10 {
        match store.webhook_purge(now, cutoff).await {
            Ok(n) if n < bridgehead_state::WEBHOOK_PURGE_BATCH as u64 => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "purging webhook messages failed");
                break;
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Reopens the access log file on every SIGUSR1 (logrotate's `postrotate`).
/// The handler is registered before this returns (SIGUSR1's default action ends the process).
fn watch_sigusr1(shared: Arc<Shared>, mut usr1: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            if shared.access_log.reopen() {
                tracing::info!("SIGUSR1: reopening the access log");
            } else {
                tracing::info!("SIGUSR1 ignored: the access log goes to stdout");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_workers_share_one_port_with_reuseport() {
        let ls = bind_data(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap();
        assert_eq!(ls.len(), 3);
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        // Every socket listens, and the kernel spreads connections over all of them.
        let _clients: Vec<_> =
            (0..64).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let mut total = 0;
        for l in &ls {
            l.set_nonblocking(true).unwrap();
            let n = std::iter::from_fn(|| l.accept().ok()).count();
            assert!(n > 0, "a listener got none of 64 connections");
            total += n;
        }
        assert_eq!(total, 64);
    }

    #[test]
    fn an_address_in_use_is_refused_even_by_another_reuseport_group() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_data(plain.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");

        // A second gateway of the same user must not silently join the first one's group.
        let group = bind_data(SocketAddr::from(([127, 0, 0, 1], 0)), 2).unwrap();
        let err = bind_data(group[0].local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        let err = bind_data(group[0].local_addr().unwrap(), 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn bind_names_the_key_of_the_address_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = bridgehead_config::Config::default();
        config.server.listen = taken.local_addr().unwrap();
        config.server.workers = Some(2);
        let err = Listeners::bind(&config).err().expect("address in use");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on {} (server.listen)", config.server.listen)),
            "{text}"
        );
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
