//! Header rules of a proxy (RFC 9110 §7.6): hop-by-hop fields removed in both directions,
//! `X-Forwarded-*` and `Via` added, `X-Request-Id` kept or generated, and protocol upgrades
//! (RFC 9110 §7.8) let through only for the protocols a route allows.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const VIA: HeaderValue = HeaderValue::from_static("1.1 bridgehead");

/// Removes hop-by-hop fields: `Connection` and every field it names, plus the fixed list and
/// `HTTP2-Settings` (meaningful only with an h2c upgrade, which is never forwarded).
/// `upgrade` is the `Upgrade` value to forward for a protocol switch (with `Connection:
/// upgrade`); `None` removes both.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // The tokens that name no field, or one removed below anyway, are skipped: most messages
    // carry only those (`keep-alive`, `close`, `upgrade`), and then nothing is allocated.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            let removed_anyway =
                ["", "keep-alive", "close", "upgrade"].iter().any(|t| token.eq_ignore_ascii_case(t));
            if !removed_anyway && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    match upgrade {
        Some(protocols) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocols.clone());
        }
        None => {
            headers.remove(header::CONNECTION);
            headers.remove(header::UPGRADE);
        }
    }
    headers.remove(&HTTP2_SETTINGS);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TRAILER);
    headers.remove(header::PROXY_AUTHORIZATION);
    // `TE: trailers` may pass (it is how gRPC clients announce trailer support).
    let te_trailers = headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// The protocols of an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`) that
/// `allowed` names, as the `Upgrade` value to forward; `None` when the request asks for no
/// upgrade or only for others (`h2c` among them): it is then served as plain HTTP/1.1.
pub fn allowed_upgrade(version: Version, headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || !headers.contains_key(header::UPGRADE) || !has_upgrade_token(headers) {
        return None;
    }
    let offered = headers.get_all(header::UPGRADE).iter().filter_map(|v| v.to_str().ok());
    let kept: Vec<&str> = offered
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| allowed.iter().any(|a| protocol_allowed(a, p)))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Whether a 101 response switches to one of the protocols the request offered (`offered` is
/// what [`allowed_upgrade`] forwarded). RFC 9110 §15.2.2: the 101 names the new protocol in
/// `Upgrade`.
pub fn upgrade_accepted(offered: &HeaderValue, response: &HeaderMap) -> bool {
    let chosen: Vec<&str> =
        response.get_all(header::UPGRADE).iter().filter_map(|v| v.to_str().ok()).collect();
    let chosen = chosen.join(",");
    let offered = offered.to_str().unwrap_or_default();
    // Each protocol switched to was offered: same name, and the same version where both name one.
    let was_offered = |c: &str| {
        offered.split(',').map(str::trim).any(|o| {
            protocol_name(o).eq_ignore_ascii_case(protocol_name(c))
                && match (o.split_once('/'), c.split_once('/')) {
                    (Some((_, ov)), Some((_, cv))) => ov.trim().eq_ignore_ascii_case(cv.trim()),
                    _ => true,
                }
        })
    };
    !chosen.trim().is_empty() && chosen.split(',').map(str::trim).filter(|p| !p.is_empty()).all(was_offered)
}

/// Whether an offered protocol (`name` or `name/version`) is what an allow-list entry names: an
/// entry without a version allows every version, one with a version only that one.
fn protocol_allowed(entry: &str, offered: &str) -> bool {
    if entry.contains('/') {
        entry.eq_ignore_ascii_case(offered)
    } else {
        entry.eq_ignore_ascii_case(protocol_name(offered))
    }
}

/// `websocket` of `websocket/13`.
fn protocol_name(p: &str) -> &str {
    p.split('/').next().unwrap_or_default().trim()
}

fn has_upgrade_token(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Adds `X-Forwarded-For` (appended), `-Proto` and `-Host` (replaced), and `Via`. Removes the
/// client's claims about where the request went, which frameworks trust: `Forwarded` (`host=`,
/// `proto=`), `X-Forwarded-Prefix` and `-Port`, and `X-Original-URL` / `X-Rewrite-URL` (a path
/// some frameworks route on instead of the request's).
///
/// `client` is the client's IP address as a header value ([`crate::conn::ConnInfo::client_ip`]);
/// `host` the authority forwarded as `Host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, tls: bool, host: Option<HeaderValue>) {
    for name in [&FORWARDED, &X_ORIGINAL_URL, &X_REWRITE_URL, &X_FORWARDED_PREFIX, &X_FORWARDED_PORT] {
        headers.remove(name);
    }
    let xff = match headers.get(&X_FORWARDED_FOR).filter(|v| !v.is_empty() && v.to_str().is_ok()) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
    match host {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.append(header::VIA, VIA);
}

/// For a request the gateway answers itself and sends on later (a webhook): every claim the
/// client made about where the request came from or went is removed (`Forwarded`, every
/// `X-Forwarded-*`, `X-Original-Host`, `X-Original-URL`, `X-Rewrite-URL`), and
/// `X-Forwarded-For` and `-Proto` say what the gateway saw. Unlike [`add_forwarded`], the
/// client's `X-Forwarded-For` is replaced, not appended to: nothing vouches for it.
pub fn replace_forwarded(headers: &mut HeaderMap, client: &HeaderValue, tls: bool) {
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-forwarded-") || n.as_str() == "x-original-host")
        .cloned()
        .collect();
    for name in claims.iter().chain([&FORWARDED, &X_ORIGINAL_URL, &X_REWRITE_URL]) {
        headers.remove(name);
    }
    headers.insert(X_FORWARDED_FOR.clone(), client.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
}

/// Adds `Via` to a response.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, VIA);
}

/// The client's request id if it is sane (1 to 128 visible characters from a safe set),
/// otherwise a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@".contains(c))
        {
            return v.clone();
        }
    }
    new_request_id()
}

/// A new request id: 16 random hex digits fixed per process, then a 16-digit counter.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| fastrand::u64(..));
    let n = COUNTER.fetch_add(1, Relaxed);
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *b = b"0123456789abcdef"[((word >> (4 * (15 - i % 16))) & 0xf) as usize];
    }
    // One allocation, whose clones (the response header, the access log) share it.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)).expect("hex is a valid header value")
}

/// Approximate size of a request head's fields as sent on the wire (`name: value\r\n`).
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_forwarded_drops_every_client_claim_and_says_what_the_gateway_saw() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-host", "evil.example"),
            ("x-original-host", "evil.example"),
            ("x-original-url", "/admin"),
            ("forwarded", "for=10.9.9.9"),
            ("x-github-event", "push"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        replace_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), true);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-forwarded-for", "x-forwarded-proto", "x-github-event"]);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-end-to-end", "stays"),
        ]);
        remove_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "stays");
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h, None);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrades_pass_only_for_allowed_protocols() {
        let ws = vec!["websocket".to_owned()];
        let v11 = Version::HTTP_11;
        let h = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket"), ("keep-alive", "x")]);
        let up = allowed_upgrade(v11, &h, &ws).expect("websocket is allowed");
        assert_eq!(up, "WebSocket");
        let mut forwarded = h.clone();
        remove_hop_by_hop(&mut forwarded, Some(&up));
        assert_eq!(forwarded["connection"], "upgrade");
        assert_eq!(forwarded["upgrade"], "WebSocket");
        assert!(!forwarded.contains_key("keep-alive"));
        // Not an upgrade request, or not one the route allows, or not HTTP/1.1.
        type Case<'a> = (&'a str, Version, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("no Connection: upgrade", v11, &[("upgrade", "websocket")]),
            ("no Upgrade", v11, &[("connection", "upgrade")]),
            (
                "h2c",
                v11,
                &[
                    ("connection", "Upgrade, HTTP2-Settings"),
                    ("upgrade", "h2c"),
                    ("http2-settings", "AAMAAABkAAQAAP__"),
                ],
            ),
            ("another protocol", v11, &[("connection", "upgrade"), ("upgrade", "foo/2")]),
            ("HTTP/1.0", Version::HTTP_10, &[("connection", "upgrade"), ("upgrade", "websocket")]),
            ("HTTP/2", Version::HTTP_2, &[("connection", "upgrade"), ("upgrade", "websocket")]),
        ];
        for (name, version, pairs) in cases {
            let mut h = map(pairs);
            assert_eq!(allowed_upgrade(*version, &h, &ws), None, "{name}");
            remove_hop_by_hop(&mut h, None);
            for gone in ["connection", "upgrade", "http2-settings"] {
                assert!(!h.contains_key(gone), "{name}: {gone} left in {h:?}");
            }
        }
        // Of several offered, only the allowed ones are forwarded.
        let h = map(&[("connection", "upgrade"), ("upgrade", "h2c, websocket/13, foo")]);
        assert_eq!(allowed_upgrade(v11, &h, &ws).unwrap(), "websocket/13");
        let more = vec!["websocket".to_owned(), "foo".to_owned()];
        assert_eq!(allowed_upgrade(v11, &h, &more).unwrap(), "websocket/13, foo");
        // An entry with a version allows that version only.
        let versioned = vec!["foo/2".to_owned()];
        for (offer, want) in
            [("foo/2", Some("foo/2")), ("FOO/2", Some("FOO/2")), ("foo/3", None), ("foo", None)]
        {
            let h = map(&[("connection", "upgrade"), ("upgrade", offer)]);
            assert_eq!(
                allowed_upgrade(v11, &h, &versioned).as_ref().map(|v| v.to_str().unwrap()),
                want,
                "{offer}"
            );
        }
    }

    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket");
        assert!(upgrade_accepted(&offered, &map(&[("upgrade", "WebSocket")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "h2c")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "websocket, h2c")])));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "")])));
        assert!(!upgrade_accepted(&offered, &HeaderMap::new()));
        assert!(!upgrade_accepted(&offered, &map(&[("upgrade", "websocket"), ("upgrade", "h2c")])));
        // Versions: the one offered, or any where one side names none.
        let foo2 = HeaderValue::from_static("foo/2");
        assert!(upgrade_accepted(&foo2, &map(&[("upgrade", "FOO/2")])));
        assert!(upgrade_accepted(&foo2, &map(&[("upgrade", "foo")])));
        assert!(!upgrade_accepted(&foo2, &map(&[("upgrade", "foo/3")])));
        assert!(upgrade_accepted(&HeaderValue::from_static("foo"), &map(&[("upgrade", "foo/3")])));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "spoofed"),
            ("forwarded", "for=1.2.3.4;host=admin.example.com;proto=https"),
            ("x-original-url", "/secure/x"),
            ("x-rewrite-url", "/secure/x"),
            ("x-forwarded-prefix", "/secure"),
            ("x-forwarded-port", "8443"),
        ]);
        let client = HeaderValue::from_static("127.0.0.1");
        add_forwarded(&mut h, &client, true, Some(HeaderValue::from_static("api.example.com")));
        for gone in ["forwarded", "x-original-url", "x-rewrite-url", "x-forwarded-prefix", "x-forwarded-port"]
        {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.1 bridgehead");
    }

    #[test]
    fn request_ids() {
        let sane = map(&[("x-request-id", "abc-123_x.y")]);
        assert_eq!(request_id(&sane), "abc-123_x.y");
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&h);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
        let (a, b) = (new_request_id(), new_request_id());
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        // One random prefix per process, then a counter.
        assert_eq!(a[..16], b[..16]);
        let n = |s: &str| u64::from_str_radix(&s[16..], 16).unwrap();
        assert!(n(b) > n(a));
    }
}
