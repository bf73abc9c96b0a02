//! The mock's SOAP mode (`--soap`): a small SOAP 1.1 inventory service at `/soap`, its WSDL at
//! `GET /soap?wsdl`, for the demo and for trying a gateway's `soap` routes without a customer's
//! server.
//!
//! Operations (document/literal wrapped, namespace `urn:bridgehead:mock:inventory`):
//! - `GetStock(sku)` → `{sku, name, quantity, warehouse, updated}`; an unknown SKU is a
//!   `Client.UnknownSku` fault with the SKU in its detail;
//! - `ListLowStock(threshold?)` → the items at or under the threshold (default 5);
//! - `Reserve(sku, quantity)` → `{reservation, remaining}`; more than the stock is a
//!   `Client.InsufficientStock` fault. Reservations are not kept: every call sees the same stock.
//!
//! A request that is not a SOAP 1.1 envelope gets a `Client` fault, as a SOAP server answers.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::{MockBody, ReceivedBody};

/// Where the service answers.
pub(crate) const PATH: &str = "/soap";

const NS: &str = "urn:bridgehead:mock:inventory";
const ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// `(sku, name, quantity, warehouse, updated)`.
const ITEMS: &[(&str, &str, i64, &str, &str)] = &[
    ("A-1", "rotor blade", 42, "north", "2026-11-30"),
    ("B-7", "battery pack", 3, "north", "2026-12-01"),
    ("C-3", "camera gimbal", 0, "south", "2026-11-12"),
    ("D-9", "landing gear", 17, "south", "2026-12-02"),
];

const WSDL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions name="Inventory" targetNamespace="urn:bridgehead:mock:inventory"
    xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:bridgehead:mock:inventory">
  <types>
    <xs:schema targetNamespace="urn:bridgehead:mock:inventory" elementFormDefault="qualified">
      <xs:complexType name="Item">
        <xs:sequence>
          <xs:element name="sku" type="xs:string"/>
          <xs:element name="name" type="xs:string"/>
          <xs:element name="quantity" type="xs:int"/>
          <xs:element name="warehouse" type="tns:Warehouse"/>
          <xs:element name="updated" type="xs:date"/>
        </xs:sequence>
      </xs:complexType>
      <xs:simpleType name="Warehouse">
        <xs:restriction base="xs:string"><xs:enumeration value="north"/><xs:enumeration value="south"/></xs:restriction>
      </xs:simpleType>
      <xs:element name="GetStock"><xs:complexType><xs:sequence><xs:element name="sku" type="xs:string"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="GetStockResponse"><xs:complexType><xs:sequence><xs:element name="item" type="tns:Item"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="ListLowStock"><xs:complexType><xs:sequence><xs:element name="threshold" type="xs:int" minOccurs="0"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="ListLowStockResponse"><xs:complexType><xs:sequence><xs:element name="item" type="tns:Item" minOccurs="0" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="Reserve"><xs:complexType><xs:sequence><xs:element name="sku" type="xs:string"/><xs:element name="quantity" type="xs:positiveInteger"/></xs:sequence></xs:complexType></xs:element>
      <xs:element name="ReserveResponse"><xs:complexType><xs:sequence><xs:element name="reservation" type="xs:string"/><xs:element name="remaining" type="xs:int"/></xs:sequence></xs:complexType></xs:element>
    </xs:schema>
  </types>
  <message name="GetStock"><part name="parameters" element="tns:GetStock"/></message>
  <message name="GetStockResponse"><part name="parameters" element="tns:GetStockResponse"/></message>
  <message name="ListLowStock"><part name="parameters" element="tns:ListLowStock"/></message>
  <message name="ListLowStockResponse"><part name="parameters" element="tns:ListLowStockResponse"/></message>
  <message name="Reserve"><part name="parameters" element="tns:Reserve"/></message>
  <message name="ReserveResponse"><part name="parameters" element="tns:ReserveResponse"/></message>
  <portType name="InventoryPort">
    <operation name="GetStock"><documentation>One item's stock, by SKU.</documentation><input message="tns:GetStock"/><output message="tns:GetStockResponse"/></operation>
    <operation name="ListLowStock"><documentation>Items at or under a threshold (default 5).</documentation><input message="tns:ListLowStock"/><output message="tns:ListLowStockResponse"/></operation>
    <operation name="Reserve"><documentation>Reserves units of an item.</documentation><input message="tns:Reserve"/><output message="tns:ReserveResponse"/></operation>
  </portType>
  <binding name="InventoryBinding" type="tns:InventoryPort">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="GetStock"><soap:operation soapAction="urn:bridgehead:mock:inventory#GetStock"/><input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation>
    <operation name="ListLowStock"><soap:operation soapAction="urn:bridgehead:mock:inventory#ListLowStock"/><input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation>
    <operation name="Reserve"><soap:operation soapAction="urn:bridgehead:mock:inventory#Reserve"/><input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation>
  </binding>
  <service name="Inventory">
    <port name="InventoryPort" binding="tns:InventoryBinding"><soap:address location="ADDRESS"/></port>
  </service>
</definitions>
"#;

fn xml(status: StatusCode, body: String) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    r
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ENV}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

fn fault(code: &str, text: &str, detail: &str) -> Response<MockBody> {
    let detail = if detail.is_empty() { String::new() } else { format!("<detail>{detail}</detail>") };
    xml(
        StatusCode::INTERNAL_SERVER_ERROR,
        envelope(&format!(
            "<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring>{detail}</soap:Fault>",
            escape(text)
        )),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn item((sku, name, quantity, warehouse, updated): &(&str, &str, i64, &str, &str)) -> String {
    format!(
        "<tns:sku>{sku}</tns:sku><tns:name>{name}</tns:name><tns:quantity>{quantity}</tns:quantity><tns:warehouse>{warehouse}</tns:warehouse><tns:updated>{updated}</tns:updated>"
    )
}

/// Whether the request is for the SOAP service.
pub(crate) fn is_soap(parts: &Parts) -> bool {
    parts.uri.path() == PATH
}

/// Answers a request to [`PATH`]: the WSDL, or an operation.
pub(crate) fn respond(parts: &Parts, body: &ReceivedBody) -> Response<MockBody> {
    if parts.method == Method::GET && parts.uri.query().is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        return xml(StatusCode::OK, WSDL.replace("ADDRESS", &format!("http://{}{PATH}", escape(host))));
    }
    if parts.method != Method::POST {
        return fault("Client", "POST a SOAP 1.1 envelope here (the WSDL is at ?wsdl)", "");
    }
    let Ok(text) = std::str::from_utf8(&body.head) else {
        return fault("Client", "the request is not UTF-8", "");
    };
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return fault("Client", "the request is not XML", "");
    };
    let root = doc.root_element();
    if !root.has_tag_name((ENV, "Envelope")) {
        return fault("VersionMismatch", "not a SOAP 1.1 envelope", "");
    }
    let Some(call) = root
        .children()
        .find(|c| c.has_tag_name((ENV, "Body")))
        .and_then(|b| b.children().find(roxmltree::Node::is_element))
    else {
        return fault("Client", "the Body is empty", "");
    };
    let arg = |name: &str| {
        call.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(str::trim)
    };
    let find = |sku: &str| ITEMS.iter().find(|i| i.0 == sku);
    let ok = |op: &str, inner: String| {
        xml(
            StatusCode::OK,
            envelope(&format!(r#"<tns:{op}Response xmlns:tns="{NS}">{inner}</tns:{op}Response>"#)),
        )
    };
    if call.tag_name().namespace() != Some(NS) {
        return fault("Client", &format!("unknown operation {}", call.tag_name().name()), "");
    }
    match call.tag_name().name() {
        "GetStock" => {
            let sku = arg("sku").unwrap_or("");
            match find(sku) {
                Some(i) => ok("GetStock", format!("<tns:item>{}</tns:item>", item(i))),
                None => fault(
                    "Client.UnknownSku",
                    &format!("no item {sku}"),
                    &format!("<UnknownSku><sku>{}</sku></UnknownSku>", escape(sku)),
                ),
            }
        }
        "ListLowStock" => {
            let threshold: i64 = arg("threshold").and_then(|t| t.parse().ok()).unwrap_or(5);
            let items: String = ITEMS
                .iter()
                .filter(|i| i.2 <= threshold)
                .map(|i| format!("<tns:item>{}</tns:item>", item(i)))
                .collect();
            ok("ListLowStock", items)
        }
        "Reserve" => {
            let sku = arg("sku").unwrap_or("");
            let quantity: i64 = arg("quantity").and_then(|q| q.parse().ok()).unwrap_or(0);
            match find(sku) {
                None => fault(
                    "Client.UnknownSku",
                    &format!("no item {sku}"),
                    &format!("<UnknownSku><sku>{}</sku></UnknownSku>", escape(sku)),
                ),
                Some(i) if quantity > i.2 => fault(
                    "Client.InsufficientStock",
                    &format!("only {} of {sku} in stock", i.2),
                    &format!(
                        "<InsufficientStock><sku>{sku}</sku><available>{}</available></InsufficientStock>",
                        i.2
                    ),
                ),
                Some(i) => ok(
                    "Reserve",
                    format!(
                        "<tns:reservation>r-{sku}-{quantity}</tns:reservation><tns:remaining>{}</tns:remaining>",
                        i.2 - quantity
                    ),
                ),
            }
        }
        other => fault("Client", &format!("unknown operation {other}"), ""),
    }
}
