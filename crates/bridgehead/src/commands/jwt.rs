//! `bridgehead jwt decode | verify | sign`: the JWT core of `bridgehead-auth` on the command line,
//! for checking what an issuer sends and for minting test tokens.
//!
//! Exit codes: 0 success; 1 the token is not decodable / not valid, or signing failed; 2 usage
//! errors, including a key that cannot be read, fetched or parsed (the check could not run).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bridgehead_auth::jwt::{self, Algorithm, KeySet, Policy};
use serde_json::{Map, Value, json};

use super::Output;

/// A JWK Set fetched over HTTP larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Subcommand)]
pub enum JwtCommand {
    /// Decode a token without verifying it: header, claims, times and warnings.
    ///
    /// Exit 0 when the token decodes, 1 (with the reason) when it is not a JWT. Warnings (expired,
    /// `alg: none`, no `exp`, ...) are printed on stderr as `warning:` lines, or in the JSON output.
    ///
    /// Example: bridgehead jwt decode eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln
    Decode(DecodeArgs),
    /// Verify a token's signature and claims against a key file or a JWKS URL.
    ///
    /// Prints `valid: alg=... kid=... sub=...` and exits 0, or `invalid: <reason>` and exits 1.
    /// Exits 2 when the key cannot be read, fetched or parsed.
    ///
    /// Example: bridgehead jwt verify "$TOKEN" --key jwks.json --issuer https://issuer.example --audience api
    Verify(VerifyArgs),
    /// Sign claims and print the token alone on stdout (for tests and demos).
    ///
    /// Example: bridgehead jwt sign --key private.pem --alg ES256 --kid "$KID" --claims '{"sub":"alice"}' --ttl 1h
    Sign(SignArgs),
}

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The token, or `-` to read it from stdin. A leading `Bearer ` is ignored.
    token: String,
    /// `text` (default) or `json`: {"header", "claims", "warnings"}.
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The token, or `-` to read it from stdin. A leading `Bearer ` is ignored.
    token: String,
    /// A JWK, JWK Set or PEM public key / certificate file, or an http(s) URL of a JWK Set.
    #[arg(long, value_name = "FILE_OR_URL")]
    key: String,
    /// Required `iss` (exact match).
    #[arg(long)]
    issuer: Option<String>,
    /// Accepted `aud` value; repeat for several (any one matches).
    #[arg(long = "audience", value_name = "AUDIENCE")]
    audiences: Vec<String>,
    /// Allowed algorithms, comma-separated (default: every algorithm the loaded keys allow).
    #[arg(long, value_delimiter = ',', value_parser = parse_alg)]
    algorithms: Vec<Algorithm>,
    /// Clock skew tolerated for exp, nbf and iat (e.g. `30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    leeway: Duration,
    /// Required header `typ` (e.g. `at+jwt`).
    #[arg(long)]
    typ: Option<String>,
    /// Check only the signature: skip exp/nbf/iat, issuer and audience.
    #[arg(long)]
    signature_only: bool,
}

#[derive(clap::Args)]
pub struct SignArgs {
    /// PEM private key (PKCS#8, SEC1 or PKCS#1); for HS* a file holding the secret (one trailing
    /// newline is not part of it).
    #[arg(long)]
    key: PathBuf,
    /// RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512.
    #[arg(long, value_parser = parse_alg)]
    alg: Algorithm,
    /// The claims: a JSON object, or `@FILE` to read it from a file.
    #[arg(long)]
    claims: String,
    /// Set `iat` to now and `exp` to now + TTL (e.g. `1h`), unless the claims already have them.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Header `kid`.
    /// (A kid may start with `-`: RFC 7638 thumbprints are base64url.)
    #[arg(long, allow_hyphen_values = true)]
    kid: Option<String>,
    /// Header `typ` (default `JWT`).
    #[arg(long)]
    typ: Option<String>,
}

pub fn run(command: JwtCommand) -> anyhow::Result<ExitCode> {
    match command {
        JwtCommand::Decode(args) => decode(args),
        JwtCommand::Verify(args) => verify(args),
        JwtCommand::Sign(args) => sign(args),
    }
}

/// clap parser for algorithm names, with `parse_algorithm`'s precise messages.
pub(crate) fn parse_alg(name: &str) -> Result<Algorithm, String> {
    jwt::parse_algorithm(name)
}

/// `30s`, `5m`, `1h`...; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn read_token(arg: &str) -> anyhow::Result<String> {
    let raw = if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the token from stdin")?;
        s
    } else {
        arg.to_owned()
    };
    let token = raw.trim();
    let token = match token.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token[7..].trim_start(),
        _ => token,
    };
    Ok(token.to_owned())
}

/// A value from the token, safe to print on a terminal: control characters escaped, clipped.
fn shown(s: &str) -> String {
    let clipped: String = s.chars().take(64).collect();
    let suffix = if s.chars().count() > 64 { "…" } else { "" };
    let escaped: String = clipped
        .chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    format!("{escaped}{suffix}")
}

// ---------------------------------------------------------------------------------------------
// decode

fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let (header, claims) = match jwt::decode_unverified(&token) {
        Ok(decoded) => decoded,
        Err(rejection) => {
            match args.output {
                Output::Text => println!("not a JWT: {rejection}"),
                Output::Json => {
                    println!("{}", json!({"error": rejection.to_string(), "code": rejection.code()}));
                }
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = unix_now();
    let warnings = warnings(&header, &claims, now);
    match args.output {
        Output::Text => {
            println!("header:\n{}", serde_json::to_string_pretty(&header)?);
            println!("claims:\n{}", serde_json::to_string_pretty(&claims)?);
            for name in ["exp", "nbf", "iat"] {
                if let Some(t) = numeric(&claims, name) {
                    println!("{name}: {}", when(t, now));
                }
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
        }
        Output::Json => {
            let out = json!({"header": header, "claims": claims, "warnings": warnings});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A NumericDate claim as whole seconds, when it is a non-negative number.
fn numeric(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    let n = claims.get(name)?.as_number()?;
    n.as_u64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.floor() as u64))
}

/// "2025-01-01T00:00:00Z (in 59m)" / "(3h ago)".
fn when(t: u64, now: u64) -> String {
    // Past year 9999 RFC 3339 has no form; say so instead of wrapping.
    let date = if t <= 253_402_300_799 {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
    } else {
        format!("{t} (after year 9999)")
    };
    format!("{date} ({})", relative(t, now))
}

fn relative(t: u64, now: u64) -> String {
    let span = |secs: u64| match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        86_400..31_536_000 => format!("{}d", secs / 86_400),
        _ => format!("{}y", secs / 31_536_000),
    };
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", span(t - now)),
        std::cmp::Ordering::Equal => "now".to_owned(),
        std::cmp::Ordering::Less => format!("{} ago", span(now - t)),
    }
}

/// What a verifier would object to, said before anyone tries.
fn warnings(header: &Map<String, Value>, claims: &Map<String, Value>, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    match header.get("alg").and_then(Value::as_str) {
        Some(alg) if alg.trim().eq_ignore_ascii_case("none") => {
            out.push("alg \"none\": the token is unsigned; every verifier must refuse it".to_owned());
        }
        Some(alg) => {
            if let Err(e) = jwt::parse_algorithm(alg) {
                out.push(format!("alg: {e}"));
            }
        }
        None => out.push("the header has no alg".to_owned()),
    }
    for param in ["jwk", "jku", "x5u"] {
        if header.contains_key(param) {
            out.push(format!("header parameter {param} names its own key; bridgehead refuses such tokens"));
        }
    }
    if header.contains_key("crit") {
        out.push("header parameter crit: bridgehead understands no extensions and refuses it".to_owned());
    }
    for name in ["exp", "nbf", "iat"] {
        if claims.contains_key(name) && numeric(claims, name).is_none() {
            out.push(format!("{name} is not a non-negative number of seconds"));
        }
    }
    match numeric(claims, "exp") {
        Some(exp) if exp < now => out.push(format!("expired {}", relative(exp, now))),
        Some(_) => {}
        None if !claims.contains_key("exp") => {
            out.push("no exp: the token never expires (bridgehead requires exp)".to_owned());
        }
        None => {}
    }
    if let Some(nbf) = numeric(claims, "nbf")
        && nbf > now
    {
        out.push(format!("not valid yet: nbf is {}", relative(nbf, now)));
    }
    if let Some(iat) = numeric(claims, "iat")
        && iat > now
    {
        out.push(format!("issued in the future: iat is {}", relative(iat, now)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// verify

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token)?;
    let (keys, warnings) = match load_keys(&args.key) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    for w in warnings {
        eprintln!("warning: {}: {w}", args.key);
    }
    let algorithms = if args.algorithms.is_empty() { keys.algorithms() } else { args.algorithms };
    let policy = Policy {
        algorithms,
        issuer: args.issuer,
        audiences: args.audiences,
        leeway: args.leeway.as_secs(),
        typ: args.typ,
        signature_only: args.signature_only,
        ..Policy::default()
    };
    match jwt::verify(&token, &keys, &policy, unix_now()) {
        Ok(v) => {
            println!(
                "valid: alg={} kid={} sub={}",
                jwt::algorithm_name(v.alg),
                v.kid.as_deref().map(shown).unwrap_or_else(|| "-".into()),
                v.subject().map(shown).unwrap_or_else(|| "-".into()),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(rejection) => {
            println!("invalid: {rejection}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn load_keys(spec: &str) -> anyhow::Result<(KeySet, Vec<String>)> {
    let is_url = spec.starts_with("http://") || spec.starts_with("https://");
    let bytes = if is_url {
        fetch(spec)?
    } else {
        std::fs::read(spec).with_context(|| format!("cannot read the key file {spec}"))?
    };
    KeySet::parse_any(&bytes).map_err(|e| anyhow!("{spec}: {e}"))
}

/// GET a JWK Set: one request, a timeout, a size limit, 2xx only.
fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = super::runtime(Some(1))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .context("cannot build an HTTP client")?;
        let mut response = client
            .get(url)
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .with_context(|| format!("cannot fetch {url}"))?;
        if !response.status().is_success() {
            bail!("cannot fetch {url}: HTTP {}", response.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.with_context(|| format!("cannot read {url}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                bail!("{url}: the JWK Set is larger than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
}

// ---------------------------------------------------------------------------------------------
// sign

fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let mut key = std::fs::read(&args.key)
        .with_context(|| format!("cannot read the key file {}", args.key.display()))?;
    if matches!(args.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        if key.ends_with(b"\r\n") {
            key.truncate(key.len() - 2);
        } else if key.ends_with(b"\n") {
            key.truncate(key.len() - 1);
        }
    }
    let text = match args.claims.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read the claims file {path}"))?
        }
        None => args.claims.clone(),
    };
    let mut claims: Value = serde_json::from_str(&text).context("--claims is not valid JSON")?;
    let Some(object) = claims.as_object_mut() else { bail!("--claims must be a JSON object") };
    if let Some(ttl) = args.ttl {
        let now = unix_now();
        object.entry("iat").or_insert(now.into());
        object.entry("exp").or_insert(now.saturating_add(ttl.as_secs()).into());
    }
    let token = jwt::sign(&claims, &key, args.alg, args.kid.as_deref(), args.typ.as_deref())
        .map_err(|e| anyhow!("{}: {e}", args.key.display()))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
