//! Bridgehead's configuration: the typed tree, the loader and the validator.
//!
//! This is a leaf crate (no tokio, no hyper) so that every other crate and the CLI can share it
//! and a change to the data path never rebuilds it. Loading goes text → located JSON tree (with
//! `${env:…}`/`${file:…}` resolved) → typed [`Config`] → whole-config validation; every problem
//! is a [`Diagnostic`] that names the file, line, column and key path.
//!
//! Invariant: a [`LoadedConfig`] exists only for a config that passed validation, so the
//! gateway never starts or reloads onto a config it would refuse.

pub mod canonical;
pub mod docs;
mod error;
mod interpolate;
mod model;
pub mod netguard;
pub mod pattern;
mod units;
mod validate;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{BuildError, Diagnostic, Diagnostics, Pos};
pub use interpolate::{MapResolver, Resolver, SystemResolver, file_references};
pub use model::*;
pub use units::{ByteSize, HumanDuration, REDACTED, Rate, Secret};
pub use validate::{
    check_collector_url, check_endpoint_url, check_event_type, check_oauth_client, check_target_url,
};
pub use yaml::{ScalarSite, scalar_sites};

/// The commented starter config written by `bridgehead init`.
pub const STARTER: &str = include_str!("starter.yaml");

/// A validated config and what is known about where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file it was read from, as named by the user.
    pub file: PathBuf,
    /// Directory that relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    /// Key paths whose values came from `${…}` references, with the reference as written.
    pub interpolated: BTreeMap<String, String>,
    /// Things the config allows but that are probably not meant (`file:line:col: key: message`);
    /// `config check` prints them and the gateway logs them, neither refuses the config.
    pub warnings: Vec<Diagnostic>,
}

impl LoadedConfig {
    /// An empty config for a command that builds parts of the gateway from its flags (a
    /// one-target upstream): relative paths resolve against the working directory.
    pub fn command_line() -> LoadedConfig {
        LoadedConfig {
            config: Config::default(),
            file: PathBuf::from("(command line)"),
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            interpolated: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_owned() } else { self.base_dir.join(p) }
    }

    /// The effective config as JSON with every secret redacted: `Secret` fields print as
    /// `<redacted>` and every value that came from a reference prints as the reference itself.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or_default();
        for (path, reference) in &self.interpolated {
            if let Some(slot) = pointer_mut(&mut v, path) {
                *slot = serde_json::Value::String(reference.clone());
            }
        }
        v
    }
}

/// What a file the config names is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// A certificate (chain) the gateway presents: to clients (`server`) or to upstreams.
    ServerCertificate,
    ClientCertificate,
    /// CA certificates the gateway trusts.
    Ca,
    PrivateKey,
    /// JWKS, public keys, JSON Schemas, descriptor sets.
    Other,
}

/// A file named by the typed config (not by `${file:…}`, protos or WSDLs, whose own imports
/// only their compilers know).
#[derive(Debug, Clone)]
pub struct NamedFile<'a> {
    /// The key path that names it (`upstreams.billing.tls.ca`).
    pub key: String,
    pub role: FileRole,
    /// As written (relative to the config file's directory unless absolute).
    pub path: &'a Path,
}

impl Config {
    /// Every file the typed config names, in a stable order: the one list that tools reading a
    /// config's files (the certificate-expiry metric, `bridgehead bundle`) share.
    pub fn named_files(&self) -> Vec<NamedFile<'_>> {
        fn add<'a>(out: &mut Vec<NamedFile<'a>>, key: String, role: FileRole, path: Option<&'a PathBuf>) {
            if let Some(p) = path {
                out.push(NamedFile { key, role, path: p.as_path() });
            }
        }
        use FileRole::*;
        let mut out = Vec::new();
        if let Some(tls) = &self.server.tls {
            add(&mut out, "server.tls.cert".into(), ServerCertificate, Some(&tls.cert));
            add(&mut out, "server.tls.key".into(), PrivateKey, Some(&tls.key));
            add(&mut out, "server.tls.client_ca".into(), Ca, tls.client_ca.as_ref());
        }
        if let Some(tls) = self.telemetry.traces.as_ref().and_then(|t| t.tls.as_ref()) {
            add(&mut out, "telemetry.traces.tls.ca".into(), Ca, tls.ca.as_ref());
            add(&mut out, "telemetry.traces.tls.cert".into(), ClientCertificate, tls.cert.as_ref());
            add(&mut out, "telemetry.traces.tls.key".into(), PrivateKey, tls.key.as_ref());
        }
        for (name, u) in &self.upstreams {
            if let Some(tls) = &u.tls {
                add(&mut out, format!("upstreams.{name}.tls.ca"), Ca, tls.ca.as_ref());
                add(&mut out, format!("upstreams.{name}.tls.cert"), ClientCertificate, tls.cert.as_ref());
                add(&mut out, format!("upstreams.{name}.tls.key"), PrivateKey, tls.key.as_ref());
            }
            if let Some(Credentials::Oauth2ClientCredentials(o)) = &u.credentials {
                let key = format!("upstreams.{name}.credentials.oauth2_client_credentials.ca");
                add(&mut out, key, Ca, o.ca.as_ref());
            }
        }
        for (name, a) in &self.authenticators {
            match a {
                Authenticator::Jwt(j) => {
                    add(
                        &mut out,
                        format!("authenticators.{name}.jwt.jwks_file"),
                        Other,
                        j.jwks_file.as_ref(),
                    );
                    let key = format!("authenticators.{name}.jwt.public_key_file");
                    add(&mut out, key, Other, j.public_key_file.as_ref());
                    add(&mut out, format!("authenticators.{name}.jwt.ca"), Ca, j.ca.as_ref());
                }
                Authenticator::Introspection(i) => {
                    add(&mut out, format!("authenticators.{name}.introspection.ca"), Ca, i.ca.as_ref());
                }
                _ => {}
            }
        }
        for (name, t) in &self.webhooks.event_types {
            add(&mut out, format!("webhooks.event_types.{name}.schema"), Other, t.schema.as_ref());
        }
        for (i, w) in self.webhooks.inbound.iter().enumerate() {
            add(&mut out, format!("webhooks.inbound[{i}].schema"), Other, w.schema.as_ref());
            for (t, s) in w.schemas.iter().flat_map(|s| s.types.iter()) {
                add(&mut out, format!("webhooks.inbound[{i}].schemas.types.{t}"), Other, Some(s));
            }
        }
        for (name, svc) in &self.grpc.services {
            if let Some(set) = &svc.descriptors.descriptor_set {
                let key = format!("grpc.services.{name}.descriptors.descriptor_set");
                out.push(NamedFile { key, role: Other, path: Path::new(set) });
            }
        }
        out
    }
}

/// Finds `routes[0].match.path` in a JSON value.
fn pointer_mut<'a>(v: &'a mut serde_json::Value, path: &str) -> Option<&'a mut serde_json::Value> {
    let mut cur = v;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.get_mut(key)?;
        }
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.get_mut(idx.parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// Reads and validates a config file, resolving references from the process environment and
/// files next to the config.
pub fn load(file: &Path) -> Result<LoadedConfig, Diagnostics> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: name.clone(),
            pos: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let resolver = SystemResolver { base_dir: base_dir.clone() };
    load_str(&text, file, &base_dir, &resolver)
}

/// Parses and validates config text. `file` is only used in messages.
pub fn load_str(
    text: &str,
    file: &Path,
    base_dir: &Path,
    resolver: &dyn Resolver,
) -> Result<LoadedConfig, Diagnostics> {
    let name = file.display().to_string();
    let diag = |pos, path: String, message: String| Diagnostic { file: name.clone(), pos, path, message };
    let doc = yaml::parse(text, resolver).map_err(|e| Diagnostics(vec![diag(e.pos, e.path, e.message)]))?;
    let value = match doc.value {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    };
    let mut config: Config = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = path_string(e.path());
        let message = e.inner().to_string();
        Diagnostics(vec![diag(doc.locations.find(&path), path, message)])
    })?;
    // `grpc_service` stands for a path condition, which routing and validation read.
    for r in &mut config.routes {
        let m = &mut r.matcher;
        if m.path.is_none() && m.path_prefix.is_none() {
            match m.grpc_path() {
                Some((true, prefix)) => m.path_prefix = Some(prefix),
                Some((false, path)) => m.path = Some(path),
                None => {}
            }
        }
    }
    let problems = validate::validate(&config);
    if !problems.is_empty() {
        let mut list: Vec<Diagnostic> = problems
            .into_iter()
            .map(|(path, message)| diag(doc.locations.find(&path), path, message))
            .collect();
        list.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        return Err(Diagnostics(list));
    }
    let warnings = validate::warnings(&config)
        .into_iter()
        .map(|(path, message)| diag(doc.locations.find(&path), path, message))
        .collect();
    Ok(LoadedConfig {
        config,
        file: file.to_owned(),
        base_dir: base_dir.to_owned(),
        interpolated: doc.interpolated,
        warnings,
    })
}

/// `serde_path_to_error`'s path in our `a.b[0].c` form.
fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out = yaml::join_index(&out, *index),
            Segment::Map { key } => out = yaml::join_key(&out, key),
            Segment::Enum { variant } => out = yaml::join_key(&out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

/// The JSON Schema of the config file, generated from the types' doc comments.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).unwrap_or_default()
}

#[cfg(test)]
mod tests;
