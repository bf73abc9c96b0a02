//! A `soap.services` entry at run time: its upstream, its WSDL read into a port, and the
//! UsernameToken it sends.
//!
//! A WSDL file (and the files it imports) is read when the config is compiled: a broken one
//! fails the start or the reload, naming the key. A WSDL URL is fetched with everything it
//! imports by [`Service::ensure`], before the generation serves; the documents fetched are kept
//! in the state store, and a start that cannot reach the URL serves that copy (an air-gapped
//! restart). A service with neither fails the start, naming the service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bridgehead_config::{BuildError, LoadedConfig, SoapService};
use bridgehead_upstream::Upstream;
use futures_util::FutureExt as _;

use crate::envelope::UsernameToken;
use crate::mapping::Mapper;
use crate::wsdl::{Definitions, Port};

/// The state-store kind of a fetched WSDL's last good copy.
pub const WSDL_DOCUMENT: &str = "soap-wsdl";

/// Largest WSDL or schema document fetched.
const MAX_DOCUMENT: usize = 8 << 20;

/// Where a loaded WSDL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Url,
    /// The state store's copy of an earlier fetch (the URL could not be reached).
    Stored,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Url => "url",
            Origin::Stored => "stored",
        }
    }
}

/// A WSDL read into the port called.
pub struct Loaded {
    pub port: Port,
    pub mapper: Mapper,
    pub origin: Origin,
    /// The path (and query) of the port's address, which requests go to on the upstream.
    pub path: String,
    pub documents: usize,
}

impl Loaded {
    fn new(
        defs: &Definitions,
        port: Option<&str>,
        origin: Origin,
        safe: &[String],
    ) -> Result<Loaded, String> {
        let port = defs.port(port).map_err(|e| e.0)?;
        for s in safe {
            if port.operation(s).is_none() {
                let names: Vec<&str> = port.operations.iter().map(|o| o.name.as_str()).collect();
                return Err(format!(
                    "safe_operations: no operation `{s}` (the port's: {})",
                    names.join(", ")
                ));
            }
        }
        let path = address_path(&port.info.address);
        let mapper = Mapper::new(port.schemas.clone());
        Ok(Loaded { port, mapper, origin, path, documents: defs.documents.len() })
    }
}

/// The path and query of a `soap:address` (`/`, when it has none or is not a URL).
pub fn address_path(address: &str) -> String {
    match url::Url::parse(address) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) => "/".into(),
    }
}

/// One SOAP service.
pub struct Service {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// The WSDL's location: a file path (resolved against the config's directory) or a URL.
    pub location: String,
    /// The upstream's extra CA, also trusted when the WSDL is fetched.
    ca: Option<std::path::PathBuf>,
    port: Option<String>,
    pub security: Option<UsernameToken>,
    pub safe: Vec<String>,
    pub max_response: usize,
    cell: Arc<ArcSwapOption<Loaded>>,
    /// The location, port and safe operations: a reload keeps a fetched WSDL while they stay.
    key: String,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The files a WSDL file and its imports are read from, the WSDL first (for tools that carry a
/// config's files elsewhere: `bridgehead bundle`).
pub fn wsdl_files(location: &str) -> Result<Vec<std::path::PathBuf>, String> {
    Ok(load_file(location)?.documents.into_iter().map(|(loc, _)| std::path::PathBuf::from(loc)).collect())
}

/// Reads a WSDL and its imports from files.
fn load_file(location: &str) -> Result<Definitions, String> {
    Definitions::load(location, |loc| {
        std::future::ready(if is_url(&loc) {
            Err("a WSDL file's imports must be files (this one is a URL)".to_owned())
        } else {
            std::fs::read_to_string(&loc).map_err(|e| e.to_string())
        })
    })
    .now_or_never()
    .expect("file reads are ready at once")
    .map_err(|e| e.0)
}

impl Service {
    /// Compiles an entry: a WSDL file is read now; a fetched one is carried over from
    /// `previous` when its location is the same.
    pub fn build(
        name: &str,
        cfg: &SoapService,
        loaded: &LoadedConfig,
        upstream: Arc<Upstream>,
        previous: Option<&Service>,
    ) -> Result<Service, BuildError> {
        let base = format!("soap.services.{name}");
        let location = if is_url(&cfg.wsdl) {
            cfg.wsdl.clone()
        } else {
            loaded.resolve_path(cfg.wsdl.as_ref()).to_string_lossy().into_owned()
        };
        let key =
            format!("{location}|{}|{}", cfg.port.as_deref().unwrap_or(""), cfg.safe_operations.join(","));
        let cell = if is_url(&location) {
            match previous.filter(|p| p.key == key) {
                Some(p) => p.cell.clone(),
                None => Arc::default(),
            }
        } else {
            let defs = load_file(&location).map_err(|e| BuildError::new(format!("{base}.wsdl"), e))?;
            let l = Loaded::new(&defs, cfg.port.as_deref(), Origin::File, &cfg.safe_operations)
                .map_err(|e| BuildError::new(format!("{base}.wsdl"), e))?;
            Arc::new(ArcSwapOption::from_pointee(l))
        };
        let ca = loaded
            .config
            .upstreams
            .get(&cfg.upstream)
            .and_then(|u| u.tls.as_ref())
            .and_then(|t| t.ca.as_ref())
            .map(|c| loaded.resolve_path(c));
        Ok(Service {
            name: name.into(),
            upstream,
            location,
            ca,
            port: cfg.port.clone(),
            security: cfg.ws_security.as_ref().map(|w| UsernameToken {
                username: w.username.clone(),
                password: w.password.expose().to_owned(),
                digest: w.digest,
            }),
            safe: cfg.safe_operations.clone(),
            max_response: usize::try_from(cfg.max_response_size.get()).unwrap_or(usize::MAX),
            cell,
            key,
        })
    }

    /// A service outside a gateway (`bridgehead soap call`): a WSDL read already, a one-target
    /// upstream, and the path to call on it.
    pub fn standalone(
        defs: &Definitions,
        port: Option<&str>,
        upstream: Arc<Upstream>,
        path: Option<String>,
        security: Option<UsernameToken>,
    ) -> Result<Service, String> {
        let mut l = Loaded::new(defs, port, Origin::File, &[])?;
        if let Some(p) = path {
            l.path = p;
        }
        Ok(Service {
            name: l.port.info.service.as_str().into(),
            upstream,
            location: String::new(),
            ca: None,
            port: port.map(str::to_owned),
            security,
            safe: Vec::new(),
            max_response: 64 << 20,
            cell: Arc::new(ArcSwapOption::from_pointee(l)),
            key: String::new(),
        })
    }

    /// The WSDL serving now; `None` until a fetched one was first read.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.cell.load_full()
    }

    /// The service for the admin API.
    pub fn view(&self) -> serde_json::Value {
        let c = self.current();
        serde_json::json!({
            "name": &*self.name,
            "upstream": &*self.upstream.name,
            "wsdl": self.location,
            "origin": c.as_ref().map(|l| l.origin.as_str()),
            "port": c.as_ref().map(|l| &l.port.info),
            "path": c.as_ref().map(|l| l.path.clone()),
            "operations": c.as_ref().map(|l| l.port.operations.iter().map(|o| o.name.clone()).collect::<Vec<_>>()),
            "ws_security": self.security.as_ref().map(|s| if s.digest { "digest" } else { "text" }),
            "safe_operations": self.safe,
        })
    }

    /// Makes sure a fetched WSDL is loaded: fetches it, or else reads the stored copy. Fails,
    /// naming the service, when neither gives one.
    pub async fn ensure(
        &self,
        store: Option<&bridgehead_state::Store>,
        timeout: Duration,
    ) -> Result<(), BuildError> {
        if self.current().is_some() {
            return Ok(());
        }
        let key = format!("soap.services.{}.wsdl", self.name);
        let fetched = fetch_all(&self.location, timeout, self.ca.as_deref()).await;
        let (defs, origin) = match fetched {
            Ok(defs) => {
                if let Some(s) = store {
                    let docs: Vec<&(String, String)> = defs.documents.iter().collect();
                    let body = serde_json::to_vec(&docs).unwrap_or_default();
                    if let Err(e) = s.document_put(WSDL_DOCUMENT, &self.location, &body).await {
                        tracing::warn!(service = %self.name, error = %e, "the fetched WSDL could not be kept in the state store");
                    }
                }
                (defs, Origin::Url)
            }
            Err(fetch_error) => {
                let stored = match store {
                    Some(s) => s
                        .document_get(WSDL_DOCUMENT, &self.location)
                        .await
                        .map_err(|e| BuildError::new(&key, e))?,
                    None => None,
                };
                let Some(doc) = stored else {
                    return Err(BuildError::new(
                        key,
                        format!(
                            "no WSDL for SOAP service `{}`: {fetch_error}, and the state store has no earlier copy",
                            self.name
                        ),
                    ));
                };
                let docs: Vec<(String, String)> = serde_json::from_slice(&doc.body)
                    .map_err(|e| BuildError::new(&key, format!("the stored copy is unreadable: {e}")))?;
                let docs: HashMap<String, String> = docs.into_iter().collect();
                let defs = Definitions::load(&self.location, |loc| {
                    std::future::ready(
                        docs.get(&loc).cloned().ok_or_else(|| "not in the stored copy".to_owned()),
                    )
                })
                .await
                .map_err(|e| BuildError::new(&key, e.0))?;
                tracing::warn!(
                    service = %self.name,
                    error = %fetch_error,
                    fetched_at_ms = doc.fetched_at_ms,
                    "the WSDL could not be fetched; serving the copy kept in the state store"
                );
                (defs, Origin::Stored)
            }
        };
        let l = Loaded::new(&defs, self.port.as_deref(), origin, &self.safe)
            .map_err(|e| BuildError::new(&key, e))?;
        tracing::info!(service = %self.name, origin = origin.as_str(), operations = l.port.operations.len(), "SOAP service loaded");
        self.cell.store(Some(Arc::new(l)));
        Ok(())
    }
}

/// Fetches a WSDL URL and everything it imports, from the WSDL's own origin only (a WSDL must
/// not make the gateway fetch from elsewhere), trusting `ca` besides the system roots.
pub async fn fetch_all(
    location: &str,
    timeout: Duration,
    ca: Option<&std::path::Path>,
) -> Result<Definitions, String> {
    let client = bridgehead_upstream::fetch::client(ca, timeout).map_err(|e| e.to_string())?;
    let origin = url::Url::parse(location)
        .map(|u| u.origin())
        .map_err(|e| format!("`{location}` is not a URL: {e}"))?;
    Definitions::load(location, |loc| {
        let client = client.clone();
        let origin = origin.clone();
        async move {
            if !is_url(&loc) {
                return Err("a fetched WSDL's imports must be URLs".to_owned());
            }
            if url::Url::parse(&loc).map(|u| u.origin()).ok() != Some(origin) {
                return Err("an import from another origin than the WSDL's is not fetched".to_owned());
            }
            let mut res =
                client.get(&loc).send().await.map_err(|e| bridgehead_upstream::fetch::describe(&e))?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status().as_u16()));
            }
            let mut out = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| bridgehead_upstream::fetch::describe(&e))? {
                if out.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(format!("larger than {MAX_DOCUMENT} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            String::from_utf8(out).map_err(|_| "not UTF-8 text".to_owned())
        }
    })
    .await
    .map_err(|e| e.0)
}

/// Reads a WSDL from a file or a URL, outside a running gateway (`bridgehead soap`).
pub async fn load_any(location: &str, timeout: Duration) -> Result<Definitions, String> {
    if is_url(location) { fetch_all(location, timeout, None).await } else { load_file(location) }
}

/// Checks that every service's WSDL file loads (`bridgehead config check`); fetched ones are
/// read at start.
pub fn preflight(loaded: &LoadedConfig) -> Result<(), BuildError> {
    for (name, cfg) in &loaded.config.soap.services {
        if is_url(&cfg.wsdl) {
            continue;
        }
        let location = loaded.resolve_path(cfg.wsdl.as_ref()).to_string_lossy().into_owned();
        let key = format!("soap.services.{name}.wsdl");
        let defs = load_file(&location).map_err(|e| BuildError::new(&key, e))?;
        Loaded::new(&defs, cfg.port.as_deref(), Origin::File, &cfg.safe_operations)
            .map_err(|e| BuildError::new(&key, e))?;
    }
    Ok(())
}
