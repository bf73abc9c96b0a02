//! Route matching: host, path (prefix, exact or template), method and headers; the most
//! specific route wins.
//!
//! Routes are sorted once, when a config is compiled, from most to least specific
//! ([`bridgehead_config::pattern::specificity`], which validation uses too), so matching is a
//! linear scan that stops at the first hit. The host ranks first: an exact host beats a
//! wildcard host beats no host, whatever the paths. Within a host class: exact path, then path
//! template (more literal segments first), then path prefix (longer first), then no path; then
//! more header conditions; then a method list beats any method. A route whose host, path and
//! headers match but whose methods do not makes the answer 405 (with `Allow`) instead of 404
//! when no other route matches.
//!
//! Invariant: the host and path matched here are canonical ([`bridgehead_config::canonical`]),
//! computed once in the request filter phase; no raw spelling reaches the router.

use std::sync::Arc;

use bridgehead_config::pattern::{
    OAUTH_DOCUMENTS, OAUTH_PREFIX, PathTemplate, has_segment_prefix, specificity,
};
use bridgehead_config::{Route as RouteConfig, RouteMatch};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use prometheus_client::metrics::histogram::Histogram;

use bridgehead_upstream::Upstream;

/// What answers a route's requests.
pub enum Backend {
    /// Forwarded to an upstream (`upstream:` in the config).
    Proxy(Arc<Upstream>),
    /// The built-in authorization server (`oauth_server`): its endpoints and documents.
    OAuth,
    /// A webhook receiver (`webhooks.inbound[]`).
    Webhook(Arc<bridgehead_webhooks::inbound::Receiver>),
    /// The outbound dispatcher's intake (`webhooks.outbound.intake`).
    Intake(Arc<bridgehead_webhooks::outbound::Dispatcher>),
    /// JSON over HTTP transcoded to a gRPC service (`grpc_transcode`).
    Transcode(Arc<bridgehead_grpc::transcode::Transcoder>),
    /// JSON over HTTP to a SOAP service's operations (`soap`).
    Soap(Arc<bridgehead_soap::route::SoapRoute>),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Proxy(_) => "proxy",
            Backend::OAuth => "oauth",
            Backend::Webhook(_) => "webhook",
            Backend::Intake(_) => "webhook_intake",
            Backend::Transcode(_) => "grpc_transcode",
            Backend::Soap(_) => "soap",
        }
    }

    /// Whether a gateway error on this backend is rendered as a gRPC status (trailers-only)
    /// rather than problem+json: for a gRPC call (`content-type: application/grpc…`) on a
    /// proxy route. The authorization server's clients speak OAuth's JSON.
    pub fn renders_grpc(&self, grpc_request: bool) -> bool {
        match self {
            // A transcoding route answers a gRPC call only to refuse it, as gRPC.
            Backend::Proxy(_) | Backend::Transcode(_) => grpc_request,
            Backend::OAuth | Backend::Webhook(_) | Backend::Intake(_) | Backend::Soap(_) => false,
        }
    }
}

/// The name of the outbound webhook intake's route.
pub const INTAKE_ROUTE: &str = "(webhooks:intake)";

/// The name of the built-in authorization server's routes.
pub const OAUTH_ROUTE: &str = "(oauth)";

/// A compiled route.
pub struct Route {
    pub name: Arc<str>,
    pub backend: Backend,
    /// A route the gateway adds itself (the authorization server's), not one of `routes`.
    pub builtin: bool,
    /// The match as configured, for `/admin/routes`.
    pub matched: RouteMatch,
    pub strip_prefix: Option<String>,
    /// Who may call this route; `None` for a public route.
    pub auth: Option<Arc<crate::auth::RouteAuth>>,
    /// This route's `bridgehead_http_request_duration_seconds` series, looked up once.
    pub duration: Histogram,
    pub rate_limit: Option<crate::policy::ratelimit::RouteLimits>,
    pub idempotency: Option<crate::policy::idempotency::IdempotencyPolicy>,
    /// Protocols a client may switch to (`routes[].upgrades`), compared case-insensitively.
    pub upgrades: Vec<String>,
    matcher: Matcher,
}

/// The traffic policies of a route, compiled by the caller.
#[derive(Default)]
pub struct RoutePolicies {
    pub rate_limit: Option<crate::policy::ratelimit::RouteLimits>,
    pub idempotency: Option<crate::policy::idempotency::IdempotencyPolicy>,
}

enum PathMatch {
    Any,
    Prefix(String),
    Template(PathTemplate),
    /// The paths a gRPC service's bindings take (a transcoding route without a path).
    Bindings(Arc<bridgehead_grpc::transcode::Transcoder>),
}

enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

struct Matcher {
    path: PathMatch,
    host: HostMatch,
    methods: Option<Vec<Method>>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// The outcome of matching a request.
pub enum RouteResult<'a> {
    Found(&'a Route),
    /// Path matched but the method did not; the `Allow` value lists what would have.
    MethodNotAllowed(String),
    NotFound,
}

/// All routes of one config, most specific first.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Route {
    /// The upstream of a proxy route, or of a transcoding route's gRPC service.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match &self.backend {
            Backend::Proxy(u) => Some(u),
            Backend::Transcode(t) => Some(&t.service.upstream),
            Backend::Soap(s) => Some(&s.service.upstream),
            Backend::OAuth | Backend::Webhook(_) | Backend::Intake(_) => None,
        }
    }

    /// A route the gateway adds itself, tried before every user route.
    fn builtin(name: &str, matched: RouteMatch, backend: Backend, duration: Histogram) -> Self {
        Route {
            name: name.into(),
            backend,
            builtin: true,
            matcher: Matcher::compile(&matched),
            matched,
            strip_prefix: None,
            auth: None,
            duration,
            rate_limit: None,
            idempotency: None,
            upgrades: Vec::new(),
        }
    }
}

impl Router {
    /// Compiles routes; `upstream` looks up the compiled upstream by name (validation has
    /// already checked that it exists). With `oauth`, the built-in authorization server's
    /// routes come first: `/oauth2/…` and its documents on every host (validation refuses a
    /// user route that overlaps them).
    pub fn new(
        routes: &[RouteConfig],
        oauth: bool,
        upstream: impl Fn(&RouteConfig) -> Backend,
        duration: impl Fn(&Arc<str>) -> Histogram,
        auth: impl Fn(&RouteConfig) -> Option<Arc<crate::auth::RouteAuth>>,
        policies: impl Fn(&RouteConfig, &Arc<str>) -> RoutePolicies,
    ) -> Self {
        let mut compiled: Vec<(_, usize, Route)> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut matcher = Matcher::compile(&r.matcher);
                let name: Arc<str> = r.name.as_str().into();
                let RoutePolicies { rate_limit, idempotency } = policies(r, &name);
                let backend = upstream(r);
                let mut rank = specificity(&r.matcher);
                if let Backend::Transcode(t) = &backend {
                    // Without a path condition the route takes exactly its bindings' paths.
                    if matches!(matcher.path, PathMatch::Any) {
                        matcher.path = PathMatch::Bindings(t.clone());
                    }
                    rank = rank.bindings();
                }
                (
                    rank,
                    i,
                    Route {
                        duration: duration(&name),
                        name,
                        backend,
                        builtin: false,
                        matched: r.matcher.clone(),
                        strip_prefix: r.strip_prefix.clone(),
                        auth: auth(r),
                        rate_limit,
                        idempotency,
                        upgrades: r.upgrades.clone(),
                        matcher,
                    },
                )
            })
            .collect();
        // Most specific first; ties keep config order.
        compiled.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut all = Vec::with_capacity(compiled.len() + 3);
        if oauth {
            let name: Arc<str> = OAUTH_ROUTE.into();
            let prefix = RouteMatch { path_prefix: Some(OAUTH_PREFIX.into()), ..RouteMatch::default() };
            all.push(Route::builtin(OAUTH_ROUTE, prefix, Backend::OAuth, duration(&name)));
            for doc in OAUTH_DOCUMENTS {
                let exact = RouteMatch { path: Some(doc.into()), ..RouteMatch::default() };
                all.push(Route::builtin(OAUTH_ROUTE, exact, Backend::OAuth, duration(&name)));
            }
        }
        all.extend(compiled.into_iter().map(|(_, _, r)| r));
        Self { routes: all }
    }

    /// Adds a built-in route per webhook receiver, tried before every user route: `POST` on
    /// its exact path, on every host (other methods get 405). Its name is `(webhook:<name>)`.
    #[must_use]
    pub fn with_webhooks(
        mut self,
        receivers: &[Arc<bridgehead_webhooks::inbound::Receiver>],
        duration: impl Fn(&Arc<str>) -> Histogram,
    ) -> Self {
        let builtins = receivers.iter().map(|r| {
            let name = format!("(webhook:{})", r.name);
            let exact = RouteMatch {
                path: Some(r.path.clone()),
                methods: Some(vec!["POST".into()]),
                ..RouteMatch::default()
            };
            let arc: Arc<str> = name.as_str().into();
            Route::builtin(&name, exact, Backend::Webhook(r.clone()), duration(&arc))
        });
        let mut all: Vec<Route> = builtins.collect();
        all.append(&mut self.routes);
        self.routes = all;
        self
    }

    /// Adds the built-in route of the outbound dispatcher's intake, tried before every user
    /// route: `POST` on its exact path, on every host, behind `auth`. Its name is
    /// `(webhooks:intake)`.
    #[must_use]
    pub fn with_intake(
        mut self,
        dispatcher: Option<&Arc<bridgehead_webhooks::outbound::Dispatcher>>,
        auth: Option<Arc<crate::auth::RouteAuth>>,
        duration: impl Fn(&Arc<str>) -> Histogram,
    ) -> Self {
        let Some(d) = dispatcher else { return self };
        let name: Arc<str> = INTAKE_ROUTE.into();
        let exact = RouteMatch {
            path: Some(d.intake.clone()),
            methods: Some(vec!["POST".into()]),
            ..RouteMatch::default()
        };
        let mut route = Route::builtin(INTAKE_ROUTE, exact, Backend::Intake(d.clone()), duration(&name));
        route.auth = auth;
        self.routes.insert(0, route);
        self
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Finds the route for a request by its canonical host (lower case, no port, no trailing
    /// dot) and canonical path.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> RouteResult<'_> {
        let mut allow: Vec<&Method> = Vec::new();
        // A gRPC call is never transcoded: it goes on to a later route that proxies gRPC
        // (`grpc_service`), and to no other (a client's content type must not move a path to a
        // less protected route); without one, the transcoding route answers it (UNIMPLEMENTED).
        let mut held: Option<&Route> = None;
        for route in &self.routes {
            let m = &route.matcher;
            if !(m.host_matches(host) && m.path_matches(path) && m.headers_match(headers)) {
                continue;
            }
            if held.is_some() && route.matched.grpc_service.is_none() {
                continue;
            }
            if matches!(route.backend, Backend::Transcode(_))
                && bridgehead_upstream::classify::is_grpc(headers)
            {
                held.get_or_insert(route);
                continue;
            }
            match &m.methods {
                Some(methods) if !methods.contains(method) => {
                    for x in methods {
                        if !allow.contains(&x) {
                            allow.push(x);
                        }
                    }
                }
                _ => return RouteResult::Found(route),
            }
        }
        if let Some(route) = held {
            RouteResult::Found(route)
        } else if allow.is_empty() {
            RouteResult::NotFound
        } else {
            RouteResult::MethodNotAllowed(allow.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))
        }
    }
}

impl Matcher {
    fn compile(m: &RouteMatch) -> Self {
        let path = match (&m.path, &m.path_prefix) {
            (Some(p), _) => PathTemplate::parse(p).map(PathMatch::Template).unwrap_or(PathMatch::Any),
            (None, Some(prefix)) => PathMatch::Prefix(prefix.clone()),
            (None, None) => PathMatch::Any,
        };
        let host = match &m.host {
            None => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(h.to_ascii_lowercase()),
            },
        };
        let methods = m
            .methods
            .as_ref()
            .map(|ms| ms.iter().filter_map(|s| Method::from_bytes(s.as_bytes()).ok()).collect());
        let headers = m
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
                let value = if v == "*" { None } else { Some(HeaderValue::from_str(v).ok()?) };
                Some((name, value))
            })
            .collect();
        Self { path, host, methods, headers }
    }

    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(h), Some(host)) => h == host,
            (HostMatch::Suffix(s), Some(host)) => host.len() > s.len() && host.ends_with(s.as_str()),
            _ => false,
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(p) => has_segment_prefix(path, p),
            PathMatch::Template(t) => t.matches(path),
            PathMatch::Bindings(t) => t.takes(path),
        }
    }

    fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, want)| match want {
            None => headers.contains_key(name),
            Some(v) => headers.get_all(name).iter().any(|h| h == v),
        })
    }
}

/// Applies `strip_prefix` to a path: `/api` on `/api/orders` gives `/orders`, on `/api` gives `/`.
pub fn strip(path: &str, prefix: &str) -> String {
    match path.strip_prefix(prefix) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests;
