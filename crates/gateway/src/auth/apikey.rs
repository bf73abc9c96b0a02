//! The API key authenticator: a key from a header or query parameter, hashed with SHA-256 and
//! looked up among the configured digests (and, with `from_state`, the keys made with
//! `bridgehead apikey create`, read again every `refresh`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use bridgehead_auth::apikey::{ApiKeyEntry, KeyTable, parse_sha256_hex};
use bridgehead_config::ApiKeyAuth;
use http::HeaderName;
use http::request::Parts;
use http::uri::PathAndQuery;

use super::{Identity, Outcome};
use crate::metrics::{FetchLabels, Metrics, Name};

pub struct ApiKeys {
    header: Option<HeaderName>,
    /// The header name as configured, for challenges and details (`HeaderName` is lower case).
    header_display: String,
    query: Option<String>,
    table: Arc<ArcSwap<KeyTable>>,
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
        if cfg.from_state
            && let Some(store) = store
        {
            spawn_state_refresh(name.into(), configured, store.clone(), cfg.refresh.get(), &table, metrics);
        }
        Self { header, header_display, query: cfg.query.clone(), table }
    }

    fn presented<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        if let Some(h) = &self.header
            && let Some(v) = parts.headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim)
            && !v.is_empty()
        {
            return Some(v);
        }
        let q = self.query.as_deref()?;
        parts.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == q && !v.is_empty()).then_some(v)
        })
    }

    pub fn check(&self, name: &Arc<str>, parts: &Parts) -> Outcome {
        let Some(key) = self.presented(parts) else {
            return Outcome::Absent;
        };
        match self.table.load().lookup(key) {
            Some(entry) => Outcome::Admitted(Identity {
                authenticator: name.clone(),
                consumer: entry.consumer.as_str().into(),
                scopes: entry.scopes.clone().into(),
                headers: Arc::new([]),
            }),
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
        let kept: Vec<&str> =
            query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != q).collect();
        if kept.len() == query.split('&').count() {
            return;
        }
        let pq = if kept.is_empty() {
            parts.uri.path().to_owned()
        } else {
            format!("{}?{}", parts.uri.path(), kept.join("&"))
        };
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = PathAndQuery::try_from(pq).ok();
        parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
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
            tokio::time::sleep(every).await;
        }
    });
}
