//! Simple-type values both ways: a JSON value checked against a built-in type and its facets
//! and written as XML text; XML text read back as the JSON a client expects (numbers,
//! booleans; dates and everything else as strings).
//!
//! Integers outside what JSON numbers carry exactly (beyond ±2^53 is still exact in serde_json's
//! i64/u64, but not beyond those) and decimals that a double would round are strings, so no
//! digit is lost either way.

use base64::Engine as _;
use serde_json::Value;

use crate::xsd::{Facets, QName, Schemas, Simple, Type, TypeRef, XS};

/// A built-in type, as far as values differ.
#[derive(Debug, Clone, PartialEq)]
pub enum Builtin {
    String,
    Boolean,
    /// An integer type, with its range (`None`: unbounded).
    Integer {
        min: Option<i128>,
        max: Option<i128>,
    },
    Decimal,
    /// `xs:float`, `xs:double`.
    Float,
    Date,
    DateTime,
    Time,
    Duration,
    Base64,
    Hex,
}

/// A simple type resolved: the built-in beneath it, every facet on the way, and its name.
#[derive(Debug, Clone)]
pub struct SimpleShape {
    pub builtin: Builtin,
    pub facets: Facets,
    /// `xs:int`, or the user type's name: what an error says was expected.
    pub name: String,
    /// A list of these items (space-separated).
    pub list: Option<Box<SimpleShape>>,
}

/// The built-in type `xs:{local}`.
pub fn builtin(local: &str) -> Option<Builtin> {
    let int = |min: Option<i128>, max: Option<i128>| Builtin::Integer { min, max };
    Some(match local {
        "string" | "normalizedString" | "token" | "language" | "Name" | "NCName" | "ID" | "IDREF"
        | "IDREFS" | "ENTITY" | "ENTITIES" | "NMTOKEN" | "NMTOKENS" | "anyURI" | "QName" | "NOTATION"
        | "gYear" | "gYearMonth" | "gMonth" | "gMonthDay" | "gDay" | "anySimpleType" | "anyAtomicType" => {
            Builtin::String
        }
        "boolean" => Builtin::Boolean,
        "decimal" => Builtin::Decimal,
        "float" | "double" => Builtin::Float,
        "integer" => int(None, None),
        "nonPositiveInteger" => int(None, Some(0)),
        "negativeInteger" => int(None, Some(-1)),
        "nonNegativeInteger" => int(Some(0), None),
        "positiveInteger" => int(Some(1), None),
        "long" => int(Some(i64::MIN.into()), Some(i64::MAX.into())),
        "int" => int(Some(i32::MIN.into()), Some(i32::MAX.into())),
        "short" => int(Some(i16::MIN.into()), Some(i16::MAX.into())),
        "byte" => int(Some(i8::MIN.into()), Some(i8::MAX.into())),
        "unsignedLong" => int(Some(0), Some(u64::MAX.into())),
        "unsignedInt" => int(Some(0), Some(u32::MAX.into())),
        "unsignedShort" => int(Some(0), Some(u16::MAX.into())),
        "unsignedByte" => int(Some(0), Some(u8::MAX.into())),
        "date" => Builtin::Date,
        "dateTime" | "dateTimeStamp" => Builtin::DateTime,
        "time" => Builtin::Time,
        "duration" | "dayTimeDuration" | "yearMonthDuration" => Builtin::Duration,
        "base64Binary" => Builtin::Base64,
        "hexBinary" => Builtin::Hex,
        _ => return None,
    })
}

/// Resolves a simple type: a built-in, a named simple type (through its bases), or one
/// declared in place. `None` for a complex type or an unknown name.
pub fn resolve(schemas: &Schemas, ty: &TypeRef) -> Option<SimpleShape> {
    match ty {
        TypeRef::Named(q) => resolve_named(schemas, q, 0),
        TypeRef::Inline(t) => match &**t {
            Type::Simple(s) => resolve_simple(schemas, s, None, 0),
            Type::Complex(_) => None,
        },
    }
}

fn resolve_named(schemas: &Schemas, q: &QName, depth: u32) -> Option<SimpleShape> {
    if q.ns == XS {
        return builtin(&q.name).map(|builtin| SimpleShape {
            builtin,
            facets: Facets::default(),
            name: q.shown(),
            list: None,
        });
    }
    match schemas.named(q).map(|t| &**t) {
        Some(Type::Simple(s)) => resolve_simple(schemas, s, Some(q), depth + 1),
        _ => None,
    }
}

fn resolve_simple(schemas: &Schemas, s: &Simple, name: Option<&QName>, depth: u32) -> Option<SimpleShape> {
    // A chain of restrictions deeper than this is a loop.
    if depth > 32 {
        return None;
    }
    let shown = |base: &SimpleShape| name.map_or_else(|| base.name.clone(), QName::shown);
    if let Some(item) = &s.list {
        // Depth goes on through the item type: a list of itself ends too.
        let item = match item {
            TypeRef::Named(q) => resolve_named(schemas, q, depth + 1)?,
            TypeRef::Inline(t) => match &**t {
                Type::Simple(inner) => resolve_simple(schemas, inner, None, depth + 1)?,
                Type::Complex(_) => return None,
            },
        };
        return Some(SimpleShape {
            builtin: Builtin::String,
            facets: s.facets.clone(),
            name: name.map_or_else(|| format!("list of {}", item.name), QName::shown),
            list: Some(Box::new(item)),
        });
    }
    if s.union {
        return Some(SimpleShape {
            builtin: Builtin::String,
            facets: Facets::default(),
            name: name.map_or_else(|| "xs:string".into(), QName::shown),
            list: None,
        });
    }
    let base = match (&s.base, &s.inline_base) {
        (Some(b), _) => resolve_named(schemas, b, depth + 1)?,
        (None, Some(inline)) => resolve_simple(schemas, inline, None, depth + 1)?,
        (None, None) => resolve_named(schemas, &QName::new(XS, "string"), depth)?,
    };
    Some(SimpleShape {
        name: shown(&base),
        facets: s.facets.over(&base.facets),
        builtin: base.builtin,
        list: base.list,
    })
}

/// Why a JSON value does not fit.
pub type Mismatch = String;

impl SimpleShape {
    /// The text for `v`, checked.
    pub fn encode(&self, v: &Value) -> Result<String, Mismatch> {
        if let Some(item) = &self.list {
            let Value::Array(items) = v else { return Err(format!("expected an array ({})", self.name)) };
            let texts = items.iter().map(|i| item.encode(i)).collect::<Result<Vec<_>, _>>()?;
            self.check_length(texts.len() as u64, "items")?;
            return Ok(texts.join(" "));
        }
        let expected = || format!("expected {}", self.describe());
        let text = match (&self.builtin, v) {
            (Builtin::Boolean, Value::Bool(b)) => b.to_string(),
            (Builtin::Integer { min, max }, _) => {
                let n: i128 = match v {
                    Value::Number(n) if n.is_i64() || n.is_u64() => {
                        n.to_string().parse().map_err(|_| expected())?
                    }
                    Value::String(s) => s.trim().parse().map_err(|_| expected())?,
                    _ => return Err(expected()),
                };
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    return Err(format!("{n} is out of range for {}", self.name));
                }
                n.to_string()
            }
            (Builtin::Decimal, Value::Number(n)) => decimal_text(n),
            (Builtin::Decimal, Value::String(s)) if is_decimal(s.trim()) => s.trim().to_owned(),
            (Builtin::Float, Value::Number(n)) => n.to_string(),
            (Builtin::Float, Value::String(s))
                if matches!(s.as_str(), "INF" | "-INF" | "NaN") || s.trim().parse::<f64>().is_ok() =>
            {
                s.trim().to_owned()
            }
            (Builtin::Date, Value::String(s)) if is_date(s) => s.clone(),
            (Builtin::DateTime, Value::String(s)) if is_date_time(s) => s.clone(),
            (Builtin::Time, Value::String(s)) if is_time(s) => s.clone(),
            (Builtin::Duration, Value::String(s)) if is_duration(s) => s.clone(),
            (Builtin::Base64, Value::String(s))
                if base64::engine::general_purpose::STANDARD
                    .decode(s.split_whitespace().collect::<String>())
                    .is_ok() =>
            {
                s.clone()
            }
            (Builtin::Hex, Value::String(s))
                if s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                s.clone()
            }
            (Builtin::String, Value::String(s)) => s.clone(),
            _ => return Err(expected()),
        };
        self.check(&text)?;
        Ok(text)
    }

    /// What is expected, for an error: `xs:int`, `Status (one of draft, sent, paid)`.
    pub fn describe(&self) -> String {
        let f = &self.facets;
        if f.enumeration.is_empty() {
            let what = match self.builtin {
                Builtin::Date => " (YYYY-MM-DD)",
                Builtin::DateTime => " (YYYY-MM-DDThh:mm:ss)",
                Builtin::Time => " (hh:mm:ss)",
                Builtin::Boolean => " (true or false)",
                _ => "",
            };
            format!("{}{what}", self.name)
        } else {
            format!("{} (one of {})", self.name, f.enumeration.join(", "))
        }
    }

    fn check_length(&self, len: u64, unit: &str) -> Result<(), Mismatch> {
        let f = &self.facets;
        if f.length.is_some_and(|l| len != l)
            || f.min_length.is_some_and(|l| len < l)
            || f.max_length.is_some_and(|l| len > l)
        {
            let bounds = match (f.length, f.min_length, f.max_length) {
                (Some(l), _, _) => format!("exactly {l}"),
                (None, Some(a), Some(b)) => format!("{a} to {b}"),
                (None, Some(a), None) => format!("at least {a}"),
                (None, None, Some(b)) => format!("at most {b}"),
                _ => String::new(),
            };
            return Err(format!("{len} {unit}, {} takes {bounds}", self.name));
        }
        Ok(())
    }

    /// The facets, on the text.
    fn check(&self, text: &str) -> Result<(), Mismatch> {
        let f = &self.facets;
        if !f.enumeration.is_empty() && !f.enumeration.iter().any(|e| e == text) {
            return Err(format!("`{text}` is not one of {} ({})", f.enumeration.join(", "), self.name));
        }
        if matches!(self.builtin, Builtin::String | Builtin::Base64 | Builtin::Hex) {
            self.check_length(text.chars().count() as u64, "characters")?;
        }
        for p in &f.pattern {
            // One regex cannot read is not checked (the service will).
            if let Some(re) = pattern(p)
                && !re.is_match(text)
            {
                return Err(format!("`{text}` does not match the pattern {p} ({})", self.name));
            }
        }
        if matches!(self.builtin, Builtin::Integer { .. } | Builtin::Decimal | Builtin::Float)
            && let Ok(n) = text.parse::<f64>()
        {
            let bound = |b: &Option<String>| b.as_deref().and_then(|b| b.trim().parse::<f64>().ok());
            let out = bound(&f.min_inclusive).is_some_and(|m| n < m)
                || bound(&f.max_inclusive).is_some_and(|m| n > m)
                || bound(&f.min_exclusive).is_some_and(|m| n <= m)
                || bound(&f.max_exclusive).is_some_and(|m| n >= m);
            if out {
                let mut range = Vec::new();
                for (b, op) in [
                    (&f.min_inclusive, ">="),
                    (&f.min_exclusive, ">"),
                    (&f.max_inclusive, "<="),
                    (&f.max_exclusive, "<"),
                ] {
                    if let Some(b) = b {
                        range.push(format!("{op} {b}"));
                    }
                }
                return Err(format!("{text} is out of range for {} ({})", self.name, range.join(" and ")));
            }
        }
        Ok(())
    }

    /// The JSON for `text` (whitespace collapsed as the type says); text that does not read as
    /// the type stays a string: an answer is passed on, not judged.
    pub fn decode(&self, text: &str) -> Value {
        if let Some(item) = &self.list {
            return Value::Array(text.split_whitespace().map(|t| item.decode(t)).collect());
        }
        let t = text.trim();
        match self.builtin {
            Builtin::Boolean => match t {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => Value::String(text.to_owned()),
            },
            Builtin::Integer { .. } => {
                let t = t.strip_prefix('+').unwrap_or(t);
                t.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<u64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(t.to_owned()))
            }
            Builtin::Decimal => exact_number(t).unwrap_or_else(|| Value::String(t.to_owned())),
            Builtin::Float => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(t.to_owned()), Value::Number),
            Builtin::String => Value::String(text.to_owned()),
            _ => Value::String(t.to_owned()),
        }
    }
}

/// An XSD pattern as a regex, compiled once: XSD patterns match the whole value, and `^` and
/// `$` outside a character class are plain characters in them.
fn pattern(p: &str) -> Option<std::sync::Arc<regex::Regex>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<regex::Regex>>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(re) = cache.get(p) {
        return re.clone();
    }
    let mut rx = String::with_capacity(p.len() + 8);
    let (mut in_class, mut escaped) = (false, false);
    for c in p.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '^' | '$' if !in_class => rx.push('\\'),
            _ => {}
        }
        rx.push(c);
    }
    let re = regex::RegexBuilder::new(&format!("^(?:{rx})$")).size_limit(1 << 20).build().ok().map(Arc::new);
    // Bounded: a WSDL's patterns are few; a flood of them is not kept.
    if cache.len() < 1024 {
        cache.insert(p.to_owned(), re.clone());
    }
    re
}

/// A JSON number's decimal text, never in exponent form.
fn decimal_text(n: &serde_json::Number) -> String {
    if n.is_f64() { n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}")) } else { n.to_string() }
}

/// A decimal as a JSON number when a double holds it exactly as written (`21.00` is 21; a
/// 30-digit amount is not).
fn exact_number(t: &str) -> Option<Value> {
    if !is_decimal(t) {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    if f.is_finite() && normalize(t) == normalize(&format!("{f}")) {
        return serde_json::Number::from_f64(f).map(|n| {
            // Integers stay integers (`21`, not `21.0`).
            if f.fract() == 0.0 && f.abs() < 9.0e15 { Value::from(f as i64) } else { Value::Number(n) }
        });
    }
    None
}

fn normalize(t: &str) -> String {
    let t = t.strip_prefix('+').unwrap_or(t);
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let body = match (int.is_empty(), frac.is_empty()) {
        (true, true) => return "0".into(),
        (_, true) => int.to_owned(),
        (true, false) => format!("0.{frac}"),
        (false, false) => format!("{int}.{frac}"),
    };
    if neg { format!("-{body}") } else { body }
}

fn is_decimal(t: &str) -> bool {
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// `Z`, `+hh:mm` or `-hh:mm` at the end, if any: the rest. Works on bytes: the text is the
/// client's, and may hold any character anywhere.
fn without_zone(s: &str) -> Option<&str> {
    if let Some(r) = s.strip_suffix('Z') {
        return Some(r);
    }
    let b = s.as_bytes();
    if b.len() > 6 {
        let z = &b[b.len() - 6..];
        let zone = (z[0] == b'+' || z[0] == b'-')
            && z[1].is_ascii_digit()
            && z[2].is_ascii_digit()
            && z[3] == b':'
            && z[4].is_ascii_digit()
            && z[5].is_ascii_digit();
        // Six ASCII bytes end the text, so the cut is on a character boundary.
        if zone {
            return s.get(..s.len() - 6);
        }
    }
    Some(s)
}

fn is_date(s: &str) -> bool {
    let Some(s) = without_zone(s) else { return false };
    let s = s.strip_prefix('-').unwrap_or(s);
    let parts: Vec<&str> = s.split('-').collect();
    matches!(&parts[..], [y, m, d] if y.len() >= 4 && digits(y, y.len()) && digits(m, 2) && digits(d, 2)
        && (1..=12).contains(&m.parse::<u8>().unwrap_or(0)) && (1..=31).contains(&d.parse::<u8>().unwrap_or(0)))
}

fn is_clock(s: &str) -> bool {
    let (hms, frac) = s.split_once('.').unwrap_or((s, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    matches!(&parts[..], [h, m, sec] if digits(h, 2) && digits(m, 2) && digits(sec, 2)
        && h.parse::<u8>().unwrap_or(99) <= 24 && m.parse::<u8>().unwrap_or(99) < 60 && sec.parse::<u8>().unwrap_or(99) <= 60)
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn is_time(s: &str) -> bool {
    without_zone(s).is_some_and(is_clock)
}

fn is_date_time(s: &str) -> bool {
    let Some(rest) = without_zone(s) else { return false };
    rest.split_once('T').is_some_and(|(d, t)| is_date(d) && is_clock(t))
}

fn is_duration(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let Some(body) = s.strip_prefix('P') else { return false };
    !body.is_empty()
        && body != "T"
        && body.bytes().all(|b| b.is_ascii_digit() || b"YMDTHS.".contains(&b))
        && body.bytes().any(|b| b.is_ascii_alphabetic() && b != b'T')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(local: &str) -> SimpleShape {
        resolve(&Schemas::default(), &TypeRef::Named(QName::new(XS, local))).unwrap()
    }

    #[test]
    fn values_are_checked_against_their_built_in_type() {
        assert_eq!(shape("int").encode(&json!(42)).unwrap(), "42");
        assert_eq!(shape("int").encode(&json!("42")).unwrap(), "42");
        assert_eq!(
            shape("int").encode(&json!(3_000_000_000u64)).unwrap_err(),
            "3000000000 is out of range for xs:int"
        );
        assert_eq!(shape("int").encode(&json!(1.5)).unwrap_err(), "expected xs:int");
        assert_eq!(shape("unsignedLong").encode(&json!(u64::MAX)).unwrap(), u64::MAX.to_string());
        assert_eq!(shape("decimal").encode(&json!(4.5)).unwrap(), "4.5");
        assert_eq!(shape("decimal").encode(&json!(1e21)).unwrap(), "1000000000000000000000");
        assert_eq!(
            shape("decimal").encode(&json!("12345678901234567890.12")).unwrap(),
            "12345678901234567890.12"
        );
        assert!(shape("decimal").encode(&json!("1e3")).is_err());
        assert_eq!(shape("boolean").encode(&json!(true)).unwrap(), "true");
        assert_eq!(
            shape("boolean").encode(&json!("yes")).unwrap_err(),
            "expected xs:boolean (true or false)"
        );
        assert_eq!(shape("date").encode(&json!("2024-02-29")).unwrap(), "2024-02-29");
        assert_eq!(shape("date").encode(&json!("2024-02-29+01:00")).unwrap(), "2024-02-29+01:00");
        assert!(shape("date").encode(&json!("29.02.2024")).is_err());
        assert!(shape("date").encode(&json!("2024-13-01")).is_err());
        // Any text, any characters: refused, never a panic.
        for t in [
            "x€12345",
            "2024-01-0€",
            "€",
            "12:00:0€+01:00",
            "2024-01-01T00:00:00+1€x",
            "\u{10ffff}\u{10ffff}",
        ] {
            for ty in ["date", "dateTime", "time", "duration", "decimal", "int", "base64Binary", "hexBinary"]
            {
                assert!(shape(ty).encode(&json!(t)).is_err(), "{ty} {t}");
            }
        }
        assert!(shape("dateTime").encode(&json!("2024-01-02T03:04:05.123Z")).is_ok());
        assert!(shape("dateTime").encode(&json!("2024-01-02 03:04:05")).is_err());
        assert!(shape("duration").encode(&json!("PT5M")).is_ok());
        assert!(shape("duration").encode(&json!("5 minutes")).is_err());
        assert!(shape("base64Binary").encode(&json!("aGk=")).is_ok());
        assert!(shape("base64Binary").encode(&json!("not base64!")).is_err());
        assert_eq!(shape("string").encode(&json!(5)).unwrap_err(), "expected xs:string");
    }

    #[test]
    fn answers_read_as_numbers_when_nothing_is_lost() {
        assert_eq!(shape("decimal").decode("21.00"), json!(21));
        assert_eq!(shape("decimal").decode("0.99"), json!(0.99));
        assert_eq!(shape("decimal").decode("12345678901234567890.12"), json!("12345678901234567890.12"));
        assert_eq!(shape("long").decode(" 9007199254740993 "), json!(9_007_199_254_740_993i64));
        assert_eq!(
            shape("integer").decode("123456789012345678901234567890"),
            json!("123456789012345678901234567890")
        );
        assert_eq!(shape("boolean").decode("1"), json!(true));
        assert_eq!(shape("float").decode("INF"), json!("INF"));
        assert_eq!(shape("int").decode("n/a"), json!("n/a"));
        assert_eq!(shape("date").decode("2024-01-15"), json!("2024-01-15"));
    }

    #[test]
    fn facets_restrict_and_name_what_is_allowed() {
        let doc = roxmltree::Document::parse(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t" targetNamespace="urn:t">
                 <xs:simpleType name="Status"><xs:restriction base="xs:string"><xs:enumeration value="draft"/><xs:enumeration value="paid"/></xs:restriction></xs:simpleType>
                 <xs:simpleType name="Code"><xs:restriction base="xs:string"><xs:pattern value="[A-Z]{3}"/><xs:maxLength value="3"/></xs:restriction></xs:simpleType>
                 <xs:simpleType name="Qty"><xs:restriction base="xs:int"><xs:minInclusive value="1"/><xs:maxExclusive value="100"/></xs:restriction></xs:simpleType>
                 <xs:simpleType name="Small"><xs:restriction base="t:Qty"><xs:maxInclusive value="9"/></xs:restriction></xs:simpleType>
                 <xs:simpleType name="Tags"><xs:list itemType="t:Code"/></xs:simpleType>
               </xs:schema>"#,
        )
        .unwrap();
        let mut s = Schemas::default();
        s.read(doc.root_element(), None).unwrap();
        let get = |n: &str| resolve(&s, &TypeRef::Named(QName::new("urn:t", n))).unwrap();
        assert_eq!(
            get("Status").encode(&json!("sent")).unwrap_err(),
            "`sent` is not one of draft, paid (Status)"
        );
        assert_eq!(get("Status").describe(), "Status (one of draft, paid)");
        assert!(get("Code").encode(&json!("ABC")).is_ok());
        assert!(get("Code").encode(&json!("abc")).unwrap_err().contains("does not match the pattern"));
        assert!(get("Code").encode(&json!("ABCD")).is_err());
        assert_eq!(pattern("a$b").map(|r| r.is_match("a$b")), Some(true), "`$` is a plain character in XSD");
        assert_eq!(pattern("[^a]b").map(|r| r.is_match("xb")), Some(true), "a class's `^` negates");
        assert_eq!(get("Qty").encode(&json!(0)).unwrap_err(), "0 is out of range for Qty (>= 1 and < 100)");
        assert!(get("Qty").encode(&json!(99)).is_ok());
        assert!(get("Small").encode(&json!(10)).is_err(), "a restriction of a restriction keeps both");
        assert!(get("Small").encode(&json!(0)).is_err());
        assert_eq!(get("Tags").encode(&json!(["ABC", "XYZ"])).unwrap(), "ABC XYZ");
        assert_eq!(get("Tags").decode("ABC XYZ"), json!(["ABC", "XYZ"]));
        // A type that is a list of itself, or restricts itself, resolves to nothing, and ends.
        let doc = roxmltree::Document::parse(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t" targetNamespace="urn:t">
                 <xs:simpleType name="L"><xs:list itemType="t:L"/></xs:simpleType>
                 <xs:simpleType name="R"><xs:restriction base="t:R"/></xs:simpleType></xs:schema>"#,
        )
        .unwrap();
        let mut s = Schemas::default();
        s.read(doc.root_element(), None).unwrap();
        assert!(resolve(&s, &TypeRef::Named(QName::new("urn:t", "L"))).is_none());
        assert!(resolve(&s, &TypeRef::Named(QName::new("urn:t", "R"))).is_none());
    }
}
