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
pub mod client;
pub mod hints;
pub mod limits;
pub mod net;
pub mod oauth;
pub mod protocol;
mod report;
mod suggest;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;

pub use report::render;

/// How to probe.
#[derive(Clone)]
pub struct Options {
    /// The bound of each step.
    pub timeout: Duration,
    pub tls: tls::TlsOptions,
    /// Sent as `Origin`, to see the server's CORS answer.
    pub origin: Option<String>,
    /// Also send a `POST` of `{}` as JSON to the URL (the only probe that is not read-only).
    pub post: bool,
    /// A bearer token to decode, check and try on the URL.
    pub bearer: Option<String>,
    /// How many GETs of the URL to time (1: the probe's own).
    pub samples: usize,
    /// Resolve with these DNS servers instead of the system's.
    pub dns_servers: Vec<std::net::SocketAddr>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .field("origin", &self.origin)
            .field("post", &self.post)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("samples", &self.samples)
            .field("dns_servers", &self.dns_servers)
            .finish()
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    pub protocols: protocol::Protocols,
    /// The authorization server's metadata, when the endpoint's origin serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<oauth::Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer: Option<oauth::Bearer>,
    /// A `bridgehead.yaml` fragment for what was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_config: Option<String>,
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
        latency: None,
        protocols: protocol::Protocols::default(),
        oauth: None,
        bearer: None,
        suggested_config: None,
        failed: None,
    };
    if let Err(f) = run(url, opts, progress, &mut report).await {
        report.failed = Some(f);
    }
    if let Ok(u) = url::Url::parse(url) {
        report.suggested_config = suggest::fragment(&report, &u, &opts.tls);
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
    let resolved = net::resolve(&host, port, opts.timeout, &opts.dns_servers).await.map_err(fail("dns"))?;
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

    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let address = report.tcp.last().map(|c| c.address).expect("a connection was made");
    let (conn, tls_config) = if secure {
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
        (client::Conn::handshake(tls, h2, opts.timeout).await, Some(prepared.config))
    } else {
        (client::Conn::handshake(tcp, false, opts.timeout).await, None)
    };
    let mut dialer = client::Dialer::new(address, &host, &authority, tls_config.as_ref(), opts.timeout);
    progress(&format!("HTTP: GET {target}"));
    let first = async {
        let mut conn = conn?.with_authority(&authority);
        let first = conn.send(first_request(&dialer, &target, opts), BODY_LIMIT).await?;
        Ok::<_, String>((conn, first))
    };
    let first = match first.await {
        // A plain-TCP server that speaks only HTTP/2 (a gRPC server) refuses HTTP/1.1: asked
        // again with prior knowledge (h2c).
        Err(e) if !secure => {
            progress(&format!("HTTP: GET {target} over HTTP/2 with prior knowledge (h2c)"));
            let h2c = async {
                let mut conn = dialer.open(client::Want::H2).await?;
                let first = conn.send(first_request(&dialer, &target, opts), BODY_LIMIT).await?;
                Ok::<_, String>((conn, first))
            };
            let answer = h2c.await.map_err(|h2| format!("{e}; over HTTP/2 (h2c): {h2}"));
            dialer.h2c_only = answer.is_ok();
            answer
        }
        other => other,
    };
    let (mut conn, first) = first.map_err(|reason| match &report.tls {
        // TLS 1.3 finishes the client's side of the handshake before the server judges the
        // client's certificate: a refusal shows as the request failing.
        Some(t) if t.client_cert_requested && !t.client_cert_sent => fail("tls")(format!(
            "the server asked for a client certificate, none was sent (give --cert and --key), and the connection failed: {reason}"
        )),
        _ => fail("http")(reason),
    })?;
    let headers = &first.headers;
    report.auth = challenge::parse(
        headers.get_all(http::header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()),
    );
    report.limits = limits::read(headers, SystemTime::now());
    report.hints = hints::read(headers);
    report.behaviour = behaviour::read(headers, first.version);
    report.http = Some(HttpReport {
        version: format!("{:?}", first.version),
        status: first.status.as_u16(),
        ms: first.ms,
        content_type: first.header("content-type").map(str::to_owned),
        headers: first
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    });

    if opts.samples > 1 {
        progress(&format!("HTTP: {} more GETs {target} for the latency", opts.samples - 1));
        let mut times = vec![first.ms];
        for _ in 1..opts.samples {
            let answer = match conn.send(first_request(&dialer, &target, opts), BODY_LIMIT).await {
                Ok(a) => Ok(a),
                // The server closed the connection: the next on a new one.
                Err(_) => match dialer.open(client::Want::Auto).await {
                    Ok(c) => {
                        conn = c.with_authority(&authority);
                        conn.send(first_request(&dialer, &target, opts), BODY_LIMIT).await
                    }
                    Err(e) => Err(e),
                },
            };
            match answer {
                Ok(a) => times.push(a.ms),
                Err(e) => {
                    report.latency = Some(Latency::of(&times, Some(e)));
                    break;
                }
            }
        }
        if report.latency.is_none() {
            report.latency = Some(Latency::of(&times, None));
        }
    }
    drop(conn);

    progress("protocol: gRPC, gRPC-Web, SOAP, GraphQL, OpenAPI, WebSocket; OAuth metadata");
    // Each request is bounded; the phase as a whole too, so a server that answers every probe
    // slowly cannot hold the probe for minutes.
    let deadline = opts.timeout.saturating_mul(3);
    let phase = tokio::time::timeout(deadline, async {
        tokio::join!(protocol::detect(&dialer, &target, &first, opts.post), oauth::discover(&dialer, &target))
    })
    .await;
    let metadata = match phase {
        Ok((mut protocols, (metadata, oauth_tried))) => {
            protocols.tried.extend(oauth_tried);
            report.protocols = protocols;
            metadata
        }
        Err(_) => {
            report.protocols.tried.push(protocol::Tried {
                probe: "protocol and OAuth probes".into(),
                outcome: format!("cut off after {}: the server answers too slowly", net::humantime(deadline)),
            });
            None
        }
    };
    let origin = format!("{}://{authority}", dialer.scheme());
    if let Some(token) = &opts.bearer {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let issuer = metadata.as_ref().and_then(|m| m.issuer.as_deref());
        let mut b = oauth::inspect(token, now, issuer, &origin);
        match &report.tls {
            None => {
                b.not_sent = Some("not sent: over http:// the token would travel in clear text".into());
            }
            Some(t) if !t.verified => {
                b.not_sent = Some("not sent: the server's certificate chain did not verify".into());
            }
            Some(_) => {
                // A connection of its own whose chain must verify, or the token is not sent.
                let strict = tls::prepare_strict(&opts.tls).map_err(fail("tls"))?;
                let mut secured = dialer.clone();
                secured.tls =
                    client::Dialer::new(address, &host, &authority, Some(&strict.config), opts.timeout).tls;
                progress(&format!("HTTP: GET {target} with the bearer token"));
                oauth::try_token(&secured, &target, token, &mut b).await;
            }
        }
        report.bearer = Some(b);
    }
    report.oauth = metadata;
    Ok(())
}

/// The first answer's body is read up to this size.
const BODY_LIMIT: usize = 64 << 10;

/// The probe's GET of the URL.
fn first_request(d: &client::Dialer, target: &str, opts: &Options) -> http::Request<Full<Bytes>> {
    let req = d
        .request(http::Method::GET, target)
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::ACCEPT_ENCODING, "gzip, deflate, br, zstd");
    let req = match &opts.origin {
        Some(o) => req.header(http::header::ORIGIN, o),
        None => req,
    };
    req.body(Full::new(Bytes::new())).expect("a valid request")
}

/// Response times over several GETs of the URL.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Why the samples stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Latency {
    fn of(times: &[f64], error: Option<String>) -> Latency {
        let mut t = times.to_vec();
        t.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = |q: f64| t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
        Latency {
            samples: t.len(),
            min_ms: t[0],
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: t[t.len() - 1],
            error,
        }
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
