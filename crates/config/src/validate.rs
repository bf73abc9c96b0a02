//! Whole-config checks that serde cannot express: cross references, value ranges, and
//! combinations (a public admin listener needs a token).

use std::collections::{BTreeSet, HashMap};

use crate::canonical::{canonical_host, normalize_path};
use crate::model::PathNormalization;
use crate::model::{
    ApiKeyAuth, Authenticator, CircuitBreaker, ClientAuth, Config, Idempotency, IntrospectionAuth, JwtAuth,
    RateLimitPolicy, RateLimits, RequestKey, Retry, Route, Upstream, UpstreamProtocol,
};
use crate::pattern::{
    PathTemplate, Segment, check_path, covers, has_segment_prefix, reserved_overlap, specificity,
};
use crate::yaml::{join_index, join_key};

/// A problem at a key path.
pub type Problem = (String, String);

/// Checks `config`; returns every problem found.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    server(config, &mut p);
    admin(config, &mut p);
    state(config, &mut p);
    for (name, upstream) in &config.upstreams {
        self::upstream(name, upstream, config.server.limits.max_buffered, &mut p);
    }
    for (name, a) in &config.authenticators {
        authenticator(config, name, a, &mut p);
    }
    routes(config, &mut p);
    if let Some(o) = &config.oauth_server {
        oauth_server(o, &mut p);
    }
    webhooks(config, &mut p);
    outbound_webhooks(config, &mut p);
    grpc_services(config, &mut p);
    soap_services(config, &mut p);
    telemetry(config, &mut p);
    p
}

/// `telemetry.traces`: a collector URL the protocol can use, a ratio, export headers, limits.
fn telemetry(c: &Config, p: &mut Vec<Problem>) {
    let Some(t) = &c.telemetry.traces else { return };
    let base = "telemetry.traces";
    let key = |k: &str| join_key(base, k);
    match check_collector_url(&t.endpoint, t.protocol) {
        Ok(uri) => {
            if uri.scheme_str() == Some("http") && t.tls.is_some() {
                push(p, key("tls"), "is for an https:// endpoint; this one is http://");
            }
        }
        Err(e) => push(p, key("endpoint"), e),
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        push(p, key("sample_ratio"), format!("{} is not between 0.0 and 1.0", t.sample_ratio));
    }
    for (name, value) in &t.headers {
        let hk = join_key(&key("headers"), name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(p, hk, "is not a valid header name");
        } else if http::HeaderValue::from_str(value.expose()).is_err() {
            // The value is a secret: the problem says what is wrong, not what it is.
            push(p, hk, "has a value that is not a valid header value (control characters or non-ASCII)");
        } else if matches!(
            name.to_ascii_lowercase().as_str(),
            "content-type" | "content-encoding" | "content-length" | "te" | "host"
        ) {
            push(p, hk, "is set by the exporter itself");
        }
    }
    if t.max_queue == 0 {
        push(p, key("max_queue"), "must be more than 0");
    }
    if t.max_batch == 0 || t.max_batch > t.max_queue {
        push(p, key("max_batch"), format!("must be between 1 and max_queue ({})", t.max_queue));
    }
    // Spans reach the collector within 5 s of their request (`interval`); an export request
    // holds the exporter at most a minute.
    for (name, d, most) in [("interval", t.interval, 5), ("timeout", t.timeout, 60)] {
        if d.get().is_zero() || d.get() > std::time::Duration::from_secs(most) {
            push(p, key(name), format!("must be greater than 0 and at most {most}s"));
        }
    }
}

/// A collector's base URL: http(s), a host, no credentials or query; a path (a prefix for
/// `/v1/traces`) only with OTLP over HTTP.
pub fn check_collector_url(url: &str, protocol: crate::model::OtlpProtocol) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("`{url}`: credentials in the URL are not allowed; use `headers`"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query"));
    }
    if protocol == crate::model::OtlpProtocol::Grpc && !matches!(uri.path(), "" | "/") {
        return Err(format!("`{url}`: an OTLP/gRPC endpoint has no path"));
    }
    Ok(uri)
}

/// `webhooks.inbound`: names, paths, signature settings, forward targets. Secrets, templates
/// and schema files are checked when the receivers are built (`config check` does that too).
fn webhooks(c: &Config, p: &mut Vec<Problem>) {
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for (i, w) in c.webhooks.inbound.iter().enumerate() {
        let base = join_index("webhooks.inbound", i);
        let key = |k: &str| join_key(&base, k);
        if !valid_name(&w.name) {
            push(
                p,
                key("name"),
                format!("`{}` is not a valid name (letters, digits, `-`, `_`, `.`; at most 64)", w.name),
            );
        } else if !names.insert(w.name.as_str()) {
            push(p, key("name"), format!("`{}` names another receiver too", w.name));
        }
        if builtin_path(c, &w.path, &key("path"), "receiver", p) && !paths.insert(w.path.as_str()) {
            push(p, key("path"), format!("`{}` is the path of another receiver too", w.path));
        }
        let v = &w.verify;
        webhook_verify(&key("verify"), v, p);
        if w.schema.is_some() && w.schemas.is_some() {
            push(p, base.clone(), "has both `schema` and `schemas`; keep one");
        }
        if let Some(s) = &w.schemas {
            if !(s.pointer.is_empty() || s.pointer.starts_with('/')) {
                push(
                    p,
                    join_key(&key("schemas"), "pointer"),
                    format!("`{}` is not a JSON pointer (it starts with `/`)", s.pointer),
                );
            }
            if s.types.is_empty() {
                push(p, join_key(&key("schemas"), "types"), "lists no event type");
            }
        }
        if let Some(id) = &w.id {
            match (&id.header, &id.pointer) {
                (Some(h), None) => check_header_name(&join_key(&key("id"), "header"), h, p),
                (None, Some(ptr)) if ptr.starts_with('/') => {}
                (None, Some(ptr)) => push(
                    p,
                    join_key(&key("id"), "pointer"),
                    format!("`{ptr}` is not a JSON pointer (it starts with `/`)"),
                ),
                _ => push(p, key("id"), "needs exactly one of `header` or `pointer`"),
            }
        }
        if !c.upstreams.contains_key(&w.forward.upstream) {
            push(
                p,
                join_key(&key("forward"), "upstream"),
                format!("no upstream is named `{}`", w.forward.upstream),
            );
        }
        if !w.forward.path.starts_with('/') || w.forward.path.parse::<http::uri::PathAndQuery>().is_err() {
            push(
                p,
                join_key(&key("forward"), "path"),
                format!("`{}` is not a path starting with `/`", w.forward.path),
            );
        }
        if w.max_body.get() == 0 || w.max_body.get() > c.server.limits.max_body.get() {
            push(
                p,
                key("max_body"),
                format!(
                    "must be more than 0 and at most server.limits.max_body ({})",
                    c.server.limits.max_body
                ),
            );
        }
        if w.retention.get() < v.tolerance.get() * 2 {
            push(
                p,
                key("retention"),
                "must be at least twice verify.tolerance (a timestamp may be that far ahead or behind): a delivery sent again after its id was forgotten, yet within the tolerance, would be forwarded twice",
            );
        }
        for (j, d) in w.retry_schedule.iter().enumerate() {
            if d.get().is_zero() {
                push(p, join_index(&key("retry_schedule"), j), "must be more than 0");
            }
        }
    }
}

/// The exact path of a built-in route (a receiver's, the intake's) at `key`: absolute,
/// canonical, clear of the authorization server's paths and of every route's exact path (the
/// built-in `what` answers first). False when it does not even start with `/`.
fn builtin_path(c: &Config, path: &str, key: &str, what: &str, p: &mut Vec<Problem>) -> bool {
    if !path.starts_with('/') {
        push(p, key, format!("`{path}` must start with `/`"));
        return false;
    }
    check_canonical(path, path, &c.server.path_normalization, key, p);
    let as_route = crate::model::RouteMatch { path: Some(path.to_owned()), ..Default::default() };
    if c.oauth_server.is_some()
        && let Some(reserved) = reserved_overlap(&as_route)
    {
        push(
            p,
            key,
            format!("`{path}` is under `{reserved}`, which the built-in authorization server answers"),
        );
    }
    if let Some((j, r)) = c.routes.iter().enumerate().find(|(_, r)| r.matcher.path.as_deref() == Some(path)) {
        push(
            p,
            key,
            format!(
                "route `{}` (routes[{j}]) has the same path; the {what} answers it first, so that route would never get it",
                r.name
            ),
        );
    }
    true
}

/// `webhooks.outbound` and `webhooks.event_types`. Secrets and schema files are checked when
/// the dispatcher is built (`config check` does that too).
fn outbound_webhooks(c: &Config, p: &mut Vec<Problem>) {
    for t in c.webhooks.event_types.keys() {
        if let Err(e) = check_event_type(t) {
            push(p, join_key("webhooks.event_types", t), e);
        }
    }
    let Some(o) = &c.webhooks.outbound else { return };
    let base = "webhooks.outbound";
    let key = |k: &str| join_key(base, k);
    if builtin_path(c, &o.intake, &key("intake"), "intake", p)
        && let Some(w) = c.webhooks.inbound.iter().find(|w| w.path == o.intake)
    {
        push(p, key("intake"), format!("`{}` is the path of receiver `{}` too", o.intake, w.name));
    }
    for (j, a) in o.auth.iter().enumerate() {
        if !c.authenticators.contains_key(a) {
            push(p, join_index(&key("auth"), j), format!("no authenticator is named `{a}`"));
        }
    }
    if !o.require_scopes.is_empty() && o.auth.is_empty() {
        push(p, key("require_scopes"), "needs `auth`: scopes come from an authenticated credential");
    }
    for (j, d) in o.retry_schedule.iter().enumerate() {
        if d.get().is_zero() {
            push(p, join_index(&key("retry_schedule"), j), "must be more than 0");
        }
    }
    if o.max_body.get() == 0 || o.max_body.get() > c.server.limits.max_body.get() {
        push(
            p,
            key("max_body"),
            format!("must be more than 0 and at most server.limits.max_body ({})", c.server.limits.max_body),
        );
    }
    if o.retention.get().is_zero() {
        push(p, key("retention"), "must be more than 0");
    }
    if o.timeout.get().is_zero() || o.timeout.get() > std::time::Duration::from_secs(20) {
        push(
            p,
            key("timeout"),
            "must be more than 0 and at most 20s (an attempt must end well inside its 30s lease)",
        );
    }
    circuit_breaker(&key("circuit_breaker"), &o.circuit_breaker, p);
    let mut names = BTreeSet::new();
    for (i, e) in o.endpoints.iter().enumerate() {
        let ebase = join_index(&key("endpoints"), i);
        let ekey = |k: &str| join_key(&ebase, k);
        if !valid_name(&e.name) {
            push(
                p,
                ekey("name"),
                format!("`{}` is not a valid name (letters, digits, `-`, `_`, `.`; at most 64)", e.name),
            );
        } else if !names.insert(e.name.as_str()) {
            push(p, ekey("name"), format!("`{}` names another endpoint too", e.name));
        }
        if let Err(msg) = check_endpoint_url(&e.url, e.allow_private_network) {
            push(p, ekey("url"), msg);
        }
        if e.events.is_empty() {
            push(p, ekey("events"), "lists no event type (`*` takes every type)");
        }
        for (j, pat) in e.events.iter().enumerate() {
            if let Err(msg) = check_event_type(pat) {
                push(p, join_index(&ekey("events"), j), msg);
            }
        }
        if e.secret.is_none() && e.secrets.is_empty() {
            push(p, ebase.clone(), "needs `secret` (or `secrets` while rotating): `whsec_…` or `whsk_…`");
        }
        if e.secret.is_some() && !e.secrets.is_empty() {
            push(p, ebase.clone(), "has both `secret` and `secrets`; list every secret under `secrets`");
        }
    }
}

/// An event type, or a pattern of them: visible ASCII, 1 to 256 characters.
pub fn check_event_type(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("`{t}` is not an event type (1 to 256 visible ASCII characters, no spaces)"));
    }
    Ok(())
}

/// An outbound webhook endpoint's URL: `http(s)://host[:port][/path][?query]`, no credentials,
/// at most 2048 characters; its origin and its path. An IP literal in an internal range is
/// refused unless `allow_private_network` ([`crate::netguard`]; names are checked after DNS).
pub fn check_endpoint_url(
    url: &str,
    allow_private_network: bool,
) -> Result<(http::Uri, http::uri::PathAndQuery), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    let Some(authority) = uri.authority().cloned() else { return Err(format!("`{url}` has no host")) };
    if authority.host().is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if authority.as_str().contains('@') {
        return Err(format!("`{url}`: credentials in the URL are not allowed"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if !allow_private_network
        && let Ok(ip) = host.parse::<std::net::IpAddr>()
        && let Some(range) = crate::netguard::internal_range(ip)
    {
        return Err(format!(
            "`{url}` is an address in the {range} range, refused for webhooks unless the endpoint says allow_private_network: true"
        ));
    }
    let path = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let origin = http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    Ok((origin, path))
}

/// `webhooks.inbound[].verify`: one secret source, a tolerance, and the keys of the hmac scheme
/// only where the scheme is hmac.
fn webhook_verify(base: &str, v: &crate::model::WebhookVerify, p: &mut Vec<Problem>) {
    use crate::model::WebhookScheme;
    let vkey = |k: &str| join_key(base, k);
    if v.secret.is_none() && v.secrets.is_empty() {
        push(p, base, "needs `secret` (or `secrets` while rotating)");
    }
    if v.secret.is_some() && !v.secrets.is_empty() {
        push(p, base, "has both `secret` and `secrets`; list every secret under `secrets`");
    }
    if v.tolerance.get().is_zero() {
        push(p, vkey("tolerance"), "must be more than 0");
    }
    let hmac_keys = [
        ("header", v.header.is_some()),
        ("prefix", !v.prefix.is_empty()),
        ("timestamp_header", v.timestamp_header.is_some()),
        ("id_header", v.id_header.is_some()),
        ("content", v.content != "{body}"),
    ];
    if v.scheme == WebhookScheme::Hmac {
        match &v.header {
            None => {
                push(p, vkey("header"), "the hmac scheme needs the header that carries the signature");
            }
            Some(h) => check_header_name(&vkey("header"), h, p),
        }
        for (k, h) in [("timestamp_header", &v.timestamp_header), ("id_header", &v.id_header)] {
            if let Some(h) = h {
                check_header_name(&vkey(k), h, p);
            }
        }
        if v.timestamp_header.is_some() && !v.content.contains("{timestamp}") {
            push(
                p,
                vkey("timestamp_header"),
                "is checked against the tolerance only when it is signed: add `{timestamp}` to `content`, or remove it",
            );
        }
    } else {
        for (k, set) in hmac_keys {
            if set {
                push(
                    p,
                    vkey(k),
                    format!("applies to the hmac scheme only; the {} scheme fixes it", scheme_name(v.scheme)),
                );
            }
        }
    }
}

fn scheme_name(s: crate::model::WebhookScheme) -> &'static str {
    use crate::model::WebhookScheme::*;
    match s {
        Standard => "standard",
        Stripe => "stripe",
        Github => "github",
        Slack => "slack",
        Hmac => "hmac",
    }
}

const GRANTS: &[&str] = &["client_credentials", "authorization_code", "refresh_token"];

fn oauth_server(o: &crate::model::OAuthServer, p: &mut Vec<Problem>) {
    let base = "oauth_server";
    match o.issuer.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && !o.issuer.contains('#') => {}
        _ => push(
            p,
            join_key(base, "issuer"),
            format!("`{}` must be an http(s) URL without query or fragment", o.issuer),
        ),
    }
    if o.issuer.ends_with('/') {
        push(p, join_key(base, "issuer"), "must not end with `/` (it is compared exactly with `iss`)");
    }
    if o.access_token_ttl.get() < std::time::Duration::from_secs(10)
        || o.access_token_ttl.get() > std::time::Duration::from_secs(24 * 3600)
    {
        push(p, join_key(base, "access_token_ttl"), "must be between 10s and 24h");
    }
    if o.token_rate_per_ip == 0 {
        push(p, join_key(base, "token_rate_per_ip"), "must be at least 1");
    }
    let mut seen = BTreeSet::new();
    for (i, c) in o.clients.iter().enumerate() {
        let cp = join_index(&join_key(base, "clients"), i);
        if !c.client_id.is_empty() && !seen.insert(c.client_id.as_str()) {
            push(p, join_key(&cp, "client_id"), format!("`{}` is listed twice", c.client_id));
        }
        for (path, msg) in check_oauth_client(c) {
            push(p, if path.is_empty() { cp.clone() } else { join_key(&cp, &path) }, msg);
        }
    }
    for (i, u) in o.users.iter().enumerate() {
        let up = join_index(&join_key(base, "users"), i);
        if u.username.is_empty() || u.username.chars().any(char::is_control) {
            push(p, join_key(&up, "username"), "must be non-empty printable text");
        }
        if !u.password_hash.expose().starts_with("$argon2") {
            push(p, join_key(&up, "password_hash"), "must be an argon2 PHC string (`$argon2id$v=19$...`)");
        }
    }
}

fn rustls_pki_types_name_ok(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && (name.parse::<std::net::IpAddr>().is_ok()
            || name.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if ok { Ok(()) } else { Err(()) }
}

fn credentials(base: &str, c: &crate::model::Credentials, p: &mut Vec<Problem>) {
    use crate::model::Credentials::*;
    match c {
        Oauth2ClientCredentials(o) => {
            let op = join_key(base, "oauth2_client_credentials");
            check_fetch_url(&join_key(&op, "token_url"), &o.token_url, p);
            if o.client_id.is_empty() {
                push(p, join_key(&op, "client_id"), "is empty");
            }
            if o.client_secret.expose().is_empty() {
                push(p, join_key(&op, "client_secret"), "is empty");
            }
            if o.timeout.get().is_zero() {
                push(p, join_key(&op, "timeout"), "must be greater than 0");
            }
        }
        Bearer(b) => {
            if b.token.expose().is_empty() || http::HeaderValue::from_str(b.token.expose()).is_err() {
                push(
                    p,
                    join_key(&join_key(base, "bearer"), "token"),
                    "must be a non-empty header-safe string",
                );
            }
        }
        ApiKey(k) => {
            let kp = join_key(base, "api_key");
            let framing = [
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "te",
                "upgrade",
                "trailer",
                "keep-alive",
            ];
            if framing.contains(&k.header.to_ascii_lowercase().as_str()) {
                push(
                    p,
                    join_key(&kp, "header"),
                    format!("`{}` carries message framing; pick another header", k.header),
                );
            } else {
                check_header_name(&join_key(&kp, "header"), &k.header, p);
            }
            if k.value.expose().is_empty() || http::HeaderValue::from_str(k.value.expose()).is_err() {
                push(p, join_key(&kp, "value"), "must be a non-empty header-safe string");
            }
        }
        Basic(b) => {
            if b.username.contains(':') {
                push(p, join_key(&join_key(base, "basic"), "username"), "must not contain `:` (RFC 7617)");
            }
        }
    }
}

/// JWS algorithms Bridgehead verifies (RFC 7518 names; `none` is never accepted).
pub const JWS_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384",
    "HS512",
];

/// Minimum HMAC secret length for an algorithm: the hash output size (RFC 7518 §3.2).
fn hmac_min_len(alg: &str) -> Option<usize> {
    match alg {
        "HS256" => Some(32),
        "HS384" => Some(48),
        "HS512" => Some(64),
        _ => None,
    }
}

fn authenticator(c: &Config, name: &str, a: &Authenticator, p: &mut Vec<Problem>) {
    let base = join_key("authenticators", name);
    if !valid_name(name) {
        push(p, &base, "an authenticator name is 1 to 64 letters, digits, `-`, `_` or `.`");
    }
    match a {
        Authenticator::Jwt(j) => jwt(c, &join_key(&base, "jwt"), j, p),
        Authenticator::ApiKey(k) => api_key(&join_key(&base, "api_key"), k, p),
        Authenticator::Mtls(m) => {
            let mp = join_key(&base, "mtls");
            let tls = c.server.tls.as_ref();
            if tls.and_then(|t| t.client_ca.as_ref()).is_none() {
                push(
                    p,
                    &mp,
                    "needs server.tls.client_ca so that the listener asks for and verifies client certificates",
                );
            } else if tls.is_some_and(|t| t.client_auth == ClientAuth::Required) {
                // Fine: every connection has a certificate; the authenticator still checks subjects.
            }
            for (i, s) in m.subjects.iter().enumerate() {
                if s.trim().is_empty() {
                    push(p, join_index(&join_key(&mp, "subjects"), i), "is empty");
                }
            }
            for (key, h) in [("subject_header", &m.subject_header), ("san_header", &m.san_header)] {
                check_identity_header(&join_key(&mp, key), h, p);
            }
        }
        Authenticator::Introspection(i) => introspection(&join_key(&base, "introspection"), i, p),
    }
}

fn check_header_name(path: &str, name: &str, p: &mut Vec<Problem>) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        push(p, path, format!("`{name}` is not a valid header name"));
    }
}

fn check_fetch_url(path: &str, url: &str, p: &mut Vec<Problem>) {
    match url.parse::<http::Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                push(p, path, format!("`{url}`: credentials in URLs are not allowed"));
            }
            // Keys or tokens sent over plain HTTP could be replaced or read by anyone on the path.
            let host = u.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if u.scheme_str() == Some("http") && !loopback {
                push(
                    p,
                    path,
                    format!(
                        "`{url}`: use https; plain http is allowed only to a loopback address, since anyone on the path could change keys or read tokens"
                    ),
                );
            }
        }
        _ => push(p, path, format!("`{url}` is not an http:// or https:// URL")),
    }
}

fn check_token_source(base: &str, header: Option<&String>, cookie: Option<&String>, p: &mut Vec<Problem>) {
    if let Some(h) = header {
        check_header_name(&join_key(base, "header"), h, p);
    }
    if let Some(c) = cookie
        && !is_token(c)
    {
        push(p, join_key(base, "cookie"), format!("`{c}` is not a valid cookie name"));
    }
}

/// Headers the gateway manages or that carry framing or credentials: never identity headers.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "authorization",
    "cookie",
    "set-cookie",
    "x-consumer-id",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
    "content-type",
];

fn check_identity_header(path: &str, name: &str, p: &mut Vec<Problem>) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        push(p, path, format!("`{name}` is not a valid header name"));
    } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        push(
            p,
            path,
            format!(
                "`{name}` is managed by the gateway or carries framing or credentials; pick another header name"
            ),
        );
    }
}

fn check_claim_headers(base: &str, map: &std::collections::BTreeMap<String, String>, p: &mut Vec<Problem>) {
    let mp = join_key(base, "claims_to_headers");
    for (claim, header) in map {
        check_identity_header(&join_key(&mp, claim), header, p);
    }
}

fn jwt(c: &Config, base: &str, j: &JwtAuth, p: &mut Vec<Problem>) {
    let local = j.issuer.as_deref() == Some("local");
    let sources =
        [j.jwks_url.is_some(), j.jwks_file.is_some(), j.public_key_file.is_some(), j.secret.is_some()];
    if local && c.oauth_server.is_none() {
        push(
            p,
            join_key(base, "issuer"),
            "`local` trusts the built-in OAuth server: configure `oauth_server`",
        );
    }
    if local && sources.iter().any(|s| *s) {
        push(p, base, "`issuer: local` takes its keys from the built-in OAuth server; remove the key source");
    }
    match sources.iter().filter(|s| **s).count() {
        0 if local => {}
        0 => push(p, base, "needs a key source: one of jwks_url, jwks_file, public_key_file or secret"),
        1 => {}
        _ => push(
            p,
            base,
            "has more than one key source; keep exactly one of jwks_url, jwks_file, public_key_file, secret",
        ),
    }
    if let Some(url) = &j.jwks_url {
        check_fetch_url(&join_key(base, "jwks_url"), url, p);
    }
    let ap = join_key(base, "algorithms");
    for (i, alg) in j.algorithms.iter().enumerate() {
        if alg.eq_ignore_ascii_case("none") {
            push(p, join_index(&ap, i), "`none` means an unsigned token and is never accepted");
        } else if !JWS_ALGORITHMS.contains(&alg.as_str()) {
            push(
                p,
                join_index(&ap, i),
                format!("unknown algorithm `{alg}`; supported: {}", JWS_ALGORITHMS.join(", ")),
            );
        }
    }
    let hmac: Vec<&String> = j.algorithms.iter().filter(|a| a.starts_with("HS")).collect();
    if let Some(secret) = &j.secret {
        if !j.algorithms.is_empty() && hmac.len() != j.algorithms.len() {
            push(
                p,
                &ap,
                "a `secret` verifies only HS256, HS384 or HS512; asymmetric algorithms need a public key source",
            );
        }
        let algs: Vec<&str> =
            if j.algorithms.is_empty() { vec!["HS256"] } else { hmac.iter().map(|a| a.as_str()).collect() };
        let need = algs.iter().filter_map(|a| hmac_min_len(a)).max().unwrap_or(32);
        let len = secret.expose().len();
        if len < need {
            push(
                p,
                join_key(base, "secret"),
                format!(
                    "is {len} bytes; {} needs at least {need} bytes (the hash output size)",
                    algs.join("/")
                ),
            );
        }
    } else if !hmac.is_empty() {
        push(p, &ap, "HS* algorithms need `secret`; a public key is never used as an HMAC secret");
    }
    if j.leeway.get() > std::time::Duration::from_secs(600) {
        push(p, join_key(base, "leeway"), "must be at most 10m");
    }
    // Floors that keep a typo from turning into a fetch storm against the identity provider.
    for (key, d, min) in [
        ("refresh", j.refresh, std::time::Duration::from_secs(1)),
        ("min_refresh_interval", j.min_refresh_interval, std::time::Duration::from_millis(10)),
        ("fetch_timeout", j.fetch_timeout, std::time::Duration::from_millis(1)),
    ] {
        if d.get() < min {
            push(p, join_key(base, key), format!("must be at least {}", humantime::format_duration(min)));
        }
    }
    if j.max_token_size.get() < 256 || j.max_token_size.get() > 1024 * 1024 {
        push(p, join_key(base, "max_token_size"), "must be between 256B and 1MiB");
    }
    if j.typ.as_deref().is_some_and(str::is_empty) {
        push(p, join_key(base, "typ"), "is empty; remove it to accept any typ");
    }
    for (claim, values) in &j.claims {
        if values.is_empty() {
            push(p, join_key(&join_key(base, "claims"), claim), "lists no value, so no token could match");
        }
    }
    check_token_source(base, j.header.as_ref(), j.cookie.as_ref(), p);
    check_claim_headers(base, &j.claims_to_headers, p);
}

fn api_key(base: &str, k: &ApiKeyAuth, p: &mut Vec<Problem>) {
    if let Some(h) = &k.header {
        check_header_name(&join_key(base, "header"), h, p);
    }
    if let Some(q) = &k.query
        && (q.is_empty() || !q.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        push(p, join_key(base, "query"), format!("`{q}` is not a plain query parameter name"));
    }
    if k.keys.is_empty() && !k.from_state {
        push(
            p,
            base,
            "has no keys: list them under `keys` or set `from_state: true` and use `bridgehead apikey create`",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, e) in k.keys.iter().enumerate() {
        let kp = join_index(&join_key(base, "keys"), i);
        if e.consumer.is_empty() || e.consumer.len() > 128 || e.consumer.chars().any(char::is_control) {
            push(p, join_key(&kp, "consumer"), "must be 1 to 128 printable characters");
        }
        let hex = e.sha256.to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            push(
                p,
                join_key(&kp, "sha256"),
                "must be the 64 hex digits of the key's SHA-256 (`printf %s KEY | sha256sum`)",
            );
        } else if !seen.insert(hex) {
            push(p, join_key(&kp, "sha256"), "this key is listed twice");
        }
    }
    if k.refresh.get().is_zero() {
        push(p, join_key(base, "refresh"), "must be greater than 0");
    }
}

fn introspection(base: &str, i: &IntrospectionAuth, p: &mut Vec<Problem>) {
    check_fetch_url(&join_key(base, "url"), &i.url, p);
    if i.client_id.is_empty() {
        push(p, join_key(base, "client_id"), "is empty");
    }
    if i.client_secret.expose().is_empty() {
        push(p, join_key(base, "client_secret"), "is empty");
    }
    if i.timeout.get().is_zero() {
        push(p, join_key(base, "timeout"), "must be greater than 0");
    }
    check_token_source(base, i.header.as_ref(), i.cookie.as_ref(), p);
    check_claim_headers(base, &i.claims_to_headers, p);
}

fn push(p: &mut Vec<Problem>, path: impl Into<String>, msg: impl Into<String>) {
    p.push((path.into(), msg.into()));
}

fn server(c: &Config, p: &mut Vec<Problem>) {
    let s = &c.server;
    if let Some(w) = s.workers
        && !(1..=1024).contains(&w)
    {
        push(p, "server.workers", format!("must be between 1 and 1024, got {w}"));
    }
    let l = &s.limits;
    if l.max_body.get() == 0 {
        push(p, "server.limits.max_body", "must be greater than 0");
    }
    let hb = l.max_header_bytes.get();
    if !(1024..=1024 * 1024).contains(&hb) {
        push(
            p,
            "server.limits.max_header_bytes",
            format!("must be between 1KiB and 1MiB, got {}", l.max_header_bytes),
        );
    }
    for (key, d) in [("header_timeout", l.header_timeout), ("idle_timeout", l.idle_timeout)] {
        if d.get().is_zero() {
            push(p, format!("server.limits.{key}"), "must be greater than 0");
        }
    }
    if l.max_connections == 0 {
        push(p, "server.limits.max_connections", "must be greater than 0");
    }
    let out = &s.access_log.output;
    if out.is_empty() || out.ends_with('/') || out.contains('\0') || matches!(out.as_str(), "-" | "stderr") {
        push(p, "server.access_log.output", format!("must be `stdout` or a file path, got `{out}`"));
    }
}

fn admin(c: &Config, p: &mut Vec<Problem>) {
    let a = &c.admin;
    if !a.listen.ip().is_loopback() && a.token.is_none() {
        push(
            p,
            "admin.listen",
            format!(
                "{} is not a loopback address: set admin.token (e.g. token: ${{env:BRIDGEHEAD_ADMIN_TOKEN}}) or listen on 127.0.0.1",
                a.listen
            ),
        );
    }
    if let Some(t) = &a.token
        && t.expose().len() < 16
    {
        push(p, "admin.token", "must be at least 16 characters long");
    }
    if a.listen.port() != 0 && a.listen == c.server.listen {
        push(
            p,
            "admin.listen",
            format!("{} is also server.listen; the admin plane needs its own port", a.listen),
        );
    }
}

fn state(c: &Config, p: &mut Vec<Problem>) {
    let url = &c.state.url;
    let ok = url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !ok {
        let scheme = url.split("://").next().unwrap_or(url);
        push(p, "state.url", format!("must start with sqlite:// or postgres://, got `{scheme}`"));
    }
    if let Some(redis) = &c.state.redis {
        let url = redis.expose();
        if !url.starts_with("redis://") {
            push(p, "state.redis", "must be a redis://host:port URL (TLS to Redis is not supported)");
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn upstream(name: &str, u: &Upstream, max_buffered: crate::units::ByteSize, p: &mut Vec<Problem>) {
    let base = join_key("upstreams", name);
    if !valid_name(name) {
        push(p, &base, "an upstream name is 1 to 64 letters, digits, `-`, `_` or `.`");
    }
    if u.targets.is_empty() {
        push(p, join_key(&base, "targets"), "needs at least one target");
    }
    let mut seen = BTreeSet::new();
    let mut total: u64 = 0;
    for (i, t) in u.targets.iter().enumerate() {
        let tp = join_index(&join_key(&base, "targets"), i);
        if let Err(e) = check_target_url(&t.url) {
            push(p, join_key(&tp, "url"), e);
        }
        if !seen.insert(t.url.trim_end_matches('/')) {
            push(p, join_key(&tp, "url"), format!("target {} is listed twice", t.url));
        }
        if t.weight > 10_000 {
            push(p, join_key(&tp, "weight"), format!("must be between 0 and 10000, got {}", t.weight));
        }
        total += u64::from(t.weight);
    }
    if !u.targets.is_empty() && total == 0 {
        push(p, join_key(&base, "targets"), "every target has weight 0, so none would get traffic");
    }
    protocol(&base, u, p);
    let t = &u.timeouts;
    for (key, d) in [("connect", t.connect), ("request", t.request)] {
        if d.get().is_zero() {
            push(p, format!("{base}.timeouts.{key}"), "must be greater than 0");
        }
    }
    if let Some(tls) = &u.tls {
        let tp = join_key(&base, "tls");
        if !u.targets.iter().any(|t| t.url.starts_with("https://")) {
            push(p, &tp, "applies only to https:// targets, and this upstream has none");
        }
        if tls.cert.is_some() != tls.key.is_some() {
            push(p, &tp, "a client certificate needs both `cert` and `key`");
        }
        if let Some(name) = &tls.server_name
            && rustls_pki_types_name_ok(name).is_err()
        {
            push(p, join_key(&tp, "server_name"), format!("`{name}` is not a DNS name or IP address"));
        }
    }
    if let Some(c) = &u.credentials {
        credentials(&join_key(&base, "credentials"), c, p);
    }
    if let Some(r) = &u.retry {
        retry(&join_key(&base, "retry"), r, p);
        if r.max_body > max_buffered {
            push(
                p,
                join_key(&join_key(&base, "retry"), "max_body"),
                format!("{} does not fit in server.limits.max_buffered ({max_buffered})", r.max_body),
            );
        }
    }
    if let Some(b) = &u.circuit_breaker {
        circuit_breaker(&join_key(&base, "circuit_breaker"), b, p);
    }
    if let Some(rl) = &u.rate_limit {
        let rp = join_key(&base, "rate_limit");
        if rl.burst == 0 {
            push(p, join_key(&rp, "burst"), "must be at least 1");
        }
        check_bucket_span(&rp, rl.rate, rl.burst, p);
        if rl.queue == 0 {
            push(p, join_key(&rp, "queue"), "must be at least 1");
        }
    }
    if let Some(key) = &u.sticky {
        // Routes decide whether a consumer is known; without one, all requests share a target.
        check_request_key(&join_key(&base, "sticky"), key, true, p);
        if matches!(key, RequestKey::Route) {
            push(
                p,
                join_key(&base, "sticky"),
                "`route` would send every request to one target; use consumer, ip, header:NAME or cookie:NAME",
            );
        }
    }
    if let Some(hc) = &u.health_check {
        let hp = join_key(&base, "health_check");
        if let Err(e) = check_path(&hc.path) {
            push(p, join_key(&hp, "path"), e);
        }
        if hc.interval.get().is_zero() {
            push(p, join_key(&hp, "interval"), "must be greater than 0");
        }
        if hc.timeout.get().is_zero() {
            push(p, join_key(&hp, "timeout"), "must be greater than 0");
        }
        for (key, n) in [("unhealthy_after", hc.unhealthy_after), ("healthy_after", hc.healthy_after)] {
            if n == 0 {
                push(p, join_key(&hp, key), "must be at least 1");
            }
        }
    }
}

/// A target URL is `http://host[:port]` or `https://host[:port]` with nothing after the authority.
/// `protocol` against the targets' schemes, and the HTTP/2 settings' bounds.
fn protocol(base: &str, u: &Upstream, p: &mut Vec<Problem>) {
    let key = join_key(base, "protocol");
    let wrong = match u.protocol {
        UpstreamProtocol::H2c => u.targets.iter().find(|t| t.url.starts_with("https://")).map(|t| {
            format!(
                "h2c is HTTP/2 over plain TCP, but target {} is https://; use `h2` (or `auto`) for TLS",
                t.url
            )
        }),
        UpstreamProtocol::H2 => u.targets.iter().find(|t| t.url.starts_with("http://")).map(|t| {
            format!(
                "h2 is HTTP/2 over TLS, but target {} is http://; use `h2c` for HTTP/2 over plain TCP",
                t.url
            )
        }),
        UpstreamProtocol::Http1 | UpstreamProtocol::Auto => None,
    };
    if let Some(message) = wrong {
        push(p, key, message);
    }
    let h = &u.http2;
    let hp = join_key(base, "http2");
    if h.max_concurrent_streams == 0 {
        push(p, join_key(&hp, "max_concurrent_streams"), "must be at least 1");
    }
    if !(1..=1024).contains(&h.max_connections) {
        push(p, join_key(&hp, "max_connections"), "must be between 1 and 1024");
    }
    if !(16 * 1024..(1 << 24)).contains(&h.max_frame_size.get()) {
        push(p, join_key(&hp, "max_frame_size"), "must be between 16KiB and 16MiB - 1 (RFC 9113 §6.5.2)");
    }
    for (name, size) in [
        ("initial_stream_window", h.initial_stream_window),
        ("initial_connection_window", h.initial_connection_window),
    ] {
        if size.get() < 65_535 || size.get() > (1 << 31) - 1 {
            push(p, join_key(&hp, name), "must be between 65535 bytes and 2GiB - 1 (RFC 9113 §6.9.2)");
        }
    }
    for (name, d) in
        [("keep_alive_interval", h.keep_alive_interval), ("keep_alive_timeout", h.keep_alive_timeout)]
    {
        if d.get().is_zero() {
            push(p, join_key(&hp, name), "must be greater than 0");
        }
    }
}

pub fn check_target_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {}
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("`{url}`: credentials in target URLs are not allowed"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{url}` must not have a path or query; use strip_prefix on the route to rewrite paths"
        ));
    }
    Ok(uri)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn routes(c: &Config, p: &mut Vec<Problem>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut matches: HashMap<String, &str> = HashMap::new();
    for (i, r) in c.routes.iter().enumerate() {
        let base = join_index("routes", i);
        if !valid_name(&r.name) {
            push(p, join_key(&base, "name"), "a route name is 1 to 64 letters, digits, `-`, `_` or `.`");
        } else if let Some(first) = names.insert(&r.name, i) {
            push(
                p,
                join_key(&base, "name"),
                format!("route name `{}` is already used by routes[{first}]", r.name),
            );
        }
        if let Some(t) = &r.soap {
            soap_route(c, r, &join_key(&base, "soap"), t, p);
        }
        match (&r.upstream, &r.grpc_transcode) {
            (Some(_), None) if r.soap.is_some() => push(
                p,
                join_key(&base, "upstream"),
                "a soap route takes its upstream from the SOAP service; remove `upstream`",
            ),
            (None, None) if r.soap.is_some() => {}
            (_, Some(_)) if r.soap.is_some() => {
                push(p, join_key(&base, "soap"), "a route is either grpc_transcode or soap, not both");
            }
            (Some(u), None) if !c.upstreams.contains_key(u) => {
                let known: Vec<&str> = c.upstreams.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none are defined".to_string()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                push(p, join_key(&base, "upstream"), format!("unknown upstream `{u}` ({known})"));
            }
            (Some(_), None) => {}
            (None, Some(t)) => grpc_transcode(c, r, &join_key(&base, "grpc_transcode"), t, p),
            (Some(_), Some(_)) => push(
                p,
                join_key(&base, "upstream"),
                "a grpc_transcode route takes its upstream from the gRPC service; remove `upstream`",
            ),
            (None, None) => push(p, &base, "needs `upstream` (or `grpc_transcode`, or `soap`)"),
        }
        route_match(r, &base, &c.server.path_normalization, p);
        upgrades(r, &base, p);
        for (j, a) in r.auth.iter().enumerate() {
            if !c.authenticators.contains_key(a) {
                let known: Vec<&str> = c.authenticators.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none are defined".to_string()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                push(
                    p,
                    join_index(&join_key(&base, "auth"), j),
                    format!("unknown authenticator `{a}` ({known})"),
                );
            } else if r.auth[..j].contains(a) {
                push(p, join_index(&join_key(&base, "auth"), j), format!("`{a}` is listed twice"));
            }
        }
        if !r.require_scopes.is_empty() && r.auth.is_empty() {
            push(
                p,
                join_key(&base, "require_scopes"),
                "needs `auth`: a public route has no caller whose scopes could be checked",
            );
        }
        for (j, s) in r.require_scopes.iter().enumerate() {
            if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\' || b >= 0x7f) {
                push(
                    p,
                    join_index(&join_key(&base, "require_scopes"), j),
                    format!("`{s}` is not a valid scope token (RFC 6749 §3.3)"),
                );
            }
        }
        if let Some(rl) = &r.rate_limit {
            rate_limits(r, &join_key(&base, "rate_limit"), rl.policies(), p);
        }
        if let Some(idem) = &r.idempotency {
            idempotency(&join_key(&base, "idempotency"), idem, p);
            let room = c.server.limits.max_buffered;
            for (key, v) in
                [("max_request_body", idem.max_request_body), ("max_response_body", idem.max_response_body)]
            {
                if v > room {
                    push(
                        p,
                        join_key(&join_key(&base, "idempotency"), key),
                        format!("{v} does not fit in server.limits.max_buffered ({room})"),
                    );
                }
            }
        }
        let key = serde_json::to_string(&r.matcher).unwrap_or_default();
        if let Some(first) = matches.insert(key, &r.name) {
            push(
                p,
                join_key(&base, "match"),
                format!("same match as route `{first}`, so this route could never be chosen"),
            );
        }
    }
    shadowed_routes(c, p);
    if c.oauth_server.is_some() {
        reserved_paths(c, p);
    }
}

/// With `oauth_server`, the built-in route `(oauth)` answers `/oauth2/…` and its documents on
/// every host, before any user route: a user route there would silently never be chosen.
fn reserved_paths(c: &Config, p: &mut Vec<Problem>) {
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(reserved) = reserved_overlap(&r.matcher) {
            push(
                p,
                join_key(&join_index("routes", i), "match"),
                format!(
                    "route `{}` overlaps the built-in route `(oauth)`, which answers `{reserved}` on every host while `oauth_server` is on, so this route would never get those requests; give it another path or turn oauth_server off",
                    r.name
                ),
            );
        }
    }
}

/// Route indices in the order the router tries them: most specific first, ties in config order.
fn try_order(c: &Config) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.routes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(route_specificity(&c.routes[i])), i));
    order
}

/// A route's rank; a transcoding route without a path condition ranks after the prefix routes.
pub fn route_specificity(r: &Route) -> crate::pattern::Specificity {
    let s = specificity(&r.matcher);
    if r.grpc_transcode.is_some() { s.bindings() } else { s }
}

/// Whether a route takes only the paths of its gRPC bindings (and so covers no other route).
fn bindings_only(r: &Route) -> bool {
    r.grpc_transcode.is_some() && r.matcher.path.is_none() && r.matcher.path_prefix.is_none()
}

/// Routes that can never be chosen because a route tried before them takes every request they
/// would (identical matches are reported above, as such).
fn shadowed_routes(c: &Config, p: &mut Vec<Problem>) {
    let order = try_order(c);
    for (pos, &j) in order.iter().enumerate() {
        let b = &c.routes[j];
        let same =
            |a: &Route| serde_json::to_string(&a.matcher).ok() == serde_json::to_string(&b.matcher).ok();
        if let Some(&i) = order[..pos]
            .iter()
            .find(|&&i| !bindings_only(&c.routes[i]) && covers(&c.routes[i].matcher, &b.matcher))
        {
            let a = &c.routes[i];
            if !same(a) {
                push(
                    p,
                    join_key(&join_index("routes", j), "match"),
                    format!(
                        "route `{}` can never be chosen: route `{}` (routes[{i}]) matches every request it would and is tried first (host, then path, headers and methods; see docs/proxy.md)",
                        b.name, a.name
                    ),
                );
            }
        }
    }
}

fn upgrades(r: &Route, base: &str, p: &mut Vec<Problem>) {
    for (j, u) in r.upgrades.iter().enumerate() {
        let path = join_index(&join_key(base, "upgrades"), j);
        let name = u.split('/').next().unwrap_or_default();
        if !is_token(name) || u.split('/').nth(1).is_some_and(|v| !is_token(v)) || u.matches('/').count() > 1
        {
            push(p, path, format!("`{u}` is not a protocol name such as `websocket` (RFC 9110 §7.8)"));
        } else if ["h2c", "h2", "http", "tls"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            push(
                p,
                path,
                format!(
                    "`{u}` upgrades are never tunnelled: HTTP requests inside the tunnel would bypass routing and authentication (clients use HTTP/2 with prior knowledge or TLS with ALPN instead)"
                ),
            );
        } else if r.upgrades[..j].iter().any(|x| x.eq_ignore_ascii_case(u)) {
            push(p, path, format!("`{u}` is listed twice"));
        }
    }
}

/// Things that are allowed but probably not what the author meant.
pub fn warnings(c: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    unsigned_webhook_ids(c, &mut p);
    if c.webhooks.outbound.as_ref().is_some_and(|o| o.auth.is_empty()) {
        push(
            &mut p,
            "webhooks.outbound.auth",
            "is empty: anyone who reaches the intake path publishes events to every endpoint",
        );
    }
    string_prefix_neighbours(c, &mut p);
    host_routes_over_protected_paths(c, &mut p);
    p
}

/// Host routes rank before host-less ones, whatever their paths: a protected host-less route
/// is not consulted on a host where a route tried before it takes some of its requests with
/// weaker protection (`/secure` behind a key, beside a public `host: api.example.com` with
/// `path_prefix: /`). Silent when a route with protection at least as strong takes all of them
/// first.
fn host_routes_over_protected_paths(c: &Config, p: &mut Vec<Problem>) {
    let order = try_order(c);
    let mut hosts: Vec<&String> = c.routes.iter().filter_map(|r| r.matcher.host.as_ref()).collect();
    hosts.sort();
    hosts.dedup();
    // `a` asks at least what `b` does: any-of authenticators, a subset of them; all-of scopes, a superset.
    let as_strong = |a: &Route, b: &Route| {
        !a.auth.is_empty()
            && a.auth.iter().all(|x| b.auth.contains(x))
            && b.require_scopes.iter().all(|s| a.require_scopes.contains(s))
    };
    for (j, b) in c.routes.iter().enumerate() {
        if b.auth.is_empty() || b.matcher.host.is_some() {
            continue;
        }
        for host in &hosts {
            let mut on_host = b.matcher.clone();
            on_host.host = Some((*host).clone());
            for &i in &order {
                let a = &c.routes[i];
                if i == j || (as_strong(a, b) && !bindings_only(a) && covers(&a.matcher, &on_host)) {
                    break; // protected from here on
                }
                // Some of b's requests on this host: its paths, some of its methods.
                let mut reach = a.matcher.clone();
                reach.methods = None;
                reach.headers.clear();
                let methods_meet = match (&a.matcher.methods, &b.matcher.methods) {
                    (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
                    _ => true,
                };
                if a.matcher.host.is_none()
                    || bindings_only(a)
                    || !methods_meet
                    || !covers(&reach, &on_host)
                    || as_strong(a, b)
                {
                    continue;
                }
                let protection = if a.auth.is_empty() {
                    "without credentials".to_owned()
                } else {
                    format!(
                        "with authenticators [{}] and scopes [{}]",
                        a.auth.join(", "),
                        a.require_scopes.join(", ")
                    )
                };
                push(
                    p,
                    join_key(&join_index("routes", j), "match"),
                    format!(
                        "on host `{host}`, route `{}` (routes[{i}]) takes requests protected route `{}` would, {protection}: a route with a host ranks before every route without one; add the same protection there, or give `{}` a route on that host",
                        a.name, b.name, b.name
                    ),
                );
                break;
            }
        }
    }
}

/// A protected path beside a public route to the same upstream that takes its string-prefix
/// neighbours (`/securex` next to `/secure`): an upstream that matches prefixes as strings
/// (nginx `location /secure`, Kong paths) serves those without credentials.
fn string_prefix_neighbours(c: &Config, p: &mut Vec<Problem>) {
    for (i, r) in c.routes.iter().enumerate() {
        if r.auth.is_empty() || r.upstream.is_none() {
            continue;
        }
        let m = &r.matcher;
        let Some(path) = m.path_prefix.as_deref().or(m.path.as_deref().filter(|x| !x.contains('{'))) else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            continue;
        }
        let probe = format!("{path}x");
        let public = c.routes.iter().enumerate().find(|(k, q)| {
            *k != i
                && q.auth.is_empty()
                && q.upstream == r.upstream
                && q.matcher.headers.is_empty()
                && (q.matcher.host.is_none() || q.matcher.host == m.host)
                && match (&q.matcher.path, &q.matcher.path_prefix) {
                    (None, None) => true,
                    (None, Some(prefix)) => has_segment_prefix(&probe, prefix),
                    (Some(t), _) => PathTemplate::parse(t).is_ok_and(|t| t.matches(&probe)),
                }
        });
        if let Some((k, q)) = public {
            push(
                p,
                join_key(
                    &join_key(&join_index("routes", i), "match"),
                    if m.path_prefix.is_some() { "path_prefix" } else { "path" },
                ),
                format!(
                    "`{path}` is protected, but `{probe}` takes public route `{}` (routes[{k}]) to the same upstream `{}`; an upstream that matches `{path}` as a string prefix (nginx `location {path}`) would serve it without credentials. Match whole segments there too (nginx `location {path}/` and `location = {path}`); see docs/proxy.md",
                    q.name,
                    r.upstream.as_deref().unwrap_or_default()
                ),
            );
        }
    }
}

/// A rate-limit policy name goes into a quoted structured-field string (RFC 8941 §3.3.3).
fn valid_policy_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| (0x21..0x7f).contains(&b) && !b"\"\\:".contains(&b))
}

fn check_request_key(path: &str, key: &RequestKey, has_auth: bool, p: &mut Vec<Problem>) {
    match key {
        RequestKey::Header(h) => check_header_name(path, h, p),
        RequestKey::Cookie(c) if !is_token(c) => push(p, path, format!("`{c}` is not a valid cookie name")),
        RequestKey::Consumer if !has_auth => {
            push(p, path, "`consumer` needs `auth` on the route; use `ip` or `route` on a public route");
        }
        _ => {}
    }
}

fn rate_limits(r: &Route, base: &str, policies: &[RateLimitPolicy], p: &mut Vec<Problem>) {
    if policies.is_empty() {
        push(p, base, "needs at least one policy");
    }
    if policies.len() > 16 {
        push(p, base, format!("has {} policies; at most 16 are allowed", policies.len()));
    }
    let mut names = BTreeSet::new();
    for (i, pol) in policies.iter().enumerate() {
        let pp = if policies.len() == 1 && matches!(r.rate_limit, Some(RateLimits::One(_))) {
            base.to_owned()
        } else {
            join_index(base, i)
        };
        match &pol.name {
            Some(n) if !valid_policy_name(n) => push(
                p,
                join_key(&pp, "name"),
                format!(
                    "`{n}` is not a valid policy name: 1 to 64 printable ASCII characters without spaces, `\"`, `\\` or `:`"
                ),
            ),
            Some(n) if !names.insert(n.as_str()) => {
                push(p, join_key(&pp, "name"), format!("policy name `{n}` is used twice on this route"));
            }
            None if policies.len() > 1 => {
                push(p, &pp, "a route with several policies needs a `name` on each");
            }
            _ => {}
        }
        check_request_key(&join_key(&pp, "key"), &pol.key, !r.auth.is_empty(), p);
        if pol.burst == Some(0) {
            push(p, join_key(&pp, "burst"), "must be at least 1");
        }
        check_bucket_span(&pp, pol.rate, pol.burst.unwrap_or(pol.rate.count), p);
    }
}

/// A bucket refills from empty to `burst` in `burst / rate`; buckets are kept (in process and in
/// Redis, where Lua numbers are exact to 2^53 µs) for at most that long, bounded to 24 days.
fn check_bucket_span(base: &str, rate: crate::units::Rate, burst: u64, p: &mut Vec<Problem>) {
    let span_us = u128::from(rate.interval_us()) * u128::from(burst);
    if span_us > 24 * 86_400 * 1_000_000 {
        push(
            p,
            join_key(base, "burst"),
            format!(
                "a burst of {burst} at {rate} takes longer than 24 days to refill; lower the burst or raise the rate"
            ),
        );
    }
}

const IDEMPOTENCY_METHODS: &[&str] = &["POST", "PATCH", "PUT", "DELETE"];

fn idempotency(base: &str, i: &Idempotency, p: &mut Vec<Problem>) {
    if i.ttl.get() < std::time::Duration::from_secs(1) {
        push(p, join_key(base, "ttl"), "must be at least 1s");
    }
    if i.methods.is_empty() {
        push(p, join_key(base, "methods"), "needs at least one method");
    }
    for (j, m) in i.methods.iter().enumerate() {
        if !IDEMPOTENCY_METHODS.contains(&m.as_str()) {
            push(
                p,
                join_index(&join_key(base, "methods"), j),
                format!("`{m}` cannot take an idempotency key; use POST, PATCH, PUT or DELETE"),
            );
        } else if i.methods[..j].contains(m) {
            push(p, join_index(&join_key(base, "methods"), j), format!("`{m}` is listed twice"));
        }
    }
    for (key, v) in [("max_request_body", i.max_request_body), ("max_response_body", i.max_response_body)] {
        if v.get() == 0 || v.get() > 64 << 20 {
            push(p, join_key(base, key), "must be between 1 byte and 64MiB");
        }
    }
}

fn retry(base: &str, r: &Retry, p: &mut Vec<Problem>) {
    if !(1..=10).contains(&r.attempts) {
        push(p, join_key(base, "attempts"), format!("must be between 1 and 10, got {}", r.attempts));
    }
    if r.backoff.get().is_zero() {
        push(p, join_key(base, "backoff"), "must be greater than 0");
    }
    if r.max_backoff < r.backoff {
        push(p, join_key(base, "max_backoff"), "must not be less than `backoff`");
    }
    if r.per_try_timeout.is_some_and(|t| t.get().is_zero()) {
        push(p, join_key(base, "per_try_timeout"), "must be greater than 0");
    }
    if !(0.0..=1.0).contains(&r.budget_ratio) {
        push(p, join_key(base, "budget_ratio"), "must be between 0.0 and 1.0");
    }
    if r.budget_window.get() < std::time::Duration::from_secs(1) {
        push(p, join_key(base, "budget_window"), "must be at least 1s");
    }
    if r.max_body.get() > 16 << 20 {
        push(p, join_key(base, "max_body"), "must be at most 16MiB (bodies are kept in memory)");
    }
}

fn circuit_breaker(base: &str, b: &CircuitBreaker, p: &mut Vec<Problem>) {
    if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
        push(p, join_key(base, "failure_ratio"), "must be above 0.0 and at most 1.0");
    }
    if b.min_requests == 0 {
        push(p, join_key(base, "min_requests"), "must be at least 1");
    }
    if b.half_open_probes == 0 {
        push(p, join_key(base, "half_open_probes"), "must be at least 1");
    }
    for (key, d) in [("window", b.window), ("open_for", b.open_for)] {
        if d.get() < std::time::Duration::from_millis(100) {
            push(p, join_key(base, key), "must be at least 100ms");
        }
    }
}

fn route_match(r: &Route, base: &str, paths: &PathNormalization, p: &mut Vec<Problem>) {
    let m = &r.matcher;
    let mp = join_key(base, "match");
    if m.path_prefix.is_none()
        && m.path.is_none()
        && m.host.is_none()
        && r.grpc_transcode.is_none()
        && r.soap.is_none()
    {
        push(p, &mp, "needs at least one of path_prefix, path, host or grpc_service");
    }
    grpc_match(m, &mp, p);
    if r.grpc_transcode.is_some() && m.path.is_some() {
        push(
            p,
            join_key(&mp, "path"),
            "a grpc_transcode route takes its bindings' paths: mount them with path_prefix, or give no path",
        );
    }
    if m.path_prefix.is_some() && m.path.is_some() {
        push(p, &mp, "path_prefix and path cannot both be set");
    }
    if let Some(prefix) = &m.path_prefix {
        match check_path(prefix) {
            Err(e) => push(p, join_key(&mp, "path_prefix"), e),
            Ok(()) => check_canonical(prefix, prefix, paths, &join_key(&mp, "path_prefix"), p),
        }
    }
    let template = m.path.as_ref().map(|path| PathTemplate::parse(path));
    match &template {
        Some(Err(e)) => push(p, join_key(&mp, "path"), e.clone()),
        Some(Ok(t)) => {
            // Parameters stand for one plain segment each.
            let probe: Vec<&str> = t
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.as_str(),
                    Segment::Param(_) => "p",
                })
                .collect();
            check_canonical(&t.source, &format!("/{}", probe.join("/")), paths, &join_key(&mp, "path"), p);
        }
        None => {}
    }
    if let Some(host) = &m.host {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let problem = if bare.starts_with('[') || bare.contains(':') {
            Some("no port, no IP literal".to_owned())
        } else if bare.ends_with('.') {
            Some("must not end with `.`: requests for `example.com.` are matched as `example.com`".to_owned())
        } else {
            canonical_host(bare).err().map(|e| e.to_string())
        };
        if let Some(problem) = problem {
            push(
                p,
                join_key(&mp, "host"),
                format!("`{host}` is not a host name (no port; `*.` allowed as a prefix): {problem}"),
            );
        }
    }
    if let Some(methods) = &m.methods {
        if methods.is_empty() {
            push(
                p,
                join_key(&mp, "methods"),
                "is empty, so no request could match; remove it to allow any method",
            );
        }
        for (j, method) in methods.iter().enumerate() {
            if !is_token(method) || method.bytes().any(|b| b.is_ascii_lowercase()) {
                push(
                    p,
                    join_index(&join_key(&mp, "methods"), j),
                    format!("`{method}` is not an upper-case HTTP method such as GET"),
                );
            }
        }
    }
    for name in m.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(
                p,
                join_key(&join_key(&mp, "headers"), name),
                format!("`{name}` is not a valid header name"),
            );
        }
    }
    if let Some(strip) = &r.strip_prefix {
        let sp = join_key(base, "strip_prefix");
        if let Err(e) = check_path(strip) {
            push(p, &sp, e);
        } else if strip.len() > 1 && strip.ends_with('/') {
            push(p, &sp, format!("`{strip}` must not end with `/`"));
        } else {
            let routed = m.path_prefix.as_deref().or(m.path.as_deref());
            if let Some(routed) = routed
                && !has_segment_prefix(routed, strip)
            {
                push(
                    p,
                    &sp,
                    format!(
                        "`{strip}` is not a prefix of the matched path `{routed}`, so it would never apply"
                    ),
                );
            }
        }
    }
}

/// A route path that normalization would change never matches a request (requests are routed
/// by their canonical path). `probe` is `path` with template parameters replaced by plain text.
/// `match.grpc_service` and `grpc_method`: names as gRPC writes them, and no other path
/// condition (the loader turned them into one).
fn grpc_match(m: &crate::model::RouteMatch, mp: &str, p: &mut Vec<Problem>) {
    let ident = |s: &str, dots: bool| {
        !s.is_empty()
            && s.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !part.starts_with(|c: char| c.is_ascii_digit())
            })
            && (dots || !s.contains('.'))
    };
    if let Some(service) = &m.grpc_service
        && !ident(service, true)
    {
        push(
            p,
            join_key(mp, "grpc_service"),
            format!("`{service}` is not a gRPC service name (`package.Service`)"),
        );
    }
    if let Some(method) = &m.grpc_method {
        if m.grpc_service.is_none() {
            push(p, join_key(mp, "grpc_method"), "needs grpc_service");
        } else if !ident(method, false) {
            push(p, join_key(mp, "grpc_method"), format!("`{method}` is not a gRPC method name"));
        }
    }
    if let Some((prefix, path)) = m.grpc_path() {
        let same = if prefix {
            m.path_prefix.as_deref() == Some(path.as_str()) && m.path.is_none()
        } else {
            m.path.as_deref() == Some(path.as_str()) && m.path_prefix.is_none()
        };
        if !same {
            push(p, join_key(mp, "grpc_service"), "takes the place of path_prefix and path; remove them");
        }
    }
}

/// The names defined, for an error about an unknown one.
fn defined<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() { "none are defined".into() } else { format!("defined: {}", names.join(", ")) }
}

/// A `grpc_transcode` route: its service exists, and what it sets fits a transcoded route.
fn grpc_transcode(c: &Config, r: &Route, base: &str, t: &crate::model::GrpcTranscode, p: &mut Vec<Problem>) {
    if !c.grpc.services.contains_key(&t.service) {
        let known = defined(c.grpc.services.keys());
        push(
            p,
            join_key(base, "service"),
            format!("unknown gRPC service `{}` under grpc.services ({known})", t.service),
        );
    }
    let route = base.trim_end_matches(".grpc_transcode");
    if r.strip_prefix.is_some() {
        push(
            p,
            join_key(route, "strip_prefix"),
            "a grpc_transcode route mounts its bindings at match.path_prefix; remove strip_prefix",
        );
    }
    if r.matcher.grpc_service.is_some() {
        push(
            p,
            join_key(&join_key(route, "match"), "grpc_service"),
            "proxies gRPC as is; a grpc_transcode route serves JSON",
        );
    }
    for (j, name) in t.metadata.iter().enumerate() {
        let key = join_index(&join_key(base, "metadata"), j);
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(p, key, format!("`{name}` is not a header name"));
        } else if lower.starts_with("grpc-")
            || lower.starts_with(':')
            || matches!(
                lower.as_str(),
                "content-type"
                    | "te"
                    | "host"
                    | "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "user-agent"
            )
        {
            push(
                p,
                key,
                format!("`{name}` is set by the gateway for the gRPC call; it cannot be passed through"),
            );
        }
    }
}

/// A `soap` route: its service exists, and it is mounted at a path prefix.
fn soap_route(c: &Config, r: &Route, base: &str, t: &crate::model::SoapRoute, p: &mut Vec<Problem>) {
    if !c.soap.services.contains_key(&t.service) {
        let known = defined(c.soap.services.keys());
        push(
            p,
            join_key(base, "service"),
            format!("unknown SOAP service `{}` under soap.services ({known})", t.service),
        );
    }
    let route = base.trim_end_matches(".soap");
    let m = join_key(route, "match");
    if r.matcher.path_prefix.is_none() {
        push(p, &m, "a soap route needs path_prefix: its operations are POST {path_prefix}/{Operation}");
    }
    if r.matcher.path.is_some() {
        push(p, join_key(&m, "path"), "a soap route serves its operations under path_prefix; remove path");
    }
    if r.matcher.grpc_service.is_some() {
        push(p, join_key(&m, "grpc_service"), "proxies gRPC as is; a soap route serves JSON");
    }
    if r.strip_prefix.is_some() {
        push(
            p,
            join_key(route, "strip_prefix"),
            "a soap route calls the WSDL's address; remove strip_prefix",
        );
    }
}

/// `soap.services`: names, upstreams, a WSDL file or URL.
fn soap_services(c: &Config, p: &mut Vec<Problem>) {
    for (name, svc) in &c.soap.services {
        let base = format!("soap.services.{name}");
        if !valid_name(name) {
            push(p, &base, "a service name is 1 to 64 letters, digits, `-`, `_` or `.`");
        }
        if !c.upstreams.contains_key(&svc.upstream) {
            push(p, join_key(&base, "upstream"), format!("no upstream is named `{}`", svc.upstream));
        }
        let w = svc.wsdl.trim();
        if w.is_empty() {
            push(p, join_key(&base, "wsdl"), "needs a file or an http(s):// URL");
        } else if w.contains("://") && !(w.starts_with("http://") || w.starts_with("https://")) {
            push(p, join_key(&base, "wsdl"), "a WSDL URL is http:// or https://");
        }
        if let Some(ws) = &svc.ws_security
            && ws.username.is_empty()
        {
            push(p, join_key(&join_key(&base, "ws_security"), "username"), "must not be empty");
        }
        if svc.max_response_size.get() == 0 {
            push(p, join_key(&base, "max_response_size"), "must be more than 0");
        }
    }
}

/// `grpc.services`: names, upstreams that speak HTTP/2, one schema source.
fn grpc_services(c: &Config, p: &mut Vec<Problem>) {
    for (name, svc) in &c.grpc.services {
        let base = format!("grpc.services.{name}");
        if !valid_name(name) {
            push(p, &base, "a service name is 1 to 64 letters, digits, `-`, `_` or `.`");
        }
        match c.upstreams.get(&svc.upstream) {
            None => push(p, join_key(&base, "upstream"), format!("no upstream is named `{}`", svc.upstream)),
            Some(u) => {
                let plain = u.targets.iter().any(|t| t.url.starts_with("http://"));
                let bad = match u.protocol {
                    UpstreamProtocol::Http1 => Some(
                        "speaks HTTP/1.1 (the default); gRPC needs HTTP/2: set `protocol: h2c` on it (plain TCP) or `h2` (TLS)",
                    ),
                    UpstreamProtocol::Auto if plain => Some(
                        "has http:// targets, which `auto` reaches with HTTP/1.1; set `protocol: h2c` on it",
                    ),
                    _ => None,
                };
                if let Some(why) = bad {
                    push(p, join_key(&base, "upstream"), format!("upstream `{}` {why}", svc.upstream));
                }
            }
        }
        for (j, s) in svc.services.iter().enumerate() {
            let ok = s.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !part.starts_with(|c: char| c.is_ascii_digit())
            });
            if !ok {
                push(
                    p,
                    join_index(&join_key(&base, "services"), j),
                    format!("`{s}` is not a gRPC service name (`package.Service`)"),
                );
            }
        }
        let d = &svc.descriptors;
        let dp = join_key(&base, "descriptors");
        let sources = usize::from(d.reflection)
            + usize::from(!d.protos.is_empty())
            + usize::from(d.descriptor_set.is_some());
        if sources != 1 {
            push(p, &dp, "needs exactly one of `reflection: true`, `protos` or `descriptor_set`");
        }
        if !d.include.is_empty() && d.protos.is_empty() {
            push(p, join_key(&dp, "include"), "import directories are for `protos`");
        }
        if d.refresh.get() < std::time::Duration::from_secs(1) {
            push(p, join_key(&dp, "refresh"), "at least 1s");
        }
        let size = svc.max_message_size.get();
        if !(1024..=256 * 1024 * 1024).contains(&size) {
            push(p, join_key(&base, "max_message_size"), "between 1 KiB and 256 MiB");
        }
    }
}

fn check_canonical(path: &str, probe: &str, opts: &PathNormalization, key: &str, p: &mut Vec<Problem>) {
    if path.contains(';') {
        return push(
            p,
            key,
            format!(
                "`{path}` could never match: routes are matched against the path without `;` segment parameters (`/a;x/b` is routed as `/a/b`)"
            ),
        );
    }
    match normalize_path(probe, opts) {
        Ok(canonical) if canonical == probe => {}
        Ok(canonical) if probe == path => push(
            p,
            key,
            format!(
                "`{path}` is not a canonical path, so no request would match it (request paths are normalized before routing); write `{canonical}`"
            ),
        ),
        Ok(_) => push(
            p,
            key,
            format!(
                "`{path}` is not a canonical path, so no request would match it (request paths are normalized before routing: unreserved escapes decoded, repeated slashes merged, dot segments removed)"
            ),
        ),
        Err(e) => {
            push(p, key, format!("`{path}` could never match: requests with such a path are refused ({e})"));
        }
    }
}

/// Checks one OAuth client (from the config, the command line or the admin API); every problem
/// as (key path relative to the client, or "" for the client itself, message).
pub fn check_oauth_client(c: &crate::model::OAuthClient) -> Vec<Problem> {
    let mut problems = Vec::new();
    let p = &mut problems;

    if c.client_id.is_empty()
        || c.client_id.len() > 128
        || !c.client_id.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        push(p, "client_id", "must be 1 to 128 visible characters without `:`");
    }
    match (&c.secret_sha256, c.public) {
        (None, false) => push(p, "", "a confidential client needs `secret_sha256` (or set `public: true`)"),
        (Some(_), true) => push(p, "secret_sha256", "a public client has no secret"),
        (Some(h), false) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => push(
            p,
            "secret_sha256",
            "must be the 64 hex digits of the secret's SHA-256 (`printf %s SECRET | sha256sum`)",
        ),
        _ => {}
    }
    if c.grants.is_empty() {
        push(p, "grants", "is empty, so the client could do nothing");
    }
    for (j, g) in c.grants.iter().enumerate() {
        if !GRANTS.contains(&g.as_str()) {
            push(p, join_index("grants", j), format!("`{g}` is not supported; use {}", GRANTS.join(", ")));
        } else if c.public && g == "client_credentials" {
            push(p, join_index("grants", j), "a public client cannot use client_credentials");
        }
    }
    if c.grants.iter().any(|g| g == "authorization_code") && c.redirect_uris.is_empty() {
        push(p, "redirect_uris", "authorization_code needs at least one redirect URI");
    }
    for (j, r) in c.redirect_uris.iter().enumerate() {
        let ok = r.parse::<http::Uri>().is_ok_and(|u| u.scheme().is_some() && u.host().is_some())
            && !r.contains('#');
        if !ok {
            push(
                p,
                join_index("redirect_uris", j),
                format!("`{r}` must be an absolute URI without fragment"),
            );
        }
    }
    problems
}

/// A receiver whose message id is read from a header its signature does not cover: anyone who
/// captured one delivery can send it again under a new id, and it is forwarded again.
fn unsigned_webhook_ids(c: &Config, p: &mut Vec<Problem>) {
    use crate::model::WebhookScheme;
    for (i, w) in c.webhooks.inbound.iter().enumerate() {
        let base = join_index("webhooks.inbound", i);
        let signed_id = w.verify.content.contains("{id}");
        let unsigned_header = match (&w.id, w.verify.scheme) {
            (Some(id), _) if id.header.is_some() => {
                !(w.verify.scheme == WebhookScheme::Hmac
                    && signed_id
                    && id.header.as_deref().map(str::to_ascii_lowercase)
                        == w.verify.id_header.as_deref().map(str::to_ascii_lowercase))
            }
            (None, WebhookScheme::Hmac) => w.verify.id_header.is_some() && !signed_id,
            _ => false,
        };
        if unsigned_header {
            push(
                p,
                join_key(&base, "id"),
                "the message id is read from a header the signature does not cover: a captured delivery sent again under a new id is forwarded again (sign `{id}` in verify.content, or read the id from the signed body with `id: { pointer: … }`)",
            );
        }
    }
}
