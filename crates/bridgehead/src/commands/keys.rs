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
    }
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
