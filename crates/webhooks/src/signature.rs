//! Webhook signatures: how each provider signs a delivery, and how a receiver checks one.
//!
//! | scheme | signature header | signed content | MAC | key |
//! |---|---|---|---|---|
//! | `standard` ([Standard Webhooks]) | `webhook-signature: v1,<b64> v1a,<b64> …` | `{id}.{timestamp}.{body}` | v1 HMAC-SHA256, v1a Ed25519 | `whsec_` + base64 (HMAC), `whpk_`/`whsk_` + base64 (Ed25519 public/secret) |
//! | `stripe` | `Stripe-Signature: t=<ts>,v1=<hex>,…` | `{t}.{body}` | HMAC-SHA256, hex | the secret string's bytes (`whsec_…` included) |
//! | `github` | `X-Hub-Signature-256: sha256=<hex>` | `{body}` | HMAC-SHA256, hex | the secret's bytes |
//! | `slack` | `X-Slack-Signature: v0=<hex>` + `X-Slack-Request-Timestamp` | `v0:{ts}:{body}` | HMAC-SHA256, hex | the signing secret's bytes |
//! | `hmac` | configurable header and prefix | a template over `{id}`, `{timestamp}`, `{body}` | HMAC-SHA256/512, hex or base64 | the secret's bytes |
//!
//! - The raw body bytes are verified as received, never re-serialized JSON.
//! - Every comparison of a computed MAC with a received one is constant-time.
//! - A header may carry several signatures (Standard Webhooks, Stripe), and a verifier may hold
//!   several keys (a secret being rotated): any key matching any signature passes.
//! - Schemes that sign a timestamp refuse one further than the tolerance from now, in either
//!   direction (an old delivery replayed, or a clock far ahead).
//! - Stripe's `v0` signatures and unknown Standard Webhooks versions are ignored, as the
//!   providers' own libraries do.
//!
//! Written here rather than taken from a crate: the providers' SDKs are per provider and per
//! language, and no Rust crate covers these schemes together on one MAC implementation
//! (aws-lc-rs, already the TLS provider).
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::fmt;
use std::time::Duration;

use aws_lc_rs::{hmac, signature as sig};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq as _;

/// The default timestamp tolerance (Standard Webhooks, Stripe and Slack all say five minutes).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

pub mod names {
    use http::HeaderName;

    pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    pub const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
    pub const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
    pub const GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
    pub const SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
    pub const SLACK_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
}

/// The MAC of an `hmac` scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// How an `hmac` scheme writes its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => B64.encode(bytes),
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Hex => hex::decode(text).ok(),
            Encoding::Base64 => B64.decode(text).ok(),
        }
    }
}

/// What an `hmac` scheme signs: literal text around `{id}`, `{timestamp}` and `{body}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Id,
    Timestamp,
    Body,
}

impl Template {
    /// Parses `{timestamp}.{body}` and the like. `{body}` must appear exactly once; `{{` and
    /// `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("{{") {
                lit.push('{');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("}}") {
                lit.push('}');
                rest = r;
            } else if c == '{' {
                let end = rest.find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
                let part = match &rest[1..end] {
                    "id" => Part::Id,
                    "timestamp" => Part::Timestamp,
                    "body" => Part::Body,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}}: use {{id}}, {{timestamp}} or {{body}}"
                        ));
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!("unmatched '}}' in {text:?} (write '}}}}' for a literal brace)"));
            } else {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        match parts.iter().filter(|p| **p == Part::Body).count() {
            1 => Ok(Self(parts)),
            0 => Err(format!("{text:?} does not sign {{body}}")),
            _ => Err(format!("{text:?} names {{body}} more than once")),
        }
    }

    pub fn uses(&self, what: &str) -> bool {
        let want = match what {
            "id" => Part::Id,
            "timestamp" => Part::Timestamp,
            _ => Part::Body,
        };
        self.0.contains(&want)
    }

    fn mac(&self, ctx: &mut hmac::Context, id: &str, timestamp: &str, body: &[u8]) {
        for p in &self.0 {
            ctx.update(match p {
                Part::Text(t) => t.as_bytes(),
                Part::Id => id.as_bytes(),
                Part::Timestamp => timestamp.as_bytes(),
                Part::Body => body,
            });
        }
    }
}

/// A custom HMAC scheme (`verify.scheme: hmac`).
#[derive(Debug, Clone)]
pub struct HmacScheme {
    /// The header carrying the signature.
    pub header: HeaderName,
    /// Text before the encoded MAC in that header (`sha256=`), if any.
    pub prefix: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub content: Template,
    /// The header carrying the signed timestamp (Unix seconds), when `content` has `{timestamp}`.
    pub timestamp_header: Option<HeaderName>,
    /// The header carrying the message id, when `content` has `{id}`.
    pub id_header: Option<HeaderName>,
}

impl HmacScheme {
    /// Checks that every placeholder of `content` has a header to travel in, and that the
    /// prefix is header-safe.
    pub fn check(&self) -> Result<(), String> {
        if self.content.uses("timestamp") && self.timestamp_header.is_none() {
            return Err("content signs {timestamp}: set timestamp_header".into());
        }
        if self.content.uses("id") && self.id_header.is_none() {
            return Err("content signs {id}: set id_header".into());
        }
        if !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("prefix {:?} must be visible ASCII without spaces", self.prefix));
        }
        Ok(())
    }
}

/// How deliveries are signed.
#[derive(Debug, Clone)]
pub enum Scheme {
    Standard,
    Stripe,
    Github,
    Slack,
    Hmac(Box<HmacScheme>),
}

impl Scheme {
    /// The scheme's name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Slack => "slack",
            Scheme::Hmac(_) => "hmac",
        }
    }

    /// The header that carries the signature.
    pub fn signature_header(&self) -> HeaderName {
        match self {
            Scheme::Standard => names::WEBHOOK_SIGNATURE,
            Scheme::Stripe => names::STRIPE_SIGNATURE,
            Scheme::Github => names::GITHUB_SIGNATURE,
            Scheme::Slack => names::SLACK_SIGNATURE,
            Scheme::Hmac(h) => h.header.clone(),
        }
    }

    /// The headers whose values are secret-derived and must not be stored or shown as is.
    pub fn signature_headers(&self) -> Vec<HeaderName> {
        match self {
            // GitHub still sends the legacy SHA-1 signature beside the SHA-256 one.
            Scheme::Github => vec![self.signature_header(), HeaderName::from_static("x-hub-signature")],
            _ => vec![self.signature_header()],
        }
    }
}

/// A key of a verifier or signer.
#[derive(Clone)]
pub enum Key {
    /// An HMAC key.
    Hmac(Vec<u8>),
    /// An Ed25519 public key (Standard Webhooks v1a, `whpk_`): verifies only.
    Ed25519Public(Vec<u8>),
    /// An Ed25519 private key (Standard Webhooks v1a, `whsk_`): signs, and verifies with its
    /// public half.
    Ed25519Secret(std::sync::Arc<sig::Ed25519KeyPair>),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Key::Hmac(_) => "Key::Hmac(..)",
            Key::Ed25519Public(_) => "Key::Ed25519Public(..)",
            Key::Ed25519Secret(_) => "Key::Ed25519Secret(..)",
        })
    }
}

/// Why a verifier or signer cannot be made from its settings and secrets (never contains a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl Key {
    /// Reads a secret as `scheme` understands it. Standard Webhooks: `whsec_` + base64 (also
    /// plain base64, as its libraries accept), `whpk_` + base64 of a 32-byte Ed25519 public
    /// key, `whsk_` + base64 of a 32-byte seed or a 64-byte seed and public key. The others:
    /// the secret's bytes as written.
    pub fn parse(scheme: &Scheme, secret: &str) -> Result<Key, KeyError> {
        if secret.is_empty() {
            return Err(KeyError("the secret is empty".into()));
        }
        if !matches!(scheme, Scheme::Standard) {
            return Ok(Key::Hmac(secret.as_bytes().to_vec()));
        }
        let b64 = |s: &str, what: &str| {
            B64.decode(s).map_err(|_| KeyError(format!("{what} is not valid base64 after its prefix")))
        };
        if let Some(pk) = secret.strip_prefix("whpk_") {
            let bytes = b64(pk, "a whpk_ public key")?;
            if bytes.len() != 32 {
                return Err(KeyError(format!("a whpk_ public key has 32 bytes, not {}", bytes.len())));
            }
            return Ok(Key::Ed25519Public(bytes));
        }
        if let Some(sk) = secret.strip_prefix("whsk_") {
            let bytes = b64(sk, "a whsk_ secret key")?;
            let pair = match bytes.len() {
                32 => sig::Ed25519KeyPair::from_seed_unchecked(&bytes),
                64 => sig::Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
                n => return Err(KeyError(format!("a whsk_ secret key has 32 or 64 bytes, not {n}"))),
            }
            .map_err(|_| KeyError("a whsk_ secret key is not a valid Ed25519 key".into()))?;
            return Ok(Key::Ed25519Secret(std::sync::Arc::new(pair)));
        }
        let bytes = b64(secret.strip_prefix("whsec_").unwrap_or(secret), "a whsec_ secret")?;
        if bytes.is_empty() {
            return Err(KeyError("a whsec_ secret decodes to no bytes".into()));
        }
        Ok(Key::Hmac(bytes))
    }

    fn hmac_key(&self, alg: hmac::Algorithm) -> Option<hmac::Key> {
        match self {
            Key::Hmac(k) => Some(hmac::Key::new(alg, k)),
            _ => None,
        }
    }
}

/// Why a delivery's signature was refused. `header` names the header at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header}: {reason}")]
pub struct VerifyError {
    pub header: HeaderName,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed(String),
    /// The signed timestamp is older than the tolerance.
    Expired {
        age_secs: i64,
        tolerance_secs: u64,
    },
    /// The signed timestamp is further ahead than the tolerance.
    InFuture {
        ahead_secs: i64,
        tolerance_secs: u64,
    },
    /// Well-formed signatures, none made with a configured key.
    NoMatch,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing => f.write_str("missing"),
            Reason::Malformed(why) => write!(f, "malformed: {why}"),
            Reason::Expired { age_secs, tolerance_secs } => {
                write!(f, "timestamp expired: {age_secs} s old, the tolerance is {tolerance_secs} s")
            }
            Reason::InFuture { ahead_secs, tolerance_secs } => write!(
                f,
                "timestamp in the future: {ahead_secs} s ahead, the tolerance is {tolerance_secs} s"
            ),
            Reason::NoMatch => f.write_str("no signature matches a configured secret"),
        }
    }
}

impl Reason {
    /// A short stable label (metrics, dead-letter reasons).
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed(_) => "malformed",
            Reason::Expired { .. } => "expired",
            Reason::InFuture { .. } => "in_future",
            Reason::NoMatch => "no_match",
        }
    }
}

/// What a verified delivery said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The message id the scheme signs or sends (`webhook-id`, `X-GitHub-Delivery`, the `hmac`
    /// id header); Stripe's and Slack's ids are in the body.
    pub id: Option<String>,
    /// The signed timestamp, Unix seconds.
    pub timestamp: Option<i64>,
    /// Which configured key matched (0 = the first).
    pub key: usize,
}

/// Checks deliveries of one scheme against one or more keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub scheme: Scheme,
    keys: Vec<Key>,
    tolerance: Duration,
}

fn err(header: &HeaderName, reason: Reason) -> VerifyError {
    VerifyError { header: header.clone(), reason }
}

fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, VerifyError> {
    let v = headers.get(name).ok_or_else(|| err(name, Reason::Missing))?;
    let s = v.to_str().map_err(|_| err(name, Reason::Malformed("not visible ASCII".into())))?;
    match s.trim() {
        "" => Err(err(name, Reason::Missing)),
        s => Ok(s),
    }
}

impl Verifier {
    /// A verifier for `scheme` with `keys` (at least one; several while a secret rotates).
    pub fn new(scheme: Scheme, keys: Vec<Key>, tolerance: Duration) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError("at least one secret is needed".into()));
        }
        if !matches!(scheme, Scheme::Standard) && keys.iter().any(|k| !matches!(k, Key::Hmac(_))) {
            return Err(KeyError(format!("the {} scheme takes HMAC secrets only", scheme.name())));
        }
        if let Scheme::Hmac(h) = &scheme {
            h.check().map_err(KeyError)?;
        }
        Ok(Self { scheme, keys, tolerance })
    }

    /// Checks a delivery's headers and raw body at `now` (Unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
        match &self.scheme {
            Scheme::Standard => self.standard(headers, body, now),
            Scheme::Stripe => self.stripe(headers, body, now),
            Scheme::Github => {
                let h = names::GITHUB_SIGNATURE;
                let given = text(headers, &h)?;
                let hex = given
                    .strip_prefix("sha256=")
                    .ok_or_else(|| err(&h, Reason::Malformed("expected sha256=<hex>".into())))?;
                let mac = hex::decode(hex)
                    .map_err(|_| err(&h, Reason::Malformed("the signature is not hex".into())))?;
                let key = self
                    .match_hmac(hmac::HMAC_SHA256, &[mac], |c| c.update(body))
                    .ok_or(err(&h, Reason::NoMatch))?;
                let id = headers
                    .get(names::GITHUB_DELIVERY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned);
                Ok(Verified { id, timestamp: None, key })
            }
            Scheme::Slack => {
                let ts_text = text(headers, &names::SLACK_TIMESTAMP)?;
                let ts = self.timestamp(&names::SLACK_TIMESTAMP, ts_text, now)?;
                let h = names::SLACK_SIGNATURE;
                let given = text(headers, &h)?;
                let hex = given
                    .strip_prefix("v0=")
                    .ok_or_else(|| err(&h, Reason::Malformed("expected v0=<hex>".into())))?;
                let mac = hex::decode(hex)
                    .map_err(|_| err(&h, Reason::Malformed("the signature is not hex".into())))?;
                let key = self
                    .match_hmac(hmac::HMAC_SHA256, &[mac], |c| {
                        c.update(b"v0:");
                        c.update(ts_text.as_bytes());
                        c.update(b":");
                        c.update(body);
                    })
                    .ok_or(err(&h, Reason::NoMatch))?;
                Ok(Verified { id: None, timestamp: Some(ts), key })
            }
            Scheme::Hmac(s) => {
                let id = match &s.id_header {
                    Some(h) => Some(text(headers, h)?.to_owned()),
                    None => None,
                };
                let ts = match &s.timestamp_header {
                    Some(h) => {
                        let t = text(headers, h)?;
                        Some((t, self.timestamp(h, t, now)?))
                    }
                    None => None,
                };
                let given = text(headers, &s.header)?;
                let encoded = given.strip_prefix(s.prefix.as_str()).ok_or_else(|| {
                    err(
                        &s.header,
                        Reason::Malformed(format!("expected {}<{}>", s.prefix, enc_name(s.encoding))),
                    )
                })?;
                let mac = s.encoding.decode(encoded).ok_or_else(|| {
                    err(
                        &s.header,
                        Reason::Malformed(format!("the signature is not {}", enc_name(s.encoding))),
                    )
                })?;
                let (id_text, ts_text) = (id.as_deref().unwrap_or(""), ts.map_or("", |t| t.0));
                let key = self
                    .match_hmac(s.algorithm.hmac(), &[mac], |c| s.content.mac(c, id_text, ts_text, body))
                    .ok_or(err(&s.header, Reason::NoMatch))?;
                Ok(Verified { id, timestamp: ts.map(|t| t.1), key })
            }
        }
    }

    fn standard(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
        let id = text(headers, &names::WEBHOOK_ID)?;
        let ts_text = text(headers, &names::WEBHOOK_TIMESTAMP)?;
        let ts = self.timestamp(&names::WEBHOOK_TIMESTAMP, ts_text, now)?;
        let h = names::WEBHOOK_SIGNATURE;
        let given = text(headers, &h)?;
        let (mut v1, mut v1a) = (Vec::new(), Vec::new());
        for entry in given.split(' ').filter(|e| !e.is_empty()) {
            let Some((version, b64)) = entry.split_once(',') else {
                return Err(err(&h, Reason::Malformed(format!("{entry:?} is not <version>,<base64>"))));
            };
            let list = match version {
                "v1" => &mut v1,
                "v1a" => &mut v1a,
                _ => continue,
            };
            let bytes = B64
                .decode(b64)
                .map_err(|_| err(&h, Reason::Malformed(format!("the {version} signature is not base64"))))?;
            list.push(bytes);
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(err(&h, Reason::Malformed("no v1 or v1a signature".into())));
        }
        let content = |c: &mut dyn FnMut(&[u8])| {
            c(id.as_bytes());
            c(b".");
            c(ts_text.as_bytes());
            c(b".");
            c(body);
        };
        let hmac_match = self.match_hmac(hmac::HMAC_SHA256, &v1, |c| content(&mut |b| c.update(b)));
        let key = hmac_match.or_else(|| {
            if v1a.is_empty() {
                return None;
            }
            let mut msg = Vec::with_capacity(id.len() + ts_text.len() + body.len() + 2);
            content(&mut |b| msg.extend_from_slice(b));
            self.keys.iter().position(|k| {
                let public = match k {
                    Key::Ed25519Public(p) => p.as_slice(),
                    Key::Ed25519Secret(pair) => sig::KeyPair::public_key(pair.as_ref()).as_ref(),
                    Key::Hmac(_) => return false,
                };
                let pk = sig::UnparsedPublicKey::new(&sig::ED25519, public);
                v1a.iter().any(|s| pk.verify(&msg, s).is_ok())
            })
        });
        let key = key.ok_or(err(&h, Reason::NoMatch))?;
        Ok(Verified { id: Some(id.to_owned()), timestamp: Some(ts), key })
    }

    fn stripe(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
        let h = names::STRIPE_SIGNATURE;
        let given = text(headers, &h)?;
        let (mut t, mut v1) = (None, Vec::new());
        for item in given.split(',') {
            let Some((k, v)) = item.trim().split_once('=') else {
                return Err(err(&h, Reason::Malformed(format!("{item:?} is not key=value"))));
            };
            match k {
                "t" if t.is_none() => t = Some(v),
                "t" => return Err(err(&h, Reason::Malformed("more than one t=".into()))),
                "v1" => v1.push(
                    hex::decode(v)
                        .map_err(|_| err(&h, Reason::Malformed("a v1 signature is not hex".into())))?,
                ),
                _ => {}
            }
        }
        let t = t.ok_or_else(|| err(&h, Reason::Malformed("no t= timestamp".into())))?;
        let ts = self.timestamp(&h, t, now)?;
        if v1.is_empty() {
            return Err(err(&h, Reason::Malformed("no v1 signature".into())));
        }
        let key = self
            .match_hmac(hmac::HMAC_SHA256, &v1, |c| {
                c.update(t.as_bytes());
                c.update(b".");
                c.update(body);
            })
            .ok_or(err(&h, Reason::NoMatch))?;
        Ok(Verified { id: None, timestamp: Some(ts), key })
    }

    /// Parses a Unix-seconds timestamp and holds it to the tolerance.
    fn timestamp(&self, header: &HeaderName, text: &str, now: i64) -> Result<i64, VerifyError> {
        let ts: i64 = text.parse().map_err(|_| {
            err(header, Reason::Malformed(format!("{text:?} is not a Unix timestamp in seconds")))
        })?;
        let tolerance_secs = self.tolerance.as_secs();
        let tol = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
        // In i128: no timestamp and no clock can overflow the difference.
        let age = i128::from(now) - i128::from(ts);
        let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
        if age > i128::from(tol) {
            return Err(err(header, Reason::Expired { age_secs: clamp(age), tolerance_secs }));
        }
        if -age > i128::from(tol) {
            return Err(err(header, Reason::InFuture { ahead_secs: clamp(-age), tolerance_secs }));
        }
        Ok(ts)
    }

    /// The first HMAC key whose MAC over `content` equals one of `given` (constant-time).
    fn match_hmac(
        &self,
        alg: hmac::Algorithm,
        given: &[Vec<u8>],
        content: impl Fn(&mut hmac::Context),
    ) -> Option<usize> {
        self.keys.iter().position(|k| {
            let Some(key) = k.hmac_key(alg) else { return false };
            let mut ctx = hmac::Context::with_key(&key);
            content(&mut ctx);
            let tag = ctx.sign();
            // Every candidate is compared, so the time taken does not say which one matched.
            given.iter().fold(false, |found, g| found | bool::from(tag.as_ref().ct_eq(g)))
        })
    }
}

fn enc_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Hex => "hex",
        Encoding::Base64 => "base64",
    }
}

/// Why a delivery could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignError(String);

/// Signs deliveries the way a provider of `scheme` would: used by the outbound dispatcher and
/// `bridgehead webhook sign`/`send`.
#[derive(Debug, Clone)]
pub struct Signer {
    pub scheme: Scheme,
    keys: Vec<Key>,
}

impl Signer {
    /// A signer with every key in `keys` (during a rotation each delivery carries a signature
    /// per key). Ed25519 public keys cannot sign.
    pub fn new(scheme: Scheme, keys: Vec<Key>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError("at least one secret is needed".into()));
        }
        if keys.iter().any(|k| matches!(k, Key::Ed25519Public(_))) {
            return Err(KeyError(
                "a whpk_ public key verifies only; signing needs the whsk_ secret key".into(),
            ));
        }
        let several = matches!(scheme, Scheme::Standard | Scheme::Stripe);
        if keys.len() > 1 && !several {
            return Err(KeyError(format!(
                "the {} scheme carries one signature: give one secret",
                scheme.name()
            )));
        }
        if !matches!(scheme, Scheme::Standard) && keys.iter().any(|k| !matches!(k, Key::Hmac(_))) {
            return Err(KeyError(format!("the {} scheme takes HMAC secrets only", scheme.name())));
        }
        if let Scheme::Hmac(h) = &scheme {
            h.check().map_err(KeyError)?;
        }
        Ok(Self { scheme, keys })
    }

    /// The headers that sign `body` as message `id` at `timestamp` (Unix seconds). Schemes that
    /// sign no id or timestamp ignore them. Fails when `id` cannot be a header value.
    pub fn sign(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SignError(format!("the message id {id:?} must be visible ASCII without spaces")));
        }
        let ts = timestamp.to_string();
        // Every value is built from visible ASCII (the id is checked above).
        let value = |s: String| HeaderValue::try_from(s).expect("visible ASCII");
        let hmac_of = |alg, content: &dyn Fn(&mut hmac::Context)| -> Vec<Vec<u8>> {
            self.keys
                .iter()
                .filter_map(|k| k.hmac_key(alg))
                .map(|key| {
                    let mut ctx = hmac::Context::with_key(&key);
                    content(&mut ctx);
                    ctx.sign().as_ref().to_vec()
                })
                .collect()
        };
        match &self.scheme {
            Scheme::Standard => {
                let mut msg = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
                msg.extend_from_slice(id.as_bytes());
                msg.push(b'.');
                msg.extend_from_slice(ts.as_bytes());
                msg.push(b'.');
                msg.extend_from_slice(body);
                let sigs: Vec<String> = self
                    .keys
                    .iter()
                    .filter_map(|k| match k {
                        Key::Hmac(raw) => {
                            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, raw), &msg);
                            Some(format!("v1,{}", B64.encode(tag.as_ref())))
                        }
                        Key::Ed25519Secret(pair) => {
                            Some(format!("v1a,{}", B64.encode(pair.sign(&msg).as_ref())))
                        }
                        Key::Ed25519Public(_) => None,
                    })
                    .collect();
                Ok(vec![
                    (names::WEBHOOK_ID, value(id.to_owned())),
                    (names::WEBHOOK_TIMESTAMP, value(ts)),
                    (names::WEBHOOK_SIGNATURE, value(sigs.join(" "))),
                ])
            }
            Scheme::Stripe => {
                let tags = hmac_of(hmac::HMAC_SHA256, &|c| {
                    c.update(ts.as_bytes());
                    c.update(b".");
                    c.update(body);
                });
                let mut v = format!("t={ts}");
                for t in tags {
                    v.push_str(",v1=");
                    v.push_str(&hex::encode(t));
                }
                Ok(vec![(names::STRIPE_SIGNATURE, value(v))])
            }
            Scheme::Github => {
                let tag = hmac_of(hmac::HMAC_SHA256, &|c| c.update(body)).remove(0);
                Ok(vec![
                    (names::GITHUB_SIGNATURE, value(format!("sha256={}", hex::encode(tag)))),
                    (names::GITHUB_DELIVERY, value(id.to_owned())),
                ])
            }
            Scheme::Slack => {
                let tag = hmac_of(hmac::HMAC_SHA256, &|c| {
                    c.update(b"v0:");
                    c.update(ts.as_bytes());
                    c.update(b":");
                    c.update(body);
                })
                .remove(0);
                Ok(vec![
                    (names::SLACK_TIMESTAMP, value(ts.clone())),
                    (names::SLACK_SIGNATURE, value(format!("v0={}", hex::encode(tag)))),
                ])
            }
            Scheme::Hmac(s) => {
                let tag = hmac_of(s.algorithm.hmac(), &|c| s.content.mac(c, id, &ts, body)).remove(0);
                let mut out =
                    vec![(s.header.clone(), value(format!("{}{}", s.prefix, s.encoding.encode(&tag))))];
                if let Some(h) = &s.timestamp_header {
                    out.push((h.clone(), value(ts.clone())));
                }
                if let Some(h) = &s.id_header {
                    out.push((h.clone(), value(id.to_owned())));
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests;
