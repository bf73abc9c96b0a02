//! Round trips for every algorithm, the RFC 8725 negative matrix (each case asserts the exact
//! rejection), key loading rules, and property tests that nothing panics.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::keygen::Generated;
use super::*;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://issuer.example";

/// Key pairs are slow to make (RSA); each kind is made once per test process.
fn generated(alg: Algorithm) -> &'static Generated {
    static ES256: OnceLock<Generated> = OnceLock::new();
    static ES384: OnceLock<Generated> = OnceLock::new();
    static RSA: OnceLock<Generated> = OnceLock::new();
    static ED: OnceLock<Generated> = OnceLock::new();
    let (cell, make) = match alg {
        Algorithm::ES256 => (&ES256, alg),
        Algorithm::ES384 => (&ES384, alg),
        Algorithm::EdDSA => (&ED, alg),
        _ => (&RSA, Algorithm::RS256),
    };
    cell.get_or_init(|| {
        let mut g = keygen::generate(make).unwrap();
        // The shared RSA key is family-pinned (no `alg`), so every RS*/PS* can use it.
        if make == Algorithm::RS256
            && let Some(k) = g.jwks["keys"][0].as_object_mut()
        {
            k.remove("alg");
        }
        g
    })
}

fn jwks_of(g: &Generated) -> KeySet {
    let (keys, warnings) = KeySet::from_jwks(g.jwks.to_string().as_bytes()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    keys
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": ISSUER, "aud": "api", "exp": NOW + 3600, "iat": NOW, "scope": "read write"})
}

fn policy() -> Policy {
    Policy { issuer: Some(ISSUER.into()), audiences: vec!["api".into()], ..Policy::default() }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header, signed by `key` (PEM or secret) with `alg`.
fn forge(header: Value, claims: &Value, key: &[u8], alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let encoding = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => jsonwebtoken::EncodingKey::from_secret(key),
        Algorithm::ES256 | Algorithm::ES384 => jsonwebtoken::EncodingKey::from_ec_pem(key).unwrap(),
        Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(key).unwrap(),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(key).unwrap(),
    };
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &encoding, alg).unwrap();
    format!("{message}.{signature}")
}

/// An unsigned token with the given header and an arbitrary signature segment.
fn unsigned(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

fn es256() -> (&'static Generated, KeySet) {
    let g = generated(Algorithm::ES256);
    (g, jwks_of(g))
}

fn es256_token(claims: &Value) -> String {
    let g = generated(Algorithm::ES256);
    sign(claims, g.private_pem.as_bytes(), Algorithm::ES256, Some(&g.kid), None).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Positive: every algorithm round-trips, with keys from keygen, JWK Set, JWK and PEM.

#[test]
fn every_asymmetric_algorithm_round_trips_through_jwks_jwk_and_pem() {
    for &alg in super::ASYMMETRIC {
        let g = generated(alg);
        let token = sign(&claims(), g.private_pem.as_bytes(), alg, Some(&g.kid), None).unwrap();
        let jwk = g.jwks["keys"][0].to_string();
        let sets = [
            ("jwks", jwks_of(g)),
            ("jwk", KeySet::from_jwk(jwk.as_bytes()).unwrap()),
            ("pem", KeySet::from_pem(g.public_pem.as_bytes()).unwrap()),
            ("parse_any jwks", KeySet::parse_any(g.jwks.to_string().as_bytes()).unwrap().0),
            ("parse_any pem", KeySet::parse_any(g.public_pem.as_bytes()).unwrap().0),
        ];
        for (source, keys) in sets {
            let v =
                verify(&token, &keys, &policy(), NOW).unwrap_or_else(|r| panic!("{alg:?} via {source}: {r}"));
            assert_eq!(v.alg, alg);
            assert_eq!(v.kid.as_deref(), Some(g.kid.as_str()));
            assert_eq!(v.subject(), Some("alice"));
            assert_eq!(v.exp, Some(NOW + 3600));
            assert_eq!(v.header["typ"], "JWT");
            assert_eq!(v.scopes(), ["read", "write"]);
        }
    }
}

#[test]
fn every_hmac_algorithm_round_trips_through_secret_and_jwk() {
    let secret = [7u8; 64];
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign(&claims(), &secret, alg, Some("hmac-1"), Some("at+jwt")).unwrap();
        let from_secret = KeySet::from_secret(&secret, &[alg]).unwrap();
        let jwk = json!({"kty": "oct", "kid": "hmac-1", "k": b64(&secret)}).to_string();
        let from_jwk = KeySet::from_jwk(jwk.as_bytes()).unwrap();
        for keys in [from_secret, from_jwk] {
            let v = verify(&token, &keys, &policy(), NOW).unwrap();
            assert_eq!(v.alg, alg);
            assert_eq!(v.header["typ"], "at+jwt");
        }
    }
}

#[test]
fn keygen_writes_pems_and_a_one_key_jwks_with_thumbprint_kid() {
    for (alg, kty) in [(Algorithm::ES256, "EC"), (Algorithm::ES384, "EC"), (Algorithm::EdDSA, "OKP")] {
        let g = generated(alg);
        assert!(g.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(g.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let key = &g.jwks["keys"][0];
        assert_eq!(key["kty"], kty);
        assert_eq!(key["kid"], g.kid.as_str());
        assert_eq!(key["alg"], algorithm_name(alg));
        assert_eq!(key["use"], "sig");
        assert_eq!(keygen::thumbprint(key).unwrap(), g.kid);
        assert_eq!(g.kid.len(), 43);
    }
    let rsa = keygen::generate(Algorithm::PS256).unwrap();
    assert_eq!(rsa.jwks["keys"][0]["alg"], "PS256");
    assert_eq!(jwks_of(&rsa).keys()[0].describe(), format!("RSA 2048-bit key kid={} (PS256 only)", rsa.kid));
    assert!(matches!(keygen::generate(Algorithm::HS256), Err(KeyError::Unsupported(_))));
}

#[test]
fn sign_reads_sec1_and_pkcs1_private_keys() {
    use aws_lc_rs::encoding::{AsDer as _, EcPrivateKeyRfc5915Der};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pem = |label: &str, der: &[u8]| {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    };
    // SEC1 "EC PRIVATE KEY".
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let sec1: EcPrivateKeyRfc5915Der<'_> = pair.private_key().as_der().unwrap();
    let token =
        sign(&claims(), pem("EC PRIVATE KEY", sec1.as_ref()).as_bytes(), Algorithm::ES256, None, None)
            .unwrap();
    let point = aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref().to_vec();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    assert!(verify(&token, &KeySet::from_jwk(jwk.to_string().as_bytes()).unwrap(), &policy(), NOW).is_ok());
    // PKCS#1 "RSA PRIVATE KEY" (jsonwebtoken keeps the PKCS#1 form of a PKCS#8 RSA key).
    let g = generated(Algorithm::RS256);
    let pkcs1 = jsonwebtoken::EncodingKey::from_rsa_pem(g.private_pem.as_bytes()).unwrap();
    let token =
        sign(&claims(), pem("RSA PRIVATE KEY", pkcs1.as_bytes()).as_bytes(), Algorithm::RS512, None, None)
            .unwrap();
    assert!(verify(&token, &jwks_of(g), &policy(), NOW).is_ok());
}

#[test]
fn sign_errors_name_the_mismatch_without_the_key() {
    let ec = generated(Algorithm::ES256);
    let rsa = generated(Algorithm::RS256);
    let err = |key: &[u8], alg| sign(&claims(), key, alg, None, None).unwrap_err().to_string();
    assert_eq!(
        err(ec.private_pem.as_bytes(), Algorithm::RS256),
        "RS256 needs an RSA private key; this PEM holds an EC P-256 key"
    );
    assert_eq!(
        err(ec.private_pem.as_bytes(), Algorithm::ES384),
        "ES384 needs an EC P-384 private key; this PEM holds an EC P-256 key"
    );
    assert_eq!(
        err(rsa.private_pem.as_bytes(), Algorithm::EdDSA),
        "EdDSA needs an Ed25519 private key; this PEM holds an RSA key"
    );
    assert_eq!(
        err(ec.public_pem.as_bytes(), Algorithm::ES256),
        "this is a public key; signing needs the private key"
    );
    assert_eq!(err(&[1u8; 31], Algorithm::HS256), "HMAC secret is 31 bytes; HS256 needs at least 32");
    assert!(matches!(sign(&json!([1]), &[1u8; 32], Algorithm::HS256, None, None), Err(KeyError::Claims(_))));
}

#[test]
fn scopes_come_from_scope_or_scp() {
    let v = |claims: Value| Verified {
        header: Default::default(),
        claims: claims.as_object().unwrap().clone(),
        alg: Algorithm::ES256,
        kid: None,
        exp: None,
    };
    assert_eq!(v(json!({"scope": "a  b"})).scopes(), ["a", "b"]);
    assert_eq!(v(json!({"scp": ["a", "b c"]})).scopes(), ["a", "b", "c"]);
    assert_eq!(v(json!({"scp": "a b"})).scopes(), ["a", "b"]);
    assert!(v(json!({"scope": 3})).scopes().is_empty());
}

#[test]
fn typ_is_compared_case_insensitively_with_optional_application_prefix() {
    let (g, keys) = es256();
    let with_typ =
        |typ: &str| sign(&claims(), g.private_pem.as_bytes(), Algorithm::ES256, None, Some(typ)).unwrap();
    let p = Policy { typ: Some("at+jwt".into()), ..policy() };
    for ok in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        assert!(verify(&with_typ(ok), &keys, &p, NOW).is_ok(), "{ok}");
    }
    assert_eq!(verify(&with_typ("JWT"), &keys, &p, NOW).unwrap_err(), Rejection::WrongType);
    let p = Policy { typ: Some("application/at+jwt".into()), ..policy() };
    assert!(verify(&with_typ("at+JWT"), &keys, &p, NOW).is_ok());
}

#[test]
fn leeway_and_numeric_dates() {
    let (_, keys) = es256();
    let with = |extra: Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        es256_token(&c)
    };
    // Within the 30 s default leeway.
    assert!(verify(&with(json!({"exp": NOW - 20})), &keys, &policy(), NOW).is_ok());
    assert!(verify(&with(json!({"nbf": NOW + 20, "iat": NOW + 20})), &keys, &policy(), NOW).is_ok());
    // Fractions are floored.
    let v = verify(&with(json!({"exp": (NOW + 10) as f64 + 0.9})), &keys, &policy(), NOW).unwrap();
    assert_eq!(v.exp, Some(NOW + 10));
    assert_eq!(
        verify(&with(json!({"exp": "1700000000"})), &keys, &policy(), NOW).unwrap_err(),
        Rejection::InvalidClaim {
            claim: "exp",
            reason: "must be a number of seconds since the epoch, not a string".into()
        }
    );
    assert_eq!(
        verify(&with(json!({"nbf": -5})), &keys, &policy(), NOW).unwrap_err(),
        Rejection::InvalidClaim { claim: "nbf", reason: "must not be negative".into() }
    );
    assert_eq!(verify(&with(json!({"aud": 5})), &keys, &policy(), NOW).unwrap_err().code(), "invalid_claim");
    assert!(verify(&with(json!({"aud": ["other", "api"]})), &keys, &policy(), NOW).is_ok());
    // require_exp off: no exp is fine.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let p = Policy { require_exp: false, ..policy() };
    assert_eq!(verify(&es256_token(&c), &keys, &p, NOW).unwrap().exp, None);
}

// ---------------------------------------------------------------------------------------------
// The negative matrix.

#[test]
fn alg_none_in_any_capitalisation_is_refused() {
    let (_, keys) = es256();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = unsigned(json!({"alg": alg, "typ": "JWT"}), &claims(), signature);
            assert_eq!(
                verify(&token, &keys, &policy(), NOW).unwrap_err(),
                Rejection::AlgNone,
                "{alg} {signature:?}"
            );
            // Even when a policy lists every algorithm and there is an HMAC key.
            let hmac = KeySet::from_secret(&[1; 32], &[Algorithm::HS256]).unwrap();
            let all = Policy { algorithms: SUPPORTED.to_vec(), ..policy() };
            assert_eq!(verify(&token, &hmac, &all, NOW).unwrap_err(), Rejection::AlgNone);
            // It still decodes, for `jwt decode` to explain.
            assert!(decode_unverified(&token).is_ok());
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_never_accepted() {
    let g = generated(Algorithm::RS256);
    let rsa = jwks_of(g); // family-pinned RS*/PS*, kid = thumbprint
    let pem = g.public_pem.as_bytes();
    let with_kid = sign(&claims(), pem, Algorithm::HS256, Some(&g.kid), None).unwrap();
    let without_kid = sign(&claims(), pem, Algorithm::HS256, None, None).unwrap();
    // The forgery is real: configured as an HMAC secret, those bytes would verify it.
    let naive = KeySet::from_secret(pem, &[Algorithm::HS256]).unwrap();
    assert!(verify(&with_kid, &naive, &policy(), NOW).is_ok());

    // Default allow-list (the keys' algorithms): HS256 is not among them.
    assert_eq!(
        verify(&with_kid, &rsa, &policy(), NOW).unwrap_err(),
        Rejection::AlgNotAllowed("HS256".into())
    );
    assert_eq!(
        verify(&without_kid, &rsa, &policy(), NOW).unwrap_err(),
        Rejection::AlgNotAllowed("HS256".into())
    );

    // A policy that (wrongly) allows HS256 too: the RSA key's pin still refuses it.
    let lax = Policy { algorithms: vec![Algorithm::RS256, Algorithm::HS256], ..policy() };
    assert_eq!(
        verify(&with_kid, &rsa, &lax, NOW).unwrap_err(),
        Rejection::AlgKeyMismatch {
            alg: "HS256".into(),
            key: format!("RSA 2048-bit key kid={} (any RS*/PS*)", g.kid)
        }
    );
    assert_eq!(verify(&without_kid, &rsa, &lax, NOW).unwrap_err(), Rejection::UnknownKid(None));

    // PEM-loaded key (no kid): same.
    let rsa_pem = KeySet::from_pem(pem).unwrap();
    assert_eq!(
        verify(&with_kid, &rsa_pem, &lax, NOW).unwrap_err(),
        Rejection::UnknownKid(Some(g.kid.clone()))
    );
    assert_eq!(verify(&without_kid, &rsa_pem, &lax, NOW).unwrap_err(), Rejection::UnknownKid(None));

    // Mixed with a real HMAC key: the RSA kid is refused; without kid only the HMAC key is tried.
    let mixed = rsa.merged(&KeySet::from_secret(&[9; 32], &[Algorithm::HS256]).unwrap());
    assert_eq!(verify(&with_kid, &mixed, &lax, NOW).unwrap_err().code(), "alg_key_mismatch");
    assert_eq!(verify(&without_kid, &mixed, &lax, NOW).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn a_key_pinned_to_rs256_refuses_ps256() {
    let rsa = keygen::generate(Algorithm::RS256).unwrap();
    let keys = jwks_of(&rsa);
    let ps = sign(&claims(), rsa.private_pem.as_bytes(), Algorithm::PS256, Some(&rsa.kid), None).unwrap();
    let p = Policy { algorithms: vec![Algorithm::RS256, Algorithm::PS256], ..policy() };
    assert_eq!(
        verify(&ps, &keys, &p, NOW).unwrap_err(),
        Rejection::AlgKeyMismatch {
            alg: "PS256".into(),
            key: format!("RSA 2048-bit key kid={} (RS256 only)", rsa.kid)
        }
    );
    let rs = sign(&claims(), rsa.private_pem.as_bytes(), Algorithm::RS256, Some(&rsa.kid), None).unwrap();
    assert!(verify(&rs, &keys, &p, NOW).is_ok());
}

#[test]
fn time_and_claim_rejections() {
    let (_, keys) = es256();
    let case = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims();
        edit(c.as_object_mut().unwrap());
        verify(&es256_token(&c), &keys, &policy(), NOW).unwrap_err()
    };
    assert_eq!(
        case(&|c| drop(c.insert("exp".into(), json!(NOW - 100)))),
        Rejection::Expired { exp: NOW - 100, now: NOW }
    );
    assert_eq!(
        case(&|c| drop(c.insert("nbf".into(), json!(NOW + 100)))),
        Rejection::NotYetValid { nbf: NOW + 100, now: NOW }
    );
    assert_eq!(
        case(&|c| drop(c.insert("iat".into(), json!(NOW + 100)))),
        Rejection::IssuedInFuture { iat: NOW + 100, now: NOW }
    );
    assert_eq!(
        case(&|c| drop(c.insert("iss".into(), json!("https://evil.example")))),
        Rejection::WrongIssuer { expected: ISSUER.into(), actual: "https://evil.example".into() }
    );
    assert_eq!(case(&|c| drop(c.remove("iss"))), Rejection::MissingClaim("iss"));
    assert_eq!(case(&|c| drop(c.insert("aud".into(), json!(["other", "more"])))), Rejection::WrongAudience);
    assert_eq!(case(&|c| drop(c.remove("aud"))), Rejection::MissingClaim("aud"));
    assert_eq!(case(&|c| drop(c.remove("exp"))), Rejection::MissingClaim("exp"));
    // A long issuer is quoted truncated.
    let long = "x".repeat(500);
    match case(&|c| drop(c.insert("iss".into(), json!(long)))) {
        Rejection::WrongIssuer { actual, .. } => assert_eq!(actual, format!("{}…", "x".repeat(64))),
        other => panic!("{other:?}"),
    }
    // signature_only skips them all.
    let mut c = claims();
    c["exp"] = json!(NOW - 100_000);
    c["iss"] = json!("someone else");
    let p = Policy { signature_only: true, ..policy() };
    assert_eq!(verify(&es256_token(&c), &keys, &p, NOW).unwrap().exp, Some(NOW - 100_000));
}

#[test]
fn unknown_kid() {
    let (g, keys) = es256();
    let token = sign(&claims(), g.private_pem.as_bytes(), Algorithm::ES256, Some("nope"), None).unwrap();
    assert_eq!(
        verify(&token, &keys, &policy(), NOW).unwrap_err(),
        Rejection::UnknownKid(Some("nope".into()))
    );
}

#[test]
fn embedded_key_headers_are_refused() {
    let (_, keys) = es256();
    // The attacker's own key, embedded and used to sign.
    let attacker = keygen::generate(Algorithm::ES256).unwrap();
    let jwk = attacker.jwks["keys"][0].clone();
    let token = forge(
        json!({"alg": "ES256", "kid": attacker.kid, "jwk": jwk}),
        &claims(),
        attacker.private_pem.as_bytes(),
        Algorithm::ES256,
    );
    assert_eq!(verify(&token, &keys, &policy(), NOW).unwrap_err(), Rejection::EmbeddedKey("jwk".into()));
    for param in ["jku", "x5u"] {
        let token = forge(
            json!({"alg": "ES256", param: "https://attacker.example/keys"}),
            &claims(),
            attacker.private_pem.as_bytes(),
            Algorithm::ES256,
        );
        assert_eq!(verify(&token, &keys, &policy(), NOW).unwrap_err(), Rejection::EmbeddedKey(param.into()));
    }
    let message = Rejection::EmbeddedKey("jku".into()).to_string();
    assert!(message.contains("keys come only from configuration"), "{message}");
    // x5c / x5t are ignored: never used to find a key, and do not stop a good token.
    let g = generated(Algorithm::ES256);
    let token = forge(
        json!({"alg": "ES256", "kid": g.kid, "x5c": ["MIIB"], "x5t": "abc"}),
        &claims(),
        g.private_pem.as_bytes(),
        Algorithm::ES256,
    );
    assert!(verify(&token, &keys, &policy(), NOW).is_ok());
    let token = forge(
        json!({"alg": "ES256", "x5c": ["MIIB"]}),
        &claims(),
        attacker.private_pem.as_bytes(),
        Algorithm::ES256,
    );
    assert_eq!(verify(&token, &keys, &policy(), NOW).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn crit_header_is_refused() {
    let g = generated(Algorithm::ES256);
    let (_, keys) = es256();
    let token = forge(
        json!({"alg": "ES256", "crit": ["b64"], "b64": false}),
        &claims(),
        g.private_pem.as_bytes(),
        Algorithm::ES256,
    );
    assert_eq!(verify(&token, &keys, &policy(), NOW).unwrap_err(), Rejection::CritUnsupported);
}

#[test]
fn tampered_and_truncated_tokens() {
    let (_, keys) = es256();
    let token = es256_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut changed = claims();
    changed["sub"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(changed.to_string().as_bytes()), parts[2]);
    assert_eq!(verify(&tampered, &keys, &policy(), NOW).unwrap_err(), Rejection::BadSignature);
    // 86 base64url characters carry 64 bytes; 84 decode to 63 bytes (a short signature).
    let short = &token[..token.len() - 2];
    assert_eq!(verify(short, &keys, &policy(), NOW).unwrap_err(), Rejection::BadSignature);
    // 85 characters is not a valid base64url length.
    let odd = &token[..token.len() - 1];
    assert_eq!(
        verify(odd, &keys, &policy(), NOW).unwrap_err(),
        Rejection::Malformed(
            "the signature segment is not valid base64url (bad length or trailing bits)".into()
        )
    );
    let empty = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        verify(&empty, &keys, &policy(), NOW).unwrap_err(),
        Rejection::Malformed("the signature segment is empty".into())
    );
}

#[test]
fn non_base64url_characters_are_reported_with_their_segment() {
    let (_, keys) = es256();
    let token = es256_token(&claims());
    let names = ["header", "payload", "signature"];
    for (i, name) in names.iter().enumerate() {
        for (insert, what) in [("+", "'+'"), ("/", "'/'"), ("=", "'=' padding"), (" ", "a space")] {
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let at = if insert == "=" { parts[i].len() } else { 4 };
            parts[i].insert_str(at, insert);
            let bad = parts.join(".");
            let expected = Rejection::Malformed(format!(
                "the {name} segment contains {what} at offset {at}, which is not base64url (RFC 7515 uses '-', '_' and no padding)"
            ));
            assert_eq!(verify(&bad, &keys, &policy(), NOW).unwrap_err(), expected, "{name} {insert:?}");
            assert_eq!(decode_unverified(&bad).unwrap_err(), expected, "{name} {insert:?}");
        }
    }
}

#[test]
fn shape_size_and_serialization() {
    let (_, keys) = es256();
    let token = es256_token(&claims());
    let four = format!("{token}.e30");
    assert_eq!(
        verify(&four, &keys, &policy(), NOW).unwrap_err(),
        Rejection::Malformed("4 segments; a compact JWS has 3".into())
    );
    let two = token.rsplit_once('.').unwrap().0;
    assert_eq!(
        verify(two, &keys, &policy(), NOW).unwrap_err(),
        Rejection::Malformed("2 segments; a compact JWS has 3".into())
    );
    assert_eq!(
        decode_unverified("a.b.c.d.e").unwrap_err(),
        Rejection::Malformed("5 segments; a compact JWS has 3 (5 segments is an encrypted JWE)".into())
    );
    let mut big = claims();
    big["padding"] = json!("x".repeat(20_000));
    let oversized = es256_token(&big);
    assert_eq!(
        verify(&oversized, &keys, &policy(), NOW).unwrap_err(),
        Rejection::TooLarge { size: oversized.len(), limit: 16 * 1024 }
    );
    let roomy = Policy { max_token_bytes: 64 * 1024, ..policy() };
    assert!(verify(&oversized, &keys, &roomy, NOW).is_ok());
    let parts: Vec<&str> = token.split('.').collect();
    let json_serialization =
        json!({"payload": parts[1], "protected": parts[0], "signature": parts[2]}).to_string();
    assert_eq!(verify(&json_serialization, &keys, &policy(), NOW).unwrap_err(), Rejection::JsonSerialization);
    assert_eq!(decode_unverified(&json_serialization).unwrap_err(), Rejection::JsonSerialization);
    let not_object = unsigned(json!(["alg"]), &claims(), "");
    assert_eq!(
        decode_unverified(&not_object).unwrap_err(),
        Rejection::Malformed("the header is JSON but not an object".into())
    );
    let no_alg = unsigned(json!({"typ": "JWT"}), &claims(), "c2ln");
    assert_eq!(
        verify(&no_alg, &keys, &policy(), NOW).unwrap_err(),
        Rejection::Malformed("the header has no alg".into())
    );
    let es512 = unsigned(json!({"alg": "ES512"}), &claims(), "c2ln");
    assert_eq!(verify(&es512, &keys, &policy(), NOW).unwrap_err(), Rejection::AlgNotAllowed("ES512".into()));
}

#[test]
fn rejection_messages_never_contain_the_token() {
    let (_, keys) = es256();
    let token = es256_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let cases = [
        format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]),
        format!("{}.{}x.{}", parts[0], parts[1], parts[2]),
        format!("{token}.x"),
        format!("{}.{}.{}+", parts[0], parts[1], parts[2]),
    ];
    for bad in cases {
        let message = verify(&bad, &keys, &policy(), NOW).unwrap_err().to_string();
        for part in &parts {
            assert!(!message.contains(&part[..12]), "{message}");
        }
    }
}

#[test]
fn rejection_codes_are_stable() {
    let all = [
        (Rejection::TooLarge { size: 1, limit: 0 }, "too_large"),
        (Rejection::Malformed(String::new()), "malformed"),
        (Rejection::JsonSerialization, "json_serialization"),
        (Rejection::AlgNone, "alg_none"),
        (Rejection::AlgNotAllowed(String::new()), "alg_not_allowed"),
        (Rejection::EmbeddedKey(String::new()), "embedded_key"),
        (Rejection::UnknownKid(None), "unknown_kid"),
        (Rejection::AlgKeyMismatch { alg: String::new(), key: String::new() }, "alg_key_mismatch"),
        (Rejection::BadSignature, "bad_signature"),
        (Rejection::Expired { exp: 0, now: 1 }, "expired"),
        (Rejection::NotYetValid { nbf: 1, now: 0 }, "not_yet_valid"),
        (Rejection::IssuedInFuture { iat: 1, now: 0 }, "issued_in_future"),
        (Rejection::MissingClaim("exp"), "missing_claim"),
        (Rejection::InvalidClaim { claim: "exp", reason: String::new() }, "invalid_claim"),
        (Rejection::WrongIssuer { expected: String::new(), actual: String::new() }, "wrong_issuer"),
        (Rejection::WrongAudience, "wrong_audience"),
        (Rejection::WrongType, "wrong_type"),
        (Rejection::CritUnsupported, "crit_unsupported"),
    ];
    for (rejection, code) in all {
        assert_eq!(rejection.code(), code);
        assert!(!rejection.to_string().is_empty());
    }
    assert_eq!(
        Rejection::Expired { exp: 100, now: 160 }.to_string(),
        "token expired 60 s ago (exp 100, now 160)"
    );
}

// ---------------------------------------------------------------------------------------------
// Key loading rules.

/// A 1024-bit RSA public key, made with `openssl genrsa 1024` for this test.
const RSA_1024_N: &str = "nPEKA3-RrsM6N41CtyqKzb-za_Izv6oovhuBq4ZqWquLVoJyQ5DpYFbRZupxtt3xKaEtgcUW_z0toDEp6BBijfd89MYebA7KpsULIJh8RVmqCRKtX7YurXiu95gU0g0H-6j_0uc71Pi0IHp7ryg3qkJOUmTIf56ZdUFs1Uk9wFk";
const RSA_1024_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCc8QoDf5Guwzo3jUK3KorNv7Nr
8jO/qii+G4Grhmpaq4tWgnJDkOlgVtFm6nG23fEpoS2BxRb/PS2gMSnoEGKN93z0
xh5sDsqmxQsgmHxFWaoJEq1fti6teK73mBTSDQf7qP/S5zvU+LQgenuvKDeqQk5S
ZMh/npl1QWzVST3AWQIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn rsa_keys_under_2048_bits_are_refused_at_load() {
    let jwk = json!({"kty": "RSA", "kid": "weak", "n": RSA_1024_N, "e": "AQAB"});
    let err = KeySet::from_jwk(jwk.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::RsaTooSmall { bits: 1024, .. }), "{err:?}");
    assert_eq!(err.to_string(), "JWK: RSA key is 1024 bits; at least 2048 are required");
    // In a JWK Set it is skipped with a warning, so the good keys beside it keep working...
    let good = generated(Algorithm::ES256).jwks["keys"][0].clone();
    let jwks = json!({"keys": [good, jwk.clone()]});
    let (set, warnings) = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(
        warnings,
        ["keys[1] (kid \"weak\"): RSA key is 1024 bits; at least 2048 are required; skipped"]
    );
    assert!(!set.has_kid("weak"));
    // ...and a set of only weak keys is refused, naming why.
    let err = KeySet::from_jwks(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("RSA key is 1024 bits"), "{err}");
    let err = KeySet::from_pem(RSA_1024_PEM.as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::RsaTooSmall { bits: 1024, .. }), "{err:?}");
}

#[test]
fn hmac_secrets_shorter_than_the_hash_are_refused_at_load() {
    let err = KeySet::from_secret(&[1; 31], &[Algorithm::HS256]).unwrap_err();
    assert_eq!(err.to_string(), "HMAC secret is 31 bytes; HS256 needs at least 32");
    let err =
        KeySet::from_secret(&[1; 40], &[Algorithm::HS256, Algorithm::HS384, Algorithm::RS256]).unwrap_err();
    assert_eq!(err.to_string(), "HMAC secret is 40 bytes; HS384 needs at least 48");
    assert!(matches!(KeySet::from_secret(&[1; 64], &[Algorithm::RS256]), Err(KeyError::Unsupported(_))));
    let keys = KeySet::from_secret(&[1; 64], &[Algorithm::HS512, Algorithm::ES256]).unwrap();
    assert_eq!(keys.algorithms(), [Algorithm::HS512]);
    let jwk = json!({"kty": "oct", "k": b64(&[1; 31])});
    assert!(matches!(
        KeySet::from_jwk(jwk.to_string().as_bytes()),
        Err(KeyError::SecretTooShort { len: 31, .. })
    ));
    let jwk = json!({"kty": "oct", "alg": "HS512", "k": b64(&[1; 48])});
    assert!(matches!(
        KeySet::from_jwk(jwk.to_string().as_bytes()),
        Err(KeyError::SecretTooShort { len: 48, min: 64, .. })
    ));
    // Without alg, a 48-byte secret is pinned to what its length allows.
    let jwk = json!({"kty": "oct", "k": b64(&[1; 48])});
    assert_eq!(
        KeySet::from_jwk(jwk.to_string().as_bytes()).unwrap().algorithms(),
        [Algorithm::HS256, Algorithm::HS384]
    );
}

#[test]
fn jwks_skips_unusable_keys_with_reasons() {
    let ec = generated(Algorithm::ES256).jwks["keys"][0].clone();
    let mut enc = generated(Algorithm::RS256).jwks["keys"][0].clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc-1");
    let jwks = json!({"keys": [
        enc,
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
        {"kty": "AKP", "alg": "ML-DSA-44"},
        {"kty": "EC", "crv": "P-256", "alg": "ES384", "x": ec["x"], "y": ec["y"]},
        ec,
    ]});
    let (keys, warnings) = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.kids(), [generated(Algorithm::ES256).kid.clone()]);
    assert!(keys.has_kid(&generated(Algorithm::ES256).kid));
    assert_eq!(
        warnings,
        [
            "keys[0] (kid \"enc-1\"): \"use\" is \"enc\", not \"sig\"; skipped",
            "keys[1] (kid \"p521\"): curve P-521 (ES512) is not supported; skipped",
            "keys[2]: OKP curve \"X25519\" is not supported (only Ed25519); skipped",
            "keys[3] (kid \"no-n\"): missing \"n\"; skipped",
            "keys[4]: the point is not on curve P-256; skipped",
            "keys[5]: alg: unknown algorithm \"ML-DSA-44\"; supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512; skipped",
            "keys[6]: alg ES384 does not fit curve P-256; skipped",
        ]
    );
    let err =
        KeySet::from_jwks(br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no usable signature verification key in the JWK Set: keys[0]: \"use\" is \"enc\", not \"sig\"; skipped"
    );
    assert!(matches!(KeySet::from_jwks(br#"{"kty":"EC"}"#), Err(KeyError::Format(_))));
    assert!(matches!(KeySet::from_jwk(br#"{"keys":[]}"#), Err(KeyError::Format(_))));
    assert!(matches!(KeySet::parse_any(b"hello"), Err(KeyError::Format(_))));
    let err = KeySet::from_pem(generated(Algorithm::ES256).private_pem.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("this is a private key"), "{err}");
}

#[test]
fn a_certificate_pem_gives_its_public_key() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["issuer.example".into()]).unwrap().self_signed(&key).unwrap();
    let keys = KeySet::from_pem(cert.pem().as_bytes()).unwrap();
    assert_eq!(keys.keys()[0].describe(), "EC P-256 key (ES256 only)");
    let token = sign(&claims(), key.serialize_pem().as_bytes(), Algorithm::ES256, None, None).unwrap();
    assert!(verify(&token, &keys, &policy(), NOW).is_ok());
}

#[test]
fn parse_algorithm_messages() {
    assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
    assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
    assert_eq!(
        parse_algorithm("none").unwrap_err(),
        "algorithm \"none\" (unsigned tokens) is never accepted"
    );
    assert_eq!(
        parse_algorithm("NONE").unwrap_err(),
        "algorithm \"none\" (unsigned tokens) is never accepted"
    );
    assert_eq!(
        parse_algorithm("rs256").unwrap_err(),
        "unknown algorithm \"rs256\": names are case-sensitive; did you mean RS256?"
    );
    assert!(
        parse_algorithm("ES512")
            .unwrap_err()
            .starts_with("algorithm ES512 is not supported; supported: RS256")
    );
    assert!(parse_algorithm("XY1").unwrap_err().starts_with("unknown algorithm \"XY1\"; supported:"));
}

#[test]
fn without_kid_at_most_16_keys_are_tried() {
    let g = generated(Algorithm::ES256);
    let others: Vec<Value> = (0..16)
        .map(|_| {
            let mut k = keygen::generate(Algorithm::ES256).unwrap().jwks["keys"][0].clone();
            k.as_object_mut().unwrap().remove("kid");
            k
        })
        .collect();
    let mut own = g.jwks["keys"][0].clone();
    own.as_object_mut().unwrap().remove("kid");
    let token = sign(&claims(), g.private_pem.as_bytes(), Algorithm::ES256, None, None).unwrap();
    let own_first: Vec<Value> = [own.clone()].into_iter().chain(others.clone()).collect();
    let own_last: Vec<Value> = others.into_iter().chain([own]).collect();
    let first = json!({ "keys": own_first });
    let last = json!({ "keys": own_last });
    let (first, _) = KeySet::from_jwks(first.to_string().as_bytes()).unwrap();
    let (last, _) = KeySet::from_jwks(last.to_string().as_bytes()).unwrap();
    assert!(verify(&token, &first, &policy(), NOW).is_ok());
    assert_eq!(verify(&token, &last, &policy(), NOW).unwrap_err(), Rejection::BadSignature);
}

// ---------------------------------------------------------------------------------------------
// Property tests: no input makes `verify` or `decode_unverified` panic, and no mutation of a
// valid token verifies.

fn hmac_keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        jwks_of(generated(Algorithm::ES256))
            .merged(&KeySet::from_secret(&[3; 32], &[Algorithm::HS256]).unwrap())
    })
}

fn valid_tokens() -> &'static [String; 2] {
    static TOKENS: OnceLock<[String; 2]> = OnceLock::new();
    TOKENS.get_or_init(|| {
        [es256_token(&claims()), sign(&claims(), &[3; 32], Algorithm::HS256, None, None).unwrap()]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch =
        prop::sample::select(vec!['.', '=', '+', '/', ' ', '{', 'A', 'a', '-', '_', '0', '\n', 'é', '\0']);
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn apply(token: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    for m in mutations {
        match *m {
            Mutation::Replace(i, c) if !chars.is_empty() => {
                let i = i % chars.len();
                chars[i] = c;
            }
            Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Mutation::Remove(i) if !chars.is_empty() => {
                let i = i % chars.len();
                chars.remove(i);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,300}", dotted in "[A-Za-z0-9_\\-=+/ .{}]{0,200}") {
        let p = Policy { algorithms: SUPPORTED.to_vec(), ..policy() };
        for input in [&s, &dotted] {
            let _ = verify(input, hmac_keys(), &p, NOW);
            let _ = decode_unverified(input);
        }
    }

    #[test]
    fn mutated_tokens_never_panic_nor_verify(which in 0usize..2, mutations in prop::collection::vec(mutation(), 1..4)) {
        let original = &valid_tokens()[which];
        let mutated = apply(original, &mutations);
        let result = verify(&mutated, hmac_keys(), &policy(), NOW);
        let _ = decode_unverified(&mutated);
        if result.is_ok() {
            prop_assert_eq!(&mutated, original);
        }
    }
}
