//! The `bridgehead.yaml` fragment for what the probe found: an upstream with its TLS settings
//! and protocol, the credentials block for the authentication scheme seen, a rate limit under
//! the one the server states, a gRPC service with reflection or a SOAP service with its WSDL,
//! and routes to reach them.
//! Secrets are `${env:NAME}` references, named in the fragment's comments.
//!
//! `bridgehead config check` accepts the fragment once those variables are set: a test holds it
//! to that.

use std::fmt::Write as _;

use crate::Report;

/// The fragment, or `None` when the endpoint was not reached.
pub fn fragment(r: &Report, url: &url::Url, tls: &crate::tls::TlsOptions) -> Option<String> {
    r.http.as_ref()?;
    let host = url.host_str()?;
    let name = upstream_name(host);
    let env = name.to_ascii_uppercase().replace('-', "_");
    let origin = match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let grpc = r.protocols.get("grpc");
    let secure = url.scheme() == "https";
    let h2 = r.tls.as_ref().is_some_and(|t| t.alpn.as_deref() == Some("h2"));
    let mut env_vars: Vec<String> = Vec::new();
    let mut y = String::new();
    let _ = writeln!(y, "upstreams:\n  {name}:\n    targets: [{{ url: {} }}]", q(&origin));
    if grpc.is_some() && !secure {
        y.push_str(
            "    protocol: h2c                 # the server speaks HTTP/2 with prior knowledge (gRPC)\n",
        );
    } else if secure && h2 {
        y.push_str("    protocol: auto                # HTTP/2 when ALPN agrees, as it did\n");
    }
    if secure && (tls.cacert.is_some() || tls.client.is_some()) {
        y.push_str("    tls:\n");
        if let Some(ca) = &tls.cacert {
            let _ = writeln!(y, "      ca: {}", q(&ca.display().to_string()));
        }
        if let Some((cert, key)) = &tls.client {
            let _ = writeln!(y, "      cert: {}             # mutual TLS", q(&cert.display().to_string()));
            let _ = writeln!(y, "      key: {}", q(&key.display().to_string()));
        }
    } else if r.tls.as_ref().is_some_and(|t| t.client_cert_requested && !t.client_cert_sent) {
        y.push_str(
            "    # tls: { cert: client.pem, key: client.key }   # the server asks for a client certificate\n",
        );
    }
    if let Some(c) = credentials(r, &env, &mut env_vars) {
        y.push_str(&c);
    }
    if let Some(rate) = rate(r) {
        let _ = writeln!(y, "    rate_limit: {{ rate: {rate} }}        # what the server states it allows");
    }
    if let Some(g) = grpc.filter(|g| !g.services.is_empty()) {
        let services: Vec<&String> =
            g.services.iter().filter(|s| !s.starts_with("grpc.") && grpc_name(s)).collect();
        let _ = writeln!(
            y,
            "grpc:\n  services:\n    {name}:\n      upstream: {name}\n      descriptors: {{ reflection: true }}   # the server lists: {}",
            g.services.iter().filter(|s| grpc_name(s)).cloned().collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(y, "routes:");
        let _ = writeln!(
            y,
            "  - {{ name: {name}-json, match: {{ path_prefix: /{name} }}, grpc_transcode: {{ service: {name} }} }}"
        );
        for (i, s) in services.iter().enumerate() {
            let _ = writeln!(
                y,
                "  - {{ name: {name}-grpc-{i}, match: {{ grpc_service: {s} }}, upstream: {name} }}"
            );
        }
    } else if let Some(wsdl) = r.protocols.get("soap").and_then(|s| s.url.as_deref()) {
        let _ = writeln!(
            y,
            "soap:\n  services:\n    {name}:\n      upstream: {name}\n      wsdl: {}   # fetched at start, kept in the state store",
            q(wsdl)
        );
        let _ = writeln!(
            y,
            "routes:\n  - {{ name: {name}-soap, match: {{ path_prefix: /{name} }}, soap: {{ service: {name} }} }}   # POST /{name}/{{Operation}} with JSON"
        );
    } else {
        if grpc.is_some() {
            y.push_str(
                "# gRPC without reflection: add grpc.services with `descriptors: { protos: [...] }` to transcode it.\n",
            );
        }
        let _ = writeln!(
            y,
            "routes:\n  - {{ name: {name}, match: {{ path_prefix: /{name} }}, upstream: {name}, strip_prefix: /{name} }}"
        );
    }
    if r.protocols.get("soap").is_some_and(|s| s.url.is_none()) {
        y.push_str(
            "# SOAP without a WSDL at ?wsdl: give soap.services a `wsdl` file to expose it as JSON.\n",
        );
    }
    let mut out = String::from(
        "# A bridgehead.yaml fragment for what `bridgehead probe` found; `bridgehead config check` takes it.\n",
    );
    if !env_vars.is_empty() {
        let _ = writeln!(out, "# Set first: {}", env_vars.join(", "));
    }
    out.push_str(&y);
    Some(out)
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is YAML's): what a server sent
/// cannot end the value or add keys.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A gRPC service name as routes take it (`package.Service`); anything else a server lists is
/// left out of the fragment.
fn grpc_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

/// A config name for `host`: lower case letters, digits and dashes.
fn upstream_name(host: &str) -> String {
    let mut n: String = host
        .trim_matches(['[', ']'])
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    n = n.trim_matches('-').to_owned();
    while n.contains("--") {
        n = n.replace("--", "-");
    }
    n.truncate(40);
    let n = n.trim_end_matches('-').to_owned();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) { format!("api-{n}") } else { n }
}

/// The credentials block for the first scheme the server asks for.
fn credentials(r: &Report, env: &str, vars: &mut Vec<String>) -> Option<String> {
    let mut var = |suffix: &str| {
        let v = format!("{env}_{suffix}");
        vars.push(v.clone());
        format!("${{env:{v}}}")
    };
    let oauth = r.oauth.as_ref().filter(|m| m.grant_types.iter().any(|g| g == "client_credentials"));
    for c in &r.auth {
        if c.is("bearer") {
            if let Some(token_url) = oauth.and_then(|m| m.token_endpoint.as_deref()) {
                let scope = c
                    .params
                    .iter()
                    .find(|(k, _)| k == "scope")
                    .map(|(_, v)| format!("\n        scope: {}", q(v)))
                    .unwrap_or_default();
                return Some(format!(
                    "    credentials:                  # the server's issuer grants client credentials\n      oauth2_client_credentials:\n        token_url: {}\n        client_id: \"{}\"\n        client_secret: \"{}\"{scope}\n",
                    q(token_url),
                    var("CLIENT_ID"),
                    var("CLIENT_SECRET")
                ));
            }
            return Some(format!("    credentials:\n      bearer: {{ token: \"{}\" }}\n", var("TOKEN")));
        }
        if c.is("basic") {
            return Some(format!(
                "    credentials:\n      basic: {{ username: \"{}\", password: \"{}\" }}\n",
                var("USERNAME"),
                var("PASSWORD")
            ));
        }
        if c.is("apikey") {
            let header = c
                .params
                .iter()
                .find(|(k, _)| k == "header" || k == "name")
                .map_or("X-API-Key", |(_, v)| v.as_str());
            if http::HeaderName::from_bytes(header.as_bytes()).is_ok() {
                return Some(format!(
                    "    credentials:\n      api_key: {{ header: {}, value: \"{}\" }}\n",
                    q(header),
                    var("API_KEY")
                ));
            }
        }
    }
    None
}

/// A rate under the tightest policy the server states, as `N/s`, `N/m` or `N/h`.
fn rate(r: &Report) -> Option<String> {
    let p = r
        .limits
        .policies
        .iter()
        .filter(|p| p.quota > 0 && p.unit.as_deref().is_none_or(|u| u == "requests"))
        .filter_map(|p| Some((p.quota, p.window_s.filter(|w| *w > 0)?)))
        .min_by(|a, b| (a.0 as f64 / a.1 as f64).total_cmp(&(b.0 as f64 / b.1 as f64)))?;
    let (quota, window) = p;
    Some(match window {
        1 => format!("{quota}/s"),
        60 => format!("{quota}/m"),
        3600 => format!("{quota}/h"),
        w if w < 60 => format!("{}/m", quota.saturating_mul(60) / w),
        w => format!("{}/h", (quota.saturating_mul(3600) / w).max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_config_friendly() {
        assert_eq!(upstream_name("API.Customer.example"), "api-customer-example");
        assert_eq!(upstream_name("127.0.0.1"), "api-127-0-0-1");
        assert_eq!(upstream_name("[::1]"), "api-1");
        assert_eq!(upstream_name("---"), "api-");
    }
}
