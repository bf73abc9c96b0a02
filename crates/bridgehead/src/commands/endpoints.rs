//! `bridgehead webhook endpoints`: the outbound dispatcher's endpoints, in the state store of
//! the config given with `-c` (a running gateway reads the change within 5 s).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bridgehead_webhooks::outbound::{self, Dispatcher, EndpointError, NewEndpoint};
use serde_json::json;

use super::Output;
use super::apikey::ConfigArg;

#[derive(clap::Subcommand)]
pub enum EndpointsCommand {
    /// Every endpoint (the config's and those added at run time), with its state.
    ///
    /// Example: bridgehead webhook endpoints list -c bridgehead.yaml --output json
    List(ListArgs),
    /// Add an endpoint at run time; prints its signing secret (shown this once).
    ///
    /// Example: bridgehead webhook endpoints add crm --url https://crm.customer.example/hooks --event 'order.*'
    Add(AddArgs),
    /// Stop delivering to an endpoint: new events skip it, its pending deliveries wait.
    ///
    /// Example: bridgehead webhook endpoints disable crm --reason "customer maintenance"
    Disable(DisableArgs),
    /// Deliver to an endpoint again (its waiting deliveries go out).
    ///
    /// Example: bridgehead webhook endpoints enable crm
    Enable(NameArgs),
    /// Give a run-time endpoint a new secret; the old ones keep signing for --grace. Prints
    /// the new secret.
    ///
    /// Example: bridgehead webhook endpoints rotate-secret crm --grace 24h
    RotateSecret(RotateArgs),
    /// Remove a run-time endpoint (an endpoint of the config is removed from the config).
    ///
    /// Example: bridgehead webhook endpoints remove crm
    Remove(NameArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// `text` (a table) or `json` (an array).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Its name (letters, digits, `-`, `_`, `.`; at most 64).
    name: String,
    /// Where events are POSTed: `https://…` (or `http://…`).
    #[arg(long)]
    url: String,
    /// An event type or pattern (`order.*`, `*`) delivered there; repeat for several.
    #[arg(long = "event", value_name = "PATTERN", required = true)]
    events: Vec<String>,
    /// Read the signing secret (`whsec_…` or `whsk_…`) from this environment variable instead
    /// of making a new one.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Let the URL reach loopback, private and link-local addresses.
    #[arg(long)]
    allow_private_network: bool,
    /// `text` (the secret alone) or `json` (`{"name", "url", "events", "secret"}`).
    #[arg(long, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
pub struct NameArgs {
    #[command(flatten)]
    config: ConfigArg,
    name: String,
}

#[derive(clap::Args)]
pub struct DisableArgs {
    #[command(flatten)]
    config: ConfigArg,
    name: String,
    /// Why (shown by list and the admin API).
    #[arg(long, default_value = "disabled by an operator")]
    reason: String,
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    config: ConfigArg,
    name: String,
    /// How long the previous secrets keep signing.
    #[arg(long, default_value = "24h", value_parser = super::webhook::parse_duration)]
    grace: Duration,
    /// `text` (the secret alone) or `json` (`{"name", "secret", "previous_valid_until_ms"}`).
    #[arg(long, default_value = "text")]
    output: Output,
}

/// The dispatcher of the config, with the store's endpoints read.
fn dispatcher(config: &ConfigArg) -> anyhow::Result<Dispatcher> {
    let loaded = bridgehead_config::load(&config.config).map_err(|d| anyhow!("{d}"))?;
    Dispatcher::build(&loaded, None)
        .map_err(|e| anyhow!("{}: {e}", config.config.display()))?
        .ok_or_else(|| anyhow!("{}: webhooks.outbound is not configured", config.config.display()))
}

fn failed(e: EndpointError) -> anyhow::Error {
    anyhow!("{e}")
}

pub fn run(cmd: EndpointsCommand) -> anyhow::Result<ExitCode> {
    let now = bridgehead_http::clock::unix_ms();
    match cmd {
        EndpointsCommand::List(args) => {
            let d = dispatcher(&args.config)?;
            let list = super::apikey::with_store(args.config.clone(), async |store| {
                d.refresh(store).await?;
                Ok(d.endpoints())
            })?;
            match args.output {
                Output::Json => {
                    let items: Vec<_> = list.iter().map(|e| bridgehead_webhooks::view::endpoint(e)).collect();
                    println!("{}", serde_json::Value::Array(items));
                }
                Output::Text => {
                    println!("{:<20}  {:<8}  {:<9}  {:<24}  url", "name", "from", "state", "events");
                    for e in list.iter() {
                        let state = if e.disabled.is_some() { "disabled" } else { "enabled" };
                        println!(
                            "{:<20}  {:<8}  {:<9}  {:<24}  {}",
                            e.name,
                            if e.declared { "config" } else { "runtime" },
                            state,
                            e.events.join(","),
                            e.url
                        );
                        if let Some((_, why)) = &e.disabled {
                            println!("{:<20}  disabled: {why}", "");
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EndpointsCommand::Add(args) => {
            let d = dispatcher(&args.config)?;
            let secret = match &args.secret_env {
                Some(var) => {
                    Some(std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?)
                }
                None => None,
            };
            let new = NewEndpoint {
                name: args.name.clone(),
                url: args.url.clone(),
                events: args.events.clone(),
                secret,
                allow_private_network: args.allow_private_network,
            };
            let declared: Vec<String> =
                d.endpoints().iter().filter(|e| e.declared).map(|e| e.name.to_string()).collect();
            let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
            let secret = super::apikey::with_store(args.config.clone(), async |store| {
                outbound::add_endpoint(store, &declared, &new, now).await.map_err(failed)
            })?;
            match args.output {
                Output::Json => println!(
                    "{}",
                    json!({"name": new.name, "url": new.url, "events": new.events, "secret": secret})
                ),
                Output::Text => println!("{secret}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        EndpointsCommand::Disable(args) => set(&args.config, &args.name, Some(&args.reason), now),
        EndpointsCommand::Enable(args) => set(&args.config, &args.name, None, now),
        EndpointsCommand::RotateSecret(args) => {
            if dispatcher(&args.config)?.declares(&args.name) {
                bail!(
                    "`{}` is declared in the config: rotate its secret there (list the new and the old under `secrets`, then drop the old)",
                    args.name
                );
            }
            let secret = super::apikey::with_store(args.config.clone(), async |store| {
                outbound::rotate_secret(store, &args.name, args.grace, now).await.map_err(failed)
            })?;
            let until = now.saturating_add(i64::try_from(args.grace.as_millis()).unwrap_or(i64::MAX));
            match args.output {
                Output::Json => println!(
                    "{}",
                    json!({"name": args.name, "secret": secret, "previous_valid_until_ms": until})
                ),
                Output::Text => println!("{secret}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        EndpointsCommand::Remove(args) => {
            let d = dispatcher(&args.config)?;
            if d.declares(&args.name) {
                bail!("`{}` is declared in {}: remove it there", args.name, args.config.config.display());
            }
            let removed = super::apikey::with_store(args.config.clone(), async |store| {
                Ok(store.webhook_endpoint_remove(&args.name, now).await?)
            })?;
            if !removed {
                bail!("no run-time endpoint is named `{}`", args.name);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn set(config: &ConfigArg, name: &str, reason: Option<&str>, now: i64) -> anyhow::Result<ExitCode> {
    let d = dispatcher(config)?;
    let declared = d.declares(name);
    super::apikey::with_store(config.clone(), async |store| {
        outbound::set_disabled(store, name, declared, reason, now).await.map_err(failed)
    })?;
    Ok(ExitCode::SUCCESS)
}
