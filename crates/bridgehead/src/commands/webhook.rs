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
    /// Dead letters: requests a receiver refused, kept with the reason (list, show, replay).
    ///
    /// Example: bridgehead webhook dlq list -c bridgehead.yaml --receiver stripe
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first, without their bodies.
    ///
    /// Example: bridgehead webhook dlq list -c bridgehead.yaml --receiver stripe --limit 20
    List(DlqListArgs),
    /// One dead letter with its headers (signatures redacted) and body.
    ///
    /// Example: bridgehead webhook dlq show dlq_0f3a… -c bridgehead.yaml
    Show(DlqShowArgs),
    /// Sends a dead letter through its receiver again, once what refused it is fixed in the
    /// config: exit 0 when stored for delivery (a running gateway delivers it), 1 when refused
    /// again. The signature is checked as of when it was received, unless --skip-signature.
    ///
    /// Example: bridgehead webhook dlq replay dlq_0f3a… -c bridgehead.yaml
    Replay(DlqReplayArgs),
}

#[derive(clap::Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    config: super::apikey::ConfigArg,
    /// Only this receiver's dead letters.
    #[arg(long, value_name = "NAME")]
    receiver: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// `text` (a table) or `json` (an array).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct DlqShowArgs {
    #[command(flatten)]
    config: super::apikey::ConfigArg,
    id: String,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    config: super::apikey::ConfigArg,
    id: String,
    /// Store it without checking its signature (for a request that was refused for its
    /// signature and is known to be genuine). Printed as a warning.
    #[arg(long)]
    skip_signature: bool,
    /// `text` or `json`: {"status", "message_id"} or {"status": "refused", "reason", "detail"}.
    #[arg(long, default_value = "text")]
    output: Output,
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
        WebhookCommand::Dlq(cmd) => dlq(cmd),
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

fn dlq(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    use bridgehead_webhooks::view;
    match cmd {
        DlqCommand::List(args) => {
            if !(1..=10_000).contains(&args.limit) {
                bail!("--limit must be 1 to 10000");
            }
            let source = args.receiver.as_ref().map(|r| format!("inbound:{r}"));
            let list = super::apikey::with_store(args.config.clone(), async |store| {
                Ok(store.webhook_dead_letters(source.as_deref(), None, args.limit).await?)
            })?;
            match args.output {
                Output::Json => {
                    let items: Vec<_> = list.iter().map(|d| view::dead_letter(d, false)).collect();
                    println!("{}", serde_json::Value::Array(items));
                }
                Output::Text => {
                    println!(
                        "{:<36}  {:<16}  {:<12}  {:<24}  {:>8}  replayed",
                        "id", "receiver", "reason", "received", "bytes"
                    );
                    for d in &list {
                        println!(
                            "{:<36}  {:<16}  {:<12}  {:<24}  {:>8}  {}",
                            d.id,
                            view::receiver_of(&d.source),
                            d.reason,
                            time(d.received_at_ms),
                            d.body_bytes,
                            d.message_id.as_deref().unwrap_or("-")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show(args) => {
            let found = super::apikey::with_store(args.config.clone(), async |store| {
                Ok(store.webhook_dead_letter(&args.id).await?)
            })?;
            let Some(d) = found else {
                eprintln!("no dead letter {}", args.id);
                return Ok(ExitCode::FAILURE);
            };
            let v = view::dead_letter(&d, true);
            match args.output {
                Output::Json => println!("{v}"),
                Output::Text => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay(args) => replay(args),
    }
}

fn replay(args: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    use bridgehead_webhooks::inbound::{Receiver, ReplayError, Replayed};
    let loaded = bridgehead_config::load(&args.config.config).map_err(|d| anyhow!("{d}"))?;
    let receivers = loaded
        .config
        .webhooks
        .inbound
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Receiver::build(i, w, &loaded).map_err(|e| anyhow!("{}: {e}", args.config.config.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.skip_signature {
        eprintln!("warning: replaying {} WITHOUT checking its signature", args.id);
    }
    let result = super::apikey::with_store(args.config.clone(), async |store| {
        let Some(dl) = store.webhook_dead_letter(&args.id).await? else {
            bail!("no dead letter {}", args.id);
        };
        let Some(r) = receivers.iter().find(|r| r.source == dl.source) else {
            bail!(
                "no receiver `{}` in {}",
                bridgehead_webhooks::view::receiver_of(&dl.source),
                args.config.config.display()
            );
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(r.replay(store, &dl, args.skip_signature, now).await)
    })?;
    let (code, v) = match result {
        Ok(Replayed::Accepted(id)) => (ExitCode::SUCCESS, json!({"status": "accepted", "message_id": id})),
        Ok(Replayed::Duplicate(id)) => (ExitCode::SUCCESS, json!({"status": "duplicate", "message_id": id})),
        Err(ReplayError::Refused { reason, detail }) => {
            (ExitCode::FAILURE, json!({"status": "refused", "reason": reason, "detail": detail}))
        }
        Err(ReplayError::Store(e)) => bail!("the state store failed: {e}"),
    };
    match args.output {
        Output::Json => println!("{v}"),
        Output::Text => match v["status"].as_str() {
            Some("refused") => println!(
                "refused ({}): {}",
                v["reason"].as_str().unwrap_or(""),
                v["detail"].as_str().unwrap_or("")
            ),
            Some(status) => println!("{status}: {}", v["message_id"].as_str().unwrap_or("")),
            None => {}
        },
    }
    Ok(code)
}

/// Unix ms as an RFC 3339 time (UTC, seconds).
fn time(ms: i64) -> String {
    let secs = u64::try_from(ms / 1000).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}
