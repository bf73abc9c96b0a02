//! JSON Schema checks of webhook payloads (draft 2020-12, the `jsonschema` crate): one schema
//! for every payload, or one per event type read from the payload at a JSON pointer. A payload
//! that fails gets **every** error, each with the instance's JSON pointer, the schema keyword
//! and a message. Schemas are read from files at build time; `$ref`s to the network or other
//! files are not followed (the crate's resolvers are off): a schema is self-contained.

use std::collections::HashMap;
use std::path::Path;

use jsonschema::Validator;
use serde_json::Value;

/// One failed check, as the sender is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaError {
    /// JSON pointer to the offending part of the payload (`""` for the whole).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, …).
    pub keyword: String,
    pub message: String,
}

/// The longest message kept per error (a message may quote a large part of the payload).
const MAX_MESSAGE: usize = 300;

/// The schemas of one receiver.
pub enum Schemas {
    One(Validator),
    ByType { pointer: String, types: HashMap<String, Validator>, accept_unknown: bool },
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schemas::One(_) => f.write_str("Schemas::One"),
            Schemas::ByType { types, .. } => write!(f, "Schemas::ByType({} types)", types.len()),
        }
    }
}

/// Reads and compiles the schema file at `path`.
pub fn compile_file(path: &Path) -> Result<Validator, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    jsonschema::draft202012::new(&schema)
        .map_err(|e| format!("{} is not a valid JSON Schema: {e}", path.display()))
}

impl Schemas {
    /// Checks `payload`: every error, or none.
    pub fn check(&self, payload: &Value) -> Vec<SchemaError> {
        let validator = match self {
            Schemas::One(v) => v,
            Schemas::ByType { pointer, types, accept_unknown } => {
                let ty = payload.pointer(pointer).and_then(Value::as_str);
                match ty.and_then(|t| types.get(t)) {
                    Some(v) => v,
                    None if *accept_unknown => return Vec::new(),
                    None => {
                        let message = match ty {
                            Some(t) => format!("no schema for event type {t:?}; known: {}", known(types)),
                            None => {
                                format!("no event type (a string) at {pointer:?}; known: {}", known(types))
                            }
                        };
                        return vec![SchemaError {
                            pointer: pointer.clone(),
                            keyword: "event type".into(),
                            message,
                        }];
                    }
                }
            }
        };
        validator
            .iter_errors(payload)
            .map(|e| {
                let mut message = e.to_string();
                if message.len() > MAX_MESSAGE {
                    let cut = (0..=MAX_MESSAGE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
                    message.truncate(cut);
                    message.push('…');
                }
                SchemaError {
                    pointer: e.instance_path().to_string(),
                    keyword: e.kind().keyword().to_owned(),
                    message,
                }
            })
            .collect()
    }

    /// The event type of `payload`, when schemas are chosen by type.
    pub fn event_type(&self, payload: &Value) -> Option<String> {
        match self {
            Schemas::ByType { pointer, .. } => {
                payload.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
            }
            Schemas::One(_) => None,
        }
    }
}

fn known(types: &HashMap<String, Validator>) -> String {
    let mut names: Vec<&str> = types.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(schema: Value) -> Schemas {
        Schemas::One(jsonschema::draft202012::new(&schema).unwrap())
    }

    #[test]
    fn every_error_is_listed_with_pointer_keyword_and_message() {
        let s = one(json!({
            "type": "object",
            "required": ["id", "amount"],
            "properties": {
                "id": {"type": "string"},
                "amount": {"type": "integer", "minimum": 0},
                "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            }
        }));
        assert!(s.check(&json!({"id": "x", "amount": 3})).is_empty());
        let mut errors = s.check(&json!({"amount": -1, "items": [{"sku": 1}, {}]}));
        errors.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        let got: Vec<(&str, &str)> =
            errors.iter().map(|e| (e.pointer.as_str(), e.keyword.as_str())).collect();
        assert_eq!(got, [("", "required"), ("/amount", "minimum"), ("/items/1", "required")]);
        assert!(errors[0].message.contains("\"id\" is a required property"), "{:?}", errors[0]);
    }

    #[test]
    fn by_type_picks_the_schema_and_refuses_unknown_types_unless_told() {
        let types: HashMap<String, Validator> = [
            (
                "invoice.paid".to_owned(),
                jsonschema::draft202012::new(&json!({"required": ["invoice"]})).unwrap(),
            ),
            ("refund".to_owned(), jsonschema::draft202012::new(&json!({"required": ["refund"]})).unwrap()),
        ]
        .into();
        let s = Schemas::ByType { pointer: "/type".into(), types, accept_unknown: false };
        assert!(s.check(&json!({"type": "invoice.paid", "invoice": {}})).is_empty());
        assert_eq!(s.check(&json!({"type": "invoice.paid"}))[0].keyword, "required");
        let e = &s.check(&json!({"type": "mystery"}))[0];
        assert_eq!((e.pointer.as_str(), e.keyword.as_str()), ("/type", "event type"));
        assert_eq!(e.message, "no schema for event type \"mystery\"; known: invoice.paid, refund");
        assert!(s.check(&json!({"kind": 1}))[0].message.starts_with("no event type (a string) at \"/type\""));
        assert_eq!(s.event_type(&json!({"type": "refund"})).as_deref(), Some("refund"));
        let Schemas::ByType { types, pointer, .. } = s else { unreachable!() };
        let lenient = Schemas::ByType { pointer, types, accept_unknown: true };
        assert!(lenient.check(&json!({"type": "mystery"})).is_empty());
    }

    #[test]
    fn long_messages_are_clipped_on_a_char_boundary() {
        let s = one(json!({"type": "integer"}));
        let e = &s.check(&json!("é".repeat(400)))[0];
        assert!(e.message.len() <= MAX_MESSAGE + '…'.len_utf8() && e.message.ends_with('…'), "{}", e.message);
    }

    #[test]
    fn files_that_are_not_schemas_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"type\": 12}").unwrap();
        assert!(compile_file(&bad).unwrap_err().contains("is not a valid JSON Schema"));
        std::fs::write(&bad, "type: object").unwrap();
        assert!(compile_file(&bad).unwrap_err().contains("is not JSON"));
        assert!(compile_file(&dir.path().join("missing.json")).unwrap_err().contains("cannot read"));
    }
}
