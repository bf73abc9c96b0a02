//! `bridgehead token`: fetches an OAuth 2.0 client-credentials token exactly as
//! `curl -u ID:SECRET -d grant_type=client_credentials TOKEN_URL` would, with the same request the
//! gateway sends for `upstreams.*.credentials.oauth2_client_credentials`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bridgehead_config::{ClientAuthMethod, Secret};
use bridgehead_upstream::credentials::{TokenError, TokenRequest};

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The token endpoint.
    #[arg(long)]
    token_url: String,
    /// Client id.
    #[arg(long)]
    client_id: String,
    /// Name of the environment variable that holds the client secret (never pass it as an argument:
    /// it would show in the process list and the shell history).
    #[arg(long, value_name = "VAR")]
    client_secret_env: String,
    /// Space-separated scopes to ask for.
    #[arg(long)]
    scope: Option<String>,
    /// `audience` parameter, for endpoints that want one.
    #[arg(long)]
    audience: Option<String>,
    /// `basic` (HTTP Basic, the default) or `post` (id and secret in the form body).
    #[arg(long, default_value = "basic", value_parser = parse_method)]
    auth_method: ClientAuthMethod,
    /// PEM CA bundle trusted in addition to the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Print the token's decoded header and claims (when it is a JWT) instead of the token.
    #[arg(long)]
    decode: bool,
}

fn parse_method(s: &str) -> Result<ClientAuthMethod, String> {
    match s {
        "basic" => Ok(ClientAuthMethod::Basic),
        "post" => Ok(ClientAuthMethod::Post),
        _ => Err(format!("`{s}`: expected basic or post")),
    }
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let secret = std::env::var(&args.client_secret_env).with_context(|| {
        format!(
            "environment variable {} is not set (it should hold the client secret)",
            args.client_secret_env
        )
    })?;
    if secret.is_empty() {
        bail!("environment variable {} is empty", args.client_secret_env);
    }
    let request = TokenRequest {
        token_url: args.token_url.clone(),
        client_id: args.client_id,
        client_secret: Secret::new(secret),
        scope: args.scope,
        audience: args.audience,
        auth_method: args.auth_method,
    };
    let client = bridgehead_upstream::fetch::client(args.ca.as_deref(), Duration::from_secs(30))
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let result = super::runtime(Some(1))?.block_on(request.send(&client));
    let token = match result {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            if let TokenError::Refused { status: 401, error: None, .. } = e {
                eprintln!(
                    "hint: a 401 without an OAuth error usually means the URL is not the token endpoint, or it wants --auth-method post"
                );
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(exp) = token.expires_in {
        eprintln!("expires in {}", humantime::format_duration(Duration::from_secs(exp.as_secs())));
    }
    if let Some(scope) = &token.scope {
        eprintln!("scope: {scope}");
    }
    if !args.decode {
        println!("{}", token.access_token);
        return Ok(ExitCode::SUCCESS);
    }
    match bridgehead_auth::jwt::decode_unverified(&token.access_token) {
        Ok((header, claims)) => {
            let out = serde_json::json!({ "header": header, "claims": claims });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Err(_) => {
            eprintln!("the token is opaque (not a JWT), so it has no claims to show");
            println!("{}", token.access_token);
        }
    }
    Ok(ExitCode::SUCCESS)
}
