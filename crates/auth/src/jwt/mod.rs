//! JWT verification against keys that come only from configuration, plus signing and key
//! generation for the command line.
//!
//! The cryptography is `jsonwebtoken`'s (`crypto::verify` / `crypto::sign` over aws-lc-rs); what
//! is written here is the policy around it, because the crate's own `decode` does not give the
//! guarantees RFC 8725 asks for nor the precise refusal reasons the gateway reports:
//!
//! - `alg: none`, in any capitalisation, is always refused ([`Rejection::AlgNone`]).
//! - Each [`Key`] is pinned when it is loaded: to the JWK's `alg`, to the only algorithm its curve
//!   allows, to the RSA family, or to the HS* algorithms an HMAC secret was loaded for. A token is
//!   checked only against keys that allow its `alg`, so an HS256 token can never be checked against
//!   an RSA or EC key's bytes used as an HMAC secret.
//! - The `jwk`, `jku` and `x5u` header parameters are refused; `x5c` and `x5t` are ignored (never
//!   used to find a key); `crit` is refused because no extension is understood.
//! - RSA keys under 2048 bits and HMAC secrets shorter than the hash output are refused at load.
//! - Messages never contain the token or a secret; claim values are quoted at most 64 characters.
//!
//! Invariant: nothing in this module fetches a key: URLs (a JWKS endpoint) are the caller's job.

pub mod keygen;
mod keys;
mod sign;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

pub use jsonwebtoken::Algorithm;
pub use keys::{Key, KeyError, KeySet};
pub use sign::{Signer, sign};
pub use verify::{decode_unverified, verify};

/// Every algorithm this module verifies and signs, in the order they are listed to people.
pub const SUPPORTED: [Algorithm; 12] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
];

/// The asymmetric algorithms: RS*, PS*, ES256, ES384, EdDSA.
pub const ASYMMETRIC: &[Algorithm] = SUPPORTED.as_slice().split_at(9).0;
/// The HMAC algorithms: HS256, HS384, HS512.
pub const HMAC: &[Algorithm] = SUPPORTED.as_slice().split_at(9).1;
/// The RSA algorithms (RS* and PS*), which any RSA key without `alg` may verify.
pub const RSA: &[Algorithm] = SUPPORTED.as_slice().split_at(6).0;

/// The RFC 7518 / RFC 8037 name of an algorithm, as it appears in a JOSE header.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // `Algorithm` is non-exhaustive; a variant added upstream is not supported until listed.
        _ => "unsupported",
    }
}

/// Parses an RFC 7518 algorithm name ("RS256", "ES256", "EdDSA", "HS256", ...); "none" and unknown
/// names are errors with a precise message.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if let Some(alg) = SUPPORTED.into_iter().find(|a| algorithm_name(*a) == name) {
        return Ok(alg);
    }
    let list = || SUPPORTED.iter().map(|a| algorithm_name(*a)).collect::<Vec<_>>().join(", ");
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm \"none\" (unsigned tokens) is never accepted".into());
    }
    if let Some(alg) = SUPPORTED.into_iter().find(|a| algorithm_name(*a).eq_ignore_ascii_case(name)) {
        return Err(format!(
            "unknown algorithm {:?}: names are case-sensitive; did you mean {}?",
            clip(name),
            algorithm_name(alg)
        ));
    }
    if matches!(name, "ES512" | "ES256K" | "Ed25519" | "Ed448") {
        return Err(format!("algorithm {name} is not supported; supported: {}", list()));
    }
    Err(format!("unknown algorithm {:?}; supported: {}", clip(name), list()))
}

/// Minimum HMAC secret length for an HS* algorithm: the hash output size (RFC 7518 §3.2).
pub(crate) fn hmac_min_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

/// How a token is checked besides its signature.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Allow-list of algorithms: a token whose `alg` is not in it is refused. Empty means "every
    /// algorithm some loaded key is pinned to" (each key still accepts only its own).
    pub algorithms: Vec<Algorithm>,
    /// Exact match of `iss`, which is then required.
    pub issuer: Option<String>,
    /// Any-of match against `aud` (a string or an array); `aud` is required when non-empty.
    pub audiences: Vec<String>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// Required header `typ` (e.g. "at+jwt"), compared case-insensitively; an "application/"
    /// prefix on either side is ignored (RFC 7515 §4.1.9, RFC 8725 §3.11).
    pub typ: Option<String>,
    /// Longer tokens are refused before any decoding.
    pub max_token_bytes: usize,
    /// Check only the signature: no time or registered-claim checks (`jwt verify --signature-only`).
    pub signature_only: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            algorithms: Vec::new(),
            issuer: None,
            audiences: Vec::new(),
            leeway: 30,
            require_exp: true,
            typ: None,
            max_token_bytes: 16 * 1024,
            signature_only: false,
        }
    }
}

/// A token whose signature and claims passed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: serde_json::Map<String, serde_json::Value>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub alg: Algorithm,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// `exp`, when present and a number.
    pub exp: Option<u64>,
}

impl Verified {
    /// The granted scopes: `scope` (space-separated string, RFC 8693 / RFC 9068), else `scp` (an
    /// array of strings or a space-separated string, as some issuers send).
    pub fn scopes(&self) -> Vec<String> {
        fn words(s: &str) -> Vec<String> {
            s.split_ascii_whitespace().map(str::to_owned).collect()
        }
        match (self.claims.get("scope"), self.claims.get("scp")) {
            (Some(serde_json::Value::String(s)), _) => words(s),
            (_, Some(serde_json::Value::String(s))) => words(s),
            (_, Some(serde_json::Value::Array(a))) => {
                a.iter().filter_map(|v| v.as_str()).flat_map(words).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The `sub` claim, if it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(|v| v.as_str())
    }
}

/// Why a token was refused. `Display` gives a one-line description without the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("JWS JSON serialization is not accepted: only the compact serialization is accepted")]
    JsonSerialization,
    #[error("alg \"none\" (an unsigned token) is never accepted")]
    AlgNone,
    #[error("algorithm {0:?} is not allowed")]
    AlgNotAllowed(String),
    #[error("header parameter `{0}` is refused: keys come only from configuration")]
    EmbeddedKey(String),
    #[error("{}", unknown_kid_message(.0))]
    UnknownKid(Option<String>),
    #[error("alg {alg} does not match the key the token names: {key}")]
    AlgKeyMismatch { alg: String, key: String },
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired {} s ago (exp {exp}, now {now})", gap(.exp, .now))]
    Expired { exp: u64, now: u64 },
    #[error("token is not valid yet: nbf is {} s in the future (nbf {nbf}, now {now})", gap(.now, .nbf))]
    NotYetValid { nbf: u64, now: u64 },
    #[error("token was issued in the future: iat is {} s ahead (iat {iat}, now {now})", gap(.now, .iat))]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("required claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("claim `{claim}` is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    #[error("issuer {actual:?} is not the expected {expected:?}")]
    WrongIssuer { expected: String, actual: String },
    #[error("the token's aud names none of the accepted audiences")]
    WrongAudience,
    #[error("header typ is missing or not the required type")]
    WrongType,
    #[error("header parameter `crit` names extensions this verifier does not understand")]
    CritUnsupported,
}

impl Rejection {
    /// Stable short code for metrics and problem details.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::JsonSerialization => "json_serialization",
            Rejection::AlgNone => "alg_none",
            Rejection::AlgNotAllowed(_) => "alg_not_allowed",
            Rejection::EmbeddedKey(_) => "embedded_key",
            Rejection::UnknownKid(_) => "unknown_kid",
            Rejection::AlgKeyMismatch { .. } => "alg_key_mismatch",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired { .. } => "expired",
            Rejection::NotYetValid { .. } => "not_yet_valid",
            Rejection::IssuedInFuture { .. } => "issued_in_future",
            Rejection::MissingClaim(_) => "missing_claim",
            Rejection::InvalidClaim { .. } => "invalid_claim",
            Rejection::WrongIssuer { .. } => "wrong_issuer",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::WrongType => "wrong_type",
            Rejection::CritUnsupported => "crit_unsupported",
        }
    }
}

fn unknown_kid_message(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!("no configured key has kid {kid:?}"),
        None => "the token has no kid and no configured key accepts its algorithm".to_owned(),
    }
}

/// Seconds from `earlier` to `later`, for messages.
fn gap(earlier: &u64, later: &u64) -> u64 {
    later.saturating_sub(*earlier)
}

/// At most 64 characters of a value that came from a token or a file, for messages.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
