//! Client-certificate identities: who a verified client certificate names, and whether that
//! matches a pattern from config (`authenticators.*.mtls.subjects`).
//!
//! The TLS layer has already verified the chain; this module only reads the certificate's
//! subject and subject alternative names (SANs) and renders them as strings an operator can write
//! patterns against: the subject as an RFC 4514 string, most-specific RDN first
//! (`CN=laptop-7,O=Acme,C=DE`), SANs as `DNS:…`, `URI:…`, `email:…` and `IP:…`.
//!
//! Patterns (see [`SubjectPattern`]) are matched value by value, never by searching the whole
//! subject string: a `*` never runs across an RDN or attribute boundary, and every pattern is
//! anchored at both ends, so `CN=laptop-*` does not match `CN=desktop-laptop-1` and
//! `CN=a*,O=Acme` does not match `CN=a,OU=Evil,O=Acme`.
//!
//! Written by hand because x509-parser's `X509Name` display is not RFC 4514 (it lists RDNs in
//! certificate order and does not escape), and no maintained crate matches DN patterns.
//!
//! Absent on purpose: SANs other than DNS names, URIs, email addresses and IP addresses (other
//! names, directory names, registered IDs) are ignored; matching is case-sensitive except for
//! attribute type names and SAN prefixes (DNS names in certificates are expected in lower case).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use x509_parser::asn1_rs::{Tag, ToDer as _};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The identity in a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject as an RFC 4514 string, most-specific RDN first, e.g. `CN=laptop-7,O=Acme,C=DE`.
    /// Known attribute types by their short names (`CN`, `O`, `OU`, `C`, `L`, `ST`,
    /// `emailAddress`, …), others as dotted OIDs; values escaped per RFC 4514 §2.4 (and control
    /// characters as `\XX`); a value that is not a string as `#` and the hex of its DER encoding.
    pub subject: String,
    /// The most specific common name (the first `CN` in [`ClientIdentity::subject`]), unescaped.
    pub common_name: Option<String>,
    /// Subject alternative names in certificate order: `DNS:laptop-7.example`,
    /// `URI:spiffe://acme/laptop-7`, `email:x@y.example`, `IP:10.0.0.7`, `IP:2001:db8::7`.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// Reads the identity from a DER-encoded certificate. Fails on anything that is not exactly
    /// one certificate, on a malformed subject alternative name extension, and on a certificate
    /// that names no one (an empty subject and no SAN of the four kinds above).
    pub fn from_der(der: &[u8]) -> Result<ClientIdentity, String> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a DER-encoded X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes after the certificate", rest.len()));
        }
        let (subject, common_name) = render_name(cert.subject());
        let mut sans = Vec::new();
        let ext = cert
            .subject_alternative_name()
            .map_err(|e| format!("invalid subject alternative name extension: {e}"))?;
        for name in ext.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(s) => sans.push(format!("DNS:{s}")),
                GeneralName::URI(s) => sans.push(format!("URI:{s}")),
                GeneralName::RFC822Name(s) => sans.push(format!("email:{s}")),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        sans.push(format!("IP:{}", Ipv4Addr::from(v4)));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        sans.push(format!("IP:{}", Ipv6Addr::from(v6)));
                    }
                }
                _ => {}
            }
        }
        if subject.is_empty() && sans.is_empty() {
            return Err("the certificate names no one: its subject is empty and it has no DNS, URI, \
                        email or IP subject alternative name"
                .to_owned());
        }
        Ok(ClientIdentity { subject, common_name, sans })
    }

    /// The consumer id: the common name when present (and not empty), else the full subject,
    /// else the first SAN (with its prefix, e.g. `URI:spiffe://acme/laptop-7`).
    pub fn consumer(&self) -> &str {
        self.common_name
            .as_deref()
            .filter(|cn| !cn.is_empty())
            .or(Some(self.subject.as_str()).filter(|s| !s.is_empty()))
            .or(self.sans.first().map(String::as_str))
            .unwrap_or_default()
    }
}

/// A pattern from config that a client identity must match. `*` matches any run of characters
/// (including none) within one value; everything else matches itself, case-sensitively, except
/// attribute type names and SAN prefixes. Three forms:
///
/// - an attribute pattern, `CN=laptop-*`: matches when any attribute of that type anywhere in the
///   subject matches the value pattern;
/// - a subject pattern, containing an (unescaped) `,` or `+`: `CN=laptop-*,O=Acme,C=DE` matches a
///   subject with exactly these RDNs in this order, each value matching its pattern;
/// - a SAN pattern, `DNS:*.laptops.acme.example`, `URI:spiffe://acme/*`, `email:*@acme.example`
///   or `IP:10.0.*`: matches when any SAN of that kind matches.
///
/// Values are written as in RFC 4514 (`O=Acme\, Inc.` or `O=Acme\2C Inc.`) and compared unescaped.
#[derive(Debug, Clone)]
pub struct SubjectPattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone)]
enum PatternKind {
    Attribute(AttrPattern),
    Subject(Vec<Vec<AttrPattern>>),
    San { prefix: &'static str, glob: String },
}

/// One `TYPE=VALUE` of a pattern: the canonical type name and the unescaped value pattern.
#[derive(Debug, Clone)]
struct AttrPattern {
    ty: Cow<'static, str>,
    value: Value<String>,
}

impl SubjectPattern {
    /// Parses a pattern; the error says what is wrong (empty, unknown SAN prefix, no `=`, unknown
    /// attribute type, empty RDN, bad escape).
    pub fn parse(s: &str) -> Result<SubjectPattern, String> {
        if s.trim().is_empty() {
            return Err("empty subject pattern".to_owned());
        }
        let (colon, eq) = (s.find(':'), s.find('='));
        let kind = match (colon, eq) {
            (Some(c), eq) if eq.is_none_or(|e| c < e) => {
                let (prefix, glob) = (&s[..c], &s[c + 1..]);
                let Some(&prefix) = SAN_PREFIXES.iter().find(|p| p.eq_ignore_ascii_case(prefix)) else {
                    return Err(format!(
                        "unknown SAN type {prefix:?} in {s:?}: expected DNS:, URI:, email: or IP:"
                    ));
                };
                if glob.is_empty() {
                    return Err(format!("nothing after {prefix}: in {s:?}; use {prefix}:* to match any"));
                }
                PatternKind::San { prefix, glob: glob.to_owned() }
            }
            (_, None) => {
                return Err(format!(
                    "{s:?} has no '=': expected an attribute pattern like CN=laptop-*, a subject \
                     like CN=laptop-7,O=Acme, or a SAN pattern like DNS:*.example.com"
                ));
            }
            (_, Some(_)) => {
                let rdns = parse_dn(s).map_err(|e| format!("{e} in {s:?}"))?;
                match <[Vec<AttrPattern>; 1]>::try_from(rdns) {
                    Ok([mut rdn]) if rdn.len() == 1 => PatternKind::Attribute(rdn.remove(0)),
                    Ok([rdn]) => PatternKind::Subject(vec![rdn]),
                    Err(rdns) => PatternKind::Subject(rdns),
                }
            }
        };
        Ok(SubjectPattern { text: s.to_owned(), kind })
    }

    /// Whether `id` matches this pattern.
    pub fn matches(&self, id: &ClientIdentity) -> bool {
        match &self.kind {
            PatternKind::San { prefix, glob: pattern } => id.sans.iter().any(|san| {
                san.split_once(':').is_some_and(|(p, value)| p == *prefix && glob(pattern, value))
            }),
            PatternKind::Attribute(want) => {
                let Some(rdns) = split_subject(&id.subject) else { return false };
                rdns.iter().flatten().any(|have| want.matches(have))
            }
            PatternKind::Subject(want) => {
                let Some(have) = split_subject(&id.subject) else { return false };
                want.len() == have.len()
                    && want
                        .iter()
                        .zip(&have)
                        .all(|(w, h)| w.len() == h.len() && w.iter().zip(h).all(|(w, h)| w.matches(h)))
            }
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl AttrPattern {
    fn matches(&self, (ty, value): &(&str, Value<Cow<'_, str>>)) -> bool {
        *ty == self.ty
            && match (&self.value, value) {
                (Value::Str(p), Value::Str(v)) | (Value::Hex(p), Value::Hex(v)) => glob(p, v),
                _ => false,
            }
    }
}

/// SAN kinds, as prefixed in [`ClientIdentity::sans`].
const SAN_PREFIXES: [&str; 4] = ["DNS", "URI", "email", "IP"];

/// Attribute types with a short name: the name used in subject strings, and the OID. RFC 4514 §3
/// names CN, L, ST, O, OU, C, STREET, DC and UID; the others are the names OpenSSL prints.
const ATTRIBUTE_TYPES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("serialNumber", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("title", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("initials", "2.5.4.43"),
    ("generationQualifier", "2.5.4.44"),
    ("dnQualifier", "2.5.4.46"),
    ("pseudonym", "2.5.4.65"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

/// The canonical spelling of an attribute type written in a pattern: a known name in any case or
/// its OID → the short name; another dotted OID → itself.
fn canonical_type(name: &str) -> Result<Cow<'static, str>, String> {
    if let Some((short, _)) =
        ATTRIBUTE_TYPES.iter().find(|(short, oid)| short.eq_ignore_ascii_case(name) || *oid == name)
    {
        return Ok(Cow::Borrowed(short));
    }
    let is_oid = !name.is_empty()
        && name.split('.').count() >= 2
        && name.split('.').all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
    if is_oid {
        return Ok(Cow::Owned(name.to_owned()));
    }
    let known: Vec<&str> = ATTRIBUTE_TYPES.iter().map(|(short, _)| *short).collect();
    Err(format!("unknown attribute type {name:?}: expected one of {} or a dotted OID", known.join(", ")))
}

/// An attribute value: a string, or (written `#…` in RFC 4514) the hex of a non-string value's
/// DER encoding, which only matches a `#…` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value<S> {
    Str(S),
    Hex(S),
}

/// Renders a name as RFC 4514 (RDNs in reverse order) and finds its most specific common name.
fn render_name(name: &X509Name<'_>) -> (String, Option<String>) {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    let mut common_name = None;
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            let short = ATTRIBUTE_TYPES.iter().find(|(_, o)| *o == oid).map(|(short, _)| *short);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match attribute_value(atv) {
                Value::Str(s) => {
                    escape_into(&s, &mut out);
                    if short == Some("CN") && common_name.is_none() {
                        common_name = Some(s);
                    }
                }
                Value::Hex(h) => {
                    out.push('#');
                    out.push_str(&h);
                }
            }
        }
    }
    (out, common_name)
}

/// Decodes a string-typed attribute value; anything else becomes the hex of its DER encoding.
fn attribute_value(atv: &AttributeTypeAndValue<'_>) -> Value<String> {
    let any = atv.attr_value();
    let data = any.data;
    let text = match any.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        Tag::BmpString if data.len() % 2 == 0 => {
            let units = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect::<Option<String>>(),
        // T.61 proper is rare; in practice these hold UTF-8 or Latin-1.
        Tag::TeletexString => Some(
            std::str::from_utf8(data)
                .map_or_else(|_| data.iter().map(|&b| char::from(b)).collect(), str::to_owned),
        ),
        _ => None,
    };
    text.map_or_else(|| Value::Hex(to_hex(&any.to_der_vec().unwrap_or_default())), Value::Str)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Appends `value` escaped per RFC 4514 §2.4: `\` before `" + , ; < > \`, before a leading `#` or
/// space and before a trailing space; control characters (including NUL) as `\XX` per UTF-8 byte.
fn escape_into(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// Undoes RFC 4514 escaping: `\` followed by a special character, a space, `#` or `=`, or by two
/// hex digits (one UTF-8 byte).
fn unescape(value: &str) -> Result<Cow<'_, str>, String> {
    if !value.contains('\\') {
        return Ok(Cow::Borrowed(value));
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match rest {
            [c @ (b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b' ' | b'#' | b'='), tail @ ..] => {
                bytes.push(*c);
                rest = tail;
            }
            [h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = |d: u8| char::from(d).to_digit(16).unwrap_or_default() as u8;
                bytes.push((hex(*h) << 4) | hex(*l));
                rest = tail;
            }
            [] => return Err("a '\\' at the end of a value escapes nothing".to_owned()),
            _ => {
                let next = String::from_utf8_lossy(rest).chars().next().unwrap_or_default();
                return Err(format!("invalid escape \"\\{next}\""));
            }
        }
    }
    String::from_utf8(bytes).map(Cow::Owned).map_err(|_| "escaped bytes are not UTF-8".to_owned())
}

/// Splits `s` at every `sep` that is not escaped with `\`.
fn split_unescaped(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `VALUE` of an attribute: `#hex` (lower-cased) or an unescaped string.
fn parse_value(raw: &str) -> Result<Value<Cow<'_, str>>, String> {
    match raw.strip_prefix('#') {
        Some(hex) => Ok(Value::Hex(Cow::Owned(hex.to_ascii_lowercase()))),
        None => unescape(raw).map(Value::Str),
    }
}

/// Parses a pattern's `TYPE=VALUE,TYPE=VALUE+TYPE=VALUE…` into RDNs of canonical types and
/// unescaped values. Spaces around a type name are ignored.
fn parse_dn(s: &str) -> Result<Vec<Vec<AttrPattern>>, String> {
    split_unescaped(s, b',')
        .into_iter()
        .map(|rdn| {
            if rdn.trim().is_empty() {
                return Err("empty RDN (two commas in a row, or a comma at an end)".to_owned());
            }
            split_unescaped(rdn, b'+')
                .into_iter()
                .map(|atv| {
                    let Some((ty, value)) = atv.split_once('=') else {
                        return Err(format!("{atv:?} has no '='"));
                    };
                    let ty = canonical_type(ty.trim())?;
                    let value = match parse_value(value)? {
                        Value::Str(v) => Value::Str(v.into_owned()),
                        Value::Hex(v) => Value::Hex(v.into_owned()),
                    };
                    Ok(AttrPattern { ty, value })
                })
                .collect()
        })
        .collect()
}

/// A subject split into RDNs of `(type, value)`, borrowing from the subject string.
type SplitSubject<'a> = Vec<Vec<(&'a str, Value<Cow<'a, str>>)>>;

/// Splits a subject string this module rendered into RDNs of `(type, value)`. `None` only for a
/// string it could not have rendered.
fn split_subject(subject: &str) -> Option<SplitSubject<'_>> {
    if subject.is_empty() {
        return Some(Vec::new());
    }
    split_unescaped(subject, b',')
        .into_iter()
        .map(|rdn| {
            split_unescaped(rdn, b'+')
                .into_iter()
                .map(|atv| {
                    let (ty, value) = atv.split_once('=')?;
                    Some((ty, parse_value(value).ok()?))
                })
                .collect()
        })
        .collect()
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (including none)
/// and every other character matches itself; anchored at both ends. Linear in practice: the
/// classic greedy match that backtracks only to the last `*`.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more byte and retry after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;
    use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};
    use x509_parser::prelude::FromDer as _;

    use super::*;

    const EMAIL_ADDRESS: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];
    const DOMAIN_COMPONENT: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 25];

    fn key() -> &'static KeyPair {
        static KEY: std::sync::OnceLock<KeyPair> = std::sync::OnceLock::new();
        KEY.get_or_init(|| KeyPair::generate().unwrap())
    }

    /// A self-signed certificate with the subject attributes in `dn` (in certificate order, least
    /// specific first) and the SANs in `sans`.
    fn cert(dn: Vec<(DnType, DnValue)>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty, value);
        }
        params.subject_alt_names = sans;
        params.self_signed(key()).unwrap().der().to_vec()
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(Ia5String::try_from(s).unwrap())
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(Ia5String::try_from(s).unwrap())
    }

    fn email(s: &str) -> SanType {
        SanType::Rfc822Name(Ia5String::try_from(s).unwrap())
    }

    fn ip(s: &str) -> SanType {
        SanType::IpAddress(s.parse::<IpAddr>().unwrap())
    }

    fn utf8(s: &str) -> DnValue {
        DnValue::Utf8String(s.to_owned())
    }

    fn laptop() -> ClientIdentity {
        ClientIdentity::from_der(&cert(
            vec![
                (DnType::CountryName, DnValue::PrintableString(PrintableString::try_from("DE").unwrap())),
                (DnType::OrganizationName, utf8("Acme")),
                (DnType::CommonName, utf8("laptop-7")),
            ],
            vec![
                dns("laptop-7.laptops.acme.example"),
                uri("spiffe://acme/laptop-7"),
                email("it@acme.example"),
                ip("10.0.0.7"),
                ip("2001:db8::7"),
            ],
        ))
        .unwrap()
    }

    fn identity(subject: &str) -> ClientIdentity {
        ClientIdentity { subject: subject.to_owned(), common_name: None, sans: vec![] }
    }

    #[test]
    fn subject_is_rfc4514_most_specific_first_with_cn_and_sans() {
        let id = laptop();
        assert_eq!(id.subject, "CN=laptop-7,O=Acme,C=DE");
        assert_eq!(id.common_name.as_deref(), Some("laptop-7"));
        assert_eq!(
            id.sans,
            [
                "DNS:laptop-7.laptops.acme.example",
                "URI:spiffe://acme/laptop-7",
                "email:it@acme.example",
                "IP:10.0.0.7",
                "IP:2001:db8::7",
            ]
        );
        assert_eq!(id.consumer(), "laptop-7");
    }

    #[test]
    fn values_are_escaped_per_rfc4514_and_the_common_name_is_not() {
        let cases = [
            // (CN value, as it appears in the subject)
            ("a,b+c\"d\\e<f>g;h=i", r#"a\,b\+c\"d\\e\<f\>g\;h=i"#),
            ("#tag", r"\#tag"),
            ("mid#dle", "mid#dle"),
            (" padded ", r"\ padded\ "),
            (" ", r"\ "),
            ("in side", "in side"),
            ("line\nbreak\0nul\u{7f}", r"line\0Abreak\00nul\7F"),
            ("Müller ✓ 𝄞", "Müller ✓ 𝄞"),
            ("star*", "star*"),
        ];
        for (cn, escaped) in cases {
            let id = ClientIdentity::from_der(&cert(vec![(DnType::CommonName, utf8(cn))], vec![])).unwrap();
            assert_eq!(id.subject, format!("CN={escaped}"), "{cn:?}");
            assert_eq!(id.common_name.as_deref(), Some(cn));
            assert_eq!(id.consumer(), cn);
            // The subject, used as a pattern, matches itself; so does its CN alone.
            assert!(SubjectPattern::parse(&id.subject).unwrap().matches(&id), "{}", id.subject);
        }
    }

    #[test]
    fn string_types_are_decoded_and_attribute_types_named() {
        let id = ClientIdentity::from_der(&cert(
            vec![
                (
                    DnType::CustomDnType(DOMAIN_COMPONENT.to_vec()),
                    DnValue::Ia5String("example".try_into().unwrap()),
                ),
                (
                    DnType::StateOrProvinceName,
                    DnValue::BmpString(BmpString::try_from("Bayern Grüße").unwrap()),
                ),
                (
                    DnType::LocalityName,
                    DnValue::UniversalString(UniversalString::try_from("𝄞 Köln").unwrap()),
                ),
                (
                    DnType::OrganizationalUnitName,
                    DnValue::TeletexString(TeletexString::try_from("Ops").unwrap()),
                ),
                (DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]), utf8("custom")),
                (
                    DnType::CustomDnType(EMAIL_ADDRESS.to_vec()),
                    DnValue::Ia5String("it@acme.example".try_into().unwrap()),
                ),
            ],
            vec![],
        ))
        .unwrap();
        assert_eq!(
            id.subject,
            "emailAddress=it@acme.example,1.3.6.1.4.1.99999.1=custom,OU=Ops,L=𝄞 Köln,ST=Bayern Grüße,DC=example"
        );
        assert_eq!(id.common_name, None);
        // No CN: the consumer is the whole subject.
        assert_eq!(id.consumer(), id.subject);
        for pattern in [
            "emailaddress=*@acme.example",
            "1.2.840.113549.1.9.1=it@*",
            "1.3.6.1.4.1.99999.1=cust*",
            "dc=example",
            "L=𝄞 *",
        ] {
            assert!(SubjectPattern::parse(pattern).unwrap().matches(&id), "{pattern}");
        }
    }

    /// Hand-built names for what rcgen cannot write: multi-valued RDNs, repeated types, and values
    /// that are not strings.
    mod handmade {
        use super::*;

        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            assert!(content.len() < 128);
            [&[tag, content.len() as u8][..], content].concat()
        }

        const CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
        const OU: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0b];
        const O: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
        const UID: &[u8] = &[0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];
        const OTHER: &[u8] = &[0x06, 0x03, 0x2a, 0x03, 0x04]; // 1.2.3.4

        fn atv(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
            tlv(0x30, &[oid, &value].concat())
        }

        fn s(v: &str) -> Vec<u8> {
            tlv(0x0c, v.as_bytes())
        }

        /// Renders a name given as RDNs in certificate order.
        fn render(rdns: Vec<Vec<Vec<u8>>>) -> (String, Option<String>) {
            let rdns: Vec<u8> = rdns.into_iter().flat_map(|atvs| tlv(0x31, &atvs.concat())).collect();
            let der = tlv(0x30, &rdns);
            let (rest, name) = X509Name::from_der(&der).unwrap();
            assert!(rest.is_empty());
            render_name(&name)
        }

        #[test]
        fn multi_valued_rdns_repeated_types_and_non_strings() {
            let (subject, cn) = render(vec![
                vec![atv(O, s("Acme"))],
                vec![atv(OU, s("Ops"))],
                vec![atv(OU, s("Berlin"))],
                vec![atv(CN, s("outer"))],
                vec![atv(CN, s("laptop-7")), atv(UID, s("7"))],
                vec![atv(OTHER, tlv(0x02, &[0x7f]))],
            ]);
            assert_eq!(subject, "1.2.3.4=#02017f,CN=laptop-7+UID=7,CN=outer,OU=Berlin,OU=Ops,O=Acme");
            assert_eq!(cn.as_deref(), Some("laptop-7"), "the most specific CN");

            let id = identity(&subject);
            let cases = [
                ("OU=Ops", true),
                ("OU=Berlin", true),
                ("OU=Ber", false),
                ("UID=7", true),
                ("CN=outer", true),
                ("1.2.3.4=#02017f", true),
                ("1.2.3.4=#02*", true),
                ("1.2.3.4=#02017F", true), // hex digits in either case
                ("1.2.3.4=02017f", false), // a string pattern never matches a non-string value
                ("1.2.3.4=*", false),
                ("1.2.3.4=#*,CN=laptop-*+UID=*,CN=outer,OU=Berlin,OU=Ops,O=Acme", true),
                ("1.2.3.4=#02017f,CN=laptop-7,CN=outer,OU=Berlin,OU=Ops,O=Acme", false),
                ("1.2.3.4=#02017f,UID=7+CN=laptop-7,CN=outer,OU=Berlin,OU=Ops,O=Acme", false),
                ("CN=laptop-7+UID=7", false),
            ];
            for (pattern, expected) in cases {
                assert_eq!(SubjectPattern::parse(pattern).unwrap().matches(&id), expected, "{pattern}");
            }
        }

        #[test]
        fn an_invalid_utf8_string_is_shown_as_hex() {
            let (subject, cn) = render(vec![vec![atv(CN, tlv(0x0c, &[0x66, 0xff]))]]);
            assert_eq!(subject, "CN=#0c0266ff");
            assert_eq!(cn, None);
        }
    }

    #[test]
    fn consumer_falls_back_to_subject_then_first_san() {
        let id = ClientIdentity::from_der(&cert(
            vec![(DnType::OrganizationName, utf8("Acme")), (DnType::CommonName, utf8(""))],
            vec![],
        ))
        .unwrap();
        assert_eq!(id.common_name.as_deref(), Some(""));
        assert_eq!(id.consumer(), "CN=,O=Acme", "an empty CN is no name");

        let id =
            ClientIdentity::from_der(&cert(vec![], vec![uri("spiffe://acme/laptop-7"), dns("x.example")]))
                .unwrap();
        assert_eq!(id.subject, "");
        assert_eq!(id.consumer(), "URI:spiffe://acme/laptop-7");
    }

    #[test]
    fn from_der_errors() {
        let err = ClientIdentity::from_der(b"not a certificate").unwrap_err();
        assert!(err.starts_with("not a DER-encoded X.509 certificate: "), "{err}");
        let err = ClientIdentity::from_der(&[]).unwrap_err();
        assert!(err.starts_with("not a DER-encoded X.509 certificate: "), "{err}");
        let mut der = cert(vec![(DnType::CommonName, utf8("x"))], vec![]);
        der.extend_from_slice(&[0, 0]);
        assert_eq!(ClientIdentity::from_der(&der).unwrap_err(), "2 unexpected bytes after the certificate");
        let err = ClientIdentity::from_der(&cert(vec![], vec![])).unwrap_err();
        assert!(err.starts_with("the certificate names no one"), "{err}");
    }

    #[test]
    fn patterns_match_attributes_subjects_and_sans() {
        let id = laptop();
        let cases = [
            // Attribute patterns: any attribute of that type, anchored at both ends.
            ("CN=laptop-*", true),
            ("cn=laptop-*", true),
            ("Cn=laptop-7", true),
            ("2.5.4.3=laptop-7", true),
            ("CN=laptop-7", true),
            ("CN=*", true),
            ("CN=*7", true),
            ("CN=l*p*7", true),
            ("CN=laptop-", false),
            ("CN=aptop-7", false),
            ("CN=laptop-77", false),
            ("CN=Laptop-7", false),
            ("CN=laptop-7 ", false),
            ("O=Acme", true),
            ("O=*", true),
            ("C=DE", true),
            ("C=de", false),
            ("OU=*", false),
            ("O=laptop-7", false),
            // Subject patterns: every RDN, in order.
            ("CN=laptop-7,O=Acme,C=DE", true),
            ("cn=laptop-*, o=Acme, c=DE", true),
            ("CN=laptop-*,O=*,C=*", true),
            ("CN=laptop-7,O=Acme", false),
            ("O=Acme,C=DE", false),
            ("C=DE,O=Acme,CN=laptop-7", false),
            ("CN=laptop-7,O=Acme,C=DE,DC=x", false),
            ("CN=*,C=DE", false),
            ("CN=laptop-7+O=Acme,C=DE", false),
            // SAN patterns: any SAN of that kind.
            ("DNS:*.laptops.acme.example", true),
            ("dns:laptop-7.laptops.acme.example", true),
            ("DNS:*.acme.example", true),
            ("DNS:laptops.acme.example", false),
            ("DNS:*.acme.example.evil", false),
            ("URI:spiffe://acme/*", true),
            ("URI:spiffe://acme/laptop-7", true),
            ("URI:spiffe://other/*", false),
            ("URI:spiffe://acme", false),
            ("email:*@acme.example", true),
            ("EMAIL:it@acme.example", true),
            ("email:*@evil.example", false),
            ("IP:10.0.*", true),
            ("IP:10.0.0.7", true),
            ("IP:10.0.0.70", false),
            ("IP:10.1.*", false),
            ("IP:2001:db8::*", true),
            ("IP:*", true),
            ("DNS:10.0.0.7", false),
            ("URI:laptop-7.laptops.acme.example", false),
        ];
        for (pattern, expected) in cases {
            let p = SubjectPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(p.matches(&id), expected, "{pattern}");
            assert_eq!(p.as_str(), pattern);
        }
    }

    #[test]
    fn a_star_never_runs_across_values() {
        let cases = [
            // (subject, pattern, expected)
            ("CN=desktop-laptop-1", "CN=laptop-*", false),
            ("CN=laptop-1-desktop", "CN=laptop-*", true),
            ("CN=desktop,OU=laptop-1", "CN=laptop-*", false),
            ("CN=a,OU=Evil,O=Acme", "CN=a*,O=Acme", false),
            ("CN=a,OU=Evil,O=Acme", "CN=a*,O=*", false),
            ("CN=a\\,OU=Evil,O=Acme", "CN=a*,O=Acme", true), // one CN holding a comma
            ("CN=a+OU=Evil,O=Acme", "CN=a*,O=Acme", false),
            ("CN=x,O=Acme\\, Inc.", "O=Acme\\, Inc.", true),
            ("CN=x,O=Acme\\, Inc.", "O=Acme\\2C Inc.", true),
            ("CN=x,O=Acme\\, Inc.", "O=Acme\\2c*", true),
            ("CN=x,O=Acme\\, Inc.", "O=Acme", false),
            ("CN=x,O=Acme\\, Inc.", "CN=x,O=Acme\\, Inc.", true),
            ("CN=x,O=Acme\\, Inc.", "CN=x,O=Acme", false),
            ("CN=\\#hash", "CN=#hash", false), // `#` starts a hex value in RFC 4514
            ("CN=\\#hash", "CN=\\#*", true),
            ("", "CN=*", false),
        ];
        for (subject, pattern, expected) in cases {
            let p = SubjectPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(&identity(subject)), expected, "{pattern} vs {subject}");
        }
    }

    #[test]
    fn pattern_errors_are_precise() {
        let cases = [
            ("", "empty subject pattern"),
            ("  ", "empty subject pattern"),
            ("laptop-*", "\"laptop-*\" has no '=': expected an attribute pattern like CN=laptop-*"),
            (
                "spiffe://acme/x",
                "unknown SAN type \"spiffe\" in \"spiffe://acme/x\": expected DNS:, URI:, email: or IP:",
            ),
            ("dir:CN=x", "unknown SAN type \"dir\""),
            ("DNS:", "nothing after DNS: in \"DNS:\"; use DNS:* to match any"),
            ("ip:", "nothing after IP:"),
            ("XX=foo", "unknown attribute type \"XX\": expected one of CN, SN, serialNumber, C, L, ST"),
            ("=foo", "unknown attribute type \"\""),
            ("1.=x", "unknown attribute type \"1.\""),
            ("CN=a,,O=b", "empty RDN (two commas in a row, or a comma at an end) in \"CN=a,,O=b\""),
            ("CN=a,", "empty RDN"),
            ("CN=a,Ob", "\"Ob\" has no '=' in \"CN=a,Ob\""),
            ("CN=a+", "\"\" has no '='"),
            ("CN=a\\q", "invalid escape \"\\q\" in"),
            ("CN=a\\", "a '\\' at the end of a value escapes nothing"),
            ("CN=a\\f", "invalid escape \"\\f\""),
            ("CN=\\ff", "escaped bytes are not UTF-8"),
        ];
        for (pattern, expected) in cases {
            let err = SubjectPattern::parse(pattern).unwrap_err();
            assert!(err.contains(expected), "{pattern:?}: {err:?} lacks {expected:?}");
        }
    }

    /// The obvious exponential-time matcher, as the model for [`glob`].
    fn naive_glob(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| naive_glob(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && naive_glob(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_never_panics(pattern in "\\PC*", text in "\\PC*") {
            let _ = glob(&pattern, &text);
        }

        #[test]
        fn glob_without_a_star_is_string_equality(pattern in "[^*]{0,12}", text in "[^*]{0,12}") {
            prop_assert_eq!(glob(&pattern, &text), pattern == text);
            prop_assert!(glob(&text, &text));
        }

        #[test]
        fn glob_with_one_star_is_prefix_and_suffix(a in "[ab✓]{0,4}", b in "[ab✓]{0,4}", text in "[ab✓]{0,10}") {
            let expected = text.len() >= a.len() + b.len() && text.starts_with(&a) && text.ends_with(&b);
            prop_assert_eq!(glob(&format!("{a}*{b}"), &text), expected);
            prop_assert!(glob("*", &text));
        }

        #[test]
        fn glob_agrees_with_the_naive_matcher(pattern in "[ab*]{0,8}", text in "[ab]{0,10}") {
            prop_assert_eq!(glob(&pattern, &text), naive_glob(pattern.as_bytes(), text.as_bytes()));
        }

        #[test]
        fn patterns_never_panic(pattern in "\\PC{0,24}", subject in "[A-Z]{1,2}=[a-z,+\\\\#=* ]{0,6}(,[A-Z]{1,2}=[a-z,+\\\\#=* ]{0,6}){0,2}") {
            if let Ok(p) = SubjectPattern::parse(&pattern) {
                let _ = p.matches(&identity(&subject));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any CN survives escaping: the subject, and `CN=` with the escaped value, match the
        /// certificate they came from, and the CN reads back unescaped.
        #[test]
        fn any_common_name_round_trips(cn in "[ -~äö✓\n\t]{1,16}", o in "[ -~]{1,8}") {
            let id = ClientIdentity::from_der(&cert(
                vec![(DnType::OrganizationName, utf8(&o)), (DnType::CommonName, utf8(&cn))],
                vec![],
            )).unwrap();
            prop_assert_eq!(id.common_name.as_deref(), Some(cn.as_str()));
            prop_assert!(SubjectPattern::parse(&id.subject).unwrap().matches(&id), "{}", id.subject);
            let mut escaped = String::new();
            escape_into(&cn, &mut escaped);
            let cn_pattern = format!("CN={escaped}");
            prop_assert!(SubjectPattern::parse(&cn_pattern).unwrap().matches(&id), "{}", cn_pattern);
            prop_assert_eq!(unescape(&escaped).unwrap(), cn.as_str());
        }
    }
}
