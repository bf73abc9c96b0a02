//! Writing XML: a small tree ([`XNode`]) serialized with every namespace it uses declared once
//! on its top element (`ns0`, `ns1`, … in order of first use), text and attribute values
//! escaped. Written by hand: an envelope is a few elements with escaped text, and a writer
//! crate would still leave the prefix bookkeeping to us.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::xsd::{QName, XSI};

/// An element to write.
#[derive(Debug, Clone, PartialEq)]
pub struct XNode {
    pub name: QName,
    pub attrs: Vec<(QName, String)>,
    pub children: Vec<XChild>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum XChild {
    Node(XNode),
    Text(String),
    /// A well-formed fragment, written as is (`xs:any` content; it declares its own prefixes).
    Raw(String),
}

impl XNode {
    pub fn new(name: QName) -> XNode {
        XNode { name, attrs: Vec::new(), children: Vec::new() }
    }

    pub fn text(name: QName, text: String) -> XNode {
        XNode { name, attrs: Vec::new(), children: vec![XChild::Text(text)] }
    }

    /// `<name xsi:nil="true"/>`.
    pub fn nil(name: QName) -> XNode {
        XNode { name, attrs: vec![(QName::new(XSI, "nil"), "true".into())], children: Vec::new() }
    }

    /// The element as XML, declaring the namespaces it and its descendants use.
    pub fn write(&self, out: &mut String) {
        let mut prefixes = BTreeMap::new();
        let mut order = Vec::new();
        self.collect(&mut prefixes, &mut order);
        self.write_with(out, &prefixes, Some(&order));
    }

    fn collect(&self, prefixes: &mut BTreeMap<String, String>, order: &mut Vec<String>) {
        let mut add = |ns: &str| {
            if !ns.is_empty() && !prefixes.contains_key(ns) {
                let p = if ns == XSI { "xsi".to_owned() } else { format!("ns{}", order.len()) };
                prefixes.insert(ns.to_owned(), p);
                order.push(ns.to_owned());
            }
        };
        add(&self.name.ns);
        for (a, _) in &self.attrs {
            add(&a.ns);
        }
        for c in &self.children {
            if let XChild::Node(n) = c {
                n.collect(prefixes, order);
            }
        }
    }

    fn write_with(&self, out: &mut String, prefixes: &BTreeMap<String, String>, declare: Option<&[String]>) {
        let name = |q: &QName| match prefixes.get(&q.ns) {
            Some(p) => format!("{p}:{}", q.name),
            None => q.name.clone(),
        };
        let tag = name(&self.name);
        let _ = write!(out, "<{tag}");
        if let Some(order) = declare {
            for ns in order {
                let _ = write!(out, " xmlns:{}=\"{}\"", prefixes[ns], escape(ns, true));
            }
        }
        for (a, v) in &self.attrs {
            let _ = write!(out, " {}=\"{}\"", name(a), escape(v, true));
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                XChild::Node(n) => n.write_with(out, prefixes, None),
                XChild::Text(t) => out.push_str(&escape(t, false)),
                XChild::Raw(r) => out.push_str(r),
            }
        }
        let _ = write!(out, "</{tag}>");
    }
}

/// Text for XML: `&`, `<`, `>` escaped, and quotes in attribute values; characters XML 1.0
/// cannot carry (most control characters) are dropped.
pub fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' | '\t' if attribute => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_declared_once_and_text_escaped() {
        let mut root = XNode::new(QName::new("urn:a", "Order"));
        root.children.push(XChild::Node(XNode::text(QName::new("", "note"), "a < b & \"c\"".into())));
        root.children.push(XChild::Node(XNode::nil(QName::new("urn:a", "due"))));
        let mut inner = XNode::new(QName::new("urn:b", "ext"));
        inner.attrs.push((QName::new("", "k"), "x\"y\n".into()));
        root.children.push(XChild::Node(inner));
        let mut out = String::new();
        root.write(&mut out);
        assert_eq!(
            out,
            r#"<ns0:Order xmlns:ns0="urn:a" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:ns2="urn:b"><note>a &lt; b &amp; "c"</note><ns0:due xsi:nil="true"/><ns2:ext k="x&quot;y&#10;"/></ns0:Order>"#
        );
        // What was written reads back with the same names and text.
        let doc = roxmltree::Document::parse(&out).unwrap();
        let note = doc.root_element().first_element_child().unwrap();
        assert_eq!((note.tag_name().namespace(), note.text()), (None, Some("a < b & \"c\"")));
        assert_eq!(escape("\u{1}ok\u{b}", false), "ok");
    }
}
