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
        .route("/admin/webhooks/messages/{id}", get(webhook_message))
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
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return bad_request(format!("limit must be 1 to 500, got {limit}"));
    }
    let source = q.receiver.as_ref().map(|r| format!("inbound:{r}"));
    let before = match q.before.as_deref().map(|b| b.split_once(':').map(|(ms, id)| (ms.parse::<i64>(), id)))
    {
        None => None,
        Some(Some((Ok(ms), id))) => Some((ms, id)),
        Some(_) => {
            return bad_request("before must be the next_before of the previous page (<ms>:<id>)".into());
        }
    };
    match store.webhook_dead_letters(source.as_deref(), before, limit).await {
        Ok(list) => axum::Json(json!({
            "dead_letters": list.iter().map(|d| bridgehead_webhooks::view::dead_letter(d, false)).collect::<Vec<_>>(),
            "next_before": (list.len() as i64 == limit)
                .then(|| list.last().map(|d| format!("{}:{}", d.received_at_ms, d.id)))
                .flatten(),
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
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

fn no_store() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:bridgehead:problem:state-unavailable",
        "State unavailable",
        "this gateway runs without a state database",
    )
}
