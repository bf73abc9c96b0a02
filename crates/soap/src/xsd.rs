//! XML Schema, as much of it as a SOAP service's messages use: global elements and types,
//! sequences, choices and `all`, element and group references, `xs:any`, attributes and
//! attribute groups, complex content extended or restricted, simple content, and simple types
//! restricted by facets (enumerations, lengths, bounds, patterns), lists and unions.
//!
//! Read from roxmltree documents into owned declarations; names are namespace-resolved
//! ([`QName`]) when read, with `elementFormDefault`/`form` applied, so the mapping never looks
//! at a prefix. References (types, bases, `ref=`) stay names and are looked up when used, so
//! declarations may come in any order and from any document.

use std::collections::HashMap;
use std::sync::Arc;

use roxmltree::Node;

pub const XS: &str = "http://www.w3.org/2001/XMLSchema";
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A namespace-qualified name (`ns` empty: no namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QName {
    pub ns: String,
    pub name: String,
}

impl QName {
    pub fn new(ns: &str, name: &str) -> QName {
        QName { ns: ns.to_owned(), name: name.to_owned() }
    }

    /// `{ns}name`, or `name` without a namespace.
    pub fn clark(&self) -> String {
        if self.ns.is_empty() { self.name.clone() } else { format!("{{{}}}{}", self.ns, self.name) }
    }

    /// `xs:name` for a built-in type, else the local name.
    pub fn shown(&self) -> String {
        if self.ns == XS { format!("xs:{}", self.name) } else { self.name.clone() }
    }
}

/// How many times a particle may occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurs {
    pub min: u32,
    /// `None`: unbounded.
    pub max: Option<u32>,
}

impl Occurs {
    pub const ONE: Occurs = Occurs { min: 1, max: Some(1) };

    /// More than once: a JSON array.
    pub fn repeats(&self) -> bool {
        self.max != Some(1) && self.max != Some(0)
    }
}

/// An element declaration (global, or local to a type).
#[derive(Debug, Clone)]
pub struct Element {
    /// Qualified as the schema says: global elements and `qualified` local ones carry the
    /// target namespace, unqualified local ones none.
    pub name: QName,
    pub ty: TypeRef,
    pub occurs: Occurs,
    pub nillable: bool,
    pub default: Option<String>,
}

/// A type: by name, or declared in place.
#[derive(Debug, Clone)]
pub enum TypeRef {
    Named(QName),
    Inline(Arc<Type>),
}

#[derive(Debug, Clone)]
pub enum Type {
    Simple(Simple),
    Complex(Complex),
}

/// A simple type: a base (a built-in or another simple type) and facets; or a list or union.
#[derive(Debug, Clone, Default)]
pub struct Simple {
    pub base: Option<QName>,
    /// An inline base (`<xs:restriction><xs:simpleType>…`).
    pub inline_base: Option<Box<Simple>>,
    pub facets: Facets,
    /// `xs:list` of this item type.
    pub list: Option<TypeRef>,
    /// `xs:union`: read as a string.
    pub union: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Facets {
    pub enumeration: Vec<String>,
    pub pattern: Vec<String>,
    pub length: Option<u64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_inclusive: Option<String>,
    pub max_inclusive: Option<String>,
    pub min_exclusive: Option<String>,
    pub max_exclusive: Option<String>,
    pub total_digits: Option<u32>,
    pub fraction_digits: Option<u32>,
}

impl Facets {
    /// The facets of `self` over those of a base (a restriction narrows its base).
    pub fn over(&self, base: &Facets) -> Facets {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        Facets {
            enumeration: if self.enumeration.is_empty() {
                base.enumeration.clone()
            } else {
                self.enumeration.clone()
            },
            pattern: base.pattern.iter().chain(&self.pattern).cloned().collect(),
            length: self.length.or(base.length),
            min_length: self.min_length.or(base.min_length),
            max_length: self.max_length.or(base.max_length),
            min_inclusive: pick(&self.min_inclusive, &base.min_inclusive),
            max_inclusive: pick(&self.max_inclusive, &base.max_inclusive),
            min_exclusive: pick(&self.min_exclusive, &base.min_exclusive),
            max_exclusive: pick(&self.max_exclusive, &base.max_exclusive),
            total_digits: self.total_digits.or(base.total_digits),
            fraction_digits: self.fraction_digits.or(base.fraction_digits),
        }
    }
}

/// A complex type: its content and attributes, and the base it extends or restricts.
#[derive(Debug, Clone, Default)]
pub struct Complex {
    /// `complexContent/extension@base`: the base's content comes first.
    pub extends: Option<QName>,
    pub content: Content,
    pub attributes: Vec<AttributeUse>,
}

#[derive(Debug, Clone, Default)]
pub enum Content {
    #[default]
    Empty,
    Particle(Particle),
    /// Text of a simple type, with attributes (`simpleContent`).
    Simple(TypeRef),
}

/// The structure of a complex type's elements.
#[derive(Debug, Clone)]
pub enum Particle {
    Element(Element),
    /// `<xs:element ref="…">`, with its own occurrence.
    ElementRef(QName, Occurs),
    Sequence(Vec<Particle>, Occurs),
    Choice(Vec<Particle>, Occurs),
    All(Vec<Particle>, Occurs),
    /// `<xs:group ref="…">`.
    Group(QName, Occurs),
    /// `xs:any`: elements of other schemas, passed through as XML.
    Any(Occurs),
}

#[derive(Debug, Clone)]
pub enum AttributeUse {
    Attribute(Attribute),
    Group(QName),
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: QName,
    pub ty: TypeRef,
    pub required: bool,
    pub default: Option<String>,
}

/// Every declaration read, by name.
#[derive(Debug, Default, Clone)]
pub struct Schemas {
    pub elements: HashMap<QName, Element>,
    pub types: HashMap<QName, Arc<Type>>,
    pub groups: HashMap<QName, Particle>,
    pub attribute_groups: HashMap<QName, Vec<AttributeUse>>,
}

/// A schema's reading context.
#[derive(Debug, Clone)]
pub struct SchemaCtx {
    pub target_ns: String,
    pub elements_qualified: bool,
    pub attributes_qualified: bool,
    /// A chameleon include (no targetNamespace of its own): unprefixed names take the
    /// includer's namespace.
    pub chameleon: bool,
}

/// An error in a schema, with where it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Where another schema document is to be read from, as an `xs:schema` asks.
#[derive(Debug, Clone)]
pub struct Reference {
    pub location: String,
    /// An include: read in the includer's namespace when the included has none.
    pub include_into: Option<String>,
}

/// A QName-valued attribute resolved against the node's namespace declarations.
pub fn resolve_qname(node: Node, value: &str, ctx: &SchemaCtx) -> Result<QName, SchemaError> {
    let (prefix, local) = match value.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, value),
    };
    let ns = match prefix {
        Some(p) => node.lookup_namespace_uri(Some(p)).ok_or_else(|| {
            SchemaError(format!("`{value}`: the prefix `{p}` is not declared (line {})", line(node)))
        })?,
        None => node.lookup_namespace_uri(None).unwrap_or(""),
    };
    let ns = if ns.is_empty() && ctx.chameleon { ctx.target_ns.as_str() } else { ns };
    Ok(QName::new(ns, local))
}

pub fn line(node: Node) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

fn is_xs(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace() == Some(XS) && n.tag_name().name() == name
}

fn xs_children<'a, 'input>(n: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    n.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(XS))
}

fn occurs(n: Node) -> Result<Occurs, SchemaError> {
    let num = |a: &str, default: u32| -> Result<Option<u32>, SchemaError> {
        match n.attribute(a) {
            None => Ok(Some(default)),
            Some("unbounded") if a == "maxOccurs" => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SchemaError(format!("{a}=\"{v}\" is not a number (line {})", line(n)))),
        }
    };
    Ok(Occurs { min: num("minOccurs", 1)?.unwrap_or(1), max: num("maxOccurs", 1)? })
}

impl Schemas {
    /// Reads one `xs:schema` element into these declarations; returns the other documents it
    /// imports or includes by location.
    pub fn read(&mut self, schema: Node, chameleon_ns: Option<&str>) -> Result<Vec<Reference>, SchemaError> {
        let own = schema.attribute("targetNamespace");
        let ctx = SchemaCtx {
            target_ns: own.or(chameleon_ns).unwrap_or("").to_owned(),
            elements_qualified: schema.attribute("elementFormDefault") == Some("qualified"),
            attributes_qualified: schema.attribute("attributeFormDefault") == Some("qualified"),
            chameleon: own.is_none() && chameleon_ns.is_some(),
        };
        let mut refs = Vec::new();
        for n in xs_children(schema) {
            let name = || {
                n.attribute("name").map(|v| QName::new(&ctx.target_ns, v)).ok_or_else(|| {
                    SchemaError(format!(
                        "a global xs:{} without a name (line {})",
                        n.tag_name().name(),
                        line(n)
                    ))
                })
            };
            match n.tag_name().name() {
                "import" | "include" | "redefine" => {
                    if let Some(loc) = n.attribute("schemaLocation") {
                        let include_into = (n.tag_name().name() != "import").then(|| ctx.target_ns.clone());
                        refs.push(Reference { location: loc.to_owned(), include_into });
                    }
                }
                "element" => {
                    let mut e = element(n, &ctx, true)?;
                    e.occurs = Occurs::ONE;
                    self.elements.insert(name()?, e);
                }
                "complexType" => {
                    self.types.insert(name()?, Arc::new(Type::Complex(complex(n, &ctx)?)));
                }
                "simpleType" => {
                    self.types.insert(name()?, Arc::new(Type::Simple(simple(n, &ctx)?)));
                }
                "group" => {
                    let inner =
                        xs_children(n).find(|c| matches!(c.tag_name().name(), "sequence" | "choice" | "all"));
                    if let Some(p) = inner {
                        self.groups.insert(name()?, particle(p, &ctx)?);
                    }
                }
                "attributeGroup" => {
                    self.attribute_groups.insert(name()?, attributes(n, &ctx)?);
                }
                _ => {}
            }
        }
        Ok(refs)
    }

    /// A named type, or `None` for a built-in (`xs:…`) or an unknown name.
    pub fn named(&self, q: &QName) -> Option<&Arc<Type>> {
        self.types.get(q)
    }
}

fn element(n: Node, ctx: &SchemaCtx, global: bool) -> Result<Element, SchemaError> {
    let local = n
        .attribute("name")
        .ok_or_else(|| SchemaError(format!("an xs:element without a name or ref (line {})", line(n))))?;
    let qualified = global
        || match n.attribute("form") {
            Some(f) => f == "qualified",
            None => ctx.elements_qualified,
        };
    let ns = if qualified { ctx.target_ns.as_str() } else { "" };
    let ty = if let Some(t) = n.attribute("type") {
        TypeRef::Named(resolve_qname(n, t, ctx)?)
    } else if let Some(c) = xs_children(n).find(|c| is_xs(c, "complexType")) {
        TypeRef::Inline(Arc::new(Type::Complex(complex(c, ctx)?)))
    } else if let Some(s) = xs_children(n).find(|c| is_xs(c, "simpleType")) {
        TypeRef::Inline(Arc::new(Type::Simple(simple(s, ctx)?)))
    } else {
        // No type: xs:anyType.
        TypeRef::Named(QName::new(XS, "anyType"))
    };
    Ok(Element {
        name: QName::new(ns, local),
        ty,
        occurs: occurs(n)?,
        nillable: n.attribute("nillable") == Some("true"),
        default: n.attribute("default").or(n.attribute("fixed")).map(str::to_owned),
    })
}

fn particle(n: Node, ctx: &SchemaCtx) -> Result<Particle, SchemaError> {
    let o = occurs(n)?;
    let items = |n: Node| -> Result<Vec<Particle>, SchemaError> {
        xs_children(n)
            .filter(|c| {
                matches!(c.tag_name().name(), "element" | "sequence" | "choice" | "all" | "group" | "any")
            })
            .map(|c| particle(c, ctx))
            .collect()
    };
    Ok(match n.tag_name().name() {
        "element" => match n.attribute("ref") {
            Some(r) => Particle::ElementRef(resolve_qname(n, r, ctx)?, o),
            None => Particle::Element(element(n, ctx, false)?),
        },
        "sequence" => Particle::Sequence(items(n)?, o),
        "choice" => Particle::Choice(items(n)?, o),
        "all" => Particle::All(items(n)?, o),
        "group" => {
            let r = n
                .attribute("ref")
                .ok_or_else(|| SchemaError(format!("a local xs:group without ref (line {})", line(n))))?;
            Particle::Group(resolve_qname(n, r, ctx)?, o)
        }
        "any" => Particle::Any(o),
        other => return Err(SchemaError(format!("xs:{other} is not a particle (line {})", line(n)))),
    })
}

fn attributes(n: Node, ctx: &SchemaCtx) -> Result<Vec<AttributeUse>, SchemaError> {
    let mut out = Vec::new();
    for a in xs_children(n) {
        match a.tag_name().name() {
            "attribute" => {
                if a.attribute("use") == Some("prohibited") {
                    continue;
                }
                let (name, ty) = match (a.attribute("name"), a.attribute("ref")) {
                    (Some(local), _) => {
                        let qualified = match a.attribute("form") {
                            Some(f) => f == "qualified",
                            None => ctx.attributes_qualified,
                        };
                        let ty = match (a.attribute("type"), xs_children(a).find(|c| is_xs(c, "simpleType")))
                        {
                            (Some(t), _) => TypeRef::Named(resolve_qname(a, t, ctx)?),
                            (None, Some(s)) => TypeRef::Inline(Arc::new(Type::Simple(simple(s, ctx)?))),
                            (None, None) => TypeRef::Named(QName::new(XS, "string")),
                        };
                        (QName::new(if qualified { &ctx.target_ns } else { "" }, local), ty)
                    }
                    (None, Some(r)) => (resolve_qname(a, r, ctx)?, TypeRef::Named(QName::new(XS, "string"))),
                    (None, None) => {
                        return Err(SchemaError(format!(
                            "an xs:attribute without a name (line {})",
                            line(a)
                        )));
                    }
                };
                out.push(AttributeUse::Attribute(Attribute {
                    name,
                    ty,
                    required: a.attribute("use") == Some("required"),
                    default: a.attribute("default").or(a.attribute("fixed")).map(str::to_owned),
                }));
            }
            "attributeGroup" => {
                if let Some(r) = a.attribute("ref") {
                    out.push(AttributeUse::Group(resolve_qname(a, r, ctx)?));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn complex(n: Node, ctx: &SchemaCtx) -> Result<Complex, SchemaError> {
    let mut c = Complex::default();
    for child in xs_children(n) {
        match child.tag_name().name() {
            "sequence" | "choice" | "all" | "group" => c.content = Content::Particle(particle(child, ctx)?),
            "attribute" | "attributeGroup" => {}
            "complexContent" => {
                let Some(d) =
                    xs_children(child).find(|d| matches!(d.tag_name().name(), "extension" | "restriction"))
                else {
                    continue;
                };
                let base =
                    d.attribute("base").map(|b| resolve_qname(d, b, ctx)).transpose()?.ok_or_else(|| {
                        SchemaError(format!("xs:{} without a base (line {})", d.tag_name().name(), line(d)))
                    })?;
                if d.tag_name().name() == "extension" && base != QName::new(XS, "anyType") {
                    c.extends = Some(base);
                }
                if let Some(p) = xs_children(d)
                    .find(|p| matches!(p.tag_name().name(), "sequence" | "choice" | "all" | "group"))
                {
                    c.content = Content::Particle(particle(p, ctx)?);
                }
                c.attributes = attributes(d, ctx)?;
            }
            "simpleContent" => {
                let Some(d) =
                    xs_children(child).find(|d| matches!(d.tag_name().name(), "extension" | "restriction"))
                else {
                    continue;
                };
                let base = d
                    .attribute("base")
                    .map(|b| resolve_qname(d, b, ctx))
                    .transpose()?
                    .unwrap_or_else(|| QName::new(XS, "string"));
                let ty = if d.tag_name().name() == "restriction" {
                    let mut s = simple_restriction(d, ctx)?;
                    s.base = Some(base);
                    TypeRef::Inline(Arc::new(Type::Simple(s)))
                } else {
                    TypeRef::Named(base)
                };
                c.content = Content::Simple(ty);
                c.attributes = attributes(d, ctx)?;
            }
            _ => {}
        }
    }
    if c.attributes.is_empty() {
        c.attributes = attributes(n, ctx)?;
    }
    Ok(c)
}

fn simple_restriction(r: Node, ctx: &SchemaCtx) -> Result<Simple, SchemaError> {
    let mut s = Simple {
        base: r.attribute("base").map(|b| resolve_qname(r, b, ctx)).transpose()?,
        ..Simple::default()
    };
    if s.base.is_none()
        && let Some(inner) = xs_children(r).find(|c| is_xs(c, "simpleType"))
    {
        s.inline_base = Some(Box::new(simple(inner, ctx)?));
    }
    for f in xs_children(r) {
        let v = f.attribute("value").map(str::to_owned);
        let num = || v.as_deref().and_then(|v| v.trim().parse::<u64>().ok());
        let f_ = &mut s.facets;
        match f.tag_name().name() {
            "enumeration" => f_.enumeration.extend(v),
            "pattern" => f_.pattern.extend(v),
            "length" => f_.length = num(),
            "minLength" => f_.min_length = num(),
            "maxLength" => f_.max_length = num(),
            "minInclusive" => f_.min_inclusive = v,
            "maxInclusive" => f_.max_inclusive = v,
            "minExclusive" => f_.min_exclusive = v,
            "maxExclusive" => f_.max_exclusive = v,
            "totalDigits" => f_.total_digits = num().and_then(|n| u32::try_from(n).ok()),
            "fractionDigits" => f_.fraction_digits = num().and_then(|n| u32::try_from(n).ok()),
            _ => {}
        }
    }
    Ok(s)
}

fn simple(n: Node, ctx: &SchemaCtx) -> Result<Simple, SchemaError> {
    for c in xs_children(n) {
        match c.tag_name().name() {
            "restriction" => return simple_restriction(c, ctx),
            "list" => {
                let item = match (c.attribute("itemType"), xs_children(c).find(|s| is_xs(s, "simpleType"))) {
                    (Some(t), _) => TypeRef::Named(resolve_qname(c, t, ctx)?),
                    (None, Some(s)) => TypeRef::Inline(Arc::new(Type::Simple(simple(s, ctx)?))),
                    (None, None) => TypeRef::Named(QName::new(XS, "string")),
                };
                return Ok(Simple { list: Some(item), ..Simple::default() });
            }
            "union" => return Ok(Simple { union: true, ..Simple::default() }),
            _ => {}
        }
    }
    Ok(Simple { base: Some(QName::new(XS, "string")), ..Simple::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(xml: &str) -> Schemas {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let mut s = Schemas::default();
        s.read(doc.root_element(), None).unwrap();
        s
    }

    #[test]
    fn forms_refs_and_occurrences_are_resolved_when_read() {
        let s = read(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t" targetNamespace="urn:t">
                 <xs:element name="Order" type="t:Order"/>
                 <xs:complexType name="Order"><xs:sequence>
                   <xs:element name="id" type="xs:string"/>
                   <xs:element name="tags" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
                   <xs:element name="note" form="qualified" type="xs:string" nillable="true"/>
                   <xs:element ref="t:Order" minOccurs="0"/>
                 </xs:sequence><xs:attribute name="v" type="xs:int" use="required"/></xs:complexType>
               </xs:schema>"#,
        );
        let order = &s.elements[&QName::new("urn:t", "Order")];
        assert!(matches!(&order.ty, TypeRef::Named(q) if *q == QName::new("urn:t", "Order")));
        let Type::Complex(c) = &*s.types[&QName::new("urn:t", "Order")] else { panic!() };
        let Content::Particle(Particle::Sequence(items, _)) = &c.content else { panic!() };
        let Particle::Element(id) = &items[0] else { panic!() };
        assert_eq!(id.name, QName::new("", "id"), "unqualified by default");
        let Particle::Element(tags) = &items[1] else { panic!() };
        assert_eq!(tags.occurs, Occurs { min: 0, max: None });
        let Particle::Element(note) = &items[2] else { panic!() };
        assert_eq!(note.name, QName::new("urn:t", "note"));
        assert!(note.nillable);
        assert!(matches!(&items[3], Particle::ElementRef(q, o) if q.name == "Order" && o.min == 0));
        assert!(matches!(&c.attributes[0], AttributeUse::Attribute(a) if a.required && a.name.name == "v"));
    }

    #[test]
    fn undeclared_prefixes_and_bad_occurrences_are_errors_with_lines() {
        let doc = roxmltree::Document::parse(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">
                 <xs:element name="A" type="nope:B"/></xs:schema>"#,
        )
        .unwrap();
        let e = Schemas::default().read(doc.root_element(), None).unwrap_err();
        assert!(e.0.contains("prefix `nope` is not declared (line 2)"), "{e}");
        let doc = roxmltree::Document::parse(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:complexType name="T"><xs:sequence>
                 <xs:element name="a" maxOccurs="many"/></xs:sequence></xs:complexType></xs:schema>"#,
        )
        .unwrap();
        let e = Schemas::default().read(doc.root_element(), None).unwrap_err();
        assert!(e.0.contains("maxOccurs=\"many\""), "{e}");
    }

    #[test]
    fn chameleon_includes_take_the_includers_namespace() {
        let doc = roxmltree::Document::parse(
            r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
                 <xs:complexType name="Money"><xs:sequence><xs:element name="units" type="xs:long"/></xs:sequence></xs:complexType>
                 <xs:element name="Price" type="Money"/></xs:schema>"#,
        )
        .unwrap();
        let mut s = Schemas::default();
        s.read(doc.root_element(), Some("urn:shop")).unwrap();
        let price = &s.elements[&QName::new("urn:shop", "Price")];
        assert!(matches!(&price.ty, TypeRef::Named(q) if *q == QName::new("urn:shop", "Money")));
        assert!(s.types.contains_key(&QName::new("urn:shop", "Money")));
    }
}
