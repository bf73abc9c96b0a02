//! `docs/config.md`, generated from the JSON Schema, which is generated from the config types'
//! doc comments: one source of truth for the reference. A test fails when the committed file
//! is stale.

use serde_json::Value;

/// Renders the configuration reference as Markdown.
pub fn config_markdown() -> String {
    let schema = crate::json_schema();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the config types' doc comments by `bridgehead config docs`; do not edit by hand.\n\
         The same text is in the JSON Schema that `bridgehead config schema` prints.\n\n\
         Durations are strings such as `250ms`, `5s`, `2h`; sizes are bytes or `64KiB`, `10MiB`.\n\
         Any string value may be written as `${env:NAME}` or `${file:PATH}` (resolved at load; a missing\n\
         one is an error naming the key). Unknown keys are errors.\n",
    );
    let root = &schema;
    if let Some(props) = root.get("properties").and_then(Value::as_object) {
        for (key, prop) in props {
            let resolved = resolve(&schema, prop);
            out.push_str(&format!("\n## `{key}`\n\n{}\n\n", description(prop, resolved)));
            out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
            rows(&schema, key, resolved, &mut out);
        }
    }
    out
}

fn resolve<'a>(schema: &'a Value, s: &'a Value) -> &'a Value {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        if let Some(def) = schema.get("$defs").and_then(|d| d.get(name)) {
            return resolve(schema, def);
        }
    }
    // Option<T> is `anyOf: [T, null]`.
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> =
            any.iter().filter(|v| v.get("type") != Some(&Value::from("null"))).collect();
        if non_null.len() == 1 {
            return resolve(schema, non_null[0]);
        }
        // "One T or a list of T" (such as `rate_limit`): document T's keys.
        if let [a, b] = non_null[..] {
            if b.get("items") == Some(a) {
                return resolve(schema, a);
            }
            if a.get("items") == Some(b) {
                return resolve(schema, b);
            }
        }
    }
    s
}

fn description(prop: &Value, resolved: &Value) -> String {
    prop.get("description")
        .or_else(|| resolved.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('\n', " ")
}

fn type_name(schema: &Value, s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return match name {
            "Duration" | "ByteSize" | "Secret" => name.to_lowercase(),
            _ => type_name(schema, resolve(schema, s)),
        };
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|v| v.get("type") != Some(&Value::from("null")))
            .map(|v| type_name(schema, v))
            .collect();
        return parts.join(" or ");
    }
    if let Some(variants) = s.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = variants
            .iter()
            .filter_map(|v| v.get("const").and_then(Value::as_str))
            .map(|c| format!("`{c}`"))
            .collect();
        if !names.is_empty() {
            return format!("one of {}", names.join(", "));
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().filter_map(Value::as_str).map(|c| format!("`{c}`")).collect();
        return format!("one of {}", names.join(", "));
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = s.get("items").map(|i| type_name(schema, i)).unwrap_or_default();
            format!("list of {item}")
        }
        Some(Value::String(t))
            if t == "object" && s.get("additionalProperties").is_some_and(Value::is_object) =>
        {
            let item = type_name(schema, &s["additionalProperties"]);
            format!("map of name → {item}")
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect::<Vec<_>>().join(" or ")
        }
        _ => "any".into(),
    }
}

fn variant_docs(s: &Value) -> String {
    let Some(variants) = s.get("oneOf").and_then(Value::as_array) else {
        return String::new();
    };
    variants
        .iter()
        .filter_map(|v| {
            let description = v.get("description")?.as_str()?.trim_end_matches('.');
            Some(format!(" `{}`: {description}", v.get("const")?.as_str()?))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn default_text(prop: &Value) -> String {
    match prop.get("default") {
        None | Some(Value::Null) => String::new(),
        Some(Value::Object(_)) => String::new(),
        Some(Value::Array(a)) if a.is_empty() => String::new(),
        Some(v) => format!("`{}`", v.to_string().trim_matches('"')),
    }
}

fn rows(schema: &Value, path: &str, s: &Value, out: &mut String) {
    // An externally tagged enum of structs (`authenticators.<name>`: one of `jwt`, `api_key`, …):
    // each variant is an object with one property.
    if let Some(variants) = s.get("oneOf").and_then(Value::as_array)
        && variants.iter().any(|v| v.get("properties").is_some())
    {
        for v in variants {
            let mut variant = String::new();
            rows(schema, path, v, &mut variant);
            out.push_str(&variant.replacen("**Required.** ", "One kind (exactly one per entry): ", 1));
        }
        return;
    }
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        if let Some(items) = s.get("items") {
            let item = resolve(schema, items);
            if item.get("properties").is_some() {
                rows(schema, &format!("{path}[]"), item, out);
            }
        }
        if let Some(extra) = s.get("additionalProperties").filter(|v| v.is_object()) {
            let item = resolve(schema, extra);
            if item.get("properties").is_some() || item.get("oneOf").is_some() {
                rows(schema, &format!("{path}.<name>"), item, out);
            }
        }
        return;
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, prop) in props {
        let child = format!("{path}.{key}");
        let resolved = resolve(schema, prop);
        let mut desc = description(prop, resolved);
        desc.push_str(&variant_docs(resolved));
        if required.contains(&key.as_str()) {
            desc = format!("**Required.** {desc}");
        }
        out.push_str(&format!(
            "| `{child}` | {} | {} | {} |\n",
            type_name(schema, prop).replace('|', "\\|"),
            default_text(prop),
            desc.replace('|', "\\|")
        ));
        rows(schema, &child, resolved, out);
    }
}
