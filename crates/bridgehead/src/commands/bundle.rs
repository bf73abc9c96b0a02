//! `bridgehead bundle`: the air-gapped kit. One directory to carry across: the binary, the
//! config with every file it names (rewritten to paths inside the kit), the systemd unit, shell
//! completions and the man page, an image tarball `docker load` / `podman load` read, and
//! `SHA256SUMS`. `bridgehead bundle verify` checks a kit on the far side.
//!
//! The image is written here rather than by a container tool because the field machine has
//! none: the binary is static, so one layer holding it, the config, a passwd entry for the
//! non-root user and the CA bundle is a complete image. The archive is the `docker save` layout
//! (`manifest.json`, the config blob named by its digest, `<id>/layer.tar`), which Docker,
//! Podman, skopeo and containerd all load. Entries carry fixed times, so the same inputs give
//! the same layer digest.
//!
//! The config is rewritten in place (only the scalars that name files change, comments and
//! layout stay) using the loader's scalar positions. `${env:…}` references stay references:
//! the far side sets them. `${file:…}` references are files like any other and are copied.
//!
//! Protos and WSDLs are collected by what their compilers read, imports included, placed so
//! that they resolve in the kit as here; the kit's config is loaded and its schemas compiled
//! before the kit is finished. The kit is written beside `--out` and renamed into place, so a
//! failure leaves nothing half-made; an existing empty `--out` (a mount point) is written in
//! place, and on failure the kit's own entries are removed from it again. Not collected: the state database (the kit starts with
//! an empty one).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use bridgehead_config::LoadedConfig;

/// Where the config sits in the image, and the user the image runs as.
const IMAGE_CONFIG_DIR: &str = "etc/bridgehead";
const IMAGE_USER: u64 = 65532;
/// Entries of the image layer carry this time (2024-01-01), so layers are reproducible.
const LAYER_MTIME: u64 = 1_704_067_200;
const UNIT: &str = include_str!("../../../../deploy/systemd/bridgehead.service");
/// Everything `fill_kit` writes at the top of a kit.
const KIT_ENTRIES: [&str; 7] =
    ["bridgehead", "bridgehead.service", "bridgehead.1", "completions", "config", "image.tar", "SHA256SUMS"];

#[derive(clap::Subcommand)]
pub enum BundleCommand {
    /// Check a kit: every file against SHA256SUMS, nothing unlisted, the config loads (with
    /// this machine's environment), the image's digests, and that the binary runs here.
    ///
    /// Example: bridgehead bundle verify ./kit
    Verify { dir: PathBuf },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub command: Option<BundleCommand>,
    /// The config to ship.
    #[arg(short, long, required = true)]
    pub config: Option<PathBuf>,
    /// The kit's directory (created; must be empty if it exists).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// The binary to ship (default: this one). Use a static build (scripts/build-static) for
    /// hosts other than this one.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The image's name and tag.
    #[arg(long, default_value = concat!("bridgehead:", env!("CARGO_PKG_VERSION")))]
    pub tag: String,
}

pub fn run(args: BundleArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    if let Some(BundleCommand::Verify { dir }) = args.command {
        return verify(&dir);
    }
    let (Some(config), Some(out)) = (args.config, args.out) else { bail!("--config and --out are required") };
    let started = std::time::Instant::now();
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("cannot find this binary; name one with --binary")?,
    };
    write_kit(&config, &out, &binary, &args.tag, cli)?;
    eprintln!("kit written to {} in {:.1}s", out.display(), started.elapsed().as_secs_f64());
    eprintln!("on the far side: bridgehead bundle verify DIR; docker load -i DIR/image.tar");
    Ok(ExitCode::SUCCESS)
}

/// What goes into `config/`: files by their place in the kit, and the scalars to rewrite.
#[derive(Default)]
struct Plan {
    /// Kit path (relative to `config/`) → the file copied there.
    copies: BTreeMap<String, PathBuf>,
    /// A single file already placed, by its canonical path.
    placed: BTreeMap<PathBuf, String>,
    /// Key path → (text as written, its replacement).
    rewrites: BTreeMap<String, Vec<(String, String)>>,
    next: usize,
}

impl Plan {
    /// A fresh name under `files/`: its number, then a readable label (never colliding).
    fn name(&mut self, label: &str) -> String {
        self.next += 1;
        let clean: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect();
        format!("files/{:02}-{clean}", self.next)
    }

    fn copy(&mut self, dest: String, source: PathBuf) -> anyhow::Result<()> {
        if dest == "bridgehead.yaml" {
            bail!("{} would replace the kit's config", source.display());
        }
        match self.copies.get(&dest) {
            Some(other) if *other != source => {
                bail!("{} and {} would both be config/{dest} in the kit", other.display(), source.display())
            }
            _ => {
                self.copies.insert(dest, source);
                Ok(())
            }
        }
    }

    fn rewrite(&mut self, key: String, from: String, to: String) {
        if from != to {
            self.rewrites.entry(key).or_default().push((from, to));
        }
    }

    /// A single file named by `key` (as `written`; `interpolated`: inside `${file:…}`).
    fn file(
        &mut self,
        loaded: &LoadedConfig,
        key: &str,
        written: &str,
        interpolated: bool,
    ) -> anyhow::Result<()> {
        let source = canonical(loaded, key, written)?;
        let name = match self.placed.get(&source) {
            Some(name) => name.clone(),
            None => {
                let label = source.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let name = self.name(&label);
                self.copy(name.clone(), source.clone())?;
                self.placed.insert(source, name.clone());
                name
            }
        };
        if interpolated {
            self.rewrite(key.to_owned(), format!("${{file:{written}}}"), format!("${{file:{name}}}"));
        } else {
            self.rewrite(key.to_owned(), written.to_owned(), name);
        }
        Ok(())
    }
}

fn canonical(loaded: &LoadedConfig, key: &str, written: &str) -> anyhow::Result<PathBuf> {
    let source = loaded.resolve_path(Path::new(written));
    source.canonicalize().with_context(|| format!("{key}: cannot read {}", source.display()))
}

/// Plans every file the config names: by the typed config (`Config::named_files`), by
/// `${file:…}` references in the text, and for protos and WSDLs by what their compilers
/// actually read (imports included).
fn plan(loaded: &LoadedConfig, sites: &[bridgehead_config::ScalarSite]) -> anyhow::Result<Plan> {
    let c = &loaded.config;
    let mut plan = Plan::default();
    for f in c.named_files() {
        plan.file(loaded, &f.key, &f.path.display().to_string(), false)?;
    }
    for site in sites {
        for written in bridgehead_config::file_references(&site.raw) {
            plan.file(loaded, &site.path, &written, true)?;
        }
    }
    for (name, svc) in &c.grpc.services {
        plan_protos(&mut plan, loaded, name, svc)?;
    }
    for (name, svc) in &c.soap.services {
        if !svc.wsdl.starts_with("http://") && !svc.wsdl.starts_with("https://") {
            plan_wsdl(&mut plan, loaded, name, &svc.wsdl)?;
        }
    }
    Ok(plan)
}

/// Replaces `${file:FROM}` by `${file:TO}` where it is a reference (not after `$`).
fn replace_reference(raw: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find(from) {
        out.push_str(&rest[..at]);
        let escaped = out.ends_with('$');
        out.push_str(if escaped { from } else { to });
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// A service's protos and everything they import, placed so that they resolve in the kit as
/// they do here: each `include` directory becomes a directory of the kit holding the files
/// used from it, and files found beside the config keep their relative paths.
fn plan_protos(
    plan: &mut Plan,
    loaded: &LoadedConfig,
    name: &str,
    svc: &bridgehead_config::GrpcService,
) -> anyhow::Result<()> {
    let d = &svc.descriptors;
    if d.protos.is_empty() {
        return Ok(());
    }
    let base = format!("grpc.services.{name}.descriptors");
    let sources = bridgehead_grpc::service::proto_sources(name, svc, loaded).map_err(|e| anyhow!("{e}"))?;
    let dirs: Vec<String> = d
        .include
        .iter()
        .map(|inc| {
            let label =
                Path::new(inc).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            plan.name(&label)
        })
        .collect();
    for (i, (inc, dir)) in d.include.iter().zip(&dirs).enumerate() {
        plan.rewrite(format!("{base}.include[{i}]"), inc.clone(), dir.clone());
    }
    for (import, path, root) in &sources {
        let dest = match dirs.get(*root) {
            Some(dir) => format!("{dir}/{import}"),
            None => import.clone(),
        };
        plan.copy(dest, path.clone())?;
    }
    // A proto named by an absolute path is named by its import name in the kit.
    for (i, p) in d.protos.iter().enumerate() {
        if Path::new(p).is_absolute() {
            let canon = canonical(loaded, &format!("{base}.protos[{i}]"), p)?;
            if let Some((import, _, _)) = sources.iter().find(|(_, path, _)| *path == canon) {
                plan.rewrite(format!("{base}.protos[{i}]"), p.clone(), import.clone());
            }
        }
    }
    Ok(())
}

/// A WSDL file and the documents it imports, kept in their relative places in a directory of
/// the kit.
fn plan_wsdl(plan: &mut Plan, loaded: &LoadedConfig, name: &str, wsdl: &str) -> anyhow::Result<()> {
    let key = format!("soap.services.{name}.wsdl");
    let location = canonical(loaded, &key, wsdl)?;
    let docs = bridgehead_soap::service::wsdl_files(&location.to_string_lossy())
        .map_err(|e| anyhow!("{key}: {e}"))?;
    let docs: Vec<PathBuf> = docs.iter().map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())).collect();
    // The deepest directory holding them all.
    let mut top = location.parent().map(Path::to_path_buf).unwrap_or_default();
    while !docs.iter().all(|d| d.starts_with(&top)) {
        top = top
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("{key}: documents share no directory"))?;
    }
    let dir = plan.name("wsdl");
    for d in &docs {
        let rel = d.strip_prefix(&top)?.to_string_lossy().into_owned();
        plan.copy(format!("{dir}/{rel}"), d.clone())?;
    }
    let rel = location.strip_prefix(&top)?.to_string_lossy().into_owned();
    plan.rewrite(key, wsdl.to_owned(), format!("{dir}/{rel}"));
    Ok(())
}

/// Checks that the schema files of `loaded`'s gRPC and SOAP services load (the ones read at
/// start from the network excepted).
fn check_schemas(loaded: &LoadedConfig) -> Result<(), String> {
    for (name, svc) in &loaded.config.grpc.services {
        bridgehead_grpc::service::check_files(name, svc, loaded).map_err(|e| e.to_string())?;
    }
    bridgehead_soap::service::preflight(loaded).map_err(|e| e.to_string())
}

/// The architecture of an ELF binary, as image configs name it.
fn architecture(bin: &[u8]) -> anyhow::Result<&'static str> {
    if bin.len() < 20 || &bin[..4] != b"\x7fELF" {
        bail!("the binary is not an ELF executable");
    }
    match u16::from_le_bytes([bin[18], bin[19]]) {
        0x3e => Ok("amd64"),
        0xb7 => Ok("arm64"),
        m => bail!("the binary is for an unsupported machine (ELF e_machine {m:#x})"),
    }
}

/// `NAME[:TAG]` as `docker load` takes it (a registry port is part of the name).
fn split_tag(tag: &str) -> anyhow::Result<(&str, &str)> {
    let (name, version) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (tag, "latest"),
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        });
    let tag_ok = !version.is_empty()
        && version.len() <= 128
        && version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok || !tag_ok {
        bail!("--tag {tag:?} is not NAME[:TAG] (lower-case name, tag of letters, digits, `.`, `_`, `-`)");
    }
    Ok((name, version))
}

fn write_kit(config: &Path, out: &Path, binary: &Path, tag: &str, cli: clap::Command) -> anyhow::Result<()> {
    let loaded = bridgehead_config::load(config).map_err(|d| anyhow!("{d}"))?;
    let text = std::fs::read_to_string(config)?;
    let sites =
        bridgehead_config::scalar_sites(&text).map_err(|e| anyhow!("{}: {}", config.display(), e.message))?;
    split_tag(tag)?;
    let bin = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let arch = architecture(&bin)?;
    let plan = plan(&loaded, &sites)?;

    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty", out.display());
    }
    // Written beside `out` and renamed at the end, so that a failed run leaves nothing
    // half-made; an existing empty `out` (a mount point) is written in place and emptied
    // again on failure.
    if out.exists() {
        let result = fill_kit(out, &text, &sites, &plan, &bin, arch, &loaded, tag, cli);
        if result.is_err() {
            // Only what a kit holds: anything else that appeared meanwhile stays.
            for name in KIT_ENTRIES {
                let p = out.join(name);
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
        return result;
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let work = tempfile::Builder::new().prefix(".bridgehead-kit-").tempdir_in(parent)?;
    fill_kit(work.path(), &text, &sites, &plan, &bin, arch, &loaded, tag, cli)?;
    std::fs::rename(work.path(), out)?;
    let _ = work.keep();
    Ok(())
}

/// Writes the kit into the empty directory `kit`.
#[allow(clippy::too_many_arguments)]
fn fill_kit(
    kit: &Path,
    text: &str,
    sites: &[bridgehead_config::ScalarSite],
    plan: &Plan,
    bin: &[u8],
    arch: &str,
    loaded: &LoadedConfig,
    tag: &str,
    cli: clap::Command,
) -> anyhow::Result<()> {
    set_mode(kit, 0o700)?;
    let conf_dir = kit.join("config");
    std::fs::create_dir_all(&conf_dir)?;

    // The files: readable by their owner only (keys and `${file:…}` secrets are among them).
    for (dest, source) in &plan.copies {
        let target = conf_dir.join(dest);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(source, &target).with_context(|| format!("cannot copy {}", source.display()))?;
        set_mode(&target, 0o600)?;
    }
    // The scalars, last first so that earlier byte ranges stay valid.
    let mut new_text = text.to_owned();
    let mut done = 0;
    for site in sites.iter().rev() {
        let Some(changes) = plan.rewrites.get(&site.path) else { continue };
        if site.block {
            bail!("{}: write this path as a plain or quoted scalar, not a block scalar", site.path);
        }
        let value = if changes.iter().all(|(from, _)| from.starts_with("${file:")) {
            changes.iter().fold(site.raw.clone(), |v, (from, to)| replace_reference(&v, from, to))
        } else {
            changes[0].1.clone()
        };
        new_text.replace_range(site.range.clone(), &serde_json::to_string(&value)?);
        done += 1;
    }
    if done != plan.rewrites.len() {
        let found: Vec<&str> = sites.iter().map(|s| s.path.as_str()).collect();
        let missing: Vec<&String> = plan.rewrites.keys().filter(|k| !found.contains(&k.as_str())).collect();
        bail!("cannot rewrite {missing:?}: write each path as its own scalar (not through an alias)");
    }
    // The config may hold secrets written inline: owner only, like the files.
    std::fs::write(conf_dir.join("bridgehead.yaml"), &new_text)?;
    set_mode(&conf_dir.join("bridgehead.yaml"), 0o600)?;
    // The config must load from the kit, and its schema files compile there.
    let kit_config = bridgehead_config::load(&conf_dir.join("bridgehead.yaml"))
        .map_err(|d| anyhow!("the rewritten config does not load (please report this):\n{d}"))?;
    check_schemas(&kit_config).map_err(|e| anyhow!("in the kit: {e} (please report this)"))?;
    // A WSDL that imports by absolute path would still read this machine's files.
    let kit_root = conf_dir.canonicalize()?;
    for (name, svc) in &kit_config.config.soap.services {
        if svc.wsdl.starts_with("http://") || svc.wsdl.starts_with("https://") {
            continue;
        }
        let location = kit_config.resolve_path(Path::new(&svc.wsdl)).to_string_lossy().into_owned();
        for doc in bridgehead_soap::service::wsdl_files(&location).map_err(|e| anyhow!("{e}"))? {
            if !doc.canonicalize().is_ok_and(|d| d.starts_with(&kit_root)) {
                bail!(
                    "soap.services.{name}.wsdl: {} is imported by an absolute path; import it by a relative one",
                    doc.display()
                );
            }
        }
    }

    // The binary, the unit, completions and the man page.
    std::fs::write(kit.join("bridgehead"), bin)?;
    set_mode(&kit.join("bridgehead"), 0o755)?;
    std::fs::write(kit.join("bridgehead.service"), UNIT)?;
    std::fs::create_dir_all(kit.join("completions"))?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "bridgehead.bash"),
        (clap_complete::Shell::Zsh, "_bridgehead"),
        (clap_complete::Shell::Fish, "bridgehead.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "bridgehead", &mut buf);
        std::fs::write(kit.join("completions").join(file), buf)?;
    }
    let mut man = Vec::new();
    clap_mangen::Man::new(cli).render(&mut man)?;
    std::fs::write(kit.join("bridgehead.1"), man)?;

    write_image(kit, bin, arch, &conf_dir, loaded, tag)?;
    set_mode(&kit.join("image.tar"), 0o600)?;
    write_sums(kit)?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

fn header(size: u64, mode: u32, uid: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(LAYER_MTIME);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64) -> anyhow::Result<()> {
    let mut h = header(0, mode, uid, tar::EntryType::Directory);
    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    Ok(())
}

fn add_file(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
    uid: u64,
) -> anyhow::Result<()> {
    let mut h = header(data.len() as u64, mode, uid, tar::EntryType::Regular);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

/// Adds `dir`'s files under `prefix`, sorted, readable by the image's user only.
fn add_tree(b: &mut tar::Builder<Vec<u8>>, dir: &Path, prefix: &str) -> anyhow::Result<()> {
    add_dir(b, prefix, 0o750, IMAGE_USER)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
        if e.file_type()?.is_dir() {
            add_tree(b, &e.path(), &name)?;
        } else {
            add_file(b, &name, &std::fs::read(e.path())?, 0o440, IMAGE_USER)?;
        }
    }
    Ok(())
}

/// The ports the image exposes: the data and admin listeners'.
fn exposed_ports(loaded: &LoadedConfig) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for addr in [loaded.config.server.listen, loaded.config.admin.listen] {
        if addr.port() != 0 {
            ports.insert(format!("{}/tcp", addr.port()), serde_json::json!({}));
        }
    }
    serde_json::Value::Object(ports)
}

/// The image's one layer, and the environment it needs: the binary, the config, a passwd
/// entry for the non-root user, the CA bundle, the state directory.
fn layer(bin: &[u8], conf_dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let mut layer = tar::Builder::new(Vec::new());
    add_file(&mut layer, "bridgehead", bin, 0o755, 0)?;
    add_dir(&mut layer, "etc", 0o755, 0)?;
    add_file(
        &mut layer,
        "etc/passwd",
        format!("root:x:0:0:root:/root:/sbin/nologin\nbridgehead:x:{IMAGE_USER}:{IMAGE_USER}:bridgehead:/var/lib/bridgehead:/sbin/nologin\n").as_bytes(),
        0o644,
        0,
    )?;
    add_file(
        &mut layer,
        "etc/group",
        format!("root:x:0:\nbridgehead:x:{IMAGE_USER}:\n").as_bytes(),
        0o644,
        0,
    )?;
    add_file(&mut layer, "etc/nsswitch.conf", b"hosts: files dns\n", 0o644, 0)?;
    // The system roots the upstream TLS client trusts besides a config's own CAs: this
    // machine's bundle.
    let ca_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let mut env = Vec::new();
    match std::fs::read(ca_bundle) {
        Ok(cas) => {
            add_dir(&mut layer, "etc/ssl", 0o755, 0)?;
            add_dir(&mut layer, "etc/ssl/certs", 0o755, 0)?;
            add_file(&mut layer, "etc/ssl/certs/ca-certificates.crt", &cas, 0o644, 0)?;
            env.push(format!("SSL_CERT_FILE={}", ca_bundle.display()));
        }
        Err(e) => eprintln!(
            "warning: no CA bundle in the image ({}: {e}): only the config's own CAs will be trusted",
            ca_bundle.display()
        ),
    }
    add_tree(&mut layer, conf_dir, IMAGE_CONFIG_DIR)?;
    add_dir(&mut layer, "tmp", 0o1777, 0)?;
    add_dir(&mut layer, "var", 0o755, 0)?;
    add_dir(&mut layer, "var/lib", 0o755, 0)?;
    add_dir(&mut layer, "var/lib/bridgehead", 0o700, IMAGE_USER)?;
    Ok((layer.into_inner()?, env))
}

fn write_image(
    out: &Path,
    bin: &[u8],
    arch: &str,
    conf_dir: &Path,
    loaded: &LoadedConfig,
    tag: &str,
) -> anyhow::Result<()> {
    let (layer, env) = layer(bin, conf_dir)?;
    let layer_digest = sha256_hex(&layer);

    let version = super::version::current();
    // SOURCE_DATE_EPOCH (reproducible builds) fixes the creation time, and with it the image id.
    // Up to the last second of year 9999, which RFC 3339 can write.
    let created_at = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => match v.parse::<u64>() {
            Ok(t) if t <= 253_402_300_799 => std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            _ => bail!("SOURCE_DATE_EPOCH={v:?} is not a Unix time up to the year 9999"),
        },
        Err(_) => std::time::SystemTime::now(),
    };
    let created = humantime::format_rfc3339_seconds(created_at).to_string();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{IMAGE_USER}:{IMAGE_USER}"),
            "Env": env,
            "Entrypoint": ["/bridgehead"],
            "Cmd": ["serve", "-c", format!("/{IMAGE_CONFIG_DIR}/bridgehead.yaml")],
            "WorkingDir": "/var/lib/bridgehead",
            "ExposedPorts": exposed_ports(loaded),
            "Volumes": { "/var/lib/bridgehead": {} },
            "Labels": {
                "org.opencontainers.image.title": "bridgehead",
                "org.opencontainers.image.version": version.version,
                "org.opencontainers.image.revision": version.commit,
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
        "history": [{ "created": created, "created_by": "bridgehead bundle" }],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256_hex(&config);
    let (repo, version_tag) = split_tag(tag)?;
    let manifest = serde_json::json!([{
        "Config": format!("{config_digest}.json"),
        "RepoTags": [format!("{repo}:{version_tag}")],
        "Layers": [format!("{layer_digest}/layer.tar")],
    }]);
    let repositories = serde_json::json!({ repo: { version_tag: layer_digest } });

    let file = std::fs::File::create(out.join("image.tar"))?;
    let mut image = tar::Builder::new(std::io::BufWriter::new(file));
    let mut put = |path: &str, data: &[u8], kind: tar::EntryType| -> anyhow::Result<()> {
        let mut h =
            header(data.len() as u64, if kind == tar::EntryType::Directory { 0o755 } else { 0o644 }, 0, kind);
        let name = if kind == tar::EntryType::Directory { format!("{path}/") } else { path.to_owned() };
        image.append_data(&mut h, name, data)?;
        Ok(())
    };
    put(&layer_digest, b"", tar::EntryType::Directory)?;
    put(&format!("{layer_digest}/VERSION"), b"1.0", tar::EntryType::Regular)?;
    put(&format!("{layer_digest}/layer.tar"), &layer, tar::EntryType::Regular)?;
    put(&format!("{config_digest}.json"), &config, tar::EntryType::Regular)?;
    put("manifest.json", &serde_json::to_vec(&manifest)?, tar::EntryType::Regular)?;
    put("repositories", &serde_json::to_vec(&repositories)?, tar::EntryType::Regular)?;
    image.into_inner()?.flush()?;
    Ok(())
}

/// Every regular file under `dir`, as sorted relative paths.
fn list_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                walk(root, &e.path(), out)?;
            } else {
                let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.retain(|p| p != "SHA256SUMS");
    out.sort();
    Ok(out)
}

/// `SHA256SUMS` in `sha256sum` format (`sha256sum -c SHA256SUMS` checks it too).
fn write_sums(out: &Path) -> anyhow::Result<()> {
    let mut sums = String::new();
    for rel in list_files(out)? {
        let data = std::fs::read(out.join(&rel))?;
        sums.push_str(&format!("{}  {rel}\n", sha256_hex(&data)));
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    Ok(())
}

/// Reads the `docker save` archive: (path → bytes) of its entries.
fn read_tar(data: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut entries = BTreeMap::new();
    for e in tar::Archive::new(data).entries()? {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().trim_end_matches('/').to_owned();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf)?;
        entries.insert(path, buf);
    }
    Ok(entries)
}

/// Checks the image: digests, and that its binary is the kit's.
fn check_image(dir: &Path) -> anyhow::Result<String> {
    let data = std::fs::read(dir.join("image.tar"))?;
    let entries = read_tar(&data)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(entries.get("manifest.json").ok_or_else(|| anyhow!("no manifest.json"))?)?;
    let m = &manifest[0];
    let config_name = m["Config"].as_str().ok_or_else(|| anyhow!("manifest.json names no config"))?;
    let config = entries.get(config_name).ok_or_else(|| anyhow!("{config_name} is missing"))?;
    if format!("{}.json", sha256_hex(config)) != config_name {
        bail!("{config_name} does not match its digest");
    }
    let config: serde_json::Value = serde_json::from_slice(config)?;
    let layers: Vec<&str> = m["Layers"].as_array().into_iter().flatten().filter_map(|l| l.as_str()).collect();
    let diff_ids: Vec<&str> =
        config["rootfs"]["diff_ids"].as_array().into_iter().flatten().filter_map(|l| l.as_str()).collect();
    if layers.len() != 1 || diff_ids.len() != 1 {
        bail!("expected one layer, found {} (diff_ids: {})", layers.len(), diff_ids.len());
    }
    let layer = entries.get(layers[0]).ok_or_else(|| anyhow!("{} is missing", layers[0]))?;
    if format!("sha256:{}", sha256_hex(layer)) != diff_ids[0] {
        bail!("{} does not match the config's diff_id", layers[0]);
    }
    let files = read_tar(layer)?;
    let bin = files.get("bridgehead").ok_or_else(|| anyhow!("the layer holds no /bridgehead"))?;
    if sha256_hex(bin) != sha256_hex(&std::fs::read(dir.join("bridgehead"))?) {
        bail!("the image's /bridgehead is not the kit's binary");
    }
    Ok(m["RepoTags"][0].as_str().unwrap_or("(untagged)").to_owned())
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    // The binary runs only once its checksum matched.
    let mut binary_ok = false;
    let mut report = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        failed |= !ok;
    };
    // Files against SHA256SUMS, and nothing unlisted.
    match std::fs::read_to_string(dir.join("SHA256SUMS")) {
        Err(e) => report(false, format!("SHA256SUMS: {e}")),
        Ok(sums) => {
            let mut listed = Vec::new();
            let mut bad = Vec::new();
            for line in sums.lines() {
                let Some((want, rel)) = line.split_once("  ") else {
                    bad.push(format!("malformed line {line:?}"));
                    continue;
                };
                if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
                    bad.push(format!("{rel}: outside the kit"));
                    continue;
                }
                listed.push(rel.to_owned());
                match std::fs::read(dir.join(rel)) {
                    Ok(data) if sha256_hex(&data) == want => {}
                    Ok(_) => bad.push(format!("{rel}: changed since the kit was made")),
                    Err(e) => bad.push(format!("{rel}: {e}")),
                }
            }
            match list_files(dir) {
                Ok(present) => {
                    for p in present.iter().filter(|p| !listed.contains(p)) {
                        bad.push(format!("{p}: not in SHA256SUMS"));
                    }
                }
                Err(e) => bad.push(e.to_string()),
            }
            if bad.is_empty() {
                report(true, format!("{} files match SHA256SUMS", listed.len()));
            }
            binary_ok = !bad.iter().any(|b| b.starts_with("bridgehead:"));
            for b in bad {
                report(false, b);
            }
        }
    }
    match bridgehead_config::load(&dir.join("config/bridgehead.yaml")) {
        Ok(loaded) => match check_schemas(&loaded) {
            Ok(()) => report(true, "config/bridgehead.yaml loads, and its schema files compile".into()),
            Err(e) => report(false, format!("config/bridgehead.yaml: {e}")),
        },
        Err(d) => report(false, format!("config/bridgehead.yaml does not load here:\n{d}")),
    }
    match check_image(dir) {
        Ok(tag) => report(true, format!("image.tar ({tag}): digests match, its /bridgehead is the kit's")),
        Err(e) => report(false, format!("image.tar: {e:#}")),
    }
    if !binary_ok {
        report(false, "bridgehead not run: its checksum did not match or could not be checked".into());
        return Ok(ExitCode::FAILURE);
    }
    match std::process::Command::new(dir.join("bridgehead")).arg("version").output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            report(true, format!("bridgehead runs here: {}", v.lines().next().unwrap_or("").trim()));
        }
        Ok(o) => {
            report(
                false,
                format!("bridgehead version failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
            );
        }
        Err(e) => report(false, format!("bridgehead does not run here: {e}")),
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
