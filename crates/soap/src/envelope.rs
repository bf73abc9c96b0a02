//! SOAP envelopes: a request built from an operation and its JSON (with a WS-Security
//! UsernameToken when configured), and an answer read back: the output message as JSON, or
//! the fault (SOAP 1.1 `faultcode`/`faultstring`/`detail`, SOAP 1.2 `Code`/`Reason`/`Detail`).

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::mapping::{MapError, Mapper, generic};
use crate::wsdl::{Body, Operation, SoapVersion};
use crate::xml::{XChild, XNode, escape};
use crate::xsd::{Content, Particle, Type, TypeRef};

pub const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const TOKEN_PROFILE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0";
const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

impl SoapVersion {
    pub fn envelope_ns(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_ENV,
            SoapVersion::V12 => SOAP12_ENV,
        }
    }

    /// The request's `Content-Type` (SOAP 1.2 carries the action in it).
    pub fn content_type(self, action: &str) -> String {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8".into(),
            SoapVersion::V12 if action.is_empty() => "application/soap+xml; charset=utf-8".into(),
            SoapVersion::V12 => {
                format!("application/soap+xml; charset=utf-8; action=\"{}\"", action.replace('"', ""))
            }
        }
    }
}

/// A WS-Security UsernameToken (OASIS UsernameToken Profile 1.0).
#[derive(Clone)]
pub struct UsernameToken {
    pub username: String,
    pub password: String,
    /// `PasswordDigest`: Base64(SHA-1(nonce ‖ created ‖ password)) instead of the password.
    pub digest: bool,
}

impl std::fmt::Debug for UsernameToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernameToken")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("digest", &self.digest)
            .finish()
    }
}

impl UsernameToken {
    /// The `wsse:Security` header, with a fresh nonce and `created` (`2026-01-02T03:04:05Z`).
    pub fn header(&self, version: SoapVersion, nonce: &[u8], created: &str) -> String {
        let must = match version {
            SoapVersion::V11 => "1",
            SoapVersion::V12 => "true",
        };
        let env = version.envelope_ns();
        let b64 = base64::engine::general_purpose::STANDARD;
        let (kind, password) = if self.digest {
            let mut h = sha1_smol::Sha1::new();
            h.update(nonce);
            h.update(created.as_bytes());
            h.update(self.password.as_bytes());
            ("PasswordDigest", b64.encode(h.digest().bytes()))
        } else {
            ("PasswordText", self.password.clone())
        };
        format!(
            "<wsse:Security xmlns:wsse=\"{WSSE}\" xmlns:wsu=\"{WSU}\" xmlns:e=\"{env}\" e:mustUnderstand=\"{must}\"><wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password Type=\"{TOKEN_PROFILE}#{kind}\">{}</wsse:Password><wsse:Nonce EncodingType=\"{BASE64_BINARY}\">{}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>",
            escape(&self.username, false),
            escape(&password, false),
            b64.encode(nonce),
        )
    }
}

/// The envelope for calling `op` with the JSON `input`; `header` is written into `soap:Header`
/// as is.
pub fn request(
    mapper: &Mapper,
    op: &Operation,
    input: &Value,
    header: Option<&str>,
) -> Result<String, MapError> {
    let nodes = body_nodes(mapper, &op.input, input)?;
    let env = op.version.envelope_ns();
    let mut out = String::with_capacity(512);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    out.push_str(&format!("<soap:Envelope xmlns:soap=\"{env}\">"));
    if let Some(h) = header {
        out.push_str("<soap:Header>");
        out.push_str(h);
        out.push_str("</soap:Header>");
    }
    out.push_str("<soap:Body>");
    for n in nodes {
        n.write(&mut out);
    }
    out.push_str("</soap:Body></soap:Envelope>");
    Ok(out)
}

/// The body elements for a message.
fn body_nodes(mapper: &Mapper, body: &Body, v: &Value) -> Result<Vec<XNode>, MapError> {
    match body {
        Body::Wrapped(e) => {
            // The JSON holds the wrapper's children; `null` or nothing is an empty wrapper.
            let empty = Value::Object(Map::new());
            let v = if v.is_null() { &empty } else { v };
            let mut content = mapper.encode_children(&e.ty, v, "")?;
            content.name = e.name.clone();
            Ok(vec![content])
        }
        Body::Bare(parts) => match &parts[..] {
            [] => Ok(Vec::new()),
            // One part: the JSON is its value.
            [(_, e)] => Ok(vec![mapper.encode_element(e, v, "")?]),
            parts => {
                let Value::Object(obj) = v else {
                    return Err(MapError {
                        pointer: "/".into(),
                        message: "expected an object of the message's parts".into(),
                        expected: None,
                    });
                };
                let mut out = Vec::new();
                for (name, e) in parts {
                    let at = crate::mapping::pointer("", name);
                    match obj.get(name) {
                        Some(val) => out.push(mapper.encode_element(e, val, &at)?),
                        None => {
                            return Err(MapError {
                                pointer: at,
                                message: "missing (a part of the message)".into(),
                                expected: None,
                            });
                        }
                    }
                }
                if let Some(k) = obj.keys().find(|k| !parts.iter().any(|(n, _)| n == *k)) {
                    return Err(MapError {
                        pointer: crate::mapping::pointer("", k),
                        message: format!(
                            "unknown part `{k}` (the message's parts: {})",
                            parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        expected: None,
                    });
                }
                Ok(out)
            }
        },
        Body::Rpc { wrapper, parts } => {
            let empty = Value::Object(Map::new());
            let v = if v.is_null() { &empty } else { v };
            let Value::Object(obj) = v else {
                return Err(MapError {
                    pointer: "/".into(),
                    message: "expected an object of the operation's parameters".into(),
                    expected: None,
                });
            };
            let mut node = XNode::new(wrapper.clone());
            for e in parts {
                let at = crate::mapping::pointer("", &e.name.name);
                match obj.get(&e.name.name) {
                    Some(val) => node.children.push(XChild::Node(mapper.encode_element(e, val, &at)?)),
                    None => {
                        return Err(MapError {
                            pointer: at,
                            message: "missing (a parameter of the operation)".into(),
                            expected: None,
                        });
                    }
                }
            }
            if let Some(k) = obj.keys().find(|k| !parts.iter().any(|e| e.name.name == **k)) {
                return Err(MapError {
                    pointer: crate::mapping::pointer("", k),
                    message: format!(
                        "unknown parameter `{k}` (the operation's: {})",
                        parts.iter().map(|e| e.name.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    expected: None,
                });
            }
            Ok(vec![node])
        }
    }
}

/// A SOAP fault.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fault {
    pub version: SoapVersion,
    /// `faultcode` (1.1) or `Code/Value` (1.2), as sent (`soap:Client`).
    pub code: String,
    /// SOAP 1.2 `Subcode/Value`s, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subcodes: Vec<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2).
    pub reason: String,
    /// `faultactor` (1.1) or `Role` (1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The detail's content as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl Fault {
    /// The code's local part (`Client`, `Server.Busy`, `Sender`).
    pub fn local_code(&self) -> &str {
        self.code.rsplit(':').next().unwrap_or(&self.code)
    }

    /// The caller's fault (`Client`, `Sender`), not the service's.
    pub fn is_client(&self) -> bool {
        let c = self.local_code();
        c == "Client" || c.starts_with("Client.") || c == "Sender" || c.starts_with("Sender.")
    }
}

/// What an answer held.
#[derive(Debug, Clone)]
pub enum Answer {
    Output(Value),
    Fault(Fault),
}

/// Why an answer could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is not XML: {0}")]
    NotXml(String),
    #[error("the answer is not a SOAP envelope (its root is <{0}>)")]
    NotEnvelope(String),
    #[error("the answer is a SOAP {got} envelope; the operation speaks SOAP {want}")]
    WrongVersion { got: &'static str, want: &'static str },
    #[error("the answer's envelope has no Body")]
    NoBody,
}

/// Reads the answer to `op`.
pub fn response(mapper: &Mapper, op: &Operation, text: &str) -> Result<Answer, ReadError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| ReadError::NotXml(e.to_string()))?;
    let root = doc.root_element();
    let env = match root.tag_name().namespace() {
        Some(SOAP11_ENV) => SoapVersion::V11,
        Some(SOAP12_ENV) => SoapVersion::V12,
        _ => return Err(ReadError::NotEnvelope(root.tag_name().name().to_owned())),
    };
    if root.tag_name().name() != "Envelope" {
        return Err(ReadError::NotEnvelope(root.tag_name().name().to_owned()));
    }
    let ns = env.envelope_ns();
    let body = root.children().find(|c| c.has_tag_name((ns, "Body"))).ok_or(ReadError::NoBody)?;
    let first = body.children().find(roxmltree::Node::is_element);
    if let Some(f) = first.filter(|f| f.has_tag_name((ns, "Fault"))) {
        return Ok(Answer::Fault(fault(f, env)));
    }
    if env != op.version {
        return Err(ReadError::WrongVersion { got: env.as_str(), want: op.version.as_str() });
    }
    let elements: Vec<roxmltree::Node> = body.children().filter(roxmltree::Node::is_element).collect();
    Ok(Answer::Output(output(mapper, &op.output, &elements)))
}

/// The output message's JSON: a wrapper's children (the one child's value when there is one),
/// an rpc wrapper's parts (likewise), or bare parts.
fn output(mapper: &Mapper, body: &Body, elements: &[roxmltree::Node]) -> Value {
    match body {
        Body::Wrapped(e) => {
            let Some(node) = elements.iter().find(|n| n.tag_name().name() == e.name.name) else {
                return Value::Null;
            };
            let v = mapper.decode_element(e, *node);
            match (only_child(mapper, &e.ty), v) {
                (Some(name), Value::Object(mut m)) if m.len() == 1 => m.remove(&name).unwrap_or(Value::Null),
                (_, v) => v,
            }
        }
        Body::Bare(parts) => {
            let mut obj = Map::new();
            for (name, e) in parts {
                let v = elements
                    .iter()
                    .find(|n| n.tag_name().name() == e.name.name)
                    .map_or(Value::Null, |n| mapper.decode_element(e, *n));
                obj.insert(name.clone(), v);
            }
            if parts.len() == 1 {
                obj.into_iter().next().map_or(Value::Null, |(_, v)| v)
            } else {
                Value::Object(obj)
            }
        }
        Body::Rpc { wrapper, parts } => {
            let Some(node) = elements.iter().find(|n| n.tag_name().name() == wrapper.name) else {
                return Value::Null;
            };
            let mut obj = Map::new();
            for e in parts {
                let v = node
                    .children()
                    .find(|c| c.is_element() && c.tag_name().name() == e.name.name)
                    .map_or(Value::Null, |c| mapper.decode_element(e, c));
                obj.insert(e.name.name.clone(), v);
            }
            if parts.len() == 1 {
                obj.into_iter().next().map_or(Value::Null, |(_, v)| v)
            } else {
                Value::Object(obj)
            }
        }
    }
}

/// The name of a wrapper type's only element, when it has exactly one (a `…Result`).
pub fn only_child(mapper: &Mapper, ty: &TypeRef) -> Option<String> {
    let t = match ty {
        TypeRef::Inline(t) => t.clone(),
        TypeRef::Named(q) => mapper.schemas.named(q)?.clone(),
    };
    let Type::Complex(c) = &*t else { return None };
    if !c.attributes.is_empty() {
        return None;
    }
    match &c.content {
        Content::Particle(Particle::Sequence(items, _) | Particle::All(items, _)) => match &items[..] {
            [Particle::Element(e)] => Some(e.name.name.clone()),
            [Particle::ElementRef(q, _)] => Some(q.name.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn fault(f: roxmltree::Node, version: SoapVersion) -> Fault {
    let ns = version.envelope_ns();
    let text = |n: Option<roxmltree::Node>| n.and_then(|n| n.text()).map(|t| t.trim().to_owned());
    let detail_of = |d: roxmltree::Node| {
        let children: Vec<roxmltree::Node> = d.children().filter(roxmltree::Node::is_element).collect();
        match &children[..] {
            [] => d.text().map(str::trim).filter(|t| !t.is_empty()).map(|t| Value::String(t.to_owned())),
            [one] => {
                let mut m = Map::new();
                m.insert(one.tag_name().name().to_owned(), generic(*one, 0));
                Some(Value::Object(m))
            }
            _ => Some(generic(d, 0)),
        }
    };
    match version {
        SoapVersion::V11 => {
            // The children of a 1.1 fault are unqualified (some servers qualify them anyway).
            let child = |name: &str| f.children().find(|c| c.is_element() && c.tag_name().name() == name);
            Fault {
                version,
                code: text(child("faultcode")).unwrap_or_default(),
                subcodes: Vec::new(),
                reason: text(child("faultstring")).unwrap_or_default(),
                actor: text(child("faultactor")).filter(|a| !a.is_empty()),
                detail: child("detail").and_then(detail_of),
            }
        }
        SoapVersion::V12 => {
            fn child<'a, 'i>(
                n: roxmltree::Node<'a, 'i>,
                ns: &str,
                name: &str,
            ) -> Option<roxmltree::Node<'a, 'i>> {
                n.children().find(|c| c.has_tag_name((ns, name)))
            }
            let child = |n, name| child(n, ns, name);
            let code = child(f, "Code");
            let mut subcodes = Vec::new();
            let mut sub = code.and_then(|c| child(c, "Subcode"));
            while let Some(s) = sub {
                if let Some(v) = text(child(s, "Value")) {
                    subcodes.push(v);
                }
                sub = child(s, "Subcode");
            }
            Fault {
                version,
                code: text(code.and_then(|c| child(c, "Value"))).unwrap_or_default(),
                subcodes,
                reason: text(child(f, "Reason").and_then(|r| child(r, "Text"))).unwrap_or_default(),
                actor: text(child(f, "Role")).filter(|a| !a.is_empty()),
                detail: child(f, "Detail").and_then(detail_of),
            }
        }
    }
}

/// `2026-01-02T03:04:05Z` for a Unix time.
pub fn timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_matches_the_profiles_formula() {
        // Checked against zeep 4.3.3 and Python's hashlib.
        let t = UsernameToken { username: "svc".into(), password: "secret".into(), digest: true };
        let h = t.header(SoapVersion::V11, b"abcdefghijklmnop", "2024-01-02T03:04:05+00:00");
        assert!(h.contains(">U/dLskG9p/GLb/7m4fBnqr00HcU=</wsse:Password>"), "{h}");
        assert!(h.contains("#PasswordDigest") && h.contains(">YWJjZGVmZ2hpamtsbW5vcA==</wsse:Nonce>"));
        assert!(h.contains("e:mustUnderstand=\"1\""));
        let t = UsernameToken { username: "a<b".into(), password: "p&q".into(), digest: false };
        let h = t.header(SoapVersion::V12, b"n", "2024-01-02T03:04:05Z");
        assert!(h.contains(">a&lt;b<") && h.contains(">p&amp;q<") && h.contains("#PasswordText"), "{h}");
        assert!(h.contains("e:mustUnderstand=\"true\""));
        roxmltree::Document::parse(&h).unwrap();
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn faults_of_both_versions_are_read_with_their_detail() {
        let mapper = Mapper::new(Default::default());
        let op = Operation {
            name: "X".into(),
            action: String::new(),
            version: SoapVersion::V11,
            input: Body::Bare(Vec::new()),
            output: Body::Bare(Vec::new()),
            documentation: None,
        };
        let f11 = r#"<?xml version='1.0' encoding='UTF-8'?>
<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/"><soap11env:Body><soap11env:Fault><faultcode>soap11env:Client.NotFound</faultcode><faultstring>no invoice inv-404</faultstring><faultactor></faultactor><detail><NotFound><invoice_id>inv-404</invoice_id></NotFound></detail></soap11env:Fault></soap11env:Body></soap11env:Envelope>"#;
        let Answer::Fault(f) = response(&mapper, &op, f11).unwrap() else { panic!() };
        assert_eq!(f.code, "soap11env:Client.NotFound");
        assert!(f.is_client());
        assert_eq!(f.reason, "no invoice inv-404");
        assert_eq!(f.actor, None);
        assert_eq!(f.detail, Some(serde_json::json!({"NotFound": {"invoice_id": "inv-404"}})));
        let f12 = r#"<soap12env:Envelope xmlns:soap12env="http://www.w3.org/2003/05/soap-envelope"><soap12env:Body><soap12env:Fault><soap12env:Code><soap12env:Value>soap12env:Receiver</soap12env:Value><soap12env:Subcode><soap12env:Value>Busy</soap12env:Value></soap12env:Subcode></soap12env:Code><soap12env:Reason><soap12env:Text xml:lang="en">try later</soap12env:Text></soap12env:Reason></soap12env:Fault></soap12env:Body></soap12env:Envelope>"#;
        let Answer::Fault(f) = response(&mapper, &op, f12).unwrap() else { panic!() };
        assert_eq!(
            (f.local_code(), f.subcodes.as_slice(), f.reason.as_str()),
            ("Receiver", &["Busy".to_owned()][..], "try later")
        );
        assert!(!f.is_client());
        assert!(matches!(response(&mapper, &op, "<html/>"), Err(ReadError::NotEnvelope(_))));
        assert!(matches!(response(&mapper, &op, "not xml"), Err(ReadError::NotXml(_))));
    }
}
