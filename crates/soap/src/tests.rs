//! The mapping against the spyne test service's WSDL: requests as envelopes, refusals with their
//! pointers, answers as JSON, and properties over generated input (no panic on anything; values
//! that fit the schema come back as they went).

use serde_json::{Value, json};

use crate::envelope::{self, Answer};
use crate::mapping::Mapper;
use crate::wsdl::{Definitions, Port};

fn billing() -> (Port, Mapper) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spyne-billing.wsdl"))
            .unwrap();
    let port = Definitions::parse(&text).unwrap().port(None).unwrap();
    let mapper = Mapper::new(port.schemas.clone());
    (port, mapper)
}

fn envelope(op: &str, v: &Value) -> Result<String, crate::mapping::MapError> {
    let (port, mapper) = billing();
    envelope::request(&mapper, port.operation(op).unwrap(), v, None)
}

#[test]
fn a_wrapped_request_holds_its_parameters_in_schema_order() {
    let body = envelope(
        "CreateInvoice",
        &json!({"note": "rush", "customer": {"name": "Ada"}, "lines": {"Line": [{"sku": "s-1", "quantity": 2, "price": "4.50"}]}}),
    )
    .unwrap();
    assert_eq!(
        body,
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>"#,
            r#"<ns0:CreateInvoice xmlns:ns0="urn:bridgehead:test:billing"><ns0:customer><ns0:name>Ada</ns0:name></ns0:customer>"#,
            r#"<ns0:lines><ns0:Line><ns0:sku>s-1</ns0:sku><ns0:quantity>2</ns0:quantity><ns0:price>4.50</ns0:price></ns0:Line></ns0:lines>"#,
            r#"<ns0:note>rush</ns0:note></ns0:CreateInvoice></soap:Body></soap:Envelope>"#
        )
    );
    // An optional nillable parameter given as null is written nil.
    let body = envelope("ListInvoices", &json!({"status": null})).unwrap();
    assert!(body.contains(r#"<ns0:status xsi:nil="true"/>"#), "{body}");
}

#[test]
fn requests_that_do_not_fit_are_refused_with_the_field_and_the_type() {
    let e = |op: &str, v: Value| envelope(op, &v).unwrap_err();
    let m = e("CreateInvoice", json!({"customer": {}}));
    assert_eq!((m.pointer.as_str(), m.message.as_str()), ("/customer/name", "missing (required, xs:string)"));
    let m = e("CreateInvoice", json!({"customer": {"name": "A"}, "lines": {"Line": [{"quantity": "two"}]}}));
    assert_eq!(m.pointer, "/lines/Line/0/quantity");
    assert_eq!(m.expected.as_deref(), Some("xs:integer"));
    let m = e("CreateInvoice", json!({"customer": {"name": "A"}, "due": "tomorrow"}));
    assert_eq!((m.pointer.as_str(), m.message.as_str()), ("/due", "expected xs:date (YYYY-MM-DD)"));
    let m = e("ListInvoices", json!({"status": "lost"}));
    assert_eq!(m.message, "`lost` is not one of draft, sent, paid (Status)");
    let m = e("GetInvoice", json!({"invoice": "inv-1"}));
    assert_eq!(m.pointer, "/invoice");
    assert!(
        m.message.starts_with("unknown field `invoice` of (anonymous type)")
            || m.message.contains("unknown field `invoice`"),
        "{m}"
    );
    assert!(m.message.contains("invoice_id"), "{m}");
    let m = e("GetInvoice", json!(["inv-1"]));
    assert!(m.message.starts_with("expected an object"), "{m}");
    let m = e("GetInvoice", json!({"invoice_id": ["a", "b"]}));
    assert!(m.message.contains("not an array"), "{m}");
    let m = e("CreateInvoice", json!({"customer": null}));
    assert_eq!(m.pointer, "/customer");
}

#[test]
fn answers_become_json_with_every_declared_field() {
    let (port, mapper) = billing();
    let answer = r#"<?xml version='1.0' encoding='UTF-8'?>
<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tns="urn:bridgehead:test:billing" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soap11env:Body><tns:GetInvoiceResponse><tns:GetInvoiceResult><tns:id>inv-2</tns:id><tns:customer><tns:name>Grace Hopper</tns:name></tns:customer><tns:status>sent</tns:status><tns:issued>2024-03-01</tns:issued><tns:lines><tns:Line><tns:sku>sku-3</tns:sku><tns:quantity>10</tns:quantity><tns:price>0.99</tns:price></tns:Line></tns:lines><tns:total>9.90</tns:total><tns:paid>false</tns:paid><tns:note xsi:nil="true"/></tns:GetInvoiceResult></tns:GetInvoiceResponse></soap11env:Body></soap11env:Envelope>"#;
    let Answer::Output(v) =
        envelope::response(&mapper, port.operation("GetInvoice").unwrap(), answer).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        v,
        json!({
            "id": "inv-2", "customer": {"name": "Grace Hopper", "email": null}, "status": "sent",
            "issued": "2024-03-01", "due": null,
            "lines": {"Line": [{"sku": "sku-3", "quantity": 10, "price": 0.99}]},
            "total": 9.9, "paid": false, "note": null
        })
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(json!("2024-01-02")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("customer".to_owned()),
                        Just("name".to_owned()),
                        Just("lines".to_owned()),
                        Just("Line".to_owned()),
                        Just("quantity".to_owned()),
                        Just("invoice_id".to_owned()),
                        Just("status".to_owned()),
                        "[a-z$@]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any JSON gives an envelope or a refusal; an envelope is well-formed XML.
        #[test]
        fn any_json_is_an_envelope_or_a_refusal(v in json_value(), op in prop::sample::select(vec!["GetInvoice", "ListInvoices", "CreateInvoice", "Fail"])) {
            if let Ok(body) = envelope(op, &v) {
                prop_assert!(roxmltree::Document::parse(&body).is_ok(), "{body}");
            }
        }

        /// Any answer text reads or is refused, never a panic.
        #[test]
        fn any_answer_text_reads_or_is_refused(text in ".{0,200}", inner in "[<>a-zA-Z:/=\" ]{0,80}") {
            let (port, mapper) = billing();
            let op = port.operation("GetInvoice").unwrap();
            let _ = envelope::response(&mapper, op, &text);
            let wrapped = format!(r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="urn:bridgehead:test:billing"><e:Body><t:GetInvoiceResponse><t:GetInvoiceResult>{inner}</t:GetInvoiceResult></t:GetInvoiceResponse></e:Body></e:Envelope>"#);
            let _ = envelope::response(&mapper, op, &wrapped);
        }

        /// A customer and lines that fit the schema come back as they went, through the
        /// request's XML read as an answer.
        #[test]
        fn values_that_fit_round_trip(
            name in "[^\u{0}-\u{1f}\u{fffe}\u{ffff}]{0,20}",
            email in proptest::option::of("[a-z]{1,8}@[a-z]{1,8}\\.test"),
            lines in prop::collection::vec(("[a-z0-9-]{1,8}", -1_000_000i64..1_000_000, 0u32..100_000), 0..4),
        ) {
            let (port, mapper) = billing();
            let lines: Vec<Value> = lines
                .iter()
                .map(|(sku, q, cents)| json!({"sku": sku, "quantity": q, "price": format!("{}.{:02}", cents / 100, cents % 100)}))
                .collect();
            let mut customer = json!({"name": name});
            if let Some(e) = &email {
                customer["email"] = json!(e);
            }
            let input = json!({"customer": customer, "lines": {"Line": lines}});
            let body = envelope::request(&mapper, port.operation("CreateInvoice").unwrap(), &input, None).unwrap();
            // Read the request's wrapper as if it were an answer of its own element.
            let doc = roxmltree::Document::parse(&body).unwrap();
            let wrapper = doc.descendants().find(|n| n.has_tag_name(("urn:bridgehead:test:billing", "CreateInvoice"))).unwrap();
            let crate::wsdl::Body::Wrapped(e) = &port.operation("CreateInvoice").unwrap().input else { panic!() };
            let back = mapper.decode_element(e, wrapper);
            prop_assert_eq!(&back["customer"]["name"], &json!(name));
            prop_assert_eq!(&back["customer"]["email"], &email.map_or(Value::Null, Value::from));
            let got = back["lines"]["Line"].as_array().unwrap();
            prop_assert_eq!(got.len(), lines.len());
            for (g, w) in got.iter().zip(&lines) {
                prop_assert_eq!(&g["sku"], &w["sku"]);
                prop_assert_eq!(&g["quantity"], &w["quantity"]);
                let price: f64 = w["price"].as_str().unwrap().parse().unwrap();
                prop_assert_eq!(g["price"].as_f64().unwrap(), price);
            }
        }
    }
}

#[test]
fn the_openapi_document_and_the_description_show_the_json_shapes() {
    let (port, mapper) = billing();
    let doc = crate::openapi::document(&port, &mapper, "/billing", "Billing");
    assert_eq!(doc["openapi"], "3.1.0");
    let create = &doc["paths"]["/billing/CreateInvoice"]["post"];
    let input = &create["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(input["$ref"], "#/components/schemas/CreateInvoice");
    let input = &doc["components"]["schemas"]["CreateInvoice"];
    assert_eq!(input["required"], json!(["customer"]));
    assert_eq!(input["properties"]["customer"]["$ref"], "#/components/schemas/Customer");
    let get = &doc["paths"]["/billing/GetInvoice"]["post"];
    // The answer is the wrapper's one child: an Invoice (nillable).
    let output = &get["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(output["anyOf"][0]["$ref"], "#/components/schemas/Invoice", "{output:#}");
    let status = &doc["components"]["schemas"]["Invoice"]["properties"]["status"]["anyOf"][0];
    assert_eq!(status["enum"], json!(["draft", "sent", "paid"]));
    let text = crate::openapi::describe(&port, &mapper);
    assert!(
        text.starts_with("Service Billing (port Billing, SOAP 1.1), address http://127.0.0.1:8000/"),
        "{text}"
    );
    assert!(
        text.contains(
            "GetInvoice  (SOAPAction \"GetInvoice\")\n  input:  GetInvoice {invoice_id: xs:string}"
        ),
        "{text}"
    );
}

fn shipping() -> (Port, Mapper) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/soap12.wsdl")).unwrap();
    let port = Definitions::parse(&text).unwrap().port(None).unwrap();
    let mapper = Mapper::new(port.schemas.clone());
    (port, mapper)
}

#[test]
fn soap_12_choices_attributes_nil_and_any_are_written_and_checked() {
    let (port, mapper) = shipping();
    let ship = port.operation("Ship").unwrap();
    let order = json!({
        "priority": 2,
        "item": [{"sku": "ABC-1234", "quantity": 3}],
        "speed": "express",
        "address": {"country": "DE", "street": "Hauptstr. 1", "city": "Bonn", "postcode": "53111"},
        "instructions": null,
        "extensions": {"$any": "<x:flag xmlns:x=\"urn:other\">yes</x:flag>"}
    });
    let body = envelope::request(&mapper, ship, &order, None).unwrap();
    assert!(
        body.contains(r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<ns0:Ship xmlns:ns0="urn:bridgehead:test:shipping""#)
            && body.contains(r#" priority="2">"#),
        "{body}"
    );
    assert!(body.contains(r#"<ns0:address country="DE"><ns0:street>Hauptstr. 1</ns0:street>"#), "{body}");
    assert!(body.contains(r#"<ns0:instructions xsi:nil="true"/>"#), "{body}");
    assert!(
        body.contains(r#"<ns0:extensions><x:flag xmlns:x="urn:other">yes</x:flag></ns0:extensions>"#),
        "{body}"
    );
    roxmltree::Document::parse(&body).unwrap();

    let refused = |patch: Value| {
        let mut v = order.clone();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        envelope::request(&mapper, ship, &v, None).unwrap_err()
    };
    let e = refused(json!({"pickupPoint": "P-7"}));
    assert_eq!(e.message, "only one of address, pickupPoint may be given, not address and pickupPoint");
    let e = refused(json!({"address": null}));
    assert_eq!(e.message, "one of address, pickupPoint is required");
    let e = refused(json!({"item": [{"sku": "abc", "quantity": 3}]}));
    assert_eq!(e.pointer, "/item/0/sku");
    assert!(e.message.contains("does not match the pattern"), "{e}");
    let e = refused(json!({"item": [{"sku": "ABC-1234", "quantity": 0}]}));
    assert_eq!(
        (e.pointer.as_str(), e.message.as_str()),
        ("/item/0/quantity", "0 is out of range for Quantity (>= 1 and <= 999)")
    );
    let e = refused(json!({"address": {"street": "s", "city": "c", "postcode": "p"}}));
    assert_eq!((e.pointer.as_str(), e.message.as_str()), ("/address/country", "the attribute is required"));
    let e = refused(json!({"item": []}));
    assert_eq!((e.pointer.as_str(), e.message.as_str()), ("/item", "0 items, at least 1 needed"));
    let e = refused(json!({"extensions": {"$any": "<unclosed>"}}));
    assert!(e.message.starts_with("not a well-formed XML element"), "{e}");

    // The answer: an attribute, a nil date; a repeated anonymous type.
    let answer = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:t="urn:bridgehead:test:shipping" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><e:Body><t:ShipResponse status="accepted"><t:trackingId>T-1</t:trackingId><t:eta xsi:nil="true"/></t:ShipResponse></e:Body></e:Envelope>"#;
    let Answer::Output(v) = envelope::response(&mapper, ship, answer).unwrap() else { panic!() };
    assert_eq!(v, json!({"status": "accepted", "trackingId": "T-1", "eta": null}));
    let track = port.operation("Track").unwrap();
    let answer = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:t="urn:bridgehead:test:shipping"><e:Body><t:TrackResponse><t:event><t:at>2024-01-02T03:04:05Z</t:at><t:place>Bonn</t:place></t:event></t:TrackResponse></e:Body></e:Envelope>"#;
    let Answer::Output(v) = envelope::response(&mapper, track, answer).unwrap() else { panic!() };
    assert_eq!(v, json!([{"at": "2024-01-02T03:04:05Z", "place": "Bonn"}]));
    // A SOAP 1.1 answer to a SOAP 1.2 operation is refused.
    let wrong = r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><x/></e:Body></e:Envelope>"#;
    assert!(matches!(
        envelope::response(&mapper, track, wrong),
        Err(envelope::ReadError::WrongVersion { .. })
    ));
}

#[test]
fn elements_that_refer_to_one_another_stay_finite_in_openapi_and_the_mapping() {
    // And and Or each hold both, twice over: written inline this would double per level.
    let wsdl = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:s="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:t="urn:q" targetNamespace="urn:q">
      <types><xs:schema targetNamespace="urn:q" elementFormDefault="qualified">
        <xs:element name="And"><xs:complexType><xs:sequence><xs:element ref="t:And" minOccurs="0" maxOccurs="unbounded"/><xs:element ref="t:Or" minOccurs="0" maxOccurs="unbounded"/><xs:element name="term" type="xs:string" minOccurs="0"/></xs:sequence></xs:complexType></xs:element>
        <xs:element name="Or"><xs:complexType><xs:sequence><xs:element ref="t:And" minOccurs="0" maxOccurs="unbounded"/><xs:element ref="t:Or" minOccurs="0" maxOccurs="unbounded"/><xs:element name="term" type="xs:string" minOccurs="0"/></xs:sequence></xs:complexType></xs:element>
        <xs:element name="Search"><xs:complexType><xs:sequence><xs:element ref="t:And"/></xs:sequence></xs:complexType></xs:element>
        <xs:element name="SearchResponse"><xs:complexType><xs:sequence><xs:element name="hits" type="xs:int"/></xs:sequence></xs:complexType></xs:element>
      </xs:schema></types>
      <message name="In"><part name="p" element="t:Search"/></message><message name="Out"><part name="p" element="t:SearchResponse"/></message>
      <portType name="P"><operation name="Search"><input message="t:In"/><output message="t:Out"/></operation></portType>
      <binding name="B" type="t:P"><s:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/><operation name="Search"><s:operation soapAction="s"/><input><s:body use="literal"/></input><output><s:body use="literal"/></output></operation></binding>
      <service name="S"><port name="P" binding="t:B"><s:address location="http://x/"/></port></service></definitions>"#;
    let port = Definitions::parse(wsdl).unwrap().port(None).unwrap();
    let mapper = Mapper::new(port.schemas.clone());
    let doc = crate::openapi::document(&port, &mapper, "", "q");
    let and = &doc["components"]["schemas"]["And"];
    assert_eq!(and["properties"]["Or"]["items"]["$ref"], "#/components/schemas/Or", "{doc:#}");
    assert!(doc.to_string().len() < 10_000);
    // A request nested deeper than the mapping goes is refused, not a stack overflow.
    let mut v = json!({"term": "x"});
    for _ in 0..200 {
        v = json!({"And": [v]});
    }
    let e =
        envelope::request(&mapper, port.operation("Search").unwrap(), &json!({"And": v}), None).unwrap_err();
    assert!(e.message.contains("nested more than 64 levels deep"), "{e}");
    let ok = envelope::request(
        &mapper,
        port.operation("Search").unwrap(),
        &json!({"And": {"Or": [{"term": "a"}, {"term": "b"}]}}),
        None,
    )
    .unwrap();
    assert!(
        ok.contains("<ns0:Or><ns0:term>a</ns0:term></ns0:Or><ns0:Or><ns0:term>b</ns0:term></ns0:Or>"),
        "{ok}"
    );
}
