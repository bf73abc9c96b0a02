//! Key pairs for `bridgehead keys generate`: PKCS#8 private PEM, SPKI public PEM and a one-key JWK
//! Set whose `kid` is the RFC 7638 thumbprint.

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;

use super::{Algorithm, KeyError, algorithm_name};

/// A freshly generated key pair and its public forms.
pub struct Generated {
    /// PKCS#8 "PRIVATE KEY" PEM.
    pub private_pem: String,
    /// SPKI "PUBLIC KEY" PEM.
    pub public_pem: String,
    /// `{"keys":[{kty, ..., kid, alg, use: "sig"}]}`.
    pub jwks: Value,
    /// RFC 7638 thumbprint of the public JWK (base64url SHA-256).
    pub kid: String,
}

/// ES256, ES384, RS256 (2048-bit; also RS384/RS512/PS* with a 2048-bit key), EdDSA.
pub fn generate(alg: Algorithm) -> Result<Generated, KeyError> {
    let failed = |what: &str| KeyError::Unsupported(format!("key generation failed: {what}"));
    let (private_der, public_der, mut jwk): (Vec<u8>, Vec<u8>, Value) = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let (signing, crv) = if alg == Algorithm::ES256 {
                (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
            } else {
                (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
            };
            let pair = EcdsaKeyPair::generate(signing).map_err(|_| failed("EC"))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| failed("EC PKCS#8"))?;
            let public: PublicKeyX509Der<'_> = pair.public_key().as_der().map_err(|_| failed("EC SPKI"))?;
            let point = pair.public_key().as_ref();
            let (x, y) = point[1..].split_at((point.len() - 1) / 2);
            let jwk = json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)});
            (pkcs8.as_ref().to_vec(), public.as_ref().to_vec(), jwk)
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| failed("RSA"))?;
            let pkcs8: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| failed("RSA PKCS#8"))?;
            let public: PublicKeyX509Der<'_> = pair.public_key().as_der().map_err(|_| failed("RSA SPKI"))?;
            // `as_ref` is the PKCS#1 RSAPublicKey: SEQUENCE { n, e }.
            let (_, rsa) =
                RSAPublicKey::from_der(pair.public_key().as_ref()).map_err(|_| failed("RSA public key"))?;
            let strip = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
            let jwk = json!({"kty": "RSA", "n": b64(&strip(rsa.modulus)), "e": b64(&strip(rsa.exponent))});
            (pkcs8.as_ref().to_vec(), public.as_ref().to_vec(), jwk)
        }
        Algorithm::EdDSA => {
            let pair = Ed25519KeyPair::generate().map_err(|_| failed("Ed25519"))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| failed("Ed25519 PKCS#8"))?;
            let public: PublicKeyX509Der<'_> =
                pair.public_key().as_der().map_err(|_| failed("Ed25519 SPKI"))?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
            (pkcs8.as_ref().to_vec(), public.as_ref().to_vec(), jwk)
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err(KeyError::Unsupported(format!(
                "{} uses a shared secret, not a key pair: use at least {} random bytes",
                algorithm_name(alg),
                super::hmac_min_len(alg).unwrap_or(32)
            )));
        }
        _ => return Err(KeyError::Unsupported(format!("cannot generate keys for {alg:?}"))),
    };
    let kid = thumbprint(&jwk).ok_or_else(|| failed("thumbprint"))?;
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), kid.clone().into());
        obj.insert("alg".into(), algorithm_name(alg).into());
        obj.insert("use".into(), "sig".into());
    }
    Ok(Generated {
        private_pem: pem("PRIVATE KEY", &private_der),
        public_pem: pem("PUBLIC KEY", &public_der),
        jwks: json!({"keys": [jwk]}),
        kid,
    })
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: the required members in
/// lexicographic order, no whitespace. `None` for a kty without a defined member set.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "EC" => serde_json::to_string(&json!({"crv": s("crv")?, "kty": "EC", "x": s("x")?, "y": s("y")?})),
        "RSA" => serde_json::to_string(&json!({"e": s("e")?, "kty": "RSA", "n": s("n")?})),
        "OKP" => serde_json::to_string(&json!({"crv": s("crv")?, "kty": "OKP", "x": s("x")?})),
        "oct" => serde_json::to_string(&json!({"k": s("k")?, "kty": "oct"})),
        _ => return None,
    }
    .ok()?;
    // Members are written in lexicographic order, so the map order (sorted or insertion) agrees.
    Some(b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref()))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7468 text encoding: 64-column base64 between BEGIN/END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
