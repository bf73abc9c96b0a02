//! The report for people: one line per step, then what the answer said.

use std::fmt::Write as _;

use crate::Report;

/// Text from a certificate, with control characters escaped (a certificate that did not verify
/// may say anything, and a terminal must not take it as commands).
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

/// The report as text, ending with the verdict.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: &str| {
        let _ = writeln!(out, "{label:<10}{text}");
    };
    line("URL", &clean(&r.url));
    if let Some(d) = &r.dns {
        let addrs: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
        line("DNS", &format!("{} ({} ms, from {})", addrs.join(", "), d.ms, d.source));
        if !d.cname_chain.is_empty() {
            line("", &format!("CNAME chain {}", clean(&d.cname_chain.join(" → "))));
        }
        for rec in &d.records {
            line("", &format!("{} {} {} (TTL {}s)", clean(&rec.name), rec.kind, clean(&rec.value), rec.ttl));
        }
        for s in &d.servers {
            let why = s.error.as_deref().map(|e| format!(": {}", clean(e))).unwrap_or_default();
            line("", &format!("server {} {} ({} ms){why}", s.server, s.outcome, s.ms));
        }
    }
    for c in &r.tcp {
        let why = c.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        line("TCP", &format!("{} {} ({} ms){why}", c.address, c.outcome, c.ms));
    }
    if let Some(t) = &r.tls {
        let alpn = t.alpn.as_deref().unwrap_or("none");
        line("TLS", &format!("{} {}, ALPN {alpn}", t.version, t.cipher));
        match &t.verify_error {
            None => line("", "certificate chain verified for the host name"),
            Some(e) => line("", &format!("certificate chain NOT verified: {e}")),
        }
        let client = match (t.client_cert_requested, t.client_cert_sent) {
            (false, _) => "client certificate: not requested",
            (true, true) => "client certificate: requested, sent (mutual TLS)",
            (true, false) => "client certificate: requested, none sent (mutual TLS: give --cert and --key)",
        };
        line("", client);
        for (i, c) in t.chain.iter().enumerate() {
            let sans = if c.sans.is_empty() {
                String::new()
            } else {
                format!("; names {}", clean(&c.sans.join(", ")))
            };
            let expiry = if c.days_left < 0 {
                format!("EXPIRED {} days ago", -c.days_left)
            } else {
                format!("expires in {} days", c.days_left)
            };
            line(
                if i == 0 { "cert" } else { "" },
                &format!("{}; issuer {}{sans}; {expiry}", clean(&c.subject), clean(&c.issuer)),
            );
        }
    }
    if let Some(h) = &r.http {
        let ct = h.content_type.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        line("HTTP", &format!("{} {} ({} ms){ct}", h.version, h.status, h.ms));
    }
    for c in &r.auth {
        let mut text = c.scheme.clone();
        if let Some(t) = &c.token68 {
            let _ = write!(text, " {t}");
        }
        let params: Vec<String> = c.params.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
        if !params.is_empty() {
            let _ = write!(text, " {}", params.join(", "));
        }
        line("auth", &text);
    }
    if !r.limits.is_empty() {
        let mut text = Vec::new();
        for p in &r.limits.policies {
            let window = p.window_s.map(|w| format!(" per {w}s")).unwrap_or_default();
            let name = p.name.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
            text.push(format!("{name}{}{window}", p.quota));
        }
        for s in &r.limits.current {
            let mut t = s.name.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
            if let Some(r) = s.remaining {
                let _ = write!(t, "{r} left");
            }
            if let Some(l) = s.limit {
                let _ = write!(t, " of {l}");
            }
            if let Some(reset) = s.reset_s {
                let _ = write!(t, ", resets in {reset}s");
            }
            text.push(t.trim().to_owned());
        }
        if let Some(s) = r.limits.retry_after_s {
            text.push(format!("retry after {s}s"));
        }
        line("limits", &format!("{} ({})", text.join("; "), r.limits.shapes.join(", ")));
    }
    if r.http.is_some() {
        let b = &r.behaviour;
        let mut text = vec![format!("keep-alive {}", if b.keep_alive { "yes" } else { "no" })];
        text.push(format!("compression {}", b.compression.as_deref().unwrap_or("none")));
        if let Some(h) = &b.hsts {
            let mut t = format!("HSTS max-age {}s", h.max_age_s);
            if h.include_subdomains {
                t.push_str(" includeSubDomains");
            }
            if h.preload {
                t.push_str(" preload");
            }
            text.push(t);
        }
        if let Some(c) = &b.cors {
            let creds = if c.allow_credentials { " with credentials" } else { "" };
            text.push(format!("CORS allows {}{creds}", c.allow_origin));
        }
        line("behaviour", &text.join("; "));
    }
    for h in &r.hints {
        line(if h.gateway { "in front" } else { "server" }, &format!("{} ({})", h.product, h.evidence));
    }
    if let Some(l) = &r.latency {
        let stopped = l.error.as_deref().map(|e| format!("; stopped: {e}")).unwrap_or_default();
        line(
            "latency",
            &format!(
                "{} GETs: p50 {} ms, p99 {} ms (min {}, max {}){stopped}",
                l.samples, l.p50_ms, l.p99_ms, l.min_ms, l.max_ms
            ),
        );
    }
    for f in &r.protocols.found {
        let version = f.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
        line("speaks", &format!("{}{version}: {}", f.protocol, clean(&f.evidence)));
        if let Some(u) = &f.url {
            line("", &format!("at {}", clean(u)));
        }
        if let Some(t) = &f.title {
            line("", &format!("title {}", clean(t)));
        }
        if !f.services.is_empty() {
            line("", &format!("services {}", clean(&f.services.join(", "))));
        }
        if !f.operations.is_empty() {
            let shown: Vec<&str> = f.operations.iter().take(12).map(String::as_str).collect();
            let more = f.operations.len().saturating_sub(shown.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            line("", &format!("operations {}{more}", clean(&shown.join(", "))));
        }
    }
    for t in &r.protocols.tried {
        line("tried", &format!("{}: {}", clean(&t.probe), clean(&t.outcome)));
    }
    if let Some(m) = &r.oauth {
        line("oauth", &format!("metadata at {}", clean(&m.url)));
        let field = |name: &str, v: &Option<String>| v.as_ref().map(|v| format!("{name} {}", clean(v)));
        for text in [
            field("issuer", &m.issuer),
            field("token endpoint", &m.token_endpoint),
            field("authorization endpoint", &m.authorization_endpoint),
            field("JWKS", &m.jwks_uri),
            Some(format!("grants {}", clean(&m.grant_types.join(", ")))),
            (!m.pkce_methods.is_empty()).then(|| format!("PKCE {}", clean(&m.pkce_methods.join(", ")))),
        ]
        .into_iter()
        .flatten()
        {
            line("", &text);
        }
        for w in &m.warnings {
            line("", &format!("WARNING: {}", clean(w)));
        }
    }
    if let Some(b) = &r.bearer {
        line("token", b.format);
        for (claim, verdict) in &b.checks {
            line("", &format!("{claim}: {}", clean(verdict)));
        }
        match (b.status_with_token, &b.not_sent) {
            (Some(s), _) => line("", &format!("GET with the token: {s}")),
            (None, Some(why)) => line("", &format!("GET with the token: {}", clean(why))),
            (None, None) => {}
        }
    }
    if let Some(c) = &r.suggested_config {
        line("config", "a bridgehead.yaml fragment for what was found:");
        for l in c.lines() {
            line("", &clean(l));
        }
    }
    match &r.failed {
        None => line("result", "reachable"),
        Some(f) => line("result", &format!("FAILED at {}: {}", f.step, f.reason)),
    }
    out
}
