use std::path::Path;

use super::*;

fn load_text(text: &str) -> Result<LoadedConfig, Diagnostics> {
    let r = MapResolver::with_env(&[("ADMIN_TOKEN", "0123456789abcdef-token")]);
    load_str(text, Path::new("b.yaml"), Path::new("."), &r)
}

const MINIMAL: &str = "upstreams:\n  u:\n    targets: [{ url: \"http://127.0.0.1:9000\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /api }\n    upstream: u\n";

#[test]
fn starter_config_passes() {
    let c = load_text(STARTER).unwrap();
    assert_eq!(c.config.routes[0].strip_prefix.as_deref(), Some("/api"));
    assert_eq!(c.config.upstreams["orders"].targets[0].weight, 99);
}

#[test]
fn empty_file_is_all_defaults() {
    let c = load_text("").unwrap().config;
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(c.server.limits.max_body, ByteSize::mib(10));
    assert_eq!(c.state.url, "sqlite://bridgehead.db");
}

#[test]
fn examples_and_defaults_from_minimal() {
    let c = load_text(MINIMAL).unwrap().config;
    let u = &c.upstreams["u"];
    assert_eq!(u.targets[0].weight, 1);
    assert_eq!(u.timeouts.connect, HumanDuration::secs(2));
    assert_eq!(u.load_balancing, LoadBalancing::RoundRobin);
}

/// Each bad config, and the one diagnostic line it must produce (prefix match after `b.yaml:`).
#[test]
fn bad_configs_are_refused_with_location_and_path() {
    let cases: &[(&str, &str)] = &[
        ("server:\n  listen: [1\n", "2:"),
        (
            "server:\n  lisen: 127.0.0.1:80\n",
            "2:3: server.lisen: unknown field `lisen`, expected one of `listen`",
        ),
        (
            "server:\n  limits:\n    header_timeout: ten seconds\n",
            "3:5: server.limits.header_timeout: invalid duration `ten seconds`",
        ),
        (
            "server:\n  limits:\n    header_timeout: 10\n",
            "3:5: server.limits.header_timeout: a duration needs a unit",
        ),
        ("server:\n  limits:\n    max_body: 10 MiBs\n", "3:5: server.limits.max_body: invalid size"),
        ("server:\n  listen: localhost\n", "2:3: server.listen: invalid socket address"),
        ("admin:\n  listen: 0.0.0.0:9901\n", "2:3: admin.listen: 0.0.0.0:9901 is not a loopback address"),
        ("admin:\n  token: short-token-xx\n", "2:3: admin.token: must be at least 16"),
        ("admin:\n  token: ${env:NOT_SET}\n", "2:10: admin.token: environment variable NOT_SET is not set"),
        ("state:\n  url: mysql://x\n", "2:3: state.url: must start with sqlite:// or postgres://"),
        ("upstreams:\n  u:\n    targets: []\n", "3:5: upstreams.u.targets: needs at least one target"),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"ftp://x\" }]\n",
            "3:17: upstreams.u.targets[0].url: `ftp://x` must start with http://",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x/api\" }]\n",
            "3:17: upstreams.u.targets[0].url: `http://x/api` must not have a path",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\", weight: 0 }]\n",
            "3:5: upstreams.u.targets: every target has weight 0",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\", weight: -1 }]\n",
            "3:34: upstreams.u.targets[0].weight: invalid value: integer `-1`",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n    load_balancing: random\n",
            "4:5: upstreams.u.load_balancing: unknown variant `random`",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n    health_check: { path: health }\n",
            "4:21: upstreams.u.health_check.path: `health` must start with `/`",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: nope\n",
            "7:5: routes[0].upstream: unknown upstream `nope` (defined: u)",
        ),
        (
            "routes:\n  - name: r\n    match: {}\n    upstream: u\n",
            "3:5: routes[0].match: needs at least one of path_prefix, path, host or grpc_service",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path: \"/o/{id\" }\n    upstream: u\n",
            "6:14: routes[0].match.path: segment `{id` opens",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /a, methods: [get] }\n    upstream: u\n",
            "6:41: routes[0].match.methods[0]: `get` is not an upper-case HTTP method",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: u\n    strip_prefix: /b\n",
            "8:5: routes[0].strip_prefix: `/b` is not a prefix of the matched path `/a`",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: u\n  - name: r\n    match: { path_prefix: /b }\n    upstream: u\n",
            "8:5: routes[1].name: route name `r` is already used by routes[0]",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n  - name: r\n    match: { path_prefix: /a }\n    upstream: u\n  - name: s\n    match: { path_prefix: /a }\n    upstream: u\n",
            "9:5: routes[1].match: same match as route `r`",
        ),
        ("routes:\n  - name: r\n    upstream: u\n", "2:5: routes[0]: missing field `match`"),
        ("a: 1\na: 2\n", "2:1: a: duplicate key `a`"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        match load_text(text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(err) if !err.0[0].to_string().starts_with(&format!("b.yaml:{want}")) => {
                failures.push(format!("config:\n{text}\nwant: b.yaml:{want}\ngot:  {err}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "admin:\n  listen: 10.0.0.1:9901\nstate:\n  url: ftp://x\n";
    let err = load_text(text).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0[0].to_string().starts_with("b.yaml:2:3: admin.listen"));
    assert!(err.0[1].to_string().starts_with("b.yaml:4:3: state.url"));
}

#[test]
fn admin_config_is_redacted() {
    let text = format!("admin:\n  token: ${{env:ADMIN_TOKEN}}\n{MINIMAL}");
    let c = load_text(&text).unwrap();
    assert_eq!(c.config.admin.token.as_ref().unwrap().expose(), "0123456789abcdef-token");
    let shown = c.redacted_json().to_string();
    assert!(!shown.contains("0123456789abcdef-token"), "{shown}");
    assert!(shown.contains("${env:ADMIN_TOKEN}"), "{shown}");
    // Secrets written inline (bad practice, but possible) are still redacted.
    let text = format!("admin:\n  token: inline-secret-value-1234\n{MINIMAL}");
    let shown = load_text(&text).unwrap().redacted_json().to_string();
    assert!(!shown.contains("inline-secret-value-1234") && shown.contains(REDACTED), "{shown}");
}

#[test]
fn schema_has_descriptions_for_every_field() {
    let schema = json_schema();
    let text = schema.to_string();
    assert!(text.contains("Path prefix on whole segments"));
    fn walk(v: &serde_json::Value, missing: &mut Vec<String>, at: &str) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                if p.get("description").is_none() {
                    missing.push(format!("{at}.{k}"));
                }
            }
        }
        if let Some(defs) = v.get("$defs").and_then(|d| d.as_object()) {
            for (name, d) in defs {
                walk(d, missing, name);
            }
        }
    }
    let mut missing = Vec::new();
    walk(&schema, &mut missing, "Config");
    assert!(missing.is_empty(), "fields without doc comments: {missing:?}");
}

#[test]
fn docs_config_md_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let want = docs::config_markdown();
    if std::env::var_os("BRIDGEHEAD_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/config.md is stale: run `BRIDGEHEAD_UPDATE_DOCS=1 cargo test -p bridgehead-config docs_config_md_is_fresh` (or `bridgehead config docs > docs/config.md`)"
    );
}

mod never_panics {
    //! The loader takes outside input: whatever the bytes, it returns a config or diagnostics.
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = load_text(&text);
        }

        #[test]
        fn on_yaml_like_text(text in "([a-z_]{1,8}: ?(\\[|\\{|\"|'|\\$\\{|-|[0-9a-z/:.]{0,10}|\\}|\\])*\n {0,4}){0,12}") {
            let _ = load_text(&text);
        }

        #[test]
        fn on_mutated_starter(cut in 0usize..2000, insert in "[ -~\n]{0,5}") {
            let mut text = STARTER.to_string();
            let at = text.char_indices().map(|(i, _)| i).nth(cut % STARTER.len()).unwrap_or(0);
            text.insert_str(at, &insert);
            let _ = load_text(&text);
        }

        #[test]
        fn units_parse_or_refuse(s in "\\PC{0,20}") {
            let _ = s.parse::<ByteSize>();
            let _ = s.parse::<HumanDuration>();
        }
    }
}

/// Authenticator and route-auth mistakes, each with the key path and message it must produce.
#[test]
fn bad_auth_configs_are_refused_with_key_paths() {
    let up = "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n";
    let route = |extra: &str| {
        format!("routes:\n  - {{ name: r, match: {{ path_prefix: /a }}, upstream: u{extra} }}\n")
    };
    let long = "s".repeat(32);
    let cases: Vec<(String, &str)> = vec![
        ("authenticators:\n  a:\n    jwt: { issuer: x }\n".into(), "authenticators.a.jwt: needs a key source"),
        (
            format!("authenticators:\n  a:\n    jwt: {{ jwks_url: \"https://i/j\", secret: \"{long}\" }}\n"),
            "authenticators.a.jwt: has more than one key source",
        ),
        (
            "authenticators:\n  a:\n    jwt: { secret: short, algorithms: [HS256] }\n".into(),
            "authenticators.a.jwt.secret: is 5 bytes; HS256 needs at least 32 bytes",
        ),
        (
            format!("authenticators:\n  a:\n    jwt: {{ secret: \"{long}\", algorithms: [HS512] }}\n"),
            "authenticators.a.jwt.secret: is 32 bytes; HS512 needs at least 64 bytes",
        ),
        (
            format!("authenticators:\n  a:\n    jwt: {{ secret: \"{long}\", algorithms: [HS256, RS256] }}\n"),
            "authenticators.a.jwt.algorithms: a `secret` verifies only HS256",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, algorithms: [HS256] }\n".into(),
            "authenticators.a.jwt.algorithms: HS* algorithms need `secret`",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, algorithms: [None] }\n".into(),
            "authenticators.a.jwt.algorithms[0]: `none` means an unsigned token",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, algorithms: [ES512] }\n".into(),
            "authenticators.a.jwt.algorithms[0]: unknown algorithm `ES512`",
        ),
        (
            "authenticators:\n  a:\n    jwt: { jwks_url: \"ftp://idp/jwks\" }\n".into(),
            "authenticators.a.jwt.jwks_url: `ftp://idp/jwks` is not an http:// or https:// URL",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, cookie: \"a b\" }\n".into(),
            "authenticators.a.jwt.cookie: `a b` is not a valid cookie name",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, claims: { role: [] } }\n".into(),
            "authenticators.a.jwt.claims.role: lists no value",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, kid: x }\n".into(),
            "authenticators.a.jwt.kid: unknown field `kid`",
        ),
        ("authenticators:\n  a:\n    saml: {}\n".into(), "authenticators.a: unknown variant `saml`"),
        (
            "authenticators:\n  a:\n    jwt: { jwks_url: \"http://idp.example/jwks\" }\n".into(),
            "authenticators.a.jwt.jwks_url: `http://idp.example/jwks`: use https",
        ),
        (
            "authenticators:\n  a:\n    jwt: { public_key_file: k.pem, claims_to_headers: { sub: Content-Length } }\n".into(),
            "authenticators.a.jwt.claims_to_headers.sub: `Content-Length` is managed by the gateway",
        ),
        (
            "authenticators:\n  a:\n    jwt: { jwks_url: \"https://i/j\", min_refresh_interval: 1ms }\n".into(),
            "authenticators.a.jwt.min_refresh_interval: must be at least 10ms",
        ),
        ("authenticators:\n  a:\n    api_key: {}\n".into(), "authenticators.a.api_key: has no keys"),
        (
            "authenticators:\n  a:\n    api_key: { keys: [{ consumer: c, sha256: abc }] }\n".into(),
            "authenticators.a.api_key.keys[0].sha256: must be the 64 hex digits",
        ),
        (
            "authenticators:\n  a:\n    api_key: { query: \"a b\", from_state: true }\n".into(),
            "authenticators.a.api_key.query: `a b` is not a plain query parameter name",
        ),
        (
            "authenticators:\n  a:\n    mtls: { subjects: [\"CN=x\"] }\n".into(),
            "authenticators.a.mtls: needs server.tls.client_ca",
        ),
        (
            "authenticators:\n  a:\n    introspection: { url: \"https://i/introspect\", client_id: c, client_secret: \"\" }\n".into(),
            "authenticators.a.introspection.client_secret: is empty",
        ),
        (format!("{up}{}", route(", auth: [nope]")), "routes[0].auth[0]: unknown authenticator `nope` (none are defined)"),
        (
            "authenticators:\n  a:\n    jwt: { issuer: local }\n".into(),
            "authenticators.a.jwt.issuer: `local` trusts the built-in OAuth server: configure `oauth_server`",
        ),
        (
            "oauth_server:\n  issuer: \"https://gw.example/\"\n".into(),
            "oauth_server.issuer: must not end with `/`",
        ),
        (
            "oauth_server:\n  issuer: https://gw.example\n  clients: [{ client_id: c, grants: [client_credentials] }]\n".into(),
            "oauth_server.clients[0]: a confidential client needs `secret_sha256`",
        ),
        (
            "oauth_server:\n  issuer: https://gw.example\n  clients: [{ client_id: c, public: true, grants: [client_credentials, implicit] }]\n".into(),
            "oauth_server.clients[0].grants[0]: a public client cannot use client_credentials",
        ),
        (
            "oauth_server:\n  issuer: https://gw.example\n  clients: [{ client_id: c, public: true, grants: [implicit] }]\n".into(),
            "oauth_server.clients[0].grants[0]: `implicit` is not supported",
        ),
        (
            "oauth_server:\n  issuer: https://gw.example\n  clients: [{ client_id: c, public: true, grants: [authorization_code] }]\n".into(),
            "oauth_server.clients[0].redirect_uris: authorization_code needs at least one redirect URI",
        ),
        (
            "oauth_server:\n  issuer: https://gw.example\n  users: [{ username: u, password_hash: plain }]\n".into(),
            "oauth_server.users[0].password_hash: must be an argon2 PHC string",
        ),
        (format!("{up}{}", route(", require_scopes: [a]")), "routes[0].require_scopes: needs `auth`"),
        (
            format!("authenticators:\n  k:\n    api_key: {{ from_state: true }}\n{up}{}", route(", auth: [k], require_scopes: [\"a b\"]")),
            "routes[0].require_scopes[0]: `a b` is not a valid scope token",
        ),
        (
            format!("authenticators:\n  k:\n    api_key: {{ from_state: true }}\n{up}{}", route(", auth: [k, k]")),
            "routes[0].auth[1]: `k` is listed twice",
        ),
    ];
    assert_all_refused(&cases);
}

#[test]
fn auth_config_defaults_and_secret_redaction() {
    let text = format!(
        "authenticators:\n  idp:\n    jwt: {{ secret: \"0123456789abcdef0123456789abcdef\" }}\n  keys:\n    api_key: {{ from_state: true }}\n{MINIMAL}"
    );
    let c = load_text(&text).unwrap();
    let Authenticator::Jwt(j) = &c.config.authenticators["idp"] else { panic!() };
    assert_eq!(j.leeway, HumanDuration::secs(30));
    assert!(j.require_exp);
    assert_eq!(j.token_cache, 10_000);
    let v = c.redacted_json();
    assert_eq!(v["authenticators"]["idp"]["jwt"]["secret"], REDACTED);
}

/// Traffic-policy mistakes, each with the key path and message it must produce.
#[test]
fn bad_policy_configs_are_refused_with_key_paths() {
    let up = |extra: &str| format!("upstreams:\n  u:\n    targets: [{{ url: \"http://x\" }}]\n{extra}");
    let route = |extra: &str| {
        format!("{}routes:\n  - {{ name: r, match: {{ path_prefix: /a }}, upstream: u{extra} }}\n", up(""))
    };
    let cases: Vec<(String, &str)> = vec![
        (route(", rate_limit: { key: ip, rate: 10 }"), "routes[0].rate_limit.rate: a rate needs a unit"),
        (
            route(", rate_limit: { key: ip, rate: 0/s }"),
            "routes[0].rate_limit.rate: rate `0/s` admits nothing",
        ),
        (route(", rate_limit: { key: ip, rate: 5/fortnight }"), "invalid rate `5/fortnight`"),
        (
            route(", rate_limit: { key: ip, rate: 5/s, burst: 0 }"),
            "routes[0].rate_limit.burst: must be at least 1",
        ),
        (
            route(", rate_limit: { rate: 5/s }"),
            "routes[0].rate_limit.key: `consumer` needs `auth` on the route",
        ),
        (route(", rate_limit: { key: 'header:a b', rate: 5/s }"), "routes[0].rate_limit.key"),
        (route(", rate_limit: { key: peer, rate: 5/s }"), "invalid key `peer`"),
        (
            route(", rate_limit: { key: ip, rate: 1/d, burst: 30 }"),
            "routes[0].rate_limit.burst: a burst of 30 at 1/d takes longer than 24 days",
        ),
        (
            route(", rate_limit: [{ key: ip, rate: 5/s }, { key: ip, rate: 50/m }]"),
            "routes[0].rate_limit[0]: a route with several policies needs a `name` on each",
        ),
        (
            route(", rate_limit: [{ name: a, key: ip, rate: 5/s }, { name: a, key: ip, rate: 50/m }]"),
            "routes[0].rate_limit[1].name: policy name `a` is used twice",
        ),
        (
            route(", rate_limit: { name: 'a\"b', key: ip, rate: 5/s }"),
            "routes[0].rate_limit.name: `a\"b` is not a valid policy name",
        ),
        (
            route(", rate_limit: { key: ip, rate: 5/s, on_store_error: maybe }"),
            "routes[0].rate_limit.on_store_error",
        ),
        (
            route(", idempotency: { methods: [GET] }"),
            "routes[0].idempotency.methods[0]: `GET` cannot take an idempotency key",
        ),
        (route(", idempotency: { ttl: 10ms }"), "routes[0].idempotency.ttl: must be at least 1s"),
        (
            route(", idempotency: { max_response_body: 1GiB }"),
            "routes[0].idempotency.max_response_body: must be between",
        ),
        (up("    retry: { attempts: 0 }\n"), "upstreams.u.retry.attempts: must be between 1 and 10, got 0"),
        (
            format!("server:\n  limits: {{ max_buffered: 32KiB }}\n{}", up("    retry: {}\n")),
            "upstreams.u.retry.max_body: 64KiB does not fit in server.limits.max_buffered (32KiB)",
        ),
        (
            format!("server:\n  limits: {{ max_buffered: 512KiB }}\n{}", route(", idempotency: {}")),
            "routes[0].idempotency.max_request_body: 1MiB does not fit in server.limits.max_buffered (512KiB)",
        ),
        (up("    retry: { on: [404] }\n"), "upstreams.u.retry.on[0]: `404` is not retryable"),
        (
            up("    retry: { backoff: 1s, max_backoff: 10ms }\n"),
            "upstreams.u.retry.max_backoff: must not be less than `backoff`",
        ),
        (
            up("    retry: { budget_ratio: 2 }\n"),
            "upstreams.u.retry.budget_ratio: must be between 0.0 and 1.0",
        ),
        (
            up("    circuit_breaker: { failure_ratio: 0 }\n"),
            "upstreams.u.circuit_breaker.failure_ratio: must be above 0.0",
        ),
        (
            up("    circuit_breaker: { min_requests: 0 }\n"),
            "upstreams.u.circuit_breaker.min_requests: must be at least 1",
        ),
        (
            up("    circuit_breaker: { open_for: 1ms }\n"),
            "upstreams.u.circuit_breaker.open_for: must be at least 100ms",
        ),
        (up("    rate_limit: { rate: 5/s, queue: 0 }\n"), "upstreams.u.rate_limit.queue: must be at least 1"),
        (up("    rate_limit: { burst: 3 }\n"), "upstreams.u.rate_limit: missing field `rate`"),
        (up("    sticky: route\n"), "upstreams.u.sticky: `route` would send every request to one target"),
        (up("    sticky: 'cookie:a;b'\n"), "upstreams.u.sticky: `a;b` is not a valid cookie name"),
        (
            up("    protocol: h2\n"),
            "upstreams.u.protocol: h2 is HTTP/2 over TLS, but target http://x is http://",
        ),
        (up("    protocol: http3\n"), "upstreams.u.protocol: unknown variant `http3`"),
        (
            "server:\n  access_log: { output: /var/log/ }\n".into(),
            "server.access_log.output: must be `stdout` or a file path, got `/var/log/`",
        ),
        (
            "server:\n  access_log: { output: stderr }\n".into(),
            "server.access_log.output: must be `stdout` or a file path, got `stderr`",
        ),
        (
            "server:\n  access_log: { output: '' }\n".into(),
            "server.access_log.output: must be `stdout` or a file path, got ``",
        ),
        (
            up("    http2: { max_frame_size: 1KiB }\n"),
            "upstreams.u.http2.max_frame_size: must be between 16KiB",
        ),
        (
            up("    http2: { max_concurrent_streams: 0 }\n"),
            "upstreams.u.http2.max_concurrent_streams: must be at least 1",
        ),
        (
            up("    http2: { max_connections: 0 }\n"),
            "upstreams.u.http2.max_connections: must be between 1 and 1024",
        ),
        (
            up("    http2: { initial_stream_window: 1KiB }\n"),
            "upstreams.u.http2.initial_stream_window: must be between 65535",
        ),
        (
            up("    retry: { on: [unavaliable] }\n"),
            "is not retryable; use connect-error, timeout, reset, 408, 429, a 5xx status, or a gRPC status",
        ),
        (
            "upstreams:\n  u:\n    targets: [{ url: \"https://x\" }]\n    protocol: h2c\nroutes: []\n".into(),
            "upstreams.u.protocol: h2c is HTTP/2 over plain TCP, but target https://x is https://",
        ),
        (
            "state:\n  redis: \"http://127.0.0.1:6379\"\n".into(),
            "state.redis: must be a redis://host:port URL",
        ),
    ];
    assert_all_refused(&cases);
}

#[test]
fn policy_defaults_and_redis_redaction() {
    let text = "state:\n  redis: \"redis://:hunter2@127.0.0.1:6379\"\nupstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n    retry: {}\n    circuit_breaker: {}\n    rate_limit: { rate: 50/s }\n    sticky: 'header:X-User'\nroutes:\n  - { name: r, match: { path_prefix: /a }, upstream: u, rate_limit: { key: ip, rate: 100/s }, idempotency: {} }\n  - { name: s, match: { path_prefix: /b }, upstream: u, rate_limit: [{ name: burst, key: ip, rate: 100/s, burst: 200 }, { name: daily, key: route, rate: 10000/h }] }\n";
    let c = load_text(text).unwrap();
    let u = &c.config.upstreams["u"];
    let r = u.retry.as_ref().unwrap();
    assert_eq!((r.attempts, r.budget_ratio, r.on.len()), (3, 0.2, 4));
    assert_eq!(u.circuit_breaker.as_ref().unwrap().min_requests, 20);
    assert_eq!(u.rate_limit.as_ref().unwrap().burst, 1);
    assert_eq!(u.sticky, Some(RequestKey::Header("x-user".into())));
    let route = &c.config.routes[0];
    let p = &route.rate_limit.as_ref().unwrap().policies()[0];
    assert_eq!(
        (p.key.clone(), p.rate.count, p.burst, p.on_store_error),
        (RequestKey::Ip, 100, None, OnStoreError::Open)
    );
    let idem = route.idempotency.as_ref().unwrap();
    assert_eq!(
        (idem.ttl, idem.methods.clone(), idem.required),
        (HumanDuration::secs(86_400), vec!["POST".to_owned(), "PATCH".into()], false)
    );
    assert_eq!(c.config.routes[1].rate_limit.as_ref().unwrap().policies().len(), 2);
    let v = c.redacted_json();
    assert_eq!(v["state"]["redis"], REDACTED);
    assert_eq!(v["routes"][0]["rate_limit"]["rate"], "100/s");
}

/// Asserts that every config text is refused with a diagnostic containing its expected text.
fn assert_all_refused(cases: &[(String, &str)]) {
    let mut failures = Vec::new();
    for (text, want) in cases {
        match load_text(text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(err) if !err.0.iter().any(|d| d.to_string().contains(want)) => {
                failures.push(format!("config:\n{text}\nwant: {want}\ngot:  {err}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Route configs that could never match a request, or allow what is never allowed.
#[test]
fn bad_edge_configs_are_refused_with_key_paths() {
    let up = "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n";
    let route = |m: &str| format!("  - {{ name: r, match: {m}, upstream: u }}\n");
    let two = |a: &str, b: &str| {
        format!(
            "{up}  - {{ name: a, match: {a}, upstream: u }}\n  - {{ name: b, match: {b}, upstream: u }}\n"
        )
    };
    let shadow = "routes[1].match: route `b` can never be chosen: route `a` (routes[0])";
    let cases: Vec<(String, &str)> = vec![
        // Paths that normalization would change never match.
        (
            format!("{up}{}", route("{ path_prefix: /api//v1 }")),
            "routes[0].match.path_prefix: `/api//v1` is not a canonical path, so no request would match it (request paths are normalized before routing); write `/api/v1`",
        ),
        (format!("{up}{}", route("{ path_prefix: /%7Euser }")), "write `/~user`"),
        (
            format!("{up}{}", route("{ path: /a/./b }")),
            "routes[0].match.path: `/a/./b` is not a canonical path",
        ),
        (
            format!("{up}{}", route("{ path: \"/a/../{id}\" }")),
            "routes[0].match.path: `/a/../{id}` is not a canonical path",
        ),
        (
            format!("{up}{}", route("{ path_prefix: /a%2fb }")),
            "`/a%2fb` could never match: requests with such a path are refused (the path contains an escaped slash",
        ),
        (format!("{up}{}", route("{ path_prefix: /.. }")), "climbs above the root"),
        (format!("{up}{}", route("{ path_prefix: \"/a\\\\b\" }")), "backslash"),
        // Hosts are matched in canonical form.
        (
            format!("{up}{}", route("{ host: admin.example.com. }")),
            "routes[0].match.host: `admin.example.com.` is not a host name (no port; `*.` allowed as a prefix): must not end with `.`",
        ),
        (format!("{up}{}", route("{ host: \"a..b\" }")), "empty label"),
        (format!("{up}{}", route("{ host: \"[::1]\" }")), "no IP literal"),
        // Shadowed routes name the route that shadows them.
        (two("{ path_prefix: /api/ }", "{ path_prefix: /api }"), shadow),
        (
            two("{ path_prefix: /a, headers: { x-t: \"*\" } }", "{ path_prefix: /a, headers: { x-t: v } }"),
            shadow,
        ),
        (two("{ path_prefix: /a, methods: [GET, POST] }", "{ path_prefix: /a, methods: [GET] }"), shadow),
        (two("{ path: \"/o/{id}\" }", "{ path: \"/o/{key}\" }"), shadow),
        (two("{ host: \"*.example.com\" }", "{ host: \"*.EXAMPLE.com\" }"), shadow),
        // h2c is never tunnelled.
        (
            format!(
                "{up}  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, upgrades: [websocket, H2C] }}\n"
            ),
            "routes[0].upgrades[1]: `H2C` upgrades are never tunnelled",
        ),
        (
            format!(
                "{up}  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, upgrades: [\"HTTP/2.0\"] }}\n"
            ),
            "routes[0].upgrades[0]: `HTTP/2.0` upgrades are never tunnelled",
        ),
        (
            format!("{up}  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, upgrades: [TLS/1.2] }}\n"),
            "`TLS/1.2` upgrades are never tunnelled",
        ),
        (
            format!("{up}{}", route("{ path_prefix: \"/a;x\" }")),
            "routes[0].match.path_prefix: `/a;x` could never match: routes are matched against the path without `;` segment parameters",
        ),
        (two("{ host: b.example.com, path_prefix: / }", "{ host: b.example.com }"), shadow),
        (
            format!(
                "{up}  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, upgrades: [\"web socket\"] }}\n"
            ),
            "routes[0].upgrades[0]: `web socket` is not a protocol name",
        ),
        (
            format!(
                "{up}  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, upgrades: [foo, FOO] }}\n"
            ),
            "routes[0].upgrades[1]: `FOO` is listed twice",
        ),
        (
            "server:\n  path_normalization: { escaped_slashes: unescape }\n".into(),
            "server.path_normalization.escaped_slashes: unknown variant `unescape`",
        ),
    ];
    assert_all_refused(&cases);
}

/// Routes that rank apart, or match different requests, are not shadowed; a host route is
/// never shadowed by a host-less one, whatever its path.
#[test]
fn routes_that_can_be_chosen_are_accepted() {
    let up = "upstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n";
    let ok = [
        "  - { name: a, match: { path_prefix: / }, upstream: u }\n  - { name: b, match: { host: admin.example.com }, upstream: u }\n",
        "  - { name: a, match: { path_prefix: /api }, upstream: u }\n  - { name: b, match: { path: \"/api/{id}\" }, upstream: u }\n",
        "  - { name: a, match: { path_prefix: /a, methods: [GET] }, upstream: u }\n  - { name: b, match: { path_prefix: /a }, upstream: u }\n",
        "  - { name: a, match: { path_prefix: /a, headers: { x-t: v } }, upstream: u }\n  - { name: b, match: { path_prefix: /a, headers: { x-t: w } }, upstream: u }\n",
        "  - { name: a, match: { host: \"*.example.com\" }, upstream: u }\n  - { name: b, match: { host: \"*.a.example.com\" }, upstream: u }\n",
        "  - { name: a, match: { path_prefix: /.well-known, host: x.example.com }, upstream: u }\n  - { name: b, match: { path: \"/caf%C3%A9\" }, upstream: u, upgrades: [websocket, \"foo/2\"] }\n",
    ];
    for routes in ok {
        if let Err(e) = load_text(&format!("{up}{routes}")) {
            panic!("refused:\n{routes}\n{e}");
        }
    }
    // `keep` makes `%2F` a canonical character of a segment.
    let text = format!(
        "server:\n  path_normalization: {{ escaped_slashes: keep, merge_slashes: false }}\n{up}  - {{ name: a, match: {{ path_prefix: \"/a%2Fb\" }}, upstream: u }}\n"
    );
    let c = load_text(&text).unwrap();
    assert!(!c.config.server.path_normalization.merge_slashes);
    assert_eq!(c.config.routes[0].upgrades, ["websocket"]);
}

#[test]
fn a_protected_prefix_beside_a_public_route_to_the_same_upstream_is_a_warning() {
    let head = "authenticators:\n  k:\n    api_key:\n      keys: [{ consumer: c, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }]\nupstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n  v:\n    targets: [{ url: \"http://y\" }]\nroutes:\n";
    let warned = |routes: &str| load_text(&format!("{head}{routes}")).unwrap().warnings;
    let w = warned(
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: p, match: { path_prefix: / }, upstream: u }\n",
    );
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].path, "routes[0].match.path_prefix");
    assert!(w[0].message.starts_with("`/secure` is protected, but `/securex` takes public route `p` (routes[1]) to the same upstream `u`"), "{}", w[0].message);
    assert!(w[0].pos.is_some());
    // An exact protected path too.
    let w = warned(
        "  - { name: s, match: { path: /secure }, upstream: u, auth: [k] }\n  - { name: p, match: { path_prefix: / }, upstream: u }\n",
    );
    assert_eq!(w[0].path, "routes[0].match.path");
    // Not when the public route goes elsewhere, or does not take the neighbour.
    for routes in [
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: p, match: { path_prefix: / }, upstream: v }\n",
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: p, match: { path_prefix: /public }, upstream: u }\n",
    ] {
        assert!(warned(routes).is_empty(), "{routes}");
    }
}

/// Host routes rank first: a public host route that takes all of a protected host-less route's
/// paths leaves them unprotected on that host.
#[test]
fn a_host_route_over_a_protected_path_is_a_warning() {
    let head = "authenticators:\n  k:\n    api_key:\n      keys: [{ consumer: c, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }]\n  j:\n    api_key:\n      header: X-Other\n      keys: [{ consumer: c, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }]\nupstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\n  v:\n    targets: [{ url: \"http://y\" }]\nroutes:\n";
    let warned = |routes: &str| load_text(&format!("{head}{routes}")).unwrap().warnings;
    let w = warned(
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: api, match: { host: api.example.com, path_prefix: / }, upstream: v }\n",
    );
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].path, "routes[0].match");
    assert!(
        w[0].message.starts_with("on host `api.example.com`, route `api` (routes[1]) takes requests protected route `s` would, without credentials"),
        "{}",
        w[0].message
    );
    // With the same authenticators but without the scopes: weaker, so warned.
    let w = warned(
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k], require_scopes: [admin] }\n  - { name: api, match: { host: api.example.com, path_prefix: / }, upstream: v, auth: [k] }\n",
    );
    assert!(w[0].message.contains("with authenticators [k] and scopes []"), "{w:?}");
    // Some methods are enough; a stricter authenticator list is not weaker.
    let w = warned(
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: api, match: { host: api.example.com, path_prefix: /, methods: [GET, HEAD] }, upstream: v }\n",
    );
    assert_eq!(w.len(), 1, "{w:?}");
    // Not when the host route is protected alike, does not take the protected paths, or a route
    // on that host protects them first.
    for routes in [
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k, j] }\n  - { name: api, match: { host: api.example.com, path_prefix: / }, upstream: v, auth: [k] }\n",
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: s2, match: { host: api.example.com, path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: api, match: { host: api.example.com, path_prefix: / }, upstream: v }\n",
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: api, match: { host: api.example.com, path_prefix: / }, upstream: v, auth: [k] }\n",
        "  - { name: s, match: { path_prefix: /secure }, upstream: u, auth: [k] }\n  - { name: api, match: { host: api.example.com, path_prefix: /api }, upstream: v }\n",
    ] {
        assert!(warned(routes).is_empty(), "{routes}");
    }
}

/// With `oauth_server`, a user route under its reserved paths is an error naming both routes.
#[test]
fn routes_over_the_authorization_servers_paths_are_refused() {
    let base = "oauth_server: { issuer: \"https://gw.example\" }\nupstreams:\n  u:\n    targets: [{ url: \"http://x\" }]\nroutes:\n";
    let route = |m: &str| format!("{base}  - {{ name: mine, match: {m}, upstream: u }}\n");
    let want = "routes[0].match: route `mine` overlaps the built-in route `(oauth)`, which answers";
    let cases: Vec<(String, &str)> = [
        "{ path_prefix: /oauth2 }",
        "{ path_prefix: /oauth2/token }",
        "{ path: /oauth2/custom }",
        "{ path: /.well-known/jwks.json }",
        "{ path_prefix: /.well-known }",
        "{ host: api.example.com, path: /.well-known/oauth-authorization-server }",
        "{ path: \"/{any}/token\" }",
        "{ path: \"/oauth2/{tenant}/callback\" }",
    ]
    .iter()
    .map(|m| (route(m), want))
    .collect();
    assert_all_refused(&cases);
    for ok in [
        "{ path_prefix: / }",
        "{ host: api.example.com }",
        "{ path: /.well-known/openid-configuration }",
        "{ path: \"/{tenant}/orders\" }",
        "{ path_prefix: /oauth2x }",
    ] {
        assert!(load_text(&route(ok)).is_ok(), "{ok} is not reserved");
    }
    let text = format!(
        "{}  - {{ name: mine, match: {{ path_prefix: /oauth2 }}, upstream: u }}\n",
        base.replace("oauth_server: { issuer: \"https://gw.example\" }\n", "")
    );
    assert!(load_text(&text).is_ok(), "without oauth_server nothing is reserved");
}

#[test]
fn build_errors_keep_the_key_apart_from_the_reason() {
    let e = crate::BuildError::new("ca", "cannot read /x: not found").under("authenticators.a.jwt");
    assert_eq!(e.key, "authenticators.a.jwt.ca");
    assert_eq!(e.to_string(), "authenticators.a.jwt.ca: cannot read /x: not found");
    assert_eq!(
        crate::BuildError::new("", "needs a key source").under("authenticators.a.jwt").key,
        "authenticators.a.jwt"
    );
}

#[test]
fn webhook_receivers_are_checked() {
    let hook = |extra: &str| {
        format!(
            "{MINIMAL}webhooks:\n  inbound:\n    - name: stripe\n      path: /hooks/stripe\n      verify: {{ scheme: stripe, secret: whsec_x }}\n      forward: {{ upstream: u, path: /events }}\n{extra}"
        )
    };
    let ok = load_text(&hook("")).unwrap();
    let w = &ok.config.webhooks.inbound[0];
    assert_eq!(w.retry_schedule.len(), 7);
    assert_eq!(w.max_body.get(), 1024 * 1024);
    let cases: &[(&str, &str)] = &[
        (
            "    - name: stripe\n      path: /hooks/stripe\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].name: `stripe` names another receiver too",
        ),
        (
            "    - name: gh\n      path: /hooks/stripe\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].path: `/hooks/stripe` is the path of another receiver too",
        ),
        (
            "    - name: gh\n      path: /hooks//gh\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].path: `/hooks//gh` is not a canonical path",
        ),
        (
            "    - name: gh\n      path: /gh\n      verify: { scheme: github }\n      forward: { upstream: nope, path: x }\n",
            "webhooks.inbound[1].verify: needs `secret`",
        ),
        (
            "    - name: gh\n      path: /gh\n      verify: { scheme: github, secret: s }\n      forward: { upstream: nope, path: /x }\n",
            "webhooks.inbound[1].forward.upstream: no upstream is named `nope`",
        ),
        (
            "    - name: gh\n      path: /gh\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: x }\n",
            "webhooks.inbound[1].forward.path: `x` is not a path",
        ),
        (
            "    - name: gh\n      path: /gh\n      verify: { scheme: github, secret: s, header: X-Sig }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].verify.header: applies to the hmac scheme only; the github scheme fixes it",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: hmac, secret: s }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].verify.header: the hmac scheme needs the header",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: hmac, secret: s, header: \"bad header\" }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].verify.header: `bad header` is not a valid header name",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: /x }\n      id: { header: a, pointer: /id }\n",
            "webhooks.inbound[1].id: needs exactly one of `header` or `pointer`",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: github, secret: s }\n      forward: { upstream: u, path: /x }\n      max_body: 20MiB\n",
            "webhooks.inbound[1].max_body: must be more than 0 and at most server.limits.max_body",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: sha1, secret: s }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].verify.scheme: unknown variant `sha1`",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: hmac, secret: s, header: X-Sig, timestamp_header: X-Ts }\n      forward: { upstream: u, path: /x }\n",
            "webhooks.inbound[1].verify.timestamp_header: is checked against the tolerance only when it is signed",
        ),
        (
            "    - name: h\n      path: /h\n      verify: { scheme: standard, secret: whsec_eA==, tolerance: 1h }\n      forward: { upstream: u, path: /x }\n      retention: 90m\n",
            "webhooks.inbound[1].retention: must be at least twice verify.tolerance",
        ),
    ];
    for (extra, want) in cases {
        let text = hook(extra);
        let err = load_text(&text).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}\nfor:\n{text}");
    }
    // An id from a header the signature does not cover: accepted, with a warning.
    let warned = load_text(&hook(
        "    - name: p\n      path: /p\n      verify: { scheme: hmac, secret: s, header: X-Sig }\n      id: { header: X-Delivery }\n      forward: { upstream: u, path: /x }\n",
    ))
    .unwrap();
    let w: Vec<String> = warned.warnings.iter().map(ToString::to_string).collect();
    assert!(
        w.iter().any(|w| w.contains(
            "webhooks.inbound[1].id: the message id is read from a header the signature does not cover"
        )),
        "{w:?}"
    );
    let signed = load_text(&hook(
        "    - name: p\n      path: /p\n      verify: { scheme: hmac, secret: s, header: X-Sig, id_header: X-Delivery, content: \"{id}.{body}\" }\n      id: { header: x-delivery }\n      forward: { upstream: u, path: /x }\n",
    ))
    .unwrap();
    assert!(signed.warnings.is_empty(), "{:?}", signed.warnings);
    let clash = format!(
        "{}  - name: same\n    match: {{ path: /hooks/stripe }}\n    upstream: u\n",
        hook("").replace("webhooks:", "XX").split("XX").next().unwrap()
    );
    let text = format!("{clash}{}", &hook("")[MINIMAL.len()..]);
    let err = load_text(&text).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("route `same` (routes[1]) has the same path"), "{err}");
}

#[test]
fn grpc_services_and_routes_are_checked() {
    let base = "upstreams:\n  g:\n    targets: [{ url: \"http://x:1\" }]\n    protocol: h2c\n  h1:\n    targets: [{ url: \"http://y:1\" }]\n";
    let ok = format!(
        "{base}grpc:\n  services:\n    t:\n      upstream: g\n      descriptors: {{ reflection: true }}\nroutes:\n  - name: rest\n    match: {{ path_prefix: /rest }}\n    grpc_transcode: {{ service: t, metadata: [x-tenant] }}\n  - name: own\n    grpc_transcode: {{ service: t }}\n    match: {{ host: api.test }}\n  - name: bare\n    grpc_transcode: {{ service: t }}\n    match: {{}}\n  - name: proxy\n    match: {{ grpc_service: drone.v1.Telemetry, grpc_method: GetStatus }}\n    upstream: g\n  - name: other\n    match: {{ path_prefix: /other }}\n    upstream: h1\n"
    );
    let loaded = load_text(&ok).unwrap_or_else(|e| panic!("{e}"));
    let proxy = &loaded.config.routes[3].matcher;
    assert_eq!(
        proxy.path.as_deref(),
        Some("/drone.v1.Telemetry/GetStatus"),
        "grpc_service stands for a path"
    );
    let svc =
        |d: &str| format!("{base}grpc:\n  services:\n    t:\n      upstream: g\n      descriptors: {d}\n");
    let route = |r: &str| format!("{}routes:\n  - name: r\n{r}", svc("{ reflection: true }"));
    let cases: Vec<(String, &str)> = vec![
        (svc("{}"), "grpc.services.t.descriptors: needs exactly one of"),
        (svc("{ reflection: true, protos: [a.proto] }"), "grpc.services.t.descriptors: needs exactly one of"),
        (
            svc("{ descriptor_set: a.pb, include: [x] }"),
            "grpc.services.t.descriptors.include: import directories are for `protos`",
        ),
        (svc("{ reflection: true, refresh: 10ms }"), "grpc.services.t.descriptors.refresh: at least 1s"),
        (
            format!(
                "{base}grpc:\n  services:\n    t:\n      upstream: h1\n      descriptors: {{ reflection: true }}\n"
            ),
            "grpc.services.t.upstream: upstream `h1` speaks HTTP/1.1 (the default); gRPC needs HTTP/2: set `protocol: h2c`",
        ),
        (
            format!(
                "{base}grpc:\n  services:\n    t:\n      upstream: nope\n      descriptors: {{ reflection: true }}\n"
            ),
            "grpc.services.t.upstream: no upstream is named `nope`",
        ),
        (
            route("    match: { path_prefix: /a }\n    grpc_transcode: { service: x }\n"),
            "routes[0].grpc_transcode.service: unknown gRPC service `x`",
        ),
        (
            route("    match: { path_prefix: /a }\n    upstream: g\n    grpc_transcode: { service: t }\n"),
            "routes[0].upstream: a grpc_transcode route takes its upstream",
        ),
        (
            route("    match: { path_prefix: /a }\n"),
            "routes[0]: needs `upstream` (or `grpc_transcode`, or `soap`)",
        ),
        (
            route("    match: { path: /a }\n    grpc_transcode: { service: t }\n"),
            "routes[0].match.path: a grpc_transcode route takes its bindings' paths",
        ),
        (
            route(
                "    match: { path_prefix: /a }\n    strip_prefix: /a\n    grpc_transcode: { service: t }\n",
            ),
            "routes[0].strip_prefix: a grpc_transcode route mounts",
        ),
        (
            route(
                "    match: { path_prefix: /a }\n    grpc_transcode: { service: t, metadata: [grpc-timeout] }\n",
            ),
            "routes[0].grpc_transcode.metadata[0]: `grpc-timeout` is set by the gateway",
        ),
        (
            route("    match: { grpc_service: \"drone v1\" }\n    upstream: g\n"),
            "routes[0].match.grpc_service: `drone v1` is not a gRPC service name",
        ),
        (
            route("    match: { grpc_method: Get, host: a.b }\n    upstream: g\n"),
            "routes[0].match.grpc_method: needs grpc_service",
        ),
        (
            route("    match: { grpc_service: a.B, path_prefix: /x }\n    upstream: g\n"),
            "routes[0].match.grpc_service: takes the place of path_prefix and path",
        ),
        (
            route(
                "    match: {}\n    grpc_transcode: { service: t }\n  - name: all\n    match: { path_prefix: / }\n    upstream: g\n",
            ),
            "routes[0].match: route `r` can never be chosen: route `all` (routes[1])",
        ),
        (
            format!(
                "{base}grpc:\n  services:\n    t:\n      upstream: g\n      services: [\"a b\"]\n      descriptors: {{ reflection: true }}\n"
            ),
            "grpc.services.t.services[0]: `a b` is not a gRPC service name",
        ),
    ];
    let mut failures = Vec::new();
    for (text, want) in &cases {
        match load_text(text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(err) if !err.to_string().contains(want) => {
                failures.push(format!("config:\n{text}\nwant: {want}\ngot:  {err}"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
