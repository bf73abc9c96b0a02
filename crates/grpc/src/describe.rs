//! Symbols written as `.proto` source, for `bridgehead grpc describe` (as grpcurl does) and the
//! `.proto` files `grpc export` writes. prost-reflect has no printer; this covers what a
//! schema from reflection holds: messages (nested types, oneofs, maps, optional fields),
//! enums, services with streaming and their `google.api.http` rules.

use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Syntax,
};

use crate::schema::Schema;

/// A symbol's description: what it is, then its source.
pub fn describe(schema: &Schema, symbol: &str) -> Result<String, String> {
    let pool = &schema.pool;
    let symbol = symbol.trim_start_matches('.');
    if let Some(s) = pool.get_service_by_name(symbol) {
        return Ok(format!("{symbol} is a service:\n{}", service(&s, 0)));
    }
    if let Some(m) = pool.get_message_by_name(symbol) {
        return Ok(format!("{symbol} is a message:\n{}", message(&m, 0)));
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Ok(format!("{symbol} is an enum:\n{}", enumeration(&e, 0)));
    }
    if let Some((svc, name)) = symbol.rsplit_once('.').or_else(|| symbol.rsplit_once('/'))
        && let Some(s) = pool.get_service_by_name(svc)
        && let Some(m) = s.methods().find(|m| m.name() == name)
    {
        return Ok(format!("{svc}.{name} is a method:\n{}", method(&m, 0)));
    }
    Err(format!("symbol `{symbol}` is not in the schema"))
}

/// A whole file as `.proto` source.
pub fn file(f: &FileDescriptor) -> String {
    let mut out = String::new();
    let syntax = match f.syntax() {
        Syntax::Proto2 => "proto2",
        _ => "proto3",
    };
    let _ = writeln!(out, "syntax = \"{syntax}\";\n");
    if !f.package_name().is_empty() {
        let _ = writeln!(out, "package {};\n", f.package_name());
    }
    let deps: Vec<_> = f.dependencies().collect();
    for d in &deps {
        let _ = writeln!(out, "import \"{}\";", d.name());
    }
    if !deps.is_empty() {
        out.push('\n');
    }
    for m in f.messages() {
        out.push_str(&message(&m, 0));
        out.push('\n');
    }
    for e in f.enums() {
        out.push_str(&enumeration(&e, 0));
        out.push('\n');
    }
    for s in f.services() {
        out.push_str(&service(&s, 0));
        out.push('\n');
    }
    out
}

fn pad(depth: usize) -> String {
    "  ".repeat(depth)
}

fn service(s: &ServiceDescriptor, depth: usize) -> String {
    let mut out = format!("{}service {} {{\n", pad(depth), s.name());
    for m in s.methods() {
        out.push_str(&method(&m, depth + 1));
    }
    out.push_str(&pad(depth));
    out.push_str("}\n");
    out
}

fn method(m: &MethodDescriptor, depth: usize) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let head = format!(
        "{}rpc {} ( {}.{} ) returns ( {}.{} )",
        pad(depth),
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name()
    );
    match http_rule(m) {
        Some(rule) => format!(
            "{head} {{\n{}option (google.api.http) = {{ {rule} }};\n{}}}\n",
            pad(depth + 1),
            pad(depth)
        ),
        None => format!("{head};\n"),
    }
}

/// The method's `google.api.http` rule in text form (`get: "/v1/x" body: "*"`).
fn http_rule(m: &MethodDescriptor) -> Option<String> {
    let ext = m.parent_pool().get_extension_by_name("google.api.http")?;
    let opts = m.options();
    if !opts.has_extension(&ext) {
        return None;
    }
    let rule = opts.get_extension(&ext);
    let rule = rule.as_message()?;
    let mut parts = Vec::new();
    for f in ["get", "put", "post", "delete", "patch", "body", "response_body"] {
        if rule.has_field_by_name(f)
            && let Some(v) = rule.get_field_by_name(f)
            && let Some(s) = v.as_str()
        {
            parts.push(format!("{f}: {s:?}"));
        }
    }
    if let Some(more) = rule.get_field_by_name("additional_bindings")
        && let Some(list) = more.as_list()
    {
        for r in list.iter().filter_map(|v| v.as_message()) {
            let inner: Vec<String> = ["get", "put", "post", "delete", "patch", "body", "response_body"]
                .into_iter()
                .filter(|f| r.has_field_by_name(f))
                .filter_map(|f| Some(format!("{f}: {:?}", r.get_field_by_name(f)?.as_str()?)))
                .collect();
            parts.push(format!("additional_bindings {{ {} }}", inner.join(" ")));
        }
    }
    Some(parts.join(" "))
}

fn message(m: &MessageDescriptor, depth: usize) -> String {
    let mut out = format!("{}message {} {{\n", pad(depth), m.name());
    for nested in m.child_messages().filter(|n| !n.is_map_entry()) {
        out.push_str(&message(&nested, depth + 1));
    }
    for e in m.child_enums() {
        out.push_str(&enumeration(&e, depth + 1));
    }
    let mut done_oneofs = Vec::new();
    for f in m.fields() {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            Some(o) => {
                if done_oneofs.contains(&o.name().to_owned()) {
                    continue;
                }
                done_oneofs.push(o.name().to_owned());
                let _ = writeln!(out, "{}oneof {} {{", pad(depth + 1), o.name());
                for of in o.fields() {
                    let _ = writeln!(
                        out,
                        "{}{} {} = {};",
                        pad(depth + 2),
                        type_name(&of),
                        of.name(),
                        of.number()
                    );
                }
                let _ = writeln!(out, "{}}}", pad(depth + 1));
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}{}{} {} = {};",
                    pad(depth + 1),
                    label(&f),
                    type_name(&f),
                    f.name(),
                    f.number()
                );
            }
        }
    }
    out.push_str(&pad(depth));
    out.push_str("}\n");
    out
}

fn label(f: &FieldDescriptor) -> &'static str {
    if f.is_map() {
        return "";
    }
    match f.cardinality() {
        Cardinality::Repeated => "repeated ",
        Cardinality::Required => "required ",
        Cardinality::Optional
            if f.supports_presence() && f.containing_oneof().is_some_and(|o| o.is_synthetic()) =>
        {
            "optional "
        }
        Cardinality::Optional if f.parent_file().syntax() == Syntax::Proto2 => "optional ",
        Cardinality::Optional => "",
    }
}

fn type_name(f: &FieldDescriptor) -> String {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let k = entry.map_entry_key_field();
        let v = entry.map_entry_value_field();
        return format!("map<{}, {}>", kind_name(&k.kind()), kind_name(&v.kind()));
    }
    kind_name(&f.kind())
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
    }
}

fn enumeration(e: &EnumDescriptor, depth: usize) -> String {
    let mut out = format!("{}enum {} {{\n", pad(depth), e.name());
    for v in e.values() {
        let _ = writeln!(out, "{}{} = {};", pad(depth + 1), v.name(), v.number());
    }
    out.push_str(&pad(depth));
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_print_as_proto_source() {
        let schema = Schema::from_descriptor_set(crate::demo::DESCRIPTORS).unwrap();
        let s = describe(&schema, "drone.v1.Telemetry").unwrap();
        assert!(s.starts_with("drone.v1.Telemetry is a service:\nservice Telemetry {\n"), "{s}");
        assert!(s.contains("  rpc StreamPositions ( .drone.v1.StreamPositionsRequest ) returns ( stream .drone.v1.Position ) {\n    option (google.api.http) = { get: \"/v1/drones/{drone_id}/positions\" };\n  }\n"), "{s}");
        assert!(
            s.contains("  rpc Chat ( stream .drone.v1.Position ) returns ( stream .drone.v1.Position );\n"),
            "{s}"
        );
        let m = describe(&schema, "drone.v1.CommandRequest").unwrap();
        assert!(m.contains("  oneof action {\n    string land_at = 2;\n    .google.protobuf.Duration hover_for = 3;\n  }\n"), "{m}");
        let m = describe(&schema, "drone.v1.Telemetry.GetStatus").unwrap();
        assert!(m.starts_with("drone.v1.Telemetry.GetStatus is a method:\nrpc GetStatus"), "{m}");
        assert!(describe(&schema, "drone.v1.Mode").unwrap().contains("  HOVER = 2;\n"));
        assert!(describe(&schema, "drone.v1.Nope").unwrap_err().contains("not in the schema"));
        let f = file(&schema.pool.get_file_by_name("demo/drone/v1/telemetry.proto").unwrap());
        assert!(
            f.starts_with(
                "syntax = \"proto3\";\n\npackage drone.v1;\n\nimport \"google/api/annotations.proto\";"
            ),
            "{f}"
        );
        // What is written compiles again, with its bindings.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("demo/drone/v1")).unwrap();
        std::fs::write(dir.path().join("demo/drone/v1/telemetry.proto"), &f).unwrap();
        let again =
            Schema::compile(&["demo/drone/v1/telemetry.proto".into()], &[dir.path().to_owned()]).unwrap();
        let b = crate::binding::Bindings::build(&again.service("drone.v1.Telemetry").unwrap()).unwrap();
        assert!(b.iter().any(|b| b.describe() == "GET /v1/drones/{drone_id}"));
    }
}
