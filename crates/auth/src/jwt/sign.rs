//! Signing tokens: a PEM private key (or an HMAC secret) in, a compact JWS out. Used by the
//! command line, the tests, and the built-in authorization server (through [`Signer`]).

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm,
    Ed25519KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use super::keys::check_secret;
use super::{KeyError, algorithm_name};

/// Signs claims. `key` is a PEM private key (PKCS#8, or SEC1 EC / PKCS#1 RSA) for RS*/PS*/ES*/EdDSA,
/// or the raw secret bytes for HS*. Sets header `alg`, `typ` "JWT" unless `typ` is given, and
/// `kid` if given.
pub fn sign(
    claims: &Value,
    key: &[u8],
    alg: Algorithm,
    kid: Option<&str>,
    typ: Option<&str>,
) -> Result<String, KeyError> {
    Signer::new(key, alg, kid, typ)?.sign(claims)
}

/// A private key parsed once, with its header encoded once, for signing many tokens (the
/// built-in authorization server).
pub struct Signer {
    encoding: EncodingKey,
    alg: Algorithm,
    header_b64: String,
}

impl Signer {
    /// See [`sign`] for the key forms.
    pub fn new(key: &[u8], alg: Algorithm, kid: Option<&str>, typ: Option<&str>) -> Result<Self, KeyError> {
        let encoding = encoding_key(key, alg)?;
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), algorithm_name(alg).into());
        header.insert("typ".into(), typ.unwrap_or("JWT").into());
        if let Some(kid) = kid {
            header.insert("kid".into(), kid.into());
        }
        let header = serde_json::to_vec(&header).map_err(|e| KeyError::Claims(e.to_string()))?;
        Ok(Self { encoding, alg, header_b64: URL_SAFE_NO_PAD.encode(header) })
    }

    /// A compact JWS of `claims` (a JSON object).
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        if !claims.is_object() {
            return Err(KeyError::Claims("the claims must be a JSON object".into()));
        }
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Claims(e.to_string()))?;
        let message = format!("{}.{}", self.header_b64, URL_SAFE_NO_PAD.encode(payload));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg)
            .map_err(|e| KeyError::PrivateKey(format!("signing failed: {e}")))?;
        Ok(format!("{message}.{signature}"))
    }
}

/// What kind of private key a PEM block holds, for precise messages.
fn private_der(pem: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
    match x509_parser::pem::Pem::iter_from_buffer(pem).next() {
        Some(Ok(block)) => Ok((block.label, block.contents)),
        Some(Err(e)) => Err(KeyError::PrivateKey(format!("not a valid PEM block: {e}"))),
        None => Err(KeyError::PrivateKey("no PEM private key (-----BEGIN PRIVATE KEY-----) found".into())),
    }
}

/// Names the key type of a PKCS#8 document, for "this PEM holds ..." messages.
fn pkcs8_kind(der: &[u8]) -> Option<&'static str> {
    if aws_lc_rs::rsa::KeyPair::from_pkcs8(der).is_ok() {
        Some("an RSA key")
    } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok() {
        Some("an EC P-256 key")
    } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der).is_ok() {
        Some("an EC P-384 key")
    } else if Ed25519KeyPair::from_pkcs8(der).is_ok() {
        Some("an Ed25519 key")
    } else {
        None
    }
}

fn encoding_key(key: &[u8], alg: Algorithm) -> Result<EncodingKey, KeyError> {
    let name = algorithm_name(alg);
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        check_secret(key.len(), &[alg])?;
        return Ok(EncodingKey::from_secret(key));
    }
    let (label, der) = private_der(key)?;
    let wrong =
        |what: &str| KeyError::PrivateKey(format!("{name} needs {}; this PEM holds {what}", needs(alg)));
    match label.as_str() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => {
            return Err(KeyError::PrivateKey(
                "encrypted private keys are not supported; decrypt it first (openssl pkcs8 -nocrypt)".into(),
            ));
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {
            return Err(KeyError::PrivateKey(format!(
                "this is a {}; signing needs the private key",
                label.to_lowercase()
            )));
        }
        other => return Err(KeyError::PrivateKey(format!("PEM block {other:?} is not a private key"))),
    }
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let pair = match label.as_str() {
                "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(&der),
                "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(&der),
                _ => return Err(wrong("an EC key")),
            };
            if let Err(e) = pair {
                return Err(match pkcs8_kind(&der) {
                    Some(kind) if label == "PRIVATE KEY" => wrong(kind),
                    _ => {
                        KeyError::PrivateKey(format!("not a usable RSA private key (2048 to 8192 bits): {e}"))
                    }
                });
            }
            // jsonwebtoken signs with the PKCS#1 form; it extracts it from PKCS#8 itself.
            EncodingKey::from_rsa_pem(key)
                .map_err(|e| KeyError::PrivateKey(format!("cannot read the RSA key: {e}")))
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let (signing, other, curve): (
                &'static EcdsaSigningAlgorithm,
                &'static EcdsaSigningAlgorithm,
                &str,
            ) = if alg == Algorithm::ES256 {
                (&ECDSA_P256_SHA256_FIXED_SIGNING, &ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
            } else {
                (&ECDSA_P384_SHA384_FIXED_SIGNING, &ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
            };
            if label == "RSA PRIVATE KEY" {
                return Err(wrong("an RSA key"));
            }
            match EcdsaKeyPair::from_private_key_der(signing, &der) {
                Ok(pair) => {
                    // SEC1 or PKCS#8 in, PKCS#8 out: what jsonwebtoken's signer reads.
                    let pkcs8 = pair
                        .to_pkcs8v1()
                        .map_err(|_| KeyError::PrivateKey("cannot re-encode the EC key".into()))?;
                    Ok(EncodingKey::from_ec_der(pkcs8.as_ref()))
                }
                Err(_) if EcdsaKeyPair::from_private_key_der(other, &der).is_ok() => {
                    Err(wrong(&format!("an EC {curve} key")))
                }
                Err(e) => Err(match pkcs8_kind(&der) {
                    Some(kind) => wrong(kind),
                    None => KeyError::PrivateKey(format!("not a usable EC private key: {e}")),
                }),
            }
        }
        Algorithm::EdDSA => {
            if label != "PRIVATE KEY" {
                return Err(wrong(&format!("a {}", label.to_lowercase())));
            }
            match Ed25519KeyPair::from_pkcs8(&der) {
                Ok(_) => Ok(EncodingKey::from_ed_der(&der)),
                Err(_) => Err(match pkcs8_kind(&der) {
                    Some(kind) => wrong(kind),
                    None => KeyError::PrivateKey("not a usable Ed25519 private key".into()),
                }),
            }
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Ok(EncodingKey::from_secret(key)),
        _ => Err(KeyError::Unsupported(format!("cannot sign with {alg:?}"))),
    }
}

fn needs(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "an EC P-256 private key",
        Algorithm::ES384 => "an EC P-384 private key",
        Algorithm::EdDSA => "an Ed25519 private key",
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "an HMAC secret",
        _ => "an RSA private key",
    }
}
