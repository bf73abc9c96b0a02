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
//! Not collected: files a WSDL imports (copy them beside the WSDL into `config/files/` by
//! hand; `bundle` warns when a local WSDL has imports), and the state database (the kit starts
//! with an empty one).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use bridgehead_config::{Authenticator, Credentials, LoadedConfig};

/// Where the config sits in the image, and the user the image runs as.
const IMAGE_CONFIG_DIR: &str = "etc/bridgehead";
const IMAGE_USER: u64 = 65532;
/// Entries of the image layer carry this time (2024-01-01), so layers are reproducible.
const LAYER_MTIME: u64 = 1_704_067_200;
const UNIT: &str = include_str!("../../../../deploy/systemd/bridgehead.service");
/// A directory given as a proto `include` is copied whole, up to this many files.
const MAX_DIR_FILES: usize = 10_000;

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

/// A file or directory the config names.
struct Reference {
    /// Key path of the scalar that names it.
    key: String,
    /// As written (for `${file:…}`, the path inside the reference).
    written: String,
    dir: bool,
    /// A `${file:…}` reference inside the scalar rather than the scalar itself.
    interpolated: bool,
}

/// Every file and directory the config names, by the typed config (so a key the loader reads
/// is never missed by a list kept elsewhere) and by `${file:…}` references in the text.
fn references(loaded: &LoadedConfig, sites: &[bridgehead_config::ScalarSite]) -> Vec<Reference> {
    let c = &loaded.config;
    let mut refs = Vec::new();
    let mut more = Vec::new();
    let mut file = |key: String, p: &Path| {
        refs.push(Reference { key, written: p.display().to_string(), dir: false, interpolated: false });
    };
    if let Some(tls) = &c.server.tls {
        file("server.tls.cert".into(), &tls.cert);
        file("server.tls.key".into(), &tls.key);
        if let Some(ca) = &tls.client_ca {
            file("server.tls.client_ca".into(), ca);
        }
    }
    for (name, u) in &c.upstreams {
        if let Some(tls) = &u.tls {
            for (k, v) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if let Some(p) = v {
                    file(format!("upstreams.{name}.tls.{k}"), p);
                }
            }
        }
        if let Some(Credentials::Oauth2ClientCredentials(o)) = &u.credentials
            && let Some(ca) = &o.ca
        {
            file(format!("upstreams.{name}.credentials.oauth2_client_credentials.ca"), ca);
        }
    }
    for (name, a) in &c.authenticators {
        match a {
            Authenticator::Jwt(j) => {
                for (k, v) in
                    [("jwks_file", &j.jwks_file), ("public_key_file", &j.public_key_file), ("ca", &j.ca)]
                {
                    if let Some(p) = v {
                        file(format!("authenticators.{name}.jwt.{k}"), p);
                    }
                }
            }
            Authenticator::Introspection(i) => {
                if let Some(ca) = &i.ca {
                    file(format!("authenticators.{name}.introspection.ca"), ca);
                }
            }
            _ => {}
        }
    }
    for (name, t) in &c.webhooks.event_types {
        if let Some(s) = &t.schema {
            file(format!("webhooks.event_types.{name}.schema"), s);
        }
    }
    for (i, w) in c.webhooks.inbound.iter().enumerate() {
        if let Some(s) = &w.schema {
            file(format!("webhooks.inbound[{i}].schema"), s);
        }
        for (t, s) in w.schemas.iter().flat_map(|s| s.types.iter()) {
            file(format!("webhooks.inbound[{i}].schemas.types.{t}"), s);
        }
    }
    for (name, svc) in &c.grpc.services {
        let d = &svc.descriptors;
        let base = format!("grpc.services.{name}.descriptors");
        for (i, inc) in d.include.iter().enumerate() {
            more.push(Reference {
                key: format!("{base}.include[{i}]"),
                written: inc.clone(),
                dir: true,
                interpolated: false,
            });
        }
        // A proto found beside the config is copied; one found only under an include
        // directory comes with that directory.
        for (i, p) in d.protos.iter().enumerate() {
            if loaded.resolve_path(Path::new(p)).is_file() {
                file(format!("{base}.protos[{i}]"), Path::new(p));
            }
        }
        if let Some(set) = &d.descriptor_set {
            file(format!("{base}.descriptor_set"), Path::new(set));
        }
    }
    for (name, svc) in &c.soap.services {
        if !svc.wsdl.starts_with("http://") && !svc.wsdl.starts_with("https://") {
            file(format!("soap.services.{name}.wsdl"), Path::new(&svc.wsdl));
        }
    }
    for site in sites {
        let mut rest = site.raw.as_str();
        while let Some(at) = rest.find("${file:") {
            let after = &rest[at + 7..];
            let Some(end) = after.find('}') else { break };
            // `$${` writes a literal `${`.
            if !rest[..at].ends_with('$') {
                more.push(Reference {
                    key: site.path.clone(),
                    written: after[..end].to_owned(),
                    dir: false,
                    interpolated: true,
                });
            }
            rest = &after[end..];
        }
    }
    refs.extend(more);
    refs
}

/// A name for a copied file: its position, then its own name (readable, never colliding).
fn kit_name(n: usize, source: &Path) -> String {
    let base = source.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let clean: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("files/{n:02}-{clean}")
}

fn copy_dir(from: &Path, to: &Path, count: &mut usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target, count)?;
        } else if kind.is_file() || kind.is_symlink() && entry.path().is_file() {
            *count += 1;
            if *count > MAX_DIR_FILES {
                bail!("{} holds more than {MAX_DIR_FILES} files", from.display());
            }
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn write_kit(config: &Path, out: &Path, binary: &Path, tag: &str, cli: clap::Command) -> anyhow::Result<()> {
    let loaded = bridgehead_config::load(config).map_err(|d| anyhow!("{d}"))?;
    let text = std::fs::read_to_string(config)?;
    let sites =
        bridgehead_config::scalar_sites(&text).map_err(|e| anyhow!("{}: {}", config.display(), e.message))?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty", out.display());
    }
    let conf_dir = out.join("config");
    std::fs::create_dir_all(conf_dir.join("files"))?;

    // Copy what the config names; remember each scalar's new text.
    let mut copied: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut rewrites: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut files = 0usize;
    for r in references(&loaded, &sites) {
        let source = loaded.resolve_path(Path::new(&r.written));
        let canonical =
            source.canonicalize().with_context(|| format!("{}: cannot read {}", r.key, source.display()))?;
        let name = match copied.get(&canonical) {
            Some(name) => name.clone(),
            None => {
                let name = kit_name(copied.len() + 1, &canonical);
                if r.dir {
                    copy_dir(&canonical, &conf_dir.join(&name), &mut files)?;
                } else {
                    std::fs::copy(&canonical, conf_dir.join(&name))
                        .with_context(|| format!("{}: cannot copy {}", r.key, canonical.display()))?;
                }
                copied.insert(canonical, name.clone());
                name
            }
        };
        let (from, to) = if r.interpolated {
            (format!("${{file:{}}}", r.written), format!("${{file:{name}}}"))
        } else {
            (r.written.clone(), name)
        };
        rewrites.entry(r.key).or_default().push((from, to));
    }
    // Rewrite the scalars, last first so earlier byte ranges stay valid.
    let mut new_text = text.clone();
    let mut done = 0;
    for site in sites.iter().rev() {
        let Some(changes) = rewrites.get(&site.path) else { continue };
        if site.block {
            bail!("{}: write this path as a plain or quoted scalar, not a block scalar", site.path);
        }
        let mut value = site.raw.clone();
        let interpolated = changes.iter().any(|(from, _)| from.starts_with("${file:"));
        if interpolated {
            for (from, to) in changes {
                value = value.replace(from, to);
            }
        } else {
            value = changes[0].1.clone();
        }
        new_text.replace_range(site.range.clone(), &serde_json::to_string(&value)?);
        done += 1;
    }
    if done != rewrites.len() {
        let found: Vec<&str> = sites.iter().map(|s| s.path.as_str()).collect();
        let missing: Vec<&String> = rewrites.keys().filter(|k| !found.contains(&k.as_str())).collect();
        bail!("cannot rewrite {missing:?}: write each path as its own scalar (not through an alias)");
    }
    std::fs::write(conf_dir.join("bridgehead.yaml"), &new_text)?;
    // The rewritten config must load from its new place and mean the same.
    bridgehead_config::load(&conf_dir.join("bridgehead.yaml"))
        .map_err(|d| anyhow!("the rewritten config does not load (please report this):\n{d}"))?;
    for svc in loaded.config.soap.services.values() {
        let local = loaded.resolve_path(Path::new(&svc.wsdl));
        if local.is_file()
            && std::fs::read_to_string(&local)
                .is_ok_and(|t| t.contains("schemaLocation") || t.contains(":import"))
        {
            eprintln!(
                "warning: {} imports other documents: copy them into {} beside it",
                svc.wsdl,
                conf_dir.join("files").display()
            );
        }
    }

    // The binary, the unit, completions and the man page.
    let bin = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    std::fs::write(out.join("bridgehead"), &bin)?;
    set_mode(&out.join("bridgehead"), 0o755)?;
    std::fs::write(out.join("bridgehead.service"), UNIT)?;
    std::fs::create_dir_all(out.join("completions"))?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "bridgehead.bash"),
        (clap_complete::Shell::Zsh, "_bridgehead"),
        (clap_complete::Shell::Fish, "bridgehead.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "bridgehead", &mut buf);
        std::fs::write(out.join("completions").join(file), buf)?;
    }
    let mut man = Vec::new();
    clap_mangen::Man::new(cli).render(&mut man)?;
    std::fs::write(out.join("bridgehead.1"), man)?;

    write_image(out, &bin, &conf_dir, &loaded, tag)?;
    write_sums(out)?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

fn write_image(
    out: &Path,
    bin: &[u8],
    conf_dir: &Path,
    loaded: &LoadedConfig,
    tag: &str,
) -> anyhow::Result<()> {
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
    let ca_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if let Ok(cas) = std::fs::read(ca_bundle) {
        add_dir(&mut layer, "etc/ssl", 0o755, 0)?;
        add_dir(&mut layer, "etc/ssl/certs", 0o755, 0)?;
        add_file(&mut layer, "etc/ssl/certs/ca-certificates.crt", &cas, 0o644, 0)?;
    }
    add_tree(&mut layer, conf_dir, IMAGE_CONFIG_DIR)?;
    add_dir(&mut layer, "tmp", 0o1777, 0)?;
    add_dir(&mut layer, "var", 0o755, 0)?;
    add_dir(&mut layer, "var/lib", 0o755, 0)?;
    add_dir(&mut layer, "var/lib/bridgehead", 0o700, IMAGE_USER)?;
    let layer = layer.into_inner()?;
    let layer_digest = sha256_hex(&layer);

    let version = super::version::current();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{IMAGE_USER}:{IMAGE_USER}"),
            "Env": ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
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
    let (repo, version_tag) = tag.rsplit_once(':').filter(|(r, _)| !r.is_empty()).unwrap_or((tag, "latest"));
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
            for b in bad {
                report(false, b);
            }
        }
    }
    match bridgehead_config::load(&dir.join("config/bridgehead.yaml")) {
        Ok(_) => report(true, "config/bridgehead.yaml loads".into()),
        Err(d) => report(false, format!("config/bridgehead.yaml does not load here:\n{d}")),
    }
    match check_image(dir) {
        Ok(tag) => report(true, format!("image.tar ({tag}): digests match, its /bridgehead is the kit's")),
        Err(e) => report(false, format!("image.tar: {e:#}")),
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
