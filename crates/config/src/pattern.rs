//! Route patterns: exact paths and templates such as `/orders/{id}`, and the order in which
//! routes are tried.
//!
//! Parsed and ranked here so that validation and the router agree on the syntax and on which
//! route wins: [`specificity`] sorts the router, and [`covers`] lets validation find a route
//! that an earlier one shadows.

use crate::model::RouteMatch;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: any single non-empty segment.
    Param(String),
}

/// A parsed `match.path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub segments: Vec<Segment>,
    /// The path as written.
    pub source: String,
}

impl PathTemplate {
    /// Parses `/a/{b}/c`. Parameters must be whole segments named `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_path(s)?;
        let mut segments = Vec::new();
        for seg in s[1..].split('/') {
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or_else(|| {
                    format!("segment `{seg}` opens `{{` without closing it at the segment's end")
                })?;
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "parameter name `{name}` must be letters, digits and `_`, not starting with a digit"
                    ));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains(['{', '}']) {
                return Err(format!("segment `{seg}`: a `{{param}}` must be a whole segment"));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(Self { segments, source: s.to_owned() })
    }

    /// True when the template has no parameters.
    pub fn is_exact(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Matches a request path (without query).
    pub fn matches(&self, path: &str) -> bool {
        if self.is_exact() {
            return path == self.source;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Param(_), Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    /// Literal segments count: more literal segments make a more specific template.
    pub fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }
}

/// Checks that a config path is absolute and holds only characters valid in a URI path.
pub fn check_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` must start with `/`"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#')) {
        return Err(format!("`{s}` contains {c:?}, which cannot appear in a path"));
    }
    Ok(())
}

/// Whether `path` starts with `prefix` on a segment boundary.
pub fn has_segment_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// How specific a route's match is; the router tries larger first (ties keep config order).
///
/// The host decides first, as nginx server blocks and Envoy virtual hosts do: an exact host
/// beats a wildcard host (the longer suffix first) beats no host, whatever the paths. Within
/// one host class: exact path, then template (more literal segments first), then prefix
/// (longer first), then no path; then more header conditions; then a method list over any
/// method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    host_kind: u8,
    host_len: usize,
    path_kind: u8,
    path_weight: usize,
    headers: usize,
    has_methods: bool,
}

impl Specificity {
    /// A route without a path condition that takes only its gRPC bindings' paths ranks after
    /// every route with a path prefix (of its host class): the paths a (reflected) schema binds
    /// can never take requests from a route the config gave a path.
    pub fn bindings(mut self) -> Self {
        if self.path_kind == 0 {
            self.path_kind = 1;
            self.path_weight = 0;
        }
        self
    }
}

/// The rank of a route's match.
pub fn specificity(m: &RouteMatch) -> Specificity {
    let (host_kind, host_len) = match &m.host {
        Some(h) if h.starts_with('*') => (1, h.len()),
        Some(h) => (2, h.len()),
        None => (0, 0),
    };
    let (path_kind, path_weight) = match (&m.path, &m.path_prefix) {
        (Some(p), _) => match PathTemplate::parse(p) {
            Ok(t) if t.is_exact() => (3, t.source.len()),
            Ok(t) => (2, t.literal_count()),
            Err(_) => (0, 0),
        },
        (None, Some(prefix)) => (1, prefix.len()),
        (None, None) => (0, 0),
    };
    Specificity {
        host_kind,
        host_len,
        path_kind,
        path_weight,
        headers: m.headers.len(),
        has_methods: m.methods.is_some(),
    }
}

/// Whether every request that `b` matches is also matched by `a` (so `b` can never be chosen
/// when `a` is tried first). Conservative: false when unsure.
pub fn covers(a: &RouteMatch, b: &RouteMatch) -> bool {
    host_covers(a.host.as_deref(), b.host.as_deref())
        && path_covers(a, b)
        && match (&a.methods, &b.methods) {
            (None, _) => true,
            (Some(am), Some(bm)) => bm.iter().all(|m| am.contains(m)),
            (Some(_), None) => false,
        }
        && a.headers.iter().all(|(name, want)| {
            b.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && (want == "*" || want == v))
        })
}

fn host_covers(a: Option<&str>, b: Option<&str>) -> bool {
    let lower = |s: &str| s.to_ascii_lowercase();
    match (a.map(lower), b.map(lower)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => match a.strip_prefix('*') {
            // `*.example.com` covers `x.example.com` and `*.x.example.com`.
            Some(suffix) => b.trim_start_matches('*').ends_with(suffix) && b.len() > suffix.len(),
            None => a == b,
        },
    }
}

fn path_covers(a: &RouteMatch, b: &RouteMatch) -> bool {
    let b_path = match (&b.path, &b.path_prefix) {
        (Some(p), _) => PathTemplate::parse(p).ok().map(BPath::Template),
        (None, Some(prefix)) => Some(BPath::Prefix(prefix)),
        (None, None) => None,
    };
    match (&a.path, &a.path_prefix) {
        (None, None) => true,
        (None, Some(prefix)) => match b_path {
            Some(BPath::Prefix(q)) => has_segment_prefix(q, prefix),
            // A template lies under a prefix when its leading segments are the prefix's, literally.
            Some(BPath::Template(t)) => {
                let p = prefix.trim_end_matches('/');
                p.is_empty() || {
                    let segs: Vec<&str> = p[1..].split('/').collect();
                    segs.len() <= t.segments.len()
                        && segs
                            .iter()
                            .zip(&t.segments)
                            .all(|(x, s)| matches!(s, Segment::Literal(l) if l == x))
                }
            }
            // A route without a path also takes `OPTIONS *`, which no prefix matches; beside `/`
            // that is all it could ever get, so it counts as covered.
            None => prefix == "/",
        },
        (Some(p), _) => match (PathTemplate::parse(p), b_path) {
            (Ok(at), Some(BPath::Template(bt))) => {
                at.segments.len() == bt.segments.len()
                    && at.segments.iter().zip(&bt.segments).all(|pair| match pair {
                        (Segment::Param(_), Segment::Param(_)) => true,
                        (Segment::Param(_), Segment::Literal(l)) => !l.is_empty(),
                        (Segment::Literal(x), Segment::Literal(y)) => x == y,
                        (Segment::Literal(_), Segment::Param(_)) => false,
                    })
            }
            _ => false,
        },
    }
}

enum BPath<'a> {
    Prefix(&'a str),
    Template(PathTemplate),
}

/// The built-in authorization server's paths (with `oauth_server`): everything under this
/// prefix...
pub const OAUTH_PREFIX: &str = "/oauth2";
/// ...and these documents. The router tries the built-in routes for them before any user
/// route, on every host.
pub const OAUTH_DOCUMENTS: [&str; 2] = ["/.well-known/oauth-authorization-server", "/.well-known/jwks.json"];
/// The server's endpoints under [`OAUTH_PREFIX`], for templates that could match one.
const OAUTH_ENDPOINTS: [&str; 4] =
    ["/oauth2/authorize", "/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"];

/// The reserved path a route's path condition overlaps, if any: a prefix, exact path or
/// template at or under [`OAUTH_PREFIX`] or a document, or a prefix above a document other
/// than `/` (a catch-all keeps everything else). A route without a path condition is a
/// catch-all too.
pub fn reserved_overlap(m: &RouteMatch) -> Option<&'static str> {
    let within = |path: &str| -> Option<&'static str> {
        if has_segment_prefix(path, OAUTH_PREFIX) {
            return Some("/oauth2/");
        }
        OAUTH_DOCUMENTS.into_iter().find(|d| has_segment_prefix(path, d))
    };
    match (&m.path, &m.path_prefix) {
        (Some(path), _) => match PathTemplate::parse(path) {
            Ok(t) if t.segments.iter().any(|s| matches!(s, Segment::Param(_))) => {
                // A template under `/oauth2/…` by its literal first segment, or one whose
                // parameters can spell a reserved endpoint or document (`/{any}/token`); a
                // template that only could with a parameter equal to `oauth2` and no endpoint
                // name after it (`/{tenant}/orders`) keeps its routes.
                if t.segments.first() == Some(&Segment::Literal("oauth2".into())) {
                    return Some("/oauth2/");
                }
                let concrete = OAUTH_ENDPOINTS.iter().chain(OAUTH_DOCUMENTS.iter());
                concrete
                    .copied()
                    .find(|c| t.matches(c))
                    .map(|c| if c.starts_with(OAUTH_PREFIX) { "/oauth2/" } else { c })
            }
            _ => within(path),
        },
        (None, Some(prefix)) if prefix != "/" => {
            within(prefix).or_else(|| OAUTH_DOCUMENTS.into_iter().find(|d| has_segment_prefix(d, prefix)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = PathTemplate::parse("/orders/{id}/items").unwrap();
        assert!(t.matches("/orders/7/items"));
        assert!(!t.matches("/orders//items"));
        assert!(!t.matches("/orders/7/items/x"));
        assert!(!t.matches("/orders/7"));
        assert_eq!(t.literal_count(), 2);
        let e = PathTemplate::parse("/orders/{id").unwrap_err();
        assert!(e.contains("without closing"), "{e}");
        assert!(PathTemplate::parse("/orders/x{id}").unwrap_err().contains("whole segment"));
        assert!(PathTemplate::parse("/orders/{1d}").unwrap_err().contains("parameter name"));
        assert!(PathTemplate::parse("orders").unwrap_err().contains("start with `/`"));
        assert!(PathTemplate::parse("/a b").unwrap_err().contains("cannot appear"));
        let exact = PathTemplate::parse("/health").unwrap();
        assert!(exact.is_exact() && exact.matches("/health") && !exact.matches("/health/"));
    }

    #[test]
    fn segment_prefixes() {
        assert!(has_segment_prefix("/api/orders", "/api"));
        assert!(has_segment_prefix("/api", "/api"));
        assert!(has_segment_prefix("/api/", "/api/"));
        assert!(!has_segment_prefix("/apix", "/api"));
        assert!(has_segment_prefix("/anything", "/"));
    }
}
