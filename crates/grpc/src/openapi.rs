//! An OpenAPI 3.1 document of a transcoding route: every binding as an operation, with its
//! path and query parameters, its JSON body, and JSON Schemas (2020-12, as OpenAPI 3.1 uses)
//! of the messages in the proto3 JSON mapping, so the dashboard team gets an API description
//! of the gRPC service they now call as JSON.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::binding::{Binding, BodyRule, string_wkt};
use crate::mapping::JsonOptions;
use crate::service::Loaded;

/// The document for `loaded`'s bindings, mounted under `prefix`.
pub fn document(name: &str, loaded: &Loaded, prefix: Option<&str>, opts: &JsonOptions) -> Value {
    let mut schemas = Schemas { opts: *opts, defs: BTreeMap::new() };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let prefix = prefix.unwrap_or("").trim_end_matches('/');
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    // OpenAPI forbids two paths that differ only in their parameters' names
    // (`/v1/drones/{drone_id}` and `/v1/drones/{drone.drone_id}`): the first binding of a shape
    // names its parameters, and later ones take those names (the gateway matches by position).
    let mut shapes: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for b in loaded.bindings.iter() {
        let (mut path, mut path_params) = openapi_path(b);
        let shape = shape_of(&path);
        match shapes.get(&shape) {
            Some((first, names)) if names.len() == path_params.len() => {
                path.clone_from(first);
                for (p, n) in path_params.iter_mut().zip(names) {
                    p.0.clone_from(n);
                }
            }
            _ => {
                shapes.insert(shape, (path.clone(), path_params.iter().map(|p| p.0.clone()).collect()));
            }
        }
        let mut op = operation(b, &path_params, &mut schemas);
        // Operation ids are unique: a method's further bindings are numbered.
        let n = ids.entry(b.method.full_name()).or_insert(0);
        *n += 1;
        if *n > 1 {
            op["operationId"] = json!(format!("{}_{n}", b.method.full_name()));
        }
        paths
            .entry(format!("{prefix}{path}"))
            .or_default()
            .insert(b.http_method.as_str().to_ascii_lowercase(), op);
    }
    let services: Vec<&str> =
        loaded.services.iter().map(prost_reflect::ServiceDescriptor::full_name).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{name} (gRPC {})", services.join(", ")),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON over HTTP transcoded by Bridgehead to the gRPC service's methods (google.api.http bindings, and POST /{package.Service}/{Method} for every method).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.defs,
            "responses": {
                "Problem": {
                    "description": "An error (RFC 9457): a gRPC status mapped to HTTP, or a request the gateway refused",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
                }
            }
        },
    })
    .as_object()
    .map(|o| {
        let mut o = o.clone();
        if let Some(s) = o.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(Value::as_object_mut) {
            s.insert("Problem".into(), problem_schema());
        }
        Value::Object(o)
    })
    .unwrap_or(Value::Null)
}

/// The mount point and JSON options the document of `service` describes: those of the
/// transcoding route named `route`, or of the first that serves the service (none: the
/// bindings' own paths, default options).
pub fn route_view<'c>(
    config: &'c bridgehead_config::Config,
    service: &str,
    route: Option<&str>,
) -> Result<(Option<&'c str>, JsonOptions), String> {
    let mut routes =
        config.routes.iter().filter(|r| r.grpc_transcode.as_ref().is_some_and(|t| t.service == service));
    let chosen =
        match route {
            Some(want) => Some(routes.find(|r| r.name == want).ok_or_else(|| {
                format!("no grpc_transcode route `{want}` serves gRPC service `{service}`")
            })?),
            None => routes.next(),
        };
    let prefix = chosen.and_then(|r| r.matcher.path_prefix.as_deref());
    Ok((prefix, JsonOptions::of(chosen.and_then(|r| r.grpc_transcode.as_ref()))))
}

/// The OpenAPI path of a binding (`{name=shelves/*}` becomes `{name}`; a bare `*` or `**` a
/// numbered parameter), and its path parameters: (name, field path).
fn openapi_path(b: &Binding) -> (String, Vec<(String, Vec<FieldDescriptor>)>) {
    let source = b.template.display();
    let mut out = String::new();
    let mut params = Vec::new();
    let mut anonymous = 0;
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        out.push_str(&star(&rest[..open], &mut anonymous, &mut params));
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        let inner = &rest[open + 1..close];
        let field = inner.split('=').next().unwrap_or(inner);
        out.push('{');
        out.push_str(field);
        out.push('}');
        if let Some(i) = b.template.vars.iter().position(|v| v.field == field) {
            params.push((field.to_owned(), b.vars[i].clone()));
        }
        rest = &rest[(close + 1).min(rest.len())..];
    }
    out.push_str(&star(rest, &mut anonymous, &mut params));
    (out, params)
}

/// A path with every `{parameter}` written `{}`.
fn shape_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// Literal parts with `*` and `**` segments named `{_1}`, `{_2}` …
fn star(part: &str, n: &mut usize, params: &mut Vec<(String, Vec<FieldDescriptor>)>) -> String {
    part.split('/')
        .map(|seg| {
            if seg == "*" || seg == "**" {
                *n += 1;
                params.push((format!("_{n}"), Vec::new()));
                format!("{{_{n}}}")
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn operation(b: &Binding, path_params: &[(String, Vec<FieldDescriptor>)], s: &mut Schemas) -> Value {
    let m = &b.method;
    let mut params: Vec<Value> = path_params
        .iter()
        .map(|(name, chain)| {
            let schema = chain.last().map_or_else(|| json!({"type": "string"}), |f| s.scalar(f));
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    let bound: Vec<String> = path_params
        .iter()
        .map(|(_, c)| c.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join("."))
        .collect();
    let input = m.input();
    if !matches!(b.body, BodyRule::All) && !m.is_client_streaming() {
        for (name, f) in query_fields(&input, "", 0) {
            if bound.iter().any(|p| p == &name) {
                continue;
            }
            if let BodyRule::Field(body) = &b.body
                && name.split('.').next() == Some(body.name())
            {
                continue;
            }
            let schema =
                if f.is_list() { json!({ "type": "array", "items": s.scalar(&f) }) } else { s.scalar(&f) };
            params.push(json!({ "name": name, "in": "query", "required": false, "schema": schema }));
        }
    }
    let mut op = json!({
        "operationId": m.full_name(),
        "summary": format!("{}{}", m.name(), if b.synthesized { " (gRPC path)" } else { "" }),
        "parameters": params,
        "responses": {
            "200": response(b, s),
            "default": { "$ref": "#/components/responses/Problem" }
        }
    });
    let body_schema = match &b.body {
        BodyRule::None => None,
        BodyRule::All => Some(s.message(&input)),
        BodyRule::Field(f) => Some(s.field(f)),
    };
    if let Some(schema) = body_schema {
        let content = if input.full_name() == crate::mapping::HTTP_BODY {
            json!({ "*/*": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } })
        } else if m.is_client_streaming() {
            json!({ "application/x-ndjson": { "schema": schema } })
        } else {
            json!({ "application/json": { "schema": schema } })
        };
        op["requestBody"] = json!({ "required": m.is_client_streaming(), "content": content });
    }
    op
}

fn response(b: &Binding, s: &mut Schemas) -> Value {
    let out = b.method.output();
    let schema = match &b.response_body {
        Some(f) => s.field(f),
        None => s.message(&out),
    };
    let raw = crate::transcode::is_raw(&b.method, b.response_body.as_ref());
    let content = if raw {
        json!({ "*/*": { "schema": { "type": "string" } } })
    } else if b.method.is_server_streaming() {
        json!({
            "application/x-ndjson": { "schema": schema },
            "text/event-stream": { "schema": { "type": "string" } }
        })
    } else {
        json!({ "application/json": { "schema": schema } })
    };
    let what = match (raw, b.method.is_server_streaming()) {
        (true, true) => "raw data, each message's in turn",
        (true, false) => "raw data",
        (false, true) => "one per line or event",
        (false, false) => "the response message",
    };
    json!({ "description": format!("{} ({what})", out.full_name()), "content": content })
}

/// The fields a query parameter can set: scalars, repeated scalars and string-form
/// well-known types, nested through singular messages (`a.b`), at most 3 levels deep.
fn query_fields(m: &MessageDescriptor, prefix: &str, depth: usize) -> Vec<(String, FieldDescriptor)> {
    let mut out = Vec::new();
    for f in m.fields() {
        let name = format!("{prefix}{}", f.name());
        match f.kind() {
            _ if f.is_map() => {}
            Kind::Message(inner) if string_wkt(&inner) => out.push((name, f)),
            Kind::Message(inner) if !f.is_list() && depth < 3 => {
                out.extend(query_fields(&inner, &format!("{name}."), depth + 1));
            }
            Kind::Message(_) => {}
            _ => out.push((name, f)),
        }
    }
    out
}

/// JSON Schemas of the messages met, as components.
struct Schemas {
    opts: JsonOptions,
    defs: BTreeMap<String, Value>,
}

impl Schemas {
    fn message(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(wkt) = well_known(m) {
            return wkt;
        }
        let name = m.full_name().to_owned();
        if !self.defs.contains_key(&name) {
            // Placed first, so a recursive message refers to itself.
            self.defs.insert(name.clone(), Value::Null);
            let mut props = Map::new();
            for f in m.fields() {
                let key = if self.opts.proto_names { f.name() } else { f.json_name() };
                props.insert(key.to_owned(), self.field(&f));
            }
            let mut def = json!({ "type": "object", "properties": props });
            let oneofs: Vec<Value> = m
                .oneofs()
                .filter(|o| !o.is_synthetic())
                .map(|o| {
                    let names: Vec<String> = o
                        .fields()
                        .map(|f| {
                            if self.opts.proto_names { f.name().to_owned() } else { f.json_name().to_owned() }
                        })
                        .collect();
                    json!({ "oneof": o.name(), "fields": names })
                })
                .collect();
            if !oneofs.is_empty() {
                def["x-oneofs"] = Value::Array(oneofs);
            }
            if !self.opts.ignore_unknown {
                def["additionalProperties"] = json!(false);
            }
            self.defs.insert(name.clone(), def);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn field(&mut self, f: &FieldDescriptor) -> Value {
        if f.is_map()
            && let Kind::Message(entry) = f.kind()
        {
            let v = entry.map_entry_value_field();
            return json!({ "type": "object", "additionalProperties": self.field(&v) });
        }
        let one = match f.kind() {
            Kind::Message(m) => self.message(&m),
            _ => self.scalar(f),
        };
        if f.is_list() { json!({ "type": "array", "items": one }) } else { one }
    }

    fn scalar(&mut self, f: &FieldDescriptor) -> Value {
        match f.kind() {
            Kind::Double | Kind::Float => json!({ "type": "number" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
            Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "format": "int32", "minimum": 0 }),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({ "type": "string", "format": "int64" }),
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Kind::Enum(e) => {
                json!({ "type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>() })
            }
            Kind::Message(m) => self.message(&m),
        }
    }
}

/// The JSON forms of the well-known types.
fn well_known(m: &MessageDescriptor) -> Option<Value> {
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" }),
        "google.protobuf.FieldMask" => json!({ "type": "string" }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        "google.protobuf.Any" => {
            json!({ "type": "object", "required": ["@type"], "properties": { "@type": { "type": "string" } } })
        }
        "google.protobuf.StringValue" => json!({ "type": ["string", "null"] }),
        "google.protobuf.BytesValue" => json!({ "type": ["string", "null"], "contentEncoding": "base64" }),
        "google.protobuf.BoolValue" => json!({ "type": ["boolean", "null"] }),
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => json!({ "type": ["number", "null"] }),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({ "type": ["integer", "null"] })
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({ "type": ["string", "null"], "format": "int64" })
        }
        _ => return None,
    })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "request_id": { "type": "string" },
            "grpc_code": { "type": "string" },
            "grpc_status": { "type": "integer" },
            "grpc_message": { "type": "string" },
            "details": { "type": "array", "items": { "type": "object" } },
            "field": { "type": ["string", "null"] },
            "closest": { "type": "array", "items": { "type": "string" } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use crate::service::{Loaded, Origin};

    #[test]
    fn every_binding_is_an_operation_with_its_parameters_and_schemas() {
        let schema = Schema::from_descriptor_set(crate::demo::DESCRIPTORS).unwrap();
        let loaded = Loaded::new(schema, Origin::DescriptorSet, &["drone.v1.Telemetry".into()]).unwrap();
        let doc = document("telemetry", &loaded, Some("/rest"), &JsonOptions::default());
        assert_eq!(doc["openapi"], "3.1.0");
        let get = &doc["paths"]["/rest/v1/drones/{drone_id}"]["get"];
        assert_eq!(get["operationId"], "drone.v1.Telemetry.GetStatus");
        assert_eq!(
            get["parameters"][0],
            json!({"name": "drone_id", "in": "path", "required": true, "schema": {"type": "string"}})
        );
        assert_eq!(
            get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/drone.v1.DroneStatus"
        );
        let list = &doc["paths"]["/rest/v1/drones"]["get"]["parameters"];
        let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["mode", "page_size", "tags"]);
        assert_eq!(list[0]["schema"]["enum"][2], "HOVER");
        assert_eq!(list[2]["schema"]["type"], "array");
        // The PATCH binding (`{drone.drone_id}`) shares the GET's path and its parameter name.
        assert!(doc["paths"]["/rest/v1/drones/{drone.drone_id}"].is_null());
        let patch = &doc["paths"]["/rest/v1/drones/{drone_id}"]["patch"];
        assert_eq!(
            patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/drone.v1.DroneStatus"
        );
        let q: Vec<&str> =
            patch["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(q, ["drone_id", "update_mask"]);
        let stream =
            &doc["paths"]["/rest/v1/drones/{drone_id}/positions"]["get"]["responses"]["200"]["content"];
        assert!(stream["application/x-ndjson"].is_object() && stream["text/event-stream"].is_object());
        let status = &doc["components"]["schemas"]["drone.v1.DroneStatus"];
        assert_eq!(status["properties"]["flightSeconds"], json!({"type": "string", "format": "int64"}));
        assert_eq!(status["properties"]["updatedAt"], json!({"type": "string", "format": "date-time"}));
        assert_eq!(status["properties"]["tags"]["items"]["type"], "string");
        assert!(doc["paths"]["/rest/drone.v1.Telemetry/Chat"]["post"]["requestBody"]["content"]["application/x-ndjson"].is_object());
        assert!(doc["paths"]["/rest/v1/drones/{drone_id}:command"]["post"].is_object());
        assert_eq!(
            doc["components"]["schemas"]["drone.v1.CommandRequest"]["x-oneofs"][0]["fields"],
            json!(["landAt", "hoverFor"])
        );
    }
}
