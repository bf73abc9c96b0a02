//! Hot reload: SIGHUP, a change of the config file, or `POST /admin/reload` load the file
//! again, validate it as a whole, compile it, and swap it in atomically. A config that fails
//! is refused, logged with its errors, counted as `bridgehead_config_reloads_total{result="error"}`,
//! and the running one keeps serving.
//!
//! Listener addresses, `server.workers` and `state.url` are fixed at start: a reload that changes
//! them applies everything else and logs that those keys need a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use notify::Watcher;
use tokio_rustls::TlsAcceptor;

use crate::runtime::{Runtime, Shared};
use bridgehead_http::metrics::ResultLabels;

/// Reloads the config file into the running gateway.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    path: Option<PathBuf>,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload from")]
    NoFile,
    /// The file does not load or validate (the diagnostics, one per line).
    #[error("{0}")]
    Invalid(String),
    /// The config is valid but a part could not be built from it.
    #[error(transparent)]
    Build(#[from] bridgehead_config::BuildError),
}

impl Reloader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        tls: Arc<ArcSwapOption<TlsAcceptor>>,
        path: Option<PathBuf>,
    ) -> Self {
        Self { inner: Arc::new(Inner { shared, tls, path, lock: tokio::sync::Mutex::new(()) }) }
    }

    /// Reloads now; returns the new generation number.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _guard = self.inner.lock.lock().await;
        let result = self.try_reload().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.inner.shared.metrics.config_reloads.get_or_create(&ResultLabels { result: label }).inc();
        match &result {
            Ok(generation) => tracing::info!(generation, "config reloaded"),
            Err(e) => {
                tracing::error!(errors = %e, "config reload refused; the running config keeps serving");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<u64, ReloadError> {
        let path = self.inner.path.as_deref().ok_or(ReloadError::NoFile)?;
        let loaded = bridgehead_config::load(path).map_err(|d| ReloadError::Invalid(d.to_string()))?;
        let tls = crate::tls::acceptor(&loaded)?;
        let shared = &self.inner.shared;
        let old = shared.runtime.load_full();
        warn_restart_only(&old.loaded.config, &loaded.config);
        let oauth = match (&loaded.config.oauth_server, shared.oauth.load_full(), shared.store.as_ref()) {
            (Some(cfg), Some(running), _) => {
                running.reconfigure(cfg);
                Some(running)
            }
            (Some(cfg), None, Some(store)) => Some(bridgehead_oauth::OAuthServer::start(cfg, store).await?),
            _ => None,
        };
        let runtime = Runtime::build(
            loaded,
            Some(&old),
            &shared.metrics,
            shared.store.as_ref(),
            oauth.as_ref(),
            shared.redis.as_ref(),
        )?
        .traced(shared.exporter.as_ref());
        shared.oauth.store(oauth);
        runtime.auth.ready().await;
        runtime.refresh_endpoints(shared.store.as_ref()).await;
        runtime.grpc_ready(&shared.metrics, shared.store.as_ref()).await?;
        let generation = runtime.generation;
        if tls.is_some() {
            self.inner.tls.store(tls.map(Arc::new));
        }
        crate::certs::export(&runtime.loaded, &shared.metrics);
        shared.runtime.store(Arc::new(runtime));
        Ok(generation)
    }

    /// Reloads on every SIGHUP until the process ends; `hup` is registered by the caller, as
    /// early as it can (SIGHUP's default action ends the process).
    pub fn watch_sighup(&self, mut hup: tokio::signal::unix::Signal) {
        let this = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = this.reload().await;
            }
        });
    }

    /// Reloads when the config file changes (editors that write a new file and rename it are
    /// handled by watching the directory). Bursts of events are coalesced, and a save that did
    /// not change the file's bytes does not reload.
    /// `loaded_bytes` is the file as it was when the running config was loaded.
    pub fn watch_file(
        &self,
        loaded_bytes: Option<Vec<u8>>,
    ) -> notify::Result<Option<notify::RecommendedWatcher>> {
        let Some(path) = self.inner.path.clone() else {
            return Ok(None);
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let name = path.file_name().map(std::borrow::ToOwned::to_owned);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && ev.paths.iter().any(|p| p.file_name() == name.as_deref())
            {
                let _ = tx.try_send(());
            }
        })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let this = self.clone();
        tokio::spawn(async move {
            // A change between loading and watching raised no event: compare once up front.
            let mut last = loaded_bytes;
            let mut check = true;
            loop {
                if check {
                    let now = std::fs::read(&path).ok();
                    if now.is_some() && now != last {
                        last = now;
                        let _ = this.reload().await;
                    }
                }
                if rx.recv().await.is_none() {
                    break;
                }
                // Let the writer finish: wait until events stop for 100ms.
                while tokio::time::timeout(Duration::from_millis(100), rx.recv())
                    .await
                    .is_ok_and(|e| e.is_some())
                {}
                check = true;
            }
        });
        Ok(Some(watcher))
    }
}

/// Whether the trace exporter's settings changed (the sampler's do not count: they reload).
fn export_changed(old: &bridgehead_config::Config, new: &bridgehead_config::Config) -> bool {
    let export = |c: &bridgehead_config::Config| {
        c.telemetry.traces.clone().map(|mut t| {
            t.sample_ratio = 0.0;
            t.parent_based = false;
            t
        })
    };
    export(old) != export(new)
}

fn warn_restart_only(old: &bridgehead_config::Config, new: &bridgehead_config::Config) {
    let fixed = [
        ("server.listen", old.server.listen != new.server.listen),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("server.workers", old.server.workers != new.server.workers),
        ("server.access_log.output", old.server.access_log.output != new.server.access_log.output),
        ("server.tls", old.server.tls.is_some() != new.server.tls.is_some()),
        ("state.url", old.state.url != new.state.url),
        ("state.redis", old.state.redis != new.state.redis),
        (
            "server.limits.max_connections",
            old.server.limits.max_connections != new.server.limits.max_connections,
        ),
        ("server.limits.max_buffered", old.server.limits.max_buffered != new.server.limits.max_buffered),
        ("telemetry.traces (all but sample_ratio and parent_based)", export_changed(old, new)),
    ];
    for (key, changed) in fixed {
        if changed {
            tracing::warn!(key, "changed in the config file; it takes effect only after a restart");
        }
    }
}
