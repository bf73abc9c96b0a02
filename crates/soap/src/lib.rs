//! SOAP⇄REST: a WSDL 1.1 service read at run time and exposed as JSON.
