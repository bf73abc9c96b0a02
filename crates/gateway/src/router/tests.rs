use std::sync::Arc;

use bridgehead_config::{MapResolver, load_str};
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use bridgehead_upstream::{Carryover, Upstream};
use prometheus_client::metrics::histogram::Histogram;

fn router(routes_yaml: &str) -> Router {
    router_with(routes_yaml, false)
}

fn router_with(routes_yaml: &str, oauth: bool) -> Router {
    let text =
        format!("upstreams:\n  u:\n    targets: [{{ url: \"http://127.0.0.1:1\" }}]\nroutes:\n{routes_yaml}");
    let loaded = load_str(&text, Path::new("t.yaml"), Path::new("."), &MapResolver::default()).unwrap();
    let up = Arc::new(Upstream::new("u", &loaded.config.upstreams["u"], &Carryover::default()));
    Router::new(
        &loaded.config.routes,
        oauth,
        |_| Backend::Proxy(up.clone()),
        |_| Histogram::new([1.0]),
        |_| None,
        |_, _| Default::default(),
    )
}

use std::path::Path;

fn find<'a>(
    r: &'a Router,
    host: Option<&str>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<&'a str, String> {
    match r.find(host, path, &method, headers) {
        RouteResult::Found(route) => Ok(&route.name),
        RouteResult::MethodNotAllowed(allow) => Err(format!("405 {allow}")),
        RouteResult::NotFound => Err("404".into()),
    }
}

const ROUTES: &str = r#"  - { name: prefix-api, match: { path_prefix: /api }, upstream: u }
  - { name: prefix-orders, match: { path_prefix: /api/orders }, upstream: u }
  - { name: template, match: { path: "/api/orders/{id}" }, upstream: u }
  - { name: exact, match: { path: /api/orders/special }, upstream: u }
  - { name: host-exact, match: { host: admin.example.com, path_prefix: /api }, upstream: u }
  - { name: host-wild, match: { host: "*.example.com", path_prefix: /api }, upstream: u }
  - { name: header, match: { path_prefix: /api, headers: { x-tenant: acme } }, upstream: u }
  - { name: present, match: { path_prefix: /api/beta, headers: { x-beta: "*" } }, upstream: u }
  - { name: post-only, match: { path: /submit, methods: [POST] }, upstream: u }
  - { name: get-only, match: { path: /submit, methods: [GET, HEAD] }, upstream: u }
"#;

#[test]
fn most_specific_match_wins() {
    let r = router(ROUTES);
    let none = HeaderMap::new();
    let mut tenant = HeaderMap::new();
    tenant.insert("x-tenant", HeaderValue::from_static("acme"));
    let mut beta = HeaderMap::new();
    beta.insert("x-beta", HeaderValue::from_static("1"));
    type Case<'a> = (Option<&'a str>, Method, &'a str, &'a HeaderMap, Result<&'a str, &'a str>);
    let cases: &[Case] = &[
        (None, Method::GET, "/api/x", &none, Ok("prefix-api")),
        (None, Method::GET, "/api", &none, Ok("prefix-api")),
        (None, Method::GET, "/apix", &none, Err("404")),
        (None, Method::GET, "/api/orders", &none, Ok("prefix-orders")),
        (None, Method::GET, "/api/orders/7", &none, Ok("template")),
        (None, Method::GET, "/api/orders/7/items", &none, Ok("prefix-orders")),
        (None, Method::GET, "/api/orders/special", &none, Ok("exact")),
        (Some("admin.example.com"), Method::GET, "/api/x", &none, Ok("host-exact")),
        (Some("shop.example.com"), Method::GET, "/api/x", &none, Ok("host-wild")),
        (Some("example.com"), Method::GET, "/api/x", &none, Ok("prefix-api")),
        (None, Method::GET, "/api/x", &tenant, Ok("header")),
        (None, Method::GET, "/api/beta/1", &beta, Ok("present")),
        (None, Method::POST, "/submit", &none, Ok("post-only")),
        (None, Method::GET, "/submit", &none, Ok("get-only")),
        (None, Method::DELETE, "/submit", &none, Err("405 POST, GET, HEAD")),
        (None, Method::GET, "/nothing", &none, Err("404")),
    ];
    for (host, method, path, headers, want) in cases {
        let got = find(&r, *host, method.clone(), path, headers);
        assert_eq!(got.as_deref().map_err(String::as_str), *want, "{method} {host:?} {path}");
    }
}

/// A route with a host condition beats every route without one, whatever the paths (as nginx
/// server blocks and Envoy virtual hosts); exact hosts beat wildcards; within a host class the
/// path rules stay, and a host route whose path does not match falls through to the others.
#[test]
fn host_routes_rank_before_host_less_ones() {
    let r = router(
        r#"  - { name: exact-path, match: { path: /api/orders/special }, upstream: u }
  - { name: catch-all, match: { path_prefix: / }, upstream: u }
  - { name: admin, match: { host: admin.example.com }, upstream: u }
  - { name: admin-api, match: { host: admin.example.com, path_prefix: /api }, upstream: u }
  - { name: wild, match: { host: "*.example.com", path: /api/orders/special }, upstream: u }
  - { name: shop, match: { host: shop.example.com, path_prefix: /shop }, upstream: u }
"#,
    );
    let none = HeaderMap::new();
    let cases: &[(Option<&str>, &str, &str)] = &[
        (Some("admin.example.com"), "/api/orders/special", "admin-api"),
        (Some("admin.example.com"), "/", "admin"),
        (Some("admin.example.com"), "/anything", "admin"),
        (Some("www.example.com"), "/api/orders/special", "wild"),
        (Some("shop.example.com"), "/api/orders/special", "wild"),
        (Some("shop.example.com"), "/shop/1", "shop"),
        (Some("shop.example.com"), "/other", "catch-all"),
        (Some("example.org"), "/api/orders/special", "exact-path"),
        (None, "/x", "catch-all"),
    ];
    let mut failures = Vec::new();
    for (host, path, want) in cases {
        let got = find(&r, *host, Method::GET, path, &none);
        if got.as_deref() != Ok(*want) {
            failures.push(format!("{host:?} {path}: want {want}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn strip_prefix_keeps_a_leading_slash() {
    assert_eq!(strip("/api/orders/7", "/api"), "/orders/7");
    assert_eq!(strip("/api", "/api"), "/");
    assert_eq!(strip("/other", "/api"), "/other");
}

#[test]
fn builtin_oauth_routes_come_first_on_every_host() {
    let r = router_with(
        "  - { name: host-all, match: { host: api.example.com, path_prefix: / }, upstream: u }\n  - { name: all, match: { path_prefix: / }, upstream: u }\n",
        true,
    );
    let none = HeaderMap::new();
    for (host, path, want) in [
        (Some("api.example.com"), "/oauth2/token", "(oauth)"),
        (None, "/oauth2/authorize", "(oauth)"),
        (Some("other.example"), "/.well-known/jwks.json", "(oauth)"),
        (Some("api.example.com"), "/.well-known/oauth-authorization-server", "(oauth)"),
        (Some("api.example.com"), "/.well-known/openid-configuration", "host-all"),
        (None, "/oauth2x", "all"),
    ] {
        assert_eq!(find(&r, host, Method::POST, path, &none).as_deref(), Ok(want), "{host:?} {path}");
    }
    let builtins: Vec<_> = r.routes().filter(|r| r.builtin).map(|r| r.backend.kind()).collect();
    assert_eq!(builtins, ["oauth", "oauth", "oauth"]);
    assert!(router(ROUTES).routes().all(|r| !r.builtin && r.backend.kind() == "proxy"));
}
