//! The typed configuration tree. Every field's doc comment is user documentation: the JSON
//! Schema (`bridgehead config schema`) and `docs/config.md` are generated from them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration, Secret};

/// A Bridgehead configuration file (`bridgehead.yaml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data-plane listener that clients call.
    #[serde(default)]
    pub server: Server,
    /// The admin listener: health, readiness, metrics and the admin API.
    #[serde(default)]
    pub admin: Admin,
    /// Where durable state lives (OAuth codes, idempotency records, webhook queues).
    #[serde(default)]
    pub state: State,
    /// Named groups of backend servers that routes send traffic to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Rules that map incoming requests to upstreams. The most specific match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// The data-plane listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address and port to listen on. Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge); with
    /// `tls`, HTTPS with ALPN `h2` and `http/1.1`. Changing it requires a restart.
    pub listen: SocketAddr,
    /// TLS for the listener; absent means plain HTTP.
    pub tls: Option<ServerTls>,
    /// Limits that protect the gateway from oversized or slow clients.
    pub limits: Limits,
    /// Worker threads for the data plane; absent means one per CPU core. Requires a restart.
    pub workers: Option<usize>,
    /// On SIGTERM, how long in-flight requests may take to finish before the process exits.
    pub shutdown_grace: HumanDuration,
    /// Access logging: one JSON object per request on stdout.
    pub access_log: AccessLog,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            limits: Limits::default(),
            workers: None,
            shutdown_grace: HumanDuration::secs(30),
            access_log: AccessLog::default(),
        }
    }
}

/// TLS certificate and key for the data-plane listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM file with the certificate chain, leaf first. Relative to the config file.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Relative to the config file.
    pub key: PathBuf,
}

/// Request limits. Every limit is on by default.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted; larger bodies get 413.
    pub max_body: ByteSize,
    /// Largest total size of request header names and values; larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Time a client has to send the complete request head; slower connections are closed.
    pub header_timeout: HumanDuration,
    /// A connection with no bytes moving in either direction for this long is closed.
    pub idle_timeout: HumanDuration,
    /// Most client connections open at once; further connections wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: ByteSize::mib(10),
            max_header_bytes: ByteSize::kib(64),
            header_timeout: HumanDuration::secs(10),
            idle_timeout: HumanDuration::secs(60),
            max_connections: 10_000,
        }
    }
}

/// Access log settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write one JSON line per request to stdout.
    pub enabled: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address and port of the admin plane (`/healthz`, `/readyz`, `/metrics`, `/admin/...`).
    /// Loopback by default; any other address requires `token`. Changing it requires a restart.
    pub listen: SocketAddr,
    /// Bearer token required on `/admin/...` and `/metrics` (`Authorization: Bearer TOKEN`).
    /// `/healthz` and `/readyz` stay open for load balancers. Required when `listen` is not loopback.
    pub token: Option<Secret>,
}

impl Default for Admin {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9901)), token: None }
    }
}

/// Durable state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// `sqlite://PATH` (embedded, created on first start, the default) or `postgres://…` so that
    /// several gateway nodes share state. A relative SQLite path is relative to the working directory.
    pub url: String,
}

impl Default for State {
    fn default() -> Self {
        Self { url: "sqlite://bridgehead.db".into() }
    }
}

/// A named group of backend servers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The servers. Traffic is split by weight among the healthy ones.
    pub targets: Vec<Target>,
    /// How a target is picked among the healthy ones.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Timeouts toward this upstream.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Active health checks: absent means targets are only ejected passively.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of targets that fail consecutive requests.
    #[serde(default)]
    pub passive_health: PassiveHealth,
}

/// One backend server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Base URL: `http://host:port`. The request path is appended to it.
    pub url: String,
    /// Share of traffic relative to the other targets (0 to 10000; 0 drains the target).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Target selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin: an exact, interleaved split by weight (99/1 sends 1 in 100).
    #[default]
    RoundRobin,
    /// Weighted least outstanding requests: of two targets drawn by weight, the less busy one.
    LeastRequests,
}

/// Timeouts toward an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Time to establish a TCP connection to a target; exceeded counts as a connect error (502).
    pub connect: HumanDuration,
    /// Time from sending the request until the response head arrives; exceeded gives 504.
    pub request: HumanDuration,
    /// How long an unused pooled keep-alive connection is kept.
    pub pool_idle: HumanDuration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration::secs(2),
            request: HumanDuration::secs(30),
            pool_idle: HumanDuration::secs(90),
        }
    }
}

/// Active health checking: a GET to every target at an interval.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path to GET on each target; a 2xx or 3xx answer counts as healthy.
    pub path: String,
    /// Time between checks.
    #[serde(default = "default_hc_interval")]
    pub interval: HumanDuration,
    /// Time a check may take.
    #[serde(default = "default_hc_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failed checks before a healthy target is marked unhealthy.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    /// Consecutive passed checks before an unhealthy target is marked healthy.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
}

fn default_hc_interval() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_hc_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_unhealthy_after() -> u32 {
    3
}
fn default_healthy_after() -> u32 {
    2
}

/// Passive ejection: a target that fails this many requests in a row (connect errors or 5xx
/// answers) is taken out of rotation for `eject_for`, then tried again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Consecutive failures before ejection; 0 turns passive ejection off.
    pub consecutive_failures: u32,
    /// How long an ejected target stays out.
    pub eject_for: HumanDuration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self { consecutive_failures: 5, eject_for: HumanDuration::secs(30) }
    }
}

/// A routing rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name; appears in metrics and access logs.
    pub name: String,
    /// What requests this route takes. All given conditions must hold.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Name of the upstream (under `upstreams`) that serves this route.
    pub upstream: String,
    /// Prefix removed from the path before it is sent upstream (`/api` turns `/api/orders` into `/orders`).
    #[serde(default)]
    pub strip_prefix: Option<String>,
}

/// Conditions a request must meet. A route needs at least one of `path_prefix`, `path` or `host`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix on whole segments: `/api/orders` matches `/api/orders` and `/api/orders/7`, not `/api/ordersx`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path, or a template whose `{name}` segments match any one segment: `/orders/{id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Host (without port) the request is addressed to: `api.example.com`, or `*.example.com` for any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    /// Allowed methods; absent means any. A path match with a method outside this list gets 405.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Headers that must be present with exactly this value (`"*"`: present with any value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
