//! `bridgehead keys generate`: a signing key pair for tests, demos and small deployments, written
//! as `private.pem` (mode 0600), `public.pem` and `jwks.json`. Existing files are never replaced
//! without `--force`, and nothing is written unless all three can be.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bridgehead_auth::jwt::{self, Algorithm, keygen};

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a signing key pair: DIR/private.pem (0600), DIR/public.pem and DIR/jwks.json.
    ///
    /// The kid is the key's RFC 7638 thumbprint unless --kid is given. Existing files are kept
    /// unless --force. RSA keys are 2048-bit.
    ///
    /// Example: bridgehead keys generate --alg ES256 --out keys/
    Generate(GenerateArgs),
    /// Rotate the built-in authorization server's signing key (in the state database).
    ///
    /// The new key is published in the JWKS at once and starts signing after --publish-ahead, so
    /// that verifiers that cache the JWKS learn it first. The current keys retire once every token
    /// they signed has expired (oauth_server.access_token_ttl later). Running gateways pick the
    /// change up within 10 s.
    ///
    /// Example: bridgehead keys rotate -c bridgehead.yaml --publish-ahead 15m
    Rotate(RotateArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    config: super::apikey::ConfigArg,
    /// How long the new key is published before it signs.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    publish_ahead: std::time::Duration,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512 or EdDSA.
    #[arg(long, value_parser = parse_key_alg)]
    alg: Algorithm,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// `kid` for jwks.json instead of the thumbprint.
    /// (A kid may start with `-`: RFC 7638 thumbprints are base64url.)
    #[arg(long, allow_hyphen_values = true)]
    kid: Option<String>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// Asymmetric algorithms only: HMAC secrets are not key pairs.
fn parse_key_alg(name: &str) -> Result<Algorithm, String> {
    let alg = jwt::parse_algorithm(name)?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!(
            "{name} uses a shared secret, not a key pair; use any 32+ random bytes as the secret"
        ));
    }
    Ok(alg)
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate(args) => generate(args),
        KeysCommand::Rotate(args) => rotate(args),
    }
}

fn rotate(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let loaded = bridgehead_config::load(&args.config.config).map_err(|d| anyhow::anyhow!("{d}"))?;
    let Some(oauth) = &loaded.config.oauth_server else {
        anyhow::bail!(
            "{} has no oauth_server: there is no local issuer whose keys could rotate",
            args.config.config.display()
        );
    };
    let ttl = oauth.access_token_ttl.get().as_secs() as i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let activate_at = now + args.publish_ahead.as_secs() as i64;
    let generated =
        bridgehead_auth::jwt::keygen::generate(Algorithm::ES256).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rec = bridgehead_state::OAuthKeyRecord {
        kid: generated.kid.clone(),
        alg: "ES256".into(),
        private_pem: generated.private_pem,
        public_jwk: generated.jwks["keys"][0].to_string(),
        created_at: now,
        activate_at,
        retire_at: None,
    };
    let retire_at = activate_at + ttl + 60;
    let retired = super::apikey::with_store(args.config, async |store| {
        let old: Vec<String> = store
            .oauth_keys_all()
            .await?
            .into_iter()
            .filter(|k| k.retire_at.is_none_or(|t| t > retire_at))
            .map(|k| k.kid)
            .collect();
        store.oauth_key_insert(&rec).await?;
        for kid in &old {
            store.oauth_key_retire(kid, retire_at).await?;
        }
        Ok(old)
    })?;
    println!(
        "new key {} signs from {}",
        rec.kid,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(activate_at as u64)
        )
    );
    for kid in retired {
        println!(
            "key {kid} retires at {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(retire_at as u64)
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let private = args.out.join("private.pem");
    let public = args.out.join("public.pem");
    let jwks = args.out.join("jwks.json");
    let existing: Vec<String> =
        [&private, &public, &jwks].iter().filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
    if !existing.is_empty() && !args.force {
        bail!("{} already exist(s); pass --force to overwrite", existing.join(", "));
    }
    let mut generated = keygen::generate(args.alg)?;
    if let Some(kid) = &args.kid {
        generated.kid = kid.clone();
        generated.jwks["keys"][0]["kid"] = kid.clone().into();
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    write_private(&private, generated.private_pem.as_bytes())?;
    std::fs::write(&public, &generated.public_pem)
        .with_context(|| format!("cannot write {}", public.display()))?;
    let jwks_text = serde_json::to_string_pretty(&generated.jwks)? + "\n";
    std::fs::write(&jwks, jwks_text).with_context(|| format!("cannot write {}", jwks.display()))?;

    let alg = jwt::algorithm_name(args.alg);
    println!("wrote {} (keep it secret; mode 0600)", private.display());
    println!("wrote {}", public.display());
    println!("wrote {}", jwks.display());
    println!("kid: {}", generated.kid);
    println!("alg: {alg}");
    println!(
        "sign a token: bridgehead jwt sign --key {} --alg {alg} --kid {} --claims '{{\"sub\":\"alice\"}}' --ttl 1h",
        private.display(),
        generated.kid
    );
    Ok(ExitCode::SUCCESS)
}

/// Owner read/write only, also when `--force` replaces a file that had wider permissions.
fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        file.write_all(pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
