//! `WWW-Authenticate` and `Proxy-Authenticate` challenges (RFC 9110 §11.6.1), read leniently.
//!
//! Written here rather than taken from a crate: the parsers on crates.io refuse `token68`
//! challenges (`Negotiate <blob>`) or fail a whole header on its first bad challenge, and a
//! probe must report every challenge it can make out.
//!
//! ```text
//! challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param = token BWS "=" BWS ( token / quoted-string )
//! ```
//! A header is a comma-separated list in which the parameters of one challenge and the next
//! challenge follow each other: an element `name=value` belongs to the challenge before it, and
//! an element that starts with a scheme starts a new challenge.

use serde::Serialize;

/// One challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Challenge {
    /// The scheme as sent (schemes compare without regard to case).
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token68: Option<String>,
    /// The parameters in order, names in lower case, values unquoted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Whether this is a challenge of `scheme` (case-insensitive).
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// A parameter's value (`name` in lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Every challenge in the header values, in order; malformed pieces are skipped.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    for value in values {
        for element in elements(value) {
            let element = element.trim_matches([' ', '\t']);
            let Some((name, rest)) = token(element) else { continue };
            let after = rest.trim_start_matches([' ', '\t']);
            if let Some(v) = after.strip_prefix('=').filter(|_| !is_token68(element)) {
                // `name=value`: a parameter of the challenge before.
                if let (Some(c), Some(v)) = (out.last_mut(), param_value(v)) {
                    c.params.push((name.to_ascii_lowercase(), v));
                }
                continue;
            }
            let mut c = Challenge { scheme: name.to_owned(), token68: None, params: Vec::new() };
            if after.len() < rest.len() && !after.is_empty() {
                // `scheme token68` or `scheme name=value`.
                // (A malformed first parameter is left out, but the scheme stands: the
                // parameters after it are its own.)
                if is_token68(after) {
                    c.token68 = Some(after.to_owned());
                } else if let Some((n, r)) = token(after)
                    && let Some(v) = r.trim_start_matches([' ', '\t']).strip_prefix('=').and_then(param_value)
                {
                    c.params.push((n.to_ascii_lowercase(), v));
                }
            } else if !after.is_empty() {
                continue;
            }
            out.push(c);
        }
    }
    out
}

/// The list elements of a header value: split at commas outside quoted strings.
pub(crate) fn elements(value: &str) -> Vec<&str> {
    split_outside_quotes(value, b',')
}

/// `value` split at each `sep` outside quoted strings.
pub(crate) fn split_outside_quotes(value: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// A leading `token` and the rest.
fn token(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().position(|b| !is_tchar(b)).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether all of `s` is a `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`. (`a=` is one, not a parameter: a parameter's value is never empty.)
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `token / quoted-string`, unquoted; `None` when it is neither (or trailed by more).
pub(crate) fn param_value(s: &str) -> Option<String> {
    let s = s.trim_matches([' ', '\t']);
    if let Some(inner) = s.strip_prefix('"') {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return chars.as_str().trim().is_empty().then_some(out),
                c => out.push(c),
            }
        }
        return None;
    }
    (!s.is_empty() && s.bytes().all(is_tchar)).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(scheme: &str, token68: Option<&str>, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            token68: token68.map(Into::into),
            params: params.iter().map(|(n, v)| ((*n).into(), (*v).into())).collect(),
        }
    }

    #[test]
    fn challenges_with_params_token68_and_bare_schemes() {
        let cases: Vec<(Vec<&str>, Vec<Challenge>)> = vec![
            (
                vec![
                    r#"Bearer realm="api", error="invalid_token", error_description="The token, it \"expired\"""#,
                ],
                vec![one(
                    "Bearer",
                    None,
                    &[
                        ("realm", "api"),
                        ("error", "invalid_token"),
                        ("error_description", r#"The token, it "expired""#),
                    ],
                )],
            ),
            (
                vec![r#"Basic realm="x", charset="UTF-8", Negotiate, NTLM"#],
                vec![
                    one("Basic", None, &[("realm", "x"), ("charset", "UTF-8")]),
                    one("Negotiate", None, &[]),
                    one("NTLM", None, &[]),
                ],
            ),
            (
                vec!["Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg=="],
                vec![one("Negotiate", Some("YIIBhwYGKwYBBQUCoIIBezCCAXeg=="), &[])],
            ),
            (
                vec![r#"Bearer scope="read write""#, r#"ApiKey header=X-API-Key"#],
                vec![
                    one("Bearer", None, &[("scope", "read write")]),
                    one("ApiKey", None, &[("header", "X-API-Key")]),
                ],
            ),
            (
                vec![r#"DPoP algs="ES256 PS256" , Bearer"#],
                vec![one("DPoP", None, &[("algs", "ES256 PS256")]), one("Bearer", None, &[])],
            ),
            (vec!["Custom a="], vec![one("Custom", Some("a="), &[])]),
            (vec![r#"Bearer REALM = "Mixed""#], vec![one("Bearer", None, &[("realm", "Mixed")])]),
        ];
        for (values, want) in cases {
            assert_eq!(parse(values.iter().copied()), want, "{values:?}");
        }
    }

    #[test]
    fn malformed_pieces_are_skipped_not_the_header() {
        // The quote runs to the end: the scheme stands without the parameter.
        assert_eq!(
            parse([r#"Bearer realm="unterminated, Basic realm="ok""#]),
            vec![one("Bearer", None, &[])]
        );
        // Parameters after a malformed first one stay with their own scheme.
        assert_eq!(
            parse([r#"Basic realm="x", Bearer realm="a" junk, error="e""#]),
            vec![one("Basic", None, &[("realm", "x")]), one("Bearer", None, &[("error", "e")])]
        );
        let got = parse([r#"=x, "quoted", Basic realm="r", @@@, Digest nonce="n", qop="auth""#]);
        assert_eq!(
            got,
            vec![
                one("Basic", None, &[("realm", "r")]),
                one("Digest", None, &[("nonce", "n"), ("qop", "auth")])
            ]
        );
        assert_eq!(parse([""]), vec![]);
        assert_eq!(parse(["realm=x"]), vec![], "a parameter without a challenge");
    }

    #[test]
    fn lookups_ignore_case_of_schemes() {
        let c = &parse([r#"bearer realm="r""#])[0];
        assert!(c.is("Bearer"));
        assert_eq!(c.param("realm"), Some("r"));
        assert_eq!(c.param("scope"), None);
    }
}
