//! `bridgehead webhook sign | verify`: the signature schemes of `bridgehead-webhooks` on the
//! command line, to sign a test delivery the way a provider would, or to check what a provider
//! sent.
//!
//! Exit codes: 0 success (signed; or the signature is valid); 1 the signature is not valid; 2
//! usage errors, including a secret or payload that cannot be read.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bridgehead_webhooks::signature::{
    Algorithm, DEFAULT_TOLERANCE, Encoding, HmacScheme, Key, Scheme, Signer, Template, Verifier,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use super::Output;

#[derive(clap::Subcommand)]
pub enum WebhookCommand {
    /// Sign a payload and print the headers a provider of that scheme would send.
    ///
    /// Example: bridgehead webhook sign --scheme standard --secret-env WHSEC --id msg_1 --payload event.json
    Sign(SignArgs),
    /// Check a delivery's signature headers against its payload: prints `valid` and exits 0, or
    /// `invalid: <header>: <reason>` and exits 1.
    ///
    /// Example: bridgehead webhook verify --scheme github --secret-env GH_SECRET -H "X-Hub-Signature-256: sha256=…" --payload body.json
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
pub struct SchemeArgs {
    /// `standard` (Standard Webhooks), `stripe`, `github`, `slack` or `hmac`.
    #[arg(long)]
    scheme: String,
    /// A secret (repeat while rotating: every one signs, any one verifies). Visible to other
    /// users in the process list: prefer `--secret-env`.
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// The name of an environment variable holding a secret (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_envs: Vec<String>,
    /// The payload file, or `-` for stdin. Its bytes are signed as they are.
    #[arg(long, value_name = "FILE")]
    payload: PathBuf,
    /// `hmac`: the header carrying the signature.
    #[arg(long, value_name = "NAME", default_value = "x-signature")]
    signature_header: String,
    /// `hmac`: text before the encoded MAC (e.g. `sha256=`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// `hmac`: `sha256` or `sha512`.
    #[arg(long, default_value = "sha256")]
    algorithm: String,
    /// `hmac`: `hex` or `base64`.
    #[arg(long, default_value = "hex")]
    encoding: String,
    /// `hmac`: what is signed, with `{id}`, `{timestamp}` and `{body}`.
    #[arg(long, default_value = "{body}")]
    content: String,
    /// `hmac`: the header carrying the signed timestamp.
    #[arg(long, value_name = "NAME")]
    timestamp_header: Option<String>,
    /// `hmac`: the header carrying the message id.
    #[arg(long, value_name = "NAME")]
    id_header: Option<String>,
}

#[derive(clap::Args)]
pub struct SignArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// The message id (`webhook-id`, `X-GitHub-Delivery`, the `hmac` id header).
    #[arg(long)]
    id: String,
    /// Unix seconds to sign (default: now).
    #[arg(long)]
    timestamp: Option<i64>,
    /// `text` (default: `Name: value` lines) or `json` (an object of header names to values).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// A header of the delivery, `Name: value` (repeat for each).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Unix seconds to check the timestamp against (default: now).
    #[arg(long)]
    now: Option<i64>,
    /// How far a signed timestamp may be from now, either way (e.g. `5m`).
    #[arg(long, value_parser = parse_duration)]
    tolerance: Option<Duration>,
    /// `text` (default) or `json`: {"valid", "header", "reason", "id", "timestamp"}.
    #[arg(long, default_value = "text")]
    output: Output,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

pub fn run(cmd: WebhookCommand) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        WebhookCommand::Sign(args) => sign(args),
        WebhookCommand::Verify(args) => verify(args),
    };
    result.or_else(|e| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(2))
    })
}

impl SchemeArgs {
    fn scheme(&self) -> anyhow::Result<Scheme> {
        Ok(match self.scheme.as_str() {
            "standard" => Scheme::Standard,
            "stripe" => Scheme::Stripe,
            "github" => Scheme::Github,
            "slack" => Scheme::Slack,
            "hmac" => {
                let name = |s: &str, what: &str| {
                    HeaderName::try_from(s).map_err(|_| anyhow!("{what} {s:?} is not a header name"))
                };
                let s = HmacScheme {
                    header: name(&self.signature_header, "--signature-header")?,
                    prefix: self.prefix.clone(),
                    algorithm: match self.algorithm.as_str() {
                        "sha256" => Algorithm::Sha256,
                        "sha512" => Algorithm::Sha512,
                        other => bail!("--algorithm {other:?}: use sha256 or sha512"),
                    },
                    encoding: match self.encoding.as_str() {
                        "hex" => Encoding::Hex,
                        "base64" => Encoding::Base64,
                        other => bail!("--encoding {other:?}: use hex or base64"),
                    },
                    content: Template::parse(&self.content).map_err(|e| anyhow!("--content: {e}"))?,
                    timestamp_header: self
                        .timestamp_header
                        .as_deref()
                        .map(|h| name(h, "--timestamp-header"))
                        .transpose()?,
                    id_header: self.id_header.as_deref().map(|h| name(h, "--id-header")).transpose()?,
                };
                s.check().map_err(|e| anyhow!("{e}"))?;
                Scheme::Hmac(Box::new(s))
            }
            other => bail!("--scheme {other:?}: use standard, stripe, github, slack or hmac"),
        })
    }

    fn keys(&self, scheme: &Scheme) -> anyhow::Result<Vec<Key>> {
        let mut secrets: Vec<(String, String)> = self
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("--secret #{}", i + 1), s.clone()))
            .collect();
        for name in &self.secret_envs {
            let value =
                std::env::var(name).with_context(|| format!("environment variable {name} is not set"))?;
            secrets.push((format!("--secret-env {name}"), value));
        }
        if secrets.is_empty() {
            bail!("give a secret with --secret-env NAME (or --secret)");
        }
        secrets.iter().map(|(what, s)| Key::parse(scheme, s).map_err(|e| anyhow!("{what}: {e}"))).collect()
    }

    fn payload(&self) -> anyhow::Result<Vec<u8>> {
        if self.payload.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read the payload from stdin")?;
            return Ok(buf);
        }
        std::fs::read(&self.payload).with_context(|| format!("cannot read {}", self.payload.display()))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let scheme = args.scheme.scheme()?;
    let keys = args.scheme.keys(&scheme)?;
    let body = args.scheme.payload()?;
    let signer = Signer::new(scheme, keys).map_err(|e| anyhow!("{e}"))?;
    let headers =
        signer.sign(&args.id, args.timestamp.unwrap_or_else(now), &body).map_err(|e| anyhow!("{e}"))?;
    match args.output {
        Output::Text => {
            for (name, value) in &headers {
                println!("{name}: {}", value.to_str().unwrap_or_default());
            }
        }
        Output::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                headers.iter().map(|(n, v)| (n.to_string(), json!(v.to_str().unwrap_or_default()))).collect();
            println!("{}", serde_json::Value::Object(map));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let scheme = args.scheme.scheme()?;
    let keys = args.scheme.keys(&scheme)?;
    let body = args.scheme.payload()?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| anyhow!("-H {h:?}: expected \"Name: value\""))?;
        let name = HeaderName::try_from(name.trim()).map_err(|_| anyhow!("-H {h:?}: not a header name"))?;
        let value =
            HeaderValue::try_from(value.trim()).map_err(|_| anyhow!("-H {h:?}: not a header value"))?;
        headers.append(name, value);
    }
    let verifier = Verifier::new(scheme, keys, args.tolerance.unwrap_or(DEFAULT_TOLERANCE))
        .map_err(|e| anyhow!("{e}"))?;
    let result = verifier.verify(&headers, &body, args.now.unwrap_or_else(now));
    match (&result, args.output) {
        (Ok(v), Output::Text) => {
            let mut line = format!("valid: secret #{}", v.key + 1);
            if let Some(id) = &v.id {
                line.push_str(&format!(" id={id}"));
            }
            if let Some(ts) = v.timestamp {
                line.push_str(&format!(" timestamp={ts}"));
            }
            println!("{line}");
        }
        (Err(e), Output::Text) => println!("invalid: {e}"),
        (Ok(v), Output::Json) => {
            println!("{}", json!({"valid": true, "secret": v.key + 1, "id": v.id, "timestamp": v.timestamp}));
        }
        (Err(e), Output::Json) => println!(
            "{}",
            json!({"valid": false, "header": e.header.as_str(), "reason": e.reason.label(), "detail": e.reason.to_string()})
        ),
    }
    Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
