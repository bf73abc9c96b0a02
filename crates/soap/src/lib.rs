//! SOAP⇄REST: a WSDL 1.1 service read at run time and called with JSON.
//!
//! ```text
//! WSDL + XSDs ─(wsdl, xsd)─▶ Port: operations with their message shapes
//! JSON ─(mapping: checked by the XSD)─▶ envelope (+ WS-Security) ─▶ the service
//! JSON ◀─(mapping)─ output message | fault ◀─(envelope)─ the answer
//! ```
//!
//! No maintained crate reads WSDL and XML Schema at run time (the Rust ones generate code at
//! build time), so the reading is here, on roxmltree: [`xsd`] (schemas), [`wsdl`] (documents,
//! imports, ports and operations), [`simple`] (simple-type values), [`mapping`] (JSON ⇄ XML by
//! the schema), [`xml`] (writing), [`envelope`] (envelopes, faults, UsernameToken),
//! [`openapi`] (the facade's OpenAPI document and a text description), [`service`] (a
//! `soap.services` entry: its WSDL from a file, a URL or the state store's copy), [`route`]
//! (a `soap` route: operations over HTTP, faults as problems).

pub mod envelope;
pub mod mapping;
pub mod openapi;
pub mod route;
pub mod service;
pub mod simple;
pub mod wsdl;
pub mod xml;
pub mod xsd;

#[cfg(test)]
mod tests;
