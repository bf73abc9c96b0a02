//! WSDL 1.1, read at run time: the documents (the WSDL, the WSDLs it imports, the schemas they
//! import and include, from files or URLs), then one port's operations resolved to what the
//! mapping needs: the SOAP version, the `SOAPAction`, and each message's body shape (document
//! literal wrapped or bare, or rpc/literal).
//!
//! rpc/encoded (SOAP encoding) is refused with the operation named: its arrays and references
//! need a different mapping, and services still on it are rare.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use roxmltree::Node;

use crate::xsd::{self, Content, Element, Occurs, Particle, QName, SchemaCtx, Schemas, Type, TypeRef};

pub const WSDL: &str = "http://schemas.xmlsoap.org/wsdl/";
pub const WSDL_SOAP11: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
pub const WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const WSDL20: &str = "http://www.w3.org/ns/wsdl";

/// Why a WSDL could not be read or used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WsdlError(pub String);

impl From<xsd::SchemaError> for WsdlError {
    fn from(e: xsd::SchemaError) -> Self {
        WsdlError(e.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SoapVersion {
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

impl SoapVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SoapVersion::V11 => "1.1",
            SoapVersion::V12 => "1.2",
        }
    }
}

/// A message part: typed by a global element or by a type.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub element: Option<QName>,
    pub ty: Option<QName>,
}

#[derive(Debug, Clone)]
struct PortOp {
    name: String,
    input: Option<QName>,
    output: Option<QName>,
    documentation: Option<String>,
}

#[derive(Debug, Clone)]
struct BindingOp {
    name: String,
    action: Option<String>,
    style: Option<String>,
    input: BodyUse,
    output: BodyUse,
}

#[derive(Debug, Clone, Default)]
struct BodyUse {
    encoded: bool,
    namespace: Option<String>,
    parts: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Binding {
    port_type: QName,
    version: SoapVersion,
    style: String,
    operations: Vec<BindingOp>,
}

/// A service's port.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortInfo {
    pub service: String,
    pub port: String,
    pub address: String,
    pub version: Option<SoapVersion>,
    #[serde(skip)]
    binding: QName,
}

/// Every document read, merged.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub target_ns: String,
    pub schemas: Schemas,
    messages: HashMap<QName, Vec<Part>>,
    port_types: HashMap<QName, Vec<PortOp>>,
    bindings: HashMap<QName, Binding>,
    pub ports: Vec<PortInfo>,
    /// The documents as read, `(location, text)`, the WSDL first: kept as the last good copy.
    pub documents: Vec<(String, String)>,
}

/// How a message travels in the SOAP body.
#[derive(Debug, Clone)]
pub enum Body {
    /// document/literal wrapped: one part, an element of a sequence; JSON holds its children.
    Wrapped(Element),
    /// document/literal bare: each part an element of the body; JSON keyed by part name.
    Bare(Vec<(String, Element)>),
    /// rpc/literal: a wrapper `{namespace}Operation[Response]` of unqualified part accessors.
    Rpc { wrapper: QName, parts: Vec<Element> },
}

/// One operation, resolved.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub action: String,
    pub version: SoapVersion,
    pub input: Body,
    pub output: Body,
    pub documentation: Option<String>,
}

/// One port's operations, ready to call.
#[derive(Debug, Clone)]
pub struct Port {
    pub info: PortInfo,
    pub operations: Vec<Arc<Operation>>,
    pub schemas: Arc<Schemas>,
}

impl Port {
    pub fn operation(&self, name: &str) -> Option<&Arc<Operation>> {
        self.operations.iter().find(|o| o.name == name)
    }
}

/// A document to read: a WSDL, or a schema (included into a namespace, for an include).
enum Pending {
    Wsdl(String),
    Schema(String, Option<String>),
}

/// `relative` against `base` (a URL or a file path).
pub fn join(base: &str, relative: &str) -> String {
    if relative.contains("://") {
        return relative.to_owned();
    }
    if let Ok(b) = url::Url::parse(base)
        && b.scheme() != "file"
        && base.contains("://")
    {
        return b.join(relative).map_or_else(|_| relative.to_owned(), |u| u.to_string());
    }
    if relative.starts_with('/') {
        return relative.to_owned();
    }
    let dir = std::path::Path::new(base).parent().unwrap_or(std::path::Path::new(""));
    dir.join(relative).to_string_lossy().into_owned()
}

/// How many documents one WSDL may pull in, so a loop of imports or a hostile server cannot
/// make the reading endless.
const MAX_DOCUMENTS: usize = 64;

impl Definitions {
    /// Reads the WSDL at `location` and everything it imports, each document's text from
    /// `fetch` (a file read, an HTTP GET, or the state store's copy).
    pub async fn load<F, Fut>(location: &str, mut fetch: F) -> Result<Definitions, WsdlError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        let mut defs = Definitions::default();
        let mut queue = vec![Pending::Wsdl(location.to_owned())];
        let mut seen: HashSet<(String, Option<String>)> = HashSet::new();
        while let Some(p) = queue.pop() {
            let (loc, into) = match &p {
                Pending::Wsdl(l) => (l.clone(), None),
                Pending::Schema(l, i) => (l.clone(), i.clone()),
            };
            if !seen.insert((loc.clone(), into.clone())) {
                continue;
            }
            if seen.len() > MAX_DOCUMENTS {
                return Err(WsdlError(format!("more than {MAX_DOCUMENTS} documents are imported")));
            }
            let text = fetch(loc.clone()).await.map_err(|e| WsdlError(format!("{loc}: {e}")))?;
            let more = match p {
                Pending::Wsdl(_) => defs.read_wsdl(&loc, &text, defs.documents.is_empty())?,
                Pending::Schema(_, into) => defs.read_schema_doc(&loc, &text, into.as_deref())?,
            };
            defs.documents.push((loc, text));
            // Read in order: the last pushed is read next, so push in reverse.
            queue.extend(more.into_iter().rev());
        }
        if defs.ports.is_empty() {
            return Err(WsdlError(format!("{location} declares no service port with a SOAP binding")));
        }
        Ok(defs)
    }

    /// Reads a WSDL already in memory, with no imports by location (for tests and the CLI).
    pub fn parse(text: &str) -> Result<Definitions, WsdlError> {
        let mut defs = Definitions::default();
        let more = defs.read_wsdl("(inline)", text, true)?;
        if !more.is_empty() {
            return Err(WsdlError("the WSDL imports other documents: load it from its location".into()));
        }
        defs.documents.push(("(inline)".into(), text.to_owned()));
        Ok(defs)
    }

    fn read_schema_doc(
        &mut self,
        loc: &str,
        text: &str,
        into: Option<&str>,
    ) -> Result<Vec<Pending>, WsdlError> {
        let doc = parse_xml(loc, text)?;
        let root = doc.root_element();
        if !(root.tag_name().namespace() == Some(xsd::XS) && root.tag_name().name() == "schema") {
            return Err(WsdlError(format!(
                "{loc}: not an XML Schema (the root is <{}>)",
                root.tag_name().name()
            )));
        }
        let refs = self.schemas.read(root, into).map_err(|e| WsdlError(format!("{loc}: {e}")))?;
        Ok(refs.into_iter().map(|r| Pending::Schema(join(loc, &r.location), r.include_into)).collect())
    }

    fn read_wsdl(&mut self, loc: &str, text: &str, first: bool) -> Result<Vec<Pending>, WsdlError> {
        let doc = parse_xml(loc, text)?;
        let root = doc.root_element();
        match (root.tag_name().namespace(), root.tag_name().name()) {
            (Some(WSDL), "definitions") => {}
            (Some(xsd::XS), "schema") if !first => return self.read_schema_doc(loc, text, None),
            (Some(WSDL20), "description") => {
                return Err(WsdlError(format!(
                    "{loc}: WSDL 2.0 is not supported: give the service's WSDL 1.1"
                )));
            }
            (_, name) => {
                return Err(WsdlError(format!("{loc}: not a WSDL 1.1 document (the root is <{name}>)")));
            }
        }
        let tns = root.attribute("targetNamespace").unwrap_or("").to_owned();
        if first {
            self.target_ns = tns.clone();
        }
        let ctx = SchemaCtx {
            target_ns: tns.clone(),
            elements_qualified: false,
            attributes_qualified: false,
            chameleon: false,
        };
        let q =
            |n: Node, v: &str| xsd::resolve_qname(n, v, &ctx).map_err(|e| WsdlError(format!("{loc}: {e}")));
        let mut more = Vec::new();
        for n in root.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(WSDL)) {
            let name = n.attribute("name").unwrap_or("");
            match n.tag_name().name() {
                "import" => {
                    // A WSDL or a schema: which, its root says when it is read.
                    if let Some(l) = n.attribute("location") {
                        more.push(Pending::Wsdl(join(loc, l)));
                    }
                }
                "types" => {
                    for s in
                        n.children().filter(|c| c.is_element() && c.tag_name().namespace() == Some(xsd::XS))
                    {
                        let refs =
                            self.schemas.read(s, None).map_err(|e| WsdlError(format!("{loc}: {e}")))?;
                        more.extend(
                            refs.into_iter().map(|r| Pending::Schema(join(loc, &r.location), r.include_into)),
                        );
                    }
                }
                "message" => {
                    let parts = n
                        .children()
                        .filter(|c| c.has_tag_name((WSDL, "part")))
                        .map(|p| {
                            Ok(Part {
                                name: p.attribute("name").unwrap_or("").to_owned(),
                                element: p.attribute("element").map(|v| q(p, v)).transpose()?,
                                ty: p.attribute("type").map(|v| q(p, v)).transpose()?,
                            })
                        })
                        .collect::<Result<Vec<_>, WsdlError>>()?;
                    self.messages.insert(QName::new(&tns, name), parts);
                }
                "portType" => {
                    let ops = n
                        .children()
                        .filter(|c| c.has_tag_name((WSDL, "operation")))
                        .map(|o| {
                            let msg = |which: &str| -> Result<Option<QName>, WsdlError> {
                                o.children()
                                    .find(|c| c.has_tag_name((WSDL, which)))
                                    .and_then(|c| c.attribute("message").map(|m| q(c, m)))
                                    .transpose()
                            };
                            Ok(PortOp {
                                name: o.attribute("name").unwrap_or("").to_owned(),
                                input: msg("input")?,
                                output: msg("output")?,
                                documentation: o
                                    .children()
                                    .find(|c| c.has_tag_name((WSDL, "documentation")))
                                    .and_then(|d| d.text())
                                    .map(|t| t.trim().to_owned())
                                    .filter(|t| !t.is_empty()),
                            })
                        })
                        .collect::<Result<Vec<_>, WsdlError>>()?;
                    self.port_types.insert(QName::new(&tns, name), ops);
                }
                "binding" => {
                    let soap = n.children().find(|c| {
                        c.tag_name().name() == "binding"
                            && matches!(c.tag_name().namespace(), Some(WSDL_SOAP11 | WSDL_SOAP12))
                    });
                    let Some(soap) = soap else { continue };
                    let version = if soap.tag_name().namespace() == Some(WSDL_SOAP12) {
                        SoapVersion::V12
                    } else {
                        SoapVersion::V11
                    };
                    let sns = soap.tag_name().namespace().unwrap_or(WSDL_SOAP11);
                    let ops = n
                        .children()
                        .filter(|c| c.has_tag_name((WSDL, "operation")))
                        .map(|o| {
                            let so = o.children().find(|c| c.has_tag_name((sns, "operation")));
                            let body = |which: &str| {
                                let b = o
                                    .children()
                                    .find(|c| c.has_tag_name((WSDL, which)))
                                    .and_then(|c| c.children().find(|b| b.has_tag_name((sns, "body"))));
                                b.map(|b| BodyUse {
                                    encoded: b.attribute("use") == Some("encoded"),
                                    namespace: b.attribute("namespace").map(str::to_owned),
                                    parts: b
                                        .attribute("parts")
                                        .map(|p| p.split_whitespace().map(str::to_owned).collect()),
                                })
                                .unwrap_or_default()
                            };
                            BindingOp {
                                name: o.attribute("name").unwrap_or("").to_owned(),
                                action: so.and_then(|s| s.attribute("soapAction")).map(str::to_owned),
                                style: so.and_then(|s| s.attribute("style")).map(str::to_owned),
                                input: body("input"),
                                output: body("output"),
                            }
                        })
                        .collect();
                    let port_type = q(n, n.attribute("type").unwrap_or(""))?;
                    self.bindings.insert(
                        QName::new(&tns, name),
                        Binding {
                            port_type,
                            version,
                            style: soap.attribute("style").unwrap_or("document").to_owned(),
                            operations: ops,
                        },
                    );
                }
                "service" => {
                    for p in n.children().filter(|c| c.has_tag_name((WSDL, "port"))) {
                        let address = p.children().find(|c| {
                            c.tag_name().name() == "address"
                                && matches!(c.tag_name().namespace(), Some(WSDL_SOAP11 | WSDL_SOAP12))
                        });
                        let Some(address) = address else { continue };
                        self.ports.push(PortInfo {
                            service: name.to_owned(),
                            port: p.attribute("name").unwrap_or("").to_owned(),
                            address: address.attribute("location").unwrap_or("").to_owned(),
                            version: None,
                            binding: q(p, p.attribute("binding").unwrap_or(""))?,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(more)
    }

    /// The port to call: the one named, or the first with a SOAP binding.
    pub fn port(&self, name: Option<&str>) -> Result<Port, WsdlError> {
        self.group_cycles()?;
        let info = match name {
            Some(n) => self.ports.iter().find(|p| p.port == n).ok_or_else(|| {
                let names: Vec<&str> = self.ports.iter().map(|p| p.port.as_str()).collect();
                WsdlError(format!("no port `{n}`; the WSDL's SOAP ports: {}", names.join(", ")))
            })?,
            None => self.ports.first().ok_or_else(|| WsdlError("the WSDL declares no SOAP port".into()))?,
        };
        let binding = self
            .bindings
            .get(&info.binding)
            .ok_or_else(|| WsdlError(format!("port `{}`: no binding {}", info.port, info.binding.clark())))?;
        let port_type = self.port_types.get(&binding.port_type).ok_or_else(|| {
            WsdlError(format!("binding {}: no portType {}", info.binding.name, binding.port_type.clark()))
        })?;
        let mut operations = Vec::new();
        for b in &binding.operations {
            let at = format!("operation `{}`", b.name);
            let pt = port_type
                .iter()
                .find(|p| p.name == b.name)
                .ok_or_else(|| WsdlError(format!("{at}: not in portType {}", binding.port_type.name)))?;
            if b.input.encoded || b.output.encoded {
                return Err(WsdlError(format!(
                    "{at} uses SOAP encoding (use=\"encoded\"), which is not supported: only literal messages are"
                )));
            }
            let rpc = b.style.as_deref().unwrap_or(&binding.style) == "rpc";
            // Wrapped (the WS-I convention): the input's one part is an element named after
            // the operation, of a sequence; then the output's one part is a wrapper too.
            let message = |m: &Option<QName>,
                           body: &BodyUse,
                           response: bool,
                           wrapped_in: bool|
             -> Result<Body, WsdlError> {
                let parts = match m {
                    Some(m) => self
                        .messages
                        .get(m)
                        .ok_or_else(|| WsdlError(format!("{at}: no message {}", m.clark())))?
                        .clone(),
                    None => Vec::new(),
                };
                let parts: Vec<Part> = match &body.parts {
                    Some(only) => parts.into_iter().filter(|p| only.contains(&p.name)).collect(),
                    None => parts,
                };
                if rpc {
                    let ns = body.namespace.clone().unwrap_or_else(|| self.target_ns.clone());
                    let wrapper =
                        QName::new(&ns, &format!("{}{}", b.name, if response { "Response" } else { "" }));
                    let parts = parts
                        .iter()
                        .map(|p| {
                            let ty = match (&p.ty, &p.element) {
                                (Some(t), _) => TypeRef::Named(t.clone()),
                                (None, Some(e)) => self.global(e, &at)?.ty.clone(),
                                (None, None) => {
                                    return Err(WsdlError(format!(
                                        "{at}: part `{}` has no type or element",
                                        p.name
                                    )));
                                }
                            };
                            Ok(Element {
                                name: QName::new("", &p.name),
                                ty,
                                occurs: Occurs::ONE,
                                nillable: true,
                                default: None,
                            })
                        })
                        .collect::<Result<Vec<_>, WsdlError>>()?;
                    return Ok(Body::Rpc { wrapper, parts });
                }
                let elements = parts
                    .iter()
                    .map(|p| match &p.element {
                        Some(e) => Ok((p.name.clone(), self.global(e, &at)?.clone())),
                        None => Err(WsdlError(format!(
                            "{at}: part `{}` of a document-style message must name an element",
                            p.name
                        ))),
                    })
                    .collect::<Result<Vec<_>, WsdlError>>()?;
                match &elements[..] {
                    [(_, e)]
                        if self.is_wrapper(e)
                            && (if response { wrapped_in } else { e.name.name == b.name }) =>
                    {
                        Ok(Body::Wrapped(e.clone()))
                    }
                    _ => Ok(Body::Bare(elements)),
                }
            };
            let input = message(&pt.input, &b.input, false, false)?;
            operations.push(Arc::new(Operation {
                name: b.name.clone(),
                action: b.action.clone().unwrap_or_default(),
                version: binding.version,
                input: input.clone(),
                output: message(
                    &pt.output,
                    &b.output,
                    true,
                    matches!(input, Body::Wrapped(_)) || pt.input.is_none(),
                )?,
                documentation: pt.documentation.clone(),
            }));
        }
        let mut info = info.clone();
        info.version = Some(binding.version);
        Ok(Port { info, operations, schemas: Arc::new(self.schemas.clone()) })
    }

    /// Refuses a model group that contains itself (`xs:group ref` through groups): its
    /// content would never end.
    fn group_cycles(&self) -> Result<(), WsdlError> {
        fn refs(p: &Particle, out: &mut Vec<QName>) {
            match p {
                Particle::Group(q, _) => out.push(q.clone()),
                Particle::Sequence(items, _) | Particle::Choice(items, _) | Particle::All(items, _) => {
                    for i in items {
                        refs(i, out);
                    }
                }
                _ => {}
            }
        }
        // Depth-first, iteratively: 0 unseen, 1 on the path, 2 done.
        let mut state: HashMap<&QName, u8> = HashMap::new();
        for start in self.schemas.groups.keys() {
            if state.get(start).copied().unwrap_or(0) != 0 {
                continue;
            }
            let mut stack: Vec<(&QName, Vec<QName>)> = Vec::new();
            let mut next = Vec::new();
            refs(&self.schemas.groups[start], &mut next);
            state.insert(start, 1);
            stack.push((start, next));
            while let Some((at, pending)) = stack.last_mut() {
                let at = *at;
                match pending.pop() {
                    None => {
                        state.insert(at, 2);
                        stack.pop();
                    }
                    Some(q) => {
                        let Some((key, group)) = self.schemas.groups.get_key_value(&q) else { continue };
                        match state.get(key).copied().unwrap_or(0) {
                            1 => return Err(WsdlError(format!("the group {} contains itself", q.clark()))),
                            2 => {}
                            _ => {
                                let mut more = Vec::new();
                                refs(group, &mut more);
                                state.insert(key, 1);
                                stack.push((key, more));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn global(&self, q: &QName, at: &str) -> Result<&Element, WsdlError> {
        self.schemas.elements.get(q).ok_or_else(|| {
            WsdlError(format!("{at}: the element {} is not declared in the WSDL's schemas", q.clark()))
        })
    }

    /// A wrapper element: a complex type of elements only (a sequence, or nothing), no
    /// attributes: its children are the operation's parameters.
    fn is_wrapper(&self, e: &Element) -> bool {
        let ty = match &e.ty {
            TypeRef::Inline(t) => Some(t.clone()),
            TypeRef::Named(q) => self.schemas.named(q).cloned(),
        };
        match ty.as_deref() {
            Some(Type::Complex(c)) => {
                c.attributes.is_empty()
                    && c.extends.is_none()
                    && matches!(
                        &c.content,
                        Content::Empty | Content::Particle(Particle::Sequence(..) | Particle::All(..))
                    )
            }
            _ => false,
        }
    }
}

/// How deep a WSDL or schema document may nest elements: the readers recurse over it.
const MAX_NESTING: u32 = 256;

fn parse_xml<'a>(loc: &str, text: &'a str) -> Result<roxmltree::Document<'a>, WsdlError> {
    // DTDs stay refused (roxmltree's default): no entity expansion, no external entities.
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| WsdlError(format!("{loc}: not well-formed XML: {e}")))?;
    if nesting(&doc) > MAX_NESTING {
        return Err(WsdlError(format!("{loc}: elements nest deeper than {MAX_NESTING} levels")));
    }
    Ok(doc)
}

/// The deepest element nesting of a document, without recursion.
pub(crate) fn nesting(doc: &roxmltree::Document) -> u32 {
    let mut depth = vec![0u32; doc.descendants().count() + 1];
    let mut deepest = 0;
    for n in doc.descendants() {
        let d = n.parent().map_or(0, |p| depth.get(p.id().get_usize()).copied().unwrap_or(0)) + 1;
        if let Some(slot) = depth.get_mut(n.id().get_usize()) {
            *slot = d;
        }
        deepest = deepest.max(d);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    async fn load(name: &str) -> Result<Definitions, WsdlError> {
        Definitions::load(&fixture(name), |loc| async move {
            std::fs::read_to_string(&loc).map_err(|e| e.to_string())
        })
        .await
    }

    #[tokio::test]
    async fn spynes_wrapped_operations_are_read() {
        let d = load("spyne-billing.wsdl").await.unwrap();
        let port = d.port(None).unwrap();
        assert_eq!(
            (port.info.service.as_str(), port.info.address.as_str()),
            ("Billing", "http://127.0.0.1:8000/")
        );
        assert_eq!(port.info.version, Some(SoapVersion::V11));
        let names: Vec<&str> = port.operations.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["GetInvoice", "ListInvoices", "CreateInvoice", "Fail", "LastRequest"]);
        let get = port.operation("GetInvoice").unwrap();
        assert_eq!(get.action, "GetInvoice");
        assert!(
            matches!(&get.input, Body::Wrapped(e) if e.name == QName::new("urn:bridgehead:test:billing", "GetInvoice"))
        );
        assert!(matches!(&get.output, Body::Wrapped(e) if e.name.name == "GetInvoiceResponse"));
    }

    #[tokio::test]
    async fn rpc_literal_parts_become_unqualified_accessors_in_the_body_namespace() {
        let d = load("rpc-literal.wsdl").await.unwrap();
        let port = d.port(None).unwrap();
        let add = port.operation("Add").unwrap();
        let Body::Rpc { wrapper, parts } = &add.input else { panic!("{:?}", add.input) };
        assert_eq!(*wrapper, QName::new("urn:bridgehead:test:calc:rpc", "Add"));
        assert_eq!(
            parts.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            [QName::new("", "a"), QName::new("", "b")]
        );
        let Body::Rpc { wrapper, .. } = &add.output else { panic!() };
        assert_eq!(wrapper.name, "AddResponse");
        assert_eq!(port.operation("Place").unwrap().action, "");
    }

    #[tokio::test]
    async fn imports_and_chameleon_includes_are_followed_relative_to_their_document() {
        let d = load("imported/service.wsdl").await.unwrap();
        assert_eq!(d.documents.len(), 3, "{:?}", d.documents.iter().map(|x| &x.0).collect::<Vec<_>>());
        let port = d.port(None).unwrap();
        assert!(!port.operations.is_empty());
        assert!(port.operations.iter().any(|o| matches!(o.input, Body::Bare(_))), "{:?}", port.operations);
    }

    #[tokio::test]
    async fn soap12_bindings_and_encoded_services() {
        let d = load("soap12.wsdl").await.unwrap();
        assert_eq!(d.port(None).unwrap().info.version, Some(SoapVersion::V12));
        let d = load("rpc-encoded.wsdl").await.unwrap();
        let e = d.port(None).unwrap_err();
        assert!(e.0.contains("uses SOAP encoding (use=\"encoded\")"), "{e}");
    }

    #[tokio::test]
    async fn unreadable_documents_name_their_location() {
        let e =
            Definitions::load("nope.wsdl", |_| async { Err("no such file".to_owned()) }).await.unwrap_err();
        assert_eq!(e.0, "nope.wsdl: no such file");
        let e = Definitions::parse("<definitions/>").unwrap_err();
        assert!(e.0.contains("not a WSDL 1.1 document"), "{e}");
        let e = Definitions::parse("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>").unwrap_err();
        assert!(e.0.contains("not well-formed"), "{e}");
        let looped = format!(
            r#"<definitions xmlns="{WSDL}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:s="{WSDL_SOAP11}" xmlns:t="urn:t" targetNamespace="urn:t"><types><xs:schema targetNamespace="urn:t">
                 <xs:group name="A"><xs:sequence><xs:group ref="t:B"/></xs:sequence></xs:group>
                 <xs:group name="B"><xs:choice><xs:element name="x" type="xs:string"/><xs:group ref="t:A"/></xs:choice></xs:group>
               </xs:schema></types><service name="S"><port name="P" binding="t:B"><s:address location="http://x/"/></port></service></definitions>"#
        );
        let e = Definitions::parse(&looped).unwrap().port(None).unwrap_err();
        assert!(e.0.contains("contains itself"), "{e}");
        let deep = format!("{}{}", "<a>".repeat(300), "</a>".repeat(300));
        let e = Definitions::parse(&deep).unwrap_err();
        assert!(e.0.contains("nest deeper than 256 levels"), "{e}");
        // A loop of imports ends.
        let e = Definitions::load("a.wsdl", |loc| async move {
            let next = if loc.ends_with("a.wsdl") { "b.wsdl" } else { "a.wsdl" };
            Ok(format!(r#"<definitions xmlns="{WSDL}"><import location="{next}"/></definitions>"#))
        })
        .await
        .unwrap_err();
        assert!(e.0.contains("declares no service port"), "{e}");
    }
}
