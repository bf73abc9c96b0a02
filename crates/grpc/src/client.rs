//! The client side of `bridgehead grpc`: a server address with grpcurl's TLS flags becomes a
//! one-target upstream (so calls go through the same transport, TLS and framing as the
//! gateway's), and the schema comes from reflection, `.proto` files or a descriptor set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bridgehead_config::{
    Http2Settings, LoadBalancing, LoadedConfig, PassiveHealth, Target, Upstream as UpstreamConfig,
    UpstreamProtocol, UpstreamTimeouts, UpstreamTls,
};
use bridgehead_http::metrics::Metrics;
use bridgehead_upstream::{Carryover, Upstream};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use prost_reflect::{DynamicMessage, MethodDescriptor};

use crate::call::{self, Finished};
use crate::frame;
use crate::reflection;
use crate::schema::Schema;

/// The largest answer message the command reads.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Where a server is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// `host:port`.
    pub addr: String,
    /// HTTP/2 over plain TCP (h2c) instead of TLS.
    pub plaintext: bool,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub servername: Option<String>,
    /// The longest a call (or a reflection round) may take.
    pub max_time: Duration,
}

/// Where the schema comes from.
#[derive(Debug, Clone, Default)]
pub struct SchemaSource {
    pub protos: Vec<PathBuf>,
    pub import_paths: Vec<PathBuf>,
    pub protoset: Option<PathBuf>,
}

/// A connection to one server.
pub struct Client {
    pub upstream: Arc<Upstream>,
    pub metrics: Metrics,
    pub max_time: Duration,
}

impl Client {
    pub fn new(server: &Server) -> Result<Client, String> {
        let scheme = if server.plaintext { "http" } else { "https" };
        let url = format!("{scheme}://{}", server.addr);
        bridgehead_config::check_target_url(&url).map_err(|e| format!("address `{}`: {e}", server.addr))?;
        let cfg = UpstreamConfig {
            targets: vec![Target { url, weight: 1 }],
            load_balancing: LoadBalancing::RoundRobin,
            protocol: if server.plaintext { UpstreamProtocol::H2c } else { UpstreamProtocol::H2 },
            http2: Http2Settings::default(),
            timeouts: UpstreamTimeouts {
                connect: bridgehead_config::HumanDuration(server.max_time.min(Duration::from_secs(10))),
                request: bridgehead_config::HumanDuration(server.max_time),
                ..UpstreamTimeouts::default()
            },
            health_check: None,
            passive_health: PassiveHealth { consecutive_failures: 0, ..PassiveHealth::default() },
            tls: (!server.plaintext).then(|| UpstreamTls {
                ca: server.cacert.clone(),
                cert: server.cert.clone(),
                key: server.key.clone(),
                server_name: server.servername.clone(),
            }),
            credentials: None,
            retry: None,
            circuit_breaker: None,
            rate_limit: None,
            sticky: None,
        };
        let loaded = LoadedConfig::command_line();
        let metrics = Metrics::default();
        let upstream = Upstream::build("server", &cfg, &Carryover::default(), &loaded, &metrics, None)
            .map_err(|e| e.to_string().replace("upstreams.server.tls.", "--"))?;
        Ok(Client { upstream: Arc::new(upstream), metrics, max_time: server.max_time })
    }

    /// The schema: from the files given, else from the server's reflection.
    pub async fn schema(&self, source: &SchemaSource) -> Result<(Schema, Vec<String>), String> {
        if let Some(set) = &source.protoset {
            let bytes = std::fs::read(set).map_err(|e| format!("cannot read {}: {e}", set.display()))?;
            let schema =
                Schema::from_descriptor_set(&bytes).map_err(|e| format!("{}: {e}", set.display()))?;
            let names = schema.services().iter().map(|s| s.full_name().to_owned()).collect();
            return Ok((schema, names));
        }
        if !source.protos.is_empty() {
            let mut include = source.import_paths.clone();
            if include.is_empty() {
                include.push(PathBuf::from("."));
            }
            let schema = Schema::compile(&source.protos, &include).map_err(|e| e.to_string())?;
            let names = schema.services().iter().map(|s| s.full_name().to_owned()).collect();
            return Ok((schema, names));
        }
        let got = reflection::fetch(&self.upstream, &self.metrics, self.max_time)
            .await
            .map_err(|e| e.to_string())?;
        Ok((got.schema, got.services))
    }

    /// Calls `method` with `requests` (one for a unary or server-streaming method) and reads the
    /// answer to its end.
    pub async fn call(
        &self,
        method: &MethodDescriptor,
        requests: &[DynamicMessage],
        metadata: HeaderMap,
    ) -> Result<Finished, String> {
        let mut body = BytesMut::new();
        for r in requests {
            body.extend_from_slice(&frame::encode(&prost::Message::encode_to_vec(r)));
        }
        let mut headers = call::request_headers(Some(self.max_time));
        headers.extend(metadata);
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let run = async {
            let res = call::send(&self.upstream, &self.metrics, &path, headers, Bytes::from(body), &mut ())
                .await
                .map_err(|e| {
                    e.to_string()
                        .replace("upstream `server`", &format!("server {}", self.upstream.targets[0].url))
                })?;
            let most = if method.is_server_streaming() { usize::MAX } else { 1 };
            call::finish(res, MAX_MESSAGE, most, method.parent_pool()).await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(self.max_time, run).await.map_err(|_| {
            format!("no answer within {} (--max-time)", humantime::format_duration(self.max_time))
        })?
    }
}

/// A call made from JSON: each answer message as JSON, and the status.
pub struct JsonCall {
    pub messages: Vec<serde_json::Value>,
    pub status: crate::status::Status,
}

impl Client {
    /// Calls `method` (`package.Service/Method`) with requests written as JSON: one value, or
    /// for a client-streaming method any number of them (NDJSON).
    pub async fn call_json(
        &self,
        schema: &Schema,
        method: &str,
        text: &str,
        metadata: HeaderMap,
        opts: &crate::mapping::JsonOptions,
    ) -> Result<JsonCall, String> {
        let m = find_method(schema, method)?;
        let input = m.input();
        let mut requests = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().enumerate() {
            let v = v.map_err(|e| format!("the request data is not JSON: {e}"))?;
            if i > 0 && !m.is_client_streaming() {
                return Err(format!("`{method}` takes one request message; the data holds more"));
            }
            requests.push(crate::mapping::from_json(&input, v, opts).map_err(|e| format!("request: {e}"))?);
        }
        if requests.is_empty() && !m.is_client_streaming() {
            requests.push(DynamicMessage::new(input));
        }
        let done = self.call(&m, &requests, metadata).await?;
        let messages = done
            .messages
            .iter()
            .map(|raw| {
                let msg = DynamicMessage::decode(m.output(), raw.as_ref())
                    .map_err(|e| format!("a response message does not decode: {e}"))?;
                serde_json::from_slice(&crate::mapping::response_json(&msg, None, opts))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()?;
        Ok(JsonCall { messages, status: done.status })
    }
}

/// Finds `pkg.Service/Method` (or `pkg.Service.Method`) in a schema.
pub fn find_method(schema: &Schema, name: &str) -> Result<MethodDescriptor, String> {
    let (service, method) = name
        .rsplit_once('/')
        .or_else(|| name.rsplit_once('.'))
        .ok_or_else(|| format!("`{name}` is not a method name (`package.Service/Method`)"))?;
    let svc = schema.service(service).map_err(|e| e.to_string())?;
    svc.methods().find(|m| m.name() == method).ok_or_else(|| {
        let names: Vec<String> = svc.methods().map(|m| m.name().to_owned()).collect();
        format!("service `{service}` has no method `{method}` (it has {})", names.join(", "))
    })
}
