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
    /// Send a signed test event to a webhook endpoint and show its answer ("does their endpoint
    /// work?"): exit 0 on a 2xx answer, 1 otherwise.
    ///
    /// Example: bridgehead webhook send https://hooks.customer.example/in --secret-env WHSEC --event order.created
    Send(SendArgs),
    /// Run a local receiver that verifies and pretty-prints every webhook it gets (answers 200,
    /// or 401 when a scheme is given and the signature is not valid), until Ctrl-C.
    ///
    /// Example: bridgehead webhook listen --port 9999 --scheme standard --secret-env WHSEC
    Listen(ListenArgs),
    /// Dead letters: requests a receiver refused, kept with the reason (list, show, replay).
    ///
    /// Example: bridgehead webhook dlq list -c bridgehead.yaml --receiver stripe
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The outbound dispatcher's endpoints (list, add, disable, enable, rotate-secret, remove).
    ///
    /// Example: bridgehead webhook endpoints list -c bridgehead.yaml
    #[command(subcommand)]
    Endpoints(super::endpoints::EndpointsCommand),
}

#[derive(clap::Args)]
pub struct SendArgs {
    /// The endpoint's URL (http or https).
    url: String,
    /// `standard` (the default), `stripe`, `github`, `slack` or `hmac`.
    #[arg(long, default_value = "standard")]
    scheme: String,
    /// A secret (repeatable while rotating). Visible in the process list: prefer --secret-env.
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// The name of an environment variable holding a secret (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_envs: Vec<String>,
    /// The event type of the sample event (without --payload).
    #[arg(long, default_value = "bridgehead.test")]
    event: String,
    /// The payload file (`-` for stdin), sent byte for byte; default: a sample event.
    #[arg(long, value_name = "FILE")]
    payload: Option<PathBuf>,
    /// The message id (default: a fresh `msg_…`).
    #[arg(long)]
    id: Option<String>,
    /// `text` (default) or `json`: {"status", "headers", "body", "sent_headers"}.
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct ListenArgs {
    /// The port to listen on (0: any free port, printed).
    #[arg(long, default_value_t = 9999)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Verify with this scheme (`standard`, `stripe`, `github`, `slack`); without it, every
    /// request is printed and answered 200.
    #[arg(long)]
    scheme: Option<String>,
    /// A secret (repeatable). Visible in the process list: prefer --secret-env.
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// The name of an environment variable holding a secret (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_envs: Vec<String>,
    /// How far a signed timestamp may be from now.
    #[arg(long, value_parser = parse_duration)]
    tolerance: Option<Duration>,
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

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

pub fn run(cmd: WebhookCommand) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        WebhookCommand::Sign(args) => sign(args),
        WebhookCommand::Verify(args) => verify(args),
        WebhookCommand::Dlq(cmd) => dlq(cmd),
        WebhookCommand::Endpoints(cmd) => super::endpoints::run(cmd),
        WebhookCommand::Send(args) => send(args),
        WebhookCommand::Listen(args) => listen(args),
    };
    result.or_else(|e| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(2))
    })
}

/// A fixed scheme by name (every one but `hmac`, which needs its settings).
fn named_scheme(name: &str) -> anyhow::Result<Scheme> {
    Ok(match name {
        "standard" => Scheme::Standard,
        "stripe" => Scheme::Stripe,
        "github" => Scheme::Github,
        "slack" => Scheme::Slack,
        "hmac" => bail!(
            "--scheme hmac needs its settings: use `webhook sign`/`verify` with --signature-header and the rest"
        ),
        other => bail!("--scheme {other:?}: use standard, stripe, github, slack or hmac"),
    })
}

/// The keys of `--secret` and `--secret-env` values, as `scheme` reads them.
fn keys_of(scheme: &Scheme, secrets: &[String], envs: &[String]) -> anyhow::Result<Vec<Key>> {
    let mut all: Vec<(String, String)> =
        secrets.iter().enumerate().map(|(i, s)| (format!("--secret #{}", i + 1), s.clone())).collect();
    for name in envs {
        let value = std::env::var(name).with_context(|| format!("environment variable {name} is not set"))?;
        all.push((format!("--secret-env {name}"), value));
    }
    if all.is_empty() {
        bail!("give a secret with --secret-env NAME (or --secret)");
    }
    all.iter().map(|(what, s)| Key::parse(scheme, s).map_err(|e| anyhow!("{what}: {e}"))).collect()
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
        keys_of(scheme, &self.secrets, &self.secret_envs)
    }

    fn payload(&self) -> anyhow::Result<Vec<u8>> {
        read_payload(&self.payload)
    }
}

/// Unix seconds, from the project's one clock.
fn now() -> i64 {
    i64::try_from(bridgehead_http::clock::unix_now()).unwrap_or(i64::MAX)
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
    let receivers =
        Receiver::build_all(&loaded).map_err(|e| anyhow!("{}: {e}", args.config.config.display()))?;
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
        Ok(r.replay(store, &dl, args.skip_signature, bridgehead_http::clock::unix_ms()).await)
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

fn read_payload(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("cannot read the payload from stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let scheme = named_scheme(&args.scheme)?;
    let keys = keys_of(&scheme, &args.secrets, &args.secret_envs)?;
    let signer = Signer::new(scheme, keys).map_err(|e| anyhow!("{e}"))?;
    let id = args.id.clone().unwrap_or_else(|| format!("msg_{}", bridgehead_state::new_idempotency_owner()));
    let ts = now();
    let body = match &args.payload {
        Some(p) => read_payload(p)?,
        None => json!({
            "type": args.event,
            "timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "data": {"test": true, "sent_by": "bridgehead webhook send"},
        })
        .to_string()
        .into_bytes(),
    };
    let headers = signer.sign(&id, ts, &body).map_err(|e| anyhow!("{e}"))?;
    let url: reqwest::Url = args.url.parse().map_err(|e| anyhow!("{}: {e}", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{}: only http and https URLs", args.url);
    }
    let client =
        bridgehead_upstream::fetch::client(None, Duration::from_secs(30)).map_err(|e| anyhow!("{e}"))?;
    let mut req = client.post(url).header("content-type", "application/json").body(body);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let res = super::runtime(Some(1))?.block_on(async {
        let res = req.send().await?;
        let status = res.status();
        let answer: Vec<(String, String)> = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let text = res.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, answer, text))
    });
    let (status, answer, text) = match res {
        Ok(r) => r,
        Err(e) => {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            println!("failed: {why}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match args.output {
        Output::Json => {
            let sent: serde_json::Map<String, serde_json::Value> =
                headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default()))).collect();
            println!(
                "{}",
                json!({"status": status.as_u16(), "headers": answer, "body": text, "sent_headers": sent})
            );
        }
        Output::Text => {
            println!("sent {id} ({} scheme)", signer.scheme.name());
            println!("HTTP {}", status);
            for (k, v) in &answer {
                println!("{k}: {v}");
            }
            if !text.is_empty() {
                println!();
                println!("{text}");
            }
        }
    }
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let verifier = match &args.scheme {
        Some(name) => {
            let scheme = named_scheme(name)?;
            let keys = keys_of(&scheme, &args.secrets, &args.secret_envs)?;
            Some(
                Verifier::new(scheme, keys, args.tolerance.unwrap_or(DEFAULT_TOLERANCE))
                    .map_err(|e| anyhow!("{e}"))?,
            )
        }
        None => None,
    };
    let verifier = std::sync::Arc::new(verifier);
    super::runtime(Some(1))?.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.bind, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
        println!("listening on http://{}", listener.local_addr()?);
        let _ = std::io::stdout().flush();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => r?,
                () = bridgehead_gateway::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            };
            let verifier = verifier.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let verifier = verifier.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                print_webhook(req, peer, verifier.as_ref().as_ref()).await,
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Reads one request (at most 10 MiB), checks it, prints it, answers.
async fn print_webhook(
    req: hyper::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
    verifier: Option<&Verifier>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, 10 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            println!("--- {} {} from {peer}: body not read: {e}", parts.method, parts.uri);
            return answer(400, "body not read");
        }
    };
    let verdict = verifier.map(|v| v.verify(&parts.headers, &body, now()));
    let mut out = format!("--- {} {} from {peer}, {} bytes", parts.method, parts.uri, body.len());
    match &verdict {
        None => out.push_str(" (not verified: no --scheme)"),
        Some(Ok(v)) => {
            out.push_str(&format!("\nvalid: secret #{}", v.key + 1));
            if let Some(id) = &v.id {
                out.push_str(&format!(" id={id}"));
            }
        }
        Some(Err(e)) => out.push_str(&format!("\ninvalid: {e}")),
    }
    for (k, v) in &parts.headers {
        out.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(v.as_bytes())));
    }
    out.push('\n');
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        // Not JSON: shown as text, control characters escaped (no terminal escape sequences).
        Err(_) => out.extend(String::from_utf8_lossy(&body).chars().flat_map(|c| {
            let keep = !c.is_control() || c == '\n' || c == '\t';
            let shown: Vec<char> = if keep { vec![c] } else { c.escape_default().collect() };
            shown
        })),
    }
    println!("{out}");
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    match verdict {
        Some(Err(_)) => answer(401, "invalid signature"),
        _ => answer(200, "ok"),
    }
}

fn answer(status: u16, text: &'static str) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut res = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes())));
    *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    res
}
