//! The API key authenticator: a key from a header or query parameter, hashed with SHA-256 and
//! looked up among the configured digests (and, with `from_state`, the keys made with
//! `bridgehead apikey create`, read again every `refresh`).

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bridgehead_auth::apikey::{ApiKeyEntry, KeyTable, parse_sha256_hex};
use bridgehead_config::ApiKeyAuth;
use http::HeaderName;
use http::request::Parts;
use http::uri::PathAndQuery;

use super::{Identity, Outcome};
use bridgehead_http::codec::percent_decode;
use bridgehead_http::metrics::{FetchLabels, Metrics, Name};

pub struct ApiKeys {
    header: Option<HeaderName>,
    /// The header name as configured, for challenges and details (`HeaderName` is lower case).
    header_display: String,
    query: Option<String>,
    table: Arc<ArcSwap<KeyTable>>,
    /// Becomes true once the keys in the state database have been read (at once without `from_state`).
    loaded: tokio::sync::watch::Receiver<bool>,
}

impl ApiKeys {
    pub fn build(
        name: &str,
        cfg: &ApiKeyAuth,
        store: Option<&bridgehead_state::Store>,
        metrics: &Metrics,
    ) -> Self {
        let (header, header_display) = match (&cfg.header, &cfg.query) {
            (Some(h), _) => (HeaderName::from_bytes(h.as_bytes()).ok(), h.clone()),
            (None, Some(_)) => (None, String::new()),
            (None, None) => (Some(HeaderName::from_static("x-api-key")), "X-API-Key".to_string()),
        };
        let mut configured = KeyTable::default();
        for k in &cfg.keys {
            // Validation has checked the digests.
            if let Ok(d) = parse_sha256_hex(&k.sha256) {
                configured.insert(
                    d,
                    ApiKeyEntry { consumer: k.consumer.clone(), scopes: k.scopes.clone(), id: None },
                );
            }
        }
        let table = Arc::new(ArcSwap::from_pointee(configured.clone()));
        let (loaded_tx, loaded) = tokio::sync::watch::channel(false);
        match store {
            Some(store) if cfg.from_state => spawn_state_refresh(
                name.into(),
                configured,
                store.clone(),
                cfg.refresh.get(),
                &table,
                metrics,
                loaded_tx,
            ),
            _ => {
                loaded_tx.send_replace(true);
            }
        }
        Self { header, header_display, query: cfg.query.clone(), table, loaded }
    }

    /// Waits (at most 5 s) for the first read of the keys kept in the state database.
    pub async fn ready(&self) {
        let mut rx = self.loaded.clone();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx.wait_for(|l| *l)).await;
    }

    /// The presented key, `None` without one, or an error when the request names it twice.
    fn presented<'a>(&self, parts: &'a Parts) -> Result<Option<Cow<'a, str>>, &'static str> {
        if let Some(h) = &self.header {
            let mut values = parts.headers.get_all(h).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err("the request has the API key header more than once");
            }
            if let Some(v) = first.and_then(|v| v.to_str().ok()).map(str::trim)
                && !v.is_empty()
            {
                return Ok(Some(Cow::Borrowed(v)));
            }
        }
        let (Some(q), Some(query)) = (self.query.as_deref(), parts.uri.query()) else {
            return Ok(None);
        };
        let mut found = query.split('&').filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == q).then(|| percent_decode(v))
        });
        let value = found.next();
        if found.next().is_some() {
            return Err("the request has the API key query parameter more than once");
        }
        Ok(value.filter(|v| !v.is_empty()))
    }

    pub fn check(&self, name: &Arc<str>, parts: &Parts) -> Outcome {
        let key = match self.presented(parts) {
            Ok(Some(key)) => key,
            Ok(None) => return Outcome::Absent,
            Err(ambiguous) => return Outcome::Refused { reason: "malformed", detail: ambiguous.into() },
        };
        match self.table.load().lookup(&key) {
            Some(entry) => Outcome::Admitted(Identity::new(
                name.clone(),
                &entry.consumer,
                entry.scopes.clone().into(),
                Arc::new([]),
            )),
            None => Outcome::Refused { reason: "unknown_key", detail: "the API key is not valid".into() },
        }
    }

    /// `header="X-API-Key"` or `query="api_key"`, for the challenge.
    pub fn location(&self) -> String {
        match (&self.header, &self.query) {
            (Some(_), _) => format!("header=\"{}\"", self.header_display),
            (None, Some(q)) => format!("query=\"{q}\""),
            (None, None) => String::new(),
        }
    }

    pub fn describe(&self) -> String {
        match (&self.header, &self.query) {
            (Some(_), Some(q)) => {
                format!("the `{}` header or the `{q}` query parameter", self.header_display)
            }
            (Some(_), None) => format!("the `{}` header", self.header_display),
            (None, Some(q)) => format!("the `{q}` query parameter"),
            (None, None) => "nowhere".into(),
        }
    }

    pub fn strip(&self, parts: &mut Parts) {
        if let Some(h) = &self.header {
            parts.headers.remove(h);
        }
        let Some(q) = self.query.as_deref() else { return };
        let Some(query) = parts.uri.query() else { return };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != q)
            .collect();
        if kept.len() == query.split('&').count() {
            return;
        }
        let pq = if kept.is_empty() {
            parts.uri.path().to_owned()
        } else {
            format!("{}?{}", parts.uri.path(), kept.join("&"))
        };
        // Built from parts of a valid URI, so it parses; if it ever did not, keep the original.
        let Ok(pq) = PathAndQuery::try_from(pq) else { return };
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = Some(pq);
        if let Ok(u) = http::Uri::from_parts(uri) {
            parts.uri = u;
        }
    }
}

/// Keeps the table in step with the state database: configured keys plus the active stored ones.
fn spawn_state_refresh(
    name: Arc<str>,
    configured: KeyTable,
    store: bridgehead_state::Store,
    every: std::time::Duration,
    table: &Arc<ArcSwap<KeyTable>>,
    metrics: &Metrics,
    loaded: tokio::sync::watch::Sender<bool>,
) {
    let weak = Arc::downgrade(table);
    let fetches = metrics.auth_fetches.clone();
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let Some(table) = weak.upgrade() else { break };
            let result = store.api_keys_active(&name).await;
            let label = if result.is_ok() { "success" } else { "error" };
            fetches
                .get_or_create(&FetchLabels {
                    authenticator: Name(name.clone()),
                    kind: "apikeys",
                    result: label,
                })
                .inc();
            match result {
                Ok(records) => {
                    let mut t = configured.clone();
                    for r in records {
                        if let Ok(d) = parse_sha256_hex(&r.sha256) {
                            t.insert(
                                d,
                                ApiKeyEntry { consumer: r.consumer, scopes: r.scopes, id: Some(r.id) },
                            );
                        }
                    }
                    table.store(Arc::new(t));
                    if failing {
                        tracing::info!(authenticator = %name, "API keys readable from the state database again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(authenticator = %name, error = %e, "cannot read API keys from the state database; the last loaded keys keep serving");
                    }
                    failing = true;
                }
            }
            drop(table);
            loaded.send_replace(true);
            tokio::time::sleep(every).await;
        }
    });
}
