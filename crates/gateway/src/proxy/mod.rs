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

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bridgehead_config::canonical::{canonical_host, normalize_path, strip_segments, without_parameters};
use bridgehead_config::pattern::has_segment_prefix;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::histogram::Histogram;

use crate::access_log::Record;
use crate::policy::RequestFacts;
use crate::policy::idempotency::{Begin, Claim, IDEMPOTENCY_KEY, fingerprint};
use crate::router::{Backend, Route, RouteResult, strip};
use crate::runtime::{Runtime, Shared};
use bridgehead_http::body;
use bridgehead_http::body::{Charge, Collect, OnFinish, RequestBody, RequestStats, ResponseBody, collect};
use bridgehead_http::headers::{self, X_REQUEST_ID};
use bridgehead_http::log_budget::LogBudget;
use bridgehead_http::metrics::{self, HttpLabels, MethodLabel, Name, RouteLabels, RouteResultLabels};
use bridgehead_http::problem::GatewayError;
use bridgehead_http::trace::{self, Attributes, Kind, SpanId, SpanRecord, Trace, Value};
use bridgehead_http::upstream_body::UpstreamBody;
use bridgehead_upstream::InFlight;
use bridgehead_upstream::classify::Classify;
use bridgehead_upstream::retry::RetryPolicy;
use bridgehead_upstream::send::{Observer, Outgoing, Payload, Sender, TryEnd};

pub use bridgehead_http::ConnInfo;

/// Serves one request. Never fails: errors become problem responses.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    // Invariant: one generation per request, loaded here and nowhere else.
    let rt = shared.runtime.load_full();
    let request_id = headers::request_id(req.headers());
    let grpc = Classify::of_request(req.method(), req.headers()) == Classify::Grpc;
    let filtered = request_filter(&rt, &mut req);
    // Only when traces are on: otherwise nothing of tracing runs. After the filter, which
    // refuses oversized headers (the trace of that refusal is still recorded).
    let trace = rt.tracer.as_ref().map(|t| Box::new(t.start(req.headers())));
    let mut log = Logging::new(&rt, &shared, &conn, &req, request_id.clone(), trace);
    let stats = Arc::new(RequestStats::default());
    log.stats = Some(stats.clone());
    let mut ctx = RequestCtx {
        rt: &rt,
        conn: &conn,
        request_id,
        grpc,
        grpc_web: None,
        target: RequestTarget::default(),
        route: None,
        without_parameters: false,
        upgrade: None,
        client_upgrade: None,
        body: BodyState::Taken,
        stats,
        claim: None,
        request_held: body::Held::default(),
        extra: http::HeaderMap::new(),
        log,
    };
    let result = match filtered {
        Ok(target) => {
            ctx.target = target;
            match ctx.log.trace.as_ref().map(|t| t.context()) {
                // Fetches made on the request's behalf (keys, tokens) carry its trace context.
                Some(c) => trace::within(c, pipeline(&mut ctx, req)).await,
                None => pipeline(&mut ctx, req).await,
            }
        }
        Err(e) => Err(e),
    };
    Ok(respond(ctx, result))
}

/// Everything the phases of one request share.
struct RequestCtx<'a> {
    rt: &'a Runtime,
    conn: &'a ConnInfo,
    request_id: HeaderValue,
    /// The request is a gRPC call (`content-type: application/grpc…`), or a gRPC-Web call the
    /// route translates.
    grpc: bool,
    /// A gRPC-Web call on a route that proxies a gRPC service (`match.grpc_service`): translated
    /// to gRPC and back (see `bridgehead_grpc::web`).
    grpc_web: Option<bridgehead_grpc::web::Mode>,
    /// Where the request is addressed, canonical (set by `request_filter`).
    target: RequestTarget,
    /// The route (set by `route`).
    route: Option<&'a Route>,
    /// The route matched the path without its `;` segment parameters.
    without_parameters: bool,
    /// The `Upgrade` value to forward: protocols the client offered and the route allows.
    upgrade: Option<HeaderValue>,
    /// The client side of an allowed upgrade.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    body: BodyState,
    /// Byte counts of the request body, shared with the logging phase.
    stats: Arc<RequestStats>,
    /// The idempotency key this request holds, from `idempotency` until `store_response`.
    claim: Option<Claim>,
    /// Room taken in `server.limits.max_buffered` for the request body, given back once the
    /// tries are over.
    request_held: body::Held,
    /// Headers every answer to this request carries (the rate-limit headers).
    extra: http::HeaderMap,
    log: Logging,
}

/// The request body as the phases see it.
enum BodyState {
    /// Not read yet: it streams to the upstream unless a phase reads it.
    Streaming(Incoming),
    /// Read whole (by the idempotency phase): it can be sent again.
    Buffered(Bytes),
    /// Moved on (into the upstream request, or never had one).
    Taken,
}

impl<'a> RequestCtx<'a> {
    fn route(&self) -> &'a Route {
        self.route.expect("set by the route phase")
    }

    /// The upstream of a proxy route (the phases after `route` run only for those).
    fn upstream(&self) -> &'a Arc<bridgehead_upstream::Upstream> {
        self.route().upstream().expect("a proxy route")
    }

    /// The request facts policies key on: headers, client address, consumer.
    fn facts<'h>(&'h self, headers: &'h http::HeaderMap) -> RequestFacts<'h> {
        RequestFacts { headers, client: self.conn.client.ip(), consumer: self.log.consumer.as_deref() }
    }

    /// How the sender judges this request's answers: gRPC for a gRPC call (decided once, in
    /// `handle`).
    fn classify(&self) -> Classify {
        if self.grpc { Classify::Grpc } else { Classify::Http }
    }

    /// Whether the request may be sent more than once at all: idempotent (or carrying an
    /// `Idempotency-Key`), or a gRPC call (retried only on what says nothing was done, see
    /// `send`).
    fn may_send_again(&self, method: &Method, headers: &http::HeaderMap) -> bool {
        idempotent(method, headers) || self.grpc
    }

    /// Frees the idempotency key, counting it.
    fn release_claim(&mut self) {
        if let Some(claim) = self.claim.take() {
            claim.release();
            self.count_idempotency("released");
        }
    }

    /// Now on the trace's clock, when this request is recorded: where a phase's span starts.
    fn span_start(&self) -> Option<u64> {
        self.log.trace.as_ref().filter(|t| t.sampled).map(|t| t.now())
    }

    /// Records a phase's span from `start` (see [`Self::span_start`]) until now, failed when
    /// `error` is set. `attributes` is called only for a recorded request.
    fn span_end(
        &mut self,
        start: Option<u64>,
        name: &'static str,
        kind: Kind,
        error: Option<&GatewayError>,
        attributes: impl FnOnce() -> Attributes,
    ) {
        self.span_end_as(start.map(|at| (SpanId::random(), at)), name, kind, error, attributes);
    }

    /// [`Self::span_end`] for a span whose id was handed out already (as fetches' parent):
    /// `span` is its id and start.
    fn span_end_as(
        &mut self,
        span: Option<(SpanId, u64)>,
        name: &'static str,
        kind: Kind,
        error: Option<&GatewayError>,
        attributes: impl FnOnce() -> Attributes,
    ) {
        let (Some((id, start)), Some(trace)) = (span, self.log.trace.as_deref_mut()) else { return };
        trace.record_as(id, name, kind, start, attributes());
        if let Some(e) = error {
            trace.fail_last(e.status().as_u16().to_string(), e.to_string());
        }
    }

    /// Records a phase's span that ended in an answer of the backend's own (a request that
    /// does not fit the schema): failed, with the answer's status, when it is 4xx or 5xx.
    fn span_refused(&mut self, start: Option<u64>, name: &'static str, status: StatusCode) {
        let (Some(start), Some(trace)) = (start, self.log.trace.as_deref_mut()) else { return };
        let code = i64::from(status.as_u16());
        trace.record(name, Kind::Internal, start, vec![("http.response.status_code", Value::Int(code))]);
        if status.is_client_error() || status.is_server_error() {
            trace.fail_last(status.as_u16().to_string(), format!("answered {code} before the upstream"));
        }
    }

    /// The span of a step that hands the request on to be stored (a webhook's intake): its id
    /// goes into `headers` as `traceparent`, so what is delivered later continues this trace.
    /// The id and start, for [`Self::handoff_end`], when the request is recorded.
    fn handoff_start(&self, headers: &mut http::HeaderMap) -> Option<(SpanId, u64)> {
        let trace = self.log.trace.as_deref()?;
        let id = SpanId::random();
        trace.inject(id, headers);
        trace.sampled.then(|| (id, trace.now()))
    }

    /// Records a hand-off span (see [`Self::handoff_start`]) with the answer's status.
    fn handoff_end(&mut self, span: Option<(SpanId, u64)>, destination: &str, status: StatusCode) {
        let (Some((id, start)), Some(trace)) = (span, self.log.trace.as_deref_mut()) else { return };
        let attributes = vec![
            ("messaging.system", Value::from("bridgehead")),
            ("messaging.operation.type", Value::from("publish")),
            ("messaging.destination.name", Value::from(destination.to_owned())),
            ("http.response.status_code", Value::Int(i64::from(status.as_u16()))),
        ];
        trace.record_as(id, "webhook.publish", Kind::Producer, start, attributes);
        if status.is_client_error() || status.is_server_error() {
            trace.fail_last(status.as_u16().to_string(), "the event was not stored".into());
        }
    }

    fn count_idempotency(&self, result: &'static str) {
        let route = Name(self.route().name.clone());
        self.log.shared.metrics.idempotency.get_or_create(&RouteResultLabels { route, result }).inc();
    }
}

/// The answer, with the request id and the extra headers; the logging phase runs when its body
/// is over.
fn respond(
    mut ctx: RequestCtx<'_>,
    result: Result<Response<ResponseBody>, GatewayError>,
) -> Response<ResponseBody> {
    // The status the metrics and the access log record: the error's own for a gRPC-rendered
    // error (which travels in a 200), so 5xx alerts see gateway failures on gRPC traffic too.
    let mut logged_status = None;
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            // A gateway error (502, 503, 504 …) is a failure to the client: a key it holds is
            // freed, so the client's retry can succeed, as after an upstream 5xx.
            if ctx.claim.is_some() {
                ctx.release_claim();
            }
            let id = ctx.request_id.to_str().unwrap_or_default();
            static FAILED: LogBudget = LogBudget::new();
            if e.status().is_server_error()
                && let Some(left_out) = FAILED.admit()
            {
                tracing::warn!(request_id = id, error = %e, left_out, "request failed");
            }
            // The route's backend decides the form; before routing, the request's kind does.
            if ctx.route.map_or(ctx.grpc, |r| r.backend.renders_grpc(ctx.grpc)) {
                logged_status = Some(e.status().as_u16());
                if let Some(g) = &ctx.log.grpc {
                    g.set(e.grpc_code());
                }
                let mut res = e.to_grpc_response(id).map(|()| ResponseBody::empty());
                if let Some(mode) = ctx.grpc_web {
                    res.headers_mut().insert(header::CONTENT_TYPE, bridgehead_grpc::web::content_type(mode));
                }
                res
            } else {
                e.to_response(id).map(ResponseBody::full)
            }
        }
    };
    res.headers_mut().insert(X_REQUEST_ID.clone(), ctx.request_id);
    for (name, value) in ctx.extra {
        if let Some(name) = name {
            res.headers_mut().insert(name, value);
        }
    }
    ctx.log.status = logged_status.unwrap_or_else(|| res.status().as_u16());
    // A trailers-only gRPC answer carries its status in the head.
    if let Some(g) = &ctx.log.grpc
        && let Some(code) = bridgehead_http::grpc::grpc_status(res.headers())
    {
        g.set(code);
    }
    // Room held for the request body is given back now; the logging record keeps what the
    // response holds.
    drop(ctx.request_held);
    let (parts, body) = res.into_parts();
    Response::from_parts(parts, body.on_finish(Box::new(ctx.log)))
}

/// Routes the request, then hands it to the route's backend.
async fn pipeline(
    ctx: &mut RequestCtx<'_>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let parts = route(ctx, req)?;
    match &ctx.route().backend {
        Backend::Proxy(_) => proxy(ctx, parts).await,
        Backend::OAuth => oauth_server(ctx, parts).await,
        Backend::Webhook(r) => webhook(ctx, parts, r.clone()).await,
        Backend::Intake(d) => intake(ctx, parts, d.clone()).await,
        Backend::Transcode(t) => transcode(ctx, parts, t.clone()).await,
        Backend::Soap(s) => soap(ctx, parts, s.clone()).await,
    }
}

/// The phases a route that reads its request whole runs first: authenticate, rate limit, then
/// idempotency (a stored answer replays), then the body. `Err` is the replay.
async fn admitted_body(
    ctx: &mut RequestCtx<'_>,
    parts: &mut http::request::Parts,
) -> Result<Result<Bytes, Response<ResponseBody>>, GatewayError> {
    authenticate(ctx, parts).await?;
    rate_limit(ctx, parts).await?;
    if let Some(replay) = idempotency(ctx, parts).await? {
        return Ok(Err(replay));
    }
    Ok(Ok(whole_body(ctx).await?))
}

/// The SOAP backend: authentication, rate limits and idempotency as on a proxy route, then the
/// JSON request (read whole) becomes a SOAP call to the service's upstream, and its answer JSON
/// again (see `bridgehead_soap::route`).
async fn soap(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    s: Arc<bridgehead_soap::route::SoapRoute>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let body = match admitted_body(ctx, &mut parts).await? {
        Ok(body) => body,
        Err(replay) => return Ok(replay),
    };
    let shared = ctx.log.shared.clone();
    let id = ctx.request_id.to_str().unwrap_or_default().to_owned();
    let routed = ctx.target.route_path.clone().filter(|_| ctx.without_parameters);
    let path = routed.as_deref().unwrap_or(parts.uri.path());
    let start = ctx.span_start();
    let prepared = match s.prepare(&parts.method, path, &body, &id) {
        bridgehead_soap::route::Step::Call(p) => p,
        bridgehead_soap::route::Step::Answer(res) => {
            ctx.span_refused(start, "soap.request", res.status());
            // Answered here: nothing was sent, the key is free again.
            ctx.release_claim();
            return Ok(res.map(ResponseBody::full));
        }
    };
    ctx.span_end(start, "soap.request", Kind::Internal, None, Vec::new);
    // The request id, `X-Forwarded-*` and the identity headers the route's authenticators set
    // (`X-Consumer-Id`, claims); none of the client's own headers.
    let mut headers = prepared.headers.clone();
    forwarded(ctx, &mut headers);
    for name in ctx.rt.auth.protected() {
        for v in parts.headers.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let upstream = s.service.upstream.clone();
    let mut tries = TryLog::new(
        &mut ctx.log.target,
        &mut ctx.log.in_flight,
        ctx.log.trace.as_deref_mut(),
        ctx.log.grpc.as_ref(),
        ctx.claim.as_mut(),
    );
    let res = bridgehead_soap::route::send(&upstream, &shared.metrics, &prepared, headers, &mut tries).await;
    drop(tries);
    let res = res?;
    let start = ctx.span_start();
    let res = s.respond(&prepared, res, &id).await;
    ctx.span_end(start, "soap.response", Kind::Internal, None, Vec::new);
    let start = ctx.claim.as_ref().and_then(|_| ctx.span_start());
    let res = store_answer(ctx, res).await;
    ctx.span_end(start, "idempotency.store", Kind::Internal, None, Vec::new);
    Ok(res)
}

/// The transcoding backend: authentication and rate limits as on a proxy route, then the JSON
/// request (read whole, within `server.limits.max_body`) becomes a gRPC call to the service's
/// upstream, and its answer JSON again (see `bridgehead_grpc::transcode`).
async fn transcode(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    t: Arc<bridgehead_grpc::transcode::Transcoder>,
) -> Result<Response<ResponseBody>, GatewayError> {
    if ctx.grpc {
        // A gRPC call no gRPC route takes (see `Router::find`): UNIMPLEMENTED, as gRPC.
        return Err(GatewayError::NoRoute {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        });
    }
    let body = match admitted_body(ctx, &mut parts).await? {
        Ok(body) => body,
        Err(replay) => return Ok(replay),
    };
    let shared = ctx.log.shared.clone();
    forwarded(ctx, &mut parts.headers);
    let id = ctx.request_id.to_str().unwrap_or_default().to_owned();
    let upstream = t.service.upstream.clone();
    let timeout = upstream.timeouts.request.get();
    // The path the route matched: without `;` parameters when it matched that way.
    let routed = ctx.target.route_path.clone().filter(|_| ctx.without_parameters);
    let path = routed.as_deref().unwrap_or(parts.uri.path());
    let start = ctx.span_start();
    let mut prepared =
        match t.prepare(&parts.method, path, parts.uri.query(), &parts.headers, &body, timeout, &id) {
            Ok(p) => p,
            Err(refused) => {
                ctx.span_refused(start, "transcode.request", refused.status());
                // Refused before the upstream: nothing happened, the key is free again.
                ctx.release_claim();
                return Ok(refused.map(ResponseBody::full));
            }
        };
    ctx.span_end(start, "transcode.request", Kind::Internal, None, || {
        vec![
            ("rpc.system", Value::from("grpc")),
            ("rpc.service", Value::Shared(prepared.labels.0.clone())),
            ("rpc.method", Value::Shared(prepared.labels.1.clone())),
        ]
    });
    let call = GrpcCall::new(prepared.labels.0.clone(), prepared.labels.1.clone());
    let code = call.code.clone();
    ctx.log.grpc = Some(call);
    let mut tries = TryLog::new(
        &mut ctx.log.target,
        &mut ctx.log.in_flight,
        ctx.log.trace.as_deref_mut(),
        ctx.log.grpc.as_ref(),
        ctx.claim.as_mut(),
    );
    let headers = std::mem::take(&mut prepared.headers);
    let res = bridgehead_grpc::call::send(
        &upstream,
        &shared.metrics,
        &prepared.path,
        headers,
        prepared.body.clone(),
        &mut tries,
    )
    .await
    .inspect_err(|e| code.store(e.grpc_code() + 1, Relaxed));
    drop(tries);
    let res = res?;
    let start = ctx.span_start();
    let res = t.respond(prepared, res, timeout, &id, &code).await;
    ctx.span_end(start, "transcode.response", Kind::Internal, None, Vec::new);
    let start = ctx.claim.as_ref().and_then(|_| ctx.span_start());
    let res = store_answer(ctx, res).await;
    ctx.span_end(start, "idempotency.store", Kind::Internal, None, Vec::new);
    Ok(res)
}

/// The transcoded answer to a request that claimed an idempotency key, stored as
/// `store_response` stores a proxied one: a unary answer whole (within `max_response_body`), a
/// stream's head alone (the upstream acted; repeats get the head with an empty body). An
/// answer the gateway made because the call failed after it was sent keeps the key, without a
/// body, as a proxied answer that broke off does: the server may have acted.
async fn store_answer(ctx: &mut RequestCtx<'_>, res: Response<ResponseBody>) -> Response<ResponseBody> {
    let Some(claim) = ctx.claim.take() else { return res };
    let policy = ctx.route().idempotency.as_ref().expect("a claim comes from the route's policy");
    if res.extensions().get::<bridgehead_http::problem::FailedAfterSending>().is_some() {
        claim.complete_without_body(res.status(), res.headers()).await;
        return res;
    }
    if !policy.stores(res.status()) {
        ctx.claim = Some(claim);
        ctx.release_claim();
        return res;
    }
    match res.body().whole().filter(|b| b.len() as u64 <= policy.max_response_body) {
        Some(bytes) => claim.complete(res.status(), res.headers(), bytes).await,
        None => claim.complete_without_body(res.status(), res.headers()).await,
    }
    res
}

/// The webhook backend: the body is read up to the receiver's limit, then the receiver checks,
/// stores and answers (see `bridgehead_webhooks::inbound`).
async fn webhook(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    receiver: Arc<bridgehead_webhooks::inbound::Receiver>,
) -> Result<Response<ResponseBody>, GatewayError> {
    // What the destination will read as the gateway's word is the gateway's: hop-by-hop fields
    // and identity headers out (as on a proxy route), the sender's X-Forwarded-* replaced.
    headers::remove_hop_by_hop(&mut parts.headers, None);
    crate::auth::strip_identity(&mut parts.headers, ctx.rt.auth.protected());
    headers::replace_forwarded(&mut parts.headers, &ctx.conn.client_ip, ctx.conn.tls);
    let shared = ctx.log.shared.clone();
    let (store, body) = webhook_body(ctx, &parts, &shared, receiver.max_body).await?;
    let id = ctx.request_id.to_str().unwrap_or_default().to_owned();
    let now = bridgehead_http::clock::unix_ms();
    let span = ctx.handoff_start(&mut parts.headers);
    let res = receiver.receive(store, &shared.metrics, &parts.headers, body, &id, now).await;
    ctx.handoff_end(span, &receiver.destination, res.status());
    Ok(stored(&shared, res))
}

/// The state store and the body of a webhook request, read up to `max_body` (over it: not
/// read further, for the caller to refuse). Without a store the path has no route.
async fn webhook_body<'s>(
    ctx: &mut RequestCtx<'_>,
    parts: &http::request::Parts,
    shared: &'s Arc<crate::runtime::Shared>,
    max_body: u64,
) -> Result<(&'s bridgehead_state::Store, bridgehead_webhooks::inbound::Body), GatewayError> {
    use bridgehead_webhooks::inbound::Body;
    let BodyState::Streaming(incoming) = std::mem::replace(&mut ctx.body, BodyState::Taken) else {
        unreachable!("set by the route phase")
    };
    let Some(store) = shared.store.as_ref() else {
        return Err(GatewayError::NoRoute {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        });
    };
    let charge = Charge::Now(&shared.buffers, &mut ctx.request_held);
    match read_body(incoming, max_body, &ctx.stats, false, charge).await {
        Ok(b) => Ok((store, Body::Whole(b))),
        Err(GatewayError::BodyTooLarge { .. }) => Ok((store, Body::TooLarge)),
        Err(e) => Err(e),
    }
}

/// A webhook backend's answer; a 202 (something stored) wakes the delivery worker.
fn stored(shared: &crate::runtime::Shared, res: Response<bytes::Bytes>) -> Response<ResponseBody> {
    if res.status() == http::StatusCode::ACCEPTED {
        shared.webhook_wake.notify_one();
    }
    res.map(ResponseBody::full)
}

/// The outbound dispatcher's intake: the body is read up to its limit, then the dispatcher
/// checks, stores and answers (see `bridgehead_webhooks::outbound`). The intake's
/// authenticators run first: the consumer they admit is the publisher.
async fn intake(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    dispatcher: Arc<bridgehead_webhooks::outbound::Dispatcher>,
) -> Result<Response<ResponseBody>, GatewayError> {
    // The publisher is who the intake's authenticators admit, as on a proxy route: its
    // authenticator and consumer together (two authenticators may know consumers of one name).
    let identity = authenticate(ctx, &mut parts).await?;
    let shared = ctx.log.shared.clone();
    let (store, body) = webhook_body(ctx, &parts, &shared, dispatcher.max_body).await?;
    let id = ctx.request_id.to_str().unwrap_or_default().to_owned();
    let now = bridgehead_http::clock::unix_ms();
    let publisher = identity.map(|i| format!("{}:{}", i.authenticator, i.consumer));
    let span = ctx.handoff_start(&mut parts.headers);
    let context = ctx.log.trace.as_ref().and_then(|_| parts.headers.get(&trace::TRACEPARENT)).cloned();
    let publication = bridgehead_webhooks::outbound::Publication {
        headers: &parts.headers,
        body,
        publisher: publisher.as_deref(),
        request_id: &id,
        now_ms: now,
        trace_context: context.as_ref(),
    };
    let res = dispatcher.publish(store, &shared.metrics, publication).await;
    ctx.handoff_end(span, "outbound", res.status());
    Ok(stored(&shared, res))
}

/// The OAuth backend: the built-in authorization server answers its endpoints and documents.
async fn oauth_server(
    ctx: &mut RequestCtx<'_>,
    parts: http::request::Parts,
) -> Result<Response<ResponseBody>, GatewayError> {
    let BodyState::Streaming(body) = std::mem::replace(&mut ctx.body, BodyState::Taken) else {
        unreachable!("set by the route phase")
    };
    let Some(oauth) = ctx.log.shared.oauth.load_full() else {
        // The server is configured in this generation but not running (yet): as if absent.
        return Err(GatewayError::NoRoute {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        });
    };
    let req = Request::from_parts(parts, body);
    Ok(oauth.handle(req, ctx.conn.client.ip()).await.map(ResponseBody::full))
}

/// The proxy backend: every phase after routing, in order.
async fn proxy(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
) -> Result<Response<ResponseBody>, GatewayError> {
    authenticate(ctx, &mut parts).await?;
    rate_limit(ctx, &parts).await?;
    if let Some(replay) = idempotency(ctx, &parts).await? {
        return Ok(replay);
    }
    let payload = match ctx.grpc_web {
        Some(mode) => grpc_web_request(ctx, &mut parts, mode).await?,
        None => request_body(ctx, &parts).await?,
    };
    let (outgoing, sticky) = upstream_request_filter(ctx, parts, payload)?;
    let res = send(ctx, outgoing, sticky).await?;
    let res = response_filter(ctx, res)?;
    if let Some(mode) = ctx.grpc_web {
        let code = ctx.log.grpc.as_ref().map(|g| g.code.clone());
        return Ok(grpc_web_response(res, mode, code));
    }
    // The answer stored for repeats of the key: read whole, then written.
    let start = ctx.claim.as_ref().and_then(|_| ctx.span_start());
    let res = store_response(ctx, res).await;
    ctx.span_end(start, "idempotency.store", Kind::Internal, res.as_ref().err(), Vec::new);
    res
}

/// A gRPC-Web request as gRPC: the body read whole (within `server.limits.max_body`) and
/// decoded, the headers of a gRPC call.
async fn grpc_web_request(
    ctx: &mut RequestCtx<'_>,
    parts: &mut http::request::Parts,
    mode: bridgehead_grpc::web::Mode,
) -> Result<Payload, GatewayError> {
    let body = whole_body(ctx).await?;
    let body =
        bridgehead_grpc::web::request(mode, &mut parts.headers, body).map_err(GatewayError::BadRequest)?;
    Ok(Payload::Replayable(body))
}

/// The request body read whole, within `server.limits.max_body` and `server.limits.max_buffered`
/// (a backend that needs all of it: transcoding, gRPC-Web).
async fn whole_body(ctx: &mut RequestCtx<'_>) -> Result<Bytes, GatewayError> {
    let incoming = match std::mem::replace(&mut ctx.body, BodyState::Taken) {
        BodyState::Streaming(incoming) => incoming,
        // Read by the idempotency phase.
        BodyState::Buffered(b) => return Ok(b),
        BodyState::Taken => return Ok(Bytes::new()),
    };
    let max_body = ctx.rt.loaded.config.server.limits.max_body.get();
    let shared = ctx.log.shared.clone();
    read_body(incoming, max_body, &ctx.stats, false, Charge::Now(&shared.buffers, &mut ctx.request_held))
        .await
}

/// `X-Forwarded-*` and the request id, as every request to an upstream carries them.
fn forwarded(ctx: &RequestCtx<'_>, headers: &mut http::HeaderMap) {
    headers::add_forwarded(headers, &ctx.conn.client_ip, ctx.conn.tls, ctx.target.forward_host.clone());
    headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
}

/// A gRPC answer as gRPC-Web: its messages, then its trailers as the last frame.
fn grpc_web_response(
    res: Response<UpstreamBody>,
    mode: bridgehead_grpc::web::Mode,
    code: Option<Arc<std::sync::atomic::AtomicU32>>,
) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    if parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        parts.headers.insert(header::CONTENT_TYPE, bridgehead_grpc::web::content_type(mode));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        ResponseBody::made(bridgehead_grpc::web::WebBody::new(body, mode).with_code(code)),
    )
}

/// Where a request is addressed, in canonical form.
#[derive(Default)]
struct RequestTarget {
    /// Lower case, no port, no trailing dot, when that differs from the authority's host.
    canonical_host: Option<String>,
    /// The canonical host with the port as sent: forwarded as `Host` and `X-Forwarded-Host`;
    /// `None` for an HTTP/1.0 request without `Host`.
    authority: Option<Authority>,
    /// `Host` as forwarded (and `X-Forwarded-Host`): the request's own value when it was already
    /// canonical (a shared clone, nothing allocated), else made from `authority`. Always set
    /// again before the request leaves, whatever `Connection` named.
    forward_host: Option<HeaderValue>,
    /// The path routes are matched against when it differs from the canonical path: without
    /// `;` segment parameters (`/secure;x/y` is routed as `/secure/y`, as a servlet container
    /// maps it).
    route_path: Option<String>,
}

impl RequestTarget {
    /// The canonical host: lower case, no port, no trailing dot.
    fn host(&self) -> Option<&str> {
        self.canonical_host.as_deref().or_else(|| self.authority.as_ref().map(Authority::host))
    }
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

/// The most specific route for the canonical host and path. A path with `;` parameters
/// is matched both without them (as servlet containers map it) and as sent (as most other
/// servers read it). When the two pick different routes, the one that authenticates wins, so
/// neither reading reaches a protected resource through a public route; two routes that both
/// authenticate make the path ambiguous (400). Returns the route, and whether it matched the
/// parameter-free path.
fn find_route<'r>(
    rt: &'r Runtime,
    req: &Request<Incoming>,
    host: Option<&str>,
    without_parameters: Option<&str>,
) -> Result<(&'r Route, bool), GatewayError> {
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
            RouteResult::Found(r) => Ok((r, false)),
            other => Err(refuse(other)),
        };
    };
    match (find(stripped), find(raw)) {
        (RouteResult::Found(a), RouteResult::Found(b)) if !std::ptr::eq(a, b) => {
            match (a.auth.is_some(), b.auth.is_some()) {
                (false, true) => Ok((b, false)),
                (true, true) => Err(GatewayError::BadRequest(format!(
                    "the path matches route `{}` without its `;` parameters and route `{}` with them; send it without parameters",
                    a.name, b.name
                ))),
                _ => Ok((a, true)),
            }
        }
        (RouteResult::Found(a), _) => Ok((a, true)),
        (_, RouteResult::Found(b)) => Ok((b, false)),
        (other, _) => Err(refuse(other)),
    }
}

/// route: finds the route (see [`find_route`]), notes what it allows the client to upgrade
/// to, and splits the request: its body is kept in the context.
fn route(ctx: &mut RequestCtx<'_>, mut req: Request<Incoming>) -> Result<http::request::Parts, GatewayError> {
    let (route, without_parameters) =
        find_route(ctx.rt, &req, ctx.target.host(), ctx.target.route_path.as_deref())?;
    ctx.route = Some(route);
    ctx.without_parameters = without_parameters;
    ctx.log.route = Some(route.name.clone());
    ctx.log.duration = Some(route.duration.clone());
    ctx.log.upstream = route.upstream().map(|u| u.name.clone());
    if route.matched.grpc_service.is_some()
        && matches!(route.backend, Backend::Proxy(_))
        && let Some(mode) = bridgehead_grpc::web::mode(req.method(), req.headers())
    {
        ctx.grpc_web = Some(mode);
        ctx.grpc = true;
    }
    if ctx.grpc && matches!(route.backend, Backend::Proxy(_)) && route.matched.grpc_service.is_some() {
        ctx.log.grpc = GrpcCall::from_path(req.uri().path());
    }
    // Only protocols the route allows are switched to; any other upgrade (h2c above all) is
    // served as plain HTTP/1.1.
    ctx.upgrade = headers::allowed_upgrade(req.version(), req.headers(), &route.upgrades);
    if ctx.upgrade.is_some() {
        ctx.client_upgrade = Some(hyper::upgrade::on(&mut req));
    }
    let (parts, body) = req.into_parts();
    ctx.body = BodyState::Streaming(body);
    Ok(parts)
}

/// authenticate: hop-by-hop fields and identity headers out first (so that `Connection:
/// x-consumer-id` cannot remove what the gateway sets), then the route's authenticators. The
/// identity they admitted, if the route has any.
async fn authenticate(
    ctx: &mut RequestCtx<'_>,
    parts: &mut http::request::Parts,
) -> Result<Option<crate::auth::Identity>, GatewayError> {
    headers::remove_hop_by_hop(&mut parts.headers, ctx.upgrade.as_ref());
    crate::auth::strip_identity(&mut parts.headers, ctx.rt.auth.protected());
    if let Some(auth) = &ctx.route().auth {
        let start = ctx.span_start();
        // Fetches the authenticators make (JWKS, introspection) are children of this span (of
        // the request span when the request is not recorded).
        let span = start.map(|at| (SpanId::random(), at));
        let outer = span.and_then(|(id, _)| trace::set_current_span(id));
        let result = auth.authenticate(parts, ctx.conn, &ctx.log.shared.metrics).await;
        if let Some(outer) = outer {
            trace::set_current_span(outer);
        }
        ctx.span_end_as(span, "authenticate", Kind::Internal, result.as_ref().err(), || match &result {
            Ok(i) => vec![
                ("bridgehead.authenticator", Value::Shared(i.authenticator.clone())),
                ("bridgehead.consumer", Value::Shared(i.consumer.clone())),
            ],
            Err(_) => Vec::new(),
        });
        let identity = result?;
        ctx.log.consumer = Some(identity.consumer.clone());
        return Ok(Some(identity));
    }
    Ok(None)
}

/// rate_limit: the route's policies, in order; their headers go on every answer.
async fn rate_limit(ctx: &mut RequestCtx<'_>, parts: &http::request::Parts) -> Result<(), GatewayError> {
    if let Some(limits) = &ctx.route().rate_limit {
        let start = ctx.span_start();
        let result = limits.check(&ctx.facts(&parts.headers)).await;
        ctx.span_end(start, "rate_limit", Kind::Internal, result.as_ref().err(), Vec::new);
        ctx.extra = result?;
    }
    Ok(())
}

/// idempotency: a request with a key (on a route with the policy) has its body read and
/// fingerprinted, then claims the key, or gets the stored answer. After `rate_limit`: a
/// refused request claims no key.
async fn idempotency(
    ctx: &mut RequestCtx<'_>,
    parts: &http::request::Parts,
) -> Result<Option<Response<ResponseBody>>, GatewayError> {
    let Some(policy) = ctx.route().idempotency.as_ref().filter(|p| p.applies_to(&parts.method)) else {
        return Ok(None);
    };
    if ctx.grpc {
        // A gRPC answer ends in trailers, which the stored response format does not keep: a
        // keyed call (or any call, where keys are required) is refused rather than stored wrong.
        if policy.required || parts.headers.contains_key(&IDEMPOTENCY_KEY) {
            return Err(GatewayError::IdempotencyUnsupported);
        }
        return Ok(None);
    }
    let Some(key) = policy.key(&parts.headers)? else { return Ok(None) };
    let limit = policy.max_request_body.min(ctx.rt.loaded.config.server.limits.max_body.get());
    let BodyState::Streaming(incoming) = std::mem::replace(&mut ctx.body, BodyState::Taken) else {
        unreachable!("the body is read here first")
    };
    let charge = Charge::Now(&ctx.log.shared.buffers, &mut ctx.request_held);
    let bytes = read_body(incoming, limit, &ctx.stats, true, charge).await?;
    let fp = fingerprint(&parts.method, parts.uri.path_and_query().map_or("/", |pq| pq.as_str()), &bytes);
    // The store's round trip, not the client's upload.
    let start = ctx.span_start();
    let result = policy.begin(ctx.log.consumer.as_deref(), key, fp).await;
    let outcome = match &result {
        Ok(Begin::Run(_)) => "started",
        Ok(Begin::Replay(_)) => "replayed",
        Err(GatewayError::IdempotencyInFlight) => "in_flight",
        Err(GatewayError::IdempotencyMismatch) => "mismatch",
        Err(_) => "unavailable",
    };
    ctx.count_idempotency(outcome);
    ctx.span_end(start, "idempotency", Kind::Internal, result.as_ref().err(), || {
        vec![("bridgehead.idempotency.result", Value::from(outcome))]
    });
    match result? {
        Begin::Run(c) => ctx.claim = Some(c),
        Begin::Replay(res) => return Ok(Some(res.map(ResponseBody::full))),
    }
    ctx.body = BodyState::Buffered(bytes);
    Ok(None)
}

/// request_body: a body that may have to be sent again is read whole (empty, already read, or
/// small enough to read now under `retry.max_body` and `server.limits.max_buffered`); any other
/// body streams, once.
async fn request_body(
    ctx: &mut RequestCtx<'_>,
    parts: &http::request::Parts,
) -> Result<Payload, GatewayError> {
    let max_body = ctx.rt.loaded.config.server.limits.max_body.get();
    let retry = ctx.upstream().retry.as_ref().filter(|_| ctx.may_send_again(&parts.method, &parts.headers));
    Ok(match std::mem::replace(&mut ctx.body, BodyState::Taken) {
        BodyState::Buffered(b) => Payload::Replayable(b),
        BodyState::Taken => Payload::Replayable(Bytes::new()),
        BodyState::Streaming(incoming) if incoming.is_end_stream() => Payload::Replayable(Bytes::new()),
        // Room in `server.limits.max_buffered` is taken first; without it the body streams.
        BodyState::Streaming(incoming)
            if retry.is_some_and(|r| {
                incoming.size_hint().exact().is_some_and(|n| {
                    n <= r.max_body && ctx.log.shared.buffers.cover(n, &mut ctx.request_held)
                })
            }) =>
        {
            Payload::Replayable(read_body(incoming, max_body, &ctx.stats, false, Charge::No).await?)
        }
        BodyState::Streaming(inner) => {
            Payload::Stream(RequestBody::Stream { inner, limit: max_body, stats: ctx.stats.clone() })
        }
    })
}

/// An idempotent request, or one carrying an `Idempotency-Key`: any failure `retry.on` names
/// may be retried.
fn idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    RetryPolicy::request_is_retryable(method, headers.contains_key(&IDEMPOTENCY_KEY))
}

/// Whether a 101 switches to a protocol the client offered (`offered`, what the route allows).
fn switch_allowed(offered: Option<&HeaderValue>, response: &http::HeaderMap) -> bool {
    offered.is_some_and(|o| headers::upgrade_accepted(o, response))
}

/// upstream_request_filter, the part that is the same for every try: the path after
/// `strip_prefix`, `X-Forwarded-*` and `Via`, the canonical `Host`, the request id. Returns the
/// request for the sender and the sticky key of its first try.
fn upstream_request_filter(
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    body: Payload,
) -> Result<(Outgoing, Option<Vec<u8>>), GatewayError> {
    let upstream = ctx.upstream();
    let sticky = upstream.sticky.as_ref().and_then(|k| {
        let facts = ctx.facts(&parts.headers);
        facts.has(k).then(|| facts.key(k).into_owned())
    });
    match &ctx.target.forward_host {
        Some(v) => parts.headers.insert(header::HOST, v.clone()),
        None => parts.headers.remove(header::HOST),
    };
    forwarded(ctx, &mut parts.headers);
    if ctx.grpc
        && let Some(asked) = parts.headers.get("grpc-timeout")
    {
        // The client's deadline, at most the upstream's request timeout (a malformed one is
        // replaced by it). A call without one keeps none: a long stream is not cut short.
        let cap = upstream.timeouts.request.get();
        let asked = bridgehead_grpc::call::parse_grpc_timeout(asked.as_bytes()).map_or(cap, |a| a.min(cap));
        parts.headers.insert("grpc-timeout", bridgehead_grpc::call::grpc_timeout(asked));
    }
    let routed = ctx.target.route_path.as_deref().filter(|_| ctx.without_parameters);
    let path_and_query = upstream_path(&parts.uri, ctx.route().strip_prefix.as_deref(), routed)?;
    let outgoing = Outgoing { method: parts.method, path_and_query, headers: parts.headers, body };
    Ok((outgoing, sticky))
}

/// send: the upstream's sender (`upstream_peer`, the per-try filter, the exchange and the
/// retry decision; see [`bridgehead_upstream::send`]). A request is sent again only if it is safe
/// to (idempotent, or carries a key; a gRPC call only after a connect error or a gRPC status
/// `retry.on` names) and its body is replayable.
async fn send(
    ctx: &mut RequestCtx<'_>,
    outgoing: Outgoing,
    sticky: Option<Vec<u8>>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let upstream = ctx.upstream();
    let retry = upstream.retry.as_ref().filter(|_| ctx.may_send_again(&outgoing.method, &outgoing.headers));
    if let Some(r) = retry {
        r.count_request();
    }
    let retry = retry.filter(|_| matches!(outgoing.body, Payload::Replayable(_)));
    let idempotent = idempotent(&outgoing.method, &outgoing.headers);
    let offered = ctx.upgrade.as_ref();
    let accept_switch = |res: &http::HeaderMap| switch_allowed(offered, res);
    let sender = Sender {
        upstream,
        metrics: &ctx.log.shared.metrics,
        sticky: sticky.as_deref(),
        retry,
        classify: ctx.classify(),
        idempotent,
        accept_switch: &accept_switch,
        stats: Some(&ctx.stats),
        max_body: ctx.rt.loaded.config.server.limits.max_body.get(),
    };
    let mut tries = TryLog::new(
        &mut ctx.log.target,
        &mut ctx.log.in_flight,
        ctx.log.trace.as_deref_mut(),
        ctx.log.grpc.as_ref(),
        ctx.claim.as_mut(),
    );
    sender.send(outgoing, &mut tries).await
}

/// What the proxy hears of the sender's tries: the target for the log, the moment the request
/// leaves for the idempotency claim.
struct TryLog<'c> {
    target: &'c mut Option<Arc<str>>,
    in_flight: &'c mut Option<InFlight>,
    claim: Option<&'c mut Claim>,
    /// The request's trace: each try is a client span, and carries it as `traceparent`.
    trace: Option<&'c mut Trace>,
    /// The gRPC service and method of the call, for the try spans' `rpc.*` attributes.
    rpc: Option<(Arc<str>, Arc<str>)>,
    /// The span of the try under way.
    span: Option<TrySpan>,
}

/// A request dropped while a try was under way (the client went away): the try's span is
/// still recorded, as cancelled, since the upstream was told it is its parent.
impl Drop for TryLog<'_> {
    fn drop(&mut self) {
        if self.span.is_some() {
            self.try_ended(&TryEnd { outcome: Some("cancelled"), status: None, error: None, failed: true });
        }
    }
}

/// The host and port of a target URL (`scheme://host[:port]`, checked when the config was
/// loaded), the port the scheme's when none is written.
fn host_port(target: &str) -> (&str, u16) {
    let (scheme, rest) = target.split_once("://").unwrap_or(("http", target));
    // A target may end in `/`.
    let authority = rest.split('/').next().unwrap_or(rest);
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (rest, None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    (host, port.and_then(|p| p.parse().ok()).unwrap_or(default))
}

/// A try's span until the try is over.
struct TrySpan {
    id: SpanId,
    start: u64,
    name: std::borrow::Cow<'static, str>,
    attributes: Attributes,
}

impl<'c> TryLog<'c> {
    fn new(
        target: &'c mut Option<Arc<str>>,
        in_flight: &'c mut Option<InFlight>,
        trace: Option<&'c mut Trace>,
        grpc: Option<&GrpcCall>,
        claim: Option<&'c mut Claim>,
    ) -> Self {
        let rpc = grpc
            .filter(|_| trace.as_ref().is_some_and(|t| t.sampled))
            .map(|g| (g.service.clone(), g.method.clone()));
        TryLog { target, in_flight, claim, trace, rpc, span: None }
    }
}

impl Observer for TryLog<'_> {
    fn try_started(
        &mut self,
        req: &mut Request<RequestBody>,
        upstream: &Arc<str>,
        target: &Arc<str>,
        attempt: u32,
    ) {
        let Some(trace) = self.trace.as_deref_mut() else { return };
        let id = SpanId::random();
        // The try's own span is the upstream's parent, sampled or not.
        trace.inject(id, req.headers_mut());
        if !trace.sampled {
            return;
        }
        let method = trace::method_value(req.method());
        let mut attributes = Vec::with_capacity(12);
        attributes.push(("http.request.method", method.clone()));
        let base = target.trim_end_matches('/');
        attributes.push(("url.full", Value::from(trace::bounded(format!("{base}{}", req.uri().path())))));
        attributes.push(("bridgehead.upstream", Value::Shared(upstream.clone())));
        let (host, port) = host_port(target);
        attributes.push(("server.address", Value::from(host.to_owned())));
        attributes.push(("server.port", Value::Int(i64::from(port))));
        if attempt > 1 {
            attributes.push(("http.request.resend_count", Value::Int(i64::from(attempt - 1))));
        }
        let name = match (&self.rpc, &method) {
            (Some((service, rpc_method)), _) => {
                attributes.push(("rpc.system", Value::from("grpc")));
                attributes.push(("rpc.service", Value::Shared(service.clone())));
                attributes.push(("rpc.method", Value::Shared(rpc_method.clone())));
                format!("{service}/{rpc_method}").into()
            }
            (None, Value::Str(m)) if m != "_OTHER" => m.clone(),
            _ => "HTTP".into(),
        };
        self.span = Some(TrySpan { id, start: trace.now(), name, attributes });
    }

    fn try_ended(&mut self, end: &TryEnd<'_>) {
        let (Some(trace), Some(span)) = (self.trace.as_deref_mut(), self.span.take()) else { return };
        let mut attributes = span.attributes;
        if let Some(status) = end.status {
            attributes.push(("http.response.status_code", Value::Int(i64::from(status.as_u16()))));
        }
        if let Some(outcome) = end.outcome {
            attributes.push(("bridgehead.outcome", Value::from(outcome)));
        }
        let failed = end
            .error
            .map(|e| (e.status().as_u16().to_string(), e.to_string()))
            .or_else(|| {
                let status = end.status.filter(|s| s.is_client_error() || s.is_server_error())?;
                Some((status.as_u16().to_string(), format!("the upstream answered {}", status.as_u16())))
            })
            .or_else(|| {
                // A failed gRPC call in an HTTP 200 (its status in the head).
                let outcome = end.outcome.filter(|_| end.failed)?;
                Some((outcome.to_owned(), format!("the try failed: {outcome}")))
            });
        let (status, message) = match failed {
            Some((error_type, message)) => {
                attributes.push(("error.type", Value::from(error_type)));
                (trace::Status::Error, Some(message))
            }
            None => (trace::Status::Unset, None),
        };
        trace.push(SpanRecord {
            span_id: span.id,
            parent: Some(trace.span_id),
            name: span.name,
            kind: Kind::Client,
            start: span.start,
            end: trace.now(),
            status,
            message,
            attributes,
        });
    }

    fn target(&mut self, url: &Arc<str>, in_flight: InFlight) {
        *self.target = Some(url.clone());
        *self.in_flight = Some(in_flight);
    }

    fn retrying(&mut self, wait: std::time::Duration) {
        *self.in_flight = None;
        // The span of the try that failed is the last one recorded.
        if let Some(trace) = self.trace.as_deref_mut().filter(|t| t.sampled) {
            trace.annotate_last("bridgehead.retry.backoff_ms", Value::Int(wait.as_millis() as i64));
        }
    }

    fn sending(&mut self) {
        if let Some(c) = self.claim.as_mut() {
            c.sent();
        }
    }
}

/// response_filter: hop-by-hop fields out, `Via` in; a 101 opens a tunnel only to a protocol
/// the client asked for and the route allows: a 101 to anything else would carry unrouted,
/// unauthenticated requests to the upstream (502).
fn response_filter(
    ctx: &mut RequestCtx<'_>,
    mut res: Response<UpstreamBody>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        headers::remove_hop_by_hop(res.headers_mut(), None);
        headers::add_via(res.headers_mut());
        return Ok(res);
    }
    let Some(client_upgrade) =
        ctx.client_upgrade.take().filter(|_| switch_allowed(ctx.upgrade.as_ref(), res.headers()))
    else {
        let upstream = ctx.upstream().name.to_string();
        tracing::warn!(upstream, "upstream switched protocols without an allowed upgrade request");
        return Err(GatewayError::UpstreamFailed {
            upstream,
            reason: "it switched protocols (101) although the request asked for no upgrade it may make",
        });
    };
    let upstream_upgrade = hyper::upgrade::on(&mut res);
    tokio::spawn(async move {
        if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
        }
    });
    headers::add_via(res.headers_mut());
    Ok(res)
}

/// store_response: the answer to a request that claimed an idempotency key is stored (read
/// whole within `max_response_body` and another `timeouts.request`) and the key completed; an
/// answer the policy does not store frees the key.
async fn store_response(
    ctx: &mut RequestCtx<'_>,
    res: Response<UpstreamBody>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let Some(claim) = ctx.claim.take() else { return Ok(res.map(ResponseBody::upstream)) };
    let policy = ctx.route().idempotency.as_ref().expect("a claim comes from the route's policy");
    let status = res.status();
    if status == StatusCode::SWITCHING_PROTOCOLS || !policy.stores(status) {
        ctx.claim = Some(claim);
        ctx.release_claim();
        return Ok(res.map(ResponseBody::upstream));
    }
    let (parts, body) = res.into_parts();
    ctx.request_held = body::Held::default();
    let upstream = ctx.upstream();
    // The body is read within another `timeouts.request` (the claim's lease covers it).
    let charge = Charge::Patiently(&ctx.log.shared.buffers, &mut ctx.log.held);
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
    let (authority, source, host_value) = if let Some(authority) = uri.authority() {
        match uri.scheme_str() {
            None | Some("http" | "https") => {}
            Some(other) => {
                return Err(GatewayError::BadRequest(format!(
                    "request target scheme `{other}` is not supported; use http or https"
                )));
            }
        }
        if authority.as_str().contains('@') {
            return Err(GatewayError::BadRequest("request target must not contain user information".into()));
        }
        (authority.clone(), "request target", None)
    } else {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let Some(value) = hosts.next() else {
            if req.version() == Version::HTTP_11 {
                return Err(GatewayError::BadRequest("missing Host header (required in HTTP/1.1)".into()));
            }
            return Ok(RequestTarget::default());
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
        (authority, "Host header", Some(value.clone()))
    };
    let host = canonical_host(authority.host())
        .map_err(|e| GatewayError::BadRequest(format!("invalid host in the {source}: {e}")))?;
    if host == authority.host() {
        // The common case: the Host header is forwarded as it came.
        let forward_host = match host_value {
            Some(v) => v,
            None => authority_value(&authority)?,
        };
        return Ok(RequestTarget {
            canonical_host: None,
            authority: Some(authority),
            forward_host: Some(forward_host),
            route_path: None,
        });
    }
    let forwarded = match authority.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let forwarded = Authority::try_from(forwarded)
        .map_err(|_| GatewayError::BadRequest(format!("invalid host in the {source}")))?;
    Ok(RequestTarget {
        canonical_host: Some(host.into_owned()),
        forward_host: Some(authority_value(&forwarded)?),
        authority: Some(forwarded),
        route_path: None,
    })
}

fn authority_value(a: &Authority) -> Result<HeaderValue, GatewayError> {
    HeaderValue::from_str(a.as_str()).map_err(|_| GatewayError::BadRequest("invalid host".into()))
}

/// The path and query sent upstream: the (stripped) path and the query. `routed`: the route
/// matched this path without the `;` parameters the request has, so the prefix is stripped by
/// segments, parameters and all (when that path starts with it).
fn upstream_path(
    uri: &Uri,
    strip_prefix: Option<&str>,
    routed: Option<&str>,
) -> Result<PathAndQuery, GatewayError> {
    Ok(match (strip_prefix, uri.path_and_query()) {
        (None, Some(pq)) => pq.clone(),
        (None, None) => PathAndQuery::from_static("/"),
        (Some(prefix), _) => {
            let path = match routed {
                Some(routed) if has_segment_prefix(routed, prefix) => strip_segments(uri.path(), prefix),
                _ => strip(uri.path(), prefix),
            };
            let pq = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(pq).map_err(|_| GatewayError::BadRequest("invalid request path".into()))?
        }
    })
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
    /// The request's trace, when `telemetry.traces` is on: ended (and handed to the exporter)
    /// here, with the request span.
    trace: Option<Box<Trace>>,
    /// The request came over TLS (`url.scheme`).
    https: bool,
    /// The gRPC call this request is (proxied or transcoded), for `bridgehead_grpc_requests_total`.
    grpc: Option<GrpcCall>,
    shared: Arc<Shared>,
}

/// A gRPC call's labels and, once known, its status code.
struct GrpcCall {
    service: Arc<str>,
    method: Arc<str>,
    /// The names came from the client's path (a proxied call): they become labels only once the
    /// server answered with a status other than UNIMPLEMENTED, at most `MAX_GRPC_LABELS` pairs.
    from_client: bool,
    /// The status code + 1; 0 until it is known.
    code: Arc<std::sync::atomic::AtomicU32>,
}

impl GrpcCall {
    fn new(service: Arc<str>, method: Arc<str>) -> Self {
        GrpcCall { service, method, from_client: false, code: Arc::default() }
    }

    fn set(&self, code: u32) {
        self.code.store(code.saturating_add(1), Relaxed);
    }

    /// A proxied call's names from its path (`/package.Service/Method`).
    fn from_path(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        if !ident(service) || !ident(method) {
            return None;
        }
        Some(GrpcCall { from_client: true, ..Self::new(service.into(), method.into()) })
    }

    /// The service and method labels for `code` (+ 1, 0: none).
    fn labels(&self, code: u32) -> (Arc<str>, Arc<str>) {
        const MAX_GRPC_LABELS: usize = 1000;
        type Pairs = std::collections::HashSet<(Arc<str>, Arc<str>)>;
        static SEEN: std::sync::Mutex<Option<Pairs>> = std::sync::Mutex::new(None);
        if !self.from_client {
            return (self.service.clone(), self.method.clone());
        }
        // A method the server does not have (UNIMPLEMENTED, 12 + 1) or never answered for (0)
        // is not a label.
        if code == 0 || code == 13 {
            return (self.service.clone(), "(unknown)".into());
        }
        let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = seen.get_or_insert_with(Default::default);
        let key = (self.service.clone(), self.method.clone());
        if seen.contains(&key) {
            return key;
        }
        if seen.len() >= MAX_GRPC_LABELS {
            return ("(other)".into(), "(other)".into());
        }
        seen.insert(key.clone());
        key
    }
}

impl Logging {
    fn new(
        rt: &Runtime,
        shared: &Arc<Shared>,
        conn: &ConnInfo,
        req: &Request<Incoming>,
        request_id: HeaderValue,
        trace: Option<Box<Trace>>,
    ) -> Self {
        let access_log = rt.loaded.config.server.access_log.enabled;
        let recorded = trace.as_ref().is_some_and(|t| t.sampled);
        Logging {
            start: Instant::now(),
            request_id,
            client: conn.client,
            version: req.version(),
            method: req.method().clone(),
            // Only the access log and the trace read the path (canonical once the filter
            // passed): no copy when they are off.
            path: if access_log || recorded { req.uri().path().to_owned() } else { String::new() },
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
            trace,
            https: conn.tls,
            grpc: None,
            shared: shared.clone(),
        }
    }

    /// Ends the request's trace with its server span (a recorded one: every attribute).
    fn end_trace(&mut self, bytes_out: u64, completed: bool, grpc_code: Option<(Arc<str>, Arc<str>, u32)>) {
        let Some(trace) = self.trace.take() else { return };
        if !trace.sampled {
            return;
        }
        let method = trace::method_value(&self.method);
        // Semantic conventions: `HTTP` for a method they do not know.
        let m = match &method {
            Value::Str(m) if m != "_OTHER" => m.clone(),
            _ => "HTTP".into(),
        };
        let name = match &self.route {
            Some(route) => format!("{m} {route}").into(),
            None => m,
        };
        let mut attributes: Attributes = Vec::with_capacity(24);
        attributes.extend([
            ("http.request.method", method),
            ("url.path", Value::from(trace::bounded(std::mem::take(&mut self.path)))),
            ("url.scheme", Value::from(if self.https { "https" } else { "http" })),
            (
                "network.protocol.version",
                Value::from(match self.version {
                    Version::HTTP_10 => "1.0",
                    Version::HTTP_2 => "2",
                    _ => "1.1",
                }),
            ),
            ("client.address", Value::Ip(self.client.ip())),
            ("bridgehead.request_id", Value::Header(self.request_id.clone())),
            (
                "http.request.body.size",
                Value::Int(self.stats.as_ref().map_or(0, |s| s.bytes_in.load(Relaxed)) as i64),
            ),
            ("http.response.body.size", Value::Int(bytes_out as i64)),
        ]);
        // 0: dropped before an answer was made.
        if self.status != 0 {
            attributes.push(("http.response.status_code", Value::Int(i64::from(self.status))));
        }
        for (key, v) in [
            ("bridgehead.route", &self.route),
            ("bridgehead.consumer", &self.consumer),
            ("bridgehead.upstream", &self.upstream),
            ("bridgehead.target", &self.target),
        ] {
            if let Some(v) = v {
                attributes.push((key, Value::Shared(v.clone())));
            }
        }
        // A gRPC server span fails on the codes that are the server's (UNKNOWN,
        // DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS).
        let mut grpc_error = None;
        if let Some((service, method, code)) = grpc_code {
            attributes.push(("rpc.system", Value::from("grpc")));
            attributes.push(("rpc.service", Value::Shared(service)));
            attributes.push(("rpc.method", Value::Shared(method)));
            if code > 0 {
                attributes.push(("rpc.grpc.status_code", Value::Int(i64::from(code - 1))));
                grpc_error = matches!(code - 1, 2 | 4 | 12 | 13 | 14 | 15).then(|| (code - 1).to_string());
            }
        }
        // A server span fails on a 5xx (a 4xx is the client's), when the answer broke off, or
        // when the request was dropped before an answer (the client went away).
        let error_type = if self.status == 0 {
            Some("cancelled".to_owned())
        } else if !completed {
            Some("incomplete".to_owned())
        } else if self.status >= 500 {
            Some(self.status.to_string())
        } else {
            grpc_error
        };
        let status = match error_type {
            Some(e) => {
                attributes.push(("error.type", Value::from(e)));
                trace::Status::Error
            }
            None => trace::Status::Unset,
        };
        trace.finish(name, Kind::Server, status, attributes);
    }
}

/// A request dropped before its answer (the client went away while it waited): its trace
/// still ends, as cancelled, with the spans recorded so far.
impl Drop for Logging {
    fn drop(&mut self) {
        if self.trace.is_some() {
            self.end_trace(0, false, None);
        }
    }
}

impl OnFinish for Logging {
    fn grpc_status(&mut self, code: u32) {
        if let Some(g) = &self.grpc {
            g.set(code);
        }
    }

    fn finish(&mut self, bytes_out: u64, completed: bool) {
        self.in_flight.take();
        let elapsed = self.start.elapsed();
        let route = self.route.clone().unwrap_or_else(|| Arc::from(metrics::NO_ROUTE));
        let m = &self.shared.metrics;
        let mut traced_grpc = None;
        if let Some(g) = &self.grpc {
            let raw = g.code.load(Relaxed);
            let code = match raw {
                0 => "(none)",
                n => bridgehead_grpc::status::name(n - 1),
            };
            let (service, method) = g.labels(raw);
            if self.trace.is_some() {
                traced_grpc = Some((service.clone(), method.clone(), raw));
            }
            let labels = metrics::GrpcLabels {
                route: Name(route.clone()),
                service: Name(service),
                method: Name(method),
                code,
            };
            m.grpc_requests.get_or_create(&labels).inc();
        }
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
        let trace_ids = self.trace.as_ref().map(|t| (t.trace_id, t.span_id));
        if !self.access_log {
            self.end_trace(bytes_out, completed, traced_grpc);
            return;
        }
        let record = Record {
            time: bridgehead_http::clock::wall(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            trace: trace_ids,
            client: self.client.ip(),
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
            duration: elapsed,
            upstream: self.upstream.as_deref(),
            target: self.target.as_deref(),
            bytes_in: self.stats.as_ref().map_or(0, |s| s.bytes_in.load(Relaxed)),
            bytes_out,
            completed,
        };
        if !self.shared.access_log.write(&record) {
            m.access_log_dropped.inc();
        }
        self.end_trace(bytes_out, completed, traced_grpc);
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn targets_give_their_host_and_port() {
        assert_eq!(host_port("http://10.0.0.1:8080"), ("10.0.0.1", 8080));
        assert_eq!(host_port("http://backend:8080/"), ("backend", 8080));
        assert_eq!(host_port("http://backend/"), ("backend", 80));
        assert_eq!(host_port("https://api.example.com"), ("api.example.com", 443));
        assert_eq!(host_port("http://[::1]:9000"), ("::1", 9000));
        assert_eq!(host_port("https://[2001:db8::1]/"), ("2001:db8::1", 443));
    }
}
