//! JSON over HTTP to a request message, and a response message to JSON: proto3's canonical
//! JSON mapping (prost-reflect), fed from the body, the path variables and the query string as
//! the binding says.
//!
//! The request is assembled as one JSON value first (the body, then each path variable and
//! query parameter written at its field path, typed by the field) and deserialized once, so
//! every mistake is reported with the field path it sits at and the type the field expects,
//! before anything is sent upstream.

use bytes::Bytes;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions,
};
use serde_json::{Map, Value};

use crate::binding::{Binding, BodyRule, field_path, string_wkt};

/// How JSON is read and written (`grpc_transcode` options).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// Write fields that hold their default value (`0`, `""`, `false`, empty lists).
    pub emit_defaults: bool,
    /// Write the `.proto` field names (`drone_id`) instead of the lowerCamelCase JSON names.
    pub proto_names: bool,
    /// Ignore JSON fields and query parameters the message does not have, instead of a 400.
    pub ignore_unknown: bool,
}

/// Why a request could not become a message (400, before any upstream call).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("field `{path}`: {reason}")]
    Field { path: String, reason: String },
    #[error("{0}")]
    Message(String),
    #[error("query parameter `{param}`: {reason}")]
    Query { param: String, reason: String },
    #[error("path variable `{field}`: {reason}")]
    Var { field: String, reason: String },
    #[error("{binding} takes no request body")]
    BodyNotAllowed { binding: String },
}

impl JsonOptions {
    /// A transcoding route's options; the defaults without one.
    pub fn of(t: Option<&bridgehead_config::GrpcTranscode>) -> Self {
        JsonOptions {
            emit_defaults: t.is_some_and(|t| t.emit_defaults),
            proto_names: t.is_some_and(|t| t.proto_names),
            ignore_unknown: t.is_some_and(|t| t.ignore_unknown_fields),
        }
    }

    fn deserialize(&self) -> DeserializeOptions {
        DeserializeOptions::new().deny_unknown_fields(!self.ignore_unknown)
    }

    pub fn serialize(&self) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!self.emit_defaults)
            .use_proto_field_name(self.proto_names)
    }
}

/// The request message of `binding` from the raw (still percent-encoded) path variables, the
/// query string and the JSON body.
/// A body bound to a `google.api.HttpBody` (the whole message or the body field) is taken raw,
/// with `content_type`.
pub fn request_message(
    binding: &Binding,
    raw_vars: &[&str],
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    opts: &JsonOptions,
) -> Result<DynamicMessage, RequestError> {
    let input = binding.method.input();
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let raw = |m: &MessageDescriptor| {
        (m.full_name() == HTTP_BODY).then(|| {
            use base64::Engine as _;
            serde_json::json!({
                "contentType": content_type.unwrap_or_default(),
                "data": base64::engine::general_purpose::STANDARD.encode(body),
            })
        })
    };
    if blank
        && query.is_none_or(str::is_empty)
        && matches!(binding.body, BodyRule::None | BodyRule::All)
        && input.full_name() != HTTP_BODY
        && binding
            .vars
            .iter()
            // (A oneof member is left to the JSON path, which refuses two members set.)
            .all(|c| matches!(c.as_slice(), [f] if !f.is_list() && f.kind() == Kind::String && f.containing_oneof().is_none()))
    {
        // The common `GET /v1/things/{id}`: the message straight from the path's string
        // variables, without the JSON detour (`complete` would build the same message).
        let mut msg = DynamicMessage::new(input);
        for (i, (chain, raw)) in binding.vars.iter().zip(raw_vars).enumerate() {
            let text = binding.template.decode(i, raw).map_err(|e| RequestError::Var {
                field: binding.template.vars[i].field.clone(),
                reason: e.to_string(),
            })?;
            msg.set_field(&chain[0], prost_reflect::Value::String(text));
        }
        return Ok(msg);
    }
    let mut root = match &binding.body {
        BodyRule::None if !blank => return Err(RequestError::BodyNotAllowed { binding: binding.describe() }),
        BodyRule::None => Value::Object(Map::new()),
        BodyRule::All => match raw(&input) {
            Some(v) => v,
            None if blank => Value::Object(Map::new()),
            None => parse(body)?,
        },
        BodyRule::Field(f) => {
            let value = match f.kind() {
                Kind::Message(m) if raw(&m).is_some() => raw(&m),
                _ if blank => None,
                _ => Some(parse(body)?),
            };
            let mut m = Map::new();
            if let Some(v) = value {
                m.insert(f.name().to_owned(), v);
            }
            Value::Object(m)
        }
    };
    // From the body's own keys, before the path adds its variables (a query mask replaces it).
    fill_update_mask(&mut root, binding);
    complete(binding, root, raw_vars, query, opts)
}

/// The path variables and query parameters written into `root`, then the message.
fn complete(
    binding: &Binding,
    mut root: Value,
    raw_vars: &[&str],
    query: Option<&str>,
    opts: &JsonOptions,
) -> Result<DynamicMessage, RequestError> {
    let input = binding.method.input();
    // The fields the path set, by proto names (a template may spell them by JSON name).
    let mut set: Vec<String> = Vec::new();
    for (i, (chain, raw)) in binding.vars.iter().zip(raw_vars).enumerate() {
        let var = &binding.template.vars[i];
        let text = binding
            .template
            .decode(i, raw)
            .map_err(|e| RequestError::Var { field: var.field.clone(), reason: e.to_string() })?;
        let leaf = chain.last().expect("a field path has a field");
        insert(&mut root, chain, typed(leaf, &text), false)
            .map_err(|reason| RequestError::Var { field: var.field.clone(), reason })?;
        set.push(chain.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join("."));
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        query_into(&mut root, &input, binding, q, &set, opts)?;
    }
    from_json(&input, root, opts)
}

/// The messages of a client-streaming request, one at a time (the caller encodes each before
/// the next is built): JSON values one after another (NDJSON, or pretty-printed objects), each
/// completed with the path variables and query parameters. On a mistake, the message's
/// position (from 1) with the error.
pub fn stream_messages<'a>(
    binding: &'a Binding,
    raw_vars: &'a [&'a str],
    query: Option<&'a str>,
    body: &'a [u8],
    opts: &'a JsonOptions,
) -> impl Iterator<Item = Result<DynamicMessage, (usize, RequestError)>> + 'a {
    serde_json::Deserializer::from_slice(body).into_iter::<Value>().enumerate().map(move |(i, value)| {
        let value = value.map_err(|e| (i + 1, RequestError::NotJson(e.to_string())))?;
        complete(binding, value, raw_vars, query, opts).map_err(|e| (i + 1, e))
    })
}

/// A PATCH whose body is one field, on a method that takes a `google.protobuf.FieldMask` the
/// request left unset: the mask names the body's keys, so only the fields sent are changed
/// (what grpc-gateway does for `update_mask`).
fn fill_update_mask(root: &mut Value, binding: &Binding) {
    let BodyRule::Field(body) = &binding.body else { return };
    let Kind::Message(body_type) = body.kind() else { return };
    if binding.http_method != http::Method::PATCH {
        return;
    }
    let input = binding.method.input();
    let is_mask = |f: &FieldDescriptor| {
        !f.is_list() && matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask")
    };
    // `update_mask` by name, as the API guidelines call it; else the only FieldMask field.
    let masks: Vec<FieldDescriptor> = input.fields().filter(is_mask).collect();
    let mask = match input.get_field_by_name("update_mask").filter(is_mask) {
        Some(m) => m,
        None if masks.len() == 1 => masks[0].clone(),
        None => return,
    };
    let Value::Object(map) = root else { return };
    if map.contains_key(mask.name()) || map.contains_key(mask.json_name()) {
        return;
    }
    let Some(Value::Object(sent)) = map.get(body.name()) else { return };
    let mut paths = Vec::new();
    mask_paths(&body_type, sent, "", &mut paths);
    map.insert(mask.name().to_owned(), Value::String(paths.join(",")));
}

/// The FieldMask paths (its JSON form: lowerCamelCase segments joined by `.`) of the keys sent,
/// through nested messages (not maps, lists or well-known types, which are set whole).
fn mask_paths(m: &MessageDescriptor, sent: &Map<String, Value>, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in sent {
        let Some(f) = m.get_field_by_name(k).or_else(|| m.get_field_by_json_name(k)) else { continue };
        let path = format!("{prefix}{}", camel(f.name()));
        match (f.kind(), v) {
            (Kind::Message(inner), Value::Object(sub))
                if !f.is_list()
                    && !f.is_map()
                    && !inner.full_name().starts_with("google.protobuf.")
                    && !sub.is_empty() =>
            {
                mask_paths(&inner, sub, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// A proto field name in a FieldMask's JSON form (`flight_seconds` is `flightSeconds`).
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn parse(body: &[u8]) -> Result<Value, RequestError> {
    serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))
}

/// Deserializes `value` into `desc`, with the failing field's path.
pub fn from_json(
    desc: &MessageDescriptor,
    value: Value,
    opts: &JsonOptions,
) -> Result<DynamicMessage, RequestError> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    DynamicMessage::deserialize_with_options(desc.clone(), de, &opts.deserialize()).map_err(|e| {
        let path = track.path().to_string();
        let reason = e.to_string();
        if path == "." || path.is_empty() {
            RequestError::Message(format!("the body does not fit `{}`: {reason}", desc.full_name()))
        } else {
            RequestError::Field { path, reason }
        }
    })
}

/// Writes `value` at the field path `chain` (proto names), replacing the field under either of
/// its names; with `append`, a repeated field collects values.
fn insert(root: &mut Value, chain: &[FieldDescriptor], value: Value, append: bool) -> Result<(), String> {
    let mut at = root;
    for (i, f) in chain.iter().enumerate() {
        let Value::Object(map) = at else {
            return Err(format!(
                "`{}` is not an object in the body",
                chain[..i].iter().map(FieldDescriptor::name).collect::<Vec<_>>().join(".")
            ));
        };
        let last = i + 1 == chain.len();
        // The body may spell the field by its JSON name; the one written here wins.
        let existing = if f.json_name() != f.name() { map.remove(f.json_name()) } else { None };
        let slot = map.entry(f.name().to_owned()).or_insert_with(|| existing.unwrap_or(Value::Null));
        if last {
            if append {
                match slot {
                    Value::Array(a) => a.push(value),
                    _ => *slot = Value::Array(vec![value]),
                }
            } else {
                *slot = value;
            }
            return Ok(());
        }
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        at = slot;
    }
    Ok(())
}

/// A text value (path segment, query parameter) as the JSON the field's kind reads: booleans
/// and enum numbers unquoted, everything else as a string (proto3 JSON accepts numbers, 64-bit
/// integers, bytes and the string-form well-known types as strings).
fn typed(field: &FieldDescriptor, text: &str) -> Value {
    typed_kind(&field.kind(), text)
}

fn typed_kind(kind: &Kind, text: &str) -> Value {
    match kind {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        Kind::Enum(_) => match text.parse::<i32>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_owned()),
        },
        Kind::Message(m)
            if m.full_name().ends_with("Value") && m.full_name().starts_with("google.protobuf.") =>
        {
            match m.get_field_by_name("value") {
                Some(inner) => typed_kind(&inner.kind(), text),
                None => Value::String(text.to_owned()),
            }
        }
        _ => Value::String(text.to_owned()),
    }
}

/// Query parameters onto the fields neither the path nor the body set.
fn query_into(
    root: &mut Value,
    input: &MessageDescriptor,
    binding: &Binding,
    query: &str,
    from_path: &[String],
    opts: &JsonOptions,
) -> Result<(), RequestError> {
    let mut seen: Vec<String> = Vec::new();
    // `application/x-www-form-urlencoded` (`+` is a space).
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let key = key.into_owned();
        let err = |reason: String| RequestError::Query { param: key.clone(), reason };
        if matches!(binding.body, BodyRule::All) {
            if opts.ignore_unknown {
                continue;
            }
            return Err(err(format!("{} takes every field from the body", binding.describe())));
        }
        let chain = match field_path(input, &key, false) {
            Ok(c) => c,
            Err(_) if opts.ignore_unknown => continue,
            Err(reason) => {
                let reason = reason.strip_prefix(&format!("`{key}`: ")).map(str::to_owned).unwrap_or(reason);
                return Err(err(reason));
            }
        };
        let leaf = chain.last().expect("a field path has a field");
        let names: Vec<&str> = chain.iter().map(FieldDescriptor::name).collect();
        let dotted = names.join(".");
        if from_path.iter().any(|p| {
            p == &dotted || dotted.starts_with(&format!("{p}.")) || p.starts_with(&format!("{dotted}."))
        }) {
            return Err(err("the path sets this field".into()));
        }
        if let BodyRule::Field(f) = &binding.body
            && names[0] == f.name()
        {
            return Err(err(format!("the body sets `{}`", f.name())));
        }
        if leaf.is_map() || matches!(leaf.kind(), Kind::Message(m) if !string_wkt(&m)) {
            return Err(err(
                "a message or map field cannot be set from the query; send it in the body".into()
            ));
        }
        if !leaf.is_list() && seen.contains(&dotted) {
            return Err(err("given more than once, but the field is not repeated".into()));
        }
        insert(root, &chain, typed(leaf, &value), leaf.is_list()).map_err(err)?;
        seen.push(dotted);
    }
    Ok(())
}

/// The JSON of a response message: the message, or its `response_body` field.
pub fn response_json(
    msg: &DynamicMessage,
    response_body: Option<&FieldDescriptor>,
    opts: &JsonOptions,
) -> Bytes {
    let ser = opts.serialize();
    let write = |m: &DynamicMessage| {
        let mut out = Vec::with_capacity(128);
        let mut s = serde_json::Serializer::new(&mut out);
        // Serializing a decoded message into memory cannot fail.
        let _ = m.serialize_with_options(&mut s, &ser);
        out
    };
    let Some(field) = response_body else { return Bytes::from(write(msg)) };
    if let Some(inner) = msg.get_field(field).as_message().filter(|_| !field.is_list()) {
        return Bytes::from(write(inner));
    }
    // A scalar or repeated field: the message with defaults, then that member.
    let full = SerializeOptions::new().skip_default_fields(false).use_proto_field_name(opts.proto_names);
    let mut out = Vec::new();
    let _ = msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &full);
    let value: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    let key = if opts.proto_names { field.name() } else { field.json_name() };
    Bytes::from(value.get(key).cloned().unwrap_or(Value::Null).to_string())
}

/// The raw-body message type.
pub const HTTP_BODY: &str = "google.api.HttpBody";

/// A `google.api.HttpBody` message's content type and data, if `msg` is one.
pub fn http_body(msg: &DynamicMessage) -> Option<(String, Bytes)> {
    if msg.descriptor().full_name() != HTTP_BODY {
        return None;
    }
    let ct =
        msg.get_field_by_name("content_type").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let data = msg.get_field_by_name("data").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    Some((ct, data))
}

#[cfg(test)]
mod tests;
