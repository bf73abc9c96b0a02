//! The JSON facade of a SOAP port as OpenAPI 3.1: `POST {prefix}/{Operation}` per operation,
//! request and answer bodies as JSON Schemas derived from the XSDs (named complex types as
//! components, so recursive types stay finite), and the problem answers a call can get.
//! `bridgehead soap describe` lists the same shapes as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::envelope::only_child;
use crate::mapping::Mapper;
use crate::simple::{self, Builtin, SimpleShape};
use crate::wsdl::{Body, Operation, Port};
use crate::xsd::{AttributeUse, Content, Element, Particle, QName, Type, TypeRef, XS};

/// Builds schemas, collecting the named complex types they refer to.
struct Schemas<'a> {
    mapper: &'a Mapper,
    components: BTreeMap<String, Value>,
    /// Names given to complex types (a local name taken by two namespaces gets a suffix).
    names: BTreeMap<QName, String>,
    /// How many anonymous types deep the schema being written is: an element that refers to
    /// itself through anonymous types would otherwise never end.
    depth: usize,
}

/// Anonymous types nested deeper than this are written as any value.
const MAX_DEPTH: usize = 32;

impl Schemas<'_> {
    fn name_of(&mut self, q: &QName) -> String {
        if let Some(n) = self.names.get(q) {
            return n.clone();
        }
        let mut n = q.name.clone();
        let mut i = 2;
        while self.names.values().any(|v| *v == n) {
            n = format!("{}{i}", q.name);
            i += 1;
        }
        self.names.insert(q.clone(), n.clone());
        n
    }

    fn of_type(&mut self, ty: &TypeRef) -> Value {
        if let Some(s) = simple::resolve(&self.mapper.schemas, ty) {
            return simple_schema(&s);
        }
        match ty {
            TypeRef::Named(q) if q.ns == XS => json!({}),
            TypeRef::Named(q) => {
                let Some(t) = self.mapper.schemas.named(q).cloned() else { return json!({}) };
                let name = self.name_of(q);
                if !self.components.contains_key(&name) {
                    // Placeholder first: a type that contains itself refers to its own name.
                    self.components.insert(name.clone(), json!({}));
                    let s = self.complex(&t);
                    self.components.insert(name.clone(), s);
                }
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
            TypeRef::Inline(t) => self.complex(t),
        }
    }

    fn complex(&mut self, t: &Type) -> Value {
        let Type::Complex(c) = t else { return json!({}) };
        if self.depth >= MAX_DEPTH {
            return json!({"description": "nested too deep to describe"});
        }
        self.depth += 1;
        let s = self.complex_inner(c);
        self.depth -= 1;
        s
    }

    fn complex_inner(&mut self, c: &crate::xsd::Complex) -> Value {
        let mut props = Map::new();
        let mut required: Vec<String> = Vec::new();
        let mut all_of = Vec::new();
        if let Some(base) = &c.extends {
            all_of.push(self.of_type(&TypeRef::Named(base.clone())));
        }
        let mut attrs = Vec::new();
        self.attributes(&c.attributes, &mut attrs, 0);
        for a in attrs {
            let s = simple::resolve(&self.mapper.schemas, &a.ty)
                .map_or_else(|| json!({"type": "string"}), |s| simple_schema(&s));
            props.insert(a.name.name.clone(), s);
            if a.required {
                required.push(a.name.name.clone());
            }
        }
        match &c.content {
            Content::Empty => {}
            Content::Simple(ty) => {
                props.insert("$value".into(), self.of_type(ty));
            }
            Content::Particle(p) => self.particle(p, true, &mut props, &mut required, 0),
        }
        let mut s = json!({"type": "object", "properties": props, "additionalProperties": false});
        if !required.is_empty() {
            s["required"] = json!(required);
        }
        if all_of.is_empty() {
            s
        } else {
            // An extension: the base's fields and these; `additionalProperties` would refuse
            // the base's, so it is left open here.
            s.as_object_mut().map(|m| m.remove("additionalProperties"));
            all_of.push(s);
            json!({"allOf": all_of})
        }
    }

    fn attributes(&self, uses: &[AttributeUse], out: &mut Vec<crate::xsd::Attribute>, depth: usize) {
        for u in uses {
            match u {
                AttributeUse::Attribute(a) => out.push(a.clone()),
                AttributeUse::Group(q) if depth < 8 => {
                    if let Some(g) = self.mapper.schemas.attribute_groups.get(q) {
                        self.attributes(&g.clone(), out, depth + 1);
                    }
                }
                AttributeUse::Group(_) => {}
            }
        }
    }

    fn particle(
        &mut self,
        p: &Particle,
        required: bool,
        props: &mut Map<String, Value>,
        req: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 16 {
            return;
        }
        match p {
            Particle::Element(e) => self.element(e, e.occurs, required, props, req),
            Particle::ElementRef(q, o) => {
                if let Some(e) = self.mapper.schemas.elements.get(q).cloned() {
                    self.element(&e, *o, required, props, req);
                }
            }
            Particle::Sequence(items, o) | Particle::All(items, o) => {
                for i in items {
                    self.particle(i, required && o.min > 0, props, req, depth + 1);
                }
            }
            // A choice's branches are all optional here; the gateway refuses two at once.
            Particle::Choice(items, _) => {
                for i in items {
                    self.particle(i, false, props, req, depth + 1);
                }
            }
            Particle::Group(q, o) => {
                if let Some(g) = self.mapper.schemas.groups.get(q).cloned() {
                    self.particle(&g, required && o.min > 0, props, req, depth + 1);
                }
            }
            Particle::Any(_) => {
                props.insert(
                    "$any".into(),
                    json!({"description": "XML text of elements from other schemas (xs:any)", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
                );
            }
        }
    }

    fn element(
        &mut self,
        e: &Element,
        o: crate::xsd::Occurs,
        required: bool,
        props: &mut Map<String, Value>,
        req: &mut Vec<String>,
    ) {
        let mut s = self.of_element_type(e);
        if e.nillable {
            s = json!({"anyOf": [s, {"type": "null"}]});
        }
        if o.repeats() {
            let mut a = json!({"type": "array", "items": s});
            if o.min > 0 {
                a["minItems"] = json!(o.min);
            }
            if let Some(m) = o.max {
                a["maxItems"] = json!(m);
            }
            s = a;
        }
        props.insert(e.name.name.clone(), s);
        if required && o.min > 0 {
            req.push(e.name.name.clone());
        }
    }

    /// A message body's schema, as the gateway reads and writes it.
    fn body(&mut self, body: &Body, output: bool) -> Value {
        match body {
            Body::Wrapped(e) => {
                if output && let Some(child) = only_child(self.mapper, &e.ty) {
                    // The answer is the one child's value.
                    let mut props = Map::new();
                    let mut req = Vec::new();
                    if let Some(t) = self.wrapper_type(&e.ty)
                        && let Type::Complex(c) = &*t
                        && let Content::Particle(p) = &c.content
                    {
                        self.particle(p, true, &mut props, &mut req, 0);
                    }
                    return props.remove(&child).unwrap_or(json!({}));
                }
                self.of_type(&e.ty)
            }
            Body::Bare(parts) => match &parts[..] {
                [] => json!({"type": "null"}),
                [(_, e)] => self.of_type(&e.ty),
                parts => {
                    let mut props = Map::new();
                    for (name, e) in parts {
                        props.insert(name.clone(), self.of_type(&e.ty));
                    }
                    let names: Vec<&String> = parts.iter().map(|(n, _)| n).collect();
                    json!({"type": "object", "properties": props, "required": names, "additionalProperties": false})
                }
            },
            Body::Rpc { parts, .. } => {
                if output && let [one] = &parts[..] {
                    return self.of_type(&one.ty);
                }
                let mut props = Map::new();
                for e in parts {
                    props.insert(e.name.name.clone(), self.of_type(&e.ty));
                }
                let names: Vec<&String> = parts.iter().map(|e| &e.name.name).collect();
                json!({"type": "object", "properties": props, "required": names, "additionalProperties": false})
            }
        }
    }

    /// An element's type. A global element's anonymous type is a component of its own,
    /// like a named type, so elements that refer to one another stay finite and small.
    fn of_element_type(&mut self, e: &Element) -> Value {
        let TypeRef::Inline(t) = &e.ty else { return self.of_type(&e.ty) };
        if !matches!(**t, Type::Complex(_)) {
            return self.of_type(&e.ty);
        }
        let global = !e.name.ns.is_empty() && self.mapper.schemas.elements.contains_key(&e.name);
        if !global {
            return self.complex(t);
        }
        // A key no type has: the element's own name, in a namespace of its own.
        let key = QName::new(&format!("element {}", e.name.ns), &e.name.name);
        let name = self.name_of(&key);
        if !self.components.contains_key(&name) {
            self.components.insert(name.clone(), json!({}));
            let s = self.complex(t);
            self.components.insert(name.clone(), s);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn wrapper_type(&self, ty: &TypeRef) -> Option<std::sync::Arc<Type>> {
        match ty {
            TypeRef::Inline(t) => Some(t.clone()),
            TypeRef::Named(q) => self.mapper.schemas.named(q).cloned(),
        }
    }
}

fn simple_schema(s: &SimpleShape) -> Value {
    if let Some(item) = &s.list {
        return json!({"type": "array", "items": simple_schema(item)});
    }
    let mut v = match &s.builtin {
        Builtin::Boolean => json!({"type": "boolean"}),
        Builtin::Integer { min, max } => {
            let mut v = json!({"type": ["integer", "string"], "pattern": "^[+-]?[0-9]+$"});
            if let Some(m) = min.and_then(|m| i64::try_from(m).ok()) {
                v["minimum"] = json!(m);
            }
            if let Some(m) = max.and_then(|m| i64::try_from(m).ok()) {
                v["maximum"] = json!(m);
            }
            v
        }
        Builtin::Decimal | Builtin::Float => json!({"type": ["number", "string"]}),
        Builtin::Date => json!({"type": "string", "format": "date"}),
        Builtin::DateTime => json!({"type": "string", "format": "date-time"}),
        Builtin::Time => json!({"type": "string", "format": "time"}),
        Builtin::Duration => json!({"type": "string", "format": "duration"}),
        Builtin::Base64 => json!({"type": "string", "contentEncoding": "base64"}),
        Builtin::Hex => json!({"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"}),
        Builtin::String => json!({"type": "string"}),
    };
    let f = &s.facets;
    if !f.enumeration.is_empty() {
        v["enum"] = json!(f.enumeration);
    }
    if matches!(s.builtin, Builtin::String) {
        if let Some(p) = f.pattern.first() {
            v["pattern"] = json!(format!("^(?:{p})$"));
        }
        if let Some(l) = f.length.or(f.min_length) {
            v["minLength"] = json!(l);
        }
        if let Some(l) = f.length.or(f.max_length) {
            v["maxLength"] = json!(l);
        }
    }
    let num = |b: &Option<String>| b.as_deref().and_then(|b| b.trim().parse::<f64>().ok());
    if let Some(m) = num(&f.min_inclusive) {
        v["minimum"] = json!(m);
    }
    if let Some(m) = num(&f.max_inclusive) {
        v["maximum"] = json!(m);
    }
    if let Some(m) = num(&f.min_exclusive) {
        v["exclusiveMinimum"] = json!(m);
    }
    if let Some(m) = num(&f.max_exclusive) {
        v["exclusiveMaximum"] = json!(m);
    }
    v["description"] = json!(s.name);
    v
}

/// The OpenAPI 3.1 document of `port`'s operations mounted at `prefix` (`/billing`).
pub fn document(port: &Port, mapper: &Mapper, prefix: &str, title: &str) -> Value {
    let mut s = Schemas { mapper, components: BTreeMap::new(), names: BTreeMap::new(), depth: 0 };
    let mut paths = Map::new();
    let prefix = prefix.trim_end_matches('/');
    for op in &port.operations {
        let input = s.body(&op.input, false);
        let output = s.body(&op.output, true);
        let mut post = json!({
            "operationId": op.name,
            "summary": format!("{} (SOAP {}, SOAPAction \"{}\")", op.name, op.version.as_str(), op.action),
            "requestBody": {"required": true, "content": {"application/json": {"schema": input}}},
            "responses": {
                "200": {"description": "The output message", "content": {"application/json": {"schema": output}}},
                "400": {"description": "The JSON does not fit the input message (the field's JSON pointer and the XSD type expected)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
                "422": {"description": "A SOAP fault from the service, the caller's (Client, Sender)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
                "502": {"description": "A SOAP fault from the service, its own (Server, Receiver), or an answer that could not be read", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            }
        });
        if let Some(d) = &op.documentation {
            post["description"] = json!(d);
        }
        paths.insert(format!("{prefix}/{}", op.name), json!({"post": post}));
    }
    s.components.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details; a SOAP fault adds `faultcode`, `faultstring` and `detail` (SOAP 1.1) or `code`, `subcodes`, `reason` and `detail` (SOAP 1.2)",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {}, "request_id": {"type": "string"}, "pointer": {"type": "string"}, "expected": {"type": "string"}
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "1",
            "description": format!("JSON facade of the SOAP service {} (port {}), served by Bridgehead", port.info.service, port.info.port),
        },
        "paths": paths,
        "components": {"schemas": s.components},
    })
}

/// A text description of the port, like `python -m zeep`: each operation with its input fields
/// and their types, and what it answers.
pub fn describe(port: &Port, mapper: &Mapper) -> String {
    let mut out = String::new();
    let i = &port.info;
    let _ = writeln!(
        out,
        "Service {} (port {}, SOAP {}), address {}",
        i.service,
        i.port,
        i.version.map_or("?", |v| v.as_str()),
        i.address
    );
    let mut s = Schemas { mapper, components: BTreeMap::new(), names: BTreeMap::new(), depth: 0 };
    for op in &port.operations {
        let _ = writeln!(out, "\n{}  (SOAPAction \"{}\")", op.name, op.action);
        if let Some(d) = &op.documentation {
            let _ = writeln!(out, "  {d}");
        }
        let _ = writeln!(out, "  input:  {}", shape(&s.body(&op.input, false), &s.components, 0));
        let _ = writeln!(out, "  output: {}", shape(&s.body(&op.output, true), &s.components, 0));
    }
    out
}

/// A schema in one line: `{invoice_id: string, lines?: {Line: [Line]}}`.
fn shape(v: &Value, components: &BTreeMap<String, Value>, depth: usize) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if depth >= 2 {
            return name.to_owned();
        }
        return match components.get(name) {
            Some(c) => format!("{name} {}", shape(c, components, depth + 1)),
            None => name.to_owned(),
        };
    }
    if let Some(a) = v.get("anyOf").and_then(Value::as_array) {
        return format!("{} | null", shape(&a[0], components, depth));
    }
    if let Some(a) = v.get("allOf").and_then(Value::as_array) {
        return a.iter().map(|x| shape(x, components, depth)).collect::<Vec<_>>().join(" + ");
    }
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        let req: Vec<&str> = v
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fields: Vec<String> = props
            .iter()
            .map(|(k, s)| {
                format!(
                    "{k}{}: {}",
                    if req.contains(&k.as_str()) { "" } else { "?" },
                    shape(s, components, depth + 1)
                )
            })
            .collect();
        return format!("{{{}}}", fields.join(", "));
    }
    if v.get("type") == Some(&json!("array")) {
        return format!("[{}]", shape(&v["items"], components, depth));
    }
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|");
    }
    if let Some(d) = v.get("description").and_then(Value::as_str) {
        return d.to_owned();
    }
    match v.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => "any".into(),
    }
}

/// What `describe` would say of one operation's input (for a 404 listing).
pub fn input_line(op: &Operation, mapper: &Mapper) -> String {
    let mut s = Schemas { mapper, components: BTreeMap::new(), names: BTreeMap::new(), depth: 0 };
    let v = s.body(&op.input, false);
    shape(&v, &s.components, 0)
}
