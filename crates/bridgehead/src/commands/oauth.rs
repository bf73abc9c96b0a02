//! `bridgehead oauth client add|list|remove`: OAuth clients registered at run time in the state
//! database, next to those in `oauth_server.clients`. Running gateways see changes within 5 s.

use std::process::ExitCode;

use anyhow::bail;
use bridgehead_state::OAuthClientRecord;

use super::apikey::{ConfigArg, with_store};

#[derive(clap::Subcommand)]
pub enum OauthCommand {
    /// Manage OAuth clients of the built-in authorization server.
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Register a client. A confidential client's secret is generated and printed once.
    ///
    /// Example: bridgehead oauth client add -c bridgehead.yaml --id dashboard --grant client_credentials --scope orders.read
    Add(AddArgs),
    /// List clients registered at run time (config clients are in the config).
    ///
    /// Example: bridgehead oauth client list -c bridgehead.yaml
    List(ListArgs),
    /// Remove a client registered at run time.
    ///
    /// Example: bridgehead oauth client remove -c bridgehead.yaml dashboard
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The client id.
    #[arg(long)]
    id: String,
    /// A public client (no secret): authorization_code with PKCE and refresh_token only.
    #[arg(long)]
    public: bool,
    /// A grant it may use (repeat): client_credentials, authorization_code, refresh_token.
    #[arg(long = "grant", required = true)]
    grants: Vec<String>,
    /// A scope it may ask for (repeat).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A redirect URI, compared exactly (repeat; needed for authorization_code).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The client id.
    id: String,
}

pub fn run(cmd: OauthCommand) -> anyhow::Result<ExitCode> {
    let OauthCommand::Client(cmd) = cmd;
    match cmd {
        ClientCommand::Add(a) => add(a),
        ClientCommand::List(a) => list(a),
        ClientCommand::Remove(a) => remove(a),
    }
}

fn add(a: AddArgs) -> anyhow::Result<ExitCode> {
    // The same checks as for clients in the config.
    let candidate = bridgehead_config::OAuthClient {
        client_id: a.id.clone(),
        secret_sha256: (!a.public).then(|| "0".repeat(64)),
        public: a.public,
        grants: a.grants.clone(),
        scopes: a.scopes.clone(),
        redirect_uris: a.redirect_uris.clone(),
    };
    if let Some((path, msg)) = bridgehead_config::check_oauth_client(&candidate).into_iter().next() {
        let flag = match path.split(['[', '.']).next().unwrap_or("") {
            "client_id" => "--id",
            "grants" => "--grant",
            "redirect_uris" => "--redirect-uri",
            _ => "the client",
        };
        bail!("{flag}: {msg}");
    }
    let loaded = bridgehead_config::load(&a.config.config).map_err(|d| anyhow::anyhow!("{d}"))?;
    let Some(server) = &loaded.config.oauth_server else {
        bail!("{} has no oauth_server", a.config.config.display());
    };
    if server.clients.iter().any(|c| c.client_id == a.id) {
        bail!("client {:?} is already declared in the config", a.id);
    }
    let secret = (!a.public).then(bridgehead_auth::apikey::generate);
    let rec = OAuthClientRecord {
        client_id: a.id.clone(),
        secret_sha256: secret.as_deref().map(bridgehead_auth::apikey::sha256_hex),
        public: a.public,
        grants: a.grants,
        scopes: a.scopes,
        redirect_uris: a.redirect_uris,
        created_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64,
    };
    with_store(a.config, async |store| Ok(store.oauth_client_insert(&rec).await?))?;
    match secret {
        Some(s) => {
            eprintln!(
                "registered client {:?}; its secret follows; store it now: it cannot be shown again",
                a.id
            );
            println!("{s}");
        }
        None => eprintln!("registered public client {:?}", a.id),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let clients = with_store(a.config, async |store| Ok(store.oauth_clients_all().await?))?;
    println!("{:<24} {:<12} {:<48} {:<24} REDIRECT URIS", "CLIENT", "TYPE", "GRANTS", "SCOPES");
    for c in clients {
        println!(
            "{:<24} {:<12} {:<48} {:<24} {}",
            c.client_id,
            if c.public { "public" } else { "confidential" },
            c.grants.join(" "),
            c.scopes.join(" "),
            c.redirect_uris.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let id = a.id.clone();
    if with_store(a.config, async |store| Ok(store.oauth_client_delete(&id).await?))? {
        println!("removed {id}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: no client {id:?} registered at run time");
        Ok(ExitCode::FAILURE)
    }
}
