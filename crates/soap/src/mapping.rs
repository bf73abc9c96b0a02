//! JSON ⇄ XML by the schema.
//!
//! **JSON to XML** (a request): an object's keys are the local names of the type's elements and
//! attributes; elements are written in the schema's order; a repeated element (`maxOccurs` > 1)
//! takes an array; `null` is `xsi:nil` for a nillable element; a choice takes exactly one of
//! its branches; simple content is `$value`, `xs:any` content `$any` (XML text). Anything else
//! is refused with the JSON pointer of the field and the type expected: a missing required
//! element, an unknown key, a value of the wrong type, too many or too few items.
//!
//! **XML to JSON** (an answer): the same shape back. Every element and attribute the type
//! declares is present (absent ones as `null`, or `[]` when repeated; an absent attribute with
//! a default takes it), so clients see a stable shape. What the schema does not declare is
//! passed on generically rather than dropped, and a value that does not read as its type stays
//! a string: an answer is passed on, not judged.

use std::collections::HashSet;
use std::sync::Arc;

use roxmltree::Node;
use serde_json::{Map, Value};

use crate::simple::{self, SimpleShape};
use crate::xml::{XChild, XNode};
use crate::xsd::{AttributeUse, Content, Element, Occurs, Particle, QName, Schemas, Type, TypeRef, XS, XSI};

/// A JSON value that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct MapError {
    /// RFC 6901 pointer into the request body (`/customer/name`, `/lines/Line/0/price`).
    pub pointer: String,
    pub message: String,
    /// The XSD type expected there, when one is.
    pub expected: Option<String>,
}

/// How deep types may nest, in a request or an answer (a recursive type with a deep value
/// ends here instead of the stack).
const MAX_DEPTH: usize = 64;

/// What a type is, resolved for mapping.
enum Shape {
    Simple(SimpleShape),
    Complex(ComplexShape),
    /// `xs:anyType` (or an unknown type): any JSON ⇄ generic XML.
    Any,
}

struct ComplexShape {
    /// The content particles, a base's first.
    particles: Vec<Particle>,
    attributes: Vec<crate::xsd::Attribute>,
    text: Option<SimpleShape>,
    name: String,
}

/// Maps JSON and XML for one set of schemas.
#[derive(Clone)]
pub struct Mapper {
    pub schemas: Arc<Schemas>,
}

/// `base` and one more RFC 6901 reference token.
pub(crate) fn pointer(base: &str, key: &str) -> String {
    format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn err(pointer: &str, message: impl Into<String>, expected: Option<String>) -> MapError {
    MapError {
        pointer: if pointer.is_empty() { "/".into() } else { pointer.to_owned() },
        message: message.into(),
        expected,
    }
}

impl Mapper {
    pub fn new(schemas: Arc<Schemas>) -> Mapper {
        Mapper { schemas }
    }

    fn shape(&self, ty: &TypeRef, depth: usize) -> Shape {
        if let Some(s) = simple::resolve(&self.schemas, ty) {
            return Shape::Simple(s);
        }
        let (t, name) = match ty {
            TypeRef::Named(q) if q.ns == XS => return Shape::Any,
            TypeRef::Named(q) => match self.schemas.named(q) {
                Some(t) => (t.clone(), q.name.clone()),
                None => return Shape::Any,
            },
            TypeRef::Inline(t) => (t.clone(), "(anonymous type)".to_owned()),
        };
        let Type::Complex(c) = &*t else { return Shape::Any };
        let mut shape = ComplexShape { particles: Vec::new(), attributes: Vec::new(), text: None, name };
        // The base's content and attributes first (an extension appends to its base).
        if let Some(base) = &c.extends
            && depth < MAX_DEPTH
            && let Shape::Complex(b) = self.shape(&TypeRef::Named(base.clone()), depth + 1)
        {
            shape.particles = b.particles;
            shape.attributes = b.attributes;
            shape.text = b.text;
        }
        match &c.content {
            Content::Empty => {}
            Content::Particle(p) => shape.particles.push(p.clone()),
            Content::Simple(t) => shape.text = simple::resolve(&self.schemas, t),
        }
        self.attributes(&c.attributes, &mut shape.attributes, 0);
        Shape::Complex(shape)
    }

    fn attributes(&self, uses: &[AttributeUse], out: &mut Vec<crate::xsd::Attribute>, depth: usize) {
        for u in uses {
            match u {
                AttributeUse::Attribute(a) => out.push(a.clone()),
                AttributeUse::Group(q) if depth < 8 => {
                    if let Some(g) = self.schemas.attribute_groups.get(q) {
                        self.attributes(g, out, depth + 1);
                    }
                }
                AttributeUse::Group(_) => {}
            }
        }
    }

    // ---- JSON to XML -------------------------------------------------------------------

    /// The element `e` for the JSON `v`.
    pub fn encode_element(&self, e: &Element, v: &Value, at: &str) -> Result<XNode, MapError> {
        self.element(e, v, at, 0)
    }

    /// The children of a wrapper element's type, for a JSON object of them (a wrapped
    /// operation's parameters).
    pub fn encode_children(&self, ty: &TypeRef, v: &Value, at: &str) -> Result<XNode, MapError> {
        let mut node = XNode::new(QName::new("", ""));
        self.content(ty, v, at, &mut node, 0)?;
        Ok(node)
    }

    fn element(&self, e: &Element, v: &Value, at: &str, depth: usize) -> Result<XNode, MapError> {
        if v.is_null() {
            if e.nillable {
                return Ok(XNode::nil(e.name.clone()));
            }
            return Err(err(at, "must not be null (the element is not nillable)", None));
        }
        let mut node = XNode::new(e.name.clone());
        self.content(&e.ty, v, at, &mut node, depth)?;
        Ok(node)
    }

    /// Fills `node` with the content of type `ty` for `v`.
    fn content(
        &self,
        ty: &TypeRef,
        v: &Value,
        at: &str,
        node: &mut XNode,
        depth: usize,
    ) -> Result<(), MapError> {
        if depth > MAX_DEPTH {
            return Err(err(at, format!("nested more than {MAX_DEPTH} levels deep"), None));
        }
        match self.shape(ty, depth) {
            Shape::Simple(s) => {
                let text = s.encode(v).map_err(|m| err(at, m, Some(s.describe())))?;
                node.children.push(XChild::Text(text));
            }
            Shape::Any => generic_content(v, node),
            Shape::Complex(c) => {
                let Value::Object(obj) = v else {
                    return Err(err(at, format!("expected an object ({})", c.name), Some(c.name.clone())));
                };
                // Unknown keys first: a misspelt field says more than the missing one it hides.
                let mut known: Vec<String> = c.attributes.iter().map(|a| a.name.name.clone()).collect();
                for p in &c.particles {
                    self.names(p, &mut known, 0);
                }
                let unknown = obj.keys().find(|k| {
                    let k = k.strip_prefix('@').unwrap_or(k);
                    !(known.iter().any(|n| n == k) || (k == "$value" && c.text.is_some()))
                });
                if let Some(unknown) = unknown {
                    let listed: Vec<&str> =
                        known.iter().map(String::as_str).filter(|n| *n != "$any").collect();
                    let expected = if listed.is_empty() { "none".into() } else { listed.join(", ") };
                    return Err(err(
                        &pointer(at, unknown),
                        format!("unknown field `{unknown}` of {} (its fields: {expected})", c.name),
                        None,
                    ));
                }
                let mut used: HashSet<&str> = HashSet::new();
                for a in &c.attributes {
                    let key = a.name.name.as_str();
                    let key =
                        if obj.contains_key(&format!("@{key}")) { format!("@{key}") } else { key.to_owned() };
                    match obj.get(&key) {
                        Some(Value::Null) | None => {
                            if a.required {
                                return Err(err(&pointer(at, &key), "the attribute is required", None));
                            }
                        }
                        Some(val) => {
                            let s = simple::resolve(&self.schemas, &a.ty).unwrap_or_else(string_shape);
                            let text =
                                s.encode(val).map_err(|m| err(&pointer(at, &key), m, Some(s.describe())))?;
                            node.attrs.push((a.name.clone(), text));
                        }
                    }
                    if let Some((k, _)) = obj.get_key_value(&key) {
                        used.insert(k.as_str());
                    }
                }
                if let Some(t) = &c.text {
                    let val = obj.get("$value").unwrap_or(&Value::Null);
                    if !val.is_null() {
                        let text =
                            t.encode(val).map_err(|m| err(&pointer(at, "$value"), m, Some(t.describe())))?;
                        node.children.push(XChild::Text(text));
                    }
                    used.insert("$value");
                }
                for p in &c.particles {
                    self.particle(p, obj, at, true, &mut used, node, depth)?;
                }
                // A key of a choice branch not taken, or given twice as `@name` and `name`.
                if let Some(unused) =
                    obj.keys().find(|k| !used.contains(k.as_str()) && !obj[k.as_str()].is_null())
                {
                    return Err(err(&pointer(at, unused), format!("`{unused}` cannot be given here"), None));
                }
            }
        }
        Ok(())
    }

    /// The element names a particle may write (for choices and for errors).
    fn names(&self, p: &Particle, out: &mut Vec<String>, depth: usize) {
        // Bounded in depth and in size: groups that refer to one another many times over
        // would otherwise multiply.
        if depth > 16 || out.len() > 4096 {
            return;
        }
        match p {
            Particle::Element(e) => out.push(e.name.name.clone()),
            Particle::ElementRef(q, _) => out.push(q.name.clone()),
            Particle::Sequence(items, _) | Particle::Choice(items, _) | Particle::All(items, _) => {
                for i in items {
                    self.names(i, out, depth + 1);
                }
            }
            Particle::Group(q, _) => {
                if let Some(g) = self.schemas.groups.get(q) {
                    self.names(g, out, depth + 1);
                }
            }
            Particle::Any(_) => out.push("$any".into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn particle<'v>(
        &self,
        p: &Particle,
        obj: &'v Map<String, Value>,
        at: &str,
        required: bool,
        used: &mut HashSet<&'v str>,
        node: &mut XNode,
        depth: usize,
    ) -> Result<(), MapError> {
        if depth > MAX_DEPTH {
            return Err(err(
                at,
                format!("nested more than {MAX_DEPTH} levels deep (elements and groups)"),
                None,
            ));
        }
        match p {
            Particle::Element(e) => self.field(e, e.occurs, obj, at, required, used, node, depth),
            Particle::ElementRef(q, o) => {
                let e = self.schemas.elements.get(q).ok_or_else(|| {
                    err(at, format!("the schema refers to an undeclared element {}", q.clark()), None)
                })?;
                self.field(e, *o, obj, at, required, used, node, depth)
            }
            Particle::Sequence(items, o) | Particle::All(items, o) => {
                for i in items {
                    self.particle(i, obj, at, required && o.min > 0, used, node, depth + 1)?;
                }
                Ok(())
            }
            Particle::Group(q, o) => {
                let g = self.schemas.groups.get(q).ok_or_else(|| {
                    err(at, format!("the schema refers to an undeclared group {}", q.clark()), None)
                })?;
                self.particle(g, obj, at, required && o.min > 0, used, node, depth + 1)
            }
            Particle::Choice(items, o) => {
                let branches: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        let mut n = Vec::new();
                        self.names(i, &mut n, 0);
                        n
                    })
                    .collect();
                let present: Vec<usize> = (0..items.len())
                    .filter(|&i| branches[i].iter().any(|n| obj.get(n).is_some_and(|v| !v.is_null())))
                    .collect();
                let all: Vec<String> = branches.iter().flatten().cloned().collect();
                match present.len() {
                    0 if required && o.min > 0 => {
                        Err(err(at, format!("one of {} is required", all.join(", ")), None))
                    }
                    0 => Ok(()),
                    1 => self.particle(&items[present[0]], obj, at, true, used, node, depth + 1),
                    _ if o.repeats() => {
                        for i in present {
                            self.particle(&items[i], obj, at, true, used, node, depth + 1)?;
                        }
                        Ok(())
                    }
                    _ => {
                        let given: Vec<&str> = present
                            .iter()
                            .flat_map(|&i| &branches[i])
                            .filter(|n| obj.contains_key(*n))
                            .map(String::as_str)
                            .collect();
                        Err(err(
                            at,
                            format!(
                                "only one of {} may be given, not {}",
                                all.join(", "),
                                given.join(" and ")
                            ),
                            None,
                        ))
                    }
                }
            }
            Particle::Any(o) => {
                let Some((k, v)) = obj.get_key_value("$any") else {
                    return if required && o.min > 0 {
                        Err(err(at, "`$any` (XML text for the xs:any content) is required", None))
                    } else {
                        Ok(())
                    };
                };
                used.insert(k.as_str());
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for (i, item) in items.iter().enumerate() {
                    let here = if v.is_array() {
                        pointer(&pointer(at, "$any"), &i.to_string())
                    } else {
                        pointer(at, "$any")
                    };
                    let Value::String(xml) = item else {
                        return Err(err(&here, "expected XML text (a string) for xs:any", None));
                    };
                    // Well-formed and self-contained (its prefixes declared in it).
                    roxmltree::Document::parse(xml)
                        .map_err(|e| err(&here, format!("not a well-formed XML element: {e}"), None))?;
                    let body = xml.trim_start();
                    let body = if body.starts_with("<?xml") {
                        body.split_once("?>").map_or(body, |(_, b)| b)
                    } else {
                        body
                    };
                    node.children.push(XChild::Raw(body.trim().to_owned()));
                }
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn field<'v>(
        &self,
        e: &Element,
        o: Occurs,
        obj: &'v Map<String, Value>,
        at: &str,
        required: bool,
        used: &mut HashSet<&'v str>,
        node: &mut XNode,
        depth: usize,
    ) -> Result<(), MapError> {
        let key = e.name.name.as_str();
        let here = pointer(at, key);
        let Some((k, v)) = obj.get_key_value(key) else {
            if required && o.min > 0 {
                let expected = self.expected(&e.ty);
                return Err(err(&here, format!("missing (required, {expected})"), Some(expected)));
            }
            return Ok(());
        };
        used.insert(k.as_str());
        if o.repeats() {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Null => Vec::new(),
                v => vec![v],
            };
            if required && (items.len() as u32) < o.min {
                return Err(err(&here, format!("{} items, at least {} needed", items.len(), o.min), None));
            }
            if o.max.is_some_and(|m| items.len() as u32 > m) {
                return Err(err(
                    &here,
                    format!("{} items, at most {} allowed", items.len(), o.max.unwrap_or(0)),
                    None,
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let at_i = if v.is_array() { pointer(&here, &i.to_string()) } else { here.clone() };
                let child = self.element(e, item, &at_i, depth + 1)?;
                node.children.push(XChild::Node(child));
            }
            return Ok(());
        }
        if v.is_array() && !matches!(self.shape(&e.ty, depth), Shape::Simple(ref s) if s.list.is_some()) {
            let expected = self.expected(&e.ty);
            return Err(err(
                &here,
                format!("expected one {expected}, not an array (the element does not repeat)"),
                Some(expected),
            ));
        }
        if v.is_null() && !e.nillable {
            if required && o.min > 0 {
                return Err(err(&here, "must not be null (required, not nillable)", None));
            }
            return Ok(());
        }
        let child = self.element(e, v, &here, depth + 1)?;
        node.children.push(XChild::Node(child));
        Ok(())
    }

    /// What a type expects, for an error.
    fn expected(&self, ty: &TypeRef) -> String {
        match self.shape(ty, 0) {
            Shape::Simple(s) => s.describe(),
            Shape::Complex(c) => format!("an object ({})", c.name),
            Shape::Any => "any value".into(),
        }
    }

    // ---- XML to JSON -------------------------------------------------------------------

    /// The JSON of element `node`, declared by `e`.
    pub fn decode_element(&self, e: &Element, node: Node) -> Value {
        self.decode_typed(&e.ty, node, 0)
    }

    /// The JSON of an element of type `ty`.
    pub fn decode_typed(&self, ty: &TypeRef, node: Node, depth: usize) -> Value {
        if node.attribute((XSI, "nil")).is_some_and(|v| v == "true" || v == "1") {
            return Value::Null;
        }
        if depth > MAX_DEPTH {
            return generic(node, depth);
        }
        // `xsi:type` names the type the element really has.
        let declared;
        let ty = match node.attribute((XSI, "type")).map(|t| {
            let (p, l) = t.split_once(':').map_or((None, t), |(p, l)| (Some(p), l));
            QName::new(node.lookup_namespace_uri(p).unwrap_or(""), l)
        }) {
            Some(q) if q.ns == XS || self.schemas.named(&q).is_some() => {
                declared = TypeRef::Named(q);
                &declared
            }
            _ => ty,
        };
        match self.shape(ty, depth) {
            Shape::Simple(s) => s.decode(&text_of(node)),
            Shape::Any => generic(node, depth),
            Shape::Complex(c) => {
                let mut obj = Map::new();
                for a in &c.attributes {
                    let ns = (!a.name.ns.is_empty()).then_some(a.name.ns.as_str());
                    let raw = match ns {
                        Some(ns) => node.attribute((ns, a.name.name.as_str())),
                        None => node.attribute(a.name.name.as_str()),
                    };
                    let s = simple::resolve(&self.schemas, &a.ty).unwrap_or_else(string_shape);
                    let v = raw.or(a.default.as_deref()).map_or(Value::Null, |t| s.decode(t));
                    obj.insert(a.name.name.clone(), v);
                }
                // Attributes the type does not declare, but for namespaces and xsi:.
                for a in node.attributes() {
                    if a.namespace() == Some(XSI) || obj.contains_key(a.name()) {
                        continue;
                    }
                    obj.insert(a.name().to_owned(), Value::String(a.value().to_owned()));
                }
                if let Some(t) = &c.text {
                    obj.insert("$value".into(), t.decode(&text_of(node)));
                }
                // The declared elements, flattened: (element, repeats).
                let mut fields: Vec<(Element, bool)> = Vec::new();
                let mut any = false;
                let mut budget = 10_000u32;
                for p in &c.particles {
                    self.flatten(p, false, &mut fields, &mut any, 0, &mut budget);
                }
                for (e, repeats) in &fields {
                    obj.entry(e.name.name.clone()).or_insert(if *repeats {
                        Value::Array(Vec::new())
                    } else {
                        Value::Null
                    });
                }
                for child in node.children().filter(Node::is_element) {
                    let (ns, local) = (child.tag_name().namespace().unwrap_or(""), child.tag_name().name());
                    let decl = fields
                        .iter()
                        .find(|(e, _)| e.name.ns == ns && e.name.name == local)
                        .or_else(|| fields.iter().find(|(e, _)| e.name.name == local));
                    match decl {
                        Some((e, repeats)) => {
                            let v = self.decode_typed(&e.ty, child, depth + 1);
                            put(&mut obj, &e.name.name, v, *repeats);
                        }
                        None if any => {
                            let raw = child.document().input_text()[child.range()].to_owned();
                            put(&mut obj, "$any", Value::String(raw), true);
                        }
                        None => put_generic(&mut obj, local, generic(child, depth + 1)),
                    }
                }
                Value::Object(obj)
            }
        }
    }

    fn flatten(
        &self,
        p: &Particle,
        repeats: bool,
        out: &mut Vec<(Element, bool)>,
        any: &mut bool,
        depth: usize,
        budget: &mut u32,
    ) {
        // Bounded in depth and in visits: groups that refer to one another many times over
        // would otherwise multiply.
        if depth > 32 || *budget == 0 {
            return;
        }
        *budget -= 1;
        match p {
            Particle::Element(e) => {
                if !out.iter().any(|(x, _)| x.name == e.name) {
                    out.push((e.clone(), repeats || e.occurs.repeats()));
                }
            }
            Particle::ElementRef(q, o) => {
                if let Some(e) = self.schemas.elements.get(q)
                    && !out.iter().any(|(x, _)| x.name == e.name)
                {
                    out.push((e.clone(), repeats || o.repeats()));
                }
            }
            Particle::Sequence(items, o) | Particle::Choice(items, o) | Particle::All(items, o) => {
                for i in items {
                    self.flatten(i, repeats || o.repeats(), out, any, depth + 1, budget);
                }
            }
            Particle::Group(q, o) => {
                if let Some(g) = self.schemas.groups.get(q) {
                    self.flatten(g, repeats || o.repeats(), out, any, depth + 1, budget);
                }
            }
            Particle::Any(_) => *any = true,
        }
    }
}

fn string_shape() -> SimpleShape {
    SimpleShape {
        builtin: simple::Builtin::String,
        facets: crate::xsd::Facets::default(),
        name: "xs:string".into(),
        list: None,
    }
}

/// All the text directly in an element (its text and CDATA children).
fn text_of(node: Node) -> String {
    node.children().filter(Node::is_text).filter_map(|t| t.text()).collect()
}

fn put(obj: &mut Map<String, Value>, key: &str, v: Value, repeats: bool) {
    if repeats {
        match obj.get_mut(key) {
            Some(Value::Array(a)) => a.push(v),
            _ => {
                obj.insert(key.to_owned(), Value::Array(vec![v]));
            }
        }
    } else {
        obj.insert(key.to_owned(), v);
    }
}

/// A key seen twice becomes an array.
fn put_generic(obj: &mut Map<String, Value>, key: &str, v: Value) {
    match obj.get_mut(key) {
        None => {
            obj.insert(key.to_owned(), v);
        }
        Some(Value::Array(a)) => a.push(v),
        Some(prev) => {
            let first = prev.take();
            *prev = Value::Array(vec![first, v]);
        }
    }
}

/// Any element as JSON, without a schema: text for a leaf, an object of its children (by
/// local name, repeated names as arrays) and attributes otherwise.
pub fn generic(node: Node, depth: usize) -> Value {
    if node.attribute((XSI, "nil")).is_some_and(|v| v == "true") {
        return Value::Null;
    }
    let elements: Vec<Node> = node.children().filter(Node::is_element).collect();
    let attrs: Vec<roxmltree::Attribute> = node.attributes().filter(|a| a.namespace() != Some(XSI)).collect();
    if elements.is_empty() && attrs.is_empty() {
        return Value::String(text_of(node));
    }
    let mut obj = Map::new();
    for a in attrs {
        obj.insert(a.name().to_owned(), Value::String(a.value().to_owned()));
    }
    if depth > MAX_DEPTH {
        return Value::Object(obj);
    }
    for c in elements {
        put_generic(&mut obj, c.tag_name().name(), generic(c, depth + 1));
    }
    let text = text_of(node);
    if !text.trim().is_empty() {
        obj.insert("$value".into(), Value::String(text));
    }
    Value::Object(obj)
}

/// Any JSON as content without a schema: objects as child elements (no namespace), arrays as
/// repeated elements, scalars as text.
fn generic_content(v: &Value, node: &mut XNode) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$value" {
                    if let Some(t) = scalar(v) {
                        node.children.push(XChild::Text(t));
                    }
                    continue;
                }
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for item in items {
                    let mut child = XNode::new(QName::new("", k));
                    if item.is_null() {
                        child = XNode::nil(QName::new("", k));
                    } else {
                        generic_content(item, &mut child);
                    }
                    node.children.push(XChild::Node(child));
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                let mut child = XNode::new(QName::new("", "item"));
                generic_content(item, &mut child);
                node.children.push(XChild::Node(child));
            }
        }
        v => {
            if let Some(t) = scalar(v) {
                node.children.push(XChild::Text(t));
            }
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
