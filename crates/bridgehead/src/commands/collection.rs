//! `bridgehead collection export`: a Postman Collection v2.1 of a config's routes, for the
//! customer's developers and for a smoke test with Newman.
//!
//! Each route becomes a folder of requests, one per method it accepts, with its path
//! parameters as Postman variables and the auth its first usable authenticator wants:
//! - the local issuer (`jwt: { issuer: local }`): a bearer token that a collection-level
//!   pre-request script fetches with client credentials from `{{baseUrl}}/oauth2/token` and
//!   caches until it expires (`clientId`/`clientSecret` variables; the secret is never in the
//!   file: the config holds only its digest);
//! - API keys: the header (or query parameter) with `{{apiKey_NAME}}`;
//! - other JWT and introspection authenticators: a bearer `{{token_NAME}}`.
//!
//! gRPC transcoding and SOAP routes expand to one request per operation with an example body
//! made from the operation's JSON Schema. gRPC documents come from the running gateway's admin
//! listener (`GET /admin/grpc/{service}/openapi.json?route=NAME`), so a schema learnt by
//! reflection is covered too; SOAP ones are made from the WSDL, else taken from the route's
//! `GET {prefix}/openapi.json`. Without either, a route gets one request with an empty body
//! and a warning. A JWT authenticator that reads another header or a cookie gets its token
//! there.
//!
//! Every request carries tests: no server error (5xx), and any 4xx is `application/problem+json`
//! with a `title` and the same `status`. Routes that match gRPC services as such are left out
//! (Postman's HTTP requests cannot call them), and so are webhook receivers' signed requests
//! (the receiver is listed, unsigned: it shows the refusal).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use bridgehead_config::{Authenticator, Config, LoadedConfig};
use serde_json::{Map, Value, json};

#[derive(clap::Subcommand)]
pub enum CollectionCommand {
    /// Print a Postman Collection v2.1 of every route (run it with Newman or import it).
    ///
    /// Example: bridgehead collection export -c bridgehead.yaml --base-url https://api.example > collection.json
    Export {
        /// Config file.
        #[arg(short, long, default_value = "bridgehead.yaml")]
        config: PathBuf,
        /// The gateway's base URL (the `baseUrl` variable; default: from server.listen and
        /// server.tls).
        #[arg(long)]
        base_url: Option<String>,
        /// The admin listener, asked for gRPC transcoding schemas (default: http:// +
        /// admin.listen). Its token, when set, is read from BRIDGEHEAD_ADMIN_TOKEN.
        #[arg(long)]
        admin_url: Option<String>,
        /// Only requests that change nothing (GET, HEAD, OPTIONS): no writes, no published
        /// events, no webhook receivers. For a smoke test against a live system.
        #[arg(long)]
        safe_only: bool,
    },
}

pub fn run(cmd: CollectionCommand) -> anyhow::Result<ExitCode> {
    let CollectionCommand::Export { config, base_url, admin_url, safe_only } = cmd;
    let loaded = bridgehead_config::load(&config).map_err(|d| anyhow!("{d}"))?;
    let c = &loaded.config;
    let base_url = base_url.unwrap_or_else(|| {
        let scheme = if c.server.tls.is_some() { "https" } else { "http" };
        let mut addr = c.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            });
        }
        format!("{scheme}://{addr}")
    });
    let admin_url = admin_url.unwrap_or_else(|| format!("http://{}", c.admin.listen));
    let token = std::env::var("BRIDGEHEAD_ADMIN_TOKEN").ok();
    let rt = super::runtime(Some(1))?;
    let docs = rt.block_on(fetch_documents(&loaded, &base_url, &admin_url, token.as_deref()));
    let mut collection = export(&loaded, &base_url, &docs);
    if safe_only {
        keep_safe(&mut collection);
    }
    println!("{}", serde_json::to_string_pretty(&collection)?);
    Ok(ExitCode::SUCCESS)
}

/// The OpenAPI documents of transcoding and SOAP routes, by route name: gRPC ones from the
/// running gateway's admin listener (its schema may come from reflection), SOAP ones made here
/// from the WSDL (a file, or fetched from its URL).
async fn fetch_documents(
    loaded: &LoadedConfig,
    base_url: &str,
    admin_url: &str,
    admin_token: Option<&str>,
) -> std::collections::BTreeMap<String, Value> {
    let c = &loaded.config;
    let mut docs = std::collections::BTreeMap::new();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build();
    let Ok(client) = client else { return docs };
    for r in &c.routes {
        let prefix = r.matcher.path_prefix.as_deref().unwrap_or("").trim_end_matches('/');
        if let Some(s) = &r.soap {
            let Some(svc) = c.soap.services.get(&s.service) else { continue };
            let location = if svc.wsdl.starts_with("http://") || svc.wsdl.starts_with("https://") {
                svc.wsdl.clone()
            } else {
                loaded.resolve_path(std::path::Path::new(&svc.wsdl)).to_string_lossy().into_owned()
            };
            let doc = async {
                let timeout = std::time::Duration::from_secs(10);
                let (port, mapper) = super::soap::load_port(&location, svc.port.as_deref(), timeout).await?;
                anyhow::Ok(bridgehead_soap::openapi::document(&port, &mapper, prefix, &port.info.service))
            };
            // Else the document the route itself serves (its WSDL may have come from a URL
            // only the gateway reaches, or from its state store).
            let served = format!("{}{prefix}/openapi.json", base_url.trim_end_matches('/'));
            match doc.await {
                Ok(doc) => {
                    docs.insert(r.name.clone(), doc);
                }
                Err(e) => match get_json(&client, &served, None).await {
                    Ok(doc) => {
                        docs.insert(r.name.clone(), doc);
                    }
                    Err(e2) => eprintln!(
                        "warning: route {}: cannot read {location} ({e}) nor {served} ({e2}); its requests get empty bodies",
                        r.name
                    ),
                },
            }
            continue;
        }
        let Some(t) = &r.grpc_transcode else { continue };
        let url = format!(
            "{}/admin/grpc/{}/openapi.json?route={}",
            admin_url.trim_end_matches('/'),
            t.service,
            url::form_urlencoded::byte_serialize(r.name.as_bytes()).collect::<String>()
        );
        match get_json(&client, &url, admin_token).await {
            Ok(doc) => {
                docs.insert(r.name.clone(), doc);
            }
            Err(e) => eprintln!("warning: route {}: {url}: {e}; its requests get empty bodies", r.name),
        }
    }
    docs
}

/// GETs a JSON document.
async fn get_json(client: &reqwest::Client, url: &str, bearer: Option<&str>) -> Result<Value, String> {
    let mut req = client.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => resp
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| format!("not JSON: {e}"))),
        Ok(resp) => Err(format!("answered {}", resp.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps only the requests that change nothing, and drops the folders left empty and those
/// that only take deliveries (webhook receivers).
fn keep_safe(collection: &mut Value) {
    if let Some(folders) = collection["item"].as_array_mut() {
        for f in folders.iter_mut() {
            if let Some(items) = f["item"].as_array_mut() {
                items.retain(|i| {
                    ["GET", "HEAD", "OPTIONS"].contains(&i["request"]["method"].as_str().unwrap_or(""))
                });
            }
        }
        folders.retain(|f| f["item"].as_array().is_some_and(|i| !i.is_empty()));
    }
}

/// The tests every request runs.
const TESTS: &str = r#"pm.test("no server error", function () { pm.expect(pm.response.code).to.be.below(500); });
if (pm.response.code >= 400) {
  pm.test("a refusal is problem+json", function () {
    pm.expect(pm.response.headers.get("Content-Type") || "").to.include("application/problem+json");
    var p = pm.response.json();
    pm.expect(p.title).to.be.a("string");
    pm.expect(p.status).to.equal(pm.response.code);
  });
}"#;

/// The collection-level pre-request script: a client-credentials token from the local issuer,
/// cached in the `localToken` variable until a minute before it expires.
const LOCAL_TOKEN: &str = r#"var exp = Number(pm.collectionVariables.get("localTokenExpires") || 0);
var usesLocal = !!pm.request.auth && JSON.stringify(pm.request.auth.toJSON()).indexOf("{{localToken}}") >= 0;
if (usesLocal && !pm.variables.get("clientSecret")) {
  console.warn("set clientSecret (the local issuer's client secret) to call " + pm.info.requestName);
} else if (usesLocal && (!pm.collectionVariables.get("localToken") || Date.now() > exp)) {
  pm.sendRequest({
    url: pm.variables.get("baseUrl") + "/oauth2/token",
    method: "POST",
    header: { "Content-Type": "application/x-www-form-urlencoded" },
    body: { mode: "urlencoded", urlencoded: [
      { key: "grant_type", value: "client_credentials" },
      { key: "client_id", value: pm.variables.get("clientId") },
      { key: "client_secret", value: pm.variables.get("clientSecret") }
    ] }
  }, function (err, res) {
    if (err || res.code !== 200) { throw new Error("token request failed: " + (err || res.code + " " + res.text())); }
    var t = res.json();
    pm.collectionVariables.set("localToken", t.access_token);
    var ttl = Number(t.expires_in) > 120 ? Number(t.expires_in) : 120;
    pm.collectionVariables.set("localTokenExpires", String(Date.now() + (ttl - 60) * 1000));
  });
}"#;

fn script(listen: &str, code: &str) -> Value {
    json!({ "listen": listen, "script": { "type": "text/javascript", "exec": code.lines().collect::<Vec<_>>() } })
}

/// Postman's auth object for a route's authenticators (the first one that can be set up).
fn auth_for(c: &Config, names: &[String], vars: &mut Map<String, Value>) -> Option<Value> {
    for name in names {
        match c.authenticators.get(name)? {
            Authenticator::ApiKey(k) => {
                let var = format!("apiKey_{name}");
                vars.entry(var.clone()).or_insert(json!(""));
                let (key, place) = match (&k.header, &k.query) {
                    (Some(h), _) => (h.clone(), "header"),
                    (None, Some(q)) => (q.clone(), "query"),
                    (None, None) => ("X-API-Key".to_owned(), "header"),
                };
                return Some(apikey(&key, &format!("{{{{{var}}}}}"), place));
            }
            Authenticator::Jwt(j) => {
                // The local issuer's token comes from the collection's script; others are
                // variables.
                let var = if j.issuer.as_deref() == Some("local") && c.oauth_server.is_some() {
                    "localToken".to_owned()
                } else {
                    let var = format!("token_{name}");
                    vars.entry(var.clone()).or_insert(json!(""));
                    var
                };
                // Where the authenticator reads it: a header or a cookie instead of
                // `Authorization: Bearer`.
                return Some(match (&j.header, &j.cookie) {
                    (Some(h), _) => apikey(h, &format!("{{{{{var}}}}}"), "header"),
                    (None, Some(cookie)) => apikey("Cookie", &format!("{cookie}={{{{{var}}}}}"), "header"),
                    (None, None) => bearer(&var),
                });
            }
            Authenticator::Introspection(_) => {
                let var = format!("token_{name}");
                vars.entry(var.clone()).or_insert(json!(""));
                return Some(bearer(&var));
            }
            _ => {}
        }
    }
    None
}

fn bearer(var: &str) -> Value {
    json!({ "type": "bearer", "bearer": [{ "key": "token", "value": format!("{{{{{var}}}}}"), "type": "string" }] })
}

fn apikey(key: &str, value: &str, place: &str) -> Value {
    json!({ "type": "apikey", "apikey": [
        { "key": "key", "value": key, "type": "string" },
        { "key": "value", "value": value, "type": "string" },
        { "key": "in", "value": place, "type": "string" }
    ] })
}

/// A Postman URL for `path` (`{id}` segments become `:id` path variables).
fn url(path: &str) -> Value {
    // A template with a pattern (`{name=shelves/*}`, `{path=**}`) may span segments: its
    // pattern is written in, with `1` for each wildcard.
    let mut expanded = String::new();
    let mut rest = path;
    while let Some(a) = rest.find('{') {
        let Some(b) = rest[a..].find('}').map(|b| a + b) else { break };
        let inner = &rest[a + 1..b];
        expanded.push_str(&rest[..a]);
        match inner.split_once('=') {
            Some((_, pattern)) => expanded.push_str(&pattern.replace("**", "1").replace('*', "1")),
            None => expanded.push_str(&rest[a..=b]),
        }
        rest = &rest[b + 1..];
    }
    expanded.push_str(rest);
    let path = expanded.as_str();
    let mut variables = Vec::new();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !name.contains(['{', '}']) => {
                let name = name.trim_end_matches("=**").trim_end_matches('*');
                variables.push(json!({ "key": name, "value": "1" }));
                format!(":{name}")
            }
            // A template inside a segment (`{id}:cancel`): Postman variables are whole
            // segments, so the example value is written in.
            _ => {
                let mut out = String::new();
                let mut rest = s;
                while let (Some(a), Some(b)) = (rest.find('{'), rest.find('}')) {
                    if b < a {
                        break;
                    }
                    out.push_str(&rest[..a]);
                    out.push('1');
                    rest = &rest[b + 1..];
                }
                out.push_str(rest);
                out
            }
        })
        .collect();
    let raw = format!("{{{{baseUrl}}}}/{}", segments.join("/"));
    json!({ "raw": raw, "host": ["{{baseUrl}}"], "path": segments, "variable": variables })
}

fn request(
    name: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: Vec<Value>,
    auth: &Option<Value>,
) -> Value {
    let mut headers = headers;
    let mut req = json!({ "method": method, "url": url(path) });
    if let Some(b) = body {
        headers.push(json!({ "key": "Content-Type", "value": "application/json" }));
        req["body"] = json!({ "mode": "raw", "raw": serde_json::to_string_pretty(&b).unwrap_or_default(), "options": { "raw": { "language": "json" } } });
    }
    req["header"] = Value::Array(headers);
    if let Some(a) = auth {
        req["auth"] = a.clone();
    }
    json!({ "name": name, "request": req, "event": [script("test", TESTS)] })
}

/// Follows `#/a/b` references inside `doc`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    for _ in 0..32 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => v = doc.pointer(pointer).unwrap_or(&Value::Null),
            None => break,
        }
    }
    v
}

/// An example value for a JSON Schema; `None` where a schema refers back to itself (the field
/// is then left out) or nests too deep.
fn example(doc: &Value, schema: &Value, seen: &mut Vec<String>) -> Option<Value> {
    let reference = schema.get("$ref").and_then(Value::as_str).map(str::to_owned);
    if let Some(r) = &reference {
        if seen.contains(r) || seen.len() > 12 {
            return None;
        }
        seen.push(r.clone());
    }
    let out = example_of(doc, resolve(doc, schema), seen);
    if reference.is_some() {
        seen.pop();
    }
    out
}

fn example_of(doc: &Value, s: &Value, seen: &mut Vec<String>) -> Option<Value> {
    if let Some(v) = s.get("example").or_else(|| s.get("default")).or_else(|| s.get("const")) {
        return Some(v.clone());
    }
    if let Some(first) = s.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return Some(first.clone());
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        // Every member applies: their objects merged.
        let mut merged = Map::new();
        for member in all {
            match example(doc, member, seen)? {
                Value::Object(o) => merged.extend(o),
                other => return Some(other),
            }
        }
        return Some(Value::Object(merged));
    }
    for k in ["oneOf", "anyOf"] {
        if let Some(first) = s
            .get(k)
            .and_then(Value::as_array)
            .and_then(|e| e.iter().find(|x| resolve(doc, x).get("type") != Some(&json!("null"))))
        {
            return example(doc, first, seen);
        }
    }
    let ty = match s.get("type") {
        Some(Value::Array(types)) => types.iter().find(|t| *t != "null").cloned().unwrap_or(Value::Null),
        Some(t) => t.clone(),
        None if s.get("properties").is_some() => json!("object"),
        None => Value::Null,
    };
    Some(match ty.as_str() {
        Some("object") => {
            // Of each oneof group (`x-oneofs`, gRPC transcoding), only the first member.
            let mut skip: Vec<&str> = Vec::new();
            for group in s.get("x-oneofs").and_then(Value::as_array).into_iter().flatten() {
                let fields = group["fields"].as_array().into_iter().flatten().filter_map(Value::as_str);
                skip.extend(fields.skip(1));
            }
            let mut out = Map::new();
            for (k, v) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if skip.contains(&k.as_str()) {
                    continue;
                }
                // A protobuf Any: a type the gateway knows without the schema.
                if k == "@type" {
                    out.insert(k.clone(), json!("type.googleapis.com/google.protobuf.Empty"));
                    continue;
                }
                if let Some(v) = example(doc, v, seen) {
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Some("array") => match example(doc, s.get("items").unwrap_or(&Value::Null), seen) {
            Some(item) if !item.is_null() => json!([item]),
            _ => json!([]),
        },
        Some("integer" | "number") => number_example(s),
        Some("boolean") => json!(true),
        Some("string") => json!(string_example(s)),
        _ => Value::Null,
    })
}

/// 1 when the bounds allow it (a type's full range is no example), else the lowest value they
/// allow.
fn number_example(s: &Value) -> Value {
    let bound = |k: &str| s.get(k).and_then(Value::as_f64);
    let (min, xmin) = (bound("minimum"), bound("exclusiveMinimum"));
    let (max, xmax) = (bound("maximum"), bound("exclusiveMaximum"));
    let fits = |v: f64| {
        min.is_none_or(|m| v >= m)
            && xmin.is_none_or(|m| v > m)
            && max.is_none_or(|m| v <= m)
            && xmax.is_none_or(|m| v < m)
    };
    if fits(1.0) {
        return json!(1);
    }
    let low = match (min, xmin) {
        (Some(m), _) if fits(m) => m,
        (_, Some(m)) if fits(m.floor() + 1.0) => m.floor() + 1.0,
        _ => return json!(0),
    };
    if low.fract() == 0.0 && low.abs() < 9.0e15 { json!(low as i64) } else { json!(low) }
}

/// A string its schema accepts: by format, encoding and the patterns the gateway's documents
/// use, then fitted to the length bounds.
fn string_example(s: &Value) -> String {
    let pattern = s.get("pattern").and_then(Value::as_str).unwrap_or("");
    let mut v = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-01T00:00:00Z",
        Some("date") => "2026-01-01",
        Some("time") => "12:00:00",
        Some("duration") => "PT1S",
        Some("byte") => "AA==",
        Some("int64" | "uint64") => "1",
        _ if s.get("contentEncoding").and_then(Value::as_str) == Some("base64") => "AA==",
        // A protobuf Duration, hex binary, an integer as a string.
        _ if pattern.ends_with("s$") => "1s",
        _ if pattern.contains("[0-9a-fA-F]") => "0A",
        _ if pattern.contains("[0-9]+$") => "1",
        _ => "A-1",
    }
    .to_owned();
    let count = |k: &str| s.get(k).and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok());
    if let Some(min) = count("minLength").filter(|m| v.chars().count() < *m) {
        v = "A".repeat(min.min(4096));
    }
    if let Some(max) = count("maxLength").filter(|m| v.chars().count() > *m) {
        v = v.chars().take(max).collect();
    }
    v
}

/// One request per operation of an OpenAPI document.
fn from_openapi(doc: &Value, auth: &Option<Value>, headers: &[Value]) -> Vec<Value> {
    let mut items = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let body = op
                .pointer("/requestBody/content/application~1json/schema")
                .map(|s| example(doc, s, &mut Vec::new()).unwrap_or_else(|| json!({})));
            let name = op["operationId"].as_str().unwrap_or(path).to_owned();
            items.push(request(&name, &method.to_uppercase(), path, body, headers.to_vec(), auth));
        }
    }
    items
}

pub fn export(
    loaded: &LoadedConfig,
    base_url: &str,
    docs: &std::collections::BTreeMap<String, Value>,
) -> Value {
    let c = &loaded.config;
    let mut vars = Map::new();
    vars.insert("baseUrl".into(), json!(base_url.trim_end_matches('/')));
    let mut folders = Vec::new();
    for r in &c.routes {
        // gRPC as such (application/grpc) is not something Postman's HTTP requests can call.
        if r.matcher.grpc_service.is_some() {
            continue;
        }
        let auth = auth_for(c, &r.auth, &mut vars);
        // What the route matches besides the path: its host (a wildcard's label made up) and
        // headers with fixed values.
        let mut headers = Vec::new();
        if let Some(host) = &r.matcher.host {
            headers.push(json!({ "key": "Host", "value": host.replace('*', "example") }));
        }
        for (k, v) in &r.matcher.headers {
            headers.push(json!({ "key": k, "value": if v == "*" { "x" } else { v.as_str() } }));
        }
        let mut items = Vec::new();
        if let Some(doc) = docs.get(&r.name) {
            let mut headers = headers.clone();
            if r.idempotency.is_some() {
                headers.push(json!({ "key": "Idempotency-Key", "value": "{{$guid}}" }));
            }
            items = from_openapi(doc, &auth, &headers);
        } else {
            let methods: Vec<String> =
                match (&r.matcher.methods, r.soap.is_some() || r.grpc_transcode.is_some()) {
                    (Some(m), _) => m.clone(),
                    (None, true) => vec!["POST".into()],
                    (None, false) => vec!["GET".into()],
                };
            let path = r
                .matcher
                .path
                .clone()
                .or_else(|| r.matcher.path_prefix.clone())
                .unwrap_or_else(|| "/".into());
            for m in methods {
                let body = ["POST", "PUT", "PATCH"].contains(&m.as_str()).then(|| json!({}));
                let mut headers = headers.clone();
                if r.idempotency.is_some() && m != "GET" {
                    headers.push(json!({ "key": "Idempotency-Key", "value": "{{$guid}}" }));
                }
                items.push(request(&format!("{m} {path}"), &m, &path, body, headers, &auth));
            }
        }
        folders.push(json!({ "name": r.name, "item": items }));
    }
    if let Some(o) = &c.webhooks.outbound {
        let auth = auth_for(c, &o.auth, &mut vars);
        let event = c.webhooks.event_types.keys().next().cloned().unwrap_or_else(|| "order.created".into());
        let body = json!({ "type": event, "data": {} });
        folders.push(json!({ "name": "webhook intake", "item": [request("publish an event", "POST", &o.intake, Some(body), Vec::new(), &auth)] }));
    }
    for w in &c.webhooks.inbound {
        let item = request(
            &format!("{} (unsigned: refused)", w.name),
            "POST",
            &w.path,
            Some(json!({})),
            Vec::new(),
            &None,
        );
        folders.push(json!({ "name": format!("webhook receiver {}", w.name), "item": [item] }));
    }
    let mut events = Vec::new();
    if let Some(o) = &c.oauth_server {
        let client = o.clients.iter().find(|cl| cl.grants.iter().any(|g| g == "client_credentials"));
        vars.insert("clientId".into(), json!(client.map(|cl| cl.client_id.as_str()).unwrap_or("")));
        vars.insert("clientSecret".into(), json!(""));
        let local = c
            .authenticators
            .values()
            .any(|a| matches!(a, Authenticator::Jwt(j) if j.issuer.as_deref() == Some("local")));
        if local {
            vars.insert("localToken".into(), json!(""));
            events.push(script("prerequest", LOCAL_TOKEN));
        }
    }
    let file = loaded.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    json!({
        "info": {
            "name": format!("Bridgehead: {file}"),
            "description": "Generated by `bridgehead collection export`: one folder per route. Set the variables (API keys, tokens, the local issuer's client secret) in an environment, not in this file.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
        },
        "item": folders,
        "event": events,
        "variable": vars.into_iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(schema: Value) -> Value {
        example(&json!({}), &schema, &mut Vec::new()).unwrap()
    }

    #[test]
    fn examples_fit_their_schemas() {
        assert_eq!(ex(json!({"type": "string", "format": "int64"})), "1");
        assert_eq!(ex(json!({"type": ["string", "null"], "format": "int64"})), "1");
        assert_eq!(ex(json!({"type": "string", "contentEncoding": "base64"})), "AA==");
        assert_eq!(ex(json!({"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"})), "0A");
        assert_eq!(ex(json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})), "1s");
        assert_eq!(ex(json!({"type": "string", "format": "time"})), "12:00:00");
        assert_eq!(ex(json!({"type": "string", "format": "duration"})), "PT1S");
        assert_eq!(ex(json!({"type": "string", "minLength": 5})), "AAAAA");
        assert_eq!(ex(json!({"type": "string", "maxLength": 2})), "A-");
        assert_eq!(ex(json!({"type": "integer", "minimum": -2147483648, "maximum": 2147483647})), 1);
        assert_eq!(ex(json!({"type": "integer", "minimum": 10})), 10);
        assert_eq!(ex(json!({"type": "integer", "exclusiveMinimum": 1})), 2);
        assert_eq!(ex(json!({"type": "number", "exclusiveMaximum": 1, "minimum": 0})), 0);
        assert_eq!(ex(json!({"enum": ["B", "C"]})), "B");
        // One member of a oneof; an Any names a type the gateway knows.
        let got =
            ex(json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "x-oneofs": [{"oneof": "x", "fields": ["a", "b"]}]}));
        assert_eq!(got, json!({"a": "A-1"}));
        let any = ex(json!({"type": "object", "properties": {"@type": {"type": "string"}}}));
        assert_eq!(any["@type"], "type.googleapis.com/google.protobuf.Empty");
        // allOf members are merged.
        let got = ex(json!({"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}},
            {"type": "object", "properties": {"b": {"type": "boolean"}}}]}));
        assert_eq!(got, json!({"a": true, "b": true}));
    }

    #[test]
    fn self_referencing_schemas_stop_at_the_repetition() {
        let doc = json!({"components": {"schemas": {"Node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            "parent": {"$ref": "#/components/schemas/Node"}
        }}}}});
        let got = example(&doc, &json!({"$ref": "#/components/schemas/Node"}), &mut Vec::new()).unwrap();
        assert_eq!(got, json!({"name": "A-1", "children": []}));
    }

    #[test]
    fn auth_goes_where_each_authenticator_reads_it() {
        let yaml = "oauth_server:\n  issuer: https://gw.example\n  clients: [{ client_id: svc, secret_sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", grants: [client_credentials] }]\nauthenticators:\n  local: { jwt: { issuer: local, header: X-Token } }\n  idp: { jwt: { jwks_url: \"https://idp.example/jwks\", cookie: session } }\n  keys: { api_key: { query: key, from_state: true } }\n  intro: { introspection: { url: \"https://idp.example/introspect\", client_id: a, client_secret: b } }\n";
        let loaded = bridgehead_config::load_str(
            yaml,
            std::path::Path::new("t.yaml"),
            std::path::Path::new("."),
            &bridgehead_config::MapResolver::default(),
        )
        .unwrap();
        let c = &loaded.config;
        let mut vars = Map::new();
        let mut auth = |name: &str| auth_for(c, &[name.to_owned()], &mut vars).unwrap();
        assert_eq!(auth("local"), apikey("X-Token", "{{localToken}}", "header"));
        assert_eq!(auth("idp"), apikey("Cookie", "session={{token_idp}}", "header"));
        assert_eq!(auth("keys"), apikey("key", "{{apiKey_keys}}", "query"));
        assert_eq!(auth("intro"), bearer("token_intro"));
        assert!(
            vars.contains_key("token_idp")
                && vars.contains_key("apiKey_keys")
                && !vars.contains_key("localToken")
        );
    }

    #[test]
    fn path_templates_become_variables_or_values() {
        let u = url("/v1/drones/{drone_id}/track");
        assert_eq!(u["raw"], "{{baseUrl}}/v1/drones/:drone_id/track");
        assert_eq!(u["variable"][0]["key"], "drone_id");
        assert_eq!(url("/v1/{name=shelves/*}/books/{b}")["raw"], "{{baseUrl}}/v1/shelves/1/books/:b");
        assert_eq!(url("/files/{path=**}")["raw"], "{{baseUrl}}/files/1");
        assert_eq!(url("/v1/drones/{id}:command")["raw"], "{{baseUrl}}/v1/drones/1:command");
    }
}
