//! The server-reflection client: asks a gRPC server for its services and the file descriptors
//! that define them, with their imports, in as few round trips as the import depth.
//!
//! Version 1 (`grpc.reflection.v1`) is asked first; a server that does not implement it
//! (UNIMPLEMENTED, as Python's grpcio-reflection answers) is asked with `v1alpha`. Each round
//! is one stream carrying every request of the round; the server answers each in order.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use bridgehead_http::metrics::Metrics;
use bridgehead_upstream::Upstream;

use crate::bundled;
use crate::call;
use crate::frame;
use crate::schema::{Schema, SchemaError};
use crate::status::name;

/// Why reflection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    #[error("the server does not offer reflection (v1 and v1alpha are UNIMPLEMENTED)")]
    Unimplemented,
    #[error("reflection call failed: {0}")]
    Call(String),
    #[error("reflection answered {code}: {message}")]
    Status { code: &'static str, message: String },
    #[error("reflection could not find `{symbol}`: {message}")]
    NotFound { symbol: String, message: String },
    #[error("the server's reflection lists no service")]
    NoServices,
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// The largest reflection answer read (a whole file tree can be big).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// The most schema bytes one fetch collects, over all its rounds.
const MAX_SCHEMA: usize = 128 * 1024 * 1024;

/// A reflection version's method path and message types.
struct Version {
    path: &'static str,
    request: MessageDescriptor,
    response: MessageDescriptor,
}

impl Version {
    fn new(v: &str) -> Version {
        let pool = bundled::pool();
        let pkg = format!("grpc.reflection.{v}");
        Version {
            path: if v == "v1" {
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            } else {
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            },
            request: pool.get_message_by_name(&format!("{pkg}.ServerReflectionRequest")).expect("bundled"),
            response: pool.get_message_by_name(&format!("{pkg}.ServerReflectionResponse")).expect("bundled"),
        }
    }
}

/// What reflection returned: the service names and the schema built from the files.
pub struct Reflected {
    pub services: Vec<String>,
    pub schema: Schema,
}

/// Asks `upstream`'s reflection for every service and its files.
pub async fn fetch(
    upstream: &Arc<Upstream>,
    metrics: &Metrics,
    timeout: Duration,
) -> Result<Reflected, ReflectionError> {
    match fetch_with(upstream, metrics, timeout, &Version::new("v1")).await {
        Err(ReflectionError::Unimplemented) => {
            fetch_with(upstream, metrics, timeout, &Version::new("v1alpha")).await
        }
        other => other,
    }
}

async fn fetch_with(
    upstream: &Arc<Upstream>,
    metrics: &Metrics,
    timeout: Duration,
    v: &Version,
) -> Result<Reflected, ReflectionError> {
    let answers = round(upstream, metrics, timeout, v, &[("list_services", String::new())]).await?;
    let mut services: Vec<String> = Vec::new();
    for a in &answers {
        if let Some(list) = a.get_field_by_name("list_services_response")
            && let Some(list) = list.as_message()
            && let Some(Value::List(items)) = list.get_field_by_name("service").as_deref()
        {
            for item in items {
                if let Some(n) = item
                    .as_message()
                    .and_then(|m| m.get_field_by_name("name"))
                    .and_then(|n| n.as_str().map(str::to_owned))
                {
                    services.push(n);
                }
            }
        }
    }
    services.retain(|s| !s.starts_with("grpc.reflection."));
    if services.is_empty() {
        return Err(ReflectionError::NoServices);
    }
    let asks: Vec<(&str, String)> = services.iter().map(|s| ("file_containing_symbol", s.clone())).collect();
    let mut files: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut names: HashSet<String> = HashSet::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut next = asks;
    // Each round asks for the imports the files so far lack; a server that sends whole
    // dependency trees at once needs one round.
    for _ in 0..64 {
        if next.is_empty() {
            break;
        }
        let answers = round(upstream, metrics, timeout, v, &next).await?;
        for (a, (_, symbol)) in answers.iter().zip(&next) {
            if let Some(e) =
                a.get_field_by_name("error_response").filter(|_| a.has_field_by_name("error_response"))
            {
                let e = e.as_message().cloned().unwrap_or_else(|| DynamicMessage::new(v.response.clone()));
                let message = e
                    .get_field_by_name("error_message")
                    .and_then(|m| m.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(ReflectionError::NotFound { symbol: symbol.clone(), message });
            }
            let Some(fdr) = a.get_field_by_name("file_descriptor_response") else { continue };
            let Some(fdr) = fdr.as_message() else { continue };
            if let Some(Value::List(list)) = fdr.get_field_by_name("file_descriptor_proto").as_deref() {
                for raw in list.iter().filter_map(|b| b.as_bytes()) {
                    let f = <prost_types::FileDescriptorProto as prost::Message>::decode(raw.as_ref())
                        .map_err(|e| SchemaError::Decode(e.to_string()))?;
                    let name = f.name.unwrap_or_default();
                    if names.insert(name) {
                        total += raw.len();
                        if total > MAX_SCHEMA {
                            return Err(ReflectionError::Call(format!(
                                "the schema is over {MAX_SCHEMA} bytes"
                            )));
                        }
                        files.push(raw.clone());
                        wanted.extend(f.dependency);
                    }
                }
            }
        }
        next = wanted
            .iter()
            .filter(|d| !names.contains(*d) && !bundled::supplies(d))
            .map(|d| ("file_by_filename", d.clone()))
            .collect();
        wanted.retain(|d| !names.contains(d));
    }
    let schema = Schema::from_files(files)?;
    Ok(Reflected { services, schema })
}

/// One stream: every request of the round, and an answer for each.
async fn round(
    upstream: &Arc<Upstream>,
    metrics: &Metrics,
    timeout: Duration,
    v: &Version,
    asks: &[(&str, String)],
) -> Result<Vec<DynamicMessage>, ReflectionError> {
    let mut body = Vec::new();
    for (field, value) in asks {
        let mut m = DynamicMessage::new(v.request.clone());
        m.set_field_by_name(field, Value::String(value.clone()));
        body.extend_from_slice(&frame::encode(&prost::Message::encode_to_vec(&m)));
    }
    let headers = call::request_headers(Some(timeout));
    let res =
        tokio::time::timeout(timeout, call::send(upstream, metrics, v.path, headers, body.into(), &mut ()))
            .await
            .map_err(|_| ReflectionError::Call(format!("no answer within {}", humantime(timeout))))?
            .map_err(|e| ReflectionError::Call(e.to_string()))?;
    let done = tokio::time::timeout(timeout, call::finish(res, MAX_ANSWER, asks.len(), bundled::pool()))
        .await
        .map_err(|_| ReflectionError::Call(format!("the answer did not end within {}", humantime(timeout))))?
        .map_err(|e| ReflectionError::Call(e.to_string()))?;
    match done.status.code {
        0 => {}
        12 => return Err(ReflectionError::Unimplemented),
        code => return Err(ReflectionError::Status { code: name(code), message: done.status.message }),
    }
    done.messages
        .iter()
        .map(|m| {
            DynamicMessage::decode(v.response.clone(), m.as_ref())
                .map_err(|e| ReflectionError::Call(e.to_string()))
        })
        .collect()
}

fn humantime(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
