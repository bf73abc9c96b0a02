//! Canonical request paths and hosts: one spelling per resource, computed once before routing,
//! so that the gateway's routing and authentication decisions and the upstream's idea of which
//! resource is meant cannot disagree.
//!
//! A proxy that matches the raw path while its upstream decodes and normalizes it can be walked
//! around: `//secure`, `/%73ecure`, `/pub/../secure` or `/secure%2fx` miss a protected
//! `/secure` route, take a public one, and reach the same resource upstream. Here every request
//! path is brought to one form first, and that form is what is routed, authenticated, logged
//! and forwarded:
//!
//! 1. Percent-escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2: `%73` is `s`,
//!    `%2E` is `.`); the hex digits of the other escapes are upper-cased; bytes that may not
//!    appear raw in a path (non-ASCII, `"`, `{`, `}`, `|`, `^`, `[`, `]`) are percent-encoded.
//! 2. Escaped slashes and backslashes (`%2F`, `%5C`) follow [`EscapedSlashes`]: refused, kept
//!    encoded (never a separator), or decoded to `/`.
//! 3. Repeated slashes are merged (unless `merge_slashes` is off).
//! 4. Dot segments are removed (RFC 3986 §5.2.4), including decoded ones; a path that climbs
//!    above the root is refused rather than clamped, since no honest client sends one.
//!
//! A path with `;` segment parameters is also routed without them ([`without_parameters`]),
//! since servlet containers map `/secure;x/y` as `/secure/y`; the gateway's route phase reads it
//! both ways, and the upstream gets the canonical path with them.
//!
//! Refused outright: invalid escapes (`%zz`, a lone `%`), control characters raw or encoded
//! (`%00`, `%0A`, …), a raw backslash, and dot segments with parameters (`..;x`, which Java
//! servers read as `..`). The query string is not touched. Matching stays case-sensitive, as
//! RFC 3986 §6.2.2.1 leaves paths: folding case would merge resources a case-sensitive upstream
//! keeps apart.
//!
//! Already-canonical paths — nearly every request, escapes in canonical form included — are
//! recognised by one scan over a byte table and returned borrowed, without allocating. Written by hand: the `url` crate implements the
//! WHATWG URL parser, which clamps `..` at the root, decodes no unreserved escapes and treats
//! `\` as `/` only for special schemes; none of that is the policy wanted here.

use std::borrow::Cow;
use std::fmt;

use crate::model::{EscapedSlashes, PathNormalization};

/// Why a request path was refused. Byte offsets count from the start of the path as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (and is not `*`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidEscape { at: usize, found: String },
    /// A control character, raw or percent-encoded (`%00`, `%0A`, `%7F`).
    ControlCharacter { at: usize, byte: u8, escaped: bool },
    /// A raw `\`.
    Backslash { at: usize },
    /// `%2F` or `%5C` while `escaped_slashes` is `reject`.
    EscapedSlash { at: usize, escape: String },
    /// More `..` segments than segments before them.
    AboveRoot,
    /// A segment such as `..;jsessionid=x`, which some servers read as `..`.
    DotSegmentParameters { segment: String },
    /// A segment of parameters only, such as `;x`.
    ParametersOnly { segment: String },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => f.write_str("the request path must start with `/`"),
            Self::InvalidEscape { at, found } => write!(
                f,
                "the path has an invalid percent-escape `{found}` at byte {at} (`%` must be followed by two hex digits)"
            ),
            Self::ControlCharacter { at, byte, escaped: true } => {
                write!(f, "the path encodes a control character (`%{byte:02X}`) at byte {at}")
            }
            Self::ControlCharacter { at, byte, escaped: false } => {
                write!(f, "the path contains a control character (0x{byte:02x}) at byte {at}")
            }
            Self::Backslash { at } => write!(
                f,
                "the path contains a backslash at byte {at}; servers disagree on whether it separates segments, so it is refused"
            ),
            Self::EscapedSlash { at, escape } => write!(
                f,
                "the path contains an escaped slash `{escape}` at byte {at}, which is refused (server.path_normalization.escaped_slashes: reject)"
            ),
            Self::AboveRoot => f.write_str("the path climbs above the root with `..` segments"),
            Self::DotSegmentParameters { segment } => write!(
                f,
                "the path segment `{segment}` is a dot segment with parameters, which some servers read as `{}`",
                if segment.starts_with("..") { ".." } else { "." }
            ),
            Self::ParametersOnly { segment } => write!(
                f,
                "the path segment `{segment}` has parameters but no name; servers disagree on whether it is a segment"
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// What a byte of a path is, for the fast check and the rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed raw and never rewritten: unreserved, sub-delims, `:` and `@` (RFC 3986 pchar).
    Plain,
    Slash,
    Dot,
    Percent,
    /// A raw backslash: refused.
    Backslash,
    /// A control character or space: refused.
    Control,
    /// Anything else that may arrive raw (non-ASCII, `"`, `{`, `}`, `|`, `^`, `[`, `]`, …):
    /// percent-encoded.
    Encode,
}

const fn class_table() -> [Class; 256] {
    let mut t = [Class::Encode; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => Class::Plain,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' => {
                Class::Plain
            }
            b'/' => Class::Slash,
            b'.' => Class::Dot,
            b'%' => Class::Percent,
            b'\\' => Class::Backslash,
            0x00..=0x20 | 0x7f => Class::Control,
            _ => Class::Encode,
        };
        i += 1;
    }
    t
}

static CLASS: [Class; 256] = class_table();

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of a request path (without its query). `*` (the asterisk-form of
/// `OPTIONS *`) is returned as is.
pub fn normalize_path<'a>(raw: &'a str, opts: &PathNormalization) -> Result<Cow<'a, str>, PathError> {
    if raw == "*" || is_canonical(raw.as_bytes(), opts) {
        return Ok(Cow::Borrowed(raw));
    }
    let escaped = decode(raw.as_bytes(), opts.escaped_slashes)?;
    let path = remove_dot_segments(&escaped, opts.merge_slashes)?;
    Ok(if path == raw { Cow::Borrowed(raw) } else { Cow::Owned(path) })
}

/// True when `p` needs no rewriting: it starts with `/`, has only plain bytes and escapes in
/// canonical form, no segment that is a dot segment, and (when merging) no `//`.
fn is_canonical(p: &[u8], opts: &PathNormalization) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    let merge_slashes = opts.merge_slashes;
    let mut prev = b'/';
    let mut i = 1;
    while i < p.len() {
        let b = p[i];
        match CLASS[b as usize] {
            Class::Plain => {}
            // An escape stays as is when its hex is upper case and it is not one to decode or
            // refuse: an unreserved character, a control character, or (unless kept) a slash.
            Class::Percent => {
                let (Some(&hi), Some(&lo)) = (p.get(i + 1), p.get(i + 2)) else { return false };
                if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
                    return false;
                }
                let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) else { return false };
                let v = hi << 4 | lo;
                let slash_kept = opts.escaped_slashes == EscapedSlashes::Keep;
                if is_unreserved(v) || v < 0x20 || v == 0x7f || (matches!(v, b'/' | b'\\') && !slash_kept) {
                    return false;
                }
                prev = b'%';
                i += 3;
                continue;
            }
            Class::Slash if prev == b'/' && merge_slashes => return false,
            Class::Slash => {}
            // A segment starting with a dot: `.`, `..`, `.;…` and `..;…` need the slow path
            // (`/.well-known` does not).
            Class::Dot if prev == b'/' => {
                let rest = &p[i..];
                let seg = &rest[..rest.iter().position(|&c| c == b'/').unwrap_or(rest.len())];
                if matches!(seg, b"." | b"..") || seg.starts_with(b".;") || seg.starts_with(b"..;") {
                    return false;
                }
            }
            Class::Dot => {}
            _ => return false,
        }
        prev = b;
        i += 1;
    }
    true
}

/// The path the router matches: `path` (canonical) with the parameters of each segment removed
/// (`/secure;jsessionid=1/x` is routed as `/secure/x`), as Java servlet containers map it; `None`
/// when the path has no `;`. The upstream still gets `path` itself. A segment that is only
/// parameters (`/users/;x/secrets`) is refused, since servers disagree on whether it is a
/// segment, unless it is the last one (`/app/;jsessionid=1`, Tomcat's URL rewriting), which is
/// routed as a trailing slash.
pub fn without_parameters(path: &str) -> Result<Option<String>, PathError> {
    if !path.contains(';') {
        return Ok(None);
    }
    let mut out = String::with_capacity(path.len());
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let name = seg.split(';').next().unwrap_or_default();
        if name.is_empty() && !seg.is_empty() && segments.peek().is_some() {
            return Err(PathError::ParametersOnly { segment: seg.to_owned() });
        }
        out.push('/');
        out.push_str(name);
    }
    Ok(Some(out))
}

/// The number of segments `prefix` has (`/api/v1` has 2, `/` none, `/a//b` 3).
fn segment_count(prefix: &str) -> usize {
    if prefix == "/" { 0 } else { prefix.trim_end_matches('/').split('/').count() - 1 }
}

/// `path` without its first segments, as many as `prefix` has, parameters and all
/// (`/api;v=1/orders` without `/api` is `/orders`): `strip_prefix` for a path whose parameters
/// the router ignored. The caller checks that the path without parameters starts with `prefix`.
pub fn strip_segments(path: &str, prefix: &str) -> String {
    let n = segment_count(prefix);
    let rest = path[1..].splitn(n + 1, '/').nth(n).unwrap_or_default();
    format!("/{rest}")
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Step 1 and 2: escapes decoded or normalized, raw bytes encoded where needed. In the result,
/// `/` appears only as a real separator and `.` only where it means a dot.
fn decode(raw: &[u8], slashes: EscapedSlashes) -> Result<String, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(raw.len() + 8);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match CLASS[b as usize] {
            Class::Plain | Class::Slash | Class::Dot => out.push(b as char),
            Class::Backslash => return Err(PathError::Backslash { at: i }),
            Class::Control => return Err(PathError::ControlCharacter { at: i, byte: b, escaped: false }),
            Class::Encode => push_escape(&mut out, b),
            Class::Percent => {
                let value = match (
                    raw.get(i + 1).copied().and_then(hex_value),
                    raw.get(i + 2).copied().and_then(hex_value),
                ) {
                    (Some(hi), Some(lo)) => hi << 4 | lo,
                    _ => {
                        let end = (i + 3).min(raw.len());
                        let found = String::from_utf8_lossy(&raw[i..end]).into_owned();
                        return Err(PathError::InvalidEscape { at: i, found });
                    }
                };
                match value {
                    0x00..=0x1f | 0x7f => {
                        return Err(PathError::ControlCharacter { at: i, byte: value, escaped: true });
                    }
                    b'/' | b'\\' => match slashes {
                        EscapedSlashes::Reject => {
                            let escape = String::from_utf8_lossy(&raw[i..i + 3]).into_owned();
                            return Err(PathError::EscapedSlash { at: i, escape });
                        }
                        EscapedSlashes::Keep => push_escape(&mut out, value),
                        EscapedSlashes::Decode => out.push('/'),
                    },
                    v if is_unreserved(v) => out.push(v as char),
                    v => push_escape(&mut out, v),
                }
                i += 3;
                continue;
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Steps 3 and 4 on a decoded path (which starts with `/`).
fn remove_dot_segments(path: &str, merge_slashes: bool) -> Result<String, PathError> {
    let parts = path[1..].split('/');
    let count = path[1..].split('/').count();
    let mut segments: Vec<&str> = Vec::with_capacity(count);
    // Whether the output ends with `/`: after `.`, `..` or an empty last segment.
    let mut trailing = false;
    for (i, seg) in parts.enumerate() {
        let last = i + 1 == count;
        trailing = false;
        match seg {
            "." => trailing = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing = true;
            }
            "" if merge_slashes || last => trailing = true,
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(PathError::DotSegmentParameters { segment: s.to_owned() });
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// Why a request's host was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    Empty,
    TooLong,
    /// A label (the part between dots) is empty or longer than 63 bytes.
    BadLabel,
    /// A byte other than letters, digits, `-` and `_` in a name.
    BadCharacter(char),
    /// `[…]` that is not an IPv6 address.
    BadIpLiteral,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the host is empty"),
            Self::TooLong => f.write_str("the host is longer than 253 bytes"),
            Self::BadLabel => {
                f.write_str("the host has an empty label or one longer than 63 bytes (between dots)")
            }
            Self::BadCharacter(c) => {
                write!(f, "the host contains {c:?}; a host name has letters, digits, `-`, `_` and `.`")
            }
            Self::BadIpLiteral => f.write_str("the host's `[…]` is not an IPv6 address"),
        }
    }
}

impl std::error::Error for HostError {}

/// The canonical form of a host (without port): lower case, one trailing dot removed (the
/// absolute form `example.com.` names `example.com`), IPv6 literals in brackets checked.
pub fn canonical_host(host: &str) -> Result<Cow<'_, str>, HostError> {
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or(HostError::BadIpLiteral)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| HostError::BadIpLiteral)?;
        return Ok(lower(host));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > 253 {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::BadLabel);
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
            return Err(HostError::BadCharacter(c));
        }
    }
    Ok(lower(name))
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests;
