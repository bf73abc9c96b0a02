//! The HTTP client authenticators use toward identity providers (JWKS and introspection):
//! rustls with the system roots plus an optional CA bundle from the config, a timeout, and a cap
//! on the answer's size.

use std::path::Path;
use std::time::Duration;

use bridgehead_config::BuildError;

/// Largest JWKS or introspection answer read.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// A client for one authenticator. `ca` is a PEM bundle trusted in addition to the system roots.
/// Errors name the key `ca`; callers place it under their own key ([`BuildError::under`]).
pub fn client(ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, BuildError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bridgehead/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)
            .map_err(|e| BuildError::new("ca", format!("cannot read {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            BuildError::new("ca", format!("{} is not a PEM certificate bundle: {e}", ca.display()))
        })?;
        if certs.is_empty() {
            return Err(BuildError::new("ca", format!("{} holds no certificate", ca.display())));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| BuildError::new("", format!("cannot build an HTTP client: {e}")))
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("reading the answer failed: {0}")]
    Read(String),
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
}

/// Reads a response body up to [`MAX_ANSWER`] bytes.
pub async fn body(mut res: reqwest::Response) -> Result<Vec<u8>, AnswerError> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| AnswerError::Read(describe(&e)))? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(AnswerError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The request with the current request's trace context, when a traced request is what this
/// fetch is made for (see [`bridgehead_http::trace::current_traceparent`]).
pub fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match bridgehead_http::trace::current_traceparent() {
        Some(tp) => req.header(bridgehead_http::trace::TRACEPARENT.clone(), tp),
        None => req,
    }
}

/// A reqwest error in one line, without URL query strings (which could carry secrets).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}
