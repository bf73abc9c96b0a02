//! Verification keys: loading JWK, JWK Sets, PEM public keys, certificates and HMAC secrets, and
//! pinning each key to the algorithms it may verify.
//!
//! Keys are parsed here rather than through `jsonwebtoken::jwk` so that one bad key in a JWK Set
//! is skipped with a reason instead of failing the whole document, and so that size and curve
//! checks happen at load, where a configuration error is reported once, not per request.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer as _, SubjectPublicKeyInfo};
use x509_parser::public_key::RSAPublicKey;

use super::{algorithm_name, clip, hmac_min_len, parse_algorithm};

use super::{HMAC as HMAC_FAMILY, RSA as RSA_FAMILY};
const RSA_MIN_BITS: usize = 2048;
/// aws-lc-rs verifies RSA signatures of 2048 to 8192 bits.
const RSA_MAX_BITS: usize = 8192;

/// One verification key, pinned to an algorithm (JWK `alg`, or the only one its type allows: EC
/// P-256 → ES256, P-384 → ES384, OKP Ed25519 → EdDSA) or to a family (RSA without `alg` → any
/// RS*/PS*; an HMAC secret → the HS* algorithms it was loaded for).
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    /// Bit set over [`bit`]: the algorithms this key may verify.
    pinned: u16,
    /// "RSA 2048-bit key", "EC P-256 key", "HMAC 32-byte secret": never the key material.
    kind: String,
    decoding: DecodingKey,
}

fn bit(alg: Algorithm) -> u16 {
    let i = match alg {
        Algorithm::HS256 => 0,
        Algorithm::HS384 => 1,
        Algorithm::HS512 => 2,
        Algorithm::ES256 => 3,
        Algorithm::ES384 => 4,
        Algorithm::RS256 => 5,
        Algorithm::RS384 => 6,
        Algorithm::RS512 => 7,
        Algorithm::PS256 => 8,
        Algorithm::PS384 => 9,
        Algorithm::PS512 => 10,
        Algorithm::EdDSA => 11,
        // Not in `SUPPORTED`: no key is ever pinned to it.
        _ => return 0,
    };
    1 << i
}

fn bits_of(algs: &[Algorithm]) -> u16 {
    algs.iter().fold(0, |acc, a| acc | bit(*a))
}

impl Key {
    fn new(kid: Option<String>, algs: &[Algorithm], kind: String, decoding: DecodingKey) -> Key {
        Key { kid, pinned: bits_of(algs), kind, decoding }
    }

    /// The key's `kid`, if it has one (JWK); PEM keys and secrets have none.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.pinned & bit(alg) != 0
    }

    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        super::SUPPORTED.into_iter().filter(|a| self.allows(*a)).collect()
    }

    /// For messages and logs, e.g. "RSA 2048-bit key kid=abc (any RS*/PS*)". Never key material.
    pub fn describe(&self) -> String {
        let kid = match &self.kid {
            Some(kid) => format!(" kid={}", clip(kid)),
            None => String::new(),
        };
        let pin = if self.pinned == bits_of(RSA_FAMILY) {
            "any RS*/PS*".to_owned()
        } else {
            let algs = self.algorithms();
            let names = algs.iter().map(|a| algorithm_name(*a)).collect::<Vec<_>>().join("/");
            if algs.len() == 1 { format!("{names} only") } else { names }
        };
        format!("{}{kid} ({pin})", self.kind)
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The keys a policy trusts. Cheap to clone (the keys are shared).
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Arc<[Key]>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

/// Why a key could not be loaded. Messages name the key (index, kid) but never its material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The document is not a JWK, a JWK Set or a PEM block of a kind we read.
    #[error("{0}")]
    Format(String),
    /// A key that cannot be used (a single JWK or PEM; in a JWK Set such keys are skipped).
    #[error("{context}: {reason}")]
    Invalid { context: String, reason: String },
    #[error("{context}: RSA key is {bits} bits; at least 2048 are required")]
    RsaTooSmall { context: String, bits: usize },
    #[error("HMAC secret is {len} bytes; {alg} needs at least {min}")]
    SecretTooShort { len: usize, alg: &'static str, min: usize },
    #[error("no usable signature verification key in the JWK Set{}", joined(.0))]
    NoUsableKeys(Vec<String>),
    /// An algorithm this operation does not support (e.g. generating an HMAC "key pair").
    #[error("{0}")]
    Unsupported(String),
    /// Signing: a private key that cannot be used for the algorithm.
    #[error("{0}")]
    PrivateKey(String),
    /// Signing: the claims are not a JSON object.
    #[error("{0}")]
    Claims(String),
}

fn joined(warnings: &[String]) -> String {
    if warnings.is_empty() { String::new() } else { format!(": {}", warnings.join("; ")) }
}

/// What `key_from_jwk` decided about one JWK: a key, or why it is skipped.
type Parsed = Result<Key, String>;

impl KeySet {
    fn from_keys(keys: Vec<Key>) -> KeySet {
        KeySet { keys: keys.into() }
    }

    /// A JWK Set document (`{"keys":[...]}`). Keys with `use: enc`, unsupported kty/crv, missing
    /// fields, RSA keys under 2048 bits and HMAC secrets too short for their algorithm are skipped
    /// and reported in the returned warnings, so that one weak or unusable key published by an
    /// identity provider does not take the other keys down with it. An empty usable set is an
    /// error that lists every reason.
    pub fn from_jwks(json: &[u8]) -> Result<(KeySet, Vec<String>), KeyError> {
        let doc: Value = serde_json::from_slice(json)
            .map_err(|e| KeyError::Format(format!("not a JWK Set: invalid JSON: {e}")))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            let hint = if doc.get("kty").is_some() { " (this looks like a single JWK)" } else { "" };
            return Err(KeyError::Format(format!("not a JWK Set: no \"keys\" array{hint}")));
        };
        let mut warnings = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            let context = match jwk.get("kid").and_then(Value::as_str) {
                Some(kid) => format!("keys[{i}] (kid {:?})", clip(kid)),
                None => format!("keys[{i}]"),
            };
            let parsed = match key_from_jwk(jwk, &context, &mut warnings) {
                Ok(parsed) => parsed,
                Err(e) => {
                    // The error already names the key.
                    warnings.push(format!("{e}; skipped"));
                    continue;
                }
            };
            match parsed {
                Ok(key) => {
                    if let Some(kid) = key.kid()
                        && keys.iter().any(|k| k.kid() == Some(kid) && k.pinned & key.pinned != 0)
                    {
                        warnings.push(format!("{context}: another key has the same kid; both are tried"));
                    }
                    keys.push(key);
                }
                Err(reason) => warnings.push(format!("{context}: {reason}; skipped")),
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKeys(warnings));
        }
        Ok((KeySet::from_keys(keys), warnings))
    }

    /// A single JWK.
    pub fn from_jwk(json: &[u8]) -> Result<KeySet, KeyError> {
        let jwk: Value = serde_json::from_slice(json)
            .map_err(|e| KeyError::Format(format!("not a JWK: invalid JSON: {e}")))?;
        if jwk.get("keys").is_some() {
            return Err(KeyError::Format("not a single JWK: this is a JWK Set (it has \"keys\")".into()));
        }
        match key_from_jwk(&jwk, "JWK", &mut Vec::new())? {
            Ok(key) => Ok(KeySet::from_keys(vec![key])),
            Err(reason) => Err(KeyError::Invalid { context: "JWK".into(), reason }),
        }
    }

    /// A PEM public key (SPKI "PUBLIC KEY", PKCS#1 "RSA PUBLIC KEY") or an X.509 certificate PEM
    /// whose public key is used (the certificate itself is not validated). The EC curve decides the
    /// algorithm; RSA is family-pinned. Only the first PEM block is read.
    pub fn from_pem(pem: &[u8]) -> Result<KeySet, KeyError> {
        let block = match x509_parser::pem::Pem::iter_from_buffer(pem).next() {
            Some(Ok(block)) => block,
            Some(Err(e)) => return Err(KeyError::Format(format!("not a valid PEM block: {e}"))),
            None => return Err(KeyError::Format("no PEM block (-----BEGIN ...-----) found".into())),
        };
        let context = format!("PEM {}", block.label);
        let invalid = |reason: String| KeyError::Invalid { context: context.clone(), reason };
        let key = match block.label.as_str() {
            "PUBLIC KEY" => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                    .map_err(|_| invalid("not a DER SubjectPublicKeyInfo".into()))?;
                key_from_spki(&spki, &context)?
            }
            "RSA PUBLIC KEY" => {
                let (_, rsa) = RSAPublicKey::from_der(&block.contents)
                    .map_err(|_| invalid("not a DER PKCS#1 RSAPublicKey".into()))?;
                rsa_key(None, None, rsa.modulus, rsa.exponent, &context)?.map_err(invalid)?
            }
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                    .map_err(|e| invalid(format!("not a valid X.509 certificate: {e}")))?;
                key_from_spki(cert.public_key(), &context)?
            }
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                return Err(invalid(
                    "this is a private key; verification needs the public key (e.g. public.pem)".into(),
                ));
            }
            other => {
                return Err(KeyError::Format(format!(
                    "PEM block {:?} is not a public key or certificate",
                    clip(other)
                )));
            }
        };
        Ok(KeySet::from_keys(vec![key]))
    }

    /// An HMAC secret for the given HS* algorithms (non-HS algorithms in the list are ignored; if
    /// none are HS*, error). Too short for any of them → an error naming the minimum length.
    pub fn from_secret(secret: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, KeyError> {
        let hs: Vec<Algorithm> = algorithms.iter().copied().filter(|a| HMAC_FAMILY.contains(a)).collect();
        if hs.is_empty() {
            return Err(KeyError::Unsupported(
                "an HMAC secret verifies only HS256, HS384 or HS512, and none of them is listed".into(),
            ));
        }
        check_secret(secret.len(), &hs)?;
        let kind = format!("HMAC {}-byte secret", secret.len());
        Ok(KeySet::from_keys(vec![Key::new(None, &hs, kind, DecodingKey::from_secret(secret))]))
    }

    /// For the command line: detects a JWK Set, a single JWK or PEM.
    pub fn parse_any(bytes: &[u8]) -> Result<(KeySet, Vec<String>), KeyError> {
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"{") {
            let doc: Value = serde_json::from_slice(bytes)
                .map_err(|e| KeyError::Format(format!("not a JWK or JWK Set: invalid JSON: {e}")))?;
            return if doc.get("keys").is_some() {
                KeySet::from_jwks(bytes)
            } else {
                Ok((KeySet::from_jwk(bytes)?, Vec::new()))
            };
        }
        if text.windows(11).any(|w| w == b"-----BEGIN ") {
            return Ok((KeySet::from_pem(bytes)?, Vec::new()));
        }
        Err(KeyError::Format("not a JWK, a JWK Set or a PEM public key".into()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The kids of the keys that have one, in order.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Every algorithm some key allows (the default allow-list of `jwt verify`).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let all = self.keys.iter().fold(0, |acc, k| acc | k.pinned);
        super::SUPPORTED.into_iter().filter(|a| all & bit(*a) != 0).collect()
    }

    /// This set's keys followed by `other`'s (for a policy with several key sources).
    pub fn merged(&self, other: &KeySet) -> KeySet {
        KeySet::from_keys(self.keys.iter().chain(other.keys.iter()).cloned().collect())
    }
}

/// Refuses a secret shorter than the hash output of any listed HS* algorithm.
pub(crate) fn check_secret(len: usize, hs: &[Algorithm]) -> Result<(), KeyError> {
    let strictest = hs.iter().filter_map(|a| hmac_min_len(*a).map(|m| (*a, m))).max_by_key(|(_, m)| *m);
    match strictest {
        Some((alg, min)) if len < min => Err(KeyError::SecretTooShort { len, alg: algorithm_name(alg), min }),
        _ => Ok(()),
    }
}

/// Base64url key material from a JWK member. Trailing `=` is tolerated here (keys are
/// configuration), unlike in tokens.
fn member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    match obj.get(name) {
        None => Err(format!("missing \"{name}\"")),
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| format!("\"{name}\" is not base64url")),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// One JWK → a key, a skip reason, or an error that must stop loading (a weak key).
fn key_from_jwk(jwk: &Value, context: &str, warnings: &mut Vec<String>) -> Result<Parsed, KeyError> {
    let Some(obj) = jwk.as_object() else { return Ok(Err("not a JSON object".into())) };
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Ok(Err("\"kid\" is not a string".into())),
    };
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(u)) => return Ok(Err(format!("\"use\" is {:?}, not \"sig\"", clip(u)))),
        Some(_) => return Ok(Err("\"use\" is not a string".into())),
    }
    if let Some(ops) = obj.get("key_ops")
        && !ops.as_array().is_some_and(|a| a.iter().any(|o| o == "verify"))
    {
        return Ok(Err("\"key_ops\" does not include \"verify\"".into()));
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(a)) => match parse_algorithm(a) {
            Ok(alg) => Some(alg),
            Err(e) => return Ok(Err(format!("alg: {e}"))),
        },
        Some(_) => return Ok(Err("\"alg\" is not a string".into())),
    };
    let kty = match obj.get("kty") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Ok(Err("\"kty\" is not a string".into())),
        None => return Ok(Err("missing \"kty\"".into())),
    };
    if kty != "oct" && ["d", "p", "q"].iter().any(|m| obj.contains_key(*m)) {
        warnings.push(format!("{context}: contains private key material; only the public part is used"));
    }
    let context = context.to_owned();
    let parsed = match kty {
        "RSA" => {
            let (n, e) = match (member(obj, "n"), member(obj, "e")) {
                (Ok(n), Ok(e)) => (n, e),
                (Err(r), _) | (_, Err(r)) => return Ok(Err(r)),
            };
            rsa_key(kid, alg, &n, &e, &context)?
        }
        "EC" => {
            let crv = obj.get("crv").and_then(Value::as_str).unwrap_or_default();
            let (x, y) = match (member(obj, "x"), member(obj, "y")) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(r), _) | (_, Err(r)) => return Ok(Err(r)),
            };
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ec_key(kid, alg, crv, &point, x.len() == y.len())
        }
        "OKP" => match obj.get("crv").and_then(Value::as_str) {
            Some("Ed25519") => match member(obj, "x") {
                Ok(x) => ed_key(kid, alg, &x),
                Err(r) => Err(r),
            },
            Some(crv) => Err(format!("OKP curve {:?} is not supported (only Ed25519)", clip(crv))),
            None => Err("missing \"crv\"".into()),
        },
        "oct" => {
            let k = match member(obj, "k") {
                Ok(k) => k,
                Err(r) => return Ok(Err(r)),
            };
            let algs: Vec<Algorithm> = match alg {
                Some(a) if HMAC_FAMILY.contains(&a) => vec![a],
                Some(a) => return Ok(Err(format!("alg {} does not fit kty \"oct\"", algorithm_name(a)))),
                None => {
                    check_secret(k.len(), &[Algorithm::HS256])?;
                    HMAC_FAMILY
                        .iter()
                        .copied()
                        .filter(|a| hmac_min_len(*a).is_some_and(|m| k.len() >= m))
                        .collect()
                }
            };
            check_secret(k.len(), &algs)?;
            let kind = format!("HMAC {}-byte secret", k.len());
            Ok(Key::new(kid, &algs, kind, DecodingKey::from_secret(&k)))
        }
        other => Err(format!("kty {:?} is not supported", clip(other))),
    };
    Ok(parsed)
}

/// Bit length of a big-endian unsigned integer, leading zero bytes ignored.
fn bit_len(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    match n.first() {
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn rsa_key(
    kid: Option<String>,
    alg: Option<Algorithm>,
    n: &[u8],
    e: &[u8],
    context: &str,
) -> Result<Parsed, KeyError> {
    if let Some(a) = alg
        && !RSA_FAMILY.contains(&a)
    {
        return Ok(Err(format!("alg {} does not fit an RSA key", algorithm_name(a))));
    }
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    let e = &e[e.iter().take_while(|b| **b == 0).count()..];
    let bits = bit_len(n);
    if bits < RSA_MIN_BITS {
        return Err(KeyError::RsaTooSmall { context: context.to_owned(), bits });
    }
    if bits > RSA_MAX_BITS {
        return Ok(Err(format!("RSA key is {bits} bits; at most {RSA_MAX_BITS} are supported")));
    }
    let components = aws_lc_rs::rsa::PublicKeyComponents { n, e };
    if components.to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256).is_err() {
        return Ok(Err("not a valid RSA public key".into()));
    }
    let algs = match alg {
        Some(a) => vec![a],
        None => RSA_FAMILY.to_vec(),
    };
    let kind = format!("RSA {bits}-bit key");
    Ok(Ok(Key::new(kid, &algs, kind, DecodingKey::from_rsa_raw_components(n, e))))
}

/// `point` is the uncompressed SEC1 point (0x04 ‖ x ‖ y).
fn ec_key(kid: Option<String>, alg: Option<Algorithm>, crv: &str, point: &[u8], same_len: bool) -> Parsed {
    let (curve_alg, coord, verifier) = match crv {
        "P-256" => (Algorithm::ES256, 32, &ECDSA_P256_SHA256_FIXED),
        "P-384" => (Algorithm::ES384, 48, &ECDSA_P384_SHA384_FIXED),
        "P-521" => return Err("curve P-521 (ES512) is not supported".into()),
        "" => return Err("missing \"crv\"".into()),
        other => return Err(format!("EC curve {:?} is not supported (P-256 and P-384 are)", clip(other))),
    };
    if let Some(a) = alg
        && a != curve_alg
    {
        return Err(format!("alg {} does not fit curve {crv}", algorithm_name(a)));
    }
    if !same_len || point.len() != 1 + 2 * coord {
        return Err(format!("x and y must be {coord} bytes each for {crv}"));
    }
    if ParsedPublicKey::new(verifier, point).is_err() {
        return Err(format!("the point is not on curve {crv}"));
    }
    Ok(Key::new(kid, &[curve_alg], format!("EC {crv} key"), DecodingKey::from_ec_der(point)))
}

fn ed_key(kid: Option<String>, alg: Option<Algorithm>, x: &[u8]) -> Parsed {
    if let Some(a) = alg
        && a != Algorithm::EdDSA
    {
        return Err(format!("alg {} does not fit an Ed25519 key", algorithm_name(a)));
    }
    if x.len() != 32 || ParsedPublicKey::new(&ED25519, x).is_err() {
        return Err("not a valid Ed25519 public key (x must be 32 bytes)".into());
    }
    Ok(Key::new(kid, &[Algorithm::EdDSA], "Ed25519 key".into(), DecodingKey::from_ed_der(x)))
}

fn key_from_spki(spki: &SubjectPublicKeyInfo<'_>, context: &str) -> Result<Key, KeyError> {
    let invalid = |reason: String| KeyError::Invalid { context: context.to_owned(), reason };
    let oid = &spki.algorithm.algorithm;
    let data: &[u8] = &spki.subject_public_key.data;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let (_, rsa) =
            RSAPublicKey::from_der(data).map_err(|_| invalid("not a valid RSA public key".into()))?;
        return rsa_key(None, None, rsa.modulus, rsa.exponent, context)?.map_err(invalid);
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        let crv = match curve {
            Some(c) if c == OID_EC_P256 => "P-256",
            Some(c) if c == OID_NIST_EC_P384 => "P-384",
            Some(c) => return Err(invalid(format!("EC curve {c} is not supported (P-256 and P-384 are)"))),
            None => return Err(invalid("EC key without a named curve".into())),
        };
        if data.first() != Some(&4) {
            return Err(invalid("only uncompressed EC points are supported".into()));
        }
        return ec_key(None, None, crv, data, true).map_err(invalid);
    }
    if *oid == OID_SIG_ED25519 {
        return ed_key(None, None, data).map_err(invalid);
    }
    Err(invalid(format!("public key algorithm {oid} is not supported (RSA, EC P-256/P-384, Ed25519 are)")))
}
