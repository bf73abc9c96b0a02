//! OAuth 2.0 and OpenID Connect: the authorization server's metadata at its well-known paths
//! (RFC 8414, OpenID Connect Discovery), with what a client needs (the token endpoint, the
//! grants, PKCE, the JWKS) and what is risky flagged; and a bearer token given with `--bearer`:
//! its claims decoded and `exp`, `nbf`, `iss` and `aud` checked, then the token tried on the URL.
//!
//! The token's signature is not verified: the probe says so. The token itself is never shown.

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use serde::Serialize;
use serde_json::Value;

use crate::client::{Dialer, Want};

/// An authorization server's metadata.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Metadata {
    /// Where it was found.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    pub grant_types: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pkce_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Risky things advertised (the implicit or password grant, PKCE `plain` only…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The well-known metadata documents, in order.
const WELL_KNOWN: &[&str] = &["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"];

/// The metadata at the endpoint's origin (and at the RFC 8414 path-inserted form for a URL
/// with a path), the first document found; what was tried otherwise.
pub async fn discover(d: &Dialer, target: &str) -> (Option<Metadata>, Vec<crate::protocol::Tried>) {
    let path = target.split('?').next().unwrap_or(target).trim_end_matches('/');
    let mut candidates: Vec<String> = Vec::new();
    for w in WELL_KNOWN {
        // RFC 8414 §3.1: for an issuer with a path, the well-known part goes before it.
        if !path.is_empty() {
            candidates.push(format!("{w}{path}"));
        }
        candidates.push((*w).to_owned());
    }
    let mut tried = Vec::new();
    let mut conn = match d.open(Want::Auto).await {
        Ok(c) => c,
        Err(e) => {
            tried.push(crate::protocol::Tried { probe: "OAuth metadata".into(), outcome: e });
            return (None, tried);
        }
    };
    let mut misses = Vec::new();
    for c in &candidates {
        let req = d
            .request(Method::GET, c)
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let a = match conn.send(req, 1 << 20).await {
            Ok(a) => a,
            Err(e) => match d.open(Want::Auto).await {
                Ok(new) => {
                    conn = new;
                    misses.push(format!("{c}: {e}"));
                    continue;
                }
                Err(_) => {
                    misses.push(format!("{c}: {e}"));
                    break;
                }
            },
        };
        let doc: Option<Value> =
            if a.status.is_success() { serde_json::from_slice(&a.body).ok() } else { None };
        match doc.filter(|v| v.get("issuer").is_some() || v.get("token_endpoint").is_some()) {
            Some(v) => return (Some(read(&format!("{}://{}{c}", d.scheme(), d.authority), &v)), tried),
            None => misses.push(format!("{c} {}", a.status.as_u16())),
        }
    }
    tried.push(crate::protocol::Tried {
        probe: "OAuth metadata: GET the well-known paths".into(),
        outcome: misses.join(", "),
    });
    (None, tried)
}

/// Reads a metadata document.
pub fn read(url: &str, v: &Value) -> Metadata {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let mut m = Metadata {
        url: url.to_owned(),
        issuer: text("issuer"),
        token_endpoint: text("token_endpoint"),
        authorization_endpoint: text("authorization_endpoint"),
        jwks_uri: text("jwks_uri"),
        introspection_endpoint: text("introspection_endpoint"),
        // RFC 8414 §2: absent means authorization_code and implicit.
        grant_types: if v.get("grant_types_supported").is_some() {
            list("grant_types_supported")
        } else {
            vec!["authorization_code".into(), "implicit".into()]
        },
        token_endpoint_auth_methods: list("token_endpoint_auth_methods_supported"),
        pkce_methods: list("code_challenge_methods_supported"),
        scopes: list("scopes_supported"),
        warnings: Vec::new(),
    };
    let response_types = list("response_types_supported");
    let implicit = m.grant_types.iter().any(|g| g == "implicit")
        || response_types.iter().any(|r| r.split(' ').any(|t| t == "token"));
    if implicit {
        m.warnings.push(
            "the implicit grant is advertised (tokens in the redirect URL; OAuth 2.0 Security BCP, RFC 9700, says not to use it)"
                .into(),
        );
    }
    if m.grant_types.iter().any(|g| g == "password") {
        m.warnings.push("the password grant is advertised (RFC 9700 says it must not be used)".into());
    }
    if m.grant_types.iter().any(|g| g == "authorization_code") {
        if m.pkce_methods.is_empty() {
            m.warnings.push("PKCE is not advertised (code_challenge_methods_supported is absent)".into());
        } else if !m.pkce_methods.iter().any(|p| p == "S256") {
            m.warnings.push("PKCE without S256 (plain only)".into());
        }
    }
    if m.token_endpoint.is_none() {
        m.warnings.push("no token_endpoint".into());
    }
    m
}

/// What a bearer token says and whether the endpoint takes it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Bearer {
    /// `jwt` or `opaque`.
    pub format: &'static str,
    /// The JOSE header of a JWT (`alg`, `kid`, `typ`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Value>,
    /// The checks of `exp`, `nbf`, `iss`, `aud`: `(claim, verdict)`.
    pub checks: Vec<(String, String)>,
    /// Problems with the token (expired, not yet valid, another issuer…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The status of the GET sent with the token, when it was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_with_token: Option<u16>,
    /// Why it was not sent, or what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_sent: Option<String>,
}

/// Decodes `token` and checks its time claims at `now` (Unix seconds), its issuer against the
/// metadata's, and its audience against the endpoint's `origin`.
pub fn inspect(token: &str, now: u64, issuer: Option<&str>, origin: &str) -> Bearer {
    use base64::Engine as _;
    let mut b = Bearer { format: "opaque", ..Bearer::default() };
    let parts: Vec<&str> = token.split('.').collect();
    let decode = |s: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok().filter(Value::is_object)
    };
    let (Some(header), Some(claims)) = (
        parts.first().and_then(|h| decode(h)).filter(|_| parts.len() == 3 || parts.len() == 5),
        parts.get(1).and_then(|c| decode(c)),
    ) else {
        b.checks.push((
            "format".into(),
            "not a JWT: an opaque token, which only its issuer can read (introspection)".into(),
        ));
        return b;
    };
    b.format = "jwt";
    let mut check = |claim: &str, verdict: String, problem: bool| {
        if problem {
            b.problems.push(format!("{claim}: {verdict}"));
        }
        b.checks.push((claim.to_owned(), verdict));
    };
    if parts.len() == 5 {
        check("format", "a JWE (encrypted): its claims are not readable".into(), false);
    }
    match header.get("alg").and_then(Value::as_str) {
        Some(a) if a.eq_ignore_ascii_case("none") => check("alg", "none: an unsigned token".into(), true),
        Some(a) => check("alg", format!("{a} (the signature is not verified by the probe)"), false),
        None => check("alg", "absent".into(), true),
    }
    let int = |k: &str| claims.get(k).and_then(Value::as_f64).map(|f| f as i64);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    match int("exp") {
        None => check("exp", "absent: the token never expires".into(), true),
        Some(exp) if exp <= now => {
            check("exp", format!("EXPIRED {} ago", ago(now.saturating_sub(exp))), true);
        }
        Some(exp) => check("exp", format!("valid for {} more", ago(exp.saturating_sub(now))), false),
    }
    if let Some(nbf) = int("nbf")
        && nbf > now
    {
        check("nbf", format!("NOT YET VALID: valid in {}", ago(nbf.saturating_sub(now))), true);
    }
    let iss = claims.get("iss").and_then(Value::as_str);
    match (iss, issuer) {
        (None, _) => check("iss", "absent".into(), true),
        (Some(i), Some(want)) if i != want => {
            check("iss", format!("`{i}`, NOT the server's issuer `{want}`"), true);
        }
        (Some(i), Some(_)) => check("iss", format!("`{i}`, the server's issuer"), false),
        (Some(i), None) => check("iss", format!("`{i}` (no metadata to compare with)"), false),
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if auds.is_empty() {
        check("aud", "absent: any API could take this token".into(), false);
    } else {
        let ours =
            auds.iter().any(|a| a.trim_end_matches('/') == origin || a.starts_with(&format!("{origin}/")));
        let verdict = if ours {
            format!("{} (names this endpoint)", auds.join(", "))
        } else {
            format!("{} (does not name {origin}: the server may expect its own identifier)", auds.join(", "))
        };
        check("aud", verdict, false);
    }
    b.header = Some(header);
    b.claims = Some(claims);
    b
}

fn ago(s: i64) -> String {
    match s {
        ..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Sends the URL's GET with the token and records the status.
pub async fn try_token(d: &Dialer, target: &str, token: &str, b: &mut Bearer) {
    let value = match http::HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(mut v) => {
            v.set_sensitive(true);
            v
        }
        Err(_) => {
            b.not_sent = Some("the token has characters a header cannot carry".into());
            return;
        }
    };
    let req = d
        .request(Method::GET, target)
        .header(http::header::AUTHORIZATION, value)
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    match d.send(Want::Auto, req, 64 << 10).await {
        Ok(a) => b.status_with_token = Some(a.status.as_u16()),
        Err(e) => b.not_sent = Some(format!("the request with the token failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(header: &Value, claims: &Value) -> String {
        use base64::Engine as _;
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", e(header), e(claims))
    }

    #[test]
    fn a_jwts_time_issuer_and_audience_are_checked() {
        let t = jwt(
            &json!({"alg": "RS256", "kid": "k1"}),
            &json!({"iss": "https://as.test", "aud": ["https://api.test"], "exp": 1_000, "sub": "svc"}),
        );
        let b = inspect(&t, 500, Some("https://as.test"), "https://api.test");
        assert_eq!(b.format, "jwt");
        assert!(b.problems.is_empty(), "{b:?}");
        assert_eq!(b.checks[1], ("exp".to_owned(), "valid for 8m more".to_owned()));
        assert!(b.checks[3].1.contains("names this endpoint"));

        let b = inspect(&t, 2_000, Some("https://other.test"), "https://api.test");
        assert_eq!(b.problems.len(), 2, "{b:?}");
        assert!(b.problems[0].starts_with("exp: EXPIRED 16m ago"));
        assert!(b.problems[1].contains("NOT the server's issuer"));
    }

    #[test]
    fn unsigned_timeless_and_not_yet_valid_tokens_are_problems() {
        let t = jwt(&json!({"alg": "none"}), &json!({"nbf": 100}));
        let b = inspect(&t, 50, None, "http://x");
        let claims: Vec<&str> = b.problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(claims, ["alg", "exp", "nbf", "iss"]);
    }

    #[test]
    fn opaque_tokens_are_said_to_be_opaque() {
        for t in ["abc", "a.b.c", "", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x"] {
            let b = inspect(t, 0, None, "http://x");
            assert_eq!(b.format, "opaque", "{t}");
            assert!(b.claims.is_none());
        }
    }

    #[test]
    fn metadata_flags_implicit_password_and_missing_pkce() {
        let m = read(
            "u",
            &json!({"issuer": "i", "token_endpoint": "t", "grant_types_supported": ["authorization_code", "password"],
                    "response_types_supported": ["code", "token"]}),
        );
        assert_eq!(m.warnings.len(), 3, "{:?}", m.warnings);
        // Absent grant types mean authorization_code and implicit (RFC 8414).
        let m = read(
            "u",
            &json!({"issuer": "i", "token_endpoint": "t", "code_challenge_methods_supported": ["S256"]}),
        );
        assert_eq!(m.grant_types, ["authorization_code", "implicit"]);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let m = read(
            "u",
            &json!({"issuer": "i", "token_endpoint": "t", "grant_types_supported": ["client_credentials"]}),
        );
        assert!(m.warnings.is_empty());
    }
}
