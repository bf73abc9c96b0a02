//! Route path patterns: exact paths and templates such as `/orders/{id}`.
//!
//! Parsed once here so that validation and the router agree on the syntax.

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
