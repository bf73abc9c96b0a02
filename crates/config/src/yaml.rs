//! YAML text → JSON value tree plus a map from key paths to source positions.
//!
//! serde deserializers report *what* went wrong but the gateway must also say *where*
//! (`file:line:col: key.path: message`), including for checks that run after deserialization
//! (an unknown upstream name, a non-loopback admin listener without a token). So the loader
//! builds its own tree from the parser's events and remembers the position of every key and
//! sequence item. `${env:…}`/`${file:…}` references are resolved in the same pass, so a missing
//! one is reported at the scalar that names it.
//!
//! Scalars follow the YAML 1.2 core schema (plain `true`, `12`, `1.5`, `~`, `null` are typed;
//! quoted scalars are always strings). Anchors and aliases work; merge keys (`<<`) are not
//! supported and end up as unknown keys. Duplicate keys are an error.

use std::collections::{BTreeMap, HashMap};

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::error::Pos;
use crate::interpolate::Resolver;

/// Where each key path (`routes[0].match.path_prefix`) sits in the source.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    map: HashMap<String, Pos>,
}

impl Locations {
    /// Position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return Some(*pos);
            }
            p = parent_path(p)?;
        }
    }

    pub(crate) fn insert(&mut self, path: String, pos: Pos) {
        self.map.entry(path).or_insert(pos);
    }
}

fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Joins a key onto a path: `a` + `b` → `a.b`.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Joins an index onto a path: `a` + 3 → `a[3]`.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The parsed document.
pub struct Document {
    pub value: Value,
    pub locations: Locations,
    /// Key paths whose value came from a `${…}` reference, with the reference text as written.
    pub interpolated: BTreeMap<String, String>,
}

/// A problem found while reading the YAML itself.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub pos: Option<Pos>,
    pub path: String,
    pub message: String,
}

enum Frame {
    Map { map: Map<String, Value>, path: String, key: Option<String>, anchor: usize },
    Seq { items: Vec<Value>, path: String, anchor: usize },
}

fn pos_of(span: &Span) -> Pos {
    Pos { line: span.start.line(), col: span.start.col() + 1 }
}

/// A non-key scalar in the source: its key path, where it is, and its text as written (before
/// `${…}` references are resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarSite {
    pub path: String,
    /// Byte range of the scalar in the source, quotes and block indicators included.
    /// Valid only when `block` is false: a block scalar's (`|`, `>`) span starts at its content.
    pub range: std::ops::Range<usize>,
    pub raw: String,
    pub block: bool,
}

/// Every non-key scalar of a YAML document (for tools that rewrite values in place, keeping the
/// rest of the file as written). References are not resolved.
pub fn scalar_sites(text: &str) -> Result<Vec<ScalarSite>, YamlError> {
    struct Unresolved;
    impl Resolver for Unresolved {
        fn env(&self, _: &str) -> Option<String> {
            Some(String::new())
        }
        fn file(&self, _: &str) -> Result<String, String> {
            Ok(String::new())
        }
    }
    let mut sites = Vec::new();
    parse_inner(text, &Unresolved, Some(&mut sites))?;
    Ok(sites)
}

/// Byte offset of a marker (the parser counts characters too).
fn byte_offset(text: &str, m: &granit_parser::Marker) -> usize {
    m.byte_offset().unwrap_or_else(|| text.char_indices().nth(m.index()).map_or(text.len(), |(i, _)| i))
}

/// Parses one YAML document.
pub fn parse(text: &str, resolver: &dyn Resolver) -> Result<Document, YamlError> {
    parse_inner(text, resolver, None)
}

fn parse_inner(
    text: &str,
    resolver: &dyn Resolver,
    mut sites: Option<&mut Vec<ScalarSite>>,
) -> Result<Document, YamlError> {
    let source = text;
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut locations = Locations::default();
    let mut interpolated = BTreeMap::new();
    let mut root: Option<Value> = None;
    let mut documents = 0;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            pos: Some(Pos { line: e.marker().line(), col: e.marker().col() + 1 }),
            path: String::new(),
            message: e.info(),
        })?;
        let pos = pos_of(&span);
        // The path a node starting here would have, and whether it is a mapping key.
        let (node_path, is_key) = match stack.last() {
            None => (String::new(), false),
            Some(Frame::Map { key: None, path, .. }) => (path.clone(), true),
            Some(Frame::Map { key: Some(k), path, .. }) => (join_key(path, k), false),
            Some(Frame::Seq { items, path, .. }) => (join_index(path, items.len()), false),
        };
        let value = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        pos: Some(pos),
                        path: String::new(),
                        message: "only one YAML document is allowed in a config file".into(),
                    });
                }
                continue;
            }
            Event::MappingStart(_, anchor, _) | Event::SequenceStart(_, anchor, _) if is_key => {
                let _ = anchor;
                return Err(key_error(pos, &node_path));
            }
            Event::MappingStart(_, anchor, _) => {
                if !node_path.is_empty() {
                    locations.insert(node_path.clone(), pos);
                }
                stack.push(Frame::Map { map: Map::new(), path: node_path, key: None, anchor });
                continue;
            }
            Event::SequenceStart(_, anchor, _) => {
                if !node_path.is_empty() {
                    locations.insert(node_path.clone(), pos);
                }
                stack.push(Frame::Seq { items: Vec::new(), path: node_path, anchor });
                continue;
            }
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { map, anchor, .. }) => remember(&mut anchors, anchor, Value::Object(map)),
                _ => unreachable!("parser emits balanced mapping events"),
            },
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, anchor, .. }) => remember(&mut anchors, anchor, Value::Array(items)),
                _ => unreachable!("parser emits balanced sequence events"),
            },
            Event::Scalar(text, style, anchor, tag) => {
                if is_key {
                    let key = text.into_owned();
                    let Some(Frame::Map { map, path, key: slot, .. }) = stack.last_mut() else {
                        unreachable!()
                    };
                    let key_path = join_key(path, &key);
                    if map.contains_key(&key) {
                        return Err(YamlError {
                            pos: Some(pos),
                            path: key_path,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    locations.insert(key_path, pos);
                    *slot = Some(key);
                    continue;
                }
                locations.insert(node_path.clone(), pos);
                if let Some(sites) = sites.as_deref_mut() {
                    sites.push(ScalarSite {
                        path: node_path.clone(),
                        range: byte_offset(source, &span.start)..byte_offset(source, &span.end),
                        raw: text.to_string(),
                        block: matches!(style, ScalarStyle::Literal | ScalarStyle::Folded),
                    });
                }
                let force_string = tag.as_ref().is_some_and(|t| t.suffix() == "str");
                let value = if style == ScalarStyle::Plain && !force_string {
                    plain_scalar(&text)
                } else {
                    Value::String(text.into_owned())
                };
                let value = match value {
                    Value::String(s) if s.contains("${") => {
                        let resolved = crate::interpolate::resolve(&s, resolver).map_err(|message| {
                            YamlError { pos: Some(pos), path: node_path.clone(), message }
                        })?;
                        if resolved != s {
                            interpolated.insert(node_path.clone(), s);
                        }
                        Value::String(resolved)
                    }
                    v => v,
                };
                remember(&mut anchors, anchor, value)
            }
            Event::Alias(id) => {
                if is_key {
                    return Err(key_error(pos, &node_path));
                }
                locations.insert(node_path.clone(), pos);
                anchors.get(&id).cloned().unwrap_or(Value::Null)
            }
            _ => continue,
        };
        // Attach the finished node to its parent.
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Map { map, key, .. }) => {
                let k = key.take().expect("value follows its key");
                map.insert(k, value);
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
        }
    }
    Ok(Document { value: root.unwrap_or(Value::Null), locations, interpolated })
}

fn key_error(pos: Pos, path: &str) -> YamlError {
    YamlError {
        pos: Some(pos),
        path: path.to_owned(),
        message: "mapping keys must be plain strings, not mappings, sequences or aliases".into(),
    }
}

fn remember(anchors: &mut HashMap<usize, Value>, anchor: usize, value: Value) -> Value {
    if anchor != 0 {
        anchors.insert(anchor, value.clone());
    }
    value
}

/// Resolves a plain scalar per the YAML 1.2 core schema.
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = s.trim_start_matches('+').parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(u) = u64::from_str_radix(hex, 16)
    {
        return Value::Number(u.into());
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(u) = u64::from_str_radix(oct, 8)
    {
        return Value::Number(u.into());
    }
    let looks_float = s.bytes().next().is_some_and(|b| b.is_ascii_digit() || b"-+.".contains(&b))
        && s.bytes().all(|b| b.is_ascii_digit() || b"-+.eE".contains(&b))
        && s.bytes().any(|b| b.is_ascii_digit());
    if looks_float && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interpolate::MapResolver;

    fn doc(text: &str) -> Document {
        parse(text, &MapResolver::default()).unwrap()
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let d = doc("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: 250ms\ng: 127.0.0.1:8080\nh: -3\ni: !!str 5\n");
        assert_eq!(
            d.value,
            serde_json::json!({"a":1,"b":"1","c":true,"d":null,"e":1.5,"f":"250ms","g":"127.0.0.1:8080","h":-3,"i":"5"})
        );
    }

    #[test]
    fn locations_point_at_keys_and_items() {
        let d = doc("server:\n  listen: x\nroutes:\n  - name: a\n    upstream: u\n  - name: b\n");
        assert_eq!(d.locations.find("server.listen"), Some(Pos { line: 2, col: 3 }));
        assert_eq!(d.locations.find("routes[0].upstream"), Some(Pos { line: 5, col: 5 }));
        assert_eq!(d.locations.find("routes[1]"), Some(Pos { line: 6, col: 5 }));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(d.locations.find("routes[1].nothing.here"), Some(Pos { line: 6, col: 5 }));
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let d = doc("a: &x {k: 1}\nb: *x\n");
        assert_eq!(d.value["b"], serde_json::json!({"k": 1}));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = parse("a: 1\na: 2\n", &MapResolver::default()).err().unwrap();
        assert_eq!(e.pos, Some(Pos { line: 2, col: 1 }));
        assert!(e.message.contains("duplicate key `a`"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n", &MapResolver::default()).err().unwrap();
        assert!(e.pos.is_some());
        let e = parse("a: 1\n---\nb: 2\n", &MapResolver::default()).err().unwrap();
        assert!(e.message.contains("one YAML document"), "{}", e.message);
    }

    #[test]
    fn complex_keys_are_refused() {
        let e = parse("? [a, b]\n: 1\n", &MapResolver::default()).err().unwrap();
        assert!(e.message.contains("plain strings"));
    }

    #[test]
    fn scalar_sites_cover_each_style_and_can_be_replaced_in_place() {
        let text =
            "a: plain/x.pem\nb: \"dq ${file:k}\"\nc: 'sq'\nd: [x, \"y\"]\ne: |\n  block\n  text\nf: 1\n";
        let sites = scalar_sites(text).unwrap();
        let paths: Vec<&str> = sites.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["a", "b", "c", "d[0]", "d[1]", "e", "f"]);
        assert_eq!(sites[1].raw, "dq ${file:k}");
        // Replacing every site with a JSON string (valid YAML) keeps the document's shape.
        let mut out = text.to_owned();
        assert!(sites[5].block && !sites[4].block);
        for s in sites.iter().rev().filter(|s| !s.block) {
            out.replace_range(s.range.clone(), &serde_json::to_string(&format!("<{}>", s.path)).unwrap());
        }
        let d = doc(&out);
        assert_eq!(
            d.value,
            serde_json::json!({"a":"<a>","b":"<b>","c":"<c>","d":["<d[0]>","<d[1]>"],"e":"block\ntext\n","f":"<f>"}),
            "{out}"
        );
    }

    #[test]
    fn references_are_resolved_and_remembered() {
        let r = MapResolver::with_env(&[("TOKEN", "s3cret")]);
        let d = parse("admin:\n  token: ${env:TOKEN}\n", &r).unwrap();
        assert_eq!(d.value["admin"]["token"], "s3cret");
        assert_eq!(d.interpolated.get("admin.token").map(String::as_str), Some("${env:TOKEN}"));
        let e = parse("admin:\n  token: ${env:NOPE}\n", &r).err().unwrap();
        assert_eq!(e.path, "admin.token");
        assert_eq!(e.pos, Some(Pos { line: 2, col: 10 }));
        assert!(e.message.contains("NOPE"));
    }
}
