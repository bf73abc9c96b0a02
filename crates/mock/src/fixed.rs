//! Fixed routes: `--fixed PATH=STATUS[:BODY]`, and the table they are looked up in.

use std::collections::HashMap;
use std::str::FromStr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::MockBody;

/// A fixed response for a path, parsed from `PATH=STATUS[:BODY]`.
///
/// The first `=` ends the path and the first `:` after it ends the status, so the body may hold
/// both. Examples: `/health=200`, `/orders/7=404:{"error":"no such order"}`, `/static/*=200:ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedRoute {
    /// The path to match, without the query and without a trailing `*`.
    pub path: String,
    /// Whether `path` is a prefix (the spec ended in `*`) rather than an exact path.
    pub prefix: bool,
    /// Status of the response.
    pub status: StatusCode,
    /// Body of the response, sent as application/json when it parses as JSON, else text/plain.
    pub body: Bytes,
}

/// Why a `PATH=STATUS[:BODY]` spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedRouteError {
    /// No `=` between path and status.
    #[error("missing '=' in {spec:?}: expected PATH=STATUS[:BODY], e.g. /health=200")]
    MissingEquals {
        /// The whole spec.
        spec: String,
    },
    /// The path is empty or relative.
    #[error("path {path:?} must start with '/', e.g. /health=200")]
    PathNotAbsolute {
        /// The path part of the spec.
        path: String,
    },
    /// A `*` somewhere other than at the end of the path.
    #[error("'*' may only end the path (prefix match) in {path:?}, e.g. /orders/*=404")]
    MisplacedWildcard {
        /// The path part of the spec.
        path: String,
    },
    /// Nothing, or not a status between 200 and 599, after the `=`.
    #[error("status {status:?} in {spec:?} is not a status code between 200 and 599")]
    BadStatus {
        /// The status part of the spec.
        status: String,
        /// The whole spec.
        spec: String,
    },
}

impl FromStr for FixedRoute {
    type Err = FixedRouteError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (path, rest) =
            spec.split_once('=').ok_or_else(|| FixedRouteError::MissingEquals { spec: spec.into() })?;
        if !path.starts_with('/') {
            return Err(FixedRouteError::PathNotAbsolute { path: path.into() });
        }
        let (path, prefix) = match path.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (path, false),
        };
        if path.contains('*') {
            return Err(FixedRouteError::MisplacedWildcard {
                path: format!("{path}{}", if prefix { "*" } else { "" }),
            });
        }
        let (status, body) = rest.split_once(':').unwrap_or((rest, ""));
        let bad_status = || FixedRouteError::BadStatus { status: status.into(), spec: spec.into() };
        // `u16::from_str` would take "+200"; a status is exactly three digits.
        if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_status());
        }
        let code: u16 = status.parse().map_err(|_| bad_status())?;
        if !(200..=599).contains(&code) {
            return Err(bad_status());
        }
        Ok(FixedRoute {
            path: path.into(),
            prefix,
            status: StatusCode::from_u16(code).map_err(|_| bad_status())?,
            body: Bytes::copy_from_slice(body.as_bytes()),
        })
    }
}

/// A fixed route ready to answer: its content type is decided once, at start.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Bytes,
    content_type: Option<HeaderValue>,
}

impl Answer {
    fn new(route: &FixedRoute) -> Self {
        let content_type = if route.body.is_empty() {
            None
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(&route.body).is_ok() {
            Some(HeaderValue::from_static("application/json"))
        } else {
            Some(HeaderValue::from_static("text/plain; charset=utf-8"))
        };
        Answer { status: route.status, body: route.body.clone(), content_type }
    }
}

/// The fixed routes, indexed for lookup: exact paths in a map, prefixes longest first.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    exact: HashMap<String, Answer>,
    prefixes: Vec<(String, Answer)>,
}

impl Routes {
    pub(crate) fn new(routes: &[FixedRoute]) -> Self {
        let mut exact = HashMap::new();
        let mut prefixes = HashMap::new();
        // Later routes replace earlier ones for the same path, like later flags override.
        for route in routes {
            let table = if route.prefix { &mut prefixes } else { &mut exact };
            table.insert(route.path.clone(), Answer::new(route));
        }
        let mut prefixes: Vec<_> = prefixes.into_iter().collect();
        prefixes.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Routes { exact, prefixes }
    }

    /// The response for `path`, if a fixed route covers it.
    pub(crate) fn respond(&self, path: &str) -> Option<Response<MockBody>> {
        let answer = self.exact.get(path).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, answer)| answer)
        })?;
        let mut response = Response::new(MockBody::full(answer.body.clone()));
        *response.status_mut() = answer.status;
        if let Some(content_type) = &answer.content_type {
            response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
        }
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(spec: &str) -> FixedRoute {
        spec.parse().unwrap()
    }

    #[test]
    fn parses_specs() {
        for (spec, path, prefix, status, body) in [
            ("/health=200", "/health", false, 200, ""),
            ("/health=204:", "/health", false, 204, ""),
            (
                "/orders/7=404:{\"error\":\"no such order\"}",
                "/orders/7",
                false,
                404,
                "{\"error\":\"no such order\"}",
            ),
            ("/static/*=200:a:b=c", "/static/", true, 200, "a:b=c"),
            ("/*=503", "/", true, 503, ""),
            ("/=200:root", "/", false, 200, "root"),
        ] {
            let r = route(spec);
            assert_eq!(r.path, path, "{spec}");
            assert_eq!(r.prefix, prefix, "{spec}");
            assert_eq!(r.status.as_u16(), status, "{spec}");
            assert_eq!(r.body, body.as_bytes(), "{spec}");
        }
    }

    #[test]
    fn refuses_bad_specs_precisely() {
        for (spec, expected, message) in [
            (
                "/health",
                FixedRouteError::MissingEquals { spec: "/health".into() },
                "missing '=' in \"/health\": expected PATH=STATUS[:BODY], e.g. /health=200",
            ),
            (
                "health=200",
                FixedRouteError::PathNotAbsolute { path: "health".into() },
                "path \"health\" must start with '/', e.g. /health=200",
            ),
            (
                "=200",
                FixedRouteError::PathNotAbsolute { path: "".into() },
                "path \"\" must start with '/', e.g. /health=200",
            ),
            (
                "/a/*/b=200",
                FixedRouteError::MisplacedWildcard { path: "/a/*/b".into() },
                "'*' may only end the path (prefix match) in \"/a/*/b\", e.g. /orders/*=404",
            ),
            (
                "/health=",
                FixedRouteError::BadStatus { status: "".into(), spec: "/health=".into() },
                "status \"\" in \"/health=\" is not a status code between 200 and 599",
            ),
            (
                "/health=ok",
                FixedRouteError::BadStatus { status: "ok".into(), spec: "/health=ok".into() },
                "status \"ok\" in \"/health=ok\" is not a status code between 200 and 599",
            ),
            (
                "/health=+20",
                FixedRouteError::BadStatus { status: "+20".into(), spec: "/health=+20".into() },
                "status \"+20\" in \"/health=+20\" is not a status code between 200 and 599",
            ),
            (
                "/health=101:x",
                FixedRouteError::BadStatus { status: "101".into(), spec: "/health=101:x".into() },
                "status \"101\" in \"/health=101:x\" is not a status code between 200 and 599",
            ),
            (
                "/health=600",
                FixedRouteError::BadStatus { status: "600".into(), spec: "/health=600".into() },
                "status \"600\" in \"/health=600\" is not a status code between 200 and 599",
            ),
        ] {
            let err = spec.parse::<FixedRoute>().unwrap_err();
            assert_eq!(err, expected, "{spec}");
            assert_eq!(err.to_string(), message, "{spec}");
        }
    }

    fn answer(routes: &Routes, path: &str) -> Option<(u16, Option<String>, Bytes)> {
        let response = routes.respond(path)?;
        let content_type = response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        let MockBody::Full(body) = response.into_body() else {
            panic!("fixed routes answer with a full body")
        };
        Some((status, content_type, body.unwrap_or_default()))
    }

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let routes = Routes::new(&[
            route("/*=500:root"),
            route("/orders/*=404:{\"error\":\"no such order\"}"),
            route("/orders/7=200:[7]"),
            route("/orders/archive/*=410:gone"),
            route("/health=200"),
            route("/health=204"),
        ]);
        let json = Some("application/json".to_owned());
        let text = Some("text/plain; charset=utf-8".to_owned());
        assert_eq!(answer(&routes, "/orders/7"), Some((200, json.clone(), Bytes::from_static(b"[7]"))));
        assert_eq!(
            answer(&routes, "/orders/8"),
            Some((404, json.clone(), Bytes::from_static(b"{\"error\":\"no such order\"}")))
        );
        assert_eq!(
            answer(&routes, "/orders/archive/1"),
            Some((410, text.clone(), Bytes::from_static(b"gone")))
        );
        assert_eq!(answer(&routes, "/else"), Some((500, text, Bytes::from_static(b"root"))));
        // The later of two routes for one path wins; an empty body has no content type.
        assert_eq!(answer(&routes, "/health"), Some((204, None, Bytes::new())));
        assert!(answer(&Routes::new(&[]), "/").is_none());
    }
}
