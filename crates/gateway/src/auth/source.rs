//! Where a JWT authenticator's keys come from, and how they stay fresh.
//!
//! - `public_key_file` and `secret`: read once per config generation.
//! - `jwks_file`: re-read when its modification time or size changes (checked every 2 s).
//! - `jwks_url`: fetched at start, every `refresh`, and at most once per `min_refresh_interval`
//!   when a token names an unknown `kid`. A failed fetch is logged and counted and the last good
//!   set keeps serving; the last good set is also saved in the state database, so a restart in a
//!   network that cannot reach the identity provider still has keys.
//!
//! URL sources are shared by config generations ([`JwksSources`]): a reload that keeps the same
//! URL and settings keeps the fetched keys and does not refetch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use bridgehead_auth::jwt::KeySet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;

use bridgehead_http::metrics::{FetchLabels, Name};

pub use bridgehead_auth::cache::Versioned;

/// The keys an authenticator verifies with.
pub enum KeySource {
    Static(Arc<Versioned>),
    File(Arc<FileSource>),
    Url(Arc<UrlSource>),
    /// The built-in authorization server's keys (`issuer: local`).
    Local(Arc<dyn bridgehead_auth::cache::PublishedKeys>),
}

impl KeySource {
    pub fn fixed(keys: KeySet) -> Self {
        Self::Static(Versioned::new(keys))
    }

    /// The current key set and its generation; `None` while a URL source has never succeeded.
    pub fn current(&self) -> Option<Arc<Versioned>> {
        match self {
            Self::Static(v) => Some(v.clone()),
            Self::File(f) => f.current.load_full(),
            Self::Url(u) => u.keys.load_full(),
            Self::Local(l) => Some(l.current()),
        }
    }

    /// A token named a `kid` the current set lacks: fetch again if the rate limit allows, or wait
    /// for a fetch in flight. Callers re-read [`current`](Self::current) afterwards.
    pub async fn refresh_for_unknown_kid(&self) {
        if let Self::Url(u) = self {
            u.refresh_if_allowed().await;
        }
    }

    /// Why there are no keys (for the 503 detail).
    pub fn unavailable_reason(&self) -> String {
        match self {
            Self::Url(u) => {
                let last = u.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                // The reason itself (addresses, TLS errors) is in the log.
                format!(
                    "no key set has been fetched from the JWKS URL yet{}",
                    if last.is_some() { "; the last attempt failed" } else { "" }
                )
            }
            _ => "no keys are loaded".into(),
        }
    }

    /// Waits for the first fetch of a URL source.
    pub async fn ready(&self) {
        if let Self::Url(u) = self {
            let mut rx = u.first_done.subscribe();
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

/// A JWKS file, re-read on change.
pub struct FileSource {
    path: PathBuf,
    current: ArcSwapOption<Versioned>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    name: Arc<str>,
}

impl FileSource {
    /// Reads the file now (errors name the problem) and starts watching it.
    /// Errors name the key `jwks_file`.
    pub fn start(name: &str, path: PathBuf) -> Result<Arc<Self>, bridgehead_config::BuildError> {
        let keys = read_jwks_file(&path).map_err(|e| bridgehead_config::BuildError::new("jwks_file", e))?;
        let source = Arc::new(Self {
            stamp: Mutex::new(stamp(&path)),
            path,
            current: ArcSwapOption::new(Some(Versioned::new(keys))),
            name: name.into(),
        });
        let weak = Arc::downgrade(&source);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                // File system calls off the async workers.
                let _ = tokio::task::spawn_blocking(move || s.poll()).await;
            }
        });
        Ok(source)
    }

    fn poll(&self) {
        let now = stamp(&self.path);
        let mut last = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now == *last {
            return;
        }
        *last = now;
        match read_jwks_file(&self.path) {
            Ok(keys) => {
                tracing::info!(authenticator = %self.name, keys = keys.len(), "jwks_file reloaded");
                self.current.store(Some(Versioned::new(keys)));
            }
            Err(e) => tracing::error!(
                authenticator = %self.name, error = %e,
                "jwks_file changed but cannot be used; the previous keys keep serving"
            ),
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_jwks_file(path: &std::path::Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (keys, warnings) = KeySet::from_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    for w in warnings {
        tracing::warn!(file = %path.display(), "{w}");
    }
    Ok(keys)
}

/// What makes two URL sources the same.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UrlKey {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub timeout: Duration,
}

/// A JWKS URL, fetched in the background.
pub struct UrlSource {
    key: UrlKey,
    name: Arc<str>,
    client: reqwest::Client,
    keys: ArcSwapOption<Versioned>,
    last_error: Mutex<Option<String>>,
    /// SHA-256 of the last JWKS document loaded.
    last_digest: Mutex<Option<bridgehead_auth::cache::Digest>>,
    /// When the last fetch started; unknown-kid fetches wait `min_refresh` after it.
    last_attempt: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    first_done: tokio::sync::watch::Sender<bool>,
    store: Option<bridgehead_state::Store>,
    fetches: Family<FetchLabels, Counter>,
}

impl UrlSource {
    fn store_key(&self) -> String {
        format!("jwks:{}", self.key.url)
    }

    /// Fetches now. One fetch at a time; a caller that waited for another's fetch does not fetch again.
    async fn fetch(&self) -> bool {
        let started = Instant::now();
        let _guard = self.fetching.lock().await;
        if self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t >= started)
        {
            return false;
        }
        *self.last_attempt.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let result = self.fetch_once().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.fetches
            .get_or_create(&FetchLabels {
                authenticator: Name(self.name.clone()),
                kind: "jwks",
                result: label,
            })
            .inc();
        match result {
            Ok((keys, text)) => {
                // Compared as served, so that new key material under an old kid counts as a change.
                let digest = bridgehead_auth::cache::digest(&text);
                let changed = {
                    let mut last = self.last_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let changed = *last != Some(digest) || self.keys.load().is_none();
                    *last = Some(digest);
                    changed
                };
                if changed {
                    tracing::info!(authenticator = %self.name, keys = keys.len(), kids = ?keys.kids(), "JWKS loaded");
                    self.keys.store(Some(Versioned::new(keys)));
                    if let Some(store) = &self.store
                        && let Err(e) = store.meta_put(&self.store_key(), &text).await
                    {
                        tracing::warn!(authenticator = %self.name, error = %e, "could not save the JWKS in the state database");
                    }
                }
                *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                changed
            }
            Err(e) => {
                tracing::warn!(
                    authenticator = %self.name, url = %self.key.url, error = %e,
                    serving = if self.keys.load().is_some() { "last good key set" } else { "nothing" },
                    "JWKS fetch failed"
                );
                *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                false
            }
        }
    }

    async fn fetch_once(&self) -> Result<(KeySet, String), String> {
        let req =
            self.client.get(&self.key.url).header("accept", "application/jwk-set+json, application/json");
        let res = bridgehead_upstream::fetch::traced(req)
            .send()
            .await
            .map_err(|e| bridgehead_upstream::fetch::describe(&e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("the identity provider answered {status}"));
        }
        let bytes = bridgehead_upstream::fetch::body(res).await.map_err(|e| e.to_string())?;
        let (keys, warnings) = KeySet::from_jwks(&bytes).map_err(|e| e.to_string())?;
        for w in warnings {
            tracing::warn!(authenticator = %self.name, "{w}");
        }
        Ok((keys, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Fetches when `min_refresh` has passed since the last fetch; otherwise waits for a fetch
    /// that is in flight, if any. The caller compares generations to see whether keys changed.
    async fn refresh_if_allowed(&self) {
        let due = self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|t| t.elapsed() >= self.key.min_refresh);
        if due {
            self.fetch().await;
        } else {
            drop(self.fetching.lock().await);
        }
    }

    /// Loads the set saved by an earlier run, used until a fetch succeeds.
    async fn load_saved(&self) {
        let Some(store) = &self.store else { return };
        let Ok(Some(text)) = store.meta_get(&self.store_key()).await else { return };
        if self.keys.load().is_some() {
            return;
        }
        match KeySet::from_jwks(text.as_bytes()) {
            Ok((keys, _)) => {
                tracing::warn!(authenticator = %self.name, keys = keys.len(), "serving the JWKS saved by an earlier run until the identity provider answers");
                self.keys.store(Some(Versioned::new(keys)));
            }
            Err(e) => tracing::warn!(authenticator = %self.name, error = %e, "the saved JWKS is unusable"),
        }
    }
}

/// URL sources shared across config generations.
#[derive(Clone, Default)]
pub struct JwksSources {
    inner: Arc<Mutex<HashMap<UrlKey, Weak<UrlSource>>>>,
}

impl JwksSources {
    /// The running source for `key`, or a new one whose first fetch starts now in the background.
    pub fn get_or_start(
        &self,
        name: &str,
        key: UrlKey,
        store: Option<&bridgehead_state::Store>,
        fetches: &Family<FetchLabels, Counter>,
    ) -> Result<Arc<UrlSource>, bridgehead_config::BuildError> {
        let mut map = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let client = bridgehead_upstream::fetch::client(key.ca.as_deref(), key.timeout)?;
        let source = Arc::new(UrlSource {
            key: key.clone(),
            name: name.into(),
            client,
            keys: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            last_digest: Mutex::new(None),
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            first_done: tokio::sync::watch::Sender::new(false),
            store: store.cloned(),
            fetches: fetches.clone(),
        });
        map.insert(key, Arc::downgrade(&source));
        let weak = Arc::downgrade(&source);
        tokio::spawn(async move {
            // First fetch; then the saved set if it failed; then every `refresh`, retrying
            // failures sooner (every `min_refresh`) while no set is known.
            let Some(s) = weak.upgrade() else { return };
            if !s.fetch().await && s.keys.load().is_none() {
                s.load_saved().await;
            }
            s.first_done.send_replace(true);
            drop(s);
            loop {
                let Some(s) = weak.upgrade() else { break };
                let wait = if s.keys.load().is_none()
                    || s.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
                {
                    s.key.min_refresh.min(s.key.refresh)
                } else {
                    s.key.refresh
                };
                drop(s);
                tokio::time::sleep(wait).await;
                let Some(s) = weak.upgrade() else { break };
                s.fetch().await;
            }
        });
        Ok(source)
    }
}
