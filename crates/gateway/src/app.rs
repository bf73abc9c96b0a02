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

/// Already-bound listeners.
pub struct Listeners {
    pub data: std::net::TcpListener,
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses in the config.
    pub fn bind(config: &bridgehead_config::Config) -> std::io::Result<Self> {
        let bind = |addr: SocketAddr, key: &str| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}")))
        };
        Ok(Self {
            data: bind(config.server.listen, "server.listen")?,
            admin: bind(config.admin.listen, "admin.listen")?,
        })
    }

    /// Binds both on 127.0.0.1 with ports chosen by the OS.
    pub fn ephemeral() -> std::io::Result<Self> {
        Ok(Self {
            data: std::net::TcpListener::bind("127.0.0.1:0")?,
            admin: std::net::TcpListener::bind("127.0.0.1:0")?,
        })
    }
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
    data: TcpListener,
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
        let runtime = Runtime::build(loaded, None, &metrics, Some(&store), oauth.as_ref(), redis.as_ref())?;
        runtime.auth.ready().await;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            access_log,
            store: Some(store),
            oauth: ArcSwapOption::new(oauth),
            redis,
            buffers: bridgehead_http::body::BufferBudget::new(max_buffered),
        });
        let tls = Arc::new(ArcSwapOption::new(tls.map(Arc::new)));
        let reloader = Reloader::new(shared.clone(), tls.clone(), opts.config_path.clone());
        let to_tokio = |l: std::net::TcpListener| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        Ok(Self {
            data: to_tokio(listeners.data)?,
            admin: to_tokio(listeners.admin)?,
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
        self.data.local_addr().expect("bound listener has an address")
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
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat(&node_id).await {
                        tracing::warn!(error = %e, "state store heartbeat failed");
                    }
                    // Expired idempotency records, once a minute.
                    if n.is_multiple_of(6) {
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
        let data_task = tokio::spawn(crate::server::serve(data, shared.clone(), tls, stop_rx));
        tracing::info!(generation = shared.runtime.load().generation, "gateway ready");

        shutdown.await;
        let grace = shared.runtime.load().loaded.config.server.shutdown_grace.get();
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
        if let Ok(graceful) = data_task.await
            && tokio::time::timeout(grace, graceful.shutdown()).await.is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        // The access log's last lines (it hands buffers to its writer every 100 ms).
        shared.access_log.flush();
        if let Some(h) = heartbeat {
            h.abort();
        }
        if let Some(store) = &shared.store {
            store.close().await;
        }
        Ok(())
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
