//! The request lifecycle: one function that runs the phases in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, SERVER};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::body::{MockBody, read_bounded};
use crate::echo::{self, ECHO_BODY};
use crate::fixed::Routes;
use crate::knobs::Knobs;
use crate::options::MockOptions;
use crate::problem::{Rejection, problem, problem_body};
use crate::record::Recorder;
use crate::websocket;

/// The recording, listed by GET and cleared by DELETE; never recorded, never failed.
pub(crate) const ADMIN_PATH: &str = "/__mock/requests";

/// What every connection of one server shares; built once at start.
#[derive(Debug)]
pub(crate) struct Shared {
    latency: Duration,
    fail_rate: f64,
    failure: Failure,
    routes: Routes,
    pub(crate) recorder: Recorder,
    /// Tells upgraded connections, which outlive their HTTP connection, that the server stopped.
    stop: watch::Receiver<bool>,
}

/// The injected failure response, rendered once.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    body: Bytes,
}

impl Shared {
    /// `opts` must be valid ([`MockOptions::validate`]).
    pub(crate) fn new(opts: &MockOptions, stop: watch::Receiver<bool>) -> Self {
        let status = StatusCode::from_u16(opts.fail_status).expect("validated fail_status");
        Shared {
            latency: opts.latency.unwrap_or_default(),
            fail_rate: opts.fail_rate,
            failure: Failure {
                status,
                retry_after: opts.retry_after.map(HeaderValue::from),
                body: problem_body(
                    status,
                    "injected failure",
                    "bridgehead mock injected this failure (--fail-rate)",
                ),
            },
            routes: Routes::new(&opts.fixed),
            recorder: Recorder::new(opts.record_limit),
            stop,
        }
    }
}

/// Serves one request; every response says `server: bridgehead-mock`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, hyper::Error> {
    let mut response = phases(&shared, request).await?;
    response.headers_mut().insert(SERVER, HeaderValue::from_static("bridgehead-mock"));
    Ok(response)
}

async fn phases(shared: &Shared, mut request: Request<Incoming>) -> Result<Response<MockBody>, hyper::Error> {
    // admin: before recording, so reading the recording does not change it.
    if request.uri().path() == ADMIN_PATH {
        return Ok(admin(shared, request.method()));
    }
    shared.recorder.arrived();

    // The upgrade must be claimed before the request is taken apart.
    let on_upgrade = websocket::is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();

    // record: the body is read first (streamed, only its head kept) so the recording has it.
    let body = read_bounded(body, ECHO_BODY).await?;
    shared.recorder.record(&parts, &body);

    // latency: --latency plus x-mock-latency.
    let knobs = match Knobs::from_headers(&parts.headers) {
        Ok(knobs) => knobs,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let delay = shared.latency + knobs.latency.unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    // failure injection: after latency, as a slow failing upstream would be.
    if shared.fail_rate > 0.0 && fastrand::f64() < shared.fail_rate {
        return Ok(shared.failure.response());
    }

    // fixed routes: exact path, then longest prefix.
    if let Some(response) = shared.routes.respond(parts.uri.path()) {
        return Ok(response);
    }

    // websocket or echo.
    Ok(match on_upgrade {
        Some(on_upgrade) => websocket::accept(&parts.headers, on_upgrade, shared.stop.clone()),
        None => echo::respond(&parts, &body, knobs),
    })
}

fn admin(shared: &Shared, method: &Method) -> Response<MockBody> {
    match *method {
        Method::GET => {
            let json = serde_json::to_vec(&shared.recorder.snapshot()).expect("recorded requests serialize");
            let mut response = Response::new(MockBody::full(json));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Method::DELETE => {
            shared.recorder.clear();
            let mut response = Response::new(MockBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => Rejection::AdminMethod.into_response(),
    }
}

impl Failure {
    fn response(&self) -> Response<MockBody> {
        let mut response = problem(self.status, self.body.clone());
        if let Some(retry_after) = &self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, retry_after.clone());
        }
        response
    }
}
