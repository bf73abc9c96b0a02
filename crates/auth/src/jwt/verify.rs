//! Verifying a compact JWS: shape, header rules, key selection, signature, then claims.
//!
//! The order is deliberate: everything that can be refused from the header alone is refused
//! before any key is touched, and the payload is parsed as JSON only after its signature verified
//! (RFC 8725 §3.1: do not act on unverified content).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::{KeySet, Policy, Rejection, Verified, algorithm_name, clip};

/// At most this many keys are tried for a token that has no `kid`.
const MAX_KEYS_TRIED: usize = 16;

type Object = Map<String, Value>;

/// A compact JWS split and its header decoded; the other segments are still base64url text.
struct Parts<'a> {
    header_b64: &'a str,
    payload_b64: &'a str,
    signature_b64: &'a str,
    header: Object,
}

/// Where a character outside the base64url alphabet sits, said without quoting the token.
fn check_base64url(segment: &str, name: &str) -> Result<(), Rejection> {
    let Some((at, byte)) =
        segment.bytes().enumerate().find(|(_, b)| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
    else {
        return Ok(());
    };
    let what = match byte {
        b'=' => "'=' padding".to_owned(),
        b' ' => "a space".to_owned(),
        b'\t' | b'\r' | b'\n' => "whitespace".to_owned(),
        b if b.is_ascii_graphic() => format!("'{}'", b as char),
        b => format!("byte 0x{b:02x}"),
    };
    Err(Rejection::Malformed(format!(
        "the {name} segment contains {what} at offset {at}, which is not base64url (RFC 7515 uses '-', '_' and no padding)"
    )))
}

fn decode_segment(segment: &str, name: &str) -> Result<Vec<u8>, Rejection> {
    check_base64url(segment, name)?;
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| {
        Rejection::Malformed(format!(
            "the {name} segment is not valid base64url (bad length or trailing bits)"
        ))
    })
}

fn json_object(bytes: &[u8], name: &str) -> Result<Object, Rejection> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Rejection::Malformed(format!("the {name} is JSON but not an object"))),
        Err(_) => Err(Rejection::Malformed(format!("the {name} is not valid JSON"))),
    }
}

/// Shape checks shared by `verify` and `decode_unverified`.
fn split(token: &str) -> Result<Parts<'_>, Rejection> {
    if token.trim_start().starts_with('{') {
        return Err(Rejection::JsonSerialization);
    }
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        let hint = if segments.len() == 5 { " (5 segments is an encrypted JWE)" } else { "" };
        return Err(Rejection::Malformed(format!(
            "{} segment{}; a compact JWS has 3{hint}",
            segments.len(),
            if segments.len() == 1 { "" } else { "s" }
        )));
    }
    let (header_b64, payload_b64, signature_b64) = (segments[0], segments[1], segments[2]);
    if header_b64.is_empty() {
        return Err(Rejection::Malformed("the header segment is empty".into()));
    }
    let header = json_object(&decode_segment(header_b64, "header")?, "header")?;
    Ok(Parts { header_b64, payload_b64, signature_b64, header })
}

/// Decodes without verifying (for `jwt decode`): header and claims, or the rejection explaining
/// why it is not a JWT. `alg: none` tokens decode (the caller warns about them).
pub fn decode_unverified(token: &str) -> Result<(Object, Object), Rejection> {
    let parts = split(token)?;
    if parts.payload_b64.is_empty() {
        return Err(Rejection::Malformed(
            "the payload segment is empty (detached payloads are not accepted)".into(),
        ));
    }
    let claims = json_object(&decode_segment(parts.payload_b64, "payload")?, "payload")?;
    check_base64url(parts.signature_b64, "signature")?;
    decode_segment(parts.signature_b64, "signature")?;
    Ok((parts.header, claims))
}

/// Header `typ` matches the policy's: case-insensitive, "application/" optional on both sides
/// when the rest has no other '/' (RFC 7515 §4.1.9).
fn typ_matches(actual: &str, expected: &str) -> bool {
    fn short(t: &str) -> &str {
        match t.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") && !t[12..].contains('/') => &t[12..],
            _ => t,
        }
    }
    short(actual).eq_ignore_ascii_case(short(expected))
}

/// Verifies a compact JWS: size, shape, header checks, key selection (by kid; without kid every key
/// that allows the alg, at most 16 tried), signature, then claims unless `signature_only`. `now`
/// is unix seconds.
pub fn verify(token: &str, keys: &KeySet, policy: &Policy, now: u64) -> Result<Verified, Rejection> {
    if token.len() > policy.max_token_bytes {
        return Err(Rejection::TooLarge { size: token.len(), limit: policy.max_token_bytes });
    }
    let parts = split(token)?;
    let header = &parts.header;

    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => return Err(Rejection::Malformed("the header's alg is not a string".into())),
        None => return Err(Rejection::Malformed("the header has no alg".into())),
    };
    if alg_name.trim().eq_ignore_ascii_case("none") {
        return Err(Rejection::AlgNone);
    }
    // RFC 8725 §3.10: never let the token say where its key is.
    for param in ["jwk", "jku", "x5u"] {
        if header.contains_key(param) {
            return Err(Rejection::EmbeddedKey(param.to_owned()));
        }
    }
    if header.contains_key("crit") {
        return Err(Rejection::CritUnsupported);
    }
    let alg = super::SUPPORTED
        .into_iter()
        .find(|a| algorithm_name(*a) == alg_name)
        .ok_or_else(|| Rejection::AlgNotAllowed(clip(alg_name)))?;
    let allowed = if policy.algorithms.is_empty() {
        keys.keys().iter().any(|k| k.allows(alg))
    } else {
        policy.algorithms.contains(&alg)
    };
    if !allowed {
        return Err(Rejection::AlgNotAllowed(algorithm_name(alg).to_owned()));
    }
    if let Some(expected) = &policy.typ {
        match header.get("typ") {
            Some(Value::String(t)) if typ_matches(t, expected) => {}
            _ => return Err(Rejection::WrongType),
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Rejection::Malformed("the header's kid is not a string".into())),
    };

    if parts.payload_b64.is_empty() {
        return Err(Rejection::Malformed(
            "the payload segment is empty (detached payloads are not accepted)".into(),
        ));
    }
    check_base64url(parts.payload_b64, "payload")?;
    if parts.signature_b64.is_empty() {
        return Err(Rejection::Malformed("the signature segment is empty".into()));
    }
    // Decoded here only to report a precise reason; `crypto::verify` decodes it again.
    decode_segment(parts.signature_b64, "signature")?;

    // Key selection: by kid (keys without a kid stand in when none has it), else every key that
    // allows the algorithm. Keys are pinned, so a key never verifies an algorithm outside its pin.
    let candidates: Vec<&super::Key> = match kid.as_deref() {
        Some(kid) => {
            let named: Vec<_> = keys.keys().iter().filter(|k| k.kid() == Some(kid)).collect();
            if let Some(first) = named.first() {
                let fitting: Vec<_> = named.iter().copied().filter(|k| k.allows(alg)).collect();
                if fitting.is_empty() {
                    return Err(Rejection::AlgKeyMismatch {
                        alg: algorithm_name(alg).to_owned(),
                        key: first.describe(),
                    });
                }
                fitting
            } else {
                let anonymous: Vec<_> =
                    keys.keys().iter().filter(|k| k.kid().is_none() && k.allows(alg)).collect();
                if anonymous.is_empty() {
                    return Err(Rejection::UnknownKid(Some(clip(kid))));
                }
                anonymous
            }
        }
        None => {
            let fitting: Vec<_> = keys.keys().iter().filter(|k| k.allows(alg)).collect();
            if fitting.is_empty() {
                return Err(Rejection::UnknownKid(None));
            }
            fitting
        }
    };

    let message_len = parts.header_b64.len() + 1 + parts.payload_b64.len();
    let message = &token.as_bytes()[..message_len];
    let verified = candidates.iter().take(MAX_KEYS_TRIED).any(|key| {
        jsonwebtoken::crypto::verify(parts.signature_b64, message, key.decoding(), alg).unwrap_or(false)
    });
    if !verified {
        return Err(Rejection::BadSignature);
    }

    let claims = json_object(&decode_segment(parts.payload_b64, "payload")?, "payload")?;
    let exp = numeric_date(&claims, "exp");
    if !policy.signature_only {
        check_claims(&claims, policy, now)?;
    }
    Ok(Verified { header: parts.header, exp: exp.ok().flatten(), claims, alg, kid })
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, fractions floored.
fn numeric_date(claims: &Object, claim: &'static str) -> Result<Option<u64>, Rejection> {
    let invalid = |reason: &str| Rejection::InvalidClaim { claim, reason: reason.to_owned() };
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if let Some(f) = n.as_f64()
                && f.is_finite()
                && f >= 0.0
            {
                // Saturates above u64::MAX, which is "never" for exp and "far future" for nbf.
                Ok(Some(f.floor() as u64))
            } else {
                Err(invalid("must not be negative"))
            }
        }
        Some(Value::String(_)) => Err(invalid("must be a number of seconds since the epoch, not a string")),
        Some(_) => Err(invalid("must be a number of seconds since the epoch")),
    }
}

fn check_claims(claims: &Object, policy: &Policy, now: u64) -> Result<(), Rejection> {
    let leeway = policy.leeway;
    match numeric_date(claims, "exp")? {
        Some(exp) if now > exp.saturating_add(leeway) => return Err(Rejection::Expired { exp, now }),
        Some(_) => {}
        None if policy.require_exp => return Err(Rejection::MissingClaim("exp")),
        None => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(Rejection::NotYetValid { nbf, now });
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat > now.saturating_add(leeway)
    {
        return Err(Rejection::IssuedInFuture { iat, now });
    }
    if let Some(expected) = &policy.issuer {
        match claims.get("iss") {
            None => return Err(Rejection::MissingClaim("iss")),
            Some(Value::String(iss)) if iss == expected => {}
            Some(Value::String(iss)) => {
                return Err(Rejection::WrongIssuer { expected: clip(expected), actual: clip(iss) });
            }
            Some(_) => {
                return Err(Rejection::InvalidClaim { claim: "iss", reason: "must be a string".into() });
            }
        }
    }
    if !policy.audiences.is_empty() {
        let accepted = |a: &str| policy.audiences.iter().any(|x| x == a);
        let ok = match claims.get("aud") {
            None => return Err(Rejection::MissingClaim("aud")),
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(list)) => {
                let mut any = false;
                for v in list {
                    match v {
                        Value::String(a) => any |= accepted(a),
                        _ => {
                            return Err(Rejection::InvalidClaim {
                                claim: "aud",
                                reason: "must be a string or an array of strings".into(),
                            });
                        }
                    }
                }
                any
            }
            Some(_) => {
                return Err(Rejection::InvalidClaim {
                    claim: "aud",
                    reason: "must be a string or an array of strings".into(),
                });
            }
        };
        if !ok {
            return Err(Rejection::WrongAudience);
        }
    }
    Ok(())
}
