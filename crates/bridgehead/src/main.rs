//! The `bridgehead` command line: parses arguments and the config, then hands them to the
//! gateway's composition root. Nothing here is on the request path.

#[cfg(feature = "alloc-count")]
mod alloc_count;
mod commands;

/// mimalloc: measurably faster than glibc malloc for the many small, short-lived allocations of
/// a proxy, and it returns memory to the OS promptly.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Bridgehead: the integration gateway you carry on site.
#[derive(Parser)]
#[command(name = "bridgehead", version, about, propagate_version = true)]
struct Cli {
    /// Log format: `json`, `text`, or `auto` (text on a terminal, JSON otherwise, so
    /// journald and `kubectl logs` get JSON lines).
    #[arg(long, global = true, env = "BRIDGEHEAD_LOG_FORMAT", default_value = "auto", value_name = "FORMAT")]
    log_format: commands::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Example: bridgehead serve -c bridgehead.yaml
    Serve {
        /// Config file.
        #[arg(short, long, default_value = "bridgehead.yaml")]
        config: PathBuf,
        /// Do not reload when the config file changes (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
    },
    /// Start a gateway with a demo config and a mock upstream, and print commands to try.
    ///
    /// Example: bridgehead demo
    Demo(commands::demo::DemoArgs),
    /// Write a commented starter config.
    ///
    /// Example: bridgehead init bridgehead.yaml
    Init {
        /// Where to write it.
        #[arg(default_value = "bridgehead.yaml")]
        file: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check a config, print its JSON Schema or its reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a mock upstream: echo, fixed responses, latency and failure injection (random, the
    /// first N requests, or changed at run time with PUT /__mock/faults), a customer-style quota,
    /// recording.
    ///
    /// Example: bridgehead mock --port 9000 --fail-first 2 --fail-status 503 --retry-after 1 --rate-limit 50/s
    Mock(bridgehead_mock::MockOptions),
    /// Create, list and revoke API keys kept in the state database.
    #[command(subcommand)]
    Apikey(commands::apikey::ApikeyCommand),
    /// Decode, verify or sign JSON Web Tokens.
    ///
    /// Example: bridgehead jwt verify "$TOKEN" --key jwks.json
    #[command(subcommand)]
    Jwt(commands::jwt::JwtCommand),
    /// Generate signing keys (private.pem, public.pem, jwks.json).
    ///
    /// Example: bridgehead keys generate --alg ES256 --out keys/
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Fetch an OAuth 2.0 client-credentials token and print it (or its decoded claims).
    ///
    /// Example: ORDERS_SECRET=… bridgehead token --token-url https://auth.example/oauth/token --client-id bridgehead --client-secret-env ORDERS_SECRET --scope orders.read
    Token(commands::token::TokenArgs),
    /// Manage the built-in authorization server's run-time clients.
    ///
    /// Example: bridgehead oauth client add -c bridgehead.yaml --id dashboard --grant client_credentials --scope orders.read
    #[command(subcommand)]
    Oauth(commands::oauth::OauthCommand),
    /// Sign a webhook payload the way a provider would, or verify a delivery's signature.
    ///
    /// Example: bridgehead webhook verify --scheme stripe --secret-env STRIPE_WHSEC -H "Stripe-Signature: t=…,v1=…" --payload event.json
    #[command(subcommand)]
    Webhook(commands::webhook::WebhookCommand),
    /// A grpcurl-like gRPC client: list, describe, call, export (schema from reflection,
    /// .proto files or a descriptor set).
    ///
    /// Example: bridgehead grpc call --plaintext 127.0.0.1:50051 drone.v1.Telemetry/GetStatus -d '{"droneId": "d-1"}'
    #[command(subcommand)]
    Grpc(commands::grpc::GrpcCommand),
    /// SOAP tools over a WSDL read at run time: describe, openapi, call.
    ///
    /// Example: bridgehead soap call wsdl/billing.wsdl GetInvoice -d '{"invoice_id": "inv-1"}'
    #[command(subcommand)]
    Soap(commands::soap::SoapCommand),
    /// Print the version, the commit, how the binary was built and its features.
    ///
    /// Example: bridgehead version --output json
    Version {
        /// `text` (default) or `json`.
        #[arg(long, default_value = "text")]
        output: commands::Output,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// Example: bridgehead completions bash > /etc/bash_completion.d/bridgehead
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for `man -l -` or /usr/share/man/man1/bridgehead.1.
    ///
    /// Example: bridgehead manpage > bridgehead.1 && man -l bridgehead.1
    Manpage,
    /// Write the air-gapped kit: the binary, the config with every file it names, SHA256SUMS,
    /// a systemd unit, completions, the man page and an image tarball for `docker load`.
    ///
    /// Example: bridgehead bundle -c bridgehead.yaml --out kit/ --binary "$(scripts/build-static | tail -1)"
    Bundle(commands::bundle::BundleArgs),
    /// Export the routes as a Postman collection (for Newman or the Postman app).
    ///
    /// Example: bridgehead collection export -c bridgehead.yaml --base-url http://127.0.0.1:8080 > collection.json
    #[command(subcommand)]
    Collection(commands::collection::CollectionCommand),
    /// Find out what an endpoint is and how to talk to it: DNS (which server answered, the
    /// CNAME chain), TCP per address, TLS (the chain, whether a client certificate is asked
    /// for), what it speaks (REST, gRPC, gRPC-Web, SOAP, GraphQL, OpenAPI, WebSocket), how it
    /// authenticates, its rate limits, and a bridgehead.yaml fragment for it.
    ///
    /// Example: bridgehead probe https://api.customer.example/v1/health --output json
    Probe(commands::probe::ProbeArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: exit 0 when valid, 1 with `file:line:col: key.path: message` lines.
    ///
    /// Example: bridgehead config check bridgehead.yaml
    Check {
        file: PathBuf,
        /// `text` (default) or `json`.
        #[arg(long, default_value = "text")]
        output: commands::Output,
    },
    /// Print the JSON Schema of the config file (for editors).
    ///
    /// Example: bridgehead config schema > bridgehead.schema.json
    Schema,
    /// Print the configuration reference as Markdown (docs/config.md).
    ///
    /// Example: bridgehead config docs > docs/config.md
    Docs,
}

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::install();
    let cli = Cli::parse();
    commands::LOG_FORMAT.set(cli.log_format).ok();
    let result = match cli.command {
        Command::Serve { config, no_watch } => commands::serve::run(&config, !no_watch),
        Command::Demo(args) => commands::demo::run(args),
        Command::Init { file, force } => commands::init(&file, force),
        Command::Config(ConfigCommand::Check { file, output }) => commands::config_check(&file, output),
        Command::Config(ConfigCommand::Schema) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bridgehead_config::json_schema()).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Docs) => {
            print!("{}", bridgehead_config::docs::config_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Mock(opts) => commands::runtime(None).and_then(|rt| {
            rt.block_on(bridgehead_mock::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Apikey(cmd) => commands::apikey::run(cmd),
        Command::Jwt(cmd) => commands::jwt::run(cmd),
        Command::Keys(cmd) => commands::keys::run(cmd),
        Command::Token(args) => commands::token::run(args),
        Command::Oauth(cmd) => commands::oauth::run(cmd),
        Command::Webhook(cmd) => commands::webhook::run(cmd),
        Command::Grpc(cmd) => commands::grpc::run(cmd),
        Command::Soap(cmd) => commands::soap::run(cmd),
        Command::Probe(args) => commands::probe::run(args),
        Command::Collection(cmd) => commands::collection::run(cmd),
        Command::Bundle(args) => commands::bundle::run(args, <Cli as clap::CommandFactory>::command()),
        Command::Version { output } => commands::version::run(output),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "bridgehead", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                // `bridgehead manpage | head`: the reader went away, nothing is wrong.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(anyhow::anyhow!("cannot write the man page: {e}")),
            }
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
