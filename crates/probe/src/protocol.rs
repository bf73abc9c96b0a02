//! What the endpoint speaks: REST/JSON, gRPC (with reflection, v1 then v1alpha), gRPC-Web,
//! SOAP (its WSDL, and a fault to an envelope), GraphQL (introspection), an OpenAPI document at
//! the usual paths, a WebSocket upgrade. Each finding carries its evidence: the request and the
//! answer that gave it away.
//!
//! Every probe is read-only by construction: GETs, a reflection listing, an envelope naming no
//! operation (sent only to an endpoint whose WSDL was found), an introspection query. A `POST`
//! of `{}` to the URL itself, which a server could take as a request to create something, is
//! sent only when asked (`--post`).
//!
//! The reflection messages are read and written by hand: a list request is two bytes, and its
//! answer three nested length-delimited fields, not worth the gRPC stack as a dependency.

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use serde::Serialize;

use crate::client::{Answer, Dialer, Want};

/// What was found, and what was tried and not found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Protocols {
    pub found: Vec<Finding>,
    /// Probes that found nothing, with their answer or error.
    pub tried: Vec<Tried>,
}

/// One protocol the endpoint speaks.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Finding {
    /// `json`, `xml`, `grpc`, `grpc-web`, `soap`, `graphql`, `openapi` or `websocket`.
    pub protocol: &'static str,
    /// The request and the answer that gave it away.
    pub evidence: String,
    /// The document or endpoint found (a WSDL, an OpenAPI document, a GraphQL endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// gRPC: the reflection version that answered (`v1`, `v1alpha`). SOAP: `1.1`, `1.2`.
    /// OpenAPI: the document's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// gRPC: the services reflection lists. SOAP: the WSDL's services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// SOAP: the operations. OpenAPI: the paths. GraphQL: the query type's name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub probe: String,
    pub outcome: String,
}

/// A document is read up to this size (a WSDL or an OpenAPI document can be large).
const DOCUMENT_LIMIT: usize = 4 << 20;
/// Other answers up to this size.
const ANSWER_LIMIT: usize = 64 << 10;

impl Protocols {
    fn tried(&mut self, probe: impl Into<String>, outcome: impl Into<String>) {
        self.tried.push(Tried { probe: probe.into(), outcome: outcome.into() });
    }

    /// Whether `protocol` was found.
    pub fn has(&self, protocol: &str) -> bool {
        self.found.iter().any(|f| f.protocol == protocol)
    }

    pub fn get(&self, protocol: &str) -> Option<&Finding> {
        self.found.iter().find(|f| f.protocol == protocol)
    }
}

/// Runs every probe against the endpoint. `target` is the URL's path and query, `first` the
/// answer to the probe's GET.
pub async fn detect(d: &Dialer, target: &str, first: &Answer, post: bool) -> Protocols {
    let mut p = Protocols::default();
    from_first_answer(&mut p, target, first);
    let (grpc, soap, graphql, openapi, ws) = tokio::join!(
        grpc(d),
        soap(d, target, post),
        graphql(d, target),
        openapi(d, target),
        websocket(d, target)
    );
    let grpc_services = grpc.found.first().map(|f| f.services.clone()).unwrap_or_default();
    let web = grpc_web(d, target, &grpc_services).await;
    for part in [grpc, web, soap, graphql, openapi, ws] {
        p.found.extend(part.found);
        p.tried.extend(part.tried);
    }
    // The first answer's fault and the WSDL's finding are one SOAP finding.
    let soap: Vec<usize> =
        p.found.iter().enumerate().filter(|(_, f)| f.protocol == "soap").map(|(i, _)| i).collect();
    if let [first, .., last] = soap[..] {
        let folded = p.found.remove(first);
        p.found[last - 1].evidence.push_str(&format!("; {}", folded.evidence));
    }
    if post {
        post_json(d, target, &mut p).await;
    }
    p
}

/// The first answer's content type: JSON, XML, or a SOAP fault.
fn from_first_answer(p: &mut Protocols, target: &str, first: &Answer) {
    let mt = first.media_type();
    let evidence = format!("GET {target} → {}", first.summary());
    if mt == "application/json" || mt.ends_with("+json") {
        p.found.push(Finding { protocol: "json", evidence, ..Finding::default() });
    } else if let Some(fault) = soap_fault(&first.body) {
        p.found.push(Finding {
            protocol: "soap",
            evidence: format!("{evidence}: a SOAP {} fault ({fault})", fault_version(&first.body)),
            version: Some(fault_version(&first.body).into()),
            ..Finding::default()
        });
    } else if mt == "application/xml" || mt == "text/xml" || mt.ends_with("+xml") {
        p.found.push(Finding { protocol: "xml", evidence, ..Finding::default() });
    }
}

/// A gRPC message frame around `msg`.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + msg.len());
    b.push(0);
    b.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// gRPC over HTTP/2: the reflection service's listing, v1 then v1alpha. Any answer carrying a
/// `grpc-status` or a gRPC content type shows gRPC, even when reflection is off.
async fn grpc(d: &Dialer) -> Protocols {
    let mut p = Protocols::default();
    // ServerReflectionRequest { list_services: "" } (field 7, length-delimited, empty).
    let body = Bytes::from(frame(&[0x3a, 0x00]));
    for version in ["v1", "v1alpha"] {
        let path = format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo");
        let req = d
            .request(Method::POST, &path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body.clone()))
            .expect("a valid request");
        let probe = format!("gRPC reflection {version}: POST {path}");
        let a = match d.send(Want::H2, req, ANSWER_LIMIT).await {
            Ok(a) => a,
            Err(e) => {
                p.tried(probe, e);
                return p;
            }
        };
        let status = a.header("grpc-status").map(str::to_owned);
        let grpc_ct = a.media_type().starts_with("application/grpc");
        let Some(status) = status.filter(|_| grpc_ct || a.status == http::StatusCode::OK) else {
            p.tried(probe, a.summary());
            // Not gRPC at all: v1alpha will not say otherwise.
            return p;
        };
        let evidence = format!("{probe} → {}, grpc-status {status}", a.summary());
        if status == "0" {
            let services = listed_services(&a.body);
            p.found.push(Finding {
                protocol: "grpc",
                evidence,
                version: Some(version.into()),
                services,
                ..Finding::default()
            });
            return p;
        }
        // UNIMPLEMENTED: no reflection at this version; any other status: gRPC, reflection
        // refused. Either way, gRPC is spoken.
        if status != "12" || version == "v1alpha" {
            let message = a.header("grpc-message").map(|m| format!(" ({m})")).unwrap_or_default();
            p.found.push(Finding {
                protocol: "grpc",
                evidence: format!("{evidence}{message}; no reflection listing"),
                ..Finding::default()
            });
            return p;
        }
        p.tried(probe, format!("grpc-status {status}: not served"));
    }
    p
}

/// The services in a ServerReflectionResponse frame (field 6, list_services_response: field 1,
/// service: field 1, name).
fn listed_services(body: &[u8]) -> Vec<String> {
    let Some(msg) = body.get(5..).filter(|_| body.len() >= 5) else { return Vec::new() };
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = &msg[..len.min(msg.len())];
    let mut names = Vec::new();
    for (n, list) in pb_fields(msg) {
        if n != 6 {
            continue;
        }
        for (n, service) in pb_fields(list) {
            if n != 1 {
                continue;
            }
            for (n, name) in pb_fields(service) {
                if n == 1 {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    names
}

/// The length-delimited fields of a protobuf message, `(number, bytes)`; other wire types are
/// skipped, and reading stops at the first malformed field.
fn pb_fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let skip = match key & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    break;
                }
                0
            }
            1 => 8,
            5 => 4,
            2 => {
                let Some(len) = varint(&mut b).and_then(|l| usize::try_from(l).ok()) else { break };
                let Some(field) = b.get(..len) else { break };
                out.push((key >> 3, field));
                len
            }
            _ => break,
        };
        let Some(rest) = b.get(skip..) else { break };
        b = rest;
    }
    out
}

/// gRPC-Web over the default version (HTTP/1.1 on plain TCP): a health check, and a call to a
/// method no service has, on the service the URL names or else on a reflected one. An answer in a gRPC-Web content type, or with
/// a `grpc-status`, shows gRPC-Web.
async fn grpc_web(d: &Dialer, target: &str, services: &[String]) -> Protocols {
    let mut p = Protocols::default();
    let mut paths = Vec::new();
    // The URL's service when it names a gRPC method (`/package.Service/Method`): asked for a
    // method it does not have, never for the one named (a call could change something).
    let path = target.split('?').next().unwrap_or(target);
    if let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/'))
        && service.contains('.')
        && !method.is_empty()
        && !method.contains('/')
    {
        paths.push(format!("/{service}/BridgeheadProbe"));
    }
    paths.push("/grpc.health.v1.Health/Check".to_owned());
    if let Some(s) = services.iter().find(|s| !s.starts_with("grpc.")) {
        let p = format!("/{s}/BridgeheadProbe");
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    for path in paths {
        let req = d
            .request(Method::POST, &path)
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("accept", "application/grpc-web+proto")
            .body(Full::new(Bytes::from(frame(&[]))))
            .expect("a valid request");
        let probe = format!("gRPC-Web: POST {path}");
        match d.send(Want::Auto, req, ANSWER_LIMIT).await {
            Err(e) => p.tried(probe, e),
            Ok(a) => {
                let status =
                    a.header("grpc-status").map(str::to_owned).or_else(|| web_trailer_status(&a.body));
                if a.media_type().starts_with("application/grpc-web")
                    || (status.is_some() && a.version != http::Version::HTTP_2)
                {
                    let status = status.map(|s| format!(", grpc-status {s}")).unwrap_or_default();
                    p.found.push(Finding {
                        protocol: "grpc-web",
                        evidence: format!("{probe} → {}{status}", a.summary()),
                        ..Finding::default()
                    });
                    return p;
                }
                p.tried(probe, a.summary());
            }
        }
    }
    p
}

/// The `grpc-status` in a gRPC-Web body's trailer frame.
fn web_trailer_status(mut body: &[u8]) -> Option<String> {
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let data = body.get(5..5 + len)?;
        if body[0] & 0x80 != 0 {
            return String::from_utf8_lossy(data).lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case("grpc-status").then(|| v.trim().to_owned())
            });
        }
        body = &body[5 + len..];
    }
    None
}

const WSDL11: &str = "http://schemas.xmlsoap.org/wsdl/";
const WSDL20: &str = "http://www.w3.org/ns/wsdl";
const SOAP11_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const SOAP12_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

/// SOAP: the WSDL at `?wsdl`; then, for a WSDL found (or with `--post`), an envelope naming no
/// operation, whose fault shows the SOAP version spoken.
async fn soap(d: &Dialer, target: &str, post: bool) -> Protocols {
    let mut p = Protocols::default();
    let path = target.split('?').next().unwrap_or(target);
    let wsdl_target = format!("{path}?wsdl");
    let req = d.request(Method::GET, &wsdl_target).body(Full::new(Bytes::new())).expect("a valid request");
    let probe = format!("SOAP: GET {wsdl_target}");
    let mut finding = None;
    match d.send(Want::Auto, req, DOCUMENT_LIMIT).await {
        Err(e) => p.tried(probe, e),
        Ok(a) => match wsdl_summary(&a.body) {
            Some(w) => {
                finding = Some(Finding {
                    protocol: "soap",
                    evidence: format!("{probe} → {}: {}", a.summary(), w.kind),
                    url: Some(format!("{}://{}{wsdl_target}", d.scheme(), d.authority)),
                    version: (!w.versions.is_empty()).then(|| w.versions.join(", ")),
                    services: w.services,
                    operations: w.operations,
                    title: None,
                });
            }
            None => p.tried(probe, format!("{}: not a WSDL", a.summary())),
        },
    }
    if finding.is_none() && !post {
        return p;
    }
    let versions: Vec<String> = finding
        .as_ref()
        .and_then(|f| f.version.clone())
        .map_or_else(|| vec!["1.1".into(), "1.2".into()], |v| v.split(", ").map(str::to_owned).collect());
    let mut faults = Vec::new();
    for v in &versions {
        let (env, ct) = if v == "1.2" {
            (SOAP12_ENV, "application/soap+xml; charset=utf-8")
        } else {
            (SOAP11_ENV, "text/xml; charset=utf-8")
        };
        let envelope = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><e:Envelope xmlns:e="{env}"><e:Body><p:BridgeheadProbe xmlns:p="urn:bridgehead:probe"/></e:Body></e:Envelope>"#
        );
        let mut req = d.request(Method::POST, path).header("content-type", ct);
        if v == "1.1" {
            req = req.header("soapaction", "\"\"");
        }
        let req = req.body(Full::new(Bytes::from(envelope))).expect("a valid request");
        let probe = format!("SOAP {v}: POST {path} (an envelope naming no operation)");
        match d.send(Want::Auto, req, ANSWER_LIMIT).await {
            Err(e) => p.tried(probe, e),
            Ok(a) => match soap_fault(&a.body) {
                Some(code) => faults.push(format!("{probe} → {}: fault {code}", a.summary())),
                None => p.tried(probe, format!("{}: no SOAP fault", a.summary())),
            },
        }
    }
    match finding {
        Some(mut f) => {
            for fault in faults {
                f.evidence.push_str("; ");
                f.evidence.push_str(&fault);
            }
            p.found.push(f);
        }
        None if !faults.is_empty() => {
            p.found.push(Finding { protocol: "soap", evidence: faults.join("; "), ..Finding::default() });
        }
        None => {}
    }
    p
}

struct WsdlSummary {
    kind: &'static str,
    versions: Vec<String>,
    services: Vec<String>,
    operations: Vec<String>,
}

/// What a WSDL (1.1 or 2.0) declares, read leniently.
fn wsdl_summary(body: &[u8]) -> Option<WsdlSummary> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    let ns = root.tag_name().namespace()?;
    let kind = match (ns, root.tag_name().name()) {
        (WSDL11, "definitions") => "a WSDL 1.1 document",
        (WSDL20, "description") => "a WSDL 2.0 document",
        _ => return None,
    };
    let mut versions = Vec::new();
    let mut services = Vec::new();
    let mut operations = Vec::new();
    for n in root.descendants().filter(roxmltree::Node::is_element) {
        let (nns, name) = (n.tag_name().namespace(), n.tag_name().name());
        let v = match nns {
            Some(SOAP11_BINDING) if name == "binding" => Some("1.1"),
            Some(SOAP12_BINDING) if name == "binding" => Some("1.2"),
            Some(WSDL20) if name == "binding" => n
                .attribute("version")
                .or(Some("1.2"))
                .filter(|_| n.attribute("type") == Some("http://www.w3.org/ns/wsdl/soap")),
            _ => None,
        };
        if let Some(v) = v
            && !versions.iter().any(|x| x == v)
        {
            versions.push(v.to_owned());
        }
        let parent = n.parent_element().map(|p| p.tag_name().name());
        if nns == Some(ns) && name == "service" {
            services.extend(n.attribute("name").map(str::to_owned));
        }
        if nns == Some(ns) && name == "operation" && matches!(parent, Some("portType" | "interface")) {
            operations.extend(n.attribute("name").map(str::to_owned));
        }
    }
    versions.sort();
    Some(WsdlSummary { kind, versions, services, operations })
}

/// The fault code of a SOAP fault answer (1.1 `faultcode`, 1.2 `Code/Value`).
fn soap_fault(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    let env = root.tag_name().namespace().filter(|n| *n == SOAP11_ENV || *n == SOAP12_ENV)?;
    let fault = root.descendants().find(|n| n.has_tag_name((env, "Fault")))?;
    let code = fault
        .descendants()
        .find(|n| n.has_tag_name("faultcode") || n.has_tag_name((env, "Value")))
        .and_then(|n| n.text())
        .unwrap_or("")
        .trim();
    Some(if code.is_empty() { "with no code".into() } else { code.to_owned() })
}

fn fault_version(body: &[u8]) -> &'static str {
    if String::from_utf8_lossy(body).contains(SOAP12_ENV) { "1.2" } else { "1.1" }
}

const INTROSPECTION: &str = "{__schema{queryType{name}types{name}}}";

/// GraphQL: an introspection query by GET, at the URL's path and at `/graphql`.
async fn graphql(d: &Dialer, target: &str) -> Protocols {
    let mut p = Protocols::default();
    let path = target.split('?').next().unwrap_or(target);
    let mut paths = vec![path.to_owned()];
    if path != "/graphql" {
        paths.push("/graphql".into());
    }
    let query = url::form_urlencoded::byte_serialize(INTROSPECTION.as_bytes()).collect::<String>();
    for path in paths {
        let t = format!("{path}?query={query}");
        // A JSON content type makes the GET a non-simple request, which servers that refuse
        // simple GETs (against cross-site requests) accept.
        let req = d
            .request(Method::GET, &t)
            .header("accept", "application/graphql-response+json, application/json")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let probe = format!("GraphQL: GET {path}?query=<introspection>");
        match d.send(Want::Auto, req, DOCUMENT_LIMIT).await {
            Err(e) => p.tried(probe, e),
            Ok(a) => {
                let v: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
                let schema = v.as_ref().and_then(|v| v.pointer("/data/__schema"));
                if let Some(s) = schema {
                    let types = s.get("types").and_then(|t| t.as_array()).map_or(0, Vec::len);
                    p.found.push(Finding {
                        protocol: "graphql",
                        evidence: format!("{probe} → {}: a schema with {types} types", a.summary()),
                        url: Some(format!("{}://{}{path}", d.scheme(), d.authority)),
                        operations: s
                            .pointer("/queryType/name")
                            .and_then(|n| n.as_str())
                            .map(str::to_owned)
                            .into_iter()
                            .collect(),
                        ..Finding::default()
                    });
                    return p;
                }
                // A GraphQL error object without data: GraphQL, introspection refused.
                let errors = v.as_ref().and_then(|v| v.get("errors")).and_then(|e| e.as_array());
                if let Some(e) = errors.filter(|e| {
                    !e.is_empty()
                        && v.as_ref().is_some_and(|v| v.get("data").is_none() || v["data"].is_null())
                }) {
                    let msg = e[0].get("message").and_then(|m| m.as_str()).unwrap_or("");
                    if a.media_type().contains("json") && !msg.is_empty() {
                        p.found.push(Finding {
                            protocol: "graphql",
                            evidence: format!(
                                "{probe} → {}: GraphQL errors ({msg}); introspection refused",
                                a.summary()
                            ),
                            url: Some(format!("{}://{}{path}", d.scheme(), d.authority)),
                            ..Finding::default()
                        });
                        return p;
                    }
                }
                p.tried(probe, a.summary());
            }
        }
    }
    p
}

/// The paths an OpenAPI or Swagger document is usually served at, relative to a base.
const OPENAPI_PATHS: &[&str] = &[
    "openapi.json",
    "openapi.yaml",
    "swagger.json",
    "v3/api-docs",
    "v2/api-docs",
    "swagger/v1/swagger.json",
    "api-docs",
];

/// An OpenAPI document at the usual paths below the URL's path and its parents, over one
/// connection, stopping at the first.
async fn openapi(d: &Dialer, target: &str) -> Protocols {
    let mut p = Protocols::default();
    let path = target.split('?').next().unwrap_or(target);
    // The bases: the root, and the URL's first two directories.
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut bases = vec!["/".to_owned()];
    for depth in 1..=segments.len().min(2) {
        bases.push(format!("/{}/", segments[..depth].join("/")));
    }
    let mut candidates: Vec<String> = Vec::new();
    for base in bases.iter().rev() {
        let names: &[&str] = if base == "/" { OPENAPI_PATHS } else { &OPENAPI_PATHS[..3] };
        candidates.extend(names.iter().map(|n| format!("{base}{n}")));
    }
    let mut conn = match d.open(Want::Auto).await {
        Ok(c) => c,
        Err(e) => {
            p.tried("OpenAPI: the usual paths", e);
            return p;
        }
    };
    let mut misses = Vec::new();
    for c in &candidates {
        let req = d
            .request(Method::GET, c)
            .header("accept", "application/json, application/yaml, */*")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let a = match conn.send(req, DOCUMENT_LIMIT).await {
            Ok(a) => a,
            Err(e) => {
                // The connection may be closed after an answer: one more try on a new one.
                misses.push(format!("{c}: {e}"));
                match d.open(Want::Auto).await {
                    Ok(new) => conn = new,
                    Err(_) => break,
                }
                continue;
            }
        };
        if a.status.is_success()
            && let Some((version, title, paths)) = openapi_summary(&a.body)
        {
            p.found.push(Finding {
                protocol: "openapi",
                evidence: format!("GET {c} → {}: an OpenAPI {version} document", a.summary()),
                url: Some(format!("{}://{}{c}", d.scheme(), d.authority)),
                version: Some(version),
                operations: paths,
                title,
                services: Vec::new(),
            });
            return p;
        }
        misses.push(format!("{c} {}", a.status.as_u16()));
    }
    p.tried("OpenAPI: GET the usual paths", misses.join(", "));
    p
}

/// `(version, title, paths)` of an OpenAPI (or Swagger 2) document in JSON or YAML.
fn openapi_summary(body: &[u8]) -> Option<(String, Option<String>, Vec<String>)> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let version = v.get("openapi").or_else(|| v.get("swagger"))?.as_str()?.to_owned();
        let title = v.pointer("/info/title").and_then(|t| t.as_str()).map(str::to_owned);
        let paths = v
            .get("paths")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        return Some((version, title, paths));
    }
    // YAML, read by its top-level keys only: a document is shown, not used.
    let text = std::str::from_utf8(body).ok()?;
    let top = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_matches(['"', '\'']).to_owned()))
    };
    let version = top("openapi:").or_else(|| top("swagger:"))?;
    let title = text
        .lines()
        .find_map(|l| l.strip_prefix("  title:").map(|v| v.trim().trim_matches(['"', '\'']).to_owned()));
    let mut paths = Vec::new();
    let mut in_paths = false;
    for l in text.lines() {
        if !l.starts_with(' ') && !l.is_empty() {
            in_paths = l.trim_end() == "paths:";
        } else if in_paths
            && let Some(k) = l
                .strip_prefix("  ")
                .filter(|k| k.starts_with('/') || k.starts_with("\"/") || k.starts_with("'/"))
        {
            paths.push(k.trim_end().trim_end_matches(':').trim_matches(['"', '\'']).to_owned());
        }
    }
    Some((version, title, paths))
}

/// A WebSocket upgrade of the URL over HTTP/1.1: `101 Switching Protocols` with the right
/// `Sec-WebSocket-Accept` shows WebSocket; `426 Upgrade Required` shows one is expected.
async fn websocket(d: &Dialer, target: &str) -> Protocols {
    let mut p = Protocols::default();
    let key = "YnJpZGdlaGVhZC1wcm9iZQ==";
    let req = d
        .request(Method::GET, target)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", key)
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let probe = format!("WebSocket: GET {target} with Upgrade: websocket");
    match d.send(Want::Http1, req, ANSWER_LIMIT).await {
        Err(e) => p.tried(probe, e),
        Ok(a) if a.status == http::StatusCode::SWITCHING_PROTOCOLS => {
            let accept = a.header("sec-websocket-accept").unwrap_or("");
            let right = accept == websocket_accept(key);
            p.found.push(Finding {
                protocol: "websocket",
                evidence: format!(
                    "{probe} → {}, Sec-WebSocket-Accept {}",
                    a.summary(),
                    if right { "right" } else { "WRONG" }
                ),
                ..Finding::default()
            });
        }
        Ok(a) if a.status == http::StatusCode::UPGRADE_REQUIRED => {
            p.found.push(Finding {
                protocol: "websocket",
                evidence: format!("{probe} → {}: an upgrade is required", a.summary()),
                ..Finding::default()
            });
        }
        Ok(a) => p.tried(probe, a.summary()),
    }
    p
}

/// RFC 6455 §4.2.2: base64(SHA-1(key ‖ the protocol's GUID)).
fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// With `--post`: `{}` as JSON to the URL. A `415` says the endpoint takes something else; its
/// `Accept` or content type says what.
async fn post_json(d: &Dialer, target: &str, p: &mut Protocols) {
    let req = d
        .request(Method::POST, target)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a valid request");
    let probe = format!("POST {target} with {{}} as JSON");
    match d.send(Want::Auto, req, ANSWER_LIMIT).await {
        Err(e) => p.tried(probe, e),
        Ok(a) => {
            let mut outcome = a.summary();
            if a.status == http::StatusCode::UNSUPPORTED_MEDIA_TYPE {
                outcome.push_str(": JSON is not taken here");
                if let Some(accept) = a.header("accept-post").or_else(|| a.header("accept")) {
                    outcome.push_str(&format!(" (it takes {accept})"));
                }
            }
            if soap_fault(&a.body).is_some() {
                outcome.push_str(": a SOAP fault");
            }
            p.tried(probe, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_listings_are_read_and_bad_bytes_are_not_a_panic() {
        // ServerReflectionResponse { list_services_response: { service: [{name: "a.B"}, {name: "c.D"}] } }
        let service = |n: &str| {
            let mut s = vec![0x0a, u8::try_from(n.len()).unwrap()];
            s.extend_from_slice(n.as_bytes());
            let mut f = vec![0x0a, u8::try_from(s.len()).unwrap()];
            f.extend(s);
            f
        };
        let mut list = service("a.B");
        list.extend(service("c.D"));
        let mut msg = vec![0x12, 0x00, 0x32, u8::try_from(list.len()).unwrap()];
        msg.extend(list);
        assert_eq!(listed_services(&frame(&msg)), ["a.B", "c.D"]);
        for cut in 0..msg.len() {
            let _ = listed_services(&frame(&msg[..cut]));
        }
        assert!(listed_services(&[0, 0, 0, 0, 9, 0xff, 0xff]).is_empty());
    }

    #[test]
    fn websocket_accept_matches_the_rfc_example() {
        assert_eq!(websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn faults_of_both_soap_versions_are_read() {
        let f11 = br#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>x</faultstring></soap:Fault></soap:Body></soap:Envelope>"#;
        let f12 = br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code></e:Fault></e:Body></e:Envelope>"#;
        assert_eq!(soap_fault(f11).as_deref(), Some("soap:Client"));
        assert_eq!(soap_fault(f12).as_deref(), Some("e:Sender"));
        assert_eq!(fault_version(f12), "1.2");
        assert!(soap_fault(b"<html/>").is_none());
    }

    #[test]
    fn openapi_documents_in_json_and_yaml() {
        let (v, t, p) =
            openapi_summary(br#"{"openapi":"3.1.0","info":{"title":"T"},"paths":{"/a":{}}}"#).unwrap();
        assert_eq!((v.as_str(), t.as_deref(), p), ("3.1.0", Some("T"), vec!["/a".to_owned()]));
        let yaml = b"openapi: 3.0.3\ninfo:\n  title: 'Orders'\npaths:\n  /orders:\n    get: {}\n  \"/orders/{id}\":\n    get: {}\ncomponents: {}\n";
        let (v, t, p) = openapi_summary(yaml).unwrap();
        assert_eq!((v.as_str(), t.as_deref()), ("3.0.3", Some("Orders")));
        assert_eq!(p, ["/orders", "/orders/{id}"]);
        assert!(openapi_summary(b"{\"x\":1}").is_none());
    }

    #[test]
    fn wsdl_summaries_name_services_operations_and_soap_versions() {
        let wsdl = br#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:s="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:s12="http://schemas.xmlsoap.org/wsdl/soap12/" name="x">
          <portType name="P"><operation name="GetA"/><operation name="PutB"/></portType>
          <binding name="B1" type="P"><s:binding transport="http://schemas.xmlsoap.org/soap/http"/><operation name="GetA"/></binding>
          <binding name="B2" type="P"><s12:binding transport="http://schemas.xmlsoap.org/soap/http"/></binding>
          <service name="Svc"><port name="p" binding="B1"><s:address location="http://x/"/></port></service>
        </definitions>"#;
        let w = wsdl_summary(wsdl).unwrap();
        assert_eq!(w.versions, ["1.1", "1.2"]);
        assert_eq!(w.services, ["Svc"]);
        assert_eq!(w.operations, ["GetA", "PutB"]);
        assert!(wsdl_summary(b"<definitions/>").is_none());
    }

    #[test]
    fn grpc_web_trailer_frames_give_the_status() {
        let mut body = frame(b"msg");
        let t = b"grpc-status: 12\r\ngrpc-message: nope\r\n";
        body.push(0x80);
        body.extend_from_slice(&u32::try_from(t.len()).unwrap().to_be_bytes());
        body.extend_from_slice(t);
        assert_eq!(web_trailer_status(&body).as_deref(), Some("12"));
        assert_eq!(web_trailer_status(&body[..7]), None);
    }
}
