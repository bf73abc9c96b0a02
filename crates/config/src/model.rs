//! The typed configuration tree. Every field's doc comment is user documentation: the JSON
//! Schema (`bridgehead config schema`) and `docs/config.md` are generated from them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration, Rate, Secret};

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
    /// Named ways of proving who a caller is; routes list the ones they accept under `auth`.
    #[serde(default)]
    pub authenticators: BTreeMap<String, Authenticator>,
    /// Rules that map incoming requests to upstreams. The most specific match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The built-in OAuth 2.0 authorization server (the local issuer), served on the data
    /// listener under `/oauth2/` and `/.well-known/`. Absent: off.
    #[serde(default)]
    pub oauth_server: Option<OAuthServer>,
    /// Webhook receivers (`inbound`).
    #[serde(default)]
    pub webhooks: Webhooks,
    /// gRPC services and their schemas, for routes that transcode JSON over HTTP to gRPC
    /// (`grpc_transcode`).
    #[serde(default)]
    pub grpc: Grpc,
    /// SOAP services read from their WSDL, for routes that expose them as JSON (`soap`).
    #[serde(default)]
    pub soap: Soap,
    /// What the gateway reports about itself to other systems: OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// Telemetry sent to a collector.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// OpenTelemetry traces, exported with OTLP. Absent: off, at no cost (a client's
    /// `traceparent` then passes through to the upstream untouched).
    #[serde(default)]
    pub traces: Option<Traces>,
}

/// Trace export (OTLP) and sampling. `endpoint`, `protocol`, `headers`, `compression`, `tls`
/// and the queue settings are fixed at start (a reload that changes them says so);
/// `sample_ratio` and `parent_based` take effect on reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traces {
    /// The collector's base URL (`http://127.0.0.1:4318` for OTLP/HTTP, `:4317` for gRPC). With
    /// `http/protobuf`, spans are posted to `{endpoint}/v1/traces` (a path in the endpoint is
    /// kept as a prefix); with `grpc`, the URL has no path.
    pub endpoint: String,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Headers sent with every export (a collector's API key: use `${env:…}` or `${file:…}`).
    /// Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: OtlpCompression,
    /// The share of new traces recorded, 0.0 to 1.0.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// A request that comes with a W3C `traceparent` is recorded exactly when its caller
    /// recorded it (the sampled flag), whatever `sample_ratio` says.
    #[serde(default = "default_true")]
    pub parent_based: bool,
    /// TLS toward an `https://` collector.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// The most spans waiting for export; more are dropped and counted in
    /// `bridgehead_telemetry_spans_total{result="dropped_queue_full"}`.
    #[serde(default = "default_span_queue")]
    pub max_queue: usize,
    /// The most spans in one export request.
    #[serde(default = "default_span_batch")]
    pub max_batch: usize,
    /// How long spans wait for a batch to fill before they are sent anyway (at most 5s).
    #[serde(default = "default_export_interval")]
    pub interval: HumanDuration,
    /// The longest one export request may take, its answer included (at most 60s).
    #[serde(default = "default_export_timeout")]
    pub timeout: HumanDuration,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_span_queue() -> usize {
    2048
}
fn default_span_batch() -> usize {
    512
}
fn default_export_interval() -> HumanDuration {
    HumanDuration::secs(1)
}
fn default_export_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP over HTTP: protobuf bodies posted to `{endpoint}/v1/traces`.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP over gRPC: `TraceService/Export` (HTTP/2; h2c for `http://`).
    #[serde(rename = "grpc")]
    Grpc,
}

/// Compression of export requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    #[default]
    None,
    Gzip,
}

/// SOAP services.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Soap {
    /// Services by name; a route with `soap: { service: NAME }` exposes every operation as
    /// `POST {match.path_prefix}/{Operation}` with JSON.
    #[serde(default)]
    pub services: BTreeMap<String, SoapService>,
}

/// A SOAP service: where it lives and its WSDL.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoapService {
    /// The upstream whose targets serve it. The WSDL's `soap:address` path is appended to the
    /// target's URL (its host is not used: the upstream says where the service is).
    pub upstream: String,
    /// The WSDL 1.1: a file (relative to the config file; its imports and includes relative to
    /// it), or an `http(s)://` URL fetched at start with everything it imports. A fetched WSDL
    /// is kept in the state store and serves when the URL cannot be reached (an air-gapped
    /// restart).
    pub wsdl: String,
    /// The WSDL port to call (`wsdl:service/wsdl:port@name`); absent: the first with a SOAP
    /// 1.1 or 1.2 binding.
    #[serde(default)]
    pub port: Option<String>,
    /// A WS-Security UsernameToken in every request's header.
    #[serde(default)]
    pub ws_security: Option<WsSecurity>,
    /// Operations that change nothing and may be retried (the upstream's `retry` applies to
    /// them; other operations are sent once).
    #[serde(default)]
    pub safe_operations: Vec<String>,
    /// Largest SOAP answer read; larger gets 502.
    #[serde(default = "default_soap_response")]
    pub max_response_size: ByteSize,
}

fn default_soap_response() -> ByteSize {
    ByteSize::mib(16)
}

/// OASIS WS-Security UsernameToken.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsSecurity {
    /// The user name sent in `wsse:Username`.
    pub username: String,
    /// The password, usually `${env:NAME}`.
    pub password: Secret,
    /// Send `PasswordDigest` (Base64(SHA-1(nonce + created + password))) instead of the
    /// password itself (`PasswordText`).
    #[serde(default)]
    pub digest: bool,
}

/// A route that exposes a SOAP service as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoapRoute {
    /// The service (a name under `soap.services`).
    pub service: String,
}

/// gRPC services.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grpc {
    /// Services by name; a route with `grpc_transcode: { service: NAME }` exposes one as JSON.
    #[serde(default)]
    pub services: BTreeMap<String, GrpcService>,
}

/// A gRPC server and where its schema comes from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcService {
    /// The upstream whose targets serve it (`protocol: h2c` for plain TCP, or `https://` targets).
    pub upstream: String,
    /// Where the schema comes from: exactly one of `reflection`, `protos` or `descriptor_set`.
    pub descriptors: GrpcDescriptors,
    /// The gRPC services of the schema that transcoding routes expose, by full name
    /// (`drone.v1.Telemetry`); absent or empty: every service the schema defines (reflection
    /// lists every service the server has, so name them to expose only some).
    #[serde(default)]
    pub services: Vec<String>,
    /// Largest message either way, request or response; larger gets 413 (request) or 502
    /// (response). Default 4 MiB, gRPC's own default.
    #[serde(default = "default_grpc_message_size")]
    pub max_message_size: ByteSize,
}

fn default_grpc_message_size() -> ByteSize {
    ByteSize::mib(4)
}

/// The schema of a gRPC service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcDescriptors {
    /// Ask the server (gRPC server reflection, v1, then v1alpha) at start, every `refresh`, and on
    /// `POST /admin/grpc/{service}/refresh`. The last schema fetched is kept in the state store
    /// and serves when the server cannot be asked, across restarts.
    #[serde(default)]
    pub reflection: bool,
    /// How often reflection is asked again (with `reflection`).
    #[serde(default = "default_reflection_refresh")]
    pub refresh: HumanDuration,
    /// `.proto` files, compiled at start (paths relative to the config file or to an `include`
    /// directory). `google/api/*.proto`, `google/rpc/*.proto` and the well-known types are built in.
    #[serde(default)]
    pub protos: Vec<String>,
    /// Import directories for `protos`.
    #[serde(default)]
    pub include: Vec<String>,
    /// A binary `FileDescriptorSet` (`protoc --include_imports -o FILE`, `buf build -o FILE`).
    #[serde(default)]
    pub descriptor_set: Option<String>,
}

fn default_reflection_refresh() -> HumanDuration {
    HumanDuration::secs(300)
}

/// A route that exposes a gRPC service as JSON over HTTP.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcTranscode {
    /// The service (a name under `grpc.services`).
    pub service: String,
    /// Write fields that hold their default value (`0`, `""`, `false`, `[]`) in responses.
    #[serde(default)]
    pub emit_defaults: bool,
    /// Write the `.proto` field names (`drone_id`) instead of lowerCamelCase (`droneId`).
    #[serde(default)]
    pub proto_names: bool,
    /// Ignore JSON fields and query parameters the message lacks, instead of a 400.
    #[serde(default)]
    pub ignore_unknown_fields: bool,
    /// Request headers sent on as gRPC metadata, and response metadata returned as headers
    /// (`x-tenant`, `x-trace-bin`); `-bin` values travel as base64 either way. `authorization`
    /// listed here forwards the caller's credential when the route also has
    /// `forward_credentials: true` (an upstream with `credentials` sends its own).
    #[serde(default)]
    pub metadata: Vec<String>,
}

/// The built-in OAuth 2.0 authorization server. Its access tokens are RFC 9068 JWTs signed with
/// keys kept in the state database; `jwt: { issuer: local }` authenticators trust them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthServer {
    /// The issuer identifier: the URL clients reach this gateway at (RFC 8414 `issuer`, the
    /// tokens' `iss`). No query or fragment.
    pub issuer: String,
    /// Lifetime of access tokens.
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl: HumanDuration,
    /// Lifetime of refresh tokens.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl: HumanDuration,
    /// `aud` of issued access tokens. Default: the issuer.
    #[serde(default)]
    pub audience: Option<String>,
    /// Token requests accepted per second from one client address (burst: twice as many);
    /// more get 429 with `Retry-After`.
    #[serde(default = "default_token_rate")]
    pub token_rate_per_ip: u32,
    /// Clients declared here; more can be added at run time with `bridgehead oauth client add`.
    #[serde(default)]
    pub clients: Vec<OAuthClient>,
    /// Users who can log in at `/oauth2/authorize`.
    #[serde(default)]
    pub users: Vec<OAuthUser>,
}

/// An OAuth client.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// The client id.
    pub client_id: String,
    /// Lower-case hex SHA-256 of the client secret (machine secrets are long and random, so a
    /// fast hash keeps the token endpoint fast). Required unless `public`.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// A public client (no secret, e.g. a browser app): only `authorization_code` with PKCE and
    /// `refresh_token`.
    #[serde(default)]
    pub public: bool,
    /// Grants this client may use: `client_credentials`, `authorization_code`, `refresh_token`.
    pub grants: Vec<String>,
    /// Scopes this client may ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Redirect URIs for `authorization_code`, compared exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

/// A user of the login page.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthUser {
    /// Login name (the tokens' `sub`).
    pub username: String,
    /// Argon2 PHC string (`$argon2id$v=19$...`).
    pub password_hash: Secret,
}

fn default_access_ttl() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_refresh_ttl() -> HumanDuration {
    HumanDuration::secs(30 * 24 * 3600)
}
fn default_token_rate() -> u32 {
    50
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
    /// Data-plane workers; absent means one per CPU this process may use (its CPU affinity mask
    /// and cgroup quota). One worker serves everything on one single-threaded runtime; several
    /// each get a thread with a runtime and an `SO_REUSEPORT` listener of their own, the kernel
    /// spreading connections over them. Requires a restart.
    pub workers: Option<usize>,
    /// On SIGTERM, how long in-flight requests may take to finish before the process exits.
    pub shutdown_grace: HumanDuration,
    /// Access logging: one JSON object per request, on stdout or to a file.
    pub access_log: AccessLog,
    /// How request paths are brought to one canonical spelling before routing, authentication
    /// and forwarding, so that the gateway and the upstream agree on which resource is meant.
    pub path_normalization: PathNormalization,
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
            path_normalization: PathNormalization::default(),
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
    /// PEM file with the CA certificates that client certificates are verified against. Setting
    /// it asks clients for a certificate (mutual TLS); `mtls` authenticators need it.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` refuses the TLS handshake without a valid client certificate;
    /// `optional` accepts clients without one and leaves the decision to routes with an `mtls`
    /// authenticator. A certificate that is presented but fails verification is always refused.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether the listener insists on a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Every client must present a certificate that chains to `client_ca`.
    #[default]
    Required,
    /// A certificate is verified when presented; routes decide whether they need one.
    Optional,
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
    /// Most client connections open at once, all workers together; past it, further
    /// connections wait (each worker holds at most one accepted connection until another closes,
    /// the rest wait in the listen backlog).
    pub max_connections: usize,
    /// Memory for bodies held whole, across all requests: request bodies kept for a retry or
    /// fingerprinted for an idempotency key, and responses stored for replay. When it is used
    /// up, a request is not retried (its body streams), a keyed request gets 503 `busy`, and a
    /// response is passed through with only its status and headers stored. At least each route's
    /// `idempotency.max_request_body`/`max_response_body` and each upstream's `retry.max_body`.
    /// Requires a restart.
    pub max_buffered: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: ByteSize::mib(10),
            max_header_bytes: ByteSize::kib(64),
            header_timeout: HumanDuration::secs(10),
            idle_timeout: HumanDuration::secs(60),
            max_connections: 10_000,
            max_buffered: ByteSize::mib(256),
        }
    }
}

/// Path normalization. Percent-escapes of unreserved characters are always decoded, dot
/// segments always removed, and invalid escapes, control characters and raw backslashes always
/// refused with 400; these settings cover the rest.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PathNormalization {
    /// Merge repeated slashes (`//a///b` is routed and forwarded as `/a/b`). Turn off only for
    /// an upstream that gives empty segments a meaning; an upstream that merges them (nginx
    /// does by default) then sees `//secure` where the gateway routes something else.
    pub merge_slashes: bool,
    /// Escaped slashes and backslashes (`%2F`, `%5C`) in a request path.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        Self { merge_slashes: true, escaped_slashes: EscapedSlashes::Reject }
    }
}

/// What to do with `%2F` and `%5C` in a request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refuse the request with 400.
    #[default]
    Reject,
    /// Keep them encoded: part of a segment for routing, forwarded encoded (upper-case hex).
    /// Safe only when the upstream does not decode them either.
    Keep,
    /// Decode both to `/` before routing and forwarding.
    Decode,
}

/// Access log settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write one JSON line per request.
    pub enabled: bool,
    /// Where the lines go: `stdout`, or a file (a relative path is read from the config file's
    /// directory), appended to and reopened on SIGUSR1 so logrotate can move it away. Changing
    /// it requires a restart.
    pub output: String,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self { enabled: true, output: "stdout".into() }
    }
}

impl AccessLog {
    /// The file the lines go to; `None` for stdout.
    pub fn file(&self) -> Option<&std::path::Path> {
        (self.output != "stdout").then(|| std::path::Path::new(&self.output))
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
    /// `redis://[:password@]host:port[/db]`: rate-limit buckets and idempotency records are then
    /// kept in Redis and shared by every gateway node. Absent: rate limits are counted in each
    /// process and idempotency records live in the state database.
    pub redis: Option<Secret>,
}

impl Default for State {
    fn default() -> Self {
        Self { url: "sqlite://bridgehead.db".into(), redis: None }
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
    /// The protocol spoken to the targets: `http1`, `h2c` (HTTP/2 over plain TCP, prior
    /// knowledge), `h2` (HTTP/2 over TLS, agreed by ALPN), or `auto` (ALPN decides over TLS,
    /// HTTP/1.1 on plain TCP).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// HTTP/2 settings toward the targets, with `protocol: h2c`, `h2` or `auto`.
    #[serde(default)]
    pub http2: Http2Settings,
    /// Timeouts toward this upstream.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Active health checks: absent means targets are only ejected passively.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of targets that fail consecutive requests.
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// TLS toward `https://` targets: extra trusted CAs, a client certificate, an SNI override.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// The credential Bridgehead adds to every request it forwards to this upstream (replacing
    /// any the client sent in the same header).
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Retries of failed requests, with exponential backoff and full jitter, within a budget.
    /// Absent: no retries.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// A circuit breaker per target: a target failing too often is taken out of rotation for a
    /// while. Absent: off (passive ejection still applies).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// The most Bridgehead sends to this upstream (requests queue up to `max_wait`), and pausing
    /// when the upstream signals its own limit (`Retry-After` on 429/503, `X-RateLimit-Remaining:
    /// 0`, `RateLimit: …;r=0`). Absent: no outbound limit and no pauses (one client's exhausted
    /// quota must not stop everybody unless Bridgehead owns the pace).
    #[serde(default)]
    pub rate_limit: Option<UpstreamRateLimit>,
    /// Canary stickiness: requests with the same `consumer`, `ip`, `header:NAME` or
    /// `cookie:NAME` always go to the same target (weighted rendezvous hashing over the available
    /// targets), so a user does not bounce between versions. Requests without the key are spread
    /// by `load_balancing`.
    #[serde(default)]
    pub sticky: Option<RequestKey>,
}

/// What identifies the requests that share a rate-limit bucket or a sticky target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestKey {
    /// The authenticated consumer (needs `auth` on the route); anonymous requests share one key.
    Consumer,
    /// The client's IP address (the TCP peer).
    Ip,
    /// The whole route: one bucket for everybody.
    Route,
    /// The value of a request header; requests without it share one key.
    Header(String),
    /// The value of a cookie; requests without it share one key.
    Cookie(String),
}

impl std::str::FromStr for RequestKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "consumer" => Self::Consumer,
            "ip" => Self::Ip,
            "route" => Self::Route,
            _ => match s.split_once(':') {
                Some(("header", name)) if !name.is_empty() => Self::Header(name.to_ascii_lowercase()),
                Some(("cookie", name)) if !name.is_empty() => Self::Cookie(name.to_owned()),
                _ => {
                    return Err(format!(
                        "invalid key `{s}`; use consumer, ip, route, header:NAME or cookie:NAME"
                    ));
                }
            },
        })
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Consumer => f.write_str("consumer"),
            Self::Ip => f.write_str("ip"),
            Self::Route => f.write_str("route"),
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl Serialize for RequestKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for RequestKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RequestKey".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`consumer`, `ip`, `route`, `header:NAME` or `cookie:NAME`.",
            "pattern": "^(consumer|ip|route|header:.+|cookie:.+)$"
        })
    }
}

/// Retries toward an upstream. Only requests that are safe to send twice are retried: idempotent
/// methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and requests carrying an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Tries in total, the first included (1 to 10).
    pub attempts: u32,
    /// Backoff before the first retry; doubles after each, capped by `max_backoff`. The wait is
    /// drawn uniformly between 0 and that value (full jitter).
    pub backoff: HumanDuration,
    /// Largest backoff; also the longest `Retry-After` honoured before a retry.
    pub max_backoff: HumanDuration,
    /// What is retried: `connect-error` (the target refused or did not answer the connection),
    /// `timeout` (no response head within `per_try_timeout`; the upstream may have acted on the
    /// request), `reset` (the connection broke before a response head), a status code such
    /// as `503` or `429`, or a gRPC status of a failed call (`unavailable`, `resource-exhausted`,
    /// `deadline-exceeded`, `internal`, `unknown`, `cancelled`).
    pub on: Vec<RetryOn>,
    /// Time one try may take until its response head; `timeouts.request` stays the deadline for
    /// all tries together. Absent: `timeouts.request`.
    pub per_try_timeout: Option<HumanDuration>,
    /// Largest request body kept in memory so it can be sent again; a larger body is streamed
    /// and its request is not retried.
    pub max_body: ByteSize,
    /// Retries may be at most this share of the requests over `budget_window` (plus
    /// `min_retries`), so retries cannot multiply an outage.
    pub budget_ratio: f64,
    /// The sliding window of the retry budget.
    pub budget_window: HumanDuration,
    /// Retries always allowed per `budget_window`, whatever the ratio, so a quiet upstream can
    /// still be retried.
    pub min_retries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: HumanDuration::millis(100),
            max_backoff: HumanDuration::secs(2),
            on: vec![RetryOn::ConnectError, RetryOn::Status(502), RetryOn::Status(503), RetryOn::Status(504)],
            per_try_timeout: None,
            max_body: ByteSize::kib(64),
            budget_ratio: 0.2,
            budget_window: HumanDuration::secs(10),
            min_retries: 3,
        }
    }
}

/// A condition under which a request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection to the target could not be made.
    ConnectError,
    /// No response head within the try's timeout.
    Timeout,
    /// The connection broke before a response head arrived.
    Reset,
    /// The upstream answered with this status (408, 429 or 5xx).
    Status(u16),
    /// A gRPC call failed with this status code (judged on routes that speak gRPC): named as
    /// `cancelled`, `deadline-exceeded`, `resource-exhausted`, `internal`, `unavailable` or
    /// `unknown`.
    Grpc(u32),
}

/// The gRPC status codes `retry.on` may name, by name.
const GRPC_RETRY_CODES: [(&str, u32); 6] = [
    ("cancelled", 1),
    ("unknown", 2),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

impl std::str::FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connect-error" => return Ok(Self::ConnectError),
            "timeout" => return Ok(Self::Timeout),
            "reset" => return Ok(Self::Reset),
            _ => {}
        }
        if let Some((_, code)) = GRPC_RETRY_CODES.iter().find(|(name, _)| *name == s) {
            return Ok(Self::Grpc(*code));
        }
        match s.parse::<u16>() {
            Ok(n) if n == 408 || n == 429 || (500..=599).contains(&n) => Ok(Self::Status(n)),
            _ => Err(format!(
                "`{s}` is not retryable; use connect-error, timeout, reset, 408, 429, a 5xx status, or a gRPC status: cancelled, unknown, deadline-exceeded, resource-exhausted, internal, unavailable"
            )),
        }
    }
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectError => f.write_str("connect-error"),
            Self::Timeout => f.write_str("timeout"),
            Self::Reset => f.write_str("reset"),
            Self::Status(n) => write!(f, "{n}"),
            Self::Grpc(code) => {
                let name = GRPC_RETRY_CODES.iter().find(|(_, c)| c == code).map_or("unknown", |(n, _)| n);
                f.write_str(name)
            }
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Status(n) => s.serialize_u16(*n),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect-error, timeout, reset or a status code")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RetryOn, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RetryOn, E> {
                n.to_string().parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RetryOn, E> {
                n.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RetryOn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryOn".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`connect-error`, `timeout`, `reset`, a status code (408, 429, 5xx), or a gRPC status name.",
            "anyOf": [
                {"type": "string", "enum": ["connect-error", "timeout", "reset", "cancelled", "unknown", "deadline-exceeded", "resource-exhausted", "internal", "unavailable"]},
                {"type": "integer", "minimum": 408, "maximum": 599}
            ]
        })
    }
}

/// A circuit breaker per target. Failures are connect errors, timeouts, 5xx answers, and gRPC
/// calls that fail with UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE or DATA_LOSS.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// The breaker opens when failures over `window` are more than this share of requests...
    pub failure_ratio: f64,
    /// ...and there were at least this many requests in the window.
    pub min_requests: u32,
    /// The sliding window over which requests and failures are counted.
    pub window: HumanDuration,
    /// How long an open breaker refuses traffic before letting probes through (half-open).
    pub open_for: HumanDuration,
    /// Requests let through while half-open; all succeeding closes the breaker, any failure
    /// opens it again.
    pub half_open_probes: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_requests: 20,
            window: HumanDuration::secs(30),
            open_for: HumanDuration::secs(15),
            half_open_probes: 3,
        }
    }
}

/// What Bridgehead sends to an upstream at most (counted by each gateway node, or across all
/// nodes with `state.redis`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRateLimit {
    /// Requests sent per second, minute or hour: `50/s`.
    pub rate: Rate,
    /// Requests that may be sent at once after a quiet period. Default: 1.
    #[serde(default = "one")]
    pub burst: u64,
    /// Longest a request waits for its turn (or for an upstream-requested pause to end); after
    /// that it gets 503 `upstream-rate-limited`.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
    /// Most requests waiting at once; more get 503 at once.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn one() -> u64 {
    1
}
fn default_max_wait() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_queue() -> usize {
    1000
}

/// TLS toward an upstream's `https://` targets. The system roots are always trusted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM bundle of CA certificates trusted in addition to the system roots (the customer's
    /// internal CA). Relative to the config file.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS, leaf first; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Server name sent in SNI and checked against the certificate, instead of the target's host
    /// (for targets addressed by IP whose certificate names a host).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A credential toward an upstream. Exactly one kind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Credentials {
    /// OAuth 2.0 client credentials (RFC 6749 §4.4): a token fetched from `token_url`, cached,
    /// refreshed at 80% of its lifetime, and sent as `Authorization: Bearer`.
    Oauth2ClientCredentials(OAuth2ClientCredentials),
    /// A fixed bearer token: `Authorization: Bearer TOKEN`.
    Bearer(BearerCredential),
    /// A fixed API key in a header.
    ApiKey(ApiKeyCredential),
    /// HTTP Basic (RFC 7617): `Authorization: Basic base64(username:password)`.
    Basic(BasicCredential),
}

/// OAuth 2.0 client credentials toward an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2ClientCredentials {
    /// The customer's token endpoint.
    pub token_url: String,
    /// Client id issued to Bridgehead.
    pub client_id: String,
    /// Client secret, usually `${env:NAME}`.
    pub client_secret: Secret,
    /// Space-separated scopes to ask for.
    #[serde(default)]
    pub scope: Option<String>,
    /// `audience` parameter, for token endpoints that want one (Auth0, Okta and others).
    #[serde(default)]
    pub audience: Option<String>,
    /// How the client authenticates at the token endpoint: `basic` (HTTP Basic, RFC 6749
    /// §2.3.1) or `post` (client_id and client_secret in the form body).
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// Time a token request may take.
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
    /// PEM CA bundle trusted for `token_url` in addition to the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Client authentication at a token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

/// A fixed bearer token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerCredential {
    /// The token, usually `${env:NAME}` or `${file:PATH}`.
    pub token: Secret,
}

/// A fixed API key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCredential {
    /// Header that carries it, e.g. `X-API-Key`.
    pub header: String,
    /// The key, usually `${env:NAME}`.
    pub value: Secret,
}

/// HTTP Basic credentials.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// User name (must not contain `:`).
    pub username: String,
    /// Password, usually `${env:NAME}`.
    pub password: Secret,
}

/// One backend server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Base URL: `http://host:port` or `https://host:port` (see `tls`). The request path is appended to it.
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

/// The protocol spoken to an upstream's targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS for `https://` targets, offering only `http/1.1` in ALPN).
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge; `http://` targets only. For gRPC servers.
    H2c,
    /// HTTP/2 over TLS; `https://` targets only. A target that does not agree to `h2` in ALPN
    /// fails the connection.
    H2,
    /// Over TLS, HTTP/2 when the target agrees to `h2` in ALPN, else HTTP/1.1 (remembered per
    /// target until the next reload); on plain TCP, HTTP/1.1.
    Auto,
}

/// HTTP/2 connections toward an upstream's targets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Settings {
    /// Streams (requests) in flight on one connection; past it, another connection to the
    /// same target is opened. The target's own `SETTINGS_MAX_CONCURRENT_STREAMS` applies too.
    pub max_concurrent_streams: u32,
    /// Connections kept to one target by each data-plane worker (`server.workers`); when all
    /// carry `max_concurrent_streams`, further requests share the least busy one.
    pub max_connections: u32,
    /// Initial flow-control window of each stream.
    pub initial_stream_window: ByteSize,
    /// Initial flow-control window of each connection.
    pub initial_connection_window: ByteSize,
    /// Largest frame payload Bridgehead accepts (16KiB to 16MiB - 1).
    pub max_frame_size: ByteSize,
    /// Interval of PING frames that check an idle connection is alive.
    pub keep_alive_interval: HumanDuration,
    /// Time a PING may wait for its answer before the connection is closed.
    pub keep_alive_timeout: HumanDuration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_connections: 8,
            initial_stream_window: ByteSize::kib(1024),
            initial_connection_window: ByteSize::kib(4096),
            max_frame_size: ByteSize::kib(16),
            keep_alive_interval: HumanDuration::secs(30),
            keep_alive_timeout: HumanDuration::secs(10),
        }
    }
}

/// Timeouts toward an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Time to resolve a target's name and establish a TCP connection (each address the name
    /// resolves to gets an equal share of what is left), then again for the TLS handshake;
    /// exceeded counts as a connect error (502).
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
    /// Name of the upstream (under `upstreams`) that serves this route. Not with
    /// `grpc_transcode` or `soap`, whose service names its upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Serve the route by transcoding JSON over HTTP to a gRPC service's methods (its
    /// `google.api.http` bindings, and `POST /{package.Service}/{Method}` for the others).
    /// With `match.path_prefix`, the bindings are mounted under it; without a path in `match`,
    /// the route takes exactly the bindings' paths.
    #[serde(default)]
    pub grpc_transcode: Option<GrpcTranscode>,
    /// Serve the route from a SOAP service: `POST {match.path_prefix}/{Operation}` with the
    /// input message as JSON answers the output message as JSON; `GET
    /// {match.path_prefix}/openapi.json` describes them. Needs `match.path_prefix`.
    #[serde(default)]
    pub soap: Option<SoapRoute>,
    /// Prefix removed from the path before it is sent upstream (`/api` turns `/api/orders` into `/orders`).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Authenticators (names under `authenticators`) of which any one must admit the request;
    /// absent or empty means a public route. Tried in order; the first that succeeds wins.
    #[serde(default)]
    pub auth: Vec<String>,
    /// Scopes the caller must hold, all of them (JWT `scope`/`scp`, introspection `scope`, API key
    /// `scopes`); missing ones get 403 `insufficient_scope`. Needs `auth`.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Send the caller's credential (Authorization header, API key, token cookie) upstream too.
    /// Off by default: credentials are removed once checked, and the upstream sees `X-Consumer-Id`.
    #[serde(default)]
    pub forward_credentials: bool,
    /// Inbound rate limits: one policy or a list (all must admit the request). A refusal is 429
    /// `quota-exceeded` with `Retry-After`.
    #[serde(default)]
    pub rate_limit: Option<RateLimits>,
    /// Which rate-limit header families responses of this route carry.
    #[serde(default)]
    pub rate_limit_headers: RateLimitHeaders,
    /// Idempotency keys (IETF Idempotency-Key draft): a repeated `Idempotency-Key` gets the stored
    /// response instead of reaching the upstream again. Absent: off.
    #[serde(default)]
    pub idempotency: Option<Idempotency>,
    /// Protocols an HTTP/1.1 client may switch to through this route (`Upgrade`, RFC 9110 §7.8),
    /// compared case-insensitively; `foo` allows every `foo/N`, `foo/2` only that version. A
    /// request offering another protocol is served as plain HTTP/1.1 with `Upgrade` removed; an
    /// upstream that answers 101 to it gets a 502. `h2c`, `h2`, `HTTP` and `TLS` are never
    /// allowed: the tunnel would carry HTTP requests past routing and authentication.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

/// One rate-limit policy or several.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RateLimits {
    One(RateLimitPolicy),
    Many(Vec<RateLimitPolicy>),
}

impl RateLimits {
    pub fn policies(&self) -> &[RateLimitPolicy] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for RateLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RateLimits;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rate-limit policy `{ key, rate, burst }` or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<RateLimits, A::Error> {
                RateLimitPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(RateLimits::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<RateLimits, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(a)).map(RateLimits::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// An inbound rate-limit policy: a token bucket holding `burst` requests, refilled at `rate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// The policy's name in `RateLimit-Policy`/`RateLimit` headers and in the 429 problem.
    /// Default: `default`; required when a route has several policies.
    #[serde(default)]
    pub name: Option<String>,
    /// Who shares a bucket: `consumer`, `ip`, `route`, `header:NAME` or `cookie:NAME`.
    #[serde(default = "default_rl_key")]
    pub key: RequestKey,
    /// Sustained rate: `100/s`, `600/m`, `10000/h`.
    pub rate: Rate,
    /// Requests admitted at once after a quiet period. Default: the rate's count (`100/s` → 100).
    #[serde(default)]
    pub burst: Option<u64>,
    /// With `state.redis`, what happens while Redis cannot be reached: `open` admits requests,
    /// `closed` refuses them with 503.
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

fn default_rl_key() -> RequestKey {
    RequestKey::Consumer
}

/// Behaviour of a shared limit while its store is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Admit requests (the limit is not enforced until the store is back).
    #[default]
    Open,
    /// Refuse requests with 503 `rate-limit-unavailable`.
    Closed,
}

/// Rate-limit header families on a limited route's responses.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft).
    pub ietf: bool,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds).
    pub legacy: bool,
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        Self { ietf: true, legacy: true }
    }
}

/// Idempotency keys on a route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    /// How long a completed response is kept and replayed.
    pub ttl: HumanDuration,
    /// Refuse requests of `methods` without an `Idempotency-Key` (400).
    pub required: bool,
    /// Methods the key applies to: POST and PATCH by default; PUT and DELETE may be added.
    pub methods: Vec<String>,
    /// Largest request body accepted with a key (it is read whole to fingerprint it); larger
    /// gets 413.
    pub max_request_body: ByteSize,
    /// Largest response body stored for replay; a larger response is passed through and only its
    /// status and headers are stored (repeats get an empty body and `Idempotent-Body-Omitted:
    /// true`), since the upstream acted on the request.
    pub max_response_body: ByteSize,
    /// Also store the upstream's 5xx responses. Off: they free the key so the client's retry can
    /// succeed. The gateway's own errors (502, 503, 504) always free it, and 408 and 429 answers
    /// are never stored.
    pub store_server_errors: bool,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self {
            ttl: HumanDuration::secs(24 * 3600),
            required: false,
            methods: vec!["POST".into(), "PATCH".into()],
            max_request_body: ByteSize::mib(1),
            max_response_body: ByteSize::mib(1),
            store_server_errors: false,
        }
    }
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
    /// A gRPC service's calls (`drone.v1.Telemetry`, path `/drone.v1.Telemetry/…`), proxied as
    /// gRPC. Instead of `path_prefix` and `path`.
    #[serde(default)]
    pub grpc_service: Option<String>,
    /// One method of `grpc_service` (`GetStatus`).
    #[serde(default)]
    pub grpc_method: Option<String>,
}

impl RouteMatch {
    /// The path condition `grpc_service` and `grpc_method` stand for: a prefix for a service, an
    /// exact path for a method.
    pub fn grpc_path(&self) -> Option<(bool, String)> {
        let service = self.grpc_service.as_deref()?;
        Some(match &self.grpc_method {
            Some(m) => (false, format!("/{service}/{m}")),
            None => (true, format!("/{service}")),
        })
    }
}

/// One way of proving who a caller is. Exactly one kind per authenticator.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Authenticator {
    /// JSON Web Tokens (RFC 7519) signed by an identity provider, checked per RFC 8725.
    Jwt(JwtAuth),
    /// API keys sent in a header or query parameter, stored only as SHA-256 digests.
    ApiKey(ApiKeyAuth),
    /// Client certificates verified by the listener against `server.tls.client_ca`.
    Mtls(MtlsAuth),
    /// Opaque tokens checked at an OAuth 2.0 introspection endpoint (RFC 7662).
    Introspection(IntrospectionAuth),
}

/// A JWT authenticator. Exactly one key source: `jwks_url`, `jwks_file`, `public_key_file` or `secret`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// URL of the identity provider's JWKS. Fetched at start, refreshed every `refresh`, and
    /// (at most once per `min_refresh_interval`) when a token names an unknown `kid`. The last good
    /// key set is kept in the state database and keeps serving while the provider is unreachable.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS file, reloaded when it changes. Relative to the config file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A PEM public key (or certificate) file. Relative to the config file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Shared secret for HS256/384/512, usually `${env:NAME}`; at least as long as the hash output
    /// (32, 48 or 64 bytes).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Required `iss` value, compared exactly.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences: the token's `aud` must contain at least one. Empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `alg` values. Default: every asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA)
    /// for key sources and HS256/384/512 for `secret`. Each key is also pinned to its own type.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Refuse tokens without `exp`.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Required `typ` header, e.g. `at+jwt` for RFC 9068 access tokens.
    #[serde(default)]
    pub typ: Option<String>,
    /// Claims that must hold these values: a string claim must equal one of the listed values,
    /// an array claim must contain one of them.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    /// Claim that names the consumer. Default: `sub`, then `client_id`, then `azp`.
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Claims sent upstream as headers: `{ tenant: X-Tenant }`. Arrays are joined with `,`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Read the token from this header instead of `Authorization: Bearer` (a `Bearer ` prefix is accepted).
    #[serde(default)]
    pub header: Option<String>,
    /// Read the token from this cookie when the header does not carry one.
    #[serde(default)]
    pub cookie: Option<String>,
    /// How often `jwks_url` is fetched again.
    #[serde(default = "default_jwks_refresh")]
    pub refresh: HumanDuration,
    /// Least time between two fetches caused by unknown `kid`s.
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval: HumanDuration,
    /// Time a JWKS fetch may take.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    /// PEM CA bundle trusted for `jwks_url` in addition to the system roots. Relative to the config file.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Verified tokens remembered so a repeated token skips the signature check; entries expire
    /// at the token's `exp`. 0 turns the cache off.
    #[serde(default = "default_token_cache")]
    pub token_cache: usize,
    /// Longest token accepted; longer ones are refused before any decoding.
    #[serde(default = "default_max_token")]
    pub max_token_size: ByteSize,
}

/// An API key authenticator.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Header carrying the key. Default `X-API-Key` unless only `query` is set.
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter carrying the key (keys in URLs end up in other systems' logs: prefer the header).
    #[serde(default)]
    pub query: Option<String>,
    /// Accepted keys, as SHA-256 digests (`echo -n KEY | sha256sum`).
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// Also accept the keys created for this authenticator with `bridgehead apikey create`,
    /// read from the state database every `refresh`.
    #[serde(default)]
    pub from_state: bool,
    /// How often keys are read again from the state database (with `from_state`).
    #[serde(default = "default_apikey_refresh")]
    pub refresh: HumanDuration,
}

/// One accepted API key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The consumer this key identifies (sent upstream as `X-Consumer-Id`).
    pub consumer: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    /// Scopes this key grants, for routes with `require_scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A client-certificate authenticator. The listener has verified the chain against
/// `server.tls.client_ca`; this checks who the certificate names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsAuth {
    /// Patterns of which one must match, `*` matching any run of characters: an attribute
    /// (`CN=laptop-*`), a whole subject (`CN=a,O=Acme`), or a SAN (`DNS:*.acme.example`,
    /// `URI:spiffe://acme/*`, `email:*@acme.example`, `IP:10.0.*`). Empty: any verified certificate.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Header that carries the certificate subject (RFC 4514) upstream.
    #[serde(default = "default_subject_header")]
    pub subject_header: String,
    /// Header that carries the certificate's SANs upstream, comma-separated.
    #[serde(default = "default_san_header")]
    pub san_header: String,
}

/// An OAuth 2.0 token introspection authenticator (RFC 7662), for opaque tokens.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionAuth {
    /// The introspection endpoint.
    pub url: String,
    /// Client id Bridgehead authenticates with at the endpoint (HTTP Basic).
    pub client_id: String,
    /// Client secret, usually `${env:NAME}`.
    pub client_secret: Secret,
    /// Accepted audiences (`aud` in the answer); empty: not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Longest time an answer is reused; never past the token's `exp`. Inactive answers are kept
    /// for at most 5 s.
    #[serde(default = "default_introspection_cache")]
    pub cache_ttl: HumanDuration,
    /// Time the endpoint may take to answer.
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
    /// PEM CA bundle trusted for `url` in addition to the system roots. Relative to the config file.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Field of the answer that names the consumer. Default: `sub`, then `client_id`.
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Answer fields sent upstream as headers: `{ tenant: X-Tenant }`.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Read the token from this header instead of `Authorization: Bearer`.
    #[serde(default)]
    pub header: Option<String>,
    /// Read the token from this cookie when the header does not carry one.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Most answers cached.
    #[serde(default = "default_token_cache")]
    pub token_cache: usize,
}

fn default_true() -> bool {
    true
}
fn default_leeway() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_jwks_refresh() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_min_refresh() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_fetch_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_token_cache() -> usize {
    10_000
}
fn default_max_token() -> ByteSize {
    ByteSize::kib(16)
}
fn default_apikey_refresh() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_introspection_cache() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_subject_header() -> String {
    "X-Client-Cert-Subject".into()
}
fn default_san_header() -> String {
    "X-Client-Cert-San".into()
}

/// Webhooks: receivers for the deliveries of providers (Stripe, GitHub, Slack, any Standard
/// Webhooks sender, or a custom HMAC).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// Receivers. Each answers `POST` on its exact `path` (every host): it verifies the
    /// signature over the raw bytes, refuses replays, checks the payload against its JSON Schema,
    /// stores the message durably before answering 2xx, then forwards it to `forward` in the
    /// background with retries. Every refused request is kept as a dead letter.
    #[serde(default)]
    pub inbound: Vec<InboundWebhook>,
    /// The dispatcher: events published on `intake` are delivered, signed, to every endpoint
    /// whose `events` match, durably and with retries.
    #[serde(default)]
    pub outbound: Option<OutboundWebhooks>,
    /// The catalogue of outbound event types: type → `{ schema: FILE }` (a JSON Schema, draft
    /// 2020-12, relative to this file) checked against an event's `data` at intake. When it
    /// lists any type, an event of a type not listed is refused (400).
    #[serde(default)]
    pub event_types: BTreeMap<String, EventType>,
}

/// One outbound event type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventType {
    /// A JSON Schema file every event's `data` must pass; absent: any `data`.
    #[serde(default)]
    pub schema: Option<PathBuf>,
}

/// The outbound dispatcher.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundWebhooks {
    /// The exact path where events are published: `POST {"type": …, "data": …}`, with an
    /// optional `id` (the same id from the same publisher, its authenticator and consumer, is
    /// accepted once) and `ordering_key`. Answered 202 with the message id once committed.
    pub intake: String,
    /// Authenticators (names under `authenticators`) a publisher must pass, tried in order. Empty:
    /// anyone who can reach `intake` publishes (a warning).
    #[serde(default)]
    pub auth: Vec<String>,
    /// Scopes a publisher's credential must carry.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Waits between delivery attempts (each ±20% jitter; a `Retry-After` on 429 or 503 is
    /// honoured when longer); after the last, the delivery is dead (listed, replayable).
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<HumanDuration>,
    /// Largest event accepted at intake; larger gets 413. At most `server.limits.max_body`.
    #[serde(default = "default_webhook_max_body")]
    pub max_body: ByteSize,
    /// How long messages, their attempts and their ids (idempotent publishing) are kept once
    /// every delivery finished.
    #[serde(default = "default_webhook_retention")]
    pub retention: HumanDuration,
    /// The longest one delivery attempt may take, the answer included (at most 20s).
    #[serde(default = "default_attempt_timeout")]
    pub timeout: HumanDuration,
    /// The circuit breaker of every endpoint: an endpoint failing too often is not tried for a
    /// while (its deliveries wait, their attempts not spent), then probed. Absent: more than
    /// half of at least 5 attempts in 30s failing opens it for 30s, then 1 probe; a key left out
    /// of a breaker given here takes the upstream breaker's default (below).
    #[serde(default = "default_endpoint_breaker")]
    pub circuit_breaker: CircuitBreaker,
    /// The endpoints declared here. More can be added at run time (admin API, `bridgehead
    /// webhook endpoints add`).
    #[serde(default)]
    pub endpoints: Vec<WebhookEndpoint>,
}

fn default_attempt_timeout() -> HumanDuration {
    HumanDuration::secs(15)
}

fn default_endpoint_breaker() -> CircuitBreaker {
    CircuitBreaker {
        min_requests: 5,
        open_for: HumanDuration::secs(30),
        half_open_probes: 1,
        ..CircuitBreaker::default()
    }
}

/// Where events are delivered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Its name, in metrics, logs and the admin API (`endpoint:<name>`).
    pub name: String,
    /// `https://…` (or `http://…`): where each event is `POST`ed. Redirects are not followed.
    pub url: String,
    /// Event types delivered here: exact names, or patterns where `*` matches any run of
    /// characters (`order.*`, `*`).
    pub events: Vec<String>,
    /// The signing secret: `whsec_…` (HMAC-SHA256, `v1`) or `whsk_…` (Ed25519, `v1a`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Several secrets while the endpoint moves to a new one: each delivery carries a
    /// signature per secret.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Let the URL resolve to loopback, private, link-local or other internal addresses
    /// (refused by default, after DNS and on every connect).
    #[serde(default)]
    pub allow_private_network: bool,
}

/// One webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundWebhook {
    /// Its name, in metrics, logs and dead letters (`inbound:<name>`).
    pub name: String,
    /// The exact path it answers on (`POST`; other methods get 405).
    pub path: String,
    /// How deliveries are signed.
    pub verify: WebhookVerify,
    /// A JSON Schema file (draft 2020-12, relative to this file) every payload must pass.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// A JSON Schema file per event type, the type read from the payload at `pointer`.
    #[serde(default)]
    pub schemas: Option<WebhookSchemas>,
    /// Where the sender's message id is read, for replay protection. Default: `webhook-id`
    /// (standard), the payload's `/id` (stripe), `X-GitHub-Delivery` (github), the payload's
    /// `/event_id` (slack), `verify.id_header` (hmac). A message without one is not
    /// deduplicated.
    #[serde(default)]
    pub id: Option<WebhookMessageId>,
    /// Where accepted messages are sent.
    pub forward: WebhookForward,
    /// Largest body accepted; larger gets 413. At most `server.limits.max_body`.
    #[serde(default = "default_webhook_max_body")]
    pub max_body: ByteSize,
    /// How long delivered messages, their ids (replay protection) and dead letters are kept.
    #[serde(default = "default_webhook_retention")]
    pub retention: HumanDuration,
    /// Waits between forwarding attempts (each ±20% jitter; a `Retry-After` on 429 or 503 is
    /// honoured when longer); after the last, the message is dead (still listed with its
    /// attempts).
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<HumanDuration>,
}

fn default_webhook_max_body() -> ByteSize {
    ByteSize::mib(1)
}

fn default_webhook_retention() -> HumanDuration {
    HumanDuration::secs(7 * 86_400)
}

fn default_retry_schedule() -> Vec<HumanDuration> {
    [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000].into_iter().map(HumanDuration::secs).collect()
}

/// How a provider signs its deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookVerify {
    /// `standard` (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`;
    /// `whsec_` HMAC secrets or `whpk_` Ed25519 public keys), `stripe` (`Stripe-Signature`),
    /// `github` (`X-Hub-Signature-256`), `slack` (`X-Slack-Signature`), or `hmac` (the keys below).
    pub scheme: WebhookScheme,
    /// The secret (or `whpk_` public key).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Several secrets while one is rotated: any one matching passes.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// How far a signed timestamp may be from now, in either direction.
    #[serde(default = "default_tolerance")]
    pub tolerance: HumanDuration,
    /// `hmac`: the header carrying the signature.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac`: text before the encoded signature in that header (e.g. `sha256=`).
    #[serde(default)]
    pub prefix: String,
    /// `hmac`: `sha256` or `sha512`.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// `hmac`: `hex` or `base64`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// `hmac`: what is signed: `{body}`, `{timestamp}` and `{id}` with literal text around them.
    #[serde(default = "default_signed_content")]
    pub content: String,
    /// `hmac`: the header carrying the signed timestamp (Unix seconds), when `content` has
    /// `{timestamp}`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `hmac`: the header carrying the message id, when `content` has `{id}`.
    #[serde(default)]
    pub id_header: Option<String>,
}

fn default_tolerance() -> HumanDuration {
    HumanDuration::secs(300)
}

fn default_signed_content() -> String {
    "{body}".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookScheme {
    Standard,
    Stripe,
    Github,
    Slack,
    Hmac,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

/// JSON Schemas per event type.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSchemas {
    /// JSON pointer (RFC 6901) to the event type in the payload.
    #[serde(default = "default_type_pointer")]
    pub pointer: String,
    /// Event type → JSON Schema file (relative to this file).
    pub types: BTreeMap<String, PathBuf>,
    /// A type with no schema here (or no type at all): `reject` (400, a dead letter; the
    /// default) or `accept` unchecked.
    #[serde(default)]
    pub unknown: UnknownEventType,
}

fn default_type_pointer() -> String {
    "/type".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownEventType {
    #[default]
    Reject,
    Accept,
}

/// Where a message id is read: one of `header` or `pointer`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookMessageId {
    /// A request header.
    #[serde(default)]
    pub header: Option<String>,
    /// A JSON pointer (RFC 6901) into the payload.
    #[serde(default)]
    pub pointer: Option<String>,
}

/// Where a receiver sends accepted messages: `POST` to `path` on an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookForward {
    /// A name under `upstreams` (its targets, TLS, credentials, health, breaker and timeouts
    /// apply; its `retry` does not: the receiver's `retry_schedule` does).
    pub upstream: String,
    /// The path (and query) on the upstream.
    pub path: String,
}
