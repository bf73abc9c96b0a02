//! Published test vectors: RFC 7515 Appendix A.1–A.3, RFC 7520 §4.1, §4.2, §4.4 and RFC 8037
//! Appendix A.4, verified with `signature_only`, plus the RFC 7638 and RFC 8037 thumbprints.
//!
//! RFC 7520 §4.3 (ES512) is left out: P-521 is not supported by jsonwebtoken. The RFC 7520 and
//! RFC 8037 payloads are plain text, not JSON claims, so `verify` refuses them *after* the
//! signature step with "the payload is not valid JSON" (a bad signature would have stopped it
//! earlier); the signature is also checked directly with the loaded key.

use serde_json::json;

use super::*;

const RFC7515_PAYLOAD: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

const RFC7515_A1_TOKEN: &str = concat!(
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
    ".",
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
    ".",
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
);
const RFC7515_A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

const RFC7515_A2_N: &str = concat!(
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx",
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs",
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH",
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV",
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8",
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
);
const RFC7515_A2_SIGNATURE: &str = concat!(
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7",
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4",
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K",
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv",
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB",
    "p0igcN_IoypGlUPQGe77Rw"
);

const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC7515_A3_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// RFC 7520 §4 payload: "It’s a dangerous business, Frodo, going out your door. ..." (text).
const RFC7520_PAYLOAD: &str = concat!(
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IH",
    "lvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBk",
    "b24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcm",
    "UgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4"
);
/// RFC 7520 §3.4, the "bilbo.baggins@hobbiton.example" RSA key (public part).
const RFC7520_RSA_N: &str = concat!(
    "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMa",
    "JMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6c",
    "S6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwd",
    "q_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw"
);
const RFC7520_41_HEADER: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9";
const RFC7520_41_SIGNATURE: &str = concat!(
    "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmK",
    "ZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4J",
    "IwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8w",
    "W1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluP",
    "xUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_f",
    "cIe8u9ipH84ogoree7vjbU5y18kDquDg"
);
const RFC7520_42_HEADER: &str = "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9";
const RFC7520_42_SIGNATURE: &str = concat!(
    "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP",
    "6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqr",
    "YRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64Q",
    "QSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw"
);
/// RFC 7520 §3.5, the "018c0ae5-4d9b-471b-bfd6-eef314bc7037" HMAC key.
const RFC7520_HMAC_K: &str = "hJtXIZ2uSN5kbQfbtTNWbpdmhkV8FJG-Onbc6mxCcYg";
const RFC7520_44_HEADER: &str =
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9";
const RFC7520_44_SIGNATURE: &str = "s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";

const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_A4_TOKEN: &str = concat!(
    "eyJhbGciOiJFZERTQSJ9",
    ".",
    "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
    ".",
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
);

fn signature_only() -> Policy {
    Policy { signature_only: true, ..Policy::default() }
}

fn jwk(value: serde_json::Value) -> KeySet {
    KeySet::from_jwk(value.to_string().as_bytes()).unwrap()
}

/// For text payloads: `verify` gets past the signature, then refuses the non-JSON payload; the
/// signature is also checked directly against the one loaded key.
fn assert_signature_verifies_text_payload(token: &str, keys: &KeySet, alg: Algorithm) {
    assert_eq!(
        verify(token, keys, &signature_only(), 0).unwrap_err(),
        Rejection::Malformed("the payload is not valid JSON".into()),
        "{alg:?}: the signature step must pass"
    );
    let (message, signature) = token.rsplit_once('.').unwrap();
    let key = &keys.keys()[0];
    assert!(key.allows(alg));
    assert!(jsonwebtoken::crypto::verify(signature, message.as_bytes(), key.decoding(), alg).unwrap());
    let tampered = format!("{}x.{signature}", &message[..message.len() - 1]);
    assert!(
        !jsonwebtoken::crypto::verify(signature, tampered.as_bytes(), key.decoding(), alg).unwrap_or(false)
    );
}

#[test]
fn rfc7515_a1_hs256() {
    let keys = jwk(json!({"kty": "oct", "k": RFC7515_A1_K}));
    assert_eq!(keys.keys()[0].algorithms(), [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    let v = verify(RFC7515_A1_TOKEN, &keys, &signature_only(), 0).unwrap();
    assert_eq!(v.alg, Algorithm::HS256);
    assert_eq!(v.claims["iss"], "joe");
    assert_eq!(v.claims["http://example.com/is_root"], true);
    assert_eq!(v.exp, Some(1_300_819_380));
    assert_eq!(v.header["typ"], "JWT");
    // Claims are checked without signature_only: valid before exp, expired after.
    let policy = Policy { leeway: 0, ..Policy::default() };
    assert!(verify(RFC7515_A1_TOKEN, &keys, &policy, 1_300_819_000).is_ok());
    assert_eq!(
        verify(RFC7515_A1_TOKEN, &keys, &policy, 1_300_819_381).unwrap_err(),
        Rejection::Expired { exp: 1_300_819_380, now: 1_300_819_381 }
    );
}

#[test]
fn rfc7515_a2_rs256() {
    let keys = jwk(json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB"}));
    assert_eq!(keys.keys()[0].describe(), "RSA 2048-bit key (any RS*/PS*)");
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}.{RFC7515_A2_SIGNATURE}");
    let v = verify(&token, &keys, &signature_only(), 0).unwrap();
    assert_eq!(v.alg, Algorithm::RS256);
    assert_eq!(v.claims["iss"], "joe");
    // The same key from its PEM form verifies too.
    let pem_keys = KeySet::from_pem(rsa_public_pem(RFC7515_A2_N).as_bytes()).unwrap();
    assert!(verify(&token, &pem_keys, &signature_only(), 0).is_ok());
}

#[test]
fn rfc7515_a3_es256() {
    let keys = jwk(json!({"kty": "EC", "crv": "P-256", "x": RFC7515_A3_X, "y": RFC7515_A3_Y}));
    assert_eq!(keys.keys()[0].algorithms(), [Algorithm::ES256]);
    let token = format!("eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}.{RFC7515_A3_SIGNATURE}");
    let v = verify(&token, &keys, &signature_only(), 0).unwrap();
    assert_eq!(v.alg, Algorithm::ES256);
    assert_eq!(v.exp, Some(1_300_819_380));
}

#[test]
fn rfc7520_4_1_rs256() {
    let keys = jwk(json!({
        "kty": "RSA", "kid": "bilbo.baggins@hobbiton.example", "use": "sig",
        "n": RFC7520_RSA_N, "e": "AQAB"
    }));
    let token = format!("{RFC7520_41_HEADER}.{RFC7520_PAYLOAD}.{RFC7520_41_SIGNATURE}");
    assert_signature_verifies_text_payload(&token, &keys, Algorithm::RS256);
}

#[test]
fn rfc7520_4_2_ps384() {
    let keys = jwk(json!({
        "kty": "RSA", "kid": "bilbo.baggins@hobbiton.example", "use": "sig",
        "n": RFC7520_RSA_N, "e": "AQAB"
    }));
    let token = format!("{RFC7520_42_HEADER}.{RFC7520_PAYLOAD}.{RFC7520_42_SIGNATURE}");
    assert_signature_verifies_text_payload(&token, &keys, Algorithm::PS384);
}

#[test]
fn rfc7520_4_4_hs256() {
    let keys = jwk(json!({
        "kty": "oct", "kid": "018c0ae5-4d9b-471b-bfd6-eef314bc7037", "use": "sig", "alg": "HS256",
        "k": RFC7520_HMAC_K
    }));
    assert_eq!(
        keys.keys()[0].describe(),
        "HMAC 32-byte secret kid=018c0ae5-4d9b-471b-bfd6-eef314bc7037 (HS256 only)"
    );
    let token = format!("{RFC7520_44_HEADER}.{RFC7520_PAYLOAD}.{RFC7520_44_SIGNATURE}");
    assert_signature_verifies_text_payload(&token, &keys, Algorithm::HS256);
}

#[test]
fn rfc8037_a4_ed25519() {
    let keys = jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}));
    assert_eq!(keys.keys()[0].algorithms(), [Algorithm::EdDSA]);
    assert_signature_verifies_text_payload(RFC8037_A4_TOKEN, &keys, Algorithm::EdDSA);
}

#[test]
fn rfc7638_and_rfc8037_thumbprints() {
    let rfc7638 = json!({
        "kty": "RSA",
        "n": concat!(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP",
            "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY",
            "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f",
            "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(keygen::thumbprint(&rfc7638).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    let rfc8037 = json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X});
    assert_eq!(keygen::thumbprint(&rfc8037).unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

/// An SPKI PEM for an RSA modulus (e = 65537), built by hand so the PEM path is tested on the
/// RFC key too.
fn rsa_public_pem(n_b64: &str) -> String {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n_b64).unwrap();
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 128 {
            out.push(len as u8);
        } else if len < 256 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    let mut modulus = vec![0];
    modulus.extend_from_slice(&n);
    let rsa_public_key = der(0x30, &[der(0x02, &modulus), der(0x02, &[1, 0, 1])].concat());
    let mut bit_string = vec![0];
    bit_string.extend_from_slice(&rsa_public_key);
    let algorithm = der(
        0x30,
        &[der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]), vec![0x05, 0x00]].concat(),
    );
    let spki = der(0x30, &[algorithm, der(0x03, &bit_string)].concat());
    let body = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}
