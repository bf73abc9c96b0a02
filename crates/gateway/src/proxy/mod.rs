//! The request lifecycle of the data plane, in named phases:
//!
//! ```text
//! request_filter ─▶ route ─▶ authenticate ─▶ upstream_peer ─▶ upstream_request_filter ─▶ send ─▶ response_filter ─▶ logging
//!  limits, request  most       route's auth,    pick a healthy     strip prefix, hop-by-hop    pooled   hop-by-hop, 101     on body end:
//!  id, canonical    specific   scopes, consumer target by weight   (upgrades by allow-list),   client   only to an allowed  metrics + access log
//!  host and path                                                   X-Forwarded-*                        upgrade, Via
//! ```
//!
//! Invariant: from `request_filter` on, the request's URI holds the canonical path
//! ([`bridgehead_config::canonical`]): routing, authentication, policies, the access log and
//! the upstream see one spelling, so they cannot disagree on which resource is meant.
//!
//! Any phase may fail with a [`GatewayError`]; [`handle`] renders it once as problem+json.
//! Bodies stream in both directions; they are read whole only where a policy needs it (a retry
//! resends the body, an idempotency key fingerprints it and stores the response), within that
//! policy's size limit and `server.limits.max_buffered`.

pub mod body;
pub mod headers;

use std::borrow::Cow;
use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::histogram::Histogram;

use bridgehead_config::canonical::{canonical_host, normalize_path, strip_segments, without_parameters};
use bridgehead_config::pattern::has_segment_prefix;
use bytes::Bytes;

use self::body::{Charge, Collect, OnFinish, RequestBody, RequestStats, ResponseBody, collect};
use self::headers::X_REQUEST_ID;
use crate::access_log::Record;
use crate::metrics::{
    self, HttpLabels, MethodLabel, Name, RouteLabels, RouteResultLabels, UpstreamLabels,
    UpstreamResultLabels, outcome,
};
use crate::policy::RequestFacts;
use crate::policy::idempotency::{Begin, IDEMPOTENCY_KEY, fingerprint};
use crate::policy::retry::{Failure, RetryPolicy};
use crate::problem::GatewayError;
use crate::router::{RouteResult, strip};
use crate::runtime::{Runtime, Shared};
use crate::upstream::InFlight;
use crate::upstream::NoTarget;

/// The route label of requests the built-in authorization server answers.
pub const OAUTH_ROUTE: &str = "(oauth)";

/// What the data plane knows about a client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    /// The client certificate the TLS handshake verified against `server.tls.client_ca`.
    pub client_cert: Option<Arc<bridgehead_auth::cert::ClientIdentity>>,
}

/// Serves one request. Never fails: errors become problem responses.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let rt = shared.runtime.load_full();
    let request_id = headers::request_id(req.headers());
    let access_log = rt.loaded.config.server.access_log.enabled;
    let filtered = request_filter(&rt, &mut req);
    let mut log = Logging {
        start: Instant::now(),
        request_id: request_id.clone(),
        client: conn.client,
        version: req.version(),
        method: req.method().clone(),
        // Only the access log reads the path (canonical once the filter passed): no copy when
        // it is off.
        path: if access_log { req.uri().path().to_owned() } else { String::new() },
        route: None,
        consumer: None,
        duration: None,
        upstream: None,
        target: None,
        status: 0,
        stats: None,
        in_flight: None,
        held: body::Held::default(),
        access_log,
        shared: shared.clone(),
    };
    // The built-in authorization server answers its own paths before routing.
    // The path test comes first: most requests never touch the server's slot.
    if filtered.is_ok()
        && crate::oauth::is_oauth_path(req.uri().path())
        && let Some(oauth) = shared.oauth.load_full()
    {
        log.route = Some(Arc::from(OAUTH_ROUTE));
        let mut res = oauth.handle(req, conn.client.ip()).await.map(ResponseBody::full);
        res.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        log.status = res.status().as_u16();
        let (parts, body) = res.into_parts();
        return Ok(Response::from_parts(parts, body.on_finish(Box::new(log))));
    }
    let mut extra = http::HeaderMap::new();
    let result = match filtered {
        Ok(target) => proxy(&rt, &conn, req, target, &request_id, &mut log, &mut extra).await,
        Err(e) => Err(e),
    };
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            let id = request_id.to_str().unwrap_or_default();
            if e.status().is_server_error() {
                tracing::warn!(request_id = id, error = %e, "request failed");
            }
            e.to_response(id).map(ResponseBody::full)
        }
    };
    res.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    for (name, value) in extra {
        if let Some(name) = name {
            res.headers_mut().insert(name, value);
        }
    }
    log.status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    Ok(Response::from_parts(parts, body.on_finish(Box::new(log))))
}

/// Where a request is addressed, in canonical form.
struct RequestTarget {
    /// Lower case, no port, no trailing dot; `None` for an HTTP/1.0 request without `Host`.
    host: Option<String>,
    /// The canonical host with the port as sent: forwarded as `Host` and `X-Forwarded-Host`.
    authority: Option<Authority>,
    /// The path routes are matched against when it differs from the canonical path: without
    /// `;` segment parameters (`/secure;x/y` is routed as `/secure/y`, as a servlet container
    /// maps it).
    route_path: Option<String>,
}

/// request_filter: limits, then one canonical host and path. The request's URI is rewritten to
/// the canonical path, so routing, authentication, policies, the access log and the upstream
/// all see the same spelling.
fn request_filter(rt: &Runtime, req: &mut Request<Incoming>) -> Result<RequestTarget, GatewayError> {
    let server = &rt.loaded.config.server;
    let limits = &server.limits;
    let size = headers::header_bytes(req.headers());
    if size as u64 > limits.max_header_bytes.get() {
        return Err(GatewayError::HeadersTooLarge { size, limit: limits.max_header_bytes.get() });
    }
    if req.method() == Method::CONNECT {
        return Err(GatewayError::BadRequest("CONNECT tunnels are not supported".into()));
    }
    let mut target = request_host(req)?;
    let paths = &server.path_normalization;
    match normalize_path(req.uri().path(), paths)? {
        Cow::Borrowed(_) => {}
        Cow::Owned(path) => {
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(
                PathAndQuery::try_from(pq)
                    .map_err(|_| GatewayError::BadRequest("invalid request path".into()))?,
            );
            *req.uri_mut() = Uri::from_parts(parts)
                .map_err(|_| GatewayError::BadRequest("invalid request target".into()))?;
        }
    }
    target.route_path = without_parameters(req.uri().path())?;
    let max_body = limits.max_body.get();
    if let Some(len) = req.body().size_hint().exact()
        && len > max_body
    {
        return Err(GatewayError::BodyTooLarge { limit: max_body });
    }
    Ok(target)
}

/// route: the most specific route for the canonical host and path. A path with `;` parameters
/// is matched both without them (as servlet containers map it) and as sent (as most other
/// servers read it). When the two pick different routes, the one that authenticates wins, so
/// neither reading reaches a protected resource through a public route; two routes that both
/// authenticate make the path ambiguous (400). Returns the route, and the parameter-free path
/// when that is what it matched.
fn route<'r, 'p>(
    rt: &'r Runtime,
    req: &Request<Incoming>,
    host: Option<&str>,
    without_parameters: Option<&'p str>,
) -> Result<(&'r crate::router::Route, Option<&'p str>), GatewayError> {
    let find = |path: &str| rt.router.find(host, path, req.method(), req.headers());
    let raw = req.uri().path();
    let refuse = |result: RouteResult<'_>| match result {
        RouteResult::MethodNotAllowed(allow) => {
            GatewayError::MethodNotAllowed { method: req.method().to_string(), path: raw.to_owned(), allow }
        }
        _ => GatewayError::NoRoute { method: req.method().to_string(), path: raw.to_owned() },
    };
    let Some(stripped) = without_parameters else {
        return match find(raw) {
            RouteResult::Found(r) => Ok((r, None)),
            other => Err(refuse(other)),
        };
    };
    match (find(stripped), find(raw)) {
        (RouteResult::Found(a), RouteResult::Found(b)) if !std::ptr::eq(a, b) => {
            match (a.auth.is_some(), b.auth.is_some()) {
                (false, true) => Ok((b, None)),
                (true, true) => Err(GatewayError::BadRequest(format!(
                    "the path matches route `{}` without its `;` parameters and route `{}` with them; send it without parameters",
                    a.name, b.name
                ))),
                _ => Ok((a, Some(stripped))),
            }
        }
        (RouteResult::Found(a), _) => Ok((a, Some(stripped))),
        (_, RouteResult::Found(b)) => Ok((b, None)),
        (other, _) => Err(refuse(other)),
    }
}

async fn proxy(
    rt: &Runtime,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    target: RequestTarget,
    request_id: &HeaderValue,
    log: &mut Logging,
    extra: &mut http::HeaderMap,
) -> Result<Response<ResponseBody>, GatewayError> {
    let RequestTarget { host, authority, route_path } = target;
    let max_body = rt.loaded.config.server.limits.max_body.get();

    // route
    let (route, stripped) = route(rt, &req, host.as_deref(), route_path.as_deref())?;
    let upstream = &route.upstream;
    log.route = Some(route.name.clone());
    log.duration = Some(route.duration.clone());
    log.upstream = Some(upstream.name.clone());

    // authenticate
    // Only protocols the route allows are switched to; any other upgrade (h2c above all) is
    // served as plain HTTP/1.1.
    let upgrade = headers::allowed_upgrade(req.version(), req.headers(), &route.upgrades);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    // Whether a 101 switches to a protocol the client offered and the route allows.
    let switch_allowed = |res: &Response<Incoming>| {
        upgrade.as_ref().is_some_and(|o| headers::upgrade_accepted(o, res.headers()))
    };
    let (mut parts, body) = req.into_parts();
    // Hop-by-hop first, so that `Connection: x-consumer-id` cannot remove what the gateway sets.
    headers::remove_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    crate::auth::strip_identity(&mut parts.headers, rt.auth.protected());
    if let Some(auth) = &route.auth {
        let identity = auth.authenticate(&mut parts, conn, &log.shared.metrics).await?;
        log.consumer = Some(identity.consumer.clone());
    }

    // policies: rate limits, then the idempotency key (a refused request claims no key).
    if let Some(limits) = &route.rate_limit {
        let facts = RequestFacts {
            headers: &parts.headers,
            client: conn.client.ip(),
            consumer: log.consumer.as_deref(),
        };
        *extra = limits.check(&facts).await?;
    }
    let stats = Arc::new(RequestStats::default());
    log.stats = Some(stats.clone());
    let has_idempotency_key = parts.headers.contains_key(&IDEMPOTENCY_KEY);
    let mut claim = None;
    let mut buffered: Option<Bytes> = None;
    let mut body = Some(body);
    // Room taken in `server.limits.max_buffered` for the request body, given back once the
    // tries are over.
    let mut request_held = body::Held::default();
    if let Some(policy) = &route.idempotency
        && policy.applies_to(&parts.method)
        && let Some(key) = policy.key(&parts.headers)?
    {
        let limit = policy.max_request_body.min(max_body);
        let incoming = body.take().expect("body not taken yet");
        let charge = Charge::Now(&log.shared.buffers, &mut request_held);
        let bytes = read_body(incoming, limit, &stats, true, charge).await?;
        let fp = fingerprint(&parts.method, parts.uri.path_and_query().map_or("/", |pq| pq.as_str()), &bytes);
        let result = policy.begin(log.consumer.as_deref(), key, fp).await;
        let label = match &result {
            Ok(Begin::Run(_)) => "started",
            Ok(Begin::Replay(_)) => "replayed",
            Err(GatewayError::IdempotencyInFlight) => "in_flight",
            Err(GatewayError::IdempotencyMismatch) => "mismatch",
            Err(_) => "unavailable",
        };
        log.shared
            .metrics
            .idempotency
            .get_or_create(&RouteResultLabels { route: Name(route.name.clone()), result: label })
            .inc();
        match result? {
            Begin::Run(c) => claim = Some(c),
            Begin::Replay(res) => return Ok(res.map(ResponseBody::full)),
        }
        buffered = Some(bytes);
    }

    // A request is sent again only if it is safe to (idempotent, or carries a key) and its body
    // can be resent: empty, already read, or small enough to read now.
    let retry = upstream
        .retry
        .as_ref()
        .filter(|_| RetryPolicy::request_is_retryable(&parts.method, has_idempotency_key));
    if let Some(r) = retry {
        r.count_request();
    }
    let mut stream = None;
    let plan = match (buffered, body) {
        (Some(b), _) => Some(b),
        (None, Some(incoming)) if incoming.is_end_stream() => Some(Bytes::new()),
        // Room in `server.limits.max_buffered` is taken first; without it the body streams.
        (None, Some(incoming))
            if retry.is_some_and(|r| {
                incoming
                    .size_hint()
                    .exact()
                    .is_some_and(|n| n <= r.max_body && log.shared.buffers.cover(n, &mut request_held))
            }) =>
        {
            Some(read_body(incoming, max_body, &stats, false, Charge::No).await?)
        }
        (None, Some(incoming)) => {
            stream = Some(RequestBody::Stream { inner: incoming, limit: max_body, stats: stats.clone() });
            None
        }
        (None, None) => Some(Bytes::new()),
    };
    let retry = retry.filter(|_| plan.is_some());
    let sticky = upstream.sticky.as_ref().and_then(|k| {
        let facts = RequestFacts {
            headers: &parts.headers,
            client: conn.client.ip(),
            consumer: log.consumer.as_deref(),
        };
        facts.has(k).then(|| facts.key(k).into_owned())
    });

    // upstream_request_filter, the part that is the same for every try.
    headers::add_forwarded(
        &mut parts.headers,
        conn.client.ip(),
        conn.tls,
        authority.as_ref().map(Authority::as_str),
    );
    if let Some(a) = &authority
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    let oauth2 = match &upstream.credentials {
        Some(crate::upstream::credentials::Credentials::OAuth2(tokens)) => Some(tokens),
        _ => None,
    };
    let mut fresh_token_retry = oauth2.is_some() && plan.is_some();
    // The fields of `log` the send loop touches, borrowed apart so closures can share them.
    let (log_target, log_in_flight, shared) = (&mut log.target, &mut log.in_flight, &log.shared);
    let count = |target: &crate::upstream::Target, outcome: &'static str| {
        shared
            .metrics
            .upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: Name(upstream.name.clone()),
                target: Name(target.url.clone()),
                outcome,
            })
            .inc();
    };
    let release = |claim: crate::policy::idempotency::Claim| {
        claim.release();
        shared
            .metrics
            .idempotency
            .get_or_create(&RouteResultLabels { route: Name(route.name.clone()), result: "released" })
            .inc();
    };
    // Every try, as one block: any error leaving it frees the idempotency key below.
    let sent = async {
    let mut attempt = 0u32;
    let mut deadline = None;
    Ok::<_, GatewayError>(loop {
        attempt += 1;
        // upstream_peer: wait for the outbound throttle, then pick a target.
        let throttled = upstream.throttle.acquire().await;
        if !matches!(throttled, Ok(false)) {
            let result = if throttled.is_ok() { "waited" } else { "refused" };
            shared
                .metrics
                .upstream_throttled
                .get_or_create(&UpstreamResultLabels { upstream: Name(upstream.name.clone()), result })
                .inc();
        }
        throttled?;
        // `timeouts.request` covers all tries, from the first send (not the throttle's queue).
        let deadline =
            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + upstream.timeouts.request.get());
        if attempt > 1 && tokio::time::Instant::now() >= deadline {
            // A retry's wait in the queue used up the deadline: no target was tried, so none
            // is blamed.
            return Err(GatewayError::UpstreamTimeout {
                upstream: upstream.name.to_string(),
                timeout: upstream.timeouts.request.to_string(),
                key: "timeouts.request",
            });
        }
        // A retry may go elsewhere: stickiness applies to the first try.
        let target = upstream.pick(sticky.as_deref().filter(|_| attempt == 1)).map_err(|e| match e {
            NoTarget::Unhealthy => GatewayError::NoHealthyTarget { upstream: upstream.name.to_string() },
            NoTarget::CircuitOpen(retry_after) => {
                GatewayError::CircuitOpen { upstream: upstream.name.to_string(), retry_after }
            }
        })?;
        *log_target = Some(target.url.clone());
        *log_in_flight = Some(target.start_request());

        // upstream_request_filter, per try.
        let last = retry.is_none_or(|r| attempt >= r.attempts) && !fresh_token_retry;
        let mut req = Request::new(match (&plan, last) {
            (Some(b), _) if b.is_empty() => RequestBody::Empty,
            (Some(b), _) => RequestBody::Full(Some(b.clone())),
            (None, _) => stream.take().unwrap_or(RequestBody::Empty),
        });
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = upstream_uri(
            &parts.uri,
            route.strip_prefix.as_deref(),
            stripped,
            target.scheme.clone(),
            target.authority.clone(),
        )?;
        *req.headers_mut() = if last { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
        if authority.is_none()
            && !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(target.authority.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        // The upstream's own credential replaces whatever the client sent in that header.
        let mut used = None;
        if let Some(credentials) = &upstream.credentials {
            used = credentials.apply(req.headers_mut()).await.map_err(|e| {
                tracing::warn!(upstream = %upstream.name, error = %e, "no credential for the upstream");
                GatewayError::UpstreamCredentials { upstream: upstream.name.to_string() }
            })?;
        }

        // send
        let now = tokio::time::Instant::now();
        let remaining = deadline.saturating_duration_since(now);
        let (try_timeout, timeout_key) = match retry.and_then(|r| r.per_try_timeout) {
            Some(t) if t < remaining => (t, "retry.per_try_timeout"),
            _ => (remaining, "timeouts.request"),
        };
        if let Some(c) = claim.as_mut() {
            c.sent();
        }
        let result = tokio::time::timeout(try_timeout, upstream.client.request(req)).await;
        let (failure, outcome) = match result {
            Err(_) => {
                count(target, outcome::TIMEOUT);
                upstream.record_outcome(target, true);
                let e = GatewayError::UpstreamTimeout {
                    upstream: upstream.name.to_string(),
                    timeout: match timeout_key {
                        "timeouts.request" => upstream.timeouts.request.to_string(),
                        _ => humantime::format_duration(try_timeout).to_string(),
                    },
                    key: timeout_key,
                };
                (Failure::Timeout, Err(e))
            }
            Ok(Err(e)) => {
                if stats.too_large.load(Relaxed) {
                    return Err(GatewayError::BodyTooLarge { limit: max_body });
                }
                let hyper_err = e.source().and_then(|s| s.downcast_ref::<hyper::Error>());
                if hyper_err.is_some_and(hyper::Error::is_user) {
                    // The client's body failed (it went away or sent garbage): not the upstream's fault.
                    return Err(GatewayError::BadRequest(
                        "the request body ended before it was complete".into(),
                    ));
                }
                let (label, failure, reason) = if e.is_connect() {
                    (outcome::CONNECT_ERROR, Failure::Connect, "could not connect to the target")
                } else {
                    (
                        outcome::ERROR,
                        Failure::Reset,
                        "the connection closed or the response was invalid before a complete response head arrived",
                    )
                };
                count(target, label);
                upstream.record_outcome(target, true);
                tracing::debug!(upstream = %upstream.name, target = %target.url, error = %e, "upstream request failed");
                (failure, Err(GatewayError::UpstreamFailed { upstream: upstream.name.to_string(), reason }))
            }
            Ok(Ok(res)) => {
                // A switch to a protocol nobody asked for is refused below (502): the target's fault.
                let unasked_switch = res.status() == StatusCode::SWITCHING_PROTOCOLS && !switch_allowed(&res);
                let failed = res.status().is_server_error() || unasked_switch;
                if unasked_switch {
                    count(target, outcome::ERROR);
                } else if failed {
                    count(target, outcome::HTTP_5XX);
                } else {
                    target.success.inc();
                }
                upstream.record_outcome(target, failed);
                upstream.throttle.observe(res.status(), res.headers());
                (Failure::Status(res.status()), Ok(res))
            }
        };

        // A token the upstream refuses may have been revoked or expired early: fetch a new
        // one and send again, once.
        if let (Some(tokens), Some(used), Ok(res)) = (oauth2, &used, &outcome)
            && res.status() == StatusCode::UNAUTHORIZED
            && fresh_token_retry
        {
            fresh_token_retry = false;
            tokens.rejected(used);
            if tokens.token().await.is_ok_and(|fresh| fresh != *used) {
                attempt -= 1;
                continue;
            }
        }

        // Retry with backoff (or the upstream's Retry-After) while tries, time and budget last.
        if let Some(r) = retry
            && attempt < r.attempts
            && r.retries_on(failure)
        {
            let wait = match &outcome {
                Ok(res) => r.wait_after(res.headers(), attempt),
                Err(_) => Some(r.backoff(attempt)),
            };
            if let Some(wait) = wait
                && tokio::time::Instant::now() + wait < deadline
            {
                let result = if r.take_retry() { "retried" } else { "budget_exhausted" };
                shared
                    .metrics
                    .upstream_retries
                    .get_or_create(&UpstreamResultLabels { upstream: Name(upstream.name.clone()), result })
                    .inc();
                if result == "retried" {
                    drop(outcome);
                    *log_in_flight = None;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
        }
        break outcome?;
    })
    }
    .await;
    let mut res = match sent {
        Ok(sent) => sent,
        Err(e) => {
            // A gateway error (502, 503, 504) is a 5xx to the client: the key is freed so the
            // client's retry can succeed, as for an upstream 5xx.
            if let Some(c) = claim.take() {
                release(c);
            }
            return Err(e);
        }
    };

    // response_filter
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A tunnel only to a protocol the client asked for and the route allows: a 101 to
        // anything else would carry unrouted, unauthenticated requests to the upstream.
        let Some(client_upgrade) = client_upgrade.filter(|_| switch_allowed(&res)) else {
            tracing::warn!(upstream = %upstream.name, "upstream switched protocols without an allowed upgrade request");
            if let Some(c) = claim.take() {
                release(c);
            }
            return Err(GatewayError::UpstreamFailed {
                upstream: upstream.name.to_string(),
                reason: "it switched protocols (101) although the request asked for no upgrade it may make",
            });
        };
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream))
                    .await;
            }
        });
    } else {
        headers::remove_hop_by_hop(res.headers_mut(), None);
    }
    headers::add_via(res.headers_mut());
    let Some(claim) = claim else { return Ok(res.map(ResponseBody::upstream)) };
    let policy = route.idempotency.as_ref().expect("a claim comes from the route's policy");
    let status = res.status();
    if status == StatusCode::SWITCHING_PROTOCOLS || !policy.stores(status) {
        release(claim);
        return Ok(res.map(ResponseBody::upstream));
    }
    let (parts, body) = res.into_parts();
    drop(request_held);
    // The body is read within another `timeouts.request` (the claim's lease covers it).
    let charge = Charge::Patiently(&log.shared.buffers, &mut log.held);
    let read = tokio::time::timeout(
        upstream.timeouts.request.get(),
        collect(body, policy.max_response_body, charge),
    );
    let Ok(read) = read.await else {
        claim.complete_without_body(parts.status, &parts.headers).await;
        return Err(GatewayError::UpstreamTimeout {
            upstream: upstream.name.to_string(),
            timeout: upstream.timeouts.request.to_string(),
            key: "timeouts.request",
        });
    };
    match read {
        Ok(bytes) => {
            claim.complete(parts.status, &parts.headers, &bytes).await;
            Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
        }
        Err(Collect::TooLarge(head, rest)) => {
            // The upstream acted: the key must not run again. Repeats get the status and
            // headers, with an empty body and a header saying why.
            claim.complete_without_body(parts.status, &parts.headers).await;
            Ok(Response::from_parts(parts, ResponseBody::prefixed(head, rest)))
        }
        Err(Collect::Failed(_)) => {
            claim.complete_without_body(parts.status, &parts.headers).await;
            Err(GatewayError::UpstreamFailed {
                upstream: upstream.name.to_string(),
                reason: "the response body broke off before it was complete",
            })
        }
    }
}

/// Reads a request body whole (at most `limit` bytes), counting it in the request's stats.
async fn read_body(
    incoming: Incoming,
    limit: u64,
    stats: &RequestStats,
    idempotency: bool,
    charge: Charge<'_>,
) -> Result<Bytes, GatewayError> {
    if incoming.is_end_stream() {
        return Ok(Bytes::new());
    }
    match collect(incoming, limit, charge).await {
        Ok(b) => {
            stats.bytes_in.fetch_add(b.len() as u64, Relaxed);
            Ok(b)
        }
        // Within the limit yet refused: `server.limits.max_buffered` is used up.
        Err(Collect::TooLarge(head, _)) if head.len() as u64 <= limit => Err(GatewayError::Busy),
        Err(Collect::TooLarge(..)) if idempotency => Err(GatewayError::IdempotencyBodyTooLarge { limit }),
        Err(Collect::TooLarge(..)) => Err(GatewayError::BodyTooLarge { limit }),
        Err(Collect::Failed(_)) => {
            Err(GatewayError::BadRequest("the request body ended before it was complete".into()))
        }
    }
}

/// The host the request is addressed to, canonical (lower case, no port, no trailing dot), and
/// the authority to forward (the canonical host with the port as sent).
///
/// RFC 9112 §3.2.2: an absolute-form request target wins over the Host header. HTTP/2 carries
/// `:authority` in the URI. An HTTP/1.1 request without Host, with several Host fields or with
/// an invalid one is refused with 400.
fn request_host(req: &Request<Incoming>) -> Result<RequestTarget, GatewayError> {
    let uri = req.uri();
    let (authority, source) = if let Some(authority) = uri.authority() {
        match uri.scheme_str() {
            None | Some("http") | Some("https") => {}
            Some(other) => {
                return Err(GatewayError::BadRequest(format!(
                    "request target scheme `{other}` is not supported; use http or https"
                )));
            }
        }
        if authority.as_str().contains('@') {
            return Err(GatewayError::BadRequest("request target must not contain user information".into()));
        }
        (authority.clone(), "request target")
    } else {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let Some(value) = hosts.next() else {
            if req.version() == Version::HTTP_11 {
                return Err(GatewayError::BadRequest("missing Host header (required in HTTP/1.1)".into()));
            }
            return Ok(RequestTarget { host: None, authority: None, route_path: None });
        };
        if hosts.next().is_some() {
            return Err(GatewayError::BadRequest("more than one Host header".into()));
        }
        let authority = Authority::try_from(value.as_bytes())
            .ok()
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
            .ok_or_else(|| {
                GatewayError::BadRequest("invalid Host header: expected host or host:port".into())
            })?;
        (authority, "Host header")
    };
    let host = canonical_host(authority.host())
        .map_err(|e| GatewayError::BadRequest(format!("invalid host in the {source}: {e}")))?;
    if host == authority.host() {
        return Ok(RequestTarget {
            host: Some(host.into_owned()),
            authority: Some(authority),
            route_path: None,
        });
    }
    let forwarded = match authority.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let forwarded = Authority::try_from(forwarded)
        .map_err(|_| GatewayError::BadRequest(format!("invalid host in the {source}")))?;
    Ok(RequestTarget { host: Some(host.into_owned()), authority: Some(forwarded), route_path: None })
}

/// The URI sent upstream: the target's scheme and authority, the (stripped) path and the query.
/// `stripped`: the route matched this path without the `;` parameters the request has, so the
/// prefix is stripped by segments, parameters and all (when that path starts with it).
fn upstream_uri(
    uri: &Uri,
    strip_prefix: Option<&str>,
    stripped: Option<&str>,
    scheme: Scheme,
    authority: Authority,
) -> Result<Uri, GatewayError> {
    let path_and_query = match (strip_prefix, uri.path_and_query()) {
        (None, Some(pq)) => pq.clone(),
        (None, None) => PathAndQuery::from_static("/"),
        (Some(prefix), _) => {
            let path = match stripped {
                Some(routed) if has_segment_prefix(routed, prefix) => strip_segments(uri.path(), prefix),
                _ => strip(uri.path(), prefix),
            };
            let pq = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(pq).map_err(|_| GatewayError::BadRequest("invalid request path".into()))?
        }
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| GatewayError::BadRequest("invalid request target".into()))
}

/// The logging phase: runs when the response body is over.
struct Logging {
    start: Instant,
    request_id: HeaderValue,
    client: SocketAddr,
    version: Version,
    method: Method,
    path: String,
    route: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    duration: Option<Histogram>,
    upstream: Option<Arc<str>>,
    target: Option<Arc<str>>,
    status: u16,
    stats: Option<Arc<RequestStats>>,
    in_flight: Option<InFlight>,
    /// Room taken in `server.limits.max_buffered`, given back when the response is over.
    held: body::Held,
    access_log: bool,
    shared: Arc<Shared>,
}

impl OnFinish for Logging {
    fn finish(&mut self, bytes_out: u64, completed: bool) {
        self.in_flight.take();
        let elapsed = self.start.elapsed();
        let route = self.route.clone().unwrap_or_else(|| Arc::from(metrics::NO_ROUTE));
        let m = &self.shared.metrics;
        m.http_requests
            .get_or_create(&HttpLabels {
                route: Name(route.clone()),
                method: MethodLabel(self.method.clone()),
                status: self.status,
            })
            .inc();
        match &self.duration {
            Some(h) => h.observe(elapsed.as_secs_f64()),
            None => m
                .http_duration
                .get_or_create(&RouteLabels { route: Name(route) })
                .observe(elapsed.as_secs_f64()),
        }
        if !self.access_log {
            return;
        }
        let record = Record {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            client: self.client.ip().to_string(),
            protocol: match self.version {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            method: self.method.as_str(),
            path: &self.path,
            route: self.route.as_deref(),
            consumer: self.consumer.as_deref(),
            status: self.status,
            duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            upstream: self.upstream.as_deref(),
            target: self.target.as_deref(),
            bytes_in: self.stats.as_ref().map_or(0, |s| s.bytes_in.load(Relaxed)),
            bytes_out,
            completed,
        };
        if !self.shared.access_log.write(&record) {
            m.access_log_dropped.inc();
        }
    }
}
