//! Path templates of `google.api.HttpRule`, parsed and matched.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{id}` is `{id=*}`. `*` matches one non-empty segment, `**` zero or more (it must be the
//! last segment). Variable values are percent-decoded per http.proto: a one-segment variable
//! fully, a multi-segment one except `%2F` (so a decoded value's slashes are the path's).
//! Written by hand: the grammar is small and no crate implements it.

/// A segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `*`: one segment.
    Single,
    /// `**`: the rest of the path, zero or more segments.
    Rest,
}

/// A variable: the field it sets and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The field path, as written (`shelf.id`).
    pub field: String,
    start: usize,
    end: usize,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segs: Vec<Seg>,
    pub vars: Vec<Var>,
    pub verb: Option<String>,
    /// As written.
    pub source: String,
}

/// Why a template does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("path template `{template}`: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

/// Why a matched path cannot bind its variables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VarError {
    #[error("not valid percent-encoded UTF-8")]
    Encoding { field: String },
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let err = |reason: &str| TemplateError { template: source.to_owned(), reason: reason.to_owned() };
        let Some(rest) = source.strip_prefix('/') else { return Err(err("must start with `/`")) };
        // The verb: `:` after the last `/`, outside braces.
        let (body, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') && !rest[i..].contains('}') => {
                let verb = &rest[i + 1..];
                if verb.is_empty() || !verb.chars().all(literal_char) {
                    return Err(err("the verb after `:` must be a non-empty literal"));
                }
                (&rest[..i], Some(verb.to_owned()))
            }
            _ => (rest, None),
        };
        let mut t = Template { segs: Vec::new(), vars: Vec::new(), verb, source: source.to_owned() };
        if body.is_empty() {
            return Ok(t);
        }
        let mut chars = body;
        loop {
            // One segment, up to `/` (or the end); a variable may open or close around it.
            if let Some(after) = chars.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| err("a `{` is never closed"))?;
                let inner = &after[..close];
                let (field, pattern) = match inner.split_once('=') {
                    Some((f, p)) => (f, Some(p)),
                    None => (inner, None),
                };
                if field.is_empty()
                    || !field.split('.').all(|p| {
                        !p.is_empty()
                            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !p.starts_with(|c: char| c.is_ascii_digit())
                    })
                {
                    return Err(err(&format!("`{field}` is not a field path (`name` or `a.b`)")));
                }
                if t.vars.iter().any(|v| v.field == field) {
                    return Err(err(&format!("variable `{field}` appears twice")));
                }
                let start = t.segs.len();
                match pattern {
                    None => t.segs.push(Seg::Single),
                    Some(p) => {
                        if p.is_empty() {
                            return Err(err(&format!("variable `{field}` has an empty pattern")));
                        }
                        for s in p.split('/') {
                            t.segs.push(segment(s).map_err(|r| err(&r))?);
                        }
                    }
                }
                t.vars.push(Var { field: field.to_owned(), start, end: t.segs.len() });
                chars = &after[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let s = &chars[..end];
                if s.contains('{') || s.contains('}') {
                    return Err(err("a variable must be a whole segment"));
                }
                t.segs.push(segment(s).map_err(|r| err(&r))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some("") => return Err(err("empty segment at the end")),
                Some(next) => chars = next,
                None if chars.is_empty() => break,
                None => return Err(err("a variable must be a whole segment")),
            }
        }
        if let Some(i) = t.segs.iter().position(|s| *s == Seg::Rest)
            && i + 1 != t.segs.len()
        {
            return Err(err("`**` must be the last segment"));
        }
        Ok(t)
    }

    /// Literal segments, then no `**`, then a verb, then length: the most specific of several
    /// matching templates wins.
    pub fn specificity(&self) -> (usize, bool, bool, usize) {
        let literals = self.segs.iter().filter(|s| matches!(s, Seg::Literal(_))).count();
        (literals, !self.segs.contains(&Seg::Rest), self.verb.is_some(), self.segs.len())
    }

    /// Whether `path` (percent-encoded, starting with `/`) matches; the raw (still encoded)
    /// segments of each variable.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let mut rest = path.strip_prefix('/')?;
        if let Some(verb) = &self.verb {
            let cut = rest.len().checked_sub(verb.len() + 1)?;
            if !rest.is_char_boundary(cut) {
                return None;
            }
            let (head, tail) = rest.split_at(cut);
            if tail.as_bytes()[0] != b':' || &tail[1..] != verb || head.ends_with('/') && !head.is_empty() {
                return None;
            }
            rest = head;
        }
        // Most templates tried fail on a literal: find that out before allocating anything.
        if !self.could_match(rest) {
            return None;
        }
        let segments: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        // Byte offsets of each segment in `rest`, to slice variable spans without copying.
        let mut offsets = Vec::with_capacity(segments.len() + 1);
        let mut at = 0;
        for s in &segments {
            offsets.push(at);
            at += s.len() + 1;
        }
        offsets.push(rest.len() + 1);
        let mut i = 0;
        for seg in &self.segs {
            match seg {
                Seg::Literal(l) => {
                    if segments.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Seg::Single => {
                    if segments.get(i).is_none_or(|s| s.is_empty()) {
                        return None;
                    }
                    i += 1;
                }
                Seg::Rest => i = segments.len(),
            }
        }
        if i != segments.len() {
            return None;
        }
        // Segment index of each pattern position: `**` spans what remains.
        let span = |start: usize, end: usize| -> &'p str {
            let first = start.min(segments.len());
            let last =
                if self.segs.get(end.wrapping_sub(1)) == Some(&Seg::Rest) { segments.len() } else { end };
            if first >= last {
                return "";
            }
            &rest[offsets[first]..offsets[last] - 1]
        };
        Some(self.vars.iter().map(|v| span(v.start, v.end)).collect())
    }

    /// Whether the segments of `rest` (the path without its leading `/` and verb) fit the
    /// pattern's literals and count, without allocating.
    fn could_match(&self, rest: &str) -> bool {
        let mut segments = rest.split('/').filter(|_| !rest.is_empty());
        for seg in &self.segs {
            match seg {
                Seg::Literal(l) => {
                    if segments.next() != Some(l.as_str()) {
                        return false;
                    }
                }
                Seg::Single => {
                    if segments.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Seg::Rest => return true,
            }
        }
        segments.next().is_none()
    }

    /// A variable's value, decoded: fully for a one-segment variable, all but `%2F` for one
    /// spanning several.
    pub fn decode(&self, var: usize, raw: &str) -> Result<String, VarError> {
        let v = &self.vars[var];
        let single = v.end == v.start + 1 && self.segs[v.start] != Seg::Rest;
        percent_decode(raw, !single).ok_or_else(|| VarError::Encoding { field: v.field.clone() })
    }

    /// The template with every variable shown as `{field}`, for listings.
    pub fn display(&self) -> &str {
        &self.source
    }
}

fn literal_char(c: char) -> bool {
    !matches!(c, '/' | '{' | '}' | '*' | ':' | '=' | '?' | '#') && !c.is_whitespace() && !c.is_control()
}

fn segment(s: &str) -> Result<Seg, String> {
    match s {
        "" => Err("empty segment".into()),
        "*" => Ok(Seg::Single),
        "**" => Ok(Seg::Rest),
        _ if s.chars().all(literal_char) => Ok(Seg::Literal(s.to_owned())),
        _ => Err(format!("`{s}` is not a literal, `*` or `**`")),
    }
}

/// Percent-decodes `raw`; with `keep_slash`, `%2F` stays encoded. `None` for a bad escape or
/// invalid UTF-8.
pub fn percent_decode(raw: &str, keep_slash: bool) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if keep_slash && v == b'/' {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(v);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (template, path, the decoded variables or None for no match)
    const CASES: &[(&str, &str, Option<&[&str]>)] = &[
        ("/v1/drones/{id}", "/v1/drones/d-1", Some(&["d-1"])),
        ("/v1/drones/{id}", "/v1/drones/d%2F1", Some(&["d/1"])),
        ("/v1/drones/{id}", "/v1/drones/%E2%9C%88", Some(&["✈"])),
        ("/v1/drones/{id}", "/v1/drones/", None),
        ("/v1/drones/{id}", "/v1/drones", None),
        ("/v1/drones/{id}", "/v1/drones/a/b", None),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b2", Some(&["shelves/s1/books/b2"])),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books", None),
        ("/v1/{name=shelves/*}/books/{book.id}", "/v1/shelves/s%2F1/books/7", Some(&["shelves/s%2F1", "7"])),
        ("/v1/files/{path=**}", "/v1/files/a/b/c.txt", Some(&["a/b/c.txt"])),
        ("/v1/files/{path=**}", "/v1/files", Some(&[""])),
        ("/v1/{shelf.name}/x", "/v1/s%20a/x", Some(&["s a"])),
        ("/v1/*/items", "/v1/anything/items", Some(&[])),
        ("/v1/**", "/v1/a/b", Some(&[])),
        ("/v1/ops/{id}:cancel", "/v1/ops/o1:cancel", Some(&["o1"])),
        ("/v1/ops/{id}:cancel", "/v1/ops/o1", None),
        ("/v1/ops/{id}:cancel", "/v1/ops/o1:undo", None),
        ("/v1/ops/{id}", "/v1/ops/o1:cancel", Some(&["o1:cancel"])),
        ("/v1:batch", "/v1:batch", Some(&[])),
        ("/", "/", Some(&[])),
        ("/v1/drones", "/v1/drones/", None),
    ];

    #[test]
    fn templates_match_and_decode_as_http_proto_says() {
        for (template, path, want) in CASES {
            let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
            let got = t
                .matches(path)
                .map(|raw| raw.iter().enumerate().map(|(i, r)| t.decode(i, r).unwrap()).collect::<Vec<_>>());
            let want = want.map(|w| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, want, "{template} against {path}");
        }
    }

    #[test]
    fn bad_templates_say_why() {
        for (template, reason) in [
            ("v1/x", "must start with `/`"),
            ("/v1/{id", "never closed"),
            ("/v1/{a/{b}}", "not a field path"),
            ("/v1/{id}/{id}", "appears twice"),
            ("/v1/**/x", "`**` must be the last segment"),
            ("/v1//x", "empty segment"),
            ("/v1/x/", "empty segment at the end"),
            ("/v1/a{id}", "whole segment"),
            ("/v1/{1x}", "not a field path"),
            ("/v1/{id=}", "empty pattern"),
            ("/v1/x:", "verb"),
        ] {
            let e = Template::parse(template).unwrap_err();
            assert!(e.to_string().contains(reason), "{template}: {e}");
        }
    }

    #[test]
    fn bad_escapes_in_a_variable_are_refused() {
        let t = Template::parse("/v1/{id}").unwrap();
        let raw = t.matches("/v1/%FF").unwrap();
        assert_eq!(t.decode(0, raw[0]), Err(VarError::Encoding { field: "id".into() }));
        assert!(percent_decode("%4", false).is_none());
        assert!(percent_decode("%+F", false).is_none(), "two hex digits, no sign");
        assert_eq!(Template::parse("/v1/{id}:go").unwrap().matches("/v1/é"), None);
    }

    proptest::proptest! {
        /// Whatever a schema or a client sends, parsing, matching and decoding never panic.
        #[test]
        fn templates_and_paths_never_panic(template in "[/{}=*a-z:.%0-9]{0,24}", path in "[/a-z:%0-9A-F\\xE9]{0,32}") {
            if let Ok(t) = Template::parse(&template) {
                let _ = t.specificity();
                if let Some(raw) = t.matches(&path) {
                    for (i, r) in raw.iter().enumerate() {
                        let _ = t.decode(i, r);
                    }
                }
            }
            let _ = percent_decode(&path, true);
        }
    }

    #[test]
    fn more_literals_are_more_specific() {
        let a = Template::parse("/v1/drones/{id}").unwrap();
        let b = Template::parse("/v1/drones/latest").unwrap();
        let c = Template::parse("/v1/{path=**}").unwrap();
        assert!(b.specificity() > a.specificity());
        assert!(a.specificity() > c.specificity());
    }
}
