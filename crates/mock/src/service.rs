//! The request lifecycle: one function that runs the phases in order.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, SERVER};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::watch;

use crate::admin;
use crate::body::{MockBody, ReceivedBody, read_bounded};
use crate::counts::StatusCounter;
use crate::echo::{self, ECHO_BODY};
use crate::faults::{ActiveFaults, FaultSwitch};
use crate::fixed::Routes;
use crate::knobs::Knobs;
use crate::options::MockOptions;
use crate::problem::Rejection;
use crate::record::Recorder;
use crate::websocket;

/// What every connection of one server shares; built once at start.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Latency, failures and the quota: set at start, replaced by `/__mock/faults`.
    pub(crate) faults: FaultSwitch,
    routes: Routes,
    /// `--soap`: the SOAP inventory service at `/soap`.
    soap: bool,
    pub(crate) recorder: Recorder,
    pub(crate) statuses: StatusCounter,
    /// Tells upgraded connections, which outlive their HTTP connection, that the server stopped.
    stop: watch::Receiver<bool>,
}

impl Shared {
    /// `opts` must be valid ([`MockOptions::validate`]).
    pub(crate) fn new(opts: &MockOptions, stop: watch::Receiver<bool>) -> Self {
        Shared {
            faults: FaultSwitch::new(opts.faults()),
            routes: Routes::new(&opts.fixed),
            soap: opts.soap,
            recorder: Recorder::new(opts.record_limit),
            statuses: StatusCounter::default(),
            stop,
        }
    }
}

/// Serves one request; every response says `server: bridgehead-mock` unless `x-mock-header`
/// said otherwise.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, hyper::Error> {
    // admin: before recording, so reading the recording does not change it.
    let mut response = if request.uri().path().starts_with(admin::PREFIX) {
        admin::handle(&shared, request).await?
    } else {
        let response = phases(&shared, request).await?;
        shared.statuses.count(response.status());
        response
    };
    response.headers_mut().entry(SERVER).or_insert(HeaderValue::from_static("bridgehead-mock"));
    Ok(response)
}

async fn phases(shared: &Shared, mut request: Request<Incoming>) -> Result<Response<MockBody>, hyper::Error> {
    shared.recorder.arrived();
    // One snapshot of the faults for the whole request, whatever /__mock/faults does meanwhile.
    let faults = shared.faults.load();

    // The upgrade must be claimed before the request is taken apart.
    let on_upgrade = websocket::is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();

    // record: the body is read first (streamed, only its head kept) so the recording has it.
    let body = read_bounded(body, ECHO_BODY).await?;
    shared.recorder.record(&parts, &body);

    let knobs = match Knobs::from_headers(&parts.headers) {
        Ok(knobs) => knobs,
        Err(rejection) => return Ok(rejection.into_response()),
    };

    // rate limit: counted on arrival, as a quota at the customer's edge would be; over it, 429
    // at once. Every response from here on carries the quota headers.
    let quota = faults.quota.as_ref().map(|quota| (quota, quota.take(Instant::now())));
    let mut response = match quota {
        Some((quota, verdict)) if !verdict.allowed => Rejection::RateLimited {
            limit: verdict.limit,
            window: quota.window_name(),
            retry_after: verdict.reset,
        }
        .into_response(),
        _ => respond(shared, &faults, &parts, &body, knobs, on_upgrade).await,
    };
    if let Some((quota, verdict)) = quota {
        quota.headers(verdict, response.headers_mut());
    }
    Ok(response)
}

/// The phases after the quota: latency, failure injection, fixed route, websocket or echo.
async fn respond(
    shared: &Shared,
    faults: &ActiveFaults,
    parts: &Parts,
    body: &ReceivedBody,
    knobs: Knobs,
    on_upgrade: Option<OnUpgrade>,
) -> Response<MockBody> {
    // latency: --latency plus x-mock-latency.
    let delay = faults.latency + knobs.latency.unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    // failure injection: after latency, as a slow failing upstream would be.
    if let Some(failure) = faults.failure() {
        return failure;
    }

    // fixed routes: exact path, then longest prefix.
    if let Some(response) = shared.routes.respond(parts.uri.path()) {
        return response;
    }

    // the SOAP service, with --soap.
    if shared.soap && crate::soap::is_soap(parts) {
        return crate::soap::respond(parts, body);
    }

    // websocket or echo.
    match on_upgrade {
        Some(on_upgrade) => websocket::accept(&parts.headers, on_upgrade, shared.stop.clone()),
        None => echo::respond(parts, body, knobs),
    }
}
