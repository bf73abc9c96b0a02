//! The admin plane, on its own listener: `/healthz`, `/readyz`, `/metrics`, `/admin/config`,
//! `/admin/routes`, `/admin/upstreams`, `POST /admin/reload`, the built-in authorization server's run-time
//! clients under `/admin/oauth/clients`, and webhook dead letters and messages under
//! `/admin/webhooks/`.
//!
//! With `admin.token` set, `/metrics` and `/admin/*` need `Authorization: Bearer TOKEN`
//! (compared in constant time); `/healthz` and `/readyz` stay open for load balancers.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::reload::Reloader;
use crate::runtime::Shared;
use bridgehead_http::metrics::{Name, TargetLabels};
use bridgehead_http::problem::{ProblemKind, standalone_problem};
use bridgehead_upstream::clock_ms;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    reloader: Reloader,
}

/// The admin router.
pub fn router(shared: Arc<Shared>, reloader: Reloader) -> Router {
    let state = AdminState { shared, reloader };
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/config", get(config))
        .route("/admin/upstreams", get(upstreams))
        .route("/admin/routes", get(routes))
        .route("/admin/reload", post(reload))
        .route("/admin/oauth/clients", get(oauth_clients).post(oauth_client_add))
        .route("/admin/oauth/clients/{id}", axum::routing::delete(oauth_client_remove))
        .route("/admin/webhooks/dead-letters", get(dead_letters))
        .route("/admin/webhooks/dead-letters/{id}", get(dead_letter))
        .route("/admin/webhooks/dead-letters/{id}/replay", post(dead_letter_replay))
        .route("/admin/webhooks/messages", get(webhook_messages))
        .route("/admin/webhooks/messages/{id}", get(webhook_message))
        .route("/admin/webhooks/messages/{id}/replay", post(webhook_message_replay))
        .route("/admin/webhooks/endpoints", get(endpoints).post(endpoint_add))
        .route("/admin/webhooks/endpoints/{name}", get(endpoint).delete(endpoint_remove))
        .route("/admin/webhooks/endpoints/{name}/disable", post(endpoint_disable))
        .route("/admin/webhooks/endpoints/{name}/enable", post(endpoint_enable))
        .route("/admin/webhooks/endpoints/{name}/rotate-secret", post(endpoint_rotate))
        .route("/admin/webhooks/endpoints/{name}/replay", post(endpoint_replay))
        .route("/admin/grpc", get(grpc_services))
        .route("/admin/grpc/{service}/refresh", post(grpc_refresh))
        .route("/admin/grpc/{service}/openapi.json", get(grpc_openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

fn problem(status: StatusCode, type_uri: &'static str, title: &'static str, detail: &str) -> Response {
    let (parts, body) = standalone_problem(&ProblemKind { status, type_uri, title }, detail).into_parts();
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn not_found(req: Request) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "urn:bridgehead:problem:no-route",
        "No route",
        &format!("the admin plane has no endpoint {} {}", req.method(), req.uri().path()),
    )
}

async fn require_token(
    State(s): State<AdminState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let runtime = s.shared.runtime.load();
    let Some(token) = &runtime.loaded.config.admin.token else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return next.run(req).await;
    }
    let detail =
        if given.is_empty() { "missing Authorization: Bearer header" } else { "admin token does not match" };
    let mut res = problem(
        StatusCode::UNAUTHORIZED,
        "urn:bridgehead:problem:unauthenticated",
        "Unauthenticated",
        detail,
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"bridgehead-admin\""));
    res
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let rt = s.shared.runtime.load();
    let down: Vec<String> =
        rt.upstreams_in_use().filter(|u| !u.any_available()).map(|u| u.name.to_string()).collect();
    if down.is_empty() {
        return axum::Json(json!({"status": "ready", "generation": rt.generation})).into_response();
    }
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:bridgehead:problem:not-ready",
        "Not ready",
        &format!("no healthy target in upstream(s): {}", down.join(", ")),
    )
}

async fn metrics(State(s): State<AdminState>) -> Response {
    // Target health is computed at scrape time: ejections expire by the clock, not by events.
    let rt = s.shared.runtime.load();
    let m = &s.shared.metrics;
    m.upstream_healthy.clear();
    let now = clock_ms();
    for u in rt.upstreams.values() {
        for t in &u.targets {
            m.upstream_healthy
                .get_or_create(&TargetLabels { upstream: Name(u.name.clone()), target: Name(t.url.clone()) })
                .set(i64::from(t.available(now)));
        }
    }
    let mut res = m.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

async fn config(State(s): State<AdminState>) -> Response {
    let rt = s.shared.runtime.load();
    axum::Json(json!({
        "generation": rt.generation,
        "file": rt.loaded.file.display().to_string(),
        "config": rt.loaded.redacted_json(),
    }))
    .into_response()
}

/// The routes of the running generation in the order the router tries them: the built-in
/// ones (the authorization server's) first, then the user's, most specific first.
async fn routes(State(s): State<AdminState>) -> Response {
    let rt = s.shared.runtime.load();
    let list: Vec<_> = rt
        .router
        .routes()
        .enumerate()
        .map(|(i, r)| {
            let (authenticators, scopes) = r.auth.as_ref().map(|a| a.describe()).unwrap_or_default();
            json!({
                "order": i + 1,
                "name": &*r.name,
                "builtin": r.builtin,
                "backend": r.backend.kind(),
                "upstream": r.upstream().map(|u| &*u.name),
                "match": &r.matched,
                "strip_prefix": r.strip_prefix,
                "auth": authenticators,
                "require_scopes": scopes,
                "rate_limit": r.rate_limit.is_some(),
                "idempotency": r.idempotency.is_some(),
                "upgrades": r.upgrades,
            })
        })
        .collect();
    axum::Json(json!({ "generation": rt.generation, "routes": list })).into_response()
}

async fn upstreams(State(s): State<AdminState>) -> Response {
    let rt = s.shared.runtime.load();
    let now = clock_ms();
    let list: serde_json::Map<String, serde_json::Value> = rt
        .upstreams
        .values()
        .map(|u| {
            let targets: Vec<_> = u
                .targets
                .iter()
                .map(|t| {
                    let mut v = json!({
                        "url": &*t.url,
                        "weight": t.weight,
                        "available": t.available(now),
                        "healthy": t.healthy_by_checks(),
                        "ejected": t.ejected(now),
                        "in_flight": t.in_flight(),
                    });
                    if let Some(state) = u.breaker_state(t) {
                        v["circuit"] = json!(state.as_str());
                    }
                    v
                })
                .collect();
            let mut v = json!({ "targets": targets });
            let paused = u.throttle.paused_for_us();
            if paused > 0 {
                v["paused_ms"] = json!(paused.div_ceil(1000));
            }
            (u.name.to_string(), v)
        })
        .collect();
    axum::Json(json!({ "upstreams": list })).into_response()
}

/// The gRPC services: where each schema came from and the HTTP bindings it gives.
async fn grpc_services(State(s): State<AdminState>) -> Response {
    let rt = s.shared.runtime.load();
    let list: Vec<_> = rt.grpc.values().map(|svc| svc.view()).collect();
    axum::Json(json!({ "services": list })).into_response()
}

/// The OpenAPI 3.1 document of a service as a transcoding route serves it: `?route=NAME`, or
/// the first route that transcodes the service (its mount point and JSON options).
async fn grpc_openapi(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let rt = s.shared.runtime.load_full();
    let Some(svc) = rt.grpc.get(&name) else { return no_grpc_service(&name) };
    let (prefix, opts) = match bridgehead_grpc::openapi::route_view(
        &rt.loaded.config,
        &name,
        q.get("route").map(String::as_str),
    ) {
        Ok(view) => view,
        Err(e) => {
            return problem(
                StatusCode::NOT_FOUND,
                "urn:bridgehead:problem:no-such-route",
                "No such route",
                &e,
            );
        }
    };
    let Some(current) = svc.current() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:bridgehead:problem:grpc-schema-unavailable",
            "Schema unavailable",
            &format!("the schema of gRPC service `{name}` has not been loaded yet"),
        );
    };
    axum::Json(bridgehead_grpc::openapi::document(&name, &current, prefix, &opts)).into_response()
}

fn no_grpc_service(name: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "urn:bridgehead:problem:no-such-service",
        "No such service",
        &format!("no gRPC service `{name}` under grpc.services"),
    )
}

/// Asks a reflected service's server for its schema now.
async fn grpc_refresh(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let rt = s.shared.runtime.load_full();
    let Some(svc) = rt.grpc.get(&name) else { return no_grpc_service(&name) };
    if svc.reflection.is_none() {
        return problem(
            StatusCode::CONFLICT,
            "urn:bridgehead:problem:not-reflected",
            "Not reflected",
            &format!(
                "gRPC service `{name}` takes its schema from files; reload the config to read them again"
            ),
        );
    }
    match svc.refresh(&s.shared.metrics, s.shared.store.as_ref()).await {
        Ok(bridgehead_grpc::service::Change::Unchanged) => {
            axum::Json(json!({"status": "unchanged"})).into_response()
        }
        Ok(bridgehead_grpc::service::Change::Updated { added, broken }) => {
            axum::Json(json!({"status": "updated", "added": added, "broken": broken})).into_response()
        }
        Err(e) => problem(
            StatusCode::BAD_GATEWAY,
            "urn:bridgehead:problem:reflection-failed",
            "Reflection failed",
            &format!("gRPC service `{name}`: {e}; the schema serving stays"),
        ),
    }
}

async fn reload(State(s): State<AdminState>) -> Response {
    match s.reloader.reload().await {
        Ok(generation) => axum::Json(json!({"status": "reloaded", "generation": generation})).into_response(),
        Err(e) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:bridgehead:problem:invalid-config",
            "Invalid config",
            &e.to_string(),
        ),
    }
}

/// A client registered through `POST /admin/oauth/clients`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    client_id: String,
    #[serde(default)]
    public: bool,
    grants: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
}

/// The store, when the authorization server runs.
fn oauth_store(s: &AdminState) -> Option<bridgehead_state::Store> {
    if s.shared.oauth.load().is_some() { s.shared.store.clone() } else { None }
}

fn no_oauth() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "urn:bridgehead:problem:no-route",
        "No route",
        "the built-in authorization server is not configured (oauth_server)",
    )
}

fn unavailable(e: bridgehead_state::StateError) -> Response {
    tracing::error!(error = %e, "admin: state database error");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:bridgehead:problem:state-unavailable",
        "State unavailable",
        "the state database could not be used; see the gateway log",
    )
}

async fn oauth_clients(State(s): State<AdminState>) -> Response {
    let Some(store) = oauth_store(&s) else { return no_oauth() };
    match store.oauth_clients_all().await {
        Ok(list) => axum::Json(json!(
            list.iter()
                .map(|c| json!({
                    "client_id": c.client_id, "public": c.public, "grants": c.grants, "scopes": c.scopes,
                    "redirect_uris": c.redirect_uris, "created_at": c.created_at,
                }))
                .collect::<Vec<_>>()
        ))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

async fn oauth_client_add(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Some(store) = oauth_store(&s) else { return no_oauth() };
    let bad = |detail: String| {
        problem(StatusCode::BAD_REQUEST, "urn:bridgehead:problem:bad-request", "Bad request", &detail)
    };
    let new: NewClient = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return bad(format!("the body must be a JSON client: {e}")),
    };
    let candidate = bridgehead_config::OAuthClient {
        client_id: new.client_id.clone(),
        secret_sha256: (!new.public).then(|| "0".repeat(64)),
        public: new.public,
        grants: new.grants.clone(),
        scopes: new.scopes.clone(),
        redirect_uris: new.redirect_uris.clone(),
    };
    if let Some((path, msg)) = bridgehead_config::check_oauth_client(&candidate).into_iter().next() {
        return bad(format!(
            "{}: {msg}",
            if path.is_empty() {
                "client".to_string()
            } else {
                format!("/{}", path.replace(['[', '.'], "/").replace(']', ""))
            }
        ));
    }
    let in_config = s
        .shared
        .runtime
        .load()
        .loaded
        .config
        .oauth_server
        .as_ref()
        .is_some_and(|o| o.clients.iter().any(|c| c.client_id == new.client_id));
    let conflict = || {
        problem(
            StatusCode::CONFLICT,
            "urn:bridgehead:problem:conflict",
            "Conflict",
            &format!("client `{}` already exists", new.client_id),
        )
    };
    if in_config {
        return conflict();
    }
    let secret = (!new.public).then(bridgehead_auth::apikey::generate);
    let rec = bridgehead_state::OAuthClientRecord {
        client_id: new.client_id.clone(),
        secret_sha256: secret.as_deref().map(bridgehead_auth::apikey::sha256_hex),
        public: new.public,
        grants: new.grants,
        scopes: new.scopes,
        redirect_uris: new.redirect_uris,
        created_at: bridgehead_http::clock::unix_now() as i64,
    };
    match store.oauth_client_insert(&rec).await {
        Ok(()) => {}
        Err(bridgehead_state::StateError::InvalidInput { .. }) => return conflict(),
        Err(e) => return unavailable(e),
    }
    let mut body = json!({"client_id": rec.client_id});
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
    }
    let mut res = (StatusCode::CREATED, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn oauth_client_remove(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(store) = oauth_store(&s) else { return no_oauth() };
    match store.oauth_client_delete(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            "urn:bridgehead:problem:no-route",
            "Not found",
            &format!("no run-time client `{id}`"),
        ),
        Err(e) => unavailable(e),
    }
}

fn not_found_problem(detail: String) -> Response {
    problem(StatusCode::NOT_FOUND, "urn:bridgehead:problem:not-found", "Not found", &detail)
}

fn bad_request(detail: String) -> Response {
    problem(StatusCode::BAD_REQUEST, "urn:bridgehead:problem:bad-request", "Bad request", &detail)
}

#[derive(serde::Deserialize)]
struct DeadLetterQuery {
    /// Only this receiver's.
    receiver: Option<String>,
    /// The cursor of the next page (`next_before` of the previous one).
    before: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/webhooks/dead-letters?receiver=&before=&limit=`: newest first, at most `limit`
/// (default 50, at most 500), without headers and bodies.
async fn dead_letters(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<DeadLetterQuery>,
) -> Response {
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    let (limit, before) = match page(q.limit, q.before.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let source = q.receiver.as_ref().map(|r| format!("inbound:{r}"));
    match store.webhook_dead_letters(source.as_deref(), before, limit).await {
        Ok(list) => axum::Json(json!({
            "dead_letters": list.iter().map(|d| bridgehead_webhooks::view::dead_letter(d, false)).collect::<Vec<_>>(),
            "next_before": next_before(list.len(), limit, list.last().map(|d| (d.received_at_ms, d.id.as_str()))),
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

/// Where a page starts: after the entry received at this time (Unix ms) with this id.
type Cursor<'a> = (i64, &'a str);

/// A page's size (default 50, at most 500) and cursor (`<ms>:<id>`, the `next_before` of the
/// previous page), or the 400 to answer.
#[allow(clippy::result_large_err)]
fn page(limit: Option<i64>, before: Option<&str>) -> Result<(i64, Option<Cursor<'_>>), Response> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(bad_request(format!("limit must be 1 to 500, got {limit}")));
    }
    let before = match before.map(|b| b.split_once(':').map(|(ms, id)| (ms.parse::<i64>(), id))) {
        None => None,
        Some(Some((Ok(ms), id))) => Some((ms, id)),
        Some(_) => {
            return Err(bad_request(
                "before must be the next_before of the previous page (<ms>:<id>)".into(),
            ));
        }
    };
    Ok((limit, before))
}

/// The cursor of the next page: the last entry of a full page (a short page was the last).
fn next_before(page_len: usize, limit: i64, last: Option<(i64, &str)>) -> Option<String> {
    last.filter(|_| page_len as i64 == limit).map(|(ms, id)| format!("{ms}:{id}"))
}

/// `GET /admin/webhooks/dead-letters/{id}`: with its headers (signatures redacted) and body.
async fn dead_letter(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    match store.webhook_dead_letter(&id).await {
        Ok(Some(d)) => axum::Json(bridgehead_webhooks::view::dead_letter(&d, true)).into_response(),
        Ok(None) => not_found_problem(format!("no dead letter `{id}`")),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    skip_signature: bool,
}

/// `POST /admin/webhooks/dead-letters/{id}/replay` (`{"skip_signature": false}` or no body):
/// the stored request through its receiver again; 200 with the message id when stored, 409
/// with the reason when it is refused again.
async fn dead_letter_replay(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    use bridgehead_webhooks::inbound::{ReplayError, Replayed};
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    let req: ReplayRequest = if body.is_empty() {
        ReplayRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return bad_request(format!("the body must be {{\"skip_signature\": true|false}}: {e}"));
            }
        }
    };
    let dl = match store.webhook_dead_letter(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found_problem(format!("no dead letter `{id}`")),
        Err(e) => return unavailable(e),
    };
    let rt = s.shared.runtime.load();
    let Some(receiver) = rt.receivers.iter().find(|r| r.source == dl.source) else {
        return problem(
            StatusCode::CONFLICT,
            "urn:bridgehead:problem:webhook-replay-refused",
            "Replay refused",
            &format!(
                "no receiver `{}` in the running config",
                bridgehead_webhooks::view::receiver_of(&dl.source)
            ),
        );
    };
    if req.skip_signature {
        tracing::warn!(dead_letter = %id, receiver = %receiver.name, "admin: replaying a dead letter WITHOUT its signature check");
    }
    match receiver.replay(store, &dl, req.skip_signature, bridgehead_http::clock::unix_ms()).await {
        Ok(replayed) => {
            let (status, message_id) = match &replayed {
                Replayed::Accepted(m) => ("accepted", m),
                Replayed::Duplicate(m) => ("duplicate", m),
            };
            if matches!(replayed, Replayed::Accepted(_)) {
                s.shared.webhook_wake.notify_one();
            }
            axum::Json(json!({"status": status, "message_id": message_id})).into_response()
        }
        Err(ReplayError::Refused { reason, detail }) => {
            let mut res = problem(
                StatusCode::CONFLICT,
                "urn:bridgehead:problem:webhook-replay-refused",
                "Replay refused",
                &format!("still refused ({reason}): {detail}"),
            );
            res.headers_mut().insert("x-refusal-reason", HeaderValue::from_static(reason));
            res
        }
        Err(ReplayError::Store(e)) => {
            tracing::error!(error = %e, "admin: replay could not be stored");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:bridgehead:problem:state-unavailable",
                "State unavailable",
                "the state database could not be used; see the gateway log",
            )
        }
    }
}

/// `GET /admin/webhooks/messages/{id}`: a message's deliveries with their attempt logs.
async fn webhook_message(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    let deliveries = match store.webhook_deliveries(&id).await {
        Ok(d) if d.is_empty() => return not_found_problem(format!("no message `{id}`")),
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let mut out = Vec::with_capacity(deliveries.len());
    for d in &deliveries {
        match store.webhook_attempts(d.id).await {
            Ok(attempts) => out.push(bridgehead_webhooks::view::delivery(d, &attempts)),
            Err(e) => return unavailable(e),
        }
    }
    axum::Json(json!({"message_id": id, "deliveries": out})).into_response()
}

/// The running dispatcher and the store, or the problem to answer.
#[allow(clippy::result_large_err)]
fn dispatcher(
    s: &AdminState,
) -> Result<(Arc<bridgehead_webhooks::outbound::Dispatcher>, &bridgehead_state::Store), Response> {
    let Some(store) = s.shared.store.as_ref() else { return Err(no_store()) };
    match s.shared.runtime.load().dispatcher.clone() {
        Some(d) => Ok((d, store)),
        None => Err(not_found_problem("webhooks.outbound is not configured".into())),
    }
}

/// Reads a JSON body (none: `T::default()`), or the 400 to answer.
#[allow(clippy::result_large_err)]
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8], shape: &str) -> Result<T, Response> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("the body must be {shape}: {e}")))
}

fn endpoint_error(e: bridgehead_webhooks::outbound::EndpointError) -> Response {
    use bridgehead_webhooks::outbound::EndpointError;
    match e {
        EndpointError::NotFound(_) => not_found_problem(e.to_string()),
        EndpointError::Conflict(m) => {
            problem(StatusCode::CONFLICT, "urn:bridgehead:problem:conflict", "Conflict", &m)
        }
        EndpointError::Invalid { .. } => bad_request(e.to_string()),
        EndpointError::Store(e) => unavailable(e),
    }
}

/// Reads the endpoints again after a change, and answers with the endpoint as it is now.
async fn endpoint_now(
    s: &AdminState,
    name: &str,
    status: StatusCode,
    extra: Option<(&str, serde_json::Value)>,
) -> Response {
    let rt = s.shared.runtime.load_full();
    rt.refresh_endpoints(s.shared.store.as_ref()).await;
    // The other gateways' refreshers pick the change up within a few seconds.
    s.shared.webhook_wake.notify_one();
    let mut body = rt
        .dispatcher
        .as_ref()
        .and_then(|d| d.endpoint(name))
        .map_or_else(|| json!({ "name": name }), |e| bridgehead_webhooks::view::endpoint(&e));
    if let Some((k, v)) = extra {
        body[k] = v;
    }
    (status, axum::Json(body)).into_response()
}

/// `GET /admin/webhooks/endpoints`: every endpoint, the config's first.
async fn endpoints(State(s): State<AdminState>) -> Response {
    let (d, _) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list: Vec<serde_json::Value> =
        d.endpoints().iter().map(|e| bridgehead_webhooks::view::endpoint(e)).collect();
    axum::Json(json!({ "endpoints": list })).into_response()
}

/// `GET /admin/webhooks/endpoints/{name}`.
async fn endpoint(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let (d, _) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match d.endpoint(&name) {
        Some(e) => axum::Json(bridgehead_webhooks::view::endpoint(&e)).into_response(),
        None => not_found_problem(format!("no endpoint is named `{name}`")),
    }
}

/// `POST /admin/webhooks/endpoints` with `{"name", "url", "events", "secret"?,
/// "allow_private_network"?}`: 201 with the endpoint and its `secret` (shown this once).
async fn endpoint_add(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let (d, store) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let new: bridgehead_webhooks::outbound::NewEndpoint = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return bad_request(format!(
                "the body must be {{\"name\", \"url\", \"events\": [..], \"secret\"?, \"allow_private_network\"?}}: {e}"
            ));
        }
    };
    let declared: Vec<String> =
        d.endpoints().iter().filter(|e| e.declared).map(|e| e.name.to_string()).collect();
    let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
    match bridgehead_webhooks::outbound::add_endpoint(
        store,
        &declared,
        &new,
        bridgehead_http::clock::unix_ms(),
    )
    .await
    {
        Ok(secret) => {
            // The origin only: an endpoint's path or query may carry a token.
            let origin =
                new.url.parse::<http::Uri>().ok().and_then(|u| u.authority().map(ToString::to_string));
            tracing::info!(endpoint = %new.name, origin = ?origin, "admin: webhook endpoint added");
            endpoint_now(&s, &new.name, StatusCode::CREATED, Some(("secret", json!(secret)))).await
        }
        Err(e) => endpoint_error(e),
    }
}

/// `DELETE /admin/webhooks/endpoints/{name}`: a run-time endpoint only (204).
async fn endpoint_remove(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let (d, store) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if d.declares(&name) {
        return endpoint_error(bridgehead_webhooks::outbound::EndpointError::Conflict(format!(
            "`{name}` is declared in the config: remove it there"
        )));
    }
    match store.webhook_endpoint_remove(&name, bridgehead_http::clock::unix_ms()).await {
        Ok(true) => {
            tracing::info!(endpoint = %name, "admin: webhook endpoint removed");
            let _ = endpoint_now(&s, &name, StatusCode::OK, None).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => not_found_problem(format!("no endpoint is named `{name}`")),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DisableRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /admin/webhooks/endpoints/{name}/disable` (`{"reason": …}` or no body).
async fn endpoint_disable(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let req: DisableRequest = match json_body(&body, "{\"reason\": \"…\"}") {
        Ok(r) => r,
        Err(r) => return r,
    };
    set_enabled(&s, &name, Some(req.reason.unwrap_or_else(|| "disabled by an operator".into()))).await
}

/// `POST /admin/webhooks/endpoints/{name}/enable`: its waiting deliveries go out.
async fn endpoint_enable(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    set_enabled(&s, &name, None).await
}

async fn set_enabled(s: &AdminState, name: &str, reason: Option<String>) -> Response {
    let (d, store) = match dispatcher(s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(e) = d.endpoint(name) else {
        return not_found_problem(format!("no endpoint is named `{name}`"));
    };
    let now = bridgehead_http::clock::unix_ms();
    match bridgehead_webhooks::outbound::set_disabled(store, name, e.declared, reason.as_deref(), now).await {
        Ok(()) => {
            tracing::info!(endpoint = %name, enabled = reason.is_none(), "admin: webhook endpoint changed");
            endpoint_now(s, name, StatusCode::OK, None).await
        }
        Err(e) => endpoint_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    #[serde(default)]
    grace: Option<bridgehead_config::HumanDuration>,
}

/// `POST /admin/webhooks/endpoints/{name}/rotate-secret` (`{"grace": "24h"}` or no body): a
/// new secret (shown this once); the old ones sign too until the grace ends (default 24h).
async fn endpoint_rotate(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (d, store) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if d.declares(&name) {
        return endpoint_error(bridgehead_webhooks::outbound::EndpointError::Conflict(format!(
            "`{name}` is declared in the config: rotate its secret there (list the new and the old under `secrets`, then drop the old)"
        )));
    }
    let req: RotateRequest = match json_body(&body, "{\"grace\": \"24h\"}") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let grace =
        req.grace.map_or(std::time::Duration::from_secs(86_400), bridgehead_config::HumanDuration::get);
    let now = bridgehead_http::clock::unix_ms();
    match bridgehead_webhooks::outbound::rotate_secret(store, &name, grace, now).await {
        Ok(secret) => {
            tracing::info!(endpoint = %name, grace = %humantime::format_duration(grace), "admin: webhook endpoint secret rotated");
            let until = now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
            let mut res = endpoint_now(&s, &name, StatusCode::OK, Some(("secret", json!(secret)))).await;
            res.headers_mut().insert("x-previous-secrets-valid-until-ms", HeaderValue::from(until));
            res
        }
        Err(e) => endpoint_error(e),
    }
}

/// A time given to the admin API: Unix ms, or RFC 3339 in UTC (`2026-12-07T10:00:00Z`).
#[derive(serde::Deserialize, Clone)]
#[serde(untagged)]
enum When {
    Ms(i64),
    Text(String),
}

impl When {
    fn ms(&self, what: &str) -> Result<i64, String> {
        match self {
            When::Ms(ms) => Ok(*ms),
            When::Text(t) => humantime::parse_rfc3339(t)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .ok_or_else(|| format!("{what} must be Unix milliseconds or RFC 3339 in UTC (2026-12-07T10:00:00Z), got {t:?}")),
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EndpointReplayRequest {
    #[serde(default)]
    since: Option<When>,
    #[serde(default)]
    until: Option<When>,
    /// Delivered messages too, not only failed ones.
    #[serde(default)]
    all: bool,
}

/// `POST /admin/webhooks/endpoints/{name}/replay` (`{"since", "until", "all"}`, each
/// optional): every failed message of the endpoint received in `[since, until)` (with `all`,
/// delivered ones too) is delivered again, from attempt 1.
async fn endpoint_replay(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (d, store) = match dispatcher(&s) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if d.endpoint(&name).is_none() {
        return not_found_problem(format!("no endpoint is named `{name}`"));
    }
    let req: EndpointReplayRequest = match json_body(&body, "{\"since\"?, \"until\"?, \"all\"?}") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (since, until) =
        match (req.since.map(|w| w.ms("since")).transpose(), req.until.map(|w| w.ms("until")).transpose()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return bad_request(e),
        };
    let destination = bridgehead_webhooks::outbound::destination(&name);
    let which = bridgehead_state::Redeliver {
        message_id: None,
        destination: Some(&destination),
        since_ms: since,
        until_ms: until,
        only_failed: !req.all,
    };
    redeliver(&s, store, &which).await
}

async fn redeliver(
    s: &AdminState,
    store: &bridgehead_state::Store,
    which: &bridgehead_state::Redeliver<'_>,
) -> Response {
    match store.webhook_redeliver(which, bridgehead_http::clock::unix_ms()).await {
        Ok(n) => {
            tracing::info!(deliveries = n, message = ?which.message_id, destination = ?which.destination, "admin: webhook deliveries made again");
            s.shared.webhook_wake.notify_one();
            axum::Json(json!({ "redelivered": n })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MessageReplayRequest {
    /// Only to this endpoint.
    #[serde(default)]
    endpoint: Option<String>,
}

/// `POST /admin/webhooks/messages/{id}/replay` (`{"endpoint": …}` or no body): the message
/// is delivered again to each destination (or the one endpoint) whose delivery finished,
/// delivered or failed, from attempt 1.
async fn webhook_message_replay(
    State(s): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    let req: MessageReplayRequest = match json_body(&body, "{\"endpoint\": \"…\"}") {
        Ok(r) => r,
        Err(r) => return r,
    };
    match store.webhook_deliveries(&id).await {
        Ok(d) if d.is_empty() => return not_found_problem(format!("no message `{id}` with deliveries")),
        Ok(_) => {}
        Err(e) => return unavailable(e),
    }
    let destination = req.endpoint.as_deref().map(bridgehead_webhooks::outbound::destination);
    let which = bridgehead_state::Redeliver {
        message_id: Some(&id),
        destination: destination.as_deref(),
        only_failed: false,
        ..Default::default()
    };
    redeliver(&s, store, &which).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageQuery {
    source: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    endpoint: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/webhooks/messages?source=&type=&endpoint=&since=&until=&before=&limit=`: newest
/// first, at most `limit` (default 50, at most 500), without bodies; `next_before` pages on.
async fn webhook_messages(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<MessageQuery>,
) -> Response {
    let Some(store) = s.shared.store.as_ref() else { return no_store() };
    let (limit, before) = match page(q.limit, q.before.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let when = |v: &Option<String>, what: &str| -> Result<Option<i64>, String> {
        v.as_ref()
            .map(|t| match t.parse::<i64>() {
                Ok(ms) => Ok(ms),
                Err(_) => When::Text(t.clone()).ms(what),
            })
            .transpose()
    };
    let (since, until) = match (when(&q.since, "since"), when(&q.until, "until")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let destination = q.endpoint.as_deref().map(bridgehead_webhooks::outbound::destination);
    let filter = bridgehead_state::MessageFilter {
        source: q.source.as_deref(),
        event_type: q.event_type.as_deref(),
        destination: destination.as_deref(),
        since_ms: since,
        until_ms: until,
    };
    match store.webhook_messages(&filter, before, limit).await {
        Ok(list) => axum::Json(json!({
            "messages": list.iter().map(bridgehead_webhooks::view::message).collect::<Vec<_>>(),
            "next_before": next_before(list.len(), limit, list.last().map(|m| (m.received_at_ms, m.id.as_str()))),
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

fn no_store() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:bridgehead:problem:state-unavailable",
        "State unavailable",
        "this gateway runs without a state database",
    )
}
