//! `bridgehead probe`: what an unknown endpoint is and how to talk to it.
//!
//! ```text
//! probe: DNS ─▶ TCP to each address ─▶ TLS (https) ─▶ one GET ─▶ what the answer says
//!        (each step timed and bounded; the first that fails is named, and the rest skipped)
//! ```
//!
//! The readers turn what a server says in its headers into findings:
//! - [`challenge`]: the authentication schemes of `WWW-Authenticate`;
//! - [`limits`]: rate limits in every common shape (IETF `RateLimit`, `X-RateLimit-*`,
//!   `Retry-After`);
//! - [`hints`]: the gateway or server software in front (`Server`, `Via` and telltale headers).
//!
//! Each reader is lenient: a probe reports what a server says even when the server says it
//! badly, so a malformed part is skipped, never the whole header. The probe sends only a GET.

pub mod behaviour;
pub mod challenge;
pub mod hints;
pub mod limits;
pub mod net;
mod report;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

pub use report::render;

/// How to probe.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bound of each step.
    pub timeout: Duration,
    pub tls: tls::TlsOptions,
    /// Sent as `Origin`, to see the server's CORS answer.
    pub origin: Option<String>,
}

/// Everything the probe found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<net::Resolved>,
    pub tcp: Vec<net::Connect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<tls::TlsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
    pub auth: Vec<challenge::Challenge>,
    pub limits: limits::RateLimits,
    pub hints: Vec<hints::Hint>,
    pub behaviour: behaviour::Behaviour,
    /// The step that failed, if one did: the endpoint is unreachable from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
}

/// The step that failed and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `url`, `dns`, `tcp`, `tls` or `http`.
    pub step: &'static str,
    pub reason: String,
}

/// The answer to the probe's GET.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    pub version: String,
    pub status: u16,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Every header, in order (names in lower case).
    pub headers: Vec<(String, String)>,
}

/// Probes `url`, telling `progress` of each step as it starts.
pub async fn probe(url: &str, opts: &Options, progress: &mut dyn FnMut(&str)) -> Report {
    // A password in the URL is not echoed (nor sent: the probe sends no credentials).
    let shown = match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_owned(),
    };
    let mut report = Report {
        url: shown,
        dns: None,
        tcp: Vec::new(),
        tls: None,
        http: None,
        auth: Vec::new(),
        limits: limits::RateLimits::default(),
        hints: Vec::new(),
        behaviour: behaviour::Behaviour::default(),
        failed: None,
    };
    if let Err(f) = run(url, opts, progress, &mut report).await {
        report.failed = Some(f);
    }
    report
}

async fn run(
    url: &str,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
    report: &mut Report,
) -> Result<(), Failure> {
    let fail = |step: &'static str| move |reason: String| Failure { step, reason };
    let parsed = url::Url::parse(url).map_err(|e| fail("url")(format!("`{url}` is not a URL: {e}")))?;
    let secure = match parsed.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(fail("url")(format!("scheme `{other}` is not probed (http or https)"))),
    };
    let host = parsed.host_str().ok_or_else(|| fail("url")(format!("`{url}` has no host")))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });

    progress(&format!("DNS: resolving {host}"));
    let resolved = net::resolve(&host, port, opts.timeout).await.map_err(fail("dns"))?;
    let addresses = resolved.addresses.clone();
    report.dns = Some(resolved);

    let mut stream = None;
    for ip in addresses {
        let address = std::net::SocketAddr::new(ip, port);
        progress(&format!("TCP: connecting to {address}"));
        let (attempt, s) = net::connect(address, opts.timeout).await;
        report.tcp.push(attempt);
        if s.is_some() {
            stream = s;
            break;
        }
    }
    let Some(tcp) = stream else {
        let reasons: Vec<String> =
            report.tcp.iter().map(|c| format!("{} {}", c.address, c.outcome)).collect();
        return Err(fail("tcp")(format!("no address took the connection: {}", reasons.join(", "))));
    };

    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let answer = if secure {
        progress(&format!("TLS: handshake with {host}"));
        let prepared = tls::prepare(&opts.tls).map_err(fail("tls"))?;
        let name = rustls_pki_types::ServerName::try_from(
            host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        )
        .map_err(|e| fail("tls")(format!("`{host}` is not a name TLS can check: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(prepared.config.clone()));
        let tls = match tokio::time::timeout(opts.timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let mut reason = format!("the handshake failed: {}", chain(&e));
                if prepared.client_cert_requested() && opts.tls.client.is_none() {
                    reason.push_str(" (the server asked for a client certificate; give --cert and --key)");
                }
                return Err(fail("tls")(reason));
            }
            Err(_) => {
                return Err(fail("tls")(format!("no handshake within {}", net::humantime(opts.timeout))));
            }
        };
        let tls_report = prepared.report(tls.get_ref().1);
        let h2 = tls_report.alpn.as_deref() == Some("h2");
        report.tls = Some(tls_report);
        progress(&format!("HTTP: GET {path}"));
        exchange(tls, h2, "https", &authority, &path, opts).await
    } else {
        progress(&format!("HTTP: GET {path}"));
        exchange(tcp, false, "http", &authority, &path, opts).await
    };
    let answer = answer.map_err(|reason| match &report.tls {
        // TLS 1.3 finishes the client's side of the handshake before the server judges the
        // client's certificate: a refusal shows as the request failing.
        Some(t) if t.client_cert_requested && !t.client_cert_sent => fail("tls")(format!(
            "the server asked for a client certificate, none was sent (give --cert and --key), and the connection failed: {reason}"
        )),
        _ => fail("http")(reason),
    })?;
    let headers = &answer.1;
    report.auth = challenge::parse(
        headers.get_all(http::header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()),
    );
    report.limits = limits::read(headers, SystemTime::now());
    report.hints = hints::read(headers);
    report.behaviour = behaviour::read(headers, answer.2);
    report.http = Some(answer.0);
    Ok(())
}

/// The answer, or why the request failed: the connection's own error says more than the
/// request's (`operation was canceled`), so it is waited for, briefly (the caller has dropped
/// its sender, so a connection still up ends on its own).
async fn failed_because<T>(
    sent: Result<T, hyper::Error>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
) -> Result<T, String> {
    match sent {
        Ok(res) => Ok(res),
        Err(e) => Err(match tokio::time::timeout(Duration::from_secs(1), conn).await {
            Ok(Ok(Err(c))) => format!("the connection failed: {}", chain(&c)),
            _ => format!("the request failed: {}", chain(&e)),
        }),
    }
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// One GET over `io`, HTTP/2 when ALPN chose it.
async fn exchange<IO>(
    io: IO,
    h2: bool,
    scheme: &str,
    authority: &str,
    path: &str,
    opts: &Options,
) -> Result<(HttpReport, http::HeaderMap, http::Version), String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let timeout = opts.timeout;
    let started = Instant::now();
    let uri = if h2 { format!("{scheme}://{authority}{path}") } else { path.to_owned() };
    let req = http::Request::get(uri)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, concat!("bridgehead-probe/", env!("CARGO_PKG_VERSION")))
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::ACCEPT_ENCODING, "gzip, deflate, br, zstd");
    let req = match &opts.origin {
        Some(o) => req.header(http::header::ORIGIN, o),
        None => req,
    };
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| format!("cannot make the request: {e}"))?;
    let io = TokioIo::new(io);
    let send = async {
        if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("the HTTP/2 handshake failed: {}", chain(&e)))?;
            let conn = tokio::spawn(conn);
            let mut req = req;
            req.headers_mut().remove(http::header::HOST);
            let sent = send.send_request(req).await;
            drop(send);
            failed_because(sent, conn).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("the HTTP/1.1 exchange failed: {}", chain(&e)))?;
            let conn = tokio::spawn(conn);
            let sent = send.send_request(req).await;
            drop(send);
            failed_because(sent, conn).await
        }
    };
    let res = tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| format!("no answer within {}", net::humantime(timeout)))??;
    let ms = net::ms(started);
    let (parts, body) = res.into_parts();
    // The body is read only so the connection ends cleanly; at most 64 KiB, within the bound.
    let _ = tokio::time::timeout(timeout, http_body_util::Limited::new(body, 64 * 1024).collect()).await;
    let report = HttpReport {
        version: format!("{:?}", parts.version),
        status: parts.status.as_u16(),
        ms,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    };
    Ok((report, parts.headers, parts.version))
}

#[cfg(test)]
pub(crate) mod tests {
    /// Headers from `(name, value)` pairs, repeated names appended.
    pub fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }
}
