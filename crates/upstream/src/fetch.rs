//! The HTTP client authenticators use toward identity providers (JWKS and introspection):
//! rustls with the system roots plus an optional CA bundle from the config, a timeout, and a cap
//! on the answer's size.

use std::path::Path;
use std::time::Duration;

/// Largest JWKS or introspection answer read.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// A client for one authenticator. `ca` is a PEM bundle trusted in addition to the system roots.
pub fn client(ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bridgehead/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("ca: cannot read {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca: {} is not a PEM certificate bundle: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca: {} holds no certificate", ca.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Reads a response body up to [`MAX_ANSWER`] bytes.
pub async fn body(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("reading the answer failed: {e}"))? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
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
