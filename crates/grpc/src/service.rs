//! A `grpc.services` entry at run time: its upstream, and its schema with the HTTP bindings
//! built from it, swapped whole when reflection brings a new one.
//!
//! A schema from `.proto` files or a descriptor set is loaded when the config is compiled (a
//! broken file fails the start or the reload). A reflected schema is fetched by [`Service::ensure`]
//! before the generation serves, again every `refresh` and on demand ([`Service::refresh`]); each
//! fetch that succeeds is kept in the state store, and a start that cannot reach the server
//! serves the stored copy. A service with neither fails the start, naming the service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bridgehead_config::{BuildError, GrpcService, LoadedConfig};
use bridgehead_http::metrics::Metrics;
use bridgehead_upstream::Upstream;

use crate::binding::{BindingError, Bindings};
use crate::reflection;
use crate::schema::Schema;

/// The state-store kind of a reflected schema's last good copy.
pub const SCHEMA_DOCUMENT: &str = "grpc-schema";

/// Where a loaded schema came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Protos,
    DescriptorSet,
    Reflection,
    /// The state store's copy of an earlier reflection (the server could not be asked).
    Stored,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Protos => "protos",
            Origin::DescriptorSet => "descriptor_set",
            Origin::Reflection => "reflection",
            Origin::Stored => "stored",
        }
    }
}

/// A schema and its bindings.
pub struct Loaded {
    pub schema: Schema,
    /// The gRPC services exposed (the config's `services`, or every one).
    pub services: Vec<prost_reflect::ServiceDescriptor>,
    pub bindings: Bindings,
    pub origin: Origin,
    /// The encoded schema, to store.
    pub bytes: Vec<u8>,
    /// Bindings left out of a reflected schema, and why.
    pub skipped: Vec<BindingError>,
    pub loaded_at_ms: i64,
}

impl Loaded {
    /// The bindings of the services exposed. A schema from files must bind cleanly (the start or
    /// the reload fails otherwise); a reflected one serves without the bindings it cannot make.
    pub fn new(schema: Schema, origin: Origin, only: &[String]) -> Result<Loaded, String> {
        let services = if only.is_empty() {
            schema.services()
        } else {
            only.iter().map(|n| schema.service(n).map_err(|e| e.to_string())).collect::<Result<_, _>>()?
        };
        let strict = matches!(origin, Origin::Protos | Origin::DescriptorSet);
        let mut bindings = Bindings::default();
        let mut skipped = Vec::new();
        for s in &services {
            let (b, errors) = Bindings::build_each(s);
            if strict && let Some(e) = errors.first() {
                return Err(e.to_string());
            }
            bindings.extend(b);
            skipped.extend(errors);
        }
        // Two methods (or services) bound to the same requests: the first answers; the others
        // are named, and served only at their gRPC paths.
        skipped.extend(bindings.shadowed());
        let bytes = schema.bytes();
        Ok(Loaded {
            schema,
            services,
            bindings,
            origin,
            bytes,
            skipped,
            loaded_at_ms: bridgehead_http::clock::unix_ms(),
        })
    }

    /// Logs the bindings left out (when the schema starts serving, not at every refresh).
    fn warn_skipped(&self, service: &str) {
        for e in &self.skipped {
            tracing::warn!(service, error = %e, "a gRPC binding is left out");
        }
    }

    /// The schema in a canonical form: every file's descriptor bytes, in name order (a
    /// server may list its files in any order). Two fetches with the same fingerprint serve the
    /// same API, bindings included (they come from the files' options).
    fn fingerprint(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> =
            self.schema.pool.files().map(|f| (f.name().to_owned(), f.encode_to_vec())).collect();
        files.sort();
        files
    }

    /// Every method, by full name, with what a caller relies on: its input and output types
    /// and streaming shape, and the fields of those types.
    fn signatures(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for s in &self.services {
            for m in s.methods() {
                let shape = |d: prost_reflect::MessageDescriptor| {
                    let fields: Vec<String> =
                        d.fields().map(|f| format!("{}={}:{:?}", f.number(), f.name(), f.kind())).collect();
                    format!("{}{{{}}}", d.full_name(), fields.join(","))
                };
                out.insert(
                    m.full_name().to_owned(),
                    format!(
                        "{} -> {} (client stream {}, server stream {})",
                        shape(m.input()),
                        shape(m.output()),
                        m.is_client_streaming(),
                        m.is_server_streaming()
                    ),
                );
            }
        }
        out
    }
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The server's schema is the one already served.
    Unchanged,
    /// A new schema serves; what was added, and what callers may find broken (removed methods,
    /// changed signatures).
    Updated { added: Vec<String>, broken: Vec<String> },
}

/// The schema of a service, shared by the generations whose entry is the same (so a refresh
/// that ends after a reload lands in the generation serving).
#[derive(Default)]
struct Cell {
    current: ArcSwapOption<Loaded>,
    refreshing: tokio::sync::Mutex<()>,
    /// When reflection was last asked (Unix ms).
    asked_at: AtomicI64,
}

/// One gRPC service.
pub struct Service {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub max_message: usize,
    /// The refresh interval, for a reflected schema.
    pub reflection: Option<Duration>,
    /// The gRPC services exposed (`services` in the config; empty: all).
    only: Vec<String>,
    cell: Arc<Cell>,
    /// The upstream's targets, the descriptors and the services as configured: a reload keeps
    /// the schema while they stay; the stored copy is kept under the targets too.
    key: String,
}

impl Service {
    /// Compiles an entry: protos and descriptor sets are loaded now; a reflected schema is
    /// carried over from `previous` when the upstream and descriptors are the same.
    pub fn build(
        name: &str,
        cfg: &GrpcService,
        loaded: &LoadedConfig,
        upstream: Arc<Upstream>,
        previous: Option<&Service>,
    ) -> Result<Service, BuildError> {
        let d = &cfg.descriptors;
        let targets: Vec<&str> = upstream.targets.iter().map(|t| &*t.url).collect();
        let key = format!(
            "{}|{}|{}",
            targets.join(","),
            serde_json::to_string(d).unwrap_or_default(),
            cfg.services.join(",")
        );
        let cell = match (load_files(name, cfg, loaded)?, previous.filter(|p| p.key == key)) {
            (Some(l), _) => {
                let cell = Cell::default();
                cell.current.store(Some(Arc::new(l)));
                Arc::new(cell)
            }
            (None, Some(p)) => p.cell.clone(),
            (None, None) => Arc::default(),
        };
        Ok(Service {
            name: name.into(),
            upstream,
            max_message: usize::try_from(cfg.max_message_size.get()).unwrap_or(usize::MAX),
            reflection: d.reflection.then(|| d.refresh.get()),
            only: cfg.services.clone(),
            cell,
            key,
        })
    }

    /// The service for the admin API: where its schema came from, and its bindings.
    pub fn view(&self) -> serde_json::Value {
        let current = self.current();
        serde_json::json!({
            "name": &*self.name,
            "upstream": &*self.upstream.name,
            "reflection": self.reflection.is_some(),
            "origin": current.as_ref().map(|l| l.origin.as_str()),
            "loaded_at_ms": current.as_ref().map(|l| l.loaded_at_ms),
            "services": current.as_ref().map(|l| l.services.iter().map(|s| s.full_name().to_owned()).collect::<Vec<_>>()),
            "bindings": current.as_ref().map(|l| l.bindings.iter().map(crate::binding::Binding::describe).collect::<Vec<_>>()),
            "skipped": current.as_ref().map(|l| l.skipped.iter().map(ToString::to_string).collect::<Vec<_>>()),
        })
    }

    /// Whether a refresh is running now (the background refresher then skips its turn).
    pub fn refreshing(&self) -> bool {
        self.cell.refreshing.try_lock().is_err()
    }

    /// Whether reflection is due to be asked again; when it is, it counts as asked now, so one
    /// caller refreshes.
    pub fn take_due(&self) -> bool {
        self.reflection.is_some_and(|every| {
            let now = bridgehead_http::clock::unix_ms();
            let last = self.cell.asked_at.load(Relaxed);
            now - last >= i64::try_from(every.as_millis()).unwrap_or(i64::MAX)
                && self.cell.asked_at.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        })
    }

    /// The schema serving now; `None` until a reflected schema was first read.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.cell.current.load_full()
    }

    /// The stored copy's name: the service and the targets it was fetched from.
    fn document(&self) -> String {
        let targets: Vec<&str> = self.upstream.targets.iter().map(|t| &*t.url).collect();
        format!("{}@{}", self.name, targets.join(","))
    }

    /// Makes sure a reflected schema is loaded: asks the server, or else reads the stored copy.
    /// Fails, naming the service, when neither gives one.
    pub async fn ensure(
        &self,
        metrics: &Metrics,
        store: Option<&bridgehead_state::Store>,
    ) -> Result<(), BuildError> {
        if self.current().is_some() || self.reflection.is_none() {
            return Ok(());
        }
        let Err(asked) = self.refresh(metrics, store).await else { return Ok(()) };
        let key = format!("grpc.services.{}.descriptors.reflection", self.name);
        let stored = match store {
            Some(s) => s
                .document_get(SCHEMA_DOCUMENT, &self.document())
                .await
                .map_err(|e| BuildError::new(&key, e))?,
            None => None,
        };
        let Some(doc) = stored else {
            return Err(BuildError::new(
                key,
                format!(
                    "no schema for gRPC service `{}`: {asked}, and the state store has no earlier copy (give `protos` or `descriptor_set` instead)",
                    self.name
                ),
            ));
        };
        let schema = Schema::from_descriptor_set(&doc.body).map_err(|e| BuildError::new(&key, e))?;
        let loaded = Loaded::new(schema, Origin::Stored, &self.only).map_err(|e| BuildError::new(&key, e))?;
        loaded.warn_skipped(&self.name);
        tracing::warn!(
            service = %self.name,
            error = %asked,
            fetched_at_ms = doc.fetched_at_ms,
            "gRPC reflection failed; serving the schema kept in the state store"
        );
        self.cell.current.store(Some(Arc::new(loaded)));
        Ok(())
    }

    /// Asks the server's reflection again (one refresh at a time). A new schema replaces the
    /// current one whole and is kept in the state store; what it breaks is logged.
    pub async fn refresh(
        &self,
        metrics: &Metrics,
        store: Option<&bridgehead_state::Store>,
    ) -> Result<Change, String> {
        if self.reflection.is_none() {
            return Err(format!("gRPC service `{}` does not use reflection", self.name));
        }
        let _one = self.cell.refreshing.lock().await;
        self.cell.asked_at.store(bridgehead_http::clock::unix_ms(), Relaxed);
        // One deadline for every round of the fetch.
        let timeout = self.upstream.timeouts.request.get();
        let got = tokio::time::timeout(timeout, reflection::fetch(&self.upstream, metrics, timeout))
            .await
            .map_err(|_| format!("reflection did not finish within {}", humantime::format_duration(timeout)))?
            .map_err(|e| e.to_string())?;
        let old = self.current();
        let fresh = Loaded::new(got.schema, Origin::Reflection, &self.only)?;
        let change = match &old {
            Some(o) if o.fingerprint() == fresh.fingerprint() => Change::Unchanged,
            Some(o) => {
                let (before, after) = (o.signatures(), fresh.signatures());
                let added = after.keys().filter(|k| !before.contains_key(*k)).cloned().collect();
                let broken = before
                    .iter()
                    .filter_map(|(k, sig)| match after.get(k) {
                        None => Some(format!("{k} was removed")),
                        Some(s) if s != sig => Some(format!("{k} changed: {sig} is now {s}")),
                        Some(_) => None,
                    })
                    .collect();
                Change::Updated { added, broken }
            }
            None => Change::Updated { added: fresh.signatures().into_keys().collect(), broken: Vec::new() },
        };
        if let Some(s) = store
            && change != Change::Unchanged
            && let Err(e) = s.document_put(SCHEMA_DOCUMENT, &self.document(), &fresh.bytes).await
        {
            tracing::warn!(service = %self.name, error = %e, "the reflected gRPC schema could not be kept in the state store");
        }
        if let Change::Updated { added, broken } = &change {
            if broken.is_empty() {
                tracing::info!(service = %self.name, added = ?added, "gRPC schema loaded from reflection");
            } else {
                tracing::warn!(service = %self.name, added = ?added, broken = ?broken, "gRPC schema changed incompatibly");
            }
        }
        if change != Change::Unchanged {
            fresh.warn_skipped(&self.name);
        }
        if change != Change::Unchanged || old.as_ref().is_some_and(|o| o.origin == Origin::Stored) {
            self.cell.current.store(Some(Arc::new(fresh)));
        }
        Ok(change)
    }
}

/// The include roots `protos` are looked up in: the `include` directories, then the config's
/// directory.
fn include_roots(cfg: &GrpcService, loaded: &LoadedConfig) -> Vec<PathBuf> {
    let mut include: Vec<PathBuf> =
        cfg.descriptors.include.iter().map(|i| loaded.resolve_path(i.as_ref())).collect();
    include.push(loaded.base_dir.clone());
    include
}

/// The `.proto` files a service's `protos` are compiled from, as (import name, path on disk,
/// index of the include root it was found under: `include.len()` is the config's directory),
/// for tools that carry a config's files elsewhere (`bridgehead bundle`).
pub fn proto_sources(
    name: &str,
    cfg: &GrpcService,
    loaded: &LoadedConfig,
) -> Result<Vec<(String, PathBuf, usize)>, BuildError> {
    let key = format!("grpc.services.{name}.descriptors.protos");
    let include = include_roots(cfg, loaded);
    let files = proto_paths(cfg, loaded, &include);
    let sources = Schema::sources(&files, &include).map_err(|e| BuildError::new(&key, e))?;
    let mut out = Vec::new();
    for (import, path) in sources {
        // The first root under which the import name leads to this file (links followed).
        let canon = |p: &std::path::Path| p.canonicalize().ok();
        let file = canon(&path);
        let root =
            include.iter().position(|r| file.is_some() && canon(&r.join(&import)) == file).ok_or_else(
                || BuildError::new(&key, format!("{} is under no include directory", path.display())),
            )?;
        out.push((import, path, root));
    }
    Ok(out)
}

/// Checks that a service's schema files load (`None` is fine: reflection).
pub fn check_files(name: &str, cfg: &GrpcService, loaded: &LoadedConfig) -> Result<(), BuildError> {
    load_files(name, cfg, loaded).map(|_| ())
}

/// `protos` as the compiler opens them: found under an include root as written, else resolved
/// against the config's directory.
fn proto_paths(cfg: &GrpcService, loaded: &LoadedConfig, include: &[PathBuf]) -> Vec<PathBuf> {
    cfg.descriptors
        .protos
        .iter()
        .map(PathBuf::from)
        .map(|f| {
            if f.is_absolute() || include.iter().any(|i| i.join(&f).exists()) {
                f
            } else {
                loaded.resolve_path(&f)
            }
        })
        .collect()
}

/// Loads a schema given as files (`protos` or `descriptor_set`); `None` for reflection.
fn load_files(name: &str, cfg: &GrpcService, loaded: &LoadedConfig) -> Result<Option<Loaded>, BuildError> {
    let base = format!("grpc.services.{name}.descriptors");
    let d = &cfg.descriptors;
    let got = if !d.protos.is_empty() {
        // The config's directory is searched last, so `protos: [x.proto]` next to it works.
        let include = include_roots(cfg, loaded);
        let files = proto_paths(cfg, loaded, &include);
        let schema =
            Schema::compile(&files, &include).map_err(|e| BuildError::new(join(&base, "protos"), e))?;
        Some(
            Loaded::new(schema, Origin::Protos, &cfg.services)
                .map_err(|e| BuildError::new(join(&base, "protos"), e))?,
        )
    } else if let Some(set) = &d.descriptor_set {
        let path = loaded.resolve_path(set.as_ref());
        let bytes = std::fs::read(&path).map_err(|e| {
            BuildError::new(join(&base, "descriptor_set"), format!("cannot read {}: {e}", path.display()))
        })?;
        let schema = Schema::from_descriptor_set(&bytes).map_err(|e| {
            BuildError::new(join(&base, "descriptor_set"), format!("{}: {e}", path.display()))
        })?;
        Some(
            Loaded::new(schema, Origin::DescriptorSet, &cfg.services)
                .map_err(|e| BuildError::new(join(&base, "descriptor_set"), e))?,
        )
    } else {
        None
    };
    if let Some(l) = &got {
        l.warn_skipped(name);
    }
    Ok(got)
}

/// The schema of one `grpc.services` entry, outside a running gateway (`bridgehead grpc
/// openapi`): its files, or its server's reflection through the configured upstream.
pub async fn load_offline(name: &str, loaded: &LoadedConfig) -> Result<Loaded, String> {
    let cfg = loaded
        .config
        .grpc
        .services
        .get(name)
        .ok_or_else(|| format!("no gRPC service `{name}` under grpc.services"))?;
    if let Some(l) = load_files(name, cfg, loaded).map_err(|e| e.to_string())? {
        return Ok(l);
    }
    let metrics = Metrics::default();
    let up_cfg = &loaded.config.upstreams[&cfg.upstream];
    let upstream = Upstream::build(&cfg.upstream, up_cfg, &Default::default(), loaded, &metrics, None)
        .map_err(|e| e.to_string())?;
    let upstream = Arc::new(upstream);
    let timeout = upstream.timeouts.request.get();
    let got = tokio::time::timeout(timeout, reflection::fetch(&upstream, &metrics, timeout))
        .await
        .map_err(|_| format!("reflection did not finish within {}", humantime::format_duration(timeout)))?
        .map_err(|e| {
            format!("{e} (a running gateway serves its schema at /admin/grpc/{name}/openapi.json)")
        })?;
    let l = Loaded::new(got.schema, Origin::Reflection, &cfg.services)?;
    l.warn_skipped(name);
    Ok(l)
}

/// Checks that every service's `.proto` files or descriptor set load, and give bindings
/// (`bridgehead config check`).
pub fn preflight(loaded: &LoadedConfig) -> Result<(), BuildError> {
    for (name, cfg) in &loaded.config.grpc.services {
        load_files(name, cfg, loaded)?;
    }
    Ok(())
}

fn join(base: &str, key: &str) -> String {
    format!("{base}.{key}")
}
